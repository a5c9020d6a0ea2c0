#!/usr/bin/env python3
"""make_corpus.py - writes the committed seed corpora of the fuzz targets:
tests/fuzz/corpus_gguf/ and tests/fuzz/corpus_safetensors/ (small valid
files, a few KB at most, written from the format specifications with the
standard library only). Run from the repository root when the corpora need
remaking; the fuzz runs (tests/fuzz/fuzz.mk) also seed from the fixture files
when ../shared/fixtures is present.

GGUF: gguf.md (v2/v3, little-endian, KV value types 0..12, tensor infos,
aligned data section); ggml type ids and block sizes from ggml.h.
safetensors: 8-byte little-endian header length, a JSON header padded with
spaces to a multiple of 8, the data section covered exactly by the tensors.
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

# GGUF value types
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
SCALAR = {U8: '<B', I8: '<b', U16: '<H', I16: '<h', U32: '<I', I32: '<i', F32: '<f',
          BOOL: '<?', U64: '<Q', I64: '<q', F64: '<d'}
# ggml types: id -> (elements per block, bytes per block)
GGML = {'F32': (0, 1, 4), 'F16': (1, 1, 2), 'Q4_0': (2, 32, 18), 'Q4_1': (3, 32, 20),
        'Q5_0': (6, 32, 22), 'Q8_0': (8, 32, 34), 'Q4_K': (12, 256, 144), 'Q6_K': (14, 256, 210),
        'BF16': (30, 1, 2)}


def gstr(x):
    b = x if isinstance(x, bytes) else x.encode()
    return struct.pack('<Q', len(b)) + b


def gval(t, v):
    if t == STRING:
        return gstr(v)
    if t == ARRAY:
        at, items = v
        return struct.pack('<IQ', at, len(items)) + b''.join(gval(at, x) for x in items)
    return struct.pack(SCALAR[t], v)


def nbytes(ne, tname):
    _, block, size = GGML[tname]
    n = ne[0] // block * size
    for d in ne[1:]:
        n *= d
    return n


def pattern(n, seed):
    return bytes((seed * 31 + i * 7) & 0xFF for i in range(n))


def f32s(values):
    return b''.join(struct.pack('<f', v) for v in values)


def gguf(version, kvs, tensors, alignment=32):
    """kvs: [(key, type, value)]; tensors: [(name, ne, ggml type name, data or None)]."""
    out = b'GGUF' + struct.pack('<IQQ', version, len(tensors), len(kvs))
    for k, t, v in kvs:
        out += gstr(k) + struct.pack('<I', t) + gval(t, v)
    infos, data, off = b'', b'', 0
    for i, (name, ne, tname, raw) in enumerate(tensors):
        n = nbytes(ne, tname)
        raw = raw if raw is not None else pattern(n, i + 1)
        assert len(raw) == n, name
        infos += gstr(name) + struct.pack('<I', len(ne)) + b''.join(struct.pack('<Q', d) for d in ne)
        infos += struct.pack('<IQ', GGML[tname][0], off)
        pad = (-n) % alignment
        data += raw + b'\0' * pad
        off += n + pad
    out += infos
    out += b'\0' * ((-len(out)) % alignment)
    return out + data


def llama_kvs(arch='llama', heads=2, kv_heads=1, hidden=8):
    return [('general.architecture', STRING, arch), ('general.type', STRING, 'model'),
            ('general.name', STRING, 'fuzz-seed'),
            (arch + '.block_count', U32, 1), (arch + '.context_length', U32, 16),
            (arch + '.embedding_length', U32, hidden), (arch + '.feed_forward_length', U32, 16),
            (arch + '.attention.head_count', U32, heads), (arch + '.attention.head_count_kv', U32, kv_heads),
            (arch + '.rope.freq_base', F32, 10000.0),
            (arch + '.attention.layer_norm_rms_epsilon', F32, 1e-5),
            (arch + '.vocab_size', U32, 4), ('general.quantization_version', U32, 2)]


def every_type_kvs():
    return [('t.u8', U8, 200), ('t.i8', I8, -100), ('t.u16', U16, 60000), ('t.i16', I16, -30000),
            ('t.u32', U32, 4000000000), ('t.i32', I32, -2000000000), ('t.f32', F32, 0.1),
            ('t.bool', BOOL, True), ('t.str', STRING, 'h\u00e9llo'), ('t.u64', U64, 2 ** 64 - 1),
            ('t.i64', I64, -2 ** 63), ('t.f64', F64, 1e-300),
            ('t.f32nan', F32, float('nan')), ('t.f64inf', F64, float('-inf')),
            ('t.badutf8', STRING, b'caf\xe9'),
            ('t.arr.u32', ARRAY, (U32, [1, 2, 3])), ('t.arr.str', ARRAY, (STRING, ['a', '', 'xyz'])),
            ('t.arr.nested', ARRAY, (ARRAY, [(I16, [1, -1]), (I16, []), (I16, [7])])),
            ('t.arr.empty', ARRAY, (F64, [])),
            ('tokenizer.ggml.tokens', ARRAY, (STRING, ['<unk>', '<s>', '</s>', 'a'])),
            ('tokenizer.ggml.scores', ARRAY, (F32, [0.0, 0.0, 0.0, -1.5])),
            ('tokenizer.ggml.token_type', ARRAY, (I32, [2, 3, 3, 1]))]


def write(path, data):
    with open(path, 'wb') as f:
        f.write(data)
    print('%6d  %s' % (len(data), os.path.relpath(path, HERE)))


def make_gguf(d):
    os.makedirs(d, exist_ok=True)
    # A llama model: every KV type, several tensor types, permuted q/k rows.
    write(os.path.join(d, 'llama-v3.gguf'), gguf(3, llama_kvs() + every_type_kvs(), [
        ('token_embd.weight', [8, 4], 'F16', None),
        ('output_norm.weight', [8], 'F32', f32s([1.0] * 8)),
        ('output.weight', [256, 1], 'Q4_K', None),
        ('blk.0.attn_norm.weight', [8], 'F32', None),
        ('blk.0.attn_q.weight', [8, 8], 'F32', f32s([float(i) for i in range(64)])),
        ('blk.0.attn_k.weight', [32, 4], 'Q8_0', None),
        ('blk.0.attn_v.weight', [32, 4], 'Q4_0', None),
        ('blk.0.attn_output.weight', [8, 8], 'BF16', None),
        ('blk.0.ffn_gate.weight', [32, 2], 'Q5_0', None),
        ('blk.0.ffn_up.weight', [32, 2], 'Q4_1', None),
        ('blk.0.ffn_down.weight', [256, 1], 'Q6_K', None),
        ('blk.0.ffn_norm.weight', [8], 'F32', None),
    ]))
    # Version 2, alignment 64, qwen2 (no permutation), a 3-D and an empty tensor.
    write(os.path.join(d, 'qwen2-v2-align64.gguf'), gguf(2, [('general.alignment', U32, 64)] + llama_kvs('qwen2'), [
        ('token_embd.weight', [8, 4], 'F32', None),
        ('blk.0.attn_q.weight', [8, 8], 'F16', None),
        ('blk.0.attn_q.bias', [8], 'F32', None),
        ('odd.weight', [2, 3, 2], 'F32', None),
        ('empty.weight', [0, 4], 'F32', b''),
    ], alignment=64))
    # A LoRA adapter as convert_lora_to_gguf.py writes it.
    write(os.path.join(d, 'lora.gguf'), gguf(3, [
        ('general.architecture', STRING, 'llama'), ('general.type', STRING, 'adapter'),
        ('adapter.type', STRING, 'lora'), ('adapter.lora.alpha', F32, 16.0),
        ('general.quantization_version', U32, 2)], [
        ('blk.0.attn_q.weight.lora_a', [8, 2], 'F32', None),
        ('blk.0.attn_q.weight.lora_b', [2, 8], 'F32', None),
        ('blk.0.attn_v.weight.lora_a', [8, 4], 'F32', None),
        ('blk.0.attn_v.weight.lora_b', [4, 4], 'F32', None),
    ]))
    # No tensors at all; and only key/values of every type.
    write(os.path.join(d, 'empty.gguf'), gguf(3, [('general.architecture', STRING, 'llama')], []))
    write(os.path.join(d, 'kv-only.gguf'), gguf(3, every_type_kvs(), []))


def safetensors(tensors, metadata=None):
    """tensors: [(name, dtype, shape, raw bytes)] in data order."""
    header, off = {}, 0
    if metadata is not None:
        header['__metadata__'] = metadata
    data = b''
    for name, dtype, shape, raw in tensors:
        header[name] = {'dtype': dtype, 'shape': shape, 'data_offsets': [off, off + len(raw)]}
        off += len(raw)
        data += raw
    h = json.dumps(header, separators=(',', ':')).encode()
    h += b' ' * ((-len(h)) % 8)
    return struct.pack('<Q', len(h)) + h + data


def make_safetensors(d):
    os.makedirs(d, exist_ok=True)
    write(os.path.join(d, 'small.safetensors'), safetensors([
        ('a.weight', 'F32', [2, 3], f32s([0.5, -1, 2, 3, 4, 5])),
        ('b', 'F16', [4], pattern(8, 1)),
        ('c', 'BF16', [2, 2], pattern(8, 2)),
        ('ids', 'I64', [3], struct.pack('<3q', 1, -2, 3)),
        ('mask', 'BOOL', [5], bytes([1, 0, 1, 1, 0])),
        ('none', 'U8', [0], b''),
        ('scalar', 'F64', [], struct.pack('<d', 3.25)),
        ('f8', 'F8_E4M3', [2, 1], b'\x38\xb8'),
    ], {'format': 'pt', 'note': 'fuzz seed'}))
    lora = []
    for m, out in (('q_proj', 8), ('v_proj', 4)):
        lora.append(('base_model.model.model.layers.0.self_attn.%s.lora_A.weight' % m, 'F32', [2, 8],
                     pattern(64, out)))
        lora.append(('base_model.model.model.layers.0.self_attn.%s.lora_B.weight' % m, 'F32', [out, 2],
                     pattern(8 * out, out + 1)))
    write(os.path.join(d, 'peft.safetensors'), safetensors(lora, {'format': 'pt'}))
    write(os.path.join(d, 'empty.safetensors'), safetensors([]))
    # JSON side files: the same bytes go through the guarded JSON parser.
    cfg = {'architectures': ['LlamaForCausalLM'], 'model_type': 'llama', 'hidden_size': 8,
           'intermediate_size': 16, 'num_attention_heads': 2, 'num_key_value_heads': 1,
           'num_hidden_layers': 1, 'vocab_size': 4, 'rms_norm_eps': 1e-05,
           'rope_parameters': {'rope_theta': 10000.0, 'rope_type': 'default'}, 'tie_word_embeddings': False}
    write(os.path.join(d, 'config.json'), json.dumps(cfg, indent=2).encode())
    acfg = {'peft_type': 'LORA', 'r': 2, 'lora_alpha': 16, 'target_modules': ['q_proj', 'v_proj'],
            'rank_pattern': {'v_proj': 4}, 'alpha_pattern': {}, 'use_rslora': False, 'bias': 'none',
            'base_model_name_or_path': 'base', 'task_type': 'CAUSAL_LM'}
    write(os.path.join(d, 'adapter_config.json'), json.dumps(acfg, indent=2).encode())
    idx = {'metadata': {'total_size': 64}, 'weight_map': {'a.weight': 'model-00001-of-00002.safetensors',
                                                          'b': 'model-00002-of-00002.safetensors'}}
    write(os.path.join(d, 'model.safetensors.index.json'), json.dumps(idx).encode())


if __name__ == '__main__':
    make_gguf(os.path.join(HERE, 'corpus_gguf'))
    make_safetensors(os.path.join(HERE, 'corpus_safetensors'))
