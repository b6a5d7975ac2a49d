#!/usr/bin/env bash
# The views study: how the student's quality depends on the number of cached views per image (V)
# and the epochs trained (E), measured with lt itself on Fashion-MNIST. Not part of `make test`.
#
#   scripts/study/views.sh [WORKDIR]        (default: study-views/)
#
# Environment (defaults in brackets): VIEWS ["1 8 32"], EPOCHS ["20 150"], IMAGES [1000]
# training images, SIZE [56] pixels, BATCH [64], STUDENT [resnet18], THREADS [0 = all cores],
# DTYPES ["f16"] stored embedding types (lt-embed --dtype) to compare, TEACHER_ARGS
# ["--images 40000 --epochs 4 --dim 128 --depth 4"] options of train-fmnist-teacher.py, DOCS
# [docs] where the table (NAME.md), plot (NAME.png) and raw results (NAME.json) go, NAME
# [views-study] their base name.
#
# Steps, each skipped when its output exists (rerun to continue an interrupted study):
#   1. WORKDIR/data: IMAGES training images (balanced) and the 10,000 test images of
#      Fashion-MNIST as a labelled folder (scripts/study/fmnist-folder.py; needs Debian's
#      dataset-fashion-mnist), the training images also unlabelled for lt-embed;
#   2. WORKDIR/teacher.safetensors: a small DINOv2-shaped teacher trained on other images of the
#      training set (scripts/study/train-fmnist-teacher.py);
#   3. lt-eval of the teacher and of a random-init student (the two ends of the scale);
#   4. per V and dtype: lt-embed --views V; per E: lt-train --epochs E (with --eval-data: the
#      kNN score half way and at the end in its metrics.jsonl), then lt-eval of the student:
#      weighted kNN (k 20) of its features, the training images as the memory bank, the test
#      images scored;
#   5. scripts/study/views-report.py: the table and the plot.
# Every step's wall time is recorded in WORKDIR/times.tsv.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-study-views}
VIEWS=${VIEWS:-"1 8 32"}
EPOCHS=${EPOCHS:-"20 150"}
IMAGES=${IMAGES:-1000}
SIZE=${SIZE:-56}
BATCH=${BATCH:-64}
STUDENT=${STUDENT:-resnet18}
THREADS=${THREADS:-0}
DTYPES=${DTYPES:-f16}
TEACHER_ARGS=${TEACHER_ARGS:-"--images 40000 --epochs 4 --dim 128 --depth 4"}
DOCS=${DOCS:-$root/docs}
NAME=${NAME:-views-study}
PY=${PYTHON:-/usr/bin/python3}
bin=$root/bin
for t in lt-embed lt-train lt-eval; do
    [ -x "$bin/$t" ] || { echo "views.sh: $bin/$t missing: run make first" >&2; exit 1; }
done
mkdir -p "$work"
export HDF5_PLUGIN_PATH=$root/build/plugins

# step NAME OUTPUT CMD...: runs CMD unless OUTPUT exists, logging its time.
step() {
    local name=$1 out=$2
    shift 2
    if [ -e "$out" ]; then
        echo "views.sh: $name: done already ($out)" >&2
        return
    fi
    echo "views.sh: $name" >&2
    local t0=$SECONDS
    "$@"
    printf '%s\t%d\n' "$name" $((SECONDS - t0)) >> "$work/times.tsv"
}

step data "$work/data/val" \
    "$PY" "$root/scripts/study/fmnist-folder.py" "$work/data" --train "$IMAGES" --val 10000 --flat
step teacher "$work/teacher.safetensors" \
    "$PY" "$root/scripts/study/train-fmnist-teacher.py" "$work/teacher.safetensors" --size "$SIZE" \
    $TEACHER_ARGS
step "eval baselines" "$work/eval-baselines.json" \
    "$bin/lt-eval" -q --threads "$THREADS" --teacher "$work/teacher.safetensors" --random-init \
    --student "$STUDENT" --image-size "$SIZE" --no-linear --json "$work/eval-baselines.json" \
    "$work/data"

for dt in $DTYPES; do
    for v in $VIEWS; do
        cache=$work/cache-$dt-v$v.h5
        step "embed $dt V=$v" "$cache" \
            "$bin/lt-embed" -q --threads "$THREADS" --teacher "$work/teacher.safetensors" \
            --views "$v" --image-size "$SIZE" --dtype "$dt" "$work/data/unlabelled" "$cache"
        for e in $EPOCHS; do
            run=$work/train-$dt-v$v-e$e
            step "train $dt V=$v E=$e" "$run/student.safetensors" \
                "$bin/lt-train" -q --threads "$THREADS" --student "$STUDENT" --epochs "$e" \
                --batch-size "$BATCH" --eval-data "$work/data" --eval-every $(((e + 1) / 2)) \
                --out "$run" "$cache"
            step "eval $dt V=$v E=$e" "$run/eval.json" \
                "$bin/lt-eval" -q --threads "$THREADS" --weights "$run/student.safetensors" \
                --student "$STUDENT" --image-size "$SIZE" --no-linear --json "$run/eval.json" \
                "$work/data"
        done
    done
done

cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
total=$(awk -F'\t' '{s += $2} END {print s + 0}' "$work/times.tsv")
setup="Run: \`VIEWS=\"$VIEWS\" EPOCHS=\"$EPOCHS\" DTYPES=\"$DTYPES\" IMAGES=$IMAGES \
TEACHER_ARGS=\"$TEACHER_ARGS\" NAME=$NAME scripts/study/views.sh\` on $cpu, $(nproc) cores ($total s of steps in $work/times.tsv). \
$IMAGES Fashion-MNIST training images (balanced over the 10 classes) distilled at $SIZE px, \
batch $BATCH, $STUDENT, lt-train's defaults otherwise; kNN (k 20) of the student's features, the \
$IMAGES training images as the memory bank, the 10,000 test images scored (lt-eval). Teacher: \
scripts/study/train-fmnist-teacher.py $TEACHER_ARGS (a DINOv2-shaped ViT, patch 14, trained on \
the labels of other training images than those distilled)."
"$PY" "$root/scripts/study/views-report.py" "$work" --docs "$DOCS" --name "$NAME" --setup "$setup"
