/* train_ckpt.h - training checkpoints. Internal to the core (prefix tck_).
 *
 * A checkpoint is one safetensors file: named F32 tensors given by the
 * caller (the LoRA parameters and AdamW's m and v, e.g. "param.<name>",
 * "adam_m.<name>", "adam_v.<name>") and a __metadata__ of strings:
 *   "format": "lorakit-train-checkpoint", "version": "1",
 *   "state": a JSON object as text: at least "step" (integer >= 0); the
 *            trainer adds the data cursor, rng, hyper-parameters, the data's
 *            sha256 and the base model's fingerprint.
 * Files are written to a temporary in the same folder, fsynced, renamed.
 *
 * A checkpoint folder holds step-NNNNNNNN.safetensors files (the step
 * zero-padded to 8 digits) and "latest", a one-line text file naming the
 * newest one (written after it, atomically); saving keeps the newest K. */
#ifndef LK_TRAIN_CKPT_H
#define LK_TRAIN_CKPT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "train_batch.h"

#define TCK_FORMAT "lorakit-train-checkpoint"

typedef struct {
  const char *name;
  int ndim;            /* 1..4 */
  int64_t shape[4];
  float *data;         /* read by save, written by tck_get */
} tck_tensor;

typedef struct tck_ckpt tck_ckpt;

/* Writes a checkpoint file. STATE must be an object with an integer "step". */
int tck_save(const char *path, const tck_tensor *t, size_t n, const json_t *state, char *err, size_t errlen);

/* Opens and validates a checkpoint file (structure, format marker, state). */
int tck_open(const char *path, tck_ckpt **out, char *err, size_t errlen);
void tck_close(tck_ckpt *c);
const json_t *tck_state(const tck_ckpt *c);   /* borrowed */
int64_t tck_step(const tck_ckpt *c);
const char *tck_path(const tck_ckpt *c);
size_t tck_count(const tck_ckpt *c);          /* tensors in the file */
/* Copies tensor T->name into T->data after checking it exists with T's
 * shape; errors name the checkpoint, the tensor and both shapes. */
int tck_get(const tck_ckpt *c, const tck_tensor *t, char *err, size_t errlen);
/* tck_get for every tensor, and the file must hold no others. */
int tck_get_all(const tck_ckpt *c, const tck_tensor *t, size_t n, char *err, size_t errlen);
/* The state's string KEY must equal EXPECT (e.g. "base_fingerprint",
 * "data_sha256"): otherwise "checkpoint of another run" naming both. */
int tck_expect(const tck_ckpt *c, const char *key, const char *expect, char *err, size_t errlen);

/* The trainer's state object in one shape (every key optional but step):
 *   {"step": N, "cursor": tb_cursor_json, "rng": ["16 hex digits", ...],
 *    "hyper": {...}, "data_sha256": "...", "base_fingerprint": "..."}
 * HYPER is copied (NULL: none). Returns a new reference or NULL (no memory). */
json_t *tck_state_make(int64_t step, const tb_cursor *cursor, const uint64_t *rng, size_t n_rng, const json_t *hyper,
                       const char *data_sha256, const char *base_fingerprint);
/* Reads it back: CURSOR (if not NULL) from "cursor", RNG[N_RNG] (if
 * N_RNG) from "rng"; missing or malformed parts are errors naming the file. */
int tck_state_read(const tck_ckpt *c, tb_cursor *cursor, uint64_t *rng, size_t n_rng, char *err, size_t errlen);
/* Resuming: the checkpoint must belong to this run: the same data_sha256
 * and base_fingerprint (when given) and, for every key of HYPER (when
 * given), an equal value in the state's "hyper". The error names the first
 * difference with both values ("checkpoint of another run"). */
int tck_check_run(const tck_ckpt *c, const char *data_sha256, const char *base_fingerprint, const json_t *hyper,
                  char *err, size_t errlen);

/* Saves step STEP into folder DIR (created if missing), updates DIR/latest,
 * removes the oldest step files beyond KEEP (KEEP <= 0 keeps all). The
 * file's path goes to PATH_OUT when it is not NULL. */
int tck_dir_save(const char *dir, const tck_tensor *t, size_t n, const json_t *state, int keep, char *path_out,
                 size_t path_len, char *err, size_t errlen);
/* --resume's argument: a file is itself; a folder means the file its
 * "latest" names (or, without "latest", its highest step file). */
int tck_resolve(const char *path, char *out, size_t outlen, char *err, size_t errlen);

#endif
