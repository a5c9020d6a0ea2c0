/* cmd_model.c - model and adapter file commands (inspect: cmd_inspect.c):
 *   lorakit convert IN -o OUT --format F [--outtype T] [--base MODEL]
 *   lorakit merge   MODEL --adapter A [--scale s] -o OUT
 *   lorakit unmerge MODEL --adapter A [--scale s] -o OUT
 */
#include "cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char cli_convert_usage[] =
    "usage: lorakit convert IN -o OUT --format safetensors|hf|gguf|peft|gguf-lora\n"
    "                       [--outtype f32|f16|bf16] [--base MODEL] [--registry PATH]\n"
    "                       [--force] [--no-tokenizer]\n"
    "\n"
    "Convert a model or an adapter. Tensor names and the Q/K row order are those\n"
    "llama.cpp's converters write. --outtype converts float tensors (for gguf, 1-D\n"
    "tensors stay f32 as llama.cpp keeps them); the default keeps the source types.\n"
    "For adapters it sets lora_A/lora_B's type (default f32; DoRA magnitudes stay f32).\n"
    "--base names the base model an adapter belongs to: needed to read or write a\n"
    "GGUF LoRA adapter (its Q/K rows follow the base's head layout); the adapter is\n"
    "checked against it (every target's shape) and refused when it does not fit.\n"
    "An existing OUT is refused unless --force (then replaced whole); OUT may not be\n"
    "or lie inside IN or --base. A GGUF model from an input with no tokenizer\n"
    "lorakit can carry is refused (llama.cpp cannot run it) unless --no-tokenizer.\n"
    "With --registry PATH (or LORAKIT_REGISTRY set), a converted adapter is recorded\n"
    "in that registry as a new version, `imported` from the (recorded) input.\n";

const char cli_merge_usage[] =
    "usage: lorakit merge MODEL --adapter A [--scale s] -o OUT [--registry PATH] [--force]\n"
    "                     [--backend NAME[:DEV]]\n"
    "\n"
    "Merge adapter A into MODEL: W += scale * s * B A for every target, written in\n"
    "the format of MODEL (an HF folder gives an HF folder, its tokenizer and other\n"
    "non-weight files carried). scale defaults to 1. An existing OUT is refused\n"
    "unless --force (then replaced whole); OUT may not be or lie inside an input.\n"
    "With --registry PATH (or LORAKIT_REGISTRY set), OUT is recorded there as a\n"
    "base model `merged_from` the adapter's version and MODEL.\n"
    "Into a quantised base (e.g. a q8_0 GGUF) each target weight is dequantised,\n"
    "merged and requantised to its own format; the error requantisation added\n"
    "(RMSE, max abs, SNR against the exact merged weight) is printed per target.\n"
    "--backend NAME[:DEV] runs W += s B A on that backend plugin and device\n"
    "(default: the best available; lorakit plugins lists them).\n";

const char cli_unmerge_usage[] =
    "usage: lorakit unmerge MODEL --adapter A [--scale s] -o OUT [--registry PATH] [--force]\n"
    "                       [--backend NAME[:DEV]]\n"
    "\n"
    "Undo a merge: W -= scale * s * B A for every target of A.\n";

static lk_context_t *open_ctx(void) {
  lk_context_t *ctx = NULL;
  lk_status st = lk_context_create(NULL, &ctx);
  if (st) cli_error(CLI_FAILED, "cannot create a context: %s", lk_strerror(st));
  return ctx;
}

static int fail_ctx(lk_context_t *ctx) { return cli_error(CLI_FAILED, "%s", lk_last_error(ctx)); }

/* ---- convert, merge, unmerge: argument parsing around lk_model_convert/merge ---- */

static int32_t parse_outtype(const char *s) {
  if (!s) return LK_DTYPE_INVALID;
  if (!strcmp(s, "f32")) return LK_DTYPE_F32;
  if (!strcmp(s, "f16")) return LK_DTYPE_F16;
  if (!strcmp(s, "bf16")) return LK_DTYPE_BF16;
  return -1;
}

int cli_convert(int argc, char **argv) {
  const char *in = NULL, *out = NULL, *format = NULL, *outtype_s = NULL, *base = NULL, *registry = NULL;
  uint32_t force = 0, no_tokenizer = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-o") && i + 1 < argc) out = argv[++i];
    else if (!strcmp(argv[i], "--force")) force = 1;
    else if (!strcmp(argv[i], "--no-tokenizer")) no_tokenizer = 1;
    else if (!strcmp(argv[i], "--registry") && i + 1 < argc) registry = argv[++i];
    else if (!strcmp(argv[i], "--format") && i + 1 < argc) format = argv[++i];
    else if (!strcmp(argv[i], "--outtype") && i + 1 < argc) outtype_s = argv[++i];
    else if (!strcmp(argv[i], "--base") && i + 1 < argc) base = argv[++i];
    else if (argv[i][0] != '-' && !in) in = argv[i];
    else return cli_error(CLI_USAGE, "convert: unexpected argument '%s' (see lorakit convert --help)", argv[i]);
  }
  if (!in || !out || !format) return cli_error(CLI_USAGE, "convert: IN, -o OUT and --format are required");
  int32_t outtype = parse_outtype(outtype_s);
  if (outtype < 0) return cli_error(CLI_USAGE, "convert: --outtype must be f32, f16 or bf16, not '%s'", outtype_s);
  if (!strcmp(format, "gguf-lora") && !base)
    return cli_error(CLI_USAGE, "convert %s: --format gguf-lora needs --base MODEL (a GGUF LoRA stores the Q/K rows "
                                "in the base's head layout and names its architecture)", in);
  lk_context_t *ctx = open_ctx();
  if (!ctx) return CLI_FAILED;
  /* the library holds the rules: an existing OUT is replaced only with --force */
  lk_convert_opts_t opts = {sizeof opts, outtype, format, base, force, 0, no_tokenizer, 0};
  char *tmpdir = NULL;
  const char *src = in; /* a registry REF is exported to a temporary folder first */
  int rc = cli_registry_adapter_path(ctx, registry, in, &src, &tmpdir) ? fail_ctx(ctx) : CLI_OK;
  if (rc == CLI_OK && lk_model_convert(ctx, src, out, &opts)) rc = fail_ctx(ctx);
  cli_registry_tmp_free(tmpdir);
  cli_escape_output = isatty(1);
  if (rc == CLI_OK) printf("wrote %s (%s)\n", cli_esc(out), cli_esc(format));
  if (rc == CLI_OK && (!strcmp(format, "peft") || !strcmp(format, "gguf-lora")))
    rc = cli_registry_record_convert(ctx, registry, in, out, format, base);
  lk_context_free(ctx);
  return rc;
}

/* Merging into a quantised base: each target's weight is requantised. */
static void merge_report(void *user, const lk_quant_report_t *r) {
  (void)user;
  cli_escape_output = isatty(1);
  char snr[32];
  if (isfinite(r->snr_db)) snprintf(snr, sizeof snr, "%.2f dB", r->snr_db);
  else snprintf(snr, sizeof snr, "exact");
  printf("requantised %s%s%s: rmse %.4e, max abs %.4e, snr %s (against the exact merged weight)\n",
         r->name ? cli_esc(r->name) : "all targets", r->to ? " to " : "", r->to ? r->to : "", r->rmse, r->max_abs,
         snr);
}

static int merge_cmd(int argc, char **argv, int undo) {
  const char *model = NULL, *adapter = NULL, *out = NULL, *registry = NULL;
  double scale = 1.0;
  uint32_t force = 0, device = 0;
  const char *backend = NULL;
  const char *cmd = undo ? "unmerge" : "merge";
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-o") && i + 1 < argc) out = argv[++i];
    else if (!strcmp(argv[i], "--force")) force = 1;
    else if (!strcmp(argv[i], "--adapter") && i + 1 < argc) adapter = argv[++i];
    else if (!strcmp(argv[i], "--registry") && i + 1 < argc) registry = argv[++i];
    else if (!strcmp(argv[i], "--backend") && i + 1 < argc) {
      int rc = cli_backend_arg(argv[++i], &backend, &device);
      if (rc) return rc;
    } else if (!strcmp(argv[i], "--scale") && i + 1 < argc) {
      char *end;
      const char *v = argv[++i];
      scale = strtod(v, &end);
      /* strtod takes "" as 0 and "inf"/"nan" as numbers: none is a scale */
      if (!v[0] || *end || !isfinite(scale))
        return cli_error(CLI_USAGE, "%s: --scale needs a finite number, not '%s'", cmd, v);
    } else if (argv[i][0] != '-' && !model) model = argv[i];
    else return cli_error(CLI_USAGE, "%s: unexpected argument '%s' (see lorakit %s --help)", cmd, argv[i], cmd);
  }
  if (!model || !adapter || !out) return cli_error(CLI_USAGE, "%s: MODEL, --adapter A and -o OUT are required", cmd);
  if (scale == 0) /* lk_merge_opts_t reads a scale of 0 as 1 */
    return cli_error(CLI_USAGE, "%s: --scale 0 would leave the model unchanged", cmd);
  lk_context_t *ctx = open_ctx();
  if (!ctx) return CLI_FAILED;
  /* the best backend; OUT replaced with --force; a quantised base's
   * requantised targets print the error requantisation added */
  lk_merge_opts_t opts = {sizeof opts, (float)scale, backend, device, force, merge_report, NULL};
  char *tmpdir = NULL;
  const char *src = adapter; /* a registry REF is exported to a temporary folder first */
  lk_status st = cli_registry_adapter_path(ctx, registry, adapter, &src, &tmpdir);
  if (!st) st = undo ? lk_model_unmerge(ctx, model, src, out, &opts) : lk_model_merge(ctx, model, src, out, &opts);
  int rc = st ? fail_ctx(ctx) : CLI_OK;
  if (rc == CLI_OK) {
    /* the count printed is the adapter's targets, every one of which was applied */
    lk_adapter_t *ad = NULL;
    lk_model_t *m = NULL;
    uint32_t nt = 0;
    if (!lk_model_open(ctx, out, NULL, &m) && !lk_adapter_load(ctx, src, NULL, lk_model_metadata_json(m), &ad))
      nt = lk_adapter_target_count(ad);
    cli_escape_output = isatty(1);
    printf("%sd %u targets of %s into %s (%s)\n", cmd, nt, cli_esc(adapter), cli_esc(out), m ? lk_model_loader(m) : "?");
    lk_adapter_free(ad);
    lk_model_close(m);
    rc = cli_registry_record_merge(ctx, registry, model, adapter, out, scale, undo);
  }
  cli_registry_tmp_free(tmpdir);
  lk_context_free(ctx);
  return rc;
}

int cli_merge(int argc, char **argv) { return merge_cmd(argc, argv, 0); }
int cli_unmerge(int argc, char **argv) { return merge_cmd(argc, argv, 1); }
