#!/usr/bin/env python3
"""Writes a small randomly initialised DINOv2-shaped teacher (.safetensors, original key names).

For smoke tests and `make demo` when no real DINOv2 weights are at hand: its embeddings are
meaningless, but every code path of lt-embed and lt-train runs exactly as with the real teacher.
Python standard library only, so it works on a fresh machine.

    scripts/make-random-teacher.py OUT.safetensors [--dim 192] [--depth 4] [--patch 14]
                                   [--grid 16] [--registers 0] [--seed 0]
"""
import argparse
import array
import json
import math
import os
import random
import struct
import sys


def tensors(dim, depth, patch, grid, registers, rng):
    hidden = 4 * dim

    def normal(n, std):
        return [rng.gauss(0.0, std) for _ in range(n)]

    def const(n, v):
        return [v] * n

    yield "cls_token", [1, 1, dim], normal(dim, 0.02)
    yield "pos_embed", [1, 1 + grid * grid, dim], normal((1 + grid * grid) * dim, 0.02)
    if registers:
        yield "register_tokens", [1, registers, dim], normal(registers * dim, 0.02)
    fan_in = 3 * patch * patch
    yield "patch_embed.proj.weight", [dim, 3, patch, patch], normal(dim * fan_in, 1 / math.sqrt(fan_in))
    yield "patch_embed.proj.bias", [dim], const(dim, 0.0)
    for b in range(depth):
        p = f"blocks.{b}."
        yield p + "norm1.weight", [dim], const(dim, 1.0)
        yield p + "norm1.bias", [dim], const(dim, 0.0)
        yield p + "attn.qkv.weight", [3 * dim, dim], normal(3 * dim * dim, 1 / math.sqrt(dim))
        yield p + "attn.qkv.bias", [3 * dim], const(3 * dim, 0.0)
        yield p + "attn.proj.weight", [dim, dim], normal(dim * dim, 1 / math.sqrt(dim))
        yield p + "attn.proj.bias", [dim], const(dim, 0.0)
        yield p + "ls1.gamma", [dim], const(dim, 0.1)
        yield p + "norm2.weight", [dim], const(dim, 1.0)
        yield p + "norm2.bias", [dim], const(dim, 0.0)
        yield p + "mlp.fc1.weight", [hidden, dim], normal(hidden * dim, 1 / math.sqrt(dim))
        yield p + "mlp.fc1.bias", [hidden], const(hidden, 0.0)
        yield p + "mlp.fc2.weight", [dim, hidden], normal(dim * hidden, 1 / math.sqrt(hidden))
        yield p + "mlp.fc2.bias", [dim], const(dim, 0.0)
        yield p + "ls2.gamma", [dim], const(dim, 0.1)
    yield "norm.weight", [dim], const(dim, 1.0)
    yield "norm.bias", [dim], const(dim, 0.0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--dim", type=int, default=192)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--patch", type=int, default=14)
    ap.add_argument("--grid", type=int, default=16)
    ap.add_argument("--registers", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.dim % 64:
        sys.exit("make-random-teacher: --dim must be a multiple of 64 (head dim 64)")
    rng = random.Random(a.seed)
    header, blobs, off = {}, [], 0
    for name, shape, values in tensors(a.dim, a.depth, a.patch, a.grid, a.registers, rng):
        data = array.array("f", values)
        if sys.byteorder != "little":
            data.byteswap()
        raw = data.tobytes()
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header["__metadata__"] = {"lt": "random DINOv2-shaped teacher for smoke tests, not trained"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = a.out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for raw in blobs:
            f.write(raw)
    os.replace(tmp, a.out)


if __name__ == "__main__":
    main()
