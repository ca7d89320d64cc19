/* cmd_eval.c — `kiln eval`: a model over a dataset split; prints the study's
 * per-class table (precision, sensitivity, specificity, F1 and their means), the
 * confusion matrix and, for SPN models, the mask IoU and Dice. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "study/eval.h"
#include "tools/cli_data.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: kiln eval MODEL.onnx --data SPEC [--split test] [options]\n\n"
          "Runs the model over a dataset split and prints, per class, precision TP/(TP+FP),\n"
          "sensitivity TP/(TP+FN), specificity TN/(TN+FP) and F1 2TP/(2TP+FP+FN), their means\n"
          "over classes (the study's tables), the accuracy and the confusion matrix.  For a model\n"
          "with a `saliency` output (the SPN), also the IoU and Dice of sigmoid(saliency) > 0.5\n"
          "against the ground-truth masks.  A 0/0 ratio counts as 0 and is marked '*'.\n\n" CLI_DATA_HELP
          "  --count N            synthetic: images per class, as --synth-count (default 60)\n"
          "model:\n"
          "  --batch B            size bound to a symbolic batch dimension (default 8)\n"
          "  --backend jit|ref    (default jit)\n"
          "  --threads N          (default: all cores)\n"
          "  --passes LIST        graph passes before compiling: default (folding, fusion) or a list\n"
          "                       (default: none, the model as trained)\n"
          "  --allow-fallback     run ops without compiled kernels on reference kernels\n"
          "output:\n"
          "  --markdown           the table as Markdown\n"
          "  --predictions F.csv  one row per example: index,name,label,pred,correct[,iou,dice]\n"
          "  --limit N            evaluate the first N examples only\n"
          "  -q, --quiet          no progress\n");
}

static void progress(void *ctx, int64_t done, int64_t total) {
  (void)ctx;
  fprintf(stderr, "\r  %lld/%lld examples", (long long)done, (long long)total);
  if (done == total) fputc('\n', stderr);
}

static kiln_code write_predictions(const char *path, const kiln_eval_result *r, kiln_dataset *d, kiln_err *e) {
  FILE *f = fopen(path, "w");
  if (!f) return kiln_errf(e, KILN_ERR_IO, "%s: cannot write", path);
  fprintf(f, "index,name,label,pred,correct%s\n", r->has_saliency ? ",iou,dice" : "");
  for (int64_t i = 0; i < r->n; i++) {
    const char *nm = kiln_data_example_name(d, i);
    fprintf(f, "%lld,\"%s\",%lld,%lld,%d", (long long)i, nm ? nm : "", (long long)r->label[i], (long long)r->pred[i],
            r->label[i] == r->pred[i]);
    if (r->has_saliency) {
      if (isnan(r->iou[i]))
        fprintf(f, ",,");
      else
        fprintf(f, ",%.6f,%.6f", r->iou[i], r->dice[i]);
    }
    fputc('\n', f);
  }
  if (fclose(f)) return kiln_errf(e, KILN_ERR_IO, "%s: write failed", path);
  return KILN_OK;
}

int cmd_eval(int argc, char **argv) {
  const char *model = NULL, *preds = NULL, *val;
  const char *backend = "jit";
  cli_data cd;
  cli_data_init(&cd);
  kiln_eval_opts eo = kiln_eval_opts_default();
  bool bad = false, markdown = false, quiet = false;
  for (int i = 1; i < argc; i++) {
    if (cli_is_help(argv[i])) {
      usage(stdout);
      return 0;
    } else if (cli_data_opt("eval", argc, argv, &i, &cd, &bad)) {
    } else if (cli_opt(argc, argv, &i, "--count", &val, &bad)) { /* as kiln train and kiln dataset */
      cd.o.count = cli_int("--count", val, 0, 1000000000000, &bad);
    } else if (cli_opt(argc, argv, &i, "--batch", &val, &bad)) {
      eo.batch = cli_int("--batch", val, 1, 1000000000, &bad);
      if (eo.batch < 1) return cli_usage_error("eval", "--batch must be at least 1");
    } else if (cli_opt(argc, argv, &i, "--backend", &val, &bad)) {
      backend = val;
    } else if (cli_opt(argc, argv, &i, "--threads", &val, &bad)) {
      eo.threads = (int)cli_int("--threads", val, 0, 4096, &bad);
    } else if (cli_opt(argc, argv, &i, "--passes", &val, &bad)) {
      eo.passes = val;
    } else if (cli_opt(argc, argv, &i, "--predictions", &val, &bad)) {
      preds = val;
    } else if (cli_opt(argc, argv, &i, "--limit", &val, &bad)) {
      eo.limit = cli_int("--limit", val, 0, 1000000000000, &bad);
    } else if (!strcmp(argv[i], "--allow-fallback")) {
      eo.allow_fallback = true;
    } else if (!strcmp(argv[i], "--markdown")) {
      markdown = true;
    } else if (!strcmp(argv[i], "-q") || !strcmp(argv[i], "--quiet")) {
      quiet = true;
    } else if (argv[i][0] == '-') {
      return cli_usage_error("eval", "unknown option '%s'", argv[i]);
    } else if (!model) {
      model = argv[i];
    } else {
      return cli_usage_error("eval", "more than one model given");
    }
    if (bad) return 2;
  }
  if (!model) return cli_usage_error("eval", "no model given");
  if (!cd.spec) return cli_usage_error("eval", "--data is required");
  if (!strcmp(backend, "ref"))
    eo.backend = KILN_BACKEND_REF;
  else if (strcmp(backend, "jit"))
    return cli_usage_error("eval", "--backend must be jit or ref");
  if (!quiet && isatty(2)) eo.progress = progress;
  kiln_err e = {0};
  kiln_eval *ev = NULL;
  kiln_dataset *base = NULL, *d = NULL;
  kiln_eval_result r;
  memset(&r, 0, sizeof r);
  int rc = 1;
  char *buf = malloc(1 << 16);
  if (!buf) return 1;
  if (kiln_eval_create(model, &eo, &ev, &e)) goto out;
  int64_t c, h, w;
  kiln_eval_image_shape(ev, &c, &h, &w);
  if (cli_data_open(&cd, h, w, &base, &d, &e)) goto out;
  if (kiln_eval_run(ev, d, &r, &e)) goto out;
  const char *names[KILN_METRICS_MAX_CLASSES];
  for (int64_t k = 0; k < r.k && k < KILN_METRICS_MAX_CLASSES; k++) names[k] = kiln_data_class_name(d, k);
  printf("%s on %s, split %s: %lld examples, %lld classes (%.1f s, %.1f images/s)\n\n", model, cd.spec,
         cli_split_name(cd.split), (long long)r.n, (long long)r.k, r.seconds,
         r.seconds > 0 ? (double)r.n / r.seconds : 0.0);
  kiln_metrics_format(&r.metrics, names, markdown, buf, 1 << 16);
  fputs(buf, stdout);
  /* the confusion matrix, rows = truth */
  if (r.k <= 32) {
    printf("\nconfusion matrix (rows: truth, columns: prediction)\n");
    for (int64_t t = 0; t < r.k; t++) {
      printf("  %-12.12s", names[t] ? names[t] : "");
      for (int64_t p = 0; p < r.k; p++) printf(" %5lld", (long long)r.cm.m[t * r.k + p]);
      printf("\n");
    }
  }
  if (r.has_saliency) {
    if (r.n_masked)
      printf("\nSPN mask (sigmoid(saliency) > %.2g) on %lld images with masks: IoU %.3f, Dice %.3f (mean per "
             "image); pooled IoU %.3f, Dice %.3f\n",
             (double)eo.threshold, (long long)r.n_masked, r.mean_iou, r.mean_dice, kiln_seg_iou(&r.seg),
             kiln_seg_dice(&r.seg));
    else
      printf("\nSPN mask: no example of this split has a ground-truth mask\n");
  }
  if (preds && write_predictions(preds, &r, d, &e)) goto out;
  rc = 0;
out:
  if (rc) cli_fail(&e);
  kiln_eval_result_free(&r);
  kiln_dataset_free(d);
  kiln_dataset_free(base);
  kiln_eval_free(ev);
  free(buf);
  return rc;
}
