#!/usr/bin/env bash
# Run the fault-injection suite longer: scripts/faults.sh [RUNS] [SEED] [pytest args...]
# RUNS kills per cluster test (3x RUNS per local test); SEED replays a run (default: random).
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-10}"
seed="${2:-$RANDOM$RANDOM}"
shift $(( $# < 2 ? $# : 2 ))
echo "fault suite: --fault-runs $runs --fault-seed $seed"
export GLOO_SOCKET_IFNAME="${GLOO_SOCKET_IFNAME:-lo}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec "${PYTHON:-python}" -m pytest tests/faults -s --fault-runs "$runs" \
    --fault-seed "$seed" "$@"
