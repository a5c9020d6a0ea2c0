/* lineage.c - the lineage graph: ancestors and descendants of a version to
 * any depth (one recursive query per direction, depths worked out here by
 * breadth-first search), edges added after the fact with a cycle check, and
 * the ancestor test other files use. */
#include "reg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Ancestor ids of ?1 (and ?1 itself). */
#define UP_CTE "WITH RECURSIVE up(id) AS (SELECT ?1 UNION SELECT l.parent FROM lineage l JOIN up ON l.child = up.id) "
/* Descendant version ids of ?1 (and ?1), and the models made from them or
 * from such models. */
#define DOWN_CTE                                                                                                    \
  "WITH RECURSIVE down(id) AS (SELECT ?1 UNION SELECT l.child FROM lineage l JOIN down ON l.parent = down.id),"    \
  " mdown(id) AS (SELECT ml.model FROM model_lineage ml WHERE ml.parent_version IN down"                          \
  "   UNION SELECT ml.model FROM model_lineage ml JOIN mdown ON ml.parent_model = mdown.id) "

#define NODE_JSON                                                                                                  \
  "json_object('ref', a.name || '@' || v.version, 'kind', 'adapter', 'operation', v.operation, 'created',"       \
  " strftime('%Y-%m-%dT%H:%M:%SZ', v.created, 'unixepoch'), 'base', (SELECT name FROM models WHERE id = v.model_id)," \
  " 'notes', v.notes) FROM versions v JOIN adapters a ON a.id = v.adapter_id"

#define MODEL_NODE_JSON                                                                                          \
  "json_object('ref', m.name, 'kind', 'model', 'operation', m.operation, 'created',"                            \
  " strftime('%Y-%m-%dT%H:%M:%SZ', m.created, 'unixepoch'), 'base', NULL, 'notes', m.notes) FROM models m"

#define REF_OF(col) "(SELECT a.name || '@' || v.version FROM versions v JOIN adapters a ON a.id = v.adapter_id WHERE v.id = " col ")"

static const char *const up_sql[] = {
    UP_CTE "SELECT " NODE_JSON " WHERE v.id IN up",
    UP_CTE "SELECT json_object('child', " REF_OF("l.child") ", 'parent', " REF_OF("l.parent")
           ", 'relation', l.relation, 'params', json(l.params)) FROM lineage l WHERE l.child IN up",
};

static const char *const down_sql[] = {
    DOWN_CTE "SELECT " NODE_JSON " WHERE v.id IN down UNION ALL SELECT " MODEL_NODE_JSON " WHERE m.id IN mdown",
    DOWN_CTE "SELECT json_object('child', " REF_OF("l.child") ", 'parent', " REF_OF("l.parent")
             ", 'relation', l.relation, 'params', json(l.params)) FROM lineage l WHERE l.parent IN down"
             " UNION ALL SELECT json_object('child', (SELECT name FROM models WHERE id = ml.model), 'parent',"
             " CASE WHEN ml.parent_version IS NOT NULL THEN " REF_OF("ml.parent_version")
             " ELSE (SELECT name FROM models WHERE id = ml.parent_model) END, 'relation', ml.relation,"
             " 'params', json(ml.params)) FROM model_lineage ml WHERE ml.model IN mdown"
             " AND (ml.parent_version IN down OR ml.parent_model IN mdown)",
};

/* Append each row's JSON object (column 0) to arr. */
static lk_status collect(lk_registry_t *reg, const char *sql, int64_t id, json_t *arr) {
  sqlite3_stmt *q = NULL;
  lk_status st = reg_prepare(reg, sql, &q);
  if (st) return st;
  sqlite3_bind_int64(q, 1, id);
  int rc;
  while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
    json_error_t jerr;
    json_t *o = json_loads((const char *)sqlite3_column_text(q, 0), 0, &jerr);
    if (o) json_array_append_new(arr, o);
  }
  sqlite3_finalize(q);
  return rc == SQLITE_DONE ? LK_OK : reg_sql_fail(reg, rc, "reading lineage");
}

/* Breadth-first depths from root over edges (up: child -> parent, down:
 * parent -> child); sign -1 for ancestors. Nodes get "depth". */
static void set_depths(json_t *nodes_by_ref, json_t *edges, const char *root, int up, uint32_t max_depth,
                       json_t *depth_of) {
  json_t *adj = json_object();
  size_t i;
  json_t *e;
  json_array_foreach(edges, i, e) {
    const char *from = json_string_value(json_object_get(e, up ? "child" : "parent"));
    const char *to = json_string_value(json_object_get(e, up ? "parent" : "child"));
    if (!from || !to) continue;
    json_t *list = json_object_get(adj, from);
    if (!list) json_object_set_new(adj, from, list = json_array());
    json_array_append_new(list, json_string(to));
  }
  json_t *queue = json_array();
  json_array_append_new(queue, json_string(root));
  json_object_set_new(depth_of, root, json_integer(0));
  for (size_t head = 0; head < json_array_size(queue); head++) {
    const char *cur = json_string_value(json_array_get(queue, head));
    json_int_t d = json_integer_value(json_object_get(depth_of, cur));
    json_int_t next = up ? d - 1 : d + 1;
    if (max_depth && (json_int_t)max_depth < (next < 0 ? -next : next)) continue;
    size_t k;
    json_t *to;
    json_array_foreach(json_object_get(adj, cur), k, to) {
      const char *t = json_string_value(to);
      if (json_object_get(depth_of, t) || !json_object_get(nodes_by_ref, t)) continue;
      json_object_set_new(depth_of, t, json_integer(next));
      json_array_append_new(queue, json_string(t));
    }
  }
  json_decref(queue);
  json_decref(adj);
}

static lk_status one_direction(lk_registry_t *reg, const reg_version *v, int up, uint32_t max_depth, json_t *nodes,
                               json_t *edges, json_t *seen) {
  const char *const *sql = up ? up_sql : down_sql;
  json_t *n = json_array(), *e = json_array(), *by_ref = json_object(), *depth = json_object();
  lk_status st = collect(reg, sql[0], v->id, n);
  if (!st) st = collect(reg, sql[1], v->id, e);
  if (!st) {
    size_t i;
    json_t *x;
    json_array_foreach(n, i, x) json_object_set(by_ref, json_string_value(json_object_get(x, "ref")), x);
    set_depths(by_ref, e, v->ref, up, max_depth, depth);
    json_array_foreach(n, i, x) {
      const char *ref = json_string_value(json_object_get(x, "ref"));
      json_t *d = json_object_get(depth, ref);
      if (!d || (json_object_get(seen, ref) && !strcmp(ref, v->ref))) continue;
      json_object_set(x, "depth", d);
      json_object_set_new(seen, ref, json_true());
      json_array_append(nodes, x);
    }
    json_array_foreach(e, i, x) {
      const char *c = json_string_value(json_object_get(x, "child")), *p = json_string_value(json_object_get(x, "parent"));
      if (c && p && json_object_get(depth, c) && json_object_get(depth, p)) json_array_append(edges, x);
    }
  }
  json_decref(n);
  json_decref(e);
  json_decref(by_ref);
  json_decref(depth);
  return st;
}

LK_API lk_status lk_registry_lineage(lk_registry_t *reg, const char *ref, const lk_registry_lineage_opts_t *opts,
                                     char **out_json) {
  if (!reg || !out_json) return lk__fail(reg ? reg->ctx : NULL, LK_ERR_INVALID_ARG, "lk_registry_lineage: NULL argument");
  *out_json = NULL;
  lk_registry_lineage_opts_t o;
  lk_status st = reg_opts(reg, &o, sizeof o, opts, "lk_registry_lineage_opts_t");
  if (st) return st;
  int dir = o.direction ? o.direction : LK_LINEAGE_BOTH;
  if (dir < LK_LINEAGE_UP || dir > LK_LINEAGE_BOTH)
    return lk__fail(reg->ctx, LK_ERR_INVALID_ARG, "lineage: unknown direction %d", o.direction);
  reg_version v;
  if ((st = reg_resolve(reg, ref, &v))) return st;
  json_t *nodes = json_array(), *edges = json_array(), *seen = json_object();
  /* One snapshot for both directions. */
  if (!(st = reg_exec(reg, "BEGIN"))) {
    if (dir & LK_LINEAGE_UP) st = one_direction(reg, &v, 1, o.max_depth, nodes, edges, seen);
    if (!st && (dir & LK_LINEAGE_DOWN)) st = one_direction(reg, &v, 0, o.max_depth, nodes, edges, seen);
    reg_exec(reg, "COMMIT");
  }
  if (!st) {
    json_t *doc = json_pack("{s:s, s:O, s:O}", "root", v.ref, "nodes", nodes, "edges", edges);
    if (!doc || !(*out_json = reg_json_string(doc))) st = lk__fail(reg->ctx, LK_ERR_NOMEM, "out of memory");
    json_decref(doc);
  }
  json_decref(nodes);
  json_decref(edges);
  json_decref(seen);
  if (!st) lk__ok(reg->ctx);
  return st;
}

int reg_is_ancestor(lk_registry_t *reg, int64_t ancestor, int64_t id) {
  sqlite3_stmt *q = NULL;
  int found = 0;
  if (reg_prepare(reg, UP_CTE "SELECT 1 FROM up WHERE id = ?2", &q)) return -1;
  sqlite3_bind_int64(q, 1, id);
  sqlite3_bind_int64(q, 2, ancestor);
  found = sqlite3_step(q) == SQLITE_ROW;
  sqlite3_finalize(q);
  return found;
}

LK_API lk_status lk_registry_link(lk_registry_t *reg, const char *child, const char *parent, int32_t relation,
                                  const char *params_json) {
  if (!reg) return LK_ERR_INVALID_ARG;
  lk_status st = reg_writable(reg, "link versions");
  if (st) return st;
  if (!reg_relation_valid(relation))
    return lk__fail(reg->ctx, LK_ERR_INVALID_ARG, "link: unknown relation %d", relation);
  if (params_json) {
    json_error_t jerr;
    json_t *p = json_loads(params_json, 0, &jerr);
    int ok = json_is_object(p);
    json_decref(p);
    if (!ok) return lk__fail(reg->ctx, LK_ERR_INVALID_ARG, "link: relation parameters are not a JSON object");
  }
  if ((st = reg_begin(reg))) return st;
  reg_version c, p;
  if ((st = reg_resolve(reg, child, &c)) || (st = reg_resolve(reg, parent, &p))) goto fail;
  if (c.id == p.id) {
    st = lk__fail(reg->ctx, LK_ERR_INVALID_ARG, "link: %s cannot be its own parent (a cycle)", c.ref);
    goto fail;
  }
  int cyc = reg_is_ancestor(reg, c.id, p.id);
  if (cyc) {
    st = cyc < 0 ? lk_last_status(reg->ctx)
                 : lk__fail(reg->ctx, LK_ERR_INVALID_ARG,
                            "link: %s -> %s would make a cycle: %s already descends from %s; nothing written", c.ref,
                            p.ref, p.ref, c.ref);
    goto fail;
  }
  sqlite3_stmt *q = NULL;
  if ((st = reg_prepare(reg, "INSERT INTO lineage(child, parent, relation, params) VALUES(?,?,?,?)", &q))) goto fail;
  sqlite3_bind_int64(q, 1, c.id);
  sqlite3_bind_int64(q, 2, p.id);
  sqlite3_bind_text(q, 3, lk_registry_relation_name(relation), -1, SQLITE_STATIC);
  sqlite3_bind_text(q, 4, params_json ? params_json : "{}", -1, SQLITE_STATIC);
  int rc = sqlite3_step(q);
  sqlite3_finalize(q);
  if (rc != SQLITE_DONE) {
    st = (rc & 0xff) == SQLITE_CONSTRAINT
             ? lk__fail(reg->ctx, LK_ERR_EXISTS, "link: %s already has parent %s", c.ref, p.ref)
             : reg_sql_fail(reg, rc, "recording lineage");
    goto fail;
  }
  if ((st = reg_commit(reg))) return st;
  lk__ok(reg->ctx);
  return LK_OK;
fail:
  reg_rollback(reg);
  return st;
}
