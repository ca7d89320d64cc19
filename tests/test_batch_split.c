/* test_batch_split.c — micro-batching (passes/batch_split.h, kiln_compile_opts.micro_batch):
 *  - the seed network (ResNet-18 + C-Net + SPN, small) at batch 4: compiled whole, in slices
 *    of 1 and of 2, with 1 and 3 threads: the same outputs as the reference, the slices as the
 *    whole batch, a smaller arena;
 *  - a small classifier (Conv, BatchNormalization, MaxPool, Flatten, Gemm, Softmax, ReduceMean
 *    over H and W, Concat along channels) splits too;
 *  - PyTorch's x.view(x.size(0), -1), a Reshape to the constant [N, -1], splits too;
 *  - graphs that mix the samples of a batch stay whole, unchanged, with a reason naming the
 *    node: Transpose moving axis 0, Squeeze of every size-1 axis (only shape inference at the
 *    slice's batch finds it; also after a Reshape to [N, 6, 1], which is restored), reductions and Softmax
 *    and Concat along axis 0, a constant operand with a row per sample, training-mode
 *    BatchNormalization, MaxPool's Indices, inputs with different batches, a batch of 1, and
 *    slices that do not divide the batch. */
#include <math.h>
#include <string.h>

#include "codegen/compile.h"
#include "graph_build.h"
#include "models/models.h"
#include "passes/batch_split.h"
#include "runtime/ref.h"
#include "test.h"

static kiln_graph *seed_net(int64_t batch) {
  kiln_model_opts o;
  kiln_model_defaults(&o);
  o.width = 8;
  o.image_size = 32;
  o.batch = batch;
  o.classes = 3;
  o.cnet_hidden = 16;
  kiln_err e = {0};
  kiln_graph *g = NULL;
  CHECK_OK(kiln_model_build(&o, &g, &e), &e);
  kiln_evaluator ev = kiln_ref_evaluator();
  if (g) CHECK_OK(ir_infer(g, &ev, &e), &e);
  return g;
}

/* Runs g (consumed) compiled with the given slice size and threads; returns the passes. */
static int64_t run_split(kiln_graph *g, int64_t micro, int threads, kiln_tensor *const *in,
                         kiln_tensor **out, int64_t *arena) {
  kiln_err e = {0};
  kiln_program *p = NULL;
  kiln_compile_opts co = {.threads = threads, .micro_batch = micro};
  CHECK_OK(kiln_compile(g, &co, &p, &e), &e);
  if (!p) return 0;
  CHECK_OK(kiln_program_run(p, in, out, false, &e), &e);
  int64_t passes = p->micro;
  if (arena) *arena = p->arena_bytes;
  kiln_program_free(p);
  return passes;
}

static void test_seed_network(void) {
  const int64_t N = 4;
  kiln_graph *gref = seed_net(N);
  if (!gref) return;
  kiln_err e = {0};
  kiln_tensor *in[1] = {0}, *want[2] = {0};
  CHECK_OK(random_inputs(gref, 7, in, &e), &e);
  kiln_ref_ctx ctx = {.g = gref};
  CHECK_OK(kiln_ref_run(gref, &ctx, in, want, &e), &e);
  kiln_tensor *whole[2] = {0};
  int64_t arena_whole = 0, arena_one = 0;
  CHECK(run_split(seed_net(N), 0, 1, in, whole, &arena_whole) == 1);
  const int64_t slices[3] = {1, 2, 1};
  const int threads[3] = {1, 1, 3};
  for (int c = 0; c < 3; c++) {
    kiln_tensor *got[2] = {0};
    int64_t arena = 0;
    int64_t passes = run_split(seed_net(N), slices[c], threads[c], in, got, &arena);
    CHECK_MSG(passes == N / slices[c], "slices of %lld: %lld passes", (long long)slices[c],
              (long long)passes);
    if (slices[c] == 1 && threads[c] == 1) arena_one = arena;
    for (int i = 0; i < gref->n_outputs; i++) {
      char what[96];
      snprintf(what, sizeof what, "slices of %lld, %d threads, output %d", (long long)slices[c],
               threads[c], i);
      CHECK_MSG(tensors_close(got[i], want[i], 1e-4, what), "%s: differs from the reference", what);
      CHECK_MSG(tensors_close(got[i], whole[i], 1e-5, what), "%s: differs from the whole batch",
                what);
    }
    free_tensors(got, 2);
  }
  CHECK_MSG(arena_one > 0 && arena_one * 2 < arena_whole,
            "arena of one sample %lld, of the batch %lld", (long long)arena_one,
            (long long)arena_whole);
  free_tensors(whole, 2);
  free_tensors(want, 2);
  free_tensors(in, 1);
  ir_graph_free(gref);
}

/* Conv -> BN -> Relu -> MaxPool -> (ReduceMean over H, W) Concat Flatten(MaxPool) ... ->
 * Gemm -> Softmax at batch 3. */
static kiln_graph *classifier(void) {
  gb bb, *b = &bb;
  gb_begin(b, 13, 5);
  int x = gb_input(b, "x", KILN_F32, 4, IV(3, 2, 6, 6)), nid;
  int w = gb_rand(b, "w", 4, IV(4, 2, 3, 3), -0.5, 0.5);
  int c = gb_node(b, KILN_OP_Conv, "conv", IN(x, w), 1, &nid);
  gb_ints_attr(b, nid, "pads", 4, IV(1, 1, 1, 1));
  c = NODE(b, Relu, "relu", gb_bn(b, "bn", c, 4));
  int mp = gb_node(b, KILN_OP_MaxPool, "pool", IN(c), 1, &nid);
  gb_ints_attr(b, nid, "kernel_shape", 2, IV(2, 2));
  gb_ints_attr(b, nid, "strides", 2, IV(2, 2));
  int rm = gb_node(b, KILN_OP_ReduceMean, "mean", IN(c), 1, &nid);
  gb_ints_attr(b, nid, "axes", 2, IV(2, 3));
  int fl = gb_node(b, KILN_OP_Flatten, "flat", IN(mp), 1, &nid);
  int cat = gb_node(b, KILN_OP_Concat, "cat",
                    IN(fl, gb_node(b, KILN_OP_Flatten, "flat2", IN(rm), 1, NULL)), 1, &nid);
  ir_set_attr_int(b->g, nid, "axis", 1, &b->e);
  int fw = gb_rand(b, "fc.w", 2, IV(40, 5), -0.5, 0.5), fb = gb_rand(b, "fc.b", 1, IV(5), -1, 1);
  int y = NODE(b, Gemm, "fc", cat, fw, fb);
  gb_output(b, NODE(b, Softmax, "softmax", y));
  CHECK_OK(b->e.code, &b->e);
  kiln_evaluator ev = kiln_ref_evaluator();
  CHECK_OK(ir_infer(b->g, &ev, &b->e), &b->e);
  return b->g;
}

/* The graph `build` makes, compiled in one-sample slices (threads), takes `passes` passes and
 * gives the reference's outputs. */
static void check_split(kiln_graph *(*build)(void), int threads, int64_t passes, const char *what) {
  kiln_graph *gref = build();
  kiln_err e = {0};
  kiln_tensor *in[1] = {0}, *want[1] = {0}, *got[1] = {0};
  CHECK_OK(random_inputs(gref, 3, in, &e), &e);
  kiln_ref_ctx ctx = {.g = gref};
  CHECK_OK(kiln_ref_run(gref, &ctx, in, want, &e), &e);
  CHECK_MSG(run_split(build(), 1, threads, in, got, NULL) == passes, "%s: not %lld passes", what,
            (long long)passes);
  CHECK_MSG(tensors_close(got[0], want[0], 1e-5, what), "%s: differs from the reference", what);
  free_tensors(got, 1);
  free_tensors(want, 1);
  free_tensors(in, 1);
  ir_graph_free(gref);
}

static void test_classifier(void) { check_split(classifier, 2, 3, "classifier in slices"); }

/* PyTorch's x.view(x.size(0), -1): a Reshape to the constant [N, -1] (its batch entry becomes
 * 0, "the input's size"), then Gemm. */
static kiln_graph *view_net(void) {
  gb bb, *b = &bb;
  gb_begin(b, 13, 6);
  int x = gb_input(b, "x", KILN_F32, 4, IV(3, 2, 4, 4)), nid;
  int c = gb_node(b, KILN_OP_Conv, "conv", IN(x, gb_rand(b, "w", 4, IV(4, 2, 3, 3), -1, 1)), 1,
                  &nid);
  gb_ints_attr(b, nid, "pads", 4, IV(1, 1, 1, 1));
  int v = NODE(b, Reshape, "view", c, gb_ints(b, "view.shape", 1, 2, IV(3, -1)));
  gb_output(b, NODE(b, Gemm, "fc", v, gb_rand(b, "fc.w", 2, IV(64, 5), -1, 1)));
  CHECK_OK(b->e.code, &b->e);
  CHECK_OK(ir_infer(b->g, NULL, &b->e), &b->e);
  return b->g;
}

static void test_view_reshape(void) { check_split(view_net, 1, 3, "view + Gemm in slices"); }

/* ---- graphs that stay whole ---- */

typedef enum mixer {
  MIX_TRANSPOSE, MIX_RESHAPE_CONST, MIX_SQUEEZE_ALL, MIX_REDUCE_0, MIX_SOFTMAX_0, MIX_CONCAT_0,
  MIX_CONST_ROWS, MIX_BN_TRAINING, MIX_POOL_INDICES, MIX_TWO_BATCHES, MIX_BATCH_1, MIX_SLICE_3,
  MIX_COUNT
} mixer;

static const char *const k_why[MIX_COUNT] = {
    "transpose", "'squeeze' does not scale with the batch",
    "'squeeze' does not scale with the batch", "mean0",
    "softmax0", "cat0", "input 1 broadcasts along the batch axis", "training mode",
    "indexes across the batch", "inputs differ in axis 0", "a batch of 1",
    "does not split into slices of 3"};

static kiln_graph *mixing(mixer k) {
  gb bb, *b = &bb;
  gb_begin(b, 13, 9);
  int64_t n = k == MIX_BATCH_1 ? 1 : 4;
  int x = gb_input(b, "x", KILN_F32, 2, IV(n, 6)), y = -1, nid;
  switch (k) {
  case MIX_TRANSPOSE:
    y = gb_node(b, KILN_OP_Transpose, "transpose", IN(x), 1, &nid);
    gb_ints_attr(b, nid, "perm", 2, IV(1, 0));
    y = NODE(b, Transpose, "back", y); /* reversed axes: [4, 6] again */
    break;
  case MIX_RESHAPE_CONST: /* [N, 6, 1]: rewritten to [0, 6, 1], then the Squeeze fails */
    y = NODE(b, Reshape, "reshape", x, gb_ints(b, "shape", 1, 3, IV(4, 6, 1)));
    y = NODE(b, Squeeze, "squeeze", y);
    break;
  case MIX_SQUEEZE_ALL:
    y = NODE(b, Reshape, "r1", x, gb_ints(b, "shape", 1, 3, IV(-1, 1, 6)));
    y = NODE(b, Squeeze, "squeeze", y);
    break;
  case MIX_REDUCE_0:
    y = gb_node(b, KILN_OP_ReduceMean, "mean0", IN(x), 1, &nid);
    gb_ints_attr(b, nid, "axes", 1, IV(0));
    y = NODE(b, Add, "add", x, y);
    break;
  case MIX_SOFTMAX_0:
    y = gb_node(b, KILN_OP_Softmax, "softmax0", IN(x), 1, &nid);
    ir_set_attr_int(b->g, nid, "axis", 0, &b->e);
    break;
  case MIX_CONCAT_0:
    y = gb_node(b, KILN_OP_Concat, "cat0", IN(x, x), 1, &nid);
    ir_set_attr_int(b->g, nid, "axis", 0, &b->e);
    y = NODE(b, Slice, "slice", y, gb_ints(b, "st", 1, 1, IV(2)), gb_ints(b, "en", 1, 1, IV(6)),
             gb_ints(b, "ax", 1, 1, IV(0)));
    break;
  case MIX_CONST_ROWS:
    y = NODE(b, Add, "add", x, gb_rand(b, "rows", 2, IV(4, 6), -1, 1));
    break;
  case MIX_BN_TRAINING: {
    int x4 = NODE(b, Reshape, "r4", x, gb_ints(b, "shape", 1, 4, IV(4, 6, 1, 1)));
    y = gb_bn_named(b, "bn", x4, 6, NULL, 1, &nid);
    ir_set_attr_int(b->g, nid, "training_mode", 1, &b->e);
    break;
  }
  case MIX_POOL_INDICES: {
    int x4 = NODE(b, Reshape, "r4", x, gb_ints(b, "shape", 1, 4, IV(4, 1, 2, 3)));
    y = gb_node(b, KILN_OP_MaxPool, "pool", IN(x4), 2, &nid);
    gb_ints_attr(b, nid, "kernel_shape", 2, IV(1, 1));
    gb_output(b, y + 1);
    break;
  }
  case MIX_TWO_BATCHES:
    y = NODE(b, Add, "add", x, gb_input(b, "x2", KILN_F32, 2, IV(1, 6)));
    break;
  default:
    y = NODE(b, Relu, "relu", x);
    break;
  }
  gb_output(b, y);
  CHECK_OK(b->e.code, &b->e);
  CHECK_OK(ir_infer(b->g, NULL, &b->e), &b->e);
  return b->g;
}

static void test_mixing_graphs(void) {
  for (int k = 0; k < MIX_COUNT; k++) {
    kiln_graph *g = mixing((mixer)k);
    if (!g) continue;
    kiln_shape before[64];
    int64_t nv = g->n_values < 64 ? g->n_values : 64;
    for (int64_t v = 0; v < nv; v++) before[v] = g->values[v].shape;
    kiln_err e = {0};
    char why[256];
    int64_t passes = 0;
    CHECK_OK(kiln_batch_split(g, k == MIX_SLICE_3 ? 3 : 1, &passes, why, sizeof why, &e), &e);
    CHECK_MSG(passes == 1, "case %d split into %lld passes", k, (long long)passes);
    CHECK_MSG(strstr(why, k_why[k]) != NULL, "case %d: reason '%s', expected '%s'", k, why,
              k_why[k]);
    for (int64_t v = 0; v < nv; v++)
      CHECK_MSG(kiln_shape_eq(&before[v], &g->values[v].shape), "case %d: value %s changed", k,
                g->values[v].name);
    for (int64_t i = 0; i < g->n_nodes; i++) /* a rewritten Reshape is restored */
      if (g->nodes[i].op == KILN_OP_Reshape)
        CHECK_MSG(g->nodes[i].in[1] == ir_find_value(g, "shape"), "case %d: Reshape not restored",
                  k);
    ir_graph_free(g);
  }
}

int main(void) {
  RUN(test_seed_network);
  RUN(test_classifier);
  RUN(test_view_reshape);
  RUN(test_mixing_graphs);
  TEST_MAIN_END();
}
