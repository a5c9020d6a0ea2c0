/* model_ops.c - whole-model work for any host (lorakit.h, "whole models"):
 * convert a model or an adapter to another format, merge an adapter into a
 * model or take it out again. The rules live here, not in the CLI: every
 * tensor is read whole; float tensors take the requested type except 1-D
 * ones in GGUF (llama.cpp keeps norms f32); an adapter format is written
 * through its loader's write_adapter, a model format through write; a merge
 * writes the model's own format back, after every target was checked
 * against the model; writers go through a temporary renamed into place, so
 * a failure leaves nothing at `out`. */
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- every tensor of a model, in memory -------------------------------------------- */

typedef struct mo_set {
  lk_tensor_t *t;
  char **names;
  int64_t n;
} mo_set;

static void mo_set_free(mo_set *s) {
  for (int64_t i = 0; i < s->n; i++) {
    free(s->names[i]);
    free(s->t[i].data);
  }
  free(s->t);
  free(s->names);
  memset(s, 0, sizeof *s);
}

static int mo_is_float(int32_t d) {
  return d == LK_DTYPE_F32 || d == LK_DTYPE_F16 || d == LK_DTYPE_BF16 || d == LK_DTYPE_F64;
}

static uint64_t mo_numel(const lk_tensor_info_t *ti) {
  uint64_t n = 1;
  for (uint32_t i = 0; i < ti->ndim; i++) n *= (uint64_t)ti->shape[i];
  return n;
}

/* Read every tensor of m. Float tensors go to outtype when it is set (1-D
 * ones stay f32 when keep_1d_f32); quantised tensors are kept as they are. */
static lk_status mo_read_all(lk_context_t *ctx, lk_model_t *m, int32_t outtype, int keep_1d_f32, mo_set *s) {
  int64_t n = lk_model_tensor_count(m);
  s->t = calloc((size_t)n + 1, sizeof *s->t);
  s->names = calloc((size_t)n + 1, sizeof *s->names);
  if (!s->t || !s->names) return lk__fail(ctx, LK_ERR_NOMEM, "%s: out of memory", lk_model_path(m));
  for (int64_t i = 0; i < n; i++) {
    lk_tensor_info_t ti;
    lk_status st = lk_model_tensor_info(m, i, &ti);
    if (st) return st;
    int32_t want = ti.dtype;
    if (outtype != LK_DTYPE_INVALID && mo_is_float(ti.dtype))
      want = keep_1d_f32 && ti.ndim <= 1 ? LK_DTYPE_F32 : outtype;
    uint64_t numel = mo_numel(&ti);
    lk_tensor_t *t = &s->t[i];
    t->struct_size = sizeof *t;
    t->dtype = want;
    t->ndim = ti.ndim;
    memcpy(t->shape, ti.shape, sizeof t->shape);
    t->qformat = ti.qformat; /* lives until the model is closed, after the write */
    t->nbytes = want == ti.dtype ? ti.nbytes : numel * lk_dtype_size(want);
    s->names[i] = lk__strdup(ti.name);
    t->data = malloc(t->nbytes ? t->nbytes : 1);
    s->n = i + 1;
    if (!s->names[i] || !t->data)
      return lk__fail(ctx, LK_ERR_NOMEM, "%s: out of memory reading %s", lk_model_path(m), ti.name);
    if (want == ti.dtype) {
      st = lk_model_tensor_read(m, i, t->data, t->nbytes);
    } else {
      float *f = malloc(numel * sizeof(float) + 1);
      if (!f) return lk__fail(ctx, LK_ERR_NOMEM, "%s: out of memory converting %s", lk_model_path(m), ti.name);
      st = lk_model_tensor_read_f32(m, i, f, numel);
      if (!st) st = lk_convert(f, LK_DTYPE_F32, t->data, want, numel);
      free(f);
    }
    if (st) return st;
  }
  return LK_OK;
}

static int64_t mo_find(const mo_set *s, const char *name) {
  for (int64_t i = 0; i < s->n; i++)
    if (!strcmp(s->names[i], name)) return i;
  return -1;
}

/* ---- options --------------------------------------------------------------------------- */

/* A caller-filled input: at least its frozen size, an unknown tail all zero. */
static lk_status mo_check_input(lk_context_t *ctx, const void *p, uint32_t size, size_t min, size_t known,
                                const char *what) {
  if (size < min) return lk__fail(ctx, LK_ERR_ABI, "%s: struct_size %u is below the minimum %zu", what, size, min);
  for (size_t i = known; i < size; i++)
    if (((const unsigned char *)p)[i])
      return lk__fail(ctx, LK_ERR_ABI, "%s: struct_size %u has nonzero bytes past the %zu this library knows", what,
                      size, known);
  return LK_OK;
}

/* LK_ERR_EXISTS when out exists and force is not set. */
static lk_status mo_check_out(lk_context_t *ctx, const char *out, uint32_t force) {
  struct stat sb;
  if (!force && lstat(out, &sb) == 0)
    return lk__fail(ctx, LK_ERR_EXISTS, "%s already exists (set force to replace it)", out);
  return LK_OK;
}


/* ---- outputs never touch inputs; a replaced output is replaced whole ------------------------ */

/* The absolute, symlink-free form of p, also when p does not exist yet (its
 * folder resolved, its last name appended). 0 when that cannot be made. */
static int mo_abs(const char *p, char out[PATH_MAX]) {
  if (realpath(p, out)) return 1;
  size_t n = strlen(p);
  while (n > 1 && p[n - 1] == '/') n--;
  const char *slash = memrchr(p, '/', n);
  char dir[PATH_MAX];
  if (!slash) snprintf(dir, sizeof dir, ".");
  else if (slash == p) snprintf(dir, sizeof dir, "/");
  else snprintf(dir, sizeof dir, "%.*s", (int)(slash - p), p);
  const char *name = slash ? slash + 1 : p;
  size_t nl = n - (size_t)(name - p);
  char rd[PATH_MAX];
  if (!realpath(dir, rd)) return 0;
  return snprintf(out, PATH_MAX, "%s/%.*s", strcmp(rd, "/") ? rd : "", (int)nl, name) < PATH_MAX;
}

/* 1 when a is b or lies inside the folder b. */
static int mo_within(const char *a, const char *b) {
  size_t n = strlen(b);
  return !strncmp(a, b, n) && (a[n] == 0 || a[n] == '/' || (n == 1 && b[0] == '/'));
}

/* Refuse an output that is an input (same path once resolved, or the same
 * file by inode), lies inside an input folder, or holds an input (replacing
 * it would remove the input). ins[k] may be NULL. */
static lk_status mo_check_paths(lk_context_t *ctx, const char *out, const char *const *ins, int n) {
  char ao[PATH_MAX], ai[PATH_MAX];
  if (!mo_abs(out, ao)) return LK_OK; /* its folder does not exist: the writer names that */
  struct stat so, si;
  int out_exists = stat(out, &so) == 0;
  for (int k = 0; k < n; k++) {
    if (!ins[k] || !realpath(ins[k], ai)) continue; /* a missing input is refused by its open */
    if (out_exists && stat(ins[k], &si) == 0 && so.st_dev == si.st_dev && so.st_ino == si.st_ino)
      return lk__fail(ctx, LK_ERR_INVALID_ARG, "the output %s is the input %s; write to another path", out, ins[k]);
    if (mo_within(ao, ai))
      return lk__fail(ctx, LK_ERR_INVALID_ARG, "the output %s is %s %s; write to another path", out,
                      strcmp(ao, ai) ? "inside the input" : "the input", ins[k]);
    if (mo_within(ai, ao))
      return lk__fail(ctx, LK_ERR_INVALID_ARG,
                      "the output %s holds the input %s (replacing it would remove the input); write to another path",
                      out, ins[k]);
  }
  return LK_OK;
}

lk_status lk__mo_check_input(lk_context_t *ctx, const void *p, uint32_t size, size_t min, size_t known,
                             const char *what) {
  return mo_check_input(ctx, p, size, min, known, what);
}

lk_status lk__mo_check_out(lk_context_t *ctx, const char *out, uint32_t force, const char *const *ins, int n_ins) {
  lk_status st = mo_check_paths(ctx, out, ins, n_ins);
  return st ? st : mo_check_out(ctx, out, force);
}

static int mo_rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(p);
}

static void mo_rmtree(const char *p) { nftw(p, mo_rm_one, 16, FTW_DEPTH | FTW_PHYS); }

typedef lk_status (*mo_write_fn)(lk_context_t *ctx, const char *out, void *arg);

/* Write through fn to a fresh temporary next to out, then put it in place:
 * an existing out (a file or a whole folder: no stale shards or index stay)
 * is renamed away, the new one renamed in, the old one removed. On failure
 * the temporary goes and out is as it was. The caller checked force. */
static lk_status mo_write_replacing(lk_context_t *ctx, const char *out, mo_write_fn fn, void *arg) {
  size_t n = strlen(out);
  while (n > 1 && out[n - 1] == '/') n--;
  char tmp[PATH_MAX], old[PATH_MAX], dst[PATH_MAX], dir[PATH_MAX];
  if (snprintf(dst, sizeof dst, "%.*s", (int)n, out) >= (int)sizeof dst)
    return lk__fail(ctx, LK_ERR_INVALID_ARG, "%s: path too long", out);
  const char *slash = strrchr(dst, '/');
  const char *base = slash ? slash + 1 : dst;
  snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - dst) : 1, slash ? (slash == dst ? "/" : dst) : ".");
  /* The temporary follows lk_tmpfile.h's naming (.NAME.lktmp.PID.XXXXXX), so
   * a killed run's is swept by the next write into the folder. */
  unsigned r = (unsigned)getpid() * 2654435761u ^ (unsigned)time(NULL) ^ (unsigned)(uintptr_t)arg;
  if (snprintf(tmp, sizeof tmp, "%s/.%s.lktmp.%ld.%06x", dir, base, (long)getpid(), r & 0xffffffu) >= (int)sizeof tmp ||
      snprintf(old, sizeof old, "%s/.%s.lk-old-%ld", dir, base, (long)getpid()) >= (int)sizeof old)
    return lk__fail(ctx, LK_ERR_INVALID_ARG, "%s: path too long", out);
  lk__tmp_sweep(dir);
  struct stat sb;
  if (lstat(tmp, &sb) == 0) mo_rmtree(tmp);
  int slot = lk__tmp_register(tmp); /* removed on SIGINT/SIGTERM/SIGHUP */
  lk_status st = fn(ctx, tmp, arg);
  if (st) {
    if (lstat(tmp, &sb) == 0) mo_rmtree(tmp);
    lk__tmp_unregister(slot);
    return st;
  }
  int had = lstat(dst, &sb) == 0;
  if (had && rename(dst, old)) {
    int e = errno;
    mo_rmtree(tmp);
    lk__tmp_unregister(slot);
    return lk__fail(ctx, LK_ERR_IO, "%s: cannot move the old output away: %s", out, strerror(e));
  }
  if (rename(tmp, dst)) {
    int e = errno;
    if (had) rename(old, dst);
    mo_rmtree(tmp);
    lk__tmp_unregister(slot);
    return lk__fail(ctx, LK_ERR_IO, "%s: cannot put the new output in place: %s", out, strerror(e));
  }
  lk__tmp_unregister(slot);
  if (had) mo_rmtree(old);
  return LK_OK;
}

/* Weights and their index: what a writer makes anew, never carried. */
static int mo_is_weight_file(const char *name) {
  static const char *const ext[] = {".safetensors", ".bin", ".pt", ".pth", ".gguf", ".index.json", ".ckpt", ".h5",
                                    ".msgpack"};
  size_t n = strlen(name);
  for (size_t i = 0; i < sizeof ext / sizeof *ext; i++) {
    size_t e = strlen(ext[i]);
    if (n >= e && !strcmp(name + n - e, ext[i])) return 1;
  }
  return 0;
}

/* Copy every regular non-weight file of the folder `from` (tokenizer.json,
 * tokenizer.model, tokenizer_config.json, special_tokens_map.json, chat
 * templates, ...) into the folder `to` where the writer did not write one. A
 * model folder's tokenizer is what makes the output runnable. */
static lk_status mo_carry_files(lk_context_t *ctx, const char *from, const char *to) {
  struct stat sb;
  if (stat(from, &sb) || !S_ISDIR(sb.st_mode) || stat(to, &sb) || !S_ISDIR(sb.st_mode)) return LK_OK;
  DIR *d = opendir(from);
  if (!d) return lk__fail(ctx, LK_ERR_IO, "%s: %s", from, strerror(errno));
  lk_status st = LK_OK;
  struct dirent *e;
  while (!st && (e = readdir(d))) {
    char src[PATH_MAX], dst[PATH_MAX];
    if (e->d_name[0] == '.' || mo_is_weight_file(e->d_name)) continue;
    if (snprintf(src, sizeof src, "%s/%s", from, e->d_name) >= (int)sizeof src ||
        snprintf(dst, sizeof dst, "%s/%s", to, e->d_name) >= (int)sizeof dst)
      continue;
    if (stat(src, &sb) || !S_ISREG(sb.st_mode) || lstat(dst, &sb) == 0) continue;
    FILE *fi = fopen(src, "rb"), *fo = fi ? fopen(dst, "wb") : NULL;
    char buf[65536];
    size_t k;
    while (fo && (k = fread(buf, 1, sizeof buf, fi)) > 0)
      if (fwrite(buf, 1, k, fo) != k) break;
    if (!fi || !fo || ferror(fi) || ferror(fo)) st = lk__fail(ctx, LK_ERR_IO, "copying %s to %s failed", src, dst);
    if (fo && fclose(fo) && !st) st = lk__fail(ctx, LK_ERR_IO, "writing %s failed", dst);
    if (fi) fclose(fi);
  }
  closedir(d);
  return st;
}

/* 1 when the metadata JSON carries a tokenizer (the hf loader's "tokenizer"
 * member, or a GGUF's tokenizer.ggml.model). */
static int mo_has_tokenizer(const char *meta) {
  json_t *j = meta ? json_loads(meta, 0, NULL) : NULL;
  int has = j && (json_object_get(j, "tokenizer") ||
                  json_object_get(json_object_get(j, "kv"), "tokenizer.ggml.model"));
  json_decref(j);
  return has;
}

/* ---- convert ------------------------------------------------------------------------------ */

/* Every target of ad has a weight "<target>.weight" [out, in] in m: the
 * shape of A's in and B's out against the base weight, so a wrong base (other
 * sizes or head counts) is refused naming both files. need_float: the weight
 * must be f32/f16/bf16 (a merge writes into it). */
static lk_status mo_check_targets(lk_context_t *ctx, lk_model_t *m, const lk_adapter_t *ad, const char *adapter,
                                  const char *verb, int need_float) {
  for (uint32_t k = 0; k < lk_adapter_target_count(ad); k++) {
    lk_target_info_t ti = {sizeof ti, 0, NULL, 0, 0, 0, 0};
    lk_adapter_target_info(ad, k, &ti);
    size_t len = strlen(ti.name) + sizeof ".weight";
    char *wname = malloc(len);
    if (!wname) return lk__fail(ctx, LK_ERR_NOMEM, "out of memory");
    memcpy(wname, ti.name, len - sizeof ".weight");
    memcpy(wname + len - sizeof ".weight", ".weight", sizeof ".weight");
    int64_t idx = lk_model_find(m, wname);
    lk_tensor_info_t wi;
    lk_status st = idx < 0 ? lk__fail(ctx, LK_ERR_MISMATCH, "%s: adapter target %s has no weight %s in %s", adapter,
                                      ti.name, wname, lk_model_path(m))
                           : lk_model_tensor_info(m, idx, &wi);
    /* a quantised weight is dequantised, merged and requantised
     * (model_quant.c): its quantiser must be able to write it back */
    lk_quantiser_info_t qi = {sizeof qi, 0, NULL, NULL, NULL, 0, 0, 0, 0};
    if (!st && need_float && wi.dtype == LK_DTYPE_QUANT &&
        (!wi.qformat || lk_quantiser_info(ctx, wi.qformat, &qi) || !qi.can_quantize))
      st = lk__fail(ctx, LK_ERR_UNSUPPORTED,
                    "%s: %s is quantised (%s) and %s; %s into it needs a quantiser that writes %s back",
                    lk_model_path(m), wname, wi.qformat ? wi.qformat : "?",
                    !wi.qformat || !qi.name ? "no quantiser for that format is loaded"
                                            : "its plugin only dequantises that format",
                    verb, wi.qformat ? wi.qformat : "it");
    else if (!st && need_float && wi.dtype == LK_DTYPE_QUANT && lk__adapter_is_dora(ad, k))
      st = lk__fail(ctx, LK_ERR_UNSUPPORTED, "%s: %s is quantised (%s): %s a DoRA target into a quantised base is "
                    "not supported", lk_model_path(m), wname, wi.qformat, verb);
    else if (!st && need_float && wi.dtype == LK_DTYPE_QUANT)
      ;
    else if (!st && need_float && wi.dtype != LK_DTYPE_F32 && wi.dtype != LK_DTYPE_F16 && wi.dtype != LK_DTYPE_BF16)
      st = lk__fail(ctx, LK_ERR_DTYPE, "%s: %s is %s (f32, f16 or bf16 can be merged into)", lk_model_path(m), wname,
                    lk_dtype_name(wi.dtype));
    else if (!st && (wi.ndim != 2 || wi.shape[0] != ti.out_features || wi.shape[1] != ti.in_features))
      st = lk__fail(ctx, LK_ERR_SHAPE,
                    "the adapter %s does not fit the base %s: target %s is [out %lld, in %lld] but %s is %s[%lld, %lld]",
                    adapter, lk_model_path(m), ti.name, (long long)ti.out_features, (long long)ti.in_features, wname,
                    wi.ndim == 2 ? "" : "not 2-D: ", (long long)wi.shape[0], (long long)(wi.ndim > 1 ? wi.shape[1] : 0));
    free(wname);
    if (st) return st;
  }
  return LK_OK;
}

typedef struct mo_write_arg {
  const char *format, *meta, *carry_from; /* carry_from: a folder whose non-weight files go along */
  const char *extra;                      /* an adapter writer's write-only metadata */
  mo_set *s;
  lk_adapter_t *ad;
} mo_write_arg;

static lk_status mo_write_tensors_fn(lk_context_t *ctx, const char *out, void *p) {
  mo_write_arg *a = p;
  lk_status st = lk_write_tensors(ctx, out, a->format, a->s->t, (const char *const *)a->s->names, (uint64_t)a->s->n,
                                  a->meta);
  if (!st && a->carry_from) st = mo_carry_files(ctx, a->carry_from, out);
  return st;
}

lk_status lk__mo_write_model(lk_context_t *ctx, const char *out, const char *format, lk_tensor_t *t, char **names,
                             int64_t n, const char *meta, const char *carry_from) {
  mo_set s = {t, names, n};
  mo_write_arg a = {format, meta, carry_from, NULL, &s, NULL};
  return mo_write_replacing(ctx, out, mo_write_tensors_fn, &a);
}

static lk_status mo_write_adapter_fn(lk_context_t *ctx, const char *out, void *p) {
  mo_write_arg *a = p;
  (void)ctx;
  return lk__adapter_save_meta(a->ad, out, a->format, a->meta, a->extra);
}

static char *mo_meta_with_name(const char *meta, const char *in);

/* The adapter writers' write-only metadata (lorakit_plugin.h): "outtype"
 * when not f32, "name" (the adapter's folder or file name) and "base_name"
 * (the base's, for a GGUF LoRA's general.base_model.0.name where the
 * adapter does not name its base); malloc'd, NULL when out of memory. */
static char *mo_adapter_extra(const char *in, const char *base, int32_t outtype) {
  char *s = mo_meta_with_name(NULL, in);
  json_t *j = s ? json_loads(s, 0, NULL) : NULL;
  free(s);
  if (!json_is_object(j)) {
    json_decref(j);
    return NULL;
  }
  int bad = 0;
  if (outtype == LK_DTYPE_F16 || outtype == LK_DTYPE_BF16)
    bad |= json_object_set_new(j, "outtype", json_string(outtype == LK_DTYPE_F16 ? "f16" : "bf16"));
  if (base) {
    char *b = mo_meta_with_name(NULL, base);
    json_t *bj = b ? json_loads(b, 0, NULL) : NULL;
    free(b);
    bad |= !bj || json_object_set(j, "base_name", json_object_get(bj, "name"));
    json_decref(bj);
  }
  s = bad ? NULL : json_dumps(j, JSON_COMPACT);
  json_decref(j);
  return s;
}

static lk_status mo_convert_adapter(lk_context_t *ctx, const char *in, const char *out,
                                    const lk_convert_opts_t *o) {
  char *extra = mo_adapter_extra(in, o->base, o->outtype);
  if (!extra) return lk__fail(ctx, LK_ERR_NOMEM, "out of memory");
  lk_model_t *bm = NULL;
  lk_adapter_t *ad = NULL;
  lk_status st = o->base ? lk_model_open(ctx, o->base, NULL, &bm) : LK_OK;
  const char *base_meta = bm ? lk_model_metadata_json(bm) : NULL;
  if (!st) st = lk_adapter_load(ctx, in, NULL, base_meta, &ad);
  /* the base decides how Q/K rows are permuted: a base the adapter does not
   * fit would give a file with wrong rows, so it is refused first */
  if (!st && bm) st = mo_check_targets(ctx, bm, ad, in, "converting", 0);
  mo_write_arg a = {o->format, base_meta, NULL, extra, NULL, ad};
  if (!st) st = mo_write_replacing(ctx, out, mo_write_adapter_fn, &a);
  free(extra);
  lk_adapter_free(ad);
  lk_model_close(bm);
  return st;
}

/* meta with "name" set to the source's name (its folder's or file's name,
 * the extension dropped), which the GGUF writer makes general.name of as
 * convert_hf_to_gguf.py does; malloc'd, NULL when out of memory. */
static char *mo_meta_with_name(const char *meta, const char *in) {
  json_t *j = json_loads(meta ? meta : "{}", 0, NULL);
  if (!json_is_object(j)) {
    json_decref(j);
    return lk__strdup(meta ? meta : "{}");
  }
  char real[PATH_MAX];
  const char *p = realpath(in, real) ? real : in;
  const char *slash = strrchr(p, '/');
  char name[PATH_MAX];
  snprintf(name, sizeof name, "%s", slash && slash[1] ? slash + 1 : p);
  char *dot = strrchr(name, '.');
  if (dot && dot != name && (!strcmp(dot, ".safetensors") || !strcmp(dot, ".gguf"))) *dot = 0;
  json_object_set_new(j, "name", json_string(name));
  char *s = json_dumps(j, JSON_COMPACT);
  json_decref(j);
  return s;
}

static lk_status mo_convert_model(lk_context_t *ctx, const char *in, const char *out, const lk_convert_opts_t *o,
                                  uint32_t no_tokenizer) {
  lk_model_t *m = NULL;
  mo_set s = {0};
  lk_status st = lk_model_open(ctx, in, NULL, &m);
  int gguf = !strcmp(o->format, "gguf");
  /* a GGUF without tokenizer.* keys is a file llama.cpp cannot run: refused
   * unless the caller asked for it (no_tokenizer), then warned about */
  if (!st && gguf && !mo_has_tokenizer(lk_model_metadata_json(m))) {
    if (!no_tokenizer)
      st = lk__fail(ctx, LK_ERR_UNSUPPORTED,
                    "%s has no tokenizer lorakit can carry, so %s would have no tokenizer.* keys and llama.cpp could "
                    "not run it (set no_tokenizer / --no-tokenizer to write it anyway)",
                    in, out);
    else {
      char msg[PATH_MAX * 2 + 64];
      snprintf(msg, sizeof msg, "%s: writing a GGUF without a tokenizer (from %s)", out, in);
      lk__log(LK_LOG_WARN, "lorakit", msg);
    }
  }
  /* GGUF keeps 1-D tensors (norms) f32 whatever the outtype, as llama.cpp's
   * converter writes them. */
  if (!st) st = mo_read_all(ctx, m, o->outtype, gguf, &s);
  struct stat sb;
  int folder_in = stat(in, &sb) == 0 && S_ISDIR(sb.st_mode);
  char *meta = !st && gguf ? mo_meta_with_name(lk_model_metadata_json(m), in) : NULL;
  if (!st && gguf && !meta) st = lk__fail(ctx, LK_ERR_NOMEM, "%s: out of memory", out);
  mo_write_arg a = {o->format, meta ? meta : m ? lk_model_metadata_json(m) : NULL, folder_in ? in : NULL, NULL, &s, NULL};
  if (!st) st = mo_write_replacing(ctx, out, mo_write_tensors_fn, &a);
  free(meta);
  mo_set_free(&s);
  lk_model_close(m);
  return st;
}

LK_API lk_status lk_model_convert(lk_context_t *ctx, const char *in, const char *out,
                                  const lk_convert_opts_t *opts) {
  if (!ctx || !in || !out || !opts) return lk__fail(ctx, LK_ERR_INVALID_ARG, "lk_model_convert: NULL argument");
  lk_status st = mo_check_input(ctx, opts, opts->struct_size, LK_MIN_SIZE_CONVERT_OPTS, sizeof *opts,
                                "lk_model_convert: lk_convert_opts_t");
  if (st) return st;
  /* fields past the frozen minimum are read only when the caller's struct has them */
  uint32_t no_tokenizer = opts->struct_size >= LK_MIN_SIZE(lk_convert_opts_t, no_tokenizer) ? opts->no_tokenizer : 0;
  uint32_t reserved1 = opts->struct_size >= LK_MIN_SIZE(lk_convert_opts_t, reserved1) ? opts->reserved1 : 0;
  if (!opts->format || opts->reserved0 || reserved1)
    return lk__fail(ctx, LK_ERR_INVALID_ARG, "lk_model_convert: %s",
                    !opts->format ? "format is required" : "reserved fields must be 0");
  if (opts->outtype != LK_DTYPE_INVALID && opts->outtype != LK_DTYPE_F32 && opts->outtype != LK_DTYPE_F16 &&
      opts->outtype != LK_DTYPE_BF16)
    return lk__fail(ctx, LK_ERR_DTYPE, "lk_model_convert: outtype %s: only f32, f16 and bf16 (or 0 to keep)",
                    lk_dtype_name(opts->outtype));
  const char *ins[2] = {in, opts->base};
  if ((st = mo_check_paths(ctx, out, ins, 2))) return st;
  if ((st = mo_check_out(ctx, out, opts->force))) return st;
  const lk_loader_vt_t *vt = lk__loader_named(ctx, opts->format);
  if (vt && vt->write_adapter) st = mo_convert_adapter(ctx, in, out, opts);
  else st = mo_convert_model(ctx, in, out, opts, no_tokenizer); /* an unknown format is refused by lk_write_tensors */
  if (!st) lk__ok(ctx);
  return st;
}

/* ---- merge and unmerge ----------------------------------------------------------------------- */

static lk_status mo_merge(lk_context_t *ctx, const char *model, const char *adapter, const char *out,
                          const lk_merge_opts_t *opts, int undo) {
  const char *verb = undo ? "unmerging" : "merging";
  if (!ctx || !model || !adapter || !out)
    return lk__fail(ctx, LK_ERR_INVALID_ARG, "lk_model_%s: NULL argument", undo ? "unmerge" : "merge");
  lk_merge_opts_t o = {sizeof o, 1.0f, NULL, 0, 0, NULL, NULL};
  if (opts) {
    lk_status st = mo_check_input(ctx, opts, opts->struct_size, LK_MIN_SIZE_MERGE_OPTS, sizeof *opts,
                                  "lk_merge_opts_t");
    if (st) return st;
    /* fields past the frozen minimum only when the caller's struct has them */
    memcpy(&o, opts, opts->struct_size < sizeof o ? opts->struct_size : sizeof o);
    o.struct_size = sizeof o;
    if (o.scale == 0) o.scale = 1.0f;
  }
  if (!isfinite(o.scale))
    return lk__fail(ctx, LK_ERR_INVALID_ARG, "%s: scale %g is not a finite number", out, (double)o.scale);
  const char *ins[2] = {model, adapter};
  lk_status st = mo_check_paths(ctx, out, ins, 2);
  if (!st) st = mo_check_out(ctx, out, o.force);
  if (st) return st;
  lk_model_t *m = NULL;
  lk_adapter_t *ad = NULL;
  lk_backend_t *be = NULL;
  mo_set s = {0};
  lk__dora_rec *dora = NULL; /* DoRA: the row norms the merged file carries (dora_model.c) */
  char *meta = NULL;
  if ((st = lk_model_open(ctx, model, NULL, &m))) goto done;
  if (!lk__model_writable(m)) {
    st = lk__fail(ctx, LK_ERR_UNSUPPORTED, "%s: a %s file is not a model to %s into", model, lk_model_loader(m),
                  undo ? "unmerge" : "merge");
    goto done;
  }
  if ((st = lk_adapter_load(ctx, adapter, NULL, lk_model_metadata_json(m), &ad))) goto done;
  /* everything checked before any tensor is read or anything written */
  if ((st = mo_check_targets(ctx, m, ad, adapter, verb, 1))) goto done;
  for (uint32_t k = 0; k < lk_adapter_target_count(ad) && !dora; k++)
    if (lk__adapter_is_dora(ad, k) &&
        (st = lk__dora_rec_open(ctx, lk_model_metadata_json(m), model, undo, o.scale, &dora)))
      goto done;
  if ((st = lk_backend_open(ctx, o.backend, o.device, &be))) goto done;
  if ((st = mo_read_all(ctx, m, LK_DTYPE_INVALID, 0, &s))) goto done;
  double acc[5] = {0}; /* requantised targets' error (model_quant.c) */
  for (uint32_t k = 0; k < lk_adapter_target_count(ad) && !st; k++) {
    lk_target_info_t ti = {sizeof ti, 0, NULL, 0, 0, 0, 0};
    lk_adapter_target_info(ad, k, &ti);
    char wname[4096];
    int64_t idx = (size_t)snprintf(wname, sizeof wname, "%s.weight", ti.name) < sizeof wname ? mo_find(&s, wname) : -1;
    if (idx < 0) st = lk__fail(ctx, LK_ERR_INTERNAL, "%s: weight of %s lost after the check", model, ti.name);
    else if (s.t[idx].dtype == LK_DTYPE_QUANT)
      st = lk__mq_merge_quant(ctx, be, ad, k, &s.t[idx], wname, o.scale, undo, o.report, o.report_user, acc);
    else if (lk__adapter_is_dora(ad, k)) st = lk__dora_rec_target(dora, be, ad, k, &s.t[idx]);
    else st = undo ? lk_unmerge(be, ad, k, &s.t[idx], o.scale) : lk_merge(be, ad, k, &s.t[idx], o.scale);
  }
  if (!st && acc[0] > 0) lk__mq_report_total(acc, o.report, o.report_user);
  if (!st && dora && !(meta = lk__dora_rec_metadata(dora, lk_model_metadata_json(m)))) st = lk_last_status(ctx);
  /* the model's own loader writes it back: an HF folder gives an HF folder,
   * its tokenizer and other non-weight files carried along */
  struct stat sb;
  mo_write_arg a = {lk_model_loader(m), meta ? meta : lk_model_metadata_json(m),
                    stat(model, &sb) == 0 && S_ISDIR(sb.st_mode) ? model : NULL, NULL, &s, NULL};
  if (!st) st = mo_write_replacing(ctx, out, mo_write_tensors_fn, &a);
done:
  free(meta);
  lk__dora_rec_free(dora);
  mo_set_free(&s);
  lk_backend_close(be);
  lk_adapter_free(ad);
  lk_model_close(m);
  if (!st) lk__ok(ctx);
  return st;
}

LK_API lk_status lk_model_merge(lk_context_t *ctx, const char *model, const char *adapter, const char *out,
                                const lk_merge_opts_t *opts) {
  return mo_merge(ctx, model, adapter, out, opts, 0);
}

LK_API lk_status lk_model_unmerge(lk_context_t *ctx, const char *model, const char *adapter, const char *out,
                                  const lk_merge_opts_t *opts) {
  return mo_merge(ctx, model, adapter, out, opts, 1);
}
