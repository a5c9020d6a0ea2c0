/* train_sched.c - learning-rate multipliers (see train_sched.h). */
#include "train_sched.h"

#include <math.h>
#include <string.h>

static const char *const tsch_names[] = {"constant", "constant_with_warmup", "linear", "cosine"};

int tsch_parse(const char *name) {
  for (int i = 0; i < 4; i++)
    if (name && !strcmp(name, tsch_names[i])) return i;
  return -1;
}

const char *tsch_name(tsch_kind k) { return (unsigned)k < 4 ? tsch_names[k] : "?"; }

static double tsch_max1(int64_t x) { return x > 1 ? (double)x : 1.0; }

double tsch_mult(tsch_kind k, int64_t step, int64_t warmup, int64_t total) {
  if (k == TSCH_CONSTANT) return 1.0;
  if (step < warmup) return (double)step / tsch_max1(warmup);
  switch (k) {
  case TSCH_CONSTANT_WARMUP: return 1.0;
  case TSCH_LINEAR: {
    double v = (double)(total - step) / tsch_max1(total - warmup);
    return v > 0 ? v : 0.0;
  }
  case TSCH_COSINE: {
    double p = (double)(step - warmup) / tsch_max1(total - warmup);
    double v = 0.5 * (1.0 + cos(M_PI * 2.0 * 0.5 * p));
    return v > 0 ? v : 0.0;
  }
  default: return 1.0;
  }
}
