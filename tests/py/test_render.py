"""View rendering (lib/image/render.c) and recipe drawing (lib/image/recipe.c) against PIL and
torchvision, on fresh random images (noise and smooth gradients, odd sizes, 1x1, tiny crops
upsampled), through tests/tools/render_tool.

References and tolerances (max abs difference in uint8 levels):
  crop + resize   PIL img.crop(box).resize((s, s), BILINEAR)           exact (0)
                  torchvision resized_crop(uint8 tensor, antialias=True) <= 1
                  (PIL's uint8 intermediate between the two passes vs torch's float)
  flip            numpy fliplr                                          exact
  brightness, contrast, saturation, hue
                  torchvision.transforms.functional.adjust_* on uint8 tensors: exact
                  (contrast: exact up to 256x256 views, <= 1 above, where torch's float32 sum of
                  the gray image stops being exact)
  grayscale       PIL convert("L")                                      exact
  Gaussian blur   torchvision gaussian_blur, kernel 2*ceil(3 sigma)+1   <= 1 (< 2% of values)
  whole pipeline  the composition of the references above               <= 1 (from the blur)
"""
import math
import os

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as F
from PIL import Image

from conftest import run, tool

IDENTITY = dict(flip=0, jitter=0, order=(0, 1, 2, 3), factors=(1, 1, 1, 0), gray=0, sigma=0.0)


def write_ppm(path, a):
    h, w, _ = a.shape
    with open(path, "wb") as f:
        f.write(b"P6\n%d %d\n255\n" % (w, h))
        f.write(np.ascontiguousarray(a, dtype=np.uint8).tobytes())


def read_ppm(path):
    data = open(path, "rb").read()
    magic, dims, maxv, pix = data.split(b"\n", 3)
    assert magic == b"P6" and maxv == b"255"
    w, h = map(int, dims.split())
    return np.frombuffer(pix, np.uint8).reshape(h, w, 3)


def f32(x):
    """The text form of x as float32 that strtof reads back to the same float."""
    return "%.9g" % np.float32(x)


def recipe_args(size, crop, flip, jitter, order, factors, gray, sigma):
    return [size, *crop, flip, jitter, *order, *[f32(f) for f in factors], gray, f32(sigma)]


def render(tmp, a, size, crop=None, env=None, **kw):
    """Renders image a (H, W, 3) uint8 with the given recipe fields; returns (size, size, 3)."""
    r = dict(IDENTITY)
    r.update(kw)
    if crop is None:
        crop = (0, 0, a.shape[1], a.shape[0])
    src, dst = tmp / "in.ppm", tmp / "out.ppm"
    write_ppm(src, a)
    run([tool("render_tool"), src, dst, *recipe_args(size, crop, **r)], env=env)
    return read_ppm(dst)


def noise(rng, h, w):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def gradient(rng, h, w):
    """A smooth image from a random formula (the cases that show rounding bias)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    yy /= max(h, 1)
    xx /= max(w, 1)
    p = rng.uniform(1, 8, 6)
    img = np.stack([128 + 127 * np.sin(p[0] * xx + p[1] * yy),
                    255 * xx * yy ** (p[2] / 4),
                    128 + 120 * np.cos(p[3] * yy - p[4] * xx + p[5])], -1)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def make(kind, rng, h, w):
    return noise(rng, h, w) if kind == "noise" else gradient(rng, h, w)


def to_t(a):
    return torch.from_numpy(np.array(a, dtype=np.uint8, order="C")).permute(2, 0, 1).contiguous()


def from_t(t):
    return t.permute(1, 2, 0).numpy()


def maxdiff(a, b):
    return int(np.abs(a.astype(np.int32) - b.astype(np.int32)).max())


def random_crop(rng, h, w):
    cw, ch = int(rng.integers(1, w + 1)), int(rng.integers(1, h + 1))
    return int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1)), cw, ch


def pil_crop_resize(a, crop, size):
    x, y, w, h = crop
    return np.asarray(Image.fromarray(a).crop((x, y, x + w, y + h)).resize((size, size), Image.BILINEAR))


# ---- crop + resize ----

CASES = [  # (h, w, crop or None = random, size)
    (1, 1, (0, 0, 1, 1), 1), (1, 1, (0, 0, 1, 1), 5), (3, 5, (1, 1, 2, 2), 17),
    (2, 2, (1, 0, 1, 2), 9), (31, 47, None, 224), (301, 199, None, 224), (257, 333, None, 64),
    (511, 383, None, 7), (640, 480, (0, 0, 480, 640), 224), (97, 13, None, 1), (150, 150, None, 150),
]


@pytest.mark.parametrize("kind", ["noise", "gradient"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_resize_matches_pil(tmp, kind, case):
    rng = np.random.default_rng(100 + case)
    h, w, crop, size = CASES[case]
    a = make(kind, rng, h, w)
    crop = crop or random_crop(rng, h, w)
    assert maxdiff(render(tmp, a, size, crop), pil_crop_resize(a, crop, size)) == 0


def test_resize_random_crops_match_pil(tmp):
    rng = np.random.default_rng(7)
    for _ in range(25):
        h, w = (int(v) for v in rng.integers(1, 260, 2))
        a = make("noise" if rng.random() < 0.5 else "gradient", rng, h, w)
        crop, size = random_crop(rng, h, w), int(rng.integers(1, 120))
        assert maxdiff(render(tmp, a, size, crop), pil_crop_resize(a, crop, size)) == 0, (h, w, crop, size)


def test_resize_whole_image_matches_pil_box(tmp):
    """With the crop = the whole image, PIL's resize(box=...) is the same operation."""
    rng = np.random.default_rng(8)
    a = noise(rng, 123, 211)
    ref = np.asarray(Image.fromarray(a).resize((50, 50), Image.BILINEAR, box=(0, 0, 211, 123)))
    assert maxdiff(render(tmp, a, 50), ref) == 0


@pytest.mark.parametrize("kind", ["noise", "gradient"])
def test_resize_vs_torchvision_tensor(tmp, kind):
    rng = np.random.default_rng(9 if kind == "noise" else 10)
    worst, frac = 0, []
    for _ in range(12):
        h, w = (int(v) for v in rng.integers(1, 300, 2))
        a = make(kind, rng, h, w)
        (x, y, cw, ch), size = random_crop(rng, h, w), int(rng.integers(1, 100))
        ours = render(tmp, a, size, (x, y, cw, ch))
        ref = from_t(F.resized_crop(to_t(a), y, x, ch, cw, [size, size], antialias=True))
        worst = max(worst, maxdiff(ours, ref))
        frac.append(np.mean(ours != ref))
    assert worst <= 1
    assert np.mean(frac) < 0.25


# ---- flip ----

def test_flip_exact(tmp):
    rng = np.random.default_rng(11)
    for h, w, size in [(1, 1, 1), (40, 33, 17), (100, 90, 64)]:
        a = noise(rng, h, w)
        crop = random_crop(rng, h, w)
        plain = render(tmp, a, size, crop)
        assert np.array_equal(render(tmp, a, size, crop, flip=1), plain[:, ::-1])


# ---- colour jitter, each op alone ----

OPS = [F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue]


def jitter_one(tmp, a, op, f):
    factors = [1, 1, 1, 0]
    factors[op] = f
    order = [op] + [k for k in range(4) if k != op]
    return render(tmp, a, a.shape[0], jitter=1, order=order, factors=factors)


@pytest.mark.parametrize("op", range(4), ids=["brightness", "contrast", "saturation", "hue"])
@pytest.mark.parametrize("kind", ["noise", "gradient"])
def test_jitter_op_matches_torchvision(tmp, op, kind):
    rng = np.random.default_rng(20 + op)
    for n in [1, 2, 7, 65, 224]:
        a = make(kind, rng, n, n)
        if kind == "noise" and n >= 7:  # also gray pixels and saturated ones
            a[0, :] = a[0, :, :1]
            a[1, :, 0] = 255
        for _ in range(3):
            f = np.float32(rng.uniform(-0.5, 0.5) if op == 3 else rng.uniform(0.0, 2.0))
            ref = from_t(OPS[op](to_t(a), float(f)))
            assert maxdiff(jitter_one(tmp, a, op, f), ref) == 0, (n, float(f))


def test_contrast_large_view(tmp):
    """Above 256x256 torch's float32 sum of the gray image rounds; we use the exact sum."""
    rng = np.random.default_rng(30)
    a = noise(rng, 320, 320)
    for f in [0.6, 1.37]:
        ref = from_t(F.adjust_contrast(to_t(a), float(np.float32(f))))
        assert maxdiff(jitter_one(tmp, a, 1, f), ref) <= 1


def test_jitter_order_is_applied_in_order(tmp):
    rng = np.random.default_rng(31)
    a = gradient(rng, 48, 48)
    factors = [np.float32(1.3), np.float32(0.7), np.float32(1.15), np.float32(0.08)]
    for order in [(0, 1, 2, 3), (3, 2, 1, 0), (1, 3, 0, 2)]:
        ref = to_t(a)
        for op in order:
            ref = OPS[op](ref, float(factors[op]))
        out = render(tmp, a, 48, jitter=1, order=order, factors=factors)
        assert maxdiff(out, from_t(ref)) == 0, order


def test_jitter_flag_off_is_identity(tmp):
    a = noise(np.random.default_rng(32), 20, 20)
    out = render(tmp, a, 20, jitter=0, order=(3, 2, 1, 0), factors=(1.4, 0.6, 1.2, 0.1))
    assert np.array_equal(out, a)


# ---- grayscale ----

@pytest.mark.parametrize("kind", ["noise", "gradient"])
def test_grayscale_matches_pil(tmp, kind):
    rng = np.random.default_rng(40)
    for n in [1, 9, 128]:
        a = make(kind, rng, n, n)
        ref = np.asarray(Image.fromarray(a).convert("L"))
        out = render(tmp, a, n, gray=1)
        assert np.array_equal(out, np.repeat(ref[:, :, None], 3, axis=2))


# ---- Gaussian blur ----

@pytest.mark.parametrize("sigma", [0.3, 0.8, 1.5, 2.7])
@pytest.mark.parametrize("kind", ["noise", "gradient"])
def test_blur_matches_torchvision(tmp, sigma, kind):
    rng = np.random.default_rng(50)
    k = 2 * math.ceil(3 * sigma) + 1
    for n in [k // 2 + 1, 33, 224]:  # torch's reflect padding needs radius < size
        a = make(kind, rng, n, n)
        ref = from_t(F.gaussian_blur(to_t(a), [k, k], [float(np.float32(sigma))] * 2))
        out = render(tmp, a, n, sigma=sigma)
        assert maxdiff(out, ref) <= 1, n
        assert np.mean(out != ref) < 0.02, n


def test_blur_tiny_sigma_and_off(tmp):
    rng = np.random.default_rng(51)
    a = noise(rng, 31, 31)
    assert np.array_equal(render(tmp, a, 31, sigma=0.0), a)
    assert np.array_equal(render(tmp, a, 31, sigma=-1.0), a)
    ref = from_t(F.gaussian_blur(to_t(a), [3, 3], [float(np.float32(0.05))] * 2))
    assert np.array_equal(render(tmp, a, 31, sigma=0.05), ref)  # default range U(0, 0.1)
    one = noise(rng, 1, 1)  # 1x1: reflection has nothing to mirror, blur is the identity
    assert np.array_equal(render(tmp, one, 1, sigma=1.5), one)


# ---- whole pipeline with drawn recipes ----

def parse_recipe(fields):
    v = fields
    return dict(crop=tuple(int(x) for x in v[0:4]), flip=int(v[4]), jitter=int(v[5]),
                order=tuple(int(x) for x in v[6:10]), factors=tuple(np.float32(x) for x in v[10:14]),
                gray=int(v[14]), sigma=np.float32(v[15]))


def draw(seed, image, view, w, h, n):
    out = run([tool("render_tool"), "--draw", seed, image, view, w, h, n]).stdout
    return [parse_recipe(line.split()) for line in out.strip().split("\n")]


def reference_pipeline(a, size, r):
    img = pil_crop_resize(a, r["crop"], size)
    if r["flip"]:
        img = img[:, ::-1]
    t = to_t(img)
    if r["jitter"]:
        for op in r["order"]:
            f = float(r["factors"][op])
            if f != (0.0 if op == 3 else 1.0):
                t = OPS[op](t, f)
    img = from_t(t)
    if r["gray"]:
        img = np.repeat(np.asarray(Image.fromarray(np.ascontiguousarray(img)).convert("L"))[:, :, None], 3, 2)
    if r["sigma"] > 0:
        k = 2 * max(1, math.ceil(3 * float(r["sigma"]))) + 1
        img = from_t(F.gaussian_blur(to_t(img), [k, k], [float(r["sigma"])] * 2))
    return img


def test_pipeline_with_drawn_recipes(tmp):
    rng = np.random.default_rng(60)
    a = gradient(rng, 187, 251)
    a[::7] = noise(rng, a[::7].shape[0], 251)  # some texture
    recipes = draw(5, 3, 0, 251, 187, 16)
    assert sum(r["jitter"] for r in recipes) >= 8  # 80% of views are jittered
    for r in recipes:
        out = render(tmp, a, 64, **r)
        assert maxdiff(out, reference_pipeline(a, 64, r)) <= 1, r
    # and with a visible blur
    r = dict(recipes[0], jitter=1, order=(2, 0, 3, 1), factors=(np.float32(1.2), np.float32(0.7),
             np.float32(1.1), np.float32(-0.05)), gray=0, flip=1, sigma=np.float32(1.1))
    assert maxdiff(render(tmp, a, 64, **r), reference_pipeline(a, 64, r)) <= 1


# ---- determinism ----

def test_render_deterministic_across_processes_and_threads(tmp):
    """Same (image, recipe, size) -> same bytes, whatever process or thread count renders it."""
    yy, xx = np.mgrid[0:211, 0:173]
    a = np.stack([(xx * 7 + yy * 3) % 256, (xx * yy) % 251, (xx ^ yy) % 256], -1).astype(np.uint8)
    recipes = draw(1, 0, 0, 173, 211, 6)
    recipes.append(dict(crop=(3, 5, 160, 190), flip=1, jitter=1, order=(3, 1, 0, 2),
                        factors=(np.float32(0.7), np.float32(1.3), np.float32(0.9), np.float32(0.21)),
                        gray=0, sigma=np.float32(1.3)))
    for r in recipes:
        outs = [render(tmp, a, 224, env={"OMP_NUM_THREADS": str(t)}, **r).tobytes() for t in (1, 2, 1)]
        assert outs[0] == outs[1] == outs[2]


def test_draw_deterministic():
    a = run([tool("render_tool"), "--draw", 9, 2, 0, 640, 480, 50]).stdout
    b = run([tool("render_tool"), "--draw", 9, 2, 0, 640, 480, 50], env={"OMP_NUM_THREADS": "2"}).stdout
    c = run([tool("render_tool"), "--draw", 9, 2, 10, 640, 480, 40]).stdout  # views 10..49
    assert a == b
    assert a.split("\n")[10:] == c.split("\n")


# ---- recipe distributions vs torchvision ----

def test_crop_distribution_matches_torchvision():
    """Our crops and RandomResizedCrop.get_params agree in distribution (means of the area
    fraction, log aspect ratio and centre within 4 standard errors)."""
    W, H, n = 500, 300, 4000
    ours = draw(123, 0, 0, W, H, n)
    torch.manual_seed(0)
    img = torch.zeros(3, H, W)
    ref = []
    for _ in range(n):
        i, j, h, w = T.RandomResizedCrop.get_params(img, (0.14, 1.0), (3 / 4, 4 / 3))
        ref.append((j, i, w, h))

    def stats(crops):
        c = np.array(crops, dtype=np.float64)
        return np.stack([c[:, 2] * c[:, 3] / (W * H), np.log(c[:, 2] / c[:, 3]),
                         (c[:, 0] + c[:, 2] / 2) / W, (c[:, 1] + c[:, 3] / 2) / H], 1)

    s1, s2 = stats([r["crop"] for r in ours]), stats(ref)
    se = np.sqrt(s1.var(0) / n + s2.var(0) / n)
    assert np.all(np.abs(s1.mean(0) - s2.mean(0)) < 4 * se), (s1.mean(0), s2.mean(0), se)
    lr = s1[:, 1]
    assert lr.min() >= math.log(3 / 4) - 0.02 and lr.max() <= math.log(4 / 3) + 0.02
    assert s1[:, 0].min() >= 0.14 - 0.01 and s1[:, 0].max() <= 1.0


def test_sample_draw():
    sizes = ["100x80", "640x480", "33x901", "1x1", "500x500"]
    out = run([tool("render_tool"), "--sample", 4, 1, 2, 0, 500, *sizes]).stdout.strip().split("\n")
    partners = []
    for line in out:
        head, r0, r1 = line.split("|")
        i0, i1, lam = head.split()
        assert int(i0) == 2 and int(i1) != 2 and 0 <= int(i1) < 5
        assert 0.0 <= float(lam) < 1.0
        pw, ph = map(int, sizes[int(i1)].split("x"))
        x, y, w, h = map(int, r1.split()[:4])
        assert 0 <= x and 0 <= y and x + w <= pw and y + h <= ph and w >= 1 and h >= 1
        partners.append(int(i1))
    assert set(partners) == {0, 1, 3, 4}
    off = run([tool("render_tool"), "--sample", 4, 0, 2, 0, 5, *sizes]).stdout.strip().split("\n")
    for line in off:
        head, _, r1 = line.split("|")
        assert head.split()[1:] == ["-1", "1"]
        assert all(float(v) == 0 for v in r1.split())


# ---- instruction sets ----

def test_avx2_path_gives_the_same_bytes(tmp):
    """lt's loops may run AVX-512 variants (nn/simd.h); LT_ISA=avx2 forces the AVX2 ones. Renders
    with every stage on (resample, flip, each jitter op, grayscale, blur) are byte for byte the same
    either way, and the same as the plain run."""
    rng = np.random.default_rng(91)
    a = gradient(rng, 97, 131)
    for crop, size, kw in [((3, 5, 120, 90), 64, dict(flip=1, jitter=1, order=(3, 1, 0, 2),
                                                       factors=(1.3, 0.7, 1.6, 0.21), sigma=1.3)),
                           ((0, 0, 131, 97), 224, dict(gray=1, sigma=0.4)),
                           ((10, 20, 33, 41), 17, dict(jitter=1, factors=(0.5, 1.9, 0.2, -0.4)))]:
        plain = render(tmp, a, size, crop, **kw)
        forced = render(tmp, a, size, crop, env={"LT_ISA": "avx2"}, **kw)
        assert plain.tobytes() == forced.tobytes()


# ---- bad input ----

def test_crop_outside_image_is_an_error(tmp):
    a = noise(np.random.default_rng(70), 10, 12)
    write_ppm(tmp / "in.ppm", a)
    r = run([tool("render_tool"), tmp / "in.ppm", tmp / "out.ppm",
             *recipe_args(8, (5, 0, 8, 10), **IDENTITY)], check=False)
    assert r.returncode == 1
    assert "is not inside the 12x10 image" in r.stderr
    assert not os.path.exists(tmp / "out.ppm")
