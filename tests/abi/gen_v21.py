#!/usr/bin/env python3
"""gen_v21.py - write tests/abi/v2.1 from tests/abi/v2.0: the synthetic next
minor compat_pairs.sh builds against. Every kind of struct gets a field
appended (function pointers in the tables), LK_PLUGIN_ABI_MINOR becomes 1
and the library version 2.1.0. Run from the repository root after v2.0
changes; the output is committed."""
import glob, os, shutil

SRC, DST = 'tests/abi/v2.0/', 'tests/abi/v2.1/'
MARK = '\n  /* ---- added in 2.1 (synthetic: tests/abi) ---- */\n'
ADD = [  # (file, closing text of the struct, appended fields)
    ('lorakit_plugin.h', '\n} lk_host_api_t;',
     '  /* [any-thread] 2.1: a new host service; NULL when absent. */\n  int32_t (*future_host_fn)(uint32_t x);'),
    ('lorakit_plugin.h', '\n} lk_backend_vt_t;',
     '  int32_t (*future_backend_fn)(void *self); /* (optional) */\n  uint64_t future_backend_flags;'),
    ('lorakit_plugin.h', '\n};\n#define LK_MIN_SIZE_QUANTISER_VT',
     '  int32_t (*future_quant_fn)(void *self); /* (optional) */'),
    ('lorakit_plugin.h', '\n} lk_loader_vt_t;', '  int32_t (*future_loader_fn)(void *file); /* (optional) */'),
    ('lorakit_plugin.h', '\n} lk_backend_factory_t;', '  uint64_t future_factory_flags;'),
    ('lorakit_plugin.h', '\n} lk_quantiser_factory_t;', '  uint64_t future_factory_flags;'),
    ('lorakit_plugin.h', '\n} lk_loader_factory_t;', '  uint64_t future_factory_flags;'),
    ('lorakit_plugin.h', '\n} lk_plugin_t;', '  uint64_t future_plugin_flags;\n  const char *future_plugin_url;'),
    ('lorakit.h', '\n} lk_context_opts_t;', '  uint64_t future_ctx_option; /* default 0 */'),
    ('lorakit.h', '\n} lk_plugin_info_t;', '  uint64_t future_plugin_info_field;'),
    ('lorakit_ops.h', '\n} lk_op_lora_t;', '  float future_lora_param; /* default 0 */\n  uint32_t reserved1;'),
    ('lorakit_types.h', '\n} lk_device_info_t;', '  uint64_t future_device_field;'),
]
os.makedirs(DST, exist_ok=True)
for f in glob.glob(SRC + '*.h'):
    shutil.copy(f, DST)
for f, close, text in ADD:
    p = DST + f
    s = open(p).read()
    assert s.count(close) == 1, (f, close)
    s = s.replace(close, MARK + text + close)
    open(p, 'w').write(s)
p = DST + 'lorakit_version.h'
s = open(p).read()
for a, b in [('#define LK_PLUGIN_ABI_MINOR 0', '#define LK_PLUGIN_ABI_MINOR 1'),
             ('#define LK_VERSION_MINOR 0', '#define LK_VERSION_MINOR 1'),
             ('#define LK_VERSION_STRING "2.0.0"', '#define LK_VERSION_STRING "2.1.0"')]:
    assert a in s, a
    s = s.replace(a, b)
open(p, 'w').write(s)
