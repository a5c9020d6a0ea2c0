/* cmd_quantize.c - lorakit quantize MODEL --to FORMAT -o OUT: argument
 * parsing and the per-tensor table (or JSON) around lk_model_quantize; the
 * rules (which tensor gets which type) live in core/model_quant.c. */
#include "cli.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char cli_quantize_usage[] =
    "usage: lorakit quantize MODEL --to FORMAT -o OUT [--keep PATTERN] [--block N]\n"
    "                        [--double-quant] [--force] [--json] [--dry-run]\n"
    "                        [--registry PATH]\n"
    "\n"
    "Quantise a model (GGUF file, HF folder, safetensors file) into OUT, in the\n"
    "input's format. FORMAT (lower case) is a llama-quantize file type: q4_0 q4_1\n"
    "q5_0 q5_1 q8_0 q2_k q3_k_s q3_k_m q3_k_l q4_k_s q4_k_m q5_k_s q5_k_m q6_k\n"
    "(q3_k, q4_k and q5_k mean the _m mixes, as in llama-quantize), f16, bf16, f32;\n"
    "or a lorakit format put on every 2-D weight: int8 int16 nf4 fp4.\n"
    "Each tensor's type follows llama-quantize: 1-D tensors (norms) are kept,\n"
    "output.weight gets q6_k for the block types (q8_0 stays q8_0), the _m mixes\n"
    "give some attn_v and ffn_down layers q6_k, and a K type whose 256-element\n"
    "blocks do not divide a row falls back (q4_k -> q5_0, q6_k -> q8_0, ...). So\n"
    "a GGUF written here holds the tensor data llama-quantize writes.\n"
    "--keep PATTERN leaves tensors whose canonical name (as `lorakit inspect`\n"
    "shows it, e.g. model.layers.*.mlp.down_proj.weight) or, for llama-family\n"
    "tensors, llama.cpp name (blk.*.ffn_down.weight, output.weight) matches the\n"
    "shell glob PATTERN as they are; several globs are separated by commas.\n"
    "--block N and --double-quant set nf4/fp4 (and int8/int16) options.\n"
    "Printed per tensor and in total: the error of the written values against\n"
    "the source (RMSE, max abs, SNR in dB = 10 log10(sum w^2 / sum (w - w')^2))\n"
    "and the size before and after. --json prints one JSON object instead.\n"
    "--dry-run prints each tensor's type and size and writes nothing (no -o).\n"
    "An existing OUT is refused unless --force (then replaced whole).\n"
    "With --registry PATH (or LORAKIT_REGISTRY set), OUT is recorded there as a\n"
    "base model quantized_from MODEL (recorded too), with FORMAT and the options.\n";

typedef struct q_out {
  int json, header; /* header: the table's header was printed */
  json_t *rows;
  json_t *total;
} q_out;

static json_t *q_num(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static void q_report(void *user, const lk_quant_report_t *r) {
  q_out *o = user;
  if (o->json) {
    json_t *j = json_object();
    if (r->name) {
      json_object_set_new(j, "name", json_string(r->name));
      json_object_set_new(j, "from", json_string(r->from));
      json_object_set_new(j, "to", json_string(r->to));
      json_object_set_new(j, "kept", json_boolean(r->kept));
    }
    json_object_set_new(j, "numel", json_integer(r->numel));
    json_object_set_new(j, "bytes_before", json_integer((json_int_t)r->bytes_before));
    json_object_set_new(j, "bytes_after", json_integer((json_int_t)r->bytes_after));
    json_object_set_new(j, "rmse", q_num(r->rmse)); /* null: not computed (--dry-run) */
    json_object_set_new(j, "max_abs", q_num(r->max_abs));
    json_object_set_new(j, "snr_db", q_num(r->snr_db)); /* null: exact (or not computed) */
    if (r->name) json_array_append_new(o->rows, j);
    else {
      json_decref(o->total);
      o->total = j;
    }
    return;
  }
  if (!o->header++)
    printf("%-48s %-14s %12s %12s %8s %10s    %10s\n", "tensor", "type", "rmse", "max_abs", "snr_db", "bytes", "after");
  char snr[32];
  if (isfinite(r->snr_db)) snprintf(snr, sizeof snr, "%8.2f", r->snr_db);
  else snprintf(snr, sizeof snr, "%8s", isnan(r->snr_db) ? "-" : "exact");
  char rmse[32], mx[32]; /* "-": not computed (--dry-run) */
  snprintf(rmse, sizeof rmse, "%12.4e", r->rmse);
  snprintf(mx, sizeof mx, "%12.4e", r->max_abs);
  if (isnan(r->rmse)) snprintf(rmse, sizeof rmse, "%12s", "-");
  if (isnan(r->max_abs)) snprintf(mx, sizeof mx, "%12s", "-");
  if (r->name)
    printf("%-48s %-5s -> %-5s %s %s %s %10llu -> %10llu%s\n", cli_esc(r->name), r->from, r->to, rmse, mx, snr,
           (unsigned long long)r->bytes_before, (unsigned long long)r->bytes_after, r->kept ? "  (kept)" : "");
  else
    printf("%-48s %-14s %s %s %s %10llu -> %10llu (%.1f%%)\n", "total", "", rmse, mx, snr,
           (unsigned long long)r->bytes_before, (unsigned long long)r->bytes_after,
           r->bytes_before ? 100.0 * (double)r->bytes_after / (double)r->bytes_before : 0.0);
}

int cli_quantize(int argc, char **argv) {
  const char *in = NULL, *out = NULL, *to = NULL, *keep = NULL, *registry = NULL;
  uint32_t force = 0, dq = 0, block = 0, dry = 0;
  q_out o = {0, 0, NULL, NULL};
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-o") && i + 1 < argc) out = argv[++i];
    else if (!strcmp(argv[i], "--to") && i + 1 < argc) to = argv[++i];
    else if (!strcmp(argv[i], "--keep") && i + 1 < argc) keep = argv[++i];
    else if (!strcmp(argv[i], "--registry") && i + 1 < argc) registry = argv[++i];
    else if (!strcmp(argv[i], "--force")) force = 1;
    else if (!strcmp(argv[i], "--double-quant")) dq = 1;
    else if (!strcmp(argv[i], "--json")) o.json = 1;
    else if (!strcmp(argv[i], "--dry-run")) dry = 1;
    else if (!strcmp(argv[i], "--block") && i + 1 < argc) {
      char *end;
      const char *v = argv[++i];
      unsigned long b = strtoul(v, &end, 10);
      if (!v[0] || *end || v[0] == '-' || b == 0 || b > 1u << 20)
        return cli_error(CLI_USAGE, "quantize: --block needs a positive block size, not '%s'", v);
      block = (uint32_t)b;
    } else if (argv[i][0] != '-' && !in) in = argv[i];
    else return cli_error(CLI_USAGE, "quantize: unexpected argument '%s' (see lorakit quantize --help)", argv[i]);
  }
  if (!in || (!out && !dry) || !to)
    return cli_error(CLI_USAGE, "quantize: MODEL, --to FORMAT and -o OUT (or --dry-run) are required");
  lk_context_t *ctx = NULL;
  lk_status st = lk_context_create(NULL, &ctx);
  if (st) return cli_error(CLI_FAILED, "cannot create a context: %s", lk_strerror(st));
  cli_escape_output = isatty(1) && !o.json;
  if (o.json) o.rows = json_array();
  lk_quantize_opts_t opts = {sizeof opts, force, to, keep, block, dq, dry, 0, q_report, &o};
  st = lk_model_quantize(ctx, in, out, &opts);
  int rc = CLI_OK;
  if (st) {
    /* an unknown format is a usage error: the message lists the valid ones */
    rc = cli_error(st == LK_ERR_INVALID_ARG ? CLI_USAGE : CLI_FAILED, "quantize: %s", lk_last_error(ctx));
  } else if (o.json) {
    json_t *j = json_object();
    json_object_set_new(j, "input", json_string(in));
    json_object_set_new(j, "output", out && !dry ? json_string(out) : json_null());
    json_object_set_new(j, "dry_run", json_boolean(dry));
    json_object_set_new(j, "to", json_string(to));
    json_object_set_new(j, "tensors", o.rows);
    json_object_set_new(j, "total", o.total ? o.total : json_null());
    o.rows = o.total = NULL;
    char *s = json_dumps(j, JSON_INDENT(1));
    if (s) puts(s);
    free(s);
    json_decref(j);
  } else if (dry) {
    printf("dry run: nothing written\n");
  } else {
    printf("wrote %s (%s)\n", cli_esc(out), cli_esc(to));
  }
  if (!st && !dry) rc = cli_registry_record_quantize(ctx, registry, in, out, to, keep, block, dq, o.json);
  json_decref(o.rows);
  json_decref(o.total);
  lk_context_free(ctx);
  return rc;
}
