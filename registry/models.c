/* models.c - base models in the registry: the fingerprint (architecture,
 * structural config, tensor shapes, bytes of the 2-D weights), recording a
 * model once per fingerprint, merged models' lineage, and the check that an
 * adapter's targets fit the base it is recorded against. */
#include "reg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* Config keys that describe a model's structure and that every loader
 * reports alike (GGUF derives them from its llama.* keys); float keys are
 * left out because formats round them differently. */
static const char *const fp_keys[] = {"model_type",        "vocab_size",          "hidden_size",
                                      "intermediate_size", "num_hidden_layers",   "num_attention_heads",
                                      "num_key_value_heads"};

void reg_model_info_free(reg_model_info *mi) {
  if (!mi) return;
  free(mi->name);
  free(mi->config);
  free(mi->shapes);
  free(mi->path);
  memset(mi, 0, sizeof *mi);
}

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && !strcmp(s + n - k, suffix);
}

char *reg_name_from_path(const char *path) {
  size_t n = strlen(path);
  while (n > 1 && path[n - 1] == '/') n--;
  size_t start = n;
  while (start > 0 && path[start - 1] != '/') start--;
  size_t len = n - start;
  char *name = malloc(len + 2);
  if (!name) return NULL;
  memcpy(name, path + start, len);
  name[len] = '\0';
  static const char *const exts[] = {".gguf", ".safetensors", ".bin"};
  for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++)
    if (ends_with(name, exts[i]) && strlen(name) > strlen(exts[i])) name[strlen(name) - strlen(exts[i])] = '\0';
  /* Bytes that are not UTF-8, controls and bidirectional overrides become
   * '_' too: a derived name must pass reg_valid_name like a given one. */
  for (unsigned char *p = (unsigned char *)name; *p;) {
    uint32_t cp;
    size_t k = reg_utf8_next(p, &cp);
    if (!k || reg_unsafe_cp(cp) || cp == '@' || cp == ':' || cp == ' ') {
      for (size_t i = 0; i < (k ? k : 1); i++) p[i] = '_';
      k = k ? k : 1;
    }
    p += k;
  }
  if (name[0] == '-' || name[0] == '\0') {
    memmove(name + 1, name, strlen(name) + 1);
    name[0] = '_';
  }
  if (strlen(name) > REG_NAME_MAX) { /* cut at a character boundary */
    size_t cut = REG_NAME_MAX;
    while (cut > 0 && ((unsigned char)name[cut] & 0xc0) == 0x80) cut--;
    name[cut] = '\0';
  }
  return name;
}

typedef struct tensor_ref {
  const char *name;
  int64_t index;
} tensor_ref;

static int by_tensor_name(const void *a, const void *b) {
  return strcmp(((const tensor_ref *)a)->name, ((const tensor_ref *)b)->name);
}

/* The structural config: fp_keys that are present, num_key_value_heads
 * defaulting to num_attention_heads as transformers does. */
static json_t *structural_config(json_t *cfg) {
  json_t *o = json_object();
  for (size_t i = 0; i < sizeof fp_keys / sizeof fp_keys[0]; i++) {
    json_t *v = json_object_get(cfg, fp_keys[i]);
    if (json_is_integer(v) || json_is_string(v)) json_object_set(o, fp_keys[i], v);
  }
  if (!json_object_get(o, "num_key_value_heads") && json_object_get(o, "num_attention_heads"))
    json_object_set(o, "num_key_value_heads", json_object_get(o, "num_attention_heads"));
  return o;
}

static const char *architecture_of(json_t *meta, json_t *cfg) {
  const char *a = json_string_value(json_object_get(cfg, "model_type"));
  if (!a)
    a = json_string_value(
        json_object_get(json_object_get(json_object_get(meta, "gguf"), "kv"), "general.architecture"));
  return a ? a : "unknown";
}

/* Hash the tensors: names and shapes into fp, bytes of 2-D weights into w. */
static lk_status hash_tensors(lk_registry_t *reg, lk_model_t *m, reg_sha *fp, reg_sha *w, json_t *shapes,
                              int64_t *n_params) {
  int64_t n = lk_model_tensor_count(m);
  tensor_ref *refs = calloc(n > 0 ? (size_t)n : 1, sizeof *refs);
  if (!refs) return lk__fail(reg->ctx, LK_ERR_NOMEM, "out of memory");
  lk_status st = LK_OK;
  for (int64_t i = 0; i < n && !st; i++) {
    lk_tensor_info_t ti;
    st = lk_model_tensor_info(m, i, &ti);
    refs[i].name = ti.name;
    refs[i].index = i;
  }
  if (!st) qsort(refs, (size_t)n, sizeof *refs, by_tensor_name);
  void *buf = NULL;
  uint64_t cap = 0;
  for (int64_t i = 0; i < n && !st; i++) {
    lk_tensor_info_t ti;
    if ((st = lk_model_tensor_info(m, refs[i].index, &ti))) break;
    char line[64];
    int64_t numel = 1;
    reg_sha_update(fp, ti.name, strlen(ti.name));
    for (uint32_t d = 0; d < ti.ndim; d++) {
      int k = snprintf(line, sizeof line, "%s%lld", d ? "x" : " ", (long long)ti.shape[d]);
      reg_sha_update(fp, line, (uint64_t)k);
      numel *= ti.shape[d];
    }
    reg_sha_update(fp, "\n", 1);
    *n_params += numel;
    if (ti.ndim != 2 || !ends_with(ti.name, ".weight")) continue;
    json_object_set_new(shapes, ti.name, json_pack("[I,I]", (json_int_t)ti.shape[0], (json_int_t)ti.shape[1]));
    if (ti.nbytes > cap) {
      free(buf);
      cap = ti.nbytes;
      if (!(buf = malloc(cap))) {
        st = lk__fail(reg->ctx, LK_ERR_NOMEM, "out of memory reading %s", ti.name);
        break;
      }
    }
    if ((st = lk_model_tensor_read(m, refs[i].index, buf, ti.nbytes))) break;
    reg_sha_update(w, buf, ti.nbytes);
  }
  free(buf);
  free(refs);
  return st;
}

lk_status reg_model_scan(lk_registry_t *reg, const char *path, const char *loader, reg_model_info *mi) {
  memset(mi, 0, sizeof *mi);
  lk_model_t *m = NULL;
  json_t *meta = NULL, *structural = NULL, *shapes = json_object();
  reg_sha *fp = reg_sha_new(), *w = reg_sha_new();
  lk_status st = LK_OK;
  if (!fp || !w || !shapes) {
    st = lk__fail(reg->ctx, LK_ERR_NOMEM, "out of memory");
    goto done;
  }
  if ((st = lk_model_open(reg->ctx, path, loader, &m))) goto done;
  json_error_t jerr;
  meta = json_loads(lk_model_metadata_json(m), 0, &jerr);
  json_t *cfg = json_object_get(meta, "config");
  if (json_is_object(json_object_get(meta, "adapter_config")) || lk_model_tensor_count(m) == 0) {
    st = lk__fail(reg->ctx, LK_ERR_FORMAT, "%s: an adapter or an empty file, not a base model", path);
    goto done;
  }
  const char *arch = architecture_of(meta, cfg);
  snprintf(mi->arch, sizeof mi->arch, "%s", arch);
  structural = structural_config(cfg);
  char *scfg = json_dumps(structural, JSON_COMPACT | JSON_SORT_KEYS);
  char chash[REG_HEX], whash[REG_HEX];
  reg_sha256_hex(scfg ? scfg : "{}", scfg ? strlen(scfg) : 2, chash);
  free(scfg);
  char head[256];
  int k = snprintf(head, sizeof head, "lorakit-fingerprint/1\narch=%s\nconfig=%s\n", arch, chash);
  reg_sha_update(fp, head, (uint64_t)k);
  if ((st = hash_tensors(reg, m, fp, w, shapes, &mi->n_params))) goto done;
  reg_sha_final(w, whash);
  w = NULL;
  k = snprintf(head, sizeof head, "weights=%s\n", whash);
  reg_sha_update(fp, head, (uint64_t)k);
  reg_sha_final(fp, mi->fingerprint);
  fp = NULL;
  json_t *cfg_out = json_is_object(cfg) ? cfg : json_object();
  mi->config = reg_json_string(cfg_out);
  if (!json_is_object(cfg)) json_decref(cfg_out);
  mi->shapes = reg_json_string(shapes);
  mi->path = realpath(path, NULL);
  if (!mi->path) mi->path = reg_strdup(path);
  mi->name = reg_name_from_path(path);
  if (!mi->config || !mi->shapes || !mi->path || !mi->name) st = lk__fail(reg->ctx, LK_ERR_NOMEM, "out of memory");
done:
  if (fp) {
    char junk[REG_HEX];
    reg_sha_final(fp, junk);
  }
  if (w) {
    char junk[REG_HEX];
    reg_sha_final(w, junk);
  }
  json_decref(structural);
  json_decref(shapes);
  json_decref(meta);
  lk_model_close(m);
  if (st) reg_model_info_free(mi);
  return st;
}

static int64_t model_by_fingerprint(lk_registry_t *reg, const char *fp, char **name) {
  sqlite3_stmt *q = NULL;
  int64_t id = 0;
  if (reg_prepare(reg, "SELECT id, name FROM models WHERE fingerprint = ?", &q)) return -1;
  sqlite3_bind_text(q, 1, fp, -1, SQLITE_STATIC);
  if (sqlite3_step(q) == SQLITE_ROW) {
    id = sqlite3_column_int64(q, 0);
    if (name) *name = reg_strdup((const char *)sqlite3_column_text(q, 1));
  }
  sqlite3_finalize(q);
  return id;
}

static int name_taken(lk_registry_t *reg, const char *name) {
  sqlite3_stmt *q = NULL;
  int taken = 0;
  if (reg_prepare(reg, "SELECT 1 FROM models WHERE name = ?", &q)) return 1;
  sqlite3_bind_text(q, 1, name, -1, SQLITE_STATIC);
  taken = sqlite3_step(q) == SQLITE_ROW;
  sqlite3_finalize(q);
  return taken;
}

lk_status reg_model_insert(lk_registry_t *reg, reg_model_info *mi, const char *explicit_name, const char *operation,
                           const char *notes, int64_t *id) {
  char *existing = NULL;
  *id = model_by_fingerprint(reg, mi->fingerprint, &existing);
  if (*id < 0) return lk_last_status(reg->ctx);
  if (*id > 0) {
    free(mi->name);
    mi->name = existing;
    return existing ? LK_OK : lk__fail(reg->ctx, LK_ERR_NOMEM, "out of memory");
  }
  if (explicit_name) {
    char *copy = reg_strdup(explicit_name);
    if (!copy) return lk__fail(reg->ctx, LK_ERR_NOMEM, "out of memory");
    free(mi->name);
    mi->name = copy;
  }
  if (name_taken(reg, mi->name)) {
    if (explicit_name)
      return lk__fail(reg->ctx, LK_ERR_EXISTS, "%s: a different base model is already recorded as '%s'", mi->path,
                      mi->name);
    size_t n = strlen(mi->name);
    char *unique = malloc(n + 10);
    if (!unique) return lk__fail(reg->ctx, LK_ERR_NOMEM, "out of memory");
    snprintf(unique, n + 10, "%.*s-%.8s", (int)(n > REG_NAME_MAX - 9 ? REG_NAME_MAX - 9 : n), mi->name,
             mi->fingerprint);
    free(mi->name);
    mi->name = unique;
    if (name_taken(reg, mi->name))
      return lk__fail(reg->ctx, LK_ERR_EXISTS, "%s: the name '%s' is taken", mi->path, mi->name);
  }
  sqlite3_stmt *q = NULL;
  lk_status st = reg_prepare(reg,
                             "INSERT INTO models(name, architecture, fingerprint, config, shapes, n_params, path, "
                             "created, operation, notes) VALUES(?,?,?,?,?,?,?,?,?,?)",
                             &q);
  if (st) return st;
  sqlite3_bind_text(q, 1, mi->name, -1, SQLITE_STATIC);
  sqlite3_bind_text(q, 2, mi->arch, -1, SQLITE_STATIC);
  sqlite3_bind_text(q, 3, mi->fingerprint, -1, SQLITE_STATIC);
  sqlite3_bind_text(q, 4, mi->config, -1, SQLITE_STATIC);
  sqlite3_bind_text(q, 5, mi->shapes, -1, SQLITE_STATIC);
  sqlite3_bind_int64(q, 6, mi->n_params);
  sqlite3_bind_text(q, 7, mi->path, -1, SQLITE_STATIC);
  sqlite3_bind_int64(q, 8, (sqlite3_int64)time(NULL));
  sqlite3_bind_text(q, 9, operation ? operation : "add", -1, SQLITE_STATIC);
  if (notes) sqlite3_bind_text(q, 10, notes, -1, SQLITE_STATIC);
  int rc = sqlite3_step(q);
  sqlite3_finalize(q);
  if (rc != SQLITE_DONE) return reg_sql_fail(reg, rc, "recording a base model");
  *id = sqlite3_last_insert_rowid(reg->db);
  return LK_OK;
}

lk_status reg_base_prepare(lk_registry_t *reg, const char *base, const char *loader, reg_base *b) {
  memset(b, 0, sizeof *b);
  if (!base) return LK_OK;
  if ((b->id = reg_model_by_name(reg, base)) > 0) return LK_OK;
  struct stat sb;
  if (stat(base, &sb))
    return lk__fail(reg->ctx, LK_ERR_NOT_FOUND, "base model '%s': neither a model recorded in registry %s nor a path",
                    base, reg->path);
  b->scanned = 1;
  return reg_model_scan(reg, base, loader, &b->info);
}

lk_status reg_base_commit(lk_registry_t *reg, reg_base *b) {
  if (!b->scanned || b->id > 0) return LK_OK;
  return reg_model_insert(reg, &b->info, NULL, "add", NULL, &b->id);
}

char *reg_base_config(lk_registry_t *reg, const reg_base *b) {
  if (b->scanned) return b->info.config ? reg_strdup(b->info.config) : NULL;
  return b->id > 0 ? reg_model_config(reg, b->id) : NULL;
}

void reg_base_free(reg_base *b) { reg_model_info_free(&b->info); }

char *reg_model_config(lk_registry_t *reg, int64_t model_id) {
  sqlite3_stmt *q = NULL;
  char *s = NULL;
  if (reg_prepare(reg, "SELECT config FROM models WHERE id = ?", &q)) return NULL;
  sqlite3_bind_int64(q, 1, model_id);
  if (sqlite3_step(q) == SQLITE_ROW) s = reg_strdup((const char *)sqlite3_column_text(q, 0));
  sqlite3_finalize(q);
  return s;
}

lk_status reg_base_check(lk_registry_t *reg, const reg_base *b, const reg_canon_info *ci, const char *label) {
  char *shapes_s = NULL, *name = NULL;
  if (b->scanned) {
    shapes_s = reg_strdup(b->info.shapes);
    name = reg_strdup(b->info.name);
  } else {
    sqlite3_stmt *q = NULL;
    lk_status st = reg_prepare(reg, "SELECT shapes, name FROM models WHERE id = ?", &q);
    if (st) return st;
    sqlite3_bind_int64(q, 1, b->id);
    if (sqlite3_step(q) == SQLITE_ROW) {
      shapes_s = reg_strdup((const char *)sqlite3_column_text(q, 0));
      name = reg_strdup((const char *)sqlite3_column_text(q, 1));
    }
    sqlite3_finalize(q);
  }
  json_error_t jerr;
  json_t *shapes = shapes_s ? json_loads(shapes_s, 0, &jerr) : NULL;
  lk_status st = LK_OK;
  if (!shapes || !name) st = lk__fail(reg->ctx, LK_ERR_CORRUPT, "registry %s: base model record unreadable", reg->path);
  for (uint32_t i = 0; !st && i < ci->n_targets; i++) {
    const reg_target *t = &ci->targets[i];
    char key[4200];
    snprintf(key, sizeof key, "%s.weight", t->name);
    json_t *s = json_object_get(shapes, key);
    if (!s)
      st = lk__fail(reg->ctx, LK_ERR_MISMATCH,
                    "%s does not fit base model '%s': it has no weight %s for target %s (force to record anyway)",
                    label, name, key, t->name);
    else if (json_integer_value(json_array_get(s, 0)) != t->out || json_integer_value(json_array_get(s, 1)) != t->in)
      st = lk__fail(reg->ctx, LK_ERR_MISMATCH,
                    "%s does not fit base model '%s': target %s is [%lld, %lld] (out, in), the base's %s is "
                    "[%lld, %lld] (force to record anyway)",
                    label, name, t->name, (long long)t->out, (long long)t->in, key,
                    (long long)json_integer_value(json_array_get(s, 0)), (long long)json_integer_value(json_array_get(s, 1)));
  }
  json_decref(shapes);
  free(shapes_s);
  free(name);
  return st;
}

/* ---- lk_registry_add_model ------------------------------------------------------------ */

static lk_status model_edge(lk_registry_t *reg, int64_t model, int64_t parent_version, int64_t parent_model,
                            const char *relation, const char *params) {
  sqlite3_stmt *q = NULL;
  lk_status st = reg_prepare(reg,
                             "INSERT INTO model_lineage(model, parent_version, parent_model, relation, params) "
                             "SELECT ?1, ?2, ?3, ?4, ?5 WHERE NOT EXISTS (SELECT 1 FROM model_lineage WHERE "
                             "model = ?1 AND parent_version IS ?2 AND parent_model IS ?3)",
                             &q);
  if (st) return st;
  sqlite3_bind_int64(q, 1, model);
  if (parent_version) sqlite3_bind_int64(q, 2, parent_version);
  if (parent_model) sqlite3_bind_int64(q, 3, parent_model);
  sqlite3_bind_text(q, 4, relation, -1, SQLITE_STATIC);
  sqlite3_bind_text(q, 5, params ? params : "{}", -1, SQLITE_STATIC);
  int rc = sqlite3_step(q);
  sqlite3_finalize(q);
  return rc == SQLITE_DONE ? LK_OK : reg_sql_fail(reg, rc, "recording a model's lineage");
}

LK_API lk_status lk_registry_add_model(lk_registry_t *reg, const char *name, const char *path,
                                       const lk_registry_model_opts_t *opts, char **out_name) {
  if (!reg || !path) return lk__fail(reg ? reg->ctx : NULL, LK_ERR_INVALID_ARG, "lk_registry_add_model: NULL argument");
  if (out_name) *out_name = NULL;
  lk_registry_model_opts_t o;
  lk_status st = reg_opts(reg, &o, sizeof o, opts, "lk_registry_model_opts_t");
  if (st || (st = reg_writable(reg, "add a model"))) return st;
  if (name && !reg_valid_name(name)) return reg_bad_name(reg, "model name", name);
  if (o.n_parents && (!o.parents || !reg_relation_valid(o.relation)))
    return lk__fail(reg->ctx, LK_ERR_INVALID_ARG, "%s: parents need a known relation (got %d)", path, o.relation);
  if ((st = reg_check_params(reg, path, o.params_json)) || (st = reg_check_text(reg, "notes", o.notes, 1)) ||
      (st = reg_check_text(reg, "operation", o.operation, 0)))
    return st;
  reg_model_info mi;
  reg_base base;
  memset(&base, 0, sizeof base);
  if ((st = reg_model_scan(reg, path, o.loader, &mi))) return st;
  if ((st = reg_base_prepare(reg, o.base, o.loader, &base))) goto out;
  if ((st = reg_begin(reg))) goto out;
  int64_t id = 0;
  for (uint32_t i = 0; i < o.n_parents; i++) { /* all parents exist before anything is written */
    reg_version v;
    if ((st = reg_resolve(reg, o.parents[i], &v))) {
      reg_wrap(reg, st, "%s: parent", path);
      goto rollback;
    }
  }
  if ((st = reg_base_commit(reg, &base)) || (st = reg_model_insert(reg, &mi, name, o.operation, o.notes, &id)))
    goto rollback;
  const char *rel = lk_registry_relation_name(reg_relation_valid(o.relation) ? o.relation : LK_REL_MERGED_FROM);
  for (uint32_t i = 0; i < o.n_parents; i++) {
    reg_version v;
    if ((st = reg_resolve(reg, o.parents[i], &v)) || (st = model_edge(reg, id, v.id, 0, rel, o.params_json))) goto rollback;
  }
  if (base.id > 0 && base.id != id && (st = model_edge(reg, id, 0, base.id, rel, o.params_json))) goto rollback;
  if ((st = reg_commit(reg))) goto out;
  if (out_name && !(*out_name = reg_strdup(mi.name))) st = lk__fail(reg->ctx, LK_ERR_NOMEM, "out of memory");
  if (!st) lk__ok(reg->ctx);
  goto out;
rollback:
  reg_rollback(reg);
out:
  reg_base_free(&base);
  reg_model_info_free(&mi);
  return st;
}
