"""The random inputs of the Python tests can be replayed (conftest.py): unseeded generators draw
from (LT_TEST_SEED, the test's id), the seed is printed, and the same seed gives the same inputs."""
import itertools
import os
import subprocess
import sys

import numpy as np

import conftest


def test_unseeded_generators_replay_per_test():
    def draw(key):
        conftest._stream["key"], conftest._stream["n"] = key, itertools.count()
        return np.random.default_rng().random(4), np.random.default_rng().random(4)
    a1, a2 = draw(11)
    b1, b2 = draw(11)
    c1, _ = draw(12)
    assert (a1 == b1).all() and (a2 == b2).all()  # same test, same inputs
    assert not (a1 == a2).all() and not (a1 == c1).all()  # fresh per call and per test
    assert (np.random.default_rng(5).random(2) == np.random.Generator(
        np.random.PCG64(5)).random(2)).all()  # an explicit seed is left alone


def test_the_seed_is_printed_and_taken_from_the_environment():
    here = os.path.dirname(__file__)
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                        os.path.join(here, "test_replay.py"), "-k", "unseeded"],
                       capture_output=True, text=True, env=dict(os.environ, LT_TEST_SEED="4242"))
    assert r.returncode == 0 and "random inputs: LT_TEST_SEED=4242" in r.stdout, r.stdout
