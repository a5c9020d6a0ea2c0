/* train_signal.c - the training loop's SIGINT/SIGTERM flag (see train_signal.h). */
#include "train_signal.h"

#include <errno.h>
#include <signal.h>
#include <string.h>

static volatile sig_atomic_t tsig_flag;
static int tsig_installed;
static struct sigaction tsig_old_int, tsig_old_term;

static void tsig_handler(int sig) { tsig_flag = sig; }

int tsig_install(void) {
  if (tsig_installed) {
    errno = EBUSY;
    return -1;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = tsig_handler;
  sigemptyset(&sa.sa_mask);
  tsig_flag = 0;
  sa.sa_flags = SA_RESETHAND; /* the second Ctrl-C: default action */
  if (sigaction(SIGINT, &sa, &tsig_old_int)) return -1;
  sa.sa_flags = 0;
  if (sigaction(SIGTERM, &sa, &tsig_old_term)) {
    sigaction(SIGINT, &tsig_old_int, NULL);
    return -1;
  }
  tsig_installed = 1;
  return 0;
}

void tsig_restore(void) {
  if (!tsig_installed) return;
  sigaction(SIGINT, &tsig_old_int, NULL);
  sigaction(SIGTERM, &tsig_old_term, NULL);
  tsig_installed = 0;
}

int tsig_pending(void) { return (int)tsig_flag; }
void tsig_clear(void) { tsig_flag = 0; }
