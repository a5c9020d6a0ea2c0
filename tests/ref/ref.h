/* ref.h - naive double-precision reference kernels for every core op of
 * abi/lorakit_ops.h, over host memory. They are the independent reference
 * the backends are tested against (tests/test_ops*.c), and the arithmetic of
 * the GPU-like test backend (tests/plugins/gpusim.c), which runs them on its
 * own thread. Written for clarity, not speed: loops over the op's
 * definition, every sum in double, results rounded once to the destination
 * dtype. Not part of lorakit.
 *
 * ref_view is lk_view_t with a host pointer instead of a buffer + offset.
 * Quantised operands (LK_DTYPE_QUANT) carry `parts` host pointers and are
 * dequantised through the quantiser vtable given in `quant` (the caller
 * finds it, e.g. with the host service find_quantiser).
 */
#ifndef LK_TEST_REF_H
#define LK_TEST_REF_H

#include "lorakit_plugin.h"

#include <stddef.h>
#include <stdint.h>

#define REF_MAX_PARTS 8

typedef struct ref_view {
  int32_t dtype;
  uint32_t ndim;
  int64_t shape[LK_MAX_DIMS];
  int64_t stride[LK_MAX_DIMS]; /* elements */
  void *data;                  /* element 0; NULL = operand absent */
  /* LK_DTYPE_QUANT only */
  const lk_quantiser_vt_t *quant;
  void *quant_self;            /* an instance of quant for the view's options */
  const void *parts[REF_MAX_PARTS]; /* parts[0] == data */
  uint32_t n_parts;
} ref_view;

/* Run core op `id` with its params (NULL = defaults) on host views; returns
 * LK_OK, or an error code with a message in err (errn bytes): an unknown
 * op, a shape that does not fit the op's rule, an id out of range. */
int32_t ref_op(int32_t id, const void *params, const ref_view *src, uint32_t n_src,
               const ref_view *dst, uint32_t n_dst, char *err, size_t errn);

/* 1 when ref_op implements core op `id` (asked of each area with no
 * operands: an area answers LK_ERR_UNSUPPORTED only for ids it does not
 * own), else 0. The GPU-like test backend's supports() rests on it. */
int ref_op_known(int32_t id);

/* Per-area entry points ref_op dispatches to (ref_linear.c, ref_nn.c): each
 * returns LK_ERR_UNSUPPORTED (and writes nothing) for ids it does not own. */
int32_t ref_op_linear(int32_t id, const void *params, const ref_view *src, uint32_t n_src,
                      const ref_view *dst, uint32_t n_dst, char *err, size_t errn);
int32_t ref_op_nn(int32_t id, const void *params, const ref_view *src, uint32_t n_src,
                  const ref_view *dst, uint32_t n_dst, char *err, size_t errn);

/* Element access shared by both: the value at multi-index idx as double;
 * store rounds to the view's dtype (f32/f16/bf16 round to nearest even,
 * i32 exact). */
double ref_get(const ref_view *v, const int64_t *idx);
void ref_set(const ref_view *v, const int64_t *idx, double x);
/* Rows view: elements of a view flattened over all but the last dim,
 * addressed (row, col); valid for any strides. */
double ref_get2(const ref_view *v, int64_t row, int64_t col);
void ref_set2(const ref_view *v, int64_t row, int64_t col, double x);
int64_t ref_rows(const ref_view *v); /* product of all dims but the last */
int64_t ref_numel(const ref_view *v);

#endif /* LK_TEST_REF_H */
