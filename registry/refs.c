/* refs.c - REFs ("NAME@N", "NAME:TAG", "NAME") resolved to versions, with
 * errors that say what does exist; lookups of base models by name. */
#include "reg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "1, 2, 5" - the versions of an adapter, for error messages. */
static void list_versions(lk_registry_t *reg, int64_t adapter_id, char *buf, size_t n) {
  sqlite3_stmt *q = NULL;
  size_t used = 0;
  int count = 0;
  buf[0] = '\0';
  if (reg_prepare(reg, "SELECT version FROM versions WHERE adapter_id = ? ORDER BY version", &q)) return;
  sqlite3_bind_int64(q, 1, adapter_id);
  while (sqlite3_step(q) == SQLITE_ROW && used + 24 < n) {
    if (++count > 12) {
      snprintf(buf + used, n - used, ", ...");
      break;
    }
    used += (size_t)snprintf(buf + used, n - used, "%s%lld", used ? ", " : "", (long long)sqlite3_column_int64(q, 0));
  }
  sqlite3_finalize(q);
}

static void list_tags(lk_registry_t *reg, int64_t adapter_id, char *buf, size_t n) {
  sqlite3_stmt *q = NULL;
  size_t used = (size_t)snprintf(buf, n, "latest");
  if (reg_prepare(reg, "SELECT tag FROM tags WHERE adapter_id = ? ORDER BY tag", &q)) return;
  sqlite3_bind_int64(q, 1, adapter_id);
  while (sqlite3_step(q) == SQLITE_ROW && used + REG_NAME_MAX + 8 < n)
    used += (size_t)snprintf(buf + used, n - used, ", %s", (const char *)sqlite3_column_text(q, 0));
  sqlite3_finalize(q);
}

/* Run q (which selects id, version, blob, model_id) and fill v. */
static int fetch_version(sqlite3_stmt *q, reg_version *v) {
  if (sqlite3_step(q) != SQLITE_ROW) return 0;
  v->id = sqlite3_column_int64(q, 0);
  v->version = sqlite3_column_int64(q, 1);
  snprintf(v->sha, sizeof v->sha, "%s", (const char *)sqlite3_column_text(q, 2));
  v->model_id = sqlite3_column_type(q, 3) == SQLITE_NULL ? 0 : sqlite3_column_int64(q, 3);
  return 1;
}

lk_status reg_resolve(lk_registry_t *reg, const char *ref, reg_version *v) {
  memset(v, 0, sizeof *v);
  if (!ref || !*ref) return lk__fail(reg->ctx, LK_ERR_INVALID_ARG, "empty REF (expected NAME@N, NAME:TAG or NAME)");
  size_t len = strcspn(ref, "@:");
  if (len == 0 || len > REG_NAME_MAX)
    return lk__fail(reg->ctx, LK_ERR_INVALID_ARG, "'%s' is not a REF (expected NAME@N, NAME:TAG or NAME)", ref);
  memcpy(v->name, ref, len);
  v->name[len] = '\0';
  char sep = ref[len];
  const char *rest = sep ? ref + len + 1 : NULL;
  long long want = 0;
  if (sep == '@') {
    char *end = NULL;
    want = strtoll(rest, &end, 10);
    if (!*rest || *end || want <= 0 || rest[0] == '+' || rest[0] == ' ')
      return lk__fail(reg->ctx, LK_ERR_INVALID_ARG, "'%s': the version after '@' must be a positive number", ref);
  } else if (sep == ':' && !reg_valid_name(rest)) {
    return lk__fail(reg->ctx, LK_ERR_INVALID_ARG, "'%s': '%s' is not a valid tag", ref, rest);
  }
  if (!reg_valid_name(v->name)) return reg_bad_name(reg, "adapter name", v->name);
  sqlite3_stmt *q = NULL;
  lk_status st = reg_prepare(reg, "SELECT id FROM adapters WHERE name = ?", &q);
  if (st) return st;
  sqlite3_bind_text(q, 1, v->name, -1, SQLITE_STATIC);
  int found = sqlite3_step(q) == SQLITE_ROW;
  if (found) v->adapter_id = sqlite3_column_int64(q, 0);
  sqlite3_finalize(q);
  if (!found) return lk__fail(reg->ctx, LK_ERR_NOT_FOUND, "%s: no adapter named '%s' in registry %s", ref, v->name, reg->path);

  const char *sql;
  if (sep == '@')
    sql = "SELECT id, version, blob, model_id FROM versions WHERE adapter_id = ?1 AND version = ?2";
  else if (sep == ':' && strcmp(rest, "latest"))
    sql = "SELECT v.id, v.version, v.blob, v.model_id FROM tags t JOIN versions v ON v.id = t.version_id "
          "WHERE t.adapter_id = ?1 AND t.tag = ?3";
  else
    sql = "SELECT id, version, blob, model_id FROM versions WHERE adapter_id = ?1 ORDER BY version DESC LIMIT 1";
  if ((st = reg_prepare(reg, sql, &q))) return st;
  sqlite3_bind_int64(q, 1, v->adapter_id);
  if (sep == '@') sqlite3_bind_int64(q, 2, want);
  if (sep == ':' && strcmp(rest, "latest")) sqlite3_bind_text(q, 3, rest, -1, SQLITE_STATIC);
  found = fetch_version(q, v);
  sqlite3_finalize(q);
  if (!found) {
    char have[512];
    if (sep == ':' && strcmp(rest, "latest")) {
      list_tags(reg, v->adapter_id, have, sizeof have);
      return lk__fail(reg->ctx, LK_ERR_NOT_FOUND, "%s: %s has no tag '%s' (its tags: %s)", ref, v->name, rest, have);
    }
    list_versions(reg, v->adapter_id, have, sizeof have);
    if (!have[0]) return lk__fail(reg->ctx, LK_ERR_NOT_FOUND, "%s: adapter '%s' has no versions left", ref, v->name);
    return lk__fail(reg->ctx, LK_ERR_NOT_FOUND, "%s: %s has no version %lld (its versions: %s)", ref, v->name, want,
                    have);
  }
  snprintf(v->ref, sizeof v->ref, "%s@%lld", v->name, (long long)v->version);
  return LK_OK;
}

int64_t reg_model_by_name(lk_registry_t *reg, const char *name) {
  sqlite3_stmt *q = NULL;
  int64_t id = 0;
  if (!name || reg_prepare(reg, "SELECT id FROM models WHERE name = ?1 UNION ALL "
                                "SELECT id FROM models WHERE length(?1) >= 8 AND substr(fingerprint, 1, length(?1)) = ?1 LIMIT 2",
                           &q))
    return 0;
  sqlite3_bind_text(q, 1, name, -1, SQLITE_STATIC);
  if (sqlite3_step(q) == SQLITE_ROW) id = sqlite3_column_int64(q, 0);
  sqlite3_finalize(q);
  return id;
}

LK_API lk_status lk_registry_resolve(lk_registry_t *reg, const char *ref, char **out_ref) {
  if (!reg || !out_ref) return lk__fail(reg ? reg->ctx : NULL, LK_ERR_INVALID_ARG, "lk_registry_resolve: NULL argument");
  *out_ref = NULL;
  reg_version v;
  lk_status st = reg_resolve(reg, ref, &v);
  if (st) return st;
  if (!(*out_ref = reg_strdup(v.ref))) return lk__fail(reg->ctx, LK_ERR_NOMEM, "out of memory");
  lk__ok(reg->ctx);
  return LK_OK;
}
