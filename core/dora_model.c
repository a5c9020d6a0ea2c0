/* dora_model.c - DoRA in lk_model_merge / lk_model_unmerge (model_ops.c).
 *
 * A DoRA merge cannot be undone from the merged weight alone (dora.c: W'
 * fixes the direction of each row of W + s B A, not its norm n). PEFT keeps
 * n in memory between merge and unmerge; a merged model FILE has to carry
 * it instead, so lk_model_merge of a DoRA adapter records, in the output's
 * metadata, one string entry "lorakit.dora" (safetensors __metadata__, or a
 * GGUF string key/value) holding JSON:
 *   {"scale": <the merge's scale>, "weight_norm": {"<target>": "<hex>"}}
 * where <hex> is the f32 little-endian bytes of n [out] for that target,
 * exact. lk_model_unmerge of a DoRA adapter reads it back, checks that it
 * covers every target at the same scale, undoes with lk_dora_unmerge
 * (W = W' n / m - s B A) and drops the entry from the unmerged output; a
 * model without it is refused, saying why. Readers that do not know the
 * key ignore it (transformers reads only "format"; llama.cpp skips unknown
 * keys). */
#include "internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DORA_KEY "lorakit.dora"

struct lk__dora_rec {
  lk_context_t *ctx;
  int undo;
  float scale;
  json_t *norms; /* target name -> hex string */
};

static const char hexd[] = "0123456789abcdef";

/* The object holding string entries of this model's metadata: GGUF's
 * "gguf"."kv" when the model is GGUF, else "safetensors_metadata"
 * (created when create). NULL when absent. */
static json_t *dora_strings(json_t *meta, int create) {
  json_t *g = json_object_get(meta, "gguf");
  if (json_is_object(g) && json_is_object(json_object_get(g, "kv"))) return json_object_get(g, "kv");
  json_t *sm = json_object_get(meta, "safetensors_metadata");
  if (!json_is_object(sm) && create) {
    sm = json_object();
    if (!sm || json_object_set_new(meta, "safetensors_metadata", sm)) return NULL;
  }
  return json_is_object(sm) ? sm : NULL;
}

void lk__dora_rec_free(lk__dora_rec *r) {
  if (!r) return;
  json_decref(r->norms);
  free(r);
}

lk_status lk__dora_rec_open(lk_context_t *ctx, const char *model_meta, const char *model, int undo, float scale,
                            lk__dora_rec **out) {
  *out = NULL;
  lk__dora_rec *r = calloc(1, sizeof *r);
  if (!r) return lk__fail(ctx, LK_ERR_NOMEM, "out of memory");
  r->ctx = ctx;
  r->undo = undo;
  r->scale = scale;
  if (!undo) {
    if (!(r->norms = json_object())) {
      free(r);
      return lk__fail(ctx, LK_ERR_NOMEM, "out of memory");
    }
    *out = r;
    return LK_OK;
  }
  json_t *meta = json_loads(model_meta ? model_meta : "{}", 0, NULL), *rec = NULL;
  json_t *strs = meta ? dora_strings(meta, 0) : NULL;
  const char *text = json_string_value(json_object_get(strs, DORA_KEY));
  lk_status st = LK_OK;
  if (!text)
    st = lk__fail(ctx, LK_ERR_UNSUPPORTED, "%s: a DoRA adapter cannot be unmerged from this model: it has no \""
                  DORA_KEY "\" record of the row norms ||W + s B A|| that lk_model_merge writes (the merged weights "
                  "alone fix only each row's direction)", model);
  else if (!(rec = json_loads(text, 0, NULL)) || !json_is_number(json_object_get(rec, "scale")) ||
           !json_is_object(json_object_get(rec, "weight_norm")))
    st = lk__fail(ctx, LK_ERR_FORMAT, "%s: the \"" DORA_KEY "\" record is not valid", model);
  else if (json_number_value(json_object_get(rec, "scale")) != (double)scale)
    st = lk__fail(ctx, LK_ERR_MISMATCH, "%s: the DoRA merge was made with scale %g; unmerge with that scale, not %g",
                  model, json_number_value(json_object_get(rec, "scale")), (double)scale);
  if (!st) r->norms = json_incref(json_object_get(rec, "weight_norm"));
  json_decref(rec);
  json_decref(meta);
  if (st) {
    free(r);
    return st;
  }
  *out = r;
  return LK_OK;
}

lk_status lk__dora_rec_target(lk__dora_rec *r, lk_backend_t *be, const lk_adapter_t *ad, uint32_t k, lk_tensor_t *W) {
  lk_target_info_t ti = {sizeof ti, 0, NULL, 0, 0, 0, 0};
  lk_status st = lk_adapter_target_info(ad, k, &ti);
  if (st) return st;
  size_t n = (size_t)ti.out_features;
  float *norm = malloc(n * sizeof *norm);
  char *hex = malloc(n * 8 + 1);
  if (!norm || !hex) {
    free(norm);
    free(hex);
    return lk__fail(r->ctx, LK_ERR_NOMEM, "out of memory");
  }
  if (!r->undo) {
    st = lk_dora_weight_norm(be, ad, k, W, r->scale, norm);
    if (!st) st = lk_merge(be, ad, k, W, r->scale);
    for (size_t i = 0; i < n && !st; i++) {
      uint32_t u;
      memcpy(&u, &norm[i], 4);
      for (int b = 0; b < 4; b++) { /* little-endian bytes */
        hex[i * 8 + b * 2] = hexd[(u >> (8 * b + 4)) & 15];
        hex[i * 8 + b * 2 + 1] = hexd[(u >> (8 * b)) & 15];
      }
    }
    hex[n * 8] = 0;
    if (!st && json_object_set_new(r->norms, ti.name, json_string(hex)))
      st = lk__fail(r->ctx, LK_ERR_NOMEM, "out of memory");
  } else {
    const char *s = json_string_value(json_object_get(r->norms, ti.name));
    if (!s || strlen(s) != n * 8)
      st = lk__fail(r->ctx, LK_ERR_MISMATCH, "the model's \"" DORA_KEY "\" record has no row norms for target %s "
                    "[%zu] (merged with another adapter?)", ti.name, n);
    for (size_t i = 0; i < n && !st; i++) {
      uint32_t u = 0;
      for (int c = 0; c < 8 && !st; c++) {
        const char *p = strchr(hexd, s[i * 8 + c]);
        if (!p || !*p) st = lk__fail(r->ctx, LK_ERR_FORMAT, "the \"" DORA_KEY "\" record of %s is not hex", ti.name);
        else u |= (uint32_t)(p - hexd) << (8 * (c / 2) + (c % 2 ? 0 : 4));
      }
      memcpy(&norm[i], &u, 4);
    }
    if (!st) st = lk_dora_unmerge(be, ad, k, W, r->scale, norm);
  }
  free(norm);
  free(hex);
  return st;
}

char *lk__dora_rec_metadata(lk__dora_rec *r, const char *model_meta) {
  json_t *meta = json_loads(model_meta ? model_meta : "{}", 0, NULL);
  json_t *strs = meta ? dora_strings(meta, !r->undo) : NULL;
  char *rec = NULL, *outs = NULL;
  int bad = !meta;
  if (!bad && r->undo) {
    if (strs) json_object_del(strs, DORA_KEY);
  } else if (!bad) {
    json_t *o = json_pack("{s:f, s:O}", "scale", (double)r->scale, "weight_norm", r->norms);
    rec = o ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(o);
    bad = !strs || !rec || json_object_set_new(strs, DORA_KEY, json_string(rec));
  }
  if (!bad) outs = json_dumps(meta, JSON_COMPACT);
  if (!outs) lk__fail(r->ctx, LK_ERR_NOMEM, "out of memory");
  free(rec);
  json_decref(meta);
  return outs;
}
