/* ref_nn.c - TEMPORARY placeholder until branch nn-ops lands the real
 * references of the transformer ops (EMBEDDING, RMSNORM, ROPE, ATTENTION,
 * SWIGLU, SILU, CROSS_ENTROPY and their backward ops). It owns no op: every
 * id gets LK_ERR_UNSUPPORTED, so ref_op (and the gpusim test backend, whose
 * supports() asks ref_op_known) report those ops as missing rather than
 * computing anything. nn-ops replaces this file wholesale. */
#include "ref.h"

int32_t ref_op_nn(int32_t id, const void *params, const ref_view *src, uint32_t n_src,
                  const ref_view *dst, uint32_t n_dst, char *err, size_t errn) {
  (void)id; (void)params; (void)src; (void)n_src; (void)dst; (void)n_dst; (void)err; (void)errn;
  return LK_ERR_UNSUPPORTED;
}
