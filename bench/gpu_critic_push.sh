#!/usr/bin/env bash
# The inputs of the DRM-critic experiments on Push-v0 level 3, built on a many-core GPU machine in minutes:
#   level-3 scripted demos -> base diffusion policy -> preference data (--workers) -> critic (--device cuda),
# as one `simdiff critic experiments --stages prefs,train` run directory ($R/exp) that the sampling and GRPO
# stages resume anywhere: `simdiff critic experiments configs/critic/push.yaml --policy base_l3 --out exp`.
# BASE=DIR reuses a trained base policy (skips the demos and the policy). CLONG=N also trains a second critic
# on the same preferences for N steps (batch CBATCH_LONG), concurrently on the same GPU, into $R/critic_long.
# One run on an H200 machine (16 cores): demos 1 s, policy 212 s (4 CPU threads), 600 preference episodes 38 s
# (12 workers), critic training 35 s (2000 steps). The held-out accuracy is measured on the training device.
#
# Results land in $OUT after each stage: crit.tar (everything but checkpoints, demos and prefs.npz) and
# prefs.npz cut into 15 MB parts prefs.npz.partNN (`cat prefs.npz.part* > prefs.npz` puts it back together).
#
#   OUT=runs/critic_inputs bash bench/gpu_critic_push.sh
#   BASE=runs/critic/base_l3 PEPS=3600 CSTEPS=6000 CBATCH=256 CLONG=2000 CBATCH_LONG=128 bash bench/gpu_critic_push.sh
#   DEV=cpu DEMOS=4 PSTEPS=20 PEPS=4 CSTEPS=20 OUT=/tmp/dry bash bench/gpu_critic_push.sh   # a dry run
#
# The machine needs mujoco and gymnasium: where they are missing, install wheels first (pip download
# --python-version of that machine; see the device notes). Rendering is not needed: MUJOCO_GL=disable.
OUT=${OUT:-runs/critic_inputs}
. "$(dirname "$0")/critic_device_env.sh"
DEMOS=${DEMOS:-100}; PSTEPS=${PSTEPS:-4000}; CSTEPS=${CSTEPS:-2000}
CBATCH=${CBATCH:-128}; CLONG=${CLONG:-0}; CBATCH_LONG=${CBATCH_LONG:-128}
pack() {
  tar -cf "$OUT/crit.tar" --exclude=checkpoint --exclude='*.hdf5' --exclude=prefs.npz \
    $(ls -d base_l3 exp critic_long ./*.log 2>/dev/null)
  if [ -f exp/prefs.npz ] && ! ls "$OUT"/prefs.npz.part* >/dev/null 2>&1; then
    split -b 15m -d exp/prefs.npz "$OUT/prefs.npz.part"
  fi
}
# a `timeout` (TERM) still returns what is done: the logs and every finished stage
trap 'pack; exit 124' TERM
$PY -c "import torch, mujoco, gymnasium; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" || exit 2
nproc
if [ -n "${BASE:-}" ]; then
  log "base policy from $BASE"
  rm -rf base_l3 && cp -r "$(from_root "$BASE")" base_l3 || exit 3
else
  log demos
  $S demos collect --level 3 --episodes "$DEMOS" --workers "$WORKERS" --only-success --out demos_l3.hdf5 || exit 3
  log base policy
  OMP_NUM_THREADS=4 $S policy train "$ROOT/configs/policy/push.yaml" --data demos_l3.hdf5 --out base_l3 \
    --set train.threads=4 --set train.steps="$PSTEPS" 2>&1 | quiet | tail -2
fi
[ -f base_l3/policy/meta.json ] || exit 4
log "preferences ($PEPS episodes, $WORKERS workers)"
$S critic experiments "$CFG" --policy base_l3 --out exp --stages prefs --workers "$WORKERS" \
  --set prefs.episodes="$PEPS" 2>&1 | quiet | tail -3
[ -f exp/prefs.npz ] || exit 5
pack
log "critics on $DEV: exp ($CSTEPS steps, batch $CBATCH)${CLONG:+, critic_long ($CLONG steps, batch $CBATCH_LONG)}"
if [ "$CLONG" -gt 0 ]; then
  $S critic train "$CFG" --policy base_l3 --prefs exp/prefs.npz --out critic_long --device "$DEV" \
    --set train.steps="$CLONG" --set train.batch_size="$CBATCH_LONG" > critic_long.log 2>&1 &
fi
$S critic experiments "$CFG" --policy base_l3 --out exp --stages prefs,train --device "$DEV" \
  --set prefs.episodes="$PEPS" --set train.steps="$CSTEPS" --set train.batch_size="$CBATCH" 2>&1 | quiet | tail -3
wait
[ -f critic_long.log ] && quiet < critic_long.log | tail -12
grep -A14 "^| t |" exp/report.md
[ -f exp/critic_train/critic/meta.json ] || exit 6
pack
log done
