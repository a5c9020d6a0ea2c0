/* cmd_registry.c - `lorakit registry`: arguments and subcommands over the
 * lk_registry_ API, and the recording other commands (convert, merge) do
 * when a registry is configured (--registry PATH or LORAKIT_REGISTRY).
 * Text output is rendered in cmd_registry_view.c. */
#include "cmd_registry.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char cli_registry_usage[] =
    "usage: lorakit registry [--registry PATH] [--json] COMMAND [ARGS]\n"
    "\n"
    "Adapter versions, tags and lineage in one SQLite file: --registry PATH, else\n"
    "$LORAKIT_REGISTRY, else $XDG_DATA_HOME/lorakit/registry.db, else\n"
    "~/.local/share/lorakit/registry.db. REF is NAME@N, NAME:TAG or NAME (= latest).\n"
    "\n"
    "commands:\n"
    "  add NAME PATH [--base MODEL] [--parent REF]... [--relation R] [--params JSON]\n"
    "                [--note TEXT] [--operation OP] [--force] [--new-version]\n"
    "                                  add a PEFT folder (every file in it) or a GGUF LoRA\n"
    "                                  file; prints NAME@N. The same files again under\n"
    "                                  NAME are that version, unless --new-version;\n"
    "                                  --relation R with --base and no --parent links\n"
    "                                  it to the base model (e.g. trained_from)\n"
    "  list [NAME] [--base MODEL] [--tag TAG] [--limit N]\n"
    "                                  versions, by name then version\n"
    "  show REF                        one version: config, targets, parents, children\n"
    "  log NAME                        versions of NAME, newest first\n"
    "  lineage REF [--up|--down] [--depth N] [--format text|dot|mermaid]\n"
    "                                  ancestors and descendants (DOT for Graphviz)\n"
    "  tag REF TAG                     point NAME:TAG at REF (moves it)\n"
    "  untag NAME:TAG                  remove a tag\n"
    "  diff REF REF                    config differences and, per target, the\n"
    "                                  relative Frobenius norm of the difference of s*B*A\n"
    "  export REF -o PATH [--format peft|gguf-lora]\n"
    "                                  write a version out: the files it was added from,\n"
    "                                  byte for byte, or converted to --format\n"
    "  rm REF [--force]                remove a version (refused while tagged or a parent)\n"
    "  link CHILD PARENT --relation R [--params JSON]\n"
    "                                  record lineage found later (cycles refused)\n"
    "  models                          base models, adapters trained from them and how\n"
    "                                  merged or quantised ones were made\n"
    "  verify                          recompute every hash; exit 1 naming damaged versions\n"
    "  gc                              drop payloads no version uses\n"
    "\n"
    "Relations: trained_from, merged_from, quantized_from, extracted_from,\n"
    "combined_from, imported. MODEL is a recorded base model's name or a model path.\n"
    "`lorakit convert` (of an adapter) and `lorakit merge` record what they write,\n"
    "with its lineage, when --registry is given or LORAKIT_REGISTRY is set.\n";

/* ---- shared helpers --------------------------------------------------------------- */

void rcli_bytes(uint64_t n, char *buf, size_t size) {
  static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = (double)n;
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    u++;
  }
  if (u == 0) snprintf(buf, size, "%llu B", (unsigned long long)n);
  else snprintf(buf, size, "%.1f %s", v, units[u]);
}

void rcli_print_json(json_t *doc) {
  char *s = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
  if (s) puts(s);
  free(s);
}

/* The session of one `lorakit registry` run. */
typedef struct rcli {
  const char *path; /* --registry, or NULL for the default */
  int json;
  lk_context_t *ctx;
  lk_registry_t *reg;
  int argc;         /* the subcommand and its arguments, global options removed */
  char **argv;
} rcli;

/* The library's message, escaped on a terminal like the output (a message
 * may quote a tag or name read from the file). */
static int fail(rcli *r) {
  int saved = rcli_escape_output;
  rcli_escape_output = isatty(2);
  int rc = cli_error(CLI_FAILED, "%s", rcli_esc(lk_last_error(r->ctx)));
  rcli_escape_output = saved;
  return rc;
}

enum { OPEN_READ = 0, OPEN_WRITE = 1, OPEN_CREATE = 2 };

/* Open the registry. Commands that only read refuse a missing file rather
 * than create an empty registry, and open it read-only: a registry on
 * read-only media or someone else's is still readable. */
static int open_reg(rcli *r, int mode) {
  int create = mode == OPEN_CREATE;
  char *def = r->path ? NULL : lk_registry_default_path();
  const char *path = r->path ? r->path : def;
  struct stat sb;
  if (!create && path && stat(path, &sb)) {
    int rc = cli_error(CLI_FAILED, "no registry at %s (add an adapter first, or give --registry PATH)", path);
    lk_free(def);
    return rc;
  }
  lk_registry_opts_t o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.read_only = mode == OPEN_READ;
  lk_status st = lk_registry_open(r->ctx, path, &o, &r->reg);
  lk_free(def);
  return st ? fail(r) : CLI_OK;
}

/* Parse the library's JSON result, print it (--json) or render it. */
static int emit(rcli *r, char *s, void (*render)(json_t *)) {
  json_error_t jerr;
  json_t *doc = s ? json_loads(s, JSON_DECODE_ANY, &jerr) : NULL;
  lk_free(s);
  if (!doc) return cli_error(CLI_FAILED, "internal error: the registry returned malformed JSON");
  if (r->json) rcli_print_json(doc);
  else render(doc);
  json_decref(doc);
  return CLI_OK;
}

/* {"k1": "v1", ...} for up to three pairs (NULL keys end the list). */
static void print_pairs(const char *k1, const char *v1, const char *k2, const char *v2, const char *k3,
                        const char *v3) {
  json_t *o = json_object();
  json_object_set_new(o, k1, json_string(v1));
  if (k2) json_object_set_new(o, k2, json_string(v2));
  if (k3) json_object_set_new(o, k3, json_string(v3));
  rcli_print_json(o);
  json_decref(o);
}

static int usage_error(const char *cmd, const char *arg) {
  return cli_error(CLI_USAGE, "registry %s: unexpected argument '%s' (see lorakit registry --help)", cmd, arg);
}

static int want_args(const char *cmd, int have, int need, const char *what) {
  if (have == need) return CLI_OK;
  return cli_error(CLI_USAGE, "registry %s: expected %s", cmd, what);
}

/* Progress of a large add on a terminal. */
static void progress(void *user, uint64_t done, uint64_t total) {
  (void)user;
  fprintf(stderr, "\rstoring: %3d%%%s", total ? (int)(100 * done / total) : 100, done >= total ? "\n" : "");
}

/* ---- subcommands -------------------------------------------------------------------- */

static int cmd_add(rcli *r) {
  const char *pos[2] = {NULL, NULL}, *parents[64];
  int npos = 0;
  lk_registry_add_opts_t o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  const char *relation = NULL;
  for (int i = 1; i < r->argc; i++) {
    const char *a = r->argv[i];
    int more = i + 1 < r->argc;
    if (!strcmp(a, "--base") && more) o.base = r->argv[++i];
    else if (!strcmp(a, "--parent") && more) {
      if (o.n_parents == 64) return cli_error(CLI_USAGE, "registry add: at most 64 --parent");
      parents[o.n_parents++] = r->argv[++i];
    } else if (!strcmp(a, "--relation") && more) relation = r->argv[++i];
    else if (!strcmp(a, "--params") && more) o.params_json = r->argv[++i];
    else if (!strcmp(a, "--note") && more) o.notes = r->argv[++i];
    else if (!strcmp(a, "--operation") && more) o.operation = r->argv[++i];
    else if (!strcmp(a, "--loader") && more) o.loader = r->argv[++i];
    else if (!strcmp(a, "--force")) o.force = 1;
    else if (!strcmp(a, "--new-version")) o.new_version = 1;
    else if (a[0] != '-' && npos < 2) pos[npos++] = a;
    else return usage_error("add", a);
  }
  if (npos != 2) return cli_error(CLI_USAGE, "registry add: expected NAME PATH");
  if (relation && !(o.relation = lk_registry_relation_parse(relation)))
    return cli_error(CLI_USAGE,
                     "registry add: unknown relation '%s' (trained_from, merged_from, quantized_from, "
                     "extracted_from, combined_from, imported)",
                     relation);
  if (o.n_parents && !relation) return cli_error(CLI_USAGE, "registry add: --parent needs --relation R");
  if (relation && !o.n_parents && !o.base)
    return cli_error(CLI_USAGE, "registry add: --relation needs --parent REF, or --base MODEL (an edge to the base)");
  o.parents = parents;
  if (isatty(2) && !r->json) o.progress = progress;
  int rc = open_reg(r, OPEN_CREATE);
  if (rc) return rc;
  char *ref = NULL;
  /* The same files under the same name are that version: the library
   * returns it (after checking the arguments); say so. */
  lk_registry_find_opts_t fo;
  memset(&fo, 0, sizeof fo);
  fo.struct_size = sizeof fo;
  fo.exact_only = 1;
  fo.name = pos[0];
  char *had = NULL;
  if (o.new_version || lk_registry_find(r->reg, pos[1], &fo, &had, NULL)) had = NULL;
  if (lk_registry_add_path(r->reg, pos[0], pos[1], &o, &ref)) {
    lk_free(had);
    return fail(r);
  }
  if (had && !strcmp(had, ref)) {
    lk_free(had);
    if (r->json) {
      json_t *d = json_pack("{s:s, s:b}", "ref", ref, "existing", 1);
      rcli_print_json(d);
      json_decref(d);
    } else {
      printf("%s\n", ref);
      fprintf(stderr, "lorakit: %s already holds these exact files; nothing added (--new-version adds another)\n",
              ref);
    }
    lk_free(ref);
    return CLI_OK;
  }
  lk_free(had);
  if (r->json) print_pairs("ref", ref, NULL, NULL, NULL, NULL);
  else printf("%s\n", ref);
  lk_free(ref);
  return CLI_OK;
}

static int list_like(rcli *r, int log) {
  lk_registry_list_opts_t o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.newest_first = log;
  for (int i = 1; i < r->argc; i++) {
    const char *a = r->argv[i];
    int more = i + 1 < r->argc;
    if (!log && !strcmp(a, "--base") && more) o.base = r->argv[++i];
    else if (!log && !strcmp(a, "--tag") && more) o.tag = r->argv[++i];
    else if (!strcmp(a, "--limit") && more) o.limit = (uint32_t)strtoul(r->argv[++i], NULL, 10);
    else if (a[0] != '-' && !o.name) o.name = a;
    else return usage_error(r->argv[0], a);
  }
  if (log && !o.name) return cli_error(CLI_USAGE, "registry log: expected NAME");
  int rc = open_reg(r, OPEN_READ);
  if (rc) return rc;
  char *s = NULL;
  if (log) { /* an unknown name is an error for log, an empty list for list */
    char *ref = NULL;
    if (lk_registry_resolve(r->reg, o.name, &ref)) return fail(r);
    lk_free(ref);
  }
  if (lk_registry_list(r->reg, &o, &s)) return fail(r);
  return emit(r, s, log ? rcli_print_log : rcli_print_list);
}

static int cmd_show(rcli *r) {
  if (r->argc != 2 || r->argv[1][0] == '-') return cli_error(CLI_USAGE, "registry show: expected REF");
  int rc = open_reg(r, OPEN_READ);
  char *s = NULL;
  if (rc) return rc;
  if (lk_registry_show(r->reg, r->argv[1], &s)) return fail(r);
  return emit(r, s, rcli_print_show);
}

static const char *lineage_format;
static int lineage_dir;
static void render_lineage(json_t *g) { rcli_print_lineage(g, lineage_format, lineage_dir); }

static int cmd_lineage(rcli *r) {
  const char *ref = NULL;
  lk_registry_lineage_opts_t o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  lineage_format = "text";
  for (int i = 1; i < r->argc; i++) {
    const char *a = r->argv[i];
    int more = i + 1 < r->argc;
    if (!strcmp(a, "--up")) o.direction |= LK_LINEAGE_UP;
    else if (!strcmp(a, "--down")) o.direction |= LK_LINEAGE_DOWN;
    else if (!strcmp(a, "--depth") && more) o.max_depth = (uint32_t)strtoul(r->argv[++i], NULL, 10);
    else if (!strcmp(a, "--format") && more) lineage_format = r->argv[++i];
    else if (a[0] != '-' && !ref) ref = a;
    else return usage_error("lineage", a);
  }
  if (!ref) return cli_error(CLI_USAGE, "registry lineage: expected REF");
  if (strcmp(lineage_format, "text") && strcmp(lineage_format, "dot") && strcmp(lineage_format, "mermaid"))
    return cli_error(CLI_USAGE, "registry lineage: --format must be text, dot or mermaid, not '%s'", lineage_format);
  lineage_dir = o.direction ? o.direction : LK_LINEAGE_BOTH;
  int rc = open_reg(r, OPEN_READ);
  char *s = NULL;
  if (rc) return rc;
  if (lk_registry_lineage(r->reg, ref, &o, &s)) return fail(r);
  return emit(r, s, render_lineage);
}

static int cmd_tag(rcli *r) {
  int rc = want_args("tag", r->argc, 3, "REF TAG");
  if (rc || (rc = open_reg(r, OPEN_WRITE))) return rc;
  char *ref = NULL;
  if (lk_registry_tag(r->reg, r->argv[1], r->argv[2]) || lk_registry_resolve(r->reg, r->argv[1], &ref)) return fail(r);
  const char *name = r->argv[1];
  int len = (int)strcspn(name, "@:");
  char tag[512];
  snprintf(tag, sizeof tag, "%.*s:%s", len, name, r->argv[2]);
  if (r->json) print_pairs("tag", tag, "ref", ref, NULL, NULL);
  else printf("%s -> %s\n", tag, ref);
  lk_free(ref);
  return CLI_OK;
}

static int cmd_untag(rcli *r) {
  int rc = want_args("untag", r->argc, 2, "NAME:TAG");
  if (rc) return rc;
  char *colon = strchr(r->argv[1], ':');
  if (!colon) return cli_error(CLI_USAGE, "registry untag: expected NAME:TAG, not '%s'", r->argv[1]);
  *colon = '\0';
  if ((rc = open_reg(r, OPEN_WRITE))) return rc;
  if (lk_registry_untag(r->reg, r->argv[1], colon + 1)) return fail(r);
  *colon = ':';
  if (r->json) print_pairs("removed", r->argv[1], NULL, NULL, NULL, NULL);
  else printf("removed tag %s\n", r->argv[1]);
  return CLI_OK;
}

static int cmd_diff(rcli *r) {
  int rc = want_args("diff", r->argc, 3, "REF REF");
  char *s = NULL;
  if (rc || (rc = open_reg(r, OPEN_READ))) return rc;
  if (lk_registry_diff(r->reg, r->argv[1], r->argv[2], &s)) return fail(r);
  return emit(r, s, rcli_print_diff);
}

static int cmd_export(rcli *r) {
  const char *ref = NULL, *out = NULL, *format = NULL; /* NULL: as stored */
  for (int i = 1; i < r->argc; i++) {
    const char *a = r->argv[i];
    int more = i + 1 < r->argc;
    if (!strcmp(a, "-o") && more) out = r->argv[++i];
    else if (!strcmp(a, "--format") && more) format = r->argv[++i];
    else if (a[0] != '-' && !ref) ref = a;
    else return usage_error("export", a);
  }
  if (!ref || !out) return cli_error(CLI_USAGE, "registry export: expected REF -o PATH");
  if (format && strcmp(format, "peft") && strcmp(format, "gguf-lora"))
    return cli_error(CLI_USAGE, "registry export: --format must be peft or gguf-lora, not '%s'", format);
  int rc = open_reg(r, OPEN_READ);
  char *full = NULL;
  if (rc) return rc;
  if (lk_registry_resolve(r->reg, ref, &full) || lk_registry_export(r->reg, ref, out, format)) {
    lk_free(full);
    return fail(r);
  }
  const char *how = format ? format : "as stored";
  if (r->json) print_pairs("ref", full, "path", out, "format", how);
  else printf("exported %s to %s (%s)\n", full, out, how);
  lk_free(full);
  return CLI_OK;
}

static int cmd_rm(rcli *r) {
  const char *ref = NULL;
  uint32_t force = 0;
  for (int i = 1; i < r->argc; i++) {
    if (!strcmp(r->argv[i], "--force")) force = 1;
    else if (r->argv[i][0] != '-' && !ref) ref = r->argv[i];
    else return usage_error("rm", r->argv[i]);
  }
  if (!ref) return cli_error(CLI_USAGE, "registry rm: expected REF");
  int rc = open_reg(r, OPEN_WRITE);
  char *full = NULL;
  if (rc) return rc;
  if (lk_registry_resolve(r->reg, ref, &full) || lk_registry_remove(r->reg, ref, force)) {
    lk_free(full);
    return fail(r);
  }
  if (r->json) print_pairs("removed", full, NULL, NULL, NULL, NULL);
  else printf("removed %s\n", full);
  lk_free(full);
  return CLI_OK;
}

static int cmd_link(rcli *r) {
  const char *pos[2] = {NULL, NULL}, *relation = NULL, *params = NULL;
  int npos = 0;
  for (int i = 1; i < r->argc; i++) {
    const char *a = r->argv[i];
    int more = i + 1 < r->argc;
    if (!strcmp(a, "--relation") && more) relation = r->argv[++i];
    else if (!strcmp(a, "--params") && more) params = r->argv[++i];
    else if (a[0] != '-' && npos < 2) pos[npos++] = a;
    else return usage_error("link", a);
  }
  if (npos != 2 || !relation) return cli_error(CLI_USAGE, "registry link: expected CHILD PARENT --relation R");
  int32_t rel = lk_registry_relation_parse(relation);
  if (!rel) return cli_error(CLI_USAGE, "registry link: unknown relation '%s'", relation);
  int rc = open_reg(r, OPEN_WRITE);
  if (rc) return rc;
  if (lk_registry_link(r->reg, pos[0], pos[1], rel, params)) return fail(r);
  if (r->json) print_pairs("child", pos[0], "parent", pos[1], "relation", relation);
  else printf("%s -> %s (%s)\n", pos[0], pos[1], relation);
  return CLI_OK;
}

static int cmd_models(rcli *r) {
  int rc = want_args("models", r->argc, 1, "no arguments");
  char *s = NULL;
  if (rc || (rc = open_reg(r, OPEN_READ))) return rc;
  if (lk_registry_models(r->reg, &s)) return fail(r);
  return emit(r, s, rcli_print_models);
}

static int cmd_verify(rcli *r) {
  int rc = want_args("verify", r->argc, 1, "no arguments");
  char *s = NULL;
  if (rc || (rc = open_reg(r, OPEN_READ))) return rc;
  lk_status st = lk_registry_verify(r->reg, &s);
  if (st && st != LK_ERR_CORRUPT) return fail(r);
  json_error_t jerr;
  json_t *doc = s ? json_loads(s, 0, &jerr) : NULL;
  lk_free(s);
  if (!doc) return cli_error(CLI_FAILED, "internal error: the registry returned malformed JSON");
  if (r->json) {
    rcli_print_json(doc);
  } else {
    char b[32];
    rcli_bytes((uint64_t)json_integer_value(json_object_get(doc, "bytes")), b, sizeof b);
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(doc, "problems"), i, p) {
      /* the library's problems mostly name the registry already: once is enough */
      const char *prob = json_string_value(json_object_get(p, "problem")), *path = lk_registry_path(r->reg);
      size_t pl = strlen(path);
      int named = prob && !strncmp(prob, "registry ", 9) && !strncmp(prob + 9, path, pl) && prob[9 + pl] == ':';
      fprintf(stderr, "lorakit: %s%s%s%s", named ? "" : "registry ", named ? "" : rcli_esc(path), named ? "" : ": ",
              rcli_esc(prob));
      json_t *vs = json_object_get(p, "versions");
      size_t k;
      json_t *v;
      json_array_foreach(vs, k, v) fprintf(stderr, "%s%s", k ? ", " : " [damaged: ", rcli_esc(json_string_value(v)));
      fprintf(stderr, "%s\n", json_array_size(vs) ? "]" : "");
    }
    printf("%s: %lld versions, %lld payloads (%s) checked: %s\n", lk_registry_path(r->reg),
           (long long)json_integer_value(json_object_get(doc, "versions")),
           (long long)json_integer_value(json_object_get(doc, "blobs")), b,
           st ? "PROBLEMS FOUND" : "ok");
  }
  json_decref(doc);
  return st ? CLI_FAILED : CLI_OK;
}

static int cmd_gc(rcli *r) {
  int rc = want_args("gc", r->argc, 1, "no arguments");
  char *s = NULL;
  if (rc || (rc = open_reg(r, OPEN_WRITE))) return rc;
  if (lk_registry_gc(r->reg, &s)) return fail(r);
  json_error_t jerr;
  json_t *doc = json_loads(s, 0, &jerr);
  lk_free(s);
  if (r->json) rcli_print_json(doc);
  else {
    char b[32];
    rcli_bytes((uint64_t)json_integer_value(json_object_get(doc, "bytes_freed")), b, sizeof b);
    printf("removed %lld unreferenced payloads (%s)\n", (long long)json_integer_value(json_object_get(doc, "blobs_removed")), b);
  }
  json_decref(doc);
  return CLI_OK;
}

static int cmd_list(rcli *r) { return list_like(r, 0); }
static int cmd_log(rcli *r) { return list_like(r, 1); }

static const struct {
  const char *name;
  int (*run)(rcli *r);
} subcommands[] = {
    {"add", cmd_add},       {"list", cmd_list},   {"ls", cmd_list},     {"show", cmd_show},
    {"log", cmd_log},       {"lineage", cmd_lineage}, {"tag", cmd_tag}, {"untag", cmd_untag},
    {"diff", cmd_diff},     {"export", cmd_export}, {"rm", cmd_rm},     {"link", cmd_link},
    {"models", cmd_models}, {"verify", cmd_verify}, {"gc", cmd_gc},
};

int cli_registry(int argc, char **argv) {
  rcli r;
  memset(&r, 0, sizeof r);
  r.argv = calloc((size_t)argc + 1, sizeof *r.argv);
  if (!r.argv) return cli_error(CLI_FAILED, "out of memory");
  for (int i = 1; i < argc; i++) { /* global options may come anywhere */
    if (!strcmp(argv[i], "--json")) r.json = 1;
    else if (!strcmp(argv[i], "--registry")) {
      if (i + 1 >= argc) {
        free(r.argv);
        return cli_error(CLI_USAGE, "registry: --registry needs a PATH");
      }
      r.path = argv[++i];
    } else r.argv[r.argc++] = argv[i];
  }
  /* Names and notes may hold anything an older lorakit or a hand edit
   * put there: never raw onto a terminal. */
  rcli_escape_output = !r.json && isatty(1);
  int rc = CLI_USAGE;
  if (r.argc == 0) {
    cli_error(CLI_USAGE, "registry: expected a command (see lorakit registry --help)");
    goto out;
  }
  int found = -1;
  for (size_t i = 0; i < sizeof subcommands / sizeof subcommands[0]; i++)
    if (!strcmp(r.argv[0], subcommands[i].name)) found = (int)i;
  if (found < 0) {
    cli_error(CLI_USAGE, "registry: unknown command '%s' (see lorakit registry --help)", r.argv[0]);
    goto out;
  }
  if (lk_context_create(NULL, &r.ctx)) {
    rc = cli_error(CLI_FAILED, "cannot create a context");
    goto out;
  }
  rc = subcommands[found].run(&r);
out:
  lk_registry_close(r.reg);
  lk_context_free(r.ctx);
  free(r.argv);
  return rc;
}

/* ---- recording for other commands ------------------------------------------------------ */

const char *cli_registry_configured(const char *flag) {
  if (flag) return flag;
  const char *env = secure_getenv("LORAKIT_REGISTRY");
  return env && *env ? env : NULL;
}

static int record_fail(lk_context_t *ctx, const char *what, const char *registry) {
  return cli_error(CLI_FAILED, "%s was written, but recording it in registry %s failed: %s", what, registry,
                   lk_last_error(ctx));
}

/* The version an input adapter is: a REF, or a path resolved by
 * lk_registry_find (exact bytes, then content in the same format); a path
 * not recorded yet is added (operation "import"). */
static lk_status source_ref(lk_registry_t *reg, const char *what, const char *base, char **ref) {
  lk_registry_find_opts_t fo;
  memset(&fo, 0, sizeof fo);
  fo.struct_size = sizeof fo;
  fo.base = base;
  char *note = NULL;
  lk_status st = lk_registry_find(reg, what, &fo, ref, &note);
  if (note) fprintf(stderr, "lorakit: registry: %s\n", note);
  lk_free(note);
  struct stat sb;
  if (st != LK_ERR_NOT_FOUND || stat(what, &sb)) return st;
  lk_registry_add_opts_t o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.base = base;
  o.operation = "import";
  return lk_registry_add_path(reg, NULL, what, &o, ref);
}

lk_status cli_registry_adapter_load(lk_context_t *ctx, const char *registry, const char *adapter,
                                    const char *base_config, lk_adapter_t **out) {
  struct stat sb;
  *out = NULL;
  if (!(registry = cli_registry_configured(registry)) || !stat(adapter, &sb) || strchr(adapter, '/'))
    return lk_adapter_load(ctx, adapter, NULL, base_config, out);
  /* Not a path: NAME@N, NAME:TAG or NAME in the registry. */
  lk_registry_opts_t ro;
  memset(&ro, 0, sizeof ro);
  ro.struct_size = sizeof ro;
  ro.read_only = 1;
  lk_registry_t *reg = NULL;
  lk_status st = lk_registry_open(ctx, registry, &ro, &reg);
  if (!st && (st = lk_registry_get(reg, adapter, out)) == LK_ERR_NOT_FOUND) /* the caller prints the registry's reason */
    fprintf(stderr, "lorakit: %s: no such file or folder, nor a version in registry %s\n", adapter, registry);
  lk_registry_close(reg);
  return st;
}

lk_status cli_registry_adapter_path(lk_context_t *ctx, const char *registry, const char *adapter, const char **path,
                                    char **tmpdir) {
  struct stat sb;
  *path = adapter;
  *tmpdir = NULL;
  if (!(registry = cli_registry_configured(registry)) || !stat(adapter, &sb) || strchr(adapter, '/')) return LK_OK;
  /* Not a path: NAME@N, NAME:TAG or NAME in the registry, exported (its
   * stored files, byte for byte) into a private temporary folder. */
  const char *tmp = secure_getenv("TMPDIR");
  size_t n = strlen(tmp && *tmp ? tmp : "/tmp") + 32;
  char *dir = malloc(n), *out = malloc(n + 16);
  if (!dir || !out) {
    free(dir);
    free(out);
    return LK_ERR_NOMEM;
  }
  snprintf(dir, n, "%s/lorakit-ref.XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(dir)) {
    free(dir);
    free(out);
    fprintf(stderr, "lorakit: cannot make a temporary folder for %s: %s\n", adapter, strerror(errno));
    return LK_ERR_IO;
  }
  snprintf(out, n + 16, "%s/adapter", dir);
  lk_registry_opts_t ro;
  memset(&ro, 0, sizeof ro);
  ro.struct_size = sizeof ro;
  ro.read_only = 1;
  lk_registry_t *reg = NULL;
  lk_status st = lk_registry_open(ctx, registry, &ro, &reg);
  if (!st && (st = lk_registry_export(reg, adapter, out, NULL)) == LK_ERR_NOT_FOUND)
    fprintf(stderr, "lorakit: %s: no such file or folder, nor a version in registry %s\n", adapter, registry);
  lk_registry_close(reg);
  *tmpdir = dir;
  static char *keep; /* the path lives until cli_registry_tmp_free */
  free(keep);
  keep = out;
  *path = out;
  return st;
}

void cli_registry_tmp_free(char *tmpdir) {
  if (!tmpdir) return;
  /* The folder holds one exported adapter (a file or a flat folder). */
  size_t n = strlen(tmpdir) + 16;
  char *p = malloc(n);
  if (p) {
    snprintf(p, n, "%s/adapter", tmpdir);
    DIR *d = opendir(p);
    if (d) {
      struct dirent *e;
      while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        size_t m = strlen(p) + strlen(e->d_name) + 2;
        char *f = malloc(m);
        if (f) {
          snprintf(f, m, "%s/%s", p, e->d_name);
          unlink(f);
          free(f);
        }
      }
      closedir(d);
      rmdir(p);
    } else {
      unlink(p);
    }
    free(p);
  }
  rmdir(tmpdir);
  free(tmpdir);
}

/* A path as relation parameters may hold it: control and bidi-override
 * characters and non-UTF-8 bytes written as escapes (the registry refuses
 * them raw). */
static const char *param_text(const char *s) {
  int saved = rcli_escape_output;
  rcli_escape_output = 1;
  const char *r = rcli_esc(s);
  rcli_escape_output = saved;
  return r;
}

int cli_registry_record_convert(lk_context_t *ctx, const char *registry, const char *in, const char *out,
                                const char *format, const char *base) {
  if (!(registry = cli_registry_configured(registry))) return CLI_OK;
  lk_registry_t *reg = NULL;
  char *src = NULL, *dst = NULL;
  int rc = CLI_OK;
  lk_registry_add_opts_t o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.base = base;
  if (lk_registry_open(ctx, registry, NULL, &reg) || source_ref(reg, in, base, &src)) {
    rc = record_fail(ctx, out, registry);
    goto out;
  }
  json_t *params = json_pack("{s:s, s:s}", "from", param_text(in), "format", format);
  char *params_s = json_dumps(params, JSON_COMPACT);
  json_decref(params);
  const char *parents[1] = {src};
  o.operation = "convert";
  o.parents = parents;
  o.n_parents = 1;
  o.relation = LK_REL_IMPORTED;
  o.params_json = params_s;
  if (lk_registry_add_path(reg, NULL, out, &o, &dst)) rc = record_fail(ctx, out, registry);
  else printf("registry: recorded %s (imported from %s)\n", dst, src);
  free(params_s);
out:
  lk_free(src);
  lk_free(dst);
  lk_registry_close(reg);
  return rc;
}

int cli_registry_record_merge(lk_context_t *ctx, const char *registry, const char *model, const char *adapter,
                              const char *out, double scale, int undo) {
  if (!(registry = cli_registry_configured(registry))) return CLI_OK;
  lk_registry_t *reg = NULL;
  char *base = NULL, *ad_ref = NULL, *name = NULL, *params_s = NULL;
  int rc = CLI_OK;
  /* The base first, so the adapter and the merged model name it without
   * reading its weights again. */
  if (lk_registry_open(ctx, registry, NULL, &reg) || lk_registry_add_model(reg, NULL, model, NULL, &base) ||
      source_ref(reg, adapter, base, &ad_ref)) {
    rc = record_fail(ctx, out, registry);
    goto out;
  }
  json_t *params = json_pack("{s:s, s:f, s:b}", "adapter", ad_ref, "scale", scale, "unmerge", undo);
  params_s = json_dumps(params, JSON_COMPACT);
  json_decref(params);
  const char *parents[1] = {ad_ref};
  lk_registry_model_opts_t mo;
  memset(&mo, 0, sizeof mo);
  mo.struct_size = sizeof mo;
  mo.relation = LK_REL_MERGED_FROM;
  mo.parents = parents;
  mo.n_parents = 1;
  mo.base = base;
  mo.params_json = params_s;
  mo.operation = undo ? "unmerge" : "merge";
  if (lk_registry_add_model(reg, NULL, out, &mo, &name)) rc = record_fail(ctx, out, registry);
  else printf("registry: recorded model %s (merged_from %s and %s)\n", name, ad_ref, base);
out:
  free(params_s);
  lk_free(base);
  lk_free(ad_ref);
  lk_free(name);
  lk_registry_close(reg);
  return rc;
}

int cli_registry_record_train(lk_context_t *ctx, const char *registry, const char *model, const char *init_adapter,
                              const char *out, const char *run_json) {
  if (!(registry = cli_registry_configured(registry))) return CLI_OK;
  lk_registry_t *reg = NULL;
  char *base = NULL, *parent = NULL, *dst = NULL, *params_s = NULL;
  int rc = CLI_OK;
  if (lk_registry_open(ctx, registry, NULL, &reg) || lk_registry_add_model(reg, NULL, model, NULL, &base) ||
      (init_adapter && source_ref(reg, init_adapter, base, &parent))) {
    rc = record_fail(ctx, out, registry);
    goto out;
  }
  /* The relation's parameters: the base, the data's hash and every
   * hyper-parameter (the trainer's run description). */
  json_error_t je;
  json_t *run = run_json ? json_loads(run_json, 0, &je) : NULL;
  json_t *params = json_is_object(run) ? run : json_object();
  if (params != run) json_decref(run);
  json_object_set_new(params, "relation", json_string("trained_from"));
  json_object_set_new(params, "base", json_string(base));
  params_s = json_dumps(params, JSON_COMPACT | JSON_SORT_KEYS);
  json_decref(params);
  lk_registry_add_opts_t o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.base = base;
  o.operation = "train";
  /* trained_from the base model always (the library links a version to
   * its base for trained_from), and from the adapter training started
   * from when there is one; both edges carry the run. */
  const char *parents[1] = {parent};
  o.relation = LK_REL_TRAINED_FROM;
  o.params_json = params_s;
  if (parent) {
    o.parents = parents;
    o.n_parents = 1;
  }
  if (lk_registry_add_path(reg, NULL, out, &o, &dst)) rc = record_fail(ctx, out, registry);
  else if (parent) printf("registry: recorded %s (trained_from %s and base model %s)\n", dst, parent, base);
  else printf("registry: recorded %s (trained_from base model %s)\n", dst, base);
out:
  free(params_s);
  lk_free(base);
  lk_free(parent);
  lk_free(dst);
  lk_registry_close(reg);
  return rc;
}

int cli_registry_record_quantize(lk_context_t *ctx, const char *registry, const char *model, const char *out,
                                 const char *to, const char *keep, uint32_t block, uint32_t double_quant, int quiet) {
  if (!(registry = cli_registry_configured(registry))) return CLI_OK;
  lk_registry_t *reg = NULL;
  char *src = NULL, *name = NULL, *params_s = NULL;
  int rc = CLI_OK;
  /* The source first (reused when recorded already), then the output as a
   * model quantized_from it. */
  if (lk_registry_open(ctx, registry, NULL, &reg) || lk_registry_add_model(reg, NULL, model, NULL, &src)) {
    rc = record_fail(ctx, out, registry);
    goto out;
  }
  json_t *params = json_pack("{s:s, s:s, s:s?, s:i, s:b}", "from", src, "to", to, "keep", keep, "block", (json_int_t)block,
                             "double_quant", (int)double_quant);
  params_s = json_dumps(params, JSON_COMPACT | JSON_SORT_KEYS);
  json_decref(params);
  lk_registry_model_opts_t mo;
  memset(&mo, 0, sizeof mo);
  mo.struct_size = sizeof mo;
  mo.relation = LK_REL_QUANTIZED_FROM;
  mo.base = src;
  mo.params_json = params_s;
  mo.operation = "quantize";
  if (lk_registry_add_model(reg, NULL, out, &mo, &name)) rc = record_fail(ctx, out, registry);
  else fprintf(quiet ? stderr : stdout, "registry: recorded model %s (quantized_from %s)\n", name, src);
out:
  free(params_s);
  lk_free(src);
  lk_free(name);
  lk_registry_close(reg);
  return rc;
}
