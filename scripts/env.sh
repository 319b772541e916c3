# Source me (bash): the environment `make test` / `make demo` run in.
#   source scripts/env.sh            venv + ROS 2 + this package's colcon install space
#   source scripts/env.sh --no-install   (used by setup.sh before the first build)
_LLADA_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_llada_nounset=0; [[ $- == *u* ]] && _llada_nounset=1; set +u
if [[ -n "${ROS_DISTRO:-}" && -f "/opt/ros/${ROS_DISTRO}/setup.bash" ]]; then
  source "/opt/ros/${ROS_DISTRO}/setup.bash"
fi
source "$_LLADA_ROOT/.venv/bin/activate"
if [[ -z "${ROS_DISTRO:-}" || ! -d "/opt/ros/${ROS_DISTRO:-none}" ]]; then
  # ROS 2 wheels: their ament index and CMake configs live in the venv.
  export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
  export CMAKE_PREFIX_PATH="$VIRTUAL_ENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
fi
if [[ "${1:-}" != "--no-install" && -f "$_LLADA_ROOT/.ws/install/setup.bash" ]]; then
  source "$_LLADA_ROOT/.ws/install/setup.bash"
fi
# Large camera frames need a bigger shared-memory segment (see config/fastdds.xml).
export FASTDDS_DEFAULT_PROFILES_FILE="${FASTDDS_DEFAULT_PROFILES_FILE:-$_LLADA_ROOT/config/fastdds.xml}"
export HF_HUB_OFFLINE=1

# True when a real interbotix_xs_msgs is installed outside this workspace.
has_interbotix_msgs() {
  local p IFS=:
  for p in ${AMENT_PREFIX_PATH:-}; do
    [[ "$p" == "$_LLADA_ROOT/.ws/"* ]] && continue
    [[ -f "$p/share/interbotix_xs_msgs/package.xml" ]] && return 0
  done
  return 1
}
(( _llada_nounset )) && set -u
unset _llada_nounset
