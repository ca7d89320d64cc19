/* cmd_explain.c — `kiln explain`: Grad-CAM, gradient and SPN saliency maps of a
 * model (and optionally a baseline beside it) on a dataset split, written as PNG
 * grids like the study's figures, with their scores against the ground-truth masks. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/image.h"
#include "study/eval.h"
#include "study/explain.h"
#include "tools/cli_data.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: kiln explain MODEL.onnx [--baseline BASE.onnx] --data SPEC [options]\n\n"
          "Saliency maps computed with kiln's autodiff: Grad-CAM on the last F-Net block (ReLU of the\n"
          "gradient-weighted sum of the feature maps feeding the C-Net, upsampled bilinearly), the\n"
          "vanilla gradient (max over channels of |d logit / d image|) and the SPN map\n"
          "(sigmoid(saliency)).  Writes grids of the first --count examples (image | ground truth |\n"
          "model | baseline) to --out, and prints each map's scores against the ground-truth masks\n"
          "over the split: share of the map's energy inside the mask, pointing game (the map's\n"
          "maximum inside the mask), IoU of the map above half its range and of its top --top%%.\n"
          "Maps are min-max normalized per image for scores and pictures.\n\n" CLI_DATA_HELP
          "explanation:\n"
          "  --method M           gradcam, grad, spn or all (default all; a comma list works)\n"
          "  --baseline F         a second model (e.g. without the SPN) explained beside the first\n"
          "  --target pred|label  explain the predicted class (default) or the true label\n"
          "  --feature NAME       the Grad-CAM feature map (default: the input of the C-Net's\n"
          "                       GlobalAveragePool, the output of layer4)\n"
          "  --top PCT            the top share of pixels for IoU@top (default 20)\n"
          "  --limit N            score the first N examples only (default: the whole split)\n"
          "output:\n"
          "  --count N            examples in the grids (default 8)\n"
          "  --out DIR            where grids and CSVs go (default explain)\n"
          "  --colormap jet|viridis  (default jet)\n"
          "  --alpha A            weight of the colour over the image (default 0.5)\n"
          "model:\n"
          "  --batch B            size bound to a symbolic batch dimension (default 4)\n"
          "  --backend jit|ref    (default jit)\n"
          "  --threads N          (default: all cores)\n"
          "  --allow-fallback     run ops without compiled kernels on reference kernels\n"
          "  -q, --quiet          no progress\n");
}

typedef struct explain_cli {
  const char *out;
  int count;
  kiln_colormap cmap;
  float alpha;
  kiln_explain_target target;
} explain_cli;

static void progress(void *ctx, int64_t done, int64_t total) {
  fprintf(stderr, "\r  %s: %lld/%lld examples", (const char *)ctx, (long long)done, (long long)total);
  if (done == total) fputc('\n', stderr);
}

/* "runs/ours.onnx" -> "ours" */
static void stem(const char *path, char *out, size_t n) {
  const char *b = strrchr(path, '/');
  b = b ? b + 1 : path;
  snprintf(out, n, "%s", b);
  char *dot = strrchr(out, '.');
  if (dot && dot != out) *dot = 0;
}

/* A caption at the bottom-left of a cell on a dark stripe. */
static void caption(uint8_t *cell, int64_t w, int64_t h, const char *text, const uint8_t color[3]) {
  int scale = w >= 160 ? 2 : 1;
  int64_t th = 7 * scale + 4;
  if (h < th + 4) return;
  int64_t tw = (int64_t)strlen(text) * 6 * scale + 4;
  if (tw > w) tw = w;
  for (int64_t y = h - th; y < h; y++)
    for (int64_t x = 0; x < tw; x++)
      for (int c = 0; c < 3; c++) cell[(y * w + x) * 3 + c] = (uint8_t)(cell[(y * w + x) * 3 + c] / 4);
  kiln_draw_text(cell, w, h, 2, h - th + 2, text, scale, color);
}

static const char *method_file(int m) {
  return m == KILN_EXPLAIN_GRADCAM ? "gradcam" : m == KILN_EXPLAIN_GRAD ? "grad" : "spn";
}

/* Grids of the first `count` examples: one PNG per method. */
static kiln_code write_grids(kiln_explainer *const *xs, const char *const *names, int n_models, kiln_dataset *d,
                             const explain_cli *c, kiln_err *e) {
  int64_t C, H, W;
  kiln_explainer_image_shape(xs[0], &C, &H, &W);
  int64_t B = kiln_explainer_batch(xs[0]), hw = H * W, K = kiln_explainer_classes(xs[0]);
  int count = c->count < d->n ? c->count : (int)d->n;
  if (count < 1) return KILN_OK;
  unsigned methods = kiln_explainer_methods(xs[0]);
  kiln_grid grids[KILN_EXPLAIN_METHODS];
  memset(grids, 0, sizeof grids);
  kiln_code rc = KILN_OK;
  float *images = NULL, *raw = NULL, *masks = NULL, *thr = NULL;
  bool *has_mask = NULL;
  int64_t *labels = NULL, *targets = NULL;
  uint8_t *cell = NULL;
  kiln_explanation ex[2];
  memset(ex, 0, sizeof ex);
  int ncols[KILN_EXPLAIN_METHODS] = {0};
  for (int m = 0; m < KILN_EXPLAIN_METHODS && !rc; m++) {
    if (!(methods & KILN_EXPLAIN_BIT(m))) continue;
    char t[4][96];
    /* short titles: a 64-pixel cell holds 10 characters (the method is the file's name) */
    const char *titles[4] = {"image", "mask", t[2], t[3]};
    int cols = 2;
    if (m == KILN_EXPLAIN_SPN) {
      snprintf(t[2], sizeof t[2], "SPN");
      snprintf(t[3], sizeof t[3], "SPN > 0.5");
      cols = 4;
    } else {
      for (int k = 0; k < n_models; k++)
        if (kiln_explainer_methods(xs[k]) & KILN_EXPLAIN_BIT(m)) snprintf(t[cols++], sizeof t[0], "%s", names[k]);
    }
    ncols[m] = cols;
    rc = kiln_grid_init(&grids[m], count, cols, W, H, titles, e);
  }
  if (rc) goto out;
  images = kiln_malloc(sizeof(float) * (size_t)(B * C * hw));
  raw = kiln_malloc(sizeof(float) * (size_t)(C * hw));
  thr = kiln_malloc(sizeof(float) * (size_t)hw);
  masks = kiln_malloc(sizeof(float) * (size_t)(B * hw));
  has_mask = kiln_calloc((size_t)B, sizeof *has_mask);
  labels = kiln_calloc((size_t)B, sizeof *labels);
  targets = kiln_calloc((size_t)B, sizeof *targets);
  cell = kiln_malloc((size_t)(hw * 3));
  if (!images || !raw || !thr || !masks || !has_mask || !labels || !targets || !cell) {
    rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
    goto out;
  }
  const uint8_t white[3] = {255, 255, 255}, green[3] = {120, 255, 120}, red[3] = {255, 110, 110};
  for (int64_t first = 0; first < count; first += B) {
    int64_t cnt = count - first < B ? count - first : B;
    memset(images, 0, sizeof(float) * (size_t)(B * C * hw));
    /* examples spread evenly over the split, so that the classes (grouped in order) show */
    for (int64_t i = 0; i < cnt && !rc; i++) {
      int64_t idx = (first + i) * d->n / count;
      rc = kiln_load_examples(d, idx, 1, images + i * C * hw, labels + i, masks + i * hw, has_mask + i, 1, e);
    }
    for (int64_t i = 0; i < B; i++) targets[i] = i < cnt && c->target == KILN_TARGET_LABEL ? labels[i] : -1;
    for (int k = 0; k < n_models && !rc; k++) rc = kiln_explain_run(xs[k], images, targets, &ex[k], e);
    if (rc) goto out;
    for (int64_t i = 0; i < cnt; i++) {
      int row = (int)(first + i);
      memcpy(raw, images + i * C * hw, sizeof(float) * (size_t)(C * hw));
      kiln_image_denormalize(raw, (int)C, hw);
      const char *label = kiln_data_class_name(d, labels[i]);
      char num[32];
      snprintf(num, sizeof num, "%lld", (long long)labels[i]);
      for (int m = 0; m < KILN_EXPLAIN_METHODS; m++) {
        if (!grids[m].rgb) continue;
        kiln_grid *g = &grids[m];
        kiln_render_image(raw, H, W, cell);
        caption(cell, W, H, label ? label : num, white);
        kiln_grid_put(g, row, 0, cell);
        if (has_mask[i]) {
          kiln_render_gray(masks + i * hw, H, W, cell);
        } else {
          memset(cell, 128, (size_t)(hw * 3));
          caption(cell, W, H, "no mask", white);
        }
        kiln_grid_put(g, row, 1, cell);
        int col = 2;
        for (int k = 0; k < n_models; k++) {
          const float *map = ex[k].map[m];
          if (!map) continue;
          map += i * hw;
          int64_t pred = kiln_argmax(ex[k].logits + i * K, K);
          const char *pn = kiln_data_class_name(d, pred);
          char cap[96];
          snprintf(cap, sizeof cap, "%s%s", c->target == KILN_TARGET_LABEL ? "pred " : "", pn ? pn : "?");
          if (m == KILN_EXPLAIN_SPN) {
            kiln_render_overlay(raw, map, H, W, c->cmap, c->alpha, cell);
            caption(cell, W, H, cap, pred == labels[i] ? green : red);
            kiln_grid_put(g, row, col++, cell);
            for (int64_t p = 0; p < hw; p++) thr[p] = map[p] > 0.5f;
            kiln_render_gray(thr, H, W, cell);
            kiln_grid_put(g, row, col++, cell);
          } else {
            kiln_render_overlay(raw, map, H, W, c->cmap, c->alpha, cell);
            caption(cell, W, H, cap, pred == labels[i] ? green : red);
            kiln_grid_put(g, row, col++, cell);
          }
        }
      }
    }
    for (int k = 0; k < n_models; k++) kiln_explanation_free(&ex[k]);
  }
  for (int m = 0; m < KILN_EXPLAIN_METHODS && !rc; m++) {
    if (!grids[m].rgb) continue;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.png", c->out, method_file(m));
    rc = kiln_grid_write(&grids[m], path, e);
    if (!rc) printf("wrote %s (%d examples x %d columns)\n", path, count, ncols[m]);
  }
out:
  for (int k = 0; k < 2; k++) kiln_explanation_free(&ex[k]);
  for (int m = 0; m < KILN_EXPLAIN_METHODS; m++) kiln_grid_free(&grids[m]);
  kiln_free(images);
  kiln_free(raw);
  kiln_free(thr);
  kiln_free(masks);
  kiln_free(has_mask);
  kiln_free(labels);
  kiln_free(targets);
  kiln_free(cell);
  return rc;
}

static void print_row(const char *method, const char *model, const kiln_explain_summary *s, int m) {
  const kiln_saliency_score *v = &s->mean[m];
  if (!s->n_scored[m])
    printf("%-10s %-16.16s %7d %15s %14s %8s %10s\n", method, model, 0, "-", "-", "-", "-");
  else
    printf("%-10s %-16.16s %7lld %15.3f %14.3f %8.3f %10.3f\n", method, model, (long long)s->n_scored[m], v->energy,
           v->pointing, v->iou_half, v->iou_top);
}

static kiln_code write_csvs(const char *dir, const char *const *names, const kiln_explain_summary *sums, int n_models,
                            kiln_dataset *d, kiln_err *e) {
  char path[4096];
  snprintf(path, sizeof path, "%s/scores.csv", dir);
  FILE *f = fopen(path, "w");
  if (!f) return kiln_errf(e, KILN_ERR_IO, "%s: cannot write", path);
  fprintf(f, "model,method,images,energy,pointing,iou_half,iou_top,mask_area\n");
  for (int k = 0; k < n_models; k++)
    for (int m = 0; m < KILN_EXPLAIN_METHODS; m++) {
      if (!sums[k].per[m]) continue;
      const kiln_saliency_score *v = &sums[k].mean[m];
      fprintf(f, "%s,%s,%lld,%.6f,%.6f,%.6f,%.6f,%.6f\n", names[k], method_file(m), (long long)sums[k].n_scored[m],
              v->energy, v->pointing, v->iou_half, v->iou_top, sums[k].mask_area);
    }
  if (fclose(f)) return kiln_errf(e, KILN_ERR_IO, "%s: write failed", path);
  snprintf(path, sizeof path, "%s/examples.csv", dir);
  f = fopen(path, "w");
  if (!f) return kiln_errf(e, KILN_ERR_IO, "%s: cannot write", path);
  fprintf(f, "model,method,index,name,label,pred,target,energy,pointing,iou_half,iou_top\n");
  for (int k = 0; k < n_models; k++)
    for (int m = 0; m < KILN_EXPLAIN_METHODS; m++) {
      if (!sums[k].per[m]) continue;
      for (int64_t i = 0; i < sums[k].n; i++) {
        const kiln_saliency_score *v = &sums[k].per[m][i];
        const char *nm = kiln_data_example_name(d, i);
        fprintf(f, "%s,%s,%lld,\"%s\",%lld,%lld,%lld", names[k], method_file(m), (long long)i, nm ? nm : "",
                (long long)sums[k].label[i], (long long)sums[k].pred[i], (long long)sums[k].target[i]);
        if (isnan(v->energy))
          fprintf(f, ",,,,\n");
        else
          fprintf(f, ",%.6f,%.0f,%.6f,%.6f\n", v->energy, v->pointing, v->iou_half, v->iou_top);
      }
    }
  if (fclose(f)) return kiln_errf(e, KILN_ERR_IO, "%s: write failed", path);
  return KILN_OK;
}

int cmd_explain(int argc, char **argv) {
  const char *paths[2] = {NULL, NULL}, *val, *backend = "jit";
  cli_data cd;
  cli_data_init(&cd);
  explain_cli c = {.out = "explain", .count = 8, .cmap = KILN_CMAP_JET, .alpha = 0.5f, .target = KILN_TARGET_PRED};
  kiln_explain_opts xo = kiln_explain_opts_default();
  xo.batch = 4;
  kiln_explain_data_opts dop = kiln_explain_data_opts_default();
  bool bad = false, quiet = false;
  for (int i = 1; i < argc; i++) {
    if (cli_is_help(argv[i])) {
      usage(stdout);
      return 0;
    } else if (cli_data_opt("explain", argc, argv, &i, &cd, &bad)) {
    } else if (cli_opt(argc, argv, &i, "--method", &val, &bad)) {
      if (!kiln_explain_methods_parse(val, &xo.methods))
        return cli_usage_error("explain", "--method must be gradcam, grad, spn or all");
    } else if (cli_opt(argc, argv, &i, "--baseline", &val, &bad)) {
      paths[1] = val;
    } else if (cli_opt(argc, argv, &i, "--target", &val, &bad)) {
      if (!strcmp(val, "pred")) c.target = KILN_TARGET_PRED;
      else if (!strcmp(val, "label")) c.target = KILN_TARGET_LABEL;
      else return cli_usage_error("explain", "--target must be pred or label");
    } else if (cli_opt(argc, argv, &i, "--feature", &val, &bad)) {
      xo.feature = val;
    } else if (cli_opt(argc, argv, &i, "--top", &val, &bad)) {
      dop.top_frac = cli_real("--top", val, 0, 100, &bad) / 100;
      if (!(dop.top_frac > 0 && dop.top_frac <= 1)) return cli_usage_error("explain", "--top must lie in (0, 100]");
    } else if (cli_opt(argc, argv, &i, "--limit", &val, &bad)) {
      dop.limit = cli_int("--limit", val, 0, 1000000000000, &bad);
    } else if (cli_opt(argc, argv, &i, "--count", &val, &bad)) {
      c.count = (int)cli_int("--count", val, 0, 1000000000000, &bad);
      if (c.count < 0 || c.count > 1000) return cli_usage_error("explain", "--count must lie in 0..1000");
    } else if (cli_opt(argc, argv, &i, "--out", &val, &bad) || cli_opt(argc, argv, &i, "-o", &val, &bad)) {
      c.out = val;
    } else if (cli_opt(argc, argv, &i, "--colormap", &val, &bad)) {
      if (!kiln_colormap_parse(val, &c.cmap)) return cli_usage_error("explain", "--colormap must be jet or viridis");
    } else if (cli_opt(argc, argv, &i, "--alpha", &val, &bad)) {
      c.alpha = (float)cli_real("--alpha", val, 0, 1, &bad);
      if (!(c.alpha >= 0 && c.alpha <= 1)) return cli_usage_error("explain", "--alpha must lie in [0, 1]");
    } else if (cli_opt(argc, argv, &i, "--batch", &val, &bad)) {
      xo.batch = cli_int("--batch", val, 1, 1000000000, &bad);
      if (xo.batch < 1) return cli_usage_error("explain", "--batch must be at least 1");
    } else if (cli_opt(argc, argv, &i, "--backend", &val, &bad)) {
      backend = val;
    } else if (cli_opt(argc, argv, &i, "--threads", &val, &bad)) {
      xo.threads = (int)cli_int("--threads", val, 0, 4096, &bad);
    } else if (!strcmp(argv[i], "--allow-fallback")) {
      xo.allow_fallback = true;
    } else if (!strcmp(argv[i], "-q") || !strcmp(argv[i], "--quiet")) {
      quiet = true;
    } else if (argv[i][0] == '-') {
      return cli_usage_error("explain", "unknown option '%s'", argv[i]);
    } else if (!paths[0]) {
      paths[0] = argv[i];
    } else {
      return cli_usage_error("explain", "more than one model given (a second one goes after --baseline)");
    }
    if (bad) return 2;
  }
  if (!paths[0]) return cli_usage_error("explain", "no model given");
  if (!cd.spec) return cli_usage_error("explain", "--data is required");
  if (!strcmp(backend, "ref"))
    xo.backend = KILN_BACKEND_REF;
  else if (strcmp(backend, "jit"))
    return cli_usage_error("explain", "--backend must be jit or ref");
  dop.target = c.target;
  int n_models = paths[1] ? 2 : 1;
  char names[2][128];
  for (int k = 0; k < n_models; k++) stem(paths[k], names[k], sizeof names[k]);
  if (n_models == 2 && !strcmp(names[0], names[1])) {
    snprintf(names[0], sizeof names[0], "model");
    snprintf(names[1], sizeof names[1], "baseline");
  }
  const char *name_ptrs[2] = {names[0], names[1]};
  kiln_err e = {0};
  kiln_explainer *xs[2] = {NULL, NULL};
  kiln_dataset *base = NULL, *d = NULL;
  kiln_explain_summary sums[2];
  memset(sums, 0, sizeof sums);
  int rc = 1;
  for (int k = 0; k < n_models; k++) {
    kiln_explain_opts o = xo;
    if (k == 1) o.methods &= ~KILN_EXPLAIN_BIT(KILN_EXPLAIN_SPN); /* the SPN map is the model's */
    if (k == 1 && !o.methods) continue;
    if (kiln_explainer_create(paths[k], &o, &xs[k], &e)) goto out;
  }
  if (n_models == 2 && !xs[1]) n_models = 1;
  int64_t C, H, W, C2, H2, W2;
  kiln_explainer_image_shape(xs[0], &C, &H, &W);
  if (n_models == 2) {
    kiln_explainer_image_shape(xs[1], &C2, &H2, &W2);
    if (C2 != C || H2 != H || W2 != W || kiln_explainer_batch(xs[1]) != kiln_explainer_batch(xs[0]) ||
        kiln_explainer_classes(xs[1]) != kiln_explainer_classes(xs[0])) {
      kiln_errf(&e, KILN_ERR_INVALID, "%s and %s differ in input shape, batch or classes", paths[0], paths[1]);
      goto out;
    }
  }
  if (cli_data_open(&cd, H, W, &base, &d, &e)) goto out;
  if (mkdir(c.out, 0777) && errno != EEXIST) {
    kiln_errf(&e, KILN_ERR_IO, "%s: cannot create the folder", c.out);
    goto out;
  }
  for (int k = 0; k < n_models; k++) {
    kiln_explain_data_opts o = dop;
    if (!quiet && isatty(2)) {
      o.progress = progress;
      o.progress_ctx = names[k];
    }
    if (kiln_explain_dataset(xs[k], d, &o, &sums[k], &e)) goto out;
  }
  if (write_grids(xs, name_ptrs, n_models, d, &c, &e)) goto out;
  if (write_csvs(c.out, name_ptrs, sums, n_models, d, &e)) goto out;
  int64_t fc, fh, fw;
  const char *feat = kiln_explainer_feature(xs[0], &fc, &fh, &fw);
  printf("\n%s on %s, split %s: %lld examples, %lld with a mask (mean mask area %.1f%% of the image)\n",
         paths[0], cd.spec, cli_split_name(cd.split), (long long)sums[0].n, (long long)sums[0].n_masks,
         100 * sums[0].mask_area);
  if (feat) printf("Grad-CAM on '%s' [%lld,%lld,%lld]; ", feat, (long long)fc, (long long)fh, (long long)fw);
  printf("explaining the %s class; maps min-max normalized per image\n\n",
         c.target == KILN_TARGET_LABEL ? "true" : "predicted");
  printf("%-10s %-16s %7s %15s %14s %8s %10s\n", "method", "model", "images", "energy in mask", "pointing game",
         "IoU@0.5", "IoU@top");
  for (int m = 0; m < KILN_EXPLAIN_METHODS; m++)
    for (int k = 0; k < n_models; k++)
      if (sums[k].per[m]) print_row(kiln_explain_method_name(m), names[k], &sums[k], m);
  printf("\nenergy: share of the map inside the mask (a uniform map scores the mask's area, %.3f);\n"
         "IoU@0.5: the map above half its range; IoU@top: its top %.0f%% of pixels.  Per example: %s/examples.csv\n",
         sums[0].mask_area, 100 * dop.top_frac, c.out);
  rc = 0;
out:
  if (rc) cli_fail(&e);
  for (int k = 0; k < 2; k++) {
    kiln_explain_summary_free(&sums[k]);
    kiln_explainer_free(xs[k]);
  }
  kiln_dataset_free(d);
  kiln_dataset_free(base);
  return rc;
}
