"""Writes COUNT photo-like JPEGs (300-500 px sides, quality 90) for the data-path and end-to-end
benchmarks: smooth two-axis colour gradients, random ellipses / rectangles / lines with soft edges,
and Gaussian sensor-like noise, so that the JPEG entropy (and the decode cost) is close to a photo's
rather than a flat synthetic image's.

    make_jpegs.py OUT_DIR [COUNT] [SEED] [WxH]

WxH (e.g. 2000x1500) gives every image that size instead (the image-pool measurement of
README.md uses 500x375 and 2000x1500).
"""
import os
import random
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def photo(rng, nrng, size=None):
    w, h = size if size else (rng.randint(300, 500), rng.randint(300, 500))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c = [np.array([rng.uniform(0, 255) for _ in range(3)], np.float32) for _ in range(4)]
    u, v = (xx / (w - 1))[..., None], (yy / (h - 1))[..., None]
    img = (1 - u) * (1 - v) * c[0] + u * (1 - v) * c[1] + (1 - u) * v * c[2] + u * v * c[3]
    base = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    layer = Image.new("RGB", (w, h))
    mask = Image.new("L", (w, h), 0)
    d, dm = ImageDraw.Draw(layer), ImageDraw.Draw(mask)
    for _ in range(rng.randint(6, 20)):
        col = tuple(rng.randrange(256) for _ in range(3))
        x0, y0 = rng.uniform(-50, w), rng.uniform(-50, h)
        box = [x0, y0, x0 + rng.uniform(20, w / 2), y0 + rng.uniform(20, h / 2)]
        kind = rng.random()
        if kind < 0.45:
            d.ellipse(box, fill=col); dm.ellipse(box, fill=rng.randint(120, 255))
        elif kind < 0.8:
            d.rectangle(box, fill=col); dm.rectangle(box, fill=rng.randint(120, 255))
        else:
            wd = rng.randint(2, 12)
            d.line(box, fill=col, width=wd); dm.line(box, fill=255, width=wd)
    mask = mask.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 3)))
    img = np.asarray(Image.composite(layer, base, mask), np.float32)
    img += nrng.normal(0, rng.uniform(3, 10), img.shape).astype(np.float32)  # texture / noise
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def main():
    out = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    size = tuple(int(v) for v in sys.argv[4].split("x")) if len(sys.argv) > 4 else None
    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    os.makedirs(out, exist_ok=True)
    for i in range(count):
        photo(rng, nrng, size).save(os.path.join(out, f"img{i:04d}.jpg"), quality=90)


if __name__ == "__main__":
    main()
