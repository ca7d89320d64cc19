/* test_grad_nn.c — gradients of Conv, ConvTranspose and BatchNormalization (inference and
 * training forms) against finite differences; kiln.BatchNormTrain and kiln.BatchNormGrad
 * against PyTorch on a hand-checked case; kiln_bn_to_training; and the JIT kernels of
 * ConvGradWeight, BatchNormTrain and BatchNormGrad against the reference at 1 and 3
 * threads (bitwise equal across thread counts). */
#include "codegen/compile.h"
#include "gradcheck.h"
#include "passes/train_bn.h"

/* ---- one-node graphs ---- */

typedef struct tattr {
  const char *name;
  int n;          /* INTS count; 0 with s == NULL and !is_f: INT v[0] */
  int64_t v[6];
  const char *s;  /* STRING */
  bool is_f;      /* FLOAT f */
  bool is_int;    /* INT v[0] */
  double f;
} tattr;

#define INTS(nm, cnt, ...) {.name = nm, .n = cnt, .v = {__VA_ARGS__}}
#define INT1(nm, x) {.name = nm, .is_int = true, .v = {x}}
#define FLT(nm, x) {.name = nm, .is_f = true, .f = x}
#define STR(nm, x) {.name = nm, .s = x}

static int add_input(kiln_graph *g, const char *name, const kiln_shape *s, kiln_err *e) {
  int v;
  ir_add_value(g, name, &v, e);
  g->values[v].dtype = KILN_F32;
  g->values[v].shape = *s;
  g->values[v].typed = true;
  ir_add_input(g, v, e);
  return v;
}

static void set_attrs(kiln_graph *g, int nid, const tattr *a, int n_attrs, kiln_err *e) {
  for (int i = 0; i < n_attrs; i++) {
    if (a[i].is_f)
      ir_set_attr_float(g, nid, a[i].name, a[i].f, e);
    else if (a[i].is_int)
      ir_set_attr_int(g, nid, a[i].name, a[i].v[0], e);
    else if (a[i].s)
      ir_set_attr_str(g, nid, a[i].name, a[i].s, e);
    else
      ir_set_attr_ints(g, nid, a[i].name, a[i].v, a[i].n, e);
  }
}

/* Inputs are graph inputs with the shapes of `in`; every output is a graph output. */
static kiln_graph *build_one(kiln_op op, int opset, kiln_tensor *const *in, int n_in, int n_out,
                             const tattr *attrs, int n_attrs) {
  kiln_err e = {0};
  kiln_graph *g = ir_graph_new();
  ir_set_opset(g, "", opset, &e);
  int ids[8], outs[8], nid;
  for (int i = 0; i < n_in; i++) {
    char nm[16];
    snprintf(nm, sizeof nm, "in%d", i);
    ids[i] = add_input(g, nm, &in[i]->shape, &e);
  }
  for (int o = 0; o < n_out; o++) {
    char nm[16];
    snprintf(nm, sizeof nm, "out%d", o);
    ir_add_value(g, nm, &outs[o], &e);
  }
  ir_add_node(g, op, "node", ids, n_in, outs, n_out, &nid, &e);
  set_attrs(g, nid, attrs, n_attrs, &e);
  for (int o = 0; o < n_out; o++) ir_add_output(g, outs[o], &e);
  kiln_evaluator ev = kiln_ref_evaluator();
  CHECK_OK(ir_infer(g, &ev, &e), &e);
  return g;
}

static kiln_tensor *rand_tensor(int rank, const int64_t *d, uint64_t *seed, double lo, double hi) {
  kiln_err e = {0};
  kiln_tensor *t;
  kiln_shape s = kiln_shape_make(rank, d);
  kiln_tensor_new(KILN_F32, &s, &t, &e);
  gc_fill(t, seed, lo, hi);
  return t;
}

static kiln_tensor *tensor_of(int rank, const int64_t *d, const float *v) {
  kiln_err e = {0};
  kiln_tensor *t;
  kiln_shape s = kiln_shape_make(rank, d);
  kiln_tensor_new(KILN_F32, &s, &t, &e);
  memcpy(t->data, v, sizeof(float) * (size_t)t->numel);
  return t;
}

static void free_all(kiln_tensor **t, int n) {
  for (int i = 0; i < n; i++) kiln_tensor_free(t[i]);
}

/* ---- Conv / ConvTranspose gradients ---- */

typedef struct conv_case {
  const char *what;
  bool transpose;
  int rank;
  int64_t x[5], w[5];
  bool bias;
  tattr attrs[6];
  int n_attrs;
} conv_case;

static void check_conv(const conv_case *c) {
  uint64_t seed = 99;
  kiln_tensor *in[3];
  in[0] = rand_tensor(c->rank, c->x, &seed, -1, 1);
  in[1] = rand_tensor(c->rank, c->w, &seed, -1, 1);
  int64_t nb = c->transpose ? c->w[1] * 1 : c->w[0];
  int n_in = 2;
  if (c->bias) {
    /* bias has one value per output channel (ConvTranspose: W.d[1] * group) */
    int64_t group = 1;
    for (int i = 0; i < c->n_attrs; i++)
      if (!strcmp(c->attrs[i].name, "group")) group = c->attrs[i].v[0];
    if (c->transpose) nb *= group;
    in[n_in++] = rand_tensor(1, &nb, &seed, -1, 1);
  }
  kiln_graph *g = build_one(c->transpose ? KILN_OP_ConvTranspose : KILN_OP_Conv, 17, in, n_in, 1,
                            c->attrs, c->n_attrs);
  if (gradcheck(g, in, (int[]){0, 1, 2}, n_in, 1e-2, 1e-3))
    fprintf(stderr, "  (case %s)\n", c->what);
  free_all(in, n_in);
  ir_graph_free(g);
}

static void test_conv_grad(void) {
  static const conv_case cases[] = {
      {"3x3 pad 1", false, 4, {2, 3, 5, 5}, {4, 3, 3, 3}, true, {INTS("pads", 4, 1, 1, 1, 1)}, 1},
      {"stride 2, odd sizes, asymmetric pads", false, 4, {1, 2, 7, 6}, {3, 2, 3, 3}, true,
       {INTS("strides", 2, 2, 2), INTS("pads", 4, 1, 0, 0, 1)}, 2},
      {"group 2", false, 4, {2, 4, 5, 5}, {6, 2, 3, 3}, true,
       {INT1("group", 2), INTS("pads", 4, 1, 1, 1, 1)}, 2},
      {"dilation 2", false, 4, {1, 2, 7, 7}, {2, 2, 3, 3}, false,
       {INTS("dilations", 2, 2, 2), INTS("pads", 4, 2, 1, 2, 1)}, 2},
      {"1x1", false, 4, {2, 3, 4, 4}, {5, 3, 1, 1}, false, {{0}}, 0},
      {"1x1 stride 2", false, 4, {1, 3, 5, 5}, {2, 3, 1, 1}, true, {INTS("strides", 2, 2, 2)}, 1},
      {"1-D stride 2", false, 3, {2, 2, 9}, {3, 2, 3}, true,
       {INTS("strides", 1, 2), INTS("pads", 2, 1, 1)}, 2},
      {"depthwise stride 2", false, 4, {1, 3, 6, 6}, {3, 1, 3, 3}, true,
       {INT1("group", 3), INTS("strides", 2, 2, 2), INTS("pads", 4, 1, 1, 1, 1)}, 3},
      {"SAME_UPPER stride 2", false, 4, {1, 2, 5, 6}, {2, 2, 3, 3}, true,
       {STR("auto_pad", "SAME_UPPER"), INTS("strides", 2, 2, 2)}, 2},
      {"kernel 2 stride 3 (gaps)", false, 4, {1, 1, 8, 7}, {2, 1, 2, 2}, true,
       {INTS("strides", 2, 3, 3)}, 1},
      {"group 2 stride 2 dilation 2", false, 4, {1, 4, 9, 8}, {4, 2, 3, 2}, true,
       {INT1("group", 2), INTS("strides", 2, 2, 2), INTS("dilations", 2, 2, 1),
        INTS("pads", 4, 1, 0, 2, 1)}, 4},
      {"transpose stride 2 output_padding 1", true, 4, {1, 2, 3, 3}, {2, 3, 3, 3}, true,
       {INTS("strides", 2, 2, 2), INTS("pads", 4, 1, 1, 1, 1), INTS("output_padding", 2, 1, 1)},
       3},
      {"transpose group 2 dilation 2", true, 4, {2, 4, 4, 3}, {4, 1, 3, 3}, true,
       {INT1("group", 2), INTS("dilations", 2, 2, 2), INTS("pads", 4, 1, 0, 1, 2)}, 3},
      {"transpose 1-D stride 3", true, 3, {1, 2, 4}, {2, 2, 2}, false,
       {INTS("strides", 1, 3)}, 1},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_conv(&cases[i]);
}

/* ---- BatchNormalization gradients ---- */

/* BatchNormTrain (or a training-mode BatchNormalization) with X, scale and B differentiated;
 * the running statistics are inputs too but get no gradient. */
static void check_bn(kiln_op op, int opset, int rank, const int64_t *xd, bool training_mode) {
  uint64_t seed = (uint64_t)rank * 31 + (uint64_t)op;
  kiln_tensor *in[5];
  int64_t c = xd[1];
  in[0] = rand_tensor(rank, xd, &seed, -2, 2);
  in[1] = rand_tensor(1, &c, &seed, 0.5, 1.5);
  in[2] = rand_tensor(1, &c, &seed, -1, 1);
  in[3] = rand_tensor(1, &c, &seed, -0.5, 0.5);
  in[4] = rand_tensor(1, &c, &seed, 0.5, 2);
  tattr a[1] = {INT1("training_mode", 1)};
  kiln_graph *g = build_one(op, opset, in, 5, 1, a, training_mode ? 1 : 0);
  if (gradcheck(g, in, (int[]){0, 1, 2}, 3, 1e-2, 1e-3))
    fprintf(stderr, "  (%s, rank %d)\n", kiln_op_name(op), rank);
  free_all(in, 5);
  ir_graph_free(g);
}

static void test_bn_train_grad(void) {
  check_bn(KILN_OP_BatchNormTrain, 17, 4, (int64_t[]){2, 3, 3, 4}, false);
  check_bn(KILN_OP_BatchNormTrain, 17, 2, (int64_t[]){5, 3}, false);
  check_bn(KILN_OP_BatchNormTrain, 17, 3, (int64_t[]){3, 2, 5}, false);
  /* ONNX's own training form is differentiated through the batch statistics too */
  check_bn(KILN_OP_BatchNormalization, 15, 4, (int64_t[]){2, 2, 3, 3}, true);
}

static void test_bn_inference_grad(void) {
  check_bn(KILN_OP_BatchNormalization, 15, 4, (int64_t[]){2, 3, 3, 4}, false);
  check_bn(KILN_OP_BatchNormalization, 9, 2, (int64_t[]){4, 3}, false);
  check_bn(KILN_OP_BatchNormalization, 15, 3, (int64_t[]){2, 3, 5}, false);
}

/* The per-activation form of opset 7 (spatial = 0): parameters of shape (C, H, W). */
static void test_bn_per_activation_grad(void) {
  uint64_t seed = 5;
  int64_t xd[] = {3, 2, 2, 3}, pd[] = {2, 2, 3};
  kiln_tensor *in[5];
  in[0] = rand_tensor(4, xd, &seed, -2, 2);
  in[1] = rand_tensor(3, pd, &seed, 0.5, 1.5);
  in[2] = rand_tensor(3, pd, &seed, -1, 1);
  in[3] = rand_tensor(3, pd, &seed, -0.5, 0.5);
  in[4] = rand_tensor(3, pd, &seed, 0.5, 2);
  tattr a[] = {INT1("spatial", 0), INT1("is_test", 1)};
  kiln_graph *g = build_one(KILN_OP_BatchNormalization, 6, in, 5, 1, a, 2);
  gradcheck(g, in, (int[]){0, 1, 2}, 3, 1e-2, 1e-3);
  free_all(in, 5);
  ir_graph_free(g);
}

/* The running statistics are not differentiable; a loss reading a batch statistic is an
 * error naming the node, not a silently wrong gradient. */
static void test_bn_stat_loss_refused(void) {
  uint64_t seed = 8;
  kiln_tensor *in[5];
  int64_t xd[] = {2, 2, 3}, c = 2;
  in[0] = rand_tensor(3, xd, &seed, -1, 1);
  for (int i = 1; i < 5; i++) in[i] = rand_tensor(1, &c, &seed, 0.5, 1);
  kiln_graph *g = build_one(KILN_OP_BatchNormTrain, 17, in, 5, 3, NULL, 0);
  kiln_err e = {0};
  int wrt = g->inputs[0], grads[1];
  kiln_autodiff_opts o = {.loss = g->outputs[1], .wrt = &wrt, .n_wrt = 1, .seed = -1};
  CHECK(kiln_autodiff(g, &o, grads, &e) == KILN_ERR_UNSUPPORTED);
  CHECK(strstr(e.msg, "node") != NULL);
  free_all(in, 5);
  ir_graph_free(g);
}

/* ---- BatchNormTrain / BatchNormGrad against PyTorch ----
 * x (2, 2, 1, 2), weight [1.5, -0.5], bias [0.1, 0.2], running mean [0.5, -1], running var
 * [2, 0.5], eps 1e-5, PyTorch momentum 0.1 (ONNX 0.9):
 *   y = F.batch_norm(x, rm, rv, w, b, training=True, momentum=0.1, eps=1e-5)
 *   torch.native_batch_norm(...) -> save_mean, save_invstd
 *   (y * r).sum().backward() -> x.grad, w.grad, b.grad
 * (values printed by torch 1.13). */
static const float pt_x[] = {1.0f, 2.0f, 0.5f, -1.0f, 3.0f, -2.0f, 4.0f, 0.25f};
static const float pt_r[] = {0.3f, -0.7f, 1.1f, 0.4f, -0.2f, 0.9f, -1.3f, 0.6f};
static const float pt_y[] = {0.10000002384185791f, 0.9017825722694397f, 0.3177841901779175f,
                             0.7216157913208008f,  1.7035651206970215f, -2.3053476810455322f,
                             -0.624489426612854f,  0.3850894570350647f};
static const float pt_rm[] = {0.550000011920929f, -0.8062499761581421f};
static const float pt_rv[] = {2.2666666507720947f, 0.9098958373069763f};
static const float pt_save_mean[] = {1.0f, 0.9375f};
static const float pt_save_invstd[] = {0.5345216989517212f, 0.538442075252533f};
static const float pt_dx[] = {0.18040107190608978f, -0.40375542640686035f,
                              -0.1940649002790451f, 0.15976358950138092f,
                              0.2147619128227234f,  0.008592420257627964f,
                              0.06619342416524887f, -0.03189210221171379f};
static const float pt_dw[] = {-2.031182289123535f, -3.0421974658966064f};
static const float pt_db[] = {0.30000001192092896f, 0.8000000715255737f};

static void check_close_arr(const kiln_tensor *t, const float *want, int64_t n, double rtol,
                            double atol, const char *what) {
  CHECK_MSG(t && t->numel == n, "%s: wrong size", what);
  if (!t || t->numel != n) return;
  for (int64_t i = 0; i < n; i++) {
    double a = ((const float *)t->data)[i], b = want[i];
    CHECK_MSG(fabs(a - b) <= atol + rtol * fabs(b), "%s[%lld] = %.9g, expected %.9g", what,
              (long long)i, a, b);
  }
}

static void test_bn_matches_pytorch(void) {
  kiln_tensor *in[5] = {tensor_of(4, (int64_t[]){2, 2, 1, 2}, pt_x),
                        tensor_of(1, (int64_t[]){2}, (float[]){1.5f, -0.5f}),
                        tensor_of(1, (int64_t[]){2}, (float[]){0.1f, 0.2f}),
                        tensor_of(1, (int64_t[]){2}, (float[]){0.5f, -1.0f}),
                        tensor_of(1, (int64_t[]){2}, (float[]){2.0f, 0.5f})};
  tattr a[] = {FLT("epsilon", 1e-5), FLT("momentum", 0.9)};
  kiln_graph *g = build_one(KILN_OP_BatchNormTrain, 17, in, 5, 5, a, 2);
  kiln_tensor *out[5] = {0};
  kiln_err e = {0};
  kiln_ref_ctx ctx = {.g = g};
  CHECK_OK(kiln_ref_run(g, &ctx, in, out, &e), &e);
  check_close_arr(out[0], pt_y, 8, 1e-5, 1e-6, "Y");
  check_close_arr(out[1], pt_save_mean, 2, 1e-6, 1e-7, "saved_mean");
  check_close_arr(out[2], pt_save_invstd, 2, 1e-6, 1e-7, "saved_invstd");
  check_close_arr(out[3], pt_rm, 2, 1e-6, 1e-7, "running_mean");
  check_close_arr(out[4], pt_rv, 2, 1e-6, 1e-7, "running_var (unbiased)");

  /* BatchNormGrad on the saved statistics and the cotangent r */
  kiln_tensor *gin[5] = {in[0], in[1], out[1], out[2], tensor_of(4, (int64_t[]){2, 2, 1, 2}, pt_r)};
  kiln_graph *gg = build_one(KILN_OP_BatchNormGrad, 17, gin, 5, 3, NULL, 0);
  kiln_tensor *gout[3] = {0};
  ctx.g = gg;
  CHECK_OK(kiln_ref_run(gg, &ctx, gin, gout, &e), &e);
  check_close_arr(gout[0], pt_dx, 8, 1e-5, 1e-6, "dX");
  check_close_arr(gout[1], pt_dw, 2, 1e-5, 1e-6, "dScale");
  check_close_arr(gout[2], pt_db, 2, 1e-6, 1e-7, "dB");

  /* unbiased = 0 is ONNX's running variance: 0.9 * 2 + 0.1 * 3.5 (the biased variance of
   * channel 0 is 14 / 4) */
  tattr a2[] = {FLT("momentum", 0.9), INT1("unbiased", 0)};
  kiln_graph *g2 = build_one(KILN_OP_BatchNormTrain, 17, in, 5, 5, a2, 2);
  kiln_tensor *out2[5] = {0};
  ctx.g = g2;
  CHECK_OK(kiln_ref_run(g2, &ctx, in, out2, &e), &e);
  if (out2[4]) CHECK_CLOSE(((float *)out2[4]->data)[0], 0.9 * 2 + 0.1 * 3.5, 1e-6, 1e-7);
  free_all(out2, 5);
  ir_graph_free(g2);

  free_all(gout, 3);
  kiln_tensor_free(gin[4]);
  ir_graph_free(gg);
  free_all(out, 5);
  free_all(in, 5);
  ir_graph_free(g);
}

/* ---- kiln_bn_to_training ---- */

/* x -> Conv -> BatchNormalization -> Tanh, with constant running statistics. */
static kiln_graph *conv_bn_graph(int opset, int bn_outs) {
  kiln_err e = {0};
  kiln_graph *g = ir_graph_new();
  ir_set_opset(g, "", opset, &e);
  kiln_shape xs = kiln_shape_make(4, (int64_t[]){2, 2, 4, 4});
  kiln_shape ws = kiln_shape_make(4, (int64_t[]){3, 2, 3, 3});
  kiln_shape cs = kiln_shape_make(1, (int64_t[]){3});
  int x = add_input(g, "x", &xs, &e), w = add_input(g, "w", &ws, &e);
  int sc = add_input(g, "bn.weight", &cs, &e), b = add_input(g, "bn.bias", &cs, &e);
  kiln_tensor *rm, *rv;
  kiln_tensor_new(KILN_F32, &cs, &rm, &e);
  kiln_tensor_new(KILN_F32, &cs, &rv, &e);
  for (int i = 0; i < 3; i++) {
    ((float *)rm->data)[i] = 0.1f * (float)i;
    ((float *)rv->data)[i] = 1.0f + 0.5f * (float)i;
  }
  int m, v, c, y, t, extra[4];
  ir_add_const(g, "bn.running_mean", rm, true, &m, &e);
  ir_add_const(g, "bn.running_var", rv, true, &v, &e);
  ir_add_value(g, "c", &c, &e);
  ir_add_value(g, "y", &y, &e);
  ir_add_value(g, "t", &t, &e);
  int nid;
  ir_add_node(g, KILN_OP_Conv, "conv", (int[]){x, w}, 2, &c, 1, &nid, &e);
  ir_set_attr_ints(g, nid, "pads", (int64_t[]){1, 1, 1, 1}, 4, &e);
  int bouts[5] = {y, -1, -1, -1, -1};
  for (int o = 1; o < bn_outs; o++) {
    char nm[32];
    snprintf(nm, sizeof nm, "bn_out%d", o);
    ir_add_value(g, nm, &extra[o - 1], &e);
    bouts[o] = extra[o - 1];
  }
  ir_add_node(g, KILN_OP_BatchNormalization, "bn", (int[]){c, sc, b, m, v}, 5, bouts, bn_outs,
              NULL, &e);
  ir_add_node(g, KILN_OP_Tanh, "tanh", &y, 1, &t, 1, NULL, &e);
  ir_add_output(g, t, &e);
  if (bn_outs > 1) ir_add_output(g, bouts[1], &e);
  kiln_evaluator ev = kiln_ref_evaluator();
  CHECK_OK(ir_infer(g, &ev, &e), &e);
  return g;
}

static void test_bn_to_training(void) {
  kiln_err e = {0};
  kiln_graph *g = conv_bn_graph(15, 1);
  int n_conv = -1;
  CHECK_OK(kiln_bn_to_training_count(g, &n_conv, &e), &e);
  CHECK(n_conv == 1);
  CHECK_OK(ir_verify(g, &e), &e);
  int nm = ir_find_value(g, "bn.running_mean.new"), nv = ir_find_value(g, "bn.running_var.new");
  CHECK(nm >= 0 && nv >= 0);
  CHECK(g->n_outputs == 3 && g->outputs[1] == nm && g->outputs[2] == nv);
  int n_train = 0, n_bn = 0;
  for (int64_t i = 0; i < g->n_nodes; i++) {
    if (g->nodes[i].dead) continue;
    n_train += g->nodes[i].op == KILN_OP_BatchNormTrain;
    n_bn += g->nodes[i].op == KILN_OP_BatchNormalization;
  }
  CHECK(n_train == 1 && n_bn == 0);
  /* the whole chain differentiates through the batch statistics */
  uint64_t seed = 77;
  kiln_tensor *in[4];
  for (int i = 0; i < 4; i++) {
    const kiln_value *v = &g->values[g->inputs[i]];
    in[i] = rand_tensor(v->shape.rank, v->shape.d, &seed, i == 2 ? 0.5 : -1, 1);
  }
  /* the running statistics: 0.9 * running + 0.1 * batch; the batch mean of channel 0 from
   * the forward's saved mean */
  kiln_tensor *outs[3] = {0};
  kiln_ref_ctx ctx = {.g = g};
  CHECK_OK(kiln_ref_run(g, &ctx, in, outs, &e), &e);
  int sm = ir_find_value(g, "y.saved_mean");
  CHECK(sm >= 0);
  gradcheck(g, in, (int[]){0, 1, 2, 3}, 4, 1e-2, 1e-3);
  free_all(outs, 3);
  free_all(in, 4);
  ir_graph_free(g);

  /* an opset 9 training-form node with its running outputs read: kept, fed by Identity */
  g = conv_bn_graph(9, 3);
  CHECK_OK(kiln_bn_to_training(g, &e), &e);
  CHECK_OK(ir_verify(g, &e), &e);
  int old = ir_find_value(g, "bn_out1");
  CHECK(old >= 0 && g->values[old].producer >= 0 &&
        g->nodes[g->values[old].producer].op == KILN_OP_Identity);
  ir_graph_free(g);

  /* a second BN sharing the running statistics cannot get a second ".new" */
  g = conv_bn_graph(15, 1);
  {
    int y = ir_find_value(g, "t"), y2, nid;
    ir_add_value(g, "y2", &y2, &e);
    int ins[5] = {y, ir_find_value(g, "bn.weight"), ir_find_value(g, "bn.bias"),
                  ir_find_value(g, "bn.running_mean"), ir_find_value(g, "bn.running_var")};
    ir_add_node(g, KILN_OP_BatchNormalization, "bn2", ins, 5, &y2, 1, &nid, &e);
    kiln_evaluator ev = kiln_ref_evaluator();
    CHECK_OK(ir_infer(g, &ev, &e), &e);
    kiln_err e2 = {0};
    CHECK(kiln_bn_to_training(g, &e2) == KILN_ERR_INVALID);
    CHECK(strstr(e2.msg, "bn.running_mean.new") != NULL);
  }
  ir_graph_free(g);
}

/* ---- bad inputs ---- */

static void test_bad_inputs(void) {
  uint64_t seed = 1;
  kiln_err e = {0};
  /* ConvGradWeight: dY of the wrong spatial size */
  {
    kiln_graph *g = ir_graph_new();
    kiln_shape xs = kiln_shape_make(4, (int64_t[]){1, 2, 5, 5});
    kiln_shape ys = kiln_shape_make(4, (int64_t[]){1, 3, 4, 4});
    int x = add_input(g, "x", &xs, &e), dy = add_input(g, "dy", &ys, &e), dw, nid;
    ir_add_value(g, "dw", &dw, &e);
    ir_add_node(g, KILN_OP_ConvGradWeight, "cgw", (int[]){x, dy}, 2, &dw, 1, &nid, &e);
    ir_set_attr_ints(g, nid, "kernel_shape", (int64_t[]){3, 3}, 2, &e);
    ir_add_output(g, dw, &e);
    kiln_err e2 = {0};
    CHECK(ir_infer(g, NULL, &e2) == KILN_ERR_SHAPE);
    CHECK(strstr(e2.msg, "dy") != NULL && strstr(e2.msg, "cgw") != NULL);
    ir_graph_free(g);
  }
  /* BatchNormTrain: one value per channel has no unbiased variance */
  {
    kiln_tensor *in[5] = {rand_tensor(2, (int64_t[]){1, 3}, &seed, 0, 1)};
    for (int i = 1; i < 5; i++) in[i] = rand_tensor(1, (int64_t[]){3}, &seed, 0.5, 1);
    kiln_graph *g = ir_graph_new();
    int ids[5], y;
    for (int i = 0; i < 5; i++) {
      char nm[8];
      snprintf(nm, sizeof nm, "i%d", i);
      ids[i] = add_input(g, nm, &in[i]->shape, &e);
    }
    ir_add_value(g, "y", &y, &e);
    ir_add_node(g, KILN_OP_BatchNormTrain, "bnt", ids, 5, &y, 1, NULL, &e);
    ir_add_output(g, y, &e);
    kiln_err e2 = {0};
    CHECK(ir_infer(g, NULL, &e2) == KILN_ERR_SHAPE);
    CHECK(strstr(e2.msg, "per channel") != NULL);
    ir_graph_free(g);
    free_all(in, 5);
  }
  /* BatchNormGrad: dY and X disagree; scale of the wrong length */
  for (int which = 0; which < 2; which++) {
    kiln_graph *g = ir_graph_new();
    kiln_shape xs = kiln_shape_make(3, (int64_t[]){2, 3, 4});
    kiln_shape ys = kiln_shape_make(3, (int64_t[]){2, 3, which ? 4 : 5});
    kiln_shape cs = kiln_shape_make(1, (int64_t[]){3}), bad = kiln_shape_make(1, (int64_t[]){2});
    int ids[5] = {add_input(g, "x", &xs, &e), add_input(g, "s", which ? &bad : &cs, &e),
                  add_input(g, "m", &cs, &e), add_input(g, "v", &cs, &e),
                  add_input(g, "dy", &ys, &e)};
    int dx;
    ir_add_value(g, "dx", &dx, &e);
    ir_add_node(g, KILN_OP_BatchNormGrad, "bng", ids, 5, &dx, 1, NULL, &e);
    ir_add_output(g, dx, &e);
    kiln_err e2 = {0};
    CHECK(ir_infer(g, NULL, &e2) == KILN_ERR_SHAPE);
    CHECK(strstr(e2.msg, which ? "'s'" : "'dy'") != NULL);
    ir_graph_free(g);
  }
}

/* ---- JIT against the reference ---- */

typedef struct jit_case {
  const char *what;
  kiln_op op;
  int n_in, n_out;
  int rank[5];
  int64_t d[5][5];
  double lo[5], hi[5];
  tattr attrs[6];
  int n_attrs;
} jit_case;

static void check_jit(const jit_case *c) {
  uint64_t seed = 4242;
  kiln_err e = {0};
  kiln_tensor *in[5];
  for (int i = 0; i < c->n_in; i++)
    in[i] = rand_tensor(c->rank[i], c->d[i], &seed, c->lo[i], c->hi[i]);
  kiln_graph *g = build_one(c->op, 17, in, c->n_in, c->n_out, c->attrs, c->n_attrs);
  kiln_tensor *want[5] = {0}, *got[2][5] = {{0}};
  kiln_ref_ctx ctx = {.g = g};
  CHECK_OK(kiln_ref_run(g, &ctx, in, want, &e), &e);
  int threads[2] = {1, 3};
  for (int ti = 0; ti < 2; ti++) {
    kiln_graph *gj = build_one(c->op, 17, in, c->n_in, c->n_out, c->attrs, c->n_attrs);
    kiln_program *p = NULL;
    kiln_compile_opts o = {.threads = threads[ti], .cache_dir = ""};
    CHECK_OK(kiln_compile(gj, &o, &p, &e), &e);
    if (!p) continue;
    CHECK_MSG(p->n_fallback == 0, "%s: no compiled kernel", c->what);
    CHECK_OK(kiln_program_run(p, in, got[ti], false, &e), &e);
    kiln_program_free(p);
  }
  for (int o = 0; o < c->n_out; o++) {
    if (!want[o] || !got[0][o] || !got[1][o]) {
      CHECK_MSG(0, "%s: output %d missing", c->what, o);
      continue;
    }
    CHECK_MSG(!memcmp(got[0][o]->data, got[1][o]->data, kiln_tensor_nbytes(want[o])),
              "%s: output %d differs between 1 and 3 threads", c->what, o);
    int bad = 0;
    for (int64_t i = 0; i < want[o]->numel; i++) {
      double a = ((float *)got[0][o]->data)[i], b = ((float *)want[o]->data)[i];
      /* ConvGradWeight sums each image's products in float vectors (then in double) */
      double atol = c->op == KILN_OP_ConvGradWeight ? 2e-5 : 1e-6;
      double rtol = c->op == KILN_OP_ConvGradWeight ? 1e-4 : 1e-5;
      if (!(fabs(a - b) <= atol + rtol * fabs(b))) {
        if (bad++ < 3)
          fprintf(stderr, "%s: output %d [%lld]: jit %.9g, reference %.9g\n", c->what, o,
                  (long long)i, a, b);
      }
    }
    CHECK_MSG(bad == 0, "%s: output %d: %d elements differ from the reference", c->what, o, bad);
  }
  free_all(want, 5);
  free_all(got[0], 5);
  free_all(got[1], 5);
  free_all(in, c->n_in);
  ir_graph_free(g);
}

static void test_jit(void) {
  static const jit_case cases[] = {
      {"ConvGradWeight 3x3 pad 1", KILN_OP_ConvGradWeight, 2, 1, {4, 4},
       {{2, 3, 9, 11}, {2, 5, 9, 11}}, {-1, -1}, {1, 1},
       {INTS("kernel_shape", 2, 3, 3), INTS("pads", 4, 1, 1, 1, 1)}, 2},
      {"ConvGradWeight stride 2 odd asymmetric pads", KILN_OP_ConvGradWeight, 2, 1, {4, 4},
       {{2, 4, 13, 10}, {2, 3, 6, 5}}, {-1, -1}, {1, 1},
       {INTS("kernel_shape", 2, 3, 3), INTS("strides", 2, 2, 2), INTS("pads", 4, 0, 1, 1, 0)}, 3},
      {"ConvGradWeight group 2 dilation 2", KILN_OP_ConvGradWeight, 2, 1, {4, 4},
       {{3, 4, 10, 9}, {3, 6, 8, 7}}, {-1, -1}, {1, 1},
       {INTS("kernel_shape", 2, 3, 3), INT1("group", 2), INTS("dilations", 2, 2, 2),
        INTS("pads", 4, 1, 1, 1, 1)}, 4},
      {"ConvGradWeight depthwise", KILN_OP_ConvGradWeight, 2, 1, {4, 4},
       {{2, 5, 8, 8}, {2, 5, 4, 4}}, {-1, -1}, {1, 1},
       {INTS("kernel_shape", 2, 3, 3), INT1("group", 5), INTS("strides", 2, 2, 2),
        INTS("pads", 4, 1, 1, 1, 1)}, 4},
      {"ConvGradWeight 3x3 valid (X read in place)", KILN_OP_ConvGradWeight, 2, 1, {4, 4},
       {{2, 3, 7, 8}, {2, 5, 5, 6}}, {-1, -1}, {1, 1}, {INTS("kernel_shape", 2, 3, 3)}, 1},
      {"ConvGradWeight strides 3x2 dilations 2x3", KILN_OP_ConvGradWeight, 2, 1, {4, 4},
       {{2, 3, 11, 10}, {2, 4, 4, 4}}, {-1, -1}, {1, 1},
       {INTS("kernel_shape", 2, 3, 2), INTS("strides", 2, 3, 2), INTS("dilations", 2, 2, 3),
        INTS("pads", 4, 1, 0, 2, 1)}, 4},
      {"ConvGradWeight 1x1 large", KILN_OP_ConvGradWeight, 2, 1, {4, 4},
       {{4, 16, 20, 20}, {4, 24, 20, 20}}, {-1, -1}, {1, 1},
       {INTS("kernel_shape", 2, 1, 1)}, 1},
      {"ConvGradWeight 1-D", KILN_OP_ConvGradWeight, 2, 1, {3, 3},
       {{2, 3, 17}, {2, 2, 8}}, {-1, -1}, {1, 1},
       {INTS("kernel_shape", 1, 3), INTS("strides", 1, 2), INTS("pads", 2, 0, 1)}, 3},
      {"ConvGradWeight 3-D", KILN_OP_ConvGradWeight, 2, 1, {5, 5},
       {{1, 2, 5, 6, 7}, {1, 3, 5, 6, 7}}, {-1, -1}, {1, 1},
       {INTS("kernel_shape", 3, 3, 3, 3), INTS("pads", 6, 1, 1, 1, 1, 1, 1)}, 2},
      /* the channels-last path (input channels per group >= the vector width): output and
       * input-channel blocks with tails, images merged into one chunk, row chunks with a
       * tail, strides, groups, dilations, 1-D, 3-D, and a kernel large enough to shrink the
       * register block */
      {"ConvGradWeight channels-last ragged blocks", KILN_OP_ConvGradWeight, 2, 1, {4, 4},
       {{2, 40, 9, 7}, {2, 10, 9, 7}}, {-1, -1}, {1, 1},
       {INTS("kernel_shape", 2, 3, 3), INTS("pads", 4, 1, 1, 1, 1)}, 2},
      {"ConvGradWeight channels-last output super blocks", KILN_OP_ConvGradWeight, 2, 1, {4, 4},
       {{2, 64, 6, 5}, {2, 10, 6, 5}}, {-1, -1}, {1, 1},
       {INTS("kernel_shape", 2, 3, 3), INTS("pads", 4, 1, 1, 1, 1)}, 2},
      {"ConvGradWeight channels-last row chunks", KILN_OP_ConvGradWeight, 2, 1, {4, 4},
       {{1, 16, 33, 20}, {1, 5, 33, 20}}, {-1, -1}, {1, 1},
       {INTS("kernel_shape", 2, 3, 3), INTS("pads", 4, 1, 1, 1, 1)}, 2},
      {"ConvGradWeight channels-last stride 2 asymmetric pads", KILN_OP_ConvGradWeight, 2, 1,
       {4, 4}, {{3, 17, 13, 10}, {3, 9, 6, 5}}, {-1, -1}, {1, 1},
       {INTS("kernel_shape", 2, 3, 3), INTS("strides", 2, 2, 2), INTS("pads", 4, 0, 1, 1, 0)}, 3},
      {"ConvGradWeight channels-last group 2 dilation 2", KILN_OP_ConvGradWeight, 2, 1, {4, 4},
       {{2, 32, 10, 9}, {2, 12, 8, 7}}, {-1, -1}, {1, 1},
       {INTS("kernel_shape", 2, 3, 3), INT1("group", 2), INTS("dilations", 2, 2, 2),
        INTS("pads", 4, 1, 1, 1, 1)}, 4},
      {"ConvGradWeight channels-last strides 3x2 dilations 2x3", KILN_OP_ConvGradWeight, 2, 1,
       {4, 4}, {{2, 24, 11, 10}, {2, 7, 4, 4}}, {-1, -1}, {1, 1},
       {INTS("kernel_shape", 2, 3, 2), INTS("strides", 2, 3, 2), INTS("dilations", 2, 2, 3),
        INTS("pads", 4, 1, 0, 2, 1)}, 4},
      {"ConvGradWeight channels-last 1-D", KILN_OP_ConvGradWeight, 2, 1, {3, 3},
       {{3, 9, 40}, {3, 6, 19}}, {-1, -1}, {1, 1},
       {INTS("kernel_shape", 1, 5), INTS("strides", 1, 2), INTS("pads", 2, 1, 0)}, 3},
      {"ConvGradWeight channels-last 3-D", KILN_OP_ConvGradWeight, 2, 1, {5, 5},
       {{1, 8, 5, 6, 7}, {1, 3, 5, 6, 7}}, {-1, -1}, {1, 1},
       {INTS("kernel_shape", 3, 3, 3, 3), INTS("pads", 6, 1, 1, 1, 1, 1, 1)}, 2},
      {"ConvGradWeight channels-last 11x11 kernel", KILN_OP_ConvGradWeight, 2, 1, {4, 4},
       {{1, 24, 14, 14}, {1, 4, 14, 14}}, {-1, -1}, {1, 1},
       {INTS("kernel_shape", 2, 11, 11), INTS("pads", 4, 5, 5, 5, 5)}, 2},
      /* channels-last shapes whose positions all fit one chunk (float sums stored to dW
       * directly, as 8x8 transposes of taps): ragged input vectors and an output-channel tail,
       * a 1x1 kernel (no whole group of 8 taps), exactly one chunk of 8 images x 16 positions;
       * then several chunks of whole images (9 images: a tail chunk of one) and a 5x5 kernel
       * over chunks of rows (25 taps: three transposes and one tap lane by lane) */
      {"ConvGradWeight channels-last one chunk ragged", KILN_OP_ConvGradWeight, 2, 1, {4, 4},
       {{2, 20, 4, 4}, {2, 14, 4, 4}}, {-1, -1}, {1, 1},
       {INTS("kernel_shape", 2, 3, 3), INTS("pads", 4, 1, 1, 1, 1)}, 2},
      {"ConvGradWeight channels-last one chunk 1x1", KILN_OP_ConvGradWeight, 2, 1, {4, 4},
       {{4, 24, 3, 3}, {4, 13, 3, 3}}, {-1, -1}, {1, 1}, {INTS("kernel_shape", 2, 1, 1)}, 1},
      {"ConvGradWeight channels-last 8 images of 4x4", KILN_OP_ConvGradWeight, 2, 1, {4, 4},
       {{8, 16, 4, 4}, {8, 24, 4, 4}}, {-1, -1}, {1, 1},
       {INTS("kernel_shape", 2, 3, 3), INTS("pads", 4, 1, 1, 1, 1)}, 2},
      {"ConvGradWeight channels-last 9 images of 4x4", KILN_OP_ConvGradWeight, 2, 1, {4, 4},
       {{9, 16, 4, 4}, {9, 24, 4, 4}}, {-1, -1}, {1, 1},
       {INTS("kernel_shape", 2, 3, 3), INTS("pads", 4, 1, 1, 1, 1)}, 2},
      {"ConvGradWeight channels-last 5x5 row chunks", KILN_OP_ConvGradWeight, 2, 1, {4, 4},
       {{2, 19, 13, 12}, {2, 7, 13, 12}}, {-1, -1}, {1, 1},
       {INTS("kernel_shape", 2, 5, 5), INTS("pads", 4, 2, 2, 2, 2)}, 2},
      /* the output-channel path (fewer input channels per group than a vector, a vector of
       * output channels or more): a first layer, groups with padded output vectors, dilation,
       * 1-D, 3-D */
      {"ConvGradWeight output-channel 7x7 stride 2", KILN_OP_ConvGradWeight, 2, 1, {4, 4},
       {{2, 3, 23, 21}, {2, 16, 12, 11}}, {-1, -1}, {1, 1},
       {INTS("kernel_shape", 2, 7, 7), INTS("strides", 2, 2, 2), INTS("pads", 4, 3, 3, 3, 3)}, 3},
      {"ConvGradWeight output-channel group 2 dilation 2", KILN_OP_ConvGradWeight, 2, 1, {4, 4},
       {{2, 8, 10, 9}, {2, 26, 8, 7}}, {-1, -1}, {1, 1},
       {INTS("kernel_shape", 2, 3, 3), INT1("group", 2), INTS("dilations", 2, 2, 2),
        INTS("pads", 4, 1, 1, 1, 1)}, 4},
      {"ConvGradWeight output-channel 1-D", KILN_OP_ConvGradWeight, 2, 1, {3, 3},
       {{3, 2, 40}, {3, 20, 19}}, {-1, -1}, {1, 1},
       {INTS("kernel_shape", 1, 5), INTS("strides", 1, 2), INTS("pads", 2, 1, 0)}, 3},
      {"ConvGradWeight output-channel 3-D", KILN_OP_ConvGradWeight, 2, 1, {5, 5},
       {{1, 2, 5, 6, 7}, {1, 9, 5, 6, 7}}, {-1, -1}, {1, 1},
       {INTS("kernel_shape", 3, 3, 3, 3), INTS("pads", 6, 1, 1, 1, 1, 1, 1)}, 2},
      {"BatchNormTrain 4-D", KILN_OP_BatchNormTrain, 5, 5, {4, 1, 1, 1, 1},
       {{3, 5, 7, 9}, {5}, {5}, {5}, {5}}, {-2, 0.5, -1, -1, 0.5}, {3, 1.5, 1, 1, 2},
       {FLT("momentum", 0.9), FLT("epsilon", 1e-3)}, 2},
      {"BatchNormTrain 2-D", KILN_OP_BatchNormTrain, 5, 5, {2, 1, 1, 1, 1},
       {{37, 6}, {6}, {6}, {6}, {6}}, {-2, 0.5, -1, -1, 0.5}, {3, 1.5, 1, 1, 2},
       {{0}}, 0},
      {"BatchNormTrain Y only", KILN_OP_BatchNormTrain, 5, 1, {3, 1, 1, 1, 1},
       {{2, 4, 33}, {4}, {4}, {4}, {4}}, {-2, 0.5, -1, -1, 0.5}, {3, 1.5, 1, 1, 2},
       {INT1("unbiased", 0)}, 1},
      {"BatchNormGrad 4-D", KILN_OP_BatchNormGrad, 5, 3, {4, 1, 1, 1, 4},
       {{3, 5, 7, 9}, {5}, {5}, {5}, {3, 5, 7, 9}}, {-2, 0.5, -0.5, 0.5, -1},
       {3, 1.5, 0.5, 2, 1}, {{0}}, 0},
      {"BatchNormGrad 2-D, dX only", KILN_OP_BatchNormGrad, 5, 1, {2, 1, 1, 1, 2},
       {{37, 6}, {6}, {6}, {6}, {37, 6}}, {-2, 0.5, -0.5, 0.5, -1}, {3, 1.5, 0.5, 2, 1},
       {{0}}, 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_jit(&cases[i]);
}

/* Conv -> BatchNormTrain -> Tanh and its backward, compiled as one program: equal to the
 * reference run of the same graph, and bitwise equal at 1 and 3 threads.  Ops without an
 * emitter (if any) fall back to their reference kernels. */
static kiln_graph *train_graph(void) {
  kiln_err e = {0};
  kiln_graph *g = conv_bn_graph(15, 1);
  CHECK_OK(kiln_bn_to_training(g, &e), &e);
  int wrt[4] = {g->inputs[0], g->inputs[1], g->inputs[2], g->inputs[3]}, grads[4];
  kiln_autodiff_opts o = {.loss = g->outputs[0], .wrt = wrt, .n_wrt = 4, .seed = -1};
  CHECK_OK(kiln_autodiff(g, &o, grads, &e), &e);
  for (int i = 0; i < 4; i++) ir_add_output(g, grads[i], &e);
  kiln_evaluator ev = kiln_ref_evaluator();
  CHECK_OK(ir_toposort(g, &e), &e);
  CHECK_OK(ir_infer(g, &ev, &e), &e);
  return g;
}

static void test_jit_backward(void) {
  kiln_err e = {0};
  kiln_graph *g = train_graph();
  uint64_t seed = 3;
  kiln_tensor *in[4];
  for (int i = 0; i < 4; i++) {
    const kiln_value *v = &g->values[g->inputs[i]];
    in[i] = rand_tensor(v->shape.rank, v->shape.d, &seed, i == 2 ? 0.5 : -1, 1);
  }
  int n_out = g->n_outputs;
  CHECK(n_out == 7);
  kiln_tensor *want[8] = {0}, *got[2][8] = {{0}};
  kiln_ref_ctx ctx = {.g = g};
  CHECK_OK(kiln_ref_run(g, &ctx, in, want, &e), &e);
  for (int ti = 0; ti < 2; ti++) {
    kiln_program *p = NULL;
    kiln_compile_opts o = {.threads = ti ? 3 : 1, .cache_dir = "", .allow_fallback = true};
    CHECK_OK(kiln_compile(train_graph(), &o, &p, &e), &e);
    if (!p) continue;
    if (getenv("KILN_TEST_VERBOSE"))
      for (int64_t s = 0; s < p->n_steps; s++)
        fprintf(stderr, "step %s%s\n", p->steps[s].label, p->steps[s].fn ? "" : " (reference)");
    CHECK_OK(kiln_program_run(p, in, got[ti], false, &e), &e);
    kiln_program_free(p);
  }
  for (int o = 0; o < n_out; o++) {
    if (!want[o] || !got[0][o] || !got[1][o]) {
      CHECK_MSG(0, "output %d missing", o);
      continue;
    }
    CHECK_MSG(!memcmp(got[0][o]->data, got[1][o]->data, kiln_tensor_nbytes(want[o])),
              "output %d differs between 1 and 3 threads", o);
    int bad = 0;
    for (int64_t i = 0; i < want[o]->numel; i++) {
      double a = ((float *)got[0][o]->data)[i], b = ((float *)want[o]->data)[i];
      if (!(fabs(a - b) <= 1e-5 + 1e-4 * fabs(b)) && bad++ < 3)
        fprintf(stderr, "backward output %d [%lld]: jit %.9g, reference %.9g\n", o,
                (long long)i, a, b);
    }
    CHECK_MSG(bad == 0, "output %d: %d elements differ from the reference", o, bad);
  }
  free_all(want, 8);
  free_all(got[0], 8);
  free_all(got[1], 8);
  free_all(in, 4);
  ir_graph_free(g);
}

int main(void) {
  RUN(test_conv_grad);
  RUN(test_bn_train_grad);
  RUN(test_bn_inference_grad);
  RUN(test_bn_per_activation_grad);
  RUN(test_bn_stat_loss_refused);
  RUN(test_bn_matches_pytorch);
  RUN(test_bn_to_training);
  RUN(test_bad_inputs);
  RUN(test_jit);
  RUN(test_jit_backward);
  TEST_MAIN_END();
}
