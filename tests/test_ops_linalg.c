/* test_ops_linalg.c — Gemm, MatMul, Softmax, LogSoftmax and the losses on hand-built graphs,
 * against hand-computed values, plus the errors bad inputs must give. */
#include <math.h>

#include "one_node.h"

static void free_all(kiln_tensor **ts, int n) {
  for (int i = 0; i < n; i++) kiln_tensor_free(ts[i]);
}

/* ---- MatMul ---- */

static void test_matmul_2d(void) {
  kiln_tensor *in[2] = {tf(2, DIMS(2, 3), FV(1, 2, 3, 4, 5, 6)),
                        tf(2, DIMS(3, 2), FV(1, 0, 0, 1, 1, 1))};
  one_node t;
  on_begin(&t, KILN_OP_MatMul, 13, in, 2, 0, 1);
  CHECK_OK(on_run(&t), &t.e);
  CHECK_TF(t.out[0], 2, DIMS(2, 2), FV(4, 5, 10, 11));
  CHECK(kiln_op_get(KILN_OP_MatMul)->macs(t.g, on_node(&t)) == 2 * 2 * 3);
  on_end(&t);
  free_all(in, 2);
}

static void test_matmul_broadcast_batch(void) {
  /* A [2,1,1,2] x B [3,2,1]: batch dims [2,1] and [3] broadcast to [2,3]. */
  kiln_tensor *in[2] = {tf(4, DIMS(2, 1, 1, 2), FV(1, 2, 3, 4)),
                        tf(3, DIMS(3, 2, 1), FV(1, 1, 1, 0, 0, 1))};
  one_node t;
  on_begin(&t, KILN_OP_MatMul, 13, in, 2, 0, 1);
  CHECK_OK(on_run(&t), &t.e);
  CHECK_TF(t.out[0], 4, DIMS(2, 3, 1, 1), FV(3, 1, 2, 7, 3, 4));
  CHECK(kiln_op_get(KILN_OP_MatMul)->macs(t.g, on_node(&t)) == 6 * 1 * 1 * 2);
  on_end(&t);
  free_all(in, 2);
}

static void test_matmul_vectors(void) {
  kiln_tensor *v = tf(1, DIMS(3), FV(1, 2, 3)), *m = tf(2, DIMS(3, 2), FV(1, 2, 3, 4, 5, 6));
  kiln_tensor *mt = tf(2, DIMS(2, 3), FV(1, 3, 5, 2, 4, 6));
  one_node t;
  on_begin(&t, KILN_OP_MatMul, 13, (kiln_tensor *[]){v, m}, 2, 0, 1); /* [3]@[3,2] -> [2] */
  CHECK_OK(on_run(&t), &t.e);
  CHECK_TF(t.out[0], 1, DIMS(2), FV(22, 28));
  on_end(&t);
  on_begin(&t, KILN_OP_MatMul, 13, (kiln_tensor *[]){mt, v}, 2, 0, 1); /* [2,3]@[3] -> [2] */
  CHECK_OK(on_run(&t), &t.e);
  CHECK_TF(t.out[0], 1, DIMS(2), FV(22, 28));
  on_end(&t);
  on_begin(&t, KILN_OP_MatMul, 13, (kiln_tensor *[]){v, v}, 2, 0, 1); /* [3]@[3] -> [] */
  CHECK_OK(on_run(&t), &t.e);
  CHECK_TF(t.out[0], 0, DIMS(0), FV(14));
  on_end(&t);
  kiln_tensor_free(v), kiln_tensor_free(m), kiln_tensor_free(mt);
}

static void test_matmul_int(void) {
  kiln_tensor *in[2] = {ti64(2, DIMS(1, 2), IV(3000000000LL, 2)), ti64(2, DIMS(2, 1), IV(3, -1))};
  one_node t;
  on_begin(&t, KILN_OP_MatMul, 13, in, 2, 0, 1);
  CHECK_OK(on_run(&t), &t.e);
  CHECK_TI(t.out[0], KILN_I64, 2, DIMS(1, 1), IV(8999999998LL));
  on_end(&t);
  free_all(in, 2);
  kiln_tensor *in32[2] = {ti32(2, DIMS(2, 2), (const int32_t[]){1, 2, 3, 4}),
                          ti32(1, DIMS(2), (const int32_t[]){-1, 1})};
  on_begin(&t, KILN_OP_MatMul, 13, in32, 2, 0, 1);
  CHECK_OK(on_run(&t), &t.e);
  CHECK_TI(t.out[0], KILN_I32, 1, DIMS(2), IV(1, 1));
  on_end(&t);
  free_all(in32, 2);
}

static void test_matmul_errors(void) {
  one_node t;
  kiln_tensor *a = tf(2, DIMS(2, 3), FV(0, 0, 0, 0, 0, 0)), *b = tf(2, DIMS(2, 2), FV(0, 0, 0, 0));
  on_begin(&t, KILN_OP_MatMul, 13, (kiln_tensor *[]){a, b}, 2, 0, 1);
  CHECK(on_run(&t) == KILN_ERR_SHAPE);
  CHECK(strstr(t.e.msg, "inner dimensions") && strstr(t.e.msg, "in0"));
  on_end(&t);
  kiln_tensor *c = tf(3, DIMS(2, 3, 1), FV(0, 0, 0, 0, 0, 0));
  kiln_tensor *d = tf(3, DIMS(3, 1, 1), FV(0, 0, 0));
  on_begin(&t, KILN_OP_MatMul, 13, (kiln_tensor *[]){c, d}, 2, 0, 1);
  CHECK(on_run(&t) == KILN_ERR_SHAPE);
  CHECK(strstr(t.e.msg, "broadcast") != NULL);
  on_end(&t);
  kiln_tensor *i = ti64(2, DIMS(3, 2), IV(0, 0, 0, 0, 0, 0));
  on_begin(&t, KILN_OP_MatMul, 13, (kiln_tensor *[]){a, i}, 2, 0, 1);
  CHECK(on_run(&t) == KILN_ERR_SHAPE);
  CHECK(strstr(t.e.msg, "dtypes") != NULL);
  on_end(&t);
  kiln_tensor_free(a), kiln_tensor_free(b), kiln_tensor_free(c), kiln_tensor_free(d);
  kiln_tensor_free(i);
}

/* ---- Gemm ---- */

static void test_gemm_transposes_vector_bias(void) {
  /* op(A) = A^T = [[1,3],[2,4]], op(B) = B^T = [[1,0,1],[0,1,1]]: product [[1,3,4],[2,4,6]] */
  kiln_tensor *in[3] = {tf(2, DIMS(2, 2), FV(1, 2, 3, 4)), tf(2, DIMS(3, 2), FV(1, 0, 0, 1, 1, 1)),
                        tf(1, DIMS(3), FV(1, 2, 3))};
  one_node t;
  on_begin(&t, KILN_OP_Gemm, 13, in, 3, 1u << 2, 1);
  ir_set_attr_int(t.g, t.node, "transA", 1, &t.e);
  ir_set_attr_int(t.g, t.node, "transB", 1, &t.e);
  ir_set_attr_float(t.g, t.node, "alpha", 2.0, &t.e);
  ir_set_attr_float(t.g, t.node, "beta", 0.5, &t.e);
  CHECK_OK(on_run(&t), &t.e);
  CHECK_TF(t.out[0], 2, DIMS(2, 3), FV(2.5, 7, 9.5, 4.5, 9, 13.5));
  CHECK(kiln_op_get(KILN_OP_Gemm)->macs(t.g, on_node(&t)) == 2 * 3 * 2);
  on_end(&t);
  free_all(in, 3);
}

static void test_gemm_column_and_scalar_bias(void) {
  kiln_tensor *a = tf(2, DIMS(2, 2), FV(1, 3, 2, 4)), *b = tf(2, DIMS(2, 3), FV(1, 0, 1, 0, 1, 1));
  kiln_tensor *col = tf(2, DIMS(2, 1), FV(10, 20)), *sc = tf(0, DIMS(0), FV(-1));
  one_node t;
  on_begin(&t, KILN_OP_Gemm, 13, (kiln_tensor *[]){a, b, col}, 3, 0, 1);
  CHECK_OK(on_run(&t), &t.e);
  CHECK_TF(t.out[0], 2, DIMS(2, 3), FV(11, 13, 14, 22, 24, 26));
  on_end(&t);
  on_begin(&t, KILN_OP_Gemm, 13, (kiln_tensor *[]){a, b, sc}, 3, 0, 1);
  CHECK_OK(on_run(&t), &t.e);
  CHECK_TF(t.out[0], 2, DIMS(2, 3), FV(0, 2, 3, 1, 3, 5));
  on_end(&t);
  on_begin(&t, KILN_OP_Gemm, 13, (kiln_tensor *[]){a, b}, 2, 0, 1); /* no C */
  CHECK_OK(on_run(&t), &t.e);
  CHECK_TF(t.out[0], 2, DIMS(2, 3), FV(1, 3, 4, 2, 4, 6));
  on_end(&t);
  kiln_tensor_free(a), kiln_tensor_free(b), kiln_tensor_free(col), kiln_tensor_free(sc);
}

static void test_gemm_int(void) {
  kiln_tensor *in[3] = {ti32(2, DIMS(1, 2), (const int32_t[]){2, 3}),
                        ti32(2, DIMS(2, 1), (const int32_t[]){4, 5}),
                        ti32(1, DIMS(1), (const int32_t[]){-3})};
  one_node t;
  on_begin(&t, KILN_OP_Gemm, 13, in, 3, 0, 1);
  CHECK_OK(on_run(&t), &t.e);
  CHECK_TI(t.out[0], KILN_I32, 2, DIMS(1, 1), IV(20));
  on_end(&t);
  free_all(in, 3);
}

static void test_gemm_opset6_broadcast(void) {
  kiln_tensor *a = tf(2, DIMS(1, 2), FV(1, 2)), *b = tf(2, DIMS(2, 2), FV(1, 0, 0, 1));
  kiln_tensor *c = tf(1, DIMS(2), FV(10, 20));
  one_node t;
  on_begin(&t, KILN_OP_Gemm, 6, (kiln_tensor *[]){a, b, c}, 3, 0, 1);
  CHECK(on_run(&t) == KILN_ERR_SHAPE); /* opset 6 without broadcast=1: C must be [M,N] */
  CHECK(strstr(t.e.msg, "broadcast=1") != NULL);
  on_end(&t);
  on_begin(&t, KILN_OP_Gemm, 6, (kiln_tensor *[]){a, b, c}, 3, 0, 1);
  ir_set_attr_int(t.g, t.node, "broadcast", 1, &t.e);
  CHECK_OK(on_run(&t), &t.e);
  CHECK_TF(t.out[0], 2, DIMS(1, 2), FV(11, 22));
  on_end(&t);
  kiln_tensor_free(a), kiln_tensor_free(b), kiln_tensor_free(c);
}

static void test_gemm_errors(void) {
  kiln_tensor *a = tf(2, DIMS(2, 3), FV(0, 0, 0, 0, 0, 0)), *b = tf(2, DIMS(2, 2), FV(0, 0, 0, 0));
  kiln_tensor *c = tf(1, DIMS(3), FV(0, 0, 0)), *v = tf(1, DIMS(2), FV(0, 0));
  one_node t;
  on_begin(&t, KILN_OP_Gemm, 13, (kiln_tensor *[]){a, b}, 2, 0, 1); /* K 3 vs 2 */
  CHECK(on_run(&t) == KILN_ERR_SHAPE);
  CHECK(strstr(t.e.msg, "inner dimensions") != NULL);
  on_end(&t);
  on_begin(&t, KILN_OP_Gemm, 13, (kiln_tensor *[]){b, b, c}, 3, 0, 1); /* C [3] vs [2,2] */
  CHECK(on_run(&t) == KILN_ERR_SHAPE);
  CHECK(strstr(t.e.msg, "in2") != NULL);
  on_end(&t);
  on_begin(&t, KILN_OP_Gemm, 13, (kiln_tensor *[]){v, b}, 2, 0, 1); /* A must be 2-D */
  CHECK(on_run(&t) == KILN_ERR_SHAPE);
  on_end(&t);
  kiln_tensor_free(a), kiln_tensor_free(b), kiln_tensor_free(c), kiln_tensor_free(v);
}

/* ---- Softmax, LogSoftmax ---- */

static const float s_pair[2] = {0.26894142f, 0.73105858f};      /* softmax([0,1]) */
static const float s_pair2[2] = {0.11920292f, 0.88079708f};     /* softmax([0,2]) */
static const float s_quad[4] = {0.0320586f, 0.08714432f, 0.23688282f, 0.64391426f}; /* [0..3] */

static void softmax_case(kiln_op op, int opset, int64_t axis, bool set_axis, const float *want) {
  kiln_tensor *x = tf(3, DIMS(2, 2, 2), FV(0, 1, 2, 3, 4, 5, 6, 7));
  one_node t;
  on_begin(&t, op, opset, &x, 1, 0, 1);
  if (set_axis) ir_set_attr_int(t.g, t.node, "axis", axis, &t.e);
  CHECK_OK(on_run(&t), &t.e);
  float w[8];
  for (int i = 0; i < 8; i++) w[i] = op == KILN_OP_LogSoftmax ? logf(want[i]) : want[i];
  CHECK_TF(t.out[0], 3, DIMS(2, 2, 2), w);
  on_end(&t);
  kiln_tensor_free(x);
}

static void test_softmax_opsets(void) {
  float last[8], mid[8], flat[8];
  for (int i = 0; i < 8; i++) last[i] = s_pair[i % 2];         /* over the last dim */
  for (int i = 0; i < 8; i++) mid[i] = s_pair2[(i / 2) % 2];   /* over dim 1 only */
  for (int i = 0; i < 8; i++) flat[i] = s_quad[i % 4];         /* over dims 1..2 flattened */
  for (int k = 0; k < 2; k++) {
    kiln_op op = k ? KILN_OP_LogSoftmax : KILN_OP_Softmax;
    softmax_case(op, 13, 0, false, last); /* opset 13: default axis -1 */
    softmax_case(op, 13, 1, true, mid);   /* opset 13: axis 1 is one dim */
    softmax_case(op, 11, 0, false, flat); /* opset 11: default axis 1, 2-D coercion */
    softmax_case(op, 6, 1, true, flat);
    softmax_case(op, 11, -1, true, last); /* coercion at the last dim = over the last dim */
    softmax_case(op, 13, -2, true, mid);
  }
}

static void test_softmax_large_and_errors(void) {
  kiln_tensor *x = tf(2, DIMS(1, 2), FV(1000, 1001));
  one_node t;
  on_begin(&t, KILN_OP_Softmax, 13, &x, 1, 0, 1);
  CHECK_OK(on_run(&t), &t.e);
  CHECK_TF(t.out[0], 2, DIMS(1, 2), s_pair);
  on_end(&t);
  on_begin(&t, KILN_OP_LogSoftmax, 13, &x, 1, 0, 1);
  CHECK_OK(on_run(&t), &t.e);
  CHECK_TF(t.out[0], 2, DIMS(1, 2), FV(-1.31326169f, -0.31326169f));
  on_end(&t);
  on_begin(&t, KILN_OP_Softmax, 13, &x, 1, 0, 1);
  ir_set_attr_int(t.g, t.node, "axis", 2, &t.e);
  CHECK(on_run(&t) == KILN_ERR_SHAPE);
  CHECK(strstr(t.e.msg, "axis 2") != NULL);
  on_end(&t);
  kiln_tensor *i = ti64(1, DIMS(2), IV(1, 2));
  on_begin(&t, KILN_OP_Softmax, 13, &i, 1, 0, 1);
  CHECK(on_run(&t) == KILN_ERR_UNSUPPORTED);
  on_end(&t);
  kiln_tensor_free(x), kiln_tensor_free(i);
}

/* ---- SoftmaxCrossEntropyLoss, NegativeLogLikelihoodLoss ---- */

/* scores row 0 = [0,0,0] -> log_prob -log 3 each;
 * row 1 = [1,2,3] -> [-2.4076, -1.4076, -0.4076]. */
#define LOG3 1.09861229f
#define LSE 0.40760596f
static const float sce_logp[6] = {-LOG3, -LOG3, -LOG3, -2 - LSE, -1 - LSE, -LSE};

static void sce_case(const char *reduction, bool weights, bool has_ii, int64_t ii, int rank,
                     const float *want) {
  kiln_tensor *in[3] = {tf(2, DIMS(2, 3), FV(0, 0, 0, 1, 2, 3)), ti64(1, DIMS(2), IV(0, 2)),
                        weights ? tf(1, DIMS(3), FV(1, 2, 3)) : NULL};
  one_node t;
  on_begin(&t, KILN_OP_SoftmaxCrossEntropyLoss, 13, in, 3, 0, 2);
  ir_set_attr_str(t.g, t.node, "reduction", reduction, &t.e);
  if (has_ii) ir_set_attr_int(t.g, t.node, "ignore_index", ii, &t.e);
  CHECK_OK(on_run(&t), &t.e);
  CHECK_TF(t.out[0], rank, DIMS(2), want);
  CHECK_TF(t.out[1], 2, DIMS(2, 3), sce_logp);
  on_end(&t);
  free_all(in, 3);
}

static void test_sce(void) {
  sce_case("none", false, false, 0, 1, FV(LOG3, LSE));
  sce_case("none", true, false, 0, 1, FV(LOG3, 3 * LSE));
  sce_case("sum", true, false, 0, 0, FV(LOG3 + 3 * LSE));
  sce_case("mean", false, false, 0, 0, FV((LOG3 + LSE) / 2));
  sce_case("mean", true, false, 0, 0, FV((LOG3 + 3 * LSE) / 4)); /* / sum of weights 1+3 */
  sce_case("mean", false, true, 2, 0, FV(LOG3));                /* label 2 ignored */
  sce_case("mean", true, true, 0, 0, FV(LSE));                  /* 3*LSE / 3 */
  sce_case("none", true, true, 0, 1, FV(0, 3 * LSE));
  sce_case("sum", false, true, -1, 0, FV(LOG3 + LSE));          /* nothing matches -1 */
}

static void test_sce_spatial_no_log_prob(void) {
  /* scores [1,2,2] (N=1, C=2, d1=2): column 0 = [0,0], column 1 = [0, log 3] */
  kiln_tensor *in[2] = {tf(3, DIMS(1, 2, 2), FV(0, 0, 0, 1.09861229f)),
                        ti32(2, DIMS(1, 2), (const int32_t[]){1, 1})};
  one_node t;
  on_begin(&t, KILN_OP_SoftmaxCrossEntropyLoss, 13, in, 2, 0, 1);
  ir_set_attr_str(t.g, t.node, "reduction", "none", &t.e);
  CHECK_OK(on_run(&t), &t.e);
  CHECK_TF(t.out[0], 2, DIMS(1, 2), FV(0.69314718f, 0.28768207f)); /* -log(1/2), -log(3/4) */
  on_end(&t);
  free_all(in, 2);
}

/* input[n][c][d] = -(6n + 2c + d + 1) / 10; targets [[0,2],[1,1]] pick 0.1, 0.6, 0.9, 1.0 */
static void nll_case(const char *reduction, bool weights, bool has_ii, int64_t ii,
                     const int64_t *target, int rank, const float *want) {
  float x[12];
  for (int i = 0; i < 12; i++) x[i] = -(float)(i + 1) / 10;
  kiln_tensor *in[3] = {tf(3, DIMS(2, 3, 2), x), ti64(2, DIMS(2, 2), target),
                        weights ? tf(1, DIMS(3), FV(1, 2, 3)) : NULL};
  one_node t;
  on_begin(&t, KILN_OP_NegativeLogLikelihoodLoss, 12, in, 3, 0, 1);
  ir_set_attr_str(t.g, t.node, "reduction", reduction, &t.e);
  if (has_ii) ir_set_attr_int(t.g, t.node, "ignore_index", ii, &t.e);
  CHECK_OK(on_run(&t), &t.e);
  CHECK_TF(t.out[0], rank, DIMS(2, 2), want);
  on_end(&t);
  free_all(in, 3);
}

static void test_nll(void) {
  const int64_t *tg = IV(0, 2, 1, 1);
  nll_case("none", false, false, 0, tg, 2, FV(0.1f, 0.6f, 0.9f, 1.0f));
  nll_case("none", true, false, 0, tg, 2, FV(0.1f, 1.8f, 1.8f, 2.0f));
  nll_case("sum", true, false, 0, tg, 0, FV(5.7f));
  nll_case("mean", false, false, 0, tg, 0, FV(2.6f / 4));
  nll_case("mean", true, false, 0, tg, 0, FV(5.7f / 8));       /* weights 1+3+2+2 */
  nll_case("mean", true, true, 1, tg, 0, FV(1.9f / 4));        /* class 1 ignored: 0.1+1.8 / 1+3 */
  nll_case("mean", false, true, 1, tg, 0, FV(0.7f / 2));
  /* a negative ignore_index as a label value */
  nll_case("mean", true, true, -1, IV(0, -1, 1, -1), 0, FV(1.9f / 3));
  nll_case("none", false, true, -1, IV(0, -1, 1, -1), 2, FV(0.1f, 0, 0.9f, 0));
}

static void test_loss_errors(void) {
  kiln_tensor *x = tf(2, DIMS(2, 3), FV(0, 0, 0, 0, 0, 0));
  kiln_tensor *bad_label = ti64(1, DIMS(2), IV(0, 3)), *label3 = ti64(1, DIMS(3), IV(0, 1, 2));
  kiln_tensor *w2 = tf(1, DIMS(2), FV(1, 1)), *fl = tf(1, DIMS(2), FV(0, 1));
  one_node t;
  on_begin(&t, KILN_OP_NegativeLogLikelihoodLoss, 13, (kiln_tensor *[]){x, bad_label}, 2, 0, 1);
  CHECK(on_run(&t) == KILN_ERR_INVALID); /* label 3 with C = 3: found at run time */
  CHECK(strstr(t.e.msg, "label 3") != NULL);
  on_end(&t);
  on_begin(&t, KILN_OP_SoftmaxCrossEntropyLoss, 13, (kiln_tensor *[]){x, label3}, 2, 0, 1);
  CHECK(on_run(&t) == KILN_ERR_SHAPE); /* N 2 vs 3 */
  CHECK(strstr(t.e.msg, "labels") != NULL);
  on_end(&t);
  on_begin(&t, KILN_OP_SoftmaxCrossEntropyLoss, 13, (kiln_tensor *[]){x, bad_label, w2}, 3, 0, 1);
  CHECK(on_run(&t) == KILN_ERR_SHAPE); /* weights [2] vs C = 3 */
  on_end(&t);
  on_begin(&t, KILN_OP_SoftmaxCrossEntropyLoss, 13, (kiln_tensor *[]){x, fl}, 2, 0, 1);
  CHECK(on_run(&t) == KILN_ERR_UNSUPPORTED); /* float labels */
  on_end(&t);
  on_begin(&t, KILN_OP_NegativeLogLikelihoodLoss, 13, (kiln_tensor *[]){x, bad_label}, 2, 0, 1);
  ir_set_attr_str(t.g, t.node, "reduction", "max", &t.e);
  CHECK(on_run(&t) == KILN_ERR_INVALID);
  CHECK(strstr(t.e.msg, "'max'") != NULL);
  on_end(&t);
  kiln_tensor_free(x), kiln_tensor_free(bad_label), kiln_tensor_free(label3);
  kiln_tensor_free(w2), kiln_tensor_free(fl);
}

/* Constant inputs are folded at inference time through the same kernels. */
static void test_constant_fold(void) {
  kiln_tensor *in[2] = {tf(2, DIMS(1, 2), FV(1, 2)), tf(2, DIMS(2, 1), FV(3, 4))};
  one_node t;
  on_begin(&t, KILN_OP_MatMul, 13, in, 2, 3u, 1);
  kiln_evaluator ev = kiln_ref_evaluator();
  CHECK_OK(ir_infer(t.g, &ev, &t.e), &t.e);
  const kiln_tensor *y = ir_out(t.g, on_node(&t), 0)->data;
  CHECK_TF(y, 2, DIMS(1, 1), FV(11));
  on_end(&t);
  free_all(in, 2);
}

int main(void) {
  RUN(test_matmul_2d);
  RUN(test_matmul_broadcast_batch);
  RUN(test_matmul_vectors);
  RUN(test_matmul_int);
  RUN(test_matmul_errors);
  RUN(test_gemm_transposes_vector_bias);
  RUN(test_gemm_column_and_scalar_bias);
  RUN(test_gemm_int);
  RUN(test_gemm_opset6_broadcast);
  RUN(test_gemm_errors);
  RUN(test_softmax_opsets);
  RUN(test_softmax_large_and_errors);
  RUN(test_sce);
  RUN(test_sce_spatial_no_log_prob);
  RUN(test_nll);
  RUN(test_loss_errors);
  RUN(test_constant_fold);
  TEST_MAIN_END();
}
