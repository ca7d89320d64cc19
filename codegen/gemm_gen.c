/* gemm_gen.c — convolutions as packed GEMM micro-kernels (see gemm_gen.h): the
 * blocking plan and its choice of micro-kernel, the compile-time weight panels and offset
 * table, the input-packing kernel, and the GEMM kernel (the two MR x NR register-blocked
 * micro-kernels, vectors over pixels or over output channels, with their epilogues). */
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
#define NB_PIX 128  /* pixels of the images of a tile, at least, when images are small */
#define PACK_CH 32  /* input channels per tile of the packing kernel */
#define UNROLL 4    /* input channels per iteration of the micro-kernel's loop */
/* The channel-vectorized kernel when its estimated cycles are under this share of the
 * pixel-vectorized kernel's.  Zen 3, 576 -> 512 channels 1x1: 7x7 (0.82 estimated) 14%
 * faster, 10x10 (0.92) 6% faster, 14x14 (0.96) 3% slower; the pack and the epilogue's
 * per-lane stores, left out of the estimate, cost the channel kernel more. */
#define CK_MARGIN 0.93

typedef struct gemm_plan {
  int64_t N, C, OC, P, HW; /* P output pixels, HW input pixels per channel */
  int64_t kk, K;           /* taps; the reduction: K = C * kk rows (ic, tap) of the packed X */
  bool sub;                /* the pack gathers through the offset table (not plain 1x1) */
  /* The micro-kernel: vectors over pixels (MR channels x NV vectors of NR = NV*V pixels), or
   * with ck over output channels (NV vectors of MR = NV*V channels x NR pixels) */
  bool ck;
  int V, MR, NV, NR;
  int64_t OCp;             /* channels of the packed weights (ck: OC rounded up to V, zeros) */
  int64_t xs;              /* floats per packed strip: its rows x NR (ck: + V of room) */
  int64_t ntab;            /* entries per tap of the offset table */
  bool shift;              /* every tap reads its pixels' own offsets shifted (see offset_table) */
  int64_t KC, n_kc, kc_last; /* rows per chunk, chunks, rows of the last */
  int64_t MC, n_mb, mc_last; /* output channels per tile (multiple of MR), blocks, last's */
  int64_t NC, n_pb, nc_last; /* pixels per tile (multiple of NR), blocks, last's */
  int64_t S;               /* strips of NR pixels per pixel block (NC / NR) */
  int64_t NB, n_nb;        /* images per tile, image blocks */
  bool tile_pack;          /* one channel block: each tile packs its own input (see make_plan) */
  bool pb_inner;           /* tile order: pixel blocks fastest (the weights outweigh X) */
} gemm_plan;

static int64_t div_up(int64_t a, int64_t b) { return (a + b - 1) / b; }
static int64_t round_up(int64_t a, int64_t b) { return div_up(a, b) * b; }

bool cg_gemm_conv_applicable(kiln_emit_ctx *cx, const cg_conv_geom *g, const cg_conv_weights *w,
                             const cg_conv_epilogue *epi) {
  (void)epi;
  (void)w;
  if (g->groups != 1 || g->N < 1 || g->C < 1 || g->OC < 1) return false;
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
  /* Wider kernels as GEMMs over their im2col rows where conv_gen's direct kernel is slow, with
   * enough input channels to amortize the pack (the 3-channel stem stays):
   *  - strided (ResNet's 3x3 stride-2 convolutions: 45-55 -> 60-75 GFLOP/s on Zen 3);
   *  - stride 1 where the direct kernel's vectors along output columns run more than 5% empty
   *    (OW not a multiple of V): ResNet's 3x3 at 28, 14 and 7 columns, 10-20% faster as GEMMs
   *    on Zen 3, at 4 columns (training at 128x128) twice as fast.  With whole vectors (56,
   *    16, 8 columns) the direct kernel is as fast or faster. */
  if (kk == 1) return true;
  int64_t V = cg_avx512(cx) ? 16 : 8, ow = g->out[2];
  bool ragged = ow * 20 < round_up(ow, V) * 19;
  /* the packed im2col rows (kk times the strided input) must stay a modest scratch buffer */
  int64_t p = g->out[0] * g->out[1] * g->out[2], bytes;
  return (strided || ragged) && g->C >= 32 &&
         kiln_mul_ok(g->N * kk * g->C, (p + 255) / 256 * 256 * 4, &bytes) &&
         bytes <= ((int64_t)64 << 20);
}

/* Estimated cycles per reduction row of one register block with `acc` accumulators and
 * `loads` loads: two FMAs and three loads per cycle (Zen 3), and at least 5 cycles, as each
 * accumulator's chain takes one FMA per row with a latency of 4 (and some slack: 8 chains
 * measured slower than 10). */
static double block_cycles(int64_t acc, int64_t loads) {
  double c = (double)acc / 2;
  if ((double)loads / 3 > c) c = (double)loads / 3;
  return c < 5 ? 5 : c;
}

/* Cycles per reduction row of one image, pixel-vectorized with MR channels x NV vectors of V
 * pixels: every channel panel (the last one narrower) meets every strip (the last one fewer
 * vectors). */
static double cost_pixels(int64_t OC, int64_t P, int V, int MR, int NV) {
  int64_t NR = (int64_t)NV * V, tail = P % NR, tv = div_up(tail, V), rt = OC % MR;
  double full = (double)(P / NR), c = 0;
  c += (double)(OC / MR) * (full * block_cycles(MR * NV, NV + MR) +
                            (tail ? block_cycles(MR * tv, tv + MR) : 0));
  if (rt) c += full * block_cycles(rt * NV, NV + rt) + (tail ? block_cycles(rt * tv, tv + rt) : 0);
  return c;
}

/* Likewise channel-vectorized with NV vectors of V channels x NR pixels. */
static double cost_channels(int64_t OC, int64_t P, int V, int NV, int NR) {
  int64_t MR = (int64_t)NV * V, rt = OC % MR, rv = div_up(rt, V), tail = P % NR;
  double full = (double)(P / NR), c = 0;
  c += (double)(OC / MR) * (full * block_cycles(NV * NR, NV + NR) +
                            (tail ? block_cycles(NV * tail, NV + tail) : 0));
  if (rt)
    c += full * block_cycles(rv * NR, rv + NR) + (tail ? block_cycles(rv * tail, rv + tail) : 0);
  return c;
}

static void make_plan(kiln_emit_ctx *cx, const cg_conv_geom *g, int kind, gemm_plan *p) {
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
  p->V = avx512 ? 16 : 8;
  p->NV = 2;
  /* Pixel-vectorized: 6 x 2 vectors, 12 accumulators, 2 input vectors and a broadcast in
   * AVX2's 16 registers (12 x 2 of AVX-512's 32 likewise).  Channel-vectorized: 2 vectors of
   * channels x 4 to 6 pixels (8 to 12 with AVX-512), the pixel count that wastes the least on
   * the last group. */
  int pmr = avx512 ? 12 : 6, cnr = 0;
  double cpx = cost_pixels(p->OC, p->P, p->V, pmr, p->NV), cch = 0;
  for (int nr = avx512 ? 8 : 4; nr <= (avx512 ? 12 : 6); nr++) {
    double c = cost_channels(p->OC, p->P, p->V, p->NV, nr);
    if (!cnr || c <= cch) cnr = nr, cch = c;
  }
  p->ck = kind == CG_GEMM_CHANNELS || (kind == CG_GEMM_AUTO && cch < cpx * CK_MARGIN);
  if (p->ck) {
    p->MR = p->NV * p->V;
    p->NR = cnr;
    p->OCp = round_up(p->OC, p->V);
  } else {
    p->MR = pmr;
    p->NR = p->NV * p->V;
    p->OCp = p->OC;
  }
  p->n_kc = div_up(p->K, KC_MAX);
  p->KC = div_up(p->K, p->n_kc);
  p->kc_last = p->K - (p->n_kc - 1) * p->KC;
  /* channel blocks: the weight block of a chunk in L2 (a quarter over WB_MAX allowed rather
   * than a second, nearly empty block), the blocks balanced */
  int64_t mc = (WB_MAX * 5 / 4 / p->KC) / p->MR * p->MR;
  if (mc < p->MR) mc = p->MR;
  p->MC = round_up(div_up(p->OC, div_up(p->OC, mc)), p->MR);
  int64_t nc = p->n_kc > 1 ? (CB_MAX / p->MC) / p->NR * p->NR : NC_MAX / p->NR * p->NR;
  if (nc < p->NR) nc = p->NR;
  if (nc > NC_MAX) nc = NC_MAX / p->NR * p->NR;
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
  /* Small images in a batch (training's 4x4 maps): several per tile, so that each weight panel,
   * in L1, meets the strips of them all instead of streaming in again for each (their partial
   * sums side by side in the stack buffer).  Each image keeps its own strips and epilogue. */
  p->NB = 1;
  if (!p->tile_pack && p->N > 1 && p->n_pb == 1 && p->NC < NB_PIX) {
    int64_t nb = div_up(NB_PIX, p->NC);
    if (p->n_kc > 1 && nb > CB_MAX / (p->MC * p->NC)) nb = CB_MAX / (p->MC * p->NC);
    if (nb > p->N) nb = p->N;
    while (nb > 1 && div_up(p->N, nb) * p->n_mb < want) nb--;
    if (nb > 1) p->NB = div_up(p->N, div_up(p->N, nb));
  }
  p->n_nb = div_up(p->N, p->NB);
  /* ck: a row's V-lane store overlaps the next row's, which rewrites it; the last row of a
   * strip spills into V floats of room */
  p->xs = (p->tile_pack ? p->KC : p->K) * p->NR + (p->ck ? p->V : 0);
  p->ntab = p->n_pb * p->NC + (p->ck ? p->V : 0);
}

/* Weights as panels of MR output channels, [k][o] within a panel (one step of the micro-kernel
 * reads MR adjacent floats), chunk by chunk: chunk c (KC rows of the reduction, kc_last for the
 * last) starts at c*OCp*KC and holds the panels of channels [b*MR, b*MR + ob) one after the
 * other, each klen x ob, so a tile streams its weight block sequentially.  ob is MR but in the
 * last panel: OC - b*MR, with ck rounded up to whole vectors (zeros: the kernel then loads
 * whole vectors and stores only the real channels). */
static int pack_weights(kiln_emit_ctx *cx, const gemm_plan *p, const cg_conv_geom *g,
                        const cg_conv_weights *w, kiln_err *e) {
  int64_t total = p->OCp * p->K;
  float *buf = kiln_calloc((size_t)total, sizeof(float));
  if (!buf) {
    kiln_errf(e, KILN_ERR_NOMEM, "out of memory (packed weights)");
    return -1;
  }
  bool per_dim = w->tap_strides[0] || w->tap_strides[1] || w->tap_strides[2];
  for (int64_t oc = 0; oc < p->OC; oc++) {
    int64_t g0 = oc / p->MR * p->MR, o = oc - g0;
    int64_t ob = p->OCp - g0 < p->MR ? p->OCp - g0 : p->MR;
    for (int64_t ic = 0; ic < p->C; ic++)
      for (int64_t t = 0; t < p->kk; t++) {
        int64_t kw = t % g->k[2], kh = t / g->k[2] % g->k[1], kd = t / (g->k[2] * g->k[1]);
        int64_t toff = per_dim ? kd * w->tap_strides[0] + kh * w->tap_strides[1] +
                                     kw * w->tap_strides[2]
                               : t * w->tap_stride;
        int64_t kr = ic * p->kk + t, c = kr / p->KC, kin = kr - c * p->KC;
        int64_t klen = c == p->n_kc - 1 ? p->kc_last : p->KC;
        buf[c * p->OCp * p->KC + g0 * klen + kin * ob + o] =
            w->data[w->off + oc * w->oc_stride + ic * w->ic_stride + toff];
      }
  }
  int id = cg_buf_const(cx, buf, sizeof(float) * (size_t)total, e);
  kiln_free(buf);
  return id;
}

/* When the pack gathers: the input offset (within a channel plane) that tap t of output pixel q
 * reads, at tab[t * ntab + q], or -1 where it reads padding; pixels past the last (to whole
 * pixel blocks and the V lanes a ck pack loads past a group) are padding too, so the pack's
 * gathers need no mask.  When every tap t reads offset q + sh[t] for each pixel q it does not
 * pad (stride 1, as many output as input columns: 'same' convolutions), sets p->shift and
 * appends sh at tab[kk * ntab + t]: the pack then loads contiguous pixels, masked by the
 * table, instead of gathering them. */
static int offset_table(kiln_emit_ctx *cx, gemm_plan *p, const cg_conv_geom *g, kiln_err *e) {
  int64_t n = p->ntab;
  int32_t *tab = kiln_malloc(sizeof(int32_t) * (size_t)(n * p->kk + p->kk));
  if (!tab) {
    kiln_errf(e, KILN_ERR_NOMEM, "out of memory (convolution offsets)");
    return -1;
  }
  for (int64_t i = 0; i < n * p->kk + p->kk; i++) tab[i] = -1;
  p->shift = true;
  for (int64_t t = 0; t < p->kk; t++) {
    int64_t tap[3] = {t / (g->k[2] * g->k[1]), t / g->k[2] % g->k[1], t % g->k[2]};
    int64_t q = 0, sh = INT64_MIN;
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
          if (!inside) continue;
          tab[t * n + q] = (int32_t)off;
          if (sh == INT64_MIN) sh = off - q;
          p->shift &= off - q == sh;
        }
    tab[n * p->kk + t] = sh == INT64_MIN ? 0 : (int32_t)sh;
  }
  int id = cg_buf_const(cx, tab, sizeof(int32_t) * (size_t)(n * p->kk + p->kk), e);
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
  LLVMValueRef n0, n1, pb;     /* the tile's images [n0, n1), its pixel block */
  LLVMValueRef cbo;            /* the image's partial sums in cb (NB > 1), or NULL */
  LLVMValueRef xblk;           /* the tile's packed input: strip 0, input channel 0 */
  LLVMValueRef kc, k0, klen;   /* the chunk: index, first input channel, channels */
  LLVMValueRef mct;            /* channels of the tile */
  LLVMValueRef pf_dist;        /* floats from a weight row to the one prefetched */
} gemm_kern;

static LLVMValueRef c64(cg_kernel *k, int64_t v) { return cg_i64(k, v); }
static LLVMValueRef add(cg_kernel *k, LLVMValueRef a, LLVMValueRef b) { return cg_add(k, a, b); }
static LLVMValueRef addc(cg_kernel *k, LLVMValueRef a, int64_t c) {
  return c == 0 ? a : cg_add(k, a, c64(k, c));
}
static LLVMValueRef mulc(cg_kernel *k, LLVMValueRef a, int64_t c) {
  return c == 1 ? a : c == 0 ? c64(k, 0) : cg_mul(k, a, c64(k, c));
}

/* Index idx of the current image's partial sums. */
static LLVMValueRef cbi(gemm_kern *gk, LLVMValueRef idx) {
  return gk->cbo ? cg_add(gk->k, idx, gk->cbo) : idx;
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


/* Fed weights (training graphs, where they are inputs): a first kernel packs them into
 * pack_weights's panels on every run, into scratch.  Tiles: (chunk, panel); per row of the
 * chunk the panel's channels, zeros past OC. */
static void emit_wpack_rows(cg_kernel *k, const gemm_plan *p, const cg_conv_geom *g,
                            const cg_conv_weights *w, LLVMValueRef src, LLVMValueRef dst,
                            LLVMValueRef c, LLVMValueRef g0, LLVMValueRef klen, int ob, int obp) {
  LLVMBuilderRef b = k->b;
  bool per_dim = w->tap_strides[0] || w->tap_strides[1] || w->tap_strides[2];
  LLVMValueRef base = add(k, mulc(k, c, p->OCp * p->KC), cg_mul(k, g0, klen));
  LLVMValueRef ocb = addc(k, mulc(k, g0, w->oc_stride), w->off);
  cg_loop l;
  LLVMValueRef kin = cg_loop_begin(k, &l, c64(k, 0), klen, NULL, "kin");
  LLVMValueRef kr = add(k, mulc(k, c, p->KC), kin);
  LLVMValueRef ic = LLVMBuildUDiv(b, kr, c64(k, p->kk), "");
  LLVMValueRef t = LLVMBuildURem(b, kr, c64(k, p->kk), "");
  LLVMValueRef toff = mulc(k, t, w->tap_stride);
  if (per_dim) {
    LLVMValueRef kw = LLVMBuildURem(b, t, c64(k, g->k[2]), "");
    LLVMValueRef kh =
        LLVMBuildURem(b, LLVMBuildUDiv(b, t, c64(k, g->k[2]), ""), c64(k, g->k[1]), "");
    LLVMValueRef kd = LLVMBuildUDiv(b, t, c64(k, g->k[2] * g->k[1]), "");
    toff = add(k, add(k, mulc(k, kd, w->tap_strides[0]), mulc(k, kh, w->tap_strides[1])),
               mulc(k, kw, w->tap_strides[2]));
  }
  LLVMValueRef row = add(k, add(k, ocb, mulc(k, ic, w->ic_stride)), toff);
  LLVMValueRef out = add(k, base, mulc(k, kin, obp));
  for (int o = 0; o < obp; o++) {
    LLVMValueRef v = o < ob ? cg_load(k, k->t->f32, src, addc(k, row, o * w->oc_stride))
                            : LLVMConstNull(k->t->f32);
    cg_store(k, v, dst, addc(k, out, o));
  }
  cg_loop_end(k, &l);
}

static kiln_code emit_wpack_kernel(kiln_emit_ctx *cx, const char *label, const gemm_plan *p,
                                   const cg_conv_geom *g, const cg_conv_weights *w, int wk_buf,
                                   kiln_err *e) {
  char lbl[96];
  snprintf(lbl, sizeof lbl, "%s_wpack", label);
  cg_kernel k;
  KILN_TRY(cg_kernel_begin(cx, &k, lbl, 2, e));
  LLVMBuilderRef b = k.b;
  LLVMValueRef src = cg_arg(&k, 0), dst = cg_arg(&k, 1);
  int64_t n_pan = div_up(p->OC, p->MR), g0_last = (n_pan - 1) * p->MR;
  int ob_last = (int)(p->OC - g0_last);
  int obp_last = (int)(p->OCp - g0_last < p->MR ? p->OCp - g0_last : p->MR);
  cg_loop lt;
  LLVMValueRef t = cg_loop_begin(&k, &lt, k.lo, k.hi, NULL, "tile");
  LLVMValueRef pan = LLVMBuildURem(b, t, c64(&k, n_pan), "");
  LLVMValueRef c = LLVMBuildUDiv(b, t, c64(&k, n_pan), "");
  LLVMValueRef klen = cg_select(&k, LLVMBuildICmp(b, LLVMIntEQ, c, c64(&k, p->n_kc - 1), ""),
                                c64(&k, p->kc_last), c64(&k, p->KC));
  LLVMValueRef g0 = mulc(&k, pan, p->MR);
  if (ob_last == p->MR) {
    emit_wpack_rows(&k, p, g, w, src, dst, c, g0, klen, p->MR, p->MR);
  } else {
    cg_ifelse ie;
    cg_ifelse_begin(&k, &ie, LLVMBuildICmp(b, LLVMIntEQ, pan, c64(&k, n_pan - 1), ""));
    emit_wpack_rows(&k, p, g, w, src, dst, c, g0, klen, ob_last, obp_last);
    cg_ifelse_else(&k, &ie);
    emit_wpack_rows(&k, p, g, w, src, dst, c, g0, klen, p->MR, p->MR);
    cg_ifelse_end(&k, &ie);
  }
  cg_loop_end(&k, &lt);
  int bufs[2] = {w->buf, wk_buf};
  return cg_kernel_end(cx, &k, p->n_kc * n_pan, bufs, e);
}

/* ---- the packing kernel ----
 * Xp[((n * n_pb + pb) * S + s) * xs + kr * NR + j] = Xe(n, row kr, pixel pb*NC + s*NR + j):
 * each strip of a pixel block is contiguous over the rows (input channel, tap).  Pixel-
 * vectorized strips are whole vectors, zeros past the last pixel; a channel-vectorized strip's
 * rows are NR floats apart (NR < V), each written by a V-lane store of the row's first V pixels
 * whose lanes past NR the next row's store rewrites. */

/* V pixels of row kr from column col of the image's pixels: only the first `lanes`, or with
 * `mask` (plain only) the lanes it sets; gathered through the offset table when p->sub. */
static LLVMValueRef load_row(gemm_kern *gk, LLVMValueRef kr, LLVMValueRef col, LLVMValueRef mask,
                             unsigned lanes) {
  cg_kernel *k = gk->k;
  const gemm_plan *p = gk->p;
  LLVMBuilderRef b = k->b;
  unsigned V = (unsigned)p->V;
  /* row kr of the reduction is input channel kr / kk, tap kr % kk */
  LLVMValueRef ic = p->kk > 1 ? LLVMBuildUDiv(b, kr, c64(k, p->kk), "") : kr;
  LLVMValueRef plane = mulc(k, add(k, mulc(k, gk->n, p->C), ic), p->HW);
  if (p->sub) { /* gather through the offset table; -1 (padding) lanes read nothing: zeros */
    LLVMTypeRef ity = LLVMVectorType(k->t->i32, V), pty = LLVMVectorType(k->t->ptr, V);
    LLVMValueRef tap = p->kk > 1 ? LLVMBuildURem(b, kr, c64(k, p->kk), "") : c64(k, 0);
    LLVMValueRef ti = add(k, mulc(k, tap, p->ntab), col);
    ti = LLVMBuildLoad2(b, ity, cg_gep(k, k->t->i32, gk->tab, ti), "");
    LLVMSetAlignment(ti, 4);
    if (p->shift) { /* contiguous pixels from col + sh[tap]; lanes reading padding masked */
      LLVMValueRef sh = cg_load(k, k->t->i32, gk->tab, addc(k, tap, p->kk * p->ntab));
      LLVMValueRef at = add(k, add(k, plane, col), LLVMBuildSExt(b, sh, k->t->i64, ""));
      /* not inbounds: where the first lanes are padding, at may precede X */
      LLVMValueRef ptr = LLVMBuildGEP2(b, k->t->f32, gk->x, &at, 1, "");
      LLVMValueRef args[4] = {ptr, cg_i32(k, 4),
                              LLVMBuildICmp(b, LLVMIntSGE, ti, LLVMConstNull(ity), ""),
                              LLVMConstNull(gk->vty)};
      return cg_intrinsic(k, "llvm.masked.load", (LLVMTypeRef[]){gk->vty, k->t->ptr}, 2, args,
                          4);
    }
    /* Every lane loads (padding lanes element 0 of the plane), then padding is zeroed: a
     * gather with a variable mask becomes branches per lane where gathers are slow (Zen 3),
     * an unmasked one straight-line loads. */
    LLVMValueRef keep = LLVMBuildICmp(b, LLVMIntSGE, ti, LLVMConstNull(ity), "");
    LLVMValueRef idx = LLVMBuildSExt(b, cg_select(k, keep, ti, LLVMConstNull(ity)),
                                     LLVMVectorType(k->t->i64, V), "");
    LLVMValueRef ptrs = LLVMBuildInBoundsGEP2(b, k->t->f32, cg_gep(k, k->t->f32, gk->x, plane),
                                              &idx, 1, "");
    LLVMValueRef val =
        cg_intrinsic(k, "llvm.masked.gather", (LLVMTypeRef[]){gk->vty, pty}, 2,
                     (LLVMValueRef[]){ptrs, cg_i32(k, 4), cg_lane_mask(k, V, V),
                                      LLVMGetPoison(gk->vty)}, 4);
    return cg_select(k, keep, val, LLVMConstNull(gk->vty));
  }
  if (!mask) return cg_vload(k, gk->x, add(k, plane, col), V, lanes);
  LLVMValueRef args[4] = {cg_gep(k, k->t->f32, gk->x, add(k, plane, col)), cg_i32(k, 4), mask,
                          LLVMConstNull(gk->vty)};
  return cg_intrinsic(k, "llvm.masked.load", (LLVMTypeRef[]){gk->vty, k->t->ptr}, 2, args, 4);
}

/* Pixel-vectorized: vector j of the pixel block (strip j / NV, its vector j % NV) of row kr. */
static void pack_vector(gemm_kern *gk, LLVMValueRef pb, LLVMValueRef kr, LLVMValueRef j,
                        unsigned lanes) {
  cg_kernel *k = gk->k;
  const gemm_plan *p = gk->p;
  LLVMBuilderRef b = k->b;
  LLVMValueRef val = load_row(gk, kr, add(k, gk->p0, mulc(k, j, p->V)), NULL, lanes);
  LLVMValueRef st = LLVMBuildUDiv(b, j, c64(k, p->NV), "");
  LLVMValueRef v = LLVMBuildURem(b, j, c64(k, p->NV), "");
  LLVMValueRef dst;
  if (p->tile_pack) /* the tile's stack buffer: [strip][kr - k0][NR] */
    dst = add(k, mulc(k, st, p->xs), mulc(k, LLVMBuildNSWSub(b, kr, gk->k0, ""), p->NR));
  else
    dst = add(k, mulc(k, add(k, mulc(k, add(k, mulc(k, gk->n, p->n_pb), pb), p->S), st), p->xs),
              mulc(k, kr, p->NR));
  astore(gk, val, gk->xp, add(k, dst, mulc(k, v, p->V)));
}

/* Packs rows [r0, r1) of pixel block pb: pixel-vectorized, `nvec` whole vectors each, then on
 * the last pixel block the partial one; channel-vectorized, `nvec` strips (groups of NR
 * pixels, the last one maybe partial) row by row, the last row with `mask_last` storing only
 * its NR floats (the next row belongs to another pack tile). */
static void emit_pack_rows(gemm_kern *gk, LLVMValueRef pb, LLVMValueRef r0, LLVMValueRef r1,
                           LLVMValueRef last_pb, LLVMValueRef nvec, bool mask_last) {
  cg_kernel *k = gk->k;
  const gemm_plan *p = gk->p;
  LLVMBuilderRef b = k->b;
  cg_loop lc, lj;
  if (!p->ck) {
    int64_t tail = p->P % p->V;
    LLVMValueRef ic = cg_loop_begin(k, &lc, r0, r1, NULL, "ic");
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
    return;
  }
  unsigned V = (unsigned)p->V;
  LLVMValueRef s = cg_loop_begin(k, &lj, c64(k, 0), nvec, NULL, "s");
  LLVMValueRef col = add(k, gk->p0, mulc(k, s, p->NR)), mask = NULL;
  if (!p->sub) { /* lanes inside the image: the last groups' loads stop at its end */
    LLVMValueRef iota[64], lim[64];
    for (unsigned l = 0; l < V; l++) iota[l] = c64(k, l), lim[l] = c64(k, p->P);
    LLVMValueRef lane = LLVMBuildAdd(b, cg_splat(k, col, V), LLVMConstVector(iota, V), "");
    mask = LLVMBuildICmp(b, LLVMIntSLT, lane, LLVMConstVector(lim, V), "");
  }
  LLVMValueRef base;
  if (p->tile_pack) /* [strip][kr - k0][NR] */
    base = LLVMBuildNSWSub(b, mulc(k, s, p->xs), mulc(k, gk->k0, p->NR), "");
  else
    base = mulc(k, add(k, mulc(k, add(k, mulc(k, gk->n, p->n_pb), pb), p->S), s), p->xs);
  LLVMValueRef hi = mask_last ? LLVMBuildNSWSub(b, r1, c64(k, 1), "") : r1;
  LLVMValueRef kr = cg_loop_begin(k, &lc, r0, hi, NULL, "kr");
  cg_vstore(k, load_row(gk, kr, col, mask, V), gk->xp, add(k, base, mulc(k, kr, p->NR)), V, V);
  cg_loop_end(k, &lc);
  if (mask_last)
    cg_vstore(k, load_row(gk, hi, col, mask, V), gk->xp, add(k, base, mulc(k, hi, p->NR)), V,
              (unsigned)p->NR);
  cg_loop_end(k, &lj);
  (void)last_pb;
}

/* What emit_pack_rows packs per row of pixel block pb: vectors, or ck strips. */
static LLVMValueRef pack_count(gemm_kern *gk, LLVMValueRef last_pb) {
  cg_kernel *k = gk->k;
  const gemm_plan *p = gk->p;
  if (p->ck) return cg_select(k, last_pb, c64(k, div_up(p->nc_last, p->NR)), c64(k, p->S));
  return cg_select(k, last_pb, c64(k, p->nc_last / p->V), c64(k, p->NC / p->V));
}

/* Tiles: (image, pixel block, group of PACK_CH rows). */
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
  LLVMValueRef c0 = mulc(&k, cgi, PACK_CH);
  emit_pack_rows(&gk, pb, c0, cg_min(&k, addc(&k, c0, PACK_CH), c64(&k, p->K)), last_pb,
                 pack_count(&gk, last_pb), true);
  cg_loop_end(&k, &lt);
  int bufs[3] = {x_buf, xp_buf, tab_buf};
  return cg_kernel_end(cx, &k, p->N * p->n_pb * n_cg, bufs, e);
}

/* ---- the GEMM kernel ---- */

/* The epilogue's arithmetic on a vector of sums (bias, scale, shift: per-lane parameters or
 * NULL; res: the residual or NULL).  Both micro-kernels apply it to V-lane vectors, so every
 * element gets the same operations whichever computed it. */
static LLVMValueRef epi_apply(gemm_kern *gk, LLVMValueRef val, LLVMValueRef bias,
                              LLVMValueRef scale, LLVMValueRef shift, LLVMValueRef res) {
  LLVMBuilderRef b = gk->k->b;
  if (bias) val = LLVMBuildFAdd(b, val, bias, "");
  if (scale && shift) {
    LLVMTypeRef ty = gk->vty;
    val = cg_intrinsic(gk->k, "llvm.fmuladd", &ty, 1, (LLVMValueRef[]){val, scale, shift}, 3);
  } else if (scale) {
    val = LLVMBuildFMul(b, val, scale, "");
  } else if (shift) {
    val = LLVMBuildFAdd(b, val, shift, "");
  }
  if (res) val = LLVMBuildFAdd(b, val, res, "");
  if (gk->epi->act) val = cg_conv_activate(gk->k, gk->epi, val);
  return val;
}

/* The epilogue of rows [r0, r0 + ob) of the tile at columns [col0, col0 + nv*V) (the last
 * vector with `lanes` lanes), and the only store of those elements to Y. */
static void emit_epilogue(gemm_kern *gk, LLVMValueRef *cur, LLVMValueRef r0, int ob,
                          LLVMValueRef col0, int nv, int lanes) {
  cg_kernel *k = gk->k;
  const gemm_plan *p = gk->p;
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
      LLVMValueRef yi = addc(k, yrow, (int64_t)v * p->V);
      LLVMValueRef res = gk->res ? cg_vload(k, gk->res, yi, V, n) : NULL;
      cg_vstore(k, epi_apply(gk, cur[o * nv + v], bias, scale, shift, res), gk->y, yi, V, n);
    }
  }
}

/* Prefetching the weights (into L2): each row of the micro-kernel touches the same row of the
 * panel after this one, the next panel of the chunk or after the tile's last one its first
 * panel of the next chunk, so that a panel streams in while the one before is used by every
 * pixel strip instead of all at once under the first (small images have few strips per panel,
 * and large weights come from memory: a 1024-channel 3x3 at 7x7, 38 MB of weights, 13.3 ->
 * 12.0 ms on Zen 3; no change measured where the weights stay in cache).  The distance, in
 * floats, from this panel's weight rows to those. */
static LLVMValueRef prefetch_dist(gemm_kern *gk, LLVMValueRef r0, LLVMValueRef wb) {
  cg_kernel *k = gk->k;
  const gemm_plan *p = gk->p;
  LLVMBuilderRef b = k->b;
  LLVMValueRef in_chunk = mulc(k, gk->klen, p->MR);
  if (p->n_kc == 1) return in_chunk;
  LLVMValueRef kn = addc(k, gk->kc, 1);
  LLVMValueRef klen_n = cg_select(k, LLVMBuildICmp(b, LLVMIntEQ, kn, c64(k, p->n_kc - 1), ""),
                                  c64(k, p->kc_last), c64(k, p->KC));
  LLVMValueRef next = add(k, mulc(k, addc(k, gk->k0, p->KC), p->OCp), cg_mul(k, gk->m0, klen_n));
  LLVMValueRef more = LLVMBuildOr(
      b, LLVMBuildICmp(b, LLVMIntSLT, addc(k, r0, p->MR), gk->mct, ""),
      LLVMBuildICmp(b, LLVMIntEQ, gk->kc, c64(k, p->n_kc - 1), ""), "");
  return cg_select(k, more, in_chunk, LLVMBuildNSWSub(b, next, wb, ""));
}

static void emit_prefetch(gemm_kern *gk, LLVMValueRef wk) {
  cg_kernel *k = gk->k;
  if (!gk->pf_dist) return;
  LLVMValueRef at = add(k, wk, gk->pf_dist); /* not inbounds: past the end after the last */
  LLVMValueRef ptr = LLVMBuildGEP2(k->b, k->t->f32, gk->w, &at, 1, "");
  LLVMTypeRef pty = k->t->ptr;
  cg_intrinsic(k, "llvm.prefetch", &pty, 1,
               (LLVMValueRef[]){ptr, cg_i32(k, 0), cg_i32(k, 2), cg_i32(k, 1)}, 4);
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
  emit_prefetch(gk, wk);
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
/* One row of the reduction into the accumulators cur[] (emit_step, emit_step_ck); x, y are
 * the micro-kernel's shape arguments. */
typedef void (*gemm_step_fn)(gemm_kern *gk, LLVMValueRef *cur, LLVMValueRef wb, LLVMValueRef xb,
                             LLVMValueRef kk, int x, int y);

/* The chunk's rows: UNROLL per iteration, then the rest one by one; the accumulators live in
 * the allocas acc[] between iterations (promoted to registers) and end in cur[]. */
static void emit_kloop(gemm_kern *gk, LLVMValueRef *acc, LLVMValueRef *cur, int n_acc,
                       LLVMValueRef wb, LLVMValueRef xb, gemm_step_fn step, int x, int y) {
  cg_kernel *k = gk->k;
  LLVMBuilderRef b = k->b;
  LLVMValueRef nmain = LLVMBuildSDiv(b, gk->klen, c64(k, UNROLL), "");
  for (int pass = 0; pass < 2; pass++) {
    cg_loop l;
    LLVMValueRef lo = pass ? mulc(k, nmain, UNROLL) : c64(k, 0);
    LLVMValueRef hi = pass ? gk->klen : nmain;
    LLVMValueRef i = cg_loop_begin(k, &l, lo, hi, NULL, pass ? "kr" : "k");
    for (int a = 0; a < n_acc; a++) cur[a] = LLVMBuildLoad2(b, gk->vty, acc[a], "");
    if (pass)
      step(gk, cur, wb, xb, i, x, y);
    else
      for (int u = 0; u < UNROLL; u++) step(gk, cur, wb, xb, addc(k, mulc(k, i, UNROLL), u), x, y);
    for (int a = 0; a < n_acc; a++) LLVMBuildStore(b, cur[a], acc[a]);
    cg_loop_end(k, &l);
  }
  for (int a = 0; a < n_acc; a++) cur[a] = LLVMBuildLoad2(b, gk->vty, acc[a], "");
}

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
                         aload(gk, gk->cb, cbi(gk, addc(k, add(k, mulc(k, addc(k, r0, o), p->NC),
                                                             scol), (int64_t)v * p->V))));
      LLVMBuildStore(b, init, acc[o * nv + v]);
    }
  LLVMValueRef wb = add(k, mulc(k, gk->k0, p->OCp), cg_mul(k, add(k, gk->m0, r0), gk->klen));
  LLVMValueRef xb = p->tile_pack ? mulc(k, s, p->xs)
                                 : add(k, add(k, gk->xblk, mulc(k, s, p->xs)),
                                       mulc(k, gk->k0, p->NR));
  gk->pf_dist = prefetch_dist(gk, r0, wb);
  emit_kloop(gk, acc, cur, n_acc, wb, xb, emit_step, ob, nv);
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
             cbi(gk, addc(k, add(k, mulc(k, addc(k, r0, o), p->NC), scol), (int64_t)v * p->V)));
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

/* ---- the channel-vectorized micro-kernel ----
 * Accumulator (j, v) holds pixel j of the group for channels r0 + v*V + lane; per row nv
 * weight vectors, NR broadcast input values and NR x nv FMAs. */

/* The epilogue of channels [m0 + r0, + nv*V) (the last vector's `lanes` real) at pixels
 * [pix0, pix0 + np): per-channel parameters as vectors, the residual read and Y written per
 * lane (channels are P floats apart in Y). */
static void emit_epilogue_ck(gemm_kern *gk, LLVMValueRef *cur, LLVMValueRef r0, int nv,
                             int lanes, LLVMValueRef pix0, int np) {
  cg_kernel *k = gk->k;
  const gemm_plan *p = gk->p;
  LLVMBuilderRef b = k->b;
  unsigned V = (unsigned)p->V;
  for (int v = 0; v < nv; v++) {
    unsigned n = v == nv - 1 ? (unsigned)lanes : V;
    LLVMValueRef oc = addc(k, add(k, gk->m0, r0), (int64_t)v * p->V);
    LLVMValueRef bias = NULL, scale = NULL, shift = NULL;
    if (gk->bias) bias = cg_vload(k, gk->bias, oc, V, n);
    if (gk->scale) scale = cg_vload(k, gk->scale, oc, V, n);
    if (gk->shift) shift = cg_vload(k, gk->shift, oc, V, n);
    LLVMValueRef ybase = add(k, mulc(k, add(k, mulc(k, gk->n, p->OC), oc), p->P), pix0);
    for (int j = 0; j < np; j++) {
      LLVMValueRef yj = addc(k, ybase, j), res = NULL;
      if (gk->res) {
        res = LLVMConstNull(gk->vty);
        for (unsigned l = 0; l < n; l++)
          res = LLVMBuildInsertElement(
              b, res, cg_load(k, k->t->f32, gk->res, addc(k, yj, (int64_t)l * p->P)),
              cg_i32(k, (int32_t)l), "");
      }
      LLVMValueRef val = epi_apply(gk, cur[j * nv + v], bias, scale, shift, res);
      for (unsigned l = 0; l < n; l++)
        cg_store(k, LLVMBuildExtractElement(b, val, cg_i32(k, (int32_t)l), ""), gk->y,
                 addc(k, yj, (int64_t)l * p->P));
    }
  }
}

/* One row of the channel-vectorized micro-kernel. */
static void emit_step_ck(gemm_kern *gk, LLVMValueRef *cur, LLVMValueRef wb, LLVMValueRef xb,
                         LLVMValueRef kk, int nv, int np) {
  cg_kernel *k = gk->k;
  const gemm_plan *p = gk->p;
  LLVMValueRef wv[4];
  LLVMValueRef xk = add(k, xb, mulc(k, kk, p->NR)), wk = add(k, wb, mulc(k, kk, nv * p->V));
  for (int v = 0; v < nv; v++)
    wv[v] = cg_vload(k, gk->w, addc(k, wk, (int64_t)v * p->V), (unsigned)p->V, (unsigned)p->V);
  emit_prefetch(gk, wk);
  for (int j = 0; j < np; j++) {
    LLVMValueRef xs = cg_splat(k, cg_load(k, k->t->f32, gk->xp, addc(k, xk, j)), (unsigned)p->V);
    for (int v = 0; v < nv; v++) {
      LLVMValueRef *c = &cur[j * nv + v];
      *c = cg_intrinsic(k, "llvm.fma", &gk->vty, 1, (LLVMValueRef[]){wv[v], xs, *c}, 3);
    }
  }
}

/* Channels [r0, r0 + nv*V) of the tile (one zero-padded weight panel; the last vector's
 * `lanes` real) times pixel group s (np pixels) over the chunk's rows. */
static void emit_micro_ck(gemm_kern *gk, LLVMValueRef r0, int nv, int lanes, LLVMValueRef s,
                          int np) {
  cg_kernel *k = gk->k;
  const gemm_plan *p = gk->p;
  LLVMBuilderRef b = k->b;
  int n_acc = np * nv;
  LLVMValueRef acc[64], cur[64];
  LLVMValueRef scol = mulc(k, s, p->NR); /* the group's first pixel in the tile */
  for (int a = 0; a < n_acc; a++) acc[a] = cg_entry_alloca(k, gk->vty);
  /* partial sums at cb[(pixel in tile) * MC + channel in tile] */
  LLVMValueRef first = p->n_kc > 1 ? LLVMBuildICmp(b, LLVMIntEQ, gk->kc, c64(k, 0), "") : NULL;
  for (int j = 0; j < np; j++)
    for (int v = 0; v < nv; v++) {
      LLVMValueRef init = LLVMConstNull(gk->vty);
      if (first)
        init = cg_select(k, first, init,
                         aload(gk, gk->cb, cbi(gk, add(k, mulc(k, addc(k, scol, j), p->MC),
                                                       addc(k, r0, (int64_t)v * p->V)))));
      LLVMBuildStore(b, init, acc[j * nv + v]);
    }
  LLVMValueRef wb = add(k, mulc(k, gk->k0, p->OCp), cg_mul(k, add(k, gk->m0, r0), gk->klen));
  LLVMValueRef xb = p->tile_pack ? mulc(k, s, p->xs)
                                 : add(k, add(k, gk->xblk, mulc(k, s, p->xs)),
                                       mulc(k, gk->k0, p->NR));
  gk->pf_dist = prefetch_dist(gk, r0, wb);
  emit_kloop(gk, acc, cur, n_acc, wb, xb, emit_step_ck, nv, np);
  LLVMValueRef pix0 = add(k, gk->p0, scol);
  if (p->n_kc == 1) {
    emit_epilogue_ck(gk, cur, r0, nv, lanes, pix0, np);
    return;
  }
  cg_ifelse ie;
  cg_ifelse_begin(k, &ie, LLVMBuildICmp(b, LLVMIntEQ, gk->kc, c64(k, p->n_kc - 1), ""));
  emit_epilogue_ck(gk, cur, r0, nv, lanes, pix0, np);
  cg_ifelse_else(k, &ie);
  for (int j = 0; j < np; j++)
    for (int v = 0; v < nv; v++)
      astore(gk, cur[j * nv + v], gk->cb,
             cbi(gk, add(k, mulc(k, addc(k, scol, j), p->MC), addc(k, r0, (int64_t)v * p->V))));
  cg_ifelse_end(k, &ie);
}

/* One channel panel against every full pixel group, then on the last pixel block the
 * smaller last group. */
static void emit_groups_ck(gemm_kern *gk, LLVMValueRef r0, int nv, int lanes, LLVMValueRef ngrp,
                           LLVMValueRef last_pb) {
  cg_kernel *k = gk->k;
  const gemm_plan *p = gk->p;
  cg_loop l;
  LLVMValueRef s = cg_loop_begin(k, &l, c64(k, 0), ngrp, NULL, "grp");
  emit_micro_ck(gk, r0, nv, lanes, s, p->NR);
  cg_loop_end(k, &l);
  int64_t tail = p->P % p->NR;
  if (tail) {
    cg_if c;
    cg_if_begin(k, &c, last_pb);
    emit_micro_ck(gk, r0, nv, lanes, ngrp, (int)tail);
    cg_if_end(k, &c);
  }
}

/* One channel panel (rows [r0, r0 + MR) of the tile, or the narrower last: ob channels, with ck
 * nv vectors, the last with `lanes`) against the strips of every image of the tile. */
static void emit_panel(gemm_kern *gk, LLVMValueRef r0, int ob, int nv, int lanes,
                       LLVMValueRef nstrip, LLVMValueRef last_pb) {
  cg_kernel *k = gk->k;
  const gemm_plan *p = gk->p;
  cg_loop l;
  if (p->NB > 1) {
    gk->n = cg_loop_begin(k, &l, gk->n0, gk->n1, NULL, "img");
    gk->cbo = mulc(k, LLVMBuildNSWSub(k->b, gk->n, gk->n0, ""), p->MC * p->NC);
  }
  if (!p->tile_pack) gk->xblk = mulc(k, add(k, mulc(k, gk->n, p->n_pb), gk->pb), p->S * p->xs);
  if (p->ck)
    emit_groups_ck(gk, r0, nv, lanes, nstrip, last_pb);
  else
    emit_strips(gk, r0, ob, nstrip, last_pb);
  if (p->NB > 1) cg_loop_end(k, &l);
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
  gk->mct = cg_select(k, last_mb, c64(k, p->mc_last), c64(k, p->MC));
  LLVMValueRef nstrip = cg_select(k, last_pb, c64(k, p->nc_last / p->NR), c64(k, p->NC / p->NR));
  cg_loop l;
  gk->kc = cg_loop_begin(k, &l, c64(k, 0), c64(k, p->n_kc), NULL, "kc");
  gk->k0 = mulc(k, gk->kc, p->KC);
  LLVMValueRef last_kc = LLVMBuildICmp(b, LLVMIntEQ, gk->kc, c64(k, p->n_kc - 1), "");
  gk->klen = p->n_kc == 1 ? c64(k, p->kc_last)
                          : cg_select(k, last_kc, c64(k, p->kc_last), c64(k, p->KC));
  if (p->tile_pack)
    emit_pack_rows(gk, pb, gk->k0, add(k, gk->k0, gk->klen), last_pb, pack_count(gk, last_pb),
                   false);
  int64_t rt = p->OC % p->MR;
  cg_loop lb;
  LLVMValueRef i = cg_loop_begin(k, &lb, c64(k, 0), nblk, NULL, "ob");
  emit_panel(gk, mulc(k, i, p->MR), p->MR, p->NV, p->V, nstrip, last_pb);
  cg_loop_end(k, &lb);
  if (rt) {
    cg_if c;
    cg_if_begin(k, &c, last_mb);
    int nv = (int)div_up(rt, p->V);
    emit_panel(gk, mulc(k, nblk, p->MR), (int)rt, nv, (int)(rt - (int64_t)(nv - 1) * p->V),
               nstrip, last_pb);
    cg_if_end(k, &c);
  }
  cg_loop_end(k, &l);
}

kiln_code cg_gemm_conv_emit(kiln_emit_ctx *cx, const char *label, const cg_conv_geom *geom,
                            const cg_conv_weights *w, const cg_conv_epilogue *epi, int x_buf,
                            int y_buf, kiln_err *e) {
  assert(cg_gemm_conv_applicable(cx, geom, w, epi));
  gemm_plan p;
  make_plan(cx, geom, cg_gemm_kernel(cx), &p);
  int wk_buf;
  if (w->data) {
    wk_buf = pack_weights(cx, &p, geom, w, e);
    if (wk_buf < 0) return e->code;
  } else {
    wk_buf = cg_buf_scratch(cx, sizeof(float) * (size_t)(p.OCp * p.K), e);
    if (wk_buf < 0) return e->code;
    KILN_TRY(emit_wpack_kernel(cx, label, &p, geom, w, wk_buf, e));
  }
  int tab_buf = -1;
  if (p.sub) {
    tab_buf = offset_table(cx, &p, geom, e);
    if (tab_buf < 0) return e->code;
  }
  /* the GEMM reads X and packs it itself, or reads X packed by a first kernel */
  int xk_buf = x_buf;
  if (!p.tile_pack) {
    xk_buf = cg_buf_scratch(cx, sizeof(float) * (size_t)(p.N * p.n_pb * p.S * p.xs), e);
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
    gk.xp = cg_entry_alloca(&k, LLVMArrayType(k.t->f32, (unsigned)(p.S * p.xs)));
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
    gk.cb = cg_entry_alloca(&k, LLVMArrayType(k.t->f32, (unsigned)(p.NB * p.MC * p.NC)));
    LLVMSetAlignment(gk.cb, 64);
  }

  /* tile = ((nb * n_mb + mb) * n_pb + pb), or with channel blocks fastest
   * ((nb * n_pb + pb) * n_mb + mb), over images [nb * NB, + NB) */
  int64_t n_tiles = p.n_nb * p.n_mb * p.n_pb;
  cg_loop lt;
  LLVMValueRef t = cg_loop_begin(&k, &lt, k.lo, k.hi, NULL, "tile");
  LLVMBuilderRef b = k.b;
  int64_t inner = p.pb_inner ? p.n_pb : p.n_mb, outer = p.pb_inner ? p.n_mb : p.n_pb;
  LLVMValueRef i0 = LLVMBuildURem(b, t, c64(&k, inner), "");
  LLVMValueRef rest = LLVMBuildUDiv(b, t, c64(&k, inner), "");
  LLVMValueRef i1 = LLVMBuildURem(b, rest, c64(&k, outer), "");
  gk.n0 = mulc(&k, LLVMBuildUDiv(b, rest, c64(&k, outer), ""), p.NB);
  gk.n1 = cg_min(&k, addc(&k, gk.n0, p.NB), c64(&k, p.N));
  gk.n = gk.n0;
  LLVMValueRef pb = p.pb_inner ? i0 : i1, mb = p.pb_inner ? i1 : i0;
  gk.pb = pb;
  gk.m0 = mulc(&k, mb, p.MC);
  gk.p0 = mulc(&k, pb, p.NC);
  emit_tile(&gk, mb, pb);
  cg_loop_end(&k, &lt);
  return cg_kernel_end(cx, &k, n_tiles, bufs, e);
}
