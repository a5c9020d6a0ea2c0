/* maint.c - getting versions back (in memory or as files), tags, removal,
 * verification of every stored byte, and garbage collection of payloads. */
#include "reg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

LK_API lk_status lk_registry_get(lk_registry_t *reg, const char *ref, lk_adapter_t **out) {
  if (!reg || !out) return lk__fail(reg ? reg->ctx : NULL, LK_ERR_INVALID_ARG, "lk_registry_get: NULL argument");
  *out = NULL;
  reg_version v;
  unsigned char *buf = NULL;
  uint64_t n = 0;
  lk_status st = reg_resolve(reg, ref, &v);
  if (!st) st = reg_blob_get(reg, v.sha, 0, &buf, &n, v.ref);
  if (!st) st = reg_canon_decode(reg, buf, n, out, v.ref);
  free(buf);
  if (!st) lk__ok(reg->ctx);
  return st;
}

LK_API lk_status lk_registry_export(lk_registry_t *reg, const char *ref, const char *path, const char *format) {
  if (!reg || !path) return lk__fail(reg ? reg->ctx : NULL, LK_ERR_INVALID_ARG, "lk_registry_export: NULL argument");
  if (format && strcmp(format, "peft") && strcmp(format, "gguf-lora"))
    return lk__fail(reg->ctx, LK_ERR_INVALID_ARG, "export: format '%s' is not peft or gguf-lora", format);
  reg_version v;
  lk_adapter_t *ad = NULL;
  lk_status st = reg_resolve(reg, ref, &v);
  if (st) return st;
  /* The stored files, byte for byte, when the stored format is asked for. */
  int is_dir = 0;
  if (reg_files_of(reg, v.id, &is_dir)) {
    char stored[64] = "";
    sqlite3_stmt *q = NULL;
    if ((st = reg_prepare(reg, "SELECT format FROM versions WHERE id = ?", &q))) return st;
    sqlite3_bind_int64(q, 1, v.id);
    if (sqlite3_step(q) == SQLITE_ROW) snprintf(stored, sizeof stored, "%s", (const char *)sqlite3_column_text(q, 0));
    sqlite3_finalize(q);
    if (!format || !strcmp(format, stored)) {
      if ((st = reg_files_export(reg, &v, path, is_dir))) return reg_wrap(reg, st, "export %s to %s", v.ref, path);
      lk__ok(reg->ctx);
      return LK_OK;
    }
  }
  if (!format) format = "peft";
  if ((st = lk_registry_get(reg, ref, &ad))) return st;
  char *cfg = v.model_id ? reg_model_config(reg, v.model_id) : NULL;
  st = lk_adapter_save(ad, path, format, cfg);
  if (st) reg_wrap(reg, st, "export %s to %s (%s)", v.ref, path, format);
  free(cfg);
  lk_adapter_free(ad);
  if (!st) lk__ok(reg->ctx);
  return st;
}

/* ---- tags ------------------------------------------------------------------------ */

LK_API lk_status lk_registry_tag(lk_registry_t *reg, const char *ref, const char *tag) {
  if (!reg) return LK_ERR_INVALID_ARG;
  lk_status st = reg_writable(reg, "tag");
  if (st) return st;
  if (!reg_valid_name(tag)) return reg_bad_name(reg, "tag", tag);
  if (!strcmp(tag, "latest"))
    return lk__fail(reg->ctx, LK_ERR_INVALID_ARG, "tag 'latest' is kept automatically (the newest version)");
  if ((st = reg_begin(reg))) return st;
  reg_version v;
  sqlite3_stmt *q = NULL;
  if ((st = reg_resolve(reg, ref, &v)) ||
      (st = reg_prepare(reg,
                        "INSERT INTO tags(adapter_id, tag, version_id) VALUES(?,?,?) "
                        "ON CONFLICT(adapter_id, tag) DO UPDATE SET version_id = excluded.version_id",
                        &q)))
    goto fail;
  sqlite3_bind_int64(q, 1, v.adapter_id);
  sqlite3_bind_text(q, 2, tag, -1, SQLITE_STATIC);
  sqlite3_bind_int64(q, 3, v.id);
  int rc = sqlite3_step(q);
  sqlite3_finalize(q);
  if (rc != SQLITE_DONE) {
    st = reg_sql_fail(reg, rc, "tagging");
    goto fail;
  }
  if ((st = reg_commit(reg))) return st;
  lk__ok(reg->ctx);
  return LK_OK;
fail:
  reg_rollback(reg);
  return st;
}

LK_API lk_status lk_registry_untag(lk_registry_t *reg, const char *name, const char *tag) {
  if (!reg) return LK_ERR_INVALID_ARG;
  lk_status st = reg_writable(reg, "untag");
  if (st) return st;
  if (!reg_valid_name(name)) return reg_bad_name(reg, "adapter name", name);
  if (!reg_valid_name(tag)) return reg_bad_name(reg, "tag", tag);
  if (!strcmp(tag, "latest"))
    return lk__fail(reg->ctx, LK_ERR_INVALID_ARG, "tag 'latest' is kept automatically and cannot be removed");
  sqlite3_stmt *q = NULL;
  if ((st = reg_begin(reg))) return st;
  if ((st = reg_prepare(reg, "DELETE FROM tags WHERE tag = ? AND adapter_id = (SELECT id FROM adapters WHERE name = ?)",
                        &q)))
    goto fail;
  sqlite3_bind_text(q, 1, tag, -1, SQLITE_STATIC);
  sqlite3_bind_text(q, 2, name, -1, SQLITE_STATIC);
  int rc = sqlite3_step(q);
  sqlite3_finalize(q);
  if (rc != SQLITE_DONE) {
    st = reg_sql_fail(reg, rc, "untagging");
    goto fail;
  }
  if (sqlite3_changes(reg->db) == 0) {
    st = lk__fail(reg->ctx, LK_ERR_NOT_FOUND, "%s:%s: no such tag in registry %s", name, tag, reg->path);
    goto fail;
  }
  if ((st = reg_commit(reg))) return st;
  lk__ok(reg->ctx);
  return LK_OK;
fail:
  reg_rollback(reg);
  return st;
}

/* ---- remove ------------------------------------------------------------------------ */

/* "tag prod, tag dev, child a@3, model m" - what needs version id. */
static void dependents(lk_registry_t *reg, int64_t id, char *buf, size_t n) {
  sqlite3_stmt *q = NULL;
  size_t used = 0;
  buf[0] = '\0';
  if (reg_prepare(reg,
                  "SELECT 'tag ' || tag FROM tags WHERE version_id = ?1 UNION ALL "
                  "SELECT 'child ' || a.name || '@' || v.version FROM lineage l JOIN versions v ON v.id = l.child "
                  "JOIN adapters a ON a.id = v.adapter_id WHERE l.parent = ?1 UNION ALL "
                  "SELECT 'model ' || m.name FROM model_lineage ml JOIN models m ON m.id = ml.model "
                  "WHERE ml.parent_version = ?1",
                  &q))
    return;
  sqlite3_bind_int64(q, 1, id);
  while (sqlite3_step(q) == SQLITE_ROW && used + 8 < n)
    used += (size_t)snprintf(buf + used, n - used, "%s%s", used ? ", " : "", (const char *)sqlite3_column_text(q, 0));
  sqlite3_finalize(q);
}

LK_API lk_status lk_registry_remove(lk_registry_t *reg, const char *ref, uint32_t force) {
  if (!reg) return LK_ERR_INVALID_ARG;
  lk_status st = reg_writable(reg, "remove");
  if (st || (st = reg_begin(reg))) return st;
  reg_version v;
  if ((st = reg_resolve(reg, ref, &v))) goto fail;
  char deps[1024];
  dependents(reg, v.id, deps, sizeof deps);
  if (deps[0] && !force) {
    st = lk__fail(reg->ctx, LK_ERR_STATE, "%s is still needed (%s): remove those first, or force", v.ref, deps);
    goto fail;
  }
  static const char *const sql[] = {
      "DELETE FROM tags WHERE version_id = ?1",
      "DELETE FROM lineage WHERE child = ?1 OR parent = ?1",
      "DELETE FROM model_lineage WHERE parent_version = ?1",
      "DELETE FROM version_model_lineage WHERE child = ?1",
      "DELETE FROM files WHERE version_id = ?1",
      "DELETE FROM versions WHERE id = ?1",
  };
  for (size_t i = 0; i < sizeof sql / sizeof sql[0] && !st; i++) {
    sqlite3_stmt *q = NULL;
    if ((st = reg_prepare(reg, sql[i], &q))) break;
    sqlite3_bind_int64(q, 1, v.id);
    int rc = sqlite3_step(q);
    sqlite3_finalize(q);
    if (rc != SQLITE_DONE) st = reg_sql_fail(reg, rc, "removing");
  }
  if (st) goto fail;
  if ((st = reg_commit(reg))) return st;
  lk__ok(reg->ctx);
  return LK_OK;
fail:
  reg_rollback(reg);
  return st;
}

/* Payloads neither a version nor a stored file refers to. */
#define UNREFERENCED                                                                                                 \
  "sha256 NOT IN (SELECT blob FROM versions) AND sha256 NOT IN (SELECT blob FROM files WHERE blob IS NOT NULL)"

/* ---- verify -------------------------------------------------------------------------- */

/* "a@1, b@3": the versions that store payload sha. */
static json_t *versions_of(lk_registry_t *reg, const char *sha) {
  json_t *arr = json_array();
  sqlite3_stmt *q = NULL;
  if (reg_prepare(reg,
                  reg->schema >= 3
                      ? "SELECT a.name || '@' || v.version FROM versions v JOIN adapters a ON a.id = v.adapter_id "
                        "WHERE v.blob = ?1 OR v.id IN (SELECT version_id FROM files WHERE blob = ?1) "
                        "ORDER BY a.name, v.version"
                      : "SELECT a.name || '@' || v.version FROM versions v JOIN adapters a ON a.id = v.adapter_id "
                        "WHERE v.blob = ?1 ORDER BY a.name, v.version",
                  &q))
    return arr;
  sqlite3_bind_text(q, 1, sha, -1, SQLITE_STATIC);
  while (sqlite3_step(q) == SQLITE_ROW) /* a name not valid UTF-8 (written by hand) is shown escaped */
    json_array_append_new(arr, json_stringn_nocheck((const char *)sqlite3_column_text(q, 0),
                                                    (size_t)sqlite3_column_bytes(q, 0)));
  sqlite3_finalize(q);
  return arr;
}

static void problem(json_t *problems, const char *what, const char *sha, json_t *versions) {
  json_t *p = json_pack("{s:s}", "problem", what);
  if (sha) json_object_set_new(p, "sha256", json_string(sha));
  json_object_set_new(p, "versions", versions ? versions : json_array());
  json_array_append_new(problems, p);
}

/* PRAGMA quick_check and foreign_key_check. */
static lk_status check_structure(lk_registry_t *reg, json_t *problems) {
  sqlite3_stmt *q = NULL;
  lk_status st = reg_prepare(reg, "PRAGMA quick_check", &q);
  if (st) return st;
  int rc;
  while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
    const char *msg = (const char *)sqlite3_column_text(q, 0);
    if (msg && strcmp(msg, "ok")) problem(problems, msg, NULL, NULL);
  }
  sqlite3_finalize(q);
  if (rc != SQLITE_DONE) return reg_sql_fail(reg, rc, "checking the database structure");
  if ((st = reg_prepare(reg, "PRAGMA foreign_key_check", &q))) return st;
  while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
    char msg[256];
    snprintf(msg, sizeof msg, "table %s row %lld refers to a missing %s row", (const char *)sqlite3_column_text(q, 0),
             (long long)sqlite3_column_int64(q, 1), (const char *)sqlite3_column_text(q, 2));
    problem(problems, msg, NULL, NULL);
  }
  sqlite3_finalize(q);
  return rc == SQLITE_DONE ? LK_OK : reg_sql_fail(reg, rc, "checking references");
}

/* Re-read and re-hash every payload. */
static lk_status check_payloads(lk_registry_t *reg, json_t *problems, int64_t *n_blobs, int64_t *bytes) {
  sqlite3_stmt *q = NULL;
  /* Payloads of versions are canonical bytes, parsed as such; stored files
   * are checked against their hash alone. */
  lk_status st =
      reg_prepare(reg, "SELECT sha256, EXISTS(SELECT 1 FROM versions WHERE blob = sha256) FROM blobs ORDER BY sha256", &q);
  if (st) return st;
  int rc;
  while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
    char sha[REG_HEX];
    snprintf(sha, sizeof sha, "%s", (const char *)sqlite3_column_text(q, 0));
    json_t *versions = versions_of(reg, sha);
    char label[256];
    const char *first = json_string_value(json_array_get(versions, 0));
    snprintf(label, sizeof label, "%s", first ? first : "an unreferenced payload");
    unsigned char *buf = NULL;
    uint64_t n = 0;
    reg_canon_info ci;
    int canonical = sqlite3_column_int(q, 1);
    lk_status bst = reg_blob_get(reg, sha, 0, &buf, &n, label);
    /* An unreferenced payload may be either: its magic says which. */
    if (!bst && !canonical) canonical = n >= 8 && !memcmp(buf, "LKADAPT1", 8);
    if (!bst && canonical && !(bst = reg_canon_parse(reg, buf, n, 1, &ci, label))) reg_canon_info_free(&ci);
    free(buf);
    (*n_blobs)++;
    *bytes += (int64_t)n;
    if (bst == LK_ERR_NOMEM) {
      st = bst;
      json_decref(versions);
      break;
    }
    if (bst) problem(problems, lk_last_error(reg->ctx), sha, versions);
    else json_decref(versions);
  }
  sqlite3_finalize(q);
  if (!st && rc != SQLITE_DONE) st = reg_sql_fail(reg, rc, "reading payloads");
  return st;
}

static int64_t count_of(lk_registry_t *reg, const char *sql) {
  sqlite3_stmt *q = NULL;
  int64_t n = 0;
  if (reg_prepare(reg, sql, &q)) return -1;
  if (sqlite3_step(q) == SQLITE_ROW) n = sqlite3_column_int64(q, 0);
  sqlite3_finalize(q);
  return n;
}

/* 1 when verify marked the registry damaged before. */
static int marked(lk_registry_t *reg) {
  return count_of(reg, "SELECT count(*) FROM sqlite_master WHERE name = 'meta'") > 0 &&
         count_of(reg, "SELECT count(*) FROM meta WHERE key = 'damaged'") > 0;
}

LK_API lk_status lk_registry_verify(lk_registry_t *reg, char **out_json) {
  if (!reg) return LK_ERR_INVALID_ARG;
  if (out_json) *out_json = NULL;
  json_t *problems = json_array();
  int64_t n_blobs = 0, bytes = 0;
  lk_status st = reg_exec(reg, "BEGIN"); /* one snapshot */
  if (!st) {
    st = check_structure(reg, problems);
    if (!st) st = check_payloads(reg, problems, &n_blobs, &bytes);
  }
  int64_t n_versions = count_of(reg, "SELECT count(*) FROM versions");
  int64_t stored = count_of(reg, "SELECT coalesce(sum(stored), 0) FROM blobs");
  int64_t unref = count_of(reg, reg->schema >= 3 ? "SELECT count(*) FROM blobs WHERE " UNREFERENCED
                                                 : "SELECT count(*) FROM blobs WHERE sha256 NOT IN (SELECT blob FROM versions)");
  reg_exec(reg, "COMMIT");
  if (st) {
    json_decref(problems);
    return st;
  }
  size_t np = json_array_size(problems);
  json_t *doc = json_pack("{s:b, s:I, s:I, s:I, s:I, s:I, s:O}", "ok", np == 0, "versions", (json_int_t)n_versions,
                          "blobs", (json_int_t)n_blobs, "unreferenced_blobs", (json_int_t)unref, "bytes",
                          (json_int_t)bytes, "stored", (json_int_t)stored, "problems", problems);
  if (out_json && (!doc || !(*out_json = reg_json_string(doc)))) st = lk__fail(reg->ctx, LK_ERR_NOMEM, "out of memory");
  if (!st && np) {
    json_t *p = json_array_get(problems, 0), *vs = json_object_get(p, "versions");
    char which[256] = "";
    if (json_array_size(vs))
      snprintf(which, sizeof which, " (version %s%s)", json_string_value(json_array_get(vs, 0)),
               json_array_size(vs) > 1 ? " and others" : "");
    st = lk__fail(reg->ctx, LK_ERR_CORRUPT, "registry %s: %zu problem%s; first: %s%s", reg->path, np,
                  np == 1 ? "" : "s", json_string_value(json_object_get(p, "problem")), which);
  }
  /* Damage found is remembered in the file: writes refuse it from then on
   * (reg_writable); a clean verify lifts that. */
  if (!st || st == LK_ERR_CORRUPT) {
    char first[LK_ERROR_MAX];
    snprintf(first, sizeof first, "%s", st ? lk_last_error(reg->ctx) : "");
    if (np || marked(reg)) reg_mark_damaged(reg, np ? first : NULL);
    if (st) lk__fail(reg->ctx, st, "%s", first);
  }
  json_decref(doc);
  json_decref(problems);
  if (!st) lk__ok(reg->ctx);
  return st;
}

/* ---- gc -------------------------------------------------------------------------------- */

LK_API lk_status lk_registry_gc(lk_registry_t *reg, char **out_json) {
  if (!reg) return LK_ERR_INVALID_ARG;
  if (out_json) *out_json = NULL;
  lk_status st = reg_writable(reg, "collect garbage");
  if (st || (st = reg_begin(reg))) return st;
  int64_t n = count_of(reg, "SELECT count(*) FROM blobs WHERE " UNREFERENCED);
  int64_t bytes = count_of(reg, "SELECT coalesce(sum(stored), 0) FROM blobs WHERE " UNREFERENCED);
  if (n < 0 || bytes < 0 || (st = reg_exec(reg, "DELETE FROM blobs WHERE " UNREFERENCED))) {
    if (!st) st = lk_last_status(reg->ctx);
    reg_rollback(reg);
    return st;
  }
  if ((st = reg_commit(reg))) return st;
  /* Hand the freed pages back (the file was created with incremental
   * auto-vacuum) and fold the WAL into the file. Failure here loses nothing. */
  if (n > 0) {
    sqlite3_exec(reg->db, "PRAGMA incremental_vacuum", NULL, NULL, NULL);
    sqlite3_exec(reg->db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL);
  }
  if (out_json) {
    json_t *doc = json_pack("{s:I, s:I}", "blobs_removed", (json_int_t)n, "bytes_freed", (json_int_t)bytes);
    if (!doc || !(*out_json = reg_json_string(doc))) st = lk__fail(reg->ctx, LK_ERR_NOMEM, "out of memory");
    json_decref(doc);
  }
  if (!st) lk__ok(reg->ctx);
  return st;
}
