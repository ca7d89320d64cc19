/* cmd_demo.c — `kiln demo`: baseline vs SPN ResNet-18 on synthetic:shapes in a few
 * minutes, the comparison table, saliency grids and report.html. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "study/demo.h"
#include "tools/cli.h"

static volatile sig_atomic_t stop_requested = 0; /* the CLI's signal flag (not library state) */
static void on_sigint(int sig) {
  (void)sig;
  stop_requested = 1;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: kiln demo [--out DIR] [options]\n\n"
          "The study in a few minutes: on synthetic:shapes (8 classes x 60 images whose\n"
          "background tint gives the class away in training but not in testing; 25%% of the\n"
          "training masks kept), trains a baseline ResNet-18 and the same network with the\n"
          "saliency prediction net (SPN), each keeping its best epoch on validation, then\n"
          "prints their precision, sensitivity, specificity, F1 and how much of their\n"
          "Grad-CAM saliency falls on the object, and writes saliency grids and report.html.\n"
          "Runs already in DIR are reused (--fresh trains again). Deterministic given --seed\n"
          "and the thread count.\n\n"
          "options:\n"
          "  --out DIR        output folder (default ./kiln-demo)\n"
          "  --seed N         (default 1)\n"
          "  --epochs N       (default 20)\n"
          "  --size S         image size (default 128; a multiple of 32)\n"
          "  --width W        ResNet-18 stem width (default 16; torchvision's is 64)\n"
          "  --batch B        (default 16)\n"
          "  --loc-ratio R    share of training masks for the SPN (default 0.25)\n"
          "  --threads N      (default: all cores)\n"
          "  --fresh          train again even when DIR holds finished runs\n"
          "  -q, --quiet      no progress, only the results\n");
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int cmd_demo(int argc, char **argv) {
  kiln_demo_opts d;
  kiln_demo_opts_default(&d);
  bool bad = false, quiet = false, fresh = false;
  const char *val;
  for (int i = 1; i < argc; i++) {
    if (cli_is_help(argv[i])) {
      usage(stdout);
      return 0;
    } else if (cli_opt(argc, argv, &i, "--out", &val, &bad) || cli_opt(argc, argv, &i, "-o", &val, &bad)) {
      if (strlen(val) >= sizeof d.out) return cli_usage_error("demo", "--out: path too long");
      snprintf(d.out, sizeof d.out, "%s", val);
    } else if (cli_opt(argc, argv, &i, "--seed", &val, &bad)) {
      d.seed = cli_u64("--seed", val, &bad);
    } else if (cli_opt(argc, argv, &i, "--epochs", &val, &bad)) {
      d.epochs = (int)cli_int("--epochs", val, 0, 1000000000, &bad);
    } else if (cli_opt(argc, argv, &i, "--size", &val, &bad)) {
      d.image_size = cli_int("--size", val, 1, 65536, &bad);
    } else if (cli_opt(argc, argv, &i, "--width", &val, &bad)) {
      d.width = cli_int("--width", val, 1, 65536, &bad);
    } else if (cli_opt(argc, argv, &i, "--batch", &val, &bad)) {
      d.batch = cli_int("--batch", val, 1, 1000000000, &bad);
    } else if (cli_opt(argc, argv, &i, "--loc-ratio", &val, &bad)) {
      d.loc_ratio = cli_real("--loc-ratio", val, 0, 1, &bad);
    } else if (cli_opt(argc, argv, &i, "--threads", &val, &bad)) {
      d.threads = (int)cli_int("--threads", val, 0, 4096, &bad);
    } else if (!strcmp(argv[i], "--fresh")) {
      fresh = true;
    } else if (!strcmp(argv[i], "-q") || !strcmp(argv[i], "--quiet")) {
      quiet = true;
    } else {
      return cli_usage_error("demo", "unknown option '%s'", argv[i]);
    }
    if (bad) return 2;
  }
  if (d.epochs < 1) return cli_usage_error("demo", "--epochs must be at least 1");
  if (d.batch < 1) return cli_usage_error("demo", "--batch must be at least 1");
  if (d.image_size < 32 || d.image_size % 32) return cli_usage_error("demo", "--size must be a multiple of 32");
  if (d.width < 1) return cli_usage_error("demo", "--width must be at least 1");
  if (!(d.loc_ratio > 0 && d.loc_ratio <= 1)) return cli_usage_error("demo", "--loc-ratio must be in (0, 1]");
  kiln_exp_config c;
  kiln_demo_config(&d, &c);
  kiln_err e = {0};
  if (fresh) {
    /* the results of an earlier demo are what resume reuses; set them aside */
    char old[KILN_EXP_PATH + 32], moved[KILN_EXP_PATH + 64];
    snprintf(old, sizeof old, "%s/runs", c.out);
    snprintf(moved, sizeof moved, "%s/runs.old-%ld", c.out, (long)time(NULL));
    if (access(old, F_OK) == 0 && rename(old, moved))
      return cli_usage_error("demo", "--fresh: cannot move %s aside", old);
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigint;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  printf("kiln demo: baseline ResNet-18 vs ResNet-18 + SPN (%.0f%% of training masks), synthetic:shapes,\n"
         "8 classes x 60 images at %lldx%lld, width %lld, %d epochs, batch %lld, seed %llu -> %s/\n",
         100 * d.loc_ratio, (long long)d.image_size, (long long)d.image_size, (long long)d.width, d.epochs,
         (long long)d.batch, (unsigned long long)d.seed, c.out);
  fflush(stdout);
  double t0 = now_s();
  kiln_exp_hooks h = {.log = quiet ? NULL : stderr, .tty = !quiet && isatty(2), .stop = &stop_requested};
  kiln_exp_outcome o;
  if (kiln_experiment_run(&c, &h, &o, &e)) {
    cli_fail(&e);
    kiln_exp_outcome_free(&o);
    return stop_requested ? 130 : 1;
  }
  double elapsed = now_s() - t0;
  kiln_demo_print(&o, stdout);
  printf("\nsaliency grids: %s/compare-resnet18.png (image | truth | baseline Grad-CAM | SPN Grad-CAM | SPN "
         "mask)\n                %s/runs/*/saliency.png\nreport:         %s\n",
         c.out, c.out, o.report);
  if (o.n_reused == o.n)
    printf("elapsed: %.0f s (both runs reused from an earlier demo in %s; --fresh trains again)\n", elapsed, c.out);
  else
    printf("elapsed: %.0f s (%dm%02ds)\n", elapsed, (int)elapsed / 60, (int)elapsed % 60);
  kiln_exp_outcome_free(&o);
  return 0;
}
