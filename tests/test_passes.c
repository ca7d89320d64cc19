/* test_passes.c — the graph passes (fold, eliminate-identity, fold-bn, dce) and the
 * pass manager: small hand-built graphs whose IR before and after is compared with
 * golden text (tests/data/passes/<case>.txt; KILN_UPDATE_GOLDEN=1 rewrites them), and
 * differential execution (reference interpreter before vs after the pipeline, and after
 * an ONNX save/load round trip) on those graphs, on ONNX conformance models, on a
 * kiln-built ResNet and on PyTorch exports. */
#include <dirent.h>
#include <stdint.h>
#include <sys/stat.h>

#include "frontend/onnx.h"
#include "models/models.h"
#include "passes/pass.h"
#include "runtime/ref.h"
#include "test.h"
#include "graph_build.h"

#define DATA_DIR KILN_SOURCE_DIR "/tests/data"
#define SUITE_DIR "/usr/share/libonnx-testdata/data"

/* ---- differential execution ---- */

/* Runs g on `in` (or on seeded random inputs when NULL) with the reference kernels. */
static kiln_code run_ref(const kiln_graph *g, kiln_tensor *const *in, kiln_tensor **out,
                         kiln_err *e) {
  kiln_tensor *rnd[64] = {0};
  if (!in) {
    kiln_code rc = random_inputs(g, 7, rnd, e);
    if (rc) {
      free_tensors(rnd, 64);
      return rc;
    }
    in = rnd;
  }
  kiln_ref_ctx ctx = {.g = g};
  kiln_code rc = kiln_ref_run(g, &ctx, in, out, e);
  free_tensors(rnd, 64);
  return rc;
}

typedef struct diff_case {
  const char *pipeline;  /* NULL: the mode's default */
  kiln_pass_mode mode;
  const char *golden;    /* compare "before" and "after" IR with this golden (NULL: none) */
  kiln_tensor *const *inputs; /* NULL: seeded random inputs */
  double tol;
} diff_case;

/* Infers g, runs it, optimizes it, checks the IR against the golden text, runs it again
 * and after an ONNX save/load round trip, and compares the outputs.  Leaves g optimized. */
static void diff_run(kiln_graph *g, const diff_case *c, kiln_pipeline_result *res) {
  kiln_err e = {0};
  kiln_evaluator ev = kiln_ref_evaluator();
  kiln_tensor *before[64] = {0}, *after[64] = {0}, *back[64] = {0};
  char *text0 = NULL;
  kiln_graph *g2 = NULL;
  uint8_t *buf = NULL;
  size_t len = 0;
  double tol = c->tol > 0 ? c->tol : 1e-4;
  CHECK(g->n_outputs <= 64);
  CHECK_OK(ir_toposort(g, &e), &e);
  CHECK_OK(ir_verify(g, &e), &e);
  CHECK_OK(ir_infer(g, &ev, &e), &e);
  if (e.code) return;
  text0 = ir_text(g);
  CHECK_OK(run_ref(g, c->inputs, before, &e), &e);
  kiln_pass_ctx cx = {.mode = c->mode, .ev = &ev, .verify = true};
  kiln_pipeline_result local;
  CHECK_OK(kiln_run_pipeline(g, c->pipeline, &cx, res ? res : &local, &e), &e);
  if (e.code) goto done;
  if (c->golden) {
    char *text1 = ir_text(g), *all = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&all, &n);
    fprintf(f, "; before\n%s; after %s (%s)\n%s", text0,
            c->pipeline ? c->pipeline : kiln_default_pipeline(c->mode),
            c->mode == KILN_MODE_TRAINING ? "training" : "inference", text1);
    fclose(f);
    check_golden_in("passes", c->golden, all);
    free(text1);
    free(all);
  }
  CHECK_OK(run_ref(g, c->inputs, after, &e), &e);
  for (int i = 0; i < g->n_outputs && !e.code; i++)
    CHECK(tensors_close(after[i], before[i], tol, g->values[g->outputs[i]].name));
  /* the optimized graph saves and loads back, and still computes the same */
  CHECK_OK(kiln_onnx_save_buffer(g, &buf, &len, &e), &e);
  if (e.code) goto done;
  CHECK_OK(kiln_onnx_load_buffer(buf, len, NULL, "optimized", &g2, &e), &e);
  if (e.code) goto done;
  CHECK_OK(ir_infer(g2, &ev, &e), &e);
  CHECK(g2->n_outputs == g->n_outputs);
  if (e.code || g2->n_outputs != g->n_outputs) goto done;
  CHECK_OK(run_ref(g2, c->inputs, back, &e), &e);
  for (int i = 0; i < g->n_outputs && !e.code; i++) {
    CHECK(!strcmp(g2->values[g2->outputs[i]].name, g->values[g->outputs[i]].name));
    CHECK(tensors_close(back[i], before[i], tol, g->values[g->outputs[i]].name));
  }
done:
  free(text0);
  kiln_free(buf);
  ir_graph_free(g2);
  free_tensors(before, 64);
  free_tensors(after, 64);
  free_tensors(back, 64);
}

/* ---- fold ---- */

/* x -> Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [-1])) -> MatMul(Transpose(W)),
 * the chain PyTorch writes for x.view(x.size(0), -1); plus a large weight transform (more
 * than ir_infer folds), a large ConstantOfShape that stays, and Shape(x) as an output. */
static kiln_graph *build_fold_graph(kiln_err *e) {
  gb b;
  gb_begin(&b, 13, 12345);
  int x = gb_input(&b, "x", KILN_F32, 4, IV(2, 3, 4, 4));
  int shape = NODE(&b, Shape, "shape", x);
  int g0 = NODE(&b, Gather, "batch", shape, gb_ints(&b, "zero", 0, 1, IV(0)));
  int u = NODE(&b, Unsqueeze, "batch_1d", g0, gb_ints(&b, "axes0", 1, 1, IV(0)));
  int nid;
  int cat = gb_node(&b, KILN_OP_Concat, "new_shape", IN(u, gb_ints(&b, "minus1", 1, 1, IV(-1))), 1,
                    &nid);
  ir_set_attr_int(b.g, nid, "axis", 0, &b.e);
  int flat = NODE(&b, Reshape, "flat", x, cat);
  int wt = gb_node(&b, KILN_OP_Transpose, "w_t", IN(gb_rand(&b, "w", 2, IV(5, 48), -1, 1)), 1,
                   &nid);
  ir_set_attr_ints(b.g, nid, "perm", IV(1, 0), 2, &b.e);
  int y = NODE(&b, MatMul, "y", flat, wt);
  /* 300 x 300 = 90000 elements: more than ir_infer folds (65536), folded by the pass */
  int big = gb_node(&b, KILN_OP_Transpose, "big_t", IN(gb_rand(&b, "big", 2, IV(300, 300), -1, 1)),
                    1, &nid);
  int x2 = gb_input(&b, "x2", KILN_F32, 2, IV(300, 300));
  int z = NODE(&b, Add, "z", x2, big);
  /* 1.2M zeros from a 3-element shape: folding would store them; it stays */
  int zeros = NODE(&b, ConstantOfShape, "zeros", gb_ints(&b, "zshape", 1, 3, IV(1, 1200, 1000)));
  gb_output(&b, y);
  gb_output(&b, z);
  gb_output(&b, zeros);
  gb_output(&b, shape);
  *e = b.e;
  return b.g;
}

static void test_fold(void) {
  kiln_err e = {0};
  kiln_graph *g = build_fold_graph(&e);
  CHECK_OK(e.code, &e);
  kiln_pipeline_result res;
  diff_run(g, &(diff_case){.pipeline = "fold,dce", .golden = "fold"}, &res);
  CHECK_MSG(res.n == 2 && res.stats[0].changes == 6, "%s", res.stats[0].detail);
  CHECK_MSG(strstr(res.stats[0].detail, "1 evaluated here") != NULL, "%s", res.stats[0].detail);
  CHECK_MSG(strstr(res.stats[0].detail, "1 kept") != NULL, "%s", res.stats[0].detail);
  CHECK(count_op(g, KILN_OP_Transpose) == 0 && count_op(g, KILN_OP_Shape) == 0);
  CHECK(count_op(g, KILN_OP_ConstantOfShape) == 1);
  /* the Shape output is a graph output that became a constant */
  const kiln_value *sv = &g->values[g->outputs[3]];
  CHECK(!strcmp(sv->name, "shape") && sv->data && sv->producer < 0 && sv->data->numel == 4);
  ir_graph_free(g);
}

/* In training mode folding a float initializer would stop it being trained. */
static void test_fold_training(void) {
  kiln_err e = {0};
  kiln_graph *g = build_fold_graph(&e);
  CHECK_OK(e.code, &e);
  kiln_pipeline_result res;
  diff_run(g, &(diff_case){.pipeline = "fold,dce", .mode = KILN_MODE_TRAINING,
                           .golden = "fold_training"},
           &res);
  CHECK(count_op(g, KILN_OP_Transpose) == 2 && count_op(g, KILN_OP_Shape) == 0);
  CHECK(count_op(g, KILN_OP_Reshape) == 1 && count_op(g, KILN_OP_Concat) == 0);
  ir_graph_free(g);
}

static kiln_code failing_eval(void *ctx, const kiln_graph *g, const kiln_node *n,
                              kiln_tensor *const *in, kiln_tensor **out, kiln_err *e) {
  (void)ctx, (void)g, (void)n, (void)in, (void)out;
  return kiln_errf(e, KILN_ERR_INTERNAL, "evaluation failed");
}

/* An evaluation error while folding stops the pipeline with a message naming the node. */
static void test_fold_error(void) {
  gb b;
  gb_begin(&b, 13, 12345);
  int nid;
  /* 90000 elements: too many for ir_infer to fold, so the pass evaluates it */
  int t = gb_node(&b, KILN_OP_Transpose, "big_t", IN(gb_rand(&b, "big", 2, IV(300, 300), -1, 1)),
                  1, &nid);
  int x = gb_input(&b, "x", KILN_F32, 2, IV(300, 300));
  gb_output(&b, NODE(&b, Add, "y", x, t));
  CHECK_OK(b.e.code, &b.e);
  kiln_err e = {0};
  kiln_evaluator ev = kiln_ref_evaluator(), bad = ev;
  bad.eval = failing_eval;
  CHECK_OK(ir_infer(b.g, &ev, &e), &e);
  kiln_pass_ctx cx = {.ev = &bad};
  CHECK(kiln_run_pipeline(b.g, "fold", &cx, NULL, &e) == KILN_ERR_INTERNAL);
  CHECK_MSG(strstr(e.msg, "pass fold") && strstr(e.msg, "big_t") &&
                strstr(e.msg, "evaluation failed"),
            "%s", e.msg);
  ir_graph_free(b.g);
}

/* ---- eliminate-identity ---- */

static kiln_graph *build_identity_graph(kiln_err *e) {
  gb b;
  gb_begin(&b, 13, 12345);
  int nid;
  int x = gb_input(&b, "x", KILN_F32, 2, IV(2, 6));
  int x2 = gb_input(&b, "x2", KILN_F32, 2, IV(3, 4));
  int a = NODE(&b, Identity, "a", x);
  int bd = NODE(&b, Dropout, "b", a); /* opset 13, no training_mode: identity at inference */
  int c = NODE(&b, Reshape, "c", bd, gb_ints(&b, "shape_c", 1, 2, IV(2, 6)));
  int d = gb_node(&b, KILN_OP_Flatten, "d", IN(c), 1, &nid);
  ir_set_attr_int(b.g, nid, "axis", 1, &b.e);
  int ce = gb_node(&b, KILN_OP_Cast, "e", IN(d), 1, &nid);
  ir_set_attr_int(b.g, nid, "to", KILN_F32, &b.e);
  int f = gb_node(&b, KILN_OP_Transpose, "f", IN(ce), 1, &nid);
  ir_set_attr_ints(b.g, nid, "perm", IV(0, 1), 2, &b.e);
  int gu = NODE(&b, Unsqueeze, "g", f, gb_ints(&b, "axes_g", 1, 2, IV(0, 1))); /* [1,1,2,6] */
  int h = gb_node(&b, KILN_OP_Transpose, "h", IN(gu), 1, &nid); /* swaps two size-1 axes */
  ir_set_attr_ints(b.g, nid, "perm", IV(1, 0, 2, 3), 4, &b.e);
  int k = NODE(&b, Squeeze, "k", h, gb_ints(&b, "axes_k", 1, 2, IV(0, 1))); /* real: stays */
  int t = gb_node(&b, KILN_OP_Transpose, "t", IN(k), 1, &nid); /* real: stays */
  ir_set_attr_ints(b.g, nid, "perm", IV(1, 0), 2, &b.e);
  /* training_mode true, but ratio 0: still the identity */
  int r0 = NODE(&b, Dropout, "r0", t, gb_scalar(&b, "ratio0", KILN_F32, 0),
                gb_scalar(&b, "train", KILN_BOOL, 1));
  int o1 = NODE(&b, Identity, "o1", r0); /* a graph output: t's producer will produce o1 */
  int o3 = NODE(&b, Relu, "o3", r0);
  int o2 = NODE(&b, Identity, "o2", x); /* graph input to graph output: stays */
  int dm = gb_node(&b, KILN_OP_Dropout, "dm", IN(x2), 2, NULL); /* mask used: stays */
  int mc = gb_node(&b, KILN_OP_Cast, "mask_f", IN(ir_find_value(b.g, "dm_1")), 1, &nid);
  ir_set_attr_int(b.g, nid, "to", KILN_F32, &b.e);
  int o4 = NODE(&b, Add, "o4", dm, mc);
  gb_output(&b, o1);
  gb_output(&b, o2);
  gb_output(&b, o3);
  gb_output(&b, o4);
  *e = b.e;
  return b.g;
}

static void test_eliminate_identity(void) {
  kiln_err e = {0};
  kiln_graph *g = build_identity_graph(&e);
  CHECK_OK(e.code, &e);
  kiln_pipeline_result res;
  diff_run(g, &(diff_case){.pipeline = "eliminate-identity,dce", .golden = "eliminate_identity"},
           &res);
  CHECK_MSG(res.stats[0].changes == 9, "%lld: %s", (long long)res.stats[0].changes,
            res.stats[0].detail);
  CHECK(count_op(g, KILN_OP_Identity) == 1 && count_op(g, KILN_OP_Dropout) == 1);
  CHECK(count_op(g, KILN_OP_Transpose) == 1 && count_op(g, KILN_OP_Squeeze) == 1);
  CHECK(count_op(g, KILN_OP_Unsqueeze) == 1 && count_op(g, KILN_OP_Cast) == 1);
  /* the graph outputs keep their names */
  static const char *const names[] = {"o1", "o2", "o3", "o4"};
  for (int i = 0; i < 4; i++) CHECK(!strcmp(g->values[g->outputs[i]].name, names[i]));
  ir_graph_free(g);
}

/* Dropout's opset rules: which ones eliminate-identity removes in each mode. */
static void test_dropout_modes(void) {
  struct {
    int opset;
    int is_test;      /* -1: absent */
    int train_input;  /* -1: absent, else the constant training_mode */
    kiln_pass_mode mode;
    int removed;
  } cases[] = {
      {6, 1, -1, KILN_MODE_TRAINING, 1},   {6, 0, -1, KILN_MODE_TRAINING, 0},
      {6, 0, -1, KILN_MODE_INFERENCE, 1},  {10, -1, -1, KILN_MODE_INFERENCE, 1},
      {10, -1, -1, KILN_MODE_TRAINING, 0}, {13, -1, -1, KILN_MODE_INFERENCE, 1},
      {13, -1, -1, KILN_MODE_TRAINING, 0}, {13, -1, 0, KILN_MODE_TRAINING, 1},
      {13, -1, 1, KILN_MODE_INFERENCE, 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    gb b;
    gb_begin(&b, cases[i].opset, 12345);
    int x = gb_input(&b, "x", KILN_F32, 1, IV(8));
    int nid, y;
    if (cases[i].train_input >= 0)
      y = gb_node(&b, KILN_OP_Dropout, "drop",
                  IN(x, gb_scalar(&b, "r", KILN_F32, 0.5),
                     gb_scalar(&b, "tm", KILN_BOOL, cases[i].train_input)),
                  1, &nid);
    else
      y = gb_node(&b, KILN_OP_Dropout, "drop", IN(x), 1, &nid);
    if (cases[i].is_test >= 0) ir_set_attr_int(b.g, nid, "is_test", cases[i].is_test, &b.e);
    gb_output(&b, NODE(&b, Relu, "y", y));
    kiln_err e = {0};
    kiln_evaluator ev = kiln_ref_evaluator();
    CHECK_OK(b.e.code, &b.e);
    CHECK_OK(ir_infer(b.g, &ev, &e), &e);
    kiln_pass_ctx cx = {.mode = cases[i].mode, .ev = &ev};
    CHECK_OK(kiln_run_pipeline(b.g, "eliminate-identity", &cx, NULL, &e), &e);
    CHECK_MSG(count_op(b.g, KILN_OP_Dropout) == !cases[i].removed, "case %zu (opset %d)", i,
              cases[i].opset);
    ir_graph_free(b.g);
  }
}

/* ---- fold-bn ---- */

static kiln_graph *build_bn_graph(int opset, kiln_err *e) {
  gb b;
  gb_begin(&b, opset, 12345);
  int nid;
  int x = gb_input(&b, "x", KILN_F32, 4, IV(2, 3, 5, 5));
  int conv1 = gb_node(&b, KILN_OP_Conv, "conv1",
                      IN(x, gb_rand(&b, "conv1.weight", 4, IV(4, 3, 3, 3), -1, 1),
                         gb_rand(&b, "conv1.bias", 1, IV(4), -1, 1)),
                      1, &nid);
  ir_set_attr_ints(b.g, nid, "pads", IV(1, 1, 1, 1), 4, &b.e);
  int r1 = NODE(&b, Relu, "r1", gb_bn(&b, "bn1", conv1, 4));
  /* no bias; the BN's output is a graph output; the weight is shared with conv3 */
  int w2 = gb_rand(&b, "conv2.weight", 4, IV(4, 4, 1, 1), -1, 1);
  int y2 = gb_bn(&b, "bn2", NODE(&b, Conv, "conv2", r1, w2), 4);
  int y3 = NODE(&b, Conv, "conv3", r1, w2);
  /* the conv output has a second reader: not folded */
  int conv4 = NODE(&b, Conv, "conv4", r1, gb_rand(&b, "conv4.weight", 4, IV(4, 4, 1, 1), -1, 1));
  int y4 = NODE(&b, Add, "y4", gb_bn(&b, "bn4", conv4, 4), NODE(&b, Relu, "r4", conv4));
  /* Gemm, B [K,N], C [N], alpha and beta not 1 */
  int xg = gb_input(&b, "xg", KILN_F32, 2, IV(2, 6));
  int gemm1 = gb_node(&b, KILN_OP_Gemm, "gemm1",
                      IN(xg, gb_rand(&b, "gemm1.weight", 2, IV(6, 5), -1, 1),
                         gb_rand(&b, "gemm1.bias", 1, IV(5), -1, 1)),
                      1, &nid);
  ir_set_attr_float(b.g, nid, "alpha", 0.5, &b.e);
  ir_set_attr_float(b.g, nid, "beta", 2.0, &b.e);
  int yg1 = gb_bn(&b, "bn5", gemm1, 5);
  /* Gemm, transB, no C */
  int gemm2 = gb_node(&b, KILN_OP_Gemm, "gemm2",
                      IN(xg, gb_rand(&b, "gemm2.weight", 2, IV(5, 6), -1, 1)), 1, &nid);
  ir_set_attr_int(b.g, nid, "transB", 1, &b.e);
  int yg2 = gb_bn(&b, "bn6", gemm2, 5);
  /* Gemm, C [M,N] varies along the rows */
  int gemm3 = gb_node(&b, KILN_OP_Gemm, "gemm3",
                      IN(xg, gb_rand(&b, "gemm3.weight", 2, IV(6, 5), -1, 1),
                         gb_rand(&b, "gemm3.c", 2, IV(2, 5), -1, 1)),
                      1, &nid);
  int yg3 = gb_bn(&b, "bn9", gemm3, 5);
  /* grouped ConvTranspose: W [C=4, M/group=2, 2, 2], group 2 -> 4 output channels */
  int ct = gb_node(&b, KILN_OP_ConvTranspose, "up",
                   IN(r1, gb_rand(&b, "up.weight", 4, IV(4, 2, 2, 2), -1, 1)), 1, &nid);
  ir_set_attr_int(b.g, nid, "group", 2, &b.e);
  ir_set_attr_ints(b.g, nid, "strides", IV(2, 2), 2, &b.e);
  int yct = gb_bn(&b, "bn7", ct, 4);
  /* asking for the running statistics selects the training form (opset < 14): stays */
  int conv8 = NODE(&b, Conv, "conv8", r1, gb_rand(&b, "conv8.weight", 4, IV(4, 4, 1, 1), -1, 1));
  int y8 = gb_bn_named(&b, "bn8", conv8, 4, NULL, opset < 14 ? 3 : 1, &nid);
  if (opset >= 14) ir_set_attr_int(b.g, nid, "training_mode", 1, &b.e);
  gb_output(&b, y2);
  gb_output(&b, y3);
  gb_output(&b, y4);
  gb_output(&b, yg1);
  gb_output(&b, yg2);
  gb_output(&b, yg3);
  gb_output(&b, yct);
  gb_output(&b, y8);
  *e = b.e;
  return b.g;
}

static void test_fold_bn(void) {
  kiln_err e = {0};
  kiln_graph *g = build_bn_graph(13, &e);
  CHECK_OK(e.code, &e);
  kiln_pipeline_result res;
  diff_run(g, &(diff_case){.pipeline = "fold-bn,dce", .golden = "fold_bn"}, &res);
  CHECK_MSG(res.stats[0].changes == 6, "%s", res.stats[0].detail);
  CHECK(count_op(g, KILN_OP_BatchNormalization) == 2);
  /* the shared weight keeps its values for conv3 */
  int w2 = ir_find_value(g, "conv2.weight");
  CHECK(w2 >= 0 && g->values[w2].data && ir_use_count(g, w2) == 1);
  ir_graph_free(g);

  /* opset 14's training_mode attribute */
  g = build_bn_graph(15, &e);
  CHECK_OK(e.code, &e);
  diff_run(g, &(diff_case){.pipeline = "fold-bn,dce"}, &res);
  CHECK(res.stats[0].changes == 6 && count_op(g, KILN_OP_BatchNormalization) == 2);
  ir_graph_free(g);

  /* training mode keeps every BatchNormalization */
  g = build_bn_graph(13, &e);
  CHECK_OK(e.code, &e);
  diff_run(g, &(diff_case){.pipeline = "fold-bn", .mode = KILN_MODE_TRAINING}, &res);
  CHECK(res.stats[0].changes == 0 && count_op(g, KILN_OP_BatchNormalization) == 8);
  CHECK(strstr(res.stats[0].detail, "training") != NULL);
  ir_graph_free(g);
}

/* ---- the pass manager ---- */

static void test_pipeline_text(void) {
  kiln_err e = {0};
  kiln_graph *g = build_identity_graph(&e);
  kiln_evaluator ev = kiln_ref_evaluator();
  CHECK_OK(ir_infer(g, &ev, &e), &e);
  kiln_pass_ctx cx = {.ev = &ev};
  CHECK(kiln_run_pipeline(g, "fold,nope", &cx, NULL, &e) == KILN_ERR_INVALID);
  CHECK_MSG(strstr(e.msg, "unknown pass 'nope'") && strstr(e.msg, "fold-bn") &&
                strstr(e.msg, "eliminate-identity"),
            "%s", e.msg);
  kiln_err_clear(&e);
  /* --print-after NAME prints once, after that pass */
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  cx.print_after = "eliminate-identity";
  cx.print_to = f;
  kiln_pipeline_result res;
  CHECK_OK(kiln_run_pipeline(g, " eliminate-identity, dce ,fold", &cx, &res, &e), &e);
  fclose(f);
  CHECK(res.n == 3 && !strcmp(res.pass[2]->name, "fold"));
  CHECK(buf && strstr(buf, "; after eliminate-identity (9 changes)") && !strstr(buf, "after dce"));
  free(buf);
  /* every registered pass is found by name and has a summary */
  int n;
  const kiln_pass_info *all = kiln_pass_list(&n);
  CHECK(n >= 4);
  for (int i = 0; i < n; i++) CHECK(kiln_pass_find(all[i].name) == &all[i] && all[i].summary[0]);
  ir_graph_free(g);
}

/* Every allocation failure while optimizing becomes KILN_ERR_NOMEM, never a crash. */
static void test_failing_allocator(void) {
  int ok_runs = 0;
  for (long k = 0; k < 400; k += 3) {
    kiln_err e = {0};
    kiln_graph *g = build_bn_graph(13, &e);
    kiln_evaluator ev = kiln_ref_evaluator();
    if (!e.code) ir_infer(g, &ev, &e);
    CHECK_OK(e.code, &e);
    kiln_pass_ctx cx = {.ev = &ev};
    kiln_alloc_fail_after(k);
    kiln_code rc = kiln_run_pipeline(g, "eliminate-identity,fold,dce,fold-bn,dce", &cx, NULL, &e);
    kiln_alloc_fail_after(-1);
    CHECK_MSG(rc == KILN_OK || rc == KILN_ERR_NOMEM, "k=%ld: %s", k, e.msg);
    ok_runs += rc == KILN_OK;
    ir_graph_free(g);
  }
  CHECK(ok_runs > 0);
}

/* ---- the conformance suite's node tests ---- */

static bool file_exists(const char *p) {
  struct stat st;
  return stat(p, &st) == 0;
}

/* Runs one backend test before and after the default pipeline.  `n_const` inputs from
 * the last become constants: 0 as the suite has it, 1..n-1 as weights are, n: the whole
 * graph folds. */
static void conformance_case(const char *test, int n_const, int *n_run, int64_t *changes) {
  char path[2048];
  kiln_err e = {0};
  kiln_graph *g = NULL;
  kiln_tensor *inputs[64] = {0}, *want[64] = {0};
  int n_in = 0, n_want = 0;
  snprintf(path, sizeof path, "%s/%s/model.onnx", SUITE_DIR, test);
  if (kiln_onnx_load(path, &g, &e)) goto done; /* unsupported here: not this test's business */
  for (; n_in < 64; n_in++) {
    snprintf(path, sizeof path, "%s/%s/test_data_set_0/input_%d.pb", SUITE_DIR, test, n_in);
    if (!file_exists(path)) break;
    CHECK_OK(kiln_tensor_load_pb(path, &inputs[n_in], NULL, &e), &e);
  }
  for (; n_want < 64; n_want++) {
    snprintf(path, sizeof path, "%s/%s/test_data_set_0/output_%d.pb", SUITE_DIR, test, n_want);
    if (!file_exists(path)) break;
    CHECK_OK(kiln_tensor_load_pb(path, &want[n_want], NULL, &e), &e);
  }
  if (e.code || n_in != g->n_inputs || n_want != g->n_outputs) goto done;
  {
    int fed[64], n_fed = g->n_inputs, k = 0;
    if (n_fed) memcpy(fed, g->inputs, sizeof(int) * (size_t)n_fed);
    for (int i = 0; i < n_fed; i++) {
      kiln_value *v = &g->values[fed[i]];
      if (v->shape.rank == inputs[i]->shape.rank)
        for (int d = 0; d < v->shape.rank; d++) {
          if (v->shape.d[d] < 0) v->shape.d[d] = inputs[i]->shape.d[d];
          kiln_free(v->sym[d]); /* saved with fixed dims, so the round trip needs no binding */
          v->sym[d] = NULL;
        }
      if (ir_input_feeds_shape(g, fed[i]) || i >= n_fed - n_const) {
        kiln_tensor *c = NULL;
        CHECK_OK(kiln_tensor_clone(inputs[i], &c, &e), &e);
        CHECK_OK(ir_bind_input_const(g, v->name, c, &e), &e);
      }
    }
    for (int i = 0; i < n_fed; i++) {
      if (g->values[fed[i]].is_input)
        inputs[k++] = inputs[i];
      else
        kiln_tensor_free(inputs[i]);
    }
    for (int i = k; i < n_fed; i++) inputs[i] = NULL;
  }
  if (e.code) goto done;
  kiln_pipeline_result res;
  int before = test_failures_;
  diff_run(g, &(diff_case){.inputs = inputs}, &res);
  /* the optimized graph still gives the suite's expected outputs */
  kiln_tensor *got[64] = {0};
  CHECK_OK(run_ref(g, inputs, got, &e), &e);
  for (int i = 0; i < n_want && !e.code; i++) {
    const kiln_tensor *a = got[i], *b = want[i];
    bool ok = a && a->dtype == b->dtype && kiln_shape_eq(&a->shape, &b->shape);
    for (int64_t j = 0; ok && j < a->numel; j++) {
      double x = kiln_tensor_get_f(a, j), y = kiln_tensor_get_f(b, j);
      ok = (isnan(x) && isnan(y)) || fabs(x - y) <= 1e-7 + 1e-3 * fabs(y);
    }
    CHECK_MSG(ok, "%s output %d differs from the suite's after optimization", test, i);
  }
  free_tensors(got, 64);
  if (test_failures_ != before) fprintf(stderr, "  (in %s, %d inputs constant)\n", test, n_const);
  for (int i = 0; i < res.n; i++) *changes += res.stats[i].changes;
  (*n_run)++;
done:
  free_tensors(inputs, 64);
  free_tensors(want, 64);
  ir_graph_free(g);
}

static void test_conformance_models(void) {
  static const char *const patterns[] = {
      "node/test_conv", "node/test_batchnorm", "node/test_gemm", "node/test_reshape",
      "node/test_dropout", "node/test_training_dropout", "node/test_identity", "node/test_cast",
      "node/test_transpose", "node/test_squeeze", "node/test_unsqueeze", "node/test_flatten",
      "node/test_shape", "node/test_gather", "node/test_concat", "node/test_constant",
      "node/test_slice", "node/test_expand", "node/test_resize", "node/test_matmul",
  };
  char *list = gt_read_text(KILN_SOURCE_DIR "/tests/conformance/passing.txt");
  CHECK(list != NULL);
  if (!list || !file_exists(SUITE_DIR "/node")) {
    printf("conformance models: skipped (no test data)\n");
    free(list);
    return;
  }
  int n_run = 0;
  int64_t changes = 0;
  char *save = NULL;
  for (char *line = strtok_r(list, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    bool match = false;
    for (size_t p = 0; p < sizeof patterns / sizeof patterns[0]; p++)
      if (!strncmp(line, patterns[p], strlen(patterns[p]))) match = true;
    if (!match) continue;
    conformance_case(line, 0, &n_run, &changes);
    conformance_case(line, 1, &n_run, &changes);
    conformance_case(line, 64, &n_run, &changes);
  }
  free(list);
  printf("conformance models: %d runs, %lld pass changes\n", n_run, (long long)changes);
  CHECK(n_run >= 400);
  CHECK(changes > 100);
}

/* ---- whole networks ---- */

/* Gives every BatchNormalization random parameters and statistics, so that folding it is
 * not the identity kiln's initialization (weight 1, bias 0, mean 0, var 1) would be. */
static void test_kiln_resnet(void) {
  kiln_graph *g = gb_small_seed_network(0);
  if (!g) return;
  int bn = count_op(g, KILN_OP_BatchNormalization), before = live_nodes(g);
  CHECK(bn == 20 + 5); /* backbone + SPN blocks */
  kiln_pipeline_result res;
  diff_run(g, &(diff_case){0}, &res);
  CHECK(count_op(g, KILN_OP_BatchNormalization) == 0);
  for (int i = 0; i < res.n; i++)
    if (!strcmp(res.pass[i]->name, "fold-bn")) CHECK(res.stats[i].changes == bn);
  CHECK(live_nodes(g) < before - bn + 1);
  ir_graph_free(g);

  /* training keeps the BatchNormalizations */
  g = gb_small_seed_network(0);
  if (!g) return;
  diff_run(g, &(diff_case){.mode = KILN_MODE_TRAINING}, &res);
  CHECK(count_op(g, KILN_OP_BatchNormalization) == bn);
  ir_graph_free(g);
}

/* Loads an ONNX backend-test-layout model and its test_data_set_0, optimizes it with the
 * default pipeline and checks it still computes the recorded outputs. */
static kiln_graph *optimize_fixture(const char *dir, const char *golden, int64_t *nodes_before) {
  char path[1024];
  kiln_err e = {0};
  kiln_graph *g = NULL;
  kiln_tensor *in = NULL, *want = NULL, *got[4] = {0};
  snprintf(path, sizeof path, "%s/model.onnx", dir);
  CHECK_OK(kiln_onnx_load(path, &g, &e), &e);
  snprintf(path, sizeof path, "%s/test_data_set_0/input_0.pb", dir);
  CHECK_OK(kiln_tensor_load_pb(path, &in, NULL, &e), &e);
  snprintf(path, sizeof path, "%s/test_data_set_0/output_0.pb", dir);
  CHECK_OK(kiln_tensor_load_pb(path, &want, NULL, &e), &e);
  if (e.code) {
    kiln_tensor_free(in);
    kiln_tensor_free(want);
    ir_graph_free(g);
    return NULL;
  }
  *nodes_before = live_nodes(g);
  diff_run(g, &(diff_case){.inputs = &in, .golden = golden}, NULL);
  CHECK(g->n_outputs == 1);
  CHECK_OK(run_ref(g, &in, got, &e), &e);
  CHECK(tensors_close(got[0], want, 1e-4, dir));
  free_tensors(got, 4);
  kiln_tensor_free(in);
  kiln_tensor_free(want);
  return g;
}

/* A PyTorch export with Shape/Gather/Unsqueeze/Concat/Reshape chains, a Resize with
 * computed sizes, Conv/ConvTranspose/Gemm + BatchNorm, Identity and Dropout
 * (scripts/make_pass_fixtures.py). */
static void test_torch_shapes(void) {
  int64_t before = 0;
  kiln_graph *g = optimize_fixture(DATA_DIR "/passes/torch_shapes", NULL, &before);
  if (!g) return;
  CHECK(before == 48);
  static const kiln_op gone[] = {KILN_OP_Shape,    KILN_OP_Gather,   KILN_OP_Unsqueeze,
                                 KILN_OP_Concat,   KILN_OP_Constant, KILN_OP_Cast,
                                 KILN_OP_Slice,    KILN_OP_Identity, KILN_OP_Dropout,
                                 KILN_OP_BatchNormalization};
  for (size_t i = 0; i < sizeof gone / sizeof gone[0]; i++)
    CHECK_MSG(count_op(g, gone[i]) == 0, "%s left", kiln_op_name(gone[i]));
  CHECK(!strcmp(g->values[g->outputs[0]].name, "output"));
  ir_graph_free(g);

  /* with only fold and dce the same chains go, and the golden shows the result */
  kiln_err e = {0};
  CHECK_OK(kiln_onnx_load(DATA_DIR "/passes/torch_shapes/model.onnx", &g, &e), &e);
  if (!g) return;
  diff_run(g, &(diff_case){.pipeline = "eliminate-identity,fold,dce,fold-bn,dce",
                           .golden = "torch_shapes"},
           NULL);
  CHECK(live_nodes(g) == 9);
  ir_graph_free(g);
}

static void test_resnet_narrow(void) {
  int64_t before = 0;
  kiln_graph *g = optimize_fixture(DATA_DIR "/resnet_narrow", NULL, &before);
  if (!g) return;
  CHECK(count_op(g, KILN_OP_BatchNormalization) == 0);
  CHECK(live_nodes(g) < before - 19);
  ir_graph_free(g);
}

int main(void) {
  RUN(test_fold);
  RUN(test_fold_training);
  RUN(test_fold_error);
  RUN(test_eliminate_identity);
  RUN(test_dropout_modes);
  RUN(test_fold_bn);
  RUN(test_pipeline_text);
  RUN(test_failing_allocator);
  RUN(test_conformance_models);
  RUN(test_kiln_resnet);
  RUN(test_torch_shapes);
  RUN(test_resnet_narrow);
  TEST_MAIN_END();
}
