/* test_hosts.c - what a host may rely on around plugins (DESIGN.md section
 * 3, lorakit.h): plugin-filled struct tails of a newer plugin are ignored,
 * output structs are written only up to the caller's struct_size, caller
 * inputs with an unknown nonzero tail are refused, backends of one name
 * from several plugins are variants chosen by score(), an explicit plugin
 * path wins over discovery, contexts are created concurrently with plugin
 * init/fini serialised by the core, and the host logger gets its user
 * pointer from any thread.
 *
 * The test plugins are built from tests/plugins into
 * $LK_BUILD_DIR/tests/plugins (tests.mk). */
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "plugins/tp_ext.h"
#include "test_util.h"

static const char *tp_file(const char *name) {
  static char a[4][4096];
  static unsigned i;
  char *z = a[i++ % 4];
  snprintf(z, sizeof a[0], "%s/tests/plugins/lorakit-%s.so", tu_build_dir(), name);
  return z;
}

static lk_context_t *bare_context(void) {
  lk_context_opts_t o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.no_default_plugins = 1;
  lk_context_t *ctx = NULL;
  ck_assert_int_eq(lk_context_create(&o, &ctx), LK_OK);
  return ctx;
}

/* Index of the plugin listed with exactly this (real) path, or -1. */
static int plugin_index(lk_context_t *ctx, const char *path, lk_plugin_info_t *out) {
  char real[PATH_MAX];
  if (!realpath(path, real)) snprintf(real, sizeof real, "%s", path);
  for (uint32_t i = 0; i < lk_plugin_count(ctx); i++) {
    lk_plugin_info_t info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    ck_assert_int_eq(lk_plugin_info(ctx, i, &info), LK_OK);
    if (info.path && strcmp(info.path, real) == 0) {
      if (out) *out = info;
      return (int)i;
    }
  }
  return -1;
}

static int count_components(lk_context_t *ctx, int32_t kind, const char *name, uint32_t *plugin) {
  int n = 0;
  for (uint32_t i = 0; i < lk_component_count(ctx); i++) {
    lk_component_info_t c;
    memset(&c, 0, sizeof c);
    c.struct_size = sizeof c;
    ck_assert_int_eq(lk_component_info(ctx, i, &c), LK_OK);
    if (c.kind == kind && c.name && strcmp(c.name, name) == 0) {
      n++;
      if (plugin) *plugin = c.plugin_index;
    }
  }
  return n;
}

static void copy_file(const char *from, const char *to) {
  FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
  ck_assert_msg(in && out, "copy %s -> %s", from, to);
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, in)) > 0) ck_assert_uint_eq(fwrite(buf, 1, n, out), n);
  fclose(in);
  fclose(out);
}

/* ---- struct rules ---- */

/* Descriptor, factory and vtable of ABI 2.9 with set unknown tails: loaded
 * at 2.0, the known fields used. */
START_TEST(newer_plugin_nonzero_tails_are_ignored) {
  lk_context_t *ctx = bare_context();
  const char *path = tp_file("test-tail");
  lk_status st = lk_plugin_load(ctx, path);
  ck_assert_msg(st == LK_OK, "load %s: %d %s", path, st, lk_last_error(ctx));
  lk_plugin_info_t info;
  ck_assert_int_ge(plugin_index(ctx, path, &info), 0);
  ck_assert_int_eq(info.status, LK_PLUGIN_LOADED);
  ck_assert_str_eq(info.id, "org.lorakit.test.tail");
  ck_assert_uint_eq(info.abi_version, LK_MAKE_ABI(2, 0));
  ck_assert_uint_eq(info.n_components, 1);
  lk_backend_t *be = NULL;
  ck_assert_int_eq(lk_backend_open(ctx, "test_tail", 0, &be), LK_OK);
  ck_assert_str_eq(lk_backend_name(be), "test_tail");
  lk_device_info_t d;
  memset(&d, 0, sizeof d);
  d.struct_size = sizeof d;
  ck_assert_int_eq(lk_backend_info(be, &d), LK_OK);
  ck_assert_str_eq(d.name, "test device");
  lk_backend_close(be);
  lk_context_free(ctx);
}
END_TEST

/* An older host's smaller lk_plugin_info_t / lk_component_info_t: written
 * up to its struct_size, not a byte further; struct_size left as set. */
START_TEST(info_outputs_stop_at_the_callers_struct_size) {
  lk_context_t *ctx = tu_context_with_cpu();
  unsigned char raw[sizeof(lk_plugin_info_t) + 16];
  memset(raw, 0xA5, sizeof raw);
  lk_plugin_info_t *p = (lk_plugin_info_t *)(void *)raw;
  size_t small = offsetof(lk_plugin_info_t, reason) + sizeof(char *); /* the 2.0 size */
  ck_assert_uint_eq(small, LK_MIN_SIZE_PLUGIN_INFO);
  p->struct_size = (uint32_t)small;
  ck_assert_int_eq(lk_plugin_info(ctx, 0, p), LK_OK);
  ck_assert_uint_eq(p->struct_size, small);
  ck_assert_str_eq(p->id, "org.lorakit.cpu");
  ck_assert_str_eq(p->reason, "");
  for (size_t i = small; i < sizeof raw; i++) ck_assert_uint_eq(raw[i], 0xA5);
  p->struct_size = (uint32_t)small - 1; /* below the frozen minimum */
  ck_assert_int_eq(lk_plugin_info(ctx, 0, p), LK_ERR_ABI);

  /* a future, larger struct: the known part filled, the rest untouched */
  unsigned char big[sizeof(lk_component_info_t) + 16];
  memset(big, 0xA5, sizeof big);
  lk_component_info_t *c = (lk_component_info_t *)(void *)big;
  c->struct_size = sizeof big;
  ck_assert_int_eq(lk_component_info(ctx, 0, c), LK_OK);
  ck_assert_uint_eq(c->struct_size, sizeof big);
  ck_assert_int_eq(c->kind, LK_KIND_BACKEND);
  ck_assert_uint_eq(c->reserved0, 0);
  for (size_t i = sizeof(lk_component_info_t); i < sizeof big; i++) ck_assert_uint_eq(big[i], 0xA5);
  c->struct_size = LK_MIN_SIZE_COMPONENT_INFO - 4;
  ck_assert_int_eq(lk_component_info(ctx, 0, c), LK_ERR_ABI);
  lk_context_free(ctx);
}
END_TEST

/* lk_context_opts_t is caller input: a newer caller's tail must be zero. */
START_TEST(context_opts_tail_must_be_zero) {
  struct {
    lk_context_opts_t o;
    uint64_t future;
  } big;
  memset(&big, 0, sizeof big);
  big.o.struct_size = sizeof big;
  big.o.no_default_plugins = 1;
  lk_context_t *ctx = NULL;
  ck_assert_int_eq(lk_context_create(&big.o, &ctx), LK_OK); /* zero tail: fine */
  lk_context_free(ctx);
  ctx = NULL;
  big.future = 1;
  ck_assert_int_eq(lk_context_create(&big.o, &ctx), LK_ERR_ABI);
  ck_assert_ptr_null(ctx);
  lk_context_opts_t o;
  memset(&o, 0, sizeof o);
  o.struct_size = LK_MIN_SIZE_CONTEXT_OPTS - 4;
  ck_assert_int_eq(lk_context_create(&o, &ctx), LK_ERR_ABI);
}
END_TEST

/* ---- variants ---- */

START_TEST(best_scored_variant_is_opened_and_listed) {
  lk_context_t *ctx = bare_context();
  const char *names[] = {"test-variant5", "test-variantneg", "test-variant9"};
  for (int i = 0; i < 3; i++) {
    lk_status st = lk_plugin_load(ctx, tp_file(names[i]));
    ck_assert_msg(st == LK_OK, "load %s: %d %s", names[i], st, lk_last_error(ctx));
  }
  ck_assert_int_eq(count_components(ctx, LK_KIND_BACKEND, "variant", NULL), 3);
  lk_backend_t *be = NULL;
  ck_assert_int_eq(lk_backend_open(ctx, "variant", 0, &be), LK_OK);
  const int *score = lk_backend_extension(be, "test.score/1");
  ck_assert_ptr_nonnull(score);
  ck_assert_int_eq(*score, 9);
  lk_backend_close(be);
  ck_assert_uint_eq(lk_backend_device_count(ctx, "variant"), 1);
  lk_device_info_t d;
  memset(&d, 0, sizeof d);
  d.struct_size = sizeof d;
  ck_assert_int_eq(lk_backend_device_info(ctx, "variant", 0, &d), LK_OK);
  ck_assert_str_eq(d.name, "variant score 9");
  lk_context_free(ctx);

  /* only the unusable one (-1): no variant to open */
  ctx = bare_context();
  ck_assert_int_eq(lk_plugin_load(ctx, tp_file("test-variantneg")), LK_OK);
  ck_assert_int_eq(lk_backend_open(ctx, "variant", 0, &be), LK_ERR_NOT_FOUND);
  ck_assert_uint_eq(lk_backend_device_count(ctx, "variant"), 0);
  lk_context_free(ctx);
}
END_TEST

/* A second plugin's backend named "cpu" (score 0) loads as a variant; the
 * real cpu backend (score 10) is still what "cpu" opens. */
START_TEST(second_backend_named_cpu_is_a_lower_variant) {
  lk_context_t *ctx = tu_context_with_cpu();
  ck_assert_int_eq(lk_plugin_load(ctx, tp_file("test-dupcpu")), LK_OK);
  ck_assert_int_eq(count_components(ctx, LK_KIND_BACKEND, "cpu", NULL), 2);
  tu_assert_cpu_works(ctx); /* the null variant runs no op: this is the real one */
  lk_context_free(ctx);
}
END_TEST

/* ---- explicit path wins over discovery ---- */

START_TEST(explicit_path_replaces_a_discovered_plugin_of_the_same_id) {
  char dir[] = "/tmp/lk-test-explicit-XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(dir));
  char copy[4200], copy2[4200];
  snprintf(copy, sizeof copy, "%s/lorakit-two-copy.so", dir);
  snprintf(copy2, sizeof copy2, "%s/other-two.so", dir);
  copy_file(tp_file("test-two"), copy);
  copy_file(tp_file("test-two"), copy2);
  ck_assert_int_eq(setenv("LORAKIT_PLUGIN_PATH", dir, 1), 0);
  lk_context_t *ctx = NULL;
  ck_assert_int_eq(lk_context_create(NULL, &ctx), LK_OK);
  lk_plugin_info_t info;
  int disc = plugin_index(ctx, copy, &info);
  ck_assert_int_ge(disc, 0);
  ck_assert_int_eq(info.status, LK_PLUGIN_LOADED);
  uint32_t owner = 99;
  ck_assert_int_eq(count_components(ctx, LK_KIND_QUANTISER, "test_two_q", &owner), 1);
  ck_assert_uint_eq(owner, (uint32_t)disc);

  const char *explicit_path = tp_file("test-two");
  lk_status st = lk_plugin_load(ctx, explicit_path);
  ck_assert_msg(st == LK_OK, "explicit load: %d %s", st, lk_last_error(ctx));
  int exp = plugin_index(ctx, explicit_path, &info);
  ck_assert_int_ge(exp, 0);
  ck_assert_int_eq(info.status, LK_PLUGIN_LOADED);
  ck_assert_uint_eq(info.n_components, 3);
  ck_assert_int_ge(plugin_index(ctx, copy, &info), 0);
  ck_assert_int_eq(info.status, LK_PLUGIN_REFUSED);
  ck_assert_uint_eq(info.n_components, 0);
  ck_assert_msg(strstr(info.reason, "org.lorakit.test.two") && strstr(info.reason, "explicitly"),
                "reason: %s", info.reason);
  char real[PATH_MAX];
  ck_assert_ptr_nonnull(realpath(explicit_path, real));
  ck_assert_msg(strstr(info.reason, real), "reason %s does not name %s", info.reason, real);
  /* every component now belongs to the explicit one, once */
  const char *comps[][2] = {{"test_two_a", "b"}, {"test_two_b", "b"}, {"test_two_q", "q"}};
  for (int i = 0; i < 3; i++) {
    owner = 99;
    int32_t kind = comps[i][1][0] == 'q' ? LK_KIND_QUANTISER : LK_KIND_BACKEND;
    ck_assert_int_eq(count_components(ctx, kind, comps[i][0], &owner), 1);
    ck_assert_uint_eq(owner, (uint32_t)exp);
  }
  lk_backend_t *be = NULL;
  ck_assert_int_eq(lk_backend_open(ctx, "test_two_a", 0, &be), LK_OK);
  lk_backend_close(be);

  /* a second explicit load of the same id is refused */
  ck_assert_int_eq(lk_plugin_load(ctx, copy2), LK_ERR_EXISTS);
  ck_assert_int_ge(plugin_index(ctx, copy2, &info), 0);
  ck_assert_int_eq(info.status, LK_PLUGIN_REFUSED);
  ck_assert_msg(strstr(info.reason, "duplicate plugin id 'org.lorakit.test.two'") &&
                    strstr(info.reason, real),
                "reason: %s", info.reason);
  ck_assert_int_eq(count_components(ctx, LK_KIND_QUANTISER, "test_two_q", NULL), 1);
  lk_context_free(ctx);
  unlink(copy);
  unlink(copy2);
  rmdir(dir);
}
END_TEST

/* ---- threads ---- */

typedef struct {
  atomic_int lines;
  atomic_int wrong;
  const char *tag;
} log_sink;

typedef struct {
  log_sink *sink;
  atomic_int inits, extensions;
} log_counts;

static void sink_log(void *user, int32_t level, const char *source, const char *message) {
  log_counts *c = user;
  int init = level == LK_LOG_DEBUG && !strcmp(message, "init");
  int ext = level == LK_LOG_INFO && !strcmp(message, "extension");
  if (!c || strcmp(c->sink->tag, "sink") != 0 || strcmp(source, "org.lorakit.test.minor") != 0 || !(init || ext))
    atomic_fetch_add(&c->sink->wrong, 1);
  atomic_fetch_add(init ? &c->inits : &c->extensions, 1);
  atomic_fetch_add(&c->sink->lines, 1);
}

enum { N_THREADS = 8 };

typedef struct {
  lk_context_t *ctx;
  lk_status st;
  pthread_barrier_t *go;
} ctx_job;

static void *create_context(void *arg) {
  ctx_job *j = arg;
  pthread_barrier_wait(j->go);
  j->st = lk_context_create(NULL, &j->ctx);
  return NULL;
}

enum { N_LOG_LINES = 500 };

/* Logs N_LOG_LINES lines through test-minor's "test.log/1", on this
 * thread's own context and backend, while the other threads do the same. */
static void *log_lines(void *arg) {
  ctx_job *j = arg;
  lk_backend_t *be = NULL;
  j->st = lk_backend_open(j->ctx, "test_minor", 0, &be);
  pthread_barrier_wait(j->go);
  for (int i = 0; j->st == LK_OK && i < N_LOG_LINES; i++) (void)lk_backend_extension(be, "test.log/1");
  lk_backend_close(be);
  return NULL;
}

static void *free_context(void *arg) {
  ctx_job *j = arg;
  pthread_barrier_wait(j->go);
  lk_context_free(j->ctx);
  return NULL;
}

static void run_threads(ctx_job *jobs, void *(*fn)(void *)) {
  pthread_barrier_t go;
  pthread_barrier_init(&go, NULL, N_THREADS);
  pthread_t t[N_THREADS];
  for (int i = 0; i < N_THREADS; i++) {
    jobs[i].go = &go;
    ck_assert_int_eq(pthread_create(&t[i], NULL, fn, &jobs[i]), 0);
  }
  for (int i = 0; i < N_THREADS; i++) pthread_join(t[i], NULL);
  pthread_barrier_destroy(&go);
}

/* 8 contexts created at once, each discovering the cpu plugin, the
 * counting plugin (whose init/fini are not thread-safe: the core's lock
 * must serialise them) and test-minor (which logs "init" through the host
 * logger, with the user pointer the host installed); then 8 threads log
 * through test-minor at once, and the 8 contexts are freed at once. */
START_TEST(contexts_created_concurrently_serialise_plugin_init) {
  char dir[] = "/tmp/lk-test-threads-XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(dir));
  char l1[4200], l2[4200];
  snprintf(l1, sizeof l1, "%s/lorakit-test-count.so", dir);
  snprintf(l2, sizeof l2, "%s/lorakit-test-minor.so", dir);
  ck_assert_int_eq(symlink(tp_file("test-count"), l1), 0);
  ck_assert_int_eq(symlink(tp_file("test-minor"), l2), 0);
  char pathvar[8400];
  snprintf(pathvar, sizeof pathvar, "%s:%s", tu_path("plugins"), dir);
  ck_assert_int_eq(setenv("LORAKIT_PLUGIN_PATH", pathvar, 1), 0);
  static log_sink sink = {0, 0, "sink"};
  static log_counts counts = {&sink, 0, 0};
  lk_set_logger(sink_log, &counts, LK_LOG_DEBUG);

  ctx_job jobs[N_THREADS];
  memset(jobs, 0, sizeof jobs);
  run_threads(jobs, create_context);
  const tp_counters *c = NULL;
  for (int i = 0; i < N_THREADS; i++) {
    ck_assert_int_eq(jobs[i].st, LK_OK);
    ck_assert_ptr_nonnull(jobs[i].ctx);
    tu_assert_cpu_works(jobs[i].ctx);
    lk_backend_t *be = NULL;
    ck_assert_int_eq(lk_backend_open(jobs[i].ctx, "test_count", 0, &be), LK_OK);
    const tp_counters *ci = lk_backend_extension(be, TP_EXT_COUNTERS);
    lk_backend_close(be);
    ck_assert_ptr_nonnull(ci);
    if (c) ck_assert_ptr_eq(c, ci); /* one mapped object for all contexts */
    c = ci;
  }
  ck_assert_int_eq(c->init_calls, N_THREADS);
  ck_assert_int_eq(c->refs, N_THREADS);
  ck_assert_int_eq(c->real_inits, 1);
  int init_lines = atomic_load(&counts.inits);
  ck_assert_int_eq(init_lines, N_THREADS); /* one "init" per context */
  ck_assert_int_eq(sink.wrong, 0);

  /* the logger from 8 threads at once, each line with the user pointer */
  run_threads(jobs, log_lines);
  for (int i = 0; i < N_THREADS; i++) ck_assert_int_eq(jobs[i].st, LK_OK);
  int ext_lines = atomic_load(&counts.extensions), all_lines = atomic_load(&sink.lines);
  ck_assert_int_eq(ext_lines, N_THREADS * N_LOG_LINES);
  ck_assert_int_eq(all_lines, N_THREADS * (N_LOG_LINES + 1));
  ck_assert_int_eq(sink.wrong, 0);

  run_threads(jobs, free_context);
  ck_assert_int_eq(c->fini_calls, N_THREADS);
  ck_assert_int_eq(c->refs, 0);
  ck_assert_int_eq(c->real_finis, 1);
  ck_assert_int_eq(c->extra_finis, 0);

  /* max_level filters: a WARN-level logger sees no debug or info line */
  lk_set_logger(sink_log, &counts, LK_LOG_WARN);
  lk_context_t *ctx = NULL;
  ck_assert_int_eq(lk_context_create(NULL, &ctx), LK_OK);
  lk_backend_t *be = NULL;
  ck_assert_int_eq(lk_backend_open(ctx, "test_minor", 0, &be), LK_OK);
  (void)lk_backend_extension(be, "test.log/1");
  lk_backend_close(be);
  all_lines = atomic_load(&sink.lines);
  ck_assert_int_eq(all_lines, N_THREADS * (N_LOG_LINES + 1));
  lk_context_free(ctx);
  lk_set_logger(NULL, NULL, 0);
  unlink(l1);
  unlink(l2);
  rmdir(dir);
}
END_TEST

/* ---- trust: who may have written a plugin file (lorakit.h, docs/PLUGINS.md) ---- */

static char *make_tmpdir(char *tmpl) {
  ck_assert_ptr_nonnull(mkdtemp(tmpl));
  return tmpl;
}

static void assert_has(const char *hay, const char *needle) {
  ck_assert_msg(hay && strstr(hay, needle), "'%s' does not contain '%s'", hay ? hay : "(null)", needle);
}

START_TEST(world_writable_plugin_file_is_refused) {
  char dir[] = "/tmp/lk-test-trust-XXXXXX", f[4200], real[PATH_MAX];
  make_tmpdir(dir);
  snprintf(f, sizeof f, "%s/lorakit-test-count.so", dir);
  copy_file(tp_file("test-count"), f);
  ck_assert_int_eq(chmod(f, 0666), 0);
  ck_assert_ptr_nonnull(realpath(f, real));
  lk_context_t *ctx = bare_context();
  ck_assert_int_eq(lk_plugin_load(ctx, f), LK_ERR_SECURITY);
  lk_plugin_info_t info;
  ck_assert_int_ge(plugin_index(ctx, f, &info), 0);
  ck_assert_int_eq(info.status, LK_PLUGIN_REFUSED);
  assert_has(info.reason, real);
  assert_has(info.reason, "mode 0666");
  assert_has(info.reason, "writable by others");
  ck_assert_int_eq(count_components(ctx, LK_KIND_BACKEND, "test_count", NULL), 0);
  lk_context_free(ctx);
  /* the same bytes at mode 0644 load: it was the mode */
  ck_assert_int_eq(chmod(f, 0644), 0);
  ctx = bare_context();
  ck_assert_int_eq(lk_plugin_load(ctx, f), LK_OK);
  ck_assert_int_eq(count_components(ctx, LK_KIND_BACKEND, "test_count", NULL), 1);
  lk_context_free(ctx);
  unlink(f);
  rmdir(dir);
}
END_TEST

START_TEST(plugin_in_a_group_writable_folder_is_refused) {
  char dir[] = "/tmp/lk-test-trust-XXXXXX", f[4200], real[PATH_MAX];
  make_tmpdir(dir);
  snprintf(f, sizeof f, "%s/lorakit-test-count.so", dir);
  copy_file(tp_file("test-count"), f);
  ck_assert_int_eq(chmod(f, 0644), 0);
  ck_assert_int_eq(chmod(dir, 0770), 0);
  ck_assert_ptr_nonnull(realpath(dir, real));
  lk_context_t *ctx = bare_context();
  ck_assert_int_eq(lk_plugin_load(ctx, f), LK_ERR_SECURITY);
  assert_has(lk_last_error(ctx), "folder");
  lk_context_free(ctx);
  /* discovered there: listed as refused with the reason, the context fine */
  ck_assert_int_eq(setenv("LORAKIT_PLUGIN_PATH", dir, 1), 0);
  ck_assert_int_eq(lk_context_create(NULL, &ctx), LK_OK);
  lk_plugin_info_t info;
  ck_assert_int_ge(plugin_index(ctx, f, &info), 0);
  ck_assert_int_eq(info.status, LK_PLUGIN_REFUSED);
  assert_has(info.reason, "folder");
  assert_has(info.reason, real);
  assert_has(info.reason, "mode 0770");
  assert_has(info.reason, "writable by its group");
  ck_assert_int_eq(lk_last_status(ctx), LK_OK);
  lk_context_free(ctx);
  unsetenv("LORAKIT_PLUGIN_PATH");
  unlink(f);
  rmdir(dir);
}
END_TEST

static atomic_int warn_lines;
static char warn_last[1024];
static void warn_sink(void *user, int32_t level, const char *source, const char *message) {
  (void)user;
  (void)source;
  if (level != LK_LOG_WARN || !strstr(message, "LORAKIT_PLUGIN_PATH entry")) return;
  atomic_fetch_add(&warn_lines, 1);
  snprintf(warn_last, sizeof warn_last, "%s", message);
}

START_TEST(relative_plugin_path_entries_are_never_searched) {
  char dir[] = "/tmp/lk-test-relative-XXXXXX", f[4200], cwd[PATH_MAX];
  make_tmpdir(dir);
  snprintf(f, sizeof f, "%s/lorakit-test-count.so", dir);
  copy_file(tp_file("test-count"), f);
  ck_assert_int_eq(mkdir(strcat(strcpy(cwd, dir), "/lib"), 0755), 0);
  snprintf(f, sizeof f, "%s/lib/lorakit-test-two.so", dir);
  copy_file(tp_file("test-two"), f);
  ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
  ck_assert_int_eq(chdir(dir), 0);
  ck_assert_int_eq(setenv("LORAKIT_PLUGIN_PATH", ".::lib", 1), 0);
  lk_set_logger(warn_sink, NULL, LK_LOG_WARN);
  lk_context_t *ctx = NULL;
  ck_assert_int_eq(lk_context_create(NULL, &ctx), LK_OK);
  ck_assert_uint_eq(lk_plugin_count(ctx), 0); /* this test binary has no other plugin folder */
  ck_assert_int_eq(atomic_load(&warn_lines), 3);  /* ".", "" and "lib" */
  assert_has(warn_last, "'lib' ignored");
  lk_context_free(ctx);
  lk_set_logger(NULL, NULL, 0);
  ck_assert_int_eq(chdir(cwd), 0);
  unsetenv("LORAKIT_PLUGIN_PATH");
}
END_TEST

/* A second org.lorakit.cpu found later in discovery: refused, naming both
 * files; the real one keeps working. */
START_TEST(discovered_duplicate_cpu_id_is_refused_naming_both_files) {
  char dir[] = "/tmp/lk-test-dupid-XXXXXX", f[4200], pathvar[8400], real_cpu[PATH_MAX], real_f[PATH_MAX];
  make_tmpdir(dir);
  snprintf(f, sizeof f, "%s/lorakit-zcpu.so", dir);
  copy_file(tu_cpu_plugin(), f);
  ck_assert_ptr_nonnull(realpath(tu_cpu_plugin(), real_cpu));
  ck_assert_ptr_nonnull(realpath(f, real_f));
  snprintf(pathvar, sizeof pathvar, "%s:%s", tu_path("plugins"), dir);
  ck_assert_int_eq(setenv("LORAKIT_PLUGIN_PATH", pathvar, 1), 0);
  lk_context_t *ctx = NULL;
  ck_assert_int_eq(lk_context_create(NULL, &ctx), LK_OK);
  lk_plugin_info_t info;
  ck_assert_int_ge(plugin_index(ctx, real_cpu, &info), 0);
  ck_assert_int_eq(info.status, LK_PLUGIN_LOADED);
  ck_assert_int_ge(plugin_index(ctx, f, &info), 0);
  ck_assert_int_eq(info.status, LK_PLUGIN_REFUSED);
  assert_has(info.reason, "duplicate plugin id 'org.lorakit.cpu'");
  assert_has(info.reason, real_f);
  assert_has(info.reason, real_cpu);
  ck_assert_int_eq(count_components(ctx, LK_KIND_BACKEND, "cpu", NULL), 1);
  tu_assert_cpu_works(ctx);
  lk_context_free(ctx);
  unsetenv("LORAKIT_PLUGIN_PATH");
  unlink(f);
  rmdir(dir);
}
END_TEST

/* ---- lazy loading: a backend plugin that exit(0)s when mapped ---- */

/* A one-tensor safetensors file (hand-written header), for the loaders. */
static void write_safetensors(const char *path) {
  const char hdr[] = "{\"lk_probe_weight\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
  uint64_t n = sizeof hdr - 1;
  float data[2] = {1.0f, 2.0f};
  FILE *fp = fopen(path, "wb");
  ck_assert_ptr_nonnull(fp);
  ck_assert_uint_eq(fwrite(&n, 8, 1, fp), 1);
  ck_assert_uint_eq(fwrite(hdr, 1, n, fp), n);
  ck_assert_uint_eq(fwrite(data, sizeof data, 1, fp), 1);
  fclose(fp);
}

/* In a child: a context discovering the exit plugin, then open a model
 * (what = 0) or the cpu backend (what = 1); 42 when the call returned. */
static int child_status(const char *model, int what) {
  fflush(NULL);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    lk_context_t *ctx = NULL;
    if (lk_context_create(NULL, &ctx) != LK_OK) _exit(1);
    if (what == 0) {
      lk_model_t *m = NULL;
      if (lk_model_open(ctx, model, NULL, &m) != LK_OK || lk_model_tensor_count(m) != 1) _exit(2);
      lk_model_close(m);
    } else {
      lk_backend_t *be = NULL;
      if (lk_backend_open(ctx, "cpu", 0, &be) != LK_OK) _exit(3);
      lk_backend_close(be);
    }
    lk_context_free(ctx);
    _exit(42);
  }
  int ws = 0;
  ck_assert_int_eq(waitpid(pid, &ws, 0), pid);
  ck_assert(WIFEXITED(ws));
  return WEXITSTATUS(ws);
}

START_TEST(opening_a_model_loads_no_backend_plugin) {
  char dir[] = "/tmp/lk-test-lazy-XXXXXX", model[4200], pathvar[8400], cmd[16800], out[8192];
  make_tmpdir(dir);
  snprintf(model, sizeof model, "%s/m.safetensors", dir);
  write_safetensors(model);
  snprintf(pathvar, sizeof pathvar, "%s:%s", tu_path("plugins"), tu_path("tests/exitplug"));
  ck_assert_int_eq(setenv("LORAKIT_PLUGIN_PATH", pathvar, 1), 0);
  ck_assert_int_eq(child_status(model, 0), 42); /* loaders (and quantisers) only */
  ck_assert_int_eq(child_status(model, 1), 0);  /* a backend call maps it: exit(0) */
  /* the CLI: inspect prints its table; `plugins` (asks for all) ends at exit(0) */
  snprintf(cmd, sizeof cmd, "LORAKIT_PLUGIN_PATH='%s' '%s' inspect '%s' 2>&1; echo \"rc=$?\"", pathvar,
           tu_path("lorakit"), model);
  FILE *p = popen(cmd, "r");
  ck_assert_ptr_nonnull(p);
  size_t n = fread(out, 1, sizeof out - 1, p);
  out[n] = '\0';
  pclose(p);
  assert_has(out, "lk_probe_weight");
  assert_has(out, "rc=0");
  snprintf(cmd, sizeof cmd, "LORAKIT_PLUGIN_PATH='%s' '%s' plugins 2>&1; echo \"rc=$?\"", pathvar,
           tu_path("lorakit"));
  p = popen(cmd, "r");
  ck_assert_ptr_nonnull(p);
  n = fread(out, 1, sizeof out - 1, p);
  out[n] = '\0';
  pclose(p);
  ck_assert_str_eq(out, "rc=0\n");
  unsetenv("LORAKIT_PLUGIN_PATH");
  unlink(model);
  rmdir(dir);
}
END_TEST

static Suite *hosts_suite(void) {
  Suite *s = suite_create("hosts");
  TCase *tc = tcase_create("structs");
  tcase_add_test(tc, newer_plugin_nonzero_tails_are_ignored);
  tcase_add_test(tc, info_outputs_stop_at_the_callers_struct_size);
  tcase_add_test(tc, context_opts_tail_must_be_zero);
  suite_add_tcase(s, tc);
  tc = tcase_create("choice");
  tcase_add_test(tc, best_scored_variant_is_opened_and_listed);
  tcase_add_test(tc, second_backend_named_cpu_is_a_lower_variant);
  tcase_add_test(tc, explicit_path_replaces_a_discovered_plugin_of_the_same_id);
  suite_add_tcase(s, tc);
  tc = tcase_create("trust");
  tcase_add_test(tc, world_writable_plugin_file_is_refused);
  tcase_add_test(tc, plugin_in_a_group_writable_folder_is_refused);
  tcase_add_test(tc, relative_plugin_path_entries_are_never_searched);
  tcase_add_test(tc, discovered_duplicate_cpu_id_is_refused_naming_both_files);
  tcase_add_test(tc, opening_a_model_loads_no_backend_plugin);
  suite_add_tcase(s, tc);
  tc = tcase_create("threads");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, contexts_created_concurrently_serialise_plugin_init);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  unsetenv("LORAKIT_PLUGIN_PATH");
  return tu_run(hosts_suite());
}
