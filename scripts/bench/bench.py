#!/usr/bin/env python3
"""`make bench`: lt against the PyTorch stack on this machine, in the same run.

For each workload: our throughput, PyTorch's (Debian python3-torch, same thread count, same
shapes, warm-up excluded, median of several repeats), the ratio, the peak RSS of each process, and
the arithmetic bound (FLOPs per item against this machine's measured fp32 GEMM rate). Prints a
table, writes docs/benchmarks.md and docs/benchmarks.json (never edited by hand).

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
    out, _ = run_measured([os.path.join(TOOLS, "bench_gemm"), "2048",
                           "3" if quick else "5", "--threads", str(threads)])
    return max(last_json(out)["gflops"])  # the best rate this machine reached: the bound


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
    """Training FLOPs per image: 3x the forward (forward + input and weight gradients)."""
    return 3 * 1.82e9 * (S / 224) ** 2


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
             f"{r['ratio']:.2f}x | {r['bound']:.2f} {r['unit']} | "
             f"{r['rss_ours_mib']:.0f} / {r['rss_pytorch_mib']:.0f} MiB |" for r in rows]
    return head + "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer workloads and repeats (< 2 min)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    env = {"OMP_WAIT_POLICY": "PASSIVE"}
    os.environ.update(env)
    gflops = gemm_rate(a.threads, a.quick)
    rows = teacher_rows(a.threads, a.quick, gflops) + student_rows(a.threads, a.quick, gflops)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = "make bench" + ("-quick" if a.quick else "")
    meta = {"date": now, "machine": cpu_name(), "cores": os.cpu_count(), "threads": a.threads,
            "command": cmd, "gemm_gflops_fp32": gflops, "torch": subprocess.run(
                [PY, "-c", "import torch; print(torch.__version__)"], capture_output=True,
                text=True).stdout.strip()}
    t = table(rows)
    print(f"machine: {meta['machine']}, {meta['cores']} cores, {a.threads} threads; "
          f"fp32 GEMM {gflops:.1f} GFLOP/s; PyTorch {meta['torch']}")
    print(t)
    doc = (f"# Benchmarks\n\nGenerated by `{cmd}` (scripts/bench/bench.py); do not edit by hand.\n\n"
           f"- date: {now}\n- machine: {meta['machine']}, {meta['cores']} cores, "
           f"{a.threads} threads\n- PyTorch: {meta['torch']} (Debian python3-torch)\n"
           f"- measured fp32 GEMM rate: {gflops:.1f} GFLOP/s (the bound column is this rate divided "
           f"by the FLOPs per item)\n\nThroughput is the median over repeats after one warm-up; "
           f"ratio = ours / PyTorch.\n\n" + t)
    os.makedirs(os.path.join(ROOT, "docs"), exist_ok=True)
    with open(os.path.join(ROOT, "docs", "benchmarks.md"), "w") as f:
        f.write(doc)
    with open(os.path.join(ROOT, "docs", "benchmarks.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
