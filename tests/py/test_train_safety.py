"""lt-train keeps what the user had and says what is true: an --overwrite whose inputs are bad
leaves the earlier run in OUT as it was; a resume on another cache is refused; damaged inputs
(a mixup weight outside [0, 1], NaN teacher rows, non-finite or wrongly shaped --init tensors)
are refused naming the culprit; files in OUT that lt-train did not write are not replaced; an
interrupted --overwrite run prints the command that continues it; stale temporaries of killed
writes are removed; the defaults work on a small cache; a finished run can be extended through
--init; the progress and summary lines count right."""
import hashlib
import json
import os
import shlex
import shutil
import signal
import struct
import subprocess

import h5py
import numpy as np
import pytest
import torch

import st_io
from conftest import PLUGIN_DIR, run

os.environ["HDF5_PLUGIN_PATH"] = PLUGIN_DIR
from train_fixtures import lt_train, tiny_cache

N_IMAGES = 12
COMMON = ["--batch-size", "4", "--epochs", "1", "--threads", "1"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    c, _ = tiny_cache(tmp_path_factory.mktemp("safety"), n_images=N_IMAGES, views=2, size=48)
    return c


@pytest.fixture(scope="module")
def finished(cache, tmp_path_factory):
    """A finished run (1 epoch of 3 steps) to copy into tests that need an earlier run in OUT."""
    out = str(tmp_path_factory.mktemp("finished") / "out")
    run([lt_train(), cache, "--out", out, *COMMON, "-q"])
    return out


def snapshot(out):
    """{relative path: bytes} of every file under out."""
    snap = {}
    for root, _, files in os.walk(out):
        for name in files:
            p = os.path.join(root, name)
            with open(p, "rb") as f:
                snap[os.path.relpath(p, out)] = f.read()
    return snap


def copy_run(finished, tmp_path):
    out = str(tmp_path / "out")
    shutil.copytree(finished, out)
    return out


def ckpt_path(out):
    return os.path.join(out, "checkpoints", "last.safetensors")


def saved_args(out):
    return json.loads(st_io.load(ckpt_path(out))[1]["args"])


def damaged_copy(cache, path, fn):
    shutil.copy(cache, path)
    with h5py.File(path, "r+") as f:
        f["embeddings"][0]  # HDF5 1.10 loads a filter plugin on a read, not on a first write
        fn(f)
    return path


def student_with(finished, path, fn):
    """A copy of the finished run's student.safetensors with fn applied to its tensors."""
    t, meta = st_io.load(os.path.join(finished, "student.safetensors"))
    fn(t)
    st_io.save(path, t, meta)
    return path


# ---- 2: nothing of the earlier run is lost before the new run is sure to proceed ----

def test_overwrite_with_bad_inputs_keeps_the_earlier_run(cache, finished, tmp_path):
    out = copy_run(finished, tmp_path)
    before = snapshot(out)
    bad_shape = student_with(finished, str(tmp_path / "shape.safetensors"),
                             lambda t: t.update({"conv1.weight": t["conv1.weight"].reshape(64, 147, 1, 1)}))
    nan_cache = damaged_copy(cache, str(tmp_path / "nan.h5"),
                             lambda f: f["embeddings"].__setitem__(slice(10, 12), np.nan))
    for c, extra, fragment in [
        (cache, ["--init", str(tmp_path / "missing.safetensors")], "missing.safetensors"),
        (cache, ["--init", bad_shape], "conv1.weight"),
        (nan_cache, [], "nan.h5"),
    ]:
        r = run([lt_train(), c, "--out", out, "--overwrite", *COMMON, *extra], check=False)
        assert r.returncode == 1, (extra, r.stderr)
        assert fragment in r.stderr, (extra, r.stderr)
        assert "is kept" not in r.stderr, r.stderr
        assert snapshot(out) == before, extra


def huge_head(finished, tmp_path):
    """Finite --init weights whose head overflows float32 at the first forward pass."""
    return student_with(finished, str(tmp_path / "huge.safetensors"),
                        lambda t: t.update({"head.weight": torch.full((64, 512), 3e38),
                                            "head.bias": torch.zeros(64)}))


def test_divergence_before_the_first_checkpoint_keeps_the_earlier_run(finished, cache, tmp_path):
    out = copy_run(finished, tmp_path)
    before = snapshot(out)
    init = huge_head(finished, tmp_path)
    r = run([lt_train(), cache, "--out", out, "--overwrite", "--init", init, *COMMON],
            check=False)
    assert r.returncode == 1, r.stderr
    assert "non-finite" in r.stderr and "step 1" in r.stderr, r.stderr
    assert "is kept" not in r.stderr and "left as it was" in r.stderr, r.stderr
    assert "huge.safetensors" in r.stderr, r.stderr  # the likely cause: the --init weights
    assert snapshot(out) == before
    # into an empty OUT: no claim about a checkpoint that was never written
    fresh = str(tmp_path / "fresh")
    r = run([lt_train(), cache, "--out", fresh, "--init", init, *COMMON], check=False)
    assert r.returncode == 1, r.stderr
    assert "is kept" not in r.stderr and "no checkpoint was written" in r.stderr, r.stderr
    assert not os.path.exists(ckpt_path(fresh))


def test_overwrite_replaces_the_earlier_run_when_it_checkpoints(finished, cache, tmp_path):
    out = copy_run(finished, tmp_path)
    old_log = open(os.path.join(out, "train.log")).read()
    run([lt_train(), cache, "--out", out, "--overwrite", *COMMON, "--seed", "1", "-q"])
    assert saved_args(out)["seed"] == 1
    log = open(os.path.join(out, "train.log")).read()
    assert old_log not in log and log.count("training:") == 1, log
    rows = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"))]
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1))


# ---- 3: the checkpoint records which cache it was trained on ----

def cache_identity(path):
    """The digest formats/checkpoint.md specifies, from the cache's datasets."""
    h = hashlib.sha256()
    with h5py.File(path, "r") as f:
        shas = f["images/sha256"][()]
        S = f["samples/lambda"].shape[0]
        h.update(struct.pack("<QQ", len(shas), S))
        for s in shas:
            h.update(bytes(s)[:64])
        img, lam = f["samples/image"][()], f["samples/lambda"][()]
        crop, flip, jit = f["samples/crop"][()], f["samples/flip"][()], f["samples/jitter"][()]
        gray, order = f["samples/gray"][()], f["samples/jitter_order"][()]
        factor, blur = f["samples/jitter_factor"][()], f["samples/blur_sigma"][()]
        for i in range(S):
            h.update(struct.pack("<iif", img[i][0], img[i][1], lam[i]))
            for r in range(2):
                h.update(struct.pack("<4i", *crop[i][r]))
                h.update(struct.pack("<3B", flip[i][r], jit[i][r], gray[i][r]))
                h.update(struct.pack("<4B", *order[i][r]))
                h.update(struct.pack("<4ff", *factor[i][r], blur[i][r]))
    return h.hexdigest()


def test_resume_on_another_cache_is_refused(cache, tmp_path):
    # the same counts, views, seed and teacher, other images
    other, _ = tiny_cache(tmp_path / "other", n_images=N_IMAGES, views=2, size=48)
    out = str(tmp_path / "out")
    args = ["--out", out, "--batch-size", "4", "--epochs", "2", "--threads", "1", "-q"]
    run([lt_train(), cache, *args, "--steps", "2"])
    assert saved_args(out)["cache_identity"] == cache_identity(cache)
    assert cache_identity(other) != cache_identity(cache)
    before = snapshot(out)
    r = run([lt_train(), other, *args], check=False)
    assert r.returncode == 1 and "cache_identity" in r.stderr and "--overwrite" in r.stderr, \
        r.stderr
    assert snapshot(out) == before
    run([lt_train(), cache, *args])  # the original cache continues
    assert saved_args(out)["cache_identity"] == cache_identity(cache)


# ---- 5: damaged inputs are named, not trained on ----

@pytest.mark.parametrize("value", [1.5, -0.25, np.nan])
def test_mixup_weight_outside_0_1_is_refused(cache, tmp_path, value):
    bad = damaged_copy(cache, str(tmp_path / "lam.h5"),
                       lambda f: f["samples/lambda"].__setitem__(7, value))
    out = str(tmp_path / "out")
    r = run([lt_train(), bad, "--out", out, *COMMON], check=False)
    assert r.returncode == 1, r.stderr
    assert "sample 7" in r.stderr and "lambda" in r.stderr and "lam.h5" in r.stderr, r.stderr
    assert not os.path.exists(out)


def test_nonfinite_init_is_refused_naming_the_tensor(finished, cache, tmp_path):
    def poison(t):
        t["layer2.0.conv1.weight"].view(-1)[5] = float("nan")
    init = student_with(finished, str(tmp_path / "nan.safetensors"), poison)
    out = str(tmp_path / "out")
    r = run([lt_train(), cache, "--out", out, "--init", init, *COMMON], check=False)
    assert r.returncode == 1 and "layer2.0.conv1.weight" in r.stderr, r.stderr
    assert "finite" in r.stderr, r.stderr
    assert not os.path.exists(out)


def test_nan_teacher_rows_are_named_not_blamed_on_the_lr(cache, tmp_path):
    V = 2
    bad = damaged_copy(cache, str(tmp_path / "nan.h5"),
                       lambda f: f["embeddings"].__setitem__(slice(5 * V, 6 * V), np.nan))
    out = str(tmp_path / "out")
    r = run([lt_train(), bad, "--out", out, *COMMON, "--no-shuffle"], check=False)
    assert r.returncode == 1, r.stderr
    assert f"sample {5 * V}" in r.stderr and "image 5" in r.stderr, r.stderr
    assert "--lr" not in r.stderr and "is kept" not in r.stderr, r.stderr


# ---- 7: files in OUT that lt-train did not write are not replaced ----

@pytest.mark.parametrize("name,text", [
    ("metrics.jsonl", '{"epoch": 1, "acc": 0.93}\n'),
    ("metrics.jsonl", "step,loss\n1,0.5\n"),
    ("train.log", "my notes about this experiment\n"),
])
def test_foreign_files_in_out_are_refused(cache, tmp_path, name, text):
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_text(text)
    r = run([lt_train(), cache, "--out", str(out), *COMMON], check=False)
    assert r.returncode == 1 and name in r.stderr and "--overwrite" in r.stderr, r.stderr
    assert (out / name).read_text() == text
    run([lt_train(), cache, "--out", str(out), "--overwrite", *COMMON, "-q"])
    assert (out / name).read_text() != text


def test_own_files_of_a_run_killed_before_its_checkpoint_restart(finished, cache, tmp_path):
    out = copy_run(finished, tmp_path)
    os.unlink(ckpt_path(out))
    os.unlink(os.path.join(out, "student.safetensors"))
    run([lt_train(), cache, "--out", out, *COMMON, "-q"])
    assert os.path.exists(ckpt_path(out))


# ---- 11: an interrupted --overwrite run says how to continue; stale temporaries go ----

def test_interrupted_overwrite_prints_the_command_that_continues(finished, cache, tmp_path):
    out = copy_run(finished, tmp_path / "my out")  # a name the shell must quote
    argv = [lt_train(), cache, "--out", out, "--overwrite", "--batch-size", "4", "--epochs", "30",
            "--steps", "6", "--threads", "1"]
    p = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in p.stderr:  # the progress line of step 1 comes unconditionally
        seen.append(line)
        if " step 1/" in line:
            p.send_signal(signal.SIGINT)
            break
    err = "".join(seen) + p.stderr.read()
    p.wait(timeout=120)
    assert p.returncode == 130, err
    step = int(st_io.load(ckpt_path(out))[1]["step"])
    assert 1 <= step < 6
    cmds = [l.split("continue with: ", 1)[1] for l in err.splitlines() if "continue with: " in l]
    assert cmds, err
    again = [a for a in argv if a != "--overwrite"]
    for cmd in cmds:
        assert shlex.split(cmd) == again, cmd
    r = run(shlex.split(cmds[-1]))
    assert f"resumed at step {step}" in r.stderr, r.stderr
    assert st_io.load(ckpt_path(out))[1]["step"] == "6"


def dead_pid():
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_stale_temporaries_of_killed_writes_are_removed(finished, cache, tmp_path):
    out = copy_run(finished, tmp_path)
    dead, live = dead_pid(), os.getpid()
    stale = [os.path.join(out, "checkpoints", f"last.safetensors.tmp.{dead}"),
             os.path.join(out, f"student.safetensors.tmp.{dead}")]
    kept = [os.path.join(out, "checkpoints", f"last.safetensors.tmp.{live}"),
            os.path.join(out, f"notes.tmp.{dead}")]
    for p in stale + kept:
        with open(p, "wb") as f:
            f.write(b"x" * 100)
    r = run([lt_train(), cache, "--out", out, *COMMON, "-v"])
    assert "nothing to do" in r.stderr
    for p in stale:
        assert not os.path.exists(p), p
        assert os.path.basename(p) in r.stderr, r.stderr
    for p in kept:
        assert os.path.exists(p), p


# ---- 12: --init shapes are exact; --queue-size auto follows the explicit rule ----

def test_init_with_the_right_count_but_wrong_shape_is_refused(finished, cache, tmp_path):
    init = student_with(finished, str(tmp_path / "t.safetensors"),
                        lambda t: t.update({"layer1.0.conv2.weight":
                                            t["layer1.0.conv2.weight"].reshape(64, 64, 1, 9)}))
    r = run([lt_train(), cache, "--out", str(tmp_path / "out"), "--init", init, *COMMON],
            check=False)
    assert r.returncode == 1, r.stderr
    assert "layer1.0.conv2.weight" in r.stderr and "shape" in r.stderr, r.stderr


def test_auto_queue_follows_the_explicit_rule(tmp_path, cache):
    one, _ = tiny_cache(tmp_path / "one", n_images=1, views=2, size=48)
    out = str(tmp_path / "out")
    r = run([lt_train(), one, "--out", out, "--batch-size", "1", "--epochs", "1", "--threads",
             "1"], check=False)
    assert r.returncode in (1, 2) and "queue" in r.stderr and "1 image" in r.stderr, r.stderr
    assert not os.path.exists(ckpt_path(out))
    # an explicit queue of the size auto picks is accepted too
    run([lt_train(), cache, "--out", out, *COMMON, "-q"])
    q = saved_args(out)["queue_size"]
    assert q < N_IMAGES
    run([lt_train(), cache, "--out", out, "--overwrite", *COMMON, "--queue-size", str(q), "-q"])


# ---- 13: the defaults work on a small cache ----

def test_default_batch_size_fits_a_small_cache(cache, tmp_path):
    out = str(tmp_path / "out")
    r = run([lt_train(), cache, "--out", out, "--epochs", "1", "--threads", "1"])
    B = 1 << (N_IMAGES.bit_length() - 1)
    assert saved_args(out)["batch_size"] == B
    assert "--batch-size" in r.stderr and str(B) in r.stderr, r.stderr
    r = run([lt_train(), cache, "--out", str(tmp_path / "o2"), "--batch-size", str(N_IMAGES + 1),
             "--epochs", "1"], check=False)
    assert r.returncode == 2 and f"--batch-size {N_IMAGES} or less" in r.stderr, r.stderr


# ---- 14: a finished run is extended through --init ----

def test_init_from_an_lt_checkpoint(finished, cache, tmp_path):
    out = str(tmp_path / "longer")
    ckpt = ckpt_path(finished)
    run([lt_train(), cache, "--out", out, "--init", ckpt, "--lr", "1e-12", *COMMON,
         "--steps", "1", "-q"])
    old, new = st_io.load(ckpt)[0], st_io.load(ckpt_path(out))[0]
    for k in ("conv1.weight", "layer4.1.conv2.weight", "head.weight", "head.bias"):
        assert torch.allclose(old[k], new[k], atol=1e-6), k
    assert st_io.load(ckpt_path(out))[1]["step"] == "1"  # a fresh schedule
    # raising --epochs of the finished run itself is refused, pointing to --init
    r = run([lt_train(), cache, "--out", finished, "--batch-size", "4", "--epochs", "2",
             "--threads", "1"], check=False)
    assert r.returncode == 1 and f"--init {ckpt}" in r.stderr, r.stderr
    # a checkpoint of another architecture is named as such
    r = run([lt_train(), cache, "--out", str(tmp_path / "o34"), "--init", ckpt, "--student",
             "resnet34", *COMMON], check=False)
    assert r.returncode == 1 and "resnet18" in r.stderr and "resnet34" in r.stderr, r.stderr


# ---- 16: the numbers in the messages ----

def test_progress_and_summary_count_right(cache, tmp_path):
    out = str(tmp_path / "out")
    r = run([lt_train(), cache, "--out", out, "--batch-size", str(N_IMAGES), "--epochs", "2",
             "--threads", "1"])
    assert "epoch 1/2 step 1/2 " in r.stderr, r.stderr
    assert "steps 0.." not in r.stderr and "steps 1..2 of 2" in r.stderr, r.stderr
    r = run([lt_train(), cache, "--out", str(tmp_path / "o1"), *COMMON])
    assert "1 epochs" not in r.stderr and "1 epoch x" in r.stderr, r.stderr
    assert "1 threads" not in r.stderr, r.stderr


# ---- epochs per view: a warning when each cached view is shown too often ----

@pytest.mark.parametrize("epochs,warns", [(30, True), (21, True), (20, False), (4, False)])
def test_epochs_per_view_warning(cache, tmp_path, epochs, warns):
    """The cache has 2 views per image: E/V above 10 (E > 20) warns once on stderr, naming the
    views that bring it to 10 or less and the --append command; train.log has it even with -q;
    the checkpoint's args record E/V."""
    out = tmp_path / "out"
    r = run([lt_train(), cache, "--out", out, "--batch-size", "4", "--threads", "1", "--epochs",
             str(epochs), "--steps", "1"], timeout=300)
    lines = [l for l in r.stderr.splitlines() if "E/V >" in l]
    assert len(lines) == (1 if warns else 0), r.stderr
    if warns:
        want = -(-epochs // 10)  # ceil(E / 10)
        assert lines[0].startswith("lt-train: warning: "), lines
        assert f"lt-embed --append --views {want} DATA_DIR {cache}" in lines[0], lines
        assert epochs / want <= 10 < epochs / (want - 1)  # the fewest views that suffice
    assert f"{epochs / 2:.3g} times (epochs per view, E/V)" in r.stderr, r.stderr
    # -q: nothing on stderr, the note still in train.log
    out_q = tmp_path / "outq"
    r = run([lt_train(), cache, "--out", out_q, "--batch-size", "4", "--threads", "1", "--epochs",
             str(epochs), "--steps", "1", "-q"], timeout=300)
    assert r.stderr == "", r.stderr
    log = (out_q / "train.log").read_text()
    assert ("warning: " in log and "E/V >" in log) == warns, log
    ck = out_q / "checkpoints" / "last.safetensors"
    with open(ck, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        meta = json.loads(f.read(n))["__metadata__"]
    args = json.loads([v for v in meta.values() if "epochs_per_view" in v][0])
    assert args["epochs_per_view"] == epochs / 2


def test_rerun_with_another_init_file_is_refused(cache, tmp_path):
    """--init is part of the run: the same command continues, another (or a missing) init file
    is refused like any changed setting instead of being ignored."""
    ckpt = tmp_path / "first" / "checkpoints" / "last.safetensors"
    run([lt_train(), cache, "--out", tmp_path / "first", *COMMON, "-q"])
    other = tmp_path / "other.safetensors"
    shutil.copy(ckpt, other)
    args = [lt_train(), cache, "--out", tmp_path / "out", "--batch-size", "4", "--epochs", "2",
            "--threads", "1", "--init", ckpt]
    r = run(args + ["--steps", "1"], check=False)
    assert r.returncode == 0, r.stderr
    r = run(args, check=False)  # the same command continues
    assert r.returncode == 0 and "resuming" in r.stderr, r.stderr
    with open(other, "r+b") as f:  # same shape, other values
        f.seek(-4, 2)
        f.write(b"\x00\x00\x80\x3f")
    r = run(args[:-1] + [other], check=False)
    assert r.returncode == 1 and '"init"' in r.stderr, r.stderr
    r = run(args[:-1] + [tmp_path / "missing.safetensors"], check=False)
    assert r.returncode == 1 and "--init" in r.stderr and "missing.safetensors" in r.stderr, \
        r.stderr


def test_a_torn_last_line_is_still_lt_trains_own(cache, tmp_path):
    """A power cut or a full disk can leave half a line at the end of train.log / metrics.jsonl:
    the next run continues instead of calling the file foreign."""
    out = tmp_path / "out"
    args = [lt_train(), cache, "--out", out, "--batch-size", "4", "--epochs", "1", "--threads",
            "1", "--checkpoint-every", "1"]
    run(args + ["--steps", "1", "-q"])
    with open(out / "train.log", "a") as f:
        f.write("2026-01-01T00:00:00Z epoch 1 do")
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 2, "epo')
    r = run(args, check=False)
    assert r.returncode == 0, r.stderr
