// header_check.cpp - the public headers compile as C++17 with
// -Wall -Wextra -Werror -pedantic, with C linkage for the API.
#include "lorakit.h"
#include "lorakit_staging.h"

#include <cstdint>

extern "C" int header_check_cpp(void);
extern "C" int header_check_cpp(void) {
  lk_tensor_t t{};
  t.struct_size = sizeof t;
  lk_plugin_entry_fn entry = nullptr;
  lk_status (*create)(const lk_context_opts_t *, lk_context_t **) = &lk_context_create;
  static_assert(LK_MAKE_ABI(1, 0) == 0x10000u, "packing");
  return static_cast<int>(t.struct_size) + (entry == nullptr) + (create != nullptr) +
         static_cast<int>(LK_HAS_FIELD(&t, lk_tensor_t, qformat));
}
