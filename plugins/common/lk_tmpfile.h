/* lk_tmpfile.h - temporary files and folders that do not outlive their writer.
 *
 * Every writer (the safetensors/hf/peft and gguf plugins, the registry's
 * export in the core) writes a hidden temporary next to its target and
 * renames it into place. This header keeps them from being left behind:
 *
 *   - names carry the writer's pid: DIR/.NAME.lktmp.<pid>.XXXXXX;
 *   - while one exists its path is in a fixed-size, lock-free table, and a
 *     handler of SIGINT, SIGTERM and SIGHUP (async-signal-safe: unlink,
 *     unlinkat, rmdir, getdents64) removes them before the signal takes its
 *     course: the handler the process had before is called next, or, when
 *     there was none, the default action is restored and the signal raised
 *     again. A signal the process ignores is left alone (the write goes on);
 *   - SIGKILL cannot be caught: the next write into the same folder sweeps
 *     temporaries whose pid is no longer alive (kill(pid, 0) == ESRCH) or
 *     that are older than LK_TMP_STALE_S.
 *
 * Plugins cannot link liblorakit, so this is header-only (static functions):
 * each module (liblorakit, each plugin .so) that includes it - from ONE of
 * its source files - gets its own table and installs its own handler at its
 * first registration, chained to whatever was installed before (possibly
 * another module's). Plugins are never dlclosed; liblorakit restores the
 * previous handler from a destructor should a host unload it. */
#ifndef LK_TMPFILE_H
#define LK_TMPFILE_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define LK_TMP_SLOTS 64
#define LK_TMP_TAG ".lktmp."
#define LK_TMP_STALE_S (24 * 3600)
#define LK_TMP_UNUSED __attribute__((unused))

/* A registered path: the string is owned by the slot; bit 0 of the pointer
 * value marks a folder (malloc'd strings are aligned). */
static _Atomic(uintptr_t) lk_tmp_slots[LK_TMP_SLOTS];
static const int lk_tmp_signals[3] = {SIGINT, SIGTERM, SIGHUP};
static struct sigaction lk_tmp_old[3];
static _Atomic int lk_tmp_installed[3]; /* 1 when lk_tmp_old[i] holds the previous action */
static pthread_once_t lk_tmp_once = PTHREAD_ONCE_INIT;

/* Remove folder path and the entries directly in it (our temporary folders
 * have no deeper ones; a deeper folder stays and is swept later).
 * Async-signal-safe: no opendir (it allocates). */
static void lk_tmp_remove_dir_raw(const char *path) {
  int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
  if (fd >= 0) {
    char buf[4096] __attribute__((aligned(8)));
    for (;;) {
      long n = syscall(SYS_getdents64, fd, buf, sizeof buf);
      if (n <= 0) break;
      for (long off = 0; off < n;) {
        /* struct linux_dirent64: u64 ino, s64 off, u16 reclen, u8 type, name */
        unsigned short reclen;
        memcpy(&reclen, buf + off + 16, sizeof reclen);
        const char *name = buf + off + 19;
        if (strcmp(name, ".") && strcmp(name, ".."))
          if (unlinkat(fd, name, 0) != 0 && errno == EISDIR) (void)unlinkat(fd, name, AT_REMOVEDIR);
        off += reclen;
      }
    }
    close(fd);
  }
  (void)rmdir(path);
}

/* Claim every registered path and remove it (the strings are not freed: a
 * thread may be in lk_tmp_unregister, and the process is ending). */
static void lk_tmp_remove_all(void) {
  for (int i = 0; i < LK_TMP_SLOTS; i++) {
    uintptr_t v = atomic_exchange(&lk_tmp_slots[i], (uintptr_t)0);
    if (!v) continue;
    const char *p = (const char *)(v & ~(uintptr_t)1);
    if (v & 1) lk_tmp_remove_dir_raw(p);
    else if (unlink(p) != 0 && (errno == EISDIR || errno == EPERM)) lk_tmp_remove_dir_raw(p); /* a file or a folder */
  }
}

static void lk_tmp_on_signal(int sig, siginfo_t *info, void *uctx) {
  int saved = errno;
  lk_tmp_remove_all();
  int k = sig == SIGINT ? 0 : sig == SIGTERM ? 1 : 2;
  const struct sigaction *old = &lk_tmp_old[k];
  if (old->sa_handler == SIG_DFL) {
    /* The default action, as if we had never been here: delivered when
     * this handler returns and the signal is unblocked. */
    signal(sig, SIG_DFL);
    raise(sig);
  } else if (old->sa_handler == SIG_IGN) {
    /* not installed over SIG_IGN; nothing to chain to */
  } else if (old->sa_flags & SA_SIGINFO) {
    old->sa_sigaction(sig, info, uctx);
  } else {
    old->sa_handler(sig);
  }
  errno = saved;
}

static void lk_tmp_install(void) {
  for (int i = 0; i < 3; i++) {
    struct sigaction cur;
    if (sigaction(lk_tmp_signals[i], NULL, &cur) != 0) continue;
    if (cur.sa_handler == SIG_IGN) continue; /* the host ignores it: the write goes on */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = lk_tmp_on_signal;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigfillset(&sa.sa_mask); /* one handler at a time: the table is walked once */
    lk_tmp_old[i] = cur;
    if (sigaction(lk_tmp_signals[i], &sa, &lk_tmp_old[i]) == 0) atomic_store(&lk_tmp_installed[i], 1);
  }
}

/* Should this module be unloaded (a host dlclosing liblorakit), put back the
 * handlers it replaced, when they are still ours. */
__attribute__((destructor)) static void lk_tmp_uninstall(void) {
  for (int i = 0; i < 3; i++) {
    struct sigaction cur;
    if (!atomic_load(&lk_tmp_installed[i]) || sigaction(lk_tmp_signals[i], NULL, &cur) != 0) continue;
    if ((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == lk_tmp_on_signal)
      sigaction(lk_tmp_signals[i], &lk_tmp_old[i], NULL);
  }
}

/* Register path (copied) for removal on a signal; the slot index, or -1
 * when out of memory or every slot is taken (the temporary is then only
 * swept by a later write). */
LK_TMP_UNUSED static int lk_tmp_register(const char *path, int is_dir) {
  pthread_once(&lk_tmp_once, lk_tmp_install);
  char *copy = strdup(path);
  if (!copy) return -1;
  uintptr_t v = (uintptr_t)copy | (uintptr_t)(is_dir ? 1 : 0);
  for (int i = 0; i < LK_TMP_SLOTS; i++) {
    uintptr_t expect = 0;
    if (atomic_compare_exchange_strong(&lk_tmp_slots[i], &expect, v)) return i;
  }
  free(copy);
  return -1;
}

/* Forget slot (after the rename into place, or after removing the
 * temporary); a negative slot is a no-op. */
LK_TMP_UNUSED static void lk_tmp_unregister(int slot) {
  if (slot < 0 || slot >= LK_TMP_SLOTS) return;
  uintptr_t v = atomic_exchange(&lk_tmp_slots[slot], (uintptr_t)0);
  free((void *)(v & ~(uintptr_t)1)); /* 0 when a signal handler claimed it */
}

/* The pid in a temporary's name "." NAME ".lktmp." PID "." XXXXXX, or 0 when
 * name is not one of ours. */
static long lk_tmp_pid_of(const char *name) {
  if (name[0] != '.') return 0;
  const char *tag = NULL;
  for (const char *p = strstr(name, LK_TMP_TAG); p; p = strstr(p + 1, LK_TMP_TAG)) tag = p;
  if (!tag) return 0;
  const char *d = tag + sizeof LK_TMP_TAG - 1;
  long pid = 0;
  int digits = 0;
  while (*d >= '0' && *d <= '9' && digits < 10) pid = pid * 10 + (*d++ - '0'), digits++;
  if (!digits || *d != '.' || strlen(d + 1) != 6) return 0;
  return pid;
}

/* Remove temporaries left in folder dir by writers that are gone (their pid
 * is not alive) or older than LK_TMP_STALE_S. Best effort: errors are
 * ignored (a folder we cannot read is one we will not write into either). */
LK_TMP_UNUSED static void lk_tmp_sweep(const char *dir) {
  DIR *d = opendir(dir && dir[0] ? dir : ".");
  if (!d) return;
  time_t now = time(NULL);
  struct dirent *e;
  while ((e = readdir(d))) {
    long pid = lk_tmp_pid_of(e->d_name);
    if (pid <= 0) continue;
    struct stat sb;
    if (fstatat(dirfd(d), e->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0) continue;
    int gone = pid != (long)getpid() && kill((pid_t)pid, 0) != 0 && errno == ESRCH;
    int old = now - sb.st_mtime > LK_TMP_STALE_S;
    if (!gone && !old) continue;
    if (S_ISDIR(sb.st_mode)) {
      char p[4096];
      if (snprintf(p, sizeof p, "%s/%s", dir && dir[0] ? dir : ".", e->d_name) < (int)sizeof p)
        lk_tmp_remove_dir_raw(p);
    } else if (S_ISREG(sb.st_mode)) {
      (void)unlinkat(dirfd(d), e->d_name, 0);
    }
  }
  closedir(d);
}

/* Create a temporary file (is_dir 0, *fd open O_RDWR|O_CLOEXEC, mode 0600)
 * or folder (is_dir 1, mode 0700) next to final_path, after sweeping its
 * folder, and register it. *out_path (malloc'd) names it and *out_slot is
 * for lk_tmp_unregister. Returns 0, or an errno value (ENOMEM, or why the
 * creation failed). final_path must name an entry (not end in '/'). */
LK_TMP_UNUSED static int lk_tmp_create(const char *final_path, int is_dir, char **out_path, int *out_fd,
                                       int *out_slot) {
  *out_path = NULL;
  if (out_fd) *out_fd = -1;
  *out_slot = -1;
  size_t plen = strlen(final_path);
  while (plen > 1 && final_path[plen - 1] == '/') plen--; /* "out/" names out */
  const char *slash = NULL;
  for (size_t i = 0; i < plen; i++)
    if (final_path[i] == '/') slash = final_path + i;
  size_t dlen = slash ? (size_t)(slash - final_path) + 1 : 0;
  const char *base = final_path + dlen;
  size_t blen = plen - dlen;
  if (!blen) return EINVAL;
  char *dir = slash ? strndup(final_path, dlen == 1 ? 1 : dlen - 1) : strdup(".");
  size_t cap = plen + 48;
  char *p = malloc(cap);
  if (!dir || !p) {
    free(dir);
    free(p);
    return ENOMEM;
  }
  lk_tmp_sweep(dir);
  free(dir);
  snprintf(p, cap, "%.*s.%.*s" LK_TMP_TAG "%ld.XXXXXX", (int)dlen, final_path, (int)blen, base,
           (long)getpid());
  /* No signal between the creation and the registration. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  pthread_once(&lk_tmp_once, lk_tmp_install);
  int fd = -1, e = 0;
  if (is_dir) {
    if (!mkdtemp(p)) e = errno;
  } else if ((fd = mkostemp(p, O_CLOEXEC)) < 0) {
    e = errno;
  }
  if (!e) *out_slot = lk_tmp_register(p, is_dir);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (e) {
    free(p);
    return e;
  }
  *out_path = p;
  if (out_fd) *out_fd = fd;
  else if (fd >= 0) close(fd);
  return 0;
}

#endif /* LK_TMPFILE_H */
