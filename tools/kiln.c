/* kiln.c — the `kiln` command-line tool: dispatches to tools/cmd_*.c. */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "frontend/onnx.h"
#include "runtime/ref.h"
#include "tools/cli.h"

typedef struct cli_command {
  const char *name;
  int (*fn)(int argc, char **argv);
  const char *summary;
} cli_command;

static const cli_command commands[] = {
#define CMD(name, summary) {#name, cmd_##name, summary},
#include "tools/commands.def"
#undef CMD
};

int cli_fail(const kiln_err *e) {
  fprintf(stderr, "kiln: %s\n", e->msg[0] ? e->msg : kiln_code_name(e->code));
  return 1;
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "kiln %s: ", cmd);
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, " (see 'kiln %s --help')\n", cmd);
  va_end(ap);
  return 2;
}

int64_t cli_int(const char *flag, const char *val, int64_t lo, int64_t hi, bool *bad) {
  if (*bad) return lo;
  char *end;
  errno = 0;
  long long v = strtoll(val, &end, 10);
  if (errno || end == val || *end || v < lo || v > hi) {
    fprintf(stderr, "kiln: option %s needs an integer from %lld to %lld, not '%s'\n", flag,
            (long long)lo, (long long)hi, val);
    *bad = true;
    return lo;
  }
  return v;
}

kiln_layout_choice cli_layout(const char *val, bool *bad) {
  if (*bad) return KILN_LAYOUT_AUTO;
  static const char *const names[] = {"auto", "plain", "blocked"};
  for (int k = 0; k < 3; k++)
    if (!strcmp(val, names[k])) return (kiln_layout_choice)k;
  fprintf(stderr, "kiln: option --layout needs auto, plain or blocked, not '%s'\n", val);
  *bad = true;
  return KILN_LAYOUT_AUTO;
}

uint64_t cli_u64(const char *flag, const char *val, bool *bad) {
  if (*bad) return 0;
  char *end;
  errno = 0;
  unsigned long long v = strtoull(val, &end, 10);
  if (errno || end == val || *end || strchr(val, '-')) {
    fprintf(stderr, "kiln: option %s needs a non-negative integer, not '%s'\n", flag, val);
    *bad = true;
    return 0;
  }
  return v;
}

double cli_real(const char *flag, const char *val, double lo, double hi, bool *bad) {
  if (*bad) return lo;
  char *end;
  errno = 0;
  double v = strtod(val, &end);
  /* !(v >= lo && v <= hi) also refuses NaN */
  if (errno || end == val || *end || !(v >= lo && v <= hi)) {
    fprintf(stderr, "kiln: option %s needs a number from %g to %g, not '%s'\n", flag, lo, hi,
            val);
    *bad = true;
    return lo;
  }
  return v;
}

bool cli_is_help(const char *a) { return !strcmp(a, "--help") || !strcmp(a, "-h"); }

bool cli_opt(int argc, char **argv, int *i, const char *flag, const char **val, bool *bad) {
  const char *a = argv[*i];
  size_t fl = strlen(flag);
  if (strncmp(a, flag, fl) == 0 && a[fl] == '=') { /* --flag=value */
    *val = a + fl + 1;
    return true;
  }
  if (strcmp(a, flag) != 0) return false;
  if (*i + 1 >= argc) {
    fprintf(stderr, "kiln: option %s needs a value\n", flag);
    *val = ""; /* callers read it before they look at *bad */
    *bad = true;
    return true;
  }
  *val = argv[++*i];
  return true;
}

kiln_code cli_load_model(const char *path, const char *const *binds, int n_binds, kiln_graph **out,
                         kiln_err *e) {
  kiln_graph *g = NULL;
  *out = NULL;
  KILN_TRY(kiln_onnx_load(path, &g, e));
  for (int i = 0; i < n_binds; i++) {
    char sym[256];
    const char *eq = strchr(binds[i], '=');
    long long v = 0;
    if (!eq || (size_t)(eq - binds[i]) >= sizeof sym || sscanf(eq + 1, "%lld", &v) != 1) {
      ir_graph_free(g);
      return kiln_errf(e, KILN_ERR_INVALID, "--bind expects NAME=SIZE, got '%s'", binds[i]);
    }
    memcpy(sym, binds[i], (size_t)(eq - binds[i]));
    sym[eq - binds[i]] = 0;
    if (ir_bind_dim(g, sym, v, e)) {
      ir_graph_free(g);
      return e->code;
    }
  }
  kiln_evaluator ev = kiln_ref_evaluator();
  if (ir_infer(g, &ev, e)) {
    kiln_err_prefix(e, "%s", path);
    ir_graph_free(g);
    return e->code;
  }
  *out = g;
  return KILN_OK;
}

static void usage(FILE *f) {
  fprintf(f, "kiln — a graph compiler and runtime for convolutional networks\n\n"
             "usage: kiln <command> [options]\n\ncommands:\n");
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].summary);
  fprintf(f, "  %-12s %s\n", "help", "this list; 'kiln <command> --help' for a command's options");
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  if (!strcmp(argv[1], "help") || cli_is_help(argv[1])) {
    if (argc > 2)
      for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[2], commands[i].name)) {
          char *args[] = {argv[2], "--help", NULL};
          return commands[i].fn(2, args);
        }
    usage(stdout);
    return 0;
  }
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
  fprintf(stderr, "kiln: unknown command '%s'\n", argv[1]);
  usage(stderr);
  return 2;
}
