/* test_grad_pool.c — gradients of the pools and of Resize/Upsample: finite-difference checks
 * of every rule (tests/gradcheck.h), the first-maximum tie rule, bad-input errors, and the
 * kiln.MaxPoolGrad / AveragePoolGrad / ResizeGrad JIT kernels against the reference at 1 and
 * 3 threads (bitwise equal across thread counts; the pools bitwise equal to the reference). */
#include "codegen/compile.h"
#include "frontend/onnx.h"
#include "gradcheck.h"

/* ---- forward configurations ---- */

typedef struct fwd {
  const char *name;
  kiln_op op;
  int opset;
  int rank;
  int64_t x[6];
  /* pools */
  int nk, ns, np, nd;
  int64_t kernel[3], strides[3], pads[6], dil[3];
  int ceil_mode, count_include_pad;
  const char *auto_pad;
  bool distinct; /* X gets distinct values (no ties for finite differences of max pools) */
  /* Resize / Upsample */
  const char *mode, *coord, *nearest;
  double cubic_a;
  int exclude_outside;
  int n_scales, n_sizes, n_roi;
  float scales[6], roi[12];
  int64_t sizes[6];
  bool attr_scales; /* Upsample-7: scales as an attribute */
} fwd;

static int add_input(kiln_graph *g, const char *name, const kiln_shape *s, kiln_err *e) {
  int v;
  ir_add_value(g, name, &v, e);
  g->values[v].dtype = KILN_F32;
  g->values[v].shape = *s;
  g->values[v].typed = true;
  ir_add_input(g, v, e);
  return v;
}

static int add_f32s(kiln_graph *g, const char *name, const float *v, int n, kiln_err *e) {
  kiln_tensor *t;
  kiln_tensor_new(KILN_F32, &(kiln_shape){.rank = 1, .d = {n}}, &t, e);
  for (int i = 0; i < n; i++) ((float *)t->data)[i] = v[i];
  int id;
  ir_add_const(g, name, t, true, &id, e);
  return id;
}

static int add_i64s(kiln_graph *g, const char *name, const int64_t *v, int n, kiln_err *e) {
  kiln_tensor *t;
  kiln_tensor_new(KILN_I64, &(kiln_shape){.rank = 1, .d = {n}}, &t, e);
  for (int i = 0; i < n; i++) ((int64_t *)t->data)[i] = v[i];
  int id;
  ir_add_const(g, name, t, true, &id, e);
  return id;
}

/* y = op(x) per the configuration; returns the graph with x as input 0 and y as output 0. */
static kiln_graph *build_fwd(const fwd *f, kiln_err *e) {
  kiln_graph *g = ir_graph_new();
  ir_set_opset(g, "", f->opset, e);
  kiln_shape xs = kiln_shape_make(f->rank, f->x);
  int x = add_input(g, "x", &xs, e), y, in[4] = {x, -1, -1, -1}, n_in = 1;
  ir_add_value(g, "y", &y, e);
  bool resize = f->op == KILN_OP_Resize || f->op == KILN_OP_Upsample;
  if (resize && !f->attr_scales) {
    bool legacy = f->op == KILN_OP_Upsample || f->opset < 11;
    if (legacy) {
      in[1] = add_f32s(g, "scales", f->scales, f->n_scales, e);
      n_in = 2;
    } else {
      if (f->n_roi) in[1] = add_f32s(g, "roi", f->roi, f->n_roi, e);
      if (f->n_scales) in[2] = add_f32s(g, "scales", f->scales, f->n_scales, e);
      if (f->n_sizes) in[3] = add_i64s(g, "sizes", f->sizes, f->n_sizes, e);
      n_in = f->n_sizes ? 4 : 3;
    }
  }
  int nid;
  ir_add_node(g, f->op, "fwd", in, n_in, (int[]){y}, 1, &nid, e);
  if (f->nk) ir_set_attr_ints(g, nid, "kernel_shape", f->kernel, f->nk, e);
  if (f->ns) ir_set_attr_ints(g, nid, "strides", f->strides, f->ns, e);
  if (f->np) ir_set_attr_ints(g, nid, "pads", f->pads, f->np, e);
  if (f->nd) ir_set_attr_ints(g, nid, "dilations", f->dil, f->nd, e);
  if (f->ceil_mode) ir_set_attr_int(g, nid, "ceil_mode", 1, e);
  if (f->count_include_pad) ir_set_attr_int(g, nid, "count_include_pad", 1, e);
  if (f->auto_pad) ir_set_attr_str(g, nid, "auto_pad", f->auto_pad, e);
  if (f->mode) ir_set_attr_str(g, nid, "mode", f->mode, e);
  if (f->coord) ir_set_attr_str(g, nid, "coordinate_transformation_mode", f->coord, e);
  if (f->nearest) ir_set_attr_str(g, nid, "nearest_mode", f->nearest, e);
  if (f->cubic_a) ir_set_attr_float(g, nid, "cubic_coeff_a", f->cubic_a, e);
  if (f->exclude_outside) ir_set_attr_int(g, nid, "exclude_outside", 1, e);
  if (f->attr_scales) {
    double s[6];
    for (int i = 0; i < f->n_scales; i++) s[i] = f->scales[i];
    ir_set_attr_floats(g, nid, "scales", s, f->n_scales, e);
  }
  ir_add_output(g, y, e);
  kiln_evaluator ev = kiln_ref_evaluator();
  if (e->code == KILN_OK) ir_infer(g, &ev, e);
  return g;
}

/* Fills x: distinct values spread over [-1, 1] (a fixed permutation), or uniform in [lo, hi). */
static void fill_x(kiln_tensor *x, const fwd *f, uint64_t *seed) {
  if (!f->distinct) {
    gc_fill(x, seed, -1.5, 1.5);
    return;
  }
  int64_t n = x->numel;
  for (int64_t i = 0; i < n; i++) ((float *)x->data)[i] = (float)i;
  for (int64_t i = n - 1; i > 0; i--) { /* Fisher-Yates */
    int64_t j = (int64_t)(gc_rng(seed) % (uint64_t)(i + 1));
    float t = ((float *)x->data)[i];
    ((float *)x->data)[i] = ((float *)x->data)[j];
    ((float *)x->data)[j] = t;
  }
  for (int64_t i = 0; i < n; i++)
    ((float *)x->data)[i] = (float)(-1.0 + 2.0 * (((float *)x->data)[i] + 0.5) / (double)n);
}

static void check_grad(const fwd *f) {
  kiln_err e = {0};
  kiln_graph *g = build_fwd(f, &e);
  CHECK_OK(e.code, &e);
  if (e.code) {
    fprintf(stderr, "  (config %s)\n", f->name);
    ir_graph_free(g);
    return;
  }
  kiln_tensor *x;
  kiln_tensor_new(KILN_F32, &g->values[g->inputs[0]].shape, &x, &e);
  uint64_t seed = 4242;
  fill_x(x, f, &seed);
  /* distinct values are 2/numel apart; finite differences must not reorder them */
  if (f->distinct) CHECK(2.0 / (double)x->numel > 2.5e-2);
  if (gradcheck(g, &x, (int[]){0}, 1, 1e-2, 1e-3)) fprintf(stderr, "  (config %s)\n", f->name);
  kiln_tensor_free(x);
  ir_graph_free(g);
}

/* ---- the configurations ---- */

#define POOL(nm, o, r, ...)                                                                        \
  .name = nm, .op = KILN_OP_##o, .opset = 13, .rank = r, .x = {__VA_ARGS__}
#define K2(a, b) .nk = 2, .kernel = {a, b}
#define S2(a, b) .ns = 2, .strides = {a, b}
#define P4(a, b, c, d) .np = 4, .pads = {a, b, c, d}

static const fwd maxpools[] = {
    {POOL("max 2x2/2", MaxPool, 4, 1, 2, 5, 6), K2(2, 2), S2(2, 2), .distinct = true},
    {POOL("max 3x3/2 pad 1", MaxPool, 4, 1, 2, 5, 6), K2(3, 3), S2(2, 2), P4(1, 1, 1, 1),
     .distinct = true},
    {POOL("max ceil", MaxPool, 4, 1, 2, 5, 5), K2(2, 2), S2(2, 2), .ceil_mode = 1,
     .distinct = true},
    {POOL("max ceil pad", MaxPool, 4, 1, 1, 6, 7), K2(3, 3), S2(2, 2), P4(1, 0, 1, 1),
     .ceil_mode = 1, .distinct = true},
    {POOL("max dilated", MaxPool, 4, 1, 1, 6, 6), K2(2, 2), .nd = 2, .dil = {2, 2},
     .distinct = true},
    {POOL("max overlap", MaxPool, 4, 2, 1, 5, 5), K2(3, 2), S2(1, 1), .distinct = true},
    {POOL("max same_upper", MaxPool, 4, 1, 1, 5, 6), K2(3, 3), S2(2, 2),
     .auto_pad = "SAME_UPPER", .distinct = true},
    {POOL("max 1-D", MaxPool, 3, 2, 2, 9), .nk = 1, .kernel = {3}, .ns = 1, .strides = {2},
     .np = 2, .pads = {1, 1}, .distinct = true},
    {POOL("max 3-D", MaxPool, 5, 1, 1, 3, 4, 4), .nk = 3, .kernel = {2, 2, 2}, .ns = 3,
     .strides = {1, 2, 2}, .distinct = true},
};

static const fwd avgpools[] = {
    {POOL("avg 3x3/2 pad", AveragePool, 4, 1, 2, 5, 6), K2(3, 3), S2(2, 2), P4(1, 1, 1, 1)},
    {POOL("avg 3x3/2 pad incl", AveragePool, 4, 1, 2, 5, 6), K2(3, 3), S2(2, 2), P4(1, 1, 1, 1),
     .count_include_pad = 1},
    {POOL("avg asym pad", AveragePool, 4, 2, 1, 6, 5), K2(2, 3), S2(2, 1), P4(0, 1, 1, 2)},
    {POOL("avg ceil incl", AveragePool, 4, 1, 1, 6, 7), K2(3, 3), S2(2, 2), P4(1, 1, 1, 1),
     .ceil_mode = 1, .count_include_pad = 1},
    {POOL("avg ceil", AveragePool, 4, 1, 1, 6, 7), K2(3, 3), S2(2, 2), .ceil_mode = 1},
    {POOL("avg same_lower", AveragePool, 4, 1, 2, 5, 5), K2(2, 2), S2(2, 2),
     .auto_pad = "SAME_LOWER"},
    {POOL("avg 1-D", AveragePool, 3, 2, 2, 9), .nk = 1, .kernel = {4}, .ns = 1, .strides = {3},
     .np = 2, .pads = {2, 1}, .count_include_pad = 1},
    {POOL("avg 3-D", AveragePool, 5, 1, 2, 3, 4, 5), .nk = 3, .kernel = {2, 3, 2}, .ns = 3,
     .strides = {1, 2, 2}, .np = 6, .pads = {0, 1, 0, 1, 1, 1}},
};

static const fwd globals[] = {
    {POOL("gap 4-D", GlobalAveragePool, 4, 2, 3, 4, 5)},
    {POOL("gap 3-D", GlobalAveragePool, 3, 2, 3, 7)},
    {POOL("gap 5-D", GlobalAveragePool, 5, 1, 2, 2, 3, 2)},
    {POOL("gmp 4-D", GlobalMaxPool, 4, 2, 3, 3, 3), .distinct = true},
    {POOL("gmp 3-D", GlobalMaxPool, 3, 2, 2, 7), .distinct = true},
    {POOL("gmp 5-D", GlobalMaxPool, 5, 1, 2, 2, 3, 2), .distinct = true},
};

#define RS(nm, r, ...) .name = nm, .op = KILN_OP_Resize, .opset = 13, .rank = r, .x = {__VA_ARGS__}
#define SC4(a, b, c, d) .n_scales = 4, .scales = {a, b, c, d}
#define SZ4(a, b, c, d) .n_sizes = 4, .sizes = {a, b, c, d}

static const fwd resizes[] = {
    {RS("nearest x2", 4, 1, 2, 3, 4), SC4(1, 1, 2, 2)},
    {RS("nearest x(2,3)", 4, 1, 2, 3, 4), SC4(1, 1, 2, 3)},
    {RS("nearest sizes x(2,3)", 4, 2, 1, 3, 4), SZ4(2, 1, 6, 12), .coord = "asymmetric",
     .nearest = "floor"},
    {RS("nearest down", 4, 1, 1, 7, 6), SZ4(1, 1, 3, 4), .nearest = "round_prefer_ceil"},
    {RS("nearest ceil align", 4, 1, 1, 3, 5), SZ4(1, 1, 7, 8), .coord = "align_corners",
     .nearest = "ceil"},
    {RS("linear half_pixel x2", 4, 1, 2, 3, 4), SC4(1, 1, 2, 2), .mode = "linear"},
    {RS("linear align_corners", 4, 1, 2, 3, 4), SZ4(1, 2, 7, 9), .mode = "linear",
     .coord = "align_corners"},
    {RS("linear asymmetric", 4, 1, 2, 3, 4), SC4(1, 1, 2, 3), .mode = "linear",
     .coord = "asymmetric"},
    {RS("linear pytorch_half_pixel", 4, 1, 1, 4, 5), SZ4(1, 1, 9, 1), .mode = "linear",
     .coord = "pytorch_half_pixel"},
    {RS("linear down half_pixel", 4, 1, 2, 7, 5), SZ4(1, 2, 3, 4), .mode = "linear"},
    {RS("linear fractional scale", 4, 1, 1, 5, 3), SC4(1, 1, 1.5f, 2.5f), .mode = "linear",
     .coord = "align_corners"},
    {RS("linear 3-D axis", 3, 2, 5, 4), .n_scales = 3, .scales = {1, 1.6f, 2}, .mode = "linear"},
    {RS("cubic half_pixel", 4, 1, 1, 4, 5), SC4(1, 1, 2, 1.5f), .mode = "cubic"},
    {RS("cubic exclude_outside", 4, 1, 1, 4, 4), SZ4(1, 1, 7, 3), .mode = "cubic",
     .cubic_a = -0.5, .exclude_outside = 1},
    {RS("tf_crop_and_resize", 4, 1, 1, 5, 5), SZ4(1, 1, 4, 6), .mode = "linear",
     .coord = "tf_crop_and_resize", .n_roi = 8, .roi = {0, 0, 0.2f, -0.1f, 1, 1, 0.9f, 1.2f}},
    {.name = "resize-10 nearest", .op = KILN_OP_Resize, .opset = 10, .rank = 4, .x = {1, 2, 3, 4},
     SC4(1, 1, 2, 2.5f)},
    {.name = "upsample-9 nearest", .op = KILN_OP_Upsample, .opset = 9, .rank = 4,
     .x = {1, 2, 3, 4}, SC4(1, 1, 2, 2)},
    {.name = "upsample-9 linear", .op = KILN_OP_Upsample, .opset = 9, .rank = 4,
     .x = {1, 2, 3, 4}, SC4(1, 1, 2, 3), .mode = "linear"},
    {.name = "upsample-7 bilinear", .op = KILN_OP_Upsample, .opset = 7, .rank = 4,
     .x = {1, 1, 3, 4}, SC4(1, 1, 2, 2), .mode = "bilinear", .attr_scales = true},
};

#define FOR_EACH(tab, fn)                                                                          \
  for (int i_ = 0; i_ < NELEM(tab); i_++) fn(&tab[i_])
#ifndef NELEM
#define NELEM(a) ((int)(sizeof(a) / sizeof((a)[0])))
#endif

static void test_maxpool(void) { FOR_EACH(maxpools, check_grad); }
static void test_avgpool(void) { FOR_EACH(avgpools, check_grad); }
static void test_global(void) { FOR_EACH(globals, check_grad); }
static void test_resize(void) { FOR_EACH(resizes, check_grad); }

/* Ties: every window of equal values sends its gradient to its first element (PyTorch). */
static void test_maxpool_ties(void) {
  kiln_err e = {0};
  fwd f = {POOL("ties", MaxPool, 4, 1, 1, 3, 3), K2(2, 2)};
  kiln_graph *g = build_fwd(&f, &e);
  kiln_shape ys = g->values[g->outputs[0]].shape;
  int dy = add_input(g, "dy", &ys, &e), grad;
  kiln_autodiff_opts o = {.loss = g->outputs[0], .wrt = &g->inputs[0], .n_wrt = 1, .seed = dy};
  CHECK_OK(kiln_autodiff(g, &o, &grad, &e), &e);
  ir_add_output(g, grad, &e);
  kiln_evaluator ev = kiln_ref_evaluator();
  CHECK_OK(ir_infer(g, &ev, &e), &e);
  kiln_tensor *in[2], *out[2] = {0};
  kiln_tensor_new(KILN_F32, &g->values[g->inputs[0]].shape, &in[0], &e);
  kiln_tensor_new(KILN_F32, &ys, &in[1], &e);
  for (int i = 0; i < 9; i++) ((float *)in[0]->data)[i] = 0.5f;
  for (int i = 0; i < 4; i++) ((float *)in[1]->data)[i] = (float)(1 << i);
  kiln_ref_ctx ctx = {.g = g};
  CHECK_OK(kiln_ref_run(g, &ctx, in, out, &e), &e);
  const float want[9] = {1, 2, 0, 4, 8, 0, 0, 0, 0};
  if (out[1])
    for (int i = 0; i < 9; i++) CHECK(((float *)out[1]->data)[i] == want[i]);
  for (int i = 0; i < 2; i++) kiln_tensor_free(in[i]), kiln_tensor_free(out[i]);
  ir_graph_free(g);
}

/* ---- bad input ---- */

static kiln_code infer_one(kiln_op op, const kiln_shape *a, const kiln_shape *b,
                           void (*attrs)(kiln_graph *, int, kiln_err *), kiln_err *e) {
  kiln_graph *g = ir_graph_new();
  int in[2], y, nid;
  in[0] = add_input(g, "a", a, e);
  if (b) in[1] = add_input(g, "b", b, e);
  ir_add_value(g, "y", &y, e);
  ir_add_node(g, op, "bad", in, b ? 2 : 1, (int[]){y}, 1, &nid, e);
  attrs(g, nid, e);
  ir_add_output(g, y, e);
  kiln_code rc = ir_infer(g, NULL, e);
  ir_graph_free(g);
  return rc;
}

static void k22(kiln_graph *g, int nid, kiln_err *e) {
  ir_set_attr_ints(g, nid, "kernel_shape", (int64_t[]){2, 2}, 2, e);
}
static void k22_input(kiln_graph *g, int nid, kiln_err *e) {
  k22(g, nid, e);
  ir_set_attr_ints(g, nid, "input_shape", (int64_t[]){1, 1, 4, 4}, 4, e);
}
static void resize_x2(kiln_graph *g, int nid, kiln_err *e) {
  ir_set_attr_ints(g, nid, "input_shape", (int64_t[]){1, 1, 4, 4}, 4, e);
  ir_set_attr_floats(g, nid, "scales", (double[]){1, 1, 2, 2}, 4, e);
}
static void resize_bad_mode(kiln_graph *g, int nid, kiln_err *e) {
  resize_x2(g, nid, e);
  ir_set_attr_str(g, nid, "mode", "bicubic", e);
}

static void test_bad_input(void) {
  kiln_err e = {0};
  kiln_shape x = {.rank = 4, .d = {1, 1, 4, 4}}, y_ok = {.rank = 4, .d = {1, 1, 3, 3}};
  kiln_shape y_bad = {.rank = 4, .d = {1, 1, 2, 3}}, y8 = {.rank = 4, .d = {1, 1, 8, 8}};
  CHECK(infer_one(KILN_OP_MaxPoolGrad, &x, &y_ok, k22, &e) == KILN_OK);
  kiln_err_clear(&e);
  CHECK(infer_one(KILN_OP_MaxPoolGrad, &x, &y_bad, k22, &e) == KILN_ERR_SHAPE);
  CHECK(strstr(e.msg, "output gradient 'b'") != NULL);
  kiln_err_clear(&e);
  CHECK(infer_one(KILN_OP_AveragePoolGrad, &y_bad, NULL, k22_input, &e) == KILN_ERR_SHAPE);
  kiln_err_clear(&e);
  CHECK(infer_one(KILN_OP_AveragePoolGrad, &y_ok, NULL, k22_input, &e) == KILN_OK);
  kiln_err_clear(&e);
  CHECK(infer_one(KILN_OP_ResizeGrad, &y8, NULL, resize_x2, &e) == KILN_OK);
  kiln_err_clear(&e);
  CHECK(infer_one(KILN_OP_ResizeGrad, &y_ok, NULL, resize_x2, &e) == KILN_ERR_SHAPE);
  CHECK(strstr(e.msg, "axis 2") != NULL);
  kiln_err_clear(&e);
  CHECK(infer_one(KILN_OP_ResizeGrad, &y8, NULL, resize_bad_mode, &e) == KILN_ERR_UNSUPPORTED);
  CHECK(strstr(e.msg, "bicubic") != NULL);
}

/* ---- JIT against the reference ---- */

/* Copies the attributes of node `from` onto node nid of g. */
static void copy_attrs(const kiln_node *from, kiln_graph *g, int nid, kiln_err *e) {
  for (int a = 0; a < from->n_attrs; a++) {
    const kiln_attr *at = &from->attrs[a];
    switch (at->kind) {
    case KILN_ATTR_INT: ir_set_attr_int(g, nid, at->name, at->i, e); break;
    case KILN_ATTR_FLOAT: ir_set_attr_float(g, nid, at->name, at->f, e); break;
    case KILN_ATTR_STRING: ir_set_attr_str(g, nid, at->name, at->s, e); break;
    case KILN_ATTR_INTS: ir_set_attr_ints(g, nid, at->name, at->ints, at->n, e); break;
    case KILN_ATTR_FLOATS: ir_set_attr_floats(g, nid, at->name, at->floats, at->n, e); break;
    default: break;
    }
  }
}

/* A graph of the one gradient op that autodiff made for f: its inputs become graph inputs. */
static kiln_graph *grad_op_graph(const fwd *f, kiln_err *e) {
  kiln_graph *fg = build_fwd(f, e);
  kiln_shape ys = fg->values[fg->outputs[0]].shape;
  int dy = add_input(fg, "dy", &ys, e), grad;
  kiln_autodiff_opts o = {.loss = fg->outputs[0], .wrt = &fg->inputs[0], .n_wrt = 1, .seed = dy};
  if (e->code || kiln_autodiff(fg, &o, &grad, e)) {
    ir_graph_free(fg);
    return NULL;
  }
  const kiln_node *gn = NULL;
  for (int64_t i = 0; i < fg->n_nodes; i++) {
    kiln_op op = fg->nodes[i].op;
    if (op == KILN_OP_MaxPoolGrad || op == KILN_OP_AveragePoolGrad || op == KILN_OP_ResizeGrad)
      gn = &fg->nodes[i];
  }
  kiln_graph *g = NULL;
  if (gn) {
    kiln_evaluator ev = kiln_ref_evaluator();
    ir_infer(fg, &ev, e);
    g = ir_graph_new();
    int in[2], out, nid;
    char nm[8];
    for (int i = 0; i < gn->n_in; i++) {
      snprintf(nm, sizeof nm, "in%d", i);
      in[i] = add_input(g, nm, &fg->values[gn->in[i]].shape, e);
    }
    ir_add_value(g, "dx", &out, e);
    ir_add_node(g, gn->op, "grad", in, gn->n_in, &out, 1, &nid, e);
    copy_attrs(gn, g, nid, e);
    ir_add_output(g, out, e);
    ir_infer(g, &ev, e);
  } else {
    kiln_errf(e, KILN_ERR_INVALID, "autodiff made no pool/resize gradient op");
  }
  ir_graph_free(fg);
  return g;
}

/* max |a - b| / (atol + rtol |b|) <= 1 */
static bool close_all(const kiln_tensor *a, const kiln_tensor *b, double rtol, double atol) {
  for (int64_t i = 0; i < a->numel; i++) {
    double x = ((float *)a->data)[i], y = ((float *)b->data)[i];
    if (!(fabs(x - y) <= atol + rtol * fabs(y))) {
      fprintf(stderr, "element %lld: jit %.9g, reference %.9g\n", (long long)i, x, y);
      return false;
    }
  }
  return true;
}

static void check_jit(const fwd *f) {
  kiln_err e = {0};
  kiln_graph *g = grad_op_graph(f, &e);
  CHECK_OK(e.code, &e);
  if (!g) return;
  kiln_tensor *in[2] = {0}, *want = NULL, *got[2] = {0};
  uint64_t seed = 99;
  for (int i = 0; i < g->n_inputs; i++) {
    kiln_tensor_new(KILN_F32, &g->values[g->inputs[i]].shape, &in[i], &e);
    gc_fill(in[i], &seed, -2, 2);
    /* quantized X: max pools see ties, whose rule the JIT must follow too */
    if (g->nodes[0].op == KILN_OP_MaxPoolGrad && i == 0)
      for (int64_t j = 0; j < in[i]->numel; j++)
        ((float *)in[i]->data)[j] = floorf(((float *)in[i]->data)[j] * 2);
  }
  kiln_ref_ctx ctx = {.g = g};
  CHECK_OK(kiln_ref_run(g, &ctx, in, &want, &e), &e);
  const int threads[2] = {1, 3};
  for (int t = 0; t < 2; t++) {
    kiln_err e2 = {0};
    kiln_graph *gj = grad_op_graph(f, &e2);
    kiln_program *p = NULL;
    kiln_compile_opts o = {.threads = threads[t], .cache_dir = ""};
    CHECK_OK(kiln_compile(gj, &o, &p, &e2), &e2);
    if (!p) continue;
    CHECK(p->n_fallback == 0);
    CHECK_OK(kiln_program_run(p, in, &got[t], false, &e2), &e2);
    kiln_program_free(p);
  }
  if (want && got[0] && got[1]) {
    size_t bytes = kiln_tensor_nbytes(want);
    CHECK_MSG(memcmp(got[0]->data, got[1]->data, bytes) == 0, "%s: 1 and 3 threads differ",
              f->name);
    if (g->nodes[0].op == KILN_OP_ResizeGrad)
      CHECK_MSG(close_all(got[0], want, 1e-5, 1e-6), "%s: jit differs from the reference", f->name);
    else
      CHECK_MSG(memcmp(got[0]->data, want->data, bytes) == 0, "%s: jit differs from the reference",
                f->name);
  }
  for (int i = 0; i < 2; i++) kiln_tensor_free(in[i]), kiln_tensor_free(got[i]);
  kiln_tensor_free(want);
  ir_graph_free(g);
}

/* Larger shapes than gradcheck affords: odd sizes, several tiles, many planes. */
static const fwd jit_extra[] = {
    {POOL("max big", MaxPool, 4, 3, 5, 33, 31), K2(3, 3), S2(2, 2), P4(1, 1, 1, 1),
     .ceil_mode = 1},
    {POOL("max global 1-D", MaxPool, 3, 2, 3, 300), .nk = 1, .kernel = {300}},
    {POOL("max dilated strided", MaxPool, 4, 1, 2, 13, 17), K2(3, 3), S2(2, 2), P4(2, 2, 2, 2),
     .nd = 2, .dil = {2, 2}},
    {POOL("max no interior", MaxPool, 4, 1, 3, 2, 4), K2(3, 5), P4(1, 2, 1, 2)},
    {POOL("max 3-D big", MaxPool, 5, 2, 2, 5, 9, 10), .nk = 3, .kernel = {3, 2, 3}, .ns = 3,
     .strides = {2, 1, 2}, .np = 6, .pads = {1, 0, 1, 1, 1, 1}, .ceil_mode = 1},
    {POOL("avg big", AveragePool, 4, 2, 7, 29, 30), K2(3, 2), S2(2, 2), P4(1, 0, 1, 1),
     .count_include_pad = 1, .ceil_mode = 1},
    {POOL("avg dilated", AveragePool, 4, 2, 3, 11, 12), K2(2, 3), .nd = 2, .dil = {2, 2}},
    {RS("nearest big", 4, 2, 8, 20, 30), SC4(1, 1, 2, 2)},
    {RS("linear big", 4, 2, 8, 21, 30), SZ4(2, 8, 56, 61), .mode = "linear"},
    {RS("linear channels", 4, 2, 3, 5, 6), SC4(1, 2, 2, 1), .mode = "linear",
     .coord = "align_corners"},
    {RS("identity", 4, 2, 3, 5, 6), SC4(1, 1, 1, 1), .mode = "linear"},
    {RS("to empty", 4, 1, 2, 3, 4), SC4(1, 1, 0.2f, 1)},
};

static void test_jit(void) {
  FOR_EACH(maxpools, check_jit);
  FOR_EACH(avgpools, check_jit);
  FOR_EACH(resizes, check_jit);
  FOR_EACH(jit_extra, check_jit);
}

/* GlobalMaxPool's gradient is a MaxPoolGrad too; the global average one has no kiln op. */
static void test_jit_global(void) { check_jit(&globals[3]); }

/* The whole backward graph (forward + gradient nodes) compiled (forward ops without an emitter
 * may fall back) against the reference; x and dy are fed, y and dx compared. */
static void check_backward_jit(const fwd *f) {
  kiln_err e = {0};
  kiln_tensor *in[2] = {0}, *want[2] = {0}, *got[2][2] = {{0}};
  for (int run = 0; run < 3; run++) {
    kiln_graph *g = build_fwd(f, &e);
    kiln_shape ys = g->values[g->outputs[0]].shape;
    int dy = add_input(g, "dy", &ys, &e), grad;
    kiln_autodiff_opts o = {.loss = g->outputs[0], .wrt = &g->inputs[0], .n_wrt = 1, .seed = dy};
    CHECK_OK(kiln_autodiff(g, &o, &grad, &e), &e);
    ir_add_output(g, grad, &e);
    kiln_evaluator ev = kiln_ref_evaluator();
    CHECK_OK(ir_toposort(g, &e), &e);
    CHECK_OK(ir_infer(g, &ev, &e), &e);
    if (e.code) {
      ir_graph_free(g);
      return;
    }
    if (run == 0) {
      uint64_t seed = 7;
      for (int i = 0; i < 2; i++) {
        kiln_tensor_new(KILN_F32, &g->values[g->inputs[i]].shape, &in[i], &e);
        gc_fill(in[i], &seed, -2, 2);
      }
      kiln_ref_ctx ctx = {.g = g};
      CHECK_OK(kiln_ref_run(g, &ctx, in, want, &e), &e);
      ir_graph_free(g);
      continue;
    }
    kiln_program *p = NULL;
    kiln_compile_opts co = {.threads = run == 1 ? 1 : 3, .cache_dir = "", .allow_fallback = true};
    CHECK_OK(kiln_compile(g, &co, &p, &e), &e);
    if (!p) return;
    CHECK_OK(kiln_program_run(p, in, got[run - 1], false, &e), &e);
    kiln_program_free(p);
  }
  for (int i = 0; i < 2; i++) {
    if (want[i] && got[0][i] && got[1][i]) {
      CHECK_MSG(memcmp(got[0][i]->data, got[1][i]->data, kiln_tensor_nbytes(want[i])) == 0,
                "%s: output %d differs between 1 and 3 threads", f->name, i);
      CHECK_MSG(close_all(got[0][i], want[i], 1e-5, 1e-6), "%s: output %d differs", f->name, i);
    }
    kiln_tensor_free(in[i]), kiln_tensor_free(want[i]);
    kiln_tensor_free(got[0][i]), kiln_tensor_free(got[1][i]);
  }
}

static void test_backward_jit(void) {
  FOR_EACH(maxpools, check_backward_jit);
  FOR_EACH(avgpools, check_backward_jit);
  FOR_EACH(globals, check_backward_jit);
  FOR_EACH(resizes, check_backward_jit);
}

/* The gradient ops survive an ONNX round trip: the reloaded graph computes the same bits. */
static void check_roundtrip(const fwd *f) {
  kiln_err e = {0};
  kiln_graph *g = grad_op_graph(f, &e), *g2 = NULL;
  CHECK_OK(e.code, &e);
  if (!g) return;
  uint8_t *buf = NULL;
  size_t len = 0;
  CHECK_OK(kiln_onnx_save_buffer(g, &buf, &len, &e), &e);
  if (buf) CHECK_OK(kiln_onnx_load_buffer(buf, len, NULL, "roundtrip", &g2, &e), &e);
  kiln_free(buf);
  kiln_evaluator ev = kiln_ref_evaluator();
  if (g2) CHECK_OK(ir_infer(g2, &ev, &e), &e);
  if (g2 && !e.code) {
    kiln_tensor *in[2] = {0}, *a = NULL, *b = NULL;
    uint64_t seed = 5;
    for (int i = 0; i < g->n_inputs; i++) {
      kiln_tensor_new(KILN_F32, &g->values[g->inputs[i]].shape, &in[i], &e);
      gc_fill(in[i], &seed, -2, 2);
    }
    kiln_ref_ctx c1 = {.g = g}, c2 = {.g = g2};
    CHECK_OK(kiln_ref_run(g, &c1, in, &a, &e), &e);
    CHECK_OK(kiln_ref_run(g2, &c2, in, &b, &e), &e);
    if (a && b)
      CHECK_MSG(memcmp(a->data, b->data, kiln_tensor_nbytes(a)) == 0, "%s: round trip differs",
                f->name);
    for (int i = 0; i < 2; i++) kiln_tensor_free(in[i]);
    kiln_tensor_free(a), kiln_tensor_free(b);
  }
  ir_graph_free(g);
  ir_graph_free(g2);
}

static void test_roundtrip(void) {
  FOR_EACH(maxpools, check_roundtrip);
  FOR_EACH(avgpools, check_roundtrip);
  FOR_EACH(resizes, check_roundtrip);
}

int main(void) {
  RUN(test_maxpool);
  RUN(test_maxpool_ties);
  RUN(test_avgpool);
  RUN(test_global);
  RUN(test_resize);
  RUN(test_bad_input);
  RUN(test_jit);
  RUN(test_jit_global);
  RUN(test_backward_jit);
  RUN(test_roundtrip);
  TEST_MAIN_END();
}
