/* lorakit_registry.h - the adapter registry: versions, tags and lineage of
 * LoRA adapters and the base models they belong to, in one SQLite file.
 *
 * Included by lorakit.h; may also be included on its own.
 *
 * The model, stated once:
 *   - An adapter NAME has versions 1, 2, 3 ... (NAME@N), numbered in the
 *     order they were added; a number is never reused, even after `remove`.
 *   - A REF names one version: "NAME@N", "NAME:TAG" or "NAME" (= the newest
 *     version, also reachable as the automatic tag "NAME:latest").
 *     Names and tags are 1..128 bytes, without '@', ':', white space or
 *     control characters, and do not start with '-'.
 *   - A version's payload is its adapter in canonical form (below), stored
 *     once per distinct content: addressed by the SHA-256 of the canonical
 *     bytes, zlib-compressed, shared by every version with the same content.
 *   - Lineage: edges child -> parent with a relation (LK_REL_*) and its
 *     parameters as a JSON object. Edges join adapter versions; an adapter
 *     version may also have its base model as a parent (schema 4: a fresh
 *     adapter trained_from the model it was trained on); a base model made
 *     by a merge or a quantisation has edges to the adapter version(s) and
 *     the model it was made from.
 *   - Base models are recorded by name, architecture, the shapes of their
 *     2-D weights, their config and a fingerprint: SHA-256 over the
 *     architecture, a hash of the config's structural keys, the name and
 *     shape of every tensor and the bytes of every 2-D ".weight" tensor.
 *
 * Canonical bytes of an adapter (what is hashed and stored; little-endian):
 *   "LKADAPT1"                          8-byte magic
 *   u32 scaling                         LK_SCALING_*
 *   u32 n_targets
 *   per target, sorted by name (bytewise):
 *     u32 name_len, name bytes (no NUL), u32 rank, f32 alpha,
 *     i64 in_features, i64 out_features
 *   then per target in the same order: A (rank x in f32), B (out x rank f32)
 * The same adapter read from a PEFT folder or a GGUF LoRA file has the same
 * canonical bytes (GGUF cannot hold rsLoRA or per-target alpha: a GGUF copy
 * of such an adapter has them folded into B, and so differs). The default
 * rank and alpha of a rebuilt adapter are those most targets share.
 *
 * Files and concurrency: WAL mode, a busy timeout, foreign keys on, every
 * write one transaction; any number of handles, threads and processes may
 * use one registry file at once. A process killed mid-write leaves the file
 * as it was before that write.
 *
 * Results that are documents (lists, lineage, reports) are JSON strings the
 * caller frees with lk_free. Errors: the status code, and the message in the
 * context's last error (lk_last_error) naming the registry, REF or file.
 *
 * Thread rule for every lk_registry_ function: [one-thread-per-context] - a
 * registry handle belongs to the context it was opened in, and calls on that
 * context and its objects must not overlap. */
#ifndef LORAKIT_REGISTRY_H
#define LORAKIT_REGISTRY_H

#include "lorakit.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lk_registry_t lk_registry_t;

/* The schema version this library writes (PRAGMA user_version). Older
 * registries are migrated forward when opened for writing; newer ones are
 * refused with LK_ERR_UNSUPPORTED and left untouched. */
#define LK_REGISTRY_SCHEMA 4

/* ---- lineage relations (append-only; carried as int32_t) ----------------- */
enum {
  LK_REL_NONE = 0,
  LK_REL_TRAINED_FROM = 1,
  LK_REL_MERGED_FROM = 2,
  LK_REL_QUANTIZED_FROM = 3,
  LK_REL_EXTRACTED_FROM = 4,
  LK_REL_COMBINED_FROM = 5,
  LK_REL_IMPORTED = 6
};

/* Directions for lk_registry_lineage (bit flags). */
enum { LK_LINEAGE_UP = 1, LK_LINEAGE_DOWN = 2, LK_LINEAGE_BOTH = 3 };

/* [any-thread] Free memory lorakit handed to the caller (the JSON and REF
 * strings of the lk_registry_ functions). NULL is a no-op. */
LK_API void lk_free(void *p);

/* [any-thread] "trained_from", "merged_from", ...; "none" for LK_REL_NONE and
 * "unknown" for values this version does not know. Static storage. */
LK_API const char *lk_registry_relation_name(int32_t relation);
/* [any-thread] The LK_REL_ value named by name; LK_REL_NONE (0) for NULL or
 * an unknown name. */
LK_API int32_t lk_registry_relation_parse(const char *name);

/* [any-thread] The default registry file: $LORAKIT_REGISTRY, else
 * $XDG_DATA_HOME/lorakit/registry.db, else ~/.local/share/lorakit/registry.db
 * (environment ignored for setuid programs). A new string the caller frees
 * with lk_free; NULL when no location can be worked out (no HOME). */
LK_API char *lk_registry_default_path(void);

/* ---- open and close --------------------------------------------------------- */

typedef struct lk_registry_opts_t {
  uint32_t struct_size;
  /* Nonzero: open for reading only (no file is created, nothing migrated). */
  uint32_t read_only;
  /* How long a writer waits for another to finish; 0 = 30000 ms. */
  uint32_t busy_timeout_ms;
  uint32_t reserved0; /* must be 0 */
} lk_registry_opts_t;
#define LK_MIN_SIZE_REGISTRY_OPTS LK_MIN_SIZE(lk_registry_opts_t, reserved0)

/* [one-thread-per-context] Open (creating it and its folder when absent, unless read_only) the
 * registry file at path; path NULL = lk_registry_default_path(). opts may be
 * NULL (defaults). A file that is not SQLite, an SQLite database that is not
 * a registry, or a registry of a newer schema is refused (LK_ERR_FORMAT,
 * LK_ERR_FORMAT, LK_ERR_UNSUPPORTED) and left exactly as it was. *out is
 * closed with lk_registry_close, before ctx is freed. */
LK_API lk_status lk_registry_open(lk_context_t *ctx, const char *path, const lk_registry_opts_t *opts,
                                  lk_registry_t **out);
/* [one-thread-per-context] Close the handle. NULL is a no-op. */
LK_API void lk_registry_close(lk_registry_t *reg);
/* [one-thread-per-context] The file the handle opened; owned by the handle, lives until close. */
LK_API const char *lk_registry_path(const lk_registry_t *reg);

/* ---- adding ----------------------------------------------------------------- */

/* Called during a long write with bytes done of total. It runs inside the
 * write transaction: it must not call back into the registry. */
typedef void (*lk_registry_progress_fn)(void *user, uint64_t done, uint64_t total);

typedef struct lk_registry_add_opts_t {
  uint32_t struct_size;
  /* LK_REL_* of every parent; needed with parents. With no parents and
   * base set, the version gets an edge to the base model with this
   * relation and params_json (e.g. a fresh adapter trained_from its base;
   * without parents or base nothing is linked, as before). With
   * parents and LK_REL_TRAINED_FROM the base edge is added as well
   * (training from an adapter trains on the base too). 0 = no edges. */
  int32_t relation;
  const char *const *parents;  /* n_parents REFs of existing versions (copied) */
  uint32_t n_parents;
  /* Nonzero: when a version with the same content already exists (any
   * name), add nothing and return that version's REF. */
  uint32_t reuse_existing;
  const char *params_json;     /* the relation's parameters: a JSON object, or NULL */
  /* The base model: a registered model's name, or the path of a model
   * (registered on the way, named after its file). NULL = none recorded. */
  const char *base;
  const char *operation;       /* what made it: "add" (NULL), "convert", "merge", "train" ... */
  const char *notes;           /* free text, or NULL */
  const char *loader;          /* lk_registry_add_path: loader name; NULL = by probe */
  const char *format;          /* lk_registry_add_adapter: source format; NULL = "memory" */
  /* Nonzero: record the base even when the adapter's targets do not fit it
   * (otherwise LK_ERR_MISMATCH naming the target and both shapes). */
  uint32_t force;
  /* lk_registry_add_path: a version of name whose stored files are
   * exactly the files at path is returned (its REF), nothing added, unless
   * this is nonzero. (Was reserved0: callers that zeroed it get the check.) */
  uint32_t new_version;
  lk_registry_progress_fn progress; /* may be NULL */
  void *progress_user;
} lk_registry_add_opts_t;
#define LK_MIN_SIZE_REGISTRY_ADD_OPTS LK_MIN_SIZE(lk_registry_add_opts_t, progress_user)

/* [one-thread-per-context] Add the adapter at path (PEFT folder, GGUF LoRA file: lk_adapter_load, with
 * the base model's config when opts->base names one), and every regular
 * file of that folder (or the file) byte for byte, as the next version of
 * name (NULL = named after the file or folder, e.g. "a1-lora" for
 * "out/a1-lora.gguf", with invalid characters replaced by '_'). opts may be
 * NULL. On success *out_ref (when out_ref is not NULL) is
 * the new "NAME@N", freed with lk_free. Errors: LK_ERR_INVALID_ARG for a bad
 * name, LK_ERR_NOT_FOUND for a parent or base that does not exist,
 * LK_ERR_MISMATCH for a base the adapter does not fit, LK_ERR_INVALID_ARG
 * naming the tensor and file for a NaN or infinite weight, and for names,
 * tags, notes, operations and parameters that are not UTF-8 or hold control
 * or bidirectional-override characters (notes may hold tab and newline);
 * LK_ERR_CORRUPT for a registry verify found damaged. Nothing is written. */
LK_API lk_status lk_registry_add_path(lk_registry_t *reg, const char *name, const char *path,
                                      const lk_registry_add_opts_t *opts, char **out_ref);
/* [one-thread-per-context] Add the in-memory adapter ad (read through the public adapter API; ad is
 * not changed and stays the caller's) as the next version of name. As
 * lk_registry_add_path otherwise. */
LK_API lk_status lk_registry_add_adapter(lk_registry_t *reg, const char *name, lk_adapter_t *ad,
                                         const lk_registry_add_opts_t *opts, char **out_ref);

typedef struct lk_registry_model_opts_t {
  uint32_t struct_size;
  int32_t relation;            /* LK_REL_* of the edges below; 0 = merged_from */
  const char *const *parents;  /* REFs of adapter versions it was made from */
  uint32_t n_parents;
  uint32_t reserved0;          /* must be 0 */
  const char *base;            /* the model it was made from: name or path, or NULL */
  const char *params_json;     /* parameters of the relation (JSON object) or NULL */
  const char *operation;       /* NULL = "add" */
  const char *notes;
  const char *loader;          /* NULL = by probe */
} lk_registry_model_opts_t;
#define LK_MIN_SIZE_REGISTRY_MODEL_OPTS LK_MIN_SIZE(lk_registry_model_opts_t, loader)

/* [one-thread-per-context] Record the base model at path under name (NULL = named after its file).
 * A model with the same fingerprint already recorded is reused (and its
 * name returned); a name taken by a different model is LK_ERR_EXISTS when
 * given explicitly, and made unique with the fingerprint when derived.
 * *out_name (may be NULL) is the model's name, freed with lk_free. */
LK_API lk_status lk_registry_add_model(lk_registry_t *reg, const char *name, const char *path,
                                       const lk_registry_model_opts_t *opts, char **out_name);

/* ---- reading ------------------------------------------------------------------ */

/* [one-thread-per-context] The canonical "NAME@N" of ref in *out_ref (lk_free). LK_ERR_NOT_FOUND
 * names what exists. */
LK_API lk_status lk_registry_resolve(lk_registry_t *reg, const char *ref, char **out_ref);
typedef struct lk_registry_find_opts_t {
  uint32_t struct_size;
  /* Nonzero: only versions whose stored files are exactly these bytes
   * (no match on canonical content). */
  uint32_t exact_only;
  const char *name;            /* only versions of this adapter name, or NULL */
  /* The base model whose config loading a GGUF LoRA needs: a recorded
   * model's name or a model path; NULL = none. */
  const char *base;
  const char *loader;          /* loader name; NULL = by probe */
} lk_registry_find_opts_t;

/* [one-thread-per-context] The version `what` names, in *out_ref
 * ("NAME@N", lk_free). what is a REF ("NAME@N", "NAME:TAG", "NAME") or
 * the path of an adapter (PEFT folder, GGUF LoRA file). A path is matched
 * by its exact bytes first (a version added from the same files), then,
 * unless opts->exact_only, by canonical content, preferring versions stored
 * in the path's own format; among equals the newest wins. When more than
 * one version fitted equally, *out_note (when out_note is not NULL; lk_free;
 * NULL otherwise) says which were candidates and which was chosen. opts may
 * be NULL. LK_ERR_NOT_FOUND when nothing matches; nothing is written. */
LK_API lk_status lk_registry_find(lk_registry_t *reg, const char *what, const lk_registry_find_opts_t *opts,
                                  char **out_ref, char **out_note);
/* [one-thread-per-context] The version ref as a new adapter of the registry's context (the caller
 * frees it with lk_adapter_free). The stored bytes are checked against their
 * hash on the way: LK_ERR_CORRUPT names the version when they differ. */
LK_API lk_status lk_registry_get(lk_registry_t *reg, const char *ref, lk_adapter_t **out);
/* [one-thread-per-context] Write version ref to path. A version added from
 * files (a PEFT folder, a GGUF LoRA file; schema 3 and later) is written
 * back as exactly those files when format is NULL or its stored format
 * ("format" of lk_registry_list). Otherwise it is converted: "peft" (a
 * folder) or "gguf-lora" (a file, using the recorded base model's config)
 * with lk_adapter_save; format NULL is "peft" for versions without files.
 * Through temporary files renamed into place. */
LK_API lk_status lk_registry_export(lk_registry_t *reg, const char *ref, const char *path,
                                    const char *format);

typedef struct lk_registry_list_opts_t {
  uint32_t struct_size;
  uint32_t newest_first;       /* nonzero: highest version first within a name */
  const char *name;            /* only this adapter name, or NULL */
  const char *base;            /* only versions of this base model (name or fingerprint prefix) */
  const char *tag;             /* only versions carrying this tag, or NULL */
  uint32_t limit;              /* at most this many; 0 = all */
  uint32_t reserved0;          /* must be 0 */
} lk_registry_list_opts_t;
#define LK_MIN_SIZE_REGISTRY_LIST_OPTS LK_MIN_SIZE(lk_registry_list_opts_t, reserved0)

/* [one-thread-per-context] Versions as a JSON array in *out_json (lk_free), ordered by name then
 * version. Each element: {"ref","name","version","tags":[..],"base",
 * "base_fingerprint","rank","alpha","scaling","target_modules":[..],
 * "n_targets","format","size","sha256","created","operation","notes",
 * "parents":[{"ref","kind","relation","params"}]} (kind "adapter", or
 * "model" for a base model it was trained from: ref is then the model's
 * name). opts may be NULL (all). */
LK_API lk_status lk_registry_list(lk_registry_t *reg, const lk_registry_list_opts_t *opts,
                                  char **out_json);
/* [one-thread-per-context] One version as a JSON object in *out_json
 * (lk_free): the fields of lk_registry_list, plus "stored" (compressed
 * bytes), "targets" (name, rank, alpha, in, out of each), "children",
 * the base model's record ("base_model") and "files" (path, size, sha256 of
 * each file the version was added from; [] when added from memory or
 * before schema 3). */
LK_API lk_status lk_registry_show(lk_registry_t *reg, const char *ref, char **out_json);
/* [one-thread-per-context] Base models as a JSON array in *out_json
 * (lk_free): name, architecture, fingerprint, path, parameters, created,
 * operation, notes, adapters (the number of versions recorded against it),
 * trained ([{"ref","kind","relation"}]: versions with a lineage edge to it,
 * e.g. trained_from), parents ([{"ref","kind","relation","params"}]). */
LK_API lk_status lk_registry_models(lk_registry_t *reg, char **out_json);

typedef struct lk_registry_lineage_opts_t {
  uint32_t struct_size;
  int32_t direction;           /* LK_LINEAGE_UP, _DOWN or _BOTH (0 = both) */
  uint32_t max_depth;          /* 0 = any depth */
  uint32_t reserved0;          /* must be 0 */
} lk_registry_lineage_opts_t;
#define LK_MIN_SIZE_REGISTRY_LINEAGE_OPTS LK_MIN_SIZE(lk_registry_lineage_opts_t, reserved0)

/* [one-thread-per-context] Ancestors and/or descendants of ref as a JSON
 * object in *out_json (lk_free): {"root": REF,
 * "nodes": [{"ref","kind":"adapter"|"model","depth","operation",...}],
 * "edges": [{"child","parent","relation","child_kind","parent_kind","params"}]}
 * with depth negative for ancestors, positive for descendants; a node of
 * kind "model" is a base model, its ref its name (an adapter's base model
 * it was trained from is an ancestor of kind "model"). opts may be NULL. */
LK_API lk_status lk_registry_lineage(lk_registry_t *reg, const char *ref,
                                     const lk_registry_lineage_opts_t *opts, char **out_json);
/* [one-thread-per-context] Add the edge child -> parent to existing versions (e.g. provenance found
 * later). A cycle (parent is child or descends from it) is refused with
 * LK_ERR_INVALID_ARG naming both; an existing edge is LK_ERR_EXISTS; nothing
 * is written then. */
LK_API lk_status lk_registry_link(lk_registry_t *reg, const char *child, const char *parent,
                                  int32_t relation, const char *params_json);

/* [one-thread-per-context] Per-target comparison of versions a and b as a
 * JSON object in *out_json (lk_free): config
 * differences (base, scaling, targets only in one, rank and alpha) and, for
 * each common target of equal shape, the Frobenius norms of s*B*A of each
 * and of their difference, and the relative difference |d| / |a|. */
LK_API lk_status lk_registry_diff(lk_registry_t *reg, const char *ref_a, const char *ref_b,
                                  char **out_json);

/* ---- changing ------------------------------------------------------------------- */

/* [one-thread-per-context] Point NAME:tag at version ref (moving it if it is elsewhere). "latest" is
 * kept automatically and cannot be set. */
LK_API lk_status lk_registry_tag(lk_registry_t *reg, const char *ref, const char *tag);
/* [one-thread-per-context] Remove tag from adapter name. LK_ERR_NOT_FOUND when it is not set. */
LK_API lk_status lk_registry_untag(lk_registry_t *reg, const char *name, const char *tag);
/* [one-thread-per-context] Remove version ref. Refused with LK_ERR_STATE while a tag points at it or
 * a version or model descends from it, unless force (which drops those tags
 * and edges too). The payload stays until lk_registry_gc. */
LK_API lk_status lk_registry_remove(lk_registry_t *reg, const char *ref, uint32_t force);
/* [one-thread-per-context] Recompute the hash of every stored payload and check the database's
 * structure and references. *out_json (may be NULL; lk_free) reports counts
 * and every problem, naming the versions affected. LK_OK when all is well,
 * LK_ERR_CORRUPT (message: the first problem) otherwise. */
LK_API lk_status lk_registry_verify(lk_registry_t *reg, char **out_json);
/* [one-thread-per-context] Drop payloads no version refers to and give their space back to the file
 * system. *out_json (may be NULL; lk_free): {"blobs_removed","bytes_freed"}. */
LK_API lk_status lk_registry_gc(lk_registry_t *reg, char **out_json);

#ifdef __cplusplus
}
#endif
#endif /* LORAKIT_REGISTRY_H */
