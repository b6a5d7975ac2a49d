"""PyTorch on the GPU, for the device check's student rows (scripts/device-check.sh): the lt-train
step (torchvision ResNet + Linear head + L2 norm + the queue KL loss + clipping + LARS, the same
step as torch_student.py / torch_method.py) at batch B and S x S, in three variants:

  eager_fp32    NCHW, fp32, TF32 off (the arithmetic lt's fp32 CUDA backend does)
  eager_bf16    channels_last + bf16 autocast (how PyTorch users train on a GPU)
  compile_bf16  the same with the model and head under torch.compile (default mode)

Random input, no data loading; each variant: warm-up steps (compilation included), then R timed
steps, each ending with the loss on the host (as lt's step does). Prints one line per variant:
RESULT arch=... batch=... variant=... img_per_s=... median_ms=...

    student_gpu_torch.py ARCH BATCH SIZE REPEATS [--variants eager_fp32,eager_bf16,compile_bf16]
"""
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "reference"))
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402

import optim_ref  # noqa: E402  (LARS: tests/reference/optim_ref.py, as torch_method.py uses it)


def run(arch, B, S, R, variant):
    dev = torch.device(os.environ.get("LT_BENCH_DEVICE", "cuda"))  # cpu: a dry run of the code
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    D, Q, tau, lr = 768, 8192, 0.07, 0.1
    model = getattr(torchvision.models, arch)()
    C = model.fc.in_features
    model.fc = torch.nn.Identity()
    head = torch.nn.Linear(C, D)
    model, head = model.to(dev).train(), head.to(dev)
    fmt = torch.contiguous_format
    if variant != "eager_fp32":
        fmt = torch.channels_last
        model = model.to(memory_format=fmt)
    params = list(model.parameters()) + list(head.parameters())
    wds = [1e-6 if p.dim() > 1 else 0.0 for p in params]
    bufs = [None] * len(params)
    fwd_model, fwd_head = model, head
    if variant == "compile_bf16":
        fwd_model, fwd_head = torch.compile(model), torch.compile(head)
    x = torch.randn(B, 3, S, S, device=dev).contiguous(memory_format=fmt)
    t = F.normalize(torch.randn(B, D, device=dev), dim=-1)
    queue = F.normalize(torch.randn(Q, D, device=dev), dim=-1)
    kl = torch.nn.KLDivLoss(reduction="batchmean")

    def step(queue):
        queue = torch.cat([t, queue])[:Q]
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=variant != "eager_fp32"):
            z = fwd_head(fwd_model(x))
        s = F.normalize(z.float(), dim=-1)
        loss = kl(F.log_softmax(s @ queue.T / tau, -1), F.softmax(t @ queue.T / tau, -1))
        for p in params:
            p.grad = None
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        with torch.no_grad():
            optim_ref.lars_step([p.data for p in params], [p.grad for p in params], bufs, lr, wds)
        return queue, loss.item()

    warm = 3 if variant == "compile_bf16" else 2
    for _ in range(warm):
        queue, _ = step(queue)
    times = []
    for _ in range(R):
        t0 = time.perf_counter()
        queue, _ = step(queue)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    print("RESULT arch=%s batch=%d variant=%s img_per_s=%.1f median_ms=%.2f"
          % (arch, B, variant, B / med, med * 1e3), flush=True)


def main():
    arch, B, S, R = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    variants = ["eager_fp32", "eager_bf16", "compile_bf16"]
    if len(sys.argv) > 6 and sys.argv[5] == "--variants":
        variants = sys.argv[6].split(",")
    for v in variants:
        try:
            run(arch, B, S, R, v)
        except Exception as e:  # one variant failing (e.g. no compiler) must not hide the others
            print("RESULT arch=%s batch=%d variant=%s failed=%s" % (arch, B, v, type(e).__name__),
                  flush=True)
            print(e, file=sys.stderr)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
