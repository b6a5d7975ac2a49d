#!/usr/bin/env bash
# Runs the CPU test suite: every C unit test binary, then the Python tests (PyTorch references,
# interop, end to end). Called by `make test`; exits non-zero if anything failed.
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-/usr/bin/python3}
export LT_ROOT=$PWD
[ -x .venv/bin/python ] && export LT_PYPI_PYTHON=$PWD/.venv/bin/python
fail=0
for t in build/tests/test_*; do
  [ -x "$t" ] || continue
  echo "== $t"
  if ! "$t"; then echo "FAILED: $t"; fail=1; fi
done
echo "== pytest tests/py"
"$PYTHON" -m pytest -q -p no:cacheprovider tests/py "$@" || fail=1
[ $fail -eq 0 ] && echo "all tests passed" || echo "SOME TESTS FAILED"
exit $fail
