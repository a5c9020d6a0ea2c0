/* train_signal.h - Ctrl-C / SIGTERM during training: the first signal sets
 * a flag the training loop polls (it then writes a checkpoint and exits);
 * SIGINT's handler is installed with SA_RESETHAND, so a second Ctrl-C gets
 * the default action and ends the process at once. Internal (prefix tsig_).
 * Not thread-safe: install/restore from the main thread. */
#ifndef LK_TRAIN_SIGNAL_H
#define LK_TRAIN_SIGNAL_H

/* Installs the handlers for SIGINT and SIGTERM (saving the old actions) and
 * clears the flag. Returns 0, or -1 (errno set). Installing twice without a
 * restore in between is refused. */
int tsig_install(void);
/* Puts the saved actions back (a no-op if not installed). */
void tsig_restore(void);
/* The signal number that arrived since tsig_install, or 0. */
int tsig_pending(void);
void tsig_clear(void);

#endif
