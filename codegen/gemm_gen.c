/* gemm_gen.c — convolutions as packed GEMM micro-kernels (see gemm_gen.h): the
 * blocking plan, the compile-time weight panels, the input-packing kernel, and the GEMM kernel
 * (the MR x NR register-blocked micro-kernel and the epilogue). */
#include "codegen/gemm_gen.h"

#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "codegen/emit_copy.h"

/* Rows (input channel, tap) per chunk at most: a panel of MR x KC weights (6 KiB with AVX2)
 * stays in L1 while the tile's strips of packed input pass under it. */
#define KC_MAX 256
/* Floats of one chunk's weight block (MC x KC) at most: 128 KiB, a quarter of Zen 3's L2 (the
 * blocking measured best with it; the block streams through once per tile and chunk). */
#define WB_MAX 32768
/* Floats of partial sums per tile (MC x NC) at most, on the kernel's stack: 32 KiB. */
#define CB_MAX 8192
/* Floats of a tile's own packed input (KC x NC) at most, on the kernel's stack: 64 KiB. */
#define XP_MAX 16384
#define NC_MAX 256  /* pixels per tile at most */
#define PACK_CH 32  /* input channels per tile of the packing kernel */
#define UNROLL 4    /* input channels per iteration of the micro-kernel's loop */

typedef struct gemm_plan {
  int64_t N, C, OC, P, HW; /* P output pixels, HW input pixels per channel */
  int64_t kk, K;           /* taps; the reduction: K = C * kk rows (ic, tap) of the packed X */
  bool sub;                /* the pack gathers through the offset table (not plain 1x1) */
  int V, MR, NV, NR;       /* vector width; register block: MR channels x NV vectors */
  int64_t KC, n_kc, kc_last; /* rows per chunk, chunks, rows of the last */
  int64_t MC, n_mb, mc_last; /* output channels per tile (multiple of MR), blocks, last's */
  int64_t NC, n_pb, nc_last; /* pixels per tile (multiple of NR), blocks, last's */
  int64_t S;               /* strips of NR pixels per pixel block (NC / NR) */
  bool tile_pack;          /* one channel block: each tile packs its own input (see make_plan) */
  bool pb_inner;           /* tile order: pixel blocks fastest (the weights outweigh X) */
} gemm_plan;

static int64_t div_up(int64_t a, int64_t b) { return (a + b - 1) / b; }
static int64_t round_up(int64_t a, int64_t b) { return div_up(a, b) * b; }

bool cg_gemm_conv_applicable(kiln_emit_ctx *cx, const cg_conv_geom *g, const cg_conv_weights *w,
                             const cg_conv_epilogue *epi) {
  (void)cx;
  (void)epi;
  if (g->groups != 1 || !w->data || g->N < 1 || g->C < 1 || g->OC < 1) return false;
  int64_t hw = 1, kk = 1;
  bool strided = false;
  for (int d = 0; d < 3; d++) {
    if (g->ostride[d] || g->out[d] < 1 || (g->xform[d] != CG_IN_PLAIN && g->xfactor[d] != 1))
      return false;
    hw *= g->in[d];
    kk *= g->k[d];
    strided |= g->stride[d] > 1;
  }
  if (hw > INT32_MAX) return false; /* the offset table holds int32 */
  /* Wider kernels as GEMMs over their im2col rows where conv_gen's direct kernel is slow:
   * strided, with enough input channels to amortize the gathering pack (ResNet's 3x3 stride-2
   * convolutions: 45-55 -> 60-75 GFLOP/s on Zen 3; stride-1 3x3 and the 3-channel stem stay,
   * conv_gen measured as fast or faster there). */
  if (kk == 1) return true;
  /* the packed im2col rows (kk times the strided input) must stay a modest scratch buffer */
  int64_t p = g->out[0] * g->out[1] * g->out[2], bytes;
  return strided && g->C >= 32 &&
         kiln_mul_ok(g->N * kk * g->C, (p + 255) / 256 * 256 * 4, &bytes) &&
         bytes <= ((int64_t)64 << 20);
}

static void make_plan(kiln_emit_ctx *cx, const cg_conv_geom *g, gemm_plan *p) {
  memset(p, 0, sizeof *p);
  p->N = g->N;
  p->C = g->C;
  p->kk = g->k[0] * g->k[1] * g->k[2];
  p->K = p->C * p->kk;
  p->OC = g->OC;
  p->P = g->out[0] * g->out[1] * g->out[2];
  p->HW = g->in[0] * g->in[1] * g->in[2];
  p->sub = false; /* plain: 1x1, stride 1, no padding (each pixel reads its own position) */
  for (int d = 0; d < 3; d++)
    p->sub |= g->k[d] != 1 || g->stride[d] != 1 || g->pad_b[d] != 0 || g->pad_e[d] != 0;
  bool avx512 = cg_avx512(cx);
  /* 6 x 2 vectors: 12 accumulators, 2 input vectors and a broadcast in AVX2's 16 registers;
   * 12 x 2 of AVX-512's 32 likewise */
  p->V = avx512 ? 16 : 8;
  p->MR = avx512 ? 12 : 6;
  p->NV = 2;
  p->NR = p->NV * p->V;
  p->n_kc = div_up(p->K, KC_MAX);
  p->KC = div_up(p->K, p->n_kc);
  p->kc_last = p->K - (p->n_kc - 1) * p->KC;
  /* channel blocks: the weight block of a chunk in L2 (a quarter over WB_MAX allowed rather
   * than a second, nearly empty block), the blocks balanced */
  int64_t mc = (WB_MAX * 5 / 4 / p->KC) / p->MR * p->MR;
  if (mc < p->MR) mc = p->MR;
  p->MC = round_up(div_up(p->OC, div_up(p->OC, mc)), p->MR);
  int64_t nc = p->n_kc > 1 ? (CB_MAX / p->MC) / p->NR * p->NR : NC_MAX;
  if (nc < p->NR) nc = p->NR;
  if (nc > NC_MAX) nc = NC_MAX;
  p->NC = nc < round_up(p->P, p->NR) ? nc : round_up(p->P, p->NR);
  /* enough tiles for the threads (the split does not change any element's arithmetic) */
  int64_t want = 4 * (int64_t)cg_threads(cx);
  for (;;) {
    int64_t tiles = p->N * div_up(p->OC, p->MC) * div_up(p->P, p->NC);
    if (tiles >= want) break;
    if (p->MC > 4 * p->MR)
      p->MC = round_up(p->MC / 2, p->MR);
    else if (p->NC > 2 * p->NR)
      p->NC = round_up(p->NC / 2, p->NR);
    else
      break;
  }
  p->MC = round_up(div_up(p->OC, div_up(p->OC, p->MC)), p->MR);
  /* With one channel block every tile packs a different part of X: packing inside the tile,
   * into a stack buffer that stays in L2, saves writing the whole packed X out and reading it
   * back.  With several, a packing kernel packs X once for all of them. */
  p->tile_pack = div_up(p->OC, p->MC) == 1;
  if (p->tile_pack && p->KC * p->NC > XP_MAX) p->NC = (XP_MAX / p->KC) / p->NR * p->NR;
  if (p->NC < p->NR) p->NC = p->NR;
  p->NC = round_up(div_up(p->P, div_up(p->P, p->NC)), p->NR);
  p->n_mb = div_up(p->OC, p->MC);
  p->mc_last = p->OC - (p->n_mb - 1) * p->MC;
  p->n_pb = div_up(p->P, p->NC);
  p->nc_last = p->P - (p->n_pb - 1) * p->NC;
  p->S = p->NC / p->NR;
  p->pb_inner = p->OC > p->P;
}

/* Weights as panels of MR output channels, [k][o] within a panel (one step of the micro-kernel
 * reads MR adjacent floats), chunk by chunk: chunk c (KC rows of the reduction, kc_last for the
 * last) starts at c*OC*KC and holds the panels of channels [b*MR, b*MR + ob) one after the
 * other, each klen x ob, so a tile streams its weight block sequentially. */
static int pack_weights(kiln_emit_ctx *cx, const gemm_plan *p, const cg_conv_geom *g,
                        const cg_conv_weights *w, kiln_err *e) {
  int64_t total = p->OC * p->K;
  float *buf = kiln_malloc(sizeof(float) * (size_t)total);
  if (!buf) {
    kiln_errf(e, KILN_ERR_NOMEM, "out of memory (packed weights)");
    return -1;
  }
  bool per_dim = w->tap_strides[0] || w->tap_strides[1] || w->tap_strides[2];
  for (int64_t oc = 0; oc < p->OC; oc++) {
    int64_t g0 = oc / p->MR * p->MR, o = oc - g0;
    int64_t ob = p->OC - g0 < p->MR ? p->OC - g0 : p->MR;
    for (int64_t ic = 0; ic < p->C; ic++)
      for (int64_t t = 0; t < p->kk; t++) {
        int64_t kw = t % g->k[2], kh = t / g->k[2] % g->k[1], kd = t / (g->k[2] * g->k[1]);
        int64_t toff = per_dim ? kd * w->tap_strides[0] + kh * w->tap_strides[1] +
                                     kw * w->tap_strides[2]
                               : t * w->tap_stride;
        int64_t kr = ic * p->kk + t, c = kr / p->KC, kin = kr - c * p->KC;
        int64_t klen = c == p->n_kc - 1 ? p->kc_last : p->KC;
        buf[c * p->OC * p->KC + g0 * klen + kin * ob + o] =
            w->data[w->off + oc * w->oc_stride + ic * w->ic_stride + toff];
      }
  }
  int id = cg_buf_const(cx, buf, sizeof(float) * (size_t)total, e);
  kiln_free(buf);
  return id;
}

/* For a strided convolution: the input offset of every output pixel (padded with zeros to
 * whole pixel blocks, so the pack's gathers need no mask). */
/* When the pack gathers: the input offset (within a channel plane) that tap t of output pixel q
 * reads, at tab[t * n_pb * NC + q], or -1 where it reads padding; pixels past the last are
 * padding too. */
static int offset_table(kiln_emit_ctx *cx, const gemm_plan *p, const cg_conv_geom *g,
                        kiln_err *e) {
  int64_t n = p->n_pb * p->NC;
  int32_t *tab = kiln_malloc(sizeof(int32_t) * (size_t)(n * p->kk));
  if (!tab) {
    kiln_errf(e, KILN_ERR_NOMEM, "out of memory (convolution offsets)");
    return -1;
  }
  for (int64_t i = 0; i < n * p->kk; i++) tab[i] = -1;
  for (int64_t t = 0; t < p->kk; t++) {
    int64_t tap[3] = {t / (g->k[2] * g->k[1]), t / g->k[2] % g->k[1], t % g->k[2]};
    int64_t q = 0;
    for (int64_t od = 0; od < g->out[0]; od++)
      for (int64_t oh = 0; oh < g->out[1]; oh++)
        for (int64_t ow = 0; ow < g->out[2]; ow++, q++) {
          int64_t o[3] = {od, oh, ow}, off = 0;
          bool inside = true;
          for (int d = 0; d < 3; d++) {
            int64_t i = o[d] * g->stride[d] + tap[d] * g->dil[d] - g->pad_b[d];
            inside &= i >= 0 && i < g->in[d];
            off = off * g->in[d] + i;
          }
          if (inside) tab[t * n + q] = (int32_t)off;
        }
  }
  int id = cg_buf_const(cx, tab, sizeof(int32_t) * (size_t)(n * p->kk), e);
  kiln_free(tab);
  return id;
}

/* ---- the kernel ---- */

typedef struct gemm_kern {
  cg_kernel *k;
  const gemm_plan *p;
  const cg_conv_epilogue *epi;
  LLVMValueRef x, xp, w, y, tab, bias, scale, shift, res; /* arguments */
  LLVMValueRef cb;             /* stack buffer: partial sums (several chunks only) */
  LLVMTypeRef vty;
  LLVMValueRef n, m0, p0;      /* the tile: image, first output channel, first pixel */
  LLVMValueRef xblk;           /* the tile's packed input: strip 0, input channel 0 */
  LLVMValueRef kc, k0, klen;   /* the chunk: index, first input channel, channels */
} gemm_kern;

static LLVMValueRef c64(cg_kernel *k, int64_t v) { return cg_i64(k, v); }
static LLVMValueRef add(cg_kernel *k, LLVMValueRef a, LLVMValueRef b) { return cg_add(k, a, b); }
static LLVMValueRef addc(cg_kernel *k, LLVMValueRef a, int64_t c) {
  return c == 0 ? a : cg_add(k, a, c64(k, c));
}
static LLVMValueRef mulc(cg_kernel *k, LLVMValueRef a, int64_t c) {
  return c == 1 ? a : c == 0 ? c64(k, 0) : cg_mul(k, a, c64(k, c));
}

/* V floats of a stack buffer at an index that is a multiple of V (aligned). */
static LLVMValueRef aload(gemm_kern *gk, LLVMValueRef buf, LLVMValueRef idx) {
  LLVMValueRef v = LLVMBuildLoad2(gk->k->b, gk->vty, cg_gep(gk->k, gk->k->t->f32, buf, idx), "");
  LLVMSetAlignment(v, (unsigned)gk->p->V * 4);
  return v;
}
static void astore(gemm_kern *gk, LLVMValueRef v, LLVMValueRef buf, LLVMValueRef idx) {
  LLVMValueRef s = LLVMBuildStore(gk->k->b, v, cg_gep(gk->k, gk->k->t->f32, buf, idx));
  LLVMSetAlignment(s, (unsigned)gk->p->V * 4);
}


/* ---- the packing kernel ----
 * Xp[(((n * n_pb + pb) * S + s) * C + ic) * NR + j] = X(n, ic, pixel pb*NC + s*NR + j), zeros
 * past the last pixel: each strip of a pixel block is contiguous over the input channels. */

/* Vector j of the pixel block (strip j / NV, its vector j % NV) of input channel ic. */
static void pack_vector(gemm_kern *gk, LLVMValueRef pb, LLVMValueRef kr, LLVMValueRef j,
                        unsigned lanes) {
  cg_kernel *k = gk->k;
  const gemm_plan *p = gk->p;
  LLVMBuilderRef b = k->b;
  unsigned V = (unsigned)p->V;
  /* row kr of the reduction is input channel kr / kk, tap kr % kk */
  LLVMValueRef ic = p->kk > 1 ? LLVMBuildUDiv(b, kr, c64(k, p->kk), "") : kr;
  LLVMValueRef plane = mulc(k, add(k, mulc(k, gk->n, p->C), ic), p->HW);
  LLVMValueRef col = add(k, gk->p0, mulc(k, j, p->V)), val;
  if (p->sub) { /* gather through the offset table; -1 (padding) lanes read nothing: zeros */
    LLVMTypeRef ity = LLVMVectorType(k->t->i32, V), pty = LLVMVectorType(k->t->ptr, V);
    LLVMValueRef ti = col;
    if (p->kk > 1)
      ti = add(k, mulc(k, LLVMBuildURem(b, kr, c64(k, p->kk), ""), p->n_pb * p->NC), col);
    ti = LLVMBuildLoad2(b, ity, cg_gep(k, k->t->i32, gk->tab, ti), "");
    LLVMSetAlignment(ti, 4);
    /* Every lane loads (padding lanes element 0 of the plane), then padding is zeroed: a
     * gather with a variable mask becomes branches per lane where gathers are slow (Zen 3),
     * an unmasked one straight-line loads. */
    LLVMValueRef keep = LLVMBuildICmp(b, LLVMIntSGE, ti, LLVMConstNull(ity), "");
    LLVMValueRef idx = LLVMBuildSExt(b, cg_select(k, keep, ti, LLVMConstNull(ity)),
                                     LLVMVectorType(k->t->i64, V), "");
    LLVMValueRef ptrs = LLVMBuildInBoundsGEP2(b, k->t->f32, cg_gep(k, k->t->f32, gk->x, plane),
                                              &idx, 1, "");
    val = cg_intrinsic(k, "llvm.masked.gather", (LLVMTypeRef[]){gk->vty, pty}, 2,
                       (LLVMValueRef[]){ptrs, cg_i32(k, 4), cg_lane_mask(k, V, V),
                                        LLVMGetPoison(gk->vty)}, 4);
    val = cg_select(k, keep, val, LLVMConstNull(gk->vty));
  } else {
    val = cg_vload(k, gk->x, add(k, plane, col), V, lanes);
  }
  LLVMValueRef st = LLVMBuildUDiv(b, j, c64(k, p->NV), "");
  LLVMValueRef v = LLVMBuildURem(b, j, c64(k, p->NV), "");
  LLVMValueRef dst;
  if (p->tile_pack) /* the tile's stack buffer: [strip][kr - k0][NR] */
    dst = add(k, mulc(k, st, p->KC), LLVMBuildNSWSub(b, kr, gk->k0, ""));
  else
    dst = add(k, mulc(k, add(k, mulc(k, add(k, mulc(k, gk->n, p->n_pb), pb), p->S), st), p->K), kr);
  astore(gk, val, gk->xp, add(k, mulc(k, dst, p->NR), mulc(k, v, p->V)));
}

/* Packs input channels [ic0, ic1) of pixel block pb: `nvec` whole vectors each, then on the
 * last pixel block the partial one. */
static void emit_pack_rows(gemm_kern *gk, LLVMValueRef pb, LLVMValueRef ic0, LLVMValueRef ic1,
                           LLVMValueRef last_pb, LLVMValueRef nvec) {
  cg_kernel *k = gk->k;
  const gemm_plan *p = gk->p;
  int64_t tail = p->P % p->V;
  cg_loop lc, lj;
  LLVMValueRef ic = cg_loop_begin(k, &lc, ic0, ic1, NULL, "ic");
  LLVMValueRef j = cg_loop_begin(k, &lj, c64(k, 0), nvec, NULL, "j");
  pack_vector(gk, pb, ic, j, (unsigned)p->V);
  cg_loop_end(k, &lj);
  if (tail) {
    cg_if c;
    cg_if_begin(k, &c, last_pb);
    pack_vector(gk, pb, ic, c64(k, p->nc_last / p->V), (unsigned)tail);
    cg_if_end(k, &c);
  }
  cg_loop_end(k, &lc);
}

/* Tiles: (image, pixel block, group of PACK_CH input channels). */
static kiln_code emit_pack_kernel(kiln_emit_ctx *cx, const char *label, const gemm_plan *p,
                                  int x_buf, int tab_buf, int xp_buf, kiln_err *e) {
  char lbl[96];
  snprintf(lbl, sizeof lbl, "%s_pack", label);
  cg_kernel k;
  KILN_TRY(cg_kernel_begin(cx, &k, lbl, p->sub ? 3 : 2, e));
  gemm_kern gk = {.k = &k, .p = p, .x = cg_arg(&k, 0), .xp = cg_arg(&k, 1),
                  .vty = LLVMVectorType(k.t->f32, (unsigned)p->V)};
  if (p->sub) gk.tab = cg_arg(&k, 2);
  LLVMBuilderRef b = k.b;
  int64_t n_cg = div_up(p->K, PACK_CH);
  cg_loop lt;
  LLVMValueRef t = cg_loop_begin(&k, &lt, k.lo, k.hi, NULL, "tile");
  LLVMValueRef cgi = LLVMBuildURem(b, t, c64(&k, n_cg), "");
  LLVMValueRef rest = LLVMBuildUDiv(b, t, c64(&k, n_cg), "");
  LLVMValueRef pb = LLVMBuildURem(b, rest, c64(&k, p->n_pb), "");
  gk.n = LLVMBuildUDiv(b, rest, c64(&k, p->n_pb), "");
  gk.p0 = mulc(&k, pb, p->NC);
  LLVMValueRef last_pb = LLVMBuildICmp(b, LLVMIntEQ, pb, c64(&k, p->n_pb - 1), "");
  LLVMValueRef nvec = cg_select(&k, last_pb, c64(&k, p->nc_last / p->V), c64(&k, p->NC / p->V));
  LLVMValueRef c0 = mulc(&k, cgi, PACK_CH);
  emit_pack_rows(&gk, pb, c0, cg_min(&k, addc(&k, c0, PACK_CH), c64(&k, p->K)), last_pb, nvec);
  cg_loop_end(&k, &lt);
  int bufs[3] = {x_buf, xp_buf, tab_buf};
  return cg_kernel_end(cx, &k, p->N * p->n_pb * n_cg, bufs, e);
}

/* ---- the GEMM kernel ---- */

/* The epilogue of rows [r0, r0 + ob) of the tile at columns [col0, col0 + nv*V) (the last
 * vector with `lanes` lanes), and the only store of those elements to Y. */
static void emit_epilogue(gemm_kern *gk, LLVMValueRef *cur, LLVMValueRef r0, int ob,
                          LLVMValueRef col0, int nv, int lanes) {
  cg_kernel *k = gk->k;
  const gemm_plan *p = gk->p;
  LLVMBuilderRef b = k->b;
  unsigned V = (unsigned)p->V;
  for (int o = 0; o < ob; o++) {
    LLVMValueRef oc = addc(k, add(k, gk->m0, r0), o);
    LLVMValueRef bias = NULL, scale = NULL, shift = NULL;
    if (gk->bias) bias = cg_splat(k, cg_load(k, k->t->f32, gk->bias, oc), V);
    if (gk->scale) scale = cg_splat(k, cg_load(k, k->t->f32, gk->scale, oc), V);
    if (gk->shift) shift = cg_splat(k, cg_load(k, k->t->f32, gk->shift, oc), V);
    LLVMValueRef yrow = add(k, mulc(k, add(k, mulc(k, gk->n, p->OC), oc), p->P), col0);
    for (int v = 0; v < nv; v++) {
      unsigned n = v == nv - 1 ? (unsigned)lanes : V;
      LLVMValueRef val = cur[o * nv + v], yi = addc(k, yrow, (int64_t)v * p->V);
      if (bias) val = LLVMBuildFAdd(b, val, bias, "");
      if (scale && shift) {
        LLVMTypeRef ty = gk->vty;
        val = cg_intrinsic(k, "llvm.fmuladd", &ty, 1, (LLVMValueRef[]){val, scale, shift}, 3);
      } else if (scale) {
        val = LLVMBuildFMul(b, val, scale, "");
      } else if (shift) {
        val = LLVMBuildFAdd(b, val, shift, "");
      }
      if (gk->res) val = LLVMBuildFAdd(b, val, cg_vload(k, gk->res, yi, V, n), "");
      if (gk->epi->act) val = cg_conv_activate(gk->k, gk->epi, val);
      cg_vstore(k, val, gk->y, yi, V, n);
    }
  }
}

/* One input channel of the micro-kernel: NV input vectors, ob broadcast weights, ob x nv
 * FMAs. */
static void emit_step(gemm_kern *gk, LLVMValueRef *cur, LLVMValueRef wb, LLVMValueRef xb,
                      LLVMValueRef kk, int ob, int nv) {
  cg_kernel *k = gk->k;
  const gemm_plan *p = gk->p;
  LLVMValueRef xv[4];
  LLVMValueRef xk = add(k, xb, mulc(k, kk, p->NR)), wk = add(k, wb, mulc(k, kk, ob));
  for (int v = 0; v < nv; v++) xv[v] = aload(gk, gk->xp, addc(k, xk, (int64_t)v * p->V));
  for (int o = 0; o < ob; o++) {
    LLVMValueRef ws = cg_splat(k, cg_load(k, k->t->f32, gk->w, addc(k, wk, o)), (unsigned)p->V);
    for (int v = 0; v < nv; v++) {
      LLVMValueRef *c = &cur[o * nv + v];
      *c = cg_intrinsic(k, "llvm.fma", &gk->vty, 1, (LLVMValueRef[]){ws, xv[v], *c}, 3);
    }
  }
}

/* The micro-kernel: rows [r0, r0 + ob) of the tile (one weight panel) times strip s (nv
 * vectors, the last with `lanes` valid lanes) over the chunk's input channels. */
static void emit_micro(gemm_kern *gk, LLVMValueRef r0, int ob, LLVMValueRef s, int nv,
                       int lanes) {
  cg_kernel *k = gk->k;
  const gemm_plan *p = gk->p;
  LLVMBuilderRef b = k->b;
  int n_acc = ob * nv;
  LLVMValueRef acc[64], cur[64];
  LLVMValueRef scol = mulc(k, s, p->NR); /* the strip's first column in the tile */
  for (int a = 0; a < n_acc; a++) acc[a] = cg_entry_alloca(k, gk->vty);
  /* start: 0 on the first chunk, else the previous chunks' partial sums */
  LLVMValueRef first = p->n_kc > 1 ? LLVMBuildICmp(b, LLVMIntEQ, gk->kc, c64(k, 0), "") : NULL;
  for (int o = 0; o < ob; o++)
    for (int v = 0; v < nv; v++) {
      LLVMValueRef init = LLVMConstNull(gk->vty);
      if (first)
        init = cg_select(k, first, init,
                         aload(gk, gk->cb, addc(k, add(k, mulc(k, addc(k, r0, o), p->NC), scol),
                                                (int64_t)v * p->V)));
      LLVMBuildStore(b, init, acc[o * nv + v]);
    }
  LLVMValueRef wb = add(k, mulc(k, gk->k0, p->OC), cg_mul(k, add(k, gk->m0, r0), gk->klen));
  LLVMValueRef xb = p->tile_pack ? mulc(k, s, p->KC * p->NR)
                                 : add(k, add(k, gk->xblk, mulc(k, s, p->K * p->NR)),
                                       mulc(k, gk->k0, p->NR));
  /* UNROLL channels per iteration, then the rest one by one */
  LLVMValueRef nmain = LLVMBuildSDiv(b, gk->klen, c64(k, UNROLL), "");
  for (int pass = 0; pass < 2; pass++) {
    cg_loop l;
    LLVMValueRef lo = pass ? mulc(k, nmain, UNROLL) : c64(k, 0);
    LLVMValueRef hi = pass ? gk->klen : nmain;
    LLVMValueRef i = cg_loop_begin(k, &l, lo, hi, NULL, pass ? "kr" : "k");
    for (int a = 0; a < n_acc; a++) cur[a] = LLVMBuildLoad2(b, gk->vty, acc[a], "");
    if (pass)
      emit_step(gk, cur, wb, xb, i, ob, nv);
    else
      for (int u = 0; u < UNROLL; u++)
        emit_step(gk, cur, wb, xb, addc(k, mulc(k, i, UNROLL), u), ob, nv);
    for (int a = 0; a < n_acc; a++) LLVMBuildStore(b, cur[a], acc[a]);
    cg_loop_end(k, &l);
  }
  for (int a = 0; a < n_acc; a++) cur[a] = LLVMBuildLoad2(b, gk->vty, acc[a], "");
  LLVMValueRef col0 = add(k, gk->p0, scol);
  if (p->n_kc == 1) {
    emit_epilogue(gk, cur, r0, ob, col0, nv, lanes);
    return;
  }
  cg_ifelse ie;
  cg_ifelse_begin(k, &ie, LLVMBuildICmp(b, LLVMIntEQ, gk->kc, c64(k, p->n_kc - 1), ""));
  emit_epilogue(gk, cur, r0, ob, col0, nv, lanes);
  cg_ifelse_else(k, &ie);
  for (int o = 0; o < ob; o++)
    for (int v = 0; v < nv; v++)
      astore(gk, cur[o * nv + v], gk->cb,
             addc(k, add(k, mulc(k, addc(k, r0, o), p->NC), scol), (int64_t)v * p->V));
  cg_ifelse_end(k, &ie);
}

/* Block of rows [r0, r0 + ob) against every full strip, then on the last pixel block the
 * narrower last strip. */
static void emit_strips(gemm_kern *gk, LLVMValueRef r0, int ob, LLVMValueRef nstrip,
                        LLVMValueRef last_pb) {
  cg_kernel *k = gk->k;
  const gemm_plan *p = gk->p;
  cg_loop l;
  LLVMValueRef s = cg_loop_begin(k, &l, c64(k, 0), nstrip, NULL, "strip");
  emit_micro(gk, r0, ob, s, p->NV, p->V);
  cg_loop_end(k, &l);
  int64_t tail = p->P % p->NR;
  if (tail) {
    int nv = (int)div_up(tail, p->V);
    cg_if c;
    cg_if_begin(k, &c, last_pb);
    emit_micro(gk, r0, ob, nstrip, nv, (int)(tail - (int64_t)(nv - 1) * p->V));
    cg_if_end(k, &c);
  }
}

/* A tile: per chunk (after packing it, when the tile packs), every channel block of the tile
 * (full panels, then on the last channel block the narrower last one) against every strip.
 * Blocks outside strips: the epilogue walks each output row sequentially (six row streams the
 * prefetchers follow, rather than a line from each of MC rows per strip: ResNet-50's
 * layer1 conv3 with its residual 1.6-1.8 -> 1.2-1.3 ms), while the strips come from L2.  Only
 * the last channel block and the last pixel block have tails (MC and NC are multiples of MR and
 * NR), so the block counts are runtime values and each micro-kernel shape is emitted once. */
static void emit_tile(gemm_kern *gk, LLVMValueRef mb, LLVMValueRef pb) {
  cg_kernel *k = gk->k;
  const gemm_plan *p = gk->p;
  LLVMBuilderRef b = k->b;
  LLVMValueRef last_mb = LLVMBuildICmp(b, LLVMIntEQ, mb, c64(k, p->n_mb - 1), "");
  LLVMValueRef last_pb = LLVMBuildICmp(b, LLVMIntEQ, pb, c64(k, p->n_pb - 1), "");
  LLVMValueRef nblk = cg_select(k, last_mb, c64(k, p->mc_last / p->MR), c64(k, p->MC / p->MR));
  LLVMValueRef nstrip = cg_select(k, last_pb, c64(k, p->nc_last / p->NR), c64(k, p->NC / p->NR));
  cg_loop l;
  gk->kc = cg_loop_begin(k, &l, c64(k, 0), c64(k, p->n_kc), NULL, "kc");
  gk->k0 = mulc(k, gk->kc, p->KC);
  LLVMValueRef last_kc = LLVMBuildICmp(b, LLVMIntEQ, gk->kc, c64(k, p->n_kc - 1), "");
  gk->klen = p->n_kc == 1 ? c64(k, p->kc_last)
                          : cg_select(k, last_kc, c64(k, p->kc_last), c64(k, p->KC));
  if (p->tile_pack)
    emit_pack_rows(gk, pb, gk->k0, add(k, gk->k0, gk->klen), last_pb,
                   cg_select(k, last_pb, c64(k, p->nc_last / p->V), c64(k, p->NC / p->V)));
  int64_t rt = p->OC % p->MR;
  cg_loop lb;
  LLVMValueRef i = cg_loop_begin(k, &lb, c64(k, 0), nblk, NULL, "ob");
  emit_strips(gk, mulc(k, i, p->MR), p->MR, nstrip, last_pb);
  cg_loop_end(k, &lb);
  if (rt) {
    cg_if c;
    cg_if_begin(k, &c, last_mb);
    emit_strips(gk, mulc(k, nblk, p->MR), (int)rt, nstrip, last_pb);
    cg_if_end(k, &c);
  }
  cg_loop_end(k, &l);
}

kiln_code cg_gemm_conv_emit(kiln_emit_ctx *cx, const char *label, const cg_conv_geom *geom,
                            const cg_conv_weights *w, const cg_conv_epilogue *epi, int x_buf,
                            int y_buf, kiln_err *e) {
  assert(cg_gemm_conv_applicable(cx, geom, w, epi));
  gemm_plan p;
  make_plan(cx, geom, &p);
  int wk_buf = pack_weights(cx, &p, geom, w, e);
  if (wk_buf < 0) return e->code;
  int tab_buf = -1;
  if (p.sub) {
    tab_buf = offset_table(cx, &p, geom, e);
    if (tab_buf < 0) return e->code;
  }
  /* the GEMM reads X and packs it itself, or reads X packed by a first kernel */
  int xk_buf = x_buf;
  if (!p.tile_pack) {
    xk_buf = cg_buf_scratch(cx, sizeof(float) * (size_t)(p.N * p.n_pb * p.NC * p.K), e);
    if (xk_buf < 0) return e->code;
    KILN_TRY(emit_pack_kernel(cx, label, &p, x_buf, tab_buf, xk_buf, e));
  }
  int bufs[9] = {xk_buf, wk_buf, y_buf};
  int n_args = 3, a_tab = -1, a_bias = -1, a_scale = -1, a_shift = -1, a_res = -1;
  if (p.tile_pack && tab_buf >= 0) a_tab = n_args, bufs[n_args++] = tab_buf;
  if (epi->bias_buf >= 0) a_bias = n_args, bufs[n_args++] = epi->bias_buf;
  if (epi->scale_buf >= 0) a_scale = n_args, bufs[n_args++] = epi->scale_buf;
  if (epi->shift_buf >= 0) a_shift = n_args, bufs[n_args++] = epi->shift_buf;
  if (epi->residual_buf >= 0) a_res = n_args, bufs[n_args++] = epi->residual_buf;
  char lbl[96];
  snprintf(lbl, sizeof lbl, "%s_gemm", label);
  cg_kernel k;
  KILN_TRY(cg_kernel_begin(cx, &k, lbl, n_args, e));
  gemm_kern gk = {.k = &k, .p = &p, .epi = epi, .w = cg_arg(&k, 1), .y = cg_arg(&k, 2),
                  .vty = LLVMVectorType(k.t->f32, (unsigned)p.V)};
  if (p.tile_pack) {
    gk.x = cg_arg(&k, 0);
    gk.xp = cg_entry_alloca(&k, LLVMArrayType(k.t->f32, (unsigned)(p.KC * p.NC)));
    LLVMSetAlignment(gk.xp, 64);
  } else {
    gk.xp = cg_arg(&k, 0);
  }
  if (a_tab >= 0) gk.tab = cg_arg(&k, a_tab);
  if (a_bias >= 0) gk.bias = cg_arg(&k, a_bias);
  if (a_scale >= 0) gk.scale = cg_arg(&k, a_scale);
  if (a_shift >= 0) gk.shift = cg_arg(&k, a_shift);
  if (a_res >= 0) gk.res = cg_arg(&k, a_res);
  if (p.n_kc > 1) {
    gk.cb = cg_entry_alloca(&k, LLVMArrayType(k.t->f32, (unsigned)(p.MC * p.NC)));
    LLVMSetAlignment(gk.cb, 64);
  }

  /* tile = ((n * n_mb + mb) * n_pb + pb), or with channel blocks fastest
   * ((n * n_pb + pb) * n_mb + mb) */
  int64_t n_tiles = p.N * p.n_mb * p.n_pb;
  cg_loop lt;
  LLVMValueRef t = cg_loop_begin(&k, &lt, k.lo, k.hi, NULL, "tile");
  LLVMBuilderRef b = k.b;
  int64_t inner = p.pb_inner ? p.n_pb : p.n_mb, outer = p.pb_inner ? p.n_mb : p.n_pb;
  LLVMValueRef i0 = LLVMBuildURem(b, t, c64(&k, inner), "");
  LLVMValueRef rest = LLVMBuildUDiv(b, t, c64(&k, inner), "");
  LLVMValueRef i1 = LLVMBuildURem(b, rest, c64(&k, outer), "");
  gk.n = LLVMBuildUDiv(b, rest, c64(&k, outer), "");
  LLVMValueRef pb = p.pb_inner ? i0 : i1, mb = p.pb_inner ? i1 : i0;
  gk.m0 = mulc(&k, mb, p.MC);
  gk.p0 = mulc(&k, pb, p.NC);
  if (!p.tile_pack) gk.xblk = mulc(&k, add(&k, mulc(&k, gk.n, p.n_pb), pb), p.S * p.K * p.NR);
  emit_tile(&gk, mb, pb);
  cg_loop_end(&k, &lt);
  return cg_kernel_end(cx, &k, n_tiles, bufs, e);
}
