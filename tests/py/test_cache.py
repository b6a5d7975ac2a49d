"""Interop of the lt cache with stock HDF5 readers (formats/cache.md).

build/tests/tools/cache_tool writes a cache from random data plus the same embeddings as raw
float32 (CACHE.emb.f32). Debian's h5py and h5dump then read it through our zstd plugin
(HDF5_PLUGIN_PATH=build/plugins). Each reader runs in a subprocess because HDF5 reads
HDF5_PLUGIN_PATH once, when the library starts.
"""
import json
import os
import subprocess

import pytest

from conftest import PLUGIN_DIR, run, tool

PY = "/usr/bin/python3"


def write_cache(tmp, dtype, n=40, v=4, d=768, seed=3, level=None):
    path = tmp / f"cache_{dtype}.h5"
    args = [tool("cache_tool"), "write", path, n, v, d, dtype, seed]
    if level is not None:
        args.append(level)
    r = run(args)
    images = [line.split(" ", 2) for line in r.stdout.splitlines()]
    assert len(images) == n
    return path, images


def py(script, cache, plugin_dir, check=True):
    """Runs script under Debian's python with h5py; `cache` is passed as sys.argv[1]."""
    env = {"HDF5_PLUGIN_PATH": str(plugin_dir)}
    return run([PY, "-c", script, cache], check=check, env=env)


READ_ALL = r"""
import hashlib, json, sys
import h5py, numpy as np
f = h5py.File(sys.argv[1], "r")
e = f["embeddings"]
raw = np.fromfile(sys.argv[1] + ".emb.f32", dtype="<f4").reshape(e.shape)
got = e[()]
if got.dtype == np.float16:
    same = bool((got.view(np.uint16) == raw.astype(np.float16).view(np.uint16)).all())
else:
    same = bool((got.view(np.uint32) == raw.view(np.uint32)).all())
dcpl = e.id.get_create_plist()
filters = [dcpl.get_filter(i)[:3] for i in range(dcpl.get_nfilters())]
a = f.attrs
off = f["images/offset"][()]
data = f["images/bytes"][()]
def text(name):
    b, o = f[name + "_bytes"][()].tobytes(), f[name + "_offset"][()]
    return [b[o[k]:o[k + 1]].decode() for k in range(len(o) - 1)]
dtypes = [a.get_id(k).dtype for k in a]
f.visititems(lambda n, o: dtypes.append(o.dtype) if isinstance(o, h5py.Dataset) else None)
STR = ("format", "embedding_dtype", "tool_version", "created", "teacher_file", "teacher_sha256")
print(json.dumps({
    "dtype": str(got.dtype), "shape": list(got.shape), "same": same,
    "chunks": list(e.chunks), "fill": float(e.fillvalue),
    "filters": [[int(c), int(fl), [int(x) for x in v]] for c, fl, v in filters],
    "format": a["format"].decode(), "format_type": type(a["format"]).__name__,
    "str_dtypes": {k: a.get_id(k).dtype.str for k in STR},
    "str_lens": {k: len(a[k]) for k in STR},
    "any_vlen": any(dt.kind == "O" for dt in dtypes),
    "version": int(a["version"]), "version_dtype": str(a["version"].dtype),
    "embedding_dtype": a["embedding_dtype"].decode(), "seed": int(a["seed"]),
    "seed_dtype": str(a["seed"].dtype), "num_samples": int(a["num_samples"]),
    "created": a["created"].decode(), "teacher_file": a["teacher_file"].decode(),
    "jitter": [float(x) for x in a["transform_jitter"]],
    "paths": text("images/path"), "path_offset": [int(x) for x in f["images/path_offset"][()]],
    "sha": [s.decode() for s in f["images/sha256"][()]],
    "image_sha": [hashlib.sha256(data[off[i]:off[i + 1]].tobytes()).hexdigest()
                  for i in range(len(off) - 1)],
    "width": [int(x) for x in f["images/width"][()]],
    "skipped": text("skipped/path"), "reasons": text("skipped/reason"),
    "samples_image_shape": list(f["samples/image"].shape),
    "crop_shape": list(f["samples/crop"].shape), "crop_dtype": str(f["samples/crop"].dtype),
    "lambda_dtype": str(f["samples/lambda"].dtype),
}))
"""


@pytest.mark.parametrize("dtype", ["f16", "f32"])
def test_h5py_reads_cache_with_plugin(tmp, dtype):
    path, images = write_cache(tmp, dtype, level=7)
    assert not os.path.exists(str(path) + ".partial")
    info = json.loads(py(READ_ALL, path, PLUGIN_DIR).stdout)
    assert info["same"], "embeddings differ from the raw floats (float16: numpy's rounding)"
    assert info["dtype"] == ("float16" if dtype == "f16" else "float32")
    assert info["shape"] == [160, 768]
    assert info["chunks"][1] == 768 and 1 <= info["chunks"][0] <= 160
    assert info["fill"] == 0.0
    # shuffle (id 2) first, then our zstd (32015) with the level as cd_values[0], mandatory
    assert [c for c, _, _ in info["filters"]] == [2, 32015]
    assert info["filters"][1][2] == [7] and info["filters"][1][1] == 0
    # no variable-length type anywhere; string attributes are fixed-length, exactly as long as
    # their value, so h5py reads them as numpy bytes
    assert not info["any_vlen"]
    assert info["format"] == "lt-cache" and info["format_type"] == "bytes_"
    assert info["str_dtypes"] == {k: f"|S{n}" for k, n in info["str_lens"].items()}
    assert info["version"] == 3 and info["version_dtype"] == "int32"
    assert info["embedding_dtype"] == ("float16" if dtype == "f16" else "float32")
    assert info["seed"] == 3 and info["seed_dtype"] == "uint64"
    assert info["num_samples"] == 160
    assert info["created"].endswith("Z") and info["created"][4] == "-"
    assert info["teacher_file"] == "dinov2_vitb14.safetensors"
    assert info["jitter"] == pytest.approx([0.4, 0.4, 0.2, 0.1])
    assert info["paths"] == [p for _, _, p in images]
    assert info["path_offset"][0] == 0 and info["path_offset"][-1] == sum(map(len, info["paths"]))
    assert info["sha"] == [s for s, _, _ in images] == info["image_sha"]
    assert info["width"] == [64 + i for i in range(40)]
    assert info["skipped"] == ["notes.txt"] and info["reasons"] == ["not a JPEG or PNG"]
    assert info["samples_image_shape"] == [160, 2]
    assert info["crop_shape"] == [160, 2, 4] and info["crop_dtype"] == "int32"
    assert info["lambda_dtype"] == "float32"


def test_embeddings_need_the_filter(tmp):
    """Without our plugin HDF5 cannot decode /embeddings: proves the chunks are really zstd."""
    path, _ = write_cache(tmp, "f16")
    empty = tmp / "no_plugins"
    empty.mkdir()
    script = "import sys, h5py; print(h5py.File(sys.argv[1], 'r')['embeddings'][0, :4])"
    r = py(script, path, empty, check=False)
    assert r.returncode != 0
    assert "32015" in r.stderr or "filter" in r.stderr
    # Everything else is plain HDF5 and reads without the plugin.
    script = ("import sys, h5py; f = h5py.File(sys.argv[1], 'r'); "
              "print(f['images/bytes'][:4], f['samples/lambda'][:2], f.attrs['format'])")
    assert "lt-cache" in py(script, path, empty).stdout


def test_h5dump_with_plugin(tmp):
    path, _ = write_cache(tmp, "f16", n=5, v=2, d=16)
    env = {"HDF5_PLUGIN_PATH": PLUGIN_DIR}
    r = run(["h5dump", "-p", "-H", path], env=env)
    assert 'DATASET "embeddings"' in r.stdout
    assert "FILTER_ID 32015" in r.stdout and "SHUFFLE" in r.stdout
    assert 'ATTRIBUTE "format"' in r.stdout
    r = run(["h5dump", "-d", "/embeddings", "-c", "1,4", path], env=env)
    assert "(0,0):" in r.stdout


def test_lt_reader_accepts_and_rejects(tmp):
    path, _ = write_cache(tmp, "f32", n=6, v=3, d=32)
    assert run([tool("cache_tool"), "check", path]).stdout.split() == \
        ["ok", "6", "18", "32", "float32"]
    bad = tmp / "bad.h5"
    bad.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    r = run([tool("cache_tool"), "check", bad], check=False)
    assert r.returncode == 1 and str(bad) in r.stderr
    # A cache rewritten by h5py with another version number is refused with the fix.
    script = "import sys, h5py, numpy as np; h5py.File(sys.argv[1], 'r+').attrs['version'] = np.int32(9)"
    py(script, path, PLUGIN_DIR)
    r = run([tool("cache_tool"), "check", path], check=False)
    assert r.returncode == 1
    assert "cache version 9, this lt reads version 3: re-run lt-embed" in r.stderr


def test_pypi_hdf5plugin_reads_cache(tmp):
    """PyPI's hdf5plugin carries its own 32015 filter; it must decode our chunks too.
    The venv is made by scripts/install-deps.sh --test (make test); LT_PYPI_PYTHON names it."""
    pypi = os.environ.get("LT_PYPI_PYTHON")
    if not pypi:
        pytest.skip("LT_PYPI_PYTHON not set (run through make test)")
    probe = subprocess.run([pypi, "-c", "import hdf5plugin; hdf5plugin.Zstd"], capture_output=True)
    assert probe.returncode == 0, probe.stderr
    path, _ = write_cache(tmp, "f16", n=4, v=2, d=64)
    empty = tmp / "no_plugins"
    empty.mkdir()
    script = ("import sys, hdf5plugin, h5py, numpy as np; f = h5py.File(sys.argv[1], 'r'); "
              "raw = np.fromfile(sys.argv[1] + '.emb.f32', '<f4').reshape(8, 64); "
              "assert (f['embeddings'][()] == raw.astype(np.float16)).all(); print('ok')")
    r = run([pypi, "-c", script, path], env={"HDF5_PLUGIN_PATH": str(empty)})
    assert r.stdout.strip() == "ok"
