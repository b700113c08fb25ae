#!/usr/bin/env bash
# The equal-wall-clock searches (docs/results.md): every candidate is $CONFIG
# (default configs/lfw64.cfg) plus its flags and $EXTRA_FLAGS, trained for each seed into
# runs/search/NAME_sS, exported (SavedModel only) to exported/search/NAME_sS, then all
# evaluated together into $OUTPUT (default docs/lfw64_search) with their training seconds.
#   tools/search.sh /path/to/lfw-deepfunneled ["0 1 2"] [NAME ...]
#   CONFIG=configs/seed_lfw128.cfg OUTPUT=docs/lfw128_depths \
#     EXTRA_FLAGS="--max_images=3072 --cache_frozen_prefix --steps_per_execution=8" \
#     tools/search.sh /path/to/lfw-deepfunneled "0 1 2" stacked20 stacked20k4 rec10k4 rr10f4k4
# Without names, every candidate below is trained (about 3 minutes per run on 2 cores at 64x64).
set -euo pipefail
data_dir=${1:?usage: tools/search.sh LFW_DIR [SEEDS] [NAME ...]}
config=${CONFIG:-configs/lfw64.cfg}
output=${OUTPUT:-docs/lfw64_search}
seeds=${2:-"0 1 2"}
shift $(( $# >= 2 ? 2 : $# ))

candidates=(  # NAME FLAGS (on top of $CONFIG)
  "stacked20     --scheme=stacked --epochs=20"
  "stacked20cos  --scheme=stacked --epochs=20 --learning_rate_schedule=cosine"
  "stacked22     --scheme=stacked --epochs=22"
  "stacked20k53  --scheme=stacked --epochs=20 --decoder_kernel_sizes=5,3,3,3,3,3"
  "r10f3         --epochs=10 --finetune_epochs=3"
  "r10f4         --epochs=10 --finetune_epochs=4"
  "r10f3cos      --epochs=10 --finetune_epochs=3 --learning_rate_schedule=cosine"
  "r10f3k53      --epochs=10 --finetune_epochs=3 --decoder_kernel_sizes=5,3,3,3,3,3"
  "r5f8          --epochs=5 --finetune_epochs=8"
  "r5f8cos       --epochs=5 --finetune_epochs=8 --learning_rate_schedule=cosine"
  "r3f10         --epochs=3 --finetune_epochs=10"
  "joint16w      --scheme=joint --epochs=16 --level_weights=1,0.1,0.05,0.02,0.01,0.005"
  # One model for every depth (docs/results.md); that search ran with --max_images=3072
  # on one dedicated core: pass it as EXTRA_FLAGS="--max_images=3072".
  "rec10         --scheme=recursive --epochs=10"
  "rd8f3         --scheme=recursive_depths --epochs=8 --finetune_epochs=3"
  "rd6f4         --scheme=recursive_depths --epochs=6 --finetune_epochs=4"
  "rd8f3w10      --scheme=recursive_depths --epochs=8 --finetune_epochs=3 --level_weights=0.1,0.1,0.1,0.1,0.1,1"
  "rr10f4        --scheme=recursive_depths_routed --epochs=10 --finetune_epochs=4"
  "rr10f5        --scheme=recursive_depths_routed --epochs=10 --finetune_epochs=5"
  # At 128x128 (CONFIG=configs/seed_lfw128.cfg, decoder kernels 5/3): the same settings
  # with decoder kernels 4, and stacked with either decoder.
  "stacked20k4   --scheme=stacked --epochs=20 --decoder_kernel_sizes=4"
  "rec10k4       --scheme=recursive --epochs=10 --decoder_kernel_sizes=4"
  "rr10f4k4      --scheme=recursive_depths_routed --epochs=10 --finetune_epochs=4 --decoder_kernel_sizes=4"
)

cd "$(dirname "$0")/.."
entries=()
for line in "${candidates[@]}"; do
  read -r name flags <<<"$line"
  if [ $# -gt 0 ] && [[ " $* " != *" $name "* ]]; then continue; fi
  members=()
  for seed in $seeds; do
    run="${name}_s${seed}"
    # shellcheck disable=SC2086
    python -m rae_keras.train --flagfile="$config" --data_dir="$data_dir" \
      --name="$run" --model_dir="runs/search/$run" --export_dir="exported/search/$run" \
      --notflite --seed="$seed" $flags ${EXTRA_FLAGS:-}
    members+=("exported/search/$run")
  done
  entries+=("$name=$(IFS=+; echo "${members[*]}")")
done
[ ${#entries[@]} -gt 0 ] || { echo "no candidate named: $*" >&2; exit 2; }
python -m rae_keras.evaluate --data_dir="$data_dir" --output_dir="$output" \
  --models="$(IFS=,; echo "${entries[*]}")"
python tools/training_times.py runs/search/*
