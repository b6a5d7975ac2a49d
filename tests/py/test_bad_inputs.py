"""The bad-input matrix of issue 4, through the two tools as users run them (the decoder, the
safetensors reader and the cache reader on their own are tested in test_decode.py,
test_safetensors.py and test_cache.py; this file does not repeat those).

Each case asserts the exact behaviour: an unusable image costs only itself (exit 0, one warning
naming the file and why, listed under /skipped, every valid image kept); a bad teacher, cache or
option is exit 1 (runtime) or 2 (usage) with a message naming the file or option and the problem;
never a signal, never a complete-looking output."""
import io
import json
import os
import shutil
import struct
import subprocess
import tempfile
import zlib

import h5py
import numpy as np
import pytest
from PIL import Image

from conftest import PLUGIN_DIR, ROOT, as_nobody, cache_text, mounted_tmpfs, run
from embed_fixtures import lt_embed, rand_img, tiny_teacher
from train_fixtures import lt_train

os.environ["HDF5_PLUGIN_PATH"] = PLUGIN_DIR

EMBED_FAST = ["--views", "1", "--image-size", "28", "--threads", "2", "--no-mixup"]


def no_signal(r):
    assert r.returncode >= 0, f"killed by signal {-r.returncode}\n{r.stderr}"


def cache_paths(cache):
    with h5py.File(cache, "r") as f:
        paths = [p.decode() for p in cache_text(f, "images/path")]
        sk = [p.decode() for p in cache_text(f, "skipped/path")]
        why = [p.decode() for p in cache_text(f, "skipped/reason")]
        size = list(zip(f["images/width"][:].tolist(), f["images/height"][:].tolist()))
    return paths, dict(zip(sk, why)), dict(zip(paths, size))


def jpeg_bytes(img, **kw):
    b = io.BytesIO()
    img.save(b, "JPEG", **kw)
    return b.getvalue()


def png_bytes(img, **kw):
    b = io.BytesIO()
    img.save(b, "PNG", **kw)
    return b.getvalue()


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def raw_png(w, h, depth, ctype, rows, extra=b""):
    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 0)
    raw = b"".join(b"\x00" + r for r in rows)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra +
            png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    d = tmp_path_factory.mktemp("teacher")
    return tiny_teacher(str(d / "t.safetensors"), dim=64, depth=1, grid=2)


# ------------------------------------------------------------------ images through lt-embed

def odd_images(root):
    """Valid odd images ({rel: (w, h)}) and unusable ones ({rel: reason fragment})."""
    rng = np.random.default_rng(11)
    valid, broken = {}, {}

    def put(rel, data):
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)

    def ok(rel, data, w, h):
        put(rel, data)
        valid[rel] = (w, h)

    def bad(rel, data, why):
        put(rel, data)
        broken[rel] = why

    # colour types and depths
    ok("kinds/cmyk.jpg", jpeg_bytes(rand_img(rng, 20, 24).convert("CMYK")), 20, 24)
    ok("kinds/grey.jpg", jpeg_bytes(rand_img(rng, 11, 7, "L")), 11, 7)
    ok("kinds/progressive.jpg", jpeg_bytes(rand_img(rng, 30, 20), progressive=True), 30, 20)
    ok("kinds/palette_trns.png",
       png_bytes(rand_img(rng, 9, 9).convert("P", palette=Image.ADAPTIVE, colors=16),
                 transparency=3), 9, 9)
    ok("kinds/rgba.png", png_bytes(rand_img(rng, 8, 6, "RGBA")), 8, 6)
    ok("kinds/la.png", png_bytes(rand_img(rng, 6, 8, "LA")), 6, 8)
    ok("kinds/bilevel.png", png_bytes(rand_img(rng, 13, 5, "1")), 13, 5)
    ok("kinds/grey16.png", raw_png(5, 4, 16, 0, [rng.bytes(10) for _ in range(4)]), 5, 4)
    ok("kinds/rgba16.png", raw_png(3, 5, 16, 6, [rng.bytes(24) for _ in range(5)]), 3, 5)
    ok("kinds/la16.png", raw_png(4, 3, 16, 4, [rng.bytes(16) for _ in range(3)]), 4, 3)
    ok("kinds/grey4.png", raw_png(7, 3, 4, 0, [rng.bytes(4) for _ in range(3)]), 7, 3)
    # 1x1
    ok("tiny/1x1.jpg", jpeg_bytes(rand_img(rng, 1, 1)), 1, 1)
    ok("tiny/1x1_grey.png", png_bytes(rand_img(rng, 1, 1, "L")), 1, 1)
    ok("tiny/1x1_palette.png", png_bytes(rand_img(rng, 1, 1).convert("P")), 1, 1)
    # names: spaces, non-ASCII, misnamed (the bytes decide)
    ok("names/with  two spaces .jpg", jpeg_bytes(rand_img(rng, 5, 5)), 5, 5)
    ok("names/日本語 ünï/çödé.png", png_bytes(rand_img(rng, 4, 4)), 4, 4)
    ok("names/jpeg named.png", jpeg_bytes(rand_img(rng, 6, 4)), 6, 4)
    ok("names/png named.JPEG", png_bytes(rand_img(rng, 4, 6)), 4, 6)
    # unusable: each costs only itself
    full = jpeg_bytes(rand_img(rng, 40, 30))
    bad("bad/header_only.jpg", full[: full.index(b"\xff\xda")],
        "truncated JPEG data (the file ends before the image data)")
    bad("bad/soi_only.jpg", b"\xff\xd8\xff", "truncated JPEG header")
    p = png_bytes(rand_img(rng, 10, 10))
    bad("bad/header_only.png", p[:33], "truncated PNG data")
    bad("bad/signature_only.png", p[:8], "truncated PNG data")
    bad("bad/text named.jpg", b"hello, I am not an image\n", "not a JPEG or PNG file")
    bad("bad/gif named.png", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "not a JPEG or PNG file")
    bad("bad/empty.jpeg", b"", "empty file")
    # decompression bombs: huge declared size, tiny file
    bad("bomb/huge.png", raw_png(100000, 100000, 8, 2, [b"\x00" * 3]),
        "image too large: 100000x100000 pixels exceeds --max-pixels")
    j = bytearray(jpeg_bytes(rand_img(rng, 16, 16)))
    sof = j.index(b"\xff\xc0")
    j[sof + 5:sof + 9] = struct.pack(">HH", 65000, 65000)
    bad("bomb/huge.jpg", bytes(j), "image too large: 65000x65000 pixels exceeds --max-pixels")
    # not images at all, not scanned
    put("notes.txt", b"text")
    put("kinds/image.gif", b"GIF89a")
    return valid, broken


@pytest.fixture(scope="module")
def odd_run(tmp_path_factory, teacher):
    d = tmp_path_factory.mktemp("odd")
    data = str(d / "data")
    valid, broken = odd_images(data)
    # a symlink cycle (a folder linking to its ancestor, and to itself) and a dangling link
    os.symlink("..", os.path.join(data, "kinds", "loop"))
    os.symlink(".", os.path.join(data, "names", "self"))
    os.symlink("does-not-exist.jpg", os.path.join(data, "dangling.jpg"))
    cache = str(d / "c.h5")
    r = run([lt_embed(), "--teacher", teacher, *EMBED_FAST, data, cache], check=False,
            timeout=300)
    return r, cache, valid, broken


def test_odd_images_exit_0_and_nothing_valid_lost(odd_run):
    r, cache, valid, broken = odd_run
    no_signal(r)
    assert r.returncode == 0, r.stderr
    paths, skipped, sizes = cache_paths(cache)
    assert paths == sorted(valid, key=lambda s: s.encode()), paths
    for rel, wh in valid.items():
        assert sizes[rel] == wh, (rel, sizes[rel], wh)


@pytest.mark.parametrize("rel", [
    "bad/header_only.jpg", "bad/soi_only.jpg", "bad/header_only.png", "bad/signature_only.png",
    "bad/text named.jpg", "bad/gif named.png", "bad/empty.jpeg", "bomb/huge.png",
    "bomb/huge.jpg"])
def test_unusable_image_is_one_warning(odd_run, rel):
    r, cache, valid, broken = odd_run
    assert r.returncode == 0
    lines = [l for l in r.stderr.splitlines() if rel in l]
    assert len(lines) == 1, (rel, r.stderr)
    assert lines[0].startswith("lt-embed: warning: ") and broken[rel] in lines[0], lines[0]
    _, skipped, _ = cache_paths(cache)
    assert rel in skipped and broken[rel] in skipped[rel], skipped.get(rel)


def test_symlink_cycle_terminates_and_lists_each_image_once(odd_run):
    r, cache, valid, broken = odd_run
    paths, skipped, _ = cache_paths(cache)
    assert not any("loop" in p or "self" in p for p in paths), paths
    assert len(paths) == len(set(paths)) == len(valid)
    # the dangling link is reported, not fatal
    assert "dangling.jpg" in r.stderr


def test_warning_count_matches_skipped(odd_run):
    r, cache, valid, broken = odd_run
    _, skipped, _ = cache_paths(cache)
    assert sorted(skipped) == sorted(broken)
    # one warning per unusable file plus the dangling symlink, nothing else
    warnings = [l for l in r.stderr.splitlines() if "warning:" in l]
    assert len(warnings) == len(broken) + 1, warnings


def test_max_pixels_skips_only_the_large(teacher, tmp_path):
    rng = np.random.default_rng(3)
    data = tmp_path / "data"
    data.mkdir()
    (data / "small.png").write_bytes(png_bytes(rand_img(rng, 10, 10)))
    (data / "large.jpg").write_bytes(jpeg_bytes(rand_img(rng, 40, 30)))
    cache = str(tmp_path / "c.h5")
    r = run([lt_embed(), "--teacher", teacher, *EMBED_FAST, "--max-pixels", "1000", str(data),
             cache], check=False)
    assert r.returncode == 0, r.stderr
    assert "large.jpg" in r.stderr and "40x30 pixels exceeds --max-pixels 1000" in r.stderr
    paths, skipped, _ = cache_paths(cache)
    assert paths == ["small.png"] and list(skipped) == ["large.jpg"]


def test_only_unusable_images_is_an_error(teacher, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.jpg").write_bytes(b"")
    (data / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    cache = tmp_path / "c.h5"
    r = run([lt_embed(), "--teacher", teacher, *EMBED_FAST, str(data), str(cache)], check=False)
    no_signal(r)
    assert r.returncode == 1, r.stderr
    assert "lt-embed: error:" in r.stderr and "a.jpg" in r.stderr and "b.png" in r.stderr
    assert not cache.exists()


def test_non_utf8_file_name(teacher, tmp_path):
    """A name that is not valid UTF-8 (a Latin-1 byte): kept, stored as its bytes."""
    rng = np.random.default_rng(5)
    data = tmp_path / "data"
    data.mkdir()
    (data / "ok.png").write_bytes(png_bytes(rand_img(rng, 4, 4)))
    with open(os.path.join(os.fsencode(data), b"caf\xe9.png"), "wb") as f:
        f.write(png_bytes(rand_img(rng, 5, 5)))
    cache = str(tmp_path / "c.h5")
    r = run([lt_embed(), "--teacher", teacher, *EMBED_FAST, str(data), cache], check=False)
    no_signal(r)
    assert r.returncode == 0, r.stderr
    with h5py.File(cache, "r") as f:
        raw = cache_text(f, "images/path")
    assert sorted(raw) == [b"caf\xe9.png", b"ok.png"], raw


def test_unreadable_file_is_skipped(teacher):
    """Permission denied on one image: one warning naming it, the rest kept (run as nobody,
    since root reads everything)."""
    base = tempfile.mkdtemp(prefix="lt-perm-")
    try:
        os.chmod(base, 0o777)
        rng = np.random.default_rng(9)
        data = os.path.join(base, "data")
        os.makedirs(data)
        with open(os.path.join(data, "ok.png"), "wb") as f:
            f.write(png_bytes(rand_img(rng, 6, 6)))
        with open(os.path.join(data, "secret.jpg"), "wb") as f:
            f.write(jpeg_bytes(rand_img(rng, 6, 6)))
        os.chmod(os.path.join(data, "secret.jpg"), 0o000)
        os.chmod(data, 0o755)
        t = os.path.join(base, "t.safetensors")
        shutil.copy(teacher, t)
        os.chmod(t, 0o644)
        cache = os.path.join(base, "c.h5")
        r = subprocess.run(as_nobody([lt_embed(), "--teacher", t, *EMBED_FAST, data, cache]),
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0 and "ermission denied" in r.stderr and "secret" not in r.stderr:
            pytest.skip("nobody cannot run lt-embed from this checkout")
        no_signal(r)
        assert r.returncode == 0, r.stderr
        lines = [l for l in r.stderr.splitlines() if "secret.jpg" in l]
        assert len(lines) == 1 and "warning:" in lines[0] and "Permission denied" in lines[0], \
            r.stderr
        paths, skipped, _ = cache_paths(cache)
        assert paths == ["ok.png"] and list(skipped) == ["secret.jpg"]
    finally:
        shutil.rmtree(base, ignore_errors=True)


# ------------------------------------------------------------------ teacher files through lt-embed

def st_header(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def st_write(path, header, data, hlen=None):
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h) if hlen is None else hlen) + h + data)


def lie(kind, header, data):
    """A teacher whose header lies in one way; returns (header, data, hlen, message fragment)."""
    h = json.loads(json.dumps(header))
    name = "blocks.0.attn.qkv.weight"
    b, e = h[name]["data_offsets"]
    hlen = None
    if kind == "offsets_past_end":
        h[name]["data_offsets"] = [len(data) + 4096, len(data) + 4096 + (e - b)]
        why = "past the end of the data"
    elif kind == "overlapping":
        other = "blocks.0.attn.proj.weight"
        ob, oe = h[other]["data_offsets"]
        h[name]["data_offsets"] = [ob, ob + (e - b)]
        why = "overlap"
    elif kind == "wrong_dtype_size":
        h[name]["dtype"] = "F16"
        why = "dtype F16 and shape need"
    elif kind == "absurd_shape":
        h[name]["shape"] = [1 << 40, 1 << 40]
        why = "overflows"
    elif kind == "negative_shape":
        h[name]["shape"] = [-1, 64]
        why = "not a non-negative integer"
    elif kind == "wrong_shape":
        s = h[name]["shape"]
        h[name]["shape"] = [s[1], s[0]]
        why = "has shape"
    elif kind == "header_len_past_end":
        hlen = 1 << 40
        why = "header length"
    elif kind == "not_json":
        return None, None, None, "invalid JSON header"
    else:
        raise ValueError(kind)
    return h, data, hlen, why


def embed_with_teacher(teacher_path, tmp_path):
    rng = np.random.default_rng(2)
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "a.png").write_bytes(png_bytes(rand_img(rng, 8, 8)))
    cache = tmp_path / "c.h5"
    r = run([lt_embed(), "--teacher", teacher_path, *EMBED_FAST, str(data), str(cache)],
            check=False, timeout=120)
    no_signal(r)
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith("lt-embed: error: ") or "\nlt-embed: error: " in r.stderr, r.stderr
    assert str(teacher_path) in r.stderr, r.stderr
    assert not cache.exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith("c.h5")]
    return r.stderr


@pytest.mark.parametrize("kind", ["offsets_past_end", "overlapping", "wrong_dtype_size",
                                  "absurd_shape", "negative_shape", "wrong_shape",
                                  "header_len_past_end", "not_json"])
def test_teacher_lying_header(teacher, tmp_path, kind):
    header, data = st_header(teacher)
    bad = tmp_path / f"{kind}.safetensors"
    h, d, hlen, why = lie(kind, header, data)
    if h is None:
        with open(teacher, "rb") as f:
            raw = bytearray(f.read())
        raw[8:12] = b"{{{{"
        bad.write_bytes(bytes(raw))
    else:
        st_write(bad, h, d, hlen)
    err = embed_with_teacher(str(bad), tmp_path)
    assert why in err, err


@pytest.mark.parametrize("cut", [0, 7, 8, 100, "half", "minus1"])
def test_teacher_truncated(teacher, tmp_path, cut):
    with open(teacher, "rb") as f:
        raw = f.read()
    n = {"half": len(raw) // 2, "minus1": len(raw) - 1}.get(cut, cut)
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(raw[:n])
    err = embed_with_teacher(str(bad), tmp_path)
    assert any(w in err for w in ("truncated", "not a safetensors file", "shorter")), err


def test_teacher_random_bytes_with_plausible_length(teacher, tmp_path):
    """Random bytes after a header length that fits the file: a JSON error, not a crash."""
    rng = np.random.default_rng(1)
    body = rng.bytes(3000)
    bad = tmp_path / "noise.safetensors"
    bad.write_bytes(struct.pack("<Q", 1000) + body)
    err = embed_with_teacher(str(bad), tmp_path)
    assert "not a safetensors file" in err, err


@pytest.mark.parametrize("drop,needle", [
    ("cls_token", "not a DINOv2 checkpoint"),
    ("pos_embed", "pos_embed"),
    ("norm.bias", "norm.bias"),
    ("blocks.0.norm1.weight", "no transformer blocks"),
    ("blocks.0.mlp.fc2.weight", "blocks.0.mlp.fc2.weight"),
    ("blocks.0.attn.qkv.bias", "blocks.0.attn.qkv.bias"),
])
def test_teacher_missing_key(teacher, tmp_path, drop, needle):
    header, data = st_header(teacher)
    del header[drop]
    bad = tmp_path / "missing.safetensors"
    st_write(bad, header, data)
    err = embed_with_teacher(str(bad), tmp_path)
    assert needle in err, err


def test_teacher_huge_dim_missing_qkv_fails_before_allocating(tmp_path):
    """D = 65536 (1.7 MB of small tensors) without the qkv weights: the loader names the missing
    tensor instead of first allocating the 3·D² floats (51 GB) of the fused qkv buffer. Run with
    4 GB of address space, so the old order failed as 'out of memory'."""
    D = 65536
    tensors = [("cls_token", (1, 1, D)), ("pos_embed", (1, 2, D)),
               ("patch_embed.proj.weight", (D, 3, 1, 1)), ("patch_embed.proj.bias", (D,)),
               ("norm.weight", (D,)), ("norm.bias", (D,)),
               ("blocks.0.norm1.weight", (D,)), ("blocks.0.norm1.bias", (D,)),
               ("blocks.0.norm2.weight", (D,)), ("blocks.0.norm2.bias", (D,)),
               ("blocks.0.mlp.fc1.weight", (1, D))]
    header, off = {}, 0
    for name, shape in tensors:
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    bad = tmp_path / "huge.safetensors"
    st_write(bad, header, b"\0" * off)
    rng = np.random.default_rng(2)
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.png").write_bytes(png_bytes(rand_img(rng, 8, 8)))
    cmd = (f"ulimit -v 4000000; exec '{lt_embed()}' --teacher '{bad}' --threads 1 "
           f"--views 1 --image-size 28 '{data}' '{tmp_path / 'c.h5'}'")
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120)
    no_signal(r)
    assert r.returncode == 1, r.stderr
    assert f"{bad}: missing tensor 'blocks.0.attn.qkv.weight'" in r.stderr, r.stderr


def test_teacher_is_a_folder(tmp_path):
    (tmp_path / "dir.safetensors").mkdir()
    err = embed_with_teacher(str(tmp_path / "dir.safetensors"), tmp_path)
    assert "not a regular file" in err, err


# ------------------------------------------------------------------ numeric options

EMBED_BAD = [
    ("--views", "0"), ("--views", "-1"), ("--views", ""), ("--views", "1.0"),
    ("--views", "99999999999999999999"), ("--views", "100001"), ("--views", "0x10"),
    ("--views", "8 "), ("--views", " 8"), ("--views", "8k"),
    ("--image-size", "0"), ("--image-size", "4097"), ("--image-size", "nan"),
    ("--batch-size", "0"), ("--batch-size", "65537"), ("--batch-size", "-0x1"),
    ("--seed", "-1"), ("--seed", " -1"), ("--seed", "+-1"), ("--seed", "18446744073709551616"),
    ("--seed", "1.5"), ("--seed", ""),
    ("--threads", "-1"), ("--threads", "4097"),
    ("--zstd-level", "0"), ("--zstd-level", "20"), ("--zstd-level", "three"),
    ("--max-pixels", "0"), ("--max-pixels", "1099511627777"), ("--max-pixels", "1e6"),
    ("--hflip-p", "-0.1"), ("--hflip-p", "1.0001"), ("--hflip-p", "nan"), ("--hflip-p", "inf"),
    ("--hflip-p", ""), ("--hflip-p", "0.5x"),
    ("--jitter-p", "2"), ("--gray-p", "-1"),
    ("--crop-scale", "0,1"), ("--crop-scale", "0.5,1.5"), ("--crop-scale", "0.5,"),
    ("--crop-scale", ",0.5"), ("--crop-scale", "0.1,0.2,0.3"), ("--crop-scale", "nan,1"),
    ("--crop-ratio", "0,1"), ("--crop-ratio", "2,1"), ("--crop-ratio", "1,1e4"),
    ("--jitter", "0.4,0.4,0.2,0.6"), ("--jitter", "-0.1,0,0,0"), ("--jitter", "1,1,1"),
    ("--blur-sigma", "-1,1"), ("--blur-sigma", "2,1"), ("--blur-sigma", "0,101"),
    ("--mean", "0.5,0.5"), ("--mean", "1e400,0,0"), ("--std", "0.2,0.2,0"),
    ("--std", "0.2,0.2,-0.2"), ("--std", "a,b,c"),
]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("small")
    rng = np.random.default_rng(4)
    (d / "a.png").write_bytes(png_bytes(rand_img(rng, 8, 8)))
    return str(d)


@pytest.mark.parametrize("opt,val", EMBED_BAD)
def test_embed_numeric_option(teacher, small_data, tmp_path, opt, val):
    cache = tmp_path / "c.h5"
    r = run([lt_embed(), "--teacher", teacher, f"{opt}={val}", small_data, str(cache)],
            check=False, timeout=60)
    no_signal(r)
    assert r.returncode == 2, (opt, val, r.stderr)
    assert r.stderr.startswith(f"lt-embed: error: {opt}: "), r.stderr
    assert f"'{val}'" in r.stderr or "MIN must not exceed MAX" in r.stderr, r.stderr
    assert not cache.exists()


TRAIN_BAD = [
    ("--epochs", "0"), ("--epochs", "-1"), ("--epochs", "nan"), ("--epochs", "inf"),
    ("--epochs", "1e8"), ("--epochs", ""), ("--epochs", "ten"),
    ("--steps", "0"), ("--steps", "-5"), ("--steps", "1.5"), ("--steps", "1e3"),
    ("--batch-size", "0"), ("--batch-size", "65537"), ("--batch-size", " "),
    ("--lr", "0"), ("--lr", "-1e-3"), ("--lr", "1001"), ("--lr", "nan"),
    ("--momentum", "1"), ("--momentum", "-0.1"),
    ("--weight-decay", "-1"), ("--weight-decay", "11"),
    ("--warmup-epochs", "-1"), ("--warmup-epochs", "x"),
    ("--clip-grad", "-1"), ("--clip-grad", "1e10"),
    ("--temperature", "0"), ("--temperature", "101"), ("--temperature", "-0.07"),
    ("--queue-size", "0"), ("--queue-size", "-1"), ("--queue-size", "16777217"),
    ("--queue-size", "autox"), ("--queue-size", "1.5"),
    ("--seed", "-1"), ("--seed", " -2"), ("--seed", "x"),
    ("--threads", "-1"), ("--threads", "4097"),
    ("--workers", "-1"), ("--workers", "1025"),
    ("--checkpoint-every", "0"), ("--checkpoint-every", "-1"),
]


@pytest.fixture(scope="module")
def good_cache(tmp_path_factory, teacher, small_data):
    d = tmp_path_factory.mktemp("goodcache")
    rng = np.random.default_rng(6)
    data = d / "data"
    data.mkdir()
    for i in range(6):
        (data / f"i{i}.png").write_bytes(png_bytes(rand_img(rng, 20 + i, 18)))
    cache = str(d / "c.h5")
    run([lt_embed(), "--teacher", teacher, "--views", "2", "--image-size", "28", "--threads",
         "2", "-q", str(data), cache])
    return cache


@pytest.mark.parametrize("opt,val", TRAIN_BAD)
def test_train_numeric_option(good_cache, tmp_path, opt, val):
    out = tmp_path / "out"
    r = run([lt_train(), good_cache, "--out", str(out), f"{opt}={val}"], check=False, timeout=60)
    no_signal(r)
    assert r.returncode == 2, (opt, val, r.stderr)
    assert r.stderr.startswith(f"lt-train: error: {opt}: "), r.stderr
    assert f"'{val}'" in r.stderr, r.stderr
    assert not out.exists()


# ------------------------------------------------------------------ damaged caches through lt-train

def damage(src, dst, how):
    """Copies the cache and damages it one way; returns the message fragment lt-train must give."""
    shutil.copy(src, dst)
    if how == "truncated_half":
        with open(src, "rb") as f:
            raw = f.read()
        with open(dst, "wb") as f:
            f.write(raw[: len(raw) // 2])
        return "cannot open the HDF5 file"
    if how == "truncated_tail":
        with open(src, "rb") as f:
            raw = f.read()
        with open(dst, "wb") as f:
            f.write(raw[:-100])
        return ""
    if how == "empty":
        open(dst, "wb").close()
        return "not an HDF5 file"
    if how == "superblock_only":
        with open(src, "rb") as f:
            raw = f.read(96)
        with open(dst, "wb") as f:
            f.write(raw)
        return ""
    with h5py.File(dst, "r+") as f:
        if how == "version":
            f.attrs["version"] = np.int32(4)
            return "cache version 4, this lt reads version 3: re-run lt-embed"
        if how == "incomplete":  # what lt-embed leaves before it finishes
            del f.attrs["complete"]
            return "is not a finished lt cache (it has no 'complete' mark)"
        if how == "image_size_huge":
            f.attrs["image_size"] = np.int32(100000)
            return "image_size 100000"
        if how == "format":
            f.attrs["format"] = np.bytes_(b"not-lt")  # numpy bytes: a fixed-length string
            return "not an lt cache (format is 'not-lt'"
        if how == "format_vlen":
            f.attrs["format"] = "lt-cache"  # str: h5py writes a variable-length string
            return "attribute 'format' is a variable-length string"
        if how == "teacher_sha256_vlen":
            f.attrs["teacher_sha256"] = f.attrs["teacher_sha256"].decode()
            return "attribute 'teacher_sha256' is a variable-length string"
        if how == "tool_version_long":
            f.attrs["tool_version"] = np.bytes_(b"x" * 40)
            return "attribute 'tool_version' is not one string of at most 31 bytes"
        if how == "no_format":
            del f.attrs["format"]
            return "not an lt cache (no 'format' attribute)"
        if how == "embed_dim":
            f.attrs["embed_dim"] = np.int32(int(f.attrs["embed_dim"]) + 1)
            return "dataset embeddings has the wrong shape"
        if how == "num_samples":
            f.attrs["num_samples"] = np.int64(int(f.attrs["num_samples"]) + 1)
            return "num_samples"
        if how == "num_images_huge":
            f.attrs["num_images"] = np.int64(1 << 62)
            f.attrs["num_samples"] = np.int64(1 << 62)
            return "not a valid lt cache"
        if how == "embeddings_rows":
            e = f["embeddings"][:]
            del f["embeddings"]
            f.create_dataset("embeddings", data=e[:-1])
            return "dataset embeddings has the wrong shape"
        if how == "embeddings_type":
            e = f["embeddings"][:]
            del f["embeddings"]
            f.create_dataset("embeddings", data=e.astype(np.int16))
            return "dataset embeddings has the wrong type"
        if how == "samples_image_shape":
            s = f["samples/image"][:]
            del f["samples/image"]
            f.create_dataset("samples/image", data=s[:, :1])
            return "dataset samples/image has the wrong shape"
        if how == "no_lambda":
            del f["samples/lambda"]
            return "dataset samples/lambda is missing"
        if how == "paths_short":
            o = f["images/path_offset"][:]
            del f["images/path_offset"]
            f.create_dataset("images/path_offset", data=o[:-1])
            return "dataset images/path_offset has the wrong shape"
        if how == "paths_vlen":
            p = cache_text(f, "images/path")
            del f["images/path_bytes"]
            f.create_dataset("images/path_bytes", data=p, dtype=h5py.string_dtype())
            return "dataset images/path_bytes has the wrong type"
        if how == "path_offsets_past_bytes":
            f["images/path_offset"][-1] += 7
            return "images/path_offset ends at"
        if how == "path_offsets_decrease":
            f["images/path_offset"][1] = f["images/path_offset"][2] + 1
            return "images/path_offset decreases at entry 1"
        if how == "path_offsets_huge":
            f["images/path_offset"][-1] = 1 << 62
            return "images/path_offset: entry 5 is longer than 65536 bytes"
        if how == "path_nul":
            f["images/path_bytes"][0] = 0
            return "images/path_bytes: entry 0 is empty or holds a NUL byte"
        if how == "skipped_counts_differ":
            del f["skipped/reason_offset"]
            f.create_dataset("skipped/reason_offset", data=np.zeros(2, np.uint64))
            return "dataset skipped/reason_offset has the wrong shape"
        if how == "skipped_huge":  # a declared length, not stored: no allocation follows it
            del f["skipped/path_offset"]
            f.create_dataset("skipped/path_offset", shape=(1 << 40,), dtype=np.uint64,
                             chunks=(1024,))
            return "more than this"
        if how == "offsets_past_bytes":
            o = f["images/offset"][:]
            o[-1] = o[-1] + 10 ** 9
            f["images/offset"][:] = o
            return "/images/offset ends at"
        if how == "offsets_decrease":
            o = f["images/offset"][:]
            if len(o) > 2:
                o[1] = o[2] + 1
            f["images/offset"][:] = o
            return "/images/offset decreases"
    raise ValueError(how)


@pytest.mark.parametrize("how", [
    "truncated_half", "truncated_tail", "empty", "superblock_only", "version", "incomplete",
    "image_size_huge", "format",
    "format_vlen", "teacher_sha256_vlen", "tool_version_long", "no_format", "embed_dim",
    "num_samples", "num_images_huge", "embeddings_rows", "embeddings_type", "samples_image_shape",
    "no_lambda", "paths_short", "paths_vlen", "path_offsets_past_bytes", "path_offsets_decrease",
    "path_offsets_huge", "path_nul", "skipped_counts_differ", "skipped_huge",
    "offsets_past_bytes", "offsets_decrease"])
def test_damaged_cache(good_cache, tmp_path, how):
    bad = str(tmp_path / f"{how}.h5")
    needle = damage(good_cache, bad, how)
    out = tmp_path / "out"
    r = run([lt_train(), bad, "--out", str(out), "--steps", "1", "--batch-size", "2",
             "--threads", "2", "-q"], check=False, timeout=120)
    no_signal(r)
    assert r.returncode == 1, (how, r.stderr)
    assert f"lt-train: error: {bad}" in r.stderr, r.stderr
    assert needle in r.stderr, (needle, r.stderr)
    assert not (out / "student.safetensors").exists()


STRING_ATTRS = ("format", "embedding_dtype", "tool_version", "created", "teacher_file",
                "teacher_sha256")


def test_version_1_cache_is_refused(good_cache, tmp_path):
    """A cache as version 1 stored it (variable-length strings: the string attributes and
    /images/path, /skipped/path, /skipped/reason) is refused by its version number alone, before
    any variable-length string is read."""
    v1 = str(tmp_path / "v1.h5")
    shutil.copy(good_cache, v1)
    with h5py.File(v1, "r+") as f:
        f.attrs["version"] = np.int32(1)
        for k in STRING_ATTRS:
            value = f.attrs[k].decode()
            del f.attrs[k]
            f.attrs[k] = value  # str: a variable-length string
        for name in ("images/path", "skipped/path", "skipped/reason"):
            text = [t.decode() for t in cache_text(f, name)]
            del f[name + "_bytes"], f[name + "_offset"]
            f.create_dataset(name, data=np.array(text, dtype=object), dtype=h5py.string_dtype(),
                             maxshape=(None,), chunks=(64,))
        assert h5py.check_string_dtype(f["images/path"].dtype).length is None
    out = tmp_path / "out"
    r = run([lt_train(), v1, "--out", str(out), "--steps", "1", "-q"], check=False, timeout=60)
    no_signal(r)
    assert r.returncode == 1, r.stderr
    assert f"lt-train: error: {v1}: cache version 1, this lt reads version 3: re-run lt-embed" \
        in r.stderr, r.stderr
    assert not out.exists() or not (out / "student.safetensors").exists()


KNOWN_HDF5 = os.path.join(ROOT, "tests", "fuzz", "known-hdf5")


@pytest.mark.parametrize("name", sorted(os.listdir(KNOWN_HDF5)))
def test_known_hdf5_crashers_are_refused(tmp_path, name):
    """The damaged version-1 caches that crash or hang HDF5 1.10 when it reads their
    variable-length strings (tests/fuzz/README.md, "Known problems outside lt"): lt-train refuses
    each cleanly, naming it, since it never reads a variable-length string."""
    path = os.path.join(KNOWN_HDF5, name)
    out = tmp_path / "out"
    r = run([lt_train(), path, "--out", str(out), "--steps", "1", "-q"], check=False, timeout=60)
    no_signal(r)
    assert r.returncode in (1, 2), r.stderr
    assert f"lt-train: error: {path}" in r.stderr, r.stderr
    assert not (out / "student.safetensors").exists()


def test_cache_is_a_folder(tmp_path):
    (tmp_path / "c.h5").mkdir()
    r = run([lt_train(), str(tmp_path / "c.h5"), "--out", str(tmp_path / "out")], check=False)
    no_signal(r)
    assert r.returncode == 1 and "c.h5" in r.stderr and "not a regular file" in r.stderr, r.stderr


# ------------------------------------------------------------------ a full disk

@pytest.fixture
def small_tmpfs(tmp_path):
    yield from mounted_tmpfs(tmp_path / "full", "size=2m", "a full disk")


def test_full_disk_during_embed(teacher, small_tmpfs, tmp_path):
    """The cache stores the image bytes: 3 MB of incompressible PNGs cannot fit in 2 MB. The run
    must stop with exit 1 and a message naming the cache and the cause, leaving no CACHE."""
    rng = np.random.default_rng(8)
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        a = rng.integers(0, 256, (600, 600, 3), dtype=np.uint8)
        Image.fromarray(a).save(data / f"noise{i}.png", compress_level=0)
    cache = small_tmpfs / "c.h5"
    r = run([lt_embed(), "--teacher", teacher, *EMBED_FAST, str(data), str(cache)], check=False,
            timeout=300)
    no_signal(r)
    assert r.returncode == 1, r.stderr
    err = [l for l in r.stderr.splitlines() if l.startswith("lt-embed: error: ")]
    assert len(err) == 1, r.stderr
    assert str(cache) in err[0], err[0]
    assert "No space left on device" in err[0] or "disk full" in err[0] or \
        "write" in err[0], err[0]
    assert not cache.exists()


def test_full_disk_while_hdf5_writes_the_recipes(teacher, small_tmpfs, tmp_path):
    """The images fit in 2 MB but the recipes of 1500 views per image do not: HDF5 writes much of
    the file only when it is closed, and that failure must say the disk is full (not 'truncated
    or damaged?' from a later reopen)."""
    rng = np.random.default_rng(9)
    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(data / f"{i}.png")
    cache = small_tmpfs / "c.h5"
    r = run([lt_embed(), "--teacher", teacher, "--views", "1500", "--image-size", "28",
             "--dtype", "f32", "--threads", "2", "-q", str(data), str(cache)], check=False,
            timeout=300)
    no_signal(r)
    assert r.returncode == 1, r.stderr
    assert "disk is full" in r.stderr or "No space left on device" in r.stderr, r.stderr
    assert "damaged" not in r.stderr, r.stderr
    assert not cache.exists()
