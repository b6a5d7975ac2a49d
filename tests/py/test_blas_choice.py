"""lt chooses OpenBLAS's kernels from the CPU's features (lib/nn/blas_select.h), checked end to end
through lt-train -v: the kernels in use match what /proc/cpuinfo says the CPU can run; when the
library picks SSE kernels (faked with LT_BLAS_FAKE_CORE=Prescott, as OpenBLAS 0.3.21 does on a
Xeon its table does not know) lt restarts with OPENBLAS_CORETYPE and OpenBLAS really runs the
right core; a user's own OPENBLAS_CORETYPE wins and is named."""
import os
import re

import pytest

from conftest import run
from train_fixtures import lt_train


def cpu_flags():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    pytest.skip("no flags line in /proc/cpuinfo")


def expected_core():
    """What lt must ask for on this CPU, from /proc/cpuinfo (not from lt's own cpuid code)."""
    fl = cpu_flags()
    if {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= fl:
        return "SkylakeX", "AVX-512"
    if {"avx2", "fma"} <= fl:
        return "Haswell", "AVX2"
    if "avx" in fl:
        return "Sandybridge", "AVX"
    return None, "SSE"


def blas_line(env):
    r = run([lt_train(), "-v", "/nonexistent/c.h5"], check=False, env=env)
    lines = [l for l in r.stderr.splitlines() if l.startswith("lt-train: BLAS: ")]
    assert len(lines) == 1, r.stderr
    return lines[0]


def clean_env(**kw):
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_CORETYPE", "LT_BLAS_CHOSEN", "LT_BLAS_FAKE_CORE")}
    env.update(kw)
    return env


def test_library_choice_fits_the_cpu():
    _, isa = expected_core()
    line = blas_line(clean_env())
    assert f"this {isa} CPU" in line, line


def test_sse_kernels_on_a_newer_cpu_are_replaced():
    want, isa = expected_core()
    if want is None:
        pytest.skip("an SSE-only CPU: nothing to replace")
    line = blas_line(clean_env(LT_BLAS_FAKE_CORE="Prescott"))
    # OpenBLAS itself now reports the core lt asked for (it read OPENBLAS_CORETYPE at load)
    assert re.search(rf"core {want} \(OpenBLAS picked Prescott \(SSE kernels\) on this {isa} "
                     rf"CPU; lt asked for {want}\)", line), line


def test_the_users_choice_wins():
    line = blas_line(clean_env(OPENBLAS_CORETYPE="Prescott", LT_BLAS_FAKE_CORE="Prescott"))
    assert "core Prescott (OPENBLAS_CORETYPE=Prescott set by the user)" in line, line


def kernels_line(env):
    r = run([lt_train(), "-v", "/nonexistent/c.h5"], check=False, env=env)
    lines = [l for l in r.stderr.splitlines() if l.startswith("lt-train: lt kernels: ")]
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_own_kernels_named_and_forced_to_avx2():
    """-v names the instruction set of lt's own loops (AVX-512 where /proc/cpuinfo has F/BW/DQ/VL,
    else the build's AVX2); LT_ISA=avx2 forces the AVX2 variants."""
    _, isa = expected_core()
    want = "AVX-512" if isa == "AVX-512" else "AVX2"
    assert kernels_line(clean_env()) == f"lt-train: lt kernels: {want}"
    assert kernels_line(clean_env(LT_ISA="avx2")) == "lt-train: lt kernels: AVX2"
