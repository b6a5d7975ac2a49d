"""Malformed safetensors files given to the teacher loader (via tests/tools/dinov2_tool): each must
be a clean exit 1 with a message naming the file (and the tensor or key where there is one),
never a crash or a signal. Also checks that a valid file with metadata, escaped names and unused
extra tensors loads."""
import json
import os
import struct

import numpy as np
import pytest
import torch

from conftest import run, tool
import dinov2_ref
import st_io

torch.set_num_threads(1)
B, H, W = 1, 28, 28


def tiny_model_tensors():
    torch.manual_seed(int.from_bytes(os.urandom(4), "little"))
    m = dinov2_ref.randomize(dinov2_ref.DinoVisionTransformer(dim=64, depth=1, patch=14,
                                                              pos_grid=2)).eval()
    return m, {k: v.detach().contiguous() for k, v in m.state_dict().items()}


def header_and_data(tensors):
    """The header dict and data bytes st_io.save would write."""
    header, chunks, off = {}, [], 0
    for k, t in tensors.items():
        b = st_io.tensor_bytes(t)
        header[k] = {"dtype": st_io.DTYPES[t.dtype], "shape": list(t.shape),
                     "data_offsets": [off, off + len(b)]}
        chunks.append(b)
        off += len(b)
    return header, b"".join(chunks)


@pytest.fixture
def valid(tmp):
    m, sd = tiny_model_tensors()
    p = tmp / "valid.safetensors"
    st_io.save(p, sd)
    x = torch.randn(B, 3, H, W)
    inp = tmp / "in.f32"
    x.permute(0, 2, 3, 1).contiguous().numpy().tofile(inp)
    return dict(model=m, sd=sd, path=p, x=x, inp=inp, tmp=tmp)


def run_tool(weights, v):
    return run([tool("dinov2_tool"), weights, v["inp"], B, H, W, v["tmp"] / "out.f32"],
               check=False, timeout=60)


def expect_error(path, v, *needles):
    r = run_tool(path, v)
    assert r.returncode == 1, f"exit {r.returncode} (signal if negative)\n{r.stderr}"
    assert str(path) in r.stderr, r.stderr
    for n in needles:
        assert n in r.stderr, f"{n!r} not in {r.stderr!r}"
    assert r.stderr.startswith("dinov2_tool: error: ")
    return r.stderr


def test_valid_file_loads(valid):
    r = run_tool(valid["path"], valid)
    assert r.returncode == 0, r.stderr
    with torch.no_grad():
        ref = valid["model"](valid["x"]).numpy()
    ours = np.fromfile(valid["tmp"] / "out.f32", dtype=np.float32).reshape(B, -1)
    assert np.abs(ours - ref).max() < 1e-4


def test_valid_file_with_metadata_escapes_extra_tensors(valid):
    sd = dict(valid["sd"])
    sd["extra.\u00e9\"quoted\"\\\n"] = torch.zeros(0, 5)  # empty tensor, escaped name
    sd["extra.int"] = torch.arange(6, dtype=torch.int64).reshape(2, 3)
    p = valid["tmp"] / "meta.safetensors"
    st_io.save(p, sd, metadata={"format": "pt", "note": "caf\u00e9 \\ \"x\"\t\ud83d\ude00"})
    r = run_tool(p, valid)
    assert r.returncode == 0, r.stderr


def test_random_bytes(valid):
    p = valid["tmp"] / "random.safetensors"
    p.write_bytes(os.urandom(4096))
    expect_error(p, valid, "not a safetensors file")
    # a plausible header length followed by random bytes: a JSON error
    p.write_bytes(struct.pack("<Q", 200) + os.urandom(4000))
    expect_error(p, valid)


@pytest.mark.parametrize("size", [0, 5, 8])
def test_tiny_files(valid, size):
    p = valid["tmp"] / "tiny.safetensors"
    p.write_bytes(b"\x00" * size)
    expect_error(p, valid, "not a safetensors file")


def test_missing_file(valid):
    expect_error(valid["tmp"] / "nope.safetensors", valid, "cannot open")


def test_truncated(valid):
    raw = valid["path"].read_bytes()
    p = valid["tmp"] / "trunc.safetensors"
    p.write_bytes(raw[: len(raw) * 2 // 3])
    expect_error(p, valid, "past the end of the data")
    p.write_bytes(raw[:20])  # inside the header
    expect_error(p, valid, "exceeds the file size")


def test_header_length_past_end(valid):
    h, d = header_and_data(valid["sd"])
    p = valid["tmp"] / "hlen.safetensors"
    st_io.write_raw(p, h, d, header_len=len(d) + 10**6)
    expect_error(p, valid, "header length")
    st_io.write_raw(p, h, d, header_len=2**64 - 1)
    expect_error(p, valid, "header length")


def test_header_over_limit(valid):
    p = valid["tmp"] / "huge.safetensors"
    with open(p, "wb") as f:  # sparse: 150 MB header length inside a 200 MB file
        f.write(struct.pack("<Q", 150 * 2**20) + b"{")
        f.truncate(200 * 2**20)
    expect_error(p, valid, "100 MB")


def mutate(valid, name, fn, *needles):
    h, d = header_and_data(valid["sd"])
    fn(h)
    p = valid["tmp"] / f"{name}.safetensors"
    st_io.write_raw(p, h, d)
    return expect_error(p, valid, *needles)


def test_offsets_past_end(valid):
    def f(h):
        e = h["norm.bias"]["data_offsets"]
        h["norm.bias"]["data_offsets"] = [e[0] + 10**7, e[1] + 10**7]
    mutate(valid, "offsets", f, "norm.bias", "past the end")


def test_offsets_reversed(valid):
    def f(h):
        e = h["norm.bias"]["data_offsets"]
        h["norm.bias"]["data_offsets"] = [e[1], e[0]]
    mutate(valid, "reversed", f, "norm.bias")


def test_overlapping(valid):
    def f(h):
        h["norm.bias"]["data_offsets"] = list(h["norm.weight"]["data_offsets"])
    mutate(valid, "overlap", f, "overlap")


def test_wrong_byte_count(valid):
    def f(h):
        h["norm.weight"]["shape"] = [63]
    mutate(valid, "bytes", f, "norm.weight", "need")

    def g(h):
        h["norm.weight"]["dtype"] = "F16"
    mutate(valid, "bytes2", g, "norm.weight", "need")


@pytest.mark.parametrize("dtype", ["F8_E4M3", "Q4", "", "f32"])
def test_unknown_dtype(valid, dtype):
    def f(h):
        h["pos_embed"]["dtype"] = dtype
    mutate(valid, "dtype", f, "pos_embed", "dtype")


def test_non_float_dtype_for_weight(valid):
    sd = dict(valid["sd"])
    sd["norm.weight"] = sd["norm.weight"].to(torch.int32)
    p = valid["tmp"] / "int.safetensors"
    st_io.save(p, sd)
    expect_error(p, valid, "norm.weight", "I32")


@pytest.mark.parametrize("shape,needle", [
    ([10**18, 10**18], "overflows"),
    ([2**62, 4], "overflows"),
    ([-1, 64], "non-negative"),
    ([1, 2, 3, 4, 5, 6, 7, 8, 9], "dimensions"),
    ("64", "shape"),
])
def test_absurd_shapes(valid, shape, needle):
    def f(h):
        h["norm.weight"]["shape"] = shape
    mutate(valid, "shape", f, "norm.weight", needle)


@pytest.mark.parametrize("text,needle", [
    ('{"a": {"dtype": "F32", "shape": [1e18], "data_offsets": [0, 4]}}', "non-integer"),
    ('{"a": {"dtype": "F32", "shape": [99999999999999999999], "data_offsets": [0, 4]}}',
     "too large"),
    ('{"a": 1} trailing', "trailing"),
    ('{"a": "unterminated', "unterminated"),
    ('{"a\\q": 1}', "escape"),
    ('{"\\ud800": 1}', "escape"),
    pytest.param('[' * 100000 + ']' * 100000, "deep", id="deep-nesting"),
    ('{"x": {}, "x": {}}', "duplicate"),
    ('[1, 2]', "not a JSON object"),
    ('{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "extra": 1}}', "extra"),
    ('{"a": {"dtype": "F32", "shape": [1]}}', "data_offsets"),
    ('{"__metadata__": {"k": 1}}', "__metadata__"),
    ('{"a": true}', "JSON"),
    ('{,}', "JSON"),
    ('', "header length"),
])
def test_malformed_json(valid, text, needle):
    p = valid["tmp"] / "json.safetensors"
    b = text.encode()
    p.write_bytes(struct.pack("<Q", len(b)) + b + b"\0" * 16)
    expect_error(p, valid, needle)


@pytest.mark.parametrize("key", ["blocks.0.attn.proj.weight", "blocks.0.ls2.gamma",
                                 "pos_embed", "norm.bias", "patch_embed.proj.bias"])
def test_missing_dinov2_key(valid, key):
    sd = dict(valid["sd"])
    del sd[key]
    p = valid["tmp"] / "missing.safetensors"
    st_io.save(p, sd)
    expect_error(p, valid, f"'{key}'")


def test_missing_hf_key(valid):
    sd = dinov2_ref.to_hf_names(valid["sd"])
    del sd["encoder.layer.0.attention.attention.value.bias"]
    p = valid["tmp"] / "missing_hf.safetensors"
    st_io.save(p, sd)
    expect_error(p, valid, "'encoder.layer.0.attention.attention.value.bias'")


def test_not_dinov2(valid):
    p = valid["tmp"] / "other.safetensors"
    st_io.save(p, {"conv1.weight": torch.zeros(4, 3, 3, 3)})
    expect_error(p, valid, "cls_token")


def test_wrong_shape_for_key(valid):
    sd = dict(valid["sd"])
    sd["blocks.0.attn.qkv.weight"] = sd["blocks.0.attn.qkv.weight"][:100].clone()
    p = valid["tmp"] / "shape.safetensors"
    st_io.save(p, sd)
    expect_error(p, valid, "blocks.0.attn.qkv.weight", "expected [192, 64]")


def test_wrong_input_size(valid):
    r = run([tool("dinov2_tool"), valid["path"], valid["inp"], B, H + 14, W,
             valid["tmp"] / "o.f32"], check=False)
    assert r.returncode == 1 and str(valid["inp"]) in r.stderr, r.stderr


def test_usage(valid):
    r = run([tool("dinov2_tool"), valid["path"]], check=False)
    assert r.returncode == 2 and "usage" in r.stderr
