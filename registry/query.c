/* query.c - reading the registry as JSON documents: the version list (with
 * filters), one version in detail, and the base models. Rows are built as
 * JSON by SQLite itself and joined here in row order. */
#include "reg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One version as a JSON object. The FROM clause binds v (versions),
 * a (adapters), m (models, may be NULL) and b (blobs). */
#define VERSION_JSON                                                                                             \
  "json_object('ref', a.name || '@' || v.version, 'name', a.name, 'version', v.version,"                         \
  " 'tags', (SELECT json_group_array(t) FROM (SELECT 'latest' AS t WHERE v.version = (SELECT max(x.version)"     \
  "   FROM versions x WHERE x.adapter_id = v.adapter_id) UNION ALL SELECT tag FROM (SELECT tag FROM tags"          \
  "   WHERE version_id = v.id ORDER BY tag))),"                                                                  \
  " 'base', m.name, 'base_fingerprint', m.fingerprint, 'rank', v.rank, 'alpha', v.alpha, 'scaling', v.scaling,"  \
  " 'target_modules', json(v.target_modules), 'n_targets', v.n_targets, 'format', v.format, 'size', v.size,"     \
  " 'stored', b.stored, 'sha256', v.blob, 'created', strftime('%Y-%m-%dT%H:%M:%SZ', v.created, 'unixepoch'),"    \
  " 'operation', v.operation, 'notes', v.notes,"                                                                 \
  " 'parents', (SELECT json_group_array(json_object('ref', pa.name || '@' || pv.version, 'relation', l.relation," \
  "   'params', json(l.params))) FROM lineage l JOIN versions pv ON pv.id = l.parent"                            \
  "   JOIN adapters pa ON pa.id = pv.adapter_id WHERE l.child = v.id))"

#define VERSION_FROM                                                                                   \
  " FROM versions v JOIN adapters a ON a.id = v.adapter_id LEFT JOIN models m ON m.id = v.model_id" \
  " LEFT JOIN blobs b ON b.sha256 = v.blob"

/* Step q (one JSON text column) into "[row,row,...]"; malloc'd in *out. */
static lk_status join_rows(lk_registry_t *reg, sqlite3_stmt *q, char **out) {
  size_t n = 1, cap = 4096;
  char *buf = malloc(cap);
  if (!buf) return lk__fail(reg->ctx, LK_ERR_NOMEM, "out of memory");
  buf[0] = '[';
  int rc, first = 1;
  while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
    const char *row = (const char *)sqlite3_column_text(q, 0);
    size_t len = (size_t)sqlite3_column_bytes(q, 0);
    if (!row) continue;
    if (n + len + 3 > cap) {
      while (n + len + 3 > cap) cap *= 2;
      char *p = realloc(buf, cap);
      if (!p) {
        free(buf);
        return lk__fail(reg->ctx, LK_ERR_NOMEM, "out of memory");
      }
      buf = p;
    }
    if (!first) buf[n++] = ',';
    first = 0;
    memcpy(buf + n, row, len);
    n += len;
  }
  if (rc != SQLITE_DONE) {
    free(buf);
    return reg_sql_fail(reg, rc, "listing");
  }
  buf[n++] = ']';
  buf[n] = '\0';
  *out = buf;
  return LK_OK;
}

LK_API lk_status lk_registry_list(lk_registry_t *reg, const lk_registry_list_opts_t *opts, char **out_json) {
  if (!reg || !out_json) return lk__fail(reg ? reg->ctx : NULL, LK_ERR_INVALID_ARG, "lk_registry_list: NULL argument");
  *out_json = NULL;
  lk_registry_list_opts_t o;
  lk_status st = reg_opts(reg, &o, sizeof o, opts, "lk_registry_list_opts_t");
  if (st) return st;
  int64_t model = 0;
  if (o.base && (model = reg_model_by_name(reg, o.base)) <= 0)
    return lk__fail(reg->ctx, LK_ERR_NOT_FOUND, "no base model '%s' in registry %s", o.base, reg->path);
  if (o.name && !reg_valid_name(o.name)) return reg_bad_name(reg, "adapter name", o.name);
  if (o.tag && !reg_valid_name(o.tag)) return reg_bad_name(reg, "tag", o.tag);
  sqlite3_stmt *q = NULL;
  st = reg_prepare(reg,
                   "SELECT " VERSION_JSON VERSION_FROM
                   " WHERE (?1 IS NULL OR a.name = ?1) AND (?2 IS NULL OR v.model_id = ?2)"
                   " AND (?3 IS NULL OR (?3 = 'latest' AND v.version = (SELECT max(x.version) FROM versions x"
                   "   WHERE x.adapter_id = v.adapter_id))"
                   "   OR EXISTS (SELECT 1 FROM tags t WHERE t.version_id = v.id AND t.tag = ?3))"
                   " ORDER BY a.name, CASE WHEN ?4 THEN -v.version ELSE v.version END LIMIT ?5",
                   &q);
  if (st) return st;
  if (o.name) sqlite3_bind_text(q, 1, o.name, -1, SQLITE_STATIC);
  if (o.base) sqlite3_bind_int64(q, 2, model);
  if (o.tag) sqlite3_bind_text(q, 3, o.tag, -1, SQLITE_STATIC);
  sqlite3_bind_int(q, 4, o.newest_first != 0);
  sqlite3_bind_int64(q, 5, o.limit ? (sqlite3_int64)o.limit : -1);
  st = join_rows(reg, q, out_json);
  sqlite3_finalize(q);
  if (!st) lk__ok(reg->ctx);
  return st;
}

/* The targets of a version from its payload's first chunk (the header). */
static lk_status targets_of(lk_registry_t *reg, const reg_version *v, json_t **out) {
  unsigned char *buf = NULL;
  uint64_t n = 0;
  lk_status st = reg_blob_get(reg, v->sha, 1, &buf, &n, v->ref);
  if (st) return st;
  reg_canon_info ci;
  st = reg_canon_parse(reg, buf, n, 0, &ci, v->ref);
  free(buf);
  if (st) return st;
  json_t *arr = json_array();
  for (uint32_t i = 0; i < ci.n_targets; i++) {
    const reg_target *t = &ci.targets[i];
    json_array_append_new(arr, json_pack("{s:s, s:i, s:f, s:I, s:I}", "name", t->name, "rank", (int)t->rank, "alpha",
                                         (double)t->alpha, "in", (json_int_t)t->in, "out", (json_int_t)t->out));
  }
  reg_canon_info_free(&ci);
  *out = arr;
  return LK_OK;
}

/* Run a query whose one row holds one JSON text; parsed into *out. */
static lk_status json_query(lk_registry_t *reg, const char *sql, int64_t id, json_t **out) {
  sqlite3_stmt *q = NULL;
  lk_status st = reg_prepare(reg, sql, &q);
  if (st) return st;
  sqlite3_bind_int64(q, 1, id);
  int rc = sqlite3_step(q);
  *out = NULL;
  if (rc == SQLITE_ROW && sqlite3_column_text(q, 0)) {
    json_error_t jerr;
    *out = json_loads((const char *)sqlite3_column_text(q, 0), 0, &jerr);
  } else if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
    st = reg_sql_fail(reg, rc, "reading");
  }
  sqlite3_finalize(q);
  if (!st && !*out) *out = json_null();
  return st;
}

LK_API lk_status lk_registry_show(lk_registry_t *reg, const char *ref, char **out_json) {
  if (!reg || !out_json) return lk__fail(reg ? reg->ctx : NULL, LK_ERR_INVALID_ARG, "lk_registry_show: NULL argument");
  *out_json = NULL;
  reg_version v;
  json_t *obj = NULL, *targets = NULL, *children = NULL, *model = NULL;
  lk_status st = reg_resolve(reg, ref, &v);
  if (st) return st;
  if ((st = json_query(reg, "SELECT " VERSION_JSON VERSION_FROM " WHERE v.id = ?1", v.id, &obj)) ||
      (st = targets_of(reg, &v, &targets)))
    goto done;
  if ((st = json_query(reg,
                       "SELECT json_group_array(json_object('ref', r, 'kind', k, 'relation', rel)) FROM ("
                       " SELECT ca.name || '@' || cv.version AS r, 'adapter' AS k, l.relation AS rel"
                       " FROM lineage l JOIN versions cv ON cv.id = l.child JOIN adapters ca ON ca.id = cv.adapter_id"
                       " WHERE l.parent = ?1 UNION ALL"
                       " SELECT m.name, 'model', ml.relation FROM model_lineage ml JOIN models m ON m.id = ml.model"
                       " WHERE ml.parent_version = ?1)",
                       v.id, &children)))
    goto done;
  if (v.model_id &&
      (st = json_query(reg,
                       "SELECT json_object('name', name, 'architecture', architecture, 'fingerprint', fingerprint,"
                       " 'path', path, 'parameters', n_params) FROM models WHERE id = ?1",
                       v.model_id, &model)))
    goto done;
  if (!json_is_object(obj)) {
    st = lk__fail(reg->ctx, LK_ERR_INTERNAL, "%s: could not read the version", v.ref);
    goto done;
  }
  json_object_set(obj, "targets", targets);
  json_object_set(obj, "children", children);
  json_object_set(obj, "base_model", model ? model : json_null());
  if (!(*out_json = reg_json_string(obj))) st = lk__fail(reg->ctx, LK_ERR_NOMEM, "out of memory");
done:
  json_decref(obj);
  json_decref(targets);
  json_decref(children);
  json_decref(model);
  if (!st) lk__ok(reg->ctx);
  return st;
}

LK_API lk_status lk_registry_models(lk_registry_t *reg, char **out_json) {
  if (!reg || !out_json) return lk__fail(reg ? reg->ctx : NULL, LK_ERR_INVALID_ARG, "lk_registry_models: NULL argument");
  *out_json = NULL;
  sqlite3_stmt *q = NULL;
  lk_status st = reg_prepare(
      reg,
      "SELECT json_object('name', m.name, 'architecture', m.architecture, 'fingerprint', m.fingerprint,"
      " 'path', m.path, 'parameters', m.n_params, 'created', strftime('%Y-%m-%dT%H:%M:%SZ', m.created, 'unixepoch'),"
      " 'operation', m.operation, 'notes', m.notes,"
      " 'adapters', (SELECT count(*) FROM versions v WHERE v.model_id = m.id),"
      " 'parents', (SELECT json_group_array(json_object('ref', CASE WHEN ml.parent_version IS NOT NULL"
      "   THEN (SELECT a.name || '@' || v.version FROM versions v JOIN adapters a ON a.id = v.adapter_id"
      "         WHERE v.id = ml.parent_version)"
      "   ELSE (SELECT p.name FROM models p WHERE p.id = ml.parent_model) END,"
      "   'kind', CASE WHEN ml.parent_version IS NOT NULL THEN 'adapter' ELSE 'model' END,"
      "   'relation', ml.relation, 'params', json(ml.params))) FROM model_lineage ml WHERE ml.model = m.id))"
      " FROM models m ORDER BY m.name",
      &q);
  if (st) return st;
  st = join_rows(reg, q, out_json);
  sqlite3_finalize(q);
  if (!st) lk__ok(reg->ctx);
  return st;
}
