/* reg.h - private declarations shared by the registry's files (registry/):
 * the handle, SQL helpers, canonical bytes, payload storage, REF resolution.
 * Nothing here is part of the ABI; every name carries the reg_ prefix and is
 * hidden by the library's version script. */
#ifndef LK_REG_H
#define LK_REG_H

#include "internal.h"

#include <jansson.h>
#include <sqlite3.h>

struct lk_registry_t {
  lk_context_t *ctx;
  sqlite3 *db;
  char *path;
  int read_only;
  int schema; /* the file's schema version (below LK_REGISTRY_SCHEMA only on read-only handles) */
  unsigned busy_ms;
};

/* Raw payload bytes are stored in chunks of this size (the first chunk holds
 * only the canonical header, so `show` reads targets without the weights). */
#define REG_CHUNK (4u << 20)
#define REG_NAME_MAX 128
#define REG_HEX 65 /* a SHA-256 in hex, with its NUL */

/* ---- store.c: handle, errors, transactions ------------------------------------ */

/* Record an SQLite failure of reg (what: the operation) and return its
 * lorakit status (LK_ERR_BUSY, LK_ERR_CORRUPT, LK_ERR_IO ...). */
lk_status reg_sql_fail(lk_registry_t *reg, int rc, const char *what);
/* Prefix the context's last error: "<fmt...>: <last error>", as code. */
lk_status reg_wrap(lk_registry_t *reg, lk_status code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Prepare sql; on failure records the error. */
lk_status reg_prepare(lk_registry_t *reg, const char *sql, sqlite3_stmt **st);
/* Run statements without results. */
lk_status reg_exec(lk_registry_t *reg, const char *sql);
/* BEGIN IMMEDIATE (waiting out other writers), COMMIT, ROLLBACK. */
lk_status reg_begin(lk_registry_t *reg);
lk_status reg_commit(lk_registry_t *reg);
void reg_rollback(lk_registry_t *reg);
/* Refuse writes on a read-only handle. */
lk_status reg_writable(lk_registry_t *reg, const char *what);
/* Copy a caller's options struct (struct_size first) into a zeroed local of
 * size n: fields the caller's version lacks stay 0; a larger struct is
 * accepted only when its unknown tail is zero. */
lk_status reg_opts(lk_registry_t *reg, void *dst, size_t n, const void *src, const char *what);
/* A malloc'd copy of the JSON document j, compact (or indented); NULL on OOM. */
char *reg_json_string(json_t *j);
/* malloc'd copy of s. */
char *reg_strdup(const char *s);
/* 1 when s is a valid adapter/model name or tag (also valid text). */
int reg_valid_name(const char *s);
/* One UTF-8 sequence at p: its length (code point in *cp), 0 if malformed. */
size_t reg_utf8_next(const unsigned char *p, uint32_t *cp);
/* C0/C1 controls, DEL, bidirectional overrides and isolates. */
int reg_unsafe_cp(uint32_t cp);
/* 1 when s (NULL allowed) is UTF-8 without reg_unsafe_cp characters
 * (multiline: tab and newline allowed). */
int reg_valid_text(const char *s, int multiline);
/* Refuse invalid text naming what; params must be a JSON object whose
 * strings are valid text. */
lk_status reg_check_text(lk_registry_t *reg, const char *what, const char *s, int multiline);
lk_status reg_check_params(lk_registry_t *reg, const char *what, const char *params);
/* Record (first_problem) or clear (NULL) the damage marker verify leaves. */
void reg_mark_damaged(lk_registry_t *reg, const char *first_problem);
/* Record an invalid-name error. */
lk_status reg_bad_name(lk_registry_t *reg, const char *what, const char *s);

/* ---- json.c: JSON text for the documents returned --------------------------------------- */

typedef struct reg_out {
  char *p;
  size_t n, cap;
  int oom;
} reg_out;

void reg_out_raw(reg_out *o, const char *s, size_t n);
void reg_out_c(reg_out *o, char c);
/* s as an escaped JSON string; NULL as null. */
void reg_out_str(reg_out *o, const char *s);
/* "key": */
void reg_out_key(reg_out *o, const char *key);
void reg_out_int(reg_out *o, int64_t v);
void reg_out_num(reg_out *o, double v);
/* "2025-01-31T12:00:00Z" (UTC) */
void reg_out_time(reg_out *o, int64_t unix_seconds);
/* "NAME@N" */
void reg_out_ref(reg_out *o, const char *name, int64_t version);
/* JSON text the registry stored itself, copied; NULL or "" as null. */
void reg_out_json(reg_out *o, const char *json);
/* JSON text made safe in place: invalid UTF-8 bytes as the text \xNN,
 * DEL, C1 and bidirectional overrides as \u escapes. Takes ownership;
 * returns the text (maybe moved) or NULL on OOM. */
char *reg_json_repair(char *text);
/* Hand the text to the caller (*out, malloc'd, repaired) or fail with LK_ERR_NOMEM. */
lk_status reg_out_finish(lk_registry_t *reg, reg_out *o, char **out);

/* ---- canon.c: canonical bytes and hashing ------------------------------- */

typedef struct reg_target {
  char *name;
  uint32_t rank;
  float alpha;
  int64_t in, out;
} reg_target;

/* What the canonical header says (and where the weights start). */
typedef struct reg_canon_info {
  int32_t scaling;
  uint32_t n_targets;
  reg_target *targets;
  uint64_t header_size; /* bytes of the header */
  uint64_t total_size;  /* header + every A and B */
} reg_canon_info;

void reg_canon_info_free(reg_canon_info *ci);
/* Canonical bytes of ad (malloc'd in *out, size *n). */
lk_status reg_canon_encode(lk_registry_t *reg, lk_adapter_t *ad, unsigned char **out, uint64_t *n,
                           reg_canon_info *ci);
/* Parse a canonical header from buf[0..n); LK_ERR_CORRUPT when malformed.
 * With need_all, n must also hold every weight. */
lk_status reg_canon_parse(lk_registry_t *reg, const unsigned char *buf, uint64_t n, int need_all,
                          reg_canon_info *ci, const char *label);
/* LK_ERR_INVALID_ARG naming label, the tensor and the element when a
 * weight of the complete canonical bytes buf is NaN or infinite. */
lk_status reg_canon_finite(lk_registry_t *reg, const unsigned char *buf, uint64_t n, const reg_canon_info *ci,
                           const char *label);
/* The (rank, alpha) most targets share (ties: first by name). */
void reg_canon_defaults(const reg_canon_info *ci, uint32_t *rank, float *alpha);
/* A new adapter of reg's context from complete canonical bytes. */
lk_status reg_canon_decode(lk_registry_t *reg, const unsigned char *buf, uint64_t n, lk_adapter_t **out,
                           const char *label);
/* SHA-256 of buf in hex, and a streaming form (reg_sha_new returns NULL on
 * OOM; reg_sha_final frees the state). */
void reg_sha256_hex(const void *buf, uint64_t n, char hex[REG_HEX]);
typedef struct reg_sha reg_sha;
reg_sha *reg_sha_new(void);
void reg_sha_update(reg_sha *s, const void *buf, uint64_t n);
void reg_sha_final(reg_sha *s, char hex[REG_HEX]);

/* ---- blob.c: payload storage ---------------------------------------------------------- */

/* A payload compressed into chunks, ready to store. */
typedef struct reg_zchunks {
  uint32_t n;
  unsigned char **data;
  uint64_t *zsize, *raw;
  uint64_t stored; /* sum of zsize */
} reg_zchunks;

void reg_zchunks_free(reg_zchunks *z);
/* Compress buf[0..n) (its first header_size bytes as chunk 0, the rest in
 * REG_CHUNK pieces). Done outside write transactions: it is the slow part. */
lk_status reg_blob_compress(lk_registry_t *reg, const unsigned char *buf, uint64_t n, uint64_t header_size,
                            reg_zchunks *z);
/* 1 when the payload sha is stored. */
int reg_blob_exists(lk_registry_t *reg, const char *sha);
/* Store a payload (if absent) inside the caller's transaction; z may be
 * empty (n == 0): the payload is then compressed here. */
lk_status reg_blob_put(lk_registry_t *reg, const char *sha, const unsigned char *buf, uint64_t n,
                       uint64_t header_size, reg_zchunks *z, lk_registry_progress_fn progress, void *user);
/* Read a payload: all of it, or (header_only) its first chunk. The bytes are
 * checked against the hash when all are read; LK_ERR_CORRUPT names label. */
lk_status reg_blob_get(lk_registry_t *reg, const char *sha, int header_only, unsigned char **out,
                       uint64_t *n, const char *label);

/* ---- refs.c: REF resolution and lookups -------------------------------------------- */

typedef struct reg_version {
  int64_t id;
  int64_t adapter_id;
  int64_t version;
  char name[REG_NAME_MAX + 1];
  char ref[REG_NAME_MAX + 24];
  char sha[REG_HEX];
  int64_t model_id; /* 0 when none */
} reg_version;

/* Resolve ref to a version; LK_ERR_NOT_FOUND / LK_ERR_INVALID_ARG with a
 * message naming what exists. */
lk_status reg_resolve(lk_registry_t *reg, const char *ref, reg_version *v);
/* The id of the base model called name (or whose fingerprint starts with
 * it); 0 when none. */
int64_t reg_model_by_name(lk_registry_t *reg, const char *name);
/* The lineage relation from its stored name. */
int reg_relation_valid(int32_t rel);

/* ---- models.c: base models ------------------------------------------------------- */

/* What reg_model_scan read from a model file or folder. */
typedef struct reg_model_info {
  char *name;                  /* derived from the path */
  char arch[64];
  char fingerprint[REG_HEX];
  char *config;                /* the config object (JSON) */
  char *shapes;                /* {tensor: [out, in]} of the 2-D weights (JSON) */
  char *path;                  /* absolute */
  int64_t n_params;
} reg_model_info;

/* A base model named by a caller: recorded already (id), or read from a
 * path before the write transaction and recorded inside it. */
typedef struct reg_base {
  int64_t id;
  int scanned;
  reg_model_info info;
} reg_base;

void reg_model_info_free(reg_model_info *mi);
/* A valid name from a file or folder path ("out/a1-lora.gguf" -> "a1-lora"). */
char *reg_name_from_path(const char *path);
/* Open a model and compute its fingerprint (slow: reads the weights). */
lk_status reg_model_scan(lk_registry_t *reg, const char *path, const char *loader, reg_model_info *mi);
/* In the caller's transaction: the id of the model with mi's fingerprint,
 * recording it when new (mi->name becomes the recorded name). */
lk_status reg_model_insert(lk_registry_t *reg, reg_model_info *mi, const char *explicit_name, const char *operation,
                           const char *notes, int64_t *id);
/* base: a recorded model's name (or fingerprint prefix) or a path; NULL = none. */
lk_status reg_base_prepare(lk_registry_t *reg, const char *base, const char *loader, reg_base *b);
/* In the caller's transaction: record a scanned base (b->id set). */
lk_status reg_base_commit(lk_registry_t *reg, reg_base *b);
/* The base's config JSON (malloc'd) for loaders, or NULL. */
char *reg_base_config(lk_registry_t *reg, const reg_base *b);
void reg_base_free(reg_base *b);
/* Every target of ci has a weight of the right shape in the base. */
lk_status reg_base_check(lk_registry_t *reg, const reg_base *b, const reg_canon_info *ci, const char *label);
/* The stored config of a model as a JSON string (malloc'd), or NULL. */
char *reg_model_config(lk_registry_t *reg, int64_t model_id);

/* ---- files.c: the files a version was added from --------------------------------- */

typedef struct reg_file {
  char *rel;           /* path inside the folder ('/'-separated), or the file's name */
  unsigned char *data; /* NULL unless read with keep_data */
  uint64_t size;
  char sha[REG_HEX];   /* of the bytes */
  reg_zchunks z;       /* compressed before the write transaction */
} reg_file;

typedef struct reg_files {
  int is_dir;
  uint32_t n, cap;
  reg_file *f;         /* sorted by rel (bytewise) */
  char digest[REG_HEX]; /* SHA-256 over kind, and each file's rel, size and sha */
} reg_files;

void reg_files_free(reg_files *fs);
/* Every regular file of the folder at path (recursively; symbolic links to
 * files followed, to folders not), or the file at path itself. */
lk_status reg_files_read(lk_registry_t *reg, const char *path, int keep_data, reg_files *fs);
/* Compress what is not stored yet (outside the transaction). */
lk_status reg_files_compress(lk_registry_t *reg, reg_files *fs);
/* In the caller's transaction: store the files of version_id. */
lk_status reg_files_put(lk_registry_t *reg, reg_files *fs, int64_t version_id);
/* The version the caller means by content: exact files (digest) first,
 * then canonical payload sha preferring format; name limits the search
 * (NULL = any). *ref gets "NAME@N"; *note (malloc'd, may be NULL) says
 * which was chosen when several fit equally. 0 when none. */
/* 1 when version id has stored files (*is_dir: a folder, not one file). */
int reg_files_of(lk_registry_t *reg, int64_t id, int *is_dir);
/* Write the stored files of v to path: a folder (created through a
 * temporary one renamed into place) or one file. */
lk_status reg_files_export(lk_registry_t *reg, const reg_version *v, const char *path, int is_dir);
int reg_match(lk_registry_t *reg, const char *digest, const char *sha, const char *format, const char *name,
              char *ref, size_t ref_n, char **note);

/* ---- lineage.c --------------------------------------------------------------------- */

/* 1 when version `ancestor` is version `id` or one of its ancestors. */
int reg_is_ancestor(lk_registry_t *reg, int64_t ancestor, int64_t id);

#endif /* LK_REG_H */
