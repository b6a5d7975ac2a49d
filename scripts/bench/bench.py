#!/usr/bin/env python3
"""`make bench`: lt against the PyTorch stack on this machine, in the same run.

For each workload: our throughput, PyTorch's (Debian python3-torch, same thread count, same
shapes, warm-up excluded, median of several repeats), the ratio, the peak RSS of each process, and
the arithmetic bound (FLOPs per item against this machine's measured fp32 GEMM rate). Prints a
table, writes docs/benchmarks.md and docs/benchmarks.json (never edited by hand; --quick writes
build/bench/benchmarks-quick.md and .json instead).

    scripts/bench/bench.py [--quick] [--threads N]
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TOOLS = os.path.join(ROOT, "build", "tests", "tools")
WORK = os.path.join(ROOT, "build", "bench")
PY = "/usr/bin/python3"


def run_measured(cmd, env=None):
    """Runs cmd, returns (stdout, peak RSS in MiB of that process)."""
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e, text=True)
    out = p.stdout.read()
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.exit(f"bench: {' '.join(map(str, cmd))} failed ({p.returncode}):\n{err}")
    return out, ru.ru_maxrss / 1024.0


def last_json(out):
    return json.loads([l for l in out.splitlines() if l.startswith("{")][-1])


def vit_flops(D=768, depth=12, N=257, hidden=3072, patch_in=588, patches=256):
    per_block = 2 * N * D * 3 * D + 2 * N * D * D + 2 * 2 * N * D * hidden + 2 * 2 * N * N * D
    return depth * per_block + 2 * patches * patch_in * D


def ensure_vitb(path):
    if os.path.exists(path):
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    code = (
        "import sys; sys.path.insert(0, sys.argv[2]);"
        "import torch, dinov2_ref, st_io;"
        "torch.manual_seed(0);"
        "m = dinov2_ref.randomize(dinov2_ref.DinoVisionTransformer(dim=768, depth=12, patch=14, pos_grid=37));"
        "sd = {k: v.detach().contiguous() for k, v in m.state_dict().items() if k != 'mask_token'};"
        "st_io.save(sys.argv[1] + '.tmp', sd)")
    subprocess.run([PY, "-c", code, path, os.path.join(ROOT, "tests", "reference")], check=True)
    os.replace(path + ".tmp", path)
    return path


def gemm_rate(threads, quick):
    """(best fp32 GEMM rate in GFLOP/s: the bound, the BLAS kernels lt uses, the instruction set of
    lt's own loops)"""
    out, _ = run_measured([os.path.join(TOOLS, "bench_gemm"), "2048",
                           "3" if quick else "5", "--threads", str(threads)])
    j = last_json(out)
    return max(j["gflops"]), j.get("blas", "?"), j.get("kernels", "?")


def teacher_rows(threads, quick, gflops):
    weights = ensure_vitb(os.path.join(WORK, "vitb14_random.safetensors"))
    flops = vit_flops()
    rows = []
    for B in ([8] if quick else [8, 32]):
        reps = "2" if quick else "4"
        ours, rss_ours = run_measured([os.path.join(TOOLS, "bench_teacher"), weights, str(B), "224",
                                       reps, "--threads", str(threads)])
        ref, rss_ref = run_measured([PY, os.path.join(ROOT, "scripts", "bench", "torch_teacher.py"),
                                     weights, str(B), "224", reps, str(threads)])
        t_ours = statistics.median(last_json(ours)["times"])
        t_ref = statistics.median(last_json(ref)["times"])
        rows.append({
            "workload": f"teacher forward ViT-B/14 224, batch {B}",
            "unit": "img/s",
            "ours": B / t_ours, "pytorch": B / t_ref, "ratio": t_ref / t_ours,
            "bound": gflops * 1e9 / flops,
            "rss_ours_mib": rss_ours, "rss_pytorch_mib": rss_ref,
            "flops_per_item": flops,
        })
    return rows


def resnet18_train_flops(S=224):
    """Training FLOPs per image of the resnet18 convolutions (2 per multiply-add): forward, weight
    gradient and input gradient of every conv (the stem needs no input gradient). BN, pooling,
    the head and the loss are a few percent more and are left out."""
    convs = []  # (output side, Cin, Cout, k)
    s = (S + 2 * 3 - 7) // 2 + 1
    convs.append((s, 3, 64, 7))
    s = (s + 2 - 3) // 2 + 1
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        so = (s + 2 - 3) // stride + 1
        convs += [(so, cin, cout, 3), (so, cout, cout, 3), (so, cout, cout, 3), (so, cout, cout, 3)]
        if stride != 1 or cin != cout:
            convs.append((so, cin, cout, 1))
        s, cin = so, cout
    total = 0
    for i, (so, ci, co, k) in enumerate(convs):
        f = 2 * so * so * ci * co * k * k
        total += f * (2 if i == 0 else 3)
    return total


def student_rows(threads, quick, gflops):
    B, reps = 32, ("2" if quick else "4")
    ours, rss_ours = run_measured([os.path.join(TOOLS, "bench_student"), "resnet18", str(B), "224",
                                   reps, "--threads", str(threads)])
    ref, rss_ref = run_measured([PY, os.path.join(ROOT, "scripts", "bench", "torch_student.py"),
                                 "resnet18", str(B), "224", reps, str(threads)])
    t_ours = statistics.median(last_json(ours)["times"])
    t_ref = statistics.median(last_json(ref)["times"])
    flops = resnet18_train_flops()
    return [{
        "workload": f"student train step resnet18 224, batch {B} (fwd+bwd+LARS)",
        "unit": "img/s", "ours": B / t_ours, "pytorch": B / t_ref, "ratio": t_ref / t_ours,
        "bound": gflops * 1e9 / flops, "rss_ours_mib": rss_ours, "rss_pytorch_mib": rss_ref,
        "flops_per_item": flops,
    }]


# ---- data path and end to end: a cache of photo-like JPEGs made by lt-embed ----

BIN = os.path.join(ROOT, "bin")


def ensure_caches():
    """build/bench/jpegs (200 photo-like JPEGs, 300-500 px, quality 90), a tiny random teacher
    (dim 64, depth 1: the teacher is not what these workloads time) and two caches made by
    bin/lt-embed at 224 with 2 views: data200.h5 (all 200) and data64.h5 (the first 64)."""
    jp, jp64 = os.path.join(WORK, "jpegs"), os.path.join(WORK, "jpegs64")
    if not os.path.exists(os.path.join(jp, "img0199.jpg")):
        subprocess.run([PY, os.path.join(ROOT, "scripts", "bench", "make_jpegs.py"), jp, "200", "0"],
                       check=True)
    names = sorted(f for f in os.listdir(jp) if f.endswith(".jpg"))[:200]
    os.makedirs(jp64, exist_ok=True)
    for f in names[:64]:
        dst = os.path.join(jp64, f)
        if not os.path.exists(dst):
            with open(os.path.join(jp, f), "rb") as a, open(dst, "wb") as b:
                b.write(a.read())
    lists = {}
    for key, d, ns in (("200", jp, names), ("64", jp64, names[:64])):
        lists[key] = os.path.join(WORK, f"jpegs{key}.txt")
        with open(lists[key], "w") as f:
            f.write("".join(os.path.join(d, n) + "\n" for n in ns))
    teacher = os.path.join(WORK, "teacher64.safetensors")
    if not os.path.exists(teacher):
        subprocess.run([PY, os.path.join(ROOT, "scripts", "make-random-teacher.py"), teacher,
                        "--dim", "64", "--depth", "1"], check=True)
    caches = {}
    for key, d in (("200", jp), ("64", jp64)):
        caches[key] = os.path.join(WORK, f"data{key}.h5")
        if not os.path.exists(caches[key]):
            subprocess.run([os.path.join(BIN, "lt-embed"), "-q", "--teacher", teacher, "--views", "2",
                            "--image-size", "224", "--device", "cpu", d, caches[key]], check=True)
    return caches, lists


def data_rows(threads, quick, caches, lists):
    """Decode + render + mix of one training input (two JPEGs decoded, two views rendered),
    per core: ours with T threads against a torch DataLoader with T workers."""
    S, reps = (100, "2") if quick else (200, "3")
    rows = []
    for T in ([1] if quick else sorted({1, threads})):
        ours, rss_ours = run_measured([os.path.join(TOOLS, "bench_data"), caches["200"], str(S),
                                       reps, "--threads", str(T)])
        ref, rss_ref = run_measured([PY, os.path.join(ROOT, "scripts", "bench", "torch_data.py"),
                                     lists["200"], str(S), reps, str(T)])
        t_ours = statistics.median(last_json(ours)["times"])
        t_ref = statistics.median(last_json(ref)["times"])
        rows.append({
            "workload": f"data path: JPEG decode + 2 views + mixup, 224, {T} thread{'s' * (T > 1)}"
                        f" / DataLoader worker{'s' * (T > 1)}",
            "unit": "img/s/core", "ours": S / t_ours / T, "pytorch": S / t_ref / T,
            "ratio": t_ref / t_ours, "bound": None, "rss_ours_mib": rss_ours,
            "rss_pytorch_mib": rss_ref, "flops_per_item": None,
        })
    return rows


def e2e_rows(threads, quick, gflops, caches, lists):
    """lt-train on the 64-image cache (batch 32, 1 loader worker: its default on 2 cores) against
    the PyTorch loop of torch_train.py with a 1-worker DataLoader; the median wall time of steps
    2.., as B / seconds."""
    B, steps = 32, 4
    out = os.path.join(WORK, "e2e_out")
    _, rss_ours = run_measured([os.path.join(BIN, "lt-train"), "-q", caches["64"], "--out", out,
                                "--overwrite", "--batch-size", str(B), "--steps", str(steps),
                                "--threads", str(threads), "--workers", "1"])
    with open(os.path.join(out, "metrics.jsonl")) as f:
        ms = [json.loads(l) for l in f if l.strip()]
    # img_per_s is the running mean since the run started; elapsed time at step k = k·B/img_per_s,
    # so each step's wall time (data wait and checkpoints included) is the difference
    elapsed = {m["step"]: m["step"] * B / m["img_per_s"] for m in ms}
    ours = B / statistics.median(elapsed[k] - elapsed[k - 1] for k in elapsed if k > 1)
    ref, rss_ref = run_measured([PY, os.path.join(ROOT, "scripts", "bench", "torch_train.py"),
                                 lists["64"], str(B), str(steps), str(threads), "1", "64", "32"])
    t_ref = statistics.median(last_json(ref)["times"])
    flops = resnet18_train_flops()
    return [{
        "workload": f"lt-train end to end, resnet18 224, batch {B}, 64-image cache (data included)",
        "unit": "img/s", "ours": ours, "pytorch": B / t_ref, "ratio": ours * t_ref / B,
        "bound": gflops * 1e9 / flops, "rss_ours_mib": rss_ours, "rss_pytorch_mib": rss_ref,
        "flops_per_item": flops,
    }]


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def table(rows):
    head = ("| workload | ours | PyTorch | ratio | bound | peak RSS ours / PyTorch |\n"
            "|---|---|---|---|---|---|\n")
    lines = [f"| {r['workload']} | {r['ours']:.2f} {r['unit']} | {r['pytorch']:.2f} {r['unit']} | "
             f"{r['ratio']:.2f}x | "
             f"{'n/a' if r['bound'] is None else format(r['bound'], '.2f') + ' ' + r['unit']} | "
             f"{r['rss_ours_mib']:.0f} / {r['rss_pytorch_mib']:.0f} MiB |" for r in rows]
    return head + "\n".join(lines) + "\n"


NOTES = """
Workloads (scripts/bench/; our side in tests/tools/bench_*.c and bin/lt-train):

- teacher forward: DINOv2 ViT-B/14 with random weights, fp32, against tests/reference/dinov2_ref.py.
- student train step: resnet18 forward + backward + head + queue KL loss + clipping + LARS on random
  input, against torchvision resnet18 and the LARS of tests/reference/optim_ref.py. The bound counts
  the FLOPs of direct convolution; lt computes the 3x3 stride-1 convs and their gradients by
  Winograd's F(2x2, 3x3) (2.25x fewer multiplications), so it can run above the bound.
- data path: one *img* is one training input: the primary and the mixup partner JPEG decoded (ours
  from the cache's stored bytes, PyTorch with PIL from the same files), two 224 views (random resized
  crop, flip, colour jitter, grayscale, blur), mixed and normalised. PyTorch: torchvision transforms
  in a DataLoader with as many worker processes as our threads. 200 photo-like JPEGs of 300-500 px
  (scripts/bench/make_jpegs.py). No GEMM, so no arithmetic bound.
- end to end: bin/lt-train on a 64-image cache (1 loader thread), the median wall time of steps
  2.. (from metrics.jsonl: data wait and checkpoint writes included), against scripts/bench/torch_train.py (same model, loss, LARS, 1 DataLoader worker).
- peak RSS: the largest single process (wait4); PyTorch's DataLoader workers are separate
  processes and are not added in.
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer workloads and repeats (< 2 min)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    env = {"OMP_WAIT_POLICY": "PASSIVE"}
    os.environ.update(env)
    gflops, blas, kernels = gemm_rate(a.threads, a.quick)
    caches, lists = ensure_caches()
    rows = teacher_rows(a.threads, a.quick, gflops) + student_rows(a.threads, a.quick, gflops)
    rows += data_rows(a.threads, a.quick, caches, lists)
    if not a.quick:
        rows += e2e_rows(a.threads, a.quick, gflops, caches, lists)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = "make bench" + ("-quick" if a.quick else "")
    meta = {"date": now, "machine": cpu_name(), "cores": os.cpu_count(), "threads": a.threads,
            "command": cmd, "gemm_gflops_fp32": gflops, "blas": blas, "kernels": kernels, "torch": subprocess.run(
                [PY, "-c", "import torch; print(torch.__version__)"], capture_output=True,
                text=True).stdout.strip()}
    t = table(rows)
    print(f"machine: {meta['machine']}, {meta['cores']} cores, {a.threads} threads; "
          f"fp32 GEMM {gflops:.1f} GFLOP/s; {blas}; lt kernels {kernels}; PyTorch {meta['torch']}")
    print(t)
    doc = (f"# Benchmarks\n\nGenerated by `{cmd}` (scripts/bench/bench.py); do not edit by hand.\n\n"
           f"- date: {now}\n- machine: {meta['machine']}, {meta['cores']} cores, "
           f"{a.threads} threads\n- BLAS: {blas}\n- lt kernels: {kernels} (lt's own loops; "
           f"LT_ISA=avx2 forces AVX2)\n- PyTorch: {meta['torch']} (Debian python3-torch)\n"
           f"- measured fp32 GEMM rate: {gflops:.1f} GFLOP/s (the bound column is this rate divided "
           f"by the FLOPs per item)\n\nThroughput is the median over repeats after one warm-up; "
           f"ratio = ours / PyTorch.\n\n" + t + NOTES)
    # the full run is the record in docs/; a quick run (a partial table) goes to build/bench/
    dest = WORK if a.quick else os.path.join(ROOT, "docs")
    name = "benchmarks-quick" if a.quick else "benchmarks"
    os.makedirs(dest, exist_ok=True)
    with open(os.path.join(dest, name + ".md"), "w") as f:
        f.write(doc)
    with open(os.path.join(dest, name + ".json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    print(f"written: {os.path.relpath(os.path.join(dest, name + '.md'), ROOT)} and .json")


if __name__ == "__main__":
    main()
