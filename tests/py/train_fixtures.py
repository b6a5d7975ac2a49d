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
