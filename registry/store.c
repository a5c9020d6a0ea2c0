/* store.c - the registry file: opening and refusing files, connection
 * settings (WAL, busy timeout, foreign keys), the schema and its forward
 * migrations, transactions, SQLite error mapping, and small shared helpers
 * (names, option structs, JSON strings, lk_free). */
#include "reg.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* PRAGMA application_id of a registry: "LKRG" as a big-endian integer, so
 * `file` and hexdump name it. */
#define REG_APP_ID 0x4C4B5247
#define REG_DEFAULT_BUSY_MS 30000u

/* Schema v1: adapters, versions, content-addressed payloads, tags and
 * version-to-version lineage. Frozen: a v1 file is migrated, never
 * rewritten. */
static const char schema_v1[] =
    "CREATE TABLE blobs("
    "  sha256 TEXT PRIMARY KEY,"       /* hex SHA-256 of the canonical bytes */
    "  size INTEGER NOT NULL,"         /* canonical bytes */
    "  stored INTEGER NOT NULL,"       /* compressed bytes in chunks */
    "  n_chunks INTEGER NOT NULL,"
    "  created INTEGER NOT NULL);"
    "CREATE TABLE chunks("
    "  blob TEXT NOT NULL REFERENCES blobs(sha256) ON DELETE CASCADE,"
    "  seq INTEGER NOT NULL,"
    "  size INTEGER NOT NULL,"         /* raw bytes of this chunk */
    "  data BLOB NOT NULL,"            /* zlib stream */
    "  PRIMARY KEY(blob, seq));"
    "CREATE TABLE models("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  architecture TEXT NOT NULL,"
    "  fingerprint TEXT NOT NULL UNIQUE,"
    "  config TEXT NOT NULL,"          /* the model's config object (JSON) */
    "  shapes TEXT NOT NULL,"          /* {tensor: [out, in]} of its 2-D weights */
    "  n_params INTEGER NOT NULL,"
    "  path TEXT,"
    "  created INTEGER NOT NULL,"
    "  operation TEXT NOT NULL,"
    "  notes TEXT);"
    "CREATE TABLE adapters("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  next_version INTEGER NOT NULL DEFAULT 1,"
    "  created INTEGER NOT NULL);"
    "CREATE TABLE versions("
    "  id INTEGER PRIMARY KEY,"
    "  adapter_id INTEGER NOT NULL REFERENCES adapters(id),"
    "  version INTEGER NOT NULL,"
    "  blob TEXT NOT NULL REFERENCES blobs(sha256),"
    "  model_id INTEGER REFERENCES models(id),"
    "  rank INTEGER NOT NULL,"
    "  alpha REAL NOT NULL,"
    "  scaling TEXT NOT NULL,"
    "  target_modules TEXT NOT NULL,"  /* JSON array of module leaves */
    "  n_targets INTEGER NOT NULL,"
    "  format TEXT NOT NULL,"
    "  size INTEGER NOT NULL,"
    "  created INTEGER NOT NULL,"
    "  operation TEXT NOT NULL,"
    "  notes TEXT,"
    "  UNIQUE(adapter_id, version));"
    "CREATE INDEX versions_blob ON versions(blob);"
    "CREATE TABLE tags("
    "  adapter_id INTEGER NOT NULL REFERENCES adapters(id),"
    "  tag TEXT NOT NULL,"
    "  version_id INTEGER NOT NULL REFERENCES versions(id),"
    "  PRIMARY KEY(adapter_id, tag));"
    "CREATE INDEX tags_version ON tags(version_id);"
    "CREATE TABLE lineage("
    "  child INTEGER NOT NULL REFERENCES versions(id),"
    "  parent INTEGER NOT NULL REFERENCES versions(id),"
    "  relation TEXT NOT NULL,"
    "  params TEXT NOT NULL DEFAULT '{}',"
    "  PRIMARY KEY(child, parent),"
    "  CHECK(child <> parent));"
    "CREATE INDEX lineage_parent ON lineage(parent);";

/* v1 -> v2: lineage of base models (a merged model points at the adapter
 * versions and the model it was made from), and an index for --base. */
static const char schema_v2[] =
    "CREATE TABLE model_lineage("
    "  model INTEGER NOT NULL REFERENCES models(id),"
    "  parent_version INTEGER REFERENCES versions(id),"
    "  parent_model INTEGER REFERENCES models(id),"
    "  relation TEXT NOT NULL,"
    "  params TEXT NOT NULL DEFAULT '{}',"
    "  CHECK((parent_version IS NULL) <> (parent_model IS NULL)));"
    "CREATE INDEX model_lineage_model ON model_lineage(model);"
    "CREATE INDEX model_lineage_version ON model_lineage(parent_version);"
    "CREATE INDEX versions_model ON versions(model_id);";

/* v2 -> v3: the files a version was added from, byte for byte (export
 * gives them back as they were; identity and dedup stay on the canonical
 * payload), a digest of those files for "the same bytes" lookups, and a
 * key-value table for state such as the damage marker verify leaves.
 * `meta` may exist already: verify of a v2 file creates it to mark damage. */
static const char schema_v3[] =
    "CREATE TABLE files("
    "  version_id INTEGER NOT NULL REFERENCES versions(id),"
    "  path TEXT NOT NULL,"            /* relative to the folder added; the file name for one file */
    "  blob TEXT REFERENCES blobs(sha256)," /* SHA-256 of the file's bytes; NULL for an empty file */
    "  size INTEGER NOT NULL,"
    "  PRIMARY KEY(version_id, path));"
    "CREATE INDEX files_blob ON files(blob);"
    "ALTER TABLE versions ADD COLUMN files_sha TEXT;" /* reg_files digest; NULL: added from memory or before v3 */
    "ALTER TABLE versions ADD COLUMN source TEXT;"    /* 'folder' or 'file' (what files holds); NULL: none */
    "CREATE INDEX versions_files ON versions(files_sha);"
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);";

/* v3 -> v4: lineage from an adapter version to a base model (a fresh
 * adapter trained_from the model it was trained on; v1-v3 edges joined
 * versions only). Old rows stay as they are. */
static const char schema_v4[] =
    "CREATE TABLE version_model_lineage("
    "  child INTEGER NOT NULL REFERENCES versions(id),"
    "  parent_model INTEGER NOT NULL REFERENCES models(id),"
    "  relation TEXT NOT NULL,"
    "  params TEXT NOT NULL DEFAULT '{}',"
    "  PRIMARY KEY(child, parent_model));"
    "CREATE INDEX version_model_lineage_model ON version_model_lineage(parent_model);";

/* migrations[i] takes a database from user_version i to i + 1. */
static const char *const migrations[] = {schema_v1, schema_v2, schema_v3, schema_v4};
_Static_assert(sizeof migrations / sizeof migrations[0] == LK_REGISTRY_SCHEMA, "one migration per version");

/* ---- small helpers ---------------------------------------------------------------- */

LK_API void lk_free(void *p) { free(p); }

char *reg_strdup(const char *s) { return lk__strdup(s); }

/* Decode one UTF-8 sequence at p (RFC 3629: no overlongs, no surrogates,
 * nothing above U+10FFFF); returns its length, 0 when malformed. */
size_t reg_utf8_next(const unsigned char *p, uint32_t *cp) {
  unsigned char c = p[0];
  if (c < 0x80) {
    *cp = c;
    return 1;
  }
  size_t len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
  if (!len || c > 0xf4) return 0;
  uint32_t v = c & (0x7f >> len);
  for (size_t i = 1; i < len; i++) {
    if ((p[i] & 0xc0) != 0x80) return 0;
    v = v << 6 | (p[i] & 0x3f);
  }
  static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (v < min[len] || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff)) return 0;
  *cp = v;
  return len;
}

/* Characters that change how a terminal shows what follows them: C0 and C1
 * controls, DEL, and the bidirectional embeddings, overrides and isolates
 * (a name could otherwise display as a different name). */
int reg_unsafe_cp(uint32_t cp) {
  return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) || (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069);
}

int reg_valid_text(const char *s, int multiline) {
  if (!s) return 1;
  for (const unsigned char *p = (const unsigned char *)s; *p;) {
    uint32_t cp;
    size_t len = reg_utf8_next(p, &cp);
    if (!len) return 0;
    if (reg_unsafe_cp(cp) && !(multiline && (cp == '\n' || cp == '\t'))) return 0;
    p += len;
  }
  return 1;
}

/* Every string and key of a JSON value is valid text (\u escapes decode to
 * the characters reg_valid_text refuses too). */
static int json_text_ok(json_t *j, int depth) {
  if (depth > 64) return 0;
  if (json_is_string(j)) return reg_valid_text(json_string_value(j), 1);
  const char *k;
  json_t *v;
  size_t i;
  if (json_is_object(j)) {
    json_object_foreach(j, k, v) if (!reg_valid_text(k, 1) || !json_text_ok(v, depth + 1)) return 0;
  } else if (json_is_array(j)) {
    json_array_foreach(j, i, v) if (!json_text_ok(v, depth + 1)) return 0;
  }
  return 1;
}

lk_status reg_check_params(lk_registry_t *reg, const char *what, const char *params) {
  if (!params) return LK_OK;
  json_error_t jerr;
  json_t *p = json_loads(params, 0, &jerr);
  int obj = json_is_object(p), text = obj && json_text_ok(p, 0);
  json_decref(p);
  if (!obj) return lk__fail(reg->ctx, LK_ERR_INVALID_ARG, "%s: relation parameters are not a JSON object", what);
  if (!text)
    return lk__fail(reg->ctx, LK_ERR_INVALID_ARG,
                    "%s: relation parameters hold control or bidirectional-override characters", what);
  return LK_OK;
}

lk_status reg_check_text(lk_registry_t *reg, const char *what, const char *s, int multiline) {
  if (reg_valid_text(s, multiline)) return LK_OK;
  return lk__fail(reg->ctx, LK_ERR_INVALID_ARG,
                  "%s is not valid: it must be UTF-8 without control characters%s or bidirectional overrides "
                  "(U+202A-U+202E, U+2066-U+2069)",
                  what, multiline ? " (other than tab and newline)" : "");
}

int reg_valid_name(const char *s) {
  if (!s || !*s || *s == '-') return 0;
  size_t n = strlen(s);
  if (n > REG_NAME_MAX) return 0;
  for (const unsigned char *p = (const unsigned char *)s; *p; p++)
    if (*p == '@' || *p == ':' || *p <= ' ' || *p == 0x7f) return 0;
  return reg_valid_text(s, 0);
}

lk_status reg_bad_name(lk_registry_t *reg, const char *what, const char *s) {
  /* The name itself is not echoed when it is not safe to print. */
  int printable = s && reg_valid_text(s, 0) && strlen(s) <= 4 * REG_NAME_MAX;
  return lk__fail(reg->ctx, LK_ERR_INVALID_ARG,
                  "%s '%s' is not valid: 1 to %d bytes of UTF-8, without '@', ':', spaces, control characters or "
                  "bidirectional overrides, not starting with '-'",
                  what, printable ? s : "(unprintable)", REG_NAME_MAX);
}

lk_status reg_opts(lk_registry_t *reg, void *dst, size_t n, const void *src, const char *what) {
  memset(dst, 0, n);
  if (!src) return LK_OK;
  uint32_t size;
  memcpy(&size, src, sizeof size);
  if (size < sizeof(uint32_t))
    return lk__fail(reg ? reg->ctx : NULL, LK_ERR_ABI, "%s: struct_size %u too small", what, size);
  for (size_t i = n; i < size; i++)
    if (((const unsigned char *)src)[i])
      return lk__fail(reg ? reg->ctx : NULL, LK_ERR_ABI,
                      "%s: struct_size %u is larger than this library knows (%zu) and the unknown fields are set",
                      what, size, n);
  memcpy(dst, src, size < n ? size : n);
  return LK_OK;
}

typedef struct dump_buf {
  char *p;
  size_t n, cap;
  int oom;
} dump_buf;

static int dump_cb(const char *buffer, size_t size, void *data) {
  dump_buf *b = data;
  if (b->n + size + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->n + size + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
      b->oom = 1;
      return -1;
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->n, buffer, size);
  b->n += size;
  b->p[b->n] = '\0';
  return 0;
}

/* Into our own malloc'd buffer: lk_free must not depend on the allocator a
 * host may have given jansson. */
char *reg_json_string(json_t *j) {
  dump_buf b = {0};
  if (!j || json_dump_callback(j, dump_cb, &b, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY) || b.oom) {
    free(b.p);
    return NULL;
  }
  return b.p ? reg_json_repair(b.p) : reg_strdup("");
}

/* ---- errors and transactions ---------------------------------------------------- */

static lk_status status_of(int rc) {
  switch (rc & 0xff) {
  case SQLITE_BUSY: case SQLITE_LOCKED: return LK_ERR_BUSY;
  case SQLITE_NOMEM: return LK_ERR_NOMEM;
  case SQLITE_CORRUPT: return LK_ERR_CORRUPT;
  case SQLITE_NOTADB: return LK_ERR_FORMAT;
  case SQLITE_CONSTRAINT: return LK_ERR_EXISTS;
  case SQLITE_IOERR: case SQLITE_CANTOPEN: case SQLITE_FULL: case SQLITE_READONLY: case SQLITE_PERM:
    return LK_ERR_IO;
  default: return LK_ERR_INTERNAL;
  }
}

lk_status reg_sql_fail(lk_registry_t *reg, int rc, const char *what) {
  const char *msg = reg->db ? sqlite3_errmsg(reg->db) : sqlite3_errstr(rc);
  return lk__fail(reg->ctx, status_of(rc), "registry %s: %s: %s", reg->path, what, msg);
}

lk_status reg_wrap(lk_registry_t *reg, lk_status code, const char *fmt, ...) {
  char prefix[LK_ERROR_MAX], cause[LK_ERROR_MAX * 2];
  snprintf(cause, sizeof cause, "%s", lk_last_error(reg->ctx));
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(prefix, sizeof prefix, fmt, ap);
  va_end(ap);
  return lk__fail(reg->ctx, code, "%s: %s", prefix, cause);
}

lk_status reg_prepare(lk_registry_t *reg, const char *sql, sqlite3_stmt **st) {
  int rc = sqlite3_prepare_v2(reg->db, sql, -1, st, NULL);
  return rc == SQLITE_OK ? LK_OK : reg_sql_fail(reg, rc, "preparing a query");
}

lk_status reg_exec(lk_registry_t *reg, const char *sql) {
  int rc = sqlite3_exec(reg->db, sql, NULL, NULL, NULL);
  return rc == SQLITE_OK ? LK_OK : reg_sql_fail(reg, rc, "writing");
}

static void sleep_ms(unsigned ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* Run sql, retrying while the database is busy: the busy handler covers
 * most waits, but not every lock SQLite takes (the journal-mode switch,
 * recovery of a WAL left by a killed writer). */
static int exec_retry(sqlite3 *db, const char *sql, unsigned timeout_ms) {
  int rc;
  for (unsigned waited = 0;; waited += 10) {
    rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if ((rc & 0xff) != SQLITE_BUSY && (rc & 0xff) != SQLITE_LOCKED) return rc;
    if (waited >= timeout_ms) return rc;
    sleep_ms(10);
  }
}

static unsigned busy_ms_of(const lk_registry_t *reg) { return reg->busy_ms ? reg->busy_ms : REG_DEFAULT_BUSY_MS; }

lk_status reg_begin(lk_registry_t *reg) {
  int rc = exec_retry(reg->db, "BEGIN IMMEDIATE", busy_ms_of(reg));
  return rc == SQLITE_OK ? LK_OK : reg_sql_fail(reg, rc, "starting a write (another writer held the lock too long)");
}

lk_status reg_commit(lk_registry_t *reg) {
  int rc = exec_retry(reg->db, "COMMIT", busy_ms_of(reg));
  if (rc == SQLITE_OK) return LK_OK;
  lk_status st = reg_sql_fail(reg, rc, "committing");
  reg_rollback(reg);
  return st;
}

void reg_rollback(lk_registry_t *reg) {
  if (!sqlite3_get_autocommit(reg->db)) sqlite3_exec(reg->db, "ROLLBACK", NULL, NULL, NULL);
}

lk_status reg_writable(lk_registry_t *reg, const char *what) {
  if (reg->read_only)
    return lk__fail(reg->ctx, LK_ERR_STATE, "registry %s is open read-only: cannot %s", reg->path, what);
  /* verify leaves a marker when it finds damage: writing more into a
   * damaged file risks more damage and hides what was lost. */
  sqlite3_stmt *q = NULL;
  if (sqlite3_prepare_v2(reg->db, "SELECT value FROM meta WHERE key = 'damaged'", -1, &q, NULL) != SQLITE_OK) {
    sqlite3_finalize(q); /* no meta table: never marked */
    return LK_OK;
  }
  lk_status st = LK_OK;
  if (sqlite3_step(q) == SQLITE_ROW)
    st = lk__fail(reg->ctx, LK_ERR_CORRUPT,
                  "registry %s was found damaged by verify (%s): cannot %s; restore it from a copy (verify clears "
                  "the mark once it finds no problem)",
                  reg->path, (const char *)sqlite3_column_text(q, 0), what);
  sqlite3_finalize(q);
  return st;
}

void reg_mark_damaged(lk_registry_t *reg, const char *first_problem) {
  /* Through a connection of its own: the handle may be read-only (verify
   * is a read command). Best effort - a file nobody may write cannot take
   * new versions either. */
  sqlite3 *db = NULL;
  if (sqlite3_open_v2(reg->path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) == SQLITE_OK) {
    sqlite3_busy_timeout(db, (int)busy_ms_of(reg));
    sqlite3_stmt *q = NULL;
    if (sqlite3_exec(db, "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)", NULL, NULL,
                     NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db,
                           first_problem ? "INSERT OR REPLACE INTO meta(key, value) VALUES('damaged', ?)"
                                         : "DELETE FROM meta WHERE key = 'damaged'",
                           -1, &q, NULL) == SQLITE_OK) {
      if (first_problem) sqlite3_bind_text(q, 1, first_problem, -1, SQLITE_TRANSIENT);
      sqlite3_step(q);
    }
    sqlite3_finalize(q);
  }
  sqlite3_close_v2(db);
}

/* ---- relations and the default path ----------------------------------------------- */

static const char *const rel_names[] = {"none",           "trained_from",  "merged_from", "quantized_from",
                                        "extracted_from", "combined_from", "imported"};
enum { N_RELATIONS = sizeof rel_names / sizeof rel_names[0] };

LK_API const char *lk_registry_relation_name(int32_t relation) {
  return relation >= 0 && relation < N_RELATIONS ? rel_names[relation] : "unknown";
}

LK_API int32_t lk_registry_relation_parse(const char *name) {
  for (int32_t i = 1; name && i < N_RELATIONS; i++)
    if (!strcmp(name, rel_names[i])) return i;
  return LK_REL_NONE;
}

int reg_relation_valid(int32_t rel) { return rel > LK_REL_NONE && rel < N_RELATIONS; }

static char *join_path(const char *a, const char *b) {
  size_t n = strlen(a) + strlen(b) + 2;
  char *p = malloc(n);
  if (p) snprintf(p, n, "%s/%s", a, b);
  return p;
}

LK_API char *lk_registry_default_path(void) {
  const char *z = secure_getenv("LORAKIT_REGISTRY");
  if (z && *z) return reg_strdup(z);
  z = secure_getenv("XDG_DATA_HOME");
  if (z && *z == '/') return join_path(z, "lorakit/registry.db");
  z = secure_getenv("HOME");
  if (z && *z) return join_path(z, ".local/share/lorakit/registry.db");
  return NULL;
}

/* mkdir -p of the folder holding path. */
static int make_parent_dirs(const char *path) {
  char *p = reg_strdup(path);
  if (!p) return -1;
  char *slash = strrchr(p, '/');
  int rc = 0;
  if (slash && slash != p) {
    *slash = '\0';
    for (char *q = p + 1; *q; q++) {
      if (*q != '/') continue;
      *q = '\0';
      if (mkdir(p, 0777) && errno != EEXIST) rc = -1;
      *q = '/';
    }
    if (mkdir(p, 0777) && errno != EEXIST) rc = -1;
  }
  free(p);
  return rc;
}

/* ---- open --------------------------------------------------------------------------- */

/* The file's schema version, application id and number of schema objects,
 * read in one statement: one snapshot, so a registry another process is
 * creating at this moment is seen either before or after, never half way. */
static int read_header(sqlite3 *db, int64_t *version, int64_t *app, int64_t *n_obj) {
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(db,
                              "SELECT (SELECT user_version FROM pragma_user_version), (SELECT application_id FROM "
                              "pragma_application_id), (SELECT count(*) FROM sqlite_master)",
                              -1, &st, NULL);
  if (rc == SQLITE_OK) {
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      *version = sqlite3_column_int64(st, 0);
      *app = sqlite3_column_int64(st, 1);
      *n_obj = sqlite3_column_int64(st, 2);
      rc = SQLITE_OK;
    }
  }
  sqlite3_finalize(st);
  return rc;
}

static int64_t pragma_int(sqlite3 *db, const char *sql, int *rc_out) {
  sqlite3_stmt *st = NULL;
  int64_t v = 0;
  int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
  if (rc == SQLITE_OK) {
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      v = sqlite3_column_int64(st, 0);
      rc = SQLITE_OK;
    }
  }
  sqlite3_finalize(st);
  *rc_out = rc;
  return v;
}

/* Look before touching: what the file is, read without writing a byte.
 * Returns its schema version (0 for an empty database). */
static lk_status inspect(lk_registry_t *reg, int64_t *version) {
  int rc;
  int64_t v = 0, app = 0, n_obj = 0;
  for (unsigned waited = 0;; waited += 10) {
    rc = read_header(reg->db, &v, &app, &n_obj);
    if ((rc & 0xff) != SQLITE_BUSY || waited >= busy_ms_of(reg)) break;
    sleep_ms(10);
  }
  if ((rc & 0xff) == SQLITE_NOTADB)
    return lk__fail(reg->ctx, LK_ERR_FORMAT, "%s: not a lorakit registry (not an SQLite database); left untouched",
                    reg->path);
  if (rc != SQLITE_OK) return reg_sql_fail(reg, rc, "reading the schema version");
  if (app != REG_APP_ID && (app != 0 || v != 0 || n_obj != 0))
    return lk__fail(reg->ctx, LK_ERR_FORMAT,
                    "%s: an SQLite database but not a lorakit registry (application_id %lld, user_version %lld); "
                    "left untouched",
                    reg->path, (long long)app, (long long)v);
  if (v > LK_REGISTRY_SCHEMA)
    return lk__fail(reg->ctx, LK_ERR_UNSUPPORTED,
                    "%s: registry schema version %lld is newer than this lorakit (%s) supports (%d); upgrade "
                    "lorakit to use it (the file was left untouched)",
                    reg->path, (long long)v, lk_version_string(), LK_REGISTRY_SCHEMA);
  if (v < 0)
    return lk__fail(reg->ctx, LK_ERR_FORMAT, "%s: registry schema version %lld is invalid", reg->path, (long long)v);
  /* An empty file (or an SQLite file without tables) is where a registry
   * may be created, but there is nothing to read in it. */
  if (reg->read_only && n_obj == 0)
    return lk__fail(reg->ctx, LK_ERR_FORMAT, "%s: not a lorakit registry (an empty file); left untouched", reg->path);
  *version = v;
  return LK_OK;
}

/* Create or migrate to LK_REGISTRY_SCHEMA in one transaction; another
 * process may have done it first, so the version is read again inside. */
static lk_status migrate(lk_registry_t *reg) {
  lk_status st = reg_begin(reg);
  if (st) return st;
  int rc;
  int64_t v = pragma_int(reg->db, "PRAGMA user_version", &rc);
  if (rc != SQLITE_OK) {
    st = reg_sql_fail(reg, rc, "reading the schema version");
    goto fail;
  }
  if (v > LK_REGISTRY_SCHEMA) {
    st = lk__fail(reg->ctx, LK_ERR_UNSUPPORTED, "%s: registry schema version %lld is newer than this lorakit supports (%d)",
                  reg->path, (long long)v, LK_REGISTRY_SCHEMA);
    goto fail;
  }
  if (v == LK_REGISTRY_SCHEMA) return reg_commit(reg); /* another process got there first */
  if (v == 0 && (st = reg_exec(reg, "PRAGMA application_id = 1280004679"))) goto fail; /* REG_APP_ID */
  for (int64_t i = v; i < LK_REGISTRY_SCHEMA; i++) {
    if ((st = reg_exec(reg, migrations[i]))) {
      lk__fail(reg->ctx, st, "%s: migrating the registry schema from version %lld to %lld: %s", reg->path,
               (long long)i, (long long)i + 1, sqlite3_errmsg(reg->db));
      goto fail;
    }
  }
  char sql[64];
  snprintf(sql, sizeof sql, "PRAGMA user_version = %d", LK_REGISTRY_SCHEMA);
  if ((st = reg_exec(reg, sql))) goto fail;
  /* A migrated file must still be consistent. */
  sqlite3_stmt *fk = NULL;
  if ((st = reg_prepare(reg, "PRAGMA foreign_key_check", &fk))) goto fail;
  rc = sqlite3_step(fk);
  sqlite3_finalize(fk);
  if (rc == SQLITE_ROW) {
    st = lk__fail(reg->ctx, LK_ERR_CORRUPT, "%s: the registry breaks its foreign keys after migration from version %lld",
                  reg->path, (long long)v);
    goto fail;
  }
  return reg_commit(reg);
fail:
  reg_rollback(reg);
  return st;
}

static lk_status configure(lk_registry_t *reg, int64_t version, unsigned busy_ms) {
  int rc = SQLITE_OK;
  if (!reg->read_only) {
    /* Only an empty file can still choose its vacuum mode; incremental lets
     * gc hand space back. */
    if (version == 0) exec_retry(reg->db, "PRAGMA auto_vacuum = INCREMENTAL", busy_ms);
    rc = exec_retry(reg->db, "PRAGMA journal_mode = WAL", busy_ms);
    if (rc == SQLITE_OK) rc = sqlite3_exec(reg->db, "PRAGMA synchronous = FULL", NULL, NULL, NULL);
  }
  if (rc == SQLITE_OK) rc = sqlite3_exec(reg->db, "PRAGMA foreign_keys = ON", NULL, NULL, NULL);
  return rc == SQLITE_OK ? LK_OK : reg_sql_fail(reg, rc, "configuring the connection");
}

/* path as an SQLite URI ("file:...?immutable=1"): '%', '?' and '#' escaped. */
static char *immutable_uri(const char *path) {
  size_t n = strlen(path);
  char *u = malloc(3 * n + 32), *p = u;
  if (!u) return NULL;
  p += sprintf(p, "file:");
  for (const char *c = path; *c; c++) {
    if (*c == '%' || *c == '?' || *c == '#') p += sprintf(p, "%%%02X", (unsigned char)*c);
    else *p++ = *c;
  }
  strcpy(p, "?immutable=1");
  return u;
}

static lk_status open_db(lk_registry_t *reg, int immutable) {
  int flags = reg->read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
  char *uri = immutable ? immutable_uri(reg->path) : NULL;
  if (immutable && !uri) return lk__fail(reg->ctx, LK_ERR_NOMEM, "out of memory");
  int rc = sqlite3_open_v2(uri ? uri : reg->path, &reg->db, flags | SQLITE_OPEN_NOMUTEX | (uri ? SQLITE_OPEN_URI : 0),
                           NULL);
  free(uri);
  if (rc != SQLITE_OK)
    return lk__fail(reg->ctx, status_of(rc), "%s: cannot open the registry: %s", reg->path,
                    reg->db ? sqlite3_errmsg(reg->db) : sqlite3_errstr(rc));
  sqlite3_busy_timeout(reg->db, (int)busy_ms_of(reg));
  sqlite3_extended_result_codes(reg->db, 1);
  return LK_OK;
}

LK_API lk_status lk_registry_open(lk_context_t *ctx, const char *path, const lk_registry_opts_t *opts,
                                  lk_registry_t **out) {
  if (!ctx || !out) return lk__fail(ctx, LK_ERR_INVALID_ARG, "lk_registry_open: NULL argument");
  *out = NULL;
  lk_registry_opts_t o;
  lk_status st = reg_opts(NULL, &o, sizeof o, opts, "lk_registry_opts_t");
  if (st) return lk__fail(ctx, st, "lk_registry_open: options struct_size is not one this library knows");
  lk_registry_t *reg = calloc(1, sizeof *reg);
  if (!reg) return lk__fail(ctx, LK_ERR_NOMEM, "lk_registry_open: out of memory");
  reg->ctx = ctx;
  reg->read_only = o.read_only != 0;
  reg->path = path ? reg_strdup(path) : lk_registry_default_path();
  if (!reg->path) {
    st = path ? lk__fail(ctx, LK_ERR_NOMEM, "lk_registry_open: out of memory")
              : lk__fail(ctx, LK_ERR_NOT_FOUND,
                         "no registry location: set LORAKIT_REGISTRY or HOME, or pass a path (--registry PATH)");
    goto fail;
  }
  struct stat sb;
  int exists = stat(reg->path, &sb) == 0;
  if (exists && S_ISDIR(sb.st_mode)) {
    st = lk__fail(ctx, LK_ERR_FORMAT, "%s: is a folder, not a registry file", reg->path);
    goto fail;
  }
  if (!exists && reg->read_only) {
    st = lk__fail(ctx, LK_ERR_NOT_FOUND, "%s: no registry here (opened read-only, so none was created)", reg->path);
    goto fail;
  }
  if (!exists && make_parent_dirs(reg->path)) {
    st = lk__fail(ctx, LK_ERR_IO, "%s: cannot create its folder: %s", reg->path, strerror(errno));
    goto fail;
  }
  unsigned busy_ms = o.busy_timeout_ms ? o.busy_timeout_ms : REG_DEFAULT_BUSY_MS;
  reg->busy_ms = busy_ms;
  int64_t version = 0;
  if ((st = open_db(reg, 0))) goto fail;
  st = inspect(reg, &version);
  /* A WAL file read-only whose folder cannot take the -shm index: read it
   * as immutable (nobody can be writing it through this folder either). */
  if (st && reg->read_only && (sqlite3_extended_errcode(reg->db) & 0xff) == SQLITE_READONLY) {
    sqlite3_close_v2(reg->db);
    reg->db = NULL;
    if ((st = open_db(reg, 1))) goto fail;
    st = inspect(reg, &version);
  }
  if (st || (st = configure(reg, version, busy_ms))) goto fail;
  reg->schema = (int)version;
  /* Read-only handles read schema 2 and 3 as they are (the v3 and v4
   * tables are optional to every reader); older files need the writer's
   * migration first. */
  if (version < LK_REGISTRY_SCHEMA && !(reg->read_only && version >= 2)) {
    if (reg->read_only) {
      st = lk__fail(ctx, LK_ERR_STATE, "%s: registry schema version %lld needs migrating to %d: open it for writing once",
                    reg->path, (long long)version, LK_REGISTRY_SCHEMA);
      goto fail;
    }
    if ((st = migrate(reg))) goto fail;
    reg->schema = LK_REGISTRY_SCHEMA;
  }
  *out = reg;
  lk__ok(ctx);
  return LK_OK;
fail:
  lk_registry_close(reg);
  return st;
}

LK_API void lk_registry_close(lk_registry_t *reg) {
  if (!reg) return;
  if (reg->db) sqlite3_close_v2(reg->db);
  free(reg->path);
  free(reg);
}

LK_API const char *lk_registry_path(const lk_registry_t *reg) { return reg ? reg->path : ""; }
