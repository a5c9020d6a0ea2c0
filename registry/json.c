/* json.c - a JSON text writer for the documents the registry returns
 * (lists of thousands of versions, lineage graphs): appends straight into
 * one growing buffer, escaping strings per RFC 8259, with no tree built
 * in between. */
#include "reg.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int grow(reg_out *o, size_t extra) {
  if (o->oom) return 0;
  if (o->n + extra + 1 <= o->cap) return 1;
  size_t cap = o->cap ? o->cap : 4096;
  while (cap < o->n + extra + 1) cap *= 2;
  char *p = realloc(o->p, cap);
  if (!p) {
    o->oom = 1;
    return 0;
  }
  o->p = p;
  o->cap = cap;
  return 1;
}

void reg_out_raw(reg_out *o, const char *s, size_t n) {
  if (!grow(o, n)) return;
  memcpy(o->p + o->n, s, n);
  o->n += n;
  o->p[o->n] = '\0';
}

void reg_out_c(reg_out *o, char c) { reg_out_raw(o, &c, 1); }

void reg_out_str(reg_out *o, const char *s) {
  if (!s) {
    reg_out_raw(o, "null", 4);
    return;
  }
  static const char hex[] = "0123456789abcdef";
  size_t n = strlen(s);
  if (!grow(o, 6 * n + 2)) return;
  char *p = o->p + o->n;
  *p++ = '"';
  for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
    switch (*c) {
    case '"': *p++ = '\\'; *p++ = '"'; break;
    case '\\': *p++ = '\\'; *p++ = '\\'; break;
    case '\n': *p++ = '\\'; *p++ = 'n'; break;
    case '\r': *p++ = '\\'; *p++ = 'r'; break;
    case '\t': *p++ = '\\'; *p++ = 't'; break;
    default:
      if (*c < 0x20) {
        memcpy(p, "\\u00", 4);
        p[4] = hex[*c >> 4];
        p[5] = hex[*c & 15];
        p += 6;
      } else {
        *p++ = (char)*c;
      }
    }
  }
  *p++ = '"';
  o->n = (size_t)(p - o->p);
  o->p[o->n] = '\0';
}

void reg_out_key(reg_out *o, const char *key) {
  reg_out_str(o, key);
  reg_out_c(o, ':');
}

void reg_out_int(reg_out *o, int64_t v) {
  char buf[24], *p = buf + sizeof buf;
  uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
  do *--p = (char)('0' + u % 10);
  while (u /= 10);
  if (v < 0) *--p = '-';
  reg_out_raw(o, p, (size_t)(buf + sizeof buf - p));
}

void reg_out_num(reg_out *o, double v) {
  char buf[32];
  if (!isfinite(v)) {
    reg_out_raw(o, "null", 4);
    return;
  }
  if (v == (double)(int64_t)v && fabs(v) < 1e15) { /* alphas are mostly whole numbers */
    reg_out_int(o, (int64_t)v);
    return;
  }
  int k = snprintf(buf, sizeof buf, "%.9g", v); /* the values are f32: 9 digits round-trip */
  reg_out_raw(o, buf, (size_t)k);
}

/* Two digits, zero-padded. */
static char *two(char *p, int v) {
  p[0] = (char)('0' + v / 10);
  p[1] = (char)('0' + v % 10);
  return p + 2;
}

/* Civil date from days since 1970-01-01 (H. Hinnant's civil_from_days):
 * no locale, no time zone database, a few divisions per row. */
void reg_out_time(reg_out *o, int64_t unix_seconds) {
  int64_t days = unix_seconds / 86400, secs = unix_seconds % 86400;
  if (secs < 0) {
    secs += 86400;
    days--;
  }
  int64_t z = days + 719468, era = (z >= 0 ? z : z - 146096) / 146097;
  int64_t doe = z - era * 146097, yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  int64_t y = yoe + era * 400, doy = doe - (365 * yoe + yoe / 4 - yoe / 100), mp = (5 * doy + 2) / 153;
  int d = (int)(doy - (153 * mp + 2) / 5 + 1), m = (int)(mp < 10 ? mp + 3 : mp - 9);
  y += m <= 2;
  if (y < 0 || y > 9999) {
    reg_out_raw(o, "null", 4);
    return;
  }
  char buf[24], *p = buf;
  *p++ = '"';
  p = two(p, (int)(y / 100));
  p = two(p, (int)(y % 100));
  *p++ = '-';
  p = two(p, m);
  *p++ = '-';
  p = two(p, d);
  *p++ = 'T';
  p = two(p, (int)(secs / 3600));
  *p++ = ':';
  p = two(p, (int)(secs / 60 % 60));
  *p++ = ':';
  p = two(p, (int)(secs % 60));
  *p++ = 'Z';
  *p++ = '"';
  reg_out_raw(o, buf, (size_t)(p - buf));
}

/* "NAME@N" as a JSON string. */
void reg_out_ref(reg_out *o, const char *name, int64_t version) {
  reg_out_str(o, name);
  if (o->oom || !o->n) return;
  o->n--; /* reopen the string */
  reg_out_c(o, '@');
  reg_out_int(o, version);
  reg_out_c(o, '"');
}

/* JSON stored by the registry itself (validated when written): copied as is. */
void reg_out_json(reg_out *o, const char *json) {
  if (!json || !*json) reg_out_raw(o, "null", 4);
  else reg_out_raw(o, json, strlen(json));
}

/* Bytes that are not UTF-8 can only sit inside strings (the structure is
 * ASCII): each becomes the five characters of "\\xNN" (the text \xNN), and
 * DEL, C1 controls and bidirectional overrides become \u escapes, so one
 * row written by hand or by an older lorakit neither breaks the document
 * for every reader nor reaches a terminal raw. NULL on OOM (text freed). */
char *reg_json_repair(char *text) {
  if (!text) return NULL;
  size_t extra = 0;
  for (const unsigned char *p = (const unsigned char *)text; *p;) {
    uint32_t cp;
    size_t len = reg_utf8_next(p, &cp);
    if (!len) extra += 4, len = 1;
    else if (cp >= 0x7f && reg_unsafe_cp(cp)) extra += 6 - len;
    p += len;
  }
  if (!extra) return text;
  size_t n = strlen(text);
  char *out = malloc(n + extra + 1), *q = out;
  if (!out) {
    free(text);
    return NULL;
  }
  static const char hex[] = "0123456789abcdef";
  for (const unsigned char *p = (const unsigned char *)text; *p;) {
    uint32_t cp;
    size_t len = reg_utf8_next(p, &cp);
    if (!len) {
      q += sprintf(q, "\\\\x%c%c", hex[*p >> 4], hex[*p & 15]);
      p++;
    } else if (cp >= 0x7f && reg_unsafe_cp(cp)) {
      q += sprintf(q, "\\u%04x", (unsigned)cp);
      p += len;
    } else {
      memcpy(q, p, len);
      q += len;
      p += len;
    }
  }
  *q = '\0';
  free(text);
  return out;
}

lk_status reg_out_finish(lk_registry_t *reg, reg_out *o, char **out) {
  if (!o->oom && o->p && !(o->p = reg_json_repair(o->p))) o->oom = 1;
  if (o->oom || !o->p) {
    free(o->p);
    memset(o, 0, sizeof *o);
    return lk__fail(reg->ctx, LK_ERR_NOMEM, "out of memory");
  }
  *out = o->p;
  memset(o, 0, sizeof *o);
  return LK_OK;
}
