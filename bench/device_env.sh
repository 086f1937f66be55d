# Sourced by the device scripts (bench/gpu_*.sh): the repository root, the environment every `simdiff` call there
# needs, absolute $OUT (results) and $R (work) folders, and small helpers. The caller sets OUT's default first;
# afterwards the working directory is $R.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
export PYTHONUNBUFFERED=1 MUJOCO_GL=${MUJOCO_GL:-disable} OMP_NUM_THREADS=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$ROOT
PY=${PY:-python3}; DEV=${DEV:-cuda}
R=${R:-$OUT/work}; mkdir -p "$OUT" "$R"
OUT=$(cd "$OUT" && pwd); R=$(cd "$R" && pwd)   # absolute: the commands run inside $R
cd "$R"   # not the repo root: `python -m` puts the working directory first on sys.path
log() { echo "[$(date +%T)] $*"; }
quiet() { grep -v "it/s]" | grep -v "s/it]"; }
# a path given relative to the repository root, made absolute
from_root() { case $1 in /*) echo "$1" ;; *) echo "$ROOT/$1" ;; esac; }
