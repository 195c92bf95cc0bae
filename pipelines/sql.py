"""One SQL source, two engines: BigQuery Standard SQL -> DuckDB.

``queries/`` and every query the package runs are written for BigQuery. DuckDB runs
them through :func:`to_duckdb`: sqlglot with ``unsupported_level=RAISE`` plus a small,
tested list of rewrites (:data:`REWRITES`) for the gaps measured in PLATFORM-NOTES that
this project's SQL (``queries/``, the watcher) can meet:

- ``x IN UNNEST(list)``: sqlglot emits a CASE expression with ``LIST_COUNT`` that is
  about 40x slower; rewritten to ``list_contains`` guarded for NULL / empty lists.
- ``DATE_ADD`` / ``DATE_SUB``: BigQuery returns DATE, DuckDB's ``date +/- INTERVAL``
  returns TIMESTAMP; the result is cast back to DATE.

Two other gaps need no rewrite: ``PARTITION BY`` / ``CLUSTER BY`` / ``OPTIONS`` DDL
raises :class:`SQLTranslationError` (``unsupported_level=RAISE``) instead of being
dropped with a warning, because partitioning is each backend's own DDL
(``Warehouse.replace_partitions``). Gaps not listed (``EXTRACT(DAYOFWEEK)``,
``WITH OFFSET``, ``ARRAY_AGG(... LIMIT n)``, ``DATE_TRUNC`` on dates, qualified
``project.dataset.table`` names) are not used by this project's SQL; write queries
with bare table names and avoid them, or add a rewrite here with a test.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Callable

import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel

_PARAM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


class SQLTranslationError(ValueError):
    pass


def _in_unnest_to_list_contains(node: exp.Expression) -> exp.Expression:
    """``x IN UNNEST(arr)`` -> ``CASE WHEN arr IS NULL OR len(arr) = 0 THEN FALSE
    ELSE list_contains(arr, x) END``.

    Same result as BigQuery wherever the value is used as a filter (WHERE, ON, HAVING,
    QUALIFY, COUNTIF) and in projections except one corner: an array holding NULL
    elements and no match gives FALSE here, NULL in BigQuery (stored BigQuery arrays
    cannot hold NULLs).
    """
    if not isinstance(node, exp.In) or not node.args.get("unnest"):
        return node
    unnest = node.args["unnest"]
    if len(unnest.expressions) != 1 or unnest.args.get("offset"):
        return node
    arr = unnest.expressions[0]
    empty = exp.or_(
        exp.Is(this=arr.copy(), expression=exp.Null()),
        exp.EQ(
            this=exp.Anonymous(this="len", expressions=[arr.copy()]),
            expression=exp.Literal.number(0),
        ),
    )
    contains = exp.Anonymous(this="list_contains", expressions=[arr.copy(), node.this.copy()])
    return exp.Case(ifs=[exp.If(this=empty, true=exp.false())], default=contains)


def _date_arith_returns_date(node: exp.Expression) -> exp.Expression:
    """BigQuery ``DATE_ADD`` / ``DATE_SUB`` take and return DATE; DuckDB's translation
    (``date + INTERVAL``) returns TIMESTAMP, so cast it back."""
    if isinstance(node, (exp.DateAdd, exp.DateSub)) and not getattr(node, "_mp_cast", False):
        inner = node.copy()
        inner._mp_cast = True  # type: ignore[attr-defined]
        return exp.Cast(this=inner, to=exp.DataType.build("DATE"))
    return node


#: (name, transform) applied in order to the parsed BigQuery tree.
REWRITES: tuple[tuple[str, Callable[[exp.Expression], exp.Expression]], ...] = (
    ("in_unnest_to_list_contains", _in_unnest_to_list_contains),
    ("date_arith_returns_date", _date_arith_returns_date),
)


@functools.lru_cache(maxsize=512)
def to_duckdb(sql: str) -> str:
    """Translate BigQuery SQL (``@name`` parameters) to DuckDB SQL (``$name``)."""
    try:
        trees = sqlglot.parse(sql, read="bigquery")
        out = []
        for tree in trees:
            if tree is None:
                continue
            for _name, fn in REWRITES:
                tree = tree.transform(fn, copy=False)
            out.append(tree.sql(dialect="duckdb", unsupported_level=ErrorLevel.RAISE))
    except sqlglot.errors.SqlglotError as exc:
        raise SQLTranslationError(f"cannot translate to DuckDB: {exc}\n{sql}") from exc
    return ";\n".join(out)


def used_params(duck_sql: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """DuckDB refuses unused named parameters: keep only those the SQL uses."""
    if not params:
        return {}
    names = set(_PARAM.findall(duck_sql))
    return {k: v for k, v in params.items() if k in names}
