/* files.c - the files a version was added from, kept byte for byte: every
 * regular file of a PEFT folder (README, tokenizer files, the config as
 * written) or the GGUF LoRA file itself. Identity and dedup stay on the
 * canonical payload; these files are what `export` in the stored format
 * gives back, and their digest is what "the same bytes" means when a path
 * is looked up (lk_registry_find, adding a folder twice). */
#include "reg.h"

#include "../plugins/common/lk_tmpfile.h" /* this file only: one table for liblorakit */

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_FILES 4096
#define MAX_DEPTH 16

void reg_files_free(reg_files *fs) {
  for (uint32_t i = 0; i < fs->n; i++) {
    free(fs->f[i].rel);
    free(fs->f[i].data);
    reg_zchunks_free(&fs->f[i].z);
  }
  free(fs->f);
  memset(fs, 0, sizeof *fs);
}

/* Read path whole (hashing it; keeping the bytes when keep). */
static lk_status read_one(lk_registry_t *reg, const char *path, const char *rel, int keep, reg_files *fs) {
  if (fs->n == MAX_FILES)
    return lk__fail(reg->ctx, LK_ERR_UNSUPPORTED, "%s: more than %d files in the adapter folder", path, MAX_FILES);
  if (fs->n == fs->cap) {
    uint32_t cap = fs->cap ? 2 * fs->cap : 16;
    reg_file *p = realloc(fs->f, cap * sizeof *p);
    if (!p) return lk__fail(reg->ctx, LK_ERR_NOMEM, "out of memory");
    fs->f = p;
    fs->cap = cap;
  }
  reg_file *f = &fs->f[fs->n];
  memset(f, 0, sizeof *f);
  FILE *in = fopen(path, "rb");
  if (!in) return lk__fail(reg->ctx, LK_ERR_IO, "%s: cannot read: %s", path, strerror(errno));
  struct stat sb;
  if (fstat(fileno(in), &sb) || sb.st_size < 0) {
    fclose(in);
    return lk__fail(reg->ctx, LK_ERR_IO, "%s: cannot read: %s", path, strerror(errno));
  }
  uint64_t n = (uint64_t)sb.st_size;
  unsigned char *buf = malloc(n ? n : 1);
  if (!buf) {
    fclose(in);
    return lk__fail(reg->ctx, LK_ERR_NOMEM, "%s: out of memory reading %llu bytes", path, (unsigned long long)n);
  }
  size_t got = n ? fread(buf, 1, n, in) : 0;
  fclose(in);
  if (got != n) {
    free(buf);
    return lk__fail(reg->ctx, LK_ERR_IO, "%s: short read (%zu of %llu bytes)", path, got, (unsigned long long)n);
  }
  if (!(f->rel = reg_strdup(rel))) {
    free(buf);
    return lk__fail(reg->ctx, LK_ERR_NOMEM, "out of memory");
  }
  reg_sha256_hex(buf, n, f->sha);
  f->size = n;
  if (keep) f->data = buf;
  else free(buf);
  fs->n++;
  return LK_OK;
}

static lk_status walk(lk_registry_t *reg, const char *root, const char *rel, int depth, int keep, reg_files *fs) {
  char dir[4096];
  snprintf(dir, sizeof dir, "%s%s%s", root, *rel ? "/" : "", rel);
  if (depth > MAX_DEPTH) return lk__fail(reg->ctx, LK_ERR_UNSUPPORTED, "%s: folders nested too deep", dir);
  DIR *d = opendir(dir);
  if (!d) return lk__fail(reg->ctx, LK_ERR_IO, "%s: cannot list: %s", dir, strerror(errno));
  lk_status st = LK_OK;
  struct dirent *e;
  while (!st && (e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    char full[4096], sub[4096];
    int a = snprintf(full, sizeof full, "%s/%s", dir, e->d_name);
    int b = snprintf(sub, sizeof sub, "%s%s%s", rel, *rel ? "/" : "", e->d_name);
    if (a >= (int)sizeof full || b >= (int)sizeof sub) {
      st = lk__fail(reg->ctx, LK_ERR_UNSUPPORTED, "%s: path too long", dir);
      break;
    }
    if (!reg_valid_text(e->d_name, 0)) {
      st = lk__fail(reg->ctx, LK_ERR_INVALID_ARG, "%s: a file name that is not UTF-8 or holds control characters",
                    dir);
      break;
    }
    struct stat lsb, sb;
    if (lstat(full, &lsb)) continue; /* gone meanwhile */
    if (S_ISDIR(lsb.st_mode)) st = walk(reg, root, sub, depth + 1, keep, fs);
    else if (!stat(full, &sb) && S_ISREG(sb.st_mode)) st = read_one(reg, full, sub, keep, fs);
  }
  closedir(d);
  return st;
}

static int by_rel(const void *a, const void *b) { return strcmp(((const reg_file *)a)->rel, ((const reg_file *)b)->rel); }

lk_status reg_files_read(lk_registry_t *reg, const char *path, int keep_data, reg_files *fs) {
  memset(fs, 0, sizeof *fs);
  struct stat sb;
  if (stat(path, &sb)) return lk__fail(reg->ctx, LK_ERR_NOT_FOUND, "%s: %s", path, strerror(errno));
  lk_status st;
  if (S_ISDIR(sb.st_mode)) {
    fs->is_dir = 1;
    st = walk(reg, path, "", 0, keep_data, fs);
  } else {
    const char *slash = strrchr(path, '/');
    st = read_one(reg, path, slash ? slash + 1 : path, keep_data, fs);
  }
  if (st) {
    reg_files_free(fs);
    return st;
  }
  if (fs->n) qsort(fs->f, fs->n, sizeof *fs->f, by_rel);
  reg_sha *h = reg_sha_new();
  if (!h) {
    reg_files_free(fs);
    return lk__fail(reg->ctx, LK_ERR_NOMEM, "out of memory");
  }
  reg_sha_update(h, fs->is_dir ? "folder\n" : "file\n", fs->is_dir ? 7 : 5);
  for (uint32_t i = 0; i < fs->n; i++) {
    char size[32];
    int k = snprintf(size, sizeof size, "%llu", (unsigned long long)fs->f[i].size);
    reg_sha_update(h, fs->f[i].rel, strlen(fs->f[i].rel) + 1);
    reg_sha_update(h, size, (uint64_t)k + 1);
    reg_sha_update(h, fs->f[i].sha, REG_HEX - 1);
    reg_sha_update(h, "\n", 1);
  }
  reg_sha_final(h, fs->digest);
  return LK_OK;
}

lk_status reg_files_compress(lk_registry_t *reg, reg_files *fs) {
  for (uint32_t i = 0; i < fs->n; i++) {
    reg_file *f = &fs->f[i];
    if (!f->size || !f->data || reg_blob_exists(reg, f->sha)) continue;
    lk_status st = reg_blob_compress(reg, f->data, f->size, f->size < REG_CHUNK ? f->size : REG_CHUNK, &f->z);
    if (st) return st;
  }
  return LK_OK;
}

lk_status reg_files_put(lk_registry_t *reg, reg_files *fs, int64_t version_id) {
  sqlite3_stmt *q = NULL;
  lk_status st = reg_prepare(reg, "INSERT INTO files(version_id, path, blob, size) VALUES(?,?,?,?)", &q);
  for (uint32_t i = 0; !st && i < fs->n; i++) {
    reg_file *f = &fs->f[i];
    if (f->size && (st = reg_blob_put(reg, f->sha, f->data, f->size, f->size < REG_CHUNK ? f->size : REG_CHUNK, &f->z,
                                      NULL, NULL)))
      break;
    sqlite3_reset(q);
    sqlite3_bind_int64(q, 1, version_id);
    sqlite3_bind_text(q, 2, f->rel, -1, SQLITE_STATIC);
    if (f->size) sqlite3_bind_text(q, 3, f->sha, -1, SQLITE_STATIC);
    else sqlite3_bind_null(q, 3);
    sqlite3_bind_int64(q, 4, (sqlite3_int64)f->size);
    int rc = sqlite3_step(q);
    if (rc != SQLITE_DONE) st = reg_sql_fail(reg, rc, "recording a file");
  }
  sqlite3_finalize(q);
  if (!st) {
    if ((st = reg_prepare(reg, "UPDATE versions SET files_sha = ?, source = ? WHERE id = ?", &q))) return st;
    sqlite3_bind_text(q, 1, fs->digest, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, fs->is_dir ? "folder" : "file", -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 3, version_id);
    int rc = sqlite3_step(q);
    sqlite3_finalize(q);
    if (rc != SQLITE_DONE) st = reg_sql_fail(reg, rc, "recording a version's files");
  }
  return st;
}

/* ---- matching content to versions -------------------------------------------------- */

/* Rows of q: name, version, format, pref (1 = preferred). Picks the first;
 * notes the others of the same preference. */
static int pick(lk_registry_t *reg, sqlite3_stmt *q, const char *what, char *ref, size_t ref_n, char **note) {
  int n = 0, top = -1;
  reg_out others = {0};
  while (sqlite3_step(q) == SQLITE_ROW) {
    int pref = sqlite3_column_int(q, 3);
    char r[REG_NAME_MAX + 24];
    snprintf(r, sizeof r, "%s@%lld", (const char *)sqlite3_column_text(q, 0), (long long)sqlite3_column_int64(q, 1));
    if (n++ == 0) {
      top = pref;
      snprintf(ref, ref_n, "%s", r);
    } else if (pref == top && others.n < 1024) {
      reg_out_raw(&others, ", ", 2);
      reg_out_raw(&others, r, strlen(r));
    }
  }
  if (n && others.n && note && !others.oom) {
    size_t len = strlen(ref) + others.n + strlen(what) + 96;
    if ((*note = malloc(len)))
      snprintf(*note, len, "%s%s hold %s; chose %s (the newest)", ref, others.p, what, ref);
  }
  (void)reg;
  free(others.p);
  return n > 0;
}

int reg_match(lk_registry_t *reg, const char *digest, const char *sha, const char *format, const char *name,
              char *ref, size_t ref_n, char **note) {
  if (note) *note = NULL;
  sqlite3_stmt *q = NULL;
  int found = 0;
  if (digest && reg->schema >= 3 &&
      !reg_prepare(reg,
                   "SELECT a.name, v.version, v.format, 1 FROM versions v JOIN adapters a ON a.id = v.adapter_id "
                   "WHERE v.files_sha = ?1 AND (?2 IS NULL OR a.name = ?2) ORDER BY v.id DESC",
                   &q)) {
    sqlite3_bind_text(q, 1, digest, -1, SQLITE_STATIC);
    if (name) sqlite3_bind_text(q, 2, name, -1, SQLITE_STATIC);
    found = pick(reg, q, "these exact files", ref, ref_n, note);
    sqlite3_finalize(q);
    q = NULL;
  }
  if (!found && sha &&
      !reg_prepare(reg,
                   "SELECT a.name, v.version, v.format, v.format IS ?3 AS pref FROM versions v JOIN adapters a ON "
                   "a.id = v.adapter_id WHERE v.blob = ?1 AND (?2 IS NULL OR a.name = ?2) ORDER BY pref DESC, v.id DESC",
                   &q)) {
    sqlite3_bind_text(q, 1, sha, -1, SQLITE_STATIC);
    if (name) sqlite3_bind_text(q, 2, name, -1, SQLITE_STATIC);
    if (format) sqlite3_bind_text(q, 3, format, -1, SQLITE_STATIC);
    found = pick(reg, q, "the same content", ref, ref_n, note);
    sqlite3_finalize(q);
  }
  return found;
}

/* ---- export of the stored files ------------------------------------------------------ */

/* A stored relative path that stays inside the folder it is written to
 * (rows may come from a hand-edited file). */
static int safe_rel(const char *rel) {
  if (!*rel || *rel == '/') return 0;
  for (const char *p = rel; *p;) {
    size_t n = strcspn(p, "/");
    if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.')) return 0;
    p += n;
    if (*p) p++;
  }
  return 1;
}

/* Write buf to path through a temporary file renamed into place. */
static lk_status write_file(lk_registry_t *reg, const char *path, const unsigned char *buf, uint64_t n) {
  char *tmp = NULL;
  int fd = -1, slot = -1;
  int e = lk_tmp_create(path, 0, &tmp, &fd, &slot); /* hidden, removed on signals (lk_tmpfile.h) */
  lk_status st = LK_OK;
  if (e == ENOMEM) return lk__fail(reg->ctx, LK_ERR_NOMEM, "%s: out of memory", path);
  if (e) return lk__fail(reg->ctx, LK_ERR_IO, "%s: cannot create: %s", path, strerror(e));
  FILE *f = fdopen(fd, "wb");
  if (!f) close(fd);
  if (!f || (n && fwrite(buf, 1, n, f) != n) || fflush(f) || fsync(fileno(f)))
    st = lk__fail(reg->ctx, LK_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
  if (f && fclose(f) && !st) st = lk__fail(reg->ctx, LK_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
  if (!st) { /* mkstemp makes 0600; an exported file gets the mode any other new file would */
    mode_t um = umask(0);
    umask(um);
    chmod(tmp, 0666 & ~um);
  }
  if (!st && rename(tmp, path)) st = lk__fail(reg->ctx, LK_ERR_IO, "%s: cannot rename into place: %s", path, strerror(errno));
  if (st) unlink(tmp);
  lk_tmp_unregister(slot);
  free(tmp);
  return st;
}

/* mkdir -p of the folders of rel inside dir. */
static lk_status make_dirs(lk_registry_t *reg, const char *dir, const char *rel) {
  char p[4096];
  int n = snprintf(p, sizeof p, "%s/%s", dir, rel);
  if (n >= (int)sizeof p) return lk__fail(reg->ctx, LK_ERR_UNSUPPORTED, "%s/%s: path too long", dir, rel);
  for (char *c = p + strlen(dir) + 1; *c; c++) {
    if (*c != '/') continue;
    *c = '\0';
    if (mkdir(p, 0777) && errno != EEXIST) return lk__fail(reg->ctx, LK_ERR_IO, "%s: cannot create: %s", p, strerror(errno));
    *c = '/';
  }
  return LK_OK;
}

/* 1 when version id has stored files (source in *is_dir). */
int reg_files_of(lk_registry_t *reg, int64_t id, int *is_dir) {
  if (reg->schema < 3) return 0;
  sqlite3_stmt *q = NULL;
  int found = 0;
  if (reg_prepare(reg, "SELECT source FROM versions WHERE id = ? AND source IS NOT NULL", &q)) return 0;
  sqlite3_bind_int64(q, 1, id);
  if (sqlite3_step(q) == SQLITE_ROW) {
    found = 1;
    *is_dir = !strcmp((const char *)sqlite3_column_text(q, 0), "folder");
  }
  sqlite3_finalize(q);
  return found;
}

/* Write the stored files of v into dir (a folder) or to path (one file). */
static lk_status write_files(lk_registry_t *reg, const reg_version *v, const char *path, int is_dir) {
  sqlite3_stmt *q = NULL;
  lk_status st = reg_prepare(reg, "SELECT path, blob, size FROM files WHERE version_id = ? ORDER BY path", &q);
  if (st) return st;
  sqlite3_bind_int64(q, 1, v->id);
  int rc, n = 0;
  while (!st && (rc = sqlite3_step(q)) == SQLITE_ROW) {
    const char *rel = (const char *)sqlite3_column_text(q, 0), *sha = (const char *)sqlite3_column_text(q, 1);
    int64_t size = sqlite3_column_int64(q, 2);
    if (!rel || !safe_rel(rel) || (!is_dir && n > 0)) {
      st = lk__fail(reg->ctx, LK_ERR_CORRUPT, "registry %s: %s: a stored file has a bad path", reg->path, v->ref);
      break;
    }
    unsigned char *buf = NULL;
    uint64_t len = 0;
    char label[600], out[4096];
    snprintf(label, sizeof label, "%s file %s", v->ref, rel);
    if (size > 0 && (!sha || (st = reg_blob_get(reg, sha, 0, &buf, &len, label)))) {
      if (!st) st = lk__fail(reg->ctx, LK_ERR_CORRUPT, "registry %s: %s: its payload is missing", reg->path, label);
      break;
    }
    if ((uint64_t)size != len) {
      free(buf);
      st = lk__fail(reg->ctx, LK_ERR_CORRUPT, "registry %s: %s: stored size differs", reg->path, label);
      break;
    }
    if (is_dir) {
      snprintf(out, sizeof out, "%s/%s", path, rel);
      st = make_dirs(reg, path, rel);
    } else {
      snprintf(out, sizeof out, "%s", path);
    }
    if (!st) st = write_file(reg, out, buf, len);
    free(buf);
    n++;
  }
  sqlite3_finalize(q);
  if (!st && rc != SQLITE_DONE) st = reg_sql_fail(reg, rc, "reading stored files");
  return st;
}

/* Remove a temporary folder this file made (its files and folders only). */
static void remove_tree(const char *dir) {
  DIR *d = opendir(dir);
  struct dirent *e;
  while (d && (e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
    struct stat sb;
    if (!lstat(p, &sb) && S_ISDIR(sb.st_mode)) remove_tree(p);
    else unlink(p);
  }
  if (d) closedir(d);
  rmdir(dir);
}

lk_status reg_files_export(lk_registry_t *reg, const reg_version *v, const char *path, int is_dir) {
  struct stat sb;
  int exists = stat(path, &sb) == 0;
  if (!is_dir) {
    if (exists && S_ISDIR(sb.st_mode))
      return lk__fail(reg->ctx, LK_ERR_INVALID_ARG, "%s: is a folder; %s is one file", path, v->ref);
    return write_files(reg, v, path, 0);
  }
  if (exists && !S_ISDIR(sb.st_mode))
    return lk__fail(reg->ctx, LK_ERR_INVALID_ARG, "%s: exists and is not a folder; %s is a folder", path, v->ref);
  if (exists) return write_files(reg, v, path, 1); /* each file replaced through its own rename */
  /* A new folder appears whole or not at all. */
  char *tmp = NULL;
  int slot = -1;
  int e = lk_tmp_create(path, 1, &tmp, NULL, &slot);
  lk_status st = LK_OK;
  if (e == ENOMEM) st = lk__fail(reg->ctx, LK_ERR_NOMEM, "%s: out of memory", path);
  else if (e) st = lk__fail(reg->ctx, LK_ERR_IO, "%s: cannot create: %s", path, strerror(e));
  else {
    mode_t um = umask(0);
    umask(um);
    chmod(tmp, 0777 & ~um);
    if (!(st = write_files(reg, v, tmp, 1)) && rename(tmp, path))
      st = lk__fail(reg->ctx, LK_ERR_IO, "%s: cannot rename into place: %s", path, strerror(errno));
    if (st) remove_tree(tmp);
    lk_tmp_unregister(slot);
  }
  free(tmp);
  return st;
}

/* ---- lk_registry_find ------------------------------------------------------------------ */

LK_API lk_status lk_registry_find(lk_registry_t *reg, const char *what, const lk_registry_find_opts_t *opts,
                                  char **out_ref, char **out_note) {
  if (!reg || !what || !out_ref)
    return lk__fail(reg ? reg->ctx : NULL, LK_ERR_INVALID_ARG, "lk_registry_find: NULL argument");
  *out_ref = NULL;
  if (out_note) *out_note = NULL;
  lk_registry_find_opts_t o;
  lk_status st = reg_opts(reg, &o, sizeof o, opts, "lk_registry_find_opts_t");
  if (st) return st;
  if (o.name && !reg_valid_name(o.name)) return reg_bad_name(reg, "adapter name", o.name);
  char ref[REG_NAME_MAX + 24];
  char *note = NULL;
  struct stat sb;
  if (stat(what, &sb)) { /* not a path: a REF */
    if (strchr(what, '/')) return lk__fail(reg->ctx, LK_ERR_NOT_FOUND, "%s: %s", what, strerror(errno));
    reg_version v;
    if ((st = reg_resolve(reg, what, &v))) return st;
    if (o.name && strcmp(v.name, o.name))
      return lk__fail(reg->ctx, LK_ERR_NOT_FOUND, "%s is not a version of %s", v.ref, o.name);
    snprintf(ref, sizeof ref, "%s", v.ref);
    goto found;
  }
  reg_files fs;
  if ((st = reg_files_read(reg, what, 0, &fs))) return st;
  int hit = reg_match(reg, fs.digest, NULL, NULL, o.name, ref, sizeof ref, &note);
  reg_files_free(&fs);
  if (hit) goto found;
  if (o.exact_only)
    return lk__fail(reg->ctx, LK_ERR_NOT_FOUND, "%s: no version%s%s holds these exact files", what,
                    o.name ? " of " : "", o.name ? o.name : "");
  /* The same adapter in other bytes: its canonical content, preferring
   * versions stored in the same format. */
  lk_model_t *m = NULL;
  lk_adapter_t *ad = NULL;
  reg_base base;
  memset(&base, 0, sizeof base);
  char *cfg = NULL, format[64] = "";
  unsigned char *buf = NULL;
  uint64_t n = 0;
  reg_canon_info ci;
  memset(&ci, 0, sizeof ci);
  if ((st = reg_base_prepare(reg, o.base, NULL, &base)) || (st = lk_model_open(reg->ctx, what, o.loader, &m))) goto done;
  snprintf(format, sizeof format, "%s", lk_model_loader(m));
  lk_model_close(m);
  cfg = reg_base_config(reg, &base);
  if ((st = lk_adapter_load(reg->ctx, what, format, cfg, &ad)) || (st = reg_canon_encode(reg, ad, &buf, &n, &ci)))
    goto done;
  char sha[REG_HEX];
  reg_sha256_hex(buf, n, sha);
  hit = reg_match(reg, NULL, sha, format, o.name, ref, sizeof ref, &note);
  if (!hit) st = lk__fail(reg->ctx, LK_ERR_NOT_FOUND, "%s: not recorded in registry %s", what, reg->path);
done:
  free(cfg);
  free(buf);
  reg_canon_info_free(&ci);
  lk_adapter_free(ad);
  reg_base_free(&base);
  if (st) {
    free(note);
    return st;
  }
found:
  if (!(*out_ref = reg_strdup(ref))) {
    free(note);
    return lk__fail(reg->ctx, LK_ERR_NOMEM, "out of memory");
  }
  if (out_note) *out_note = note;
  else free(note);
  lk__ok(reg->ctx);
  return LK_OK;
}

/* The library's one table of temporaries (lk_tmpfile.h), for core/model_ops.c:
 * a path removed on SIGINT/SIGTERM/SIGHUP while registered (a file, or a
 * folder when unlinking it fails), and the sweep of stale ones. */
int lk__tmp_register(const char *path) { return lk_tmp_register(path, 0); }
void lk__tmp_unregister(int slot) { lk_tmp_unregister(slot); }
void lk__tmp_sweep(const char *dir) { lk_tmp_sweep(dir); }
