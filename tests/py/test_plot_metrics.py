"""scripts/plot-metrics.py on two tiny lt-train runs: a PNG that PIL reads, one panel per
quantity (a kNN panel only when a run records knn_top1), each run drawn in its own colour; clear
errors on a folder without metrics.jsonl."""
import json
import os
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import PLUGIN_DIR, ROOT, run

os.environ["HDF5_PLUGIN_PATH"] = PLUGIN_DIR
from train_fixtures import lt_train, tiny_cache

SCRIPT = os.path.join(ROOT, "scripts", "plot-metrics.py")
# matplotlib's first two line colours (its default cycle)
C0, C1 = (0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("plot")
    cache, _ = tiny_cache(d, n_images=12, views=2, size=48)
    outs = []
    for name, seed in (("run-a", "0"), ("run-b", "1")):
        out = str(d / name)
        run([lt_train(), cache, "--out", out, "--batch-size", "4", "--epochs", "2", "--seed", seed,
             "--threads", "1", "--no-tensorboard", "-q"])
        outs.append(out)
    return outs


def has_colour(img, rgb):
    a = np.asarray(img.convert("RGB")).astype(int)
    return bool((np.abs(a - np.array(rgb)).sum(axis=2) <= 6).any())


def test_two_runs_make_one_png(runs, tmp_path):
    png = str(tmp_path / "curves.png")
    r = run([sys.executable, SCRIPT, *runs, "-o", png])
    assert "wrote" in r.stderr
    with Image.open(png) as img:
        assert img.format == "PNG"
        img.load()
        # 9 x 2.6 inches per panel at 100 dpi: loss, lr, gradient norm, images/s
        assert img.size == (900, 4 * 260), img.size
        assert has_colour(img, C0) and has_colour(img, C1)
    assert os.path.getsize(png) > 20000
    assert not [n for n in os.listdir(tmp_path) if ".tmp." in n]


def test_a_knn_score_gets_its_panel(runs, tmp_path):
    rows = [json.loads(l) for l in open(os.path.join(runs[0], "metrics.jsonl"))]
    knn = tmp_path / "knn"
    knn.mkdir()
    with open(knn / "metrics.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
            if r["step"] % 3 == 0:
                f.write(json.dumps({"step": r["step"], "knn_top1": 0.1 * r["step"]}) + "\n")
        f.write('{"step": 7, "lo')  # the torn last line of a run still being written
    png = str(tmp_path / "knn.png")
    run([sys.executable, SCRIPT, runs[1], str(knn), "-o", png])
    with Image.open(png) as img:
        assert img.size == (900, 5 * 260), img.size
        assert has_colour(img, C0) and has_colour(img, C1)


def test_a_folder_without_metrics_is_a_clear_error(runs, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    png = tmp_path / "x.png"
    r = run([sys.executable, SCRIPT, runs[0], str(empty), "-o", png], check=False)
    assert r.returncode == 1, r.stderr
    assert "empty" in r.stderr and "metrics.jsonl" in r.stderr and "Traceback" not in r.stderr
    assert not png.exists()
    r = run([sys.executable, SCRIPT, str(tmp_path / "missing"), "-o", png], check=False)
    assert r.returncode == 1 and "missing" in r.stderr and "Traceback" not in r.stderr, r.stderr
    (empty / "metrics.jsonl").write_text("step,loss\n1,0.5\n")
    r = run([sys.executable, SCRIPT, str(empty), "-o", png], check=False)
    assert r.returncode == 1 and "not JSON" in r.stderr and "Traceback" not in r.stderr, r.stderr
