/* compat_core.c PLUGIN.so PLUGIN_MINOR - a stand-in core, built against
 * the 2.0 headers (an "old core") or the 2.1 ones (a "new core"), that
 * drives compat_plugin.c's entry, descriptor, factories and vtables
 * directly, as liblorakit does, with the reader's rules of DESIGN.md
 * section 3 rule 2 on what the plugin filled:
 *   - every plugin-filled struct is at least its frozen minimum size; a
 *     larger one (a newer plugin) is accepted and its tail ignored;
 *   - a field appended in 2.1 is used only when the plugin's struct_size
 *     covers it; otherwise its default (absent) holds;
 *   - the core's own host table, op parameters and device info buffer are
 *     this build's size: the plugin must read the first within its
 *     struct_size, accept the second (zero tail) and write the third only
 *     up to its struct_size (checked with a canary).
 * Prints one line per check; exit 0 when all hold. */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "lorakit_plugin.h"

#define V21 (LK_PLUGIN_ABI_MINOR >= 1)

typedef struct { /* compat_plugin.c's compat_seen */
  uint32_t built_minor;
  uint32_t host_struct_size;
  int32_t host_fn_result;
  float lora_scale;
  float lora_future;
} compat_seen;

static int failures;
#define CHECK(cond, ...)                      \
  do {                                        \
    if (!(cond)) {                            \
      printf("  FAILED: " __VA_ARGS__);       \
      printf("\n");                           \
      failures++;                             \
    }                                         \
  } while (0)

static void h_log(int32_t l, const char *id, const char *m) { (void)l; (void)id; (void)m; }
static const char *h_strerror(int32_t c) { (void)c; return "?"; }
static void *h_proc(const char *n) { (void)n; return NULL; }
#if V21
static int32_t h_future(uint32_t x) { return (int32_t)x + 1; }
#endif
/* The host table sits in a larger buffer so that a plugin that read past
 * struct_size would find garbage, not zeros. */
static union {
  lk_host_api_t api;
  unsigned char bytes[sizeof(lk_host_api_t) + 64];
} host_buf;

int main(int argc, char **argv) {
  if (argc != 3) return 2;
  unsigned pminor = 0;
  sscanf(argv[2], "%u", &pminor);
  printf("core %u.%u driving plugin %u.%u (%s)\n", LK_PLUGIN_ABI_MAJOR, LK_PLUGIN_ABI_MINOR, LK_PLUGIN_ABI_MAJOR,
         pminor, argv[1]);
  memset(&host_buf, 0xCC, sizeof host_buf);
  lk_host_api_t *host = &host_buf.api;
  memset(host, 0, sizeof *host);
  host->struct_size = sizeof *host;
  host->abi_version = LK_PLUGIN_ABI_VERSION;
  host->log = h_log;
  host->strerror = h_strerror;
  host->get_proc = h_proc;
#if V21
  host->future_host_fn = h_future;
#endif

  void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    printf("  FAILED: dlopen: %s\n", dlerror());
    return 1;
  }
  lk_plugin_entry_fn entry = (lk_plugin_entry_fn)(uintptr_t)dlsym(h, LK_PLUGIN_ENTRY_SYMBOL);
  CHECK(entry != NULL, "no entry");
  if (!entry) return 1;
  uint32_t abi = LK_PLUGIN_ABI_VERSION;
  const lk_plugin_t *desc = NULL;
  CHECK(entry(&abi, host, &desc) == LK_OK && desc, "entry failed");
  if (!desc) return 1;
  CHECK(abi == LK_MAKE_ABI(2, pminor), "plugin answered ABI %x", abi);
  uint32_t negotiated = abi < LK_PLUGIN_ABI_VERSION ? abi : LK_PLUGIN_ABI_VERSION;
  printf("  negotiated %u.%u\n", LK_ABI_MAJOR_OF(negotiated), LK_ABI_MINOR_OF(negotiated));

  /* descriptor */
  CHECK(desc->struct_size >= LK_MIN_SIZE_PLUGIN, "descriptor below its minimum");
  CHECK(!strcmp(desc->id, "org.lorakit.test.compat"), "descriptor id");
  int has_url = 0;
#if V21
  has_url = LK_HAS_FIELD(desc, lk_plugin_t, future_plugin_url);
  if (has_url) CHECK(!strcmp(desc->future_plugin_url, "https://example.invalid/2.1"), "2.1 descriptor field");
#endif
  CHECK(has_url == (V21 && pminor >= 1), "2.1 descriptor field seen: %d", has_url);
  lk_error_t err = {sizeof err, 0, {0}};
  CHECK(desc->init(host, &err) == LK_OK, "init");

  /* factories and vtables of every kind */
  const lk_backend_factory_t *fb = desc->get_factory(LK_FACTORY_BACKEND);
  const lk_quantiser_factory_t *fq = desc->get_factory(LK_FACTORY_QUANTISER);
  const lk_loader_factory_t *fl = desc->get_factory(LK_FACTORY_LOADER);
  CHECK(fb && fq && fl, "a factory is missing");
  if (!fb || !fq || !fl) return 1;
  CHECK(fb->struct_size >= LK_MIN_SIZE_BACKEND_FACTORY && fq->struct_size >= LK_MIN_SIZE_QUANTISER_FACTORY &&
            fl->struct_size >= LK_MIN_SIZE_FACTORY,
        "a factory below its minimum");
#if V21
  if (pminor >= 1)
    CHECK(LK_HAS_FIELD(fb, lk_backend_factory_t, future_factory_flags) && fb->future_factory_flags == 0xF00D &&
              fq->future_factory_flags == 0xF00D && fl->future_factory_flags == 0xF00D,
          "2.1 factory fields");
  else
    CHECK(!LK_HAS_FIELD(fb, lk_backend_factory_t, future_factory_flags), "a 2.0 factory claims a 2.1 field");
#endif
  const lk_backend_vt_t *b = fb->get(0);
  const lk_quantiser_vt_t *q = fq->get(0);
  const lk_loader_vt_t *l = fl->get(0);
  CHECK(b && b->struct_size >= LK_MIN_SIZE_BACKEND_VT && !strcmp(b->name, "compat"), "backend vtable");
  CHECK(q && q->struct_size >= LK_MIN_SIZE_QUANTISER_VT && !strcmp(q->name, "compatq"), "quantiser vtable");
  CHECK(l && l->struct_size >= LK_MIN_SIZE_LOADER_VT && !strcmp(l->name, "compatl"), "loader vtable");
  if (!b || !q || !l) return 1;

  /* backend: device info up to our size, op params of our size */
  union {
    lk_device_info_t d;
    unsigned char bytes[sizeof(lk_device_info_t) + 32];
  } dev;
  memset(&dev, 0xA5, sizeof dev);
  dev.d.struct_size = sizeof dev.d;
  CHECK(b->device_info(0, &dev.d, &err) == LK_OK, "device_info");
  char want[64];
  snprintf(want, sizeof want, "compat device 2.%u", pminor);
  CHECK(!strcmp(dev.d.name, want), "device name '%s'", dev.d.name);
  CHECK(dev.d.struct_size == sizeof dev.d, "device info struct_size changed");
  int canary = 1;
  for (size_t i = sizeof dev.d; i < sizeof dev; i++) canary &= dev.bytes[i] == 0xA5;
  CHECK(canary, "the plugin wrote past our lk_device_info_t");
#if V21
  CHECK(dev.d.future_device_field == (pminor >= 1 ? 21u : 0xA5A5A5A5A5A5A5A5ull),
        "2.1 device field %llx (an old plugin leaves it as we set it)", (unsigned long long)dev.d.future_device_field);
#endif
  void *self = NULL;
  CHECK(b->create(NULL, &self, &err) == LK_OK, "create");
  const compat_seen *seen = b->get_extension(self, "compat.seen/1");
  CHECK(seen != NULL, "no compat.seen/1");
  if (!seen) return 1;
  CHECK(seen->built_minor == pminor, "plugin built for %u", seen->built_minor);
  CHECK(seen->host_struct_size == sizeof(lk_host_api_t), "plugin saw a host table of %u bytes", seen->host_struct_size);
  /* the 2.1 service is called only by a 2.1 plugin given a 2.1 table */
  CHECK(seen->host_fn_result == ((V21 && pminor >= 1) ? 21 : -1), "host service result %d", seen->host_fn_result);

  lk_op_lora_t p;
  memset(&p, 0, sizeof p);
  p.struct_size = sizeof p;
  p.scale = 0.5f;
#if V21
  p.future_lora_param = 0.0f; /* zero tail: any plugin must accept it */
#endif
  lk_op_t op = {sizeof op, LK_OP_LORA_FORWARD, NULL, 0, 0, NULL, NULL, &p};
  CHECK(b->supports(self, &op) == 1, "supports() refused our lk_op_lora_t (%u bytes, zero tail)", p.struct_size);
  CHECK(seen->lora_scale == 0.5f && seen->lora_future == 0.0f, "params read %g %g", seen->lora_scale, seen->lora_future);
#if V21
  p.future_lora_param = 3.0f;
  int ok = b->supports(self, &op);
  if (pminor >= 1)
    CHECK(ok == 1 && seen->lora_future == 3.0f, "a 2.1 plugin did not use the 2.1 param");
  else
    CHECK(ok == 0, "a 2.0 plugin accepted a nonzero parameter it does not know");
  int32_t r = LK_HAS_FIELD(b, lk_backend_vt_t, future_backend_fn) && b->future_backend_fn ? b->future_backend_fn(self) : -1;
  CHECK(r == (pminor >= 1 ? 21 : -1), "2.1 backend function: %d", r);
#endif
  b->destroy(self);

  /* quantiser and loader: the 2.0 calls, and the 2.1 ones where present */
  void *qs = NULL;
  CHECK(q->create(NULL, &qs, &err) == LK_OK && q->row_bytes(qs, 8) == 8 && q->row_bytes(qs, 6) == 0, "quantiser");
  signed char blocks[8] = {1, -2, 3, -4, 5, -6, 7, -8};
  const void *parts[1] = {blocks};
  float deq[4] = {0};
  CHECK(q->dequantize(qs, parts, 1, 1, 4, deq, &err) == LK_OK && deq[0] == 5 && deq[3] == -8, "dequantize row 1");
  CHECK(l->probe("x.compat") == 50 && l->probe("x.gguf") == 0, "loader probe");
  void *file = NULL;
  CHECK(l->open("x.compat", &file, &err) == LK_OK && l->tensor_count(file) == 0, "loader open");
#if V21
  r = LK_HAS_FIELD(q, lk_quantiser_vt_t, future_quant_fn) && q->future_quant_fn ? q->future_quant_fn(qs) : -1;
  CHECK(r == (pminor >= 1 ? 21 : -1), "2.1 quantiser function: %d", r);
  r = LK_HAS_FIELD(l, lk_loader_vt_t, future_loader_fn) && l->future_loader_fn ? l->future_loader_fn(file) : -1;
  CHECK(r == (pminor >= 1 ? 21 : -1), "2.1 loader function: %d", r);
#endif
  l->close(file);
  q->destroy(qs);
  desc->fini();
  printf("  %s\n", failures ? "FAILED" : "ok: every kind of struct read and written by the rules");
  return failures ? 1 : 0;
}
