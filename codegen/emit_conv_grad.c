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
#include "codegen/emit_copy.h"
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


/* ---- the channels-last path (input channels per group >= the vector width) ----
 * dW of one group is a GEMM: dW[oc, (ic, tap)] = sum over positions k = (n, o) of
 * dY[n, oc, o] * Xp[n, ic, o*s + tap*d].  X is copied once into Xt, zero-padded and channels
 * last (Xt[g][block][n][z][y][x][ic], the channels of a group padded to whole vectors), so
 * that for a position and a tap the input channels are one contiguous run.  A tile owns RA output
 * channels x RB vectors of input channels of one group, all taps: for each position it
 * broadcasts RA values of dY (read in place) and loads RB vectors of Xt, RA*RB fused
 * multiply-adds into float accumulators that hold output elements themselves (no horizontal
 * sums).  Positions go in chunks of about CL_CHUNK (NB images x RH output rows); for each
 * chunk and tap the float sums are added to double sums in the tile's stack frame, so no
 * float sum runs over more than a chunk.  Where one chunk holds every position (small images:
 * ResNet's last stage at 128x128 has 8 x 16), the float sums are the results as they are, with
 * no double sums.  The results go to dW as 8x8 transposes of (tap, input channel) (a weight's
 * taps are contiguous there).  Each output element is summed by one tile with a sequence fixed
 * at compile time: bitwise identical for any thread count. */

#define CL_CHUNK 128
#define CL_MAX_RA 12
#define CL_MAX_RB 3
#define CL_STACK_BYTES (64 * 1024) /* the double sums of one block, on the stack */
#define CL_SB_BYTES (24 * 1024)    /* the double sums of a super block of blocks */
#define CL_XT_CACHED (1 << 20)     /* bytes of one block's Xt (all images) held in cache */

/* The register block (ra rows of broadcasts x rb vectors) with the least modelled time over
 * all blocks of a rows x vecs GEMM, tails included, among those whose ra*rb accumulators, rb
 * loaded vectors and one broadcast fit `regs` vector registers with one to spare (a block that
 * fills all 16 AVX2 registers, 4x3, spills once LLVM interleaves its unrolled positions: half
 * the speed of 6x2 measured) and whose double sums (stack_per_acc bytes per accumulator) fit
 * the stack budget.  Cycles per position of a ra x rb block: the FMAs at two per cycle, at
 * least one FMA latency (4) since every accumulator takes one FMA per position, or the vector
 * loads and broadcasts at two per cycle (12x1, 13 loads per 12 FMAs, ran at 70% of 6x2's
 * speed); plus overhead.  False when none fits. */
static bool gemm_block(int64_t rows, int64_t vecs, int regs, int64_t stack_per_acc, int *ra_out,
                       int *rb_out) {
  double best = -1;
  for (int ra = 1; ra <= CL_MAX_RA && ra <= rows; ra++)
    for (int rb = 1; rb <= CL_MAX_RB && rb <= vecs; rb++) {
      if (ra * rb + rb + 1 >= regs || stack_per_acc * ra * rb > CL_STACK_BYTES) continue;
      double cost = 0;
      for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
          int64_t na = ta ? (rows % ra ? 1 : 0) : rows / ra;
          int64_t nb = tb ? (vecs % rb ? 1 : 0) : vecs / rb;
          int a = ta ? (int)(rows % ra) : ra, bb = tb ? (int)(vecs % rb) : rb;
          double fma = a * bb / 2.0, ld = (a + bb) / 2.0, c = fma > 4 ? fma : 4;
          if (ld > c) c = ld;
          cost += (double)(na * nb) * (c + 0.5);
        }
      if (best < 0 || cost < best * 0.999) {
        best = cost;
        *ra_out = ra;
        *rb_out = rb;
      }
    }
  return best >= 0;
}

static void chunk_plan(const nn_window *t, int64_t batch, int64_t *nb, int64_t *rh) {
  int64_t plane = t->out[1] * t->out[2];
  if (plane >= CL_CHUNK || t->out[0] > 1) {
    *nb = 1;
    *rh = t->out[2] > 0 ? div_up(CL_CHUNK, t->out[2]) : 1;
    if (*rh > t->out[1]) *rh = t->out[1];
  } else {
    *rh = t->out[1];
    *nb = plane > 0 ? CL_CHUNK / plane : 1;
    if (*nb > batch) *nb = batch;
  }
  if (*rh < 1) *rh = 1;
  if (*nb < 1) *nb = 1;
}

typedef struct cgl_plan {
  int64_t batch, c, m, group, cg, mg, kvol;
  nn_window t;
  int64_t P[3];            /* extent of padded X read per dim */
  int64_t cgv;             /* vectors of input channels per group */
  int64_t bw, cgp;         /* floats per position of one block of Xt (rb vectors); per group */
  int vw, ra, rb;          /* register block */
  int64_t nob, nib;        /* blocks per group (the last may be a tail) */
  int ra_tail, rb_tail;    /* channels / vectors of the tail blocks, 0 when none */
  int64_t rs, nsb;         /* output-channel blocks per tile (a super block); per group */
  int64_t nb, rh;          /* chunk: nb images x rh output rows */
  bool one_chunk;          /* every position in one chunk: float sums go to dW directly */
} cgl_plan;

/* out[j] = lane j of r[0..7]: an 8x8 transpose in three rounds of two-input shuffles (the
 * unpack / shuffle / 128-bit permute pattern). */
static void transpose8(cg_kernel *k, const V *r, V *out) {
  static const int lo[8] = {0, 8, 1, 9, 4, 12, 5, 13}, hi[8] = {2, 10, 3, 11, 6, 14, 7, 15};
  static const int s44[8] = {0, 1, 8, 9, 4, 5, 12, 13}, see[8] = {2, 3, 10, 11, 6, 7, 14, 15};
  static const int p20[8] = {0, 1, 2, 3, 8, 9, 10, 11}, p31[8] = {4, 5, 6, 7, 12, 13, 14, 15};
#define SHUF(a, b_, m)                                                                            \
  LLVMBuildShuffleVector(k->b, a, b_,                                                             \
                         LLVMConstVector((V[]){cg_i32(k, m[0]), cg_i32(k, m[1]), cg_i32(k, m[2]), \
                                               cg_i32(k, m[3]), cg_i32(k, m[4]), cg_i32(k, m[5]), \
                                               cg_i32(k, m[6]), cg_i32(k, m[7])},                 \
                                         8),                                                      \
                         "")
  V t[8], u[8];
  for (int q = 0; q < 4; q++) {
    t[2 * q] = SHUF(r[2 * q], r[2 * q + 1], lo);
    t[2 * q + 1] = SHUF(r[2 * q], r[2 * q + 1], hi);
  }
  for (int h = 0; h < 2; h++) {
    u[4 * h + 0] = SHUF(t[4 * h], t[4 * h + 2], s44);
    u[4 * h + 1] = SHUF(t[4 * h], t[4 * h + 2], see);
    u[4 * h + 2] = SHUF(t[4 * h + 1], t[4 * h + 3], s44);
    u[4 * h + 3] = SHUF(t[4 * h + 1], t[4 * h + 3], see);
  }
  for (int j = 0; j < 4; j++) {
    out[j] = SHUF(u[j], u[j + 4], p20);
    out[j + 4] = SHUF(u[j], u[j + 4], p31);
  }
#undef SHUF
}

/* A tensor (N, group*cg, in...) as the blocked channels-last copy the GEMM paths read:
 * [g][block][n][z][y][x][bw] (a tile reads one block: all its images in one run), zero-padded
 * by `pad` before each spatial dim to extents P, the group's channels in nib blocks of bw
 * (cgp = nib*bw slots, those past cg zero). */
typedef struct cgl_layout {
  const char *label;
  int64_t batch, group, cg;
  int64_t in[3], pad[3], P[3];
  int64_t bw, nib, cgp;
} cgl_layout;

/* Xt from X: one tile per (n, g, z, y) row of the padded input, in groups of 8 channels.  A
 * group of real channels in a row inside the input moves as 8x8 transposes of X vectors over
 * its interior columns; borders, padded channels and rows outside the input go one element at
 * a time. */
static kiln_code cgl_pack(kiln_emit_ctx *cx, const cgl_layout *p, int x_buf, int xt_buf,
                          kiln_err *e) {
  cg_kernel kk;
  cg_kernel *k = &kk;
  KILN_TRY(cg_kernel_begin(cx, k, p->label, 2, e));
  LLVMBuilderRef b = k->b;
  V X = cg_arg(k, 0), XT = cg_arg(k, 1);
  LLVMTypeRef v8 = LLVMVectorType(k->t->f32, 8);
  cg_loop lt, lc, lz, lv, lr, ls, li;
  V tile = cg_loop_begin(k, &lt, k->lo, k->hi, NULL, "row");
  V y = LLVMBuildSRem(b, tile, cg_i64(k, p->P[1]), "");
  V rest = LLVMBuildSDiv(b, tile, cg_i64(k, p->P[1]), "");
  V z = LLVMBuildSRem(b, rest, cg_i64(k, p->P[0]), "");
  rest = LLVMBuildSDiv(b, rest, cg_i64(k, p->P[0]), ""); /* n * G + g */
  V iz = LLVMBuildSub(b, z, cg_i64(k, p->pad[0]), "");
  V iy = LLVMBuildSub(b, y, cg_i64(k, p->pad[1]), "");
  V row_ok = LLVMBuildAnd(b, in_range(k, iz, p->in[0]), in_range(k, iy, p->in[1]), "");
  /* channel 0 of the group: (n * G + g) * cg = n * C + g * cg */
  int64_t plane = p->in[0] * p->in[1] * p->in[2];
  V src_row = cg_add(k, cg_mul(k, cg_mul(k, rest, cg_i64(k, p->cg)), cg_i64(k, plane)),
                     cg_mul(k, cg_add(k, cg_mul(k, iz, cg_i64(k, p->in[1])), iy),
                            cg_i64(k, p->in[2])));
  /* interior columns [xlo, xhi): x - pad inside the input */
  int64_t pb = p->pad[2], P2 = p->P[2];
  int64_t xlo = pb < P2 ? pb : P2, xhi = pb + p->in[2] < P2 ? pb + p->in[2] : P2;
  int64_t nvx = xhi > xlo ? (xhi - xlo) / 8 : 0;
  V c0 = cg_mul(k, cg_loop_begin(k, &lc, cg_i64(k, 0), cg_i64(k, p->cgp / 8), NULL, "cg8"),
                cg_i64(k, 8));
  /* block c0 / bw of the group: Xt[g][block][n][z][y][x][c % bw] */
  V blk = LLVMBuildSDiv(b, c0, cg_i64(k, p->bw), "");
  V gb = cg_add(k, cg_mul(k, LLVMBuildSRem(b, rest, cg_i64(k, p->group), ""), cg_i64(k, p->nib)),
                blk);
  V gbn = cg_add(k, cg_mul(k, gb, cg_i64(k, p->batch)),
                 LLVMBuildSDiv(b, rest, cg_i64(k, p->group), ""));
  V dst0 = cg_add(k, cg_mul(k, cg_add(k, cg_mul(k, cg_add(k, cg_mul(k, gbn, cg_i64(k, p->P[0])), z),
                           cg_i64(k, p->P[1])), y), cg_i64(k, P2 * p->bw)),
                  LLVMBuildSRem(b, c0, cg_i64(k, p->bw), ""));
  V src0 = cg_add(k, src_row, cg_mul(k, c0, cg_i64(k, plane)));
  V full = LLVMBuildAnd(b, row_ok, LLVMBuildICmp(b, LLVMIntSLE, cg_add(k, c0, cg_i64(k, 8)),
                                                 cg_i64(k, p->cg), ""), "");
  cg_ifelse ie;
  cg_ifelse_begin(k, &ie, full);
  {
    /* left border: zeros */
    if (xlo > 0) {
      V x = cg_loop_begin(k, &lz, cg_i64(k, 0), cg_i64(k, xlo), NULL, "x");
      cg_vstore(k, LLVMConstNull(v8), XT, cg_add(k, dst0, cg_mul(k, x, cg_i64(k, p->bw))), 8, 8);
      cg_loop_end(k, &lz);
    }
    /* interior: 8 columns of 8 channels at a time */
    if (nvx > 0) {
      V x0 = cg_add(k, cg_mul(k, cg_loop_begin(k, &lv, cg_i64(k, 0), cg_i64(k, nvx), NULL, "v"),
                              cg_i64(k, 8)),
                    cg_i64(k, xlo));
      V ix0 = LLVMBuildSub(b, x0, cg_i64(k, pb), "");
      V r[8], o[8];
      for (int i = 0; i < 8; i++)
        r[i] = cg_vload(k, X, cg_add(k, src0, cg_add(k, ix0, cg_i64(k, i * plane))), 8, 8);
      transpose8(k, r, o);
      for (int j = 0; j < 8; j++)
        cg_vstore(k, o[j], XT,
                  cg_add(k, dst0, cg_mul(k, cg_add(k, x0, cg_i64(k, j)), cg_i64(k, p->bw))), 8, 8);
      cg_loop_end(k, &lv);
    }
    /* the rest of the row */
    V x = cg_loop_begin(k, &lr, cg_i64(k, xlo + 8 * nvx), cg_i64(k, P2), NULL, "x");
    V ix = LLVMBuildSub(b, x, cg_i64(k, pb), "");
    V ok = in_range(k, ix, p->in[2]);
    for (int i = 0; i < 8; i++)
      cg_store(k, load_or_zero(k, X, cg_add(k, src0, cg_add(k, ix, cg_i64(k, i * plane))), ok,
                               cg_i64(k, 0)),
               XT, cg_add(k, dst0, cg_add(k, cg_mul(k, x, cg_i64(k, p->bw)), cg_i64(k, i))));
    cg_loop_end(k, &lr);
  }
  cg_ifelse_else(k, &ie);
  {
    /* padded channels, rows outside the input: element by element */
    V x = cg_loop_begin(k, &ls, cg_i64(k, 0), cg_i64(k, P2), NULL, "x");
    V ix = LLVMBuildSub(b, x, cg_i64(k, pb), "");
    V xok = LLVMBuildAnd(b, row_ok, in_range(k, ix, p->in[2]), "");
    V i = cg_loop_begin(k, &li, cg_i64(k, 0), cg_i64(k, 8), NULL, "i");
    V ok = LLVMBuildAnd(b, xok, LLVMBuildICmp(b, LLVMIntSLT, cg_add(k, c0, i), cg_i64(k, p->cg), ""),
                        "");
    cg_store(k, load_or_zero(k, X, cg_add(k, src0, cg_add(k, ix, cg_mul(k, i, cg_i64(k, plane)))),
                             ok, cg_i64(k, 0)),
             XT, cg_add(k, dst0, cg_add(k, cg_mul(k, x, cg_i64(k, p->bw)), i)));
    cg_loop_end(k, &li);
    cg_loop_end(k, &ls);
  }
  cg_ifelse_end(k, &ie);
  cg_loop_end(k, &lc);
  cg_loop_end(k, &lt);
  return cg_kernel_end(cx, k, p->batch * p->group * p->P[0] * p->P[1],
                       (int[]){x_buf, xt_buf}, e);
}

/* ---- what both channels-last paths share ---- */

/* Adds the float register block acc[ra][rb] (vectors of vw) into the double sums at
 * dacc[base + (r * rb_full + s) * vw]. */
static void cl_acc_to_double(cg_kernel *k, V dacc, V base, V acc[CL_MAX_RA][CL_MAX_RB], int ra,
                             int rb, int rb_full, int vw, LLVMTypeRef vty, LLVMTypeRef dvty) {
  LLVMBuilderRef b = k->b;
  for (int r = 0; r < ra; r++)
    for (int s = 0; s < rb; s++) {
      V off = cg_add(k, base, cg_i64(k, ((int64_t)r * rb_full + s) * vw));
      V ptr = cg_gep(k, k->t->f64, dacc, off);
      V old = LLVMBuildLoad2(b, dvty, ptr, "");
      LLVMSetAlignment(old, 8);
      V a = LLVMBuildFPExt(b, LLVMBuildLoad2(b, vty, acc[r][s], ""), dvty, "");
      V st = LLVMBuildStore(b, LLVMBuildFAdd(b, old, a, ""), ptr);
      LLVMSetAlignment(st, 8);
    }
}

/* One register block: block j of the tile's super block, ra of its rows (output channels or
 * weight rows), over images [n0, n1) at od and output rows [oh0, oh1). */
typedef void (*cl_block_fn)(void *ck, int ra, int rb, V j, V n0, V n1, V od, V oh0, V oh1);

/* A tile's walk: zero its n_zero double sums, then for each chunk of images (nb) and output
 * rows (rh), the super block sb's full blocks of ra and, in the last super block of all (nob
 * blocks in all), its tail of ra_tail.  Gives the super block's first block and block count. */
typedef struct cl_walk {
  V sb, dacc;
  int64_t n_zero, rs, nob, batch, nb, rh;
  int ra, ra_tail, rb;
  const nn_window *t;
  cl_block_fn block;
  void *ck;
} cl_walk;

static void cl_walk_emit(cg_kernel *k, const cl_walk *w, V *first_out, V *nblk_out) {
  LLVMBuilderRef b = k->b;
  cg_loop lz, lnb, lod, loh, lj;
  V z = cg_loop_begin(k, &lz, cg_i64(k, 0), cg_i64(k, w->n_zero), NULL, "z");
  cg_store(k, f64c(k, 0), w->dacc, z);
  cg_loop_end(k, &lz);
  V first = cg_mul(k, w->sb, cg_i64(k, w->rs));
  V nblk = cg_min(k, cg_i64(k, w->rs), LLVMBuildSub(b, cg_i64(k, w->nob), first, ""));
  V last = LLVMBuildICmp(b, LLVMIntEQ, cg_add(k, first, nblk), cg_i64(k, w->nob), "");
  V has_tail = w->ra_tail ? last : LLVMConstInt(k->t->i1, 0, 0);
  V nfull = LLVMBuildSub(b, nblk, LLVMBuildZExt(b, has_tail, k->t->i64, ""), "");
  V n0 = cg_loop_begin(k, &lnb, cg_i64(k, 0), cg_i64(k, w->batch), cg_i64(k, w->nb), "nb");
  V n1 = cg_min(k, cg_add(k, n0, cg_i64(k, w->nb)), cg_i64(k, w->batch));
  V od = cg_loop_begin(k, &lod, cg_i64(k, 0), cg_i64(k, w->t->out[0]), NULL, "od");
  V oh0 = cg_loop_begin(k, &loh, cg_i64(k, 0), cg_i64(k, w->t->out[1]), cg_i64(k, w->rh), "oh0");
  V oh1 = cg_min(k, cg_add(k, oh0, cg_i64(k, w->rh)), cg_i64(k, w->t->out[1]));
  V j = cg_loop_begin(k, &lj, cg_i64(k, 0), nfull, NULL, "j");
  w->block(w->ck, w->ra, w->rb, j, n0, n1, od, oh0, oh1);
  cg_loop_end(k, &lj);
  if (w->ra_tail) {
    cg_if ti;
    cg_if_begin(k, &ti, has_tail);
    w->block(w->ck, w->ra_tail, w->rb, nfull, n0, n1, od, oh0, oh1);
    cg_if_end(k, &ti);
  }
  cg_loop_end(k, &loh);
  cg_loop_end(k, &lod);
  cg_loop_end(k, &lnb);
  *first_out = first;
  *nblk_out = nblk;
}

typedef struct cgl_kern {
  cg_kernel *k;
  const cgl_plan *p;
  V xt, dy, dw, dacc; /* dacc: the tile's double sums [RS][tap][RA][RB][V] (full block sizes) */
  V fbuf;             /* one chunk: the block's float sums [tap][RA][RB][V] */
  LLVMTypeRef vty, dvty;
  V grp, sb, icv0, ib; /* the tile's group, output super block, first input vector (in group),
                        * input block */
} cgl_kern;

/* The kvol taps of vw input channels ic0.. of one output channel, `get(ctx, tap)` giving a tap's
 * vw channels as floats, into dW at dst (channel l's taps at dst + l*kvol, contiguous).  Groups
 * of 8 taps go as 8x8 transposes and vector stores (AVX2), the rest lane by lane; channels past
 * cg (a ragged group's last vector) are skipped. */
typedef V (*cl_tap_fn)(void *ctx, int64_t tap);

static void cgl_store_taps(cg_kernel *k, const cgl_plan *p, V dw, V dst, V ic0, cl_tap_fn get,
                           void *ctx) {
  LLVMBuilderRef b = k->b;
  int vw = p->vw;
  bool ragged = p->cg % vw != 0;
  int64_t t0 = 0;
  for (; vw == 8 && t0 + 8 <= p->kvol; t0 += 8) {
    V r[8], o[8];
    for (int i = 0; i < 8; i++) r[i] = get(ctx, t0 + i);
    transpose8(k, r, o);
    for (int l = 0; l < 8; l++) {
      cg_if ok;
      if (ragged)
        cg_if_begin(k, &ok, LLVMBuildICmp(b, LLVMIntSLT, cg_add(k, ic0, cg_i64(k, l)),
                                          cg_i64(k, p->cg), ""));
      cg_vstore(k, o[l], dw, cg_add(k, dst, cg_i64(k, l * p->kvol + t0)), 8, 8);
      if (ragged) cg_if_end(k, &ok);
    }
  }
  for (; t0 < p->kvol; t0++) {
    V v = get(ctx, t0);
    for (int l = 0; l < vw; l++) {
      cg_if ok;
      if (ragged)
        cg_if_begin(k, &ok, LLVMBuildICmp(b, LLVMIntSLT, cg_add(k, ic0, cg_i64(k, l)),
                                          cg_i64(k, p->cg), ""));
      cg_store(k, LLVMBuildExtractElement(b, v, cg_i32(k, l), ""), dw,
               cg_add(k, dst, cg_i64(k, l * p->kvol + t0)));
      if (ragged) cg_if_end(k, &ok);
    }
  }
}

typedef struct cl_tap_src {
  cg_kernel *k;
  V base, off;      /* element off + tap * pitch of base */
  int64_t pitch;
  LLVMTypeRef ty;   /* the vector type stored there (float or double lanes) */
  LLVMTypeRef fty;  /* <vw x float> */
} cl_tap_src;

static V cl_tap_load(void *ctx, int64_t tap) {
  cl_tap_src *c = ctx;
  cg_kernel *k = c->k;
  V ptr = cg_gep(k, LLVMGetElementType(c->ty) == k->t->f64 ? k->t->f64 : k->t->f32, c->base,
                 cg_add(k, c->off, cg_i64(k, tap * c->pitch)));
  V v = LLVMBuildLoad2(k->b, c->ty, ptr, "");
  LLVMSetAlignment(v, LLVMGetElementType(c->ty) == k->t->f64 ? 8 : 4);
  return c->ty == c->fty ? v : LLVMBuildFPTrunc(k->b, v, c->fty, "");
}

/* Output-channel block j of the tile's super block, with ra channels and rb vectors, over the
 * positions of one chunk, tap by tap: float sums, then added to the tap's double sums (or, with
 * one chunk, kept as the block's results and stored to dW after the last tap). */
static void cgl_block(cgl_kern *ck, int ra, int rb, V j, V n0, V n1, V od, V oh0, V oh1) {
  cg_kernel *k = ck->k;
  const cgl_plan *p = ck->p;
  const nn_window *t = &p->t;
  LLVMBuilderRef b = k->b;
  int vw = p->vw;
  int64_t blk = (int64_t)p->ra * p->rb * vw; /* doubles per tap in dacc */
  int64_t ohw = t->out[1] * t->out[2], odhw = t->out[0] * ohw;
  int64_t P12 = p->P[1] * p->P[2];
  V oc0 = cg_mul(k, cg_add(k, cg_mul(k, ck->sb, cg_i64(k, p->rs)), j), cg_i64(k, p->ra));
  V acc[CL_MAX_RA][CL_MAX_RB];
  for (int r = 0; r < ra; r++)
    for (int s = 0; s < rb; s++) acc[r][s] = cg_entry_alloca(k, ck->vty);
  cg_loop lk[3], ln, lr, lw;
  V kv[3];
  for (int d = 0; d < 3; d++)
    kv[d] = cg_loop_begin(k, &lk[d], cg_i64(k, 0), cg_i64(k, t->kernel[d]), NULL, "tap");
  V tap = cg_add(k, cg_mul(k, cg_add(k, cg_mul(k, kv[0], cg_i64(k, t->kernel[1])), kv[1]),
                           cg_i64(k, t->kernel[2])), kv[2]);
  /* Xt offset of the tap within the block's plane */
  V xtap = cg_mul(k, cg_add(k, cg_mul(k, cg_add(k, cg_mul(k, kv[0],
                                   cg_i64(k, t->dilation[0] * p->P[1])),
                                   cg_mul(k, kv[1], cg_i64(k, t->dilation[1]))),
                                   cg_i64(k, p->P[2])),
                             cg_mul(k, kv[2], cg_i64(k, t->dilation[2]))),
                   cg_i64(k, p->bw));
  for (int r = 0; r < ra; r++)
    for (int s = 0; s < rb; s++) LLVMBuildStore(b, LLVMConstNull(ck->vty), acc[r][s]);
  V n = cg_loop_begin(k, &ln, n0, n1, NULL, "n");
  /* Xt plane (n, g, ib) at depth od*s0; dY channel oc0 of image n at depth od */
  V ngb = cg_add(k, cg_mul(k, cg_add(k, cg_mul(k, ck->grp, cg_i64(k, p->nib)), ck->ib),
                           cg_i64(k, p->batch)),
                 n);
  V xpl = cg_add(k, cg_mul(k, cg_add(k, cg_mul(k, ngb, cg_i64(k, p->P[0])),
                                     cg_mul(k, od, cg_i64(k, t->stride[0]))),
                           cg_i64(k, P12 * p->bw)),
                 xtap);
  V dpl = cg_add(k, cg_mul(k, cg_add(k, cg_mul(k, n, cg_i64(k, p->m)),
                                     cg_add(k, cg_mul(k, ck->grp, cg_i64(k, p->mg)), oc0)),
                           cg_i64(k, odhw)),
                 cg_mul(k, od, cg_i64(k, ohw)));
  V oh = cg_loop_begin(k, &lr, oh0, oh1, NULL, "oh");
  V xrow = cg_add(k, xpl, cg_mul(k, oh, cg_i64(k, t->stride[1] * p->P[2] * p->bw)));
  V drow = cg_add(k, dpl, cg_mul(k, oh, cg_i64(k, t->out[2])));
  V ow = cg_loop_begin(k, &lw, cg_i64(k, 0), cg_i64(k, t->out[2]), NULL, "ow");
  V xi = cg_add(k, xrow, cg_mul(k, ow, cg_i64(k, t->stride[2] * p->bw)));
  V di = cg_add(k, drow, ow);
  V xv[CL_MAX_RB];
  for (int s = 0; s < rb; s++) xv[s] = cg_vload(k, ck->xt, cg_add(k, xi, cg_i64(k, s * vw)), vw, vw);
  for (int r = 0; r < ra; r++) {
    V a = cg_splat(k, cg_load(k, k->t->f32, ck->dy, cg_add(k, di, cg_i64(k, r * odhw))),
                   (unsigned)vw);
    for (int s = 0; s < rb; s++) {
      V cur = LLVMBuildLoad2(b, ck->vty, acc[r][s], "");
      LLVMBuildStore(b, cg_intrinsic(k, "llvm.fma", &ck->vty, 1, (V[]){a, xv[s], cur}, 3),
                     acc[r][s]);
    }
  }
  cg_loop_end(k, &lw);
  cg_loop_end(k, &lr);
  cg_loop_end(k, &ln);
  if (p->one_chunk) {
    /* the only chunk: its float sums are the results (a double sum from 0 of one float, stored
     * as float, is that float; the sums start at +0 and never become -0, which 0 + -0 would
     * change), kept for all taps, then stored */
    for (int r = 0; r < ra; r++)
      for (int s = 0; s < rb; s++) {
        V a = LLVMBuildLoad2(b, ck->vty, acc[r][s], "");
        V at = cg_add(k, cg_mul(k, tap, cg_i64(k, blk)), cg_i64(k, ((int64_t)r * p->rb + s) * vw));
        LLVMSetAlignment(LLVMBuildStore(b, a, cg_gep(k, k->t->f32, ck->fbuf, at)), 4);
      }
  } else {
    /* the chunk's float sums into the double sums of block j and the tap */
    V tb = cg_mul(k, cg_add(k, cg_mul(k, j, cg_i64(k, p->kvol)), tap), cg_i64(k, blk));
    cl_acc_to_double(k, ck->dacc, tb, acc, ra, rb, p->rb, vw, ck->vty, ck->dvty);
  }
  for (int d = 2; d >= 0; d--) cg_loop_end(k, &lk[d]);
  if (p->one_chunk) {
    V goc0 = cg_add(k, cg_mul(k, ck->grp, cg_i64(k, p->mg)), oc0);
    for (int r = 0; r < ra; r++)
      for (int s = 0; s < rb; s++) {
        V ic0 = cg_mul(k, cg_add(k, ck->icv0, cg_i64(k, s)), cg_i64(k, vw));
        V dst = cg_mul(k, cg_add(k, cg_mul(k, cg_add(k, goc0, cg_i64(k, r)), cg_i64(k, p->cg)),
                                 ic0),
                       cg_i64(k, p->kvol));
        cl_tap_src src = {.k = k, .base = ck->fbuf, .off = cg_i64(k, ((int64_t)r * p->rb + s) * vw),
                          .pitch = blk, .ty = ck->vty, .fty = ck->vty};
        cgl_store_taps(k, p, ck->dw, dst, ic0, cl_tap_load, &src);
      }
  }
}

static void cgl_block_cb(void *ck, int ra, int rb, V j, V n0, V n1, V od, V oh0, V oh1) {
  cgl_block(ck, ra, rb, j, n0, n1, od, oh0, oh1);
}

/* One tile with blocks of rb input vectors. */
static void cgl_body(cgl_kern *ck, int rb) {
  cg_kernel *k = ck->k;
  const cgl_plan *p = ck->p;
  const nn_window *t = &p->t;
  LLVMBuilderRef b = k->b;
  int vw = p->vw;
  int64_t blk = (int64_t)p->ra * p->rb * vw;
  cg_loop lfj, lfr;
  /* output blocks of this super block; the last of all may be a tail of ra_tail channels */
  V first, nblk;
  cl_walk_emit(k,
               &(cl_walk){.sb = ck->sb, .dacc = ck->dacc,
                          .n_zero = p->one_chunk ? 0 : p->rs * p->kvol * blk,
                          .rs = p->rs, .nob = p->nob, .batch = p->batch, .nb = p->nb,
                          .rh = p->rh, .ra = p->ra, .ra_tail = (int)p->ra_tail, .rb = rb, .t = t,
                          .block = cgl_block_cb, .ck = ck},
               &first, &nblk);
  if (p->one_chunk) return;
  /* dW[g*mg + oc, ic, tap] for the real output and input channels */
  V fj = cg_loop_begin(k, &lfj, cg_i64(k, 0), nblk, NULL, "j");
  V fr = cg_loop_begin(k, &lfr, cg_i64(k, 0), cg_i64(k, p->ra), NULL, "r");
  V oc = cg_add(k, cg_mul(k, cg_add(k, first, fj), cg_i64(k, p->ra)), fr);
  cg_if ok_oc;
  cg_if_begin(k, &ok_oc, LLVMBuildICmp(b, LLVMIntSLT, oc, cg_i64(k, p->mg), ""));
  V goc = cg_add(k, cg_mul(k, ck->grp, cg_i64(k, p->mg)), oc);
  for (int s = 0; s < rb; s++) {
    V ic0 = cg_mul(k, cg_add(k, ck->icv0, cg_i64(k, s)), cg_i64(k, vw));
    V dst = cg_mul(k, cg_add(k, cg_mul(k, goc, cg_i64(k, p->cg)), ic0), cg_i64(k, p->kvol));
    V off = cg_add(k, cg_mul(k, fj, cg_i64(k, p->kvol * blk)),
                   cg_mul(k, cg_add(k, cg_mul(k, fr, cg_i64(k, p->rb)), cg_i64(k, s)),
                          cg_i64(k, vw)));
    cl_tap_src src = {.k = k, .base = ck->dacc, .off = off, .pitch = blk, .ty = ck->dvty,
                      .fty = ck->vty};
    cgl_store_taps(k, p, ck->dw, dst, ic0, cl_tap_load, &src);
  }
  cg_if_end(k, &ok_oc);
  cg_loop_end(k, &lfr);
  cg_loop_end(k, &lfj);
}

/* args Xt, dY, dW; one tile per (group, output super block, input-vector block). */
static kiln_code cgl_main(kiln_emit_ctx *cx, const cgl_plan *p, const int *bufs, kiln_err *e) {
  cg_kernel kk;
  cg_kernel *k = &kk;
  KILN_TRY(cg_kernel_begin(cx, k, "conv_grad_weight_cl", 3, e));
  LLVMBuilderRef b = k->b;
  cgl_kern ck = {.k = k, .p = p, .xt = cg_arg(k, 0), .dy = cg_arg(k, 1), .dw = cg_arg(k, 2),
                 .vty = LLVMVectorType(k->t->f32, (unsigned)p->vw),
                 .dvty = LLVMVectorType(k->t->f64, (unsigned)p->vw)};
  int64_t blk = (int64_t)p->ra * p->rb * p->vw;
  ck.dacc = cg_entry_alloca(k, LLVMArrayType(k->t->f64,
                                             (unsigned)(p->one_chunk ? 1 : p->rs * p->kvol * blk)));
  ck.fbuf = cg_entry_alloca(k, LLVMArrayType(k->t->f32, (unsigned)(p->one_chunk ? p->kvol * blk
                                                                                : 1)));
  cg_loop lt;
  V tile = cg_loop_begin(k, &lt, k->lo, k->hi, NULL, "tile");
  ck.ib = LLVMBuildSRem(b, tile, cg_i64(k, p->nib), "");
  V rest = LLVMBuildSDiv(b, tile, cg_i64(k, p->nib), "");
  ck.sb = LLVMBuildSRem(b, rest, cg_i64(k, p->nsb), "");
  ck.grp = LLVMBuildSDiv(b, rest, cg_i64(k, p->nsb), "");
  ck.icv0 = cg_mul(k, ck.ib, cg_i64(k, p->rb));
  if (p->rb_tail) {
    cg_ifelse ie;
    cg_ifelse_begin(k, &ie, LLVMBuildICmp(b, LLVMIntEQ, ck.ib, cg_i64(k, p->nib - 1), ""));
    cgl_body(&ck, p->rb_tail);
    cg_ifelse_else(k, &ie);
    cgl_body(&ck, p->rb);
    cg_ifelse_end(k, &ie);
  } else {
    cgl_body(&ck, p->rb);
  }
  cg_loop_end(k, &lt);
  return cg_kernel_end(cx, k, p->group * p->nsb * p->nib, bufs, e);
}

/* The channels-last plan, or false when the path does not fit (few input channels per group,
 * or a kernel so large that a tile's double sums outgrow the stack budget). */
static bool cgl_make_plan(kiln_emit_ctx *cx, const cgw_plan *w, cgl_plan *p) {
  memset(p, 0, sizeof *p);
  p->batch = w->batch, p->c = w->c, p->m = w->m, p->group = w->group;
  p->cg = w->cg, p->mg = w->mg, p->t = w->t;
  const nn_window *t = &p->t;
  p->kvol = t->kernel[0] * t->kernel[1] * t->kernel[2];
  bool wide = cg_avx512(cx);
  p->vw = wide ? 16 : 8;
  if (p->cg < p->vw || p->mg < 1) return false;
  for (int d = 0; d < 3; d++) p->P[d] = (t->out[d] - 1) * t->stride[d] + (t->kernel[d] - 1) * t->dilation[d] + 1;
  p->cgv = div_up(p->cg, p->vw);
  if (!gemm_block(p->mg, p->cgv, wide ? 32 : 16, p->kvol * p->vw * 8, &p->ra, &p->rb))
    return false;
  p->nob = div_up(p->mg, p->ra);
  p->nib = div_up(p->cgv, p->rb);
  p->bw = (int64_t)p->rb * p->vw;
  p->cgp = p->nib * p->bw;
  p->ra_tail = (int)(p->mg % p->ra);
  p->rb_tail = (int)(p->cgv % p->rb);
  /* Super blocks of output-channel blocks: each chunk of Xt is read from cache by all of them,
   * so Xt is streamed from memory once per super block.  As many as leave 4 tiles per thread,
   * their double sums within CL_SB_BYTES (updated after every chunk and tap, best from L1), of
   * even sizes.  Where a block's Xt outgrows the L2 cache (CL_XT_CACHED: large images, few
   * channels) memory bandwidth bounds the tiles, the more so with every thread streaming: one
   * tile per thread suffices (16 output channels of [8,32,128,128]: one super block of 3 blocks
   * instead of 3 of one: the main kernel 1.1x faster at 1 and 2 threads, more when another
   * process shares the memory bus). */
  int64_t xt_block = p->batch * p->P[0] * p->P[1] * p->P[2] * p->bw * (int64_t)sizeof(float);
  bool stream = xt_block > CL_XT_CACHED;
  int64_t want = (stream ? 1 : 4) * (int64_t)cg_threads(cx), have = p->group * p->nib;
  p->nsb = have >= want ? 1 : div_up(want, have);
  if (p->nsb > p->nob) p->nsb = p->nob;
  int64_t max_rs = CL_SB_BYTES / (p->kvol * p->ra * p->rb * p->vw * 8);
  if (max_rs < 1) max_rs = 1;
  if (p->nsb < div_up(p->nob, max_rs)) p->nsb = div_up(p->nob, max_rs);
  p->rs = div_up(p->nob, p->nsb);
  p->nsb = div_up(p->nob, p->rs);
  chunk_plan(t, p->batch, &p->nb, &p->rh);
  p->one_chunk = t->out[0] == 1 && p->nb >= p->batch && p->rh >= t->out[1];
  return true;
}

/* ---- the output-channel path (few input channels per group, e.g. a network's first layer) ----
 * The same GEMM with the roles swapped: dW[(ic, tap), oc] = sum over positions of
 * Xp[n, ic, o*s + tap*d] * dY[n, oc, o], with dY copied channels last (dYt, blocked like Xt)
 * and X zero-padded in place of its layout (Xp, NC(D)HW).  A tile owns RA consecutive
 * (ic, tap) rows x RB vectors of output channels: per position RA broadcasts of Xp, RB vector
 * loads of dYt and RA*RB fused multiply-adds.  A tile owns RS such row blocks and takes them in
 * turn for each chunk of positions, so that the chunk's dYt stays in cache across them (one
 * row block per tile would stream all of dYt per block); the Xp offset of every row comes
 * from a compile-time table.  Chunks, double sums and determinism as in the channels-last
 * path. */

typedef struct cgo_plan {
  int64_t batch, c, m, group, cg, mg, kvol, nrows; /* nrows = cg * kvol per group */
  nn_window t;
  int64_t P[3];          /* extent of padded X read per dim */
  int64_t mgv;           /* vectors of output channels per group */
  int vw, ra, rb;
  int64_t nob, nib;      /* row blocks, output-vector blocks per group */
  int ra_tail, rb_tail;
  int64_t bw, mgp;       /* floats per position of a dYt block; per group */
  int64_t rs, nsb;       /* row blocks per tile (a super block), super blocks per group */
  int64_t nb, rh;        /* chunk */
} cgo_plan;

/* Xp from X: one tile per (n, c, z, y) row of the padded input. */
static kiln_code cgo_pack_x(kiln_emit_ctx *cx, const cgo_plan *p, int x_buf, int xp_buf,
                            kiln_err *e) {
  const nn_window *t = &p->t;
  cg_kernel kk;
  cg_kernel *k = &kk;
  KILN_TRY(cg_kernel_begin(cx, k, "conv_grad_weight_pack_xp", 2, e));
  LLVMBuilderRef b = k->b;
  V X = cg_arg(k, 0), XP = cg_arg(k, 1);
  cg_loop lt, lx;
  V tile = cg_loop_begin(k, &lt, k->lo, k->hi, NULL, "row");
  V y = LLVMBuildSRem(b, tile, cg_i64(k, p->P[1]), "");
  V rest = LLVMBuildSDiv(b, tile, cg_i64(k, p->P[1]), "");
  V z = LLVMBuildSRem(b, rest, cg_i64(k, p->P[0]), "");
  V nc = LLVMBuildSDiv(b, rest, cg_i64(k, p->P[0]), "");
  V iz = LLVMBuildSub(b, z, cg_i64(k, t->pad_begin[0]), "");
  V iy = LLVMBuildSub(b, y, cg_i64(k, t->pad_begin[1]), "");
  V row_ok = LLVMBuildAnd(b, in_range(k, iz, t->in[0]), in_range(k, iy, t->in[1]), "");
  V src = cg_mul(k, cg_add(k, cg_mul(k, cg_add(k, cg_mul(k, nc, cg_i64(k, t->in[0])), iz),
                                     cg_i64(k, t->in[1])), iy),
                 cg_i64(k, t->in[2]));
  V dst = cg_mul(k, tile, cg_i64(k, p->P[2]));
  V x = cg_loop_begin(k, &lx, cg_i64(k, 0), cg_i64(k, p->P[2]), NULL, "x");
  V ix = LLVMBuildSub(b, x, cg_i64(k, t->pad_begin[2]), "");
  V ok = LLVMBuildAnd(b, row_ok, in_range(k, ix, t->in[2]), "");
  cg_store(k, load_or_zero(k, X, cg_add(k, src, ix), ok, cg_i64(k, 0)), XP, cg_add(k, dst, x));
  cg_loop_end(k, &lx);
  cg_loop_end(k, &lt);
  return cg_kernel_end(cx, k, p->batch * p->c * p->P[0] * p->P[1], (int[]){x_buf, xp_buf}, e);
}

typedef struct cgo_kern {
  cg_kernel *k;
  const cgo_plan *p;
  V xp, dyt, dw, tab, dacc; /* dacc: the tile's double sums [RS][RA][RB][V] (full sizes) */
  LLVMTypeRef vty, dvty;
  V grp, sb, ib;        /* the tile's group, row super block, output-vector block */
} cgo_kern;

/* Row block j of the tile's super block, with ra rows and rb vectors, over the positions of
 * one chunk: its float sums, then added to its double sums. */
static void cgo_block(cgo_kern *ck, int ra, int rb, V j, V n0, V n1, V od, V oh0, V oh1) {
  cg_kernel *k = ck->k;
  const cgo_plan *p = ck->p;
  const nn_window *t = &p->t;
  LLVMBuilderRef b = k->b;
  int vw = p->vw;
  int64_t P12 = p->P[1] * p->P[2], P012 = p->P[0] * P12;
  int64_t ohw = t->out[1] * t->out[2], odhw = t->out[0] * ohw;
  V acc[CL_MAX_RA][CL_MAX_RB];
  for (int r = 0; r < ra; r++)
    for (int s = 0; s < rb; s++) {
      acc[r][s] = cg_entry_alloca(k, ck->vty);
      LLVMBuildStore(b, LLVMConstNull(ck->vty), acc[r][s]);
    }
  V row0 = cg_mul(k, cg_add(k, cg_mul(k, ck->sb, cg_i64(k, p->rs)), j), cg_i64(k, p->ra));
  V goff = cg_mul(k, ck->grp, cg_i64(k, p->cg * P012));
  V xoff[CL_MAX_RA];
  for (int r = 0; r < ra; r++)
    xoff[r] = cg_add(k, goff, cg_load(k, k->t->i64, ck->tab, cg_add(k, row0, cg_i64(k, r))));
  cg_loop ln, lr, lw;
  V n = cg_loop_begin(k, &ln, n0, n1, NULL, "n");
  V xn = cg_add(k, cg_mul(k, n, cg_i64(k, p->c * P012)),
                cg_mul(k, od, cg_i64(k, t->stride[0] * P12)));
  V dn = cg_mul(k, cg_add(k, cg_mul(k, cg_add(k, cg_mul(k, cg_add(k, cg_mul(k, ck->grp,
                                     cg_i64(k, p->nib)), ck->ib), cg_i64(k, p->batch)), n),
                                    cg_i64(k, odhw)),
                          cg_mul(k, od, cg_i64(k, ohw))),
                cg_i64(k, p->bw));
  V oh = cg_loop_begin(k, &lr, oh0, oh1, NULL, "oh");
  V xr = cg_add(k, xn, cg_mul(k, oh, cg_i64(k, t->stride[1] * p->P[2])));
  V dr = cg_add(k, dn, cg_mul(k, oh, cg_i64(k, t->out[2] * p->bw)));
  V ow = cg_loop_begin(k, &lw, cg_i64(k, 0), cg_i64(k, t->out[2]), NULL, "ow");
  V xi = cg_add(k, xr, cg_mul(k, ow, cg_i64(k, t->stride[2])));
  V di = cg_add(k, dr, cg_mul(k, ow, cg_i64(k, p->bw)));
  V dv[CL_MAX_RB];
  for (int s = 0; s < rb; s++) dv[s] = cg_vload(k, ck->dyt, cg_add(k, di, cg_i64(k, s * vw)), vw, vw);
  for (int r = 0; r < ra; r++) {
    V a = cg_splat(k, cg_load(k, k->t->f32, ck->xp, cg_add(k, xi, xoff[r])), (unsigned)vw);
    for (int s = 0; s < rb; s++) {
      V cur = LLVMBuildLoad2(b, ck->vty, acc[r][s], "");
      LLVMBuildStore(b, cg_intrinsic(k, "llvm.fma", &ck->vty, 1, (V[]){a, dv[s], cur}, 3),
                     acc[r][s]);
    }
  }
  cg_loop_end(k, &lw);
  cg_loop_end(k, &lr);
  cg_loop_end(k, &ln);
  V jb = cg_mul(k, j, cg_i64(k, (int64_t)p->ra * p->rb * vw));
  cl_acc_to_double(k, ck->dacc, jb, acc, ra, rb, p->rb, vw, ck->vty, ck->dvty);
}

static void cgo_block_cb(void *ck, int ra, int rb, V j, V n0, V n1, V od, V oh0, V oh1) {
  cgo_block(ck, ra, rb, j, n0, n1, od, oh0, oh1);
}

/* One tile with blocks of rb output vectors. */
static void cgo_body(cgo_kern *ck, int rb) {
  cg_kernel *k = ck->k;
  const cgo_plan *p = ck->p;
  const nn_window *t = &p->t;
  LLVMBuilderRef b = k->b;
  int vw = p->vw;
  int64_t blk = (int64_t)p->ra * p->rb * vw;
  cg_loop lfj, lfr, lfs, lfl;
  /* row blocks of this super block; the last of all may be a tail of ra_tail rows */
  V first, nblk;
  cl_walk_emit(k,
               &(cl_walk){.sb = ck->sb, .dacc = ck->dacc, .n_zero = p->rs * blk, .rs = p->rs,
                          .nob = p->nob, .batch = p->batch, .nb = p->nb, .rh = p->rh,
                          .ra = p->ra, .ra_tail = (int)p->ra_tail, .rb = rb, .t = t,
                          .block = cgo_block_cb, .ck = ck},
               &first, &nblk);
  /* dW[g*mg + oc][row] for the real rows and output channels */
  V fj = cg_loop_begin(k, &lfj, cg_i64(k, 0), nblk, NULL, "j");
  V fr = cg_loop_begin(k, &lfr, cg_i64(k, 0), cg_i64(k, p->ra), NULL, "r");
  V fs = cg_loop_begin(k, &lfs, cg_i64(k, 0), cg_i64(k, rb), NULL, "s");
  V fl = cg_loop_begin(k, &lfl, cg_i64(k, 0), cg_i64(k, vw), NULL, "l");
  V oc = cg_add(k, cg_add(k, cg_mul(k, ck->ib, cg_i64(k, p->bw)), cg_mul(k, fs, cg_i64(k, vw))),
                fl);
  V row = cg_add(k, cg_mul(k, cg_add(k, first, fj), cg_i64(k, p->ra)), fr);
  cg_if ok;
  cg_if_begin(k, &ok, LLVMBuildAnd(b, LLVMBuildICmp(b, LLVMIntSLT, oc, cg_i64(k, p->mg), ""),
                                   LLVMBuildICmp(b, LLVMIntSLT, row, cg_i64(k, p->nrows), ""),
                                   ""));
  V src = cg_add(k, cg_add(k, cg_mul(k, fj, cg_i64(k, blk)),
                           cg_mul(k, cg_add(k, cg_mul(k, fr, cg_i64(k, p->rb)), fs),
                                  cg_i64(k, vw))),
                 fl);
  V dst = cg_add(k, cg_mul(k, cg_add(k, cg_mul(k, ck->grp, cg_i64(k, p->mg)), oc),
                           cg_i64(k, p->nrows)),
                 row);
  cg_store(k, trunc32(k, cg_load(k, k->t->f64, ck->dacc, src)), ck->dw, dst);
  cg_if_end(k, &ok);
  cg_loop_end(k, &lfl);
  cg_loop_end(k, &lfs);
  cg_loop_end(k, &lfr);
  cg_loop_end(k, &lfj);
}

/* args Xp, dYt, dW, row offsets; one tile per (group, row super block, output-vector block). */
static kiln_code cgo_main(kiln_emit_ctx *cx, const cgo_plan *p, const int *bufs, kiln_err *e) {
  cg_kernel kk;
  cg_kernel *k = &kk;
  KILN_TRY(cg_kernel_begin(cx, k, "conv_grad_weight_oc", 4, e));
  LLVMBuilderRef b = k->b;
  cgo_kern ck = {.k = k, .p = p, .xp = cg_arg(k, 0), .dyt = cg_arg(k, 1), .dw = cg_arg(k, 2),
                 .tab = cg_arg(k, 3), .vty = LLVMVectorType(k->t->f32, (unsigned)p->vw),
                 .dvty = LLVMVectorType(k->t->f64, (unsigned)p->vw)};
  ck.dacc = cg_entry_alloca(k, LLVMArrayType(k->t->f64,
                                             (unsigned)(p->rs * p->ra * p->rb * p->vw)));
  cg_loop lt;
  V tile = cg_loop_begin(k, &lt, k->lo, k->hi, NULL, "tile");
  ck.ib = LLVMBuildSRem(b, tile, cg_i64(k, p->nib), "");
  V rest = LLVMBuildSDiv(b, tile, cg_i64(k, p->nib), "");
  ck.sb = LLVMBuildSRem(b, rest, cg_i64(k, p->nsb), "");
  ck.grp = LLVMBuildSDiv(b, rest, cg_i64(k, p->nsb), "");
  if (p->rb_tail) {
    cg_ifelse ie;
    cg_ifelse_begin(k, &ie, LLVMBuildICmp(b, LLVMIntEQ, ck.ib, cg_i64(k, p->nib - 1), ""));
    cgo_body(&ck, p->rb_tail);
    cg_ifelse_else(k, &ie);
    cgo_body(&ck, p->rb);
    cg_ifelse_end(k, &ie);
  } else {
    cgo_body(&ck, p->rb);
  }
  cg_loop_end(k, &lt);
  return cg_kernel_end(cx, k, p->group * p->nsb * p->nib, bufs, e);
}

/* The output-channel plan: for groups with fewer input channels than a vector and at least
 * a vector of output channels. */
static bool cgo_make_plan(kiln_emit_ctx *cx, const cgw_plan *w, cgo_plan *p) {
  memset(p, 0, sizeof *p);
  p->batch = w->batch, p->c = w->c, p->m = w->m, p->group = w->group;
  p->cg = w->cg, p->mg = w->mg, p->t = w->t;
  const nn_window *t = &p->t;
  p->kvol = t->kernel[0] * t->kernel[1] * t->kernel[2];
  p->nrows = p->cg * p->kvol;
  bool wide = cg_avx512(cx);
  p->vw = wide ? 16 : 8;
  if (p->cg >= p->vw || p->mg < p->vw || p->nrows < 1) return false;
  for (int d = 0; d < 3; d++)
    p->P[d] = (t->out[d] - 1) * t->stride[d] + (t->kernel[d] - 1) * t->dilation[d] + 1;
  p->mgv = div_up(p->mg, p->vw);
  if (!gemm_block(p->nrows, p->mgv, wide ? 32 : 16, (int64_t)p->vw * 8, &p->ra, &p->rb))
    return false;
  p->nob = div_up(p->nrows, p->ra);
  p->nib = div_up(p->mgv, p->rb);
  p->bw = (int64_t)p->rb * p->vw;
  p->mgp = p->nib * p->bw;
  p->ra_tail = (int)(p->nrows % p->ra);
  p->rb_tail = (int)(p->mgv % p->rb);
  /* super blocks: few enough that dYt is streamed a few times at most, enough for 4 tiles per
   * thread, the double sums within the stack budget */
  int64_t want = 4 * (int64_t)cg_threads(cx), have = p->group * p->nib;
  p->nsb = have >= want ? 1 : div_up(want, have);
  if (p->nsb > p->nob) p->nsb = p->nob;
  p->rs = div_up(p->nob, p->nsb);
  int64_t max_rs = CL_STACK_BYTES / ((int64_t)p->ra * p->rb * p->vw * 8);
  if (p->rs > max_rs) p->rs = max_rs;
  if (p->rs < 1) return false;
  p->nsb = div_up(p->nob, p->rs);
  chunk_plan(t, p->batch, &p->nb, &p->rh);
  return true;
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
  cgl_plan cl;
  if (cgl_make_plan(cx, &p, &cl)) {
    int64_t xt = p.batch * p.group * cl.P[0] * cl.P[1] * cl.P[2] * cl.cgp;
    int q = cg_buf_scratch(cx, sizeof(float) * (size_t)xt, e);
    if (q < 0) return e->code ? e->code : KILN_ERR_NOMEM;
    cgl_layout L = {.label = "conv_grad_weight_pack_cl", .batch = cl.batch, .group = cl.group,
                    .cg = cl.cg, .bw = cl.bw, .nib = cl.nib, .cgp = cl.cgp};
    for (int d = 0; d < 3; d++) L.in[d] = cl.t.in[d], L.pad[d] = cl.t.pad_begin[d], L.P[d] = cl.P[d];
    KILN_TRY(cgl_pack(cx, &L, xb, q, e));
    return cgl_main(cx, &cl, (int[]){q, dyb, cg_buf_value(cx, n->out[0])}, e);
  }
  cgo_plan co;
  if (cgo_make_plan(cx, &p, &co)) {
    const nn_window *ct = &co.t;
    int64_t xp = p.batch * p.c * co.P[0] * co.P[1] * co.P[2];
    int64_t dyt = p.batch * p.group * co.mgp * ct->out[0] * ct->out[1] * ct->out[2];
    int qx = cg_buf_scratch(cx, sizeof(float) * (size_t)xp, e);
    int qd = qx < 0 ? -1 : cg_buf_scratch(cx, sizeof(float) * (size_t)dyt, e);
    if (qd < 0) return e->code ? e->code : KILN_ERR_NOMEM;
    KILN_TRY(cgo_pack_x(cx, &co, xb, qx, e));
    cgl_layout L = {.label = "conv_grad_weight_pack_dyt", .batch = co.batch, .group = co.group,
                    .cg = co.mg, .bw = co.bw, .nib = co.nib, .cgp = co.mgp};
    for (int d = 0; d < 3; d++) L.in[d] = L.P[d] = ct->out[d];
    KILN_TRY(cgl_pack(cx, &L, dyb, qd, e));
    /* Xp offset of each (ic, tap) row of group 0 */
    int64_t *tab = kiln_malloc(sizeof(int64_t) * (size_t)co.nrows);
    if (!tab) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
    int64_t P12 = co.P[1] * co.P[2], k12 = ct->kernel[1] * ct->kernel[2];
    for (int64_t r = 0; r < co.nrows; r++) {
      int64_t ic = r / co.kvol, tap = r % co.kvol;
      tab[r] = ic * co.P[0] * P12 + (tap / k12) * ct->dilation[0] * P12 +
               (tap / ct->kernel[2] % ct->kernel[1]) * ct->dilation[1] * co.P[2] +
               (tap % ct->kernel[2]) * ct->dilation[2];
    }
    int qt = cg_buf_const(cx, tab, sizeof(int64_t) * (size_t)co.nrows, e);
    kiln_free(tab);
    if (qt < 0) return e->code ? e->code : KILN_ERR_NOMEM;
    return cgo_main(cx, &co, (int[]){qx, qd, cg_buf_value(cx, n->out[0]), qt}, e);
  }
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
