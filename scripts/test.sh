#!/usr/bin/env bash
# Install mailpulse with everything its tests need into ./.venv and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
# Spread the tests over worker processes (pytest-xdist): most slow tests wait on real
# servers and subprocesses, so this halves the wall time on two cores. Set
# MAILPULSE_TEST_WORKERS=1 for one process (or pass -n yourself).
workers=${MAILPULSE_TEST_WORKERS:-auto}
dist=()
case " $* " in *" -n "* | *" -n"[0-9]* | *" --numprocesses"*) ;; *)
    [ "$workers" = 1 ] || dist=(-n "$workers") ;;
esac
set +e
.venv/bin/python -m pytest ${dist[@]+"${dist[@]}"} "$@"
rc=$?
set -e
# pytest exits 5 when it collected no test (e.g. a -k that matches nothing): say so
# plainly instead of failing as if a test had broken.
if [ "$rc" -eq 5 ]; then echo "pytest: no tests were collected (exit 5)" >&2; exit 0; fi
exit "$rc"
