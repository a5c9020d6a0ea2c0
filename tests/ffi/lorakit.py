"""lorakit.py - ctypes bindings for liblorakit (abi/lorakit.h), standard
library only.

The library is found at $LORAKIT_LIB when set, else by the dynamic loader
(liblorakit.so.2). Ownership: Context, Adapter and Backend own their handle;
close() frees it (idempotent), so does leaving a `with` block, and __del__
as a last resort. Objects made from a context hold a reference to it, so it
is freed after them. Errors raise lorakit.Error with .status and .message
(the context's lk_last_error). struct_size is filled on every struct passed in.
"""
import ctypes
import os
from ctypes import (POINTER, Structure, byref, c_char_p, c_float, c_int32, c_int64,
                    c_uint32, c_uint64, c_void_p)

LK_OK = 0
LK_DTYPE_F32 = 1
LK_SCALING_STANDARD = 0
LK_SCALING_RSLORA = 1
LK_MAX_DIMS = 8


class lk_tensor_t(Structure):
    _fields_ = [("struct_size", c_uint32), ("dtype", c_int32), ("ndim", c_uint32),
                ("reserved0", c_uint32), ("shape", c_int64 * LK_MAX_DIMS), ("data", c_void_p),
                ("nbytes", c_uint64), ("qformat", c_char_p)]


class lk_context_opts_t(Structure):
    _fields_ = [("struct_size", c_uint32), ("no_default_plugins", c_uint32),
                ("n_threads", c_uint32), ("reserved0", c_uint32)]


class lk_plugin_info_t(Structure):
    _fields_ = [("struct_size", c_uint32), ("status", c_int32), ("path", c_char_p),
                ("id", c_char_p), ("name", c_char_p), ("version", c_char_p),
                ("description", c_char_p), ("abi_version", c_uint32),
                ("n_components", c_uint32), ("reason", c_char_p)]


class lk_component_info_t(Structure):
    _fields_ = [("struct_size", c_uint32), ("kind", c_int32), ("name", c_char_p),
                ("description", c_char_p), ("plugin_index", c_uint32), ("reserved0", c_uint32)]


class lk_lora_config_t(Structure):
    _fields_ = [("struct_size", c_uint32), ("rank", c_uint32), ("alpha", c_float),
                ("scaling", c_int32), ("seed", c_uint64)]


class lk_target_info_t(Structure):
    _fields_ = [("struct_size", c_uint32), ("rank", c_uint32), ("name", c_char_p),
                ("in_features", c_int64), ("out_features", c_int64), ("alpha", c_float),
                ("scale", c_float)]


LK_NAME_MAX = 128
LK_BUFFER_DEVICE_LOCAL = 1
LK_BUFFER_HOST_VISIBLE = 2


class lk_device_info_t(Structure):
    _fields_ = [("struct_size", c_uint32), ("type", c_int32), ("name", ctypes.c_char * LK_NAME_MAX),
                ("memory_total", c_uint64), ("memory_free", c_uint64), ("compute_units", c_uint32),
                ("unified_memory", c_uint32), ("max_alloc", c_uint64), ("offset_align", c_uint64),
                ("can_wrap", c_uint32), ("reserved0", c_uint32), ("driver", ctypes.c_char * LK_NAME_MAX)]


# Sizes as tests/test_abi.c pins them (x86_64 LP64).
for _t, _n in ((lk_tensor_t, 104), (lk_context_opts_t, 16), (lk_plugin_info_t, 64),
               (lk_component_info_t, 32), (lk_lora_config_t, 24), (lk_target_info_t, 40),
               (lk_device_info_t, 312)):
    assert ctypes.sizeof(_t) == _n, (_t.__name__, ctypes.sizeof(_t), _n)

_lib = ctypes.CDLL(os.environ.get("LORAKIT_LIB") or "liblorakit.so.2")


def _fn(name, restype, *argtypes):
    f = getattr(_lib, name)
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


_S = c_int32  # lk_status
_version_string = _fn("lk_version_string", c_char_p)
_plugin_abi_version = _fn("lk_plugin_abi_version", c_uint32)
_strerror = _fn("lk_strerror", c_char_p, _S)
_tensor_init = _fn("lk_tensor_init", _S, POINTER(lk_tensor_t), c_int32, c_uint32,
                   POINTER(c_int64), c_void_p)
_context_create = _fn("lk_context_create", _S, POINTER(lk_context_opts_t), POINTER(c_void_p))
_context_free = _fn("lk_context_free", None, c_void_p)
_last_error = _fn("lk_last_error", c_char_p, c_void_p)
_plugin_load = _fn("lk_plugin_load", _S, c_void_p, c_char_p)
_plugin_count = _fn("lk_plugin_count", c_uint32, c_void_p)
_plugin_info = _fn("lk_plugin_info", _S, c_void_p, c_uint32, POINTER(lk_plugin_info_t))
_component_count = _fn("lk_component_count", c_uint32, c_void_p)
_component_info = _fn("lk_component_info", _S, c_void_p, c_uint32, POINTER(lk_component_info_t))
_adapter_create = _fn("lk_adapter_create", _S, c_void_p, POINTER(lk_lora_config_t),
                      POINTER(c_void_p))
_adapter_free = _fn("lk_adapter_free", None, c_void_p)
_adapter_add_target = _fn("lk_adapter_add_target", _S, c_void_p, c_char_p, c_int64, c_int64,
                          c_uint32, c_float)
_adapter_find = _fn("lk_adapter_find", c_int32, c_void_p, c_char_p)
_adapter_target_info = _fn("lk_adapter_target_info", _S, c_void_p, c_uint32,
                           POINTER(lk_target_info_t))
_adapter_weights = _fn("lk_adapter_weights", _S, c_void_p, c_uint32, POINTER(lk_tensor_t),
                       POINTER(lk_tensor_t))
_backend_device_count = _fn("lk_backend_device_count", c_uint32, c_void_p, c_char_p)
_backend_open = _fn("lk_backend_open", _S, c_void_p, c_char_p, c_uint32, POINTER(c_void_p))
_backend_close = _fn("lk_backend_close", None, c_void_p)
_backend_name = _fn("lk_backend_name", c_char_p, c_void_p)
_backend_info = _fn("lk_backend_info", _S, c_void_p, POINTER(lk_device_info_t))
_buffer_alloc = _fn("lk_buffer_alloc", _S, c_void_p, c_uint64, c_uint32, POINTER(c_void_p))
_buffer_free = _fn("lk_buffer_free", None, c_void_p, c_void_p)
_buffer_size = _fn("lk_buffer_size", c_uint64, c_void_p, c_void_p)
_buffer_upload = _fn("lk_buffer_upload", _S, c_void_p, c_void_p, c_uint64, c_void_p, c_uint64)
_buffer_download = _fn("lk_buffer_download", _S, c_void_p, c_void_p, c_uint64, c_void_p, c_uint64)
_buffer_map = _fn("lk_buffer_map", _S, c_void_p, c_void_p, c_uint64, c_uint64, POINTER(c_void_p))
_buffer_unmap = _fn("lk_buffer_unmap", _S, c_void_p, c_void_p)
_lora_forward = _fn("lk_lora_forward", _S, c_void_p, c_void_p, c_uint32, POINTER(lk_tensor_t),
                    POINTER(lk_tensor_t), POINTER(lk_tensor_t))
_merge = _fn("lk_merge", _S, c_void_p, c_void_p, c_uint32, POINTER(lk_tensor_t), c_float)
_unmerge = _fn("lk_unmerge", _S, c_void_p, c_void_p, c_uint32, POINTER(lk_tensor_t), c_float)


def _str(b):
    return None if b is None else b.decode("utf-8", "replace")


def _sized(cls):
    v = cls()
    v.struct_size = ctypes.sizeof(cls)
    return v


class Error(Exception):
    """A failed lorakit call: .status (lk_status) and .message (lk_last_error)."""

    def __init__(self, status, message):
        super().__init__("status %d (%s): %s" % (status, strerror(status), message))
        self.status = status
        self.message = message


def strerror(status):
    return _str(_strerror(status))


def version_string():
    return _str(_version_string())


def plugin_abi_version():
    v = _plugin_abi_version()
    return v >> 16, v & 0xFFFF


class _Handle:
    _free = None

    def __init__(self, ptr):
        self._p = ptr

    def close(self):
        if self._p:
            type(self)._free(self._p)
            self._p = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()


class Context(_Handle):
    _free = staticmethod(_context_free)

    def __init__(self, no_default_plugins=False, n_threads=0):
        opts = _sized(lk_context_opts_t)
        opts.no_default_plugins = 1 if no_default_plugins else 0
        opts.n_threads = n_threads
        p = c_void_p()
        st = _context_create(byref(opts), byref(p))
        super().__init__(p.value)
        self._check(st)

    def _check(self, st):
        if st != LK_OK:
            raise Error(st, _str(_last_error(self._p)) if self._p else "")

    def load_plugin(self, path):
        self._check(_plugin_load(self._p, os.fsencode(path)))

    def plugins(self):
        out = []
        for i in range(_plugin_count(self._p)):
            pi = _sized(lk_plugin_info_t)
            self._check(_plugin_info(self._p, i, byref(pi)))
            out.append(dict(index=i, status=pi.status, path=_str(pi.path), id=_str(pi.id),
                            name=_str(pi.name), version=_str(pi.version),
                            abi=(pi.abi_version >> 16, pi.abi_version & 0xFFFF),
                            n_components=pi.n_components, reason=_str(pi.reason)))
        return out

    def components(self):
        out = []
        for i in range(_component_count(self._p)):
            ci = _sized(lk_component_info_t)
            self._check(_component_info(self._p, i, byref(ci)))
            out.append(dict(kind=ci.kind, name=_str(ci.name),
                            description=_str(ci.description), plugin_index=ci.plugin_index))
        return out

    def create_adapter(self, rank, alpha, scaling=LK_SCALING_STANDARD, seed=0):
        cfg = _sized(lk_lora_config_t)
        cfg.rank, cfg.alpha, cfg.scaling, cfg.seed = rank, alpha, scaling, seed
        p = c_void_p()
        self._check(_adapter_create(self._p, byref(cfg), byref(p)))
        return Adapter(p.value, self)

    def open_backend(self, name=None, device=0):
        """Device `device` of the backend `name` (None: the best scored)."""
        p = c_void_p()
        self._check(_backend_open(self._p, name.encode() if name else None, device, byref(p)))
        return Backend(p.value, self)

    def open_registry(self, path, read_only=False):
        return Registry(self, path, read_only)


class Tensor:
    """An f32 tensor in memory ctypes owns (a c_float array), with its view."""

    def __init__(self, *shape):
        n = 1
        for d in shape:
            n *= d
        self.data = (c_float * n)()
        self.view = _sized(lk_tensor_t)
        st = _tensor_init(byref(self.view), LK_DTYPE_F32, len(shape), (c_int64 * len(shape))(*shape),
                          ctypes.cast(self.data, c_void_p))
        if st != LK_OK:
            raise Error(st, "lk_tensor_init: shape %r" % (shape,))


class Adapter(_Handle):
    _free = staticmethod(_adapter_free)

    def __init__(self, ptr, ctx):
        super().__init__(ptr)
        self._ctx = ctx  # freed after this adapter

    def add_target(self, name, in_features, out_features, rank=0, alpha=0.0):
        self._ctx._check(_adapter_add_target(self._p, name.encode(), in_features, out_features,
                                             rank, alpha))

    def find(self, name):
        return _adapter_find(self._p, name.encode())

    def target(self, index):
        ti = _sized(lk_target_info_t)
        self._ctx._check(_adapter_target_info(self._p, index, byref(ti)))
        return dict(name=_str(ti.name), rank=ti.rank, in_features=ti.in_features,
                    out_features=ti.out_features, alpha=ti.alpha, scale=ti.scale)

    def weights(self, index):
        """A (rank x in) and B (out x rank) as writable ctypes float arrays over
        the adapter's memory (valid until close), and their shapes."""
        a, b = _sized(lk_tensor_t), _sized(lk_tensor_t)
        self._ctx._check(_adapter_weights(self._p, index, byref(a), byref(b)))
        arr = lambda t: (c_float * (t.nbytes // 4)).from_address(t.data)
        return arr(a), arr(b), (a.shape[0], a.shape[1]), (b.shape[0], b.shape[1])


class Backend(_Handle):
    _free = staticmethod(_backend_close)

    def __init__(self, ptr, ctx):
        super().__init__(ptr)
        self._ctx = ctx

    def name(self):
        return _str(_backend_name(self._p))

    def device_count(self):
        """Devices of this backend's component (the open backend is one)."""
        return _backend_device_count(self._ctx._p, _backend_name(self._p))

    def forward(self, ad, target, x, w, y):
        """y = x W^T (w may be None) + s (x A^T) B^T."""
        self._ctx._check(_lora_forward(self._p, ad._p, target, byref(x.view),
                                       byref(w.view) if w is not None else None, byref(y.view)))

    def merge(self, ad, target, w, mult=1.0):
        self._ctx._check(_merge(self._p, ad._p, target, byref(w.view), mult))

    def unmerge(self, ad, target, w, mult=1.0):
        self._ctx._check(_unmerge(self._p, ad._p, target, byref(w.view), mult))

    def info(self):
        """The open device: type, limits, driver (lk_device_info_t)."""
        d = _sized(lk_device_info_t)
        self._ctx._check(_backend_info(self._p, byref(d)))
        return d

    def alloc(self, nbytes, flags=0):
        p = c_void_p()
        self._ctx._check(_buffer_alloc(self._p, nbytes, flags, byref(p)))
        return Buffer(p.value, self)


class Buffer:
    """A backend buffer (lk_buffer_*); close() frees it, as does its backend's."""

    def __init__(self, ptr, backend):
        self._p, self._be = ptr, backend

    def close(self):
        if self._p and self._be._p:
            _buffer_free(self._be._p, self._p)
        self._p = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def size(self):
        return _buffer_size(self._be._p, self._p)

    def upload(self, offset, arr):
        self._be._ctx._check(_buffer_upload(self._be._p, self._p, offset, ctypes.cast(arr, c_void_p),
                                            ctypes.sizeof(arr)))

    def download(self, offset, arr):
        self._be._ctx._check(_buffer_download(self._be._p, self._p, offset, ctypes.cast(arr, c_void_p),
                                              ctypes.sizeof(arr)))

    def read_mapped(self, offset, n):
        """n floats from byte offset, through map/unmap, copied out."""
        p = c_void_p()
        self._be._ctx._check(_buffer_map(self._be._p, self._p, offset, 4 * n, byref(p)))
        out = (c_float * n)()
        ctypes.memmove(out, p.value, 4 * n)
        self._be._ctx._check(_buffer_unmap(self._be._p, self._p))
        return out


# ---- registry (abi/lorakit_registry.h), when the library has one -----------------

HAS_REGISTRY = hasattr(_lib, "lk_registry_open")
LK_REL_NONE = 0
LK_REL_TRAINED_FROM = 1
LK_LINEAGE_BOTH = 3


class lk_registry_opts_t(Structure):
    _fields_ = [("struct_size", c_uint32), ("read_only", c_uint32),
                ("busy_timeout_ms", c_uint32), ("reserved0", c_uint32)]


class lk_registry_add_opts_t(Structure):
    _fields_ = [("struct_size", c_uint32), ("relation", c_int32), ("parents", POINTER(c_char_p)),
                ("n_parents", c_uint32), ("reuse_existing", c_uint32), ("params_json", c_char_p),
                ("base", c_char_p), ("operation", c_char_p), ("notes", c_char_p),
                ("loader", c_char_p), ("format", c_char_p), ("force", c_uint32),
                ("new_version", c_uint32),
                ("progress", ctypes.CFUNCTYPE(None, c_void_p, c_uint64, c_uint64)),
                ("progress_user", c_void_p)]


class lk_registry_lineage_opts_t(Structure):
    _fields_ = [("struct_size", c_uint32), ("direction", c_int32), ("max_depth", c_uint32),
                ("reserved0", c_uint32)]


assert ctypes.sizeof(lk_registry_add_opts_t) == 96

if HAS_REGISTRY:
    # char * results are freed with lk_free: declared as c_void_p to keep the pointer.
    _free = _fn("lk_free", None, c_void_p)
    _relation_name = _fn("lk_registry_relation_name", c_char_p, c_int32)
    _registry_open = _fn("lk_registry_open", _S, c_void_p, c_char_p, POINTER(lk_registry_opts_t),
                         POINTER(c_void_p))
    _registry_close = _fn("lk_registry_close", None, c_void_p)
    _registry_add_adapter = _fn("lk_registry_add_adapter", _S, c_void_p, c_char_p, c_void_p,
                                POINTER(lk_registry_add_opts_t), POINTER(c_void_p))
    _registry_resolve = _fn("lk_registry_resolve", _S, c_void_p, c_char_p, POINTER(c_void_p))
    _registry_get = _fn("lk_registry_get", _S, c_void_p, c_char_p, POINTER(c_void_p))
    _registry_show = _fn("lk_registry_show", _S, c_void_p, c_char_p, POINTER(c_void_p))
    _registry_lineage = _fn("lk_registry_lineage", _S, c_void_p, c_char_p,
                            POINTER(lk_registry_lineage_opts_t), POINTER(c_void_p))


def _take(p):
    """A string lorakit handed over (c_void_p), copied and freed with lk_free."""
    if not p.value:
        return None
    s = ctypes.string_at(p.value).decode("utf-8", "replace")
    _free(p)
    return s


def relation_name(rel):
    return _str(_relation_name(rel))


class Registry(_Handle):
    _free = staticmethod(lambda p: _registry_close(p))

    def __init__(self, ctx, path, read_only=False):
        opts = _sized(lk_registry_opts_t)
        opts.read_only = 1 if read_only else 0
        p = c_void_p()
        st = _registry_open(ctx._p, os.fsencode(path), byref(opts), byref(p))
        super().__init__(p.value)
        self._ctx = ctx
        ctx._check(st)

    def _doc(self, fn, *args):
        out = c_void_p()
        self._ctx._check(fn(self._p, *args, byref(out)))
        return _take(out)

    def add(self, name, ad, relation=LK_REL_NONE, parents=(), params_json=None, operation=None):
        """Add ad as the next version of name; returns its "NAME@N"."""
        opts = _sized(lk_registry_add_opts_t)
        opts.relation = relation
        arr = (c_char_p * max(len(parents), 1))(*[p.encode() for p in parents])
        if parents:
            opts.parents = arr
            opts.n_parents = len(parents)
        opts.params_json = params_json.encode() if params_json else None
        opts.operation = operation.encode() if operation else None
        return self._doc(_registry_add_adapter, name.encode(), ad._p, byref(opts))

    def resolve(self, ref):
        return self._doc(_registry_resolve, ref.encode())

    def get(self, ref):
        """The version as a new Adapter of the registry's context."""
        p = c_void_p()
        self._ctx._check(_registry_get(self._p, ref.encode(), byref(p)))
        return Adapter(p.value, self._ctx)

    def show_json(self, ref):
        return self._doc(_registry_show, ref.encode())

    def lineage_json(self, ref, direction=LK_LINEAGE_BOTH, max_depth=0):
        opts = _sized(lk_registry_lineage_opts_t)
        opts.direction, opts.max_depth = direction, max_depth
        return self._doc(_registry_lineage, ref.encode(), byref(opts))
