/* emit_resize.c — emitters of the resize family: Resize, Upsample and Pad.
 *
 * Every coordinate depends only on static shapes and attributes, so the per-axis maps are
 * computed here at compile time with the reference's own formulas (runtime/ref/resize_coords.h)
 * and baked into constant tables.  Nearest resizing and Pad are table-driven copies
 * (emit_copy.h): per output index along each axis, the source offset or "fill value"
 * (tf_crop_and_resize's extrapolation_value, Pad's constant).  Linear and cubic resizing use
 * one kernel: per output row, the taps of the outer resized axes (offsets and weights) are
 * combined once, and the inner loop blends the taps of the innermost axis. */
#include <string.h>

#include "codegen/emit_copy.h"
#include "ir/ops/resize.h"

/* Reads an element value given as a double into the bytes of dtype dt. */
static uint64_t value_bits(kiln_dtype dt, double v) {
  uint64_t bits = 0;
  kiln_tensor t = {.dtype = dt, .shape = {.rank = 0}, .data = &bits, .numel = 1, .borrowed = true};
  kiln_tensor_set_f(&t, 0, v);
  return bits;
}

/* ---- nearest: a table-driven copy ---- */

static kiln_code emit_nearest(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                              const kiln_resize_params *p, kiln_err *e) {
  const kiln_value *x = ir_in(g, n, 0), *y = ir_out(g, n, 0);
  int rank = x->shape.rank;
  int64_t total = 0, xs[KILN_MAX_RANK];
  for (int d = 0; d < rank; d++) total += y->shape.d[d];
  kiln_strides(&x->shape, xs);
  int64_t *tabs = kiln_malloc(sizeof(int64_t) * (size_t)(total ? total : 1));
  int64_t *idx = kiln_malloc(sizeof(int64_t) * (size_t)(total ? total : 1));
  double *w = kiln_malloc(sizeof(double) * (size_t)(total ? total : 1));
  int *count = kiln_malloc(sizeof(int) * (size_t)(total ? total : 1));
  kiln_code rc = KILN_OK;
  if (!tabs || !idx || !w || !count) {
    rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory (resize tables)");
    goto done;
  }
  int bufs[2] = {n->in[0], n->out[0]};
  char label[64];
  snprintf(label, sizeof label, "nearest_%s", n->def->name);
  cg_copy c;
  memset(&c, 0, sizeof c);
  c.label = label;
  c.dtype = y->dtype;
  c.rank = rank;
  c.bufs = bufs;
  c.n_bufs = 2;
  c.src_arg = 0;
  c.dst_arg = 1;
  c.fill_arg = -1;
  c.fill_bits = value_bits(y->dtype, p->extrapolation_value);
  int64_t off = 0;
  for (int d = 0; d < rank; d++) {
    kiln_resize_axis_taps(p, d, x->shape.d[d], 1, idx + off, w + off, count + off);
    for (int64_t o = 0; o < y->shape.d[d]; o++)
      tabs[off + o] = count[off + o] < 0 ? -1 : idx[off + o] * xs[d];
    c.dims[d] = y->shape.d[d];
    c.src_tab[d] = tabs + off;
    off += y->shape.d[d];
  }
  cg_contig_strides(rank, c.dims, c.dst_stride);
  rc = cg_emit_copy(cx, &c, e);
done:
  kiln_free(tabs), kiln_free(idx), kiln_free(w), kiln_free(count);
  return rc;
}

/* ---- linear and cubic ---- */

#define MAX_COMBOS 64 /* tap combinations of the outer resized axes, unrolled per row */

/* One axis of the interpolation kernel: affine (not resized: index = output index) or with
 * `taps` taps per output index from the tables (offsets in elements of x, float weights). */
typedef struct interp_axis {
  int64_t dim, sst, dst;
  bool table;
  int taps;
  bool outside;     /* some positions lie outside (tf_crop_and_resize): offset -1 in tap 0 */
  int64_t off_base; /* position of this axis' entries in the offset / weight tables */
} interp_axis;

static kiln_code emit_interp(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                             const kiln_resize_params *p, kiln_err *e) {
  const kiln_value *x = ir_in(g, n, 0), *y = ir_out(g, n, 0);
  int rank = x->shape.rank;
  int max_taps = p->mode == KILN_RESIZE_LINEAR ? 2 : 4;
  int64_t ynumel;
  kiln_shape_numel(&y->shape, &ynumel);
  if (ynumel == 0) return KILN_OK;
  int64_t total = 0, xs[KILN_MAX_RANK], ys[KILN_MAX_RANK];
  for (int d = 0; d < rank; d++) total += y->shape.d[d];
  kiln_strides(&x->shape, xs);
  kiln_strides(&y->shape, ys);
  int64_t *idx = kiln_malloc(sizeof(int64_t) * (size_t)(total * max_taps));
  double *w = kiln_malloc(sizeof(double) * (size_t)(total * max_taps));
  int *count = kiln_malloc(sizeof(int) * (size_t)total);
  int64_t *toff = kiln_malloc(sizeof(int64_t) * (size_t)(total * max_taps));
  float *tw = kiln_malloc(sizeof(float) * (size_t)(total * max_taps));
  kiln_code rc = KILN_OK;
  cg_kernel k;
  memset(&k, 0, sizeof k);
  if (!idx || !w || !count || !toff || !tw) {
    rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory (resize tables)");
    goto done;
  }
  /* 1. per-axis taps; axes that map every output index to itself with weight 1 are affine */
  interp_axis ax[KILN_MAX_RANK];
  int r = 0;
  int64_t off = 0, tab_len = 0;
  for (int d = 0; d < rank; d++) {
    int64_t len = y->shape.d[d];
    int64_t *a_idx = idx + off * max_taps;
    double *a_w = w + off * max_taps;
    int *a_count = count + off;
    kiln_resize_axis_taps(p, d, x->shape.d[d], max_taps, a_idx, a_w, a_count);
    off += len;
    bool trivial = len == x->shape.d[d];
    int taps = 1;
    bool outside = false;
    for (int64_t o = 0; o < len; o++) {
      if (a_count[o] != 1 || a_idx[o * max_taps] != o || a_w[o * max_taps] != 1) trivial = false;
      if (a_count[o] > taps) taps = a_count[o];
      if (a_count[o] < 0) outside = true;
    }
    interp_axis ia = {.dim = len, .sst = xs[d], .dst = ys[d]};
    if (!trivial) {
      ia.table = true;
      ia.taps = taps;
      ia.outside = outside;
      ia.off_base = tab_len;
      for (int64_t o = 0; o < len; o++) {
        int64_t *to = toff + tab_len + o * taps;
        float *tww = tw + tab_len + o * taps;
        int cnt = a_count[o];
        for (int t = 0; t < taps; t++) {
          /* padding taps repeat tap 0 with weight 0; outside positions read offset 0 */
          int src = cnt <= 0 ? -1 : t < cnt ? t : 0;
          to[t] = src < 0 ? 0 : a_idx[o * max_taps + src] * xs[d];
          tww[t] = src < 0 || t >= cnt ? 0.0f : (float)a_w[o * max_taps + src];
        }
        if (cnt < 0) to[0] = -1;
      }
      tab_len += len * taps;
    }
    if (len == 1 && !ia.table) continue;
    /* merge with the previous axis when both are affine and contiguous in x and y */
    if (r > 0 && !ia.table && !ax[r - 1].table && ax[r - 1].sst == ia.sst * ia.dim &&
        ax[r - 1].dst == ia.dst * ia.dim) {
      ax[r - 1].dim *= ia.dim;
      ax[r - 1].sst = ia.sst;
      ax[r - 1].dst = ia.dst;
      continue;
    }
    ax[r++] = ia;
  }
  if (r == 0) ax[r++] = (interp_axis){.dim = 1, .sst = 1, .dst = 1};
  int64_t combos = 1;
  for (int d = 0; d < r - 1; d++)
    if (ax[d].table) combos *= ax[d].taps;
  if (combos > MAX_COMBOS) {
    rc = kiln_errf(e, KILN_ERR_UNSUPPORTED,
                   "%s resizing of this many axes (%lld tap combinations) is not compiled",
                   p->mode == KILN_RESIZE_LINEAR ? "linear" : "cubic", (long long)combos);
    goto done;
  }
  int bufs[4] = {n->in[0], n->out[0], -1, -1};
  int n_args = 2;
  if (tab_len) {
    bufs[2] = cg_buf_const(cx, toff, sizeof(int64_t) * (size_t)tab_len, e);
    bufs[3] = cg_buf_const(cx, tw, sizeof(float) * (size_t)tab_len, e);
    if (bufs[2] < 0 || bufs[3] < 0) {
      rc = e->code;
      goto done;
    }
    n_args = 4;
  }
  const interp_axis *in = &ax[r - 1];
  int64_t n_rows = 1, outer_dims[KILN_MAX_RANK];
  for (int d = 0; d < r - 1; d++) n_rows *= outer_dims[d] = ax[d].dim;
  cg_rows rp;
  cg_rows_plan(&rp, n_rows, in->dim, CG_TILE_ELEMS / (in->table ? 4 : 1));

  char label[64];
  snprintf(label, sizeof label, "%s_%s", p->mode == KILN_RESIZE_LINEAR ? "linear" : "cubic",
           n->def->name);
  rc = cg_kernel_begin(cx, &k, label, n_args, e);
  if (rc) goto done;
  LLVMBuilderRef b = k.b;
  LLVMTypeRef f32 = k.t->f32, i64 = k.t->i64;
  LLVMValueRef xp = cg_arg(&k, 0), yp = cg_arg(&k, 1);
  LLVMValueRef offp = n_args > 2 ? cg_arg(&k, 2) : NULL, wp = n_args > 2 ? cg_arg(&k, 3) : NULL;
  LLVMValueRef zero = cg_f32(&k, 0), izero = cg_i64(&k, 0);
  LLVMValueRef extrap = cg_f32(&k, (float)p->extrapolation_value);
  LLVMValueRef row, jlo, jhi, coord[KILN_MAX_RANK];
  cg_rows_begin(&k, &rp, &row, &jlo, &jhi);
  cg_unravel(&k, row, outer_dims, r - 1, coord);
  /* the row's tap combinations: offsets and weights, earlier axes varying slowest */
  LLVMValueRef c_off[MAX_COMBOS], c_w[MAX_COMBOS], outside = NULL;
  LLVMValueRef srcbase = izero, dstbase = izero;
  int nc = 1;
  c_off[0] = izero;
  c_w[0] = NULL; /* weight 1 */
  for (int d = 0; d < r - 1; d++) {
    dstbase = cg_add(&k, dstbase, cg_mul(&k, coord[d], cg_i64(&k, ax[d].dst)));
    if (!ax[d].table) {
      srcbase = cg_add(&k, srcbase, cg_mul(&k, coord[d], cg_i64(&k, ax[d].sst)));
      continue;
    }
    int T = ax[d].taps;
    LLVMValueRef base = cg_add(&k, cg_mul(&k, coord[d], cg_i64(&k, T)), cg_i64(&k, ax[d].off_base));
    LLVMValueRef to[4], tw_[4];
    for (int t = 0; t < T; t++) {
      LLVMValueRef at = cg_add(&k, base, cg_i64(&k, t));
      to[t] = cg_load(&k, i64, offp, at);
      tw_[t] = cg_load(&k, f32, wp, at);
    }
    if (ax[d].outside) {
      LLVMValueRef o = LLVMBuildICmp(b, LLVMIntSLT, to[0], izero, "");
      outside = outside ? LLVMBuildOr(b, outside, o, "") : o;
      to[0] = cg_max(&k, to[0], izero);
    }
    LLVMValueRef n_off[MAX_COMBOS], n_w[MAX_COMBOS];
    int m = 0;
    for (int c = 0; c < nc; c++)
      for (int t = 0; t < T; t++) {
        n_off[m] = cg_add(&k, c_off[c], to[t]);
        n_w[m] = c_w[c] ? LLVMBuildFMul(b, c_w[c], tw_[t], "") : tw_[t];
        m++;
      }
    nc = m;
    memcpy(c_off, n_off, sizeof(LLVMValueRef) * (size_t)m);
    memcpy(c_w, n_w, sizeof(LLVMValueRef) * (size_t)m);
  }
  for (int c = 0; c < nc; c++) c_off[c] = cg_add(&k, srcbase, c_off[c]);
  /* the inner loop */
  cg_loop lj;
  LLVMValueRef j = cg_loop_begin(&k, &lj, jlo, jhi, NULL, "j");
  int T = in->table ? in->taps : 1;
  LLVMValueRef jo[4], jw[4], jout = NULL;
  if (in->table) {
    LLVMValueRef base = cg_add(&k, cg_mul(&k, j, cg_i64(&k, T)), cg_i64(&k, in->off_base));
    for (int t = 0; t < T; t++) {
      LLVMValueRef at = cg_add(&k, base, cg_i64(&k, t));
      jo[t] = cg_load(&k, i64, offp, at);
      jw[t] = cg_load(&k, f32, wp, at);
    }
    if (in->outside) {
      jout = LLVMBuildICmp(b, LLVMIntSLT, jo[0], izero, "");
      jo[0] = cg_max(&k, jo[0], izero);
    }
  } else {
    jo[0] = cg_mul(&k, j, cg_i64(&k, in->sst));
    jw[0] = NULL;
  }
  /* acc = sum over combinations and inner taps of w * x; a zero weight adds nothing (also
   * when x is infinite), as in the reference, which drops zero-weight taps */
  LLVMValueRef acc = zero;
  for (int c = 0; c < nc; c++)
    for (int t = 0; t < T; t++) {
      LLVMValueRef wt = c_w[c] && jw[t] ? LLVMBuildFMul(b, c_w[c], jw[t], "")
                        : c_w[c]        ? c_w[c]
                                        : jw[t];
      LLVMValueRef v = cg_load(&k, f32, xp, cg_add(&k, c_off[c], jo[t]));
      if (wt) {
        LLVMValueRef prod = LLVMBuildFMul(b, wt, v, "");
        v = cg_select(&k, LLVMBuildFCmp(b, LLVMRealOEQ, wt, zero, ""), zero, prod);
      }
      acc = c == 0 && t == 0 ? v : LLVMBuildFAdd(b, acc, v, "");
    }
  LLVMValueRef out_any = outside && jout ? LLVMBuildOr(b, outside, jout, "")
                         : outside         ? outside
                                           : jout;
  if (out_any) acc = cg_select(&k, out_any, extrap, acc);
  cg_store(&k, acc, yp, cg_add(&k, dstbase, cg_mul(&k, j, cg_i64(&k, in->dst))));
  cg_loop_end(&k, &lj);
  cg_rows_end(&k, &rp);
  rc = cg_kernel_end(cx, &k, rp.n_tiles, bufs, e);
done:
  kiln_free(idx), kiln_free(w), kiln_free(count), kiln_free(toff), kiln_free(tw);
  return rc;
}

static kiln_code emit_resize(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                             kiln_err *e) {
  const kiln_value *x = ir_in(g, n, 0);
  const kiln_tensor *in[4] = {NULL};
  for (int i = 1; i < n->n_in && i < 4; i++) in[i] = ir_in_const(g, n, i);
  kiln_resize_params p;
  KILN_TRY(kiln_resize_params_get(g, n, &x->shape, in, &p, e));
  if (!kiln_shape_eq(&p.out, &ir_out(g, n, 0)->shape))
    return kiln_errf(e, KILN_ERR_INTERNAL, "resize output shape disagrees with shape inference");
  if (p.mode == KILN_RESIZE_NEAREST) return emit_nearest(cx, g, n, &p, e);
  if (x->dtype != KILN_F32)
    return kiln_errf(e, KILN_ERR_UNSUPPORTED, "linear and cubic resizing need float32");
  return emit_interp(cx, g, n, &p, e);
}

/* ---- Pad: a table-driven copy ---- */

/* Source index along one axis for output index i, or -1 for the constant (as in
 * runtime/ref/resize.c): negative pads crop to [lo, hi); positive pads extend it. */
static int64_t pad_source(kiln_pad_mode mode, int64_t i, int64_t begin, int64_t lo, int64_t hi) {
  int64_t src = i - begin;
  if (src >= lo && src < hi) return src;
  if (mode == KILN_PAD_CONSTANT) return -1;
  if (mode == KILN_PAD_EDGE) return src < lo ? lo : hi - 1;
  int64_t m = hi - lo;
  if (m == 1) return lo;
  int64_t period = 2 * (m - 1), r = (src - lo) % period;
  if (r < 0) r += period;
  if (r >= m) r = period - r;
  return lo + r;
}

static kiln_code emit_Pad(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                          kiln_err *e) {
  const kiln_value *x = ir_in(g, n, 0), *y = ir_out(g, n, 0);
  kiln_pad_params p;
  KILN_TRY(kiln_pad_params_get(g, n, &x->shape, n->n_in > 1 ? ir_in_const(g, n, 1) : NULL, &p, e));
  if (!kiln_shape_eq(&p.out, &y->shape))
    return kiln_errf(e, KILN_ERR_INTERNAL, "Pad output shape disagrees with shape inference");
  int rank = x->shape.rank;
  int64_t total = 0, xs[KILN_MAX_RANK], xnumel;
  for (int d = 0; d < rank; d++) total += y->shape.d[d];
  kiln_strides(&x->shape, xs);
  kiln_shape_numel(&x->shape, &xnumel);
  int64_t *tabs = kiln_malloc(sizeof(int64_t) * (size_t)(total ? total : 1));
  if (!tabs) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory (pad tables)");
  int bufs[3] = {n->in[0], n->out[0], -1};
  cg_copy c;
  memset(&c, 0, sizeof c);
  c.label = "pad";
  c.dtype = y->dtype;
  c.rank = rank;
  c.bufs = bufs;
  c.n_bufs = 2;
  c.src_arg = 0;
  c.dst_arg = 1;
  c.fill_arg = -1;
  c.src_empty = xnumel == 0;
  if (n->opset >= 11) {
    const kiln_value *cv = n->n_in > 2 ? ir_in(g, n, 2) : NULL;
    int64_t cn = 0;
    if (cv) kiln_shape_numel(&cv->shape, &cn);
    if (cn > 0) { /* the constant may be fed at run time: read it in the kernel */
      bufs[2] = n->in[2];
      c.n_bufs = 3;
      c.fill_arg = 2;
    }
  } else {
    c.fill_bits = value_bits(y->dtype, ir_attr_float(n, "value"));
  }
  int64_t off = 0;
  for (int d = 0; d < rank; d++) {
    int64_t lo = p.begin[d] < 0 ? -p.begin[d] : 0;
    int64_t hi = x->shape.d[d] - (p.end[d] < 0 ? -p.end[d] : 0);
    for (int64_t i = 0; i < y->shape.d[d]; i++) {
      int64_t s = pad_source(p.mode, i, p.begin[d], lo, hi);
      tabs[off + i] = s < 0 ? -1 : s * xs[d];
    }
    c.dims[d] = y->shape.d[d];
    c.src_tab[d] = tabs + off;
    off += y->shape.d[d];
  }
  cg_contig_strides(rank, c.dims, c.dst_stride);
  kiln_code rc = cg_emit_copy(cx, &c, e);
  kiln_free(tabs);
  return rc;
}

void cg_register_resize(kiln_emit_fn *table) {
  table[KILN_OP_Resize] = emit_resize;
  table[KILN_OP_Upsample] = emit_resize;
  table[KILN_OP_Pad] = emit_Pad;
}
