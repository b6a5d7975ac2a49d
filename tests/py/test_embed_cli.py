"""lt-embed's command line: usage errors exit 2, runtime errors exit 1, messages on stderr in the
form 'lt-embed: error: ...' naming the problem; --help and --version exit 0 on stdout."""
import os

import pytest

from conftest import run
from embed_fixtures import lt_embed, odd_folder, tiny_teacher


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    data = d / "data"
    data.mkdir()
    odd_folder(str(data), seed=1)
    teacher = tiny_teacher(str(d / "t.safetensors"))
    return d, str(data), teacher


def test_help_and_version():
    r = run([lt_embed(), "--help"])
    assert r.stdout.startswith("Usage: lt-embed") and "--dump-views" in r.stdout
    for opt in ["--teacher", "--views", "--image-size", "--batch-size", "--seed", "--no-mixup",
                "--device", "--threads", "--crop-scale", "--crop-ratio", "--hflip-p", "--jitter-p",
                "--jitter", "--gray-p", "--blur-sigma", "--mean", "--std", "--render"]:
        assert opt in r.stdout, opt
    r = run([lt_embed(), "--version"])
    assert r.stdout.startswith("lt-embed ")


@pytest.mark.parametrize("args,fragment", [
    (["--views", "0"], "--views"),
    (["--views", "abc"], "--views"),
    (["--views", "3.5"], "--views"),
    (["--image-size", "-1"], "--image-size"),
    (["--batch-size", "1e9"], "--batch-size"),
    (["--seed", "-3"], "--seed"),
    (["--threads", "x"], "--threads"),
    (["--hflip-p", "1.5"], "--hflip-p"),
    (["--crop-scale", "0.5"], "--crop-scale"),
    (["--crop-scale", "0.9,0.2"], "--crop-scale"),
    (["--jitter", "0.4,0.4,0.2"], "--jitter"),
    (["--mean", "a,b,c"], "--mean"),
    (["--std", "0,1,1"], "--std"),
    (["--device", "tpu"], "--device"),
    (["--render", "fpga"], "--render"),
    (["--dtype", "f64"], "--dtype"),
    (["--no-such-option"], "Try"),
])
def test_usage_errors(setup, args, fragment):
    d, data, teacher = setup
    r = run([lt_embed(), "--teacher", teacher, *args, data, str(d / "out.h5")], check=False)
    assert r.returncode == 2, r.stderr
    assert fragment in r.stderr
    assert not os.path.exists(d / "out.h5")


def test_missing_arguments_and_teacher(setup):
    d, data, teacher = setup
    r = run([lt_embed(), data], check=False)
    assert r.returncode == 2 and "lt-embed: error:" in r.stderr
    env = {"LT_TEACHER": ""}
    r = run([lt_embed(), data, str(d / "x.h5")], check=False, env=env)
    assert r.returncode == 2 and "--teacher" in r.stderr


def test_render_gpu_needs_the_gpu_teacher(setup, tmp_path):
    # views are rendered on the GPU only for a GPU teacher; --render cpu is the CPU teacher's way
    d, data, teacher = setup
    out = str(tmp_path / "c.h5")
    r = run([lt_embed(), "--teacher", teacher, "--device", "cpu", "--render", "gpu", data, out],
            check=False)
    assert r.returncode == 1 and "--render gpu" in r.stderr and "--device cuda" in r.stderr
    assert not os.path.exists(out) and not os.path.exists(out + ".partial")
    r = run([lt_embed(), "-q", "--teacher", teacher, "--device", "cpu", "--render", "cpu",
             "--views", "1", data, out])
    assert os.path.exists(out)


def test_runtime_errors(setup, tmp_path):
    d, data, teacher = setup
    out = str(tmp_path / "c.h5")
    # missing teacher file
    r = run([lt_embed(), "--teacher", str(tmp_path / "nope.safetensors"), data, out], check=False)
    assert r.returncode == 1 and "nope.safetensors" in r.stderr
    # corrupt teacher file
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(os.urandom(1000))
    r = run([lt_embed(), "--teacher", str(bad), data, out], check=False)
    assert r.returncode == 1 and "bad.safetensors" in r.stderr
    # missing data folder
    r = run([lt_embed(), "--teacher", teacher, str(tmp_path / "nodata"), out], check=False)
    assert r.returncode == 1 and "nodata" in r.stderr
    # empty data folder
    (tmp_path / "empty").mkdir()
    r = run([lt_embed(), "--teacher", teacher, str(tmp_path / "empty"), out], check=False)
    assert r.returncode == 1 and "no images" in r.stderr
    # unwritable output
    r = run([lt_embed(), "--teacher", teacher, "--views", "1", "--image-size", "28", data,
             str(tmp_path / "no" / "such" / "dir" / "c.h5")], check=False)
    assert r.returncode == 1 and "c.h5" in r.stderr
    for p in os.listdir(tmp_path):
        assert not p.endswith(".partial"), p
    assert not os.path.exists(out)


def test_existing_cache_needs_overwrite(setup, tmp_path):
    d, data, teacher = setup
    out = tmp_path / "c.h5"
    out.write_bytes(b"precious")
    r = run([lt_embed(), "--teacher", teacher, "--views", "1", "--image-size", "28", data, str(out)],
            check=False)
    assert r.returncode == 1 and "--overwrite" in r.stderr
    assert out.read_bytes() == b"precious"
