/* cmd_plugins.c - `lorakit plugins [--json] [--path DIR]...`: one row per
 * plugin file with its kinds, components, versions and status (loaded, or
 * refused and why); --json adds every backend with its devices and the core
 * ops it supports (cmd_plugins_ops.c), the quantisers and the loaders. */
#include "cli.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char cli_plugins_usage[] =
    "usage: lorakit plugins [--json] [--path DIR_OR_FILE]...\n"
    "\n"
    "List every plugin file found: kind, component names, plugin version,\n"
    "ABI version and status (loaded, or refused and the reason).\n"
    "\n"
    "  --json        machine-readable output, with every backend's devices (memory,\n"
    "                limits, driver) and supported ops, the quantisers and loaders\n"
    "  --path P      also load plugins from folder P (or plugin file P)\n"
    "\n"
    "Exit status: 0 when listed (refused plugins included), 1 on failure.\n";

static json_t *plugin_json(const lk_context_t *ctx, uint32_t index, const lk_plugin_info_t *pi) {
  json_t *o = json_object(), *comps = json_array(), *kinds = json_array();
  char abi[32];
  snprintf(abi, sizeof abi, "%u.%u", LK_ABI_MAJOR_OF(pi->abi_version), LK_ABI_MINOR_OF(pi->abi_version));
  for (uint32_t c = 0; c < lk_component_count(ctx); c++) {
    lk_component_info_t ci = {sizeof ci, 0, NULL, NULL, 0, 0};
    if (lk_component_info(ctx, c, &ci) || ci.plugin_index != index) continue;
    json_array_append_new(comps, json_pack("{s:s, s:s, s:s}", "kind", cli_kind_name(ci.kind), "name",
                                           ci.name, "description", ci.description));
    int seen = 0;
    for (size_t k = 0; k < json_array_size(kinds); k++)
      if (!strcmp(json_string_value(json_array_get(kinds, k)), cli_kind_name(ci.kind))) seen = 1;
    if (!seen) json_array_append_new(kinds, json_string(cli_kind_name(ci.kind)));
  }
  json_object_set_new(o, "path", json_string(pi->path));
  json_object_set_new(o, "status", json_string(pi->status == LK_PLUGIN_LOADED ? "loaded" : "refused"));
  json_object_set_new(o, "id", pi->id ? json_string(pi->id) : json_null());
  json_object_set_new(o, "name", pi->name ? json_string(pi->name) : json_null());
  json_object_set_new(o, "version", pi->version ? json_string(pi->version) : json_null());
  json_object_set_new(o, "abi_version", pi->abi_version ? json_string(abi) : json_null());
  json_object_set_new(o, "kinds", kinds);
  json_object_set_new(o, "components", comps);
  json_object_set_new(o, "reason", json_string(pi->reason));
  return o;
}

/* The components of one kind, each name once (variants of a backend share
 * it; the best scored one is described). Backends carry their devices and
 * ops; quantisers and loaders their name, description and plugin. */
static json_t *components_json(lk_context_t *ctx, int32_t kind) {
  json_t *arr = json_array();
  for (uint32_t c = 0; c < lk_component_count(ctx); c++) {
    lk_component_info_t ci = {sizeof ci, 0, NULL, NULL, 0, 0};
    if (lk_component_info(ctx, c, &ci) || ci.kind != kind) continue;
    int seen = 0;
    for (size_t k = 0; k < json_array_size(arr) && !seen; k++)
      seen = !strcmp(json_string_value(json_object_get(json_array_get(arr, k), "name")), ci.name);
    if (seen) continue;
    lk_plugin_info_t pi;
    memset(&pi, 0, sizeof pi);
    pi.struct_size = sizeof pi;
    const char *plugin = lk_plugin_info(ctx, ci.plugin_index, &pi) == LK_OK && pi.id ? pi.id : "";
    json_t *o = kind == LK_KIND_BACKEND ? cli_backend_json(ctx, ci.name, ci.description)
                                        : json_pack("{s:s, s:s}", "name", ci.name, "description",
                                                    ci.description ? ci.description : "");
    json_object_set_new(o, "plugin", json_string(plugin));
    json_array_append_new(arr, o);
  }
  return arr;
}

static void print_row(const lk_context_t *ctx, uint32_t index, const lk_plugin_info_t *pi) {
  char comps[512] = "", abi[32] = "-";
  for (uint32_t c = 0; c < lk_component_count(ctx); c++) {
    lk_component_info_t ci = {sizeof ci, 0, NULL, NULL, 0, 0};
    if (lk_component_info(ctx, c, &ci) || ci.plugin_index != index) continue;
    size_t used = strlen(comps);
    snprintf(comps + used, sizeof comps - used, "%s%s:%s", used ? "," : "", cli_kind_name(ci.kind), ci.name);
  }
  if (pi->abi_version)
    snprintf(abi, sizeof abi, "%u.%u", LK_ABI_MAJOR_OF(pi->abi_version), LK_ABI_MINOR_OF(pi->abi_version));
  printf("%-8s %-5s %-8s %-28s %s\n", pi->status == LK_PLUGIN_LOADED ? "loaded" : "refused", abi,
         pi->version ? pi->version : "-", comps[0] ? comps : "-", pi->path);
  if (pi->status != LK_PLUGIN_LOADED) printf("         reason: %s\n", pi->reason);
}

int cli_plugins(int argc, char **argv) {
  int as_json = 0;
  lk_context_t *ctx = NULL;
  lk_status st = lk_context_create(NULL, &ctx);
  if (st) return cli_error(CLI_FAILED, "cannot create a context: %s", lk_strerror(st));
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--json")) {
      as_json = 1;
    } else if (!strcmp(argv[i], "--path") && i + 1 < argc) {
      const char *p = argv[++i];
      size_t n = strlen(p);
      if (n > 3 && !strcmp(p + n - 3, ".so"))
        (void)lk_plugin_load(ctx, p); /* a refusal is listed, not fatal */
      else if (lk_plugin_load_dir(ctx, p) == LK_ERR_NOT_FOUND) {
        int rc = cli_error(CLI_FAILED, "%s", lk_last_error(ctx));
        lk_context_free(ctx);
        return rc;
      }
    } else {
      lk_context_free(ctx);
      return cli_error(CLI_USAGE, "plugins: unknown argument '%s' (see lorakit plugins --help)", argv[i]);
    }
  }
  uint32_t n = lk_plugin_count(ctx);
  if (as_json) {
    json_t *root = json_object(), *arr = json_array();
    for (uint32_t i = 0; i < n; i++) {
      lk_plugin_info_t pi;
      memset(&pi, 0, sizeof pi);
      pi.struct_size = sizeof pi;
      if (!lk_plugin_info(ctx, i, &pi)) json_array_append_new(arr, plugin_json(ctx, i, &pi));
    }
    json_object_set_new(root, "lorakit_version", json_string(lk_version_string()));
    json_object_set_new(root, "plugins", arr);
    json_object_set_new(root, "backends", components_json(ctx, LK_KIND_BACKEND));
    json_object_set_new(root, "quantisers", components_json(ctx, LK_KIND_QUANTISER));
    json_object_set_new(root, "loaders", components_json(ctx, LK_KIND_LOADER));
    char *s = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (s) puts(s);
    free(s);
    json_decref(root);
  } else {
    printf("%-8s %-5s %-8s %-28s %s\n", "STATUS", "ABI", "VERSION", "COMPONENTS", "FILE");
    for (uint32_t i = 0; i < n; i++) {
      lk_plugin_info_t pi;
      memset(&pi, 0, sizeof pi);
      pi.struct_size = sizeof pi;
      if (!lk_plugin_info(ctx, i, &pi)) print_row(ctx, i, &pi);
    }
    if (!n) printf("(no plugin files found)\n");
  }
  lk_context_free(ctx);
  return CLI_OK;
}
