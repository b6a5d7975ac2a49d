"""Two processes at once, and the signals and messages around them: each tool locks what it
writes (lt-embed: CACHE.lock, lt-train: OUT/lt-train.lock), a second run is refused at once
naming the holder's PID, a lock left by a dead process does not block, lt-train refuses lt-embed's
unfinished CACHE.partial without disturbing the running lt-embed, a closed stderr (EPIPE) does not
kill a run, and control bytes in file names are escaped in every message.

The first run is frozen with SIGSTOP at a known point (its lock or partial file exists) while the
second one is tried, so the tests do not depend on timing."""
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from conftest import as_nobody, run
from embed_fixtures import lt_embed, tiny_teacher
from train_fixtures import lt_train, noise_images, tiny_cache

SEED = int(os.environ.get("LT_TEST_SEED", "0"))


def wait_for(path, proc, timeout=120):
    """Waits until path exists (or proc has exited, which fails the test)."""
    t0 = time.time()
    while not os.path.exists(path):
        assert proc.poll() is None, f"the first run exited ({proc.returncode}) before {path} appeared"
        assert time.time() - t0 < timeout, f"{path} did not appear in {timeout} s"
        time.sleep(0.01)


def frozen(args, path):
    """Starts args, waits for path, stops the process (SIGSTOP); returns the Popen."""
    p = subprocess.Popen([str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    wait_for(path, p)
    p.send_signal(signal.SIGSTOP)
    return p


def thaw(p, timeout=300):
    p.send_signal(signal.SIGCONT)
    out, err = p.communicate(timeout=timeout)
    return p.returncode, err


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    d = tmp_path_factory.mktemp("conc")
    imgs = d / "imgs"
    noise_images(str(imgs), 12, seed=SEED)
    teacher = tiny_teacher(str(d / "t.safetensors"), dim=64, depth=1, grid=4)
    cache, _ = tiny_cache(d, n_images=12, views=2, size=28, dim=64)
    return d, str(imgs), teacher, cache


EMBED = ["--views", "40", "--image-size", "56", "--threads", "1", "--batch-size", "4", "-q"]
TRAIN = ["--epochs", "2", "--batch-size", "4", "--threads", "1", "--checkpoint-every", "1"]


# ---------------------------------------------------------------------- lt-embed, one CACHE

def test_second_embed_on_same_cache_is_refused(small, tmp_path):
    _, imgs, teacher, _ = small
    cache = tmp_path / "c.h5"
    first = frozen([lt_embed(), "--teacher", teacher, *EMBED, imgs, cache],
                   str(cache) + ".partial.emb")
    try:
        r = run([lt_embed(), "--teacher", teacher, *EMBED, imgs, cache], check=False, timeout=60)
        assert r.returncode == 1, r.stderr
        assert f"{cache} is in use by lt-embed (PID {first.pid}" in r.stderr, r.stderr
        r = run([lt_embed(), "--teacher", teacher, *EMBED, "--overwrite", imgs, cache],
                check=False, timeout=60)
        assert r.returncode == 1 and f"PID {first.pid}" in r.stderr, r.stderr
    finally:
        rc, err = thaw(first)
    assert rc == 0, err
    assert cache.exists() and not os.path.exists(str(cache) + ".partial")
    assert not os.path.exists(str(cache) + ".lock")  # removed by its holder


def test_stale_embed_lock_does_not_block(small, tmp_path):
    _, imgs, teacher, _ = small
    cache = tmp_path / "c.h5"
    dead = subprocess.Popen(["true"])
    dead.wait()  # a PID that no longer runs
    with open(str(cache) + ".lock", "w") as f:
        f.write(f"{dead.pid} lt-embed\n")
    r = run([lt_embed(), "--teacher", teacher, "--views", "1", "--image-size", "28", "-q", imgs,
             cache], check=False, timeout=300)
    assert r.returncode == 0, r.stderr
    assert cache.exists() and not os.path.exists(str(cache) + ".lock")


def test_train_refuses_partial_while_embed_runs(small, tmp_path):
    """lt-train on the CACHE.partial of a running lt-embed: refused, naming it, and the running
    lt-embed is not disturbed (it finishes with exit 0)."""
    _, imgs, teacher, _ = small
    cache = tmp_path / "c.h5"
    partial = str(cache) + ".partial"
    first = frozen([lt_embed(), "--teacher", teacher, *EMBED, imgs, cache], partial + ".emb")
    try:
        r = run([lt_train(), partial, "--out", tmp_path / "out", *TRAIN], check=False,
                timeout=120)
        assert r.returncode == 1, r.stderr
        assert f"{partial} is not a finished lt cache" in r.stderr, r.stderr
        assert not (tmp_path / "out" / "student.safetensors").exists()
    finally:
        rc, err = thaw(first)
    assert rc == 0, err
    r = run([lt_train(), cache, "--out", tmp_path / "out", *TRAIN, "--steps", "1"], check=False,
            timeout=300)
    assert r.returncode == 0, r.stderr


def test_train_refuses_interrupted_partial(small, tmp_path):
    """What an interrupted lt-embed leaves (CACHE.partial, embeddings not all written) is refused
    by lt-train; rerunning lt-embed finishes it."""
    _, imgs, teacher, _ = small
    cache = tmp_path / "c.h5"
    partial = str(cache) + ".partial"
    p = subprocess.Popen([lt_embed(), "--teacher", teacher, *EMBED, imgs, str(cache)],
                         stderr=subprocess.PIPE, text=True)
    wait_for(partial + ".emb", p)
    p.send_signal(signal.SIGKILL)
    p.wait()
    r = run([lt_train(), partial, "--out", tmp_path / "out", *TRAIN], check=False, timeout=120)
    assert r.returncode == 1 and "is not a finished lt cache" in r.stderr, r.stderr
    run([lt_embed(), "--teacher", teacher, *EMBED, imgs, cache], timeout=300)
    run([lt_train(), cache, "--out", tmp_path / "out", *TRAIN, "--steps", "1"], timeout=300)


# ---------------------------------------------------------------------- lt-train, one OUT

def test_second_train_on_same_out_is_refused(small, tmp_path):
    cache = small[3]
    out = tmp_path / "out"
    lock = out / "lt-train.lock"
    first = frozen([lt_train(), cache, "--out", out, *TRAIN], str(lock))
    try:
        for extra in ([], ["--overwrite"], ["--seed", "7", "--overwrite"]):
            r = run([lt_train(), cache, "--out", out, *TRAIN, *extra], check=False, timeout=60)
            assert r.returncode == 1, (extra, r.stderr)
            assert f"the output folder {out} is in use by lt-train (PID {first.pid}" in r.stderr, \
                r.stderr
    finally:
        rc, err = thaw(first)
    assert rc == 0, err
    assert (out / "student.safetensors").exists() and not lock.exists()
    # the first run's result is whole: a rerun of its command has nothing to do
    r = run([lt_train(), cache, "--out", out, *TRAIN], timeout=120)
    assert "nothing to do" in r.stderr


def test_stale_train_lock_does_not_block(small, tmp_path):
    cache = small[3]
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (out / "lt-train.lock").write_text(f"{dead.pid} lt-train\n")
    run([lt_train(), cache, "--out", out, *TRAIN, "--steps", "1"], timeout=300)
    assert (out / "student.safetensors").exists() and not (out / "lt-train.lock").exists()


def test_train_on_a_folder_lt_train_cannot_write(small, tmp_path):
    """OUT inside a folder this user cannot write: a clear error before anything else (run as
    nobody, since root writes everywhere)."""
    base = tempfile.mkdtemp(prefix="lt-ro-")
    try:
        os.chmod(base, 0o755)
        shutil.copy(small[3], os.path.join(base, "c.h5"))
        os.chmod(os.path.join(base, "c.h5"), 0o644)
        args = as_nobody([lt_train(), os.path.join(base, "c.h5"), "--out",
                          os.path.join(base, "out"), *TRAIN])
        r = run(args, check=False, timeout=60)
        assert r.returncode == 1, r.stderr
        assert "cannot create" in r.stderr and "Permission denied" in r.stderr, r.stderr
        assert not os.path.exists(os.path.join(base, "out"))
    finally:
        shutil.rmtree(base)


# ---------------------------------------------------------------------- signals and messages

def closed_pipe():
    """A pipe whose reader has gone: every write to it fails (EPIPE, or SIGPIPE by default)."""
    r, w = os.pipe()
    os.close(r)
    return w


@pytest.mark.parametrize("tool", ["lt-embed", "lt-train"])
def test_closed_stderr_does_not_kill_the_run(small, tmp_path, tool):
    """`lt-train ... 2>&1 | head` once head has exited: the run goes on and succeeds."""
    _, imgs, teacher, cache = small
    if tool == "lt-embed":
        args = [lt_embed(), "--teacher", teacher, "--views", "1", "--image-size", "28", "-v",
                imgs, tmp_path / "c.h5"]
        result = tmp_path / "c.h5"
    else:
        args = [lt_train(), cache, "--out", tmp_path / "out", *TRAIN, "-v"]
        result = tmp_path / "out" / "student.safetensors"
    w = closed_pipe()
    try:
        p = subprocess.run([str(a) for a in args], stdout=w, stderr=w, timeout=300)
    finally:
        os.close(w)
    assert p.returncode == 0, f"{tool} exited {p.returncode} (-13 or 141: killed by SIGPIPE)"
    assert result.exists()


def test_control_bytes_in_file_names_are_escaped(small, tmp_path):
    _, _, teacher, cache = small
    data = tmp_path / "data"
    data.mkdir()
    noise_images(str(data), 2, seed=SEED)
    evil = "x\x1b[31m\nred.png"
    (data / evil).write_bytes(b"not a png")
    r = run([lt_embed(), "--teacher", teacher, "--views", "1", "--image-size", "28", data,
             tmp_path / "c.h5"], timeout=300)
    assert "\x1b" not in r.stderr, r.stderr
    assert "x\\x1b[31m\\nred.png" in r.stderr, r.stderr
    # lt-train: in its messages and in train.log
    evil_cache = tmp_path / "c\x1b[2J\n.h5"
    os.link(cache, evil_cache)
    out = tmp_path / "out"
    r = run([lt_train(), evil_cache, "--out", out, *TRAIN, "--steps", "1"], timeout=300)
    assert "\x1b" not in r.stderr and "c\\x1b[2J\\n.h5" in r.stderr, r.stderr
    log = (out / "train.log").read_text()
    assert "\x1b" not in log and "c\\x1b[2J\\n.h5" in log, log
    r = run([lt_train(), tmp_path / "no\x1bsuch.h5", "--out", out], check=False)
    assert r.returncode == 1 and "\x1b" not in r.stderr and "no\\x1bsuch.h5" in r.stderr, r.stderr


def test_a_killed_run_does_not_leave_its_lock_to_an_orphan(small, tmp_path):
    """The cache check runs in a child process that shares the tool's open files, the lock among
    them: when the tool is killed, the child must die too, or the lock stays held forever."""
    cache = small[3]
    out = tmp_path / "out"
    p = subprocess.Popen([lt_train(), cache, "--out", out, *TRAIN],
                         env=dict(os.environ, LT_CACHE_CHECK_SELFTEST="hang"),
                         stderr=subprocess.PIPE, text=True)
    wait_for(str(out / "lt-train.lock"), p)
    time.sleep(0.3)  # the check's child is running (and hangs on purpose)
    p.send_signal(signal.SIGKILL)
    p.wait()
    deadline = time.time() + 20
    while True:
        r = run([lt_train(), cache, "--out", out, *TRAIN, "--steps", "1"], check=False,
                timeout=300)
        if r.returncode == 0 or time.time() > deadline:
            break
        time.sleep(0.2)
    assert r.returncode == 0, r.stderr


def test_a_foreign_file_named_like_the_lock_is_left_alone(small, tmp_path):
    cache = small[3]
    out = tmp_path / "out"
    out.mkdir()
    (out / "lt-train.lock").write_text("my notes\n")
    r = run([lt_train(), cache, "--out", out, *TRAIN], check=False, timeout=60)
    assert r.returncode == 1 and "is not an lt lock file" in r.stderr, r.stderr
    assert (out / "lt-train.lock").read_text() == "my notes\n"
