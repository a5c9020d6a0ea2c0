/* pool.c - the CPU backend's own fork-join thread pool. One pool per backend
 * instance: its threads are created in create and joined in destroy, and
 * they are the only threads doing arithmetic (OpenBLAS runs single-threaded
 * inside each of them). After a job, workers (and the caller waiting for
 * them) spin for a few tens of microseconds, so the back-to-back jobs of a
 * batch start without a wake-up; then they sleep on a condition variable. */
#include "cpu.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#define SPIN_NS 50000 /* how long an idle thread polls before sleeping */

struct cpu_pool {
  uint32_t n;         /* threads including the caller */
  pthread_t *threads; /* n - 1 workers */
  uint32_t started;
  pthread_mutex_t mu;
  pthread_cond_t cv_work, cv_done;
  _Atomic uint64_t generation; /* bumped for each job */
  _Atomic uint32_t pending;    /* workers still running the current job */
  _Atomic int stop;
  cpu_task_fn fn;
  void *arg;
  uint32_t nt; /* threads taking part in the current job */
};

typedef struct worker_arg {
  cpu_pool_t *pool;
  uint32_t index;
} worker_arg;

static uint64_t cpu_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

/* Poll until *v differs from old (for 1) or equals zero (for 0), for at most
 * SPIN_NS; returns 1 when the condition came true while polling. */
static int cpu_spin_gen(_Atomic uint64_t *v, uint64_t old) {
  uint64_t t0 = cpu_now_ns();
  for (uint32_t i = 1;; i++) {
    if (atomic_load_explicit(v, memory_order_acquire) != old) return 1;
    if ((i & 255) == 0 && cpu_now_ns() - t0 > SPIN_NS) return 0;
    cpu_relax();
  }
}

static int cpu_spin_zero(_Atomic uint32_t *v) {
  uint64_t t0 = cpu_now_ns();
  for (uint32_t i = 1;; i++) {
    if (atomic_load_explicit(v, memory_order_acquire) == 0) return 1;
    if ((i & 255) == 0 && cpu_now_ns() - t0 > SPIN_NS) return 0;
    cpu_relax();
  }
}

static void *cpu_worker(void *p) {
  worker_arg *wa = p;
  cpu_pool_t *pool = wa->pool;
  uint32_t index = wa->index;
  free(wa);
  uint64_t seen = 0; /* the pool starts at generation 0 */
  for (;;) {
    if (!cpu_spin_gen(&pool->generation, seen)) {
      pthread_mutex_lock(&pool->mu);
      while (atomic_load(&pool->generation) == seen && !atomic_load(&pool->stop))
        pthread_cond_wait(&pool->cv_work, &pool->mu);
      pthread_mutex_unlock(&pool->mu);
    }
    if (atomic_load(&pool->stop)) break;
    seen = atomic_load_explicit(&pool->generation, memory_order_acquire);
    if (index < pool->nt) pool->fn(pool->arg, index, pool->nt);
    if (atomic_fetch_sub_explicit(&pool->pending, 1, memory_order_acq_rel) == 1) {
      pthread_mutex_lock(&pool->mu);
      pthread_cond_signal(&pool->cv_done);
      pthread_mutex_unlock(&pool->mu);
    }
  }
  return NULL;
}

int32_t cpu_pool_create(uint32_t n_threads, cpu_pool_t **out) {
  *out = NULL;
  if (n_threads == 0) n_threads = 1;
  cpu_pool_t *pool = calloc(1, sizeof *pool);
  if (!pool) return LK_ERR_NOMEM;
  pool->n = n_threads;
  if (n_threads > 1) {
    pool->threads = calloc(n_threads - 1, sizeof *pool->threads);
    if (!pool->threads) {
      free(pool);
      return LK_ERR_NOMEM;
    }
  }
  pthread_mutex_init(&pool->mu, NULL);
  pthread_cond_init(&pool->cv_work, NULL);
  pthread_cond_init(&pool->cv_done, NULL);
  /* Workers take no signals: they belong to the host's threads. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int32_t rc = LK_OK;
  for (uint32_t i = 1; i < n_threads; i++) {
    worker_arg *wa = malloc(sizeof *wa);
    if (!wa) {
      rc = LK_ERR_NOMEM;
      break;
    }
    wa->pool = pool;
    wa->index = i;
    int e = pthread_create(&pool->threads[i - 1], NULL, cpu_worker, wa);
    if (e) {
      free(wa);
      rc = e == EAGAIN || e == ENOMEM ? LK_ERR_NOMEM : LK_ERR_BACKEND; /* no memory for a stack */
      break;
    }
    pool->started++;
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != LK_OK) {
    cpu_pool_destroy(pool);
    return rc;
  }
  *out = pool;
  return LK_OK;
}

void cpu_pool_destroy(cpu_pool_t *pool) {
  if (!pool) return;
  pthread_mutex_lock(&pool->mu);
  atomic_store(&pool->stop, 1);
  atomic_fetch_add(&pool->generation, 1); /* wakes spinning workers too */
  pthread_cond_broadcast(&pool->cv_work);
  pthread_mutex_unlock(&pool->mu);
  for (uint32_t i = 0; i < pool->started; i++) pthread_join(pool->threads[i], NULL);
  pthread_cond_destroy(&pool->cv_work);
  pthread_cond_destroy(&pool->cv_done);
  pthread_mutex_destroy(&pool->mu);
  free(pool->threads);
  free(pool);
}

uint32_t cpu_pool_size(const cpu_pool_t *pool) { return pool ? pool->n : 1; }

void cpu_pool_run(cpu_pool_t *pool, uint32_t nt, cpu_task_fn fn, void *arg) {
  uint32_t n = cpu_pool_size(pool);
  if (nt > n) nt = n;
  if (nt <= 1) {
    fn(arg, 0, 1);
    return;
  }
  pool->fn = fn; /* published by the release on generation */
  pool->arg = arg;
  pool->nt = nt;
  atomic_store_explicit(&pool->pending, pool->started, memory_order_relaxed);
  pthread_mutex_lock(&pool->mu);
  atomic_fetch_add_explicit(&pool->generation, 1, memory_order_release);
  pthread_cond_broadcast(&pool->cv_work);
  pthread_mutex_unlock(&pool->mu);
  fn(arg, 0, nt);
  if (!cpu_spin_zero(&pool->pending)) {
    pthread_mutex_lock(&pool->mu);
    while (atomic_load(&pool->pending)) pthread_cond_wait(&pool->cv_done, &pool->mu);
    pthread_mutex_unlock(&pool->mu);
  }
}

void cpu_split(int64_t total, uint32_t t, uint32_t nt, int64_t align, int64_t *begin,
               int64_t *end) {
  if (align < 1) align = 1;
  int64_t chunk = (total + nt - 1) / nt;
  chunk = (chunk + align - 1) / align * align;
  int64_t b = chunk * t, e = b + chunk;
  if (b > total) b = total;
  if (e > total) e = total;
  *begin = b;
  *end = e;
}
