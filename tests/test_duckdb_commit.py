"""The DuckDB commit: a repeated event_id keeps its earliest occurrence, whichever
staged file holds it, and ids stored by an earlier load are not inserted again."""

from __future__ import annotations

import pytest
from test_warehouse_contract import D1, D2, ev, make_batch

from pipelines.warehouse.duckdb import DuckDBWarehouse


def test_repeated_ids_keep_the_earliest_occurrence_across_files(tmp_path):
    wh = DuckDBWarehouse(str(tmp_path / "w.duckdb"))
    wh.ensure_schema()
    late = dict(ev("x", D1, 12, source="archive/late.json"), reason="late copy")
    early = dict(ev("x", D1, 9, source="archive/early.json"), reason="early copy")
    tie_b = dict(ev("y", D2, 10, source="archive/b.json"), reason="b")
    tie_a = dict(ev("y", D2, 10, source="archive/a.json"), reason="a")
    batch = make_batch(
        tmp_path / "s1", "l1", [[late, tie_b, ev("u1", D1)], [early, tie_a, ev("u2", D2)]]
    )
    r = wh.commit_load(batch)
    assert r.per_provider["sendgrid"] == {
        "events_loaded": 4,
        "duplicates_in_batch": 2,
        "already_loaded": 0,
    }
    rows = {
        row["event_id"]: row
        for row in wh.query("SELECT event_id, reason, source_uri FROM events").to_pylist()
    }
    assert rows["x"]["reason"] == "early copy"  # earliest event_ts
    assert rows["y"]["source_uri"] == "archive/a.json"  # then source_uri
    assert set(rows) == {"x", "y", "u1", "u2"}
    # a second load with one stored id (repeated) and one new id
    again = make_batch(tmp_path / "s2", "l2", [[ev("x", D1, 8), ev("n1", D1)], [ev("x", D1, 7)]])
    r2 = wh.commit_load(again)
    assert r2.per_provider["sendgrid"] == {
        "events_loaded": 1,
        "duplicates_in_batch": 1,
        "already_loaded": 1,
    }
    assert wh.query("SELECT count(*) AS n FROM events").to_pylist()[0]["n"] == 5
    assert wh.query("SELECT reason FROM events WHERE event_id = 'x'").to_pylist() == [
        {"reason": "early copy"}
    ]


def test_schema_creation_is_all_or_nothing(tmp_path, monkeypatch):
    """A process stopped while creating the tables (kill -9 found it: events existed, the
    others not) leaves no table: the next run creates them all."""
    import duckdb as _duckdb

    from pipelines.warehouse import duckdb as backend

    path = tmp_path / "w.duckdb"
    real = backend.ddl_columns
    made: list[str] = []

    def failing(fields):
        made.append("x")
        if len(made) == 2:  # the second table
            raise KeyboardInterrupt("stopped between two CREATE TABLEs")
        return real(fields)

    monkeypatch.setattr(backend, "ddl_columns", failing)
    with pytest.raises(KeyboardInterrupt):
        backend.DuckDBWarehouse(str(path)).ensure_schema()
    with _duckdb.connect(str(path)) as con:
        assert con.execute("SELECT count(*) FROM duckdb_tables()").fetchone()[0] == 0
    monkeypatch.setattr(backend, "ddl_columns", real)
    wh = backend.DuckDBWarehouse(str(path))
    wh.ensure_schema()
    assert all(wh.table_exists(t) for t, _ in wh.TABLES)


def test_a_chunk_keeps_the_first_row_of_each_repeated_id_and_counts_the_rest():
    """drop_duplicate_rows: the first occurrence in chunk order, per provider counts."""
    import pyarrow as pa

    from pipelines.load_transforms import drop_duplicate_rows

    table = pa.table(
        {
            "event_id": ["a", "b", "a", "c", "b", "a"],
            "provider": ["ses", "sendgrid", "ses", "cmc", "sendgrid", "ses"],
            "n": [0, 1, 2, 3, 4, 5],
        }
    )
    kept, dropped = drop_duplicate_rows(table)
    assert kept["n"].to_pylist() == [0, 1, 3]
    assert dropped == {"ses": 2, "sendgrid": 1}
    same, none = drop_duplicate_rows(table.slice(0, 2))
    assert same.num_rows == 2 and none == {}
