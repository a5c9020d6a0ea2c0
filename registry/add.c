/* add.c - adding adapter versions: from a PEFT folder or GGUF LoRA file, or
 * from an adapter in memory. The slow work (loading, canonical bytes, hash,
 * compression, fingerprinting a base given by path) happens before the write
 * transaction; the transaction itself numbers the version, stores the
 * payload if new, and records base, tags and lineage - all or nothing. */
#include "reg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* Everything an add needs once the adapter is in canonical form. */
typedef struct add_job {
  const char *name;
  const char *format;
  const char *label; /* for messages: the path, or "adapter NAME" */
  lk_registry_add_opts_t o;
  reg_base base;
  unsigned char *buf;
  uint64_t n;
  reg_canon_info ci;
  char sha[REG_HEX];
  reg_zchunks z;
  reg_files files; /* add_path: the files as given (files.n == 0: none) */
  int have_files;
} add_job;

static void job_free(add_job *j) {
  reg_base_free(&j->base);
  free(j->buf);
  reg_canon_info_free(&j->ci);
  reg_zchunks_free(&j->z);
  reg_files_free(&j->files);
}

static lk_status check_opts(lk_registry_t *reg, const char *name, const lk_registry_add_opts_t *opts,
                            add_job *j) {
  lk_status st = reg_opts(reg, &j->o, sizeof j->o, opts, "lk_registry_add_opts_t");
  if (st || (st = reg_writable(reg, "add a version"))) return st;
  if (!reg_valid_name(name)) return reg_bad_name(reg, "adapter name", name);
  if (j->o.n_parents && !j->o.parents)
    return lk__fail(reg->ctx, LK_ERR_INVALID_ARG, "%s: n_parents is %u but parents is NULL", name, j->o.n_parents);
  /* A relation without parents links the version to its base model. */
  if (!j->o.n_parents && j->o.relation && j->o.base && !reg_relation_valid(j->o.relation))
    return lk__fail(reg->ctx, LK_ERR_INVALID_ARG,
                    "%s: the edge to base model '%s' needs a relation (trained_from, merged_from, quantized_from, "
                    "extracted_from, combined_from, imported); got %d",
                    name, j->o.base, j->o.relation);
  if (j->o.n_parents && !reg_relation_valid(j->o.relation))
    return lk__fail(reg->ctx, LK_ERR_INVALID_ARG,
                    "%s: parents need a relation (trained_from, merged_from, quantized_from, extracted_from, "
                    "combined_from, imported); got %d",
                    name, j->o.relation);
  if ((st = reg_check_params(reg, name, j->o.params_json)) || (st = reg_check_text(reg, "notes", j->o.notes, 1)) ||
      (st = reg_check_text(reg, "operation", j->o.operation, 0)) || (st = reg_check_text(reg, "format", j->o.format, 0)))
    return st;
  for (uint32_t i = 0; i < j->o.n_parents; i++) {
    reg_version v;
    if ((st = reg_resolve(reg, j->o.parents[i], &v)))
      return reg_wrap(reg, st, "%s: parent", name);
  }
  j->name = name;
  return LK_OK;
}

/* "q_proj", "v_proj": the distinct leaves of the target names, sorted (as
 * PEFT's target_modules). */
static char *target_modules(const reg_canon_info *ci) {
  json_t *arr = json_array();
  for (uint32_t i = 0; i < ci->n_targets; i++) {
    const char *dot = strrchr(ci->targets[i].name, '.');
    const char *leaf = dot ? dot + 1 : ci->targets[i].name;
    size_t k = 0, n = json_array_size(arr);
    while (k < n && strcmp(json_string_value(json_array_get(arr, k)), leaf) < 0) k++;
    if (k < n && !strcmp(json_string_value(json_array_get(arr, k)), leaf)) continue;
    json_array_insert_new(arr, k, json_string(leaf));
  }
  char *s = reg_json_string(arr);
  json_decref(arr);
  return s;
}

/* adapter id and the number its next version gets, creating the name. */
static lk_status next_version(lk_registry_t *reg, const char *name, int64_t *adapter_id, int64_t *version) {
  sqlite3_stmt *q = NULL;
  lk_status st = reg_prepare(reg, "INSERT OR IGNORE INTO adapters(name, created) VALUES(?, ?)", &q);
  if (st) return st;
  sqlite3_bind_text(q, 1, name, -1, SQLITE_STATIC);
  sqlite3_bind_int64(q, 2, (sqlite3_int64)time(NULL));
  int rc = sqlite3_step(q);
  sqlite3_finalize(q);
  if (rc != SQLITE_DONE) return reg_sql_fail(reg, rc, "recording an adapter name");
  if ((st = reg_prepare(reg, "UPDATE adapters SET next_version = next_version + 1 WHERE name = ? "
                             "RETURNING id, next_version - 1", &q)))
    return st;
  sqlite3_bind_text(q, 1, name, -1, SQLITE_STATIC);
  rc = sqlite3_step(q);
  if (rc == SQLITE_ROW) {
    *adapter_id = sqlite3_column_int64(q, 0);
    *version = sqlite3_column_int64(q, 1);
  }
  sqlite3_finalize(q);
  return rc == SQLITE_ROW ? LK_OK : reg_sql_fail(reg, rc, "numbering a version");
}

static lk_status insert_version(lk_registry_t *reg, add_job *j, int64_t adapter_id, int64_t version, int64_t *id) {
  uint32_t rank;
  float alpha;
  reg_canon_defaults(&j->ci, &rank, &alpha);
  char *modules = target_modules(&j->ci);
  if (!modules) return lk__fail(reg->ctx, LK_ERR_NOMEM, "out of memory");
  sqlite3_stmt *q = NULL;
  lk_status st = reg_prepare(reg,
                             "INSERT INTO versions(adapter_id, version, blob, model_id, rank, alpha, scaling, "
                             "target_modules, n_targets, format, size, created, operation, notes) "
                             "VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                             &q);
  if (!st) {
    sqlite3_bind_int64(q, 1, adapter_id);
    sqlite3_bind_int64(q, 2, version);
    sqlite3_bind_text(q, 3, j->sha, -1, SQLITE_STATIC);
    if (j->base.id > 0) sqlite3_bind_int64(q, 4, j->base.id);
    sqlite3_bind_int64(q, 5, rank);
    sqlite3_bind_double(q, 6, alpha);
    sqlite3_bind_text(q, 7, j->ci.scaling == LK_SCALING_RSLORA ? "alpha/sqrt(r)" : "alpha/r", -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 8, modules, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 9, j->ci.n_targets);
    sqlite3_bind_text(q, 10, j->format, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 11, (sqlite3_int64)j->n);
    sqlite3_bind_int64(q, 12, (sqlite3_int64)time(NULL));
    sqlite3_bind_text(q, 13, j->o.operation ? j->o.operation : "add", -1, SQLITE_STATIC);
    if (j->o.notes) sqlite3_bind_text(q, 14, j->o.notes, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    if (rc != SQLITE_DONE) st = reg_sql_fail(reg, rc, "recording a version");
    *id = sqlite3_last_insert_rowid(reg->db);
  }
  sqlite3_finalize(q);
  free(modules);
  return st;
}

/* Parents resolved inside the transaction, before the new version exists
 * (a parent given as NAME must not resolve to the version being added). */
static lk_status resolve_parents(lk_registry_t *reg, add_job *j, int64_t *ids) {
  for (uint32_t i = 0; i < j->o.n_parents; i++) {
    reg_version v;
    lk_status st = reg_resolve(reg, j->o.parents[i], &v);
    if (st) return reg_wrap(reg, st, "%s: parent", j->name);
    ids[i] = v.id;
  }
  return LK_OK;
}

static lk_status insert_edges(lk_registry_t *reg, add_job *j, int64_t child, const int64_t *ids) {
  sqlite3_stmt *q = NULL;
  lk_status st = reg_prepare(reg, "INSERT INTO lineage(child, parent, relation, params) VALUES(?,?,?,?)", &q);
  for (uint32_t i = 0; !st && i < j->o.n_parents; i++) {
    int dup = 0;
    for (uint32_t k = 0; k < i; k++) dup |= ids[k] == ids[i];
    if (dup) continue;
    sqlite3_reset(q);
    sqlite3_bind_int64(q, 1, child);
    sqlite3_bind_int64(q, 2, ids[i]);
    sqlite3_bind_text(q, 3, lk_registry_relation_name(j->o.relation), -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 4, j->o.params_json ? j->o.params_json : "{}", -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    if (rc != SQLITE_DONE) st = reg_sql_fail(reg, rc, "recording lineage");
  }
  sqlite3_finalize(q);
  return st;
}

/* The edge version -> base model: for a relation given without parent
 * versions (a fresh adapter trained_from its base), and for trained_from
 * with parents (training from an adapter also trains on the base). */
static int base_edge_wanted(const add_job *j) {
  return j->base.id > 0 && reg_relation_valid(j->o.relation) &&
         (!j->o.n_parents || j->o.relation == LK_REL_TRAINED_FROM);
}

static lk_status insert_base_edge(lk_registry_t *reg, add_job *j, int64_t child) {
  if (!base_edge_wanted(j)) return LK_OK;
  sqlite3_stmt *q = NULL;
  lk_status st = reg_prepare(reg, "INSERT INTO version_model_lineage(child, parent_model, relation, params) "
                                  "VALUES(?,?,?,?)", &q);
  if (st) return st;
  sqlite3_bind_int64(q, 1, child);
  sqlite3_bind_int64(q, 2, j->base.id);
  sqlite3_bind_text(q, 3, lk_registry_relation_name(j->o.relation), -1, SQLITE_STATIC);
  sqlite3_bind_text(q, 4, j->o.params_json ? j->o.params_json : "{}", -1, SQLITE_STATIC);
  int rc = sqlite3_step(q);
  sqlite3_finalize(q);
  return rc == SQLITE_DONE ? LK_OK : reg_sql_fail(reg, rc, "recording lineage to the base model");
}

/* From canonical bytes to a committed version. */
static lk_status add_commit(lk_registry_t *reg, add_job *j, char **out_ref) {
  lk_status st;
  char ref[REG_NAME_MAX + 24];
  if (j->base.id > 0 || j->base.scanned) {
    if (!j->o.force && (st = reg_base_check(reg, &j->base, &j->ci, j->label))) return st;
  }
  /* The same files again under the same name are that version, not a new one. */
  const char *digest = j->have_files ? j->files.digest : NULL;
  if (digest && !j->o.new_version && reg_match(reg, digest, NULL, NULL, j->name, ref, sizeof ref, NULL)) goto done;
  if (j->o.reuse_existing && reg_match(reg, digest, j->sha, j->format, NULL, ref, sizeof ref, NULL)) goto done;
  if (j->have_files && (st = reg_files_compress(reg, &j->files))) return st;
  if (!reg_blob_exists(reg, j->sha) && (st = reg_blob_compress(reg, j->buf, j->n, j->ci.header_size, &j->z)))
    return st;
  int64_t *parent_ids = calloc(j->o.n_parents + 1, sizeof *parent_ids);
  if (!parent_ids) return lk__fail(reg->ctx, LK_ERR_NOMEM, "out of memory");
  if ((st = reg_begin(reg))) {
    free(parent_ids);
    return st;
  }
  int64_t adapter_id = 0, version = 0, id = 0;
  if ((st = resolve_parents(reg, j, parent_ids)) || (st = reg_base_commit(reg, &j->base)) ||
      (st = next_version(reg, j->name, &adapter_id, &version)) ||
      (st = reg_blob_put(reg, j->sha, j->buf, j->n, j->ci.header_size, &j->z, j->o.progress, j->o.progress_user)) ||
      (st = insert_version(reg, j, adapter_id, version, &id)) || (st = insert_edges(reg, j, id, parent_ids)) ||
      (st = insert_base_edge(reg, j, id)) ||
      (j->have_files && (st = reg_files_put(reg, &j->files, id)))) {
    reg_rollback(reg);
    free(parent_ids);
    return st;
  }
  free(parent_ids);
  if ((st = reg_commit(reg))) return st;
  snprintf(ref, sizeof ref, "%s@%lld", j->name, (long long)version);
done:
  if (out_ref && !(*out_ref = reg_strdup(ref))) return lk__fail(reg->ctx, LK_ERR_NOMEM, "out of memory");
  lk__ok(reg->ctx);
  return LK_OK;
}

static lk_status encode(lk_registry_t *reg, add_job *j, lk_adapter_t *ad) {
  lk_status st = reg_canon_encode(reg, ad, &j->buf, &j->n, &j->ci);
  if (st) return reg_wrap(reg, st, "%s", j->label);
  if ((st = reg_canon_finite(reg, j->buf, j->n, &j->ci, j->label))) return st;
  reg_sha256_hex(j->buf, j->n, j->sha);
  if (!j->sha[0]) return lk__fail(reg->ctx, LK_ERR_INTERNAL, "%s: SHA-256 failed (libcrypto)", j->label);
  return LK_OK;
}

LK_API lk_status lk_registry_add_adapter(lk_registry_t *reg, const char *name, lk_adapter_t *ad,
                                         const lk_registry_add_opts_t *opts, char **out_ref) {
  if (!reg || !ad) return lk__fail(reg ? reg->ctx : NULL, LK_ERR_INVALID_ARG, "lk_registry_add_adapter: NULL argument");
  if (out_ref) *out_ref = NULL;
  add_job j;
  memset(&j, 0, sizeof j);
  char label[REG_NAME_MAX + 32];
  snprintf(label, sizeof label, "adapter %s", name ? name : "(null)");
  j.label = label;
  lk_status st = check_opts(reg, name, opts, &j);
  if (!st) {
    j.format = j.o.format ? j.o.format : "memory";
    if (!(st = reg_base_prepare(reg, j.o.base, NULL, &j.base)) && !(st = encode(reg, &j, ad)))
      st = add_commit(reg, &j, out_ref);
  }
  job_free(&j);
  return st;
}

LK_API lk_status lk_registry_add_path(lk_registry_t *reg, const char *name, const char *path,
                                      const lk_registry_add_opts_t *opts, char **out_ref) {
  if (!reg || !path) return lk__fail(reg ? reg->ctx : NULL, LK_ERR_INVALID_ARG, "lk_registry_add_path: NULL argument");
  if (out_ref) *out_ref = NULL;
  add_job j;
  memset(&j, 0, sizeof j);
  /* Messages about weights name the weights file of a PEFT folder. */
  char label[4096];
  struct stat sb;
  snprintf(label, sizeof label, "%s/adapter_model.safetensors", path);
  if (stat(label, &sb) || !S_ISREG(sb.st_mode)) snprintf(label, sizeof label, "%s", path);
  j.label = label;
  lk_adapter_t *ad = NULL;
  lk_model_t *m = NULL;
  char *base_cfg = NULL, *derived = name ? NULL : reg_name_from_path(path);
  if (!name && !derived) return lk__fail(reg->ctx, LK_ERR_NOMEM, "out of memory");
  lk_status st = check_opts(reg, name ? name : derived, opts, &j);
  if (st || (st = reg_base_prepare(reg, j.o.base, NULL, &j.base))) goto done;
  /* Which loader reads it is the format recorded. */
  if ((st = lk_model_open(reg->ctx, path, j.o.loader, &m))) goto done;
  j.format = lk_model_loader(m);
  lk_model_close(m);
  base_cfg = reg_base_config(reg, &j.base);
  if ((st = lk_adapter_load(reg->ctx, path, j.format, base_cfg, &ad)) || (st = encode(reg, &j, ad))) goto done;
  lk_adapter_free(ad); /* the files are read next: hold one copy of the weights less */
  ad = NULL;
  if ((st = reg_files_read(reg, path, 1, &j.files))) goto done;
  j.have_files = 1;
  st = add_commit(reg, &j, out_ref);
done:
  free(base_cfg);
  free(derived);
  lk_adapter_free(ad);
  job_free(&j);
  return st;
}
