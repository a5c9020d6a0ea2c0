/* cmd_inspect.c - lorakit inspect PATH [--json] [--verbose] [--base MODEL]:
 * what a user asks of a file first (an adapter's kind, rank, alpha, scaling
 * and targets; a model's architecture, sizes, dtype mix), then the tensor
 * table; the raw config only with --verbose or --json. Text that came from
 * the file is escaped on a terminal (cli_esc). */
#include "cli.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char cli_inspect_usage[] =
    "usage: lorakit inspect PATH [--json] [--verbose] [--base MODEL] [--loader NAME]\n"
    "\n"
    "Show a model or adapter (HF folder, safetensors, GGUF, PEFT folder, GGUF LoRA).\n"
    "An adapter: its kind (LoRA, rsLoRA, DoRA), rank and alpha (per target where\n"
    "they differ), the scaling rule and its value, the target modules, and the\n"
    "trainable parameters (with --base MODEL, also their share of the base's).\n"
    "A model: architecture, layers, hidden size, heads and KV heads, vocabulary,\n"
    "context, the mix of tensor types. Then every tensor (name, type, shape,\n"
    "bytes) and the totals. --verbose adds the raw config; --json prints it all\n"
    "as JSON.\n";

static uint64_t numel_of(const lk_tensor_info_t *ti) {
  uint64_t n = 1;
  for (uint32_t i = 0; i < ti->ndim; i++) n *= (uint64_t)ti->shape[i];
  return n;
}

static const char *type_of(const lk_tensor_info_t *ti) {
  return ti->dtype == LK_DTYPE_QUANT && ti->qformat ? ti->qformat : lk_dtype_name(ti->dtype);
}

static void shape_str(const lk_tensor_info_t *ti, char *buf, size_t n) {
  size_t used = (size_t)snprintf(buf, n, "[");
  for (uint32_t i = 0; i < ti->ndim && used < n; i++)
    used += (size_t)snprintf(buf + used, n - used, "%s%lld", i ? ", " : "", (long long)ti->shape[i]);
  if (used < n) snprintf(buf + used, n - used, "]");
}

/* Architecture from a metadata object: config.model_type, else GGUF's. */
static const char *arch_of(json_t *meta) {
  json_t *cfg = json_object_get(meta, "config");
  const char *a = json_string_value(json_object_get(cfg, "model_type"));
  if (!a) a = json_string_value(json_object_get(json_object_get(json_object_get(meta, "gguf"), "kv"),
                                                "general.architecture"));
  if (!a) a = json_string_value(json_object_get(json_object_get(meta, "base_config"), "model_type"));
  return a ? a : "unknown";
}

/* Parameters of the model at path (for an adapter's share); 0 when it cannot be opened. */
static uint64_t model_params(lk_context_t *ctx, const char *path) {
  lk_model_t *m = NULL;
  uint64_t n = 0;
  if (lk_model_open(ctx, path, NULL, &m)) return 0;
  for (int64_t i = 0; i < lk_model_tensor_count(m); i++) {
    lk_tensor_info_t ti;
    if (!lk_model_tensor_info(m, i, &ti)) n += numel_of(&ti);
  }
  lk_model_close(m);
  return n;
}

/* The leaf of a module name ("q_proj" of "model.layers.0.self_attn.q_proj"). */
static const char *leaf_of(const char *name) {
  const char *d = strrchr(name, '.');
  return d ? d + 1 : name;
}

/* "LoRA" or "DoRA" as lk_adapter_header says for an adapter that loads
 * (with its own metadata as the base config, as the summary does); a GGUF
 * LoRA that needs its base is plain LoRA by format. NULL otherwise. */
static const char *adapter_kind(lk_context_t *ctx, const char *path, const char *loader, lk_model_t *m) {
  lk_adapter_t *ad = NULL;
  lk_adapter_header_t h;
  memset(&h, 0, sizeof h);
  h.struct_size = sizeof h;
  const char *kind = NULL;
  if (!lk_adapter_load(ctx, path, loader, lk_model_metadata_json(m), &ad) && !lk_adapter_header(ad, &h))
    kind = h.kind == LK_ADAPTER_DORA ? "DoRA" : "LoRA";
  else if (!strcmp(lk_model_loader(m), "gguf-lora"))
    kind = "LoRA";
  lk_adapter_free(ad);
  return kind;
}

/* An adapter's summary; 0 when path does not load as one (then only the table is shown). */
static int adapter_summary(lk_context_t *ctx, const char *path, const char *loader, lk_model_t *m, json_t *meta,
                           const char *base) {
  lk_adapter_t *ad = NULL;
  const char *bcfg = NULL;
  lk_model_t *bm = NULL;
  if (base && !lk_model_open(ctx, base, NULL, &bm)) bcfg = lk_model_metadata_json(bm);
  if (lk_adapter_load(ctx, path, loader, bcfg ? bcfg : lk_model_metadata_json(m), &ad)) {
    lk_model_close(bm);
    json_t *ac = json_object_get(meta, "adapter_config");
    if (json_is_true(json_object_get(ac, "use_dora"))) printf("kind:         DoRA (the adapter did not load: see --json)\n");
    return 0;
  }
  lk_model_close(bm);
  lk_adapter_header_t h;
  memset(&h, 0, sizeof h);
  h.struct_size = sizeof h;
  lk_adapter_header(ad, &h);
  int rs = h.scaling == LK_SCALING_RSLORA;
  printf("kind:         %s\n", h.kind == LK_ADAPTER_DORA ? "DoRA" : rs ? "rsLoRA" : "LoRA");
  printf("rank:         %u\nalpha:        %g\n", h.rank, (double)h.alpha);
  printf("scaling:      %s = %g\n", rs ? "alpha / sqrt(r)" : "alpha / r",
         rs ? (double)h.alpha / sqrt((double)h.rank) : (double)h.alpha / h.rank);
  if (h.base_model) printf("base model:   %s\n", cli_esc(h.base_model));
  /* the module leaves in the order met, and the targets whose rank or alpha differ */
  json_t *leaves = json_array(); /* distinct leaves, in the order met */
  uint64_t trainable = 0;
  uint32_t n = lk_adapter_target_count(ad), differ = 0;
  for (uint32_t i = 0; i < n; i++) {
    lk_target_info_t ti = {sizeof ti, 0, NULL, 0, 0, 0, 0};
    lk_adapter_target_info(ad, i, &ti);
    trainable += (uint64_t)ti.rank * (uint64_t)(ti.in_features + ti.out_features);
    differ += ti.rank != h.rank || ti.alpha != h.alpha;
    int seen = 0;
    for (size_t k = 0; k < json_array_size(leaves) && !seen; k++)
      seen = !strcmp(json_string_value(json_array_get(leaves, k)), leaf_of(ti.name));
    if (!seen) json_array_append_new(leaves, json_string_nocheck(leaf_of(ti.name)));
  }
  printf("targets:      %u (", n);
  for (size_t k = 0; k < json_array_size(leaves); k++)
    printf("%s%s", k ? ", " : "", cli_esc(json_string_value(json_array_get(leaves, k))));
  printf(")\n");
  json_decref(leaves);
  if (differ) {
    printf("per target:   %u differ from the defaults:\n", differ);
    for (uint32_t i = 0; i < n; i++) {
      lk_target_info_t ti = {sizeof ti, 0, NULL, 0, 0, 0, 0};
      lk_adapter_target_info(ad, i, &ti);
      if (ti.rank != h.rank || ti.alpha != h.alpha)
        printf("  %-50s rank %u, alpha %g, scale %g\n", cli_esc(ti.name), ti.rank, (double)ti.alpha, (double)ti.scale);
    }
  }
  uint64_t bp = base ? model_params(ctx, base) : 0;
  printf("trainable:    %llu parameters", (unsigned long long)trainable);
  if (bp) printf(" (%.4f%% of the base's %llu)", 100.0 * (double)trainable / (double)bp, (unsigned long long)bp);
  printf("\n");
  lk_adapter_free(ad);
  return 1;
}

static void model_summary(json_t *meta) {
  json_t *c = json_object_get(meta, "config");
  static const char *const rows[][2] = {
      {"layers:       ", "num_hidden_layers"},       {"hidden size:  ", "hidden_size"},
      {"heads:        ", "num_attention_heads"},     {"KV heads:     ", "num_key_value_heads"},
      {"vocabulary:   ", "vocab_size"},              {"context:      ", "max_position_embeddings"},
  };
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    json_t *v = json_object_get(c, rows[i][1]);
    if (json_is_integer(v)) printf("%s%lld\n", rows[i][0], (long long)json_integer_value(v));
  }
}

int cli_inspect(int argc, char **argv) {
  const char *path = NULL, *loader = NULL, *base = NULL;
  int as_json = 0, verbose = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--json")) as_json = 1;
    else if (!strcmp(argv[i], "--verbose") || !strcmp(argv[i], "-v")) verbose = 1;
    else if (!strcmp(argv[i], "--loader") && i + 1 < argc) loader = argv[++i];
    else if (!strcmp(argv[i], "--base") && i + 1 < argc) base = argv[++i];
    else if (argv[i][0] != '-' && !path) path = argv[i];
    else return cli_error(CLI_USAGE, "inspect: unexpected argument '%s' (see lorakit inspect --help)", argv[i]);
  }
  if (!path) return cli_error(CLI_USAGE, "inspect: PATH is required");
  cli_escape_output = !as_json && isatty(1);
  lk_context_t *ctx = NULL;
  lk_status st = lk_context_create(NULL, &ctx);
  if (st) return cli_error(CLI_FAILED, "cannot create a context: %s", lk_strerror(st));
  lk_model_t *m = NULL;
  if (lk_model_open(ctx, path, loader, &m)) {
    int rc = cli_error(CLI_FAILED, "%s", lk_last_error(ctx));
    lk_context_free(ctx);
    return rc;
  }
  json_error_t jerr;
  json_t *meta = json_loads(lk_model_metadata_json(m), 0, &jerr);
  if (!meta) meta = json_object();
  int64_t n = lk_model_tensor_count(m);
  uint64_t params = 0, bytes = 0;
  json_t *tensors = json_array(), *mix = json_object();
  int rc = CLI_OK;
  for (int64_t i = 0; i < n && rc == CLI_OK; i++) { /* totals and the type mix first: the summary shows them */
    lk_tensor_info_t ti;
    if (lk_model_tensor_info(m, i, &ti)) {
      rc = cli_error(CLI_FAILED, "%s", lk_last_error(ctx));
      break;
    }
    params += numel_of(&ti);
    bytes += ti.nbytes;
    json_t *k = json_object_get(mix, type_of(&ti));
    json_object_set_new(mix, type_of(&ti), json_integer(k ? json_integer_value(k) + 1 : 1));
  }
  int is_adapter = json_object_get(meta, "adapter_config") || !strcmp(lk_model_loader(m), "gguf-lora");
  if (rc == CLI_OK && !as_json) {
    printf("path:         %s\nformat:       %s\n", cli_esc(path), lk_model_loader(m));
    if (!is_adapter || !adapter_summary(ctx, path, loader, m, meta, base)) {
      printf("architecture: %s\n", cli_esc(arch_of(meta)));
      model_summary(meta);
    }
    printf("types:        ");
    const char *k;
    json_t *v;
    int first = 1;
    json_object_foreach(mix, k, v) {
      printf("%s%s x%lld", first ? "" : ", ", cli_esc(k), (long long)json_integer_value(v));
      first = 0;
    }
    printf("\nsize:         %llu parameters, %llu bytes\n", (unsigned long long)params, (unsigned long long)bytes);
    json_t *cfg = json_object_get(meta, "config");
    if (!cfg) cfg = json_object_get(meta, "adapter_config");
    if (cfg && verbose) {
      char *s = json_dumps(cfg, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(16));
      printf("config:       %s\n", s ? cli_esc(s) : "{}");
      free(s);
    }
    printf("\n%-56s %-8s %-20s %12s\n", "TENSOR", "TYPE", "SHAPE", "BYTES");
  }
  for (int64_t i = 0; i < n && rc == CLI_OK; i++) {
    lk_tensor_info_t ti;
    if (lk_model_tensor_info(m, i, &ti)) {
      rc = cli_error(CLI_FAILED, "%s", lk_last_error(ctx));
      break;
    }
    char shape[128];
    shape_str(&ti, shape, sizeof shape);
    if (as_json) {
      json_t *dims = json_array();
      for (uint32_t d = 0; d < ti.ndim; d++) json_array_append_new(dims, json_integer(ti.shape[d]));
      json_array_append_new(tensors, json_pack("{s:s, s:s, s:o, s:I}", "name", ti.name, "type", type_of(&ti),
                                               "shape", dims, "bytes", (json_int_t)ti.nbytes));
    } else {
      printf("%-56s %-8s %-20s %12llu\n", cli_esc(ti.name), cli_esc(type_of(&ti)), shape,
             (unsigned long long)ti.nbytes);
    }
  }
  if (rc == CLI_OK) {
    if (as_json) {
      json_t *root = json_pack("{s:s, s:s, s:s, s:O, s:o, s:I, s:I, s:I, s:O}", "path", path, "format",
                               lk_model_loader(m), "architecture", arch_of(meta), "metadata", meta, "tensors",
                               tensors, "n_tensors", (json_int_t)n, "parameters", (json_int_t)params, "bytes",
                               (json_int_t)bytes, "types", mix);
      tensors = NULL;
      const char *kind = is_adapter ? adapter_kind(ctx, path, loader, m) : NULL;
      if (kind) json_object_set_new(root, "adapter_kind", json_string(kind));
      char *s = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(16));
      if (s) puts(s);
      free(s);
      json_decref(root);
    } else {
      printf("\n%lld tensors, %llu parameters, %llu bytes\n", (long long)n, (unsigned long long)params,
             (unsigned long long)bytes);
    }
  }
  json_decref(mix);
  json_decref(tensors);
  json_decref(meta);
  lk_model_close(m);
  lk_context_free(ctx);
  return rc;
}
