/* sample.c - temperature, top-k, top-p sampling with a seeded xoshiro256**
 * (see sample.h). */
#include "sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t smp_rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void smp_seed(smp_rng *r, uint64_t seed) {
  uint64_t st = seed;
  for (int i = 0; i < 4; i++) {
    uint64_t z = (st += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    r->s[i] = z ^ (z >> 31);
  }
}

uint64_t smp_next(smp_rng *r) {
  uint64_t *s = r->s;
  uint64_t out = smp_rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = smp_rotl(s[3], 45);
  return out;
}

double smp_uniform(smp_rng *r) { return (double)(smp_next(r) >> 11) * 0x1.0p-53; }

typedef struct {
  double v;
  size_t i;
} smp_vi;

/* Descending by value; among equals the lower index first. */
static int smp_desc(const void *a, const void *b) {
  const smp_vi *x = a, *y = b;
  if (x->v != y->v) return x->v > y->v ? -1 : 1;
  return x->i < y->i ? -1 : x->i > y->i;
}

int smp_probs(const float *logits, size_t n, const smp_params *p, double *probs) {
  if (!n) return -1;
  size_t best = 0;
  for (size_t i = 1; i < n; i++)
    if (logits[i] > logits[best] || isnan(logits[best])) best = i;
  if (!isfinite(logits[best])) return -1;
  if (p->temperature <= 0) {
    memset(probs, 0, n * sizeof *probs);
    probs[best] = 1.0;
    return 0;
  }
  smp_vi *v = malloc(n * sizeof *v);
  if (!v) return -1;
  for (size_t i = 0; i < n; i++) {
    v[i].v = isnan(logits[i]) ? -INFINITY : (double)logits[i] / (double)p->temperature;
    v[i].i = i;
  }
  qsort(v, n, sizeof *v, smp_desc);
  size_t keep = n; /* the kept tokens are v[0..keep) */
  if (p->top_k > 0 && (size_t)p->top_k < n) {
    double thr = v[p->top_k - 1].v;
    keep = (size_t)p->top_k;
    while (keep < n && v[keep].v >= thr) keep++;
  }
  /* softmax over the kept */
  double mx = v[0].v, sum = 0;
  for (size_t i = 0; i < keep; i++) sum += exp(v[i].v - mx);
  if (p->top_p > 0 && p->top_p < 1) {
    /* ascending cumulative sum from the least likely kept token; drop while <= 1 - top_p */
    double cum = 0, lim = 1.0 - (double)p->top_p;
    size_t drop = 0;
    for (size_t j = keep; j-- > 1;) {
      cum += exp(v[j].v - mx) / sum;
      if (cum <= lim) drop++;
      else break;
    }
    keep -= drop;
    sum = 0;
    for (size_t i = 0; i < keep; i++) sum += exp(v[i].v - mx);
  }
  memset(probs, 0, n * sizeof *probs);
  for (size_t i = 0; i < keep; i++) probs[v[i].i] = exp(v[i].v - mx) / sum;
  free(v);
  return 0;
}

long smp_sample(const float *logits, size_t n, const smp_params *p, smp_rng *r) {
  double *pr = malloc((n ? n : 1) * sizeof *pr);
  if (!pr || smp_probs(logits, n, p, pr)) {
    free(pr);
    return -1;
  }
  long pick = -1;
  if (p->temperature <= 0) {
    for (size_t i = 0; i < n && pick < 0; i++)
      if (pr[i] == 1.0) pick = (long)i;
  } else {
    double total = 0;
    for (size_t i = 0; i < n; i++) total += pr[i];
    double u = smp_uniform(r) * total, cum = 0;
    for (size_t i = 0; i < n; i++) {
      if (pr[i] <= 0) continue;
      cum += pr[i];
      pick = (long)i;
      if (u < cum) break;
    }
  }
  free(pr);
  return pick;
}
