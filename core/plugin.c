/* plugin.c - plugin discovery, loading and version negotiation
 * (DESIGN.md section 3). A plugin that is ours but broken is refused with a
 * reason naming the file; every other plugin keeps working. Plugins are never
 * dlclosed: objects they made may outlive any bookkeeping here. */
#include "internal.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PLUGIN_PATTERN "lorakit-*.so"

/* ---- host services ---------------------------------------------------------- */

/* The process-wide logger: lk_set_logger's, or the default that prints to
 * stderr up to LORAKIT_LOG=0..3. Swapped under a lock; a line already being
 * logged may still reach the previous logger (as lorakit.h says). */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static lk_log_fn log_fn;
static void *log_user;
static int32_t log_max = -1; /* -1: the default logger's LORAKIT_LOG */

LK_API void lk_set_logger(lk_log_fn fn, void *user, int32_t max_level) {
  pthread_mutex_lock(&log_lock);
  log_fn = fn;
  log_user = user;
  log_max = fn ? max_level : -1;
  pthread_mutex_unlock(&log_lock);
}

void lk__log(int32_t level, const char *source, const char *message) {
  pthread_mutex_lock(&log_lock);
  lk_log_fn fn = log_fn;
  void *user = log_user;
  int32_t max = log_max;
  pthread_mutex_unlock(&log_lock);
  if (!source) source = "?";
  if (!message) message = "";
  if (fn) {
    if (level <= max) fn(user, level, source, message);
    return;
  }
  const char *env = secure_getenv("LORAKIT_LOG"); /* LORAKIT_LOG=0..3 prints up to that level */
  if (!env || level > atoi(env)) return;
  static const char *const names[] = {"error", "warn", "info", "debug"};
  fprintf(stderr, "lorakit[%s] %s: %s\n", source, level >= 0 && level <= 3 ? names[level] : "log", message);
}

static void host_log(int32_t level, const char *plugin_id, const char *message) {
  lk__log(level, plugin_id, message);
}

static void *host_alloc_aligned(uint64_t nbytes, uint64_t align) {
  void *p = NULL;
  if (align < sizeof(void *) || (align & (align - 1))) return NULL;
  if (posix_memalign(&p, (size_t)align, nbytes ? (size_t)nbytes : 1)) return NULL;
  return p;
}

static void host_free_aligned(void *p) { free(p); }

static void *host_get_proc(const char *name) {
  (void)name; /* no later services yet: every name is absent */
  return NULL;
}

static const lk_quantiser_vt_t *host_find_quantiser(const char *name) { return lk__quant_find(name); }
static const lk_quantiser_vt_t *host_find_quantiser_gguf(int32_t type) { return lk__quant_find_gguf(type); }

static const lk_host_api_t host_api = {
    .struct_size = sizeof(lk_host_api_t),
    .abi_version = LK_PLUGIN_ABI_VERSION,
    .log = host_log,
    .alloc_aligned = host_alloc_aligned,
    .free_aligned = host_free_aligned,
    .strerror = lk_strerror,
    .convert = lk_convert,
    .get_proc = host_get_proc,
    .find_quantiser = host_find_quantiser,
    .find_quantiser_gguf = host_find_quantiser_gguf,
};

const lk_host_api_t *lk__host_api(void) { return &host_api; }

/* ---- plugin lifecycle --------------------------------------------------------- */

/* Every call into a plugin while it is loaded (lk_plugin_entry, init, the
 * factories) and every fini, of every context, runs under this one lock: a
 * plugin's entry and refcounted init/fini need not be thread-safe
 * themselves (lorakit_plugin.h), and contexts are created and freed on any
 * thread. Loading is rare, so holding it for a whole load costs nothing. */
static pthread_mutex_t lifecycle_lock = PTHREAD_MUTEX_INITIALIZER;

static void plugin_fini(const lk_plugin_t *desc) {
  pthread_mutex_lock(&lifecycle_lock);
  desc->fini();
  pthread_mutex_unlock(&lifecycle_lock);
}

/* ---- records ------------------------------------------------------------------ */

static lk__plugin *new_record(lk_context_t *ctx, const char *path) {
  if (ctx->n_plugins == ctx->cap_plugins) {
    uint32_t cap = ctx->cap_plugins ? ctx->cap_plugins * 2 : 8;
    lk__plugin *p = realloc(ctx->plugins, cap * sizeof *p);
    if (!p) return NULL;
    ctx->plugins = p;
    ctx->cap_plugins = cap;
  }
  lk__plugin *rec = &ctx->plugins[ctx->n_plugins];
  memset(rec, 0, sizeof *rec);
  rec->path = lk__strdup(path);
  rec->reason = lk__strdup("");
  if (!rec->path || !rec->reason) {
    free(rec->path);
    free(rec->reason);
    return NULL;
  }
  ctx->n_plugins++;
  return rec;
}

/* Mark rec refused; the reason goes to the record and the context error. */
static lk_status refuse(lk_context_t *ctx, lk__plugin *rec, lk_status code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static lk_status refuse(lk_context_t *ctx, lk__plugin *rec, lk_status code, const char *fmt, ...) {
  char msg[LK_ERROR_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  rec->status = LK_PLUGIN_REFUSED;
  free(rec->reason);
  rec->reason = lk__strdup(msg);
  return lk__fail(ctx, code, "plugin %s refused: %s", rec->path, msg);
}

static int push_component(lk_context_t *ctx, const lk__component *c) {
  if (ctx->n_comps == ctx->cap_comps) {
    uint32_t cap = ctx->cap_comps ? ctx->cap_comps * 2 : 16;
    lk__component *p = realloc(ctx->comps, cap * sizeof *p);
    if (!p) return -1;
    ctx->comps = p;
    ctx->cap_comps = cap;
  }
  ctx->comps[ctx->n_comps++] = *c;
  return 0;
}

/* A plugin-filled struct: at least its frozen minimum size (DESIGN.md
 * section 3 rule 2). A longer one is from a newer plugin: its unknown tail
 * is ignored. The reason, when refused, is written to why. */
static const char *check_struct(const void *p, size_t min_size, char *why, size_t n) {
  uint32_t size = *(const uint32_t *)p;
  if (size < min_size) {
    snprintf(why, n, "struct_size %u is smaller than the type's minimum %zu", size, min_size);
    return why;
  }
  return NULL;
}

/* The fields of a component vtable every kind shares: struct_size, reserved,
 * name, description. Required function pointers are checked per kind. */
typedef struct comp_head {
  uint32_t struct_size;
  uint32_t reserved0;
  const char *name;
  const char *description;
} comp_head;

static const char *kind_name(int32_t kind) {
  return kind == LK_KIND_BACKEND ? "backend" : kind == LK_KIND_QUANTISER ? "quantiser" : "loader";
}

static const char *check_vtable(int32_t kind, const void *vt, char *why, size_t n) {
  if (!vt) return "factory returned a NULL component";
  switch (kind) {
  case LK_KIND_BACKEND: {
    const lk_backend_vt_t *b = vt;
    if (check_struct(b, LK_MIN_SIZE_BACKEND_VT, why, n)) return why;
    if (!b->create || !b->destroy || !b->device_count || !b->device_info || !b->supports ||
        !b->buffer_alloc || !b->buffer_free || !b->buffer_map || !b->buffer_unmap || !b->upload ||
        !b->download || !b->submit || !b->fence_wait || !b->fence_free || !b->synchronize)
      return "backend vtable is missing a required function";
    break;
  }
  case LK_KIND_QUANTISER: {
    const lk_quantiser_vt_t *q = vt;
    if (check_struct(q, LK_MIN_SIZE_QUANTISER_VT, why, n)) return why;
    if (!q->create || !q->destroy || !q->part_count || !q->part_info || !q->row_bytes ||
        !q->dequantize || !q->block_elems || !q->block_bytes)
      return "quantiser vtable is missing a required function or block size";
    break;
  }
  default: {
    const lk_loader_vt_t *l = vt;
    if (check_struct(l, LK_MIN_SIZE_LOADER_VT, why, n)) return why;
    if (!l->probe || !l->open || !l->close || !l->tensor_count || !l->tensor_info ||
        !l->tensor_read || !l->metadata_json)
      return "loader vtable is missing a required function";
    break;
  }
  }
  const comp_head *h = vt;
  if (!h->name || !h->name[0]) return "component has no name";
  return NULL;
}

/* Collect the plugin's components; on any problem nothing is registered. */
static lk_status register_components(lk_context_t *ctx, lk__plugin *rec, uint32_t index) {
  static const struct { const char *id; int32_t kind; } kinds[] = {
      {LK_FACTORY_BACKEND, LK_KIND_BACKEND},
      {LK_FACTORY_QUANTISER, LK_KIND_QUANTISER},
      {LK_FACTORY_LOADER, LK_KIND_LOADER},
  };
  uint32_t first = ctx->n_comps;
  for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
    /* The three factory structs share one layout: size, count, get. */
    const lk_backend_factory_t *f = rec->desc->get_factory(kinds[k].id);
    if (!f) continue;
    char whybuf[160];
    const char *why = check_struct(f, LK_MIN_SIZE_FACTORY, whybuf, sizeof whybuf);
    if (!why && (!f->count || !f->get)) why = "factory is missing count or get";
    if (why) {
      ctx->n_comps = first;
      return refuse(ctx, rec, LK_ERR_ABI, "%s factory: %s", kinds[k].id, why);
    }
    uint32_t n = f->count();
    for (uint32_t i = 0; i < n; i++) {
      const void *vt = f->get(i);
      why = check_vtable(kinds[k].kind, vt, whybuf, sizeof whybuf);
      if (why) {
        ctx->n_comps = first;
        return refuse(ctx, rec, LK_ERR_ABI, "%s component %u: %s", kind_name(kinds[k].kind), i, why);
      }
      const comp_head *h = vt;
      /* Backends of one name from several plugins are variants, chosen
       * among by score() (backend.c); within one plugin a name is unique.
       * Loaders and quantisers are found by name alone: unique per context. */
      for (uint32_t c = 0; c < ctx->n_comps; c++) {
        if (ctx->comps[c].kind == kinds[k].kind && !strcmp(ctx->comps[c].name, h->name) &&
            (kinds[k].kind != LK_KIND_BACKEND || ctx->comps[c].plugin_index == index)) {
          const char *other = ctx->comps[c].plugin_index == index
                                  ? "this same plugin"
                                  : ctx->plugins[ctx->comps[c].plugin_index].path;
          ctx->n_comps = first;
          return refuse(ctx, rec, LK_ERR_EXISTS, "%s: duplicate %s component name '%s' (already provided by %s)",
                        rec->path, kind_name(kinds[k].kind), h->name, other);
        }
      }
      lk__component c = {kinds[k].kind, index, h->name, h->description ? h->description : "", vt};
      if (kinds[k].kind == LK_KIND_QUANTISER) lk__quant_register(vt);
      if (push_component(ctx, &c)) {
        ctx->n_comps = first;
        return refuse(ctx, rec, LK_ERR_NOMEM, "out of memory registering components");
      }
    }
  }
  rec->n_components = ctx->n_comps - first;
  return LK_OK;
}

/* Move the components of plugin `index` out of ctx's list into *out. */
static int take_components(lk_context_t *ctx, uint32_t index, lk__component **out, uint32_t *n_out) {
  lk__component *keep = malloc((ctx->n_comps ? ctx->n_comps : 1) * sizeof *keep);
  if (!keep) return -1;
  uint32_t n = 0, k = 0;
  for (uint32_t i = 0; i < ctx->n_comps; i++) {
    if (ctx->comps[i].plugin_index == index)
      keep[n++] = ctx->comps[i];
    else
      ctx->comps[k++] = ctx->comps[i];
  }
  ctx->n_comps = k;
  *out = keep;
  *n_out = n;
  return 0;
}

/* ---- trust: who may have written the file ---------------------------------------- */

/* NULL when st (the file or its folder, `what`) may be trusted: owned by
 * root or this process's effective user, and writable by no group or other
 * user (lorakit.h, docs/PLUGINS.md). Otherwise the reason, in why. */
static const char *untrusted(const struct stat *st, const char *what, const char *path, char *why, size_t n) {
  if (st->st_uid != 0 && st->st_uid != geteuid()) {
    snprintf(why, n, "%s %s is owned by uid %u, neither root nor this user (uid %u)", what, path,
             (unsigned)st->st_uid, (unsigned)geteuid());
    return why;
  }
  if (st->st_mode & (S_IWGRP | S_IWOTH)) {
    snprintf(why, n, "%s %s has mode %04o: writable by %s", what, path, (unsigned)(st->st_mode & 07777),
             (st->st_mode & S_IWOTH) ? "others" : "its group");
    return why;
  }
  return NULL;
}

/* Files handed to dlopen as /proc/self/fd/N, process-wide. glibc keeps that
 * name for the object and matches later dlopen calls by name first, so an
 * fd used once is never closed (a reused number would name another file);
 * a file opened again (same device and inode) reuses its first fd, which
 * bounds the table by the number of distinct plugin files. Under
 * lifecycle_lock. */
typedef struct fd_entry {
  dev_t dev;
  ino_t ino;
  int fd;
} fd_entry;
static fd_entry *fd_table;
static size_t n_fd_table, cap_fd_table;

/* Open, check and dlopen rec's file. The folder is opened first and the
 * file opened relative to it without following a link, and both are
 * checked through fstat on those descriptors; dlopen then maps the very
 * file that was checked (/proc/self/fd/N), so a rename between check and
 * load cannot swap it. NULL with *st set (and rec refused) on failure. */
static void *trust_dlopen(lk_context_t *ctx, lk__plugin *rec, lk_status *st) {
  const char *real = rec->path;
  char dir[PATH_MAX], why[PATH_MAX + 128];
  snprintf(dir, sizeof dir, "%s", real);
  char *slash = strrchr(dir, '/');
  const char *base = slash ? slash + 1 : real;
  if (slash == dir)
    dir[1] = '\0';
  else if (slash)
    *slash = '\0';
  else
    snprintf(dir, sizeof dir, ".");
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) {
    *st = refuse(ctx, rec, LK_ERR_PLUGIN, "%s: cannot open its folder: %s", real, strerror(errno));
    return NULL;
  }
  struct stat sb;
  if (fstat(dfd, &sb) == 0 && untrusted(&sb, "folder", dir, why, sizeof why)) {
    close(dfd);
    *st = refuse(ctx, rec, LK_ERR_SECURITY, "%s: %s", real, why);
    return NULL;
  }
  int fd = openat(dfd, base, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  int err = errno;
  close(dfd);
  if (fd < 0) {
    *st = refuse(ctx, rec, LK_ERR_PLUGIN, "%s: cannot open: %s", real, strerror(err));
    return NULL;
  }
  const char *bad = NULL;
  if (fstat(fd, &sb) != 0)
    bad = "cannot be examined (fstat failed)";
  else if (!S_ISREG(sb.st_mode))
    bad = "is not a regular file";
  if (bad || untrusted(&sb, "file", real, why, sizeof why)) {
    close(fd);
    *st = bad ? refuse(ctx, rec, LK_ERR_PLUGIN, "%s %s", real, bad) : refuse(ctx, rec, LK_ERR_SECURITY, "%s", why);
    return NULL;
  }
  for (size_t i = 0; i < n_fd_table; i++)
    if (fd_table[i].dev == sb.st_dev && fd_table[i].ino == sb.st_ino) {
      close(fd);
      fd = fd_table[i].fd;
      break;
    }
  char name[64];
  snprintf(name, sizeof name, "/proc/self/fd/%d", fd);
  int via_proc = access(name, F_OK) == 0; /* no /proc: the checked path itself */
  void *h = dlopen(via_proc ? name : real, RTLD_NOW | RTLD_LOCAL);
  int cached = 0;
  for (size_t i = 0; i < n_fd_table; i++) cached |= fd_table[i].fd == fd;
  if (!h) {
    const char *e = dlerror();
    if (!cached) close(fd);
    *st = refuse(ctx, rec, LK_ERR_PLUGIN, "%s: dlopen failed: %s", real, e ? e : "?");
    return NULL;
  }
  if (!cached) {
    if (n_fd_table == cap_fd_table) {
      size_t cap = cap_fd_table ? cap_fd_table * 2 : 16;
      fd_entry *t = realloc(fd_table, cap * sizeof *t);
      if (!t) return h; /* the fd stays open, unrecorded: never reused */
      fd_table = t;
      cap_fd_table = cap;
    }
    fd_table[n_fd_table++] = (fd_entry){sb.st_dev, sb.st_ino, fd};
  }
  return h;
}

/* Load the file of record `index` (new, or discovered and pending). */
static lk_status load_record(lk_context_t *ctx, uint32_t index, int is_explicit) {
  lk__plugin *rec = &ctx->plugins[index];
  if (rec->pending) {
    rec->pending = 0;
    ctx->n_pending--;
  }
  const char *real = rec->path;
  lk_status tst = LK_OK;
  void *h = trust_dlopen(ctx, rec, &tst);
  if (!h) return tst;
  lk_plugin_entry_fn entry = (lk_plugin_entry_fn)(uintptr_t)dlsym(h, LK_PLUGIN_ENTRY_SYMBOL);
  if (!entry)
    return refuse(ctx, rec, LK_ERR_PLUGIN, "%s: no %s symbol (not a lorakit plugin, or it was not exported)",
                  real, LK_PLUGIN_ENTRY_SYMBOL);

  uint32_t abi = LK_PLUGIN_ABI_VERSION;
  const lk_plugin_t *desc = NULL;
  int32_t rc = entry(&abi, &host_api, &desc);
  if (LK_ABI_MAJOR_OF(abi) != LK_PLUGIN_ABI_MAJOR)
    return refuse(ctx, rec, LK_ERR_ABI,
                  "%s speaks plugin ABI %u.%u, this lorakit speaks %u.%u (majors must be equal)", real,
                  LK_ABI_MAJOR_OF(abi), LK_ABI_MINOR_OF(abi), LK_PLUGIN_ABI_MAJOR, LK_PLUGIN_ABI_MINOR);
  if (rc != LK_OK)
    return refuse(ctx, rec, rc == LK_ERR_ABI ? LK_ERR_ABI : LK_ERR_PLUGIN,
                  "%s: lk_plugin_entry failed: %s (%d)", real, lk_strerror(rc), rc);
  if (abi < LK_PLUGIN_ABI_MIN)
    return refuse(ctx, rec, LK_ERR_ABI, "%s speaks plugin ABI %u.%u, older than the minimum %u.%u", real,
                  LK_ABI_MAJOR_OF(abi), LK_ABI_MINOR_OF(abi), LK_ABI_MAJOR_OF(LK_PLUGIN_ABI_MIN),
                  LK_ABI_MINOR_OF(LK_PLUGIN_ABI_MIN));
  if (abi > LK_PLUGIN_ABI_VERSION) abi = LK_PLUGIN_ABI_VERSION; /* the lower minor wins */
  rec->abi_version = abi;
  if (!desc) return refuse(ctx, rec, LK_ERR_PLUGIN, "%s: lk_plugin_entry gave no descriptor", real);
  char whybuf[160];
  const char *why = check_struct(desc, LK_MIN_SIZE_PLUGIN, whybuf, sizeof whybuf);
  if (why) return refuse(ctx, rec, LK_ERR_ABI, "%s: lk_plugin_t %s", real, why);
  if (!desc->id || !desc->id[0] || !desc->init || !desc->fini || !desc->get_factory)
    return refuse(ctx, rec, LK_ERR_PLUGIN, "%s: lk_plugin_t is missing its id, init, fini or get_factory", real);
  rec->desc = desc;
  /* One id per context. An explicit load wins over a discovered one of the
   * same id; any other second load of an id is refused. */
  uint32_t aside = UINT32_MAX;
  for (uint32_t i = 0; i < ctx->n_plugins; i++) {
    const lk__plugin *o = &ctx->plugins[i];
    if (i == index || o->status != LK_PLUGIN_LOADED || strcmp(o->desc->id, desc->id)) continue;
    /* Discovered files load lazily, by kind (lk__plugins_need), so one
     * found earlier may load after one found later: the earlier still
     * wins, as it would have had everything loaded at once. */
    if (!o->is_explicit && (is_explicit || index < i)) {
      aside = i;
      break;
    }
    return refuse(ctx, rec, LK_ERR_EXISTS,
                  "%s: duplicate plugin id '%s' (version %s already loaded%s from %s); not loaded", real,
                  desc->id, o->desc->version ? o->desc->version : "?", o->is_explicit ? " explicitly" : "",
                  o->path);
  }
  /* The set-aside plugin's components leave the list first (its loader and
   * quantiser names would clash); they come back if this one fails. */
  lk__component *saved = NULL;
  uint32_t n_saved = 0;
  if (aside != UINT32_MAX && take_components(ctx, aside, &saved, &n_saved))
    return refuse(ctx, rec, LK_ERR_NOMEM, "out of memory replacing plugin id '%s'", desc->id);

  lk_error_t err = {sizeof err, 0, {0}};
  rc = desc->init(&host_api, &err); /* under lifecycle_lock (load_one) */
  lk_status st;
  if (rc != LK_OK) {
    st = refuse(ctx, rec, LK_ERR_PLUGIN, "%s: init failed: %s", real,
                err.message[0] ? err.message : lk_strerror(rc));
  } else {
    rec->initialised = 1;
    st = register_components(ctx, rec, index);
    if (st != LK_OK) {
      desc->fini();
      rec->initialised = 0;
    }
  }
  if (aside != UINT32_MAX) {
    lk__plugin *o = &ctx->plugins[aside];
    if (st != LK_OK) { /* the discovered one stays */
      for (uint32_t i = 0; i < n_saved; i++) (void)push_component(ctx, &saved[i]); /* room was there */
    } else {
      /* Listed as refused; its fini still waits for the context's end, as
       * objects it made may live until then. */
      char msg[PATH_MAX + 256];
      if (is_explicit)
        snprintf(msg, sizeof msg, "set aside: plugin id '%s' was loaded explicitly from %s", desc->id, real);
      else
        snprintf(msg, sizeof msg, "set aside: plugin id '%s' was found earlier in discovery, at %s", desc->id,
                 real);
      char *r = lk__strdup(msg);
      if (r) {
        free(o->reason);
        o->reason = r;
      }
      o->status = LK_PLUGIN_REFUSED;
      o->n_components = 0;
    }
    free(saved);
  }
  if (st != LK_OK) return st;
  rec->status = LK_PLUGIN_LOADED;
  rec->is_explicit = is_explicit;
  lk__ok(ctx);
  return LK_OK;
}

static lk_status load_locked(lk_context_t *ctx, const char *path, int is_explicit) {
  char real[PATH_MAX];
  if (!realpath(path, real)) snprintf(real, sizeof real, "%s", path);
  for (uint32_t i = 0; i < ctx->n_plugins; i++) /* the same file loads once */
    if (!strcmp(ctx->plugins[i].path, real)) {
      if (ctx->plugins[i].pending) return load_record(ctx, i, is_explicit);
      if (ctx->plugins[i].status != LK_PLUGIN_LOADED) return LK_ERR_PLUGIN;
      ctx->plugins[i].is_explicit |= is_explicit;
      return LK_OK;
    }
  if (!new_record(ctx, real)) return lk__fail(ctx, LK_ERR_NOMEM, "out of memory loading plugin %s", real);
  return load_record(ctx, ctx->n_plugins - 1, is_explicit);
}

static lk_status load_one(lk_context_t *ctx, const char *path, int is_explicit) {
  pthread_mutex_lock(&lifecycle_lock);
  lk_status st = load_locked(ctx, path, is_explicit);
  pthread_mutex_unlock(&lifecycle_lock);
  return st;
}

LK_API lk_status lk_plugin_load(lk_context_t *ctx, const char *path) {
  if (!ctx || !path) return lk__fail(ctx, LK_ERR_INVALID_ARG, "lk_plugin_load: NULL argument");
  return load_one(ctx, path, 1);
}

static int plugin_file_filter(const struct dirent *d) {
  return fnmatch(PLUGIN_PATTERN, d->d_name, 0) == 0;
}

LK_API lk_status lk_plugin_load_dir(lk_context_t *ctx, const char *dir) {
  if (!ctx || !dir) return lk__fail(ctx, LK_ERR_INVALID_ARG, "lk_plugin_load_dir: NULL argument");
  struct dirent **names = NULL;
  int n = scandir(dir, &names, plugin_file_filter, alphasort);
  if (n < 0) return lk__fail(ctx, LK_ERR_NOT_FOUND, "plugin folder %s cannot be read", dir);
  lk_status worst = LK_OK;
  for (int i = 0; i < n; i++) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
    lk_status st = load_one(ctx, path, 0);
    if (st != LK_OK) worst = st;
    free(names[i]);
  }
  free(names);
  return worst;
}

/* The kinds a file is loaded for, from its name (docs/PLUGINS.md):
 * lorakit-load-*.so loaders, lorakit-quant-*.so quantisers, any other
 * lorakit-*.so backends. Whatever a file holds is registered once loaded. */
static uint32_t kinds_of(const char *file) {
  if (!fnmatch("lorakit-load-*.so", file, 0)) return LK__NEED_LOADER;
  if (!fnmatch("lorakit-quant-*.so", file, 0)) return LK__NEED_QUANTISER;
  return LK__NEED_BACKEND;
}

/* Note every plugin file of dir, to be loaded when its kind is needed. */
static void discover_dir(lk_context_t *ctx, const char *dir) {
  struct dirent **names = NULL;
  int n = scandir(dir, &names, plugin_file_filter, alphasort);
  for (int i = 0; i < n; i++) {
    char path[PATH_MAX], real[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
    int seen = !realpath(path, real);
    for (uint32_t k = 0; !seen && k < ctx->n_plugins; k++) seen = !strcmp(ctx->plugins[k].path, real);
    lk__plugin *rec = seen ? NULL : new_record(ctx, real);
    if (rec) {
      rec->status = LK_PLUGIN_REFUSED; /* until loaded: never listed while pending */
      rec->pending = 1;
      rec->kinds = kinds_of(names[i]->d_name);
      ctx->n_pending++;
    }
    free(names[i]);
  }
  free(names);
}

/* Folder of the file that holds addr (the library or the executable). */
static int dir_of(const char *file, char *out, size_t n) {
  char real[PATH_MAX];
  if (!realpath(file, real)) return -1;
  char *slash = strrchr(real, '/');
  if (!slash) return -1;
  *slash = '\0';
  snprintf(out, n, "%s", real);
  return 0;
}

/* The shipped folders come first, so that a plugin of the same id found in
 * LORAKIT_PLUGIN_PATH cannot displace a shipped one (it is refused, naming
 * both files); only an explicit lk_plugin_load replaces a plugin. Relative
 * and empty entries of LORAKIT_PLUGIN_PATH would search the working folder
 * of whoever runs the program: they are skipped with a warning. */
void lk__plugins_discover(lk_context_t *ctx) {
  char dir[PATH_MAX], path[PATH_MAX + 32];
  Dl_info info;
  if (dladdr((void *)(uintptr_t)lk_context_create, &info) && info.dli_fname &&
      !dir_of(info.dli_fname, dir, sizeof dir)) {
    snprintf(path, sizeof path, "%s/lorakit/plugins", dir);
    if (!access(path, R_OK)) discover_dir(ctx, path);
  }
  if (!dir_of("/proc/self/exe", dir, sizeof dir)) {
    snprintf(path, sizeof path, "%s/plugins", dir);
    if (!access(path, R_OK)) discover_dir(ctx, path);
  }
  const char *env = secure_getenv("LORAKIT_PLUGIN_PATH");
  for (const char *p = env && *env ? env : NULL; p;) {
    const char *colon = strchr(p, ':');
    size_t len = colon ? (size_t)(colon - p) : strlen(p);
    char msg[PATH_MAX + 128];
    if (len == 0 || p[0] != '/' || len >= sizeof dir) {
      snprintf(msg, sizeof msg, "LORAKIT_PLUGIN_PATH entry '%.*s' ignored: %s", (int)(len < 1024 ? len : 1024), p,
               len == 0 ? "empty entries are never searched" : len >= sizeof dir ? "too long"
                                                              : "relative entries are never searched");
      lk__log(LK_LOG_WARN, "lorakit", msg);
    } else {
      memcpy(dir, p, len);
      dir[len] = '\0';
      discover_dir(ctx, dir);
    }
    p = colon ? colon + 1 : NULL;
  }
  lk__ok(ctx);
}

/* Load the pending files whose kinds meet `kinds`. Refusals are listed per
 * plugin; the context's last error stays what it was. */
static int need_locked(lk_context_t *ctx, uint32_t kinds) {
  int loaded = 0;
  lk_status saved_status = ctx->last_status;
  char saved[sizeof ctx->last_error];
  memcpy(saved, ctx->last_error, sizeof saved);
  for (uint32_t i = 0; i < ctx->n_plugins && ctx->n_pending; i++)
    if (ctx->plugins[i].pending && (ctx->plugins[i].kinds & kinds)) {
      (void)load_record(ctx, i, 0);
      loaded++;
    }
  ctx->last_status = saved_status;
  memcpy(ctx->last_error, saved, sizeof saved);
  return loaded;
}

void lk__plugins_need(const lk_context_t *cctx, uint32_t kinds) {
  /* The context is the caller's, one thread at a time (its info calls are
   * const only to say they change nothing the caller sees). */
  lk_context_t *ctx = (lk_context_t *)(uintptr_t)cctx;
  if (!ctx || !ctx->n_pending) return;
  pthread_mutex_lock(&lifecycle_lock);
  (void)need_locked(ctx, kinds);
  pthread_mutex_unlock(&lifecycle_lock);
}

int lk__plugins_need_rest(lk_context_t *ctx) {
  if (!ctx || !ctx->n_pending) return 0;
  pthread_mutex_lock(&lifecycle_lock);
  int n = need_locked(ctx, LK__NEED_ALL);
  pthread_mutex_unlock(&lifecycle_lock);
  return n > 0;
}

void lk__plugins_release(lk_context_t *ctx) {
  for (uint32_t i = ctx->n_plugins; i-- > 0;) {
    lk__plugin *p = &ctx->plugins[i];
    if (p->initialised && p->desc) plugin_fini(p->desc);
    free(p->path);
    free(p->reason);
  }
  free(ctx->plugins);
  ctx->plugins = NULL;
  ctx->n_plugins = 0;
}

LK_API uint32_t lk_plugin_count(const lk_context_t *ctx) {
  lk__plugins_need(ctx, LK__NEED_ALL);
  return ctx ? ctx->n_plugins : 0;
}

/* Output structs: filled whole in a local, then copied up to the caller's
 * struct_size, which stays as the caller set it (an older caller's smaller
 * struct is never written past its end). */
static void copy_out(void *out, const void *full, size_t full_size) {
  uint32_t n = *(const uint32_t *)out;
  size_t len = n < full_size ? n : full_size;
  memcpy((char *)out + sizeof(uint32_t), (const char *)full + sizeof(uint32_t), len - sizeof(uint32_t));
}

LK_API lk_status lk_plugin_info(const lk_context_t *ctx, uint32_t index, lk_plugin_info_t *out) {
  if (!ctx || !out) return LK_ERR_INVALID_ARG;
  if (out->struct_size < LK_MIN_SIZE_PLUGIN_INFO) return LK_ERR_ABI;
  lk__plugins_need(ctx, LK__NEED_ALL);
  if (index >= ctx->n_plugins) return LK_ERR_NOT_FOUND;
  const lk__plugin *p = &ctx->plugins[index];
  lk_plugin_info_t full;
  memset(&full, 0, sizeof full);
  full.status = p->status;
  full.path = p->path;
  full.id = p->desc ? p->desc->id : NULL;
  full.name = p->desc ? p->desc->name : NULL;
  full.version = p->desc ? p->desc->version : NULL;
  full.description = p->desc ? p->desc->description : NULL;
  full.abi_version = p->abi_version;
  full.n_components = p->n_components;
  full.reason = p->reason;
  copy_out(out, &full, sizeof full);
  return LK_OK;
}

LK_API uint32_t lk_component_count(const lk_context_t *ctx) {
  lk__plugins_need(ctx, LK__NEED_ALL);
  return ctx ? ctx->n_comps : 0;
}

LK_API lk_status lk_component_info(const lk_context_t *ctx, uint32_t index, lk_component_info_t *out) {
  if (!ctx || !out) return LK_ERR_INVALID_ARG;
  if (out->struct_size < LK_MIN_SIZE_COMPONENT_INFO) return LK_ERR_ABI;
  lk__plugins_need(ctx, LK__NEED_ALL);
  if (index >= ctx->n_comps) return LK_ERR_NOT_FOUND;
  const lk__component *c = &ctx->comps[index];
  lk_component_info_t full;
  memset(&full, 0, sizeof full);
  full.kind = c->kind;
  full.name = c->name;
  full.description = c->description;
  full.plugin_index = c->plugin_index;
  copy_out(out, &full, sizeof full);
  return LK_OK;
}
