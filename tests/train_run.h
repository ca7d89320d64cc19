/* train_run.h — two steps of a compiled training step (train/trainer.h) on one batch, and the
 * comparison of two such runs' losses and state, for the training-fusion tests: a fused
 * pipeline against the unfused one, at several thread counts. */
#ifndef KILN_TEST_TRAIN_RUN_H
#define KILN_TEST_TRAIN_RUN_H

#include <math.h>
#include <string.h>

#include "graph_build.h"
#include "test.h"
#include "train/trainer.h"

/* The tests' optimizer settings: SGD with a large step (so two steps move the weights), or
 * Adam with its default rate; a little weight decay. */
static inline kiln_train_config trun_config(kiln_optim optim) {
  kiln_train_config c = kiln_train_config_default();
  c.optim = optim;
  c.lr = optim == KILN_OPTIM_SGD ? 0.05 : 1e-3;
  c.weight_decay = 1e-4;
  return c;
}

/* Inputs of a training graph: the batch (seeded: 3 classes, masks ~40% on), optimizer
 * scalars for step 1, and the state's initial values.  Every image has a mask when
 * all_masks, else only images 0, 2, 3, 4, 6, ... (an absent mask exercised). */
static inline void trun_step_inputs(const kiln_train_graph *tg, kiln_tensor **in, bool all_masks) {
  const kiln_graph *g = tg->g;
  kiln_err e = {0};
  uint64_t seed = 99;
  for (int i = 0; i < g->n_inputs; i++) {
    int v = g->inputs[i];
    const kiln_value *val = &g->values[v];
    in[i] = NULL;
    for (int s = 0; s < tg->n_state; s++)
      if (tg->state[s].in == v) CHECK_OK(kiln_tensor_clone(tg->state[s].init, &in[i], &e), &e);
    if (in[i]) continue;
    CHECK_OK(kiln_tensor_new(val->dtype, &val->shape, &in[i], &e), &e);
    if (!in[i]) continue;
    for (int64_t k = 0; k < in[i]->numel; k++) {
      double u = rng_uniform(&seed), x;
      if (v == tg->in_labels) x = (double)(k % 3);
      else if (v == tg->in_mask) x = u > 0.6;
      else if (v == tg->in_present) x = all_masks || k % 2 == 0 || k == 3;
      else x = 2 * u - 1;
      kiln_tensor_set_f(in[i], k, x);
    }
    if (v == tg->in_hyper) kiln_optim_hyper(&tg->cfg, 1, in[i]->data);
  }
}

typedef struct run_out {
  double loss[2];
  int n;
  kiln_tensor *state[256];
  char *names[256];
} run_out;

/* Trains `model` (an ONNX file) for two steps with SGD (trun_config) through `passes` at
 * `threads` on one batch: the image, labels, mask and present flags among in[] (the inputs of
 * tg, a reference build of the same step, which also names the state read back into r). */
static inline void trun_run(const char *model, const char *passes, int threads,
                            const kiln_train_graph *tg, kiln_tensor *const *in, run_out *r) {
  memset(r, 0, sizeof *r);
  kiln_err e = {0};
  kiln_trainer_opts to = {.cfg = trun_config(KILN_OPTIM_SGD), .threads = threads, .cache_dir = "",
                          .passes = passes};
  kiln_trainer *t = NULL;
  CHECK_OK(kiln_trainer_create(model, 0, &to, &t, &e), &e);
  if (!t) return;
  const kiln_tensor *image = NULL, *labels = NULL, *mask = NULL, *present = NULL;
  for (int i = 0; i < tg->g->n_inputs; i++) {
    int v = tg->g->inputs[i];
    if (v == tg->in_image) image = in[i];
    if (v == tg->in_labels) labels = in[i];
    if (v == tg->in_mask) mask = in[i];
    if (v == tg->in_present) present = in[i];
  }
  for (int s = 0; s < 2; s++) {
    kiln_step_result sr;
    CHECK_OK(kiln_trainer_step(t, image, labels, mask, present, &sr, &e), &e);
    r->loss[s] = sr.loss;
  }
  for (int i = 0; i < tg->n_state && r->n < 256; i++) {
    const char *name = tg->g->values[tg->state[i].in].name;
    CHECK_OK(kiln_trainer_get(t, name, &r->state[r->n], &e), &e);
    r->names[r->n++] = kiln_strdup(name);
  }
  kiln_trainer_free(t);
}

static inline void free_run(run_out *r) {
  for (int i = 0; i < r->n; i++) {
    kiln_tensor_free(r->state[i]);
    kiln_free(r->names[i]);
  }
}

/* Every state tensor of b within tol * max|a| of a's (per tensor), and the losses. */
static inline void compare_runs(const run_out *a, const run_out *b, double tol, const char *what) {
  CHECK_MSG(a->n == b->n && a->n > 0, "%s: %d vs %d state tensors", what, a->n, b->n);
  for (int s = 0; s < 2; s++)
    CHECK_MSG(fabs(a->loss[s] - b->loss[s]) <= tol * fmax(1, fabs(a->loss[s])),
              "%s: loss of step %d: %.9g vs %.9g", what, s + 1, a->loss[s], b->loss[s]);
  for (int i = 0; i < a->n && i < b->n; i++) {
    const kiln_tensor *x = a->state[i], *y = b->state[i];
    if (!x || !y || x->numel != y->numel) {
      CHECK_MSG(false, "%s: %s missing", what, a->names[i]);
      continue;
    }
    double mx = 0, worst = 0;
    for (int64_t k = 0; k < x->numel; k++) mx = fmax(mx, fabs(((float *)x->data)[k]));
    for (int64_t k = 0; k < x->numel; k++)
      worst = fmax(worst, fabs(((float *)x->data)[k] - ((float *)y->data)[k]));
    CHECK_MSG(worst <= tol * fmax(mx, 1e-3), "%s: %s differs by %.3g (max |value| %.3g)", what,
              a->names[i], worst, mx);
  }
}

#endif
