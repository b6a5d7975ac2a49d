"""Shared fixtures of the Python tests: where the built binaries are, how to run them, and the
seed of every random input.

Random inputs are fresh on every run, and every run can be replayed: the session seed comes from
LT_TEST_SEED (a random one when it is unset), is printed in pytest's header and under every
failing test, and every unseeded generator (np.random.default_rng(), np.random.*, random.*,
torch's default generator) is drawn from (that seed, the test's id). So
`LT_TEST_SEED=N python3 -m pytest tests/py -k NAME` feeds a failing test the same inputs again,
alone or in the whole suite. Generators given an explicit seed are left as they are."""
import itertools
import os
import random
import secrets
import shutil
import subprocess
import sys
import zlib

import numpy as np
import pytest

SEED = int(os.environ.get("LT_TEST_SEED") or secrets.randbits(32))
_default_rng = np.random.default_rng
_stream = {"key": zlib.crc32(b"collection"), "n": itertools.count()}


def _seeded_default_rng(seed=None):
    """np.random.default_rng with the unseeded case drawn from (SEED, test, call number)."""
    if seed is None:
        seed = np.random.SeedSequence([SEED, _stream["key"], next(_stream["n"])])
    return _default_rng(seed)


np.random.default_rng = _seeded_default_rng


def pytest_report_header(config):
    return f"random inputs: LT_TEST_SEED={SEED} (set it to replay them)"


@pytest.fixture(autouse=True)
def _replayable_inputs(request):
    key = zlib.crc32(request.node.nodeid.encode())
    _stream["key"], _stream["n"] = key, itertools.count()
    seed32 = (SEED ^ key) & 0xFFFFFFFF
    np.random.seed(seed32)
    random.seed(seed32)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed32)
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        rep.sections.append(("random inputs", f"replay with LT_TEST_SEED={SEED} "
                                              f"python3 -m pytest '{item.nodeid}'"))

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.path.join(ROOT, "build")
BIN = os.path.join(ROOT, "bin")
TOOLS = os.path.join(BUILD, "tests", "tools")
PLUGIN_DIR = os.path.join(BUILD, "plugins")
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))


def tool(name):
    """Path of a test tool built from tests/tools/<name>.c."""
    p = os.path.join(TOOLS, name)
    if not os.path.exists(p):
        raise FileNotFoundError(f"{p} is not built: run make")
    return p


def run(args, check=True, env=None, **kw):
    """Runs a command, returns CompletedProcess with text stdout/stderr."""
    e = dict(os.environ)
    if env:
        e.update(env)
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=e, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{args} exited {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}")
    return r


def cache_text(f, name):
    """Text column `name` (e.g. "images/path") of an lt cache opened with h5py: the entries of
    NAME_bytes cut at NAME_offset (formats/cache.md), as a list of bytes."""
    data = f[name + "_bytes"][()].tobytes()
    off = f[name + "_offset"][()]
    return [data[off[k]:off[k + 1]] for k in range(len(off) - 1)]


@pytest.fixture
def tmp(tmp_path):
    return tmp_path


def as_nobody(args):
    """args run as user nobody when we are root (root reads and writes everything, so permission
    tests need another user); skips the test where that is not possible."""
    if os.geteuid() != 0:
        return list(args)
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv")
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] + list(args)


def mounted_tmpfs(mnt, options, why):
    """Mounts a tmpfs with these options on the folder mnt for a fixture (yields mnt, unmounts
    after); skips the test where mounting is not possible (not root). why: what it simulates."""
    mnt.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip(f"{why} is a tmpfs ({options}), which needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
