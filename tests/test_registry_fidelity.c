/* test_registry_fidelity.c - what the registry gives back is what it was
 * given: the files of a PEFT folder and a GGUF LoRA byte for byte, an old
 * (schema 2) registry still exported as before; a path resolved to the
 * version holding its exact bytes, then its content in the same format;
 * the same files under one name are one version; non-finite weights,
 * invalid text and damaged registries refused; one bad row (written by
 * hand) does not break reading; read-only handles; an empty file is not a
 * registry. References are the input files themselves and SQLite opened
 * directly, never the library's own output. */
#include <math.h>
#include <sqlite3.h>

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
  ck_assert_msg(f != NULL, "create %s", path);
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

/* a and b hold the same bytes. */
static void assert_same_file(const char *a, const char *b) {
  size_t na, nb;
  unsigned char *x = slurp(a, &na), *y = slurp(b, &nb);
  ck_assert_msg(na == nb && !memcmp(x, y, na), "%s (%zu bytes) and %s (%zu bytes) differ", a, na, b, nb);
  free(x);
  free(y);
}

static int count_files(const char *dir) {
  char cmd[700];
  snprintf(cmd, sizeof cmd, "find '%s' -type f | wc -l", dir);
  FILE *p = popen(cmd, "r");
  int n = -1;
  ck_assert_int_eq(fscanf(p, "%d", &n), 1);
  pclose(p);
  return n;
}

/* A PEFT folder as people have them: the config as PEFT wrote it (with
 * base_model_name_or_path, init_lora_weights "gaussian", an integer
 * lora_alpha, target_modules in its own order), a README, a nested file
 * and an empty one. */
static void make_peft_folder(lk_context_t *ctx, lk_adapter_t *ad, const char *dir) {
  ck_assert_msg(lk_adapter_save(ad, rg_path(dir), "peft", NULL) == LK_OK, "%s", lk_last_error(ctx));
  char p[600];
  snprintf(p, sizeof p, "%s/adapter_config.json", rg_path(dir));
  json_error_t e;
  json_t *cfg = json_load_file(p, 0, &e);
  ck_assert_ptr_nonnull(cfg);
  json_object_set_new(cfg, "base_model_name_or_path", json_string("meta-llama/Llama-3.2-1B"));
  json_object_set_new(cfg, "init_lora_weights", json_string("gaussian"));
  json_object_set_new(cfg, "lora_alpha", json_integer(8));
  json_object_set_new(cfg, "target_modules", json_pack("[s,s]", "v_proj", "q_proj"));
  ck_assert_int_eq(json_dump_file(cfg, p, JSON_INDENT(2) | JSON_PRESERVE_ORDER), 0);
  json_decref(cfg);
  snprintf(p, sizeof p, "%s/README.md", rg_path(dir));
  static const char readme[] = "---\nlibrary_name: peft\n---\n# An adapter\n\nTrained on caf\xc3\xa9 menus.\n";
  spit(p, readme, sizeof readme - 1);
  snprintf(p, sizeof p, "%s/sub", rg_path(dir));
  ck_assert_int_eq(mkdir(p, 0777), 0);
  snprintf(p, sizeof p, "%s/sub/training_args.txt", rg_path(dir));
  spit(p, "lr=1e-4\n", 8);
  snprintf(p, sizeof p, "%s/empty.txt", rg_path(dir));
  spit(p, "", 0);
}

static const char *const peft_files[] = {"adapter_config.json", "adapter_model.safetensors", "README.md",
                                         "sub/training_args.txt", "empty.txt"};

static void assert_same_folder(const char *src, const char *out) {
  for (size_t i = 0; i < sizeof peft_files / sizeof *peft_files; i++) {
    char a[600], b[600];
    snprintf(a, sizeof a, "%s/%s", src, peft_files[i]);
    snprintf(b, sizeof b, "%s/%s", out, peft_files[i]);
    assert_same_file(a, b);
  }
  ck_assert_int_eq(count_files(out), (int)(sizeof peft_files / sizeof *peft_files));
}

/* ---- item 3: export is byte-faithful ---------------------------------------------------- */

START_TEST(peft_folder_exports_byte_for_byte) {
  lk_context_t *ctx = rg_ctx_loaders();
  if (!ctx) return;
  lk_adapter_t *ad = rg_adapter(ctx, 5, LK_SCALING_STANDARD);
  make_peft_folder(ctx, ad, "src");
  lk_registry_t *reg = rg_open(ctx, "r.db");
  char *ref = NULL;
  ck_assert_msg(lk_registry_add_path(reg, "a", rg_path("src"), NULL, &ref) == LK_OK, "%s", lk_last_error(ctx));
  ck_assert_str_eq(ref, "a@1");
  lk_free(ref);
  json_t *l = rg_list(reg, "a");
  const char *format = rg_str(json_array_get(l, 0), "format");
  ck_assert_msg(lk_registry_export(reg, "a@1", rg_path("out"), NULL) == LK_OK, "%s", lk_last_error(ctx));
  assert_same_folder(rg_path("src"), rg_path("out"));
  /* asking for the stored format by name is the same */
  ck_assert_msg(lk_registry_export(reg, "a@1", rg_path("out2"), format) == LK_OK, "%s", lk_last_error(ctx));
  assert_same_folder(rg_path("src"), rg_path("out2"));
  json_decref(l);
  /* exporting into an existing folder replaces the files in it */
  char p[600];
  snprintf(p, sizeof p, "%s/README.md", rg_path("out"));
  spit(p, "changed", 7);
  ck_assert_int_eq(lk_registry_export(reg, "a", rg_path("out"), NULL), LK_OK);
  assert_same_folder(rg_path("src"), rg_path("out"));
  lk_adapter_free(ad);
  lk_registry_close(reg);
  lk_context_free(ctx);
}
END_TEST

START_TEST(gguf_lora_exports_byte_for_byte_and_converts_on_request) {
  const char *fx = rg_fixtures();
  lk_context_t *ctx = fx ? rg_ctx_loaders() : NULL;
  if (!ctx) return;
  char gguf[600], base[600];
  snprintf(gguf, sizeof gguf, "%s/gguf/a1-lora-f32.gguf", fx);
  snprintf(base, sizeof base, "%s/base", fx);
  lk_registry_t *reg = rg_open(ctx, "r.db");
  lk_registry_add_opts_t o = rg_opts();
  o.base = base;
  ck_assert_msg(lk_registry_add_path(reg, "g", gguf, &o, NULL) == LK_OK, "%s", lk_last_error(ctx));
  ck_assert_msg(lk_registry_export(reg, "g@1", rg_path("out.gguf"), NULL) == LK_OK, "%s", lk_last_error(ctx));
  assert_same_file(gguf, rg_path("out.gguf")); /* general.name, general.base_model.*, general.tags kept */
  ck_assert_int_eq(lk_registry_export(reg, "g@1", rg_path("out2.gguf"), "gguf-lora"), LK_OK);
  assert_same_file(gguf, rg_path("out2.gguf"));
  /* another format converts: the PEFT folder loads as the same adapter */
  ck_assert_msg(lk_registry_export(reg, "g@1", rg_path("peft"), "peft") == LK_OK, "%s", lk_last_error(ctx));
  lk_adapter_t *a = NULL, *b = NULL;
  ck_assert_int_eq(lk_registry_get(reg, "g@1", &a), LK_OK);
  ck_assert_msg(lk_adapter_load(ctx, rg_path("peft"), NULL, NULL, &b) == LK_OK, "%s", lk_last_error(ctx));
  rg_assert_same_adapter(a, b);
  lk_adapter_free(a);
  lk_adapter_free(b);
  lk_registry_close(reg);
  lk_context_free(ctx);
}
END_TEST

/* A version stored by schema 2 (no files) in a file that is still schema 2:
 * readable read-only without migrating, exported as before (converted), and
 * the same after the forward migration. */
START_TEST(schema_2_versions_export_as_before) {
  lk_context_t *ctx = rg_ctx_loaders();
  if (!ctx) return;
  lk_adapter_t *ad = rg_adapter(ctx, 6, LK_SCALING_STANDARD);
  make_peft_folder(ctx, ad, "src");
  lk_registry_t *reg = rg_open(ctx, "r.db");
  ck_assert_int_eq(lk_registry_add_path(reg, "old", rg_path("src"), NULL, NULL), LK_OK);
  lk_registry_close(reg);
  /* back to what lorakit with schema 2 wrote */
  sql("r.db", "DROP TABLE version_model_lineage;" /* schema 4 */
              "DROP INDEX versions_files; ALTER TABLE versions DROP COLUMN files_sha;"
              "ALTER TABLE versions DROP COLUMN source; DROP TABLE files; DROP TABLE meta;"
              "DELETE FROM blobs WHERE sha256 NOT IN (SELECT blob FROM versions);"
              "DELETE FROM chunks WHERE blob NOT IN (SELECT sha256 FROM blobs); PRAGMA user_version = 2;");
  size_t n0, n1;
  unsigned char *before = slurp(rg_path("r.db"), &n0);
  lk_registry_opts_t ro = {sizeof ro, 1, 0, 0};
  ck_assert_msg(lk_registry_open(ctx, rg_path("r.db"), &ro, &reg) == LK_OK, "%s", lk_last_error(ctx));
  json_t *l = rg_list(reg, NULL);
  ck_assert_uint_eq(json_array_size(l), 1);
  json_decref(l);
  json_decref(rg_verify(reg, LK_OK));
  ck_assert_msg(lk_registry_export(reg, "old@1", rg_path("ro-out"), NULL) == LK_OK, "%s", lk_last_error(ctx));
  lk_registry_close(reg);
  unsigned char *after = slurp(rg_path("r.db"), &n1);
  ck_assert_msg(n0 == n1 && !memcmp(before, after, n0), "a read-only handle changed the file");
  free(before);
  free(after);
  /* as before: a converted PEFT folder (config and weights only) of the same adapter */
  ck_assert_int_eq(count_files(rg_path("ro-out")), 2);
  lk_adapter_t *back = NULL;
  ck_assert_int_eq(lk_adapter_load(ctx, rg_path("ro-out"), NULL, NULL, &back), LK_OK);
  rg_assert_same_adapter(ad, back);
  lk_adapter_free(back);
  /* migrated forward by a writer: still exported the same way */
  reg = rg_open(ctx, "r.db");
  ck_assert_int_eq(lk_registry_export(reg, "old@1", rg_path("rw-out"), NULL), LK_OK);
  ck_assert_int_eq(count_files(rg_path("rw-out")), 2);
  ck_assert_int_eq(lk_adapter_load(ctx, rg_path("rw-out"), NULL, NULL, &back), LK_OK);
  rg_assert_same_adapter(ad, back);
  lk_adapter_free(back);
  json_decref(rg_verify(reg, LK_OK));
  lk_adapter_free(ad);
  lk_registry_close(reg);
  lk_context_free(ctx);
}
END_TEST

/* ---- item 4: a path is the version with its bytes, then its content in its format ---------- */

START_TEST(find_prefers_exact_bytes_then_the_same_format) {
  const char *fx = rg_fixtures();
  lk_context_t *ctx = fx ? rg_ctx_loaders() : NULL;
  if (!ctx) return;
  char peft[600], gguf[600], base[600];
  snprintf(peft, sizeof peft, "%s/a1/adapter-trained", fx);
  snprintf(gguf, sizeof gguf, "%s/gguf/a1-lora-f32.gguf", fx);
  snprintf(base, sizeof base, "%s/base", fx);
  lk_registry_t *reg = rg_open(ctx, "r.db");
  lk_registry_add_opts_t o = rg_opts();
  o.base = base;
  /* the GGUF first: the PEFT folder, same canonical content, is the newest */
  ck_assert_msg(lk_registry_add_path(reg, "g", gguf, &o, NULL) == LK_OK, "%s", lk_last_error(ctx));
  o.base = "base";
  ck_assert_msg(lk_registry_add_path(reg, "p", peft, &o, NULL) == LK_OK, "%s", lk_last_error(ctx));
  json_t *g = rg_list(reg, "g"), *p = rg_list(reg, "p");
  ck_assert_str_eq(rg_str(json_array_get(g, 0), "sha256"), rg_str(json_array_get(p, 0), "sha256"));
  json_decref(g);
  json_decref(p);
  lk_registry_find_opts_t fo = {sizeof fo, 0, NULL, "base", NULL};
  char *ref = NULL, *note = NULL;
  ck_assert_msg(lk_registry_find(reg, gguf, &fo, &ref, &note) == LK_OK, "%s", lk_last_error(ctx));
  ck_assert_str_eq(ref, "g@1");
  ck_assert_ptr_null(note);
  lk_free(ref);
  ck_assert_int_eq(lk_registry_find(reg, peft, &fo, &ref, NULL), LK_OK);
  ck_assert_str_eq(ref, "p@1");
  lk_free(ref);
  /* a copy of the GGUF's bytes elsewhere: the same version */
  size_t n;
  unsigned char *bytes = slurp(gguf, &n);
  spit(rg_path("copy.gguf"), bytes, n);
  ck_assert_int_eq(lk_registry_find(reg, rg_path("copy.gguf"), &fo, &ref, NULL), LK_OK);
  ck_assert_str_eq(ref, "g@1");
  lk_free(ref);
  /* other bytes of the same content (an export with a changed name key):
   * content in the same format, not the newest of any format */
  unsigned char *at = memmem(bytes, n, "general.name", 12);
  ck_assert_ptr_nonnull(at);
  at += 12; /* after the key: the value type (u32, 8 = string), its length (u64), its bytes */
  uint32_t type;
  uint64_t len;
  memcpy(&type, at, 4);
  memcpy(&len, at + 4, 8);
  ck_assert_uint_eq(type, 8);
  ck_assert_uint_gt(len, 0);
  at[12] ^= 0x20; /* flip the case of its first letter */
  spit(rg_path("renamed.gguf"), bytes, n);
  free(bytes);
  ck_assert_msg(lk_registry_find(reg, rg_path("renamed.gguf"), &fo, &ref, &note) == LK_OK, "%s", lk_last_error(ctx));
  ck_assert_str_eq(ref, "g@1");
  ck_assert_ptr_null(note);
  lk_free(ref);
  /* exact bytes only, of one name: none */
  lk_registry_find_opts_t exact = {sizeof exact, 1, "p", NULL, NULL};
  ck_assert_int_eq(lk_registry_find(reg, gguf, &exact, &ref, NULL), LK_ERR_NOT_FOUND);
  ck_assert_ptr_null(ref);
  /* two versions holding the same bytes: the newest, and a note naming both */
  ck_assert_int_eq(lk_registry_add_path(reg, "g2", gguf, &o, NULL), LK_OK);
  ck_assert_int_eq(lk_registry_find(reg, gguf, &fo, &ref, &note), LK_OK);
  ck_assert_str_eq(ref, "g2@1");
  ck_assert_ptr_nonnull(note);
  ck_assert_msg(strstr(note, "g@1") && strstr(note, "chose g2@1"), "note: %s", note);
  lk_free(ref);
  lk_free(note);
  /* REFs directly */
  ck_assert_int_eq(lk_registry_find(reg, "p:latest", NULL, &ref, NULL), LK_OK);
  ck_assert_str_eq(ref, "p@1");
  lk_free(ref);
  lk_registry_close(reg);
  lk_context_free(ctx);
}
END_TEST

/* ---- item 5: the same files under the same name ------------------------------------------- */

START_TEST(same_files_under_one_name_are_one_version) {
  lk_context_t *ctx = rg_ctx_loaders();
  if (!ctx) return;
  lk_adapter_t *ad = rg_adapter(ctx, 7, LK_SCALING_STANDARD);
  make_peft_folder(ctx, ad, "src");
  lk_registry_t *reg = rg_open(ctx, "r.db");
  char *ref = NULL;
  ck_assert_int_eq(lk_registry_add_path(reg, "x", rg_path("src"), NULL, &ref), LK_OK);
  ck_assert_str_eq(ref, "x@1");
  lk_free(ref);
  ck_assert_int_eq(lk_registry_add_path(reg, "x", rg_path("src"), NULL, &ref), LK_OK);
  ck_assert_str_eq(ref, "x@1");
  lk_free(ref);
  json_t *l = rg_list(reg, "x");
  ck_assert_uint_eq(json_array_size(l), 1);
  json_decref(l);
  lk_registry_add_opts_t o = rg_opts();
  o.new_version = 1;
  ck_assert_int_eq(lk_registry_add_path(reg, "x", rg_path("src"), &o, &ref), LK_OK);
  ck_assert_str_eq(ref, "x@2");
  lk_free(ref);
  ck_assert_int_eq(lk_registry_add_path(reg, "y", rg_path("src"), NULL, &ref), LK_OK);
  ck_assert_str_eq(ref, "y@1");
  lk_free(ref);
  /* one changed byte outside the weights is other files: a new version */
  char p[600];
  snprintf(p, sizeof p, "%s/README.md", rg_path("src"));
  spit(p, "# An adapter, v2\n", 17);
  ck_assert_int_eq(lk_registry_add_path(reg, "x", rg_path("src"), NULL, &ref), LK_OK);
  ck_assert_str_eq(ref, "x@3");
  lk_free(ref);
  lk_adapter_free(ad);
  lk_registry_close(reg);
  lk_context_free(ctx);
}
END_TEST

/* ---- item 6: NaN and Inf ------------------------------------------------------------------------ */

START_TEST(non_finite_weights_are_refused_naming_tensor_and_file) {
  lk_context_t *ctx = rg_ctx_loaders();
  if (!ctx) return;
  lk_adapter_t *ad = rg_adapter(ctx, 8, LK_SCALING_STANDARD);
  lk_tensor_t A, B;
  ck_assert_int_eq(lk_adapter_weights(ad, 1, &A, &B), LK_OK); /* v_proj */
  ((float *)B.data)[3] = NAN;
  ck_assert_int_eq(lk_adapter_save(ad, rg_path("nan"), "peft", NULL), LK_OK);
  lk_registry_t *reg = rg_open(ctx, "r.db");
  ck_assert_int_eq(lk_registry_add_path(reg, "n", rg_path("nan"), NULL, NULL), LK_ERR_INVALID_ARG);
  const char *msg = lk_last_error(ctx);
  /* refused where the adapter is loaded (lk_adapter_load), naming the folder given */
  ck_assert_msg(strstr(msg, "nan: tensor ") && strstr(msg, "model.layers.0.self_attn.v_proj") &&
                    strstr(msg, "lora_B") && strstr(msg, "NaN"),
                "message: %s", msg);
  ((float *)B.data)[3] = 0.5f;
  ck_assert_int_eq(lk_adapter_weights(ad, 0, &A, &B), LK_OK); /* q_proj */
  ((float *)A.data)[5] = -INFINITY;
  ck_assert_int_eq(lk_registry_add_adapter(reg, "m", ad, NULL, NULL), LK_ERR_INVALID_ARG);
  msg = lk_last_error(ctx);
  ck_assert_msg(strstr(msg, "q_proj.lora_A") && strstr(msg, "-Inf") && strstr(msg, "element 5"), "message: %s", msg);
  json_t *l = rg_list(reg, NULL);
  ck_assert_uint_eq(json_array_size(l), 0);
  json_decref(l);
  lk_adapter_free(ad);
  lk_registry_close(reg);
  lk_context_free(ctx);
}
END_TEST

/* ---- item 14: text, bad rows, read-only, empty and damaged files --------------------------------- */

START_TEST(text_is_validated_on_the_way_in) {
  lk_context_t *ctx = rg_ctx();
  lk_registry_t *reg = rg_open(ctx, "r.db");
  lk_adapter_t *ad = rg_adapter(ctx, 9, LK_SCALING_STANDARD);
  static const char *const bad_names[] = {"bad\xff", "a\xe2\x80\xae\x62", "c\xc2\x85", "over\xc0\xaf", "iso\xe2\x81\xa6",
                                          "sur\xed\xa0\x80"};
  for (size_t i = 0; i < sizeof bad_names / sizeof *bad_names; i++)
    ck_assert_msg(lk_registry_add_adapter(reg, bad_names[i], ad, NULL, NULL) == LK_ERR_INVALID_ARG, "name %zu", i);
  lk_registry_add_opts_t o = rg_opts();
  o.notes = "\x1b[2Jgone";
  ck_assert_int_eq(lk_registry_add_adapter(reg, "ok", ad, &o, NULL), LK_ERR_INVALID_ARG);
  o.notes = "left\xe2\x80\xaeright";
  ck_assert_int_eq(lk_registry_add_adapter(reg, "ok", ad, &o, NULL), LK_ERR_INVALID_ARG);
  o.notes = "two lines\n\tand a tab, caf\xc3\xa9"; /* allowed */
  ck_assert_msg(lk_registry_add_adapter(reg, "ok", ad, &o, NULL) == LK_OK, "%s", lk_last_error(ctx));
  o.notes = NULL;
  o.operation = "tr\x07in";
  ck_assert_int_eq(lk_registry_add_adapter(reg, "ok", ad, &o, NULL), LK_ERR_INVALID_ARG);
  o.operation = NULL;
  const char *parents[] = {"ok@1"};
  o.parents = parents;
  o.n_parents = 1;
  o.relation = LK_REL_TRAINED_FROM;
  o.params_json = "{\"dataset\":\"x\\u202ey\"}";
  ck_assert_int_eq(lk_registry_add_adapter(reg, "ok", ad, &o, NULL), LK_ERR_INVALID_ARG);
  o.params_json = "{\"\\u001b[31m\":1}";
  ck_assert_int_eq(lk_registry_add_adapter(reg, "ok", ad, &o, NULL), LK_ERR_INVALID_ARG);
  ck_assert_int_eq(lk_registry_tag(reg, "ok@1", "t\xff"), LK_ERR_INVALID_ARG);
  ck_assert_int_eq(lk_registry_tag(reg, "ok@1", "t\xc2\x9b"), LK_ERR_INVALID_ARG);
  rg_add(reg, ctx, "two", ad, NULL);
  ck_assert_int_eq(lk_registry_link(reg, "two@1", "ok@1", LK_REL_MERGED_FROM, "{\"k\":\"\\u2067\"}"),
                   LK_ERR_INVALID_ARG);
  json_t *l = rg_list(reg, NULL);
  ck_assert_uint_eq(json_array_size(l), 2);
  ck_assert_uint_eq(json_array_size(json_object_get(json_array_get(l, 0), "parents")), 0);
  json_decref(l);
  lk_adapter_free(ad);
  lk_registry_close(reg);
  lk_context_free(ctx);
}
END_TEST

START_TEST(one_bad_row_does_not_break_reading) {
  lk_context_t *ctx = rg_ctx();
  lk_registry_t *reg = rg_open(ctx, "r.db");
  lk_adapter_t *a = rg_adapter(ctx, 10, LK_SCALING_STANDARD), *b = rg_adapter(ctx, 11, LK_SCALING_STANDARD);
  rg_add(reg, ctx, "a", a, NULL);
  lk_registry_add_opts_t o = rg_opts();
  const char *parents[] = {"a@1"};
  o.parents = parents;
  o.n_parents = 1;
  o.relation = LK_REL_TRAINED_FROM;
  rg_add(reg, ctx, "b", b, &o);
  ck_assert_int_eq(lk_registry_tag(reg, "a@1", "prod"), LK_OK);
  lk_registry_close(reg);
  /* as an older lorakit or a hand edit could leave it */
  sql("r.db", "UPDATE adapters SET name = CAST(X'62ff' AS TEXT) WHERE name = 'b';"
              "UPDATE versions SET notes = CAST(X'1b5b324a2de280ae2dc2852dfe' AS TEXT);"
              "UPDATE tags SET tag = CAST(X'70ff' AS TEXT);");
  reg = rg_open(ctx, "r.db");
  json_t *l = rg_list(reg, NULL); /* parses: rg_json fails the test otherwise */
  ck_assert_uint_eq(json_array_size(l), 2);
  json_t *bad = json_array_get(l, 1);
  ck_assert_str_eq(rg_str(bad, "name"), "b\\xff");
  ck_assert_str_eq(rg_str(bad, "ref"), "b\\xff@1");
  /* ESC arrives JSON-escaped (a reader decodes it), the rest as stored */
  ck_assert_str_eq(rg_str(bad, "notes"), "\x1b[2J-\xe2\x80\xae-\xc2\x85-\\xfe");
  ck_assert_str_eq(json_string_value(json_array_get(json_object_get(json_array_get(l, 0), "tags"), 1)), "p\\xff");
  json_decref(l);
  char *s = NULL;
  ck_assert_int_eq(lk_registry_show(reg, "a@1", &s), LK_OK);
  json_t *sh = rg_json(s);
  ck_assert_str_eq(rg_str(json_array_get(json_object_get(sh, "children"), 0), "ref"), "b\\xff@1");
  json_decref(sh);
  ck_assert_int_eq(lk_registry_lineage(reg, "a@1", NULL, &s), LK_OK);
  json_decref(rg_json(s));
  json_decref(rg_verify(reg, LK_OK));
  lk_adapter_free(a);
  lk_adapter_free(b);
  lk_registry_close(reg);
  lk_context_free(ctx);
}
END_TEST

START_TEST(an_empty_file_is_not_a_registry) {
  lk_context_t *ctx = rg_ctx();
  spit(rg_path("empty.db"), "", 0);
  lk_registry_opts_t ro = {sizeof ro, 1, 0, 0};
  lk_registry_t *reg = NULL;
  ck_assert_int_eq(lk_registry_open(ctx, rg_path("empty.db"), &ro, &reg), LK_ERR_FORMAT);
  ck_assert_msg(strstr(lk_last_error(ctx), "not a lorakit registry"), "%s", lk_last_error(ctx));
  ck_assert_ptr_null(reg);
  struct stat sb;
  ck_assert_int_eq(stat(rg_path("empty.db"), &sb), 0);
  ck_assert_int_eq(sb.st_size, 0);
  lk_context_free(ctx);
}
END_TEST

START_TEST(a_damaged_registry_refuses_writes_until_verified_clean) {
  lk_context_t *ctx = rg_ctx();
  lk_registry_t *reg = rg_open(ctx, "r.db");
  lk_adapter_t *a = rg_adapter(ctx, 12, LK_SCALING_STANDARD), *b = rg_adapter(ctx, 13, LK_SCALING_STANDARD);
  rg_add(reg, ctx, "a", a, NULL);
  lk_registry_close(reg);
  /* damage the stored weights (chunk 1) with SQLite, keeping a copy */
  sql("r.db", "CREATE TABLE keep AS SELECT blob, seq, data FROM chunks WHERE seq = 1;"
              "UPDATE chunks SET data = X'789c0300000001' WHERE seq = 1;");
  lk_registry_opts_t ro = {sizeof ro, 1, 0, 0};
  ck_assert_int_eq(lk_registry_open(ctx, rg_path("r.db"), &ro, &reg), LK_OK);
  json_decref(rg_verify(reg, LK_ERR_CORRUPT)); /* a read-only handle: verify still leaves its mark */
  lk_registry_close(reg);
  reg = rg_open(ctx, "r.db");
  ck_assert_int_eq(lk_registry_add_adapter(reg, "b", b, NULL, NULL), LK_ERR_CORRUPT);
  ck_assert_msg(strstr(lk_last_error(ctx), "damaged"), "%s", lk_last_error(ctx));
  ck_assert_int_eq(lk_registry_tag(reg, "a@1", "t"), LK_ERR_CORRUPT);
  json_t *l = rg_list(reg, NULL); /* reading still works */
  ck_assert_uint_eq(json_array_size(l), 1);
  json_decref(l);
  lk_registry_close(reg);
  sql("r.db", "UPDATE chunks SET data = (SELECT data FROM keep WHERE keep.blob = chunks.blob) WHERE seq = 1;"
              "DROP TABLE keep;");
  reg = rg_open(ctx, "r.db");
  json_decref(rg_verify(reg, LK_OK));
  ck_assert_str_eq(rg_add(reg, ctx, "b", b, NULL), "b@1");
  lk_adapter_free(a);
  lk_adapter_free(b);
  lk_registry_close(reg);
  lk_context_free(ctx);
}
END_TEST

int main(void) {
  Suite *s = suite_create("registry_fidelity");
  TCase *tc = tcase_create("files");
  tcase_add_checked_fixture(tc, rg_setup, rg_teardown);
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, peft_folder_exports_byte_for_byte);
  tcase_add_test(tc, gguf_lora_exports_byte_for_byte_and_converts_on_request);
  tcase_add_test(tc, schema_2_versions_export_as_before);
  tcase_add_test(tc, find_prefers_exact_bytes_then_the_same_format);
  tcase_add_test(tc, same_files_under_one_name_are_one_version);
  tcase_add_test(tc, non_finite_weights_are_refused_naming_tensor_and_file);
  suite_add_tcase(s, tc);
  tc = tcase_create("robustness");
  tcase_add_checked_fixture(tc, rg_setup, rg_teardown);
  tcase_add_test(tc, text_is_validated_on_the_way_in);
  tcase_add_test(tc, one_bad_row_does_not_break_reading);
  tcase_add_test(tc, an_empty_file_is_not_a_registry);
  tcase_add_test(tc, a_damaged_registry_refuses_writes_until_verified_clean);
  suite_add_tcase(s, tc);
  return tu_run(s);
}
