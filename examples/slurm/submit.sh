#!/bin/bash
# Submits the whole pipeline to Slurm: SHARDS lt-embed shards as one job array, the merge once
# all of them succeeded, and two lt-train runs (two hyper-parameter settings) once the merge did.
#
#   DATA=/data/photos TEACHER=$PWD/weights/dinov2_vitb14.safetensors WORK=/shared/run1 \
#   SHARDS=8 EMBED_ARGS="--views 8" examples/slurm/submit.sh
#
# Settings: TRAIN_A / TRAIN_B (lt-train options of the two students, named a and b). Extra
# sbatch options (partition, account) go in SBATCH_ARGS. Prints the job ids.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
: "${DATA:?set DATA}" "${TEACHER:?set TEACHER}" "${WORK:?set WORK}"
export DATA TEACHER WORK
export SHARDS=${SHARDS:-8}
TRAIN_A=${TRAIN_A:-"--optimizer lars --epochs 100"}
TRAIN_B=${TRAIN_B:-"--optimizer adamw --lr 1e-3 --epochs 100"}
# shellcheck disable=SC2086  # SBATCH_ARGS is a list of options
embed=$(sbatch --parsable ${SBATCH_ARGS:-} --array="1-$SHARDS" --export=ALL \
        "$here/embed-shard.sbatch")
# afterok on an array job: every task of it succeeded
# shellcheck disable=SC2086
merge=$(sbatch --parsable ${SBATCH_ARGS:-} --dependency="afterok:$embed" --export=ALL \
        "$here/merge.sbatch")
# shellcheck disable=SC2086
train_a=$(NAME=a TRAIN_ARGS=$TRAIN_A sbatch --parsable ${SBATCH_ARGS:-} \
          --dependency="afterok:$merge" --export=ALL "$here/train.sbatch")
# shellcheck disable=SC2086
train_b=$(NAME=b TRAIN_ARGS=$TRAIN_B sbatch --parsable ${SBATCH_ARGS:-} \
          --dependency="afterok:$merge" --export=ALL "$here/train.sbatch")
echo "shards $embed, merge $merge, students $train_a $train_b"
