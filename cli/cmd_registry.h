/* cmd_registry.h - pieces shared by the registry command's two files:
 * cmd_registry.c (arguments, the writing subcommands, recording for other
 * commands) and cmd_registry_view.c (text renderings of the JSON documents
 * the library returns). */
#ifndef LK_CMD_REGISTRY_H
#define LK_CMD_REGISTRY_H

#include <jansson.h>
#include <stdio.h>

#include "cli.h"

/* "57.0 KiB" into buf. */
void rcli_bytes(uint64_t n, char *buf, size_t size);
/* Print doc indented (the --json output). */
void rcli_print_json(json_t *doc);

/* The escaper is shared with the other commands (cli_text.c). */
#define rcli_escape_output cli_escape_output
#define rcli_esc cli_esc

/* Text renderings; each takes the library's JSON document. */
void rcli_print_list(json_t *list);
void rcli_print_show(json_t *v);
void rcli_print_log(json_t *list);
void rcli_print_diff(json_t *d);
/* format: "text", "dot" or "mermaid"; dir: LK_LINEAGE_*. */
void rcli_print_lineage(json_t *g, const char *format, int dir);
void rcli_print_models(json_t *list);

#endif /* LK_CMD_REGISTRY_H */
