/* plugin.c - the quant-basic plugin: f16, bf16, int16 and int8 (per-row
 * symmetric absmax) as quantisers (plugin ABI 2, quantiser kind 2), with the
 * fused CPU kernels of lk.quant.cpu/1 (qb.h says the formats exactly).
 *
 * GGUF type ids. f16 and bf16 are GGML types 1 and 30, and their part 0 is
 * byte for byte a GGUF F16/BF16 tensor, so they say so. That does not take
 * plain F16/BF16 tensors away from the GGUF loader: its type lookup
 * (gguf_type_get) answers from its own plain-type table first and asks
 * find_quantiser_gguf only for ids not in it, so such tensors still read as
 * LK_DTYPE_F16/BF16 (tests/test_quant_basic.c checks it with this plugin
 * loaded). int8/int16 are -1: GGUF's I8/I16 are unscaled integers, not
 * these row-scaled codes.
 *
 * Non-finite input (defined behaviour):
 *   f16, bf16  converted as IEEE does: NaN stays NaN (made quiet; bf16 keeps
 *              the top payload bits), +-Inf stays +-Inf, a finite value
 *              beyond the f16 range (|x| >= 65520) becomes +-Inf;
 *   int8/int16 refused with LK_ERR_INVALID_ARG naming the row and column of
 *              the first NaN or Inf (in row-major order), checked before any
 *              byte is written: a row's absmax would be Inf or NaN and every
 *              code in it meaningless.
 *
 * Options: these formats have no blocks and no second-level scales, so
 * block_size (other than 0, the default, or 1, its value), double_quant and
 * dq_block_size are refused naming the option. */
#include "qb.h"

#include "lk_half.h"
#include "plugin_refs.h"

#include <cpuid.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>

typedef struct qb_format {
  int fmt; /* QB_* */
  const lk_quantiser_vt_t *vt;
} qb_format;

static const lk_quantiser_vt_t qb_vts[QB_N];
static const qb_format qb_fmts[QB_N] = {
    {QB_F16, &qb_vts[QB_F16]}, {QB_BF16, &qb_vts[QB_BF16]}, {QB_INT16, &qb_vts[QB_INT16]}, {QB_INT8, &qb_vts[QB_INT8]}};

static int32_t qb_fail(lk_error_t *err, int32_t code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int32_t qb_fail(lk_error_t *err, int32_t code, const char *fmt, ...) {
  if (err && err->struct_size >= LK_MIN_SIZE_ERROR) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    err->code = code;
  }
  return code;
}

static int qb_scaled(int fmt) { return fmt == QB_INT8 || fmt == QB_INT16; }

/* ---- instances -------------------------------------------------------------- */

static int32_t qb_create(const qb_format *f, const lk_quant_opts_t *opts, void **out_self, lk_error_t *err) {
  const char *name = f->vt->name;
  if (!out_self) return qb_fail(err, LK_ERR_INVALID_ARG, "%s: create: NULL out_self", name);
  *out_self = NULL;
  if (opts) {
    if (opts->struct_size < LK_MIN_SIZE_QUANT_OPTS)
      return qb_fail(err, LK_ERR_ABI, "%s: lk_quant_opts_t struct_size %u is below its minimum %zu", name,
                     opts->struct_size, (size_t)LK_MIN_SIZE_QUANT_OPTS);
    if (opts->block_size > 1)
      return qb_fail(err, LK_ERR_INVALID_ARG,
                     "%s: block_size %u is not an option of this format (%s; leave block_size 0)", name,
                     opts->block_size,
                     qb_scaled(f->fmt) ? "it scales whole rows by their absmax, it has no blocks"
                                       : "it stores each element on its own, it has no blocks");
    if (opts->double_quant)
      return qb_fail(err, LK_ERR_INVALID_ARG, "%s: double_quant is not part of the format (%s)", name,
                     qb_scaled(f->fmt) ? "its row scales are kept in f32" : "it has no scales");
    if (opts->dq_block_size)
      return qb_fail(err, LK_ERR_INVALID_ARG, "%s: dq_block_size %u given, but the format has no double quantisation",
                     name, opts->dq_block_size);
  }
  *out_self = (void *)(uintptr_t)f;
  return LK_OK;
}

static void qb_destroy(void *self) { (void)self; /* the table entry is static */ }

static uint32_t qb_part_count(void *self) { return qb_scaled(((const qb_format *)self)->fmt) ? 2u : 1u; }

static uint64_t qb_row_bytes(void *self, int64_t ncols) {
  const qb_format *f = self;
  uint64_t bytes;
  if (!f || ncols < 0 || __builtin_mul_overflow((uint64_t)ncols, (uint64_t)qb_esize(f->fmt), &bytes)) return 0;
  return bytes;
}

static int32_t qb_part_info(void *self, uint32_t index, int64_t nrows, int64_t ncols, lk_quant_part_t *out,
                            lk_error_t *err) {
  const qb_format *f = self;
  const char *name = f->vt->name;
  if (!out) return qb_fail(err, LK_ERR_INVALID_ARG, "%s: part_info: NULL out", name);
  if (index >= qb_part_count(self))
    return qb_fail(err, LK_ERR_NOT_FOUND, "%s: part %u: the format has %u part(s)", name, index, qb_part_count(self));
  if (nrows < 0 || ncols < 0)
    return qb_fail(err, LK_ERR_SHAPE, "%s: a [%lld, %lld] tensor has a negative dimension", name, (long long)nrows,
                   (long long)ncols);
  uint64_t bytes, row = qb_row_bytes(self, ncols);
  if (index == 1) { /* the row scales */
    if (__builtin_mul_overflow((uint64_t)nrows, (uint64_t)4, &bytes))
      return qb_fail(err, LK_ERR_SHAPE, "%s: %lld rows overflow 64-bit byte sizes", name, (long long)nrows);
    out->struct_size = sizeof *out;
    out->dtype = LK_DTYPE_F32;
    out->name = "scales";
    out->nbytes = bytes;
    return LK_OK;
  }
  if ((ncols > 0 && row == 0) || __builtin_mul_overflow(row, (uint64_t)nrows, &bytes))
    return qb_fail(err, LK_ERR_SHAPE, "%s: a [%lld, %lld] tensor overflows 64-bit byte sizes", name,
                   (long long)nrows, (long long)ncols);
  static const int32_t dtypes[QB_N] = {LK_DTYPE_F16, LK_DTYPE_BF16, LK_DTYPE_I16, LK_DTYPE_I8};
  out->struct_size = sizeof *out;
  out->dtype = dtypes[f->fmt];
  out->name = "blocks";
  out->nbytes = bytes;
  return LK_OK;
}

/* ---- quantise and dequantise ----------------------------------------------------- */

static void qb_put16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
}

/* One row of a scaled format: absmax in f32 (exact: a max of f32 values),
 * codes round(w * qmax / absmax) computed in double (w * qmax / absmax is
 * then correctly rounded before rint, so multiples of the step come back
 * exactly), ties to even as torch.round in bitsandbytes' quantiser. */
static void qb_quant_row(int fmt, const float *w, int64_t ncols, uint8_t *out, float *scale) {
  float amax = 0.0f;
  for (int64_t k = 0; k < ncols; k++) amax = fmaxf(amax, fabsf(w[k]));
  *scale = amax;
  double qmax = qb_qmax(fmt), inv = amax > 0.0f ? qmax / (double)amax : 0.0;
  for (int64_t k = 0; k < ncols; k++) {
    double q = rint((double)w[k] * inv);
    if (q > qmax) q = qmax; /* cannot happen (|w| <= amax), kept for safety */
    if (q < -qmax) q = -qmax;
    if (fmt == QB_INT8)
      out[k] = (uint8_t)(int8_t)q;
    else
      qb_put16(out + 2 * k, (uint16_t)(int16_t)q);
  }
}

static int32_t qb_quantize(void *self, const float *src, int64_t nrows, int64_t ncols, void *const *parts,
                           lk_error_t *err) {
  const qb_format *f = self;
  const char *name = f->vt->name;
  if (nrows < 0 || ncols < 0)
    return qb_fail(err, LK_ERR_SHAPE, "%s: quantize: shape [%lld, %lld]", name, (long long)nrows, (long long)ncols);
  if (!nrows || !ncols) return LK_OK;
  if (!src || !parts || !parts[0] || (qb_scaled(f->fmt) && !parts[1]))
    return qb_fail(err, LK_ERR_INVALID_ARG, "%s: quantize: NULL source or part", name);
  uint8_t *o = parts[0];
  if (!qb_scaled(f->fmt)) {
    uint64_t n = (uint64_t)nrows * (uint64_t)ncols;
    for (uint64_t i = 0; i < n; i++)
      qb_put16(o + 2 * i, f->fmt == QB_F16 ? lk_half_from_f32(src[i]) : lk_half_bf16_from_f32(src[i]));
    return LK_OK;
  }
  /* Every value checked before the first byte is written. */
  for (int64_t r = 0; r < nrows; r++)
    for (int64_t k = 0; k < ncols; k++) {
      float v = src[r * ncols + k];
      if (!isfinite(v))
        return qb_fail(err, LK_ERR_INVALID_ARG,
                       "%s: the input has %s at row %lld, column %lld: per-row absmax scaling needs finite "
                       "values (nothing was written)",
                       name, isnan(v) ? "NaN" : v > 0 ? "+Inf" : "-Inf", (long long)r, (long long)k);
    }
  float *scales = parts[1];
  uint64_t rb = (uint64_t)ncols * qb_esize(f->fmt);
  for (int64_t r = 0; r < nrows; r++) qb_quant_row(f->fmt, src + r * ncols, ncols, o + (uint64_t)r * rb, &scales[r]);
  return LK_OK;
}

static const lk_quant_ext_cpu_t qb_ext_cpu;

/* The dequantise: q * d (qb.h), on the vectorised rows. */
static int32_t qb_dequantize(void *self, const void *const *parts, int64_t row0, int64_t nrows, int64_t ncols,
                             float *dst, lk_error_t *err) {
  const qb_format *f = self;
  const char *name = f->vt->name;
  if (row0 < 0 || nrows < 0 || ncols < 0)
    return qb_fail(err, LK_ERR_SHAPE, "%s: dequantize: rows %lld + %lld of %lld columns", name, (long long)row0,
                   (long long)nrows, (long long)ncols);
  if (!nrows || !ncols) return LK_OK;
  if (!dst || !parts || !parts[0] || (qb_scaled(f->fmt) && !parts[1]))
    return qb_fail(err, LK_ERR_INVALID_ARG, "%s: dequantize: NULL destination or part", name);
  /* the widest path this CPU has: bit-exact with the portable loop
   * (test_quant_basic checks every path against it) */
  qb_ext_cpu.dequant_rows(self, parts, ncols, row0, nrows, dst, ncols, LK_CPU_ISA_AMX);
  return LK_OK;
}

/* ---- lk.quant.cpu/1: the best path at or below the backend's isa ------------------ */

/* F16C from CPUID leaf 1 (ECX bit 29): clang's __builtin_cpu_supports does
 * not know "f16c". AVX2's own check already covers the OS saving YMM state. */
static int qb_has_f16c(void) {
  unsigned a, b, c, d;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
}

static int qb_path(int32_t isa) {
  static int have = -1; /* racing first calls compute the same value */
  int h = __atomic_load_n(&have, __ATOMIC_RELAXED);
  if (h < 0) {
    __builtin_cpu_init();
    h = LK_CPU_ISA_PORTABLE;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && qb_has_f16c()) {
      h = LK_CPU_ISA_AVX2;
      if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
          __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        h = LK_CPU_ISA_AVX512;
    }
    __atomic_store_n(&have, h, __ATOMIC_RELAXED);
  }
  return isa < h ? (isa < 0 ? LK_CPU_ISA_PORTABLE : isa) : h;
}

static void qb_ext_nt(void *self, const void *const *parts, int64_t ncols, int64_t row0, int64_t nrows,
                      const float *x, int64_t ldx, int64_t m, float *y, int64_t ldy, int32_t isa) {
  int fmt = ((const qb_format *)self)->fmt;
  switch (qb_path(isa)) {
  case LK_CPU_ISA_PORTABLE: qb_matmul_nt_portable(fmt, parts, ncols, row0, nrows, x, ldx, m, y, ldy); break;
  case LK_CPU_ISA_AVX2: qb_matmul_nt_avx2(fmt, parts, ncols, row0, nrows, x, ldx, m, y, ldy); break;
  default: qb_matmul_nt_avx512(fmt, parts, ncols, row0, nrows, x, ldx, m, y, ldy); break;
  }
}

static void qb_ext_nn(void *self, const void *const *parts, int64_t ncols, int64_t row0, int64_t nrows,
                      int64_t col0, int64_t cols, const float *dy, int64_t lddy, int64_t m, float *dx, int64_t lddx,
                      int32_t isa) {
  int fmt = ((const qb_format *)self)->fmt;
  switch (qb_path(isa)) {
  case LK_CPU_ISA_PORTABLE:
    qb_matmul_nn_portable(fmt, parts, ncols, row0, nrows, col0, cols, dy, lddy, m, dx, lddx);
    break;
  case LK_CPU_ISA_AVX2: qb_matmul_nn_avx2(fmt, parts, ncols, row0, nrows, col0, cols, dy, lddy, m, dx, lddx); break;
  default: qb_matmul_nn_avx512(fmt, parts, ncols, row0, nrows, col0, cols, dy, lddy, m, dx, lddx); break;
  }
}

static void qb_ext_dq(void *self, const void *const *parts, int64_t ncols, int64_t row0, int64_t nrows, float *dst,
                      int64_t ld, int32_t isa) {
  int fmt = ((const qb_format *)self)->fmt;
  switch (qb_path(isa)) {
  case LK_CPU_ISA_PORTABLE: qb_dequant_rows_portable(fmt, parts, ncols, row0, nrows, dst, ld); break;
  case LK_CPU_ISA_AVX2: qb_dequant_rows_avx2(fmt, parts, ncols, row0, nrows, dst, ld); break;
  default: qb_dequant_rows_avx512(fmt, parts, ncols, row0, nrows, dst, ld); break;
  }
}

static const lk_quant_ext_cpu_t qb_ext_cpu = {sizeof(lk_quant_ext_cpu_t), LK_CPU_ISA_AVX512, qb_ext_nt, qb_ext_nn,
                                              qb_ext_dq};

static const void *qb_get_extension(void *self, const char *id) {
  (void)self;
  return id && !strcmp(id, LK_QUANT_EXT_CPU) ? &qb_ext_cpu : NULL;
}

/* ---- vtables ------------------------------------------------------------------------ */

#define QB_CREATE(ID)                                                                           \
  static int32_t qb_create_##ID(const lk_quant_opts_t *opts, void **out_self, lk_error_t *err) { \
    return qb_create(&qb_fmts[QB_##ID], opts, out_self, err);                                   \
  }
QB_CREATE(F16)
QB_CREATE(BF16)
QB_CREATE(INT16)
QB_CREATE(INT8)

#define QB_VT(ID, NAME, DESC, GGUF, BYTES)                                                                    \
  [QB_##ID] = {sizeof(lk_quantiser_vt_t), 0,           NAME,          DESC,         GGUF,          1, BYTES, 0, \
               NULL,                      qb_create_##ID, qb_destroy, qb_part_count, qb_part_info, qb_row_bytes, \
               qb_quantize,               qb_dequantize, qb_get_extension}
static const lk_quantiser_vt_t qb_vts[QB_N] = {
    QB_VT(F16, "f16", "IEEE binary16, round to nearest even (GGUF F16)", 1, 2),
    QB_VT(BF16, "bf16", "bfloat16, round to nearest even (GGUF BF16)", 30, 2),
    QB_VT(INT16, "int16", "int16 per-row symmetric absmax: int16 codes and f32 row absmax", -1, 2),
    QB_VT(INT8, "int8", "int8 per-row symmetric absmax (bitsandbytes LLM.int8 weight + SCB)", -1, 1),
};

/* ---- the plugin ---------------------------------------------------------------- */

static plug_refs qb_refs = PLUG_REFS_INITIALIZER;

static uint32_t qb_factory_count(void) { return QB_N; }

static const lk_quantiser_vt_t *qb_factory_get(uint32_t index) { return index < QB_N ? &qb_vts[index] : NULL; }

static const lk_quantiser_factory_t qb_factory = {sizeof(lk_quantiser_factory_t), qb_factory_count, qb_factory_get};

/* Nothing of the host is needed: the count keeps init/fini reference-counted. */
static int32_t qb_init(const lk_host_api_t *host, lk_error_t *err) {
  if (!host) return qb_fail(err, LK_ERR_INVALID_ARG, "%s init: NULL host table", QB_PLUGIN_ID);
  plug_refs_acquire(&qb_refs, host);
  return LK_OK;
}

static void qb_fini(void) { plug_refs_release(&qb_refs); }

static const void *qb_get_factory(const char *factory_id) {
  if (factory_id && !strcmp(factory_id, LK_FACTORY_QUANTISER)) return &qb_factory;
  return NULL;
}

static const lk_plugin_t qb_plugin = {
    sizeof(lk_plugin_t),
    LK_PLUGIN_ABI_VERSION,
    QB_PLUGIN_ID,
    "lorakit basic quantisers",
    "1.0.0",
    "f16, bf16 (round to nearest even), int16 and int8 (per-row symmetric absmax, bitsandbytes LLM.int8 layout), "
    "with fused CPU kernels (portable, AVX2, AVX-512)",
    qb_init,
    qb_fini,
    qb_get_factory,
};

LK_PLUGIN_EXPORT int32_t lk_plugin_entry(uint32_t *abi_in_out, const lk_host_api_t *host, const lk_plugin_t **out) {
  (void)host; /* kept at init */
  int32_t rc = lk_plugin_negotiate(abi_in_out);
  if (rc != LK_OK) return rc;
  if (!out) return LK_ERR_INVALID_ARG;
  *out = &qb_plugin;
  return LK_OK;
}
