/* cmd_rank.c - `lorakit rank`: numerical rank, singular values and energy
 * of a model tensor, of a matrix given inline as JSON, or of each s*B*A of
 * an adapter.
 *
 * Arithmetic is in double: tensors are read as f32 (quantised ones
 * dequantised by their quantiser through lk_model_tensor_read_f32) and
 * widened; singular values come from LAPACK's divide-and-conquer SVD
 * (LAPACKE_dgesdd, values only). The default tolerance is numpy's
 * matrix_rank: S.max() * max(M, N) * eps (double eps), so the rank printed
 * is the one numpy gives for the same matrix.
 *
 * Adapters. s*B*A (B [out, r], A [r, in]) is never formed at [out, in]:
 * with B = Qb Rb and A^T = Qa Ra (Householder QR, Q with orthonormal
 * columns), s*B*A = Qb (s Rb Ra^T) Qa^T, so its nonzero singular values are
 * those of the small r x r core s Rb Ra^T; the rest are exactly zero.
 *
 * LAPACKE is opened here, when rank runs, not linked into the program: it
 * pulls in OpenBLAS, whose pthread build starts its thread pool (and maps
 * its work buffers) from a constructor, which makes every lorakit command
 * hang or fail under an address-space limit (tests/test_safe_io.sh; the cpu
 * plugin opens OpenBLAS lazily for the same reason, plugins/cpu/blas_lazy.c).
 * OPENBLAS_NUM_THREADS=1 (unless the user set it) keeps that pool empty. */
#include "cli.h"

#include <dlfcn.h>
#include <float.h>
#include <jansson.h>
#include <lapacke.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char cli_rank_usage[] =
    "usage: lorakit rank MODEL --tensor NAME [--tol t] [--json]\n"
    "       lorakit rank --matrix '[[1,2,3],[1,5,6],[3,4,7]]' [--tol t] [--json]\n"
    "       lorakit rank ADAPTER [--base MODEL] [--tol t] [--json]\n"
    "\n"
    "The numerical rank of a matrix, its singular values (LAPACK SVD, in double)\n"
    "and the energy the top r of them hold, sum(s_i^2, i < r) / sum(s_i^2), for\n"
    "r = 1, 2, 4, 8, 16, 32, 64 (those <= min(M, N)). The rank counts singular\n"
    "values above the tolerance; by default S.max() * max(M, N) * eps (double eps),\n"
    "as numpy.linalg.matrix_rank; --tol t sets it.\n"
    "MODEL --tensor NAME takes one tensor of a model (quantised tensors are\n"
    "dequantised; a tensor of more than two dimensions is read as rows of its\n"
    "last one). --matrix takes a matrix inline as a JSON array of rows.\n"
    "ADAPTER (a PEFT folder or a GGUF LoRA file) gives, for each target, the\n"
    "effective rank of s*B*A, from the SVD of its r x r core (QR of B and A):\n"
    "the product [out, in] is never formed. --base gives the base model a GGUF\n"
    "LoRA needs to be read (its head layout); the rank does not depend on it.\n";

/* ---- the arithmetic ------------------------------------------------------------- */

static __typeof__(LAPACKE_dgesdd) *rank_dgesdd;
static __typeof__(LAPACKE_dgeqrf) *rank_dgeqrf;

static int rank_lapack_open(void) {
  if (rank_dgesdd && rank_dgeqrf) return CLI_OK;
  setenv("OPENBLAS_NUM_THREADS", "1", 0);
  static const char *const names[] = {"liblapacke.so.3", "liblapacke.so"};
  void *h = NULL;
  for (size_t i = 0; i < sizeof names / sizeof names[0] && !h; i++) h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
  if (!h)
    return cli_error(CLI_FAILED, "rank: cannot load LAPACKE (%s); install liblapacke (Debian: liblapacke)", dlerror());
  *(void **)&rank_dgesdd = dlsym(h, "LAPACKE_dgesdd");
  *(void **)&rank_dgeqrf = dlsym(h, "LAPACKE_dgeqrf");
  if (!rank_dgesdd || !rank_dgeqrf)
    return cli_error(CLI_FAILED, "rank: the LAPACKE library lacks LAPACKE_dgesdd or LAPACKE_dgeqrf");
  return CLI_OK; /* the library stays loaded for the life of the program */
}

/* Singular values of a [m, n] row-major matrix (destroyed), descending,
 * into s[min(m, n)]. */
static int rank_svd(double *a, int64_t m, int64_t n, double *s) {
  /* Row-major [m, n] is column-major [n, m], the transpose: same singular
   * values, and LAPACKE's column-major path takes ldu = ldvt = 1 for 'N'
   * (its row-major one wants them as for vectors it does not compute). */
  lapack_int info = rank_dgesdd(LAPACK_COL_MAJOR, 'N', (lapack_int)n, (lapack_int)m, a, (lapack_int)n, s, NULL, 1,
                                   NULL, 1);
  if (info) return cli_error(CLI_FAILED, "rank: the SVD did not converge (LAPACK dgesdd info %d)", (int)info);
  return CLI_OK;
}

/* The R of a QR of x [rows, r] (row-major, destroyed): k = min(rows, r)
 * rows of r values, upper triangular, into R[k, r]. */
static int rank_qr_r(double *x, int64_t rows, int64_t r, double *R) {
  int64_t k = rows < r ? rows : r;
  double *tau = calloc((size_t)k + 1, sizeof *tau);
  if (!tau) return cli_error(CLI_FAILED, "rank: out of memory");
  lapack_int info = rank_dgeqrf(LAPACK_ROW_MAJOR, (lapack_int)rows, (lapack_int)r, x, (lapack_int)r, tau);
  free(tau);
  if (info) return cli_error(CLI_FAILED, "rank: QR failed (LAPACK dgeqrf info %d)", (int)info);
  for (int64_t i = 0; i < k; i++)
    for (int64_t j = 0; j < r; j++) R[i * r + j] = j >= i ? x[i * r + j] : 0.0;
  return CLI_OK;
}

typedef struct rank_result {
  char *name;
  int64_t rows, cols;
  double *s;   /* singular values, descending (ns of them; the rest up to min(rows, cols) are 0) */
  int64_t ns;
  double tol;
  int64_t rank;
  int64_t lora_rank; /* adapters: r, and s */
  double scale;
} rank_result;

static void rank_finish(rank_result *res, double tol_opt) {
  int64_t mn = res->rows > res->cols ? res->rows : res->cols;
  double smax = res->ns ? res->s[0] : 0.0;
  res->tol = tol_opt >= 0 ? tol_opt : smax * (double)mn * DBL_EPSILON;
  res->rank = 0;
  for (int64_t i = 0; i < res->ns; i++) res->rank += res->s[i] > res->tol;
}

/* The energy of the top r singular values; -1 when every value is 0. */
static double rank_energy(const rank_result *res, int64_t r) {
  double top = 0, all = 0;
  for (int64_t i = 0; i < res->ns; i++) {
    double e = res->s[i] * res->s[i];
    all += e;
    if (i < r) top += e;
  }
  return all > 0 ? top / all : -1.0;
}

/* ---- output ----------------------------------------------------------------------- */

static const int64_t k_energy_r[] = {1, 2, 4, 8, 16, 32, 64};
#define N_ENERGY_R (sizeof k_energy_r / sizeof k_energy_r[0])

static void rank_print(const rank_result *res) {
  int64_t mn = res->rows < res->cols ? res->rows : res->cols;
  printf("%s\n", cli_esc(res->name));
  printf("  shape:           %lld x %lld\n", (long long)res->rows, (long long)res->cols);
  if (res->lora_rank) printf("  lora rank:       %lld (scale %.9g)\n", (long long)res->lora_rank, res->scale);
  printf("  rank:            %lld (tol %.6g)\n", (long long)res->rank, res->tol);
  printf("  singular values:");
  for (int64_t i = 0; i < res->ns; i++) printf("%s%.10g", i && i % 8 == 0 ? "\n                   " : " ", res->s[i]);
  if (res->ns < mn) printf(" (and %lld zeros)", (long long)(mn - res->ns));
  printf("\n  energy:         ");
  for (size_t k = 0; k < N_ENERGY_R && k_energy_r[k] <= mn; k++) {
    double e = rank_energy(res, k_energy_r[k]);
    if (e < 0)
      printf(" r=%lld n/a", (long long)k_energy_r[k]);
    else
      printf(" r=%lld %.6f", (long long)k_energy_r[k], e);
  }
  printf("\n");
}

static json_t *rank_json(const rank_result *res) {
  int64_t mn = res->rows < res->cols ? res->rows : res->cols;
  json_t *sv = json_array(), *en = json_object();
  for (int64_t i = 0; i < res->ns; i++) json_array_append_new(sv, json_real(res->s[i]));
  for (size_t k = 0; k < N_ENERGY_R && k_energy_r[k] <= mn; k++) {
    char key[8];
    snprintf(key, sizeof key, "%lld", (long long)k_energy_r[k]);
    double e = rank_energy(res, k_energy_r[k]);
    json_object_set_new(en, key, e < 0 ? json_null() : json_real(e));
  }
  json_t *o = json_pack("{s:s, s:I, s:I, s:I, s:f, s:o, s:I, s:o}", "name", res->name, "rows", (json_int_t)res->rows,
                        "cols", (json_int_t)res->cols, "rank", (json_int_t)res->rank, "tol", res->tol,
                        "singular_values", sv, "zero_singular_values", (json_int_t)(mn - res->ns), "energy", en);
  if (res->lora_rank) {
    json_object_set_new(o, "lora_rank", json_integer(res->lora_rank));
    json_object_set_new(o, "scale", json_real(res->scale));
  }
  return o;
}

static void rank_result_free(rank_result *res) {
  free(res->name);
  free(res->s);
}

/* ---- the three sources --------------------------------------------------------------- */

/* A full matrix a [rows, cols] (taken over) -> res. */
static int rank_of_matrix(const char *name, double *a, int64_t rows, int64_t cols, rank_result *res) {
  int64_t mn = rows < cols ? rows : cols;
  memset(res, 0, sizeof *res);
  res->name = strdup(name);
  res->rows = rows;
  res->cols = cols;
  res->s = calloc((size_t)mn + 1, sizeof *res->s);
  res->ns = mn;
  if (!res->name || !res->s) {
    free(a);
    return cli_error(CLI_FAILED, "rank: out of memory");
  }
  int rc = rank_svd(a, rows, cols, res->s);
  free(a);
  return rc;
}

static int rank_parse_matrix(const char *text, double **out, int64_t *rows, int64_t *cols) {
  json_error_t jerr;
  json_t *doc = json_loads(text, JSON_DECODE_ANY, &jerr);
  if (!doc) return cli_error(CLI_USAGE, "rank --matrix: not valid JSON: %s (column %d)", jerr.text, jerr.column);
  int rc = CLI_OK;
  size_t n = json_is_array(doc) ? json_array_size(doc) : 0, m = 0;
  if (!n || !json_is_array(json_array_get(doc, 0)) || !(m = json_array_size(json_array_get(doc, 0))))
    rc = cli_error(CLI_USAGE, "rank --matrix: expected a non-empty JSON array of non-empty rows, like [[1,2],[3,4]]");
  double *a = rc ? NULL : malloc(n * m * sizeof *a);
  if (!rc && !a) rc = cli_error(CLI_FAILED, "rank: out of memory");
  for (size_t i = 0; i < n && !rc; i++) {
    json_t *row = json_array_get(doc, i);
    if (!json_is_array(row))
      rc = cli_error(CLI_USAGE, "rank --matrix: row %zu is not an array of numbers", i + 1);
    else if (json_array_size(row) != m)
      rc = cli_error(CLI_USAGE, "rank --matrix: row %zu has %zu numbers but row 1 has %zu (a matrix needs rows of one "
                                "length)", i + 1, json_array_size(row), m);
    for (size_t j = 0; j < m && !rc; j++) {
      json_t *v = json_array_get(row, j);
      if (!json_is_number(v))
        rc = cli_error(CLI_USAGE, "rank --matrix: element [%zu][%zu] (row %zu, column %zu) is not a number", i, j,
                       i + 1, j + 1);
      else
        a[i * m + j] = json_number_value(v);
    }
  }
  json_decref(doc);
  if (rc) {
    free(a);
    return rc;
  }
  *out = a;
  *rows = (int64_t)n;
  *cols = (int64_t)m;
  return CLI_OK;
}

static int rank_model_tensor(lk_context_t *ctx, const char *path, const char *tensor, rank_result *res) {
  lk_model_t *m = NULL;
  if (lk_model_open(ctx, path, NULL, &m)) return cli_error(CLI_FAILED, "%s", lk_last_error(ctx));
  int64_t idx = lk_model_find(m, tensor);
  int rc = CLI_OK;
  if (idx < 0) {
    int64_t n = lk_model_tensor_count(m);
    const char **names = calloc((size_t)n + 1, sizeof *names);
    for (int64_t i = 0; names && i < n; i++) {
      lk_tensor_info_t ti;
      memset(&ti, 0, sizeof ti);
      ti.struct_size = sizeof ti;
      names[i] = lk_model_tensor_info(m, i, &ti) ? "" : ti.name;
    }
    const char *near = names ? cli_nearest(tensor, names, (size_t)n) : NULL;
    rc = cli_error(CLI_FAILED, "rank: %s has no tensor '%s'%s%s%s (see lorakit inspect %s)", path, tensor,
                   near ? " (did you mean " : "", near ? near : "", near ? "?)" : "", path);
    free(names);
    lk_model_close(m);
    return rc;
  }
  lk_tensor_info_t ti;
  memset(&ti, 0, sizeof ti);
  ti.struct_size = sizeof ti;
  if (lk_model_tensor_info(m, idx, &ti)) rc = cli_error(CLI_FAILED, "%s", lk_last_error(ctx));
  int64_t cols = rc || ti.ndim == 0 ? 1 : ti.shape[ti.ndim - 1], rows = 1;
  for (uint32_t d = 0; !rc && d + 1 < ti.ndim; d++) rows *= ti.shape[d];
  if (!rc && (rows <= 0 || cols <= 0))
    rc = cli_error(CLI_FAILED, "rank: tensor '%s' of %s is empty", tensor, path);
  uint64_t n = (uint64_t)rows * (uint64_t)cols;
  float *f = rc ? NULL : malloc(n * sizeof *f);
  double *a = rc ? NULL : malloc(n * sizeof *a);
  if (!rc && (!f || !a)) rc = cli_error(CLI_FAILED, "rank: out of memory for tensor '%s' (%llu values)", tensor,
                                        (unsigned long long)n);
  if (!rc && lk_model_tensor_read_f32(m, idx, f, n)) rc = cli_error(CLI_FAILED, "%s", lk_last_error(ctx));
  for (uint64_t i = 0; !rc && i < n; i++) {
    if (!isfinite(f[i])) {
      rc = cli_error(CLI_FAILED, "rank: tensor '%s' of %s holds %s at row %llu, column %llu: no SVD of it", tensor,
                     path, isnan(f[i]) ? "NaN" : "Inf", (unsigned long long)(i / (uint64_t)cols),
                     (unsigned long long)(i % (uint64_t)cols));
      break;
    }
    a[i] = f[i];
  }
  free(f);
  lk_model_close(m);
  if (rc) {
    free(a);
    return rc;
  }
  return rank_of_matrix(tensor, a, rows, cols, res);
}

/* The singular values of s*B*A for one target, through the r x r core. */
static int rank_lora_target(lk_adapter_t *ad, uint32_t index, rank_result *res) {
  lk_target_info_t ti = {sizeof ti, 0, NULL, 0, 0, 0, 0};
  lk_tensor_t A, B;
  if (lk_adapter_target_info(ad, index, &ti) || lk_adapter_weights(ad, index, &A, &B))
    return cli_error(CLI_FAILED, "rank: adapter target %u cannot be read", index);
  int64_t r = ti.rank, in = ti.in_features, out = ti.out_features;
  if (A.dtype != LK_DTYPE_F32 || B.dtype != LK_DTYPE_F32 || A.shape[0] != r || A.shape[1] != in ||
      B.shape[0] != out || B.shape[1] != r)
    return cli_error(CLI_FAILED, "rank: target %s: A %lldx%lld, B %lldx%lld do not fit rank %lld, %lld -> %lld",
                     ti.name, (long long)A.shape[0], (long long)A.shape[1], (long long)B.shape[0],
                     (long long)B.shape[1], (long long)r, (long long)in, (long long)out);
  const float *a = A.data, *b = B.data;
  int64_t kb = out < r ? out : r, ka = in < r ? in : r;
  double *bt = malloc((size_t)(out * r) * sizeof *bt), *at = malloc((size_t)(in * r) * sizeof *at);
  double *rb = malloc((size_t)(kb * r) * sizeof *rb), *ra = malloc((size_t)(ka * r) * sizeof *ra);
  double *core = malloc((size_t)(kb * ka + 1) * sizeof *core);
  int rc = bt && at && rb && ra && core ? CLI_OK : cli_error(CLI_FAILED, "rank: out of memory");
  if (!rc) {
    for (int64_t i = 0; i < out * r; i++) bt[i] = b[i];       /* B [out, r] */
    for (int64_t i = 0; i < r; i++)                            /* A^T [in, r] */
      for (int64_t k = 0; k < in; k++) at[k * r + i] = a[i * in + k];
    rc = rank_qr_r(bt, out, r, rb);
    if (!rc) rc = rank_qr_r(at, in, r, ra);
  }
  if (!rc) /* core = s Rb Ra^T [kb, ka] */
    for (int64_t i = 0; i < kb; i++)
      for (int64_t j = 0; j < ka; j++) {
        double acc = 0;
        for (int64_t k = 0; k < r; k++) acc += rb[i * r + k] * ra[j * r + k];
        core[i * ka + j] = (double)ti.scale * acc;
      }
  free(bt);
  free(at);
  free(rb);
  free(ra);
  if (rc) {
    free(core);
    return rc;
  }
  rc = rank_of_matrix(ti.name, core, kb, ka, res);
  res->rows = out; /* the product's shape: its other singular values are 0 */
  res->cols = in;
  res->lora_rank = r;
  res->scale = ti.scale;
  return rc;
}

/* ---- the command --------------------------------------------------------------------- */

static void rank_emit(rank_result *res, int n, int as_json) {
  if (as_json) {
    json_t *arr = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(arr, rank_json(&res[i]));
    json_t *root = json_pack("{s:o}", "matrices", arr);
    char *s = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    if (s) puts(s);
    free(s);
    json_decref(root);
  } else {
    for (int i = 0; i < n; i++) rank_print(&res[i]);
  }
}

static int rank_adapter(lk_context_t *ctx, const char *path, const char *base, double tol, int as_json) {
  lk_model_t *bm = NULL, *self = NULL;
  const char *bcfg = NULL;
  if (base) {
    if (lk_model_open(ctx, base, NULL, &bm)) return cli_error(CLI_FAILED, "%s", lk_last_error(ctx));
    bcfg = lk_model_metadata_json(bm);
  } else if (!lk_model_open(ctx, path, NULL, &self)) {
    bcfg = lk_model_metadata_json(self); /* as inspect does: the file's own header may carry the layout */
  }
  lk_adapter_t *ad = NULL;
  lk_status st = lk_adapter_load(ctx, path, NULL, bcfg, &ad);
  lk_model_close(bm);
  lk_model_close(self);
  if (st) { /* a model given without --tensor reads as "not an adapter": say what was meant */
    const char *msg = lk_last_error(ctx);
    return cli_error(CLI_FAILED, "%s%s", msg,
                     strstr(msg, "not an adapter") ? " (rank MODEL needs --tensor NAME; without it the path must be an "
                                                     "adapter)"
                                                   : "");
  }
  uint32_t n = lk_adapter_target_count(ad);
  rank_result *res = calloc((size_t)n + 1, sizeof *res);
  int rc = res ? CLI_OK : cli_error(CLI_FAILED, "rank: out of memory");
  uint32_t done = 0;
  for (; !rc && done < n; done++) {
    rc = rank_lora_target(ad, done, &res[done]);
    if (!rc) rank_finish(&res[done], tol);
  }
  if (!rc) rank_emit(res, (int)n, as_json);
  for (uint32_t i = 0; res && i < n; i++) rank_result_free(&res[i]);
  free(res);
  lk_adapter_free(ad);
  return rc;
}

int cli_rank(int argc, char **argv) {
  const char *path = NULL, *tensor = NULL, *matrix = NULL, *base = NULL;
  double tol = -1;
  int as_json = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--json")) as_json = 1;
    else if (!strcmp(argv[i], "--tensor") && i + 1 < argc) tensor = argv[++i];
    else if (!strcmp(argv[i], "--matrix") && i + 1 < argc) matrix = argv[++i];
    else if (!strcmp(argv[i], "--base") && i + 1 < argc) base = argv[++i];
    else if (!strcmp(argv[i], "--tol") && i + 1 < argc) {
      char *end;
      const char *v = argv[++i];
      tol = strtod(v, &end);
      if (!v[0] || *end || !isfinite(tol) || tol < 0)
        return cli_error(CLI_USAGE, "rank: --tol needs a finite number >= 0, not '%s'", v);
    } else if (argv[i][0] != '-' && !path) path = argv[i];
    else return cli_error(CLI_USAGE, "rank: unexpected argument '%s' (see lorakit rank --help)", argv[i]);
  }
  if (!!matrix + !!path != 1)
    return cli_error(CLI_USAGE, "rank: give MODEL --tensor NAME, --matrix JSON or ADAPTER (see lorakit rank --help)");
  if (matrix && (tensor || base)) return cli_error(CLI_USAGE, "rank: --matrix takes no --tensor or --base");
  if (tensor && base) return cli_error(CLI_USAGE, "rank: --base is for adapters, not with --tensor");
  if (rank_lapack_open()) return CLI_FAILED;
  cli_escape_output = !as_json && isatty(1);
  rank_result res;
  memset(&res, 0, sizeof res);
  int rc;
  if (matrix) {
    double *a = NULL;
    int64_t rows = 0, cols = 0;
    rc = rank_parse_matrix(matrix, &a, &rows, &cols);
    if (rc) return rc;
    rc = rank_of_matrix("matrix", a, rows, cols, &res);
  } else {
    lk_context_t *ctx = NULL;
    lk_status st = lk_context_create(NULL, &ctx);
    if (st) return cli_error(CLI_FAILED, "cannot create a context: %s", lk_strerror(st));
    if (!tensor) {
      rc = rank_adapter(ctx, path, base, tol, as_json);
      lk_context_free(ctx);
      return rc;
    }
    rc = rank_model_tensor(ctx, path, tensor, &res);
    lk_context_free(ctx);
  }
  if (!rc) {
    rank_finish(&res, tol);
    rank_emit(&res, 1, as_json);
  }
  rank_result_free(&res);
  return rc;
}
