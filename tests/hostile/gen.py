#!/usr/bin/env python3
"""gen.py - writes the hostile inputs of tests/hostile/ (committed; rerun
only to change them). Each case is a small PEFT adapter folder for the tiny
base.safetensors (one 4x4 q_proj) that lorakit must refuse; CASES says which
commands must refuse it."""
import json, os, struct, sys

HERE = os.path.dirname(os.path.abspath(__file__))

def safetensors(path, tensors):
    """tensors: name -> (shape, list of floats), written as F32."""
    header, blob = {}, b""
    for name, (shape, vals) in tensors.items():
        data = struct.pack("<%df" % len(vals), *vals)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [len(blob), len(blob) + len(data)]}
        blob += data
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + blob)

MOD = "model.layers.0.self_attn.q_proj"
def lora(a=None, b=None):
    a = a if a is not None else [0.25] * 8
    b = b if b is not None else [0.5] * 8
    return {"base_model.model.%s.lora_A.weight" % MOD: ([2, 4], a),
            "base_model.model.%s.lora_B.weight" % MOD: ([4, 2], b)}

def config(**kw):
    c = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"]}
    c.update(kw)
    return json.dumps(c).encode()

def case(name, cfg, weights=None):
    d = os.path.join(HERE, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "adapter_config.json"), "wb") as f:
        f.write(cfg)
    safetensors(os.path.join(d, "adapter_model.safetensors"), weights or lora())

safetensors(os.path.join(HERE, "base.safetensors"), {MOD + ".weight": ([4, 4], [0.0] * 16)})
# glibc regcomp expands bounded repeats: 255^3 copies, gigabytes
case("regex-nested-repeats", config(rank_pattern={"(((a{1,255}){1,255}){1,255})": 2}))
case("regex-product", config(alpha_pattern={"((q{1,64}){1,64}){1,2}": 2}))
case("regex-deep-groups", config(rank_pattern={"(((((q)))))": 2}))
# each within the limits, together past what one config may expand to
case("regex-budget", config(rank_pattern={"((q{1,64}){1,64})" + s: 2 for s in ("a", "b", "c")}))
case("regex-long", config(rank_pattern={"q" * 300: 2}))
case("regex-backref", config(rank_pattern={"(a*)*\\1": 2}))
case("regex-target-string", config(target_modules="((.{1,64}){1,64}){1,64}"))
case("nan-in-lora-b", config(), lora(b=[0.5] * 7 + [float("nan")]))
case("inf-in-lora-a", config(), lora(a=[float("-inf")] + [0.25] * 7))
# controls, which must succeed: the commands work on a sound adapter, and an
# alpha_pattern value of 0 is alpha 0 (scale 0, merge leaves W as it is)
case("ok-control", config())
case("ok-alpha-pattern-zero", config(alpha_pattern={"q_proj": 0}))
# not JSON, starting with a terminal escape and a "secret": neither may be echoed
case("config-not-json", b"\x1b[2JSECRET-TOKEN-123 {")
