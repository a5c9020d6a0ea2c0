/* gguf_names.c - GGUF <-> Hugging Face tensor names for the llama family, and
 * the Q/K row permutation of convert_hf_to_gguf.py.
 *
 * Names: llama.cpp calls the tensors of a Llama-family model token_embd,
 * output_norm, output and blk.N.{attn_norm, attn_q, attn_k, attn_v,
 * attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down}.{weight,bias}; the
 * canonical names are Hugging Face's (model.embed_tokens, model.norm,
 * lm_head, model.layers.N.{input_layernorm, self_attn.q_proj, ...}). Names
 * outside the table pass through unchanged, both ways, so every name
 * round-trips. LoRA adapters (convert_lora_to_gguf.py) append .lora_a /
 * .lora_b to the GGUF name of the base weight.
 *
 * Permutation: for its RoPE layout, LlamaModel.permute reorders the rows of
 * attn_q (n_head = heads) and attn_k (n_head = kv heads), and of lora_b of
 * both:  w.reshape(n_head, 2, d/n_head/2, ...).swapaxes(1, 2).reshape(d, ...).
 * With hd = d/n_head and h2 = hd/2, GGUF row head*hd + 2k + half holds HF row
 * head*hd + half*h2 + k. A row here is everything below the outermost
 * dimension, so quantised rows move as whole blocks: exact. Qwen2 is
 * converted by a plain TextModel (no permute), so only llama permutes. */
#include "gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int gguf_arch_permutes(const char *arch) { return arch && !strcmp(arch, "llama"); }

int gguf_arch_mapped(const char *arch) { return arch && (!strcmp(arch, "llama") || !strcmp(arch, "qwen2")); }

typedef struct gguf_name_pair_t {
  const char *gguf;
  const char *hf;
  int perm;
} gguf_name_pair_t;

/* Inside blk.N / model.layers.N. */
static const gguf_name_pair_t gguf_layer_names[] = {
    {"attn_norm", "input_layernorm", GGUF_PERM_NONE},
    {"ffn_norm", "post_attention_layernorm", GGUF_PERM_NONE},
    {"attn_q", "self_attn.q_proj", GGUF_PERM_Q},
    {"attn_k", "self_attn.k_proj", GGUF_PERM_K},
    {"attn_v", "self_attn.v_proj", GGUF_PERM_NONE},
    {"attn_output", "self_attn.o_proj", GGUF_PERM_NONE},
    {"ffn_gate", "mlp.gate_proj", GGUF_PERM_NONE},
    {"ffn_up", "mlp.up_proj", GGUF_PERM_NONE},
    {"ffn_down", "mlp.down_proj", GGUF_PERM_NONE},
};

static const gguf_name_pair_t gguf_global_names[] = {
    {"token_embd", "model.embed_tokens", GGUF_PERM_NONE},
    {"output_norm", "model.norm", GGUF_PERM_NONE},
    {"output", "lm_head", GGUF_PERM_NONE},
};

#define GGUF_COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* "weight" or "bias" after the last dot; the stem is name[0, *stem_len). */
static const char *gguf_param_suffix(const char *name, size_t *stem_len) {
  const char *dot = strrchr(name, '.');
  if (!dot || (strcmp(dot + 1, "weight") && strcmp(dot + 1, "bias"))) return NULL;
  *stem_len = (size_t)(dot - name);
  return dot + 1;
}

/* Parse "<prefix><N>." with N canonical decimal digits; the rest at *rest. */
static int gguf_layer_prefix(const char *s, size_t n, const char *prefix, unsigned long *layer,
                             const char **rest) {
  size_t pl = strlen(prefix);
  if (n <= pl || strncmp(s, prefix, pl)) return 0;
  size_t i = pl, start = pl;
  while (i < n && s[i] >= '0' && s[i] <= '9') i++;
  size_t digits = i - start;
  if (digits == 0 || digits > 9 || (digits > 1 && s[start] == '0') || i >= n || s[i] != '.') return 0;
  *layer = strtoul(s + start, NULL, 10);
  *rest = s + i + 1;
  return 1;
}

static char *gguf_strdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = malloc(n);
  if (p) memcpy(p, s, n);
  return p;
}

/* The one translator: from = 0 reads GGUF names, 1 reads HF names. */
static char *gguf_translate(const char *name, int mapped, int from_hf, int *perm) {
  *perm = GGUF_PERM_NONE;
  size_t stem;
  const char *param = mapped ? gguf_param_suffix(name, &stem) : NULL;
  if (!param) return gguf_strdup(name);
  char *out = NULL;
  for (size_t i = 0; i < GGUF_COUNT(gguf_global_names); i++) {
    const gguf_name_pair_t *p = &gguf_global_names[i];
    const char *in = from_hf ? p->hf : p->gguf, *to = from_hf ? p->gguf : p->hf;
    if (strlen(in) == stem && !strncmp(name, in, stem)) {
      if (asprintf(&out, "%s.%s", to, param) < 0) return NULL;
      return out;
    }
  }
  unsigned long layer;
  const char *rest;
  if (gguf_layer_prefix(name, stem, from_hf ? "model.layers." : "blk.", &layer, &rest)) {
    size_t rl = (size_t)(name + stem - rest);
    for (size_t i = 0; i < GGUF_COUNT(gguf_layer_names); i++) {
      const gguf_name_pair_t *p = &gguf_layer_names[i];
      const char *in = from_hf ? p->hf : p->gguf, *to = from_hf ? p->gguf : p->hf;
      if (strlen(in) == rl && !strncmp(rest, in, rl)) {
        *perm = p->perm;
        if (asprintf(&out, "%s%lu.%s.%s", from_hf ? "blk." : "model.layers.", layer, to, param) < 0)
          return NULL;
        return out;
      }
    }
  }
  return gguf_strdup(name);
}

char *gguf_name_to_hf(const char *gguf_name, int mapped, int *perm) {
  return gguf_translate(gguf_name, mapped, 0, perm);
}

char *gguf_name_from_hf(const char *hf_name, int mapped, int *perm) {
  return gguf_translate(hf_name, mapped, 1, perm);
}

static int gguf_ends_with(const char *s, const char *suffix, size_t *stem) {
  size_t n = strlen(s), k = strlen(suffix);
  if (n <= k || strcmp(s + n - k, suffix)) return 0;
  *stem = n - k;
  return 1;
}

char *gguf_lora_name_to_hf(const char *gguf_name, int mapped, int *is_b, int *perm, int *oom) {
  size_t stem;
  *oom = 0;
  if (gguf_ends_with(gguf_name, ".lora_a", &stem))
    *is_b = 0;
  else if (gguf_ends_with(gguf_name, ".lora_b", &stem))
    *is_b = 1;
  else
    return NULL;
  char *base = strndup(gguf_name, stem);
  char *hf = base ? gguf_name_to_hf(base, mapped, perm) : NULL;
  free(base);
  if (!hf) {
    *oom = 1;
    return NULL;
  }
  size_t ws;
  if (gguf_ends_with(hf, ".weight", &ws)) hf[ws] = 0;
  char *out = NULL;
  if (asprintf(&out, "%s.lora_%c.weight", hf, *is_b ? 'B' : 'A') < 0) out = NULL, *oom = 1;
  free(hf);
  return out;
}

char *gguf_lora_module(const char *hf_name) {
  size_t stem;
  if (!gguf_ends_with(hf_name, ".lora_A.weight", &stem) && !gguf_ends_with(hf_name, ".lora_B.weight", &stem))
    return NULL;
  return strndup(hf_name, stem);
}

char *gguf_lora_name_from_hf(const char *hf_name, int mapped, int *is_b, int *perm, int *oom) {
  *oom = 0;
  size_t stem;
  if (gguf_ends_with(hf_name, ".lora_A.weight", &stem))
    *is_b = 0;
  else if (gguf_ends_with(hf_name, ".lora_B.weight", &stem))
    *is_b = 1;
  else
    return NULL;
  char *base = NULL;
  if (asprintf(&base, "%.*s.weight", (int)stem, hf_name) < 0) {
    *oom = 1;
    return NULL;
  }
  char *g = gguf_name_from_hf(base, mapped, perm);
  free(base);
  char *out = NULL;
  if (!g || asprintf(&out, "%s.lora_%c", g, *is_b ? 'b' : 'a') < 0) out = NULL, *oom = 1;
  free(g);
  return out;
}

/* ---- the permutation --------------------------------------------------------------- */

uint64_t gguf_permute_src_row(uint64_t i, uint64_t d, uint64_t n_head, int to_gguf) {
  uint64_t hd = d / n_head, h2 = hd / 2, head = i / hd, j = i % hd;
  if (to_gguf) /* dst GGUF row head*hd + 2k + half <- HF row head*hd + half*h2 + k */
    return head * hd + (j % 2) * h2 + j / 2;
  /* dst HF row head*hd + half*h2 + k <- GGUF row head*hd + 2k + half */
  return head * hd + 2 * (j % h2) + j / h2;
}

void gguf_permute_rows(uint8_t *dst, const uint8_t *src, uint64_t d, uint64_t unit, uint64_t n_head,
                       int to_gguf) {
  for (uint64_t i = 0; i < d; i++)
    memcpy(dst + i * unit, src + gguf_permute_src_row(i, d, n_head, to_gguf) * unit, (size_t)unit);
}
