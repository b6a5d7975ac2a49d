"""Builders shared by the lt-embed end-to-end tests: a folder of odd images and a tiny teacher."""
import io
import os
import random
import struct
import subprocess
import sys
import zlib

import numpy as np
from PIL import Image

from conftest import BIN, ROOT


def rand_img(rng, w, h, mode="RGB"):
    a = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    # add some structure so resizes are not pure noise
    yy, xx = np.mgrid[0:h, 0:w]
    a[..., 0] = ((a[..., 0].astype(int) + xx * 255 // max(w, 1)) // 2).astype(np.uint8)
    return Image.fromarray(a, "RGB").convert(mode)


def odd_folder(root, seed=None):
    """Writes valid images of every supported kind plus broken files.

    Returns (valid relative paths, {broken relative path: expected reason fragment})."""
    rng = np.random.default_rng(seed)
    valid, broken = [], {}

    def save(rel, img, fmt, **kw):
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        img.save(p, fmt, **kw)
        valid.append(rel)

    save("rgb/a 1x1.png", rand_img(rng, 1, 1), "PNG")
    save("rgb/b_7x1.JPG", rand_img(rng, 7, 1), "JPEG", quality=90)
    save("rgb/c_1x9.jpeg", rand_img(rng, 1, 9), "JPEG")
    save("rgb/d_333x217.jpg", rand_img(rng, 333, 217), "JPEG", quality=75)
    save("rgb/e_64x48_progressive.jpg", rand_img(rng, 64, 48), "JPEG", progressive=True)
    save("grey/f_40x30.png", rand_img(rng, 40, 30, "L"), "PNG")
    save("grey/g_50x20.jpg", rand_img(rng, 50, 20, "L"), "JPEG")
    save("alpha/h_30x31.PNG", rand_img(rng, 30, 31, "RGBA"), "PNG")
    save("alpha/i_17x23.png", rand_img(rng, 17, 23, "LA"), "PNG")
    save("palette/j_25x25.png", rand_img(rng, 25, 25).convert("P", palette=Image.ADAPTIVE), "PNG")
    save("cmyk/k_20x24.jpg", rand_img(rng, 20, 24).convert("CMYK"), "JPEG")
    save("16bit/l_19x21.png", Image.fromarray(rng.integers(0, 65536, (21, 19), dtype=np.uint16)), "PNG")
    save("ünïcödé dir/m name with spaces.png", rand_img(rng, 33, 12), "PNG")
    # a PNG named .jpg decodes by its bytes
    p = os.path.join(root, "misnamed/n_png_named.jpg")
    os.makedirs(os.path.dirname(p), exist_ok=True)
    rand_img(rng, 21, 13).save(p, "PNG")
    valid.append("misnamed/n_png_named.jpg")

    def put(rel, data, why):
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
        broken[rel] = why

    buf = io.BytesIO()
    rand_img(rng, 120, 90).save(buf, "JPEG")
    jpg = buf.getvalue()
    put("broken/truncated.jpg", jpg[: len(jpg) // 2], "")
    put("broken/empty.png", b"", "")
    put("broken/random.jpg", bytes(rng.integers(0, 256, 300, dtype=np.uint8)), "")
    buf = io.BytesIO()
    rand_img(rng, 60, 60).save(buf, "PNG")
    png = buf.getvalue()
    put("broken/truncated.png", png[: len(png) * 2 // 3], "")
    # non-image files are not even scanned
    with open(os.path.join(root, "notes.txt"), "w") as f:
        f.write("not an image\n")
    return sorted(valid, key=lambda s: s.encode()), broken


def tiny_teacher(path, dim=64, depth=2, patch=14, grid=4, registers=0, seed=0):
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "make-random-teacher.py"), path,
                    "--dim", str(dim), "--depth", str(depth), "--patch", str(patch),
                    "--grid", str(grid), "--registers", str(registers), "--seed", str(seed)],
                   check=True)
    return path


def lt_embed():
    return os.path.join(BIN, "lt-embed")
