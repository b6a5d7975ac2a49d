"""lt-embed --shard K/N and --merge, end to end.

The reference is the one-process lt-embed run on the same folder: the parts merged must give its
cache dataset for dataset and attribute for attribute, read back with h5py. Only `created` (the
time each file was written) differs. With --batch-size 1 the teacher sees each view alone in both
runs, so the embeddings are bit-identical too; with other batch sizes they may differ by one
float16 rounding (the teacher's sums are grouped by batch). Also: every refused merge (missing,
duplicated, foreign, damaged, unfinished part) names the part and writes nothing, an interrupted
shard resumes like any run, and lt-train refuses a part."""
import hashlib
import os
import shutil
import signal

import h5py
import numpy as np
import pytest

from conftest import BIN, PLUGIN_DIR, cache_text, run
from embed_fixtures import lt_embed, rand_img, tiny_teacher
from test_embed_resume import KILL_ARGS, emb_log_rows, read_all, start_and_wait

os.environ["HDF5_PLUGIN_PATH"] = PLUGIN_DIR

ARGS = ["--views", "3", "--image-size", "28", "--seed", "7", "-q"]
EXACT = ["--batch-size", "1", "--threads", "1"]  # every view alone: the teacher's bits do not
                                                 # depend on what else is in its batch


def make_folder(root, n, seed, broken=()):
    """n images of random sizes (names sorted as written) plus broken files; returns the sorted
    relative paths of all and of the broken ones."""
    rng = np.random.default_rng(seed)
    names = []
    for i in range(n):
        name = f"d{i % 3}/img{i:02d}." + ("png" if i % 2 else "jpg")
        p = os.path.join(root, name)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        rand_img(rng, int(rng.integers(20, 70)), int(rng.integers(20, 70))).save(p)
        names.append(name)
    for name in broken:
        p = os.path.join(root, name)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(b"not an image at all")
        names.append(name)
    return sorted(names, key=str.encode), list(broken)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("shard")
    data = d / "imgs"
    files, broken = make_folder(data, 8, 1, broken=["d1/img03x.jpg"])
    t = tiny_teacher(str(d / "t.safetensors"))
    ref = d / "ref.h5"
    run([lt_embed(), "--teacher", t, *ARGS, *EXACT, data, ref])
    return d, data, t, ref, files, broken


def make_parts(setup, folder, n, extra=(), names="p{}.h5"):
    d, data, t = setup[0], setup[1], setup[2]
    folder.mkdir(exist_ok=True)
    parts = []
    for k in range(1, n + 1):
        p = folder / names.format(k)
        run([lt_embed(), "--teacher", t, *ARGS, *extra, "--shard", f"{k}/{n}", data, p])
        parts.append(p)
    return parts


def file_digest(p):
    return hashlib.sha256(open(p, "rb").read()).hexdigest()


@pytest.mark.parametrize("n", [1, 2, 3, 12])
def test_merged_equals_one_process(setup, tmp_path, n):
    d, data, t, ref, files, broken = setup
    parts = make_parts(setup, tmp_path, n, EXACT)
    out = tmp_path / "merged.h5"
    run([lt_embed(), "--merge", out, *reversed(parts)])  # any order
    A, B = read_all(ref), read_all(out)
    assert sorted(A) == sorted(B)
    for k in A:
        assert np.array_equal(A[k], B[k]), k
    # each part: the files of its contiguous range, its images' samples with the whole cache's
    # image indices, and the attributes that place it
    valid = [f for f in files if f not in broken]
    with h5py.File(ref) as r:
        ref_samples = r["samples/image"][()]
    for k, p in enumerate(parts, 1):
        lo, hi = (k - 1) * len(files) // n, k * len(files) // n
        mine = [f.encode() for f in files[lo:hi] if f not in broken]
        with h5py.File(p) as f:
            a = f.attrs
            assert a["format"] == b"lt-cache-part"
            assert (a["shard_index"], a["shard_count"]) == (k, n)
            assert (a["shard_first_file"], a["shard_files"], a["shard_total_files"]) == \
                (lo, hi - lo, len(files))
            first = sum(1 for x in files[:lo] if x not in broken)
            assert (a["shard_first_image"], a["shard_total_images"]) == (first, len(valid))
            assert cache_text(f, "images/path") == mine
            assert cache_text(f, "skipped/path") == \
                [x.encode() for x in files[lo:hi] if x in broken]
            V = 3
            assert np.array_equal(f["samples/image"][()],
                                  ref_samples[first * V:(first + len(mine)) * V])


def test_other_batches_differ_by_one_rounding_at_most(setup, tmp_path):
    d, data, t, ref, files, broken = setup
    parts = make_parts(setup, tmp_path, 2, ["--batch-size", "5", "--threads", "2"])
    out = tmp_path / "merged.h5"
    run([lt_embed(), "--merge", out, *parts])
    A, B = read_all(ref), read_all(out)
    assert sorted(A) == sorted(B)
    for k in A:
        if k == "checksums/embeddings":
            continue  # follows the embeddings
        if k == "embeddings":
            a, b = A[k], B[k]
            ulp = np.spacing(np.maximum(np.abs(a), np.abs(b))).astype(np.float32)
            assert np.all(np.abs(a.astype(np.float32) - b.astype(np.float32)) <= ulp)
        else:
            assert np.array_equal(A[k], B[k]), k


@pytest.fixture(scope="module")
def three(setup, tmp_path_factory):
    """Three good parts (default batches), and their contents' hashes."""
    folder = tmp_path_factory.mktemp("three")
    parts = make_parts(setup, folder, 3)
    return folder, parts


def refused(args, tmp_path, parts, fragment, cache=None):
    """A merge that must fail (exit 1) with fragment in its message and write nothing."""
    cache = cache or tmp_path / "m.h5"
    before = {str(p): file_digest(p) for p in parts if os.path.exists(p)}
    r = run([lt_embed(), "--merge", cache, *args], check=False)
    assert r.returncode == 1, r.stderr
    assert fragment in r.stderr, r.stderr
    assert not os.path.exists(cache) and not os.path.exists(str(cache) + ".partial")
    assert {str(p): file_digest(p) for p in parts if os.path.exists(p)} == before
    return r.stderr


def test_refuses_missing_part(three, tmp_path):
    _, (p1, p2, p3) = three
    refused([p1, p3], tmp_path, [p1, p3], "shard 2 of 3 is missing")
    refused([p1, p2, tmp_path / "nope.h5"], tmp_path, [p1, p2], "nope.h5: No such file")


def test_refuses_duplicated_part(three, tmp_path):
    _, (p1, p2, p3) = three
    refused([p1, p2, p3, p2], tmp_path, [p1, p2, p3], f"{p2} is given twice")
    copy = tmp_path / "copy.h5"
    shutil.copy(p2, copy)
    refused([p1, p2, copy], tmp_path, [p1, p2, copy], "are both shard 2 of 3")


def test_refuses_unfinished_part(setup, three, tmp_path):
    _, (p1, p2, p3) = three
    gone = tmp_path / "p3.h5"
    shutil.copy(p3, str(gone) + ".partial")  # what a running or interrupted shard leaves:
    with h5py.File(str(gone) + ".partial", "r+") as f:  # the part without its 'complete' mark
        del f.attrs["complete"]
    msg = refused([p1, p2, gone], tmp_path, [p1, p2], f"{gone} is not finished")
    assert "rerun its command" in msg
    refused([p1, p2, str(gone) + ".partial"], tmp_path, [p1, p2], "not a finished lt cache")


def test_refuses_foreign_parts(setup, three, tmp_path):
    d, data, t, ref, files, broken = setup
    _, (p1, p2, p3) = three
    seed = make_parts(setup, tmp_path / "seed", 3, ["--seed", "8"])
    refused([p1, p2, seed[2]], tmp_path, [p1, p2, seed[2]], "--seed was 7 there, 8 here")
    views = make_parts(setup, tmp_path / "views", 3, ["--views", "2"])
    refused([p1, views[1], p3], tmp_path, [p1, p3], "--views was 3 there, 2 here")
    t2 = tiny_teacher(str(tmp_path / "t2.safetensors"), seed=5)
    other = tmp_path / "teacher.h5"
    run([lt_embed(), "--teacher", t2, *ARGS, "--shard", "2/3", data, other])
    refused([p1, other, p3], tmp_path, [p1, other, p3], "another teacher")
    two = make_parts(setup, tmp_path / "two", 2)
    refused([p1, two[1], p3], tmp_path, [p1, p3], "shard 2 of 2")
    # another folder: the same files and one more
    data2 = tmp_path / "imgs2"
    shutil.copytree(data, data2)
    rand_img(np.random.default_rng(3), 30, 30).save(data2 / "zzz.png")
    p = tmp_path / "folder.h5"
    run([lt_embed(), "--teacher", t, *ARGS, "--shard", "1/3", data2, p])
    refused([p, p2, p3], tmp_path, [p, p2, p3], "made from other files")
    # a whole cache is not a part
    refused([p1, p2, p3, ref], tmp_path, [p1, p2, p3, ref], "is a whole lt cache")


def damage(part, name, index):
    with h5py.File(part, "r+") as f:
        d = f[name]
        v = d[index]
        d[index] = v ^ 1 if np.issubdtype(d.dtype, np.integer) else v + 0.5


@pytest.mark.parametrize("name,index,fragment", [
    ("images/bytes", 40, "its stored bytes do not match their SHA-256"),
    ("samples/lambda", 2, "its stored recipe does not match its checksum"),
    ("checksums/embeddings", 1, "its stored embedding does not match its checksum"),
])
def test_refuses_damaged_part(three, tmp_path, name, index, fragment):
    _, (p1, p2, p3) = three
    bad = tmp_path / "bad.h5"
    shutil.copy(p2, bad)
    damage(bad, name, index)
    msg = refused([p1, bad, p3], tmp_path, [p1, bad, p3], fragment)
    assert str(bad) in msg


def test_merge_output_rules(three, tmp_path):
    _, parts = three
    out = tmp_path / "m.h5"
    out.write_text("mine")
    r = run([lt_embed(), "--merge", out, *parts], check=False)
    assert r.returncode == 1 and "already exists; pass --overwrite" in r.stderr
    r = run([lt_embed(), "--merge", "--overwrite", out, *parts], check=False)
    assert r.returncode == 1 and "is left as it is" in r.stderr and out.read_text() == "mine"
    out.unlink()
    run([lt_embed(), "--merge", out, *parts])
    run([lt_embed(), "--merge", "--overwrite", "-q", out, *parts])
    r = run([lt_embed(), "--merge", "--seed", "1", out, *parts], check=False)
    assert r.returncode == 2 and "--merge takes only" in r.stderr
    r = run([lt_embed(), "--merge", out], check=False)
    assert r.returncode == 2 and "at least one PART" in r.stderr


def test_lt_train_refuses_a_part(three, tmp_path):
    _, (p1, _, _) = three
    r = run([os.path.join(BIN, "lt-train"), p1, "--out", tmp_path / "out", "--steps", "1"],
            check=False)
    assert r.returncode != 0
    assert "part 1 of 3 of a sharded lt-embed run" in r.stderr
    assert "lt-embed --merge" in r.stderr


@pytest.mark.parametrize("bad", ["0/3", "4/3", "3", "a/3", "1/0", "/3"])
def test_shard_usage_errors(setup, tmp_path, bad):
    d, data, t = setup[:3]
    r = run([lt_embed(), "--teacher", t, "--shard", bad, data, tmp_path / "p.h5"], check=False)
    assert r.returncode == 2 and "--shard: expected K/N" in r.stderr, r.stderr
    assert not os.path.exists(tmp_path / "p.h5.partial")


def test_shard_with_append_is_a_usage_error(setup, tmp_path):
    d, data, t = setup[:3]
    r = run([lt_embed(), "--teacher", t, "--shard", "1/2", "--append", data, tmp_path / "p.h5"],
            check=False)
    assert r.returncode == 2 and "--shard and --append" in r.stderr


def test_interrupted_shard_resumes(tmp_path):
    data = tmp_path / "imgs"
    make_folder(data, 30, 2)
    t = tiny_teacher(str(tmp_path / "t.safetensors"), dim=128, depth=6)
    ref = tmp_path / "ref.h5"
    run([lt_embed(), "--teacher", t, *KILL_ARGS, "-q", "--shard", "1/2", data, ref])
    out = tmp_path / "p1.h5"
    p = start_and_wait(["--teacher", t, *KILL_ARGS, "--shard", "1/2", data, out], out, 40)
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=30)
    assert not out.exists() and emb_log_rows(out) < 15 * 16
    # another shard on the same file is refused, naming the setting
    r = run([lt_embed(), "--teacher", t, *KILL_ARGS, "--shard", "2/2", data, out], check=False)
    assert r.returncode == 1 and "--shard was 1/2, now 2/2" in r.stderr
    r = run([lt_embed(), "--teacher", t, *KILL_ARGS, "--shard", "1/2", data, out])
    assert "continuing an interrupted run" in r.stderr
    assert not os.path.exists(str(out) + ".partial")
    A, B = read_all(ref), read_all(out)
    assert sorted(A) == sorted(B)
    for k in A:
        assert np.array_equal(A[k], B[k]), k
