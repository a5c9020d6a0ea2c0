/* bench_registry.c - the adapter registry (lk_registry_*) through the public
 * API, each figure against a reference measured in the same run:
 *
 *   add of a 20 MiB adapter (canonical bytes, SHA-256, zlib, one durable
 *     SQLite transaction)  vs  write() + fsync() of the same bytes to a file
 *   get of it (read, inflate, hash check, rebuild the adapter)
 *                          vs  read() of the same bytes from a file (page cache)
 *   list of 10,000 versions (JSON of every version)
 *                          vs  json_load_file of the same JSON from a flat file
 *   lineage of a version whose ancestry is the whole registry (worst case),
 *   and of one at the end of a 100-version chain (a usual case)
 *                          vs  the bare recursive SQL query counting the
 *                              worst case's ancestors
 *
 * The 10,000 versions are 100 names x 100 versions: each version
 * trained_from the previous one of its name, and every tenth combined_from
 * the same version of the previous name. 100 payloads are added through the
 * API; the rest of the rows are cloned with SQL (adding 10,000 versions
 * through the API takes a minute of fsyncs and measures nothing new here).
 *
 * usage: bench_registry [DIR]   (scratch folder, default /tmp) */
#include <fcntl.h>
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lorakit.h"

#define N_NAMES 100
#define N_VERSIONS 100
#define REPS 5
#define LATENCY_TARGET_MS 50.0

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return v[n / 2];
}

static void die(lk_context_t *ctx, const char *what) {
  fprintf(stderr, "bench_registry: %s: %s\n", what, ctx ? lk_last_error(ctx) : "");
  exit(1);
}

/* 40 targets (20 layers x q, v) of 4096 x 4096 at rank 16: 20 MiB of f32,
 * filled with a fixed pseudo-random stream (trained weights compress about
 * as badly). */
static lk_adapter_t *adapter_20mb(lk_context_t *ctx, uint64_t *bytes) {
  lk_lora_config_t c = {sizeof c, 16, 32.0f, LK_SCALING_STANDARD, 1};
  lk_adapter_t *ad = NULL;
  if (lk_adapter_create(ctx, &c, &ad)) die(ctx, "adapter");
  uint64_t s = 0x9e3779b97f4a7c15ull;
  *bytes = 0;
  for (int l = 0; l < 20; l++)
    for (int k = 0; k < 2; k++) {
      char name[96];
      snprintf(name, sizeof name, "model.layers.%d.self_attn.%s_proj", l, k ? "v" : "q");
      if (lk_adapter_add_target(ad, name, 4096, 4096, 0, 0)) die(ctx, "target");
      lk_tensor_t A, B;
      lk_adapter_weights(ad, lk_adapter_target_count(ad) - 1, &A, &B);
      float *b = B.data;
      for (int64_t i = 0; i < lk_tensor_numel(&B); i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        b[i] = (float)((double)(s >> 40) / 16777216.0 - 0.5) * 0.02f;
      }
      *bytes += A.nbytes + B.nbytes;
    }
  return ad;
}

/* The adapter's A and B bytes, concatenated: what a file of it holds. */
static unsigned char *flat_bytes(lk_adapter_t *ad, uint64_t n) {
  unsigned char *buf = malloc(n), *p = buf;
  if (!buf) exit(1);
  for (uint32_t i = 0; i < lk_adapter_target_count(ad); i++) {
    lk_tensor_t A, B;
    lk_adapter_weights(ad, i, &A, &B);
    memcpy(p, A.data, A.nbytes);
    p += A.nbytes;
    memcpy(p, B.data, B.nbytes);
    p += B.nbytes;
  }
  return buf;
}

static double file_write(const char *path, const unsigned char *buf, uint64_t n) {
  double t0 = now();
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0 || write(fd, buf, n) != (ssize_t)n || fsync(fd)) exit(1);
  close(fd);
  return now() - t0;
}

static double file_read(const char *path, unsigned char *buf, uint64_t n) {
  double t0 = now();
  int fd = open(path, O_RDONLY);
  if (fd < 0 || read(fd, buf, n) != (ssize_t)n) exit(1);
  close(fd);
  return now() - t0;
}

static void bench_add_get(lk_context_t *ctx, lk_registry_t *reg, const char *dir) {
  uint64_t n = 0;
  lk_adapter_t *ad = adapter_20mb(ctx, &n);
  unsigned char *buf = flat_bytes(ad, n);
  char path[1024];
  snprintf(path, sizeof path, "%s/bench-adapter.bin", dir);
  double t_add[REPS], t_get[REPS], t_w[REPS], t_r[REPS];
  for (int r = 0; r < REPS; r++) {
    lk_tensor_t B;
    lk_adapter_weights(ad, 0, NULL, &B);
    ((float *)B.data)[0] = (float)r; /* new content each time: no deduplication */
    double t0 = now();
    if (lk_registry_add_adapter(reg, "big", ad, NULL, NULL)) die(ctx, "add");
    t_add[r] = now() - t0;
    t_w[r] = file_write(path, buf, n);
  }
  for (int r = 0; r < REPS; r++) {
    lk_adapter_t *got = NULL;
    double t0 = now();
    if (lk_registry_get(reg, "big", &got)) die(ctx, "get");
    t_get[r] = now() - t0;
    lk_adapter_free(got);
    t_r[r] = file_read(path, buf, n);
  }
  double mb = (double)n / (1024.0 * 1024.0);
  double add = mb / median(t_add, REPS), w = mb / median(t_w, REPS);
  double get = mb / median(t_get, REPS), rd = mb / median(t_r, REPS);
  printf("bench: registry_add_%.0fMiB %.1f MB/s ratio=%.3f vs file_write_fsync_same_bytes (%.1f MB/s)\n", mb, add,
         add / w, w);
  printf("bench: registry_get_%.0fMiB %.1f MB/s ratio=%.3f vs file_read_same_bytes (%.1f MB/s)\n", mb, get, get / rd,
         rd);
  unlink(path);
  free(buf);
  lk_adapter_free(ad);
}

/* ---- 10,000 versions --------------------------------------------------------------- */

static void exec(sqlite3 *db, const char *sql) {
  char *err = NULL;
  if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
    fprintf(stderr, "bench_registry: %s: %s\n", sql, err ? err : "?");
    exit(1);
  }
}

static void populate(lk_context_t *ctx, lk_registry_t *reg, const char *path) {
  for (int i = 0; i < N_NAMES; i++) { /* 100 distinct payloads, one per name */
    lk_lora_config_t c = {sizeof c, 8, 16.0f, LK_SCALING_STANDARD, (uint64_t)i + 1};
    lk_adapter_t *ad = NULL;
    lk_adapter_create(ctx, &c, &ad);
    lk_adapter_add_target(ad, "model.layers.0.self_attn.q_proj", 256, 256, 0, 0);
    lk_adapter_add_target(ad, "model.layers.0.self_attn.v_proj", 256, 128, 0, 0);
    char name[32];
    snprintf(name, sizeof name, "adapter-%02d", i);
    if (lk_registry_add_adapter(reg, name, ad, NULL, NULL)) die(ctx, "populate");
    lk_adapter_free(ad);
  }
  sqlite3 *db = NULL;
  if (sqlite3_open(path, &db)) exit(1);
  sqlite3_busy_timeout(db, 10000);
  char sql[2048];
  exec(db, "BEGIN");
  /* versions 2..100 of each name, cloned from its version 1 */
  snprintf(sql, sizeof sql,
           "WITH RECURSIVE k(n) AS (SELECT 2 UNION ALL SELECT n + 1 FROM k WHERE n < %d) "
           "INSERT INTO versions(adapter_id, version, blob, model_id, rank, alpha, scaling, target_modules, "
           "n_targets, format, size, created, operation, notes) SELECT v.adapter_id, k.n, v.blob, v.model_id, v.rank, "
           "v.alpha, v.scaling, v.target_modules, v.n_targets, v.format, v.size, v.created + k.n, 'train', NULL "
           "FROM versions v JOIN k WHERE v.version = 1 AND v.adapter_id IN (SELECT id FROM adapters WHERE name "
           "LIKE 'adapter-%%')",
           N_VERSIONS);
  exec(db, sql);
  exec(db, "UPDATE adapters SET next_version = 101 WHERE name LIKE 'adapter-%'");
  exec(db, "INSERT INTO lineage(child, parent, relation, params) SELECT c.id, p.id, 'trained_from', '{\"steps\":100}' "
           "FROM versions c JOIN versions p ON p.adapter_id = c.adapter_id AND p.version = c.version - 1");
  exec(db, "INSERT INTO lineage(child, parent, relation, params) SELECT c.id, p.id, 'combined_from', '{}' "
           "FROM versions c JOIN adapters ca ON ca.id = c.adapter_id JOIN adapters pa ON pa.name = "
           "printf('adapter-%02d', CAST(substr(ca.name, 9) AS INTEGER) - 1) JOIN versions p ON p.adapter_id = pa.id "
           "AND p.version = c.version WHERE c.version % 10 = 0");
  exec(db, "INSERT INTO tags(adapter_id, tag, version_id) SELECT adapter_id, 'prod', id FROM versions "
           "WHERE version = 50 AND adapter_id IN (SELECT id FROM adapters WHERE name LIKE 'adapter-%')");
  exec(db, "COMMIT");
  sqlite3_close(db);
}

static double time_ms(lk_context_t *ctx, lk_registry_t *reg, int what, const char *ref, size_t *n_out) {
  double t[REPS];
  for (int r = 0; r < REPS; r++) {
    char *s = NULL;
    lk_registry_list_opts_t lo = {sizeof lo, 0, NULL, NULL, NULL, 0, 0};
    lk_registry_lineage_opts_t go = {sizeof go, what == 3 ? LK_LINEAGE_UP : LK_LINEAGE_BOTH, 0, 0};
    if (what == 1) lo.name = ref;
    double t0 = now();
    lk_status st = what < 2 ? lk_registry_list(reg, &lo, &s) : lk_registry_lineage(reg, ref, &go, &s);
    t[r] = (now() - t0) * 1e3;
    if (st) die(ctx, "query");
    if (n_out) {
      json_error_t e;
      json_t *j = json_loads(s, 0, &e);
      *n_out = what < 2 ? json_array_size(j) : json_array_size(json_object_get(j, "nodes"));
      json_decref(j);
    }
    lk_free(s);
  }
  return median(t, REPS);
}

static void bench_queries(lk_context_t *ctx, lk_registry_t *reg, const char *path, const char *dir) {
  populate(ctx, reg, path);
  size_t n_all = 0, n_name = 0, n_nodes = 0;
  double t_all = time_ms(ctx, reg, 0, NULL, &n_all);
  double t_name = time_ms(ctx, reg, 1, "adapter-42", &n_name);
  double t_lin = time_ms(ctx, reg, 2, "adapter-99@100", &n_nodes);
  size_t n_chain = 0;
  double t_chain = time_ms(ctx, reg, 3, "adapter-00@100", &n_chain);
  /* reference for list: the same JSON read back from a flat index file */
  char *s = NULL, json_path[1024];
  snprintf(json_path, sizeof json_path, "%s/bench-index.json", dir);
  lk_registry_list(reg, NULL, &s);
  FILE *f = fopen(json_path, "w");
  fputs(s, f);
  fclose(f);
  lk_free(s);
  double t_ref[REPS];
  for (int r = 0; r < REPS; r++) {
    json_error_t e;
    double t0 = now();
    json_t *j = json_load_file(json_path, 0, &e);
    t_ref[r] = (now() - t0) * 1e3;
    json_decref(j);
  }
  double ref_list = median(t_ref, REPS);
  unlink(json_path);
  /* reference for lineage: the recursive query alone, counting ancestors and descendants */
  sqlite3 *db = NULL;
  sqlite3_stmt *q = NULL;
  sqlite3_open(path, &db);
  sqlite3_prepare_v2(db,
                     "WITH RECURSIVE up(id) AS (SELECT (SELECT v.id FROM versions v JOIN adapters a ON a.id = "
                     "v.adapter_id WHERE a.name = 'adapter-99' AND v.version = 100) UNION SELECT l.parent FROM "
                     "lineage l JOIN up ON l.child = up.id), down(id) AS (SELECT (SELECT id FROM up LIMIT 1) UNION "
                     "SELECT l.child FROM lineage l JOIN down ON l.parent = down.id) "
                     "SELECT (SELECT count(*) FROM up) + (SELECT count(*) FROM down)",
                     -1, &q, NULL);
  for (int r = 0; r < REPS; r++) {
    double t0 = now();
    sqlite3_reset(q);
    sqlite3_step(q);
    t_ref[r] = (now() - t0) * 1e3;
  }
  sqlite3_finalize(q);
  sqlite3_close(db);
  double ref_lin = median(t_ref, REPS);
  printf("bench: registry_list_%zu_versions %.1f ms ratio=%.2f vs json_index_file_parse (%.1f ms) target<=%.0fms %s\n",
         n_all, t_all, t_all / ref_list, ref_list, LATENCY_TARGET_MS, t_all <= LATENCY_TARGET_MS ? "ok" : "MISSED");
  printf("bench: registry_list_one_name_%zu_of_%zu %.2f ms ratio=%.2f vs json_index_file_parse (%.1f ms) "
         "target<=%.0fms %s\n",
         n_name, n_all, t_name, t_name / ref_list, ref_list, LATENCY_TARGET_MS,
         t_name <= LATENCY_TARGET_MS ? "ok" : "MISSED");
  printf("bench: registry_lineage_%zu_nodes_of_%zu %.1f ms ratio=%.2f vs recursive_sql_count_only (%.1f ms) "
         "target<=%.0fms %s\n",
         n_nodes, n_all, t_lin, t_lin / ref_lin, ref_lin, LATENCY_TARGET_MS,
         t_lin <= LATENCY_TARGET_MS ? "ok" : "MISSED");
  printf("bench: registry_lineage_chain_%zu_nodes_of_%zu %.2f ms ratio=%.3f vs recursive_sql_count_only (%.1f ms) "
         "target<=%.0fms %s\n",
         n_chain, n_all, t_chain, t_chain / ref_lin, ref_lin, LATENCY_TARGET_MS,
         t_chain <= LATENCY_TARGET_MS ? "ok" : "MISSED");
}

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : "/tmp";
  char tmpl[512], path[600];
  snprintf(tmpl, sizeof tmpl, "%s/lk-bench-registry-XXXXXX", dir);
  if (!mkdtemp(tmpl)) {
    perror(tmpl);
    return 1;
  }
  snprintf(path, sizeof path, "%s/registry.db", tmpl);
  lk_context_opts_t co = {sizeof co, 1, 0, 0};
  lk_context_t *ctx = NULL;
  lk_registry_t *reg = NULL;
  if (lk_context_create(&co, &ctx) || lk_registry_open(ctx, path, NULL, &reg)) die(ctx, "open");
  bench_add_get(ctx, reg, tmpl);
  bench_queries(ctx, reg, path, tmpl);
  lk_registry_close(reg);
  lk_context_free(ctx);
  if (getenv("LK_BENCH_KEEP")) { /* for looking at the database afterwards */
    fprintf(stderr, "bench_registry: kept %s\n", path);
    return 0;
  }
  char cmd[700];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpl);
  return system(cmd) == 0 ? 0 : 1;
}
