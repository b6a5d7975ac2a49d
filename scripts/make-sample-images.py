#!/usr/bin/env python3
"""Writes a folder of synthetic sample images (PNG: RGB and grey, assorted sizes) for `make demo`.

Smooth gradients, discs and stripes with random colours, so that crops, flips and colour jitter
produce visibly different views. Python standard library only (zlib), so it works on a fresh
machine with no downloads.

    scripts/make-sample-images.py OUT_DIR [--count 64] [--seed 0]
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


def image(rng, w, h, grey):
    c0 = [rng.randrange(256) for _ in range(3)]
    c1 = [rng.randrange(256) for _ in range(3)]
    discs = [(rng.uniform(0, w), rng.uniform(0, h), rng.uniform(3, max(w, h) / 3),
              [rng.randrange(256) for _ in range(3)]) for _ in range(rng.randrange(1, 5))]
    freq = rng.uniform(0.02, 0.2)
    rows = []
    for y in range(h):
        row = []
        for x in range(w):
            t = (x / max(w - 1, 1) + y / max(h - 1, 1)) / 2
            px = [c0[k] * (1 - t) + c1[k] * t for k in range(3)]
            s = 20 * math.sin(freq * (x + 2 * y))
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
    a = ap.parse_args()
    rng = random.Random(a.seed)
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
