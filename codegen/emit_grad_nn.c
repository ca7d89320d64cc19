/* emit_grad_nn.c — emitters of the grad_nn op family (see codegen/emit.h):
 * ConvGradWeight, BatchNormTrain and BatchNormGrad.
 *
 * Numerics follow runtime/ref/grad_nn.c: products of floats summed in double, the same
 * double formulas for the statistics and outputs.  Sums are vectorized (reassociated) by
 * LLVM inside one tile, so results differ from the reference's serial sums by rounding
 * only; every output element is computed by exactly one tile with a fixed instruction
 * sequence, so results are bitwise identical for any thread count.
 *  - ConvGradWeight: one tile per (output channel, input channel of its group) pair; each
 *    weight element is one double sum over (n, od, oh, ow) with the output positions that
 *    tap reaches computed once per tap (as the reference's tap_range), a unit-stride inner
 *    loop over ow for stride 1.
 *  - BatchNormTrain / BatchNormGrad: one tile per channel; two passes (statistics, then the
 *    elementwise output). */
#include <string.h>

#include "codegen/emit.h"
#include "ir/ops/nn_window.h"

typedef LLVMValueRef V;

static V entry_alloca(cg_kernel *k, LLVMTypeRef ty) {
  LLVMBuilderRef b2 = LLVMCreateBuilderInContext(k->ctx);
  LLVMBasicBlockRef entry = LLVMGetEntryBasicBlock(k->fn);
  LLVMValueRef first = LLVMGetFirstInstruction(entry);
  if (first)
    LLVMPositionBuilderBefore(b2, first);
  else
    LLVMPositionBuilderAtEnd(b2, entry);
  V a = LLVMBuildAlloca(b2, ty, "");
  LLVMDisposeBuilder(b2);
  return a;
}

static V f64c(cg_kernel *k, double v) { return LLVMConstReal(k->t->f64, v); }
static V ext(cg_kernel *k, V x) { return LLVMBuildFPExt(k->b, x, k->t->f64, ""); }
static V trunc32(cg_kernel *k, V x) { return LLVMBuildFPTrunc(k->b, x, k->t->f32, ""); }
static V fadd(cg_kernel *k, V a, V b) { return LLVMBuildFAdd(k->b, a, b, ""); }
static V fsub(cg_kernel *k, V a, V b) { return LLVMBuildFSub(k->b, a, b, ""); }
static V fmul(cg_kernel *k, V a, V b) { return LLVMBuildFMul(k->b, a, b, ""); }
static V fdiv(cg_kernel *k, V a, V b) { return LLVMBuildFDiv(k->b, a, b, ""); }
static V ld32(cg_kernel *k, V base, V idx) { return cg_load(k, k->t->f32, base, idx); }
static V smax(cg_kernel *k, V a, V b) {
  return cg_select(k, LLVMBuildICmp(k->b, LLVMIntSGT, a, b, ""), a, b);
}

/* *slot += v, reassociable so the loop vectorizer may split the sum (within one tile). */
static void acc_add(cg_kernel *k, V slot, V v) {
  V s = fadd(k, LLVMBuildLoad2(k->b, k->t->f64, slot, ""), v);
  LLVMSetFastMathFlags(s, LLVMFastMathAllowReassoc);
  LLVMBuildStore(k->b, s, slot);
}

/* ---- ConvGradWeight ---- */

/* The output positions p in [0, n_p) with p * stride + off in [0, n_q): [*lo, *hi). */
static void tap_range(cg_kernel *k, int64_t n_q, int64_t n_p, int64_t stride, V off, V *lo, V *hi) {
  LLVMBuilderRef b = k->b;
  V s = cg_i64(k, stride), np = cg_i64(k, n_p);
  V neg = smax(k, LLVMBuildNeg(b, off, ""), cg_i64(k, 0));
  V l = LLVMBuildSDiv(b, cg_add(k, neg, cg_i64(k, stride - 1)), s, "");
  V q = LLVMBuildSub(b, cg_i64(k, n_q - 1), off, "");
  V h = cg_select(k, LLVMBuildICmp(b, LLVMIntSLT, q, cg_i64(k, 0), ""), cg_i64(k, 0),
                  cg_add(k, LLVMBuildSDiv(b, smax(k, q, cg_i64(k, 0)), s, ""), cg_i64(k, 1)));
  *lo = cg_min(k, l, np);
  *hi = smax(k, cg_min(k, h, np), *lo);
}

static kiln_code emit_ConvGradWeight(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                                     kiln_err *e) {
  const kiln_value *x = ir_in(g, n, 0), *dy = ir_in(g, n, 1), *dw = ir_out(g, n, 0);
  const int64_t *ks;
  ir_attr_ints(n, "kernel_shape", &ks);
  nn_window win;
  KILN_TRY(nn_window_forward(n, &x->shape, x->name, ks, false, &win, e));
  nn_window t = nn_window_3d(&win);
  int64_t batch = x->shape.d[0], c = x->shape.d[1], m = dy->shape.d[1];
  int64_t group = ir_attr_int(n, "group"), cg = c / group, mg = m / group;
  int64_t in_plane = t.in[0] * t.in[1] * t.in[2], out_plane = t.out[0] * t.out[1] * t.out[2];
  int64_t kvol = t.kernel[0] * t.kernel[1] * t.kernel[2];
  int64_t n_dw;
  if (!kiln_shape_numel(&dw->shape, &n_dw) || n_dw == 0) return KILN_OK;

  cg_kernel kk;
  cg_kernel *k = &kk;
  KILN_TRY(cg_kernel_begin(cx, k, "conv_grad_weight", 3, e));
  LLVMBuilderRef b = k->b;
  V X = cg_arg(k, 0), DY = cg_arg(k, 1), DW = cg_arg(k, 2);
  V slot = entry_alloca(k, k->t->f64);
  cg_loop lt, lk[3], ln, lo_[3];
  V tile = cg_loop_begin(k, &lt, k->lo, k->hi, NULL, "tile");
  V oc = LLVMBuildSDiv(b, tile, cg_i64(k, cg), ""), ic = LLVMBuildSRem(b, tile, cg_i64(k, cg), "");
  V grp = LLVMBuildSDiv(b, oc, cg_i64(k, mg), "");
  V xc = cg_mul(k, cg_add(k, cg_mul(k, grp, cg_i64(k, cg)), ic), cg_i64(k, in_plane));
  V dyc = cg_mul(k, oc, cg_i64(k, out_plane));
  V wbase = cg_mul(k, tile, cg_i64(k, kvol));
  V kv[3], off[3], lo[3], hi[3];
  for (int i = 0; i < 3; i++) {
    kv[i] = cg_loop_begin(k, &lk[i], cg_i64(k, 0), cg_i64(k, t.kernel[i]), NULL, "tap");
    off[i] = LLVMBuildSub(b, cg_mul(k, kv[i], cg_i64(k, t.dilation[i])),
                          cg_i64(k, t.pad_begin[i]), "");
    tap_range(k, t.in[i], t.out[i], t.stride[i], off[i], &lo[i], &hi[i]);
  }
  LLVMBuildStore(b, f64c(k, 0), slot);
  V bn = cg_loop_begin(k, &ln, cg_i64(k, 0), cg_i64(k, batch), NULL, "n");
  V xb = cg_add(k, cg_mul(k, bn, cg_i64(k, c * in_plane)), xc);
  V dyb = cg_add(k, cg_mul(k, bn, cg_i64(k, m * out_plane)), dyc);
  V od = cg_loop_begin(k, &lo_[0], lo[0], hi[0], NULL, "od");
  V id = cg_add(k, cg_mul(k, od, cg_i64(k, t.stride[0])), off[0]);
  V oh = cg_loop_begin(k, &lo_[1], lo[1], hi[1], NULL, "oh");
  V ih = cg_add(k, cg_mul(k, oh, cg_i64(k, t.stride[1])), off[1]);
  V xrow = cg_add(k, cg_add(k, xb, cg_mul(k, cg_add(k, cg_mul(k, id, cg_i64(k, t.in[1])), ih),
                                          cg_i64(k, t.in[2]))), off[2]);
  V dyrow = cg_add(k, dyb, cg_mul(k, cg_add(k, cg_mul(k, od, cg_i64(k, t.out[1])), oh),
                                  cg_i64(k, t.out[2])));
  V ow = cg_loop_begin(k, &lo_[2], lo[2], hi[2], NULL, "ow");
  V xv = ld32(k, X, cg_add(k, xrow, cg_mul(k, ow, cg_i64(k, t.stride[2]))));
  V dv = ld32(k, DY, cg_add(k, dyrow, ow));
  acc_add(k, slot, fmul(k, ext(k, dv), ext(k, xv)));
  cg_loop_end(k, &lo_[2]);
  cg_loop_end(k, &lo_[1]);
  cg_loop_end(k, &lo_[0]);
  cg_loop_end(k, &ln);
  V tap = cg_add(k, cg_mul(k, kv[0], cg_i64(k, t.kernel[1])), kv[1]);
  V widx = cg_add(k, wbase, cg_add(k, cg_mul(k, tap, cg_i64(k, t.kernel[2])), kv[2]));
  cg_store(k, trunc32(k, LLVMBuildLoad2(b, k->t->f64, slot, "")), DW, widx);
  for (int i = 2; i >= 0; i--) cg_loop_end(k, &lk[i]);
  cg_loop_end(k, &lt);
  return cg_kernel_end(cx, k, m * cg,
                       (int[]){cg_buf_value(cx, n->in[0]), cg_buf_value(cx, n->in[1]),
                               cg_buf_value(cx, n->out[0])},
                       e);
}

/* ---- BatchNorm ---- */

/* Channel `ch` of X (N, C, spatial...): image b's run of sp values at (b*C + ch)*sp. */
typedef struct bn_geom {
  int64_t batch, c, sp;
  double count;
} bn_geom;

static bn_geom bn_geometry(const kiln_value *x) {
  bn_geom gm = {.batch = x->shape.d[0], .c = x->shape.d[1], .sp = 1};
  for (int i = 2; i < x->shape.rank; i++) gm.sp *= x->shape.d[i];
  gm.count = (double)(gm.batch * gm.sp);
  return gm;
}

/* Opens the loops over a channel's elements; returns the flat index. */
static V bn_open(cg_kernel *k, const bn_geom *gm, V ch, cg_loop *lb, cg_loop *lj) {
  V bi = cg_loop_begin(k, lb, cg_i64(k, 0), cg_i64(k, gm->batch), NULL, "b");
  V base = cg_mul(k, cg_add(k, cg_mul(k, bi, cg_i64(k, gm->c)), ch), cg_i64(k, gm->sp));
  V j = cg_loop_begin(k, lj, cg_i64(k, 0), cg_i64(k, gm->sp), NULL, "j");
  return cg_add(k, base, j);
}

static void bn_close(cg_kernel *k, cg_loop *lb, cg_loop *lj) {
  cg_loop_end(k, lj);
  cg_loop_end(k, lb);
}

/* Binds graph values to kernel arguments, skipping omitted outputs; arg[i] = -1 for those. */
static int bind(kiln_emit_ctx *cx, const int *vals, int n, int *bufs, int *arg) {
  int na = 0;
  for (int i = 0; i < n; i++) {
    arg[i] = -1;
    if (vals[i] < 0) continue;
    arg[i] = na;
    bufs[na++] = cg_buf_value(cx, vals[i]);
  }
  return na;
}

static kiln_code emit_BatchNormTrain(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                                     kiln_err *e) {
  const kiln_value *x = ir_in(g, n, 0);
  bn_geom gm = bn_geometry(x);
  if (gm.c == 0) return KILN_OK;
  double eps = ir_attr_float(n, "epsilon"), momentum = ir_attr_float(n, "momentum");
  bool unbiased = ir_attr_int(n, "unbiased") != 0;
  int vals[10], bufs[10], arg[10];
  for (int i = 0; i < 5; i++) vals[i] = n->in[i];
  for (int o = 0; o < 5; o++) vals[5 + o] = o < n->n_out ? n->out[o] : -1;
  int na = bind(cx, vals, 10, bufs, arg);

  cg_kernel kk;
  cg_kernel *k = &kk;
  KILN_TRY(cg_kernel_begin(cx, k, "batchnorm_train", na, e));
  LLVMBuilderRef b = k->b;
  V X = cg_arg(k, arg[0]);
  V s1 = entry_alloca(k, k->t->f64), s2 = entry_alloca(k, k->t->f64);
  cg_loop lc, lb, lj;
  V ch = cg_loop_begin(k, &lc, k->lo, k->hi, NULL, "c");
  LLVMBuildStore(b, f64c(k, 0), s1);
  V i = bn_open(k, &gm, ch, &lb, &lj);
  acc_add(k, s1, ext(k, ld32(k, X, i)));
  bn_close(k, &lb, &lj);
  V mean = fdiv(k, LLVMBuildLoad2(b, k->t->f64, s1, ""), f64c(k, gm.count));
  LLVMBuildStore(b, f64c(k, 0), s2);
  i = bn_open(k, &gm, ch, &lb, &lj);
  V d = fsub(k, ext(k, ld32(k, X, i)), mean);
  acc_add(k, s2, fmul(k, d, d));
  bn_close(k, &lb, &lj);
  V ss = LLVMBuildLoad2(b, k->t->f64, s2, "");
  V var = fdiv(k, ss, f64c(k, gm.count));
  LLVMTypeRef f64 = k->t->f64;
  V ve = fadd(k, var, f64c(k, eps));
  V sd = cg_intrinsic(k, "llvm.sqrt", &f64, 1, &ve, 1);
  V kf = fdiv(k, ext(k, ld32(k, cg_arg(k, arg[1]), ch)), sd);
  V bias = ext(k, ld32(k, cg_arg(k, arg[2]), ch));
  if (arg[5] >= 0) {
    i = bn_open(k, &gm, ch, &lb, &lj);
    V y = fadd(k, fmul(k, fsub(k, ext(k, ld32(k, X, i)), mean), kf), bias);
    cg_store(k, trunc32(k, y), cg_arg(k, arg[5]), i);
    bn_close(k, &lb, &lj);
  }
  if (arg[6] >= 0) cg_store(k, trunc32(k, mean), cg_arg(k, arg[6]), ch);
  if (arg[7] >= 0) cg_store(k, trunc32(k, fdiv(k, f64c(k, 1.0), sd)), cg_arg(k, arg[7]), ch);
  if (arg[8] >= 0) {
    V rm = ext(k, ld32(k, cg_arg(k, arg[3]), ch));
    V r = fadd(k, fmul(k, rm, f64c(k, momentum)), fmul(k, mean, f64c(k, 1 - momentum)));
    cg_store(k, trunc32(k, r), cg_arg(k, arg[8]), ch);
  }
  if (arg[9] >= 0) {
    V rv = ext(k, ld32(k, cg_arg(k, arg[4]), ch));
    V vr = unbiased ? fdiv(k, ss, f64c(k, gm.count - 1)) : var;
    V r = fadd(k, fmul(k, rv, f64c(k, momentum)), fmul(k, vr, f64c(k, 1 - momentum)));
    cg_store(k, trunc32(k, r), cg_arg(k, arg[9]), ch);
  }
  cg_loop_end(k, &lc);
  return cg_kernel_end(cx, k, gm.c, bufs, e);
}

static kiln_code emit_BatchNormGrad(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                                    kiln_err *e) {
  const kiln_value *x = ir_in(g, n, 0);
  bn_geom gm = bn_geometry(x);
  if (gm.c == 0) return KILN_OK;
  double count = gm.count > 0 ? gm.count : 1; /* an empty batch: the sums are 0 */
  int vals[8], bufs[8], arg[8];
  for (int i = 0; i < 5; i++) vals[i] = n->in[i];
  for (int o = 0; o < 3; o++) vals[5 + o] = o < n->n_out ? n->out[o] : -1;
  int na = bind(cx, vals, 8, bufs, arg);

  cg_kernel kk;
  cg_kernel *k = &kk;
  KILN_TRY(cg_kernel_begin(cx, k, "batchnorm_grad", na, e));
  LLVMBuilderRef b = k->b;
  V X = cg_arg(k, arg[0]), DY = cg_arg(k, arg[4]);
  V s_dy = entry_alloca(k, k->t->f64), s_dyx = entry_alloca(k, k->t->f64);
  cg_loop lc, lb, lj;
  V ch = cg_loop_begin(k, &lc, k->lo, k->hi, NULL, "c");
  V mu = ext(k, ld32(k, cg_arg(k, arg[2]), ch)), is = ext(k, ld32(k, cg_arg(k, arg[3]), ch));
  LLVMBuildStore(b, f64c(k, 0), s_dy);
  LLVMBuildStore(b, f64c(k, 0), s_dyx);
  V i = bn_open(k, &gm, ch, &lb, &lj);
  V dy = ext(k, ld32(k, DY, i));
  V xh = fmul(k, fsub(k, ext(k, ld32(k, X, i)), mu), is);
  acc_add(k, s_dy, dy);
  acc_add(k, s_dyx, fmul(k, dy, xh));
  bn_close(k, &lb, &lj);
  V sdy = LLVMBuildLoad2(b, k->t->f64, s_dy, ""), sdyx = LLVMBuildLoad2(b, k->t->f64, s_dyx, "");
  if (arg[6] >= 0) cg_store(k, trunc32(k, sdyx), cg_arg(k, arg[6]), ch);
  if (arg[7] >= 0) cg_store(k, trunc32(k, sdy), cg_arg(k, arg[7]), ch);
  if (arg[5] >= 0) {
    V a = fmul(k, ext(k, ld32(k, cg_arg(k, arg[1]), ch)), is);
    V mb = fdiv(k, sdy, f64c(k, count)), mx = fdiv(k, sdyx, f64c(k, count));
    i = bn_open(k, &gm, ch, &lb, &lj);
    V dy2 = ext(k, ld32(k, DY, i));
    V xh2 = fmul(k, fsub(k, ext(k, ld32(k, X, i)), mu), is);
    V dx = fmul(k, a, fsub(k, fsub(k, dy2, mb), fmul(k, xh2, mx)));
    cg_store(k, trunc32(k, dx), cg_arg(k, arg[5]), i);
    bn_close(k, &lb, &lj);
  }
  cg_loop_end(k, &lc);
  return cg_kernel_end(cx, k, gm.c, bufs, e);
}

void cg_register_grad_nn(kiln_emit_fn *table) {
  table[KILN_OP_ConvGradWeight] = emit_ConvGradWeight;
  table[KILN_OP_BatchNormTrain] = emit_BatchNormTrain;
  table[KILN_OP_BatchNormGrad] = emit_BatchNormGrad;
}
