/* lorakit_ops.h - the op set: what a backend runs (DESIGN.md section 3, "Ops").
 *
 * An op is an id, operand views and a parameter struct behind a pointer:
 *
 *   - id: a core op (LK_OP_*, numbered here, append-only), or LK_OP_EXTENSION
 *     with `ext_id` naming a plugin's own op by a versioned string id
 *     ("com.example.fused_thing/1": an id never changes, a revision is a new id).
 *   - operands: lk_view_t, each a strided view into a backend buffer. Sources
 *     first (src[0..n_src)), destinations after (dst[0..n_dst)). An operand
 *     that is optional may be absent: its view has dtype LK_DTYPE_INVALID
 *     and buffer NULL (a zeroed view). supports(), which judges descriptions
 *     without buffers, tells absent operands by the dtype alone; submit
 *     refuses a present operand (a dtype) without a buffer.
 *   - params: the op's own struct, starting with `uint32_t struct_size`
 *     (caller-filled input: a reader uses a field only when struct_size covers
 *     it, a longer struct is accepted only when its unknown tail is zero).
 *     NULL params, or a struct_size that does not cover a field, means the
 *     field's default (stated beside it); given values are used as they are.
 *
 * Semantics are exact mathematics; a backend computes in f32 (or, where an
 * op's `compute` field asks for LK_COMPUTE_BF16 and the backend has it, with
 * bf16 products and f32 accumulation) and is tested against naive
 * double-precision references. Shapes below use [..] for "leading dimensions,
 * flattened": x[.., K] is any view whose last dimension is K, treated as
 * rows of K. Unless an op says otherwise:
 *   - float operands are f32, f16 or bf16 (f16/bf16 read as their exact value,
 *     written rounded to nearest even); integer operands (ids, labels,
 *     positions) are i32;
 *   - an op overwrites its destinations; ops with an `accumulate` field add
 *     into them instead when it is 1;
 *   - a destination never overlaps a source, except that a destination of an
 *     elementwise op (COPY, ADD, MUL, SCALE, SILU, SWIGLU and their backward
 *     ops) may be exactly the same view as one of its sources (in place).
 *
 * Strides are in elements (bytes for nothing here), one per dimension; a
 * contiguous row-major view has stride[ndim-1] = 1 and stride[i] =
 * stride[i+1] * shape[i+1]. Elementwise ops, COPY, FILL and the reductions
 * take any strides, and a source stride of 0 broadcasts. Other ops need each
 * row contiguous (stride[ndim-1] == 1) and rows evenly spaced; they say when
 * they need more. Quantised operands (dtype LK_DTYPE_QUANT) are 2-D [rows,
 * cols] in the format named by `qformat`: part 0 is the row-packed blocks at
 * buffer+offset (row r at offset + r * row_bytes(cols)), further parts
 * (NF4's absmax, ...) in `parts`; their strides are ignored.
 *
 * This file is part of the frozen plugin ABI 2: lk_view_t, lk_view_part_t and
 * lk_op_t travel in arrays and NEVER grow; parameter structs only grow at
 * the end. A backend says which ops it runs through supports(), which sees
 * the whole op (every operand's dtype and format); the core asks before
 * anything runs and refuses a batch or graph up front, listing every op the
 * backend lacks.
 */
#ifndef LORAKIT_OPS_H
#define LORAKIT_OPS_H

#include "lorakit_types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lk_buffer_t lk_buffer_t; /* defined by each backend */

/* One further part of a quantised operand. FROZEN. */
typedef struct lk_view_part_t {
  uint32_t struct_size;
  uint32_t reserved0; /* must be 0 */
  const char *name;   /* the quantiser's name for the part ("absmax", ...) */
  lk_buffer_t *buffer;
  uint64_t offset;    /* bytes */
  uint64_t nbytes;
} lk_view_part_t;

/* An operand: a strided view into a backend buffer. FROZEN. */
typedef struct lk_view_t {
  uint32_t struct_size;
  int32_t dtype;               /* LK_DTYPE_* */
  uint32_t ndim;               /* 1 .. LK_MAX_DIMS */
  uint32_t n_parts;            /* LK_DTYPE_QUANT: entries in parts; else 0 */
  int64_t shape[LK_MAX_DIMS];
  int64_t stride[LK_MAX_DIMS]; /* elements */
  lk_buffer_t *buffer;         /* NULL: operand absent */
  uint64_t offset;             /* bytes from the start of buffer to element 0 */
  const char *qformat;         /* LK_DTYPE_QUANT: the quantiser's name */
  const void *qopts;           /* LK_DTYPE_QUANT: its lk_quant_opts_t, NULL = defaults */
  const lk_view_part_t *parts; /* LK_DTYPE_QUANT: n_parts further parts */
} lk_view_t;

/* An op. FROZEN. The arrays and params are read during submit and copied:
 * the caller may free them as soon as submit returns. */
typedef struct lk_op_t {
  uint32_t struct_size;
  int32_t id;             /* LK_OP_* */
  const char *ext_id;     /* LK_OP_EXTENSION: the plugin op's id; else NULL */
  uint32_t n_src;
  uint32_t n_dst;
  const lk_view_t *src;
  const lk_view_t *dst;
  const void *params;     /* the op's parameter struct, or NULL (defaults) */
} lk_op_t;

/* Compute precision asked of matmul-like ops. */
enum {
  LK_COMPUTE_F32 = 0, /* f32 products and sums: the default and the reference */
  LK_COMPUTE_BF16 = 1 /* operands rounded to bf16, products summed in f32
                       * (PyTorch autocast); a backend without it runs f32 */
};

/* ---- the core ops (append-only; values never change) ----------------------
 *
 * Notation: s, alpha are floats from params; "(+)=" means "=" or, with
 * accumulate = 1, "+=". N = number of rows after flattening. */
enum {
  LK_OP_INVALID = 0,
  /* A plugin's own op, named by lk_op_t.ext_id. */
  LK_OP_EXTENSION = 1,

  /* COPY      src {x}  dst {y}              y = x, same shape, any strides.
   *           Casts among f32/f16/bf16 (round to nearest even); i32 -> i32.
   *           params: none. Backward: dx (+)= COPY(dy). */
  LK_OP_COPY = 2,
  /* FILL      dst {y}                        y = value. params: lk_op_fill_t. */
  LK_OP_FILL = 3,
  /* ADD       src {a, b}  dst {y}            y = alpha a + beta b (a source stride
   *           of 0 broadcasts, e.g. a bias). params: lk_op_add_t.
   *           Backward: da = alpha dy, db = beta dy (summed over broadcasts). */
  LK_OP_ADD = 4,
  /* MUL       src {a, b}  dst {y}            y = a * b elementwise.
   *           Backward: da = dy b, db = dy a. params: none. */
  LK_OP_MUL = 5,
  /* SCALE     src {x}  dst {y}               y (+)= alpha x. params: lk_op_scale_t. */
  LK_OP_SCALE = 6,
  /* SUM       src {x}  dst {y [1] f32}       y (+)= sum of every element of x.
   * SUMSQ     src {x}  dst {y [1] f32}       y (+)= sum of x^2 (a gradient's
   *           squared norm; with accumulate, the squared norm of many).
   *           params: lk_op_reduce_t. Summation order is the backend's; the
   *           result is within f32 rounding of the exact sum of |terms|. */
  LK_OP_SUM = 7,
  LK_OP_SUMSQ = 8,

  /* MATMUL    src {x [.., K], W}  dst {y [.., N]}
   *           trans_w = 0: W is [N, K] and y (+)= alpha x W^T  (a linear layer,
   *                        W as PyTorch stores it);
   *           trans_w = 1: W is [K, N] and y (+)= alpha x W    (its input
   *                        gradient dx = dy W, with W [out, in] as stored).
   *           W may be f32, f16, bf16 or quantised (LK_DTYPE_QUANT, any
   *           format whose quantiser is loaded): it is dequantised inside the
   *           op, never materialised whole. params: lk_op_matmul_t. */
  LK_OP_MATMUL = 9,
  /* LORA_FORWARD   src {x [.., in], A [r, in], B [out, r]}  dst {y [.., out]}
   *           y += s (d(x) A^T) B^T, where d(x) = x, or with dropout p > 0:
   *           d(x)[i][j] = keep(i, j) ? x[i][j] / (1 - p) : 0 with
   *           keep(i, j) = lk_dropout_keep(seed, i * in + j, p) (i the
   *           flattened row). y is always accumulated into (the base matmul
   *           writes it first). params: lk_op_lora_t. */
  LK_OP_LORA_FORWARD = 10,
  /* LORA_BACKWARD  src {x, A, B, dy [.., out]}  dst {dA [r, in], dB [out, r], dx [.., in]}
   *           with h = d(x) A^T and g = s dy B:
   *           dB (+)= s dy^T h;  dA (+)= g^T d(x);  dx += d'(g A), where d'
   *           applies the same mask and 1/(1-p) as d. Any destination may be
   *           absent. dx is always accumulated into (a MATMUL writes dy W
   *           first); accumulate applies to dA and dB. params: lk_op_lora_t
   *           (the same values as the forward). */
  LK_OP_LORA_BACKWARD = 11,
  /* MERGE     src {A [r, in], B [out, r]}  dst {W [out, in]}    W += s B A
   * UNMERGE   same                                              W -= s B A
   *           W f32, f16 or bf16, in place: the sum is formed in f32 and
   *           rounded once. params: lk_op_merge_t. */
  LK_OP_MERGE = 12,
  LK_OP_UNMERGE = 13,

  /* EMBEDDING src {table [V, D], ids [..] i32}  dst {y [.., D]}
   *           y[t] = table[ids[t]]; an id outside [0, V) fails the batch.
   * EMBEDDING_BACKWARD  src {ids [..], dy [.., D]}  dst {dtable [V, D]}
   *           dtable (+)= scatter-add: dtable[ids[t]] += dy[t] for every t
   *           (rows no id names are 0, or unchanged with accumulate); an id
   *           outside [0, V) fails the batch.
   *           params (both): lk_op_accumulate_t. */
  LK_OP_EMBEDDING = 14,
  LK_OP_EMBEDDING_BACKWARD = 15,

  /* RMSNORM   src {x [.., D], w [D] (optional)}  dst {y [.., D], rstd [..] f32 (optional)}
   *           rstd = 1 / sqrt(mean(x^2) + eps) per row (rstd holds one value
   *           per row of x); y = x rstd w (w absent: 1),
   *           as Hugging Face's LlamaRMSNorm. rstd is kept for the backward.
   * RMSNORM_BACKWARD  src {x, w (optional), rstd, dy}  dst {dx, dw (optional)}
   *           with u = x rstd:  dw (+)= sum over rows of dy u;
   *           dx (+)= rstd (dy w - u mean(dy w u)). dw needs w (refused without).
   *           params (both): lk_op_rmsnorm_t. */
  LK_OP_RMSNORM = 16,
  LK_OP_RMSNORM_BACKWARD = 17,

  /* ROPE      src {x [B, T, H, Dh], pos [B, T] i32 (stride 0 over B allowed)}  dst {y}
   *           Hugging Face's rotate-half layout: for i < n/2 (n = n_rot, 0 = Dh),
   *           a = pos * f_i with f_i = theta^(-2i/n) adjusted by the scaling:
   *             y[i]       = x[i] cos a - x[i + n/2] sin a
   *             y[i + n/2] = x[i + n/2] cos a + x[i] sin a
   *           and y[j] = x[j] for j >= n. inverse = 1 rotates by -a: that is
   *           the backward (dx = ROPE(dy, inverse)). params: lk_op_rope_t.
   *           n_rot must be even and at most Dh. */
  LK_OP_ROPE = 18,

  /* ATTENTION src {q [B, Tq, Hq, Dh], k [B, Tk, Hkv, Dh], v [B, Tk, Hkv, Dh],
   *                mask [B, Tq, Tk] f32 additive (optional; a stride of 0
   *                over B, or a first dimension of 1, broadcasts it)}
   *           dst {o [B, Tq, Hq, Dh], lse [B, Hq, Tq] f32 (optional)}
   *           Hq is a multiple of Hkv; query head h reads kv head h / (Hq / Hkv)
   *           (grouped-query attention). For each (b, h, i):
   *             z_j = scale q_i . k_j + mask[i][j]   for the allowed j,
   *             allowed: every j, or with causal, j <= i + Tk - Tq;
   *             lse_i = log sum_j exp z_j;  o_i = sum_j exp(z_j - lse_i) v_j.
   *           A row with no allowed j (or all -inf) gives o_i = 0, lse_i = -inf.
   *           Fused: memory beyond o and lse is O(Tq + Tk) per head, never
   *           Tq x Tk. params: lk_op_attention_t.
   * ATTENTION_BACKWARD  src {q, k, v, o, lse, do, mask (optional)}  dst {dq, dk, dv}
   *           the gradients of the above given do = dL/do, using lse (no
   *           recomputation of the softmax normaliser):
   *             p_ij = exp(z_ij - lse_i) (0 for j not allowed, and for
   *             every j of a row with lse_i = -inf), D_i = do_i . o_i,
   *             dv_j (+)= sum_i p_ij do_i,  ds_ij = p_ij (do_i . v_j - D_i),
   *             dq_i (+)= scale sum_j ds_ij k_j,  dk_j (+)= scale sum_i ds_ij q_i
   *           (summed over the query heads that share a kv head). */
  LK_OP_ATTENTION = 19,
  LK_OP_ATTENTION_BACKWARD = 20,

  /* SWIGLU    src {gate, up}  dst {y}        y = silu(gate) up, silu(z) = z / (1 + e^-z).
   * SWIGLU_BACKWARD  src {gate, up, dy}  dst {dgate, dup}
   *           dup (+)= dy silu(gate);  dgate (+)= dy up silu'(gate),
   *           silu'(z) = sig(z) (1 + z (1 - sig(z))).
   * SILU      src {x}  dst {y}               y = silu(x).
   * SILU_BACKWARD    src {x, dy}  dst {dx}   dx (+)= dy silu'(x).
   *           params (all four): lk_op_accumulate_t (forward ops ignore it). */
  LK_OP_SWIGLU = 21,
  LK_OP_SWIGLU_BACKWARD = 22,
  LK_OP_SILU = 23,
  LK_OP_SILU_BACKWARD = 24,

  /* CROSS_ENTROPY  src {logits [.., V], labels [..] i32}  dst {loss [1] f32, count [1] f32 (optional)}
   *           Softmax cross-entropy as PyTorch's F.cross_entropy with
   *           ignore_index and reduction "mean": for each counted row t
   *           (labels[t] != ignore_index), l_t = logsumexp(logits[t]) -
   *           logits[t][labels[t]]; loss = sum l_t / den, den = denominator
   *           when > 0, else the number of counted rows (0 rows: loss = 0);
   *           count = the number of counted rows.
   *           A label outside [0, V) that is not ignore_index fails the batch.
   * CROSS_ENTROPY_BACKWARD  src {logits, labels, dloss [1] f32 (optional: 1)}  dst {dlogits}
   *           dlogits[t] (+)= dloss (softmax(logits[t]) - onehot(labels[t])) / den
   *           for counted rows, 0 for ignored rows.
   *           params (both): lk_op_cross_entropy_t. */
  LK_OP_CROSS_ENTROPY = 25,
  LK_OP_CROSS_ENTROPY_BACKWARD = 26,

  /* ADAMW     src {grad, sumsq [1] f32 (optional)}  dst {param, m, v}   all f32, same shape
   *           PyTorch's torch.optim.AdamW (amsgrad off), step t >= 1:
   *             g = grad * grad_scale * c, c = 1, or with max_grad_norm > 0 and
   *               sumsq given: c = min(1, max_grad_norm / (sqrt(sumsq) + 1e-6))
   *               (torch.nn.utils.clip_grad_norm_; sumsq is the squared norm
   *               of all the step's gradients, from SUMSQ with accumulate);
   *             param *= 1 - lr weight_decay;
   *             m = beta1 m + (1 - beta1) g;   v = beta2 v + (1 - beta2) g^2;
   *             param -= (lr / (1 - beta1^t)) m / (sqrt(v) / sqrt(1 - beta2^t) + eps).
   *           params: lk_op_adamw_t (step and lr per call). */
  LK_OP_ADAMW = 27,

  LK_OP_CORE_COUNT = 28 /* ids below this are the core ops this header knows */
};

/* ---- parameter structs (caller-filled; grow only at the end) --------------- */

typedef struct lk_op_fill_t {
  uint32_t struct_size;
  float value; /* default 0 */
} lk_op_fill_t;
#define LK_MIN_SIZE_OP_FILL LK_MIN_SIZE(lk_op_fill_t, value)

typedef struct lk_op_add_t {
  uint32_t struct_size;
  float alpha; /* default 1 */
  float beta;  /* default 1 */
} lk_op_add_t;
#define LK_MIN_SIZE_OP_ADD LK_MIN_SIZE(lk_op_add_t, beta)

typedef struct lk_op_scale_t {
  uint32_t struct_size;
  float alpha;         /* default 1 */
  uint32_t accumulate; /* default 0 */
} lk_op_scale_t;
#define LK_MIN_SIZE_OP_SCALE LK_MIN_SIZE(lk_op_scale_t, accumulate)

typedef struct lk_op_accumulate_t {
  uint32_t struct_size;
  uint32_t accumulate; /* default 0 */
} lk_op_accumulate_t;
#define LK_MIN_SIZE_OP_ACCUMULATE LK_MIN_SIZE(lk_op_accumulate_t, accumulate)

typedef lk_op_accumulate_t lk_op_reduce_t;

typedef struct lk_op_matmul_t {
  uint32_t struct_size;
  uint32_t trans_w;    /* default 0: y = x W^T */
  uint32_t accumulate; /* default 0 */
  float alpha;         /* default 1 */
  int32_t compute;     /* LK_COMPUTE_*, default f32 */
} lk_op_matmul_t;
#define LK_MIN_SIZE_OP_MATMUL LK_MIN_SIZE(lk_op_matmul_t, compute)

typedef struct lk_op_lora_t {
  uint32_t struct_size;
  float scale;         /* s; default 1 */
  uint32_t accumulate; /* backward: into dA and dB; default 0 */
  float dropout;       /* p in [0, 1); default 0 */
  uint64_t seed;       /* dropout mask seed */
  int32_t compute;     /* LK_COMPUTE_*, default f32 */
  uint32_t reserved0;  /* must be 0 */
  /* ---- added in 2.1 (synthetic: tests/abi) ---- */
  float future_lora_param; /* default 0 */
  uint32_t reserved1;
} lk_op_lora_t;
#define LK_MIN_SIZE_OP_LORA LK_MIN_SIZE(lk_op_lora_t, reserved0)

typedef struct lk_op_merge_t {
  uint32_t struct_size;
  float scale; /* s; default 1 */
} lk_op_merge_t;
#define LK_MIN_SIZE_OP_MERGE LK_MIN_SIZE(lk_op_merge_t, scale)

typedef struct lk_op_rmsnorm_t {
  uint32_t struct_size;
  float eps;           /* default 1e-6 */
  uint32_t accumulate; /* backward: into dx and dw; default 0 */
} lk_op_rmsnorm_t;
#define LK_MIN_SIZE_OP_RMSNORM LK_MIN_SIZE(lk_op_rmsnorm_t, accumulate)

enum {
  LK_ROPE_SCALING_NONE = 0,
  LK_ROPE_SCALING_LINEAR = 1, /* f_i / factor */
  LK_ROPE_SCALING_LLAMA3 = 2  /* Llama 3.1: with w_i = 2 pi / f_i, lo = original_max_pos /
                               * low_freq_factor, hi = original_max_pos / high_freq_factor:
                               * w_i < hi: f_i;  w_i > lo: f_i / factor;  else
                               * (1 - m) f_i / factor + m f_i with
                               * m = (original_max_pos / w_i - low_freq_factor) /
                               *     (high_freq_factor - low_freq_factor) */
};

typedef struct lk_op_rope_t {
  uint32_t struct_size;
  float theta;               /* default 10000 */
  uint32_t n_rot;            /* rotated dimensions (even); default 0 = Dh */
  int32_t scaling;           /* LK_ROPE_SCALING_*, default none */
  float factor;              /* linear and llama3; no default: > 0 required */
  float low_freq_factor;     /* llama3; no default: 0 < low < high required */
  float high_freq_factor;    /* llama3 */
  uint32_t original_max_pos; /* llama3; no default: > 0 required */
  uint32_t inverse;          /* 1: rotate by -a (the backward) */
} lk_op_rope_t;
#define LK_MIN_SIZE_OP_ROPE LK_MIN_SIZE(lk_op_rope_t, inverse)

typedef struct lk_op_attention_t {
  uint32_t struct_size;
  float scale;         /* default 0 = 1 / sqrt(Dh) */
  uint32_t causal;     /* default 0 */
  uint32_t accumulate; /* backward: into dq, dk, dv; default 0 */
} lk_op_attention_t;
#define LK_MIN_SIZE_OP_ATTENTION LK_MIN_SIZE(lk_op_attention_t, accumulate)

typedef struct lk_op_cross_entropy_t {
  uint32_t struct_size;
  int32_t ignore_index; /* default -100 (PyTorch's) */
  float denominator;    /* default 0 = the number of counted rows */
  uint32_t accumulate;  /* backward: into dlogits; default 0 */
} lk_op_cross_entropy_t;
#define LK_MIN_SIZE_OP_CROSS_ENTROPY LK_MIN_SIZE(lk_op_cross_entropy_t, accumulate)

typedef struct lk_op_adamw_t {
  uint32_t struct_size;
  float lr;             /* default 0.001 (PyTorch's defaults throughout) */
  float beta1;          /* 0.9 */
  float beta2;          /* 0.999 */
  float eps;            /* 1e-8 */
  float weight_decay;   /* 0.01 */
  float grad_scale;     /* 1 */
  float max_grad_norm;  /* 0 = no clipping */
  int64_t step;         /* t, 1-based: the bias corrections use it; default 1 */
} lk_op_adamw_t;
#define LK_MIN_SIZE_OP_ADAMW LK_MIN_SIZE(lk_op_adamw_t, step)

/* ---- helpers every backend must agree on (header-only, not ABI) ------------ */

/* splitmix64 (Steele, Lea, Flood 2014): the dropout mask's hash. */
static inline uint64_t lk_splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/* 1 when element `index` survives dropout with probability p under seed:
 * the top 24 bits of splitmix64(seed + index), as a fraction of 2^24, are
 * at least p. */
static inline int lk_dropout_keep(uint64_t seed, uint64_t index, float p) {
  uint32_t u = (uint32_t)(lk_splitmix64(seed + index) >> 40);
  return (double)u >= (double)p * 16777216.0;
}

/* Fill v as a contiguous row-major view of dtype and shape in buffer at offset. */
static inline void lk_view_init(lk_view_t *v, int32_t dtype, uint32_t ndim, const int64_t *shape,
                                lk_buffer_t *buffer, uint64_t offset) {
  uint32_t i;
  int64_t st = 1;
  v->struct_size = (uint32_t)sizeof *v;
  v->dtype = dtype;
  v->ndim = ndim;
  v->n_parts = 0;
  for (i = 0; i < LK_MAX_DIMS; i++) {
    v->shape[i] = 0;
    v->stride[i] = 0;
  }
  for (i = ndim; i-- > 0;) {
    v->shape[i] = shape[i];
    v->stride[i] = st;
    st *= shape[i];
  }
  v->buffer = buffer;
  v->offset = offset;
  v->qformat = 0;
  v->qopts = 0;
  v->parts = 0;
}

#ifdef __cplusplus
}
#endif
#endif /* LORAKIT_OPS_H */
