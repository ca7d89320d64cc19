/* test_jit.c — the JIT path end to end on hand-built graphs: compiled results
 * equal the reference bit for bit at 1 and 2 threads, the memory planner keeps
 * overlapping lifetimes apart, the kernel cache survives corrupt entries
 * and unwritable directories, and release_constants frees only the constants no step
 * reads. */
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "codegen/cache.h"
#include "codegen/compile.h"
#include "graph_build.h"
#include "runtime/ref.h"
#include "test.h"

/* y = relu(relu(x + b) + x): exercises broadcasting, in-place reuse and two uses of x. */
static kiln_graph *build(int64_t rows, int64_t cols, kiln_err *e) {
  kiln_graph *g = ir_graph_new();
  int x, b, s, r, s2, y;
  ir_add_value(g, "x", &x, e);
  g->values[x].dtype = KILN_F32;
  g->values[x].shape = kiln_shape_make(2, (int64_t[]){rows, cols});
  g->values[x].typed = true;
  ir_add_input(g, x, e);
  kiln_tensor *bt;
  kiln_tensor_new(KILN_F32, &(kiln_shape){.rank = 1, .d = {cols}}, &bt, e);
  for (int64_t i = 0; i < cols; i++) ((float *)bt->data)[i] = (float)(i % 7) * 0.25f - 0.7f;
  ir_add_const(g, "b", bt, true, &b, e);
  ir_add_value(g, "s", &s, e);
  ir_add_value(g, "r", &r, e);
  ir_add_value(g, "s2", &s2, e);
  ir_add_value(g, "y", &y, e);
  ir_add_node(g, KILN_OP_Add, "add", (int[]){x, b}, 2, (int[]){s}, 1, NULL, e);
  ir_add_node(g, KILN_OP_Relu, "relu", (int[]){s}, 1, (int[]){r}, 1, NULL, e);
  ir_add_node(g, KILN_OP_Add, "add2", (int[]){r, x}, 2, (int[]){s2}, 1, NULL, e);
  ir_add_node(g, KILN_OP_Relu, "relu2", (int[]){s2}, 1, (int[]){y}, 1, NULL, e);
  ir_add_output(g, y, e);
  ir_add_output(g, s, e);
  kiln_evaluator ev = kiln_ref_evaluator();
  ir_toposort(g, e);
  ir_infer(g, &ev, e);
  return g;
}

static void compare_with_ref(int threads, const char *cache_dir, kiln_jit_stats *stats_out) {
  kiln_err e = {0};
  int64_t rows = 37, cols = 1000;
  kiln_graph *gref = build(rows, cols, &e), *gjit = build(rows, cols, &e);
  CHECK(e.code == KILN_OK);
  kiln_tensor *x;
  kiln_tensor_new(KILN_F32, &gref->values[gref->inputs[0]].shape, &x, &e);
  for (int64_t i = 0; i < x->numel; i++) ((float *)x->data)[i] = (float)((i * 7919) % 2001 - 1000) / 500.0f;
  kiln_tensor *want[2] = {0}, *got[2] = {0};
  kiln_ref_ctx ctx = {.g = gref};
  CHECK_OK(kiln_ref_run(gref, &ctx, &x, want, &e), &e);
  kiln_program *p = NULL;
  kiln_compile_opts o = {.threads = threads, .cache_dir = cache_dir};
  CHECK_OK(kiln_compile(gjit, &o, &p, &e), &e);
  if (p) {
    CHECK(p->n_fallback == 0);
    CHECK(p->arena_bytes <= p->unplanned_bytes);
    CHECK_OK(kiln_program_run(p, &x, got, false, &e), &e);
    for (int o2 = 0; o2 < 2; o2++)
      if (got[o2] && want[o2])
        CHECK(memcmp(got[o2]->data, want[o2]->data, kiln_tensor_nbytes(want[o2])) == 0);
    if (stats_out) *stats_out = *kiln_program_jit_stats(p);
    kiln_program_free(p);
  }
  for (int i = 0; i < 2; i++) {
    kiln_tensor_free(want[i]);
    kiln_tensor_free(got[i]);
  }
  kiln_tensor_free(x);
  ir_graph_free(gref);
}

static void test_threads(void) {
  compare_with_ref(1, "", NULL);
  compare_with_ref(2, "", NULL);
  compare_with_ref(3, "", NULL);
}

static void test_cache(void) {
  char dir[] = "/tmp/kiln-test-cache-XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  kiln_jit_stats cold, warm, rebuilt;
  compare_with_ref(2, dir, &cold);
  CHECK(cold.kernels_compiled > 0 && cold.kernels_cached == 0);
  compare_with_ref(2, dir, &warm);
  CHECK(warm.kernels_compiled == 0 && warm.kernels_cached == cold.kernels_compiled);
  /* corrupt every entry: flip a byte in the payload, truncate another */
  char cmd[512];
  snprintf(cmd, sizeof cmd, "for f in %s/*.kc; do printf 'X' | dd of=\"$f\" bs=1 seek=200 conv=notrunc 2>/dev/null; done", dir);
  CHECK(system(cmd) == 0);
  compare_with_ref(2, dir, &rebuilt);
  CHECK(rebuilt.kernels_compiled == cold.kernels_compiled);
  CHECK(rebuilt.cache_rebuilt > 0 && rebuilt.n_warnings > 0);
  snprintf(cmd, sizeof cmd, "for f in %s/*.kc; do truncate -s 100 \"$f\"; done", dir);
  CHECK(system(cmd) == 0);
  compare_with_ref(2, dir, &rebuilt);
  CHECK(rebuilt.kernels_compiled == cold.kernels_compiled && rebuilt.n_warnings > 0);
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  CHECK(system(cmd) == 0);
}

static void test_unwritable_cache(void) {
  kiln_jit_stats st;
  /* a path under a regular file can never be created */
  compare_with_ref(1, "/dev/null/kiln-cache", &st);
  CHECK(st.n_warnings > 0);
  CHECK(st.kernels_compiled > 0);
}

/* A Conv whose weights the generator repacks (released), a bias it reads in place (kept) and
 * a constant that is itself a graph output (kept). */
static kiln_graph *conv_graph(void) {
  gb bb, *b = &bb;
  gb_begin(b, 13, 11);
  int x = gb_input(b, "x", KILN_F32, 4, IV(1, 4, 6, 6)), nid;
  int w = gb_rand(b, "w", 4, IV(8, 4, 3, 3), -1, 1), bias = gb_rand(b, "bias", 1, IV(8), -1, 1);
  int y = gb_node(b, KILN_OP_Conv, "conv", IN(x, w, bias), 1, &nid);
  gb_ints_attr(b, nid, "pads", 4, IV(1, 1, 1, 1));
  gb_output(b, y);
  gb_output(b, gb_rand(b, "table", 1, IV(5), 0, 1));
  CHECK_OK(b->e.code, &b->e);
  CHECK_OK(ir_infer(b->g, NULL, &b->e), &b->e);
  return b->g;
}

static void test_release_constants(void) {
  kiln_err e = {0};
  kiln_tensor *in[1] = {0}, *got[2][2] = {{0}};
  kiln_graph *g0 = conv_graph();
  CHECK_OK(random_inputs(g0, 5, in, &e), &e);
  ir_graph_free(g0);
  for (int r = 0; r < 2; r++) {
    kiln_program *p = NULL;
    kiln_compile_opts co = {.threads = 1, .release_constants = r == 1};
    CHECK_OK(kiln_compile(conv_graph(), &co, &p, &e), &e);
    if (!p) return;
    if (r == 1) {
      CHECK_MSG(!p->g->values[ir_find_value(p->g, "w")].data, "the repacked weights were kept");
      CHECK_MSG(p->g->values[ir_find_value(p->g, "table")].data, "a constant output was freed");
    }
    CHECK_OK(kiln_program_run(p, in, got[r], false, &e), &e);
    kiln_program_free(p);
  }
  for (int i = 0; i < 2; i++)
    CHECK_MSG(tensors_same(got[0][i], got[1][i]), "output %d differs with released constants", i);
  CHECK(got[1][1] && kiln_tensor_get_f(got[1][1], 4) >= 0 && kiln_tensor_get_f(got[1][1], 4) < 1);
  free_tensors(got[0], 2);
  free_tensors(got[1], 2);
  free_tensors(in, 1);
}

int main(void) {
  RUN(test_threads);
  RUN(test_cache);
  RUN(test_unwritable_cache);
  RUN(test_release_constants);
  TEST_MAIN_END();
}
