/* test_grad_ops.c — gradient rules of the linalg, tensor, reduce and activation ops checked
 * against finite differences (tests/gradcheck.h) over shapes that exercise axes,
 * broadcasting and the opset forms; tie conventions checked by hand; kiln.NLLLossGrad
 * compiled by the JIT against the reference at 1 and 3 threads. */
#include "codegen/compile.h"
#include "gradcheck.h"
#include "runtime/program.h"

/* ---- a one-node (or few-node) graph under test ---- */

typedef struct gt {
  kiln_graph *g;
  kiln_tensor *feed[16]; /* in g->inputs order */
  int wrt[16], n_wrt;
  int node; /* the last node added */
  uint64_t seed;
  kiln_err e;
} gt;

static void gt_begin(gt *t, int opset) {
  memset(t, 0, sizeof *t);
  t->g = ir_graph_new();
  t->seed = 99;
  ir_set_opset(t->g, "", opset, &t->e);
}

/* A float graph input filled uniformly in [lo, hi); differentiated when `diff`. */
static int gt_in(gt *t, const char *name, int rank, const int64_t *d, double lo, double hi,
                 bool diff) {
  int v;
  ir_add_value(t->g, name, &v, &t->e);
  t->g->values[v].dtype = KILN_F32;
  t->g->values[v].shape = kiln_shape_make(rank, d);
  t->g->values[v].typed = true;
  int k = t->g->n_inputs;
  ir_add_input(t->g, v, &t->e);
  kiln_tensor_new(KILN_F32, &t->g->values[v].shape, &t->feed[k], &t->e);
  gc_fill(t->feed[k], &t->seed, lo, hi);
  if (diff) t->wrt[t->n_wrt++] = k;
  return v;
}

/* The feed tensor of graph value v. */
static kiln_tensor *gt_feed(gt *t, int v) {
  for (int i = 0; i < t->g->n_inputs; i++)
    if (t->g->inputs[i] == v) return t->feed[i];
  return NULL;
}

/* Moves values within `gap` of any kink away from it (finite differences straddling a kink
 * are meaningless). */
static void gt_avoid(gt *t, int v, const double *kinks, int n, double gap) {
  kiln_tensor *x = gt_feed(t, v);
  for (int64_t i = 0; i < x->numel; i++) {
    float *p = &((float *)x->data)[i];
    for (int k = 0; k < n; k++)
      if (fabs(*p - kinks[k]) < gap) *p = (float)(kinks[k] + (*p >= kinks[k] ? gap : -gap));
  }
}

/* Distinct values 0.1 apart in a pseudo-random order (no near-ties for max/min). */
static void gt_spaced(gt *t, int v, double offset) {
  kiln_tensor *x = gt_feed(t, v);
  int64_t n = x->numel;
  for (int64_t i = 0; i < n; i++)
    ((float *)x->data)[i] = (float)((double)i * 0.1 - (double)n * 0.05 + offset);
  for (int64_t i = n - 1; i > 0; i--) {
    int64_t j = (int64_t)(gc_rng(&t->seed) % (uint64_t)(i + 1));
    float tmp = ((float *)x->data)[i];
    ((float *)x->data)[i] = ((float *)x->data)[j];
    ((float *)x->data)[j] = tmp;
  }
}

/* An integer graph input with given contents (not differentiated). */
static int gt_in_int(gt *t, const char *name, kiln_dtype dt, int rank, const int64_t *d,
                     const int64_t *vals) {
  int v;
  ir_add_value(t->g, name, &v, &t->e);
  t->g->values[v].dtype = dt;
  t->g->values[v].shape = kiln_shape_make(rank, d);
  t->g->values[v].typed = true;
  int k = t->g->n_inputs;
  ir_add_input(t->g, v, &t->e);
  kiln_tensor_new(dt, &t->g->values[v].shape, &t->feed[k], &t->e);
  for (int64_t i = 0; i < t->feed[k]->numel; i++) kiln_tensor_set_f(t->feed[k], i, (double)vals[i]);
  return v;
}

static int gt_const_i64(gt *t, const int64_t *v, int n) {
  kiln_tensor *c;
  kiln_tensor_new(KILN_I64, &(kiln_shape){.rank = 1, .d = {n}}, &c, &t->e);
  for (int i = 0; i < n; i++) ((int64_t *)c->data)[i] = v[i];
  char *nm = NULL;
  ir_unique_name(t->g, "c", &nm, &t->e);
  int id;
  ir_add_const(t->g, nm, c, true, &id, &t->e);
  kiln_free(nm);
  return id;
}

static int gt_const_f32(gt *t, int rank, const int64_t *d, const float *v) {
  kiln_tensor *c;
  kiln_shape s = kiln_shape_make(rank, d);
  kiln_tensor_new(KILN_F32, &s, &c, &t->e);
  for (int64_t i = 0; i < c->numel; i++) ((float *)c->data)[i] = v[i];
  char *nm = NULL;
  ir_unique_name(t->g, "cf", &nm, &t->e);
  int id;
  ir_add_const(t->g, nm, c, true, &id, &t->e);
  kiln_free(nm);
  return id;
}

/* Adds a node with n_out fresh outputs; returns output 0 (all through outs when given). */
static int gt_node(gt *t, kiln_op op, const int *in, int n_in, int n_out, int *outs) {
  int o[8];
  for (int i = 0; i < n_out; i++) {
    char *nm = NULL;
    ir_unique_name(t->g, "v", &nm, &t->e);
    ir_add_value(t->g, nm, &o[i], &t->e);
    kiln_free(nm);
    if (outs) outs[i] = o[i];
  }
  char name[32];
  snprintf(name, sizeof name, "n%lld", (long long)t->g->n_nodes);
  ir_add_node(t->g, op, name, in, n_in, o, n_out, &t->node, &t->e);
  t->g->nodes[t->node].opset = (int)ir_get_opset(t->g, "");
  return o[0];
}

static void gt_ints(gt *t, const char *name, const int64_t *v, int n) {
  ir_set_attr_ints(t->g, t->node, name, v, n, &t->e);
}
static void gt_int(gt *t, const char *name, int64_t v) {
  ir_set_attr_int(t->g, t->node, name, v, &t->e);
}
static void gt_float(gt *t, const char *name, double v) {
  ir_set_attr_float(t->g, t->node, name, v, &t->e);
}

/* The forward and backward graph g (gradients as outputs) compiled by the JIT gives the
 * reference's outputs; takes g. */
static void jit_matches_ref(kiln_graph *g, kiln_tensor **feed, const char *what) {
  kiln_err e = {0};
  int n_out = g->n_outputs;
  kiln_tensor *want[24] = {0}, *got[24] = {0};
  kiln_ref_ctx ctx = {.g = g};
  CHECK_OK(kiln_ref_run(g, &ctx, feed, want, &e), &e);
  kiln_program *p = NULL;
  kiln_compile_opts o = {.threads = 2, .cache_dir = ""};
  CHECK_OK(kiln_compile(g, &o, &p, &e), &e);
  if (p) {
    CHECK_OK(kiln_program_run(p, feed, got, false, &e), &e);
    int bad = 0;
    for (int i = 0; i < n_out && i < 24; i++)
      if (got[i] && want[i] && want[i]->dtype == KILN_F32)
        for (int64_t k = 0; k < want[i]->numel; k++) {
          float a = ((float *)got[i]->data)[k], b = ((float *)want[i]->data)[k];
          if (!(fabsf(a - b) <= 1e-6f + 1e-4f * fabsf(b)) && bad++ < 3)
            fprintf(stderr, "jit: output %d [%lld]: %.7g, reference %.7g\n", i, (long long)k, a, b);
        }
    CHECK_MSG(bad == 0, "%s: %d JIT results differ from the reference", what, bad);
    kiln_program_free(p);
  }
  for (int i = 0; i < 24; i++) {
    kiln_tensor_free(want[i]);
    kiln_tensor_free(got[i]);
  }
}

/* Makes y the graph output, checks every differentiated input against finite differences
 * and the compiled backward graph against the reference, frees everything. */
static void gt_check(gt *t, int y, const char *what, double rtol, double atol) {
  ir_add_output(t->g, y, &t->e);
  CHECK_OK(t->e.code, &t->e);
  kiln_evaluator ev = kiln_ref_evaluator();
  kiln_err e = {0};
  CHECK_OK(ir_infer(t->g, &ev, &e), &e);
  if (!e.code && gradcheck(t->g, t->feed, t->wrt, t->n_wrt, rtol, atol))
    fprintf(stderr, "  (%s)\n", what);
  else if (e.code)
    fprintf(stderr, "  (%s)\n", what);
  if (!e.code)
    jit_matches_ref(t->g, t->feed, what);
  else
    ir_graph_free(t->g);
  for (int i = 0; i < 16; i++) kiln_tensor_free(t->feed[i]);
}

#define RT 1e-2
#define AT 1e-3
#define D(...) ((const int64_t[]){__VA_ARGS__})
#define I(...) ((const int[]){__VA_ARGS__})
#define IV(...) ((const int64_t[]){__VA_ARGS__})

/* ---- linalg ---- */

static void gemm_case(bool ta, bool tb, int c_rank, const int64_t *cd, double alpha, double beta) {
  gt t;
  gt_begin(&t, 13);
  int64_t M = 3, K = 4, N = 5;
  int a = gt_in(&t, "a", 2, ta ? D(K, M) : D(M, K), -1, 1, true);
  int b = gt_in(&t, "b", 2, tb ? D(N, K) : D(K, N), -1, 1, true);
  int c = c_rank >= 0 ? gt_in(&t, "c", c_rank, cd, -1, 1, true) : -1;
  int y = gt_node(&t, KILN_OP_Gemm, I(a, b, c), c >= 0 ? 3 : 2, 1, NULL);
  gt_int(&t, "transA", ta);
  gt_int(&t, "transB", tb);
  gt_float(&t, "alpha", alpha);
  gt_float(&t, "beta", beta);
  char what[64];
  snprintf(what, sizeof what, "Gemm ta=%d tb=%d c_rank=%d", ta, tb, c_rank);
  gt_check(&t, y, what, RT, AT);
}

static void test_gemm(void) {
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++) gemm_case(ta, tb, 2, D(3, 5), 0.7, 1.3);
  gemm_case(false, false, -1, NULL, 1.0, 1.0);
  gemm_case(false, true, 1, D(5), 1.0, 0.5);
  gemm_case(true, false, 2, D(3, 1), 2.0, 1.0);
  gemm_case(false, false, 2, D(1, 5), 1.0, 1.0);
  gemm_case(false, false, 0, D(0), 1.0, -1.0);
}

static void matmul_case(int ra, const int64_t *da, int rb, const int64_t *db) {
  gt t;
  gt_begin(&t, 13);
  int a = gt_in(&t, "a", ra, da, -1, 1, true), b = gt_in(&t, "b", rb, db, -1, 1, true);
  int y = gt_node(&t, KILN_OP_MatMul, I(a, b), 2, 1, NULL);
  char what[64];
  snprintf(what, sizeof what, "MatMul rank %d x rank %d", ra, rb);
  gt_check(&t, y, what, RT, AT);
}

static void test_matmul(void) {
  matmul_case(2, D(3, 4), 2, D(4, 5));
  matmul_case(3, D(2, 3, 4), 2, D(4, 5));       /* linear layer: Gemm path */
  matmul_case(1, D(4), 2, D(4, 5));             /* vector on the left */
  matmul_case(2, D(3, 4), 1, D(4));             /* vector on the right */
  matmul_case(1, D(4), 1, D(4));                /* dot product */
  matmul_case(4, D(2, 1, 3, 4), 3, D(3, 4, 2)); /* both broadcast */
  matmul_case(2, D(3, 4), 3, D(2, 4, 5));       /* A broadcast over B's batch */
  matmul_case(3, D(2, 3, 4), 1, D(4));
  matmul_case(1, D(4), 3, D(2, 4, 5));
}

static void softmax_case(kiln_op op, int opset, int rank, const int64_t *d, bool has_axis,
                         int64_t axis) {
  gt t;
  gt_begin(&t, opset);
  int x = gt_in(&t, "x", rank, d, -2, 2, true);
  int y = gt_node(&t, op, I(x), 1, 1, NULL);
  if (has_axis) gt_int(&t, "axis", axis);
  char what[80];
  snprintf(what, sizeof what, "%s opset %d axis %lld%s", kiln_op_name(op), opset, (long long)axis,
           has_axis ? "" : " (default)");
  gt_check(&t, y, what, RT, AT);
}

static void test_softmax(void) {
  kiln_op ops[] = {KILN_OP_Softmax, KILN_OP_LogSoftmax};
  for (int i = 0; i < 2; i++) {
    softmax_case(ops[i], 11, 3, D(2, 3, 4), false, 1); /* 2-D coercion: rows of 12 */
    softmax_case(ops[i], 11, 3, D(2, 3, 4), true, 2);
    softmax_case(ops[i], 11, 3, D(2, 3, 4), true, 0);  /* one row of 24 */
    softmax_case(ops[i], 11, 3, D(2, 3, 4), true, 3);  /* axis == rank: rows of 1 */
    softmax_case(ops[i], 11, 3, D(2, 3, 4), true, -2);
    softmax_case(ops[i], 13, 3, D(2, 3, 4), false, -1);
    softmax_case(ops[i], 13, 3, D(2, 3, 4), true, 1); /* a single inner axis */
    softmax_case(ops[i], 13, 1, D(5), true, 0);
  }
}

/* loss(x, labels[, weights]) with the given reduction / ignore_index; `use_logp` adds the
 * SoftmaxCrossEntropyLoss log_prob output into the scalar checked. */
static void loss_case(kiln_op op, int rank, const int64_t *xd, const int64_t *labels,
                      const char *reduction, bool weights, bool has_ii, int64_t ii, bool use_logp,
                      kiln_dtype label_dt) {
  gt t;
  gt_begin(&t, 13);
  int64_t C = xd[1];
  int x = gt_in(&t, "x", rank, xd, -2, 2, true);
  int64_t ld[KILN_MAX_RANK];
  ld[0] = xd[0];
  for (int i = 2; i < rank; i++) ld[i - 1] = xd[i];
  int lab = gt_in_int(&t, "labels", label_dt, rank - 1, ld, labels);
  int w = -1;
  if (weights) {
    float wv[16];
    for (int c = 0; c < C; c++) wv[c] = 0.5f + 0.25f * (float)c;
    w = gt_const_f32(&t, 1, D(C), wv);
  }
  int outs[2];
  int n_out = use_logp ? 2 : 1;
  gt_node(&t, op, I(x, lab, w), w >= 0 ? 3 : 2, n_out, outs);
  ir_set_attr_str(t.g, t.node, "reduction", reduction, &t.e);
  if (has_ii) gt_int(&t, "ignore_index", ii);
  int y = outs[0];
  if (use_logp) { /* y = sum(loss) + sum(0.3 * logp) */
    int k = gt_const_f32(&t, 0, D(0), (const float[]){0.3f});
    int m = gt_node(&t, KILN_OP_Mul, I(outs[1], k), 2, 1, NULL);
    int s1 = gt_node(&t, KILN_OP_ReduceSum, I(m), 1, 1, NULL);
    gt_int(&t, "keepdims", 0);
    int s0 = outs[0];
    if (!strcmp(reduction, "none")) {
      s0 = gt_node(&t, KILN_OP_ReduceSum, I(outs[0]), 1, 1, NULL);
      gt_int(&t, "keepdims", 0);
    }
    y = gt_node(&t, KILN_OP_Add, I(s0, s1), 2, 1, NULL);
  }
  char what[128];
  snprintf(what, sizeof what, "%s reduction %s weights %d ignore %d logp %d", kiln_op_name(op),
           reduction, weights, has_ii, use_logp);
  gt_check(&t, y, what, RT, AT);
}

static void test_losses(void) {
  const char *reds[] = {"mean", "sum", "none"};
  kiln_op ops[] = {KILN_OP_SoftmaxCrossEntropyLoss, KILN_OP_NegativeLogLikelihoodLoss};
  for (int o = 0; o < 2; o++)
    for (int r = 0; r < 3; r++)
      for (int wi = 0; wi < 2; wi++) {
        loss_case(ops[o], 2, D(4, 5), IV(1, 0, 4, 1), reds[r], wi, false, 0, false, KILN_I64);
        /* [N, C, d1, d2] with an ignored label (-100, as PyTorch's default) */
        loss_case(ops[o], 4, D(2, 3, 2, 2), IV(0, 2, -100, 1, 1, 1, 0, 2), reds[r], wi, true, -100,
                  false, KILN_I64);
        /* ignore_index that is also a valid class */
        loss_case(ops[o], 3, D(3, 4, 2), IV(1, 3, 3, 0, 2, 1), reds[r], wi, true, 3, false,
                  KILN_I32);
      }
  loss_case(KILN_OP_SoftmaxCrossEntropyLoss, 2, D(4, 5), IV(1, 0, 4, 1), "mean", true, false, 0,
            true, KILN_I64);
  loss_case(KILN_OP_SoftmaxCrossEntropyLoss, 3, D(2, 3, 2), IV(1, 2, 0, 0), "none", false, true, 0,
            true, KILN_I64);
  /* K = 2 classes, as the study's binary classifier */
  loss_case(KILN_OP_SoftmaxCrossEntropyLoss, 2, D(6, 2), IV(1, 0, 0, 1, 1, 1), "mean", false,
            false, 0, false, KILN_I64);
}

/* A hand check of the loss gradient's form: mean with weights divides by the weight sum. */
static void test_nll_grad_values(void) {
  gt t;
  gt_begin(&t, 13);
  int x = gt_in(&t, "x", 2, D(2, 3), -1, 1, true);
  int lab = gt_in_int(&t, "labels", KILN_I64, 1, D(2), IV(2, 0));
  int w = gt_const_f32(&t, 1, D(3), (const float[]){1.0f, 2.0f, 3.0f});
  int y = gt_node(&t, KILN_OP_NegativeLogLikelihoodLoss, I(x, lab, w), 3, 1, NULL);
  ir_add_output(t.g, y, &t.e);
  kiln_evaluator ev = kiln_ref_evaluator();
  CHECK_OK(ir_infer(t.g, &ev, &t.e), &t.e);
  int grad;
  kiln_autodiff_opts o = {.loss = y, .wrt = &x, .n_wrt = 1, .seed = -1};
  CHECK_OK(kiln_autodiff(t.g, &o, &grad, &t.e), &t.e);
  ir_add_output(t.g, grad, &t.e);
  CHECK_OK(ir_infer(t.g, &ev, &t.e), &t.e);
  kiln_tensor *outs[2] = {0};
  kiln_ref_ctx ctx = {.g = t.g};
  CHECK_OK(kiln_ref_run(t.g, &ctx, t.feed, outs, &t.e), &t.e);
  if (outs[1]) {
    const float *g = (const float *)outs[1]->data;
    float want[6] = {0, 0, -3.0f / 4, -1.0f / 4, 0, 0};
    for (int i = 0; i < 6; i++) CHECK_CLOSE(g[i], want[i], 1e-6, 1e-7);
  }
  for (int i = 0; i < 2; i++) kiln_tensor_free(outs[i]);
  for (int i = 0; i < 16; i++) kiln_tensor_free(t.feed[i]);
  ir_graph_free(t.g);
}

/* ---- tensor ---- */

static void test_reshapes(void) {
  gt t;
  gt_begin(&t, 13);
  int x = gt_in(&t, "x", 3, D(2, 3, 4), -1, 1, true);
  int y = gt_node(&t, KILN_OP_Flatten, I(x), 1, 1, NULL);
  gt_int(&t, "axis", 2);
  gt_check(&t, y, "Flatten axis 2", RT, AT);

  gt_begin(&t, 13);
  x = gt_in(&t, "x", 3, D(2, 3, 4), -1, 1, true);
  y = gt_node(&t, KILN_OP_Reshape, I(x, gt_const_i64(&t, IV(4, -1), 2)), 2, 1, NULL);
  gt_check(&t, y, "Reshape", RT, AT);

  gt_begin(&t, 11); /* axes as an attribute */
  x = gt_in(&t, "x", 4, D(2, 1, 3, 1), -1, 1, true);
  y = gt_node(&t, KILN_OP_Squeeze, I(x), 1, 1, NULL);
  gt_ints(&t, "axes", IV(1), 1);
  gt_check(&t, y, "Squeeze opset 11", RT, AT);

  gt_begin(&t, 13); /* axes as an input */
  x = gt_in(&t, "x", 4, D(2, 1, 3, 1), -1, 1, true);
  y = gt_node(&t, KILN_OP_Squeeze, I(x, gt_const_i64(&t, IV(-1, 1), 2)), 2, 1, NULL);
  gt_check(&t, y, "Squeeze opset 13", RT, AT);

  gt_begin(&t, 13);
  x = gt_in(&t, "x", 2, D(2, 3), -1, 1, true);
  y = gt_node(&t, KILN_OP_Unsqueeze, I(x, gt_const_i64(&t, IV(0, 3), 2)), 2, 1, NULL);
  gt_check(&t, y, "Unsqueeze", RT, AT);

  gt_begin(&t, 13);
  x = gt_in(&t, "x", 3, D(2, 3, 4), -1, 1, true);
  y = gt_node(&t, KILN_OP_Transpose, I(x), 1, 1, NULL);
  gt_ints(&t, "perm", IV(2, 0, 1), 3);
  gt_check(&t, y, "Transpose perm", RT, AT);

  gt_begin(&t, 13);
  x = gt_in(&t, "x", 3, D(2, 3, 4), -1, 1, true);
  y = gt_node(&t, KILN_OP_Transpose, I(x), 1, 1, NULL);
  gt_check(&t, y, "Transpose default", RT, AT);

  gt_begin(&t, 13);
  x = gt_in(&t, "x", 3, D(3, 1, 4), -1, 1, true);
  y = gt_node(&t, KILN_OP_Expand, I(x, gt_const_i64(&t, IV(2, 3, 5, 4), 4)), 2, 1, NULL);
  gt_check(&t, y, "Expand", RT, AT);
}

static void test_concat_split(void) {
  gt t;
  gt_begin(&t, 13);
  int a = gt_in(&t, "a", 3, D(2, 1, 4), -1, 1, true);
  int b = gt_in(&t, "b", 3, D(2, 3, 4), -1, 1, true);
  int c = gt_in(&t, "c", 3, D(2, 2, 4), -1, 1, true);
  int y = gt_node(&t, KILN_OP_Concat, I(a, b, c), 3, 1, NULL);
  gt_int(&t, "axis", -2);
  gt_check(&t, y, "Concat axis -2", RT, AT);

  gt_begin(&t, 13); /* the same input twice: gradients accumulate */
  a = gt_in(&t, "a", 2, D(2, 3), -1, 1, true);
  y = gt_node(&t, KILN_OP_Concat, I(a, a), 2, 1, NULL);
  gt_int(&t, "axis", 0);
  gt_check(&t, y, "Concat of one input twice", RT, AT);

  for (int opset = 11; opset <= 13; opset += 2) {
    gt_begin(&t, opset);
    int x = gt_in(&t, "x", 2, D(3, 6), -1, 1, true);
    int outs[3];
    if (opset < 13) {
      gt_node(&t, KILN_OP_Split, I(x), 1, 3, outs);
      gt_ints(&t, "split", IV(1, 3, 2), 3);
    } else {
      gt_node(&t, KILN_OP_Split, I(x, gt_const_i64(&t, IV(1, 3, 2), 3)), 2, 3, outs);
    }
    gt_int(&t, "axis", 1);
    /* output 1 unused: its part of the gradient is zero */
    y = gt_node(&t, KILN_OP_Concat, I(outs[2], outs[0]), 2, 1, NULL);
    gt_int(&t, "axis", 1);
    gt_check(&t, y, opset < 13 ? "Split opset 11" : "Split opset 13", RT, AT);
  }
  gt_begin(&t, 13); /* equal parts along axis 0 */
  int x = gt_in(&t, "x", 2, D(4, 3), -1, 1, true), outs[2];
  gt_node(&t, KILN_OP_Split, I(x), 1, 2, outs);
  y = gt_node(&t, KILN_OP_Mul, I(outs[0], outs[1]), 2, 1, NULL);
  gt_check(&t, y, "Split equal", RT, AT);
}

static void slice_case(const char *what, int rank, const int64_t *d, const int64_t *st,
                       const int64_t *en, const int64_t *ax, const int64_t *sp, int n) {
  gt t;
  gt_begin(&t, 13);
  int x = gt_in(&t, "x", rank, d, -1, 1, true);
  int in[5] = {x, gt_const_i64(&t, st, n), gt_const_i64(&t, en, n),
               ax ? gt_const_i64(&t, ax, n) : -1, sp ? gt_const_i64(&t, sp, n) : -1};
  int y = gt_node(&t, KILN_OP_Slice, in, sp ? 5 : ax ? 4 : 3, 1, NULL);
  gt_check(&t, y, what, RT, AT);
}

static void test_slice(void) {
  slice_case("Slice step 1", 3, D(3, 5, 4), IV(1, 1), IV(3, -1), NULL, NULL, 2);
  slice_case("Slice axes, clamped end", 3, D(3, 5, 4), IV(2, 0), IV(100, 2), IV(-1, 0), NULL, 2);
  slice_case("Slice step 2", 2, D(3, 7), IV(1), IV(7), IV(1), IV(2), 1);
  slice_case("Slice step 3 crop", 2, D(3, 8), IV(0), IV(7), IV(1), IV(3), 1);
  slice_case("Slice step -1", 2, D(3, 6), IV(-1), IV(INT64_MIN), IV(1), IV(-1), 1);
  slice_case("Slice step -2", 2, D(3, 7), IV(5), IV(0), IV(1), IV(-2), 1);
  slice_case("Slice mixed", 3, D(4, 5, 6), IV(3, 1, 0), IV(0, 5, 6), IV(0, 1, 2), IV(-2, 3, 1), 3);
  slice_case("Slice step > dim", 2, D(3, 4), IV(1), IV(4), IV(1), IV(10), 1);
  slice_case("Slice empty", 2, D(3, 4), IV(2), IV(2), IV(1), NULL, 1);
  /* opset 9: attributes */
  gt t;
  gt_begin(&t, 9);
  int x = gt_in(&t, "x", 2, D(4, 5), -1, 1, true);
  int y = gt_node(&t, KILN_OP_Slice, I(x), 1, 1, NULL);
  gt_ints(&t, "starts", IV(1, -3), 2);
  gt_ints(&t, "ends", IV(3, 100), 2);
  gt_check(&t, y, "Slice opset 9", RT, AT);
}

static void test_pad(void) {
  gt t;
  gt_begin(&t, 13);
  int x = gt_in(&t, "x", 3, D(2, 3, 4), -1, 1, true);
  int cv = gt_in(&t, "cv", 0, D(0), -1, 1, true);
  int pads = gt_const_i64(&t, IV(0, 1, -1, 1, 2, 0), 6);
  int y = gt_node(&t, KILN_OP_Pad, I(x, pads, cv), 3, 1, NULL);
  gt_check(&t, y, "Pad pads and crops, constant value", RT, AT);

  gt_begin(&t, 2); /* attribute form */
  x = gt_in(&t, "x", 2, D(3, 4), -1, 1, true);
  y = gt_node(&t, KILN_OP_Pad, I(x), 1, 1, NULL);
  gt_ints(&t, "pads", IV(1, 0, 2, 3), 4);
  gt_float(&t, "value", 1.5);
  gt_check(&t, y, "Pad opset 2", RT, AT);

  /* reflect mode is refused with a message, not a crash */
  gt_begin(&t, 13);
  x = gt_in(&t, "x", 2, D(3, 4), -1, 1, true);
  y = gt_node(&t, KILN_OP_Pad, I(x, gt_const_i64(&t, IV(1, 1, 1, 1), 4)), 2, 1, NULL);
  ir_set_attr_str(t.g, t.node, "mode", "reflect", &t.e);
  ir_add_output(t.g, y, &t.e);
  kiln_evaluator ev = kiln_ref_evaluator();
  CHECK_OK(ir_infer(t.g, &ev, &t.e), &t.e);
  int grad;
  kiln_autodiff_opts o = {.loss = y, .wrt = &x, .n_wrt = 1, .seed = -1};
  kiln_err e = {0};
  CHECK(kiln_autodiff(t.g, &o, &grad, &e) == KILN_ERR_UNSUPPORTED);
  CHECK(strstr(e.msg, "reflect") != NULL && strstr(e.msg, "n0") != NULL);
  for (int i = 0; i < 16; i++) kiln_tensor_free(t.feed[i]);
  ir_graph_free(t.g);
}

static void test_gather(void) {
  gt t;
  gt_begin(&t, 13);
  int x = gt_in(&t, "x", 3, D(4, 3, 2), -1, 1, true);
  int idx = gt_in_int(&t, "idx", KILN_I64, 2, D(2, 2), IV(3, -4, 1, 3)); /* repeats, negative */
  int y = gt_node(&t, KILN_OP_Gather, I(x, idx), 2, 1, NULL);
  gt_check(&t, y, "Gather axis 0", RT, AT);

  gt_begin(&t, 13);
  x = gt_in(&t, "x", 3, D(2, 5, 3), -1, 1, true);
  idx = gt_in_int(&t, "idx", KILN_I32, 1, D(3), IV(4, 0, 4));
  y = gt_node(&t, KILN_OP_Gather, I(x, idx), 2, 1, NULL);
  gt_int(&t, "axis", 1);
  gt_check(&t, y, "Gather axis 1, int32", RT, AT);

  gt_begin(&t, 13);
  x = gt_in(&t, "x", 2, D(2, 5), -1, 1, true);
  idx = gt_in_int(&t, "idx", KILN_I64, 0, D(0), IV(-1));
  y = gt_node(&t, KILN_OP_Gather, I(x, idx), 2, 1, NULL);
  gt_int(&t, "axis", -1);
  gt_check(&t, y, "Gather scalar index", RT, AT);
}

/* ---- reduce ---- */

static void reduce_case(kiln_op op, int opset, int rank, const int64_t *d, const int64_t *axes,
                        int n_axes, int keep, bool noop, double lo, double hi) {
  gt t;
  gt_begin(&t, opset);
  int x = gt_in(&t, "x", rank, d, lo, hi, true);
  if (op == KILN_OP_ReduceMax || op == KILN_OP_ReduceMin) gt_spaced(&t, x, 0);
  bool axes_in = op == KILN_OP_ReduceSum && opset >= 13;
  int in[2] = {x, axes_in && axes ? gt_const_i64(&t, axes, n_axes) : -1};
  int y = gt_node(&t, op, in, in[1] >= 0 ? 2 : 1, 1, NULL);
  if (axes && !axes_in) gt_ints(&t, "axes", axes, n_axes);
  if (keep >= 0) gt_int(&t, "keepdims", keep);
  if (noop) gt_int(&t, "noop_with_empty_axes", 1);
  char what[96];
  snprintf(what, sizeof what, "%s opset %d axes %d keep %d noop %d", kiln_op_name(op), opset,
           axes ? n_axes : -1, keep, noop);
  gt_check(&t, y, what, RT, AT);
}

static void test_reduce(void) {
  kiln_op ops[] = {KILN_OP_ReduceSum, KILN_OP_ReduceMean, KILN_OP_ReduceSumSquare,
                   KILN_OP_ReduceL2, KILN_OP_ReduceMax, KILN_OP_ReduceMin};
  for (int i = 0; i < 6; i++) {
    double lo = ops[i] == KILN_OP_ReduceL2 ? 0.3 : -1, hi = 1;
    for (int opset = 11; opset <= 13; opset += 2) {
      reduce_case(ops[i], opset, 3, D(2, 3, 4), IV(1), 1, -1, false, lo, hi);
      reduce_case(ops[i], opset, 3, D(2, 3, 4), IV(0, -1), 2, 0, false, lo, hi);
      reduce_case(ops[i], opset, 3, D(2, 3, 4), NULL, 0, 1, false, lo, hi);  /* all axes */
      reduce_case(ops[i], opset, 3, D(2, 3, 4), NULL, 0, 0, false, lo, hi);
    }
  }
  reduce_case(KILN_OP_ReduceSum, 13, 2, D(2, 3), NULL, 0, 1, true, -1, 1); /* noop */
  reduce_case(KILN_OP_ReduceSum, 13, 3, D(2, 1, 4), IV(1), 1, 0, false, -1, 1);
}

/* ReduceMax ties: all of the gradient to the first maximum; Max ties: split evenly. */
static void test_ties(void) {
  for (int which = 0; which < 2; which++) {
    gt t;
    gt_begin(&t, 13);
    int x = gt_in(&t, "x", 2, D(2, 4), -1, 1, true), y;
    const float xv[8] = {1, 3, 3, 2, 5, 5, 5, 5};
    memcpy(gt_feed(&t, x)->data, xv, sizeof xv);
    if (which == 0) {
      y = gt_node(&t, KILN_OP_ReduceMax, I(x), 1, 1, NULL);
      gt_ints(&t, "axes", IV(1), 1);
    } else {
      int c = gt_const_f32(&t, 1, D(4), (const float[]){3, 3, 0, 5});
      y = gt_node(&t, KILN_OP_Max, I(x, c), 2, 1, NULL);
    }
    ir_add_output(t.g, y, &t.e);
    kiln_evaluator ev = kiln_ref_evaluator();
    CHECK_OK(ir_infer(t.g, &ev, &t.e), &t.e);
    int grad;
    kiln_autodiff_opts o = {.loss = y, .wrt = &x, .n_wrt = 1, .seed = -1};
    CHECK_OK(kiln_autodiff(t.g, &o, &grad, &t.e), &t.e);
    ir_add_output(t.g, grad, &t.e);
    CHECK_OK(ir_infer(t.g, &ev, &t.e), &t.e);
    kiln_tensor *outs[2] = {0};
    kiln_ref_ctx ctx = {.g = t.g};
    CHECK_OK(kiln_ref_run(t.g, &ctx, t.feed, outs, &t.e), &t.e);
    const float want[2][8] = {{0, 1, 0, 0, 1, 0, 0, 0}, {0, 0.5f, 1, 0, 1, 1, 1, 0.5f}};
    if (outs[1])
      for (int i = 0; i < 8; i++) CHECK_CLOSE(((float *)outs[1]->data)[i], want[which][i], 0, 0);
    for (int i = 0; i < 2; i++) kiln_tensor_free(outs[i]);
    for (int i = 0; i < 16; i++) kiln_tensor_free(t.feed[i]);
    ir_graph_free(t.g);
  }
}

/* ---- activations and other elementwise ops ---- */

static void unary_case(kiln_op op, int opset, double lo, double hi, const double *kinks, int nk,
                       void (*attrs)(gt *)) {
  gt t;
  gt_begin(&t, opset);
  int x = gt_in(&t, "x", 2, D(3, 7), lo, hi, true);
  if (nk) gt_avoid(&t, x, kinks, nk, 0.05);
  int y = gt_node(&t, op, I(x), 1, 1, NULL);
  if (attrs) attrs(&t);
  gt_check(&t, y, kiln_op_name(op), RT, AT);
}

static void leaky_attrs(gt *t) { gt_float(t, "alpha", 0.2); }
static void elu_attrs(gt *t) { gt_float(t, "alpha", 0.7); }
static void hs_attrs(gt *t) {
  gt_float(t, "alpha", 0.3);
  gt_float(t, "beta", 0.4);
}
static void clip_attrs(gt *t) {
  gt_float(t, "min", -0.5);
  gt_float(t, "max", 0.7);
}
static void clip_min_only(gt *t) { gt_float(t, "min", -0.5); }

static void test_unary(void) {
  const double zero[] = {0}, hsw[] = {-3, 3}, hsg[] = {-4.0 / 3, 2}, clip[] = {-0.5, 0.7};
  unary_case(KILN_OP_LeakyRelu, 13, -2, 2, zero, 1, leaky_attrs);
  unary_case(KILN_OP_LeakyRelu, 13, -2, 2, zero, 1, NULL);
  unary_case(KILN_OP_Elu, 13, -2, 2, zero, 1, elu_attrs);
  unary_case(KILN_OP_Selu, 13, -2, 2, zero, 1, NULL);
  unary_case(KILN_OP_Softplus, 13, -3, 3, NULL, 0, NULL);
  unary_case(KILN_OP_Softsign, 13, -3, 3, zero, 1, NULL);
  unary_case(KILN_OP_HardSigmoid, 13, -4, 4, hsg, 2, hs_attrs);
  unary_case(KILN_OP_HardSwish, 14, -5, 5, hsw, 2, NULL);
  unary_case(KILN_OP_Clip, 6, -2, 2, clip, 2, clip_attrs);
  unary_case(KILN_OP_Clip, 6, -2, 2, clip, 2, clip_min_only);
  unary_case(KILN_OP_Abs, 13, -2, 2, zero, 1, NULL);
  unary_case(KILN_OP_Reciprocal, 13, 0.5, 2, NULL, 0, NULL);
  unary_case(KILN_OP_Erf, 13, -2, 2, NULL, 0, NULL);
}

static void test_clip_inputs(void) {
  for (int variant = 0; variant < 3; variant++) {
    gt t;
    gt_begin(&t, 13);
    int x = gt_in(&t, "x", 2, D(4, 5), -2, 2, true);
    gt_avoid(&t, x, (const double[]){-0.5, 0.7}, 2, 0.05);
    int mn = gt_const_f32(&t, 0, D(0), (const float[]){-0.5f});
    int mx = gt_const_f32(&t, 1, D(1), (const float[]){0.7f});
    int in[3] = {x, variant == 1 ? -1 : mn, variant == 2 ? -1 : mx};
    int y = gt_node(&t, KILN_OP_Clip, in, variant == 2 ? 2 : 3, 1, NULL);
    gt_check(&t, y, "Clip opset 13", RT, AT);
  }
}

static void binary_case(kiln_op op, int opset, int ra, const int64_t *da, int rb, const int64_t *db,
                        double lo, double hi, void (*attrs)(gt *)) {
  gt t;
  gt_begin(&t, opset);
  int a = gt_in(&t, "a", ra, da, lo, hi, true), b = gt_in(&t, "b", rb, db, lo, hi, true);
  if (op == KILN_OP_PRelu) gt_avoid(&t, a, (const double[]){0}, 1, 0.05);
  if (op == KILN_OP_Max || op == KILN_OP_Min) { /* no near-ties */
    gt_spaced(&t, a, 0);
    gt_spaced(&t, b, 0.05);
  }
  int y = gt_node(&t, op, I(a, b), 2, 1, NULL);
  if (attrs) attrs(&t);
  char what[64];
  snprintf(what, sizeof what, "%s opset %d", kiln_op_name(op), opset);
  gt_check(&t, y, what, RT, AT);
}

static void legacy_bcast(gt *t) {
  gt_int(t, "broadcast", 1);
  gt_int(t, "axis", 1);
}

static void test_binary(void) {
  binary_case(KILN_OP_PRelu, 13, 4, D(2, 3, 2, 2), 3, D(3, 1, 1), -2, 2, NULL);
  binary_case(KILN_OP_PRelu, 13, 2, D(3, 4), 1, D(4), -2, 2, NULL);
  binary_case(KILN_OP_PRelu, 6, 4, D(2, 3, 2, 2), 1, D(3), -2, 2, NULL); /* per channel */
  binary_case(KILN_OP_Pow, 13, 2, D(3, 4), 2, D(3, 4), 0.5, 2, NULL);
  binary_case(KILN_OP_Pow, 13, 2, D(3, 4), 1, D(4), 0.5, 2, NULL);
  binary_case(KILN_OP_Pow, 6, 3, D(2, 3, 4), 1, D(3), 0.5, 2, legacy_bcast);
  binary_case(KILN_OP_Max, 13, 2, D(3, 4), 1, D(4), -1, 1, NULL);
  binary_case(KILN_OP_Min, 13, 2, D(3, 1), 2, D(3, 4), -1, 1, NULL);
  binary_case(KILN_OP_Sum, 13, 2, D(3, 4), 1, D(4), -1, 1, NULL);
  binary_case(KILN_OP_Mean, 13, 2, D(3, 1), 2, D(3, 4), -1, 1, NULL);
}

/* constant exponents: x^2, x^0.5, x^-1.5, x^3 (int64), x^0 */
static void test_pow_const(void) {
  const float ex[] = {2.0f, 0.5f, -1.5f, 1.0f, 0.0f};
  for (int i = 0; i < 6; i++) {
    gt t;
    gt_begin(&t, 13);
    int x = gt_in(&t, "x", 2, D(3, 4), 0.5, 2, true), c;
    if (i < 5) {
      c = gt_const_f32(&t, 0, D(0), &ex[i]);
    } else {
      kiln_tensor *ct;
      kiln_tensor_new(KILN_I64, &(kiln_shape){.rank = 0}, &ct, &t.e);
      ((int64_t *)ct->data)[0] = 3;
      ir_add_const(t.g, "three", ct, true, &c, &t.e);
    }
    int y = gt_node(&t, KILN_OP_Pow, I(x, c), 2, 1, NULL);
    gt_check(&t, y, "Pow constant exponent", RT, AT);
  }
}

static void test_variadic(void) {
  kiln_op ops[] = {KILN_OP_Sum, KILN_OP_Mean, KILN_OP_Max, KILN_OP_Min};
  for (int i = 0; i < 4; i++) {
    gt t;
    gt_begin(&t, 13);
    int a = gt_in(&t, "a", 2, D(3, 4), -1, 1, true), b = gt_in(&t, "b", 1, D(4), -1, 1, true);
    int c = gt_in(&t, "c", 2, D(3, 1), -1, 1, true);
    gt_spaced(&t, a, 0);
    gt_spaced(&t, b, 0.033);
    gt_spaced(&t, c, 0.066);
    int y = gt_node(&t, ops[i], I(a, b, c), 3, 1, NULL);
    gt_check(&t, y, kiln_op_name(ops[i]), RT, AT);
  }
  gt t;
  gt_begin(&t, 13);
  int a = gt_in(&t, "a", 2, D(3, 4), -1, 1, true);
  int y = gt_node(&t, KILN_OP_Max, I(a), 1, 1, NULL);
  gt_check(&t, y, "Max of one input", RT, AT);
}

static void test_where_cast(void) {
  gt t;
  gt_begin(&t, 13);
  int c = gt_in_int(&t, "c", KILN_BOOL, 2, D(3, 1), IV(1, 0, 1));
  int a = gt_in(&t, "a", 2, D(3, 4), -1, 1, true), b = gt_in(&t, "b", 1, D(4), -1, 1, true);
  int y = gt_node(&t, KILN_OP_Where, I(c, a, b), 3, 1, NULL);
  gt_check(&t, y, "Where", RT, AT);

  gt_begin(&t, 13);
  a = gt_in(&t, "a", 2, D(3, 4), -1, 1, true);
  y = gt_node(&t, KILN_OP_Cast, I(a), 1, 1, NULL);
  gt_int(&t, "to", KILN_F32);
  gt_check(&t, y, "Cast float -> float", RT, AT);
}

/* Dropout: inference forms are identities; with the mask output the gradient is
 * dy * mask / (1 - ratio) in training. */
static void test_dropout(void) {
  for (int opset = 7; opset <= 13; opset += 6) {
    gt t;
    gt_begin(&t, opset);
    int a = gt_in(&t, "a", 2, D(3, 4), -1, 1, true);
    int y = gt_node(&t, KILN_OP_Dropout, I(a), 1, 1, NULL);
    gt_check(&t, y, "Dropout inference", RT, AT);
  }
  /* training with a mask: the gradient from the reference run in training mode */
  gt t;
  gt_begin(&t, 13);
  int x = gt_in(&t, "x", 2, D(8, 16), -1, 1, true);
  int ratio = gt_const_f32(&t, 0, D(0), (const float[]){0.25f}), tm, outs[2];
  kiln_tensor *tmt;
  kiln_tensor_new(KILN_BOOL, &(kiln_shape){.rank = 0}, &tmt, &t.e);
  ((uint8_t *)tmt->data)[0] = 1;
  ir_add_const(t.g, "training_mode", tmt, true, &tm, &t.e);
  gt_node(&t, KILN_OP_Dropout, I(x, ratio, tm), 3, 2, outs);
  gt_int(&t, "seed", 7);
  ir_add_output(t.g, outs[0], &t.e);
  ir_add_output(t.g, outs[1], &t.e);
  kiln_evaluator ev = kiln_ref_evaluator();
  CHECK_OK(ir_infer(t.g, &ev, &t.e), &t.e);
  int grad;
  kiln_autodiff_opts o = {.loss = outs[0], .wrt = &x, .n_wrt = 1, .seed = -1};
  CHECK_OK(kiln_autodiff(t.g, &o, &grad, &t.e), &t.e);
  ir_add_output(t.g, grad, &t.e);
  CHECK_OK(ir_infer(t.g, &ev, &t.e), &t.e);
  kiln_tensor *res[3] = {0};
  kiln_ref_ctx ctx = {.g = t.g, .training = true};
  CHECK_OK(kiln_ref_run(t.g, &ctx, t.feed, res, &t.e), &t.e);
  if (res[2]) {
    int dropped = 0;
    for (int i = 0; i < 128; i++) {
      bool keep = ((uint8_t *)res[1]->data)[i] != 0;
      dropped += !keep;
      CHECK_CLOSE(((float *)res[2]->data)[i], keep ? 1.0f / 0.75f : 0.0f, 0, 0);
    }
    CHECK(dropped > 0 && dropped < 128);
  }
  for (int i = 0; i < 3; i++) kiln_tensor_free(res[i]);
  for (int i = 0; i < 16; i++) kiln_tensor_free(t.feed[i]);
  ir_graph_free(t.g);
}

/* ---- kiln.NLLLossGrad: JIT against the reference ---- */

static kiln_graph *nll_grad_graph(const char *reduction, bool weights, bool has_ii, int64_t ii,
                                  int64_t N, int64_t C, int64_t D_, kiln_dtype ldt, kiln_err *e) {
  kiln_graph *g = ir_graph_new();
  ir_set_opset(g, "", 17, e);
  ir_set_opset(g, "kiln", 1, e);
  bool none = !strcmp(reduction, "none");
  int dl, lab, w = -1, y;
  ir_add_value(g, "dl", &dl, e);
  g->values[dl].dtype = KILN_F32;
  g->values[dl].shape = none ? kiln_shape_make(2, D(N, D_)) : kiln_shape_make(0, NULL);
  g->values[dl].typed = true;
  ir_add_input(g, dl, e);
  ir_add_value(g, "labels", &lab, e);
  g->values[lab].dtype = ldt;
  g->values[lab].shape = kiln_shape_make(2, D(N, D_));
  g->values[lab].typed = true;
  ir_add_input(g, lab, e);
  if (weights) {
    ir_add_value(g, "w", &w, e);
    g->values[w].dtype = KILN_F32;
    g->values[w].shape = kiln_shape_make(1, D(C));
    g->values[w].typed = true;
    ir_add_input(g, w, e);
  }
  ir_add_value(g, "dx", &y, e);
  int nid;
  ir_add_node(g, KILN_OP_NLLLossGrad, "g", I(dl, lab, w), weights ? 3 : 2, &y, 1, &nid, e);
  ir_set_attr_int(g, nid, "classes", C, e);
  ir_set_attr_str(g, nid, "reduction", reduction, e);
  if (has_ii) ir_set_attr_int(g, nid, "ignore_index", ii, e);
  ir_add_output(g, y, e);
  kiln_evaluator ev = kiln_ref_evaluator();
  ir_infer(g, &ev, e);
  return g;
}

static void nll_jit_case(const char *reduction, bool weights, bool has_ii, int64_t N, int64_t C,
                         int64_t D_, kiln_dtype ldt) {
  kiln_err e = {0};
  int64_t ii = 1;
  kiln_graph *g = nll_grad_graph(reduction, weights, has_ii, ii, N, C, D_, ldt, &e);
  CHECK_OK(e.code, &e);
  if (e.code) {
    ir_graph_free(g);
    return;
  }
  kiln_tensor *in[3] = {0};
  uint64_t seed = 5;
  for (int i = 0; i < g->n_inputs; i++) {
    const kiln_value *v = &g->values[g->inputs[i]];
    kiln_tensor_new(v->dtype, &v->shape, &in[i], &e);
    if (v->dtype == KILN_F32)
      gc_fill(in[i], &seed, 0.1, 2);
    else
      for (int64_t k = 0; k < in[i]->numel; k++)
        kiln_tensor_set_f(in[i], k, (double)(gc_rng(&seed) % (uint64_t)C));
  }
  kiln_tensor *want = NULL;
  kiln_ref_ctx ctx = {.g = g};
  CHECK_OK(kiln_ref_run(g, &ctx, in, &want, &e), &e);
  for (int threads = 1; threads <= 3; threads += 2) {
    kiln_program *p = NULL;
    kiln_compile_opts o = {.threads = threads, .cache_dir = ""};
    /* kiln_compile takes the graph */
    kiln_graph *gj = nll_grad_graph(reduction, weights, has_ii, ii, N, C, D_, ldt, &e);
    CHECK_OK(kiln_compile(gj, &o, &p, &e), &e);
    if (!p) continue;
    CHECK(p->n_fallback == 0);
    kiln_tensor *got = NULL;
    CHECK_OK(kiln_program_run(p, in, &got, false, &e), &e);
    if (got && want)
      CHECK_MSG(memcmp(got->data, want->data, kiln_tensor_nbytes(want)) == 0,
                "NLLLossGrad %s weights %d ignore %d [%lld,%lld,%lld] threads %d differs",
                reduction, weights, has_ii, (long long)N, (long long)C, (long long)D_, threads);
    kiln_tensor_free(got);
    kiln_program_free(p);
  }
  kiln_tensor_free(want);
  for (int i = 0; i < 3; i++) kiln_tensor_free(in[i]);
  ir_graph_free(g);
}

static void test_nll_grad_jit(void) {
  const char *reds[] = {"mean", "sum", "none"};
  for (int r = 0; r < 3; r++)
    for (int w = 0; w < 2; w++)
      for (int ii = 0; ii < 2; ii++) {
        nll_jit_case(reds[r], w, ii, 8, 10, 1, KILN_I64);
        nll_jit_case(reds[r], w, ii, 3, 5, 37, KILN_I32);
        nll_jit_case(reds[r], w, ii, 2, 4000, 9, KILN_I64); /* several d-blocks per row */
      }
}

/* Bad inputs are reported: a label out of range, dLoss of the wrong shape. */
static void test_nll_grad_errors(void) {
  kiln_err e = {0};
  kiln_graph *g = nll_grad_graph("mean", false, false, 0, 2, 3, 1, KILN_I64, &e);
  CHECK_OK(e.code, &e);
  kiln_tensor *in[2];
  kiln_tensor_new(KILN_F32, &(kiln_shape){.rank = 0}, &in[0], &e);
  kiln_tensor_new(KILN_I64, &(kiln_shape){.rank = 2, .d = {2, 1}}, &in[1], &e);
  ((int64_t *)in[1]->data)[1] = 3;
  kiln_tensor *out = NULL;
  kiln_ref_ctx ctx = {.g = g};
  CHECK(kiln_ref_run(g, &ctx, in, &out, &e) == KILN_ERR_INVALID);
  CHECK(strstr(e.msg, "out of range") != NULL);
  kiln_tensor_free(out);
  kiln_tensor_free(in[0]);
  kiln_tensor_free(in[1]);
  ir_graph_free(g);

  kiln_err e2 = {0};
  g = nll_grad_graph("none", false, false, 0, 2, 3, 1, KILN_I64, &e2);
  g->values[g->inputs[0]].shape = kiln_shape_make(1, D(5));
  kiln_evaluator ev = kiln_ref_evaluator();
  kiln_err e3 = {0};
  CHECK(ir_infer(g, &ev, &e3) == KILN_ERR_SHAPE);
  CHECK(strstr(e3.msg, "dLoss") != NULL);
  ir_graph_free(g);
}

/* The backward graph of a small classifier (Gemm, Relu, Gemm, SoftmaxCrossEntropyLoss)
 * compiles with the JIT and matches the reference. */
static void build_mlp(gt *t) {
  gt_begin(t, 13);
  int x = gt_in(t, "x", 2, D(6, 5), -1, 1, false);
  int w1 = gt_in(t, "w1", 2, D(8, 5), -0.5, 0.5, true);
  int b1 = gt_in(t, "b1", 1, D(8), -0.1, 0.1, true);
  int w2 = gt_in(t, "w2", 2, D(3, 8), -0.5, 0.5, true);
  int b2 = gt_in(t, "b2", 1, D(3), -0.1, 0.1, true);
  int lab = gt_in_int(t, "labels", KILN_I64, 1, D(6), IV(0, 2, 1, 1, 0, 2));
  int h = gt_node(t, KILN_OP_Gemm, I(x, w1, b1), 3, 1, NULL);
  gt_int(t, "transB", 1);
  int r = gt_node(t, KILN_OP_Relu, I(h), 1, 1, NULL);
  int s = gt_node(t, KILN_OP_Gemm, I(r, w2, b2), 3, 1, NULL);
  gt_int(t, "transB", 1);
  int loss = gt_node(t, KILN_OP_SoftmaxCrossEntropyLoss, I(s, lab), 2, 1, NULL);
  ir_add_output(t->g, loss, &t->e);
  kiln_evaluator ev = kiln_ref_evaluator();
  CHECK_OK(ir_infer(t->g, &ev, &t->e), &t->e);
  int wrt[4] = {w1, b1, w2, b2}, grads[4];
  kiln_autodiff_opts o = {.loss = loss, .wrt = wrt, .n_wrt = 4, .seed = -1};
  CHECK_OK(kiln_autodiff(t->g, &o, grads, &t->e), &t->e);
  for (int i = 0; i < 4; i++) ir_add_output(t->g, grads[i], &t->e);
  CHECK_OK(ir_toposort(t->g, &t->e), &t->e);
  CHECK_OK(ir_infer(t->g, &ev, &t->e), &t->e);
}

static void test_backward_jit(void) {
  gt t, tj;
  build_mlp(&t);
  build_mlp(&tj);
  kiln_tensor *want[5] = {0}, *got[5] = {0};
  kiln_ref_ctx ctx = {.g = t.g};
  CHECK_OK(kiln_ref_run(t.g, &ctx, t.feed, want, &t.e), &t.e);
  kiln_program *p = NULL;
  kiln_compile_opts co = {.threads = 2, .cache_dir = ""};
  CHECK_OK(kiln_compile(tj.g, &co, &p, &tj.e), &tj.e); /* takes tj.g */
  if (p) {
    CHECK(p->n_fallback == 0);
    CHECK_OK(kiln_program_run(p, t.feed, got, false, &t.e), &t.e);
    for (int i = 0; i < 5; i++)
      if (got[i] && want[i])
        for (int64_t k = 0; k < want[i]->numel; k++)
          CHECK_CLOSE(((float *)got[i]->data)[k], ((float *)want[i]->data)[k], 1e-4, 1e-6);
    kiln_program_free(p);
  }
  for (int i = 0; i < 5; i++) {
    kiln_tensor_free(want[i]);
    kiln_tensor_free(got[i]);
  }
  for (int i = 0; i < 16; i++) {
    kiln_tensor_free(t.feed[i]);
    kiln_tensor_free(tj.feed[i]);
  }
  ir_graph_free(t.g);
}

int main(void) {
  RUN(test_gemm);
  RUN(test_matmul);
  RUN(test_softmax);
  RUN(test_losses);
  RUN(test_nll_grad_values);
  RUN(test_reshapes);
  RUN(test_concat_split);
  RUN(test_slice);
  RUN(test_pad);
  RUN(test_gather);
  RUN(test_reduce);
  RUN(test_ties);
  RUN(test_unary);
  RUN(test_clip_inputs);
  RUN(test_binary);
  RUN(test_pow_const);
  RUN(test_variadic);
  RUN(test_where_cast);
  RUN(test_dropout);
  RUN(test_nll_grad_jit);
  RUN(test_nll_grad_errors);
  RUN(test_backward_jit);
  TEST_MAIN_END();
}
