"""lt-train's image pool (--image-pool, --pool-memory): a run whose views come from the host pool
(every image decoded once at start) equals, bit for bit, a run that decodes per view (stream),
with and without the stream kind's recent images, and auto; the metrics, the checkpoint and the
student are compared byte for byte. The reference is the stream kind with a budget too small to
keep any recent image: today's path, one decode per view through lt_cache_render_view, whose
views test_render.py and test_embed_e2e.py check against PIL/torchvision. A data-parallel run of
two processes with the host pool equals one process (within test_train_dp.py's tolerance). Host
over its budget, device on this CPU build and bad values are refused before any work; a stored
image that does not decode ends a host-pool run at start, naming the image as the stream run
names it when it reaches it."""
import os

import pytest
import torchvision

import st_io
from conftest import PLUGIN_DIR, run

os.environ["HDF5_PLUGIN_PATH"] = PLUGIN_DIR
from train_fixtures import lt_train, mpirun, tiny_cache
from test_train_dp import assert_same_run as assert_dp_same_run
from test_train_e2e import assert_same_run


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    d = tmp_path_factory.mktemp("pool")
    c, _ = tiny_cache(d, n_images=12, views=2, size=48)
    return c


# shuffled (the default), mixup (tiny_cache's lt-embed default), 2 loader threads so batches are
# filled out of order
COMMON = ["--batch-size", "4", "--epochs", "2", "--threads", "2", "--workers", "2",
          "--checkpoint-every", "3"]


def train(cache, out, *extra, check=True):
    return run([lt_train(), cache, "--out", out, *COMMON, *extra], check=check, timeout=600)


def pool_line(r):
    lines = [l for l in r.stderr.splitlines() if "image pool:" in l]
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_host_stream_auto_are_bit_identical(cache, tmp_path):
    ref = str(tmp_path / "ref")
    r = train(cache, ref, "--image-pool", "stream", "--pool-memory", "1")
    assert "image pool: stream (--image-pool stream), 12 images decoded per view" in pool_line(r)
    for name, args, want in [
        ("host", ["--image-pool", "host"], "image pool: host, 12 images decoded, "),
        ("auto", [], "image pool: host, 12 images decoded, "),
        ("stream", ["--image-pool", "stream"], "image pool: stream (--image-pool stream)"),
        ("auto_small", ["--pool-memory", "1K"], "image pool: stream, 12 images decoded per view: "
                                                "decoded they take"),
    ]:
        out = str(tmp_path / name)
        r = train(cache, out, *args)
        assert want in pool_line(r), (name, r.stderr)
        assert_same_run(out, ref)


def test_verbose_reports_decode_time(cache, tmp_path):
    r = train(cache, str(tmp_path / "v"), "--image-pool", "host", "--steps", "1", "-v")
    assert "image pool: decoded in " in r.stderr and " images/s)" in r.stderr, r.stderr
    r = train(cache, str(tmp_path / "q"), "--image-pool", "host", "--steps", "1", "-q")
    assert "image pool" not in r.stderr, r.stderr


def test_refusals(cache, tmp_path):
    out = str(tmp_path / "out")
    r = train(cache, out, "--image-pool", "host", "--pool-memory", "1000", check=False)
    assert r.returncode == 2, r.stderr
    assert "--image-pool host: the 12 images of" in r.stderr and "1000 bytes" in r.stderr, r.stderr
    assert "--pool-memory" in r.stderr
    assert not os.path.exists(out), os.listdir(out)  # refused before any work
    r = train(cache, out, "--image-pool", "device", check=False)
    assert r.returncode == 2 and "--image-pool device" in r.stderr, r.stderr
    assert "needs a GPU backend" in r.stderr and "cpu" in r.stderr, r.stderr
    assert not os.path.exists(out)
    for args, fragment in [
        (["--image-pool", "gpu"], "--image-pool: expected auto, host, stream or device, got 'gpu'"),
        (["--image-pool", ""], "--image-pool: expected"),
        (["--pool-memory", "0"], "--pool-memory: expected a size"),
        (["--pool-memory", "-5G"], "--pool-memory: expected a size"),
        (["--pool-memory", "8X"], "got '8X'"),
        (["--pool-memory", "1.5G"], "got '1.5G'"),
        (["--pool-memory", "G"], "got 'G'"),
        (["--pool-memory", "99999999999T"], "got '99999999999T'"),
    ]:
        r = train(cache, out, *args, check=False)
        assert r.returncode == 2, (args, r.stderr)
        assert fragment in r.stderr, (args, r.stderr)
    for ok in ["4096", "64K", "512M", "8G", "2GiB", "1T"]:
        r = train(cache, out, "--pool-memory", ok, "--steps", "1", "--overwrite")
        assert r.returncode == 0, (ok, r.stderr)


def corrupt_one_image(cache, tmp_path):
    """A copy of the cache with the first bytes of one stored image zeroed (the bytes are stored
    verbatim, so the file's bytes are found in the cache); returns (copy, image path)."""
    imgs = os.path.join(os.path.dirname(cache), "imgs")
    name = sorted(n for n in os.listdir(imgs) if n.endswith(".jpg"))[1]
    with open(os.path.join(imgs, name), "rb") as f:
        want = f.read()
    with open(cache, "rb") as f:
        data = bytearray(f.read())
    at = data.find(want)
    assert at >= 0 and data.find(want, at + 1) < 0
    data[at:at + 4] = b"\0\0\0\0"
    bad = str(tmp_path / "bad.h5")
    with open(bad, "wb") as f:
        f.write(data)
    return bad, name


def test_undecodable_image(cache, tmp_path):
    bad, name = corrupt_one_image(cache, tmp_path)
    stream, host = str(tmp_path / "stream"), str(tmp_path / "host")
    rs = train(bad, stream, "--image-pool", "stream", check=False)
    rh = train(bad, host, "--image-pool", "host", check=False)
    for r in (rs, rh):
        assert r.returncode == 1, r.stderr
        assert f"({name}): not a JPEG or PNG file" in r.stderr, r.stderr
    # the host pool fails at start, before the first step and before OUT is written
    assert not os.path.exists(os.path.join(host, "metrics.jsonl"))
    assert "image pool: host" not in rh.stderr


def test_two_processes_with_host_pool_equal_one(tmp_path):
    cache, _ = tiny_cache(tmp_path, n_images=24, views=2, size=64)
    init = str(tmp_path / "init.safetensors")  # test_train_dp's tolerance is on w_final − w_init
    st_io.save(init, {k: v.contiguous() for k, v in torchvision.models.resnet18().state_dict().items()})
    outs = {}
    for procs, threads in [(1, 2), (2, 1)]:
        out = str(tmp_path / f"p{procs}")
        r = run([*(mpirun(procs) if procs > 1 else []), lt_train(), cache, "--out", out,
                 "--batch-size", "8", "--epochs", "2", "--threads", str(threads),
                 "--init", init, "--image-pool", "host"], timeout=600)
        assert "image pool: host, 24 images decoded" in r.stderr, r.stderr
        outs[procs] = out
    assert_dp_same_run(outs[2], outs[1], init)
