/* emit_grad_pool.c — emitters of the grad_pool family: MaxPoolGrad, AveragePoolGrad and
 * ResizeGrad (see codegen/emit.h).
 *
 * The pool gradients tile over (N, C) planes: a tile owns whole planes of dX, zeroes them and
 * adds each window's gradient in output order, exactly as the reference does, so results are
 * bitwise equal to it for any thread count.  Window bounds are clipped per output position
 * (no per-tap bounds tests).  MaxPoolGrad first finds the argmax of every output of the plane
 * (vectorized over interior output columns, into scratch), then scatters.
 *
 * ResizeGrad is separable: one gather pass per resized axis (outermost first) through the
 * axis' adjoint table, computed here at compile time with the forward's own tap formulas
 * (ir/ops/grad_pool.h): each input index lists the output indices that read it and the summed
 * weights.  Every destination element sums its contributions in a fixed order, so there is no
 * racy scatter; passes go through scratch buffers. */
#include <string.h>

#include "codegen/emit_copy.h"
#include "ir/ops/grad_pool.h"
#include "ir/ops/nn_window.h"

/* ---- pools ---- */

static kiln_code window3(const kiln_node *n, const kiln_shape *x, nn_window *t, kiln_err *e) {
  const int64_t *ks;
  ir_attr_ints(n, "kernel_shape", &ks);
  nn_window w;
  KILN_TRY(nn_window_forward(n, x, "X", ks, ir_attr_int(n, "ceil_mode") != 0, &w, e));
  *t = nn_window_3d(&w);
  return KILN_OK;
}

/* The taps k in [*klo, *khi) of output position o along dim that fall inside the input:
 * 0 <= o*stride - pad + k*dilation < in. */
static void tap_range(cg_kernel *k, const nn_window *t, int dim, LLVMValueRef o, LLVMValueRef *klo,
                      LLVMValueRef *khi) {
  LLVMBuilderRef b = k->b;
  LLVMValueRef zero = cg_i64(k, 0), dil = cg_i64(k, t->dilation[dim]);
  LLVMValueRef start = cg_mul(k, o, cg_i64(k, t->stride[dim]));
  LLVMValueRef a = LLVMBuildNSWSub(b, cg_i64(k, t->pad_begin[dim]), start, "");
  LLVMValueRef c = LLVMBuildNSWSub(b, cg_i64(k, t->in[dim] + t->pad_begin[dim]), start, "");
  /* ceil(v / dilation) for v > 0, else 0 */
  LLVMValueRef adiv = LLVMBuildSDiv(b, cg_add(k, a, cg_i64(k, t->dilation[dim] - 1)), dil, "");
  LLVMValueRef cdiv = LLVMBuildSDiv(b, cg_add(k, c, cg_i64(k, t->dilation[dim] - 1)), dil, "");
  *klo = cg_select(k, LLVMBuildICmp(b, LLVMIntSGT, a, zero, ""), adiv, zero);
  *khi = cg_min(k, cg_select(k, LLVMBuildICmp(b, LLVMIntSGT, c, zero, ""), cdiv, zero),
                cg_i64(k, t->kernel[dim]));
}

/* Input position along dim of tap kk of output position o. */
static LLVMValueRef tap_pos(cg_kernel *k, const nn_window *t, int dim, LLVMValueRef o,
                            LLVMValueRef kk) {
  LLVMValueRef p = cg_add(k, cg_mul(k, o, cg_i64(k, t->stride[dim])),
                          cg_mul(k, kk, cg_i64(k, t->dilation[dim])));
  return LLVMBuildNSWSub(k->b, p, cg_i64(k, t->pad_begin[dim]), "");
}

/* A window loop nest over the clipped taps of output position pos[] (3-D view); the
 * innermost body sees the tap's offset inside the plane.  body(k, at, user). */
typedef void (*tap_body)(cg_kernel *k, LLVMValueRef at, void *user);

static void window_loops(cg_kernel *k, const nn_window *t, LLVMValueRef *pos, tap_body body,
                         void *user) {
  LLVMValueRef lo[3], hi[3];
  for (int d = 0; d < 3; d++) tap_range(k, t, d, pos[d], &lo[d], &hi[d]);
  cg_loop l0, l1, l2;
  LLVMValueRef kd = cg_loop_begin(k, &l0, lo[0], hi[0], NULL, "kd");
  LLVMValueRef id = tap_pos(k, t, 0, pos[0], kd);
  LLVMValueRef kh = cg_loop_begin(k, &l1, lo[1], hi[1], NULL, "kh");
  LLVMValueRef ih = tap_pos(k, t, 1, pos[1], kh);
  LLVMValueRef row = cg_mul(k, cg_add(k, cg_mul(k, id, cg_i64(k, t->in[1])), ih),
                            cg_i64(k, t->in[2]));
  LLVMValueRef kw = cg_loop_begin(k, &l2, lo[2], hi[2], NULL, "kw");
  body(k, cg_add(k, row, tap_pos(k, t, 2, pos[2], kw)), user);
  cg_loop_end(k, &l2);
  cg_loop_end(k, &l1);
  cg_loop_end(k, &l0);
}

/* The plane loop shared by both pool gradients: opens loops over this tile's planes and the
 * output positions, after zeroing the plane of dX.  Returns the flat output index. */
typedef struct plane_nest {
  cg_loop lp, l0, l1, l2;
  LLVMValueRef plane, base, pos[3], o;
} plane_nest;

static void planes_begin(cg_kernel *k, const nn_window *t, int64_t planes, int64_t per_tile,
                         LLVMValueRef dx, plane_nest *pn) {
  int64_t in_plane = t->in[0] * t->in[1] * t->in[2];
  LLVMValueRef plo = cg_mul(k, k->lo, cg_i64(k, per_tile));
  LLVMValueRef phi = cg_min(k, cg_mul(k, k->hi, cg_i64(k, per_tile)), cg_i64(k, planes));
  pn->plane = cg_loop_begin(k, &pn->lp, plo, phi, NULL, "plane");
  pn->base = cg_mul(k, pn->plane, cg_i64(k, in_plane));
  cg_fill_loop(k, dx, pn->base, 1, cg_i64(k, 0), cg_i64(k, in_plane), cg_f32(k, 0));
  pn->pos[0] = cg_loop_begin(k, &pn->l0, cg_i64(k, 0), cg_i64(k, t->out[0]), NULL, "od");
  pn->pos[1] = cg_loop_begin(k, &pn->l1, cg_i64(k, 0), cg_i64(k, t->out[1]), NULL, "oh");
  pn->pos[2] = cg_loop_begin(k, &pn->l2, cg_i64(k, 0), cg_i64(k, t->out[2]), NULL, "ow");
  LLVMValueRef o = pn->plane;
  for (int d = 0; d < 3; d++) o = cg_add(k, cg_mul(k, o, cg_i64(k, t->out[d])), pn->pos[d]);
  pn->o = o;
}

static void planes_end(cg_kernel *k, plane_nest *pn) {
  cg_loop_end(k, &pn->l2);
  cg_loop_end(k, &pn->l1);
  cg_loop_end(k, &pn->l0);
  cg_loop_end(k, &pn->lp);
}

/* Planes per tile: about CG_TILE_ELEMS elements of work each. */
static int64_t planes_per_tile(const nn_window *t, int64_t planes) {
  int64_t work = t->in[0] * t->in[1] * t->in[2] +
                 t->out[0] * t->out[1] * t->out[2] * nn_window_kernel_volume(t);
  int64_t per = work > 0 ? CG_TILE_ELEMS / work : planes;
  if (per < 1) per = 1;
  if (per > planes) per = planes;
  return per < 1 ? 1 : per;
}

/* MaxPoolGrad, phase 1 per output row (plane, od, oh): the argmax of every output of the row,
 * kept in scratch rows best[] / idx[] (plane-relative input offsets, -1 for none).  Taps are
 * taken in (kd, kh, kw) order, the first unconditionally and later ones only when strictly
 * greater, as in ref_MaxPool.  Interior columns (windows whole along W) are updated tap by tap
 * with the columns innermost, so that loop vectorizes; border columns clip their W taps. */
typedef struct argmax_row {
  const nn_window *t;
  LLVMTypeRef ity; /* index type: i32 when a plane's offsets fit */
  LLVMValueRef xp, best, idx, xbase, rowo, lo[2], hi[2], pos[2];
} argmax_row;

/* Updates best/idx of output column ow with the tap at plane offset `at`. */
static void argmax_update(cg_kernel *k, const argmax_row *r, LLVMValueRef ow, LLVMValueRef at) {
  LLVMBuilderRef b = k->b;
  LLVMValueRef o = cg_add(k, r->rowo, ow);
  LLVMValueRef v = cg_load(k, k->t->f32, r->xp, cg_add(k, r->xbase, at));
  LLVMValueRef best = cg_load(k, k->t->f32, r->best, o);
  LLVMValueRef cur = cg_load(k, r->ity, r->idx, o);
  LLVMValueRef none = LLVMBuildICmp(b, LLVMIntSLT, cur, LLVMConstInt(r->ity, 0, 1), "");
  LLVMValueRef take = LLVMBuildOr(b, none, LLVMBuildFCmp(b, LLVMRealOGT, v, best, ""), "");
  LLVMValueRef at_i = r->ity == k->t->i64 ? at : LLVMBuildTrunc(b, at, r->ity, "");
  cg_store(k, cg_select(k, take, v, best), r->best, o);
  cg_store(k, cg_select(k, take, at_i, cur), r->idx, o);
}

/* Offset of input row (id, ih) in the plane, for taps kd, kh of the row. */
static LLVMValueRef in_row(cg_kernel *k, const argmax_row *r, LLVMValueRef kd, LLVMValueRef kh) {
  const nn_window *t = r->t;
  LLVMValueRef id = tap_pos(k, t, 0, r->pos[0], kd), ih = tap_pos(k, t, 1, r->pos[1], kh);
  return cg_mul(k, cg_add(k, cg_mul(k, id, cg_i64(k, t->in[1])), ih), cg_i64(k, t->in[2]));
}

/* Border columns [a, b): each clips its own W taps. */
static void argmax_border(cg_kernel *k, const argmax_row *r, int64_t a, int64_t b_) {
  if (a >= b_) return;
  const nn_window *t = r->t;
  cg_loop lc, l0, l1, l2;
  LLVMValueRef ow = cg_loop_begin(k, &lc, cg_i64(k, a), cg_i64(k, b_), NULL, "ow");
  LLVMValueRef wlo, whi;
  tap_range(k, t, 2, ow, &wlo, &whi);
  LLVMValueRef kd = cg_loop_begin(k, &l0, r->lo[0], r->hi[0], NULL, "kd");
  LLVMValueRef kh = cg_loop_begin(k, &l1, r->lo[1], r->hi[1], NULL, "kh");
  LLVMValueRef row = in_row(k, r, kd, kh);
  LLVMValueRef kw = cg_loop_begin(k, &l2, wlo, whi, NULL, "kw");
  argmax_update(k, r, ow, cg_add(k, row, tap_pos(k, t, 2, ow, kw)));
  cg_loop_end(k, &l2);
  cg_loop_end(k, &l1);
  cg_loop_end(k, &l0);
  cg_loop_end(k, &lc);
}

/* Interior columns [a, b): every W tap is inside the input. */
static void argmax_interior(cg_kernel *k, const argmax_row *r, int64_t a, int64_t b_) {
  if (a >= b_) return;
  const nn_window *t = r->t;
  cg_loop l0, l1, l2, lc;
  LLVMValueRef kd = cg_loop_begin(k, &l0, r->lo[0], r->hi[0], NULL, "kd");
  LLVMValueRef kh = cg_loop_begin(k, &l1, r->lo[1], r->hi[1], NULL, "kh");
  LLVMValueRef row = in_row(k, r, kd, kh);
  LLVMValueRef kw = cg_loop_begin(k, &l2, cg_i64(k, 0), cg_i64(k, t->kernel[2]), NULL, "kw");
  LLVMValueRef tap = cg_add(k, row, cg_mul(k, kw, cg_i64(k, t->dilation[2])));
  LLVMValueRef base = LLVMBuildNSWSub(k->b, tap, cg_i64(k, t->pad_begin[2]), "");
  LLVMValueRef ow = cg_loop_begin(k, &lc, cg_i64(k, a), cg_i64(k, b_), NULL, "ow");
  argmax_update(k, r, ow, cg_add(k, base, cg_mul(k, ow, cg_i64(k, t->stride[2]))));
  cg_loop_end(k, &lc);
  cg_loop_end(k, &l2);
  cg_loop_end(k, &l1);
  cg_loop_end(k, &l0);
}

static kiln_code emit_MaxPoolGrad(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                                  kiln_err *e) {
  const kiln_value *x = ir_in(g, n, 0);
  nn_window t;
  KILN_TRY(window3(n, &x->shape, &t, e));
  int64_t planes = x->shape.d[0] * x->shape.d[1];
  int64_t in_plane = t.in[0] * t.in[1] * t.in[2], out_plane = t.out[0] * t.out[1] * t.out[2];
  if (planes * in_plane == 0) return KILN_OK;
  bool narrow = in_plane < INT32_MAX;
  int64_t n_out = planes * out_plane;
  int best_buf = cg_buf_scratch(cx, sizeof(float) * (size_t)(n_out ? n_out : 1), e);
  size_t idx_bytes = (narrow ? 4 : 8) * (size_t)(n_out ? n_out : 1);
  int idx_buf = best_buf < 0 ? -1 : cg_buf_scratch(cx, idx_bytes, e);
  if (idx_buf < 0) return e->code;
  /* columns whose windows are whole along W: ow*s - pb >= 0 and ow*s - pb + (K-1)*dil < in */
  int64_t s2 = t.stride[2], pb2 = t.pad_begin[2];
  int64_t owl = (pb2 + s2 - 1) / s2, last = t.in[2] - 1 - (t.kernel[2] - 1) * t.dilation[2] + pb2;
  int64_t owr = last < 0 ? 0 : last / s2 + 1;
  if (owl > t.out[2]) owl = t.out[2];
  if (owr > t.out[2]) owr = t.out[2];
  if (owr < owl) owr = owl;
  int64_t per = planes_per_tile(&t, planes);
  cg_kernel k;
  KILN_TRY(cg_kernel_begin(cx, &k, "maxpool_grad", 5, e));
  LLVMBuilderRef b = k.b;
  LLVMValueRef dyp = cg_arg(&k, 1), dxp = cg_arg(&k, 2);
  argmax_row r = {.t = &t, .ity = narrow ? k.t->i32 : k.t->i64, .xp = cg_arg(&k, 0),
                  .best = cg_arg(&k, 3), .idx = cg_arg(&k, 4)};
  LLVMValueRef plo = cg_mul(&k, k.lo, cg_i64(&k, per));
  LLVMValueRef phi = cg_min(&k, cg_mul(&k, k.hi, cg_i64(&k, per)), cg_i64(&k, planes));
  cg_loop lp, l0, l1, lo;
  LLVMValueRef plane = cg_loop_begin(&k, &lp, plo, phi, NULL, "plane");
  r.xbase = cg_mul(&k, plane, cg_i64(&k, in_plane));
  LLVMValueRef obase = cg_mul(&k, plane, cg_i64(&k, out_plane));
  /* phase 1: the argmax of each output */
  r.pos[0] = cg_loop_begin(&k, &l0, cg_i64(&k, 0), cg_i64(&k, t.out[0]), NULL, "od");
  r.pos[1] = cg_loop_begin(&k, &l1, cg_i64(&k, 0), cg_i64(&k, t.out[1]), NULL, "oh");
  for (int d = 0; d < 2; d++) tap_range(&k, &t, d, r.pos[d], &r.lo[d], &r.hi[d]);
  LLVMValueRef orow = cg_add(&k, cg_mul(&k, r.pos[0], cg_i64(&k, t.out[1])), r.pos[1]);
  r.rowo = cg_add(&k, obase, cg_mul(&k, orow, cg_i64(&k, t.out[2])));
  cg_fill_loop(&k, r.best, r.rowo, 1, cg_i64(&k, 0), cg_i64(&k, t.out[2]), cg_f32(&k, 0));
  cg_fill_loop(&k, r.idx, r.rowo, 1, cg_i64(&k, 0), cg_i64(&k, t.out[2]),
               LLVMConstInt(r.ity, (unsigned long long)-1, 1));
  argmax_border(&k, &r, 0, owl);
  argmax_interior(&k, &r, owl, owr);
  argmax_border(&k, &r, owr, t.out[2]);
  cg_loop_end(&k, &l1);
  cg_loop_end(&k, &l0);
  /* phase 2: zero the plane of dX, then add each output's gradient at its argmax, in output
   * order (the reference's order) */
  cg_fill_loop(&k, dxp, r.xbase, 1, cg_i64(&k, 0), cg_i64(&k, in_plane), cg_f32(&k, 0));
  LLVMValueRef o = cg_add(&k, obase, cg_loop_begin(&k, &lo, cg_i64(&k, 0), cg_i64(&k, out_plane),
                                                   NULL, "o"));
  LLVMValueRef at = cg_load(&k, r.ity, r.idx, o);
  cg_if found;
  cg_if_begin(&k, &found, LLVMBuildICmp(b, LLVMIntSGE, at, LLVMConstInt(r.ity, 0, 1), ""));
  LLVMValueRef dst = cg_add(&k, r.xbase, narrow ? LLVMBuildSExt(b, at, k.t->i64, "") : at);
  LLVMValueRef sum = LLVMBuildFAdd(b, cg_load(&k, k.t->f32, dxp, dst),
                                   cg_load(&k, k.t->f32, dyp, o), "");
  cg_store(&k, sum, dxp, dst);
  cg_if_end(&k, &found);
  cg_loop_end(&k, &lo);
  cg_loop_end(&k, &lp);
  return cg_kernel_end(cx, &k, (planes + per - 1) / per,
                       (int[]){cg_buf_value(cx, n->in[0]), cg_buf_value(cx, n->in[1]),
                               cg_buf_value(cx, n->out[0]), best_buf, idx_buf},
                       e);
}

typedef struct avg_state {
  LLVMValueRef dxp, base, g;
} avg_state;

static void avg_body(cg_kernel *k, LLVMValueRef at, void *user) {
  avg_state *s = user;
  LLVMValueRef dst = cg_add(k, s->base, at);
  cg_store(k, LLVMBuildFAdd(k->b, cg_load(k, k->t->f32, s->dxp, dst), s->g, ""), s->dxp, dst);
}

static kiln_code emit_AveragePoolGrad(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                                      kiln_err *e) {
  const kiln_value *dx = ir_out(g, n, 0);
  nn_window t;
  KILN_TRY(window3(n, &dx->shape, &t, e));
  int64_t planes = dx->shape.d[0] * dx->shape.d[1];
  if (planes * t.in[0] * t.in[1] * t.in[2] == 0) return KILN_OK;
  bool include_pad = ir_attr_int(n, "count_include_pad") != 0;
  /* per-dim divisor factors, as runtime/ref/pool.c counts taps (the divisor is their product) */
  int64_t n_cnt = t.out[0] + t.out[1] + t.out[2], cnt_off[3] = {0, t.out[0], t.out[0] + t.out[1]};
  int64_t *cnt = kiln_malloc(sizeof(int64_t) * (size_t)(n_cnt ? n_cnt : 1));
  if (!cnt) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory (pool tables)");
  for (int d = 0; d < 3; d++)
    for (int64_t o = 0; o < t.out[d]; o++) {
      int64_t start = o * t.stride[d] - t.pad_begin[d], c = 0;
      for (int64_t kk = 0; kk < t.kernel[d]; kk++) {
        int64_t p = start + kk * t.dilation[d];
        bool inside = include_pad ? p >= -t.pad_begin[d] && p < t.in[d] + t.pad_end[d]
                                  : p >= 0 && p < t.in[d];
        if (inside) c++;
      }
      cnt[cnt_off[d] + o] = c;
    }
  int cbuf = cg_buf_const(cx, cnt, sizeof(int64_t) * (size_t)(n_cnt ? n_cnt : 1), e);
  kiln_free(cnt);
  if (cbuf < 0) return e->code;
  int64_t per = planes_per_tile(&t, planes);
  cg_kernel k;
  KILN_TRY(cg_kernel_begin(cx, &k, "avgpool_grad", 3, e));
  LLVMBuilderRef b = k.b;
  LLVMValueRef dyp = cg_arg(&k, 0), dxp = cg_arg(&k, 1), cp = cg_arg(&k, 2);
  plane_nest pn;
  planes_begin(&k, &t, planes, per, dxp, &pn);
  LLVMValueRef count = cg_i64(&k, 1);
  for (int d = 0; d < 3; d++) {
    LLVMValueRef at = cg_add(&k, pn.pos[d], cg_i64(&k, cnt_off[d]));
    count = cg_mul(&k, count, cg_load(&k, k.t->i64, cp, at));
  }
  cg_if nonzero;
  cg_if_begin(&k, &nonzero, LLVMBuildICmp(b, LLVMIntSGT, count, cg_i64(&k, 0), ""));
  avg_state s = {.dxp = dxp, .base = pn.base};
  s.g = LLVMBuildFDiv(b, cg_load(&k, k.t->f32, dyp, pn.o), LLVMBuildSIToFP(b, count, k.t->f32, ""),
                      "");
  window_loops(&k, &t, pn.pos, avg_body, &s);
  cg_if_end(&k, &nonzero);
  planes_end(&k, &pn);
  return cg_kernel_end(cx, &k, (planes + per - 1) / per,
                       (int[]){cg_buf_value(cx, n->in[0]), cg_buf_value(cx, n->out[0]), cbuf}, e);
}

/* ---- ResizeGrad ---- */

/* One gather pass along an axis: dst (outer, n_dst, inner) from src (outer, n_src, inner),
 * dst[o, i, j] = sum over k in [start[i], start[i+1]) of w[k] * src[o, src_idx[k], j]. */
typedef struct gather_pass {
  int64_t outer, n_src, n_dst, inner;
  int src_buf, dst_buf;
  const int64_t *start, *src_idx;
  const double *w;
} gather_pass;

static kiln_code emit_gather_pass(kiln_emit_ctx *cx, const gather_pass *gp, kiln_err *e) {
  int64_t nnz = gp->start[gp->n_dst];
  /* tables: start[n_dst + 1] and source offsets (pre-multiplied by inner) as i64, weights f32 */
  int64_t *itab = kiln_malloc(sizeof(int64_t) * (size_t)(gp->n_dst + 1 + nnz));
  float *wtab = kiln_malloc(sizeof(float) * (size_t)(nnz ? nnz : 1));
  if (!itab || !wtab) {
    kiln_free(itab), kiln_free(wtab);
    return kiln_errf(e, KILN_ERR_NOMEM, "out of memory (resize gradient tables)");
  }
  for (int64_t i = 0; i <= gp->n_dst; i++) itab[i] = gp->n_dst + 1 + gp->start[i];
  for (int64_t q = 0; q < nnz; q++) {
    itab[gp->n_dst + 1 + q] = gp->src_idx[q] * gp->inner;
    wtab[q] = (float)gp->w[q];
  }
  int ib = cg_buf_const(cx, itab, sizeof(int64_t) * (size_t)(gp->n_dst + 1 + nnz), e);
  int wb = ib < 0 ? -1 : cg_buf_const(cx, wtab, sizeof(float) * (size_t)(nnz ? nnz : 1), e);
  kiln_free(itab), kiln_free(wtab);
  if (ib < 0 || wb < 0) return e->code;
  int64_t fan_in = gp->n_dst ? (nnz + gp->n_dst - 1) / gp->n_dst : 1;
  cg_rows rp;
  cg_rows_plan(&rp, gp->outer * gp->n_dst, gp->inner, CG_TILE_ELEMS / (fan_in > 1 ? fan_in : 1));
  cg_kernel k;
  KILN_TRY(cg_kernel_begin(cx, &k, "resize_grad", 4, e));
  LLVMBuilderRef b = k.b;
  LLVMTypeRef f32 = k.t->f32, i64 = k.t->i64;
  LLVMValueRef src = cg_arg(&k, 0), dst = cg_arg(&k, 1), tp = cg_arg(&k, 2), wp = cg_arg(&k, 3);
  LLVMValueRef row, jlo, jhi;
  /* the innermost axis (inner == 1) sums in a register; the others add whole rows of `inner`
   * contiguous elements (vectorized), each element in the same order */
  LLVMValueRef acc = gp->inner == 1 ? cg_entry_alloca(&k, f32) : NULL;
  cg_rows_begin(&k, &rp, &row, &jlo, &jhi);
  LLVMValueRef nd = cg_i64(&k, gp->n_dst);
  LLVMValueRef ou = LLVMBuildUDiv(b, row, nd, ""), i = LLVMBuildURem(b, row, nd, "");
  LLVMValueRef dbase = cg_mul(&k, row, cg_i64(&k, gp->inner));
  LLVMValueRef sbase = cg_mul(&k, ou, cg_i64(&k, gp->n_src * gp->inner));
  if (acc)
    LLVMBuildStore(b, cg_f32(&k, 0), acc);
  else
    cg_fill_loop(&k, dst, dbase, 1, jlo, jhi, cg_f32(&k, 0));
  LLVMValueRef k0 = cg_load(&k, i64, tp, i);
  LLVMValueRef k1 = cg_load(&k, i64, tp, cg_add(&k, i, cg_i64(&k, 1)));
  cg_loop lk, lj;
  LLVMValueRef kk = cg_loop_begin(&k, &lk, k0, k1, NULL, "k");
  LLVMValueRef soff = cg_add(&k, sbase, cg_load(&k, i64, tp, kk));
  LLVMValueRef wk = cg_load(&k, f32, wp, LLVMBuildNSWSub(b, kk, cg_i64(&k, gp->n_dst + 1), ""));
  if (acc) {
    LLVMValueRef prod = LLVMBuildFMul(b, wk, cg_load(&k, f32, src, soff), "");
    LLVMBuildStore(b, LLVMBuildFAdd(b, LLVMBuildLoad2(b, f32, acc, ""), prod, ""), acc);
  } else {
    LLVMValueRef j = cg_loop_begin(&k, &lj, jlo, jhi, NULL, "j");
    LLVMValueRef at = cg_add(&k, dbase, j);
    LLVMValueRef prod = LLVMBuildFMul(b, wk, cg_load(&k, f32, src, cg_add(&k, soff, j)), "");
    cg_store(&k, LLVMBuildFAdd(b, cg_load(&k, f32, dst, at), prod, ""), dst, at);
    cg_loop_end(&k, &lj);
  }
  cg_loop_end(&k, &lk);
  if (acc) cg_store(&k, LLVMBuildLoad2(b, f32, acc, ""), dst, dbase);
  cg_rows_end(&k, &rp);
  return cg_kernel_end(cx, &k, rp.n_tiles, (int[]){gp->src_buf, gp->dst_buf, ib, wb}, e);
}

/* dst[0..numel) = 0 or a copy of src. */
static kiln_code emit_flat(kiln_emit_ctx *cx, int src_buf, int dst_buf, int64_t numel,
                           kiln_err *e) {
  cg_rows rp;
  cg_rows_plan(&rp, 1, numel, CG_TILE_ELEMS);
  cg_kernel k;
  KILN_TRY(cg_kernel_begin(cx, &k, src_buf < 0 ? "resize_grad_zero" : "resize_grad_copy",
                           src_buf < 0 ? 1 : 2, e));
  LLVMValueRef row, jlo, jhi;
  cg_rows_begin(&k, &rp, &row, &jlo, &jhi);
  LLVMValueRef dst = cg_arg(&k, src_buf < 0 ? 0 : 1);
  if (src_buf < 0)
    cg_fill_loop(&k, dst, cg_i64(&k, 0), 1, jlo, jhi, cg_f32(&k, 0));
  else
    cg_copy_run(&k, k.t->f32, sizeof(float), dst, jlo, cg_arg(&k, 0), jlo,
                LLVMBuildNSWSub(k.b, jhi, jlo, ""));
  cg_rows_end(&k, &rp);
  int bufs[2] = {src_buf < 0 ? dst_buf : src_buf, dst_buf};
  return cg_kernel_end(cx, &k, rp.n_tiles, bufs, e);
}

static kiln_code emit_ResizeGrad(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                                 kiln_err *e) {
  const kiln_value *dy = ir_in(g, n, 0);
  kiln_shape xs;
  kiln_resize_params p;
  KILN_TRY(kiln_resize_grad_params(n, &dy->shape, &xs, &p, e));
  int rank = xs.rank;
  int64_t ynumel, xnumel;
  kiln_shape_numel(&dy->shape, &ynumel);
  kiln_shape_numel(&xs, &xnumel);
  int dy_buf = cg_buf_value(cx, n->in[0]), dx_buf = cg_buf_value(cx, n->out[0]);
  if (xnumel == 0) return KILN_OK;
  if (ynumel == 0) return emit_flat(cx, -1, dx_buf, xnumel, e);
  /* the adjoint tables of the axes that move anything, outermost first: after upsampling (the
   * common case) the innermost axis, whose pass has no contiguous rows to vectorize, then runs
   * on the smallest tensor */
  int64_t *start[KILN_MAX_RANK] = {0}, *src[KILN_MAX_RANK] = {0};
  double *w[KILN_MAX_RANK] = {0};
  int axes[KILN_MAX_RANK], n_axes = 0;
  kiln_code rc = KILN_OK;
  for (int d = 0; d < rank; d++) {
    bool identity;
    rc = kiln_resize_axis_adjoint(&p, d, xs.d[d], &start[d], &src[d], &w[d], &identity, e);
    if (rc) goto done;
    if (!identity) axes[n_axes++] = d;
  }
  if (n_axes == 0) {
    rc = emit_flat(cx, dy_buf, dx_buf, xnumel, e);
    goto done;
  }
  kiln_shape cur = dy->shape;
  int cur_buf = dy_buf;
  for (int a = 0; a < n_axes; a++) {
    int d = axes[a];
    gather_pass gp = {.outer = 1, .inner = 1, .n_src = cur.d[d], .n_dst = xs.d[d],
                      .src_buf = cur_buf, .start = start[d], .src_idx = src[d], .w = w[d]};
    for (int q = 0; q < d; q++) gp.outer *= cur.d[q];
    for (int q = d + 1; q < rank; q++) gp.inner *= cur.d[q];
    cur.d[d] = xs.d[d];
    if (a == n_axes - 1) {
      gp.dst_buf = dx_buf;
    } else {
      int64_t numel;
      kiln_shape_numel(&cur, &numel);
      gp.dst_buf = cg_buf_scratch(cx, sizeof(float) * (size_t)(numel ? numel : 1), e);
      if (gp.dst_buf < 0) {
        rc = e->code;
        goto done;
      }
    }
    if (gp.outer * gp.n_dst * gp.inner > 0) rc = emit_gather_pass(cx, &gp, e);
    if (rc) goto done;
    cur_buf = gp.dst_buf;
  }
done:
  for (int d = 0; d < rank; d++) kiln_free(start[d]), kiln_free(src[d]), kiln_free(w[d]);
  return rc;
}

void cg_register_grad_pool(kiln_emit_fn *table) {
  table[KILN_OP_MaxPoolGrad] = emit_MaxPoolGrad;
  table[KILN_OP_AveragePoolGrad] = emit_AveragePoolGrad;
  table[KILN_OP_ResizeGrad] = emit_ResizeGrad;
}
