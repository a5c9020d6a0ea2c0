# registry_gen.py OUT - tiny PEFT adapters and an HF base model for the
# registry's CLI cases (tests/registry_cases.sh), written from the file
# formats' definitions so the cases need no fixtures:
#   OUT/base  a 2-layer Llama-shaped HF folder (hidden 16)
#   OUT/ad1, OUT/ad2  PEFT adapters, r 4, alpha 8, q_proj and v_proj
#   OUT/ad3   the same shape at r 2, alpha 4
import json, struct, os, sys, random
def write_st(path, tensors, meta=None):
    hdr = {}; off = 0; blobs = []
    for name, (shape, vals) in tensors.items():
        b = struct.pack('<%df' % len(vals), *vals)
        hdr[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + len(b)]}
        off += len(b); blobs.append(b)
    if meta: hdr["__metadata__"] = meta
    h = json.dumps(hdr, separators=(',', ':')).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h))); f.write(h); [f.write(b) for b in blobs]
def adapter(d, seed, r=4, alpha=8, hid=16):
    os.makedirs(d, exist_ok=True); rnd = random.Random(seed); t = {}
    for l in range(2):
        for p, out in (("q_proj", hid), ("v_proj", hid // 2)):
            m = "base_model.model.model.layers.%d.self_attn.%s" % (l, p)
            t[m + ".lora_A.weight"] = ([r, hid], [rnd.uniform(-1, 1) for _ in range(r * hid)])
            t[m + ".lora_B.weight"] = ([out, r], [rnd.uniform(-1, 1) for _ in range(out * r)])
    write_st(d + "/adapter_model.safetensors", t)
    json.dump({"peft_type": "LORA", "r": r, "lora_alpha": alpha, "target_modules": ["q_proj", "v_proj"],
               "task_type": "CAUSAL_LM"}, open(d + "/adapter_config.json", "w"))
def base(d, hid=16):
    os.makedirs(d, exist_ok=True); rnd = random.Random(1); t = {}
    def w(n, shape):
        k = 1
        for s in shape: k *= s
        t[n] = (shape, [rnd.uniform(-1, 1) for _ in range(k)])
    w("model.embed_tokens.weight", [32, hid])
    for l in range(2):
        p = "model.layers.%d." % l
        w(p + "self_attn.q_proj.weight", [hid, hid]); w(p + "self_attn.k_proj.weight", [hid // 2, hid])
        w(p + "self_attn.v_proj.weight", [hid // 2, hid]); w(p + "self_attn.o_proj.weight", [hid, hid])
        w(p + "mlp.gate_proj.weight", [32, hid]); w(p + "mlp.up_proj.weight", [32, hid]); w(p + "mlp.down_proj.weight", [hid, 32])
        w(p + "input_layernorm.weight", [hid]); w(p + "post_attention_layernorm.weight", [hid])
    w("model.norm.weight", [hid]); w("lm_head.weight", [32, hid])
    write_st(d + "/model.safetensors", t, {"format": "pt"})
    json.dump({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hid, "intermediate_size": 32,
               "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 32,
               "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 64, "tie_word_embeddings": False,
               "head_dim": 8}, open(d + "/config.json", "w"))
if __name__ == "__main__":
    out = sys.argv[1]
    base(out + "/base"); adapter(out + "/ad1", 1); adapter(out + "/ad2", 2); adapter(out + "/ad3", 3, r=2, alpha=4)
