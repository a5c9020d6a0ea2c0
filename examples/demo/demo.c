/* demo.c - a small host program: a LoRA forward and a merge/unmerge round
 * trip on random tensors through the public API, with timings.
 *
 *   demo [TOKENS IN OUT RANK]      (default 512 2048 2048 16)
 */
#include <lorakit.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static float *random_floats(size_t n, float scale, unsigned *seed) {
  float *p = malloc(n * sizeof *p);
  if (!p) return NULL;
  for (size_t i = 0; i < n; i++) p[i] = scale * ((float)rand_r(seed) / (float)RAND_MAX - 0.5f);
  return p;
}

static double max_rel_diff(const float *a, const float *b, size_t n) {
  double worst = 0, mag = 0;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - (double)b[i]);
    if (d > worst) worst = d;
    if (fabs((double)b[i]) > mag) mag = fabs((double)b[i]);
  }
  return mag > 0 ? worst / mag : worst;
}

#define CHECK(call)                                                                     \
  do {                                                                                  \
    lk_status st_ = (call);                                                             \
    if (st_) {                                                                          \
      fprintf(stderr, "demo: %s failed: %s\n", #call, lk_last_error(ctx));              \
      return 1;                                                                         \
    }                                                                                   \
  } while (0)

int main(int argc, char **argv) {
  int64_t M = 512, in = 2048, out = 2048;
  uint32_t r = 16;
  if (argc == 5) {
    M = atoll(argv[1]);
    in = atoll(argv[2]);
    out = atoll(argv[3]);
    r = (uint32_t)atoi(argv[4]);
  }
  lk_context_t *ctx = NULL;
  if (lk_context_create(NULL, &ctx)) return 1;
  lk_backend_t *be = NULL;
  CHECK(lk_backend_open(ctx, "cpu", 0, &be));
  lk_device_info_t dev;
  memset(&dev, 0, sizeof dev);
  dev.struct_size = sizeof dev;
  CHECK(lk_backend_info(be, &dev));
  printf("backend %s on %s (%s), %u threads\n", lk_backend_name(be), dev.name, dev.driver, dev.compute_units);

  lk_lora_config_t cfg = {sizeof cfg, r, 2.0f * (float)r, LK_SCALING_STANDARD, 42};
  lk_adapter_t *ad = NULL;
  CHECK(lk_adapter_create(ctx, &cfg, &ad));
  CHECK(lk_adapter_add_target(ad, "model.layers.0.self_attn.q_proj", in, out, 0, 0));
  lk_tensor_t A, B;
  CHECK(lk_adapter_weights(ad, 0, &A, &B));
  unsigned seed = 7;
  for (int64_t i = 0; i < out * (int64_t)r; i++) /* pretend it was trained: B != 0 */
    ((float *)B.data)[i] = 0.02f * ((float)rand_r(&seed) / (float)RAND_MAX - 0.5f);

  float *x = random_floats((size_t)(M * in), 2.0f, &seed);
  float *w = random_floats((size_t)(out * in), 0.1f, &seed);
  float *w0 = malloc((size_t)(out * in) * sizeof(float));
  float *y1 = malloc((size_t)(M * out) * sizeof(float));
  float *y2 = malloc((size_t)(M * out) * sizeof(float));
  if (!x || !w || !w0 || !y1 || !y2) return 1;
  for (int64_t i = 0; i < out * in; i++) w0[i] = w[i];
  int64_t sx[2] = {M, in}, sw[2] = {out, in}, sy[2] = {M, out};
  lk_tensor_t tx, tw, ty1, ty2;
  lk_tensor_init(&tx, LK_DTYPE_F32, 2, sx, x);
  lk_tensor_init(&tw, LK_DTYPE_F32, 2, sw, w);
  lk_tensor_init(&ty1, LK_DTYPE_F32, 2, sy, y1);
  lk_tensor_init(&ty2, LK_DTYPE_F32, 2, sy, y2);

  CHECK(lk_lora_forward(be, ad, 0, &tx, &tw, &ty1)); /* warm-up: threads, page faults */
  double t0 = now();
  CHECK(lk_lora_forward(be, ad, 0, &tx, &tw, &ty1));
  double t_fwd = now() - t0;
  t0 = now();
  CHECK(lk_merge(be, ad, 0, &tw, 1.0f));
  double t_merge = now() - t0;
  lk_target_info_t ti = {sizeof ti, 0, NULL, 0, 0, 0, 0};
  CHECK(lk_adapter_target_info(ad, 0, &ti));
  CHECK(lk_lora_forward(be, ad, 0, &tx, &tw, &ty2)); /* merged W plus LoRA again: undo below */
  /* y2 = x W'^T + s x A^T B^T; the merged-only output is y2 minus the LoRA part. */
  {
    lk_tensor_t tyl;
    float *yl = calloc((size_t)(M * out), sizeof(float));
    lk_tensor_init(&tyl, LK_DTYPE_F32, 2, sy, yl);
    CHECK(lk_lora_forward(be, ad, 0, &tx, NULL, &tyl));
    for (int64_t i = 0; i < M * out; i++) y2[i] -= yl[i];
    free(yl);
  }
  t0 = now();
  CHECK(lk_unmerge(be, ad, 0, &tw, 1.0f));
  double t_unmerge = now() - t0;
  double flops = 2.0 * (double)M * (double)in * (double)out + 2.0 * (double)M * r * (double)(in + out);
  printf("layer x[%lld,%lld] W[%lld,%lld] r=%u scale=%.3g\n", (long long)M, (long long)in, (long long)out,
         (long long)in, r, (double)ti.scale);
  printf("forward (x W^T + s x A^T B^T): %8.2f ms  %6.1f GFLOP/s\n", t_fwd * 1e3, flops / t_fwd * 1e-9);
  printf("merge   (W += s B A):          %8.2f ms\n", t_merge * 1e3);
  printf("unmerge (W -= s B A):          %8.2f ms\n", t_unmerge * 1e3);
  printf("merged forward vs on-the-fly:  max rel diff %.2e\n", max_rel_diff(y2, y1, (size_t)(M * out)));
  printf("unmerge restores W:            max rel diff %.2e\n", max_rel_diff(w, w0, (size_t)(out * in)));
  lk_adapter_free(ad);
  lk_backend_close(be);
  lk_context_free(ctx);
  free(x);
  free(w);
  free(w0);
  free(y1);
  free(y2);
  return 0;
}
