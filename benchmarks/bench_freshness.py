"""Benchmark: freshness end to end on the embedded default, with real processes.

A signed SendGrid webhook batch is acknowledged by `mailpulse serve`; `mailpulse load
--follow` loads it; a campaign script's `watch(...)` (what `wait_for_events` runs) returns
settled. Printed: seconds from the acknowledgement to the settled result, for

- the defaults (`serve --rotate-seconds 60`, `load --follow --interval 30`), and
- `--rotate-seconds 5 --interval 5` (goal: <= 60 s),

each measured `--repeat` times (median and worst printed).

    python benchmarks/bench_freshness.py [--repeat 2] [--recipients 200] [--skip-defaults]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from freshness_support import Stack, campaign_events  # noqa: E402


def measure(rotate: float, interval: float, recipients: int, run: int) -> float:
    from pipelines.watcher import watch

    with tempfile.TemporaryDirectory(prefix="mailpulse-fresh-") as tmp:
        stack = Stack(Path(tmp), "bench-key", rotate_seconds=rotate, interval=interval)
        stack.start()
        try:
            import os

            os.environ["MAILPULSE_HASH_KEY"] = "bench-key"
            emails = [f"r{run}-{i}@example.com" for i in range(recipients)]
            fates = {e: ("delivered" if i % 10 else "bounce") for i, e in enumerate(emails)}
            cat = f"bench-{run}"
            first, later = campaign_events(emails, cat, int(time.time()), fates)
            out = {}

            def script():
                out["r"] = watch(
                    emails,
                    cat,
                    datetime.now(timezone.utc) - timedelta(seconds=5),
                    timeout=600,
                    warehouse=stack.warehouse,
                    notify=False,
                )
                out["t"] = time.time()

            t = threading.Thread(target=script)
            t.start()
            stack.post_sendgrid(first)
            acked = stack.post_sendgrid(later)
            t.join(timeout=900)
            r = out["r"]
            if r.timed_out or r.counts["unsettled"]:
                raise SystemExit(f"not settled: {r.counts}\n{stack.log('follow.log')}")
            return out["t"] - acked
        finally:
            stack.stop()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--recipients", type=int, default=200)
    ap.add_argument("--skip-defaults", action="store_true")
    args = ap.parse_args(argv)
    setups = [("--rotate-seconds 5 --interval 5", 5, 5)]
    if not args.skip_defaults:
        setups.insert(0, ("defaults (--rotate-seconds 60 --interval 30)", 60, 30))
    print(f"acknowledged -> settled, {args.recipients} recipients, {args.repeat} runs each")
    for label, rotate, interval in setups:
        secs = [measure(rotate, interval, args.recipients, k) for k in range(args.repeat)]
        print(
            f"{label:48s} median {statistics.median(secs):6.1f} s, worst {max(secs):6.1f} s",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
