"""lt-train end to end on a tiny cache: the loss falls; student.safetensors loads into
torchvision (PyPI safetensors) with only fc.* missing; a run stopped after k steps and resumed
equals an uninterrupted one bit for bit, whether continued by rerunning the same command or with
--resume, after SIGINT (exit 130) or SIGKILL; a finished run rerun does nothing; a rerun with
other settings is refused; bad options and caches are clean errors."""
import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest

import st_io
from conftest import PLUGIN_DIR, run

os.environ["HDF5_PLUGIN_PATH"] = PLUGIN_DIR
from train_fixtures import kill_after_first_checkpoint, lt_train, tiny_cache

LOADS = """
import sys, torch, torchvision
from safetensors.torch import load_file
for arch in sys.argv[2:]:
    pass
sd = load_file(sys.argv[1])
m = getattr(torchvision.models, sys.argv[2])()
r = m.load_state_dict(sd, strict=False)
assert sorted(r.missing_keys) == ["fc.bias", "fc.weight"], r
assert not r.unexpected_keys, r
m.eval()(torch.zeros(1, 3, 64, 64))
print("ok")
"""


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    c, _ = tiny_cache(d, n_images=12, views=2, size=48)
    return c


def losses(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        rows = [json.loads(l) for l in f]
    for k in ("step", "epoch", "loss", "lr", "img_per_s"):
        assert all(k in r for r in rows), k
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1))
    return [r["loss"] for r in rows]


def test_loss_falls_and_student_loads_in_torchvision(cache, tmp_path):
    out = str(tmp_path / "out")
    # a small constant-ish schedule on 12 images: the student must fit the teacher
    run([lt_train(), cache, "--out", out, "--batch-size", "6", "--epochs", "40", "--optimizer",
         "adamw", "--lr", "2e-3", "--warmup-epochs", "0", "--threads", "2", "-q"])
    ls = losses(out)
    assert len(ls) == 80
    first, last = np.mean(ls[:8]), np.mean(ls[-8:])
    assert last < 0.7 * first, (first, last)
    for name in ("student.safetensors", "train.log", os.path.join("checkpoints", "last.safetensors")):
        assert os.path.exists(os.path.join(out, name)), name
    pypi = os.environ.get("LT_PYPI_PYTHON")
    if not pypi:
        pytest.skip("LT_PYPI_PYTHON not set (run through make test)")
    r = run([pypi, "-c", LOADS, os.path.join(out, "student.safetensors"), "resnet18"])
    assert r.stdout.strip() == "ok"


def read_ckpt(out):
    t, meta = st_io.load(os.path.join(out, "checkpoints", "last.safetensors"))
    return t, meta


def assert_same_run(a, b):
    ta, ma = read_ckpt(a)
    tb, mb = read_ckpt(b)
    assert ta.keys() == tb.keys()
    for k in ta:
        assert ta[k].dtype == tb[k].dtype and bool((ta[k] == tb[k]).all()), k
    assert ma["step"] == mb["step"] and ma["optim_step"] == mb["optim_step"]
    with open(os.path.join(a, "student.safetensors"), "rb") as fa, \
            open(os.path.join(b, "student.safetensors"), "rb") as fb:
        assert fa.read() == fb.read()
    assert losses(a) == losses(b)


@pytest.mark.parametrize("optimizer,flag", [("lars", []), ("adamw", ["--resume"])])
def test_resume_is_bit_identical(cache, tmp_path, optimizer, flag):
    common = ["--batch-size", "4", "--epochs", "3", "--optimizer", optimizer, "--threads", "2", "-q"]
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    run([lt_train(), cache, "--out", full, *common])
    run([lt_train(), cache, "--out", part, "--steps", "4", "--checkpoint-every", "2", *common])
    assert read_ckpt(part)[1]["step"] == "4"
    run([lt_train(), cache, "--out", part, *flag, *common])
    assert_same_run(full, part)


def test_sigkill_then_same_command_is_bit_identical(cache, tmp_path):
    common = ["--batch-size", "4", "--epochs", "30", "--checkpoint-every", "2", "--threads", "1",
              "-q"]
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    kill_after_first_checkpoint([lt_train(), cache, "--out", part, *common], part)
    step = int(read_ckpt(part)[1]["step"])
    assert 2 <= step < 90
    # metrics.jsonl may hold steps past the checkpoint: the rerun drops and recomputes them
    stop = str(step + 3)
    run([lt_train(), cache, "--out", full, "--steps", stop, *common])
    run([lt_train(), cache, "--out", part, "--steps", stop, *common])
    assert_same_run(full, part)


def test_sigint_checkpoints_and_resumes(cache, tmp_path):
    common = ["--batch-size", "4", "--epochs", "30", "--student", "resnet34", "--threads", "1"]
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    p = subprocess.Popen([lt_train(), cache, "--out", part, *common], stderr=subprocess.PIPE,
                         text=True)
    time.sleep(4)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "rerun the same command" in err
    step = int(read_ckpt(part)[1]["step"])
    assert 1 <= step < 90
    # the uninterrupted reference stops at the same step the resumed run is taken to
    stop = str(step + 2)
    run([lt_train(), cache, "--out", full, "--steps", stop, *common, "-q"])
    run([lt_train(), cache, "--out", part, "--steps", stop, *common, "-q"])
    assert_same_run(full, part)


def test_existing_run_is_protected(cache, tmp_path):
    out = str(tmp_path / "out")
    common = ["--batch-size", "4", "--epochs", "1", "--threads", "2", "-q"]
    run([lt_train(), cache, "--out", out, *common])
    student = os.path.join(out, "student.safetensors")
    before = open(student, "rb").read()
    # the same command again: the run is complete, nothing to do
    r = run([lt_train(), cache, "--out", out, *common[:-1]])
    assert "nothing to do" in r.stderr, r.stderr
    assert open(student, "rb").read() == before
    # other settings are refused, naming the setting, with or without --resume
    for flag in ([], ["--resume"]):
        r = run([lt_train(), cache, "--out", out, *flag, "--batch-size", "6", "--epochs", "1",
                 "-q"], check=False)
        assert r.returncode == 1 and "batch_size" in r.stderr and "--overwrite" in r.stderr, \
            r.stderr
        assert open(student, "rb").read() == before
    # a student without a checkpoint is another run's result: refused
    os.unlink(os.path.join(out, "checkpoints", "last.safetensors"))
    r = run([lt_train(), cache, "--out", out, *common], check=False)
    assert r.returncode == 1 and "--overwrite" in r.stderr and "student" in r.stderr, r.stderr
    r = run([lt_train(), cache, "--out", out, "--resume", *common], check=False)
    assert r.returncode == 1 and "no checkpoint" in r.stderr, r.stderr
    assert open(student, "rb").read() == before
    run([lt_train(), cache, "--out", out, "--overwrite", *common])


def test_init_and_bad_inputs(cache, tmp_path):
    out = str(tmp_path / "out")
    common = ["--batch-size", "4", "--epochs", "1", "--threads", "2", "-q"]
    for args, fragment in [
        (["--student", "resnet101"], "--student"),
        (["--epochs", "0"], "--epochs"),
        (["--batch-size", "x"], "--batch-size"),
        (["--optimizer", "adam"], "--optimizer"),
        (["--lr", "-1"], "--lr"),
        (["--queue-size", "12"], "queue"),
        (["--batch-size", "13"], "--batch-size"),
        (["--resume", "--overwrite"], "--resume"),
    ]:
        r = run([lt_train(), cache, "--out", out, *common, *args], check=False)
        assert r.returncode == 2, (args, r.stderr)
        assert fragment in r.stderr, (args, r.stderr)
    # runtime errors: missing cache, not a cache, --init of another architecture
    r = run([lt_train(), str(tmp_path / "nope.h5"), "--out", out, *common], check=False)
    assert r.returncode == 1 and "nope.h5" in r.stderr
    bad = tmp_path / "bad.h5"
    bad.write_bytes(os.urandom(4096))
    r = run([lt_train(), str(bad), "--out", out, *common], check=False)
    assert r.returncode == 1 and "bad.h5" in r.stderr
    other = str(tmp_path / "other")
    run([lt_train(), cache, "--out", other, "--student", "resnet34", *common])
    r = run([lt_train(), cache, "--out", out, "--init", os.path.join(other, "student.safetensors"),
             *common], check=False)
    assert r.returncode == 1 and "student.safetensors" in r.stderr, r.stderr
    # --init from our own export of the same architecture works
    run([lt_train(), cache, "--out", out, "--overwrite", "--init",
         os.path.join(other, "student.safetensors"), "--student", "resnet34", *common])


def test_nonfinite_loss_stops_and_keeps_checkpoint(cache, tmp_path):
    """A run whose loss goes non-finite after its checkpoint at step 1 (a head made to overflow
    float32 there, as a diverging run would) stops with exit 1, says the step-1 checkpoint is
    kept, and leaves it as it was."""
    import torch
    out = str(tmp_path / "out")
    common = ["--batch-size", "4", "--epochs", "5", "--checkpoint-every", "1", "--threads", "2"]
    run([lt_train(), cache, "--out", out, "--steps", "1", *common, "-q"])
    path = os.path.join(out, "checkpoints", "last.safetensors")
    t, meta = st_io.load(path)
    t["head.weight"] = torch.full_like(t["head.weight"], 3e38)
    st_io.save(path, t, meta)
    before = open(path, "rb").read()
    r = run([lt_train(), cache, "--out", out, *common], check=False)
    assert r.returncode == 1, r.stderr
    assert "non-finite" in r.stderr and "step 2" in r.stderr, r.stderr
    assert "checkpoint" in r.stderr and "(step 1) is kept" in r.stderr, r.stderr
    assert "--lr" in r.stderr, r.stderr
    assert open(path, "rb").read() == before
