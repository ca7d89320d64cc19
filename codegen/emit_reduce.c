/* emit_reduce.c — emitters of the reduce op family: ReduceSum, ReduceMean, ReduceMax,
 * ReduceMin, ReduceSumSquare and ReduceL2 share one emitter, parameterised by the op's
 * accumulator start value, step and finalisation (like the reference's `reducer`).
 *
 * The input's dims are simplified (size-1 dims dropped, adjacent contiguous dims of the
 * same kind merged) into kept dims and reduced dims with constant strides.  When the
 * innermost dim is reduced, each output element folds its elements with a unit-stride
 * inner loop; when it is kept (a run of W contiguous outputs), each reduced position
 * updates W accumulators with a unit-stride loop.  Floats sum in double and integers in
 * int64 like the reference; max/min are exact in the input type.  Tiles are groups of
 * output rows fixed at compile time, and each output element is folded in one fixed
 * order, so results do not depend on the thread count. */
#include <math.h>
#include <string.h>

#include "codegen/emit.h"
#include "ir/ops/reduce.h"

typedef enum red_kind { RK_SUM, RK_MEAN, RK_MAX, RK_MIN, RK_SUMSQ, RK_L2 } red_kind;

typedef struct red_plan {
  red_kind kind;
  kiln_dtype dt;  /* input and output dtype */
  LLVMTypeRef at; /* accumulator type: f64 (float sums), f32 (float max/min), i64 */
  int64_t count;  /* elements folded into each output (mean's divisor) */
  int nk, nr;     /* outer kept dims, reduced dims (after simplification) */
  int64_t kd[KILN_MAX_RANK], ks[KILN_MAX_RANK];
  int64_t rd[KILN_MAX_RANK], rs[KILN_MAX_RANK];
  int64_t W;       /* trailing contiguous kept run (1 when the innermost dim is reduced) */
  int64_t n_outer; /* product of kd */
} red_plan;

static bool is_sum_like(red_kind r) { return r != RK_MAX && r != RK_MIN; }

/* ---- the op's accumulator: start, step, finalisation ---- */

static LLVMValueRef red_start(cg_kernel *k, const red_plan *p) {
  if (p->dt == KILN_F32) {
    if (p->kind == RK_MAX) return cg_f32(k, -INFINITY);
    if (p->kind == RK_MIN) return cg_f32(k, INFINITY);
    return LLVMConstReal(k->t->f64, 0);
  }
  int64_t lo = p->dt == KILN_I32 ? INT32_MIN : INT64_MIN;
  int64_t hi = p->dt == KILN_I32 ? INT32_MAX : INT64_MAX;
  return cg_i64(k, p->kind == RK_MAX ? lo : p->kind == RK_MIN ? hi : 0);
}

/* acc' = step(acc, x) with x as loaded from the input.  `reassoc` lets LLVM vectorize a
 * float sum (the order then is fixed by the compiled code, not by the thread count). */
static LLVMValueRef red_step(cg_kernel *k, const red_plan *p, LLVMValueRef acc, LLVMValueRef x,
                             bool reassoc) {
  LLVMBuilderRef b = k->b;
  if (p->dt == KILN_F32) {
    LLVMTypeRef f32 = k->t->f32;
    if (p->kind == RK_MAX || p->kind == RK_MIN)
      /* NaN-propagating like the reference's isnan(x) || x > acc */
      return cg_intrinsic(k, p->kind == RK_MAX ? "llvm.maximum" : "llvm.minimum", &f32, 1,
                          (LLVMValueRef[]){acc, x}, 2);
    LLVMValueRef xd = LLVMBuildFPExt(b, x, k->t->f64, "");
    if (p->kind == RK_SUMSQ || p->kind == RK_L2) {
      xd = LLVMBuildFMul(b, xd, xd, "");
      if (reassoc) LLVMSetFastMathFlags(xd, LLVMFastMathAllowReassoc);
    }
    LLVMValueRef s = LLVMBuildFAdd(b, acc, xd, "");
    if (reassoc) LLVMSetFastMathFlags(s, LLVMFastMathAllowReassoc);
    return s;
  }
  LLVMTypeRef i64 = k->t->i64;
  if (p->dt != KILN_I64) x = LLVMBuildSExt(b, x, i64, "");
  switch (p->kind) {
  case RK_MAX:
    return cg_intrinsic(k, "llvm.smax", &i64, 1, (LLVMValueRef[]){acc, x}, 2);
  case RK_MIN:
    return cg_intrinsic(k, "llvm.smin", &i64, 1, (LLVMValueRef[]){acc, x}, 2);
  case RK_SUMSQ:
  case RK_L2:
    return LLVMBuildAdd(b, acc, LLVMBuildMul(b, x, x, ""), ""); /* wraps */
  default:
    return LLVMBuildAdd(b, acc, x, "");
  }
}

/* The output element from the accumulator, in the output type. */
static LLVMValueRef red_done(cg_kernel *k, const red_plan *p, LLVMValueRef acc) {
  LLVMBuilderRef b = k->b;
  if (p->dt == KILN_F32) {
    if (!is_sum_like(p->kind)) return acc;
    if (p->kind == RK_MEAN)
      acc = LLVMBuildFDiv(b, acc, LLVMConstReal(k->t->f64, (double)p->count), "");
    if (p->kind == RK_L2) {
      LLVMTypeRef f64 = k->t->f64;
      acc = cg_intrinsic(k, "llvm.sqrt", &f64, 1, &acc, 1);
    }
    return LLVMBuildFPTrunc(b, acc, k->t->f32, "");
  }
  if (p->kind == RK_MEAN)
    acc = p->count ? LLVMBuildSDiv(b, acc, cg_i64(k, p->count), "") : cg_i64(k, 0);
  if (p->kind == RK_L2) {
    LLVMTypeRef f64 = k->t->f64;
    LLVMValueRef d = LLVMBuildSIToFP(b, acc, f64, "");
    d = cg_intrinsic(k, "llvm.sqrt", &f64, 1, &d, 1);
    acc = cg_intrinsic(k, "llvm.fptosi.sat", (LLVMTypeRef[]){k->t->i64, f64}, 2, &d, 1);
  }
  if (p->dt == KILN_I32) acc = LLVMBuildTrunc(b, acc, k->t->i32, "");
  return acc;
}

/* ---- plan ---- */

static void plan_dims(red_plan *p, const kiln_shape *xs, uint32_t mask) {
  int64_t xst[KILN_MAX_RANK];
  kiln_strides(xs, xst);
  /* simplified dims: size, stride, reduced? */
  int64_t sz[KILN_MAX_RANK], sd[KILN_MAX_RANK];
  bool rr[KILN_MAX_RANK];
  int nd = 0;
  p->count = 1;
  for (int i = 0; i < xs->rank; i++) {
    bool red = (mask >> i) & 1u;
    if (red) p->count *= xs->d[i];
    if (xs->d[i] == 1) continue; /* no effect on any index */
    if (nd > 0 && rr[nd - 1] == red && sd[nd - 1] == xs->d[i] * xst[i]) {
      sz[nd - 1] *= xs->d[i];
      sd[nd - 1] = xst[i];
      continue;
    }
    sz[nd] = xs->d[i], sd[nd] = xst[i], rr[nd] = red;
    nd++;
  }
  p->W = 1;
  if (nd > 0 && !rr[nd - 1]) p->W = sz[--nd]; /* the trailing kept run has stride 1 */
  p->nk = p->nr = 0;
  p->n_outer = 1;
  for (int i = 0; i < nd; i++) {
    if (rr[i]) {
      p->rd[p->nr] = sz[i], p->rs[p->nr++] = sd[i];
    } else {
      p->kd[p->nk] = sz[i], p->ks[p->nk++] = sd[i];
      p->n_outer *= sz[i];
    }
  }
}

/* x offset of outer row `o` (row-major over the outer kept dims). */
static LLVMValueRef outer_base(cg_kernel *k, const red_plan *p, LLVMValueRef o) {
  LLVMValueRef off = cg_i64(k, 0), rem = o;
  for (int d = p->nk - 1; d >= 0; d--) {
    LLVMValueRef c = d == 0 ? rem : LLVMBuildSRem(k->b, rem, cg_i64(k, p->kd[d]), "");
    if (d > 0) rem = LLVMBuildSDiv(k->b, rem, cg_i64(k, p->kd[d]), "");
    off = cg_add(k, off, cg_mul(k, c, cg_i64(k, p->ks[d])));
  }
  return off;
}

/* Opens the loops over the reduced dims (outermost first); returns the x offset. */
static LLVMValueRef open_reduced(cg_kernel *k, const red_plan *p, cg_loop *loops,
                                 LLVMValueRef base) {
  LLVMValueRef off = base;
  for (int d = 0; d < p->nr; d++) {
    LLVMValueRef iv = cg_loop_begin(k, &loops[d], cg_i64(k, 0), cg_i64(k, p->rd[d]), NULL, "r");
    off = cg_add(k, off, cg_mul(k, iv, cg_i64(k, p->rs[d])));
  }
  return off;
}

static void close_reduced(cg_kernel *k, const red_plan *p, cg_loop *loops) {
  for (int d = p->nr - 1; d >= 0; d--) cg_loop_end(k, &loops[d]);
}

/* A plain copy (noop_with_empty_axes): the reference copies bytes, so do we. */
static kiln_code emit_copy(kiln_emit_ctx *cx, const kiln_node *n, int64_t numel, size_t esz,
                           kiln_err *e) {
  if (numel == 0) return KILN_OK;
  int64_t bytes = numel * (int64_t)esz, chunk = 1 << 16;
  cg_kernel kk;
  cg_kernel *k = &kk;
  KILN_TRY(cg_kernel_begin(cx, k, "reduce_copy", 2, e));
  cg_loop l;
  LLVMValueRef t = cg_loop_begin(k, &l, k->lo, k->hi, NULL, "t");
  LLVMValueRef off = cg_mul(k, t, cg_i64(k, chunk));
  LLVMValueRef len =
      LLVMBuildSub(k->b, cg_min(k, cg_add(k, off, cg_i64(k, chunk)), cg_i64(k, bytes)), off, "");
  LLVMValueRef src = cg_gep(k, k->t->i8, cg_arg(k, 0), off),
               dst = cg_gep(k, k->t->i8, cg_arg(k, 1), off);
  LLVMBuildMemCpy(k->b, dst, 1, src, 1, len);
  cg_loop_end(k, &l);
  return cg_kernel_end(cx, k, (bytes + chunk - 1) / chunk,
                       (int[]){cg_buf_value(cx, n->in[0]), cg_buf_value(cx, n->out[0])}, e);
}

static kiln_code emit_reduce(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                             red_kind kind, kiln_err *e) {
  const kiln_value *x = ir_in(g, n, 0), *y = ir_out(g, n, 0);
  const kiln_tensor *axes = ir_in(g, n, 1) ? ir_in_const(g, n, 1) : NULL;
  if (ir_in(g, n, 1) && !axes)
    return kiln_errf(e, KILN_ERR_UNSUPPORTED, "the axes input must be a constant");
  uint32_t mask;
  bool noop;
  KILN_TRY(kiln_reduce_axes(n, x->shape.rank, axes, &mask, &noop, e));
  int64_t n_out = 1, numel = 1;
  for (int i = 0; i < y->shape.rank; i++) n_out *= y->shape.d[i];
  for (int i = 0; i < x->shape.rank; i++) numel *= x->shape.d[i];
  if (noop) return emit_copy(cx, n, numel, kiln_dtype_size(x->dtype), e);
  if (n_out == 0) return KILN_OK;

  red_plan p;
  memset(&p, 0, sizeof p);
  p.kind = kind;
  p.dt = x->dtype;
  plan_dims(&p, &x->shape, mask);
  const cg_types *t = cg_t(cx);
  p.at = p.dt == KILN_F32 ? (is_sum_like(kind) ? t->f64 : t->f32) : t->i64;
  /* W > 1 needs W accumulators per row: the output itself when it has the accumulator's
   * type, else scratch (one slot per output element, so tiles never share one). */
  bool acc_in_y = (p.dt == KILN_F32 && !is_sum_like(kind)) || p.dt == KILN_I64;
  int bufs[3] = {cg_buf_value(cx, n->in[0]), cg_buf_value(cx, n->out[0]), -1};
  int n_bufs = 2;
  if (p.W > 1 && !acc_in_y) {
    bufs[2] = cg_buf_scratch(cx, 8 * (size_t)n_out, e);
    if (bufs[2] < 0) return e->code ? e->code : KILN_ERR_NOMEM;
    n_bufs = 3;
  }
  /* Work items: outer rows, each split into chunks of the kept run when there are too few
   * rows to go around (e.g. a reduction over axis 0 of [N, W]); tiles group items. */
  int64_t wc = p.W, n_wc = 1;
  if (p.W > 1 && p.n_outer < 16 && p.W * p.count >= 32768) {
    int64_t split = (16 + p.n_outer - 1) / p.n_outer;
    wc = ((p.W + split - 1) / split + 15) / 16 * 16;
    n_wc = (p.W + wc - 1) / wc;
  }
  int64_t items = p.n_outer * n_wc;
  int64_t item_work = wc * (p.count ? p.count : 1);
  int64_t ipt = item_work >= 16384 ? 1 : 16384 / item_work;
  if (ipt > items) ipt = items;
  int64_t n_tiles = (items + ipt - 1) / ipt;

  cg_kernel kk;
  cg_kernel *k = &kk;
  char label[64];
  snprintf(label, sizeof label, "reduce_%s", n->def->name);
  KILN_TRY(cg_kernel_begin(cx, k, label, n_bufs, e));
  LLVMTypeRef xt = cg_dtype(k, p.dt);
  LLVMValueRef X = cg_arg(k, 0), Y = cg_arg(k, 1);
  cg_loop lo, lw, loops[KILN_MAX_RANK];
  LLVMValueRef item =
      cg_loop_begin(k, &lo, cg_mul(k, k->lo, cg_i64(k, ipt)),
                    cg_min(k, cg_mul(k, k->hi, cg_i64(k, ipt)), cg_i64(k, items)), NULL, "item");
  LLVMValueRef o = n_wc == 1 ? item : LLVMBuildSDiv(k->b, item, cg_i64(k, n_wc), "");
  LLVMValueRef base = outer_base(k, &p, o);
  if (p.W == 1) {
    LLVMValueRef slot = cg_entry_alloca(k, p.at);
    LLVMBuildStore(k->b, red_start(k, &p), slot);
    LLVMValueRef off = open_reduced(k, &p, loops, base);
    LLVMValueRef acc = LLVMBuildLoad2(k->b, p.at, slot, "");
    LLVMBuildStore(k->b, red_step(k, &p, acc, cg_load(k, xt, X, off), true), slot);
    close_reduced(k, &p, loops);
    cg_store(k, red_done(k, &p, LLVMBuildLoad2(k->b, p.at, slot, "")), Y, o);
  } else {
    LLVMValueRef A = acc_in_y ? Y : cg_arg(k, 2);
    LLVMValueRef w_lo = cg_i64(k, 0), w_hi = cg_i64(k, p.W);
    if (n_wc > 1) {
      w_lo = cg_mul(k, LLVMBuildSRem(k->b, item, cg_i64(k, n_wc), ""), cg_i64(k, wc));
      w_hi = cg_min(k, cg_add(k, w_lo, cg_i64(k, wc)), cg_i64(k, p.W));
    }
    LLVMValueRef a0 = cg_mul(k, o, cg_i64(k, p.W));
    LLVMValueRef w = cg_loop_begin(k, &lw, w_lo, w_hi, NULL, "w");
    cg_store(k, red_start(k, &p), A, cg_add(k, a0, w));
    cg_loop_end(k, &lw);
    LLVMValueRef off = open_reduced(k, &p, loops, base);
    w = cg_loop_begin(k, &lw, w_lo, w_hi, NULL, "w");
    LLVMValueRef ai = cg_add(k, a0, w);
    LLVMValueRef xv = cg_load(k, xt, X, cg_add(k, off, w));
    cg_store(k, red_step(k, &p, cg_load(k, p.at, A, ai), xv, false), A, ai);
    cg_loop_end(k, &lw);
    close_reduced(k, &p, loops);
    if (!acc_in_y || p.kind == RK_MEAN || p.kind == RK_L2) {
      w = cg_loop_begin(k, &lw, w_lo, w_hi, NULL, "w");
      ai = cg_add(k, a0, w);
      cg_store(k, red_done(k, &p, cg_load(k, p.at, A, ai)), Y, ai);
      cg_loop_end(k, &lw);
    }
  }
  cg_loop_end(k, &lo);
  return cg_kernel_end(cx, k, n_tiles, bufs, e);
}

#define REDUCE_EMITTER(Op, kind)                                                                   \
  static kiln_code emit_##Op(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,           \
                             kiln_err *e) {                                                        \
    return emit_reduce(cx, g, n, kind, e);                                                         \
  }

REDUCE_EMITTER(ReduceSum, RK_SUM)
REDUCE_EMITTER(ReduceMean, RK_MEAN)
REDUCE_EMITTER(ReduceMax, RK_MAX)
REDUCE_EMITTER(ReduceMin, RK_MIN)
REDUCE_EMITTER(ReduceSumSquare, RK_SUMSQ)
REDUCE_EMITTER(ReduceL2, RK_L2)

void cg_register_reduce(kiln_emit_fn *table) {
  table[KILN_OP_ReduceSum] = emit_ReduceSum;
  table[KILN_OP_ReduceMean] = emit_ReduceMean;
  table[KILN_OP_ReduceMax] = emit_ReduceMax;
  table[KILN_OP_ReduceMin] = emit_ReduceMin;
  table[KILN_OP_ReduceSumSquare] = emit_ReduceSumSquare;
  table[KILN_OP_ReduceL2] = emit_ReduceL2;
}
