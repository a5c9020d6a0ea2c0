/* test_registry.c - the registry's API on in-memory adapters (no plugins, no
 * fixtures): version numbering, byte-exact round trips, deduplication,
 * canonical form, tags, lineage on a diamond, refusals that write nothing,
 * removal and gc, diff against a naive computation, options and paths; and
 * the CLI cases of tests/registry_cases.sh. File-level behaviour
 * (concurrency, crashes, corruption, migration, fixtures) is in
 * test_registry_files.c. */
#include "test_registry.h"

/* ---- versions, round trips, content ------------------------------------------- */

START_TEST(versions_number_one_to_n_per_name) {
  lk_context_t *ctx = rg_ctx();
  lk_registry_t *reg = rg_open(ctx, "r.db");
  for (int i = 1; i <= 5; i++) {
    lk_adapter_t *ad = rg_adapter(ctx, (uint64_t)i, LK_SCALING_STANDARD);
    char want[32];
    snprintf(want, sizeof want, "a@%d", i);
    ck_assert_str_eq(rg_add(reg, ctx, "a", ad, NULL), want);
    lk_adapter_free(ad);
  }
  lk_adapter_t *ad = rg_adapter(ctx, 99, LK_SCALING_STANDARD);
  ck_assert_str_eq(rg_add(reg, ctx, "b", ad, NULL), "b@1");
  lk_adapter_free(ad);
  json_t *l = rg_list(reg, "a");
  ck_assert_uint_eq(json_array_size(l), 5);
  for (size_t i = 0; i < 5; i++) ck_assert_int_eq(rg_int(json_array_get(l, i), "version"), (long long)i + 1);
  json_decref(l);
  char *ref = NULL;
  ck_assert_int_eq(lk_registry_resolve(reg, "a", &ref), LK_OK);
  ck_assert_str_eq(ref, "a@5");
  lk_free(ref);
  lk_registry_close(reg);
  lk_context_free(ctx);
}
END_TEST

START_TEST(get_gives_back_the_same_bytes) {
  lk_context_t *ctx = rg_ctx();
  lk_registry_t *reg = rg_open(ctx, "r.db");
  int32_t rules[2] = {LK_SCALING_STANDARD, LK_SCALING_RSLORA};
  for (int k = 0; k < 2; k++) {
    lk_adapter_t *ad = rg_adapter(ctx, 7 + (uint64_t)k, rules[k]), *back = NULL;
    const char *ref = rg_add(reg, ctx, "rt", ad, NULL);
    lk_status st = lk_registry_get(reg, ref, &back);
    ck_assert_msg(st == LK_OK, "get %s: %s", ref, lk_last_error(ctx));
    rg_assert_same_adapter(ad, back);
    /* the per-target rank/alpha of v_proj (2, 3) is kept; the defaults are
     * those most targets share (tie: first by name, q_proj: 4, 8) */
    lk_lora_config_t c = {sizeof c, 0, 0, 0, 0};
    lk_adapter_config(back, &c);
    ck_assert_uint_eq(c.rank, 4);
    ck_assert(c.alpha == 8.0f);
    lk_adapter_free(ad);
    lk_adapter_free(back);
  }
  lk_registry_close(reg);
  lk_context_free(ctx);
}
END_TEST

START_TEST(same_adapter_twice_stores_one_payload) {
  lk_context_t *ctx = rg_ctx();
  lk_registry_t *reg = rg_open(ctx, "r.db");
  lk_adapter_t *ad = rg_adapter(ctx, 1, LK_SCALING_STANDARD), *other = rg_adapter(ctx, 2, LK_SCALING_STANDARD);
  rg_add(reg, ctx, "x", ad, NULL);
  rg_add(reg, ctx, "x", ad, NULL);
  rg_add(reg, ctx, "y", ad, NULL);
  json_t *v = rg_verify(reg, LK_OK);
  ck_assert_int_eq(rg_int(v, "versions"), 3);
  ck_assert_int_eq(rg_int(v, "blobs"), 1);
  json_decref(v);
  rg_add(reg, ctx, "x", other, NULL);
  v = rg_verify(reg, LK_OK);
  ck_assert_int_eq(rg_int(v, "blobs"), 2);
  json_decref(v);
  /* reuse_existing hands back the version that holds the content */
  lk_registry_add_opts_t o = rg_opts();
  o.reuse_existing = 1;
  ck_assert_str_eq(rg_add(reg, ctx, "z", ad, &o), "y@1");
  json_t *l = rg_list(reg, "z");
  ck_assert_uint_eq(json_array_size(l), 0);
  json_decref(l);
  lk_adapter_free(ad);
  lk_adapter_free(other);
  lk_registry_close(reg);
  lk_context_free(ctx);
}
END_TEST

/* The canonical bytes sort targets by name: insertion order does not matter. */
START_TEST(target_order_does_not_change_the_hash) {
  lk_context_t *ctx = rg_ctx();
  lk_registry_t *reg = rg_open(ctx, "r.db");
  lk_adapter_t *a = rg_adapter(ctx, 5, LK_SCALING_STANDARD), *b = NULL;
  lk_lora_config_t c = {sizeof c, 4, 8.0f, LK_SCALING_STANDARD, 0};
  ck_assert_int_eq(lk_adapter_create(ctx, &c, &b), LK_OK);
  for (int i = 1; i >= 0; i--) { /* v_proj first this time */
    lk_target_info_t ti = {sizeof ti, 0, NULL, 0, 0, 0, 0};
    lk_adapter_target_info(a, (uint32_t)i, &ti);
    ck_assert_int_eq(lk_adapter_add_target(b, ti.name, ti.in_features, ti.out_features, ti.rank, ti.alpha), LK_OK);
    lk_tensor_t A1, B1, A2, B2;
    lk_adapter_weights(a, (uint32_t)i, &A1, &B1);
    lk_adapter_weights(b, lk_adapter_target_count(b) - 1, &A2, &B2);
    memcpy(A2.data, A1.data, A1.nbytes);
    memcpy(B2.data, B1.data, B1.nbytes);
  }
  rg_add(reg, ctx, "p", a, NULL);
  rg_add(reg, ctx, "q", b, NULL);
  json_t *lp = rg_list(reg, "p"), *lq = rg_list(reg, "q");
  ck_assert_str_eq(rg_str(json_array_get(lp, 0), "sha256"), rg_str(json_array_get(lq, 0), "sha256"));
  ck_assert_uint_eq(strlen(rg_str(json_array_get(lp, 0), "sha256")), 64);
  json_decref(lp);
  json_decref(lq);
  lk_adapter_free(a);
  lk_adapter_free(b);
  lk_registry_close(reg);
  lk_context_free(ctx);
}
END_TEST

START_TEST(list_records_what_was_added) {
  lk_context_t *ctx = rg_ctx();
  lk_registry_t *reg = rg_open(ctx, "r.db");
  lk_adapter_t *ad = rg_adapter(ctx, 3, LK_SCALING_RSLORA);
  lk_registry_add_opts_t o = rg_opts();
  o.notes = "first try";
  o.operation = "train";
  rg_add(reg, ctx, "n", ad, &o);
  json_t *l = rg_list(reg, "n"), *v = json_array_get(l, 0);
  ck_assert_str_eq(rg_str(v, "ref"), "n@1");
  ck_assert_str_eq(rg_str(v, "notes"), "first try");
  ck_assert_str_eq(rg_str(v, "operation"), "train");
  ck_assert_str_eq(rg_str(v, "format"), "memory");
  ck_assert_str_eq(rg_str(v, "scaling"), "alpha/sqrt(r)");
  ck_assert_int_eq(rg_int(v, "rank"), 4);
  ck_assert_int_eq(rg_int(v, "n_targets"), 2);
  ck_assert_int_eq(rg_int(v, "size"), 8 + 8 + 2 * (4 + 31 + 24) + 4 * (4 * (16 + 24) + 2 * (16 + 8)));
  ck_assert_uint_eq(strlen(rg_str(v, "created")), 20);
  json_t *tm = json_object_get(v, "target_modules");
  ck_assert_str_eq(json_string_value(json_array_get(tm, 0)), "q_proj");
  ck_assert_str_eq(json_string_value(json_array_get(tm, 1)), "v_proj");
  json_decref(l);
  char *s = NULL;
  ck_assert_int_eq(lk_registry_show(reg, "n", &s), LK_OK);
  json_t *sh = rg_json(s), *t = json_array_get(json_object_get(sh, "targets"), 1);
  ck_assert_str_eq(rg_str(t, "name"), "model.layers.0.self_attn.v_proj");
  ck_assert_int_eq(rg_int(t, "rank"), 2);
  ck_assert_int_eq(rg_int(t, "out"), 8);
  json_decref(sh);
  lk_adapter_free(ad);
  lk_registry_close(reg);
  lk_context_free(ctx);
}
END_TEST

/* ---- tags ------------------------------------------------------------------------- */

static void assert_resolves(lk_registry_t *reg, const char *ref, const char *want) {
  char *got = NULL;
  lk_status st = lk_registry_resolve(reg, ref, &got);
  ck_assert_msg(st == LK_OK, "resolve %s: %d", ref, st);
  ck_assert_str_eq(got, want);
  lk_free(got);
}

START_TEST(tags_move_and_latest_follows_the_newest) {
  lk_context_t *ctx = rg_ctx();
  lk_registry_t *reg = rg_open(ctx, "r.db");
  for (uint64_t i = 1; i <= 2; i++) {
    lk_adapter_t *ad = rg_adapter(ctx, i, LK_SCALING_STANDARD);
    rg_add(reg, ctx, "t", ad, NULL);
    lk_adapter_free(ad);
  }
  ck_assert_int_eq(lk_registry_tag(reg, "t@1", "prod"), LK_OK);
  assert_resolves(reg, "t:prod", "t@1");
  assert_resolves(reg, "t:latest", "t@2");
  ck_assert_int_eq(lk_registry_tag(reg, "t@2", "prod"), LK_OK);
  assert_resolves(reg, "t:prod", "t@2");
  ck_assert_int_eq(lk_registry_tag(reg, "t:prod", "dev"), LK_OK);
  lk_adapter_t *ad = rg_adapter(ctx, 3, LK_SCALING_STANDARD);
  rg_add(reg, ctx, "t", ad, NULL);
  lk_adapter_free(ad);
  assert_resolves(reg, "t", "t@3");
  assert_resolves(reg, "t:latest", "t@3");
  assert_resolves(reg, "t:prod", "t@2");
  /* only t@2 carries prod; tags are listed with latest first */
  lk_registry_list_opts_t lo;
  memset(&lo, 0, sizeof lo);
  lo.struct_size = sizeof lo;
  lo.tag = "prod";
  char *s = NULL;
  ck_assert_int_eq(lk_registry_list(reg, &lo, &s), LK_OK);
  json_t *l = rg_json(s);
  ck_assert_uint_eq(json_array_size(l), 1);
  json_t *tags = json_object_get(json_array_get(l, 0), "tags");
  ck_assert_uint_eq(json_array_size(tags), 2);
  ck_assert_str_eq(json_string_value(json_array_get(tags, 0)), "dev");
  ck_assert_str_eq(json_string_value(json_array_get(tags, 1)), "prod");
  json_decref(l);
  ck_assert_int_eq(lk_registry_tag(reg, "t@1", "latest"), LK_ERR_INVALID_ARG);
  ck_assert_int_eq(lk_registry_untag(reg, "t", "latest"), LK_ERR_INVALID_ARG);
  ck_assert_int_eq(lk_registry_untag(reg, "t", "prod"), LK_OK);
  ck_assert_int_eq(lk_registry_resolve(reg, "t:prod", &s), LK_ERR_NOT_FOUND);
  ck_assert_ptr_nonnull(strstr(lk_last_error(ctx), "dev"));
  ck_assert_int_eq(lk_registry_untag(reg, "t", "prod"), LK_ERR_NOT_FOUND);
  lk_registry_close(reg);
  lk_context_free(ctx);
}
END_TEST

/* ---- lineage ---------------------------------------------------------------------------- */

/*      top@1
 *     /     \
 *  left@1  right@1
 *     \     /
 *     bottom@1   -> and below it, tail@1 (trained_from bottom) */
static lk_registry_t *diamond(lk_context_t *ctx) {
  lk_registry_t *reg = rg_open(ctx, "r.db");
  const char *names[] = {"top", "left", "right", "bottom", "tail"};
  const char *p_left[] = {"top@1"}, *p_bottom[] = {"left@1", "right@1"}, *p_tail[] = {"bottom"};
  const char *const *parents[] = {NULL, p_left, p_left, p_bottom, p_tail};
  uint32_t np[] = {0, 1, 1, 2, 1};
  int32_t rel[] = {0, LK_REL_TRAINED_FROM, LK_REL_EXTRACTED_FROM, LK_REL_COMBINED_FROM, LK_REL_TRAINED_FROM};
  for (int i = 0; i < 5; i++) {
    lk_adapter_t *ad = rg_adapter(ctx, 100 + (uint64_t)i, LK_SCALING_STANDARD);
    lk_registry_add_opts_t o = rg_opts();
    o.parents = parents[i];
    o.n_parents = np[i];
    o.relation = rel[i];
    if (i == 3) o.params_json = "{\"method\":\"svd\",\"weights\":[0.5,0.5]}";
    rg_add(reg, ctx, names[i], ad, &o);
    lk_adapter_free(ad);
  }
  return reg;
}

static json_t *lineage(lk_registry_t *reg, const char *ref, int32_t dir, uint32_t depth) {
  lk_registry_lineage_opts_t o = {sizeof o, dir, depth, 0};
  char *s = NULL;
  ck_assert_int_eq(lk_registry_lineage(reg, ref, &o, &s), LK_OK);
  return rg_json(s);
}

/* depth of ref in g, or 99 when absent. */
static long long depth_of(json_t *g, const char *ref) {
  size_t i;
  json_t *n;
  json_array_foreach(json_object_get(g, "nodes"), i, n) if (!strcmp(rg_str(n, "ref"), ref)) return rg_int(n, "depth");
  return 99;
}

START_TEST(lineage_of_a_diamond_to_any_depth) {
  lk_context_t *ctx = rg_ctx();
  lk_registry_t *reg = diamond(ctx);
  json_t *up = lineage(reg, "tail", LK_LINEAGE_UP, 0);
  ck_assert_uint_eq(json_array_size(json_object_get(up, "nodes")), 5);
  ck_assert_uint_eq(json_array_size(json_object_get(up, "edges")), 5);
  ck_assert_int_eq(depth_of(up, "tail@1"), 0);
  ck_assert_int_eq(depth_of(up, "bottom@1"), -1);
  ck_assert_int_eq(depth_of(up, "left@1"), -2);
  ck_assert_int_eq(depth_of(up, "right@1"), -2);
  ck_assert_int_eq(depth_of(up, "top@1"), -3); /* once, though reached twice */
  json_decref(up);
  json_t *down = lineage(reg, "top@1", LK_LINEAGE_DOWN, 0);
  ck_assert_uint_eq(json_array_size(json_object_get(down, "nodes")), 5);
  ck_assert_int_eq(depth_of(down, "bottom@1"), 2);
  ck_assert_int_eq(depth_of(down, "tail@1"), 3);
  json_decref(down);
  json_t *mid = lineage(reg, "left", LK_LINEAGE_BOTH, 0); /* top above; bottom, tail below; not right */
  ck_assert_uint_eq(json_array_size(json_object_get(mid, "nodes")), 4);
  ck_assert_int_eq(depth_of(mid, "top@1"), -1);
  ck_assert_int_eq(depth_of(mid, "tail@1"), 2);
  ck_assert_int_eq(depth_of(mid, "right@1"), 99);
  json_decref(mid);
  json_t *near = lineage(reg, "tail@1", LK_LINEAGE_UP, 2);
  ck_assert_uint_eq(json_array_size(json_object_get(near, "nodes")), 4);
  ck_assert_int_eq(depth_of(near, "top@1"), 99);
  json_decref(near);
  /* the relation and its parameters are on the edges */
  char *s = NULL;
  ck_assert_int_eq(lk_registry_show(reg, "bottom", &s), LK_OK);
  json_t *b = rg_json(s), *p = json_array_get(json_object_get(b, "parents"), 0);
  ck_assert_str_eq(rg_str(p, "relation"), "combined_from");
  ck_assert_str_eq(rg_str(json_object_get(p, "params"), "method"), "svd");
  ck_assert_uint_eq(json_array_size(json_object_get(b, "children")), 1);
  json_decref(b);
  lk_registry_close(reg);
  lk_context_free(ctx);
}
END_TEST

START_TEST(a_cycle_is_refused_and_nothing_written) {
  lk_context_t *ctx = rg_ctx();
  lk_registry_t *reg = diamond(ctx);
  ck_assert_int_eq(lk_registry_link(reg, "top@1", "tail@1", LK_REL_MERGED_FROM, NULL), LK_ERR_INVALID_ARG);
  ck_assert_ptr_nonnull(strstr(lk_last_error(ctx), "cycle"));
  ck_assert_int_eq(lk_registry_link(reg, "left@1", "left@1", LK_REL_MERGED_FROM, NULL), LK_ERR_INVALID_ARG);
  ck_assert_int_eq(lk_registry_link(reg, "left@1", "top@1", LK_REL_MERGED_FROM, NULL), LK_ERR_EXISTS);
  json_t *up = lineage(reg, "top@1", LK_LINEAGE_UP, 0);
  ck_assert_uint_eq(json_array_size(json_object_get(up, "edges")), 0);
  json_decref(up);
  /* a legitimate late edge is accepted */
  ck_assert_int_eq(lk_registry_link(reg, "right@1", "left@1", LK_REL_QUANTIZED_FROM, "{\"to\":\"nf4\"}"), LK_OK);
  up = lineage(reg, "right@1", LK_LINEAGE_UP, 0); /* right -> top, right -> left, left -> top */
  ck_assert_uint_eq(json_array_size(json_object_get(up, "edges")), 3);
  ck_assert_uint_eq(json_array_size(json_object_get(up, "nodes")), 3);
  json_decref(up);
  lk_registry_close(reg);
  lk_context_free(ctx);
}
END_TEST

/* ---- refusals ------------------------------------------------------------------------------ */

START_TEST(bad_input_is_refused_and_nothing_written) {
  lk_context_t *ctx = rg_ctx();
  lk_registry_t *reg = rg_open(ctx, "r.db");
  lk_adapter_t *ad = rg_adapter(ctx, 1, LK_SCALING_STANDARD);
  rg_add(reg, ctx, "ok", ad, NULL);
  static const char *const bad_names[] = {"a@b", "a:b", "", "-x", "sp ace", "tab\t"};
  for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
    ck_assert_int_eq(lk_registry_add_adapter(reg, bad_names[i], ad, NULL, NULL), LK_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(lk_last_error(ctx), "not valid"));
  }
  char *s = NULL;
  static const char *const bad_refs[] = {"ok@", "ok@0", "ok@x", "ok@-1", "@1", "", "ok:", "ok:a b"};
  for (size_t i = 0; i < sizeof bad_refs / sizeof bad_refs[0]; i++)
    ck_assert_msg(lk_registry_resolve(reg, bad_refs[i], &s) == LK_ERR_INVALID_ARG, "ref '%s' accepted", bad_refs[i]);
  ck_assert_int_eq(lk_registry_resolve(reg, "nope", &s), LK_ERR_NOT_FOUND);
  ck_assert_ptr_nonnull(strstr(lk_last_error(ctx), "nope"));
  ck_assert_int_eq(lk_registry_resolve(reg, "ok@7", &s), LK_ERR_NOT_FOUND);
  ck_assert_ptr_nonnull(strstr(lk_last_error(ctx), "its versions: 1"));
  lk_adapter_t *got = NULL;
  ck_assert_int_eq(lk_registry_get(reg, "nope@1", &got), LK_ERR_NOT_FOUND);
  ck_assert_ptr_null(got);
  /* a parent that does not exist: nothing written, not even the name */
  const char *parents[] = {"ok@1", "ghost@3"};
  lk_registry_add_opts_t o = rg_opts();
  o.parents = parents;
  o.n_parents = 2;
  o.relation = LK_REL_TRAINED_FROM;
  ck_assert_int_eq(lk_registry_add_adapter(reg, "child", ad, &o, NULL), LK_ERR_NOT_FOUND);
  ck_assert_ptr_nonnull(strstr(lk_last_error(ctx), "ghost"));
  o.n_parents = 1;
  o.relation = LK_REL_NONE; /* parents need a relation */
  ck_assert_int_eq(lk_registry_add_adapter(reg, "child", ad, &o, NULL), LK_ERR_INVALID_ARG);
  o.relation = 77;
  ck_assert_int_eq(lk_registry_add_adapter(reg, "child", ad, &o, NULL), LK_ERR_INVALID_ARG);
  o.relation = LK_REL_TRAINED_FROM;
  o.params_json = "[1,2]";
  ck_assert_int_eq(lk_registry_add_adapter(reg, "child", ad, &o, NULL), LK_ERR_INVALID_ARG);
  o.params_json = NULL;
  o.base = "no-such-model";
  ck_assert_int_eq(lk_registry_add_adapter(reg, "child", ad, &o, NULL), LK_ERR_NOT_FOUND);
  lk_adapter_t *empty = NULL;
  lk_lora_config_t c = {sizeof c, 4, 8.0f, LK_SCALING_STANDARD, 0};
  lk_adapter_create(ctx, &c, &empty);
  ck_assert_int_eq(lk_registry_add_adapter(reg, "child", empty, NULL, NULL), LK_ERR_INVALID_ARG);
  lk_adapter_free(empty);
  json_t *v = rg_verify(reg, LK_OK);
  ck_assert_int_eq(rg_int(v, "versions"), 1);
  ck_assert_int_eq(rg_int(v, "blobs"), 1);
  json_decref(v);
  json_t *l = rg_list(reg, NULL);
  ck_assert_uint_eq(json_array_size(l), 1);
  json_decref(l);
  /* the name "child" was never taken: its first version is 1 */
  ck_assert_str_eq(rg_add(reg, ctx, "child", ad, NULL), "child@1");
  lk_adapter_free(ad);
  lk_registry_close(reg);
  lk_context_free(ctx);
}
END_TEST

START_TEST(remove_is_refused_while_needed_and_numbers_are_not_reused) {
  lk_context_t *ctx = rg_ctx();
  lk_registry_t *reg = diamond(ctx);
  ck_assert_int_eq(lk_registry_tag(reg, "tail@1", "prod"), LK_OK);
  ck_assert_int_eq(lk_registry_remove(reg, "left@1", 0), LK_ERR_STATE);
  ck_assert_ptr_nonnull(strstr(lk_last_error(ctx), "bottom@1"));
  ck_assert_int_eq(lk_registry_remove(reg, "tail@1", 0), LK_ERR_STATE);
  ck_assert_ptr_nonnull(strstr(lk_last_error(ctx), "prod"));
  ck_assert_int_eq(lk_registry_remove(reg, "tail@1", 1), LK_OK);
  ck_assert_int_eq(lk_registry_remove(reg, "left@1", 1), LK_OK);
  json_t *up = lineage(reg, "bottom", LK_LINEAGE_UP, 0);
  ck_assert_uint_eq(json_array_size(json_object_get(up, "nodes")), 3); /* bottom, right, top */
  json_decref(up);
  char *s = NULL;
  ck_assert_int_eq(lk_registry_resolve(reg, "tail", &s), LK_ERR_NOT_FOUND);
  lk_adapter_t *ad = rg_adapter(ctx, 555, LK_SCALING_STANDARD);
  ck_assert_str_eq(rg_add(reg, ctx, "tail", ad, NULL), "tail@2");
  lk_adapter_free(ad);
  json_t *v = rg_verify(reg, LK_OK);
  ck_assert_int_eq(rg_int(v, "unreferenced_blobs"), 2);
  json_decref(v);
  ck_assert_int_eq(lk_registry_gc(reg, &s), LK_OK);
  json_t *g = rg_json(s);
  ck_assert_int_eq(rg_int(g, "blobs_removed"), 2);
  ck_assert_int_gt(rg_int(g, "bytes_freed"), 0);
  json_decref(g);
  v = rg_verify(reg, LK_OK);
  ck_assert_int_eq(rg_int(v, "blobs"), 4);
  ck_assert_int_eq(rg_int(v, "unreferenced_blobs"), 0);
  json_decref(v);
  lk_registry_close(reg);
  lk_context_free(ctx);
}
END_TEST

/* ---- diff ------------------------------------------------------------------------------------- */

/* |s B A|_F for one target, and |s1 B1 A1 - s2 B2 A2|_F, by forming the
 * products naively in double. */
static double naive_norm(lk_adapter_t *a, lk_adapter_t *b, uint32_t t) {
  lk_target_info_t ta = {sizeof ta, 0, NULL, 0, 0, 0, 0}, tb = ta;
  lk_adapter_target_info(a, t, &ta);
  lk_tensor_t A1, B1, A2, B2;
  lk_adapter_weights(a, t, &A1, &B1);
  if (b) {
    lk_adapter_target_info(b, t, &tb);
    lk_adapter_weights(b, t, &A2, &B2);
  }
  double sum = 0;
  for (int64_t i = 0; i < ta.out_features; i++)
    for (int64_t j = 0; j < ta.in_features; j++) {
      double w = 0;
      for (uint32_t k = 0; k < ta.rank; k++) w += (double)ta.scale * ((float *)B1.data)[i * ta.rank + k] * ((float *)A1.data)[k * ta.in_features + j];
      for (uint32_t k = 0; b && k < tb.rank; k++) w -= (double)tb.scale * ((float *)B2.data)[i * tb.rank + k] * ((float *)A2.data)[k * tb.in_features + j];
      sum += w * w;
    }
  return sqrt(sum);
}

START_TEST(diff_matches_a_naive_computation) {
  lk_context_t *ctx = rg_ctx();
  lk_registry_t *reg = rg_open(ctx, "r.db");
  lk_adapter_t *a = rg_adapter(ctx, 11, LK_SCALING_STANDARD), *b = rg_adapter(ctx, 12, LK_SCALING_STANDARD);
  rg_add(reg, ctx, "d", a, NULL);
  rg_add(reg, ctx, "d", b, NULL);
  char *s = NULL;
  ck_assert_int_eq(lk_registry_diff(reg, "d@1", "d@2", &s), LK_OK);
  json_t *d = rg_json(s);
  ck_assert(json_is_false(json_object_get(d, "same_content")));
  /* targets are in name order: q_proj (index 0 in the adapters), v_proj (1) */
  for (uint32_t t = 0; t < 2; t++) {
    json_t *row = json_array_get(json_object_get(d, "targets"), t);
    double na = naive_norm(a, NULL, t), nd = naive_norm(a, b, t);
    double got_a = json_number_value(json_object_get(row, "norm_a")), got_d = json_number_value(json_object_get(row, "diff"));
    ck_assert_msg(fabs(got_a - na) <= 1e-9 * na, "target %u |a| %.12g vs naive %.12g", t, got_a, na);
    ck_assert_msg(fabs(got_d - nd) <= 1e-7 * nd, "target %u |a-b| %.12g vs naive %.12g", t, got_d, nd);
    ck_assert(fabs(json_number_value(json_object_get(row, "rel")) - nd / na) <= 1e-7 * (nd / na));
  }
  json_decref(d);
  /* B doubled: |2 s B A - s B A| / |s B A| = 1 exactly; alpha shows as a difference */
  lk_adapter_t *c = rg_adapter(ctx, 11, LK_SCALING_STANDARD);
  for (uint32_t t = 0; t < 2; t++) {
    lk_tensor_t B;
    lk_adapter_weights(c, t, NULL, &B);
    for (int64_t i = 0; i < lk_tensor_numel(&B); i++) ((float *)B.data)[i] *= 2;
  }
  rg_add(reg, ctx, "d", c, NULL);
  ck_assert_int_eq(lk_registry_diff(reg, "d@1", "d@3", &s), LK_OK);
  d = rg_json(s);
  ck_assert(fabs(json_number_value(json_object_get(json_object_get(d, "total"), "rel")) - 1.0) < 1e-9);
  json_decref(d);
  ck_assert_int_eq(lk_registry_diff(reg, "d@1", "d@1", &s), LK_OK);
  d = rg_json(s);
  ck_assert(json_is_true(json_object_get(d, "same_content")));
  ck_assert(json_number_value(json_object_get(json_object_get(d, "total"), "rel")) == 0.0);
  ck_assert_uint_eq(json_array_size(json_object_get(d, "config")), 0);
  json_decref(d);
  lk_adapter_free(a);
  lk_adapter_free(b);
  lk_adapter_free(c);
  lk_registry_close(reg);
  lk_context_free(ctx);
}
END_TEST

START_TEST(diff_names_config_differences_and_missing_targets) {
  lk_context_t *ctx = rg_ctx();
  lk_registry_t *reg = rg_open(ctx, "r.db");
  lk_adapter_t *a = rg_adapter(ctx, 1, LK_SCALING_STANDARD), *b = NULL;
  lk_lora_config_t c = {sizeof c, 8, 16.0f, LK_SCALING_RSLORA, 0};
  lk_adapter_create(ctx, &c, &b);
  lk_adapter_add_target(b, "model.layers.0.self_attn.q_proj", 16, 24, 0, 0);
  lk_adapter_add_target(b, "model.layers.0.self_attn.k_proj", 16, 8, 0, 0);
  rg_add(reg, ctx, "e", a, NULL);
  rg_add(reg, ctx, "e", b, NULL);
  char *s = NULL;
  ck_assert_int_eq(lk_registry_diff(reg, "e@1", "e@2", &s), LK_OK);
  json_t *d = rg_json(s);
  char *dump = json_dumps(d, JSON_COMPACT);
  ck_assert_msg(strstr(dump, "\"field\":\"scaling\""), "%s", dump);
  ck_assert_msg(strstr(dump, "\"field\":\"rank\""), "%s", dump);
  ck_assert_str_eq(json_string_value(json_array_get(json_object_get(d, "only_in_a"), 0)), "model.layers.0.self_attn.v_proj");
  ck_assert_str_eq(json_string_value(json_array_get(json_object_get(d, "only_in_b"), 0)), "model.layers.0.self_attn.k_proj");
  ck_assert_uint_eq(json_array_size(json_object_get(d, "targets")), 1);
  free(dump);
  json_decref(d);
  lk_adapter_free(a);
  lk_adapter_free(b);
  lk_registry_close(reg);
  lk_context_free(ctx);
}
END_TEST

/* ---- options, paths, names ---------------------------------------------------------------------- */

START_TEST(options_structs_follow_the_size_rule) {
  lk_context_t *ctx = rg_ctx();
  lk_registry_t *reg = rg_open(ctx, "r.db");
  lk_adapter_t *ad = rg_adapter(ctx, 1, LK_SCALING_STANDARD);
  struct {
    lk_registry_add_opts_t o;
    uint64_t future;
  } big;
  memset(&big, 0, sizeof big);
  big.o.struct_size = sizeof big;
  ck_assert_int_eq(lk_registry_add_adapter(reg, "s", ad, &big.o, NULL), LK_OK); /* zero tail: fine */
  big.future = 1;
  ck_assert_int_eq(lk_registry_add_adapter(reg, "s", ad, &big.o, NULL), LK_ERR_ABI);
  lk_registry_add_opts_t small;
  memset(&small, 0, sizeof small);
  small.struct_size = 8; /* an older caller: struct_size and relation only */
  ck_assert_int_eq(lk_registry_add_adapter(reg, "s", ad, &small, NULL), LK_OK);
  lk_registry_opts_t ro = {sizeof ro, 1, 2000, 0};
  lk_registry_t *r2 = NULL;
  ck_assert_int_eq(lk_registry_open(ctx, rg_path("r.db"), &ro, &r2), LK_OK);
  ck_assert_int_eq(lk_registry_add_adapter(r2, "s", ad, NULL, NULL), LK_ERR_STATE); /* read-only */
  ck_assert_ptr_nonnull(strstr(lk_last_error(ctx), "read-only"));
  lk_registry_close(r2);
  ck_assert_int_eq(lk_registry_open(ctx, rg_path("absent.db"), &ro, &r2), LK_ERR_NOT_FOUND);
  ck_assert_int_eq(access(rg_path("absent.db"), F_OK), -1); /* not created */
  lk_adapter_free(ad);
  lk_registry_close(reg);
  lk_registry_close(NULL);
  lk_free(NULL);
  lk_context_free(ctx);
}
END_TEST

START_TEST(default_path_follows_the_environment) {
  char *p;
  setenv("LORAKIT_REGISTRY", "/x/y.db", 1);
  ck_assert_str_eq(p = lk_registry_default_path(), "/x/y.db");
  lk_free(p);
  unsetenv("LORAKIT_REGISTRY");
  setenv("XDG_DATA_HOME", "/data", 1);
  ck_assert_str_eq(p = lk_registry_default_path(), "/data/lorakit/registry.db");
  lk_free(p);
  unsetenv("XDG_DATA_HOME");
  setenv("HOME", "/home/u", 1);
  ck_assert_str_eq(p = lk_registry_default_path(), "/home/u/.local/share/lorakit/registry.db");
  lk_free(p);
  /* open(NULL) uses it, creating the folders */
  setenv("LORAKIT_REGISTRY", rg_path("deep/er/reg.db"), 1);
  lk_context_t *ctx = rg_ctx();
  lk_registry_t *reg = NULL;
  ck_assert_int_eq(lk_registry_open(ctx, NULL, NULL, &reg), LK_OK);
  ck_assert_str_eq(lk_registry_path(reg), rg_path("deep/er/reg.db"));
  lk_registry_close(reg);
  lk_context_free(ctx);
}
END_TEST

START_TEST(relation_names_round_trip) {
  static const char *const names[] = {"trained_from", "merged_from", "quantized_from", "extracted_from",
                                      "combined_from", "imported"};
  for (int32_t i = 0; i < 6; i++) {
    ck_assert_str_eq(lk_registry_relation_name(i + 1), names[i]);
    ck_assert_int_eq(lk_registry_relation_parse(names[i]), i + 1);
  }
  ck_assert_str_eq(lk_registry_relation_name(LK_REL_NONE), "none");
  ck_assert_str_eq(lk_registry_relation_name(42), "unknown");
  ck_assert_int_eq(lk_registry_relation_parse("none"), LK_REL_NONE);
  ck_assert_int_eq(lk_registry_relation_parse(NULL), LK_REL_NONE);
  ck_assert_int_eq(LK_REGISTRY_SCHEMA, 4);
}
END_TEST

/* ---- the CLI ---------------------------------------------------------------------------------------- */

START_TEST(cli_cases_pass) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "bash tests/registry_cases.sh '%s'", tu_build_dir());
  int rc = system(cmd);
  ck_assert_msg(rc == 0, "tests/registry_cases.sh failed (exit %d): see its output above", rc);
}
END_TEST

int main(void) {
  Suite *s = suite_create("registry");
  TCase *tc = tcase_create("versions");
  tcase_add_checked_fixture(tc, rg_setup, rg_teardown);
  tcase_add_test(tc, versions_number_one_to_n_per_name);
  tcase_add_test(tc, get_gives_back_the_same_bytes);
  tcase_add_test(tc, same_adapter_twice_stores_one_payload);
  tcase_add_test(tc, target_order_does_not_change_the_hash);
  tcase_add_test(tc, list_records_what_was_added);
  suite_add_tcase(s, tc);
  tc = tcase_create("tags_lineage");
  tcase_add_checked_fixture(tc, rg_setup, rg_teardown);
  tcase_add_test(tc, tags_move_and_latest_follows_the_newest);
  tcase_add_test(tc, lineage_of_a_diamond_to_any_depth);
  tcase_add_test(tc, a_cycle_is_refused_and_nothing_written);
  suite_add_tcase(s, tc);
  tc = tcase_create("refusals");
  tcase_add_checked_fixture(tc, rg_setup, rg_teardown);
  tcase_add_test(tc, bad_input_is_refused_and_nothing_written);
  tcase_add_test(tc, remove_is_refused_while_needed_and_numbers_are_not_reused);
  tcase_add_test(tc, options_structs_follow_the_size_rule);
  tcase_add_test(tc, default_path_follows_the_environment);
  tcase_add_test(tc, relation_names_round_trip);
  suite_add_tcase(s, tc);
  tc = tcase_create("diff");
  tcase_add_checked_fixture(tc, rg_setup, rg_teardown);
  tcase_add_test(tc, diff_matches_a_naive_computation);
  tcase_add_test(tc, diff_names_config_differences_and_missing_targets);
  suite_add_tcase(s, tc);
  tc = tcase_create("cli");
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, cli_cases_pass);
  suite_add_tcase(s, tc);
  return tu_run(s);
}
