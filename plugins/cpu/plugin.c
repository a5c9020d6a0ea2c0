/* plugin.c - the CPU backend plugin's entry point and backend vtable: ABI
 * negotiation, reference-counted init/fini, the backend factory, instances
 * (thread pool, device info), buffers (64-byte aligned allocations or
 * zero-copy wraps, tracked in a set so a stale or foreign buffer is refused
 * rather than dereferenced) and synchronous batched submission: every op of
 * a batch is validated (validate.c) before any runs (ops.c). */
#include "cpu.h"
#include "isa.h"

#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

plug_refs cpu_refs = PLUG_REFS_INITIALIZER;

int32_t cpu_fail(lk_error_t *err, int32_t code, const char *fmt, ...) {
  if (err && err->struct_size >= offsetof(lk_error_t, message) + LK_ERROR_MAX) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    err->code = code;
  } else if (err && err->struct_size >= offsetof(lk_error_t, code) + sizeof err->code) {
    err->code = code;
  }
  return code;
}

/* ---- buffer set: open addressing on the pointer, linear probing ------------- */

static size_t cpu_hash(const void *p, size_t cap) {
  uint64_t h = (uint64_t)(uintptr_t)p * 0x9e3779b97f4a7c15ull;
  return (size_t)(h >> 20) & (cap - 1);
}

static int cpu_set_grow(cpu_backend_t *be) {
  size_t cap = be->set_cap ? be->set_cap * 2 : 64;
  lk_buffer_t **set = calloc(cap, sizeof *set);
  if (!set) return -1;
  for (size_t i = 0; i < be->set_cap; i++) {
    lk_buffer_t *b = be->set[i];
    if (!b) continue;
    size_t k = cpu_hash(b, cap);
    while (set[k]) k = (k + 1) & (cap - 1);
    set[k] = b;
  }
  free(be->set);
  be->set = set;
  be->set_cap = cap;
  return 0;
}

static int cpu_set_add(cpu_backend_t *be, lk_buffer_t *b) {
  pthread_mutex_lock(&be->lock);
  int rc = 0;
  if ((be->set_len + 1) * 2 > be->set_cap) rc = cpu_set_grow(be);
  if (rc == 0) {
    size_t k = cpu_hash(b, be->set_cap);
    while (be->set[k]) k = (k + 1) & (be->set_cap - 1);
    be->set[k] = b;
    be->set_len++;
  }
  pthread_mutex_unlock(&be->lock);
  return rc;
}

/* Slot of b, or SIZE_MAX; call with the lock held. */
static size_t cpu_set_find(const cpu_backend_t *be, const lk_buffer_t *b) {
  if (!be->set_cap || !b) return SIZE_MAX;
  for (size_t k = cpu_hash(b, be->set_cap);; k = (k + 1) & (be->set_cap - 1)) {
    if (!be->set[k]) return SIZE_MAX;
    if (be->set[k] == b) return k;
  }
}

/* Remove b (backward-shift deletion keeps probe chains intact); 1 if it was there. */
static int cpu_set_remove(cpu_backend_t *be, const lk_buffer_t *b) {
  pthread_mutex_lock(&be->lock);
  size_t i = cpu_set_find(be, b), cap = be->set_cap;
  if (i == SIZE_MAX) {
    pthread_mutex_unlock(&be->lock);
    return 0;
  }
  be->set[i] = NULL;
  be->set_len--;
  for (size_t j = (i + 1) & (cap - 1); be->set[j]; j = (j + 1) & (cap - 1)) {
    size_t home = cpu_hash(be->set[j], cap);
    /* move set[j] into the hole at i when its home is not in (i, j] */
    int between = i <= j ? (home > i && home <= j) : (home > i || home <= j);
    if (!between) {
      be->set[i] = be->set[j];
      be->set[j] = NULL;
      i = j;
    }
  }
  pthread_mutex_unlock(&be->lock);
  return 1;
}

int cpu_buffer_known(cpu_backend_t *be, const lk_buffer_t *buf) {
  pthread_mutex_lock(&be->lock);
  int known = cpu_set_find(be, buf) != SIZE_MAX;
  pthread_mutex_unlock(&be->lock);
  return known;
}

/* ---- instances ------------------------------------------------------------------ */

static uint32_t cpu_online_cores(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    int allowed = CPU_COUNT(&set);
    if (allowed > 0 && (n <= 0 || allowed < n)) n = allowed;
  }
  if (n < 1) n = 1;
  if (n > 256) n = 256;
  return (uint32_t)n;
}

static int32_t cpu_create(const lk_backend_config_t *cfg, void **out_self, lk_error_t *err) {
  if (!out_self) return cpu_fail(err, LK_ERR_INVALID_ARG, "cpu create: NULL out_self");
  *out_self = NULL;
  if (!cpu_refs.host)
    return cpu_fail(err, LK_ERR_STATE, "cpu create: the plugin %s is not initialised", CPU_PLUGIN_ID);
  uint32_t n_threads = 0, device = 0;
  if (cfg) {
    if (cfg->struct_size < LK_MIN_SIZE_BACKEND_CONFIG)
      return cpu_fail(err, LK_ERR_ABI, "cpu create: lk_backend_config_t struct_size %u is below its minimum %zu",
                      cfg->struct_size, (size_t)LK_MIN_SIZE_BACKEND_CONFIG);
    for (size_t i = sizeof *cfg; i < cfg->struct_size; i++)
      if (((const unsigned char *)cfg)[i])
        return cpu_fail(err, LK_ERR_ABI, "cpu create: lk_backend_config_t struct_size %u is larger than known (%zu) "
                        "and the unknown tail is not zero", cfg->struct_size, sizeof *cfg);
    n_threads = cfg->n_threads;
    device = cfg->device;
  }
  if (device != 0)
    return cpu_fail(err, LK_ERR_NOT_FOUND, "cpu create: device %u does not exist (the cpu backend has 1 device, index 0)",
                    device);
  if (n_threads == 0) n_threads = cpu_online_cores();
  if (n_threads > 1024)
    return cpu_fail(err, LK_ERR_INVALID_ARG, "cpu create: n_threads %u is more than 1024", n_threads);
  cpu_backend_t *be = calloc(1, sizeof *be);
  if (!be) return cpu_fail(err, LK_ERR_NOMEM, "cpu create: out of memory");
  be->n_threads = n_threads;
  be->host = cpu_refs.host;
  /* LORAKIT_CPU_NO_SIMD=1 forces the portable OpenBLAS paths (tests, triage). */
  const char *no_simd = secure_getenv("LORAKIT_CPU_NO_SIMD");
  be->simd = cpu_have_avx2() && cpu_isa() >= CPU_ISA_AVX2 && !(no_simd && no_simd[0] == '1');
  be->compute_bf16 = cpu_isa_default_bf16();
  pthread_mutex_init(&be->lock, NULL);
  int32_t rc = cpu_pool_create(n_threads, &be->pool);
  if (rc != LK_OK) {
    pthread_mutex_destroy(&be->lock);
    free(be);
    return cpu_fail(err, rc, rc == LK_ERR_NOMEM ? "cpu create: out of memory for %u threads" : "cpu create: cannot start %u threads",
                    n_threads);
  }
  *out_self = be;
  return LK_OK;
}

static void cpu_destroy(void *self) {
  cpu_backend_t *be = self;
  if (!be) return;
  cpu_pool_destroy(be->pool);
  for (size_t i = 0; i < be->set_cap; i++) {
    lk_buffer_t *b = be->set[i];
    if (!b) continue;
    b->magic = 0;
    if (b->owned) be->host->free_aligned(b->data);
    free(b);
  }
  free(be->set);
  while (be->fences) {
    lk_fence_t *f = be->fences;
    be->fences = f->next;
    f->magic = 0;
    free(f);
  }
  if (be->scratch) be->host->free_aligned(be->scratch);
  pthread_mutex_destroy(&be->lock);
  free(be);
}

static uint32_t cpu_device_count(void) { return 1; }

static void cpu_model_name(char *out, size_t n) {
  snprintf(out, n, "CPU");
  FILE *f = fopen("/proc/cpuinfo", "r");
  if (!f) return;
  char line[512];
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, "model name", 10)) continue;
    const char *colon = strchr(line, ':');
    if (!colon) continue;
    colon++;
    while (*colon == ' ' || *colon == '\t') colon++;
    size_t len = strcspn(colon, "\n");
    if (len) snprintf(out, n, "%.*s", (int)len, colon);
    break;
  }
  fclose(f);
}

/* MemAvailable from /proc/meminfo in bytes; 0 when unknown. */
static uint64_t cpu_mem_available(void) {
  FILE *f = fopen("/proc/meminfo", "r");
  if (!f) return 0;
  char line[256];
  unsigned long long kb = 0;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) break;
  fclose(f);
  return (uint64_t)kb * 1024u;
}

/* Written through a full local struct, then copied up to the caller's
 * struct_size (an output struct of an older caller is never overrun). */
static int32_t cpu_device_info(uint32_t index, lk_device_info_t *out, lk_error_t *err) {
  if (!out) return cpu_fail(err, LK_ERR_INVALID_ARG, "cpu device_info: NULL argument");
  if (index != 0)
    return cpu_fail(err, LK_ERR_NOT_FOUND, "cpu device_info: device %u does not exist (1 device)", index);
  if (out->struct_size < LK_MIN_SIZE_DEVICE_INFO)
    return cpu_fail(err, LK_ERR_ABI, "cpu device_info: lk_device_info_t struct_size %u is smaller than its minimum %zu",
                    out->struct_size, (size_t)LK_MIN_SIZE_DEVICE_INFO);
  lk_device_info_t d;
  memset(&d, 0, sizeof d);
  d.type = LK_DEVICE_CPU;
  cpu_model_name(d.name, sizeof d.name);
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  d.memory_total = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
  d.memory_free = cpu_mem_available();
  if (!d.memory_free) {
    long av = sysconf(_SC_AVPHYS_PAGES);
    d.memory_free = av > 0 && page > 0 ? (uint64_t)av * (uint64_t)page : 0;
  }
  d.compute_units = cpu_online_cores();
  d.unified_memory = 1;
  d.max_alloc = (uint64_t)PTRDIFF_MAX - CPU_ALIGN;
  d.offset_align = 4; /* an f32 element; f16/bf16 views need 2 */
  d.can_wrap = 1;
  snprintf(d.driver, sizeof d.driver, "%s", cpu_isa_name(cpu_isa())); /* the ISA path in use */
  uint32_t size = out->struct_size;
  memcpy((char *)out + sizeof size, (const char *)&d + sizeof size,
         (size < sizeof d ? size : sizeof d) - sizeof size);
  return LK_OK;
}

static int32_t cpu_supports(void *self, const lk_op_t *op) {
  (void)self;
  if (!op) return 0;
  cpu_plan_t plan;
  lk_error_t e = {sizeof e, 0, {0}};
  int32_t rc = cpu_validate(NULL, op, 0, 1, &plan, &e);
  cpu_plan_release(&plan);
  return rc == LK_OK;
}

/* ---- buffers -------------------------------------------------------------------- */

static int32_t cpu_new_buffer(cpu_backend_t *be, void *data, uint64_t nbytes, int owned,
                              uint32_t flags, lk_buffer_t **out, lk_error_t *err) {
  lk_buffer_t *b = calloc(1, sizeof *b);
  if (!b || cpu_set_add(be, b)) {
    free(b);
    return cpu_fail(err, LK_ERR_NOMEM, "cpu: out of memory for a buffer record");
  }
  b->magic = CPU_BUF_MAGIC;
  b->data = data;
  b->nbytes = nbytes;
  b->owned = owned;
  b->flags = flags;
  *out = b;
  return LK_OK;
}

static int32_t cpu_buffer_alloc(void *self, uint64_t nbytes, uint32_t flags, lk_buffer_t **out,
                                lk_error_t *err) {
  cpu_backend_t *be = self;
  if (!be || !out) return cpu_fail(err, LK_ERR_INVALID_ARG, "cpu buffer_alloc: NULL argument");
  *out = NULL;
  if (nbytes == 0) return cpu_fail(err, LK_ERR_INVALID_ARG, "cpu buffer_alloc: size 0");
  if (flags & ~(uint32_t)(LK_BUFFER_DEVICE_LOCAL | LK_BUFFER_HOST_VISIBLE))
    return cpu_fail(err, LK_ERR_INVALID_ARG, "cpu buffer_alloc: unknown flags 0x%x", flags);
  if (nbytes > (uint64_t)PTRDIFF_MAX - CPU_ALIGN)
    return cpu_fail(err, LK_ERR_NOMEM, "cpu buffer_alloc: %llu bytes is more than the address space",
                    (unsigned long long)nbytes);
  void *p = be->host->alloc_aligned((nbytes + CPU_ALIGN - 1) / CPU_ALIGN * CPU_ALIGN, CPU_ALIGN);
  if (!p)
    return cpu_fail(err, LK_ERR_NOMEM, "cpu buffer_alloc: cannot allocate %llu bytes",
                    (unsigned long long)nbytes);
  /* Host memory is both device-local and host-visible for a CPU. */
  int32_t rc = cpu_new_buffer(be, p, nbytes, 1, LK_BUFFER_DEVICE_LOCAL | LK_BUFFER_HOST_VISIBLE, out, err);
  if (rc != LK_OK) be->host->free_aligned(p);
  return rc;
}

static int32_t cpu_buffer_wrap(void *self, void *host, uint64_t nbytes, lk_buffer_t **out,
                               lk_error_t *err) {
  cpu_backend_t *be = self;
  if (!be || !out || !host)
    return cpu_fail(err, LK_ERR_INVALID_ARG, "cpu buffer_wrap: NULL argument");
  *out = NULL;
  if (nbytes == 0) return cpu_fail(err, LK_ERR_INVALID_ARG, "cpu buffer_wrap: size 0");
  if (nbytes > (uint64_t)PTRDIFF_MAX || (uintptr_t)host > UINTPTR_MAX - nbytes)
    return cpu_fail(err, LK_ERR_INVALID_ARG, "cpu buffer_wrap: %llu bytes at %p wrap around memory",
                    (unsigned long long)nbytes, host);
  return cpu_new_buffer(be, host, nbytes, 0, LK_BUFFER_DEVICE_LOCAL | LK_BUFFER_HOST_VISIBLE, out, err);
}

static void cpu_buffer_free(void *self, lk_buffer_t *buf) {
  cpu_backend_t *be = self;
  if (!be || !buf) return;
  if (!cpu_set_remove(be, buf)) {
    if (cpu_refs.host && cpu_refs.host->log)
      cpu_refs.host->log(LK_LOG_WARN, CPU_PLUGIN_ID, "buffer_free: unknown buffer ignored (freed twice?)");
    return;
  }
  buf->magic = 0;
  if (buf->owned) be->host->free_aligned(buf->data);
  free(buf);
}

static int32_t cpu_check_range(cpu_backend_t *be, lk_buffer_t *buf, uint64_t offset, const void *p,
                               uint64_t nbytes, const char *what, lk_error_t *err) {
  if (!be || !buf) return cpu_fail(err, LK_ERR_INVALID_ARG, "cpu %s: NULL argument", what);
  if (!cpu_buffer_known(be, buf))
    return cpu_fail(err, LK_ERR_INVALID_ARG, "cpu %s: buffer %p was not made by this backend or was freed",
                    what, (void *)buf);
  if (nbytes && !p) return cpu_fail(err, LK_ERR_INVALID_ARG, "cpu %s: NULL host pointer", what);
  if (offset > buf->nbytes || nbytes > buf->nbytes - offset)
    return cpu_fail(err, LK_ERR_INVALID_ARG, "cpu %s: bytes [%llu, %llu) are outside the buffer of %llu bytes",
                    what, (unsigned long long)offset, (unsigned long long)offset + nbytes,
                    (unsigned long long)buf->nbytes);
  return LK_OK;
}

static int32_t cpu_buffer_map(void *self, lk_buffer_t *buf, uint64_t offset, uint64_t nbytes, void **out,
                              lk_error_t *err) {
  if (!out) return cpu_fail(err, LK_ERR_INVALID_ARG, "cpu buffer_map: NULL out");
  *out = NULL;
  int32_t rc = cpu_check_range(self, buf, offset, buf, nbytes, "buffer_map", err);
  if (rc == LK_OK) *out = (char *)buf->data + offset; /* submit runs to completion: nothing to wait for */
  return rc;
}

static void cpu_buffer_unmap(void *self, lk_buffer_t *buf) {
  (void)self;
  (void)buf;
}

static int32_t cpu_buffer_upload(void *self, lk_buffer_t *buf, uint64_t offset, const void *src,
                                 uint64_t nbytes, lk_error_t *err) {
  int32_t rc = cpu_check_range(self, buf, offset, src, nbytes, "upload", err);
  if (rc == LK_OK && nbytes) memmove((char *)buf->data + offset, src, nbytes);
  return rc;
}

static int32_t cpu_buffer_download(void *self, lk_buffer_t *buf, uint64_t offset, void *dst,
                                   uint64_t nbytes, lk_error_t *err) {
  int32_t rc = cpu_check_range(self, buf, offset, dst, nbytes, "download", err);
  if (rc == LK_OK && nbytes) memmove(dst, (char *)buf->data + offset, nbytes);
  return rc;
}

/* ---- submission ------------------------------------------------------------------- */

enum { PLAN_STACK = 8 };

static int32_t cpu_run_batch(cpu_backend_t *be, const lk_op_t *ops, uint32_t n_ops, lk_error_t *err);

/* The batch runs to completion here; the fence records how it ended. */
static int32_t cpu_submit(void *self, const lk_op_t *ops, uint32_t n_ops, lk_fence_t **out_fence,
                          lk_error_t *err) {
  cpu_backend_t *be = self;
  if (out_fence) *out_fence = NULL;
  if (!be) return cpu_fail(err, LK_ERR_INVALID_ARG, "cpu submit: NULL backend");
  lk_fence_t *f = NULL;
  if (out_fence) {
    f = calloc(1, sizeof *f);
    if (!f) return cpu_fail(err, LK_ERR_NOMEM, "cpu submit: out of memory for a fence");
    f->magic = CPU_FENCE_MAGIC;
    f->owner = be;
  }
  int32_t rc = cpu_run_batch(be, ops, n_ops, err);
  if (f && rc == LK_OK) {
    f->status = rc;
    f->next = be->fences;
    if (be->fences) be->fences->prev = f;
    be->fences = f;
    *out_fence = f;
  } else {
    free(f);
  }
  return rc;
}

static int32_t cpu_fence_wait(void *self, lk_fence_t *f, uint64_t timeout_ns, lk_error_t *err) {
  (void)timeout_ns;
  if (!self || !f || f->magic != CPU_FENCE_MAGIC || f->owner != self)
    return cpu_fail(err, LK_ERR_INVALID_ARG, "cpu fence_wait: NULL or unknown fence (or another backend's)");
  return f->status;
}

static void cpu_fence_free(void *self, lk_fence_t *f) {
  cpu_backend_t *be = self;
  if (!be || !f || f->magic != CPU_FENCE_MAGIC) return;
  if (f->owner != be) { /* unlinking it here would corrupt both backends' lists */
    if (cpu_refs.host && cpu_refs.host->log)
      cpu_refs.host->log(LK_LOG_WARN, CPU_PLUGIN_ID, "fence_free: another backend's fence ignored");
    return;
  }
  if (f->prev) f->prev->next = f->next;
  else be->fences = f->next;
  if (f->next) f->next->prev = f->prev;
  f->magic = 0;
  free(f);
}

static int32_t cpu_run_batch(cpu_backend_t *be, const lk_op_t *ops, uint32_t n_ops, lk_error_t *err) {
  if (!cpu_refs.host)
    return cpu_fail(err, LK_ERR_STATE, "cpu submit: the plugin %s is no longer initialised", CPU_PLUGIN_ID);
  if (n_ops == 0) return LK_OK;
  if (!ops) return cpu_fail(err, LK_ERR_INVALID_ARG, "cpu submit: NULL ops with n_ops %u", n_ops);
  cpu_plan_t stack[PLAN_STACK], *plans = stack;
  if (n_ops > PLAN_STACK) {
    plans = malloc((size_t)n_ops * sizeof *plans);
    if (!plans) return cpu_fail(err, LK_ERR_NOMEM, "cpu submit: out of memory for %u ops", n_ops);
  }
  int32_t rc = LK_OK;
  size_t scratch = 0;
  uint32_t n_valid = 0;
  for (uint32_t i = 0; i < n_ops && rc == LK_OK; i++) {
    rc = cpu_validate(be, &ops[i], i, n_ops, &plans[i], err);
    if (rc == LK_OK) n_valid++;
    if (rc == LK_OK && plans[i].scratch > scratch) scratch = plans[i].scratch;
  }
  if (rc == LK_OK && scratch > be->scratch_bytes) {
    void *p = be->host->alloc_aligned(scratch, CPU_ALIGN);
    if (!p) {
      rc = cpu_fail(err, LK_ERR_NOMEM, "cpu submit: cannot allocate %zu bytes of scratch", scratch);
    } else {
      if (be->scratch) be->host->free_aligned(be->scratch);
      be->scratch = p;
      be->scratch_bytes = scratch;
    }
  }
  if (rc == LK_OK) {
    for (uint32_t i = 0; i < n_ops && rc == LK_OK; i++) rc = cpu_run(be, &plans[i], err);
  }
  for (uint32_t i = 0; i < n_valid; i++) cpu_plan_release(&plans[i]);
  if (plans != stack) free(plans);
  return rc;
}

static int32_t cpu_synchronize(void *self, lk_error_t *err) {
  if (!self) return cpu_fail(err, LK_ERR_INVALID_ARG, "cpu synchronize: NULL backend");
  return LK_OK; /* submit runs to completion */
}

static const void *cpu_get_extension(void *self, const char *id) {
  (void)self;
  return id && !strcmp(id, LK_BACKEND_EXT_RECORD) ? cpu_record_extension() : NULL;
}

static int32_t cpu_score(void) { return 10; }

/* ---- plugin descriptor, factory, entry ----------------------------------------------- */

static const lk_backend_vt_t cpu_backend_vt = {
    .struct_size = sizeof(lk_backend_vt_t),
    .name = "cpu",
    .description = "CPU backend: f32 GEMM through OpenBLAS on its own thread pool; f16/bf16/quantised weights",
    .score = cpu_score,
    .device_count = cpu_device_count,
    .device_info = cpu_device_info,
    .create = cpu_create,
    .destroy = cpu_destroy,
    .supports = cpu_supports,
    .buffer_alloc = cpu_buffer_alloc,
    .buffer_wrap = cpu_buffer_wrap,
    .buffer_free = cpu_buffer_free,
    .buffer_map = cpu_buffer_map,
    .buffer_unmap = cpu_buffer_unmap,
    .upload = cpu_buffer_upload,
    .download = cpu_buffer_download,
    .submit = cpu_submit,
    .fence_wait = cpu_fence_wait,
    .fence_free = cpu_fence_free,
    .synchronize = cpu_synchronize,
    .get_extension = cpu_get_extension,
};

static uint32_t cpu_factory_count(void) { return 1; }

static const lk_backend_vt_t *cpu_factory_get(uint32_t index) {
  return index == 0 ? &cpu_backend_vt : NULL;
}

static const lk_backend_factory_t cpu_factory = {sizeof(lk_backend_factory_t), cpu_factory_count,
                                                 cpu_factory_get};

static int32_t cpu_init(const lk_host_api_t *host, lk_error_t *err) {
  if (!host) return cpu_fail(err, LK_ERR_INVALID_ARG, "%s init: NULL host table", CPU_PLUGIN_ID);
  if (!LK_HAS_FIELD(host, lk_host_api_t, convert) || !host->alloc_aligned || !host->free_aligned ||
      !host->convert)
    return cpu_fail(err, LK_ERR_ABI,
                    "%s init: the host services table (struct_size %u) lacks alloc_aligned, free_aligned or convert",
                    CPU_PLUGIN_ID, host->struct_size);
  plug_refs_acquire(&cpu_refs, host);
  return LK_OK;
}

static void cpu_fini(void) {
  plug_refs_release(&cpu_refs);
}

static const void *cpu_get_factory(const char *factory_id) {
  if (factory_id && !strcmp(factory_id, LK_FACTORY_BACKEND)) return &cpu_factory;
  return NULL;
}

static const lk_plugin_t cpu_plugin = {
    sizeof(lk_plugin_t),
    LK_PLUGIN_ABI_VERSION,
    CPU_PLUGIN_ID,
    "lorakit CPU backend",
    "2.0.0",
    "The op set of lorakit_ops.h on the CPU (OpenBLAS, own thread pool)",
    cpu_init,
    cpu_fini,
    cpu_get_factory,
};

LK_PLUGIN_EXPORT int32_t lk_plugin_entry(uint32_t *abi_in_out, const lk_host_api_t *host,
                                         const lk_plugin_t **out) {
  (void)host; /* kept at init */
  int32_t rc = lk_plugin_negotiate(abi_in_out);
  if (rc != LK_OK) return rc;
  if (!out) return LK_ERR_INVALID_ARG;
  *out = &cpu_plugin;
  return LK_OK;
}
