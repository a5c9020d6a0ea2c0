/* sample.h - choosing the next token from a row of logits (generation).
 * Internal to the core (prefix smp_).
 *
 * Order as transformers' warpers apply them: temperature, then top-k, then
 * top-p; then a draw from the softmax of what is left.
 *   temperature <= 0   greedy: the first index of the largest logit.
 *   top_k > 0          keep the logits >= the k-th largest (ties kept), as
 *                      TopKLogitsWarper.
 *   0 < top_p < 1      as TopPLogitsWarper: sort ascending, cumulate the
 *                      probabilities, drop those whose cumulative sum is
 *                      <= 1 - top_p, always keep the most likely; i.e. the
 *                      smallest set of most likely tokens whose probability
 *                      reaches top_p. Ties sort by index (lower index counts
 *                      as more likely).
 * No repetition penalty: the distribution depends on this row only.
 * RNG: xoshiro256** (Blackman, Vigna 2018), its four words seeded from
 * splitmix64(seed); a uniform double is (next >> 11) * 2^-53; the draw
 * walks the kept tokens in index order until the cumulative probability
 * exceeds u * total. The same seed and logits give the same tokens. */
#ifndef LK_SAMPLE_H
#define LK_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
  uint64_t s[4];
} smp_rng;

typedef struct {
  float temperature; /* <= 0: greedy */
  int top_k;         /* <= 0: off */
  float top_p;       /* <= 0 or >= 1: off */
} smp_params;

void smp_seed(smp_rng *r, uint64_t seed);
uint64_t smp_next(smp_rng *r);
double smp_uniform(smp_rng *r); /* [0, 1) */

/* The distribution smp_sample draws from, into PROBS[n] (0 for removed
 * tokens; sums to 1). Greedy gives a one-hot row. Returns 0 or -1 (no
 * memory, n == 0, non-finite best logit). */
int smp_probs(const float *logits, size_t n, const smp_params *p, double *probs);
/* A token id in [0, n), or -1 on the failures of smp_probs. */
long smp_sample(const float *logits, size_t n, const smp_params *p, smp_rng *r);

#endif
