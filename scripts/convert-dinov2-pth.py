#!/usr/bin/env python3
"""Converts an original DINOv2 checkpoint (e.g. dinov2_vitb14_pretrain.pth from
dl.fbaipublicfiles.com/dinov2) to .safetensors with the original key names, for lt-embed.

    scripts/convert-dinov2-pth.py dinov2_vitb14_pretrain.pth weights/dinov2_vitb14.safetensors

Needs torch (Debian: python3-torch). Tensors are stored as float32; `mask_token` is dropped
(unused at inference).
"""
import json
import os
import struct
import sys

import torch


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, dst = sys.argv[1], sys.argv[2]
    sd = torch.load(src, map_location="cpu")
    if isinstance(sd, dict) and "model" in sd and isinstance(sd["model"], dict):
        sd = sd["model"]
    header, blobs, off = {}, [], 0
    for name in sorted(sd):
        if name == "mask_token":
            continue
        t = sd[name]
        if not torch.is_tensor(t):
            continue
        raw = t.detach().to(torch.float32).contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header["__metadata__"] = {"source": os.path.basename(src)}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    with open(dst + ".partial", "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for raw in blobs:
            f.write(raw)
    os.replace(dst + ".partial", dst)
    print(f"wrote {dst}: {len(blobs)} tensors", file=sys.stderr)


if __name__ == "__main__":
    main()
