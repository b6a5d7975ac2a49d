"""make install / make uninstall, as a user installs lt once and uses it from anywhere: the
installed tools run the demo flow from outside the checkout, h5dump reads the cache's embeddings
through the installed filter plugin, the man pages render and list every option of --help, and
uninstall leaves no file behind."""
import os
import re
import subprocess

import h5py
import numpy as np
import pytest

from conftest import PLUGIN_DIR, ROOT, run
from embed_fixtures import tiny_teacher
from train_fixtures import noise_images

TOOLS = ["lt-embed", "lt-train", "lt-inspect", "lt-eval"]


def clean_env(**extra):
    """An environment that knows nothing of the checkout."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("LT_") and k not in ("HDF5_PLUGIN_PATH", "PYTHONPATH")}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    dest = tmp_path_factory.mktemp("dest")
    run(["make", "-s", "-C", ROOT, "install", f"DESTDIR={dest}", "PREFIX=/usr/local"],
        timeout=1800)
    return dest, dest / "usr" / "local"


def test_installed_files(installed):
    dest, prefix = installed
    files = {str(p.relative_to(prefix)) for p in dest.rglob("*") if p.is_file()}
    for want in ["bin/lt-embed", "bin/lt-train", "lib/hdf5/plugins/libh5zstd.so",
                 "share/man/man1/lt-embed.1", "share/man/man1/lt-train.1",
                 "share/doc/lt/README.md", "share/doc/lt/formats/cache.md",
                 "share/doc/lt/formats/checkpoint.md", "share/doc/lt/docs/architecture.md"]:
        assert want in files, (want, sorted(files))
    assert all(f.startswith(("bin/", "lib/hdf5/plugins/", "share/")) for f in files), files


def test_installed_tools_run_from_outside_the_checkout(installed, tmp_path):
    _, prefix = installed
    work = tmp_path / "work"
    noise_images(str(work / "images"), 8)
    teacher = tiny_teacher(str(work / "teacher.safetensors"), dim=64, depth=1, grid=4)
    plugins = prefix / "lib" / "hdf5" / "plugins"
    env = clean_env(PATH=f"{prefix / 'bin'}:/usr/bin:/bin")
    r = subprocess.run(["lt-embed", "--teacher", teacher, "--views", "2", "--image-size", "56",
                        "images", "c.h5"], cwd=work, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    # the closing summary says which plugin folder other readers need
    assert f"export HDF5_PLUGIN_PATH={plugins}" in r.stderr, r.stderr
    r = subprocess.run(["lt-train", "c.h5", "--out", "out", "--steps", "2", "--batch-size", "4",
                        "--threads", "2"], cwd=work, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    assert (work / "out" / "student.safetensors").exists()
    # h5dump reads the embeddings through the installed plugin, and fails without it
    def h5dump(plugin_path):
        r = subprocess.run(["h5dump", "-d", "/embeddings", "-s", "0,0", "-c", "1,4", "c.h5"],
                           cwd=work, env=dict(env, HDF5_PLUGIN_PATH=plugin_path),
                           capture_output=True, text=True, timeout=60)
        data = r.stdout[r.stdout.index("DATA {"):] if "DATA {" in r.stdout else ""
        data = re.sub(r"\(\d+(?:,\d+)*\):", " ", data)  # drop the "(row,col):" labels
        return r, [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?", data)][:4]
    r, got = h5dump(str(plugins))
    assert r.returncode == 0 and len(got) == 4, r.stdout + r.stderr
    os.environ.setdefault("HDF5_PLUGIN_PATH", PLUGIN_DIR)  # Debian's h5py + the checkout's plugin
    with h5py.File(work / "c.h5") as f:
        want = f["embeddings"][0, :4].astype(np.float64)
    assert np.allclose(got, want, rtol=1e-3, atol=1e-4), (got, want)
    assert len(h5dump(str(work))[1]) < 4  # without the plugin the data cannot be read
    # with the variable naming the plugin folder, no hint
    r = subprocess.run(["lt-embed", "--teacher", teacher, "--views", "1", "--image-size", "56",
                        "--overwrite", "images", "c.h5"], cwd=work,
                       env=dict(env, HDF5_PLUGIN_PATH=str(plugins)), capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0 and "HDF5_PLUGIN_PATH" not in r.stderr, r.stderr


@pytest.mark.parametrize("tool", TOOLS)
def test_man_page_renders_and_lists_every_option(installed, tool):
    _, prefix = installed
    page = prefix / "share" / "man" / "man1" / f"{tool}.1"
    r = subprocess.run(["man", "-l", str(page)], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, MANWIDTH="100"))
    assert r.returncode == 0 and "NAME" in r.stdout and "OPTIONS" in r.stdout, r.stderr
    src = page.read_text().replace("\\-", "-")
    helptext = subprocess.run([str(prefix / "bin" / tool), "--help"], capture_output=True,
                              text=True).stdout
    options = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", helptext))
    assert len(options) >= 6, options  # a --help that lost its options would not pass
    missing = sorted(o for o in options if o not in src)
    assert not missing, missing


def test_uninstall_leaves_no_file(installed):
    dest, _ = installed
    run(["make", "-s", "-C", ROOT, "uninstall", f"DESTDIR={dest}", "PREFIX=/usr/local"])
    left = [str(p) for p in dest.rglob("*") if p.is_file()]
    assert not left, left
