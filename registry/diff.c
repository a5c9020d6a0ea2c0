/* diff.c - comparing two versions: configuration differences and, per
 * target, Frobenius norms of the effective updates s*B*A and of their
 * difference. The norms are computed from r x r Gram matrices
 * (|s B A|^2 = s^2 tr((B^T B)(A A^T))), never forming the out x in update,
 * so a diff of a 4096-wide adapter costs O((out + in) r^2), not O(out in r). */
#include "reg.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* One target's weights inside a canonical buffer. */
typedef struct tview {
  const reg_target *t;
  const unsigned char *A, *B; /* little-endian f32 */
  double s;
} tview;

static float f32_at(const unsigned char *p, uint64_t i) {
  uint32_t u = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 | (uint32_t)p[4 * i + 2] << 16 |
               (uint32_t)p[4 * i + 3] << 24;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

static tview *views_of(const reg_canon_info *ci, const unsigned char *buf) {
  tview *v = calloc(ci->n_targets, sizeof *v);
  if (!v) return NULL;
  const unsigned char *p = buf + ci->header_size;
  for (uint32_t i = 0; i < ci->n_targets; i++) {
    const reg_target *t = &ci->targets[i];
    v[i].t = t;
    v[i].A = p;
    p += 4 * (uint64_t)t->rank * (uint64_t)t->in;
    v[i].B = p;
    p += 4 * (uint64_t)t->out * (uint64_t)t->rank;
    v[i].s = ci->scaling == LK_SCALING_RSLORA ? t->alpha / sqrt((double)t->rank) : (double)t->alpha / t->rank;
  }
  return v;
}

/* <s_x B_x A_x, s_y B_y A_y>_F = s_x s_y tr((B_x^T B_y)(A_y A_x^T)). */
static double inner(const tview *x, const tview *y, double *gb, double *ga) {
  uint32_t rx = x->t->rank, ry = y->t->rank;
  int64_t out = x->t->out, in = x->t->in;
  memset(gb, 0, sizeof(double) * rx * ry);
  memset(ga, 0, sizeof(double) * rx * ry);
  for (int64_t k = 0; k < out; k++) /* gb[i][j] = sum_k Bx[k][i] By[k][j] */
    for (uint32_t i = 0; i < rx; i++) {
      double b = f32_at(x->B, (uint64_t)k * rx + i);
      if (b == 0) continue;
      for (uint32_t j = 0; j < ry; j++) gb[i * ry + j] += b * f32_at(y->B, (uint64_t)k * ry + j);
    }
  for (uint32_t i = 0; i < rx; i++) /* ga[i][j] = sum_k Ax[i][k] Ay[j][k] */
    for (uint32_t j = 0; j < ry; j++) {
      double acc = 0;
      for (int64_t k = 0; k < in; k++)
        acc += (double)f32_at(x->A, (uint64_t)i * in + k) * f32_at(y->A, (uint64_t)j * in + k);
      ga[i * ry + j] = acc;
    }
  double tr = 0;
  for (uint32_t i = 0; i < rx; i++)
    for (uint32_t j = 0; j < ry; j++) tr += gb[i * ry + j] * ga[i * ry + j];
  return x->s * y->s * tr;
}

static int same_bytes(const tview *x, const tview *y) {
  const reg_target *a = x->t, *b = y->t;
  return a->rank == b->rank && a->alpha == b->alpha && x->s == y->s &&
         !memcmp(x->A, y->A, 4 * (size_t)a->rank * (size_t)a->in) &&
         !memcmp(x->B, y->B, 4 * (size_t)a->out * (size_t)a->rank);
}

static void config_diff(json_t *out, const char *field, json_t *a, json_t *b) {
  if (json_equal(a, b)) {
    json_decref(a);
    json_decref(b);
    return;
  }
  json_array_append_new(out, json_pack("{s:s, s:o, s:o}", "field", field, "a", a ? a : json_null(), "b", b ? b : json_null()));
}

/* Fields of the two versions' list records (base, scaling, rank, alpha). */
static void record_diffs(json_t *cfg, json_t *ra, json_t *rb) {
  static const char *const fields[] = {"base", "base_fingerprint", "scaling", "rank", "alpha", "n_targets", "format"};
  for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
    json_t *a = json_object_get(ra, fields[i]), *b = json_object_get(rb, fields[i]);
    config_diff(cfg, fields[i], json_incref(a ? a : json_null()), json_incref(b ? b : json_null()));
  }
}

static json_t *version_record(lk_registry_t *reg, const char *ref) {
  char *s = NULL;
  lk_registry_show(reg, ref, &s);
  json_error_t jerr;
  json_t *j = s ? json_loads(s, 0, &jerr) : NULL;
  free(s);
  return j;
}

static lk_status compare(lk_registry_t *reg, const reg_canon_info *ca, const unsigned char *ba,
                         const reg_canon_info *cb, const unsigned char *bb, json_t *doc) {
  tview *va = views_of(ca, ba), *vb = views_of(cb, bb);
  json_t *only_a = json_array(), *only_b = json_array(), *targets = json_array(), *cfg = json_object_get(doc, "config");
  double *gb = NULL, *ga = NULL;
  double tot_a = 0, tot_d = 0, tot_b = 0;
  lk_status st = LK_OK;
  if (!va || !vb) st = lk__fail(reg->ctx, LK_ERR_NOMEM, "out of memory");
  uint32_t i = 0, k = 0;
  while (!st && (i < ca->n_targets || k < cb->n_targets)) {
    int c = i == ca->n_targets ? 1 : k == cb->n_targets ? -1 : strcmp(ca->targets[i].name, cb->targets[k].name);
    if (c < 0) {
      json_array_append_new(only_a, json_string(ca->targets[i++].name));
      continue;
    }
    if (c > 0) {
      json_array_append_new(only_b, json_string(cb->targets[k++].name));
      continue;
    }
    const tview *x = &va[i++], *y = &vb[k++];
    const char *name = x->t->name;
    if (x->t->rank != y->t->rank) config_diff(cfg, name, json_pack("{s:i}", "rank", (int)x->t->rank), json_pack("{s:i}", "rank", (int)y->t->rank));
    if (x->t->alpha != y->t->alpha)
      config_diff(cfg, name, json_pack("{s:f}", "alpha", (double)x->t->alpha), json_pack("{s:f}", "alpha", (double)y->t->alpha));
    if (x->t->in != y->t->in || x->t->out != y->t->out) {
      config_diff(cfg, name, json_pack("{s:[I,I]}", "shape", (json_int_t)x->t->out, (json_int_t)x->t->in),
                  json_pack("{s:[I,I]}", "shape", (json_int_t)y->t->out, (json_int_t)y->t->in));
      continue;
    }
    uint32_t rmax = x->t->rank > y->t->rank ? x->t->rank : y->t->rank;
    free(gb);
    free(ga);
    gb = malloc(sizeof(double) * rmax * rmax);
    ga = malloc(sizeof(double) * rmax * rmax);
    if (!gb || !ga) {
      st = lk__fail(reg->ctx, LK_ERR_NOMEM, "out of memory");
      break;
    }
    double aa = inner(x, x, gb, ga), bb2 = inner(y, y, gb, ga);
    double d2 = same_bytes(x, y) ? 0 : aa + bb2 - 2 * inner(x, y, gb, ga);
    if (d2 < 0) d2 = 0; /* rounding when the two are nearly equal */
    tot_a += aa;
    tot_b += bb2;
    tot_d += d2;
    json_t *row = json_pack("{s:s, s:f, s:f, s:f}", "name", name, "norm_a", sqrt(aa), "norm_b", sqrt(bb2), "diff", sqrt(d2));
    json_object_set_new(row, "rel", aa > 0 ? json_real(sqrt(d2 / aa)) : json_null());
    json_array_append_new(targets, row);
  }
  free(gb);
  free(ga);
  free(va);
  free(vb);
  json_object_set_new(doc, "only_in_a", only_a);
  json_object_set_new(doc, "only_in_b", only_b);
  json_object_set_new(doc, "targets", targets);
  json_t *total = json_pack("{s:f, s:f, s:f}", "norm_a", sqrt(tot_a), "norm_b", sqrt(tot_b), "diff", sqrt(tot_d));
  json_object_set_new(total, "rel", tot_a > 0 ? json_real(sqrt(tot_d / tot_a)) : json_null());
  json_object_set_new(doc, "total", total);
  return st;
}

LK_API lk_status lk_registry_diff(lk_registry_t *reg, const char *ref_a, const char *ref_b, char **out_json) {
  if (!reg || !out_json) return lk__fail(reg ? reg->ctx : NULL, LK_ERR_INVALID_ARG, "lk_registry_diff: NULL argument");
  *out_json = NULL;
  reg_version a, b;
  unsigned char *ba = NULL, *bb = NULL;
  uint64_t na = 0, nb = 0;
  reg_canon_info ca, cb;
  memset(&ca, 0, sizeof ca);
  memset(&cb, 0, sizeof cb);
  json_t *doc = NULL, *ra = NULL, *rb = NULL;
  lk_status st = reg_resolve(reg, ref_a, &a);
  if (!st) st = reg_resolve(reg, ref_b, &b);
  if (!st) st = reg_blob_get(reg, a.sha, 0, &ba, &na, a.ref);
  if (!st) st = reg_blob_get(reg, b.sha, 0, &bb, &nb, b.ref);
  if (!st) st = reg_canon_parse(reg, ba, na, 1, &ca, a.ref);
  if (!st) st = reg_canon_parse(reg, bb, nb, 1, &cb, b.ref);
  if (st) goto done;
  ra = version_record(reg, a.ref);
  rb = version_record(reg, b.ref);
  doc = json_pack("{s:s, s:s, s:b, s:[]}", "a", a.ref, "b", b.ref, "same_content", !strcmp(a.sha, b.sha), "config");
  if (!doc || !ra || !rb) {
    st = lk__fail(reg->ctx, LK_ERR_NOMEM, "out of memory");
    goto done;
  }
  record_diffs(json_object_get(doc, "config"), ra, rb);
  if ((st = compare(reg, &ca, ba, &cb, bb, doc))) goto done;
  if (!(*out_json = reg_json_string(doc))) st = lk__fail(reg->ctx, LK_ERR_NOMEM, "out of memory");
done:
  json_decref(doc);
  json_decref(ra);
  json_decref(rb);
  reg_canon_info_free(&ca);
  reg_canon_info_free(&cb);
  free(ba);
  free(bb);
  if (!st) lk__ok(reg->ctx);
  return st;
}
