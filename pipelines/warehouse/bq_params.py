"""BigQuery query parameters typed from plain Python values (:func:`query_parameters`)."""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

from .base import WarehouseError

_SCALAR_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "BOOL"),
    (int, "INT64"),
    (float, "FLOAT64"),
    (Decimal, "NUMERIC"),
    (datetime, "TIMESTAMP"),
    (date, "DATE"),
    (str, "STRING"),
    (bytes, "BYTES"),
)


def _scalar_type(value: Any, name: str) -> str:
    for py, bq in _SCALAR_TYPES:  # bool before int, datetime before date
        if isinstance(value, py):
            return bq
    raise WarehouseError(
        f"query parameter @{name}: cannot map {type(value).__name__} to a BigQuery type; "
        "pass str, int, float, bool, date, datetime or a list of one of those"
    )


def _scalar_value(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)  # all timestamps are UTC (DESIGN)
    return value


def query_parameters(params: dict[str, Any] | None) -> list:
    """BigQuery query parameters, types inferred from the Python values: str, int, float,
    bool, Decimal, date, datetime (-> TIMESTAMP, naive = UTC), None (-> NULL STRING), and
    lists/tuples/sets of those (-> ARRAY; an empty list is ARRAY<STRING>)."""
    from google.cloud import bigquery

    out = []
    for name, value in (params or {}).items():
        if isinstance(value, (bigquery.ScalarQueryParameter, bigquery.ArrayQueryParameter)):
            out.append(value)
        elif value is None:
            out.append(bigquery.ScalarQueryParameter(name, "STRING", None))
        elif isinstance(value, (list, tuple, set, frozenset)):
            items = sorted(value) if isinstance(value, (set, frozenset)) else list(value)
            kinds = {_scalar_type(v, name) for v in items if v is not None}
            if len(kinds) > 1:
                raise WarehouseError(f"query parameter @{name}: mixed element types {kinds}")
            kind = kinds.pop() if kinds else "STRING"
            out.append(bigquery.ArrayQueryParameter(name, kind, [_scalar_value(v) for v in items]))
        else:
            out.append(
                bigquery.ScalarQueryParameter(name, _scalar_type(value, name), _scalar_value(value))
            )
    return out
