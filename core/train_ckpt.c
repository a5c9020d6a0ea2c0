/* train_ckpt.c - checkpoint files and checkpoint folders (see train_ckpt.h). */
#include "train_ckpt.h"
#include "train_st.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct tck_ckpt {
  tst_file *f;
  json_t *state;
  int64_t step;
};

static void tck_err(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || !errlen) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

static void tck_shape_str(char *buf, size_t len, int ndim, const int64_t *shape) {
  size_t k = (size_t)snprintf(buf, len, "[");
  for (int d = 0; d < ndim && k < len; d++)
    k += (size_t)snprintf(buf + k, len - k, "%s%" PRId64, d ? ", " : "", shape[d]);
  if (k < len) snprintf(buf + k, len - k, "]");
}

int tck_save(const char *path, const tck_tensor *t, size_t n, const json_t *state, char *err, size_t errlen) {
  json_t *st = json_object_get(state, "step");
  if (!json_is_object(state) || !json_is_integer(st) || json_integer_value(st) < 0) {
    tck_err(err, errlen, "%s: checkpoint state needs an integer \"step\" >= 0", path);
    return -1;
  }
  tst_out *o = calloc(n ? n : 1, sizeof *o);
  char *s = json_dumps(state, JSON_COMPACT | JSON_SORT_KEYS);
  json_t *meta = s ? json_pack("{s:s, s:s, s:s}", "format", TCK_FORMAT, "version", "1", "state", s) : NULL;
  int rc = -1;
  if (!o || !meta) {
    tck_err(err, errlen, "%s: out of memory", path);
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    if (t[i].ndim < 1 || t[i].ndim > 4 || !t[i].name || !t[i].data) {
      tck_err(err, errlen, "%s: tensor %zu: needs a name, data and 1 to 4 dimensions", path, i);
      goto out;
    }
    o[i] = (tst_out){t[i].name, TST_F32, t[i].ndim, t[i].shape, t[i].data};
  }
  rc = tst_write_atomic(path, o, n, meta, err, errlen);
out:
  free(o);
  free(s);
  if (meta) json_decref(meta);
  return rc;
}

void tck_close(tck_ckpt *c) {
  if (!c) return;
  tst_free(c->f);
  if (c->state) json_decref(c->state);
  free(c);
}

int tck_open(const char *path, tck_ckpt **out, char *err, size_t errlen) {
  *out = NULL;
  tck_ckpt *c = calloc(1, sizeof *c);
  if (!c) {
    tck_err(err, errlen, "%s: out of memory", path);
    return -1;
  }
  if (tst_read(path, &c->f, err, errlen)) goto fail;
  const char *fmt = tst_meta(c->f, "format"), *ver = tst_meta(c->f, "version"), *s = tst_meta(c->f, "state");
  if (!fmt || strcmp(fmt, TCK_FORMAT)) {
    tck_err(err, errlen, "%s: not a lorakit training checkpoint (no __metadata__ format \"%s\")", path, TCK_FORMAT);
    goto fail;
  }
  if (!ver || strcmp(ver, "1")) {
    tck_err(err, errlen, "%s: checkpoint version %s; this lorakit reads version 1", path, ver ? ver : "(none)");
    goto fail;
  }
  json_error_t je;
  c->state = s ? json_loads(s, 0, &je) : NULL;
  json_t *st = json_object_get(c->state, "step");
  if (!json_is_object(c->state) || !json_is_integer(st) || json_integer_value(st) < 0) {
    tck_err(err, errlen, "%s: corrupt checkpoint state (%s)", path,
            !s ? "missing" : !c->state ? je.text : "no integer \"step\"");
    goto fail;
  }
  c->step = json_integer_value(st);
  for (size_t i = 0; i < c->f->n; i++)
    if (c->f->t[i].dtype != TST_F32) {
      tck_err(err, errlen, "%s: tensor '%s' is %s; checkpoints hold F32 only", path, c->f->t[i].name,
              tst_dtype_name(c->f->t[i].dtype));
      goto fail;
    }
  *out = c;
  return 0;
fail:
  tck_close(c);
  return -1;
}

const json_t *tck_state(const tck_ckpt *c) { return c->state; }
int64_t tck_step(const tck_ckpt *c) { return c->step; }
const char *tck_path(const tck_ckpt *c) { return c->f->path; }
size_t tck_count(const tck_ckpt *c) { return c->f->n; }

int tck_get(const tck_ckpt *c, const tck_tensor *t, char *err, size_t errlen) {
  const tst_tensor *x = tst_find(c->f, t->name);
  if (!x) {
    tck_err(err, errlen, "%s: no tensor '%s' (checkpoint of another run or configuration?)", c->f->path, t->name);
    return -1;
  }
  int same = x->ndim == t->ndim;
  for (int d = 0; same && d < t->ndim; d++) same = x->shape[d] == t->shape[d];
  if (!same) {
    char a[96], b[96];
    tck_shape_str(a, sizeof a, x->ndim, x->shape);
    tck_shape_str(b, sizeof b, t->ndim, t->shape);
    tck_err(err, errlen, "%s: tensor '%s' has shape %s but this run needs %s (checkpoint of another run?)", c->f->path,
            t->name, a, b);
    return -1;
  }
  memcpy(t->data, x->data, x->nbytes);
  return 0;
}

int tck_get_all(const tck_ckpt *c, const tck_tensor *t, size_t n, char *err, size_t errlen) {
  for (size_t i = 0; i < n; i++)
    if (tck_get(c, &t[i], err, errlen)) return -1;
  if (c->f->n != n) {
    for (size_t j = 0; j < c->f->n; j++) {
      size_t i = 0;
      while (i < n && strcmp(t[i].name, c->f->t[j].name)) i++;
      if (i == n) {
        tck_err(err, errlen, "%s: holds tensor '%s' this run does not have (checkpoint of another run?)", c->f->path,
                c->f->t[j].name);
        return -1;
      }
    }
  }
  return 0;
}

int tck_expect(const tck_ckpt *c, const char *key, const char *expect, char *err, size_t errlen) {
  json_t *v = json_object_get(c->state, key);
  const char *got = json_is_string(v) ? json_string_value(v) : NULL;
  if (!got || strcmp(got, expect)) {
    tck_err(err, errlen, "%s: checkpoint of another run: its %s is %s, this run's is %s", c->f->path, key,
            got ? got : "(missing)", expect);
    return -1;
  }
  return 0;
}

json_t *tck_state_make(int64_t step, const tb_cursor *cursor, const uint64_t *rng, size_t n_rng, const json_t *hyper,
                       const char *data_sha256, const char *base_fingerprint) {
  json_t *s = json_pack("{s:I}", "step", (json_int_t)step);
  if (!s) return NULL;
  int bad = 0;
  if (cursor) bad |= json_object_set_new(s, "cursor", tb_cursor_json(cursor));
  if (n_rng) {
    json_t *a = json_array();
    for (size_t i = 0; a && i < n_rng; i++) {
      char hex[17];
      snprintf(hex, sizeof hex, "%016" PRIx64, rng[i]);
      bad |= json_array_append_new(a, json_string(hex));
    }
    bad |= json_object_set_new(s, "rng", a);
  }
  if (hyper) bad |= json_object_set_new(s, "hyper", json_deep_copy(hyper));
  if (data_sha256) bad |= json_object_set_new(s, "data_sha256", json_string(data_sha256));
  if (base_fingerprint) bad |= json_object_set_new(s, "base_fingerprint", json_string(base_fingerprint));
  if (bad) {
    json_decref(s);
    return NULL;
  }
  return s;
}

int tck_state_read(const tck_ckpt *c, tb_cursor *cursor, uint64_t *rng, size_t n_rng, char *err, size_t errlen) {
  if (cursor) {
    char e[256];
    json_t *j = json_object_get(c->state, "cursor");
    if (!j) {
      tck_err(err, errlen, "%s: the checkpoint state has no data cursor", c->f->path);
      return -1;
    }
    if (tb_cursor_from_json(j, cursor, e, sizeof e)) {
      tck_err(err, errlen, "%s: %s", c->f->path, e);
      return -1;
    }
  }
  if (n_rng) {
    json_t *a = json_object_get(c->state, "rng");
    if (!json_is_array(a) || json_array_size(a) != n_rng) {
      tck_err(err, errlen, "%s: the checkpoint state needs \"rng\" with %zu words", c->f->path, n_rng);
      return -1;
    }
    for (size_t i = 0; i < n_rng; i++) {
      const char *h = json_string_value(json_array_get(a, i));
      if (!h || strlen(h) != 16 || strspn(h, "0123456789abcdef") != 16) {
        tck_err(err, errlen, "%s: rng word %zu is not 16 hex digits", c->f->path, i);
        return -1;
      }
      rng[i] = strtoull(h, NULL, 16);
    }
  }
  return 0;
}

int tck_check_run(const tck_ckpt *c, const char *data_sha256, const char *base_fingerprint, const json_t *hyper,
                  char *err, size_t errlen) {
  if (data_sha256 && tck_expect(c, "data_sha256", data_sha256, err, errlen)) return -1;
  if (base_fingerprint && tck_expect(c, "base_fingerprint", base_fingerprint, err, errlen)) return -1;
  if (!hyper) return 0;
  json_t *mine = json_object_get(c->state, "hyper");
  const char *k;
  json_t *v;
  json_object_foreach((json_t *)hyper, k, v) {
    json_t *w = json_object_get(mine, k);
    if (!w || !json_equal(v, w)) {
      char *a = w ? json_dumps(w, JSON_ENCODE_ANY | JSON_COMPACT) : NULL, *b = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
      tck_err(err, errlen, "%s: checkpoint of another run: its %s is %s, this run's is %s", c->f->path, k,
              a ? a : "(missing)", b ? b : "?");
      free(a);
      free(b);
      return -1;
    }
  }
  return 0;
}

/* ---- folders -------------------------------------------------------------- */

/* Step number of "step-NNNNNNNN.safetensors", or -1. */
static int64_t tck_name_step(const char *name) {
  size_t l = strlen(name);
  if (l < 5 + 1 + 12 || strncmp(name, "step-", 5) || strcmp(name + l - 12, ".safetensors")) return -1;
  int64_t s = 0;
  for (size_t i = 5; i < l - 12; i++) {
    if (name[i] < '0' || name[i] > '9' || s > INT64_MAX / 10 - 10) return -1;
    s = s * 10 + (name[i] - '0');
  }
  return s;
}

static int tck_cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

/* The step numbers of DIR's step files, ascending (*steps malloc'ed). */
static int tck_list(const char *dir, int64_t **steps, size_t *n, char *err, size_t errlen) {
  *steps = NULL;
  *n = 0;
  DIR *d = opendir(dir);
  if (!d) {
    tck_err(err, errlen, "%s: cannot open the checkpoint folder: %s", dir, strerror(errno));
    return -1;
  }
  size_t cap = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    int64_t s = tck_name_step(e->d_name);
    if (s < 0) continue;
    if (*n == cap) {
      cap = cap ? cap * 2 : 16;
      int64_t *ns = realloc(*steps, cap * sizeof *ns);
      if (!ns) {
        closedir(d);
        free(*steps);
        *steps = NULL;
        tck_err(err, errlen, "%s: out of memory", dir);
        return -1;
      }
      *steps = ns;
    }
    (*steps)[(*n)++] = s;
  }
  closedir(d);
  if (*n) qsort(*steps, *n, sizeof **steps, tck_cmp_i64);
  return 0;
}

int tck_dir_save(const char *dir, const tck_tensor *t, size_t n, const json_t *state, int keep, char *path_out,
                 size_t path_len, char *err, size_t errlen) {
  json_t *st = json_object_get(state, "step");
  if (!json_is_integer(st) || json_integer_value(st) < 0) {
    tck_err(err, errlen, "%s: checkpoint state needs an integer \"step\" >= 0", dir);
    return -1;
  }
  if (mkdir(dir, 0777) && errno != EEXIST) {
    tck_err(err, errlen, "%s: cannot create the checkpoint folder: %s", dir, strerror(errno));
    return -1;
  }
  size_t pl = strlen(dir) + 64;
  char *p = malloc(pl), *lp = malloc(pl), name[48];
  int rc = -1;
  if (!p || !lp) {
    tck_err(err, errlen, "%s: out of memory", dir);
    goto out;
  }
  snprintf(name, sizeof name, "step-%08" PRId64 ".safetensors", (int64_t)json_integer_value(st));
  snprintf(p, pl, "%s/%s", dir, name);
  snprintf(lp, pl, "%s/latest", dir);
  if (tck_save(p, t, n, state, err, errlen)) goto out;
  char line[64];
  int ll = snprintf(line, sizeof line, "%s\n", name);
  if (tst_write_file_atomic(lp, line, (size_t)ll, err, errlen)) goto out;
  if (path_out) snprintf(path_out, path_len, "%s", p);
  rc = 0;
  if (keep > 0) {
    int64_t *steps;
    size_t ns;
    if (tck_list(dir, &steps, &ns, err, errlen)) goto out; /* saved, but pruning failed */
    int64_t cur = json_integer_value(st);
    size_t kept = 0;
    /* Keep the current one and the newest others up to KEEP in all. */
    for (size_t i = ns; i-- > 0;) {
      if (steps[i] == cur || kept < (size_t)keep - 1) {
        if (steps[i] != cur) kept++;
        continue;
      }
      char old[48];
      snprintf(old, sizeof old, "step-%08" PRId64 ".safetensors", steps[i]);
      snprintf(p, pl, "%s/%s", dir, old);
      unlink(p);
    }
    free(steps);
  }
out:
  free(p);
  free(lp);
  return rc;
}

int tck_resolve(const char *path, char *out, size_t outlen, char *err, size_t errlen) {
  struct stat st;
  if (stat(path, &st)) {
    tck_err(err, errlen, "%s: no such checkpoint file or folder: %s", path, strerror(errno));
    return -1;
  }
  if (!S_ISDIR(st.st_mode)) {
    snprintf(out, outlen, "%s", path);
    return 0;
  }
  size_t pl = strlen(path) + 64;
  char *lp = malloc(pl);
  if (!lp) {
    tck_err(err, errlen, "%s: out of memory", path);
    return -1;
  }
  snprintf(lp, pl, "%s/latest", path);
  FILE *f = fopen(lp, "r");
  if (f) {
    char line[256] = "";
    int ok = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    line[strcspn(line, "\r\n")] = 0;
    if (!ok || tck_name_step(line) < 0) {
      tck_err(err, errlen, "%s: 'latest' does not name a step-N.safetensors file", path);
      free(lp);
      return -1;
    }
    snprintf(out, outlen, "%s/%s", path, line);
    free(lp);
    if (access(out, R_OK)) {
      tck_err(err, errlen, "%s: 'latest' names %s, which is missing", path, line);
      return -1;
    }
    return 0;
  }
  free(lp);
  int64_t *steps;
  size_t ns;
  if (tck_list(path, &steps, &ns, err, errlen)) return -1;
  if (!ns) {
    free(steps);
    tck_err(err, errlen, "%s: no checkpoint in this folder (no 'latest', no step-N.safetensors)", path);
    return -1;
  }
  snprintf(out, outlen, "%s/step-%08" PRId64 ".safetensors", path, steps[ns - 1]);
  free(steps);
  return 0;
}
