/* test_plugins.c - plugin loading: the cpu plugin by explicit path and by
 * discovery, what lk_plugin_info and lk_component_info report, every way a
 * broken plugin is refused (with a reason naming the file and the fault,
 * while the rest of the context keeps working), ABI minor negotiation,
 * several components in one file, and reference-counted init/fini.
 *
 * The test plugins are built from tests/plugins into
 * $LK_BUILD_DIR/tests/plugins (see tests.mk and each file's comment). */
#include <dlfcn.h>
#include <sys/stat.h>
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

/* Index of the plugin whose path ends in the file name of `path`, or -1. */
static int find_plugin(lk_context_t *ctx, const char *path, lk_plugin_info_t *out) {
  const char *base = strrchr(path, '/');
  base = base ? base + 1 : path;
  for (uint32_t i = 0; i < lk_plugin_count(ctx); i++) {
    lk_plugin_info_t info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    ck_assert_int_eq(lk_plugin_info(ctx, i, &info), LK_OK);
    ck_assert_ptr_nonnull(info.path);
    const char *b = strrchr(info.path, '/');
    b = b ? b + 1 : info.path;
    if (strcmp(b, base) == 0) {
      if (out) *out = info;
      return (int)i;
    }
  }
  return -1;
}

/* Number of components of `kind` called `name`. */
static int count_components(lk_context_t *ctx, int32_t kind, const char *name) {
  int n = 0;
  for (uint32_t i = 0; i < lk_component_count(ctx); i++) {
    lk_component_info_t c;
    memset(&c, 0, sizeof c);
    c.struct_size = sizeof c;
    ck_assert_int_eq(lk_component_info(ctx, i, &c), LK_OK);
    if (c.kind == kind && c.name && strcmp(c.name, name) == 0) n++;
  }
  return n;
}

static void assert_contains(const char *hay, const char *needle, const char *what) {
  ck_assert_msg(hay != NULL && strstr(hay, needle) != NULL, "%s \"%s\" does not mention \"%s\"",
                what, hay ? hay : "(null)", needle);
}

/* Loads the cpu plugin, then `bad`: the load must fail with `code`, the
 * plugin must be listed refused with a reason naming the file and each of
 * `words`, none of its components may be listed, and the cpu backend must
 * still run an op. Every shortfall is reported, not just the first. */
static void check_refused(const char *bad, lk_status code, const char *const *words,
                          const char *component) {
  lk_context_t *ctx = tu_context_with_cpu();
  uint32_t ncomp = lk_component_count(ctx);
  const char *path = tp_file(bad);
  ck_assert_msg(access(path, R_OK) == 0, "test plugin %s was not built", path);
  char why[4096] = "";
#define WHY(...) snprintf(why + strlen(why), sizeof why - strlen(why), __VA_ARGS__)
  lk_status st = lk_plugin_load(ctx, path);
  if (st != code)
    WHY("\n  lk_plugin_load = %d (%s), expected %d (%s)", st, lk_strerror(st), code,
        lk_strerror(code));
  if (lk_last_status(ctx) != st) WHY("\n  lk_last_status = %d, not %d", lk_last_status(ctx), st);
  if (!strstr(lk_last_error(ctx), path))
    WHY("\n  last error \"%s\" does not name the file", lk_last_error(ctx));

  lk_plugin_info_t info;
  int idx = find_plugin(ctx, path, &info);
  ck_assert_msg(idx >= 0, "refused plugin %s is not listed%s", path, why);
  if (info.status != LK_PLUGIN_REFUSED) WHY("\n  status %d, not refused", info.status);
  if (info.n_components != 0) WHY("\n  n_components %u, not 0", info.n_components);
  if (!info.reason || !strstr(info.reason, path))
    WHY("\n  reason \"%s\" does not name the file", info.reason ? info.reason : "(null)");
  for (; words && *words; words++)
    if (!info.reason || !strstr(info.reason, *words))
      WHY("\n  reason \"%s\" does not mention \"%s\"", info.reason ? info.reason : "(null)",
          *words);
  if (lk_component_count(ctx) != ncomp)
    WHY("\n  component count went from %u to %u", ncomp, lk_component_count(ctx));
  if (component) {
    lk_backend_t *be = NULL;
    lk_status so = lk_backend_open(ctx, component, 0, &be);
    if (so != LK_ERR_NOT_FOUND) WHY("\n  backend %s of the refused plugin opens: %d", component, so);
    lk_backend_close(be);
  }
#undef WHY
  ck_assert_msg(why[0] == 0, "%s refused wrongly:%s", path, why);
  tu_assert_cpu_works(ctx);
  lk_context_free(ctx);
}

/* ---- the cpu plugin ---- */

START_TEST(cpu_plugin_loads_by_explicit_path) {
  lk_context_t *ctx = bare_context();
  ck_assert_uint_eq(lk_plugin_count(ctx), 0);
  ck_assert_int_eq(lk_plugin_load(ctx, tu_cpu_plugin()), LK_OK);
  ck_assert_uint_eq(lk_plugin_count(ctx), 1);
  lk_plugin_info_t info;
  memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  ck_assert_int_eq(lk_plugin_info(ctx, 0, &info), LK_OK);
  ck_assert_int_eq(info.status, LK_PLUGIN_LOADED);
  ck_assert_str_eq(info.id, "org.lorakit.cpu");
  assert_contains(info.path, "lorakit-cpu.so", "path");
  ck_assert_ptr_nonnull(info.name);
  ck_assert_ptr_nonnull(info.version);
  ck_assert_ptr_nonnull(info.description);
  ck_assert_uint_eq(info.abi_version, LK_PLUGIN_ABI_VERSION);
  ck_assert_uint_ge(info.n_components, 1);
  ck_assert_str_eq(info.reason, "");
  ck_assert_str_eq(lk_last_error(ctx), "");
  tu_assert_cpu_works(ctx);
  lk_context_free(ctx);
}
END_TEST

START_TEST(cpu_plugin_lists_its_backend) {
  lk_context_t *ctx = tu_context_with_cpu();
  ck_assert_uint_ge(lk_component_count(ctx), 1);
  int found = 0;
  for (uint32_t i = 0; i < lk_component_count(ctx); i++) {
    lk_component_info_t c = {sizeof c, 0, NULL, NULL, 99, 0};
    ck_assert_int_eq(lk_component_info(ctx, i, &c), LK_OK);
    ck_assert_ptr_nonnull(c.name);
    ck_assert_ptr_nonnull(c.description);
    ck_assert_uint_eq(c.plugin_index, 0);
    if (c.kind == LK_KIND_BACKEND && strcmp(c.name, "cpu") == 0) found++;
  }
  ck_assert_int_eq(found, 1);
  lk_component_info_t c = {sizeof c, 0, NULL, NULL, 0, 0};
  ck_assert_int_eq(lk_component_info(ctx, lk_component_count(ctx), &c), LK_ERR_NOT_FOUND);
  lk_plugin_info_t p = {sizeof p, 0, NULL, NULL, NULL, NULL, NULL, 0, 0, NULL};
  ck_assert_int_eq(lk_plugin_info(ctx, 1, &p), LK_ERR_NOT_FOUND);
  ck_assert_int_eq(lk_plugin_info(ctx, 0, NULL), LK_ERR_INVALID_ARG);
  lk_context_free(ctx);
}
END_TEST

START_TEST(cpu_backend_reports_a_cpu_device) {
  lk_context_t *ctx = tu_context_with_cpu();
  lk_backend_t *be = tu_open_cpu(ctx);
  ck_assert_str_eq(lk_backend_name(be), "cpu");
  ck_assert_uint_eq(lk_backend_device_count(ctx, "cpu"), 1);
  lk_device_info_t d;
  memset(&d, 0, sizeof d);
  d.struct_size = sizeof d;
  ck_assert_int_eq(lk_backend_device_info(ctx, "cpu", 0, &d), LK_OK);
  ck_assert_int_eq(d.type, LK_DEVICE_CPU);
  ck_assert_uint_ge(d.compute_units, 1);
  ck_assert_msg(d.name[0] != 0, "device has no name");
  memset(&d, 0, sizeof d);
  d.struct_size = sizeof d;
  ck_assert_int_eq(lk_backend_info(be, &d), LK_OK);
  ck_assert_int_eq(d.type, LK_DEVICE_CPU);
  ck_assert_ptr_nonnull(lk_backend_instance(be));
  /* supports() sees the whole op: an f32 LoRA forward, described without buffers */
  int64_t xs[2] = {4, 8}, as[2] = {2, 8}, bs[2] = {3, 2}, ys[2] = {4, 3};
  lk_view_t v[4];
  lk_view_init(&v[0], LK_DTYPE_F32, 2, xs, NULL, 0);
  lk_view_init(&v[1], LK_DTYPE_F32, 2, as, NULL, 0);
  lk_view_init(&v[2], LK_DTYPE_F32, 2, bs, NULL, 0);
  lk_view_init(&v[3], LK_DTYPE_F32, 2, ys, NULL, 0);
  lk_op_t op = {sizeof op, LK_OP_LORA_FORWARD, NULL, 3, 1, v, v + 3, NULL};
  ck_assert_int_eq(lk_backend_supports(be, &op), 1);
  v[1].dtype = LK_DTYPE_I8; /* A must be f32 */
  ck_assert_int_eq(lk_backend_supports(be, &op), 0);
  lk_backend_close(be);
  lk_context_free(ctx);
}
END_TEST

/* Default discovery: LORAKIT_PLUGIN_PATH names the folder. */
START_TEST(cpu_plugin_found_through_LORAKIT_PLUGIN_PATH) {
  ck_assert_int_eq(setenv("LORAKIT_PLUGIN_PATH", tu_path("plugins"), 1), 0);
  lk_context_t *ctx = NULL;
  ck_assert_int_eq(lk_context_create(NULL, &ctx), LK_OK);
  lk_plugin_info_t info;
  ck_assert_msg(find_plugin(ctx, tu_cpu_plugin(), &info) >= 0, "cpu plugin not discovered in %s",
                tu_path("plugins"));
  ck_assert_int_eq(info.status, LK_PLUGIN_LOADED);
  ck_assert_str_eq(info.id, "org.lorakit.cpu");
  ck_assert_int_eq(count_components(ctx, LK_KIND_BACKEND, "cpu"), 1);
  tu_assert_cpu_works(ctx);
  lk_context_free(ctx);
}
END_TEST

/* Refused plugins in a searched folder do not fail the context. */
START_TEST(discovery_survives_a_folder_of_broken_plugins) {
  char pathvar[8192];
  snprintf(pathvar, sizeof pathvar, "%s:%s", tu_path("plugins"), tu_path("tests/plugins"));
  ck_assert_int_eq(setenv("LORAKIT_PLUGIN_PATH", pathvar, 1), 0);
  lk_context_t *ctx = NULL;
  ck_assert_int_eq(lk_context_create(NULL, &ctx), LK_OK);
  lk_plugin_info_t info;
  ck_assert_int_ge(find_plugin(ctx, tp_file("bad-abi3"), &info), 0);
  ck_assert_int_eq(info.status, LK_PLUGIN_REFUSED);
  ck_assert_int_ge(find_plugin(ctx, tp_file("bad-init"), &info), 0);
  ck_assert_int_eq(info.status, LK_PLUGIN_REFUSED);
  ck_assert_int_ge(find_plugin(ctx, tp_file("test-count"), &info), 0);
  ck_assert_int_eq(info.status, LK_PLUGIN_LOADED);
  /* bad-dupquant (found first) took the name test_two_q: test-two is refused */
  ck_assert_int_ge(find_plugin(ctx, tp_file("test-two"), &info), 0);
  ck_assert_int_eq(info.status, LK_PLUGIN_REFUSED);
  /* the real cpu backend and test-dupcpu's variant of it */
  ck_assert_int_eq(count_components(ctx, LK_KIND_BACKEND, "cpu"), 2);
  ck_assert_int_eq(count_components(ctx, LK_KIND_BACKEND, "twin"), 0);
  tu_assert_cpu_works(ctx);
  lk_context_free(ctx);
}
END_TEST

START_TEST(no_default_plugins_ignores_LORAKIT_PLUGIN_PATH) {
  ck_assert_int_eq(setenv("LORAKIT_PLUGIN_PATH", tu_path("plugins"), 1), 0);
  lk_context_t *ctx = bare_context();
  ck_assert_uint_eq(lk_plugin_count(ctx), 0);
  lk_backend_t *be = NULL;
  ck_assert_int_eq(lk_backend_open(ctx, "cpu", 0, &be), LK_ERR_NOT_FOUND);
  lk_context_free(ctx);
}
END_TEST

/* Files that do not match lorakit-*.so are skipped quietly; one that does
 * but is not a shared object is reported. */
START_TEST(load_dir_skips_other_files_and_reports_broken_ones) {
  char dir[] = "/tmp/lk-test-plugins-XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(dir));
  char p1[4200], p2[4200], p3[4200];
  snprintf(p1, sizeof p1, "%s/README", dir);
  snprintf(p2, sizeof p2, "%s/libnotours.so", dir);
  snprintf(p3, sizeof p3, "%s/lorakit-garbage.so", dir);
  const char *files[3] = {p1, p2, p3};
  for (int i = 0; i < 3; i++) {
    FILE *f = fopen(files[i], "w");
    ck_assert_ptr_nonnull(f);
    fputs("this is not an ELF file\n", f);
    fclose(f);
  }
  lk_context_t *ctx = tu_context_with_cpu();
  (void)lk_plugin_load_dir(ctx, dir);
  ck_assert_uint_eq(lk_plugin_count(ctx), 2); /* cpu + lorakit-garbage.so */
  ck_assert_int_lt(find_plugin(ctx, p1, NULL), 0);
  ck_assert_int_lt(find_plugin(ctx, p2, NULL), 0);
  lk_plugin_info_t info;
  ck_assert_int_ge(find_plugin(ctx, p3, &info), 0);
  ck_assert_int_eq(info.status, LK_PLUGIN_REFUSED);
  assert_contains(info.reason, p3, "reason");
  tu_assert_cpu_works(ctx);
  lk_context_free(ctx);
  for (int i = 0; i < 3; i++) unlink(files[i]);
  rmdir(dir);
}
END_TEST

START_TEST(loading_the_same_plugin_twice_keeps_one_backend) {
  lk_context_t *ctx = tu_context_with_cpu();
  (void)lk_plugin_load(ctx, tu_cpu_plugin());
  ck_assert_int_eq(count_components(ctx, LK_KIND_BACKEND, "cpu"), 1);
  tu_assert_cpu_works(ctx);
  lk_context_free(ctx);
}
END_TEST

START_TEST(missing_file_is_refused_naming_it) {
  lk_context_t *ctx = tu_context_with_cpu();
  const char *path = tp_file("does-not-exist");
  lk_status st = lk_plugin_load(ctx, path);
  ck_assert_int_ne(st, LK_OK);
  assert_contains(lk_last_error(ctx), path, "last error");
  ck_assert_int_eq(lk_plugin_load(ctx, NULL), LK_ERR_INVALID_ARG);
  ck_assert_int_eq(lk_plugin_load(NULL, path), LK_ERR_INVALID_ARG);
  tu_assert_cpu_works(ctx);
  lk_context_free(ctx);
}
END_TEST

/* ---- refusals ---- */

START_TEST(refuses_plugin_without_entry_symbol) {
  const char *w[] = {"lk_plugin_entry", NULL};
  check_refused("bad-nosym", LK_ERR_PLUGIN, w, "bad_nosym_be");
}
END_TEST

START_TEST(refuses_plugin_of_a_newer_abi_major) {
  const char *w[] = {"ABI", "3.0", "2.0", "majors", NULL};
  check_refused("bad-abi3", LK_ERR_ABI, w, "bad_abi_be");
}
END_TEST

START_TEST(refuses_plugin_of_the_previous_abi_major) {
  const char *w[] = {"ABI", "1.9", "2.0", "majors", NULL};
  check_refused("bad-abi1", LK_ERR_ABI, w, "bad_abi_be");
}
END_TEST

START_TEST(refuses_descriptor_with_too_small_struct_size) {
  const char *w[] = {"struct_size", NULL};
  check_refused("bad-size", LK_ERR_ABI, w, "bad_size_be");
}
END_TEST

START_TEST(refuses_second_quantiser_of_one_name) {
  lk_context_t *ctx = tu_context_with_cpu();
  ck_assert_int_eq(lk_plugin_load(ctx, tp_file("test-two")), LK_OK);
  const char *path = tp_file("bad-dupquant");
  ck_assert_int_eq(lk_plugin_load(ctx, path), LK_ERR_EXISTS);
  lk_plugin_info_t info;
  ck_assert_int_ge(find_plugin(ctx, path, &info), 0);
  ck_assert_int_eq(info.status, LK_PLUGIN_REFUSED);
  assert_contains(info.reason, "duplicate quantiser component name 'test_two_q'", "reason");
  assert_contains(info.reason, "lorakit-test-two.so", "reason");
  ck_assert_int_eq(count_components(ctx, LK_KIND_QUANTISER, "test_two_q"), 1);
  tu_assert_cpu_works(ctx);
  lk_context_free(ctx);
}
END_TEST

START_TEST(refuses_plugin_with_two_backends_of_one_name) {
  const char *w[] = {"duplicate", "twin", NULL};
  check_refused("bad-duptwin", LK_ERR_EXISTS, w, "twin");
}
END_TEST

START_TEST(refuses_plugin_whose_init_fails) {
  const char *w[] = {"init", "device table missing", NULL};
  check_refused("bad-init", LK_ERR_PLUGIN, w, "bad_init_be");
}
END_TEST

START_TEST(refuses_plugin_whose_entry_returns_an_error) {
  const char *w[] = {"lk_plugin_entry", NULL};
  check_refused("bad-entry", LK_ERR_PLUGIN, w, NULL);
}
END_TEST

START_TEST(refuses_plugin_whose_entry_gives_no_descriptor) {
  const char *w[] = {"lk_plugin_entry", NULL};
  check_refused("bad-nullout", LK_ERR_PLUGIN, w, NULL);
}
END_TEST

START_TEST(refuses_a_file_that_is_not_a_shared_object) {
  lk_context_t *ctx = tu_context_with_cpu();
  char dir[] = "/tmp/lk-test-garbage-XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(dir));
  char path[4200];
  snprintf(path, sizeof path, "%s/lorakit-garbage.so", dir);
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  fputs("\x7f" "ELF but truncated", f);
  fclose(f);
  ck_assert_int_eq(lk_plugin_load(ctx, path), LK_ERR_PLUGIN);
  lk_plugin_info_t info;
  ck_assert_int_ge(find_plugin(ctx, path, &info), 0);
  ck_assert_int_eq(info.status, LK_PLUGIN_REFUSED);
  assert_contains(info.reason, path, "reason");
  tu_assert_cpu_works(ctx);
  lk_context_free(ctx);
  unlink(path);
  rmdir(dir);
}
END_TEST

/* ---- negotiation and components ---- */

/* A plugin of ABI 2.7 (newer minor, zero tail) loads at 2.0: the lower minor. */
START_TEST(newer_minor_loads_at_the_lower_minor) {
  lk_context_t *ctx = tu_context_with_cpu();
  const char *path = tp_file("test-minor");
  lk_status st = lk_plugin_load(ctx, path);
  ck_assert_msg(st == LK_OK, "load %s: %d %s", path, st, lk_last_error(ctx));
  lk_plugin_info_t info;
  ck_assert_int_ge(find_plugin(ctx, path, &info), 0);
  ck_assert_int_eq(info.status, LK_PLUGIN_LOADED);
  ck_assert_str_eq(info.id, "org.lorakit.test.minor");
  ck_assert_str_eq(info.version, "1.7.0");
  ck_assert_uint_eq(info.abi_version, LK_MAKE_ABI(2, 0));
  ck_assert_uint_eq(info.n_components, 1);

  lk_backend_t *be = NULL;
  ck_assert_int_eq(lk_backend_open(ctx, "test_minor", 0, &be), LK_OK);
  const tp_probe *p = lk_backend_extension(be, TP_EXT_PROBE);
  ck_assert_ptr_nonnull(p);
  ck_assert_ptr_null(lk_backend_extension(be, "test.nothing/1"));
  /* what the host handed the plugin */
  ck_assert_uint_eq(p->abi_in, LK_PLUGIN_ABI_VERSION);
  ck_assert_uint_eq(p->host_abi, LK_PLUGIN_ABI_VERSION);
  ck_assert_uint_ge(p->host_struct_size, sizeof(lk_host_api_t));
  ck_assert_int_eq(p->init_seen, 1);
  ck_assert_int_eq(p->host_fns_present, 1);
  ck_assert_uint_eq(p->convert_f16_one, 0x3C00);
  ck_assert_int_eq(p->alloc_aligned_ok, 1);
  ck_assert_int_eq(p->strerror_ok, 1);
  ck_assert_int_eq(p->get_proc_unknown_null, 1);
  lk_backend_close(be);
  tu_assert_cpu_works(ctx);
  lk_context_free(ctx);
}
END_TEST

START_TEST(plugin_with_several_components_lists_all) {
  lk_context_t *ctx = tu_context_with_cpu();
  const char *path = tp_file("test-two");
  ck_assert_int_eq(lk_plugin_load(ctx, path), LK_OK);
  lk_plugin_info_t info;
  int idx = find_plugin(ctx, path, &info);
  ck_assert_int_ge(idx, 0);
  ck_assert_int_eq(info.status, LK_PLUGIN_LOADED);
  ck_assert_uint_eq(info.n_components, 3);
  ck_assert_int_eq(count_components(ctx, LK_KIND_BACKEND, "test_two_a"), 1);
  ck_assert_int_eq(count_components(ctx, LK_KIND_BACKEND, "test_two_b"), 1);
  ck_assert_int_eq(count_components(ctx, LK_KIND_QUANTISER, "test_two_q"), 1);
  ck_assert_int_eq(count_components(ctx, LK_KIND_BACKEND, "test_two_q"), 0);
  for (uint32_t i = 0; i < lk_component_count(ctx); i++) {
    lk_component_info_t c = {sizeof c, 0, NULL, NULL, 0, 0};
    ck_assert_int_eq(lk_component_info(ctx, i, &c), LK_OK);
    if (strncmp(c.name, "test_two_", 9) == 0) ck_assert_uint_eq(c.plugin_index, (uint32_t)idx);
  }
  lk_backend_t *a = NULL, *b = NULL;
  ck_assert_int_eq(lk_backend_open(ctx, "test_two_a", 0, &a), LK_OK);
  ck_assert_int_eq(lk_backend_open(ctx, "test_two_b", 0, &b), LK_OK);
  ck_assert_str_eq(lk_backend_name(a), "test_two_a");
  ck_assert_str_eq(lk_backend_name(b), "test_two_b");
  lk_backend_close(a);
  lk_backend_close(b);
  tu_assert_cpu_works(ctx);
  lk_context_free(ctx);
}
END_TEST

/* ---- init/fini reference counting ---- */

static const tp_counters *counters_of(lk_context_t *ctx) {
  lk_backend_t *be = NULL;
  ck_assert_int_eq(lk_backend_open(ctx, "test_count", 0, &be), LK_OK);
  const tp_counters *c = lk_backend_extension(be, TP_EXT_COUNTERS);
  lk_backend_close(be);
  ck_assert_ptr_nonnull(c);
  return c;
}

START_TEST(init_and_fini_are_reference_counted_across_contexts) {
  const char *path = tp_file("test-count");
  /* Keep the object mapped ourselves, so the counters stay readable even if
   * the library unloads it once no context uses it. */
  void *pin = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  ck_assert_msg(pin != NULL, "dlopen %s: %s", path, dlerror());

  lk_context_t *c1 = bare_context(), *c2 = bare_context();
  ck_assert_int_eq(lk_plugin_load(c1, path), LK_OK);
  const tp_counters *c = counters_of(c1);
  ck_assert_int_eq(c->real_inits, 1);
  ck_assert_int_eq(c->refs, c->init_calls);
  ck_assert_int_eq(lk_plugin_load(c2, path), LK_OK);
  ck_assert_int_eq(c->real_inits, 1);
  ck_assert_int_ge(c->refs, 1);
  ck_assert_int_eq(c->real_finis, 0);

  lk_context_free(c1);
  ck_assert_msg(c->refs >= 1 && c->real_finis == 0,
                "after freeing one of two contexts: refs %d, real finis %d", c->refs,
                c->real_finis);
  lk_backend_t *be = NULL;
  ck_assert_int_eq(lk_backend_open(c2, "test_count", 0, &be), LK_OK); /* still usable */
  lk_backend_close(be);

  lk_context_free(c2);
  ck_assert_int_eq(c->real_inits, 1);
  ck_assert_int_eq(c->real_finis, 1);
  ck_assert_int_eq(c->refs, 0);
  ck_assert_msg(c->fini_calls == c->init_calls, "%d init calls but %d fini calls",
                c->init_calls, c->fini_calls);
  ck_assert_int_eq(c->extra_finis, 0);
  dlclose(pin);
}
END_TEST

/* A plugin refused after its entry ran (a duplicate of the cpu backend) is
 * left as it was found: every init the host made was undone by a fini. Its
 * counters are read by calling the entry of the same mapped object. */
START_TEST(refused_plugin_is_left_finalised) {
  lk_context_t *ctx = tu_context_with_cpu();
  const char *path = tp_file("bad-dupcount");
  ck_assert_int_eq(lk_plugin_load(ctx, path), LK_ERR_EXISTS);
  tu_assert_cpu_works(ctx);

  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL); /* the same object the host mapped */
  ck_assert_msg(h != NULL, "dlopen %s: %s", path, dlerror());
  lk_plugin_entry_fn entry = (lk_plugin_entry_fn)(uintptr_t)dlsym(h, LK_PLUGIN_ENTRY_SYMBOL);
  ck_assert_ptr_nonnull((void *)(uintptr_t)entry);
  uint32_t abi = LK_PLUGIN_ABI_VERSION;
  const lk_plugin_t *pl = NULL;
  ck_assert_int_eq(entry(&abi, NULL, &pl), LK_OK);
  const lk_backend_factory_t *f = pl->get_factory(LK_FACTORY_BACKEND);
  ck_assert_ptr_nonnull(f);
  const lk_backend_vt_t *vt = f->get(0);
  void *self = NULL;
  lk_error_t err = {sizeof err, 0, ""};
  ck_assert_int_eq(vt->create(NULL, &self, &err), LK_OK);
  const tp_counters *c = vt->get_extension(self, TP_EXT_COUNTERS);
  ck_assert_ptr_nonnull(c);
  ck_assert_msg(c->entry_calls >= 2, "the host never called the entry (%d calls)",
                c->entry_calls);
  ck_assert_msg(c->refs == 0 && c->init_calls == c->fini_calls,
                "refused plugin left initialised: %d init calls, %d fini calls", c->init_calls,
                c->fini_calls);
  vt->destroy(self);
  lk_context_free(ctx);
  dlclose(h);
}
END_TEST

static Suite *plugins_suite(void) {
  Suite *s = suite_create("plugins");
  TCase *tc = tcase_create("cpu");
  tcase_add_test(tc, cpu_plugin_loads_by_explicit_path);
  tcase_add_test(tc, cpu_plugin_lists_its_backend);
  tcase_add_test(tc, cpu_backend_reports_a_cpu_device);
  tcase_add_test(tc, cpu_plugin_found_through_LORAKIT_PLUGIN_PATH);
  tcase_add_test(tc, discovery_survives_a_folder_of_broken_plugins);
  tcase_add_test(tc, no_default_plugins_ignores_LORAKIT_PLUGIN_PATH);
  tcase_add_test(tc, load_dir_skips_other_files_and_reports_broken_ones);
  tcase_add_test(tc, loading_the_same_plugin_twice_keeps_one_backend);
  tcase_add_test(tc, missing_file_is_refused_naming_it);
  suite_add_tcase(s, tc);
  tc = tcase_create("refusals");
  tcase_add_test(tc, refuses_plugin_without_entry_symbol);
  tcase_add_test(tc, refuses_plugin_of_a_newer_abi_major);
  tcase_add_test(tc, refuses_plugin_of_the_previous_abi_major);
  tcase_add_test(tc, refuses_descriptor_with_too_small_struct_size);
  tcase_add_test(tc, refuses_second_quantiser_of_one_name);
  tcase_add_test(tc, refuses_plugin_with_two_backends_of_one_name);
  tcase_add_test(tc, refuses_plugin_whose_init_fails);
  tcase_add_test(tc, refuses_plugin_whose_entry_returns_an_error);
  tcase_add_test(tc, refuses_plugin_whose_entry_gives_no_descriptor);
  tcase_add_test(tc, refuses_a_file_that_is_not_a_shared_object);
  suite_add_tcase(s, tc);
  tc = tcase_create("negotiation");
  tcase_add_test(tc, newer_minor_loads_at_the_lower_minor);
  tcase_add_test(tc, plugin_with_several_components_lists_all);
  tcase_add_test(tc, init_and_fini_are_reference_counted_across_contexts);
  tcase_add_test(tc, refused_plugin_is_left_finalised);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  /* Start from a clean environment: tests set LORAKIT_PLUGIN_PATH themselves
   * (each runs in its own forked process). */
  unsetenv("LORAKIT_PLUGIN_PATH");
  return tu_run(plugins_suite());
}
