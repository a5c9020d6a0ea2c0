/* lorakit_version.h - compile-time versions. lk_version() gives the run-time one.
 *
 * Two separate numbers: the library version (soname major = LK_VERSION_MAJOR)
 * and the plugin ABI version, which moves on its own. Plugin ABI rule: majors
 * must be equal; within a major the lower minor wins. */
#ifndef LORAKIT_VERSION_H
#define LORAKIT_VERSION_H

#include <stdint.h>

#define LK_VERSION_MAJOR 2
#define LK_VERSION_MINOR 1
#define LK_VERSION_PATCH 0
#define LK_VERSION_STRING "2.1.0"
#define LK_VERSION_NUMBER (LK_VERSION_MAJOR * 10000 + LK_VERSION_MINOR * 100 + LK_VERSION_PATCH)

#define LK_PLUGIN_ABI_MAJOR 2
#define LK_PLUGIN_ABI_MINOR 1
/* Packed as (major << 16) | minor. */
#define LK_MAKE_ABI(major, minor) ((((uint32_t)(major)) << 16) | ((uint32_t)(minor)))
#define LK_ABI_MAJOR_OF(v) ((uint32_t)(v) >> 16)
#define LK_ABI_MINOR_OF(v) ((uint32_t)(v) & 0xffffu)
#define LK_PLUGIN_ABI_VERSION LK_MAKE_ABI(LK_PLUGIN_ABI_MAJOR, LK_PLUGIN_ABI_MINOR)
/* The oldest plugin ABI this core still loads. */
#define LK_PLUGIN_ABI_MIN LK_MAKE_ABI(2, 0)

#endif /* LORAKIT_VERSION_H */
