#!/usr/bin/env bash
# `make demo`: runs lt-embed (then lt-train, where it is built) on a generated sample set, offline.
# Uses real DINOv2 weights when $LT_TEACHER or weights/dinov2_vitb14.safetensors exists; otherwise
# a small randomly initialised DINOv2-shaped teacher, and says loudly that this is a smoke test.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
mkdir -p demo
if [ ! -d demo/images ]; then
  echo "demo: generating 64 sample images in demo/images"
  $PY scripts/make-sample-images.py demo/images --count 64
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
bin/lt-embed --teacher "$teacher" --views $views --overwrite demo/images demo/cache.h5
bin/lt-inspect demo/cache.h5 --sheet demo/sheet.png --samples 8
{ set +x; } 2>/dev/null
if [ -x bin/lt-train ]; then
  set -x
  bin/lt-train demo/cache.h5 --student resnet18 --out demo/out --epochs 2 --batch-size 16 --overwrite
  { set +x; } 2>/dev/null
fi
echo "demo: done; the cache is demo/cache.h5 (h5dump needs HDF5_PLUGIN_PATH=$PWD/build/plugins),"
echo "      its first 8 samples as the teacher saw them in demo/sheet.png"
