#!/usr/bin/env bash
# py-spy on mlgate under W1 and W2 (a few seconds each): a speedscope profile, the
# collapsed stacks and a top-functions summary per workload, under bench/results/.
#   bench/profile.sh                          # configuration (a), 10 s per workload
#   bench/profile.sh --profile-seconds 5 --profile-config mlgate-redis
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
if [ ! -x "$python" ]; then
    echo "no $python: run 'make install' first (or set PYTHON to the project's interpreter)" >&2
    exit 2
fi
exec "$python" "$root/bench/run.py" --profile "$@"
