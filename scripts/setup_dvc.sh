#!/usr/bin/env bash
# Idempotent DVC set-up: no analytics, and a default local remote OUTSIDE the repository
# (a sibling folder `../rla-pipeline-dvc-remote`; change it with `dvc remote modify local url <path-or-url>`).
set -euo pipefail
cd "$(dirname "$0")/.."
DVC=${DVC:-.venv/bin/dvc}
if [ ! -d .dvc ]; then
  "$DVC" init -q
fi
"$DVC" config core.analytics false
if ! "$DVC" remote list | grep -q '^local'; then
  "$DVC" remote add -d local ../rla-pipeline-dvc-remote
fi
