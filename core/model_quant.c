/* model_quant.c - quantising a whole model (lk_model_quantize) and merging
 * into a quantised base (lk__mq_merge_quant, called by model_ops.c).
 *
 * Which tensor gets which type follows llama.cpp's llama-quantize
 * (src/llama-quant.cpp, llama_tensor_get_type and tensor_type_fallback) for
 * the file types lorakit offers, so that a GGUF quantised here holds the
 * tensor bytes llama-quantize writes:
 *   - only tensors of 2+ dimensions whose name ends in "weight" (and not
 *     "_norm.weight") are quantised; the others are written as read;
 *   - output.weight (and token_embd when there is no output: tied
 *     embeddings) gets q8_0 when its rows do not divide into the main type's
 *     blocks, else q6_K unless the main type is q8_0;
 *   - the _m/_s/_l mixes raise attn_v, ffn_down and attn_output as
 *     llama_tensor_get_type_impl does; use_more_bits(i, n) picks the first
 *     eighth, the last eighth and every third layer in between;
 *   - a K type whose 256-element blocks do not divide a row falls back
 *     (q2_K/q3_K -> q4_0, q4_K -> q5_0, q5_K -> q5_1, q6_K -> q8_0; f16 when
 *     even that does not divide); other types have no fallback: refused.
 * Not modelled (no such model in lorakit's loaders yet): Falcon's and 70B
 * models' special cases, MoE (n_expert) rules, importance matrices, IQ types.
 * The layer of a tensor is read from its name (model.layers.N. / blk.N.),
 * which equals llama.cpp's counters for models with one attn_v and one
 * ffn_down per layer.
 *
 * A weight going to a quantised type with NaN or Inf in it is refused,
 * naming the tensor and element; f16/bf16/f32 outputs carry them.
 *
 * lorakit's own formats (int8, int16, nf4, fp4) put every quantisable
 * weight in that format, no mix, no fallback. f16/bf16/f32 convert the
 * quantisable weights as llama-quantize's F16/BF16/F32 file types do. */
#include "internal.h"

#include <fnmatch.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- file types ------------------------------------------------------------------------ */

enum { MQ_MIX_NONE, MQ_Q2_K, MQ_Q3_K_S, MQ_Q3_K_M, MQ_Q3_K_L, MQ_Q4_K_S, MQ_Q4_K_M, MQ_Q5_K_S, MQ_Q5_K_M };

typedef struct mq_ftype {
  const char *name;  /* what --to takes */
  const char *main;  /* the default tensor type: a quantiser name, or "f16"/"bf16"/"f32" */
  int ftype;         /* llama_ftype (general.file_type); -1: none (lorakit's own formats) */
  int mix;
  int own;           /* 1: a lorakit format, every weight alike */
} mq_ftype;

/* llama.h's llama_ftype numbers; "q3_k", "q4_k", "q5_k" are llama-quantize's
 * aliases of the _m mixes (its QUANT_OPTIONS). */
static const mq_ftype mq_ftypes[] = {
    {"q4_0", "q4_0", 2, MQ_MIX_NONE, 0},   {"q4_1", "q4_1", 3, MQ_MIX_NONE, 0},
    {"q5_0", "q5_0", 8, MQ_MIX_NONE, 0},   {"q5_1", "q5_1", 9, MQ_MIX_NONE, 0},
    {"q8_0", "q8_0", 7, MQ_MIX_NONE, 0},   {"q2_k", "q2_k", 10, MQ_Q2_K, 0},
    {"q3_k_s", "q3_k", 11, MQ_Q3_K_S, 0},  {"q3_k_m", "q3_k", 12, MQ_Q3_K_M, 0},
    {"q3_k", "q3_k", 12, MQ_Q3_K_M, 0},    {"q3_k_l", "q3_k", 13, MQ_Q3_K_L, 0},
    {"q4_k_s", "q4_k", 14, MQ_Q4_K_S, 0},  {"q4_k_m", "q4_k", 15, MQ_Q4_K_M, 0},
    {"q4_k", "q4_k", 15, MQ_Q4_K_M, 0},    {"q5_k_s", "q5_k", 16, MQ_Q5_K_S, 0},
    {"q5_k_m", "q5_k", 17, MQ_Q5_K_M, 0},  {"q5_k", "q5_k", 17, MQ_Q5_K_M, 0},
    {"q6_k", "q6_k", 18, MQ_MIX_NONE, 0},  {"f16", "f16", 1, MQ_MIX_NONE, 0},
    {"bf16", "bf16", 32, MQ_MIX_NONE, 0},  {"f32", "f32", 0, MQ_MIX_NONE, 0},
    {"int8", "int8", -1, MQ_MIX_NONE, 1},  {"int16", "int16", -1, MQ_MIX_NONE, 1},
    {"nf4", "nf4", -1, MQ_MIX_NONE, 1},    {"fp4", "fp4", -1, MQ_MIX_NONE, 1},
};
enum { MQ_N_FTYPES = sizeof mq_ftypes / sizeof mq_ftypes[0] };

static int32_t mq_float_dtype(const char *t) {
  return !strcmp(t, "f16") ? LK_DTYPE_F16 : !strcmp(t, "bf16") ? LK_DTYPE_BF16 : !strcmp(t, "f32") ? LK_DTYPE_F32 : 0;
}

/* Elements per block of the GGML block types (1 for the others). */
static int64_t mq_block(const char *t) {
  if (!strcmp(t, "q2_k") || !strcmp(t, "q3_k") || !strcmp(t, "q4_k") || !strcmp(t, "q5_k") || !strcmp(t, "q6_k"))
    return 256;
  if (!strcmp(t, "q4_0") || !strcmp(t, "q4_1") || !strcmp(t, "q5_0") || !strcmp(t, "q5_1") || !strcmp(t, "q8_0"))
    return 32;
  return 1;
}

/* ---- tensor categories (llama-quant.cpp tensor_get_category), HF or GGUF names ---------- */

enum { MQ_OTHER, MQ_TOKEN_EMBD, MQ_OUTPUT, MQ_ATTN_Q, MQ_ATTN_K, MQ_ATTN_V, MQ_ATTN_OUT, MQ_FFN_UP, MQ_FFN_GATE,
       MQ_FFN_DOWN };

static int mq_category(const char *n) {
  if (!strcmp(n, "lm_head.weight") || !strcmp(n, "output.weight")) return MQ_OUTPUT;
  if (!strcmp(n, "model.embed_tokens.weight") || !strcmp(n, "token_embd.weight")) return MQ_TOKEN_EMBD;
  static const struct {
    const char *sub;
    int cat;
  } m[] = {{"attn_qkv.weight", MQ_ATTN_V},        {"self_attn.qkv_proj.weight", MQ_ATTN_V},
           {"attn_v.weight", MQ_ATTN_V},          {"self_attn.v_proj.weight", MQ_ATTN_V},
           {"attn_k.weight", MQ_ATTN_K},          {"self_attn.k_proj.weight", MQ_ATTN_K},
           {"attn_q.weight", MQ_ATTN_Q},          {"self_attn.q_proj.weight", MQ_ATTN_Q},
           {"attn_output.weight", MQ_ATTN_OUT},   {"self_attn.o_proj.weight", MQ_ATTN_OUT},
           {"ffn_up", MQ_FFN_UP},                 {"mlp.up_proj", MQ_FFN_UP},
           {"ffn_gate", MQ_FFN_GATE},             {"mlp.gate_proj", MQ_FFN_GATE},
           {"ffn_down", MQ_FFN_DOWN},             {"mlp.down_proj", MQ_FFN_DOWN}};
  for (size_t i = 0; i < sizeof m / sizeof *m; i++)
    if (strstr(n, m[i].sub)) return m[i].cat;
  return MQ_OTHER;
}

/* The layer of "model.layers.N." / "blk.N.", or -1. */
static long mq_layer(const char *n) {
  const char *p = !strncmp(n, "model.layers.", 13) ? n + 13 : !strncmp(n, "blk.", 4) ? n + 4 : NULL;
  if (!p || *p < '0' || *p > '9') return -1;
  char *end;
  long l = strtol(p, &end, 10);
  return *end == '.' ? l : -1;
}

static int mq_allows_dtype(int32_t d) {
  return d == LK_DTYPE_F32 || d == LK_DTYPE_F16 || d == LK_DTYPE_BF16 || d == LK_DTYPE_F64;
}

/* llama-quant.cpp tensor_allows_quantization, for the tensors lorakit's loaders name. */
static int mq_allows(const lk_tensor_info_t *ti) {
  size_t len = strlen(ti->name);
  if (ti->ndim < 2 || len < 6 || strcmp(ti->name + len - 6, "weight")) return 0;
  if (strstr(ti->name, "_norm.weight")) return 0;
  return ti->dtype == LK_DTYPE_QUANT || mq_allows_dtype(ti->dtype);
}

static uint64_t mq_numel(const lk_tensor_info_t *ti) {
  uint64_t n = 1;
  for (uint32_t d = 0; d < ti->ndim; d++) n *= (uint64_t)ti->shape[d];
  return n;
}

static int mq_use_more_bits(long i, long n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

/* What llama.cpp needs to know of the whole model. */
typedef struct mq_model {
  long n_layer, n_gqa;
  int tied;            /* no output.weight: token_embd takes output's rule */
  long *wv_layer;      /* layer of each attn_v-like tensor, for its rank */
  long n_wv;
} mq_model;

/* The rank of an attn_v tensor in llama.cpp's order (by layer). */
static long mq_wv_rank(const mq_model *mm, long layer) {
  long r = 0;
  for (long i = 0; i < mm->n_wv; i++) r += mm->wv_layer[i] < layer;
  return r;
}

/* llama_tensor_get_type_impl + tensor_type_fallback for one tensor. NULL
 * with *why set when no type fits (a block type without a fallback). */
static const char *mq_pick(const mq_ftype *f, const mq_model *mm, const char *name, int64_t ncols,
                           const char **why) {
  const char *t = f->main;
  *why = NULL;
  if (f->own || mq_float_dtype(t)) return t; /* not ggml_is_quantized: no mix */
  int cat = mq_category(name);
  long il = mq_layer(name);
  int mix = f->mix;
  if (cat == MQ_OUTPUT || (mm->tied && cat == MQ_TOKEN_EMBD)) {
    if (ncols % mq_block(t)) t = "q8_0";
    else if (strcmp(t, "q8_0")) t = "q6_k";
  } else if (cat == MQ_ATTN_V) {
    long i = mq_wv_rank(mm, il), n = mm->n_wv;
    if (mix == MQ_Q2_K) t = mm->n_gqa >= 4 ? "q4_k" : "q3_k";
    else if (mix == MQ_Q3_K_M) t = i < 2 ? "q5_k" : "q4_k";
    else if (mix == MQ_Q3_K_L) t = "q5_k";
    else if ((mix == MQ_Q4_K_M || mix == MQ_Q5_K_M) && mq_use_more_bits(i, n)) t = "q6_k";
    else if (mix == MQ_Q4_K_S && i < 4) t = "q5_k";
  } else if (cat == MQ_FFN_DOWN) {
    long n = mm->n_layer;
    if (mix == MQ_Q2_K) t = "q3_k";
    else if (mix == MQ_Q3_K_M) t = il < n / 16 ? "q5_k" : "q4_k"; /* not Falcon: use_more_bits or not, q4_K */
    else if (mix == MQ_Q3_K_L) t = "q5_k";
    else if (mix == MQ_Q4_K_M) {
      if (mq_use_more_bits(il, n)) t = "q6_k";
    } else if (mix == MQ_Q5_K_M && mq_use_more_bits(il, n)) t = "q6_k";
    else if (mix == MQ_Q4_K_S && il < n / 8) t = "q5_k";
  } else if (cat == MQ_ATTN_OUT) {
    if (mix == MQ_Q2_K) t = "q3_k";
    else if (mix == MQ_Q3_K_M) t = "q4_k";
    else if (mix == MQ_Q3_K_L) t = "q5_k";
  }
  if (ncols % mq_block(t) == 0) return t;
  const char *fb = !strcmp(t, "q2_k") || !strcmp(t, "q3_k") ? "q4_0"
                   : !strcmp(t, "q4_k")                     ? "q5_0"
                   : !strcmp(t, "q5_k")                     ? "q5_1"
                   : !strcmp(t, "q6_k")                     ? "q8_0"
                                                            : NULL;
  if (!fb) {
    *why = t;
    return NULL;
  }
  return ncols % mq_block(fb) ? "f16" : fb;
}

/* ---- metadata: layer count and GQA factor ------------------------------------------------ */

static long mq_meta_int(json_t *root, const char *cfg_key, const char *kv_suffix) {
  json_t *v = json_object_get(json_object_get(root, "config"), cfg_key);
  if (json_is_integer(v)) return (long)json_integer_value(v);
  json_t *kv = json_object_get(json_object_get(root, "gguf"), "kv");
  const char *arch = json_string_value(json_object_get(kv, "general.architecture"));
  if (!arch) return -1;
  char key[256];
  snprintf(key, sizeof key, "%s.%s", arch, kv_suffix);
  v = json_object_get(kv, key);
  return json_is_integer(v) ? (long)json_integer_value(v) : -1;
}

/* ---- error figures ------------------------------------------------------------------------ */

/* acc: n, sum w^2, sum d^2, max |d|, bytes (before), bytes (after). */
static void mq_err(const float *w, const float *g, uint64_t n, double acc[4]) {
  for (uint64_t i = 0; i < n; i++) {
    double d = (double)g[i] - (double)w[i];
    acc[1] += (double)w[i] * (double)w[i];
    acc[2] += d * d;
    if (fabs(d) > acc[3] || d != d) acc[3] = fabs(d);
  }
  acc[0] += (double)n;
}

static void mq_fill_report(lk_quant_report_t *r, const double a[4]) {
  r->numel = (int64_t)a[0];
  r->rmse = a[0] > 0 ? sqrt(a[2] / a[0]) : 0;
  r->max_abs = a[3];
  r->snr_db = a[2] > 0 ? 10.0 * log10(a[1] / a[2]) : INFINITY;
}

void lk__mq_report_total(const double acc[5], lk_quant_report_fn report, void *user) {
  if (!report) return;
  lk_quant_report_t r;
  memset(&r, 0, sizeof r);
  r.struct_size = sizeof r;
  mq_fill_report(&r, acc);
  r.bytes_before = r.bytes_after = (uint64_t)acc[4];
  report(user, &r);
}

/* ---- one quantised tensor ------------------------------------------------------------------- */

/* The parts of a [nrows, ncols] tensor in fmt laid end to end in buf (NULL:
 * only the total in *total). */
static lk_status mq_layout(lk_context_t *ctx, const char *fmt, const lk_quant_opts_t *qo, int64_t nrows, int64_t ncols,
                           uint8_t *buf, void **ptr, uint64_t *bytes, uint32_t *np, uint64_t *total) {
  lk_quant_part_t parts[8];
  lk_status st = lk_quant_layout(ctx, fmt, qo, nrows, ncols, parts, 8, np);
  if (st) return st;
  if (*np > 8) return lk__fail(ctx, LK_ERR_UNSUPPORTED, "format %s has %u parts (at most 8 here)", fmt, *np);
  *total = 0;
  for (uint32_t i = 0; i < *np; i++) {
    if (ptr) ptr[i] = buf ? buf + *total : NULL;
    if (bytes) bytes[i] = parts[i].nbytes;
    *total += parts[i].nbytes;
  }
  return LK_OK;
}

/* Quantise src into a new buffer (*out, *nbytes) and dequantise it back
 * into back. */
static lk_status mq_quant_roundtrip(lk_context_t *ctx, const char *fmt, const lk_quant_opts_t *qo, const float *src,
                                    int64_t nrows, int64_t ncols, uint8_t *dst, float *back) {
  void *ptr[8];
  uint64_t bytes[8], total;
  uint32_t np;
  lk_status st = mq_layout(ctx, fmt, qo, nrows, ncols, dst, ptr, bytes, &np, &total);
  if (!st) st = lk_quantize(ctx, fmt, qo, src, nrows, ncols, ptr, bytes, np);
  if (!st) st = lk_dequantize(ctx, fmt, qo, (const void *const *)ptr, bytes, np, nrows, ncols, back);
  return st;
}

/* ctx's last error prefixed with "path: tensor NAME: ". */
static lk_status mq_name_fail(lk_context_t *ctx, lk_status st, const char *path, const char *name) {
  char msg[1024];
  snprintf(msg, sizeof msg, "%s", lk_last_error(ctx));
  return lk__fail(ctx, st, "%s: tensor %s: %s", path, name, msg);
}

lk_status lk__mq_merge_quant(lk_context_t *ctx, lk_backend_t *be, const lk_adapter_t *ad, uint32_t k, lk_tensor_t *W,
                             const char *wname, float scale, int undo, lk_quant_report_fn report, void *user,
                             double acc[5]) {
  int64_t ncols = W->shape[W->ndim - 1], nrows = ncols ? lk_tensor_numel(W) / ncols : 0;
  uint64_t n = (uint64_t)(nrows * ncols);
  float *f = malloc(n * sizeof(float) + 1), *g = malloc(n * sizeof(float) + 1);
  lk_status st = f && g ? LK_OK : lk__fail(ctx, LK_ERR_NOMEM, "%s: out of memory", wname);
  void *ptr[8];
  uint64_t bytes[8], total = 0;
  uint32_t np = 0;
  /* the parts as the file holds them, with the format's default options:
   * what lorakit's loaders read today (GGUF block types) */
  if (!st) st = mq_layout(ctx, W->qformat, NULL, nrows, ncols, W->data, ptr, bytes, &np, &total);
  if (!st && total != W->nbytes)
    st = lk__fail(ctx, LK_ERR_SHAPE, "%s: %llu bytes of %s, its layout takes %llu", wname,
                  (unsigned long long)W->nbytes, W->qformat, (unsigned long long)total);
  if (!st) st = lk_dequantize(ctx, W->qformat, NULL, (const void *const *)ptr, bytes, np, nrows, ncols, f);
  lk_tensor_t wf;
  if (!st) st = lk_tensor_init(&wf, LK_DTYPE_F32, 2, (int64_t[]){nrows, ncols}, f);
  if (!st) st = undo ? lk_unmerge(be, ad, k, &wf, scale) : lk_merge(be, ad, k, &wf, scale);
  if (!st) st = lk_quantize(ctx, W->qformat, NULL, f, nrows, ncols, ptr, bytes, np);
  if (!st) st = lk_dequantize(ctx, W->qformat, NULL, (const void *const *)ptr, bytes, np, nrows, ncols, g);
  if (st && st != LK_ERR_NOMEM) st = mq_name_fail(ctx, st, "requantising after the merge", wname);
  if (!st) {
    double a[4] = {0};
    mq_err(f, g, n, a);
    for (int i = 0; i < 3; i++) acc[i] += a[i];
    if (a[3] > acc[3]) acc[3] = a[3];
    acc[4] += (double)W->nbytes;
    if (report) {
      lk_quant_report_t r;
      memset(&r, 0, sizeof r);
      r.struct_size = sizeof r;
      r.name = wname;
      r.from = r.to = W->qformat;
      r.bytes_before = r.bytes_after = W->nbytes;
      mq_fill_report(&r, a);
      report(user, &r);
    }
  }
  free(f);
  free(g);
  return st;
}

/* ---- the whole model ------------------------------------------------------------------------- */

typedef struct mq_plan {
  const char *to;    /* type written: quantiser name, plain float name, or NULL (kept as read) */
  int32_t dtype;     /* LK_DTYPE_QUANT or a plain float; for kept: the source's */
  int main_opts;     /* 1: the caller's block/double-quant options apply */
  uint64_t bytes;    /* its size once written */
} mq_plan;

/* The llama.cpp name of a canonical llama-family name ("blk.0.ffn_down.weight"
 * for "model.layers.0.mlp.down_proj.weight"), so --keep takes either naming;
 * 0 when it has none. */
static int mq_gguf_name(const char *n, char *out, size_t cap) {
  static const char *const g[][2] = {{"model.embed_tokens.", "token_embd."}, {"model.norm.", "output_norm."},
                                     {"lm_head.", "output."}};
  static const char *const l[][2] = {{"input_layernorm.", "attn_norm."},      {"post_attention_layernorm.", "ffn_norm."},
                                     {"self_attn.q_proj.", "attn_q."},        {"self_attn.k_proj.", "attn_k."},
                                     {"self_attn.v_proj.", "attn_v."},        {"self_attn.o_proj.", "attn_output."},
                                     {"mlp.gate_proj.", "ffn_gate."},         {"mlp.up_proj.", "ffn_up."},
                                     {"mlp.down_proj.", "ffn_down."}};
  for (size_t i = 0; i < sizeof g / sizeof *g; i++)
    if (!strncmp(n, g[i][0], strlen(g[i][0])))
      return snprintf(out, cap, "%s%s", g[i][1], n + strlen(g[i][0])) < (int)cap;
  long layer = mq_layer(n);
  if (layer < 0 || strncmp(n, "model.layers.", 13)) return 0;
  const char *rest = strchr(n + 13, '.') + 1;
  for (size_t i = 0; i < sizeof l / sizeof *l; i++)
    if (!strncmp(rest, l[i][0], strlen(l[i][0])))
      return snprintf(out, cap, "blk.%ld.%s%s", layer, l[i][1], rest + strlen(l[i][0])) < (int)cap;
  return 0;
}

static int mq_keep(const char *keep, const char *name) {
  if (!keep) return 0;
  char gname[512];
  int has_g = mq_gguf_name(name, gname, sizeof gname);
  const char *p = keep;
  while (*p) {
    const char *c = strchr(p, ',');
    size_t len = c ? (size_t)(c - p) : strlen(p);
    char pat[512];
    if (len && len < sizeof pat) {
      memcpy(pat, p, len);
      pat[len] = 0;
      if (!fnmatch(pat, name, 0) || (has_g && !fnmatch(pat, gname, 0))) return 1;
    }
    if (!c) break;
    p = c + 1;
  }
  return 0;
}

static lk_status mq_unknown(lk_context_t *ctx, const char *to) {
  char list[512] = "";
  for (int i = 0; i < MQ_N_FTYPES; i++) {
    size_t u = strlen(list);
    snprintf(list + u, sizeof list - u, "%s%s", i ? ", " : "", mq_ftypes[i].name);
  }
  return lk__fail(ctx, LK_ERR_INVALID_ARG, "unknown quantisation type '%s' (valid: %s)", to ? to : "(none)", list);
}

/* Metadata for the output: a GGUF's general.file_type and
 * general.quantization_version as llama-quantize sets them. malloc'd. */
static char *mq_meta(json_t *root, const mq_ftype *f, int gguf, const lk_quant_opts_t *qo, const mq_plan *plan,
                     char *const *names, int64_t n) {
  /* lk_tensor_t (FROZEN) has no room for a format's options: the safetensors
   * writer takes each bitsandbytes 4-bit tensor's from metadata "bnb_quant"
   * (lorakit_plugin.h), so every nf4/fp4 tensor is listed there with the
   * options it was quantised with; the bnb_quant of the input (tensors
   * read as nf4 and kept) stays as read. */
  json_t *bq = json_object_get(root, "bnb_quant");
  for (int64_t i = 0; i < n; i++) {
    if (!plan[i].to || (strcmp(plan[i].to, "nf4") && strcmp(plan[i].to, "fp4"))) continue;
    if (!bq) {
      json_object_set_new(root, "bnb_quant", json_object());
      bq = json_object_get(root, "bnb_quant");
    }
    json_t *q = json_object();
    uint32_t bs = plan[i].main_opts && qo->block_size ? qo->block_size : 64;
    uint32_t dq = plan[i].main_opts ? qo->double_quant : 0;
    json_object_set_new(q, "block_size", json_integer(bs));
    json_object_set_new(q, "double_quant", json_boolean(dq));
    json_object_set_new(q, "dq_block_size", json_integer(plan[i].main_opts && qo->dq_block_size ? qo->dq_block_size : 256));
    json_object_set_new(bq, names[i], q);
  }
  json_t *g = json_object_get(root, "gguf");
  json_t *kv = json_object_get(g, "kv"), *ty = json_object_get(g, "kv_types");
  if (gguf && f->ftype >= 0 && json_is_object(kv)) {
    json_object_set_new(kv, "general.file_type", json_integer(f->ftype));
    json_object_set_new(kv, "general.quantization_version", json_integer(2));
    if (json_is_object(ty)) {
      json_object_set_new(ty, "general.file_type", json_string("u32"));
      json_object_set_new(ty, "general.quantization_version", json_string("u32"));
    }
  }
  return json_dumps(root, JSON_COMPACT);
}

typedef struct mq_run {
  lk_context_t *ctx;
  const char *in;
  lk_model_t *m;
  int64_t n;
  lk_tensor_info_t *ti;
  mq_plan *plan;
  lk_tensor_t *t;
  char **names;
} mq_run;

static void mq_run_free(mq_run *r) {
  for (int64_t i = 0; r->t && i < r->n; i++) free(r->t[i].data);
  for (int64_t i = 0; r->names && i < r->n; i++) free(r->names[i]);
  free(r->t);
  free(r->names);
  free(r->ti);
  free(r->plan);
}

/* Decide every tensor's type and check it can be written, before any work. */
static lk_status mq_plan_all(mq_run *r, const mq_ftype *f, const lk_quantize_opts_t *o, const lk_quant_opts_t *qo,
                             json_t *root, int gguf) {
  lk_context_t *ctx = r->ctx;
  mq_model mm = {0};
  mm.tied = 1;
  mm.wv_layer = calloc((size_t)r->n + 1, sizeof *mm.wv_layer);
  if (!mm.wv_layer) return lk__fail(ctx, LK_ERR_NOMEM, "%s: out of memory", r->in);
  long max_layer = -1, n_down = 0;
  for (int64_t i = 0; i < r->n; i++) {
    int c = mq_category(r->ti[i].name);
    if (c == MQ_OUTPUT) mm.tied = 0;
    if (c == MQ_ATTN_V) mm.wv_layer[mm.n_wv++] = mq_layer(r->ti[i].name);
    if (c == MQ_FFN_DOWN) n_down++;
    if (mq_layer(r->ti[i].name) > max_layer) max_layer = mq_layer(r->ti[i].name);
  }
  mm.n_layer = mq_meta_int(root, "num_hidden_layers", "block_count");
  if (mm.n_layer <= 0) mm.n_layer = max_layer + 1 > n_down ? max_layer + 1 : n_down;
  long heads = mq_meta_int(root, "num_attention_heads", "attention.head_count");
  long kvh = mq_meta_int(root, "num_key_value_heads", "attention.head_count_kv");
  mm.n_gqa = heads > 0 && kvh > 0 ? heads / kvh : 1;
  lk_status st = LK_OK;
  for (int64_t i = 0; i < r->n && !st; i++) {
    const lk_tensor_info_t *ti = &r->ti[i];
    mq_plan *p = &r->plan[i];
    p->dtype = ti->dtype;
    p->bytes = ti->nbytes;
    if (!mq_allows(ti) || mq_keep(o->keep, ti->name)) continue;
    /* bitsandbytes (transformers' BitsAndBytesConfig) quantises the
     * nn.Linear layers only and skips lm_head: an HF folder in nf4/fp4/int8
     * keeps the embedding and lm_head as read, so transformers loads it. */
    if (!gguf && f->own && (strstr(ti->name, "embed_tokens") || !strcmp(ti->name, "lm_head.weight"))) continue;
    int64_t ncols = ti->shape[ti->ndim - 1];
    const char *why;
    const char *t = mq_pick(f, &mm, ti->name, ncols, &why);
    if (!t) {
      st = lk__fail(ctx, LK_ERR_SHAPE,
                    "%s: tensor %s: rows of %lld elements do not divide into %s blocks of %lld, and llama-quantize "
                    "defines no fallback type for %s",
                    r->in, ti->name, (long long)ncols, why, (long long)mq_block(why), why);
      break;
    }
    int32_t fd = mq_float_dtype(t);
    if (fd) { /* a plain float: as read when it is already that type */
      if (fd != ti->dtype) p->to = t, p->dtype = fd, p->bytes = mq_numel(ti) * lk_dtype_size(fd);
      continue;
    }
    if (ti->dtype == LK_DTYPE_QUANT && ti->qformat && !strcmp(ti->qformat, t) && !o->block_size && !o->double_quant)
      continue; /* already in that type: copied as llama-quantize copies it */
    p->to = t;
    p->dtype = LK_DTYPE_QUANT;
    p->main_opts = !strcmp(t, f->main);
    lk_quantiser_info_t qi = {sizeof qi, 0, NULL, NULL, NULL, 0, 0, 0, 0};
    if ((st = lk_quantiser_info(ctx, t, &qi))) {
      st = mq_name_fail(ctx, st, r->in, ti->name);
    } else if (!qi.can_quantize && !o->dry_run) {
      st = lk__fail(ctx, LK_ERR_UNSUPPORTED,
                    "%s: tensor %s: its type is %s, which the loaded %s quantiser can only dequantise (no quantize)",
                    r->in, ti->name, t, t);
    } else if (gguf && qi.gguf_type < 0) {
      st = lk__fail(ctx, LK_ERR_UNSUPPORTED, "%s: tensor %s: format %s has no GGUF type, so a GGUF cannot hold it",
                    r->in, ti->name, t);
    } else {
      uint32_t np;
      uint64_t total;
      int64_t nrows = ncols ? (int64_t)(mq_numel(ti) / (uint64_t)ncols) : 0;
      st = mq_layout(ctx, t, p->main_opts ? qo : NULL, nrows, ncols, NULL, NULL, NULL, &np, &total);
      if (st) st = mq_name_fail(ctx, st, r->in, ti->name);
      p->bytes = total;
    }
  }
  free(mm.wv_layer);
  return st;
}

/* Read, convert or quantise tensor i; its figures into a (n, w^2, d^2, max). */
static lk_status mq_do_tensor(mq_run *r, int64_t i, const lk_quant_opts_t *qo, double a[4]) {
  lk_context_t *ctx = r->ctx;
  const lk_tensor_info_t *ti = &r->ti[i];
  const mq_plan *p = &r->plan[i];
  lk_tensor_t *t = &r->t[i];
  t->struct_size = sizeof *t;
  t->ndim = ti->ndim;
  memcpy(t->shape, ti->shape, sizeof t->shape);
  t->dtype = p->dtype;
  t->qformat = p->to && p->dtype == LK_DTYPE_QUANT ? p->to : p->to ? NULL : ti->qformat;
  uint64_t n = mq_numel(ti);
  if (!p->to) { /* as read */
    t->nbytes = ti->nbytes;
    t->data = malloc(t->nbytes + 1);
    if (!t->data) return lk__fail(ctx, LK_ERR_NOMEM, "%s: out of memory reading %s", r->in, ti->name);
    lk_status st = lk_model_tensor_read(r->m, i, t->data, t->nbytes);
    /* its values count in the total's signal energy (the error is 0) */
    float *w = !st && (ti->dtype == LK_DTYPE_QUANT || mq_allows_dtype(ti->dtype))
                   ? malloc(n * sizeof(float) + 1)
                   : NULL;
    if (w && !lk_model_tensor_read_f32(r->m, i, w, n)) mq_err(w, w, n, a);
    else a[0] += (double)n;
    free(w);
    return st;
  }
  int64_t ncols = ti->shape[ti->ndim - 1], nrows = ncols ? (int64_t)(n / (uint64_t)ncols) : 0;
  float *w = malloc(n * sizeof(float) + 1), *g = malloc(n * sizeof(float) + 1);
  lk_status st = w && g ? LK_OK : lk__fail(ctx, LK_ERR_NOMEM, "%s: out of memory for %s", r->in, ti->name);
  if (!st) st = lk_model_tensor_read_f32(r->m, i, w, n);
  /* NaN/Inf: a block's scale would be NaN/Inf and every value of the block
   * lost, so a quantised output refuses them naming the first one (a float
   * output carries them as they are) */
  for (uint64_t e = 0; !st && p->dtype == LK_DTYPE_QUANT && e < n; e++)
    if (!isfinite(w[e]))
      st = lk__fail(ctx, LK_ERR_INVALID_ARG, "%s: tensor %s: element %llu (row %llu) is %s; %s cannot hold it", r->in,
                    ti->name, (unsigned long long)e, (unsigned long long)(e / (uint64_t)ncols),
                    isnan(w[e]) ? "NaN" : "infinite", p->to);
  if (!st && p->dtype != LK_DTYPE_QUANT) {
    t->nbytes = n * lk_dtype_size(p->dtype);
    t->data = malloc(t->nbytes + 1);
    st = t->data ? lk_convert(w, LK_DTYPE_F32, t->data, p->dtype, n) : lk__fail(ctx, LK_ERR_NOMEM, "out of memory");
    if (!st) st = lk_convert(t->data, p->dtype, g, LK_DTYPE_F32, n);
  } else if (!st) {
    uint32_t np;
    const lk_quant_opts_t *o = p->main_opts ? qo : NULL;
    st = mq_layout(ctx, p->to, o, nrows, ncols, NULL, NULL, NULL, &np, &t->nbytes);
    if (!st && !(t->data = malloc(t->nbytes + 1))) st = lk__fail(ctx, LK_ERR_NOMEM, "out of memory");
    if (!st) st = mq_quant_roundtrip(ctx, p->to, o, w, nrows, ncols, t->data, g);
    if (st && st != LK_ERR_NOMEM) st = mq_name_fail(ctx, st, r->in, ti->name);
  }
  if (!st) mq_err(w, g, n, a);
  free(w);
  free(g);
  return st;
}

static const char *mq_type_name(const lk_tensor_info_t *ti) {
  return ti->dtype == LK_DTYPE_QUANT && ti->qformat ? ti->qformat : lk_dtype_name(ti->dtype);
}

/* The plan as reports: types and sizes, error figures NaN (not computed). */
static void mq_dry_report(const mq_run *r, const lk_quantize_opts_t *o) {
  if (!o->report) return;
  lk_quant_report_t rep;
  uint64_t before = 0, after = 0;
  for (int64_t i = 0; i <= r->n; i++) {
    memset(&rep, 0, sizeof rep);
    rep.struct_size = sizeof rep;
    rep.rmse = rep.max_abs = rep.snr_db = NAN;
    if (i < r->n) {
      rep.kept = !r->plan[i].to;
      rep.name = r->ti[i].name;
      rep.from = mq_type_name(&r->ti[i]);
      rep.to = r->plan[i].to ? r->plan[i].to : rep.from;
      rep.numel = (int64_t)mq_numel(&r->ti[i]);
      before += rep.bytes_before = r->ti[i].nbytes;
      after += rep.bytes_after = r->plan[i].bytes;
    } else {
      rep.bytes_before = before;
      rep.bytes_after = after;
    }
    o->report(o->report_user, &rep);
  }
}

static lk_status mq_quantize(lk_context_t *ctx, const char *in, const char *out, const lk_quantize_opts_t *o,
                             const mq_ftype *f) {
  mq_run r = {ctx, in, NULL, 0, NULL, NULL, NULL, NULL};
  json_t *root = NULL;
  char *meta = NULL;
  lk_status st = lk_model_open(ctx, in, NULL, &r.m);
  if (!st && !lk__model_writable(r.m))
    st = lk__fail(ctx, LK_ERR_UNSUPPORTED, "%s: a %s file is not a model to quantise", in, lk_model_loader(r.m));
  int gguf = !st && !strcmp(lk_model_loader(r.m), "gguf");
  if (!st) {
    r.n = lk_model_tensor_count(r.m);
    r.ti = calloc((size_t)r.n + 1, sizeof *r.ti);
    r.plan = calloc((size_t)r.n + 1, sizeof *r.plan);
    r.t = calloc((size_t)r.n + 1, sizeof *r.t);
    r.names = calloc((size_t)r.n + 1, sizeof *r.names);
    if (!r.ti || !r.plan || !r.t || !r.names) st = lk__fail(ctx, LK_ERR_NOMEM, "%s: out of memory", in);
  }
  for (int64_t i = 0; !st && i < r.n; i++) {
    r.ti[i].struct_size = sizeof r.ti[i];
    st = lk_model_tensor_info(r.m, i, &r.ti[i]);
    if (!st && !(r.names[i] = lk__strdup(r.ti[i].name))) st = lk__fail(ctx, LK_ERR_NOMEM, "out of memory");
  }
  if (!st) {
    root = json_loads(lk_model_metadata_json(r.m) ? lk_model_metadata_json(r.m) : "{}", 0, NULL);
    if (!json_is_object(root)) json_decref(root), root = json_object();
  }
  lk_quant_opts_t qo = {sizeof qo, o->block_size, o->double_quant, 0};
  if (!st) st = mq_plan_all(&r, f, o, &qo, root, gguf);
  if (!st && o->dry_run) {
    mq_dry_report(&r, o);
    goto done;
  }
  double tot[4] = {0};
  uint64_t before = 0, after = 0;
  for (int64_t i = 0; !st && i < r.n; i++) {
    double a[4] = {0};
    st = mq_do_tensor(&r, i, &qo, a);
    if (st) break;
    for (int k = 0; k < 3; k++) tot[k] += a[k];
    if (a[3] > tot[3]) tot[3] = a[3];
    before += r.ti[i].nbytes;
    after += r.t[i].nbytes;
    if (o->report) {
      lk_quant_report_t rep;
      memset(&rep, 0, sizeof rep);
      rep.struct_size = sizeof rep;
      rep.kept = !r.plan[i].to;
      rep.name = r.ti[i].name;
      rep.from = mq_type_name(&r.ti[i]);
      rep.to = r.plan[i].to ? r.plan[i].to : rep.from;
      rep.bytes_before = r.ti[i].nbytes;
      rep.bytes_after = r.t[i].nbytes;
      mq_fill_report(&rep, a);
      o->report(o->report_user, &rep);
    }
  }
  if (!st && !(meta = mq_meta(root, f, gguf, &qo, r.plan, r.names, r.n))) st = lk__fail(ctx, LK_ERR_NOMEM, "out of memory");
  struct stat sb;
  if (!st)
    st = lk__mo_write_model(ctx, out, lk_model_loader(r.m), r.t, r.names, r.n, meta,
                            stat(in, &sb) == 0 && S_ISDIR(sb.st_mode) ? in : NULL);
  if (st && st != LK_ERR_NOMEM && strstr(lk_last_error(ctx), ".lktmp.")) {
    /* the writer named its temporary: name the output the caller gave */
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", lk_last_error(ctx));
    st = lk__fail(ctx, st, "writing %s: %s", out, msg);
  }
  if (!st && o->report) {
    lk_quant_report_t rep;
    memset(&rep, 0, sizeof rep);
    rep.struct_size = sizeof rep;
    rep.bytes_before = before;
    rep.bytes_after = after;
    mq_fill_report(&rep, tot);
    o->report(o->report_user, &rep);
  }
done:
  free(meta);
  json_decref(root);
  mq_run_free(&r);
  lk_model_close(r.m);
  return st;
}

LK_API lk_status lk_model_quantize(lk_context_t *ctx, const char *in, const char *out,
                                   const lk_quantize_opts_t *opts) {
  if (!ctx || !in || !opts || (!out && !opts->dry_run))
    return lk__fail(ctx, LK_ERR_INVALID_ARG, "lk_model_quantize: NULL argument");
  lk_status st = lk__mo_check_input(ctx, opts, opts->struct_size, LK_MIN_SIZE_QUANTIZE_OPTS, sizeof *opts,
                                    "lk_model_quantize: lk_quantize_opts_t");
  if (st) return st;
  const mq_ftype *f = NULL;
  for (int i = 0; opts->to && i < MQ_N_FTYPES; i++)
    if (!strcmp(opts->to, mq_ftypes[i].name)) f = &mq_ftypes[i];
  if (!f) return mq_unknown(ctx, opts->to);
  if ((opts->block_size || opts->double_quant) && !f->own)
    return lk__fail(ctx, LK_ERR_INVALID_ARG,
                    "lk_model_quantize: %s has a fixed block size and no double quantisation (block_size and "
                    "double_quant are for int8, int16, nf4, fp4)",
                    f->name);
  if (opts->reserved0) return lk__fail(ctx, LK_ERR_INVALID_ARG, "lk_model_quantize: reserved0 must be 0");
  const char *ins[1] = {in};
  if (!opts->dry_run && (st = lk__mo_check_out(ctx, out, opts->force, ins, 1))) return st;
  st = mq_quantize(ctx, in, out, opts, f);
  if (!st) lk__ok(ctx);
  return st;
}
