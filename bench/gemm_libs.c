/* gemm_libs.c - measures candidate GEMMs on lorakit's benchmark shapes, each
 * checked against a naive reference, all on every core: OpenBLAS, BLIS,
 * oneDNN (dnnl_sgemm, and its bf16 matmul primitive), and lorakit's own
 * packed micro-kernels (plugins/cpu/gemm.h, linked in directly; the columns
 * of C split over one thread per core, as the backend's pool does), fp32 and
 * bf16 (vdpbf16ps). Each library is dlopen'ed RTLD_LOCAL so their
 * cblas_sgemm symbols do not collide. Prints `bench:` lines with the ratio to
 * OpenBLAS (fp32) and to oneDNN's bf16 matmul (bf16): the measurement behind
 * the CPU backend's choice of GEMM. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "gemm.h"

#include <dlfcn.h>
#include <pthread.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef void (*cblas_sgemm_fn)(int, int, int, int, int, int, float, const float *, int,
                               const float *, int, float, float *, int);
typedef int (*dnnl_sgemm_fn)(char, char, int64_t, int64_t, int64_t, float, const float *,
                             int64_t, const float *, int64_t, float, float *, int64_t);

enum { ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112 };

static int ncores(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

/* ---- lorakit's own kernels on every core ------------------------------------- */

typedef struct own_arg {
  int M, N, K, transb, bf16, t, nt;
  const void *A, *B;
  float *C;
} own_arg;

static void *own_thread(void *p) {
  own_arg *a = p;
  int per = (a->N + a->nt - 1) / a->nt;
  per = (per + 31) / 32 * 32;
  int b = a->t * per, e = b + per < a->N ? b + per : a->N;
  if (b >= e) return NULL;
  if (a->bf16) {
    const uint16_t *B = a->B;
    cpu_gemm_bf16(CPU_NOTRANS, a->transb, a->M, e - b, a->K, 1.0f, a->A, CPU_GEMM_BF16, a->K,
                  a->transb ? B + (size_t)b * a->K : B + b, CPU_GEMM_BF16, a->transb ? a->K : a->N,
                  0.0f, a->C + b, a->N);
  } else {
    const float *B = a->B;
    cpu_sgemm(CPU_NOTRANS, a->transb, a->M, e - b, a->K, 1.0f, a->A, a->K,
              a->transb ? B + (size_t)b * a->K : B + b, a->transb ? a->K : a->N, 0.0f, a->C + b,
              a->N);
  }
  return NULL;
}

static void own_gemm(int M, int N, int K, int transb, int bf16, const void *A, const void *B,
                     float *C) {
  int nt = ncores();
  pthread_t th[256];
  own_arg a[256];
  for (int t = 0; t < nt; t++) {
    a[t] = (own_arg){M, N, K, transb, bf16, t, nt, A, B, C};
    if (t) pthread_create(&th[t], NULL, own_thread, &a[t]);
  }
  own_thread(&a[0]);
  for (int t = 1; t < nt; t++) pthread_join(th[t], NULL);
}

/* ---- oneDNN's matmul primitive in bf16 (its C API, dlsym'ed; the
 * descriptors are opaque buffers larger than oneDNN 2.x's structs) ------------ */

struct dnnl_api {
  void *h;
  int (*engine_create)(void **, int, size_t);
  int (*stream_create)(void **, void *, unsigned);
  int (*md_init_by_strides)(void *, int, const int64_t *, int, const int64_t *);
  int (*matmul_desc_init)(void *, const void *, const void *, const void *, const void *);
  int (*pd_create)(void **, const void *, const void *, void *, const void *);
  int (*prim_create)(void **, const void *);
  int (*mem_create)(void **, const void *, void *, void *);
  int (*execute)(const void *, void *, int, const void *);
  int (*stream_wait)(void *);
  void *engine, *stream;
};

enum { DNNL_BF16 = 2, DNNL_F32 = 3, DNNL_CPU = 1, ARG_SRC = 1, ARG_DST = 17, ARG_WEIGHTS = 33 };
typedef struct { int arg; void *mem; } dnnl_arg;

static int dnnl_load(struct dnnl_api *d, void *h) {
  memset(d, 0, sizeof *d);
  d->h = h;
#define DSYM(f, n) if (!(*(void **)&d->f = dlsym(h, n))) return 0
  DSYM(engine_create, "dnnl_engine_create");
  DSYM(stream_create, "dnnl_stream_create");
  DSYM(md_init_by_strides, "dnnl_memory_desc_init_by_strides");
  DSYM(matmul_desc_init, "dnnl_matmul_desc_init");
  DSYM(pd_create, "dnnl_primitive_desc_create");
  DSYM(prim_create, "dnnl_primitive_create");
  DSYM(mem_create, "dnnl_memory_create");
  DSYM(execute, "dnnl_primitive_execute");
  DSYM(stream_wait, "dnnl_stream_wait");
#undef DSYM
  return d->engine_create(&d->engine, DNNL_CPU, 0) == 0 && d->stream_create(&d->stream, d->engine, 1) == 0;
}

/* C[M,N] f32 = A[M,K] bf16 * op(B) bf16, op(B) as for run(). 0 on success. */
typedef struct dnnl_mm {
  void *prim;
  dnnl_arg args[3];
} dnnl_mm;

static int dnnl_mm_make(struct dnnl_api *d, int M, int N, int K, int transb, void *A, void *B,
                        float *C, dnnl_mm *out) {
  static _Alignas(64) char mda[8192], mdb[8192], mdc[8192], op[32768];
  int64_t da[2] = {M, K}, sa[2] = {K, 1}, db[2] = {K, N}, dc[2] = {M, N}, sc[2] = {N, 1};
  int64_t sb[2] = {transb ? 1 : N, transb ? K : 1};
  void *pd = NULL, *ma = NULL, *mb = NULL, *mc = NULL;
  if (d->md_init_by_strides(mda, 2, da, DNNL_BF16, sa) || d->md_init_by_strides(mdb, 2, db, DNNL_BF16, sb) ||
      d->md_init_by_strides(mdc, 2, dc, DNNL_F32, sc) || d->matmul_desc_init(op, mda, mdb, NULL, mdc) ||
      d->pd_create(&pd, op, NULL, d->engine, NULL) || d->prim_create(&out->prim, pd) ||
      d->mem_create(&ma, mda, d->engine, A) || d->mem_create(&mb, mdb, d->engine, B) ||
      d->mem_create(&mc, mdc, d->engine, C))
    return -1;
  out->args[0] = (dnnl_arg){ARG_SRC, ma};
  out->args[1] = (dnnl_arg){ARG_WEIGHTS, mb};
  out->args[2] = (dnnl_arg){ARG_DST, mc};
  return 0;
}

static void dnnl_mm_run(struct dnnl_api *d, dnnl_mm *m) {
  d->execute(m->prim, d->stream, 3, m->args);
  d->stream_wait(d->stream);
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

struct lib {
  const char *name, *path, *sym;
  void *h;
  void *fn;
};

/* C[M,N] = A[M,K] * op(B); transb: B is [N,K] (x*W^T) or [K,N] (dy*W). */
static void run(struct lib *l, int M, int N, int K, int transb, const float *A, const float *B,
                float *C) {
  if (!strcmp(l->sym, "dnnl_sgemm"))
    ((dnnl_sgemm_fn)l->fn)('N', transb ? 'T' : 'N', M, N, K, 1.0f, A, K, B, transb ? K : N, 0.0f,
                           C, N);
  else
    ((cblas_sgemm_fn)l->fn)(ROW_MAJOR, NO_TRANS, transb ? TRANS : NO_TRANS, M, N, K, 1.0f, A, K,
                            B, transb ? K : N, 0.0f, C, N);
}

static float bf16f(uint16_t h) {
  union { uint32_t u; float f; } c = {(uint32_t)h << 16};
  return c.f;
}

/* Naive check of a sample of C's entries in double precision (of the bf16
 * inputs when Ah, Bh are given). */
static double check(int M, int N, int K, int transb, const float *A, const float *B,
                    const float *C, const uint16_t *Ah, const uint16_t *Bh) {
  double worst = 0;
  for (int s = 0; s < 64; s++) {
    int i = (s * 7919) % M, j = (s * 104729) % N;
    double acc = 0, mag = 0;
    for (int k = 0; k < K; k++) {
      size_t ib = transb ? (size_t)j * K + k : (size_t)k * N + j, ia = (size_t)i * K + k;
      double b = Bh ? bf16f(Bh[ib]) : B[ib], a = Ah ? bf16f(Ah[ia]) : A[ia];
      acc += a * b;
      mag += fabs(a * b);
    }
    double e = fabs(acc - C[(size_t)i * N + j]) / (mag + 1e-30);
    if (e > worst) worst = e;
  }
  return worst;
}

typedef struct result {
  double gflops[3][2]; /* [shape][transb] */
  int have;
} result;

static const int shapes[3][3] = {{512, 2048, 2048}, {2048, 4096, 4096}, {512, 4096, 11008}};

/* kind: 0 cblas/dnnl_sgemm library, 1 lorakit fp32, 2 lorakit bf16, 3 oneDNN bf16 matmul. */
static void measure(const char *name, int kind, struct lib *l, struct dnnl_api *d, result *res,
                    const result *refres, const char *refname) {
  for (size_t si = 0; si < 3; si++) {
    for (int transb = 1; transb >= 0; transb--) {
      int M = shapes[si][0], K = transb ? shapes[si][1] : shapes[si][2];
      int N = transb ? shapes[si][2] : shapes[si][1];
      float *A = malloc(sizeof(float) * (size_t)M * K), *B = malloc(sizeof(float) * (size_t)K * N),
            *C = malloc(sizeof(float) * (size_t)M * N);
      uint16_t *Ah = NULL, *Bh = NULL;
      srand(1);
      for (size_t i = 0; i < (size_t)M * K; i++) A[i] = (float)rand() / RAND_MAX - 0.5f;
      for (size_t i = 0; i < (size_t)K * N; i++) B[i] = (float)rand() / RAND_MAX - 0.5f;
      int bf = kind >= 2;
      if (bf) {
        Ah = malloc(2 * (size_t)M * K);
        Bh = malloc(2 * (size_t)K * N);
        cpu_f32_to_bf16(A, Ah, (int64_t)M * K);
        cpu_f32_to_bf16(B, Bh, (int64_t)K * N);
      }
      dnnl_mm mm;
      if (kind == 3 && dnnl_mm_make(d, M, N, K, transb, Ah, Bh, C, &mm)) {
        printf("bench: gemm_%s skipped (the matmul primitive was refused)\n", name);
        return;
      }
      double best = 1e9, err = 0;
      for (int r = 0; r < 4; r++) { /* best of 3 after the checked warm-up run */
        double t0 = now();
        if (kind == 0) run(l, M, N, K, transb, A, B, C);
        else if (kind == 3) dnnl_mm_run(d, &mm);
        else own_gemm(M, N, K, transb, kind == 2, bf ? (const void *)Ah : A, bf ? (const void *)Bh : B, C);
        double t = now() - t0;
        if (r == 0) err = check(M, N, K, transb, A, B, C, Ah, Bh);
        else if (t < best) best = t;
      }
      double g = 2.0 * M * N * K / best * 1e-9;
      res->gflops[si][transb] = g;
      double ref = refres && refres->have ? refres->gflops[si][transb] : 0;
      double tol = bf ? 2e-5 : 1e-5; /* bf16 inputs: an f32 sum of exact products */
      printf("bench: gemm_%s_%dx%dx%d_%s %.1f GFLOP/s", name, M, N, K, transb ? "NT" : "NN", g);
      if (ref > 0) printf(" ratio=%.2f vs %s (%.1f GFLOP/s)", g / ref, refname, ref);
      printf(" relerr=%.2g %s\n", err, err < tol ? "ok" : "WRONG");
      fflush(stdout);
      free(A);
      free(B);
      free(C);
      free(Ah);
      free(Bh);
    }
  }
  res->have = 1;
}

int main(void) {
  struct lib libs[] = {
      {"openblas", "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0", "cblas_sgemm",
       0, 0},
      {"blis", "/usr/lib/x86_64-linux-gnu/blis-openmp/libblis.so.4", "cblas_sgemm", 0, 0},
      {"onednn", "libdnnl.so.2", "dnnl_sgemm", 0, 0},
  };
  result r_openblas, r_other, r_dnnl_bf16, r_own;
  memset(&r_openblas, 0, sizeof r_openblas);
  memset(&r_dnnl_bf16, 0, sizeof r_dnnl_bf16);
  printf("bench_gemm: %d cores; lorakit's kernels on the %s path; OPENBLAS_CORETYPE=%s; "
         "BLIS_NUM_THREADS=%s OMP_NUM_THREADS=%s\n",
         ncores(), cpu_isa_describe(), getenv("OPENBLAS_CORETYPE") ? getenv("OPENBLAS_CORETYPE") : "(unset)",
         getenv("BLIS_NUM_THREADS") ? getenv("BLIS_NUM_THREADS") : "(unset)",
         getenv("OMP_NUM_THREADS") ? getenv("OMP_NUM_THREADS") : "(unset)");
  struct dnnl_api dnnl;
  int have_dnnl = 0;
  for (size_t li = 0; li < sizeof libs / sizeof libs[0]; li++) {
    struct lib *l = &libs[li];
    /* Let the previous library's idle threads stop spinning before the next
     * one measures (they otherwise steal a core from its first shape). */
    if (li) usleep(500000);
    l->h = dlopen(l->path, RTLD_NOW | RTLD_LOCAL);
    if (!l->h) {
      printf("bench: gemm_%s skipped (%s)\n", l->name, dlerror());
      continue;
    }
    l->fn = dlsym(l->h, l->sym);
    if (!l->fn) {
      printf("bench: gemm_%s skipped (no %s)\n", l->name, l->sym);
      continue;
    }
    memset(&r_other, 0, sizeof r_other);
    measure(l->name, 0, l, NULL, li ? &r_other : &r_openblas, li ? &r_openblas : NULL, "openblas");
    if (!strcmp(l->name, "onednn")) have_dnnl = dnnl_load(&dnnl, l->h);
  }
  if (have_dnnl) {
    usleep(500000);
    measure("onednn_bf16_matmul", 3, NULL, &dnnl, &r_dnnl_bf16, NULL, NULL);
  } else {
    printf("bench: gemm_onednn_bf16_matmul skipped (oneDNN or its matmul API missing)\n");
  }
  usleep(500000);
  memset(&r_own, 0, sizeof r_own);
  measure("lorakit", 1, NULL, NULL, &r_own, &r_openblas, "openblas");
  memset(&r_own, 0, sizeof r_own);
  measure("lorakit_bf16", 2, NULL, NULL, &r_own, &r_dnnl_bf16, "onednn_bf16_matmul");
  return 0;
}
