/* nn_priv.h - declarations shared by the files of the transformer ops
 * (nn.c, nn_rows.c, nn_attention.c); not for the rest of the backend. */
#ifndef LK_CPU_NN_PRIV_H
#define LK_CPU_NN_PRIV_H

#include "nn.h"

#define NN_EW_CHUNK 1024 /* elements per pass of the elementwise ops */

typedef struct nn_rows {
  int64_t rows, cols, rs; /* rs: elements from one row to the next */
} nn_rows_t;

typedef struct nn_rope {
  double theta;
  int64_t n;   /* rotated dimensions */
  int inverse;
  int32_t scaling;
  double factor, lo_f, hi_f, orig;
} nn_rope_t;

/* A running op: its views and host pointers (sources then destinations,
 * NULL when absent), the pool and the scratch. */
typedef struct nn_job {
  const lk_op_t *op;
  cpu_pool_t *pool;
  uint32_t nt;
  void *scratch;
  const lk_view_t *v[10];
  void *p[10];
  /* per-op state */
  nn_rows_t r[10];
  int acc;
  float eps;
  nn_rope_t rope;
  const double *freq;
  int64_t *bucket, *order; /* embedding backward: ids grouped by row */
  int32_t ignore;
  double den, gscale;
  char *per;        /* per-thread scratch area, per_bytes each */
  size_t per_bytes;
  char *shared_end; /* per-thread partial results (CE, RMSNORM dw) */
} nn_job_t;

const char *cpu_nn_operand_name(int32_t id, uint32_t k);
const lk_view_t *cpu_nn_operand(const lk_op_t *op, uint32_t k);
int32_t cpu_nn_params(const lk_op_t *op, size_t known, lk_error_t *err);
int64_t cpu_nn_numel(const lk_view_t *v);
/* Element offset of flat (row-major) index `flat` of v. */
int64_t cpu_nn_offset(const lk_view_t *v, int64_t flat);
int32_t cpu_nn_rope_params(const lk_op_t *op, int64_t dh, nn_rope_t *rp, lk_error_t *err);

int32_t cpu_nn_run_embedding(nn_job_t *j, lk_error_t *err);
int32_t cpu_nn_run_rmsnorm(nn_job_t *j, lk_error_t *err);
int32_t cpu_nn_run_rope(nn_job_t *j, lk_error_t *err);
int32_t cpu_nn_run_xent(nn_job_t *j, lk_error_t *err);
int32_t cpu_nn_run_elementwise(nn_job_t *j, lk_error_t *err);

/* A params field when the struct covers it, else the default. */
#define NN_FIELD(params, T, f, def)                                                                \
  ((params) && LK_HAS_FIELD((const T *)(params), T, f) ? ((const T *)(params))->f : (def))

#endif /* LK_CPU_NN_PRIV_H */
