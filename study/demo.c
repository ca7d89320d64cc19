/* demo.c — the settings and the printed comparison of `kiln demo` (study/demo.h). */
#include "study/demo.h"

#include <math.h>
#include <string.h>

void kiln_demo_opts_default(kiln_demo_opts *o) {
  memset(o, 0, sizeof *o);
  snprintf(o->out, sizeof o->out, "kiln-demo");
  o->seed = 1;
  o->epochs = 20;
  o->image_size = 128;
  o->width = 16;
  o->batch = 16;
  o->loc_ratio = 0.25;
}

void kiln_demo_config(const kiln_demo_opts *o, kiln_exp_config *c) {
  kiln_exp_config_default(c);
  snprintf(c->data, sizeof c->data, "synthetic:shapes");
  c->count = 60;
  c->synth_classes = 8;
  c->n_backbones = 1;
  c->backbones[0] = KILN_RESNET18;
  c->baseline = true;
  c->n_ratios = 1;
  c->ratios[0] = o->loc_ratio;
  c->n_losses = 1;
  c->losses[0] = KILN_LOC_BCE;
  c->n_seeds = 1;
  c->seeds[0] = o->seed;
  c->image_size = o->image_size;
  c->width = o->width;
  c->epochs = o->epochs;
  c->batch = o->batch;
  c->threads = o->threads;
  c->grid_rows = 8;
  snprintf(c->out, sizeof c->out, "%s", o->out);
  snprintf(c->title, sizeof c->title, "kiln demo: baseline vs SPN on synthetic:shapes");
}

static const kiln_exp_result *pick(const kiln_exp_outcome *o, bool spn) {
  for (int i = 0; i < o->n; i++)
    if (o->results[i].run.spn == spn) return &o->results[i];
  return NULL;
}

static void row(FILE *f, const char *name, double b, double s) {
  fprintf(f, "  %-34s", name);
  if (isfinite(b)) fprintf(f, " %9.1f", 100 * b);
  else fprintf(f, " %9s", "-");
  if (isfinite(s)) fprintf(f, " %9.1f", 100 * s);
  else fprintf(f, " %9s", "-");
  if (isfinite(b) && isfinite(s)) fprintf(f, " %+9.1f", fabs(s - b) < 5e-4 ? 0.0 : 100 * (s - b)); /* no -0.0 */
  fputc('\n', f);
}

void kiln_demo_print(const kiln_exp_outcome *o, FILE *f) {
  const kiln_exp_result *b = pick(o, false), *s = pick(o, true);
  if (!b || !s) return;
  fprintf(f, "\nTest split (%lld images), %%          baseline    SPN %g%%      diff\n", (long long)s->n_test,
          100 * s->run.ratio);
  row(f, "avg precision", b->precision, s->precision);
  row(f, "avg sensitivity", b->sensitivity, s->sensitivity);
  row(f, "avg specificity", b->specificity, s->specificity);
  row(f, "avg F1-score", b->f1, s->f1);
  row(f, "accuracy", b->accuracy, s->accuracy);
  row(f, "Grad-CAM energy in mask", b->cam_energy, s->cam_energy);
  row(f, "Grad-CAM pointing game", b->cam_pointing, s->cam_pointing);
  row(f, "gradient energy in mask", b->grad_energy, s->grad_energy);
  row(f, "SPN map energy in mask", b->spnmap_energy, s->spnmap_energy);
  row(f, "SPN mask IoU", b->spn_iou, s->spn_iou);
  fprintf(f, "  (a uniform map's energy in mask: %.1f; best epochs on validation: %d and %d of %d)\n",
          100 * s->mask_area, b->best_epoch, s->best_epoch, s->epochs);
}
