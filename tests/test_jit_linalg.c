/* test_jit_linalg.c — the JIT's Gemm, MatMul, Softmax, LogSoftmax and loss kernels against
 * the reference interpreter on hand-built one-node graphs: edge shapes (sizes that do not
 * divide the register tile, size-1 and empty dims, broadcasting), every attribute variant,
 * and results bitwise equal at 1 and 3 threads. */
#include <math.h>

#include "jit_case.h"

/* ---- Gemm ---- */

static void gemm(int64_t M, int64_t N, int64_t K, int ta, int tb, int c_rank, const int64_t *cd,
                 double alpha, double beta, uint32_t const_mask, kiln_dtype dt, int64_t min_tiles,
                 const char *what) {
  jcase c = {.op = KILN_OP_Gemm,
             .opset = 13,
             .n_in = c_rank >= 0 ? 3 : 2,
             .n_out = 1,
             .const_mask = const_mask,
             .rtol = 1e-4,
             .atol = 1e-5,
             .min_tiles = min_tiles};
  int64_t ad[2] = {ta ? K : M, ta ? M : K}, bd[2] = {tb ? N : K, tb ? K : N};
  c.in[0] = dt == KILN_F32 ? rf(2, ad) : ri(dt, 2, ad);
  c.in[1] = dt == KILN_F32 ? rf(2, bd) : ri(dt, 2, bd);
  if (c_rank >= 0) c.in[2] = dt == KILN_F32 ? rf(c_rank, cd) : ri(dt, c_rank, cd);
  c.attrs[c.n_attrs++] = AI("transA", ta);
  c.attrs[c.n_attrs++] = AI("transB", tb);
  c.attrs[c.n_attrs++] = AF("alpha", alpha);
  c.attrs[c.n_attrs++] = AF("beta", beta);
  jc_run(&c, what);
  jc_free(&c);
}

static void test_gemm(void) {
  /* batch-1 FC layer with constant transposed weights: repacked, split over columns */
  gemm(1, 1000, 512, 0, 1, 1, DIMS(1000), 1, 1, 2u | 4u, KILN_F32, 2, "fc 1x1000x512");
  gemm(3, 1000, 64, 0, 1, 1, DIMS(1000), 1, 1, 2u | 4u, KILN_F32, 2, "fc 3x1000x64");
  /* odd sizes: tails in both rows and columns; runtime B^T */
  gemm(37, 45, 13, 1, 1, 1, DIMS(45), 0.5, 2.0, 0, KILN_F32, 0, "transA transB alpha beta");
  gemm(9, 70, 33, 0, 0, 2, DIMS(9, 1), 1, -1, 0, KILN_F32, 0, "C [M,1]");
  gemm(5, 3, 7, 1, 0, 2, DIMS(5, 3), 1, 0.25, 0, KILN_F32, 0, "C [M,N]");
  gemm(5, 3, 7, 0, 0, 0, DIMS(0), 2, 3, 0, KILN_F32, 0, "scalar C");
  gemm(4, 8, 16, 0, 0, 2, DIMS(1, 8), 1, 1, 0, KILN_F32, 0, "C [1,N], exact tiles");
  gemm(1, 1, 1, 0, 0, -1, NULL, 1, 1, 0, KILN_F32, 0, "1x1x1");
  gemm(6, 5, 0, 0, 0, 1, DIMS(5), 1, 1, 0, KILN_F32, 0, "K = 0");
  gemm(0, 5, 3, 0, 0, -1, NULL, 1, 1, 0, KILN_F32, 0, "M = 0");
  gemm(130, 200, 150, 0, 1, 1, DIMS(200), 1, 1, 2u, KILN_F32, 4, "130x200x150 many tiles");
  gemm(2, 7, 5, 0, 0, 1, DIMS(7), 1, 1, 0, KILN_F32, 0, "no C broadcast");
  /* integers: exact wrap-around path and the general alpha/beta path */
  gemm(7, 9, 11, 0, 1, 1, DIMS(9), 1, 1, 0, KILN_I32, 0, "int32");
  gemm(7, 9, 11, 1, 0, 2, DIMS(7, 9), 2, 3, 0, KILN_I64, 0, "int64 alpha beta");
  gemm(3, 4, 5, 0, 0, -1, NULL, 1, 1, 2u, KILN_I64, 0, "int64 no C");
}

static void test_gemm_opset6_broadcast(void) {
  jcase c = {.op = KILN_OP_Gemm, .opset = 6, .n_in = 3, .n_out = 1, .rtol = 1e-4, .atol = 1e-5};
  c.in[0] = rf(2, DIMS(3, 4));
  c.in[1] = rf(2, DIMS(4, 5));
  c.in[2] = rf(1, DIMS(5));
  c.attrs[c.n_attrs++] = AI("broadcast", 1);
  jc_run(&c, "opset 6 broadcast");
  jc_free(&c);
}

/* ---- MatMul ---- */

static void matmul(int ra, const int64_t *da, int rb, const int64_t *db, kiln_dtype dt,
                   uint32_t const_mask, const char *what) {
  jcase c = {.op = KILN_OP_MatMul,
             .opset = 13,
             .n_in = 2,
             .n_out = 1,
             .const_mask = const_mask,
             .rtol = 1e-4,
             .atol = 1e-5};
  c.in[0] = dt == KILN_F32 ? rf(ra, da) : ri(dt, ra, da);
  c.in[1] = dt == KILN_F32 ? rf(rb, db) : ri(dt, rb, db);
  jc_run(&c, what);
  jc_free(&c);
}

static void test_matmul(void) {
  matmul(2, DIMS(17, 33), 2, DIMS(33, 9), KILN_F32, 0, "17x33x9");
  matmul(2, DIMS(64, 300), 2, DIMS(300, 100), KILN_F32, 2u, "64x300x100 const B");
  matmul(4, DIMS(2, 1, 5, 7), 3, DIMS(3, 7, 4), KILN_F32, 0, "batch broadcast");
  matmul(3, DIMS(1, 6, 3), 3, DIMS(4, 3, 40), KILN_F32, 0, "A batch broadcast");
  matmul(3, DIMS(4, 6, 3), 2, DIMS(3, 40), KILN_F32, 0, "B shared");
  matmul(1, DIMS(7), 2, DIMS(7, 3), KILN_F32, 0, "vector @ matrix");
  matmul(2, DIMS(5, 7), 1, DIMS(7), KILN_F32, 0, "matrix @ vector");
  matmul(1, DIMS(33), 1, DIMS(33), KILN_F32, 0, "dot");
  matmul(3, DIMS(2, 3, 4), 3, DIMS(2, 4, 0), KILN_F32, 0, "N = 0");
  matmul(3, DIMS(0, 3, 4), 2, DIMS(4, 5), KILN_F32, 0, "batch 0");
  matmul(3, DIMS(2, 3, 0), 3, DIMS(2, 0, 5), KILN_F32, 0, "K = 0");
  matmul(3, DIMS(3, 5, 6), 3, DIMS(3, 6, 2), KILN_I64, 0, "int64 batched");
  matmul(2, DIMS(5, 6), 1, DIMS(6), KILN_I32, 0, "int32 matrix @ vector");
}

/* ---- Softmax / LogSoftmax ---- */

static void softmax(kiln_op op, int opset, int rank, const int64_t *d, bool has_axis, int64_t axis,
                    double scale, const char *what) {
  jcase c = {.op = op, .opset = opset, .n_in = 1, .n_out = 1, .rtol = 1e-5, .atol = 1e-6};
  c.in[0] = rf(rank, d);
  for (int64_t i = 0; i < c.in[0]->numel; i++) ((float *)c.in[0]->data)[i] *= (float)scale;
  if (has_axis) c.attrs[c.n_attrs++] = AI("axis", axis);
  jc_run(&c, what);
  jc_free(&c);
}

static void test_softmax(void) {
  for (int log = 0; log < 2; log++) {
    kiln_op op = log ? KILN_OP_LogSoftmax : KILN_OP_Softmax;
    softmax(op, 11, 4, DIMS(2, 3, 4, 5), true, 1, 1, "opset 11 axis 1 (coerced 2-D)");
    softmax(op, 11, 3, DIMS(2, 3, 4), false, 0, 1, "opset 11 default axis");
    softmax(op, 11, 3, DIMS(2, 3, 4), true, 0, 1, "opset 11 axis 0");
    softmax(op, 11, 3, DIMS(2, 3, 4), true, 3, 1, "opset 11 axis = rank");
    softmax(op, 13, 4, DIMS(2, 3, 4, 5), true, 1, 1, "opset 13 axis 1 (strided)");
    softmax(op, 13, 3, DIMS(2, 3, 4), false, 0, 1, "opset 13 default axis");
    softmax(op, 13, 3, DIMS(2, 3, 4), true, -3, 1, "opset 13 axis -3");
    softmax(op, 13, 2, DIMS(300, 1000), true, 1, 1, "many rows");
    softmax(op, 13, 2, DIMS(3, 1), true, 1, 1, "len 1");
    softmax(op, 13, 2, DIMS(0, 4), true, 1, 1, "empty");
    softmax(op, 13, 2, DIMS(4, 7), true, 1, 10000, "large numbers");
    softmax(op, 6, 2, DIMS(4, 7), true, 1, 1, "opset 6");
  }
  /* -inf entries (a fully masked row gives NaN, like the reference) */
  jcase c = {.op = KILN_OP_Softmax, .opset = 13, .n_in = 1, .n_out = 1};
  c.in[0] = tf(2, DIMS(2, 3), FV(-INFINITY, 0, 1, -INFINITY, -INFINITY, -INFINITY));
  jc_run(&c, "-inf");
  c.op = KILN_OP_LogSoftmax;
  jc_run(&c, "log -inf");
  jc_free(&c);
}

/* ---- losses ---- */

static void loss(kiln_op op, int rank, const int64_t *xd, bool weights, bool has_ii, int64_t ii,
                 const char *red, int n_out, kiln_dtype label_dt, const char *what) {
  jcase c = {
      .op = op, .opset = 13, .n_in = weights ? 3 : 2, .n_out = n_out, .rtol = 1e-5, .atol = 1e-6};
  int64_t C = xd[1], td[KILN_MAX_RANK];
  td[0] = xd[0];
  for (int i = 2; i < rank; i++) td[i - 1] = xd[i];
  c.in[0] = rf(rank, xd);
  if (op == KILN_OP_NegativeLogLikelihoodLoss) /* log-probability-like inputs */
    for (int64_t i = 0; i < c.in[0]->numel; i++) ((float *)c.in[0]->data)[i] -= 1.5f;
  c.in[1] = tn_new(label_dt, rank - 1, td);
  for (int64_t i = 0; i < c.in[1]->numel; i++) {
    int64_t v = (int64_t)((rnd() + 1) * 0.5 * (double)C);
    if (v >= C) v = C - 1;
    if (has_ii && i % 3 == 1) v = ii;
    kiln_tensor_set_f(c.in[1], i, (double)v);
  }
  if (weights) {
    c.in[2] = rf(1, DIMS(C));
    for (int64_t i = 0; i < C; i++) ((float *)c.in[2]->data)[i] += 1.5f;
  }
  if (has_ii) c.attrs[c.n_attrs++] = AI("ignore_index", ii);
  c.attrs[c.n_attrs++] = AS("reduction", red);
  jc_run(&c, what);
  jc_free(&c);
}

static void test_losses(void) {
  const char *reds[3] = {"none", "sum", "mean"};
  for (int ri_ = 0; ri_ < 3; ri_++) {
    const char *r = reds[ri_];
    for (int sce = 0; sce < 2; sce++) {
      kiln_op op = sce ? KILN_OP_SoftmaxCrossEntropyLoss : KILN_OP_NegativeLogLikelihoodLoss;
      loss(op, 2, DIMS(5, 4), false, false, 0, r, 1, KILN_I64, "[N,C]");
      loss(op, 2, DIMS(5, 4), true, true, 2, r, 1, KILN_I64, "[N,C] weights ii");
      loss(op, 3, DIMS(3, 5, 2), true, true, -1, r, 1, KILN_I32, "[N,C,d1] negative ii int32");
      loss(op, 5, DIMS(2, 3, 2, 3, 2), false, true, 10, r, 1, KILN_I64, "[N,C,d1,d2,d3] high ii");
      loss(op, 4, DIMS(64, 10, 17, 19), true, false, 0, r, 1, KILN_I64, "large");
      if (sce) {
        loss(op, 2, DIMS(5, 4), true, false, 0, r, 2, KILN_I64, "[N,C] log_prob");
        loss(op, 4, DIMS(2, 3, 4, 5), false, true, 1, r, 2, KILN_I32, "[N,C,d1,d2] log_prob");
      }
    }
  }
}

/* Every label ignored: mean is 0/0 = NaN in both. */
static void test_loss_all_ignored(void) {
  jcase c = {.op = KILN_OP_NegativeLogLikelihoodLoss, .opset = 13, .n_in = 2, .n_out = 1};
  c.in[0] = rf(2, DIMS(2, 3));
  c.in[1] = ti64(1, DIMS(2), IV(1, 1));
  c.attrs[c.n_attrs++] = AI("ignore_index", 1);
  jc_run(&c, "all ignored mean");
  jc_free(&c);
}

/* A label out of range: the reference reports an error, and so does the compiled program
 * (the kernel flags the status word; it never reads outside the input). */
static void test_loss_bad_label(void) {
  jcase c = {.op = KILN_OP_SoftmaxCrossEntropyLoss, .opset = 13, .n_in = 2, .n_out = 1};
  c.in[0] = rf(2, DIMS(3, 4));
  c.in[1] = ti32(1, DIMS(3), (const int32_t[]){0, 4, 2});
  c.attrs[c.n_attrs++] = AS("reduction", "none");
  one_node r;
  jc_build(&c, &r);
  CHECK(on_node(&r)->op == KILN_OP_SoftmaxCrossEntropyLoss);
  CHECK(on_run(&r) == KILN_ERR_INVALID);
  CHECK(strstr(r.e.msg, "out of range") != NULL);
  on_end(&r);
  kiln_tensor *got[4] = {0};
  one_node j;
  jc_build(&c, &j);
  CHECK_OK(ir_infer(j.g, NULL, &j.e), &j.e);
  kiln_program *p = NULL;
  kiln_compile_opts o = {.threads = 1, .cache_dir = ""};
  CHECK_OK(kiln_compile(j.g, &o, &p, &j.e), &j.e);
  if (p) {
    kiln_err e2 = {0};
    CHECK(kiln_program_run(p, c.in, got, false, &e2) == KILN_ERR_INVALID);
    CHECK(strstr(e2.msg, "out of range") != NULL && got[0] == NULL);
    kiln_program_free(p);
  }
  jc_free(&c);
}

/* Bad shapes are refused before any code is generated. */
static void test_bad_shapes(void) {
  jcase c = {.op = KILN_OP_Gemm, .opset = 13, .n_in = 2, .n_out = 1};
  c.in[0] = rf(2, DIMS(3, 4));
  c.in[1] = rf(2, DIMS(5, 6));
  one_node j;
  jc_build(&c, &j);
  CHECK(ir_infer(j.g, NULL, &j.e) == KILN_ERR_SHAPE);
  CHECK(strstr(j.e.msg, "inner dimensions") != NULL);
  on_end(&j);
  jc_free(&c);
}

int main(void) {
  RUN(test_gemm);
  RUN(test_gemm_opset6_broadcast);
  RUN(test_matmul);
  RUN(test_softmax);
  RUN(test_losses);
  RUN(test_loss_all_ignored);
  RUN(test_loss_bad_label);
  RUN(test_bad_shapes);
  TEST_MAIN_END();
}
