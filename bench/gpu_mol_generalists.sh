#!/usr/bin/env bash
# Retrain the two final generalists (distilled and labeled-only) of several finished MOL runs with the same changed
# settings, all at once on one GPU machine, and evaluate each on its run's held-out seeds (levels 0-3 and shift)
# and on validation seeds (levels 0-3). Every job is `bench/mol_final_generalist_variant.py`, so each retrained
# generalist uses its run's own demos, pseudo-labels and training seed. Training runs on the GPU (--device), the
# evaluations on the CPU cores, the validation one beside the held-out one as soon as the network is saved.
#
#   RUNS="s0:runs/mol_push_seed0 s1:runs/mol_push_seed1" \
#   SETS="generalist.steps=18000 generalist.overrides.model.down_dims=[128,256]" OUT=runs/mol_wide \
#     bash bench/gpu_mol_generalists.sh
#   DEV=cpu RUNS="s1:runs/mol_push_seed1" SETS="generalist.steps=20 evaluation.episodes=4" OUT=/tmp/m \
#     bash bench/gpu_mol_generalists.sh                                                     # a dry run
#
# Measured once (H200, 16 cores): eight 18000-step trainings of a 3.9M-parameter generalist (down_dims [128,256],
# batch 64) sharing the GPU did not finish within 540 s, so nothing was evaluated. A timing run of 1500 steps of
# that network: 34 s alone (23 ms/step, host-bound: CPU seconds = wall seconds), 44-45 s each for four at once.
# So one 18000-step job needs about 410 s and four about 530 s: size the job count and steps to fit a call.
#
# A run directory needs only config.yaml, mol_run.json, metrics.json, demos/ and pseudo/. Results land in
# $OUT/mol.tar (every job's variant.json, eval_<seed>.json and logs; no checkpoints), also when a `timeout` ends
# the script (TERM).
: "${RUNS:?RUNS=\"NAME:RUN_DIR ...\"}"; SETS=${SETS:-}
OUT=${OUT:-runs/mol_generalists}
. "$(dirname "$0")/device_env.sh"
VAL=${VAL:-1500000000}; JOBS=${JOBS:-"distilled labeled_only"}
PROBE="$PY $ROOT/bench/mol_final_generalist_variant.py"
pack() { tar -cf "$OUT/mol.tar" -C "$R" --exclude=checkpoint --exclude=policy . ; }   # keeps metrics.jsonl
trap 'pack; exit 124' TERM
sets=(); for s in $SETS; do sets+=(--set "$s"); done
log "jobs: $RUNS x ($JOBS); settings: ${SETS:-none}; device $DEV; $(OMP_NUM_THREADS= nproc) cores"
one() {  # NAME RUN JOB: train + held-out evaluation; validation once the network is saved
  local d=$R/$1_$3 run
  run=$(from_root "$2")
  $PROBE "$run" --out "$d" --job "$3" --device "$DEV" "${sets[@]}" --levels 0,1,2,3,shift > "$d.log" 2>&1 &
  local p=$!
  while [ ! -d "$d/generalist/policy" ] && kill -0 $p 2>/dev/null; do sleep 3; done
  if [ -d "$d/generalist/policy" ]; then
    $PROBE "$run" --out "$d" --job "$3" "${sets[@]}" --skip-train --eval-seed "$VAL" --levels 0,1,2,3 \
      > "$d.val.log" 2>&1
  fi
  wait $p
  log "$1_$3: $(grep -c '^level_\|^shift' "$d.log") held-out cells, $(grep -c '^level_' "$d.val.log" 2>/dev/null) validation"
}
for spec in $RUNS; do
  for job in $JOBS; do one "${spec%%:*}" "${spec#*:}" "$job" & done
done
wait
for f in "$R"/*.log; do echo "== $(basename "$f")"; quiet < "$f" | tail -6; done
pack
log done
