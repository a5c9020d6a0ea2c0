/* host.c - the C reference host of the FFI scenario (tests/ffi/README.md).
 *
 *   host_c CPU_PLUGIN REGISTRY_DIR
 *
 * Every other host (host.cpp, host.rs, host.go, host.py) does the same calls
 * in the same order and must print exactly what this one prints: the values
 * printed are computed by lorakit; a host only generates the inputs (small
 * dyadic rationals, exact in f32 in every language), formats floats as
 * %.9g plus their bit pattern, and hashes output bytes with FNV-1a 64. */
#include <lorakit.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define M 3
#define IN 16
#define OUT 8
#define RANK 4
#define TARGET "model.layers.0.self_attn.q_proj"

static void fmt_f32(char *buf, size_t n, float v) {
  uint32_t u;
  memcpy(&u, &v, 4);
  snprintf(buf, n, "%.9g/0x%08x", (double)v, u);
}

/* FNV-1a 64 over the bytes of n floats as they lie in memory. */
static uint64_t fnv1a64(const float *p, size_t n) {
  const unsigned char *b = (const unsigned char *)p;
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n * sizeof(float); i++) h = (h ^ b[i]) * 0x100000001b3ull;
  return h;
}

static void print_elems(const char *label, const float *p, const int *idx, int n) {
  printf("%s", label);
  for (int i = 0; i < n; i++) {
    char z[64];
    fmt_f32(z, sizeof z, p[idx[i]]);
    printf(" [%d]=%s", idx[i], z);
  }
  printf("\n");
}

/* A JSON document from lorakit, with the one value that changes from run to
 * run - every "created" timestamp - replaced by "*". */
static void print_json(const char *label, const char *json) {
  static const char key[] = "\"created\":\"";
  const char *p = json;
  printf("%s ", label);
  for (;;) {
    const char *q = strstr(p, key);
    if (!q) break;
    q += sizeof key - 1;
    fwrite(p, 1, (size_t)(q - p), stdout);
    fputs("*", stdout);
    p = strchr(q, '"');
    if (!p) return (void)printf("\n");
  }
  printf("%s\n", p);
}

static int fail(lk_context_t *ctx, const char *call, lk_status st) {
  fprintf(stderr, "host_c: %s: status %d (%s): %s\n", call, st, lk_strerror(st),
          ctx ? lk_last_error(ctx) : "");
  return 1;
}

#define TRY(call)                                  \
  do {                                             \
    lk_status st_ = (call);                        \
    if (st_ != LK_OK) {                            \
      rc = fail(ctx, #call, st_);                  \
      goto done;                                   \
    }                                              \
  } while (0)

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: host_c CPU_PLUGIN REGISTRY_DIR\n");
    return 2;
  }
  int rc = 0;
  lk_context_t *ctx = NULL;
  lk_adapter_t *ad = NULL;
  lk_backend_t *be = NULL;
#ifdef LK_REGISTRY_SCHEMA
  lk_registry_t *reg = NULL;
  lk_adapter_t *got = NULL;
  char *ref1 = NULL, *ref2 = NULL, *res = NULL, *js = NULL;
#endif
  static float x[M * IN], w[OUT * IN], y[M * OUT];

  uint32_t abi = lk_plugin_abi_version();
  printf("lorakit %s plugin-abi %u.%u\n", lk_version_string(), LK_ABI_MAJOR_OF(abi),
         LK_ABI_MINOR_OF(abi));

  /* 1. a context with no discovery, one backend thread, the cpu plugin. */
  lk_context_opts_t opts = {sizeof opts, 1, 1, 0};
  TRY(lk_context_create(&opts, &ctx));
  TRY(lk_plugin_load(ctx, argv[1]));

  /* 2. list the cpu plugin's row and its components. */
  for (uint32_t i = 0; i < lk_plugin_count(ctx); i++) {
    lk_plugin_info_t pi;
    memset(&pi, 0, sizeof pi);
    pi.struct_size = sizeof pi;
    TRY(lk_plugin_info(ctx, i, &pi));
    if (!pi.id || strcmp(pi.id, "org.lorakit.cpu") != 0) continue;
    printf("plugin %s status %d abi %u.%u version %s components %u\n", pi.id, pi.status,
           LK_ABI_MAJOR_OF(pi.abi_version), LK_ABI_MINOR_OF(pi.abi_version), pi.version,
           pi.n_components);
    for (uint32_t c = 0; c < lk_component_count(ctx); c++) {
      lk_component_info_t ci;
      memset(&ci, 0, sizeof ci);
      ci.struct_size = sizeof ci;
      TRY(lk_component_info(ctx, c, &ci));
      if (ci.plugin_index == i) printf("component kind %d name %s\n", ci.kind, ci.name);
    }
  }

  /* 3. an adapter of a given shape and seed. */
  lk_lora_config_t cfg = {sizeof cfg, RANK, 8.0f, LK_SCALING_STANDARD, 1234};
  TRY(lk_adapter_create(ctx, &cfg, &ad));
  TRY(lk_adapter_add_target(ad, TARGET, IN, OUT, 0, 0));
  int32_t t = lk_adapter_find(ad, TARGET);
  lk_target_info_t ti;
  memset(&ti, 0, sizeof ti);
  ti.struct_size = sizeof ti;
  TRY(lk_adapter_target_info(ad, (uint32_t)t, &ti));
  char za[64], zs[64];
  fmt_f32(za, sizeof za, ti.alpha);
  fmt_f32(zs, sizeof zs, ti.scale);
  printf("target %d %s in %lld out %lld rank %u alpha %s scale %s\n", t, ti.name,
         (long long)ti.in_features, (long long)ti.out_features, ti.rank, za, zs);
  lk_tensor_t A, B;
  TRY(lk_adapter_weights(ad, (uint32_t)t, &A, &B));
  float *a = A.data, *b = B.data;
  printf("A shape %lld %lld B shape %lld %lld\n", (long long)A.shape[0], (long long)A.shape[1],
         (long long)B.shape[0], (long long)B.shape[1]);
  static const int a_idx[] = {0, 1, 2, 3};
  print_elems("A[0][0..3]", a, a_idx, 4);
  printf("A fnv1a64 %016llx\n", (unsigned long long)fnv1a64(a, RANK * IN));
  /* "trained": B[i] = ((3i mod 11) - 5) / 32 */
  for (int i = 0; i < OUT * RANK; i++) b[i] = (float)((i * 3) % 11 - 5) / 32.0f;

  /* 4. LoRA forward on fixed inputs. */
  TRY(lk_backend_open(ctx, "cpu", 0, &be));
  printf("backend %s devices %u\n", lk_backend_name(be), lk_backend_device_count(ctx, lk_backend_name(be)));
  for (int i = 0; i < M * IN; i++) x[i] = (float)((i * 7) % 17 - 8) / 8.0f;
  for (int i = 0; i < OUT * IN; i++) w[i] = (float)((i * 5) % 13 - 6) / 16.0f;
  int64_t sx[2] = {M, IN}, sw[2] = {OUT, IN}, sy[2] = {M, OUT};
  lk_tensor_t tx, tw, ty;
  TRY(lk_tensor_init(&tx, LK_DTYPE_F32, 2, sx, x));
  TRY(lk_tensor_init(&tw, LK_DTYPE_F32, 2, sw, w));
  TRY(lk_tensor_init(&ty, LK_DTYPE_F32, 2, sy, y));
  TRY(lk_lora_forward(be, ad, (uint32_t)t, &tx, &tw, &ty));
  static const int y_idx[] = {0, 11, 23};
  print_elems("forward y", y, y_idx, 3);
  printf("forward fnv1a64 %016llx\n", (unsigned long long)fnv1a64(y, M * OUT));

  /* 5. merge and unmerge W in place. */
  static float w0[OUT * IN];
  memcpy(w0, w, sizeof w);
  TRY(lk_merge(be, ad, (uint32_t)t, &tw, 1.0f));
  static const int w_idx[] = {0, 77, 127};
  print_elems("merge W", w, w_idx, 3);
  printf("merge fnv1a64 %016llx\n", (unsigned long long)fnv1a64(w, OUT * IN));
  TRY(lk_unmerge(be, ad, (uint32_t)t, &tw, 1.0f));
  print_elems("unmerge W", w, w_idx, 3);
  int same = 0;
  for (int i = 0; i < OUT * IN; i++) same += memcmp(&w[i], &w0[i], 4) == 0;
  printf("unmerge fnv1a64 %016llx bit-identical %d/%d\n", (unsigned long long)fnv1a64(w, OUT * IN),
         same, OUT * IN);

  /* 6. the open device, and a backend buffer: host bytes in and out
   * through lk_buffer_* (no vtable). */
  {
    lk_device_info_t di;
    memset(&di, 0, sizeof di);
    di.struct_size = sizeof di;
    TRY(lk_backend_info(be, &di));
    printf("device type %d unified_memory %u offset_align %llu\n", di.type, di.unified_memory,
           (unsigned long long)di.offset_align);
    lk_buffer_t *buf = NULL; /* freed by lk_backend_close if a step fails */
    static float back[M * IN];
    void *mapped = NULL;
    TRY(lk_buffer_alloc(be, sizeof x, LK_BUFFER_HOST_VISIBLE, &buf));
    TRY(lk_buffer_upload(be, buf, 0, x, sizeof x));
    TRY(lk_buffer_download(be, buf, 4 * sizeof(float), back, sizeof x - 4 * sizeof(float)));
    TRY(lk_buffer_map(be, buf, 0, sizeof x, &mapped));
    printf("buffer bytes %llu download[4..] fnv1a64 %016llx map fnv1a64 %016llx\n",
           (unsigned long long)lk_buffer_size(be, buf), (unsigned long long)fnv1a64(back, M * IN - 4),
           (unsigned long long)fnv1a64(mapped, M * IN));
    TRY(lk_buffer_unmap(be, buf));
    lk_buffer_free(be, buf);
  }

  /* 7. an error comes back as a status and the context's message. */
  {
    lk_backend_t *none = NULL;
    lk_status st = lk_backend_open(ctx, "nosuch", 0, &none);
    printf("error backend nosuch: status %d (%s): %s\n", st, lk_strerror(st), lk_last_error(ctx));
    lk_backend_close(none);
  }

  /* 8. the registry: two versions with an edge, read back. */
#ifdef LK_REGISTRY_SCHEMA
  {
    char path[4096];
    snprintf(path, sizeof path, "%s/registry.db", argv[2]);
    TRY(lk_registry_open(ctx, path, NULL, &reg));
    TRY(lk_registry_add_adapter(reg, "ffi-demo", ad, NULL, &ref1));
    printf("registry add %s\n", ref1);
    b[0] += 1.0f / 32.0f; /* "trained" one more step */
    const char *parents[1] = {ref1};
    lk_registry_add_opts_t ao;
    memset(&ao, 0, sizeof ao);
    ao.struct_size = sizeof ao;
    ao.relation = LK_REL_TRAINED_FROM;
    ao.parents = parents;
    ao.n_parents = 1;
    ao.params_json = "{\"steps\":1}";
    ao.operation = "train";
    TRY(lk_registry_add_adapter(reg, "ffi-demo", ad, &ao, &ref2));
    printf("registry add %s parent %s relation %s\n", ref2, ref1,
           lk_registry_relation_name(LK_REL_TRAINED_FROM));
    TRY(lk_registry_resolve(reg, "ffi-demo", &res));
    printf("registry resolve ffi-demo %s\n", res);
    TRY(lk_registry_lineage(reg, ref2, NULL, &js));
    print_json("registry lineage", js);
    lk_free(js);
    js = NULL;
    TRY(lk_registry_show(reg, ref1, &js));
    print_json("registry show", js);
    TRY(lk_registry_get(reg, ref1, &got));
    lk_tensor_t gA, gB;
    TRY(lk_adapter_weights(got, 0, &gA, &gB));
    printf("registry get %s A fnv1a64 %016llx B fnv1a64 %016llx\n", ref1,
           (unsigned long long)fnv1a64(gA.data, RANK * IN),
           (unsigned long long)fnv1a64(gB.data, OUT * RANK));
  }
#else
  printf("registry: not in this build\n");
#endif
  printf("done\n");

done:
#ifdef LK_REGISTRY_SCHEMA
  lk_free(js);
  lk_free(res);
  lk_free(ref2);
  lk_free(ref1);
  lk_adapter_free(got);
  lk_registry_close(reg);
#endif
  lk_backend_close(be);
  lk_adapter_free(ad);
  lk_context_free(ctx);
  return rc;
}
