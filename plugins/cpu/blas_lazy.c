/* blas_lazy.c - OpenBLAS, loaded when the first backend instance is created
 * rather than when the plugin is.
 *
 * Why: the pthread build of OpenBLAS starts its thread pool from its
 * constructor, and each pool thread maps a 128 MiB work buffer; when that
 * mmap fails (an address-space limit, `ulimit -v`), OpenBLAS retries it
 * forever, so that even `lorakit plugins` (which does no arithmetic) hung at
 * exit waiting for that thread. So the plugin does not link OpenBLAS: the
 * three entry points it uses are defined here (hidden) and forward to the
 * library opened in cpu_blas_ready, which also
 *   - opens it with OPENBLAS_NUM_THREADS=1 unless the host chose a number
 *     (our own pool is the only parallelism: OpenBLAS runs single-threaded
 *     inside it, see cpu_submit), so no OpenBLAS thread is started;
 *   - checks that the work buffers the pool threads will need (one per
 *     thread calling cblas_sgemm at once) fit in the address space, and
 *     refuses with "out of memory" when not, instead of letting OpenBLAS
 *     spin in its allocator. */
#include "cpu.h"

#include <cblas.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>

typedef void (*cpu_sgemm_fn)(enum CBLAS_ORDER, enum CBLAS_TRANSPOSE, enum CBLAS_TRANSPOSE, blasint,
                             blasint, blasint, float, const float *, blasint, const float *, blasint,
                             float, float *, blasint);
typedef int (*cpu_get_threads_fn)(void);
typedef void (*cpu_set_threads_fn)(int);

static pthread_mutex_t cpu_blas_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(cpu_sgemm_fn) cpu_blas_sgemm;
static _Atomic(cpu_get_threads_fn) cpu_blas_get_threads;
static _Atomic(cpu_set_threads_fn) cpu_blas_set_threads;

/* OpenBLAS's BUFFER_SIZE on x86-64 (32 << 22) plus its alignment slack. */
#define CPU_BLAS_BUFFER ((size_t)130 << 20)

/* Whether n work buffers fit in the address space now: a reservation that
 * touches no memory (PROT_NONE), released at once. */
static int cpu_blas_fits(uint32_t n) {
  size_t len = (size_t)n * CPU_BLAS_BUFFER;
  if (len / CPU_BLAS_BUFFER != n) return 0;
  void *p = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return 0;
  munmap(p, len);
  return 1;
}

static int32_t cpu_blas_open(lk_error_t *err) {
  if (atomic_load(&cpu_blas_sgemm)) return LK_OK;
  /* setenv is not thread-safe against getenv elsewhere; it is done once per
   * process, only when the host set no thread count, and undone at once so
   * that a host loading OpenBLAS later keeps its default. */
  int set_env = !secure_getenv("OPENBLAS_NUM_THREADS");
  if (set_env) setenv("OPENBLAS_NUM_THREADS", "1", 0);
  void *h = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL);
  if (!h) h = dlopen("libopenblas.so", RTLD_NOW | RTLD_LOCAL);
  if (set_env) unsetenv("OPENBLAS_NUM_THREADS");
  if (!h) {
    const char *why = dlerror();
    return cpu_fail(err, LK_ERR_BACKEND, "cpu attention: cannot load OpenBLAS (libopenblas.so.0): %s",
                    why ? why : "?");
  }
  cpu_sgemm_fn g = (cpu_sgemm_fn)dlsym(h, "cblas_sgemm");
  cpu_get_threads_fn gt = (cpu_get_threads_fn)dlsym(h, "openblas_get_num_threads");
  cpu_set_threads_fn st = (cpu_set_threads_fn)dlsym(h, "openblas_set_num_threads");
  if (!g || !gt || !st) /* the handle is kept: OpenBLAS may have started threads */
    return cpu_fail(err, LK_ERR_BACKEND, "cpu attention: OpenBLAS lacks cblas_sgemm or openblas_*_num_threads");
  atomic_store(&cpu_blas_get_threads, gt);
  atomic_store(&cpu_blas_set_threads, st);
  atomic_store(&cpu_blas_sgemm, g); /* last: it says "loaded" */
  return LK_OK;
}

int32_t cpu_blas_ready(uint32_t n_threads, lk_error_t *err) {
  if (!cpu_blas_fits(n_threads ? n_threads : 1))
    return cpu_fail(err, LK_ERR_NOMEM,
                    "cpu attention: out of memory for the OpenBLAS work buffers (%u threads x %zu MiB of address space)",
                    n_threads, CPU_BLAS_BUFFER >> 20);
  pthread_mutex_lock(&cpu_blas_lock);
  int32_t rc = cpu_blas_open(err);
  pthread_mutex_unlock(&cpu_blas_lock);
  return rc;
}

/* ---- the entry points the kernels call (cblas.h's declarations) ---------------------- */

/* Only reached from attention ops, which validation runs only after
 * cpu_blas_ready succeeded. */
void cblas_sgemm(OPENBLAS_CONST enum CBLAS_ORDER Order, OPENBLAS_CONST enum CBLAS_TRANSPOSE TransA,
                 OPENBLAS_CONST enum CBLAS_TRANSPOSE TransB, OPENBLAS_CONST blasint M,
                 OPENBLAS_CONST blasint N, OPENBLAS_CONST blasint K, OPENBLAS_CONST float alpha,
                 OPENBLAS_CONST float *A, OPENBLAS_CONST blasint lda, OPENBLAS_CONST float *B,
                 OPENBLAS_CONST blasint ldb, OPENBLAS_CONST float beta, float *C,
                 OPENBLAS_CONST blasint ldc) {
  atomic_load(&cpu_blas_sgemm)(Order, TransA, TransB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

int openblas_get_num_threads(void) {
  cpu_get_threads_fn f = atomic_load(&cpu_blas_get_threads);
  return f ? f() : 1;
}

void openblas_set_num_threads(int num_threads) {
  cpu_set_threads_fn f = atomic_load(&cpu_blas_set_threads);
  if (f) f(num_threads);
}
