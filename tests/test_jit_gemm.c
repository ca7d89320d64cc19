/* test_jit_gemm.c — differential tests of the convolution GEMM path (gemm_gen.h): one-node
 * Conv, ConvTranspose and FusedConv graphs with 1x1, strided and small-output stride-1 wider
 * kernels over shapes not multiples of the register and cache blocks (channel, pixel and
 * input-channel chunk tails, single elements, batches), strides, 1-D and 3-D, and every
 * epilogue (bias, residual, each activation), compiled and run at 1, 2 and 3 threads (whose
 * blockings differ); the results must match the reference interpreter within test_jit_nn's
 * tolerance and be bitwise identical at every thread count.  Fed weights (training graphs)
 * are packed by a kernel on every run.  The cases of the channel-vectorized micro-kernel also
 * compile with each micro-kernel forced (kiln_compile_opts.gemm_kernel): the two must agree
 * bitwise too. */
#include "codegen/compile.h"
#include "codegen/gemm_gen.h"
#pragma GCC diagnostic ignored "-Wunused-function" /* one_node.h helpers this file does not use */
#include "one_node.h"

typedef struct attr {
  const char *name;
  char kind; /* 'i' int, 'f' float, 's' string, 'I' ints */
  int64_t i;
  double f;
  const char *s;
  const int64_t *v;
  int n;
} attr;

#define AI(nm, x) {.name = (nm), .kind = 'i', .i = (x)}
#define AF(nm, x) {.name = (nm), .kind = 'f', .f = (x)}
#define AS(nm, x) {.name = (nm), .kind = 's', .s = (x)}
#define AV(nm, ...)                                                                                \
  {.name = (nm), .kind = 'I', .v = (const int64_t[]){__VA_ARGS__},                                 \
   .n = (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t))}

typedef struct tcase {
  const char *what;
  kiln_op op;
  kiln_tensor *in[4]; /* NULL: omitted */
  int n_in;
  uint32_t const_mask; /* bit i: input i is an initializer */
  int steps;           /* kernel steps the compiled program must have (0: not checked) */
  bool kinds;          /* also with each micro-kernel forced, bitwise the same */
  attr attrs[8];
} tcase;

static uint64_t rng_ = 0x9e3779b97f4a7c15ull;
static float frand(void) {
  rng_ = rng_ * 6364136223846793005ull + 1442695040888963407ull;
  return (float)((int64_t)((rng_ >> 33) % 4001) - 2000) / 1000.0f;
}

static kiln_tensor *rnd(int rank, const int64_t *d) {
  kiln_tensor *t = tn_new(KILN_F32, rank, d);
  for (int64_t i = 0; i < t->numel; i++) ((float *)t->data)[i] = frand();
  return t;
}
#define NARGS(...) ((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)))
#define T(...) rnd(NARGS(__VA_ARGS__), DIMS(__VA_ARGS__))

static kiln_code build(const tcase *c, one_node *t) {
  on_begin(t, c->op, 13, c->in, c->n_in, c->const_mask, 1);
  kiln_err *e = &t->e;
  for (int a = 0; a < 8 && c->attrs[a].name; a++) {
    const attr *at = &c->attrs[a];
    switch (at->kind) {
    case 'i': ir_set_attr_int(t->g, t->node, at->name, at->i, e); break;
    case 'f': ir_set_attr_float(t->g, t->node, at->name, at->f, e); break;
    case 's': ir_set_attr_str(t->g, t->node, at->name, at->s, e); break;
    case 'I': ir_set_attr_ints(t->g, t->node, at->name, at->v, at->n, e); break;
    }
  }
  if (e->code) return e->code;
  KILN_TRY(ir_verify(t->g, e));
  return ir_infer(t->g, NULL, e);
}

static int feeds(const one_node *t, kiln_tensor **feed) {
  int nf = 0;
  for (int i = 0; i < t->n_in; i++)
    if (t->in[i]) feed[nf++] = t->in[i];
  return nf;
}

static kiln_code run_ref(const tcase *c, kiln_tensor **got, kiln_err *e) {
  one_node t;
  kiln_code rc = build(c, &t);
  if (!rc) {
    kiln_tensor *feed[4];
    feeds(&t, feed);
    kiln_ref_ctx ctx = {.g = t.g};
    rc = kiln_ref_run(t.g, &ctx, feed, got, &t.e);
  }
  if (rc) *e = t.e;
  ir_graph_free(t.g);
  return rc;
}

static kiln_code run_jit(const tcase *c, int threads, int kind, kiln_tensor **got, kiln_err *e) {
  one_node t;
  kiln_code rc = build(c, &t);
  if (rc) {
    *e = t.e;
    ir_graph_free(t.g);
    return rc;
  }
  kiln_tensor *feed[4];
  feeds(&t, feed);
  kiln_program *p = NULL;
  kiln_compile_opts o = {.threads = threads, .cache_dir = "", .gemm_kernel = kind};
  KILN_TRY(kiln_compile(t.g, &o, &p, e)); /* takes the graph */
  if (p->n_fallback) {
    kiln_program_free(p);
    return kiln_errf(e, KILN_ERR_INTERNAL, "reference fallback");
  }
  if (c->steps && p->n_steps != c->steps) {
    int64_t n = p->n_steps;
    kiln_program_free(p);
    return kiln_errf(e, KILN_ERR_INTERNAL, "%lld kernel steps, expected %d", (long long)n,
                     c->steps);
  }
  rc = kiln_program_run(p, feed, got, false, e);
  kiln_program_free(p);
  return rc;
}

/* jit at 1, 2 and 3 threads against ref (|d| <= 1e-5 + 1e-4 |ref|), and bitwise across the
 * thread counts; with c->kinds the channel-vectorized micro-kernel forced at 1, 2 and 3
 * threads and the pixel-vectorized one at 1, all bitwise the same. */
static void check(const tcase *c) {
  static const char *kind_name[3] = {"auto", "pixels", "channels"};
  enum { RUNS = 4 };
  kiln_err e = {0};
  kiln_tensor *ref[1] = {0}, *j[RUNS][1] = {{0}};
  int n_runs = c->kinds ? 4 : 3, threads[RUNS] = {1, 2, 3, 1}, kinds[RUNS] = {0};
  if (c->kinds)
    for (int r = 0; r < RUNS; r++) kinds[r] = r < 3 ? CG_GEMM_CHANNELS : CG_GEMM_PIXELS;
  bool all = true;
  CHECK_OK(run_ref(c, ref, &e), &e);
  for (int r = 0; r < n_runs; r++) {
    CHECK_MSG(run_jit(c, threads[r], kinds[r], j[r], &e) == KILN_OK, "%s: %s", c->what, e.msg);
    all &= j[r][0] != NULL;
  }
  if (ref[0] && all) {
    CHECK_MSG(kiln_shape_eq(&ref[0]->shape, &j[0][0]->shape), "%s: shape", c->what);
    if (kiln_shape_eq(&ref[0]->shape, &j[0][0]->shape)) {
      for (int r = 1; r < n_runs; r++)
        CHECK_MSG(memcmp(j[0][0]->data, j[r][0]->data, kiln_tensor_nbytes(j[0][0])) == 0,
                  "%s: 1 thread and %d threads (%s) differ", c->what, threads[r],
                  kind_name[kinds[r]]);
      int bad = 0;
      for (int64_t i = 0; i < ref[0]->numel && bad < 5; i++) {
        double a = ((float *)j[0][0]->data)[i], b = ((float *)ref[0]->data)[i];
        bool ok = fabs(a - b) <= 1e-5 + 1e-4 * fabs(b) || a == b || (isnan(a) && isnan(b));
        if (!ok) bad++;
        CHECK_MSG(ok, "%s: element %lld: jit %.9g, ref %.9g", c->what, (long long)i, a, b);
      }
    }
  }
  kiln_tensor_free(ref[0]);
  for (int r = 0; r < n_runs; r++) kiln_tensor_free(j[r][0]);
  for (int i = 0; i < c->n_in; i++) kiln_tensor_free(c->in[i]);
}

#define CASE(...) check(&(tcase){__VA_ARGS__})

/* Conv nodes: shapes around the blocks (AVX2: 6 channels x 16 pixels; input channels in chunks
 * of at most 256; tiles of up to 256 pixels). */
static void test_conv_shapes(void) {
  CASE("one element", KILN_OP_Conv, {T(1, 1, 1, 1), T(1, 1, 1, 1)}, 2, 2);
  CASE("tails", KILN_OP_Conv, {T(1, 5, 9, 11), T(7, 5, 1, 1), T(7)}, 3, 6);
  CASE("one channel in", KILN_OP_Conv, {T(1, 1, 3, 7), T(13, 1, 1, 1)}, 2, 2);
  CASE("one channel out", KILN_OP_Conv, {T(1, 9, 4, 5), T(1, 9, 1, 1), T(1)}, 3, 6);
  CASE("one pixel", KILN_OP_Conv, {T(2, 17, 1, 1), T(11, 17, 1, 1), T(11)}, 3, 6);
  CASE("exact blocks", KILN_OP_Conv, {T(1, 16, 4, 8), T(12, 16, 1, 1)}, 2, 2);
  CASE("batch 3", KILN_OP_Conv, {T(3, 10, 5, 5), T(9, 10, 1, 1), T(9)}, 3, 6);
  /* input channels in 2 and 3 chunks (the last one shorter) */
  CASE("two chunks", KILN_OP_Conv, {T(1, 300, 3, 4), T(14, 300, 1, 1), T(14)}, 3, 6);
  CASE("three chunks", KILN_OP_Conv, {T(2, 530, 3, 5), T(8, 530, 1, 1)}, 2, 2);
  /* several pixel blocks, the last one partial */
  CASE("pixel blocks", KILN_OP_Conv, {T(1, 8, 17, 17), T(12, 8, 1, 1), T(12)}, 3, 6);
  /* channel blocks split for threads, pixel blocks likewise */
  CASE("channel blocks", KILN_OP_Conv, {T(1, 40, 14, 14), T(100, 40, 1, 1), T(100)}, 3, 6);
  CASE("blocks and chunks", KILN_OP_Conv, {T(1, 270, 6, 7), T(230, 270, 1, 1), T(230)}, 3, 6);
  /* several channel blocks at any thread count: X packed by a kernel of its own */
  CASE("packing kernel", KILN_OP_Conv, {T(2, 300, 5, 7), T(280, 300, 1, 1), T(280)}, 3, 6);
  /* 1-D and 3-D */
  CASE("1-D", KILN_OP_Conv, {T(2, 5, 37), T(7, 5, 1), T(7)}, 3, 6);
  CASE("3-D", KILN_OP_Conv, {T(1, 4, 3, 5, 6), T(6, 4, 1, 1, 1), T(6)}, 3, 6);
  /* dilation does nothing to a 1x1 kernel */
  CASE("dilated", KILN_OP_Conv, {T(1, 6, 5, 6), T(5, 6, 1, 1)}, 2, 2,
       .attrs = {AV("dilations", 2, 3)});
}

/* Strides: the pack subsamples. */
static void test_conv_strides(void) {
  CASE("stride 2", KILN_OP_Conv, {T(1, 6, 9, 7), T(10, 6, 1, 1), T(10)}, 3, 6,
       .attrs = {AV("strides", 2, 2)});
  CASE("stride 2 batch", KILN_OP_Conv, {T(2, 20, 14, 14), T(33, 20, 1, 1)}, 2, 2,
       .attrs = {AV("strides", 2, 2)});
  CASE("stride 2x3", KILN_OP_Conv, {T(1, 7, 11, 13), T(8, 7, 1, 1), T(8)}, 3, 6,
       .attrs = {AV("strides", 2, 3)});
  CASE("stride 1x2 chunks", KILN_OP_Conv, {T(1, 260, 3, 9), T(9, 260, 1, 1)}, 2, 2,
       .attrs = {AV("strides", 1, 2)});
  CASE("stride 2 packing kernel", KILN_OP_Conv, {T(1, 300, 7, 9), T(280, 300, 1, 1)}, 2, 2,
       .attrs = {AV("strides", 2, 2)});
  CASE("stride 1-D", KILN_OP_Conv, {T(1, 3, 40), T(5, 3, 1)}, 2, 2, .attrs = {AV("strides", 3)});
  CASE("stride 3-D", KILN_OP_Conv, {T(1, 4, 5, 6, 7), T(3, 4, 1, 1, 1)}, 2, 2,
       .attrs = {AV("strides", 2, 1, 2)});
  /* a stride larger than the input: one output per dim */
  CASE("stride past input", KILN_OP_Conv, {T(1, 3, 2, 3), T(4, 3, 1, 1)}, 2, 2,
       .attrs = {AV("strides", 4, 4)});
}

/* Which kernels: with one block of output channels the GEMM packs its input itself (one step,
 * where conv_gen's strided or padded 1x1 takes a copy first), with several a packing kernel
 * runs first (two steps, where conv_gen's unpadded stride-1 1x1 takes one); fed weights take
 * a weight-packing kernel first; groups stay on conv_gen, as do strided wider kernels over few
 * channels (stride-1 ones: test_stride1_kernels). */
static void test_dispatch(void) {
  CASE("gemm stride 2: one step", KILN_OP_Conv, {T(1, 8, 9, 7), T(6, 8, 1, 1)}, 2, 2,
       .steps = 1, .attrs = {AV("strides", 2, 2)});
  CASE("gemm, packing kernel: two steps", KILN_OP_Conv, {T(1, 300, 3, 4), T(280, 300, 1, 1)}, 2,
       2, .steps = 2);
  CASE("fed weights: two steps", KILN_OP_Conv, {T(1, 8, 9, 7), T(6, 8, 1, 1)}, 2, 0, .steps = 2);
  CASE("gemm padded 1x1: one step", KILN_OP_Conv, {T(1, 3, 4, 5), T(2, 3, 1, 1)}, 2, 2,
       .steps = 1, .attrs = {AV("pads", 1, 0, 0, 2)});
  CASE("gemm 3x3 stride 2: one step", KILN_OP_Conv, {T(1, 32, 7, 9), T(5, 32, 3, 3)}, 2, 2,
       .steps = 1, .attrs = {AV("strides", 2, 2), AV("pads", 1, 1, 1, 1)});
  CASE("conv_gen 3x3 stride 2, few channels: two steps", KILN_OP_Conv,
       {T(1, 31, 7, 9), T(5, 31, 3, 3)}, 2, 2, .steps = 2,
       .attrs = {AV("strides", 2, 2), AV("pads", 1, 1, 1, 1)});
  CASE("groups", KILN_OP_Conv, {T(1, 6, 5, 5), T(4, 3, 1, 1)}, 2, 2,
       .attrs = {AI("group", 2)});
  /* ConvTranspose 1x1 stride 1 is a pointwise conv with transposed weights */
  CASE("convT 1x1", KILN_OP_ConvTranspose, {T(2, 6, 4, 3), T(6, 5, 1, 1), T(5)}, 3, 6);
  CASE("convT 1x1 chunks", KILN_OP_ConvTranspose, {T(1, 300, 2, 3), T(300, 7, 1, 1)}, 2, 2);
}

/* Wider strided kernels: GEMMs over im2col rows (input channel, tap), padding gathered as zeros,
 * reduction chunks splitting a channel's taps. */
static void test_strided_kernels(void) {
  CASE("3x3 s2 pad 1", KILN_OP_Conv, {T(1, 32, 9, 11), T(7, 32, 3, 3), T(7)}, 3, 6,
       .attrs = {AV("strides", 2, 2), AV("pads", 1, 1, 1, 1)});
  CASE("3x3 s2 batch, chunks", KILN_OP_Conv, {T(2, 40, 8, 8), T(13, 40, 3, 3)}, 2, 2,
       .attrs = {AV("strides", 2, 2), AV("pads", 1, 1, 1, 1)});
  CASE("3x3 s2 asym pads dilation", KILN_OP_Conv, {T(1, 33, 10, 13), T(5, 33, 3, 3)}, 2, 2,
       .attrs = {AV("strides", 2, 3), AV("pads", 0, 2, 2, 1), AV("dilations", 2, 1)});
  CASE("5x3 s2 unpadded", KILN_OP_Conv, {T(1, 32, 11, 9), T(8, 32, 5, 3), T(8)}, 3, 6,
       .attrs = {AV("strides", 2, 2)});
  CASE("3x3 s2 packing kernel", KILN_OP_Conv, {T(1, 64, 6, 6), T(200, 64, 3, 3), T(200)}, 3, 6,
       .attrs = {AV("strides", 2, 2), AV("pads", 1, 1, 1, 1)});
  CASE("1-D k5 s2", KILN_OP_Conv, {T(2, 36, 23), T(6, 36, 5)}, 2, 2,
       .attrs = {AV("strides", 2), AV("pads", 2, 2)});
  CASE("3-D 3x3x3 s2", KILN_OP_Conv, {T(1, 32, 5, 6, 5), T(4, 32, 3, 3, 3)}, 2, 2,
       .attrs = {AV("strides", 2, 2, 2), AV("pads", 1, 1, 1, 1, 1, 1)});
  CASE("fused 3x3 s2 residual relu", KILN_OP_FusedConv,
       {T(1, 48, 10, 10), T(16, 48, 3, 3), T(16), T(1, 16, 5, 5)}, 4, 6,
       .attrs = {AV("strides", 2, 2), AV("pads", 1, 1, 1, 1), AS("activation", "relu"),
                 AI("has_residual", 1)});
}

/* FusedConv: every epilogue.  Inputs X, W, B (optional), Z (residual, fed). */
static void test_fused_epilogues(void) {
  CASE("bias relu", KILN_OP_FusedConv, {T(1, 12, 7, 9), T(20, 12, 1, 1), T(20)}, 3, 6,
       .attrs = {AS("activation", "relu")});
  CASE("residual relu", KILN_OP_FusedConv, {T(1, 12, 7, 9), T(20, 12, 1, 1), NULL, T(1, 20, 7, 9)},
       4, 2, .attrs = {AS("activation", "relu"), AI("has_residual", 1)});
  CASE("bias residual", KILN_OP_FusedConv,
       {T(2, 9, 5, 7), T(13, 9, 1, 1), T(13), T(2, 13, 5, 7)}, 4, 6,
       .attrs = {AI("has_residual", 1)});
  CASE("clip", KILN_OP_FusedConv, {T(1, 10, 6, 6), T(8, 10, 1, 1), T(8)}, 3, 6,
       .attrs = {AS("activation", "clip"), AF("act_alpha", -0.5), AF("act_beta", 0.7)});
  CASE("leaky relu", KILN_OP_FusedConv, {T(1, 10, 6, 6), T(8, 10, 1, 1), T(8)}, 3, 6,
       .attrs = {AS("activation", "leaky_relu"), AF("act_alpha", 0.1)});
  CASE("sigmoid", KILN_OP_FusedConv, {T(1, 10, 3, 11), T(7, 10, 1, 1), T(7)}, 3, 6,
       .attrs = {AS("activation", "sigmoid")});
  /* the residual read on the last chunk only, with tails everywhere */
  CASE("residual chunks", KILN_OP_FusedConv,
       {T(1, 300, 5, 5), T(19, 300, 1, 1), T(19), T(1, 19, 5, 5)}, 4, 6,
       .attrs = {AS("activation", "relu"), AI("has_residual", 1)});
  CASE("residual stride 2", KILN_OP_FusedConv,
       {T(2, 16, 9, 9), T(24, 16, 1, 1), T(24), T(2, 24, 5, 5)}, 4, 6,
       .attrs = {AV("strides", 2, 2), AS("activation", "relu"), AI("has_residual", 1)});
  CASE("residual packing kernel", KILN_OP_FusedConv,
       {T(1, 290, 4, 9), T(283, 290, 1, 1), T(283), T(1, 283, 4, 9)}, 4, 6,
       .attrs = {AS("activation", "relu"), AI("has_residual", 1)});
  CASE("residual blocks", KILN_OP_FusedConv,
       {T(1, 64, 10, 30), T(70, 64, 1, 1), T(70), T(1, 70, 10, 30)}, 4, 6,
       .attrs = {AS("activation", "clip"), AF("act_alpha", 0.0), AF("act_beta", 6.0),
                 AI("has_residual", 1)});
}

/* The channel-vectorized micro-kernel (AVX2: 16 channels x 4-6 pixels; the plan takes it for
 * small images) and the pixel-vectorized one forced on the same shapes, bitwise the same:
 * pixel counts not multiples of the group, channel counts not multiples of 16 (zero-padded
 * weight panels, partial vectors in the epilogue), several reduction chunks, the packing kernel
 * (several channel blocks: its row ranges end on a masked store), batches, every epilogue. */
#define KCASE(...) check(&(tcase){__VA_ARGS__, .kinds = true})
static void test_channel_kernel(void) {
  KCASE("ck 7x7", KILN_OP_Conv, {T(1, 40, 7, 7), T(37, 40, 1, 1), T(37)}, 3, 6);
  KCASE("ck one pixel", KILN_OP_Conv, {T(2, 17, 1, 1), T(20, 17, 1, 1)}, 2, 2);
  KCASE("ck 3 channels out", KILN_OP_Conv, {T(1, 9, 5, 5), T(3, 9, 1, 1), T(3)}, 3, 6);
  KCASE("ck 16 channels, 4x4", KILN_OP_Conv, {T(1, 24, 4, 4), T(16, 24, 1, 1)}, 2, 2);
  KCASE("ck chunks", KILN_OP_Conv, {T(1, 530, 3, 5), T(21, 530, 1, 1), T(21)}, 3, 6);
  KCASE("ck packing kernel", KILN_OP_Conv, {T(1, 300, 5, 7), T(280, 300, 1, 1), T(280)}, 3, 6);
  KCASE("ck batch, stride 2", KILN_OP_Conv, {T(3, 20, 9, 9), T(33, 20, 1, 1)}, 2, 2,
        .attrs = {AV("strides", 2, 2)});
  KCASE("ck 3-D", KILN_OP_Conv, {T(1, 4, 2, 3, 5), T(19, 4, 1, 1, 1)}, 2, 2);
  KCASE("ck residual relu", KILN_OP_FusedConv,
        {T(1, 30, 7, 7), T(35, 30, 1, 1), T(35), T(1, 35, 7, 7)}, 4, 6,
        .attrs = {AS("activation", "relu"), AI("has_residual", 1)});
  KCASE("ck residual chunks packing kernel", KILN_OP_FusedConv,
        {T(2, 290, 3, 3), T(283, 290, 1, 1), NULL, T(2, 283, 3, 3)}, 4, 2,
        .attrs = {AS("activation", "clip"), AF("act_alpha", -0.3), AF("act_beta", 0.9),
                  AI("has_residual", 1)});
  /* several small images per tile (the weight panel meets the strips of each in turn), the
   * last image block shorter */
  KCASE("ck images per tile, chunks", KILN_OP_Conv, {T(3, 300, 4, 4), T(200, 300, 1, 1), T(200)},
        3, 6);
  KCASE("images per tile residual", KILN_OP_FusedConv,
        {T(5, 40, 3, 5), T(290, 40, 1, 1), T(290), T(5, 290, 3, 5)}, 4, 6,
        .attrs = {AS("activation", "relu"), AI("has_residual", 1)});
  KCASE("ck sigmoid", KILN_OP_FusedConv, {T(1, 10, 3, 3), T(9, 10, 1, 1), T(9)}, 3, 6,
        .attrs = {AS("activation", "sigmoid")});
  kiln_tensor *x = T(1, 7, 3, 5);
  ((float *)x->data)[3] = INFINITY;
  ((float *)x->data)[20] = NAN;
  KCASE("ck inf nan", KILN_OP_FusedConv, {x, T(18, 7, 1, 1), T(18)}, 3, 6,
        .attrs = {AS("activation", "relu")});
}

/* Stride-1 wider kernels over at least 32 channels where the direct kernel's vectors along
 * output columns run partly empty (AVX2: columns not a multiple of 8) go to the GEMM: 'same'
 * convolutions pack contiguous pixels masked by the offset table, others gather. */
static void test_stride1_kernels(void) {
  CASE("3x3 s1 7x7: one step", KILN_OP_Conv, {T(1, 32, 7, 7), T(9, 32, 3, 3), T(9)}, 3, 6,
       .steps = 1, .attrs = {AV("pads", 1, 1, 1, 1)});
  /* 16 columns are whole vectors with AVX2 and AVX-512 alike (8 would be ragged with 16 lanes
   * and go to the GEMM there) */
  CASE("conv_gen 3x3 s1 16x16: two steps", KILN_OP_Conv,
       {T(1, 32, 16, 16), T(9, 32, 3, 3), T(9)}, 3, 6, .steps = 2,
       .attrs = {AV("pads", 1, 1, 1, 1)});
  CASE("conv_gen 3x3 s1 7x7, few channels: two steps", KILN_OP_Conv,
       {T(1, 31, 7, 7), T(9, 31, 3, 3), T(9)}, 3, 6, .steps = 2,
       .attrs = {AV("pads", 1, 1, 1, 1)});
  KCASE("3x3 s1 7x7 kernels", KILN_OP_Conv, {T(1, 32, 7, 7), T(19, 32, 3, 3), T(19)}, 3, 6,
        .attrs = {AV("pads", 1, 1, 1, 1)});
  KCASE("3x3 s1 chunks batch", KILN_OP_Conv, {T(2, 33, 5, 6), T(17, 33, 3, 3)}, 2, 2,
        .attrs = {AV("pads", 1, 1, 1, 1)});
  KCASE("3x3 s1 packing kernel", KILN_OP_Conv, {T(1, 40, 4, 4), T(200, 40, 3, 3), T(200)}, 3, 6,
        .attrs = {AV("pads", 1, 1, 1, 1)});
  KCASE("5x5 s1 dilated same", KILN_OP_Conv, {T(1, 32, 9, 7), T(10, 32, 3, 3)}, 2, 2,
        .attrs = {AV("pads", 2, 2, 2, 2), AV("dilations", 2, 2)});
  /* not 'same': fewer output than input columns, or asymmetric pads: gathered */
  KCASE("3x3 s1 unpadded", KILN_OP_Conv, {T(1, 32, 9, 9), T(11, 32, 3, 3), T(11)}, 3, 6);
  KCASE("3x3 s1 asym pads", KILN_OP_Conv, {T(1, 32, 6, 7), T(11, 32, 3, 3)}, 2, 2,
        .attrs = {AV("pads", 0, 2, 1, 0)});
  KCASE("fused 3x3 s1 residual relu", KILN_OP_FusedConv,
        {T(1, 48, 7, 7), T(20, 48, 3, 3), T(20), T(1, 20, 7, 7)}, 4, 6,
        .attrs = {AV("pads", 1, 1, 1, 1), AS("activation", "relu"), AI("has_residual", 1)});
}

/* Fed weights (training graphs): packed into the panels by a kernel on every run, read through
 * the layouts the emitters give (ONNX's, ConvTranspose's flipped and transposed). */
static void test_fed_weights(void) {
  KCASE("fed 1x1 7x7", KILN_OP_Conv, {T(1, 40, 7, 7), T(37, 40, 1, 1), T(37)}, 3, 4);
  KCASE("fed 1x1 chunks, packing kernel", KILN_OP_Conv, {T(1, 300, 3, 3), T(280, 300, 1, 1)}, 2,
        0);
  CASE("fed 3x3 s1 4x4", KILN_OP_Conv, {T(2, 32, 4, 4), T(35, 32, 3, 3), T(35)}, 3, 0,
       .attrs = {AV("pads", 1, 1, 1, 1)});
  CASE("fed 3x3 s2", KILN_OP_Conv, {T(1, 32, 9, 8), T(13, 32, 3, 3)}, 2, 0,
       .attrs = {AV("strides", 2, 2), AV("pads", 1, 1, 1, 1)});
  CASE("fed 3x3 s1 4x4 images per tile", KILN_OP_Conv, {T(8, 32, 4, 4), T(300, 32, 3, 3)}, 2,
       0, .attrs = {AV("pads", 1, 1, 1, 1)});
  CASE("fed convT 1x1", KILN_OP_ConvTranspose, {T(2, 6, 4, 3), T(6, 21, 1, 1), T(21)}, 3, 0);
  CASE("fed convT 3x3 s1 (backward data)", KILN_OP_ConvTranspose,
       {T(1, 33, 4, 4), T(33, 19, 3, 3)}, 2, 0, .attrs = {AV("pads", 1, 1, 1, 1)});
  CASE("fed fused 3x3 s1 residual relu", KILN_OP_FusedConv,
       {T(1, 32, 7, 7), T(20, 32, 3, 3), T(20), T(1, 20, 7, 7)}, 4, 0,
       .attrs = {AV("pads", 1, 1, 1, 1), AS("activation", "relu"), AI("has_residual", 1)});
}

/* Non-finite inputs go through the sum and the epilogue as the reference's do. */
static void test_nonfinite(void) {
  kiln_tensor *x = T(1, 7, 3, 5);
  ((float *)x->data)[3] = INFINITY;
  ((float *)x->data)[20] = NAN;
  CASE("inf nan", KILN_OP_FusedConv, {x, T(9, 7, 1, 1), T(9)}, 3, 6,
       .attrs = {AS("activation", "relu")});
}

int main(void) {
  RUN(test_conv_shapes);
  RUN(test_conv_strides);
  RUN(test_dispatch);
  RUN(test_strided_kernels);
  RUN(test_fused_epilogues);
  RUN(test_channel_kernel);
  RUN(test_stride1_kernels);
  RUN(test_fed_weights);
  RUN(test_nonfinite);
  TEST_MAIN_END();
}
