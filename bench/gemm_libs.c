/* gemm_libs.c - measures candidate GEMM libraries (OpenBLAS, BLIS, oneDNN)
 * on lorakit's benchmark shapes, each checked against a naive reference.
 * Each library is dlopen'ed RTLD_LOCAL so their cblas_sgemm symbols do not
 * collide. Prints `bench:` lines; used to choose the CPU backend's GEMM. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
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

/* Naive check of a sample of C's entries in double precision. */
static double check(int M, int N, int K, int transb, const float *A, const float *B,
                    const float *C) {
  double worst = 0;
  for (int s = 0; s < 64; s++) {
    int i = (s * 7919) % M, j = (s * 104729) % N;
    double acc = 0, mag = 0;
    for (int k = 0; k < K; k++) {
      double b = transb ? B[(size_t)j * K + k] : B[(size_t)k * N + j];
      acc += (double)A[(size_t)i * K + k] * b;
      mag += fabs((double)A[(size_t)i * K + k] * b);
    }
    double e = fabs(acc - C[(size_t)i * N + j]) / (mag + 1e-30);
    if (e > worst) worst = e;
  }
  return worst;
}

int main(void) {
  struct lib libs[] = {
      {"openblas", "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0", "cblas_sgemm",
       0, 0},
      {"blis", "/usr/lib/x86_64-linux-gnu/blis-openmp/libblis.so.4", "cblas_sgemm", 0, 0},
      {"onednn", "libdnnl.so.2", "dnnl_sgemm", 0, 0},
  };
  int shapes[][3] = {{512, 2048, 2048}, {2048, 4096, 4096}, {512, 4096, 11008}};
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
    for (size_t si = 0; si < 3; si++) {
      for (int transb = 1; transb >= 0; transb--) {
        int M = shapes[si][0], K = transb ? shapes[si][1] : shapes[si][2];
        int N = transb ? shapes[si][2] : shapes[si][1];
        float *A = malloc(sizeof(float) * (size_t)M * K), *B = malloc(sizeof(float) * (size_t)K * N),
              *C = malloc(sizeof(float) * (size_t)M * N);
        srand(1);
        for (size_t i = 0; i < (size_t)M * K; i++) A[i] = (float)rand() / RAND_MAX - 0.5f;
        for (size_t i = 0; i < (size_t)K * N; i++) B[i] = (float)rand() / RAND_MAX - 0.5f;
        run(l, M, N, K, transb, A, B, C);
        double err = check(M, N, K, transb, A, B, C);
        double best = 1e9;
        for (int r = 0; r < 3; r++) { /* best of 3 after the checked warm-up run */
          double t0 = now();
          run(l, M, N, K, transb, A, B, C);
          double t = now() - t0;
          if (t < best) best = t;
        }
        printf("bench: gemm_%s %dx%dx%d %s %.1f GFLOP/s relerr=%.2g %s\n", l->name, M, N, K,
               transb ? "NT" : "NN", 2.0 * M * N * K / best * 1e-9, err,
               err < 1e-5 ? "ok" : "WRONG");
        free(A);
        free(B);
        free(C);
      }
    }
  }
  return 0;
}
