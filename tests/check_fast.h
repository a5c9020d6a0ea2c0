/* check_fast.h - included first in every Check suite (tests.mk passes
 * -include): a passing ck_assert records nothing.
 *
 * Check's ck_assert_msg calls _mark_point on success, a write to its report
 * file each time, so that a crash can name the last assertion passed. Suites
 * that compare arrays element by element made millions of those writes
 * (minutes under ASan). A failure reports as before: file, line, the
 * expression and the message; a crash is located by ASan's stack trace. */
#ifndef LK_CHECK_FAST_H
#define LK_CHECK_FAST_H

#include <check.h>

#undef ck_assert_msg
#define ck_assert_msg(expr, ...) \
  ((expr) ? (void)0 : _ck_assert_failed(__FILE__, __LINE__, "Assertion '" #expr "' failed", ##__VA_ARGS__))

#endif /* LK_CHECK_FAST_H */
