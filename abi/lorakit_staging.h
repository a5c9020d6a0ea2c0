/* lorakit_staging.h - API under trial, NOT promised stable.
 *
 * Declarations move from here to lorakit.h (and become frozen) once they
 * have been used for a release. Hosts that include this header accept that
 * its contents may change or disappear in any minor version. Nothing is
 * staged in 1.0.0. */
#ifndef LORAKIT_STAGING_H
#define LORAKIT_STAGING_H

#include "lorakit.h"

#endif /* LORAKIT_STAGING_H */
