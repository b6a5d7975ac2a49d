"""The child-process check of existing caches (lib/data/cache_check.c), through the tools.

lt-train, lt-embed --append (the existing CACHE) and a resumed lt-embed (the interrupted run's
CACHE.partial) first read the file's structure in a child process, so that a crash or an endless
loop inside libhdf5 on a damaged file becomes exit 1 with a message naming the file, never a
signal or a hang. Checked with the damaged files libhdf5 crashes or hangs on
(tests/fuzz/known-hdf5/), with damaged B-tree nodes, and with the LT_CACHE_CHECK_SELFTEST hook
that makes the child crash, hang or fail on purpose (so the handling is proven whatever libhdf5
does with a given file). A valid cache passes."""
import glob
import os
import random
import shutil
import signal
import time

import pytest

from conftest import PLUGIN_DIR, ROOT, run
from embed_fixtures import lt_embed, tiny_teacher
from test_embed_resume import assert_same, make_images, start_and_wait
from train_fixtures import lt_train, tiny_cache

os.environ["HDF5_PLUGIN_PATH"] = PLUGIN_DIR

KNOWN = sorted(glob.glob(os.path.join(ROOT, "tests", "fuzz", "known-hdf5", "*")))
FAST = {"LT_CACHE_CHECK_TIMEOUT": "5"}  # the hang inputs: reported after 5 s
TRAIN = ["--steps", "1", "--batch-size", "2", "--threads", "2", "-q"]
EMBED = ["--views", "2", "--image-size", "64", "--dtype", "f32", "--seed", "3", "-q"]


def no_signal(r):
    assert r.returncode >= 0, f"killed by signal {-r.returncode}\n{r.stderr}"


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A valid cache made by lt-embed: (cache, images folder, teacher)."""
    d = tmp_path_factory.mktemp("guard")
    cache, _ = tiny_cache(d, n_images=8, views=2, size=64, dim=64)
    return cache, os.path.join(str(d), "imgs"), os.path.join(str(d), "teacher.safetensors")


def copy_of(src, tmp_path, name="c.h5"):
    dst = str(tmp_path / name)
    shutil.copy(src, dst)
    return dst


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def append(made, cache, env=None):
    _, imgs, teacher = made
    return run([lt_embed(), "--append", "--teacher", teacher, *EMBED, imgs, cache], check=False,
               env=env, timeout=300)


# ------------------------------------------------------------------ lt-train

def test_valid_cache_passes_and_trains(made, tmp_path):
    r = run([lt_train(), made[0], "--out", tmp_path / "out", *TRAIN], check=False, timeout=600)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "student.safetensors").exists()


@pytest.mark.skipif(not KNOWN, reason="no files in tests/fuzz/known-hdf5")
@pytest.mark.parametrize("path", KNOWN, ids=os.path.basename)
def test_known_hdf5_crashers_train(path, tmp_path):
    t0 = time.time()
    r = run([lt_train(), path, "--out", tmp_path / "out", *TRAIN], check=False, env=FAST,
            timeout=120)
    no_signal(r)
    assert r.returncode in (1, 2), r.stderr
    assert path in r.stderr and "error" in r.stderr, r.stderr
    assert not (tmp_path / "out" / "student.safetensors").exists()
    assert time.time() - t0 < 60


@pytest.mark.skipif(not KNOWN, reason="no files in tests/fuzz/known-hdf5")
@pytest.mark.parametrize("path", KNOWN, ids=os.path.basename)
def test_known_hdf5_crashers_append(path, made, tmp_path):
    cache = copy_of(path, tmp_path)
    r = append(made, cache, env=FAST)
    no_signal(r)
    assert r.returncode in (1, 2), r.stderr
    assert cache in r.stderr, r.stderr
    assert read_bytes(cache) == read_bytes(path)
    assert not os.path.exists(cache + ".partial")


@pytest.mark.parametrize("mode, says", [
    ("segv", "crashed (SIGSEGV)"), ("abort", "crashed (SIGABRT)"), ("exit", "status 3 and no report"),
    ("hang", "did not finish reading the file's structure within 1 s"),
    ("error", "the check failed on purpose")])
def test_train_reports_every_outcome_of_the_child(mode, says, made, tmp_path):
    t0 = time.time()
    r = run([lt_train(), made[0], "--out", tmp_path / "out", *TRAIN], check=False, timeout=120,
            env={"LT_CACHE_CHECK_SELFTEST": mode, "LT_CACHE_CHECK_TIMEOUT": "1"})
    no_signal(r)
    assert r.returncode == 1, r.stderr
    assert f"lt-train: error: {made[0]}: " in r.stderr and says in r.stderr, r.stderr
    assert not (tmp_path / "out" / "student.safetensors").exists()
    assert time.time() - t0 < 60


def test_bad_timeout_setting_is_named(made, tmp_path):
    r = run([lt_train(), made[0], "--out", tmp_path / "out", *TRAIN], check=False,
            env={"LT_CACHE_CHECK_TIMEOUT": "later"})
    assert r.returncode == 1 and "LT_CACHE_CHECK_TIMEOUT" in r.stderr and "'later'" in r.stderr


def spoiled_btrees(src, tmp_path):
    """Copies of src with one v1 B-tree node ("TREE" signature) spoiled each."""
    data = read_bytes(src)
    at = [i for i in range(len(data) - 3) if data[i:i + 4] == b"TREE"]
    assert len(at) >= 3
    for k, i in enumerate(at):
        p = str(tmp_path / f"tree{k}.h5")
        with open(p, "wb") as f:
            f.write(data[:i] + b"X" + data[i + 1:])
        yield p


def test_damaged_btree_nodes(made, tmp_path):
    """Every spoiled node is an error naming the file; the chunk indexes that the reader does
    not read at open (/images/bytes, /embeddings...) are found by the check's walk."""
    walk = []
    for p in spoiled_btrees(made[0], tmp_path):
        r = run([lt_train(), p, "--out", tmp_path / "out", *TRAIN], check=False, timeout=120)
        no_signal(r)
        assert r.returncode == 1 and p in r.stderr, r.stderr
        if "chunk index" in r.stderr:
            walk.append((p, r.stderr))
    assert any("/embeddings: cannot walk the chunk index" in e for _, e in walk), walk
    assert any("/images/bytes: cannot walk the chunk index" in e for _, e in walk), walk


def test_random_damage_next_to_metadata(made, tmp_path):
    """Seeded random bytes written next to the HDF5 metadata (B-tree nodes, heaps, object
    headers) of a valid cache: lt-train always exits 1 naming the file (damaged) or 2 (the cache
    read fine, then --batch-size is refused as larger than the cache), never by a signal."""
    src = read_bytes(made[0])
    sigs = [i for sig in (b"TREE", b"HEAP", b"SNOD", b"OHDR") for i in range(len(src) - 3)
            if src[i:i + 4] == sig]
    rng = random.Random(5)
    p = str(tmp_path / "m.h5")
    seen = set()
    for _ in range(100):
        b = bytearray(src)
        base = rng.choice(sigs)
        for _ in range(rng.randint(1, 4)):
            b[min(len(b) - 1, base + rng.randint(0, 200))] = rng.randrange(256)
        with open(p, "wb") as f:
            f.write(b)
        r = run([lt_train(), p, "--out", tmp_path / "out", "--batch-size", "65536", "-q"],
                check=False, env=FAST, timeout=120, errors="replace")
        no_signal(r)
        assert r.returncode in (1, 2), r.stderr
        assert r.returncode == 2 or f"lt-train: error: {p}: " in r.stderr, r.stderr
        seen.add(r.returncode)
    assert seen == {1, 2}


# ------------------------------------------------------------------ lt-embed

def test_append_to_damaged_cache(made, tmp_path):
    bad = next(p for p in spoiled_btrees(made[0], tmp_path)
               if "/embeddings:" in run([lt_train(), p, "--out", tmp_path / "o", *TRAIN],
                                         check=False).stderr)
    before = read_bytes(bad)
    r = append(made, bad)
    no_signal(r)
    assert r.returncode == 1, r.stderr
    assert f"lt-embed: error: {bad}: not a valid lt cache: /embeddings: cannot walk the chunk " \
           "index" in r.stderr, r.stderr
    assert read_bytes(bad) == before and not os.path.exists(bad + ".partial")


def test_append_when_the_child_crashes(made, tmp_path):
    cache = copy_of(made[0], tmp_path)
    r = append(made, cache, env={"LT_CACHE_CHECK_SELFTEST": "segv"})
    no_signal(r)
    assert r.returncode == 1, r.stderr
    assert f"lt-embed: error: {cache}: the HDF5 library crashed" in r.stderr, r.stderr
    assert read_bytes(cache) == read_bytes(made[0]) and not os.path.exists(cache + ".partial")
    r = append(made, cache)  # the same cache, no hook: nothing to append
    assert r.returncode == 0 and read_bytes(cache) == read_bytes(made[0]), r.stderr


def test_resume_with_a_partial_the_child_cannot_read(tmp_path):
    """A CACHE.partial whose check fails (here: the child crashes on purpose) is rebuilt, the
    embedded views are kept, and the result equals an uninterrupted run."""
    data = tmp_path / "imgs"
    make_images(data, [f"img{i:02d}.png" for i in range(30)], 1)
    t = tiny_teacher(str(tmp_path / "t.safetensors"), dim=128, depth=6)
    args = ["--teacher", t, "--views", "16", "--image-size", "28", "--batch-size", "4",
            "--threads", "1"]
    ref = tmp_path / "ref.h5"
    run([lt_embed(), *args, "-q", data, ref])
    out = tmp_path / "c.h5"
    p = start_and_wait([*args, data, out], out, 40)
    p.send_signal(signal.SIGINT)
    p.communicate(timeout=60)
    assert p.returncode == 130
    assert os.path.exists(str(out) + ".partial")
    r = run([lt_embed(), *args, data, out], check=False, timeout=300,
            env={"LT_CACHE_CHECK_SELFTEST": "segv"})
    assert r.returncode == 0, r.stderr
    assert f"{out}.partial: the HDF5 library crashed" in r.stderr and "rebuilding it" in r.stderr
    assert_same(ref, out)
