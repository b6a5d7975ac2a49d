"""lt-embed against poisoned inputs, retried commands and misplaced outputs (issue 10).

A teacher with a NaN weight is refused before anything non-finite is stored; --overwrite replaces
only an lt cache or an empty file; a cache or a --dump-views folder that the next scan of DATA_DIR
would pick up is refused; damaged rows of the embedding log cost only themselves; the interrupted
message of a command with --overwrite gives a command that continues; --append takes the cache's
settings by default; and the messages say what happened."""
import json
import os
import shlex
import shutil
import signal
import struct

import h5py
import numpy as np
import pytest

from conftest import PLUGIN_DIR, mounted_tmpfs, run
from embed_fixtures import lt_embed, tiny_teacher
from test_embed_resume import (KILL_ARGS, assert_same, emb_log_rows, killed, make_images,  # noqa: F401
                               read_all, restore, start_and_wait)

os.environ["HDF5_PLUGIN_PATH"] = PLUGIN_DIR

FAST = ["--views", "2", "--image-size", "28", "--batch-size", "2", "--threads", "1"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp("safety")
    data = d / "imgs"
    make_images(data, [f"a{i}.png" for i in range(4)], 11)
    t = tiny_teacher(str(d / "t.safetensors"), dim=64, depth=1)
    return d, data, t


def poison(src, dst, name="patch_embed.proj.weight", value=float("nan")):
    """Copies a safetensors file with the first float32 of tensor `name` set to value."""
    raw = open(src, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    head = json.loads(raw[8:8 + n])
    start = 8 + n + head[name]["data_offsets"][0]
    assert head[name]["dtype"] == "F32"
    out = bytearray(raw)
    out[start:start + 4] = struct.pack("<f", value)
    open(dst, "wb").write(bytes(out))
    return str(dst)


# ---- 5: a NaN teacher ----

def test_nan_teacher_is_refused_naming_the_sample(base, tmp_path):
    d, data, t = base
    bad = poison(t, tmp_path / "nan.safetensors")
    out = tmp_path / "c.h5"
    r = run([lt_embed(), "--teacher", bad, *FAST, data, out], check=False)
    assert r.returncode == 1, r.stderr
    err = [l for l in r.stderr.splitlines() if "error:" in l]
    assert len(err) == 1, r.stderr
    assert "sample 0" in err[0] and "a0.png" in err[0] and "NaN" in err[0], err[0]
    assert "nan.safetensors" in err[0] and "suspect" in err[0], err[0]
    assert not out.exists()
    # what was done stays resumable: the log is there and holds no row
    assert os.path.exists(str(out) + ".partial.emb") and emb_log_rows(out) == 0


def test_inf_teacher_is_refused(base, tmp_path):
    d, data, t = base
    bad = poison(t, tmp_path / "inf.safetensors", value=float("inf"))
    out = tmp_path / "c.h5"
    r = run([lt_embed(), "--teacher", bad, *FAST, "--dtype", "f32", data, out], check=False)
    assert r.returncode == 1 and "suspect" in r.stderr and "sample 0" in r.stderr, r.stderr
    assert not out.exists()


# ---- 11: damaged rows of the embedding log; the command that continues ----

def test_damaged_log_rows_cost_only_themselves(killed, tmp_path):
    d, data, t, ref, _ = killed
    out = restore(killed, tmp_path / "c.h5")
    log = str(out) + ".partial.emb"
    rows = emb_log_rows(out)
    with open(log, "rb") as f:
        head = f.read(64)
    start = int.from_bytes(head[48:56], "little")
    rec = int.from_bytes(head[24:28], "little") + 8
    # 4 bytes in the middle of row 10: one row damaged, the rows after it intact
    with open(log, "r+b") as f:
        f.seek(start + 10 * rec + 20)
        b = bytearray(f.read(4))
        f.seek(start + 10 * rec + 20)
        f.write(bytes(x ^ 0xFF for x in b))
    r = run([lt_embed(), "--teacher", t, *KILL_ARGS, data, out])
    assert "1 of its" in r.stderr and "damaged" in r.stderr, r.stderr
    assert f"{rows - 1} of 960 views" in r.stderr, r.stderr
    assert_same(ref, out)


def test_interrupted_overwrite_run_prints_the_command_that_continues(killed, base, tmp_path):
    d, data, t, ref, _ = killed
    out = tmp_path / "my dir" / "c.h5"
    out.parent.mkdir()
    run([lt_embed(), "--teacher", base[2], *FAST, "-q", base[1], out])  # the cache to replace
    args = ["--teacher", t, *KILL_ARGS, "--overwrite", data, out]
    p = start_and_wait(args, out, 40)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    line = [l for l in err.splitlines() if "interrupted after" in l]
    assert len(line) == 1, err
    cmd = line[0].split("rerun without --overwrite: ", 1)[1].split(" (the progress")[0]
    argv = shlex.split(cmd)
    assert argv[0] == lt_embed() and argv[1:] == [str(a) for a in args if a != "--overwrite"]
    assert read_all(out)["embeddings"].shape[1] == 64  # the old cache is there until the end
    # the cache it was to replace has changed since: refused, nothing lost
    os.utime(out, ns=(1, 2))
    r = run(argv, check=False)
    assert r.returncode == 1 and "not the one it was to replace" in r.stderr, r.stderr
    assert os.path.exists(str(out) + ".partial.emb")
    # the printed command continues the run, and replaces the cache
    os.remove(out)
    r = run(argv)
    assert "continuing an interrupted run" in r.stderr
    assert_same(ref, out)


def test_rerun_without_overwrite_replaces_the_same_cache(killed, base, tmp_path):
    d, data, t, ref, _ = killed
    out = tmp_path / "c.h5"
    run([lt_embed(), "--teacher", base[2], *FAST, "-q", base[1], out])
    p = start_and_wait(["--teacher", t, *KILL_ARGS, "--overwrite", data, out], out, 40)
    p.send_signal(signal.SIGINT)
    p.communicate(timeout=60)
    assert p.returncode == 130
    r = run([lt_embed(), "--teacher", t, *KILL_ARGS, data, out])
    assert "continuing an interrupted run" in r.stderr
    assert_same(ref, out)


# ---- 7: --overwrite replaces only an lt cache; a cache the next scan would read ----

def test_overwrite_refuses_what_is_not_an_lt_cache(base, tmp_path):
    d, data, t = base
    victim = tmp_path / "t2.safetensors"
    shutil.copy(t, victim)
    before = victim.read_bytes()
    r = run([lt_embed(), "--teacher", t, *FAST, "--overwrite", data, victim], check=False)
    assert r.returncode == 1 and str(victim) in r.stderr and "not an HDF5 file" in r.stderr, r.stderr
    assert victim.read_bytes() == before
    foreign = tmp_path / "other.h5"  # an HDF5 file, not an lt cache
    with h5py.File(foreign, "w") as f:
        f["x"] = np.arange(10)
    before = foreign.read_bytes()
    r = run([lt_embed(), "--teacher", t, *FAST, "--overwrite", data, foreign], check=False)
    assert r.returncode == 1 and "is not an lt cache" in r.stderr, r.stderr
    assert foreign.read_bytes() == before
    # a foreign file named like the partial files is not removed either
    out = tmp_path / "c.h5"
    log = tmp_path / "c.h5.partial.emb"
    log.write_bytes(b"my notes")
    r = run([lt_embed(), "--teacher", t, *FAST, "--overwrite", data, out], check=False)
    assert r.returncode == 1 and "c.h5.partial.emb" in r.stderr, r.stderr
    assert log.read_bytes() == b"my notes" and not out.exists()
    log.unlink()
    # an empty file and an lt cache are replaced
    out.write_bytes(b"")
    run([lt_embed(), "--teacher", t, *FAST, "--overwrite", data, out])
    run([lt_embed(), "--teacher", t, *FAST, "--seed", "1", "--overwrite", data, out])
    with h5py.File(out) as f:
        assert f.attrs["seed"] == 1


@pytest.mark.parametrize("how", ["version2", "version1_vlen_format", "unfinished", "damaged"])
def test_overwrite_replaces_any_lt_cache(base, tmp_path, how):
    """What the error messages tell the user to do ("rebuild it with lt-embed --overwrite") works
    for every kind of lt cache lt-train refuses: older versions, unfinished, structurally damaged."""
    d, data, t = base
    out = tmp_path / "c.h5"
    run([lt_embed(), "--teacher", t, *FAST, data, out])
    with h5py.File(out, "r+") as f:
        if how == "version2":
            f.attrs["version"] = np.int32(2)
        elif how == "version1_vlen_format":
            f.attrs["version"] = np.int32(1)
            del f.attrs["format"]
            f.attrs["format"] = "lt-cache"  # str: a variable-length string, as version 1 had
        elif how == "unfinished":
            del f.attrs["complete"]
        else:
            del f["samples/jitter_order"]
    r = run([lt_embed(), "--teacher", t, *FAST, "--seed", "4", "--overwrite", data, out],
            check=False)
    assert r.returncode == 0, (how, r.stderr)
    with h5py.File(out) as f:
        assert f.attrs["seed"] == 4 and f.attrs["version"] == 3 and f.attrs["complete"] == 1


def test_cache_that_the_scan_would_read_is_refused(base, tmp_path):
    d, data, t = base
    data2 = tmp_path / "imgs"
    shutil.copytree(data, data2)
    img = data2 / "a0.png"
    before = img.read_bytes()
    r = run([lt_embed(), "--teacher", t, *FAST, "--overwrite", data2, img], check=False)
    assert r.returncode == 1 and str(img) in r.stderr and "image" in r.stderr, r.stderr
    assert img.read_bytes() == before
    r = run([lt_embed(), "--teacher", t, *FAST, data2, data2 / "sub" / ".." / "new.jpg"],
            check=False)
    assert r.returncode == 1 and "new.jpg" in r.stderr, r.stderr
    assert sorted(os.listdir(data2)) == sorted(os.listdir(data))
    # a cache under DATA_DIR that the scan skips (not an image name) is fine
    run([lt_embed(), "--teacher", t, *FAST, "-q", data2, data2 / "c.h5"])


# ---- 12: --dump-views inside DATA_DIR; a read-only cache location ----

def test_dump_views_inside_data_dir_is_refused(base, tmp_path):
    d, data, t = base
    data2 = tmp_path / "imgs"
    shutil.copytree(data, data2)
    for dump in (data2 / "views", data2 / "x" / "y", tmp_path / "link" / "views"):
        if dump.parent.name == "link":
            os.symlink(data2, dump.parent)
        r = run([lt_embed(), "--teacher", t, *FAST, "--dump-views", dump, data2,
                 tmp_path / "c.h5"], check=False)
        assert r.returncode == 1 and "--dump-views" in r.stderr and str(dump) in r.stderr, r.stderr
        assert sorted(os.listdir(data2)) == sorted(os.listdir(data))
        assert not (tmp_path / "c.h5").exists()
    run([lt_embed(), "--teacher", t, *FAST, "-q", "--dump-views", tmp_path / "views", data2,
         tmp_path / "c.h5"])
    assert len(os.listdir(tmp_path / "views")) == 16


@pytest.fixture
def read_only_dir(tmp_path):
    yield from mounted_tmpfs(tmp_path / "ro", "ro,size=1m", "a read-only folder for root")


def test_read_only_location_is_named_as_such(base, read_only_dir):
    d, data, t = base
    r = run([lt_embed(), "--teacher", t, *FAST, data, read_only_dir / "c.h5"], check=False)
    assert r.returncode == 1, r.stderr
    assert "read-only" in r.stderr and str(read_only_dir) in r.stderr, r.stderr
    assert "stale" not in r.stderr


# ---- 15: --append takes the cache's settings ----

def test_append_takes_the_caches_settings(base, tmp_path):
    d, data, t = base
    data2 = tmp_path / "imgs"
    shutil.copytree(data, data2)
    grown, one_go = tmp_path / "grown.h5", tmp_path / "one.h5"
    made = ["--dtype", "f32", "--views", "2", "--seed", "5", "--no-mixup", "--image-size", "42",
            "--zstd-level", "5", "--hflip-p", "0.3"]
    common = ["--teacher", t, "--batch-size", "1", "--threads", "1"]
    run([lt_embed(), *common, *made, data2, grown])
    make_images(data2, ["z0.png", "z1.png"], 12)
    r = run([lt_embed(), *common, "--append", data2, grown])
    assert "2 new files" in r.stderr
    run([lt_embed(), *common, *made, data2, one_go])
    assert_same(grown, one_go, skip=("images/mtime_ns",))
    # an explicit contradiction is still refused, naming the option
    make_images(data2, ["z2.png"], 13)
    r = run([lt_embed(), *common, "--append", "--dtype", "f16", data2, grown], check=False)
    assert r.returncode == 1 and "--dtype was f32, now f16" in r.stderr, r.stderr
    # more views may be asked for; the rest stays the cache's
    run([lt_embed(), *common, "--append", "--views", "3", data2, grown])
    with h5py.File(grown) as f:
        assert f.attrs["views_per_image"] == 3 and f["embeddings"].dtype == np.float32
        assert f.attrs["seed"] == 5 and f["embeddings"].shape[0] == 7 * 3


# ---- 16: messages ----

def test_cpu_summary_has_no_host_to_device(base, tmp_path):
    d, data, t = base
    r = run([lt_embed(), "--teacher", t, *FAST, "--device", "cpu", data, tmp_path / "c.h5"])
    assert "time: decode" in r.stderr and "host-to-device" not in r.stderr, r.stderr


def test_resumed_progress_counts_only_this_runs_views(killed, tmp_path):
    d, data, t, ref, _ = killed
    out = restore(killed, tmp_path / "c.h5")
    done = emb_log_rows(out)
    r = run([lt_embed(), "--teacher", t, *KILL_ARGS, data, out])
    last = [l for l in r.stderr.splitlines() if " views (" in l and "%)" in l][-1]
    assert f"{960 - done}/{960 - done} views" in last, r.stderr


def test_all_skipped_by_max_pixels_says_so(base, tmp_path):
    d, data, t = base
    r = run([lt_embed(), "--teacher", t, *FAST, "--max-pixels", "10", data, tmp_path / "c.h5"],
            check=False)
    err = [l for l in r.stderr.splitlines() if "error:" in l]
    assert r.returncode == 1 and len(err) == 1, r.stderr
    assert "larger than --max-pixels 10" in err[0] and "decoded" not in err[0], err[0]


def test_teacher_from_environment_is_named(base, tmp_path):
    d, data, t = base
    r = run([lt_embed(), *FAST, data, tmp_path / "c.h5"], check=False,
            env={"LT_TEACHER": str(tmp_path / "x")})
    assert r.returncode == 1 and f"LT_TEACHER={tmp_path / 'x'}: " in r.stderr, r.stderr


def test_missing_data_folder_is_reported_before_the_teacher_loads(base, tmp_path):
    d, data, t = base
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a teacher")
    r = run([lt_embed(), "--teacher", bad, *FAST, tmp_path / "nodata", tmp_path / "c.h5"],
            check=False)
    assert r.returncode == 1 and "nodata" in r.stderr and "bad.safetensors" not in r.stderr, \
        r.stderr


def test_image_size_not_a_multiple_of_the_patch_is_noticed(base, tmp_path):
    d, data, t = base
    args = ["--teacher", t, "--views", "1", "--threads", "1", data]
    r = run([lt_embed(), *args, "--image-size", "64", tmp_path / "a.h5"])
    assert "--image-size 64" in r.stderr and "56x56" in r.stderr, r.stderr
    r = run([lt_embed(), *args, "--image-size", "56", tmp_path / "b.h5"])
    assert "patch size" not in r.stderr, r.stderr
