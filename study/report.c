/* report.c — the study's tables, saliency grids and the self-contained report.html
 * (study/report.h). */
#include "study/report.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "data/data.h"
#include "frontend/onnx.h"
#include "kiln.h"
#include "study/explain.h"

/* ---------------------------------------------------------------- tables */

void kiln_table_free(kiln_table *t) {
  if (!t) return;
  kiln_free(t->cells);
  memset(t, 0, sizeof *t);
}

static void table_init(kiln_table *t, const char *title) {
  memset(t, 0, sizeof *t);
  snprintf(t->title, sizeof t->title, "%s", title);
}

static void table_col(kiln_table *t, const char *head, const char *key) {
  if (t->n_cols == KILN_TABLE_MAX_COLS) return;
  t->head[t->n_cols] = head;
  t->key[t->n_cols++] = key;
}

static kiln_code table_row(kiln_table *t, kiln_table_cell **row, kiln_err *e) {
  if (t->n_rows == t->cap) {
    int nc = t->cap ? t->cap * 2 : 16;
    kiln_table_cell *c = kiln_calloc((size_t)nc * (size_t)t->n_cols, sizeof *c);
    if (!c) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
    if (t->cells) memcpy(c, t->cells, sizeof *c * (size_t)t->n_rows * (size_t)t->n_cols);
    kiln_free(t->cells);
    t->cells = c;
    t->cap = nc;
  }
  *row = &t->cells[(size_t)t->n_rows++ * (size_t)t->n_cols];
  memset(*row, 0, sizeof **row * (size_t)t->n_cols);
  return KILN_OK;
}

void kiln_table_cell_str(const kiln_table_cell *c, char *buf, size_t n) {
  if (c->text[0] || !c->ci.n) {
    snprintf(buf, n, "%s", c->text[0] ? c->text : "–");
    return;
  }
  if (!isfinite(c->ci.mean)) {
    snprintf(buf, n, "–");
    return;
  }
  kiln_mean_ci_format(&c->ci, 100.0, buf, n);
}

static bool is_stat(const kiln_table *t, int col) { return t->key[col] != NULL; }
static bool is_runs_col(const kiln_table *t, int col) { return !strcmp(t->head[col], "runs"); }

void kiln_table_markdown(const kiln_table *t, FILE *f) {
  char buf[96];
  fputc('|', f);
  for (int c = 0; c < t->n_cols; c++) fprintf(f, " %s |", t->head[c]);
  fputs("\n|", f);
  for (int c = 0; c < t->n_cols; c++) fputs(is_stat(t, c) ? "---:|" : "---|", f);
  fputc('\n', f);
  for (int r = 0; r < t->n_rows; r++) {
    fputc('|', f);
    for (int c = 0; c < t->n_cols; c++) {
      kiln_table_cell_str(&t->cells[r * t->n_cols + c], buf, sizeof buf);
      fprintf(f, " %s |", buf);
    }
    fputc('\n', f);
  }
}

static void csv_field(FILE *f, const char *s) {
  if (strpbrk(s, ",\"\n")) {
    fputc('"', f);
    for (; *s; s++) {
      if (*s == '"') fputc('"', f);
      fputc(*s, f);
    }
    fputc('"', f);
  } else {
    fputs(s, f);
  }
}

void kiln_table_csv(const kiln_table *t, FILE *f) {
  bool first = true;
  int64_t nmax = 0;
  for (int c = 0; c < t->n_cols; c++) {
    if (is_runs_col(t, c)) continue; /* the n column says it */
    if (!first) fputc(',', f);
    first = false;
    if (is_stat(t, c)) fprintf(f, "%s_mean,%s_ci95", t->key[c], t->key[c]);
    else csv_field(f, t->head[c]);
  }
  fputs(",n\n", f);
  for (int r = 0; r < t->n_rows; r++) {
    nmax = 0;
    first = true;
    for (int c = 0; c < t->n_cols; c++) {
      const kiln_table_cell *cell = &t->cells[r * t->n_cols + c];
      if (is_runs_col(t, c)) continue;
      if (!first) fputc(',', f);
      first = false;
      if (is_stat(t, c)) {
        if (cell->ci.n && isfinite(cell->ci.mean)) fprintf(f, "%.4f", 100 * cell->ci.mean);
        fputc(',', f);
        if (cell->ci.n > 1 && isfinite(cell->ci.half)) fprintf(f, "%.4f", 100 * cell->ci.half);
        if (cell->ci.n > nmax) nmax = cell->ci.n;
      } else {
        csv_field(f, cell->text);
      }
    }
    fprintf(f, ",%lld\n", (long long)nmax);
  }
}

static void html_esc(FILE *f, const char *s) {
  for (; *s; s++) {
    if (*s == '<') fputs("&lt;", f);
    else if (*s == '>') fputs("&gt;", f);
    else if (*s == '&') fputs("&amp;", f);
    else if (*s == '"') fputs("&quot;", f);
    else fputc(*s, f);
  }
}

void kiln_table_html(const kiln_table *t, FILE *f) {
  char buf[96];
  fputs("<div class=\"tw\"><table>\n<thead><tr>", f);
  for (int c = 0; c < t->n_cols; c++) {
    fprintf(f, "<th%s>", is_stat(t, c) ? " class=\"num\"" : "");
    html_esc(f, t->head[c]);
    fputs("</th>", f);
  }
  fputs("</tr></thead>\n<tbody>\n", f);
  for (int r = 0; r < t->n_rows; r++) {
    /* rows of a new backbone start a visual group */
    bool group = r > 0 && strcmp(t->cells[r * t->n_cols].text, t->cells[(r - 1) * t->n_cols].text);
    bool base = false;
    for (int c = 0; c < t->n_cols; c++)
      if (!strcmp(t->cells[r * t->n_cols + c].text, "Baseline")) base = true;
    const char *cls = group && base ? " class=\"group base\"" : group ? " class=\"group\"" : base ? " class=\"base\"" : "";
    fprintf(f, "<tr%s>", cls);
    for (int c = 0; c < t->n_cols; c++) {
      kiln_table_cell_str(&t->cells[r * t->n_cols + c], buf, sizeof buf);
      fprintf(f, "<td%s>", is_stat(t, c) ? " class=\"num\"" : "");
      html_esc(f, buf);
      fputs("</td>", f);
    }
    fputs("</tr>\n", f);
  }
  fputs("</tbody>\n</table></div>\n", f);
}

/* Results of one configuration (all seeds). */
typedef struct group {
  kiln_backbone backbone;
  bool spn;
  double ratio;
  kiln_loc_loss loss;
  int n;
  const kiln_exp_result *r[KILN_EXP_MAX_SEEDS];
} group;

static bool same_config(const kiln_exp_run *a, kiln_backbone b, bool spn, double ratio, kiln_loc_loss loss) {
  return a->backbone == b && a->spn == spn && (!spn || (fabs(a->ratio - ratio) < 1e-9 && a->loss == loss));
}

static group find_group(const kiln_exp_result *r, int n, kiln_backbone b, bool spn, double ratio, kiln_loc_loss loss) {
  group g = {.backbone = b, .spn = spn, .ratio = ratio, .loss = loss};
  for (int i = 0; i < n && g.n < KILN_EXP_MAX_SEEDS; i++)
    if (same_config(&r[i].run, b, spn, ratio, loss)) g.r[g.n++] = &r[i];
  return g;
}

typedef double (*getter)(const kiln_exp_result *r);
#define GETTER(name)                                                                                               \
  static double get_##name(const kiln_exp_result *r) { return r->name; }
GETTER(precision)
GETTER(sensitivity)
GETTER(specificity)
GETTER(f1)
GETTER(accuracy)
GETTER(cam_energy)
GETTER(cam_pointing)
GETTER(grad_energy)
GETTER(spnmap_energy)
GETTER(spn_iou)
GETTER(spn_dice)

static kiln_mean_ci group_ci(const group *g, getter get) {
  double v[KILN_EXP_MAX_SEEDS];
  int64_t k = 0;
  for (int i = 0; i < g->n; i++) {
    double x = get(g->r[i]);
    if (isfinite(x)) v[k++] = x;
  }
  if (!k) return (kiln_mean_ci){.n = g->n, .mean = NAN, .sd = NAN, .half = NAN};
  return kiln_mean_ci95(v, k);
}

/* Distinct values in order of first appearance. */
static int backbones_of(const kiln_exp_result *r, int n, kiln_backbone *out) {
  int k = 0;
  for (int i = 0; i < n; i++) {
    bool seen = false;
    for (int j = 0; j < k; j++) seen |= out[j] == r[i].run.backbone;
    if (!seen && k < KILN_EXP_MAX_BACKBONES) out[k++] = r[i].run.backbone;
  }
  return k;
}

static int ratios_of(const kiln_exp_result *r, int n, double *out) {
  int k = 0;
  for (int i = 0; i < n; i++) {
    if (!r[i].run.spn) continue;
    bool seen = false;
    for (int j = 0; j < k; j++) seen |= fabs(out[j] - r[i].run.ratio) < 1e-9;
    if (!seen && k < KILN_EXP_MAX_RATIOS) out[k++] = r[i].run.ratio;
  }
  return k;
}

static int losses_of(const kiln_exp_result *r, int n, kiln_loc_loss *out) {
  int k = 0;
  for (int i = 0; i < n; i++) {
    if (!r[i].run.spn) continue;
    bool seen = false;
    for (int j = 0; j < k; j++) seen |= out[j] == r[i].run.loss;
    if (!seen && k < KILN_EXP_MAX_LOSSES) out[k++] = r[i].run.loss;
  }
  return k;
}

static const char *net_label(kiln_backbone b) {
  return b == KILN_RESNET18 ? "Res18" : b == KILN_RESNET34 ? "Res34" : "Res50";
}

static const getter class_stats[] = {get_precision, get_sensitivity, get_specificity, get_f1};

static void add_class_cols(kiln_table *t) {
  table_col(t, "avg Precision (%)", "precision");
  table_col(t, "avg Sensitivity (%)", "sensitivity");
  table_col(t, "avg Specificity (%)", "specificity");
  table_col(t, "avg F1-score (%)", "f1");
  table_col(t, "runs", NULL);
}

static kiln_code class_row(kiln_table *t, const group *g, const char *a, const char *b, const char *c, kiln_err *e) {
  if (!g->n) return KILN_OK;
  kiln_table_cell *row;
  KILN_TRY(table_row(t, &row, e));
  snprintf(row[0].text, sizeof row[0].text, "%s", a);
  snprintf(row[1].text, sizeof row[1].text, "%s", b);
  snprintf(row[2].text, sizeof row[2].text, "%s", c);
  for (int i = 0; i < 4; i++) row[3 + i].ci = group_ci(g, class_stats[i]);
  snprintf(row[7].text, sizeof row[7].text, "%d", g->n);
  return KILN_OK;
}

static void ratio_str(double r, char *buf, size_t n) { snprintf(buf, n, "%g", r); }

kiln_code kiln_table_methods(const kiln_exp_result *r, int n, kiln_table *t, kiln_err *e) {
  table_init(t, "Effect of the SPN on classification (the study's Tables 1 and 3)");
  table_col(t, "Network", NULL);
  table_col(t, "Method", NULL);
  table_col(t, "Loc label ratio", NULL);
  add_class_cols(t);
  kiln_backbone bb[KILN_EXP_MAX_BACKBONES];
  double ratios[KILN_EXP_MAX_RATIOS];
  kiln_loc_loss losses[KILN_EXP_MAX_LOSSES];
  int nb = backbones_of(r, n, bb), nr = ratios_of(r, n, ratios), nl = losses_of(r, n, losses);
  /* "Ours" rows use the CE loss, as the study's Table 1 does, or the grid's first loss */
  kiln_loc_loss loss = nl ? losses[0] : KILN_LOC_BCE;
  for (int i = 0; i < nl; i++)
    if (losses[i] == KILN_LOC_BCE) loss = KILN_LOC_BCE;
  char buf[32];
  for (int b = 0; b < nb; b++) {
    for (int q = 0; q < nr; q++) {
      group g = find_group(r, n, bb[b], true, ratios[q], loss);
      ratio_str(ratios[q], buf, sizeof buf);
      KILN_TRY(class_row(t, &g, net_label(bb[b]), "Ours", buf, e));
    }
    group g = find_group(r, n, bb[b], false, 0, KILN_LOC_NONE);
    KILN_TRY(class_row(t, &g, net_label(bb[b]), "Baseline", "0", e));
  }
  return KILN_OK;
}

kiln_code kiln_table_losses(const kiln_exp_result *r, int n, kiln_table *t, kiln_err *e) {
  table_init(t, "Effect of the localization loss (the study's Tables 2 and 4)");
  table_col(t, "Network", NULL);
  table_col(t, "Loc loss", NULL);
  table_col(t, "Annotate ratio", NULL);
  add_class_cols(t);
  kiln_backbone bb[KILN_EXP_MAX_BACKBONES];
  double ratios[KILN_EXP_MAX_RATIOS];
  kiln_loc_loss losses[KILN_EXP_MAX_LOSSES];
  int nb = backbones_of(r, n, bb), nr = ratios_of(r, n, ratios), nl = losses_of(r, n, losses);
  char buf[32];
  for (int b = 0; b < nb; b++) {
    for (int l = 0; l < nl; l++)
      for (int q = 0; q < nr; q++) {
        group g = find_group(r, n, bb[b], true, ratios[q], losses[l]);
        ratio_str(ratios[q], buf, sizeof buf);
        KILN_TRY(class_row(t, &g, net_label(bb[b]), kiln_loc_loss_label(losses[l]), buf, e));
      }
    group g = find_group(r, n, bb[b], false, 0, KILN_LOC_NONE);
    KILN_TRY(class_row(t, &g, net_label(bb[b]), "Baseline", "0", e));
  }
  return KILN_OK;
}

kiln_code kiln_table_saliency(const kiln_exp_result *r, int n, kiln_table *t, kiln_err *e) {
  table_init(t, "Explanations against the ground-truth masks (test split)");
  table_col(t, "Network", NULL);
  table_col(t, "Method", NULL);
  table_col(t, "Loc loss", NULL);
  table_col(t, "Ratio", NULL);
  table_col(t, "Accuracy (%)", "accuracy");
  table_col(t, "Grad-CAM energy in mask (%)", "gradcam_energy");
  table_col(t, "Grad-CAM pointing (%)", "gradcam_pointing");
  table_col(t, "Gradient energy in mask (%)", "gradient_energy");
  table_col(t, "SPN map energy in mask (%)", "spn_map_energy");
  table_col(t, "SPN IoU (%)", "spn_iou");
  table_col(t, "SPN Dice (%)", "spn_dice");
  static const getter stats[] = {get_accuracy,  get_cam_energy, get_cam_pointing, get_grad_energy,
                                 get_spnmap_energy, get_spn_iou, get_spn_dice};
  kiln_backbone bb[KILN_EXP_MAX_BACKBONES];
  double ratios[KILN_EXP_MAX_RATIOS];
  kiln_loc_loss losses[KILN_EXP_MAX_LOSSES];
  int nb = backbones_of(r, n, bb), nr = ratios_of(r, n, ratios), nl = losses_of(r, n, losses);
  for (int b = 0; b < nb; b++)
    for (int l = -1; l < nl; l++)
      for (int q = 0; q < (l < 0 ? 1 : nr); q++) {
        group g = l < 0 ? find_group(r, n, bb[b], false, 0, KILN_LOC_NONE)
                        : find_group(r, n, bb[b], true, ratios[q], losses[l]);
        if (!g.n) continue;
        kiln_table_cell *row;
        KILN_TRY(table_row(t, &row, e));
        snprintf(row[0].text, sizeof row[0].text, "%s", net_label(bb[b]));
        snprintf(row[1].text, sizeof row[1].text, "%s", l < 0 ? "Baseline" : "Ours");
        snprintf(row[2].text, sizeof row[2].text, "%s", l < 0 ? "-" : kiln_loc_loss_label(losses[l]));
        if (l < 0) snprintf(row[3].text, sizeof row[3].text, "0");
        else ratio_str(ratios[q], row[3].text, sizeof row[3].text);
        for (int s = 0; s < 7; s++) row[4 + s].ci = group_ci(&g, stats[s]);
      }
  return KILN_OK;
}

/* ---------------------------------------------------------------- base64 */

void kiln_base64(const uint8_t *in, size_t n, char *out) {
  static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t o = 0;
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16;
    if (i + 1 < n) v |= (uint32_t)in[i + 1] << 8;
    if (i + 2 < n) v |= in[i + 2];
    out[o++] = tab[(v >> 18) & 63];
    out[o++] = tab[(v >> 12) & 63];
    out[o++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
    out[o++] = i + 2 < n ? tab[v & 63] : '=';
  }
  out[o] = 0;
}

/* <img> with the PNG at `path` inline; nothing when it cannot be read. */
static void html_png(FILE *f, const char *path, const char *alt, const char *cls) {
  uint8_t *buf = NULL;
  size_t len = 0;
  kiln_err e = {0};
  if (kiln_read_file(path, 256 << 20, &buf, &len, &e)) {
    fprintf(f, "<p class=\"missing\">(%s could not be read)</p>\n", path);
    return;
  }
  char *b64 = kiln_malloc(4 * ((len + 2) / 3) + 1);
  if (b64) {
    kiln_base64(buf, len, b64);
    fprintf(f, "<img class=\"%s\" alt=\"", cls);
    html_esc(f, alt);
    fprintf(f, "\" src=\"data:image/png;base64,%s\">\n", b64);
  }
  kiln_free(b64);
  kiln_free(buf);
}

/* ---------------------------------------------------------------- grids */

/* Nearest-neighbour upscaling of a planar [c,h,w] image by an integer factor. */
static void upscale(const float *src, int64_t c, int64_t h, int64_t w, int64_t f, float *dst) {
  for (int64_t ch = 0; ch < c; ch++)
    for (int64_t y = 0; y < h * f; y++)
      for (int64_t x = 0; x < w * f; x++) dst[(ch * h * f + y) * w * f + x] = src[(ch * h + y / f) * w + x / f];
}

static int64_t cell_factor(int64_t side) { return side >= 128 ? 1 : (128 + side - 1) / side; }

/* Cells for one example: the raw image and its mask, upscaled. */
typedef struct cells {
  int64_t f, h, w, H, W;
  int64_t label;
  float *img, *mask, *big_img, *big_mask, *big_map;
  uint8_t *rgb;
} cells;

static kiln_code cells_init(cells *c, int64_t h, int64_t w, kiln_err *e) {
  memset(c, 0, sizeof *c);
  c->f = cell_factor(h > w ? h : w);
  c->h = h;
  c->w = w;
  c->H = h * c->f;
  c->W = w * c->f;
  c->img = kiln_calloc((size_t)(3 * h * w), sizeof(float));
  c->mask = kiln_calloc((size_t)(h * w), sizeof(float));
  c->big_img = kiln_calloc((size_t)(3 * c->H * c->W), sizeof(float));
  c->big_mask = kiln_calloc((size_t)(c->H * c->W), sizeof(float));
  c->big_map = kiln_calloc((size_t)(c->H * c->W), sizeof(float));
  c->rgb = kiln_calloc((size_t)(3 * c->H * c->W), 1);
  if (!c->img || !c->mask || !c->big_img || !c->big_mask || !c->big_map || !c->rgb)
    return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  return KILN_OK;
}

static void cells_free(cells *c) {
  kiln_free(c->img);
  kiln_free(c->mask);
  kiln_free(c->big_img);
  kiln_free(c->big_mask);
  kiln_free(c->big_map);
  kiln_free(c->rgb);
}

kiln_code kiln_report_grid_preds_save(const char *path, const int64_t *idx, const int64_t *pred, int rows,
                                      kiln_err *e) {
  FILE *f = fopen(path, "w");
  if (!f) return kiln_errf(e, KILN_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
  fprintf(f, "row,example,pred\n");
  for (int r = 0; r < rows; r++) fprintf(f, "%d,%lld,%lld\n", r, (long long)idx[r], (long long)pred[r]);
  fclose(f);
  return KILN_OK;
}

bool kiln_report_grid_preds_load(const char *path, const int64_t *idx, int rows, int64_t *pred) {
  FILE *f = fopen(path, "r");
  if (!f) return false;
  char line[256];
  int got = 0;
  bool ok = fgets(line, sizeof line, f) != NULL;
  while (ok && got < rows && fgets(line, sizeof line, f)) {
    int r;
    long long ex, p;
    if (sscanf(line, "%d,%lld,%lld", &r, &ex, &p) != 3 || r != got || ex != idx[got]) ok = false;
    else pred[got++] = p;
  }
  fclose(f);
  return ok && got == rows;
}

/* A label in the top left corner of a cell, on a darkened band. */
static void caption(uint8_t *rgb, int64_t W, int64_t H, const char *text, const uint8_t color[3]) {
  int scale = W >= 160 ? 2 : 1;
  int64_t tw = (int64_t)strlen(text) * 6 * scale + 3, th = 7 * scale + 4;
  for (int64_t y = 0; y < th && y < H; y++)
    for (int64_t x = 0; x < tw && x < W; x++)
      for (int ch = 0; ch < 3; ch++) rgb[(y * W + x) * 3 + ch] = (uint8_t)(rgb[(y * W + x) * 3 + ch] * 0.3);
  kiln_draw_text(rgb, W, H, 2, 2, text, scale, color);
}

static const uint8_t white[3] = {255, 255, 255}, green[3] = {80, 230, 80}, red[3] = {255, 80, 80};

static const char *class_label(kiln_dataset *d, int64_t k, char *buf, size_t n) {
  const char *s = kiln_data_class_name(d, k);
  if (s) snprintf(buf, n, "%s", s);
  else snprintf(buf, n, "%lld", (long long)k);
  return buf;
}

static kiln_code cells_load(cells *c, kiln_dataset *d, int64_t idx, kiln_err *e) {
  int64_t label;
  bool hm = false;
  memset(c->mask, 0, sizeof(float) * (size_t)(c->h * c->w));
  KILN_TRY(kiln_data_get_raw(d, idx, c->img, &label, c->mask, &hm, e));
  c->label = label;
  upscale(c->img, 3, c->h, c->w, c->f, c->big_img);
  upscale(c->mask, 1, c->h, c->w, c->f, c->big_mask);
  return KILN_OK;
}

static void put_image(kiln_grid *g, cells *c, kiln_dataset *d, int row, int col) {
  char name[64];
  kiln_render_image(c->big_img, c->H, c->W, c->rgb);
  caption(c->rgb, c->W, c->H, class_label(d, c->label, name, sizeof name), white);
  kiln_grid_put(g, row, col, c->rgb);
}

static void put_mask(kiln_grid *g, cells *c, int row, int col) {
  kiln_render_gray(c->big_mask, c->H, c->W, c->rgb);
  kiln_grid_put(g, row, col, c->rgb);
}

/* A heat map over the image (jet, half transparent), captioned with the prediction
 * when pred >= 0. */
static void put_overlay(kiln_grid *g, cells *c, kiln_dataset *d, const float *map, int64_t pred, int row, int col) {
  char name[64];
  upscale(map, 1, c->h, c->w, c->f, c->big_map);
  kiln_render_overlay(c->big_img, c->big_map, c->H, c->W, KILN_CMAP_JET, 0.5f, c->rgb);
  if (pred >= 0) caption(c->rgb, c->W, c->H, class_label(d, pred, name, sizeof name), pred == c->label ? green : red);
  kiln_grid_put(g, row, col, c->rgb);
}

/* The SPN's predicted mask probability as gray, like the truth column. */
static void put_prob(kiln_grid *g, cells *c, const float *map, int row, int col) {
  upscale(map, 1, c->h, c->w, c->f, c->big_map);
  kiln_render_gray(c->big_map, c->H, c->W, c->rgb);
  kiln_grid_put(g, row, col, c->rgb);
}

kiln_code kiln_report_run_grid(kiln_dataset *test, const int64_t *idx, const int64_t *pred, int rows,
                               const float *maps, bool spn, const char *path, kiln_err *e) {
  if (rows < 1) return KILN_OK;
  int64_t h = test->h, w = test->w, hw = h * w;
  const char *titles[] = {"image", "truth", "Grad-CAM", "gradient", "SPN"};
  int cols = spn ? 5 : 4;
  cells c;
  kiln_grid g;
  memset(&g, 0, sizeof g);
  kiln_code rc = cells_init(&c, h, w, e);
  if (!rc) rc = kiln_grid_init(&g, rows, cols, c.W, c.H, titles, e);
  for (int r = 0; !rc && r < rows; r++) {
    if ((rc = cells_load(&c, test, idx[r], e))) break;
    const float *m = maps + (int64_t)r * KILN_EXPLAIN_METHODS * hw;
    put_image(&g, &c, test, r, 0);
    put_mask(&g, &c, r, 1);
    put_overlay(&g, &c, test, m + KILN_EXPLAIN_GRADCAM * hw, pred ? pred[r] : -1, r, 2);
    put_overlay(&g, &c, test, m + KILN_EXPLAIN_GRAD * hw, -1, r, 3);
    if (spn) put_prob(&g, &c, m + KILN_EXPLAIN_SPN * hw, r, 4);
  }
  if (!rc) rc = kiln_grid_write(&g, path, e);
  kiln_grid_free(&g);
  cells_free(&c);
  return rc;
}

/* The comparison grid of one backbone (first seed): image | truth | Grad-CAM of the
 * baseline | for each SPN model (the table-1 loss): its Grad-CAM and its SPN map. */
typedef struct cmp_col {
  const kiln_exp_result *r;
  kiln_tensor *maps;
  int method;
  char title[40];
  int64_t pred[64]; /* per row, -1 when unknown */
} cmp_col;

static kiln_code compare_grid(const kiln_exp_config *c, const kiln_exp_result *r, int n, kiln_backbone bb,
                              kiln_dataset *test, const int64_t *idx, int rows, const char *path, bool *written,
                              kiln_err *e) {
  *written = false;
  if (rows < 1) return KILN_OK;
  cmp_col cols[2 + 2 * KILN_EXP_MAX_RATIOS + 1];
  int nc = 0;
  double ratios[KILN_EXP_MAX_RATIOS];
  kiln_loc_loss losses[KILN_EXP_MAX_LOSSES];
  int nr = ratios_of(r, n, ratios), nl = losses_of(r, n, losses);
  kiln_loc_loss loss = nl ? losses[0] : KILN_LOC_BCE;
  for (int i = 0; i < nl; i++)
    if (losses[i] == KILN_LOC_BCE) loss = KILN_LOC_BCE;
  uint64_t seed = 0;
  bool have_seed = false;
  for (int i = 0; i < n; i++)
    if (r[i].run.backbone == bb && !have_seed) {
      seed = r[i].run.seed;
      have_seed = true;
    }
  for (int i = 0; i < n; i++)
    if (r[i].run.backbone == bb && r[i].run.seed == seed && !r[i].run.spn && nc < 1)
      cols[nc++] = (cmp_col){.r = &r[i], .method = KILN_EXPLAIN_GRADCAM, .title = "baseline Grad-CAM"};
  for (int q = 0; q < nr; q++)
    for (int i = 0; i < n; i++) {
      const kiln_exp_run *u = &r[i].run;
      if (u->backbone != bb || u->seed != seed || !u->spn || u->loss != loss || fabs(u->ratio - ratios[q]) > 1e-9)
        continue;
      cols[nc] = (cmp_col){.r = &r[i], .method = KILN_EXPLAIN_GRADCAM};
      snprintf(cols[nc++].title, sizeof cols[0].title, "SPN r%g Grad-CAM", ratios[q]);
      cols[nc] = (cmp_col){.r = &r[i], .method = KILN_EXPLAIN_SPN};
      snprintf(cols[nc++].title, sizeof cols[0].title, "SPN r%g mask", ratios[q]);
      break;
    }
  if (nc == 0) return KILN_OK;
  kiln_code rc = KILN_OK;
  int64_t h = test->h, w = test->w, hw = h * w;
  for (int j = 0; j < nc && !rc; j++) {
    char mp[KILN_EXP_PATH + 128];
    snprintf(mp, sizeof mp, "%s/runs/%s/maps.npy", c->out, cols[j].r->run.id);
    if (j > 0 && cols[j].r == cols[j - 1].r) {
      cols[j].maps = NULL; /* shares the previous column's maps */
      continue;
    }
    char gp[KILN_EXP_PATH + 128];
    snprintf(gp, sizeof gp, "%s/runs/%s/grid.csv", c->out, cols[j].r->run.id);
    if (rows > 64 || !kiln_report_grid_preds_load(gp, idx, rows, cols[j].pred))
      for (int q = 0; q < 64; q++) cols[j].pred[q] = -1;
    rc = kiln_tensor_load_npy(mp, &cols[j].maps, e);
    if (!rc && (cols[j].maps->shape.rank != 4 || cols[j].maps->shape.d[0] < rows ||
                cols[j].maps->shape.d[1] != KILN_EXPLAIN_METHODS || cols[j].maps->shape.d[2] != h ||
                cols[j].maps->shape.d[3] != w))
      rc = kiln_errf(e, KILN_ERR_SHAPE, "%s: saliency maps of another grid (run the experiment again)", mp);
  }
  const char *titles[2 + 2 * KILN_EXP_MAX_RATIOS + 1];
  titles[0] = "image";
  titles[1] = "truth";
  for (int j = 0; j < nc; j++) titles[2 + j] = cols[j].title;
  cells cl;
  memset(&cl, 0, sizeof cl);
  kiln_grid g;
  memset(&g, 0, sizeof g);
  if (!rc) rc = cells_init(&cl, h, w, e);
  if (!rc) rc = kiln_grid_init(&g, rows, 2 + nc, cl.W, cl.H, titles, e);
  for (int row = 0; !rc && row < rows; row++) {
    if ((rc = cells_load(&cl, test, idx[row], e))) break;
    put_image(&g, &cl, test, row, 0);
    put_mask(&g, &cl, row, 1);
    for (int j = 0; j < nc; j++) {
      const kiln_tensor *mt = cols[j].maps ? cols[j].maps : cols[j - 1].maps;
      const float *m = (const float *)mt->data + ((int64_t)row * KILN_EXPLAIN_METHODS + cols[j].method) * hw;
      if (cols[j].method == KILN_EXPLAIN_SPN) put_prob(&g, &cl, m, row, 2 + j);
      else put_overlay(&g, &cl, test, m, row < 64 ? cols[j].pred[row] : -1, row, 2 + j);
    }
  }
  if (!rc) rc = kiln_grid_write(&g, path, e);
  if (!rc) *written = true;
  kiln_grid_free(&g);
  cells_free(&cl);
  for (int j = 0; j < nc; j++) kiln_tensor_free(cols[j].maps);
  return rc;
}

/* ---------------------------------------------------------------- SVG charts */

static const char *palette[] = {"#4e79a7", "#e15759", "#59a14f", "#f28e2b", "#b07aa1",
                                "#76b7b2", "#edc948", "#9c755f", "#ff9da7", "#bab0ac"};
#define PALETTE_N 10

typedef struct series {
  char name[96];
  const double *y;
  int n;
  int mark; /* 0-based index of a point to mark (the best epoch), -1 none */
} series;

static double nice_step(double range, int ticks) {
  double raw = range / ticks, mag = pow(10, floor(log10(raw))), f = raw / mag;
  return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
}

static void svg_lines(FILE *f, const char *title, const char *ylabel, const series *s, int ns, bool percent) {
  const double W = 560, H = 300, L = 56, R = 12, T = 28, B = 40;
  int xmax = 1;
  double lo = INFINITY, hi = -INFINITY;
  for (int i = 0; i < ns; i++) {
    if (s[i].n > xmax) xmax = s[i].n;
    for (int k = 0; k < s[i].n; k++)
      if (isfinite(s[i].y[k])) {
        lo = fmin(lo, s[i].y[k]);
        hi = fmax(hi, s[i].y[k]);
      }
  }
  if (!isfinite(lo)) lo = 0, hi = 1;
  if (percent) lo = 0, hi = 1; /* shares: always the whole 0..100% */
  if (lo > 0) lo = 0;
  if (hi <= lo) hi = lo + 1;
  double step = nice_step(hi - lo, 5);
  hi = ceil(hi / step - 1e-9) * step;
  fprintf(f, "<svg class=\"chart\" viewBox=\"0 0 %g %g\" width=\"%g\" height=\"%g\" role=\"img\">\n", W, H, W, H);
  fprintf(f, "<title>");
  html_esc(f, title);
  fprintf(f, "</title>\n<text x=\"%g\" y=\"18\" class=\"ct\">", L);
  html_esc(f, title);
  fprintf(f, "</text>\n");
  double pw = W - L - R, ph = H - T - B;
#define PX(x) (L + ((xmax > 1) ? ((x)-1) / (double)(xmax - 1) : 0.5) * pw)
#define PY(y) (T + ph - ((y)-lo) / (hi - lo) * ph)
  for (double y = lo; y <= hi + 1e-9; y += step) {
    fprintf(f, "<line x1=\"%g\" x2=\"%g\" y1=\"%.1f\" y2=\"%.1f\" class=\"grid\"/>", L, W - R, PY(y), PY(y));
    if (percent) fprintf(f, "<text x=\"%g\" y=\"%.1f\" class=\"yl\">%.0f%%</text>\n", L - 6, PY(y) + 4, 100 * y);
    else fprintf(f, "<text x=\"%g\" y=\"%.1f\" class=\"yl\">%g</text>\n", L - 6, PY(y) + 4, y);
  }
  int xstep = xmax <= 10 ? 1 : xmax <= 20 ? 2 : xmax <= 50 ? 5 : 10;
  for (int x = 1; x <= xmax; x += xstep)
    fprintf(f, "<text x=\"%.1f\" y=\"%g\" class=\"xl\">%d</text>", PX(x), T + ph + 16, x);
  fprintf(f, "\n<text x=\"%g\" y=\"%g\" class=\"xl\">epoch</text>\n", L + pw / 2, H - 6);
  fprintf(f, "<text transform=\"translate(14 %g) rotate(-90)\" class=\"xl\">", T + ph / 2);
  html_esc(f, ylabel);
  fprintf(f, "</text>\n");
  for (int i = 0; i < ns; i++) {
    const char *col = palette[i % PALETTE_N];
    fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", col);
    for (int k = 0; k < s[i].n; k++)
      if (isfinite(s[i].y[k])) fprintf(f, "%.1f,%.1f ", PX(k + 1), PY(s[i].y[k]));
    fprintf(f, "\"><title>");
    html_esc(f, s[i].name);
    fprintf(f, "</title></polyline>\n");
    if (s[i].mark >= 0 && s[i].mark < s[i].n && isfinite(s[i].y[s[i].mark]))
      fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4.5\" fill=\"%s\" stroke=\"#fff\"/>\n", PX(s[i].mark + 1),
              PY(s[i].y[s[i].mark]), col);
  }
#undef PX
#undef PY
  fprintf(f, "</svg>\n");
}

/* Grouped bars: categories along x, one bar per series. */
static void svg_bars(FILE *f, const char *title, char **cats, int nc, const series *s, int ns) {
  const double L = 48, R = 12, T = 28, B = 64, H = 300;
  double group_w = fmax(24.0 * ns + 14, 60), W = L + R + group_w * nc;
  if (W < 480) W = 480, group_w = (W - L - R) / (nc ? nc : 1);
  double ph = H - T - B, bw = fmin(22, (group_w - 12) / (ns ? ns : 1));
  fprintf(f, "<svg class=\"chart\" viewBox=\"0 0 %.0f %g\" width=\"%.0f\" height=\"%g\" role=\"img\">\n", W, H, W, H);
  fprintf(f, "<title>");
  html_esc(f, title);
  fprintf(f, "</title>\n<text x=\"%g\" y=\"18\" class=\"ct\">", L);
  html_esc(f, title);
  fprintf(f, "</text>\n");
  for (int p = 0; p <= 100; p += 25) {
    double y = T + ph - p / 100.0 * ph;
    fprintf(f, "<line x1=\"%g\" x2=\"%.0f\" y1=\"%.1f\" y2=\"%.1f\" class=\"grid\"/><text x=\"%g\" y=\"%.1f\" "
               "class=\"yl\">%d%%</text>\n",
            L, W - R, y, y, L - 6, y + 4, p);
  }
  for (int c = 0; c < nc; c++) {
    double x0 = L + c * group_w + (group_w - bw * ns) / 2;
    for (int i = 0; i < ns; i++) {
      double v = c < s[i].n ? s[i].y[c] : NAN;
      if (!isfinite(v)) continue;
      double hgt = fmax(0, fmin(1, v)) * ph;
      fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"><title>", x0 + i * bw,
              T + ph - hgt, bw - 2, hgt, palette[i % PALETTE_N]);
      html_esc(f, s[i].name);
      fprintf(f, ", ");
      html_esc(f, cats[c]);
      fprintf(f, ": %.1f%%</title></rect>\n", 100 * v);
    }
    fprintf(f, "<text x=\"%.1f\" y=\"%g\" class=\"xl\" transform=\"rotate(-30 %.1f %g)\">",
            L + c * group_w + group_w / 2, T + ph + 18, L + c * group_w + group_w / 2, T + ph + 18);
    html_esc(f, cats[c]);
    fprintf(f, "</text>\n");
  }
  fprintf(f, "</svg>\n");
}

static void legend(FILE *f, const series *s, int ns) {
  fprintf(f, "<div class=\"legend\">");
  for (int i = 0; i < ns; i++) {
    fprintf(f, "<span><i style=\"background:%s\"></i>", palette[i % PALETTE_N]);
    html_esc(f, s[i].name);
    fprintf(f, "</span>");
  }
  fprintf(f, "</div>\n");
}

/* ---------------------------------------------------------------- files */

static kiln_code write_table_files(const kiln_exp_config *c, const kiln_table *t, const char *stem, kiln_err *e) {
  char path[KILN_EXP_PATH + 64];
  snprintf(path, sizeof path, "%s/%s.md", c->out, stem);
  FILE *f = fopen(path, "w");
  if (!f) return kiln_errf(e, KILN_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
  fprintf(f, "**%s**\n\n", t->title);
  kiln_table_markdown(t, f);
  fclose(f);
  snprintf(path, sizeof path, "%s/%s.csv", c->out, stem);
  f = fopen(path, "w");
  if (!f) return kiln_errf(e, KILN_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
  kiln_table_csv(t, f);
  fclose(f);
  return KILN_OK;
}

static void num_csv(FILE *f, double v) {
  if (isfinite(v)) fprintf(f, ",%.6f", v);
  else fputc(',', f);
}

static kiln_code write_runs_csv(const kiln_exp_config *c, const kiln_exp_result *r, int n, kiln_err *e) {
  char path[KILN_EXP_PATH + 64];
  snprintf(path, sizeof path, "%s/runs.csv", c->out);
  FILE *f = fopen(path, "w");
  if (!f) return kiln_errf(e, KILN_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
  fprintf(f, "id,backbone,method,loss,ratio,seed,best_epoch,epochs,seconds,accuracy,precision,sensitivity,"
             "specificity,f1,spn_iou,spn_dice,gradcam_energy,gradcam_pointing,gradcam_iou_top20,gradient_energy,"
             "gradient_pointing,spn_map_energy,spn_map_pointing,mask_area\n");
  for (int i = 0; i < n; i++) {
    const kiln_exp_result *x = &r[i];
    fprintf(f, "%s,%s,%s,%s,%g,%llu,%d,%d,%.1f", x->run.id, kiln_backbone_name(x->run.backbone),
            x->run.spn ? "spn" : "baseline", x->run.spn ? kiln_loc_loss_label(x->run.loss) : "", x->run.ratio,
            (unsigned long long)x->run.seed, x->best_epoch, x->epochs, x->seconds);
    double v[] = {x->accuracy,   x->precision,    x->sensitivity,  x->specificity, x->f1,
                  x->spn_iou,    x->spn_dice,     x->cam_energy,   x->cam_pointing, x->cam_iou,
                  x->grad_energy, x->grad_pointing, x->spnmap_energy, x->spnmap_pointing, x->mask_area};
    for (size_t k = 0; k < sizeof v / sizeof *v; k++) num_csv(f, v[k]);
    fputc('\n', f);
  }
  fclose(f);
  return KILN_OK;
}

static const char *css =
    "body{font:15px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1d2330;background:#f6f7f9;"
    "margin:0}\n"
    "main{max-width:1180px;margin:0 auto;padding:24px 28px 48px}\n"
    "header{background:#1d2b45;color:#fff;padding:22px 28px}header h1{margin:0 0 4px;font-size:24px}\n"
    "header p{margin:0;color:#c9d3e6}\n"
    "h2{font-size:19px;margin:34px 0 8px;border-bottom:2px solid #dfe3ea;padding-bottom:4px}\n"
    "p.note{color:#566;margin:4px 0 12px;max-width:900px}\n"
    ".cards{display:flex;flex-wrap:wrap;gap:14px;margin:18px 0}\n"
    ".card{background:#fff;border:1px solid #dfe3ea;border-radius:8px;padding:12px 16px;min-width:220px}\n"
    ".card h3{margin:0 0 6px;font-size:14px;color:#566;font-weight:600}\n"
    ".card .big{font-size:22px;font-weight:600}.card .vs{color:#566;font-size:13px}\n"
    ".up{color:#1a7f37}.down{color:#c0392b}\n"
    "table{border-collapse:collapse;background:#fff;margin:8px 0 4px;font-size:14px;"
    "box-shadow:0 1px 2px rgba(0,0,0,.06)}\n"
    "th,td{padding:5px 10px;border-bottom:1px solid #e8ebf0;text-align:left;white-space:nowrap}\n"
    ".tw{overflow-x:auto;max-width:100%}\n"
    "th{background:#eef1f6;font-weight:600;white-space:normal;vertical-align:bottom;max-width:9em}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}\n"
    "tr.base td{background:#fbf7ec}tr.group td{border-top:2px solid #c9d0dc}\n"
    ".charts{display:flex;flex-wrap:wrap;gap:16px}\n"
    "svg.chart{background:#fff;border:1px solid #dfe3ea;border-radius:6px}\n"
    "svg .grid{stroke:#e6e9ef}svg .yl{font-size:11px;text-anchor:end;fill:#566}\n"
    "svg .xl{font-size:11px;text-anchor:middle;fill:#566}svg .ct{font-size:13px;font-weight:600;fill:#1d2330}\n"
    ".legend{display:flex;flex-wrap:wrap;gap:12px;font-size:13px;margin:6px 0}\n"
    ".legend i{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:5px;"
    "vertical-align:-1px}\n"
    "img.grid{max-width:100%;border:1px solid #dfe3ea;background:#fff;image-rendering:auto}\n"
    "details{margin:8px 0}summary{cursor:pointer;color:#1d4ed8}\n"
    "code{background:#eef1f6;padding:1px 4px;border-radius:3px}\n"
    "footer{color:#778;font-size:13px;margin-top:36px}\n";

static const char *run_label(const kiln_exp_run *r, char *buf, size_t n) {
  if (!r->spn) snprintf(buf, n, "%s baseline", net_label(r->backbone));
  else snprintf(buf, n, "%s SPN r%g %s", net_label(r->backbone), r->ratio, kiln_loc_loss_label(r->loss));
  return buf;
}

/* One headline card per backbone: the baseline against the best SPN model of table 1. */
static void cards(FILE *f, const kiln_exp_result *r, int n) {
  kiln_backbone bb[KILN_EXP_MAX_BACKBONES];
  double ratios[KILN_EXP_MAX_RATIOS];
  kiln_loc_loss losses[KILN_EXP_MAX_LOSSES];
  int nb = backbones_of(r, n, bb), nr = ratios_of(r, n, ratios), nl = losses_of(r, n, losses);
  kiln_loc_loss loss = nl ? losses[0] : KILN_LOC_BCE;
  for (int i = 0; i < nl; i++)
    if (losses[i] == KILN_LOC_BCE) loss = KILN_LOC_BCE;
  fprintf(f, "<div class=\"cards\">\n");
  for (int b = 0; b < nb; b++) {
    group base = find_group(r, n, bb[b], false, 0, KILN_LOC_NONE);
    kiln_mean_ci bf1 = group_ci(&base, get_f1), bcam = group_ci(&base, get_cam_energy);
    for (int q = 0; q < nr; q++) {
      group g = find_group(r, n, bb[b], true, ratios[q], loss);
      if (!g.n) continue;
      kiln_mean_ci f1 = group_ci(&g, get_f1), cam = group_ci(&g, get_cam_energy);
      fprintf(f, "<div class=\"card\"><h3>%s, SPN with %g%% of the masks (%s)</h3>", net_label(bb[b]),
              100 * ratios[q], kiln_loc_loss_label(loss));
      fprintf(f, "<div class=\"big\">F1 %.1f%%", 100 * f1.mean);
      if (base.n && isfinite(bf1.mean))
        fprintf(f, " <span class=\"%s\">(%+.1f)</span>", f1.mean >= bf1.mean ? "up" : "down",
                100 * (f1.mean - bf1.mean));
      fprintf(f, "</div>");
      if (base.n) fprintf(f, "<div class=\"vs\">baseline %.1f%%</div>", 100 * bf1.mean);
      if (isfinite(cam.mean)) {
        fprintf(f, "<div class=\"big\">Grad-CAM in mask %.1f%%", 100 * cam.mean);
        if (base.n && isfinite(bcam.mean))
          fprintf(f, " <span class=\"%s\">(%+.1f)</span>", cam.mean >= bcam.mean ? "up" : "down",
                  100 * (cam.mean - bcam.mean));
        fprintf(f, "</div>");
        if (base.n && isfinite(bcam.mean)) fprintf(f, "<div class=\"vs\">baseline %.1f%%</div>", 100 * bcam.mean);
      }
      fprintf(f, "</div>\n");
    }
  }
  fprintf(f, "</div>\n");
}

static kiln_code write_html(const kiln_exp_config *c, const kiln_exp_result *r, int n, const kiln_table *t1,
                            const kiln_table *t2, const kiln_table *ts, const char (*cmp)[KILN_EXP_PATH + 64],
                            const kiln_backbone *cmp_bb, int n_cmp, double seconds, kiln_err *e) {
  char path[KILN_EXP_PATH + 64], tmp[KILN_EXP_PATH + 80];
  snprintf(path, sizeof path, "%s/report.html", c->out);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (!f) return kiln_errf(e, KILN_ERR_IO, "%s: cannot write: %s", tmp, strerror(errno));
  const char *title = c->title[0] ? c->title : "kiln experiment";
  fprintf(f, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
             "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>");
  html_esc(f, title);
  fprintf(f, "</title>\n<style>\n%s</style>\n</head>\n<body>\n<header><h1>", css);
  html_esc(f, title);
  fprintf(f, "</h1><p>");
  html_esc(f, c->data);
  int seeds = c->n_seeds;
  fprintf(f, " &middot; %lld&times;%lld images &middot; %d run%s (%d seed%s) &middot; %d epoch%s, batch %lld, "
             "Adam lr %g &middot; %.0f s</p></header>\n<main>\n",
          (long long)c->image_size, (long long)c->image_size, n, n == 1 ? "" : "s", seeds, seeds == 1 ? "" : "s",
          c->epochs, c->epochs == 1 ? "" : "s", (long long)c->batch, c->lr, seconds);
  fprintf(f, "<p class=\"note\">The study's comparison: a ResNet classifier (baseline) against the same F-Net "
             "with a saliency prediction network (SPN) trained on the masks of a fraction of the training "
             "images. Each model keeps its best epoch on the validation split; everything below is measured "
             "on the test split. Values are means over seeds, &plusmn; the 95%% t-interval when there are "
             "several.</p>\n");
  cards(f, r, n);
  fprintf(f, "<h2>Table 1 &mdash; ");
  html_esc(f, t1->title);
  fprintf(f, "</h2>\n");
  kiln_table_html(t1, f);
  fprintf(f, "<p class=\"note\">Ours: F-Net + C-Net + SPN trained with the localization loss on the masks "
             "of a fraction (loc label ratio) of the training images. Baseline: the ResNet alone. Averages "
             "are over classes (macro).</p>\n");
  fprintf(f, "<h2>Table 2 &mdash; ");
  html_esc(f, t2->title);
  fprintf(f, "</h2>\n");
  kiln_table_html(t2, f);
  fprintf(f, "<p class=\"note\">CE: binary cross-entropy on the SPN's logits; L1 and L2: distance between "
             "sigmoid(SPN) and the mask.</p>\n");
  fprintf(f, "<h2>Where the models look</h2>\n");
  kiln_table_html(ts, f);
  fprintf(f, "<p class=\"note\">Energy in mask: the share of a saliency map's (min-max normalized) sum "
             "inside the object's mask; a map spread uniformly scores the mask's area share (%.1f%% here). "
             "Pointing: how often the map's peak lies on the object. SPN IoU/Dice: the SPN's thresholded "
             "output (sigmoid &gt; 0.5) against the mask.</p>\n",
          n && isfinite(r[0].mask_area) ? 100 * r[0].mask_area : NAN);
  for (int i = 0; i < n_cmp; i++) {
    fprintf(f, "<h3>%s: test images, baseline and SPN side by side</h3>\n", net_label(cmp_bb[i]));
    html_png(f, cmp[i], "saliency comparison", "grid");
  }
  /* per-class bars: F1 of each configuration (table 1's) per class */
  kiln_backbone bb[KILN_EXP_MAX_BACKBONES];
  double ratios[KILN_EXP_MAX_RATIOS];
  kiln_loc_loss losses[KILN_EXP_MAX_LOSSES];
  int nb = backbones_of(r, n, bb), nr = ratios_of(r, n, ratios), nl = losses_of(r, n, losses);
  kiln_loc_loss loss = nl ? losses[0] : KILN_LOC_BCE;
  for (int i = 0; i < nl; i++)
    if (losses[i] == KILN_LOC_BCE) loss = KILN_LOC_BCE;
  fprintf(f, "<h2>Per class</h2>\n<p class=\"note\">Test F1 and sensitivity of each class (mean over seeds).</p>\n");
  for (int b = 0; b < nb; b++) {
    series s[1 + KILN_EXP_MAX_RATIOS], s2[1 + KILN_EXP_MAX_RATIOS];
    double *buf = kiln_calloc((size_t)(2 * (1 + nr) * KILN_METRICS_MAX_CLASSES), sizeof(double));
    if (!buf) {
      fclose(f);
      return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
    }
    int ns = 0;
    char **names = NULL;
    int64_t k = 0;
    for (int q = -1; q < nr; q++) {
      group g = q < 0 ? find_group(r, n, bb[b], false, 0, KILN_LOC_NONE) : find_group(r, n, bb[b], true, ratios[q], loss);
      if (!g.n) continue;
      k = g.r[0]->k;
      names = g.r[0]->class_names;
      double *y = buf + (size_t)ns * 2 * KILN_METRICS_MAX_CLASSES, *y2 = y + KILN_METRICS_MAX_CLASSES;
      for (int64_t cls = 0; cls < k; cls++) {
        for (int i = 0; i < g.n; i++) {
          y[cls] += g.r[i]->cls_f1[cls] / g.n;
          y2[cls] += g.r[i]->cls_sensitivity[cls] / g.n;
        }
      }
      s[ns] = (series){.y = y, .n = (int)k, .mark = -1};
      s2[ns] = (series){.y = y2, .n = (int)k, .mark = -1};
      if (q < 0) snprintf(s[ns].name, sizeof s[ns].name, "baseline");
      else snprintf(s[ns].name, sizeof s[ns].name, "SPN r%g", ratios[q]);
      memcpy(s2[ns].name, s[ns].name, sizeof s[ns].name);
      ns++;
    }
    if (ns && names) {
      char t[96];
      fprintf(f, "<div class=\"charts\">\n");
      snprintf(t, sizeof t, "%s: F1 per class", net_label(bb[b]));
      svg_bars(f, t, names, (int)k, s, ns);
      snprintf(t, sizeof t, "%s: sensitivity per class", net_label(bb[b]));
      svg_bars(f, t, names, (int)k, s2, ns);
      fprintf(f, "</div>\n");
      legend(f, s, ns);
    }
    kiln_free(buf);
  }
  /* training curves of the first seed of each backbone */
  fprintf(f, "<h2>Training</h2>\n<p class=\"note\">Training loss (classification + &lambda; &middot; "
             "localization) per epoch and validation F1; the dot marks the epoch kept.</p>\n");
  for (int b = 0; b < nb; b++) {
    series sl[64], sv[64];
    int ns = 0;
    uint64_t seed = 0;
    bool have = false;
    for (int i = 0; i < n && ns < 64; i++) {
      if (r[i].run.backbone != bb[b]) continue;
      if (!have) seed = r[i].run.seed, have = true;
      if (r[i].run.seed != seed) continue;
      run_label(&r[i].run, sl[ns].name, sizeof sl[ns].name);
      sl[ns].y = r[i].train_loss;
      sl[ns].n = r[i].n_curve;
      sl[ns].mark = r[i].best_epoch - 1;
      sv[ns] = sl[ns];
      sv[ns].y = r[i].val_f1;
      ns++;
    }
    char t[96];
    fprintf(f, "<div class=\"charts\">\n");
    snprintf(t, sizeof t, "%s: training loss (seed %llu)", net_label(bb[b]), (unsigned long long)seed);
    svg_lines(f, t, "loss", sl, ns, false);
    snprintf(t, sizeof t, "%s: validation F1 (seed %llu)", net_label(bb[b]), (unsigned long long)seed);
    svg_lines(f, t, "mean F1", sv, ns, true);
    fprintf(f, "</div>\n");
    legend(f, sl, ns);
  }
  /* runs */
  fprintf(f, "<h2>Runs</h2>\n<table>\n<thead><tr><th>run</th><th class=\"num\">best epoch</th>"
             "<th class=\"num\">accuracy</th><th class=\"num\">mean F1</th><th class=\"num\">Grad-CAM in mask</th>"
             "<th class=\"num\">SPN IoU</th><th class=\"num\">time</th><th>files</th></tr></thead>\n<tbody>\n");
  for (int i = 0; i < n; i++) {
    const kiln_exp_result *x = &r[i];
    fprintf(f, "<tr><td>%s</td><td class=\"num\">%d/%d</td><td class=\"num\">%.1f%%</td><td class=\"num\">"
               "%.1f%%</td><td class=\"num\">%.1f%%</td>",
            x->run.id, x->best_epoch, x->epochs, 100 * x->accuracy, 100 * x->f1, 100 * x->cam_energy);
    if (isfinite(x->spn_iou)) fprintf(f, "<td class=\"num\">%.1f%%</td>", 100 * x->spn_iou);
    else fprintf(f, "<td class=\"num\">&ndash;</td>");
    fprintf(f, "<td class=\"num\">%.0f s</td><td><a href=\"runs/%s/epochs.csv\">epochs</a> &middot; "
               "<a href=\"runs/%s/steps.csv\">steps</a> &middot; <a href=\"runs/%s/test_classes.csv\">classes</a>"
               " &middot; <a href=\"runs/%s/result.json\">json</a></td></tr>\n",
            x->seconds, x->run.id, x->run.id, x->run.id, x->run.id);
  }
  fprintf(f, "</tbody>\n</table>\n");
  /* each run's own grid, folded */
  fprintf(f, "<h2>Saliency of every run</h2>\n");
  for (int i = 0; i < n; i++) {
    char p[KILN_EXP_PATH + 160], lab[96];
    snprintf(p, sizeof p, "%s/runs/%s/saliency.png", c->out, r[i].run.id);
    fprintf(f, "<details><summary>%s</summary>\n", run_label(&r[i].run, lab, sizeof lab));
    html_png(f, p, lab, "grid");
    fprintf(f, "</details>\n");
  }
  time_t now = time(NULL);
  struct tm tmv;
  char when[64];
  gmtime_r(&now, &tmv);
  strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", &tmv);
  fprintf(f, "<footer>Written by kiln %s on %s. Tables as Markdown and CSV beside this file "
             "(table1, table2, saliency, runs.csv); the configuration in config.txt.</footer>\n",
          kiln_version(), when);
  fprintf(f, "</main>\n</body>\n</html>\n");
  bool bad = ferror(f);
  if (fclose(f) || bad) {
    remove(tmp);
    return kiln_errf(e, KILN_ERR_IO, "%s: write failed", tmp);
  }
  if (rename(tmp, path)) return kiln_errf(e, KILN_ERR_IO, "%s: cannot rename into place: %s", path, strerror(errno));
  return KILN_OK;
}

kiln_code kiln_report_write(const kiln_exp_config *c, const kiln_exp_result *r, int n, kiln_dataset *test,
                            const int64_t *grid_idx, int n_grid, double seconds, kiln_err *e) {
  kiln_table t1, t2, ts;
  memset(&t1, 0, sizeof t1);
  memset(&t2, 0, sizeof t2);
  memset(&ts, 0, sizeof ts);
  char cmp[KILN_EXP_MAX_BACKBONES][KILN_EXP_PATH + 64];
  kiln_backbone cmp_bb[KILN_EXP_MAX_BACKBONES];
  int n_cmp = 0;
  kiln_code rc = kiln_table_methods(r, n, &t1, e);
  if (!rc) rc = kiln_table_losses(r, n, &t2, e);
  if (!rc) rc = kiln_table_saliency(r, n, &ts, e);
  if (!rc) rc = write_table_files(c, &t1, "table1", e);
  if (!rc) rc = write_table_files(c, &t2, "table2", e);
  if (!rc) rc = write_table_files(c, &ts, "saliency", e);
  if (!rc) rc = write_runs_csv(c, r, n, e);
  kiln_backbone bb[KILN_EXP_MAX_BACKBONES];
  int nb = backbones_of(r, n, bb);
  for (int b = 0; b < nb && !rc; b++) {
    bool written = false;
    snprintf(cmp[n_cmp], sizeof cmp[0], "%s/compare-%s.png", c->out, kiln_backbone_name(bb[b]));
    rc = compare_grid(c, r, n, bb[b], test, grid_idx, n_grid, cmp[n_cmp], &written, e);
    if (written) cmp_bb[n_cmp++] = bb[b];
  }
  if (!rc) rc = write_html(c, r, n, &t1, &t2, &ts, (const char(*)[KILN_EXP_PATH + 64])cmp, cmp_bb, n_cmp, seconds, e);
  kiln_table_free(&t1);
  kiln_table_free(&t2);
  kiln_table_free(&ts);
  return rc;
}
