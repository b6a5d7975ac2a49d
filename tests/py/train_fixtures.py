"""Builders shared by the lt-train tests: a tiny cache made by lt-embed from generated images."""
import os
import signal
import subprocess
import time

from conftest import BIN, ROOT, run
import numpy as np

from embed_fixtures import rand_img, tiny_teacher


def lt_train():
    return os.path.join(BIN, "lt-train")


def noise_images(folder, n, seed=None):
    """n random-noise JPEG/PNG images of assorted sizes: no flat regions, so no exact ties in
    max pooling that would make gradients depend on summation order."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        w, h = int(rng.integers(80, 200)), int(rng.integers(80, 200))
        img = rand_img(rng, w, h)
        img.save(os.path.join(folder, f"img{i:04d}.{'png' if i % 3 == 0 else 'jpg'}"))


def tiny_cache(d, n_images=8, views=2, size=64, dim=64, extra=()):
    """lt-embed on n generated images with a random teacher; returns (cache path, views dir)."""
    d = str(d)
    imgs = os.path.join(d, "imgs")
    if not os.path.isdir(imgs):
        noise_images(imgs, n_images)
    t = tiny_teacher(os.path.join(d, "teacher.safetensors"), dim=dim, depth=1, grid=4)
    cache, dump = os.path.join(d, "cache.h5"), os.path.join(d, "views")
    run([os.path.join(BIN, "lt-embed"), "--teacher", t, "--views", str(views), "--image-size",
         str(size), "--dtype", "f32", "--dump-views", dump, "--seed", "3", "-q", *extra, imgs,
         cache])
    return cache, dump


def kill_after_first_checkpoint(args, out):
    """Starts lt-train (args), SIGKILLs it about 1.5 s after OUT's first checkpoint appears."""
    p = subprocess.Popen(args)
    ckpt = os.path.join(out, "checkpoints", "last.safetensors")
    deadline = time.time() + 120
    while time.time() < deadline and not os.path.exists(ckpt):
        time.sleep(0.05)
    time.sleep(1.5)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL


# Open MPI's mpirun as a user runs it, with what the test machines need: as root where CI runs as
# root, more ranks than cores where the machine is small, and shared memory without the
# single-copy mechanism that containers forbid.
MPIRUN = ["mpirun", "--oversubscribe", "--allow-run-as-root",
          "--mca", "btl_vader_single_copy_mechanism", "none"]


def mpirun(n):
    """The command prefix that starts n processes of the command after it."""
    return [*MPIRUN, "-np", str(n)]


def descendants(pid):
    """The PIDs of every process below pid (from /proc), children first."""
    children = {}
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                with open(f"/proc/{e}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(e))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def kill_tree_after_first_checkpoint(args, out, wait=0.5):
    """Starts args (mpirun ...) and, `wait` s after OUT's first checkpoint appears, SIGKILLs it
    and every process below it: mpirun puts its ranks in process groups of their own, and a rank
    that outlived mpirun would go on writing OUT."""
    p = subprocess.Popen(args)
    ckpt = os.path.join(out, "checkpoints", "last.safetensors")
    deadline = time.time() + 120
    while time.time() < deadline and not os.path.exists(ckpt):
        time.sleep(0.05)
    time.sleep(wait)
    for pid in [p.pid] + descendants(p.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL
