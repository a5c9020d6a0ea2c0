/* generate.h - what generation (generate.c) and evaluation (eval.c) share:
 * a base model opened with its adapters, each with a scale multiplier,
 * made into the one adapter llm.h's graph takes. Internal (prefix gen_). */
#ifndef LK_GENERATE_H
#define LK_GENERATE_H

#include "llm.h"

typedef struct gen_model {
  lk_model_t *m;
  lk_backend_t *be;
  llm_cfg cfg;
  lk_adapter_t *ad;      /* NULL: the base alone */
  llm_build b;           /* adapter, multiplier, merged set; the rest zero */
} gen_model;

/* Open the model at path on the backend (NULL: "cpu") and device, and its adapters: none; one
 * (used as loaded, its multiplier in b.adapter_mult); several (joined into
 * one adapter whose targets stack the adapters' ranks, each B column block
 * scaled by that adapter's s * multiplier, so its s B A is the sum). Errors
 * name the file. */
lk_status gen_open(lk_context_t *ctx, const char *path, const lk_x_adapter_ref_t *refs, uint32_t n, int merged,
                   const char *backend, uint32_t device, gen_model *out);
void gen_close(gen_model *g);

#endif /* LK_GENERATE_H */
