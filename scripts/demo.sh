#!/usr/bin/env bash
# Install mailpulse into ./.venv and run the main job on the embedded default:
# DuckDB warehouse + local archive under ./mailpulse-data (sample data generated when empty).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e .
exec .venv/bin/mailpulse run "$@"
