"""Runs ``dag.test()`` of a DAG in its own process and prints the outcomes as JSON.

Airflow reads AIRFLOW_HOME and its configuration once per process, so tests run it
here, in a subprocess with an isolated AIRFLOW_HOME (see tests/test_dag.py). Building
Airflow's in-process execution API takes several seconds, so one process runs several
DAG runs in turn::

    python tests/airflow_driver.py DAG_ID '[{"date": "2026-11-20", "conf": {...},
                                             "env": {"SLACK_BOT_TOKEN": ""}}, ...]'

``env`` entries are applied before that run (an empty value removes the variable);
``write`` ({path: text}) writes files before that run (new archive files arriving).
``date`` is the run's logical date (ISO, UTC). ``dag.test()`` makes a manual run, whose
data interval for a ``CronDataIntervalTimetable`` is the one that ends at that date: a
daily DAG run with ``date`` 2026-11-21 processes 2026-11-20, as the scheduled run for
that day would.

Last stdout line: {"runs": [{"state", "tasks": {task_id: state}, "xcom": {task_id:
value}, "data_interval": [start, end]}...], "import_errors": {...}}. ``dag.test()`` does not raise when a task fails,
so the caller asserts on ``state``.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timezone


def main(dag_id: str, runs: str) -> int:
    for var in ("AIRFLOW_HOME", "AIRFLOW__CORE__DAGS_FOLDER"):
        if not os.environ.get(var):
            print(f"{var} must be set before Airflow is imported", file=sys.stderr)
            return 2
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils import db

    db.initdb()
    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    if bag.import_errors or dag_id not in bag.dags:
        print(json.dumps({"runs": [], "import_errors": bag.import_errors}))
        return 1
    dag = bag.dags[dag_id]
    out = []
    for spec in json.loads(runs):
        for k, v in (spec.get("env") or {}).items():
            if v:
                os.environ[k] = v
            else:
                os.environ.pop(k, None)
        for path, text in (spec.get("write") or {}).items():
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
        logical = datetime.fromisoformat(spec["date"]).replace(tzinfo=timezone.utc)
        run = dag.test(logical_date=logical, run_conf=spec.get("conf") or {})
        out.append(_outcome(dag_id, run))
    print(json.dumps({"runs": out, "import_errors": {}}, default=str))
    return 0


def _outcome(dag_id: str, run) -> dict:
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = (
            session.query(TaskInstance)
            .filter(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run.run_id)
            .all()
        )
        tasks = {ti.task_id: str(ti.state) for ti in tis}
        xcom = {}
        for row in session.query(XComModel).filter(
            XComModel.dag_id == dag_id,
            XComModel.run_id == run.run_id,
            XComModel.key == "return_value",
        ):
            value = row.value
            xcom[row.task_id] = json.loads(value) if isinstance(value, (str, bytes)) else value
    interval = [
        t.isoformat() if t is not None else None
        for t in (run.data_interval_start, run.data_interval_end)
    ]
    return {
        "state": str(run.state),
        "run_id": run.run_id,
        "tasks": tasks,
        "xcom": xcom,
        "data_interval": interval,
    }


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
