"""lt-inspect: its summary against the cache read with h5py, and its contact sheet against the
views lt-embed dumped (--dump-views) when it made the cache: the same pixels, tile for tile, and
the mix tile as λ·a + (1−λ)·b computed here from those dumps."""
import os
import re

import h5py
import numpy as np
import pytest
from PIL import Image

from conftest import BIN, PLUGIN_DIR, run
from train_fixtures import tiny_cache

os.environ.setdefault("HDF5_PLUGIN_PATH", PLUGIN_DIR)


def lt_inspect():
    return os.path.join(BIN, "lt-inspect")


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    d = tmp_path_factory.mktemp("inspect")
    cache, views = tiny_cache(d, n_images=5, views=3, size=40, dim=64)
    return cache, views


def test_summary_matches_the_cache(made):
    cache, _ = made
    r = run([lt_inspect(), cache])
    with h5py.File(cache) as f:
        N, V = int(f.attrs["num_images"]), int(f.attrs["views_per_image"])
        S, D = f["embeddings"].shape
        size = int(f.attrs["image_size"])
        nbytes = len(f["images/bytes"])
    assert f"images      {N}: " in r.stdout, r.stdout
    assert f"views       {V} per image: {S} samples; {size} px" in r.stdout, r.stdout
    assert f"embeddings  {D} x float32" in r.stdout, r.stdout
    m = re.search(r"images      \d+: ([\d.]+) (B|KiB|MiB) of image files", r.stdout)
    scale = {"B": 1, "KiB": 1024, "MiB": 1 << 20}[m.group(2)]
    assert abs(float(m.group(1)) * scale - nbytes) <= 0.05 * scale + 1
    assert "skipped     0 files" in r.stdout


def test_contact_sheet_is_what_the_teacher_saw(made, tmp_path):
    cache, views = made
    sheet = tmp_path / "sheet.png"
    r = run([lt_inspect(), cache, "--sheet", sheet, "--first", "2", "--samples", "4", "-q"])
    assert r.stdout == "" and r.stderr == ""
    img = np.asarray(Image.open(sheet).convert("RGB"))
    with h5py.File(cache) as f:
        size = int(f.attrs["image_size"])
        lam = f["samples/lambda"][()]
        partner = f["samples/image"][()][:, 1]
    assert img.shape == (4 * size, 3 * size, 3)
    for i in range(4):
        s = 2 + i
        tile = lambda k: img[i * size:(i + 1) * size, k * size:(k + 1) * size].astype(np.float64)
        a = np.asarray(Image.open(os.path.join(views, f"{s:08d}_a.png")).convert("RGB"))
        assert (tile(0) == a).all(), s
        if partner[s] >= 0:
            b = np.asarray(Image.open(os.path.join(views, f"{s:08d}_b.png")).convert("RGB"))
            assert (tile(1) == b).all(), s
            mix = lam[s] * a.astype(np.float64) + (1 - lam[s]) * b
        else:
            mix = a
        assert np.abs(tile(2) - mix).max() <= 1.0, s


def test_bad_requests(made, tmp_path):
    cache, _ = made
    r = run([lt_inspect(), cache, "--sheet", tmp_path / "s.png", "--first", "1000"], check=False)
    assert r.returncode == 1 and "--first 1000" in r.stderr, r.stderr
    r = run([lt_inspect(), cache, "--samples", "0"], check=False)
    assert r.returncode == 2, r.stderr
    partial = tmp_path / "c.h5.partial"
    with open(cache, "rb") as f, open(partial, "wb") as g:
        g.write(f.read())
    with h5py.File(partial, "r+") as f:
        del f.attrs["complete"]
    r = run([lt_inspect(), partial], check=False)
    assert r.returncode == 1 and "not a finished lt cache" in r.stderr, r.stderr
