/* bench_formats.c - reading a whole model through the loaders, against the
 * fastest plain way to get the same file into memory, measured in one run:
 *   model_read_all  lk_model_open (the loader maps the file and validates its
 *                   header) + lk_model_tensor_info/lk_model_tensor_read of every
 *                   tensor into one buffer + lk_model_close, in GB/s of tensor
 *                   bytes; against
 *   plain_read      open + read() of the whole file into a buffer + close, in
 *                   GB/s of file bytes.
 * The model is the largest of the reference fixture (LK_FIXTURES/tiny-llama-a:
 * the GGUF files and the HF folders), so the GGUF Q/K un-permutation is part
 * of the figure. Warm page cache (every file is read before timing), the two
 * measured alternately, best of many repetitions of each.
 * Usage: bench_formats [PLUGIN_DIR] (default: plugins/ of the build, ../plugins
 * next to this program). Prints a SKIP line and exits 0 when the fixtures are
 * absent. */
#include "lorakit.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MIN_REPS 20
#define MIN_SECONDS 1.0 /* of each measurement */

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t file_size(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode) ? (uint64_t)st.st_size : 0;
}

/* The model with the most bytes: every GGUF file in gguf/ but the adapters,
 * and the HF folders (their model.safetensors). data_file gets the file the
 * bytes are in. */
static int pick_model(const char *root, char *model, char *data_file, size_t n) {
  uint64_t best = 0;
  char dir[1100], p[PATH_MAX];
  snprintf(dir, sizeof dir, "%s/gguf", root);
  DIR *d = opendir(dir);
  struct dirent *e;
  while (d && (e = readdir(d))) {
    size_t len = strlen(e->d_name);
    if (len < 5 || strcmp(e->d_name + len - 5, ".gguf") || strstr(e->d_name, "lora")) continue;
    snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
    uint64_t s = file_size(p);
    if (s > best || (s == best && strcmp(p, model) < 0)) {
      best = s;
      snprintf(model, n, "%s", p);
      snprintf(data_file, n, "%s", p);
    }
  }
  if (d) closedir(d);
  static const char *const folders[] = {"base", "a1/merged"};
  for (size_t i = 0; i < sizeof folders / sizeof folders[0]; i++) {
    snprintf(p, sizeof p, "%s/%s/model.safetensors", root, folders[i]);
    uint64_t s = file_size(p);
    if (s > best) {
      best = s;
      snprintf(model, n, "%s/%s", root, folders[i]);
      snprintf(data_file, n, "%s", p);
    }
  }
  return best > 0;
}

/* One lorakit pass: open, read every tensor, close. Returns tensor bytes. */
static uint64_t lorakit_pass(lk_context_t *ctx, const char *model, uint8_t *buf, uint64_t cap) {
  lk_model_t *m = NULL;
  if (lk_model_open(ctx, model, NULL, &m)) {
    fprintf(stderr, "bench_formats: %s\n", lk_last_error(ctx));
    exit(1);
  }
  uint64_t total = 0;
  int64_t n = lk_model_tensor_count(m);
  for (int64_t i = 0; i < n; i++) {
    lk_tensor_info_t ti;
    memset(&ti, 0, sizeof ti);
    ti.struct_size = sizeof ti;
    if (lk_model_tensor_info(m, i, &ti) || total + ti.nbytes > cap ||
        lk_model_tensor_read(m, i, buf + total, ti.nbytes)) {
      fprintf(stderr, "bench_formats: reading tensor %lld of %s: %s\n", (long long)i, model, lk_last_error(ctx));
      exit(1);
    }
    total += ti.nbytes;
  }
  lk_model_close(m);
  return total;
}

/* One plain pass: open, read() the whole file, close. Returns file bytes. */
static uint64_t plain_pass(const char *file, uint8_t *buf, uint64_t cap) {
  int fd = open(file, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    perror(file);
    exit(1);
  }
  uint64_t got = 0;
  for (;;) {
    ssize_t r = read(fd, buf + got, (size_t)(cap - got));
    if (r < 0) {
      perror(file);
      exit(1);
    }
    if (r == 0) break;
    got += (uint64_t)r;
  }
  close(fd);
  return got;
}

int main(int argc, char **argv) {
  const char *fx = getenv("LK_FIXTURES");
  char root[1024];
  snprintf(root, sizeof root, "%s/tiny-llama-a", fx && *fx ? fx : "../shared/fixtures");
  char model[PATH_MAX] = "", data_file[PATH_MAX] = "";
  if (!pick_model(root, model, data_file, sizeof model)) {
    printf("bench_formats: SKIP model_read_all: no fixture models under %s (set LK_FIXTURES)\n", root);
    return 0;
  }
  char plugdir[PATH_MAX];
  if (argc > 1) {
    snprintf(plugdir, sizeof plugdir, "%s", argv[1]);
  } else {
    char exe[2048];
    ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[k > 0 ? k : 0] = 0;
    char *slash = strrchr(exe, '/');
    if (slash) *slash = 0;
    snprintf(plugdir, sizeof plugdir, "%s/../plugins", exe);
  }
  lk_context_opts_t o = {sizeof o, 1, 0, 0};
  lk_context_t *ctx = NULL;
  if (lk_context_create(&o, &ctx) || lk_plugin_load_dir(ctx, plugdir)) {
    fprintf(stderr, "bench_formats: loading the plugins in %s: %s\n", plugdir, ctx ? lk_last_error(ctx) : "");
    return 1;
  }
  uint64_t fsize = file_size(data_file), cap = fsize + (1u << 20);
  uint8_t *buf = malloc(cap), *buf2 = malloc(cap);
  if (!buf || !buf2) return 1;
  memset(buf, 1, cap); /* fault the destination pages in before timing */
  memset(buf2, 1, cap);
  uint64_t tensor_bytes = lorakit_pass(ctx, model, buf, cap); /* warm-up: page cache, mappings */
  plain_pass(data_file, buf2, cap);
  double best_lk = 1e30, best_plain = 1e30, spent_lk = 0, spent_plain = 0;
  int reps = 0;
  while (reps < MIN_REPS || spent_lk < MIN_SECONDS || spent_plain < MIN_SECONDS) {
    double t0 = now();
    lorakit_pass(ctx, model, buf, cap);
    double t1 = now();
    plain_pass(data_file, buf2, cap);
    double t2 = now();
    if (t1 - t0 < best_lk) best_lk = t1 - t0;
    if (t2 - t1 < best_plain) best_plain = t2 - t1;
    spent_lk += t1 - t0;
    spent_plain += t2 - t1;
    reps++;
  }
  double gbs_lk = (double)tensor_bytes / best_lk / 1e9, gbs_plain = (double)fsize / best_plain / 1e9;
  lk_model_t *m = NULL;
  const char *loader = lk_model_open(ctx, model, NULL, &m) ? "?" : lk_model_loader(m);
  printf("bench: model_read_all %.2f GB/s ratio=%.2f vs plain_read (%.2f GB/s) [%s: loader %s, %llu tensor bytes "
         "in %.3f ms vs %llu file bytes in %.3f ms, best of %d]\n",
         gbs_lk, gbs_lk / gbs_plain, gbs_plain, model, loader, (unsigned long long)tensor_bytes, best_lk * 1e3,
         (unsigned long long)fsize, best_plain * 1e3, reps);
  lk_model_close(m);
  free(buf);
  free(buf2);
  lk_context_free(ctx);
  return 0;
}
