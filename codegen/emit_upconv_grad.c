/* emit_upconv_grad.c — the run-time weight fold of the upsample convolutions and the emitter
 * of kiln.UpsampleConvGradInput (ir/ops/grad_upconv.h, docs/ops-kiln.md).
 *
 * The op is dX = ResizeGrad(ConvTranspose(dY, W)) for nearest upsampling by integer s whose
 * index map is floor(u / s), then a stride-1 convolution.  Along one dim (kernel K, dilation
 * dil, pad_b):
 *   dU[u]  = sum over k of W[k] dY[u + pb - k*dil]           (the ConvTranspose)
 *   dX[i]  = sum over r < s of dU[s*i + r]                   (the ResizeGrad)
 *          = sum over r, k of W[k] dY[s*i + r - k*dil + pb]
 * Put t = (K-1-k)*dil + r in [0, (K-1)*dil + s): then dX[i] = sum_t Wf[t] dY[s*i + t - P]
 * with P = (K-1)*dil - pb and Wf[t] the sum of the W[k] over the pairs (k, r) giving t — a
 * convolution over dY with stride s, (K-1)*dil + s taps and dilation 1, reading zeros outside
 * dY exactly where the ConvTranspose had no output.  For s = 2 and a 3-tap kernel with pad 1:
 * 4 taps, Wf = [W2, W1+W2, W0+W1, W0], P = 1: 16 products per 2-D element of dX against the
 * ConvTranspose's 36 (4 upsampled elements x 9), and no ResizeGrad pass.  A dim with s = 1
 * keeps its K taps flipped, with their dilation.  In channels the convolution runs from dY's
 * M channels to dX's C (as ConvTranspose's emitter, codegen/emit_conv.c), reading the folded
 * weights, laid out like W (M, C/group, taps), through conv_gen's weight strides.  The fold
 * runs at run time (the weights are a training input) into scratch, one small kernel. */
#include <string.h>

#include "codegen/conv_gen.h"
#include "codegen/emit_upconv.h"
#include "ir/ops/grad_upconv.h"

typedef LLVMValueRef V;

#define FOLD_ROWS_PER_TILE 64
#define FOLD_MAX_UNROLLED 2048

kiln_code cg_emit_weight_fold(kiln_emit_ctx *cx, const char *label, const cg_wfold *f,
                              int src_buf, int dst_buf, kiln_err *e) {
  if (f->rows == 0 || f->dst_row == 0) return KILN_OK;
  int64_t n_pairs = f->start[f->dst_row];
  bool unrolled = n_pairs + f->dst_row <= FOLD_MAX_UNROLLED;
  int tab_start = -1, tab_src = -1;
  if (!unrolled) {
    tab_start = cg_buf_const(cx, f->start, sizeof(int64_t) * (size_t)(f->dst_row + 1), e);
    if (tab_start < 0) return e->code;
    tab_src = cg_buf_const(cx, f->src, sizeof(int64_t) * (size_t)(n_pairs ? n_pairs : 1), e);
    if (tab_src < 0) return e->code;
  }
  cg_kernel k;
  KILN_TRY(cg_kernel_begin(cx, &k, label, unrolled ? 2 : 4, e));
  LLVMBuilderRef b = k.b;
  const cg_types *ty = k.t;
  V src = cg_arg(&k, 0), dst = cg_arg(&k, 1);
  V rlo = cg_mul(&k, k.lo, cg_i64(&k, FOLD_ROWS_PER_TILE));
  V rhi = cg_min(&k, cg_mul(&k, k.hi, cg_i64(&k, FOLD_ROWS_PER_TILE)), cg_i64(&k, f->rows));
  cg_loop lr;
  V r = cg_loop_begin(&k, &lr, rlo, rhi, NULL, "row");
  V sbase = cg_mul(&k, r, cg_i64(&k, f->src_row)), dbase = cg_mul(&k, r, cg_i64(&k, f->dst_row));
  if (unrolled) {
    for (int64_t t = 0; t < f->dst_row; t++) {
      V acc = NULL;
      for (int64_t j = f->start[t]; j < f->start[t + 1]; j++) {
        V x = cg_load(&k, ty->f32, src, cg_add(&k, sbase, cg_i64(&k, f->src[j])));
        acc = acc ? LLVMBuildFAdd(b, acc, x, "") : x;
      }
      cg_store(&k, acc ? acc : cg_f32(&k, 0), dst, cg_add(&k, dbase, cg_i64(&k, t)));
    }
  } else {
    V st = cg_arg(&k, 2), sr = cg_arg(&k, 3);
    V slot = cg_entry_alloca(&k, ty->f32);
    cg_loop lt, lj;
    V t = cg_loop_begin(&k, &lt, cg_i64(&k, 0), cg_i64(&k, f->dst_row), NULL, "t");
    LLVMBuildStore(b, cg_f32(&k, 0), slot);
    V j0 = cg_load(&k, ty->i64, st, t), j1 = cg_load(&k, ty->i64, st, cg_add(&k, t, cg_i64(&k, 1)));
    V j = cg_loop_begin(&k, &lj, j0, j1, NULL, "j");
    V x = cg_load(&k, ty->f32, src, cg_add(&k, sbase, cg_load(&k, ty->i64, sr, j)));
    LLVMBuildStore(b, LLVMBuildFAdd(b, LLVMBuildLoad2(b, ty->f32, slot, ""), x, ""), slot);
    cg_loop_end(&k, &lj);
    cg_store(&k, LLVMBuildLoad2(b, ty->f32, slot, ""), dst, cg_add(&k, dbase, t));
    cg_loop_end(&k, &lt);
  }
  cg_loop_end(&k, &lr);
  int64_t tiles = (f->rows + FOLD_ROWS_PER_TILE - 1) / FOLD_ROWS_PER_TILE;
  return cg_kernel_end(cx, &k, tiles, (int[]){src_buf, dst_buf, tab_start, tab_src}, e);
}

/* Per dim: the folded taps' sources.  For tap t of the folded kernel, the kernel indices k
 * (ascending) whose (k, r) pairs give t. */
typedef struct fold_dim {
  int64_t kf, dil, pad_b, pad_e;
  int64_t *start, *ks; /* kf + 1 entries; start[kf] entries */
} fold_dim;

static kiln_code fold_dim_make(int64_t K, int64_t dil, int64_t pb, int64_t s, int64_t O,
                               int64_t L, fold_dim *fd, kiln_err *e) {
  memset(fd, 0, sizeof *fd);
  fd->kf = s == 1 ? K : (K - 1) * dil + s;
  fd->dil = s == 1 ? dil : 1;
  fd->pad_b = (K - 1) * dil - pb;
  /* the last tap of the last output reads dY[s*(L-1) + (kf-1)*dil - P] */
  fd->pad_e = s * (L - 1) + (fd->kf - 1) * fd->dil - fd->pad_b - (O - 1);
  fd->start = kiln_calloc((size_t)fd->kf + 1, sizeof(int64_t));
  fd->ks = kiln_malloc(sizeof(int64_t) * (size_t)(K * s));
  if (!fd->start || !fd->ks) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory (fold tables)");
  int64_t n = 0;
  for (int64_t t = 0; t < fd->kf; t++) {
    fd->start[t] = n;
    for (int64_t k = 0; k < K; k++) {
      if (s == 1) {
        if (t == K - 1 - k) fd->ks[n++] = k;
        continue;
      }
      int64_t r = t - (K - 1 - k) * dil;
      if (r >= 0 && r < s) fd->ks[n++] = k;
    }
  }
  fd->start[fd->kf] = n;
  return KILN_OK;
}

/* The narrow form, as the unfused ops: the ConvTranspose as a stride-1 convolution with the
 * flipped kernel (codegen/emit_conv.c) into scratch dU, then one kernel summing each dX
 * element's s0*s1*s2 upsampled positions.  Used when dX's rows are narrower than a vector:
 * the strided convolution would then leave most lanes idle (dY's rows are s times wider). */
static kiln_code emit_narrow(kiln_emit_ctx *cx, const kiln_node *n, const nn_window *t,
                             const int64_t *s, int64_t N, int64_t M, int64_t C, int64_t G,
                             kiln_err *e) {
  int64_t kk = t->kernel[0] * t->kernel[1] * t->kernel[2], mg = M / G, cg = C / G;
  int64_t uvol = t->in[0] * t->in[1] * t->in[2];
  int64_t L[3] = {t->in[0] / s[0], t->in[1] / s[1], t->in[2] / s[2]};
  if (N * C * L[0] * L[1] * L[2] == 0) return KILN_OK;
  int du = cg_buf_scratch(cx, sizeof(float) * (size_t)(N * C * uvol), e);
  if (du < 0) return e->code;
  cg_conv_geom geom = {.N = N, .C = M, .OC = C, .groups = G};
  for (int d = 0; d < 3; d++) {
    int64_t ext = (t->kernel[d] - 1) * t->dilation[d] + 1;
    geom.in[d] = t->out[d];
    geom.xform[d] = CG_IN_PLAIN;
    geom.xfactor[d] = 1;
    geom.k[d] = t->kernel[d];
    geom.stride[d] = 1;
    geom.dil[d] = t->dilation[d];
    geom.pad_b[d] = ext - 1 - t->pad_begin[d];
    geom.pad_e[d] = t->in[d] - 1 + ext - t->out[d] - geom.pad_b[d];
    geom.out[d] = t->in[d];
  }
  cg_conv_weights w = {.buf = cg_buf_value(cx, n->in[1]), .data = NULL, .off = kk - 1,
                       .g_stride = mg * cg * kk, .oc_stride = kk, .ic_stride = cg * kk,
                       .tap_stride = -1};
  cg_conv_epilogue epi = cg_conv_epilogue_none();
  KILN_TRY(cg_emit_conv(cx, "upsample_conv_grad_narrow", &geom, &w, &epi,
                        cg_buf_value(cx, n->in[0]), du, e));
  /* dX[p, i0, i1, i2] = sum over r of dU[p, s0*i0 + r0, s1*i1 + r1, s2*i2 + r2]; one tile
   * per (plane, i0, i1) */
  cg_kernel k;
  KILN_TRY(cg_kernel_begin(cx, &k, "upsample_conv_grad_sum", 2, e));
  LLVMBuilderRef b = k.b;
  const cg_types *ty = k.t;
  V src = cg_arg(&k, 0), dst = cg_arg(&k, 1);
  V slot = cg_entry_alloca(&k, ty->f32);
  cg_loop lt, li, lr[3];
  V row = cg_loop_begin(&k, &lt, k.lo, k.hi, NULL, "row");
  V i1 = LLVMBuildSRem(b, row, cg_i64(&k, L[1]), "");
  V rest = LLVMBuildSDiv(b, row, cg_i64(&k, L[1]), "");
  V i0 = LLVMBuildSRem(b, rest, cg_i64(&k, L[0]), "");
  V plane = LLVMBuildSDiv(b, rest, cg_i64(&k, L[0]), "");
  V i2 = cg_loop_begin(&k, &li, cg_i64(&k, 0), cg_i64(&k, L[2]), NULL, "i2");
  LLVMBuildStore(b, cg_f32(&k, 0), slot);
  V r0 = cg_loop_begin(&k, &lr[0], cg_i64(&k, 0), cg_i64(&k, s[0]), NULL, "r0");
  V u0 = cg_add(&k, cg_mul(&k, i0, cg_i64(&k, s[0])), r0);
  V r1 = cg_loop_begin(&k, &lr[1], cg_i64(&k, 0), cg_i64(&k, s[1]), NULL, "r1");
  V u1 = cg_add(&k, cg_mul(&k, i1, cg_i64(&k, s[1])), r1);
  V r2 = cg_loop_begin(&k, &lr[2], cg_i64(&k, 0), cg_i64(&k, s[2]), NULL, "r2");
  V u2 = cg_add(&k, cg_mul(&k, i2, cg_i64(&k, s[2])), r2);
  V at = cg_add(&k, cg_mul(&k, cg_add(&k, cg_mul(&k, cg_add(&k, cg_mul(&k, plane,
                cg_i64(&k, t->in[0])), u0), cg_i64(&k, t->in[1])), u1), cg_i64(&k, t->in[2])), u2);
  V x = cg_load(&k, ty->f32, src, at);
  LLVMBuildStore(b, LLVMBuildFAdd(b, LLVMBuildLoad2(b, ty->f32, slot, ""), x, ""), slot);
  for (int d = 2; d >= 0; d--) cg_loop_end(&k, &lr[d]);
  V o = cg_add(&k, cg_mul(&k, row, cg_i64(&k, L[2])), i2);
  cg_store(&k, LLVMBuildLoad2(b, ty->f32, slot, ""), dst, o);
  cg_loop_end(&k, &li);
  cg_loop_end(&k, &lt);
  return cg_kernel_end(cx, &k, N * C * L[0] * L[1], (int[]){du, cg_buf_value(cx, n->out[0])}, e);
}

static kiln_code emit_UpsampleConvGradInput(kiln_emit_ctx *cx, const kiln_graph *g,
                                            const kiln_node *n, kiln_err *e) {
  const kiln_value *dy = ir_in(g, n, 0), *wv = ir_in(g, n, 1), *dx = ir_out(g, n, 0);
  kiln_upconv_grad p;
  kiln_shape dxs;
  KILN_TRY(kiln_upconv_grad_get(n, &dy->shape, dy->name, &wv->shape, wv->name, &p, &dxs, e));
  nn_window t = nn_window_3d(&p.win);
  int lead = 3 - p.nsp;
  int64_t M = dy->shape.d[1], C = dx->shape.d[1], G = p.group, mg = M / G, cg = C / G;
  int64_t N = dy->shape.d[0];
  int64_t s3[3];
  for (int d = 0; d < 3; d++) s3[d] = d < lead ? 1 : p.scale[d - lead];
  if (s3[2] > 1 && t.in[2] / s3[2] < (cg_avx512(cx) ? 16 : 8))
    return emit_narrow(cx, n, &t, s3, N, M, C, G, e);
  cg_conv_geom geom = {.N = N, .C = M, .OC = C, .groups = G};
  fold_dim fd[3];
  memset(fd, 0, sizeof fd);
  kiln_code rc = KILN_OK;
  for (int d = 0; d < 3 && !rc; d++) {
    int64_t s = d < lead ? 1 : p.scale[d - lead], L = t.in[d] / s;
    rc = fold_dim_make(t.kernel[d], t.dilation[d], t.pad_begin[d], s, t.out[d], L, &fd[d], e);
    geom.in[d] = t.out[d];
    geom.xform[d] = CG_IN_PLAIN;
    geom.xfactor[d] = 1;
    geom.k[d] = fd[d].kf;
    geom.stride[d] = s;
    geom.dil[d] = fd[d].dil;
    geom.pad_b[d] = fd[d].pad_b;
    geom.pad_e[d] = fd[d].pad_e;
    geom.out[d] = L;
  }
  /* the 3-D fold: the sources of folded tap (t0, t1, t2) are the products of the dims'
   * lists, in ascending (k0, k1, k2) */
  int64_t kvol = t.kernel[0] * t.kernel[1] * t.kernel[2];
  int64_t fvol = fd[0].kf * fd[1].kf * fd[2].kf;
  int64_t *start = NULL, *src = NULL;
  if (!rc) {
    int64_t total = 0;
    for (int64_t a = 0; a < fd[0].kf; a++)
      for (int64_t b = 0; b < fd[1].kf; b++)
        for (int64_t c = 0; c < fd[2].kf; c++)
          total += (fd[0].start[a + 1] - fd[0].start[a]) * (fd[1].start[b + 1] - fd[1].start[b]) *
                   (fd[2].start[c + 1] - fd[2].start[c]);
    start = kiln_malloc(sizeof(int64_t) * (size_t)(fvol + 1));
    src = kiln_malloc(sizeof(int64_t) * (size_t)(total ? total : 1));
    if (!start || !src) rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory (fold tables)");
  }
  if (!rc) {
    int64_t j = 0, tf = 0;
    for (int64_t a = 0; a < fd[0].kf; a++)
      for (int64_t b = 0; b < fd[1].kf; b++)
        for (int64_t c = 0; c < fd[2].kf; c++) {
          start[tf++] = j;
          for (int64_t i0 = fd[0].start[a]; i0 < fd[0].start[a + 1]; i0++)
            for (int64_t i1 = fd[1].start[b]; i1 < fd[1].start[b + 1]; i1++)
              for (int64_t i2 = fd[2].start[c]; i2 < fd[2].start[c + 1]; i2++)
                src[j++] = (fd[0].ks[i0] * t.kernel[1] + fd[1].ks[i1]) * t.kernel[2] +
                           fd[2].ks[i2];
        }
    start[fvol] = j;
  }
  int wf_buf = -1;
  if (!rc) {
    wf_buf = cg_buf_scratch(cx, sizeof(float) * (size_t)(M * cg * fvol > 0 ? M * cg * fvol : 1), e);
    if (wf_buf < 0) rc = e->code;
  }
  if (!rc) {
    cg_wfold f = {.rows = M * cg, .src_row = kvol, .dst_row = fvol, .start = start, .src = src};
    rc = cg_emit_weight_fold(cx, "upsample_conv_grad_wfold", &f, cg_buf_value(cx, n->in[1]),
                             wf_buf, e);
  }
  if (!rc) {
    cg_conv_weights w = {.buf = wf_buf, .data = NULL, .off = 0, .g_stride = mg * cg * fvol,
                         .oc_stride = fvol, .ic_stride = cg * fvol, .tap_stride = 1};
    cg_conv_epilogue epi = cg_conv_epilogue_none();
    rc = cg_emit_conv(cx, "upsample_conv_grad", &geom, &w, &epi, cg_buf_value(cx, n->in[0]),
                      cg_buf_value(cx, n->out[0]), e);
  }
  for (int d = 0; d < 3; d++) {
    kiln_free(fd[d].start);
    kiln_free(fd[d].ks);
  }
  kiln_free(start);
  kiln_free(src);
  return rc;
}

void cg_register_upconv_grad(kiln_emit_fn *table) {
  table[KILN_OP_UpsampleConvGradInput] = emit_UpsampleConvGradInput;
}
