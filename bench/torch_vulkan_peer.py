#!/usr/bin/env python3
"""torch_vulkan_peer.py - the PyTorch peer of bench_vulkan: the LoRA linear
layer forward + backward on a CUDA GPU, fp32:
    y = x W^T + s (x A^T) B^T,   y.backward(dy) -> dx, dA, dB   (W frozen: no dW)
x [T, in], W [out, in], A [r, in], B [out, r], s = 2.

Timed with CUDA events around each step (forward + backward), median of
--reps after --warmup steps; first with TF32 off (the target:
torch.backends.cuda.matmul.allow_tf32 = False, torch.backends.cudnn.allow_tf32
= False), then with TF32 on (the moonshot figure).
Prints, for bench_vulkan to parse:
    torch: version V cuda C
    torch: device NAME
    torch: fp32 MS
    torch: tf32 MS
or `torch: unavailable (reason)` (exit 0) when torch or CUDA is absent."""
import argparse
import statistics
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="8192,4096,4096,16", help="T,IN,OUT,R")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", type=int, default=0, help="CUDA device index")
    args = ap.parse_args()
    T, n_in, n_out, r = (int(v) for v in args.shape.split(","))
    try:
        import torch
    except ImportError as e:
        print(f"torch: unavailable ({e})")
        return 0
    if not torch.cuda.is_available():
        print("torch: unavailable (torch.cuda.is_available() is False)")
        return 0
    dev = torch.device("cuda", args.device)
    torch.cuda.set_device(dev)
    print(f"torch: version {torch.__version__} cuda {torch.version.cuda}", flush=True)
    print(f"torch: device {torch.cuda.get_device_name(dev)}", flush=True)
    F = torch.nn.functional
    g = torch.Generator(device=dev).manual_seed(0)

    def rnd(*shape, scale=1.0):
        return (torch.rand(*shape, device=dev, generator=g) - 0.5) * scale

    x = rnd(T, n_in).requires_grad_(True)
    W = rnd(n_out, n_in, scale=0.05)  # frozen
    A = rnd(r, n_in, scale=0.02).requires_grad_(True)
    B = rnd(n_out, r).requires_grad_(True)
    dy = rnd(T, n_out)
    s = 2.0

    def step():
        x.grad = A.grad = B.grad = None
        y = F.linear(x, W) + s * F.linear(F.linear(x, A), B)
        y.backward(dy)

    for name, tf32 in (("fp32", False), ("tf32", True)):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        for _ in range(args.warmup):
            step()
        torch.cuda.synchronize()
        times = []
        for _ in range(args.reps):
            t0 = torch.cuda.Event(enable_timing=True)
            t1 = torch.cuda.Event(enable_timing=True)
            t0.record()
            step()
            t1.record()
            t1.synchronize()
            times.append(t0.elapsed_time(t1))
        print(f"torch: {name} {statistics.median(times):.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
