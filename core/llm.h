/* llm.h - the Llama family (llama, mistral, qwen2) on the engine: the
 * configuration (llm_cfg.c), the forward graph with LoRA applied on the fly
 * or merged (llm.c), and the LoRA trainer (llm_train.c). Every computation
 * is an engine graph run by a session (DESIGN.md section 5); nothing here is
 * a hand-written forward. Internal names carry the llm_ prefix. */
#ifndef LK_LLM_H
#define LK_LLM_H

#ifndef LORAKIT_STAGING
#define LORAKIT_STAGING
#endif
#include "internal.h"
#include "lorakit_ops.h"
#include "lorakit_staging.h"

/* The modules of one layer, in PEFT's names. */
enum { LLM_Q, LLM_K, LLM_V, LLM_O, LLM_GATE, LLM_UP, LLM_DOWN, LLM_NMOD };
extern const char *const llm_mod_name[LLM_NMOD];   /* "q_proj", ... */
extern const char *const llm_mod_parent[LLM_NMOD]; /* "self_attn" / "mlp" */

typedef struct llm_cfg {
  char arch[32];          /* "llama", "mistral", "qwen2" */
  int64_t vocab, hidden, inter, n_layers, n_heads, n_kv, head_dim, max_pos;
  float eps, theta;
  int32_t rope_scaling;   /* LK_ROPE_SCALING_* */
  float rope_factor, low_freq_factor, high_freq_factor;
  uint32_t original_max_pos;
  int tie;                /* lm_head = embed_tokens */
  int qkv_bias;           /* qwen2: q/k/v biases */
} llm_cfg;

/* The configuration from a model's metadata JSON (lk_model_metadata_json:
 * an HF folder's {"config": config.json} or a GGUF file's {"gguf": {"kv"}}),
 * or from config.json's own text. Errors name `what` (a path). */
lk_status llm_cfg_parse(lk_context_t *ctx, const char *json, const char *what, llm_cfg *out);

/* One linear module of a layer. */
typedef struct llm_lin {
  int64_t in, out;
} llm_lin;
llm_lin llm_module_shape(const llm_cfg *c, int mod);
/* "model.layers.L.self_attn.q_proj" into buf (the adapters' target names). */
void llm_module_name(char *buf, size_t n, int layer, int mod);

/* A LoRA target in a graph: A [r, in], B [out, r] tensors (PARAM when
 * training, FROZEN otherwise) and its scale. */
typedef struct llm_target {
  int32_t layer, mod;
  int64_t in, out;
  uint32_t rank;
  float scale;
  int32_t A, B;        /* graph tensors */
  int32_t ad_index;    /* the target's index in the adapter */
  int32_t drop_mask;   /* training with dropout: the mask INPUT [batch, seq, in], else -1 */
} llm_target;

typedef struct llm_build {
  int64_t batch, seq;
  int train;                   /* labels, cross-entropy, backward */
  const lk_adapter_t *adapter; /* NULL: base only */
  float adapter_mult;          /* the adapter's scale multiplier (default 1 when 0) */
  int merged;                  /* fold s B A into the weights at upload */
  float dropout;               /* LoRA dropout (training): a mask INPUT per target */
  const char *base_quant;      /* quantise the linear weights to this format (NULL: as stored) */
  int quant_roundtrip;         /* with base_quant: store the dequantised f32 copy instead */
  int keep_logits;             /* logits readable after a forward */
  int blocks;                  /* mark a block per layer (recomputation) */
  int keep_kv;                 /* keep each layer's rotated k and v (a prefill) */
  int64_t kv_slots;            /* > 0: a decode graph: seq must be 1, each layer attends
                                * to kv_slots cached positions (INPUT k/v caches
                                * [batch, kv_slots, n_kv, head_dim] and a mask
                                * [batch, 1, kv_slots + 1]) and to the new token */
} llm_build;

typedef struct llm_wt { /* a FROZEN tensor and where its value comes from */
  int32_t t;
  int64_t mi;       /* model tensor index */
  int32_t lora;     /* merged: the adapter target to fold in, -1 none */
  int32_t dtype;    /* graph dtype (LK_DTYPE_QUANT: quantised) */
  char *qformat;    /* quantised: the format */
  int requant;      /* quantise from f32 at upload (base_quant) */
  lk_quant_opts_t qopts;
  int has_qopts;
  int64_t rows, cols;
} llm_wt;

typedef struct llm_graph {
  lk_context_t *ctx;
  llm_cfg cfg;
  llm_build b;
  lk_x_graph_t *g;
  int32_t ids, pos, labels, logits, loss;
  int32_t mask;                      /* decode: the additive mask */
  int32_t *k_new, *v_new;            /* per layer: rotated k and v of this run (keep_kv / decode) */
  int32_t *k_cache, *v_cache;        /* decode: per layer, the cache inputs */
  llm_wt *w;
  uint32_t nw;
  llm_target *tg;
  uint32_t ntg;
} llm_graph;

/* Build the graph of model m (config c) for b. The LoRA targets are those
 * of b->adapter (on the fly unless b->merged); training makes them PARAMs. */
lk_status llm_graph_build(lk_context_t *ctx, lk_model_t *m, const llm_cfg *c, const llm_build *b, llm_graph *out);
void llm_graph_free(llm_graph *lg);
/* Upload every FROZEN weight of lg from m (and the adapter's A and B, or
 * their merge), the LoRA PARAMs from the adapter. */
lk_status llm_graph_upload(llm_graph *lg, lk_x_session_t *s, lk_model_t *m);
/* Set ids [batch, seq] (i32), positions 0..seq-1 and, when training, the
 * shifted labels (ids[:, 1:], the last position ignored). */
lk_status llm_graph_set_batch(llm_graph *lg, lk_x_session_t *s, const int32_t *ids);

/* The same with labels [batch, seq] given (already shifted; -100 ignored). */
lk_status llm_graph_set_batch_labels(llm_graph *lg, lk_x_session_t *s, const int32_t *ids, const int32_t *labels);

/* Logits [batch, seq, vocab] of ids through model m (with the adapter of b,
 * on the fly or merged) on backend be: one engine forward. */
lk_status llm_logits(lk_context_t *ctx, lk_backend_t *be, lk_model_t *m, const llm_build *b, const int32_t *ids,
                     float *logits);


/* ---- the LoRA trainer (llm_train.c) ----------------------------------------- */

typedef struct llm_train_opts {
  int64_t batch, seq;         /* one micro-batch */
  uint32_t grad_accum;        /* micro-batches per optimizer step (0: 1) */
  float beta1, beta2, eps;    /* AdamW */
  float weight_decay;
  float clip;                 /* max gradient norm; 0: off */
  int recompute;              /* activation recomputation per layer */
  int32_t compute;            /* LK_COMPUTE_F32 or LK_COMPUTE_BF16 (matmul-like ops) */
  const char *base_quant;     /* quantise the frozen linear weights (NULL: as stored) */
  int quant_roundtrip;        /* with base_quant: train on the dequantised f32 copy */
  float dropout;              /* LoRA dropout */
  uint64_t seed;              /* A's init (fresh adapter) and dropout */
  /* a fresh adapter (init_adapter NULL) */
  uint32_t rank;
  float alpha;
  int rslora;
  const char *targets;        /* "q_proj,v_proj" or "all-linear" */
  const char *init_adapter;   /* start from this adapter (its rank, alpha, scaling, targets) */
} llm_train_opts;

typedef struct llm_trainer llm_trainer;

lk_status llm_trainer_create(lk_context_t *ctx, lk_backend_t *be, lk_model_t *m, const llm_train_opts *o,
                             llm_trainer **out);
void llm_trainer_free(llm_trainer *t);
/* One optimizer step on grad_accum micro-batches (ids [grad_accum * batch,
 * seq]): forward + cross-entropy (mean over the non-ignored positions of all
 * micro-batches, labels shifted as transformers does) + backward to the LoRA
 * parameters, the gradients summed in one contiguous buffer, then clipping
 * and AdamW (torch's) on the engine's ops. *loss: the loss before the
 * update. */
lk_status llm_trainer_step(llm_trainer *t, const int32_t *ids, float lr, float *loss);
/* The same with given labels [grad_accum * batch, seq], already shifted
 * (labels[r][t] predicts position t + 1; -100 ignored, as train_batch.h
 * makes them): the loss is the mean over the counted positions of all
 * micro-batches. */
lk_status llm_trainer_step_labels(llm_trainer *t, const int32_t *ids, const int32_t *labels, float lr, float *loss);
lk_status llm_trainer_eval_labels(llm_trainer *t, const int32_t *ids, const int32_t *labels, float *loss);
/* The loss of grad_accum micro-batches, no update. */
lk_status llm_trainer_eval(llm_trainer *t, const int32_t *ids, float *loss);
/* Save the adapter as format ("peft" or "gguf-lora") at path. */
lk_status llm_trainer_save(llm_trainer *t, const char *path, const char *format);
/* Trainable parameters (the length of each state vector). */
uint64_t llm_trainer_n_params(const llm_trainer *t);
/* The last step's summed gradients (n_params floats: the all-reduce unit). */
float *llm_trainer_grads(llm_trainer *t);
/* Full optimizer state: params, AdamW m and v (n_params each; any may be
 * NULL), and the steps taken. */
lk_status llm_trainer_get_state(llm_trainer *t, float *params, float *m, float *v, int64_t *step);
lk_status llm_trainer_set_state(llm_trainer *t, const float *params, const float *m, const float *v, int64_t step);
/* The engine session's statistics (planner peak bytes). */
lk_status llm_trainer_stats(const llm_trainer *t, lk_x_session_stats_t *out);
/* The adapter being trained (its A/B are the current parameters after
 * llm_trainer_save or llm_trainer_sync). */
lk_adapter_t *llm_trainer_adapter(llm_trainer *t);
lk_status llm_trainer_sync(llm_trainer *t);
/* SHA-256 (hex) of the base model's tensors: names, dtypes, shapes, bytes. */
lk_status llm_base_fingerprint(lk_model_t *m, char hex[65]);

/* ---- generation: forward with a KV cache (llm.c) ---------------------------- */

typedef struct llm_kv llm_kv;
/* A cache for batch sequences of up to max_len positions through model m
 * (with the adapter of b on the fly or merged: b's batch, seq, train and
 * kv fields are ignored). */
lk_status llm_kv_create(lk_context_t *ctx, lk_backend_t *be, lk_model_t *m, const llm_build *b, int64_t batch,
                        int64_t max_len, llm_kv **out);
void llm_kv_free(llm_kv *kv);
/* Run the prompt ids [batch, n] (an engine forward of n positions), fill
 * the cache; logits [batch, n, vocab] (may be NULL). */
lk_status llm_kv_prefill(llm_kv *kv, const int32_t *ids, int64_t n, float *logits);
/* One more token per sequence (ids [batch]) at the next position: logits
 * [batch, vocab]. */
lk_status llm_kv_next(llm_kv *kv, const int32_t *ids, float *logits);
int64_t llm_kv_len(const llm_kv *kv);

#endif /* LK_LLM_H */
