/* cmd_experiment.c — `kiln experiment`: the study's grid of runs (backbones x
 * {baseline, SPN at each loc ratio} x losses x seeds), its Tables 1-4 and report.html. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "study/experiment.h"
#include "tools/cli.h"

static volatile sig_atomic_t stop_requested = 0; /* the CLI's signal flag (not library state) */
static void on_sigint(int sig) {
  (void)sig;
  stop_requested = 1;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: kiln experiment [CONFIG] [--KEY VALUE ...]\n\n"
          "Runs the study's experiment grid: for each backbone and seed, the baseline (ResNet\n"
          "alone) and the SPN model at each loc label ratio and localization loss. Each run\n"
          "trains, keeps its best epoch on the validation split, is evaluated on the test split\n"
          "(per-class precision, sensitivity, specificity, F1; SPN IoU/Dice) and explained\n"
          "(Grad-CAM, gradient, SPN maps scored against the masks). Writes OUT/table1.md|csv\n"
          "(Tables 1/3), OUT/table2.md|csv (Tables 2/4), OUT/saliency.md|csv, OUT/runs.csv,\n"
          "OUT/runs/<run>/... and OUT/report.html. Finished runs are reused when the grid is\n"
          "run again with the same settings; Ctrl-C stops after saving the current run's state.\n\n"
          "CONFIG is a file of `key = value` lines (# comments) with the keys below; options\n"
          "given on the command line win.\n\n"
          "data:\n"
          "  --data SPEC            dataset (default synthetic:shapes; CUB/BUSI folders, CSV: see\n"
          "                         kiln dataset --help)\n"
          "  --classes LIST         class subset in label order (CUB: 3,14,67,102,112,122,188,194)\n"
          "  --count N              synthetic: images per class (60)\n"
          "  --synth-classes K      synthetic:shapes classes (8)\n"
          "  --data-seed N          synthetic images (1)      --split-seed N   the 80/10/10 split (1)\n"
          "  --skip-bad yes|no      skip unreadable files     --augment yes|no crop+flip (yes)\n"
          "grid:\n"
          "  --backbones LIST       resnet18,resnet34,resnet50 (resnet18)\n"
          "  --baseline yes|no      include the baseline (yes)\n"
          "  --ratios LIST          SPN loc label ratios (1,0.25); 'none' for no SPN runs\n"
          "  --losses LIST          ce (= bce), l1, l2 (ce)\n"
          "  --seeds LIST           seeds of repeated runs (1)   --repeats N   seeds 1..N\n"
          "model:\n"
          "  --image-size S         input size (224)           --width W   stem channels (64)\n"
          "  --cnet-hidden H        SPN model's C-Net hidden width (1024)\n"
          "  --baseline-hidden H    baseline's (0: one fc, torchvision's)\n"
          "  --spn-scales LIST      SPN upsampling blocks (2,2,2,4; 'auto': x2 blocks)\n"
          "  --spn-width-cap W      channels of the first SPN block at most W\n"
          "  --init-from FILE       pretrained F-Net weights (ONNX export of a torchvision ResNet)\n"
          "training:\n"
          "  --epochs N (40)  --batch B (32)  --lr X (1e-3)  --lambda X (1)  --threads N (all)\n"
          "output:\n"
          "  --out DIR, -o DIR      output folder (experiment)\n"
          "  --grid-rows N          test images in the saliency grids (8)\n"
          "  --keep-models yes|no   keep each run's best.onnx (yes)\n"
          "  --title TEXT           report title\n"
          "  --plan                 print the runs and exit\n"
          "  --print-config         print the configuration as a config file and exit\n"
          "  -q, --quiet            no progress\n");
}

/* Command-line spellings that differ from the config keys. */
static const char *alias(const char *k) {
  static const char *const pairs[][2] = {{"backbone", "backbones"}, {"ratio", "ratios"}, {"loc-ratio", "ratios"},
                                         {"loss", "losses"},        {"loc-loss", "losses"}, {"seed", "seeds"},
                                         {"size", "image-size"},    {"output", "out"}};
  for (size_t i = 0; i < sizeof pairs / sizeof *pairs; i++)
    if (!strcmp(k, pairs[i][0])) return pairs[i][1];
  return k;
}

int cmd_experiment(int argc, char **argv) {
  kiln_exp_config c;
  kiln_exp_config_default(&c);
  kiln_err e = {0};
  bool plan_only = false, print_config = false, quiet = false;
  /* a config file first, so that options override it wherever they stand */
  for (int i = 1; i < argc; i++) {
    if (cli_is_help(argv[i])) {
      usage(stdout);
      return 0;
    }
    if (argv[i][0] == '-') {
      if (strcmp(argv[i], "--plan") && strcmp(argv[i], "--print-config") && strcmp(argv[i], "-q") &&
          strcmp(argv[i], "--quiet") && !strchr(argv[i], '='))
        i++; /* skip the option's value */
      continue;
    }
    if (kiln_exp_config_load(&c, argv[i], &e)) return cli_fail(&e);
  }
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (a[0] != '-') continue;
    if (!strcmp(a, "--plan")) {
      plan_only = true;
      continue;
    }
    if (!strcmp(a, "--print-config")) {
      print_config = true;
      continue;
    }
    if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
      quiet = true;
      continue;
    }
    char key[128];
    const char *val = NULL;
    const char *eq = strchr(a, '=');
    if (!strcmp(a, "-o")) {
      snprintf(key, sizeof key, "out");
    } else if (a[1] == '-') {
      size_t len = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
      if (len >= sizeof key) return cli_usage_error("experiment", "unknown option '%s'", a);
      memcpy(key, a + 2, len);
      key[len] = 0;
    } else {
      return cli_usage_error("experiment", "unknown option '%s'", a);
    }
    if (eq && a[1] == '-') val = eq + 1;
    else if (i + 1 < argc) val = argv[++i];
    else return cli_usage_error("experiment", "option %s needs a value", a);
    if (kiln_exp_config_set(&c, alias(key), val, &e)) {
      if (!strncmp(e.msg, "unknown option", 14)) return cli_usage_error("experiment", "unknown option '%s'", a);
      return cli_usage_error("experiment", "%s", e.msg);
    }
  }
  if (print_config) {
    kiln_exp_config_write(&c, stdout);
    return 0;
  }
  if (kiln_exp_config_check(&c, &e)) return cli_usage_error("experiment", "%s", e.msg);
  if (plan_only) {
    kiln_exp_run *runs = NULL;
    int n = 0;
    if (kiln_exp_plan(&c, &runs, &n, &e)) return cli_fail(&e);
    for (int i = 0; i < n; i++) printf("%s\n", runs[i].id);
    printf("%d runs of %d epochs on %s, written to %s/\n", n, c.epochs, c.data, c.out);
    kiln_free(runs);
    return 0;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigint;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  kiln_exp_hooks h = {.log = quiet ? NULL : stderr, .tty = !quiet && isatty(2), .stop = &stop_requested};
  kiln_exp_outcome o;
  kiln_code rc = kiln_experiment_run(&c, &h, &o, &e);
  if (rc) {
    cli_fail(&e);
    kiln_exp_outcome_free(&o);
    return stop_requested ? 130 : 1;
  }
  printf("%d runs (%d reused) in %.0f s\n", o.n, o.n_reused, o.seconds);
  char path[KILN_EXP_PATH + 32];
  snprintf(path, sizeof path, "%s/table1.md", c.out);
  FILE *f = fopen(path, "r");
  if (f) {
    char line[1024];
    while (fgets(line, sizeof line, f)) fputs(line, stdout);
    fclose(f);
  }
  printf("\ntables: %s/table1.md, table2.md, saliency.md (and .csv); runs: %s/runs/\nreport: %s\n", c.out, c.out,
         o.report[0] ? o.report : "(not written)");
  kiln_exp_outcome_free(&o);
  return 0;
}
