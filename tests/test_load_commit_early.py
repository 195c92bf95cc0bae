"""The commit that starts while Beam's local runner shuts down (pipelines.load.EarlyCommit).

Once every file is staged, the load does the commit's work in its DuckDB transaction
while the runner still stops its workers; it commits only when the pipeline ended DONE
with the staging unchanged. These tests hold the pipeline's end back until that work is
done (as a slow shutdown does), then let the pipeline fail, change the staging, or end
normally, on a real DuckDB file.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import apache_beam as beam
import pytest
from test_load import DAY, _counts, archive, config  # noqa: F401 (archive: a fixture)

from pipelines import load as L
from pipelines.load import StagingWatch, run_load, staged_name
from pipelines.load_transforms import ReadChunksFn, file_marker_name
from pipelines.sources import ArchiveFile
from pipelines.warehouse import open_warehouse
from pipelines.warehouse.duckdb import DuckDBWarehouse


@pytest.fixture
def commits(monkeypatch):
    """Records, per commit_load call, whether it was the early one (``ready`` given)."""
    calls: list[bool] = []
    orig = DuckDBWarehouse.commit_load

    def spy(self, batch, ready=None):
        calls.append(ready is not None)
        return orig(self, batch, ready=ready)

    monkeypatch.setattr(DuckDBWarehouse, "commit_load", spy)
    return calls


def hold_pipeline_end(monkeypatch, then=None, state=None):
    """Beam's run returns only once the early commit has done its work and waits for
    the pipeline's end; ``then(stage)`` runs at that moment; ``state`` replaces the
    pipeline's final state."""
    waiting = threading.Event()
    stages: list[str] = []
    orig_ready = L.EarlyCommit._ready

    def ready(self, staged):
        stages.append(self.stage)
        waiting.set()
        return orig_ready(self, staged)

    monkeypatch.setattr(L.EarlyCommit, "_ready", ready)
    orig_run = beam.Pipeline.run

    class Result:
        def __init__(self, inner):
            self.inner = inner

        def wait_until_finish(self):
            done = self.inner.wait_until_finish()
            assert waiting.wait(60), "the early commit never reached its COMMIT"
            if then is not None:
                then(stages[0])
            return state if state is not None else done

    monkeypatch.setattr(beam.Pipeline, "run", lambda self, *a, **k: Result(orig_run(self, *a, **k)))


def stored(path):
    w = open_warehouse(f"duckdb://{path}")
    rows = lambda sql: sorted(tuple(r.values()) for r in w.query(sql).to_pylist())  # noqa: E731
    return {
        "events": rows("SELECT * EXCEPT (ingested_at) FROM events"),
        "dead_letters": rows("SELECT source_uri, line, record_index, reason FROM dead_letters"),
        "files": rows("SELECT source_uri, size, records, events FROM loaded_files"),
        "loads": rows("SELECT files_read, events_loaded, dead_letters FROM loads"),
    }


def test_the_early_commit_stores_what_a_commit_after_the_pipeline_stores(
    archive, tmp_path, monkeypatch, commits
):
    hold_pipeline_end(monkeypatch)
    early = run_load(str(archive), DAY, f"duckdb://{tmp_path}/early.duckdb", config=config())
    monkeypatch.setattr(DuckDBWarehouse, "commits_early", False)
    late = run_load(str(archive), DAY, f"duckdb://{tmp_path}/late.duckdb", config=config())
    assert commits == [True, False]  # the first load really committed early
    assert early.per_provider == late.per_provider and early.adds_up
    assert stored(tmp_path / "early.duckdb") == stored(tmp_path / "late.duckdb")
    assert stored(tmp_path / "early.duckdb")["events"]
    assert not list((tmp_path / ".staging").iterdir())  # the staging is removed after it


def test_a_pipeline_that_fails_after_everything_is_staged_commits_nothing(
    archive, tmp_path, monkeypatch, commits
):
    wh_path = tmp_path / "w.duckdb"
    hold_pipeline_end(monkeypatch, state="FAILED")
    with pytest.raises(RuntimeError, match="FAILED; nothing was committed"):
        run_load(str(archive), DAY, f"duckdb://{wh_path}", config=config())
    assert commits == [True]  # the early commit had done its work, then rolled back
    assert _counts(wh_path) == (0, 0, 0)
    w = open_warehouse(f"duckdb://{wh_path}")
    assert not w.table_exists("loaded_files")  # its tables were created in it, rolled back
    monkeypatch.undo()
    report = run_load(str(archive), DAY, f"duckdb://{wh_path}", config=config())
    assert report.adds_up and report.files_read == 5 and _counts(wh_path)[0] > 0


def test_staging_that_changed_after_the_early_commit_began_is_committed_as_it_ends(
    archive, tmp_path, monkeypatch, commits
):
    """A chunk staged after the early batch was built (a retried bundle could do that)
    withdraws the early commit; the commit after the pipeline takes the final staging."""
    baseline = run_load(str(archive), DAY, f"duckdb://{tmp_path}/base.duckdb", config=config())
    commits.clear()
    added = {}

    def add_chunk(stage):  # a copy of one staged chunk under another chunk number
        stats = sorted(Path(stage, "stats").glob("*.json"))[0]
        doc = json.loads(stats.read_text())
        name = staged_name(doc["uri"], doc["chunk"] + 100)
        for kind in ("events", "dead_letters"):
            staged = Path(stage, kind, stats.stem + ".parquet")
            if staged.exists():
                shutil.copy(staged, Path(stage, kind, name + ".parquet"))
        Path(stage, "stats", name + ".json").write_text(
            json.dumps(dict(doc, chunk=doc["chunk"] + 100))
        )
        added.update(doc["stats"])

    hold_pipeline_end(monkeypatch, then=add_chunk)
    wh_path = tmp_path / "w.duckdb"
    report = run_load(str(archive), DAY, f"duckdb://{wh_path}", config=config())
    assert commits == [True, False]  # withdrawn, then committed after the pipeline
    prov, counts = next(iter(added.items()))
    assert counts["records_read"] > 0
    got, base = report.per_provider[prov], baseline.per_provider[prov]
    assert got["records_read"] == base["records_read"] + counts["records_read"]
    assert got["events_loaded"] == base["events_loaded"]  # the copy's ids are stored once
    assert report.adds_up
    assert _counts(wh_path)[0] == _counts(tmp_path / "base.duckdb")[0]


def test_the_staging_watch_waits_for_every_chunk_of_every_file(tmp_path):
    stage = tmp_path / "stage"
    a, b = "/archive/sendgrid/a.json.gz", "/archive/ses/b.json.gz"
    watch = StagingWatch(str(stage), [a, b])
    assert not watch.complete()  # nothing staged yet (no folders)

    def marker(uri, chunks):
        path = stage / "files" / (file_marker_name(uri) + ".json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"uri": uri, "chunks": chunks}))

    def counts_file(uri, k):
        path = stage / "stats" / (staged_name(uri, k) + ".json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")

    counts_file(a, 0)
    counts_file(a, 1)
    assert not watch.complete()  # a's chunks, but no marker says a is done
    marker(a, 2)
    assert not watch.complete()  # b has no marker yet
    marker(b, 0)  # b had no chunk at all (an empty file)
    assert watch.complete()
    watch = StagingWatch(str(stage), [a, b, "/archive/cmc/c.json"])
    marker("/archive/cmc/c.json", 1)
    assert not watch.complete()  # its one chunk's counts file is missing
    counts_file("/archive/cmc/c.json", 0)
    assert watch.complete()


def test_a_files_marker_counts_every_chunk_including_a_truncated_gzip_tail(tmp_path):
    import gzip

    lines = b"".join(json.dumps([{"n": i}]).encode() + b"\n" for i in range(7))
    data = gzip.compress(lines, mtime=0)
    cut = tmp_path / "cut.json.gz"
    cut.write_bytes(data[: len(data) - 12])  # the trailer and some data are gone
    whole = tmp_path / "whole.json.gz"
    whole.write_bytes(data)
    stage = tmp_path / "stage"
    fn = ReadChunksFn(chunk_lines=3, staging=str(stage))
    for path in (cut, whole):
        f = ArchiveFile(str(path), "sendgrid", DAY, path.stat().st_size, "1")
        chunks = list(fn.process(f))
        doc = json.loads((stage / "files" / (file_marker_name(str(path)) + ".json")).read_text())
        assert doc == {"uri": str(path), "chunks": len(chunks)}
        assert [c[2] for c in chunks] == list(range(len(chunks)))
    assert len(list(fn.process(ArchiveFile(str(whole), "sendgrid", DAY, 1, "1")))) == 3
