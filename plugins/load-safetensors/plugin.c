/* plugin.c - the load-safetensors plugin's entry point: ABI negotiation,
 * reference-counted init/fini, and the loader factory listing its three
 * components (safetensors, hf, peft). The loaders themselves need nothing
 * from the host but its convert service (peft writes F32 from f16/bf16). */
#include "st.h"

#include "plugin_refs.h"
#include <string.h>

static plug_refs st_refs = PLUG_REFS_INITIALIZER;

const lk_host_api_t *st_host(void) { return plug_refs_host(&st_refs); }

static const lk_loader_vt_t *const st_loaders[] = {&st_safetensors_vt, &st_hf_vt, &st_peft_vt};
#define ST_NLOADERS (sizeof st_loaders / sizeof st_loaders[0])

static uint32_t st_factory_count(void) { return (uint32_t)ST_NLOADERS; }

static const lk_loader_vt_t *st_factory_get(uint32_t index) {
  return index < ST_NLOADERS ? st_loaders[index] : NULL;
}

static const lk_loader_factory_t st_factory = {sizeof(lk_loader_factory_t), st_factory_count,
                                               st_factory_get};

static int32_t st_init(const lk_host_api_t *host, lk_error_t *err) {
  if (!host) return st_fail(err, LK_ERR_INVALID_ARG, "%s init: NULL host table", ST_PLUGIN_ID);
  if (!LK_HAS_FIELD(host, lk_host_api_t, convert))
    return st_fail(err, LK_ERR_ABI, "%s init: the host services table (struct_size %u) lacks convert",
                   ST_PLUGIN_ID, host->struct_size);
  plug_refs_acquire(&st_refs, host);
  return LK_OK;
}

static void st_fini(void) {
  plug_refs_release(&st_refs);
}

static const void *st_get_factory(const char *factory_id) {
  if (factory_id && !strcmp(factory_id, LK_FACTORY_LOADER)) return &st_factory;
  return NULL;
}

static const lk_plugin_t st_plugin = {
    sizeof(lk_plugin_t),
    LK_PLUGIN_ABI_VERSION,
    ST_PLUGIN_ID,
    "lorakit safetensors loaders",
    "1.0.0",
    "safetensors files, Hugging Face model folders and PEFT LoRA adapter folders: read (mmap) and write",
    st_init,
    st_fini,
    st_get_factory,
};

LK_PLUGIN_EXPORT int32_t lk_plugin_entry(uint32_t *abi_in_out, const lk_host_api_t *host,
                                         const lk_plugin_t **out) {
  (void)host; /* kept at init */
  int32_t rc = lk_plugin_negotiate(abi_in_out);
  if (rc != LK_OK) return rc;
  if (!out) return LK_ERR_INVALID_ARG;
  *out = &st_plugin;
  return LK_OK;
}
