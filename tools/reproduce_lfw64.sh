#!/usr/bin/env bash
# Trains every scheme with configs/lfw64.cfg for the given seeds, exports each to
# exported/lfw64_<scheme>[_s<seed>] (seed 0 without suffix), then evaluates them all.
#   tools/reproduce_lfw64.sh /path/to/lfw-deepfunneled ["0 1 2"] ["extra flags"]
# Wall times: each run's history.json (seconds per epoch) and the log lines below.
set -euo pipefail
data_dir=${1:?usage: tools/reproduce_lfw64.sh LFW_DIR [SEEDS] [EXTRA_FLAGS]}
seeds=${2:-"0 1 2"}
extra=${3:-}
schemes="stacked recursive recursive_interleaved recursive_finetune joint"
cd "$(dirname "$0")/.."
models=()
for seed in $seeds; do
  for scheme in $schemes; do
    name="lfw64_${scheme}"
    [ "$seed" = 0 ] || name="${name}_s${seed}"
    start=$(date +%s)
    # shellcheck disable=SC2086
    python -m rae_keras.train --flagfile=configs/lfw64.cfg --data_dir="$data_dir" \
      --scheme="$scheme" --seed="$seed" --name="$name" $extra
    echo "TIMING $name $(( $(date +%s) - start )) s (train + export)"
    models+=("exported/$name")
  done
done
python -m rae_keras.evaluate --models="$(IFS=,; echo "${models[*]}")" --output_dir=docs/lfw64
