/* emit_conv_grad.c — the emitter of kiln.ConvGradWeight, the weight gradient of Conv
 * (see codegen/emit.h).
 *
 * Numerics follow runtime/ref/grad_nn.c: products of floats summed in double.  Sums are
 * vectorized (reassociated) by LLVM inside one tile, so results differ from the
 * reference's serial sums by rounding only; every output element is computed by exactly
 * one tile with a fixed instruction sequence, so results are bitwise identical for any
 * thread count.  One tile per (output channel, input channel of its group) pair; each
 * weight element is one double sum over (n, od, oh, ow) with the output positions that tap
 * reaches computed once per tap (as the reference's tap_range), a unit-stride inner loop
 * over ow for stride 1. */
#include <string.h>

#include "codegen/emit.h"
#include "ir/ops/nn_window.h"

typedef LLVMValueRef V;

static V f64c(cg_kernel *k, double v) { return LLVMConstReal(k->t->f64, v); }
static V trunc32(cg_kernel *k, V x) { return LLVMBuildFPTrunc(k->b, x, k->t->f32, ""); }
static V ld32(cg_kernel *k, V base, V idx) { return cg_load(k, k->t->f32, base, idx); }

/* ---- ConvGradWeight ----
 * dW[oc, ic, tap] = sum over n and output positions o of dY[n, oc, o] * Xp[n, ic, o*s + tap*d]
 * (Xp: X zero-padded).  Both operands are laid out so that, for one tap, this is a dot
 * product of two contiguous runs:
 *  - Xq: Xp split into stride phases per dim (Xq[ph][i] = Xp[i*s + ph]); tap k reads phase
 *    (k*d) % s from offset (k*d) / s, so positions (od, oh, ow) of one tap are contiguous
 *    with pitches (Hq*Wq, Wq) of the phase grid.  X itself when there are no pads and
 *    strides are 1.
 *  - dYq: dY with the same pitches, zeros in the columns/rows beyond the output (they meet
 *    X values no real position reads).  dY itself when the pitches already agree.
 * Over L = (OD-1)*Hq*Wq + (OH-1)*Wq + OW elements (the last one masked to the vector width),
 * a register block of RO output x RI input channels keeps RO*RI vector accumulators (float,
 * one fused multiply-add per element); after each image and tap they are reduced in lane
 * order into double sums (a scratch slot per weight element), stored as float at the end. */

typedef struct cgw_plan {
  int64_t batch, c, m, group, cg, mg;
  nn_window t;
  int64_t q[3];          /* phase-grid sizes Dq, Hq, Wq */
  int64_t n_phase, xq;   /* phases, floats per (n, c) of Xq */
  int64_t dyq;           /* floats per (n, m) of dYq: OD*Hq*Wq */
  int64_t len;           /* L */
  bool pack_x, pack_dy;
  int vw, ro, ri;
} cgw_plan;

static int64_t div_up(int64_t a, int64_t b) { return (a + b - 1) / b; }

static int largest_divisor(int64_t n, int max) {
  for (int r = max; r > 1; r--)
    if (n % r == 0) return r;
  return 1;
}

/* Loads base[idx] where `ok`, else 0, without touching memory out of range (idx clamped). */
static V load_or_zero(cg_kernel *k, V base, V idx, V ok, V fallback_idx) {
  V v = ld32(k, base, cg_select(k, ok, idx, fallback_idx));
  return cg_select(k, ok, v, cg_f32(k, 0));
}

static V in_range(cg_kernel *k, V v, int64_t n) {
  LLVMBuilderRef b = k->b;
  return LLVMBuildAnd(b, LLVMBuildICmp(b, LLVMIntSGE, v, cg_i64(k, 0), ""),
                      LLVMBuildICmp(b, LLVMIntSLT, v, cg_i64(k, n), ""), "");
}

/* Xq from X: one tile per (n, c). */
static kiln_code cgw_pack_x(kiln_emit_ctx *cx, const cgw_plan *p, int x_buf, int xq_buf,
                            kiln_err *e) {
  const nn_window *t = &p->t;
  int64_t in_plane = t->in[0] * t->in[1] * t->in[2];
  cg_kernel kk;
  cg_kernel *k = &kk;
  KILN_TRY(cg_kernel_begin(cx, k, "conv_grad_weight_pack_x", 2, e));
  LLVMBuilderRef b = k->b;
  V X = cg_arg(k, 0), XQ = cg_arg(k, 1);
  cg_loop lt, lph[3], li[3];
  V tile = cg_loop_begin(k, &lt, k->lo, k->hi, NULL, "plane");
  V src0 = cg_mul(k, tile, cg_i64(k, in_plane));
  V dst = cg_mul(k, tile, cg_i64(k, p->xq));
  V ph[3], pos[3];
  for (int d = 0; d < 3; d++)
    ph[d] = cg_loop_begin(k, &lph[d], cg_i64(k, 0), cg_i64(k, t->stride[d]), NULL, "phase");
  V phase = cg_add(k, cg_mul(k, cg_add(k, cg_mul(k, ph[0], cg_i64(k, t->stride[1])), ph[1]),
                             cg_i64(k, t->stride[2])), ph[2]);
  V pbase = cg_add(k, dst, cg_mul(k, phase, cg_i64(k, p->q[0] * p->q[1] * p->q[2])));
  V ok = LLVMConstInt(k->t->i1, 1, 0), src = src0, didx = cg_i64(k, 0);
  int64_t src_pitch[3] = {t->in[1] * t->in[2], t->in[2], 1};
  int64_t dst_pitch[3] = {p->q[1] * p->q[2], p->q[2], 1};
  for (int d = 0; d < 3; d++) {
    V i = cg_loop_begin(k, &li[d], cg_i64(k, 0), cg_i64(k, p->q[d]), NULL, "i");
    pos[d] = LLVMBuildSub(b, cg_add(k, cg_mul(k, i, cg_i64(k, t->stride[d])), ph[d]),
                          cg_i64(k, t->pad_begin[d]), "");
    ok = LLVMBuildAnd(b, ok, in_range(k, pos[d], t->in[d]), "");
    src = cg_add(k, src, cg_mul(k, pos[d], cg_i64(k, src_pitch[d])));
    didx = cg_add(k, didx, cg_mul(k, i, cg_i64(k, dst_pitch[d])));
  }
  cg_store(k, load_or_zero(k, X, src, ok, src0), XQ, cg_add(k, pbase, didx));
  for (int d = 2; d >= 0; d--) cg_loop_end(k, &li[d]);
  for (int d = 2; d >= 0; d--) cg_loop_end(k, &lph[d]);
  cg_loop_end(k, &lt);
  return cg_kernel_end(cx, k, p->batch * p->c, (int[]){x_buf, xq_buf}, e);
}

/* dYq from dY: one tile per (n, m). */
static kiln_code cgw_pack_dy(kiln_emit_ctx *cx, const cgw_plan *p, int dy_buf, int dyq_buf,
                             kiln_err *e) {
  const nn_window *t = &p->t;
  int64_t out_plane = t->out[0] * t->out[1] * t->out[2];
  cg_kernel kk;
  cg_kernel *k = &kk;
  KILN_TRY(cg_kernel_begin(cx, k, "conv_grad_weight_pack_dy", 2, e));
  LLVMBuilderRef b = k->b;
  V DY = cg_arg(k, 0), DYQ = cg_arg(k, 1);
  cg_loop lt, l0, l1, l2;
  V tile = cg_loop_begin(k, &lt, k->lo, k->hi, NULL, "plane");
  V src0 = cg_mul(k, tile, cg_i64(k, out_plane)), dst0 = cg_mul(k, tile, cg_i64(k, p->dyq));
  V od = cg_loop_begin(k, &l0, cg_i64(k, 0), cg_i64(k, t->out[0]), NULL, "od");
  V oh = cg_loop_begin(k, &l1, cg_i64(k, 0), cg_i64(k, p->q[1]), NULL, "oh");
  V ow = cg_loop_begin(k, &l2, cg_i64(k, 0), cg_i64(k, p->q[2]), NULL, "ow");
  V ok = LLVMBuildAnd(b, LLVMBuildICmp(b, LLVMIntSLT, oh, cg_i64(k, t->out[1]), ""),
                      LLVMBuildICmp(b, LLVMIntSLT, ow, cg_i64(k, t->out[2]), ""), "");
  V src = cg_add(k, src0, cg_add(k, cg_mul(k, cg_add(k, cg_mul(k, od, cg_i64(k, t->out[1])), oh),
                                           cg_i64(k, t->out[2])), ow));
  V dst = cg_add(k, dst0, cg_add(k, cg_mul(k, cg_add(k, cg_mul(k, od, cg_i64(k, p->q[1])), oh),
                                           cg_i64(k, p->q[2])), ow));
  cg_store(k, load_or_zero(k, DY, src, ok, src0), DYQ, dst);
  cg_loop_end(k, &l2);
  cg_loop_end(k, &l1);
  cg_loop_end(k, &l0);
  cg_loop_end(k, &lt);
  return cg_kernel_end(cx, k, p->batch * p->m, (int[]){dy_buf, dyq_buf}, e);
}

#define CGW_MAX_RO 4
#define CGW_MAX_RI 4

/* The main kernel: one tile per (group, block of RO output channels, block of RI input
 * channels); args Xq, dYq, dW, double scratch (one slot per weight element). */
static kiln_code cgw_main(kiln_emit_ctx *cx, const cgw_plan *p, const int *bufs, kiln_err *e) {
  const nn_window *t = &p->t;
  int vw = p->vw, ro = p->ro, ri = p->ri;
  int64_t kvol = t->kernel[0] * t->kernel[1] * t->kernel[2];
  int64_t nob = p->mg / ro, nib = p->cg / ri;
  int64_t n_full = p->len / vw;
  int tail = (int)(p->len % vw);
  cg_kernel kk;
  cg_kernel *k = &kk;
  KILN_TRY(cg_kernel_begin(cx, k, "conv_grad_weight", 4, e));
  LLVMBuilderRef b = k->b;
  LLVMTypeRef vty = LLVMVectorType(k->t->f32, (unsigned)vw);
  LLVMTypeRef dvty = LLVMVectorType(k->t->f64, (unsigned)vw);
  V XQ = cg_arg(k, 0), DYQ = cg_arg(k, 1), DW = cg_arg(k, 2), ACC = cg_arg(k, 3);
  V acc[CGW_MAX_RO][CGW_MAX_RI];
  for (int r = 0; r < ro; r++)
    for (int s = 0; s < ri; s++) acc[r][s] = cg_entry_alloca(k, vty);

  cg_loop lt, lz, ln, lk[3], li, ls;
  V tile = cg_loop_begin(k, &lt, k->lo, k->hi, NULL, "tile");
  V grp = LLVMBuildSDiv(b, tile, cg_i64(k, nob * nib), "");
  V rem = LLVMBuildSRem(b, tile, cg_i64(k, nob * nib), "");
  V oc0 = cg_add(k, cg_mul(k, grp, cg_i64(k, p->mg)),
                 cg_mul(k, LLVMBuildSDiv(b, rem, cg_i64(k, nib), ""), cg_i64(k, ro)));
  V icl0 = cg_mul(k, LLVMBuildSRem(b, rem, cg_i64(k, nib), ""), cg_i64(k, ri)); /* in group */
  V ic0 = cg_add(k, cg_mul(k, grp, cg_i64(k, p->cg)), icl0);
  /* weight element (oc0 + r, icl0 + s, tap) at ((oc0 + r) * cg + icl0 + s) * kvol + tap */
  V wb[CGW_MAX_RO][CGW_MAX_RI];
  for (int r = 0; r < ro; r++)
    for (int s = 0; s < ri; s++)
      wb[r][s] = cg_mul(k, cg_add(k, cg_mul(k, cg_add(k, oc0, cg_i64(k, r)), cg_i64(k, p->cg)),
                                  cg_add(k, icl0, cg_i64(k, s))),
                        cg_i64(k, kvol));
  V z = cg_loop_begin(k, &lz, cg_i64(k, 0), cg_i64(k, kvol), NULL, "z");
  for (int r = 0; r < ro; r++)
    for (int s = 0; s < ri; s++) cg_store(k, f64c(k, 0), ACC, cg_add(k, wb[r][s], z));
  cg_loop_end(k, &lz);

  V n = cg_loop_begin(k, &ln, cg_i64(k, 0), cg_i64(k, p->batch), NULL, "n");
  V kv[3];
  for (int d = 0; d < 3; d++)
    kv[d] = cg_loop_begin(k, &lk[d], cg_i64(k, 0), cg_i64(k, t->kernel[d]), NULL, "tap");
  /* phase and offset of the tap in each dim */
  V phase = cg_i64(k, 0), off = cg_i64(k, 0);
  int64_t pitch[3] = {p->q[1] * p->q[2], p->q[2], 1};
  for (int d = 0; d < 3; d++) {
    V kd = cg_mul(k, kv[d], cg_i64(k, t->dilation[d]));
    V ph = LLVMBuildSRem(b, kd, cg_i64(k, t->stride[d]), "");
    V qo = LLVMBuildSDiv(b, kd, cg_i64(k, t->stride[d]), "");
    phase = cg_add(k, cg_mul(k, phase, cg_i64(k, t->stride[d])), ph);
    off = cg_add(k, off, cg_mul(k, qo, cg_i64(k, pitch[d])));
  }
  V tap = cg_add(k, cg_mul(k, cg_add(k, cg_mul(k, kv[0], cg_i64(k, t->kernel[1])), kv[1]),
                           cg_i64(k, t->kernel[2])), kv[2]);
  off = cg_add(k, off, cg_mul(k, phase, cg_i64(k, p->q[0] * p->q[1] * p->q[2])));
  V xrow[CGW_MAX_RI], dyrow[CGW_MAX_RO];
  for (int s = 0; s < ri; s++)
    xrow[s] = cg_add(k, cg_mul(k, cg_add(k, cg_mul(k, n, cg_i64(k, p->c)),
                                         cg_add(k, ic0, cg_i64(k, s))),
                               cg_i64(k, p->xq)),
                     off);
  for (int r = 0; r < ro; r++)
    dyrow[r] = cg_mul(k, cg_add(k, cg_mul(k, n, cg_i64(k, p->m)), cg_add(k, oc0, cg_i64(k, r))),
                      cg_i64(k, p->dyq));
  for (int r = 0; r < ro; r++)
    for (int s = 0; s < ri; s++) LLVMBuildStore(b, LLVMConstNull(vty), acc[r][s]);
  /* the dot products: full vectors, then the masked tail */
  for (int pass = 0; pass < 2; pass++) {
    int lanes = pass == 0 ? vw : tail;
    if (lanes == 0 || (pass == 0 && n_full == 0)) continue;
    V i;
    if (pass == 0)
      i = cg_mul(k, cg_loop_begin(k, &li, cg_i64(k, 0), cg_i64(k, n_full), NULL, "v"),
                 cg_i64(k, vw));
    else
      i = cg_i64(k, n_full * vw);
    V xv[CGW_MAX_RI], dv[CGW_MAX_RO];
    for (int s = 0; s < ri; s++) xv[s] = cg_vload(k, XQ, cg_add(k, xrow[s], i), vw, lanes);
    for (int r = 0; r < ro; r++) dv[r] = cg_vload(k, DYQ, cg_add(k, dyrow[r], i), vw, lanes);
    for (int r = 0; r < ro; r++)
      for (int s = 0; s < ri; s++) {
        V a = LLVMBuildLoad2(b, vty, acc[r][s], "");
        V f = cg_intrinsic(k, "llvm.fma", &vty, 1, (V[]){dv[r], xv[s], a}, 3);
        LLVMBuildStore(b, f, acc[r][s]);
      }
    if (pass == 0) cg_loop_end(k, &li);
  }
  /* lanes in order into the double sums */
  for (int r = 0; r < ro; r++)
    for (int s = 0; s < ri; s++) {
      V slot = cg_add(k, wb[r][s], tap);
      V a = LLVMBuildFPExt(b, LLVMBuildLoad2(b, vty, acc[r][s], ""), dvty, "");
      V sum = cg_intrinsic(k, "llvm.vector.reduce.fadd", &dvty, 1,
                           (V[]){cg_load(k, k->t->f64, ACC, slot), a}, 2);
      cg_store(k, sum, ACC, slot);
    }
  for (int d = 2; d >= 0; d--) cg_loop_end(k, &lk[d]);
  cg_loop_end(k, &ln);

  V zz = cg_loop_begin(k, &ls, cg_i64(k, 0), cg_i64(k, kvol), NULL, "z");
  for (int r = 0; r < ro; r++)
    for (int s = 0; s < ri; s++) {
      V slot = cg_add(k, wb[r][s], zz);
      cg_store(k, trunc32(k, cg_load(k, k->t->f64, ACC, slot)), DW, slot);
    }
  cg_loop_end(k, &ls);
  cg_loop_end(k, &lt);
  return cg_kernel_end(cx, k, p->group * nob * nib, bufs, e);
}

static kiln_code emit_ConvGradWeight(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                                     kiln_err *e) {
  const kiln_value *x = ir_in(g, n, 0), *dy = ir_in(g, n, 1), *dw = ir_out(g, n, 0);
  const int64_t *ks;
  ir_attr_ints(n, "kernel_shape", &ks);
  nn_window win;
  KILN_TRY(nn_window_forward(n, &x->shape, x->name, ks, false, &win, e));
  cgw_plan p;
  memset(&p, 0, sizeof p);
  p.t = nn_window_3d(&win);
  const nn_window *t = &p.t;
  p.batch = x->shape.d[0], p.c = x->shape.d[1], p.m = dy->shape.d[1];
  p.group = ir_attr_int(n, "group");
  p.cg = p.c / p.group, p.mg = p.m / p.group;
  int64_t n_dw;
  if (!kiln_shape_numel(&dw->shape, &n_dw) || n_dw == 0) return KILN_OK;
  p.pack_x = false;
  p.n_phase = 1;
  for (int d = 0; d < 3; d++) {
    if (t->stride[d] != 1 || t->pad_begin[d] != 0 || t->pad_end[d] != 0) p.pack_x = true;
    p.q[d] = div_up(t->in[d] + t->pad_begin[d] + t->pad_end[d], t->stride[d]);
    p.n_phase *= t->stride[d];
  }
  p.xq = p.n_phase * p.q[0] * p.q[1] * p.q[2];
  p.dyq = t->out[0] * p.q[1] * p.q[2];
  p.pack_dy = p.q[1] != t->out[1] || p.q[2] != t->out[2];
  p.len = (t->out[0] - 1) * p.q[1] * p.q[2] + (t->out[1] - 1) * p.q[2] + t->out[2];
  bool wide = cg_avx512(cx);
  p.vw = wide ? 16 : 8;
  /* RO x RI accumulators + RO + 1 loaded vectors fit the vector registers (16 or 32) */
  p.ro = largest_divisor(p.mg, CGW_MAX_RO);
  p.ri = largest_divisor(p.cg, wide ? CGW_MAX_RI : 2);

  int xb = cg_buf_value(cx, n->in[0]), dyb = cg_buf_value(cx, n->in[1]);
  if (p.pack_x) {
    int q = cg_buf_scratch(cx, sizeof(float) * (size_t)(p.batch * p.c * p.xq), e);
    if (q < 0) return e->code ? e->code : KILN_ERR_NOMEM;
    KILN_TRY(cgw_pack_x(cx, &p, xb, q, e));
    xb = q;
  }
  if (p.pack_dy) {
    int q = cg_buf_scratch(cx, sizeof(float) * (size_t)(p.batch * p.m * p.dyq), e);
    if (q < 0) return e->code ? e->code : KILN_ERR_NOMEM;
    KILN_TRY(cgw_pack_dy(cx, &p, dyb, q, e));
    dyb = q;
  }
  int acc = cg_buf_scratch(cx, sizeof(double) * (size_t)n_dw, e);
  if (acc < 0) return e->code ? e->code : KILN_ERR_NOMEM;
  return cgw_main(cx, &p, (int[]){xb, dyb, cg_buf_value(cx, n->out[0]), acc}, e);
}

void cg_register_conv_grad(kiln_emit_fn *table) { table[KILN_OP_ConvGradWeight] = emit_ConvGradWeight; }
