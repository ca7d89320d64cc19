/* experiment.c — configuration, plan and execution of the study's experiment grid;
 * per-run results on disk (result.json) and their reuse (study/experiment.h). */
#include "study/experiment.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "data/data.h"
#include "frontend/onnx.h"
#include "ir/graph.h"
#include "study/eval.h"
#include "study/explain.h"
#include "study/report.h"
#include "train/loop.h"

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ---------------------------------------------------------------- config */

void kiln_exp_config_default(kiln_exp_config *c) {
  memset(c, 0, sizeof *c);
  snprintf(c->data, sizeof c->data, "synthetic:shapes");
  c->count = 60;
  c->synth_classes = 8;
  c->data_seed = 1;
  c->split_seed = 1;
  c->augment = true;
  c->n_backbones = 1;
  c->backbones[0] = KILN_RESNET18;
  c->baseline = true;
  c->n_ratios = 2;
  c->ratios[0] = 1.0;
  c->ratios[1] = 0.25;
  c->n_losses = 1;
  c->losses[0] = KILN_LOC_BCE;
  c->n_seeds = 1;
  c->seeds[0] = 1;
  c->image_size = 224;
  c->width = 64;
  c->cnet_hidden = 1024;
  c->baseline_hidden = 0;
  c->n_spn_scales = 4;
  c->spn_scales[0] = c->spn_scales[1] = c->spn_scales[2] = 2;
  c->spn_scales[3] = 4;
  c->epochs = 40;
  c->batch = 32;
  c->lr = 1e-3;
  c->lambda = 1.0;
  snprintf(c->out, sizeof c->out, "experiment");
  c->grid_rows = 8;
  c->keep_models = true;
  c->report = true;
}

const char *kiln_loc_loss_label(kiln_loc_loss l) {
  switch (l) {
  case KILN_LOC_BCE: return "CE";
  case KILN_LOC_L1: return "L1";
  case KILN_LOC_L2: return "L2";
  default: return "-";
  }
}

static const char *loss_key(kiln_loc_loss l) {
  return l == KILN_LOC_BCE ? "bce" : l == KILN_LOC_L1 ? "l1" : l == KILN_LOC_L2 ? "l2" : "none";
}

bool kiln_loc_loss_parse(const char *s, kiln_loc_loss *out) {
  if (!strcasecmp(s, "bce") || !strcasecmp(s, "ce")) *out = KILN_LOC_BCE;
  else if (!strcasecmp(s, "l1")) *out = KILN_LOC_L1;
  else if (!strcasecmp(s, "l2")) *out = KILN_LOC_L2;
  else return false;
  return true;
}

static bool parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi) return false;
  *out = v;
  return true;
}

static bool parse_u64(const char *s, uint64_t *out) {
  char *end;
  errno = 0;
  if (*s == '-') return false;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *end) return false;
  *out = v;
  return true;
}

static bool parse_f64(const char *s, double lo, double hi, double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || !(v >= lo && v <= hi)) return false;
  *out = v;
  return true;
}

static bool parse_bool(const char *s, bool *out) {
  if (!strcasecmp(s, "1") || !strcasecmp(s, "yes") || !strcasecmp(s, "true") || !strcasecmp(s, "on")) *out = true;
  else if (!strcasecmp(s, "0") || !strcasecmp(s, "no") || !strcasecmp(s, "false") || !strcasecmp(s, "off"))
    *out = false;
  else return false;
  return true;
}

/* Splits a comma list into trimmed tokens (in place in buf); returns the count or -1 when
 * more than max. */
static int split_list(char *buf, char **tok, int max) {
  int n = 0;
  for (char *p = buf; p;) {
    char *comma = strchr(p, ',');
    if (comma) *comma = 0;
    while (isspace((unsigned char)*p)) p++;
    char *end = p + strlen(p);
    while (end > p && isspace((unsigned char)end[-1])) *--end = 0;
    if (*p) {
      if (n == max) return -1;
      tok[n++] = p;
    }
    p = comma ? comma + 1 : NULL;
  }
  return n;
}

static kiln_code set_str(char *dst, size_t n, const char *key, const char *v, kiln_err *e) {
  if (strlen(v) >= n) return kiln_errf(e, KILN_ERR_INVALID, "%s: value is too long", key);
  snprintf(dst, n, "%s", v);
  return KILN_OK;
}

kiln_code kiln_exp_config_set(kiln_exp_config *c, const char *key, const char *v, kiln_err *e) {
  char buf[KILN_EXP_PATH];
  char *tok[64];
  int n;
  int64_t i64;
  bool ok = true;
#define IS(k) (!strcmp(key, k))
  if (IS("data")) return set_str(c->data, sizeof c->data, key, v, e);
  if (IS("classes")) return set_str(c->classes, sizeof c->classes, key, v, e);
  if (IS("init-from")) return set_str(c->init_from, sizeof c->init_from, key, v, e);
  if (IS("out")) return set_str(c->out, sizeof c->out, key, v, e);
  if (IS("title")) return set_str(c->title, sizeof c->title, key, v, e);
  if (IS("count")) ok = parse_i64(v, 1, 1000000, &c->count);
  else if (IS("synth-classes")) ok = parse_i64(v, 2, 32, &c->synth_classes);
  else if (IS("data-seed")) ok = parse_u64(v, &c->data_seed);
  else if (IS("split-seed")) ok = parse_u64(v, &c->split_seed);
  else if (IS("skip-bad")) ok = parse_bool(v, &c->skip_bad);
  else if (IS("augment")) ok = parse_bool(v, &c->augment);
  else if (IS("baseline")) ok = parse_bool(v, &c->baseline);
  else if (IS("keep-models")) ok = parse_bool(v, &c->keep_models);
  else if (IS("report")) ok = parse_bool(v, &c->report);
  else if (IS("image-size")) ok = parse_i64(v, 32, 4096, &c->image_size);
  else if (IS("width")) ok = parse_i64(v, 1, 4096, &c->width);
  else if (IS("cnet-hidden")) ok = parse_i64(v, 0, 1 << 20, &c->cnet_hidden);
  else if (IS("baseline-hidden")) ok = parse_i64(v, 0, 1 << 20, &c->baseline_hidden);
  else if (IS("spn-width-cap")) ok = parse_i64(v, 0, 1 << 20, &c->spn_width_cap);
  else if (IS("epochs")) ok = parse_i64(v, 1, 100000, &i64), c->epochs = (int)i64;
  else if (IS("batch")) ok = parse_i64(v, 1, 4096, &c->batch);
  else if (IS("lr")) ok = parse_f64(v, 1e-12, 10, &c->lr);
  else if (IS("lambda")) ok = parse_f64(v, 0, 1e6, &c->lambda);
  else if (IS("threads")) ok = parse_i64(v, 0, 1024, &i64), c->threads = (int)i64;
  else if (IS("grid-rows")) ok = parse_i64(v, 0, 64, &i64), c->grid_rows = (int)i64;
  else if (IS("backbones") || IS("ratios") || IS("losses") || IS("seeds") || IS("spn-scales") || IS("repeats")) {
    if (strlen(v) >= sizeof buf) return kiln_errf(e, KILN_ERR_INVALID, "%s: value is too long", key);
    snprintf(buf, sizeof buf, "%s", v);
    n = split_list(buf, tok, 64);
    if (n == 0) return kiln_errf(e, KILN_ERR_INVALID, "%s: empty list", key);
    if (IS("backbones")) {
      if (n < 0 || n > KILN_EXP_MAX_BACKBONES)
        return kiln_errf(e, KILN_ERR_INVALID, "backbones: at most %d", KILN_EXP_MAX_BACKBONES);
      for (int i = 0; i < n; i++)
        if (!kiln_backbone_parse(tok[i], &c->backbones[i]))
          return kiln_errf(e, KILN_ERR_INVALID, "backbones: '%s' is not resnet18, resnet34 or resnet50", tok[i]);
      c->n_backbones = n;
    } else if (IS("ratios")) {
      if (n < 0 || n > KILN_EXP_MAX_RATIOS)
        return kiln_errf(e, KILN_ERR_INVALID, "ratios: at most %d", KILN_EXP_MAX_RATIOS);
      if (n == 1 && !strcasecmp(tok[0], "none")) n = 0;
      for (int i = 0; i < n; i++)
        if (!parse_f64(tok[i], 0, 1, &c->ratios[i]) || c->ratios[i] <= 0)
          return kiln_errf(e, KILN_ERR_INVALID, "ratios: '%s' is not a loc label ratio in (0, 1]", tok[i]);
      c->n_ratios = n;
    } else if (IS("losses")) {
      if (n < 0 || n > KILN_EXP_MAX_LOSSES)
        return kiln_errf(e, KILN_ERR_INVALID, "losses: at most %d", KILN_EXP_MAX_LOSSES);
      for (int i = 0; i < n; i++)
        if (!kiln_loc_loss_parse(tok[i], &c->losses[i]))
          return kiln_errf(e, KILN_ERR_INVALID, "losses: '%s' is not ce (bce), l1 or l2", tok[i]);
      c->n_losses = n;
    } else if (IS("seeds")) {
      if (n < 0 || n > KILN_EXP_MAX_SEEDS) return kiln_errf(e, KILN_ERR_INVALID, "seeds: at most %d", KILN_EXP_MAX_SEEDS);
      for (int i = 0; i < n; i++)
        if (!parse_u64(tok[i], &c->seeds[i])) return kiln_errf(e, KILN_ERR_INVALID, "seeds: '%s' is not a seed", tok[i]);
      c->n_seeds = n;
    } else if (IS("repeats")) {
      if (n != 1 || !parse_i64(tok[0], 1, KILN_EXP_MAX_SEEDS, &i64))
        return kiln_errf(e, KILN_ERR_INVALID, "repeats: a number of seeds from 1 to %d", KILN_EXP_MAX_SEEDS);
      c->n_seeds = (int)i64;
      for (int i = 0; i < c->n_seeds; i++) c->seeds[i] = (uint64_t)i + 1;
    } else { /* spn-scales */
      if (n == 1 && !strcasecmp(tok[0], "auto")) {
        c->n_spn_scales = 0;
        return KILN_OK;
      }
      if (n < 0 || n > KILN_SPN_MAX_BLOCKS)
        return kiln_errf(e, KILN_ERR_INVALID, "spn-scales: at most %d", KILN_SPN_MAX_BLOCKS);
      for (int i = 0; i < n; i++)
        if (!parse_i64(tok[i], 1, 64, &c->spn_scales[i]))
          return kiln_errf(e, KILN_ERR_INVALID, "spn-scales: '%s' is not a scale in 1..64", tok[i]);
      c->n_spn_scales = n;
    }
  } else {
    return kiln_errf(e, KILN_ERR_INVALID, "unknown option '%s'", key);
  }
#undef IS
  if (!ok) return kiln_errf(e, KILN_ERR_INVALID, "%s: bad value '%s'", key, v);
  return KILN_OK;
}

kiln_code kiln_exp_config_load(kiln_exp_config *c, const char *path, kiln_err *e) {
  FILE *f = fopen(path, "r");
  if (!f) return kiln_errf(e, KILN_ERR_IO, "%s: cannot open the experiment config: %s", path, strerror(errno));
  char line[4096];
  int ln = 0;
  kiln_code rc = KILN_OK;
  while (!rc && fgets(line, sizeof line, f)) {
    ln++;
    char *hash = strchr(line, '#');
    if (hash) *hash = 0;
    char *p = line;
    while (isspace((unsigned char)*p)) p++;
    char *end = p + strlen(p);
    while (end > p && isspace((unsigned char)end[-1])) *--end = 0;
    if (!*p) continue;
    char *eq = strchr(p, '=');
    if (!eq) {
      rc = kiln_errf(e, KILN_ERR_INVALID, "%s:%d: expected 'key = value'", path, ln);
      break;
    }
    char *k = p, *v = eq + 1;
    *eq = 0;
    end = k + strlen(k);
    while (end > k && isspace((unsigned char)end[-1])) *--end = 0;
    while (isspace((unsigned char)*v)) v++;
    /* `--key` and `key_name` are accepted as spelled on the command line */
    while (*k == '-') k++;
    for (char *q = k; *q; q++)
      if (*q == '_') *q = '-';
    if ((rc = kiln_exp_config_set(c, k, v, e))) kiln_err_prefix(e, "%s:%d", path, ln);
  }
  fclose(f);
  return rc;
}

kiln_code kiln_exp_config_check(const kiln_exp_config *c, kiln_err *e) {
  if (!c->data[0]) return kiln_errf(e, KILN_ERR_INVALID, "no dataset given (data = ...)");
  if (!c->out[0]) return kiln_errf(e, KILN_ERR_INVALID, "no output folder given (out = ...)");
  if (!c->baseline && c->n_ratios == 0)
    return kiln_errf(e, KILN_ERR_INVALID, "the grid is empty: no baseline and no SPN ratios");
  if (c->n_ratios > 0 && c->n_losses == 0) return kiln_errf(e, KILN_ERR_INVALID, "SPN runs need a loss (losses = ce)");
  if (c->n_backbones < 1 || c->n_seeds < 1) return kiln_errf(e, KILN_ERR_INVALID, "no backbone or no seed");
  for (int i = 0; i < c->n_backbones; i++) {
    kiln_model_opts mo;
    kiln_model_defaults(&mo);
    mo.backbone = c->backbones[i];
    mo.width = c->width;
    mo.classes = 2;
    mo.image_size = c->image_size;
    mo.batch = c->batch;
    mo.spn = c->n_ratios > 0;
    mo.cnet_hidden = c->cnet_hidden;
    mo.n_spn_scales = c->n_spn_scales;
    memcpy(mo.spn_scales, c->spn_scales, sizeof mo.spn_scales);
    mo.spn_width_cap = c->spn_width_cap;
    kiln_model_plan p;
    KILN_TRY(kiln_model_plan_make(&mo, &p, e));
  }
  return KILN_OK;
}

static void write_list_f(FILE *f, const char *key, const double *v, int n) {
  fprintf(f, "%s = ", key);
  if (!n) fprintf(f, "none");
  for (int i = 0; i < n; i++) fprintf(f, "%s%g", i ? "," : "", v[i]);
  fputc('\n', f);
}

void kiln_exp_config_write(const kiln_exp_config *c, FILE *f) {
  fprintf(f, "data = %s\n", c->data);
  if (c->classes[0]) fprintf(f, "classes = %s\n", c->classes);
  fprintf(f, "count = %lld\nsynth-classes = %lld\ndata-seed = %llu\nsplit-seed = %llu\n", (long long)c->count,
          (long long)c->synth_classes, (unsigned long long)c->data_seed, (unsigned long long)c->split_seed);
  fprintf(f, "skip-bad = %s\naugment = %s\n", c->skip_bad ? "yes" : "no", c->augment ? "yes" : "no");
  fprintf(f, "backbones = ");
  for (int i = 0; i < c->n_backbones; i++) fprintf(f, "%s%s", i ? "," : "", kiln_backbone_name(c->backbones[i]));
  fprintf(f, "\nbaseline = %s\n", c->baseline ? "yes" : "no");
  write_list_f(f, "ratios", c->ratios, c->n_ratios);
  fprintf(f, "losses = ");
  for (int i = 0; i < c->n_losses; i++) fprintf(f, "%s%s", i ? "," : "", loss_key(c->losses[i]));
  fprintf(f, "\nseeds = ");
  for (int i = 0; i < c->n_seeds; i++) fprintf(f, "%s%llu", i ? "," : "", (unsigned long long)c->seeds[i]);
  fprintf(f, "\nimage-size = %lld\nwidth = %lld\ncnet-hidden = %lld\nbaseline-hidden = %lld\n", (long long)c->image_size,
          (long long)c->width, (long long)c->cnet_hidden, (long long)c->baseline_hidden);
  fprintf(f, "spn-scales = ");
  if (!c->n_spn_scales) fprintf(f, "auto");
  for (int i = 0; i < c->n_spn_scales; i++) fprintf(f, "%s%lld", i ? "," : "", (long long)c->spn_scales[i]);
  fprintf(f, "\nspn-width-cap = %lld\n", (long long)c->spn_width_cap);
  if (c->init_from[0]) fprintf(f, "init-from = %s\n", c->init_from);
  fprintf(f, "epochs = %d\nbatch = %lld\nlr = %g\nlambda = %g\nthreads = %d\n", c->epochs, (long long)c->batch, c->lr,
          c->lambda, c->threads);
  fprintf(f, "out = %s\ngrid-rows = %d\nkeep-models = %s\n", c->out, c->grid_rows, c->keep_models ? "yes" : "no");
  if (c->title[0]) fprintf(f, "title = %s\n", c->title);
}

/* ---------------------------------------------------------------- plan */

kiln_code kiln_exp_plan(const kiln_exp_config *c, kiln_exp_run **runs, int *n, kiln_err *e) {
  int per = (c->baseline ? 1 : 0) + c->n_ratios * c->n_losses;
  int total = c->n_backbones * c->n_seeds * per;
  *runs = NULL;
  *n = 0;
  if (total < 1) return kiln_errf(e, KILN_ERR_INVALID, "the experiment grid is empty");
  kiln_exp_run *r = kiln_calloc((size_t)total, sizeof *r);
  if (!r) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  int k = 0;
  for (int b = 0; b < c->n_backbones; b++)
    for (int s = 0; s < c->n_seeds; s++) {
      const char *bn = kiln_backbone_name(c->backbones[b]);
      unsigned long long seed = (unsigned long long)c->seeds[s];
      if (c->baseline) {
        r[k] = (kiln_exp_run){.backbone = c->backbones[b], .seed = c->seeds[s], .loss = KILN_LOC_NONE};
        snprintf(r[k].id, sizeof r[k].id, "%s-baseline-s%llu", bn, seed);
        k++;
      }
      for (int q = 0; q < c->n_ratios; q++)
        for (int l = 0; l < c->n_losses; l++) {
          r[k] = (kiln_exp_run){.backbone = c->backbones[b],
                                .spn = true,
                                .ratio = c->ratios[q],
                                .loss = c->losses[l],
                                .seed = c->seeds[s]};
          snprintf(r[k].id, sizeof r[k].id, "%s-spn-r%.2f-%s-s%llu", bn, c->ratios[q], loss_key(c->losses[l]), seed);
          k++;
        }
    }
  *runs = r;
  *n = k;
  return KILN_OK;
}

int kiln_exp_grid_examples(const int64_t *labels, const bool *has_mask, int64_t n, int64_t k, int rows,
                           int64_t *out) {
  int got = 0;
  /* round robin over classes: the j-th masked example of each class in turn */
  for (int64_t round = 0; got < rows; round++) {
    bool any = false;
    for (int64_t cls = 0; cls < k && got < rows; cls++) {
      int64_t seen = 0;
      for (int64_t i = 0; i < n; i++) {
        if (labels[i] != cls || (has_mask && !has_mask[i])) continue;
        if (seen++ == round) {
          out[got++] = i;
          any = true;
          break;
        }
      }
    }
    if (!any) break;
  }
  return got;
}

/* ---------------------------------------------------------------- results on disk */

void kiln_exp_result_free(kiln_exp_result *r) {
  if (!r) return;
  kiln_free(r->cls_precision);
  kiln_free(r->cls_sensitivity);
  kiln_free(r->cls_specificity);
  kiln_free(r->cls_f1);
  kiln_free(r->cls_support);
  for (int64_t i = 0; r->class_names && i < r->k; i++) kiln_free(r->class_names[i]);
  kiln_free(r->class_names);
  double **curves[] = {&r->train_loss, &r->train_cls, &r->train_loc, &r->train_acc,
                       &r->val_acc,    &r->val_f1,    &r->val_loss,  &r->val_iou};
  for (size_t i = 0; i < sizeof curves / sizeof *curves; i++) kiln_free(*curves[i]);
  memset(r, 0, sizeof *r);
}

static void json_str(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
    else if (ch < 0x20) fprintf(f, "\\u%04x", ch);
    else fputc(ch, f);
  }
  fputc('"', f);
}

static void json_num(FILE *f, double v) {
  if (isfinite(v)) fprintf(f, "%.17g", v);
  else fprintf(f, "null");
}

static void json_arr(FILE *f, const char *key, const double *v, int64_t n) {
  fprintf(f, ",\n  ");
  json_str(f, key);
  fprintf(f, ": [");
  for (int64_t i = 0; i < n; i++) {
    if (i) fputs(", ", f);
    json_num(f, v ? v[i] : NAN);
  }
  fputc(']', f);
}

static void json_kv(FILE *f, const char *key, double v) {
  fprintf(f, ",\n  ");
  json_str(f, key);
  fprintf(f, ": ");
  json_num(f, v);
}

/* The scalar fields of a result, by JSON key. */
#define RESULT_SCALARS(X)                                                                                          \
  X(seconds) X(images_per_second) X(accuracy) X(precision) X(sensitivity) X(specificity) X(f1) X(spn_iou)         \
  X(spn_dice) X(cam_energy) X(cam_pointing) X(cam_iou) X(grad_energy) X(grad_pointing) X(spnmap_energy)           \
  X(spnmap_pointing) X(mask_area)
#define RESULT_CURVES(X) X(train_loss) X(train_cls) X(train_loc) X(train_acc) X(val_acc) X(val_f1) X(val_loss) X(val_iou)

kiln_code kiln_exp_result_save(const kiln_exp_result *r, const char *path, kiln_err *e) {
  char tmp[KILN_EXP_PATH + 16];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (!f) return kiln_errf(e, KILN_ERR_IO, "%s: cannot write: %s", tmp, strerror(errno));
  fprintf(f, "{\n  \"id\": ");
  json_str(f, r->run.id);
  fprintf(f, ",\n  \"key\": ");
  json_str(f, r->key);
  fprintf(f, ",\n  \"backbone\": ");
  json_str(f, kiln_backbone_name(r->run.backbone));
  fprintf(f, ",\n  \"method\": ");
  json_str(f, r->run.spn ? "spn" : "baseline");
  fprintf(f, ",\n  \"loss\": ");
  json_str(f, loss_key(r->run.loss));
  json_kv(f, "ratio", r->run.ratio);
  json_kv(f, "seed", (double)r->run.seed);
  json_kv(f, "epochs", r->epochs);
  json_kv(f, "best_epoch", r->best_epoch);
  json_kv(f, "classes", (double)r->k);
  json_kv(f, "n_test", (double)r->n_test);
#define X(name) json_kv(f, #name, r->name);
  RESULT_SCALARS(X)
#undef X
  fprintf(f, ",\n  \"class_names\": [");
  for (int64_t i = 0; i < r->k; i++) {
    if (i) fputs(", ", f);
    json_str(f, r->class_names && r->class_names[i] ? r->class_names[i] : "?");
  }
  fputc(']', f);
  json_arr(f, "cls_precision", r->cls_precision, r->k);
  json_arr(f, "cls_sensitivity", r->cls_sensitivity, r->k);
  json_arr(f, "cls_specificity", r->cls_specificity, r->k);
  json_arr(f, "cls_f1", r->cls_f1, r->k);
  double sup[KILN_METRICS_MAX_CLASSES];
  for (int64_t i = 0; i < r->k && i < KILN_METRICS_MAX_CLASSES; i++) sup[i] = r->cls_support ? (double)r->cls_support[i] : 0;
  json_arr(f, "cls_support", sup, r->k);
#define X(name) json_arr(f, #name, r->name, r->n_curve);
  RESULT_CURVES(X)
#undef X
  fprintf(f, "\n}\n");
  bool bad = ferror(f);
  if (fclose(f) || bad) {
    remove(tmp);
    return kiln_errf(e, KILN_ERR_IO, "%s: write failed", tmp);
  }
  if (rename(tmp, path)) return kiln_errf(e, KILN_ERR_IO, "%s: cannot rename into place: %s", path, strerror(errno));
  return KILN_OK;
}

/* A small reader for the flat JSON objects written above: string, number, null,
 * and arrays of them. */
typedef struct jfield {
  char key[64];
  char *str;      /* string value (owned) */
  double num;
  bool is_str, is_arr;
  int n;          /* array length */
  double *arr;    /* numbers (NaN for null) */
  char **sarr;    /* strings */
} jfield;

typedef struct jparser {
  const char *p, *path;
  kiln_err *e;
} jparser;

static void jws(jparser *j) {
  while (isspace((unsigned char)*j->p)) j->p++;
}

static kiln_code jfail(jparser *j, const char *what) {
  return kiln_errf(j->e, KILN_ERR_PARSE, "%s: malformed result file (%s)", j->path, what);
}

static kiln_code jstring(jparser *j, char **out) {
  if (*j->p != '"') return jfail(j, "expected a string");
  j->p++;
  size_t cap = strlen(j->p) + 1, n = 0;
  char *s = kiln_malloc(cap);
  if (!s) return kiln_errf(j->e, KILN_ERR_NOMEM, "out of memory");
  while (*j->p && *j->p != '"') {
    char ch = *j->p++;
    if (ch == '\\') {
      ch = *j->p++;
      if (ch == 'u') {
        unsigned v = 0;
        for (int i = 0; i < 4 && isxdigit((unsigned char)*j->p); i++, j->p++)
          v = v * 16 + (unsigned)(isdigit((unsigned char)*j->p) ? *j->p - '0' : (tolower((unsigned char)*j->p) - 'a' + 10));
        ch = (char)(v < 0x80 ? v : '?');
      } else if (ch == 'n') ch = '\n';
      else if (ch == 't') ch = '\t';
      else if (!ch) break;
    }
    s[n++] = ch;
  }
  s[n] = 0;
  if (*j->p != '"') {
    kiln_free(s);
    return jfail(j, "unterminated string");
  }
  j->p++;
  *out = s;
  return KILN_OK;
}

static kiln_code jnumber(jparser *j, double *out) {
  if (!strncmp(j->p, "null", 4)) {
    j->p += 4;
    *out = NAN;
    return KILN_OK;
  }
  char *end;
  *out = strtod(j->p, &end);
  if (end == j->p) return jfail(j, "expected a number");
  j->p = end;
  return KILN_OK;
}

static void jfields_free(jfield *f, int n) {
  for (int i = 0; i < n; i++) {
    kiln_free(f[i].str);
    kiln_free(f[i].arr);
    for (int k = 0; f[i].sarr && k < f[i].n; k++) kiln_free(f[i].sarr[k]);
    kiln_free(f[i].sarr);
  }
  kiln_free(f);
}

static kiln_code jparse(const char *text, const char *path, jfield **out, int *nout, kiln_err *e) {
  jparser j = {.p = text, .path = path, .e = e};
  int cap = 64, n = 0;
  jfield *f = kiln_calloc((size_t)cap, sizeof *f);
  kiln_code rc = KILN_OK;
  if (!f) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  jws(&j);
  if (*j.p != '{') {
    rc = jfail(&j, "expected an object");
    goto fail;
  }
  j.p++;
  for (;;) {
    jws(&j);
    if (*j.p == '}') break;
    if (n == cap) {
      jfield *g = kiln_calloc((size_t)cap * 2, sizeof *g);
      if (!g) {
        rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
        goto fail;
      }
      memcpy(g, f, sizeof *f * (size_t)cap);
      kiln_free(f);
      f = g;
      cap *= 2;
    }
    jfield *fd = &f[n++];
    char *key = NULL;
    if ((rc = jstring(&j, &key))) goto fail;
    snprintf(fd->key, sizeof fd->key, "%s", key);
    kiln_free(key);
    jws(&j);
    if (*j.p != ':') {
      rc = jfail(&j, "expected ':'");
      goto fail;
    }
    j.p++;
    jws(&j);
    if (*j.p == '"') {
      fd->is_str = true;
      if ((rc = jstring(&j, &fd->str))) goto fail;
    } else if (*j.p == '[') {
      fd->is_arr = true;
      j.p++;
      int acap = 16;
      fd->arr = kiln_calloc((size_t)acap, sizeof *fd->arr);
      fd->sarr = kiln_calloc((size_t)acap, sizeof *fd->sarr);
      if (!fd->arr || !fd->sarr) {
        rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
        goto fail;
      }
      for (;;) {
        jws(&j);
        if (*j.p == ']') {
          j.p++;
          break;
        }
        if (fd->n == acap) {
          double *a = kiln_calloc((size_t)acap * 2, sizeof *a);
          char **s = kiln_calloc((size_t)acap * 2, sizeof *s);
          if (!a || !s) {
            kiln_free(a);
            kiln_free(s);
            rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
            goto fail;
          }
          memcpy(a, fd->arr, sizeof *a * (size_t)acap);
          memcpy(s, fd->sarr, sizeof *s * (size_t)acap);
          kiln_free(fd->arr);
          kiln_free(fd->sarr);
          fd->arr = a;
          fd->sarr = s;
          acap *= 2;
        }
        if (*j.p == '"') {
          if ((rc = jstring(&j, &fd->sarr[fd->n]))) goto fail;
          fd->arr[fd->n++] = NAN;
        } else {
          if ((rc = jnumber(&j, &fd->arr[fd->n]))) goto fail;
          fd->n++;
        }
        jws(&j);
        if (*j.p == ',') j.p++;
        else if (*j.p != ']') {
          rc = jfail(&j, "expected ',' or ']'");
          goto fail;
        }
      }
    } else if (!strncmp(j.p, "true", 4) || !strncmp(j.p, "false", 5)) {
      fd->num = *j.p == 't';
      j.p += *j.p == 't' ? 4 : 5;
    } else if ((rc = jnumber(&j, &fd->num))) {
      goto fail;
    }
    jws(&j);
    if (*j.p == ',') j.p++;
    else if (*j.p != '}') {
      rc = jfail(&j, "expected ',' or '}'");
      goto fail;
    }
  }
  *out = f;
  *nout = n;
  return KILN_OK;
fail:
  jfields_free(f, n);
  return rc;
}

static const jfield *jget(const jfield *f, int n, const char *key) {
  for (int i = 0; i < n; i++)
    if (!strcmp(f[i].key, key)) return &f[i];
  return NULL;
}

static double jnum(const jfield *f, int n, const char *key) {
  const jfield *x = jget(f, n, key);
  return x && !x->is_str && !x->is_arr ? x->num : NAN;
}

/* A copy of array `key` with exactly `len` entries (missing entries NaN). */
static kiln_code jarr(const jfield *f, int n, const char *key, int64_t len, double **out, kiln_err *e) {
  const jfield *x = jget(f, n, key);
  *out = kiln_calloc((size_t)(len > 0 ? len : 1), sizeof **out);
  if (!*out) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  for (int64_t i = 0; i < len; i++) (*out)[i] = x && x->is_arr && i < x->n ? x->arr[i] : NAN;
  return KILN_OK;
}

kiln_code kiln_exp_result_load(const char *path, kiln_exp_result *r, kiln_err *e) {
  memset(r, 0, sizeof *r);
  uint8_t *buf = NULL;
  size_t len = 0;
  KILN_TRY(kiln_read_file(path, 64 << 20, &buf, &len, e));
  char *text = kiln_malloc(len + 1);
  if (!text) {
    kiln_free(buf);
    return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  }
  memcpy(text, buf, len);
  text[len] = 0;
  kiln_free(buf);
  jfield *f = NULL;
  int n = 0;
  kiln_code rc = jparse(text, path, &f, &n, e);
  kiln_free(text);
  if (rc) return rc;
  const jfield *id = jget(f, n, "id"), *key = jget(f, n, "key"), *bb = jget(f, n, "backbone");
  const jfield *method = jget(f, n, "method"), *loss = jget(f, n, "loss"), *names = jget(f, n, "class_names");
  if (!id || !id->is_str || !key || !key->is_str || !bb || !bb->is_str || !method || !method->is_str || !loss ||
      !loss->is_str || !names || !names->is_arr) {
    rc = kiln_errf(e, KILN_ERR_PARSE, "%s: not a kiln experiment result (fields missing)", path);
    goto out;
  }
  snprintf(r->run.id, sizeof r->run.id, "%s", id->str);
  snprintf(r->key, sizeof r->key, "%s", key->str);
  if (!kiln_backbone_parse(bb->str, &r->run.backbone)) {
    rc = kiln_errf(e, KILN_ERR_PARSE, "%s: unknown backbone '%s'", path, bb->str);
    goto out;
  }
  r->run.spn = !strcmp(method->str, "spn");
  r->run.loss = KILN_LOC_NONE;
  kiln_loc_loss_parse(loss->str, &r->run.loss);
  r->run.ratio = jnum(f, n, "ratio");
  r->run.seed = (uint64_t)jnum(f, n, "seed");
  r->epochs = (int)jnum(f, n, "epochs");
  r->best_epoch = (int)jnum(f, n, "best_epoch");
  double k = jnum(f, n, "classes");
  if (!(k >= 1 && k <= KILN_METRICS_MAX_CLASSES) || names->n != (int)k) {
    rc = kiln_errf(e, KILN_ERR_PARSE, "%s: bad class count", path);
    goto out;
  }
  r->k = (int64_t)k;
  r->n_test = (int64_t)jnum(f, n, "n_test");
#define X(name) r->name = jnum(f, n, #name);
  RESULT_SCALARS(X)
#undef X
  r->class_names = kiln_calloc((size_t)r->k, sizeof *r->class_names);
  r->cls_support = kiln_calloc((size_t)r->k, sizeof *r->cls_support);
  if (!r->class_names || !r->cls_support) {
    rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
    goto out;
  }
  for (int64_t i = 0; i < r->k; i++) {
    const char *s = names->sarr[i] ? names->sarr[i] : "?";
    r->class_names[i] = kiln_malloc(strlen(s) + 1);
    if (!r->class_names[i]) {
      rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
      goto out;
    }
    strcpy(r->class_names[i], s);
  }
  double *sup = NULL;
  if ((rc = jarr(f, n, "cls_precision", r->k, &r->cls_precision, e)) ||
      (rc = jarr(f, n, "cls_sensitivity", r->k, &r->cls_sensitivity, e)) ||
      (rc = jarr(f, n, "cls_specificity", r->k, &r->cls_specificity, e)) ||
      (rc = jarr(f, n, "cls_f1", r->k, &r->cls_f1, e)) || (rc = jarr(f, n, "cls_support", r->k, &sup, e)))
    goto out;
  for (int64_t i = 0; i < r->k; i++) r->cls_support[i] = isfinite(sup[i]) ? (int64_t)sup[i] : 0;
  kiln_free(sup);
  const jfield *tl = jget(f, n, "train_loss");
  r->n_curve = tl && tl->is_arr ? tl->n : 0;
#define X(name)                                                                                                    \
  if ((rc = jarr(f, n, #name, r->n_curve, &r->name, e))) goto out;
  RESULT_CURVES(X)
#undef X
out:
  jfields_free(f, n);
  if (rc) kiln_exp_result_free(r);
  return rc;
}

/* ---------------------------------------------------------------- running */

static kiln_code mkdir_p(const char *path, kiln_err *e) {
  char buf[KILN_EXP_PATH];
  if (strlen(path) >= sizeof buf) return kiln_errf(e, KILN_ERR_INVALID, "%s: path too long", path);
  snprintf(buf, sizeof buf, "%s", path);
  for (char *p = buf + 1;; p++) {
    if (*p == '/' || !*p) {
      char save = *p;
      *p = 0;
      if (mkdir(buf, 0777) && errno != EEXIST)
        return kiln_errf(e, KILN_ERR_IO, "%s: cannot create the folder: %s", buf, strerror(errno));
      *p = save;
      if (!save) break;
    }
  }
  return KILN_OK;
}

static bool file_exists(const char *p) {
  struct stat st;
  return stat(p, &st) == 0;
}

/* Everything a run's result depends on, in one line. */
static void run_key(const kiln_exp_config *c, const kiln_exp_run *r, char *buf, size_t n) {
  char scales[128] = "auto";
  size_t o = 0;
  for (int i = 0; i < c->n_spn_scales && o < sizeof scales; i++)
    o += (size_t)snprintf(scales + o, sizeof scales - o, "%s%lld", i ? "," : "", (long long)c->spn_scales[i]);
  snprintf(buf, n,
           "v1 %s data=%s classes=%s count=%lld synth=%lld dseed=%llu split=%llu skipbad=%d aug=%d size=%lld "
           "width=%lld hidden=%lld scales=%s cap=%lld init=%s epochs=%d batch=%lld lr=%g lambda=%g grid=%d",
           r->id, c->data, c->classes, (long long)c->count, (long long)c->synth_classes,
           (unsigned long long)c->data_seed, (unsigned long long)c->split_seed, c->skip_bad, c->augment,
           (long long)c->image_size, (long long)c->width, (long long)(r->spn ? c->cnet_hidden : c->baseline_hidden),
           r->spn ? scales : "-", (long long)(r->spn ? c->spn_width_cap : 0), c->init_from, c->epochs,
           (long long)c->batch, c->lr, c->lambda, c->grid_rows);
}

/* The shared state of one experiment. */
typedef struct exp_ctx {
  const kiln_exp_config *c;
  const kiln_exp_hooks *h;
  kiln_dataset *base, *val, *test;
  int64_t k;
  char **class_names;  /* [k], borrowed from the dataset */
  int64_t *grid_idx;   /* test examples shown in grids */
  int n_grid;
} exp_ctx;

static void logf_(const exp_ctx *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(const exp_ctx *x, const char *fmt, ...) {
  if (!x->h || !x->h->log) return;
  va_list ap;
  va_start(ap, fmt);
  vfprintf(x->h->log, fmt, ap);
  va_end(ap);
  fflush(x->h->log);
}

/* What the epoch callback keeps while a run trains. */
typedef struct run_state {
  exp_ctx *x;
  kiln_exp_result *r;
  char dir[KILN_EXP_PATH], last[KILN_EXP_PATH + 32], best[KILN_EXP_PATH + 32], epochs_csv[KILN_EXP_PATH + 32];
  double best_f1, best_loss;
  int cap;
} run_state;

static kiln_code curve_push(kiln_exp_result *r, int *cap, kiln_err *e) {
  if (r->n_curve < *cap) return KILN_OK;
  int nc = *cap ? *cap * 2 : 16;
  double **curves[] = {&r->train_loss, &r->train_cls, &r->train_loc, &r->train_acc,
                       &r->val_acc,    &r->val_f1,    &r->val_loss,  &r->val_iou};
  for (size_t i = 0; i < sizeof curves / sizeof *curves; i++) {
    double *a = kiln_calloc((size_t)nc, sizeof *a);
    if (!a) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
    if (*curves[i]) memcpy(a, *curves[i], sizeof *a * (size_t)r->n_curve);
    kiln_free(*curves[i]);
    *curves[i] = a;
  }
  *cap = nc;
  return KILN_OK;
}

static kiln_eval_opts eval_opts(const exp_ctx *x) {
  kiln_eval_opts o = kiln_eval_opts_default();
  o.threads = x->c->threads;
  o.batch = x->c->batch;
  return o;
}

/* Mean softmax cross-entropy of logits [n,k] against labels. */
static double mean_ce(const float *logits, const int64_t *labels, int64_t n, int64_t k) {
  double s = 0;
  for (int64_t i = 0; i < n; i++) {
    const float *l = logits + i * k;
    double m = l[0];
    for (int64_t j = 1; j < k; j++) m = l[j] > m ? l[j] : m;
    double z = 0;
    for (int64_t j = 0; j < k; j++) z += exp(l[j] - m);
    s += log(z) + m - l[labels[i]];
  }
  return n ? s / (double)n : NAN;
}

static kiln_code on_epoch(void *ctx, kiln_trainer *t, const kiln_epoch_info *info, kiln_err *e) {
  (void)t;
  run_state *st = ctx;
  kiln_exp_result *r = st->r;
  KILN_TRY(curve_push(r, &st->cap, e));
  kiln_eval_opts eo = eval_opts(st->x);
  kiln_eval_result vr;
  KILN_TRY(kiln_evaluate(st->last, st->x->val, &eo, &vr, e));
  int i = r->n_curve++;
  r->train_loss[i] = info->loss;
  r->train_cls[i] = info->loss_cls;
  r->train_loc[i] = info->loss_loc;
  r->train_acc[i] = info->acc;
  r->val_acc[i] = vr.metrics.accuracy;
  r->val_f1[i] = vr.metrics.mean_f1;
  r->val_loss[i] = mean_ce(vr.logits, vr.label, vr.n, vr.k);
  r->val_iou[i] = vr.has_saliency ? vr.mean_iou : NAN;
  kiln_eval_result_free(&vr);
  /* the best epoch: highest mean F1 on validation, then lowest validation loss */
  bool better = r->best_epoch == 0 || r->val_f1[i] > st->best_f1 ||
                (r->val_f1[i] == st->best_f1 && r->val_loss[i] < st->best_loss);
  if (better) {
    KILN_TRY(kiln_export_checkpoint(st->last, st->best, false, e));
    r->best_epoch = info->epoch;
    st->best_f1 = r->val_f1[i];
    st->best_loss = r->val_loss[i];
  }
  FILE *f = fopen(st->epochs_csv, "a");
  if (!f) return kiln_errf(e, KILN_ERR_IO, "%s: cannot append: %s", st->epochs_csv, strerror(errno));
  fprintf(f, "%d,%.6f,%.6f,%.6f,%.4f,%.4f,%.4f,%.6f,%.4f,%.2f,%d\n", info->epoch, info->loss, info->loss_cls,
          info->loss_loc, info->acc, r->val_acc[i], r->val_f1[i], r->val_loss[i], r->val_iou[i], info->seconds,
          better);
  fclose(f);
  logf_(st->x, "  epoch %d/%d: train loss %.4f (cls %.4f, loc %.4f) acc %.3f | val acc %.3f F1 %.3f%s\n",
        info->epoch, info->epochs, info->loss, info->loss_cls, info->loss_loc, info->acc, r->val_acc[i], r->val_f1[i],
        better ? "  (best so far)" : "");
  return KILN_OK;
}

static kiln_code write_class_csv(const kiln_exp_result *r, const char *path, kiln_err *e) {
  FILE *f = fopen(path, "w");
  if (!f) return kiln_errf(e, KILN_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
  fprintf(f, "class,name,support,precision,sensitivity,specificity,f1\n");
  for (int64_t i = 0; i < r->k; i++)
    fprintf(f, "%lld,%s,%lld,%.6f,%.6f,%.6f,%.6f\n", (long long)i, r->class_names[i], (long long)r->cls_support[i],
            r->cls_precision[i], r->cls_sensitivity[i], r->cls_specificity[i], r->cls_f1[i]);
  fprintf(f, "mean,,%lld,%.6f,%.6f,%.6f,%.6f\n", (long long)r->n_test, r->precision, r->sensitivity, r->specificity,
          r->f1);
  fclose(f);
  return KILN_OK;
}

/* Test metrics of the best model into r. */
static kiln_code test_metrics(exp_ctx *x, const char *model, kiln_exp_result *r, kiln_err *e) {
  kiln_eval_opts eo = eval_opts(x);
  kiln_eval_result tr;
  KILN_TRY(kiln_evaluate(model, x->test, &eo, &tr, e));
  kiln_code rc = KILN_OK;
  r->k = tr.k;
  r->n_test = tr.n;
  r->accuracy = tr.metrics.accuracy;
  r->precision = tr.metrics.mean_precision;
  r->sensitivity = tr.metrics.mean_sensitivity;
  r->specificity = tr.metrics.mean_specificity;
  r->f1 = tr.metrics.mean_f1;
  r->spn_iou = tr.has_saliency ? tr.mean_iou : NAN;
  r->spn_dice = tr.has_saliency ? tr.mean_dice : NAN;
  size_t k = (size_t)tr.k;
  r->cls_precision = kiln_calloc(k, sizeof(double));
  r->cls_sensitivity = kiln_calloc(k, sizeof(double));
  r->cls_specificity = kiln_calloc(k, sizeof(double));
  r->cls_f1 = kiln_calloc(k, sizeof(double));
  r->cls_support = kiln_calloc(k, sizeof(int64_t));
  r->class_names = kiln_calloc(k, sizeof(char *));
  if (!r->cls_precision || !r->cls_sensitivity || !r->cls_specificity || !r->cls_f1 || !r->cls_support ||
      !r->class_names) {
    rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
    goto out;
  }
  for (int64_t i = 0; i < tr.k; i++) {
    const kiln_class_metrics *m = &tr.metrics.cls[i];
    r->cls_precision[i] = m->precision;
    r->cls_sensitivity[i] = m->sensitivity;
    r->cls_specificity[i] = m->specificity;
    r->cls_f1[i] = m->f1;
    r->cls_support[i] = m->support;
    const char *nm = kiln_data_class_name(x->test, i);
    char num[32];
    snprintf(num, sizeof num, "%lld", (long long)i);
    if (!nm) nm = num;
    r->class_names[i] = kiln_malloc(strlen(nm) + 1);
    if (!r->class_names[i]) {
      rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
      goto out;
    }
    strcpy(r->class_names[i], nm);
  }
out:
  kiln_eval_result_free(&tr);
  return rc;
}

/* Saliency scores on the test split, and the maps of the grid examples:
 * dir/maps.npy [G,3,H,W] (Grad-CAM and gradient min-max normalized, the SPN's
 * sigmoid; zeros when the method does not apply), dir/grid.csv (the examples and
 * their predicted classes) and dir/saliency.png. */
static kiln_code explain_run(exp_ctx *x, const char *model, const char *dir, kiln_exp_result *r, kiln_err *e) {
  kiln_explain_opts xo = kiln_explain_opts_default();
  xo.threads = x->c->threads;
  xo.batch = x->c->batch;
  xo.methods = KILN_EXPLAIN_ALL;
  kiln_explainer *ex = NULL;
  KILN_TRY(kiln_explainer_create(model, &xo, &ex, e));
  kiln_code rc = KILN_OK;
  kiln_explain_summary s;
  memset(&s, 0, sizeof s);
  float *images = NULL;
  int64_t *pred = NULL;
  kiln_tensor *maps = NULL;
  kiln_explanation expl;
  memset(&expl, 0, sizeof expl);
  kiln_explain_data_opts dopts = kiln_explain_data_opts_default();
  if ((rc = kiln_explain_dataset(ex, x->test, &dopts, &s, e))) goto out;
  r->cam_energy = s.mean[KILN_EXPLAIN_GRADCAM].energy;
  r->cam_pointing = s.mean[KILN_EXPLAIN_GRADCAM].pointing;
  r->cam_iou = s.mean[KILN_EXPLAIN_GRADCAM].iou_top;
  r->grad_energy = s.mean[KILN_EXPLAIN_GRAD].energy;
  r->grad_pointing = s.mean[KILN_EXPLAIN_GRAD].pointing;
  r->spnmap_energy = s.per[KILN_EXPLAIN_SPN] ? s.mean[KILN_EXPLAIN_SPN].energy : NAN;
  r->spnmap_pointing = s.per[KILN_EXPLAIN_SPN] ? s.mean[KILN_EXPLAIN_SPN].pointing : NAN;
  r->mask_area = s.mask_area;
  if (x->n_grid == 0) goto out;
  /* maps of the grid examples, in explainer batches */
  int64_t B = kiln_explainer_batch(ex), C = x->test->c, H = x->test->h, W = x->test->w, G = x->n_grid;
  images = kiln_calloc((size_t)(B * C * H * W), sizeof *images);
  pred = kiln_calloc((size_t)G, sizeof *pred);
  kiln_shape ms = {.rank = 4, .d = {G, KILN_EXPLAIN_METHODS, H, W}};
  if (!images || !pred) {
    rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
    goto out;
  }
  if ((rc = kiln_tensor_new(KILN_F32, &ms, &maps, e))) goto out;
  memset(maps->data, 0, kiln_tensor_nbytes(maps));
  for (int64_t first = 0; first < G; first += B) {
    int64_t cnt = G - first < B ? G - first : B;
    memset(images, 0, sizeof(float) * (size_t)(B * C * H * W));
    for (int64_t i = 0; i < cnt; i++) {
      int64_t label;
      bool hm;
      if ((rc = x->test->get(x->test, x->grid_idx[first + i], images + i * C * H * W, &label, NULL, &hm, e))) goto out;
    }
    if ((rc = kiln_explain_run(ex, images, NULL, &expl, e))) goto out;
    for (int64_t i = 0; i < cnt; i++) pred[first + i] = expl.target[i]; /* the predicted class */
    for (int64_t i = 0; i < cnt; i++)
      for (int m = 0; m < KILN_EXPLAIN_METHODS; m++) {
        if (!expl.map[m]) continue;
        float *dst = (float *)maps->data + ((first + i) * KILN_EXPLAIN_METHODS + m) * H * W;
        memcpy(dst, expl.map[m] + i * H * W, sizeof(float) * (size_t)(H * W));
        if (m != KILN_EXPLAIN_SPN) kiln_map_normalize(dst, H * W); /* the SPN's is a probability */
      }
    kiln_explanation_free(&expl);
  }
  char path[KILN_EXP_PATH + 32];
  snprintf(path, sizeof path, "%s/maps.npy", dir);
  if ((rc = kiln_tensor_save_npy(maps, path, e))) goto out;
  snprintf(path, sizeof path, "%s/grid.csv", dir);
  if ((rc = kiln_report_grid_preds_save(path, x->grid_idx, pred, (int)G, e))) goto out;
  snprintf(path, sizeof path, "%s/saliency.png", dir);
  rc = kiln_report_run_grid(x->test, x->grid_idx, pred, (int)G, (const float *)maps->data, r->run.spn, path, e);
out:
  kiln_free(pred);
  kiln_explanation_free(&expl);
  kiln_tensor_free(maps);
  kiln_free(images);
  kiln_explain_summary_free(&s);
  kiln_explainer_free(ex);
  return rc;
}

/* Builds the run's initial model as dir/init.onnx. */
static kiln_code build_model(exp_ctx *x, const kiln_exp_run *run, const char *path, kiln_err *e) {
  const kiln_exp_config *c = x->c;
  kiln_model_opts mo;
  kiln_model_defaults(&mo);
  mo.backbone = run->backbone;
  mo.width = c->width;
  mo.classes = x->k;
  mo.cnet_hidden = run->spn ? c->cnet_hidden : c->baseline_hidden;
  mo.spn = run->spn;
  if (run->spn) { /* the builder refuses SPN options without an SPN */
    mo.n_spn_scales = c->n_spn_scales;
    memcpy(mo.spn_scales, c->spn_scales, sizeof mo.spn_scales);
    mo.spn_width_cap = c->spn_width_cap;
  }
  mo.image_size = c->image_size;
  mo.batch = c->batch;
  mo.seed = run->seed;
  kiln_graph *g = NULL;
  KILN_TRY(kiln_model_build(&mo, &g, e));
  kiln_code rc = KILN_OK;
  if (c->init_from[0]) {
    kiln_graph *src = NULL;
    kiln_init_report rep;
    memset(&rep, 0, sizeof rep);
    rc = kiln_onnx_load(c->init_from, &src, e);
    if (!rc) rc = kiln_model_init_from(g, src, &rep, e);
    if (!rc)
      logf_(x, "  init-from %s: %d tensors copied, %d of a different shape, %d F-Net tensors not provided\n",
            c->init_from, rep.n_matched, rep.n_mismatched, rep.n_missing);
    kiln_init_report_free(&rep);
    ir_graph_free(src);
  }
  if (!rc) rc = kiln_onnx_save(g, path, e);
  ir_graph_free(g);
  return rc;
}

static kiln_code run_one(exp_ctx *x, const kiln_exp_run *run, kiln_exp_result *r, bool *reused, kiln_err *e) {
  const kiln_exp_config *c = x->c;
  memset(r, 0, sizeof *r);
  *reused = false;
  run_state st;
  memset(&st, 0, sizeof st);
  st.x = x;
  st.r = r;
  snprintf(st.dir, sizeof st.dir, "%s/runs/%s", c->out, run->id);
  char key[512], path[KILN_EXP_PATH + 32];
  run_key(c, run, key, sizeof key);
  snprintf(path, sizeof path, "%s/result.json", st.dir);
  if (file_exists(path)) {
    kiln_err le = {0};
    if (!kiln_exp_result_load(path, r, &le) && !strcmp(r->key, key)) {
      *reused = true;
      return KILN_OK;
    }
    logf_(x, "  %s: %s; running it again\n", path, le.code ? le.msg : "made with other settings");
    kiln_exp_result_free(r);
  }
  KILN_TRY(mkdir_p(st.dir, e));
  r->run = *run;
  snprintf(r->key, sizeof r->key, "%s", key);
  r->epochs = c->epochs;
  snprintf(st.last, sizeof st.last, "%s/last.onnx", st.dir);
  snprintf(st.best, sizeof st.best, "%s/best.onnx", st.dir);
  snprintf(st.epochs_csv, sizeof st.epochs_csv, "%s/epochs.csv", st.dir);
  char init[KILN_EXP_PATH + 32], steps[KILN_EXP_PATH + 32];
  snprintf(init, sizeof init, "%s/init.onnx", st.dir);
  snprintf(steps, sizeof steps, "%s/steps.csv", st.dir);
  remove(steps); /* kiln_fit appends */
  remove(st.best);
  FILE *f = fopen(st.epochs_csv, "w");
  if (!f) return kiln_errf(e, KILN_ERR_IO, "%s: cannot write: %s", st.epochs_csv, strerror(errno));
  fprintf(f, "epoch,train_loss,train_cls,train_loc,train_acc,val_acc,val_f1,val_loss,val_iou,seconds,best\n");
  fclose(f);
  double t0 = now_s();
  kiln_dataset *train = NULL;
  kiln_trainer *t = NULL;
  kiln_code rc = build_model(x, run, init, e);
  if (rc) goto out;
  kiln_data_opts dopts = kiln_data_opts_default();
  dopts.height = dopts.width = c->image_size;
  dopts.seed = run->seed; /* loc-ratio choice and augmentation; the split is the base's */
  dopts.loc_ratio = run->spn ? run->ratio : 0;
  dopts.augment = c->augment;
  if ((rc = kiln_data_view(x->base, KILN_SPLIT_TRAIN, &dopts, &train, e))) goto out;
  kiln_trainer_opts to = {.cfg = kiln_train_config_default(), .threads = c->threads};
  to.cfg.loc_loss = run->spn ? run->loss : KILN_LOC_NONE;
  to.cfg.lambda = c->lambda;
  to.cfg.lr = c->lr;
  if ((rc = kiln_trainer_create(init, c->batch, &to, &t, e))) goto out;
  remove(init);
  kiln_fit_opts fo = {.epochs = c->epochs,
                      .seed = run->seed,
                      .checkpoint = st.last,
                      .log_csv = steps,
                      .stop = x->h ? x->h->stop : NULL,
                      .progress = x->h ? x->h->log : NULL,
                      .tty = x->h && x->h->tty,
                      .loader_threads = 1,
                      .on_epoch = on_epoch,
                      .on_epoch_ctx = &st};
  kiln_fit_result fr;
  if ((rc = kiln_fit(t, train, &fo, &fr, e))) goto out;
  kiln_trainer_free(t);
  t = NULL;
  if (fr.stopped) {
    rc = kiln_errf(e, KILN_ERR_INVALID, "stopped during %s (its finished runs are kept; run again to continue)", run->id);
    goto out;
  }
  r->images_per_second = fr.images_per_second;
  if ((rc = test_metrics(x, st.best, r, e))) goto out;
  if ((rc = explain_run(x, st.best, st.dir, r, e))) goto out;
  r->seconds = now_s() - t0;
  snprintf(path, sizeof path, "%s/test_classes.csv", st.dir);
  if ((rc = write_class_csv(r, path, e))) goto out;
  snprintf(path, sizeof path, "%s/result.json", st.dir);
  if ((rc = kiln_exp_result_save(r, path, e))) goto out;
  remove(st.last);
  if (!c->keep_models) remove(st.best);
out:
  if (rc) kiln_err_prefix(e, "%s", run->id);
  kiln_trainer_free(t);
  kiln_dataset_free(train);
  if (rc) kiln_exp_result_free(r);
  return rc;
}

void kiln_exp_outcome_free(kiln_exp_outcome *o) {
  if (!o) return;
  for (int i = 0; i < o->n; i++) kiln_exp_result_free(&o->results[i]);
  kiln_free(o->results);
  memset(o, 0, sizeof *o);
}

kiln_code kiln_experiment_run(const kiln_exp_config *c, const kiln_exp_hooks *h, kiln_exp_outcome *o,
                              kiln_err *e) {
  memset(o, 0, sizeof *o);
  KILN_TRY(kiln_exp_config_check(c, e));
  double t0 = now_s();
  exp_ctx x = {.c = c, .h = h};
  kiln_exp_run *runs = NULL;
  int n = 0;
  KILN_TRY(kiln_exp_plan(c, &runs, &n, e));
  kiln_code rc = mkdir_p(c->out, e);
  int64_t *labels = NULL;
  bool *has_mask = NULL;
  if (!rc) {
    char path[KILN_EXP_PATH + 32];
    snprintf(path, sizeof path, "%s/config.txt", c->out);
    FILE *f = fopen(path, "w");
    if (f) {
      kiln_exp_config_write(c, f);
      fclose(f);
    }
  }
  kiln_data_opts dopts = kiln_data_opts_default();
  dopts.height = dopts.width = c->image_size;
  dopts.seed = c->split_seed;
  dopts.data_seed = c->data_seed;
  dopts.classes = c->classes[0] ? c->classes : NULL;
  dopts.count = c->count;
  dopts.synth_classes = c->synth_classes;
  dopts.skip_bad = c->skip_bad;
  if (!rc) rc = kiln_dataset_open_spec(c->data, &dopts, &x.base, e);
  if (!rc) rc = kiln_data_view(x.base, KILN_SPLIT_VAL, &dopts, &x.val, e);
  if (!rc) rc = kiln_data_view(x.base, KILN_SPLIT_TEST, &dopts, &x.test, e);
  if (rc) goto out;
  x.k = x.base->classes;
  if (x.val->n < 1 || x.test->n < 1) {
    rc = kiln_errf(e, KILN_ERR_INVALID, "%s: the validation or test split is empty (%lld, %lld examples)", c->data,
                   (long long)x.val->n, (long long)x.test->n);
    goto out;
  }
  /* grid examples: test images with masks, one class after another */
  labels = kiln_calloc((size_t)x.test->n, sizeof *labels);
  has_mask = kiln_calloc((size_t)x.test->n, sizeof *has_mask);
  x.grid_idx = kiln_calloc((size_t)(c->grid_rows > 0 ? c->grid_rows : 1), sizeof *x.grid_idx);
  if (!labels || !has_mask || !x.grid_idx) {
    rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
    goto out;
  }
  if ((rc = kiln_data_meta(x.test, labels, has_mask, NULL, e))) goto out;
  x.n_grid = kiln_exp_grid_examples(labels, has_mask, x.test->n, x.k, c->grid_rows, x.grid_idx);
  o->results = kiln_calloc((size_t)n, sizeof *o->results);
  if (!o->results) {
    rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
    goto out;
  }
  {
    char summary[2048];
    kiln_data_summary(x.base, summary, sizeof summary);
    logf_(&x, "%s", summary);
    logf_(&x, "%d runs, %d epochs each, %lldx%lld images, batch %lld; results in %s/\n", n, c->epochs,
          (long long)c->image_size, (long long)c->image_size, (long long)c->batch, c->out);
  }
  for (int i = 0; i < n; i++) {
    bool reused = false;
    logf_(&x, "[%d/%d] %s\n", i + 1, n, runs[i].id);
    if ((rc = run_one(&x, &runs[i], &o->results[i], &reused, e))) goto out;
    o->n = i + 1;
    if (reused) o->n_reused++;
    kiln_exp_result *r = &o->results[i];
    logf_(&x, "  %s: best epoch %d; test accuracy %.3f, mean F1 %.3f (%.0f s)\n",
          reused ? "reused its earlier result" : "done", r->best_epoch, r->accuracy, r->f1, r->seconds);
  }
  if (c->report) {
    snprintf(o->report, sizeof o->report, "%s/report.html", c->out);
    if ((rc = kiln_report_write(c, o->results, o->n, x.test, x.grid_idx, x.n_grid, now_s() - t0, e))) goto out;
  }
out:
  o->seconds = now_s() - t0;
  kiln_free(labels);
  kiln_free(has_mask);
  kiln_free(x.grid_idx);
  kiln_free(runs);
  kiln_dataset_free(x.val);
  kiln_dataset_free(x.test);
  kiln_dataset_free(x.base);
  if (rc) {
    o->report[0] = 0;
  }
  return rc;
}
