/* emit_fused.c — emitters of the kiln-domain fused ops (ir/ops/fused.h, docs/ops-kiln.md).
 *
 *  - FusedConv: the convolution generator (conv_gen.h) with bias, residual and activation in
 *    its epilogue.
 *  - UpsampleConv: the convolution reads the low-resolution input.  Nearest resizing whose
 *    index map is floor(o / s) (asymmetric or half-pixel coordinates with the usual rounding
 *    modes) with stride-1 convolutions and constant weights runs as s^D phase convolutions
 *    on the low-resolution input with weights summed at compile time (performance.md), each
 *    writing every s-th output element; weights known only at run time (training) are summed
 *    by a small kernel per phase into scratch first (cg_emit_weight_fold, emit_upconv.h).
 *    Other strides use conv_gen's nearest input transform.
 *    Other nearest maps (align_corners) and linear modes fill the convolution's zero-padded
 *    input with one gather/interpolation pass from compile-time index and weight tables (what
 *    conv_gen's own padding copy would do), so no separate upsampled tensor exists either.
 *  - GapGemm: per image, the channel means (summed in double as the reference does), then the
 *    matrix-vector products with the weights repacked [C, M] so the inner loop is contiguous.
 *  - FusedElementwise: one cg_emit_map kernel whose scalar body chains the elementwise ops'
 *    own bodies (emit_elementwise.h). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "codegen/conv_gen.h"
#include "codegen/emit_copy.h"
#include "codegen/emit_elementwise.h"
#include "codegen/emit_upconv.h"
#include "ir/ops/fused.h"
#include "ir/ops/nn_window.h"
#include "runtime/ref/resize_coords.h"

typedef LLVMValueRef V;

static int opt_in(const kiln_node *n, int i) { return n->n_in > i ? n->in[i] : -1; }

/* The node's activation as a conv_gen epilogue. */
static kiln_code epilogue_of(kiln_emit_ctx *cx, const kiln_node *n, cg_conv_epilogue *epi,
                             kiln_err *e) {
  kiln_fused_act_params a;
  KILN_TRY(kiln_fused_act_get(n, &a, e));
  *epi = cg_conv_epilogue_none();
  static const cg_act acts[] = {CG_ACT_NONE, CG_ACT_RELU, CG_ACT_CLIP, CG_ACT_LEAKY_RELU,
                                CG_ACT_SIGMOID};
  epi->act = acts[a.act];
  epi->act_a = (float)a.alpha;
  epi->act_b = (float)a.beta;
  if (opt_in(n, 2) >= 0) epi->bias_buf = cg_buf_value(cx, n->in[2]);
  return KILN_OK;
}

/* ---- FusedConv ---- */

static kiln_code emit_FusedConv(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                                kiln_err *e) {
  cg_conv_geom geom;
  KILN_TRY(cg_conv_geom_from_node(g, n, &geom, e));
  const kiln_tensor *wc = ir_in_const(g, n, 1);
  cg_conv_weights w = cg_conv_weights_oihw(&geom, cg_buf_value(cx, n->in[1]),
                                           wc ? (const float *)wc->data : NULL);
  cg_conv_epilogue epi;
  KILN_TRY(epilogue_of(cx, n, &epi, e));
  if (opt_in(n, 3) >= 0) epi.residual_buf = cg_buf_value(cx, n->in[3]);
  return cg_emit_conv(cx, "fused_conv", &geom, &w, &epi, cg_buf_value(cx, n->in[0]),
                      cg_buf_value(cx, n->out[0]), e);
}

/* ---- UpsampleConv ---- */

typedef struct upconv {
  const kiln_graph *g;
  const kiln_node *n;
  kiln_upconv_params p;
  kiln_coord_mode coord;
  kiln_nearest_mode nearest;
  nn_window t;         /* the convolution over the upsampled input, as 3-D */
  int64_t s[3];        /* scales, as 3-D (1 on identity dims) */
  int64_t low[3];      /* low-resolution spatial sizes */
  int64_t N, C, OC, groups;
  int64_t *idx[3];     /* nearest: source index per upsampled position */
  bool floor_map;      /* nearest and idx[d][o] == o / s[d] everywhere */
} upconv;

static void upconv_free(upconv *u) {
  for (int d = 0; d < 3; d++) kiln_free(u->idx[d]);
}

/* The resize's coordinate of upsampled position o along 3-D dim d. */
static double up_coord(const upconv *u, int d, int64_t o) {
  return kiln_resize_coord(u->coord, (double)o, u->low[d], (double)u->t.in[d], (double)u->s[d],
                           0.0, 1.0);
}

static kiln_code upconv_init(const kiln_graph *g, const kiln_node *n, upconv *u, kiln_err *e) {
  memset(u, 0, sizeof *u);
  u->g = g;
  u->n = n;
  const kiln_value *x = ir_in(g, n, 0), *w = ir_in(g, n, 1), *y = ir_out(g, n, 0);
  KILN_TRY(kiln_upconv_params_get(n, x->shape.rank, &u->p, e));
  kiln_coord_mode_parse(u->p.coord, &u->coord);
  kiln_nearest_mode_parse(u->p.nearest, &u->nearest);
  kiln_shape us = x->shape;
  for (int d = 0; d < u->p.nsp; d++) us.d[2 + d] *= u->p.scale[d];
  int64_t kernel[NN_WIN_MAX];
  for (int i = 2; i < w->shape.rank; i++) kernel[i - 2] = w->shape.d[i];
  nn_window win;
  KILN_TRY(nn_window_forward(n, &us, x->name, kernel, false, &win, e));
  u->t = nn_window_3d(&win);
  int lead = 3 - u->p.nsp;
  for (int d = 0; d < 3; d++) {
    u->s[d] = d < lead ? 1 : u->p.scale[d - lead];
    u->low[d] = u->t.in[d] / u->s[d];
  }
  u->N = x->shape.d[0];
  u->C = x->shape.d[1];
  u->OC = y->shape.d[1];
  u->groups = ir_attr_int(n, "group");
  u->floor_map = !u->p.linear;
  if (u->p.linear) return KILN_OK;
  for (int d = 0; d < 3; d++) {
    int64_t len = u->t.in[d];
    u->idx[d] = kiln_malloc(sizeof(int64_t) * (size_t)(len ? len : 1));
    if (!u->idx[d]) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory (resize tables)");
    for (int64_t o = 0; o < len; o++) {
      double c = up_coord(u, d, o);
      u->idx[d][o] = kiln_resize_clamp(kiln_resize_nearest(u->nearest, c, (double)u->s[d]),
                                       u->low[d]);
      if (u->idx[d][o] != o / u->s[d]) u->floor_map = false;
    }
  }
  return KILN_OK;
}

/* The geometry of the convolution over the upsampled input: X read through conv_gen's
 * nearest transform (floor maps) or, with `padded_input`, a zero-padded upsampled copy. */
static cg_conv_geom upconv_geom(const upconv *u, bool padded_input) {
  cg_conv_geom g = {.N = u->N, .C = u->C, .OC = u->OC, .groups = u->groups};
  for (int d = 0; d < 3; d++) {
    const nn_window *t = &u->t;
    g.k[d] = t->kernel[d];
    g.stride[d] = t->stride[d];
    g.dil[d] = t->dilation[d];
    g.out[d] = t->out[d];
    g.xfactor[d] = 1;
    if (padded_input) {
      g.in[d] = t->in[d] + t->pad_begin[d] + t->pad_end[d];
      g.xform[d] = CG_IN_PLAIN;
    } else {
      g.in[d] = u->low[d];
      g.xform[d] = u->s[d] > 1 ? CG_IN_NEAREST : CG_IN_PLAIN;
      g.xfactor[d] = u->s[d];
      g.pad_b[d] = t->pad_begin[d];
      g.pad_e[d] = t->pad_end[d];
    }
  }
  return g;
}

/* Generic nearest: copy X through the index tables into the zero-padded upsampled layout. */
static int64_t nearest_src(int d, int64_t i, const void *user) {
  const upconv *u = user;
  int64_t o = i - u->t.pad_begin[d];
  return o < 0 || o >= u->t.in[d] ? -1 : u->idx[d][o];
}

static kiln_code fill_nearest(kiln_emit_ctx *cx, const upconv *u, int x_buf, int dst_buf,
                              kiln_err *e) {
  const nn_window *t = &u->t;
  int64_t P[3];
  for (int d = 0; d < 3; d++) P[d] = t->in[d] + t->pad_begin[d] + t->pad_end[d];
  return cg_emit_plane_gather(cx, "upsample_pad", u->N * u->C, u->low, P, nearest_src, u, x_buf,
                              dst_buf, e);
}

/* The linear taps (at most 2) of upsampled position o along dim d, as the reference computes
 * them: input indices (clamped) and weights; *count 1 or 2. */
static void linear_taps(const upconv *u, int d, int64_t o, int64_t *idx, double *w, int *count) {
  double c = up_coord(u, d, o), t;
  int64_t first;
  kiln_resize_taps(c, 2, u->low[d], &first, &t);
  double coef[2] = {1 - t, t};
  int m = 0;
  for (int k = 0; k < 2; k++) {
    if (coef[k] == 0) continue;
    idx[m] = kiln_resize_clamp(first + k, u->low[d]);
    w[m++] = coef[k];
  }
  if (m == 0) idx[m] = 0, w[m++] = 0; /* not reached: the coefficients sum to 1 */
  *count = m;
}

#define LIN_ROW_TAPS 4

/* Linear: interpolate X into the zero-padded upsampled layout, each element the sum over the
 * taps (outer dims first, columns last; weights multiplied in double in that order) of
 * weight x input, in double, rounded once — the reference's arithmetic. */
static kiln_code fill_linear(kiln_emit_ctx *cx, const upconv *u, int x_buf, int dst_buf,
                             kiln_err *e) {
  const nn_window *t = &u->t;
  int64_t P[3];
  for (int d = 0; d < 3; d++) P[d] = t->in[d] + t->pad_begin[d] + t->pad_end[d];
  int64_t nrp = P[0] * P[1], uw = t->in[2], pwb = t->pad_begin[2];
  int64_t *roff = kiln_calloc((size_t)(nrp * LIN_ROW_TAPS + 1), sizeof(int64_t));
  double *rw = kiln_calloc((size_t)(nrp * LIN_ROW_TAPS + 1), sizeof(double));
  int64_t *rn = kiln_calloc((size_t)(nrp + 1), sizeof(int64_t));
  int64_t *cidx = kiln_calloc((size_t)(uw * 2 + 1), sizeof(int64_t));
  double *cw = kiln_calloc((size_t)(uw * 2 + 1), sizeof(double));
  kiln_code rc = KILN_OK;
  if (!roff || !rw || !rn || !cidx || !cw) {
    rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory (resize tables)");
    goto done;
  }
  for (int64_t i0 = 0; i0 < P[0]; i0++)
    for (int64_t i1 = 0; i1 < P[1]; i1++) {
      int64_t r = i0 * P[1] + i1, o0 = i0 - t->pad_begin[0], o1 = i1 - t->pad_begin[1];
      if (o0 < 0 || o0 >= t->in[0] || o1 < 0 || o1 >= t->in[1]) continue; /* padding: 0 taps */
      int64_t ia[2], ib[2];
      double wa[2], wb[2];
      int na, nb, m = 0;
      linear_taps(u, 0, o0, ia, wa, &na);
      linear_taps(u, 1, o1, ib, wb, &nb);
      for (int a = 0; a < na; a++)
        for (int b = 0; b < nb; b++, m++) {
          roff[r * LIN_ROW_TAPS + m] = (ia[a] * u->low[1] + ib[b]) * u->low[2];
          rw[r * LIN_ROW_TAPS + m] = 1.0 * wa[a] * wb[b];
        }
      for (; m < LIN_ROW_TAPS; m++) roff[r * LIN_ROW_TAPS + m] = roff[r * LIN_ROW_TAPS];
      rn[r] = na * nb;
    }
  for (int64_t j = 0; j < uw; j++) {
    int n2;
    linear_taps(u, 2, j, &cidx[2 * j], &cw[2 * j], &n2);
    if (n2 == 1) cidx[2 * j + 1] = cidx[2 * j], cw[2 * j + 1] = 0;
  }
  int b_roff = cg_buf_const(cx, roff, sizeof(int64_t) * (size_t)(nrp * LIN_ROW_TAPS + 1), e);
  int b_rw = b_roff < 0 ? -1 : cg_buf_const(cx, rw, sizeof(double) * (size_t)(nrp * LIN_ROW_TAPS + 1), e);
  int b_rn = b_rw < 0 ? -1 : cg_buf_const(cx, rn, sizeof(int64_t) * (size_t)(nrp + 1), e);
  int b_ci = b_rn < 0 ? -1 : cg_buf_const(cx, cidx, sizeof(int64_t) * (size_t)(uw * 2 + 1), e);
  int b_cw = b_ci < 0 ? -1 : cg_buf_const(cx, cw, sizeof(double) * (size_t)(uw * 2 + 1), e);
  if (b_cw < 0) {
    rc = e->code;
    goto done;
  }
  cg_rows rp;
  cg_rows_plan(&rp, u->N * u->C * nrp, P[2], CG_TILE_ELEMS);
  if (rp.n_rows * P[2] == 0) goto done;
  cg_kernel k;
  rc = cg_kernel_begin(cx, &k, "upsample_linear_pad", 7, e);
  if (rc) goto done;
  {
    const cg_types *ty = k.t;
    LLVMBuilderRef b = k.b;
    V xp = cg_arg(&k, 0), yp = cg_arg(&k, 1), roffp = cg_arg(&k, 2), rwp = cg_arg(&k, 3);
    V rnp = cg_arg(&k, 4), cip = cg_arg(&k, 5), cwp = cg_arg(&k, 6);
    V row, jlo, jhi;
    cg_rows_begin(&k, &rp, &row, &jlo, &jhi);
    V plane = LLVMBuildUDiv(b, row, cg_i64(&k, nrp), "");
    V rr = LLVMBuildURem(b, row, cg_i64(&k, nrp), "");
    V xbase = cg_mul(&k, plane, cg_i64(&k, u->low[0] * u->low[1] * u->low[2]));
    V ybase = cg_mul(&k, row, cg_i64(&k, P[2]));
    V zero = cg_f32(&k, 0);
    V cnt = cg_load(&k, ty->i64, rnp, rr);
    cg_ifelse ie;
    cg_ifelse_begin(&k, &ie, LLVMBuildICmp(b, LLVMIntEQ, cnt, cg_i64(&k, 0), ""));
    cg_fill_loop(&k, yp, ybase, 1, jlo, jhi, zero);
    cg_ifelse_else(&k, &ie);
    V ilo = cg_max(&k, jlo, cg_i64(&k, pwb)), ihi = cg_min(&k, jhi, cg_i64(&k, pwb + uw));
    cg_fill_loop(&k, yp, ybase, 1, jlo, cg_min(&k, jhi, cg_i64(&k, pwb)), zero);
    cg_fill_loop(&k, yp, ybase, 1, cg_max(&k, jlo, cg_i64(&k, pwb + uw)), jhi, zero);
    V roffs[LIN_ROW_TAPS], rws[LIN_ROW_TAPS];
    for (int m = 0; m < LIN_ROW_TAPS; m++) {
      V ti = cg_add(&k, cg_mul(&k, rr, cg_i64(&k, LIN_ROW_TAPS)), cg_i64(&k, m));
      roffs[m] = cg_add(&k, xbase, cg_load(&k, ty->i64, roffp, ti));
      rws[m] = cg_load(&k, ty->f64, rwp, ti);
    }
    cg_loop lj;
    V j = cg_loop_begin(&k, &lj, ilo, ihi, NULL, "j");
    V jc = LLVMBuildNSWSub(b, j, cg_i64(&k, pwb), "");
    V c0 = cg_mul(&k, jc, cg_i64(&k, 2)), c1 = cg_add(&k, c0, cg_i64(&k, 1));
    V ci[2] = {cg_load(&k, ty->i64, cip, c0), cg_load(&k, ty->i64, cip, c1)};
    V cws[2] = {cg_load(&k, ty->f64, cwp, c0), cg_load(&k, ty->f64, cwp, c1)};
    V acc = LLVMConstReal(ty->f64, 0);
    for (int m = 0; m < LIN_ROW_TAPS; m++)
      for (int c = 0; c < 2; c++) {
        V xv = cg_load(&k, ty->f32, xp, cg_add(&k, roffs[m], ci[c]));
        V wt = LLVMBuildFMul(b, rws[m], cws[c], "");
        acc = LLVMBuildFAdd(b, acc, LLVMBuildFMul(b, wt, LLVMBuildFPExt(b, xv, ty->f64, ""), ""), "");
      }
    cg_store(&k, LLVMBuildFPTrunc(b, acc, ty->f32, ""), yp, cg_add(&k, ybase, j));
    cg_loop_end(&k, &lj);
    cg_ifelse_end(&k, &ie);
    cg_rows_end(&k, &rp);
    rc = cg_kernel_end(cx, &k, rp.n_tiles, (int[]){x_buf, dst_buf, b_roff, b_rw, b_rn, b_ci, b_cw},
                       e);
  }
done:
  kiln_free(roff);
  kiln_free(rw);
  kiln_free(rn);
  kiln_free(cidx);
  kiln_free(cw);
  return rc;
}

static kiln_code emit_UpsampleConv(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                                   kiln_err *e) {
  upconv u;
  kiln_code rc = upconv_init(g, n, &u, e);
  cg_conv_epilogue epi;
  if (!rc) rc = epilogue_of(cx, n, &epi, e);
  if (rc) {
    upconv_free(&u);
    return rc;
  }
  const kiln_tensor *wc = ir_in_const(g, n, 1);
  int x_buf = cg_buf_value(cx, n->in[0]), y_buf = cg_buf_value(cx, n->out[0]);
  bool unit = u.t.stride[0] == 1 && u.t.stride[1] == 1 && u.t.stride[2] == 1;
  cg_upconv pu = {.N = u.N, .C = u.C, .OC = u.OC, .groups = u.groups};
  for (int d = 0; d < 3; d++) {
    pu.low[d] = u.low[d], pu.s[d] = u.s[d], pu.k[d] = u.t.kernel[d];
    pu.dil[d] = u.t.dilation[d], pu.pad_b[d] = u.t.pad_begin[d], pu.out[d] = u.t.out[d];
  }
  /* run-time weights on rows of at most half a vector: the phases (as wide as X's rows) would
   * leave most lanes idle, so the upsampled rows are read through the nearest transform
   * (training step at 128, SPN's first block, 4 columns: 8.4 ms by the transform, 9.2-12 by
   * phases; at 224, 7 columns: 33-35 ms by the transform, 18-23 by phases; Zen 3, 2 threads) */
  bool narrow = !wc && u.s[2] > 1 && 2 * u.low[2] <= (cg_avx512(cx) ? 16 : 8);
  if (u.floor_map && unit && cg_upconv_phases_ok(&pu) && !narrow) {
    rc = cg_emit_upconv_phases(cx, &pu, wc ? (const float *)wc->data : NULL,
                               cg_buf_value(cx, n->in[1]), &epi, x_buf, y_buf, e);
    upconv_free(&u);
    return rc;
  }
  if (u.floor_map) { /* conv_gen reads X through its nearest transform */
    cg_conv_geom geom = upconv_geom(&u, false);
    cg_conv_weights w = cg_conv_weights_oihw(&geom, cg_buf_value(cx, n->in[1]),
                                             wc ? (const float *)wc->data : NULL);
    rc = cg_emit_conv(cx, "upsample_conv", &geom, &w, &epi, x_buf, y_buf, e);
    upconv_free(&u);
    return rc;
  }
  /* one pass fills the zero-padded upsampled input, then an unpadded convolution */
  cg_conv_geom geom = upconv_geom(&u, true);
  int64_t bytes = u.N * u.C * geom.in[0] * geom.in[1] * geom.in[2] * (int64_t)sizeof(float);
  int pad_buf = cg_buf_scratch(cx, (size_t)bytes, e);
  if (pad_buf < 0) rc = e->code;
  if (!rc) rc = u.p.linear ? fill_linear(cx, &u, x_buf, pad_buf, e)
                           : fill_nearest(cx, &u, x_buf, pad_buf, e);
  if (!rc) {
    cg_conv_weights w = cg_conv_weights_oihw(&geom, cg_buf_value(cx, n->in[1]),
                                             wc ? (const float *)wc->data : NULL);
    rc = cg_emit_conv(cx, u.p.linear ? "upsample_linear_conv" : "upsample_conv", &geom, &w, &epi,
                      pad_buf, y_buf, e);
  }
  upconv_free(&u);
  return rc;
}

/* ---- GapGemm ---- */

#define GAP_PLANES_PER_TILE 64
#define GEMM_COLS 64

typedef struct gapgemm_kern {
  cg_kernel *k;
  int V;
  int64_t C, M, blk, col; /* B'[c, m] of block mb at wp[mb * blk + c * row + (m - m0) * col] */
  double alpha, beta;
  int64_t cs_n, cs_m;     /* C's strides against [N, M] */
  V mp, wp, yp, cp;       /* arguments: means, B', Y, C (or NULL) */
  V n, mb;                /* the tile's image and column block */
  LLVMTypeRef vty;
  V acc[GEMM_COLS / 8];
} gapgemm_kern;

/* `width` vector elements of y[n, mb * GEMM_COLS ...], B' rows `row` floats apart. */
static void gapgemm_block(gapgemm_kern *gk, int64_t width, int64_t row) {
  cg_kernel *k = gk->k;
  LLVMBuilderRef b = k->b;
  const cg_types *ty = k->t;
  unsigned vw = (unsigned)gk->V;
  int nv = (int)((width + vw - 1) / vw);
  unsigned last = (unsigned)(width - (int64_t)(nv - 1) * vw);
  V m0 = cg_mul(k, gk->mb, cg_i64(k, GEMM_COLS));
  V wb = cg_mul(k, gk->mb, cg_i64(k, gk->blk));
  for (int i = 0; i < nv; i++) LLVMBuildStore(b, LLVMConstNull(gk->vty), gk->acc[i]);
  cg_loop lc;
  V c = cg_loop_begin(k, &lc, cg_i64(k, 0), cg_i64(k, gk->C), NULL, "c");
  V mval = cg_splat(k, cg_load(k, ty->f32, gk->mp, cg_add(k, cg_mul(k, gk->n, cg_i64(k, gk->C)), c)),
                    vw);
  V wrow = cg_add(k, wb, cg_mul(k, c, cg_i64(k, row)));
  for (int i = 0; i < nv; i++) {
    unsigned lanes = i == nv - 1 ? last : vw;
    V w;
    if (gk->col == 1) {
      w = cg_vload(k, gk->wp, cg_add(k, wrow, cg_i64(k, (int64_t)i * vw)), vw, lanes);
    } else { /* a transposed B that is not constant: strided lanes */
      w = LLVMConstNull(gk->vty);
      for (unsigned l = 0; l < lanes; l++)
        w = LLVMBuildInsertElement(
            b, w, cg_load(k, ty->f32, gk->wp, cg_add(k, wrow, cg_i64(k, (i * vw + l) * gk->col))),
            cg_i32(k, (int)l), "");
    }
    V a = LLVMBuildLoad2(b, gk->vty, gk->acc[i], "");
    LLVMBuildStore(b, cg_intrinsic(k, "llvm.fma", &gk->vty, 1, (V[]){mval, w, a}, 3), gk->acc[i]);
  }
  cg_loop_end(k, &lc);
  LLVMTypeRef dty = LLVMVectorType(ty->f64, vw);
  for (int i = 0; i < nv; i++) {
    unsigned lanes = i == nv - 1 ? last : vw;
    V m = cg_add(k, m0, cg_i64(k, (int64_t)i * vw));
    V r = LLVMBuildFMul(b, LLVMBuildFPExt(b, LLVMBuildLoad2(b, gk->vty, gk->acc[i], ""), dty, ""),
                        cg_splat(k, LLVMConstReal(ty->f64, gk->alpha), vw), "");
    if (gk->cp) {
      V ci = cg_add(k, cg_mul(k, gk->n, cg_i64(k, gk->cs_n)), cg_mul(k, m, cg_i64(k, gk->cs_m)));
      V cval = gk->cs_m ? cg_vload(k, gk->cp, ci, vw, lanes)
                        : cg_splat(k, cg_load(k, ty->f32, gk->cp, ci), vw);
      r = LLVMBuildFAdd(b, r,
                        LLVMBuildFMul(b, cg_splat(k, LLVMConstReal(ty->f64, gk->beta), vw),
                                      LLVMBuildFPExt(b, cval, dty, ""), ""),
                        "");
    }
    cg_vstore(k, LLVMBuildFPTrunc(b, r, gk->vty, ""), gk->yp,
              cg_add(k, cg_mul(k, gk->n, cg_i64(k, gk->M)), m), vw, lanes);
  }
}

static kiln_code emit_GapGemm(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                              kiln_err *e) {
  const kiln_value *x = ir_in(g, n, 0), *wv = ir_in(g, n, 1), *y = ir_out(g, n, 0);
  const kiln_value *cv = ir_in(g, n, 2);
  int64_t N = x->shape.d[0], C = x->shape.d[1], M = y->shape.d[1], plane = 1;
  for (int d = 2; d < x->shape.rank; d++) plane *= x->shape.d[d];
  if (N * M == 0) return KILN_OK;
  bool tb = ir_attr_int(n, "transB") != 0;
  double alpha = ir_attr_float(n, "alpha"), beta = ir_attr_float(n, "beta");
  int means = cg_buf_scratch(cx, sizeof(float) * (size_t)(N * C > 0 ? N * C : 1), e);
  if (means < 0) return e->code;

  /* 1: means[n, c] = (float)(sum in double / plane), as GlobalAveragePool's reference */
  if (N * C > 0) {
    int64_t planes = N * C, tiles = (planes + GAP_PLANES_PER_TILE - 1) / GAP_PLANES_PER_TILE;
    cg_kernel k;
    KILN_TRY(cg_kernel_begin(cx, &k, "gap_means", 2, e));
    const cg_types *ty = k.t;
    LLVMBuilderRef b = k.b;
    V xp = cg_arg(&k, 0), mp = cg_arg(&k, 1);
    V acc_slot = LLVMBuildAlloca(b, ty->f64, "sum"); /* in the entry block */
    V plo = cg_mul(&k, k.lo, cg_i64(&k, GAP_PLANES_PER_TILE));
    V phi = cg_min(&k, cg_mul(&k, k.hi, cg_i64(&k, GAP_PLANES_PER_TILE)), cg_i64(&k, planes));
    cg_loop lp, li;
    V p = cg_loop_begin(&k, &lp, plo, phi, NULL, "plane");
    V base = cg_mul(&k, p, cg_i64(&k, plane));
    LLVMBuildStore(b, LLVMConstReal(ty->f64, 0), acc_slot);
    V i = cg_loop_begin(&k, &li, cg_i64(&k, 0), cg_i64(&k, plane), NULL, "i");
    V s = LLVMBuildLoad2(b, ty->f64, acc_slot, "");
    V xv = LLVMBuildFPExt(b, cg_load(&k, ty->f32, xp, cg_add(&k, base, i)), ty->f64, "");
    LLVMBuildStore(b, LLVMBuildFAdd(b, s, xv, ""), acc_slot);
    cg_loop_end(&k, &li);
    V mean = plane ? LLVMBuildFDiv(b, LLVMBuildLoad2(b, ty->f64, acc_slot, ""),
                                   LLVMConstReal(ty->f64, (double)plane), "")
                   : LLVMConstReal(ty->f64, 0);
    cg_store(&k, LLVMBuildFPTrunc(b, mean, ty->f32, ""), mp, p);
    cg_loop_end(&k, &lp);
    KILN_TRY(cg_kernel_end(cx, &k, tiles, (int[]){cg_buf_value(cx, n->in[0]), means}, e));
  }

  /* 2: y[n, m] = alpha * sum_c means[n, c] * B'[c, m] + beta * C[n, m], over blocks of
   * GEMM_COLS columns held in vector registers.  A constant B is repacked so that each block
   * is one contiguous [C][width] slab: the tile streams it sequentially (ResNet-50's 2048 x
   * 1000 weights, 8 MB read once per image, went at 4.4 GB/s when each row of a 64-column
   * block sat in another page).  Tiles run block-major, so the images of a batch reuse a block
   * from L2.  Each y is the same fused multiply-add chain over c as before (bitwise). */
  const kiln_tensor *wc = ir_in_const(g, n, 1);
  int w_buf = cg_buf_value(cx, n->in[1]);
  int64_t mblocks = (M + GEMM_COLS - 1) / GEMM_COLS, w_last = M - (mblocks - 1) * GEMM_COLS;
  /* B'[c, m] of block mb at w[mb * blk + c * row + (m - m0) * col] */
  int64_t blk = tb ? GEMM_COLS * C : GEMM_COLS, row = tb ? 1 : M, col = tb ? C : 1;
  bool packed = wc != NULL;
  if (packed) {
    float *rp = kiln_malloc(sizeof(float) * (size_t)(C * M > 0 ? C * M : 1));
    if (!rp) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory (repacked weights)");
    const float *w = wc->data;
    for (int64_t mb = 0; mb < mblocks; mb++) {
      int64_t m0 = mb * GEMM_COLS, width = mb == mblocks - 1 ? w_last : GEMM_COLS;
      for (int64_t c = 0; c < C; c++)
        for (int64_t j = 0; j < width; j++)
          rp[m0 * C + c * width + j] = tb ? w[(m0 + j) * C + c] : w[c * M + m0 + j];
    }
    w_buf = cg_buf_const(cx, rp, sizeof(float) * (size_t)(C * M), e);
    kiln_free(rp);
    if (w_buf < 0) return e->code;
    blk = GEMM_COLS * C, row = GEMM_COLS, col = 1; /* the last block's row is w_last */
  }
  (void)wv;
  int64_t cs_n = 0, cs_m = 0; /* C's broadcast strides against [N, M] */
  if (cv) {
    const kiln_shape *s = &cv->shape;
    if (s->rank == 1) cs_m = s->d[0] == 1 ? 0 : 1;
    if (s->rank == 2) {
      cs_m = s->d[1] == 1 ? 0 : 1;
      cs_n = s->d[0] == 1 ? 0 : s->d[1];
    }
  }
  cg_kernel k;
  KILN_TRY(cg_kernel_begin(cx, &k, "gap_gemm", cv ? 4 : 3, e));
  gapgemm_kern gk = {.k = &k, .V = cg_avx512(cx) ? 16 : 8, .C = C, .M = M, .blk = blk,
                     .col = col, .alpha = alpha, .beta = beta, .cs_n = cs_n, .cs_m = cs_m,
                     .mp = cg_arg(&k, 0), .wp = cg_arg(&k, 1), .yp = cg_arg(&k, 2),
                     .cp = cv ? cg_arg(&k, 3) : NULL};
  gk.vty = LLVMVectorType(k.t->f32, (unsigned)gk.V);
  for (int i = 0; i < GEMM_COLS / 8; i++) gk.acc[i] = cg_entry_alloca(&k, gk.vty);
  LLVMBuilderRef b = k.b;
  cg_loop lt;
  V tile = cg_loop_begin(&k, &lt, k.lo, k.hi, NULL, "tile");
  gk.n = LLVMBuildURem(b, tile, cg_i64(&k, N), "");
  gk.mb = LLVMBuildUDiv(b, tile, cg_i64(&k, N), "");
  if (w_last == GEMM_COLS) {
    gapgemm_block(&gk, GEMM_COLS, row);
  } else {
    cg_ifelse ie;
    cg_ifelse_begin(&k, &ie, LLVMBuildICmp(b, LLVMIntEQ, gk.mb, cg_i64(&k, mblocks - 1), ""));
    gapgemm_block(&gk, w_last, packed ? w_last : row);
    cg_ifelse_else(&k, &ie);
    gapgemm_block(&gk, GEMM_COLS, row);
    cg_ifelse_end(&k, &ie);
  }
  cg_loop_end(&k, &lt);
  int bufs[4] = {means, w_buf, cg_buf_value(cx, n->out[0]), cv ? cg_buf_value(cx, n->in[2]) : -1};
  return cg_kernel_end(cx, &k, N * mblocks, bufs, e);
}

/* ---- FusedElementwise ---- */

typedef struct ew_plan {
  kiln_ew_chain chain;
} ew_plan;

/* Evaluates the steps in order on the loaded inputs; returns the last result. */
static V ew_body(cg_kernel *k, const kiln_node *n, V *in, const kiln_dtype *dt, void *user) {
  const kiln_ew_chain *c = &((const ew_plan *)user)->chain;
  V vals[KILN_EW_MAX_INPUTS + KILN_EW_MAX_STEPS];
  for (int i = 0; i < c->n_inputs; i++) vals[i] = in[i];
  static const kiln_dtype f32s[KILN_EW_MAX_ARITY] = {KILN_F32, KILN_F32, KILN_F32, KILN_F32,
                                                     KILN_F32, KILN_F32, KILN_F32, KILN_F32};
  for (int s = 0; s < c->n_steps; s++) {
    const kiln_ew_step *st = &c->step[s];
    V ops[KILN_EW_MAX_ARITY];
    for (int j = 0; j < st->arity; j++) ops[j] = st->operand[j] < 0 ? NULL : vals[st->operand[j]];
    kiln_synth_node sn;
    kiln_ew_step_node(c, s, &sn);
    vals[c->n_inputs + s] = cg_elementwise_body(st->op)(k, &sn.n, ops, f32s, NULL);
  }
  return vals[c->n_inputs + c->n_steps - 1];
}

static kiln_code emit_FusedElementwise(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                                       kiln_err *e) {
  ew_plan *p = kiln_malloc(sizeof *p);
  if (!p) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  kiln_code rc = kiln_ew_chain_get(n, n->n_in, &p->chain, e);
  for (int s = 0; !rc && s < p->chain.n_steps; s++)
    if (!cg_elementwise_body(p->chain.step[s].op))
      rc = kiln_errf(e, KILN_ERR_UNSUPPORTED, "step %d (%s) has no compiled body", s,
                     kiln_op_name(p->chain.step[s].op));
  if (!rc) rc = cg_emit_map(cx, g, n, ew_body, p, e);
  kiln_free(p);
  return rc;
}

void cg_register_fused(kiln_emit_fn *table) {
  table[KILN_OP_FusedConv] = emit_FusedConv;
  table[KILN_OP_UpsampleConv] = emit_UpsampleConv;
  table[KILN_OP_GapGemm] = emit_GapGemm;
  table[KILN_OP_FusedElementwise] = emit_FusedElementwise;
  cg_register_upconv_grad(table);
}
