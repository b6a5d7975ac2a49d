"""lt-train's TensorBoard event file, read with PyPI's tensorboard package (in the venv of
LT_PYPI_PYTHON): one file named events.out.tfevents.<seconds>.<host>, whose records all pass
tensorboard's CRC-32C checks; a version record first; then every scalar of every metrics.jsonl
line at its step. A run resumed after a kill shows each step once; --no-tensorboard writes no
event file; an event file of another program is refused, or replaced with --overwrite."""
import json
import math
import os
import re
import socket
import struct
import time

import pytest

from conftest import PLUGIN_DIR, run

os.environ["HDF5_PLUGIN_PATH"] = PLUGIN_DIR
from train_fixtures import kill_after_first_checkpoint, lt_train, tiny_cache

COMMON = ["--batch-size", "4", "--epochs", "2", "--checkpoint-every", "2", "--threads", "1", "-q"]

# Every event file of OUT with tensorboard's own reader: the raw records through its record reader
# (which raises on a torn record or a CRC mismatch) parsed as its Event protos, and the scalars as
# TensorBoard's EventAccumulator serves them.
READ = r"""
import json, os, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.tensorflow_stub import errors, pywrap_tensorflow
out = sys.argv[1]
res = {"files": {}, "scalars": {}}
for name in sorted(n for n in os.listdir(out) if "tfevents" in n):
    reader = pywrap_tensorflow.PyRecordReader_New(os.path.join(out, name).encode())
    recs = []
    while True:
        try:
            reader.GetNext()
        except errors.OutOfRangeError:
            break
        e = event_pb2.Event.FromString(reader.record())
        recs.append({"wall_time": e.wall_time, "step": e.step, "file_version": e.file_version,
                     "writer": e.source_metadata.writer, "has_summary": e.HasField("summary"),
                     "values": [[v.tag, v.simple_value, v.WhichOneof("value")]
                                for v in e.summary.value]})
    res["files"][name] = recs
acc = EventAccumulator(out, size_guidance={"scalars": 0})
acc.Reload()
for tag in acc.Tags()["scalars"]:
    res["scalars"][tag] = [[s.step, s.value] for s in acc.Scalars(tag)]
print(json.dumps(res))
"""

# metrics.jsonl's printf formats (lib/train/train.c): a value there is rounded to its digits, the
# one in the event file to float32
DIGITS = {"epoch": ("f", 4), "loss": ("g", 8), "lr": ("g", 8), "img_per_s": ("f", 3),
          "grad_norm": ("g", 6), "step_s": ("f", 4), "data_wait_s": ("f", 3)}


def pypi():
    p = os.environ.get("LT_PYPI_PYTHON")
    if not p:
        pytest.skip("LT_PYPI_PYTHON not set (run through make test)")
    return p


def read_events(out):
    return json.loads(run([pypi(), "-c", READ, out]).stdout)


def metrics(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(l) for l in f]


def close(event_value, json_value, key):
    kind, n = DIGITS[key]
    printed = 0.5 * 10.0 ** -n if kind == "f" else 0.5 * 10.0 ** (1 - n) * abs(json_value)
    return abs(event_value - json_value) <= printed + abs(json_value) * 2.0 ** -23


def check_events(out, t0=None, t1=None):
    """The one event file of out against its metrics.jsonl; returns its name."""
    ev, rows = read_events(out), metrics(out)
    assert len(ev["files"]) == 1, ev["files"].keys()
    name, recs = next(iter(ev["files"].items()))
    assert re.fullmatch(r"events\.out\.tfevents\.\d+\." + re.escape(socket.gethostname()), name)
    first = recs[0]
    assert first["file_version"] == "brain.Event:2" and first["writer"] == "lt-train"
    assert not first["has_summary"]
    assert [r["step"] for r in recs[1:]] == [m["step"] for m in rows], (recs, rows)
    for r, m in zip(recs[1:], rows):
        assert r["file_version"] == "" and r["has_summary"]
        values = {tag: (v, kind) for tag, v, kind in r["values"]}
        assert len(values) == len(r["values"])  # no tag twice in a step
        want = {"train/" + k for k in m if k != "step"}
        assert set(values) == want, (values, want)
        for k in m:
            if k != "step":
                v, kind = values["train/" + k]
                assert kind == "simple_value"
                assert close(v, m[k], k), (m["step"], k, v, m[k])
    wall = [r["wall_time"] for r in recs]
    assert wall == sorted(wall)
    if t0 is not None:
        assert t0 - 1 <= wall[0] and wall[-1] <= t1 + 1, (t0, wall, t1)
    # TensorBoard's own view of the directory: every step of every tag once, with its value
    assert set(ev["scalars"]) == {"train/" + k for k in rows[0] if k != "step"}
    for tag, points in ev["scalars"].items():
        assert [s for s, _ in points] == [m["step"] for m in rows], tag
        for (s, v), m in zip(points, rows):
            assert close(v, m[tag[6:]], tag[6:]), (tag, s, v)
    return name


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    c, _ = tiny_cache(tmp_path_factory.mktemp("tb"), n_images=12, views=2, size=48)
    return c


def test_every_metric_is_in_the_event_file(cache, tmp_path):
    out = str(tmp_path / "out")
    t0 = time.time()
    r = run([lt_train(), cache, "--out", out, *COMMON[:-1]])
    t1 = time.time()
    name = check_events(out, t0, t1)
    assert len(metrics(out)) == 6
    assert f"{os.path.join(out, name)} (tensorboard --logdir {out})" in r.stderr, r.stderr
    log = open(os.path.join(out, "train.log")).read()
    assert name in log


def records(path):
    """The TFRecord framing of a file cut into its records (bytes), by the lengths alone."""
    data, recs, pos = open(path, "rb").read(), [], 0
    while pos < len(data):
        (n,) = struct.unpack_from("<Q", data, pos)
        recs.append(data[pos:pos + 16 + n])
        pos += 16 + n
    return recs


@pytest.mark.parametrize("flag", [[], ["--resume"]])
def test_resume_after_a_kill_shows_each_step_once(cache, tmp_path, flag):
    """What a run killed after step 4 with its last checkpoint at step 2 leaves: metrics.jsonl to
    step 4, the events of steps 3 and 4 past the checkpoint, the last one torn (a buffer flushed
    halfway). The steps are made by an uninterrupted run of the same settings, whose values an
    interrupted run repeats bit for bit."""
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    run([lt_train(), cache, "--out", full, *COMMON])
    run([lt_train(), cache, "--out", part, "--steps", "2", *COMMON])
    (name,) = [n for n in os.listdir(part) if "tfevents" in n]
    (full_name,) = [n for n in os.listdir(full) if "tfevents" in n]
    recs = records(os.path.join(full, full_name))
    assert len(recs) == 7  # the version record and steps 1..6
    with open(os.path.join(part, name), "wb") as f:
        f.write(b"".join(recs[:5]) + recs[5][:30])
    with open(os.path.join(full, "metrics.jsonl")) as f:
        lines = f.readlines()
    with open(os.path.join(part, "metrics.jsonl"), "w") as f:
        f.writelines(lines[:4])
    run([lt_train(), cache, "--out", part, *flag, *COMMON])
    assert check_events(part) == name
    assert [m["loss"] for m in metrics(part)] == [json.loads(l)["loss"] for l in lines]


def test_sigkill_then_rerun_shows_each_step_once(cache, tmp_path):
    out = str(tmp_path / "out")
    args = [lt_train(), cache, "--out", out, "--batch-size", "4", "--epochs", "30",
            "--checkpoint-every", "2", "--threads", "1", "-q"]
    kill_after_first_checkpoint(args, out)
    done = len(metrics(out))
    run(args + ["--steps", str(done + 2)])
    check_events(out)


def test_no_tensorboard_writes_no_event_file(cache, tmp_path):
    out = tmp_path / "out"
    run([lt_train(), cache, "--out", out, "--no-tensorboard", *COMMON])
    assert len(metrics(str(out))) == 6
    assert not [n for n in os.listdir(out) if "tfevents" in n or n.startswith("events")]
    assert "--no-tensorboard" in run([lt_train(), "--help"]).stdout


WRITE_FOREIGN = r"""
import sys
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter
w = EventFileWriter(sys.argv[1])
w.add_event(event_pb2.Event(step=1, summary=summary_pb2.Summary(
    value=[summary_pb2.Summary.Value(tag="my/acc", simple_value=0.5)])))
w.close()
print(w.get_logdir())
"""


def test_an_event_file_of_another_program_is_refused_or_overwritten(cache, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    run([pypi(), "-c", WRITE_FOREIGN, out])
    (foreign,) = [n for n in os.listdir(out) if "tfevents" in n]
    before = (out / foreign).read_bytes()
    r = run([lt_train(), cache, "--out", out, *COMMON], check=False)
    assert r.returncode == 1 and foreign in r.stderr and "--overwrite" in r.stderr, r.stderr
    assert (out / foreign).read_bytes() == before
    assert not (out / "metrics.jsonl").exists()
    run([lt_train(), cache, "--out", out, "--overwrite", *COMMON])
    assert check_events(str(out)) != foreign and not (out / foreign).exists()


def test_overwrite_replaces_the_earlier_event_file(cache, tmp_path):
    out = str(tmp_path / "out")
    run([lt_train(), cache, "--out", out, *COMMON])
    (old,) = [n for n in os.listdir(out) if "tfevents" in n]
    time.sleep(1.1)  # a new name (its seconds) for the new run's file
    run([lt_train(), cache, "--out", out, "--overwrite", "--seed", "1", *COMMON])
    new = check_events(out)
    assert new != old and not os.path.exists(os.path.join(out, old))


def test_an_empty_event_file_left_by_a_kill_is_lt_trains_own(cache, tmp_path):
    out = str(tmp_path / "out")
    run([lt_train(), cache, "--out", out, "--steps", "2", *COMMON])
    (name,) = [n for n in os.listdir(out) if "tfevents" in n]
    open(os.path.join(out, name), "wb").close()
    run([lt_train(), cache, "--out", out, *COMMON])
    recs = records(os.path.join(out, name))
    assert len(recs) == 1 + 4  # a version record again, then the steps after the checkpoint


def test_no_tensorboard_still_replaces_the_earlier_event_file(cache, tmp_path):
    """Without events of its own, a run that replaces an earlier one removes that run's event file
    at its first checkpoint: it would describe another run."""
    out = tmp_path / "out"
    run([lt_train(), cache, "--out", out, "--steps", "2", *COMMON])
    assert [n for n in os.listdir(out) if "tfevents" in n]
    run([lt_train(), cache, "--out", out, "--overwrite", "--no-tensorboard", *COMMON])
    assert len(metrics(str(out))) == 6
    assert not [n for n in os.listdir(out) if "tfevents" in n]
