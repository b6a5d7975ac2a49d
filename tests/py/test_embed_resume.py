"""Resumable lt-embed, --append and lt-train --verify, end to end.

A run killed with SIGKILL (or stopped with SIGINT, exit 130) and rerun as it was finishes with
exactly the datasets of an uninterrupted run; a rerun with other settings is refused (exit 1)
naming the setting; a torn last row, a lost or half-assembled CACHE.partial are recovered.
--append adds views (equal to a one-go cache) and images (old rows untouched) and refuses
changed images; lt-train --verify finds a flipped byte in /images/bytes."""
import os
import shutil
import signal
import subprocess
import time

import h5py
import numpy as np
import pytest

from conftest import PLUGIN_DIR, cache_text, run
from embed_fixtures import lt_embed, rand_img, tiny_teacher

os.environ["HDF5_PLUGIN_PATH"] = PLUGIN_DIR

# deep enough that 60 images x 16 views take a few seconds on one thread
KILL_ARGS = ["--views", "16", "--image-size", "28", "--batch-size", "4", "--threads", "1"]


def read_all(path):
    """Every dataset, and every root attribute but the creation time."""
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
        for k, v in f.attrs.items():
            if k != "created":
                out["@" + k] = v
    return out


def assert_same(a, b, skip=()):
    A, B = read_all(a), read_all(b)
    assert sorted(A) == sorted(B)
    for k in A:
        if k not in skip:
            assert np.array_equal(A[k], B[k]), k


def make_images(folder, names, seed):
    rng = np.random.default_rng(seed)
    for name in names:
        w, h = int(rng.integers(30, 90)), int(rng.integers(30, 90))
        os.makedirs(os.path.dirname(os.path.join(folder, name)), exist_ok=True)
        rand_img(rng, w, h).save(os.path.join(folder, name))


def emb_log_rows(cache):
    """Rows in CACHE.partial.emb (header: 64 bytes + settings; row: D*2 + 8 bytes)."""
    p = str(cache) + ".partial.emb"
    try:
        size = os.path.getsize(p)
        with open(p, "rb") as f:
            head = f.read(64)
    except OSError:
        return 0
    if len(head) < 64:
        return 0
    start = int.from_bytes(head[48:56], "little")
    row = int.from_bytes(head[24:28], "little") + 8
    return max(0, (size - start) // row)


def start_and_wait(args, cache, rows):
    """Starts lt-embed and returns it once its log holds at least `rows` rows."""
    p = subprocess.Popen([lt_embed(), *map(str, args)], stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while emb_log_rows(cache) < rows:
        assert p.poll() is None, p.communicate()[1]
        assert time.time() - t0 < 60
        time.sleep(0.01)
    return p


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """An uninterrupted reference cache, and a snapshot of a run killed by SIGKILL mid-way."""
    d = tmp_path_factory.mktemp("resume")
    data = d / "imgs"
    make_images(data, [f"d{i // 10}/img{i:02d}.png" for i in range(60)], 0)
    t = tiny_teacher(str(d / "t.safetensors"), dim=128, depth=6)
    ref = d / "ref.h5"
    run([lt_embed(), "--teacher", t, *KILL_ARGS, "-q", data, ref])
    out = d / "killed.h5"
    p = start_and_wait(["--teacher", t, *KILL_ARGS, data, out], out, 100)
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=30)
    assert p.returncode == -signal.SIGKILL
    snap = d / "snapshot"
    snap.mkdir()
    for suffix in (".partial", ".partial.emb"):
        shutil.copy(str(out) + suffix, snap / ("c.h5" + suffix))
    assert not out.exists()
    return d, data, t, ref, snap


def restore(killed, dest):
    """Copies the killed run's CACHE.partial and .partial.emb next to dest; returns dest."""
    snap = killed[4]
    for suffix in (".partial", ".partial.emb"):
        shutil.copy(snap / ("c.h5" + suffix), str(dest) + suffix)
    return dest


def test_kill9_then_rerun_equals_uninterrupted(killed, tmp_path):
    d, data, t, ref, _ = killed
    out = restore(killed, tmp_path / "c.h5")
    done = emb_log_rows(out)
    assert 100 <= done < 960
    r = run([lt_embed(), "--teacher", t, *KILL_ARGS, data, out])
    assert "continuing an interrupted run" in r.stderr and "of 960 views" in r.stderr
    assert not os.path.exists(str(out) + ".partial")
    assert not os.path.exists(str(out) + ".partial.emb")
    assert_same(ref, out)


def test_torn_row_and_lost_partial_are_recovered(killed, tmp_path):
    d, data, t, ref, _ = killed
    out = restore(killed, tmp_path / "c.h5")
    log = str(out) + ".partial.emb"
    rows = emb_log_rows(out)
    assert rows % 4 == 0  # whole batches
    # a crash mid-write: the last row lost, the one before torn, garbage after it
    os.truncate(log, os.path.getsize(log) - (128 * 2 + 8) - 100)
    with open(log, "ab") as f:
        f.write(os.urandom(50))
    rows -= 2  # not a multiple of the batch size: the batch is recomputed, the same bits kept
    os.remove(str(out) + ".partial")  # e.g. lost: rebuilt from DATA_DIR, the rows kept
    r = run([lt_embed(), "--teacher", t, *KILL_ARGS, data, out])
    assert "rebuilding it" in r.stderr and f"{rows} of 960 views" in r.stderr
    assert_same(ref, out)


def test_half_assembled_partial_is_rebuilt(killed, tmp_path):
    d, data, t, ref, _ = killed
    out = restore(killed, tmp_path / "c.h5")
    log = str(out) + ".partial.emb"
    # finish the embedding but stop before assembly, then fake a crash during it: state 1 and a
    # damaged CACHE.partial
    with open(log, "r+b") as f:
        head = bytearray(f.read(64))
    head[28:32] = (1).to_bytes(4, "little")
    h = 0xcbf29ce484222325
    for b in head[:56]:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    head[56:64] = h.to_bytes(8, "little")
    with open(log, "r+b") as f:
        f.write(head)
    with open(str(out) + ".partial", "r+b") as f:
        f.truncate(5000)
    r = run([lt_embed(), "--teacher", t, *KILL_ARGS, data, out])
    assert "was assembling" in r.stderr
    assert_same(ref, out)


@pytest.mark.parametrize("change,named", [
    (["--views", "8"], "--views was 16, now 8"),
    (["--seed", "1"], "--seed was 0, now 1"),
    (["--image-size", "42"], "--image-size was 28, now 42"),
    (["--no-mixup"], "--mixup"),
    (["--dtype", "f32"], "--dtype was f16, now f32"),
    (["--jitter", "0.4,0.4,0.2,0.05"], "--jitter was"),
    (["--crop-scale", "0.2,1"], "--crop-scale was"),
])
def test_other_settings_are_refused(killed, tmp_path, change, named):
    d, data, t, ref, _ = killed
    out = restore(killed, tmp_path / "c.h5")
    before = os.path.getsize(str(out) + ".partial.emb")
    args = KILL_ARGS + change if change[0] != "--views" else change + KILL_ARGS[2:]
    r = run([lt_embed(), "--teacher", t, *args, data, out], check=False)
    assert r.returncode == 1, r.stderr
    assert named in r.stderr and "--overwrite" in r.stderr and "c.h5.partial" in r.stderr
    assert os.path.getsize(str(out) + ".partial.emb") == before  # untouched


def test_other_teacher_or_data_are_refused_and_overwrite_starts_over(killed, tmp_path):
    d, data, t, ref, _ = killed
    out = restore(killed, tmp_path / "c.h5")
    t2 = tiny_teacher(str(tmp_path / "t2.safetensors"), dim=128, depth=6, seed=1)
    r = run([lt_embed(), "--teacher", t2, *KILL_ARGS, data, out], check=False)
    assert r.returncode == 1 and "another teacher" in r.stderr and "--overwrite" in r.stderr
    data2 = tmp_path / "imgs"
    shutil.copytree(data, data2)
    make_images(data2, ["extra.png"], 1)
    r = run([lt_embed(), "--teacher", t, *KILL_ARGS, data2, out], check=False)
    assert r.returncode == 1 and "other data" in r.stderr, r.stderr
    # --overwrite discards the partial and starts over (a small run, to stay fast)
    small = tmp_path / "small"
    make_images(small, [f"s{i}.png" for i in range(3)], 2)
    r = run([lt_embed(), "--teacher", t, "--views", "2", "--image-size", "28", "--overwrite",
             small, out])
    assert "discarding" in r.stderr and "continuing" not in r.stderr
    with h5py.File(out) as f:
        assert f["embeddings"].shape == (6, 128)
    assert not os.path.exists(str(out) + ".partial.emb")


def test_sigint_exits_130_and_rerun_continues(killed, tmp_path):
    d, data, t, ref, _ = killed
    out = tmp_path / "c.h5"
    p = start_and_wait(["--teacher", t, *KILL_ARGS, data, out], out, 40)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "interrupted after" in err and "of 960 views" in err and "rerun the same command" in err
    assert os.path.exists(str(out) + ".partial") and not out.exists()
    r = run([lt_embed(), "--teacher", t, *KILL_ARGS, data, out])
    assert "continuing an interrupted run" in r.stderr
    assert_same(ref, out)


# ---- --append ----

BASE = ["--image-size", "28", "--batch-size", "1", "--threads", "1", "-q"]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    d = tmp_path_factory.mktemp("append")
    data = d / "imgs"
    make_images(data, [f"a{i:02d}.png" for i in range(8)], 3)
    t = tiny_teacher(str(d / "t.safetensors"), dim=64, depth=1)
    return d, data, t


def test_append_views_equals_one_go(small, tmp_path):
    d, data, t = small
    grown, one_go = tmp_path / "grown.h5", tmp_path / "one.h5"
    run([lt_embed(), "--teacher", t, "--views", "2", *BASE, data, grown])
    before = read_all(grown)
    run([lt_embed(), "--teacher", t, "--views", "3", "--append", *BASE, data, grown])
    run([lt_embed(), "--teacher", t, "--views", "3", *BASE, data, one_go])
    assert_same(grown, one_go)  # batch size 1: the same teacher arithmetic, bit for bit
    after = read_all(grown)
    keep = [i * 3 + v for i in range(8) for v in range(2)]
    assert np.array_equal(after["embeddings"][keep], before["embeddings"])
    assert np.array_equal(after["samples/crop"][keep], before["samples/crop"])


def test_append_images(small, tmp_path):
    d, data, t = small
    data2 = tmp_path / "imgs"
    shutil.copytree(data, data2)
    grown, one_go = tmp_path / "grown.h5", tmp_path / "one.h5"
    for mix in ([], ["--no-mixup"]):
        for p in (grown, one_go):
            if p.exists():
                p.unlink()
        shutil.rmtree(data2)
        shutil.copytree(data, data2)
        run([lt_embed(), "--teacher", t, "--views", "2", *mix, *BASE, data2, grown])
        before = read_all(grown)
        make_images(data2, ["z0.png", "z1.png", "z2.png"], 4)  # sort after the old ones
        r = run([lt_embed(), "--teacher", t, "--views", "2", "--append", *mix, *BASE[:-1], data2,
                 grown])
        assert "3 new files" in r.stderr
        after = read_all(grown)
        with h5py.File(grown, "r") as f:
            assert [p.decode() for p in cache_text(f, "images/path")][8:] == \
                ["z0.png", "z1.png", "z2.png"]
        for k, v in before.items():
            if k.startswith("@"):
                continue
            if k.startswith("skipped/"):
                assert np.array_equal(after[k], v), k
            else:
                assert np.array_equal(after[k][: len(v)], v), k  # old rows untouched
        assert after["@num_images"] == 11 and after["embeddings"].shape[0] == 22
        assert (after["samples/image"][16:, 1] < 11).all()
        if mix:  # no partners: equal to a one-go cache of the grown folder
            run([lt_embed(), "--teacher", t, "--views", "2", *mix, *BASE, data2, one_go])
            assert_same(grown, one_go, skip=("images/mtime_ns",))


def test_append_refusals_and_nothing_to_do(small, tmp_path):
    d, data, t = small
    data2 = tmp_path / "imgs"
    shutil.copytree(data, data2)
    c = tmp_path / "c.h5"
    r = run([lt_embed(), "--teacher", t, "--views", "2", "--append", *BASE, data2, c], check=False)
    assert r.returncode == 1 and "does not exist" in r.stderr
    run([lt_embed(), "--teacher", t, "--views", "2", *BASE, data2, c])
    stamp = os.stat(c).st_mtime_ns
    # same content, new mtime: not a change; nothing new: nothing to do, CACHE untouched
    os.utime(data2 / "a03.png", ns=(1, 2))
    r = run([lt_embed(), "--teacher", t, "--views", "2", "--append", *BASE[:-1], data2, c])
    assert "nothing to append" in r.stderr and os.stat(c).st_mtime_ns == stamp
    # fewer views, other settings
    r = run([lt_embed(), "--teacher", t, "--views", "1", "--append", *BASE, data2, c], check=False)
    assert r.returncode == 1 and "can only add views" in r.stderr
    r = run([lt_embed(), "--teacher", t, "--views", "3", "--append", "--seed", "9", *BASE, data2,
             c], check=False)
    assert r.returncode == 1 and "--seed was 0, now 9" in r.stderr
    # changed content (same name): refused, naming the file
    make_images(data2, ["a05.png"], 99)
    make_images(data2, ["new.png"], 5)
    r = run([lt_embed(), "--teacher", t, "--views", "2", "--append", *BASE, data2, c], check=False)
    assert r.returncode == 1 and "a05.png" in r.stderr and "changed" in r.stderr
    assert os.stat(c).st_mtime_ns == stamp and not os.path.exists(str(c) + ".partial")


# ---- lt-train --verify ----

def test_train_verify_finds_a_flipped_byte(small, tmp_path):
    d, data, t = small
    c = tmp_path / "c.h5"
    run([lt_embed(), "--teacher", t, "--views", "2", *BASE, data, c])
    train = os.path.join(os.path.dirname(lt_embed()), "lt-train")
    common = ["--batch-size", "4", "--steps", "1", "--threads", "2", "-q"]
    r = run([train, c, "--out", tmp_path / "o1", "--verify", "1", *common])
    with h5py.File(c, "r+") as f:
        off = f["images/offset"][()]
        b = f["images/bytes"]
        pos = int(off[5]) + (int(off[6]) - int(off[5])) // 2
        b[pos] = b[pos] ^ 0x40
        name = cache_text(f, "images/path")[5].decode()
    r = run([train, c, "--out", tmp_path / "o2", "--verify", "1", *common], check=False)
    assert r.returncode == 1, r.stderr
    assert name in r.stderr and "damaged" in r.stderr and "image 5" in r.stderr
    r = run([train, c, "--out", tmp_path / "o3", "--verify", "2", *common], check=False)
    assert r.returncode == 2 and "verify" in r.stderr
