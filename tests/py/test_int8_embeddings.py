"""int8 embeddings (lt-embed --dtype i8, formats/cache.md "/embeddings"): the stored values and
scales against a NumPy quantizer written from the format's text, the checksums against zlib,
lt's decoded values against q · scale, and lt-embed → lt-train / --append / --verify on an
int8 cache, with its values within half a quantization step of the float32 teacher output."""
import os
import zlib

import h5py
import numpy as np
import pytest

from conftest import PLUGIN_DIR, run, tool
from embed_fixtures import lt_embed, odd_folder, tiny_teacher

os.environ["HDF5_PLUGIN_PATH"] = PLUGIN_DIR


def lt_train():
    return os.path.join(os.environ.get("LT_ROOT", "."), "bin", "lt-train")


def quantize(x):
    """The format's rule: scale = max|x| / 127 (float32), q = round half to even (x / scale)."""
    x = x.astype(np.float32)
    scale = (np.abs(x).max(axis=1) / np.float32(127)).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1))
    q = np.clip(np.rint(x / safe[:, None]), -127, 127).astype(np.int8)
    q[scale == 0] = 0
    return q, scale


def test_int8_layout_against_numpy(tmp_path):
    seed = int.from_bytes(os.urandom(4), "little")
    cache = tmp_path / "c.h5"
    run([tool("cache_tool"), "write", cache, 13, 3, 100, "i8", seed])
    raw = np.fromfile(str(cache) + ".emb.f32", "<f4").reshape(39, 100)
    q_ref, s_ref = quantize(raw)
    with h5py.File(cache, "r") as f:
        e, s = f["embeddings"], f["embedding_scales"]
        assert f.attrs["embedding_dtype"] == b"int8"
        assert e.dtype == np.int8 and e.shape == (39, 100)
        assert s.dtype == np.float32 and s.shape == (39,)
        assert [e.id.get_create_plist().get_filter(i)[0] for i in range(2)] == [2, 32015]
        q, sc, crc = e[()], s[()], f["checksums/embeddings"][()]
    assert np.array_equal(sc.view(np.uint32), s_ref.view(np.uint32))
    assert np.array_equal(q, q_ref), f"{(q != q_ref).sum()} values differ (seed {seed})"
    want = [zlib.crc32(q[k].tobytes() + sc[k:k + 1].astype("<f4").tobytes()) for k in range(39)]
    assert [int(c) for c in crc] == want
    # lt's reader decodes to q · scale exactly, within half a step of what was stored
    out = tmp_path / "dec.f32"
    run([tool("cache_tool"), "emb", cache, out])
    dec = np.fromfile(out, "<f4").reshape(39, 100)
    assert np.array_equal(dec, q.astype(np.float32) * sc[:, None])
    assert np.all(np.abs(dec - raw) <= sc[:, None] * 0.5001)
    assert run([tool("cache_tool"), "check", cache]).stdout.split()[-1] == "int8"


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    d = tmp_path_factory.mktemp("i8")
    data = d / "imgs"
    data.mkdir()
    odd_folder(str(data), seed=None)
    t = tiny_teacher(str(d / "t.safetensors"))
    base = ["--teacher", t, "--views", "2", "--image-size", "28", "-q"]
    run([lt_embed(), *base, "--dtype", "f32", data, d / "f32.h5"])
    run([lt_embed(), *base, "--dtype", "i8", data, d / "i8.h5"])
    return d, data, t


def test_lt_embed_int8_is_the_quantized_float32(caches):
    d, _, _ = caches
    with h5py.File(d / "f32.h5") as f, h5py.File(d / "i8.h5") as g:
        x = f["embeddings"][()]
        q, s = g["embeddings"][()], g["embedding_scales"][()]
        crc = g["checksums/embeddings"][()]
        size_f, size_i = f["embeddings"].id.get_storage_size(), g["embeddings"].id.get_storage_size()
    q_ref, s_ref = quantize(x)
    assert np.array_equal(s, s_ref) and np.array_equal(q, q_ref)
    assert all(zlib.crc32(q[k].tobytes() + s[k:k + 1].astype("<f4").tobytes()) == crc[k]
               for k in range(len(q)))
    assert size_i < size_f / 2.5


def test_lt_train_append_verify_on_int8(caches, tmp_path):
    d, data, t = caches
    cache = tmp_path / "i8.h5"
    cache.write_bytes((d / "i8.h5").read_bytes())
    run([lt_train(), cache, "--out", tmp_path / "run", "--steps", "2", "--batch-size", "4",
         "--verify", "1", "-q"])
    assert (tmp_path / "run" / "student.safetensors").exists()
    with h5py.File(cache) as f:
        old_q, old_s = f["embeddings"][()], f["embedding_scales"][()]
    run([lt_embed(), "--append", "--teacher", t, "--views", "3", "-q", data, cache])
    with h5py.File(cache) as f:
        assert f.attrs["embedding_dtype"] == b"int8" and f.attrs["views_per_image"] == 3
        q, s = f["embeddings"][()], f["embedding_scales"][()]
    n = len(old_s) // 2
    keep = np.array([i * 3 + v for i in range(n) for v in range(2)])
    assert np.array_equal(q[keep], old_q) and np.array_equal(s[keep], old_s)
    run([lt_train(), cache, "--out", tmp_path / "run2", "--steps", "1", "--batch-size", "4",
         "--verify", "1", "-q"])
    # a flipped bit in one scale is caught by --verify
    with h5py.File(cache, "r+") as f:
        v = f["embedding_scales"][5:6].view(np.uint32) ^ np.uint32(1)
        f["embedding_scales"][5:6] = v.view(np.float32)
    r = run([lt_train(), cache, "--out", tmp_path / "run3", "--steps", "1", "--verify", "1"],
            check=False)
    assert r.returncode != 0 and "sample 5 " in r.stderr and "checksum" in r.stderr
