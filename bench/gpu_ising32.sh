#!/usr/bin/env bash
# L = 32 critical Ising on one GPU inside one fixed wall-clock budget:
#   * SKILD and its white-noise baseline (same network, data, steps): the shipped `--pretrained ising32`;
#   * decentralized diffusion (4 isolated experts + router) vs the monolithic model at matched compute.
# Every training is our own CLI with `--device cuda`, each capped at 2 CPU threads: the first run, with torch's
# default thread count in seven processes on 16 cores, measured 0.48 s per step. Step counts are set by a probe: PROBE_JOBS concurrent
# short trainings measure the per-step time under the same GPU sharing, then steps = TRAIN_S / step time.
# Results land in $OUT as tarballs (models, validation and comparison reports) plus the log.
#
#   OUT=runs/gpu32 TRAIN_S=330 bash bench/gpu_ising32.sh
#   (data: simdiff ising sample --L 32 --temperature 2.269185 --samples 50000 --seed 1000 --out $DATA;
#    reference: simdiff ising sample --L 32 --temperature 2.269185 --samples 4000 --seed 1 --out $REF)
set -u
OUT=${OUT:-runs/gpu32}
W=${W:-$OUT/work}                         # run directories (checkpoints stay here)
DEVICE=${DEVICE:-cuda}
DATA=${DATA:-.gpudata/ising32_train.npz}
REF=${REF:-.gpudata/ising32_ref.npz}
TRAIN_S=${TRAIN_S:-330}                   # wall seconds the longest training should take
DEADLINE_S=${DEADLINE_S:-530}             # everything is cut off this long after the start
BATCH=${BATCH:-256}                       # SKILD / white-noise batch
DDM_BATCH=${DDM_BATCH:-128}               # expert / monolith batch
PROBE_JOBS=${PROBE_JOBS:-7}               # = trainings that share the GPU at the start of the real run
PROBE_STEPS=${PROBE_STEPS:-150}
MIN_STEPS=${MIN_STEPS:-2000}
VAL_N=${VAL_N:-1000}                      # generated lattices per ensemble
VAL_SR=${VAL_SR:-500}                     # super-resolved lattices per factor
SAMPLE_BATCH=${SAMPLE_BATCH:-1000}
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
SIM="python3 -m simdiff"
T0=$(date +%s)
mkdir -p "$OUT" "$W"
log() { echo "[$(date +%T) +$(( $(date +%s) - T0 ))s] $*"; }
left() { echo $(( DEADLINE_S - ($(date +%s) - T0) )); }
pack() {  # pack NAME PATHS...: one tarball in $OUT, written atomically (paths that do not exist are skipped)
  local name=$1; shift
  local have=(); for f in "$@"; do [ -e "$f" ] && have+=("$f"); done
  tar czf "$OUT/.$name.tmp" "${have[@]}" && mv "$OUT/.$name.tmp" "$OUT/$name" && log "packed $name ($(du -h "$OUT/$name" | cut -f1))"
}

log "start: $(python3 -c 'import torch; print(torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no cuda")')"
[ -f "$DATA" ] && [ -f "$REF" ] || { echo "missing $DATA or $REF"; exit 2; }

# ------------------------------------------------------------- device check: the same step on CPU and GPU
python3 - "$DEVICE" "$DATA" > "$W/device_check.log" 2>&1 <<'EOF' &
import copy, sys, torch
from simdiff.config import load_config
from simdiff.pipelines.skild import core
from simdiff.pipelines.skild.config import SkildConfig
device, data_path = sys.argv[1], sys.argv[2]
cfg = load_config(SkildConfig, "configs/skild/ising32.yaml", {"data": {"path": data_path}})
data = torch.as_tensor(core.load_lattices(data_path)[:512])
torch.manual_seed(0)
net = core.build_net(cfg)
loss_fn = core.spectral_loss_fn(core.build_process(cfg, 32, core.fit_spectrum(data, "fft")))
x0 = core.make_batch_fn(data, 64, True, True)(0, torch.Generator().manual_seed(1))
out = {}
for dev in ("cpu", device):
    m = copy.deepcopy(net).to(dev)
    loss = loss_fn(m, x0.to(dev), torch.Generator().manual_seed(2)).mean()
    loss.backward()
    out[dev] = (float(loss), torch.cat([p.grad.flatten().cpu() for p in m.parameters()]))
(lc, gc), (lg, gg) = out["cpu"], out[device]
print(f"device check ({device}): loss cpu {lc:.6f} vs {lg:.6f}; grad rel. diff {float((gc - gg).norm() / gc.norm()):.2e}")
EOF

# ---------------------------------------------------------------------------------------------- probe
for i in $(seq 1 "$PROBE_JOBS"); do
  $SIM skild train configs/skild/ising32.yaml --out "$W/probe$i" --device "$DEVICE" --threads 2 --set data.path="$DATA" \
    --set train.steps="$PROBE_STEPS" --set train.batch_size="$BATCH" --set train.log_every=50 \
    --set train.warmup_steps=10 --set train.ckpt_every=0 > "$W/probe$i.log" 2>&1 &
done
wait
tail -3 "$W/device_check.log"
STEPS=$(python3 - "$W" "$PROBE_JOBS" "$TRAIN_S" "$MIN_STEPS" <<'EOF'
import json, sys
w, jobs, budget, floor = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
per = []
for i in range(1, jobs + 1):
    recs = [json.loads(x) for x in open(f"{w}/probe{i}/metrics.jsonl")]
    per.append((recs[-1]["time"] - recs[0]["time"]) / (recs[-1]["step"] - recs[0]["step"]))
t = max(per)
print(max(floor, int(budget / t) // 100 * 100))
print(f"probe: {jobs} concurrent trainings, s/step {['%.4f' % p for p in per]} -> max {t:.4f}", file=sys.stderr)
EOF
)
[ -n "$STEPS" ] || { log "probe failed"; tail -20 "$W/probe1.log"; exit 3; }
log "steps per training: $STEPS"
rm -rf "$W"/probe*/checkpoint "$W"/probe*/model

# ------------------------------------------------------------------------------------------- training
SK_SET=(--set data.path="$DATA" --set train.steps="$STEPS" --set train.batch_size="$BATCH"
        --set train.warmup_steps=500 --set train.ema_max_decay=0.9995 --set train.ckpt_every=2000)
$SIM skild train configs/skild/ising32.yaml --out "$W/skild" --device "$DEVICE" --threads 2 "${SK_SET[@]}" \
  > "$W/skild.log" 2>&1 &
P_SK=$!
$SIM skild train configs/skild/ising32_white_noise.yaml --out "$W/white_noise" --device "$DEVICE" --threads 2 \
  "${SK_SET[@]}" \
  > "$W/white_noise.log" 2>&1 &
P_WN=$!
$SIM ddm train configs/ddm/ising32.yaml --out "$W/ddm32" --device "$DEVICE" --workers 5 \
  --set skild.data.path="$PWD/$DATA" --set skild.train.steps="$STEPS" --set skild.train.batch_size="$DDM_BATCH" \
  --set skild.train.ckpt_every=2000 > "$W/ddm.log" 2>&1 &
P_DDM=$!

wait $P_SK $P_WN
log "skild + white-noise trained: $(tail -2 "$W/skild.log" | head -1) | $(tail -2 "$W/white_noise.log" | head -1)"
pack skild_models.tgz "$W/skild/model" "$W/skild/metrics.jsonl" "$W/skild/config.yaml" "$W/skild/run.json" \
  "$W/white_noise/model" "$W/white_noise/metrics.jsonl" "$W/white_noise/config.yaml" "$W/white_noise/run.json" \
  "$W"/*.log

# ----------------------------------------------------------------------------------- SKILD validation
val() {  # val NAME [extra args]
  local name=$1; shift
  timeout $(( $(left) - 25 )) $SIM skild validate "$W/skild" --baseline "$W/white_noise" --reference "$REF" \
    --out "$W/$name" --device "$DEVICE" --threads 4 --batch-size "$SAMPLE_BATCH" --n "$VAL_N" --n-superres "$VAL_SR" "$@" \
    > "$W/$name.log" 2>&1
  log "$name: exit $?"
}
val validate &
P_V1=$!
val validate_s100 --steps 100 &
P_V2=$!

wait $P_DDM
log "ddm trained: exit $?"
pack ddm_models.tgz "$W/ddm32/ddm.json" "$W/ddm32/config.yaml" "$W/ddm32/run.json" "$W/ddm32/plan.json" \
  "$W/ddm32/shared.json" "$W/ddm32/partition" "$W"/ddm32/experts/*/model "$W"/ddm32/experts/*/metrics.jsonl \
  "$W"/ddm32/{monolithic,router}/model "$W"/ddm32/{monolithic,router}/metrics.jsonl "$W/ddm.log"
timeout $(( $(left) - 20 )) $SIM ddm compare "$W/ddm32" --reference "$REF" --out "$W/ddm_compare" --device "$DEVICE" \
  --n "$VAL_N" --batch-size "$SAMPLE_BATCH" > "$W/ddm_compare.log" 2>&1
log "ddm compare: exit $?"
wait $P_V1 $P_V2
pack reports.tgz "$W/validate" "$W/validate_s100" "$W/ddm_compare" "$W"/*.log
log "done"
