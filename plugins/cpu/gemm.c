/* gemm.c - the packing driver of the CPU backend's GEMM (gemm.h): loops,
 * packing, edge tiles, the per-thread workspace and the choice of
 * micro-kernel by ISA path. Plain C (baseline ISA); the micro-kernels live in
 * gemm_portable.c, gemm_avx2.c, gemm_avx512.c, gemm_bf16.c and gemm_amx.c.
 *
 * Loop nest (C row-major, vectors along N; the mirror of BLIS's):
 *   for p0 over K by kc:            one K block
 *     for i0 over M by mb:          pack A[i0.., p0..] into MR-row slivers (L3)
 *       for n0 over N by nb:        pack B[p0.., n0..] into NR-column slivers (L2)
 *         for each A sliver:        (stays in L1)
 *           for each B sliver:      micro-kernel on an MR x NR tile of C */
#include "gemm.h"
#include "gemm_kern.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* ---- bf16 rounding ------------------------------------------------------------ */

/* f32 -> bf16, nearest-even; NaN stays (quiet) NaN; subnormals become a
 * signed zero, as vcvtne2ps2bf16 and vdpbf16ps treat them, so every path
 * rounds alike. */
static inline uint16_t f2bf(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
  if ((u & 0x7f800000u) == 0) return (uint16_t)((u >> 16) & 0x8000);      /* subnormal: 0 */
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

static inline float bf2f(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

float cpu_round_bf16(float f) { return bf2f(f2bf(f)); }

/* ---- the per-thread workspace -------------------------------------------------- */

typedef struct gemm_ws {
  void *mem;
  size_t bytes;
} gemm_ws;

static pthread_key_t ws_key;
static pthread_once_t ws_once = PTHREAD_ONCE_INIT;
static _Atomic int ws_fail_alloc; /* test hook (2: no thread key) */

static void ws_free(void *p) {
  gemm_ws *ws = p;
  if (!ws) return;
  free(ws->mem);
  free(ws);
}

static void ws_init(void) {
  if (pthread_key_create(&ws_key, ws_free)) ws_fail_alloc = 2;
}

static size_t kern_ws_bytes(const cpu_gemm_kern_t *k) {
  size_t a = (size_t)k->mb * (size_t)k->kc * 4, b = (size_t)k->kc * (size_t)k->nb * 4;
  size_t t = (size_t)k->mr * (size_t)k->nr * 4;
  return a + b + t + 3 * 64;
}

/* Largest workspace of any kernel: one allocation serves every path. */
static size_t ws_bytes_all(void) {
  size_t n = kern_ws_bytes(&cpu_gemm_kern_portable);
#if defined(__x86_64__)
  const cpu_gemm_kern_t *ks[] = {&cpu_gemm_kern_avx2, &cpu_gemm_kern_avx512,
                                 &cpu_gemm_kern_avx512bf16, &cpu_gemm_kern_amx};
  for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++)
    if (kern_ws_bytes(ks[i]) > n) n = kern_ws_bytes(ks[i]);
#endif
  return n;
}

static void *ws_get(void) {
  pthread_once(&ws_once, ws_init);
  if (ws_fail_alloc) return NULL;
  gemm_ws *ws = pthread_getspecific(ws_key);
  if (ws) return ws->mem;
  size_t n = ws_bytes_all();
  ws = calloc(1, sizeof *ws);
  if (!ws) return NULL;
  if (posix_memalign(&ws->mem, 64, n)) {
    free(ws);
    return NULL;
  }
  ws->bytes = n;
  if (pthread_setspecific(ws_key, ws)) {
    ws_free(ws);
    return NULL;
  }
  return ws->mem;
}

int cpu_gemm_thread_reserve(void) { return ws_get() ? 0 : -1; }

void cpu_gemm_test_fail_alloc(int on) {
  pthread_once(&ws_once, ws_init);
  if (ws_fail_alloc != 2) ws_fail_alloc = on ? 1 : 0;
}

/* ---- operands ----------------------------------------------------------------- */

typedef struct gemm_opnd {
  const void *p;
  int64_t ld;
  int trans;
  int bf16; /* element type: 1 bf16 bits, 0 f32 */
} gemm_opnd;

/* op(X)(r, c) as f32 (A: r = i, c = k; B: r = k, c = j). */
static inline float opnd_at(const gemm_opnd *x, int64_t r, int64_t c) {
  size_t off = x->trans ? (size_t)c * (size_t)x->ld + (size_t)r : (size_t)r * (size_t)x->ld + (size_t)c;
  return x->bf16 ? bf2f(((const uint16_t *)x->p)[off]) : ((const float *)x->p)[off];
}

/* ---- packing ------------------------------------------------------------------- */

/* A rows i0..i0+m, k p0..p0+kc into slivers of mr rows (f32; round: to bf16). */
static void pack_a_f32(const cpu_gemm_kern_t *kn, const gemm_opnd *a, int64_t i0, int64_t m,
                       int64_t p0, int64_t kc, int mr, int round, float *dst) {
  for (int64_t s = 0; s < m; s += mr, dst += (size_t)kc * mr) {
    int64_t rows = m - s < mr ? m - s : mr;
    if (!a->trans && !a->bf16 && !round && kn->pack_t) {
      kn->pack_t((const float *)a->p + (size_t)(i0 + s) * (size_t)a->ld + p0, a->ld, (int)rows, kc, mr, dst);
    } else if (!a->trans && !a->bf16 && !round) {
      for (int64_t i = 0; i < rows; i++) {
        const float *src = (const float *)a->p + (size_t)(i0 + s + i) * (size_t)a->ld + p0;
        for (int64_t k = 0; k < kc; k++) dst[k * mr + i] = src[k];
      }
    } else if (a->trans && !a->bf16 && !round) {
      for (int64_t k = 0; k < kc; k++) {
        const float *src = (const float *)a->p + (size_t)(p0 + k) * (size_t)a->ld + i0 + s;
        for (int64_t i = 0; i < rows; i++) dst[k * mr + i] = src[i];
      }
    } else {
      for (int64_t k = 0; k < kc; k++)
        for (int64_t i = 0; i < rows; i++) {
          float v = opnd_at(a, i0 + s + i, p0 + k);
          dst[k * mr + i] = round ? cpu_round_bf16(v) : v;
        }
    }
    if (rows < mr)
      for (int64_t k = 0; k < kc; k++)
        for (int64_t i = rows; i < mr; i++) dst[k * mr + i] = 0.0f;
  }
}

/* B k p0..p0+kc, columns n0..n0+n into slivers of nr columns (f32). */
static void pack_b_f32(const cpu_gemm_kern_t *kn, const gemm_opnd *b, int64_t p0, int64_t kc,
                       int64_t n0, int64_t n, int nr, int round, float *dst) {
  if (!b->trans && !b->bf16 && !round) { /* row by row of B: each source page once */
    int64_t ns = (n + nr - 1) / nr;
    for (int64_t k = 0; k < kc; k++) {
      const float *src = (const float *)b->p + (size_t)(p0 + k) * (size_t)b->ld + n0;
      for (int64_t s = 0; s < ns; s++) {
        float *d = dst + (size_t)s * (size_t)kc * nr + (size_t)k * nr;
        int64_t cols = n - s * nr < nr ? n - s * nr : nr;
        memcpy(d, src + s * nr, (size_t)cols * sizeof(float));
        for (int64_t j = cols; j < nr; j++) d[j] = 0.0f;
      }
    }
    return;
  }
  for (int64_t s = 0; s < n; s += nr, dst += (size_t)kc * nr) {
    int64_t cols = n - s < nr ? n - s : nr;
    if (!b->trans && !b->bf16 && !round) {
      for (int64_t k = 0; k < kc; k++) {
        const float *src = (const float *)b->p + (size_t)(p0 + k) * (size_t)b->ld + n0 + s;
        float *d = dst + k * nr;
        for (int64_t j = 0; j < cols; j++) d[j] = src[j];
        for (int64_t j = cols; j < nr; j++) d[j] = 0.0f;
      }
    } else if (b->trans && !b->bf16 && !round && kn->pack_t) {
      kn->pack_t((const float *)b->p + (size_t)(n0 + s) * (size_t)b->ld + p0, b->ld, (int)cols, kc, nr, dst);
      for (int64_t k = 0; k < kc; k++)
        for (int64_t j = cols; j < nr; j++) dst[k * nr + j] = 0.0f;
    } else if (b->trans && !b->bf16 && !round) {
      for (int64_t j = 0; j < cols; j++) {
        const float *src = (const float *)b->p + (size_t)(n0 + s + j) * (size_t)b->ld + p0;
        for (int64_t k = 0; k < kc; k++) dst[k * nr + j] = src[k];
      }
      for (int64_t k = 0; k < kc; k++)
        for (int64_t j = cols; j < nr; j++) dst[k * nr + j] = 0.0f;
    } else {
      for (int64_t k = 0; k < kc; k++)
        for (int64_t j = 0; j < nr; j++) {
          float v = j < cols ? opnd_at(b, p0 + k, n0 + s + j) : 0.0f;
          dst[k * nr + j] = round ? cpu_round_bf16(v) : v;
        }
    }
  }
}

static inline uint16_t opnd_bf(const gemm_opnd *x, int64_t r, int64_t c) {
  size_t off = x->trans ? (size_t)c * (size_t)x->ld + (size_t)r : (size_t)r * (size_t)x->ld + (size_t)c;
  return x->bf16 ? ((const uint16_t *)x->p)[off] : f2bf(((const float *)x->p)[off]);
}

/* bf16 pairs: A sliver [kc2/2][mr][2]; kc2 = kc rounded up to even, the pad zero. */
static void pack_a_bf16(const cpu_gemm_kern_t *kn, const gemm_opnd *a, int64_t i0, int64_t m,
                        int64_t p0, int64_t kc, int mr, uint16_t *dst) {
  int64_t kc2 = (kc + 1) & ~(int64_t)1;
  for (int64_t s = 0; s < m; s += mr, dst += (size_t)kc2 * mr) {
    int64_t rows = m - s < mr ? m - s : mr;
    if (!a->bf16 && !(kc & 1) && (a->trans ? kn->pack_n_bf16 != NULL : kn->pack_t_bf16 != NULL)) {
      if (a->trans) /* op(A) = A^T: rows k, k+1 of A hold the pairs of one sliver row each */
        kn->pack_n_bf16((const float *)a->p + (size_t)p0 * (size_t)a->ld + i0 + s, a->ld, (int)rows, kc, mr, dst);
      else
        kn->pack_t_bf16((const float *)a->p + (size_t)(i0 + s) * (size_t)a->ld + p0, a->ld, (int)rows, kc, mr, dst);
      for (int64_t i = rows; i < mr; i++)
        for (int64_t k = 0; k < kc2; k++) dst[(k >> 1) * 2 * mr + 2 * i + (k & 1)] = 0;
      continue;
    }
    for (int64_t i = 0; i < mr; i++) {
      if (i >= rows) {
        for (int64_t k = 0; k < kc2; k++) dst[(k >> 1) * 2 * mr + 2 * i + (k & 1)] = 0;
        continue;
      }
      if (!a->trans && !a->bf16) {
        const float *src = (const float *)a->p + (size_t)(i0 + s + i) * (size_t)a->ld + p0;
        for (int64_t k = 0; k < kc; k++) dst[(k >> 1) * 2 * mr + 2 * i + (k & 1)] = f2bf(src[k]);
      } else {
        for (int64_t k = 0; k < kc; k++)
          dst[(k >> 1) * 2 * mr + 2 * i + (k & 1)] = opnd_bf(a, i0 + s + i, p0 + k);
      }
      if (kc & 1) dst[(kc >> 1) * 2 * mr + 2 * i + 1] = 0;
    }
  }
}

/* B sliver [kcp/2][nr][2]; k from kc to kcp (the kernel's depth granule) zero. */
static void pack_b_bf16(const cpu_gemm_kern_t *kn, const gemm_opnd *b, int64_t p0, int64_t kc,
                        int64_t kcp, int64_t n0, int64_t n, int nr, uint16_t *dst) {
  int64_t kc2 = (kc + 1) & ~(int64_t)1;
  for (int64_t s = 0; s < n; s += nr, dst += (size_t)kcp * nr) {
    int64_t cols = n - s < nr ? n - s : nr;
    if (b->trans && !b->bf16 && kn->pack_t_bf16 && !(kc & 1)) {
      kn->pack_t_bf16((const float *)b->p + (size_t)(n0 + s) * (size_t)b->ld + p0, b->ld, (int)cols, kc, nr, dst);
    } else if (b->trans && !b->bf16) {
      for (int64_t j = 0; j < cols; j++) {
        const float *src = (const float *)b->p + (size_t)(n0 + s + j) * (size_t)b->ld + p0;
        uint16_t *d = dst + 2 * j;
        int64_t k = 0;
        for (; k + 1 < kc; k += 2) {
          d[(k >> 1) * 2 * nr] = f2bf(src[k]);
          d[(k >> 1) * 2 * nr + 1] = f2bf(src[k + 1]);
        }
        if (k < kc) {
          d[(k >> 1) * 2 * nr] = f2bf(src[k]);
          d[(k >> 1) * 2 * nr + 1] = 0;
        }
      }
    } else if (!b->trans && !b->bf16 && kn->pack_n_bf16 && !(kc & 1)) {
      kn->pack_n_bf16((const float *)b->p + (size_t)p0 * (size_t)b->ld + n0 + s, b->ld, (int)cols, kc, nr, dst);
    } else if (!b->trans && !b->bf16) {
      for (int64_t k = 0; k < kc; k++) {
        const float *src = (const float *)b->p + (size_t)(p0 + k) * (size_t)b->ld + n0 + s;
        uint16_t *d = dst + (k >> 1) * 2 * nr + (k & 1);
        for (int64_t j = 0; j < cols; j++) d[2 * j] = f2bf(src[j]);
      }
      if (kc & 1)
        for (int64_t j = 0; j < cols; j++) dst[(kc >> 1) * 2 * nr + 2 * j + 1] = 0;
    } else {
      for (int64_t k = 0; k < kc2; k++)
        for (int64_t j = 0; j < cols; j++)
          dst[(k >> 1) * 2 * nr + 2 * j + (k & 1)] = k < kc ? opnd_bf(b, p0 + k, n0 + s + j) : 0;
    }
    if (cols < nr)
      for (int64_t k = 0; k < kc2; k++)
        for (int64_t j = cols; j < nr; j++) dst[(k >> 1) * 2 * nr + 2 * j + (k & 1)] = 0;
    if (kcp > kc2) memset(dst + (size_t)kc2 * nr, 0, (size_t)(kcp - kc2) * nr * sizeof *dst);
  }
}

/* A sliver rows [mr][kcp] bf16 (AMX A tiles: k contiguous per row), the k
 * pad and the rows past m zero. Packed once per A panel and K block, reused
 * over all of N, so the strided (transposed) case may go element by element. */
static void pack_a_rows(const cpu_gemm_kern_t *kn, const gemm_opnd *a, int64_t i0, int64_t m,
                        int64_t p0, int64_t kc, int64_t kcp, int mr, uint16_t *dst) {
  for (int64_t s = 0; s < m; s += mr) {
    int64_t rows = m - s < mr ? m - s : mr;
    for (int64_t i = 0; i < mr; i++, dst += kcp) {
      if (i >= rows) {
        memset(dst, 0, (size_t)kcp * sizeof *dst);
        continue;
      }
      int64_t r = i0 + s + i;
      if (!a->trans && !a->bf16 && kn->cvt_row)
        kn->cvt_row((const float *)a->p + (size_t)r * (size_t)a->ld + p0, dst, kc);
      else if (!a->trans && a->bf16)
        memcpy(dst, (const uint16_t *)a->p + (size_t)r * (size_t)a->ld + p0, (size_t)kc * sizeof *dst);
      else
        for (int64_t k = 0; k < kc; k++) dst[k] = opnd_bf(a, r, p0 + k);
      if (kcp > kc) memset(dst + kc, 0, (size_t)(kcp - kc) * sizeof *dst);
    }
  }
}

/* ---- the driver ------------------------------------------------------------------- */

static void scale_c(int64_t M, int64_t N, float beta, float *C, int64_t ldc) {
  for (int64_t i = 0; i < M; i++) {
    float *c = C + (size_t)i * (size_t)ldc;
    if (beta == 0.0f)
      memset(c, 0, (size_t)N * sizeof(float));
    else if (beta != 1.0f)
      for (int64_t j = 0; j < N; j++) c[j] *= beta;
  }
}

/* No workspace: a plain loop (ikj), rounding to bf16 when asked. */
static void gemm_fallback(int64_t M, int64_t N, int64_t K, float alpha, const gemm_opnd *a,
                          const gemm_opnd *b, int round, float beta, float *C, int64_t ldc) {
  for (int64_t i = 0; i < M; i++) {
    float *c = C + (size_t)i * (size_t)ldc;
    for (int64_t j = 0; j < N; j++) c[j] = beta == 0.0f ? 0.0f : beta * c[j];
    for (int64_t k = 0; k < K; k++) {
      float av = opnd_at(a, i, k);
      if (round) av = cpu_round_bf16(av);
      av *= alpha;
      for (int64_t j = 0; j < N; j++) {
        float bv = opnd_at(b, k, j);
        c[j] += av * (round ? cpu_round_bf16(bv) : bv);
      }
    }
  }
}

static int gemm_run(const cpu_gemm_kern_t *kn, int round, int64_t M, int64_t N, int64_t K,
                    float alpha, const gemm_opnd *a, const gemm_opnd *b, float beta, float *C,
                    int64_t ldc) {
  if (M <= 0 || N <= 0) return 0;
  if (K <= 0 || alpha == 0.0f) {
    scale_c(M, N, beta, C, ldc);
    return 0;
  }
  char *ws = ws_get();
  if (!ws) {
    gemm_fallback(M, N, K, alpha, a, b, round || kn->bf16, beta, C, ldc);
    return 1;
  }
  if (kn->begin) kn->begin();
  const int mr = kn->mr, nr = kn->nr, bf = kn->bf16;
  const int64_t kpad = kn->kpad ? kn->kpad : bf ? 2 : 1;
  const size_t es = bf ? 2 : 4;
  /* Small problems: blocks no larger than the problem (rounded to tiles). */
  int64_t mb = kn->mb / mr * mr, nb = kn->nb / nr * nr, kcb = kn->kc;
  /* A panels of even size (each one re-packs the B blocks: no ragged last
   * panel of a few rows), B blocks no wider than N. */
  int64_t nmb = (M + mb - 1) / mb;
  mb = ((M + nmb - 1) / nmb + mr - 1) / mr * mr;
  if (N < nb) nb = (N + nr - 1) / nr * nr;
  /* Even K blocks, spread evenly: no ragged last block of a few k. */
  int64_t nkb = (K + kcb - 1) / kcb;
  kcb = (K + nkb - 1) / nkb;
  kcb = (kcb + 1) & ~(int64_t)1;
  if (kcb > kn->kc) kcb = kn->kc;
  char *Ap = ws;
  char *Bp = Ap + (((size_t)kn->mb * (size_t)kn->kc * es + 63) & ~(size_t)63);
  float *tmp = (float *)(Bp + (((size_t)kn->kc * (size_t)kn->nb * es + 63) & ~(size_t)63));
  /* f32 A row-major: whole slivers straight from A (no copy), only a last
   * partial sliver packed (into the start of Ap). */
  const int direct = kn->tile_da && !bf && !round && !a->trans && !a->bf16;
  for (int64_t p0 = 0; p0 < K; p0 += kcb) {
    int64_t kc = K - p0 < kcb ? K - p0 : kcb;
    int64_t kcp = (kc + kpad - 1) / kpad * kpad; /* packed depth */
    float bt = p0 == 0 ? beta : 1.0f;
    for (int64_t i0 = 0; i0 < M; i0 += mb) {
      int64_t m = M - i0 < mb ? M - i0 : mb;
      int64_t mfull = m / mr * mr; /* rows in whole slivers */
      if (direct) {
        if (mfull < m) pack_a_f32(kn, a, i0 + mfull, m - mfull, p0, kc, mr, 0, (float *)Ap);
      } else if (bf && kn->a_rows)
        pack_a_rows(kn, a, i0, m, p0, kc, kcp, mr, (uint16_t *)Ap);
      else if (bf)
        pack_a_bf16(kn, a, i0, m, p0, kc, mr, (uint16_t *)Ap);
      else
        pack_a_f32(kn, a, i0, m, p0, kc, mr, round, (float *)Ap);
      for (int64_t n0 = 0; n0 < N; n0 += nb) {
        int64_t n = N - n0 < nb ? N - n0 : nb;
        if (bf)
          pack_b_bf16(kn, b, p0, kc, kcp, n0, n, nr, (uint16_t *)Bp);
        else
          pack_b_f32(kn, b, p0, kc, n0, n, nr, round, (float *)Bp);
        for (int64_t ir = 0; ir < m; ir += mr) {
          const char *as = Ap + (direct ? 0 : (size_t)(ir / mr) * (size_t)kcp * mr * es);
          int64_t rows = m - ir < mr ? m - ir : mr;
          const float *ad = direct && rows == mr
                                ? (const float *)a->p + (size_t)(i0 + ir) * (size_t)a->ld + p0
                                : NULL;
          for (int64_t jr = 0; jr < n; jr += nr) {
            const char *bs = Bp + (size_t)(jr / nr) * (size_t)kcp * nr * es;
            int64_t cols = n - jr < nr ? n - jr : nr;
            float *c = C + (size_t)(i0 + ir) * (size_t)ldc + n0 + jr;
            if (rows == mr && cols == nr) {
              if (ad)
                kn->tile_da(kcp, ad, a->ld, bs, c, ldc, alpha, bt);
              else
                kn->tile(kcp, as, bs, c, ldc, alpha, bt);
              continue;
            }
            if (ad)
              kn->tile_da(kcp, ad, a->ld, bs, tmp, nr, alpha, 0.0f);
            else
              kn->tile(kcp, as, bs, tmp, nr, alpha, 0.0f);
            for (int64_t i = 0; i < rows; i++) {
              float *cr = c + (size_t)i * (size_t)ldc;
              const float *t = tmp + i * nr;
              if (bt == 0.0f)
                for (int64_t j = 0; j < cols; j++) cr[j] = t[j];
              else
                for (int64_t j = 0; j < cols; j++) cr[j] = t[j] + bt * cr[j];
            }
          }
        }
      }
    }
  }
  if (kn->end) kn->end();
  return 0;
}

/* ---- dispatch ---------------------------------------------------------------------- */

static const cpu_gemm_kern_t *kern_f32(cpu_isa_t isa) {
#if defined(__x86_64__)
  switch (cpu_isa_kernel(isa)) {
  case CPU_ISA_AVX2: return &cpu_gemm_kern_avx2;
  case CPU_ISA_AVX512:
  case CPU_ISA_AVX512BF16:
  case CPU_ISA_AMX: return &cpu_gemm_kern_avx512;
  default: break;
  }
#endif
  (void)isa;
  return &cpu_gemm_kern_portable;
}

static const cpu_gemm_kern_t *kern_bf16(cpu_isa_t isa) {
#if defined(__x86_64__)
  if (cpu_isa_kernel(isa) == CPU_ISA_AMX) return &cpu_gemm_kern_amx;
  if (cpu_isa_kernel(isa) == CPU_ISA_AVX512BF16) return &cpu_gemm_kern_avx512bf16;
#endif
  return NULL;
}

/* Never run a path above what the CPU has. */
static cpu_isa_t clamp_isa(cpu_isa_t isa) {
  cpu_isa_t best = cpu_isa_best();
  return isa > best ? best : isa;
}

int cpu_sgemm_isa(cpu_isa_t isa, int transA, int transB, int64_t M, int64_t N, int64_t K,
                  float alpha, const float *A, int64_t lda, const float *B, int64_t ldb,
                  float beta, float *C, int64_t ldc) {
  gemm_opnd a = {A, lda, transA, 0}, b = {B, ldb, transB, 0};
  return gemm_run(kern_f32(clamp_isa(isa)), 0, M, N, K, alpha, &a, &b, beta, C, ldc);
}

int cpu_gemm_bf16_isa(cpu_isa_t isa, int transA, int transB, int64_t M, int64_t N, int64_t K,
                      float alpha, const void *A, int a_type, int64_t lda, const void *B,
                      int b_type, int64_t ldb, float beta, float *C, int64_t ldc) {
  gemm_opnd a = {A, lda, transA, a_type == CPU_GEMM_BF16},
            b = {B, ldb, transB, b_type == CPU_GEMM_BF16};
  isa = clamp_isa(isa);
  const cpu_gemm_kern_t *k = kern_bf16(isa);
  if (k) return gemm_run(k, 0, M, N, K, alpha, &a, &b, beta, C, ldc);
  return gemm_run(kern_f32(isa), 1, M, N, K, alpha, &a, &b, beta, C, ldc);
}

int cpu_sgemm(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha,
              const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
              int64_t ldc) {
  return cpu_sgemm_isa(cpu_isa(), transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

int cpu_gemm_bf16(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha,
                  const void *A, int a_type, int64_t lda, const void *B, int b_type, int64_t ldb,
                  float beta, float *C, int64_t ldc) {
  return cpu_gemm_bf16_isa(cpu_isa(), transA, transB, M, N, K, alpha, A, a_type, lda, B, b_type,
                           ldb, beta, C, ldc);
}

int cpu_sgemm_bf16(int transA, int transB, int64_t M, int64_t N, int64_t K, float alpha,
                   const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                   int64_t ldc) {
  return cpu_gemm_bf16(transA, transB, M, N, K, alpha, A, CPU_GEMM_F32, lda, B, CPU_GEMM_F32, ldb,
                       beta, C, ldc);
}
