#!/usr/bin/env bash
# Install mailpulse with everything its tests need into ./.venv and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
# pytest exits 5 when it collected no test (e.g. a -k that matches nothing): say so
# plainly instead of failing as if a test had broken.
if [ "$rc" -eq 5 ]; then echo "pytest: no tests were collected (exit 5)" >&2; exit 0; fi
exit "$rc"
