#!/usr/bin/env bash
# `make demo`: the policy node driving a simulated WidowX from a simulated camera, recorded
# and evaluated offline. Arguments go to `python -m llada_vla_ros.ros.demo` (see --help).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=/dev/null
source "$ROOT/scripts/env.sh"
cd "$ROOT"
# Run from the install space (python -c keeps the source tree off sys.path).
exec python -c 'import sys; from llada_vla_ros.ros.demo import main; sys.exit(main(sys.argv[1:]))' "$@"
