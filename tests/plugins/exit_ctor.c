/* exit_ctor.c - a backend-named plugin whose constructor ends the process
 * with status 0 the moment it is mapped. Built outside the test plugin
 * folder (discovery tests load that folder whole). It shows that only the
 * plugin kinds a call needs are loaded: opening a model must never map it. */
#include <stdlib.h>

__attribute__((constructor)) static void tp_exit_at_load(void) { exit(0); }

/* Never reached: the constructor ran first. */
__attribute__((visibility("default"))) int lk_plugin_entry(void);
int lk_plugin_entry(void) { return -10; }
