/* query.c - reading the registry as JSON documents: the version list (with
 * filters), one version in detail, and the base models. Rows are built as
 * JSON by SQLite itself and joined here in row order. */
#include "reg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Step q (one JSON text column) into "[row,row,...]"; malloc'd in *out. */
static lk_status join_rows(lk_registry_t *reg, sqlite3_stmt *q, char **out) {
  reg_out o = {0};
  int rc, first = 1;
  reg_out_c(&o, '[');
  while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
    const char *row = (const char *)sqlite3_column_text(q, 0);
    if (!row) continue;
    if (!first) reg_out_c(&o, ',');
    first = 0;
    reg_out_raw(&o, row, (size_t)sqlite3_column_bytes(q, 0));
  }
  reg_out_c(&o, ']');
  if (rc != SQLITE_DONE) {
    free(o.p);
    return reg_sql_fail(reg, rc, "listing");
  }
  return reg_out_finish(reg, &o, out);
}

/* ---- the version list, written straight from rows ------------------------------------ */

/* Columns of one version; the caller appends its WHERE and ORDER BY. */
#define ROW_SELECT                                                                                                 \
  "SELECT v.id, a.name, v.version, m.name, m.fingerprint, v.rank, v.alpha, v.scaling, v.target_modules,"         \
  " v.n_targets, v.format, v.size, NULL, v.blob, v.created, v.operation, v.notes, v.adapter_id"                  \
  " FROM versions v JOIN adapters a ON a.id = v.adapter_id LEFT JOIN models m ON m.id = v.model_id"

/* Append a string literal. */
#define RAW(o, lit) reg_out_raw(o, lit, sizeof lit - 1)

/* What each version row needs from other tables - its tags, its parents,
 * whether it is the newest of its name - read up front in three sorted
 * bulk queries (per-row lookups cost several times more for long lists). */
typedef struct span {
  int64_t key;
  uint32_t off, len; /* JSON text in the arena (for latest: off = the newest version) */
} span;

typedef struct sides {
  span *tags, *parents, *latest;
  uint32_t ntags, nparents, nlatest;
  reg_out arena;
} sides;

/* Which versions the side tables are read for. */
typedef struct scope {
  const char *name; /* adapter name, or NULL */
  int64_t model;    /* base model id, or 0 */
  int64_t id;       /* one version id, or 0 */
} scope;

static void sides_free(sides *sd) {
  free(sd->tags);
  free(sd->parents);
  free(sd->latest);
  free(sd->arena.p);
  memset(sd, 0, sizeof *sd);
}

static void bind_scope(sqlite3_stmt *q, const scope *sc) {
  if (sc->name) sqlite3_bind_text(q, 1, sc->name, -1, SQLITE_STATIC);
  if (sc->model) sqlite3_bind_int64(q, 2, sc->model);
  if (sc->id) sqlite3_bind_int64(q, 3, sc->id);
}

/* " WHERE <column> IN (the scope's versions)", or "" for all. */
static void scope_where(const scope *sc, const char *column, char *buf, size_t n) {
  if (sc->id) snprintf(buf, n, " WHERE %s = ?3", column);
  else if (sc->name || sc->model)
    snprintf(buf, n,
             " WHERE %s IN (SELECT v.id FROM versions v WHERE (?1 IS NULL OR v.adapter_id = (SELECT id FROM adapters"
             " WHERE name = ?1)) AND (?2 IS NULL OR v.model_id = ?2))",
             column);
  else buf[0] = '\0';
}

/* Run sql (rows: key, then the fields `item` writes, sorted by key) and
 * gather each key's items, comma-separated, as one span. */
static lk_status load_spans(lk_registry_t *reg, const char *sql, const scope *sc, reg_out *arena,
                            void (*item)(reg_out *, sqlite3_stmt *), span **out, uint32_t *n_out) {
  sqlite3_stmt *q = NULL;
  lk_status st = reg_prepare(reg, sql, &q);
  if (st) return st;
  bind_scope(q, sc);
  span *v = NULL;
  uint32_t n = 0, cap = 0;
  int rc;
  while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
    int64_t key = sqlite3_column_int64(q, 0);
    if (!n || v[n - 1].key != key) {
      if (n == cap) {
        cap = cap ? 2 * cap : 256;
        span *p = realloc(v, cap * sizeof *v);
        if (!p) {
          st = lk__fail(reg->ctx, LK_ERR_NOMEM, "out of memory");
          break;
        }
        v = p;
      }
      v[n++] = (span){key, (uint32_t)arena->n, 0};
    } else {
      reg_out_c(arena, ',');
    }
    item(arena, q);
    v[n - 1].len = (uint32_t)(arena->n - v[n - 1].off);
  }
  sqlite3_finalize(q);
  if (!st && rc != SQLITE_DONE) st = reg_sql_fail(reg, rc, "listing");
  if (!st && arena->oom) st = lk__fail(reg->ctx, LK_ERR_NOMEM, "out of memory");
  if (st) free(v);
  else {
    *out = v;
    *n_out = n;
  }
  return st;
}

static const char *col(sqlite3_stmt *q, int i) { return (const char *)sqlite3_column_text(q, i); }

static void tag_item(reg_out *o, sqlite3_stmt *q) { reg_out_str(o, col(q, 1)); }


/* One lineage edge while the parents are gathered. */
typedef struct pedge {
  int64_t child, version;
  uint32_t name, relation, params; /* offsets into a scratch arena */
  const char *zname;               /* set once the arena stops moving */
} pedge;

static int by_child_then_ref(const void *a, const void *b) {
  const pedge *x = a, *y = b;
  if (x->child != y->child) return x->child < y->child ? -1 : 1;
  int c = strcmp(x->zname, y->zname);
  if (c) return c;
  return x->version < y->version ? -1 : x->version > y->version;
}

/* Parents of the scope's versions as spans of JSON objects, each child's in
 * REF order. The rows are sorted here: SQLite's sorter costs more than the
 * query itself on ten thousand edges. */
static lk_status load_parents(lk_registry_t *reg, const scope *sc, sides *sd) {
  char where[512], where_m[512], sql[2048];
  scope_where(sc, "l.child", where, sizeof where);
  scope_where(sc, "e.child", where_m, sizeof where_m);
  /* Schema 4: base models as parents too (version 0 marks a model). */
  snprintf(sql, sizeof sql,
           "SELECT l.child, pa.name, pv.version, l.relation, l.params FROM lineage l JOIN versions pv ON pv.id ="
           " l.parent JOIN adapters pa ON pa.id = pv.adapter_id%s%s%s",
           where, reg->schema >= 4 ? " UNION ALL SELECT e.child, m.name, 0, e.relation, e.params FROM"
                                     " version_model_lineage e JOIN models m ON m.id = e.parent_model" : "",
           reg->schema >= 4 ? where_m : "");
  sqlite3_stmt *q = NULL;
  lk_status st = reg_prepare(reg, sql, &q);
  if (st) return st;
  bind_scope(q, sc);
  reg_out text = {0};
  pedge *e = NULL;
  uint32_t n = 0, cap = 0;
  int rc;
  while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
    if (n == cap) {
      cap = cap ? 2 * cap : 1024;
      pedge *p = realloc(e, cap * sizeof *p);
      if (!p) break;
      e = p;
    }
    pedge *x = &e[n++];
    x->child = sqlite3_column_int64(q, 0);
    x->version = sqlite3_column_int64(q, 2);
    const char *cols[3] = {col(q, 1), col(q, 3), col(q, 4)};
    uint32_t *offs[3] = {&x->name, &x->relation, &x->params};
    for (int k = 0; k < 3; k++) {
      *offs[k] = (uint32_t)text.n;
      reg_out_raw(&text, cols[k] ? cols[k] : "", strlen(cols[k] ? cols[k] : "") + 1);
    }
  }
  sqlite3_finalize(q);
  if (rc != SQLITE_DONE && rc != SQLITE_ROW) st = reg_sql_fail(reg, rc, "listing");
  else if (rc == SQLITE_ROW || text.oom) st = lk__fail(reg->ctx, LK_ERR_NOMEM, "out of memory");
  if (!st && n) {
    for (uint32_t i = 0; i < n; i++) e[i].zname = text.p + e[i].name;
    qsort(e, n, sizeof *e, by_child_then_ref);
    sd->parents = malloc(n * sizeof *sd->parents);
    if (!sd->parents) st = lk__fail(reg->ctx, LK_ERR_NOMEM, "out of memory");
  }
  for (uint32_t i = 0; !st && i < n; i++) {
    reg_out *o = &sd->arena;
    if (!sd->nparents || sd->parents[sd->nparents - 1].key != e[i].child)
      sd->parents[sd->nparents++] = (span){e[i].child, (uint32_t)o->n, 0};
    else
      reg_out_c(o, ',');
    RAW(o, "{\"ref\":");
    if (e[i].version) reg_out_ref(o, text.p + e[i].name, e[i].version);
    else reg_out_str(o, text.p + e[i].name);
    if (e[i].version) RAW(o, ",\"kind\":\"adapter\"");
    else RAW(o, ",\"kind\":\"model\"");
    RAW(o, ",\"relation\":");
    reg_out_str(o, text.p + e[i].relation);
    RAW(o, ",\"params\":");
    reg_out_json(o, text.p + e[i].params);
    reg_out_c(o, '}');
    span *last = &sd->parents[sd->nparents - 1];
    last->len = (uint32_t)(o->n - last->off);
  }
  if (!st && sd->arena.oom) st = lk__fail(reg->ctx, LK_ERR_NOMEM, "out of memory");
  free(e);
  free(text.p);
  return st;
}

static lk_status sides_load(lk_registry_t *reg, const scope *sc, sides *sd) {
  memset(sd, 0, sizeof *sd);
  char where[512], sql[1024];
  scope_where(sc, "version_id", where, sizeof where);
  snprintf(sql, sizeof sql, "SELECT version_id, tag FROM tags%s ORDER BY version_id, tag", where);
  lk_status st = load_spans(reg, sql, sc, &sd->arena, tag_item, &sd->tags, &sd->ntags);
  if (st) return st;
  if ((st = load_parents(reg, sc, sd))) return st;
  sqlite3_stmt *q = NULL;
  if ((st = reg_prepare(reg,
                        "SELECT adapter_id, max(version) FROM versions WHERE (?1 IS NULL OR adapter_id = (SELECT id"
                        " FROM adapters WHERE name = ?1)) AND (?3 IS NULL OR adapter_id = (SELECT adapter_id FROM"
                        " versions WHERE id = ?3)) GROUP BY adapter_id ORDER BY adapter_id",
                        &q)))
    return st;
  bind_scope(q, sc);
  uint32_t cap = 0;
  int rc;
  while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
    if (sd->nlatest == cap) {
      cap = cap ? 2 * cap : 64;
      span *p = realloc(sd->latest, cap * sizeof *p);
      if (!p) {
        st = lk__fail(reg->ctx, LK_ERR_NOMEM, "out of memory");
        break;
      }
      sd->latest = p;
    }
    sd->latest[sd->nlatest++] = (span){sqlite3_column_int64(q, 0), (uint32_t)sqlite3_column_int64(q, 1), 0};
  }
  sqlite3_finalize(q);
  if (!st && rc != SQLITE_DONE) st = reg_sql_fail(reg, rc, "listing");
  return st;
}

static const span *lookup(const span *v, uint32_t n, int64_t key) {
  uint32_t lo = 0, hi = n;
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo) / 2;
    if (v[mid].key < key) lo = mid + 1;
    else hi = mid;
  }
  return lo < n && v[lo].key == key ? &v[lo] : NULL;
}

/* One version (the current row of q, from ROW_SELECT) as a JSON object,
 * without its closing brace so callers may add members. */
static void write_row(reg_out *o, sqlite3_stmt *q, const sides *sd) {
  int64_t id = sqlite3_column_int64(q, 0), version = sqlite3_column_int64(q, 2);
  RAW(o, "{\"ref\":");
  reg_out_ref(o, col(q, 1), version);
  RAW(o, ",\"name\":");
  reg_out_str(o, col(q, 1));
  RAW(o, ",\"version\":");
  reg_out_int(o, version);
  RAW(o, ",\"tags\":[");
  const span *latest = lookup(sd->latest, sd->nlatest, sqlite3_column_int64(q, 17));
  const span *tags = lookup(sd->tags, sd->ntags, id);
  if (latest && latest->off == (uint32_t)version) {
    RAW(o, "\"latest\"");
    if (tags) reg_out_c(o, ',');
  }
  if (tags) reg_out_raw(o, sd->arena.p + tags->off, tags->len);
  RAW(o, "],\"base\":");
  reg_out_str(o, col(q, 3));
  RAW(o, ",\"base_fingerprint\":");
  reg_out_str(o, col(q, 4));
  RAW(o, ",\"rank\":");
  reg_out_int(o, sqlite3_column_int64(q, 5));
  RAW(o, ",\"alpha\":");
  reg_out_num(o, sqlite3_column_double(q, 6));
  RAW(o, ",\"scaling\":");
  reg_out_str(o, col(q, 7));
  RAW(o, ",\"target_modules\":");
  reg_out_json(o, col(q, 8));
  RAW(o, ",\"n_targets\":");
  reg_out_int(o, sqlite3_column_int64(q, 9));
  RAW(o, ",\"format\":");
  reg_out_str(o, col(q, 10));
  RAW(o, ",\"size\":");
  reg_out_int(o, sqlite3_column_int64(q, 11));
  RAW(o, ",\"sha256\":");
  reg_out_str(o, col(q, 13));
  RAW(o, ",\"created\":");
  reg_out_time(o, sqlite3_column_int64(q, 14));
  RAW(o, ",\"operation\":");
  reg_out_str(o, col(q, 15));
  RAW(o, ",\"notes\":");
  reg_out_str(o, col(q, 16));
  RAW(o, ",\"parents\":[");
  const span *parents = lookup(sd->parents, sd->nparents, id);
  if (parents) reg_out_raw(o, sd->arena.p + parents->off, parents->len);
  reg_out_c(o, ']');
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
  sides sd;
  scope sc = {o.name, model, 0};
  memset(&sd, 0, sizeof sd);
  if ((st = reg_exec(reg, "BEGIN"))) return st; /* one snapshot */
  /* Two orders, so that both come straight from the indexes, unsorted. */
#define LIST_WHERE                                                                                          \
  ROW_SELECT " WHERE (?1 IS NULL OR v.adapter_id = (SELECT id FROM adapters WHERE name = ?1))"            \
             " AND (?2 IS NULL OR v.model_id = ?2)"                                                          \
             " AND (?3 IS NULL OR (?3 = 'latest' AND v.version = (SELECT max(x.version) FROM"                \
             " versions x WHERE x.adapter_id = v.adapter_id))"                                               \
             " OR EXISTS (SELECT 1 FROM tags t WHERE t.version_id = v.id AND t.tag = ?3))"
  const char *sql = o.newest_first ? LIST_WHERE " ORDER BY a.name, v.version DESC LIMIT ?5"
                                   : LIST_WHERE " ORDER BY a.name, v.version LIMIT ?5";
  if ((st = sides_load(reg, &sc, &sd)) || (st = reg_prepare(reg, sql, &q))) goto done;
  if (o.name) sqlite3_bind_text(q, 1, o.name, -1, SQLITE_STATIC);
  if (o.base) sqlite3_bind_int64(q, 2, model);
  if (o.tag) sqlite3_bind_text(q, 3, o.tag, -1, SQLITE_STATIC);
  sqlite3_bind_int64(q, 5, o.limit ? (sqlite3_int64)o.limit : -1);
  reg_out out = {0};
  reg_out_c(&out, '[');
  int rc, n = 0;
  while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
    if (n++) reg_out_c(&out, ',');
    write_row(&out, q, &sd);
    reg_out_c(&out, '}');
  }
  reg_out_c(&out, ']');
  if (rc != SQLITE_DONE) {
    free(out.p);
    st = reg_sql_fail(reg, rc, "listing");
  } else {
    st = reg_out_finish(reg, &out, out_json);
  }
done:
  sqlite3_finalize(q);
  sides_free(&sd);
  reg_exec(reg, "COMMIT");
  if (!st) lk__ok(reg->ctx);
  return st;
}

/* One version's record (as in the list) as a jansson object. */
static lk_status version_object(lk_registry_t *reg, int64_t id, json_t **out) {
  sqlite3_stmt *q = NULL;
  sides sd;
  scope sc = {NULL, 0, id};
  *out = NULL;
  lk_status st = sides_load(reg, &sc, &sd);
  if (!st) st = reg_prepare(reg, ROW_SELECT " WHERE v.id = ?", &q);
  if (!st) {
    sqlite3_bind_int64(q, 1, id);
    if (sqlite3_step(q) == SQLITE_ROW) {
      reg_out o = {0};
      write_row(&o, q, &sd);
      reg_out_c(&o, '}');
      json_error_t jerr;
      if (!o.oom && o.p && (o.p = reg_json_repair(o.p))) *out = json_loads(o.p, 0, &jerr);
      free(o.p);
    }
    if (!*out) st = lk__fail(reg->ctx, LK_ERR_INTERNAL, "could not read version %lld", (long long)id);
  }
  sqlite3_finalize(q);
  sides_free(&sd);
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
    char *text = reg_json_repair(reg_strdup((const char *)sqlite3_column_text(q, 0)));
    *out = text ? json_loads(text, 0, &jerr) : NULL;
    free(text);
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
  json_t *obj = NULL, *targets = NULL, *children = NULL, *model = NULL, *files = NULL;
  lk_status st = reg_resolve(reg, ref, &v);
  if (st) return st;
  if ((st = version_object(reg, v.id, &obj)) || (st = targets_of(reg, &v, &targets))) goto done;
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
  /* The files it was added from (schema 3; none for older versions). */
  if (reg->schema >= 3 &&
      (st = json_query(reg,
                       "SELECT json_group_array(json_object('path', path, 'size', size, 'sha256', blob)) FROM ("
                       " SELECT path, size, blob FROM files WHERE version_id = ?1 ORDER BY path)",
                       v.id, &files)))
    goto done;
  if (!json_is_object(obj)) {
    st = lk__fail(reg->ctx, LK_ERR_INTERNAL, "%s: could not read the version", v.ref);
    goto done;
  }
  sqlite3_stmt *q = NULL;
  if (!(st = reg_prepare(reg, "SELECT stored FROM blobs WHERE sha256 = ?", &q))) {
    sqlite3_bind_text(q, 1, v.sha, -1, SQLITE_STATIC);
    if (sqlite3_step(q) == SQLITE_ROW) json_object_set_new(obj, "stored", json_integer(sqlite3_column_int64(q, 0)));
    sqlite3_finalize(q);
  }
  json_object_set(obj, "targets", targets);
  json_object_set(obj, "children", children);
  json_object_set(obj, "base_model", model ? model : json_null());
  json_object_set_new(obj, "files", json_is_array(files) ? json_incref(files) : json_array());
  if (!(*out_json = reg_json_string(obj))) st = lk__fail(reg->ctx, LK_ERR_NOMEM, "out of memory");
done:
  json_decref(obj);
  json_decref(targets);
  json_decref(children);
  json_decref(model);
  json_decref(files);
  if (!st) lk__ok(reg->ctx);
  return st;
}

/* The models document; TRAINED is the "trained" array of a model (schema
 * 4: adapter versions with an edge to it, e.g. trained_from). */
#define MODELS_SQL(TRAINED)                                                                                          \
  "SELECT json_object('name', m.name, 'architecture', m.architecture, 'fingerprint', m.fingerprint,"                  \
  " 'path', m.path, 'parameters', m.n_params, 'created', strftime('%Y-%m-%dT%H:%M:%SZ', m.created, 'unixepoch'),"   \
  " 'operation', m.operation, 'notes', m.notes,"                                                                     \
  " 'adapters', (SELECT count(*) FROM versions v WHERE v.model_id = m.id),"                                          \
  " 'trained', " TRAINED ","                                                                                         \
  " 'parents', (SELECT json_group_array(json_object('ref', CASE WHEN ml.parent_version IS NOT NULL"                  \
  "   THEN (SELECT a.name || '@' || v.version FROM versions v JOIN adapters a ON a.id = v.adapter_id"                \
  "         WHERE v.id = ml.parent_version)"                                                                         \
  "   ELSE (SELECT p.name FROM models p WHERE p.id = ml.parent_model) END,"                                          \
  "   'kind', CASE WHEN ml.parent_version IS NOT NULL THEN 'adapter' ELSE 'model' END,"                              \
  "   'relation', ml.relation, 'params', json(ml.params))) FROM model_lineage ml WHERE ml.model = m.id))"            \
  " FROM models m ORDER BY m.name"

LK_API lk_status lk_registry_models(lk_registry_t *reg, char **out_json) {
  if (!reg || !out_json) return lk__fail(reg ? reg->ctx : NULL, LK_ERR_INVALID_ARG, "lk_registry_models: NULL argument");
  *out_json = NULL;
  sqlite3_stmt *q = NULL;
  lk_status st = reg_prepare(
      reg,
      reg->schema >= 4
          ? MODELS_SQL("(SELECT json_group_array(json_object('ref', r, 'kind', 'adapter', 'relation', rel)) FROM ("
                       " SELECT a.name || '@' || v.version AS r, e.relation AS rel FROM version_model_lineage e"
                       " JOIN versions v ON v.id = e.child JOIN adapters a ON a.id = v.adapter_id"
                       " WHERE e.parent_model = m.id ORDER BY a.name, v.version))")
          : MODELS_SQL("json_array()"),
      &q);
  if (st) return st;
  st = join_rows(reg, q, out_json);
  sqlite3_finalize(q);
  if (!st) lk__ok(reg->ctx);
  return st;
}
