"""Image decoding (lib/image/decode.c) against PIL, bad-file handling, and the folder scan
(lib/data/scan.c), all through build/tests/tools/decode_tool on freshly generated files.

PIL (Debian's python3-pil) links the same libjpeg-turbo, so JPEG pixels must match exactly. Where
exact equality with PIL is not expected, the test says why and what it asserts instead:
- 16-bit PNG: we scale with rounding, round(v * 255 / 65535); PIL keeps the high byte of 16-bit
  RGB(A) (v >> 8) and clips 16-bit grey to 0..255. We assert our exact formula, and
  |ours - PIL| <= 1 for 16-bit RGB.
- CMYK JPEG: we reproduce PIL's Adobe-inverted CMYK -> RGB formula, so it is exact too.
"""
import os
import struct
import subprocess
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import as_nobody, run, tool

SIZES = [(1, 1), (1, 7), (7, 1), (333, 217)]  # (w, h)


# ------------------------------------------------------------------------------------ helpers

def decode_tool():
    return tool("decode_tool")


def read_ppm(path):
    data = open(path, "rb").read()
    parts = data.split(maxsplit=4)
    assert parts[0] == b"P6" and parts[3] == b"255"
    w, h = int(parts[1]), int(parts[2])
    pix = data[len(data) - w * h * 3:]
    return np.frombuffer(pix, np.uint8).reshape(h, w, 3)


def decode(path, tmp, max_pixels=None):
    """Our decode of path as an (h, w, 3) array; raises AssertionError with stderr on failure."""
    out = tmp / (os.path.basename(str(path)) + ".ppm")
    args = [decode_tool()]
    if max_pixels is not None:
        args += ["--max-pixels", max_pixels]
    run(args + [path, out])
    return read_ppm(out)


def decode_fails(path, tmp, max_pixels=None):
    """Runs the tool on a file that must be rejected; returns its stderr."""
    args = [decode_tool()]
    if max_pixels is not None:
        args += ["--max-pixels", max_pixels]
    r = run(args + [path, tmp / "never.ppm"], check=False, timeout=30)
    assert r.returncode == 1, f"exit {r.returncode}, stderr: {r.stderr}"
    assert not (tmp / "never.ppm").exists()
    assert "error:" in r.stderr
    return r.stderr


def pil_rgb(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def rand_rgb(rng, w, h, smooth=True):
    """Random colours; smooth images (noise on a gradient) look more like photos to the codec."""
    if not smooth:
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // max(w, 1), y * 255 // max(h, 1), (x + y) % 256], -1)
    noise = rng.integers(-40, 41, (h, w, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def assert_same(ours, ref, what):
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} vs {ref.shape}"
    diff = np.abs(ours.astype(int) - ref.astype(int))
    assert diff.max() == 0, f"{what}: {np.count_nonzero(diff)} values differ, max {diff.max()}"


@pytest.fixture
def rng():
    return np.random.default_rng()  # fresh inputs every run


# --------------------------------------------------------------- a minimal PNG writer (zlib)

ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
         (0, 1, 1, 2)]  # (x0, y0, dx, dy)


def png_chunk(tag, body):
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


def pack_rows(samples, depth):
    """samples (h, w*channels) of ints -> raw scanline bytes (without the filter byte)."""
    if depth == 16:
        return [row.astype(">u2").tobytes() for row in samples]
    if depth == 8:
        return [row.astype(np.uint8).tobytes() for row in samples]
    per = 8 // depth
    rows = []
    for row in samples:
        pad = (-len(row)) % per
        r = np.concatenate([row, np.zeros(pad, int)]).reshape(-1, per)
        shifts = np.arange(per - 1, -1, -1) * depth
        rows.append((r << shifts).sum(1).astype(np.uint8).tobytes())
    return rows


def write_png(path, samples, color_type, depth, interlace=False, plte=None, trns=None):
    """samples (h, w, channels) ints. Filter 0 on every row; Adam7 when interlace."""
    h, w, c = samples.shape
    raw = b""
    passes = ADAM7 if interlace else [(0, 0, 1, 1)]
    for x0, y0, dx, dy in passes:
        sub = samples[y0::dy, x0::dx]
        if sub.shape[0] == 0 or sub.shape[1] == 0:
            continue
        for row in pack_rows(sub.reshape(sub.shape[0], -1), depth):
            raw += b"\x00" + row
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 1 if interlace else 0)
    data = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
    if plte is not None:
        data += png_chunk(b"PLTE", bytes(np.asarray(plte, np.uint8).ravel()))
    if trns is not None:
        data += png_chunk(b"tRNS", trns)
    data += png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b"")
    open(path, "wb").write(data)


def scale16(v):
    """What we promise for 16-bit samples: round(v * 255 / 65535)."""
    return ((v.astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8)


# ------------------------------------------------------------------------------------ JPEG

@pytest.mark.parametrize("w,h", SIZES)
@pytest.mark.parametrize("quality", [50, 90, 100])
@pytest.mark.parametrize("subsampling", [0, 1, 2])  # 4:4:4, 4:2:2, 4:2:0
def test_jpeg_rgb_matches_pil(tmp, rng, w, h, quality, subsampling):
    f = tmp / "a.jpg"
    Image.fromarray(rand_rgb(rng, w, h)).save(f, quality=quality, subsampling=subsampling)
    assert_same(decode(f, tmp), pil_rgb(f), f"{w}x{h} q{quality} ss{subsampling}")


@pytest.mark.parametrize("w,h", SIZES)
def test_jpeg_progressive_matches_pil(tmp, rng, w, h):
    f = tmp / "p.jpg"
    Image.fromarray(rand_rgb(rng, w, h)).save(f, quality=85, progressive=True)
    assert_same(decode(f, tmp), pil_rgb(f), "progressive")


@pytest.mark.parametrize("w,h", SIZES)
def test_jpeg_grey_matches_pil(tmp, rng, w, h):
    f = tmp / "g.jpg"
    Image.fromarray(rand_rgb(rng, w, h)[:, :, 0], "L").save(f, quality=90)
    ours = decode(f, tmp)
    assert_same(ours, pil_rgb(f), "grey")
    assert (ours[:, :, 0] == ours[:, :, 1]).all() and (ours[:, :, 1] == ours[:, :, 2]).all()


@pytest.mark.parametrize("w,h", SIZES)
def test_jpeg_cmyk_matches_pil(tmp, rng, w, h):
    # PIL writes CMYK JPEGs with an Adobe marker and inverted samples and reads them back the same
    # way; our CMYK -> RGB uses PIL's integer formula, so equality is exact.
    f = tmp / "c.jpg"
    cmyk = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    Image.fromarray(cmyk, "CMYK").save(f, quality=95)
    assert_same(decode(f, tmp), pil_rgb(f), "cmyk")


def test_jpeg_probe(tmp, rng):
    f = tmp / "a.jpg"
    Image.fromarray(rand_rgb(rng, 333, 217)).save(f)
    assert run([decode_tool(), "--probe", f]).stdout.split() == ["333", "217"]


def test_jpeg_extraneous_bytes_still_decode(tmp, rng):
    # Junk before EOI makes libjpeg warn "extraneous bytes before marker"; the pixels are intact,
    # so the file must not be lost.
    f = tmp / "x.jpg"
    Image.fromarray(rand_rgb(rng, 64, 48)).save(f, quality=90)
    data = open(f, "rb").read()
    assert data.endswith(b"\xff\xd9")
    open(f, "wb").write(data[:-2] + b"\x00" * 32 + b"\xff\xd9")
    assert_same(decode(f, tmp), pil_rgb(f), "extraneous bytes before EOI")
    sof = data.index(b"\xff\xc0")
    open(f, "wb").write(data[:sof] + b"\x12\x00\x34" + data[sof:])
    assert_same(decode(f, tmp), pil_rgb(f), "extraneous bytes before SOF")
    # libjpeg reports only the first warning: truncation behind a harmless one is still caught
    cut = data[:sof] + b"\x12\x00\x34" + data[sof:len(data) // 2]
    open(f, "wb").write(cut)
    assert "truncated JPEG data" in decode_fails(f, tmp)


# ------------------------------------------------------------------------------------- PNG

@pytest.mark.parametrize("w,h", SIZES)
@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "1"])
def test_png_pil_modes_match_pil(tmp, rng, w, h, mode):
    f = tmp / "a.png"
    rgba = np.concatenate([rand_rgb(rng, w, h, smooth=False),
                           rng.integers(0, 256, (h, w, 1), dtype=np.uint8)], -1)
    Image.fromarray(rgba, "RGBA").convert(mode).save(f)
    with Image.open(f) as im:
        assert im.mode == mode
    assert_same(decode(f, tmp), pil_rgb(f), mode)  # alpha is dropped, not composited


@pytest.mark.filterwarnings("ignore:Palette images with Transparency")
@pytest.mark.parametrize("w,h", SIZES)
def test_png_palette_with_transparency(tmp, rng, w, h):
    f = tmp / "p.png"
    idx = rng.integers(0, 16, (h, w), dtype=np.uint8)
    im = Image.fromarray(idx, "P")
    im.putpalette(list(rng.integers(0, 256, 48)))
    im.save(f, transparency=bytes(rng.integers(0, 256, 16, dtype=np.uint8)))
    with Image.open(f) as chk:
        assert chk.mode == "P" and "transparency" in chk.info
    assert_same(decode(f, tmp), pil_rgb(f), "palette+tRNS")  # colours kept, alpha dropped


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_png_low_bit_grey_and_palette(tmp, rng, depth):
    h, w = 13, 29  # rows that end mid-byte
    v = rng.integers(0, 1 << depth, (h, w, 1))
    f = tmp / "g.png"
    write_png(f, v, 0, depth)
    grey = (v[:, :, 0] * (255 // ((1 << depth) - 1))).astype(np.uint8)
    assert_same(decode(f, tmp), np.repeat(grey[:, :, None], 3, 2), f"grey{depth}")
    assert_same(decode(f, tmp), pil_rgb(f), f"grey{depth} vs PIL")
    pal = rng.integers(0, 256, (1 << depth, 3))
    write_png(f, v, 3, depth, plte=pal)
    assert_same(decode(f, tmp), pal[v[:, :, 0]].astype(np.uint8), f"palette{depth}")


@pytest.mark.parametrize("w,h", SIZES)
def test_png_16bit_rgb(tmp, rng, w, h):
    # We round v/257 (png_set_scale_16); PIL keeps the high byte, v >> 8: they differ by at most 1
    # either way (0xFE00 -> 253 vs 254, 0x01FF -> 2 vs 1).
    v = rng.integers(0, 65536, (h, w, 3))
    f = tmp / "rgb16.png"
    write_png(f, v, 2, 16)
    ours = decode(f, tmp)
    assert_same(ours, scale16(v), "16-bit RGB vs round(v*255/65535)")
    d = ours.astype(int) - pil_rgb(f).astype(int)
    assert np.abs(d).max() <= 1


@pytest.mark.parametrize("color_type,channels", [(4, 2), (6, 4)])
def test_png_16bit_with_alpha(tmp, rng, color_type, channels):
    v = rng.integers(0, 65536, (9, 11, channels))
    f = tmp / "a16.png"
    write_png(f, v, color_type, 16)
    col = scale16(v[:, :, :channels - 1])
    expect = np.repeat(col, 3, 2) if channels == 2 else col
    assert_same(decode(f, tmp), expect, f"16-bit type {color_type}")


@pytest.mark.parametrize("w,h", SIZES)
def test_png_16bit_grey(tmp, rng, w, h):
    # PIL opens this as mode I and clips to 0..255 on convert("RGB"); we scale instead, so the
    # comparison is with our formula, not with PIL.
    v = rng.integers(0, 65536, (h, w), dtype=np.uint16)
    f = tmp / "i16.png"
    Image.fromarray(v, "I;16").save(f)
    with Image.open(f) as im:
        assert im.mode.startswith("I")
    assert_same(decode(f, tmp), np.repeat(scale16(v)[:, :, None], 3, 2), "16-bit grey")


@pytest.mark.parametrize("w,h", SIZES + [(8, 8), (9, 10)])
def test_png_interlaced(tmp, rng, w, h):
    v = rand_rgb(rng, w, h, smooth=False)
    f = tmp / "adam7.png"
    write_png(f, v.astype(int), 2, 8, interlace=True)
    assert_same(pil_rgb(f), v, "PIL reads our interlaced test file")  # checks the writer
    assert_same(decode(f, tmp), v, "interlaced RGB")
    g = rng.integers(0, 2, (h, w, 1))
    write_png(f, g, 0, 1, interlace=True)
    assert_same(decode(f, tmp), np.repeat((g * 255).astype(np.uint8), 3, 2), "interlaced 1-bit")


def test_png_probe(tmp, rng):
    f = tmp / "a.png"
    Image.fromarray(rand_rgb(rng, 7, 1)).save(f)
    assert run([decode_tool(), "--probe", f]).stdout.split() == ["7", "1"]


def test_png_write_round_trip(tmp, rng):
    v = rand_rgb(rng, 333, 217, smooth=False)
    ppm, png = tmp / "in.ppm", tmp / "out.png"
    Image.fromarray(v).save(ppm)
    run([decode_tool(), "--write-png", ppm, png])
    with Image.open(png) as im:
        assert im.format == "PNG" and im.mode == "RGB"
        assert_same(np.asarray(im), v, "lt_png_write read by PIL")


def test_format_from_bytes_not_name(tmp, rng):
    f = tmp / "really_a_png.jpg"
    Image.fromarray(rand_rgb(rng, 33, 21)).save(f, format="PNG")
    assert_same(decode(f, tmp), pil_rgb(f), "PNG named .jpg")
    g = tmp / "really_a_jpeg.png"
    Image.fromarray(rand_rgb(rng, 33, 21)).save(g, format="JPEG")
    assert_same(decode(g, tmp), pil_rgb(g), "JPEG named .png")


# ------------------------------------------------------------------------------- bad files

def jpeg_bytes(rng, w=333, h=217, **kw):
    import io
    b = io.BytesIO()
    Image.fromarray(rand_rgb(rng, w, h)).save(b, format="JPEG", **kw)
    return b.getvalue()


def png_bytes(rng, w=333, h=217):
    import io
    b = io.BytesIO()
    Image.fromarray(rand_rgb(rng, w, h, smooth=False)).save(b, format="PNG")
    return b.getvalue()


@pytest.mark.parametrize("progressive", [False, True])
def test_truncated_jpeg(tmp, rng, progressive):
    data = jpeg_bytes(rng, progressive=progressive)
    f = tmp / "cut.jpg"
    open(f, "wb").write(data[:len(data) // 2])
    assert "truncated JPEG data" in decode_fails(f, tmp)


def test_truncated_png(tmp, rng):
    data = png_bytes(rng)
    f = tmp / "cut.png"
    open(f, "wb").write(data[:len(data) // 2])
    assert "truncated PNG data" in decode_fails(f, tmp)
    open(f, "wb").write(data[:20])
    assert "truncated PNG data" in decode_fails(f, tmp)
    r = run([decode_tool(), "--probe", f], check=False)
    assert r.returncode == 1 and "truncated PNG header" in r.stderr


def test_png_crc_error(tmp, rng):
    data = bytearray(png_bytes(rng))
    i = data.index(b"IDAT") + 4 + 100
    data[i] ^= 0xFF
    f = tmp / "crc.png"
    open(f, "wb").write(bytes(data))
    err = decode_fails(f, tmp)
    assert "corrupt PNG data" in err and "CRC" in err


def test_empty_file(tmp):
    f = tmp / "empty.jpg"
    open(f, "wb").close()
    assert "empty file" in decode_fails(f, tmp)


def test_random_bytes(tmp, rng):
    f = tmp / "noise.jpg"
    open(f, "wb").write(b"\x00" + bytes(rng.integers(0, 256, 5000, dtype=np.uint8)))
    assert "not a JPEG or PNG file" in decode_fails(f, tmp)


def test_header_only_jpeg(tmp, rng):
    data = jpeg_bytes(rng)
    sos = data.index(b"\xff\xda")
    f = tmp / "head.jpg"
    open(f, "wb").write(data[:sos])
    assert "truncated JPEG data" in decode_fails(f, tmp)
    # the header alone still gives the size
    assert run([decode_tool(), "--probe", f]).stdout.split() == ["333", "217"]
    open(f, "wb").write(data[:10])
    assert "truncated JPEG header" in decode_fails(f, tmp)


def run_limited(args):
    """Runs the tool with 1 GB of address space: a decoder that allocated for the declared size
    (30 GB or 12 GB here) would fail differently or crash."""
    cmd = "ulimit -v 1000000; exec " + " ".join(f"'{a}'" for a in args)
    t0 = time.monotonic()
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=30)
    return r, time.monotonic() - t0


def test_huge_png_header_fails_fast(tmp):
    ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    data = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) +
            png_chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + png_chunk(b"IEND", b""))
    f = tmp / "bomb.png"
    open(f, "wb").write(data)
    r, dt = run_limited([decode_tool(), f, tmp / "never.ppm"])
    assert r.returncode == 1, r.stderr
    assert "image too large: 100000x100000 pixels exceeds --max-pixels 268435456" in r.stderr
    assert dt < 5
    assert run([decode_tool(), "--probe", f]).stdout.split() == ["100000", "100000"]


def test_huge_jpeg_header_fails_fast(tmp, rng):
    data = bytearray(jpeg_bytes(rng, 16, 16))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 65000, 65000)  # height, width
    f = tmp / "bomb.jpg"
    open(f, "wb").write(bytes(data))
    r, dt = run_limited([decode_tool(), f, tmp / "never.ppm"])
    assert r.returncode == 1, r.stderr
    assert "image too large: 65000x65000 pixels" in r.stderr
    assert dt < 5


def test_max_pixels_option(tmp, rng):
    f = tmp / "a.jpg"
    open(f, "wb").write(jpeg_bytes(rng, 333, 217))
    err = decode_fails(f, tmp, max_pixels=333 * 217 - 1)
    assert f"image too large: 333x217 pixels exceeds --max-pixels {333 * 217 - 1}" in err
    decode(f, tmp, max_pixels=333 * 217)  # exactly at the limit is fine
    g = tmp / "a.png"
    open(g, "wb").write(png_bytes(rng, 333, 217))
    assert "333x217" in decode_fails(g, tmp, max_pixels=1000)


# ------------------------------------------------------------------------------------ scan

def scan(root, check=True):
    r = subprocess.run([decode_tool(), "--scan", root], capture_output=True, timeout=60)
    if check:
        assert r.returncode == 0, r.stderr
    return r, [p for p in r.stdout.split(b"\n") if p]


def touch(path, data=b"x"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def test_scan_tree(tmp):
    root = tmp / "data"
    images = ["a.jpg", "B.JPG", "c.Png", "d.jpeg", "e.JPEG", "sub/x.png", "sub/deeper/y.jpg",
              "with space/an image.jpg", "ünïcödé/ß.png", ".hidden.jpg", ".hiddendir/z.png",
              "dir.jpg/inside.jpg", "Z.jpg", "sub.jpg"]
    others = ["notes.txt", "jpg", "x.jpg.txt", "sub/readme", "png", ".jpg", "sub/deeper/x.gif"]
    for p in images + others:
        touch(os.path.join(str(root), p))
    os.mkdir(root / "empty")
    os.symlink("..", root / "sub" / "loop")                  # cycle back to the root
    os.symlink(".", root / "sub" / "deeper" / "self")         # cycle onto itself
    os.symlink("sub/x.png", root / "link.png")               # symlink to a file: listed
    os.symlink("missing.jpg", root / "dangling.jpg")          # dangling: warned, skipped
    r, got = scan(root)
    expect = sorted(p.encode() for p in images + ["link.png"])
    assert got == expect
    assert b"dangling.jpg" in r.stderr
    assert [p.decode() for p in got] == sorted([p.decode() for p in got],
                                                key=lambda s: s.encode())


def test_scan_symlinked_dir_listed_once(tmp):
    root = tmp / "data"
    touch(str(root / "real" / "a.jpg"))
    os.symlink("real", root / "alias")   # second path to the same folder
    other = tmp / "outside"
    touch(str(other / "o.png"))
    os.symlink(str(other), root / "ext")  # folder outside the root: followed
    _, got = scan(root)
    assert got == [b"alias/a.jpg", b"ext/o.png"]  # 'alias' sorts first, so it is met first


def test_scan_many_files_sorted(tmp, rng):
    root = tmp / "data"
    names = {f"d{rng.integers(0, 5)}/{rng.integers(0, 10**6)}.{rng.choice(['jpg', 'PNG'])}"
             for _ in range(300)}
    for p in names:
        touch(os.path.join(str(root), p))
    _, got = scan(root)
    assert got == sorted(p.encode() for p in names)


def test_scan_root_errors(tmp):
    r, _ = scan(tmp / "nope", check=False)
    assert r.returncode == 1 and b"does not exist" in r.stderr and b"nope" in r.stderr
    touch(str(tmp / "file.jpg"))
    r, _ = scan(tmp / "file.jpg", check=False)
    assert r.returncode == 1 and b"not a directory" in r.stderr


def test_scan_unreadable_subdir_warns(tmp):
    import shutil
    import tempfile
    # root ignores permissions, so the test drops to nobody when run as root
    base = tempfile.mkdtemp(prefix="lt-scan-")
    try:
        os.chmod(base, 0o755)
        root = os.path.join(base, "data")
        touch(os.path.join(root, "ok.jpg"))
        touch(os.path.join(root, "locked", "secret.jpg"))
        for d, _, _ in os.walk(root):
            os.chmod(d, 0o755)
        os.chmod(os.path.join(root, "locked"), 0o000)
        args = as_nobody([decode_tool(), "--scan", root])
        r = subprocess.run(args, capture_output=True, timeout=60)
        if r.returncode != 0 and b"ermission denied" in r.stderr and b"locked" not in r.stderr:
            pytest.skip("nobody cannot run the tool from this checkout")
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == [b"ok.jpg"]
        assert b"locked" in r.stderr and b"Permission denied" in r.stderr
    finally:
        os.chmod(os.path.join(base, "data", "locked"), 0o755)
        shutil.rmtree(base)
