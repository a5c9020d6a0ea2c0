/* train_sched.h - learning-rate schedules, as transformers'
 * get_*_schedule_with_warmup define them (LambdaLR multipliers; the rate of
 * optimizer step s, 0-based, is lr * tsch_mult(kind, s, warmup, total)).
 * Internal to the core (prefix tsch_).
 *   constant               1
 *   constant_with_warmup   s < w ? s / max(1, w) : 1
 *   linear                 s < w ? s / max(1, w) : max(0, (T - s) / max(1, T - w))
 *   cosine                 s < w ? s / max(1, w) :
 *                          max(0, 0.5 * (1 + cos(pi * 2 * 0.5 * p))),  p = (s - w) / max(1, T - w)
 * ("constant" ignores warm-up, as get_constant_schedule does; lorakit's CLI
 * maps "--schedule constant --warmup N>0" to constant_with_warmup.) */
#ifndef LK_TRAIN_SCHED_H
#define LK_TRAIN_SCHED_H

#include <stdint.h>

typedef enum { TSCH_CONSTANT = 0, TSCH_CONSTANT_WARMUP, TSCH_LINEAR, TSCH_COSINE } tsch_kind;

/* Parses "constant", "constant_with_warmup", "linear", "cosine"; -1 if
 * unknown. */
int tsch_parse(const char *name);
const char *tsch_name(tsch_kind k);
double tsch_mult(tsch_kind k, int64_t step, int64_t warmup, int64_t total);

#endif
