/* test_train_upsample.c — the SPN block's nearest upsampling + convolution fused in training
 * (passes/fuse_train_upsample_conv.c; kiln.UpsampleConv with run-time weights,
 * codegen/emit_fused.c; kiln.UpsampleConvGradInput, ir/ops/grad_upconv.c,
 * runtime/ref/grad_upconv.c, codegen/emit_upconv_grad.c):
 *  - the training graph of a small SPN net after the default training pipeline against
 *    golden text (tests/data/train_upsample/spn.txt; KILN_UPDATE_GOLDEN=1 rewrites it), the
 *    counts of what fused, and what stays unfused (align_corners, strides);
 *  - the fused step against the unfused one with the reference kernels: every output and
 *    state update bitwise equal (the fused reference kernels run the unfused ops), but the
 *    SPN convolutions' weights, whose gradients by phases sum in another order: within
 *    1e-6 x max |value|;
 *  - the compiled step (kiln_trainer, SGD, two steps) fused at 1 and 2 threads against
 *    unfused at 1 thread, every state tensor within 1e-5 x its max |value|;
 *  - the new op and kiln.UpsampleConv with run-time weights alone: JIT against the reference
 *    over shapes, scales, kernels, pads, dilation 2, groups, 1-D/3-D, rows narrower and wider
 *    than a vector, within 1e-5 x max |reference| + 1e-6, bitwise equal at 1 and 3 threads;
 *  - the weight gradient by phases over X (a graph rewrite) against ConvGradWeight over the
 *    upsampled input, reference and JIT, over scales, kernels, pads, dilation 2, 1-D/3-D;
 *  - malformed nodes refused by shape inference with messages naming what is wrong. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "codegen/compile.h"
#include "frontend/onnx.h"
#include "passes/pass.h"
#include "runtime/ref.h"
#include "test.h"
#include "graph_build.h"
#include "train/trainer.h"
#include "train_run.h"

#define UNFUSED "eliminate-identity,fold,dce,fuse-train-bn,fuse-elementwise,dce"
#define BATCH 2

/* Conv k x k (pad k/2) at `stride`, no bias. */
static int conv(gb *b, const char *name, int x, int64_t c, int64_t oc, int64_t k, int64_t stride,
                bool bias) {
  char nm[128];
  snprintf(nm, sizeof nm, "%s.weight", name);
  double r = 1.0 / sqrt((double)(c * k * k));
  int w = gb_rand(b, nm, 4, IV(oc, c, k, k), -r, r), nid, y;
  if (bias) {
    snprintf(nm, sizeof nm, "%s.bias", name);
    int bv = gb_rand(b, nm, 1, IV(oc), -0.1, 0.1);
    y = gb_node(b, KILN_OP_Conv, name, IN(x, w, bv), 1, &nid);
  } else {
    y = gb_node(b, KILN_OP_Conv, name, IN(x, w), 1, &nid);
  }
  if (nid < 0) return -1;
  int64_t p = k / 2;
  ir_set_attr_ints(b->g, nid, "pads", IV(p, p, p, p), 4, &b->e);
  ir_set_attr_ints(b->g, nid, "strides", IV(stride, stride), 2, &b->e);
  return y;
}

static int bn_relu(gb *b, const char *name, int x, int64_t c) {
  static const char *const parts[] = {"weight", "bias", "running_mean", "running_var"};
  char nm[128];
  snprintf(nm, sizeof nm, "%s.bn", name);
  int y = gb_bn_named(b, nm, x, c, parts, 1, NULL);
  snprintf(nm, sizeof nm, "%s.relu", name);
  return NODE(b, Relu, nm, y);
}

/* image [2,3,16,16] -> two stride-2 Conv-BN-ReLU (8 channels, 4x4) -> GAP -> Gemm `logits`;
 * the SPN: three blocks Resize x2 -> Conv 3x3 -> BN -> ReLU (8 -> 8 -> 4 -> 4 channels at
 * 8x8, 16x16, 32x32: block 1 half_pixel coordinates, block 2 `coord2` and `nearest2`), the
 * last at 2x the
 * image, then a stride-2 1x1 Conv `saliency` [2,1,16,16].  Block 2's Conv has stride
 * `stride2` (1: fusable). */
static kiln_graph *spn_net(const char *coord2, const char *nearest2, int64_t stride2) {
  gb bb, *b = &bb;
  gb_begin(b, 13, 77);
  int x = gb_input(b, "image", KILN_F32, 4, IV(BATCH, 3, 16, 16));
  int f1 = bn_relu(b, "stem1", conv(b, "stem1.conv", x, 3, 8, 3, 2, false), 8);
  int feat = bn_relu(b, "stem2", conv(b, "stem2.conv", f1, 8, 8, 3, 2, false), 8);
  int flat = NODE(b, Flatten, "flat", NODE(b, GlobalAveragePool, "gap", feat));
  int fw = gb_rand(b, "fc.weight", 2, IV(3, 8), -0.3, 0.3), fb = gb_rand(b, "fc.bias", 1, IV(3), -0.1, 0.1);
  int nid;
  int logits = gb_node(b, KILN_OP_Gemm, "logits", IN(flat, fw, fb), 1, &nid);
  if (nid >= 0) ir_set_attr_int(b->g, nid, "transB", 1, &b->e);
  const char *coords[3] = {"asymmetric", "half_pixel", coord2};
  const char *nearest[3] = {"floor", "round_prefer_floor", nearest2};
  const int64_t ch[4] = {8, 8, 4, 4};
  int h = feat;
  for (int i = 0; i < 3; i++) {
    char nm[64], cn[64];
    snprintf(nm, sizeof nm, "spn.%d.upsample", i);
    snprintf(cn, sizeof cn, "spn.%d.conv", i);
    int u = gb_resize_nearest(b, nm, h, 2, IV(2, 2), coords[i], nearest[i]);
    snprintf(nm, sizeof nm, "spn.%d", i);
    h = bn_relu(b, nm, conv(b, cn, u, ch[i], ch[i + 1], 3, i == 2 ? stride2 : 1, false), ch[i + 1]);
  }
  int sal = conv(b, "saliency", h, 4, 1, 1, stride2 == 1 ? 2 : 1, true);
  ir_add_output(b->g, logits, &b->e);
  ir_add_output(b->g, sal, &b->e);
  kiln_evaluator ev = kiln_ref_evaluator();
  if (!b->e.code) ir_infer(b->g, &ev, &b->e);
  CHECK_OK(b->e.code, &b->e);
  if (b->e.code) {
    ir_graph_free(b->g);
    return NULL;
  }
  return b->g;
}


/* The net's training step through `pipeline` (NULL: the training default), with the state
 * updates as extra graph outputs. */
static kiln_train_graph *train_graph(kiln_graph *g, const char *pipeline, kiln_optim optim,
                                     kiln_pipeline_result *res) {
  if (!g) return NULL;
  kiln_err e = {0};
  kiln_train_graph *tg = NULL;
  kiln_train_config cfg = trun_config(optim);
  CHECK_OK(kiln_train_graph_build(g, &cfg, &tg, &e), &e);
  if (!tg) return NULL;
  CHECK_OK(kiln_train_graph_optimize_ex(tg, pipeline, NULL, res, &e), &e);
  for (int i = 0; i < tg->n_state && !e.code; i++)
    ir_add_output(tg->g, tg->state[i].out, &e);
  CHECK_OK(e.code, &e);
  return tg;
}

static int64_t changes_of(const kiln_pipeline_result *res, const char *pass) {
  for (int i = 0; i < res->n; i++)
    if (!strcmp(res->pass[i]->name, pass)) return res->stats[i].changes;
  return -1;
}

/* ---- structure ---- */

static void test_structure(void) {
  kiln_pipeline_result res;
  kiln_train_graph *tg = train_graph(spn_net("asymmetric", "floor", 1), NULL, KILN_OPTIM_ADAM, &res);
  if (!tg) return;
  const kiln_graph *g = tg->g;
  /* every block, forward and backward; the first block's input gradient joins the C-Net's */
  CHECK_MSG(count_op(g, KILN_OP_UpsampleConv) == 3, "%d UpsampleConv",
            count_op(g, KILN_OP_UpsampleConv));
  CHECK(count_op(g, KILN_OP_UpsampleConvGradInput) == 3);
  CHECK(count_op(g, KILN_OP_ResizeGrad) == 0);
  /* the weight gradients by phases over X (a ConvGradWeight each, folded by a MatMul and
   * transposed): nothing reads the upsampled tensors, so the Resizes go */
  CHECK(count_op(g, KILN_OP_Resize) == 0 && count_op(g, KILN_OP_ConvGradWeight) == 6);
  CHECK(count_op(g, KILN_OP_MatMul) == 3 && count_op(g, KILN_OP_Transpose) == 3);
  /* the ConvTransposes left: stem2's and the saliency head's input gradients */
  CHECK_MSG(count_op(g, KILN_OP_ConvTranspose) == 2, "%d ConvTranspose",
            count_op(g, KILN_OP_ConvTranspose));
  CHECK_MSG(changes_of(&res, "fuse-train-upsample-conv") == 9, "%lld changes",
            (long long)changes_of(&res, "fuse-train-upsample-conv"));
  char *text = ir_text(g);
  check_golden_in("train_upsample", "spn", text);
  free(text);
  kiln_train_graph_free(tg);

  /* block 2 rounding up (not the floor index map), or a stride-2 Conv: it stays; with
   * align_corners and round_prefer_floor a x2 upsampling does read floor(o / 2) */
  const char *coord[3] = {"asymmetric", "asymmetric", "align_corners"};
  const char *near[3] = {"ceil", "floor", "round_prefer_floor"};
  const int64_t stride[3] = {1, 2, 1};
  for (int v = 0; v < 3; v++) {
    tg = train_graph(spn_net(coord[v], near[v], stride[v]), NULL, KILN_OPTIM_SGD, &res);
    if (!tg) continue;
    int want = v == 2 ? 3 : 2;
    CHECK_MSG(count_op(tg->g, KILN_OP_UpsampleConv) == want &&
                  count_op(tg->g, KILN_OP_UpsampleConvGradInput) == want &&
                  count_op(tg->g, KILN_OP_ResizeGrad) == 3 - want &&
                  count_op(tg->g, KILN_OP_Resize) == 3 - want,
              "variant %d: %d UpsampleConv, %d UpsampleConvGradInput, %d ResizeGrad, %d Resize",
              v, count_op(tg->g, KILN_OP_UpsampleConv),
              count_op(tg->g, KILN_OP_UpsampleConvGradInput), count_op(tg->g, KILN_OP_ResizeGrad),
              count_op(tg->g, KILN_OP_Resize));
    kiln_train_graph_free(tg);
  }

  /* an inference model in training mode (not differentiated yet): nothing fuses */
  kiln_graph *m = spn_net("asymmetric", "floor", 1);
  if (!m) return;
  kiln_err e = {0};
  kiln_evaluator ev = kiln_ref_evaluator();
  kiln_pass_ctx cx = {.mode = KILN_MODE_TRAINING, .ev = &ev};
  CHECK_OK(kiln_run_pipeline(m, "fuse-train-upsample-conv", &cx, &res, &e), &e);
  CHECK(count_op(m, KILN_OP_UpsampleConv) == 0 && count_op(m, KILN_OP_Resize) == 3);
  ir_graph_free(m);
}

/* ---- the reference step, fused and unfused ---- */

/* The step's inputs (tests/train_run.h), every image with a mask. */
static void step_inputs(const kiln_train_graph *tg, kiln_tensor **in) {
  trun_step_inputs(tg, in, true);
}

/* SGD, so that a weight's update is its gradient's (Adam's first step is about lr * sign(g),
 * which float noise may flip where g is about 0). */
static void test_reference_equal(void) {
  kiln_train_graph *a = train_graph(spn_net("asymmetric", "floor", 1), UNFUSED, KILN_OPTIM_SGD, NULL);
  kiln_train_graph *b = train_graph(spn_net("asymmetric", "floor", 1), NULL, KILN_OPTIM_SGD, NULL);
  if (!a || !b || a->g->n_inputs > 256 || a->g->n_outputs > 256 ||
      b->g->n_inputs != a->g->n_inputs || b->g->n_outputs != a->g->n_outputs) {
    CHECK(a && b && a->g->n_outputs == b->g->n_outputs);
    kiln_train_graph_free(a);
    kiln_train_graph_free(b);
    return;
  }
  CHECK(count_op(a->g, KILN_OP_UpsampleConv) == 0 && count_op(b->g, KILN_OP_UpsampleConv) == 3);
  kiln_tensor *ia[256] = {0}, *ib[256] = {0}, *oa[256] = {0}, *ob[256] = {0};
  kiln_err e = {0};
  step_inputs(a, ia);
  step_inputs(b, ib);
  kiln_ref_ctx ca = {.g = a->g}, cb = {.g = b->g};
  CHECK_OK(kiln_ref_run(a->g, &ca, ia, oa, &e), &e);
  CHECK_OK(kiln_ref_run(b->g, &cb, ib, ob, &e), &e);
  int compared = 0, close = 0;
  for (int i = 0; i < a->g->n_outputs && !e.code; i++) {
    const char *name = a->g->values[a->g->outputs[i]].name;
    const kiln_tensor *x = oa[i], *y = NULL;
    for (int j = 0; j < b->g->n_outputs; j++)
      if (!strcmp(b->g->values[b->g->outputs[j]].name, name)) y = ob[j];
    CHECK_MSG(x && y && kiln_shape_eq(&x->shape, &y->shape), "output %s missing", name);
    if (!x || !y || !kiln_shape_eq(&x->shape, &y->shape)) continue;
    compared++;
    if (strstr(name, "spn.") && strstr(name, "conv.weight")) {
      /* the weight gradient by phases sums the same products in another order (double) */
      double mx = 0, worst = 0;
      for (int64_t k = 0; k < x->numel; k++) {
        double u = ((float *)x->data)[k], v = ((float *)y->data)[k];
        mx = fmax(mx, fabs(u));
        worst = fmax(worst, fabs(u - v));
      }
      CHECK_MSG(worst <= 1e-6 * mx, "%s: fused and unfused differ by %.3g (max %.3g)", name,
                worst, mx);
      close++;
      continue;
    }
    CHECK_MSG(!memcmp(x->data, y->data, kiln_tensor_nbytes(x)),
              "output %s differs between the fused and the unfused step", name);
  }
  CHECK(compared == a->g->n_outputs && compared > 20 && close >= 3);
  for (int i = 0; i < 256; i++) {
    kiln_tensor_free(ia[i]);
    kiln_tensor_free(ib[i]);
    kiln_tensor_free(oa[i]);
    kiln_tensor_free(ob[i]);
  }
  kiln_train_graph_free(a);
  kiln_train_graph_free(b);
}

/* ---- the compiled step ---- */

/* Two steps of the compiled step (tests/train_run.h), with the batch and the state names of
 * a reference build of the same step. */
static void run_trainer(const char *model, const char *passes, int threads, run_out *r) {
  memset(r, 0, sizeof *r);
  kiln_train_graph *tg = train_graph(spn_net("asymmetric", "floor", 1), UNFUSED, KILN_OPTIM_SGD, NULL);
  if (!tg) return;
  kiln_tensor *in[256] = {0};
  step_inputs(tg, in);
  trun_run(model, passes, threads, tg, in, r);
  for (int i = 0; i < 256; i++) kiln_tensor_free(in[i]);
  kiln_train_graph_free(tg);
}

static void test_jit_step(void) {
  char dir[] = "/tmp/kiln_train_upsample_XXXXXX", path[128];
  if (!mkdtemp(dir)) {
    CHECK_MSG(false, "mkdtemp failed");
    return;
  }
  snprintf(path, sizeof path, "%s/spn.onnx", dir);
  kiln_graph *g = spn_net("asymmetric", "floor", 1);
  if (!g) return;
  kiln_err e = {0};
  CHECK_OK(kiln_onnx_save(g, path, &e), &e);
  ir_graph_free(g);
  run_out base, r;
  run_trainer(path, UNFUSED, 1, &base);
  for (int threads = 1; threads <= 2; threads++) {
    char what[64];
    snprintf(what, sizeof what, "jit fused, %d thread(s)", threads);
    run_trainer(path, NULL, threads, &r);
    /* the weights are summed before they multiply: float rounding differs slightly */
    compare_runs(&base, &r, 1e-5, what);
    free_run(&r);
  }
  free_run(&base);
  unlink(path);
  rmdir(dir);
}

/* ---- the kernels alone ---- */

typedef struct kcase {
  const char *what;
  kiln_op op;
  int rank;
  int64_t n, c, m, group;     /* dX/X channels c, dY/Y channels m */
  int64_t low[3];             /* X / dX spatial sizes */
  int64_t s[3], k[3], dil[3];
  int64_t pads[6];
  const char *coord, *nearest;
  bool bias;
  const char *act;
  bool const_w; /* weights a constant of the compiled graph (the reference reads them as input) */
} kcase;

/* Window arithmetic of the forward over the upsampled input: Y's spatial sizes. */
static void out_sizes(const kcase *c, int64_t *o) {
  int nsp = c->rank - 2;
  for (int d = 0; d < nsp; d++)
    o[d] = c->s[d] * c->low[d] + c->pads[d] + c->pads[nsp + d] - (c->k[d] - 1) * c->dil[d];
}

/* A one-node graph of the case over inputs in[] (all graph inputs: run-time weights). */
static kiln_graph *kcase_graph(const kcase *c, kiln_tensor *const *in, int n_in, kiln_err *e) {
  kiln_graph *g = ir_graph_new();
  ir_set_opset(g, "", 17, e);
  int ids[4], out = -1, nid = -1, nsp = c->rank - 2;
  for (int i = 0; i < n_in; i++) {
    char nm[16];
    snprintf(nm, sizeof nm, "in%d", i);
    ir_add_value(g, nm, &ids[i], e);
    kiln_value *v = ir_val(g, ids[i]);
    v->dtype = KILN_F32;
    v->shape = in[i]->shape;
    v->typed = true;
    ir_add_input(g, ids[i], e);
  }
  ir_add_value(g, "out", &out, e);
  ir_add_node(g, c->op, "node", ids, n_in, &out, 1, &nid, e);
  if (nid >= 0) {
    ir_set_attr_ints(g, nid, "scales", c->s, nsp, e);
    ir_set_attr_ints(g, nid, "pads", c->pads, 2 * nsp, e);
    ir_set_attr_ints(g, nid, "dilations", c->dil, nsp, e);
    ir_set_attr_int(g, nid, "group", c->group, e);
    ir_set_attr_str(g, nid, "coordinate_transformation_mode", c->coord ? c->coord : "asymmetric", e);
    ir_set_attr_str(g, nid, "nearest_mode", c->nearest ? c->nearest : "floor", e);
    if (c->act) ir_set_attr_str(g, nid, "activation", c->act, e);
  }
  ir_add_output(g, out, e);
  kiln_evaluator ev = kiln_ref_evaluator();
  if (!e->code) ir_infer(g, &ev, e);
  return g;
}

static kiln_tensor *rand_tensor(int rank, const int64_t *d, uint64_t *seed) {
  kiln_err e = {0};
  kiln_tensor *t = NULL;
  kiln_shape s = kiln_shape_make(rank, d);
  CHECK_OK(kiln_tensor_new(KILN_F32, &s, &t, &e), &e);
  for (int64_t i = 0; t && i < t->numel; i++)
    ((float *)t->data)[i] = (float)(2 * rng_uniform(seed) - 1);
  return t;
}

static void check_case(const kcase *c) {
  int nsp = c->rank - 2;
  int64_t o[3], xd[5] = {c->n, c->c}, yd[5] = {c->n, c->m}, wd[5] = {c->m, c->c / c->group};
  out_sizes(c, o);
  for (int d = 0; d < nsp; d++) xd[2 + d] = c->low[d], yd[2 + d] = o[d], wd[2 + d] = c->k[d];
  uint64_t seed = 1234;
  bool grad = c->op == KILN_OP_UpsampleConvGradInput;
  kiln_tensor *in[3] = {rand_tensor(c->rank, grad ? yd : xd, &seed), rand_tensor(c->rank, wd, &seed),
                        c->bias ? rand_tensor(1, IV(c->m), &seed) : NULL};
  int n_in = c->bias ? 3 : 2;
  kiln_err e = {0};
  kiln_tensor *want[1] = {0}, *got[2][1] = {{0}};
  kiln_graph *g = kcase_graph(c, in, n_in, &e);
  CHECK_OK(e.code, &e);
  if (!e.code) {
    const kiln_value *ov = &g->values[g->outputs[0]];
    const int64_t *want_d = grad ? xd : yd;
    for (int d = 0; d < c->rank; d++)
      CHECK_MSG(ov->shape.d[d] == want_d[d], "%s: output dim %d is %lld", c->what, d,
                (long long)ov->shape.d[d]);
    kiln_ref_ctx ctx = {.g = g};
    CHECK_OK(kiln_ref_run(g, &ctx, in, want, &e), &e);
  }
  ir_graph_free(g);
  const int threads[2] = {1, 3};
  /* constant weights: the compiled graph's inputs are X (and the bias) */
  kiln_tensor *run_in[3] = {in[0], c->const_w ? in[2] : in[1], in[2]};
  for (int t = 0; t < 2 && !e.code; t++) {
    kiln_program *p = NULL;
    kiln_compile_opts opt = {.threads = threads[t], .cache_dir = ""};
    kiln_graph *cg = kcase_graph(c, in, n_in, &e);
    if (c->const_w && !e.code) {
      kiln_tensor *wc = NULL;
      CHECK_OK(kiln_tensor_clone(in[1], &wc, &e), &e);
      if (wc) CHECK_OK(ir_bind_input_const(cg, "in1", wc, &e), &e);
    }
    CHECK_OK(kiln_compile(cg, &opt, &p, &e), &e);
    if (!p) continue;
    CHECK_MSG(p->n_fallback == 0, "%s: no compiled kernel", c->what);
    CHECK_OK(kiln_program_run(p, run_in, got[t], false, &e), &e);
    kiln_program_free(p);
  }
  if (want[0] && got[0][0] && got[1][0]) {
    CHECK_MSG(!memcmp(got[0][0]->data, got[1][0]->data, kiln_tensor_nbytes(want[0])),
              "%s: 1 and 3 threads differ", c->what);
    double mx = 0;
    for (int64_t i = 0; i < want[0]->numel; i++) mx = fmax(mx, fabs(((float *)want[0]->data)[i]));
    int bad = 0;
    for (int64_t i = 0; i < want[0]->numel; i++) {
      double a = ((float *)got[0][0]->data)[i], b = ((float *)want[0]->data)[i];
      if (!(fabs(a - b) <= 1e-6 + 1e-5 * mx) && bad++ < 3)
        fprintf(stderr, "%s: [%lld]: jit %.9g, reference %.9g\n", c->what, (long long)i, a, b);
    }
    CHECK_MSG(bad == 0, "%s: %d elements differ from the reference", c->what, bad);
  } else {
    CHECK_MSG(false, "%s: output missing", c->what);
  }
  kiln_tensor_free(want[0]);
  kiln_tensor_free(got[0][0]);
  kiln_tensor_free(got[1][0]);
  for (int i = 0; i < 3; i++) kiln_tensor_free(in[i]);
}

static void test_kernels(void) {
  const kiln_op G = KILN_OP_UpsampleConvGradInput, F = KILN_OP_UpsampleConv;
  const kcase cases[] = {
      /* the SPN block: x2, 3x3 pad 1; rows narrower (5) and wider (17) than a vector */
      {"grad x2 3x3 narrow", G, 4, 2, 3, 5, 1, {5, 5}, {2, 2}, {3, 3}, {1, 1}, {1, 1, 1, 1}},
      {"grad x2 3x3 wide", G, 4, 2, 6, 4, 1, {4, 17}, {2, 2}, {3, 3}, {1, 1}, {1, 1, 1, 1}},
      {"grad x3 3x3 odd", G, 4, 1, 3, 5, 1, {3, 9}, {3, 3}, {3, 3}, {1, 1}, {1, 1, 1, 1}},
      {"grad x(2,3) k(2,5) pads", G, 4, 2, 4, 3, 1, {3, 11}, {2, 3}, {2, 5}, {1, 1}, {0, 2, 1, 1}},
      {"grad x2 3x3 dilation 2", G, 4, 1, 3, 4, 1, {4, 13}, {2, 2}, {3, 3}, {2, 2}, {2, 2, 2, 2}},
      {"grad x2 group 2", G, 4, 2, 6, 4, 2, {3, 9}, {2, 2}, {3, 3}, {1, 1}, {1, 1, 1, 1}},
      {"grad 1-D x4 k5", G, 3, 2, 3, 2, 1, {18}, {4}, {5}, {1}, {1, 3}},
      {"grad 3-D x(1,2,2)", G, 5, 1, 2, 3, 1, {3, 4, 9}, {1, 2, 2}, {3, 3, 3}, {1, 1, 1},
       {1, 1, 1, 1, 1, 1}},
      {"grad x1 (no upsampling)", G, 4, 2, 3, 4, 1, {5, 9}, {1, 1}, {3, 3}, {1, 1}, {1, 1, 1, 1}},
      {"grad half_pixel", G, 4, 2, 3, 5, 1, {4, 10}, {2, 2}, {3, 3}, {1, 1}, {1, 1, 1, 1},
       "half_pixel", "round_prefer_floor"},
      /* the forward with run-time weights: phases with folded weights, or (narrow) the
       * nearest transform */
      {"fwd x2 3x3 wide", F, 4, 2, 5, 4, 1, {4, 17}, {2, 2}, {3, 3}, {1, 1}, {1, 1, 1, 1}},
      {"fwd x2 3x3 narrow bias relu", F, 4, 2, 5, 4, 1, {4, 4}, {2, 2}, {3, 3}, {1, 1},
       {1, 1, 1, 1}, NULL, NULL, true, "relu"},
      {"fwd x2 3x3 7 columns", F, 4, 2, 5, 4, 1, {3, 7}, {2, 2}, {3, 3}, {1, 1}, {1, 1, 1, 1}},
      {"fwd x3 k(2,5) pads bias", F, 4, 1, 4, 3, 1, {3, 11}, {3, 3}, {2, 5}, {1, 1}, {0, 2, 1, 1},
       NULL, NULL, true},
      {"fwd x2 dilation 2 group 2", F, 4, 2, 4, 6, 2, {3, 12}, {2, 2}, {3, 3}, {2, 2},
       {2, 2, 2, 2}},
      {"fwd 1-D x4 k5", F, 3, 2, 3, 2, 1, {18}, {4}, {5}, {1}, {1, 3}},
      {"fwd x3 k3 unpadded ragged", F, 4, 2, 3, 4, 1, {4, 19}, {3, 3}, {3, 3}, {1, 1},
       {0, 0, 0, 0}},
      /* constant weights: phases summed at compile time, the W phases of one kernel
       * interleaved (conv_gen's column phases), one padded copy of X read at each phase's
       * offset; rows of several vectors with tails, phases of unequal widths (Y's last column
       * block stored partly), scales past the merged limit, 1-D and 3-D */
      {"const x2 3x3 wide bias relu", F, 4, 2, 5, 6, 1, {9, 37}, {2, 2}, {3, 3}, {1, 1},
       {1, 1, 1, 1}, NULL, NULL, true, "relu", true},
      {"const x3 3x3 unpadded ragged", F, 4, 2, 3, 4, 1, {4, 19}, {3, 3}, {3, 3}, {1, 1},
       {0, 0, 0, 0}, NULL, NULL, false, NULL, true},
      {"const x2 k2 15 columns", F, 4, 1, 3, 5, 1, {3, 8}, {2, 2}, {2, 2}, {1, 1},
       {0, 0, 0, 0}, NULL, NULL, true, NULL, true},
      {"const x2 k2 31 columns", F, 4, 1, 3, 5, 1, {3, 16}, {2, 2}, {2, 2}, {1, 1},
       {0, 0, 0, 0}, NULL, NULL, false, "sigmoid", true},
      {"const x4 k5 asymmetric pads", F, 4, 2, 3, 4, 1, {5, 21}, {4, 4}, {5, 5}, {1, 1},
       {2, 1, 0, 3}, NULL, NULL, true, NULL, true},
      {"const x(2,9) past the merged limit", F, 4, 1, 2, 3, 1, {2, 3}, {2, 9}, {3, 3}, {1, 1},
       {1, 1, 1, 1}, NULL, NULL, false, NULL, true},
      {"const x(2,1) dilation (1,2)", F, 4, 2, 3, 4, 1, {4, 20}, {2, 1}, {3, 3}, {1, 2},
       {1, 2, 1, 2}, NULL, NULL, false, NULL, true},
      {"const x2 dilation 2 group 2", F, 4, 2, 4, 6, 2, {3, 12}, {2, 2}, {3, 3}, {2, 2},
       {2, 2, 2, 2}, NULL, NULL, true, NULL, true},
      {"const 1-D x4 k5", F, 3, 2, 3, 2, 1, {18}, {4}, {5}, {1}, {1, 3}, NULL, NULL, false, NULL,
       true},
      {"const 3-D x2", F, 5, 1, 2, 3, 1, {3, 4, 9}, {2, 2, 2}, {3, 3, 3}, {1, 1, 1},
       {1, 1, 1, 1, 1, 1}, NULL, NULL, true, NULL, true},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_case(&cases[i]);
}

/* ---- the weight gradient by phases ---- */

/* dW = ConvGradWeight(Resize(X), dY) of the case (inputs X, dY), unfused or after the pass. */
static kiln_graph *wgrad_graph(const kcase *c, const int64_t *xd, const int64_t *yd, bool fuse,
                               kiln_err *e) {
  gb bb, *b = &bb;
  gb_begin(b, 13, 1);
  int nsp = c->rank - 2, nid;
  int x = gb_input(b, "x", KILN_F32, c->rank, xd), dy = gb_input(b, "dy", KILN_F32, c->rank, yd);
  int u = gb_resize_nearest(b, "up", x, nsp, c->s, c->coord ? c->coord : "asymmetric",
                            c->nearest ? c->nearest : "floor");
  int dw = gb_node(b, KILN_OP_ConvGradWeight, "dw", IN(u, dy), 1, &nid);
  if (nid >= 0) {
    ir_set_attr_ints(b->g, nid, "kernel_shape", c->k, nsp, &b->e);
    ir_set_attr_ints(b->g, nid, "pads", c->pads, 2 * nsp, &b->e);
    ir_set_attr_ints(b->g, nid, "dilations", c->dil, nsp, &b->e);
  }
  gb_output(b, dw);
  kiln_evaluator ev = kiln_ref_evaluator();
  if (!b->e.code) ir_infer(b->g, &ev, &b->e);
  if (!b->e.code && fuse) {
    kiln_pass_ctx cx = {.mode = KILN_MODE_TRAINING, .ev = &ev, .differentiated = true};
    kiln_pipeline_result res;
    kiln_run_pipeline(b->g, "fuse-train-upsample-conv,dce", &cx, &res, &b->e);
    CHECK_MSG(count_op(b->g, KILN_OP_Resize) == 0 && count_op(b->g, KILN_OP_ConvGradWeight) == 1,
              "%s: not rewritten", c->what);
  }
  *e = b->e;
  return b->g;
}

static void test_weight_grad(void) {
  const kcase cases[] = {
      {"wgrad x2 3x3", 0, 4, 2, 3, 5, 1, {5, 9}, {2, 2}, {3, 3}, {1, 1}, {1, 1, 1, 1}},
      {"wgrad x3 k(2,5) pads", 0, 4, 2, 4, 3, 1, {3, 7}, {3, 3}, {2, 5}, {1, 1}, {0, 2, 1, 1}},
      {"wgrad x2 dilation 2", 0, 4, 1, 3, 4, 1, {4, 6}, {2, 2}, {3, 3}, {2, 2}, {2, 2, 2, 2}},
      {"wgrad 1-D x4 k5", 0, 3, 2, 3, 2, 1, {9}, {4}, {5}, {1}, {1, 3}},
      {"wgrad 3-D x(1,2,2)", 0, 5, 1, 2, 3, 1, {3, 4, 5}, {1, 2, 2}, {3, 3, 3}, {1, 1, 1},
       {1, 1, 1, 1, 1, 1}},
      {"wgrad half_pixel", 0, 4, 2, 3, 5, 1, {4, 6}, {2, 2}, {3, 3}, {1, 1}, {1, 1, 1, 1},
       "half_pixel", "round_prefer_floor"},
  };
  for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
    const kcase *c = &cases[ci];
    int nsp = c->rank - 2;
    int64_t o[3], xd[5] = {c->n, c->c}, yd[5] = {c->n, c->m};
    out_sizes(c, o);
    for (int d = 0; d < nsp; d++) xd[2 + d] = c->low[d], yd[2 + d] = o[d];
    uint64_t seed = 77;
    kiln_tensor *in[2] = {rand_tensor(c->rank, xd, &seed), rand_tensor(c->rank, yd, &seed)};
    kiln_tensor *want[1] = {0}, *ref[1] = {0}, *jit[1] = {0};
    kiln_err e = {0};
    kiln_graph *g = wgrad_graph(c, xd, yd, false, &e);
    CHECK_OK(e.code, &e);
    kiln_ref_ctx ctx = {.g = g};
    if (!e.code) CHECK_OK(kiln_ref_run(g, &ctx, in, want, &e), &e);
    ir_graph_free(g);
    g = wgrad_graph(c, xd, yd, true, &e);
    CHECK_OK(e.code, &e);
    ctx.g = g;
    if (!e.code) CHECK_OK(kiln_ref_run(g, &ctx, in, ref, &e), &e);
    kiln_program *p = NULL;
    kiln_compile_opts opt = {.threads = 2, .cache_dir = ""};
    if (!e.code) CHECK_OK(kiln_compile(g, &opt, &p, &e), &e);
    else ir_graph_free(g);
    if (p) {
      CHECK_OK(kiln_program_run(p, in, jit, false, &e), &e);
      kiln_program_free(p);
    }
    const kiln_tensor *got[2] = {ref[0], jit[0]};
    for (int k = 0; k < 2; k++) {
      if (!want[0] || !got[k] || got[k]->numel != want[0]->numel) {
        CHECK_MSG(false, "%s: output missing", c->what);
        continue;
      }
      double mx = 0, worst = 0;
      for (int64_t i = 0; i < want[0]->numel; i++) {
        double a = ((float *)got[k]->data)[i], b = ((float *)want[0]->data)[i];
        mx = fmax(mx, fabs(b));
        worst = fmax(worst, fabs(a - b));
      }
      CHECK_MSG(worst <= 1e-6 + 1e-5 * mx, "%s (%s): differs by %.3g (max %.3g)", c->what,
                k ? "jit" : "reference", worst, mx);
    }
    kiln_tensor_free(want[0]);
    kiln_tensor_free(ref[0]);
    kiln_tensor_free(jit[0]);
    kiln_tensor_free(in[0]);
    kiln_tensor_free(in[1]);
  }
}

/* ---- malformed nodes ---- */

/* The case's graph must fail shape inference with `code` and a message containing `msg`. */
static void check_refused(const kcase *c, const int64_t *dy_sp, kiln_code code, const char *msg) {
  int nsp = c->rank - 2;
  int64_t yd[5] = {c->n, c->m}, wd[5] = {c->m, c->c / c->group};
  for (int d = 0; d < nsp; d++) yd[2 + d] = dy_sp[d], wd[2 + d] = c->k[d];
  uint64_t seed = 5;
  kiln_tensor *in[2] = {rand_tensor(c->rank, yd, &seed), rand_tensor(c->rank, wd, &seed)};
  kiln_err e = {0};
  kiln_graph *g = kcase_graph(c, in, 2, &e);
  CHECK_MSG(e.code == code && strstr(e.msg, msg) && strstr(e.msg, "node"),
            "%s: got code %d, message '%s'", c->what, e.code, e.msg);
  ir_graph_free(g);
  kiln_tensor_free(in[0]);
  kiln_tensor_free(in[1]);
}

static void test_malformed(void) {
  const kiln_op G = KILN_OP_UpsampleConvGradInput;
  kcase base = {"base", G, 4, 1, 3, 4, 1, {4, 4}, {2, 2}, {3, 3}, {1, 1}, {1, 1, 1, 1}};
  kcase c = base;
  c.what = "align_corners";
  c.coord = "align_corners";
  check_refused(&c, IV(8, 8), KILN_ERR_UNSUPPORTED, "floor(o / 2)");
  c = base;
  c.what = "bad scales count";
  c.rank = 4;
  kiln_err e = {0};
  uint64_t seed = 6;
  kiln_tensor *in[2] = {rand_tensor(4, IV(1, 4, 8, 8), &seed), rand_tensor(4, IV(4, 3, 3, 3), &seed)};
  /* scales with one value for two spatial dims */
  kiln_graph *g = ir_graph_new();
  ir_set_opset(g, "", 17, &e);
  int ids[2], out = -1, nid = -1;
  for (int i = 0; i < 2; i++) {
    char nm[8];
    snprintf(nm, sizeof nm, "in%d", i);
    ir_add_value(g, nm, &ids[i], &e);
    kiln_value *v = ir_val(g, ids[i]);
    v->dtype = KILN_F32, v->shape = in[i]->shape, v->typed = true;
    ir_add_input(g, ids[i], &e);
  }
  ir_add_value(g, "out", &out, &e);
  ir_add_node(g, G, "bad", ids, 2, &out, 1, &nid, &e);
  ir_set_attr_ints(g, nid, "scales", IV(2), 1, &e);
  ir_add_output(g, out, &e);
  kiln_evaluator ev = kiln_ref_evaluator();
  CHECK(ir_infer(g, &ev, &e) == KILN_ERR_SHAPE && strstr(e.msg, "'scales'") && strstr(e.msg, "bad"));
  memset(&e, 0, sizeof e);
  /* strides 2 */
  ir_set_attr_ints(g, nid, "scales", IV(2, 2), 2, &e);
  ir_set_attr_ints(g, nid, "pads", IV(1, 1, 1, 1), 4, &e);
  ir_set_attr_ints(g, nid, "strides", IV(2, 2), 2, &e);
  CHECK(ir_infer(g, &ev, &e) == KILN_ERR_UNSUPPORTED && strstr(e.msg, "stride-1"));
  memset(&e, 0, sizeof e);
  ir_set_attr_ints(g, nid, "strides", IV(1, 1), 2, &e);
  ir_set_attr_str(g, nid, "mode", "linear", &e);
  CHECK(ir_infer(g, &ev, &e) == KILN_ERR_UNSUPPORTED && strstr(e.msg, "not nearest"));
  memset(&e, 0, sizeof e);
  ir_set_attr_str(g, nid, "mode", "nearest", &e);
  CHECK_OK(ir_infer(g, &ev, &e), &e);
  ir_graph_free(g);
  kiln_tensor_free(in[0]);
  kiln_tensor_free(in[1]);
  /* a dY width no input size gives: 2 * L = 7 */
  c = base;
  c.what = "odd dY";
  check_refused(&c, IV(8, 7), KILN_ERR_SHAPE, "no input size");
  /* W's output channels are not dY's channels */
  c = base;
  c.what = "channels";
  c.m = 5;
  int64_t yd[2] = {8, 8};
  uint64_t s2 = 7;
  kiln_tensor *dy = rand_tensor(4, IV(1, 5, 8, 8), &s2), *w = rand_tensor(4, IV(4, 3, 3, 3), &s2);
  kiln_tensor *in2[2] = {dy, w};
  g = kcase_graph(&c, in2, 2, &e);
  CHECK_MSG(e.code == KILN_ERR_SHAPE && strstr(e.msg, "output channels"), "channels: '%s'", e.msg);
  ir_graph_free(g);
  kiln_tensor_free(dy);
  kiln_tensor_free(w);
  (void)yd;
  /* group that does not divide */
  c = base;
  c.what = "group";
  c.group = 3;
  check_refused(&c, IV(8, 8), KILN_ERR_SHAPE, "group 3");
}

int main(void) {
  RUN(test_structure);
  RUN(test_reference_equal);
  RUN(test_kernels);
  RUN(test_weight_grad);
  RUN(test_malformed);
  RUN(test_jit_step);
  TEST_MAIN_END();
}
