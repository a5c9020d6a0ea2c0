/* peft_rx.c - bounds on PEFT's patterns before glibc's regcomp sees them.
 * A rank_pattern key such as "(((a{1,255}){1,255}){1,255})" makes regcomp
 * expand every bounded repeat into copies of its operand: 255^3 nodes, many
 * gigabytes, from a 200-byte adapter_config.json. PEFT's keys are module
 * names or short regexes, so the limits below are far above any real config
 * and far below what hurts: at most 256 bytes, groups at most 4 deep, each
 * {m,n} bound at most 64, the product of nested bounds at most 4096, and
 * what repeats add to the patterns' expanded size (every atom times the
 * repeats around it) counted against one budget for the whole config: a
 * pattern at the limits compiles and matches in well under a second, and a
 * config holds at most two of them (measured: 0.2 s, 11 MB for
 * "((q{1,64}){1,64})"; about 1 s for "((.{1,64}){1,64})x"). Back-references (\1) are refused:
 * they make matching exponential. */
#include "st.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

enum { RX_MAX_LEN = 256, RX_MAX_DEPTH = 4, RX_MAX_BOUND = 64, RX_MAX_PRODUCT = 4096, RX_MAX_COST = 8192 };

/* A bound "{m}", "{m,}" or "{m,n}" at *p: its largest count (m for "{m,}",
 * which glibc expands as m copies and a star) in *bound; the text after it
 * in *end. 0 when *p is not a well-formed bound (regcomp then decides). */
static int rx_bound(const char *p, long *bound, const char **end) {
  if (*p != '{' || !isdigit((unsigned char)p[1])) return 0;
  char *e;
  long m = strtol(p + 1, &e, 10), n = m;
  if (*e == ',') {
    if (isdigit((unsigned char)e[1])) n = strtol(e + 1, &e, 10);
    else e++;
  }
  if (*e != '}') return 0;
  *bound = n > m ? n : m;
  *end = e + 1;
  return 1;
}

/* The end of a bracket expression starting at p ('['): a ']' first (or after
 * '^') is literal, and "[:class:]"-style parts hold no end. */
static const char *rx_bracket_end(const char *p) {
  p++;
  if (*p == '^') p++;
  if (*p == ']') p++;
  while (*p && *p != ']') {
    if (*p == '[' && (p[1] == ':' || p[1] == '.' || p[1] == '=')) {
      const char *close = strstr(p + 2, (char[]){p[1], ']', 0});
      p = close ? close + 2 : p + 1;
    } else {
      p++;
    }
  }
  return p;
}

int32_t st_peft_rx_check(const char *pattern, const char *file, const char *key, long *budget, lk_error_t *err) {
  size_t len = strlen(pattern);
#define RX_FAIL(...) st_fail(err, LK_ERR_FORMAT, "%s: %s key '%.40s%s' " __VA_ARGS__)
#define RX_KEY file, key, pattern, len > 40 ? "..." : ""
  if (len > RX_MAX_LEN) return RX_FAIL("is %zu bytes long (patterns are limited to %d)", RX_KEY, len, RX_MAX_LEN);
  /* cost[d]: expanded size so far of the group open at depth d; prod[d]:
   * the largest product of nested bounds inside it. */
  long cost[RX_MAX_DEPTH + 2] = {0}, prod[RX_MAX_DEPTH + 2] = {0};
  int depth = 0;
  long atoms = 0; /* what the pattern costs unexpanded */
  for (const char *p = pattern; *p;) {
    long c = 1, pr = 1; /* the atom just read: its cost and inner product */
    if (*p == '(') {
      if (++depth > RX_MAX_DEPTH)
        return RX_FAIL("nests groups more than %d deep", RX_KEY, RX_MAX_DEPTH);
      cost[depth] = 0;
      prod[depth] = 1;
      p++;
      continue;
    }
    if (*p == ')') {
      if (depth == 0) return LK_OK; /* unbalanced: regcomp refuses it, the key matches as a plain name */
      c = cost[depth] ? cost[depth] : 1;
      pr = prod[depth];
      depth--;
      p++;
    } else if (atoms++, *p == '\\') {
      if (isdigit((unsigned char)p[1]) && p[1] != '0')
        return RX_FAIL("holds a back-reference (\\%c): not supported", RX_KEY, p[1]);
      p += p[1] ? 2 : 1;
    } else if (*p == '[') {
      p = rx_bracket_end(p);
      if (*p) p++;
    } else {
      p++;
    }
    /* every repeat after the atom multiplies it ("a{8}{8}" is "a{64}") */
    for (;;) {
      long b;
      const char *e;
      if (*p == '*' || *p == '+' || *p == '?') {
        p++;
      } else if (rx_bound(p, &b, &e)) {
        if (b > RX_MAX_BOUND) return RX_FAIL("repeats %ld times (each {m,n} is limited to %d)", RX_KEY, b, RX_MAX_BOUND);
        pr *= b ? b : 1;
        c *= b ? b : 1;
        if (pr > RX_MAX_PRODUCT)
          return RX_FAIL("nests repeats whose bounds multiply past %d", RX_KEY, RX_MAX_PRODUCT);
        p = e;
      } else {
        break;
      }
    }
    cost[depth] += c;
    if (pr > prod[depth]) prod[depth] = pr;
    if (cost[depth] > RX_MAX_COST)
      return RX_FAIL("expands to more than %d pattern nodes", RX_KEY, RX_MAX_COST);
  }
  if (depth) return LK_OK; /* unbalanced: as above */
  /* only what repeats add counts: thousands of plain module names cost nothing here */
  if ((*budget -= cost[0] - atoms) < 0)
    return RX_FAIL("exceeds what the repeats of one config's patterns may expand to (%ld nodes)", RX_KEY,
                   ST_PEFT_RX_BUDGET);
  return LK_OK;
#undef RX_KEY
#undef RX_FAIL
}
