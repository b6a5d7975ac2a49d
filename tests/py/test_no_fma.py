"""The CUDA files whose results must equal the CPU's bit for bit compile without fused
multiply-add.

Why: the CUDA renderer gives the CPU renderer's bytes, and the device training step gives the
host-scalar path's bits, only if each float and double operation rounds on its own, as the CPU
builds (ISO C mode, -ffp-contract=off) do. nvcc contracts a*b+c into one fma by default; the
Makefile turns that off for these files (NOFMA_NVCC), and their element functions use __fmul_rn
and friends. A flag lost in the Makefile, or a new expression outside those functions, shows up
here as an fma instruction in the PTX, on any machine with nvcc (no GPU needed). The check can
fail: kd_cuda.cu, built with nvcc's default flags, has fma instructions, and the first test
asserts that, so a PTX without any fma would not pass unnoticed."""
import os
import re
import shutil
import subprocess

import pytest

from conftest import ROOT

NVCC = shutil.which("nvcc") or (
    "/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None)
pytestmark = pytest.mark.skipif(NVCC is None, reason="no nvcc on this machine")

FMA = re.compile(r"^\s*fma\.rn\.(f32|f64)\b", re.M)


def ptx(src):
    """The PTX of src (a .cu path under the repository) as the Makefile builds it."""
    target = os.path.join("build", src + ".ptx")
    subprocess.run(["make", "-s", target], cwd=ROOT, check=True, capture_output=True, timeout=600)
    with open(os.path.join(ROOT, target)) as f:
        return f.read()


def test_control_default_flags_do_contract():
    # the default build of a file with double-precision multiply-adds does contract them: the
    # pattern below finds fma where there is some
    assert FMA.search(ptx("lib/nn/kd_cuda.cu")), "expected fma in kd_cuda.cu's PTX"


@pytest.mark.parametrize("src", ["lib/image/render_cuda.cu", "lib/nn/optim_multi_cuda.cu",
                                 "lib/nn/optim_cuda.cu"])
def test_no_fma(src):
    text = ptx(src)
    assert ".entry" in text, "no kernel in the PTX"
    found = FMA.findall(text)
    assert not found, f"{src}: {len(found)} fma instruction(s) in its PTX"
