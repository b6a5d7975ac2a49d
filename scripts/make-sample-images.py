#!/usr/bin/env python3
"""Writes a folder of synthetic sample images (PNG: RGB and grey, assorted sizes) for `make demo`.

Smooth gradients, discs and stripes with random colours, so that crops, flips and colour jitter
produce visibly different views. Python standard library only (zlib), so it works on a fresh
machine with no downloads.

    scripts/make-sample-images.py OUT_DIR [--count 64] [--seed 0] [--labelled]

With --labelled, a labelled folder for lt-eval instead (OUT_DIR/train/<class>/ with --count
images and OUT_DIR/val/<class>/ with a quarter as many), three classes a student can tell apart:
"discs" (flat colours with discs), "stripes" (strong stripes, no discs), "smooth" (a gradient).
"""
import argparse
import math
import os
import random
import struct
import zlib


def png_bytes(w, h, rows, channels):
    def chunk(kind, data):
        c = struct.pack(">I", len(data)) + kind + data
        return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    color_type = 2 if channels == 3 else 0
    ihdr = struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)
    raw = b"".join(b"\x00" + bytes(r) for r in rows)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def image(rng, w, h, grey, kind=None):
    """kind: None (a mix of everything), "discs", "stripes" or "smooth"."""
    c0 = [rng.randrange(256) for _ in range(3)]
    c1 = [rng.randrange(256) for _ in range(3)]
    n_discs = rng.randrange(1, 5) if kind is None else rng.randrange(4, 9) if kind == "discs" else 0
    discs = [(rng.uniform(0, w), rng.uniform(0, h), rng.uniform(3, max(w, h) / 3),
              [rng.randrange(256) for _ in range(3)]) for _ in range(n_discs)]
    freq = rng.uniform(0.02, 0.2)
    amp = {None: 20, "stripes": 90}.get(kind, 0)
    rows = []
    for y in range(h):
        row = []
        for x in range(w):
            t = (x / max(w - 1, 1) + y / max(h - 1, 1)) / 2
            px = [c0[k] * (1 - t) + c1[k] * t for k in range(3)]
            s = amp * math.sin(freq * (x + 2 * y))
            px = [v + s for v in px]
            for cx, cy, r, col in discs:
                if (x - cx) ** 2 + (y - cy) ** 2 < r * r:
                    px = col
            px = [max(0, min(255, int(v))) for v in px]
            if grey:
                row.append((px[0] * 299 + px[1] * 587 + px[2] * 114) // 1000)
            else:
                row.extend(px)
        rows.append(row)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--count", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--labelled", action="store_true")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    if a.labelled:
        kinds = ["discs", "stripes", "smooth"]
        for split, count in (("train", a.count), ("val", max(len(kinds), a.count // 4))):
            for i in range(count):
                kind = kinds[i % len(kinds)]
                sub = os.path.join(a.out, split, kind)
                os.makedirs(sub, exist_ok=True)
                w, h = rng.randrange(64, 160), rng.randrange(64, 160)
                with open(os.path.join(sub, f"img{i:04d}.png"), "wb") as f:
                    f.write(png_bytes(w, h, image(rng, w, h, False, kind), 3))
        return
    for i in range(a.count):
        sub = os.path.join(a.out, f"class{i % 4}")
        os.makedirs(sub, exist_ok=True)
        w, h = rng.randrange(96, 320), rng.randrange(96, 320)
        grey = i % 7 == 3
        data = png_bytes(w, h, image(rng, w, h, grey), 1 if grey else 3)
        with open(os.path.join(sub, f"img{i:04d}.png"), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
