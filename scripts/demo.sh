#!/usr/bin/env bash
# `make demo`: runs lt-embed, lt-inspect, lt-train and lt-eval on a generated labelled sample set
# (three classes of synthetic images), offline.
# Uses real DINOv2 weights when $LT_TEACHER or weights/dinov2_vitb14.safetensors exists; otherwise
# a small randomly initialised DINOv2-shaped teacher, and says loudly that this is a smoke test.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
mkdir -p demo
if [ ! -d demo/images/val ]; then
  echo "demo: generating a labelled sample set in demo/images (train/ 96 images, val/ 24)"
  rm -rf demo/images
  $PY scripts/make-sample-images.py demo/images --count 96 --labelled
fi
teacher=${LT_TEACHER:-}
[ -z "$teacher" ] && [ -f weights/dinov2_vitb14.safetensors ] && teacher=weights/dinov2_vitb14.safetensors
views=4
if [ -z "$teacher" ]; then
  cat >&2 <<'MSG'
################################################################################
#  demo: NO TEACHER WEIGHTS FOUND ($LT_TEACHER unset, no weights/dinov2_vitb14.safetensors).
#  Using a small RANDOMLY INITIALISED DINOv2-shaped teacher: this is a SMOKE TEST of the
#  tools, the embeddings mean nothing. For real weights see README.md, "Teacher weights".
################################################################################
MSG
  [ -f demo/random-teacher.safetensors ] || $PY scripts/make-random-teacher.py demo/random-teacher.safetensors
  teacher=demo/random-teacher.safetensors
fi
set -x
bin/lt-embed --teacher "$teacher" --views $views --image-size 112 --overwrite demo/images/train \
  demo/cache.h5
bin/lt-inspect demo/cache.h5 --sheet demo/sheet.png --samples 8
{ set +x; } 2>/dev/null
bin/lt-train demo/cache.h5 --student resnet18 --out demo/out --epochs 4 --batch-size 16 --overwrite
bin/lt-eval --weights demo/out/student.safetensors --student resnet18 --teacher "$teacher" \
  --random-init --image-size 112 --json demo/eval.json demo/images
{ set +x; } 2>/dev/null
echo "demo: done; the cache is demo/cache.h5 (h5dump needs HDF5_PLUGIN_PATH=$PWD/build/plugins),"
echo "      its first 8 samples as the teacher saw them in demo/sheet.png, the student in"
echo "      demo/out/, its scores above and in demo/eval.json"
