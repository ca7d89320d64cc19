/* test_jit_nn.c — differential tests of the nn family's JIT kernels (Conv, ConvTranspose,
 * pools, BatchNormalization, InstanceNormalization, LRN): one-node graphs over odd shapes,
 * groups, strides, dilations and asymmetric pads, compiled and run at 1 and 3 threads; the
 * results must match the reference interpreter within a tight tolerance and be bitwise
 * identical at both thread counts. */
#include "codegen/compile.h"
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
  int opset;
  kiln_tensor *in[6]; /* NULL: omitted */
  int n_in;
  uint32_t const_mask; /* bit i: input i is an initializer */
  int n_out;
  uint32_t omit_out;   /* bit o: output o is omitted (after the first) */
  attr attrs[8];
} tcase;

static uint64_t rng_ = 0x2545f4914f6cdd1dull;
static float frand(void) {
  rng_ = rng_ * 6364136223846793005ull + 1442695040888963407ull;
  return (float)((int64_t)((rng_ >> 33) % 4001) - 2000) / 1000.0f;
}

static kiln_tensor *rnd(int rank, const int64_t *d) {
  kiln_tensor *t = tn_new(KILN_F32, rank, d);
  for (int64_t i = 0; i < t->numel; i++) ((float *)t->data)[i] = frand();
  return t;
}
/* positive values (variances) */
static kiln_tensor *rndpos(int rank, const int64_t *d) {
  kiln_tensor *t = rnd(rank, d);
  float *v = t->data;
  for (int64_t i = 0; i < t->numel; i++) v[i] = fabsf(v[i]) + 0.1f;
  return t;
}
#define T(...) rnd(NARGS(__VA_ARGS__), DIMS(__VA_ARGS__))
#define TP(...) rndpos(NARGS(__VA_ARGS__), DIMS(__VA_ARGS__))
#define NARGS(...) ((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)))

/* Builds the case's graph (outputs in omit_out are left out) and infers it. */
static kiln_code build(const tcase *c, one_node *t) {
  on_begin(t, c->op, c->opset, c->in, c->n_in, c->const_mask, c->n_out);
  kiln_err *e = &t->e;
  kiln_node *n = on_node(t);
  for (int o = 1; o < c->n_out; o++)
    if (c->omit_out & (1u << o)) {
      /* drop the output: no longer a graph output, slot -1 */
      int v = n->out[o];
      for (int i = 0; i < t->g->n_outputs; i++)
        if (t->g->outputs[i] == v) {
          memmove(&t->g->outputs[i], &t->g->outputs[i + 1],
                  sizeof(int) * (size_t)(t->g->n_outputs - i - 1));
          t->g->n_outputs--;
          break;
        }
      t->g->values[v].is_output = false;
      t->g->values[v].producer = -1;
      n->out[o] = -1;
    }
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

static kiln_code run_ref(const tcase *c, kiln_tensor **got, int *n_got, kiln_err *e) {
  one_node t;
  kiln_code rc = build(c, &t);
  if (!rc) {
    kiln_tensor *feed[8];
    feeds(&t, feed);
    kiln_ref_ctx ctx = {.g = t.g};
    rc = kiln_ref_run(t.g, &ctx, feed, got, &t.e);
    *n_got = t.g->n_outputs;
  }
  if (rc) *e = t.e;
  ir_graph_free(t.g);
  return rc;
}

static kiln_code run_jit(const tcase *c, int threads, kiln_tensor **got, kiln_err *e) {
  one_node t;
  kiln_code rc = build(c, &t);
  if (rc) {
    *e = t.e;
    ir_graph_free(t.g);
    return rc;
  }
  kiln_tensor *feed[8];
  feeds(&t, feed);
  kiln_program *p = NULL;
  kiln_compile_opts o = {.threads = threads, .cache_dir = ""};
  KILN_TRY(kiln_compile(t.g, &o, &p, e)); /* takes the graph */
  if (p->n_fallback) {
    kiln_program_free(p);
    return kiln_errf(e, KILN_ERR_INTERNAL, "reference fallback");
  }
  rc = kiln_program_run(p, feed, got, false, e);
  kiln_program_free(p);
  return rc;
}

/* Compares jit with ref (|d| <= 1e-5 + 1e-4 |ref|; integers exactly) and the two jit runs
 * bitwise. */
static void check(const tcase *c) {
  kiln_err e = {0};
  kiln_tensor *ref[4] = {0}, *j1[4] = {0}, *j3[4] = {0};
  int n_out = 0;
  CHECK_OK(run_ref(c, ref, &n_out, &e), &e);
  CHECK_OK(run_jit(c, 1, j1, &e), &e);
  CHECK_OK(run_jit(c, 3, j3, &e), &e);
  for (int o = 0; o < n_out; o++) {
    if (!ref[o] || !j1[o] || !j3[o]) break;
    CHECK_MSG(kiln_shape_eq(&ref[o]->shape, &j1[o]->shape) && ref[o]->dtype == j1[o]->dtype,
              "%s: output %d shape", c->what, o);
    if (!kiln_shape_eq(&ref[o]->shape, &j1[o]->shape)) continue;
    CHECK_MSG(memcmp(j1[o]->data, j3[o]->data, kiln_tensor_nbytes(j1[o])) == 0,
              "%s: output %d differs between 1 and 3 threads", c->what, o);
    int bad = 0;
    for (int64_t i = 0; i < ref[o]->numel && bad < 5; i++) {
      double a = kiln_tensor_get_f(j1[o], i), b = kiln_tensor_get_f(ref[o], i);
      bool ok = ref[o]->dtype == KILN_F32 ? (fabs(a - b) <= 1e-5 + 1e-4 * fabs(b) ||
                                             (isnan(a) && isnan(b)) || a == b)
                                          : a == b;
      if (!ok) bad++;
      CHECK_MSG(ok, "%s: output %d element %lld: jit %.9g, ref %.9g", c->what, o, (long long)i, a,
                b);
    }
  }
  for (int o = 0; o < 4; o++) {
    kiln_tensor_free(ref[o]);
    kiln_tensor_free(j1[o]);
    kiln_tensor_free(j3[o]);
  }
  for (int i = 0; i < c->n_in; i++) kiln_tensor_free(c->in[i]);
}

#define CASE(...) check(&(tcase){__VA_ARGS__})

static void test_conv(void) {
  /* 3x3, pad 1, odd sizes, bias; constant and fed weights */
  CASE("conv 3x3", KILN_OP_Conv, 13, {T(1, 5, 9, 11), T(7, 5, 3, 3), T(7)}, 3, 6, 1,
       .attrs = {AV("pads", 1, 1, 1, 1)});
  CASE("conv fed weights", KILN_OP_Conv, 13, {T(2, 5, 9, 11), T(7, 5, 3, 3), T(7)}, 3, 0, 1,
       .attrs = {AV("pads", 1, 1, 1, 1)});
  /* channel tail (13 = 4*3 + 1 per block), column tail (30), row tail */
  CASE("conv tails", KILN_OP_Conv, 13, {T(1, 4, 5, 30), T(13, 4, 3, 3)}, 2, 2, 1,
       .attrs = {AV("pads", 1, 1, 1, 1)});
  CASE("conv wide", KILN_OP_Conv, 13, {T(1, 3, 6, 61), T(9, 3, 3, 3)}, 2, 2, 1,
       .attrs = {AV("pads", 0, 1, 0, 1)});
  CASE("conv stride 2 asym", KILN_OP_Conv, 13, {T(2, 3, 10, 13), T(4, 3, 3, 3), T(4)}, 3, 6, 1,
       .attrs = {AV("strides", 2, 2), AV("pads", 0, 1, 2, 1)});
  CASE("conv stride 3x2 fed", KILN_OP_Conv, 13, {T(1, 3, 11, 14), T(5, 3, 3, 2)}, 2, 0, 1,
       .attrs = {AV("strides", 3, 2), AV("pads", 1, 0, 1, 1)});
  CASE("conv dilation", KILN_OP_Conv, 13, {T(1, 2, 12, 12), T(3, 2, 3, 3)}, 2, 2, 1,
       .attrs = {AV("dilations", 2, 3), AV("pads", 2, 1, 1, 2)});
  CASE("conv dilation stride", KILN_OP_Conv, 13, {T(1, 2, 13, 17), T(3, 2, 3, 3)}, 2, 2, 1,
       .attrs = {AV("dilations", 2, 2), AV("strides", 2, 3), AV("pads", 1, 1, 1, 1)});
  CASE("conv groups", KILN_OP_Conv, 13, {T(1, 6, 7, 9), T(4, 3, 3, 3), T(4)}, 3, 6, 1,
       .attrs = {AI("group", 2), AV("pads", 1, 1, 1, 1)});
  CASE("conv depthwise", KILN_OP_Conv, 13, {T(2, 5, 8, 19), T(5, 1, 3, 3), T(5)}, 3, 6, 1,
       .attrs = {AI("group", 5), AV("pads", 1, 1, 1, 1)});
  CASE("conv depthwise x2 stride", KILN_OP_Conv, 13, {T(1, 3, 9, 9), T(6, 1, 3, 3)}, 2, 2, 1,
       .attrs = {AI("group", 3), AV("strides", 2, 2), AV("pads", 1, 1, 1, 1)});
  CASE("conv 1x1", KILN_OP_Conv, 13, {T(2, 8, 7, 5), T(16, 8, 1, 1), T(16)}, 3, 6, 1);
  CASE("conv 1x1 stride 2", KILN_OP_Conv, 13, {T(1, 8, 9, 7), T(6, 8, 1, 1)}, 2, 2, 1,
       .attrs = {AV("strides", 2, 2)});
  CASE("conv 1x1 padded", KILN_OP_Conv, 13, {T(1, 3, 4, 5), T(2, 3, 1, 1)}, 2, 2, 1,
       .attrs = {AV("pads", 1, 0, 0, 2)});
  CASE("conv 7x7 s2", KILN_OP_Conv, 13, {T(1, 3, 23, 21), T(8, 3, 7, 7)}, 2, 2, 1,
       .attrs = {AV("strides", 2, 2), AV("pads", 3, 3, 3, 3)});
  CASE("conv kernel > input", KILN_OP_Conv, 13, {T(1, 2, 3, 2), T(3, 2, 5, 4)}, 2, 2, 1,
       .attrs = {AV("pads", 2, 2, 2, 2)});
  CASE("conv same_upper", KILN_OP_Conv, 13, {T(1, 2, 6, 7), T(3, 2, 4, 3)}, 2, 2, 1,
       .attrs = {AS("auto_pad", "SAME_UPPER"), AV("strides", 2, 2)});
  CASE("conv 1-D", KILN_OP_Conv, 13, {T(2, 3, 29), T(4, 3, 5), T(4)}, 3, 6, 1,
       .attrs = {AV("pads", 2, 1), AV("strides", 2)});
  CASE("conv 1-D dilated fed", KILN_OP_Conv, 13, {T(1, 4, 20), T(6, 2, 3)}, 2, 0, 1,
       .attrs = {AV("dilations", 2), AI("group", 2)});
  CASE("conv 1-D long kernel", KILN_OP_Conv, 13, {T(1, 3, 90), T(4, 3, 20), T(4)}, 3, 6, 1,
       .attrs = {AV("pads", 5, 3), AV("strides", 2), AV("dilations", 2)});
  CASE("conv 1-D long kernel fed", KILN_OP_Conv, 13, {T(2, 2, 40), T(3, 2, 17)}, 2, 0, 1,
       .attrs = {AV("pads", 8, 8)});
  CASE("conv 3-D", KILN_OP_Conv, 13, {T(1, 2, 5, 6, 7), T(3, 2, 3, 2, 3), T(3)}, 3, 6, 1,
       .attrs = {AV("pads", 1, 0, 1, 0, 1, 1), AV("strides", 1, 2, 1)});
  CASE("conv 3-D fed", KILN_OP_Conv, 13, {T(2, 2, 4, 5, 6), T(4, 1, 2, 3, 3)}, 2, 0, 1,
       .attrs = {AI("group", 2), AV("dilations", 2, 1, 1), AV("pads", 0, 1, 1, 0, 1, 1)});
  CASE("conv many channels", KILN_OP_Conv, 13, {T(1, 40, 7, 7), T(37, 40, 3, 3), T(37)}, 3, 6, 1,
       .attrs = {AV("pads", 1, 1, 1, 1)});
  CASE("conv one output", KILN_OP_Conv, 13, {T(1, 3, 3, 3), T(2, 3, 3, 3)}, 2, 2, 1);
  CASE("conv empty batch", KILN_OP_Conv, 13, {T(0, 3, 5, 5), T(2, 3, 3, 3)}, 2, 2, 1);
}

static void test_conv_transpose(void) {
  CASE("convT basic", KILN_OP_ConvTranspose, 13, {T(1, 3, 4, 5), T(3, 2, 3, 3), T(2)}, 3, 6, 1);
  CASE("convT fed", KILN_OP_ConvTranspose, 13, {T(2, 3, 4, 5), T(3, 2, 3, 3)}, 2, 0, 1,
       .attrs = {AV("strides", 2, 2)});
  CASE("convT stride pads", KILN_OP_ConvTranspose, 13, {T(1, 2, 5, 4), T(2, 3, 3, 4), T(3)}, 3, 6,
       1, .attrs = {AV("strides", 2, 3), AV("pads", 1, 0, 2, 1), AV("output_padding", 1, 2)});
  CASE("convT groups dilation", KILN_OP_ConvTranspose, 13, {T(1, 4, 5, 5), T(4, 3, 2, 3)}, 2, 2, 1,
       .attrs = {AI("group", 2), AV("dilations", 2, 1), AV("strides", 1, 2)});
  CASE("convT output_shape", KILN_OP_ConvTranspose, 13, {T(1, 1, 3, 3), T(1, 2, 3, 3)}, 2, 2, 1,
       .attrs = {AV("strides", 3, 2), AV("output_shape", 10, 8)});
  CASE("convT 1-D", KILN_OP_ConvTranspose, 13, {T(1, 2, 7), T(2, 3, 4), T(3)}, 3, 6, 1,
       .attrs = {AV("strides", 2), AV("pads", 1, 2)});
  CASE("convT 3-D", KILN_OP_ConvTranspose, 13, {T(1, 2, 3, 4, 3), T(2, 2, 2, 3, 2)}, 2, 2, 1,
       .attrs = {AV("strides", 2, 1, 2)});
  /* strided: one convolution per output phase; phases without taps (kernel smaller than the
   * stride, or dilation sharing a factor with it) hold the bias */
  CASE("convT 1x1 stride 2 bias", KILN_OP_ConvTranspose, 13, {T(2, 6, 4, 3), T(6, 5, 1, 1), T(5)},
       3, 6, 1, .attrs = {AV("strides", 2, 2), AV("output_padding", 1, 1)});
  CASE("convT 1x1 stride 2 fed bias", KILN_OP_ConvTranspose, 13,
       {T(2, 6, 4, 3), T(6, 5, 1, 1), T(5)}, 3, 0, 1,
       .attrs = {AV("strides", 2, 2), AV("output_padding", 1, 0)});
  CASE("convT stride 2 dilation 2 fed", KILN_OP_ConvTranspose, 13,
       {T(1, 3, 5, 4), T(3, 4, 3, 2), T(4)}, 3, 0, 1,
       .attrs = {AV("strides", 2, 2), AV("dilations", 2, 2), AV("pads", 1, 0, 0, 1)});
  CASE("convT stride 3 dilation 2 groups", KILN_OP_ConvTranspose, 13,
       {T(2, 4, 4, 5), T(4, 3, 4, 3)}, 2, 2, 1,
       .attrs = {AI("group", 2), AV("strides", 3, 2), AV("dilations", 2, 1),
                 AV("pads", 2, 1, 1, 0)});
  CASE("convT resnet backward-data fed", KILN_OP_ConvTranspose, 13,
       {T(2, 16, 5, 5), T(16, 24, 3, 3)}, 2, 0, 1,
       .attrs = {AV("strides", 2, 2), AV("pads", 1, 1, 1, 1), AV("output_padding", 1, 1)});
  CASE("convT 1x1 stride 2 wide rows", KILN_OP_ConvTranspose, 13,
       {T(1, 4, 3, 17), T(4, 3, 1, 1), T(3)}, 3, 6, 1,
       .attrs = {AV("strides", 2, 2), AV("output_padding", 0, 1)});
  CASE("convT stride 2x1 wide rows fed", KILN_OP_ConvTranspose, 13,
       {T(1, 3, 4, 20), T(3, 2, 3, 3), T(2)}, 3, 0, 1,
       .attrs = {AV("strides", 2, 1), AV("pads", 1, 1, 0, 1)});
  CASE("convT stride 3 rows of 40", KILN_OP_ConvTranspose, 13,
       {T(1, 2, 3, 14), T(2, 2, 2, 4)}, 2, 0, 1,
       .attrs = {AV("strides", 2, 3), AV("pads", 0, 1, 1, 0)});
  CASE("convT 3-D all strided fed", KILN_OP_ConvTranspose, 13,
       {T(1, 3, 3, 4, 3), T(3, 2, 3, 2, 3), T(2)}, 3, 0, 1,
       .attrs = {AV("strides", 2, 2, 3), AV("pads", 1, 0, 1, 0, 1, 1)});
}

static void test_pools(void) {
  CASE("maxpool resnet", KILN_OP_MaxPool, 13, {T(2, 3, 17, 18)}, 1, 0, 2,
       .attrs = {AV("kernel_shape", 3, 3), AV("strides", 2, 2), AV("pads", 1, 1, 1, 1)});
  CASE("maxpool col-major", KILN_OP_MaxPool, 13, {T(1, 2, 9, 7)}, 1, 0, 2,
       .attrs = {AV("kernel_shape", 2, 3), AV("strides", 2, 1), AV("pads", 1, 0, 0, 2),
                 AI("storage_order", 1)});
  CASE("maxpool no indices", KILN_OP_MaxPool, 13, {T(1, 2, 9, 7)}, 1, 0, 1,
       .attrs = {AV("kernel_shape", 3, 2), AV("pads", 2, 1, 0, 1)});
  CASE("maxpool ceil dilation", KILN_OP_MaxPool, 13, {T(1, 2, 10, 11)}, 1, 0, 2,
       .attrs = {AV("kernel_shape", 3, 3), AV("strides", 2, 2), AV("dilations", 2, 2),
                 AI("ceil_mode", 1), AV("pads", 1, 1, 1, 1)});
  CASE("maxpool 1-D", KILN_OP_MaxPool, 13, {T(2, 3, 23)}, 1, 0, 2,
       .attrs = {AV("kernel_shape", 4), AV("strides", 3), AV("pads", 2, 1), AI("ceil_mode", 1)});
  CASE("maxpool 3-D", KILN_OP_MaxPool, 13, {T(1, 2, 5, 6, 7)}, 1, 0, 2,
       .attrs = {AV("kernel_shape", 2, 3, 2), AV("strides", 2, 1, 2),
                 AV("pads", 1, 1, 0, 0, 1, 1)});
  CASE("maxpool same_lower", KILN_OP_MaxPool, 13, {T(1, 1, 6, 5)}, 1, 0, 1,
       .attrs = {AV("kernel_shape", 2, 3), AS("auto_pad", "SAME_LOWER"), AV("strides", 2, 2)});
  CASE("avgpool", KILN_OP_AveragePool, 13, {T(2, 3, 11, 9)}, 1, 0, 1,
       .attrs = {AV("kernel_shape", 3, 3), AV("strides", 2, 2), AV("pads", 1, 1, 1, 1)});
  CASE("avgpool include pad ceil", KILN_OP_AveragePool, 13, {T(1, 2, 10, 7)}, 1, 0, 1,
       .attrs = {AV("kernel_shape", 3, 2), AV("strides", 2, 2), AV("pads", 1, 0, 2, 1),
                 AI("count_include_pad", 1), AI("ceil_mode", 1)});
  CASE("avgpool 1-D", KILN_OP_AveragePool, 13, {T(1, 3, 17)}, 1, 0, 1,
       .attrs = {AV("kernel_shape", 5), AV("pads", 2, 2)});
  CASE("avgpool 3-D", KILN_OP_AveragePool, 13, {T(1, 2, 4, 5, 6)}, 1, 0, 1,
       .attrs = {AV("kernel_shape", 2, 2, 3), AV("strides", 1, 2, 2), AI("count_include_pad", 1),
                 AV("pads", 0, 1, 1, 1, 0, 1)});
  CASE("global avg", KILN_OP_GlobalAveragePool, 13, {T(2, 5, 7, 9)}, 1, 0, 1);
  CASE("global avg 1x1", KILN_OP_GlobalAveragePool, 13, {T(1, 3, 1, 1)}, 1, 0, 1);
  CASE("global avg 3-D", KILN_OP_GlobalAveragePool, 13, {T(1, 2, 3, 4, 5)}, 1, 0, 1);
  CASE("global max", KILN_OP_GlobalMaxPool, 13, {T(2, 5, 7, 9)}, 1, 0, 1);
  CASE("global max 1-D", KILN_OP_GlobalMaxPool, 13, {T(3, 2, 11)}, 1, 0, 1);
}

static void test_norms(void) {
  CASE("bn const", KILN_OP_BatchNormalization, 15,
       {T(2, 5, 6, 7), T(5), T(5), T(5), TP(5)}, 5, 0x1e, 1, .attrs = {AF("epsilon", 1e-3)});
  CASE("bn fed", KILN_OP_BatchNormalization, 15, {T(2, 3, 11), T(3), T(3), T(3), TP(3)}, 5, 0, 1);
  CASE("bn 2-D input", KILN_OP_BatchNormalization, 15, {T(4, 6), T(6), T(6), T(6), TP(6)}, 5,
       0x1e, 1);
  CASE("bn training", KILN_OP_BatchNormalization, 15, {T(3, 4, 5, 6), T(4), T(4), T(4), TP(4)}, 5,
       0x1e, 3, .attrs = {AI("training_mode", 1), AF("momentum", 0.8)});
  CASE("bn training fed", KILN_OP_BatchNormalization, 15, {T(2, 3, 37), T(3), T(3), T(3), TP(3)},
       5, 0, 3, .attrs = {AI("training_mode", 1)});
  CASE("bn opset 9 training outputs", KILN_OP_BatchNormalization, 9,
       {T(2, 3, 4, 5), T(3), T(3), T(3), TP(3)}, 5, 0x1e, 4);
  CASE("bn opset 9 running only", KILN_OP_BatchNormalization, 9,
       {T(2, 3, 4, 5), T(3), T(3), T(3), TP(3)}, 5, 0, 3, .omit_out = 0x4);
  CASE("bn opset 7 per activation", KILN_OP_BatchNormalization, 7,
       {T(2, 3, 2, 2), T(3, 2, 2), T(3, 2, 2), T(3, 2, 2), TP(3, 2, 2)}, 5, 0x1e, 1,
       .attrs = {AI("spatial", 0)});
  CASE("bn opset 6 is_test", KILN_OP_BatchNormalization, 6,
       {T(2, 3, 4), T(3), T(3), T(3), TP(3)}, 5, 0x1e, 3, .attrs = {AI("is_test", 1)});
  CASE("instancenorm", KILN_OP_InstanceNormalization, 13, {T(2, 3, 7, 5), T(3), T(3)}, 3, 6, 1,
       .attrs = {AF("epsilon", 1e-2)});
  CASE("instancenorm fed 1-D", KILN_OP_InstanceNormalization, 13, {T(1, 4, 29), T(4), T(4)}, 3, 0,
       1);
  CASE("lrn", KILN_OP_LRN, 13, {T(2, 7, 3, 4)}, 1, 0, 1,
       .attrs = {AI("size", 3), AF("alpha", 0.01), AF("beta", 0.6), AF("bias", 2.0)});
  CASE("lrn even size", KILN_OP_LRN, 13, {T(1, 5, 6)}, 1, 0, 1, .attrs = {AI("size", 4)});
}

/* A Conv whose geometry the window helper refuses reaches no kernel: compile reports it. */
static void test_bad_input(void) {
  kiln_err e = {0};
  one_node t;
  kiln_tensor *in[2] = {T(1, 2, 3, 3), T(1, 2, 2, 2)};
  on_begin(&t, KILN_OP_Conv, 13, in, 2, 2, 1);
  CHECK(ir_infer(t.g, NULL, &t.e) == KILN_OK);
  /* corrupt the attribute after inference: the emitter must refuse, not crash */
  ir_set_attr_ints(t.g, t.node, "pads", (const int64_t[]){-3, 0, 0, 0}, 4, &t.e);
  kiln_program *p = NULL;
  kiln_compile_opts o = {.threads = 1, .cache_dir = ""};
  CHECK(kiln_compile(t.g, &o, &p, &e) != KILN_OK);
  CHECK(strstr(e.msg, "pads") != NULL);
  kiln_tensor_free(in[0]);
  kiln_tensor_free(in[1]);
}

/* Conv (padded: preparation tables, packed weights) -> BatchNormalization (constant table) ->
 * MaxPool with Indices, compiled while the N-th allocation fails, for every N until compiling
 * succeeds: each failure is reported as out of memory, and nothing leaks (under ASan). */
static void test_alloc_failures(void) {
  char dir[] = "/tmp/kiln-test-jit-nn-XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  kiln_tensor *x = T(1, 3, 9, 8), *w = T(4, 3, 3, 3), *b = T(4);
  kiln_tensor *bn[4] = {T(4), T(4), T(4), TP(4)};
  bool done = false;
  for (long k = 0; k < 5000 && !done; k++) {
    kiln_err e = {0};
    kiln_graph *g = ir_graph_new();
    int xi, wi, bi, yi, zi, pi, ii, pa[4];
    ir_set_opset(g, "", 13, &e);
    ir_add_value(g, "x", &xi, &e);
    g->values[xi].dtype = KILN_F32;
    g->values[xi].shape = x->shape;
    g->values[xi].typed = true;
    ir_add_input(g, xi, &e);
    kiln_tensor *c;
    kiln_tensor_clone(w, &c, &e), ir_add_const(g, "w", c, true, &wi, &e);
    kiln_tensor_clone(b, &c, &e), ir_add_const(g, "b", c, true, &bi, &e);
    for (int i = 0; i < 4; i++) {
      char nm[8];
      snprintf(nm, sizeof nm, "p%d", i);
      kiln_tensor_clone(bn[i], &c, &e), ir_add_const(g, nm, c, true, &pa[i], &e);
    }
    ir_add_value(g, "y", &yi, &e);
    ir_add_value(g, "z", &zi, &e);
    ir_add_value(g, "p", &pi, &e);
    ir_add_value(g, "i", &ii, &e);
    int conv, pool;
    ir_add_node(g, KILN_OP_Conv, "conv", (int[]){xi, wi, bi}, 3, (int[]){yi}, 1, &conv, &e);
    ir_set_attr_ints(g, conv, "pads", (const int64_t[]){1, 2, 1, 0}, 4, &e);
    ir_add_node(g, KILN_OP_BatchNormalization, "bn", (int[]){yi, pa[0], pa[1], pa[2], pa[3]}, 5,
                (int[]){zi}, 1, NULL, &e);
    ir_add_node(g, KILN_OP_MaxPool, "pool", (int[]){zi}, 1, (int[]){pi, ii}, 2, &pool, &e);
    ir_set_attr_ints(g, pool, "kernel_shape", (const int64_t[]){3, 3}, 2, &e);
    ir_set_attr_ints(g, pool, "strides", (const int64_t[]){2, 2}, 2, &e);
    ir_add_output(g, pi, &e);
    ir_add_output(g, ii, &e);
    ir_infer(g, NULL, &e);
    CHECK_OK(e.code, &e);
    kiln_program *p = NULL;
    kiln_compile_opts o = {.threads = 2, .cache_dir = dir};
    kiln_alloc_fail_after(k);
    kiln_code rc = kiln_compile(g, &o, &p, &e);
    kiln_alloc_fail_after(-1);
    if (rc == KILN_OK) {
      kiln_tensor *out[2] = {0};
      CHECK_OK(kiln_program_run(p, &x, out, false, &e), &e);
      kiln_tensor_free(out[0]);
      kiln_tensor_free(out[1]);
      kiln_program_free(p);
      done = true;
    } else {
      CHECK_MSG(rc == KILN_ERR_NOMEM, "allocation %ld: %s", k, e.msg);
    }
  }
  CHECK(done);
  kiln_tensor_free(x), kiln_tensor_free(w), kiln_tensor_free(b);
  for (int i = 0; i < 4; i++) kiln_tensor_free(bn[i]);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  CHECK(system(cmd) == 0);
}

int main(void) {
  RUN(test_conv);
  RUN(test_conv_transpose);
  RUN(test_pools);
  RUN(test_norms);
  RUN(test_bad_input);
  RUN(test_alloc_failures);
  TEST_MAIN_END();
}
