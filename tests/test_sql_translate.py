"""BigQuery -> DuckDB translation (pipelines/sql.py): each rewrite is checked against what
BigQuery returns (the documented semantics, written out as the expected value) by
running the translated SQL on a real DuckDB; and the files in queries/ are valid
BigQuery SQL that filters ``events`` on its partition column."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb
import pytest
import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel

from pipelines.sql import SQLTranslationError, to_duckdb, used_params

QUERIES = Path(__file__).resolve().parent.parent / "queries"


@pytest.fixture
def con():
    c = duckdb.connect()
    c.execute("SET TimeZone='UTC'")
    yield c
    c.close()


def run(con, bq_sql: str, params: dict | None = None):
    duck = to_duckdb(bq_sql)
    return con.execute(duck, used_params(duck, params)).fetchall()


# -- x IN UNNEST(list) ------------------------------------------------------------------
# (value, array, BigQuery's `value IN UNNEST(array)`): an empty or NULL array gives FALSE,
# a NULL value with a non-empty array gives NULL.
IN_UNNEST_CASES = [
    ("a", ["a", "b"], True),
    ("c", ["a", "b"], False),
    ("a", [], False),
    ("a", None, False),
    (None, ["a"], None),
    (None, [], False),
]


@pytest.mark.parametrize("value,array,bigquery", IN_UNNEST_CASES)
def test_in_unnest_param_list_value(con, value, array, bigquery):
    got = run(con, "SELECT @v IN UNNEST(@arr) AS hit", {"v": value, "arr": array})
    assert got == [(bigquery,)]


@pytest.mark.parametrize("value,array,bigquery", IN_UNNEST_CASES)
def test_in_unnest_filters_like_bigquery(con, value, array, bigquery):
    con.execute("CREATE TABLE t (h VARCHAR)")
    con.execute("INSERT INTO t VALUES (?)", [value])
    kept = run(con, "SELECT count(*) FROM t WHERE h IN UNNEST(@arr)", {"arr": array})
    dropped = run(con, "SELECT count(*) FROM t WHERE h NOT IN UNNEST(@arr)", {"arr": array})
    # WHERE keeps a row only when the condition is TRUE; NOT NULL is NULL.
    assert kept == [(1 if bigquery is True else 0,)]
    assert dropped == [(1 if bigquery is False else 0,)]


def test_param_in_unnest_of_array_column(con):
    con.execute("CREATE TABLE events (id INT, categories VARCHAR[])")
    con.execute(
        "INSERT INTO events VALUES (1, ['promo', 'news']), (2, []), (3, NULL), (4, ['news'])"
    )
    got = run(
        con, "SELECT id FROM events WHERE @cat IN UNNEST(categories) ORDER BY id", {"cat": "news"}
    )
    assert got == [(1,), (4,)]


def test_in_unnest_uses_list_contains_not_the_slow_case():
    duck = to_duckdb("SELECT * FROM events WHERE email_hash IN UNNEST(@hashes)")
    assert "LIST_CONTAINS" in duck.upper()
    assert "LIST_COUNT" not in duck.upper()
    # plain sqlglot emits the slow form this rewrite replaces
    plain = sqlglot.transpile(
        "SELECT * FROM events WHERE email_hash IN UNNEST(@hashes)", read="bigquery", write="duckdb"
    )[0]
    assert "LIST_COUNT" in plain.upper()


def test_in_with_a_list_of_values_is_untouched(con):
    assert run(con, "SELECT 'b' IN ('a', 'b'), 'c' IN ('a', 'b')") == [(True, False)]


# -- DATE_ADD / DATE_SUB return DATE ----------------------------------------------------
@pytest.mark.parametrize(
    "bq_expr,bigquery",
    [
        ("DATE_SUB(DATE '2026-03-01', INTERVAL 1 DAY)", date(2026, 2, 28)),
        ("DATE_ADD(DATE '2024-02-28', INTERVAL 1 DAY)", date(2024, 2, 29)),
        ("DATE_ADD(DATE '2026-01-31', INTERVAL 1 MONTH)", date(2026, 2, 28)),
        ("DATE_SUB(DATE '2026-01-05', INTERVAL 2 WEEK)", date(2025, 12, 22)),
        ("DATE_SUB(@d, INTERVAL @n DAY)", date(2026, 11, 16)),
        ("DATE_ADD(DATE_SUB(@d, INTERVAL @n DAY), INTERVAL 1 YEAR)", date(2027, 11, 16)),
    ],
)
def test_date_add_sub_return_date(con, bq_expr, bigquery):
    got = run(con, f"SELECT {bq_expr} AS d", {"d": date(2026, 11, 20), "n": 4})
    assert got == [(bigquery,)]
    assert type(got[0][0]) is date  # not a datetime: BigQuery returns DATE
    typ = con.execute(
        "SELECT typeof(d) FROM (" + to_duckdb(f"SELECT {bq_expr} AS d") + ")",
        {"d": date(2026, 11, 20), "n": 4} if "@" in bq_expr else None,
    ).fetchone()
    assert typ == ("DATE",)


def test_date_sub_in_a_partition_filter(con):
    con.execute("CREATE TABLE events (event_date DATE)")
    con.execute(
        "INSERT INTO events SELECT DATE '2026-11-10' + CAST(i AS INTEGER) FROM range(20) t(i)"
    )
    got = run(
        con,
        "SELECT min(event_date), max(event_date), count(*) FROM events WHERE "
        "event_date BETWEEN DATE_SUB(@s, INTERVAL @n DAY) AND DATE_ADD(@e, INTERVAL 1 DAY)",
        {"s": date(2026, 11, 15), "e": date(2026, 11, 20), "n": 3},
    )
    assert got == [(date(2026, 11, 12), date(2026, 11, 21), 10)]


# -- DDL: partitioning is each backend's own ---------------------------------------------
@pytest.mark.parametrize(
    "ddl",
    [
        "CREATE TABLE t (d DATE) PARTITION BY d",
        "CREATE TABLE t (d DATE, c STRING) CLUSTER BY c",
        "CREATE TABLE t (d DATE) OPTIONS(description='x')",
    ],
)
def test_partition_cluster_options_raise_instead_of_being_dropped(ddl):
    # plain sqlglot drops them with a warning; with unsupported_level=RAISE they fail loudly
    with pytest.raises(SQLTranslationError, match="Unsupported property"):
        to_duckdb(ddl)


def test_translation_errors_name_the_query():
    with pytest.raises(SQLTranslationError, match="cannot translate"):
        to_duckdb("SELECT FROM WHERE (")


def test_used_params_keeps_only_those_in_the_sql():
    duck = to_duckdb("SELECT @a AS x -- mentions @b in a comment only")
    assert used_params(duck, {"a": 1, "b": 2}) == {"a": 1}
    assert used_params(duck, None) == {}


# -- the files in queries/ --------------------------------------------------------------
QUERY_FILES = sorted(QUERIES.glob("*/query.sql"))


def test_there_are_queries():
    assert {p.parent.name for p in QUERY_FILES} >= {
        "delivery_outcomes",
        "recipient_status",
        "suppressions",
    }


@pytest.mark.parametrize("path", QUERY_FILES, ids=lambda p: p.parent.name)
def test_query_is_bigquery_sql_with_bare_tables_and_partition_filters(path):
    sql = path.read_text()
    tree = sqlglot.parse_one(sql, read="bigquery")
    # round-trips as BigQuery with nothing unsupported
    sqlglot.transpile(sql, read="bigquery", write="bigquery", unsupported_level=ErrorLevel.RAISE)
    to_duckdb(sql)
    ctes = {c.alias for c in tree.find_all(exp.CTE)}
    tables = [t for t in tree.find_all(exp.Table) if t.name not in ctes]
    assert tables, "reads no table"
    for t in tables:
        assert not t.args.get("db") and not t.args.get("catalog"), f"qualified name {t.sql()}"
        if t.name == "events":
            where = t.find_ancestor(exp.Select).args.get("where")
            cols = {c.name for c in where.find_all(exp.Column)} if where else set()
            assert "event_date" in cols, "events read without an event_date filter"
    params = {p.name for p in tree.find_all(exp.Parameter)}
    assert {"start_date", "end_date"} <= params


def test_recipient_status_uses_the_shared_precedence():
    from pipelines.status import SETTLED, rank_case_sql, status_case_sql

    sql = (QUERIES / "recipient_status" / "query.sql").read_text()
    assert rank_case_sql("event_type") in sql
    assert status_case_sql("event_type") in sql
    settled = "status IN (" + ", ".join(f"'{s}'" for s in ("delivered", "bounce", "dropped")) + ")"
    assert settled in sql and SETTLED == {"delivered", "bounce", "dropped"}
