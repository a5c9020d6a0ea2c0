/* gemm_eff.c - the efficiency of lorakit's own GEMM kernels (plugins/cpu/
 * gemm.h, linked in directly) on ONE core, against that core's peak for the
 * same instructions, both timed in the thread's CPU time
 * (CLOCK_THREAD_CPUTIME_ID) and the best of several runs: a machine shared
 * with other work takes time slices away from both alike, so the ratio stays
 * meaningful where wall-clock figures (bench_lora) swing with the load. The
 * cache it shares is not protected: a busy machine still lowers the ratios.
 *
 * Per ISA path the CPU has: fp32 (AVX2 against an 8-lane FMA loop, AVX-512
 * against a 16-lane FMA loop) and bf16 (AVX-512 BF16 against a vdpbf16ps
 * loop; AMX against a tdpbf16ps loop), on per-thread slices of bench_lora's
 * GEMMs (x W^T is NT, dy W is NN; the pool splits N over threads) and one
 * cache-resident shape. Usage: gemm_eff [reps] (default 5). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "gemm.h"

#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- one core's peaks: 12 independent chains hide the latency on two pipes ---- */

#define PEAK_ITERS 400000L

__attribute__((target("avx2,fma"))) static float peak_avx2(long it) {
  __m256 a[12], x = _mm256_set1_ps(1.0000001f), y = _mm256_set1_ps(1e-7f);
  for (int i = 0; i < 12; i++) a[i] = _mm256_set1_ps((float)i);
  for (long k = 0; k < it; k++)
#pragma GCC unroll 12
    for (int i = 0; i < 12; i++) a[i] = _mm256_fmadd_ps(a[i], x, y);
  float s = 0, t[8];
  for (int i = 0; i < 12; i++) {
    _mm256_storeu_ps(t, a[i]);
    s += t[0];
  }
  return s;
}

__attribute__((target("avx512f"))) static float peak_avx512(long it) {
  __m512 a[12], x = _mm512_set1_ps(1.0000001f), y = _mm512_set1_ps(1e-7f);
  for (int i = 0; i < 12; i++) a[i] = _mm512_set1_ps((float)i);
  for (long k = 0; k < it; k++)
#pragma GCC unroll 12
    for (int i = 0; i < 12; i++) a[i] = _mm512_fmadd_ps(a[i], x, y);
  float s = 0;
  for (int i = 0; i < 12; i++) s += _mm512_reduce_add_ps(a[i]);
  return s;
}

__attribute__((target("avx512f,avx512bf16"))) static float peak_bf16(long it) {
  __m512 a[12];
  __m512bh x = (__m512bh)_mm512_set1_epi16(0x3f80), y = (__m512bh)_mm512_set1_epi16(0x3380);
  for (int i = 0; i < 12; i++) a[i] = _mm512_set1_ps((float)i);
  for (long k = 0; k < it; k++)
#pragma GCC unroll 12
    for (int i = 0; i < 12; i++) a[i] = _mm512_dpbf16_ps(a[i], x, y);
  float s = 0;
  for (int i = 0; i < 12; i++) s += _mm512_reduce_add_ps(a[i]);
  return s;
}

/* AMX: tdpbf16ps into four accumulator tiles from two A and two B tiles (as
 * gemm_amx.c's step), on zeroed tiles. The configuration is a static
 * constant (see gemm_amx.c on GCC's _tile_loadconfig). */
typedef struct eff_amx_cfg {
  uint8_t palette, start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
} eff_amx_cfg;
static const eff_amx_cfg eff_cfg __attribute__((aligned(64))) = {
    .palette = 1, .colsb = {64, 64, 64, 64, 64, 64, 64, 64}, .rows = {16, 16, 16, 16, 16, 16, 16, 16}};

__attribute__((target("amx-tile,amx-bf16"))) static float peak_amx(long it) {
  _tile_loadconfig(&eff_cfg);
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  _tile_zero(4);
  _tile_zero(5);
  _tile_zero(6);
  _tile_zero(7);
  for (long k = 0; k < it; k++) {
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  static float out[16 * 16] __attribute__((aligned(64)));
  _tile_stored(0, out, 64);
  _tile_release();
  return out[0];
}

static volatile float sink;

/* Best GFLOP/s of reps runs of one peak loop. */
static double peak_gflops(cpu_isa_t isa, int reps) {
  double best = 0;
  for (int r = 0; r < reps; r++) {
    long it = isa == CPU_ISA_AMX ? PEAK_ITERS / 8 : PEAK_ITERS;
    double t0 = cpu_now(), flops;
    switch (isa) {
    case CPU_ISA_AVX2: sink = peak_avx2(it); flops = 12.0 * 8 * 2 * (double)it; break;
    case CPU_ISA_AVX512: sink = peak_avx512(it); flops = 12.0 * 16 * 2 * (double)it; break;
    case CPU_ISA_AVX512BF16: sink = peak_bf16(it); flops = 12.0 * 16 * 4 * (double)it; break;
    default: sink = peak_amx(it); flops = 4.0 * 16 * 16 * 32 * 2 * (double)it; break;
    }
    double g = flops / (cpu_now() - t0) * 1e-9;
    if (g > best) best = g;
  }
  return best;
}

typedef struct eff_shape {
  int M, N, K, tb;
  const char *what;
} eff_shape;

static const eff_shape shapes[] = {
    {504, 512, 256, 0, "cache-resident"},
    {512, 1024, 2048, 1, "x W^T, 512x2048x2048 on 2 threads"},
    {512, 1024, 2048, 0, "dy W, 512x2048x2048 on 2 threads"},
    {512, 2048, 4096, 1, "x W^T, 2048x4096x4096 rows/4"},
    {512, 2752, 4096, 1, "x W^T, 512x4096x11008 on 4 threads"},
};

int main(int argc, char **argv) {
  int reps = argc > 1 ? atoi(argv[1]) : 5;
  if (reps < 1) reps = 1;
  cpu_isa_t best = cpu_isa_best();
  printf("bench_gemm_eff: one core, thread CPU time, best of %d; widest path %s\n", reps,
         cpu_isa_name(best));
  /* fp32 on AVX2 and AVX-512, bf16 on AVX-512 BF16 and AMX: each path the CPU has. */
  const struct { cpu_isa_t isa; int bf16; const char *peak; } paths[] = {
      {CPU_ISA_AVX2, 0, "avx2_fma_peak_1core"},
      {CPU_ISA_AVX512, 0, "avx512_fma_peak_1core"},
      {CPU_ISA_AVX512BF16, 1, "avx512_bf16_dot_peak_1core"},
      {CPU_ISA_AMX, 1, "amx_tdpbf16ps_peak_1core"},
  };
  size_t maxa = 0, maxb = 0, maxc = 0;
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
    size_t a = (size_t)shapes[s].M * shapes[s].K, b = (size_t)shapes[s].K * shapes[s].N,
           c = (size_t)shapes[s].M * shapes[s].N;
    if (a > maxa) maxa = a;
    if (b > maxb) maxb = b;
    if (c > maxc) maxc = c;
  }
  float *A = malloc(maxa * 4), *B = malloc(maxb * 4), *C = malloc(maxc * 4);
  if (!A || !B || !C) return 1;
  for (size_t i = 0; i < maxa; i++) A[i] = (float)(i % 7) * 0.1f;
  for (size_t i = 0; i < maxb; i++) B[i] = (float)(i % 5) * 0.1f;
  for (size_t p = 0; p < sizeof paths / sizeof paths[0]; p++) {
    cpu_isa_t isa = paths[p].isa;
    if (isa > best) {
      printf("bench: gemm_eff_%s skipped (this CPU lacks it)\n", cpu_isa_name(isa));
      continue;
    }
    double peak = peak_gflops(isa, reps);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
      const eff_shape *sh = &shapes[s];
      double t = 1e30;
      for (int r = 0; r < reps; r++) {
        double p2 = peak_gflops(isa, 1); /* interleaved: the peak sees the same machine */
        if (p2 > peak) peak = p2;
        double t0 = cpu_now();
        if (paths[p].bf16)
          cpu_gemm_bf16_isa(isa, CPU_NOTRANS, sh->tb, sh->M, sh->N, sh->K, 1.0f, A, CPU_GEMM_F32,
                            sh->K, B, CPU_GEMM_F32, sh->tb ? sh->K : sh->N, 0.0f, C, sh->N);
        else
          cpu_sgemm_isa(isa, CPU_NOTRANS, sh->tb, sh->M, sh->N, sh->K, 1.0f, A, sh->K, B,
                        sh->tb ? sh->K : sh->N, 0.0f, C, sh->N);
        double dt = cpu_now() - t0;
        if (dt < t) t = dt;
      }
      double g = 2.0 * sh->M * sh->N * sh->K / t * 1e-9;
      printf("bench: gemm_eff_%s_%s_%dx%dx%d_%s %.1f GFLOP/s ratio=%.3f vs %s (%.1f GFLOP/s) [%s]\n",
             cpu_isa_name(isa), paths[p].bf16 ? "bf16" : "fp32", sh->M, sh->N, sh->K,
             sh->tb ? "NT" : "NN", g, g / peak, paths[p].peak, peak, sh->what);
    }
  }
  free(A);
  free(B);
  free(C);
  return 0;
}
