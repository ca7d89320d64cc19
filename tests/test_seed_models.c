/* test_seed_models.c — differential execution of the seed models built by
 * `kiln model`: the compiled program (JIT, 1 and 2 threads) against the
 * reference interpreter, with non-trivial BatchNorm statistics, for every
 * backbone and SPN variant; the two thread counts agree bit for bit. */
#include "codegen/compile.h"
#include "models/models.h"
#include "runtime/ref.h"
#include "test.h"

/* BN statistics away from the identity, so folding/epilogue errors cannot hide. */
static void perturb_bn(kiln_graph *g) {
  for (int64_t v = 0; v < g->n_values; v++) {
    kiln_value *val = &g->values[v];
    if (!val->data || val->dtype != KILN_F32) continue;
    const char *nm = val->name;
    size_t l = strlen(nm);
    bool mean = l > 13 && !strcmp(nm + l - 13, ".running_mean");
    bool var = l > 12 && !strcmp(nm + l - 12, ".running_var");
    float *d = val->data->data;
    for (int64_t i = 0; i < val->data->numel; i++) {
      float u = (float)((i * 37 + (int64_t)l * 11) % 17) / 17.0f;
      if (mean) d[i] = 0.2f * (u - 0.5f);
      if (var) d[i] = 0.5f + u;
    }
  }
}

static kiln_graph *build(const kiln_model_opts *o) {
  kiln_err e = {0};
  kiln_graph *g = NULL;
  CHECK_OK(kiln_model_build(o, &g, &e), &e);
  if (!g) return NULL;
  perturb_bn(g);
  kiln_evaluator ev = kiln_ref_evaluator();
  CHECK_OK(ir_infer(g, &ev, &e), &e);
  return g;
}

static void check_variant(const char *what, const kiln_model_opts *o) {
  kiln_err e = {0};
  kiln_graph *gref = build(o);
  if (!gref) return;
  kiln_tensor *x;
  kiln_tensor_new(KILN_F32, &gref->values[gref->inputs[0]].shape, &x, &e);
  for (int64_t i = 0; i < x->numel; i++) ((float *)x->data)[i] = (float)((i * 7919) % 2003) / 1001.0f - 1.0f;
  kiln_tensor *want[2] = {0}, *got[2][2] = {{0}};
  kiln_ref_ctx ctx = {.g = gref};
  CHECK_OK(kiln_ref_run(gref, &ctx, &x, want, &e), &e);
  for (int t = 0; t < 2; t++) {
    kiln_program *p = NULL;
    kiln_compile_opts co = {.threads = t + 1}; /* kernel cache: $KILN_CACHE_DIR */
    CHECK_OK(kiln_compile(build(o), &co, &p, &e), &e);
    if (!p) continue;
    CHECK_MSG(p->n_fallback == 0, "%s: %d steps fell back to reference kernels", what, p->n_fallback);
    CHECK_OK(kiln_program_run(p, &x, got[t], false, &e), &e);
    kiln_program_free(p);
  }
  for (int i = 0; i < gref->n_outputs; i++) {
    if (!want[i] || !got[0][i] || !got[1][i]) continue;
    double scale = 0, worst = 0;
    for (int64_t k = 0; k < want[i]->numel; k++) {
      double w = ((float *)want[i]->data)[k];
      if (fabs(w) > scale) scale = fabs(w);
    }
    for (int64_t k = 0; k < want[i]->numel; k++) {
      double d = fabs((double)((float *)got[0][i]->data)[k] - ((float *)want[i]->data)[k]);
      if (d > worst) worst = d;
    }
    CHECK_MSG(worst <= 1e-4 * (scale > 1 ? scale : 1), "%s output %d: JIT differs from the reference by %g (scale %g)",
              what, i, worst, scale);
    CHECK_MSG(memcmp(got[0][i]->data, got[1][i]->data, kiln_tensor_nbytes(want[i])) == 0,
              "%s output %d: 1 and 2 threads differ", what, i);
  }
  for (int i = 0; i < 2; i++) {
    kiln_tensor_free(want[i]);
    kiln_tensor_free(got[0][i]);
    kiln_tensor_free(got[1][i]);
  }
  kiln_tensor_free(x);
  ir_graph_free(gref);
}

static void test_variants(void) {
  kiln_model_opts o;
  kiln_model_defaults(&o);
  o.width = 4;
  o.classes = 5;
  o.cnet_hidden = 16;
  o.image_size = 64;
  o.batch = 2;
  check_variant("resnet18 + SPN nearest", &o);
  o.upsample = KILN_UPSAMPLE_BILINEAR;
  check_variant("resnet18 + SPN bilinear", &o);
  o.align_corners = true;
  check_variant("resnet18 + SPN bilinear align_corners", &o);
  kiln_model_defaults(&o);
  o.backbone = KILN_RESNET34;
  o.width = 4;
  o.classes = 3;
  o.cnet_hidden = 0;
  o.spn = false;
  o.image_size = 32;
  check_variant("resnet34 baseline", &o);
  kiln_model_defaults(&o);
  o.backbone = KILN_RESNET50;
  o.width = 4;
  o.classes = 3;
  o.image_size = 64;
  o.n_spn_scales = 4;
  int64_t sc[4] = {2, 2, 2, 4};
  memcpy(o.spn_scales, sc, sizeof sc);
  o.spn_width_cap = 32;
  check_variant("resnet50 + SPN 2,2,2,4", &o);
}

int main(void) {
  RUN(test_variants);
  TEST_MAIN_END();
}
