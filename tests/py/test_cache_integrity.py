"""The cache's checksums (/checksums/samples and /checksums/embeddings, formats/cache.md) against
zlib's CRC-32 computed here from the stored bytes read with h5py, and lt-train --verify finding a
damaged recipe, a changed embedding and a flipped bit inside a compressed /embeddings chunk."""
import os
import shutil
import zlib

import h5py
import numpy as np
import pytest

from conftest import PLUGIN_DIR, run
from train_fixtures import lt_train, tiny_cache

os.environ.setdefault("HDF5_PLUGIN_PATH", PLUGIN_DIR)

SAMPLE_ORDER = ["image", "lambda", "crop", "flip", "jitter", "jitter_order", "jitter_factor",
                "gray", "blur_sigma"]
TRAIN = ["--steps", "1", "--batch-size", "4", "--threads", "2", "-q"]


@pytest.fixture(scope="module", params=["f16", "f32"])
def cache(tmp_path_factory, request):
    d = tmp_path_factory.mktemp("integ" + request.param)
    c, _ = tiny_cache(d, n_images=8, views=3, size=28, dim=64, extra=["--dtype", request.param])
    return c


def test_checksums_are_zlib_crc32_of_the_stored_rows(cache):
    with h5py.File(cache, "r") as f:
        assert f.attrs["complete"] == 1
        emb = f["embeddings"][()]
        crc_e = f["checksums/embeddings"][()]
        crc_s = f["checksums/samples"][()]
        cols = [f["samples/" + k][()] for k in SAMPLE_ORDER]
    S = emb.shape[0]
    assert crc_e.dtype == np.uint32 and crc_e.shape == (S,) and crc_s.shape == (S,)
    little = emb.astype(emb.dtype.newbyteorder("<"))
    for s in range(S):
        assert crc_e[s] == zlib.crc32(little[s].tobytes()), s
        row = b"".join(np.ascontiguousarray(c[s]).astype(c.dtype.newbyteorder("<")).tobytes()
                       for c in cols)
        assert crc_s[s] == zlib.crc32(row), s


def damaged_copy(cache, tmp_path, how):
    bad = str(tmp_path / "bad.h5")
    shutil.copy(cache, bad)
    if how == "bitflip":  # one bit in the middle of the first compressed /embeddings chunk
        with h5py.File(bad, "r") as f:
            info = f["embeddings"].id.get_chunk_info(0)
        with open(bad, "r+b") as g:
            at = info.byte_offset + info.size // 2
            g.seek(at)
            b = g.read(1)
            g.seek(at)
            g.write(bytes([b[0] ^ 0x10]))
        return None
    with h5py.File(bad, "r+") as f:
        if how == "embedding":
            e = f["embeddings"]
            row = e[5]
            row[3] = -row[3] if row[3] != 0 else 0.5
            e[5] = row
            return 5
        if how == "recipe":
            f["samples/jitter_factor"][7, 1, 2] += 0.25
            return 7
        if how == "lambda":
            f["samples/lambda"][2] = 0.123
            return 2
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["embedding", "recipe", "lambda", "bitflip"])
def test_verify_finds_damaged_rows(cache, tmp_path, how):
    good = run([lt_train(), cache, "--out", tmp_path / "good", "--verify", "1", *TRAIN],
               check=False, timeout=300)
    assert good.returncode == 0, good.stderr
    bad = damaged_copy(cache, tmp_path, how)
    r = run([lt_train(), tmp_path / "bad.h5", "--out", tmp_path / "o", "--verify", "1", *TRAIN],
            check=False, timeout=300)
    assert r.returncode == 1, (how, r.stderr)
    assert "damaged" in r.stderr, r.stderr
    if bad is not None:
        what = "embedding" if how == "embedding" else "recipe"
        assert f"sample {bad} " in r.stderr and f"its stored {what} does not match" in r.stderr, \
            r.stderr
    assert not (tmp_path / "o" / "student.safetensors").exists()


def test_append_refuses_a_damaged_cache(tmp_path_factory):
    """--append copies every stored row into the grown cache, which gets fresh checksums: a row
    that no longer matches its checksum is refused there, or later --verify runs would pass."""
    d = tmp_path_factory.mktemp("appenddamaged")
    c, _ = tiny_cache(d, n_images=6, views=2, size=28, dim=64)
    with h5py.File(c, "r+") as f:
        e = f["embeddings"]
        row = e[5]
        row[0] = -row[0] if row[0] != 0 else 0.5
        e[5] = row
    before = open(c, "rb").read()
    from train_fixtures import noise_images
    noise_images(os.path.join(d, "more"), 2, seed=7)
    for name in os.listdir(os.path.join(d, "more")):
        shutil.copy(os.path.join(d, "more", name), os.path.join(d, "imgs", "new_" + name))
    from embed_fixtures import lt_embed
    r = run([lt_embed(), "--teacher", os.path.join(d, "teacher.safetensors"), "--append",
             os.path.join(d, "imgs"), c], check=False, timeout=300)
    assert r.returncode == 1, r.stderr
    assert "sample 5 " in r.stderr and "damaged" in r.stderr, r.stderr
    assert open(c, "rb").read() == before
