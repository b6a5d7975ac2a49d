#!/usr/bin/env bash
# pack-device.sh: packs the binaries built here, and the shared libraries they need that a bare
# GPU machine may lack, into .devpack/ for scripts/device-check.sh.
#
# Why it exists: the GPU machine (see docs/cuda.md) has nvcc, gcc and PyTorch but probably not the
# -dev packages lt links (HDF5, libjpeg-turbo, libpng, zstd, OpenBLAS), and nothing can be
# installed there. So the binaries are built here (`make all`) and travel with their libraries.
#
#   make -j2 all && bash scripts/pack-device.sh
#   then run on the device with `carry: [".devpack"]`:  bash scripts/device-check.sh
#
# .devpack/tree.tar.xz  bin/lt-*, build/tests/test_cuda_*, build/tests/tools/{vit_bench,
#                   dinov2_tool,cache_tool,bench_data_gpu,bench_student}, build/dev/cuda/* (the
#                   earlier kernels' benchmarks), build/plugins/ (same relative paths as here),
#                   without debug sections; xz shrinks them ~20x (every binary holds much the
#                   same CUDA code)
# .devpack/libs.tar.xz  every non-system library of `ldd` of those binaries, except glibc's own
#                   (libc, libm, libpthread, libdl, librt, libresolv, ld-linux), libstdc++/libgcc_s (the
#                   device's are newer) and CUDA's (the device has CUDA 13 and its driver);
#                   cuDNN neither: its libcudnn.so.9 loads a dozen sub-libraries (~500 MB) at run
#                   time, so device-check.sh uses the device's own (PyTorch's nvidia-cudnn)
# .devpack/MANIFEST what was packed, with the build's git revision
# Adds /.devpack/ to .git/info/exclude (a local, untracked file) so it is never committed.
set -euo pipefail
cd "$(dirname "$0")/.."

need=(build/tests/test_cuda_ops build/tests/test_cuda_dinov2 build/tests/tools/vit_bench)
for f in "${need[@]}"; do
  [ -x "$f" ] || { echo "pack-device: $f is missing: run 'make -j2 all' first (with nvcc present)" >&2; exit 1; }
done
if ! ldd build/tests/test_cuda_ops | grep libcublasLt >/dev/null; then  # not -q: with pipefail, an early exit of grep fails ldd (SIGPIPE)
  echo "pack-device: build/tests/test_cuda_ops is not linked with cuBLASLt: it was built with CUDA=0;" \
       "rebuild with nvcc present (make clean && make -j2 all)" >&2
  exit 1
fi

bins=()
for f in bin/lt-* build/tests/test_cuda_* build/tests/tools/vit_bench build/tests/tools/dinov2_tool \
         build/tests/tools/cache_tool build/tests/tools/bench_data_gpu build/tests/tools/bench_student \
         build/dev/cuda/* \
         build/plugins/*.so; do
  [ -f "$f" ] && [ "${f%.d}" = "$f" ] && [ "${f%.o}" = "$f" ] && bins+=("$f")
done

rm -rf .devpack
mkdir -p .devpack/tree .devpack/lib
for f in "${bins[@]}"; do
  mkdir -p ".devpack/tree/$(dirname "$f")"
  cp -p "$f" ".devpack/tree/$f"
  # without their debug sections (symbols stay, for backtraces): a third of the size
  strip --strip-debug ".devpack/tree/$f" 2>/dev/null || true
done

# the libraries: the union of ldd over all binaries, minus the system/CUDA ones
skip='^(linux-vdso|ld-linux|libc\.so|libm\.so|libpthread\.so|libdl\.so|librt\.so|libutil\.so|libresolv\.so|libnss_|libanl\.so|libnsl\.so|libstdc\+\+\.so|libgcc_s\.so|libcuda\.so|libcudart\.so|libcublas\.so|libcublasLt\.so|libcudnn|libnvidia)'
ldd "${bins[@]}" 2>/dev/null | awk '/=>/ && $3 ~ /^\// {print $1, $3}' | sort -u |
while read -r name path; do
  if [[ "$name" =~ $skip ]]; then continue; fi
  cp -pL "$path" ".devpack/lib/$name"
done
missing=$(ldd "${bins[@]}" 2>/dev/null | grep "not found" || true)
[ -z "$missing" ] || { echo "pack-device: unresolved libraries here:" >&2; echo "$missing" >&2; exit 1; }
XZ_OPT=-T0 tar -C .devpack/lib -cJf .devpack/libs.tar.xz .
XZ_OPT=-T0 tar -C .devpack/tree -cJf .devpack/tree.tar.xz .
rm -rf .devpack/lib .devpack/tree

{
  echo "packed $(date -u +%Y-%m-%dT%H:%M:%SZ) from $(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
       "($(git status --porcelain 2>/dev/null | wc -l) uncommitted changes) on $(. /etc/os-release; echo "$PRETTY_NAME")"
  echo "revision $(git rev-parse HEAD 2>/dev/null || echo unknown)"
  echo "binaries:"; printf '  %s\n' "${bins[@]}"
  echo "libraries:"; tar -tJf .devpack/libs.tar.xz | grep -v '/$' | sed 's/^/  /'
} > .devpack/MANIFEST

if [ -d .git ] && ! grep -qx '/.devpack/' .git/info/exclude 2>/dev/null; then
  mkdir -p .git/info && echo '/.devpack/' >> .git/info/exclude
fi
du -sh .devpack .devpack/libs.tar.xz
size=$(du -sb .devpack | cut -f1)
[ "$size" -lt $((40 * 1024 * 1024)) ] || { echo "pack-device: .devpack is over 40 MB" >&2; exit 1; }
echo "pack-device: ok: carry \".devpack\" to the device and run: bash scripts/device-check.sh"
