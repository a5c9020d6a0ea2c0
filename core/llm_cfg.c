/* llm_cfg.c - a Llama-family configuration from Hugging Face's config.json
 * (llama, mistral, qwen2) or GGUF metadata (llama.*, qwen2.*, ...). */
#include "llm.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

const char *const llm_mod_name[LLM_NMOD] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
const char *const llm_mod_parent[LLM_NMOD] = {"self_attn", "self_attn", "self_attn", "self_attn", "mlp", "mlp", "mlp"};

llm_lin llm_module_shape(const llm_cfg *c, int mod) {
  llm_lin l = {c->hidden, c->hidden};
  switch (mod) {
  case LLM_Q: l.out = c->n_heads * c->head_dim; break;
  case LLM_K:
  case LLM_V: l.out = c->n_kv * c->head_dim; break;
  case LLM_O: l.in = c->n_heads * c->head_dim; break;
  case LLM_GATE:
  case LLM_UP: l.out = c->inter; break;
  default: l.in = c->inter; break;
  }
  return l;
}

void llm_module_name(char *buf, size_t n, int layer, int mod) {
  snprintf(buf, n, "model.layers.%d.%s.%s", layer, llm_mod_parent[mod], llm_mod_name[mod]);
}

static int cfg_num(const json_t *o, const char *key, double *out) {
  const json_t *v = o ? json_object_get(o, key) : NULL;
  if (!json_is_number(v)) return 0;
  *out = json_number_value(v);
  return 1;
}

/* Rope scaling from an HF object ("rope_scaling" or "rope_parameters"). */
static lk_status cfg_rope_hf(lk_context_t *ctx, const json_t *rs, const char *what, llm_cfg *c) {
  double v;
  if (!json_is_object(rs)) return LK_OK;
  if (cfg_num(rs, "rope_theta", &v)) c->theta = (float)v;
  const char *type = json_string_value(json_object_get(rs, "rope_type"));
  if (!type) type = json_string_value(json_object_get(rs, "type"));
  if (!type || !strcmp(type, "default")) return LK_OK;
  if (!strcmp(type, "linear")) {
    c->rope_scaling = LK_ROPE_SCALING_LINEAR;
  } else if (!strcmp(type, "llama3")) {
    c->rope_scaling = LK_ROPE_SCALING_LLAMA3;
    double lo = 0, hi = 0, om = 0;
    if (!cfg_num(rs, "low_freq_factor", &lo) || !cfg_num(rs, "high_freq_factor", &hi) ||
        !cfg_num(rs, "original_max_position_embeddings", &om) || !(lo > 0 && hi > lo && om > 0))
      return lk__fail(ctx, LK_ERR_FORMAT, "%s: llama3 rope scaling needs low_freq_factor < high_freq_factor and "
                      "original_max_position_embeddings", what);
    c->low_freq_factor = (float)lo;
    c->high_freq_factor = (float)hi;
    c->original_max_pos = (uint32_t)om;
  } else {
    return lk__fail(ctx, LK_ERR_UNSUPPORTED, "%s: rope scaling type \"%s\" is not supported (default, linear, llama3)",
                    what, type);
  }
  if (!cfg_num(rs, "factor", &v) || !(v > 0))
    return lk__fail(ctx, LK_ERR_FORMAT, "%s: rope scaling \"%s\" needs a factor > 0", what, type);
  c->rope_factor = (float)v;
  return LK_OK;
}

static lk_status cfg_hf(lk_context_t *ctx, const json_t *o, const char *what, llm_cfg *c) {
  const char *mt = json_string_value(json_object_get(o, "model_type"));
  if (!mt || (strcmp(mt, "llama") && strcmp(mt, "mistral") && strcmp(mt, "qwen2")))
    return lk__fail(ctx, LK_ERR_UNSUPPORTED, "%s: model_type \"%s\" is not a Llama-family model (llama, mistral, qwen2)",
                    what, mt ? mt : "(none)");
  snprintf(c->arch, sizeof c->arch, "%s", mt);
  double v;
  struct { const char *k; int64_t *dst; } need[] = {
      {"vocab_size", &c->vocab}, {"hidden_size", &c->hidden}, {"intermediate_size", &c->inter},
      {"num_hidden_layers", &c->n_layers}, {"num_attention_heads", &c->n_heads}};
  for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
    if (!cfg_num(o, need[i].k, &v) || v < 1 || v != floor(v))
      return lk__fail(ctx, LK_ERR_FORMAT, "%s: config has no valid \"%s\"", what, need[i].k);
    *need[i].dst = (int64_t)v;
  }
  c->n_kv = cfg_num(o, "num_key_value_heads", &v) && v >= 1 ? (int64_t)v : c->n_heads;
  c->head_dim = cfg_num(o, "head_dim", &v) && v >= 1 ? (int64_t)v : c->hidden / c->n_heads;
  c->max_pos = cfg_num(o, "max_position_embeddings", &v) ? (int64_t)v : 0;
  c->eps = cfg_num(o, "rms_norm_eps", &v) ? (float)v : 1e-6f;
  c->theta = cfg_num(o, "rope_theta", &v) ? (float)v : 10000.0f;
  const json_t *tie = json_object_get(o, "tie_word_embeddings");
  c->tie = json_is_true(tie);
  c->qkv_bias = !strcmp(mt, "qwen2") || json_is_true(json_object_get(o, "attention_bias"));
  const char *act = json_string_value(json_object_get(o, "hidden_act"));
  if (act && strcmp(act, "silu"))
    return lk__fail(ctx, LK_ERR_UNSUPPORTED, "%s: hidden_act \"%s\" is not supported (silu)", what, act);
  lk_status st = cfg_rope_hf(ctx, json_object_get(o, "rope_parameters"), what, c);
  if (!st) st = cfg_rope_hf(ctx, json_object_get(o, "rope_scaling"), what, c);
  return st;
}

static int kv_num(const json_t *kv, const char *arch, const char *key, double *out) {
  char k[128];
  snprintf(k, sizeof k, "%s.%s", arch, key);
  return cfg_num(kv, k, out);
}

static lk_status cfg_gguf(lk_context_t *ctx, const json_t *kv, const char *what, llm_cfg *c) {
  const char *arch = json_string_value(json_object_get(kv, "general.architecture"));
  if (!arch || (strcmp(arch, "llama") && strcmp(arch, "mistral") && strcmp(arch, "qwen2")))
    return lk__fail(ctx, LK_ERR_UNSUPPORTED, "%s: GGUF architecture \"%s\" is not a Llama-family model", what,
                    arch ? arch : "(none)");
  snprintf(c->arch, sizeof c->arch, "%s", arch);
  double v;
  struct { const char *k; int64_t *dst; } need[] = {
      {"embedding_length", &c->hidden}, {"feed_forward_length", &c->inter},
      {"block_count", &c->n_layers}, {"attention.head_count", &c->n_heads}};
  for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
    if (!kv_num(kv, arch, need[i].k, &v) || v < 1)
      return lk__fail(ctx, LK_ERR_FORMAT, "%s: GGUF metadata has no valid %s.%s", what, arch, need[i].k);
    *need[i].dst = (int64_t)v;
  }
  if (kv_num(kv, arch, "vocab_size", &v)) {
    c->vocab = (int64_t)v;
  } else {
    const json_t *tok = json_object_get(kv, "tokenizer.ggml.tokens");
    c->vocab = json_is_array(tok) ? (int64_t)json_array_size(tok) : 0;
  }
  c->n_kv = kv_num(kv, arch, "attention.head_count_kv", &v) ? (int64_t)v : c->n_heads;
  c->head_dim = kv_num(kv, arch, "attention.key_length", &v) ? (int64_t)v : c->hidden / c->n_heads;
  c->max_pos = kv_num(kv, arch, "context_length", &v) ? (int64_t)v : 0;
  c->eps = kv_num(kv, arch, "attention.layer_norm_rms_epsilon", &v) ? (float)v : 1e-5f;
  c->theta = kv_num(kv, arch, "rope.freq_base", &v) ? (float)v : 10000.0f;
  c->qkv_bias = !strcmp(arch, "qwen2");
  char k[128];
  snprintf(k, sizeof k, "%s.rope.scaling.type", arch);
  const char *st = json_string_value(json_object_get(kv, k));
  if (st && !strcmp(st, "linear")) {
    c->rope_scaling = LK_ROPE_SCALING_LINEAR;
    if (!kv_num(kv, arch, "rope.scaling.factor", &v) || !(v > 0))
      return lk__fail(ctx, LK_ERR_FORMAT, "%s: linear rope scaling without a factor > 0", what);
    c->rope_factor = (float)v;
  } else if (st && strcmp(st, "none")) {
    return lk__fail(ctx, LK_ERR_UNSUPPORTED, "%s: GGUF rope scaling \"%s\" is not supported", what, st);
  }
  /* tie: decided by the tensors (no output.weight) in llm_graph_build */
  c->tie = -1;
  return LK_OK;
}

lk_status llm_cfg_parse(lk_context_t *ctx, const char *json, const char *what, llm_cfg *out) {
  json_error_t jerr;
  json_t *root = json_loads(json ? json : "", 0, &jerr);
  if (!json_is_object(root)) {
    json_decref(root);
    return lk__fail(ctx, LK_ERR_FORMAT, "%s: the configuration is not a JSON object (%s)", what, jerr.text);
  }
  memset(out, 0, sizeof *out);
  lk_status st;
  const json_t *cfg = json_object_get(root, "config"), *gg = json_object_get(root, "gguf");
  if (json_is_object(cfg))
    st = cfg_hf(ctx, cfg, what, out);
  else if (json_is_object(gg) && json_is_object(json_object_get(gg, "kv")))
    st = cfg_gguf(ctx, json_object_get(gg, "kv"), what, out);
  else if (json_object_get(root, "model_type"))
    st = cfg_hf(ctx, root, what, out);
  else
    st = lk__fail(ctx, LK_ERR_FORMAT, "%s: no model configuration (config.json or GGUF metadata)", what);
  json_decref(root);
  if (!st && (out->n_heads % out->n_kv || out->head_dim % 2))
    st = lk__fail(ctx, LK_ERR_FORMAT, "%s: %lld attention heads are not a multiple of %lld KV heads, or head_dim %lld "
                  "is odd", what, (long long)out->n_heads, (long long)out->n_kv, (long long)out->head_dim);
  if (!st && out->vocab < 1) st = lk__fail(ctx, LK_ERR_FORMAT, "%s: unknown vocabulary size", what);
  return st;
}
