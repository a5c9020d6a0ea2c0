/* cli.h - shared pieces of the lorakit command-line program. The CLI uses
 * only the public API (abi/lorakit.h), as any host would. */
#ifndef LK_CLI_H
#define LK_CLI_H

#include "lorakit.h"

enum { CLI_OK = 0, CLI_FAILED = 1, CLI_USAGE = 2 };

typedef struct cli_command {
  const char *name;
  const char *summary;
  const char *usage; /* full help text of the command */
  int (*run)(int argc, char **argv);
} cli_command;

/* Commands, one file per command group. */
int cli_plugins(int argc, char **argv);
int cli_inspect(int argc, char **argv);
int cli_convert(int argc, char **argv);
int cli_merge(int argc, char **argv);
int cli_unmerge(int argc, char **argv);
int cli_quantize(int argc, char **argv);
extern const char cli_quantize_usage[];
int cli_rank(int argc, char **argv);
int cli_train(int argc, char **argv);
extern const char cli_train_usage[];
extern const char cli_plugins_usage[], cli_inspect_usage[], cli_convert_usage[], cli_merge_usage[],
    cli_unmerge_usage[], cli_rank_usage[];

/* `lorakit generate` (cmd_generate.c) and `lorakit eval` (cmd_eval.c), staged
 * lk_x_generate / lk_x_eval; cli_adapter_arg parses an --adapter value
 * A[:scale] (path into *path, a static copy; scale 1 when absent). */
int cli_generate(int argc, char **argv);
extern const char cli_generate_usage[];
int cli_eval(int argc, char **argv);
extern const char cli_eval_usage[];
int cli_adapter_arg(const char *v, char **path, float *scale);

/* `lorakit tokenize` (cmd_tokenize.c, staged tokenizer API) */
int cli_tokenize(int argc, char **argv);
extern const char cli_tokenize_usage[];

/* `lorakit registry` (cmd_registry.c), and the recording other commands do
 * when a registry is configured: flag (their --registry) or, when NULL,
 * LORAKIT_REGISTRY. Each returns CLI_OK when none is configured. */
int cli_registry(int argc, char **argv);
extern const char cli_registry_usage[];
const char *cli_registry_configured(const char *flag);
int cli_registry_record_convert(lk_context_t *ctx, const char *registry, const char *in, const char *out,
                                const char *format, const char *base);
int cli_registry_record_merge(lk_context_t *ctx, const char *registry, const char *model, const char *adapter,
                              const char *out, double scale, int undo);
/* `lorakit train`: OUT trained on MODEL (from INIT_ADAPTER when not NULL:
 * relation trained_from it), RUN_JSON the trainer's hyper-parameters and data hash. */
int cli_registry_record_train(lk_context_t *ctx, const char *registry, const char *model, const char *init_adapter,
                              const char *out, const char *run_json);
/* `lorakit quantize`: OUT recorded as a model quantized_from MODEL (both
 * recorded; params: to, keep, block, double_quant); the message goes to
 * stderr when quiet (--json). */
int cli_registry_record_quantize(lk_context_t *ctx, const char *registry, const char *model, const char *out,
                                 const char *to, const char *keep, uint32_t block, uint32_t double_quant, int quiet);
/* Load the adapter a command was given: a path, or - when a registry is
 * configured and no such path exists - a REF (NAME@N, NAME:TAG, NAME) read
 * from that registry. */
/* A registry REF given where a path is expected (configured registry, no
 * such file): exported to a temporary folder; *path is then inside *tmpdir,
 * which cli_registry_tmp_free removes. A real path comes back as it is. */
lk_status cli_registry_adapter_path(lk_context_t *ctx, const char *registry, const char *adapter, const char **path,
                                    char **tmpdir);
void cli_registry_tmp_free(char *tmpdir);
lk_status cli_registry_adapter_load(lk_context_t *ctx, const char *registry, const char *adapter,
                                    const char *base_config, lk_adapter_t **out);

/* `plugins --json`: a backend component's devices (without an instance) and
 * the core ops it supports (cmd_plugins_ops.c); a new JSON object. */
struct json_t;
struct json_t *cli_backend_json(lk_context_t *ctx, const char *name, const char *description);

/* Nonzero: text output goes to a terminal and is escaped (cli_esc). */
extern int cli_escape_output;
/* s with control (C0, DEL, C1), bidirectional-override and non-UTF-8 bytes
 * escaped when cli_escape_output; s itself otherwise. Valid for the next 15
 * calls (cli_text.c). */
const char *cli_esc(const char *s);
/* The name among names within two edits of word, or NULL (cli_text.c). */
const char *cli_nearest(const char *word, const char *const *names, size_t n);

/* 1 when argv holds -h or --help. */
int cli_wants_help(int argc, char **argv);
/* Print "lorakit: <msg>" to stderr; returns code. */
int cli_error(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The value v of option opt as a finite number in [lo, hi] (a whole number
 * when whole) into *out: CLI_OK, or CLI_USAGE after an error naming both. */
int cli_number(const char *opt, const char *v, double lo, double hi, int whole, double *out);
/* An option --backend's value NAME or NAME:DEVICE: *name (NAME itself, or a
 * static copy of it) and *device (0 when absent); CLI_OK, or CLI_USAGE after
 * an error. Shared by train, generate, eval, merge and unmerge. */
int cli_backend_arg(const char *v, const char **name, uint32_t *device);
/* Name of a component kind: "backend", "quantiser", "loader". */
const char *cli_kind_name(int32_t kind);

#endif /* LK_CLI_H */
