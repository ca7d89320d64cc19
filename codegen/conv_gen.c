/* conv_gen.c — the convolution generator (see conv_gen.h): geometry checks, the blocking
 * plan, the input-preparation copy, weight repacking, and the register-blocked direct
 * convolution kernel with its epilogue. */
#include "codegen/conv_gen.h"

#include <assert.h>
#include <string.h>

#include "codegen/emit_copy.h"
#include "codegen/gemm_gen.h"
#include "codegen/tune.h"
#include "ir/ops/nn_window.h"

cg_conv_epilogue cg_conv_epilogue_none(void) {
  return (cg_conv_epilogue){.bias_buf = -1, .scale_buf = -1, .shift_buf = -1, .residual_buf = -1};
}

LLVMValueRef cg_conv_activate(cg_kernel *k, const cg_conv_epilogue *epi, LLVMValueRef v) {
  LLVMBuilderRef b = k->b;
  LLVMTypeRef vty = LLVMTypeOf(v);
  unsigned V = LLVMGetVectorSize(vty);
  LLVMValueRef zero = LLVMConstNull(vty);
  switch (epi->act) {
  case CG_ACT_RELU:
    return LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOLT, v, zero, ""), zero, v, "");
  case CG_ACT_LEAKY_RELU: {
    LLVMValueRef a = cg_splat(k, cg_f32(k, epi->act_a), V);
    return LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOLT, v, zero, ""),
                           LLVMBuildFMul(b, v, a, ""), v, "");
  }
  case CG_ACT_CLIP: {
    LLVMValueRef lo = cg_splat(k, cg_f32(k, epi->act_a), V);
    LLVMValueRef hi = cg_splat(k, cg_f32(k, epi->act_b), V);
    v = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOLT, v, lo, ""), lo, v, "");
    return LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOGT, v, hi, ""), hi, v, "");
  }
  case CG_ACT_SIGMOID: {
    LLVMValueRef one = cg_splat(k, cg_f32(k, 1.0), V);
    LLVMValueRef ex = cg_intrinsic(k, "llvm.exp", &vty, 1,
                                   (LLVMValueRef[]){LLVMBuildFNeg(b, v, "")}, 1);
    return LLVMBuildFDiv(b, one, LLVMBuildFAdd(b, one, ex, ""), "");
  }
  default: return v;
  }
}

kiln_code cg_conv_geom_from_node(const kiln_graph *g, const kiln_node *n, cg_conv_geom *geom,
                                 kiln_err *e) {
  const kiln_value *x = ir_in(g, n, 0), *w = ir_in(g, n, 1), *y = ir_out(g, n, 0);
  int64_t kernel[NN_WIN_MAX];
  for (int i = 2; i < w->shape.rank; i++) kernel[i - 2] = w->shape.d[i];
  nn_window win;
  KILN_TRY(nn_window_forward(n, &x->shape, x->name, kernel, false, &win, e));
  nn_window t = nn_window_3d(&win);
  memset(geom, 0, sizeof *geom);
  geom->N = x->shape.d[0];
  geom->C = x->shape.d[1];
  geom->OC = y->shape.d[1];
  geom->groups = ir_attr_int(n, "group");
  for (int d = 0; d < 3; d++) {
    geom->in[d] = t.in[d];
    geom->xform[d] = CG_IN_PLAIN;
    geom->xfactor[d] = 1;
    geom->k[d] = t.kernel[d];
    geom->stride[d] = t.stride[d];
    geom->dil[d] = t.dilation[d];
    geom->pad_b[d] = t.pad_begin[d];
    geom->pad_e[d] = t.pad_end[d];
    geom->out[d] = t.out[d];
  }
  return KILN_OK;
}

cg_conv_weights cg_conv_weights_oihw(const cg_conv_geom *geom, int buf, const float *data) {
  int64_t kk = geom->k[0] * geom->k[1] * geom->k[2];
  int64_t cg = geom->C / geom->groups, ocg = geom->OC / geom->groups;
  return (cg_conv_weights){.buf = buf, .data = data, .off = 0, .g_stride = ocg * cg * kk,
                           .oc_stride = cg * kk, .ic_stride = kk, .tap_stride = 1};
}

/* ---- the plan ---- */


typedef struct conv_plan {
  cg_conv_geom g;       /* possibly flattened (1x1 stride-1 unpadded: one long row) */
  int64_t cg, ocg, kk;  /* input / output channels per group, taps */
  /* the X the main kernel reads: X itself, or the prepared copy */
  bool prep;
  int64_t rows[2];      /* its D and H sizes */
  int64_t kst[2];       /* output row step in D and H (1 where the copy subsampled) */
  int64_t S;            /* W phases (the W stride split apart) */
  int64_t wq;           /* columns per phase */
  int64_t rowlen;       /* S * wq */
  int64_t plane;        /* rows[0] * rows[1] * rowlen */
  int64_t sub[3];       /* the copy's subsampling per dim */
  bool mask_x;          /* partial vectors of X must be masked (no slack columns) */
  int64_t crop[3];      /* X read in place: the offset of the window's origin (-pad_b) */
  int wph;              /* column phases computed together (1: none) */
  /* blocking */
  int V;                /* vector width */
  int ocb, nv, rb;      /* register block: channels x rows x vectors */
  int64_t rg;           /* rows per tile (multiple of rb) */
  bool rows_inner;      /* tile order: row groups fastest (else channel blocks) */
  int64_t n_ocb, ocb_tail, n_rg, rb_tail;
  int64_t n_owfull;     /* full column blocks per row */
  int nv_tail, lanes_tail; /* the column tail block: vectors, lanes of its last vector */
  /* where outputs are stored (placement; identity when the geometry has none) */
  bool placed;
  int64_t ys[3], os[3], oo[3];
  /* weights as the kernel reads them */
  bool packed;
  bool pack_rt;          /* packed by a kernel at run time (weights not constant) */
  int64_t w_o, w_ic;     /* strides (packed: 1, kk*wph*ob; ob = the block's channels) */
  int64_t w_ph;          /* stride between the column phases' weights (packed: ob) */
  int64_t w_ts[3];        /* stride of one step of kd, kh, kw (packed: kh*kw*ob, kw*ob, ob) */
} conv_plan;

#define MAX_ACC 32
#define KW_UNROLL 16 /* kernel columns unrolled up to this many; a loop beyond */

static int64_t div_up(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* The weight stride of one step along kernel dim d (k: the kernel's sizes). */
static int64_t w_dim_stride(const cg_conv_weights *w, const int64_t *k, int d) {
  if (w->tap_strides[0] || w->tap_strides[1] || w->tap_strides[2]) return w->tap_strides[d];
  int64_t below = 1;
  for (int q = d + 1; q < 3; q++) below *= k[q];
  return w->tap_stride * below;
}

/* Size of the transformed input along dim d. */
static int64_t eff_size(const cg_conv_geom *g, int d) {
  switch (g->xform[d]) {
  case CG_IN_NEAREST: return g->in[d] * g->xfactor[d];
  case CG_IN_ZERO_INSERT: return g->in[d] ? (g->in[d] - 1) * g->xfactor[d] + 1 : 0;
  default: return g->in[d];
  }
}

/* X index of transformed coordinate q along dim d, or -1 for a zero. */
static int64_t src_index(const cg_conv_geom *g, int d, int64_t q) {
  if (q < 0 || q >= eff_size(g, d)) return -1;
  switch (g->xform[d]) {
  case CG_IN_NEAREST: return q / g->xfactor[d];
  case CG_IN_ZERO_INSERT: return q % g->xfactor[d] ? -1 : q / g->xfactor[d];
  default: return q;
  }
}

static kiln_code check_geom(const cg_conv_geom *g, kiln_err *e) {
  if (g->N < 0 || g->C < 0 || g->OC < 0 || g->groups < 1 || g->C % g->groups ||
      g->OC % g->groups)
    return kiln_errf(e, KILN_ERR_INVALID, "convolution: bad channel counts (C %lld, OC %lld, "
                     "groups %lld)", (long long)g->C, (long long)g->OC, (long long)g->groups);
  for (int d = 0; d < 3; d++) {
    if (g->in[d] < 0 || g->k[d] < 1 || g->stride[d] < 1 || g->dil[d] < 1 || g->xfactor[d] < 1 ||
        g->out[d] < 0)
      return kiln_errf(e, KILN_ERR_INVALID, "convolution: bad geometry in spatial dim %d", d);
    int64_t ext = (g->k[d] - 1) * g->dil[d] + 1;
    /* every window must lie inside the padded input */
    if (g->out[d] > 0 &&
        (g->out[d] - 1) * g->stride[d] + ext > eff_size(g, d) + g->pad_b[d] + g->pad_e[d])
      return kiln_errf(e, KILN_ERR_INVALID,
                       "convolution: %lld outputs do not fit spatial dim %d", (long long)g->out[d],
                       d);
  }
  bool placed = g->ostride[0] || g->ostride[1] || g->ostride[2];
  if (g->wph > 1) {
    bool ok = g->wph <= CG_MAX_WPH && g->ostride[2] == g->wph && g->ooff[2] == 0 &&
              g->k[2] <= KW_UNROLL && g->ydims[2] <= g->out[2] * g->wph;
    for (int64_t ph = 0; ok && ph < g->wph; ph++)
      ok = 0 <= g->wph_lo[ph] && g->wph_lo[ph] < g->wph_hi[ph] && g->wph_hi[ph] <= g->k[2];
    if (!ok)
      return kiln_errf(e, KILN_ERR_INVALID, "convolution: bad column phases (%lld)",
                       (long long)g->wph);
  }
  for (int d = 0; d < 3 && placed; d++)
    if (g->ostride[d] < 1 || g->ooff[d] < 0 ||
        (g->out[d] > 0 && (g->out[d] - 1) * g->ostride[d] + g->ooff[d] >= g->ydims[d]))
      return kiln_errf(e, KILN_ERR_INVALID, "convolution: output placement outside Y in dim %d",
                       d);
  return KILN_OK;
}

/* The machine the cost model describes. */
typedef struct cost_params {
  int regs;        /* vector registers */
  double w_load;   /* cycles per weight broadcast */
  double x_load;   /* cycles per input vector load */
  int max_rb;      /* rows per block at most (taller blocks measured slower than modelled) */
} cost_params;

/* Estimated cycles of one tap of one input channel for a register block of ob channels x rb
 * rows x nv vectors: the larger of one FMA latency (every accumulator takes one FMA per tap),
 * the FMAs at two per cycle, and the loads (weight broadcasts and input vectors; when the
 * kernel-row loop is unrolled, rows shared by neighbouring output rows are loaded once); plus
 * a share of the loads, a spill penalty when accumulators and live input vectors exceed the
 * registers, and loop overhead.  Calibrated on Zen 3 (AVX2) and Sapphire Rapids (AVX-512). */
static double block_cost(const conv_plan *p, const cost_params *cp, int ob, int rb, int nv) {
  double fma = (double)ob * rb * nv * p->wph; /* column phases share the input vectors */
  int64_t kh = p->g.k[1];
  bool shared = p->kst[1] == 1 && kh <= 3 && rb > 1;
  double xrows = shared ? (double)(rb + kh - 1) / (double)kh : rb;
  double w = (double)ob * p->wph, x = nv * xrows;
  double c = fma / 2;
  if (c < 4) c = 4;
  if (w * cp->w_load + x * cp->x_load > c) c = w * cp->w_load + x * cp->x_load;
  double live = fma + nv * (shared ? rb + kh - 1 : rb) + 1;
  double spill = live > cp->regs ? live - cp->regs : 0;
  return c + 0.25 * (w + x) + spill + 0.5;
}

/* The modelled time of the whole convolution with block ob x rb x nv: full and tail blocks of
 * channels, rows and columns each cost a full tap. */
static double plan_cost(const conv_plan *p, const cost_params *cp, int ob, int rb, int nv) {
  int64_t ow = p->g.out[2], oh = p->g.out[1], ocg = p->ocg > 0 ? p->ocg : 1;
  int64_t cn[2] = {ocg / ob, ocg % ob ? 1 : 0}, rn[2] = {oh / rb, oh % rb ? 1 : 0};
  int cs[2] = {ob, (int)(ocg % ob)}, rs[2] = {rb, (int)(oh % rb)};
  int64_t vfull = ow / ((int64_t)nv * p->V), rem = ow - vfull * nv * p->V;
  int64_t vn[2] = {vfull, rem ? 1 : 0};
  int vs[2] = {nv, (int)div_up(rem, p->V)};
  double cost = 0;
  for (int a = 0; a < 2; a++)
    for (int b = 0; b < 2; b++)
      for (int c = 0; c < 2; c++)
        if (cn[a] && rn[b] && vn[c])
          cost += (double)(cn[a] * rn[b] * vn[c]) * block_cost(p, cp, cs[a], rs[b], vs[c]);
  return cost;
}
static double tune_cost(const void *p, const void *cp, int ob, int rb, int nv) {
  return plan_cost(p, cp, ob, rb, nv);
}

/* Picks the register block (ocb, rb, nv) minimizing the modelled time. */
static void choose_block(conv_plan *p, const cost_params *cp) {
  int64_t ow = p->g.out[2], oh = p->g.out[1], ocg = p->ocg > 0 ? p->ocg : 1;
  int64_t nvec = div_up(ow, p->V);
  int acc = (cp->regs - 3) / p->wph;
  double best = -1;
  for (int ob = 1; ob <= MAX_ACC && ob <= ocg; ob++)
    for (int rb = 1; rb <= cp->max_rb && rb <= (oh > 0 ? oh : 1); rb++)
      for (int nv = 1; nv <= 8 && nv <= (nvec > 0 ? nvec : 1); nv++) {
        if (ob * rb * nv > acc) continue;
        double cost = plan_cost(p, cp, ob, rb, nv);
        /* ties go to more accumulators (fewer blocks, less overhead the model leaves out) */
        int n_acc = ob * rb * nv, cur = p->ocb * p->rb * p->nv;
        if (best < 0 || cost < best * 0.999 || (cost < best * 1.001 && n_acc > cur)) {
          best = cost;
          p->ocb = ob;
          p->rb = rb;
          p->nv = nv;
        }
      }
}

static void make_plan(kiln_emit_ctx *cx, const cg_conv_geom *geom, const cg_conv_weights *w,
                      conv_plan *p) {
  memset(p, 0, sizeof *p);
  p->g = *geom;
  cg_conv_geom *g = &p->g;
  bool plain = true, unpadded = true, cropped = true, unit = true, point = true;
  for (int d = 0; d < 3; d++) {
    plain &= g->xform[d] == CG_IN_PLAIN || g->xfactor[d] == 1;
    unpadded &= g->pad_b[d] == 0 && g->pad_e[d] == 0;
    cropped &= g->pad_b[d] <= 0 && g->pad_e[d] <= 0;
    unit &= g->stride[d] == 1;
    point &= g->k[d] == 1;
  }
  p->placed = g->ostride[0] || g->ostride[1] || g->ostride[2];
  for (int d = 0; d < 3; d++) {
    p->ys[d] = p->placed ? g->ydims[d] : g->out[d];
    p->os[d] = p->placed ? g->ostride[d] : 1;
    p->oo[d] = p->placed ? g->ooff[d] : 0;
  }
  if (plain && unpadded && unit && point && !p->placed) { /* 1x1: the plane is one row */
    int64_t sz = g->in[0] * g->in[1] * g->in[2];
    for (int d = 0; d < 2; d++) g->in[d] = g->out[d] = 1;
    g->in[2] = g->out[2] = sz;
  }
  p->cg = g->C / g->groups;
  p->ocg = g->OC / g->groups;
  p->kk = g->k[0] * g->k[1] * g->k[2];
  bool avx512 = cg_avx512(cx);
  p->V = avx512 ? 16 : 8;
  p->wph = g->wph > 1 ? (int)g->wph : 1;
  /* no copy where X is read as it is, or cropped (an offset into it) */
  p->prep = !(plain && cropped && g->stride[2] == 1) && p->cg > 0;
  if (p->prep) {
    for (int d = 0; d < 2; d++) {
      p->sub[d] = g->k[d] == 1 ? g->stride[d] : 1;
      p->kst[d] = g->k[d] == 1 ? 1 : g->stride[d];
      p->rows[d] = g->out[d] ? (g->out[d] - 1) * p->kst[d] + (g->k[d] - 1) * g->dil[d] + 1 : 0;
    }
    p->sub[2] = g->k[2] == 1 ? g->stride[2] : 1;
    p->S = g->k[2] == 1 ? 1 : g->stride[2];
    p->wq = div_up(g->out[2], p->V) * p->V + (g->k[2] - 1) * g->dil[2] / p->S;
    p->mask_x = false;
  } else {
    for (int d = 0; d < 2; d++) {
      p->sub[d] = 1;
      p->kst[d] = g->stride[d];
      p->rows[d] = g->in[d];
    }
    p->sub[2] = p->S = 1;
    p->wq = g->in[2];
    p->mask_x = true;
    for (int d = 0; d < 3; d++) p->crop[d] = -g->pad_b[d];
  }
  p->rowlen = p->S * p->wq;
  p->plane = p->rows[0] * p->rows[1] * p->rowlen;

  /* Register block: OCB channels x RB rows x NV vectors of columns, chosen by a cost model. */
  int64_t ow = g->out[2], oh = g->out[1];
  cost_params cp = avx512 ? (cost_params){.regs = 32, .w_load = 1.0, .x_load = 1.0, .max_rb = 2}
                          : (cost_params){.regs = 16, .w_load = 0.6, .x_load = 1.0, .max_rb = 3};
  choose_block(p, &cp);
  /* a block `kiln tune` measured faster replaces the model's (tune.h) */
  cg_tune_conv(cx, &(cg_tune_query){.geom = g, .V = p->V, .packed = w->data != NULL,
                                    .max_acc = (cp.regs - 3) / p->wph, .max_rb = cp.max_rb,
                                    .cost = tune_cost, .plan = p, .machine = &cp},
               &p->ocb, &p->rb, &p->nv);
  p->n_ocb = div_up(p->ocg, p->ocb);
  p->ocb_tail = p->ocg % p->ocb;
  /* Tile order.  When the weights outweigh the input, the row groups of one channel block are
   * consecutive tiles (each block's weights are read from memory once, then from cache);
   * otherwise the channel blocks of one row group are, and a row group's input rows (about
   * 128 KiB) stay in cache while every channel block reads them. */
  int64_t w_bytes = p->ocg * p->cg * p->kk * p->wph * 4, x_bytes = p->cg * p->plane * 4;
  p->rows_inner = w_bytes > x_bytes;
  int64_t row_bytes = (p->cg ? p->cg : 1) * p->rowlen * 4;
  int64_t rg = p->rb;
  if (!p->rows_inner)
    while (rg + p->rb <= oh && (rg + p->rb) * p->kst[1] * row_bytes <= 128 * 1024) rg += p->rb;
  int64_t base_tiles = g->N * g->groups * g->out[0] * p->n_ocb;
  int64_t want = 4 * (int64_t)cg_threads(cx);
  while (rg > p->rb && base_tiles * div_up(oh, rg) < want) rg -= p->rb;
  p->rg = rg;
  p->n_rg = div_up(oh, rg);
  p->rb_tail = oh % p->rb;
  int64_t blk = (int64_t)p->nv * p->V;
  p->n_owfull = ow / blk;
  int64_t rem = ow - p->n_owfull * blk;
  p->nv_tail = (int)div_up(rem, p->V);
  p->lanes_tail = rem ? (int)(rem - (int64_t)(p->nv_tail - 1) * p->V) : 0;
  /* column phases whose last columns fall past Y: the row's last block stores partly, so it is
   * emitted as the (compile-time) tail block */
  if (p->wph > 1 && !rem && p->n_owfull > 0 && ow * p->wph > p->ys[2]) {
    p->n_owfull--;
    p->nv_tail = p->nv;
    p->lanes_tail = p->V;
  }
  /* Weights that are a sparse sub-kernel of their buffer (one output phase of a strided
   * ConvTranspose) are packed at run time: read in place, every image would stream all of the
   * buffer's cache lines for a fraction of their taps. */
  p->pack_rt = !w->data && (w->tap_strides[0] || w->tap_strides[1] || w->tap_strides[2]);
  p->packed = w->data != NULL || p->pack_rt;
  if (!p->packed) {
    p->w_o = w->oc_stride;
    p->w_ic = w->ic_stride;
    p->w_ph = w->ph_stride;
    for (int d = 0; d < 3; d++) p->w_ts[d] = w_dim_stride(w, g->k, d);
  }
}

/* Weights repacked per (group, channel block) as [ic][tap][o]: the block's weights of one tap
 * are adjacent, and a block's weights are contiguous. */
static int pack_weights(kiln_emit_ctx *cx, const conv_plan *p, const cg_conv_weights *w,
                        kiln_err *e) {
  int64_t G = p->g.groups, total = G * p->ocg * p->cg * p->kk * p->wph;
  float *buf = kiln_malloc(sizeof(float) * (size_t)(total ? total : 1));
  if (!buf) {
    kiln_errf(e, KILN_ERR_NOMEM, "out of memory (packed weights)");
    return -1;
  }
  for (int64_t g = 0; g < G; g++)
    for (int64_t oc = 0; oc < p->ocg; oc++) {
      int64_t b = oc / p->ocb, o = oc % p->ocb;
      int64_t ob = (b == p->n_ocb - 1 && p->ocb_tail) ? p->ocb_tail : p->ocb;
      int64_t base = (g * p->ocg + b * p->ocb) * p->cg * p->kk * p->wph;
      for (int64_t ic = 0; ic < p->cg; ic++)
        for (int64_t t = 0; t < p->kk; t++)
          for (int64_t ph = 0; ph < p->wph; ph++) {
            const int64_t *k = p->g.k;
            int64_t toff = (t / (k[1] * k[2])) * w_dim_stride(w, k, 0) +
                           (t / k[2] % k[1]) * w_dim_stride(w, k, 1) +
                           (t % k[2]) * w_dim_stride(w, k, 2);
            buf[base + ((ic * p->kk + t) * p->wph + ph) * ob + o] =
                w->data[w->off + ph * w->ph_stride + g * w->g_stride + oc * w->oc_stride +
                        ic * w->ic_stride + toff];
          }
    }
  int id = cg_buf_const(cx, buf, sizeof(float) * (size_t)total, e);
  kiln_free(buf);
  return id;
}

/* pack_weights as a kernel, for weights known only at run time: one tile per (group, output
 * channel), args W, packed W. */
static kiln_code emit_pack_weights(kiln_emit_ctx *cx, const char *label, const conv_plan *p,
                                   const cg_conv_weights *w, int wp_buf, kiln_err *e) {
  char lbl[96];
  snprintf(lbl, sizeof lbl, "%s_wpack", label);
  cg_kernel kk;
  cg_kernel *k = &kk;
  KILN_TRY(cg_kernel_begin(cx, k, lbl, 2, e));
  LLVMBuilderRef b = k->b;
  LLVMValueRef W = cg_arg(k, 0), WP = cg_arg(k, 1);
  const int64_t *ks = p->g.k;
  cg_loop lt, lic, lk[3];
  LLVMValueRef t = cg_loop_begin(k, &lt, k->lo, k->hi, NULL, "oc");
  LLVMValueRef g = LLVMBuildSDiv(b, t, cg_i64(k, p->ocg), "");
  LLVMValueRef oc = LLVMBuildSRem(b, t, cg_i64(k, p->ocg), "");
  LLVMValueRef blk = LLVMBuildSDiv(b, oc, cg_i64(k, p->ocb), "");
  LLVMValueRef o = LLVMBuildSRem(b, oc, cg_i64(k, p->ocb), "");
  LLVMValueRef ob = cg_i64(k, p->ocb);
  if (p->ocb_tail)
    ob = cg_select(k, LLVMBuildICmp(b, LLVMIntEQ, blk, cg_i64(k, p->n_ocb - 1), ""),
                   cg_i64(k, p->ocb_tail), ob);
  LLVMValueRef base = cg_mul(k, cg_add(k, cg_mul(k, g, cg_i64(k, p->ocg)),
                                       cg_mul(k, blk, cg_i64(k, p->ocb))),
                             cg_i64(k, p->cg * p->kk));
  LLVMValueRef src0 = cg_add(k, cg_add(k, cg_i64(k, w->off), cg_mul(k, g, cg_i64(k, w->g_stride))),
                             cg_mul(k, oc, cg_i64(k, w->oc_stride)));
  LLVMValueRef ic = cg_loop_begin(k, &lic, cg_i64(k, 0), cg_i64(k, p->cg), NULL, "ic");
  LLVMValueRef src = cg_add(k, src0, cg_mul(k, ic, cg_i64(k, w->ic_stride)));
  LLVMValueRef tap = cg_i64(k, 0);
  for (int d = 0; d < 3; d++) {
    LLVMValueRef kv = cg_loop_begin(k, &lk[d], cg_i64(k, 0), cg_i64(k, ks[d]), NULL, "k");
    src = cg_add(k, src, cg_mul(k, kv, cg_i64(k, w_dim_stride(w, ks, d))));
    tap = cg_add(k, cg_mul(k, tap, cg_i64(k, ks[d])), kv);
  }
  /* buf[base + (ic * kk + tap) * ob + o] */
  LLVMValueRef dst = cg_add(k, base, cg_add(k, cg_mul(k, cg_add(k, cg_mul(k, ic, cg_i64(k, p->kk)),
                                                                tap), ob), o));
  cg_store(k, cg_load(k, k->t->f32, W, src), WP, dst);
  for (int d = 2; d >= 0; d--) cg_loop_end(k, &lk[d]);
  cg_loop_end(k, &lic);
  cg_loop_end(k, &lt);
  return cg_kernel_end(cx, k, p->g.groups * p->ocg, (int[]){w->buf, wp_buf}, e);
}

/* The preparation copy: X -> (N*C, rows0, rows1, S*wq) with zeros outside the input. */
static int64_t prep_map(int d, int64_t i, const void *user) {
  const conv_plan *p = user;
  int64_t pos = d < 2 ? i : (i / p->wq) + p->S * (i % p->wq); /* W: phase, column */
  return src_index(&p->g, d, pos * p->sub[d] - p->g.pad_b[d]);
}

static kiln_code emit_prep(kiln_emit_ctx *cx, const char *label, const conv_plan *p, int x_buf,
                           int xp_buf, kiln_err *e) {
  const cg_conv_geom *g = &p->g;
  char lbl[96];
  snprintf(lbl, sizeof lbl, "%s_prep", label);
  return cg_emit_plane_gather(cx, lbl, g->N * g->C, g->in,
                              (int64_t[]){p->rows[0], p->rows[1], p->rowlen}, prep_map, p, x_buf,
                              xp_buf, e);
}

/* ---- vector helpers ---- */

static LLVMValueRef fmuladd(cg_kernel *k, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) {
  LLVMTypeRef ty = LLVMTypeOf(a);
  return cg_intrinsic(k, "llvm.fmuladd", &ty, 1, (LLVMValueRef[]){a, b, c}, 3);
}

static LLVMValueRef c64(cg_kernel *k, int64_t v) { return cg_i64(k, v); }
static LLVMValueRef add(cg_kernel *k, LLVMValueRef a, LLVMValueRef b) { return cg_add(k, a, b); }
static LLVMValueRef mulc(cg_kernel *k, LLVMValueRef a, int64_t c) {
  return c == 1 ? a : c == 0 ? c64(k, 0) : cg_mul(k, a, c64(k, c));
}
static LLVMValueRef addc(cg_kernel *k, LLVMValueRef a, int64_t c) {
  return c == 0 ? a : cg_add(k, a, c64(k, c));
}

/* ---- the main kernel ---- */

typedef struct conv_kern {
  cg_kernel *k;
  const conv_plan *p;
  const cg_conv_epilogue *epi;
  LLVMValueRef x, w, y, bias, scale, shift, res;
  LLVMTypeRef vty;
  int64_t w_off, w_g; /* weight offset and group stride as the kernel reads them */
  /* the tile's coordinates */
  LLVMValueRef n, grp, od;
} conv_kern;


/* The column phases' vectors v[0..n) (V lanes each) interleaved into one n*V vector: lane l
 * of phase ph goes to lane l * n + ph. */
static LLVMValueRef interleave(cg_kernel *k, const LLVMValueRef *v, int n, unsigned V) {
  LLVMTypeRef i32 = k->t->i32;
  LLVMValueRef parts[CG_MAX_WPH];
  int m = 1;
  while (m < n) m *= 2;
  for (int i = 0; i < m; i++) parts[i] = i < n ? v[i] : LLVMGetPoison(LLVMTypeOf(v[0]));
  LLVMValueRef mask[CG_MAX_WPH * 16];
  for (unsigned w = V; m > 1; m /= 2, w *= 2) { /* concatenate pairs: phase ph at ph * V */
    for (unsigned i = 0; i < 2 * w; i++) mask[i] = LLVMConstInt(i32, i, 0);
    for (int i = 0; i < m / 2; i++)
      parts[i] = LLVMBuildShuffleVector(k->b, parts[2 * i], parts[2 * i + 1],
                                        LLVMConstVector(mask, 2 * w), "");
  }
  unsigned len = (unsigned)n * V;
  for (unsigned i = 0; i < len; i++)
    mask[i] = LLVMConstInt(i32, (i % (unsigned)n) * V + i / (unsigned)n, 0);
  return LLVMBuildShuffleVector(k->b, parts[0], LLVMGetPoison(LLVMTypeOf(parts[0])),
                                LLVMConstVector(mask, len), "");
}

/* One register block: channels [oc0, oc0+ob) of the tile's group, output rows [oh0, oh0+rb),
 * columns [ow0, ow0 + nv*V) of which the last vector has `lanes` lanes (of each column phase);
 * with column phases the last interleaved vector stores `ylanes` elements of Y. */
static void emit_block(conv_kern *ck, LLVMValueRef oc0, int ob, LLVMValueRef oh0, int rb,
                       LLVMValueRef ow0, int nv, int lanes, int ylanes) {
  cg_kernel *k = ck->k;
  const conv_plan *p = ck->p;
  const cg_conv_geom *g = &p->g;
  LLVMBuilderRef b = k->b;
  unsigned V = (unsigned)p->V;
  int wph = p->wph;
  int n_acc = wph * ob * rb * nv;
  LLVMValueRef acc[MAX_ACC * 3];
  LLVMValueRef zero = LLVMConstNull(ck->vty);
  for (int a = 0; a < n_acc; a++) {
    acc[a] = cg_entry_alloca(k, ck->vty);
    LLVMBuildStore(b, zero, acc[a]);
  }
#define ACC(ph, o, r, v) acc[((((ph) * ob) + (o)) * rb + (r)) * nv + (v)]
  /* weight strides of this block */
  int64_t w_o = p->packed ? 1 : p->w_o, w_ic = p->packed ? p->kk * wph * ob : p->w_ic;
  int64_t w_ph = p->packed ? ob : p->w_ph;
  int64_t w_ts[3] = {p->w_ts[0], p->w_ts[1], p->w_ts[2]};
  if (p->packed)
    w_ts[0] = g->k[1] * g->k[2] * wph * ob, w_ts[1] = g->k[2] * wph * ob, w_ts[2] = wph * ob;
  LLVMValueRef wblk = add(k, addc(k, mulc(k, ck->grp, ck->w_g), ck->w_off),
                          mulc(k, oc0, p->packed ? p->cg * p->kk * wph : p->w_o));
  /* X plane of input channel 0 of the group, and the row of tap (0, 0) of row oh0 */
  LLVMValueRef xpl = mulc(k, add(k, mulc(k, ck->n, g->C), mulc(k, ck->grp, p->cg)), p->plane);
  LLVMValueRef row0 = add(k, mulc(k, addc(k, mulc(k, ck->od, p->kst[0]), p->crop[0]), p->rows[1]),
                          addc(k, mulc(k, oh0, p->kst[1]), p->crop[1]));
  cg_loop lic, lkd, lkh;
  LLVMValueRef ic = cg_loop_begin(k, &lic, c64(k, 0), c64(k, p->cg), NULL, "ic");
  LLVMValueRef xi = add(k, xpl, mulc(k, ic, p->plane));
  LLVMValueRef wi = add(k, wblk, mulc(k, ic, w_ic));
  LLVMValueRef kd = g->k[0] > 1 ? cg_loop_begin(k, &lkd, c64(k, 0), c64(k, g->k[0]), NULL, "kd")
                                : c64(k, 0);
  LLVMValueRef kh = g->k[1] > 1 ? cg_loop_begin(k, &lkh, c64(k, 0), c64(k, g->k[1]), NULL, "kh")
                                : c64(k, 0);
  LLVMValueRef row =
      add(k, row0, add(k, mulc(k, kd, g->dil[0] * p->rows[1]), mulc(k, kh, g->dil[1])));
  LLVMValueRef xr = add(k, add(k, xi, mulc(k, row, p->rowlen)), addc(k, ow0, p->crop[2]));
  LLVMValueRef wt = add(k, wi, add(k, mulc(k, kd, w_ts[0]), mulc(k, kh, w_ts[1])));
  /* kernel columns: unrolled, or a loop when there are many */
  bool unroll = g->k[2] <= KW_UNROLL;
  cg_loop lkw;
  LLVMValueRef kwv = unroll ? NULL : cg_loop_begin(k, &lkw, c64(k, 0), c64(k, g->k[2]), NULL, "kw");
  LLVMValueRef cur[MAX_ACC * 3];
  for (int a = 0; a < n_acc; a++) cur[a] = LLVMBuildLoad2(b, ck->vty, acc[a], "");
  LLVMValueRef xv[MAX_ACC * 3];
  for (int64_t kw = 0; kw < (unroll ? g->k[2] : 1); kw++) {
    LLVMValueRef xoff, woff;
    if (unroll) {
      int64_t tap = kw * g->dil[2];
      xoff = c64(k, (tap % p->S) * p->wq + tap / p->S);
      woff = c64(k, kw * w_ts[2]);
    } else {
      LLVMValueRef tap = mulc(k, kwv, g->dil[2]);
      xoff = p->S == 1 ? tap
                       : add(k, mulc(k, LLVMBuildURem(b, tap, c64(k, p->S), ""), p->wq),
                             LLVMBuildUDiv(b, tap, c64(k, p->S), ""));
      woff = mulc(k, kwv, w_ts[2]);
    }
    LLVMValueRef xk = add(k, xr, xoff), wk = add(k, wt, woff);
    bool used = wph == 1;
    for (int ph = 0; ph < wph && !used; ph++) used = g->wph_lo[ph] <= kw && kw < g->wph_hi[ph];
    if (!used) continue;
    for (int r = 0; r < rb; r++)
      for (int v = 0; v < nv; v++) {
        unsigned n = (v == nv - 1 && p->mask_x) ? (unsigned)lanes : V;
        xv[r * nv + v] = cg_vload(k, ck->x, addc(k, xk, r * p->kst[1] * p->rowlen + v * p->V), V, n);
      }
    /* each accumulator takes its taps in (ic, kd, kh, kw) order, as a phase of its own would */
    for (int ph = 0; ph < wph; ph++) {
      if (wph > 1 && (kw < g->wph_lo[ph] || kw >= g->wph_hi[ph])) continue;
      for (int o = 0; o < ob; o++) {
        LLVMValueRef ws = cg_load(k, k->t->f32, ck->w, addc(k, wk, ph * w_ph + o * w_o));
        LLVMValueRef wv = cg_splat(k, ws, V);
        for (int r = 0; r < rb; r++)
          for (int v = 0; v < nv; v++) {
            LLVMValueRef *c = &cur[(((ph * ob) + o) * rb + r) * nv + v];
            *c = fmuladd(k, wv, xv[r * nv + v], *c);
          }
      }
    }
  }
  for (int a = 0; a < n_acc; a++) LLVMBuildStore(b, cur[a], acc[a]);
  if (!unroll) cg_loop_end(k, &lkw);
  if (g->k[1] > 1) cg_loop_end(k, &lkh);
  if (g->k[0] > 1) cg_loop_end(k, &lkd);
  cg_loop_end(k, &lic);

  /* epilogue */
  const cg_conv_epilogue *epi = ck->epi;
  int64_t OD = p->ys[0], OH = p->ys[1], OW = p->ys[2];
  for (int o = 0; o < ob; o++) {
    LLVMValueRef oc = add(k, add(k, mulc(k, ck->grp, p->ocg), oc0), c64(k, o));
    LLVMValueRef bias = NULL, scale = NULL, shift = NULL;
    if (ck->bias) bias = cg_splat(k, cg_load(k, k->t->f32, ck->bias, oc), V);
    if (ck->scale) scale = cg_splat(k, cg_load(k, k->t->f32, ck->scale, oc), V);
    if (ck->shift) shift = cg_splat(k, cg_load(k, k->t->f32, ck->shift, oc), V);
    LLVMValueRef od = addc(k, mulc(k, ck->od, p->os[0]), p->oo[0]);
    LLVMValueRef plane = mulc(k, add(k, mulc(k, add(k, mulc(k, ck->n, g->OC), oc), OD), od), OH * OW);
    for (int r = 0; r < rb; r++)
      for (int v = 0; v < nv; v++) {
        unsigned n = v == nv - 1 ? (unsigned)lanes : V;
        LLVMValueRef vals[CG_MAX_WPH];
        for (int ph = 0; ph < wph; ph++) {
          LLVMValueRef val = LLVMBuildLoad2(b, ck->vty, ACC(ph, o, r, v), "");
          if (bias) val = LLVMBuildFAdd(b, val, bias, "");
          if (scale && shift)
            val = fmuladd(k, val, scale, shift);
          else if (scale)
            val = LLVMBuildFMul(b, val, scale, "");
          else if (shift)
            val = LLVMBuildFAdd(b, val, shift, "");
          vals[ph] = val;
        }
        LLVMValueRef val = vals[0];
        LLVMValueRef yrow = mulc(k, addc(k, mulc(k, addc(k, oh0, r), p->os[1]), p->oo[1]), OW);
        LLVMValueRef yi = add(k, add(k, plane, yrow),
                              addc(k, mulc(k, addc(k, ow0, v * p->V), p->os[2]), p->oo[2]));
        if (wph > 1) { /* the phases' columns interleaved: whole vectors of Y */
          for (int ph = 0; ph < wph && epi->act; ph++) vals[ph] = cg_conv_activate(k, epi, vals[ph]);
          unsigned len = (unsigned)wph * V;
          cg_vstore(k, interleave(k, vals, wph, V), ck->y, yi, len,
                    v == nv - 1 ? (unsigned)ylanes : len);
          continue;
        }
        if (ck->res) val = LLVMBuildFAdd(b, val, cg_vload(k, ck->res, yi, V, n), "");
        if (epi->act) val = cg_conv_activate(k, epi, val);
        if (p->os[2] == 1) {
          cg_vstore(k, val, ck->y, yi, V, n);
        } else { /* every os[2]-th column: one store per lane */
          for (unsigned l = 0; l < n; l++)
            cg_store(k, LLVMBuildExtractElement(b, val, cg_i32(k, (int32_t)l), ""), ck->y,
                     addc(k, yi, (int64_t)l * p->os[2]));
        }
      }
  }
#undef ACC
}

/* All column blocks of rows [oh0, oh0 + rb). */
static void emit_rows(conv_kern *ck, LLVMValueRef oc0, int ob, LLVMValueRef oh0, int rb) {
  cg_kernel *k = ck->k;
  const conv_plan *p = ck->p;
  int64_t blk = (int64_t)p->nv * p->V;
  if (p->n_owfull > 0) {
    cg_loop l;
    LLVMValueRef i = cg_loop_begin(k, &l, c64(k, 0), c64(k, p->n_owfull), NULL, "owb");
    emit_block(ck, oc0, ob, oh0, rb, mulc(k, i, blk), p->nv, p->V, p->wph * p->V);
    cg_loop_end(k, &l);
  }
  if (p->nv_tail > 0) {
    /* with column phases the last vector's Y columns may end before its lanes do */
    int64_t col = (p->n_owfull * blk + (int64_t)(p->nv_tail - 1) * p->V) * p->wph;
    int64_t ylanes = (int64_t)p->lanes_tail * p->wph;
    if (p->wph > 1 && p->ys[2] - col < ylanes) ylanes = p->ys[2] - col;
    emit_block(ck, oc0, ob, oh0, rb, c64(k, p->n_owfull * blk), p->nv_tail, p->lanes_tail,
               (int)ylanes);
  }
}

/* The rows of row group `rgi` for one channel block. */
static void emit_group(conv_kern *ck, LLVMValueRef rgi, LLVMValueRef oc0, int ob) {
  cg_kernel *k = ck->k;
  const conv_plan *p = ck->p;
  int64_t OH = p->g.out[1];
  LLVMValueRef lo = mulc(k, rgi, p->rg);
  LLVMValueRef hi = cg_min(k, addc(k, lo, p->rg), c64(k, OH));
  LLVMValueRef nfull = LLVMBuildSDiv(k->b, LLVMBuildNSWSub(k->b, hi, lo, ""), c64(k, p->rb), "");
  cg_loop l;
  LLVMValueRef i = cg_loop_begin(k, &l, c64(k, 0), nfull, NULL, "rb");
  emit_rows(ck, oc0, ob, add(k, lo, mulc(k, i, p->rb)), p->rb);
  cg_loop_end(k, &l);
  if (p->rb_tail) {
    cg_if c;
    cg_if_begin(k, &c, LLVMBuildICmp(k->b, LLVMIntEQ, rgi, c64(k, p->n_rg - 1), ""));
    emit_rows(ck, oc0, ob, c64(k, OH - p->rb_tail), (int)p->rb_tail);
    cg_if_end(k, &c);
  }
}

kiln_code cg_emit_conv(kiln_emit_ctx *cx, const char *label, const cg_conv_geom *geom,
                       const cg_conv_weights *w, const cg_conv_epilogue *epi, int x_buf,
                       int y_buf, kiln_err *e) {
  KILN_TRY(check_geom(geom, e));
  /* pointwise, strided and small-image convolutions: packed GEMM micro-kernels (gemm_gen.h) */
  if (cg_gemm_conv_applicable(cx, geom, w, epi))
    return cg_gemm_conv_emit(cx, label, geom, w, epi, x_buf, y_buf, e);
  if ((geom->ostride[0] || geom->ostride[1] || geom->ostride[2]) && epi->residual_buf >= 0)
    return kiln_errf(e, KILN_ERR_INVALID, "convolution: a placed output takes no residual");
  int64_t out_numel = geom->N * geom->OC * geom->out[0] * geom->out[1] * geom->out[2];
  if (out_numel == 0) return KILN_OK;
  conv_plan p;
  make_plan(cx, geom, w, &p);
  const cg_conv_geom *g = &p.g;
  /* column phases read their weights whole (packed here, or in place) */
  assert(p.wph == 1 || !p.pack_rt);

  int xk_buf = x_buf;
  if (p.prep) {
    int64_t bytes = g->N * g->C * p.plane * 4;
    xk_buf = cg_buf_scratch(cx, (size_t)bytes, e);
    if (xk_buf < 0) return e->code;
    KILN_TRY(emit_prep(cx, label, &p, x_buf, xk_buf, e));
  }
  int wk_buf = w->buf;
  if (p.pack_rt) {
    wk_buf = cg_buf_scratch(cx, sizeof(float) * (size_t)(g->groups * p.ocg * p.cg * p.kk), e);
    if (wk_buf < 0) return e->code;
    KILN_TRY(emit_pack_weights(cx, label, &p, w, wk_buf, e));
  } else if (p.packed) {
    wk_buf = pack_weights(cx, &p, w, e);
    if (wk_buf < 0) return e->code;
  }

  int bufs[8] = {xk_buf, wk_buf, y_buf};
  int n_args = 3, a_bias = -1, a_scale = -1, a_shift = -1, a_res = -1;
  if (epi->bias_buf >= 0) a_bias = n_args, bufs[n_args++] = epi->bias_buf;
  if (epi->scale_buf >= 0) a_scale = n_args, bufs[n_args++] = epi->scale_buf;
  if (epi->shift_buf >= 0) a_shift = n_args, bufs[n_args++] = epi->shift_buf;
  if (epi->residual_buf >= 0) a_res = n_args, bufs[n_args++] = epi->residual_buf;

  cg_kernel k;
  KILN_TRY(cg_kernel_begin(cx, &k, label, n_args, e));
  conv_kern ck = {.k = &k, .p = &p, .epi = epi, .x = cg_arg(&k, 0), .w = cg_arg(&k, 1),
                  .y = cg_arg(&k, 2), .vty = LLVMVectorType(k.t->f32, (unsigned)p.V)};
  if (a_bias >= 0) ck.bias = cg_arg(&k, a_bias);
  if (a_scale >= 0) ck.scale = cg_arg(&k, a_scale);
  if (a_shift >= 0) ck.shift = cg_arg(&k, a_shift);
  if (a_res >= 0) ck.res = cg_arg(&k, a_res);
  ck.w_off = p.packed ? 0 : w->off;
  ck.w_g = p.packed ? p.ocg * p.cg * p.kk * p.wph : w->g_stride;

  /* tile = (((n * G + grp) * OD + od) * n_rg + rg) * n_ocb + ocb, or with rows_inner
   * (((n * G + grp) * OD + od) * n_ocb + ocb) * n_rg + rg */
  int64_t n_tiles = g->N * g->groups * g->out[0] * p.n_rg * p.n_ocb;
  cg_loop lt;
  LLVMValueRef t = cg_loop_begin(&k, &lt, k.lo, k.hi, NULL, "tile");
  LLVMBuilderRef b = k.b;
  int64_t inner = p.rows_inner ? p.n_rg : p.n_ocb, outer = p.rows_inner ? p.n_ocb : p.n_rg;
  LLVMValueRef i0 = LLVMBuildURem(b, t, c64(&k, inner), "");
  LLVMValueRef rest = LLVMBuildUDiv(b, t, c64(&k, inner), "");
  LLVMValueRef i1 = LLVMBuildURem(b, rest, c64(&k, outer), "");
  rest = LLVMBuildUDiv(b, rest, c64(&k, outer), "");
  LLVMValueRef ocb = p.rows_inner ? i1 : i0, rgi = p.rows_inner ? i0 : i1;
  ck.od = LLVMBuildURem(b, rest, c64(&k, g->out[0]), "");
  rest = LLVMBuildUDiv(b, rest, c64(&k, g->out[0]), "");
  ck.grp = LLVMBuildURem(b, rest, c64(&k, g->groups), "");
  ck.n = LLVMBuildUDiv(b, rest, c64(&k, g->groups), "");
  LLVMValueRef oc0 = mulc(&k, ocb, p.ocb);
  if (p.ocb_tail) {
    cg_ifelse ie;
    cg_ifelse_begin(&k, &ie, LLVMBuildICmp(b, LLVMIntEQ, ocb, c64(&k, p.n_ocb - 1), ""));
    emit_group(&ck, rgi, oc0, (int)p.ocb_tail);
    cg_ifelse_else(&k, &ie);
    emit_group(&ck, rgi, oc0, p.ocb);
    cg_ifelse_end(&k, &ie);
  } else {
    emit_group(&ck, rgi, oc0, p.ocb);
  }
  cg_loop_end(&k, &lt);
  return cg_kernel_end(cx, &k, n_tiles, bufs, e);
}
