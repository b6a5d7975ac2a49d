"""lt-train's --device and --precision on a machine without a usable GPU (as CI): the default
trains on the CPU; --device auto falls back to the CPU; --device cuda and any precision but fp32
are refused with a message before OUT is touched; LT_NCCL=1 (the single-process NCCL check of
GPU runs) changes nothing on the CPU. The GPU side is checked by tests/run-cuda.sh on a GPU."""
import os

import pytest

from conftest import run
from train_fixtures import lt_train, tiny_cache
from test_train_e2e import assert_same_run

COMMON = ["--batch-size", "4", "--epochs", "1", "--threads", "2", "-v"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    c, _ = tiny_cache(tmp_path_factory.mktemp("dev"), n_images=8, views=2, size=32)
    return c


def train(cache, out, *extra, check=True, env=None):
    return run([lt_train(), cache, "--out", out, *COMMON, *extra], check=check, env=env,
               timeout=600)


def test_default_auto_and_fp32_train_on_the_cpu(cache, tmp_path):
    ref = str(tmp_path / "ref")
    r = train(cache, ref)
    assert "training on cpu" in r.stderr, r.stderr
    for name, args, env in [("auto", ["--device", "auto"], None),
                            ("fp32", ["--precision", "fp32"], None),
                            ("nccl", [], {"LT_NCCL": "1"})]:
        out = str(tmp_path / name)
        r = train(cache, out, *args, env=env)
        assert "training on cpu" in r.stderr, (name, r.stderr)
        assert_same_run(out, ref)


@pytest.mark.parametrize("args,code,fragment", [
    (["--device", "cuda"], 1, "--device cuda"),
    (["--precision", "tf32"], 2, "--precision tf32: the CPU backend computes in fp32"),
    (["--precision", "bf16"], 2, "--precision bf16"),
    (["--precision", "fp16"], 2, "--precision: expected fp32, tf32 or bf16, got 'fp16'"),
    (["--device", "tpu"], 2, "--device: expected auto, cpu or cuda"),
])
def test_refusals(cache, tmp_path, args, code, fragment):
    out = str(tmp_path / "out")
    r = train(cache, out, *args, check=False)
    assert r.returncode == code, r.stderr
    assert fragment in r.stderr, r.stderr
    assert not os.path.exists(os.path.join(out, "checkpoints")), os.listdir(out)


def test_nccl_is_not_needed_to_start():
    # NCCL (hundreds of megabytes) serves only data-parallel GPU runs: lt-train loads it then
    # (lib/train/comm_nccl.c), so a machine without it still runs lt-train
    r = run(["ldd", lt_train()], check=True)
    assert "libnccl" not in r.stdout, r.stdout
