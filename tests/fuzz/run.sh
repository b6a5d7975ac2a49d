#!/usr/bin/env bash
# Runs each libFuzzer target for FUZZ_SECONDS seconds (called by `make fuzz`; see README.md).
# The corpus grows in build-fuzz/corpus/<target> (seeded from tests/fuzz/corpus/<target>), so the
# checked-in seeds stay small. Each crashing input is replayed to see where it crashed: inside
# Debian's (uninstrumented) libhdf5 it goes to build-fuzz/known-hdf5/<target>/ and is listed as
# HDF5's; anywhere else it is copied to tests/fuzz/regressions/<target>/, where `make test`
# replays it under ASan+UBSan from then on. Prints the executions per target.
# Exit status: 0 when no target found a crash of ours, 1 otherwise.
set -u
cd "$(dirname "$0")/../.."
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_BUILD=${FUZZ_BUILD:-build-fuzz}
# HDF5 locks files by default; the fuzz inputs are private files. Sanitizer reports are fatal.
export HDF5_USE_FILE_LOCKING=FALSE
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/fuzz/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(decode safetensors cache)
fail=0
summary=()
for t in "${targets[@]}"; do
  bin=$FUZZ_BUILD/fuzz/fuzz_$t
  [ -x "$bin" ] || { echo "fuzz: $bin is not built (make fuzz builds it)"; fail=1; continue; }
  work=$FUZZ_BUILD/corpus/$t
  crashes=$FUZZ_BUILD/crashes/$t
  mkdir -p "$work" "$crashes"
  extra=()
  [ -f tests/fuzz/$t.options ] && mapfile -t extra < <(grep -v '^#' tests/fuzz/$t.options)
  [ -f tests/fuzz/$t.dict ] && extra+=(-dict=tests/fuzz/$t.dict)
  log=$FUZZ_BUILD/fuzz_$t.log
  echo "== fuzz_$t for ${FUZZ_SECONDS}s (log: $log)"
  start=$SECONDS
  (cd "$FUZZ_BUILD" && exec "$PWD/fuzz/fuzz_$t" "$PWD/corpus/$t" "$OLDPWD/tests/fuzz/corpus/$t" \
     -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 -artifact_prefix="$PWD/crashes/$t/" \
     "${extra[@]}") >"$log" 2>&1
  rc=$?
  took=$((SECONDS - start))
  # executions: the final stats (normal mode) or the last status line (fork mode: "#N: cov:")
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  [ -z "$execs" ] && execs=$(grep -o '^#[0-9]*: cov' "$log" | tail -1 | tr -dc 0-9)
  ours=0 hdf5=0
  for c in "$crashes"/*; do
    [ -f "$c" ] || continue
    report=$("$bin" -timeout=10 "$c" 2>&1)
    # the first stack frame that is not a sanitizer interceptor says whose bug it is
    frame=$(printf '%s\n' "$report" | grep -E '^ +#[0-9]+ ' | grep -v -E 'libsanitizer|compiler-rt|interceptor|__asan|__ubsan|__sanitizer|fuzzer::|libc\.so' | head -1)
    if printf '%s' "$frame" | grep -q 'libhdf5'; then
      mkdir -p "$FUZZ_BUILD/known-hdf5/$t"
      mv "$c" "$FUZZ_BUILD/known-hdf5/$t/"
      hdf5=$((hdf5 + 1))
      echo "fuzz_$t: crash inside libhdf5 (not ours): ${frame# *}"
    else
      mkdir -p tests/fuzz/regressions/$t
      mv "$c" tests/fuzz/regressions/$t/
      ours=$((ours + 1))
      printf '%s\n' "$report" | grep -m1 -E 'ERROR: |runtime error|deadly signal'
      echo "fuzz_$t: crash in lt, input kept as tests/fuzz/regressions/$t/${c##*/}"
    fi
  done
  if [ $ours -gt 0 ] || { [ $rc -ne 0 ] && [ $hdf5 -eq 0 ]; }; then fail=1; fi
  summary+=("fuzz_$t: ${execs:-?} executions in ${took}s; crashes: $ours in lt, $hdf5 inside libhdf5")
done
printf '%s\n' "${summary[@]}"
exit $fail
