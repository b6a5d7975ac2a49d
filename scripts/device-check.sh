#!/usr/bin/env bash
# device-check.sh: the one prepared GPU check, run on a lent GPU machine.
#
# Why it exists: GPU time is scarce (minutes per task) and CI has no GPU, so one script does it
# all in one call and keeps going past failures, so that one run gives the most information:
#   1. the machine: nvidia-smi, driver, CUDA, torch;
#   2. the binaries: built there with `make -j16 all` when the -dev packages are there, otherwise
#      the ones built here and carried in .devpack/ (scripts/pack-device.sh) with their libraries
#      (cuDNN is not carried: the machine's own, from PyTorch's nvidia-cudnn wheel, is used);
#   3. tests/run-cuda.sh: every CUDA test binary (the teacher's ops and forward, the student's
#      ops and whole steps, the renderer's bytes), lt-embed on the GPU vs the CPU (embeddings,
#      dumped views), lt-train end to end on the GPU (vs the CPU, kill + resume, a CPU checkpoint
#      continued, single-process NCCL vs the plain run);
#   4. then the SECTIONS asked for (default render,student):
#      teacher  the ViT-B/14 benchmark (ours bf16 vs PyTorch SDPA at batch 256, profile, kernel
#               switches, earlier kernels of dev/cuda/, accuracy against torch fp32);
#      render   lt-embed end to end on 800 JPEGs of 300-500 px and 96 of 2000-3000 px, views
#               rendered on the GPU and on the CPU, and the GPU data path alone (bench_data_gpu);
#      student  one training step at 224, batch 256 (resnet18, resnet50): ours vs PyTorch eager
#               fp32, eager bf16 channels_last, torch.compile (resnet18); lt-train end to end;
#   5. one table (also in $OUT/summary.txt), and $OUT/device-run.json: the line to append to
#      docs/device-runs.jsonl. Full log: $OUT/device-check.log.
#
# Here (no GPU):  make -j2 all && bash scripts/pack-device.sh
# There:          bash scripts/device-check.sh   (with `carry: [".devpack"]`; BUDGET seconds, 480 by
#                 default: give the device call timeout_s 540)
# Exit 0 when every test passed, 1 otherwise (the benchmarks never fail the script).
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/.devcheck-out}
mkdir -p "$OUT"
LOG=$OUT/device-check.log
: >"$LOG"
exec > >(tee -a "$LOG") 2>&1
START=$(date +%s)
WORK=$(mktemp -d /tmp/lt-devcheck.XXXXXX)
RES=$OUT/results.txt
: >"$RES"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

# SECTIONS: which parts run after the tests (comma-separated; default render,student): teacher (the ViT-B/14
# benchmarks, profile, switches, earlier kernels, accuracy), render (lt-embed and the data path with
# views rendered on the GPU), student (lt-train's ResNet step on the GPU, when it exists)
SECTIONS=${SECTIONS:-render,student}
want() { case ",$SECTIONS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
el() { echo $(($(date +%s) - START)); }
step() { echo; echo "===== [$(el)s] $*"; }
# seconds left of the script's budget: BUDGET (default 480) so that it ends, summary printed,
# inside a 540-second device call even when a step hangs
BUDGET=${BUDGET:-480}
left() { echo $((BUDGET - $(el))); }
tl() { # tl SECONDS: a step's timeout, cut to what is left of the budget (at least 5)
  local l; l=$(left)
  if [ "$l" -lt "$1" ]; then [ "$l" -lt 5 ] && echo 5 || echo "$l"; else echo "$1"; fi
}

# lt's binaries get the carried libraries; Python and the system tools do not
LT_LIBPATH=""
run_lt() {
  if [ -n "$LT_LIBPATH" ]; then
    LD_LIBRARY_PATH="$LT_LIBPATH${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$@"
  else
    "$@"
  fi
}

# ---- 1. the machine ---------------------------------------------------------------------------
step "machine"
date -u
uname -srm
nproc
free -g | head -2
nvidia-smi || echo "device-check: nvidia-smi failed"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.limit,temperature.gpu \
  --format=csv 2>/dev/null
command -v nvcc >/dev/null && nvcc --version | tail -2 || echo "no nvcc on PATH"
ls -d /usr/local/cuda* 2>/dev/null
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.is_available() and torch.cuda.get_device_name(0))' 2>&1 | tail -1
ldd --version 2>&1 | head -1
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)

# ---- 2. binaries -------------------------------------------------------------------------------
step "binaries"
BUILT=carried
if pkg-config --exists hdf5 libturbojpeg libpng libzstd openblas 2>/dev/null && command -v nvcc >/dev/null; then
  echo "the -dev packages are here: building (make -j16 all)"
  if timeout 300 make -j16 all >"$WORK/build.log" 2>&1; then
    BUILT="built here"
  else
    tail -30 "$WORK/build.log"
    echo "device-check: the build failed; falling back to the carried binaries"
  fi
else
  echo "no -dev packages here (pkg-config): using the binaries built on the dev machine (.devpack)"
fi
if [ "$BUILT" = carried ]; then
  if [ ! -f .devpack/tree.tar.xz ] || [ ! -f .devpack/libs.tar.xz ]; then
    echo "device-check: FATAL: no .devpack/ (run scripts/pack-device.sh and carry .devpack)"
    exit 1
  fi
  cat .devpack/MANIFEST 2>/dev/null | head -3
  tar -C . -xJf .devpack/tree.tar.xz
  mkdir -p "$WORK/lib"
  tar -C "$WORK/lib" -xJf .devpack/libs.tar.xz
  LT_LIBPATH=$WORK/lib
fi
# CUDA's own libraries: the binaries' rpath is /usr/local/cuda/lib64; look elsewhere if needed
if run_lt ldd build/tests/test_cuda_ops | grep -q "not found"; then
  for d in /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
           $("$PY" -c 'import nvidia, os, glob; print(" ".join(glob.glob(os.path.join(list(nvidia.__path__)[0], "*", "lib"))))' 2>/dev/null); do
    if [ -e "$d/libcublasLt.so.13" ] || [ -e "$d/libcudart.so.13" ]; then
      LT_LIBPATH=${LT_LIBPATH:+$LT_LIBPATH:}$d
    fi
  done
fi
# cuDNN (the student's convolutions; not carried, see pack-device.sh): the device's own, e.g.
# PyTorch's nvidia-cudnn wheel, when the binaries do not find it
if [ -x build/tests/test_cuda_cnn ] && run_lt ldd build/tests/test_cuda_cnn | grep -q "libcudnn.*not found"; then
  for d in /usr/local/cuda/lib64 /usr/lib/x86_64-linux-gnu \
           $("$PY" -c 'import nvidia, os, glob; print(" ".join(glob.glob(os.path.join(list(nvidia.__path__)[0], "cudnn*", "lib"))))' 2>/dev/null); do
    if [ -e "$d/libcudnn.so.9" ]; then
      LT_LIBPATH=${LT_LIBPATH:+$LT_LIBPATH:}$d
      break
    fi
  done
fi
# NCCL (lt-train loads libnccl.so.2 for a data-parallel GPU run; not carried): the device's own,
# e.g. PyTorch's nvidia-nccl wheel, unless the CUDA folder or the system has it
if [ ! -e /usr/local/cuda/lib64/libnccl.so.2 ] && ! ldconfig -p 2>/dev/null | grep libnccl.so.2 >/dev/null; then
  for d in $("$PY" -c 'import nvidia, os, glob; print(" ".join(glob.glob(os.path.join(list(nvidia.__path__)[0], "nccl*", "lib"))))' 2>/dev/null); do
    if [ -e "$d/libnccl.so.2" ]; then
      LT_LIBPATH=${LT_LIBPATH:+$LT_LIBPATH:}$d
      break
    fi
  done
fi
export LT_LIBPATH
echo "LT_LIBPATH=$LT_LIBPATH"
# ltenv CMD...: runs one of lt's binaries with the carried libraries (usable under timeout)
printf '#!/bin/sh\n[ -n "$LT_LIBPATH" ] && export LD_LIBRARY_PATH="$LT_LIBPATH${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"\nexec "$@"\n' >"$WORK/ltenv"
chmod +x "$WORK/ltenv"
for b in build/tests/test_cuda_ops bin/lt-embed build/tests/tools/vit_bench; do
  echo "-- ldd $b"
  run_lt ldd "$b" 2>&1 | grep -E "not found|cuda|cublas|hdf5|openblas" | sed 's/^/   /'
done
MISSING=$(run_lt ldd build/tests/test_cuda_ops 2>&1 | grep -c "not found")

# ---- 3. tests ------------------------------------------------------------------------------------
step "tests (tests/run-cuda.sh)"
timeout "$(tl 200)" bash tests/run-cuda.sh 2>&1 | tee "$WORK/tests.log"
TESTS_RC=${PIPESTATUS[0]}
cp "$WORK/tests.log" "$OUT/tests.log"
grep -E "FAIL" "$WORK/tests.log" | grep -v "^run-cuda" | head -40 >"$WORK/fails.txt"
OPS_LINE=$(grep -E "^test_cuda_ops: [0-9]+ passed" "$WORK/tests.log" | tail -1)
DINO_LINE=$(grep -E "^test_cuda_dinov2: [0-9]+ passed" "$WORK/tests.log" | tail -1)
E2E_LINE=$(grep -E "^run-cuda: e2e-embed" "$WORK/tests.log" | tr '\n' ';')
STATUS_LINE=$(grep -E "^run-cuda: test_cuda" "$WORK/tests.log" | sed 's/^run-cuda: //' | tr '\n' ';')

# ---- 4. benchmark ------------------------------------------------------------------------------
VB=build/tests/tools/vit_bench
W=$WORK/vitb14.safetensors
bench_ours() { # args for vit_bench run
  echo "-- vit_bench run $*"
  if [ "$(left)" -lt 40 ]; then echo "device-check: out of time, skipped"; return; fi
  timeout "$(tl 120)" "$WORK/ltenv" "$VB" run "$W" "$@" 2>&1 | tee -a "$RES"
}
bench_env() { # ENV=VALUE... -- args for vit_bench run (a variant of the kernels, see nn/ops_cuda.h)
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  echo "-- ${envs[*]} vit_bench run $*"
  if [ "$(left)" -lt 40 ]; then echo "device-check: out of time, skipped"; return; fi
  timeout "$(tl 120)" env "${envs[@]}" "$WORK/ltenv" "$VB" run "$W" "$@" 2>&1 | tee -a "$RES"
}
profile_ours() { # ENV=VALUE... -- args for vit_bench profile
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  echo "-- ${envs[*]} vit_bench profile $*"
  if [ "$(left)" -lt 40 ]; then echo "device-check: out of time, skipped"; return; fi
  timeout "$(tl 120)" env "${envs[@]}" "$WORK/ltenv" "$VB" profile "$W" "$@" 2>&1 | tee -a "$RES"
}
bench_torch() {
  echo "-- vit_gpu_torch.py $*"
  if [ "$(left)" -lt 40 ]; then echo "device-check: out of time, skipped"; return; fi
  timeout "$(tl 150)" "$PY" scripts/bench/vit_gpu_torch.py "$W" "$@" 2>&1 | tee -a "$RES"
}
step "benchmark: random ViT-B/14 weights"
want teacher || want render || W=/nonexistent
[ "$W" = /nonexistent ] || timeout 60 "$WORK/ltenv" "$VB" make-weights "$W" --dim 768 --depth 12 --grid 37 --patch 14 --registers 0 ||
  echo "device-check: make-weights failed"
if want teacher && [ -f "$W" ]; then
  step "benchmark: ours, bf16, batch 256"
  bench_ours --batch 256 --prec bf16 --iters 10 --warmup 3
  step "profile: GPU time per op class, bf16 B=256 (default kernels)"
  profile_ours LT_CUDA_TUNE_LOG=1 -- --batch 256 --prec bf16 --reps 5 --warmup 2 --label default
  step "benchmark: kernel switches, bf16 B=256 (attention in 4-warp blocks; no GEMM autotuning)"
  bench_env LT_CUDA_ATTN_WARPS=4 -- --batch 256 --prec bf16 --iters 6 --warmup 2 --label attnw4
  bench_env LT_CUDA_AUTOTUNE=0 -- --batch 256 --prec bf16 --iters 6 --warmup 2 --label noautotune
fi
want teacher && step "earlier kernels (dev/cuda/) vs production, ViT-B/14 size B=256 (checks + timings)"
want teacher && for d in attention_v1 attention_v2 rowops_v1; do
  echo "-- build/dev/cuda/$d"
  if [ ! -x "build/dev/cuda/$d" ]; then echo "device-check: build/dev/cuda/$d missing"; continue; fi
  if [ "$(left)" -lt 40 ]; then echo "device-check: out of time, skipped"; continue; fi
  timeout "$(tl 60)" "$WORK/ltenv" "build/dev/cuda/$d" --batch 256 --reps 20 2>&1 | tee -a "$RES"
  DEV_RC="${DEV_RC:-}$d exit ${PIPESTATUS[0]}; "
done
if want teacher && [ -f "$W" ]; then
  step "benchmark: PyTorch bf16 SDPA, batch 256"
  bench_torch --batch 256 --iters 10 --warmup 3
  step "accuracy at full size: 4 images, ours bf16 and torch bf16 vs torch fp32"
  timeout "$(tl 90)" "$WORK/ltenv" "$VB" check "$W" "$WORK/in.f32" "$WORK/ours_bf16.f32" --batch 4 --prec bf16 2>&1 | tee -a "$RES"
  timeout "$(tl 120)" "$PY" scripts/bench/vit_gpu_torch.py "$W" --check "$WORK/in.f32" "$WORK/ours_bf16.f32" \
    --batch 4 --label bf16 2>&1 | tee -a "$RES"
fi

# ---- 4b. the data path with views rendered on the GPU (issue 13) --------------------------------
# lt-embed end to end on the full-size teacher, views rendered on the GPU (default) and on the CPU
# (--render cpu), on NIMG generated JPEGs of 300-500 px and NBIG of 2000-3000 px, 8 views each at
# batch 256; then the data path alone (bench_data_gpu: decode + both views + mix on the GPU) on
# the caches they made, per batch from the host ("stream") and from device-resident images.
NIMG=${NIMG:-800}
NBIG=${NBIG:-96}
declare -A EMB   # EMB[<set>-<render>]: "views/s (phase B) | teacher views/s | time line"
declare -A DP    # DP[<set>-<mode>]: samples/s
gen_jpegs() { # gen_jpegs DIR N MIN MAX SEED
  timeout "$(tl 90)" "$PY" - "$@" <<'PYEOF' || echo "device-check: image generation failed"
import os, random, sys
from multiprocessing import Pool
from PIL import Image, ImageChops
out, n, lo, hi, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
os.makedirs(out, exist_ok=True)
def one(i):
    rng = random.Random(seed * 100003 + i)
    w, h = rng.randint(lo, hi), rng.randint(lo, hi)
    # smooth colour fields plus noise: photo-like JPEG sizes, neither flat nor pure noise
    sw, sh = max(2, w // 40), max(2, h // 40)
    small = Image.frombytes("RGB", (sw, sh), bytes(rng.getrandbits(8) for _ in range(sw * sh * 3)))
    img = small.resize((w, h), Image.BICUBIC)
    noise = Image.effect_noise((w, h), 10).convert("RGB")
    img = ImageChops.add(img, noise, 1.0, -128)
    img.save(os.path.join(out, "img%04d.jpg" % i), quality=90)
with Pool(os.cpu_count()) as p:
    p.map(one, range(n))
print("generated", n, "JPEGs of", lo, "-", hi, "px in", out)
PYEOF
  du -sh "$1" 2>/dev/null
}
embed_run() { # embed_run SET DIR VIEWS RENDER
  local set=$1 dir=$2 views=$3 render=$4 log="$WORK/embed-$1-$4.log"
  if [ "$(left)" -lt 45 ]; then echo "device-check: out of time, skipped"; return; fi
  rm -f "$WORK/$set-$render.h5"
  echo "-- lt-embed $set, --render $render"
  if timeout "$(tl 120)" "$WORK/ltenv" bin/lt-embed -v --teacher "$W" --views "$views" --device cuda \
      --precision bf16 --batch-size 256 --render "$render" "$dir" "$WORK/$set-$render.h5" >"$log" 2>&1; then
    grep -E "done:|time:" "$log" | sed 's/^lt-embed: /   /'
    local rate teach tline
    rate=$(grep -E "done:" "$log" | tail -1 | sed -n 's/.*teacher [0-9.]* s, \([0-9.]*\) views\/s).*/\1/p')
    teach=$(grep -E "time:" "$log" | tail -1 | sed -n 's/.*teacher [0-9.]* s (\([0-9.]*\) views\/s).*/\1/p')
    tline=$(grep -E "time:" "$log" | tail -1 | sed 's/^lt-embed: //')
    EMB[$set-$render]="${rate:-?}|${teach:-?}|$tline"
  else
    tail -20 "$log"
    EMB[$set-$render]="FAILED||"
  fi
}
datapath_run() { # datapath_run SET MODE
  local set=$1 mode=$2 cache="$WORK/$1-gpu.h5" line
  if [ ! -f "$cache" ] || [ "$(left)" -lt 30 ]; then echo "device-check: data path $set $mode skipped"; return; fi
  echo "-- bench_data_gpu $set --mode $mode"
  line=$(timeout "$(tl 60)" "$WORK/ltenv" build/tests/tools/bench_data_gpu "$cache" 4096 --batch 256 \
           --threads "$(nproc)" --mode "$mode" 2>&1 | tail -1)
  echo "   $line"
  DP[$set-$mode]=$(echo "$line" | sed -n 's/.*"samples_per_s": \([0-9.]*\).*/\1/p')
}
if want render && [ -f "$W" ] && [ "$(left)" -gt 90 ]; then
  step "data path: $NIMG JPEGs (300-500 px) and $NBIG (2000-3000 px), 8 views at 224, ViT-B/14 bf16 batch 256"
  gen_jpegs "$WORK/imgs" "$NIMG" 300 500 11
  gen_jpegs "$WORK/big" "$NBIG" 2000 3000 12
  for r in gpu cpu; do embed_run small "$WORK/imgs" 8 $r; done
  for r in gpu cpu; do embed_run large "$WORK/big" 8 $r; done
  for set in small large; do for mode in stream device; do datapath_run $set $mode; done; done
fi
EMBED_LINE="small gpu-render ${EMB[small-gpu]:-n/a}"

# ---- 4c. the student on the GPU (issue 12) ------------------------------------------------------
# One lt-train step (bench_student: ResNet forward + backward, head, queue KL loss, clipping, LARS)
# at 224, batch 256, on the CUDA backend (fp32, tf32 and bf16), against PyTorch on
# the same card: eager fp32 (TF32 off), eager channels_last + bf16 autocast, and torch.compile of
# the latter (resnet18 only: compiling resnet50 too would take minutes); then lt-train end to end
# on the render section's cache (800 JPEGs x 8 views, ViT-B/14 embeddings).
declare -A ST   # ST[<arch>-<impl>]: img/s
student_ours() { # student_ours ARCH BATCH REPS PRECISION KEY
  if [ "$(left)" -lt 40 ]; then echo "device-check: out of time, skipped"; return; fi
  echo "-- bench_student $1 $2 224 --device cuda --precision $4"
  local line
  line=$(timeout "$(tl 150)" "$WORK/ltenv" build/tests/tools/bench_student "$1" "$2" 224 "$3" --device cuda \
           --precision "$4" 2>&1 | tail -1)
  echo "   $line"
  ST[$1-$5]=$(echo "$line" | "$PY" -c 'import json,statistics,sys; d=json.loads(sys.stdin.read()); print("%.1f" % (d["batch"] / statistics.median(d["times"])))' 2>/dev/null)
}
student_torch() { # student_torch ARCH BATCH REPS VARIANTS
  if [ "$(left)" -lt 60 ]; then echo "device-check: out of time, skipped"; return; fi
  echo "-- student_gpu_torch.py $1 $2 224 $3 --variants $4"
  timeout "$(tl 240)" "$PY" scripts/bench/student_gpu_torch.py "$1" "$2" 224 "$3" --variants "$4" 2>&1 | tee -a "$RES" | grep RESULT
  local v
  for v in eager_fp32 eager_bf16 compile_bf16; do
    ST[$1-$v]=$(grep -F "RESULT arch=$1 batch=$2 variant=$v " "$RES" | tail -1 | sed -n 's/.*img_per_s=\([0-9.]*\).*/\1/p')
  done
}
TRAIN_E2E=""
if want student; then
  step "student: one training step at 224, batch 256: ours (fp32) vs PyTorch"
  student_ours resnet18 256 5 fp32 ours
  student_ours resnet18 256 5 tf32 ours_tf32
  student_ours resnet18 256 5 bf16 ours_bf16
  # the same step without the CUDA graph: what recording the step saves
  LT_CUDA_GRAPH=0 student_ours resnet18 256 5 bf16 ours_bf16_nograph
  # and with cuDNN's non-deterministic algorithms allowed: what determinism costs
  LT_CUDA_DETERMINISTIC=0 student_ours resnet18 256 5 bf16 ours_bf16_nondet
  student_torch resnet18 256 10 eager_fp32,eager_bf16,compile_bf16
  student_ours resnet50 256 3 fp32 ours
  student_ours resnet50 256 3 tf32 ours_tf32
  student_ours resnet50 256 3 bf16 ours_bf16
  for prec in bf16 tf32 fp32; do
    if [ "$(left)" -lt 40 ]; then break; fi
    echo "-- bench_student resnet18 256 224 3 --device cuda --precision $prec --profile"
    timeout "$(tl 120)" "$WORK/ltenv" build/tests/tools/bench_student resnet18 256 224 3 --device cuda \
      --precision $prec --profile 2>&1 | tail -1 | tee "$WORK/profile-$prec.json"
  done
  student_torch resnet50 256 5 eager_fp32,eager_bf16
  if [ -f "$WORK/small-gpu.h5" ] && [ "$(left)" -gt 60 ]; then
    step "lt-train end to end on the GPU: resnet18, batch 256, 4 epochs of the 800-image cache"
    if timeout "$(tl 150)" "$WORK/ltenv" bin/lt-train -v --device cuda --student resnet18 --batch-size 256 \
        --epochs 4 --no-tensorboard --out "$WORK/train-out" "$WORK/small-gpu.h5" >"$WORK/train.log" 2>&1; then
      tail -5 "$WORK/train.log"
      TRAIN_E2E=$(grep -E "done:" "$WORK/train.log" | tail -1 | sed -n 's/.* \([0-9.]*\) img\/s.*/\1/p')
    else
      tail -20 "$WORK/train.log"
      TRAIN_E2E=FAILED
    fi
  fi
  jst() { echo "{\"ours\": $(num "${ST[$1-ours]:-}"), \"ours_tf32\": $(num "${ST[$1-ours_tf32]:-}"), \"ours_bf16\": $(num "${ST[$1-ours_bf16]:-}"), \"ours_bf16_nograph\": $(num "${ST[$1-ours_bf16_nograph]:-}"), \"ours_bf16_nondet\": $(num "${ST[$1-ours_bf16_nondet]:-}"), \"pytorch_eager\": $(num "${ST[$1-eager_bf16]:-}"), \"pytorch_eager_fp32\": $(num "${ST[$1-eager_fp32]:-}"), \"pytorch_compile\": $(num "${ST[$1-compile_bf16]:-}")}"; }
fi

# ---- 5. summary --------------------------------------------------------------------------------
val() { # val "<RESULT prefix>" key
  grep -F "RESULT $1" "$RES" | tail -1 | tr ' ' '\n' | sed -n "s/^$2=//p"
}
GF=$(val "impl=ours prec=bf16 batch=256" gflop_per_view)
GF=${GF:-46.30}
row() { # label views_per_s ms
  local v=${2:-} ms=${3:-}
  if [ -z "$v" ]; then printf "  %-44s %10s\n" "$1" "n/a"; return; fi
  awk -v l="$1" -v v="$v" -v ms="$ms" -v gf="$GF" 'BEGIN {
    printf "  %-44s %10.0f %10s %9.1f %7.1f%%\n", l, v, ms, v * gf / 1000, v * gf / 1000 / 790 * 100 }'
}
{
  echo
  echo "================================ device check summary ================================"
  echo "device: ${GPU_NAME:-unknown}   binaries: $BUILT   missing libraries: $MISSING   time: $(el)s"
  echo "tests:  ${STATUS_LINE:-no result} (run-cuda exit $TESTS_RC)"
  echo "        ${OPS_LINE:-test_cuda_ops: no result}"
  echo "        ${DINO_LINE:-test_cuda_dinov2: no result}"
  echo "        e2e: ${E2E_LINE:-no result}"
  if [ -s "$WORK/fails.txt" ]; then echo "        first failures:"; sed 's/^/          /' "$WORK/fails.txt" | head -15; fi
  echo
  echo "ViT-B/14 at 224, random weights, $GF GFLOP/view; bound 790 TFLOP/s bf16 = $(awk -v g="$GF" 'BEGIN{printf "%.0f", 790e3/g}') views/s"
  printf "  %-44s %10s %10s %9s %8s\n" "" "views/s" "ms/batch" "TFLOP/s" "% bound"
  row "ours bf16 B=256, pipelined (2 slots)" "$(val "impl=ours prec=bf16 batch=256" pipelined_views_per_s)" ""
  row "ours bf16 B=256, synchronous (median)" "$(val "impl=ours prec=bf16 batch=256" views_per_s)" "$(val "impl=ours prec=bf16 batch=256" median_ms)"
  row "ours bf16 B=256, GPU time only (events)" "$(val "impl=ours prec=bf16 batch=256" gpu_views_per_s)" "$(val "impl=ours prec=bf16 batch=256" gpu_teacher_ms)"
  row "  ... default but LT_CUDA_ATTN_WARPS=4" "$(val "impl=ours-attnw4 prec=bf16 batch=256" pipelined_views_per_s)" "$(val "impl=ours-attnw4 prec=bf16 batch=256" gpu_teacher_ms)"
  row "  ... default but LT_CUDA_AUTOTUNE=0" "$(val "impl=ours-noautotune prec=bf16 batch=256" pipelined_views_per_s)" "$(val "impl=ours-noautotune prec=bf16 batch=256" gpu_teacher_ms)"
  echo "  (ms/batch of the switch rows: GPU time only, events)"
  row "torch bf16 SDPA B=256 (median)" "$(val "impl=torch prec=bf16 batch=256" views_per_s)" "$(val "impl=torch prec=bf16 batch=256" median_ms)"
  o=$(val "impl=ours prec=bf16 batch=256" pipelined_views_per_s)
  t=$(val "impl=torch prec=bf16 batch=256" views_per_s)
  if [ -n "$o" ] && [ -n "$t" ]; then
    awk -v o="$o" -v t="$t" 'BEGIN { printf "  ours/torch at B=256: %.2fx   (goal: >= 10000 views/s and >= 1.5x torch: %s)\n", o / t, (o >= 10000 && o >= 1.5 * t) ? "MET" : "not met" }'
  fi
  echo
  echo "earlier kernels (dev/cuda/) vs production at the ViT-B/14 size, B=256 (${DEV_RC:-not run}):"
  if grep -q "^RESULT kernel=" "$RES"; then
    grep "^RESULT kernel=" "$RES" | sed 's/^RESULT /  /'
  else
    echo "  no result"
  fi
  grep -E "^FAIL " "$RES" | head -5 | sed 's/^/  /'
  echo
  echo "GPU time per op class, one forward of B=256 bf16 (CUDA events between the ops; vit_bench profile):"
  for lab in default; do
    if grep -q "^PROF \[$lab\]" "$RES"; then grep "^PROF \[$lab\]" "$RES" | sed 's/^PROF /  /'; else echo "  [$lab] no profile"; fi
  done
  if grep -q "gemm autotune" "$RES"; then
    echo "cuBLASLt autotuning (heuristic's first choice vs the fastest of the candidates):"
    grep "gemm autotune" "$RES" | sed 's/^lt: gemm autotune /  /' | sort -u | head -12
  fi
  echo
  echo "accuracy, 4 images, vs torch fp32 (GPU, TF32 off): NMSE / max cosine distance"
  for k in ours_bf16_vs_torch_fp32 torch_bf16_vs_torch_fp32 ours_cpu_fp32_vs_torch_fp32 ours_bf16_vs_cpu_fp32; do
    printf "  %-34s %12s %12s\n" "$k" "$(val "check=$k" nmse)" "$(val "check=$k" max_cos_dist)"
  done
  echo
  echo "lt-embed, ViT-B/14 bf16 batch 256, 8 views at 224 (embedding pass views/s; teacher-only"
  echo "views/s from the teacher's own GPU time; goal: end to end >= 85% of teacher-only):"
  printf "  %-34s %12s %14s %8s\n" "" "views/s" "teacher-only" "ratio"
  for k in small-gpu small-cpu large-gpu large-cpu; do
    IFS='|' read -r rate teach tline <<<"${EMB[$k]:-n/a||}"
    ratio=$(awk -v a="$rate" -v b="$teach" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.0f%%", 100 * a / b; else print "" }')
    printf "  %-34s %12s %14s %8s\n" "$k (set-render)" "$rate" "$teach" "$ratio"
    [ -n "$tline" ] && echo "      $tline"
  done
  echo "student step at 224, batch 256, img/s (ours: the CUDA backend; goals for resnet18: >= 1.5x"
  echo "PyTorch eager (bf16, channels_last) and >= 1.0x torch.compile):"
  printf "  %-10s %10s %10s %10s %12s %12s %14s\n" "" "ours fp32" "ours tf32" "ours bf16" "torch fp32" "torch bf16" "compile bf16"
  for a in resnet18 resnet50; do
    printf "  %-10s %10s %10s %10s %12s %12s %14s\n" "$a" "${ST[$a-ours]:-n/a}" "${ST[$a-ours_tf32]:-n/a}" \
      "${ST[$a-ours_bf16]:-n/a}" "${ST[$a-eager_fp32]:-n/a}" "${ST[$a-eager_bf16]:-n/a}" "${ST[$a-compile_bf16]:-n/a}"
  done
  for prec in bf16 tf32 fp32; do
    [ -s "$WORK/profile-$prec.json" ] || continue
    echo "per-op time of one resnet18 step, batch 256, $prec (each op waited for; ms per step, calls):"
    "$PY" - "$WORK/profile-$prec.json" <<'PYEOF' 2>/dev/null || echo "  (no profile)"
import json, sys
d = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
tot = sum(d["profile"].values())
for k, v in sorted(d["profile"].items(), key=lambda kv: -kv[1]):
    print("  %-18s %9.2f ms %5.1f%%  %5d calls" % (k, v, 100 * v / tot if tot else 0, d["profile_calls"][k]))
print("  %-18s %9.2f ms" % ("total", tot))
PYEOF
  done
  echo "lt-train end to end on the GPU, resnet18 batch 256: ${TRAIN_E2E:-n/a} img/s"
  echo "data path alone on the GPU (decode + 2 views + mix), samples/s; goal >= 30,000:"
  for k in small-stream small-device large-stream large-device; do
    printf "  %-34s %12s\n" "$k" "${DP[$k]:-n/a}"
  done
  echo "log: $LOG"
} | tee "$OUT/summary.txt"
# one line for docs/device-runs.jsonl (the session appends it): date, card, revision, results
REV=$(sed -n 's/^revision[: ]*//p' .devpack/MANIFEST 2>/dev/null | head -1)
REV=${REV:-${LT_REVISION:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}}
num() { awk -v v="$1" 'BEGIN { if (v ~ /^[0-9.]+$/) print v + 0; else print "null" }'; }
emb() { IFS='|' read -r rate teach _ <<<"${EMB[$1]:-||}"; echo "{\"ours\": $(num "$rate"), \"teacher_only\": $(num "$teach")}"; }
{
  printf '{"date": "%s", "card": "%s", "revision": "%s", "sections": "%s", "tests": "%s", "results": {' \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${GPU_NAME:-unknown}" "$REV" "$SECTIONS" "$(echo "${STATUS_LINE:-}" | tr -d '"')"
  printf '"teacher bf16 B=256": {"ours": %s, "pytorch": %s}' \
    "$(num "$(val "impl=ours prec=bf16 batch=256" pipelined_views_per_s)")" "$(num "$(val "impl=torch prec=bf16 batch=256" views_per_s)")"
  printf ', "lt-embed end-to-end": %s, "lt-embed end-to-end, views rendered on the CPU": %s' "$(emb small-gpu)" "$(emb small-cpu)"
  printf ', "lt-embed end-to-end 2000-3000 px": %s, "lt-embed end-to-end 2000-3000 px, views rendered on the CPU": %s' "$(emb large-gpu)" "$(emb large-cpu)"
  printf ', "data-path gpu": {"ours": %s}, "data-path gpu, device-resident images": {"ours": %s}' "$(num "${DP[small-stream]:-}")" "$(num "${DP[small-device]:-}")"
  printf ', "data-path gpu 2000-3000 px": {"ours": %s}, "data-path gpu 2000-3000 px, device-resident images": {"ours": %s}' "$(num "${DP[large-stream]:-}")" "$(num "${DP[large-device]:-}")"
  if want student; then
    printf ', "train-step resnet18": %s, "train-step resnet50": %s' "$(jst resnet18)" "$(jst resnet50)"
    printf ', "lt-train end-to-end resnet18": {"ours": %s}' "$(num "$TRAIN_E2E")"
  fi
  printf '}}\n'
} >"$OUT/device-run.json"
cat "$OUT/device-run.json"
rm -rf "$WORK"
[ "$TESTS_RC" = 0 ] && exit 0 || exit 1
