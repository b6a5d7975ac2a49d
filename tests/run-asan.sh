#!/usr/bin/env bash
# The C code under AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/, made by
# `make asan`; tests/run.sh calls this, so `make test` runs it): every C unit test, the fuzz
# regression inputs and seed corpora through the fuzz targets' code (build-asan/fuzz/replay_*),
# and a short lt-embed + lt-train end to end on odd and broken images with a tiny teacher.
# Any sanitizer report fails it. OpenBLAS, libgomp, HDF5, libjpeg and libpng are not
# instrumented (their own bugs are out of reach); LeakSanitizer is on, with HDF5's internal
# error-path leaks suppressed (tests/fuzz/lsan.supp).
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-/usr/bin/python3}
A=${ASAN_BUILD:-build-asan}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=99}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/fuzz/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1:exitcode=98}
export HDF5_USE_FILE_LOCKING=FALSE
if [ ! -x "$A/bin/lt-embed" ]; then
  echo "FAILED: $A is not built (make asan)"
  exit 1
fi
fail=0
for t in "$A"/tests/test_*; do
  [ -x "$t" ] || continue
  echo "== asan: $t"
  if ! "$t"; then echo "FAILED: $t (ASan+UBSan)"; fail=1; fi
done
for r in "$A"/fuzz/replay_*; do
  [ -x "$r" ] || continue
  name=${r##*/replay_}
  dirs=(tests/fuzz/corpus/$name)
  [ -d tests/fuzz/regressions/$name ] && dirs+=(tests/fuzz/regressions/$name)
  echo "== asan: fuzz replay $name (${dirs[*]})"
  if ! "$r" "${dirs[@]}"; then echo "FAILED: $r ${dirs[*]}"; fail=1; fi
done

# End to end: a tiny teacher, odd images (every colour type, 1x1, names with spaces and
# non-ASCII, misnamed) and broken ones (truncated, empty, random bytes), 2 views of 28 px,
# then 2 training steps of batch 2 on the cache.
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lt-asan.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "== asan: lt-embed + lt-train end to end (in $tmp)"
if ! "$PYTHON" scripts/make-random-teacher.py "$tmp/t.safetensors" --dim 64 --depth 1 --grid 2 ||
   ! "$PYTHON" -c "import sys; sys.path.insert(0, 'tests/py'); from embed_fixtures import odd_folder; odd_folder(sys.argv[1], seed=7)" "$tmp/data"; then
  echo "FAILED: could not make the end-to-end inputs"
  exit 1
fi
"$A/bin/lt-embed" --teacher "$tmp/t.safetensors" --image-size 28 --views 2 --threads 2 -q \
  "$tmp/data" "$tmp/c.h5"
rc=$?
if [ $rc -ne 0 ]; then echo "FAILED: asan lt-embed exited $rc"; fail=1; fi
if [ $rc -eq 0 ]; then
  "$A/bin/lt-train" "$tmp/c.h5" --out "$tmp/out" --steps 2 --batch-size 2 --threads 2 -q
  rc=$?
  if [ $rc -ne 0 ] || [ ! -s "$tmp/out/student.safetensors" ]; then
    echo "FAILED: asan lt-train exited $rc"; fail=1
  fi
fi
# data parallel: two processes under mpirun (leak detection off for them: Open MPI's plugins
# leak their own allocations at exit; every other sanitizer check stays on)
if [ $rc -eq 0 ] && command -v mpirun >/dev/null; then
  ASAN_OPTIONS=$ASAN_OPTIONS:detect_leaks=0 mpirun -np 2 --oversubscribe --allow-run-as-root \
    --mca btl_vader_single_copy_mechanism none \
    "$A/bin/lt-train" "$tmp/c.h5" --out "$tmp/out_dp" --steps 2 --batch-size 4 --threads 1 -q
  rc=$?
  if [ $rc -ne 0 ] || [ ! -s "$tmp/out_dp/student.safetensors" ]; then
    echo "FAILED: asan mpirun -np 2 lt-train exited $rc"; fail=1
  fi
fi
# error paths: a broken teacher and a broken cache must fail cleanly (exit 1), not crash
head -c 5000 "$tmp/t.safetensors" > "$tmp/cut.safetensors"
"$A/bin/lt-embed" --teacher "$tmp/cut.safetensors" --image-size 28 --views 1 -q "$tmp/data" "$tmp/d.h5" 2>/dev/null
rc=$?
[ $rc -eq 1 ] || { echo "FAILED: asan lt-embed on a truncated teacher exited $rc (expected 1)"; fail=1; }
[ -f "$tmp/c.h5" ] && head -c 30000 "$tmp/c.h5" > "$tmp/cut.h5"
"$A/bin/lt-train" "$tmp/cut.h5" --out "$tmp/out2" --steps 1 --batch-size 2 -q 2>/dev/null
rc=$?
[ $rc -eq 1 ] || { echo "FAILED: asan lt-train on a truncated cache exited $rc (expected 1)"; fail=1; }
[ $fail -eq 0 ] && echo "asan: all clean"
exit $fail
