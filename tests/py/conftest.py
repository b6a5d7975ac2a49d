"""Shared fixtures of the Python tests: where the built binaries are, and how to run them."""
import os
import subprocess
import sys

import pytest

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
