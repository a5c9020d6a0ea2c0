/* engine.h - the engine's private structures (DESIGN.md section 5), shared by
 * core/graph.c (tensors, ops, each op's shape rule), core/autodiff.c
 * (reverse mode), core/planner.c (liveness and placement) and
 * core/session.c (binding to a backend). The public face is the staged
 * lk_x_ API of abi/lorakit_staging.h. Internal names carry the eng_ prefix. */
#ifndef LK_ENGINE_H
#define LK_ENGINE_H

#ifndef LORAKIT_STAGING
#define LORAKIT_STAGING
#endif
#include "internal.h"
#include "lorakit_staging.h"

#define ENG_MAX_SRC 8
#define ENG_MAX_DST 4
#define ENG_MAX_PARTS 8

typedef struct eng_tensor {
  char *name;
  int32_t role, dtype;
  uint32_t ndim;
  int64_t shape[LK_MAX_DIMS];
  int64_t stride[LK_MAX_DIMS]; /* elements */
  int32_t base;                /* the storage: itself, or the tensor viewed */
  int64_t offset;              /* elements from the storage's element 0 */
  int32_t grad;                /* gradient tensor, -1 when none */
  uint8_t needs_grad;          /* depends on a PARAM */
  uint8_t grad_init;           /* (a gradient) written at least once so far */
  uint8_t keep;                /* readable after a run: never reused */
  uint8_t param_grad;          /* the gradient of a PARAM: resident */
  uint8_t zero_grad;           /* its storage has views: gradient zeroed, then accumulated */
  /* LK_DTYPE_QUANT (FROZEN, 2-D [rows, cols]): the format and its parts,
   * stored one after the other (the host's layout for set/get) */
  char *qformat;
  lk_quant_opts_t qopts;
  uint32_t has_qopts, n_parts;
  uint64_t part_bytes[ENG_MAX_PARTS];
  const char *part_name[ENG_MAX_PARTS]; /* the quantiser's static storage */
} eng_tensor;

typedef struct eng_op {
  int32_t id;
  uint32_t n_src, n_dst;
  int32_t src[ENG_MAX_SRC]; /* -1: absent (optional operand) */
  int32_t dst[ENG_MAX_DST];
  void *params;             /* the op's full parameter struct, defaults filled */
  uint32_t params_size;
  uint32_t phase;           /* 0 forward, 1 backward */
  int32_t fwd;              /* backward: the forward op whose rule emitted it, -1 none */
} eng_op;

struct lk_x_graph_t {
  lk_context_t *ctx;
  eng_tensor *t;
  uint32_t nt, cap_t;
  eng_op *ops;
  uint32_t nops, cap_ops;
  uint32_t n_forward; /* ops [0, n_forward) are the forward pass */
  int32_t loss;       /* -1 until lk_x_graph_backward */
  int32_t n_sessions; /* live sessions: the graph is frozen while > 0 */
  uint32_t *blocks;   /* lk_x_graph_mark_block: forward op index where each block after the first starts */
  uint32_t n_blocks, cap_blocks;
  int32_t ad_from;    /* autodiff: the forward op being differentiated (-1 none) */
};

/* The block (0-based) of forward op i: the marks at or before it. */
uint32_t eng_block_of(const lk_x_graph_t *g, uint32_t i);

/* graph.c */
const char *eng_op_name(int32_t id);
/* Bytes of tensor t's storage (contiguous, its shape), 0 for a view. */
uint64_t eng_storage_bytes(const lk_x_graph_t *g, int32_t t);
int eng_is_view(const lk_x_graph_t *g, int32_t t);
/* Append a tensor / view / op without the public API's argument checks
 * beyond shape rules; return the id (>= 0) or a negative status (with the
 * context's error set). */
int32_t eng_tensor_add(lk_x_graph_t *g, const char *name, int32_t role, int32_t dtype, uint32_t ndim,
                       const int64_t *shape);
int32_t eng_view_add(lk_x_graph_t *g, int32_t of, uint32_t ndim, const int64_t *shape,
                     const int64_t *stride, int64_t offset);
lk_status eng_op_add(lk_x_graph_t *g, int32_t id, const void *params, uint32_t params_size,
                     const int32_t *src, uint32_t n_src, const int32_t *dst, uint32_t n_dst,
                     uint32_t phase);
/* The size of op id's full parameter struct (0: it takes none). */
uint32_t eng_params_size(int32_t id);

/* autodiff.c */
lk_status eng_backward(lk_x_graph_t *g, int32_t loss);

/* planner.c: placement of n items (bytes each) given their live interval
 * [first, last] over the op order (persistent items live throughout),
 * first-fit into arenas of at most max_alloc bytes (0: no limit), every
 * offset a multiple of align. */
typedef struct eng_item {
  uint64_t bytes;
  int64_t first, last;
  int64_t first2, last2; /* a second live interval (recomputation), first2 < 0: none */
  int persistent;
  /* results */
  uint32_t arena;
  uint64_t offset;
} eng_item;

typedef struct eng_plan {
  uint32_t n_arenas;
  uint64_t *arena_bytes;
  uint64_t peak_bytes, naive_bytes;
} eng_plan;

lk_status eng_plan_items(lk_context_t *ctx, eng_item *items, uint32_t n, uint64_t align,
                         uint64_t max_alloc, eng_plan *out);
void eng_plan_free(eng_plan *p);

#endif /* LK_ENGINE_H */
