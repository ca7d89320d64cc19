/* emit_grad_nn.c — emitters of BatchNormalization's training ops (see codegen/emit.h):
 * BatchNormTrain and BatchNormGrad.  (ConvGradWeight lives in emit_conv_grad.c.)
 *
 * Numerics follow runtime/ref/grad_nn.c: products of floats summed in double, the same
 * double formulas for the statistics and outputs.  Sums are vectorized (reassociated) by
 * LLVM inside one tile, so results differ from the reference's serial sums by rounding
 * only; every output element is computed by exactly one tile with a fixed instruction
 * sequence, so results are bitwise identical for any thread count.  One tile per channel;
 * two passes (statistics, then the elementwise output).
 *
 * The fused forms made by passes/fuse_train_bn.c: BatchNormTrain with activation=relu stores
 * the rectified value (y < 0 ? 0 : y, as Relu); BatchNormGrad with a sixth input Y reads dY
 * as 0 where !(Y > 0) (as Where(Greater(Y, 0), dY, 0)), in both passes, so the masked
 * gradient is never stored. */
#include <string.h>

#include "codegen/emit.h"

typedef LLVMValueRef V;

static V f64c(cg_kernel *k, double v) { return LLVMConstReal(k->t->f64, v); }
static V ext(cg_kernel *k, V x) { return LLVMBuildFPExt(k->b, x, k->t->f64, ""); }
static V trunc32(cg_kernel *k, V x) { return LLVMBuildFPTrunc(k->b, x, k->t->f32, ""); }
static V fadd(cg_kernel *k, V a, V b) { return LLVMBuildFAdd(k->b, a, b, ""); }
static V fsub(cg_kernel *k, V a, V b) { return LLVMBuildFSub(k->b, a, b, ""); }
static V fmul(cg_kernel *k, V a, V b) { return LLVMBuildFMul(k->b, a, b, ""); }
static V fdiv(cg_kernel *k, V a, V b) { return LLVMBuildFDiv(k->b, a, b, ""); }
static V ld32(cg_kernel *k, V base, V idx) { return cg_load(k, k->t->f32, base, idx); }

/* *slot += v, reassociable so the loop vectorizer may split the sum (within one tile). */
static void acc_add(cg_kernel *k, V slot, V v) {
  V s = fadd(k, LLVMBuildLoad2(k->b, k->t->f64, slot, ""), v);
  LLVMSetFastMathFlags(s, LLVMFastMathAllowReassoc);
  LLVMBuildStore(k->b, s, slot);
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
  bool relu = !strcmp(ir_attr_str(n, "activation"), "relu");
  int vals[10], bufs[10], arg[10];
  for (int i = 0; i < 5; i++) vals[i] = n->in[i];
  for (int o = 0; o < 5; o++) vals[5 + o] = o < n->n_out ? n->out[o] : -1;
  int na = bind(cx, vals, 10, bufs, arg);

  cg_kernel kk;
  cg_kernel *k = &kk;
  KILN_TRY(cg_kernel_begin(cx, k, "batchnorm_train", na, e));
  LLVMBuilderRef b = k->b;
  V X = cg_arg(k, arg[0]);
  V s1 = cg_entry_alloca(k, k->t->f64), s2 = cg_entry_alloca(k, k->t->f64);
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
    V y = trunc32(k, fadd(k, fmul(k, fsub(k, ext(k, ld32(k, X, i)), mean), kf), bias));
    if (relu) {
      V zero = LLVMConstReal(k->t->f32, 0.0);
      y = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOLT, y, zero, ""), zero, y, "");
    }
    cg_store(k, y, cg_arg(k, arg[5]), i);
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

/* dY[i] as a double, or 0 where !(Y[i] > 0) when the ReLU output Y is given (Y NULL: none). */
static V grad_in(cg_kernel *k, V DY, V Y, V i) {
  V dy = ld32(k, DY, i);
  if (Y) {
    V zero = LLVMConstReal(k->t->f32, 0.0);
    V pos = LLVMBuildFCmp(k->b, LLVMRealOGT, ld32(k, Y, i), zero, "");
    dy = LLVMBuildSelect(k->b, pos, dy, zero, "");
  }
  return ext(k, dy);
}

static kiln_code emit_BatchNormGrad(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                                    kiln_err *e) {
  const kiln_value *x = ir_in(g, n, 0);
  bn_geom gm = bn_geometry(x);
  if (gm.c == 0) return KILN_OK;
  double count = gm.count > 0 ? gm.count : 1; /* an empty batch: the sums are 0 */
  int vals[9], bufs[9], arg[9];
  for (int i = 0; i < 5; i++) vals[i] = n->in[i];
  for (int o = 0; o < 3; o++) vals[5 + o] = o < n->n_out ? n->out[o] : -1;
  vals[8] = n->n_in > 5 ? n->in[5] : -1;
  int na = bind(cx, vals, 9, bufs, arg);

  cg_kernel kk;
  cg_kernel *k = &kk;
  KILN_TRY(cg_kernel_begin(cx, k, "batchnorm_grad", na, e));
  LLVMBuilderRef b = k->b;
  V X = cg_arg(k, arg[0]), DY = cg_arg(k, arg[4]), Y = arg[8] >= 0 ? cg_arg(k, arg[8]) : NULL;
  V s_dy = cg_entry_alloca(k, k->t->f64), s_dyx = cg_entry_alloca(k, k->t->f64);
  cg_loop lc, lb, lj;
  V ch = cg_loop_begin(k, &lc, k->lo, k->hi, NULL, "c");
  V mu = ext(k, ld32(k, cg_arg(k, arg[2]), ch)), is = ext(k, ld32(k, cg_arg(k, arg[3]), ch));
  LLVMBuildStore(b, f64c(k, 0), s_dy);
  LLVMBuildStore(b, f64c(k, 0), s_dyx);
  V i = bn_open(k, &gm, ch, &lb, &lj);
  V dy = grad_in(k, DY, Y, i);
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
    V dy2 = grad_in(k, DY, Y, i);
    V xh2 = fmul(k, fsub(k, ext(k, ld32(k, X, i)), mu), is);
    V dx = fmul(k, a, fsub(k, fsub(k, dy2, mb), fmul(k, xh2, mx)));
    cg_store(k, trunc32(k, dx), cg_arg(k, arg[5]), i);
    bn_close(k, &lb, &lj);
  }
  cg_loop_end(k, &lc);
  return cg_kernel_end(cx, k, gm.c, bufs, e);
}

void cg_register_grad_nn(kiln_emit_fn *table) {
  table[KILN_OP_BatchNormTrain] = emit_BatchNormTrain;
  table[KILN_OP_BatchNormGrad] = emit_BatchNormGrad;
}
