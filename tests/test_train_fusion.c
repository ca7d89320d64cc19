/* test_train_fusion.c — training-time fusion (passes/fuse_train_bn.c, and fuse-elementwise on
 * training graphs) on a small Conv-BN-ReLU net with an identity and a downsampling residual
 * block, a C-Net-like head and a saliency head:
 *  - the training graph after the training pipeline against golden text
 *    (tests/data/train_fusion/small.txt; KILN_UPDATE_GOLDEN=1 rewrites it) and counts of
 *    what fused;
 *  - the fused step against the unfused one ("eliminate-identity,fold,dce") with the
 *    reference kernels: losses, logits and every state update (weights, running statistics,
 *    Adam moments) bitwise equal — the fused reference kernels compute what they replace;
 *  - the compiled step (kiln_trainer, SGD, two steps): fused at 1 and 2 threads against
 *    unfused at 1 thread;
 *  - the fused kernels alone: JIT against the reference, bitwise equal at 1 and 3 threads;
 *  - autodiff through a fused kiln.BatchNormTrain (activation=relu) against the unfused pair;
 *  - malformed fused forms are refused by shape inference. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "codegen/compile.h"
#include "frontend/onnx.h"
#include "passes/autodiff.h"
#include "passes/pass.h"
#include "passes/train_bn.h"
#include "runtime/ref.h"
#include "test.h"
#include "graph_build.h"
#include "train/trainer.h"
#include "train_run.h"

#define DATA_DIR KILN_SOURCE_DIR "/tests/data"
#define UNFUSED "eliminate-identity,fold,dce"
#define BATCH 4

/* Conv k x k (pad k/2) of x, with c input channels, to oc channels at `stride`. */
static int gb_conv(gb *b, const char *name, int x, int64_t c, int64_t oc, int64_t k,
                   int64_t stride, bool bias) {
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
  int64_t p = k / 2;
  if (nid < 0) return -1;
  ir_set_attr_ints(b->g, nid, "pads", IV(p, p, p, p), 4, &b->e);
  ir_set_attr_ints(b->g, nid, "strides", IV(stride, stride), 2, &b->e);
  return y;
}

/* BatchNormalization with random affine parameters and running statistics, named as
 * torchvision names them. */
static int gb_bn_running(gb *b, const char *name, int x, int64_t c) {
  static const char *const parts[] = {"weight", "bias", "running_mean", "running_var"};
  return gb_bn_named(b, name, x, c, parts, 1, NULL);
}

/* image [4,3,8,8] -> stem Conv-BN-ReLU (4) -> identity block (4) -> downsampling block (8,
 * stride 2, 1x1 Conv-BN shortcut) -> GlobalAveragePool -> Flatten -> Gemm -> `logits` [4,3];
 * the identity block's output -> 1x1 Conv -> `saliency` [4,1,8,8]. */
static kiln_graph *small_net(void) {
  gb bb, *b = &bb;
  memset(b, 0, sizeof *b);
  b->g = ir_graph_new();
  b->g->name = kiln_strdup("small");
  b->rng = 77;
  ir_set_opset(b->g, "", 13, &b->e);
  int x = -1;
  ir_add_value(b->g, "image", &x, &b->e);
  kiln_value *xv = ir_val(b->g, x);
  xv->dtype = KILN_F32;
  xv->shape = kiln_shape_make(4, IV(BATCH, 3, 8, 8));
  xv->typed = true;
  ir_add_input(b->g, x, &b->e);

  int r0 = NODE(b, Relu, "stem.relu", gb_bn_running(b, "stem.bn", gb_conv(b, "stem.conv", x, 3, 4, 3, 1, false), 4));
  int q1 = NODE(b, Relu, "b1.relu1", gb_bn_running(b, "b1.bn1", gb_conv(b, "b1.conv1", r0, 4, 4, 3, 1, false), 4));
  int n2 = gb_bn_running(b, "b1.bn2", gb_conv(b, "b1.conv2", q1, 4, 4, 3, 1, false), 4);
  int r1 = NODE(b, Relu, "b1.relu2", NODE(b, Add, "b1.add", n2, r0));
  int q3 = NODE(b, Relu, "b2.relu1", gb_bn_running(b, "b2.bn1", gb_conv(b, "b2.conv1", r1, 4, 8, 3, 2, false), 8));
  int n4 = gb_bn_running(b, "b2.bn2", gb_conv(b, "b2.conv2", q3, 8, 8, 3, 1, false), 8);
  int nds = gb_bn_running(b, "b2.ds.bn", gb_conv(b, "b2.ds", r1, 4, 8, 1, 2, false), 8);
  int r2 = NODE(b, Relu, "b2.relu2", NODE(b, Add, "b2.add", n4, nds));
  int flat = NODE(b, Flatten, "flat", NODE(b, GlobalAveragePool, "gap", r2));
  int fw = gb_rand(b, "fc.weight", 2, IV(3, 8), -0.3, 0.3), fb = gb_rand(b, "fc.bias", 1, IV(3), -0.1, 0.1);
  int nid;
  int logits = gb_node(b, KILN_OP_Gemm, "logits", IN(flat, fw, fb), 1, &nid);
  if (nid >= 0) ir_set_attr_int(b->g, nid, "transB", 1, &b->e);
  int sal = gb_conv(b, "saliency", r1, 4, 1, 1, 1, true);
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


/* The small net's training step through `pipeline` (NULL: the training default), with the
 * state updates as extra graph outputs so the reference runtime returns them. */
static kiln_train_graph *train_graph(const char *pipeline, kiln_optim optim,
                                     kiln_pipeline_result *res) {
  kiln_graph *g = small_net();
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

/* ---- structure ---- */

static void test_structure(void) {
  kiln_pipeline_result res;
  kiln_train_graph *tg = train_graph(NULL, KILN_OPTIM_ADAM, &res);
  if (!tg) return;
  const kiln_graph *g = tg->g;
  int fused_fwd = 0, masked = 0;
  for (int64_t i = 0; i < g->n_nodes; i++) {
    const kiln_node *n = &g->nodes[i];
    if (n->op == KILN_OP_BatchNormTrain) fused_fwd += !strcmp(ir_attr_str(n, "activation"), "relu");
    if (n->op == KILN_OP_BatchNormGrad) masked += n->n_in == 6;
  }
  /* stem, b1.bn1, b2.bn1 take their ReLU; the residual ReLUs join their Adds */
  CHECK_MSG(fused_fwd == 3, "%d BatchNormTrain with a ReLU", fused_fwd);
  CHECK(count_op(g, KILN_OP_Relu) == 0);
  /* the three BN-ReLU masks, and b2's residual mask shared by b2.bn2 and b2.ds.bn; b1's
   * residual mask also feeds the skip connection's gradient, so it stays */
  CHECK_MSG(masked == 5, "%d BatchNormGrad with a mask", masked);
  CHECK(count_op(g, KILN_OP_Where) == 1 && count_op(g, KILN_OP_Greater) == 1);
  CHECK(count_op(g, KILN_OP_FusedElementwise) >= 2);
  bool saw = false;
  for (int i = 0; i < res.n; i++)
    if (!strcmp(res.pass[i]->name, "fuse-train-bn")) {
      saw = true;
      CHECK_MSG(res.stats[i].changes == 3 + 4, "fuse-train-bn: %lld changes (%s)",
                (long long)res.stats[i].changes, res.stats[i].detail);
    }
  CHECK(saw);
  char *text = ir_text(g);
  check_golden_in("train_fusion", "small", text);
  free(text);
  kiln_train_graph_free(tg);

  /* an inference model in training mode (to be trained later): nothing fuses */
  kiln_graph *m = small_net();
  if (!m) return;
  kiln_err e = {0};
  kiln_evaluator ev = kiln_ref_evaluator();
  kiln_pass_ctx cx = {.mode = KILN_MODE_TRAINING, .ev = &ev};
  CHECK_OK(kiln_run_pipeline(m, NULL, &cx, &res, &e), &e);
  CHECK(count_op(m, KILN_OP_Relu) == 5 && count_op(m, KILN_OP_FusedElementwise) == 0);
  ir_graph_free(m);
}

/* ---- the reference step, fused and unfused ---- */

/* The step's inputs (tests/train_run.h), images 0, 2, 3, ... with a mask. */
static void step_inputs(const kiln_train_graph *tg, kiln_tensor **in) {
  trun_step_inputs(tg, in, false);
}

static void test_reference_equal(void) {
  for (int o = 0; o < 2; o++) {
    kiln_optim optim = o ? KILN_OPTIM_SGD : KILN_OPTIM_ADAM;
    kiln_train_graph *a = train_graph(UNFUSED, optim, NULL), *b = train_graph(NULL, optim, NULL);
    if (!a || !b) {
      kiln_train_graph_free(a);
      kiln_train_graph_free(b);
      return;
    }
    CHECK(a->g->n_inputs == b->g->n_inputs && a->g->n_outputs == b->g->n_outputs);
    kiln_tensor *ia[256] = {0}, *ib[256] = {0}, *oa[256] = {0}, *ob[256] = {0};
    kiln_err e = {0};
    if (a->g->n_inputs <= 256 && a->g->n_outputs <= 256 && b->g->n_inputs == a->g->n_inputs) {
      step_inputs(a, ia);
      step_inputs(b, ib);
      kiln_ref_ctx ca = {.g = a->g}, cb = {.g = b->g};
      CHECK_OK(kiln_ref_run(a->g, &ca, ia, oa, &e), &e);
      CHECK_OK(kiln_ref_run(b->g, &cb, ib, ob, &e), &e);
      int compared = 0;
      for (int i = 0; i < a->g->n_outputs; i++) {
        const char *name = a->g->values[a->g->outputs[i]].name;
        const kiln_tensor *x = oa[i], *y = NULL;
        for (int j = 0; j < b->g->n_outputs; j++)
          if (!strcmp(b->g->values[b->g->outputs[j]].name, name)) y = ob[j];
        CHECK_MSG(x && y && kiln_shape_eq(&x->shape, &y->shape), "output %s missing", name);
        if (!x || !y || !kiln_shape_eq(&x->shape, &y->shape)) continue;
        CHECK_MSG(!memcmp(x->data, y->data, kiln_tensor_nbytes(x)),
                  "%s: output %s differs between the fused and the unfused step",
                  o ? "sgd" : "adam", name);
        compared++;
      }
      CHECK(compared == a->g->n_outputs && compared > 50);
      CHECK(isfinite(((float *)oa[0]->data)[0]));
      /* the fused step through an ONNX round trip (kiln-domain ops, the optional input) */
      uint8_t *buf = NULL;
      size_t len = 0;
      kiln_graph *c = NULL;
      CHECK_OK(kiln_onnx_save_buffer(b->g, &buf, &len, &e), &e);
      if (buf) CHECK_OK(kiln_onnx_load_buffer(buf, len, NULL, "fused step", &c, &e), &e);
      kiln_evaluator ev = kiln_ref_evaluator();
      if (c) CHECK_OK(ir_infer(c, &ev, &e), &e);
      if (c && !e.code && c->n_outputs == b->g->n_outputs) {
        kiln_tensor *oc[256] = {0};
        kiln_ref_ctx cc = {.g = c};
        CHECK_OK(kiln_ref_run(c, &cc, ib, oc, &e), &e);
        for (int i = 0; i < c->n_outputs && !e.code; i++)
          CHECK_MSG(oc[i] && ob[i] && !memcmp(oc[i]->data, ob[i]->data, kiln_tensor_nbytes(ob[i])),
                    "output %d differs after an ONNX round trip", i);
        for (int i = 0; i < 256; i++) kiln_tensor_free(oc[i]);
      }
      kiln_free(buf);
      ir_graph_free(c);
    }
    for (int i = 0; i < 256; i++) {
      kiln_tensor_free(ia[i]);
      kiln_tensor_free(ib[i]);
      kiln_tensor_free(oa[i]);
      kiln_tensor_free(ob[i]);
    }
    kiln_train_graph_free(a);
    kiln_train_graph_free(b);
  }
}

/* ---- the compiled step ---- */

/* Two steps of the compiled step (tests/train_run.h), with the batch and the state names of
 * a reference build of the same step. */
static void run_trainer(const char *model, const char *passes, int threads, run_out *r) {
  memset(r, 0, sizeof *r);
  kiln_train_graph *tg = train_graph(UNFUSED, KILN_OPTIM_SGD, NULL);
  if (!tg) return;
  kiln_tensor *in[256] = {0};
  step_inputs(tg, in);
  trun_run(model, passes, threads, tg, in, r);
  for (int i = 0; i < 256; i++) kiln_tensor_free(in[i]);
  kiln_train_graph_free(tg);
}

static void test_jit(void) {
  char dir[] = "/tmp/kiln_train_fusion_XXXXXX", path[128];
  if (!mkdtemp(dir)) {
    CHECK_MSG(false, "mkdtemp failed");
    return;
  }
  snprintf(path, sizeof path, "%s/small.onnx", dir);
  kiln_graph *g = small_net();
  if (!g) return;
  kiln_err e = {0};
  CHECK_OK(kiln_onnx_save(g, path, &e), &e);
  ir_graph_free(g);
  run_out base, r;
  run_trainer(path, UNFUSED, 1, &base);
  const struct {
    const char *passes;
    int threads;
  } runs[] = {{NULL, 1}, {NULL, 2}};
  for (int i = 0; i < 2; i++) {
    char what[96];
    snprintf(what, sizeof what, "jit %s, %d thread(s)", runs[i].passes ? "unfused" : "fused",
             runs[i].threads);
    run_trainer(path, runs[i].passes, runs[i].threads, &r);
    /* the JIT's tolerance against the reference (test_grad_nn: 1e-5 relative) */
    compare_runs(&base, &r, 1e-5, what);
    free_run(&r);
  }
  free_run(&base);
  unlink(path);
  rmdir(dir);
}

/* ---- autodiff through the fused forward ---- */

/* x [2,3,4,4] -> BatchNormTrain -> Relu -> sum(y * w): gradients of x, scale and B, with the
 * forward fused by `pipeline` before autodiff (NULL: not fused); returns them. */
static void bn_relu_grads(const char *pipeline, kiln_tensor **out) {
  gb bb, *b = &bb;
  memset(b, 0, sizeof *b);
  b->g = ir_graph_new();
  b->rng = 5;
  ir_set_opset(b->g, "", 13, &b->e);
  int ids[3];
  const char *names[3] = {"x", "scale", "bias"};
  kiln_shape shapes[3] = {kiln_shape_make(4, IV(2, 3, 4, 4)), kiln_shape_make(1, IV(3)),
                          kiln_shape_make(1, IV(3))};
  for (int i = 0; i < 3; i++) {
    ir_add_value(b->g, names[i], &ids[i], &b->e);
    kiln_value *v = ir_val(b->g, ids[i]);
    v->dtype = KILN_F32;
    v->shape = shapes[i];
    v->typed = true;
    ir_add_input(b->g, ids[i], &b->e);
  }
  int mean = gb_rand(b, "bn.running_mean", 1, IV(3), -0.1, 0.1);
  int var = gb_rand(b, "bn.running_var", 1, IV(3), 0.5, 1.5);
  int y = NODE(b, BatchNormalization, "bn", ids[0], ids[1], ids[2], mean, var);
  int r = NODE(b, Relu, "relu", y);
  int w = gb_rand(b, "w", 4, IV(2, 3, 4, 4), -1, 1);
  int nid, loss = gb_node(b, KILN_OP_ReduceSum, "loss", IN(NODE(b, Mul, "mul", r, w)), 1, &nid);
  if (nid >= 0) ir_set_attr_int(b->g, nid, "keepdims", 0, &b->e);
  ir_add_output(b->g, loss, &b->e);
  kiln_evaluator ev = kiln_ref_evaluator();
  if (!b->e.code) ir_infer(b->g, &ev, &b->e);
  if (!b->e.code) kiln_bn_to_training(b->g, &b->e);
  if (!b->e.code && pipeline) {
    kiln_pass_ctx cx = {.mode = KILN_MODE_TRAINING, .ev = &ev};
    kiln_run_pipeline(b->g, pipeline, &cx, NULL, &b->e);
    CHECK(count_op(b->g, KILN_OP_Relu) == 0);
  }
  int grads[3];
  loss = ir_find_value(b->g, "loss");
  kiln_autodiff_opts ao = {.loss = loss, .wrt = ids, .n_wrt = 3, .seed = -1};
  if (!b->e.code) kiln_autodiff(b->g, &ao, grads, &b->e);
  int n_out0 = b->g->n_outputs;
  for (int i = 0; i < 3 && !b->e.code; i++) ir_add_output(b->g, grads[i], &b->e);
  CHECK_OK(b->e.code, &b->e);
  if (!b->e.code) {
    if (pipeline) {
      int masked = 0;
      for (int64_t i = 0; i < b->g->n_nodes; i++)
        masked += b->g->nodes[i].op == KILN_OP_BatchNormGrad && b->g->nodes[i].n_in == 6;
      CHECK(masked == 1 && count_op(b->g, KILN_OP_Where) == 0);
    }
    kiln_tensor *in[3] = {0}, *res[8] = {0};
    uint64_t seed = 3;
    for (int i = 0; i < 3; i++) {
      kiln_tensor_new(KILN_F32, &shapes[i], &in[i], &b->e);
      for (int64_t k = 0; in[i] && k < in[i]->numel; k++)
        ((float *)in[i]->data)[k] = (float)(i == 1 ? 0.5 + rng_uniform(&seed) : 2 * rng_uniform(&seed) - 1);
    }
    kiln_ref_ctx cx = {.g = b->g};
    CHECK_OK(kiln_ref_run(b->g, &cx, in, res, &b->e), &b->e);
    for (int i = 0; i < 3; i++) {
      out[i] = res[n_out0 + i];
      res[n_out0 + i] = NULL;
      kiln_tensor_free(in[i]);
    }
    for (int i = 0; i < 8; i++) kiln_tensor_free(res[i]);
  }
  ir_graph_free(b->g);
}

static void test_fused_forward_autodiff(void) {
  kiln_tensor *u[3] = {0}, *f[3] = {0};
  bn_relu_grads(NULL, u);
  bn_relu_grads("fuse-train-bn", f);
  for (int i = 0; i < 3; i++) {
    CHECK(u[i] && f[i] && u[i]->numel == f[i]->numel);
    if (u[i] && f[i] && u[i]->numel == f[i]->numel)
      CHECK_MSG(!memcmp(u[i]->data, f[i]->data, kiln_tensor_nbytes(u[i])),
                "gradient %d differs through the fused BatchNormTrain", i);
    kiln_tensor_free(u[i]);
    kiln_tensor_free(f[i]);
  }
}

/* ---- the fused kernels alone ---- */

/* One node of `op` over inputs in[] (graph inputs), n_out outputs; activation set when given. */
static kiln_graph *one_node(kiln_op op, kiln_tensor *const *in, int n_in, int n_out,
                            const char *activation) {
  kiln_err e = {0};
  kiln_graph *g = ir_graph_new();
  ir_set_opset(g, "", 17, &e);
  int ids[8], outs[8], nid = -1;
  for (int i = 0; i < n_in; i++) {
    char nm[16];
    snprintf(nm, sizeof nm, "in%d", i);
    ir_add_value(g, nm, &ids[i], &e);
    kiln_value *v = ir_val(g, ids[i]);
    v->dtype = KILN_F32;
    v->shape = in[i]->shape;
    v->typed = true;
    ir_add_input(g, ids[i], &e);
  }
  for (int o = 0; o < n_out; o++) {
    char nm[16];
    snprintf(nm, sizeof nm, "out%d", o);
    ir_add_value(g, nm, &outs[o], &e);
  }
  ir_add_node(g, op, "node", ids, n_in, outs, n_out, &nid, &e);
  if (activation && nid >= 0) ir_set_attr_str(g, nid, "activation", activation, &e);
  for (int o = 0; o < n_out; o++) ir_add_output(g, outs[o], &e);
  kiln_evaluator ev = kiln_ref_evaluator();
  if (!e.code) ir_infer(g, &ev, &e);
  CHECK_OK(e.code, &e);
  return g;
}

static kiln_tensor *rand_tensor(kiln_shape s, uint64_t *seed, double lo, double hi) {
  kiln_err e = {0};
  kiln_tensor *t = NULL;
  CHECK_OK(kiln_tensor_new(KILN_F32, &s, &t, &e), &e);
  for (int64_t i = 0; t && i < t->numel; i++)
    ((float *)t->data)[i] = (float)(lo + (hi - lo) * rng_uniform(seed));
  return t;
}

/* The node's outputs with the reference kernels and the JIT at 1 and 3 threads: the JIT
 * within 1e-6 + 1e-5 |ref| (test_grad_nn's tolerance), bitwise equal across threads. */
static void check_kernel(const char *what, kiln_op op, kiln_tensor *const *in, int n_in, int n_out,
                         const char *activation) {
  kiln_err e = {0};
  kiln_tensor *want[5] = {0}, *got[2][5] = {{0}};
  kiln_graph *g = one_node(op, in, n_in, n_out, activation);
  kiln_ref_ctx ctx = {.g = g};
  CHECK_OK(kiln_ref_run(g, &ctx, in, want, &e), &e);
  ir_graph_free(g);
  const int threads[2] = {1, 3};
  for (int t = 0; t < 2; t++) {
    kiln_program *p = NULL;
    kiln_compile_opts o = {.threads = threads[t], .cache_dir = ""};
    CHECK_OK(kiln_compile(one_node(op, in, n_in, n_out, activation), &o, &p, &e), &e);
    if (!p) continue;
    CHECK_MSG(p->n_fallback == 0, "%s: no compiled kernel", what);
    CHECK_OK(kiln_program_run(p, in, got[t], false, &e), &e);
    kiln_program_free(p);
  }
  for (int o = 0; o < n_out; o++) {
    if (!want[o] || !got[0][o] || !got[1][o]) {
      CHECK_MSG(false, "%s: output %d missing", what, o);
      continue;
    }
    CHECK_MSG(!memcmp(got[0][o]->data, got[1][o]->data, kiln_tensor_nbytes(want[o])),
              "%s: output %d differs between 1 and 3 threads", what, o);
    int bad = 0;
    for (int64_t i = 0; i < want[o]->numel; i++) {
      double a = ((float *)got[0][o]->data)[i], b = ((float *)want[o]->data)[i];
      if (!(fabs(a - b) <= 1e-6 + 1e-5 * fabs(b)) && bad++ < 3)
        fprintf(stderr, "%s: output %d [%lld]: jit %.9g, reference %.9g\n", what, o,
                (long long)i, a, b);
    }
    CHECK_MSG(bad == 0, "%s: output %d: %d elements differ from the reference", what, o, bad);
  }
  for (int o = 0; o < 5; o++) {
    kiln_tensor_free(want[o]);
    kiln_tensor_free(got[0][o]);
    kiln_tensor_free(got[1][o]);
  }
}

static void test_kernels(void) {
  const kiln_shape shapes[2] = {kiln_shape_make(4, IV(3, 5, 7, 6)), kiln_shape_make(3, IV(2, 4, 9))};
  for (int si = 0; si < 2; si++) {
    uint64_t seed = 11 + (uint64_t)si;
    kiln_shape xs = shapes[si], cs = kiln_shape_make(1, IV(xs.d[1]));
    kiln_tensor *bn[5] = {rand_tensor(xs, &seed, -2, 2), rand_tensor(cs, &seed, 0.5, 1.5),
                          rand_tensor(cs, &seed, -0.5, 0.5), rand_tensor(cs, &seed, -0.5, 0.5),
                          rand_tensor(cs, &seed, 0.5, 1.5)};
    check_kernel("BatchNormTrain relu", KILN_OP_BatchNormTrain, bn, 5, 5, "relu");
    /* Y a ReLU's output: zeros (a third), positives, and a -0 */
    kiln_tensor *y = rand_tensor(xs, &seed, -1, 2);
    for (int64_t i = 0; y && i < y->numel; i++)
      if (((float *)y->data)[i] < 0) ((float *)y->data)[i] = i % 7 ? 0.0f : -0.0f;
    kiln_tensor *gr[6] = {bn[0], bn[1], rand_tensor(cs, &seed, -0.5, 0.5),
                          rand_tensor(cs, &seed, 0.5, 2), rand_tensor(xs, &seed, -1, 1), y};
    check_kernel("BatchNormGrad masked", KILN_OP_BatchNormGrad, gr, 6, 3, NULL);
    for (int i = 0; i < 5; i++) kiln_tensor_free(bn[i]);
    for (int i = 2; i < 6; i++) kiln_tensor_free(gr[i]);
  }
}

/* ---- malformed fused forms ---- */

static void test_malformed(void) {
  kiln_train_graph *tg = train_graph(NULL, KILN_OPTIM_SGD, NULL);
  if (!tg) return;
  kiln_graph *g = tg->g;
  kiln_evaluator ev = kiln_ref_evaluator();
  kiln_err e = {0};
  int bn = -1, grad = -1;
  for (int64_t i = 0; i < g->n_nodes; i++) {
    if (bn < 0 && g->nodes[i].op == KILN_OP_BatchNormTrain) bn = (int)i;
    if (grad < 0 && g->nodes[i].op == KILN_OP_BatchNormGrad && g->nodes[i].n_in == 6) grad = (int)i;
  }
  CHECK(bn >= 0 && grad >= 0);
  if (bn < 0 || grad < 0) {
    kiln_train_graph_free(tg);
    return;
  }
  CHECK_OK(ir_set_attr_str(g, bn, "activation", "tanh", &e), &e);
  CHECK(ir_infer(g, &ev, &e) == KILN_ERR_UNSUPPORTED && strstr(e.msg, "tanh"));
  memset(&e, 0, sizeof e);
  CHECK_OK(ir_set_attr_str(g, bn, "activation", "relu", &e), &e);
  /* Y of another shape: the BatchNorm's saved mean */
  g->nodes[grad].in[5] = g->nodes[bn].out[1];
  CHECK(ir_infer(g, &ev, &e) == KILN_ERR_SHAPE && strstr(e.msg, "Y '"));
  kiln_train_graph_free(tg);
}

int main(void) {
  RUN(test_structure);
  RUN(test_reference_equal);
  RUN(test_kernels);
  RUN(test_fused_forward_autodiff);
  RUN(test_malformed);
  RUN(test_jit);
  TEST_MAIN_END();
}
