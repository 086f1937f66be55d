#!/usr/bin/env bash
# Critic variants on one preference set, trained concurrently on one GPU: which of training budget, batch size
# and critic architecture the held-out accuracy still responds to. Collects the preferences first (the same
# arrays as `simdiff critic prefs` anywhere: collection is deterministic per episode), then one
# `simdiff critic train` per variant; each measures its held-out accuracy on the GPU.
#
#   BASE=runs/critic/base_l3 PEPS=4000 VARIANTS="b1024:train.steps=6000,train.batch_size=1024 \
#     drop0:train.steps=6000,train.batch_size=1024,model.drop_blocks=0" OUT=runs/critic_variants \
#     bash bench/gpu_critic_variants.sh
#   BASE=runs/critic/base_l3 DEV=cpu PEPS=4 VARIANTS="a:train.steps=20 b:train.steps=10" OUT=/tmp/v bash ...  # dry
#
# Results land in $OUT/variants.tar (each critic_NAME/ without checkpoints) and $OUT/prefs.json.
: "${BASE:?BASE=DIR of a trained base policy}"; : "${VARIANTS:?VARIANTS=\"NAME:KEY=V,KEY=V NAME:...\"}"
OUT=${OUT:-runs/critic_variants}
. "$(dirname "$0")/critic_device_env.sh"
BASE=$(from_root "$BASE")
pack() { tar -cf "$OUT/variants.tar" --exclude=checkpoint $(ls -d critic_* ./*.log 2>/dev/null); }
# a `timeout` (TERM) still returns what is done: the logs and every finished stage
trap 'pack; exit 124' TERM
log "preferences ($PEPS episodes, $WORKERS workers)"
$S critic prefs "$CFG" --policy "$BASE" --out prefs.npz --workers "$WORKERS" --set prefs.episodes="$PEPS" \
  2>&1 | quiet | tail -1
[ -f prefs.npz ] || exit 5
cp prefs.json "$OUT/"
for v in $VARIANTS; do
  name=${v%%:*}; sets=()
  IFS=, read -ra kv <<< "${v#*:}"
  for x in "${kv[@]}"; do sets+=(--set "$x"); done
  log "critic_$name: ${sets[*]}"
  $S critic train "$CFG" --policy "$BASE" --prefs prefs.npz --out "critic_$name" --device "$DEV" "${sets[@]}" \
    > "$name.log" 2>&1 &
done
wait
for v in $VARIANTS; do name=${v%%:*}; echo "== $name"; quiet < "$name.log" | tail -11; done
pack
log done
