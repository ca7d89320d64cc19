/* emit_linalg.c — emitters of the linalg op family: Gemm and MatMul (one register-tiled
 * matrix-multiply kernel with broadcast batches and a fused alpha/beta/C epilogue),
 * Softmax/LogSoftmax, and the losses SoftmaxCrossEntropyLoss / NegativeLogLikelihoodLoss.
 *
 * Every kernel tiles its output statically (the tiling never depends on the thread count)
 * and each output element is computed by one fixed instruction sequence, so results are
 * bitwise identical for any number of threads. */
#include <math.h>
#include <string.h>

#include "codegen/emit.h"
#include "ir/ops/linalg.h"

/* ---- small IR helpers ---- */

static LLVMValueRef ld(cg_kernel *k, LLVMTypeRef ty, LLVMValueRef p) {
  return LLVMBuildLoad2(k->b, ty, p, "");
}
static void st(cg_kernel *k, LLVMValueRef v, LLVMValueRef p) { LLVMBuildStore(k->b, v, p); }

static LLVMValueRef fmuladd(cg_kernel *k, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) {
  LLVMTypeRef ty = LLVMTypeOf(a);
  return cg_intrinsic(k, "llvm.fmuladd", &ty, 1, (LLVMValueRef[]){a, b, c}, 3);
}

static LLVMValueRef sdiv_c(cg_kernel *k, LLVMValueRef a, int64_t d) {
  return d == 1 ? a : LLVMBuildSDiv(k->b, a, cg_i64(k, d), "");
}
static LLVMValueRef srem_c(cg_kernel *k, LLVMValueRef a, int64_t d) {
  return d == 1 ? cg_i64(k, 0) : LLVMBuildSRem(k->b, a, cg_i64(k, d), "");
}

/* Element offset of batch index `bi` (over `batch`) in an operand whose batch dims have
 * strides st[] (0 on broadcast dims). */
static LLVMValueRef batch_offset(cg_kernel *k, LLVMValueRef bi, const kiln_shape *batch,
                                 const int64_t *strides) {
  LLVMValueRef off = cg_i64(k, 0), rem = bi;
  for (int d = batch->rank - 1; d >= 0; d--) {
    if (batch->d[d] == 1) continue;
    LLVMValueRef c = srem_c(k, rem, batch->d[d]);
    rem = sdiv_c(k, rem, batch->d[d]);
    if (strides[d]) off = cg_add(k, off, cg_mul(k, c, cg_i64(k, strides[d])));
  }
  return off;
}

/* Strides (in units of `unit` elements) to read shape `in` broadcast to `out`. */
static void bcast_strides(const kiln_shape *in, const kiln_shape *out, int64_t unit, int64_t *s) {
  int64_t acc = unit;
  for (int i = out->rank - 1; i >= 0; i--) {
    int j = i - (out->rank - in->rank);
    s[i] = (j < 0 || in->d[j] == 1) ? 0 : acc;
    if (j >= 0) acc *= in->d[j];
  }
}

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* ---- matrix multiply: Y[b] = alpha * A[b] @ B[b] (+ beta * C) ---- */

typedef struct mm_plan {
  kiln_dtype dt;
  int64_t M, N, K;
  kiln_shape batch;             /* broadcast batch shape (rank 0 for Gemm) */
  int64_t a_bst[KILN_MAX_RANK]; /* batch strides of A in elements (0: broadcast) */
  int64_t b_bst[KILN_MAX_RANK]; /* and of B */
  int64_t sa_m, sa_k;           /* A element (m, k) at a0 + m*sa_m + k*sa_k */
  int64_t sb_k, sb_n;           /* B element (k, n); sb_n == 1 on the float path */
  bool has_c;
  int64_t sc_m, sc_n; /* C broadcast strides over [M, N] */
  double alpha, beta;
  bool gemm; /* integer epilogue rules of Gemm */
} mm_plan;

enum { MM_RB = 4 };   /* rows of the register tile */
enum { MM_KC = 256 }; /* k block: a KC x CW panel of B stays in L1 across the row blocks */

/* Where a register tile's k range sits in the K blocks: `first`/`last` are i1 values, or
 * NULL when the tile covers all of K (then it is both). */
typedef struct mm_kblock {
  LLVMValueRef lo, hi, first, last;
} mm_kblock;

/* The register tile: `rows` (<= MM_RB) rows by `nv` vectors of VW floats at output row
 * `i`, column `j`, the last vector with `last` live lanes.  Accumulates k over kb in order
 * (one fmuladd per element per k).  Between k blocks the partial sums wait in Y (a float
 * store and reload is exact, so blocking does not change any result); after the last block
 * the epilogue (alpha, beta * C) is applied. */
static void mm_tile(cg_kernel *k, const mm_plan *p, LLVMValueRef acc_slots[][8], int rows, int nv,
                    unsigned vw, unsigned last, LLVMValueRef a0, LLVMValueRef b0, LLVMValueRef y0,
                    LLVMValueRef i, LLVMValueRef j, const mm_kblock *kb) {
  LLVMTypeRef vty = LLVMVectorType(k->t->f32, vw);
  LLVMValueRef A = cg_arg(k, 0), B = cg_arg(k, 1), Y = cg_arg(k, 2);
  LLVMValueRef yidx[MM_RB][8];
  for (int r = 0; r < rows; r++) {
    LLVMValueRef yrow = cg_add(k, y0, cg_mul(k, cg_add(k, i, cg_i64(k, r)), cg_i64(k, p->N)));
    for (int v = 0; v < nv; v++) {
      yidx[r][v] = cg_add(k, yrow, cg_add(k, j, cg_i64(k, v * (int64_t)vw)));
      st(k, LLVMConstNull(vty), acc_slots[r][v]);
    }
  }
  if (kb->first) {
    cg_if resume;
    cg_if_begin(k, &resume, LLVMBuildNot(k->b, kb->first, ""));
    for (int r = 0; r < rows; r++)
      for (int v = 0; v < nv; v++)
        st(k, cg_vload(k, Y, yidx[r][v], vw, v == nv - 1 ? last : vw), acc_slots[r][v]);
    cg_if_end(k, &resume);
  }
  cg_loop lk;
  LLVMValueRef kk = cg_loop_begin(k, &lk, kb->lo, kb->hi, NULL, "k");
  LLVMValueRef bv[8];
  LLVMValueRef brow = cg_add(k, b0, cg_add(k, cg_mul(k, kk, cg_i64(k, p->sb_k)), j));
  for (int v = 0; v < nv; v++)
    bv[v] = cg_vload(k, B, cg_add(k, brow, cg_i64(k, v * (int64_t)vw)), vw, v == nv - 1 ? last : vw);
  LLVMValueRef acol = cg_add(k, a0, cg_mul(k, kk, cg_i64(k, p->sa_k)));
  for (int r = 0; r < rows; r++) {
    LLVMValueRef ar = cg_add(k, acol, cg_mul(k, cg_add(k, i, cg_i64(k, r)), cg_i64(k, p->sa_m)));
    LLVMValueRef as = cg_splat(k, cg_load(k, k->t->f32, A, ar), vw);
    for (int v = 0; v < nv; v++)
      st(k, fmuladd(k, as, bv[v], ld(k, vty, acc_slots[r][v])), acc_slots[r][v]);
  }
  cg_loop_end(k, &lk);
  cg_if fin, not_fin;
  if (kb->last) {
    /* not the last k block: park the partial sums in Y */
    cg_if_begin(k, &not_fin, LLVMBuildNot(k->b, kb->last, ""));
    for (int r = 0; r < rows; r++)
      for (int v = 0; v < nv; v++)
        cg_vstore(k, ld(k, vty, acc_slots[r][v]), Y, yidx[r][v], vw, v == nv - 1 ? last : vw);
    cg_if_end(k, &not_fin);
    cg_if_begin(k, &fin, kb->last);
  }
  for (int r = 0; r < rows; r++) {
    LLVMValueRef row = cg_add(k, i, cg_i64(k, r));
    for (int v = 0; v < nv; v++) {
      unsigned lanes = v == nv - 1 ? last : vw;
      LLVMValueRef col = cg_add(k, j, cg_i64(k, v * (int64_t)vw));
      LLVMValueRef val = ld(k, vty, acc_slots[r][v]);
      if (p->alpha != 1.0) val = LLVMBuildFMul(k->b, val, cg_splat(k, cg_f32(k, p->alpha), vw), "");
      if (p->has_c) {
        LLVMValueRef C = cg_arg(k, 3), cv;
        LLVMValueRef cidx = cg_mul(k, row, cg_i64(k, p->sc_m));
        if (p->sc_n)
          cv = cg_vload(k, C, cg_add(k, cidx, col), vw, lanes);
        else
          cv = cg_splat(k, cg_load(k, k->t->f32, C, cidx), vw);
        if (p->beta != 1.0) cv = LLVMBuildFMul(k->b, cv, cg_splat(k, cg_f32(k, p->beta), vw), "");
        val = LLVMBuildFAdd(k->b, val, cv, "");
      }
      cg_vstore(k, val, Y, yidx[r][v], vw, lanes);
    }
  }
  if (kb->last) cg_if_end(k, &fin);
}

/* lo + floor((hi - lo) / size) * size: where the full blocks of [lo, hi) end. */
static LLVMValueRef full_end(cg_kernel *k, LLVMValueRef lo, LLVMValueRef hi, int64_t size) {
  LLVMValueRef nb = LLVMBuildSDiv(k->b, LLVMBuildSub(k->b, hi, lo, ""), cg_i64(k, size), "");
  return cg_add(k, lo, cg_mul(k, nb, cg_i64(k, size)));
}

/* The float kernel.  Tiles: (batch, column group, row group), columns split first (each
 * column group reads its part of B once); inside a tile: k blocks, then column blocks,
 * then row blocks, so a KC x CW panel of B is reused from L1 by every row block. */
static kiln_code mm_emit_f32(kiln_emit_ctx *cx, const kiln_node *n, const mm_plan *p,
                             const int *bufs, int n_bufs, kiln_err *e) {
  unsigned vw = cg_avx512(cx) ? 16 : 8;
  int vb = cg_avx512(cx) ? 4 : 2; /* vectors per register tile */
  int64_t cw = vb * (int64_t)vw;  /* columns per register tile */
  int64_t batch = 1;
  for (int d = 0; d < p->batch.rank; d++) batch *= p->batch.d[d];
  int64_t n_rb = ceil_div(p->M, MM_RB), n_cb = ceil_div(p->N, cw);
  /* about 64K multiply-adds per tile, at most 64 tiles per node */
  int64_t macs = batch * p->M * p->N * (p->K ? p->K : 1);
  int64_t want = macs / 65536;
  if (want > 64) want = 64;
  if (want < 1) want = 1;
  int64_t per_matrix = ceil_div(want, batch);
  int64_t col_groups = per_matrix < n_cb ? per_matrix : n_cb;
  int64_t cb_per = ceil_div(n_cb, col_groups);
  int64_t row_groups = per_matrix / ceil_div(n_cb, cb_per);
  if (row_groups > n_rb) row_groups = n_rb;
  if (row_groups < 1) row_groups = 1;
  int64_t rb_per = ceil_div(n_rb, row_groups);
  int64_t rows_pt = rb_per * MM_RB, cols_pt = cb_per * cw;
  int64_t n_rt = ceil_div(p->M, rows_pt), n_ct = ceil_div(p->N, cols_pt);
  int64_t n_tiles = batch * n_ct * n_rt;
  int64_t n_kb = p->K > MM_KC + MM_KC / 4 ? ceil_div(p->K, MM_KC) : 1;

  cg_kernel kk;
  cg_kernel *k = &kk;
  KILN_TRY(cg_kernel_begin(cx, k, "matmul_f32", n_bufs, e));
  LLVMTypeRef vty = LLVMVectorType(k->t->f32, vw);
  LLVMValueRef slots[MM_RB][8];
  for (int r = 0; r < MM_RB; r++)
    for (int v = 0; v < vb; v++) slots[r][v] = cg_entry_alloca(k, vty);
  cg_loop lt, lkb;
  LLVMValueRef t = cg_loop_begin(k, &lt, k->lo, k->hi, NULL, "tile");
  LLVMValueRef rt = srem_c(k, t, n_rt);
  LLVMValueRef ct = srem_c(k, sdiv_c(k, t, n_rt), n_ct);
  LLVMValueRef bi = sdiv_c(k, t, n_rt * n_ct);
  LLVMValueRef a0 = batch_offset(k, bi, &p->batch, p->a_bst);
  LLVMValueRef b0 = batch_offset(k, bi, &p->batch, p->b_bst);
  LLVMValueRef y0 = cg_mul(k, bi, cg_i64(k, p->M * p->N));
  LLVMValueRef r_lo = cg_mul(k, rt, cg_i64(k, rows_pt));
  LLVMValueRef r_hi = cg_min(k, cg_add(k, r_lo, cg_i64(k, rows_pt)), cg_i64(k, p->M));
  LLVMValueRef c_lo = cg_mul(k, ct, cg_i64(k, cols_pt));
  LLVMValueRef c_hi = cg_min(k, cg_add(k, c_lo, cg_i64(k, cols_pt)), cg_i64(k, p->N));
  /* a partial block exists only in the last tile of a dimension, with the compile-time
   * size M % RB (N % CW) */
  LLVMValueRef r_full = full_end(k, r_lo, r_hi, MM_RB), c_full = full_end(k, c_lo, c_hi, cw);
  int64_t r_tail = p->M % MM_RB, c_tail = p->N % cw;
  int tail_nv = (int)ceil_div(c_tail, vw);
  unsigned tail_last = (unsigned)(c_tail - (int64_t)(tail_nv - 1) * vw);
  mm_kblock kb = {.lo = cg_i64(k, 0), .hi = cg_i64(k, p->K)};
  if (n_kb > 1) {
    LLVMValueRef kbi = cg_loop_begin(k, &lkb, cg_i64(k, 0), cg_i64(k, n_kb), NULL, "kb");
    kb.lo = cg_mul(k, kbi, cg_i64(k, MM_KC));
    kb.hi = cg_min(k, cg_add(k, kb.lo, cg_i64(k, MM_KC)), cg_i64(k, p->K));
    kb.first = LLVMBuildICmp(k->b, LLVMIntEQ, kbi, cg_i64(k, 0), "");
    kb.last = LLVMBuildICmp(k->b, LLVMIntEQ, kbi, cg_i64(k, n_kb - 1), "");
  }
  /* for each column block (full ones, then the partial one in the last column group) */
  for (int cpart = 0; cpart < 2; cpart++) {
    if (cpart == 1 && !c_tail) break;
    cg_loop lc;
    cg_if cif;
    LLVMValueRef j;
    int nv = vb;
    unsigned last = vw;
    if (cpart == 0) {
      j = cg_loop_begin(k, &lc, c_lo, c_full, cg_i64(k, cw), "j");
    } else {
      cg_if_begin(k, &cif, LLVMBuildICmp(k->b, LLVMIntEQ, c_hi, cg_i64(k, p->N), ""));
      j = cg_i64(k, p->N - c_tail);
      nv = tail_nv, last = tail_last;
    }
    cg_loop lr;
    LLVMValueRef i = cg_loop_begin(k, &lr, r_lo, r_full, cg_i64(k, MM_RB), "i");
    mm_tile(k, p, slots, MM_RB, nv, vw, last, a0, b0, y0, i, j, &kb);
    cg_loop_end(k, &lr);
    if (r_tail) {
      cg_if rif;
      cg_if_begin(k, &rif, LLVMBuildICmp(k->b, LLVMIntEQ, r_hi, cg_i64(k, p->M), ""));
      mm_tile(k, p, slots, (int)r_tail, nv, vw, last, a0, b0, y0, cg_i64(k, p->M - r_tail), j, &kb);
      cg_if_end(k, &rif);
    }
    if (cpart == 0)
      cg_loop_end(k, &lc);
    else
      cg_if_end(k, &cif);
  }
  if (n_kb > 1) cg_loop_end(k, &lkb);
  cg_loop_end(k, &lt);
  return cg_kernel_end(cx, k, n_tiles, bufs, e);
}

/* The integer kernel: plain loops, 64-bit wrapping accumulation like the reference. */
static kiln_code mm_emit_int(kiln_emit_ctx *cx, const kiln_node *n, const mm_plan *p,
                             const int *bufs, int n_bufs, kiln_err *e) {
  int64_t batch = 1;
  for (int d = 0; d < p->batch.rank; d++) batch *= p->batch.d[d];
  int64_t rows = batch * p->M;
  int64_t per_row = p->N * (p->K ? p->K : 1);
  int64_t rpt = per_row >= 16384 ? 1 : 16384 / per_row;
  if (rpt > rows) rpt = rows;
  int64_t n_tiles = ceil_div(rows, rpt);
  cg_kernel kk;
  cg_kernel *k = &kk;
  KILN_TRY(cg_kernel_begin(cx, k, "matmul_int", n_bufs, e));
  LLVMTypeRef et = cg_dtype(k, p->dt), i64 = k->t->i64;
  LLVMValueRef acc = cg_entry_alloca(k, i64);
  LLVMValueRef A = cg_arg(k, 0), B = cg_arg(k, 1), Y = cg_arg(k, 2);
  cg_loop lr, lj, lk;
  LLVMValueRef row =
      cg_loop_begin(k, &lr, cg_mul(k, k->lo, cg_i64(k, rpt)),
                    cg_min(k, cg_mul(k, k->hi, cg_i64(k, rpt)), cg_i64(k, rows)), NULL, "row");
  LLVMValueRef bi = sdiv_c(k, row, p->M), i = srem_c(k, row, p->M);
  LLVMValueRef a0 =
      cg_add(k, batch_offset(k, bi, &p->batch, p->a_bst), cg_mul(k, i, cg_i64(k, p->sa_m)));
  LLVMValueRef b0 = batch_offset(k, bi, &p->batch, p->b_bst);
  LLVMValueRef j = cg_loop_begin(k, &lj, cg_i64(k, 0), cg_i64(k, p->N), NULL, "j");
  st(k, cg_i64(k, 0), acc);
  LLVMValueRef kv = cg_loop_begin(k, &lk, cg_i64(k, 0), cg_i64(k, p->K), NULL, "k");
  LLVMValueRef av = cg_load(k, et, A, cg_add(k, a0, cg_mul(k, kv, cg_i64(k, p->sa_k))));
  LLVMValueRef bidx =
      cg_add(k, b0, cg_add(k, cg_mul(k, kv, cg_i64(k, p->sb_k)), cg_mul(k, j, cg_i64(k, p->sb_n))));
  LLVMValueRef bv = cg_load(k, et, B, bidx);
  if (et != i64) {
    av = LLVMBuildSExt(k->b, av, i64, "");
    bv = LLVMBuildSExt(k->b, bv, i64, "");
  }
  /* plain add/mul (no nsw): two's complement wrap-around, as the reference */
  st(k, LLVMBuildAdd(k->b, ld(k, i64, acc), LLVMBuildMul(k->b, av, bv, ""), ""), acc);
  cg_loop_end(k, &lk);
  LLVMValueRef res = ld(k, i64, acc);
  if (p->gemm && (p->alpha != 1.0 || (p->has_c && p->beta != 1.0))) {
    /* the reference's general case: alpha*acc + beta*c in double, then converted */
    LLVMValueRef d = LLVMBuildFMul(k->b, LLVMConstReal(k->t->f64, p->alpha),
                                   LLVMBuildSIToFP(k->b, res, k->t->f64, ""), "");
    if (p->has_c) {
      LLVMValueRef cidx =
          cg_add(k, cg_mul(k, i, cg_i64(k, p->sc_m)), cg_mul(k, j, cg_i64(k, p->sc_n)));
      LLVMValueRef cv = cg_load(k, et, cg_arg(k, 3), cidx);
      if (et != i64) cv = LLVMBuildSExt(k->b, cv, i64, "");
      d = LLVMBuildFAdd(k->b, d,
                        LLVMBuildFMul(k->b, LLVMConstReal(k->t->f64, p->beta),
                                      LLVMBuildSIToFP(k->b, cv, k->t->f64, ""), ""),
                        "");
    }
    /* saturating: an out-of-range double->int conversion is not poison */
    LLVMTypeRef tys[2] = {i64, k->t->f64};
    res = cg_intrinsic(k, "llvm.fptosi.sat", tys, 2, &d, 1);
  } else if (p->has_c) {
    LLVMValueRef cidx =
        cg_add(k, cg_mul(k, i, cg_i64(k, p->sc_m)), cg_mul(k, j, cg_i64(k, p->sc_n)));
    LLVMValueRef cv = cg_load(k, et, cg_arg(k, 3), cidx);
    if (et != i64) cv = LLVMBuildSExt(k->b, cv, i64, "");
    res = LLVMBuildAdd(k->b, res, cv, "");
  }
  if (et != i64) res = LLVMBuildTrunc(k->b, res, et, "");
  cg_store(k, res, Y, cg_add(k, cg_mul(k, row, cg_i64(k, p->N)), j));
  cg_loop_end(k, &lj);
  cg_loop_end(k, &lr);
  return cg_kernel_end(cx, k, n_tiles, bufs, e);
}

static kiln_code mm_emit(kiln_emit_ctx *cx, const kiln_node *n, const mm_plan *p, const int *bufs,
                         int n_bufs, kiln_err *e) {
  if (p->M == 0 || p->N == 0) return KILN_OK; /* empty output: nothing to compute */
  for (int d = 0; d < p->batch.rank; d++)
    if (p->batch.d[d] == 0) return KILN_OK;
  if (p->dt == KILN_F32) return mm_emit_f32(cx, n, p, bufs, n_bufs, e);
  return mm_emit_int(cx, n, p, bufs, n_bufs, e);
}

/* A kernel that writes src [R, C] transposed into dst [C, R] (a runtime B^T for Gemm). */
static kiln_code emit_transpose(kiln_emit_ctx *cx, int src, int dst, int64_t R, int64_t C,
                                kiln_err *e) {
  if (R == 0 || C == 0) return KILN_OK;
  int64_t cpt = R >= 16384 ? 1 : 16384 / R;
  if (cpt > C) cpt = C;
  cg_kernel kk;
  cg_kernel *k = &kk;
  KILN_TRY(cg_kernel_begin(cx, k, "transpose_f32", 2, e));
  cg_loop lc, lr;
  LLVMValueRef c =
      cg_loop_begin(k, &lc, cg_mul(k, k->lo, cg_i64(k, cpt)),
                    cg_min(k, cg_mul(k, k->hi, cg_i64(k, cpt)), cg_i64(k, C)), NULL, "c");
  LLVMValueRef r = cg_loop_begin(k, &lr, cg_i64(k, 0), cg_i64(k, R), NULL, "r");
  LLVMValueRef v = cg_load(k, k->t->f32, cg_arg(k, 0), cg_add(k, cg_mul(k, r, cg_i64(k, C)), c));
  cg_store(k, v, cg_arg(k, 1), cg_add(k, cg_mul(k, c, cg_i64(k, R)), r));
  cg_loop_end(k, &lr);
  cg_loop_end(k, &lc);
  return cg_kernel_end(cx, k, ceil_div(C, cpt), (int[]){src, dst}, e);
}

static kiln_code emit_Gemm(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                           kiln_err *e) {
  const kiln_value *a = ir_in(g, n, 0), *b = ir_in(g, n, 1), *c = ir_in(g, n, 2);
  const kiln_value *y = ir_out(g, n, 0);
  mm_plan p;
  memset(&p, 0, sizeof p);
  p.dt = y->dtype;
  p.gemm = true;
  bool ta = ir_attr_int(n, "transA") != 0, tb = ir_attr_int(n, "transB") != 0;
  p.alpha = ir_attr_float(n, "alpha");
  p.beta = ir_attr_float(n, "beta");
  p.M = y->shape.d[0];
  p.N = y->shape.d[1];
  p.K = a->shape.d[ta ? 0 : 1];
  p.sa_m = ta ? 1 : p.K;
  p.sa_k = ta ? p.M : 1;
  p.sb_k = tb ? 1 : p.N;
  p.sb_n = tb ? p.K : 1;
  int bbuf = cg_buf_value(cx, n->in[1]);
  if (tb && p.dt == KILN_F32) {
    /* the float kernel wants B as [K, N]: repack constant weights now, else transpose at
     * run time into scratch */
    const kiln_tensor *bc = ir_in_const(g, n, 1);
    size_t bytes = sizeof(float) * (size_t)(p.K * p.N);
    if (bc) {
      float *tr = kiln_malloc(bytes ? bytes : 1);
      if (!tr) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory (repacking '%s')", b->name);
      const float *src = bc->data;
      for (int64_t j = 0; j < p.N; j++)
        for (int64_t kk = 0; kk < p.K; kk++) tr[kk * p.N + j] = src[j * p.K + kk];
      bbuf = cg_buf_const(cx, tr, bytes, e);
      kiln_free(tr);
    } else {
      bbuf = cg_buf_scratch(cx, bytes, e);
      if (bbuf >= 0) KILN_TRY(emit_transpose(cx, cg_buf_value(cx, n->in[1]), bbuf, p.N, p.K, e));
    }
    if (bbuf < 0) return e->code ? e->code : KILN_ERR_NOMEM;
    p.sb_k = p.N;
    p.sb_n = 1;
  }
  int bufs[4] = {cg_buf_value(cx, n->in[0]), bbuf, cg_buf_value(cx, n->out[0]), -1};
  int n_bufs = 3;
  if (c) {
    kiln_shape mn = kiln_shape_make(2, (int64_t[]){p.M, p.N});
    int64_t cs[2];
    bcast_strides(&c->shape, &mn, 1, cs);
    p.has_c = true;
    p.sc_m = cs[0];
    p.sc_n = cs[1];
    bufs[n_bufs++] = cg_buf_value(cx, n->in[2]);
  }
  return mm_emit(cx, n, &p, bufs, n_bufs, e);
}

static kiln_code emit_MatMul(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                             kiln_err *e) {
  const kiln_value *a = ir_in(g, n, 0), *b = ir_in(g, n, 1);
  kiln_matmul_dims d;
  KILN_TRY(kiln_matmul_dims_of(&a->shape, a->name, &b->shape, b->name, &d, e));
  mm_plan p;
  memset(&p, 0, sizeof p);
  p.dt = ir_out(g, n, 0)->dtype;
  p.M = d.m, p.N = d.n, p.K = d.k;
  p.batch = d.batch;
  bcast_strides(&d.a_batch, &d.batch, d.m * d.k, p.a_bst);
  bcast_strides(&d.b_batch, &d.batch, d.k * d.n, p.b_bst);
  p.sa_m = d.k, p.sa_k = 1, p.sb_k = d.n, p.sb_n = 1;
  p.alpha = 1.0, p.beta = 1.0;
  int bufs[3] = {cg_buf_value(cx, n->in[0]), cg_buf_value(cx, n->in[1]),
                 cg_buf_value(cx, n->out[0])};
  return mm_emit(cx, n, &p, bufs, 3, e);
}

/* ---- Softmax / LogSoftmax ----
 * x viewed as [outer, len, inner]; each of the outer*inner rows (stride `inner`) is
 * normalised independently: max, then sum of exp(x - max) in double, then the outputs. */
static kiln_code emit_softmax_rows(kiln_emit_ctx *cx, const kiln_node *n, int xbuf, int ybuf,
                                   int64_t outer, int64_t len, int64_t inner, bool log_out,
                                   kiln_err *e) {
  int64_t rows = outer * inner;
  if (rows == 0 || len == 0) return KILN_OK;
  int64_t rpt = len >= 8192 ? 1 : 8192 / len;
  if (rpt > rows) rpt = rows;
  cg_kernel kk;
  cg_kernel *k = &kk;
  KILN_TRY(cg_kernel_begin(cx, k, log_out ? "logsoftmax" : "softmax", 2, e));
  LLVMTypeRef f32 = k->t->f32, f64 = k->t->f64;
  LLVMValueRef X = cg_arg(k, 0), Y = cg_arg(k, 1);
  LLVMValueRef mx_slot = cg_entry_alloca(k, f32), sum_slot = cg_entry_alloca(k, f64);
  cg_loop lr, l1, l2, l3;
  LLVMValueRef row =
      cg_loop_begin(k, &lr, cg_mul(k, k->lo, cg_i64(k, rpt)),
                    cg_min(k, cg_mul(k, k->hi, cg_i64(k, rpt)), cg_i64(k, rows)), NULL, "row");
  LLVMValueRef base =
      cg_add(k, cg_mul(k, sdiv_c(k, row, inner), cg_i64(k, len * inner)), srem_c(k, row, inner));
  LLVMValueRef sstride = cg_i64(k, inner);
  /* max (maxnum skips NaN like the reference's fmax) */
  st(k, cg_f32(k, -INFINITY), mx_slot);
  LLVMValueRef l = cg_loop_begin(k, &l1, cg_i64(k, 0), cg_i64(k, len), NULL, "l");
  LLVMValueRef xv = cg_load(k, f32, X, cg_add(k, base, cg_mul(k, l, sstride)));
  st(k, cg_intrinsic(k, "llvm.maxnum", &f32, 1, (LLVMValueRef[]){ld(k, f32, mx_slot), xv}, 2),
     mx_slot);
  cg_loop_end(k, &l1);
  LLVMValueRef mx = ld(k, f32, mx_slot);
  /* sum of exp(x - max) */
  st(k, LLVMConstReal(f64, 0), sum_slot);
  l = cg_loop_begin(k, &l2, cg_i64(k, 0), cg_i64(k, len), NULL, "l");
  LLVMValueRef idx = cg_add(k, base, cg_mul(k, l, sstride));
  LLVMValueRef z = LLVMBuildFSub(k->b, cg_load(k, f32, X, idx), mx, "");
  LLVMValueRef ez = cg_call_rt(k, "expf", f32, &z, 1);
  if (!log_out) cg_store(k, ez, Y, idx);
  st(k, LLVMBuildFAdd(k->b, ld(k, f64, sum_slot), LLVMBuildFPExt(k->b, ez, f64, ""), ""), sum_slot);
  cg_loop_end(k, &l2);
  LLVMValueRef sum = ld(k, f64, sum_slot);
  LLVMValueRef fin;
  if (log_out) {
    LLVMValueRef ls = cg_call_rt(k, "log", f64, &sum, 1);
    fin = LLVMBuildFPTrunc(k->b, ls, f32, "");
  } else {
    fin = LLVMBuildFPTrunc(k->b, sum, f32, "");
  }
  l = cg_loop_begin(k, &l3, cg_i64(k, 0), cg_i64(k, len), NULL, "l");
  idx = cg_add(k, base, cg_mul(k, l, sstride));
  if (log_out) {
    z = LLVMBuildFSub(k->b, cg_load(k, f32, X, idx), mx, "");
    cg_store(k, LLVMBuildFSub(k->b, z, fin, ""), Y, idx);
  } else {
    cg_store(k, LLVMBuildFDiv(k->b, cg_load(k, f32, Y, idx), fin, ""), Y, idx);
  }
  cg_loop_end(k, &l3);
  cg_loop_end(k, &lr);
  return cg_kernel_end(cx, k, ceil_div(rows, rpt), (int[]){xbuf, ybuf}, e);
}

static kiln_code emit_softmax(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                              bool log_out, kiln_err *e) {
  int64_t outer, len, inner;
  KILN_TRY(kiln_softmax_dims(n, &ir_in(g, n, 0)->shape, &outer, &len, &inner, e));
  return emit_softmax_rows(cx, n, cg_buf_value(cx, n->in[0]), cg_buf_value(cx, n->out[0]), outer,
                           len, inner, log_out, e);
}

static kiln_code emit_Softmax(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                              kiln_err *e) {
  return emit_softmax(cx, g, n, false, e);
}

static kiln_code emit_LogSoftmax(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                                 kiln_err *e) {
  return emit_softmax(cx, g, n, true, e);
}

/* ---- losses ----
 * The negative log-likelihood of log-probabilities [N, C, D] at labels [N, D]: per
 * element -w[t] * logp[n, t, d] (0 for ignore_index).  A label outside [0, C) that is not
 * ignored gives NaN (the reference reports an error; a kernel cannot, and must not read
 * out of bounds).  "none" is tiled over elements; "sum"/"mean" run in one tile that sums
 * in double in the reference's order, so the scalar is the reference's bit for bit. */
static kiln_code emit_nll(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n, int logp_buf,
                          const kiln_shape *xs, kiln_err *e) {
  const kiln_value *labels = ir_in(g, n, 1), *w = ir_in(g, n, 2);
  int64_t N = xs->d[0], C = xs->d[1], D = 1;
  for (int i = 2; i < xs->rank; i++) D *= xs->d[i];
  int64_t total = N * D;
  bool has_ii = ir_attr_has(n, "ignore_index");
  int64_t ii = has_ii ? ir_attr_int(n, "ignore_index") : 0;
  const char *red = ir_attr_str(n, "reduction");
  bool none = !strcmp(red, "none"), mean = !strcmp(red, "mean");
  if (none && total == 0) return KILN_OK;
  int64_t ept = none ? (total > 16384 ? 16384 : (total ? total : 1)) : (total ? total : 1);
  int64_t n_tiles = none ? ceil_div(total, ept) : 1;
  int status = cg_buf_status(cx, e);
  if (status < 0) return e->code;
  int bufs[5] = {logp_buf, cg_buf_value(cx, n->in[1]), cg_buf_value(cx, n->out[0]), status, -1};
  int n_bufs = 4;
  if (w) bufs[n_bufs++] = cg_buf_value(cx, n->in[2]);
  cg_kernel kk;
  cg_kernel *k = &kk;
  KILN_TRY(cg_kernel_begin(cx, k, "nll_loss", n_bufs, e));
  LLVMTypeRef f32 = k->t->f32, f64 = k->t->f64, i64 = k->t->i64;
  LLVMValueRef P = cg_arg(k, 0), T = cg_arg(k, 1), L = cg_arg(k, 2);
  LLVMValueRef sum_slot = cg_entry_alloca(k, f64), wsum_slot = cg_entry_alloca(k, f64);
  LLVMValueRef l_slot = cg_entry_alloca(k, f64), w_slot = cg_entry_alloca(k, f64);
  st(k, LLVMConstReal(f64, 0), sum_slot);
  st(k, LLVMConstReal(f64, 0), wsum_slot);
  cg_loop lp;
  LLVMValueRef pos =
      cg_loop_begin(k, &lp, cg_mul(k, k->lo, cg_i64(k, ept)),
                    cg_min(k, cg_mul(k, k->hi, cg_i64(k, ept)), cg_i64(k, total)), NULL, "p");
  LLVMValueRef t = cg_load(k, cg_dtype(k, labels->dtype), T, pos);
  if (labels->dtype != KILN_I64) t = LLVMBuildSExt(k->b, t, i64, "");
  /* defaults: an ignored element (loss 0, weight 0) */
  st(k, LLVMConstReal(f64, 0), l_slot);
  st(k, LLVMConstReal(f64, 0), w_slot);
  cg_if not_ignored;
  LLVMValueRef active = LLVMConstInt(k->t->i1, 1, 0);
  if (has_ii) active = LLVMBuildICmp(k->b, LLVMIntNE, t, cg_i64(k, ii), "");
  cg_if_begin(k, &not_ignored, active);
  {
    LLVMValueRef in_range = LLVMBuildAnd(k->b, LLVMBuildICmp(k->b, LLVMIntSGE, t, cg_i64(k, 0), ""),
                                         LLVMBuildICmp(k->b, LLVMIntSLT, t, cg_i64(k, C), ""), "");
    st(k, LLVMConstReal(f64, NAN), l_slot);
    st(k, LLVMConstReal(f64, NAN), w_slot);
    cg_if bad;
    cg_if_begin(k, &bad, LLVMBuildNot(k->b, in_range, ""));
    cg_flag_error(k, cg_arg(k, 3)); /* the runner reports it: never a silent NaN */
    cg_if_end(k, &bad);
    cg_if ok;
    cg_if_begin(k, &ok, in_range);
    LLVMValueRef wt = w ? cg_load(k, f32, cg_arg(k, 4), t) : cg_f32(k, 1.0);
    wt = LLVMBuildFPExt(k->b, wt, f64, "");
    LLVMValueRef nn = sdiv_c(k, pos, D), dd = srem_c(k, pos, D);
    LLVMValueRef pidx =
        cg_add(k, cg_mul(k, cg_add(k, cg_mul(k, nn, cg_i64(k, C)), t), cg_i64(k, D)), dd);
    /* in double like the reference (a product of two floats is exact there) */
    LLVMValueRef lp64 = LLVMBuildFPExt(k->b, cg_load(k, f32, P, pidx), f64, "");
    st(k, LLVMBuildFMul(k->b, LLVMBuildFNeg(k->b, wt, ""), lp64, ""), l_slot);
    st(k, wt, w_slot);
    cg_if_end(k, &ok);
  }
  cg_if_end(k, &not_ignored);
  LLVMValueRef lv = ld(k, f64, l_slot);
  if (none) {
    cg_store(k, LLVMBuildFPTrunc(k->b, lv, f32, ""), L, pos);
  } else {
    st(k, LLVMBuildFAdd(k->b, ld(k, f64, sum_slot), lv, ""), sum_slot);
    st(k, LLVMBuildFAdd(k->b, ld(k, f64, wsum_slot), ld(k, f64, w_slot), ""), wsum_slot);
  }
  cg_loop_end(k, &lp);
  if (!none) {
    LLVMValueRef s = ld(k, f64, sum_slot);
    if (mean) s = LLVMBuildFDiv(k->b, s, ld(k, f64, wsum_slot), "");
    cg_store(k, LLVMBuildFPTrunc(k->b, s, f32, ""), L, cg_i64(k, 0));
  }
  return cg_kernel_end_checked(cx, k, n_tiles, bufs, "a label is out of range [0, classes)", e);
}

static kiln_code emit_NegativeLogLikelihoodLoss(kiln_emit_ctx *cx, const kiln_graph *g,
                                                const kiln_node *n, kiln_err *e) {
  return emit_nll(cx, g, n, cg_buf_value(cx, n->in[0]), &ir_in(g, n, 0)->shape, e);
}

static kiln_code emit_SoftmaxCrossEntropyLoss(kiln_emit_ctx *cx, const kiln_graph *g,
                                              const kiln_node *n, kiln_err *e) {
  const kiln_value *x = ir_in(g, n, 0);
  int64_t N = x->shape.d[0], C = x->shape.d[1], D = 1, numel = 1;
  for (int i = 2; i < x->shape.rank; i++) D *= x->shape.d[i];
  for (int i = 0; i < x->shape.rank; i++) numel *= x->shape.d[i];
  /* log-probabilities over axis 1 into the log_prob output, or scratch when not wanted */
  int logp;
  if (n->n_out > 1 && n->out[1] >= 0) {
    logp = cg_buf_value(cx, n->out[1]);
  } else {
    logp = cg_buf_scratch(cx, sizeof(float) * (size_t)(numel ? numel : 1), e);
    if (logp < 0) return e->code ? e->code : KILN_ERR_NOMEM;
  }
  KILN_TRY(emit_softmax_rows(cx, n, cg_buf_value(cx, n->in[0]), logp, N, C, D, true, e));
  return emit_nll(cx, g, n, logp, &x->shape, e);
}

void cg_register_linalg(kiln_emit_fn *table) {
  table[KILN_OP_Gemm] = emit_Gemm;
  table[KILN_OP_MatMul] = emit_MatMul;
  table[KILN_OP_Softmax] = emit_Softmax;
  table[KILN_OP_LogSoftmax] = emit_LogSoftmax;
  table[KILN_OP_SoftmaxCrossEntropyLoss] = emit_SoftmaxCrossEntropyLoss;
  table[KILN_OP_NegativeLogLikelihoodLoss] = emit_NegativeLogLikelihoodLoss;
}
