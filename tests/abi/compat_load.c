/* compat_load.c PLUGIN.so - DESIGN.md section 3, rule 12: a plugin built
 * against old plugin headers loads in this core. Built with the current
 * headers (the host side), it loads PLUGIN.so explicitly and checks that it
 * is listed loaded, at the plugin's own ABI (the lower minor wins), with its
 * one quantiser, skel_q8_f32. Exit 0 when all holds. */
#include <lorakit.h>

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: compat_load PLUGIN.so BUILT_FOR_MINOR\n");
    return 2;
  }
  int rc = 1;
  unsigned built_minor = 0;
  sscanf(argv[2], "%u", &built_minor);
  lk_context_opts_t opts = {sizeof opts, 1, 1, 0};
  lk_context_t *ctx = NULL;
  if (lk_context_create(&opts, &ctx) != LK_OK) {
    fprintf(stderr, "compat: lk_context_create failed\n");
    return 1;
  }
  lk_status st = lk_plugin_load(ctx, argv[1]);
  lk_plugin_info_t pi;
  memset(&pi, 0, sizeof pi);
  pi.struct_size = sizeof pi;
  if (lk_plugin_count(ctx) != 1 || lk_plugin_info(ctx, 0, &pi) != LK_OK) {
    fprintf(stderr, "compat: %s not listed (load status %d: %s)\n", argv[1], st, lk_last_error(ctx));
    goto done;
  }
  if (st != LK_OK || pi.status != LK_PLUGIN_LOADED) {
    fprintf(stderr, "compat: %s refused: %s\n", argv[1], pi.reason ? pi.reason : lk_last_error(ctx));
    goto done;
  }
  uint32_t host = lk_plugin_abi_version();
  uint32_t want = LK_MAKE_ABI(2, built_minor < LK_ABI_MINOR_OF(host) ? built_minor : LK_ABI_MINOR_OF(host));
  if (pi.abi_version != want) {
    fprintf(stderr, "compat: negotiated ABI %u.%u, expected %u.%u\n", LK_ABI_MAJOR_OF(pi.abi_version),
            LK_ABI_MINOR_OF(pi.abi_version), LK_ABI_MAJOR_OF(want), LK_ABI_MINOR_OF(want));
    goto done;
  }
  lk_component_info_t ci;
  memset(&ci, 0, sizeof ci);
  ci.struct_size = sizeof ci;
  if (lk_component_count(ctx) != 1 || lk_component_info(ctx, 0, &ci) != LK_OK ||
      ci.kind != LK_KIND_QUANTISER || strcmp(ci.name, "skel_q8_f32") != 0) {
    fprintf(stderr, "compat: expected one quantiser skel_q8_f32 (%u components)\n",
            lk_component_count(ctx));
    goto done;
  }
  printf("compat: %s (plugin %s %s, built for plugin ABI 2.%u) loads in lorakit %s (plugin ABI %u.%u): "
         "negotiated %u.%u, quantiser %s\n",
         argv[1], pi.id, pi.version, built_minor, lk_version_string(), LK_ABI_MAJOR_OF(host),
         LK_ABI_MINOR_OF(host), LK_ABI_MAJOR_OF(pi.abi_version), LK_ABI_MINOR_OF(pi.abi_version),
         ci.name);
  rc = 0;
done:
  lk_context_free(ctx);
  return rc;
}
