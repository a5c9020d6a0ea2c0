/* lorakit_types.h - plain types shared by hosts and plugins.
 *
 * Everything here crosses the boundary between liblorakit, its hosts and its
 * plugins, so every rule of DESIGN.md section 3 applies:
 *   - enums are append-only and carried as int32_t; values are never renumbered;
 *   - every struct starts with `uint32_t struct_size` and only grows at the end;
 *   - no bitfields, unions, varargs or by-value struct returns.
 *
 * Struct sizes (DESIGN.md section 3, rule 2). Each struct type has a frozen
 * minimum size: its size in the ABI version that introduced it, written
 * LK_MIN_SIZE(type, last field of that version) beside the type. A struct of
 * at least that size is accepted; a reader uses a field only when the
 * struct_size it was given covers it (LK_HAS_FIELD), its default otherwise.
 * Who fills a struct decides what happens to a tail the reader does not know:
 *   - filled by a plugin (vtables, factories, descriptors): ignored;
 *   - filled by a caller as input (options, op parameters): accepted only
 *     when every unknown byte is zero;
 *   - an output struct (info queries): written only up to the caller's
 *     struct_size, which is left as the caller set it.
 * Structs that travel in arrays (lk_tensor_t, lk_view_t, lk_op_t, ...) are
 * FROZEN: they never grow; a later need gets a new type.
 */
#ifndef LORAKIT_TYPES_H
#define LORAKIT_TYPES_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define LK_API __declspec(dllexport)
#elif defined(__GNUC__)
#define LK_API __attribute__((visibility("default")))
#else
#define LK_API
#endif

/* ---- status codes ---------------------------------------------------------
 * 0 is success, negatives are errors. Closed, append-only list: a code once
 * published keeps its value forever. lk_strerror() names each. */
typedef int32_t lk_status;

enum {
  LK_OK = 0,
  LK_ERR_INVALID_ARG = -1,  /* a NULL, a zero size, a bad enum value */
  LK_ERR_NOMEM = -2,        /* an allocation failed */
  LK_ERR_IO = -3,           /* open/read/write/mmap failed */
  LK_ERR_FORMAT = -4,       /* a file is not what it claims to be */
  LK_ERR_UNSUPPORTED = -5,  /* valid, but this build/plugin cannot do it */
  LK_ERR_SHAPE = -6,        /* tensor shapes do not fit together */
  LK_ERR_DTYPE = -7,        /* a tensor has a dtype the operation refuses */
  LK_ERR_NOT_FOUND = -8,    /* no such plugin, component, target or file */
  LK_ERR_ABI = -9,          /* ABI version or struct size mismatch */
  LK_ERR_PLUGIN = -10,      /* a plugin is broken (missing symbol, failed init) */
  LK_ERR_STATE = -11,       /* object used in the wrong state */
  LK_ERR_BACKEND = -12,     /* the backend failed while running an op */
  LK_ERR_EXISTS = -13,      /* a name that must be unique is taken */
  LK_ERR_MISMATCH = -14,    /* e.g. an adapter for another base model */
  LK_ERR_CORRUPT = -15,     /* stored data fails its checksum */
  LK_ERR_BUSY = -16,        /* a resource is locked by someone else */
  LK_ERR_INTERNAL = -17,    /* a bug in lorakit: please report it */
  LK_ERR_TIMEOUT = -18,     /* a wait ended before the work did */
  LK_ERR_SECURITY = -19     /* refused for safety (a plugin file others may write) */
};

/* ---- dtypes ---------------------------------------------------------------
 * Plain element types. LK_DTYPE_QUANT marks opaque quantised blocks whose
 * layout belongs to the quantiser named in the tensor's `qformat`. */
enum {
  LK_DTYPE_INVALID = 0,
  LK_DTYPE_F32 = 1,
  LK_DTYPE_F16 = 2,
  LK_DTYPE_BF16 = 3,
  LK_DTYPE_F64 = 4,
  LK_DTYPE_I8 = 5,
  LK_DTYPE_I16 = 6,
  LK_DTYPE_I32 = 7,
  LK_DTYPE_I64 = 8,
  LK_DTYPE_U8 = 9,
  LK_DTYPE_BOOL = 10,
  LK_DTYPE_QUANT = 11,
  LK_DTYPE_U16 = 12,
  LK_DTYPE_U32 = 13,
  LK_DTYPE_U64 = 14,
  LK_DTYPE_F8_E4M3 = 15,
  LK_DTYPE_F8_E5M2 = 16
};

/* ---- plugin component kinds ---------------------------------------------- */
enum { LK_KIND_QUANTISER = 1, LK_KIND_BACKEND = 2, LK_KIND_LOADER = 3 };

/* ---- adapter scaling rules ----------------------------------------------- */
enum {
  LK_SCALING_STANDARD = 0, /* s = alpha / r        (LoRA)   */
  LK_SCALING_RSLORA = 1    /* s = alpha / sqrt(r)  (rsLoRA) */
};

/* ---- device types -------------------------------------------------------- */
enum { LK_DEVICE_CPU = 1, LK_DEVICE_GPU = 2, LK_DEVICE_OTHER = 3 };

/* Bytes of `type` up to and including `field`. */
#define LK_SIZE_THROUGH(type, field) (offsetof(type, field) + sizeof(((type *)0)->field))
/* The frozen minimum size of `type`: through its last field in the version
 * that introduced it. */
#define LK_MIN_SIZE(type, last_field) LK_SIZE_THROUGH(type, last_field)
/* True when the struct at p, as its filler compiled it, contains `field`. */
#define LK_HAS_FIELD(p, type, field) ((p)->struct_size >= LK_SIZE_THROUGH(type, field))

#define LK_MAX_DIMS 8
#define LK_ERROR_MAX 512
#define LK_NAME_MAX 128

/* A tensor view: caller-owned, never freed by whoever receives it.
 * Row-major; shape[ndim-1] is the innermost (contiguous) dimension. For
 * LK_DTYPE_QUANT the rows are packed blocks of the quantiser `qformat`
 * (borrowed string, lives as long as the view) and `nbytes` is exact.
 * lk_tensor_t is FROZEN: it is passed in arrays (lk_write_tensors, a
 * loader's write), whose stride a grown struct would change, so it never
 * gains a field; a later need gets a new type. */
typedef struct lk_tensor_t {
  uint32_t struct_size;
  int32_t dtype;
  uint32_t ndim;
  uint32_t reserved0; /* must be 0 */
  int64_t shape[LK_MAX_DIMS];
  void *data;
  uint64_t nbytes;
  const char *qformat;
} lk_tensor_t;

/* Error detail a plugin fills for the host: a status code and a message a
 * user can act on (file, tensor, offset, expected vs found). The host owns it
 * and passes it to every plugin call that can fail; never NULL there. */
typedef struct lk_error_t {
  uint32_t struct_size;
  int32_t code;
  char message[LK_ERROR_MAX];
} lk_error_t;
#define LK_MIN_SIZE_ERROR LK_MIN_SIZE(lk_error_t, message)

/* What a backend reports of one of its devices (an output struct: written
 * up to the caller's struct_size). */
typedef struct lk_device_info_t {
  uint32_t struct_size;
  int32_t type;            /* LK_DEVICE_* */
  char name[LK_NAME_MAX];
  uint64_t memory_total;   /* bytes the device can hold; 0 = unknown */
  uint64_t memory_free;    /* bytes free now; 0 = unknown */
  uint32_t compute_units;  /* threads for a CPU, compute units for a GPU */
  uint32_t unified_memory; /* 1: host-visible buffers are device-local (CPU, iGPU) */
  uint64_t max_alloc;      /* largest single buffer in bytes; 0 = no limit known */
  uint64_t offset_align;   /* a view's offset must be a multiple (power of two) */
  uint32_t can_wrap;       /* 1: buffer_wrap can wrap host memory */
  uint32_t reserved0;
  char driver[LK_NAME_MAX]; /* the code path in use ("avx512", a GPU driver) */
  /* ---- added in 2.1 (synthetic: tests/abi) ---- */
  uint64_t future_device_field;
} lk_device_info_t;
#define LK_MIN_SIZE_DEVICE_INFO LK_MIN_SIZE(lk_device_info_t, driver)

#ifdef __cplusplus
}
#endif
#endif /* LORAKIT_TYPES_H */
