/* test_fmt_util.h - helpers of the file-format suites (test_formats.c,
 * test_badinput.c): where the reference fixtures are (LK_FIXTURES, set by
 * tests.mk to ../shared/fixtures) and skipping cleanly when they are absent,
 * a context with every plugin of the build, temporary folders, whole-file
 * I/O, SHA-256 (OpenSSL libcrypto), JSON files (jansson), and an independent
 * GGUF reader with the ggml type table, the llama.cpp <-> Hugging Face name
 * map and the Q/K row permutation of convert_hf_to_gguf.py.
 *
 * Everything here is written from the format specifications (gguf.md,
 * safetensors' README, convert_hf_to_gguf.py), not from lorakit's loaders,
 * so it is a reference the loaders are checked against. */
#ifndef LK_TEST_FMT_UTIL_H
#define LK_TEST_FMT_UTIL_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <spawn.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_util.h"

/* ---- fixtures ------------------------------------------------------------- */

/* The tiny-llama-a fixture folder, or NULL when it is not there. */
static inline const char *fm_fixture_root(void) {
  static char root[2048];
  const char *z = getenv("LK_FIXTURES");
  if (!z || !*z) return NULL;
  snprintf(root, sizeof root, "%s/tiny-llama-a", z);
  struct stat st;
  if (stat(root, &st) != 0 || !S_ISDIR(st.st_mode)) return NULL;
  return root;
}

/* LK_FIXTURES/tiny-llama-a/rel in a ring of buffers. */
static inline const char *fm_fx(const char *rel) {
  static char a[8][4096];
  static unsigned i;
  char *z = a[i++ % 8];
  snprintf(z, sizeof a[0], "%s/%s", fm_fixture_root() ? fm_fixture_root() : "(absent)", rel);
  return z;
}

/* Skip the rest of a test (it passes) with a message saying why. */
#define FM_NEED_FIXTURES()                                                                      \
  do {                                                                                          \
    if (!fm_fixture_root()) {                                                                   \
      printf("SKIP %.*s: reference fixtures not found (LK_FIXTURES=%s; expected "               \
             "LK_FIXTURES/tiny-llama-a, i.e. ../shared/fixtures next to the repository)\n",     \
             (int)strlen(__func__) - 3, __func__, getenv("LK_FIXTURES") ? getenv("LK_FIXTURES") : "unset"); \
      return;                                                                                   \
    }                                                                                           \
  } while (0)

/* ---- context ------------------------------------------------------------------ */

/* A context that loads every plugin of the build (LK_BUILD_DIR/plugins). */
static inline lk_context_t *fm_context(void) {
  lk_context_opts_t o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.no_default_plugins = 1;
  lk_context_t *ctx = NULL;
  ck_assert_int_eq(lk_context_create(&o, &ctx), LK_OK);
  lk_status st = lk_plugin_load_dir(ctx, tu_path("plugins"));
  ck_assert_msg(st == LK_OK, "loading %s: %d %s", tu_path("plugins"), st, lk_last_error(ctx));
  return ctx;
}

static inline lk_model_t *fm_open(lk_context_t *ctx, const char *path, const char *loader) {
  lk_model_t *m = NULL;
  lk_status st = lk_model_open(ctx, path, loader, &m);
  ck_assert_msg(st == LK_OK, "lk_model_open(%s, %s): %d %s", path, loader ? loader : "probe", st,
                lk_last_error(ctx));
  return m;
}

/* ---- temporary folders and files ----------------------------------------------- */

static inline int fm_rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(p);
}

/* Folders made by fm_tmpdir and not yet removed: a failing assertion ends
 * the test's process early, and they go at its exit. */
static char *fm_tmpdirs[16];

static inline void fm_tmpdirs_cleanup(void) {
  for (int i = 0; i < 16; i++)
    if (fm_tmpdirs[i]) {
      nftw(fm_tmpdirs[i], fm_rm_one, 16, FTW_DEPTH | FTW_PHYS);
      free(fm_tmpdirs[i]);
      fm_tmpdirs[i] = NULL;
    }
}

static inline char *fm_tmpdir(void) {
  static int registered;
  const char *base = getenv("TMPDIR");
  char tmpl[4096];
  snprintf(tmpl, sizeof tmpl, "%s/lkfmt-XXXXXX", base && *base ? base : "/tmp");
  char *d = mkdtemp(tmpl);
  ck_assert_msg(d != NULL, "mkdtemp(%s): %s", tmpl, strerror(errno));
  if (!registered) registered = atexit(fm_tmpdirs_cleanup) == 0;
  for (int i = 0; i < 16; i++)
    if (!fm_tmpdirs[i]) {
      fm_tmpdirs[i] = strdup(d);
      break;
    }
  return strdup(d);
}

/* Remove a folder and everything in it, and free the path. */
static inline void fm_rmtree(char *dir) {
  if (!dir) return;
  nftw(dir, fm_rm_one, 16, FTW_DEPTH | FTW_PHYS);
  for (int i = 0; i < 16; i++)
    if (fm_tmpdirs[i] && !strcmp(fm_tmpdirs[i], dir)) {
      free(fm_tmpdirs[i]);
      fm_tmpdirs[i] = NULL;
    }
  free(dir);
}

static inline const char *fm_join(const char *dir, const char *name) {
  static char a[8][8192];
  static unsigned i;
  char *z = a[i++ % 8];
  snprintf(z, sizeof a[0], "%s/%s", dir, name);
  return z;
}

static inline int fm_exists(const char *path) {
  struct stat st;
  return lstat(path, &st) == 0;
}

/* Number of entries of a folder other than . and ..; every name goes into
 * names (joined with spaces) for messages. */
static inline int fm_dir_entries(const char *dir, char *names, size_t n) {
  DIR *d = opendir(dir);
  if (names && n) names[0] = 0;
  if (!d) return -1;
  int count = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    count++;
    if (names) {
      size_t used = strlen(names);
      snprintf(names + used, n - used, "%s%s", used ? " " : "", e->d_name);
    }
  }
  closedir(d);
  return count;
}

/* The whole file in a malloc'd buffer (NULL when it cannot be read). */
static inline uint8_t *fm_read_file(const char *path, size_t *size) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *p = malloc(n > 0 ? (size_t)n : 1);
  if (p && n > 0 && fread(p, 1, (size_t)n, f) != (size_t)n) {
    free(p);
    p = NULL;
  }
  fclose(f);
  if (p) *size = (size_t)n;
  return p;
}

static inline uint8_t *fm_must_read(const char *path, size_t *size) {
  uint8_t *p = fm_read_file(path, size);
  ck_assert_msg(p != NULL, "cannot read %s: %s", path, strerror(errno));
  return p;
}

static inline void fm_write_file(const char *path, const void *p, size_t n) {
  FILE *f = fopen(path, "wb");
  ck_assert_msg(f != NULL, "cannot create %s: %s", path, strerror(errno));
  ck_assert_msg(n == 0 || fwrite(p, 1, n, f) == n, "cannot write %s", path);
  ck_assert_int_eq(fclose(f), 0);
}

static inline void fm_copy_file(const char *from, const char *to) {
  size_t n;
  uint8_t *p = fm_must_read(from, &n);
  fm_write_file(to, p, n);
  free(p);
}

static inline void fm_mkdir(const char *path) {
  ck_assert_msg(mkdir(path, 0755) == 0, "mkdir %s: %s", path, strerror(errno));
}

/* ---- the CLI -------------------------------------------------------------------- */

extern char **environ;

/* Run LK_BUILD_DIR/lorakit with args (NULL-terminated), stdout to /dev/null
 * and stderr to err_path (when not NULL); its exit status. */
static inline int fm_run_cli(const char *err_path, const char *const *args) {
  char *argv[32];
  int n = 0;
  argv[n++] = (char *)tu_path("lorakit");
  for (; n < 31 && args[n - 1]; n++) argv[n] = (char *)args[n - 1];
  argv[n] = NULL;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  if (err_path) posix_spawn_file_actions_addopen(&fa, 2, err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid;
  int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  ck_assert_msg(rc == 0, "cannot run %s: %s", argv[0], strerror(rc));
  int status = 0;
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* ---- SHA-256 ----------------------------------------------------------------- */

static inline void fm_sha256_hex(const void *p, size_t n, char hex[65]) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  ck_assert_int_eq(EVP_Digest(p, n, md, &len, EVP_sha256(), NULL), 1);
  ck_assert_uint_eq(len, 32);
  for (unsigned i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

/* ---- JSON ---------------------------------------------------------------------- */

static inline json_t *fm_json_file(const char *path) {
  json_error_t je;
  json_t *j = json_load_file(path, 0, &je);
  ck_assert_msg(j != NULL, "%s: %s (line %d)", path, je.text, je.line);
  return j;
}

static inline json_t *fm_json_text(const char *text) {
  json_error_t je;
  json_t *j = json_loads(text, JSON_DECODE_ANY, &je);
  ck_assert_msg(j != NULL, "bad JSON: %s", je.text);
  return j;
}

/* The header of a .safetensors file (8-byte little-endian length, then a
 * JSON object); *data_start is where the data section begins. */
static inline json_t *fm_st_header(const char *path, uint64_t *data_start) {
  size_t n;
  uint8_t *p = fm_must_read(path, &n);
  ck_assert_msg(n >= 8, "%s: %zu bytes", path, n);
  uint64_t len = 0;
  for (int i = 7; i >= 0; i--) len = (len << 8) | p[i];
  ck_assert_msg(len <= n - 8, "%s: header length %llu past the end", path, (unsigned long long)len);
  json_error_t je;
  json_t *h = json_loadb((const char *)p + 8, (size_t)len, 0, &je);
  ck_assert_msg(json_is_object(h), "%s: header is not a JSON object: %s", path, je.text);
  if (data_start) *data_start = 8 + len;
  free(p);
  return h;
}

/* ---- ggml types (ggml.h / ggml.c type_traits) ------------------------------------ */

typedef struct {
  uint32_t id;
  const char *name; /* as gguf-py's GGMLQuantizationType names it */
  uint32_t block, size;
} fm_ggml_type;

static const fm_ggml_type fm_ggml_types[] = {
    {0, "F32", 1, 4},      {1, "F16", 1, 2},       {2, "Q4_0", 32, 18},   {3, "Q4_1", 32, 20},
    {6, "Q5_0", 32, 22},   {7, "Q5_1", 32, 24},    {8, "Q8_0", 32, 34},   {9, "Q8_1", 32, 36},
    {10, "Q2_K", 256, 84}, {11, "Q3_K", 256, 110}, {12, "Q4_K", 256, 144}, {13, "Q5_K", 256, 176},
    {14, "Q6_K", 256, 210}, {15, "Q8_K", 256, 292}, {30, "BF16", 1, 2},
};

static inline const fm_ggml_type *fm_ggml_by_id(uint32_t id) {
  for (size_t i = 0; i < sizeof fm_ggml_types / sizeof fm_ggml_types[0]; i++)
    if (fm_ggml_types[i].id == id) return &fm_ggml_types[i];
  return NULL;
}

static inline const fm_ggml_type *fm_ggml_by_name(const char *name) {
  for (size_t i = 0; i < sizeof fm_ggml_types / sizeof fm_ggml_types[0]; i++)
    if (!strcasecmp(fm_ggml_types[i].name, name)) return &fm_ggml_types[i];
  return NULL;
}

/* ---- an independent GGUF reader (gguf.md, v2/v3, little-endian) ------------------ */

enum { FM_GGUF_STRING = 8, FM_GGUF_ARRAY = 9 };

typedef struct {
  char key[256];
  uint32_t type, atype; /* atype and alen for arrays */
  uint64_t alen;
  uint64_t key_off, val_off; /* file offsets of the key length and the value */
  int64_t i;                 /* integer and bool values */
  double f;                  /* f32/f64 values */
  char str[256];             /* string values (truncated) */
} fm_gguf_kv;

typedef struct {
  char name[256];
  uint32_t n_dims, type;
  int64_t ne[4];
  uint64_t offset;                    /* relative to the data section */
  uint64_t name_off, type_off, off_off; /* file offsets of those fields */
  uint64_t nbytes;                    /* from the type table; 0 if unknown */
} fm_gguf_tensor;

typedef struct {
  uint32_t version;
  uint64_t n_kv, n_tensors, alignment, data_off, size;
  fm_gguf_kv *kv;
  fm_gguf_tensor *t;
} fm_gguf;

typedef struct {
  const uint8_t *p;
  uint64_t n, at;
  int bad;
} fm_cur;

static inline uint64_t fm_rd(fm_cur *c, unsigned bytes) {
  if (c->bad || c->n - c->at < bytes) {
    c->bad = 1;
    return 0;
  }
  uint64_t v = 0;
  for (unsigned k = 0; k < bytes; k++) v |= (uint64_t)c->p[c->at + k] << (8 * k);
  c->at += bytes;
  return v;
}

static inline void fm_rd_str(fm_cur *c, char *out, size_t cap) {
  uint64_t len = fm_rd(c, 8);
  if (c->bad || len > c->n - c->at) {
    c->bad = 1;
    if (cap) out[0] = 0;
    return;
  }
  size_t k = len < cap - 1 ? (size_t)len : cap - 1;
  memcpy(out, c->p + c->at, k);
  out[k] = 0;
  c->at += len;
}

static inline unsigned fm_gguf_scalar_size(uint32_t t) {
  static const unsigned sz[13] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
  return t < 13 ? sz[t] : 0;
}

static inline void fm_gguf_skip(fm_cur *c, uint32_t t, int depth) {
  if (t >= 13 || depth > 8) {
    c->bad = 1;
    return;
  }
  if (fm_gguf_scalar_size(t)) {
    fm_rd(c, fm_gguf_scalar_size(t));
  } else if (t == FM_GGUF_STRING) {
    char tmp[1];
    fm_rd_str(c, tmp, 1);
  } else {
    uint32_t at = (uint32_t)fm_rd(c, 4);
    uint64_t n = fm_rd(c, 8);
    for (uint64_t i = 0; i < n && !c->bad; i++) fm_gguf_skip(c, at, depth + 1);
  }
}

static inline void fm_gguf_value(fm_cur *c, fm_gguf_kv *kv) {
  uint64_t v;
  kv->val_off = c->at;
  switch (kv->type) {
  case 0: kv->i = (uint8_t)fm_rd(c, 1); break;
  case 1: kv->i = (int8_t)fm_rd(c, 1); break;
  case 2: kv->i = (uint16_t)fm_rd(c, 2); break;
  case 3: kv->i = (int16_t)fm_rd(c, 2); break;
  case 4: kv->i = (uint32_t)fm_rd(c, 4); break;
  case 5: kv->i = (int32_t)fm_rd(c, 4); break;
  case 6: {
    uint32_t u = (uint32_t)fm_rd(c, 4);
    float f;
    memcpy(&f, &u, 4);
    kv->f = f;
    break;
  }
  case 7: kv->i = (uint8_t)fm_rd(c, 1); break;
  case 8: fm_rd_str(c, kv->str, sizeof kv->str); break;
  case 9:
    kv->atype = (uint32_t)fm_rd(c, 4);
    kv->alen = fm_rd(c, 8);
    for (uint64_t i = 0; i < kv->alen && !c->bad; i++) fm_gguf_skip(c, kv->atype, 1);
    break;
  case 10: kv->i = (int64_t)fm_rd(c, 8); break;
  case 11: kv->i = (int64_t)fm_rd(c, 8); break;
  case 12:
    v = fm_rd(c, 8);
    memcpy(&kv->f, &v, 8);
    break;
  default: c->bad = 1;
  }
}

/* Parse p[0..n); 0 on success. Free with fm_gguf_free. */
static inline int fm_gguf_parse(const uint8_t *p, uint64_t n, fm_gguf *g) {
  memset(g, 0, sizeof *g);
  fm_cur c = {p, n, 0, 0};
  if (n < 4 || memcmp(p, "GGUF", 4)) return -1;
  c.at = 4;
  g->version = (uint32_t)fm_rd(&c, 4);
  g->n_tensors = fm_rd(&c, 8);
  g->n_kv = fm_rd(&c, 8);
  g->size = n;
  if (c.bad || (g->version != 2 && g->version != 3) || g->n_kv > n / 8 || g->n_tensors > n / 8) return -1;
  g->kv = calloc(g->n_kv + 1, sizeof *g->kv);
  g->t = calloc(g->n_tensors + 1, sizeof *g->t);
  g->alignment = 32;
  for (uint64_t i = 0; i < g->n_kv && !c.bad; i++) {
    fm_gguf_kv *kv = &g->kv[i];
    kv->key_off = c.at;
    fm_rd_str(&c, kv->key, sizeof kv->key);
    kv->type = (uint32_t)fm_rd(&c, 4);
    fm_gguf_value(&c, kv);
    if (!strcmp(kv->key, "general.alignment") && kv->type == 4) g->alignment = (uint64_t)kv->i;
  }
  for (uint64_t i = 0; i < g->n_tensors && !c.bad; i++) {
    fm_gguf_tensor *t = &g->t[i];
    t->name_off = c.at;
    fm_rd_str(&c, t->name, sizeof t->name);
    t->n_dims = (uint32_t)fm_rd(&c, 4);
    if (t->n_dims < 1 || t->n_dims > 4) c.bad = 1;
    for (uint32_t d = 0; d < 4; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims && !c.bad; d++) t->ne[d] = (int64_t)fm_rd(&c, 8);
    t->type_off = c.at;
    t->type = (uint32_t)fm_rd(&c, 4);
    t->off_off = c.at;
    t->offset = fm_rd(&c, 8);
    const fm_ggml_type *ty = fm_ggml_by_id(t->type);
    if (ty) {
      t->nbytes = (uint64_t)t->ne[0] / ty->block * ty->size;
      for (uint32_t d = 1; d < t->n_dims; d++) t->nbytes *= (uint64_t)t->ne[d];
    }
  }
  if (c.bad || !g->alignment) return -1;
  g->data_off = (c.at + g->alignment - 1) / g->alignment * g->alignment;
  return 0;
}

static inline void fm_gguf_free(fm_gguf *g) {
  free(g->kv);
  free(g->t);
  memset(g, 0, sizeof *g);
}

static inline const fm_gguf_kv *fm_gguf_find_kv(const fm_gguf *g, const char *key) {
  for (uint64_t i = 0; i < g->n_kv; i++)
    if (!strcmp(g->kv[i].key, key)) return &g->kv[i];
  return NULL;
}

static inline int64_t fm_gguf_find_tensor(const fm_gguf *g, const char *name) {
  for (uint64_t i = 0; i < g->n_tensors; i++)
    if (!strcmp(g->t[i].name, name)) return (int64_t)i;
  return -1;
}

/* ---- llama.cpp names (convert_hf_to_gguf.py, tensor_mapping.py) ----------------- */

/* The Hugging Face name of a llama GGUF tensor name into out; 0 when unknown.
 * *perm: 0 none, 1 attn_q (heads), 2 attn_k (kv heads). */
static inline int fm_hf_name(const char *g, char *out, size_t n, int *perm) {
  static const char *const layer[][2] = {
      {"attn_norm", "input_layernorm"},      {"ffn_norm", "post_attention_layernorm"},
      {"attn_q", "self_attn.q_proj"},        {"attn_k", "self_attn.k_proj"},
      {"attn_v", "self_attn.v_proj"},        {"attn_output", "self_attn.o_proj"},
      {"ffn_gate", "mlp.gate_proj"},         {"ffn_up", "mlp.up_proj"},
      {"ffn_down", "mlp.down_proj"}};
  *perm = 0;
  if (!strcmp(g, "token_embd.weight")) return snprintf(out, n, "model.embed_tokens.weight"), 1;
  if (!strcmp(g, "output_norm.weight")) return snprintf(out, n, "model.norm.weight"), 1;
  if (!strcmp(g, "output.weight")) return snprintf(out, n, "lm_head.weight"), 1;
  unsigned layer_no;
  char part[64], rest[64];
  if (sscanf(g, "blk.%u.%63[a-z_].%63s", &layer_no, part, rest) != 3) return 0;
  for (size_t i = 0; i < sizeof layer / sizeof layer[0]; i++)
    if (!strcmp(part, layer[i][0])) {
      *perm = !strcmp(part, "attn_q") ? 1 : !strcmp(part, "attn_k") ? 2 : 0;
      snprintf(out, n, "model.layers.%u.%s.%s", layer_no, layer[i][1], rest);
      return 1;
    }
  return 0;
}

/* ---- the Q/K permutation of convert_hf_to_gguf.py (LlamaModel.permute) ------------
 *   w.reshape(n_head, 2, d // n_head // 2, *rest).swapaxes(1, 2).reshape(d, *rest)
 * i.e. GGUF row (h, k, half) = HF row (h, half, k). rows of row_bytes each. */
static inline void fm_permute_to_gguf(uint8_t *dst, const uint8_t *src, uint64_t d, uint64_t row_bytes,
                                      uint64_t n_head) {
  uint64_t h2 = d / n_head / 2;
  for (uint64_t h = 0; h < n_head; h++)
    for (uint64_t half = 0; half < 2; half++)
      for (uint64_t k = 0; k < h2; k++) {
        uint64_t hf_row = (h * 2 + half) * h2 + k, gguf_row = (h * h2 + k) * 2 + half;
        memcpy(dst + gguf_row * row_bytes, src + hf_row * row_bytes, (size_t)row_bytes);
      }
}

/* ---- error messages ------------------------------------------------------------- */

/* The message names the file and says what is wrong: it contains `file`
 * and at least one of the |-separated phrases of `phrases`. */
#define FM_ASSERT_ERROR(msg, file, phrases)                                                     \
  do {                                                                                          \
    const char *fm_m_ = (msg), *fm_f_ = (file);                                                 \
    ck_assert_msg(fm_m_ && strstr(fm_m_, fm_f_), "error does not name the file %s: \"%s\"", fm_f_, \
                  fm_m_ ? fm_m_ : "(null)");                                                    \
    ck_assert_msg(fm_has_phrase(fm_m_, phrases), "error \"%s\" has none of [%s]", fm_m_, phrases); \
  } while (0)

static inline int fm_has_phrase(const char *msg, const char *phrases) {
  char buf[1024];
  snprintf(buf, sizeof buf, "%s", phrases);
  for (char *save = NULL, *p = strtok_r(buf, "|", &save); p; p = strtok_r(NULL, "|", &save))
    if (strcasestr(msg, p)) return 1;
  return 0;
}

#endif /* LK_TEST_FMT_UTIL_H */
