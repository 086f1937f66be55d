# Sourced by the critic device scripts (bench/gpu_critic_*.sh): bench/device_env.sh (root, environment, absolute
# $OUT and $R, helpers) plus the critic experiments' defaults. The caller sets OUT's default first; afterwards the
# working directory is $R.
. "$(dirname "${BASH_SOURCE[0]}")/device_env.sh"
PEPS=${PEPS:-600}; WORKERS=${WORKERS:-12}
CFG=$ROOT/configs/critic/push.yaml
S="$PY -m simdiff"
