#!/usr/bin/env python3
"""Writes Fashion-MNIST (Debian's dataset-fashion-mnist) as a labelled image folder.

lt-embed and lt-train read a folder of image files, lt-eval a labelled one (DIR/train/<class>/,
DIR/val/<class>/, as torchvision's ImageFolder). This turns the dataset's idx files into that
layout: the first --train images of the training set (balanced: the same count per class, as far
as --train divides by 10) and the first --val images of the test set, 28×28 grey PNGs.

    scripts/study/fmnist-folder.py OUT_DIR [--train 1000] [--val 10000]
                                   [--src /usr/share/datasets/fashion-mnist]

With --flat, the training images also go to OUT_DIR/unlabelled/ without class folders (what
lt-embed takes; it would accept train/ too, but the class names then play no part).
"""
import argparse
import gzip
import os
import struct
import sys

import numpy as np
from PIL import Image

CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
           "bag", "ankle-boot"]


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        sys.exit(f"fmnist-folder: {path}: not an idx file of uint8")
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def pick_balanced(labels, n):
    """Indices of the first n images, n/10 per class (the remainder from the first classes)."""
    per = [n // 10 + (1 if c < n % 10 else 0) for c in range(10)]
    out = []
    for i, y in enumerate(labels):
        if per[y] > 0:
            per[y] -= 1
            out.append(i)
            if len(out) == n:
                break
    return out


def write(images, labels, idx, out, flat=None):
    for c in CLASSES:
        os.makedirs(os.path.join(out, c), exist_ok=True)
    if flat:
        os.makedirs(flat, exist_ok=True)
    for i in idx:
        name = f"{i:05d}.png"
        img = Image.fromarray(images[i], mode="L")
        img.save(os.path.join(out, CLASSES[labels[i]], name))
        if flat:
            img.save(os.path.join(flat, f"{CLASSES[labels[i]]}-{name}"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--train", type=int, default=1000)
    ap.add_argument("--val", type=int, default=10000)
    ap.add_argument("--src", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--flat", action="store_true")
    a = ap.parse_args()
    try:
        tr_x = read_idx(os.path.join(a.src, "train-images-idx3-ubyte.gz"))
        tr_y = read_idx(os.path.join(a.src, "train-labels-idx1-ubyte.gz"))
        te_x = read_idx(os.path.join(a.src, "t10k-images-idx3-ubyte.gz"))
        te_y = read_idx(os.path.join(a.src, "t10k-labels-idx1-ubyte.gz"))
    except FileNotFoundError as e:
        sys.exit(f"fmnist-folder: {e.filename}: not found (apt-get install dataset-fashion-mnist)")
    if not 10 <= a.train <= len(tr_y) or not 10 <= a.val <= len(te_y):
        sys.exit("fmnist-folder: --train/--val out of range")
    write(tr_x, tr_y, pick_balanced(tr_y, a.train), os.path.join(a.out, "train"),
          os.path.join(a.out, "unlabelled") if a.flat else None)
    write(te_x, te_y, range(a.val), os.path.join(a.out, "val"))
    print(f"fmnist-folder: {a.train} training and {a.val} validation images in {a.out}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
