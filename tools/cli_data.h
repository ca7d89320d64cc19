/* cli_data.h — dataset options shared by the study's commands (`kiln eval`,
 * `kiln explain`): parsing --data, --split, --classes, sizes and seeds, and
 * opening the chosen split without augmentation, every mask kept. */
#ifndef KILN_CLI_DATA_H
#define KILN_CLI_DATA_H

#include <stdlib.h>
#include <string.h>

#include "data/data.h"
#include "tools/cli.h"

typedef struct cli_data {
  const char *spec;
  kiln_split split;
  kiln_data_opts o;
  bool size_given;
} cli_data;

#define CLI_DATA_HELP                                                                              \
  "data:\n"                                                                                        \
  "  --data SPEC          synthetic:shapes, synthetic:ultrasound, a CUB/BUSI/CSV folder, FILE.csv\n" \
  "                       or a tensor folder (see `kiln dataset --help`)\n"                         \
  "  --split S            train, val, test or all (default test); never augmented, all masks kept\n" \
  "  --classes LIST       class subset in label order (CUB ids '3,14,67', folder or label names)\n"  \
  "  --image-size S       example size (default: the model's input size)\n"                         \
  "  --seed S             split seed, as used for training (default 1)\n"                           \
  "  --data-seed S        synthetic: generation seed (default 1)\n"                                 \
  "  --synth-count N      synthetic: images per class (default 60)\n"                               \
  "  --synth-classes K    synthetic:shapes: classes (default 8)\n"                                  \
  "  --skip-bad           skip unreadable or inconsistent files\n"

static inline void cli_data_init(cli_data *d) {
  memset(d, 0, sizeof *d);
  d->split = KILN_SPLIT_TEST;
  d->o = kiln_data_opts_default();
  d->o.augment = false;
  d->o.loc_ratio = 1;
}

/* Consumes a data option at argv[*i]; true when it was one.  *bad is set on a usage
 * error (already reported). */
static inline bool cli_data_opt(const char *cmd, int argc, char **argv, int *i, cli_data *d, bool *bad) {
  const char *val;
  if (cli_opt(argc, argv, i, "--data", &val, bad)) {
    d->spec = val;
  } else if (cli_opt(argc, argv, i, "--split", &val, bad)) {
    if (!strcmp(val, "train")) d->split = KILN_SPLIT_TRAIN;
    else if (!strcmp(val, "val") || !strcmp(val, "valid") || !strcmp(val, "validation")) d->split = KILN_SPLIT_VAL;
    else if (!strcmp(val, "test")) d->split = KILN_SPLIT_TEST;
    else if (!strcmp(val, "all")) d->split = KILN_SPLIT_ALL;
    else *bad = cli_usage_error(cmd, "--split must be train, val, test or all") != 0;
  } else if (cli_opt(argc, argv, i, "--classes", &val, bad)) {
    d->o.classes = val;
  } else if (cli_opt(argc, argv, i, "--image-size", &val, bad) || cli_opt(argc, argv, i, "--size", &val, bad)) {
    d->o.height = d->o.width = atoll(val);
    d->size_given = true;
    if (d->o.height < 8 || d->o.height > 4096) *bad = cli_usage_error(cmd, "--image-size must lie in 8..4096") != 0;
  } else if (cli_opt(argc, argv, i, "--seed", &val, bad)) {
    d->o.seed = strtoull(val, NULL, 10);
  } else if (cli_opt(argc, argv, i, "--data-seed", &val, bad)) {
    d->o.data_seed = strtoull(val, NULL, 10);
  } else if (cli_opt(argc, argv, i, "--synth-count", &val, bad)) {
    d->o.count = atoll(val);
  } else if (cli_opt(argc, argv, i, "--synth-classes", &val, bad)) {
    d->o.synth_classes = atoll(val);
  } else if (!strcmp(argv[*i], "--skip-bad")) {
    d->o.skip_bad = true;
  } else {
    return false;
  }
  return true;
}

/* Opens the dataset and its split view (free the view, then the base). */
static inline kiln_code cli_data_open(cli_data *d, int64_t model_h, int64_t model_w, kiln_dataset **base,
                                      kiln_dataset **view, kiln_err *e) {
  *base = *view = NULL;
  if (!d->size_given && model_h > 0 && model_w > 0) {
    d->o.height = model_h;
    d->o.width = model_w;
  }
  KILN_TRY(kiln_dataset_open_spec(d->spec, &d->o, base, e));
  kiln_code rc = kiln_data_view(*base, d->split, &d->o, view, e);
  if (rc) {
    kiln_dataset_free(*base);
    *base = NULL;
  }
  return rc;
}

static inline const char *cli_split_name(kiln_split s) {
  return s == KILN_SPLIT_TRAIN ? "train" : s == KILN_SPLIT_VAL ? "val" : s == KILN_SPLIT_TEST ? "test" : "all";
}

#endif
