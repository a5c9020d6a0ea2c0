/* test_registry_files.c - the registry as a file: several processes writing
 * at once, a writer killed mid-add, a flipped byte on disk, files that are
 * not registries or come from a newer lorakit, migration of a v1 and a v3
 * database, lineage from adapter versions to base models,
 * and round trips through the PEFT and GGUF LoRA loaders on the fixtures
 * (skipped with a message when fixtures or loader plugins are absent).
 * This suite opens databases with SQLite directly to build and damage them. */
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>

#include "test_registry.h"

static unsigned char *slurp(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  ck_assert_msg(f != NULL, "open %s", path);
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *buf = malloc((size_t)len + 1);
  ck_assert_uint_eq(fread(buf, 1, (size_t)len, f), (size_t)len);
  fclose(f);
  *n = (size_t)len;
  return buf;
}

static void spit(const char *path, const void *buf, size_t n) {
  FILE *f = fopen(path, "wb");
  ck_assert_ptr_nonnull(f);
  ck_assert_uint_eq(fwrite(buf, 1, n, f), n);
  fclose(f);
}

static void sql(const char *file, const char *statements) {
  sqlite3 *db = NULL;
  ck_assert_int_eq(sqlite3_open(rg_path(file), &db), SQLITE_OK);
  char *err = NULL;
  int rc = sqlite3_exec(db, statements, NULL, NULL, &err);
  ck_assert_msg(rc == SQLITE_OK, "%s: %s", statements, err ? err : "?");
  sqlite3_close(db);
}

/* The file is byte for byte what it was, and SQLite left no side files. */
static void assert_untouched(const char *file, const unsigned char *before, size_t n) {
  size_t m;
  unsigned char *now = slurp(rg_path(file), &m);
  ck_assert_msg(m == n && !memcmp(now, before, n), "%s was modified", file);
  free(now);
  char side[600];
  snprintf(side, sizeof side, "%s-wal", rg_path(file));
  ck_assert_msg(access(side, F_OK) != 0, "%s left behind", side);
}

/* ---- files that are not (our) registries ------------------------------------------ */

START_TEST(a_non_sqlite_file_is_refused_untouched) {
  unsigned char junk[4096];
  tu_rng r = {42};
  for (size_t i = 0; i < sizeof junk; i++) junk[i] = (unsigned char)tu_next(&r);
  spit(rg_path("junk.db"), junk, sizeof junk);
  static const char text[] = "name,version\nnot,a database\n";
  spit(rg_path("text.db"), text, sizeof text - 1);
  lk_context_t *ctx = rg_ctx();
  lk_registry_t *reg = NULL;
  ck_assert_int_eq(lk_registry_open(ctx, rg_path("junk.db"), NULL, &reg), LK_ERR_FORMAT);
  ck_assert_ptr_nonnull(strstr(lk_last_error(ctx), "not a lorakit registry"));
  ck_assert_ptr_nonnull(strstr(lk_last_error(ctx), "junk.db"));
  ck_assert_ptr_null(reg);
  assert_untouched("junk.db", junk, sizeof junk);
  ck_assert_int_eq(lk_registry_open(ctx, rg_path("text.db"), NULL, &reg), LK_ERR_FORMAT);
  assert_untouched("text.db", (const unsigned char *)text, sizeof text - 1);
  mkdir(rg_path("folder.db"), 0700);
  ck_assert_int_eq(lk_registry_open(ctx, rg_path("folder.db"), NULL, &reg), LK_ERR_FORMAT);
  lk_context_free(ctx);
}
END_TEST

START_TEST(another_sqlite_database_is_refused_untouched) {
  sql("other.db", "CREATE TABLE t(x); INSERT INTO t VALUES(1);");
  size_t n;
  unsigned char *before = slurp(rg_path("other.db"), &n);
  lk_context_t *ctx = rg_ctx();
  lk_registry_t *reg = NULL;
  ck_assert_int_eq(lk_registry_open(ctx, rg_path("other.db"), NULL, &reg), LK_ERR_FORMAT);
  ck_assert_ptr_nonnull(strstr(lk_last_error(ctx), "not a lorakit registry"));
  assert_untouched("other.db", before, n);
  free(before);
  lk_context_free(ctx);
}
END_TEST

START_TEST(a_newer_schema_is_refused_untouched) {
  /* what a future lorakit would write: our application id, schema 99 */
  sql("new.db", "PRAGMA application_id = 1280004679; PRAGMA user_version = 99; CREATE TABLE future(x);");
  size_t n;
  unsigned char *before = slurp(rg_path("new.db"), &n);
  lk_context_t *ctx = rg_ctx();
  lk_registry_t *reg = NULL;
  ck_assert_int_eq(lk_registry_open(ctx, rg_path("new.db"), NULL, &reg), LK_ERR_UNSUPPORTED);
  ck_assert_ptr_nonnull(strstr(lk_last_error(ctx), "schema version 99 is newer"));
  assert_untouched("new.db", before, n);
  free(before);
  lk_context_free(ctx);
}
END_TEST

/* ---- migration ------------------------------------------------------------------------ */

/* Schema v1 as lorakit 1.0 wrote it (frozen here on purpose: a copy, not
 * the library's, so a change to the library's v1 text is caught). */
static const char v1_schema[] =
    "PRAGMA application_id = 1280004679;"
    "CREATE TABLE blobs(sha256 TEXT PRIMARY KEY, size INTEGER NOT NULL, stored INTEGER NOT NULL,"
    "  n_chunks INTEGER NOT NULL, created INTEGER NOT NULL);"
    "CREATE TABLE chunks(blob TEXT NOT NULL REFERENCES blobs(sha256) ON DELETE CASCADE, seq INTEGER NOT NULL,"
    "  size INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY(blob, seq));"
    "CREATE TABLE models(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, architecture TEXT NOT NULL,"
    "  fingerprint TEXT NOT NULL UNIQUE, config TEXT NOT NULL, shapes TEXT NOT NULL, n_params INTEGER NOT NULL,"
    "  path TEXT, created INTEGER NOT NULL, operation TEXT NOT NULL, notes TEXT);"
    "CREATE TABLE adapters(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
    "  next_version INTEGER NOT NULL DEFAULT 1, created INTEGER NOT NULL);"
    "CREATE TABLE versions(id INTEGER PRIMARY KEY, adapter_id INTEGER NOT NULL REFERENCES adapters(id),"
    "  version INTEGER NOT NULL, blob TEXT NOT NULL REFERENCES blobs(sha256), model_id INTEGER REFERENCES models(id),"
    "  rank INTEGER NOT NULL, alpha REAL NOT NULL, scaling TEXT NOT NULL, target_modules TEXT NOT NULL,"
    "  n_targets INTEGER NOT NULL, format TEXT NOT NULL, size INTEGER NOT NULL, created INTEGER NOT NULL,"
    "  operation TEXT NOT NULL, notes TEXT, UNIQUE(adapter_id, version));"
    "CREATE INDEX versions_blob ON versions(blob);"
    "CREATE TABLE tags(adapter_id INTEGER NOT NULL REFERENCES adapters(id), tag TEXT NOT NULL,"
    "  version_id INTEGER NOT NULL REFERENCES versions(id), PRIMARY KEY(adapter_id, tag));"
    "CREATE INDEX tags_version ON tags(version_id);"
    "CREATE TABLE lineage(child INTEGER NOT NULL REFERENCES versions(id), parent INTEGER NOT NULL"
    "  REFERENCES versions(id), relation TEXT NOT NULL, params TEXT NOT NULL DEFAULT '{}',"
    "  PRIMARY KEY(child, parent), CHECK(child <> parent));"
    "CREATE INDEX lineage_parent ON lineage(parent);"
    "PRAGMA user_version = 1;";

START_TEST(a_v1_database_is_migrated) {
  lk_context_t *ctx = rg_ctx();
  /* content made by the library, copied row by row into a v1 file */
  lk_registry_t *reg = rg_open(ctx, "src.db");
  lk_adapter_t *a = rg_adapter(ctx, 1, LK_SCALING_STANDARD), *b = rg_adapter(ctx, 2, LK_SCALING_STANDARD);
  rg_add(reg, ctx, "old", a, NULL);
  lk_registry_add_opts_t o = rg_opts();
  const char *parents[] = {"old@1"};
  o.parents = parents;
  o.n_parents = 1;
  o.relation = LK_REL_TRAINED_FROM;
  rg_add(reg, ctx, "old", b, &o);
  ck_assert_int_eq(lk_registry_tag(reg, "old@1", "prod"), LK_OK);
  lk_registry_close(reg);
  char copy[8192];
  snprintf(copy, sizeof copy,
           "%s ATTACH '%s' AS src; INSERT INTO blobs SELECT * FROM src.blobs; INSERT INTO chunks SELECT * FROM "
           "src.chunks; INSERT INTO adapters SELECT * FROM src.adapters; INSERT INTO versions SELECT id, adapter_id, "
           "version, blob, model_id, rank, alpha, scaling, target_modules, n_targets, format, size, created, operation, "
           "notes FROM src.versions; INSERT INTO tags SELECT * FROM src.tags; INSERT INTO lineage SELECT * FROM src.lineage;"
           "DETACH src;",
           v1_schema, rg_path("src.db"));
  sql("v1.db", copy);

  reg = rg_open(ctx, "v1.db");
  sqlite3 *db = NULL;
  sqlite3_stmt *q = NULL;
  ck_assert_int_eq(sqlite3_open(rg_path("v1.db"), &db), SQLITE_OK);
  ck_assert_int_eq(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &q, NULL), SQLITE_OK);
  ck_assert_int_eq(sqlite3_step(q), SQLITE_ROW);
  ck_assert_int_eq(sqlite3_column_int(q, 0), LK_REGISTRY_SCHEMA);
  sqlite3_finalize(q);
  ck_assert_int_eq(sqlite3_prepare_v2(db, "SELECT count(*) FROM model_lineage", -1, &q, NULL), SQLITE_OK);
  sqlite3_finalize(q);
  sqlite3_close(db);
  json_t *v = rg_verify(reg, LK_OK);
  ck_assert_int_eq(rg_int(v, "versions"), 2);
  json_decref(v);
  lk_adapter_t *back = NULL;
  ck_assert_int_eq(lk_registry_get(reg, "old:prod", &back), LK_OK);
  rg_assert_same_adapter(a, back);
  lk_adapter_free(back);
  char *s = NULL;
  ck_assert_int_eq(lk_registry_show(reg, "old", &s), LK_OK);
  json_t *sh = rg_json(s);
  ck_assert_str_eq(rg_str(json_array_get(json_object_get(sh, "parents"), 0), "ref"), "old@1");
  json_decref(sh);
  ck_assert_str_eq(rg_add(reg, ctx, "old", a, NULL), "old@3");
  lk_adapter_free(a);
  lk_adapter_free(b);
  lk_registry_close(reg);
  lk_context_free(ctx);
}
END_TEST

/* ---- a flipped byte ---------------------------------------------------------------------- */

START_TEST(a_flipped_byte_is_found_by_verify) {
  lk_context_t *ctx = rg_ctx();
  lk_registry_t *reg = rg_open(ctx, "r.db");
  lk_adapter_t *ok = rg_adapter(ctx, 1, LK_SCALING_STANDARD), *big = NULL;
  rg_add(reg, ctx, "fine", ok, NULL);
  lk_lora_config_t c = {sizeof c, 8, 16.0f, LK_SCALING_STANDARD, 3};
  ck_assert_int_eq(lk_adapter_create(ctx, &c, &big), LK_OK);
  ck_assert_int_eq(lk_adapter_add_target(big, "layer.q", 512, 512, 0, 0), LK_OK); /* A random: 16 KiB */
  rg_add(reg, ctx, "victim", big, NULL);
  rg_add(reg, ctx, "victim", big, NULL); /* two versions share the payload */
  lk_registry_close(reg);

  /* find the stored (compressed) A of victim in the file and flip one bit of it */
  sqlite3 *db = NULL;
  sqlite3_stmt *q = NULL;
  ck_assert_int_eq(sqlite3_open(rg_path("r.db"), &db), SQLITE_OK);
  ck_assert_int_eq(sqlite3_prepare_v2(db,
                                      "SELECT c.data FROM chunks c JOIN versions v ON v.blob = c.blob JOIN adapters a "
                                      "ON a.id = v.adapter_id WHERE a.name = 'victim' AND c.seq = 1",
                                      -1, &q, NULL),
                   SQLITE_OK);
  ck_assert_int_eq(sqlite3_step(q), SQLITE_ROW);
  int zlen = sqlite3_column_bytes(q, 0);
  ck_assert_int_gt(zlen, 9000);
  unsigned char needle[64], *chunk = malloc((size_t)zlen);
  memcpy(chunk, sqlite3_column_blob(q, 0), (size_t)zlen);
  sqlite3_finalize(q);
  sqlite3_close(db);
  size_t n;
  unsigned char *file = slurp(rg_path("r.db"), &n);
  unsigned char *at = NULL;
  for (int k = 0; k < 8 && !at; k++) { /* a window that no page boundary splits */
    memcpy(needle, chunk + 200 + 1000 * k, sizeof needle);
    at = memmem(file, n, needle, sizeof needle);
  }
  ck_assert_msg(at != NULL, "stored bytes not found in the file");
  at[32] ^= 0x10;
  free(chunk);
  spit(rg_path("r.db"), file, n);
  free(file);

  reg = rg_open(ctx, "r.db");
  json_t *v = rg_verify(reg, LK_ERR_CORRUPT);
  ck_assert_ptr_nonnull(strstr(lk_last_error(ctx), "victim@1"));
  json_t *p = json_array_get(json_object_get(v, "problems"), 0);
  ck_assert_uint_eq(json_array_size(json_object_get(v, "problems")), 1);
  ck_assert_str_eq(json_string_value(json_array_get(json_object_get(p, "versions"), 0)), "victim@1");
  ck_assert_str_eq(json_string_value(json_array_get(json_object_get(p, "versions"), 1)), "victim@2");
  json_decref(v);
  lk_adapter_t *got = NULL;
  ck_assert_int_eq(lk_registry_get(reg, "victim@2", &got), LK_ERR_CORRUPT);
  ck_assert_ptr_nonnull(strstr(lk_last_error(ctx), "victim@2"));
  ck_assert_int_eq(lk_registry_get(reg, "fine", &got), LK_OK); /* the rest is readable */
  rg_assert_same_adapter(ok, got);
  lk_adapter_free(got);
  lk_adapter_free(ok);
  lk_adapter_free(big);
  lk_registry_close(reg);
  lk_context_free(ctx);
}
END_TEST

/* ---- concurrency ---------------------------------------------------------------------------- */

enum { N_PROCS = 4, N_ADDS = 50 };

/* One writer: opens the (possibly not yet existing) registry and adds
 * N_ADDS distinct adapters to the shared name. Exit status: 0 = all added. */
static int writer(int id) {
  lk_context_t *ctx = NULL;
  lk_context_opts_t co = {sizeof co, 1, 0, 0};
  if (lk_context_create(&co, &ctx)) return 10;
  lk_registry_t *reg = NULL;
  if (lk_registry_open(ctx, rg_path("shared.db"), NULL, &reg)) {
    fprintf(stderr, "writer %d: open: %s\n", id, lk_last_error(ctx));
    return 11;
  }
  int rc = 0;
  for (int i = 0; i < N_ADDS && !rc; i++) {
    lk_lora_config_t c = {sizeof c, 2, 4.0f, LK_SCALING_STANDARD, (uint64_t)(id * 1000 + i)};
    lk_adapter_t *ad = NULL;
    if (lk_adapter_create(ctx, &c, &ad) || lk_adapter_add_target(ad, "t", 8, 8, 0, 0)) rc = 12;
    lk_tensor_t B;
    lk_adapter_weights(ad, 0, NULL, &B);
    ((float *)B.data)[0] = (float)(id * 1000 + i); /* distinct content */
    if (!rc && lk_registry_add_adapter(reg, "shared", ad, NULL, NULL)) {
      fprintf(stderr, "writer %d add %d: %s\n", id, i, lk_last_error(ctx));
      rc = 13;
    }
    lk_adapter_free(ad);
  }
  lk_registry_close(reg);
  lk_context_free(ctx);
  return rc;
}

START_TEST(four_writers_lose_nothing) {
  pid_t pids[N_PROCS];
  for (int p = 0; p < N_PROCS; p++) {
    pids[p] = fork();
    ck_assert_int_ge(pids[p], 0);
    if (pids[p] == 0) _exit(writer(p));
  }
  for (int p = 0; p < N_PROCS; p++) {
    int status = 0;
    ck_assert_int_eq(waitpid(pids[p], &status, 0), pids[p]);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "writer %d failed (status %d): see stderr", p, status);
  }
  lk_context_t *ctx = rg_ctx();
  lk_registry_t *reg = rg_open(ctx, "shared.db");
  json_t *l = rg_list(reg, "shared");
  ck_assert_uint_eq(json_array_size(l), N_PROCS * N_ADDS);
  json_t *seen = json_object();
  for (size_t i = 0; i < json_array_size(l); i++) {
    json_t *v = json_array_get(l, i);
    ck_assert_int_eq(rg_int(v, "version"), (long long)i + 1);
    json_object_set_new(seen, rg_str(v, "sha256"), json_true());
  }
  ck_assert_uint_eq(json_object_size(seen), N_PROCS * N_ADDS);
  json_decref(seen);
  json_decref(l);
  json_t *v = rg_verify(reg, LK_OK);
  ck_assert_int_eq(rg_int(v, "blobs"), N_PROCS * N_ADDS);
  json_decref(v);
  lk_registry_close(reg);
  lk_context_free(ctx);
}
END_TEST

/* ---- a writer killed mid-add ------------------------------------------------------------------- */

static int pipe_fd = -1;

/* Inside the write transaction, after the first chunk: tell the parent, then
 * wait to be killed. */
static void stall(void *user, uint64_t done, uint64_t total) {
  (void)user;
  if (done >= total / 2 && done < total && pipe_fd >= 0) {
    char c = 'x';
    if (write(pipe_fd, &c, 1) != 1) _exit(20);
    pipe_fd = -1;
    for (;;) pause();
  }
}

static lk_adapter_t *large(lk_context_t *ctx, uint64_t seed) {
  lk_lora_config_t c = {sizeof c, 16, 32.0f, LK_SCALING_STANDARD, seed};
  lk_adapter_t *ad = NULL;
  ck_assert_int_eq(lk_adapter_create(ctx, &c, &ad), LK_OK);
  ck_assert_int_eq(lk_adapter_add_target(ad, "big.a", 65536, 64, 0, 0), LK_OK); /* A: 4 MiB */
  ck_assert_int_eq(lk_adapter_add_target(ad, "big.b", 65536, 64, 0, 0), LK_OK);
  return ad;
}

START_TEST(a_writer_killed_mid_add_leaves_all_or_nothing) {
  lk_context_t *ctx = rg_ctx();
  lk_registry_t *reg = rg_open(ctx, "crash.db");
  lk_adapter_t *ad = rg_adapter(ctx, 1, LK_SCALING_STANDARD);
  rg_add(reg, ctx, "k", ad, NULL);
  lk_adapter_free(ad);
  lk_registry_close(reg);

  /* 1: killed for certain inside the transaction, payload half written */
  int fds[2];
  ck_assert_int_eq(pipe(fds), 0);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    close(fds[0]);
    pipe_fd = fds[1];
    lk_context_t *c2 = rg_ctx();
    lk_registry_t *r2 = NULL;
    if (lk_registry_open(c2, rg_path("crash.db"), NULL, &r2)) _exit(21);
    lk_adapter_t *big = large(c2, 9);
    lk_registry_add_opts_t o = rg_opts();
    o.progress = stall;
    lk_registry_add_adapter(r2, "k", big, &o, NULL);
    _exit(22); /* not reached: killed in stall */
  }
  close(fds[1]);
  char c;
  ck_assert_int_eq(read(fds[0], &c, 1), 1);
  close(fds[0]);
  kill(pid, SIGKILL);
  int status;
  waitpid(pid, &status, 0);
  ck_assert(WIFSIGNALED(status));
  reg = rg_open(ctx, "crash.db");
  json_t *v = rg_verify(reg, LK_OK);
  ck_assert_int_eq(rg_int(v, "versions"), 1);
  ck_assert_int_eq(rg_int(v, "blobs"), 1); /* none of the half-written payload */
  json_decref(v);
  lk_registry_close(reg);

  /* 2: killed at arbitrary moments while adding in a loop: whatever is
   * listed is whole, nothing half-written remains */
  for (int round = 0; round < 4; round++) {
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
      lk_context_t *c2 = rg_ctx();
      lk_registry_t *r2 = NULL;
      if (lk_registry_open(c2, rg_path("crash.db"), NULL, &r2)) _exit(21);
      for (uint64_t i = 0;; i++) {
        lk_adapter_t *big = large(c2, 100 * (uint64_t)round + i);
        lk_registry_add_adapter(r2, "k", big, NULL, NULL);
        lk_adapter_free(big);
      }
    }
    usleep(150000 + 70000 * (useconds_t)round);
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    reg = rg_open(ctx, "crash.db");
    v = rg_verify(reg, LK_OK);
    ck_assert_int_eq(rg_int(v, "unreferenced_blobs"), 0);
    ck_assert_int_eq(rg_int(v, "blobs"), rg_int(v, "versions"));
    json_decref(v);
    lk_adapter_t *last = NULL;
    ck_assert_int_eq(lk_registry_get(reg, "k", &last), LK_OK); /* hash-checked */
    lk_adapter_free(last);
    lk_registry_close(reg);
  }
  lk_context_free(ctx);
}
END_TEST

/* ---- fixtures: PEFT and GGUF LoRA through the loaders --------------------------------------------- */

/* Every tensor of a and b (opened as files) has the same name and bytes. */
static void assert_same_tensors(lk_context_t *ctx, const char *a, const char *b) {
  lk_model_t *ma = NULL, *mb = NULL;
  ck_assert_msg(lk_model_open(ctx, a, NULL, &ma) == LK_OK, "%s", lk_last_error(ctx));
  ck_assert_msg(lk_model_open(ctx, b, NULL, &mb) == LK_OK, "%s", lk_last_error(ctx));
  ck_assert_int_eq(lk_model_tensor_count(ma), lk_model_tensor_count(mb));
  for (int64_t i = 0; i < lk_model_tensor_count(ma); i++) {
    lk_tensor_info_t ta, tb;
    ck_assert_int_eq(lk_model_tensor_info(ma, i, &ta), LK_OK);
    int64_t k = lk_model_find(mb, ta.name);
    ck_assert_msg(k >= 0, "%s lacks %s", b, ta.name);
    ck_assert_int_eq(lk_model_tensor_info(mb, k, &tb), LK_OK);
    ck_assert_int_eq(ta.dtype, tb.dtype);
    ck_assert_uint_eq(ta.nbytes, tb.nbytes);
    void *x = malloc(ta.nbytes), *y = malloc(tb.nbytes);
    ck_assert_int_eq(lk_model_tensor_read(ma, i, x, ta.nbytes), LK_OK);
    ck_assert_int_eq(lk_model_tensor_read(mb, k, y, tb.nbytes), LK_OK);
    ck_assert_msg(!memcmp(x, y, ta.nbytes), "tensor %s differs", ta.name);
    free(x);
    free(y);
  }
  lk_model_close(ma);
  lk_model_close(mb);
}

START_TEST(fixture_peft_round_trip_is_byte_identical) {
  const char *fx = rg_fixtures();
  lk_context_t *ctx = fx ? rg_ctx_loaders() : NULL;
  if (!ctx) return;
  char peft[600], base[600], gguf[600];
  snprintf(peft, sizeof peft, "%s/a1/adapter-trained", fx);
  snprintf(base, sizeof base, "%s/base", fx);
  snprintf(gguf, sizeof gguf, "%s/gguf/a1-lora-f32.gguf", fx);
  lk_registry_t *reg = rg_open(ctx, "r.db");
  lk_registry_add_opts_t o = rg_opts();
  o.base = base;
  char *ref = NULL;
  ck_assert_msg(lk_registry_add_path(reg, "a1", peft, &o, &ref) == LK_OK, "%s", lk_last_error(ctx));
  ck_assert_str_eq(ref, "a1@1");
  lk_free(ref);
  ck_assert_msg(lk_registry_export(reg, "a1@1", rg_path("out"), "peft") == LK_OK, "%s", lk_last_error(ctx));
  assert_same_tensors(ctx, peft, rg_path("out"));
  /* the GGUF form of the same adapter has the same canonical bytes */
  o.base = "base"; /* recorded by the first add, named after its folder */
  ck_assert_msg(lk_registry_add_path(reg, "a1-gguf", gguf, &o, NULL) == LK_OK, "%s", lk_last_error(ctx));
  json_t *a = rg_list(reg, "a1"), *g = rg_list(reg, "a1-gguf");
  ck_assert_str_eq(rg_str(json_array_get(a, 0), "sha256"), rg_str(json_array_get(g, 0), "sha256"));
  ck_assert_str_eq(rg_str(json_array_get(g, 0), "format"), "gguf-lora");
  ck_assert_str_eq(rg_str(json_array_get(g, 0), "base"), "base");
  json_decref(a);
  json_decref(g);
  /* exported as GGUF LoRA (Q/K rows permuted with the recorded base config) and read back: the same */
  ck_assert_msg(lk_registry_export(reg, "a1", rg_path("out.gguf"), "gguf-lora") == LK_OK, "%s", lk_last_error(ctx));
  o.base = "base";
  o.reuse_existing = 1;
  ck_assert_int_eq(lk_registry_add_path(reg, "again", rg_path("out.gguf"), &o, &ref), LK_OK);
  ck_assert_str_eq(ref, "a1-gguf@1"); /* same content: the newest version holding it */
  lk_free(ref);
  /* one canonical payload for both, plus the files each was added from:
   * README.md, adapter_config.json, adapter_model.safetensors of the folder,
   * and the GGUF file */
  json_t *v = rg_verify(reg, LK_OK);
  ck_assert_int_eq(rg_int(v, "blobs"), 1 + 3 + 1);
  json_decref(v);
  lk_registry_close(reg);
  lk_context_free(ctx);
}
END_TEST

START_TEST(fixture_base_fingerprint_and_mismatch) {
  const char *fx = rg_fixtures();
  lk_context_t *ctx = fx ? rg_ctx_loaders() : NULL;
  if (!ctx) return;
  char base[600], gguf_base[600];
  snprintf(base, sizeof base, "%s/base", fx);
  snprintf(gguf_base, sizeof gguf_base, "%s/gguf/base-f32.gguf", fx);
  lk_registry_t *reg = rg_open(ctx, "r.db");
  char *n1 = NULL, *n2 = NULL, *n3 = NULL;
  ck_assert_msg(lk_registry_add_model(reg, "tiny", base, NULL, &n1) == LK_OK, "%s", lk_last_error(ctx));
  ck_assert_str_eq(n1, "tiny");
  ck_assert_int_eq(lk_registry_add_model(reg, NULL, base, NULL, &n2), LK_OK); /* same fingerprint: reused */
  ck_assert_str_eq(n2, "tiny");
  /* the f32 GGUF conversion holds the same weights and structure */
  ck_assert_msg(lk_registry_add_model(reg, NULL, gguf_base, NULL, &n3) == LK_OK, "%s", lk_last_error(ctx));
  ck_assert_str_eq(n3, "tiny");
  lk_free(n1);
  lk_free(n2);
  lk_free(n3);
  /* an adapter whose target does not fit the base is refused, unless forced */
  lk_lora_config_t c = {sizeof c, 4, 8.0f, LK_SCALING_STANDARD, 1};
  lk_adapter_t *ad = NULL;
  lk_adapter_create(ctx, &c, &ad);
  lk_adapter_add_target(ad, "model.layers.0.self_attn.q_proj", 100, 100, 0, 0);
  lk_registry_add_opts_t o = rg_opts();
  o.base = "tiny";
  ck_assert_int_eq(lk_registry_add_adapter(reg, "wrong", ad, &o, NULL), LK_ERR_MISMATCH);
  ck_assert_ptr_nonnull(strstr(lk_last_error(ctx), "[256, 256]"));
  json_t *l = rg_list(reg, NULL);
  ck_assert_uint_eq(json_array_size(l), 0);
  json_decref(l);
  o.force = 1;
  ck_assert_int_eq(lk_registry_add_adapter(reg, "wrong", ad, &o, NULL), LK_OK);
  lk_adapter_free(ad);
  lk_registry_close(reg);
  lk_context_free(ctx);
}
END_TEST

/* ---- lineage to base models (schema 4) ------------------------------------------------- */

/* rows of table in file, counted by SQLite directly; -1 when the table is absent */
static long long count_rows(const char *file, const char *table) {
  sqlite3 *db = NULL;
  sqlite3_stmt *q = NULL;
  char s[128];
  snprintf(s, sizeof s, "SELECT count(*) FROM %s", table);
  ck_assert_int_eq(sqlite3_open(rg_path(file), &db), SQLITE_OK);
  long long n = -1;
  if (sqlite3_prepare_v2(db, s, -1, &q, NULL) == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW) n = sqlite3_column_int64(q, 0);
  sqlite3_finalize(q);
  sqlite3_close(db);
  return n;
}

/* The lineage document of ref in direction dir. */
static json_t *lineage_of(lk_registry_t *reg, const char *ref, int32_t dir) {
  lk_registry_lineage_opts_t lo = {sizeof lo, dir, 0, 0};
  char *js = NULL;
  ck_assert_msg(lk_registry_lineage(reg, ref, &lo, &js) == LK_OK, "lineage %s", ref);
  return rg_json(js);
}

static int has_edge(json_t *g, const char *child, const char *parent, const char *relation, const char *parent_kind) {
  size_t i;
  json_t *e;
  json_array_foreach(json_object_get(g, "edges"), i, e) if (!strcmp(rg_str(e, "child"), child) &&
                                                            !strcmp(rg_str(e, "parent"), parent) &&
                                                            !strcmp(rg_str(e, "relation"), relation) &&
                                                            !strcmp(rg_str(e, "parent_kind"), parent_kind)) return 1;
  return 0;
}

START_TEST(trained_from_a_base_model) {
  const char *fx = rg_fixtures();
  lk_context_t *ctx = fx ? rg_ctx_loaders() : NULL;
  if (!ctx) return;
  char base[600], ad[600], merged[600];
  snprintf(base, sizeof base, "%s/base", fx);
  snprintf(ad, sizeof ad, "%s/a1/adapter-trained", fx);
  snprintf(merged, sizeof merged, "%s/a1/merged", fx);
  lk_registry_t *reg = rg_open(ctx, "r.db");
  ck_assert_msg(lk_registry_add_model(reg, "tiny", base, NULL, NULL) == LK_OK, "%s", lk_last_error(ctx));
  /* a fresh adapter: relation, base, no parents -> one edge to the model, with the params */
  lk_registry_add_opts_t o = rg_opts();
  o.relation = LK_REL_TRAINED_FROM;
  o.base = "tiny";
  o.params_json = "{\"data_sha256\":\"ab01\",\"hyper\":{\"lr\":0.25}}";
  ck_assert_msg(lk_registry_add_path(reg, "fresh", ad, &o, NULL) == LK_OK, "%s", lk_last_error(ctx));
  json_t *g = lineage_of(reg, "fresh@1", LK_LINEAGE_BOTH);
  ck_assert_uint_eq(json_array_size(json_object_get(g, "edges")), 1);
  ck_assert(has_edge(g, "fresh@1", "tiny", "trained_from", "model"));
  json_t *e = json_array_get(json_object_get(g, "edges"), 0), *p = json_object_get(e, "params");
  ck_assert_str_eq(rg_str(p, "data_sha256"), "ab01");
  ck_assert(json_real_value(json_object_get(json_object_get(p, "hyper"), "lr")) == 0.25);
  json_t *n = json_array_get(json_object_get(g, "nodes"), 1);
  ck_assert_str_eq(rg_str(n, "ref"), "tiny");
  ck_assert_str_eq(rg_str(n, "kind"), "model");
  ck_assert_int_eq(rg_int(n, "depth"), -1);
  json_decref(g);
  /* from an adapter: trained_from it and the base; merged_from with a base: the adapter only */
  const char *parents[] = {"fresh@1"};
  o.parents = parents;
  o.n_parents = 1;
  o.params_json = NULL;
  o.new_version = 1;
  ck_assert_int_eq(lk_registry_add_path(reg, "cont", ad, &o, NULL), LK_OK);
  o.relation = LK_REL_MERGED_FROM;
  ck_assert_int_eq(lk_registry_add_path(reg, "mix", ad, &o, NULL), LK_OK);
  g = lineage_of(reg, "cont@1", LK_LINEAGE_UP);
  ck_assert(has_edge(g, "cont@1", "fresh@1", "trained_from", "adapter") && has_edge(g, "cont@1", "tiny", "trained_from", "model"));
  ck_assert_uint_eq(json_array_size(json_object_get(g, "edges")), 3); /* and fresh@1 -> tiny */
  json_decref(g);
  g = lineage_of(reg, "mix@1", LK_LINEAGE_UP);
  ck_assert(has_edge(g, "mix@1", "fresh@1", "merged_from", "adapter") && !has_edge(g, "mix@1", "tiny", "merged_from", "model"));
  json_decref(g);
  /* down from the adapter through a model made from it, to an adapter trained from that model */
  lk_registry_model_opts_t mo = {sizeof mo, LK_REL_MERGED_FROM, parents, 1, 0, "tiny", NULL, "merge", NULL, NULL};
  ck_assert_msg(lk_registry_add_model(reg, "m1", merged, &mo, NULL) == LK_OK, "%s", lk_last_error(ctx));
  lk_registry_add_opts_t o2 = rg_opts();
  o2.relation = LK_REL_TRAINED_FROM;
  o2.base = "m1";
  o2.new_version = 1;
  ck_assert_msg(lk_registry_add_path(reg, "onm1", ad, &o2, NULL) == LK_OK, "%s", lk_last_error(ctx));
  g = lineage_of(reg, "fresh@1", LK_LINEAGE_DOWN);
  ck_assert(has_edge(g, "onm1@1", "m1", "trained_from", "model"));
  json_decref(g);
  /* a link closing a loop through the model is a cycle: fresh@1 <- m1 <- onm1@1 */
  ck_assert_int_eq(lk_registry_link(reg, "fresh@1", "onm1@1", LK_REL_TRAINED_FROM, NULL), LK_ERR_INVALID_ARG);
  ck_assert_ptr_nonnull(strstr(lk_last_error(ctx), "cycle"));
  /* models: the adapters trained from each */
  char *ms = NULL;
  ck_assert_int_eq(lk_registry_models(reg, &ms), LK_OK);
  json_t *models = rg_json(ms);
  size_t i;
  json_t *m;
  int seen = 0;
  json_array_foreach(models, i, m) {
    json_t *tr = json_object_get(m, "trained");
    if (!strcmp(rg_str(m, "name"), "tiny")) {
      ck_assert_uint_eq(json_array_size(tr), 2);
      ck_assert_str_eq(rg_str(json_array_get(tr, 0), "ref"), "cont@1");
      ck_assert_str_eq(rg_str(json_array_get(tr, 1), "ref"), "fresh@1");
      seen++;
    } else if (!strcmp(rg_str(m, "name"), "m1")) {
      ck_assert_uint_eq(json_array_size(tr), 1);
      ck_assert_str_eq(rg_str(json_array_get(tr, 0), "ref"), "onm1@1");
      seen++;
    }
  }
  ck_assert_int_eq(seen, 2);
  json_decref(models);
  /* bad input: an unknown relation for the base edge, a base that does not exist; nothing written */
  lk_registry_add_opts_t bad = rg_opts();
  bad.relation = 77;
  bad.base = "tiny";
  bad.new_version = 1;
  ck_assert_int_eq(lk_registry_add_path(reg, "bad", ad, &bad, NULL), LK_ERR_INVALID_ARG);
  ck_assert_ptr_nonnull(strstr(lk_last_error(ctx), "base model 'tiny'"));
  bad.relation = LK_REL_TRAINED_FROM;
  bad.base = "ghost";
  ck_assert_int_eq(lk_registry_add_path(reg, "bad", ad, &bad, NULL), LK_ERR_NOT_FOUND);
  ck_assert_ptr_nonnull(strstr(lk_last_error(ctx), "ghost"));
  /* a relation without parents or base links nothing (as before schema 4) */
  bad.base = NULL;
  ck_assert_int_eq(lk_registry_add_path(reg, "nobase", ad, &bad, NULL), LK_OK);
  json_decref(rg_verify(reg, LK_OK));
  lk_registry_close(reg);
  ck_assert_int_eq(count_rows("r.db", "version_model_lineage"), 3); /* fresh, cont, onm1 */
  ck_assert_int_eq(count_rows("r.db", "versions"), 5);               /* fresh cont mix onm1 nobase */
  /* removing a version drops its own edge to the model */
  reg = rg_open(ctx, "r.db");
  ck_assert_int_eq(lk_registry_remove(reg, "onm1@1", 0), LK_OK);
  lk_registry_close(reg);
  ck_assert_int_eq(count_rows("r.db", "version_model_lineage"), 2);
  lk_context_free(ctx);
}
END_TEST

/* A schema-3 file (what lorakit wrote before version -> model edges): read
 * as it is read-only, migrated forward by a writer with every row kept. */
START_TEST(a_v3_database_is_migrated) {
  const char *fx = rg_fixtures();
  lk_context_t *ctx = fx ? rg_ctx_loaders() : NULL;
  if (!ctx) return;
  char base[600], ad[600], merged[600];
  snprintf(base, sizeof base, "%s/base", fx);
  snprintf(ad, sizeof ad, "%s/a1/adapter-trained", fx);
  snprintf(merged, sizeof merged, "%s/a1/merged", fx);
  lk_registry_t *reg = rg_open(ctx, "v3.db");
  lk_registry_add_opts_t o = rg_opts();
  o.base = base;
  ck_assert_msg(lk_registry_add_path(reg, "a", ad, &o, NULL) == LK_OK, "%s", lk_last_error(ctx));
  const char *parents[] = {"a@1"};
  o.parents = parents;
  o.n_parents = 1;
  o.relation = LK_REL_IMPORTED;
  o.new_version = 1;
  o.params_json = "{\"k\":1}";
  ck_assert_int_eq(lk_registry_add_path(reg, "a", ad, &o, NULL), LK_OK);
  ck_assert_int_eq(lk_registry_tag(reg, "a@1", "prod"), LK_OK);
  lk_registry_model_opts_t mo = {sizeof mo, LK_REL_MERGED_FROM, parents, 1, 0, "base", NULL, "merge", NULL, NULL};
  ck_assert_msg(lk_registry_add_model(reg, "m", merged, &mo, NULL) == LK_OK, "%s", lk_last_error(ctx));
  lk_registry_close(reg);
  /* back to schema 3: the table schema 4 added was the only change */
  sql("v3.db", "DROP TABLE version_model_lineage; PRAGMA user_version = 3;");
  static const char *const tables[] = {"blobs", "chunks", "models", "adapters", "versions", "tags",
                                       "lineage", "model_lineage", "files"};
  enum { NT = sizeof tables / sizeof tables[0] };
  long long before[NT];
  for (int i = 0; i < NT; i++) {
    before[i] = count_rows("v3.db", tables[i]);
    ck_assert_msg(before[i] > 0, "%s is empty: the v3 file would not test the migration", tables[i]);
  }
  ck_assert_int_eq(count_rows("v3.db", "version_model_lineage"), -1);
  /* read-only: read as schema 3, nothing written */
  size_t n0;
  unsigned char *raw = slurp(rg_path("v3.db"), &n0);
  lk_registry_opts_t ro = {sizeof ro, 1, 0, 0};
  ck_assert_msg(lk_registry_open(ctx, rg_path("v3.db"), &ro, &reg) == LK_OK, "%s", lk_last_error(ctx));
  json_t *g = lineage_of(reg, "a@2", LK_LINEAGE_BOTH);
  ck_assert(has_edge(g, "a@2", "a@1", "imported", "adapter"));
  json_decref(g);
  g = lineage_of(reg, "a@1", LK_LINEAGE_DOWN);
  ck_assert(has_edge(g, "m", "a@1", "merged_from", "adapter"));
  json_decref(g);
  char *ms = NULL;
  ck_assert_int_eq(lk_registry_models(reg, &ms), LK_OK);
  json_t *models = rg_json(ms);
  ck_assert_uint_eq(json_array_size(json_object_get(json_array_get(models, 0), "trained")), 0);
  json_decref(models);
  lk_registry_close(reg);
  size_t n1;
  unsigned char *now = slurp(rg_path("v3.db"), &n1);
  ck_assert_msg(n1 == n0 && !memcmp(raw, now, n0), "a read-only handle changed the v3 file");
  free(raw);
  free(now);
  /* a writer migrates: schema 4, every row kept, the new table empty, then usable */
  reg = rg_open(ctx, "v3.db");
  lk_registry_close(reg);
  sqlite3 *db = NULL;
  sqlite3_stmt *q = NULL;
  ck_assert_int_eq(sqlite3_open(rg_path("v3.db"), &db), SQLITE_OK);
  ck_assert_int_eq(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &q, NULL), SQLITE_OK);
  ck_assert_int_eq(sqlite3_step(q), SQLITE_ROW);
  ck_assert_int_eq(sqlite3_column_int(q, 0), 4);
  sqlite3_finalize(q);
  sqlite3_close(db);
  for (int i = 0; i < NT; i++)
    if (count_rows("v3.db", tables[i]) != before[i])
      ck_abort_msg("migration changed %s: %lld rows, was %lld", tables[i], count_rows("v3.db", tables[i]), before[i]);
  ck_assert_int_eq(count_rows("v3.db", "version_model_lineage"), 0);
  reg = rg_open(ctx, "v3.db");
  json_decref(rg_verify(reg, LK_OK));
  lk_registry_add_opts_t o2 = rg_opts();
  o2.relation = LK_REL_TRAINED_FROM;
  o2.base = "base";
  o2.new_version = 1;
  ck_assert_msg(lk_registry_add_path(reg, "a", ad, &o2, NULL) == LK_OK, "%s", lk_last_error(ctx));
  g = lineage_of(reg, "a@3", LK_LINEAGE_UP);
  ck_assert(has_edge(g, "a@3", "base", "trained_from", "model"));
  json_decref(g);
  lk_adapter_t *back = NULL;
  ck_assert_int_eq(lk_registry_get(reg, "a:prod", &back), LK_OK);
  lk_adapter_free(back);
  lk_registry_close(reg);
  lk_context_free(ctx);
}
END_TEST

/* A walk big enough to switch to whole tables (more than 2048 nodes): the
 * edges to and from models are followed there too. Built with SQL: a chain
 * v1 <- v2 <- ... <- v3000 of one adapter "a"; model m merged_from v1 with
 * v100, v200 ... v1900 trained_from it; model m2 merged_from v2550 with
 * v2650 and v2750 trained_from it. Expected counts and depths are worked
 * out by hand from that graph. */
START_TEST(a_big_walk_follows_model_edges) {
  lk_context_t *ctx = rg_ctx();
  lk_registry_t *reg = rg_open(ctx, "big.db");
  lk_adapter_t *ad = rg_adapter(ctx, 3, LK_SCALING_STANDARD);
  ck_assert_str_eq(rg_add(reg, ctx, "a", ad, NULL), "a@1");
  lk_adapter_free(ad);
  lk_registry_close(reg);
  sql("big.db",
      "BEGIN;"
      "WITH RECURSIVE n(k) AS (SELECT 2 UNION ALL SELECT k + 1 FROM n WHERE k < 3000)"
      " INSERT INTO versions(id, adapter_id, version, blob, model_id, rank, alpha, scaling, target_modules, n_targets,"
      " format, size, created, operation, notes) SELECT k, v.adapter_id, k, v.blob, NULL, v.rank, v.alpha, v.scaling,"
      " v.target_modules, v.n_targets, v.format, v.size, v.created, v.operation, NULL FROM n, versions v WHERE v.id = 1;"
      "UPDATE adapters SET next_version = 3001;"
      "INSERT INTO lineage(child, parent, relation, params) SELECT id, id - 1, 'trained_from', '{}' FROM versions"
      " WHERE id > 1;"
      "INSERT INTO models(id, name, architecture, fingerprint, config, shapes, n_params, path, created, operation)"
      " VALUES(1, 'm', 'llama', printf('%064d', 1), '{}', '{}', 0, NULL, 0, 'merge'),"
      " (2, 'm2', 'llama', printf('%064d', 2), '{}', '{}', 0, NULL, 0, 'merge');"
      "INSERT INTO model_lineage(model, parent_version, relation) VALUES(1, 1, 'merged_from'), (2, 2550, 'merged_from');"
      "INSERT INTO version_model_lineage(child, parent_model, relation) SELECT id, 1, 'trained_from' FROM versions"
      " WHERE id % 100 = 0 AND id < 2000;"
      "INSERT INTO version_model_lineage(child, parent_model, relation) VALUES(2650, 2, 'trained_from'),"
      " (2750, 2, 'trained_from');"
      "COMMIT;");
  reg = rg_open(ctx, "big.db");
  json_decref(rg_verify(reg, LK_OK));
  /* up from v3000: every version and both models; 2999 chain edges, 19 + 2
   * version -> model edges, 2 model -> version edges */
  json_t *g = lineage_of(reg, "a@3000", LK_LINEAGE_UP);
  ck_assert_uint_eq(json_array_size(json_object_get(g, "nodes")), 3002);
  ck_assert_uint_eq(json_array_size(json_object_get(g, "edges")), 3022);
  ck_assert(has_edge(g, "a@100", "m", "trained_from", "model") && has_edge(g, "a@2750", "m2", "trained_from", "model"));
  json_decref(g);
  /* down from v1: v_k (k >= 1900) at depth 2 + (k - 1900) through m; m2 at
   * 653 (below v2550, depth 652); v2650 and v2750 at 654 through m2, and
   * what follows them 654 + k - 2650 or - 2750 (v2700: 704, v3000: 904) */
  g = lineage_of(reg, "a@1", LK_LINEAGE_DOWN);
  ck_assert_uint_eq(json_array_size(json_object_get(g, "nodes")), 3002);
  static const struct { const char *ref; long long depth; } want[] = {
      {"a@50", 49}, {"a@100", 2}, {"a@150", 52}, {"m", 1}, {"a@2550", 652}, {"m2", 653}, {"a@2650", 654},
      {"a@2750", 654}, {"a@2700", 704}, {"a@3000", 904}};
  size_t i;
  json_t *n;
  for (size_t w = 0; w < sizeof want / sizeof want[0]; w++) {
    long long got = -1;
    json_array_foreach(json_object_get(g, "nodes"), i, n) if (!strcmp(rg_str(n, "ref"), want[w].ref)) got = rg_int(n, "depth");
    if (got != want[w].depth) ck_abort_msg("down from a@1: %s at depth %lld, expected %lld", want[w].ref, got, want[w].depth);
  }
  ck_assert(has_edge(g, "a@2650", "m2", "trained_from", "model"));
  json_decref(g);
  lk_registry_close(reg);
  lk_context_free(ctx);
}
END_TEST

int main(void) {
  Suite *s = suite_create("registry_files");
  TCase *tc = tcase_create("refusals");
  tcase_add_checked_fixture(tc, rg_setup, rg_teardown);
  tcase_add_test(tc, a_non_sqlite_file_is_refused_untouched);
  tcase_add_test(tc, another_sqlite_database_is_refused_untouched);
  tcase_add_test(tc, a_newer_schema_is_refused_untouched);
  tcase_add_test(tc, a_v1_database_is_migrated);
  tcase_add_test(tc, a_big_walk_follows_model_edges);
  tcase_add_test(tc, a_flipped_byte_is_found_by_verify);
  suite_add_tcase(s, tc);
  tc = tcase_create("processes");
  tcase_add_checked_fixture(tc, rg_setup, rg_teardown);
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, four_writers_lose_nothing);
  tcase_add_test(tc, a_writer_killed_mid_add_leaves_all_or_nothing);
  suite_add_tcase(s, tc);
  tc = tcase_create("fixtures");
  tcase_add_checked_fixture(tc, rg_setup, rg_teardown);
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, fixture_peft_round_trip_is_byte_identical);
  tcase_add_test(tc, fixture_base_fingerprint_and_mismatch);
  tcase_add_test(tc, trained_from_a_base_model);
  tcase_add_test(tc, a_v3_database_is_migrated);
  suite_add_tcase(s, tc);
  return tu_run(s);
}
