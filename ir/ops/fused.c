/* fused.c — op definitions of the kiln-domain fused ops (FusedConv, UpsampleConv, GapGemm,
 * FusedElementwise) and the decoding of their attributes (ir/ops/fused.h).  What each one
 * computes is documented in docs/ops-kiln.md; the passes that make them in docs/passes.md. */
#include "ir/ops/fused.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ir/ops/common.h"
#include "ir/ops/nn_window.h"
#include "runtime/ref/resize_coords.h"

/* ---- activations ---- */

const char *const kiln_fused_act_names[5] = {"none", "relu", "clip", "leaky_relu", "sigmoid"};

kiln_code kiln_fused_act_get(const kiln_node *n, kiln_fused_act_params *p, kiln_err *e) {
  const char *s = ir_attr_str(n, "activation");
  memset(p, 0, sizeof *p);
  int found = -1;
  for (int i = 0; i < 5; i++)
    if (!strcmp(s, kiln_fused_act_names[i])) found = i;
  if (found < 0)
    return kiln_errf(e, KILN_ERR_UNSUPPORTED,
                     "activation '%s' is not one of none, relu, clip, leaky_relu, sigmoid", s);
  p->act = (kiln_fused_act)found;
  p->alpha = ir_attr_float(n, "act_alpha");
  p->beta = ir_attr_float(n, "act_beta");
  if (p->act == KILN_FACT_CLIP && (!ir_attr_has(n, "act_alpha") || !ir_attr_has(n, "act_beta")))
    return kiln_errf(e, KILN_ERR_INVALID,
                     "activation 'clip' needs act_alpha (min) and act_beta (max)");
  return KILN_OK;
}

/* ---- synthetic nodes ---- */

void kiln_synth_init(kiln_synth_node *s, kiln_op op, int opset, int n_in) {
  memset(s, 0, sizeof *s);
  s->n.op = op;
  s->n.def = kiln_op_get(op);
  s->n.name = (char *)"";
  s->n.domain = (char *)"";
  s->n.opset = opset;
  s->n.n_in = n_in;
  s->n.n_out = 1;
  for (int i = 0; i < KILN_EW_MAX_ARITY; i++) s->ids[i] = -1;
  s->n.in = s->ids;
  s->n.out = s->ids;
  s->n.attrs = s->attrs;
}

void kiln_synth_float(kiln_synth_node *s, const char *name, double v) {
  s->attrs[s->n.n_attrs++] = (kiln_attr){.name = (char *)name, .kind = KILN_ATTR_FLOAT, .f = v};
}

void kiln_synth_str(kiln_synth_node *s, const char *name, const char *v) {
  s->attrs[s->n.n_attrs++] =
      (kiln_attr){.name = (char *)name, .kind = KILN_ATTR_STRING, .s = (char *)v,
                  .s_len = strlen(v)};
}

void kiln_fused_act_node(const kiln_fused_act_params *a, kiln_synth_node *s) {
  static const kiln_op ops[] = {KILN_OP_Identity, KILN_OP_Relu, KILN_OP_Clip, KILN_OP_LeakyRelu,
                                KILN_OP_Sigmoid};
  kiln_synth_init(s, ops[a->act], a->act == KILN_FACT_CLIP ? 6 : 13, 1);
  if (a->act == KILN_FACT_CLIP) {
    kiln_synth_float(s, "min", a->alpha);
    kiln_synth_float(s, "max", a->beta);
  } else if (a->act == KILN_FACT_LEAKY_RELU) {
    kiln_synth_float(s, "alpha", a->alpha);
  }
}

/* ---- elementwise chains ---- */

bool kiln_ew_step_op(kiln_op op, int *min_arity, int *max_arity) {
  int lo = 1, hi = 1;
  switch (op) {
  case KILN_OP_Relu: case KILN_OP_LeakyRelu: case KILN_OP_Sigmoid: case KILN_OP_Tanh:
  case KILN_OP_HardSigmoid: case KILN_OP_HardSwish: case KILN_OP_Elu: case KILN_OP_Selu:
  case KILN_OP_Softplus: case KILN_OP_Softsign: case KILN_OP_Sqrt: case KILN_OP_Exp:
  case KILN_OP_Log: case KILN_OP_Neg: case KILN_OP_Abs: case KILN_OP_Reciprocal:
  case KILN_OP_Floor: case KILN_OP_Ceil: case KILN_OP_Erf: break;
  case KILN_OP_Clip: hi = 3; break;
  case KILN_OP_Add: case KILN_OP_Sub: case KILN_OP_Mul: case KILN_OP_Div: case KILN_OP_Pow:
  case KILN_OP_PRelu: lo = hi = 2; break;
  case KILN_OP_Sum: case KILN_OP_Mean: case KILN_OP_Max: case KILN_OP_Min:
    hi = KILN_EW_MAX_ARITY;
    break;
  default: return false;
  }
  if (min_arity) *min_arity = lo;
  if (max_arity) *max_arity = hi;
  return true;
}

kiln_code kiln_ew_chain_get(const kiln_node *n, int n_inputs, kiln_ew_chain *c, kiln_err *e) {
  memset(c, 0, sizeof *c);
  const kiln_attr *ops = ir_attr_find(n, "ops");
  if (!ops || ops->kind != KILN_ATTR_STRINGS || ops->n < 1)
    return kiln_errf(e, KILN_ERR_INVALID, "attribute 'ops' must list at least one op");
  if (ops->n > KILN_EW_MAX_STEPS)
    return kiln_errf(e, KILN_ERR_LIMIT, "%lld steps; at most %d allowed", (long long)ops->n,
                     KILN_EW_MAX_STEPS);
  if (n_inputs > KILN_EW_MAX_INPUTS)
    return kiln_errf(e, KILN_ERR_LIMIT, "%d inputs; at most %d allowed", n_inputs,
                     KILN_EW_MAX_INPUTS);
  c->n_steps = (int)ops->n;
  c->n_inputs = n_inputs;
  c->opset = (int)ir_attr_int(n, "onnx_opset");
  if (c->opset < 7 || c->opset > 17)
    return kiln_errf(e, KILN_ERR_UNSUPPORTED, "onnx_opset %d is outside 7..17", c->opset);
  const int64_t *arity, *operands;
  const double *fl[3];
  int64_t n_arity = ir_attr_ints(n, "arity", &arity);
  int64_t n_operands = ir_attr_ints(n, "operands", &operands);
  static const char *const fnames[3] = {"alpha", "beta", "gamma"};
  for (int f = 0; f < 3; f++) {
    int64_t cnt = ir_attr_floats(n, fnames[f], &fl[f]);
    if (fl[f] && cnt != c->n_steps)
      return kiln_errf(e, KILN_ERR_INVALID, "attribute '%s' has %lld values; expected one per "
                       "step (%d)", fnames[f], (long long)cnt, c->n_steps);
  }
  if (n_arity != c->n_steps)
    return kiln_errf(e, KILN_ERR_INVALID, "attribute 'arity' has %lld values; expected one per "
                     "step (%d)", (long long)n_arity, c->n_steps);
  int64_t used = 0;
  for (int k = 0; k < c->n_steps; k++) {
    kiln_ew_step *st = &c->step[k];
    const char *name = ops->strings[k] ? ops->strings[k] : "";
    st->op = kiln_op_lookup("", name);
    int lo, hi;
    if (st->op == KILN_OP_INVALID || !kiln_ew_step_op(st->op, &lo, &hi))
      return kiln_errf(e, KILN_ERR_UNSUPPORTED, "step %d: '%s' is not a fusable elementwise op",
                       k, name);
    if (arity[k] < lo || arity[k] > hi || used + arity[k] > n_operands)
      return kiln_errf(e, KILN_ERR_INVALID, "step %d (%s): arity %lld is invalid", k, name,
                       (long long)arity[k]);
    st->arity = (int)arity[k];
    for (int j = 0; j < st->arity; j++) {
      int64_t o = operands[used + j];
      bool optional = st->op == KILN_OP_Clip && j > 0;
      if (o < (optional ? -1 : 0) || o >= n_inputs + k)
        return kiln_errf(e, KILN_ERR_INVALID, "step %d (%s): operand %lld is neither an input "
                         "nor an earlier step", k, name, (long long)o);
      st->operand[j] = (int)o;
    }
    if (st->op == KILN_OP_Clip && c->opset < 11 && st->arity > 1)
      return kiln_errf(e, KILN_ERR_INVALID, "step %d: Clip of opset %d takes no bound operands",
                       k, c->opset);
    used += st->arity;
    st->alpha = fl[0] ? fl[0][k] : 0;
    st->beta = fl[1] ? fl[1][k] : 0;
    st->gamma = fl[2] ? fl[2][k] : 0;
  }
  if (used != n_operands)
    return kiln_errf(e, KILN_ERR_INVALID, "attribute 'operands' has %lld values; the arities "
                     "add up to %lld", (long long)n_operands, (long long)used);
  return KILN_OK;
}

void kiln_ew_step_node(const kiln_ew_chain *c, int k, kiln_synth_node *s) {
  const kiln_ew_step *st = &c->step[k];
  kiln_synth_init(s, st->op, c->opset, st->arity);
  switch (st->op) {
  case KILN_OP_LeakyRelu:
  case KILN_OP_Elu: kiln_synth_float(s, "alpha", st->alpha); break;
  case KILN_OP_Selu:
    kiln_synth_float(s, "alpha", st->alpha);
    kiln_synth_float(s, "gamma", st->gamma);
    break;
  case KILN_OP_HardSigmoid:
    kiln_synth_float(s, "alpha", st->alpha);
    kiln_synth_float(s, "beta", st->beta);
    break;
  case KILN_OP_Clip:
    if (c->opset < 11) {
      kiln_synth_float(s, "min", st->alpha);
      kiln_synth_float(s, "max", st->beta);
    }
    break;
  default: break;
  }
}

/* ---- UpsampleConv's resize ---- */

kiln_code kiln_upconv_params_get(const kiln_node *n, int rank, kiln_upconv_params *p,
                                 kiln_err *e) {
  memset(p, 0, sizeof *p);
  p->nsp = rank - 2;
  const char *mode = ir_attr_str(n, "mode");
  if (!strcmp(mode, "linear"))
    p->linear = true;
  else if (strcmp(mode, "nearest"))
    return kiln_errf(e, KILN_ERR_UNSUPPORTED, "mode '%s' is not nearest or linear", mode);
  p->coord = ir_attr_str(n, "coordinate_transformation_mode");
  p->nearest = ir_attr_str(n, "nearest_mode");
  kiln_coord_mode cm;
  kiln_nearest_mode nm;
  if (!kiln_coord_mode_parse(p->coord, &cm) || cm == KILN_COORD_TF_HALF_PIXEL_FOR_NN ||
      cm == KILN_COORD_TF_CROP_AND_RESIZE)
    return kiln_errf(e, KILN_ERR_UNSUPPORTED,
                     "coordinate_transformation_mode '%s' is not one of asymmetric, half_pixel, "
                     "pytorch_half_pixel, align_corners", p->coord);
  if (!kiln_nearest_mode_parse(p->nearest, &nm))
    return kiln_errf(e, KILN_ERR_UNSUPPORTED, "nearest_mode '%s' is unknown", p->nearest);
  const int64_t *s;
  int64_t ns = ir_attr_ints(n, "scales", &s);
  if (p->nsp < 1 || p->nsp > 3)
    return kiln_errf(e, KILN_ERR_SHAPE, "input X has rank %d; expected 3 to 5", rank);
  if (!s || ns != p->nsp)
    return kiln_errf(e, KILN_ERR_SHAPE, "attribute 'scales' has %lld values; expected one per "
                     "spatial dimension (%d)", (long long)ns, p->nsp);
  for (int d = 0; d < p->nsp; d++) {
    if (s[d] < 1 || s[d] > 1024)
      return kiln_errf(e, KILN_ERR_SHAPE, "scale %lld of spatial dimension %d must be in "
                       "[1, 1024]", (long long)s[d], d);
    p->scale[d] = s[d];
  }
  return KILN_OK;
}

/* ---- shape inference ---- */

kiln_code kiln_residual_check(const kiln_graph *g, const kiln_node *n, const kiln_shape *ys,
                              kiln_err *e) {
  bool res = ir_attr_int(n, "has_residual") != 0;
  const kiln_value *z = ir_in(g, n, 3);
  if (res != (z != NULL))
    return kiln_errf(e, KILN_ERR_INVALID, "has_residual is %d but the residual input Z is %s",
                     res, z ? "given" : "absent");
  if (z) {
    KILN_TRY(ir_check_input(g, n, 3, KILN_DT(KILN_F32), ys->rank, ys->rank, e));
    if (!kiln_shape_eq(&z->shape, ys)) {
      char a[160], b[160];
      return kiln_errf(e, KILN_ERR_SHAPE, "residual '%s' %s must have the output's shape %s",
                       z->name, kiln_shape_str(&z->shape, a, sizeof a),
                       kiln_shape_str(ys, b, sizeof b));
    }
  }
  return KILN_OK;
}

/* X (N, C, spatial...) and W (M, C/group, k...) of a convolution over `xs` (X's shape, or the
 * upsampled one): checks channels, kernel_shape, bias (input 2) and returns Y's shape. */
static kiln_code conv_shape(kiln_graph *g, kiln_node *n, const kiln_shape *xs, kiln_shape *ys,
                            kiln_err *e) {
  const kiln_value *x = ir_in(g, n, 0);
  KILN_TRY(ir_check_input(g, n, 1, KILN_DT(KILN_F32), xs->rank, xs->rank, e));
  const kiln_value *w = ir_in(g, n, 1);
  int nsp = xs->rank - 2;
  int64_t kernel[NN_WIN_MAX] = {0};
  const int64_t *ks;
  int64_t n_ks = ir_attr_ints(n, "kernel_shape", &ks);
  if (ks && n_ks != nsp)
    return kiln_errf(e, KILN_ERR_SHAPE, "attribute 'kernel_shape' has %lld values; expected %d",
                     (long long)n_ks, nsp);
  for (int i = 0; i < nsp && i < NN_WIN_MAX; i++) {
    kernel[i] = w->shape.d[2 + i];
    if (ks && ks[i] != kernel[i])
      return kiln_errf(e, KILN_ERR_SHAPE, "attribute 'kernel_shape' disagrees with weight '%s'",
                       w->name);
  }
  int64_t group = ir_attr_int(n, "group"), cg;
  if (group < 1 || group > KILN_MAX_DIM)
    return kiln_errf(e, KILN_ERR_SHAPE, "group %lld must be positive", (long long)group);
  if (!kiln_mul_ok(w->shape.d[1], group, &cg) || cg != xs->d[1] || w->shape.d[0] % group)
    return kiln_errf(e, KILN_ERR_SHAPE,
                     "input '%s' has %lld channels; weight '%s' takes %lld per group x %lld "
                     "groups and has %lld output channels",
                     x->name, (long long)xs->d[1], w->name, (long long)w->shape.d[1],
                     (long long)group, (long long)w->shape.d[0]);
  if (ir_in(g, n, 2)) {
    KILN_TRY(ir_check_input(g, n, 2, KILN_DT(KILN_F32), 1, 1, e));
    const kiln_value *b = ir_in(g, n, 2);
    if (b->shape.d[0] != w->shape.d[0])
      return kiln_errf(e, KILN_ERR_SHAPE, "bias '%s' has %lld values; the output has %lld "
                       "channels", b->name, (long long)b->shape.d[0], (long long)w->shape.d[0]);
  }
  nn_window win;
  KILN_TRY(nn_window_forward(n, xs, x->name, kernel, false, &win, e));
  *ys = *xs;
  ys->d[1] = w->shape.d[0];
  for (int i = 0; i < win.nsp; i++) ys->d[2 + i] = win.out[i];
  return KILN_OK;
}

static kiln_code infer_fused_conv(kiln_graph *g, kiln_node *n, kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT(KILN_F32), 3, 2 + NN_WIN_MAX, e));
  kiln_fused_act_params act;
  KILN_TRY(kiln_fused_act_get(n, &act, e));
  kiln_shape ys;
  KILN_TRY(conv_shape(g, n, &ir_in(g, n, 0)->shape, &ys, e));
  KILN_TRY(kiln_residual_check(g, n, &ys, e));
  return ir_set_output(g, n, 0, KILN_F32, &ys, e);
}

static kiln_code infer_upsample_conv(kiln_graph *g, kiln_node *n, kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT(KILN_F32), 3, 2 + NN_WIN_MAX, e));
  const kiln_value *x = ir_in(g, n, 0);
  kiln_fused_act_params act;
  KILN_TRY(kiln_fused_act_get(n, &act, e));
  kiln_upconv_params up;
  KILN_TRY(kiln_upconv_params_get(n, x->shape.rank, &up, e));
  kiln_shape us = x->shape, ys;
  for (int d = 0; d < up.nsp; d++)
    if (!kiln_mul_ok(us.d[2 + d], up.scale[d], &us.d[2 + d]) || us.d[2 + d] > KILN_MAX_DIM)
      return kiln_errf(e, KILN_ERR_LIMIT, "the upsampled input is too large");
  KILN_TRY(conv_shape(g, n, &us, &ys, e));
  return ir_set_output(g, n, 0, KILN_F32, &ys, e);
}

/* Y [N, M] = alpha * mean_spatial(X) [N, C] x B' + beta * C. */
static kiln_code infer_gap_gemm(kiln_graph *g, kiln_node *n, kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT(KILN_F32), 3, KILN_MAX_RANK, e));
  KILN_TRY(ir_check_input(g, n, 1, KILN_DT(KILN_F32), 2, 2, e));
  const kiln_value *x = ir_in(g, n, 0), *w = ir_in(g, n, 1);
  bool tb = ir_attr_int(n, "transB") != 0;
  int64_t c = x->shape.d[1], k = w->shape.d[tb ? 1 : 0], m = w->shape.d[tb ? 0 : 1];
  if (k != c)
    return kiln_errf(e, KILN_ERR_SHAPE, "input '%s' has %lld channels but weight '%s' (transB=%d)"
                     " takes %lld", x->name, (long long)c, w->name, tb, (long long)k);
  kiln_shape ys = kiln_shape_make(2, (int64_t[]){x->shape.d[0], m});
  if (ir_in(g, n, 2)) {
    KILN_TRY(ir_check_input(g, n, 2, KILN_DT(KILN_F32), 0, 2, e));
    const kiln_value *cv = ir_in(g, n, 2);
    kiln_shape b;
    char a1[160], a2[160];
    if (ir_broadcast(&cv->shape, &ys, &b, e) || !kiln_shape_eq(&b, &ys)) {
      kiln_err_clear(e);
      return kiln_errf(e, KILN_ERR_SHAPE, "C '%s' %s does not broadcast to the output %s",
                       cv->name, kiln_shape_str(&cv->shape, a1, sizeof a1),
                       kiln_shape_str(&ys, a2, sizeof a2));
    }
  }
  return ir_set_output(g, n, 0, KILN_F32, &ys, e);
}

/* Steps in order: each step's operands broadcast (Clip's bounds are scalars, PRelu's slope
 * broadcasts to x); the output has the last step's shape, which must be the broadcast of all
 * inputs (the compiled kernel computes every step at the output's index). */
static kiln_code infer_fused_elementwise(kiln_graph *g, kiln_node *n, kiln_err *e) {
  kiln_ew_chain *c = kiln_malloc(sizeof *c);
  kiln_shape *shapes = kiln_malloc(sizeof(kiln_shape) * (KILN_EW_MAX_INPUTS + KILN_EW_MAX_STEPS));
  kiln_code rc = KILN_OK;
  if (!c || !shapes) {
    rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
    goto done;
  }
  for (int i = 0; i < n->n_in && !rc; i++)
    rc = ir_check_input(g, n, i, KILN_DT(KILN_F32), 0, KILN_MAX_RANK, e);
  if (!rc) rc = kiln_ew_chain_get(n, n->n_in, c, e);
  if (rc) goto done;
  kiln_shape all = ir_in(g, n, 0)->shape;
  for (int i = 0; i < n->n_in && !rc; i++) {
    shapes[i] = ir_in(g, n, i)->shape;
    rc = ir_broadcast(&all, &shapes[i], &all, e);
  }
  for (int k = 0; k < c->n_steps && !rc; k++) {
    const kiln_ew_step *st = &c->step[k];
    kiln_shape s = shapes[st->operand[0]];
    for (int j = 1; j < st->arity && !rc; j++) {
      if (st->operand[j] < 0) continue;
      const kiln_shape *o = &shapes[st->operand[j]];
      int64_t ne;
      if (st->op == KILN_OP_Clip) {
        if (!kiln_shape_numel(o, &ne) || ne != 1)
          rc = kiln_errf(e, KILN_ERR_SHAPE, "step %d: Clip's bounds must be scalars", k);
        continue;
      }
      rc = ir_broadcast(&s, o, &s, e);
    }
    if (!rc && st->op == KILN_OP_PRelu && !kiln_shape_eq(&s, &shapes[st->operand[0]]))
      rc = kiln_errf(e, KILN_ERR_SHAPE, "step %d: PRelu's slope does not broadcast to x", k);
    shapes[n->n_in + k] = s;
  }
  if (rc) goto done;
  const kiln_shape *ys = &shapes[n->n_in + c->n_steps - 1];
  if (!kiln_shape_eq(ys, &all)) {
    char a[160], b[160];
    rc = kiln_errf(e, KILN_ERR_SHAPE, "the result %s is not the broadcast %s of the inputs",
                   kiln_shape_str(ys, a, sizeof a), kiln_shape_str(&all, b, sizeof b));
    goto done;
  }
  rc = ir_set_output(g, n, 0, KILN_F32, ys, e);
done:
  kiln_free(c);
  kiln_free(shapes);
  return rc;
}

/* ---- MACs ---- */

static int64_t kernel_volume(const kiln_value *w) {
  int64_t v = 1;
  for (int i = 2; i < w->shape.rank; i++) v *= w->shape.d[i];
  return v;
}

/* As the Conv it replaces: output elements x (C / group) x kernel volume.  UpsampleConv
 * counts the convolution over the upsampled input (what the unfused graph computes), so
 * GFLOP/s figures compare; its phase kernels do fewer. */
static int64_t macs_conv_like(const kiln_graph *g, const kiln_node *n) {
  const kiln_value *y = ir_out(g, n, 0), *w = ir_in(g, n, 1);
  int64_t numel;
  if (!y || !y->typed || !w || !w->typed || !kiln_shape_numel(&y->shape, &numel)) return 0;
  return numel * w->shape.d[1] * kernel_volume(w);
}

static int64_t macs_gap_gemm(const kiln_graph *g, const kiln_node *n) {
  const kiln_value *x = ir_in(g, n, 0), *y = ir_out(g, n, 0);
  int64_t nx, ny;
  if (!x || !x->typed || !y || !y->typed || !kiln_shape_numel(&x->shape, &nx) ||
      !kiln_shape_numel(&y->shape, &ny))
    return 0;
  return ny * x->shape.d[1];
}

/* ---- descriptors ---- */


static const kiln_attr_spec fused_conv_attrs[] = {CONV_ATTRS, ACT_ATTRS,
                                                  A_INT("has_residual", 0)};

static const kiln_attr_spec upsample_conv_attrs[] = {
    A_STR("mode", "nearest"),
    A_STR("coordinate_transformation_mode", "asymmetric"),
    A_STR("nearest_mode", "floor"),
    A_REQ_INTS("scales"),
    CONV_ATTRS,
    ACT_ATTRS,
};

static const kiln_attr_spec gap_gemm_attrs[] = {A_FLOAT("alpha", 1.0), A_FLOAT("beta", 1.0),
                                                A_INT("transB", 0)};

static const kiln_attr_spec fused_elementwise_attrs[] = {
    {.name = "ops", .kind = KILN_ATTR_STRINGS, .required = true},
    A_REQ_INTS("arity"),
    A_REQ_INTS("operands"),
    A_FLOATS("alpha"),
    A_FLOATS("beta"),
    A_FLOATS("gamma"),
    A_INT("onnx_opset", 13),
};

const kiln_op_def kiln_opdef_FusedConv = {
    .name = "FusedConv", .domain = "kiln", .min_in = 2, .max_in = 4, .min_out = 1, .max_out = 1,
    .attrs = fused_conv_attrs, .n_attrs = NELEM(fused_conv_attrs), .infer = infer_fused_conv,
    .macs = macs_conv_like, .flags = KILN_OPF_FUSED,
    .doc = "Y = act(Conv(X, W) + B + Z): convolution with bias, residual and activation"};

const kiln_op_def kiln_opdef_UpsampleConv = {
    .name = "UpsampleConv", .domain = "kiln", .min_in = 2, .max_in = 3, .min_out = 1,
    .max_out = 1, .attrs = upsample_conv_attrs, .n_attrs = NELEM(upsample_conv_attrs),
    .infer = infer_upsample_conv, .macs = macs_conv_like, .flags = KILN_OPF_FUSED,
    .doc = "Y = act(Conv(Resize(X, integer scales), W) + B) without the upsampled tensor"};

const kiln_op_def kiln_opdef_GapGemm = {
    .name = "GapGemm", .domain = "kiln", .min_in = 2, .max_in = 3, .min_out = 1, .max_out = 1,
    .attrs = gap_gemm_attrs, .n_attrs = NELEM(gap_gemm_attrs), .infer = infer_gap_gemm,
    .macs = macs_gap_gemm, .flags = KILN_OPF_FUSED,
    .doc = "Y = alpha * GlobalAveragePool(X) flattened x W' + beta * C (Gemm's transB)"};

const kiln_op_def kiln_opdef_FusedElementwise = {
    .name = "FusedElementwise", .domain = "kiln", .min_in = 1, .max_in = KILN_EW_MAX_INPUTS,
    .min_out = 1, .max_out = 1, .attrs = fused_elementwise_attrs,
    .n_attrs = NELEM(fused_elementwise_attrs), .infer = infer_fused_elementwise,
    .flags = KILN_OPF_FUSED | KILN_OPF_ELEMENTWISE | KILN_OPF_INPLACE_OK,
    .doc = "a chain of float elementwise ops over broadcast inputs, evaluated as one loop"};
