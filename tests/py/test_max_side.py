"""lt-embed --max-side N, end to end: images whose long side exceeds N are stored once, resized,
as a PNG; both tools then render every view from that copy.

References and tolerances:
  stored size     PIL Image.thumbnail((N, N)): the size it picks                     exact
  stored pixels   PIL Image.thumbnail((N, N), BILINEAR, reducing_gap=None), i.e.
                  Image.resize(size, BILINEAR) of the decoded original (lt_resize is
                  PIL's resampling: tests/py/test_render.py, tolerance 0)           exact (0)
  PNG             decoded by PIL, and by lt's decoder (decode_tool): the same bytes  exact
  small images    the file's bytes, stored verbatim                                 identical
  views           lt-inspect --sheet (lt_cache_render_view, lt-train's loader path)
                  against the views lt-embed dumped for the teacher                  exact
Also: the identity of a run (resume, --append, --shard/--merge) includes --max-side; --append
recognises unchanged files by /images/source_sha256; a sharded run merges into the one-process
cache."""
import hashlib
import io
import os
import shutil
import signal

import h5py
import numpy as np
import pytest
from PIL import Image

from conftest import BIN, PLUGIN_DIR, cache_text, run, tool
from embed_fixtures import lt_embed, rand_img, tiny_teacher
from test_embed_resume import read_all, start_and_wait
from train_fixtures import lt_train

os.environ["HDF5_PLUGIN_PATH"] = PLUGIN_DIR

N = 64  # --max-side of these tests
ARGS = ["--views", "3", "--image-size", "32", "--seed", "5", "-q"]
EXACT = ["--batch-size", "1", "--threads", "1"]  # the teacher's bits do not depend on batching


def sha(b):
    return hashlib.sha256(b).hexdigest()


def thumb(img, n=N):
    """PIL's reference: the stored copy of img under --max-side n (None: stored verbatim)."""
    if img.width <= n and img.height <= n:
        return None
    t = img.copy()
    t.thumbnail((n, n), Image.BILINEAR, reducing_gap=None)
    return t


def make_folder(root, seed):
    """Images larger than N (landscape, portrait, square, extreme aspects, PNG and JPEG, grey
    and RGBA), images within N, and a broken file. Returns the sorted usable paths."""
    rng = np.random.default_rng(seed)
    specs = [("big/a_land.png", 200, 133, "RGB", "PNG"), ("big/b_port.png", 90, 151, "RGB", "PNG"),
             ("big/c_square.png", 65, 65, "RGB", "PNG"), ("big/d_wide.png", 1000, 3, "RGB", "PNG"),
             ("big/e_tall.jpg", 5, 300, "RGB", "JPEG"), ("big/f_grey.png", 130, 97, "L", "PNG"),
             ("big/g_rgba.png", 97, 130, "RGBA", "PNG"), ("big/h_photo.jpg", 333, 217, "RGB", "JPEG"),
             ("small/i_edge.png", 64, 40, "RGB", "PNG"), ("small/j.jpg", 50, 64, "RGB", "JPEG"),
             ("small/k_tiny.png", 7, 3, "RGB", "PNG")]
    # random sizes with awkward ratios, to exercise the short side's rounding
    for k in range(12):
        w, h = int(rng.integers(65, 700)), int(rng.integers(1, 700))
        specs.append((f"rnd/r{k:02d}.png", *((w, h) if k % 2 else (h, w)), "RGB", "PNG"))
    for rel, w, h, mode, fmt in specs:
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        rand_img(rng, w, h, mode).save(p, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    os.makedirs(os.path.join(root, "broken"), exist_ok=True)
    with open(os.path.join(root, "broken", "cut.png"), "wb") as f:
        buf = io.BytesIO()
        rand_img(rng, 300, 300).save(buf, "PNG")
        f.write(buf.getvalue()[:500])
    return sorted((s[0] for s in specs), key=str.encode)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    d = tmp_path_factory.mktemp("maxside")
    data = d / "imgs"
    paths = make_folder(data, 1)
    t = tiny_teacher(str(d / "t.safetensors"))
    cache, views = d / "c.h5", d / "views"
    run([lt_embed(), "--teacher", t, *ARGS, "--max-side", str(N), "--dump-views", views, data,
         cache])
    return d, data, t, cache, views, paths


def stored(f, i):
    b, o = f["images/bytes"], f["images/offset"]
    return b[o[i]:o[i + 1]].tobytes()


def test_stored_images_are_pil_thumbnails_or_the_files(made, tmp_path):
    d, data, t, cache, _, paths = made
    resized = 0
    with h5py.File(cache) as f:
        assert int(f.attrs["max_side"]) == N
        assert [p.decode() for p in cache_text(f, "images/path")] == paths
        assert cache_text(f, "skipped/path") == [b"broken/cut.png"]
        for i, rel in enumerate(paths):
            src = open(data / rel, "rb").read()
            img = Image.open(io.BytesIO(src)).convert("RGB")
            ref = thumb(img)
            mine = stored(f, i)
            w, h = int(f["images/width"][i]), int(f["images/height"][i])
            assert f["images/sha256"][i].decode() == sha(mine), rel
            assert f["images/source_sha256"][i].decode() == sha(src), rel
            assert int(f["images/file_size"][i]) == len(src), rel
            assert int(f["images/mtime_ns"][i]) == os.stat(data / rel).st_mtime_ns, rel
            if ref is None:
                assert mine == src, rel  # within N: the file itself
                assert (w, h) == img.size, rel
                continue
            resized += 1
            assert mine[:8] == b"\x89PNG\r\n\x1a\n", rel
            got = Image.open(io.BytesIO(mine))
            assert got.mode == "RGB" and got.size == ref.size == (w, h), (rel, ref.size, (w, h))
            assert max(w, h) == N
            a = np.asarray(got)
            assert np.array_equal(a, np.asarray(ref)), (rel, np.abs(a.astype(int) - np.asarray(ref)).max())
            # lt's own decoder reads the same pixels back from the stored PNG
            p = tmp_path / "s.png"
            p.write_bytes(mine)
            out = tmp_path / "s.ppm"
            run([tool("decode_tool"), p, out])
            data_ppm = out.read_bytes()
            assert data_ppm.endswith(a.tobytes()), rel
    assert resized == 8 + 12


def test_thumbnail_size_rule_on_many_shapes(tmp_path):
    """The short side: the size PIL's thumbnail picks, for shapes around the rounding ties."""
    data = tmp_path / "imgs"
    data.mkdir()
    rng = np.random.default_rng()
    n = 40
    shapes = [(3 * n + 1, 2), (n + 1, n), (n, n + 1), (2 * n + 1, 1), (1, 5 * n), (3 * n, 2 * n - 1),
              (7, 3 * n + 2), (n + 1, n + 1),
              # n = 40: where the closest aspect ratio is not the closest short side, or a
              # short side of exactly k + 0.5 (PIL takes the floor)
              (44, 6), (49, 30), (51, 7), (3, 48), (9, 48), (45, 48), (4, 64)]
    shapes += [(int(rng.integers(n + 1, 400)), int(rng.integers(1, 400))) for _ in range(20)]
    for k, (w, h) in enumerate(shapes):
        Image.new("RGB", (w, h), (k, 2 * k, 3 * k)).save(data / f"s{k:02d}.png")
    t = tiny_teacher(str(tmp_path / "t.safetensors"))
    cache = tmp_path / "c.h5"
    run([lt_embed(), "--teacher", t, "--views", "1", "--image-size", "14", "--max-side", str(n),
         "-q", data, cache])
    with h5py.File(cache) as f:
        got = list(zip(f["images/width"][()], f["images/height"][()]))
    for k, (w, h) in enumerate(shapes):
        ref = thumb(Image.new("RGB", (w, h)), n)
        want = (w, h) if ref is None else ref.size
        assert tuple(map(int, got[k])) == want, (w, h)


def test_views_rerendered_from_the_cache_are_the_teachers(made, tmp_path):
    """lt-inspect renders with lt_cache_render_view, as lt-train's loader does: from the stored
    copy, the very views lt-embed rendered for the teacher; lt-train verifies and trains on it."""
    d, data, t, cache, views, paths = made
    with h5py.File(cache) as f:
        S, size = f["embeddings"].shape[0], int(f.attrs["image_size"])
        partner = f["samples/image"][()][:, 1]
    sheet = tmp_path / "sheet.png"
    run([BIN + "/lt-inspect", cache, "--sheet", sheet, "--first", "0", "--samples", str(S), "-q"])
    img = np.asarray(Image.open(sheet).convert("RGB"))
    for s in range(S):
        tile = lambda k: img[s * size:(s + 1) * size, k * size:(k + 1) * size]
        a = np.asarray(Image.open(views / f"{s:08d}_a.png").convert("RGB"))
        assert np.array_equal(tile(0), a), s
        if partner[s] >= 0:
            b = np.asarray(Image.open(views / f"{s:08d}_b.png").convert("RGB"))
            assert np.array_equal(tile(1), b), s
    r = run([BIN + "/lt-inspect", cache])
    assert f"stored resized to {N} px" in r.stdout, r.stdout
    out = tmp_path / "train"
    run([lt_train(), cache, "--out", out, "--steps", "2", "--batch-size", "4", "--verify", "1",
         "--threads", "2", "--no-tensorboard", "-q"])
    assert (out / "student.safetensors").exists()


def test_bad_values_are_usage_errors(made, tmp_path):
    d, data, t, cache, _, _ = made
    out = tmp_path / "c.h5"
    for value, msg in [("0", "max-side"), ("-5", "max-side"), ("12x", "max-side"),
                       ("31", "--max-side 31 is smaller than the view size 32")]:
        r = run([lt_embed(), "--teacher", t, *ARGS, "--max-side", value, data, out], check=False)
        assert r.returncode == 2 and msg in r.stderr, (value, r.stderr)
        assert not out.exists() and not os.path.exists(str(out) + ".partial")
    # --append: the cache's view size (32) applies
    r = run([lt_embed(), "--teacher", t, "--append", "--max-side", "20", "-q", data,
             shutil.copy(cache, tmp_path / "a.h5")], check=False)
    assert r.returncode == 1 and "--max-side 20 is smaller than the view size 32" in r.stderr, r.stderr


# ---- identity of a run: resume, --append, --shard / --merge ----

KILL = ["--views", "16", "--image-size", "28", "--batch-size", "4", "--threads", "1"]


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """A run with --max-side killed mid-way (its CACHE.partial + .partial.emb kept), and the
    uninterrupted cache of the same command."""
    d = tmp_path_factory.mktemp("maxside_resume")
    data = d / "imgs"
    rng = np.random.default_rng(3)
    data.mkdir()
    for i in range(60):
        rand_img(rng, int(rng.integers(30, 120)), int(rng.integers(30, 120))).save(data / f"i{i:02d}.png")
    t = tiny_teacher(str(d / "t.safetensors"), dim=128, depth=6)
    ref = d / "ref.h5"
    run([lt_embed(), "--teacher", t, *KILL, "--max-side", "48", "-q", data, ref])
    out = d / "c.h5"
    p = start_and_wait(["--teacher", t, *KILL, "--max-side", "48", data, out], out, 60)
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=30)
    snap = d / "snap"
    snap.mkdir()
    for suffix in (".partial", ".partial.emb"):
        shutil.move(str(out) + suffix, snap / ("c.h5" + suffix))
    return d, data, t, ref, snap


def restore(killed, dest):
    for suffix in (".partial", ".partial.emb"):
        shutil.copy(killed[4] / ("c.h5" + suffix), str(dest) + suffix)
    return dest


@pytest.mark.parametrize("change,named", [(["--max-side", "64"], "--max-side was 48, now 64"),
                                          ([], "--max-side was 48, now off")])
def test_resume_with_another_max_side_is_refused(killed, tmp_path, change, named):
    d, data, t, ref, _ = killed
    out = restore(killed, tmp_path / "c.h5")
    before = open(str(out) + ".partial.emb", "rb").read()
    r = run([lt_embed(), "--teacher", t, *KILL, *change, data, out], check=False)
    assert r.returncode == 1 and named in r.stderr and "--overwrite" in r.stderr, r.stderr
    assert open(str(out) + ".partial.emb", "rb").read() == before
    assert not out.exists()


def test_resume_with_the_same_max_side_equals_one_run(killed, tmp_path):
    d, data, t, ref, _ = killed
    out = restore(killed, tmp_path / "c.h5")
    run([lt_embed(), "--teacher", t, *KILL, "--max-side", "48", "-q", data, out])
    A, B = read_all(ref), read_all(out)
    assert sorted(A) == sorted(B)
    for k in A:
        assert np.array_equal(A[k], B[k]), k


def test_append_keeps_the_caches_max_side(made, tmp_path):
    d, data, t, cache, _, paths = made
    data2 = tmp_path / "imgs"
    shutil.copytree(data, data2)
    c = shutil.copy(cache, tmp_path / "c.h5")
    # another --max-side, or none on a cache without one: refused, CACHE untouched
    before = open(c, "rb").read()
    r = run([lt_embed(), "--teacher", t, "--append", "--max-side", "96", data2, c], check=False)
    assert r.returncode == 1 and "--max-side 64, this run asks for 96" in r.stderr, r.stderr
    assert open(c, "rb").read() == before
    plain = tmp_path / "plain.h5"
    run([lt_embed(), "--teacher", t, *ARGS, data, plain])
    r = run([lt_embed(), "--teacher", t, "--append", "--max-side", str(N), data2, plain],
            check=False)
    assert r.returncode == 1 and f"--max-side off, this run asks for {N}" in r.stderr, r.stderr
    # an original touched (mtime changed, same bytes) is the same file: its source SHA-256
    # matches although the stored bytes are its resized copy
    os.utime(data2 / "big/a_land.png", ns=(10**18, 10**18))
    rng = np.random.default_rng(9)
    rand_img(rng, 150, 100).save(data2 / "big/z_new.png")
    run([lt_embed(), "--teacher", t, "--append", "-q", data2, c])  # max-side from the cache
    with h5py.File(cache) as f0, h5py.File(c) as f:
        n0 = len(f0["images/width"])
        assert int(f.attrs["max_side"]) == N
        assert cache_text(f, "images/path")[n0:] == [b"big/z_new.png"]
        for name in ("bytes", "sha256", "source_sha256", "file_size", "width", "height"):
            old = f0["images/" + name][()]
            assert np.array_equal(f["images/" + name][()][:len(old)], old), name
        assert (int(f["images/width"][n0]), int(f["images/height"][n0])) == (64, 43)
        src = open(data2 / "big/z_new.png", "rb").read()
        assert f["images/source_sha256"][n0].decode() == sha(src)
        ref = thumb(Image.open(data2 / "big/z_new.png").convert("RGB"))
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(stored(f, n0)))), np.asarray(ref))
    # an original whose content changed (same size, other bytes) is refused as changed
    p = data2 / "big/b_port.png"
    b = bytearray(open(p, "rb").read())
    b[-20] ^= 1
    open(p, "wb").write(bytes(b))
    rand_img(rng, 30, 30).save(data2 / "small/z2.png")
    r = run([lt_embed(), "--teacher", t, "--append", data2, c], check=False)
    assert r.returncode == 1 and "big/b_port.png (content)" in r.stderr, r.stderr


def test_shards_merge_into_the_one_process_cache(made, tmp_path):
    d, data, t, _, _, _ = made
    ref = tmp_path / "ref.h5"
    run([lt_embed(), "--teacher", t, *ARGS, *EXACT, "--max-side", str(N), data, ref])
    parts = []
    for k in (1, 2, 3):
        p = tmp_path / f"p{k}.h5"
        run([lt_embed(), "--teacher", t, *ARGS, *EXACT, "--max-side", str(N), "--shard",
             f"{k}/3", data, p])
        parts.append(p)
    out = tmp_path / "merged.h5"
    run([lt_embed(), "-q", "--merge", out, *parts])
    A, B = read_all(ref), read_all(out)
    assert sorted(A) == sorted(B)
    for k in A:
        assert np.array_equal(A[k], B[k]), k
    # a part made with another --max-side is foreign: refused, nothing written
    odd = tmp_path / "odd2.h5"
    run([lt_embed(), "--teacher", t, *ARGS, "--max-side", "100", "--shard", "2/3", data, odd])
    out2 = tmp_path / "m2.h5"
    r = run([lt_embed(), "--merge", out2, parts[0], odd, parts[2]], check=False)
    assert r.returncode == 1 and "--max-side was" in r.stderr and "odd2.h5" in r.stderr, r.stderr
    assert not out2.exists() and not os.path.exists(str(out2) + ".partial")
