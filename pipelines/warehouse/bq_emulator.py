"""The BigQuery emulator's workaround: SQL without comments, for endpoints on loopback.

:class:`~pipelines.warehouse.bigquery.BigQueryWarehouse` sends a job's SQL through
:func:`strip_sql_comments` only when its API endpoint :func:`is_loopback_http` (a local
emulator); production BigQuery gets the SQL as written.
"""

from __future__ import annotations

from urllib.parse import urlsplit


def is_loopback_http(endpoint: str | None) -> bool:
    if not endpoint:
        return False
    parts = urlsplit(endpoint)
    return parts.scheme == "http" and (parts.hostname or "") in ("127.0.0.1", "localhost", "::1")


def strip_sql_comments(sql: str) -> str:
    """``sql`` without its ``--``, ``#`` and ``/* */`` comments, everything else byte for
    byte (strings, raw and triple-quoted strings, backtick names are tokens, not gaps).

    Why: bqemulator 1.4.0 binds named parameters by replacing every ``@name`` in the
    translated SQL *text* with ``?`` (``bqemulator/sql/parameters.py::_bind_named``), so an
    ``@start_date`` in a comment (or string literal) adds a value DuckDB has no placeholder
    for and the job fails with "Parameter argument/count mismatch, identifiers of the
    excess parameters: ...". The queries' comments name their parameters; production
    BigQuery ignores comments, so only jobs sent to an emulator are stripped
    (:meth:`BigQueryWarehouse._wire_sql`). A string literal spelling ``@name`` of a
    parameter it is sent with still fails on the emulator (none does). Returns ``sql``
    unchanged when it cannot be tokenized (the server then reports the real error).
    """
    from sqlglot.dialects.bigquery import BigQuery
    from sqlglot.errors import TokenError

    try:
        tokens = BigQuery().tokenize(sql)
    except TokenError:
        return sql
    out, pos = [], 0
    for tok in tokens:
        gap = sql[pos : tok.start]
        # between two tokens there is only whitespace and comments
        out.append(gap if not gap.strip() else ("\n" if "\n" in gap else " "))
        out.append(sql[tok.start : tok.end + 1])
        pos = tok.end + 1
    tail = sql[pos:]
    out.append(tail if not tail.strip() else ("\n" if "\n" in tail else ""))
    return "".join(out)
