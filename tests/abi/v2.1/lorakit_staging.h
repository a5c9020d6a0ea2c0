/* lorakit_staging.h - API under trial, NOT promised stable.
 *
 * Opt in by defining LORAKIT_STAGING before including this header; without
 * it the header declares nothing. Staged functions are named lk_x_ and
 * exported under their own symbol version node (LORAKIT_X), never the
 * stable one, so a host that used them fails to load against a library
 * that dropped them instead of calling something else. They move to
 * lorakit.h (renamed lk_, frozen) once they have been used for a release;
 * until then they may change or disappear in any minor version.
 *
 * Staged in 2.0: the engine's graph and session (DESIGN.md section 5), which
 * the training work builds on. Most hosts never need them: they use models,
 * adapters, sessions made by lorakit's model code, and lk_model_merge & co.
 */
#ifndef LORAKIT_STAGING_H
#define LORAKIT_STAGING_H

#include "lorakit.h"

#ifdef LORAKIT_STAGING

#ifdef __cplusplus
extern "C" {
#endif

/* ---- graphs ----------------------------------------------------------------
 * A graph holds tensors (ids from 0, each with a role, dtype and shape, or a
 * strided view of another) and ops (lorakit_ops.h) between them, in the
 * order they were added. Roles:
 *   INPUT   fed by the host before each run (token ids, labels, x);
 *   FROZEN  constant weights: uploaded to the device once, never a gradient;
 *   PARAM   trainable (LoRA A and B): resident on the device with its
 *           gradient and AdamW state;
 *   ACTIVATION  made by an op; the planner places it.
 * lk_x_graph_backward appends, for a scalar loss, the backward op of every
 * op on a path from a PARAM to the loss (each op's rule is in the core);
 * frozen tensors get no gradient buffers.
 *
 * What the implementation (core/graph.c, autodiff.c) does and refuses:
 *   - tensors are plain dtypes (f32, f16, bf16, i32, ...); the graph is
 *     append-only and frozen once it has its backward pass or a session;
 *   - an op may write a tensor another op wrote before (a MATMUL, then a
 *     LORA_FORWARD adding into it); reading it in between is refused by
 *     lk_x_graph_backward when it needs a gradient;
 *   - backward rules: MATMUL -> MATMUL with trans_w flipped (dx only: a
 *     MATMUL weight that would need a gradient is refused, train it through
 *     LoRA ops); LORA_FORWARD -> LORA_BACKWARD; RMSNORM -> RMSNORM_BACKWARD
 *     and ATTENTION -> ATTENTION_BACKWARD (rstd / lse added to the forward
 *     op when the graph did not ask for them); ROPE -> ROPE inverse;
 *     SWIGLU, SILU, CROSS_ENTROPY -> their backward ops; EMBEDDING ->
 *     EMBEDDING_BACKWARD when the table is a PARAM; COPY, ADD (not through
 *     a broadcast source), MUL, SCALE, SUM, SUMSQ by their rules; other
 *     ops on a gradient path are refused, naming them;
 *   - a tensor used by several ops gets the sum of their contributions (the
 *     ops' accumulate flags, else a temporary and an in-place ADD); the
 *     gradient of a tensor that has views is zeroed, then accumulated;
 *   - ops whose outputs get no gradient are not differentiated (pruned).
 *   - On failure, lk_x_graph_backward may leave ops appended: free the graph. */
typedef struct lk_x_graph_t lk_x_graph_t;
typedef struct lk_x_session_t lk_x_session_t;

enum { LK_X_INPUT = 0, LK_X_FROZEN = 1, LK_X_PARAM = 2, LK_X_ACTIVATION = 3 };

/* [one-thread-per-context] An empty graph. */
LK_API lk_status lk_x_graph_create(lk_context_t *ctx, lk_x_graph_t **out);
/* [one-thread-per-object] NULL is a no-op. */
LK_API void lk_x_graph_free(lk_x_graph_t *g);
/* [one-thread-per-object] A new tensor; returns its id (>= 0), or a negative
 * lk_status. name is copied (may be NULL). */
LK_API int32_t lk_x_tensor(lk_x_graph_t *g, const char *name, int32_t role, int32_t dtype,
                           uint32_t ndim, const int64_t *shape);
/* [one-thread-per-object] A FROZEN weight [rows, cols] quantised in format
 * qformat (a loaded quantiser's name) with opts (NULL: defaults); its
 * bytes, for lk_x_session_set/get, are the format's parts one after the
 * other, each exactly as lk_quant_layout sizes it. It may only be a
 * MATMUL's W (dequantised inside the op); it has no views. Returns its id
 * or LK_ERR_NOT_FOUND naming a format no plugin provides. */
LK_API int32_t lk_x_tensor_quant(lk_x_graph_t *g, const char *name, const char *qformat,
                                 const lk_quant_opts_t *opts, int64_t rows, int64_t cols);
/* [one-thread-per-object] A strided view of tensor `of` (strides in elements,
 * offset in elements from its first element); returns its id. */
LK_API int32_t lk_x_view(lk_x_graph_t *g, int32_t of, uint32_t ndim, const int64_t *shape,
                         const int64_t *stride, int64_t offset);
/* [one-thread-per-object] Keep tensor t readable after a run (the planner
 * never reuses its memory): lk_x_session_get reads only INPUT, FROZEN and
 * PARAM tensors, PARAM gradients, the loss, and tensors kept with this.
 * Call before the session is created. */
LK_API lk_status lk_x_tensor_keep(lk_x_graph_t *g, int32_t t);
/* [one-thread-per-object] Append op `id` (a core op) reading src tensors and
 * writing dst tensors (ACTIVATION tensors, or views of them), with its
 * parameter struct (copied; params_size bytes; NULL for defaults).
 * Shapes and dtypes are checked as the op's rule in lorakit_ops.h states. */
LK_API lk_status lk_x_op(lk_x_graph_t *g, int32_t id, const void *params, uint32_t params_size,
                         const int32_t *src, uint32_t n_src, const int32_t *dst, uint32_t n_dst);
/* [one-thread-per-object] End a block: the ops appended so far since the
 * previous mark (or the start) form one block, the next ops the next (a
 * transformer layer per block, say). Blocks matter only to a session made
 * with opts->recompute. A mark with no op since the previous one (or at
 * the start) does nothing. Call before lk_x_graph_backward (LK_ERR_STATE
 * after). */
LK_API lk_status lk_x_graph_mark_block(lk_x_graph_t *g);
/* [one-thread-per-object] Append the backward pass of scalar `loss` (an f32
 * tensor of one element). Afterwards lk_x_grad gives each PARAM's gradient. */
LK_API lk_status lk_x_graph_backward(lk_x_graph_t *g, int32_t loss);
/* [one-thread-per-object] The gradient tensor of PARAM p, or a negative status. */
LK_API int32_t lk_x_grad(const lk_x_graph_t *g, int32_t p);
/* [one-thread-per-object] Tensors and ops so far. */
LK_API uint32_t lk_x_graph_tensor_count(const lk_x_graph_t *g);
LK_API uint32_t lk_x_graph_op_count(const lk_x_graph_t *g);

/* ---- sessions ----------------------------------------------------------------
 * A session binds a graph to one backend: the memory planner places every
 * tensor (liveness and buffer reuse; activations the backward needs are
 * kept; optional recomputation per block), FROZEN tensors are uploaded once,
 * PARAMs, gradients and AdamW state stay on the device. A training step
 * (forward, backward, gradient clipping, AdamW) is submitted as one batch,
 * recorded once and replayed where the backend offers lk.backend.record/1. */
typedef struct lk_x_session_opts_t { /* caller-filled input */
  uint32_t struct_size;
  int32_t compute;       /* LK_COMPUTE_F32 (default) or LK_COMPUTE_BF16 */
  float beta1;           /* AdamW, PyTorch's defaults when 0: 0.9 */
  float beta2;           /* 0.999 */
  float eps;             /* 1e-8 */
  float weight_decay;    /* 0.01; a negative value means 0 */
  float max_grad_norm;   /* 0 = no clipping */
  uint32_t no_replay;    /* 1: never record/replay (submit each step) */
  uint32_t recompute;    /* 1: recompute activations per block in backward */
} lk_x_session_opts_t;
#define LK_MIN_SIZE_X_SESSION_OPTS LK_MIN_SIZE(lk_x_session_opts_t, recompute)

typedef struct lk_x_session_stats_t { /* output */
  uint32_t struct_size;
  uint32_t n_ops_step;       /* ops in one training step */
  uint64_t peak_bytes;       /* the planner's device memory for the graph */
  uint64_t naive_bytes;      /* the sum of every tensor's bytes (no reuse) */
  uint64_t uploads_frozen;   /* bytes of FROZEN tensors uploaded so far */
  uint64_t steps;            /* steps run */
  double core_seconds;       /* time in the core's own code for steps and
                              * forward runs (walking, parameter updates,
                              * submitting), not counting time inside the
                              * backend's calls */
  double wait_seconds;       /* time inside the backend: its submit/replay
                              * calls (a synchronous backend runs the ops
                              * there) and waits for its work */
  uint32_t n_buffers;        /* device buffers (arenas) the plan uses */
  uint32_t replayed;         /* 1: steps are replayed from a recording */
} lk_x_session_stats_t;
#define LK_MIN_SIZE_X_SESSION_STATS LK_MIN_SIZE(lk_x_session_stats_t, wait_seconds)

/* [one-thread-per-context] Plan g for be and allocate its buffers. The graph
 * must outlive the session. opts may be NULL. LK_ERR_UNSUPPORTED listing
 * every op the backend lacks, before anything is allocated or run (the
 * whole step is asked of lk_backend_check: forward, backward, the SUMSQ of
 * every PARAM gradient when clipping, one ADAMW per PARAM). The plan: one
 * or more device-local buffers (each within the device's max_alloc), every
 * storage at a multiple of its offset_align (and of 64 bytes); a view
 * whose start misses that alignment is refused. AdamW state starts at 0.
 * opts->recompute (graphs with blocks, lk_x_graph_mark_block): the forward
 * runs whole, keeping alive only what later blocks and the loss read; just
 * before the backward ops of each block but the last, the block's forward
 * ops whose outputs that backward reads run again (counted in n_ops_step),
 * so an activation of a block lives over its forward and again from its
 * recomputation to its last backward read, and the plan's peak_bytes
 * drops where activations dominate. Results equal those without recompute
 * on a backend whose ops are deterministic. A tensor written by the
 * forward ops of two blocks is refused (LK_ERR_UNSUPPORTED, naming it); a
 * graph without marks is one block and recomputes nothing.
 * opts->compute: LK_COMPUTE_BF16 sets `compute` in every MATMUL and
 * LORA_FORWARD/LORA_BACKWARD op of the step (a backend without bf16 runs
 * f32); PARAMs, their gradients and AdamW stay f32. */
LK_API lk_status lk_x_session_create(lk_x_graph_t *g, lk_backend_t *be,
                                     const lk_x_session_opts_t *opts, lk_x_session_t **out);
/* [one-thread-per-context] NULL is a no-op. */
LK_API void lk_x_session_free(lk_x_session_t *s);
/* [one-thread-per-context] Write a tensor's value (nbytes exactly its size;
 * a storage, not a view): an INPUT for the next run, a PARAM's value, a
 * FROZEN tensor (uploaded now, once: a second set is LK_ERR_STATE).
 * Ordered after the work already submitted. */
LK_API lk_status lk_x_session_set(lk_x_session_t *s, int32_t t, const void *src, uint64_t nbytes);
/* [one-thread-per-context] Read a tensor after the last run; waits for it.
 * Readable: INPUT, FROZEN and PARAM tensors, PARAM gradients, the loss,
 * and tensors marked with lk_x_tensor_keep (other activations share
 * memory: LK_ERR_STATE). */
LK_API lk_status lk_x_session_get(lk_x_session_t *s, int32_t t, void *dst, uint64_t nbytes);
/* [one-thread-per-context] Run the forward ops only. */
LK_API lk_status lk_x_session_forward(lk_x_session_t *s);
/* [one-thread-per-context] One training step: forward, backward, AdamW with
 * learning rate lr at step `step` (1-based), as one batch. Returns once
 * submitted (after the previous run finished: its parameter structs are
 * updated in place); lk_x_session_get waits. With lk.backend.record/1 (and
 * not opts->no_replay) the step is recorded at the first call and replayed
 * after. lr 0 computes gradients and leaves the parameters as they are. */
LK_API lk_status lk_x_session_step(lk_x_session_t *s, float lr, int64_t step);
/* [one-thread-per-context] Counters; out written up to its struct_size. */
LK_API lk_status lk_x_session_stats(const lk_x_session_t *s, lk_x_session_stats_t *out);


/* ---- tokenizers ([one-thread-per-object]) ----------------------------------
 * A tokenizer from a Hugging Face model folder (tokenizer.json preferred, as
 * transformers' AutoTokenizer does, else tokenizer.model), a tokenizer.json,
 * a SentencePiece tokenizer.model, or the tokenizer.ggml.* metadata of a
 * .gguf file (model "llama": SentencePiece BPE; "gpt2": byte-level BPE with
 * tokenizer.ggml.pre naming the split). Ids equal the reference tokenizer's
 * (sentencepiece, HF tokenizers, llama.cpp). A loaded tokenizer is
 * read-only: encode/decode on one tokenizer from several threads is safe;
 * a stream belongs to one thread. Buffers returned (ids, text) are freed
 * with lk_x_tokenizer_buf_free. */
typedef struct lk_x_tokenizer_t lk_x_tokenizer_t;
typedef struct lk_x_tok_stream_t lk_x_tok_stream_t;

/* [one-thread-per-context] Load from path; on failure the status
 * (LK_ERR_NOT_FOUND, LK_ERR_IO, LK_ERR_FORMAT, LK_ERR_UNSUPPORTED) and a
 * message naming the file in lk_last_error(ctx). ctx may be NULL (no
 * message kept). */
LK_API lk_status lk_x_tokenizer_load(lk_context_t *ctx, const char *path, lk_x_tokenizer_t **out);
/* [one-thread-per-object] NULL is a no-op. */
LK_API void lk_x_tokenizer_free(lk_x_tokenizer_t *tok);
/* [one-thread-per-object] Encode len bytes of UTF-8 text; add_bos nonzero
 * prepends the bos id when the tokenizer adds one (tokenizer.json's
 * post-processor, SentencePiece's bos_id, GGUF add_bos_token). Special added
 * tokens in the text (tokenizer.json) become their ids. *ids (n_ids
 * entries) is freed with lk_x_tokenizer_buf_free. */
LK_API lk_status lk_x_tokenizer_encode(const lk_x_tokenizer_t *tok, const char *text, size_t len, int add_bos,
                                       int32_t **ids, size_t *n_ids);
/* [one-thread-per-object] Decode ids to UTF-8 (*text NUL-terminated, *len
 * bytes; freed with lk_x_tokenizer_buf_free). Control tokens (bos, eos,
 * special added tokens) decode to nothing; byte pieces <0xNN> to their byte.
 * An id out of range: LK_ERR_INVALID_ARG. */
LK_API lk_status lk_x_tokenizer_decode(const lk_x_tokenizer_t *tok, const int32_t *ids, size_t n_ids, char **text,
                                       size_t *len);
/* [one-thread-per-object] Free a buffer the tokenizer returned; NULL is a no-op. */
LK_API void lk_x_tokenizer_buf_free(void *buf);
/* [one-thread-per-object] bos / eos id (-1 when none), vocabulary size,
 * the stored text of a piece (NULL out of range; owned by tok). */
LK_API int32_t lk_x_tokenizer_bos(const lk_x_tokenizer_t *tok);
LK_API int32_t lk_x_tokenizer_eos(const lk_x_tokenizer_t *tok);
LK_API int32_t lk_x_tokenizer_vocab_size(const lk_x_tokenizer_t *tok);
LK_API const char *lk_x_tokenizer_piece(const lk_x_tokenizer_t *tok, int32_t id);
/* [one-thread-per-object] Streaming decode for generation: put one id at a
 * time; *text (*len bytes, NUL-terminated, owned by the stream, valid until
 * its next call) is the text that became complete UTF-8; flush returns what
 * is left. The concatenation equals lk_x_tokenizer_decode of the ids. The
 * tokenizer must outlive the stream. */
LK_API lk_status lk_x_tok_stream_create(const lk_x_tokenizer_t *tok, lk_x_tok_stream_t **out);
LK_API lk_status lk_x_tok_stream_put(lk_x_tok_stream_t *s, int32_t id, const char **text, size_t *len);
LK_API lk_status lk_x_tok_stream_flush(lk_x_tok_stream_t *s, const char **text, size_t *len);
LK_API void lk_x_tok_stream_free(lk_x_tok_stream_t *s);
/* ---- training: LoRA / QLoRA of a Llama-family model (core/train.c) ---------
 * The whole operation `lorakit train` runs: open the base (HF folder or
 * GGUF; llama, mistral, qwen2), make or load the adapter, train it on the
 * engine (core/llm*.c: graph + session, AdamW as torch.optim.AdamW after
 * clip_grad_norm_), save it. Fill the options with lk_x_train_opts_init,
 * which sets the defaults stated beside each field. */
enum {
  LK_X_SCHEDULE_LINEAR = 0,               /* transformers' default */
  LK_X_SCHEDULE_CONSTANT = 1,             /* warm-up ignored */
  LK_X_SCHEDULE_COSINE = 2,
  LK_X_SCHEDULE_CONSTANT_WITH_WARMUP = 3
};

typedef struct lk_x_train_step_t { /* output, handed to the callback */
  uint32_t struct_size;
  int64_t step;          /* 0-based */
  float loss;            /* the batch loss before this step's update */
  float lr;              /* the learning rate of this step's update */
  double tokens_per_s;   /* tokens of this step / its wall time */
  double peak_rss_mb;    /* the process's peak resident memory so far */
  int64_t steps;         /* steps in the run */
  /* since the --data / checkpoint wiring (check struct_size before reading): */
  float eval_loss;       /* held-out loss after this step's update; NaN when not evaluated */
  const char *checkpoint; /* the checkpoint written after this step, else NULL (valid during the call) */
  int32_t signal;        /* nonzero: SIGINT/SIGTERM arrived; training stops after this step
                          * (checkpoint written, the adapter not saved) */
  const char *run_json;  /* {"hyper": {...}, "data_sha256", "base_fingerprint"} (valid during the call) */
  int64_t epoch;         /* --data: the epoch (0-based) the next batch comes from */
} lk_x_train_step_t;
#define LK_MIN_SIZE_X_TRAIN_STEP LK_MIN_SIZE(lk_x_train_step_t, steps)

/* Return nonzero to stop after this step (the adapter is still saved). */
typedef int (*lk_x_train_callback)(void *user, const lk_x_train_step_t *step);

typedef struct lk_x_train_opts_t { /* caller-filled input */
  uint32_t struct_size;
  const char *model;        /* base model path (required) */
  const char *init_adapter; /* start from this adapter (its rank, alpha, scaling, targets); NULL: fresh */
  const char *tokens;       /* safetensors with input_ids (i64 or i32) [steps, batch, seq] (required) */
  uint32_t rank;            /* fresh adapter: 8 */
  float alpha;              /* 16 */
  const char *targets;      /* "q_proj,v_proj" (PEFT's Llama default) or "all-linear" */
  uint32_t rslora;          /* 0: scale alpha/r; 1: alpha/sqrt(r) */
  float dropout;            /* 0 */
  float lr;                 /* 5e-5 (transformers' Trainer) */
  int64_t steps;            /* 0: every batch of the tokens file */
  int64_t batch;            /* 0: the file's */
  int64_t seq_len;          /* 0: the file's */
  uint32_t grad_accum;      /* micro-batches per step (divides batch): 1 */
  int64_t warmup;           /* warm-up steps: 0 */
  int32_t schedule;         /* LK_X_SCHEDULE_LINEAR */
  float weight_decay;       /* 0.01 (torch.optim.AdamW) */
  float clip;               /* max gradient norm 1.0; 0: off */
  float beta1, beta2, eps;  /* 0.9, 0.999, 1e-8 */
  uint64_t seed;            /* 42 */
  const char *base_quant;   /* quantise the frozen linear weights ("nf4", "q4_0", "q8_0"); NULL: as stored */
  uint32_t threads;         /* informational: threads come from the context */
  uint32_t checkpointing;   /* 1: recompute activations per layer in backward */
  const char *output;       /* adapter path (required) */
  const char *output_format; /* "peft" (default) or "gguf-lora" */
  lk_x_train_callback callback; /* per step, may be NULL */
  void *user;
  /* since the --data / checkpoint wiring: */
  const char *data;         /* text / JSONL / fortune file, tokenised by the model's own tokenizer
                             * (instead of tokens; then batch and seq_len are required) */
  const char *data_format;  /* "auto" (default), "text", "jsonl", "jsonl-pc", "fortune" */
  int64_t epochs;           /* data: epochs when steps is 0 (default 1) */
  double eval_frac;         /* data: held-out fraction of the examples (0: none) */
  int64_t eval_count;       /* data: held-out examples (overrides eval_frac) */
  int64_t eval_every;       /* eval loss every K steps and at the end (0: only at the end) */
  int64_t save_every;       /* checkpoint every K steps (0: none, but on a signal) */
  const char *checkpoint_dir; /* NULL: "<output>.ckpt" */
  int32_t keep_checkpoints; /* newest kept (default 3; <= 0 all) */
  const char *resume;       /* checkpoint file or folder to continue from (the same run) */
  uint32_t handle_signals;  /* 1: SIGINT/SIGTERM write a checkpoint and stop (see lk_x_train_step_t.signal) */
  /* since bf16 compute: */
  int32_t compute;          /* LK_COMPUTE_F32 (default, the reference) or LK_COMPUTE_BF16: the
                             * session's matmul and LoRA ops take bf16 operands with f32 sums
                             * (LoRA weights, gradients and AdamW state stay f32) */
  const char *backend;      /* backend plugin name (NULL: "cpu") */
  uint32_t device;          /* its device index (0) */
} lk_x_train_opts_t;
#define LK_MIN_SIZE_X_TRAIN_OPTS LK_MIN_SIZE(lk_x_train_opts_t, user)

/* [one-thread-per-object] The defaults above, struct_size set. */
LK_API void lk_x_train_opts_init(lk_x_train_opts_t *o);
/* [one-thread-per-context] Train and save. Errors name the file and the
 * problem (a missing tokens file, a batch that does not match, a target
 * module that does not exist...); nothing is written on failure. */
LK_API lk_status lk_x_train(lk_context_t *ctx, const lk_x_train_opts_t *o);
/* [one-thread-per-object] The learning rate of step (0-based) of `steps`,
 * as transformers' get_scheduler(schedule, warmup, steps) gives it (a
 * wrapper of core/train_sched.c, the one implementation). */
LK_API float lk_x_train_lr(int32_t schedule, float lr, int64_t step, int64_t warmup, int64_t steps);

/* ---- generation and evaluation of a Llama-family model (core/generate.c,
 * core/eval.c) ---------------------------------------------------------------
 * lk_x_generate: prompt -> tokens, with the base (HF folder or GGUF) and any
 * number of LoRA adapters, each with a scale multiplier, applied on the fly
 * or merged into the weights. The prompt is run once (prefill), then one
 * token at a time through a KV cache; each token is chosen from its logits
 * (greedy when temperature <= 0; else temperature, top-k, top-p and a draw
 * from a seeded xoshiro256** generator: the same seed and inputs give the
 * same tokens). Stops at the tokenizer's eos, after max_tokens, at the
 * model's context, or when the callback asks. Text reaches the callback as
 * soon as it is complete UTF-8 (the tokenizer's streaming decode). */
typedef struct lk_x_adapter_ref_t {
  const char *path;   /* PEFT folder or GGUF LoRA file */
  float scale;        /* multiplier of the adapter's own scale (0 means 1) */
} lk_x_adapter_ref_t;

/* Called per generated token: id, and the text that became complete with it
 * (text may be empty, len 0; valid during the call). At the end it is called
 * once more with id -1 and whatever the stream still held (may be empty).
 * Return nonzero to stop. */
typedef int (*lk_x_generate_callback)(void *user, int32_t id, const char *text, size_t len);

typedef struct lk_x_generate_opts_t { /* caller-filled input */
  uint32_t struct_size;
  const char *model;                  /* base model path (required) */
  const char *tokenizer;              /* NULL: the model's own (folder or GGUF) */
  const lk_x_adapter_ref_t *adapters; /* n_adapters entries, may be NULL */
  uint32_t n_adapters;
  uint32_t merged;                    /* 1: fold s B A into the weights; 0: on the fly */
  const char *prompt;                 /* UTF-8 (required; may be empty: bos only) */
  uint32_t add_bos;                   /* 1 (default): the tokenizer's bos first */
  int64_t max_tokens;                 /* new tokens at most: 64 */
  float temperature;                  /* 0: greedy (default) */
  int32_t top_k;                      /* 0: off */
  float top_p;                        /* 1: off */
  uint64_t seed;                      /* 42 */
  lk_x_generate_callback callback;    /* may be NULL */
  void *user;
  /* appended (read only when struct_size covers them): */
  const char *backend;                /* backend plugin name (NULL: "cpu") */
  uint32_t device;                    /* its device index (0) */
} lk_x_generate_opts_t;
#define LK_MIN_SIZE_X_GENERATE_OPTS LK_MIN_SIZE(lk_x_generate_opts_t, user)

enum {
  LK_X_STOP_EOS = 0,        /* the model gave eos (not passed to the callback's text) */
  LK_X_STOP_MAX_TOKENS = 1, /* max_tokens reached */
  LK_X_STOP_CONTEXT = 2,    /* the model's context is full */
  LK_X_STOP_CALLBACK = 3    /* the callback returned nonzero */
};

typedef struct lk_x_generate_result_t { /* output */
  uint32_t struct_size;
  int64_t prompt_tokens;    /* bos included */
  int64_t new_tokens;       /* generated (eos included when it stopped there) */
  int32_t stop;             /* LK_X_STOP_* */
  double prefill_seconds;   /* the prompt's forward */
  double decode_seconds;    /* the rest */
} lk_x_generate_result_t;
#define LK_MIN_SIZE_X_GENERATE_RESULT LK_MIN_SIZE(lk_x_generate_result_t, decode_seconds)

/* [one-thread-per-object] The defaults above, struct_size set. */
LK_API void lk_x_generate_opts_init(lk_x_generate_opts_t *o);
/* [one-thread-per-context] Generate. res may be NULL. Errors name the file
 * and the problem (a missing model or adapter, an adapter for another
 * architecture, a prompt longer than the context). */
LK_API lk_status lk_x_generate(lk_context_t *ctx, const lk_x_generate_opts_t *o, lk_x_generate_result_t *res);

/* lk_x_eval: the mean next-token cross-entropy (nats) of a model (with
 * adapters, as lk_x_generate) over all non-masked positions of a data set,
 * and the perplexity exp(loss). Data from a text / JSONL / fortune file
 * (tokenised by the model's tokenizer, each example [bos] ids [eos], packed
 * in file order into windows of seq_len tokens as the trainer packs them:
 * within a window position t predicts token t + 1; the last window padded),
 * or pre-tokenised batches (a safetensors input_ids [steps, batch, seq], as
 * lk_x_train reads them; every position but each row's last is scored). */
typedef struct lk_x_eval_opts_t { /* caller-filled input */
  uint32_t struct_size;
  const char *model;                  /* required */
  const char *tokenizer;              /* NULL: the model's own */
  const lk_x_adapter_ref_t *adapters;
  uint32_t n_adapters;
  uint32_t merged;
  const char *data;                   /* text data (data or tokens required) */
  const char *data_format;            /* "auto" (default), "text", "jsonl", "jsonl-pc", "fortune" */
  const char *tokens;                 /* pre-tokenised batches */
  int64_t seq_len;                    /* data: 128; tokens: the file's */
  int64_t batch;                      /* windows per forward (data): 8 */
  int64_t max_batches;                /* 0: all; else only the first max_batches batches */
  /* appended (read only when struct_size covers them): */
  const char *backend;                /* backend plugin name (NULL: "cpu") */
  uint32_t device;                    /* its device index (0) */
} lk_x_eval_opts_t;
#define LK_MIN_SIZE_X_EVAL_OPTS LK_MIN_SIZE(lk_x_eval_opts_t, max_batches)

typedef struct lk_x_eval_result_t { /* output */
  uint32_t struct_size;
  double loss;              /* mean cross-entropy over the scored positions */
  double perplexity;        /* exp(loss) */
  int64_t tokens;           /* positions scored */
  int64_t batches;          /* forwards run */
  int64_t examples;         /* data: examples read (0 for tokens) */
  double seconds;
} lk_x_eval_result_t;
#define LK_MIN_SIZE_X_EVAL_RESULT LK_MIN_SIZE(lk_x_eval_result_t, seconds)

/* [one-thread-per-object] Defaults, struct_size set. */
LK_API void lk_x_eval_opts_init(lk_x_eval_opts_t *o);
/* [one-thread-per-context] Evaluate; errors name the file and the problem. */
LK_API lk_status lk_x_eval(lk_context_t *ctx, const lk_x_eval_opts_t *o, lk_x_eval_result_t *res);

#ifdef __cplusplus
}
#endif

#endif /* LORAKIT_STAGING */
#endif /* LORAKIT_STAGING_H */
