/* cmd_registry_view.c - text renderings of the registry's JSON documents:
 * the version table, one version, a git-log-like history, a diff, base
 * models, and lineage as a tree, Graphviz DOT or Mermaid. */
#include "cmd_registry.h"

#include <stdlib.h>
#include <string.h>

static const char *str(json_t *o, const char *key) {
  const char *s = json_string_value(json_object_get(o, key));
  return rcli_esc(s ? s : "");
}

static long long num(json_t *o, const char *key) { return (long long)json_integer_value(json_object_get(o, key)); }

/* "a, b, c" of a JSON array of strings (or of objects' key). */
static void joined(json_t *arr, const char *key, const char *sep, char *buf, size_t n) {
  size_t used = 0, i;
  json_t *x;
  buf[0] = '\0';
  json_array_foreach(arr, i, x) {
    const char *s = key ? str(x, key) : rcli_esc(json_string_value(x));
    if (!s || used + strlen(s) + strlen(sep) + 4 >= n) break;
    used += (size_t)snprintf(buf + used, n - used, "%s%s", i ? sep : "", s);
  }
}

static void fmt_alpha(json_t *v, char *buf, size_t n) { snprintf(buf, n, "%g", json_number_value(json_object_get(v, "alpha"))); }

/* ---- list, show, log ------------------------------------------------------------------- */

void rcli_print_list(json_t *list) {
  int wref = 3, wtags = 4, wbase = 4, wtgt = 7;
  size_t i;
  json_t *v;
  char tags[256], tgts[256];
  json_array_foreach(list, i, v) {
    joined(json_object_get(v, "tags"), NULL, ",", tags, sizeof tags);
    joined(json_object_get(v, "target_modules"), NULL, ",", tgts, sizeof tgts);
    int a = (int)strlen(str(v, "ref")), b = (int)strlen(tags), c = (int)strlen(str(v, "base")), d = (int)strlen(tgts);
    wref = a > wref ? a : wref;
    wtags = b > wtags ? b : wtags;
    wbase = c > wbase ? c : wbase;
    wtgt = d > wtgt ? d : wtgt;
  }
  if (json_array_size(list) == 0) {
    printf("no versions\n");
    return;
  }
  printf("%-*s  %-*s  %-*s  %4s  %6s  %-13s  %-*s  %10s  %-20s  %s\n", wref, "REF", wtags, "TAGS", wbase, "BASE",
         "RANK", "ALPHA", "SCALING", wtgt, "TARGETS", "SIZE", "CREATED", "OPERATION");
  json_array_foreach(list, i, v) {
    char size[32], alpha[32];
    joined(json_object_get(v, "tags"), NULL, ",", tags, sizeof tags);
    joined(json_object_get(v, "target_modules"), NULL, ",", tgts, sizeof tgts);
    rcli_bytes((uint64_t)num(v, "size"), size, sizeof size);
    fmt_alpha(v, alpha, sizeof alpha);
    printf("%-*s  %-*s  %-*s  %4lld  %6s  %-13s  %-*s  %10s  %-20s  %s\n", wref, str(v, "ref"), wtags, tags, wbase,
           json_is_string(json_object_get(v, "base")) ? str(v, "base") : "-", num(v, "rank"), alpha, str(v, "scaling"),
           wtgt, tgts, size, str(v, "created"), str(v, "operation"));
  }
}

static void print_parents(json_t *parents, const char *indent) {
  size_t i;
  json_t *p;
  json_array_foreach(parents, i, p) {
    char *params = json_dumps(json_object_get(p, "params"), JSON_COMPACT | JSON_SORT_KEYS);
    const char *kind = json_string_value(json_object_get(p, "kind"));
    printf("%s%s %s%s%s%s\n", indent, str(p, "relation"), str(p, "ref"), kind && !strcmp(kind, "model") ? " [model]" : "",
           params && strcmp(params, "{}") ? " " : "", params && strcmp(params, "{}") ? rcli_esc(params) : "");
    free(params);
  }
}

void rcli_print_show(json_t *v) {
  char tags[512], tgts[512], size[32], stored[32], alpha[32];
  joined(json_object_get(v, "tags"), NULL, ", ", tags, sizeof tags);
  joined(json_object_get(v, "target_modules"), NULL, ", ", tgts, sizeof tgts);
  rcli_bytes((uint64_t)num(v, "size"), size, sizeof size);
  rcli_bytes((uint64_t)num(v, "stored"), stored, sizeof stored);
  fmt_alpha(v, alpha, sizeof alpha);
  json_t *m = json_object_get(v, "base_model");
  printf("ref:        %s\n", str(v, "ref"));
  printf("tags:       %s\n", tags[0] ? tags : "-");
  if (json_is_object(m))
    printf("base:       %s (%s, %lld parameters, fingerprint %.16s)\n", str(m, "name"), str(m, "architecture"),
           num(m, "parameters"), str(m, "fingerprint"));
  else
    printf("base:       - (none recorded)\n");
  printf("rank:       %lld\nalpha:      %s\nscaling:    %s\n", num(v, "rank"), alpha, str(v, "scaling"));
  printf("targets:    %lld (%s)\n", num(v, "n_targets"), tgts);
  printf("format:     %s\nsize:       %s (stored %s)\nsha256:     %s\n", str(v, "format"), size, stored, str(v, "sha256"));
  printf("created:    %s\noperation:  %s\n", str(v, "created"), str(v, "operation"));
  if (json_array_size(json_object_get(v, "parents"))) {
    printf("parents:\n");
    print_parents(json_object_get(v, "parents"), "  ");
  }
  size_t i;
  json_t *c;
  if (json_array_size(json_object_get(v, "children"))) {
    printf("children:\n");
    json_array_foreach(json_object_get(v, "children"), i, c)
      printf("  %s %s%s\n", str(c, "relation"), str(c, "ref"), strcmp(str(c, "kind"), "model") ? "" : " [model]");
  }
  if (json_is_string(json_object_get(v, "notes"))) printf("notes:      %s\n", str(v, "notes"));
  json_t *files = json_object_get(v, "files");
  if (json_array_size(files)) {
    char names[512];
    joined(files, "path", ", ", names, sizeof names);
    printf("files:      %zu as added (%s)\n", json_array_size(files), names);
  }
  printf("\n%-56s %5s %7s %16s\n", "TARGET", "RANK", "ALPHA", "SHAPE (out x in)");
  json_t *t;
  json_array_foreach(json_object_get(v, "targets"), i, t) {
    char shape[48];
    snprintf(shape, sizeof shape, "%lld x %lld", num(t, "out"), num(t, "in"));
    printf("%-56s %5lld %7g %16s\n", str(t, "name"), num(t, "rank"), json_number_value(json_object_get(t, "alpha")),
           shape);
  }
}

void rcli_print_log(json_t *list) {
  size_t i;
  json_t *v;
  json_array_foreach(list, i, v) {
    char tags[512], tgts[256], size[32], alpha[32];
    joined(json_object_get(v, "tags"), NULL, ", ", tags, sizeof tags);
    joined(json_object_get(v, "target_modules"), NULL, ", ", tgts, sizeof tgts);
    rcli_bytes((uint64_t)num(v, "size"), size, sizeof size);
    fmt_alpha(v, alpha, sizeof alpha);
    printf("%sversion %s%s%s%s\n", i ? "\n" : "", str(v, "ref"), tags[0] ? " (" : "", tags, tags[0] ? ")" : "");
    printf("Base:      %s\n", json_is_string(json_object_get(v, "base")) ? str(v, "base") : "-");
    printf("Date:      %s\n", str(v, "created"));
    printf("Operation: %s\n", str(v, "operation"));
    print_parents(json_object_get(v, "parents"), "Parent:    ");
    printf("Content:   sha256 %.16s, %s, rank %lld, alpha %s, %s, %s\n", str(v, "sha256"), size, num(v, "rank"), alpha,
           str(v, "scaling"), tgts);
    if (json_is_string(json_object_get(v, "notes"))) printf("\n    %s\n", str(v, "notes"));
  }
}

/* ---- diff and models ------------------------------------------------------------------------ */

void rcli_print_diff(json_t *d) {
  printf("diff %s %s%s\n", str(d, "a"), str(d, "b"), json_is_true(json_object_get(d, "same_content")) ? " (same content)" : "");
  size_t i;
  json_t *c;
  json_t *cfg = json_object_get(d, "config");
  if (json_array_size(cfg)) printf("\nconfig:\n");
  json_array_foreach(cfg, i, c) {
    char *a = json_dumps(json_object_get(c, "a"), JSON_COMPACT | JSON_ENCODE_ANY);
    char *b = json_dumps(json_object_get(c, "b"), JSON_COMPACT | JSON_ENCODE_ANY);
    printf("  %s: %s -> %s\n", str(c, "field"), a ? a : "?", b ? b : "?");
    free(a);
    free(b);
  }
  json_array_foreach(json_object_get(d, "only_in_a"), i, c) printf("  only in %s: %s\n", str(d, "a"), rcli_esc(json_string_value(c)));
  json_array_foreach(json_object_get(d, "only_in_b"), i, c) printf("  only in %s: %s\n", str(d, "b"), rcli_esc(json_string_value(c)));
  printf("\n%-56s %11s %11s %11s %11s\n", "TARGET", "|a|", "|b|", "|a-b|", "|a-b|/|a|");
  json_t *rows = json_copy(json_object_get(d, "targets"));
  json_t *total = json_object_get(d, "total");
  json_object_set_new(total, "name", json_string("(all common targets)"));
  json_array_append(rows, total);
  json_array_foreach(rows, i, c) {
    char rel[32];
    json_t *r = json_object_get(c, "rel");
    if (json_is_number(r)) snprintf(rel, sizeof rel, "%.4e", json_number_value(r));
    else snprintf(rel, sizeof rel, "-");
    printf("%-56s %11.4e %11.4e %11.4e %11s\n", str(c, "name"), json_number_value(json_object_get(c, "norm_a")),
           json_number_value(json_object_get(c, "norm_b")), json_number_value(json_object_get(c, "diff")), rel);
  }
  json_decref(rows);
}

void rcli_print_models(json_t *list) {
  size_t i;
  json_t *m;
  if (!json_array_size(list)) {
    printf("no base models\n");
    return;
  }
  printf("%-24s %-12s %-16s %12s %8s %8s  %-10s %s\n", "NAME", "ARCH", "FINGERPRINT", "PARAMETERS", "ADAPTERS",
         "TRAINED", "OPERATION", "MADE FROM");
  json_array_foreach(list, i, m) {
    char from[512];
    joined(json_object_get(m, "parents"), "ref", ", ", from, sizeof from);
    printf("%-24s %-12s %-16.16s %12lld %8lld %8zu  %-10s %s\n", str(m, "name"), str(m, "architecture"),
           str(m, "fingerprint"), num(m, "parameters"), num(m, "adapters"), json_array_size(json_object_get(m, "trained")),
           str(m, "operation"), from[0] ? from : "-");
  }
  /* Which adapters were trained from (or otherwise linked to) each model. */
  json_array_foreach(list, i, m) {
    json_t *tr = json_object_get(m, "trained");
    if (!json_array_size(tr)) continue;
    char refs[1024];
    joined(tr, "ref", ", ", refs, sizeof refs);
    printf("%s %s: %s\n", str(json_array_get(tr, 0), "relation"), str(m, "name"), refs);
  }
}

/* ---- lineage ------------------------------------------------------------------------------------ */

#define MAX_INDENT 40 /* deeper chains print flat rather than run off the screen */

typedef struct tree {
  json_t *adj, *kinds, *seen; /* adj: ref -> edges leaving it in this direction */
  int up;
} tree;

/* The parameters of an edge to or from a base model, shortened: those
 * edges carry what a run used (the data's sha256, the hyper-parameters). */
#define PARAMS_SHOWN 200

static void tree_node(tree *t, const char *ref, const char *relation, json_t *params, int model_edge, char *prefix,
                      size_t plen, int last, int level) {
  int is_model = !strcmp(json_string_value(json_object_get(t->kinds, ref)) ? json_string_value(json_object_get(t->kinds, ref)) : "", "model");
  int again = json_object_get(t->seen, ref) != NULL;
  char shown[PARAMS_SHOWN + 8] = "";
  if (model_edge && json_object_size(params)) {
    char *p = json_dumps(params, JSON_COMPACT | JSON_SORT_KEYS);
    if (p) {
      size_t n = strlen(p);
      if (n > PARAMS_SHOWN) {
        n = PARAMS_SHOWN;
        while (n && (p[n] & 0xc0) == 0x80) n--; /* not inside a UTF-8 sequence */
      }
      snprintf(shown, sizeof shown, " %.*s%s", (int)n, p, strlen(p) > n ? "..." : "");
    }
    free(p);
  }
  if (level == 0) printf("%s%s\n", rcli_esc(ref), is_model ? " [model]" : "");
  else
    printf("%s%s%s%s  (%s%s)%s\n", prefix, last ? "└── " : "├── ", rcli_esc(ref), is_model ? " [model]" : "",
           rcli_esc(relation), rcli_esc(shown), again ? " (see above)" : "");
  if (again) return;
  json_object_set_new(t->seen, ref, json_true());
  size_t n = strlen(prefix);
  if (level > 0 && level <= MAX_INDENT && n + 8 < plen) strcat(prefix, last ? "    " : "│   ");
  json_t *next = json_object_get(t->adj, ref);
  size_t i;
  json_t *e;
  json_array_foreach(next, i, e) {
    const char *pk = json_string_value(json_object_get(e, "parent_kind")), *ck = json_string_value(json_object_get(e, "child_kind"));
    int edge_model = (pk && !strcmp(pk, "model")) || (ck && !strcmp(ck, "model"));
    tree_node(t, json_string_value(json_object_get(e, t->up ? "parent" : "child")), json_string_value(json_object_get(e, "relation")),
              json_object_get(e, "params"), edge_model, prefix, plen, i + 1 == json_array_size(next), level + 1);
  }
  prefix[n] = '\0';
}

static void print_tree(json_t *g, int up) {
  tree t = {json_object(), json_object(), json_object(), up};
  size_t i;
  json_t *n;
  json_array_foreach(json_object_get(g, "edges"), i, n) {
    const char *from = str(n, up ? "child" : "parent");
    json_t *list = json_object_get(t.adj, from);
    if (!list) json_object_set_new(t.adj, from, list = json_array());
    json_array_append(list, n);
  }
  json_array_foreach(json_object_get(g, "nodes"), i, n) json_object_set(t.kinds, str(n, "ref"), json_object_get(n, "kind"));
  char prefix[4 * MAX_INDENT * 4 + 64] = "";
  tree_node(&t, str(g, "root"), "", NULL, 0, prefix, sizeof prefix, 1, 0);
  json_decref(t.adj);
  json_decref(t.kinds);
  json_decref(t.seen);
}

/* Edges of one direction only, for the text tree. */
static json_t *only_direction(json_t *g, int up) {
  json_t *depth = json_object(), *sub = json_deep_copy(g), *edges = json_array();
  size_t i;
  json_t *x;
  json_array_foreach(json_object_get(g, "nodes"), i, x) json_object_set(depth, str(x, "ref"), json_object_get(x, "depth"));
  json_array_foreach(json_object_get(g, "edges"), i, x) {
    long long dc = (long long)json_integer_value(json_object_get(depth, str(x, "child")));
    long long dp = (long long)json_integer_value(json_object_get(depth, str(x, "parent")));
    if (up ? (dc <= 0 && dp < 0) : (dp >= 0 && dc > 0)) json_array_append(edges, x);
  }
  json_object_set_new(sub, "edges", edges);
  json_decref(depth);
  return sub;
}

static void dot_quote(const char *s) {
  putchar('"');
  for (; *s; s++) {
    if (*s == '"' || *s == '\\') putchar('\\');
    putchar(*s);
  }
  putchar('"');
}

static void print_dot(json_t *g) {
  size_t i;
  json_t *x;
  printf("digraph lineage {\n  rankdir=BT;\n  node [shape=box, style=rounded, fontname=\"Helvetica\"];\n");
  json_array_foreach(json_object_get(g, "nodes"), i, x) {
    printf("  ");
    dot_quote(str(x, "ref"));
    int root = !strcmp(str(x, "ref"), str(g, "root")), model = !strcmp(str(x, "kind"), "model");
    printf(" [%s%s];\n", model ? "shape=ellipse" : "style=rounded", root ? ", penwidth=2" : "");
  }
  json_array_foreach(json_object_get(g, "edges"), i, x) {
    printf("  ");
    dot_quote(str(x, "child"));
    printf(" -> ");
    dot_quote(str(x, "parent"));
    printf(" [label=");
    dot_quote(str(x, "relation"));
    printf("];\n");
  }
  printf("}\n");
}

static void mermaid_label(const char *s) {
  for (; *s; s++) {
    if (*s == '"') fputs("#quot;", stdout);
    else putchar(*s);
  }
}

static void print_mermaid(json_t *g) {
  size_t i;
  json_t *x, *ids = json_object();
  printf("graph BT\n");
  json_array_foreach(json_object_get(g, "nodes"), i, x) {
    json_object_set_new(ids, str(x, "ref"), json_integer((json_int_t)i));
    int model = !strcmp(str(x, "kind"), "model");
    printf("  n%zu%s", i, model ? "([\"" : "[\"");
    mermaid_label(str(x, "ref"));
    printf("%s\n", model ? "\"])" : "\"]");
  }
  json_array_foreach(json_object_get(g, "edges"), i, x) {
    json_t *c = json_object_get(ids, str(x, "child")), *p = json_object_get(ids, str(x, "parent"));
    if (c && p)
      printf("  n%lld -->|%s| n%lld\n", (long long)json_integer_value(c), str(x, "relation"), (long long)json_integer_value(p));
  }
  printf("  style n%lld stroke-width:3px\n", (long long)json_integer_value(json_object_get(ids, str(g, "root"))));
  json_decref(ids);
}

void rcli_print_lineage(json_t *g, const char *format, int dir) {
  if (!strcmp(format, "dot")) {
    print_dot(g);
    return;
  }
  if (!strcmp(format, "mermaid")) {
    print_mermaid(g);
    return;
  }
  for (int up = 1; up >= 0; up--) {
    if (!(dir & (up ? LK_LINEAGE_UP : LK_LINEAGE_DOWN))) continue;
    json_t *sub = only_direction(g, up);
    if (dir == LK_LINEAGE_BOTH) printf("%s%s:\n", up ? "" : "\n", up ? "ancestors (made from)" : "descendants (made from it)");
    print_tree(sub, up);
    json_decref(sub);
  }
}
