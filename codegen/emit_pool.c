/* emit_pool.c — emitters of MaxPool (with its optional Indices), AveragePool,
 * GlobalAveragePool and GlobalMaxPool.
 *
 * Windows are viewed as 3-D (nn_window_3d).  A tile is a run of output rows (plane, od, oh).
 * MaxPool splits each row at compile time into border columns, whose windows are clipped per
 * column, and interior columns, whose windows are whole along W: there the output row itself
 * is the running maximum, updated tap by tap with the columns innermost so the loop
 * vectorizes.  Every output takes its taps in (kd, kh, kw) order with the first valid tap
 * taken unconditionally and later ones only when strictly greater, as the reference does. */
#include <math.h>

#include "codegen/emit_nn.h"
#include "ir/ops/nn_window.h"

#define POOL_TILE_WORK 32768 /* taps per tile, about */

typedef struct pool_ctx {
  cg_kernel *k;
  nn_window t;
  int64_t in_plane;
  bool col_major;
  LLVMValueRef x, y, idx;
  LLVMValueRef xpl, ypl, pl; /* the row's input plane offset, output row offset, plane */
  LLVMValueRef lo[3], hi[3]; /* valid tap ranges of the row (dims 0, 1) */
  LLVMValueRef pos[3];       /* the row's od, oh */
} pool_ctx;

static kiln_code pool_window(const kiln_graph *g, const kiln_node *n, nn_window *t, kiln_err *e) {
  const kiln_value *x = ir_in(g, n, 0);
  const int64_t *ks;
  ir_attr_ints(n, "kernel_shape", &ks);
  nn_window w;
  KILN_TRY(nn_window_forward(n, &x->shape, x->name, ks, ir_attr_int(n, "ceil_mode") != 0, &w, e));
  *t = nn_window_3d(&w);
  return KILN_OK;
}

/* Taps k in [*lo, *hi) of output position o along dim d land inside [0, in) (clipped to K). */
static void tap_range(cg_kernel *k, const nn_window *t, int d, LLVMValueRef o, LLVMValueRef *lo,
                      LLVMValueRef *hi) {
  LLVMBuilderRef b = k->b;
  int64_t dil = t->dilation[d];
  LLVMValueRef start = nn_addc(k, nn_mulc(k, o, t->stride[d]), -t->pad_begin[d]);
  LLVMValueRef zero = cg_i64(k, 0);
  LLVMValueRef neg = LLVMBuildICmp(b, LLVMIntSLT, start, zero, "");
  LLVMValueRef up = LLVMBuildSDiv(b, nn_addc(k, LLVMBuildNeg(b, start, ""), dil - 1),
                                  cg_i64(k, dil), "");
  *lo = cg_select(k, neg, up, zero);
  LLVMValueRef rem = LLVMBuildNSWSub(b, cg_i64(k, t->in[d]), start, "");
  LLVMValueRef h = LLVMBuildSDiv(b, nn_addc(k, rem, dil - 1), cg_i64(k, dil), "");
  h = cg_select(k, LLVMBuildICmp(b, LLVMIntSGT, rem, zero, ""), h, zero);
  *hi = cg_min(k, h, cg_i64(k, t->kernel[d]));
}

/* Input coordinate of tap kk of output position o along dim d. */
static LLVMValueRef in_coord(cg_kernel *k, const nn_window *t, int d, LLVMValueRef o,
                             LLVMValueRef kk) {
  return cg_add(k, nn_addc(k, nn_mulc(k, o, t->stride[d]), -t->pad_begin[d]),
                nn_mulc(k, kk, t->dilation[d]));
}

/* Offset of (id, ih, iw) in its plane, and the Indices value's spatial part. */
static LLVMValueRef spatial_off(pool_ctx *pc, LLVMValueRef c[3]) {
  cg_kernel *k = pc->k;
  return cg_add(k, nn_mulc(k, cg_add(k, nn_mulc(k, c[0], pc->t.in[1]), c[1]), pc->t.in[2]), c[2]);
}
static LLVMValueRef index_off(pool_ctx *pc, LLVMValueRef c[3]) {
  cg_kernel *k = pc->k;
  if (!pc->col_major) return spatial_off(pc, c);
  /* storage_order=1: spatial dims column-major (first dim fastest) */
  return cg_add(k, c[0], nn_mulc(k, cg_add(k, c[1], nn_mulc(k, c[2], pc->t.in[1])), pc->t.in[0]));
}

/* One output element at column ow with clipped windows in every dim: max or average. */
static void emit_elem(pool_ctx *pc, LLVMValueRef ow, bool is_max, bool include_pad) {
  cg_kernel *k = pc->k;
  LLVMBuilderRef b = k->b;
  const nn_window *t = &pc->t;
  LLVMValueRef lo2, hi2;
  tap_range(k, t, 2, ow, &lo2, &hi2);
  LLVMTypeRef acc_ty = is_max ? k->t->f32 : k->t->f64;
  LLVMValueRef best = nn_alloca(k, acc_ty, "best"), at = NULL;
  LLVMBuildStore(b, is_max ? cg_f32(k, -INFINITY) : LLVMConstReal(k->t->f64, 0), best);
  if (is_max) {
    at = nn_alloca(k, k->t->i64, "at");
    LLVMBuildStore(b, cg_i64(k, -1), at);
  }
  cg_loop l0, l1, l2;
  LLVMValueRef kd = cg_loop_begin(k, &l0, pc->lo[0], pc->hi[0], NULL, "kd");
  LLVMValueRef kh = cg_loop_begin(k, &l1, pc->lo[1], pc->hi[1], NULL, "kh");
  LLVMValueRef kw = cg_loop_begin(k, &l2, lo2, hi2, NULL, "kw");
  LLVMValueRef c[3] = {in_coord(k, t, 0, pc->pos[0], kd), in_coord(k, t, 1, pc->pos[1], kh),
                       in_coord(k, t, 2, ow, kw)};
  LLVMValueRef v = cg_load(k, k->t->f32, pc->x, cg_add(k, pc->xpl, spatial_off(pc, c)));
  LLVMValueRef cur = LLVMBuildLoad2(b, acc_ty, best, "");
  if (is_max) {
    LLVMValueRef a = LLVMBuildLoad2(b, k->t->i64, at, "");
    LLVMValueRef take = LLVMBuildOr(b, LLVMBuildICmp(b, LLVMIntSLT, a, cg_i64(k, 0), ""),
                                    LLVMBuildFCmp(b, LLVMRealOGT, v, cur, ""), "");
    LLVMBuildStore(b, cg_select(k, take, v, cur), best);
    LLVMBuildStore(b, cg_select(k, take, index_off(pc, c), a), at);
  } else {
    LLVMBuildStore(b, LLVMBuildFAdd(b, cur, LLVMBuildFPExt(b, v, k->t->f64, ""), ""), best);
  }
  cg_loop_end(k, &l2);
  cg_loop_end(k, &l1);
  cg_loop_end(k, &l0);
  LLVMValueRef yi = cg_add(k, pc->ypl, ow);
  LLVMValueRef res = LLVMBuildLoad2(b, acc_ty, best, "");
  if (is_max) {
    cg_store(k, res, pc->y, yi);
    if (pc->idx) {
      LLVMValueRef a = LLVMBuildLoad2(b, k->t->i64, at, "");
      LLVMValueRef neg = LLVMBuildICmp(b, LLVMIntSLT, a, cg_i64(k, 0), "");
      cg_store(k, cg_select(k, neg, cg_i64(k, -1), cg_add(k, nn_mulc(k, pc->pl, pc->in_plane), a)),
               pc->idx, yi);
    }
    return;
  }
  /* the divisor: taps inside the input, or inside the padded input with count_include_pad */
  LLVMValueRef count = cg_i64(k, 1);
  LLVMValueRef pos[3] = {pc->pos[0], pc->pos[1], ow};
  for (int d = 0; d < 3; d++) {
    LLVMValueRef n;
    if (include_pad) {
      int64_t padded = t->in[d] + t->pad_begin[d] + t->pad_end[d];
      LLVMValueRef rem =
          LLVMBuildNSWSub(b, cg_i64(k, padded), nn_mulc(k, pos[d], t->stride[d]), "");
      LLVMValueRef h = LLVMBuildSDiv(b, nn_addc(k, rem, t->dilation[d] - 1),
                                     cg_i64(k, t->dilation[d]), "");
      h = cg_select(k, LLVMBuildICmp(b, LLVMIntSGT, rem, cg_i64(k, 0), ""), h, cg_i64(k, 0));
      n = cg_min(k, h, cg_i64(k, t->kernel[d]));
    } else {
      LLVMValueRef lo = d == 2 ? lo2 : pc->lo[d], hi = d == 2 ? hi2 : pc->hi[d];
      n = LLVMBuildNSWSub(b, hi, lo, "");
      n = cg_select(k, LLVMBuildICmp(b, LLVMIntSGT, n, cg_i64(k, 0), ""), n, cg_i64(k, 0));
    }
    count = cg_mul(k, count, n);
  }
  LLVMValueRef cd = LLVMBuildSIToFP(b, count, k->t->f64, "");
  LLVMValueRef avg = LLVMBuildFPTrunc(b, LLVMBuildFDiv(b, res, cd, ""), k->t->f32, "");
  LLVMValueRef pos_count = LLVMBuildICmp(b, LLVMIntSGT, count, cg_i64(k, 0), "");
  cg_store(k, cg_select(k, pos_count, avg, cg_f32(k, 0)), pc->y, yi);
}

/* Columns [a, b) one element at a time. */
static void emit_elems(pool_ctx *pc, int64_t a, int64_t b_, bool is_max, bool include_pad) {
  if (a >= b_) return;
  cg_loop l;
  LLVMValueRef ow = cg_loop_begin(pc->k, &l, cg_i64(pc->k, a), cg_i64(pc->k, b_), NULL, "ow");
  emit_elem(pc, ow, is_max, include_pad);
  cg_loop_end(pc->k, &l);
}

/* MaxPool over interior columns [a, b) (windows whole along W), columns innermost. */
static void emit_max_interior(pool_ctx *pc, int64_t a, int64_t b_) {
  cg_kernel *k = pc->k;
  LLVMBuilderRef b = k->b;
  const nn_window *t = &pc->t;
  LLVMValueRef nonempty =
      LLVMBuildAnd(b, LLVMBuildICmp(b, LLVMIntSLT, pc->lo[0], pc->hi[0], ""),
                   LLVMBuildICmp(b, LLVMIntSLT, pc->lo[1], pc->hi[1], ""), "");
  cg_loop l;
  LLVMValueRef ow;
  LLVMBasicBlockRef then_bb = LLVMAppendBasicBlockInContext(k->ctx, k->fn, "win");
  LLVMBasicBlockRef else_bb = LLVMAppendBasicBlockInContext(k->ctx, k->fn, "nowin");
  LLVMBasicBlockRef merge = LLVMAppendBasicBlockInContext(k->ctx, k->fn, "wdone");
  LLVMBuildCondBr(b, nonempty, then_bb, else_bb);
  LLVMPositionBuilderAtEnd(b, then_bb);
  /* the first valid tap (kd_lo, kh_lo, 0) starts every column */
  ow = cg_loop_begin(k, &l, cg_i64(k, a), cg_i64(k, b_), NULL, "ow");
  {
    LLVMValueRef c[3] = {in_coord(k, t, 0, pc->pos[0], pc->lo[0]),
                         in_coord(k, t, 1, pc->pos[1], pc->lo[1]),
                         in_coord(k, t, 2, ow, cg_i64(k, 0))};
    LLVMValueRef yi = cg_add(k, pc->ypl, ow);
    cg_store(k, cg_load(k, k->t->f32, pc->x, cg_add(k, pc->xpl, spatial_off(pc, c))), pc->y, yi);
    if (pc->idx)
      cg_store(k, cg_add(k, nn_mulc(k, pc->pl, pc->in_plane), index_off(pc, c)), pc->idx, yi);
  }
  cg_loop_end(k, &l);
  cg_loop l0, l1;
  LLVMValueRef kd = cg_loop_begin(k, &l0, pc->lo[0], pc->hi[0], NULL, "kd");
  LLVMValueRef kh = cg_loop_begin(k, &l1, pc->lo[1], pc->hi[1], NULL, "kh");
  for (int64_t kw = 0; kw < t->kernel[2]; kw++) {
    ow = cg_loop_begin(k, &l, cg_i64(k, a), cg_i64(k, b_), NULL, "ow");
    LLVMValueRef c[3] = {in_coord(k, t, 0, pc->pos[0], kd), in_coord(k, t, 1, pc->pos[1], kh),
                         in_coord(k, t, 2, ow, cg_i64(k, kw))};
    LLVMValueRef v = cg_load(k, k->t->f32, pc->x, cg_add(k, pc->xpl, spatial_off(pc, c)));
    LLVMValueRef yi = cg_add(k, pc->ypl, ow);
    LLVMValueRef cur = cg_load(k, k->t->f32, pc->y, yi);
    LLVMValueRef take = LLVMBuildFCmp(b, LLVMRealOGT, v, cur, "");
    cg_store(k, cg_select(k, take, v, cur), pc->y, yi);
    if (pc->idx) {
      LLVMValueRef ix = cg_add(k, nn_mulc(k, pc->pl, pc->in_plane), index_off(pc, c));
      cg_store(k, cg_select(k, take, ix, cg_load(k, k->t->i64, pc->idx, yi)), pc->idx, yi);
    }
    cg_loop_end(k, &l);
  }
  cg_loop_end(k, &l1);
  cg_loop_end(k, &l0);
  LLVMBuildBr(b, merge);
  LLVMPositionBuilderAtEnd(b, else_bb);
  ow = cg_loop_begin(k, &l, cg_i64(k, a), cg_i64(k, b_), NULL, "ow");
  cg_store(k, cg_f32(k, -INFINITY), pc->y, cg_add(k, pc->ypl, ow));
  if (pc->idx) cg_store(k, cg_i64(k, -1), pc->idx, cg_add(k, pc->ypl, ow));
  cg_loop_end(k, &l);
  LLVMBuildBr(b, merge);
  LLVMPositionBuilderAtEnd(b, merge);
}

static kiln_code emit_window_pool(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                                  bool is_max, kiln_err *e) {
  const kiln_value *x = ir_in(g, n, 0);
  pool_ctx pc = {0};
  KILN_TRY(pool_window(g, n, &pc.t, e));
  const nn_window *t = &pc.t;
  int64_t planes = x->shape.d[0] * x->shape.d[1];
  int64_t rows = planes * t->out[0] * t->out[1], OW = t->out[2];
  if (rows * OW == 0) return KILN_OK;
  pc.in_plane = t->in[0] * t->in[1] * t->in[2];
  bool has_idx = is_max && n->n_out > 1 && n->out[1] >= 0;
  pc.col_major = is_max && ir_attr_int(n, "storage_order") == 1;
  bool include_pad = !is_max && ir_attr_int(n, "count_include_pad") != 0;
  /* interior columns: every W tap inside the input */
  int64_t s = t->stride[2], pb = t->pad_begin[2];
  int64_t owl = (pb + s - 1) / s;
  int64_t last = t->in[2] - 1 - (t->kernel[2] - 1) * t->dilation[2] + pb;
  int64_t owr = last >= 0 ? last / s + 1 : 0;
  if (owl > OW) owl = OW;
  if (owr > OW) owr = OW;
  if (owr < owl) owr = owl;
  if (!is_max) owl = owr = OW; /* averages: element by element */
  int64_t vol = t->kernel[0] * t->kernel[1] * t->kernel[2];
  int64_t per = POOL_TILE_WORK / (OW * vol);
  if (per < 1) per = 1;
  int64_t n_tiles = (rows + per - 1) / per;

  cg_kernel k;
  KILN_TRY(cg_kernel_begin(cx, &k, is_max ? "maxpool" : "avgpool", has_idx ? 3 : 2, e));
  pc.k = &k;
  pc.x = cg_arg(&k, 0);
  pc.y = cg_arg(&k, 1);
  if (has_idx) pc.idx = cg_arg(&k, 2);
  cg_loop lr;
  LLVMValueRef row = nn_items_begin(&k, &lr, per, rows);
  pc.pos[1] = LLVMBuildURem(k.b, row, cg_i64(&k, t->out[1]), "oh");
  LLVMValueRef rest = LLVMBuildUDiv(k.b, row, cg_i64(&k, t->out[1]), "");
  pc.pos[0] = LLVMBuildURem(k.b, rest, cg_i64(&k, t->out[0]), "od");
  pc.pl = LLVMBuildUDiv(k.b, rest, cg_i64(&k, t->out[0]), "pl");
  pc.xpl = nn_mulc(&k, pc.pl, pc.in_plane);
  pc.ypl = nn_mulc(&k, row, OW);
  for (int d = 0; d < 2; d++) tap_range(&k, t, d, pc.pos[d], &pc.lo[d], &pc.hi[d]);
  emit_elems(&pc, 0, owl, is_max, include_pad);
  if (owl < owr) emit_max_interior(&pc, owl, owr);
  emit_elems(&pc, owr, OW, is_max, include_pad);
  cg_loop_end(&k, &lr);
  int bufs[3] = {n->in[0], n->out[0], has_idx ? n->out[1] : -1};
  return cg_kernel_end(cx, &k, n_tiles, bufs, e);
}

static kiln_code emit_MaxPool(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                              kiln_err *e) {
  return emit_window_pool(cx, g, n, true, e);
}

static kiln_code emit_AveragePool(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                                  kiln_err *e) {
  return emit_window_pool(cx, g, n, false, e);
}

/* Global pools: one output per (n, c) plane; a tile is a run of planes. */
static kiln_code emit_global(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                             bool is_max, kiln_err *e) {
  const kiln_value *x = ir_in(g, n, 0);
  int64_t planes = x->shape.d[0] * x->shape.d[1], plane = 1;
  for (int i = 2; i < x->shape.rank; i++) plane *= x->shape.d[i];
  if (planes == 0) return KILN_OK;
  int64_t per = POOL_TILE_WORK / (plane ? plane : 1);
  if (per < 1) per = 1;
  int64_t n_tiles = (planes + per - 1) / per;
  cg_kernel k;
  KILN_TRY(cg_kernel_begin(cx, &k, is_max ? "globalmaxpool" : "globalavgpool", 2, e));
  LLVMBuilderRef b = k.b;
  LLVMValueRef xp = cg_arg(&k, 0), yp = cg_arg(&k, 1);
  cg_loop lp;
  LLVMValueRef p = nn_items_begin(&k, &lp, per, planes);
  LLVMValueRef off = nn_mulc(&k, p, plane);
  LLVMValueRef res;
  if (is_max) {
    /* the first element, then strictly greater ones (NaN first stays) */
    LLVMValueRef best = nn_alloca(&k, k.t->f32, "best");
    LLVMBuildStore(b, plane ? cg_load(&k, k.t->f32, xp, off) : cg_f32(&k, -INFINITY), best);
    if (plane > 1) {
      cg_loop l;
      LLVMValueRef i = cg_loop_begin(&k, &l, cg_i64(&k, 1), cg_i64(&k, plane), NULL, "i");
      LLVMValueRef v = cg_load(&k, k.t->f32, xp, cg_add(&k, off, i));
      LLVMValueRef cur = LLVMBuildLoad2(b, k.t->f32, best, "");
      LLVMBuildStore(b, cg_select(&k, LLVMBuildFCmp(b, LLVMRealOGT, v, cur, ""), v, cur), best);
      cg_loop_end(&k, &l);
    }
    res = LLVMBuildLoad2(b, k.t->f32, best, "");
  } else {
    LLVMValueRef sum = nn_sum_f64(&k, xp, off, plane, NULL);
    LLVMValueRef mean = LLVMBuildFDiv(b, sum, LLVMConstReal(k.t->f64, (double)plane), "");
    res = plane ? LLVMBuildFPTrunc(b, mean, k.t->f32, "") : cg_f32(&k, 0);
  }
  cg_store(&k, res, yp, p);
  cg_loop_end(&k, &lp);
  return cg_kernel_end(cx, &k, n_tiles, (int[]){n->in[0], n->out[0]}, e);
}

static kiln_code emit_GlobalAveragePool(kiln_emit_ctx *cx, const kiln_graph *g,
                                        const kiln_node *n, kiln_err *e) {
  return emit_global(cx, g, n, false, e);
}

static kiln_code emit_GlobalMaxPool(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                                    kiln_err *e) {
  return emit_global(cx, g, n, true, e);
}

void cg_register_pool(kiln_emit_fn *table) {
  table[KILN_OP_MaxPool] = emit_MaxPool;
  table[KILN_OP_AveragePool] = emit_AveragePool;
  table[KILN_OP_GlobalAveragePool] = emit_GlobalAveragePool;
  table[KILN_OP_GlobalMaxPool] = emit_GlobalMaxPool;
}
