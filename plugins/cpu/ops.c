/* ops.c - the CPU backend's kernels: MATMUL, LORA_FORWARD, LORA_BACKWARD,
 * MERGE/UNMERGE on validated plans (validate.c). The arithmetic is f32 through
 * the backend's own single-threaded GEMM (gemm.h: packed micro-kernels of the
 * run-time ISA path; bf16 compute when be->compute_bf16) partitioned across the backend's
 * own thread pool, one large block of the output per thread (rows or columns,
 * by the measured rule in run_matmul). LORA_FORWARD runs the fused AVX2 kernel
 * of simd.c when the CPU has it and there are rows enough, else two sgemm
 * calls per thread. f16 and bf16 weights are converted to f32 in row panels
 * inside the op (the host's convert), in per-thread scratch. */
#include "cpu.h"
#include "nn.h"

#include "gemm.h"
#include <string.h>

/* The op's GEMM: fp32, or bf16 compute (inputs rounded to bf16 on packing,
 * f32 accumulation and output) when the backend instance asks for it. */
#define GEMM(bf16, ...) ((bf16) ? cpu_sgemm_bf16(__VA_ARGS__) : cpu_sgemm(__VA_ARGS__))

#define PANEL_BYTES ((size_t)4 << 20) /* f32 panel of converted weights, per thread */
#define MIN_TASK_FLOPS 1.5e6          /* below this a thread is not worth waking */
/* A quantised MATMUL with at most this many rows of x runs the quantiser's
 * fused kernels (W dequantised a chunk at a time in cache, x·Wᵀ or x·W
 * directly); above it W is dequantised in panels for the packed GEMM, whose
 * register blocking then wins. Measured with bench/bench_quant.c (4096 x
 * 4096, q4_0 and q4_k, 2-core Zen 5, AVX-512): x·Wᵀ fused is 1.2-1.6x the
 * panels at 16 rows, even at 32, behind at 64; x·W fused stays ahead to 32
 * rows (its panels cost a second pass over dx-sized blocks). */
#ifndef QFUSED_MAX_M_NT /* (overridable to measure it) */
#define QFUSED_MAX_M_NT 16
#endif
#ifndef QFUSED_MAX_M_NN
#define QFUSED_MAX_M_NN 32
#endif

/* Threads for a job of `flops`, at least MIN_TASK_FLOPS each. */
static uint32_t cpu_threads_for(const cpu_backend_t *be, double flops) {
  double want = flops / MIN_TASK_FLOPS;
  if (want < 1) return 1;
  return want < be->n_threads ? (uint32_t)want : be->n_threads;
}

static size_t round_up(size_t n) { return (n + CPU_ALIGN - 1) / CPU_ALIGN * CPU_ALIGN; }

/* Rows of a converted panel `width` floats wide, at most cap: as many as fit
 * PANEL_BYTES (at least one). */
static int64_t panel_rows(int64_t width, int64_t cap) {
  int64_t p = (int64_t)(PANEL_BYTES / sizeof(float)) / width;
  if (p < 1) p = 1;
  if (p > 16) p &= ~(int64_t)15;
  return p < cap ? p : cap;
}

/* Bytes of a panel for widths up to width and row caps up to cap: bounds
 * panel_rows(w, c) * w for every w <= width, c <= cap. */
static size_t panel_bytes(int64_t width, int64_t cap) {
  int64_t pf = (int64_t)(PANEL_BYTES / sizeof(float));
  int64_t n = pf > width ? pf : width;
  if (n > cap * width) n = cap * width;
  return round_up((size_t)n * sizeof(float));
}

static void to_f32(const void *src, int32_t dtype, float *dst, int64_t n) {
  cpu_refs.host->convert(src, dtype, dst, LK_DTYPE_F32, (uint64_t)n);
}

static void from_f32(const float *src, void *dst, int32_t dtype, int64_t n) {
  cpu_refs.host->convert(src, LK_DTYPE_F32, dst, dtype, (uint64_t)n);
}

/* Rows [r0, r1) of a weight matrix as f32: converted from f16/bf16, or
 * dequantised by the matrix's quantiser (the rows of a validated plan are
 * in range, so it cannot fail). */
/* The quantisers' ISA path id for the backend's own (LK_CPU_ISA_* are
 * cpu_isa_t's numbers; AMX runs the AVX-512 BF16 kernels). */
static int32_t cpu_qisa(void) { return (int32_t)cpu_isa_kernel(cpu_isa()); }

static void panel_rows_f32(const cpu_mat_t *m, int64_t r0, int64_t r1, float *dst) {
  if (m->dtype == LK_DTYPE_QUANT && m->qext) {
    m->qext->dequant_rows(m->qself, m->parts, m->cols, r0, r1 - r0, dst, m->cols, cpu_qisa());
    return;
  }
  if (m->dtype == LK_DTYPE_QUANT) {
    lk_error_t e = {sizeof e, 0, {0}};
    (void)m->qvt->dequantize(m->qself, m->parts, r0, r1 - r0, m->cols, dst, &e);
    return;
  }
  size_t es = m->dtype == LK_DTYPE_F32 ? 4 : 2;
  to_f32((const char *)m->data + (size_t)r0 * (size_t)m->cols * es, m->dtype, dst, (r1 - r0) * m->cols);
}

static char *elem(const cpu_mat_t *m, int64_t row, int64_t col) {
  size_t es = m->dtype == LK_DTYPE_F32 ? 4 : 2;
  return (char *)m->data + ((size_t)row * (size_t)m->cols + (size_t)col) * es;
}

/* ---- MATMUL ------------------------------------------------------------------ */

typedef struct mm_job {
  const cpu_plan_t *p;
  int64_t M, N, K;
  int split_rows; /* 1: threads split M, 0: threads split N */
  int bf16;       /* be->compute_bf16 */
  float *scratch;
  size_t scratch_per_thread; /* floats */
} mm_job;

/* Per-thread column block width of a half-precision MATMUL (always split N). */
static int64_t mm_half_width(int64_t N, uint32_t nt) {
  int64_t b, e;
  cpu_split(N, 0, nt, 16, &b, &e);
  return e - b;
}

static uint32_t mm_threads(const cpu_backend_t *be, int64_t M, int64_t N, int64_t K) {
  return cpu_threads_for(be, 2.0 * (double)M * (double)N * (double)K);
}

/* The fused path: a quantised W whose quantiser has kernels, f32 compute,
 * few rows of x. */
static int mm_fused(const cpu_backend_t *be, const cpu_plan_t *p) {
  const cpu_mat_t *W = &p->m[1];
  return W->dtype == LK_DTYPE_QUANT && W->qext && !be->compute_bf16 && !p->bf16 &&
         p->m[0].rows <= (p->mode ? QFUSED_MAX_M_NN : QFUSED_MAX_M_NT);
}

/* Threads of a fused product: the dequantisation counts too (a GEMV's few
 * flops still read all of W). */
static uint32_t mm_fused_threads(const cpu_backend_t *be, int64_t M, int64_t N, int64_t K) {
  return cpu_threads_for(be, (2.0 * (double)M + 8.0) * (double)N * (double)K);
}

/* Floats of a thread's y block in the fused product: M rows of the widest
 * column range cpu_split gives it. */
static size_t mm_fused_block(const cpu_plan_t *p, int64_t M, int64_t N, uint32_t nt) {
  int64_t align = p->mode ? (int64_t)p->m[1].qvt->block_elems : 1;
  int64_t chunk = (N + nt - 1) / nt;
  chunk = (chunk + align - 1) / align * align;
  return round_up((size_t)(M * chunk) * sizeof(float)) / sizeof(float);
}

static size_t scratch_matmul(const cpu_backend_t *be, const cpu_plan_t *p) {
  const cpu_mat_t *x = &p->m[0], *W = &p->m[1];
  int32_t mode = p->mode;
  if (W->dtype == LK_DTYPE_F32) return 0;
  int64_t M = x->rows, N = mode ? W->cols : W->rows, K = mode ? W->rows : W->cols;
  if (mm_fused(be, p)) { /* a block of y per thread when alpha or accumulate need one */
    uint32_t nf = mm_fused_threads(be, M, N, K);
    return (p->s != 1.0f || p->acc) ? nf * mm_fused_block(p, M, N, nf) * sizeof(float) : 0;
  }
  /* quantised x·W with a large x: one shared panel of W rows (run_matmul) */
  if (W->dtype == LK_DTYPE_QUANT && mode && W->qext) return panel_bytes(N, K);
  uint32_t nt = mm_threads(be, M, N, K);
  int64_t hw = mm_half_width(N, nt);
  if (W->dtype == LK_DTYPE_QUANT && mode) return nt * panel_bytes(N, K);
  return nt * (mode ? panel_bytes(hw, K) : panel_bytes(K, hw));
}

static void mm_f32_task(void *arg, uint32_t t, uint32_t nt) {
  const mm_job *j = arg;
  const cpu_plan_t *p = j->p;
  const float *x = p->m[0].data, *W = p->m[1].data;
  float *y = p->m[2].data;
  int mode = p->mode;
  float beta = p->acc ? 1.0f : 0.0f;
  int64_t b, e;
  int tw = mode ? CPU_NOTRANS : CPU_TRANS;
  int ldw = (int)(mode ? j->N : j->K);
  if (j->split_rows) {
    cpu_split(j->M, t, nt, 8, &b, &e);
    if (b >= e) return;
    GEMM(j->bf16, CPU_NOTRANS, tw, (int)(e - b), (int)j->N, (int)j->K, p->s,
                x + b * j->K, (int)j->K, W, ldw, beta, y + b * j->N, (int)j->N);
  } else {
    cpu_split(j->N, t, nt, 16, &b, &e);
    if (b >= e) return;
    const float *Wb = mode ? W + b : W + b * j->K;
    GEMM(j->bf16, CPU_NOTRANS, tw, (int)j->M, (int)(e - b), (int)j->K, p->s, x,
                (int)j->K, Wb, ldw, beta, y + b, (int)j->N);
  }
}

/* f16/bf16 W: each thread owns a block of y's columns and converts the part
 * of W it needs, one panel at a time, into its scratch. */
static void mm_half_task(void *arg, uint32_t t, uint32_t nt) {
  const mm_job *j = arg;
  const cpu_plan_t *p = j->p;
  const cpu_mat_t *Wm = &p->m[1];
  const float *x = p->m[0].data;
  float *y = p->m[2].data;
  float *panel = j->scratch + (size_t)t * j->scratch_per_thread;
  int64_t b, e;
  cpu_split(j->N, t, nt, 16, &b, &e);
  if (b >= e) return;
  int64_t w = e - b;
  if (p->mode == 0) { /* y[:, b:e] (+)= x W[b:e, :]^T, panels of W rows */
    int64_t P = panel_rows(j->K, w);
    for (int64_t r0 = b; r0 < e; r0 += P) {
      int64_t r1 = r0 + P < e ? r0 + P : e;
      panel_rows_f32(Wm, r0, r1, panel);
      GEMM(j->bf16, CPU_NOTRANS, CPU_TRANS, (int)j->M, (int)(r1 - r0), (int)j->K,
                  p->s, x, (int)j->K, panel, (int)j->K, p->acc ? 1.0f : 0.0f, y + r0, (int)j->N);
    }
  } else if (Wm->dtype == LK_DTYPE_QUANT) {
    /* Quantised rows dequantise whole: panels of full W rows over K, of
     * which this thread multiplies its columns b:e. */
    int64_t P = panel_rows(j->N, j->K);
    for (int64_t k0 = 0; k0 < j->K; k0 += P) {
      int64_t k1 = k0 + P < j->K ? k0 + P : j->K;
      panel_rows_f32(Wm, k0, k1, panel);
      float beta = (k0 == 0 && !p->acc) ? 0.0f : 1.0f;
      GEMM(j->bf16, CPU_NOTRANS, CPU_NOTRANS, (int)j->M, (int)w, (int)(k1 - k0),
                  p->s, x + k0, (int)j->K, panel + b, (int)j->N, beta, y + b, (int)j->N);
    }
  } else { /* y[:, b:e] (+)= x[:, k0:k1] W[k0:k1, b:e], panels over K */
    int64_t P = panel_rows(w, j->K);
    for (int64_t k0 = 0; k0 < j->K; k0 += P) {
      int64_t k1 = k0 + P < j->K ? k0 + P : j->K;
      for (int64_t k = k0; k < k1; k++) to_f32(elem(Wm, k, b), Wm->dtype, panel + (k - k0) * w, w);
      float beta = (k0 == 0 && !p->acc) ? 0.0f : 1.0f;
      GEMM(j->bf16, CPU_NOTRANS, CPU_NOTRANS, (int)j->M, (int)w, (int)(k1 - k0),
                  p->s, x + k0, (int)j->K, panel, (int)w, beta, y + b, (int)j->N);
    }
  }
}

/* Fused quantised product, few rows: mode 0 splits W's rows (y's columns),
 * mode 1 block-aligned ranges of W's columns (y's columns too). With alpha
 * 1 and no accumulation the kernel writes y itself; otherwise it writes a
 * block of the thread's scratch that is then scaled into y. */
static void mm_fused_task(void *arg, uint32_t t, uint32_t nt) {
  const mm_job *j = arg;
  const cpu_plan_t *p = j->p;
  const cpu_mat_t *Wm = &p->m[1];
  const float *x = p->m[0].data;
  float *y = p->m[2].data;
  const int32_t isa = cpu_qisa();
  const int direct = p->s == 1.0f && !p->acc;
  int64_t b, e;
  cpu_split(j->N, t, nt, p->mode ? (int64_t)Wm->qvt->block_elems : 1, &b, &e);
  if (b >= e) return;
  const int64_t w = e - b;
  float *out = direct ? y + b : j->scratch + (size_t)t * j->scratch_per_thread;
  const int64_t ldo = direct ? j->N : w;
  if (p->mode == 0) {
    Wm->qext->matmul_nt(Wm->qself, Wm->parts, Wm->cols, b, w, x, j->K, j->M, out, ldo, isa);
  } else {
    for (int64_t i = 0; i < j->M; i++) memset(out + i * ldo, 0, (size_t)w * sizeof(float));
    Wm->qext->matmul_nn(Wm->qself, Wm->parts, Wm->cols, 0, Wm->rows, b, w, x, j->K, j->M, out, ldo, isa);
  }
  if (direct) return;
  for (int64_t i = 0; i < j->M; i++) {
    float *yi = y + i * j->N + b;
    const float *oi = out + i * ldo;
    if (p->acc)
      for (int64_t c = 0; c < w; c++) yi[c] += p->s * oi[c];
    else
      for (int64_t c = 0; c < w; c++) yi[c] = p->s * oi[c];
  }
}

/* Quantised x·W with many rows of x, in panels of W rows shared by all
 * threads: phase 0 dequantises the panel (threads split its rows), phase 1
 * multiplies it (threads split y's columns). Each row of W is dequantised
 * once, not once per thread. */
typedef struct mm_panel_job {
  const mm_job *j;
  float *panel;
  int64_t k0, k1;
  int phase;
} mm_panel_job;

static void mm_panel_task(void *arg, uint32_t t, uint32_t nt) {
  const mm_panel_job *pj = arg;
  const mm_job *j = pj->j;
  const cpu_plan_t *p = j->p;
  int64_t b, e;
  if (pj->phase == 0) {
    cpu_split(pj->k1 - pj->k0, t, nt, 1, &b, &e);
    if (b < e) panel_rows_f32(&p->m[1], pj->k0 + b, pj->k0 + e, pj->panel + b * j->N);
    return;
  }
  cpu_split(j->N, t, nt, 16, &b, &e);
  if (b >= e) return;
  float beta = (pj->k0 == 0 && !p->acc) ? 0.0f : 1.0f;
  GEMM(j->bf16, CPU_NOTRANS, CPU_NOTRANS, (int)j->M, (int)(e - b), (int)(pj->k1 - pj->k0), p->s,
       (const float *)p->m[0].data + pj->k0, (int)j->K, pj->panel + b, (int)j->N, beta,
       (float *)p->m[2].data + b, (int)j->N);
}

static void run_matmul(cpu_backend_t *be, const cpu_plan_t *p) {
  mm_job j;
  memset(&j, 0, sizeof j);
  j.p = p;
  j.M = p->m[0].rows;
  j.K = p->m[0].cols;
  j.N = p->m[2].cols;
  j.bf16 = be->compute_bf16 || p->bf16;
  if (mm_fused(be, p)) {
    uint32_t nf = mm_fused_threads(be, j.M, j.N, j.K);
    j.scratch = be->scratch;
    j.scratch_per_thread = mm_fused_block(p, j.M, j.N, nf);
    cpu_pool_run(be->pool, nf, mm_fused_task, &j);
    return;
  }
  uint32_t nt = mm_threads(be, j.M, j.N, j.K);
  if (p->m[1].dtype == LK_DTYPE_QUANT && p->mode && p->m[1].qext) {
    mm_panel_job pj = {&j, be->scratch, 0, 0, 0};
    int64_t P = panel_rows(j.N, j.K);
    for (pj.k0 = 0; pj.k0 < j.K; pj.k0 = pj.k1) {
      pj.k1 = pj.k0 + P < j.K ? pj.k0 + P : j.K;
      pj.phase = 0;
      cpu_pool_run(be->pool, nt, mm_panel_task, &pj);
      pj.phase = 1;
      cpu_pool_run(be->pool, nt, mm_panel_task, &pj);
    }
    return;
  }
  if (p->m[1].dtype == LK_DTYPE_F32) {
    /* Each thread packs the whole of the operand it does not split (gemm.h),
     * so split the larger side: rows when y is taller than wide, else columns. */
    j.split_rows = j.M >= 64 * (int64_t)nt && j.M > j.N;
    cpu_pool_run(be->pool, nt, mm_f32_task, &j);
  } else {
    j.scratch = be->scratch;
    j.scratch_per_thread = nt ? p->scratch / nt / sizeof(float) : 0;
    cpu_pool_run(be->pool, nt, mm_half_task, &j);
  }
}

/* ---- LORA_FORWARD / LORA_BACKWARD ---------------------------------------------- */

typedef struct lora_job {
  const cpu_plan_t *p;
  int64_t M, in, out, r;
  float *h, *g; /* M x r each (OpenBLAS paths) */
  float *At, *Bt, *hblk; /* packed A, B and per-thread h blocks (AVX2 path) */
  size_t hblk_floats;
  int phase;
  int bf16; /* be->compute_bf16 */
} lora_job;

static void lora_dims(lora_job *j, const cpu_plan_t *p) {
  memset(j, 0, sizeof *j);
  j->p = p;
  j->M = p->m[0].rows;
  j->in = p->m[0].cols;
  j->r = p->m[1].rows;
  j->out = p->m[2].rows;
}

static uint32_t lf_threads(const cpu_backend_t *be, const lora_job *j) {
  return cpu_threads_for(be, 2.0 * (double)j->M * (double)j->r * (double)(j->in + j->out));
}

/* The fused AVX2 kernel when there are rows enough to split by rows. */
static int lf_use_avx2(const cpu_backend_t *be, const lora_job *j, uint32_t nt) {
  return be->simd && !be->compute_bf16 && !j->p->bf16 && j->M >= 8 * (int64_t)nt;
}

/* Scratch layout of the AVX2 forward: At, Bt, then one h block per thread. */
static size_t lf_at_bytes(const lora_job *j) {
  return round_up((size_t)((j->r + 15) / 16) * (size_t)j->in * 16 * sizeof(float));
}
static size_t lf_bt_bytes(const lora_job *j) {
  return round_up((size_t)cpu_lora_b_tiles(j->out) * (size_t)j->r * 24 * sizeof(float));
}
static size_t lf_hblk_bytes(const lora_job *j) {
  return round_up((size_t)cpu_lora_hblk_floats(j->r) * sizeof(float));
}

static size_t scratch_lora_forward(const cpu_backend_t *be, const cpu_plan_t *p) {
  lora_job j;
  lora_dims(&j, p);
  uint32_t nt = lf_threads(be, &j);
  if (lf_use_avx2(be, &j, nt)) return lf_at_bytes(&j) + lf_bt_bytes(&j) + nt * lf_hblk_bytes(&j);
  return round_up((size_t)j.M * (size_t)j.r * sizeof(float));
}

/* AVX2 path, phase 0: pack A and B (split over in and over tiles of out);
 * phase 1: rows split in multiples of twelve, each thread running the fused
 * kernel over its rows (odd threads start with a half block, so the two
 * halves of each block, memory-light and memory-heavy, do not line up
 * across threads). */
static void lf_avx2_task(void *arg, uint32_t t, uint32_t nt) {
  const lora_job *j = arg;
  const cpu_plan_t *p = j->p;
  int64_t b, e;
  if (j->phase == 0) {
    cpu_split(j->in, t, nt, 16, &b, &e);
    if (b < e) cpu_lora_pack_a(p->m[1].data, j->r, j->in, b, e, j->At);
    cpu_split(cpu_lora_b_tiles(j->out), t, nt, 1, &b, &e);
    if (b < e) cpu_lora_pack_b(p->m[2].data, j->out, j->r, b, e, j->Bt);
    return;
  }
  cpu_split(j->M, t, nt, 12, &b, &e);
  if (b >= e) return;
  const float *x = p->m[0].data;
  float *y = p->m[3].data;
  cpu_lora_rows_avx2(x + b * j->in, e - b, j->in, j->At, j->Bt, j->r, j->out, p->s,
                     j->hblk + (size_t)t * j->hblk_floats, y + b * j->out, (int)(t & 1));
}

/* OpenBLAS path, rows split: each thread forms h for its rows (M_t x r,
 * small) and immediately updates its rows of y. */
static void lf_rows_task(void *arg, uint32_t t, uint32_t nt) {
  const lora_job *j = arg;
  const cpu_plan_t *p = j->p;
  const float *x = p->m[0].data, *A = p->m[1].data, *B = p->m[2].data;
  float *y = p->m[3].data;
  int64_t b, e;
  cpu_split(j->M, t, nt, 4, &b, &e);
  if (b >= e) return;
  int rows = (int)(e - b), in = (int)j->in, out = (int)j->out, r = (int)j->r;
  float *h = j->h + b * j->r;
  GEMM(j->bf16, CPU_NOTRANS, CPU_TRANS, rows, r, in, 1.0f, x + b * j->in, in, A,
              in, 0.0f, h, r);
  GEMM(j->bf16, CPU_NOTRANS, CPU_TRANS, rows, out, r, p->s, h, r, B, r, 1.0f,
              y + b * j->out, out);
}

/* OpenBLAS path, few rows: phase 0 splits the rank (h[:, j0:j1] = x
 * A[j0:j1]^T), phase 1 splits y's columns. */
static void lf_cols_task(void *arg, uint32_t t, uint32_t nt) {
  const lora_job *j = arg;
  const cpu_plan_t *p = j->p;
  const float *x = p->m[0].data, *A = p->m[1].data, *B = p->m[2].data;
  float *y = p->m[3].data;
  int64_t b, e;
  int M = (int)j->M, in = (int)j->in, out = (int)j->out, r = (int)j->r;
  if (j->phase == 0) {
    cpu_split(j->r, t, nt, 1, &b, &e);
    if (b >= e) return;
    GEMM(j->bf16, CPU_NOTRANS, CPU_TRANS, M, (int)(e - b), in, 1.0f, x, in,
                A + b * j->in, in, 0.0f, j->h + b, r);
  } else {
    cpu_split(j->out, t, nt, 16, &b, &e);
    if (b >= e) return;
    GEMM(j->bf16, CPU_NOTRANS, CPU_TRANS, M, (int)(e - b), r, p->s, j->h, r,
                B + b * j->r, r, 1.0f, y + b, out);
  }
}

static void run_lora_forward(cpu_backend_t *be, const cpu_plan_t *p) {
  lora_job j;
  lora_dims(&j, p);
  j.bf16 = be->compute_bf16 || p->bf16;
  uint32_t nt = lf_threads(be, &j);
  if (lf_use_avx2(be, &j, nt)) {
    j.At = be->scratch;
    j.Bt = (float *)((char *)j.At + lf_at_bytes(&j));
    j.hblk = (float *)((char *)j.Bt + lf_bt_bytes(&j));
    j.hblk_floats = lf_hblk_bytes(&j) / sizeof(float);
    cpu_pool_run(be->pool, nt, lf_avx2_task, &j);
    j.phase = 1;
    cpu_pool_run(be->pool, nt, lf_avx2_task, &j);
    return;
  }
  j.h = be->scratch;
  if (j.M >= 16 * (int64_t)nt) {
    cpu_pool_run(be->pool, nt, lf_rows_task, &j);
  } else {
    cpu_pool_run(be->pool, nt, lf_cols_task, &j);
    j.phase = 1;
    cpu_pool_run(be->pool, nt, lf_cols_task, &j);
  }
}

/* Phase 0, rows split: h = x A^T (for dB), g = s dy B (for dA, dx), dx += g A.
 * Phase 1: dB (+)= s dy^T h split over dB's rows, dA (+)= g^T x over dA's columns. */
static void lb_task(void *arg, uint32_t t, uint32_t nt) {
  const lora_job *j = arg;
  const cpu_plan_t *p = j->p;
  const float *x = p->m[0].data, *A = p->m[1].data, *B = p->m[2].data, *dy = p->m[3].data;
  float *dA = p->m[4].data, *dB = p->m[5].data, *dx = p->m[6].data;
  int M = (int)j->M, in = (int)j->in, out = (int)j->out, r = (int)j->r;
  int64_t b, e;
  if (j->phase == 0) {
    cpu_split(j->M, t, nt, 4, &b, &e);
    if (b >= e) return;
    int rows = (int)(e - b);
    if (dB)
      GEMM(j->bf16, CPU_NOTRANS, CPU_TRANS, rows, r, in, 1.0f, x + b * j->in, in,
                  A, in, 0.0f, j->h + b * j->r, r);
    if (dA || dx)
      GEMM(j->bf16, CPU_NOTRANS, CPU_NOTRANS, rows, r, out, p->s, dy + b * j->out,
                  out, B, r, 0.0f, j->g + b * j->r, r);
    if (dx)
      GEMM(j->bf16, CPU_NOTRANS, CPU_NOTRANS, rows, in, r, 1.0f, j->g + b * j->r, r,
                  A, in, 1.0f, dx + b * j->in, in);
    return;
  }
  float beta = p->acc ? 1.0f : 0.0f;
  if (dB) {
    cpu_split(j->out, t, nt, 16, &b, &e);
    if (b < e)
      GEMM(j->bf16, CPU_TRANS, CPU_NOTRANS, (int)(e - b), r, M, p->s, dy + b, out,
                  j->h, r, beta, dB + b * j->r, r);
  }
  if (dA) {
    cpu_split(j->in, t, nt, 16, &b, &e);
    if (b < e)
      GEMM(j->bf16, CPU_TRANS, CPU_NOTRANS, r, (int)(e - b), M, 1.0f, j->g, r, x + b,
                  in, beta, dA + b, in);
  }
}

static size_t lb_hg_bytes(const lora_job *j) {
  return round_up((size_t)j->M * (size_t)j->r * sizeof(float));
}

static size_t scratch_lora_backward(const cpu_backend_t *be, const cpu_plan_t *p) {
  lora_job j;
  (void)be;
  lora_dims(&j, p);
  return 2 * lb_hg_bytes(&j);
}

static void run_lora_backward(cpu_backend_t *be, const cpu_plan_t *p) {
  lora_job j;
  lora_dims(&j, p);
  j.bf16 = be->compute_bf16 || p->bf16;
  j.h = be->scratch;
  j.g = (float *)((char *)be->scratch + lb_hg_bytes(&j));
  double flops = 2.0 * (double)j.M * (double)j.r * (double)(j.in + j.out);
  uint32_t nt = cpu_threads_for(be, flops);
  if (!p->m[4].data && !p->m[5].data && !p->m[6].data) return;
  cpu_pool_run(be->pool, j.M >= 4 * (int64_t)nt ? nt : 1, lb_task, &j);
  j.phase = 1;
  if (p->m[4].data || p->m[5].data) cpu_pool_run(be->pool, nt, lb_task, &j);
}

/* ---- MERGE / UNMERGE ----------------------------------------------------------- */

static size_t scratch_merge(const cpu_backend_t *be, const cpu_plan_t *p) {
  const cpu_mat_t *W = &p->m[2];
  if (W->dtype == LK_DTYPE_F32) return 0;
  return be->n_threads * panel_bytes(W->cols, W->rows);
}

typedef struct merge_job {
  const cpu_plan_t *p;
  float *scratch;
  size_t scratch_per_thread; /* floats */
} merge_job;

/* W[b:e] += s B[b:e] A over this thread's rows of W; half W in f32 panels,
 * rounded once on the way back. */
static void merge_task(void *arg, uint32_t t, uint32_t nt) {
  const merge_job *j = arg;
  const cpu_plan_t *p = j->p;
  const float *A = p->m[0].data, *B = p->m[1].data;
  const cpu_mat_t *Wm = &p->m[2];
  int64_t r = p->m[0].rows, in = Wm->cols, b, e;
  cpu_split(Wm->rows, t, nt, 8, &b, &e);
  if (b >= e) return;
  if (Wm->dtype == LK_DTYPE_F32) {
    cpu_sgemm(CPU_NOTRANS, CPU_NOTRANS, (int)(e - b), (int)in, (int)r, p->s,
                B + b * r, (int)r, A, (int)in, 1.0f, (float *)Wm->data + b * in, (int)in);
    return;
  }
  float *panel = j->scratch + (size_t)t * j->scratch_per_thread;
  int64_t P = panel_rows(in, Wm->rows);
  for (int64_t r0 = b; r0 < e; r0 += P) {
    int64_t r1 = r0 + P < e ? r0 + P : e;
    to_f32(elem(Wm, r0, 0), Wm->dtype, panel, (r1 - r0) * in);
    cpu_sgemm(CPU_NOTRANS, CPU_NOTRANS, (int)(r1 - r0), (int)in, (int)r, p->s,
                B + r0 * r, (int)r, A, (int)in, 1.0f, panel, (int)in);
    from_f32(panel, elem(Wm, r0, 0), Wm->dtype, (r1 - r0) * in);
  }
}

static void run_merge(cpu_backend_t *be, const cpu_plan_t *p) {
  merge_job j;
  j.p = p;
  j.scratch = be->scratch;
  j.scratch_per_thread = p->scratch / be->n_threads / sizeof(float);
  const cpu_mat_t *W = &p->m[2];
  uint32_t nt = cpu_threads_for(be, 2.0 * (double)W->rows * (double)W->cols * (double)p->m[0].rows +
                                        (W->dtype == LK_DTYPE_F32 ? 0.0 : 8.0 * (double)W->rows * (double)W->cols));
  cpu_pool_run(be->pool, nt, merge_task, &j);
}

static size_t scratch_base(const cpu_backend_t *be, const cpu_plan_t *p) {
  switch (p->code) {
  case LK_OP_MATMUL: return scratch_matmul(be, p);
  case LK_OP_LORA_FORWARD: return scratch_lora_forward(be, p);
  case LK_OP_LORA_BACKWARD: return scratch_lora_backward(be, p);
  case LK_OP_MERGE:
  case LK_OP_UNMERGE: return scratch_merge(be, p);
  default: return 0;
  }
}

/* LoRA with input dropout runs the plain kernels on a masked copy of x
 * (and, backward, a temporary dx masked on the way out), kept after the
 * kernels' own scratch. */
static size_t dropout_bytes(const cpu_plan_t *p) {
  if ((p->code != LK_OP_LORA_FORWARD && p->code != LK_OP_LORA_BACKWARD) || p->dropout <= 0.0f) return 0;
  size_t one = round_up((size_t)p->m[0].rows * (size_t)p->m[0].cols * sizeof(float));
  return p->code == LK_OP_LORA_BACKWARD && p->m[6].data ? 2 * one : one;
}

size_t cpu_scratch(const cpu_backend_t *be, const cpu_plan_t *p) {
  if (cpu_nn_owns(p->code)) return p->scratch;
  return scratch_base(be, p) + dropout_bytes(p);
}

typedef struct drop_job {
  const float *x;
  float *xd, *t, *dx;
  int64_t rows, cols;
  float p, inv;
  uint64_t seed;
  int phase; /* 0: xd = d(x) (and t = 0), 1: dx += d'(t) */
} drop_job;

static void drop_task(void *arg, uint32_t t, uint32_t nt) {
  const drop_job *j = arg;
  int64_t b, e;
  cpu_split(j->rows, t, nt, 1, &b, &e);
  for (int64_t i = b; i < e; i++)
    for (int64_t c = 0; c < j->cols; c++) {
      int64_t k = i * j->cols + c;
      int keep = lk_dropout_keep(j->seed, (uint64_t)k, j->p);
      if (j->phase == 0) {
        j->xd[k] = keep ? j->x[k] * j->inv : 0.0f;
        if (j->t) j->t[k] = 0.0f;
      } else if (keep) {
        j->dx[k] += j->t[k] * j->inv;
      }
    }
}

static void run_lora_dropout(cpu_backend_t *be, const cpu_plan_t *p) {
  cpu_plan_t q = *p;
  size_t base = scratch_base(be, p), one = round_up((size_t)p->m[0].rows * (size_t)p->m[0].cols * 4);
  drop_job j = {p->m[0].data, (float *)((char *)be->scratch + base), NULL, p->m[6].data,
                p->m[0].rows, p->m[0].cols, p->dropout, 1.0f / (1.0f - p->dropout), p->seed, 0};
  int back = p->code == LK_OP_LORA_BACKWARD && p->m[6].data;
  if (back) j.t = (float *)((char *)be->scratch + base + one);
  uint32_t nt = cpu_threads_for(be, 20.0 * (double)j.rows * (double)j.cols);
  cpu_pool_run(be->pool, nt, drop_task, &j);
  q.m[0].data = j.xd;
  if (back) q.m[6].data = j.t;
  if (q.code == LK_OP_LORA_FORWARD) run_lora_forward(be, &q);
  else run_lora_backward(be, &q);
  if (back) {
    j.phase = 1;
    cpu_pool_run(be->pool, nt, drop_task, &j);
  }
}

int32_t cpu_run(cpu_backend_t *be, const cpu_plan_t *p, lk_error_t *err) {
  if (cpu_nn_owns(p->code))
    return cpu_nn_run(be->pool, be->n_threads, p->op, p->src_ptr, p->dst_ptr, be->scratch, err);
  if (dropout_bytes(p)) {
    run_lora_dropout(be, p);
    return LK_OK;
  }
  switch (p->code) {
  case LK_OP_MATMUL: run_matmul(be, p); break;
  case LK_OP_LORA_FORWARD: run_lora_forward(be, p); break;
  case LK_OP_LORA_BACKWARD: run_lora_backward(be, p); break;
  case LK_OP_MERGE:
  case LK_OP_UNMERGE: run_merge(be, p); break;
  default:
    if (cpu_elem_owns(p->code)) cpu_elem_run(be, p);
    break;
  }
  return LK_OK;
}
