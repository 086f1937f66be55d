#!/usr/bin/env bash
# The inputs of the DRM-critic experiments on Push-v0 level 3, built on a many-core GPU machine in minutes:
#   level-3 scripted demos -> base diffusion policy -> preference data (--workers) -> critic (--device cuda).
# Then run the experiments anywhere: copy prefs.npz/.json and critic/ (as critic_train/) into a run directory,
# or simply `simdiff critic experiments configs/critic/push.yaml --policy $R/base_l3 --out DIR --workers N
# --device cuda` on the same machine. One run on an H200 machine (16 cores): demos 1 s, policy 212 s (4 CPU
# threads), preferences 38 s (12 workers), critic training 35 s, its held-out accuracy evaluation (CPU) several
# minutes. Results land in $OUT/critic_inputs.tar (checkpoints and demos left out) after each stage.
#
#   OUT=runs/critic_inputs bash bench/gpu_critic_push.sh
#   DEV=cpu DEMOS=4 PSTEPS=20 PEPS=4 CSTEPS=20 OUT=/tmp/dry bash bench/gpu_critic_push.sh   # a dry run
#
# The machine needs mujoco and gymnasium: where they are missing, install wheels first (pip download
# --python-version of that machine; see the device notes). Rendering is not needed: MUJOCO_GL=disable.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 MUJOCO_GL=${MUJOCO_GL:-disable} OMP_NUM_THREADS=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
PY=${PY:-python3}
OUT=${OUT:-runs/critic_inputs}; R=${R:-$OUT/work}; mkdir -p "$OUT" "$R"
OUT=$(cd "$OUT" && pwd); R=$(cd "$R" && pwd)   # absolute: pack() runs inside $R
DEV=${DEV:-cuda}; DEMOS=${DEMOS:-100}; PSTEPS=${PSTEPS:-4000}; PEPS=${PEPS:-600}; CSTEPS=${CSTEPS:-2000}
WORKERS=${WORKERS:-12}
S="$PY -m simdiff"
log() { echo "[$(date +%T)] $*"; }
pack() { (cd "$R" && tar -cf "$OUT/critic_inputs.tar" --exclude=checkpoint --exclude='*.hdf5' \
           $(ls -d base_l3 prefs.npz prefs.json critic 2>/dev/null)); }
$PY -c "import torch, mujoco, gymnasium; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" || exit 2
log demos
$S demos collect --level 3 --episodes "$DEMOS" --workers "$WORKERS" --only-success --out "$R/demos_l3.hdf5" || exit 3
log base policy
OMP_NUM_THREADS=4 $S policy train configs/policy/push.yaml --data "$R/demos_l3.hdf5" --out "$R/base_l3" \
  --set train.threads=4 --set train.steps="$PSTEPS" 2>&1 | grep -v "it/s]" | tail -2
[ -f "$R/base_l3/policy/meta.json" ] || exit 4
pack
log preferences
$S critic prefs configs/critic/push.yaml --policy "$R/base_l3" --out "$R/prefs.npz" --workers "$WORKERS" \
  --set prefs.episodes="$PEPS" 2>&1 | grep -v "it/s]" | tail -2
[ -f "$R/prefs.npz" ] || exit 5
pack
log critic
$S critic train configs/critic/push.yaml --policy "$R/base_l3" --prefs "$R/prefs.npz" --out "$R/critic" \
  --device "$DEV" --set train.steps="$CSTEPS" 2>&1 | grep -v "it/s]" | tail -12
[ -f "$R/critic/critic/meta.json" ] || exit 6
pack
log done
