/* cmd_plugins_ops.c - what `lorakit plugins --json` says of each backend:
 * its devices (listed without an instance: lk_backend_device_count/info)
 * and the core ops it runs. An op is asked about with a small, representative
 * f32 description of it (the operand lists and shapes of lorakit_ops.h, i32
 * where the op takes ids, labels or positions; optional operands present,
 * except the attention mask and AdamW's squared norm, given as absent),
 * through lk_backend_supports on a backend opened for that purpose. No
 * buffer is made and nothing runs. */
#include "cli.h"

#include <jansson.h>
#include <string.h>

typedef struct op_desc {
  lk_view_t src[7], dst[3];
  uint32_t n_src, n_dst;
} op_desc;

/* A contiguous view of up to 4 dimensions (trailing zeros end the shape). */
static lk_view_t vw(int32_t dtype, int64_t a, int64_t b, int64_t c, int64_t d) {
  int64_t s[4] = {a, b, c, d};
  uint32_t n = 0;
  while (n < 4 && s[n]) n++;
  lk_view_t v;
  memset(&v, 0, sizeof v);
  lk_view_init(&v, dtype, n, s, NULL, 0);
  return v;
}

/* An optional operand left out (lorakit_ops.h: no buffer, dtype invalid). */
static lk_view_t absent(void) {
  lk_view_t v;
  memset(&v, 0, sizeof v);
  v.struct_size = sizeof v;
  v.dtype = LK_DTYPE_INVALID;
  return v;
}

static void src(op_desc *d, lk_view_t v) { d->src[d->n_src++] = v; }
static void dst(op_desc *d, lk_view_t v) { d->dst[d->n_dst++] = v; }

/* Rows M = 2, K = in = D = 4, N = out = 3, r = 2, V = 5; attention and rope
 * on [B 1, T 2, H 2, Dh 4]. 0 for an id this table does not describe. */
static int describe(int32_t id, op_desc *d) {
  const int32_t F = LK_DTYPE_F32, I = LK_DTYPE_I32;
  memset(d, 0, sizeof *d);
  lk_view_t x = vw(F, 2, 4, 0, 0), q = vw(F, 1, 2, 2, 4);
  switch (id) {
  case LK_OP_COPY: case LK_OP_SCALE: case LK_OP_SILU:
    src(d, x), dst(d, x);
    return 1;
  case LK_OP_FILL:
    dst(d, x);
    return 1;
  case LK_OP_ADD: case LK_OP_MUL: case LK_OP_SWIGLU: case LK_OP_SILU_BACKWARD:
    src(d, x), src(d, x), dst(d, x);
    return 1;
  case LK_OP_SWIGLU_BACKWARD:
    src(d, x), src(d, x), src(d, x), dst(d, x), dst(d, x);
    return 1;
  case LK_OP_SUM: case LK_OP_SUMSQ:
    src(d, x), dst(d, vw(F, 1, 0, 0, 0));
    return 1;
  case LK_OP_MATMUL:
    src(d, x), src(d, vw(F, 3, 4, 0, 0)), dst(d, vw(F, 2, 3, 0, 0));
    return 1;
  case LK_OP_LORA_FORWARD:
    src(d, x), src(d, vw(F, 2, 4, 0, 0)), src(d, vw(F, 3, 2, 0, 0)), dst(d, vw(F, 2, 3, 0, 0));
    return 1;
  case LK_OP_LORA_BACKWARD:
    src(d, x), src(d, vw(F, 2, 4, 0, 0)), src(d, vw(F, 3, 2, 0, 0)), src(d, vw(F, 2, 3, 0, 0));
    dst(d, vw(F, 2, 4, 0, 0)), dst(d, vw(F, 3, 2, 0, 0)), dst(d, x);
    return 1;
  case LK_OP_MERGE: case LK_OP_UNMERGE:
    src(d, vw(F, 2, 4, 0, 0)), src(d, vw(F, 3, 2, 0, 0)), dst(d, vw(F, 3, 4, 0, 0));
    return 1;
  case LK_OP_EMBEDDING:
    src(d, vw(F, 5, 4, 0, 0)), src(d, vw(I, 2, 0, 0, 0)), dst(d, x);
    return 1;
  case LK_OP_EMBEDDING_BACKWARD:
    src(d, vw(I, 2, 0, 0, 0)), src(d, x), dst(d, vw(F, 5, 4, 0, 0));
    return 1;
  case LK_OP_RMSNORM:
    src(d, x), src(d, vw(F, 4, 0, 0, 0)), dst(d, x), dst(d, vw(F, 2, 0, 0, 0));
    return 1;
  case LK_OP_RMSNORM_BACKWARD:
    src(d, x), src(d, vw(F, 4, 0, 0, 0)), src(d, vw(F, 2, 0, 0, 0)), src(d, x);
    dst(d, x), dst(d, vw(F, 4, 0, 0, 0));
    return 1;
  case LK_OP_ROPE:
    src(d, q), src(d, vw(I, 1, 2, 0, 0)), dst(d, q);
    return 1;
  case LK_OP_ATTENTION:
    src(d, q), src(d, q), src(d, q), src(d, absent()), dst(d, q), dst(d, vw(F, 1, 2, 2, 0));
    return 1;
  case LK_OP_ATTENTION_BACKWARD:
    src(d, q), src(d, q), src(d, q), src(d, q), src(d, vw(F, 1, 2, 2, 0)), src(d, q), src(d, absent());
    dst(d, q), dst(d, q), dst(d, q);
    return 1;
  case LK_OP_CROSS_ENTROPY:
    src(d, vw(F, 2, 5, 0, 0)), src(d, vw(I, 2, 0, 0, 0)), dst(d, vw(F, 1, 0, 0, 0)), dst(d, vw(F, 1, 0, 0, 0));
    return 1;
  case LK_OP_CROSS_ENTROPY_BACKWARD:
    src(d, vw(F, 2, 5, 0, 0)), src(d, vw(I, 2, 0, 0, 0)), src(d, vw(F, 1, 0, 0, 0)), dst(d, vw(F, 2, 5, 0, 0));
    return 1;
  case LK_OP_ADAMW:
    src(d, vw(F, 4, 0, 0, 0)), src(d, absent());
    dst(d, vw(F, 4, 0, 0, 0)), dst(d, vw(F, 4, 0, 0, 0)), dst(d, vw(F, 4, 0, 0, 0));
    return 1;
  default:
    return 0;
  }
}

static json_t *device_json(const lk_device_info_t *di, uint32_t index) {
  static const char *const types[] = {"?", "cpu", "gpu", "other"};
  return json_pack("{s:i, s:s, s:s, s:I, s:I, s:i, s:{s:I, s:I, s:b, s:b, s:s}}", "index", (int)index, "name",
                   di->name, "type", di->type >= 1 && di->type <= 3 ? types[di->type] : "?", "memory_total",
                   (json_int_t)di->memory_total, "memory_free", (json_int_t)di->memory_free, "compute_units",
                   (int)di->compute_units, "limits", "max_alloc", (json_int_t)di->max_alloc, "offset_align",
                   (json_int_t)di->offset_align, "unified_memory", (int)(di->unified_memory != 0), "can_wrap",
                   (int)(di->can_wrap != 0), "driver", di->driver);
}

json_t *cli_backend_json(lk_context_t *ctx, const char *name, const char *description) {
  json_t *o = json_pack("{s:s, s:s}", "name", name, "description", description ? description : "");
  json_t *devices = json_array(), *ops = json_array();
  uint32_t n = lk_backend_device_count(ctx, name);
  for (uint32_t i = 0; i < n; i++) {
    lk_device_info_t di;
    memset(&di, 0, sizeof di);
    di.struct_size = sizeof di;
    if (lk_backend_device_info(ctx, name, i, &di) == LK_OK) json_array_append_new(devices, device_json(&di, i));
  }
  lk_backend_t *be = NULL;
  if (n && lk_backend_open(ctx, name, 0, &be) == LK_OK) {
    for (int32_t id = LK_OP_COPY; id < LK_OP_CORE_COUNT; id++) {
      op_desc d;
      const char *op_name = lk_op_name(id);
      if (!op_name || !describe(id, &d)) continue;
      lk_op_t op = {sizeof op, id, NULL, d.n_src, d.n_dst, d.src, d.dst, NULL};
      if (lk_backend_supports(be, &op)) json_array_append_new(ops, json_string(op_name));
    }
    lk_backend_close(be);
  } else if (n) {
    json_object_set_new(o, "error", json_string(lk_last_error(ctx)));
  }
  json_object_set_new(o, "devices", devices);
  json_object_set_new(o, "ops", ops);
  return o;
}
