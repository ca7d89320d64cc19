/* test_ops_nn.c — Conv, ConvTranspose, pools, BatchNormalization, InstanceNormalization and
 * LRN on hand-built graphs with hand-computed results, plus bad inputs that must be refused. */
#include "ir/graph.h"
#include "ir/ops/nn_window.h"
#include "runtime/ref.h"
#include "test.h"

/* ---- a tiny graph builder: X is the only graph input, other operands are constants ---- */

typedef struct tcase {
  kiln_graph *g;
  int node;
  int x;      /* the graph input */
  kiln_err e;
} tcase;

static kiln_shape shp(int rank, const int64_t *d) { return kiln_shape_make(rank, d); }
/* Number of int64 values in a macro argument list. */
#define NARGS(...) ((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)))
#define SHAPE(...) shp(NARGS(__VA_ARGS__), (int64_t[]){__VA_ARGS__})

static kiln_tensor *tensor(kiln_shape s, const float *data) {
  kiln_err e = {0};
  kiln_tensor *t = NULL;
  if (kiln_tensor_new(KILN_F32, &s, &t, &e)) return NULL;
  for (int64_t i = 0; i < t->numel; i++) ((float *)t->data)[i] = data ? data[i] : (float)i;
  return t;
}

/* Starts a graph whose input "X" has shape xs. */
static void tc_begin(tcase *c, kiln_shape xs) {
  memset(c, 0, sizeof *c);
  c->g = ir_graph_new();
  if (!c->g) {
    kiln_errf(&c->e, KILN_ERR_NOMEM, "out of memory");
    return;
  }
  if (ir_add_value(c->g, "X", &c->x, &c->e)) return;
  c->g->values[c->x].dtype = KILN_F32;
  c->g->values[c->x].shape = xs;
  c->g->values[c->x].typed = true;
  ir_add_input(c->g, c->x, &c->e);
}

/* A constant operand (data NULL: 0, 1, 2, ...). */
static int tc_const(tcase *c, const char *name, kiln_shape s, const float *data) {
  int id = -1;
  if (c->e.code) return -1;
  kiln_tensor *t = tensor(s, data);
  if (!t)
    kiln_errf(&c->e, KILN_ERR_NOMEM, "out of memory");
  else
    ir_add_const(c->g, name, t, true, &id, &c->e);
  return id;
}

/* Adds the op node reading X then `consts` (-1 = omitted), with n_out outputs "Y0".."Yk";
 * each output is a graph output. */
static void tc_node(tcase *c, kiln_op op, const int *consts, int n_consts, int n_out) {
  int in[8], out[8];
  c->node = -1;
  if (c->e.code) return;
  in[0] = c->x;
  for (int i = 0; i < n_consts; i++) in[1 + i] = consts[i];
  for (int o = 0; o < n_out; o++) {
    char nm[16];
    snprintf(nm, sizeof nm, "Y%d", o);
    if (ir_add_value(c->g, nm, &out[o], &c->e)) return;
  }
  if (ir_add_node(c->g, op, "op", in, 1 + n_consts, out, n_out, &c->node, &c->e)) return;
  for (int o = 0; o < n_out; o++) ir_add_output(c->g, out[o], &c->e);
}

static void tc_ints(tcase *c, const char *name, int n, const int64_t *v) {
  if (!c->e.code) ir_set_attr_ints(c->g, c->node, name, v, n, &c->e);
}
#define INTS(c, name, ...)                                                                         \
  tc_ints(c, name, NARGS(__VA_ARGS__), (int64_t[]){__VA_ARGS__})

/* Verifies and infers; returns the first error code. */
static kiln_code tc_infer(tcase *c) {
  if (c->e.code) return c->e.code;
  KILN_TRY(ir_toposort(c->g, &c->e));
  KILN_TRY(ir_verify(c->g, &c->e));
  kiln_evaluator ev = kiln_ref_evaluator();
  return ir_infer(c->g, &ev, &c->e);
}

/* Infers and runs with X = x (x freed); outputs land in outs[]. */
static kiln_code tc_run(tcase *c, kiln_tensor *x, bool training, kiln_tensor **outs) {
  kiln_code rc = x ? tc_infer(c) : kiln_errf(&c->e, KILN_ERR_NOMEM, "out of memory");
  if (!rc) {
    kiln_ref_ctx ctx = {.g = c->g, .training = training};
    rc = kiln_ref_run(c->g, &ctx, &x, outs, &c->e);
  }
  kiln_tensor_free(x);
  return rc;
}

static void tc_end(tcase *c, kiln_tensor **outs, int n_out) {
  for (int o = 0; o < n_out; o++) kiln_tensor_free(outs[o]);
  ir_graph_free(c->g);
}

static const kiln_shape *out_shape(tcase *c, int o) {
  return &c->g->values[c->g->outputs[o]].shape;
}

static bool shape_is(const kiln_shape *s, kiln_shape want) { return kiln_shape_eq(s, &want); }

static void check_data(const kiln_tensor *t, const float *want, int64_t n, double tol) {
  CHECK(t != NULL);
  if (!t) return;
  CHECK(t->numel == n);
  for (int64_t i = 0; i < n && i < t->numel; i++)
    CHECK_CLOSE(((float *)t->data)[i], want[i], tol, tol);
}

static const float ones[64] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                               1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                               1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};

/* ---- Conv ---- */

static void test_conv_basic_padding(void) {
  /* ONNX's basic_conv: 5x5 ramp, 3x3 ones kernel, with and without pads of 1. */
  for (int padded = 0; padded < 2; padded++) {
    tcase c;
    kiln_tensor *y[1] = {0};
    tc_begin(&c, SHAPE(1, 1, 5, 5));
    int w = tc_const(&c, "W", SHAPE(1, 1, 3, 3), ones);
    tc_node(&c, KILN_OP_Conv, (int[]){w}, 1, 1);
    INTS(&c, "kernel_shape", 3, 3);
    if (padded) INTS(&c, "pads", 1, 1, 1, 1);
    CHECK_OK(tc_run(&c, tensor(SHAPE(1, 1, 5, 5), NULL), false, y), &c.e);
    if (padded) {
      static const float want[] = {12, 21, 27, 33, 24, 33, 54, 63, 72, 51, 63, 99, 108,
                                   117, 81, 93, 144, 153, 162, 111, 72, 111, 117, 123, 84};
      CHECK(shape_is(out_shape(&c, 0), SHAPE(1, 1, 5, 5)));
      check_data(y[0], want, 25, 1e-6);
    } else {
      static const float want[] = {54, 63, 72, 99, 108, 117, 144, 153, 162};
      CHECK(shape_is(out_shape(&c, 0), SHAPE(1, 1, 3, 3)));
      check_data(y[0], want, 9, 1e-6);
    }
    tc_end(&c, y, 1);
  }
}

static void test_conv_strides_asymmetric(void) {
  /* 7x5 ramp, 3x3 ones, strides 2: pads 1 all round, then asymmetric pads (1,0,1,0). */
  for (int asym = 0; asym < 2; asym++) {
    tcase c;
    kiln_tensor *y[1] = {0};
    tc_begin(&c, SHAPE(1, 1, 7, 5));
    int w = tc_const(&c, "W", SHAPE(1, 1, 3, 3), ones);
    tc_node(&c, KILN_OP_Conv, (int[]){w}, 1, 1);
    INTS(&c, "strides", 2, 2);
    if (asym)
      INTS(&c, "pads", 1, 0, 1, 0);
    else
      INTS(&c, "pads", 1, 1, 1, 1);
    CHECK_OK(tc_run(&c, tensor(SHAPE(1, 1, 7, 5), NULL), false, y), &c.e);
    if (asym) {
      static const float want[] = {21, 33, 99, 117, 189, 207, 171, 183};
      CHECK(shape_is(out_shape(&c, 0), SHAPE(1, 1, 4, 2)));
      check_data(y[0], want, 8, 1e-6);
    } else {
      static const float want[] = {12, 27, 24, 63, 108, 81, 123, 198, 141, 112, 177, 124};
      CHECK(shape_is(out_shape(&c, 0), SHAPE(1, 1, 4, 3)));
      check_data(y[0], want, 12, 1e-6);
    }
    tc_end(&c, y, 1);
  }
}

static void test_conv_groups_bias(void) {
  /* x (1,4,1,2); group 2; W (4,2,1,1); each output channel mixes its group's 2 inputs. */
  tcase c;
  kiln_tensor *y[1] = {0};
  tc_begin(&c, SHAPE(1, 4, 1, 2));
  static const float wv[] = {1, 0, 0, 1, 1, 1, 2, -1};
  static const float bv[] = {0, 10, 100, 1000};
  int w = tc_const(&c, "W", SHAPE(4, 2, 1, 1), wv);
  int b = tc_const(&c, "B", SHAPE(4), bv);
  tc_node(&c, KILN_OP_Conv, (int[]){w, b}, 2, 1);
  ir_set_attr_int(c.g, c.node, "group", 2, &c.e);
  /* x channels: c0 = [0,1], c1 = [2,3], c2 = [4,5], c3 = [6,7] */
  CHECK_OK(tc_run(&c, tensor(SHAPE(1, 4, 1, 2), NULL), false, y), &c.e);
  static const float want[] = {0, 1,              /* c0 */
                               12, 13,            /* c1 + 10 */
                               110, 112,          /* c2 + c3 + 100 */
                               1002, 1003};       /* 2*c2 - c3 + 1000 */
  check_data(y[0], want, 8, 1e-6);
  tc_end(&c, y, 1);
}

static void test_conv1d_stride_dilation(void) {
  /* x = 1..8, w = [1, 10], dilation 2, stride 3: taps (3o, 3o+2); out = (8-3)/3+1 = 2. */
  tcase c;
  kiln_tensor *y[1] = {0};
  tc_begin(&c, SHAPE(1, 1, 8));
  int w = tc_const(&c, "W", SHAPE(1, 1, 2), (float[]){1, 10});
  tc_node(&c, KILN_OP_Conv, (int[]){w}, 1, 1);
  INTS(&c, "dilations", 2);
  INTS(&c, "strides", 3);
  static const float xv[] = {1, 2, 3, 4, 5, 6, 7, 8};
  CHECK_OK(tc_run(&c, tensor(SHAPE(1, 1, 8), xv), false, y), &c.e);
  CHECK(shape_is(out_shape(&c, 0), SHAPE(1, 1, 2)));
  check_data(y[0], (float[]){31, 64}, 2, 1e-6);
  tc_end(&c, y, 1);
}

static void test_conv_same_padding(void) {
  /* 1-D x = 1..4, kernel [1,1]: the one unit of padding goes at the end (SAME_UPPER) or at
   * the beginning (SAME_LOWER). */
  static const char *modes[] = {"SAME_UPPER", "SAME_LOWER", "VALID"};
  static const float want[3][4] = {{3, 5, 7, 4}, {1, 3, 5, 7}, {3, 5, 7}};
  for (int m = 0; m < 3; m++) {
    tcase c;
    kiln_tensor *y[1] = {0};
    tc_begin(&c, SHAPE(1, 1, 4));
    int w = tc_const(&c, "W", SHAPE(1, 1, 2), ones);
    tc_node(&c, KILN_OP_Conv, (int[]){w}, 1, 1);
    ir_set_attr_str(c.g, c.node, "auto_pad", modes[m], &c.e);
    INTS(&c, "pads", 5, 5); /* ignored under auto_pad */
    CHECK_OK(tc_run(&c, tensor(SHAPE(1, 1, 4), (float[]){1, 2, 3, 4}), false, y), &c.e);
    check_data(y[0], want[m], m == 2 ? 3 : 4, 1e-6);
    tc_end(&c, y, 1);
  }
  /* ONNX's conv_with_autopad_same: 5x5 ramp, 3x3 ones, strides 2, SAME_LOWER. */
  tcase c;
  kiln_tensor *y[1] = {0};
  tc_begin(&c, SHAPE(1, 1, 5, 5));
  int w = tc_const(&c, "W", SHAPE(1, 1, 3, 3), ones);
  tc_node(&c, KILN_OP_Conv, (int[]){w}, 1, 1);
  ir_set_attr_str(c.g, c.node, "auto_pad", "SAME_LOWER", &c.e);
  INTS(&c, "strides", 2, 2);
  CHECK_OK(tc_run(&c, tensor(SHAPE(1, 1, 5, 5), NULL), false, y), &c.e);
  static const float want2[] = {12, 27, 24, 63, 108, 81, 72, 117, 84};
  check_data(y[0], want2, 9, 1e-6);
  tc_end(&c, y, 1);
}

static void test_conv3d(void) {
  /* (1,1,2,3,3) ramp, 2x2x2 ones kernel, pads 0 -> (1,1,1,2,2): sums of 2x2x2 blocks. */
  tcase c;
  kiln_tensor *y[1] = {0};
  tc_begin(&c, SHAPE(1, 1, 2, 3, 3));
  int w = tc_const(&c, "W", SHAPE(1, 1, 2, 2, 2), ones);
  tc_node(&c, KILN_OP_Conv, (int[]){w}, 1, 1);
  CHECK_OK(tc_run(&c, tensor(SHAPE(1, 1, 2, 3, 3), NULL), false, y), &c.e);
  CHECK(shape_is(out_shape(&c, 0), SHAPE(1, 1, 1, 2, 2)));
  /* a 2x2 block at (h,w) of one plane sums to 4*(3h+w) + 8; the second plane adds 4*9 */
  static const float want[] = {2 * 8 + 36, 2 * 12 + 36, 2 * 20 + 36, 2 * 24 + 36};
  check_data(y[0], want, 4, 1e-6);
  tc_end(&c, y, 1);
}

static void test_conv_macs(void) {
  /* ResNet's stem: 3x224x224 -> 64x112x112, 7x7 stride 2 pad 3. */
  tcase c;
  tc_begin(&c, SHAPE(1, 3, 224, 224));
  int w = tc_const(&c, "W", SHAPE(64, 3, 7, 7), NULL);
  tc_node(&c, KILN_OP_Conv, (int[]){w}, 1, 1);
  INTS(&c, "strides", 2, 2);
  INTS(&c, "pads", 3, 3, 3, 3);
  CHECK_OK(tc_infer(&c), &c.e);
  CHECK(shape_is(out_shape(&c, 0), SHAPE(1, 64, 112, 112)));
  const kiln_node *n = &c.g->nodes[0];
  CHECK(n->def->macs(c.g, n) == 64LL * 112 * 112 * 3 * 49);
  tc_end(&c, NULL, 0);
  /* Depthwise: group = channels, so C_in / group = 1. */
  tc_begin(&c, SHAPE(2, 8, 10, 10));
  w = tc_const(&c, "W", SHAPE(8, 1, 3, 3), NULL);
  tc_node(&c, KILN_OP_Conv, (int[]){w}, 1, 1);
  ir_set_attr_int(c.g, c.node, "group", 8, &c.e);
  INTS(&c, "pads", 1, 1, 1, 1);
  CHECK_OK(tc_infer(&c), &c.e);
  n = &c.g->nodes[0];
  CHECK(n->def->macs(c.g, n) == 2LL * 8 * 100 * 9);
  tc_end(&c, NULL, 0);
}

static void test_conv_errors(void) {
  tcase c;
  /* 4 channels, W takes 3 per group x 2 groups = 6. */
  tc_begin(&c, SHAPE(1, 4, 5, 5));
  int w = tc_const(&c, "W", SHAPE(2, 3, 1, 1), NULL);
  tc_node(&c, KILN_OP_Conv, (int[]){w}, 1, 1);
  ir_set_attr_int(c.g, c.node, "group", 2, &c.e);
  CHECK(tc_infer(&c) == KILN_ERR_SHAPE);
  CHECK_MSG(strstr(c.e.msg, "channels") && strstr(c.e.msg, "Conv node 'op'"), "%s", c.e.msg);
  tc_end(&c, NULL, 0);
  /* Output channels not divisible by group. */
  tc_begin(&c, SHAPE(1, 4, 5, 5));
  w = tc_const(&c, "W", SHAPE(3, 2, 1, 1), NULL);
  tc_node(&c, KILN_OP_Conv, (int[]){w}, 1, 1);
  ir_set_attr_int(c.g, c.node, "group", 2, &c.e);
  CHECK(tc_infer(&c) == KILN_ERR_SHAPE);
  tc_end(&c, NULL, 0);
  /* 3x3 kernel over a 2x2 input padded by (0, 0) / dilated 5x5 over 4x4 padded by 0. */
  tc_begin(&c, SHAPE(1, 1, 2, 2));
  w = tc_const(&c, "W", SHAPE(1, 1, 3, 3), NULL);
  tc_node(&c, KILN_OP_Conv, (int[]){w}, 1, 1);
  CHECK(tc_infer(&c) == KILN_ERR_SHAPE);
  CHECK_MSG(strstr(c.e.msg, "kernel extent 3"), "%s", c.e.msg);
  tc_end(&c, NULL, 0);
  tc_begin(&c, SHAPE(1, 1, 4, 4));
  w = tc_const(&c, "W", SHAPE(1, 1, 3, 3), NULL);
  tc_node(&c, KILN_OP_Conv, (int[]){w}, 1, 1);
  INTS(&c, "dilations", 2, 2);
  CHECK(tc_infer(&c) == KILN_ERR_SHAPE);
  tc_end(&c, NULL, 0);
  /* Bias of the wrong length; kernel_shape disagreeing with W; pads of the wrong length;
   * W of the wrong rank; an unknown auto_pad. */
  for (int k = 0; k < 5; k++) {
    tc_begin(&c, SHAPE(1, 2, 4, 4));
    w = tc_const(&c, "W", k == 3 ? SHAPE(3, 2, 3) : SHAPE(3, 2, 3, 3), NULL);
    int b = tc_const(&c, "B", SHAPE(k == 0 ? 2 : 3), NULL);
    tc_node(&c, KILN_OP_Conv, (int[]){w, b}, 2, 1);
    if (k == 1) INTS(&c, "kernel_shape", 3, 2);
    if (k == 2) INTS(&c, "pads", 1, 1);
    if (k == 4) ir_set_attr_str(c.g, c.node, "auto_pad", "SAME", &c.e);
    kiln_code rc = tc_infer(&c);
    CHECK_MSG(rc == KILN_ERR_SHAPE || (k == 4 && rc == KILN_ERR_INVALID), "case %d: %s", k,
              c.e.msg);
    tc_end(&c, NULL, 0);
  }
}

/* ---- ConvTranspose ---- */

static void test_convtranspose_basic(void) {
  /* ONNX's convtranspose: 3x3 ramp, W ones (1,2,3,3) -> (1,2,5,5). */
  tcase c;
  kiln_tensor *y[1] = {0};
  tc_begin(&c, SHAPE(1, 1, 3, 3));
  int w = tc_const(&c, "W", SHAPE(1, 2, 3, 3), ones);
  tc_node(&c, KILN_OP_ConvTranspose, (int[]){w}, 1, 1);
  CHECK_OK(tc_run(&c, tensor(SHAPE(1, 1, 3, 3), NULL), false, y), &c.e);
  CHECK(shape_is(out_shape(&c, 0), SHAPE(1, 2, 5, 5)));
  static const float plane[] = {0, 1,  3,  3,  2,  3, 8,  15, 12, 7,  9,  21, 36,
                                27, 15, 9, 20, 33, 24, 13, 6, 13, 21, 15, 8};
  float want[50];
  for (int i = 0; i < 50; i++) want[i] = plane[i % 25];
  check_data(y[0], want, 50, 1e-6);
  const kiln_node *n = &c.g->nodes[0];
  CHECK(n->def->macs(c.g, n) == 9LL * 2 * 9);
  tc_end(&c, y, 1);
}

static void test_convtranspose_pads_shapes(void) {
  /* 1-D x = [1,2,3], W ones (1,1,3), stride 2: full result = [1,1,3,2,5,3,3] (length 7). */
  static const float full[] = {1, 1, 3, 2, 5, 3, 3};
  struct {
    const char *auto_pad;
    int64_t pads[2], out_shape, out_pad;
    int64_t len, first; /* expected length, offset into `full` (-1: one zero first) */
  } cases[] = {
      {"NOTSET", {0, 0}, 0, 0, 7, 0},
      {"NOTSET", {1, 2}, 0, 0, 4, 1},
      {"SAME_UPPER", {0, 0}, 0, 0, 6, 0}, /* in*stride = 6, the odd unit cropped at the end */
      {"SAME_LOWER", {0, 0}, 0, 0, 6, 1},
      {"NOTSET", {0, 0}, 5, 0, 5, 1},     /* output_shape: total 2 -> pads (1, 1) */
      {"NOTSET", {0, 0}, 0, 1, 8, 0},     /* output_padding adds a zero at the end */
  };
  for (int k = 0; k < (int)(sizeof cases / sizeof cases[0]); k++) {
    tcase c;
    kiln_tensor *y[1] = {0};
    tc_begin(&c, SHAPE(1, 1, 3));
    int w = tc_const(&c, "W", SHAPE(1, 1, 3), ones);
    tc_node(&c, KILN_OP_ConvTranspose, (int[]){w}, 1, 1);
    INTS(&c, "strides", 2);
    ir_set_attr_str(c.g, c.node, "auto_pad", cases[k].auto_pad, &c.e);
    INTS(&c, "pads", cases[k].pads[0], cases[k].pads[1]);
    if (cases[k].out_shape) INTS(&c, "output_shape", cases[k].out_shape);
    if (cases[k].out_pad) INTS(&c, "output_padding", cases[k].out_pad);
    CHECK_OK(tc_run(&c, tensor(SHAPE(1, 1, 3), (float[]){1, 2, 3}), false, y), &c.e);
    CHECK_MSG(out_shape(&c, 0)->d[2] == cases[k].len, "case %d: length %lld", k,
              (long long)out_shape(&c, 0)->d[2]);
    float want[8];
    for (int i = 0; i < cases[k].len; i++) {
      int j = i + (int)cases[k].first;
      want[i] = j >= 0 && j < 7 ? full[j] : 0;
    }
    check_data(y[0], want, cases[k].len, 1e-6);
    tc_end(&c, y, 1);
  }
}

static void test_convtranspose_groups_bias(void) {
  /* x (1,2,2): channel 0 = [1,2], channel 1 = [3,4]; group 2; W (2,1,2): [1,1], [1,-1];
   * bias [0.5, -0.5]. */
  tcase c;
  kiln_tensor *y[1] = {0};
  tc_begin(&c, SHAPE(1, 2, 2));
  int w = tc_const(&c, "W", SHAPE(2, 1, 2), (float[]){1, 1, 1, -1});
  int b = tc_const(&c, "B", SHAPE(2), (float[]){0.5f, -0.5f});
  tc_node(&c, KILN_OP_ConvTranspose, (int[]){w, b}, 2, 1);
  ir_set_attr_int(c.g, c.node, "group", 2, &c.e);
  CHECK_OK(tc_run(&c, tensor(SHAPE(1, 2, 2), (float[]){1, 2, 3, 4}), false, y), &c.e);
  CHECK(shape_is(out_shape(&c, 0), SHAPE(1, 2, 3)));
  static const float want[] = {1.5f, 3.5f, 2.5f, 2.5f, 0.5f, -4.5f};
  check_data(y[0], want, 6, 1e-6);
  tc_end(&c, y, 1);
  /* Channel mismatch: W's first dim must be the input's channels. */
  tc_begin(&c, SHAPE(1, 3, 2));
  w = tc_const(&c, "W", SHAPE(2, 1, 2), NULL);
  tc_node(&c, KILN_OP_ConvTranspose, (int[]){w}, 1, 1);
  CHECK(tc_infer(&c) == KILN_ERR_SHAPE);
  CHECK_MSG(strstr(c.e.msg, "channels"), "%s", c.e.msg);
  tc_end(&c, NULL, 0);
}

/* ---- pools ---- */

static void test_maxpool_ceil_indices(void) {
  /* ONNX's maxpool_2d_ceil on two channels of 1..16 (4x4): k 3, strides 2, ceil_mode. */
  for (int order = 0; order < 2; order++) {
    tcase c;
    kiln_tensor *y[2] = {0};
    tc_begin(&c, SHAPE(1, 2, 4, 4));
    tc_node(&c, KILN_OP_MaxPool, NULL, 0, 2);
    INTS(&c, "kernel_shape", 3, 3);
    INTS(&c, "strides", 2, 2);
    ir_set_attr_int(c.g, c.node, "ceil_mode", 1, &c.e);
    ir_set_attr_int(c.g, c.node, "storage_order", order, &c.e);
    float xv[32];
    for (int i = 0; i < 32; i++) xv[i] = (float)(i % 16 + 1) * (i < 16 ? 1.0f : 2.0f);
    CHECK_OK(tc_run(&c, tensor(SHAPE(1, 2, 4, 4), xv), false, y), &c.e);
    CHECK(shape_is(out_shape(&c, 0), SHAPE(1, 2, 2, 2)));
    CHECK(c.g->values[c.g->outputs[1]].dtype == KILN_I64);
    static const float want[] = {11, 12, 15, 16, 22, 24, 30, 32};
    check_data(y[0], want, 8, 0);
    /* Flattened over the whole input; storage_order 1 makes (h, w) column-major. */
    static const int64_t idx[2][8] = {{10, 11, 14, 15, 26, 27, 30, 31},
                                      {10, 14, 11, 15, 26, 30, 27, 31}};
    if (y[1])
      for (int i = 0; i < 8; i++) CHECK(((int64_t *)y[1]->data)[i] == idx[order][i]);
    tc_end(&c, y, 2);
  }
}

static void test_maxpool_dilation_pads(void) {
  /* ONNX's maxpool_2d_dilations: 1..16 (4x4), k 2, dilation 2 -> [[11,12],[15,16]]. */
  tcase c;
  kiln_tensor *y[1] = {0};
  tc_begin(&c, SHAPE(1, 1, 4, 4));
  tc_node(&c, KILN_OP_MaxPool, NULL, 0, 1);
  INTS(&c, "kernel_shape", 2, 2);
  INTS(&c, "dilations", 2, 2);
  float xv[16];
  for (int i = 0; i < 16; i++) xv[i] = (float)(i + 1);
  CHECK_OK(tc_run(&c, tensor(SHAPE(1, 1, 4, 4), xv), false, y), &c.e);
  check_data(y[0], (float[]){11, 12, 15, 16}, 4, 0);
  tc_end(&c, y, 1);
  /* Negative values with padding: the padding never wins the max. */
  kiln_tensor *y2[2] = {0};
  tc_begin(&c, SHAPE(1, 1, 3));
  tc_node(&c, KILN_OP_MaxPool, NULL, 0, 2);
  INTS(&c, "kernel_shape", 2);
  INTS(&c, "pads", 1, 1);
  CHECK_OK(tc_run(&c, tensor(SHAPE(1, 1, 3), (float[]){-3, -1, -2}), false, y2), &c.e);
  check_data(y2[0], (float[]){-3, -1, -1, -2}, 4, 0);
  if (y2[1])
    for (int i = 0; i < 4; i++) CHECK((((int64_t *)y2[1]->data)[i] == (int64_t[]){0, 1, 1, 2}[i]));
  tc_end(&c, y2, 2);
}

static void test_pool_output_sizes(void) {
  /* ceil_mode drops a last window that would start in the end padding (in 4, k 2, s 2,
   * pads (0,1): ceil(3/2)+1 = 3 windows, the third starting at 4 = in -> 2). */
  struct {
    int64_t in, k, s, pb, pe, ceil, want;
    const char *auto_pad;
  } cases[] = {
      {4, 2, 2, 0, 1, 1, 2, "NOTSET"}, {5, 2, 2, 0, 0, 1, 3, "NOTSET"},
      {5, 2, 2, 0, 0, 0, 2, "NOTSET"}, {5, 3, 2, 0, 0, 0, 3, "SAME_UPPER"},
      {7, 3, 3, 0, 0, 0, 2, "VALID"},  {1, 1, 4, 0, 0, 1, 1, "NOTSET"},
  };
  for (int k = 0; k < (int)(sizeof cases / sizeof cases[0]); k++) {
    tcase c;
    tc_begin(&c, SHAPE(1, 1, cases[k].in));
    tc_node(&c, KILN_OP_AveragePool, NULL, 0, 1);
    INTS(&c, "kernel_shape", cases[k].k);
    INTS(&c, "strides", cases[k].s);
    INTS(&c, "pads", cases[k].pb, cases[k].pe);
    ir_set_attr_int(c.g, c.node, "ceil_mode", cases[k].ceil, &c.e);
    ir_set_attr_str(c.g, c.node, "auto_pad", cases[k].auto_pad, &c.e);
    CHECK_OK(tc_infer(&c), &c.e);
    CHECK_MSG(out_shape(&c, 0)->d[2] == cases[k].want, "case %d: %lld", k,
              (long long)out_shape(&c, 0)->d[2]);
    tc_end(&c, NULL, 0);
  }
}

static void test_avgpool(void) {
  /* x = [1,2,3], k 3, pads (1,1): padding excluded -> [1.5, 2, 2.5]; included -> [1, 2, 5/3]. */
  for (int include = 0; include < 2; include++) {
    tcase c;
    kiln_tensor *y[1] = {0};
    tc_begin(&c, SHAPE(1, 1, 3));
    tc_node(&c, KILN_OP_AveragePool, NULL, 0, 1);
    INTS(&c, "kernel_shape", 3);
    INTS(&c, "pads", 1, 1);
    ir_set_attr_int(c.g, c.node, "count_include_pad", include, &c.e);
    CHECK_OK(tc_run(&c, tensor(SHAPE(1, 1, 3), (float[]){1, 2, 3}), false, y), &c.e);
    if (include)
      check_data(y[0], (float[]){1, 2, 5.0f / 3}, 3, 1e-6);
    else
      check_data(y[0], (float[]){1.5f, 2, 2.5f}, 3, 1e-6);
    tc_end(&c, y, 1);
  }
  /* ONNX's averagepool_2d_ceil: 1..16 (4x4), k 3, strides 2, ceil_mode. */
  tcase c;
  kiln_tensor *y[1] = {0};
  tc_begin(&c, SHAPE(1, 1, 4, 4));
  tc_node(&c, KILN_OP_AveragePool, NULL, 0, 1);
  INTS(&c, "kernel_shape", 3, 3);
  INTS(&c, "strides", 2, 2);
  ir_set_attr_int(c.g, c.node, "ceil_mode", 1, &c.e);
  float xv[16];
  for (int i = 0; i < 16; i++) xv[i] = (float)(i + 1);
  CHECK_OK(tc_run(&c, tensor(SHAPE(1, 1, 4, 4), xv), false, y), &c.e);
  check_data(y[0], (float[]){6, 7.5f, 12, 13.5f}, 4, 1e-6);
  tc_end(&c, y, 1);
  /* 3-D: (1,1,2,2,2) ramp, k 2x2x2 -> mean 3.5. */
  tc_begin(&c, SHAPE(1, 1, 2, 2, 2));
  tc_node(&c, KILN_OP_AveragePool, NULL, 0, 1);
  INTS(&c, "kernel_shape", 2, 2, 2);
  CHECK_OK(tc_run(&c, tensor(SHAPE(1, 1, 2, 2, 2), NULL), false, y), &c.e);
  check_data(y[0], (float[]){3.5f}, 1, 1e-6);
  tc_end(&c, y, 1);
}

static void test_global_pools(void) {
  for (int mx = 0; mx < 2; mx++) {
    tcase c;
    kiln_tensor *y[1] = {0};
    tc_begin(&c, SHAPE(2, 2, 1, 3));
    tc_node(&c, mx ? KILN_OP_GlobalMaxPool : KILN_OP_GlobalAveragePool, NULL, 0, 1);
    static const float xv[] = {1, 2, 6, -1, -2, -3, 0, 0, 3, 5, 5, 5};
    CHECK_OK(tc_run(&c, tensor(SHAPE(2, 2, 1, 3), xv), false, y), &c.e);
    CHECK(shape_is(out_shape(&c, 0), SHAPE(2, 2, 1, 1)));
    if (mx)
      check_data(y[0], (float[]){6, -1, 3, 5}, 4, 0);
    else
      check_data(y[0], (float[]){3, -2, 1, 5}, 4, 1e-6);
    tc_end(&c, y, 1);
  }
}

static void test_pool_errors(void) {
  tcase c;
  /* kernel_shape of the wrong length */
  tc_begin(&c, SHAPE(1, 1, 4, 4));
  tc_node(&c, KILN_OP_MaxPool, NULL, 0, 1);
  INTS(&c, "kernel_shape", 2);
  CHECK(tc_infer(&c) == KILN_ERR_SHAPE);
  tc_end(&c, NULL, 0);
  /* kernel larger than the padded input */
  tc_begin(&c, SHAPE(1, 1, 4, 4));
  tc_node(&c, KILN_OP_AveragePool, NULL, 0, 1);
  INTS(&c, "kernel_shape", 3, 6);
  INTS(&c, "pads", 0, 1, 0, 0);
  CHECK(tc_infer(&c) == KILN_ERR_SHAPE);
  CHECK_MSG(strstr(c.e.msg, "smaller than the kernel"), "%s", c.e.msg);
  tc_end(&c, NULL, 0);
  /* missing kernel_shape; zero stride; rank 2 input */
  for (int k = 0; k < 3; k++) {
    tc_begin(&c, k == 2 ? SHAPE(4, 4) : SHAPE(1, 1, 4, 4));
    tc_node(&c, KILN_OP_MaxPool, NULL, 0, 1);
    if (k != 0) INTS(&c, "kernel_shape", 2, 2);
    if (k == 1) INTS(&c, "strides", 0, 1);
    CHECK(tc_infer(&c) != KILN_OK);
    tc_end(&c, NULL, 0);
  }
}

/* ---- normalization ---- */

/* x (2,2,2): channel 0 = {1,3 | 5,7} (mean 4, var 5), channel 1 = all 2 (mean 2, var 0);
 * scale [1,2], B [0,1], input mean [0,0], var [1,1], epsilon 1, momentum 0.9. */
static void bn_case(tcase *c, int opset, int training_mode, int n_out) {
  tc_begin(c, SHAPE(2, 2, 2));
  int s = tc_const(c, "scale", SHAPE(2), (float[]){1, 2});
  int b = tc_const(c, "B", SHAPE(2), (float[]){0, 1});
  int m = tc_const(c, "mean", SHAPE(2), (float[]){0, 0});
  int v = tc_const(c, "var", SHAPE(2), (float[]){1, 1});
  tc_node(c, KILN_OP_BatchNormalization, (int[]){s, b, m, v}, 4, n_out);
  if (c->e.code) return;
  c->g->nodes[c->node].opset = opset;
  ir_set_attr_float(c->g, c->node, "epsilon", 1.0, &c->e);
  if (training_mode) ir_set_attr_int(c->g, c->node, "training_mode", 1, &c->e);
}

static const float bn_x[] = {1, 3, 2, 2, 5, 7, 2, 2};

static void test_batchnorm_inference(void) {
  tcase c;
  kiln_tensor *y[1] = {0};
  bn_case(&c, 15, 0, 1);
  CHECK_OK(tc_run(&c, tensor(SHAPE(2, 2, 2), bn_x), false, y), &c.e);
  float want[8], k = 1.0f / sqrtf(2.0f);
  for (int i = 0; i < 8; i++) {
    int ch = (i / 2) % 2;
    want[i] = ch == 0 ? bn_x[i] * k : 2 * bn_x[i] * k + 1;
  }
  check_data(y[0], want, 8, 1e-6);
  tc_end(&c, y, 1);
}

static void check_bn_training(tcase *c, kiln_tensor **y) {
  float want[8], k = 1.0f / sqrtf(6.0f);
  for (int i = 0; i < 8; i++) want[i] = (i / 2) % 2 == 0 ? (bn_x[i] - 4) * k : 1;
  check_data(y[0], want, 8, 1e-6);
}

static void test_batchnorm_training(void) {
  /* training_mode=1 (opset 15): batch statistics, running stats blended with momentum. */
  tcase c;
  kiln_tensor *y[3] = {0};
  bn_case(&c, 15, 1, 3);
  CHECK_OK(tc_run(&c, tensor(SHAPE(2, 2, 2), bn_x), false, y), &c.e);
  check_bn_training(&c, y);
  check_data(y[1], (float[]){0.4f, 0.2f}, 2, 1e-6); /* 0.9*0 + 0.1*mean */
  check_data(y[2], (float[]){1.4f, 0.9f}, 2, 1e-6); /* 0.9*1 + 0.1*var */
  tc_end(&c, y, 3);
  /* ctx->training makes an inference-mode node use batch statistics too. */
  kiln_tensor *y1[1] = {0};
  bn_case(&c, 15, 0, 1);
  CHECK_OK(tc_run(&c, tensor(SHAPE(2, 2, 2), bn_x), true, y1), &c.e);
  check_bn_training(&c, y1);
  tc_end(&c, y1, 1);
  /* Opset 9: the five-output form is the training form; saved_mean/saved_var are the
   * batch statistics. */
  kiln_tensor *y5[5] = {0};
  bn_case(&c, 9, 0, 5);
  CHECK_OK(tc_run(&c, tensor(SHAPE(2, 2, 2), bn_x), false, y5), &c.e);
  check_bn_training(&c, y5);
  check_data(y5[1], (float[]){0.4f, 0.2f}, 2, 1e-6);
  check_data(y5[3], (float[]){4, 2}, 2, 1e-6);
  check_data(y5[4], (float[]){5, 0}, 2, 1e-6);
  tc_end(&c, y5, 5);
  /* Opset 15 refuses the five-output form. */
  bn_case(&c, 15, 1, 5);
  CHECK(tc_infer(&c) == KILN_ERR_INVALID);
  tc_end(&c, NULL, 0);
}

static void test_batchnorm_legacy(void) {
  /* Opset 7, spatial=0: one parameter per (channel, position); x (2,2,1). */
  tcase c;
  kiln_tensor *y[1] = {0};
  tc_begin(&c, SHAPE(1, 2, 2));
  int s = tc_const(&c, "scale", SHAPE(2, 2), (float[]){1, 2, 3, 4});
  int b = tc_const(&c, "B", SHAPE(2, 2), (float[]){0, 0, 1, 1});
  int m = tc_const(&c, "mean", SHAPE(2, 2), (float[]){1, 1, 0, 0});
  int v = tc_const(&c, "var", SHAPE(2, 2), (float[]){0, 0, 0, 0});
  tc_node(&c, KILN_OP_BatchNormalization, (int[]){s, b, m, v}, 4, 1);
  c.g->nodes[c.node].opset = 7;
  ir_set_attr_int(c.g, c.node, "spatial", 0, &c.e);
  ir_set_attr_float(c.g, c.node, "epsilon", 1.0, &c.e);
  ir_set_attr_int(c.g, c.node, "is_test", 1, &c.e); /* legacy: accepted, no effect */
  CHECK_OK(tc_run(&c, tensor(SHAPE(1, 2, 2), (float[]){3, 5, 7, 9}), false, y), &c.e);
  check_data(y[0], (float[]){2, 8, 22, 37}, 4, 1e-6);
  tc_end(&c, y, 1);
  /* Opset 6 with is_test=1 and extra outputs stays in inference mode. */
  kiln_tensor *y5[5] = {0};
  bn_case(&c, 6, 0, 5);
  ir_set_attr_int(c.g, c.node, "is_test", 1, &c.e);
  CHECK_OK(tc_run(&c, tensor(SHAPE(2, 2, 2), bn_x), false, y5), &c.e);
  CHECK_CLOSE(((float *)y5[0]->data)[1], 3 / sqrtf(2), 1e-6, 1e-6);
  check_data(y5[1], (float[]){0, 0}, 2, 0);
  tc_end(&c, y5, 5);
}

static void test_batchnorm_errors(void) {
  /* scale with 3 values for 2 channels; per-activation parameters at opset 15. */
  for (int k = 0; k < 2; k++) {
    tcase c;
    tc_begin(&c, SHAPE(1, 2, 2));
    kiln_shape ps = k == 0 ? SHAPE(3) : SHAPE(2, 2);
    int s = tc_const(&c, "scale", ps, NULL), b = tc_const(&c, "B", ps, NULL);
    int m = tc_const(&c, "mean", ps, NULL), v = tc_const(&c, "var", ps, NULL);
    tc_node(&c, KILN_OP_BatchNormalization, (int[]){s, b, m, v}, 4, 1);
    CHECK(tc_infer(&c) == KILN_ERR_SHAPE);
    CHECK_MSG(strstr(c.e.msg, "scale 'scale'"), "%s", c.e.msg);
    tc_end(&c, NULL, 0);
  }
}

static void test_instancenorm(void) {
  /* ONNX's instancenorm_example: x (1,2,1,3) = [-1,0,1 | 2,3,4], scale [1,1.5], B [0,1]. */
  tcase c;
  kiln_tensor *y[1] = {0};
  tc_begin(&c, SHAPE(1, 2, 1, 3));
  int s = tc_const(&c, "scale", SHAPE(2), (float[]){1, 1.5f});
  int b = tc_const(&c, "B", SHAPE(2), (float[]){0, 1});
  tc_node(&c, KILN_OP_InstanceNormalization, (int[]){s, b}, 2, 1);
  CHECK_OK(tc_run(&c, tensor(SHAPE(1, 2, 1, 3), (float[]){-1, 0, 1, 2, 3, 4}), false, y), &c.e);
  float k = 1.0f / sqrtf(2.0f / 3 + 1e-5f);
  float want[] = {-k, 0, k, -1.5f * k + 1, 1, 1.5f * k + 1};
  check_data(y[0], want, 6, 1e-5);
  tc_end(&c, y, 1);
  /* scale with the wrong length */
  tc_begin(&c, SHAPE(1, 2, 1, 3));
  s = tc_const(&c, "scale", SHAPE(3), NULL);
  b = tc_const(&c, "B", SHAPE(2), NULL);
  tc_node(&c, KILN_OP_InstanceNormalization, (int[]){s, b}, 2, 1);
  CHECK(tc_infer(&c) == KILN_ERR_SHAPE);
  tc_end(&c, NULL, 0);
}

static void test_lrn(void) {
  /* x (1,3,1,1) = [1,2,3], size 3, alpha 3 (alpha/size = 1), beta 1, bias 1:
   * y_c = x_c / (1 + sum of squares over channels c-1..c+1). */
  tcase c;
  kiln_tensor *y[1] = {0};
  tc_begin(&c, SHAPE(1, 3, 1, 1));
  tc_node(&c, KILN_OP_LRN, NULL, 0, 1);
  ir_set_attr_int(c.g, c.node, "size", 3, &c.e);
  ir_set_attr_float(c.g, c.node, "alpha", 3.0, &c.e);
  ir_set_attr_float(c.g, c.node, "beta", 1.0, &c.e);
  CHECK_OK(tc_run(&c, tensor(SHAPE(1, 3, 1, 1), (float[]){1, 2, 3}), false, y), &c.e);
  check_data(y[0], (float[]){1.0f / 6, 2.0f / 15, 3.0f / 14}, 3, 1e-6);
  tc_end(&c, y, 1);
  /* size 2 takes channels [c, c+1]: [1/6, 2/14, 3/10] */
  tc_begin(&c, SHAPE(1, 3, 1, 1));
  tc_node(&c, KILN_OP_LRN, NULL, 0, 1);
  ir_set_attr_int(c.g, c.node, "size", 2, &c.e);
  ir_set_attr_float(c.g, c.node, "alpha", 2.0, &c.e);
  ir_set_attr_float(c.g, c.node, "beta", 1.0, &c.e);
  CHECK_OK(tc_run(&c, tensor(SHAPE(1, 3, 1, 1), (float[]){1, 2, 3}), false, y), &c.e);
  check_data(y[0], (float[]){1.0f / 6, 2.0f / 14, 3.0f / 10}, 3, 1e-6);
  tc_end(&c, y, 1);
  /* size 0 is refused */
  tc_begin(&c, SHAPE(1, 3, 1, 1));
  tc_node(&c, KILN_OP_LRN, NULL, 0, 1);
  ir_set_attr_int(c.g, c.node, "size", 0, &c.e);
  CHECK(tc_infer(&c) == KILN_ERR_INVALID);
  tc_end(&c, NULL, 0);
}

static void test_window_3d(void) {
  /* A 1-D window right-aligns into the last slot of the 3-D view. */
  nn_window w = {.nsp = 1, .in = {9}, .kernel = {3}, .stride = {2}, .dilation = {1},
                 .pad_begin = {1}, .pad_end = {0}, .out = {4}};
  nn_window t = nn_window_3d(&w);
  CHECK(t.in[0] == 1 && t.in[1] == 1 && t.in[2] == 9);
  CHECK(t.kernel[2] == 3 && t.stride[2] == 2 && t.pad_begin[2] == 1 && t.out[2] == 4);
  CHECK(t.out[0] == 1 && t.kernel[1] == 1 && nn_window_kernel_volume(&t) == 3);
}

static void test_failing_allocator(void) {
  /* Allocation failures while building and inferring Conv and BN graphs become errors. */
  for (long k = 0; k < 120; k++) {
    tcase c;
    kiln_alloc_fail_after(k);
    bn_case(&c, 15, 1, 3);
    kiln_code rc = tc_infer(&c);
    kiln_alloc_fail_after(-1);
    CHECK_MSG(rc == KILN_OK || rc == KILN_ERR_NOMEM || rc == KILN_ERR_INVALID, "k=%ld rc=%d %s",
              k, rc, c.e.msg);
    tc_end(&c, NULL, 0);
  }
  /* The BN kernel's own statistics buffers. */
  tcase c;
  kiln_tensor *y[3] = {0};
  bn_case(&c, 15, 1, 3);
  CHECK_OK(tc_infer(&c), &c.e);
  const kiln_node *n = &c.g->nodes[0];
  kiln_tensor *ins[5] = {tensor(SHAPE(2, 2, 2), bn_x)};
  for (int i = 1; i < 5; i++) ins[i] = c.g->values[n->in[i]].data;
  for (int o = 0; o < 3; o++) {
    const kiln_value *v = &c.g->values[n->out[o]];
    kiln_tensor_new(v->dtype, &v->shape, &y[o], &c.e);
  }
  kiln_ref_ctx ctx = {.g = c.g};
  kiln_alloc_fail_after(0);
  CHECK(ref_BatchNormalization(&ctx, n, (const kiln_tensor *const *)ins, y, &c.e) ==
        KILN_ERR_NOMEM);
  kiln_alloc_fail_after(-1);
  CHECK_OK(ref_BatchNormalization(&ctx, n, (const kiln_tensor *const *)ins, y, &c.e), &c.e);
  check_bn_training(&c, y);
  kiln_tensor_free(ins[0]);
  tc_end(&c, y, 3);
}

int main(void) {
  RUN(test_conv_basic_padding);
  RUN(test_conv_strides_asymmetric);
  RUN(test_conv_groups_bias);
  RUN(test_conv1d_stride_dilation);
  RUN(test_conv_same_padding);
  RUN(test_conv3d);
  RUN(test_conv_macs);
  RUN(test_conv_errors);
  RUN(test_convtranspose_basic);
  RUN(test_convtranspose_pads_shapes);
  RUN(test_convtranspose_groups_bias);
  RUN(test_maxpool_ceil_indices);
  RUN(test_maxpool_dilation_pads);
  RUN(test_pool_output_sizes);
  RUN(test_avgpool);
  RUN(test_global_pools);
  RUN(test_pool_errors);
  RUN(test_batchnorm_inference);
  RUN(test_batchnorm_training);
  RUN(test_batchnorm_legacy);
  RUN(test_batchnorm_errors);
  RUN(test_instancenorm);
  RUN(test_lrn);
  RUN(test_window_3d);
  RUN(test_failing_allocator);
  TEST_MAIN_END();
}
