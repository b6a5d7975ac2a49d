"""Data-parallel lt-train (`mpirun -np P lt-train`): the run of P processes equals the run of one
process with the same global batch, within float summation tolerance; a killed P = 2 run resumes
under P = 2 exactly; a P = 2 checkpoint continues under P = 1; rank 0 alone writes OUT; a setup
error is reported once and ends every process. (test_train_vs_torch.py checks a P = 2 run
against PyTorch itself.)

Tolerance. Splitting a batch changes only the order of float sums (batch-norm statistics, the
gradient mean), but some gradients of a ResNet are sums that nearly cancel (a batch-norm bias
whose every path meets another batch norm, which removes the mean over the rows): a one-ulp change
of a batch-norm coefficient shifts all rows at once and moves such a gradient by ~1e-2 of itself,
in float32 whatever computes it (PyTorch's own float32 and float64 runs differ by as much on
those tensors: test_train_vs_torch.py). So after one step the thresholds are that test's: per
tensor, the distance between the two updates (w_final - w_init) below 5e-2 of the update, the
median over tensors below 1e-2. Later steps train on those differences and grow them: over the
8 steps of 2 epochs the median ranges from 1e-6 to 2e-2 with the initial weights (measured over
random inits), so there the bounds are 0.5 per tensor and 0.1 for the median (a process that
skipped the gradient mean or the synchronised batch norm is off by the size of the update
itself), with the loss of the first step equal to 1e-5 relative and of every step to 1e-3.
A process that normalised batch norm over its own rows only, or filled the queue from its own
rows, is off by several percent in the loss of the first step."""
import json
import os

import numpy as np
import pytest
import torch
import torchvision

import st_io
from conftest import ROOT, run
from train_fixtures import kill_tree_after_first_checkpoint, lt_train, mpirun, tiny_cache


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("dp")
    cache, _ = tiny_cache(d, n_images=24, views=2, size=64)
    # from the test's seed (conftest: LT_TEST_SEED replays a run, initial weights included)
    torch.manual_seed(int(np.random.default_rng().integers(2**31)))
    sd = {k: v.contiguous() for k, v in torchvision.models.resnet18().state_dict().items()}
    init = os.path.join(str(d), "init.safetensors")
    st_io.save(init, sd)
    return d, cache, init


def train(setup, name, procs, threads, *extra, epochs=2, check=True):
    d, cache, init = setup
    out = os.path.join(str(d), name)
    r = run([*(mpirun(procs) if procs > 1 else []), lt_train(), cache, "--out", out, "--init",
             init, "--epochs", str(epochs), "--threads", str(threads), "-q", *extra], check=check,
            timeout=600)
    return out, r


def losses(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [(j["step"], j["loss"]) for j in map(json.loads, f) if "loss" in j]


def weights(out):
    return st_io.load(os.path.join(out, "checkpoints", "last.safetensors"))


def update_errors(a, b, init):
    """Per float tensor of the backbone and head: |Δa − Δb| / (|Δb| + the rounding of the stored
    weights), Δ = final − init weights."""
    errs = {}
    for name, wb in b.items():
        if name.startswith("optim.") or name == "queue" or wb.dtype != torch.float32:
            continue
        w0 = init[name].double() if name in init else torch.zeros_like(wb, dtype=torch.float64)
        da, db = a[name].double() - w0, wb.double() - w0
        scale = db.norm() + 2 * (wb.double().abs() * 2.0 ** -23).norm()
        if scale > 0:
            errs[name] = ((da - db).norm() / scale).item()
    return errs


def assert_same_run(a_out, b_out, init_path, worst_max=0.5, median_max=0.1):
    la, lb = losses(a_out), losses(b_out)
    assert [s for s, _ in la] == [s for s, _ in lb]
    assert abs(la[0][1] - lb[0][1]) <= 1e-5 * abs(lb[0][1]), (la[0], lb[0])
    for (s, x), (_, y) in zip(la, lb):
        assert abs(x - y) <= 1e-3 * abs(y), (s, x, y)
    (wa, ma), (wb, mb) = weights(a_out), weights(b_out)
    assert (ma["step"], ma["epoch"], ma["optim_step"]) == (mb["step"], mb["epoch"],
                                                            mb["optim_step"])
    for name, t in wb.items():
        if t.dtype == torch.int64:
            assert torch.equal(wa[name], t), name
    init, _ = st_io.load(init_path)
    err = update_errors(wa, wb, init)
    worst = sorted(((e, n) for n, e in err.items()), reverse=True)
    med = sorted(err.values())[len(err) // 2]
    print(f"update errors: median {med:.2e}, worst {worst[:3]}")
    assert worst[0][0] < worst_max, worst[:3]
    assert med < median_max, (med, worst[:3])


_refs = {}


def one_process(setup, batch, *extra):
    """The reference for a global batch: one process (2 threads)."""
    key = (batch, extra)
    if key not in _refs:
        _refs[key], _ = train(setup, f"ref_b{batch}" + "".join(extra).replace("-", "_"), 1, 2,
                              "--batch-size", str(batch), *extra)
    return _refs[key]


@pytest.mark.parametrize("procs,batch", [(2, 8), (3, 6)])
def test_processes_equal_one_process(setup, procs, batch):
    """Shuffled epochs with mixup: P processes against one with the same global batch (P = 3:
    shares of the gradient mean of unequal length), after one step (the tight bounds) and after
    2 epochs."""
    ref = one_process(setup, batch, "--steps", "1")
    out, _ = train(setup, f"p{procs}_b{batch}_s1", procs, 1, "--batch-size", str(batch),
                   "--steps", "1")
    assert_same_run(out, ref, setup[2], worst_max=5e-2, median_max=1e-2)
    ref = one_process(setup, batch)
    out, _ = train(setup, f"p{procs}_b{batch}", procs, 1, "--batch-size", str(batch))
    assert_same_run(out, ref, setup[2])


def test_rank0_alone_writes(setup):
    """... and rank 0 alone scores --eval-data (in eval mode: no collective)."""
    lab = os.path.join(str(setup[0]), "labelled")
    run(["python3", os.path.join(ROOT, "scripts", "make-sample-images.py"), lab, "--count", "12",
         "--labelled", "--seed", "1"])
    out, r = train(setup, "p2_files", 2, 1, "--batch-size", "8", "--steps", "2",
                   "--eval-data", lab, "--eval-every", "1")
    assert r.stderr == "", r.stderr  # -q: nothing from any process
    names = sorted(os.listdir(out))
    events = [n for n in names if "tfevents" in n]
    assert len(events) == 1, names
    assert sorted(set(names) - set(events)) == ["checkpoints", "metrics.jsonl",
                                                "student.safetensors", "train.log"], names
    assert os.listdir(os.path.join(out, "checkpoints")) == ["last.safetensors"]
    with open(os.path.join(out, "train.log")) as f:
        log = f.read()
    assert "2 processes (4 images of each batch)" in log
    assert log.count("training:") == 1
    assert "kNN top-1" in log
    with open(os.path.join(out, "metrics.jsonl")) as f:
        assert sum("knn_top1" in line for line in f) == 1  # at the end (step 2 of 3 per epoch)


def test_killed_two_process_run_resumes_exactly(setup):
    """Killed (mpirun and both ranks) after its first checkpoint, rerun: bit-identical to the run
    that was never interrupted (each sum has one order, so a P = 2 run is deterministic)."""
    d, cache, init = setup
    full, _ = train(setup, "p2_full", 2, 1, "--batch-size", "8", "--checkpoint-every", "2",
                    epochs=6)
    out = os.path.join(str(d), "p2_killed")
    args = [*mpirun(2), lt_train(), cache, "--out", out, "--init", init, "--threads", "1", "-q",
            "--batch-size", "8", "--checkpoint-every", "2", "--epochs", "6"]
    kill_tree_after_first_checkpoint(args, out)
    _, meta = weights(out)
    assert int(meta["step"]) < 18, "killed too late: the run had finished"
    run(args, timeout=600)
    assert losses(out) == losses(full)
    (a, ma), (b, mb) = weights(out), weights(full)
    assert ma["step"] == mb["step"]
    for name in b:
        assert torch.equal(a[name], b[name]), name


def test_two_process_checkpoint_continues_with_one(setup):
    """Steps 1..3 under P = 2, the rest under P = 1 (the checkpoint does not record P): the run
    of one process throughout, within tolerance."""
    ref = one_process(setup, 8)
    out, _ = train(setup, "p2_then_p1", 2, 1, "--batch-size", "8", "--steps", "3")
    assert [s for s, _ in losses(out)] == [1, 2, 3]
    train(setup, "p2_then_p1", 1, 2, "--batch-size", "8")
    assert_same_run(out, ref, setup[2])


def test_batch_not_divisible_is_refused_once(setup):
    out, r = train(setup, "p2_odd", 2, 1, "--batch-size", "7", check=False)
    assert r.returncode != 0
    assert r.stderr.count("--batch-size 7 does not split over the 2 processes") == 1, r.stderr
    assert not os.path.exists(out)


def test_setup_error_of_rank0_ends_every_process(setup):
    """OUT holds a metrics.jsonl lt-train did not write: rank 0 refuses it, says so once, and the
    other process ends too (no hang); the user's file is untouched."""
    d = setup[0]
    out = os.path.join(str(d), "p2_foreign")
    os.makedirs(out)
    with open(os.path.join(out, "metrics.jsonl"), "w") as f:
        f.write("my own notes\n")
    _, r = train(setup, "p2_foreign", 2, 1, "--batch-size", "8", check=False)
    assert r.returncode != 0
    assert r.stderr.count("was not written by lt-train") == 1, r.stderr
    with open(os.path.join(out, "metrics.jsonl")) as f:
        assert f.read() == "my own notes\n"
