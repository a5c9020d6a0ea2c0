/* peft.c - the "peft" loader component: a PEFT LoRA adapter folder
 * (adapter_config.json + adapter_model.safetensors). PEFT's keys
 * "base_model.model.<module>.lora_A[.<adapter>].weight" become the canonical
 * "<module>.lora_A.weight" (a DoRA magnitude "<module>.lora_magnitude_vector"
 * stays so named, see peft_adapter.c); what lorakit cannot apply exactly (
 * fan_in_fan_out, biases, modules_to_save, embedding LoRA, other PEFT types)
 * is refused by name rather than dropped; A/B pairs are checked against r,
 * rank_pattern and target_modules. The writer makes a folder peft 0.21 loads. */
#include "st.h"

#include <inttypes.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PEFT_PREFIX "base_model.model."
#define PEFT_A ".lora_A.weight"
#define PEFT_B ".lora_B.weight"

typedef struct peft_cfg_t {
  int64_t r;                   /* 0 on write when the caller gave none */
  const json_t *targets;       /* array of strings, a string (regex), or NULL */
  const json_t *rank_pattern;  /* object or NULL */
  const json_t *alpha_pattern; /* object or NULL */
  /* Patterns compiled once (a config may hold thousands): */
  regex_t *rank_rx;            /* one per rank_pattern key, in its order */
  char *rank_rx_ok;            /* 1 where the key compiled as POSIX ERE */
  size_t n_rank;
  regex_t *alpha_rx;           /* the same for alpha_pattern */
  char *alpha_rx_ok;
  size_t n_alpha;
  regex_t target_rx;           /* a string target_modules */
  int target_rx_ok;
  int dora;                    /* use_dora: every target has its magnitude */
} peft_cfg_t;

/* ---- patterns ---------------------------------------------------------------------- */

/* Compile PEFT's Python pattern inside fmt as POSIX extended syntax; 0 when
 * it is not valid there (Python-only syntax such as (?:...) or \d). */
static int peft_regex_compile(regex_t *rx, const char *pattern, const char *fmt) {
  size_t n = strlen(pattern) + strlen(fmt) + 1;
  char *re = malloc(n);
  if (!re) return 0;
  snprintf(re, n, fmt, pattern);
  int ok = regcomp(rx, re, REG_EXTENDED | REG_NOSUB) == 0;
  free(re);
  return ok;
}

static void peft_rx_free(regex_t **rx, char **ok, size_t *n) {
  for (size_t i = 0; i < *n; i++)
    if ((*ok)[i]) regfree(&(*rx)[i]);
  free(*rx);
  free(*ok);
  *rx = NULL;
  *ok = NULL;
  *n = 0;
}

static void peft_cfg_free(peft_cfg_t *c) {
  peft_rx_free(&c->rank_rx, &c->rank_rx_ok, &c->n_rank);
  peft_rx_free(&c->alpha_rx, &c->alpha_rx_ok, &c->n_alpha);
  if (c->target_rx_ok) regfree(&c->target_rx);
  c->target_rx_ok = 0;
}

/* Every key of a pattern object compiled as peft's get_pattern_key uses it:
 * re.match(rf"(.*\.)?({key})$", module). */
static int32_t peft_rx_compile(const json_t *patterns, const char *key, regex_t **rx, char **ok, size_t *n,
                               long *budget, const char *file, lk_error_t *err) {
  if (!patterns || !(*n = json_object_size(patterns))) return LK_OK;
  *rx = calloc(*n, sizeof **rx);
  *ok = calloc(*n, 1);
  if (!*rx || !*ok) {
    free(*rx);
    free(*ok);
    *rx = NULL;
    *ok = NULL;
    *n = 0;
    return st_fail(err, LK_ERR_NOMEM, "%s: out of memory", file);
  }
  size_t i = 0;
  const char *k;
  json_t *v;
  json_object_foreach((json_t *)patterns, k, v) {
    int32_t rc = st_peft_rx_check(k, file, key, budget, err); /* bounded before regcomp sees it */
    if (rc != LK_OK) return rc; /* peft_cfg_free releases the ones compiled so far */
    (*ok)[i] = (char)peft_regex_compile(&(*rx)[i], k, "^(.*\\.)?(%s)$");
    i++;
  }
  return LK_OK;
}

/* The patterns compiled once, and re.fullmatch for a string target_modules. */
static int32_t peft_compile(peft_cfg_t *c, const char *file, lk_error_t *err) {
  long budget = ST_PEFT_RX_BUDGET;
  int32_t rc = peft_rx_compile(c->rank_pattern, "rank_pattern", &c->rank_rx, &c->rank_rx_ok, &c->n_rank, &budget,
                               file, err);
  if (rc == LK_OK)
    rc = peft_rx_compile(c->alpha_pattern, "alpha_pattern", &c->alpha_rx, &c->alpha_rx_ok, &c->n_alpha, &budget,
                         file, err);
  if (rc == LK_OK && json_is_string(c->targets))
    rc = st_peft_rx_check(json_string_value(c->targets), file, "target_modules", &budget, err);
  if (rc != LK_OK) return rc;
  if (json_is_string(c->targets))
    c->target_rx_ok = peft_regex_compile(&c->target_rx, json_string_value(c->targets), "^(%s)$");
  return LK_OK;
}

/* ---- adapter_config.json -------------------------------------------------------------- */

static int peft_is_true(const json_t *cfg, const char *key) { return json_is_true(json_object_get(cfg, key)); }

/* Fields whose non-default values change the math in ways lorakit does not
 * implement: refused, naming the field. */
static int32_t peft_refusals(const json_t *cfg, const char *file, lk_error_t *err) {
  static const char *const flags[][2] = {
      {"fan_in_fan_out", "weights stored transposed (Conv1D layers) are"},
      {"lora_bias", "a trainable bias on lora_B is"},
  };
  for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
    if (peft_is_true(cfg, flags[i][0]))
      return st_fail(err, LK_ERR_UNSUPPORTED, "%s: %s is true: %s not supported", file, flags[i][0],
                     flags[i][1]);
  const json_t *bias = json_object_get(cfg, "bias");
  if (bias && !json_is_null(bias) && (!json_is_string(bias) || strcmp(json_string_value(bias), "none")))
    return st_fail(err, LK_ERR_UNSUPPORTED, "%s: bias is '%.20s' (only \"none\" is supported)", file,
                   json_is_string(bias) ? json_string_value(bias) : "not a string");
  const json_t *mts = json_object_get(cfg, "modules_to_save");
  if (json_is_string(mts) || (json_is_array(mts) && json_array_size(mts) > 0)) {
    const json_t *first = json_is_array(mts) ? json_array_get(mts, 0) : mts;
    return st_fail(err, LK_ERR_UNSUPPORTED, "%s: modules_to_save is not empty ('%.60s'): fully trained module copies are not supported",
                   file, json_is_string(first) ? json_string_value(first) : "?");
  }
  if (mts && !json_is_null(mts) && !json_is_array(mts))
    return st_fail(err, LK_ERR_FORMAT, "%s: modules_to_save must be a list or null", file);
  return LK_OK;
}

static int32_t peft_pattern(const json_t *cfg, const char *key, int ints, const json_t **out,
                            const char *file, lk_error_t *err) {
  const json_t *p = json_object_get(cfg, key);
  *out = NULL;
  if (!p || json_is_null(p)) return LK_OK;
  if (!json_is_object(p)) return st_fail(err, LK_ERR_FORMAT, "%s: %s must be an object", file, key);
  const char *k;
  json_t *v;
  json_object_foreach((json_t *)p, k, v) {
    int ok = ints ? json_is_integer(v) && json_integer_value(v) > 0 && json_integer_value(v) <= INT32_MAX
                  : json_is_number(v);
    if (!ok)
      return st_fail(err, LK_ERR_FORMAT, "%s: %s['%.100s'] must be a %s", file, key, k,
                     ints ? "positive integer" : "number");
  }
  *out = p;
  return LK_OK;
}

/* for_write: the caller's "adapter_config" (r and peft_type may be absent). */
static int32_t peft_parse_config(const json_t *cfg, const char *file, int for_write, peft_cfg_t *c,
                                 lk_error_t *err) {
  memset(c, 0, sizeof *c);
  const json_t *pt = json_object_get(cfg, "peft_type");
  if (!pt && !for_write) return st_fail(err, LK_ERR_FORMAT, "%s: peft_type is missing", file);
  if (pt && (!json_is_string(pt) || strcmp(json_string_value(pt), "LORA")))
    return st_fail(err, LK_ERR_UNSUPPORTED, "%s: peft_type is '%.40s' (only \"LORA\" is supported)", file,
                   json_is_string(pt) ? json_string_value(pt) : "not a string");
  int32_t rc = peft_refusals(cfg, file, err);
  if (rc != LK_OK) return rc;
  c->dora = peft_is_true(cfg, "use_dora");
  const json_t *r = json_object_get(cfg, "r");
  if (r || !for_write) {
    if (!json_is_integer(r) || json_integer_value(r) <= 0 || json_integer_value(r) > INT32_MAX)
      return st_fail(err, LK_ERR_FORMAT, "%s: r must be a positive integer", file);
    c->r = (int64_t)json_integer_value(r);
  }
  const json_t *alpha = json_object_get(cfg, "lora_alpha");
  if (!json_is_number(alpha))
    return st_fail(err, LK_ERR_FORMAT, "%s: lora_alpha is %s", file, alpha ? "not a number" : "missing");
  const json_t *rs = json_object_get(cfg, "use_rslora");
  if (rs && !json_is_boolean(rs) && !json_is_null(rs))
    return st_fail(err, LK_ERR_FORMAT, "%s: use_rslora must be true or false", file);
  const json_t *tm = json_object_get(cfg, "target_modules");
  if (json_is_array(tm)) {
    for (size_t i = 0; i < json_array_size(tm); i++)
      if (!json_is_string(json_array_get(tm, i)))
        return st_fail(err, LK_ERR_FORMAT, "%s: target_modules[%zu] is not a string", file, i);
  } else if (tm && !json_is_string(tm) && !json_is_null(tm)) {
    return st_fail(err, LK_ERR_FORMAT, "%s: target_modules must be a list, a string or null", file);
  }
  c->targets = json_is_null(tm) ? NULL : tm;
  rc = peft_pattern(cfg, "rank_pattern", 1, &c->rank_pattern, file, err);
  if (rc == LK_OK) rc = peft_pattern(cfg, "alpha_pattern", 0, &c->alpha_pattern, file, err);
  if (rc == LK_OK) rc = peft_compile(c, file, err);
  return rc;
}

/* ---- names ------------------------------------------------------------------------- */

static int peft_ends_with_part(const char *module, const char *key) {
  size_t a = strlen(module), b = strlen(key);
  return !strcmp(module, key) || (a > b && module[a - b - 1] == '.' && !strcmp(module + a - b, key));
}

/* peft's get_pattern_key: the value of the FIRST key, in the config's
 * order, whose compiled re.match(rf"(.*\.)?({key})$", module) matches; a key
 * that is not valid POSIX ERE (Python-only syntax) matches as a plain suffix
 * on a dot boundary. NULL when none matches. */
static const json_t *peft_pattern_value(const json_t *patterns, const regex_t *rx, const char *ok, size_t n,
                                        const char *module) {
  size_t i = 0;
  const char *k;
  json_t *v;
  if (!patterns) return NULL;
  json_object_foreach((json_t *)patterns, k, v) {
    int m = i < n && ok[i] ? regexec(&rx[i], module, 0, NULL, 0) == 0 : peft_ends_with_part(module, k);
    if (m) return v;
    i++;
  }
  return NULL;
}

/* The rank PEFT gives module: rank_pattern resolved, else r. */
static int64_t peft_rank_for(const peft_cfg_t *c, const char *module) {
  const json_t *v = peft_pattern_value(c->rank_pattern, c->rank_rx, c->rank_rx_ok, c->n_rank, module);
  return v ? (int64_t)json_integer_value(v) : c->r;
}

/* PEFT's check_target_module_exists: a string is re.fullmatch'ed, a list
 * entry matches the module or its last dotted parts. 1 when targeted or not
 * decidable here (a Python-only regex, "all-linear", no target_modules). */
static int peft_targeted(const peft_cfg_t *c, const char *module) {
  if (!c->targets) return 1;
  if (json_is_string(c->targets)) {
    const char *s = json_string_value(c->targets);
    if (!strcmp(s, "all-linear")) return 1;
    return !c->target_rx_ok || regexec(&c->target_rx, module, 0, NULL, 0) == 0;
  }
  for (size_t i = 0; i < json_array_size(c->targets); i++)
    if (peft_ends_with_part(module, json_string_value(json_array_get(c->targets, i)))) return 1;
  return 0;
}

/* Why a stored key is not a LoRA A/B weight lorakit can use. */
static int32_t peft_refuse_key(const char *name, const char *file, lk_error_t *err) {
  static const char *const kinds[][2] = {
      {"lora_embedding_A", "LoRA on an embedding layer"},
      {"lora_embedding_B", "LoRA on an embedding layer"},
      {"lora_magnitude_vector", "a DoRA magnitude vector"},
      {"modules_to_save", "a fully trained module copy (modules_to_save)"},
      {"original_module", "a fully trained module copy (modules_to_save)"},
      {"trainable_tokens", "trainable token embeddings"},
  };
  for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
    if (strstr(name, kinds[i][0]))
      return st_fail(err, LK_ERR_UNSUPPORTED, "%s: tensor '%.100s' is %s: not supported", file, name,
                     kinds[i][1]);
  return st_fail(err, LK_ERR_UNSUPPORTED, "%s: tensor '%.100s' is not a LoRA weight (only <module>.lora_A.weight and .lora_B.weight are supported)",
                 file, name);
}

/* "base_model.model.<module>.lora_A[.<adapter>].weight" -> "<module>.lora_A.weight"
 * (malloc'd in *canon). */
static int32_t peft_canon(const char *name, const char *file, char **canon, lk_error_t *err) {
  const char *s = name;
  *canon = NULL;
  if (!strncmp(s, PEFT_PREFIX, sizeof PEFT_PREFIX - 1)) s += sizeof PEFT_PREFIX - 1;
  if (st_peft_is_magnitude(s)) return st_peft_magnitude_canon(s, file, canon, err);
  const char *p = NULL;
  for (const char *q = s; (q = strstr(q, ".lora_")); q++)
    if ((q[6] == 'A' || q[6] == 'B') && q[7] == '.') p = q;
  if (!p || p == s) return peft_refuse_key(name, file, err);
  const char *rest = p + 8;
  const char *dot = strchr(rest, '.');
  int plain = !strcmp(rest, "weight");
  int named = dot && dot > rest && !strcmp(dot, ".weight");
  if (!plain && !named) {
    if (!strcmp(rest, "bias") || (dot && !strcmp(dot, ".bias")))
      return st_fail(err, LK_ERR_UNSUPPORTED, "%s: tensor '%.100s' is a lora_%c bias (lora_bias): not supported",
                     file, name, p[6]);
    return peft_refuse_key(name, file, err);
  }
  size_t mlen = (size_t)(p - s);
  char *c = malloc(mlen + sizeof PEFT_A);
  if (!c) return st_fail(err, LK_ERR_NOMEM, "%s: out of memory", file);
  memcpy(c, s, mlen);
  memcpy(c + mlen, p[6] == 'A' ? PEFT_A : PEFT_B, sizeof PEFT_A);
  *canon = c;
  return LK_OK;
}

static int peft_has_suffix(const char *s, const char *suffix, size_t *stem) {
  size_t a = strlen(s), b = strlen(suffix);
  if (a <= b || strcmp(s + a - b, suffix)) return 0;
  *stem = a - b;
  return 1;
}

/* ---- pairs ----------------------------------------------------------------------------- */

static const st_tensor_t *peft_find(st_tensor_t *const *by, uint64_t n, const char *name) {
  size_t lo = 0, hi = (size_t)n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(st_canon(by[mid]), name);
    if (!c) return by[mid];
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  return NULL;
}

/* One module: A [r, in], B [out, r], float dtypes, r as configured, targeted.
 * scratch has room for the module name + PEFT_B. */
static int32_t peft_check_module(st_tensor_t *const *by, uint64_t n, const st_tensor_t *A,
                                 char *scratch, size_t stem, const peft_cfg_t *c, const char *file,
                                 lk_error_t *err) {
  char sa[160], sb[160];
  memcpy(scratch + stem, PEFT_B, sizeof PEFT_B);
  const st_tensor_t *B = peft_find(by, n, scratch);
  scratch[stem] = 0; /* now the module name */
  const char *module = scratch;
  if (!B) return st_fail(err, LK_ERR_FORMAT, "%s: module '%.100s' has lora_A but no lora_B", file, module);
  if (!st_dtype_is_float(A->dtype) || !st_dtype_is_float(B->dtype))
    return st_fail(err, LK_ERR_DTYPE, "%s: module '%.100s' has lora_A %s and lora_B %s (floating point expected)",
                   file, module, st_dtype_to_name(A->dtype), st_dtype_to_name(B->dtype));
  if (A->ndim != 2 || B->ndim != 2 || A->shape[0] != B->shape[1] || A->shape[0] == 0)
    return st_fail(err, LK_ERR_SHAPE, "%s: module '%.100s': lora_A %s and lora_B %s do not pair up as [r, in] and [out, r]",
                   file, module, st_shape_str(sa, sizeof sa, A->ndim, A->shape),
                   st_shape_str(sb, sizeof sb, B->ndim, B->shape));
  int64_t want = peft_rank_for(c, module);
  if (want && A->shape[0] != want)
    return st_fail(err, LK_ERR_SHAPE, "%s: module '%.100s' has rank %" PRId64 " but the adapter config gives %" PRId64 " (r or rank_pattern)",
                   file, module, A->shape[0], want);
  if (!peft_targeted(c, module))
    return st_fail(err, LK_ERR_FORMAT, "%s: module '%.100s' is not matched by target_modules", file, module);
  return LK_OK;
}

static int32_t peft_check_one(st_tensor_t *const *by, uint64_t n, const st_tensor_t *t,
                              const peft_cfg_t *c, const char *file, lk_error_t *err) {
  const char *name = st_canon(t);
  size_t stem;
  if (peft_has_suffix(name, ST_PEFT_M, &stem)) {
    if (!c->dora)
      return st_fail(err, LK_ERR_FORMAT, "%s: tensor '%.100s' is a DoRA magnitude vector but use_dora is not true",
                     file, name);
    return st_peft_check_magnitude(by, n, t, stem, file, err);
  }
  int is_b = peft_has_suffix(name, PEFT_B, &stem);
  if (!is_b && !peft_has_suffix(name, PEFT_A, &stem)) return peft_refuse_key(name, file, err);
  char *scratch = malloc(stem + sizeof PEFT_B);
  if (!scratch) return st_fail(err, LK_ERR_NOMEM, "%s: out of memory", file);
  memcpy(scratch, name, stem);
  int32_t rc = LK_OK;
  if (is_b) {
    memcpy(scratch + stem, PEFT_A, sizeof PEFT_A);
    if (!peft_find(by, n, scratch))
      rc = st_fail(err, LK_ERR_FORMAT, "%s: module '%.*s' has lora_B but no lora_A", file,
                   (int)(stem > 100 ? 100 : stem), name);
  } else {
    rc = peft_check_module(by, n, t, scratch, stem, c, file, err);
    if (rc == LK_OK && c->dora) { /* scratch is the module name now */
      size_t len = strlen(scratch);
      char *mname = malloc(len + sizeof ST_PEFT_M);
      if (!mname) rc = st_fail(err, LK_ERR_NOMEM, "%s: out of memory", file);
      else {
        snprintf(mname, len + sizeof ST_PEFT_M, "%s%s", scratch, ST_PEFT_M);
        if (!peft_find(by, n, mname))
          rc = st_fail(err, LK_ERR_FORMAT, "%s: use_dora is true but module '%.100s' has no lora_magnitude_vector",
                       file, scratch);
        free(mname);
      }
    }
  }
  free(scratch);
  return rc;
}

/* Every tensor is half of a well-formed A/B pair. by is sorted by canonical name. */
static int32_t peft_check_pairs(st_tensor_t *const *by, uint64_t n, const peft_cfg_t *c,
                                const char *file, lk_error_t *err) {
  for (uint64_t i = 0; i < n; i++) {
    int32_t rc = peft_check_one(by, n, by[i], c, file, err);
    if (rc != LK_OK) return rc;
  }
  return LK_OK;
}

/* ---- the adapter resolved once --------------------------------------------------------- */

static void peft_free_resolved(st_peft_t *p) {
  if (!p) return;
  for (uint32_t i = 0; i < p->n; i++) free(p->t[i].module);
  free(p->t);
  free(p->base_model);
  free(p);
}

static void peft_close(void *file) {
  st_handle_t *h = file;
  if (h) {
    peft_free_resolved(h->peft);
    h->peft = NULL;
  }
  st_vt_close(file);
}

/* The adapter as PEFT applies it, after peft_check_pairs: per target the rank
 * of its tensors, alpha from alpha_pattern (else lora_alpha), and
 * s = alpha / r, or alpha / sqrt(r) with use_rslora. Targets in the file
 * order of their lora_A. */
static int32_t peft_resolve(st_handle_t *h, const json_t *cfg, const peft_cfg_t *c, const char *file,
                            lk_error_t *err) {
  st_peft_t *p = calloc(1, sizeof *p);
  if (!p || !(p->t = calloc((size_t)h->n + 1, sizeof *p->t))) {
    free(p);
    return st_fail(err, LK_ERR_NOMEM, "%s: out of memory", file);
  }
  h->peft = p;
  p->scaling = peft_is_true(cfg, "use_rslora") ? LK_SCALING_RSLORA : LK_SCALING_STANDARD;
  p->dora = c->dora;
  p->rank = (uint32_t)c->r;
  p->alpha = (float)json_number_value(json_object_get(cfg, "lora_alpha"));
  if (!(p->alpha > 0) || !isfinite(p->alpha))
    return st_fail(err, LK_ERR_FORMAT, "%s: lora_alpha %g must be a positive number", file, (double)p->alpha);
  const json_t *bm = json_object_get(cfg, "base_model_name_or_path");
  if (json_is_string(bm) && !(p->base_model = strdup(json_string_value(bm))))
    return st_fail(err, LK_ERR_NOMEM, "%s: out of memory", file);
  for (uint64_t i = 0; i < h->n; i++) {
    const st_tensor_t *A = &h->t[i];
    size_t stem;
    if (!peft_has_suffix(st_canon(A), PEFT_A, &stem)) continue;
    char *module = malloc(stem + sizeof PEFT_B);
    if (!module) return st_fail(err, LK_ERR_NOMEM, "%s: out of memory", file);
    memcpy(module, st_canon(A), stem);
    memcpy(module + stem, PEFT_B, sizeof PEFT_B);
    const st_tensor_t *B = st_handle_find(h, module);
    module[stem] = 0;
    st_peft_target_t *t = &p->t[p->n++];
    t->module = module;
    if (!B) return st_fail(err, LK_ERR_FORMAT, "%s: module '%.100s' has lora_A but no lora_B", file, module);
    t->rank = (uint32_t)A->shape[0];
    t->in = A->shape[1];
    t->out = B->shape[0];
    t->a = (int64_t)i;
    t->b = (int64_t)(B - h->t);
    int32_t rc = st_peft_resolve_magnitude(h, c->dora, t, file, err);
    if (rc != LK_OK) return rc;
    const json_t *av = peft_pattern_value(c->alpha_pattern, c->alpha_rx, c->alpha_rx_ok, c->n_alpha, module);
    t->alpha = av ? (float)json_number_value(av) : p->alpha;
    /* PEFT takes an alpha_pattern value as it is: 0 gives scale 0 */
    if (!(t->alpha >= 0) || !isfinite(t->alpha))
      return st_fail(err, LK_ERR_FORMAT, "%s: module '%.100s': alpha %g (alpha_pattern) must be 0 or positive",
                     file, module, (double)t->alpha);
    t->scale = p->scaling == LK_SCALING_RSLORA ? t->alpha / sqrtf((float)t->rank) : t->alpha / (float)t->rank;
  }
  return LK_OK;
}

static int32_t peft_adapter_header(void *file, lk_adapter_header_t *out, lk_error_t *err) {
  const st_handle_t *h = file;
  if (!h || !h->peft) return st_fail(err, LK_ERR_INVALID_ARG, "peft adapter_header: not a file opened by peft");
  if (!out || out->struct_size < LK_MIN_SIZE_ADAPTER_HEADER)
    return st_fail(err, LK_ERR_ABI, "%s: adapter_header: NULL output or struct_size too small", h->path);
  const st_peft_t *p = h->peft;
  out->kind = p->dora ? LK_ADAPTER_DORA : LK_ADAPTER_LORA;
  out->scaling = p->scaling;
  out->rank = p->rank;
  out->alpha = p->alpha;
  out->n_targets = p->n;
  out->base_model = p->base_model;
  return LK_OK;
}

static int32_t peft_adapter_target(void *file, uint32_t index, lk_adapter_target_t *out, lk_error_t *err) {
  const st_handle_t *h = file;
  if (!h || !h->peft) return st_fail(err, LK_ERR_INVALID_ARG, "peft adapter_target: not a file opened by peft");
  if (!out || out->struct_size < sizeof *out)
    return st_fail(err, LK_ERR_ABI, "%s: adapter_target: NULL output or struct_size too small", h->path);
  if (index >= h->peft->n)
    return st_fail(err, LK_ERR_NOT_FOUND, "%s: adapter target %u out of range (%u targets)", h->path, index,
                   h->peft->n);
  const st_peft_target_t *t = &h->peft->t[index];
  out->rank = t->rank;
  out->name = t->module;
  out->alpha = t->alpha;
  out->scale = t->scale;
  out->in_features = t->in;
  out->out_features = t->out;
  out->tensor_a = t->a;
  out->tensor_b = t->b;
  out->tensor_m = t->m;
  out->A = out->B = out->magnitude = NULL;
  return LK_OK;
}

/* ---- reading ---------------------------------------------------------------------------- */

static int32_t peft_probe(const char *path) {
  if (!path || !st_is_dir(path)) return 0;
  char *cfg = st_path_join(path, "adapter_config.json");
  int score = st_is_file(cfg) ? 90 : 0;
  free(cfg);
  return score;
}

static int32_t peft_open_weights(const char *dir, st_handle_t **h, lk_error_t *err) {
  char *st = st_path_join(dir, "adapter_model.safetensors"), *bin = st_path_join(dir, "adapter_model.bin");
  int32_t rc;
  if (!st || !bin) rc = st_fail(err, LK_ERR_NOMEM, "%s: out of memory", dir);
  else if (st_is_file(st)) rc = st_handle_open(st, h, err);
  else if (st_is_file(bin))
    rc = st_fail(err, LK_ERR_UNSUPPORTED, "%s: adapter_model.bin (a pickle) is not supported: save with safe_serialization=True",
                 dir);
  else rc = st_fail(err, LK_ERR_NOT_FOUND, "%s: no adapter_model.safetensors", dir);
  free(st);
  free(bin);
  return rc;
}

static int32_t peft_open(const char *path, void **out_file, lk_error_t *err) {
  if (out_file) *out_file = NULL;
  if (!path || !out_file) return st_fail(err, LK_ERR_INVALID_ARG, "peft open: NULL argument");
  if (!st_is_dir(path)) return st_fail(err, LK_ERR_NOT_FOUND, "%s: not a folder (peft wants an adapter folder)", path);
  char *cfg_path = st_path_join(path, "adapter_config.json");
  json_t *cfg = NULL;
  st_handle_t *h = NULL;
  peft_cfg_t c;
  memset(&c, 0, sizeof c);
  int32_t rc = cfg_path ? st_json_load_file(cfg_path, &cfg, err) : st_fail(err, LK_ERR_NOMEM, "%s: out of memory", path);
  if (rc == LK_OK) rc = peft_parse_config(cfg, cfg_path, 0, &c, err);
  if (rc == LK_OK) rc = peft_open_weights(path, &h, err);
  for (uint64_t i = 0; rc == LK_OK && i < h->n; i++) {
    st_tensor_t *t = &h->t[i];
    rc = peft_canon(t->name, h->path, &t->canon, err);
    if (rc == LK_OK && !strcmp(t->canon, t->name)) {
      free(t->canon);
      t->canon = NULL;
    }
  }
  if (rc == LK_OK) rc = st_handle_index(h, err);
  if (rc == LK_OK) rc = peft_check_pairs(h->by_name, h->n, &c, h->path, err);
  if (rc == LK_OK) rc = peft_resolve(h, cfg, &c, cfg_path, err);
  if (rc == LK_OK) {
    json_t *m = json_object();
    if (m && (json_object_set_new(m, "format", json_string("peft")) || json_object_set(m, "adapter_config", cfg) ||
              json_object_set(m, "safetensors_metadata", h->st_meta))) {
      json_decref(m);
      m = NULL;
    }
    rc = st_handle_set_metadata(h, m, err);
  }
  if (rc == LK_OK) {
    *out_file = h;
    h = NULL;
  }
  if (h) peft_close(h);
  peft_cfg_free(&c);
  json_decref(cfg);
  free(cfg_path);
  return rc;
}

/* ---- writing ---------------------------------------------------------------------------- */

/* A complete LoraConfig as peft 0.21 saves it (the field set of its
 * save_pretrained, defaults for what lorakit does not use), filled from the
 * caller's adapter config. NULL when out of memory. */
static json_t *peft_config_out(const json_t *ac, const peft_cfg_t *c, const json_t *targets,
                               const json_t *base_name) {
  static const char *const nulls[] = {
      "alora_invocation_tokens", "arrow_config",     "auto_mapping",    "corda_config",
      "eva_config",              "exclude_modules",  "kasa_config",     "layer_replication",
      "layers_pattern",          "layers_to_transform", "lora_ga_config", "megatron_config",
      "modules_to_save",         "monteclora_config", "revision",       "target_parameters",
      "trainable_token_indices", "use_bdlora",       "velora_config"};
  static const char *const falses[] = {"ensure_weight_tying", "fan_in_fan_out", "lora_bias", "use_qalora"};
  json_t *o = json_object();
  if (!o) return NULL;
  int bad = 0;
  for (size_t i = 0; i < sizeof nulls / sizeof nulls[0]; i++) bad |= json_object_set_new(o, nulls[i], json_null());
  for (size_t i = 0; i < sizeof falses / sizeof falses[0]; i++) bad |= json_object_set_new(o, falses[i], json_false());
  const json_t *task = json_object_get(ac, "task_type");
  bad |= json_object_set_new(o, "alpha_pattern", c->alpha_pattern ? json_deep_copy(c->alpha_pattern) : json_object());
  bad |= json_object_set_new(o, "base_model_name_or_path", base_name ? json_deep_copy(base_name) : json_null());
  bad |= json_object_set_new(o, "bias", json_string("none"));
  bad |= json_object_set_new(o, "inference_mode", json_true());
  bad |= json_object_set_new(o, "init_lora_weights", json_true());
  bad |= json_object_set_new(o, "loftq_config", json_object());
  bad |= json_object_set_new(o, "lora_alpha", json_deep_copy(json_object_get(ac, "lora_alpha")));
  bad |= json_object_set_new(o, "lora_dropout", json_real(0.0));
  bad |= json_object_set_new(o, "megatron_core", json_string("megatron.core"));
  bad |= json_object_set_new(o, "peft_type", json_string("LORA"));
  bad |= json_object_set_new(o, "peft_version", json_string("0.21.0"));
  bad |= json_object_set_new(o, "qalora_group_size", json_integer(16));
  bad |= json_object_set_new(o, "r", json_integer((json_int_t)c->r));
  bad |= json_object_set_new(o, "rank_pattern", c->rank_pattern ? json_deep_copy(c->rank_pattern) : json_object());
  bad |= json_object_set_new(o, "target_modules", json_deep_copy(targets));
  bad |= json_object_set_new(o, "task_type", json_string(json_is_string(task) ? json_string_value(task) : "CAUSAL_LM"));
  bad |= json_object_set_new(o, "use_rslora", json_boolean(peft_is_true(ac, "use_rslora")));
  bad |= json_object_set_new(o, "use_dora", json_boolean(c->dora));
  if (bad) {
    json_decref(o);
    return NULL;
  }
  return o;
}

static int peft_cmp_name(const void *a, const void *b) {
  return strcmp((*(st_tensor_t *const *)a)->name, (*(st_tensor_t *const *)b)->name);
}

/* target_modules given by the caller, or the last dotted part of every module, sorted. */
static json_t *peft_targets(const peft_cfg_t *c, st_tensor_t *const *by, uint64_t n) {
  if (c->targets) return json_deep_copy(c->targets);
  json_t *a = json_array();
  for (uint64_t i = 0; a && i < n; i++) {
    size_t stem;
    const char *name = by[i]->name;
    if (!peft_has_suffix(name, PEFT_A, &stem)) continue;
    const char *last = name + stem;
    while (last > name && last[-1] != '.') last--;
    json_t *s = json_stringn(last, (size_t)(name + stem - last));
    int dup = 0;
    for (size_t j = 0; s && j < json_array_size(a); j++) dup |= json_equal(json_array_get(a, j), s);
    if (!s || (!dup && json_array_append(a, s))) {
      json_decref(s);
      json_decref(a);
      return NULL;
    }
    json_decref(s);
  }
  /* Sorted, as PEFT writes a set: insertion sort of a handful of strings. */
  for (size_t i = 1; a && i < json_array_size(a); i++)
    for (size_t j = i; j > 0 && strcmp(json_string_value(json_array_get(a, j - 1)),
                                       json_string_value(json_array_get(a, j))) > 0; j--) {
      json_t *x = json_incref(json_array_get(a, j));
      json_array_set(a, j, json_array_get(a, j - 1));
      json_array_set_new(a, j - 1, x);
    }
  return a;
}

/* base_model_name_or_path: base_config's "_name_or_path" (base_config may be
 * a model's metadata with "config", or a config), else the caller's. */
static const json_t *peft_base_name(const json_t *meta, const json_t *ac) {
  const json_t *bc = json_object_get(meta, "base_config");
  if (json_is_object(json_object_get(bc, "config"))) bc = json_object_get(bc, "config");
  const json_t *nm = json_object_get(bc, "_name_or_path");
  if (json_is_string(nm)) return nm;
  nm = json_object_get(ac, "base_model_name_or_path");
  return json_is_string(nm) ? nm : NULL;
}

typedef struct peft_out_t {
  st_tensor_t *t;   /* views of the caller's tensors (names borrowed) */
  st_tensor_t **by; /* sorted by name */
  char **file_names; /* "base_model.model.<name>", owned */
  uint64_t n;
} peft_out_t;

static void peft_out_free(peft_out_t *o) {
  for (uint64_t i = 0; o->file_names && i < o->n; i++) free(o->file_names[i]);
  free(o->file_names);
  free(o->t);
  free(o->by);
}

static int32_t peft_out_make(peft_out_t *o, const lk_tensor_t *tensors, const char *const *names,
                             uint64_t n, const char *path, lk_error_t *err) {
  memset(o, 0, sizeof *o);
  o->n = n;
  o->t = calloc((size_t)(n ? n : 1), sizeof *o->t);
  o->by = calloc((size_t)(n ? n : 1), sizeof *o->by);
  o->file_names = calloc((size_t)(n ? n : 1), sizeof *o->file_names);
  if (!o->t || !o->by || !o->file_names) return st_fail(err, LK_ERR_NOMEM, "%s: out of memory", path);
  for (uint64_t i = 0; i < n; i++) {
    if (!strncmp(names[i], PEFT_PREFIX, sizeof PEFT_PREFIX - 1))
      return st_fail(err, LK_ERR_INVALID_ARG, "%s: tensor '%.100s' is not a canonical name (no '" PEFT_PREFIX "' prefix)",
                     path, names[i]);
    o->t[i].name = (char *)names[i]; /* borrowed: never freed here */
    o->t[i].dtype = tensors[i].dtype;
    o->t[i].ndim = tensors[i].ndim;
    memcpy(o->t[i].shape, tensors[i].shape, sizeof o->t[i].shape);
    o->by[i] = &o->t[i];
    size_t len = strlen(names[i]) + 1;
    if (!(o->file_names[i] = malloc(sizeof PEFT_PREFIX - 1 + len)))
      return st_fail(err, LK_ERR_NOMEM, "%s: out of memory", path);
    memcpy(o->file_names[i], PEFT_PREFIX, sizeof PEFT_PREFIX - 1);
    memcpy(o->file_names[i] + sizeof PEFT_PREFIX - 1, names[i], len);
  }
  qsort(o->by, (size_t)n, sizeof *o->by, peft_cmp_name);
  return LK_OK;
}

/* Adapters are written f32, unless the metadata has "outtype" f16/bf16
 * (lorakit_plugin.h): then every tensor keeps the dtype it is given in, as
 * write_adapter hands lora_A/lora_B already rounded and magnitudes f32. */
static int32_t peft_as_dtype(const json_t *meta) {
  const char *ot = json_string_value(json_object_get(meta, "outtype"));
  return ot && (!strcmp(ot, "f16") || !strcmp(ot, "bf16")) ? LK_DTYPE_INVALID : LK_DTYPE_F32;
}

int32_t st_peft_write(const char *path, const lk_tensor_t *tensors, const char *const *names,
                          uint64_t n, const char *metadata_json, lk_error_t *err) {
  if (!path) return st_fail(err, LK_ERR_INVALID_ARG, "peft write: NULL path");
  json_t *meta = NULL, *stm = NULL, *targets = NULL, *cfg_out = NULL;
  st_tmp_t tmp[2];
  memset(tmp, 0, sizeof tmp);
  tmp[0].fd = tmp[1].fd = -1;
  peft_out_t o;
  memset(&o, 0, sizeof o);
  peft_cfg_t c;
  memset(&c, 0, sizeof c);
  st_dir_t dir;
  memset(&dir, 0, sizeof dir);
  char *files[2] = {st_path_join(path, "adapter_config.json"), st_path_join(path, "adapter_model.safetensors")};
  int32_t rc = files[0] && files[1] ? LK_OK : st_fail(err, LK_ERR_NOMEM, "%s: out of memory", path);
  if (rc == LK_OK) rc = st_check_tensors(tensors, names, n, path, err);
  if (rc == LK_OK && n == 0) rc = st_fail(err, LK_ERR_INVALID_ARG, "%s: peft write: no tensors", path);
  if (rc == LK_OK) rc = st_parse_write_metadata(metadata_json, path, &meta, err);
  const json_t *ac = meta ? json_object_get(meta, "adapter_config") : NULL;
  if (rc == LK_OK && !json_is_object(ac))
    rc = st_fail(err, LK_ERR_INVALID_ARG, "%s: peft write needs metadata with an \"adapter_config\" object", path);
  if (rc == LK_OK) rc = peft_parse_config(ac, files[0], 1, &c, err);
  if (rc == LK_OK) rc = peft_out_make(&o, tensors, names, n, path, err);
  if (rc == LK_OK && !c.r) { /* no r given: the rank of the first pair */
    for (uint64_t i = 0; i < n && !c.r; i++) {
      size_t stem;
      if (peft_has_suffix(o.by[i]->name, PEFT_A, &stem) && o.by[i]->ndim == 2) c.r = o.by[i]->shape[0];
    }
  }
  if (rc == LK_OK) rc = peft_check_pairs(o.by, n, &c, path, err);
  if (rc == LK_OK && (!(targets = peft_targets(&c, o.by, n)) ||
                      !(cfg_out = peft_config_out(ac, &c, targets, peft_base_name(meta, ac)))))
    rc = st_fail(err, LK_ERR_NOMEM, "%s: out of memory", path);
  if (rc == LK_OK) rc = st_write_meta_from(meta, 1, path, &stm, err);
  /* The folder is written whole (st_dir_t): an interrupted write leaves the
   * old folder or none. */
  static const char *const leaf[2] = {"adapter_config.json", "adapter_model.safetensors"};
  if (rc == LK_OK) rc = st_dir_open(&dir, path, leaf, 2, err);
  for (int i = 0; i < 2 && rc == LK_OK; i++) {
    free(files[i]);
    if (!(files[i] = st_path_join(dir.tmp_path, leaf[i]))) rc = st_fail(err, LK_ERR_NOMEM, "%s: out of memory", path);
  }
  if (rc == LK_OK && (rc = st_tmp_open(&tmp[0], files[0], err)) == LK_OK)
    rc = st_write_json(&tmp[0], cfg_out, JSON_INDENT(2) | JSON_SORT_KEYS, 0, err);
  if (rc == LK_OK && (rc = st_tmp_open(&tmp[1], files[1], err)) == LK_OK)
    rc = st_write_safetensors(&tmp[1], tensors, (const char *const *)o.file_names, n, stm, peft_as_dtype(meta), err);
  for (int i = 0; i < 2 && rc == LK_OK; i++) rc = st_tmp_commit(&tmp[i], err);
  for (int i = 0; i < 2; i++) st_tmp_discard(&tmp[i]);
  if (rc == LK_OK) rc = st_dir_commit(&dir, err);
  st_dir_discard(&dir);
  peft_out_free(&o);
  peft_cfg_free(&c);
  json_decref(cfg_out);
  json_decref(targets);
  json_decref(stm);
  json_decref(meta);
  free(files[0]);
  free(files[1]);
  return rc;
}

const lk_loader_vt_t st_peft_vt = {
    sizeof(lk_loader_vt_t),
    0,
    "peft",
    "PEFT LoRA adapter folders (adapter_config.json + adapter_model.safetensors)",
    peft_probe,
    peft_open,
    peft_close,
    st_vt_tensor_count,
    st_vt_tensor_info,
    st_vt_tensor_read,
    st_vt_tensor_map,
    st_vt_metadata_json,
    st_peft_write,
    st_vt_get_extension,
    peft_adapter_header,
    peft_adapter_target,
    st_peft_write_adapter,
};
