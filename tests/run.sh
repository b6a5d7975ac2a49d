#!/usr/bin/env bash
# Runs the CPU test suite: every C unit test binary, the C code again under ASan+UBSan
# (tests/run-asan.sh: unit tests, fuzz regressions, a short end to end; needs `make asan`), then
# the Python tests (PyTorch references, interop, end to end). Called by `make test`; exits
# non-zero if anything failed. LT_SKIP_ASAN=1 skips the sanitizer part.
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-/usr/bin/python3}
export LT_ROOT=$PWD
[ -x .venv/bin/python ] && export LT_PYPI_PYTHON=$PWD/.venv/bin/python
fail=0
for t in build/tests/test_*; do
  [ -x "$t" ] || continue
  echo "== $t"
  "$t"
  rc=$?
  # 77: the test skipped itself (automake's convention; the CUDA tests without a GPU)
  if [ $rc -eq 77 ]; then echo "SKIPPED: $t"; elif [ $rc -ne 0 ]; then echo "FAILED: $t"; fail=1; fi
done
if [ "${LT_SKIP_ASAN:-0}" != 1 ]; then
  bash tests/run-asan.sh || fail=1
fi
echo "== pytest tests/py"
"$PYTHON" -m pytest -q -p no:cacheprovider tests/py "$@" || fail=1
[ $fail -eq 0 ] && echo "all tests passed" || echo "SOME TESTS FAILED"
exit $fail
