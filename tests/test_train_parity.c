/* test_train_parity.c — one compiled training step of a narrow ResNet-18 + C-Net + SPN
 * against PyTorch: losses, gradients and updated weights (and BatchNorm running
 * statistics) for each localization loss, from the fixture that
 * scripts/make_train_fixtures.py writes (tests/data/train_parity/, layout in its
 * docstring).
 *
 * Tolerance: |kiln - torch| <= 1e-4 * max|torch| per tensor.  The fixture's float32
 * noise floor (PyTorch float32 vs float64) is about 2e-5, printed by the script.
 *
 * Gradients: after one Adam step from zero moments, m' = (1 - beta1) * g, so the
 * trainer's `optim.adam_m.<param>` state holds the gradient kiln's autodiff computed.
 *
 * Updated weights: Adam's first step moves each weight by lr * g / (|g| + eps), about
 * lr * sign(g), so an element whose gradient is within the gradient tolerance of zero
 * may legitimately move the other way (its sign is float32 noise).  Those elements —
 * |g_torch| <= 1e-4 * max|g_torch| — are checked against Adam applied to kiln's own
 * (already checked) gradient instead, and counted. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frontend/onnx.h"
#include "test.h"
#include "train/trainer.h"

#define DIR KILN_SOURCE_DIR "/tests/data/train_parity"
#define TOL 1e-4
#define MAX_TENSORS 256

typedef struct entry {
  char name[128];
  bool is_param;
  int64_t numel, off_grad, off_all; /* offsets into grads.npy and updated.npy */
} entry;

static entry tensors[MAX_TENSORS];
static int n_tensors;
static kiln_tensor *image, *labels, *mask, *present;
static kiln_graph *initial; /* the model before the step (initial weights) */

static kiln_tensor *load(const char *rel) {
  char p[512];
  snprintf(p, sizeof p, "%s/%s", DIR, rel);
  kiln_err e = {0};
  kiln_tensor *t = NULL;
  CHECK_OK(kiln_tensor_load_file(p, &t, &e), &e);
  return t;
}

static bool load_fixture(void) {
  FILE *f = fopen(DIR "/tensors.txt", "r");
  CHECK_MSG(f != NULL, "%s/tensors.txt missing: run scripts/make_train_fixtures.py", DIR);
  if (!f) return false;
  char name[128], kind[16];
  long long numel;
  int64_t og = 0, oa = 0;
  while (n_tensors < MAX_TENSORS && fscanf(f, "%127s %15s %lld", name, kind, &numel) == 3) {
    entry *t = &tensors[n_tensors++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->is_param = !strcmp(kind, "param");
    t->numel = numel;
    t->off_grad = t->is_param ? og : -1;
    t->off_all = oa;
    og += t->is_param ? numel : 0;
    oa += numel;
  }
  fclose(f);
  image = load("image.npy");
  labels = load("labels.npy");
  mask = load("mask.npy");
  present = load("mask_present.npy");
  kiln_err e = {0};
  CHECK_OK(kiln_onnx_load(DIR "/model.onnx", &initial, &e), &e);
  return n_tensors > 0 && image && labels && mask && present && initial;
}

/* max |a - b| / max |b| over n floats */
static double rel_err(const float *a, const float *b, int64_t n, int64_t *worst) {
  double mx = 0, md = 0;
  *worst = 0;
  for (int64_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - (double)b[i]);
    if (fabs((double)b[i]) > mx) mx = fabs((double)b[i]);
    if (d > md) {
      md = d;
      *worst = i;
    }
  }
  return mx > 0 ? md / mx : md;
}

static double max_abs(const float *a, int64_t n) {
  double m = 0;
  for (int64_t i = 0; i < n; i++)
    if (fabs((double)a[i]) > m) m = fabs((double)a[i]);
  return m;
}

typedef struct worst {
  double err;
  char name[128];
} worst;

static void note(worst *w, double err, const char *name) {
  if (err > w->err) {
    w->err = err;
    snprintf(w->name, sizeof w->name, "%s", name);
  }
}

static void run_loss(const char *loss, kiln_loc_loss kind, int threads) {
  char rel[256];
  snprintf(rel, sizeof rel, "%s/losses.npy", loss);
  kiln_tensor *want_losses = load(rel);
  snprintf(rel, sizeof rel, "%s/grads.npy", loss);
  kiln_tensor *want_grads = load(rel);
  snprintf(rel, sizeof rel, "%s/updated.npy", loss);
  kiln_tensor *want_all = load(rel);
  kiln_err e = {0};
  kiln_trainer_opts to = {.cfg = kiln_train_config_default(), .threads = threads, .cache_dir = ""};
  to.cfg.loc_loss = kind;
  to.cfg.lambda = 1.0;
  to.cfg.lr = 1e-3;
  to.cfg.beta1 = 0.9;
  to.cfg.beta2 = 0.999;
  to.cfg.eps = 1e-8;
  kiln_trainer *t = NULL;
  CHECK_OK(kiln_trainer_create(DIR "/model.onnx", 0, &to, &t, &e), &e);
  kiln_step_result r = {0};
  if (t) CHECK_OK(kiln_trainer_step(t, image, labels, mask, present, &r, &e), &e);
  if (!t || !want_losses || !want_grads || !want_all || e.code) goto done;

  const float *wl = (const float *)want_losses->data;
  double got_l[3] = {r.loss, r.loss_cls, r.loss_loc};
  const char *lname[3] = {"loss", "loss_cls", "loss_loc"};
  for (int i = 0; i < 3; i++)
    CHECK_MSG(fabs(got_l[i] - wl[i]) <= TOL * fabs(wl[i]), "%s %s: kiln %.8g, torch %.8g", loss, lname[i],
              got_l[i], (double)wl[i]);

  worst wg = {0}, wp = {0}, ws = {0};
  int64_t ambiguous = 0, checked = 0;
  const float b1 = 0.9f, lr = 1e-3f, eps = 1e-8f;
  for (int k = 0; k < n_tensors; k++) {
    const entry *en = &tensors[k];
    kiln_tensor *cur = NULL, *m = NULL;
    CHECK_OK(kiln_trainer_get(t, en->name, &cur, &e), &e);
    if (!cur) continue;
    CHECK_MSG(cur->numel == en->numel, "%s: %lld elements, fixture %lld", en->name, (long long)cur->numel,
              (long long)en->numel);
    if (cur->numel != en->numel) {
      kiln_tensor_free(cur);
      continue;
    }
    const float *want_p = (const float *)want_all->data + en->off_all, *got_p = (const float *)cur->data;
    int64_t at;
    if (!en->is_param) { /* running statistics: plain comparison */
      double err = rel_err(got_p, want_p, en->numel, &at);
      note(&ws, err, en->name);
      CHECK_MSG(err <= TOL, "%s %s (running statistic): relative error %.3g at [%lld]: kiln %.8g, torch %.8g", loss,
                en->name, err, (long long)at, (double)got_p[at], (double)want_p[at]);
      kiln_tensor_free(cur);
      continue;
    }
    /* the gradient, from Adam's first moment */
    char mname[192];
    snprintf(mname, sizeof mname, "optim.adam_m.%s", en->name);
    CHECK_OK(kiln_trainer_get(t, mname, &m, &e), &e);
    int vid = ir_find_value(initial, en->name);
    CHECK_MSG(vid >= 0 && initial->values[vid].data, "%s: no initial value in model.onnx", en->name);
    if (!m || vid < 0 || !initial->values[vid].data) {
      kiln_tensor_free(cur);
      kiln_tensor_free(m);
      continue;
    }
    float *g = (float *)m->data;
    for (int64_t i = 0; i < m->numel; i++) g[i] /= (1.0f - b1);
    const float *want_g = (const float *)want_grads->data + en->off_grad;
    double err = rel_err(g, want_g, en->numel, &at);
    note(&wg, err, en->name);
    CHECK_MSG(err <= TOL, "%s d loss / d %s: relative error %.3g at [%lld]: kiln %.8g, torch %.8g (max |g| %.3g)",
              loss, en->name, err, (long long)at, (double)g[at], (double)want_g[at], max_abs(want_g, en->numel));
    /* the updated weight */
    const float *p0 = (const float *)initial->values[vid].data->data;
    double pmax = max_abs(want_p, en->numel), gtol = TOL * max_abs(want_g, en->numel), md = 0;
    int64_t bad = -1;
    for (int64_t i = 0; i < en->numel; i++) {
      double ref = want_p[i];
      if (fabs((double)want_g[i]) <= gtol) { /* sign is noise: Adam on kiln's own gradient */
        ambiguous++;
        ref = (double)p0[i] - (double)lr * (double)g[i] / (fabs((double)g[i]) + (double)eps);
      }
      checked++;
      double d = fabs((double)got_p[i] - ref);
      if (d > md) {
        md = d;
        bad = i;
      }
    }
    double perr = pmax > 0 ? md / pmax : md;
    note(&wp, perr, en->name);
    CHECK_MSG(perr <= TOL, "%s updated %s: relative error %.3g at [%lld]: kiln %.8g, torch %.8g (gradient %.3g / %.3g)",
              loss, en->name, perr, (long long)bad, (double)got_p[bad], (double)want_p[bad], (double)g[bad],
              (double)want_g[bad]);
    kiln_tensor_free(cur);
    kiln_tensor_free(m);
  }
  printf("%s (%d threads): loss %.6f (torch %.6f), cls %.6f, loc %.6f; worst relative errors: gradient %.2e "
         "(%s), updated parameter %.2e (%s), running statistic %.2e (%s); %lld of %lld updated elements had a "
         "gradient within tolerance of zero\n",
         loss, threads, r.loss, (double)wl[0], r.loss_cls, r.loss_loc, wg.err, wg.name, wp.err, wp.name, ws.err,
         ws.name, (long long)ambiguous, (long long)checked);
done:
  kiln_trainer_free(t);
  kiln_tensor_free(want_losses);
  kiln_tensor_free(want_grads);
  kiln_tensor_free(want_all);
}

static void test_bce(void) { run_loss("bce", KILN_LOC_BCE, 2); }
static void test_l1(void) { run_loss("l1", KILN_LOC_L1, 2); }
static void test_l2(void) { run_loss("l2", KILN_LOC_L2, 2); }
static void test_bce_one_thread(void) { run_loss("bce", KILN_LOC_BCE, 1); }

int main(void) {
  if (!load_fixture()) TEST_MAIN_END();
  RUN(test_bce);
  RUN(test_l1);
  RUN(test_l2);
  RUN(test_bce_one_thread);
  kiln_tensor_free(image);
  kiln_tensor_free(labels);
  kiln_tensor_free(mask);
  kiln_tensor_free(present);
  ir_graph_free(initial);
  TEST_MAIN_END();
}
