/* planner.c - the engine's memory planner (DESIGN.md section 5): every
 * storage gets an arena and an offset. An item lives over [first, last] of
 * the step's op order (the ops that write or read it; a persistent item -
 * FROZEN, PARAM, gradients of PARAMs, optimizer state, inputs and what the
 * host reads - throughout), and two items whose intervals meet never
 * overlap in memory; otherwise memory is reused. Placement is first-fit in
 * order of first use, at the lowest offset (a multiple of the device's
 * offset_align) that clears every placed item live at the same time, in
 * the first arena where it fits within max_alloc. Since the liveness
 * covers the backward ops too, activations the backward reads stay alive
 * until then - unless their block is recomputed (session.c): such an
 * activation has two intervals, its forward and its recomputation up to
 * its last backward read, and the memory between them is free for others. */
#include "engine.h"

#include <stdlib.h>
#include <string.h>

static uint64_t pl_align(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

static int pl_cross(int64_t f1, int64_t l1, int64_t f2, int64_t l2) { return f1 <= l2 && f2 <= l1; }

/* Live at the same time: any of their intervals (one, or two for an
 * activation recomputed in the backward) cross. */
static int pl_meet(const eng_item *a, const eng_item *b) {
  if (a->persistent || b->persistent) return 1;
  if (pl_cross(a->first, a->last, b->first, b->last)) return 1;
  if (a->first2 >= 0 && pl_cross(a->first2, a->last2, b->first, b->last)) return 1;
  if (b->first2 >= 0 && pl_cross(a->first, a->last, b->first2, b->last2)) return 1;
  return a->first2 >= 0 && b->first2 >= 0 && pl_cross(a->first2, a->last2, b->first2, b->last2);
}

typedef struct pl_seg {
  uint64_t lo, hi;
} pl_seg;

static int pl_seg_cmp(const void *a, const void *b) {
  const pl_seg *x = a, *y = b;
  return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* Order: persistent first, then by first use, larger first on ties. */
static int pl_order_cmp(const void *a, const void *b, void *base) {
  const eng_item *items = base;
  const eng_item *x = &items[*(const uint32_t *)a], *y = &items[*(const uint32_t *)b];
  if (x->persistent != y->persistent) return x->persistent ? -1 : 1;
  if (x->first != y->first) return x->first < y->first ? -1 : 1;
  if (x->bytes != y->bytes) return x->bytes > y->bytes ? -1 : 1;
  return *(const uint32_t *)a < *(const uint32_t *)b ? -1 : 1;
}

lk_status eng_plan_items(lk_context_t *ctx, eng_item *items, uint32_t n, uint64_t align, uint64_t max_alloc,
                         eng_plan *out) {
  memset(out, 0, sizeof *out);
  /* At least a cache line: a CPU backend allows 4-byte offsets, but rows
   * that straddle lines cost its kernels time. */
  if (align < 64) align = 64;
  uint32_t *order = malloc((n + 1) * sizeof *order);
  pl_seg *segs = malloc((n + 1) * sizeof *segs);
  uint32_t *placed = malloc((n + 1) * sizeof *placed);
  lk_status st = LK_OK;
  if (!order || !segs || !placed) {
    st = lk__fail(ctx, LK_ERR_NOMEM, "planner: out of memory");
    goto done;
  }
  for (uint32_t i = 0; i < n; i++) order[i] = i;
  qsort_r(order, n, sizeof *order, pl_order_cmp, items);
  uint32_t n_placed = 0;
  for (uint32_t oi = 0; oi < n; oi++) {
    eng_item *it = &items[order[oi]];
    uint64_t size = pl_align(it->bytes ? it->bytes : 1, align);
    out->naive_bytes += it->bytes;
    if (max_alloc && size > max_alloc) {
      st = lk__fail(ctx, LK_ERR_NOMEM, "planner: a tensor of %llu bytes exceeds the device's max_alloc %llu",
                    (unsigned long long)it->bytes, (unsigned long long)max_alloc);
      goto done;
    }
    for (uint32_t a = 0;; a++) {
      uint32_t ns = 0;
      for (uint32_t k = 0; k < n_placed; k++) {
        const eng_item *p = &items[placed[k]];
        if (p->arena == a && pl_meet(p, it)) segs[ns++] = (pl_seg){p->offset, p->offset + pl_align(p->bytes ? p->bytes : 1, align)};
      }
      qsort(segs, ns, sizeof *segs, pl_seg_cmp);
      uint64_t off = 0;
      for (uint32_t k = 0; k < ns; k++) {
        if (segs[k].lo >= off + size) break;
        if (segs[k].hi > off) off = segs[k].hi;
      }
      if (max_alloc && off + size > max_alloc) continue; /* try the next arena */
      it->arena = a;
      it->offset = off;
      if (a >= out->n_arenas) {
        uint64_t *ab = realloc(out->arena_bytes, (a + 1) * sizeof *ab);
        if (!ab) {
          st = lk__fail(ctx, LK_ERR_NOMEM, "planner: out of memory");
          goto done;
        }
        for (uint32_t k = out->n_arenas; k <= a; k++) ab[k] = 0;
        out->arena_bytes = ab;
        out->n_arenas = a + 1;
      }
      if (off + size > out->arena_bytes[a]) out->arena_bytes[a] = off + size;
      break;
    }
    placed[n_placed++] = order[oi];
  }
  for (uint32_t a = 0; a < out->n_arenas; a++) out->peak_bytes += out->arena_bytes[a];
done:
  free(order);
  free(segs);
  free(placed);
  if (st) eng_plan_free(out);
  return st;
}

void eng_plan_free(eng_plan *p) {
  free(p->arena_bytes);
  memset(p, 0, sizeof *p);
}
