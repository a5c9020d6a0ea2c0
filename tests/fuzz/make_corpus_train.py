#!/usr/bin/env python3
"""make_corpus_train.py - writes the committed seed corpus of fuzz_train
(tests/fuzz/corpus_train/): one small valid input per reader, each prefixed
by the byte that selects it (see fuzz_train.c). Written from the formats'
descriptions (safetensors: 8-byte little-endian header length, JSON header
padded with spaces to a multiple of 8, data covered exactly; the checkpoint
metadata of docs/training.md) with the standard library only. Run from the
repository root when the corpus needs remaking."""
import json
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'corpus_train')


def safetensors(tensors, meta=None):
    header, blobs, off = {}, [], 0
    if meta is not None:
        header['__metadata__'] = meta
    for name, dtype, shape, raw in tensors:
        header[name] = {'dtype': dtype, 'shape': shape, 'data_offsets': [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(',', ':')).encode()
    h += b' ' * (-len(h) % 8)
    return struct.pack('<Q', len(h)) + h + b''.join(blobs)


def main():
    os.makedirs(OUT, exist_ok=True)
    state = {'step': 3, 'cursor': {'epoch': 0, 'index': 1, 'offset': 2, 'rng': '9e3779b97f4a7c14'},
             'data_sha256': 'ab' * 32, 'base_fingerprint': 'fp'}
    ckpt = safetensors([('param.a', 'F32', [2, 2], struct.pack('<4f', 1, 2, 3, 4)),
                        ('adam_m.a', 'F32', [2, 2], struct.pack('<4f', 0, 0, 0, 0))],
                       {'format': 'lorakit-train-checkpoint', 'version': '1',
                        'state': json.dumps(state, separators=(',', ':'))})
    tokens = safetensors([('input_ids', 'I32', [2, 2, 3], struct.pack('<12i', *range(1, 13)))])
    seeds = {
        'ckpt': b'\x00' + ckpt,
        'jsonl': b'\x01' + b'{"text": "hello"}\n\n{"text": "caf\\u00e9"}\n',
        'fortune': b'\x02' + b'one\n%\ntwo  lines\n\there\n%\nB\bBold\n%\n',
        'text': b'\x03' + b'a line\nanother one\n\n!fails\n',
        'pc': b'\x04' + b'{"prompt": "p", "completion": "c"}\n{"prompt": "", "completion": "only"}\n',
        'tokens': b'\x05' + tokens,
    }
    for name, data in seeds.items():
        with open(os.path.join(OUT, name), 'wb') as f:
            f.write(data)


if __name__ == '__main__':
    main()
