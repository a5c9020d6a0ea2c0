/* bench_peak.h - the machine's references shared by the benchmarks
 * (bench_lora.c, bench_train.c): the all-core FMA peak of the widest ISA
 * (AVX-512 zmm, else AVX2 ymm, else portable; and the AVX-512 BF16 dot peak),
 * memcpy bandwidth, and the machine line (CPU model, cores). Header-only:
 * every function is static and marked unused, so an includer that needs
 * only part of it stays -Werror clean. Needs plugins/cpu/isa.c linked in
 * (cpu_isa_best) and -Iplugins/cpu. */
#ifndef LK_BENCH_PEAK_H
#define LK_BENCH_PEAK_H

#include "isa.h"

#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(__GNUC__) || defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#endif

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int ncores(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

/* ---- FMA peak ------------------------------------------------------------------ */

static volatile float fma_seed[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
static volatile float fma_sink;
#define FMA_ITERS 30000000L /* 12 x 8-lane FMAs each: 5.8 GFLOP per core */
#define FMA_FLOPS_PER_ITER (12.0 * 8.0 * 2.0)

/* Twelve independent accumulator chains hide the FMA latency on two pipes. */
__attribute__((target("avx2,fma"))) static float fma_loop_avx2(long iters) {
  __m256 a[12];
  for (int i = 0; i < 12; i++) a[i] = _mm256_set1_ps(fma_seed[i]);
  const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
  for (long i = 0; i < iters; i++) {
    a[0] = _mm256_fmadd_ps(a[0], m, c);
    a[1] = _mm256_fmadd_ps(a[1], m, c);
    a[2] = _mm256_fmadd_ps(a[2], m, c);
    a[3] = _mm256_fmadd_ps(a[3], m, c);
    a[4] = _mm256_fmadd_ps(a[4], m, c);
    a[5] = _mm256_fmadd_ps(a[5], m, c);
    a[6] = _mm256_fmadd_ps(a[6], m, c);
    a[7] = _mm256_fmadd_ps(a[7], m, c);
    a[8] = _mm256_fmadd_ps(a[8], m, c);
    a[9] = _mm256_fmadd_ps(a[9], m, c);
    a[10] = _mm256_fmadd_ps(a[10], m, c);
    a[11] = _mm256_fmadd_ps(a[11], m, c);
  }
  __m256 s = a[0];
  for (int i = 1; i < 12; i++) s = _mm256_add_ps(s, a[i]);
  float out[8];
  _mm256_storeu_ps(out, s);
  return out[0] + out[7];
}

/* The same twelve chains in zmm registers (16 lanes). */
#define FMA512_FLOPS_PER_ITER (12.0 * 16.0 * 2.0)
__attribute__((target("avx512f"))) static float fma_loop_avx512(long iters) {
  __m512 a[12];
  for (int i = 0; i < 12; i++) a[i] = _mm512_set1_ps(fma_seed[i]);
  const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
  for (long i = 0; i < iters; i++) {
#pragma GCC unroll 12
    for (int k = 0; k < 12; k++) a[k] = _mm512_fmadd_ps(a[k], m, c);
  }
  __m512 s = a[0];
  for (int i = 1; i < 12; i++) s = _mm512_add_ps(s, a[i]);
  return _mm512_reduce_add_ps(s);
}

/* AVX-512 BF16: twelve chains of vdpbf16ps, each 16 lanes x 2 products x
 * (multiply + add). */
#define DPBF16_FLOPS_PER_ITER (12.0 * 16.0 * 2.0 * 2.0)
__attribute__((target("avx512f,avx512bf16"))) static float bf16_loop_avx512(long iters) {
  __m512 a[12];
  for (int i = 0; i < 12; i++) a[i] = _mm512_set1_ps(fma_seed[i]);
  const __m512bh m = (__m512bh)_mm512_set1_epi32(0x3f803f80), c = (__m512bh)_mm512_set1_epi32(0x33d633d6);
  for (long i = 0; i < iters; i++) {
#pragma GCC unroll 12
    for (int k = 0; k < 12; k++) a[k] = _mm512_dpbf16_ps(a[k], m, c);
  }
  __m512 s = a[0];
  for (int i = 1; i < 12; i++) s = _mm512_add_ps(s, a[i]);
  return _mm512_reduce_add_ps(s);
}

/* Portable fallback: the same chains, 8 lanes each, left to the compiler. */
static float fma_loop_portable(long iters) {
  float a[12][8];
  for (int i = 0; i < 12; i++)
    for (int l = 0; l < 8; l++) a[i][l] = fma_seed[i];
  for (long it = 0; it < iters; it++)
    for (int i = 0; i < 12; i++)
      for (int l = 0; l < 8; l++) a[i][l] = a[i][l] * 0.999999f + 1e-7f;
  float s = 0;
  for (int i = 0; i < 12; i++) s += a[i][0] + a[i][7];
  return s;
}


/* The loop a peak runs: 0 portable, 1 AVX2 FMA, 2 AVX-512 FMA, 3 AVX-512 BF16 dot. */
enum { LOOP_PORTABLE, LOOP_AVX2, LOOP_AVX512, LOOP_BF16 };
static const char *const loop_names[] = {"portable", "avx2_fma", "avx512_fma", "avx512_bf16_dot"};

/* The widest fp32 loop the CPU and OS support (isa.c's CPUID/XGETBV). */
static int widest_fp32_loop(void) {
  cpu_isa_t isa = cpu_isa_best();
  return isa >= CPU_ISA_AVX512 ? LOOP_AVX512 : isa >= CPU_ISA_AVX2 ? LOOP_AVX2 : LOOP_PORTABLE;
}

typedef struct peak_arg {
  pthread_barrier_t *start;
  long iters;
  int loop;
} peak_arg;

static void *peak_thread(void *p) {
  peak_arg *a = p;
  pthread_barrier_wait(a->start);
  switch (a->loop) {
  case LOOP_BF16: fma_sink = bf16_loop_avx512(a->iters); break;
  case LOOP_AVX512: fma_sink = fma_loop_avx512(a->iters); break;
  case LOOP_AVX2: fma_sink = fma_loop_avx2(a->iters); break;
  default: fma_sink = fma_loop_portable(a->iters); break;
  }
  return NULL;
}

static double loop_flops_per_iter(int loop) {
  return loop == LOOP_BF16 ? DPBF16_FLOPS_PER_ITER : loop == LOOP_AVX512 ? FMA512_FLOPS_PER_ITER : FMA_FLOPS_PER_ITER;
}

/* GFLOP/s of n threads running the loop at once; best of reps. */
static double fma_peak(int n, int avx2, int reps) {
  double best = 0;
  for (int rep = 0; rep < reps; rep++) {
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)n + 1);
    pthread_t th[256];
    peak_arg a = {&start, FMA_ITERS, avx2};
    if (avx2 >= LOOP_AVX512) a.iters = FMA_ITERS / 2; /* twice the flops per iteration */
    for (int i = 0; i < n; i++) pthread_create(&th[i], NULL, peak_thread, &a);
    pthread_barrier_wait(&start);
    double t0 = now();
    for (int i = 0; i < n; i++) pthread_join(th[i], NULL);
    double t = now() - t0;
    pthread_barrier_destroy(&start);
    double g = n * (double)a.iters * loop_flops_per_iter(avx2) / t * 1e-9;
    if (g > best) best = g;
  }
  return best;
}

/* ---- memory ------------------------------------------------------------------- */

static void *xalloc(size_t n) {
  void *p = NULL;
  if (posix_memalign(&p, 64, n ? n : 64)) {
    fprintf(stderr, "bench: out of memory (%zu bytes)\n", n);
    exit(1);
  }
  memset(p, 0, n); /* fault the pages in now */
  return p;
}

static void fill(float *p, size_t n, uint64_t seed) {
  uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
  for (size_t i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    p[i] = (float)(s >> 40) * (1.0f / 16777216.0f) - 0.5f;
  }
}

typedef struct copy_arg {
  char *dst;
  const char *src;
  size_t n;
} copy_arg;

static void *copy_thread(void *p) {
  copy_arg *a = p;
  memcpy(a->dst, a->src, a->n);
  return NULL;
}

/* Best time of reps memcpy calls of n bytes, split over nthreads threads. */
static double memcpy_time(char *dst, const char *src, size_t n, int reps, int nthreads) {
  double best = 1e30;
  for (int r = 0; r < reps + 1; r++) {
    double t0 = now();
    if (nthreads <= 1) {
      memcpy(dst, src, n);
    } else {
      pthread_t th[256];
      copy_arg a[256];
      for (int i = 0; i < nthreads; i++) {
        size_t b = n / (size_t)nthreads * (size_t)i, e = i + 1 == nthreads ? n : b + n / (size_t)nthreads;
        a[i] = (copy_arg){dst + b, src + b, e - b};
        pthread_create(&th[i], NULL, copy_thread, &a[i]);
      }
      for (int i = 0; i < nthreads; i++) pthread_join(th[i], NULL);
    }
    double t = now() - t0;
    fma_sink = (float)dst[n / 2];
    if (r > 0 && t < best) best = t;
  }
  return best;
}

/* "bench: machine MODEL (family F model M), N cores online, widest ISA NAME"
 * from the first CPU of /proc/cpuinfo (a virtual machine's model name may
 * not name the generation: family and model do). */
static void bench_machine(void) {
  char model[256] = "unknown CPU", family[32] = "?", num[32] = "?", line[512];
  FILE *f = fopen("/proc/cpuinfo", "r");
  while (f && fgets(line, sizeof line, f)) {
    const char *c = strchr(line, ':');
    if (!c) continue;
    if (line[0] == '\n') break; /* the first CPU only */
    char *dst = !strncmp(line, "model name", 10) ? model : !strncmp(line, "cpu family", 10) ? family
                : !strncmp(line, "model\t", 6) ? num : NULL;
    size_t cap = dst == model ? sizeof model : sizeof family;
    if (!dst) continue;
    c++;
    while (*c == ' ' || *c == '\t') c++;
    snprintf(dst, cap, "%.*s", (int)strcspn(c, "\n"), c);
  }
  if (f) fclose(f);
  printf("bench: machine %s (family %s model %s), %d cores online, widest ISA %s\n", model, family, num, ncores(),
         loop_names[widest_fp32_loop()]);
}

#if defined(__GNUC__) || defined(__clang__)
#pragma GCC diagnostic pop
#endif

#endif /* LK_BENCH_PEAK_H */
