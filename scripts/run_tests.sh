#!/usr/bin/env bash
# Run the whole test suite against the colcon install space. Fails when any test fails or
# when no test ran. Extra arguments go to pytest (e.g. scripts/run_tests.sh -k decoding).
# Two pytest-xdist workers by default, whole files to one worker (module fixtures are built
# once; most tests wait on other processes, so two share two cores well): LLADA_TEST_WORKERS=0
# runs everything in this one process.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=/dev/null
source "$ROOT/scripts/env.sh"
mkdir -p "$ROOT/.ws/test-results"
cd "$ROOT"
# `pytest` (not `python -m pytest`): the repository root must not shadow the install space,
# which alone holds the generated messages (llada_vla_ros.msg).
export LLADA_VLA_REQUIRE_ROS=1
set +e
pytest -raR -p no:cacheprovider -n "${LLADA_TEST_WORKERS:-2}" --dist loadfile \
  --junitxml="$ROOT/.ws/test-results/pytest.xml" "${@:-test}"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
  echo "run_tests: error: no test ran" >&2
  exit 1
fi
exit $rc
