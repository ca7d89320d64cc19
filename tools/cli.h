/* cli.h — shared helpers for the kiln CLI's subcommands. */
#ifndef KILN_CLI_H
#define KILN_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "ir/graph.h"
#include "kiln.h"

/* Internal bridges between the public API and kiln's IR, for kiln's own tools. */
kiln_model *kiln_model_from_graph(kiln_graph *g);
const kiln_graph *kiln_model_graph(const kiln_model *m);

#define CMD(name, summary) int cmd_##name(int argc, char **argv);
#include "tools/commands.def"
#undef CMD

/* Prints "kiln: <msg>" to stderr for a failed kiln call and returns 1. */
int cli_fail(const kiln_err *e);
/* Prints "kiln <cmd>: <msg>" for a usage error and returns 2. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* True if argv[i] equals `flag`, and there is a value after it (which it returns in *val and
 * advances *i).  Reports a usage error through *bad when the value is missing. */
bool cli_opt(int argc, char **argv, int *i, const char *flag, const char **val, bool *bad);
bool cli_is_help(const char *a);
/* Numeric option values: the whole of `val` must be a number in [lo, hi] (cli_u64: any
 * non-negative integer); otherwise it prints "kiln: option FLAG needs ..., not 'VAL'", sets
 * *bad (the caller returns 2) and returns lo.  Nothing is printed when *bad is already set
 * (cli_opt found no value). */
int64_t cli_int(const char *flag, const char *val, int64_t lo, int64_t hi, bool *bad);
uint64_t cli_u64(const char *flag, const char *val, bool *bad);
double cli_real(const char *flag, const char *val, double lo, double hi, bool *bad);
/* --layout auto|plain|blocked (kiln_layout_choice); anything else is reported as cli_int does. */
kiln_layout_choice cli_layout(const char *val, bool *bad);
/* The --layout line of the subcommands' usage texts. */
#define CLI_LAYOUT_HELP                                                                          \
  "  --layout L          the layout-blocked pass of the pipeline: auto (default: channels\n"     \
  "                      blocked by 16 on AVX-512 targets, plain with AVX2), plain, blocked\n"


/* Loads a model, binds `--bind sym=N` pairs (binds[] of n_binds strings "sym=N"),
 * and runs shape inference with constant propagation. */
kiln_code cli_load_model(const char *path, const char *const *binds, int n_binds, kiln_graph **out,
                         kiln_err *e);

#endif
