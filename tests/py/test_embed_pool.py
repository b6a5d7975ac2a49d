"""lt-embed --image-pool: where the embedding pass finds the decoded images changes speed, never
bytes. host (every stored image decoded once, from CACHE.partial), stream (each batch decodes its
own) and auto give the same cache, dataset for dataset, as do a resumed run and a --dump-views
run; the refusals (device without a GPU renderer, host over its budget, host with --shard, bad
values) say why and lose nothing."""
import os

import numpy as np
import pytest

from conftest import PLUGIN_DIR, run
from embed_fixtures import lt_embed, rand_img, tiny_teacher
from test_embed_resume import assert_same

os.environ["HDF5_PLUGIN_PATH"] = PLUGIN_DIR

COMMON = ["--views", "3", "--image-size", "32", "--batch-size", "5", "--threads", "2", "--seed", "9"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("pool")
    data = d / "data"
    data.mkdir()
    rng = np.random.default_rng(4)
    for i in range(13):  # odd sizes, PNG and JPEG, a grey one
        w, h = int(rng.integers(20, 120)), int(rng.integers(20, 120))
        mode = "L" if i == 5 else "RGB"
        rand_img(rng, w, h, mode).save(str(data / ("img%02d.%s" % (i, "png" if i % 3 else "jpg"))))
    teacher = tiny_teacher(str(d / "t.safetensors"))
    return d, str(data), teacher


def embed(setup, out, *extra, check=True):
    d, data, teacher = setup
    return run([lt_embed(), "--teacher", teacher, "--device", "cpu", *COMMON, *extra, data, str(out)],
               check=check)


def test_kinds_give_the_same_cache(setup, tmp_path):
    ref = tmp_path / "stream.h5"
    r = embed(setup, ref, "--image-pool", "stream")
    assert "image pool: stream" in r.stderr
    for kind in ["host", "auto"]:
        out = tmp_path / (kind + ".h5")
        r = embed(setup, out, "--image-pool", kind)
        assert "image pool: host, 13 images decoded" in r.stderr, r.stderr
        assert_same(str(out), str(ref))
    # auto over a budget too small for the images: stream, the same cache
    out = tmp_path / "small.h5"
    r = embed(setup, out, "--pool-memory", "1K")
    assert "image pool: stream" in r.stderr
    assert_same(str(out), str(ref))


def test_dumped_views_equal(setup, tmp_path):
    dumps = {}
    for kind in ["stream", "host"]:
        dumps[kind] = tmp_path / ("views-" + kind)
        embed(setup, tmp_path / (kind + ".h5"), "--image-pool", kind, "--dump-views", str(dumps[kind]))
    names = sorted(os.listdir(dumps["stream"]))
    assert len(names) > 13 and names == sorted(os.listdir(dumps["host"]))
    for n in names:
        assert (dumps["stream"] / n).read_bytes() == (dumps["host"] / n).read_bytes(), n


@pytest.mark.parametrize("args,code,fragment", [
    (["--image-pool", "device"], 1, "--image-pool device"),
    (["--image-pool", "host", "--pool-memory", "1K"], 1, "more than the budget"),
    (["--image-pool", "host", "--shard", "1/2"], 1, "--shard"),
    (["--image-pool", "gpu"], 2, "--image-pool"),
    (["--pool-memory", "12Q"], 2, "--pool-memory"),
    (["--pool-memory", "0"], 2, "--pool-memory"),
])
def test_refusals(setup, tmp_path, args, code, fragment):
    out = tmp_path / "c.h5"
    r = embed(setup, out, *args, check=False)
    assert r.returncode == code, r.stderr
    assert fragment in r.stderr
    assert not os.path.exists(out)
    if "more than the budget" in fragment:
        # refused when the pass starts: CACHE.partial is kept, and a rerun that fits finishes it
        assert os.path.exists(str(out) + ".partial")
        embed(setup, out, "--image-pool", "stream")
        ref = tmp_path / "ref.h5"
        embed(setup, ref, "--image-pool", "stream")
        assert_same(str(out), str(ref))
