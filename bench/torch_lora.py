#!/usr/bin/env python3
"""torch_lora.py - the PyTorch peer of bench_lora: the LoRA linear layer
forward + backward (y = x W^T + s (x A^T) B^T; dx, dA, dB from dy; W frozen)
on the benchmark shapes, in fp32 and bf16, on the CPU.

Run by bench_lora (make bench) with OPENBLAS_CORETYPE unset for this command
only, so the OpenBLAS behind Debian's torch picks its own kernels for the CPU.
Settings: torch.set_num_threads(--threads) (bench_lora passes the core count),
oneDNN (mkldnn) enabled as by default, inference-free autograd as in training.
Prints one line per shape and dtype: `torch: M IN OUT R DTYPE MS`, the best of
--reps timed steps after two warm-up steps."""
import argparse
import os
import sys
import time

SHAPES = [(512, 2048, 2048, 16), (2048, 4096, 4096, 16), (512, 4096, 11008, 64)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    try:
        import torch
    except ImportError as e:
        print(f"torch: unavailable ({e})")
        return 0
    torch.set_num_threads(args.threads)
    print(f"torch: version {torch.__version__} threads {torch.get_num_threads()} "
          f"mkldnn {int(torch.backends.mkldnn.is_available())} "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}", flush=True)
    F = torch.nn.functional
    for (M, n_in, n_out, r) in SHAPES:
        for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            torch.manual_seed(0)
            x = (torch.rand(M, n_in) - 0.5).to(dt).requires_grad_(True)
            W = ((torch.rand(n_out, n_in) - 0.5) * 0.05).to(dt)
            A = ((torch.rand(r, n_in) - 0.5) * 0.02).to(dt).requires_grad_(True)
            B = (torch.rand(n_out, r) - 0.5).to(dt).requires_grad_(True)
            dy = (torch.rand(M, n_out) - 0.5).to(dt)
            s = 2.0

            def step():
                x.grad = A.grad = B.grad = None
                y = F.linear(x, W) + s * F.linear(F.linear(x, A), B)
                y.backward(dy)

            step()
            step()
            best = 1e30
            for _ in range(args.reps):
                t0 = time.perf_counter()
                step()
                best = min(best, time.perf_counter() - t0)
            print(f"torch: {M} {n_in} {n_out} {r} {name} {best * 1e3:.2f}", flush=True)
            del x, W, A, B, dy
    return 0


if __name__ == "__main__":
    sys.exit(main())
