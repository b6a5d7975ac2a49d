"""examples/: the make -j pipeline (shards -> merge -> two students) end to end on a few tiny
generated images, and the Slurm scripts: bash -n, submit.sh's job chain (with a stand-in sbatch
that records its arguments), and each job script's command run directly. The merged caches are
compared with a one-process lt-embed run on the same images (h5py)."""
import os
import subprocess

import numpy as np

from conftest import BIN, PLUGIN_DIR, ROOT, run
from embed_fixtures import lt_embed, tiny_teacher
from test_embed_resume import read_all
from train_fixtures import MPIRUN

os.environ["HDF5_PLUGIN_PATH"] = PLUGIN_DIR
EXAMPLES = os.path.join(ROOT, "examples")
SLURM = os.path.join(EXAMPLES, "slurm")


def assert_like_one_process(merged, ref):
    """Every dataset and attribute equal; the embeddings within one float16 rounding (the
    teacher's batches differ) and their checksums follow them."""
    A, B = read_all(ref), read_all(merged)
    assert sorted(A) == sorted(B)
    for k in A:
        if k == "checksums/embeddings":
            continue
        if k == "embeddings":
            a, b = A[k], B[k]
            ulp = np.spacing(np.maximum(np.abs(a), np.abs(b))).astype(np.float32)
            assert np.all(np.abs(a.astype(np.float32) - b.astype(np.float32)) <= ulp)
        else:
            assert np.array_equal(A[k], B[k]), k


def test_makefile_pipeline(tmp_path):
    work = tmp_path / "work"
    args = ["make", "-C", EXAMPLES, "-j3", f"WORK={work}", "SHARDS=3", "IMAGES=7", "VIEWS=2",
            "IMAGE_SIZE=28", "EPOCHS=2", "THREADS=1", f"LT={BIN}"]
    run(args)
    for k in (1, 2, 3):
        assert (work / f"part-{k}.h5").exists()
    ref = tmp_path / "ref.h5"
    run([lt_embed(), "--teacher", work / "random-teacher.safetensors", "--views", "2",
         "--image-size", "28", "--seed", "0", "--threads", "1", "-q", work / "images", ref])
    assert_like_one_process(work / "cache.h5", ref)
    students = [work / "students" / s / "student.safetensors" for s in ("lars", "adamw")]
    assert all(s.exists() for s in students)
    assert students[0].read_bytes() != students[1].read_bytes()
    for s in ("lars", "adamw"):  # each student scored by lt-eval on the generated labelled set
        import json
        rep = json.loads((work / "students" / s / "eval.json").read_text())
        assert [m["name"] for m in rep["models"]] == ["student"] and rep["data"]["classes"] == 3
    # everything is up to date: a second make has nothing to do
    assert subprocess.run(args + ["-q"], capture_output=True).returncode == 0


def test_slurm_scripts_parse():
    for name in os.listdir(SLURM):
        r = subprocess.run(["bash", "-n", os.path.join(SLURM, name)], capture_output=True,
                           text=True)
        assert r.returncode == 0, (name, r.stderr)


def test_slurm_submit_chains_the_jobs(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    log = tmp_path / "sbatch.log"
    # a stand-in sbatch: records its arguments and the job's NAME/TRAIN_ARGS, prints an id
    (fake / "sbatch").write_text(
        "#!/bin/bash\n"
        f"n=$(( $(wc -l < {log} 2>/dev/null || echo 0) + 100 ))\n"
        f"echo \"$n|${{NAME:-}}|${{TRAIN_ARGS:-}}|$*\" >> {log}\n"
        "echo $n\n")
    (fake / "sbatch").chmod(0o755)
    env = {"PATH": f"{fake}:{os.environ['PATH']}", "DATA": "/d", "TEACHER": "/t.st",
           "WORK": "/w", "SHARDS": "5", "TRAIN_A": "--epochs 3", "SBATCH_ARGS": "-p gpu"}
    r = run([os.path.join(SLURM, "submit.sh")], env=env)
    jobs = [line.split("|") for line in log.read_text().splitlines()]
    assert len(jobs) == 4
    (e_id, _, _, e), (m_id, _, _, m), (_, a_name, a_args, a), (_, b_name, b_args, b) = jobs
    assert "--array=1-5" in e and e.endswith("embed-shard.sbatch") and "-p gpu" in e
    assert f"--dependency=afterok:{e_id}" in m and m.endswith("merge.sbatch")
    for t in (a, b):
        assert f"--dependency=afterok:{m_id}" in t and t.endswith("train.sbatch")
    assert (a_name, a_args, b_name) == ("a", "--epochs 3", "b") and "adamw" in b_args
    assert r.stdout.strip() == f"shards {e_id}, merge {m_id}, students 102 103"


def test_slurm_job_commands(tmp_path):
    data, work = tmp_path / "imgs", tmp_path / "work"
    subprocess.run(["python3", os.path.join(ROOT, "scripts", "make-sample-images.py"), data,
                    "--count", "5"], check=True, capture_output=True)
    t = tiny_teacher(str(tmp_path / "t.safetensors"))
    env = {"LT": BIN, "DATA": str(data), "TEACHER": t, "WORK": str(work),
           "EMBED_ARGS": "--views 2 --image-size 28 --threads 1 -q"}
    for k in (1, 2):
        run(["bash", os.path.join(SLURM, "embed-shard.sbatch")],
            env={**env, "SLURM_ARRAY_TASK_ID": str(k), "SLURM_ARRAY_TASK_COUNT": "2"})
    # a task whose part is there does nothing
    r = run(["bash", os.path.join(SLURM, "embed-shard.sbatch")],
            env={**env, "SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "2"})
    assert "finished already" in r.stdout
    # the merge before a shard is there is refused, naming it
    r = run(["bash", os.path.join(SLURM, "merge.sbatch")], env={**env, "SHARDS": "3"},
            check=False)
    assert r.returncode == 1 and "part-3.h5" in r.stderr and not (work / "cache.h5").exists()
    run(["bash", os.path.join(SLURM, "merge.sbatch")], env={**env, "SHARDS": "2"})
    ref = tmp_path / "ref.h5"
    run([lt_embed(), "--teacher", t, "--views", "2", "--image-size", "28", "--threads", "1",
         "-q", data, ref])
    assert_like_one_process(work / "cache.h5", ref)
    run(["bash", os.path.join(SLURM, "train.sbatch")],
        env={**env, "NAME": "a", "TRAIN_ARGS": "--epochs 1 --threads 1 -q"})
    assert (work / "students" / "a" / "student.safetensors").exists()
    # a job of 2 tasks trains with 2 processes through the launcher (MPIRUN)
    r = run(["bash", os.path.join(SLURM, "train.sbatch")],
            env={**env, "NAME": "p2", "TRAIN_ARGS": "--epochs 1 --batch-size 4",
                 "SLURM_NTASKS": "2", "SLURM_CPUS_PER_TASK": "1", "MPIRUN": " ".join(MPIRUN)})
    assert (work / "students" / "p2" / "student.safetensors").exists()
    log = (work / "students" / "p2" / "train.log").read_text()
    assert "2 processes (2 images of each batch) of 1 thread" in log, log


def test_makefile_trains_with_processes(tmp_path):
    """PROCS=2: each student's lt-train is started by the launcher with -np 2 (make -n)."""
    r = run(["make", "-C", EXAMPLES, "-n", f"WORK={tmp_path}", "PROCS=2", "MPIRUN=mpirun -x A",
             f"LT={BIN}", "students"])
    trains = [l for l in r.stdout.splitlines() if "lt-train" in l]
    assert len(trains) == 2 and all(l.startswith("mpirun -x A -np 2 ") for l in trains), trains
