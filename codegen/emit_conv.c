/* emit_conv.c — emitters of Conv and ConvTranspose, both on the convolution generator
 * (conv_gen.h).  ConvTranspose is the convolution of the zero-inserted input with the
 * flipped, channel-transposed kernel. */
#include "codegen/conv_gen.h"
#include "codegen/emit_nn.h"
#include "ir/ops/nn_window.h"

static int opt_in(const kiln_node *n, int i) { return n->n_in > i ? n->in[i] : -1; }

static kiln_code emit_Conv(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                           kiln_err *e) {
  cg_conv_geom geom;
  KILN_TRY(cg_conv_geom_from_node(g, n, &geom, e));
  const kiln_tensor *wc = ir_in_const(g, n, 1);
  cg_conv_weights w = cg_conv_weights_oihw(&geom, cg_buf_value(cx, n->in[1]),
                                           wc ? (const float *)wc->data : NULL);
  cg_conv_epilogue epi = cg_conv_epilogue_none();
  if (opt_in(n, 2) >= 0) epi.bias_buf = cg_buf_value(cx, n->in[2]);
  return cg_emit_conv(cx, "conv", &geom, &w, &epi, cg_buf_value(cx, n->in[0]),
                      cg_buf_value(cx, n->out[0]), e);
}

/* y[o] = sum over i, k with o = i*stride + k*dil - pad_b of x[i] w[k].
 *
 * Unit strides: a stride-1 convolution of x padded by ext-1-pad_b with the flipped kernel.
 * W is (C, OC/group, k...).
 *
 * Strided: output phases.  Output o = s*q + r of phase r receives the taps k with
 * (r + pad_b - k*dil) divisible by s, reading i = q + (r + pad_b - k*dil)/s: a stride-1
 * convolution of x itself with that sub-kernel (taps in descending k, a fixed step apart,
 * reading x a fixed distance apart).  One convolution per phase (s^D of them), each into its
 * own scratch buffer, does the work of the zero-inserted input's convolution without its
 * (s^D - 1)/s^D products with zeros; the nonzero products are summed in the same order, so
 * results are the same.  An interleaving kernel then writes Y row by row (whole cache lines,
 * where phase convolutions storing every s-th element in place would each pass over all of
 * Y); phases without taps (a kernel smaller than the stride, or a dilation sharing a factor
 * with it) are the bias or zero there. */
typedef struct ct_phase {
  int64_t taps, first, step; /* taps of the phase in this dim: k = first - j*step, j < taps */
  int64_t c_first, dx;       /* x offset of tap j: q + c_first + j*dx */
  int64_t count;             /* outputs of the phase: q < count */
} ct_phase;

static ct_phase ct_phase_of(const nn_window *t, int d, int64_t r) {
  ct_phase ph = {0};
  int64_t s = t->stride[d], dil = t->dilation[d];
  for (int64_t k = t->kernel[d] - 1; k >= 0; k--) {
    int64_t num = r + t->pad_begin[d] - k * dil;
    if (((num % s) + s) % s) continue;
    if (ph.taps == 0) ph.first = k, ph.c_first = num / s;
    else if (ph.taps == 1) ph.step = ph.first - k, ph.dx = ph.step * dil / s;
    ph.taps++;
  }
  if (ph.taps < 2) ph.step = 1, ph.dx = 1;
  ph.count = t->out[d] > r ? (t->out[d] - r + s - 1) / s : 0;
  return ph;
}

#define CT_MAX_PHASES 64

/* The interleaving kernel: one tile per output row (n, oc, z, y).  args: Y, then the buffer of
 * each phase with taps (phase_arg[phase] = its argument, -1 for none), then the bias. */
typedef struct ct_inter {
  const nn_window *t;
  int64_t planes, oc;          /* N*OC, OC */
  int phase_arg[CT_MAX_PHASES]; /* by (r0*s1 + r1)*s2 + r2 */
  int any_arg;                  /* some phase buffer (read where a phase has none, then dropped) */
  int bias_arg;                 /* or -1 */
  int n_args;
} ct_inter;

/* Constant table[r] selected by runtime r (r < n). */
static LLVMValueRef sel_i64(cg_kernel *k, LLVMValueRef r, const int64_t *table, int64_t n) {
  LLVMValueRef v = cg_i64(k, table[0]);
  for (int64_t i = 1; i < n; i++)
    v = cg_select(k, LLVMBuildICmp(k->b, LLVMIntEQ, r, cg_i64(k, i), ""), cg_i64(k, table[i]), v);
  return v;
}

static kiln_code ct_interleave(kiln_emit_ctx *cx, const ct_inter *ci, const int *bufs,
                               kiln_err *e) {
  const nn_window *t = ci->t;
  int64_t s0 = t->stride[0], s1 = t->stride[1], s2 = t->stride[2];
  int64_t OW = t->out[2];
  int64_t q[3][8]; /* outputs of residue r in dim d (strides above 8 use the scalar path) */
  for (int d = 0; d < 3; d++)
    for (int64_t r = 0; r < t->stride[d] && r < 8; r++)
      q[d][r] = t->out[d] > r ? (t->out[d] - r + t->stride[d] - 1) / t->stride[d] : 0;
  cg_kernel kk;
  cg_kernel *k = &kk;
  KILN_TRY(cg_kernel_begin(cx, k, "convtranspose_interleave", ci->n_args, e));
  LLVMBuilderRef b = k->b;
  int V = cg_avx512(cx) ? 16 : 8;
  LLVMValueRef Y = cg_arg(k, 0);
  cg_loop lt, lv, ls;
  LLVMValueRef tile = cg_loop_begin(k, &lt, k->lo, k->hi, NULL, "row");
  LLVMValueRef oy = LLVMBuildSRem(b, tile, cg_i64(k, t->out[1]), "");
  LLVMValueRef rest = LLVMBuildSDiv(b, tile, cg_i64(k, t->out[1]), "");
  LLVMValueRef oz = LLVMBuildSRem(b, rest, cg_i64(k, t->out[0]), "");
  LLVMValueRef noc = LLVMBuildSDiv(b, rest, cg_i64(k, t->out[0]), "");
  LLVMValueRef r0 = LLVMBuildSRem(b, oz, cg_i64(k, s0), ""), q0 = LLVMBuildSDiv(b, oz, cg_i64(k, s0), "");
  LLVMValueRef r1 = LLVMBuildSRem(b, oy, cg_i64(k, s1), ""), q1 = LLVMBuildSDiv(b, oy, cg_i64(k, s1), "");
  LLVMValueRef fill = cg_f32(k, 0);
  if (ci->bias_arg >= 0)
    fill = cg_load(k, k->t->f32, cg_arg(k, ci->bias_arg),
                   LLVMBuildSRem(b, noc, cg_i64(k, ci->oc), ""));
  LLVMValueRef yrow = cg_mul(k, tile, cg_i64(k, OW));
  /* per W residue: the phase's buffer and row, whether it has taps */
  LLVMValueRef src[8], row[8], has[8];
  LLVMValueRef rr = cg_add(k, cg_mul(k, r0, cg_i64(k, s1)), r1); /* r0*s1 + r1 */
  for (int64_t r2 = 0; r2 < s2; r2++) {
    LLVMValueRef p = cg_arg(k, ci->any_arg), h = LLVMConstInt(k->t->i1, 0, 0);
    for (int64_t a = 0; a < s0 * s1; a++) {
      int arg = ci->phase_arg[a * s2 + r2];
      if (arg < 0) continue;
      LLVMValueRef is = LLVMBuildICmp(b, LLVMIntEQ, rr, cg_i64(k, a), "");
      p = LLVMBuildSelect(b, is, cg_arg(k, arg), p, "");
      h = LLVMBuildOr(b, h, is, "");
    }
    LLVMValueRef qq0 = sel_i64(k, r0, q[0], s0), qq1 = sel_i64(k, r1, q[1], s1);
    LLVMValueRef off = cg_mul(k, cg_add(k, cg_mul(k, cg_add(k, cg_mul(k, noc, qq0), q0), qq1), q1),
                              cg_i64(k, q[2][r2]));
    src[r2] = p;
    has[r2] = h;
    row[r2] = cg_select(k, h, off, cg_i64(k, 0));
  }
  /* full groups of s2 outputs: vectors when s2 <= 2, then scalars.  A residue without taps
   * reads (and drops) the first `full` elements of some phase buffer, which has at least that
   * many: every phase has at least OW / s2 outputs per row. */
  int64_t full = OW / s2, nvec = s2 <= 2 ? full / V : 0;
  if (nvec > 0) {
    LLVMValueRef fv = cg_splat(k, fill, (unsigned)V);
    LLVMValueRef i = cg_mul(k, cg_loop_begin(k, &lv, cg_i64(k, 0), cg_i64(k, nvec), NULL, "v"),
                            cg_i64(k, V));
    LLVMValueRef in[2];
    for (int64_t r2 = 0; r2 < s2; r2++)
      in[r2] = LLVMBuildSelect(b, has[r2], cg_vload(k, src[r2], cg_add(k, row[r2], i), V, V), fv, "");
    LLVMValueRef yi = cg_add(k, yrow, cg_mul(k, i, cg_i64(k, s2)));
    if (s2 == 1) {
      cg_vstore(k, in[0], Y, yi, V, V);
    } else {
      for (int h = 0; h < 2; h++) { /* lanes h*V/2.. of both, interleaved */
        LLVMValueRef m[32];
        for (int l = 0; l < V; l++) m[l] = cg_i32(k, h * V / 2 + l / 2 + (l % 2) * V);
        LLVMValueRef v = LLVMBuildShuffleVector(b, in[0], in[1], LLVMConstVector(m, (unsigned)V), "");
        cg_vstore(k, v, Y, cg_add(k, yi, cg_i64(k, h * V)), V, V);
      }
    }
    cg_loop_end(k, &lv);
  }
  if (full > nvec * V) {
    LLVMValueRef i = cg_loop_begin(k, &ls, cg_i64(k, nvec * V), cg_i64(k, full), NULL, "q");
    for (int64_t r2 = 0; r2 < s2; r2++) {
      LLVMValueRef v = cg_select(k, has[r2], cg_load(k, k->t->f32, src[r2], cg_add(k, row[r2], i)), fill);
      cg_store(k, v, Y, cg_add(k, yrow, cg_add(k, cg_mul(k, i, cg_i64(k, s2)), cg_i64(k, r2))));
    }
    cg_loop_end(k, &ls);
  }
  for (int64_t r2 = 0; r2 < OW % s2; r2++) { /* the last, partial group */
    /* (a residue without taps reads element 0 of some buffer, then drops it) */
    LLVMValueRef at = cg_select(k, has[r2], cg_add(k, row[r2], cg_i64(k, full)), cg_i64(k, 0));
    LLVMValueRef v = cg_select(k, has[r2], cg_load(k, k->t->f32, src[r2], at), fill);
    cg_store(k, v, Y, cg_add(k, yrow, cg_i64(k, full * s2 + r2)));
  }
  cg_loop_end(k, &lt);
  return cg_kernel_end(cx, k, ci->planes * t->out[0] * t->out[1], bufs, e);
}

static kiln_code emit_ConvTranspose(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                                    kiln_err *e) {
  const kiln_value *x = ir_in(g, n, 0), *wv = ir_in(g, n, 1), *y = ir_out(g, n, 0);
  int64_t kernel[NN_WIN_MAX];
  for (int i = 2; i < wv->shape.rank; i++) kernel[i - 2] = wv->shape.d[i];
  nn_window win;
  KILN_TRY(nn_window_transpose(n, &x->shape, x->name, kernel, &win, e));
  nn_window t = nn_window_3d(&win);
  cg_conv_geom geom = {.N = x->shape.d[0], .C = x->shape.d[1], .OC = y->shape.d[1],
                       .groups = ir_attr_int(n, "group")};
  int64_t kk = t.kernel[0] * t.kernel[1] * t.kernel[2];
  int64_t cg = geom.C / geom.groups, mg = geom.OC / geom.groups;
  const kiln_tensor *wc = ir_in_const(g, n, 1);
  cg_conv_weights w = {.buf = cg_buf_value(cx, n->in[1]),
                       .data = wc ? (const float *)wc->data : NULL,
                       .off = kk - 1, .g_stride = cg * mg * kk, .oc_stride = kk,
                       .ic_stride = mg * kk, .tap_stride = -1};
  cg_conv_epilogue epi = cg_conv_epilogue_none();
  if (opt_in(n, 2) >= 0) epi.bias_buf = cg_buf_value(cx, n->in[2]);
  int xb = cg_buf_value(cx, n->in[0]), yb = cg_buf_value(cx, n->out[0]);
  if (t.stride[0] == 1 && t.stride[1] == 1 && t.stride[2] == 1) {
    for (int d = 0; d < 3; d++) {
      int64_t ext = (t.kernel[d] - 1) * t.dilation[d] + 1;
      geom.in[d] = t.in[d];
      geom.xform[d] = CG_IN_PLAIN;
      geom.xfactor[d] = 1;
      geom.k[d] = t.kernel[d];
      geom.stride[d] = 1;
      geom.dil[d] = t.dilation[d];
      geom.pad_b[d] = ext - 1 - t.pad_begin[d];
      geom.pad_e[d] = t.out[d] - 1 + ext - t.in[d] - geom.pad_b[d];
      geom.out[d] = t.out[d];
    }
    return cg_emit_conv(cx, "convtranspose", &geom, &w, &epi, xb, yb, e);
  }
  /* output phases, each into its own buffer, then interleaved into Y */
  int64_t out_numel = geom.N * geom.OC * t.out[0] * t.out[1] * t.out[2];
  if (out_numel == 0) return KILN_OK;
  int64_t n_ph = t.stride[0] * t.stride[1] * t.stride[2];
  if (n_ph > CT_MAX_PHASES || t.stride[2] > 8 || t.stride[0] > 8 || t.stride[1] > 8)
    return kiln_errf(e, KILN_ERR_LIMIT, "ConvTranspose: strides above 8 or %d phases in all are "
                     "not compiled", CT_MAX_PHASES);
  ct_inter ci = {.t = &t, .planes = geom.N * geom.OC, .oc = geom.OC, .any_arg = -1,
                 .bias_arg = -1};
  int bufs[CT_MAX_PHASES + 2] = {yb};
  int n_args = 1;
  const int64_t kst[3] = {t.kernel[1] * t.kernel[2], t.kernel[2], 1};
  for (int64_t r0 = 0; r0 < t.stride[0]; r0++)
    for (int64_t r1 = 0; r1 < t.stride[1]; r1++)
      for (int64_t r2 = 0; r2 < t.stride[2]; r2++) {
        int64_t r[3] = {r0, r1, r2}, idx = (r0 * t.stride[1] + r1) * t.stride[2] + r2;
        ct_phase ph[3];
        bool skip = false;
        for (int d = 0; d < 3; d++) {
          ph[d] = ct_phase_of(&t, d, r[d]);
          skip |= ph[d].taps == 0 || ph[d].count == 0;
        }
        ci.phase_arg[idx] = -1;
        if (skip) continue;
        cg_conv_geom pg = geom;
        cg_conv_weights pw = w;
        pw.off = 0;
        for (int d = 0; d < 3; d++) {
          int64_t ext = (ph[d].taps - 1) * ph[d].dx + 1;
          pg.in[d] = t.in[d];
          pg.xform[d] = CG_IN_PLAIN;
          pg.xfactor[d] = 1;
          pg.k[d] = ph[d].taps;
          pg.stride[d] = 1;
          pg.dil[d] = ph[d].dx;
          pg.pad_b[d] = -ph[d].c_first;
          pg.pad_e[d] = ph[d].count - 1 + ext - t.in[d] - pg.pad_b[d];
          pg.out[d] = ph[d].count;
          pw.off += ph[d].first * kst[d];
          pw.tap_strides[d] = -ph[d].step * kst[d];
        }
        int pb = cg_buf_scratch(cx, sizeof(float) * (size_t)(geom.N * geom.OC * ph[0].count *
                                                             ph[1].count * ph[2].count), e);
        if (pb < 0) return e->code ? e->code : KILN_ERR_NOMEM;
        KILN_TRY(cg_emit_conv(cx, "convtranspose_phase", &pg, &pw, &epi, xb, pb, e));
        ci.phase_arg[idx] = n_args;
        if (ci.any_arg < 0) ci.any_arg = n_args;
        bufs[n_args++] = pb;
      }
  if (ci.any_arg < 0) ci.any_arg = 0; /* no phase has taps: Y is the bias (Y read, dropped) */
  if (epi.bias_buf >= 0) ci.bias_arg = n_args, bufs[n_args++] = epi.bias_buf;
  ci.n_args = n_args;
  return ct_interleave(cx, &ci, bufs, e);
}

void cg_register_conv(kiln_emit_fn *table) {
  table[KILN_OP_Conv] = emit_Conv;
  table[KILN_OP_ConvTranspose] = emit_ConvTranspose;
}
