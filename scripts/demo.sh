#!/usr/bin/env bash
# `make demo`: the policy node driving a simulated WidowX from a simulated camera, recorded
# and evaluated offline. Arguments go to `python -m llada_vla_ros.ros.demo` (see --help).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=/dev/null
source "$ROOT/scripts/env.sh"
cd "$ROOT"
# Run from the install space, which alone has the generated messages: python -c would put
# the current directory (this source tree) first on sys.path, so it is taken off.
exec python -c 'import sys; sys.path = [p for p in sys.path if p not in ("", ".")]
from llada_vla_ros.ros.demo import main; sys.exit(main(sys.argv[1:]))' "$@"
