#!/usr/bin/env python3
"""torch_llama.py - the PyTorch peer of bench_train: one LoRA training step of
a Llama model on the CPU, the same step as lk_x_train runs.

The model is the Hugging Face folder bench_train writes (config.json +
model.safetensors, f32), read by hand (the safetensors format: an 8-byte
little-endian header length, the JSON header, the raw tensor bytes), so
neither transformers nor the safetensors package is needed: a plain-torch
Llama (embedding, RMSNorm, RoPE as transformers' rotate_half, causal
attention with grouped KV heads, SwiGLU MLP, final norm, lm_head). LoRA A/B
(rank --rank, scale alpha / r, A as PEFT's kaiming-uniform, B zeros) on every
q/k/v/o/gate/up/down projection (PEFT's all-linear: lm_head excluded), the
frozen weights without gradients; next-token cross-entropy (mean), gradient
norm clipped to 1.0, torch.optim.AdamW (lr 1e-4, PyTorch's other defaults):
the trainer's defaults. Batches: input_ids [steps, batch, seq] of --tokens,
in order.

Run by bench_train (make bench) with OPENBLAS_CORETYPE unset for this command
only. Settings: torch.set_num_threads(--threads) (the core count), fp32,
oneDNN as by default. Prints `torch: step_ms MS`, the best of --reps timed
steps after --warmup steps."""
import argparse
import json
import math
import os
import struct
import sys
import time


def read_safetensors(path, torch):
    dtypes = {"F32": torch.float32, "I32": torch.int32, "I64": torch.int64,
              "F16": torch.float16, "BF16": torch.bfloat16}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        hdr = json.loads(f.read(n))
        data = bytearray(f.read())
    out = {}
    for name, info in hdr.items():
        if name == "__metadata__":
            continue
        dt = dtypes[info["dtype"]]
        b, e = info["data_offsets"]
        size = torch.tensor([], dtype=dt).element_size()
        t = torch.frombuffer(data, dtype=dt, count=(e - b) // size, offset=b)
        out[name] = t.reshape(info["shape"])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=32.0)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
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
    with open(os.path.join(args.model, "config.json")) as f:
        cfg = json.load(f)
    H = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads", nh)
    hd = H // nh
    n_layers = cfg["num_hidden_layers"]
    eps = cfg.get("rms_norm_eps", 1e-6)
    theta = cfg.get("rope_theta", 10000.0)
    W = read_safetensors(os.path.join(args.model, "model.safetensors"), torch)
    ids_all = read_safetensors(args.tokens, torch)["input_ids"].long()
    steps, batch, seq = ids_all.shape

    torch.manual_seed(0)
    scale = args.alpha / args.rank
    lora = {}
    params = []
    for L in range(n_layers):
        for part, mods in (("self_attn", ("q_proj", "k_proj", "v_proj", "o_proj")),
                           ("mlp", ("gate_proj", "up_proj", "down_proj"))):
            for m in mods:
                name = f"model.layers.{L}.{part}.{m}.weight"
                out_f, in_f = W[name].shape
                A = torch.empty(args.rank, in_f)
                torch.nn.init.kaiming_uniform_(A, a=math.sqrt(5))
                A.requires_grad_(True)
                B = torch.zeros(out_f, args.rank, requires_grad=True)
                lora[name] = (A, B)
                params += [A, B]
    opt = torch.optim.AdamW(params, lr=1e-4)

    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    freqs = torch.outer(torch.arange(seq, dtype=torch.float32), inv)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    causal = torch.full((seq, seq), float("-inf")).triu(1)

    def lin(x, name):
        y = F.linear(x, W[name])
        if name in lora:
            A, B = lora[name]
            y = y + scale * F.linear(F.linear(x, A), B)
        return y

    def rms(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w

    def rot(x):
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        return torch.cat((-x2, x1), dim=-1)

    def forward_loss(ids):
        x = F.embedding(ids, W["model.embed_tokens.weight"])
        for L in range(n_layers):
            p = f"model.layers.{L}."
            h = rms(x, W[p + "input_layernorm.weight"])
            q = lin(h, p + "self_attn.q_proj.weight").view(batch, seq, nh, hd).transpose(1, 2)
            k = lin(h, p + "self_attn.k_proj.weight").view(batch, seq, nkv, hd).transpose(1, 2)
            v = lin(h, p + "self_attn.v_proj.weight").view(batch, seq, nkv, hd).transpose(1, 2)
            q = q * cos + rot(q) * sin
            k = k * cos + rot(k) * sin
            k = k.repeat_interleave(nh // nkv, dim=1)
            v = v.repeat_interleave(nh // nkv, dim=1)
            att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + causal, dim=-1)
            a = (att @ v).transpose(1, 2).reshape(batch, seq, H)
            x = x + lin(a, p + "self_attn.o_proj.weight")
            h = rms(x, W[p + "post_attention_layernorm.weight"])
            g = F.silu(lin(h, p + "mlp.gate_proj.weight")) * lin(h, p + "mlp.up_proj.weight")
            x = x + lin(g, p + "mlp.down_proj.weight")
        x = rms(x, W["model.norm.weight"])
        logits = F.linear(x, W["lm_head.weight"])
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))

    def step(i):
        opt.zero_grad(set_to_none=True)
        loss = forward_loss(ids_all[i % steps])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.item()

    for i in range(args.warmup):
        loss = step(i)
        print(f"torch: warmup step {i} loss {loss:.4f}", flush=True)
    best = 1e30
    for i in range(args.reps):
        t0 = time.perf_counter()
        loss = step(args.warmup + i)
        best = min(best, time.perf_counter() - t0)
        print(f"torch: step {args.warmup + i} loss {loss:.4f}", flush=True)
    print(f"torch: batch {batch} seq {seq} rank {args.rank} fp32 best of {args.reps}", flush=True)
    print(f"torch: step_ms {best * 1e3:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
