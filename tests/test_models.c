/* test_models.c — `kiln model`'s network builder: torchvision parameter counts, MACs,
 * SPN planning and option errors, reproducible bytes, symbolic batch, --init-from, and
 * the reference runtime's outputs against PyTorch's (fixtures by scripts/make_fixtures.py). */
#include <unistd.h>

#include "frontend/onnx.h"
#include "models/models.h"
#include "runtime/ref.h"
#include "test.h"

#define DATA KILN_SOURCE_DIR "/tests/data"

static kiln_model_opts narrow_opts(void) {
  kiln_model_opts o;
  kiln_model_defaults(&o);
  o.width = 8;
  o.classes = 3;
  o.cnet_hidden = 16;
  o.image_size = 64;
  o.batch = 2;
  o.seed = 7;
  return o;
}

static const kiln_tensor *init_of(const kiln_graph *g, const char *name) {
  int v = ir_find_value(g, name);
  return v >= 0 ? g->values[v].data : NULL;
}

static void test_torchvision_param_counts(void) {
  static const struct {
    kiln_backbone b;
    int64_t params;
  } want[] = {{KILN_RESNET18, 11689512}, {KILN_RESNET34, 21797672}, {KILN_RESNET50, 25557032}};
  for (int i = 0; i < 3; i++) {
    kiln_err e = {0};
    kiln_model_opts o;
    kiln_model_defaults(&o);
    o.backbone = want[i].b;
    o.classes = 1000;
    o.cnet_hidden = 0;
    o.spn = false;
    kiln_graph *g = NULL;
    CHECK_OK(kiln_model_build(&o, &g, &e), &e);
    if (!g) continue;
    CHECK_MSG(kiln_model_param_count(g, NULL) == want[i].params, "%s: %lld parameters",
              kiln_backbone_name(o.backbone), (long long)kiln_model_param_count(g, NULL));
    CHECK(kiln_model_param_count(g, "spn/") == 0);
    CHECK(init_of(g, "fc.weight") && init_of(g, "fc.weight")->shape.d[0] == 1000);
    CHECK(init_of(g, "layer1.0.bn1.running_mean") != NULL);
    CHECK(init_of(g, "layer2.0.downsample.0.weight") != NULL);
    /* only ResNet-50's first block changes channels in layer1 */
    CHECK((init_of(g, "layer1.0.downsample.1.running_var") != NULL) ==
          (want[i].b == KILN_RESNET50));
    ir_graph_free(g);
  }
}

/* MACs of nodes whose name starts with prefix (NULL: all), per the ops' cost callbacks. */
static int64_t macs_of(const kiln_graph *g, const char *prefix) {
  int64_t m = 0;
  for (int64_t i = 0; i < g->n_nodes; i++) {
    const kiln_node *n = &g->nodes[i];
    if (prefix && strncmp(n->name, prefix, strlen(prefix)) != 0) continue;
    if (n->def->macs) m += n->def->macs(g, n);
  }
  return m;
}

static void test_study_resnet18_macs(void) {
  kiln_err e = {0};
  kiln_model_opts o;
  kiln_model_defaults(&o);
  o.classes = 8; /* ResNet-18 + C-Net(1024, 8) + 5-block SPN at 224 */
  kiln_graph *g = NULL;
  CHECK_OK(kiln_model_build(&o, &g, &e), &e);
  if (!g) return;
  double total = (double)macs_of(g, NULL) / 1e9, spn = (double)macs_of(g, "spn/") / 1e9;
  CHECK_CLOSE(total, 2.97, 0, 0.005);
  CHECK_CLOSE(spn, 1.16, 0, 0.005);
  CHECK_CLOSE((double)macs_of(g, "fnet/") / 1e9, 1.814, 0, 0.001);
  /* SPN channels 512 -> 256 -> 128 -> 64 -> 32 -> 16 -> 1 */
  static const int64_t ch[] = {256, 128, 64, 32, 16};
  for (int i = 0; i < 5; i++) {
    char nm[64];
    snprintf(nm, sizeof nm, "spn.%d.conv.weight", i);
    const kiln_tensor *w = init_of(g, nm);
    CHECK(w && w->shape.d[0] == ch[i] && w->shape.d[1] == (i ? ch[i - 1] : 512));
  }
  CHECK(init_of(g, "spn.head.weight") && init_of(g, "spn.head.weight")->shape.d[1] == 16);
  const kiln_value *sal = &g->values[g->outputs[1]];
  CHECK(!strcmp(sal->name, "saliency") && sal->shape.d[2] == 224 && sal->shape.d[3] == 224);
  CHECK(!strcmp(g->values[g->outputs[0]].name, "logits"));
  CHECK(ir_find_value(g, "features") >= 0 &&
        g->values[ir_find_value(g, "features")].shape.d[1] == 512);
  ir_graph_free(g);
}

static void test_spn_plan(void) {
  kiln_err e = {0};
  kiln_model_opts o;
  kiln_model_plan p;
  kiln_model_defaults(&o);
  CHECK_OK(kiln_model_plan_make(&o, &p, &e), &e);
  CHECK(p.feat_size == 7 && p.feat_channels == 512 && p.spn_blocks == 5);
  /* the study's 4 blocks */
  o.n_spn_scales = 4;
  memcpy(o.spn_scales, (int64_t[]){2, 2, 2, 4}, 4 * sizeof(int64_t));
  CHECK_OK(kiln_model_plan_make(&o, &p, &e), &e);
  CHECK(p.spn_blocks == 4 && p.spn_scales[3] == 4 && p.spn_channels[3] == 32);
  /* ResNet-50 with a width cap: the first block is capped, halving continues */
  o.backbone = KILN_RESNET50;
  o.spn_width_cap = 256;
  CHECK_OK(kiln_model_plan_make(&o, &p, &e), &e);
  CHECK(p.feat_channels == 2048 && p.spn_channels[0] == 256 && p.spn_channels[3] == 32);
  /* --spn-blocks alone: equal scales */
  kiln_model_defaults(&o);
  o.spn_blocks = 1;
  CHECK_OK(kiln_model_plan_make(&o, &p, &e), &e);
  CHECK(p.spn_blocks == 1 && p.spn_scales[0] == 32);
  o.spn_blocks = 3; /* 32 is no cube */
  CHECK(kiln_model_plan_make(&o, &p, &e) == KILN_ERR_INVALID);
  kiln_err_clear(&e);
  /* scales that miss the image size */
  kiln_model_defaults(&o);
  o.n_spn_scales = 3;
  memcpy(o.spn_scales, (int64_t[]){2, 2, 2}, 3 * sizeof(int64_t));
  CHECK(kiln_model_plan_make(&o, &p, &e) == KILN_ERR_INVALID);
  CHECK_MSG(strstr(e.msg, "multiply to 8") && strstr(e.msg, "224"), "%s", e.msg);
  kiln_err_clear(&e);
  o.spn_blocks = 4; /* 4 blocks but 3 scales */
  CHECK(kiln_model_plan_make(&o, &p, &e) == KILN_ERR_INVALID);
  kiln_err_clear(&e);
  /* 100x100: feature 4x4, ratio 25 is no power of two; 5,5 works */
  kiln_model_defaults(&o);
  o.image_size = 100;
  CHECK(kiln_model_plan_make(&o, &p, &e) == KILN_ERR_INVALID);
  CHECK(strstr(e.msg, "--spn-scales") != NULL);
  kiln_err_clear(&e);
  o.n_spn_scales = 2;
  o.spn_scales[0] = o.spn_scales[1] = 5;
  CHECK_OK(kiln_model_plan_make(&o, &p, &e), &e);
  CHECK(p.feat_size == 4 && p.spn_blocks == 2);
  /* align_corners means nothing to nearest (PyTorch refuses it too) */
  kiln_model_defaults(&o);
  o.align_corners = true;
  CHECK(kiln_model_plan_make(&o, &p, &e) == KILN_ERR_INVALID);
  kiln_err_clear(&e);
  /* bad values */
  kiln_model_defaults(&o);
  o.classes = 0;
  CHECK(kiln_model_plan_make(&o, &p, &e) == KILN_ERR_INVALID);
  kiln_err_clear(&e);
  kiln_model_defaults(&o);
  snprintf(o.batch_sym, sizeof o.batch_sym, "2x");
  CHECK(kiln_model_plan_make(&o, &p, &e) == KILN_ERR_INVALID);
  kiln_err_clear(&e);
  kiln_model_defaults(&o);
  o.spn = false;
  o.spn_width_cap = 64;
  CHECK(kiln_model_plan_make(&o, &p, &e) == KILN_ERR_INVALID);
  kiln_backbone b;
  CHECK(kiln_backbone_parse("resnet34", &b) && b == KILN_RESNET34);
  CHECK(!kiln_backbone_parse("resnet101", &b));
}

static void test_same_seed_same_bytes(void) {
  kiln_err e = {0};
  kiln_model_opts o = narrow_opts();
  uint8_t *buf[3] = {0};
  size_t len[3] = {0};
  for (int i = 0; i < 3; i++) {
    if (i == 2) o.seed = 8;
    kiln_graph *g = NULL;
    CHECK_OK(kiln_model_build(&o, &g, &e), &e);
    if (g) CHECK_OK(kiln_onnx_save_buffer(g, &buf[i], &len[i], &e), &e);
    ir_graph_free(g);
  }
  CHECK(len[0] > 0 && len[0] == len[1] && buf[0] && buf[1] && !memcmp(buf[0], buf[1], len[0]));
  CHECK(len[2] == len[0] && buf[2] && memcmp(buf[0], buf[2], len[0]) != 0);
  for (int i = 0; i < 3; i++)
    kiln_free(buf[i]);

  /* Each tensor has its own stream: dropping the SPN leaves the F-Net's weights alone.
   * Kaiming-normal statistics: std sqrt(2 / fan_out). */
  kiln_graph *a = NULL, *b = NULL;
  o = narrow_opts();
  CHECK_OK(kiln_model_build(&o, &a, &e), &e);
  o.spn = false;
  CHECK_OK(kiln_model_build(&o, &b, &e), &e);
  if (a && b) {
    const kiln_tensor *wa = init_of(a, "layer3.1.conv2.weight"),
                      *wb = init_of(b, "layer3.1.conv2.weight");
    CHECK(wa && wb && !memcmp(wa->data, wb->data, kiln_tensor_nbytes(wa)));
    const kiln_tensor *w = init_of(a, "layer4.0.conv1.weight"); /* 64x32x3x3: fan_out 576 */
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < w->numel; i++) {
      double x = ((float *)w->data)[i];
      s += x, s2 += x * x;
    }
    double mean = s / (double)w->numel, sd = sqrt(s2 / (double)w->numel - mean * mean);
    CHECK_CLOSE(mean, 0, 0, 0.005);
    CHECK_CLOSE(sd, sqrt(2.0 / 576), 0.03, 0);
    const kiln_tensor *g1 = init_of(a, "layer1.0.bn1.weight"),
                      *v1 = init_of(a, "layer1.0.bn1.running_var");
    CHECK(g1 && ((float *)g1->data)[3] == 1.0f && v1 && ((float *)v1->data)[5] == 1.0f);
    CHECK(a->values[ir_find_value(a, "layer1.0.bn1.weight")].trainable);
    CHECK(!a->values[ir_find_value(a, "layer1.0.bn1.running_mean")].trainable);
  }
  ir_graph_free(a);
  ir_graph_free(b);
}

static void test_symbolic_batch(void) {
  kiln_err e = {0};
  kiln_model_opts o = narrow_opts();
  snprintf(o.batch_sym, sizeof o.batch_sym, "N");
  kiln_graph *g = NULL, *h = NULL;
  CHECK_OK(kiln_model_build(&o, &g, &e), &e);
  if (!g) return;
  const kiln_value *img = &g->values[g->inputs[0]];
  CHECK(img->sym[0] && !strcmp(img->sym[0], "N") && img->shape.d[0] == -1);
  char path[256];
  snprintf(path, sizeof path, "%s/test_models_sym_%d.onnx", KILN_BINARY_DIR, (int)getpid());
  CHECK_OK(kiln_onnx_save(g, path, &e), &e);
  ir_graph_free(g);
  CHECK_OK(kiln_onnx_load(path, &h, &e), &e);
  unlink(path);
  if (!h) return;
  CHECK_OK(ir_bind_dim(h, "N", 5, &e), &e);
  kiln_evaluator ev = kiln_ref_evaluator();
  CHECK_OK(ir_infer(h, &ev, &e), &e);
  const kiln_value *lg = &h->values[h->outputs[0]], *sal = &h->values[h->outputs[1]];
  CHECK(lg->shape.rank == 2 && lg->shape.d[0] == 5 && lg->shape.d[1] == 3);
  CHECK(sal->shape.rank == 4 && sal->shape.d[0] == 5 && sal->shape.d[1] == 1 &&
        sal->shape.d[3] == 64);
  ir_graph_free(h);
}

/* The BatchNorm values scripts/make_fixtures.py's bn_formula() sets, so BN is not identity. */
static void set_bn_formula(kiln_graph *g) {
  for (int64_t i = 0; i < g->n_nodes; i++) {
    const kiln_node *n = &g->nodes[i];
    if (n->op != KILN_OP_BatchNormalization) continue;
    float *w = g->values[n->in[1]].data->data, *b = g->values[n->in[2]].data->data;
    float *mu = g->values[n->in[3]].data->data, *var = g->values[n->in[4]].data->data;
    for (int64_t c = 0; c < g->values[n->in[1]].data->numel; c++) {
      w[c] = (float)(0.75 + 0.05 * (double)((c * 7) % 11));
      b[c] = (float)(0.02 * (double)((c * 5) % 13) - 0.12);
      mu[c] = (float)(0.03 * (double)((c * 3) % 7) - 0.09);
      var[c] = (float)(0.5 + 0.1 * (double)((c * 11) % 9));
    }
  }
}

/* max |got - want| <= tol * max(1, max |want|): 1e-4 relative to the output's scale. */
static void check_tensor_close(const kiln_tensor *got, const char *want_path, double tol) {
  kiln_err e = {0};
  kiln_tensor *want = NULL;
  CHECK_OK(kiln_tensor_load_file(want_path, &want, &e), &e);
  if (!want || !got) {
    kiln_tensor_free(want);
    CHECK(got != NULL);
    return;
  }
  CHECK_MSG(kiln_shape_eq(&got->shape, &want->shape), "%s: shape differs", want_path);
  if (!kiln_shape_eq(&got->shape, &want->shape)) {
    kiln_tensor_free(want);
    return;
  }
  double maxdiff = 0, scale = 1;
  for (int64_t i = 0; i < want->numel; i++) {
    double a = ((float *)got->data)[i], b = ((float *)want->data)[i];
    if (fabs(b) > scale) scale = fabs(b);
    if (!(fabs(a - b) <= maxdiff)) maxdiff = fabs(a - b); /* NaN propagates */
  }
  CHECK_MSG(maxdiff <= tol * scale, "%s: max |diff| %.3g, output scale %.3g", want_path, maxdiff,
            scale);
  kiln_tensor_free(want);
}

/* Runs g (shapes inferred) on one input and compares each output with a fixture file. */
static void run_and_compare(kiln_graph *g, const char *input, const char *const *want, double tol) {
  kiln_err e = {0};
  kiln_tensor *x = NULL, *out[2] = {0};
  CHECK_OK(kiln_tensor_load_file(input, &x, &e), &e);
  if (!x) return;
  kiln_ref_ctx ctx = {.g = g};
  CHECK_OK(kiln_ref_run(g, &ctx, &x, out, &e), &e);
  for (int i = 0; i < g->n_outputs && i < 2; i++)
    if (want[i]) check_tensor_close(out[i], want[i], tol);
  for (int i = 0; i < g->n_outputs && i < 2; i++)
    kiln_tensor_free(out[i]);
  kiln_tensor_free(x);
}

/* Keep in step with VARIANTS in scripts/make_fixtures.py (all at 64x64, batch 2, seed 7). */
static const struct variant {
  const char *name;
  kiln_backbone backbone;
  int64_t width, classes, hidden;
  bool spn;
  int n_scales;
  int64_t scales[4];
  int64_t cap;
  kiln_upsample_mode up;
  bool align;
} variants[] = {
    {"r18_nearest", KILN_RESNET18, 8, 3, 16, true, 0, {0}, 0, KILN_UPSAMPLE_NEAREST, false},
    {"r18_bilinear", KILN_RESNET18, 8, 3, 16, true, 0, {0}, 0, KILN_UPSAMPLE_BILINEAR, false},
    {"r18_bilinear_ac", KILN_RESNET18, 8, 3, 16, true, 0, {0}, 0, KILN_UPSAMPLE_BILINEAR, true},
    {"r50_scales",
     KILN_RESNET50,
     4,
     5,
     32,
     true,
     4,
     {2, 2, 2, 4},
     24,
     KILN_UPSAMPLE_BILINEAR,
     false},
    {"r34_plain", KILN_RESNET34, 4, 4, 0, false, 0, {0}, 0, KILN_UPSAMPLE_NEAREST, false},
};

static void test_matches_pytorch(void) {
  for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
    const struct variant *s = &variants[v];
    kiln_err e = {0};
    kiln_model_opts o = narrow_opts();
    o.backbone = s->backbone;
    o.width = s->width;
    o.classes = s->classes;
    o.cnet_hidden = s->hidden;
    o.spn = s->spn;
    o.n_spn_scales = s->n_scales;
    memcpy(o.spn_scales, s->scales, sizeof s->scales);
    o.spn_width_cap = s->cap;
    o.upsample = s->up;
    o.align_corners = s->align;
    kiln_graph *g = NULL;
    CHECK_OK(kiln_model_build(&o, &g, &e), &e);
    if (!g) continue;
    set_bn_formula(g);
    char lp[512], sp[512];
    snprintf(lp, sizeof lp, "%s/models/%s/logits.pb", DATA, s->name);
    snprintf(sp, sizeof sp, "%s/models/%s/saliency.pb", DATA, s->name);
    const char *want[2] = {lp, s->spn ? sp : NULL};
    run_and_compare(g, DATA "/models/input.pb", want, 1e-4);
    ir_graph_free(g);
  }
}

/* The issue-2 fixture: a narrow torchvision-style ResNet-18 exported by torch.onnx.export. */
static void test_torch_export_narrow_resnet(void) {
  kiln_err e = {0};
  kiln_graph *g = NULL;
  CHECK_OK(kiln_onnx_load(DATA "/resnet_narrow/model.onnx", &g, &e), &e);
  if (!g) return;
  kiln_evaluator ev = kiln_ref_evaluator();
  CHECK_OK(ir_infer(g, &ev, &e), &e);
  const char *want[2] = {DATA "/resnet_narrow/test_data_set_0/output_0.pb", NULL};
  if (!e.code) run_and_compare(g, DATA "/resnet_narrow/test_data_set_0/input_0.pb", want, 1e-4);
  ir_graph_free(g);
}

static void test_init_from(void) {
  kiln_err e = {0};
  kiln_graph *src = NULL, *g = NULL;
  CHECK_OK(kiln_onnx_load(DATA "/resnet_narrow/model.onnx", &src, &e), &e);
  if (!src) return;
  /* The same network as the export: width 8, plain fc with its 10 classes. */
  kiln_model_opts o = narrow_opts();
  o.classes = 10;
  o.cnet_hidden = 0;
  o.spn = false;
  CHECK_OK(kiln_model_build(&o, &g, &e), &e);
  kiln_init_report r;
  CHECK_OK(kiln_model_init_from(g, src, &r, &e), &e);
  CHECK_MSG(r.n_matched == 102 && r.n_missing == 0 && r.n_unused == 0 && r.n_mismatched == 0,
            "matched %d missing %d unused %d mismatched %d", r.n_matched, r.n_missing, r.n_unused,
            r.n_mismatched);
  kiln_init_report_free(&r);
  const char *want[2] = {DATA "/resnet_narrow/test_data_set_0/output_0.pb", NULL};
  run_and_compare(g, DATA "/resnet_narrow/test_data_set_0/input_0.pb", want, 1e-4);
  ir_graph_free(g);

  /* The study's network: the F-Net loads; fc (10 classes there, 3 here) does not. */
  o = narrow_opts();
  o.cnet_hidden = 0;
  CHECK_OK(kiln_model_build(&o, &g, &e), &e);
  CHECK_OK(kiln_model_init_from(g, src, &r, &e), &e);
  CHECK(r.n_matched == 100 && r.n_mismatched == 2 && r.n_missing == 0 && r.n_unused == 0);
  CHECK(r.n_mismatched == 2 && strstr(r.mismatched[0], "fc.") && strstr(r.mismatched[0], "[10"));
  const kiln_tensor *a = init_of(g, "layer2.1.bn2.running_var"),
                    *b = init_of(src, "layer2.1.bn2.running_var");
  CHECK(a && b && !memcmp(a->data, b->data, kiln_tensor_nbytes(a)));
  kiln_init_report_free(&r);
  ir_graph_free(g);

  /* A name torch invents for a folded weight matches nothing: unused in the source,
   * missing from the F-Net. */
  int v = ir_find_value(src, "layer3.0.conv1.weight");
  kiln_free(src->values[v].name);
  src->values[v].name = kiln_strdup("onnx::Conv_123"); /* the name index is not used below */
  CHECK_OK(kiln_model_build(&o, &g, &e), &e);
  CHECK_OK(kiln_model_init_from(g, src, &r, &e), &e);
  CHECK(r.n_unused == 1 && !strcmp(r.unused[0], "onnx::Conv_123"));
  CHECK(r.n_missing == 1 && !strcmp(r.missing[0], "layer3.0.conv1.weight"));
  kiln_init_report_free(&r);
  ir_graph_free(g);
  ir_graph_free(src);
}

static void test_failing_allocator(void) {
  kiln_model_opts o;
  kiln_model_defaults(&o);
  o.width = 1;
  o.classes = 2;
  o.cnet_hidden = 2;
  o.image_size = 32;
  bool done = false;
  for (long k = 0; k < 20000 && !done; k += 7) {
    kiln_err e = {0};
    kiln_graph *g = NULL;
    kiln_alloc_fail_after(k);
    kiln_code rc = kiln_model_build(&o, &g, &e);
    kiln_alloc_fail_after(-1);
    CHECK_MSG(rc == KILN_OK || rc == KILN_ERR_NOMEM, "after %ld allocations: %s", k, e.msg);
    CHECK((rc == KILN_OK) == (g != NULL));
    done = rc == KILN_OK;
    ir_graph_free(g);
  }
  CHECK(done);
}

int main(void) {
  RUN(test_torchvision_param_counts);
  RUN(test_study_resnet18_macs);
  RUN(test_spn_plan);
  RUN(test_same_seed_same_bytes);
  RUN(test_symbolic_batch);
  RUN(test_matches_pytorch);
  RUN(test_torch_export_narrow_resnet);
  RUN(test_init_from);
  RUN(test_failing_allocator);
  TEST_MAIN_END();
}
