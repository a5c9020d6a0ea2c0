/* train_st.h - a small safetensors reader and atomic writer for the trainer's
 * own files (pre-tokenised batches, checkpoints). Internal to the core
 * (prefix tst_); the model loaders stay in plugins/load-safetensors.
 *
 * Files are read whole into memory (they are small: token batches and LoRA
 * state). Every structural problem is an error naming the file: short
 * header, header length past the end, bad JSON, unknown dtype, negative or
 * overflowing shape, data_offsets out of range or not matching the shape,
 * overlapping or unsorted tensors, trailing bytes. */
#ifndef LK_TRAIN_ST_H
#define LK_TRAIN_ST_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

enum { TST_F32 = 1, TST_I64, TST_I32, TST_F16, TST_BF16, TST_F64, TST_I8, TST_U8, TST_I16, TST_BOOL };

typedef struct {
  char *name;
  int dtype;               /* TST_* */
  int ndim;                /* 0..8 */
  int64_t shape[8];
  uint64_t numel;
  const unsigned char *data; /* into tst_file.buf */
  uint64_t nbytes;
} tst_tensor;

typedef struct {
  char *path;
  json_t *meta;            /* the __metadata__ object (string values) or NULL */
  size_t n;
  tst_tensor *t;
  unsigned char *buf;      /* the whole file */
  size_t size;
} tst_file;

/* Reads and validates PATH. On failure returns -1, *out = NULL and err
 * holds "PATH: what is wrong". */
int tst_read(const char *path, tst_file **out, char *err, size_t errlen);
void tst_free(tst_file *f);  /* NULL is a no-op */
const tst_tensor *tst_find(const tst_file *f, const char *name);
const char *tst_dtype_name(int dtype);
size_t tst_dtype_size(int dtype);
/* The __metadata__ string value KEY, or NULL. */
const char *tst_meta(const tst_file *f, const char *key);

typedef struct {
  const char *name;
  int dtype;
  int ndim;
  const int64_t *shape;
  const void *data;        /* numel * dtype size bytes, little-endian */
} tst_out;

/* Writes the tensors (in the order given; names unique) and META (a JSON
 * object whose values are strings, or NULL) to PATH through a temporary in
 * the same folder that is fsynced and renamed into place; the folder is
 * fsynced too. Returns 0, or -1 with err set (nothing at PATH changed). */
int tst_write_atomic(const char *path, const tst_out *t, size_t n, json_t *meta, char *err, size_t errlen);

/* Replaces PATH's content by BYTES atomically (temp + fsync + rename). */
int tst_write_file_atomic(const char *path, const void *bytes, size_t len, char *err, size_t errlen);

#endif
