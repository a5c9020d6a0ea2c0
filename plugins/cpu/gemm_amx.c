/* gemm_amx.c - the AMX-BF16 micro-kernel, 32 x 32: four 16 x 16 f32
 * accumulator tiles (tmm0..3), two A tiles of 16 rows x 32 bf16 of k (tmm4,
 * tmm5) and two B tiles of 16 k-pairs x 16 columns (tmm6, tmm7) per step of
 * 32 k; tdpbf16ps adds each pair's two products in f32, as vdpbf16ps does.
 * Built with -mavx512bf16 -mamx-tile -mamx-bf16 (this file only), called
 * only when isa.c found AMX-TILE/AMX-BF16, the OS's tile state in XCR0, and
 * Linux granted this process XTILEDATA (arch_prctl, isa.c).
 *
 * Panels (gemm.c packs them; gemm_kern.h): the A sliver is row-major bf16,
 * [32][kcp] (a tile row is 32 consecutive k of one row of A), the B sliver
 * the VNNI pair layout [kcp/2][32][2] the AVX-512 BF16 kernel uses too (a
 * tile row is one k-pair of 16 columns: 64 bytes, row stride 128). kcp is a
 * multiple of 32 (kpad): gemm.c zero-pads the K tail, and the M and N tails
 * run as whole tiles into a scratch C, so no tile is ever configured short.
 * The tile configuration is loaded once per GEMM call (begin) and released
 * at its end (end), so the thread's tile state is back in its init state for
 * any other code (and a small XSAVE area) between calls. */
#include "gemm_kern.h"

#include <immintrin.h>
#include <string.h>

#define MR 32
#define NR 32
#define KSTEP 32 /* k per tile step: 16 pairs = 64 bytes of a tile row */

/* The LDTILECFG operand: palette 1, every tile 16 rows x 64 bytes. */
typedef struct amx_cfg {
  uint8_t palette, start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
} amx_cfg;

/* A static constant, not a local: GCC 12's _tile_loadconfig tells the
 * compiler it reads only 8 bytes of its operand, so the stores filling a local
 * configuration's colsb/rows were dropped as dead (seen: every tile 0 rows,
 * #UD at the first tile instruction). */
static const amx_cfg amx_config __attribute__((aligned(64))) = {
    .palette = 1,
    .colsb = {64, 64, 64, 64, 64, 64, 64, 64},
    .rows = {16, 16, 16, 16, 16, 16, 16, 16},
};

static void amx_begin(void) { _tile_loadconfig(&amx_config); }

static void amx_end(void) { _tile_release(); }

static void tile_amx(int64_t kc, const void *Ap_, const void *Bp_, float *C, int64_t ldc,
                     float alpha, float beta) {
  const char *Ap = Ap_, *Bp = Bp_;
  const int64_t sa = kc * 2;         /* bytes per A row */
  const int64_t sb = NR * 4;         /* bytes per B k-pair row */
  float acc[MR][NR] __attribute__((aligned(64)));
  const int64_t sc = ldc * 4; /* bytes per C row */
  /* alpha 1 (the common case): C goes through the tiles themselves, loaded
   * when beta is 1 (a later K block), stored straight back; no scratch. */
  const int direct = alpha == 1.0f && (beta == 0.0f || beta == 1.0f);
  if (direct && beta == 1.0f) {
    _tile_loadd(0, C, sc);
    _tile_loadd(1, C + 16, sc);
    _tile_loadd(2, C + 16 * ldc, sc);
    _tile_loadd(3, C + 16 * ldc + 16, sc);
  } else {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  }
  for (int64_t k = 0; k < kc; k += KSTEP) {
    const char *a = Ap + k * 2, *b = Bp + (k / 2) * sb;
    _tile_loadd(4, a, sa);
    _tile_loadd(6, b, sb);
    _tile_loadd(7, b + 64, sb);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_loadd(5, a + 16 * sa, sa);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  if (direct) {
    _tile_stored(0, C, sc);
    _tile_stored(1, C + 16, sc);
    _tile_stored(2, C + 16 * ldc, sc);
    _tile_stored(3, C + 16 * ldc + 16, sc);
    return;
  }
  _tile_stored(0, &acc[0][0], NR * 4);
  _tile_stored(1, &acc[0][16], NR * 4);
  _tile_stored(2, &acc[16][0], NR * 4);
  _tile_stored(3, &acc[16][16], NR * 4);
  __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  for (int i = 0; i < MR; i++)
    for (int v = 0; v < NR / 16; v++) {
      float *c = C + i * ldc + 16 * v;
      __m512 r = _mm512_mul_ps(va, _mm512_load_ps(&acc[i][16 * v]));
      if (beta != 0.0f) r = _mm512_fmadd_ps(vb, _mm512_loadu_ps(c), r);
      _mm512_storeu_ps(c, r);
    }
}

/* One row of A (f32, k contiguous) to bf16, nearest-even (vcvtne2ps2bf16). */
static void amx_cvt_row(const float *src, uint16_t *dst, int64_t n) {
  cpu_cvt_f32_bf16_avx512bf16(src, dst, n);
}

/* K block 512: each tile call runs 16 steps between its C loads and stores;
 * an A sliver (32 KiB) stays in L1 while the B slivers (32 KiB each) stream
 * from the B block in L2 (512 x 1024 bf16 = 1 MiB of the Xeons' 2 MiB). */
const cpu_gemm_kern_t cpu_gemm_kern_amx = {
    .name = "amx 32x32",
    .mr = MR,
    .nr = NR,
    .kc = 512,
    .mb = 64 * MR,
    .nb = 1024,
    .bf16 = 1,
    .tile = tile_amx,
    .pack_t_bf16 = cpu_gemm_pack_t_bf16,
    .pack_n_bf16 = cpu_gemm_pack_n_bf16,
    .kpad = KSTEP,
    .a_rows = 1,
    .cvt_row = amx_cvt_row,
    .begin = amx_begin,
    .end = amx_end,
};
