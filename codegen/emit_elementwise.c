/* emit_elementwise.c — emitters of the elementwise family: each op is only its
 * scalar body; cg_emit_map supplies the loops, broadcasting and tiling.  Dropout,
 * with two outputs and a precomputed random stream, has its own flat kernel.
 *
 * Numerics against runtime/ref/elementwise.c (the oracle):
 *  - integer and bool results are exact: + - * and Neg/Abs wrap (two's complement,
 *    as numpy), Div truncates toward zero, Pow squares-and-multiplies with wrapping;
 *    integer division by zero, an error in the reference, gives 0 here (a kernel
 *    cannot fail);
 *  - float + - * / sqrt, comparisons, Max/Min (NaN propagates as in the reference,
 *    which llvm.maxnum would not), Relu, Clip, Where, Cast and Pow (computed in
 *    double with pow()) are bitwise equal to the reference;
 *  - the activations and transcendental ops compute in float32 with libm's float
 *    functions, within the suite tolerance of the reference's double math;
 *  - Cast float -> int truncates and saturates with NaN -> 0 (llvm.fptosi.sat), as
 *    the reference does. */
#include <math.h>
#include <string.h>

#include "codegen/emit_elementwise.h"
#include "runtime/ref/dropout_rng.h"

typedef LLVMValueRef V;

#define BODY(name)                                                                                 \
  static V name(cg_kernel *k, const kiln_node *n, V *in, const kiln_dtype *dt, void *user)

/* ---- small IR helpers ---- */

static V fcmp(cg_kernel *k, LLVMRealPredicate p, V a, V b) {
  return LLVMBuildFCmp(k->b, p, a, b, "");
}
static V icmp(cg_kernel *k, LLVMIntPredicate p, V a, V b) {
  return LLVMBuildICmp(k->b, p, a, b, "");
}
static V sel(cg_kernel *k, V c, V a, V b) { return LLVMBuildSelect(k->b, c, a, b, ""); }
static V zero_like(V x) { return LLVMConstNull(LLVMTypeOf(x)); }
static V int_like(V x, int64_t v) { return LLVMConstInt(LLVMTypeOf(x), (unsigned long long)v, 1); }
static V fmul(cg_kernel *k, V a, V b) { return LLVMBuildFMul(k->b, a, b, ""); }
static V fadd(cg_kernel *k, V a, V b) { return LLVMBuildFAdd(k->b, a, b, ""); }
static V fdiv(cg_kernel *k, V a, V b) { return LLVMBuildFDiv(k->b, a, b, ""); }

static V intr1(cg_kernel *k, const char *name, V x) {
  LLVMTypeRef t = LLVMTypeOf(x);
  return cg_intrinsic(k, name, &t, 1, &x, 1);
}
static V intr2(cg_kernel *k, const char *name, V a, V b) {
  LLVMTypeRef t = LLVMTypeOf(a);
  return cg_intrinsic(k, name, &t, 1, (V[]){a, b}, 2);
}
/* An allow-listed libm function of one float. */
static V libm1(cg_kernel *k, const char *name, V x) {
  return cg_call_rt(k, name, k->t->f32, &x, 1);
}
static V attr_f(cg_kernel *k, const kiln_node *n, const char *name) {
  return cg_f32(k, ir_attr_float(n, name));
}

/* Any element as double, the reference's ld_d (bool bytes are unsigned). */
static V to_f64(cg_kernel *k, V x, kiln_dtype dt) {
  if (dt == KILN_F32) return LLVMBuildFPExt(k->b, x, k->t->f64, "");
  if (dt == KILN_BOOL) return LLVMBuildUIToFP(k->b, x, k->t->f64, "");
  return LLVMBuildSIToFP(k->b, x, k->t->f64, "");
}
/* Any integer element as int64, the reference's ld_i. */
static V to_i64(cg_kernel *k, V x, kiln_dtype dt) {
  if (dt == KILN_I64) return x;
  if (dt == KILN_BOOL) return LLVMBuildZExt(k->b, x, k->t->i64, "");
  return LLVMBuildSExt(k->b, x, k->t->i64, "");
}
/* double -> integer type `ty`: truncates, saturates, NaN -> 0 (the reference's d_to_int). */
static V sat_to_int(cg_kernel *k, V x, LLVMTypeRef ty) {
  LLVMTypeRef tys[2] = {ty, LLVMTypeOf(x)};
  return cg_intrinsic(k, "llvm.fptosi.sat", tys, 2, &x, 1);
}

/* ---- unary ---- */

BODY(body_identity) { return in[0]; }

/* x < 0 ? 0 : x, as the reference: NaN and -0 pass through. */
BODY(body_relu) {
  if (dt[0] == KILN_F32)
    return sel(k, fcmp(k, LLVMRealOLT, in[0], zero_like(in[0])), zero_like(in[0]), in[0]);
  return sel(k, icmp(k, LLVMIntSLT, in[0], zero_like(in[0])), zero_like(in[0]), in[0]);
}

BODY(body_leakyrelu) {
  V x = in[0];
  return sel(k, fcmp(k, LLVMRealOLT, x, zero_like(x)), fmul(k, attr_f(k, n, "alpha"), x), x);
}

/* min(max(x, lo), hi) as two compares, so NaN passes and lo > hi gives hi. */
BODY(body_clip) {
  V x = in[0];
  V lo = n->n_in > 1 ? in[1] : NULL, hi = n->n_in > 2 ? in[2] : NULL;
  if (dt[0] == KILN_F32) {
    if (n->opset < 11) {
      lo = attr_f(k, n, "min");
      hi = attr_f(k, n, "max");
    }
    if (lo) x = sel(k, fcmp(k, LLVMRealOLT, x, lo), lo, x);
    if (hi) x = sel(k, fcmp(k, LLVMRealOGT, x, hi), hi, x);
    return x;
  }
  if (n->opset < 11)
    return x; /* the float attributes do not apply to integers (as the reference) */
  if (lo) x = sel(k, icmp(k, LLVMIntSLT, x, lo), lo, x);
  if (hi) x = sel(k, icmp(k, LLVMIntSGT, x, hi), hi, x);
  return x;
}

/* exp of a non-positive number only: 1/(1+e^-x) for x >= 0, e^x/(1+e^x) below. */
BODY(body_sigmoid) {
  V x = in[0];
  V ex = libm1(k, "expf", LLVMBuildFNeg(k->b, intr1(k, "llvm.fabs", x), ""));
  V den = fadd(k, cg_f32(k, 1), ex);
  return sel(k, fcmp(k, LLVMRealOGE, x, zero_like(x)), fdiv(k, cg_f32(k, 1), den),
             fdiv(k, ex, den));
}

BODY(body_tanh) { return libm1(k, "tanhf", in[0]); }

/* maxnum/minnum ignore a NaN operand like the reference's fmax/fmin. */
BODY(body_hardsigmoid) {
  V v = fadd(k, fmul(k, attr_f(k, n, "alpha"), in[0]), attr_f(k, n, "beta"));
  return intr2(k, "llvm.maxnum", cg_f32(k, 0), intr2(k, "llvm.minnum", cg_f32(k, 1), v));
}

BODY(body_hardswish) {
  V x = in[0];
  V v = fadd(k, fdiv(k, x, cg_f32(k, 6)), cg_f32(k, 0.5));
  return fmul(k, x,
              intr2(k, "llvm.maxnum", cg_f32(k, 0), intr2(k, "llvm.minnum", cg_f32(k, 1), v)));
}

BODY(body_elu) {
  V x = in[0];
  V neg = fmul(k, attr_f(k, n, "alpha"), libm1(k, "expm1f", x));
  return sel(k, fcmp(k, LLVMRealOLT, x, zero_like(x)), neg, x);
}

BODY(body_selu) {
  V x = in[0];
  V neg = fmul(k, attr_f(k, n, "alpha"), libm1(k, "expm1f", x));
  return fmul(k, attr_f(k, n, "gamma"), sel(k, fcmp(k, LLVMRealOLE, x, zero_like(x)), neg, x));
}

/* log(1 + e^x) = max(x, 0) + log1p(e^-|x|): no overflow for large |x|. */
BODY(body_softplus) {
  V x = in[0];
  V t = libm1(k, "log1pf", libm1(k, "expf", LLVMBuildFNeg(k->b, intr1(k, "llvm.fabs", x), "")));
  return sel(k, fcmp(k, LLVMRealOGT, x, zero_like(x)), fadd(k, x, t), t);
}

BODY(body_softsign) { return fdiv(k, in[0], fadd(k, cg_f32(k, 1), intr1(k, "llvm.fabs", in[0]))); }

BODY(body_sqrt) { return intr1(k, "llvm.sqrt", in[0]); }
BODY(body_exp) { return libm1(k, "expf", in[0]); }
BODY(body_log) { return libm1(k, "logf", in[0]); }
BODY(body_erf) { return libm1(k, "erff", in[0]); }
BODY(body_floor) { return intr1(k, "llvm.floor", in[0]); }
BODY(body_ceil) { return intr1(k, "llvm.ceil", in[0]); }
BODY(body_reciprocal) { return fdiv(k, cg_f32(k, 1), in[0]); }

BODY(body_neg) {
  if (dt[0] == KILN_F32) return LLVMBuildFNeg(k->b, in[0], "");
  return LLVMBuildSub(k->b, zero_like(in[0]), in[0], ""); /* wraps: -INT_MIN == INT_MIN */
}

BODY(body_abs) {
  if (dt[0] == KILN_F32) return intr1(k, "llvm.fabs", in[0]);
  V x = in[0];
  return sel(k, icmp(k, LLVMIntSLT, x, zero_like(x)), LLVMBuildSub(k->b, zero_like(x), x, ""), x);
}

BODY(body_not) { return icmp(k, LLVMIntEQ, in[0], zero_like(in[0])); }

/* ---- binary ---- */

BODY(body_add) {
  return dt[0] == KILN_F32 ? fadd(k, in[0], in[1]) : LLVMBuildAdd(k->b, in[0], in[1], "");
}
BODY(body_sub) {
  return dt[0] == KILN_F32 ? LLVMBuildFSub(k->b, in[0], in[1], "")
                           : LLVMBuildSub(k->b, in[0], in[1], "");
}
BODY(body_mul) {
  return dt[0] == KILN_F32 ? fmul(k, in[0], in[1]) : LLVMBuildMul(k->b, in[0], in[1], "");
}

/* Integers truncate toward zero; x / -1 wraps (no trap on INT_MIN / -1); x / 0 = 0. */
BODY(body_div) {
  if (dt[0] == KILN_F32) return fdiv(k, in[0], in[1]);
  V a = in[0], b = in[1];
  V bz = icmp(k, LLVMIntEQ, b, zero_like(b)), bm1 = icmp(k, LLVMIntEQ, b, int_like(b, -1));
  V safe = sel(k, LLVMBuildOr(k->b, bz, bm1, ""), int_like(b, 1), b);
  V q = sel(k, bm1, LLVMBuildSub(k->b, zero_like(a), a, ""), LLVMBuildSDiv(k->b, a, safe, ""));
  return sel(k, bz, zero_like(a), q);
}

BODY(body_prelu) {
  V x = in[0], s = in[1];
  if (dt[0] == KILN_F32) return sel(k, fcmp(k, LLVMRealOLT, x, zero_like(x)), fmul(k, s, x), x);
  return sel(k, icmp(k, LLVMIntSLT, x, zero_like(x)), LLVMBuildMul(k->b, s, x, ""), x);
}

/* Integer power in int64 by squaring with wrapping; a negative exponent gives what
 * pow() then truncation would (1, +-1 or 0), as the reference. */
static V ipow(cg_kernel *k, V a, V b) {
  LLVMBuilderRef bd = k->b;
  LLVMTypeRef i64 = k->t->i64;
  V one = LLVMConstInt(i64, 1, 0);
  LLVMBasicBlockRef pre = LLVMGetInsertBlock(bd);
  LLVMBasicBlockRef head = LLVMAppendBasicBlockInContext(k->ctx, k->fn, "pow.head");
  LLVMBasicBlockRef step = LLVMAppendBasicBlockInContext(k->ctx, k->fn, "pow.step");
  LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(k->ctx, k->fn, "pow.done");
  LLVMBuildBr(bd, head);
  LLVMPositionBuilderAtEnd(bd, head);
  V r = LLVMBuildPhi(bd, i64, "r"), base = LLVMBuildPhi(bd, i64, "base"),
    ex = LLVMBuildPhi(bd, i64, "ex");
  LLVMAddIncoming(r, &one, &pre, 1);
  LLVMAddIncoming(base, &a, &pre, 1);
  LLVMAddIncoming(ex, &b, &pre, 1);
  LLVMBuildCondBr(bd, icmp(k, LLVMIntSGT, ex, zero_like(ex)), step, done);
  LLVMPositionBuilderAtEnd(bd, step);
  V odd = LLVMBuildTrunc(bd, ex, k->t->i1, "");
  V r2 = sel(k, odd, LLVMBuildMul(bd, r, base, ""), r);
  V base2 = LLVMBuildMul(bd, base, base, "");
  V ex2 = LLVMBuildLShr(bd, ex, one, "");
  LLVMAddIncoming(r, &r2, &step, 1);
  LLVMAddIncoming(base, &base2, &step, 1);
  LLVMAddIncoming(ex, &ex2, &step, 1);
  LLVMBuildBr(bd, head);
  LLVMPositionBuilderAtEnd(bd, done);
  V neg_exp = sel(k, icmp(k, LLVMIntEQ, a, one), one,
                  sel(k, icmp(k, LLVMIntEQ, a, LLVMConstInt(i64, (unsigned long long)-1, 1)),
                      sel(k, LLVMBuildTrunc(bd, b, k->t->i1, ""),
                          LLVMConstInt(i64, (unsigned long long)-1, 1), one),
                      zero_like(a)));
  return sel(k, icmp(k, LLVMIntSLT, b, zero_like(b)), neg_exp, r);
}

/* The result has the base's dtype.  With a float operand: pow() in double, then rounded
 * (float) or truncated and saturated (integers), exactly the reference's path. */
BODY(body_pow) {
  if (dt[0] == KILN_F32 || dt[1] == KILN_F32) {
    V args[2] = {to_f64(k, in[0], dt[0]), to_f64(k, in[1], dt[1])};
    V p = cg_call_rt(k, "pow", k->t->f64, args, 2);
    if (dt[0] == KILN_F32) return LLVMBuildFPTrunc(k->b, p, k->t->f32, "");
    return sat_to_int(k, p, cg_dtype(k, dt[0]));
  }
  V r = ipow(k, to_i64(k, in[0], dt[0]), to_i64(k, in[1], dt[1]));
  return dt[0] == KILN_I64 ? r : LLVMBuildTrunc(k->b, r, cg_dtype(k, dt[0]), "");
}

/* Comparisons: ordered (false with NaN), as C's == > <; bool and ints compare as integers. */
static V compare(cg_kernel *k, const kiln_dtype *dt, V a, V b, LLVMRealPredicate fp,
                 LLVMIntPredicate ip) {
  return dt[0] == KILN_F32 ? fcmp(k, fp, a, b) : icmp(k, ip, a, b);
}
BODY(body_equal) { return compare(k, dt, in[0], in[1], LLVMRealOEQ, LLVMIntEQ); }
BODY(body_greater) { return compare(k, dt, in[0], in[1], LLVMRealOGT, LLVMIntSGT); }
BODY(body_less) { return compare(k, dt, in[0], in[1], LLVMRealOLT, LLVMIntSLT); }

/* ---- variadic: folded left to right in input order, as the reference ---- */

/* max: isnan(a) || a > b ? a : b; min likewise with <.  NaN propagates from either side. */
static V fold_max(cg_kernel *k, kiln_dtype dt, V a, V b, bool is_max) {
  if (dt != KILN_F32) return sel(k, icmp(k, is_max ? LLVMIntSGT : LLVMIntSLT, a, b), a, b);
  V keep = LLVMBuildOr(k->b, fcmp(k, LLVMRealUNO, a, a),
                       fcmp(k, is_max ? LLVMRealOGT : LLVMRealOLT, a, b), "");
  return sel(k, keep, a, b);
}

BODY(body_sum) {
  V acc = in[0];
  for (int i = 1; i < n->n_in; i++)
    acc = dt[0] == KILN_F32 ? fadd(k, acc, in[i]) : LLVMBuildAdd(k->b, acc, in[i], "");
  return acc;
}
BODY(body_mean) { return fdiv(k, body_sum(k, n, in, dt, user), cg_f32(k, (float)n->n_in)); }
BODY(body_max) {
  V acc = in[0];
  for (int i = 1; i < n->n_in; i++)
    acc = fold_max(k, dt[0], acc, in[i], true);
  return acc;
}
BODY(body_min) {
  V acc = in[0];
  for (int i = 1; i < n->n_in; i++)
    acc = fold_max(k, dt[0], acc, in[i], false);
  return acc;
}

BODY(body_where) { return sel(k, icmp(k, LLVMIntNE, in[0], zero_like(in[0])), in[1], in[2]); }

/* ---- Cast ---- */

BODY(body_cast) {
  kiln_dtype from = dt[0], to = (kiln_dtype)ir_attr_int(n, "to");
  V x = in[0];
  LLVMTypeRef ty = cg_dtype(k, to);
  if (to == KILN_BOOL) /* nonzero is true; NaN too, as numpy */
    return from == KILN_F32 ? fcmp(k, LLVMRealUNE, x, zero_like(x))
                            : icmp(k, LLVMIntNE, x, zero_like(x));
  if (from == KILN_F32) return to == KILN_F32 ? x : sat_to_int(k, x, ty);
  if (to == KILN_F32)
    return from == KILN_BOOL ? LLVMBuildUIToFP(k->b, x, ty, "") : LLVMBuildSIToFP(k->b, x, ty, "");
  /* integer -> integer: widen as the reference reads (bool bytes unsigned), keep the low bits */
  V w = to_i64(k, x, from);
  return to == KILN_I64 ? w : LLVMBuildTrunc(k->b, w, ty, "");
}

/* ---- Dropout ----
 * Inference (no training_mode input, a false one, ratio 0, or opset < 12, where the
 * compiled program never trains): y = x and an all-true mask.  When training_mode may be
 * true the mask must equal the reference's bit for bit: it draws from MT19937 like numpy's
 * legacy RandomState, seeded by the node's `seed` plus the run's seed — a compiled program
 * has no run seed, so 0, as the reference's conformance run uses.  The graph is static and
 * the seed fixed, so the stream is drawn here at compile time: the keep bytes when the ratio
 * is a constant, else the uniforms (8 bytes per element) compared with the ratio read at
 * run time. */

/* The compile-time random stream: keep bytes for a known ratio, else uniforms. -1 on error. */
static int dropout_stream(kiln_emit_ctx *cx, const kiln_node *n, int64_t numel, bool ratio_known,
                          double ratio, kiln_err *e) {
  size_t es = ratio_known ? 1 : sizeof(double);
  kiln_mt19937 *mt = kiln_malloc(sizeof *mt);
  void *buf = kiln_malloc((size_t)numel * es);
  if (!mt || !buf) {
    kiln_free(mt);
    kiln_free(buf);
    kiln_errf(e, KILN_ERR_NOMEM, "out of memory (Dropout mask of %lld elements)", (long long)numel);
    return -1;
  }
  kiln_mt_seed(mt, kiln_dropout_seed(n, 0));
  for (int64_t i = 0; i < numel; i++) {
    double u = kiln_mt_uniform(mt);
    if (ratio_known)
      ((uint8_t *)buf)[i] = u >= ratio;
    else
      ((double *)buf)[i] = u;
  }
  int id = cg_buf_const(cx, buf, (size_t)numel * es, e);
  kiln_free(mt);
  kiln_free(buf);
  return id;
}

#define DROPOUT_TILE 16384

static kiln_code emit_Dropout(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                              kiln_err *e) {
  const kiln_value *x = ir_in(g, n, 0), *mv = ir_out(g, n, 1);
  int64_t numel;
  kiln_shape_numel(&x->shape, &numel);
  if (numel == 0) return KILN_OK;
  /* can this node train?  Only from opset 12, through a training_mode input */
  const kiln_value *rv = n->opset >= 12 ? ir_in(g, n, 1) : NULL;
  const kiln_value *tv = n->opset >= 12 ? ir_in(g, n, 2) : NULL;
  const kiln_tensor *rc = rv ? ir_in_const(g, n, 1) : NULL, *tc = tv ? ir_in_const(g, n, 2) : NULL;
  bool ratio_known = !rv || rc;
  double ratio = rc ? kiln_tensor_get_f(rc, 0) : 0.5;
  bool may_train = tv && !(tc && kiln_tensor_get_i(tc, 0) == 0) && !(ratio_known && ratio == 0);
  int stream = -1;
  if (may_train && (stream = dropout_stream(cx, n, numel, ratio_known, ratio, e)) < 0)
    return e->code;

  /* args: x, y, mask (or none), ratio, training_mode, stream */
  int bufs[6] = {n->in[0],           n->out[0],          mv ? n->out[1] : -1,
                 rv ? n->in[1] : -1, tv ? n->in[2] : -1, stream};
  cg_kernel k;
  KILN_TRY(cg_kernel_begin(cx, &k, "dropout", 6, e));
  LLVMBuilderRef b = k.b;
  const cg_types *t = k.t;
  V xp = cg_arg(&k, 0), yp = cg_arg(&k, 1), mp = cg_arg(&k, 2);
  V lo = cg_mul(&k, k.lo, cg_i64(&k, DROPOUT_TILE));
  V hi = cg_min(&k, cg_mul(&k, k.hi, cg_i64(&k, DROPOUT_TILE)), cg_i64(&k, numel));
  LLVMBasicBlockRef copy_bb = LLVMAppendBasicBlockInContext(k.ctx, k.fn, "copy");
  LLVMBasicBlockRef end_bb = LLVMAppendBasicBlockInContext(k.ctx, k.fn, "end");
  cg_loop l;
  if (may_train) {
    LLVMBasicBlockRef train_bb = LLVMAppendBasicBlockInContext(k.ctx, k.fn, "train");
    V train = LLVMConstInt(t->i1, 1, 0);
    if (!tc)
      train = icmp(&k, LLVMIntNE, cg_load(&k, t->i8, cg_arg(&k, 4), cg_i64(&k, 0)),
                   LLVMConstInt(t->i8, 0, 0));
    V r = ratio_known ? cg_f32(&k, ratio) : cg_load(&k, t->f32, cg_arg(&k, 3), cg_i64(&k, 0));
    if (!ratio_known) train = LLVMBuildAnd(b, train, fcmp(&k, LLVMRealUNE, r, cg_f32(&k, 0)), "");
    LLVMBuildCondBr(b, train, train_bb, copy_bb);
    LLVMPositionBuilderAtEnd(b, train_bb);
    /* y = (float)keep * x * scale, the reference's order (so -0 and NaN match too).  A ratio
     * outside [0, 1), an error in the reference, just follows this formula here. */
    V scale = fdiv(&k, cg_f32(&k, 1), LLVMBuildFSub(b, cg_f32(&k, 1), r, ""));
    V rd = LLVMBuildFPExt(b, r, t->f64, "");
    V i = cg_loop_begin(&k, &l, lo, hi, NULL, "i");
    V keep = ratio_known ? icmp(&k, LLVMIntNE, cg_load(&k, t->i8, cg_arg(&k, 5), i),
                                LLVMConstInt(t->i8, 0, 0))
                         : fcmp(&k, LLVMRealOGE, cg_load(&k, t->f64, cg_arg(&k, 5), i), rd);
    V y =
        fmul(&k, fmul(&k, LLVMBuildUIToFP(b, keep, t->f32, ""), cg_load(&k, t->f32, xp, i)), scale);
    cg_store(&k, y, yp, i);
    if (mv) cg_store(&k, LLVMBuildZExt(b, keep, t->i8, ""), mp, i); /* opset >= 12: a bool mask */
    cg_loop_end(&k, &l);
    LLVMBuildBr(b, end_bb);
  } else {
    LLVMBuildBr(b, copy_bb);
  }
  LLVMPositionBuilderAtEnd(b, copy_bb);
  V i = cg_loop_begin(&k, &l, lo, hi, NULL, "i");
  cg_store(&k, cg_load(&k, t->f32, xp, i), yp, i);
  if (mv) /* all true: a bool mask, or x's dtype (1.0) before opset 10 */
    cg_store(&k, mv->dtype == KILN_BOOL ? LLVMConstInt(t->i8, 1, 0) : cg_f32(&k, 1), mp, i);
  cg_loop_end(&k, &l);
  LLVMBuildBr(b, end_bb);
  LLVMPositionBuilderAtEnd(b, end_bb);
  return cg_kernel_end(cx, &k, (numel + DROPOUT_TILE - 1) / DROPOUT_TILE, bufs, e);
}

/* ---- registration ---- */

#define MAP_EMITTER(Name, body)                                                                    \
  static kiln_code emit_##Name(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,         \
                               kiln_err *e) {                                                      \
    return cg_emit_map(cx, g, n, body, NULL, e);                                                   \
  }

#define MAP_OPS(X)                                                                                 \
  X(Identity, body_identity)                                                                       \
  X(Relu, body_relu)                                                                               \
  X(LeakyRelu, body_leakyrelu)                                                                     \
  X(Clip, body_clip)                                                                               \
  X(Sigmoid, body_sigmoid)                                                                         \
  X(Tanh, body_tanh)                                                                               \
  X(HardSigmoid, body_hardsigmoid)                                                                 \
  X(HardSwish, body_hardswish)                                                                     \
  X(Elu, body_elu)                                                                                 \
  X(Selu, body_selu)                                                                               \
  X(Softplus, body_softplus)                                                                       \
  X(Softsign, body_softsign)                                                                       \
  X(PRelu, body_prelu)                                                                             \
  X(Add, body_add)                                                                                 \
  X(Sub, body_sub)                                                                                 \
  X(Mul, body_mul)                                                                                 \
  X(Div, body_div)                                                                                 \
  X(Pow, body_pow)                                                                                 \
  X(Sqrt, body_sqrt)                                                                               \
  X(Exp, body_exp)                                                                                 \
  X(Log, body_log)                                                                                 \
  X(Neg, body_neg)                                                                                 \
  X(Abs, body_abs)                                                                                 \
  X(Reciprocal, body_reciprocal)                                                                   \
  X(Floor, body_floor)                                                                             \
  X(Ceil, body_ceil)                                                                               \
  X(Erf, body_erf)                                                                                 \
  X(Sum, body_sum)                                                                                 \
  X(Mean, body_mean)                                                                               \
  X(Max, body_max)                                                                                 \
  X(Min, body_min)                                                                                 \
  X(Equal, body_equal)                                                                             \
  X(Greater, body_greater)                                                                         \
  X(Less, body_less)                                                                               \
  X(Not, body_not)                                                                                 \
  X(Where, body_where)                                                                             \
  X(Cast, body_cast)

MAP_OPS(MAP_EMITTER)

void cg_register_elementwise(kiln_emit_fn *table) {
#define REGISTER(Name, body) table[KILN_OP_##Name] = emit_##Name;
  MAP_OPS(REGISTER)
#undef REGISTER
  table[KILN_OP_Dropout] = emit_Dropout;
}

cg_scalar_body cg_elementwise_body(kiln_op op) {
  switch (op) {
#define BODY_CASE(Name, body)                                                                      \
  case KILN_OP_##Name: return body;
    MAP_OPS(BODY_CASE)
#undef BODY_CASE
  default: return NULL;
  }
}
