/* cli_text.c - text the CLI prints that came from files or the library:
 * escaped for a terminal (cli_esc), and the nearest command to a mistyped
 * one (cli_nearest). */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cli_escape_output;

/* One UTF-8 sequence at p: its length and code point; 0 when malformed. */
static size_t utf8_next(const unsigned char *p, uint32_t *cp) {
  unsigned char c = p[0];
  if (c < 0x80) return *cp = c, 1;
  size_t len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
  if (!len || c > 0xf4) return 0;
  uint32_t v = c & (0x7f >> len);
  for (size_t i = 1; i < len; i++) {
    if ((p[i] & 0xc0) != 0x80) return 0;
    v = v << 6 | (p[i] & 0x3f);
  }
  static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (v < min[len] || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff)) return 0;
  *cp = v;
  return len;
}

/* s as a terminal may show it: control characters (C0, DEL, C1) as \xNN
 * or \uNNNN, bidirectional overrides and isolates as \uNNNN, bytes that are
 * not UTF-8 as \xNN - so a name or note cannot clear the screen, move the
 * cursor or reorder what follows. Only when writing text to a terminal
 * (cli_escape_output); pipes get the text as stored. The result lives in
 * a ring of buffers, valid for the next 15 calls. */
const char *cli_esc(const char *s) {
  if (!s || !cli_escape_output) return s ? s : "";
  static char *ring[16];
  static unsigned next;
  size_t n = strlen(s);
  char *out = malloc(6 * n + 1), *q = out;
  if (!out) return "?";
  for (const unsigned char *p = (const unsigned char *)s; *p;) {
    uint32_t cp;
    size_t len = utf8_next(p, &cp);
    if (!len) q += sprintf(q, "\\x%02x", *p++);
    else if (cp < 0x20 || cp == 0x7f) q += sprintf(q, "\\x%02x", (unsigned)cp), p++;
    else if ((cp >= 0x80 && cp <= 0x9f) || (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069))
      q += sprintf(q, "\\u%04x", (unsigned)cp), p += len;
    else memcpy(q, p, len), q += len, p += len;
  }
  *q = '\0';
  free(ring[next % 16]);
  ring[next++ % 16] = out;
  return out;
}

/* Levenshtein distance of a and b (both short: command names). */
static size_t cli_edit_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > 63 || lb > 63) return (size_t)-1;
  size_t row[64];
  for (size_t j = 0; j <= lb; j++) row[j] = j;
  for (size_t i = 1; i <= la; i++) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= lb; j++) {
      size_t up = row[j];
      size_t best = diag + (a[i - 1] != b[j - 1]);
      if (row[j] + 1 < best) best = row[j] + 1;
      if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
      row[j] = best;
      diag = up;
    }
  }
  return row[lb];
}

const char *cli_nearest(const char *word, const char *const *names, size_t n) {
  const char *best = NULL;
  size_t bd = (size_t)-1;
  for (size_t i = 0; i < n; i++) {
    size_t d = cli_edit_distance(word, names[i]);
    if (d < bd) bd = d, best = names[i];
  }
  /* a guess only when it is close: at most 2 edits, and fewer than the word's length */
  return best && bd <= 2 && bd < strlen(word) ? best : NULL;
}
