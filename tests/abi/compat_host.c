/* compat_host.c PLUGIN.so PLUGIN_MINOR - a host built against the 2.0
 * headers (an "old host") or the 2.1 ones (a "new host"), run against
 * liblorakit built from either (compat_pairs.sh). With its own struct
 * sizes it creates a context, loads compat_plugin.c's build for
 * PLUGIN_MINOR explicitly and reads back through the library:
 *   - lk_context_opts_t of its size (a zero tail is accepted by any library;
 *     a nonzero 2.1 option is refused by a 2.0 library, LK_ERR_ABI);
 *   - lk_plugin_info_t, lk_component_info_t and lk_device_info_t (outputs)
 *     written up to its struct_size and not a byte further (a canary), the
 *     negotiated ABI being the lowest minor of plugin and library;
 *   - lk_op_lora_t of its size (zero tail) accepted by supports().
 * Exit 0 when all hold. */
#include <stdio.h>
#include <string.h>

#include "lorakit.h"

static int failures;
#define CHECK(cond, ...)                \
  do {                                  \
    if (!(cond)) {                      \
      printf("  FAILED: " __VA_ARGS__); \
      printf("\n");                     \
      failures++;                       \
    }                                   \
  } while (0)

#define CANARY 0xA5
static int canary_ok(const unsigned char *p, size_t from, size_t to) {
  for (size_t i = from; i < to; i++)
    if (p[i] != CANARY) return 0;
  return 1;
}

int main(int argc, char **argv) {
  if (argc != 3) return 2;
  unsigned pminor = 0;
  sscanf(argv[2], "%u", &pminor);
  unsigned lminor = (lk_version() / 100) % 100;
  unsigned want_abi = pminor < lminor ? pminor : lminor;
  printf("host %u.%u with library %s and plugin 2.%u\n", LK_VERSION_MAJOR, LK_VERSION_MINOR, lk_version_string(),
         pminor);
  CHECK(lk_plugin_abi_version() == LK_MAKE_ABI(2, lminor), "library speaks plugin ABI %x", lk_plugin_abi_version());

  lk_context_opts_t o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.no_default_plugins = 1;
  lk_context_t *ctx = NULL;
#if LK_VERSION_MINOR >= 1
  o.future_ctx_option = 1;
  lk_status st = lk_context_create(&o, &ctx);
  CHECK(st == (lminor >= 1 ? LK_OK : LK_ERR_ABI), "a nonzero 2.1 option: %d", st);
  lk_context_free(ctx);
  ctx = NULL;
  o.future_ctx_option = 0;
#endif
  CHECK(lk_context_create(&o, &ctx) == LK_OK, "context with a %u-byte lk_context_opts_t", o.struct_size);
  if (!ctx) return 1;
  CHECK(lk_plugin_load(ctx, argv[1]) == LK_OK, "load %s: %s", argv[1], lk_last_error(ctx));

  union {
    lk_plugin_info_t i;
    unsigned char b[sizeof(lk_plugin_info_t) + 32];
  } pi;
  memset(&pi, CANARY, sizeof pi);
  pi.i.struct_size = sizeof pi.i;
  CHECK(lk_plugin_info(ctx, 0, &pi.i) == LK_OK, "lk_plugin_info");
  CHECK(pi.i.struct_size == sizeof pi.i, "lk_plugin_info_t.struct_size changed");
  CHECK(pi.i.status == LK_PLUGIN_LOADED && pi.i.id && !strcmp(pi.i.id, "org.lorakit.test.compat"), "plugin listed");
  CHECK(pi.i.abi_version == LK_MAKE_ABI(2, want_abi), "negotiated %x, expected 2.%u", pi.i.abi_version, want_abi);
  CHECK(pi.i.n_components == 3, "n_components %u", pi.i.n_components);
  CHECK(canary_ok(pi.b, sizeof pi.i, sizeof pi), "lk_plugin_info wrote past the host's struct");
#if LK_VERSION_MINOR >= 1
  /* a 2.0 library does not know the field: it stays as the host set it */
  if (lminor == 0) CHECK(pi.i.future_plugin_info_field == 0xA5A5A5A5A5A5A5A5ull, "2.0 library wrote a 2.1 field");
#endif

  const char *names[3] = {"compat", "compatq", "compatl"};
  const int32_t kinds[3] = {LK_KIND_BACKEND, LK_KIND_QUANTISER, LK_KIND_LOADER};
  for (uint32_t i = 0; i < 3; i++) {
    union {
      lk_component_info_t c;
      unsigned char b[sizeof(lk_component_info_t) + 16];
    } ci;
    memset(&ci, CANARY, sizeof ci);
    ci.c.struct_size = sizeof ci.c;
    int found = 0;
    for (uint32_t k = 0; k < lk_component_count(ctx); k++) {
      memset(&ci, CANARY, sizeof ci);
      ci.c.struct_size = sizeof ci.c;
      if (lk_component_info(ctx, k, &ci.c) == LK_OK && ci.c.kind == kinds[i] && !strcmp(ci.c.name, names[i])) found = 1;
      CHECK(canary_ok(ci.b, sizeof ci.c, sizeof ci), "lk_component_info wrote past the host's struct");
    }
    CHECK(found, "component %s not listed", names[i]);
  }

  union {
    lk_device_info_t d;
    unsigned char b[sizeof(lk_device_info_t) + 32];
  } dev;
  memset(&dev, CANARY, sizeof dev);
  dev.d.struct_size = sizeof dev.d;
  CHECK(lk_backend_device_info(ctx, "compat", 0, &dev.d) == LK_OK, "device info: %s", lk_last_error(ctx));
  char want[64];
  snprintf(want, sizeof want, "compat device 2.%u", pminor);
  CHECK(!strcmp(dev.d.name, want), "device name '%s'", dev.d.name);
  CHECK(dev.d.struct_size == sizeof dev.d, "lk_device_info_t.struct_size changed");
  CHECK(canary_ok(dev.b, sizeof dev.d, sizeof dev), "device info written past the host's struct");
#if LK_VERSION_MINOR >= 1
  /* 21 only when library and plugin both know it; 0 when the 2.1 library
   * zeroed what an old plugin did not fill; untouched by a 2.0 library */
  unsigned long long f = dev.d.future_device_field;
  CHECK(f == (lminor == 0 ? 0xA5A5A5A5A5A5A5A5ull : pminor >= 1 ? 21ull : 0ull), "2.1 device field %llx", f);
#endif

  lk_backend_t *be = NULL;
  CHECK(lk_backend_open(ctx, "compat", 0, &be) == LK_OK, "open: %s", lk_last_error(ctx));
  if (be) {
    lk_op_lora_t p;
    memset(&p, 0, sizeof p);
    p.struct_size = sizeof p;
    p.scale = 0.5f;
    lk_op_t op = {sizeof op, LK_OP_LORA_FORWARD, NULL, 0, 0, NULL, NULL, &p};
    CHECK(lk_backend_supports(be, &op) == 1, "supports() with a %u-byte lk_op_lora_t", p.struct_size);
    lk_backend_close(be);
  }
  lk_context_free(ctx);
  printf("  %s\n", failures ? "FAILED" : "ok: opts, infos and op params by the rules");
  return failures ? 1 : 0;
}
