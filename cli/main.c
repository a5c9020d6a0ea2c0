/* main.c - the lorakit program: global options and command dispatch.
 * Exit status: 0 ok, 1 failed, 2 usage. Errors go to stderr. */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const cli_command commands[] = {
    {"plugins", "list plugin files: kind, components, versions, status", cli_plugins_usage,
     cli_plugins},
    {"inspect", "show a model or adapter: format, config, tensors, sizes", cli_inspect_usage, cli_inspect},
    {"convert", "convert models and adapters (safetensors, hf, gguf, peft, gguf-lora)", cli_convert_usage,
     cli_convert},
    {"merge", "merge an adapter into a model (W += s B A)", cli_merge_usage, cli_merge},
    {"unmerge", "undo a merge (W -= s B A)", cli_unmerge_usage, cli_unmerge},
    {"quantize", "quantise a model (q4_0 ... q6_k, q4_k_m, f16, bf16, int8, nf4 ...) as llama-quantize does",
     cli_quantize_usage, cli_quantize},
    {"rank", "numerical rank, singular values and energy of a tensor, a matrix or each s B A", cli_rank_usage,
     cli_rank},
    {"registry", "adapter versions, tags and lineage (add, list, lineage, diff, export ...)", cli_registry_usage,
     cli_registry},
    {"tokenize", "token ids and pieces of a text under a model's tokenizer (or --decode ids)", cli_tokenize_usage, cli_tokenize},
    {"train", "LoRA / QLoRA training of a Llama-family model (PEFT or GGUF LoRA out)", cli_train_usage, cli_train},
    {"generate", "text from a Llama-family model with LoRA adapters (streamed; greedy or sampled)", cli_generate_usage, cli_generate},
    {"eval", "loss and perplexity of a model (with adapters) on a data set", cli_eval_usage, cli_eval},
};
enum { N_COMMANDS = sizeof commands / sizeof commands[0] };

int cli_wants_help(int argc, char **argv) {
  for (int i = 1; i < argc; i++)
    if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) return 1;
  return 0;
}

/* The message may quote file names, tensor names or config keys: escaped
 * like the output when stderr is a terminal. */
int cli_error(int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *msg = NULL;
  int n = vasprintf(&msg, fmt, ap);
  va_end(ap);
  int saved = cli_escape_output;
  cli_escape_output = isatty(2);
  fprintf(stderr, "lorakit: %s\n", n >= 0 && msg ? cli_esc(msg) : fmt);
  cli_escape_output = saved;
  free(msg);
  return code;
}

int cli_number(const char *opt, const char *v, double lo, double hi, int whole, double *out) {
  char *end = NULL;
  errno = 0;
  double d = strtod(v, &end);
  if (errno || !end || *end || end == v || !isfinite(d) || d < lo || d > hi || (whole && d != floor(d)))
    return cli_error(CLI_USAGE, "%s: invalid value '%s' (expected a%s number in [%g, %g])", opt, v,
                     whole ? " whole" : "", lo, hi);
  *out = d;
  return CLI_OK;
}

int cli_backend_arg(const char *v, const char **name, uint32_t *device) {
  static char bname[4][128]; /* a few commands' worth; each call its own slot */
  static unsigned slot;
  const char *colon = strchr(v, ':');
  if (!*v || colon == v) return cli_error(CLI_USAGE, "--backend: '%s' is not NAME or NAME:DEVICE", v);
  if (!colon) {
    *name = v;
    *device = 0;
    return CLI_OK;
  }
  char *end = NULL;
  errno = 0;
  unsigned long dev = strtoul(colon + 1, &end, 10);
  if (!colon[1] || *end || errno || colon[1] == '-' || colon[1] == '+' || dev > 1024)
    return cli_error(CLI_USAGE, "--backend: '%s' is not NAME or NAME:DEVICE (DEVICE a number 0..1024)", v);
  char *b = bname[slot++ % 4];
  if ((size_t)(colon - v) >= sizeof bname[0]) return cli_error(CLI_USAGE, "--backend: name too long in '%s'", v);
  memcpy(b, v, (size_t)(colon - v));
  b[colon - v] = 0;
  *name = b;
  *device = (uint32_t)dev;
  return CLI_OK;
}

const char *cli_kind_name(int32_t kind) {
  switch (kind) {
  case LK_KIND_BACKEND: return "backend";
  case LK_KIND_QUANTISER: return "quantiser";
  case LK_KIND_LOADER: return "loader";
  default: return "unknown";
  }
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: lorakit [--version] [--help] COMMAND [ARGS]\n"
          "\n"
          "lorakit: low-rank adaptation (LoRA) of large models on ordinary machines.\n"
          "\n"
          "commands:\n");
  for (int i = 0; i < N_COMMANDS; i++) fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
  fprintf(f,
          "\n"
          "`lorakit COMMAND --help` describes a command. Plugins are found in\n"
          "the install's lib/lorakit/plugins/, plugins/ next to this program and\n"
          "LORAKIT_PLUGIN_PATH (colon-separated absolute folders), and loaded\n"
          "only when a command needs their kind; files or folders writable by\n"
          "group or others are refused (see `lorakit plugins`).\n");
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return CLI_USAGE;
  }
  const char *cmd = argv[1];
  if (!strcmp(cmd, "--version") || !strcmp(cmd, "-V")) {
    printf("lorakit %s (plugin ABI %u.%u)\n", lk_version_string(),
           LK_ABI_MAJOR_OF(lk_plugin_abi_version()), LK_ABI_MINOR_OF(lk_plugin_abi_version()));
    return CLI_OK;
  }
  if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
    usage(stdout);
    return CLI_OK;
  }
  for (int i = 0; i < N_COMMANDS; i++) {
    if (strcmp(cmd, commands[i].name)) continue;
    if (cli_wants_help(argc - 1, argv + 1)) {
      fputs(commands[i].usage, stdout);
      return CLI_OK;
    }
    return commands[i].run(argc - 1, argv + 1);
  }
  const char *names[N_COMMANDS];
  for (int i = 0; i < N_COMMANDS; i++) names[i] = commands[i].name;
  const char *near = cmd[0] == '-' ? NULL : cli_nearest(cmd, names, N_COMMANDS);
  if (near) return cli_error(CLI_USAGE, "unknown command '%s': did you mean %s?", cmd, near);
  cli_error(CLI_USAGE, "unknown command '%s'\n", cmd);
  usage(stderr);
  return CLI_USAGE;
}
