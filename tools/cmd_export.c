/* cmd_export.c — `kiln export`: a training checkpoint to a standard inference ONNX. */
#include <stdio.h>
#include <string.h>

#include "tools/cli.h"
#include "train/trainer.h"

static void usage(FILE *f) {
  fprintf(f, "usage: kiln export CHECKPOINT.onnx -o MODEL.onnx [--fold-bn]\n\n"
             "Writes the trained model as a standard inference ONNX file (BatchNorm in\n"
             "inference mode with the running statistics), without the optimizer state and\n"
             "training metadata the checkpoint carries.  --fold-bn folds BatchNorm into the\n"
             "preceding convolutions.\n");
}

int cmd_export(int argc, char **argv) {
  const char *ckpt = NULL, *out = NULL, *val;
  bool fold = false, bad = false;
  for (int i = 1; i < argc; i++) {
    if (cli_is_help(argv[i])) {
      usage(stdout);
      return 0;
    } else if (cli_opt(argc, argv, &i, "-o", &val, &bad)) {
      out = val;
    } else if (!strcmp(argv[i], "--fold-bn")) {
      fold = true;
    } else if (argv[i][0] == '-') {
      return cli_usage_error("export", "unknown option '%s'", argv[i]);
    } else if (!ckpt) {
      ckpt = argv[i];
    } else {
      return cli_usage_error("export", "more than one checkpoint given");
    }
    if (bad) return 2;
  }
  if (!ckpt || !out) return cli_usage_error("export", "a checkpoint and -o are required");
  kiln_err e = {0};
  if (kiln_export_checkpoint(ckpt, out, fold, &e)) return cli_fail(&e);
  printf("wrote %s\n", out);
  return 0;
}
