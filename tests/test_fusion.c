/* test_fusion.c — the fusion passes (fuse-conv-act, fuse-conv-add-relu, fuse-upsample-conv,
 * fuse-gap-gemm, fuse-elementwise) and their kiln-domain ops: small hand-built graphs whose
 * IR before and after is compared with golden text (tests/data/fusion/<case>.txt;
 * KILN_UPDATE_GOLDEN=1 rewrites them), and differential execution of the fused graph against
 * the unfused one — with the reference kernels, with the JIT at 1 and 3 threads (bitwise equal
 * between them), and after an ONNX save/load round trip — on those graphs, on the kiln-built
 * ResNet-18 + SPN (nearest and bilinear), on a PyTorch export of the same network
 * (tests/data/fusion/torch_spn, scripts/make_fusion_fixtures.py) and on the conformance
 * suite's models through the default pipeline. */
#include <stdint.h>
#include <sys/stat.h>

#include "codegen/compile.h"
#include "frontend/onnx.h"
#include "kiln.h"
#include "ir/ops/fused.h"
#include "models/models.h"
#include "passes/pass.h"
#include "runtime/ref.h"
#include "test.h"
#include "graph_build.h"

#define DATA_DIR KILN_SOURCE_DIR "/tests/data"
#define SUITE_DIR "/usr/share/libonnx-testdata/data"

/* Conv of x with a random weight [oc, c/group, k...] (rank = x's rank) and optional bias;
 * pads/strides/dilations NULL: defaults. */
static int gb_conv(gb *b, const char *name, int x, int64_t oc, const int64_t *k, bool bias,
                   int64_t group, const int64_t *pads, const int64_t *strides,
                   const int64_t *dils) {
  if (!ir_val(b->g, x)->typed) { /* x comes from a node: type what is built so far */
    kiln_evaluator ev = kiln_ref_evaluator();
    if (ir_infer(b->g, &ev, &b->e)) return -1;
  }
  const kiln_value *xv = ir_val(b->g, x);
  int rank = xv->shape.rank, nsp = rank - 2;
  int64_t wd[5] = {oc, xv->shape.d[1] / group};
  for (int i = 0; i < nsp; i++) wd[2 + i] = k[i];
  char nm[128];
  snprintf(nm, sizeof nm, "%s.weight", name);
  int w = gb_rand(b, nm, rank, wd, -0.5, 0.5), bv = -1, nid;
  if (bias) {
    snprintf(nm, sizeof nm, "%s.bias", name);
    bv = gb_rand(b, nm, 1, IV(oc), -0.5, 0.5);
  }
  int y = bias ? gb_node(b, KILN_OP_Conv, name, IN(x, w, bv), 1, &nid)
               : gb_node(b, KILN_OP_Conv, name, IN(x, w), 1, &nid);
  if (group != 1) ir_set_attr_int(b->g, nid, "group", group, &b->e);
  if (pads) gb_ints_attr(b, nid, "pads", 2 * nsp, pads);
  if (strides) gb_ints_attr(b, nid, "strides", nsp, strides);
  if (dils) gb_ints_attr(b, nid, "dilations", nsp, dils);
  return y;
}

/* Resize (opset >= 11) of x by float scales, or to sizes when sizes != NULL. */
static int gb_resize(gb *b, const char *name, int x, const char *mode, const char *coord,
                     const char *nearest, const float *scales, const int64_t *sizes) {
  char nm[128];
  int rank = ir_val(b->g, x)->shape.rank, nid, y;
  snprintf(nm, sizeof nm, "%s.%s", name, sizes ? "sizes" : "scales");
  if (sizes) {
    int sz = gb_ints(b, nm, 1, rank, sizes);
    snprintf(nm, sizeof nm, "%s.empty", name);
    int sc = gb_floats(b, nm, 0, NULL);
    y = gb_node(b, KILN_OP_Resize, name, IN(x, -1, sc, sz), 1, &nid);
  } else {
    int sc = gb_floats(b, nm, rank, scales);
    y = gb_node(b, KILN_OP_Resize, name, IN(x, -1, sc), 1, &nid);
  }
  ir_set_attr_str(b->g, nid, "mode", mode, &b->e);
  ir_set_attr_str(b->g, nid, "coordinate_transformation_mode", coord, &b->e);
  if (nearest) ir_set_attr_str(b->g, nid, "nearest_mode", nearest, &b->e);
  return y;
}

/* ---- running ---- */

static int count_fused_conv(const kiln_graph *g, bool residual) {
  int k = 0;
  for (int64_t i = 0; i < g->n_nodes; i++) {
    const kiln_node *n = &g->nodes[i];
    k += !n->dead && n->op == KILN_OP_FusedConv && (ir_attr_int(n, "has_residual") != 0) == residual;
  }
  return k;
}

static kiln_code run_ref(const kiln_graph *g, kiln_tensor *const *in, kiln_tensor **out,
                         kiln_err *e) {
  kiln_ref_ctx ctx = {.g = g};
  return kiln_ref_run(g, &ctx, in, out, e);
}

/* A copy of g through the ONNX writer and loader (what `kiln opt -o` writes), inferred. */
static kiln_code clone(const kiln_graph *g, kiln_graph **out, kiln_err *e) {
  uint8_t *buf = NULL;
  size_t len = 0;
  *out = NULL;
  KILN_TRY(kiln_onnx_save_buffer(g, &buf, &len, e));
  kiln_code rc = kiln_onnx_load_buffer(buf, len, NULL, "clone", out, e);
  kiln_free(buf);
  kiln_evaluator ev = kiln_ref_evaluator();
  if (!rc) rc = ir_infer(*out, &ev, e);
  return rc;
}

/* Compiles a copy of g with the JIT and runs it. */
static kiln_code run_jit(const kiln_graph *g, int threads, kiln_tensor *const *in,
                         kiln_tensor **out, kiln_err *e) {
  kiln_graph *c = NULL;
  KILN_TRY(clone(g, &c, e));
  kiln_program *p = NULL;
  kiln_compile_opts o = {.threads = threads, .cache_dir = ""};
  KILN_TRY(kiln_compile(c, &o, &p, e)); /* takes c */
  kiln_code rc = kiln_program_run(p, in, out, false, e);
  kiln_program_free(p);
  return rc;
}

typedef struct fcase {
  const char *pipeline; /* NULL: the mode's default */
  kiln_pass_mode mode;
  const char *golden;
  kiln_tensor *const *inputs; /* NULL: seeded random inputs */
  kiln_tensor *const *want;   /* also compare with these (recorded outputs), or NULL */
  double tol;
  bool no_jit;
  int vector_floats; /* kiln_pass_ctx.vector_floats (the layout pass's block) */
  int layout;        /* kiln_pass_ctx.layout */
} fcase;

#define MAXIO 32

/* Infers g, runs it with the reference kernels, optimizes it, checks the IR against the
 * golden text, then runs the result with the reference kernels, the JIT at 1 and 3 threads
 * and after an ONNX round trip, comparing with the unoptimized outputs.  Leaves g optimized. */
static void fuse_run(kiln_graph *g, const fcase *c, kiln_pipeline_result *res) {
  kiln_err e = {0};
  kiln_evaluator ev = kiln_ref_evaluator();
  kiln_tensor *rnd[MAXIO] = {0}, *before[MAXIO] = {0}, *after[MAXIO] = {0};
  kiln_tensor *j1[MAXIO] = {0}, *j3[MAXIO] = {0}, *back[MAXIO] = {0};
  kiln_graph *g2 = NULL;
  char *text0 = NULL;
  double tol = c->tol > 0 ? c->tol : 1e-4;
  kiln_pipeline_result local;
  if (!res) res = &local;
  memset(res, 0, sizeof *res);
  CHECK_OK(ir_toposort(g, &e), &e);
  CHECK_OK(ir_verify(g, &e), &e);
  CHECK_OK(ir_infer(g, &ev, &e), &e);
  if (e.code || g->n_inputs > MAXIO || g->n_outputs > MAXIO) return;
  kiln_tensor *const *in = c->inputs;
  if (!in) {
    CHECK_OK(random_inputs(g, 7, rnd, &e), &e);
    in = rnd;
  }
  text0 = ir_text(g);
  CHECK_OK(run_ref(g, in, before, &e), &e);
  kiln_pass_ctx cx = {.mode = c->mode, .ev = &ev, .verify = true,
                      .vector_floats = c->vector_floats, .layout = c->layout};
  CHECK_OK(kiln_run_pipeline(g, c->pipeline, &cx, res, &e), &e);
  if (e.code) goto done;
  if (c->golden) {
    char *text1 = ir_text(g), *all = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&all, &n);
    fprintf(f, "; before\n%s; after %s (%s)\n%s", text0,
            c->pipeline ? c->pipeline : kiln_default_pipeline(c->mode),
            c->mode == KILN_MODE_TRAINING ? "training" : "inference", text1);
    fclose(f);
    check_golden_in("fusion", c->golden, all);
    free(text1);
    free(all);
  }
  const char *nm[MAXIO];
  for (int i = 0; i < g->n_outputs; i++) nm[i] = g->values[g->outputs[i]].name;
  CHECK_OK(run_ref(g, in, after, &e), &e);
  for (int i = 0; i < g->n_outputs && !e.code; i++) {
    CHECK_MSG(tensors_close(after[i], before[i], tol, nm[i]), "reference, %s", nm[i]);
    if (c->want) CHECK_MSG(tensors_close(after[i], c->want[i], tol, nm[i]), "recorded, %s", nm[i]);
  }
  if (!c->no_jit) {
    CHECK_OK(run_jit(g, 1, in, j1, &e), &e);
    CHECK_OK(run_jit(g, 3, in, j3, &e), &e);
    for (int i = 0; i < g->n_outputs && !e.code; i++) {
      CHECK_MSG(tensors_close(j1[i], before[i], tol, nm[i]), "jit, %s", nm[i]);
      CHECK_MSG(tensors_same(j1[i], j3[i]), "%s differs between 1 and 3 threads", nm[i]);
      if (c->want) CHECK_MSG(tensors_close(j1[i], c->want[i], tol, nm[i]), "jit, %s", nm[i]);
    }
  }
  CHECK_OK(clone(g, &g2, &e), &e);
  if (!e.code) {
    CHECK(g2->n_outputs == g->n_outputs);
    CHECK_OK(run_ref(g2, in, back, &e), &e);
    for (int i = 0; i < g->n_outputs && !e.code; i++)
      CHECK_MSG(tensors_close(back[i], before[i], tol, nm[i]), "round trip, %s", nm[i]);
  }
done:
  free(text0);
  ir_graph_free(g2);
  free_tensors(rnd, MAXIO);
  free_tensors(before, MAXIO);
  free_tensors(after, MAXIO);
  free_tensors(j1, MAXIO);
  free_tensors(j3, MAXIO);
  free_tensors(back, MAXIO);
}

static int64_t changes_of(const kiln_pipeline_result *r, const char *pass) {
  int64_t k = 0;
  for (int i = 0; i < r->n; i++)
    if (!strcmp(r->pass[i]->name, pass)) k += r->stats[i].changes;
  return k;
}

static const char *detail_of(const kiln_pipeline_result *r, const char *pass) {
  for (int i = 0; i < r->n; i++)
    if (!strcmp(r->pass[i]->name, pass)) return r->stats[i].detail;
  return "";
}

/* ---- fuse-conv-act ---- */

static kiln_graph *build_conv_act(int opset, kiln_err *e) {
  gb b;
  gb_begin(&b, opset, 4242);
  int x = gb_input(&b, "x", KILN_F32, 4, IV(2, 4, 7, 6));
  int64_t p1[] = {1, 1, 1, 1};
  /* Conv + bias + Relu */
  int c1 = gb_conv(&b, "conv1", x, 6, IV(3, 3), true, 1, p1, NULL, NULL);
  gb_output(&b, NODE(&b, Relu, "relu1", c1));
  /* Conv (no bias, grouped, strided) + Clip(0, 6) as ReLU6 with constant bounds */
  int c2 = gb_conv(&b, "conv2", x, 4, IV(3, 3), false, 2, p1, IV(2, 2), NULL);
  int lo = gb_scalar(&b, "zero", KILN_F32, 0), hi = gb_scalar(&b, "six", KILN_F32, 0.5);
  gb_output(&b, NODE(&b, Clip, "relu6", c2, lo, hi));
  /* Conv + LeakyRelu(0.2), Conv + Sigmoid */
  int nid;
  int c3 = gb_conv(&b, "conv3", x, 3, IV(1, 1), true, 1, NULL, NULL, NULL);
  int l3 = gb_node(&b, KILN_OP_LeakyRelu, "leaky", IN(c3), 1, &nid);
  ir_set_attr_float(b.g, nid, "alpha", 0.2, &b.e);
  gb_output(&b, l3);
  int c4 = gb_conv(&b, "conv4", x, 2, IV(2, 3), true, 1, IV(0, 1, 1, 1), NULL, IV(2, 1));
  gb_output(&b, NODE(&b, Sigmoid, "sigmoid", c4));
  /* not fused: the conv output has a second reader; the conv output is a graph output */
  int c5 = gb_conv(&b, "conv5", x, 2, IV(1, 1), false, 1, NULL, NULL, NULL);
  gb_output(&b, NODE(&b, Add, "sum5", NODE(&b, Relu, "relu5", c5), c5));
  int c6 = gb_conv(&b, "conv6", x, 2, IV(1, 1), false, 1, NULL, NULL, NULL);
  gb_output(&b, NODE(&b, Relu, "relu6b", c6));
  gb_output(&b, c6);
  /* Clip with a non-constant bound: not fused */
  int c7 = gb_conv(&b, "conv7", x, 2, IV(1, 1), false, 1, NULL, NULL, NULL);
  int bound = gb_input(&b, "bound", KILN_F32, 0, NULL);
  gb_output(&b, NODE(&b, Clip, "clip7", c7, bound));
  /* 1-D */
  int x1 = gb_input(&b, "x1", KILN_F32, 3, IV(1, 3, 9));
  int c8 = gb_conv(&b, "conv8", x1, 4, IV(3), true, 1, IV(1, 1), NULL, NULL);
  gb_output(&b, NODE(&b, Relu, "relu8", c8));
  *e = b.e;
  return b.g;
}

static void test_conv_act(void) {
  kiln_err e = {0};
  kiln_graph *g = build_conv_act(13, &e);
  CHECK_OK(e.code, &e);
  kiln_pipeline_result res;
  fuse_run(g, &(fcase){.pipeline = "fuse-conv-act,dce", .golden = "conv_act"}, &res);
  CHECK_MSG(changes_of(&res, "fuse-conv-act") == 5, "%s", detail_of(&res, "fuse-conv-act"));
  CHECK(strstr(detail_of(&res, "fuse-conv-act"), "2 Relu, 1 Clip, 1 LeakyRelu, 1 Sigmoid"));
  CHECK(count_op(g, KILN_OP_FusedConv) == 5 && count_op(g, KILN_OP_Conv) == 3);
  ir_graph_free(g);

  /* opset 9: Clip's bounds are attributes */
  gb b;
  gb_begin(&b, 9, 4242);
  int x = gb_input(&b, "x", KILN_F32, 4, IV(1, 3, 5, 5)), nid;
  int c = gb_conv(&b, "conv", x, 4, IV(3, 3), true, 1, IV(1, 1, 1, 1), NULL, NULL);
  int y = gb_node(&b, KILN_OP_Clip, "clip", IN(c), 1, &nid);
  ir_set_attr_float(b.g, nid, "min", -0.1, &b.e);
  ir_set_attr_float(b.g, nid, "max", 0.3, &b.e);
  gb_output(&b, y);
  CHECK_OK(b.e.code, &b.e);
  fuse_run(b.g, &(fcase){.pipeline = "fuse-conv-act"}, &res);
  CHECK(count_op(b.g, KILN_OP_FusedConv) == 1 && count_op(b.g, KILN_OP_Clip) == 0);
  ir_graph_free(b.g);

  /* training mode: nothing fuses */
  g = build_conv_act(13, &e);
  fuse_run(g, &(fcase){.pipeline = "fuse-conv-act", .mode = KILN_MODE_TRAINING, .no_jit = true},
           &res);
  CHECK(changes_of(&res, "fuse-conv-act") == 0 && count_op(g, KILN_OP_FusedConv) == 0);
  CHECK(strstr(detail_of(&res, "fuse-conv-act"), "training") != NULL);
  ir_graph_free(g);
}

/* ---- fuse-conv-add-relu ---- */

static void test_conv_add_relu(void) {
  gb b;
  gb_begin(&b, 13, 4242);
  int64_t p1[] = {1, 1, 1, 1};
  int x = gb_input(&b, "x", KILN_F32, 4, IV(2, 4, 8, 8));
  /* a basic block: conv-bn-relu, conv-bn, + x, relu */
  int t = NODE(&b, Relu, "b1.relu1",
               gb_bn(&b, "b1.bn1", gb_conv(&b, "b1.conv1", x, 4, IV(3, 3), false, 1, p1, NULL,
                                           NULL), 4));
  t = gb_bn(&b, "b1.bn2", gb_conv(&b, "b1.conv2", t, 4, IV(3, 3), false, 1, p1, NULL, NULL), 4);
  int y1 = NODE(&b, Relu, "b1.relu", NODE(&b, Add, "b1.add", t, x));
  /* a downsampling block: both Add operands are convolutions (the first fuses) */
  int u = NODE(&b, Relu, "b2.relu1",
               gb_bn(&b, "b2.bn1", gb_conv(&b, "b2.conv1", y1, 8, IV(3, 3), false, 1, p1,
                                           IV(2, 2), NULL), 8));
  u = gb_bn(&b, "b2.bn2", gb_conv(&b, "b2.conv2", u, 8, IV(3, 3), false, 1, p1, NULL, NULL), 8);
  int ds = gb_bn(&b, "b2.ds.bn", gb_conv(&b, "b2.ds", y1, 8, IV(1, 1), false, 1, NULL, IV(2, 2),
                                         NULL), 8);
  int y2 = NODE(&b, Relu, "b2.relu", NODE(&b, Add, "b2.add", u, ds));
  gb_output(&b, y2);
  /* Add without an activation, residual first */
  int c3 = gb_conv(&b, "conv3", x, 4, IV(1, 1), true, 1, NULL, NULL, NULL);
  gb_output(&b, NODE(&b, Add, "add3", x, c3));
  /* not fused: the residual broadcasts */
  int c4 = gb_conv(&b, "conv4", x, 4, IV(1, 1), true, 1, NULL, NULL, NULL);
  int bias = gb_rand(&b, "bias4", 3, IV(4, 1, 1), -1, 1);
  gb_output(&b, NODE(&b, Relu, "relu4", NODE(&b, Add, "add4", c4, bias)));
  CHECK_OK(b.e.code, &b.e);
  kiln_pipeline_result res;
  fuse_run(b.g, &(fcase){.pipeline = "fold-bn,fuse-conv-act,fuse-conv-add-relu,dce",
                         .golden = "conv_add_relu"},
           &res);
  CHECK_MSG(changes_of(&res, "fuse-conv-add-relu") == 3, "%s",
            detail_of(&res, "fuse-conv-add-relu"));
  CHECK(strstr(detail_of(&res, "fuse-conv-add-relu"), "2 with an activation") != NULL);
  CHECK(count_fused_conv(b.g, true) == 3 && count_op(b.g, KILN_OP_Add) == 1);
  ir_graph_free(b.g);
}

/* ---- fuse-upsample-conv ---- */

static kiln_graph *build_upsample(kiln_err *e) {
  gb b;
  gb_begin(&b, 13, 4242);
  int64_t p1[] = {1, 1, 1, 1};
  int nid;
  /* a: nearest x2 (asymmetric, floor: PyTorch's) -> conv -> BN -> ReLU: phases, BN here */
  int x = gb_input(&b, "xa", KILN_F32, 4, IV(2, 6, 5, 4));
  int u = gb_resize(&b, "a.up", x, "nearest", "asymmetric", "floor", (float[]){1, 1, 2, 2}, NULL);
  u = gb_conv(&b, "a.conv", u, 5, IV(3, 3), true, 1, p1, NULL, NULL);
  gb_output(&b, NODE(&b, Relu, "a.relu", gb_bn(&b, "a.bn", u, 5)));
  /* b: nearest x3, half_pixel: phases with s = 3 */
  x = gb_input(&b, "xb", KILN_F32, 4, IV(1, 4, 4, 5));
  u = gb_resize(&b, "b.up", x, "nearest", "half_pixel", "round_prefer_floor",
                (float[]){1, 1, 3, 3}, NULL);
  gb_output(&b, gb_conv(&b, "b.conv", u, 3, IV(3, 3), false, 1, p1, NULL, NULL));
  /* c: nearest align_corners: the index map is not floor(o / s) */
  x = gb_input(&b, "xc", KILN_F32, 4, IV(1, 3, 5, 5));
  u = gb_resize(&b, "c.up", x, "nearest", "align_corners", "round_prefer_ceil",
                (float[]){1, 1, 2, 2}, NULL);
  u = gb_conv(&b, "c.conv", u, 4, IV(3, 3), true, 1, p1, NULL, NULL);
  int l = gb_node(&b, KILN_OP_LeakyRelu, "c.leaky", IN(u), 1, &nid);
  ir_set_attr_float(b.g, nid, "alpha", 0.1, &b.e);
  gb_output(&b, l);
  /* d: nearest asymmetric ceil */
  x = gb_input(&b, "xd", KILN_F32, 4, IV(1, 3, 4, 4));
  u = gb_resize(&b, "d.up", x, "nearest", "asymmetric", "ceil", (float[]){1, 1, 2, 2}, NULL);
  gb_output(&b, gb_conv(&b, "d.conv", u, 2, IV(3, 3), true, 1, p1, NULL, NULL));
  /* e: linear half_pixel x2 -> conv -> ReLU */
  x = gb_input(&b, "xe", KILN_F32, 4, IV(1, 4, 5, 6));
  u = gb_resize(&b, "e.up", x, "linear", "half_pixel", NULL, (float[]){1, 1, 2, 2}, NULL);
  u = gb_conv(&b, "e.conv", u, 3, IV(3, 3), true, 1, p1, NULL, NULL);
  gb_output(&b, NODE(&b, Relu, "e.relu", u));
  /* f: linear align_corners x(2, 3), 5x5 kernel -> Clip */
  x = gb_input(&b, "xf", KILN_F32, 4, IV(1, 3, 4, 5));
  u = gb_resize(&b, "f.up", x, "linear", "align_corners", NULL, (float[]){1, 1, 2, 3}, NULL);
  u = gb_conv(&b, "f.conv", u, 2, IV(5, 5), true, 1, IV(2, 2, 2, 2), NULL, NULL);
  gb_output(&b, NODE(&b, Clip, "f.clip", u, gb_scalar(&b, "f.lo", KILN_F32, 0),
                     gb_scalar(&b, "f.hi", KILN_F32, 0.4)));
  /* g: nearest x2 then a strided conv: conv_gen's nearest input transform */
  x = gb_input(&b, "xg", KILN_F32, 4, IV(1, 4, 6, 6));
  u = gb_resize(&b, "g.up", x, "nearest", "asymmetric", "floor", (float[]){1, 1, 2, 2}, NULL);
  gb_output(&b, gb_conv(&b, "g.conv", u, 4, IV(3, 3), false, 1, p1, IV(2, 2), NULL));
  /* h: nearest by sizes, grouped 2x2 conv with asymmetric pads -> Sigmoid */
  x = gb_input(&b, "xh", KILN_F32, 4, IV(1, 4, 3, 5));
  u = gb_resize(&b, "h.up", x, "nearest", "asymmetric", "floor", NULL, IV(1, 4, 6, 10));
  u = gb_conv(&b, "h.conv", u, 4, IV(2, 2), true, 2, IV(0, 1, 1, 0), NULL, NULL);
  gb_output(&b, NODE(&b, Sigmoid, "h.sigmoid", u));
  /* i: 1-D */
  x = gb_input(&b, "xi", KILN_F32, 3, IV(1, 2, 7));
  u = gb_resize(&b, "i.up", x, "nearest", "asymmetric", "floor", (float[]){1, 1, 2}, NULL);
  gb_output(&b, gb_conv(&b, "i.conv", u, 3, IV(3), true, 1, IV(1, 1), NULL, NULL));
  /* j: linear asymmetric, dilated 3x3 without padding */
  x = gb_input(&b, "xj", KILN_F32, 4, IV(1, 3, 4, 4));
  u = gb_resize(&b, "j.up", x, "linear", "asymmetric", NULL, (float[]){1, 1, 2, 2}, NULL);
  gb_output(&b, gb_conv(&b, "j.conv", u, 2, IV(3, 3), true, 1, NULL, NULL, IV(2, 2)));
  /* k: only W upsampled; dilated along H */
  x = gb_input(&b, "xk", KILN_F32, 4, IV(1, 3, 6, 4));
  u = gb_resize(&b, "k.up", x, "nearest", "asymmetric", "floor", (float[]){1, 1, 1, 2}, NULL);
  gb_output(&b, gb_conv(&b, "k.conv", u, 2, IV(3, 3), true, 1, IV(2, 1, 2, 1), NULL, IV(2, 1)));
  /* not fused: the upsampled value has a second reader; cubic; a scale of 1.5 */
  x = gb_input(&b, "xl", KILN_F32, 4, IV(1, 2, 3, 3));
  u = gb_resize(&b, "l.up", x, "nearest", "asymmetric", "floor", (float[]){1, 1, 2, 2}, NULL);
  gb_output(&b, gb_conv(&b, "l.conv", u, 2, IV(3, 3), true, 1, p1, NULL, NULL));
  gb_output(&b, u);
  x = gb_input(&b, "xm", KILN_F32, 4, IV(1, 2, 3, 3));
  u = gb_resize(&b, "m.up", x, "cubic", "half_pixel", NULL, (float[]){1, 1, 2, 2}, NULL);
  gb_output(&b, gb_conv(&b, "m.conv", u, 2, IV(3, 3), true, 1, p1, NULL, NULL));
  x = gb_input(&b, "xn", KILN_F32, 4, IV(1, 2, 4, 4));
  u = gb_resize(&b, "n.up", x, "nearest", "asymmetric", "floor", (float[]){1, 1, 1.5f, 1.5f},
                NULL);
  gb_output(&b, gb_conv(&b, "n.conv", u, 2, IV(3, 3), true, 1, p1, NULL, NULL));
  *e = b.e;
  return b.g;
}

static void test_upsample_conv(void) {
  kiln_err e = {0};
  kiln_graph *g = build_upsample(&e);
  CHECK_OK(e.code, &e);
  kiln_pipeline_result res;
  fuse_run(g, &(fcase){.pipeline = "fuse-upsample-conv,dce", .golden = "upsample_conv"}, &res);
  const char *d = detail_of(&res, "fuse-upsample-conv");
  CHECK_MSG(changes_of(&res, "fuse-upsample-conv") == 11, "%s", d);
  CHECK_MSG(strstr(d, "8 nearest, 3 linear; 5 with an activation, 1 BatchNormalization") != NULL,
            "%s", d);
  CHECK(count_op(g, KILN_OP_UpsampleConv) == 11 && count_op(g, KILN_OP_Resize) == 3);
  CHECK(count_op(g, KILN_OP_BatchNormalization) == 0);
  ir_graph_free(g);

  /* after fuse-conv-act the Conv is a FusedConv: its activation carries over */
  g = build_upsample(&e);
  fuse_run(g, &(fcase){.pipeline = "fold-bn,fuse-conv-act,fuse-upsample-conv,dce"}, &res);
  CHECK(count_op(g, KILN_OP_UpsampleConv) == 11 && count_op(g, KILN_OP_FusedConv) == 0);
  ir_graph_free(g);
}

/* Upsample-9 (scales as an input) and Resize-10, nearest and linear: asymmetric coordinates. */
static void test_upsample_legacy(void) {
  for (int opset = 9; opset <= 10; opset++) {
    gb b;
    gb_begin(&b, opset, 4242);
    kiln_op op = opset == 9 ? KILN_OP_Upsample : KILN_OP_Resize;
    int64_t p1[] = {1, 1, 1, 1};
    int nid;
    for (int lin = 0; lin < 2; lin++) {
      char nm[32];
      snprintf(nm, sizeof nm, "x%d", lin);
      int x = gb_input(&b, nm, KILN_F32, 4, IV(1, 3, 4, 5));
      snprintf(nm, sizeof nm, "up%d.scales", lin);
      int sc = gb_floats(&b, nm, 4, (float[]){1, 1, 2, 2});
      snprintf(nm, sizeof nm, "up%d", lin);
      int u = gb_node(&b, op, nm, IN(x, sc), 1, &nid);
      ir_set_attr_str(b.g, nid, "mode", lin ? "linear" : "nearest", &b.e);
      snprintf(nm, sizeof nm, "conv%d", lin);
      u = gb_conv(&b, nm, u, 4, IV(3, 3), true, 1, p1, NULL, NULL);
      snprintf(nm, sizeof nm, "relu%d", lin);
      gb_output(&b, NODE(&b, Relu, nm, u));
    }
    CHECK_OK(b.e.code, &b.e);
    kiln_pipeline_result res;
    fuse_run(b.g, &(fcase){.pipeline = "fuse-upsample-conv,dce",
                           .golden = opset == 9 ? "upsample9" : NULL},
             &res);
    CHECK_MSG(count_op(b.g, KILN_OP_UpsampleConv) == 2, "opset %d: %s", opset,
              detail_of(&res, "fuse-upsample-conv"));
    ir_graph_free(b.g);
  }
}

/* ---- fuse-gap-gemm ---- */

static void test_gap_gemm(void) {
  gb b;
  gb_begin(&b, 13, 4242);
  int nid;
  /* GAP -> Flatten -> Gemm(transB, C [M]) */
  int x = gb_input(&b, "x", KILN_F32, 4, IV(3, 6, 4, 5));
  int f = gb_node(&b, KILN_OP_Flatten, "flat", IN(NODE(&b, GlobalAveragePool, "gap", x)), 1, &nid);
  ir_set_attr_int(b.g, nid, "axis", 1, &b.e);
  int y = gb_node(&b, KILN_OP_Gemm, "fc",
                  IN(f, gb_rand(&b, "fc.weight", 2, IV(70, 6), -1, 1),
                     gb_rand(&b, "fc.bias", 1, IV(70), -1, 1)), 1,
                  &nid);
  ir_set_attr_int(b.g, nid, "transB", 1, &b.e);
  gb_output(&b, NODE(&b, Relu, "relu", y));
  /* 3-D pooling -> Reshape [N, C] -> Gemm(alpha, beta, C [N, M]) */
  int x2 = gb_input(&b, "x2", KILN_F32, 5, IV(2, 5, 2, 3, 2));
  int r = NODE(&b, Reshape, "flat2", NODE(&b, GlobalAveragePool, "gap2", x2),
               gb_ints(&b, "shape2", 1, 2, IV(2, -1)));
  int y2 = gb_node(&b, KILN_OP_Gemm, "fc2",
                   IN(r, gb_rand(&b, "fc2.weight", 2, IV(5, 4), -1, 1),
                      gb_rand(&b, "fc2.c", 2, IV(2, 4), -1, 1)), 1,
                   &nid);
  ir_set_attr_float(b.g, nid, "alpha", 0.5, &b.e);
  ir_set_attr_float(b.g, nid, "beta", 2.0, &b.e);
  gb_output(&b, y2);
  /* no C, the pooled value is also an output: not fused */
  int x3 = gb_input(&b, "x3", KILN_F32, 4, IV(1, 3, 2, 2));
  int p3 = NODE(&b, GlobalAveragePool, "gap3", x3);
  int f3 = gb_node(&b, KILN_OP_Flatten, "flat3", IN(p3), 1, &nid);
  gb_output(&b, NODE(&b, Gemm, "fc3", f3, gb_rand(&b, "fc3.weight", 2, IV(3, 2), -1, 1)));
  gb_output(&b, p3);
  CHECK_OK(b.e.code, &b.e);
  kiln_pipeline_result res;
  fuse_run(b.g, &(fcase){.pipeline = "fuse-gap-gemm,dce", .golden = "gap_gemm"}, &res);
  CHECK_MSG(changes_of(&res, "fuse-gap-gemm") == 2, "%s", detail_of(&res, "fuse-gap-gemm"));
  CHECK(count_op(b.g, KILN_OP_GapGemm) == 2 && count_op(b.g, KILN_OP_Gemm) == 1);
  ir_graph_free(b.g);
}

/* GapGemm with B a graph input (not repacked at compile time): rows read in place, and read
 * transposed lane by lane; a tail block of columns (70 = 64 + 6), a batch of 3. */
static void test_gap_gemm_runtime_b(void) {
  for (int tb = 0; tb < 2; tb++) {
    gb b;
    gb_begin(&b, 13, 99 + tb);
    int nid;
    int x = gb_input(&b, "x", KILN_F32, 4, IV(3, 6, 4, 5));
    int w = gb_input(&b, "w", KILN_F32, 2, tb ? IV(70, 6) : IV(6, 70));
    int f = gb_node(&b, KILN_OP_Flatten, "flat", IN(NODE(&b, GlobalAveragePool, "gap", x)), 1,
                    &nid);
    ir_set_attr_int(b.g, nid, "axis", 1, &b.e);
    int y = gb_node(&b, KILN_OP_Gemm, "fc", IN(f, w, gb_rand(&b, "fc.c", 1, IV(70), -1, 1)), 1,
                    &nid);
    ir_set_attr_int(b.g, nid, "transB", tb, &b.e);
    ir_set_attr_float(b.g, nid, "beta", 0.5, &b.e);
    gb_output(&b, y);
    CHECK_OK(b.e.code, &b.e);
    kiln_pipeline_result res;
    fuse_run(b.g, &(fcase){.pipeline = "fuse-gap-gemm,dce"}, &res);
    CHECK_MSG(changes_of(&res, "fuse-gap-gemm") == 1, "%s", detail_of(&res, "fuse-gap-gemm"));
    CHECK(count_op(b.g, KILN_OP_GapGemm) == 1);
    ir_graph_free(b.g);
  }
}

/* ---- fuse-elementwise ---- */

static void test_elementwise(void) {
  gb b;
  gb_begin(&b, 13, 4242);
  int nid;
  int x = gb_input(&b, "x", KILN_F32, 4, IV(2, 3, 4, 5));
  int y = gb_input(&b, "y", KILN_F32, 4, IV(2, 3, 4, 5));
  int z = gb_input(&b, "z", KILN_F32, 3, IV(3, 1, 1));
  /* ((x * y + z) -> Relu -> Clip(0, 0.5)) * x -> Sigmoid: one chain, with broadcasting */
  int a = NODE(&b, Mul, "mul", x, y);
  int s = NODE(&b, Add, "add", a, z);
  int r = NODE(&b, Relu, "relu", s);
  int c = NODE(&b, Clip, "clip", r, gb_scalar(&b, "lo", KILN_F32, 0),
               gb_scalar(&b, "hi", KILN_F32, 0.5));
  int m = NODE(&b, Mul, "mul2", c, x);
  gb_output(&b, NODE(&b, Sigmoid, "sig", m));
  /* a value read twice by one node (t * t), variadic Sum, attributes */
  int t = NODE(&b, Tanh, "tanh", y);
  int sq = NODE(&b, Mul, "square", t, t);
  int l = gb_node(&b, KILN_OP_LeakyRelu, "leaky", IN(x), 1, &nid);
  ir_set_attr_float(b.g, nid, "alpha", 0.3, &b.e);
  int hs = gb_node(&b, KILN_OP_HardSigmoid, "hsig", IN(y), 1, &nid);
  ir_set_attr_float(b.g, nid, "alpha", 0.25, &b.e);
  ir_set_attr_float(b.g, nid, "beta", 0.4, &b.e);
  int sum = NODE(&b, Sum, "sum", sq, l, hs, z);
  int se = gb_node(&b, KILN_OP_Selu, "selu", IN(sum), 1, &nid);
  ir_set_attr_float(b.g, nid, "alpha", 1.5, &b.e);
  ir_set_attr_float(b.g, nid, "gamma", 1.1, &b.e);
  gb_output(&b, se);
  /* a shared result splits chains: e feeds two readers */
  int e1 = NODE(&b, Exp, "exp", NODE(&b, Neg, "neg", x));
  gb_output(&b, NODE(&b, Add, "add_e", e1, y));
  gb_output(&b, NODE(&b, Div, "div_e", e1, NODE(&b, Abs, "abs", y)));
  /* Abs -> Sqrt on the small tensor: a chain of its own */
  gb_output(&b, NODE(&b, Sqrt, "sqrt", NODE(&b, Abs, "abs2", z)));
  CHECK_OK(b.e.code, &b.e);
  kiln_pipeline_result res;
  fuse_run(b.g, &(fcase){.pipeline = "fuse-elementwise,dce", .golden = "elementwise"}, &res);
  CHECK_MSG(changes_of(&res, "fuse-elementwise") == 5, "%s", detail_of(&res, "fuse-elementwise"));
  CHECK(count_op(b.g, KILN_OP_FusedElementwise) == 5);
  ir_graph_free(b.g);

  /* a chain of 70 nodes: trees of at most 32 steps (32 + 32 + 6) */
  gb_begin(&b, 13, 4242);
  x = gb_input(&b, "x", KILN_F32, 2, IV(3, 17));
  int v = x;
  for (int i = 0; i < 70; i++) {
    char nm[16];
    snprintf(nm, sizeof nm, "n%d", i);
    v = gb_node(&b, i % 2 ? KILN_OP_Neg : KILN_OP_Softsign, nm, IN(v), 1, NULL);
  }
  gb_output(&b, v);
  CHECK_OK(b.e.code, &b.e);
  fuse_run(b.g, &(fcase){.pipeline = "fuse-elementwise"}, &res);
  CHECK_MSG(count_op(b.g, KILN_OP_FusedElementwise) == 3 && live_nodes(b.g) == 3, "%s",
            detail_of(&res, "fuse-elementwise"));
  ir_graph_free(b.g);

  /* opset 9: Clip's bounds are attributes; Max; PRelu */
  gb_begin(&b, 9, 4242);
  x = gb_input(&b, "x", KILN_F32, 2, IV(4, 33)), y = gb_input(&b, "y", KILN_F32, 1, IV(33));
  c = gb_node(&b, KILN_OP_Clip, "clip", IN(NODE(&b, Max, "max", x, y)), 1, &nid);
  ir_set_attr_float(b.g, nid, "min", -0.25, &b.e);
  ir_set_attr_float(b.g, nid, "max", 0.75, &b.e);
  gb_output(&b, NODE(&b, PRelu, "prelu", NODE(&b, Sub, "sub", c, y),
                     gb_scalar(&b, "slope", KILN_F32, 0.1)));
  CHECK_OK(b.e.code, &b.e);
  fuse_run(b.g, &(fcase){.pipeline = "fuse-elementwise"}, &res);
  CHECK(count_op(b.g, KILN_OP_FusedElementwise) == 1 && live_nodes(b.g) == 1);
  ir_graph_free(b.g);
}

/* ---- the fused ops refuse malformed attributes (a file may hold anything) ---- */

static void expect_infer_error(kiln_graph *g, const char *what) {
  kiln_err e = {0};
  kiln_evaluator ev = kiln_ref_evaluator();
  CHECK_MSG(ir_infer(g, &ev, &e) != KILN_OK, "no error for %s", what);
  CHECK_MSG(e.msg[0] && strstr(e.msg, what), "%s: %s", what, e.msg);
  ir_graph_free(g);
}

static void test_bad_attributes(void) {
  static const char *const ops_ok[] = {"Relu", "Add"}, *const ops_bad[] = {"Relu", "Softmax"};
  for (int k = 0; k < 4; k++) {
    gb b;
    gb_begin(&b, 13, 4242);
    int x = gb_input(&b, "x", KILN_F32, 2, IV(2, 3)), nid;
    int y = gb_node(&b, KILN_OP_FusedElementwise, "fe", IN(x), 1, &nid);
    gb_output(&b, y);
    kiln_attr a = {.name = kiln_strdup("ops"), .kind = KILN_ATTR_STRINGS, .n = 2};
    a.strings = kiln_calloc(2, sizeof(char *));
    for (int i = 0; i < 2; i++) a.strings[i] = kiln_strdup(k == 1 ? ops_bad[i] : ops_ok[i]);
    ir_push_attr(b.g, nid, &a, &b.e);
    /* step 1 = Add(step 0, x); k = 2: a forward reference; k = 3: arities short */
    gb_ints_attr(&b, nid, "arity", k == 3 ? 1 : 2, IV(1, 2));
    gb_ints_attr(&b, nid, "operands", 3, k == 2 ? IV(0, 2, 0) : IV(0, 1, 0));
    CHECK_OK(b.e.code, &b.e);
    if (k == 0) {
      kiln_err e = {0};
      kiln_evaluator ev = kiln_ref_evaluator();
      CHECK_OK(ir_infer(b.g, &ev, &e), &e);
      ir_graph_free(b.g);
      continue;
    }
    expect_infer_error(b.g, k == 1 ? "'Softmax' is not a fusable" : k == 2 ? "earlier step"
                                                                           : "'arity' has 1");
  }
  /* UpsampleConv: scales per spatial dim, known modes */
  for (int k = 0; k < 3; k++) {
    gb b;
    gb_begin(&b, 13, 4242);
    int x = gb_input(&b, "x", KILN_F32, 4, IV(1, 2, 3, 3)), nid;
    int w = gb_rand(&b, "w", 4, IV(2, 2, 3, 3), -1, 1);
    gb_output(&b, gb_node(&b, KILN_OP_UpsampleConv, "uc", IN(x, w), 1, &nid));
    gb_ints_attr(&b, nid, "scales", k == 0 ? 1 : 2, IV(2, 2));
    if (k == 1) ir_set_attr_str(b.g, nid, "mode", "cubic", &b.e);
    if (k == 2) ir_set_attr_str(b.g, nid, "coordinate_transformation_mode", "tf_crop_and_resize",
                                &b.e);
    expect_infer_error(b.g, k == 0 ? "'scales' has 1 values" : k == 1 ? "mode 'cubic'"
                                                                      : "tf_crop_and_resize");
  }
  /* FusedConv: has_residual without Z; an unknown activation; clip without bounds */
  for (int k = 0; k < 3; k++) {
    gb b;
    gb_begin(&b, 13, 4242);
    int x = gb_input(&b, "x", KILN_F32, 4, IV(1, 2, 3, 3)), nid;
    int w = gb_rand(&b, "w", 4, IV(2, 2, 1, 1), -1, 1);
    gb_output(&b, gb_node(&b, KILN_OP_FusedConv, "fc", IN(x, w), 1, &nid));
    if (k == 0) ir_set_attr_int(b.g, nid, "has_residual", 1, &b.e);
    if (k == 1) ir_set_attr_str(b.g, nid, "activation", "gelu", &b.e);
    if (k == 2) ir_set_attr_str(b.g, nid, "activation", "clip", &b.e);
    expect_infer_error(b.g, k == 0 ? "has_residual is 1" : k == 1 ? "activation 'gelu'"
                                                                  : "needs act_alpha");
  }
}

/* ---- whole networks ---- */

/* The study's network built by kiln: every upsample block, Conv + BN (+ ReLU) and residual
 * add fused by the default pipeline; the result computes the same with both backends. */
static void test_kiln_model(void) {
  for (int variant = 0; variant < 3; variant++) {
    kiln_graph *g = gb_small_seed_network(variant);
    if (!g) return;
    CHECK(count_op(g, KILN_OP_BatchNormalization) == 25);
    kiln_pipeline_result res;
    fuse_run(g, &(fcase){.tol = 2e-4}, &res);
    CHECK_MSG(changes_of(&res, "fuse-upsample-conv") == 5, "%s",
              detail_of(&res, "fuse-upsample-conv"));
    CHECK(strstr(detail_of(&res, "fuse-upsample-conv"), "5 upsample blocks fused") != NULL);
    CHECK(changes_of(&res, "fold-bn") == 25 && count_op(g, KILN_OP_BatchNormalization) == 0);
    CHECK(count_op(g, KILN_OP_UpsampleConv) == 5 && count_op(g, KILN_OP_Resize) == 0);
    CHECK(count_fused_conv(g, true) == 8 && count_op(g, KILN_OP_Add) == 0);
    /* stem + one conv per basic block; the 3 downsample convs stay plain */
    CHECK(count_fused_conv(g, false) == 9 && count_op(g, KILN_OP_Relu) == 1);
    CHECK(count_op(g, KILN_OP_Conv) == 3 + 1 && count_op(g, KILN_OP_GapGemm) == 1);
    ir_graph_free(g);
  }
}

/* ---- the layout pass ---- */

#define LAYOUT_PIPELINE                                                                        \
  "eliminate-identity,fold,dce,fold-bn,fuse-conv-act,fuse-conv-add-relu,fuse-upsample-conv,"    \
  "fuse-gap-gemm,fuse-elementwise,dce,layout-blocked"

/* Convolutions of every kind the blocked kernel has (3x3 same with bias and ReLU, strided with
 * asymmetric pads, 1x1 with a residual add and ReLU, dilated 5x3, clip and sigmoid epilogues,
 * columns that leave a tail block) around ones that stay plain (grouped, a 3-channel stem,
 * channels not a multiple of the block), with plain readers (MaxPool, graph outputs) of
 * blocked results. */
static kiln_graph *build_layout(int64_t c, kiln_err *e) {
  gb b;
  gb_begin(&b, 13, 31);
  int x = gb_input(&b, "x", KILN_F32, 4, IV(2, c, 9, 13));
  int x3 = gb_input(&b, "x3", KILN_F32, 4, IV(1, 3, 8, 8));
  int c1 = gb_conv(&b, "c1", x, c, IV(3, 3), true, 1, IV(1, 1, 1, 1), NULL, NULL);
  int r1 = NODE(&b, Relu, "r1", c1);
  int c2 = gb_conv(&b, "c2", r1, 2 * c, IV(3, 3), false, 1, IV(1, 0, 0, 1), IV(2, 2), NULL);
  int c3 = gb_conv(&b, "c3", c2, 2 * c, IV(1, 1), true, 1, NULL, NULL, NULL);
  int a3 = NODE(&b, Add, "a3", c3, c2);
  int r3 = NODE(&b, Relu, "r3", a3);
  int c4 = gb_conv(&b, "c4", r3, c, IV(5, 3), true, 1, IV(4, 1, 3, 0), NULL, IV(2, 1));
  int lo = gb_scalar(&b, "lo", KILN_F32, -0.2), hi = gb_scalar(&b, "hi", KILN_F32, 0.3);
  int k4 = NODE(&b, Clip, "k4", c4, lo, hi);
  int c5 = gb_conv(&b, "c5", k4, c, IV(3, 3), true, 1, IV(1, 1, 1, 1), IV(1, 2), NULL);
  int s5 = NODE(&b, Sigmoid, "s5", c5);
  int c6 = gb_conv(&b, "c6", r3, 2 * c, IV(3, 3), false, 2, IV(1, 1, 1, 1), NULL, NULL);
  int c7 = gb_conv(&b, "c7", r3, c + 4, IV(1, 1), false, 1, NULL, NULL, NULL);
  int nid;
  int mp = gb_node(&b, KILN_OP_MaxPool, "mp", IN(r1), 1, &nid);
  gb_ints_attr(&b, nid, "kernel_shape", 2, IV(2, 2));
  gb_ints_attr(&b, nid, "strides", 2, IV(2, 2));
  int stem = gb_conv(&b, "stem", x3, c, IV(3, 3), true, 1, IV(1, 1, 1, 1), NULL, NULL);
  int sr = NODE(&b, Relu, "sr", stem);
  int s2 = gb_conv(&b, "s2", sr, c, IV(3, 3), true, 1, IV(1, 1, 1, 1), NULL, NULL);
  gb_output(&b, s5);
  gb_output(&b, c6);
  gb_output(&b, c7);
  gb_output(&b, mp);
  gb_output(&b, c3);
  gb_output(&b, s2);
  *e = b.e;
  if (b.e.code) {
    ir_graph_free(b.g);
    return NULL;
  }
  return b.g;
}

/* Auto blocks for 16-float vectors only; plain never. */
static void test_layout_choice(void) {
  static const struct {
    int vf, layout;
    int64_t blocked;
  } cases[] = {{8, KILN_LAYOUT_AUTO, 0},   {16, KILN_LAYOUT_AUTO, 6}, {16, KILN_LAYOUT_PLAIN, 0},
               {8, KILN_LAYOUT_BLOCKED, 6}, {4, KILN_LAYOUT_BLOCKED, 7}};
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    kiln_err e = {0};
    kiln_graph *g = build_layout(16, &e);
    CHECK_OK(e.code, &e);
    if (!g) return;
    kiln_evaluator ev = kiln_ref_evaluator();
    kiln_pass_ctx cx = {.mode = KILN_MODE_INFERENCE, .ev = &ev, .verify = true,
                        .vector_floats = cases[k].vf, .layout = cases[k].layout};
    kiln_pipeline_result res;
    CHECK_OK(ir_infer(g, &ev, &e), &e);
    CHECK_OK(kiln_run_pipeline(g, NULL, &cx, &res, &e), &e); /* the default pipeline */
    CHECK_MSG(changes_of(&res, "layout-blocked") == cases[k].blocked, "case %zu: %s", k,
              detail_of(&res, "layout-blocked"));
    CHECK(count_op(g, KILN_OP_BlockedConv) == cases[k].blocked);
    ir_graph_free(g);
  }
  /* training graphs keep the plain layout */
  kiln_err e = {0};
  kiln_graph *g = build_layout(16, &e);
  if (!g) return;
  kiln_evaluator ev = kiln_ref_evaluator();
  kiln_pass_ctx cx = {.mode = KILN_MODE_TRAINING, .ev = &ev, .layout = KILN_LAYOUT_BLOCKED};
  kiln_pipeline_result res;
  CHECK_OK(ir_infer(g, &ev, &e), &e);
  CHECK_OK(kiln_run_pipeline(g, "layout-blocked", &cx, &res, &e), &e);
  CHECK(count_op(g, KILN_OP_BlockedConv) == 0);
  ir_graph_free(g);
}

static void test_layout_blocked(void) {
  for (int vf = 8; vf <= 16; vf *= 2) {
    kiln_err e = {0};
    kiln_graph *g = build_layout(16, &e);
    CHECK_OK(e.code, &e);
    if (!g) return;
    kiln_pipeline_result res;
    fuse_run(g, &(fcase){.pipeline = LAYOUT_PIPELINE, .vector_floats = vf,
                         .layout = KILN_LAYOUT_BLOCKED, .tol = 2e-4}, &res);
    /* c1..c5 and s2; c6 (2 groups), c7 (20 outputs) and the stem stay plain */
    CHECK_MSG(changes_of(&res, "layout-blocked") == 6, "block %d: %s", vf,
              detail_of(&res, "layout-blocked"));
    CHECK(count_op(g, KILN_OP_BlockedConv) == 6 && count_fused_conv(g, false) == 1);
    CHECK(count_op(g, KILN_OP_Conv) == 2);
    /* c3 is a graph output, so its residual Add and Relu stay elementwise ops, which follow
     * their blocked inputs: in are x and the stem's output; out are r1 (MaxPool), c3 (an
     * output), r3 (c6, c7), s5 and s2 */
    CHECK_MSG(count_op(g, KILN_OP_ToBlocked) == 2, "%s", detail_of(&res, "layout-blocked"));
    CHECK_MSG(strstr(detail_of(&res, "layout-blocked"), "1 elementwise ops") != NULL, "%s",
              detail_of(&res, "layout-blocked"));
    CHECK_MSG(count_op(g, KILN_OP_FromBlocked) == 5, "%s", detail_of(&res, "layout-blocked"));
    ir_graph_free(g);
  }
  /* the study's network: the trunk runs blocked, the stem and the SPN's upsample blocks plain */
  kiln_graph *g = gb_small_seed_network(0);
  if (!g) return;
  kiln_pipeline_result res;
  fuse_run(g, &(fcase){.pipeline = LAYOUT_PIPELINE, .vector_floats = 8,
                       .layout = KILN_LAYOUT_BLOCKED, .tol = 2e-4}, &res);
  CHECK_MSG(changes_of(&res, "layout-blocked") == 19, "%s", detail_of(&res, "layout-blocked"));
  CHECK(count_op(g, KILN_OP_ToBlocked) == 1 && count_op(g, KILN_OP_UpsampleConv) == 5);
  ir_graph_free(g);
}

static bool file_exists(const char *p) {
  struct stat st;
  return stat(p, &st) == 0;
}

/* The same network exported by PyTorch (scripts/make_fusion_fixtures.py): BatchNorm kept,
 * Resize scales from Concat chains, the last block's sizes from a Shape chain. */
static void torch_spn(int layout) {
  const char *dir = DATA_DIR "/fusion/torch_spn";
  char path[1024];
  kiln_err e = {0};
  kiln_graph *g = NULL;
  kiln_tensor *in = NULL, *want[2] = {NULL};
  snprintf(path, sizeof path, "%s/model.onnx", dir);
  CHECK_OK(kiln_onnx_load(path, &g, &e), &e);
  snprintf(path, sizeof path, "%s/test_data_set_0/input_0.pb", dir);
  CHECK_OK(kiln_tensor_load_pb(path, &in, NULL, &e), &e);
  for (int i = 0; i < 2; i++) {
    snprintf(path, sizeof path, "%s/test_data_set_0/output_%d.pb", dir, i);
    CHECK_OK(kiln_tensor_load_pb(path, &want[i], NULL, &e), &e);
  }
  if (!e.code) {
    CHECK(count_op(g, KILN_OP_Resize) == 5 && count_op(g, KILN_OP_BatchNormalization) == 25);
    kiln_pipeline_result res;
    fuse_run(g, &(fcase){.inputs = &in, .want = want, .layout = layout}, &res);
    CHECK_MSG(changes_of(&res, "fuse-upsample-conv") == 5, "%s",
              detail_of(&res, "fuse-upsample-conv"));
    CHECK(count_op(g, KILN_OP_UpsampleConv) == 5 && count_op(g, KILN_OP_Resize) == 0);
    CHECK(count_op(g, KILN_OP_BatchNormalization) == 0 && count_op(g, KILN_OP_Add) == 0);
    CHECK(count_op(g, KILN_OP_GapGemm) == 1);
    CHECK(count_op(g, KILN_OP_Shape) == 0 && count_op(g, KILN_OP_Concat) == 0);
    if (layout == KILN_LAYOUT_BLOCKED) /* the trunk, stem aside, blocked by 8 */
      CHECK_MSG(count_op(g, KILN_OP_BlockedConv) == 19 && count_op(g, KILN_OP_ToBlocked) == 1,
                "%s", detail_of(&res, "layout-blocked"));
    else
      CHECK(count_fused_conv(g, true) == 8);
  }
  kiln_tensor_free(in);
  free_tensors(want, 2);
  ir_graph_free(g);
}

/* PyTorch's export of the same network against PyTorch's outputs, through the default
 * pipeline with the plain and the blocked layout. */
static void test_torch_spn(void) {
  torch_spn(KILN_LAYOUT_AUTO); /* fcase's 8-float vectors: plain */
  torch_spn(KILN_LAYOUT_BLOCKED);
}

/* ---- the conformance suite through the default pipeline ---- */

/* Loads a suite test with inputs [first_const, n) made constants (weights), runs the default
 * pipeline; when a fusion pass changed the graph, runs it with the reference kernels and the
 * JIT against the suite's outputs. */
static void conformance_case(const char *test, int first_const, int *n_fused, int64_t *changes) {
  char path[2048];
  kiln_err e = {0};
  kiln_graph *g = NULL;
  kiln_tensor *inputs[MAXIO] = {0}, *want[MAXIO] = {0};
  int n_in = 0, n_want = 0;
  snprintf(path, sizeof path, "%s/%s/model.onnx", SUITE_DIR, test);
  if (kiln_onnx_load(path, &g, &e)) goto done;
  for (; n_in < MAXIO; n_in++) {
    snprintf(path, sizeof path, "%s/%s/test_data_set_0/input_%d.pb", SUITE_DIR, test, n_in);
    if (!file_exists(path) || kiln_tensor_load_pb(path, &inputs[n_in], NULL, &e)) break;
  }
  for (; n_want < MAXIO; n_want++) {
    snprintf(path, sizeof path, "%s/%s/test_data_set_0/output_%d.pb", SUITE_DIR, test, n_want);
    if (!file_exists(path) || kiln_tensor_load_pb(path, &want[n_want], NULL, &e)) break;
  }
  if (e.code || n_in != g->n_inputs || n_want != g->n_outputs) goto done;
  int fed[MAXIO], n_fed = g->n_inputs, k = 0;
  if (n_fed > 0) memcpy(fed, g->inputs, sizeof(int) * (size_t)n_fed);
  for (int i = 0; i < n_fed; i++) {
    kiln_value *v = &g->values[fed[i]];
    if (v->shape.rank == inputs[i]->shape.rank)
      for (int d = 0; d < v->shape.rank; d++) {
        if (v->shape.d[d] < 0) v->shape.d[d] = inputs[i]->shape.d[d];
        kiln_free(v->sym[d]);
        v->sym[d] = NULL;
      }
    if (ir_input_feeds_shape(g, fed[i]) || i >= first_const) {
      kiln_tensor *c = NULL;
      if (kiln_tensor_clone(inputs[i], &c, &e) || ir_bind_input_const(g, v->name, c, &e)) goto done;
    }
  }
  for (int i = 0; i < n_fed; i++) {
    if (g->values[fed[i]].is_input)
      inputs[k++] = inputs[i];
    else
      kiln_tensor_free(inputs[i]);
  }
  for (int i = k; i < n_fed; i++) inputs[i] = NULL;
  kiln_evaluator ev = kiln_ref_evaluator();
  if (ir_infer(g, &ev, &e)) goto done;
  kiln_graph *probe = NULL;
  if (clone(g, &probe, &e)) goto done;
  kiln_pass_ctx cx = {.ev = &ev};
  kiln_pipeline_result res;
  kiln_code rc = kiln_run_pipeline(probe, NULL, &cx, &res, &e);
  ir_graph_free(probe);
  CHECK_MSG(rc == KILN_OK, "%s: %s", test, e.msg);
  int64_t fused = 0;
  for (int i = 0; i < res.n; i++)
    if (!strncmp(res.pass[i]->name, "fuse-", 5)) fused += res.stats[i].changes;
  if (rc || !fused) goto done;
  int before = test_failures_;
  fuse_run(g, &(fcase){.inputs = inputs, .want = want, .tol = 1e-3}, &res);
  if (test_failures_ != before) fprintf(stderr, "  (in %s, inputs from %d constant)\n", test,
                                        first_const);
  (*n_fused)++;
  *changes += fused;
done:
  free_tensors(inputs, MAXIO);
  free_tensors(want, MAXIO);
  ir_graph_free(g);
}

static void test_conformance_models(void) {
  char *list = gt_read_text(KILN_SOURCE_DIR "/tests/conformance/passing.txt");
  CHECK(list != NULL);
  if (!list || !file_exists(SUITE_DIR "/node")) {
    printf("conformance models: skipped (no test data)\n");
    free(list);
    return;
  }
  int n_fused = 0, n_models = 0;
  int64_t changes = 0;
  char *save = NULL;
  for (char *line = strtok_r(list, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    n_models++;
    conformance_case(line, MAXIO, &n_fused, &changes); /* as the suite has it */
    conformance_case(line, 1, &n_fused, &changes);     /* every input but the first constant */
  }
  free(list);
  printf("conformance models: %d models, %d runs with fusions (%lld fused nodes), reference "
         "and jit\n", n_models, n_fused, (long long)changes);
  CHECK(n_fused >= 20);
}

/* Every allocation failure while fusing becomes KILN_ERR_NOMEM, never a crash. */
static void test_failing_allocator(void) {
  int ok_runs = 0;
  for (long k = 0; k < 600; k += 7) {
    kiln_err e = {0};
    kiln_graph *g = build_upsample(&e);
    kiln_evaluator ev = kiln_ref_evaluator();
    if (!e.code) ir_infer(g, &ev, &e);
    CHECK_OK(e.code, &e);
    kiln_pass_ctx cx = {.ev = &ev};
    kiln_alloc_fail_after(k);
    kiln_code rc = kiln_run_pipeline(g, NULL, &cx, NULL, &e);
    kiln_alloc_fail_after(-1);
    CHECK_MSG(rc == KILN_OK || rc == KILN_ERR_NOMEM, "k=%ld: %s", k, e.msg);
    ok_runs += rc == KILN_OK;
    ir_graph_free(g);
  }
  CHECK(ok_runs > 0);
}

int main(void) {
  RUN(test_conv_act);
  RUN(test_conv_add_relu);
  RUN(test_upsample_conv);
  RUN(test_upsample_legacy);
  RUN(test_gap_gemm);
  RUN(test_gap_gemm_runtime_b);
  RUN(test_elementwise);
  RUN(test_bad_attributes);
  RUN(test_kiln_model);
  RUN(test_layout_blocked);
  RUN(test_layout_choice);
  RUN(test_torch_spn);
  RUN(test_conformance_models);
  RUN(test_failing_allocator);
  TEST_MAIN_END();
}
