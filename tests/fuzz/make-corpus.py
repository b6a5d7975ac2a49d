#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into tests/fuzz/corpus/<target>/ (checked in; rerun
to regenerate). Small valid files of every kind each reader accepts plus a few malformed ones, so
the fuzzer starts deep inside every parser. Needs numpy and PIL; the cache seeds need the built
test tool build/tests/tools/cache_tool (make). Total size is kept well under 1 MB.

    python3 tests/fuzz/make-corpus.py [--build build]
"""
import argparse
import io
import json
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))


def put(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def img(rng, w, h, mode="RGB"):
    a = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    return Image.fromarray(a, "RGB").convert(mode)


def save(im, fmt, **kw):
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def raw_png(w, h, depth, ctype, rows, interlace=0):
    """A PNG written by hand (16-bit and odd bit depths PIL does not write)."""
    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, interlace)
    raw = b"".join(b"\x00" + r for r in rows)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) +
            png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b""))


def decode_corpus(rng):
    t = "decode"
    put(t, "rgb_444.jpg", save(img(rng, 9, 7), "JPEG", quality=80, subsampling=0))
    put(t, "rgb_420.jpg", save(img(rng, 17, 11), "JPEG", quality=60, subsampling=2))
    put(t, "rgb_422_restart.jpg", save(img(rng, 16, 16), "JPEG", quality=70, subsampling=1))
    put(t, "progressive.jpg", save(img(rng, 13, 9), "JPEG", progressive=True))
    put(t, "grey.jpg", save(img(rng, 8, 5, "L"), "JPEG"))
    put(t, "cmyk.jpg", save(img(rng, 6, 6, "CMYK"), "JPEG"))
    put(t, "1x1.jpg", save(img(rng, 1, 1), "JPEG"))
    put(t, "rgb.png", save(img(rng, 7, 5), "PNG"))
    put(t, "rgba.png", save(img(rng, 5, 4, "RGBA"), "PNG"))
    put(t, "la.png", save(img(rng, 4, 4, "LA"), "PNG"))
    put(t, "palette.png", save(img(rng, 6, 3).convert("P", palette=Image.ADAPTIVE, colors=8), "PNG"))
    put(t, "bilevel.png", save(img(rng, 9, 3, "1"), "PNG"))
    put(t, "1x1.png", save(img(rng, 1, 1), "PNG"))
    rows16 = [rng.integers(0, 256, 5 * 6, dtype=np.uint8).tobytes() for _ in range(3)]
    put(t, "rgb16.png", raw_png(5, 3, 16, 2, rows16))
    put(t, "grey2_interlaced.png",
        raw_png(9, 9, 2, 0, [rng.integers(0, 256, 3, dtype=np.uint8).tobytes() for _ in range(9)], 1))
    # malformed: truncated, header only, a huge declared size
    j = save(img(rng, 16, 16), "JPEG")
    put(t, "truncated.jpg", j[: len(j) // 2])
    put(t, "header_only.jpg", j[: j.index(b"\xff\xda")])
    p = save(img(rng, 8, 8), "PNG")
    put(t, "truncated.png", p[: len(p) * 2 // 3])
    put(t, "header_only.png", p[:33])
    big = bytearray(p)
    big[16:24] = struct.pack(">II", 100000, 100000)
    big[29:33] = struct.pack(">I", zlib.crc32(bytes(big[12:29])))
    put(t, "bomb.png", bytes(big))


# ---- safetensors

def st_file(tensors, meta=None):
    """tensors: list of (name, dtype, shape, raw bytes)."""
    header, off, blobs = {}, 0, []
    if meta:
        header["__metadata__"] = meta
    for name, dt, shape, raw in tensors:
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        blobs.append(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def enc(a, dt):
    a = np.asarray(a, np.float32)
    if dt == "F32":
        return a.tobytes()
    if dt == "F16":
        return a.astype(np.float16).tobytes()
    return (a.view(np.uint32) >> 16).astype(np.uint16).tobytes()  # BF16, truncated


def dinov2(rng, hf, dt, D=64, depth=1, hidden=4, patch=2, grid=1, reg=0, swiglu=False):
    """A tiny DINOv2 state dict (random values) with original or Hugging Face names."""
    out = []

    def add(name, *shape):
        out.append((name, dt, shape, enc(rng.standard_normal(int(np.prod(shape))) * 0.02, dt)))

    F = 2 * hidden if swiglu else hidden
    if hf:
        add("embeddings.cls_token", 1, 1, D)
        add("embeddings.position_embeddings", 1, 1 + grid * grid, D)
        add("embeddings.patch_embeddings.projection.weight", D, 3, patch, patch)
        add("embeddings.patch_embeddings.projection.bias", D)
        if reg:
            add("embeddings.register_tokens", 1, reg, D)
        for i in range(depth):
            p = f"encoder.layer.{i}."
            for n in ("norm1", "norm2"):
                add(p + n + ".weight", D)
                add(p + n + ".bias", D)
            for n in ("query", "key", "value"):
                add(p + f"attention.attention.{n}.weight", D, D)
                add(p + f"attention.attention.{n}.bias", D)
            add(p + "attention.output.dense.weight", D, D)
            add(p + "attention.output.dense.bias", D)
            add(p + "layer_scale1.lambda1", D)
            add(p + "layer_scale2.lambda1", D)
            a, b = ("mlp.weights_in", "mlp.weights_out") if swiglu else ("mlp.fc1", "mlp.fc2")
            add(p + a + ".weight", F, D)
            add(p + a + ".bias", F)
            add(p + b + ".weight", D, hidden)
            add(p + b + ".bias", D)
        add("layernorm.weight", D)
        add("layernorm.bias", D)
    else:
        add("cls_token", 1, 1, D)
        add("pos_embed", 1, 1 + grid * grid, D)
        add("patch_embed.proj.weight", D, 3, patch, patch)
        add("patch_embed.proj.bias", D)
        add("mask_token", 1, D)
        if reg:
            add("register_tokens", 1, reg, D)
        for i in range(depth):
            p = f"blocks.{i}."
            for n in ("norm1", "norm2"):
                add(p + n + ".weight", D)
                add(p + n + ".bias", D)
            add(p + "attn.qkv.weight", 3 * D, D)
            add(p + "attn.qkv.bias", 3 * D)
            add(p + "attn.proj.weight", D, D)
            add(p + "attn.proj.bias", D)
            add(p + "ls1.gamma", D)
            add(p + "ls2.gamma", D)
            a, b = ("mlp.w12", "mlp.w3") if swiglu else ("mlp.fc1", "mlp.fc2")
            add(p + a + ".weight", F, D)
            add(p + a + ".bias", F)
            add(p + b + ".weight", D, hidden)
            add(p + b + ".bias", D)
        add("norm.weight", D)
        add("norm.bias", D)
    return out


def safetensors_corpus(rng):
    t = "safetensors"
    put(t, "dinov2_orig_f16.safetensors", st_file(dinov2(rng, False, "F16")))
    put(t, "dinov2_hf_bf16.safetensors", st_file(dinov2(rng, True, "BF16")))
    put(t, "dinov2_orig_swiglu_reg_f16.safetensors",
        st_file(dinov2(rng, False, "F16", reg=2, swiglu=True, grid=2)))
    put(t, "dinov2_hf_swiglu_f32.safetensors", st_file(dinov2(rng, True, "F32", swiglu=True)))
    chunked = [(n.replace("blocks.0.", "blocks.0.0."), *rest)
               for n, *rest in dinov2(rng, False, "F16", depth=1)]
    put(t, "dinov2_blockchunk_f16.safetensors", st_file(chunked))
    put(t, "small_meta.safetensors", st_file(
        [("a", "F32", (2, 3), enc(np.arange(6), "F32")), ("b", "F64", (2,), np.ones(2).tobytes()),
         ("c", "I64", (0,), b""), ("d\u00e9\\\"", "BF16", (1,), enc([1.5], "BF16")),
         ("e", "U8", (3,), b"xyz"), ("f", "BOOL", (1,), b"\x01")],
        {"format": "pt", "escape\\n": "\u2603 \ud83d\ude00"}))
    put(t, "empty_header.safetensors", struct.pack("<Q", 8) + b"{}      ")
    # malformed: offsets past the end, overlapping, lying byte count, huge header length
    put(t, "bad_offsets.safetensors", st_file([("a", "F32", (4,), b"\0" * 8)]))
    h = b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},' \
        b'"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}'
    put(t, "overlap.safetensors", struct.pack("<Q", len(h)) + h + b"\0" * 12)
    put(t, "huge_hlen.safetensors", struct.pack("<Q", 1 << 62) + b"{}")
    put(t, "nested.safetensors", struct.pack("<Q", 40) + b'{"__metadata__":{"a":[[[[[[[1]]]]]]]}}  ')


def compact_cache(src_path, dst_path):
    """Rewrites a cache made by cache_tool with small chunks: the writer's 1 MiB chunk of
    /images/bytes makes even a 2-image cache 1.6 MB, far too big for a seed. Same attributes
    (same HDF5 types), datasets, dtypes and filters (shuffle + zstd 32015 on /embeddings)."""
    import h5py
    with h5py.File(src_path, "r") as src, h5py.File(dst_path, "w", libver="latest") as dst:
        for k in src.attrs:
            dst.attrs.create(k, src.attrs[k], dtype=src.attrs.get_id(k).dtype)

        def copy(name, obj):
            if isinstance(obj, h5py.Group):
                dst.require_group(name)
                return
            data = obj[()]
            kw = {}  # contiguous: the reader does not care, and chunk B-trees cost 2+ KB each
            if name == "embeddings":
                kw.update(chunks=obj.shape, compression=32015, compression_opts=(3,),
                          shuffle=True)
            dst.create_dataset(name, data=data, dtype=obj.dtype, **kw)
        src.visititems(copy)


def cache_corpus(build):
    t = "cache"
    tool = os.path.join(ROOT, build, "tests", "tools", "cache_tool")
    if not os.path.exists(tool):
        sys.exit(f"make-corpus: {tool} is not built (run make first)")
    os.environ["HDF5_PLUGIN_PATH"] = os.path.join(ROOT, build, "plugins")
    d = os.path.join(HERE, "corpus", t)
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, "tmp.h5")
    for name, args in [("n2_v2_d4_f16.h5", ["2", "2", "4", "f16", "1"]),
                       ("n3_v1_d8_f32.h5", ["3", "1", "8", "f32", "2", "1"]),
                       ("n1_v1_d4_f16.h5", ["1", "1", "4", "f16", "3"])]:
        subprocess.run([tool, "write", tmp, *args], check=True, stdout=subprocess.DEVNULL)
        os.remove(tmp + ".emb.f32")
        compact_cache(tmp, os.path.join(d, name))
        os.remove(tmp)
        r = subprocess.run([tool, "check", os.path.join(d, name)], capture_output=True, text=True)
        if not r.stdout.startswith("ok"):
            sys.exit(f"make-corpus: the compacted {name} does not open: {r.stdout}{r.stderr}")
    with open(os.path.join(d, "n2_v2_d4_f16.h5"), "rb") as f:
        data = f.read()
    put(t, "truncated.h5", data[: len(data) // 2])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build")
    a = ap.parse_args()
    rng = np.random.default_rng(4)
    decode_corpus(rng)
    safetensors_corpus(rng)
    cache_corpus(a.build)
    total = 0
    for dp, _, fs in os.walk(os.path.join(HERE, "corpus")):
        total += sum(os.path.getsize(os.path.join(dp, f)) for f in fs)
    print(f"make-corpus: {total} bytes in tests/fuzz/corpus")


if __name__ == "__main__":
    main()
