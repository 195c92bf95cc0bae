"""The local runner's worker process: Beam's SDK harness, then an exit without teardown.

``mailpulse load`` on several local cores runs Beam's FnApiRunner with worker processes
(``pipelines.load.local_runner``). Each runs this module instead of
``python -m apache_beam.runners.worker.sdk_worker_main``: the same harness
(``sdk_worker_main.main``), which returns once the runner closed its control stream,
having flushed its logs to the runner. What is left then is the interpreter's own
teardown, which freed the objects of Beam's thousands of modules one by one: 0.5 s for a
process that only imported Beam, 0.8-1.0 s for a worker after a 2M-event load. The runner
stops its workers one after the other and waits for each to exit, so a load waited for
that twice. Nothing of the load is pending by then (every staged file is written and
closed inside its bundle), so the worker flushes its streams and leaves with
``os._exit``, keeping the exit status the harness gave: 0, or 1 after an error (its
traceback printed first, as Python would).
"""

from __future__ import annotations

import logging
import os
import sys
import traceback


def _leave(code: int) -> None:
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def main() -> None:
    from apache_beam.runners.worker import sdk_worker_main

    try:
        sdk_worker_main.main(sys.argv)
    except SystemExit as exc:
        code = exc.code
        _leave(code if isinstance(code, int) else (0 if code is None else 1))
    except BaseException:  # noqa: BLE001 - reported as Python would, then the exit status 1
        traceback.print_exc()
        _leave(1)
    _leave(0)


if __name__ == "__main__":
    main()
