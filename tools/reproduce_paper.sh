#!/usr/bin/env bash
# The paper's comparison with the original network (configs/seed_lfw128.cfg, 10 epochs,
# batch 32): stacked and recursive_interleaved for the given seeds, then the paper's
# metric (per-image sum of squared error over 128x128x3, mean of 100 images) on 100
# training images and 100 test-identity images.
#   tools/reproduce_paper.sh /path/to/lfw-deepfunneled ["0 1 2"]
set -euo pipefail
data_dir=${1:?usage: tools/reproduce_paper.sh LFW_DIR [SEEDS]}
seeds=${2:-"0 1 2"}
cd "$(dirname "$0")/.."
models=()
for seed in $seeds; do
  for scheme in stacked recursive_interleaved; do
    name="seed_lfw128_${scheme}_s${seed}"
    start=$(date +%s)
    python -m rae_keras.train --flagfile=configs/seed_lfw128.cfg --data_dir="$data_dir" \
      --scheme="$scheme" --seed="$seed" --name="$name" --notflite
    echo "TIMING $name $(( $(date +%s) - start )) s (train + export)"
    models+=("exported/$name")
  done
done
python tools/paper_table.py --models="$(IFS=,; echo "${models[*]}")"
