/* lineage.c - the lineage graph: ancestors and descendants of a version to
 * any depth (breadth first over the lineage indexes, so the cost follows the
 * size of the answer, not of the registry), edges added after the fact with
 * a cycle check, and the ancestor test other files use. */
#include "reg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Ancestors of version ?1 (and ?1 itself) as (kind, id), kind 0 a version
 * and 1 a model: through version edges, version -> base model edges and a
 * model's own parents (schema 4; writers only, so the tables exist). */
#define UP_CTE                                                                                                      \
  "WITH RECURSIVE up(k, id) AS (SELECT 0, ?1"                                                                       \
  " UNION SELECT 0, l.parent FROM lineage l JOIN up ON up.k = 0 AND l.child = up.id"                                \
  " UNION SELECT 1, e.parent_model FROM version_model_lineage e JOIN up ON up.k = 0 AND e.child = up.id"            \
  " UNION SELECT 0, ml.parent_version FROM model_lineage ml JOIN up ON up.k = 1 AND ml.model = up.id"               \
  "   WHERE ml.parent_version IS NOT NULL"                                                                          \
  " UNION SELECT 1, ml.parent_model FROM model_lineage ml JOIN up ON up.k = 1 AND ml.model = up.id"                 \
  "   WHERE ml.parent_model IS NOT NULL) "

/* Append a string literal. */
#define RAW(o, lit) reg_out_raw(o, lit, sizeof lit - 1)

enum { K_VERSION = 0, K_MODEL = 1 };

typedef struct lnode {
  int64_t id;
  int kind;
  int depth;
  char ref[REG_NAME_MAX + 24];
} lnode;

/* A table read whole, sorted by key: for walks that reach much of the
 * registry, one pass costs less than thousands of index lookups. Rows hold
 * the key, up to four integers and two strings (offsets into the arena;
 * NO_STR for NULL). Tables are read in storage order and sorted here: an
 * ORDER BY on an index would cost a table lookup per row. */
#define NO_STR UINT32_MAX
#define BULK_AT 2048 /* nodes found before the walk switches to whole tables */

typedef struct brow {
  int64_t key, i[4];
  uint32_t s[2];
} brow;

typedef struct btab {
  brow *rows;
  uint32_t n;
  int loaded;
  reg_out arena;
} btab;

/* The walk: nodes found (index = BFS order), a hash of (kind, id) -> index,
 * prepared statements (or whole tables), and the JSON of nodes and edges as
 * they are found. */
typedef struct walk {
  lk_registry_t *reg;
  lnode *nodes;
  uint32_t n, cap;
  int32_t *slots; /* open addressing, -1 = empty */
  uint32_t nslots;
  sqlite3_stmt *parents, *children, *models_of_version, *models_of_model, *version_info, *model_info;
  /* Schema 4: version -> base model edges (NULL on older read-only files),
   * and a model's own parents. */
  sqlite3_stmt *base_models_of_version, *versions_of_base, *model_parent_versions, *model_parent_models;
  btab up, down, info, names, models; /* lineage by child, by parent; versions, adapters, models by id */
  btab vm_up, vm_down;                 /* version_model_lineage by child, by parent_model */
  reg_out nodes_json, edges_json;
  uint32_t max_depth;
  lk_status st;
} walk;

static int by_key(const void *a, const void *b) {
  const brow *x = a, *y = b;
  if (x->key != y->key) return x->key < y->key ? -1 : 1;
  return x->i[0] < y->i[0] ? -1 : x->i[0] > y->i[0];
}

/* Read sql (columns: key, n_int integers, n_str strings), sorted by key. */
static lk_status btab_load(walk *w, btab *t, const char *sql, int n_int, int n_str) {
  sqlite3_stmt *q = NULL;
  lk_status st = reg_prepare(w->reg, sql, &q);
  uint32_t cap = 0;
  int rc = SQLITE_DONE;
  while (!st && (rc = sqlite3_step(q)) == SQLITE_ROW) {
    if (t->n == cap) {
      cap = cap ? 2 * cap : 4096;
      brow *p = realloc(t->rows, cap * sizeof *p);
      if (!p) {
        st = lk__fail(w->reg->ctx, LK_ERR_NOMEM, "out of memory walking lineage");
        break;
      }
      t->rows = p;
    }
    brow *r = &t->rows[t->n++];
    r->key = sqlite3_column_int64(q, 0);
    for (int k = 0; k < 4; k++) r->i[k] = k < n_int ? sqlite3_column_int64(q, 1 + k) : 0;
    for (int k = 0; k < 2; k++) {
      const char *z = k < n_str ? (const char *)sqlite3_column_text(q, 1 + n_int + k) : NULL;
      r->s[k] = z ? (uint32_t)t->arena.n : NO_STR;
      if (z) reg_out_raw(&t->arena, z, strlen(z) + 1);
    }
  }
  sqlite3_finalize(q);
  if (!st && rc != SQLITE_DONE) st = reg_sql_fail(w->reg, rc, "reading lineage");
  if (!st && (t->arena.oom || t->arena.n >= NO_STR)) st = lk__fail(w->reg->ctx, LK_ERR_NOMEM, "out of memory");
  if (!st) qsort(t->rows, t->n, sizeof *t->rows, by_key);
  t->loaded = !st;
  return st;
}

static const char *bstr(const btab *t, uint32_t off) { return off == NO_STR ? NULL : t->arena.p + off; }

/* Index of the first row with key >= key. */
static uint32_t blower(const btab *t, int64_t key) {
  uint32_t lo = 0, hi = t->n;
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo) / 2;
    if (t->rows[mid].key < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/* Switch to whole tables once the walk is big: node records first. */
static void maybe_bulk(walk *w) {
  if (w->st || w->info.loaded || w->n < BULK_AT) return;
  w->st = btab_load(w, &w->info, "SELECT id, version, created, adapter_id, model_id, operation, notes FROM versions",
                    4, 2);
  if (!w->st) w->st = btab_load(w, &w->names, "SELECT id, 0, name FROM adapters", 1, 1);
  if (!w->st) w->st = btab_load(w, &w->models, "SELECT id, 0, name FROM models", 1, 1);
}

/* The lineage table by child (up) or by parent (down), read on first need. */
static const btab *edges_table(walk *w, int up) {
  btab *t = up ? &w->up : &w->down;
  if (!w->info.loaded || w->st) return NULL;
  if (!t->loaded)
    w->st = btab_load(w, t,
                      up ? "SELECT child, parent, relation, params FROM lineage"
                         : "SELECT parent, child, relation, params FROM lineage",
                      1, 2);
  return w->st ? NULL : t;
}

/* version_model_lineage by child (up) or by model (down), read whole once
 * the walk is big; NULL before that and on files without it (schema < 4). */
static const btab *vm_table(walk *w, int up) {
  btab *t = up ? &w->vm_up : &w->vm_down;
  if (!w->info.loaded || w->st || w->reg->schema < 4) return NULL;
  if (!t->loaded)
    w->st = btab_load(w, t,
                      up ? "SELECT child, parent_model, relation, params FROM version_model_lineage"
                         : "SELECT parent_model, child, relation, params FROM version_model_lineage",
                      1, 2);
  return w->st ? NULL : t;
}

/* The string of the row with key in t (names, models), or NULL. */
static const char *name_of(const btab *t, int64_t key) {
  uint32_t r = key ? blower(t, key) : t->n;
  return r < t->n && t->rows[r].key == key ? bstr(t, t->rows[r].s[0]) : NULL;
}

static uint64_t key_hash(int64_t id, int kind) {
  uint64_t k = (uint64_t)id * 2 + (uint64_t)kind;
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdull; /* murmur3 finaliser */
  k ^= k >> 33;
  return k;
}

static int32_t find(const walk *w, int64_t id, int kind) {
  for (uint64_t h = key_hash(id, kind) & (w->nslots - 1);; h = (h + 1) & (w->nslots - 1)) {
    int32_t i = w->slots[h];
    if (i < 0) return -1;
    if (w->nodes[i].id == id && w->nodes[i].kind == kind) return i;
  }
}

static int grow_table(walk *w) {
  uint32_t ns = w->nslots ? w->nslots * 2 : 1024;
  int32_t *slots = malloc(ns * sizeof *slots);
  if (!slots) return 0;
  memset(slots, 0xff, ns * sizeof *slots);
  for (uint32_t i = 0; i < w->n; i++) {
    uint64_t h = key_hash(w->nodes[i].id, w->nodes[i].kind) & (ns - 1);
    while (slots[h] >= 0) h = (h + 1) & (ns - 1);
    slots[h] = (int32_t)i;
  }
  free(w->slots);
  w->slots = slots;
  w->nslots = ns;
  return 1;
}

static const char *col(sqlite3_stmt *q, int i) { return (const char *)sqlite3_column_text(q, i); }

/* Record a newly found node: its ref and its JSON. */
static int32_t add_node(walk *w, int64_t id, int kind, int depth) {
  if (w->st) return -1;
  if ((w->n + 1) * 2 > w->nslots && !grow_table(w)) goto oom;
  if (w->n == w->cap) {
    uint32_t cap = w->cap ? w->cap * 2 : 256;
    lnode *p = realloc(w->nodes, cap * sizeof *p);
    if (!p) goto oom;
    w->nodes = p;
    w->cap = cap;
  }
  lnode *nd = &w->nodes[w->n];
  memset(nd, 0, sizeof *nd);
  nd->id = id;
  nd->kind = kind;
  nd->depth = depth;
  /* name, version, operation, created, base, notes */
  const char *name, *operation, *base, *notes;
  int64_t version, created;
  uint32_t r = kind == K_VERSION && w->info.loaded ? blower(&w->info, id) : 0;
  if (kind == K_VERSION && w->info.loaded) {
    const brow *b = r < w->info.n && w->info.rows[r].key == id ? &w->info.rows[r] : NULL;
    if (!b) goto missing;
    name = name_of(&w->names, b->i[2]);
    base = name_of(&w->models, b->i[3]);
    operation = bstr(&w->info, b->s[0]);
    notes = bstr(&w->info, b->s[1]);
    version = b->i[0];
    created = b->i[1];
  } else {
    sqlite3_stmt *q = kind == K_VERSION ? w->version_info : w->model_info;
    sqlite3_reset(q);
    sqlite3_bind_int64(q, 1, id);
    if (sqlite3_step(q) != SQLITE_ROW) goto missing;
    name = col(q, 0);
    version = sqlite3_column_int64(q, 1);
    operation = col(q, 2);
    created = sqlite3_column_int64(q, 3);
    base = col(q, 4);
    notes = col(q, 5);
  }
  reg_out *o = &w->nodes_json;
  if (w->n) reg_out_c(o, ',');
  if (kind == K_VERSION) snprintf(nd->ref, sizeof nd->ref, "%s@%lld", name ? name : "", (long long)version);
  else snprintf(nd->ref, sizeof nd->ref, "%s", name ? name : "");
  RAW(o, "{\"ref\":");
  reg_out_str(o, nd->ref);
  if (kind == K_VERSION) RAW(o, ",\"kind\":\"adapter\"");
  else RAW(o, ",\"kind\":\"model\"");
  RAW(o, ",\"depth\":");
  reg_out_int(o, depth);
  RAW(o, ",\"operation\":");
  reg_out_str(o, operation);
  RAW(o, ",\"created\":");
  reg_out_time(o, created);
  RAW(o, ",\"base\":");
  reg_out_str(o, base);
  RAW(o, ",\"notes\":");
  reg_out_str(o, notes);
  reg_out_c(o, '}');
  uint64_t h = key_hash(id, kind) & (w->nslots - 1);
  while (w->slots[h] >= 0) h = (h + 1) & (w->nslots - 1);
  w->slots[h] = (int32_t)w->n;
  return (int32_t)w->n++;
missing:
  w->st = lk__fail(w->reg->ctx, LK_ERR_CORRUPT, "registry %s: lineage refers to a missing %s (id %lld)", w->reg->path,
                   kind == K_VERSION ? "version" : "model", (long long)id);
  return -1;
oom:
  w->st = lk__fail(w->reg->ctx, LK_ERR_NOMEM, "out of memory walking lineage");
  return -1;
}

static void add_edge(walk *w, int32_t child, int32_t parent, const char *relation, const char *params) {
  reg_out *o = &w->edges_json;
  if (o->n) reg_out_c(o, ',');
  RAW(o, "{\"child\":");
  reg_out_str(o, w->nodes[child].ref);
  RAW(o, ",\"parent\":");
  reg_out_str(o, w->nodes[parent].ref);
  RAW(o, ",\"relation\":");
  reg_out_str(o, relation);
  if (w->nodes[child].kind == K_MODEL) RAW(o, ",\"child_kind\":\"model\"");
  else RAW(o, ",\"child_kind\":\"adapter\"");
  if (w->nodes[parent].kind == K_MODEL) RAW(o, ",\"parent_kind\":\"model\"");
  else RAW(o, ",\"parent_kind\":\"adapter\"");
  RAW(o, ",\"params\":");
  reg_out_json(o, params);
  reg_out_c(o, '}');
}

/* Follow q (bound to node i's id; rows: other id, relation, params) to
 * nodes of kind `kind` one step further; up: node i is the child. */
static void expand(walk *w, uint32_t i, sqlite3_stmt *q, int kind, int up) {
  if (!q) return;
  sqlite3_reset(q);
  sqlite3_bind_int64(q, 1, w->nodes[i].id);
  int rc;
  while (!w->st && (rc = sqlite3_step(q)) == SQLITE_ROW) {
    int64_t other = sqlite3_column_int64(q, 0);
    int32_t j = find(w, other, kind);
    if (j < 0) j = add_node(w, other, kind, w->nodes[i].depth + (up ? -1 : 1));
    if (j < 0) return;
    if (up) add_edge(w, (int32_t)i, j, col(q, 1), col(q, 2));
    else add_edge(w, j, (int32_t)i, col(q, 1), col(q, 2));
  }
  if (!w->st && rc != SQLITE_DONE) w->st = reg_sql_fail(w->reg, rc, "reading lineage");
}

/* expand() over a whole table: rows key = node i's id, i1 = the other end
 * (of kind `kind`). */
static void expand_bulk(walk *w, uint32_t i, const btab *t, int kind, int up) {
  int64_t id = w->nodes[i].id;
  for (uint32_t r = blower(t, id); !w->st && r < t->n && t->rows[r].key == id; r++) {
    const brow *b = &t->rows[r];
    int32_t j = find(w, b->i[0], kind);
    if (j < 0) j = add_node(w, b->i[0], kind, w->nodes[i].depth + (up ? -1 : 1));
    if (j < 0) return;
    if (up) add_edge(w, (int32_t)i, j, bstr(t, b->s[0]), bstr(t, b->s[1]));
    else add_edge(w, j, (int32_t)i, bstr(t, b->s[0]), bstr(t, b->s[1]));
  }
}

/* Breadth first from node 0 in one direction: depths are shortest paths. */
static void bfs(walk *w, int up) {
  uint32_t first = w->n; /* nodes this direction adds */
  for (uint32_t i = 0; i < w->n && !w->st; i++) {
    if (i != 0 && i < first) continue;
    int d = w->nodes[i].depth < 0 ? -w->nodes[i].depth : w->nodes[i].depth;
    if (w->max_depth && (uint32_t)d >= w->max_depth) continue;
    maybe_bulk(w);
    const btab *t = edges_table(w, up);
    if (w->st) break;
    if (up && w->nodes[i].kind == K_VERSION) {
      if (t) expand_bulk(w, i, t, K_VERSION, 1);
      else expand(w, i, w->parents, K_VERSION, 1);
      const btab *vt = vm_table(w, 1);
      if (w->st) break;
      if (vt) expand_bulk(w, i, vt, K_MODEL, 1);
      else expand(w, i, w->base_models_of_version, K_MODEL, 1);
    } else if (up) {
      expand(w, i, w->model_parent_versions, K_VERSION, 1);
      expand(w, i, w->model_parent_models, K_MODEL, 1);
    } else if (w->nodes[i].kind == K_VERSION) {
      if (t) expand_bulk(w, i, t, K_VERSION, 0);
      else expand(w, i, w->children, K_VERSION, 0);
      expand(w, i, w->models_of_version, K_MODEL, 0);
    } else {
      expand(w, i, w->models_of_model, K_MODEL, 0);
      const btab *vt = vm_table(w, 0);
      if (w->st) break;
      if (vt) expand_bulk(w, i, vt, K_VERSION, 0);
      else expand(w, i, w->versions_of_base, K_VERSION, 0);
    }
  }
}

static lk_status walk_open(walk *w) {
  static const char *const sql[] = {
      "SELECT parent, relation, params FROM lineage WHERE child = ?",
      "SELECT child, relation, params FROM lineage WHERE parent = ?",
      "SELECT model, relation, params FROM model_lineage WHERE parent_version = ?",
      "SELECT model, relation, params FROM model_lineage WHERE parent_model = ?",
      ("SELECT a.name, v.version, v.operation, v.created, m.name, v.notes FROM versions v JOIN adapters a ON a.id = "
       "v.adapter_id LEFT JOIN models m ON m.id = v.model_id WHERE v.id = ?"),
      "SELECT name, 0, operation, created, NULL, notes FROM models WHERE id = ?",
      "SELECT parent_version, relation, params FROM model_lineage WHERE model = ? AND parent_version IS NOT NULL",
      "SELECT parent_model, relation, params FROM model_lineage WHERE model = ? AND parent_model IS NOT NULL",
      "SELECT parent_model, relation, params FROM version_model_lineage WHERE child = ?",
      "SELECT child, relation, params FROM version_model_lineage WHERE parent_model = ?",
  };
  sqlite3_stmt **stmts[] = {&w->parents,          &w->children,           &w->models_of_version,
                            &w->models_of_model,  &w->version_info,       &w->model_info,
                            &w->model_parent_versions, &w->model_parent_models, &w->base_models_of_version,
                            &w->versions_of_base};
  size_t n = sizeof sql / sizeof sql[0];
  if (w->reg->schema < 4) n -= 2; /* no version -> model edges before schema 4 */
  for (size_t i = 0; i < n; i++) {
    lk_status st = reg_prepare(w->reg, sql[i], stmts[i]);
    if (st) return st;
  }
  return grow_table(w) ? LK_OK : lk__fail(w->reg->ctx, LK_ERR_NOMEM, "out of memory");
}

static void walk_close(walk *w) {
  sqlite3_stmt *stmts[] = {w->parents,           w->children,           w->models_of_version,
                           w->models_of_model,   w->version_info,       w->model_info,
                           w->model_parent_versions, w->model_parent_models, w->base_models_of_version,
                           w->versions_of_base};
  for (size_t i = 0; i < sizeof stmts / sizeof stmts[0]; i++) sqlite3_finalize(stmts[i]);
  btab *tabs[] = {&w->up, &w->down, &w->info, &w->names, &w->models, &w->vm_up, &w->vm_down};
  for (size_t i = 0; i < sizeof tabs / sizeof tabs[0]; i++) {
    free(tabs[i]->rows);
    free(tabs[i]->arena.p);
  }
  free(w->nodes);
  free(w->slots);
  free(w->nodes_json.p);
  free(w->edges_json.p);
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
  if ((st = reg_exec(reg, "BEGIN"))) return st; /* one snapshot for the whole walk */
  reg_version v;
  walk w;
  memset(&w, 0, sizeof w);
  w.reg = reg;
  w.max_depth = o.max_depth;
  if (!(st = reg_resolve(reg, ref, &v)) && !(st = walk_open(&w))) {
    add_node(&w, v.id, K_VERSION, 0);
    if (dir & LK_LINEAGE_UP) bfs(&w, 1);
    if (dir & LK_LINEAGE_DOWN) bfs(&w, 0);
    st = w.st;
  }
  if (!st) {
    reg_out doc = {0};
    RAW(&doc, "{\"root\":");
    reg_out_str(&doc, v.ref);
    RAW(&doc, ",\"nodes\":[");
    if (w.nodes_json.p) reg_out_raw(&doc, w.nodes_json.p, w.nodes_json.n);
    RAW(&doc, "],\"edges\":[");
    if (w.edges_json.p) reg_out_raw(&doc, w.edges_json.p, w.edges_json.n);
    RAW(&doc, "]}");
    if (w.nodes_json.oom || w.edges_json.oom) doc.oom = 1;
    st = reg_out_finish(reg, &doc, out_json);
  }
  walk_close(&w);
  reg_exec(reg, "COMMIT");
  if (!st) lk__ok(reg->ctx);
  return st;
}

int reg_is_ancestor(lk_registry_t *reg, int64_t ancestor, int64_t id) {
  sqlite3_stmt *q = NULL;
  int found = 0;
  if (reg_prepare(reg, UP_CTE "SELECT 1 FROM up WHERE k = 0 AND id = ?2", &q)) return -1;
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
  if ((st = reg_check_params(reg, "link", params_json))) return st;
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
