"""lt-train --eval-data (lib/train/knn_monitor.c): the kNN score of the live student every
--eval-every epochs and at the end, in metrics.jsonl, train.log and the TensorBoard file; equal to
lt-eval's score of the student it exported (lt-eval's kNN is tested against NumPy in
test_eval.py); training bit-identical with and without it; a resumed run scores each step once;
a bad folder refused before OUT exists."""
import json
import os

import pytest

from conftest import BIN, PLUGIN_DIR, run
from train_fixtures import lt_train, tiny_cache

os.environ["HDF5_PLUGIN_PATH"] = PLUGIN_DIR
COMMON = ["--batch-size", "4", "--threads", "1", "--checkpoint-every", "3", "-q"]


def labelled(d):
    run(["python3", os.path.join(os.path.dirname(__file__), "..", "..", "scripts",
                                 "make-sample-images.py"), d, "--count", "12", "--labelled"])
    return d


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("evaltrain")
    cache, _ = tiny_cache(d, n_images=12, views=2, size=48)
    return cache, labelled(str(d / "labelled"))


def rows(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(l) for l in f]


def test_scores_every_epoch_and_at_the_end_as_lt_eval(setup, tmp_path):
    cache, data = setup
    out = tmp_path / "run"
    # 12 images / batch 4 = 3 steps per epoch; 2.5 epochs = 7 steps; scores at 3, 6 and 7
    run([lt_train(), cache, "--out", out, "--epochs", "2.5", "--eval-data", data,
         "--eval-every", "1", *COMMON])
    knn = [r for r in rows(out) if "knn_top1" in r]
    assert [r["step"] for r in knn] == [3, 6, 7]
    assert all(0 <= r["knn_top1"] <= 1 for r in knn)
    log = (out / "train.log").read_text()
    assert log.count("kNN top-1") >= 4 and f"kNN top-1 {knn[-1]['knn_top1']:.4f}" in log
    # lt-eval on the exported student, the same protocol and image size: the same score
    j = tmp_path / "eval.json"
    run([os.path.join(BIN, "lt-eval"), "--weights", out / "student.safetensors", "--image-size",
         "48", "--no-linear", "--json", j, "-q", data])
    got = json.loads(j.read_text())["models"][0]["knn_top1"]
    assert abs(got - knn[-1]["knn_top1"]) < 1e-6


def test_training_is_the_same_with_or_without_eval(setup, tmp_path):
    cache, data = setup
    a, b = tmp_path / "a", tmp_path / "b"
    run([lt_train(), cache, "--out", a, "--epochs", "2", *COMMON])
    run([lt_train(), cache, "--out", b, "--epochs", "2", "--eval-data", data, "--eval-every",
         "0.5", *COMMON])
    assert (a / "student.safetensors").read_bytes() == (b / "student.safetensors").read_bytes()
    assert ((a / "checkpoints" / "last.safetensors").read_bytes() ==
            (b / "checkpoints" / "last.safetensors").read_bytes())
    train_a = [r for r in rows(a)]
    train_b = [r for r in rows(b) if "knn_top1" not in r]
    assert [(r["step"], r["loss"]) for r in train_a] == [(r["step"], r["loss"]) for r in train_b]
    # every 0.5 epoch of 3 steps: every round(1.5) = 2 steps, the end (6) among them
    assert [r["step"] for r in rows(b) if "knn_top1" in r] == [2, 4, 6]


def test_resume_scores_each_step_once(setup, tmp_path):
    cache, data = setup
    out = tmp_path / "run"
    base = [lt_train(), cache, "--out", out, "--epochs", "3", "--eval-data", data, *COMMON]
    run(base + ["--steps", "5"])  # scores at 3 and at its end, 5; checkpoint at 5
    # a run killed after a score past its last checkpoint leaves that line behind; the rerun
    # drops it and scores that step again, once
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "epoch": 2.0000, "knn_top1": 0.5, "eval_s": 1.0}\n')
    run(base)
    steps = [r["step"] for r in rows(out) if "knn_top1" in r]
    assert steps == [3, 5, 6, 9], steps


def test_bad_eval_folder_is_refused_before_out_exists(setup, tmp_path):
    cache, _ = setup
    empty = tmp_path / "nolabels"
    (empty / "train").mkdir(parents=True)
    out = tmp_path / "run"
    r = run([lt_train(), cache, "--out", out, "--epochs", "1", "--eval-data", empty, *COMMON],
            check=False)
    assert r.returncode == 1 and "--eval-data" in r.stderr and str(empty) in r.stderr
    assert not out.exists()
    r = run([lt_train(), cache, "--out", out, "--eval-every", "0", "--eval-data", empty],
            check=False)
    assert r.returncode == 2 and "eval-every" in r.stderr


def test_knn_scores_are_in_the_tensorboard_file(setup, tmp_path):
    from test_tensorboard import read_events
    cache, data = setup
    out = tmp_path / "run"
    run([lt_train(), cache, "--out", out, "--epochs", "2", "--eval-data", data, "--eval-every",
         "1", *COMMON])
    want = [(r["step"], r["knn_top1"]) for r in rows(out) if "knn_top1" in r]
    got = read_events(out)["scalars"]["eval/knn_top1"]
    assert [s for s, _ in got] == [s for s, _ in want] == [3, 6]
    assert all(abs(v - w) <= 5e-7 + 1e-7 * w for (_, v), (_, w) in zip(got, want))
