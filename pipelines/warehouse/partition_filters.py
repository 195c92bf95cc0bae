"""Cost: a linter for partition filters. ``events`` requires a filter on its partition
column in production (``require_partition_filter``); :func:`partition_filter_violations`
finds every read of a table whose WHERE / JOIN ... ON / MERGE ... ON does not filter on it,
so a test catches the forgotten filter before BigQuery bills (or rejects) the full scan.
The defaults are the events table and its partition column (``EVENTS_PARTITION`` of
:mod:`pipelines.warehouse.bigquery`).
"""

from __future__ import annotations


class PartitionFilterError(AssertionError):
    """SQL reads a partitioned table without filtering on its partition column."""


_FILTER_PREDICATES = None


def _predicate_classes():
    global _FILTER_PREDICATES
    if _FILTER_PREDICATES is None:
        from sqlglot import exp

        _FILTER_PREDICATES = (exp.EQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Between, exp.In)
    return _FILTER_PREDICATES


def _conjuncts(cond) -> list:
    from sqlglot import exp

    if cond is None:
        return []
    if isinstance(cond, exp.Paren):
        return _conjuncts(cond.this)
    if isinstance(cond, exp.And):
        return _conjuncts(cond.left) + _conjuncts(cond.right)
    return [cond]


def _filters_column(cond, column: str, qualifiers: set[str]) -> bool:
    """Does a top-level AND-term of ``cond`` compare ``column`` (of this table) with
    something (BETWEEN, =, <, >, IN)? An OR around it would defeat pruning, so only
    top-level conjuncts count."""
    from sqlglot import exp

    for term in _conjuncts(cond):
        if not isinstance(term, _predicate_classes()):
            continue
        side = term.this
        sides = [side] if isinstance(term, (exp.Between, exp.In)) else [term.left, term.right]
        for s in sides:
            if (
                isinstance(s, exp.Column)
                and s.name.lower() == column
                and (not s.table or s.table.lower() in qualifiers)
            ):
                return True
    return False


def partition_filter_violations(
    sql: str, table: str = "events", column: str = "event_date"
) -> list[str]:
    """Every place ``sql`` reads ``table`` (bare, dataset- or project-qualified) without a
    filter on ``column`` in the WHERE (or JOIN ... ON / MERGE ... ON) that reads it."""
    import sqlglot
    from sqlglot import exp

    table, column = table.lower(), column.lower()
    problems: list[str] = []
    try:
        statements = sqlglot.parse(sql, read="bigquery")
    except sqlglot.errors.ParseError as exc:
        return [f"cannot parse SQL to check its partition filters: {exc}"]
    for stmt in statements:
        if stmt is None:
            continue
        for t in stmt.find_all(exp.Table):
            if t.name.lower() != table:
                continue
            qualifiers = {table, (t.alias or "").lower()} - {""}
            scope = t.parent
            while scope is not None and not isinstance(
                scope, (exp.Select, exp.Merge, exp.Delete, exp.Update)
            ):
                scope = scope.parent
            conds = []
            if isinstance(scope, exp.Select):
                where = scope.args.get("where")
                conds.append(where.this if where else None)
                for j in scope.args.get("joins") or []:
                    conds.append(j.args.get("on"))
            elif isinstance(scope, exp.Merge):
                conds.append(scope.args.get("on"))
                # the source side, when the table is read in USING (SELECT ...), is a Select
            elif isinstance(scope, (exp.Delete, exp.Update)):
                where = scope.args.get("where")
                conds.append(where.this if where else None)
            if not any(_filters_column(c, column, qualifiers) for c in conds if c is not None):
                snippet = (scope or stmt).sql(dialect="bigquery")
                problems.append(
                    f"{t.sql(dialect='bigquery')} is read without a filter on "
                    f"{column}: {snippet[:300]}"
                )
    return problems


def assert_partition_filter(sql: str, table: str = "events", column: str = "event_date") -> None:
    """Raise :class:`PartitionFilterError` when ``sql`` reads ``table`` without filtering
    on ``column`` (``events`` requires a partition filter in production)."""
    problems = partition_filter_violations(sql, table, column)
    if problems:
        raise PartitionFilterError("; ".join(problems) + "\n--- SQL ---\n" + sql)
