"""Interop with PyPI's safetensors (the library users have): files it writes are read by our
reader, and files our writer produces load in it with the same values and metadata. Runs the
PyPI package in the venv made by scripts/install-deps.sh --test (LT_PYPI_PYTHON)."""
import os

import numpy as np
import pytest

from conftest import run, tool

SCRIPT_WRITE = """
import sys, numpy as np
from safetensors.numpy import save_file
rng = np.random.default_rng()
t = {"a.weight": rng.standard_normal((5, 7)).astype(np.float32),
     "b": rng.standard_normal((3,)).astype(np.float16),
     "c.bias": rng.standard_normal((2, 3, 4)).astype(np.float32),
     "empty": np.zeros((0, 4), np.float32)}
save_file(t, sys.argv[1], metadata={"k": "v"})
np.savez(sys.argv[2], **t)
"""

SCRIPT_READ = """
import sys, numpy as np
from safetensors import safe_open
ref = np.load(sys.argv[2])
with safe_open(sys.argv[1], framework="np") as f:
    assert f.metadata() == {"source": sys.argv[3]}, f.metadata()
    assert sorted(f.keys()) == sorted(ref.files), (f.keys(), ref.files)
    for k in f.keys():
        a = f.get_tensor(k)
        assert a.dtype == np.float32, (k, a.dtype)
        assert a.shape == ref[k].shape and np.array_equal(a, ref[k].astype(np.float32)), k
print("ok")
"""


def test_pypi_safetensors_round_trip(tmp_path):
    pypi = os.environ.get("LT_PYPI_PYTHON")
    if not pypi:
        pytest.skip("LT_PYPI_PYTHON not set (run through make test)")
    src, ref, out = tmp_path / "src.safetensors", tmp_path / "ref.npz", tmp_path / "out.safetensors"
    run([pypi, "-c", SCRIPT_WRITE, src, ref])
    run([tool("st_tool"), "copy", src, out])
    r = run([pypi, "-c", SCRIPT_READ, out, ref, "src.safetensors"])
    assert r.stdout.strip() == "ok"
