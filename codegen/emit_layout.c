/* emit_layout.c — emitters of the blocked-layout ops (ir/ops/layout.h):
 *  - ToBlocked / FromBlocked: one tile per (n, channel block, row); each pixel's b channels
 *    are gathered into (or scattered from) one vector.
 *  - BlockedConv: a direct convolution with the vector along output channels.  A tile is RB
 *    output rows of OCV channel blocks; it runs over column blocks of P pixels and holds
 *    RB x P x OCV vectors of b channels in registers: for each input channel block, kernel row,
 *    kernel column and input channel ci, it loads the OCV weight vectors of (ci, tap) and
 *    broadcasts each pixel's input value, one FMA per (pixel, vector).  Strides cost nothing
 *    (a broadcast reads any address) and every store is a whole vector; 1x1 convolutions need
 *    no packing.  A padded input is first copied into a zero-bordered blocked scratch (one
 *    kernel, rows in parallel).  Each output element sums over (channel block, kh, kw, ci) in
 *    that order whatever the blocking, so results are bitwise independent of the thread count.
 * The register block (OCV, RB, P) is chosen by a small cost model from the register count,
 * or measured by `kiln tune`. */
#include <string.h>

#include "codegen/conv_gen.h"
#include "codegen/emit_copy.h"
#include "codegen/tune.h"
#include "ir/ops/fused.h"
#include "ir/ops/layout.h"
#include "ir/ops/nn_window.h"

static LLVMValueRef cst(cg_kernel *k, int64_t v) { return cg_i64(k, v); }

/* ---- ToBlocked / FromBlocked ---- */

static kiln_code emit_relayout(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                               bool to_blocked, kiln_err *e) {
  int64_t bl;
  KILN_TRY(kiln_block_get(n, &bl, e));
  const kiln_value *blk = to_blocked ? ir_out(g, n, 0) : ir_in(g, n, 0);
  int64_t N = blk->shape.d[0], CB = blk->shape.d[1], H = blk->shape.d[2], W = blk->shape.d[3];
  int64_t HW = H * W;
  unsigned B = (unsigned)bl;
  cg_kernel k;
  KILN_TRY(cg_kernel_begin(cx, &k, to_blocked ? "to_blocked" : "from_blocked", 2, e));
  LLVMBuilderRef b = k.b;
  LLVMValueRef x = cg_arg(&k, 0), y = cg_arg(&k, 1);
  cg_loop lt, lw;
  LLVMValueRef t = cg_loop_begin(&k, &lt, k.lo, k.hi, cst(&k, 1), "t");
  /* tile t = (n * CB + cb) * H + h: the blocked row starts at t * W * b; plain channel
   * cb * b + ci of image n, row h starts at ((n * CB + cb) * b + ci) * HW + h * W */
  LLVMValueRef h = LLVMBuildURem(b, t, cst(&k, H), "");
  LLVMValueRef ncb = LLVMBuildUDiv(b, t, cst(&k, H), "");
  LLVMValueRef brow = cg_mul(&k, t, cst(&k, W * bl));
  LLVMValueRef prow = cg_add(&k, cg_mul(&k, ncb, cst(&k, bl * HW)), cg_mul(&k, h, cst(&k, W)));
  LLVMValueRef w = cg_loop_begin(&k, &lw, cst(&k, 0), cst(&k, W), cst(&k, 1), "w");
  LLVMValueRef bi = cg_add(&k, brow, cg_mul(&k, w, cst(&k, bl)));
  LLVMValueRef pi = cg_add(&k, prow, w);
  if (to_blocked) {
    LLVMValueRef v = LLVMGetUndef(LLVMVectorType(k.t->f32, B));
    for (unsigned ci = 0; ci < B; ci++)
      v = LLVMBuildInsertElement(
          b, v, cg_load(&k, k.t->f32, x, cg_add(&k, pi, cst(&k, (int64_t)ci * HW))),
          cg_i32(&k, (int32_t)ci), "");
    cg_vstore(&k, v, y, bi, B, B);
  } else {
    LLVMValueRef v = cg_vload(&k, x, bi, B, B);
    for (unsigned ci = 0; ci < B; ci++)
      cg_store(&k, LLVMBuildExtractElement(b, v, cg_i32(&k, (int32_t)ci), ""), y,
               cg_add(&k, pi, cst(&k, (int64_t)ci * HW)));
  }
  cg_loop_end(&k, &lw);
  cg_loop_end(&k, &lt);
  return cg_kernel_end(cx, &k, N * CB * H,
                       (int[]){cg_buf_value(cx, n->in[0]), cg_buf_value(cx, n->out[0])}, e);
}

static kiln_code emit_ToBlocked(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                                kiln_err *e) {
  return emit_relayout(cx, g, n, true, e);
}

static kiln_code emit_FromBlocked(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                                  kiln_err *e) {
  return emit_relayout(cx, g, n, false, e);
}

/* ---- BlockedConv ---- */

typedef struct bconv {
  int64_t N, ICB, OCB, b;      /* channel blocks of b channels */
  int64_t H, W, OH, OW;        /* input (unpadded) and output sizes */
  int64_t KH, KW, sh, sw, dh, dw, pt, pl;
  int64_t Hp, Wp;              /* the input as the kernel reads it (padded or not) */
  bool padded, avx512;
  int OCV, RB, P;              /* register block: OCV channel blocks x RB rows x P pixels */
  cg_conv_epilogue epi;
} bconv;

/* Register block: OCV output-channel vectors x RB rows x P pixels, so that RB * P * OCV
 * accumulators, OCV weight vectors, a broadcast and two spare registers fit (with none spare,
 * LLVM's scheduler hoists the next step's loads and spills accumulators); the cost is the
 * estimated cycles of one (input channel, tap) step over the whole output, counting two FMAs
 * and two loads a cycle and at least 4 cycles per block (an FMA chain's latency).  Every
 * block reads all the weights of its OCV channel blocks again: when they outgrow half of L1
 * they come from L2, counted as two loads each; more rows per block amortize them (the 7x7
 * layers of a ResNet, whose rows hold few pixels).  `kiln tune` measures the model's choice
 * against its neighbours (codegen/tune.h, family "blocked": ocb = OCV, rb = RB, nv = P). */
#define BC_MAX_RB 4

static int vector_regs(const bconv *c) {
  int lanes = c->avx512 ? 16 : 8, regs = c->avx512 ? 32 : 16;
  return regs / (int)((c->b + lanes - 1) / lanes);
}

static bool block_fits(const void *plan, kiln_tune_block t) {
  const bconv *c = plan;
  return t.ocb >= 1 && t.ocb <= 4 && c->OCB % t.ocb == 0 && t.rb >= 1 && t.rb <= BC_MAX_RB &&
         t.rb <= c->OH && t.nv >= 1 && t.nv <= c->OW &&
         t.rb * t.nv * t.ocb + t.ocb + 3 <= vector_regs(c);
}

/* Cycles of one block of rr rows x q pixels (see above). */
static double block_cycles(const bconv *c, int ocv, int64_t rr, int64_t q) {
  int64_t wbytes = c->ICB * c->KH * c->KW * c->b * c->b * ocv * 4;
  double wload = wbytes > 16 * 1024 ? 2.0 : 1.0;
  double fma = (double)(rr * q * ocv) / 2, ld = ((double)(rr * q) + ocv * wload) / 2;
  double t = fma > ld ? fma : ld;
  return t < 4 ? 4 : t;
}

static double block_cost(const void *plan, const void *machine, int ocv, int rb, int p) {
  (void)machine;
  const bconv *c = plan;
  double cyc = 0;
  for (int64_t oh = 0; oh < c->OH; oh += rb)
    for (int64_t ow = 0; ow < c->OW; ow += p)
      cyc += block_cycles(c, ocv, c->OH - oh < rb ? c->OH - oh : rb,
                          c->OW - ow < p ? c->OW - ow : p);
  return cyc * (double)(c->OCB / ocv);
}

static void choose_block(kiln_emit_ctx *cx, bconv *c, const cg_conv_geom *geom) {
  double best = 0;
  c->OCV = c->RB = c->P = 1;
  for (int ocv = 1; ocv <= 4; ocv++)
    for (int rb = 1; rb <= BC_MAX_RB && rb <= c->OH; rb++) {
      int pmax = (vector_regs(c) - ocv - 3) / (ocv * rb);
      if (c->OCB % ocv || pmax < 1) continue;
      /* several rows only where one row holds fewer pixels than the registers do: on long
       * rows (56, 28 columns) taller blocks measured slower (their input lines are further
       * apart) although the model counts fewer weight loads */
      if (rb > 1 && c->OW >= (vector_regs(c) - ocv - 3) / ocv) continue;
      int64_t tiles = (c->OW + pmax - 1) / pmax;
      int p = (int)((c->OW + tiles - 1) / tiles);
      double cyc = block_cost(c, NULL, ocv, rb, p);
      if (best == 0 || cyc < best * 0.999) {
        best = cyc;
        c->OCV = ocv;
        c->RB = rb;
        c->P = p;
      }
    }
  int ocb = c->OCV, rb = c->RB, nv = c->P;
  cg_tune_conv(cx, &(cg_tune_query){.geom = geom, .V = (int)c->b, .packed = true,
                                    .max_acc = vector_regs(c), .max_rb = BC_MAX_RB,
                                    .cost = block_cost, .plan = c, .family = "blocked",
                                    .lim_ocb = 4, .lim_rb = BC_MAX_RB, .lim_nv = c->OW,
                                    .fits = block_fits},
               &ocb, &rb, &nv);
  c->OCV = ocb;
  c->RB = rb;
  c->P = nv;
}

static kiln_code bconv_init(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                            bconv *c, kiln_err *e) {
  memset(c, 0, sizeof *c);
  KILN_TRY(kiln_block_get(n, &c->b, e));
  const kiln_value *x = ir_in(g, n, 0), *w = ir_in(g, n, 1), *y = ir_out(g, n, 0);
  c->N = x->shape.d[0];
  c->ICB = x->shape.d[1];
  c->H = x->shape.d[2];
  c->W = x->shape.d[3];
  c->OCB = w->shape.d[0];
  c->KH = w->shape.d[2];
  c->KW = w->shape.d[3];
  c->OH = y->shape.d[2];
  c->OW = y->shape.d[3];
  kiln_shape xs = {.rank = 4, .d = {c->N, c->ICB * c->b, c->H, c->W}};
  nn_window win;
  KILN_TRY(nn_window_forward(n, &xs, x->name, (int64_t[]){c->KH, c->KW}, false, &win, e));
  c->sh = win.stride[0];
  c->sw = win.stride[1];
  c->dh = win.dilation[0];
  c->dw = win.dilation[1];
  c->pt = win.pad_begin[0];
  c->pl = win.pad_begin[1];
  c->padded = c->pt || c->pl || win.pad_end[0] || win.pad_end[1];
  c->Hp = c->H + c->pt + win.pad_end[0];
  c->Wp = c->W + c->pl + win.pad_end[1];
  kiln_fused_act_params a;
  KILN_TRY(kiln_fused_act_get(n, &a, e));
  static const cg_act acts[] = {CG_ACT_NONE, CG_ACT_RELU, CG_ACT_CLIP, CG_ACT_LEAKY_RELU,
                                CG_ACT_SIGMOID};
  c->epi = cg_conv_epilogue_none();
  c->epi.act = acts[a.act];
  c->epi.act_a = (float)a.alpha;
  c->epi.act_b = (float)a.beta;
  c->avx512 = cg_avx512(cx);
  /* the convolution as the tuning table keys it (codegen/tune.h) */
  cg_conv_geom geom = {.N = c->N, .C = c->ICB * c->b, .OC = c->OCB * c->b, .groups = 1};
  for (int d = 0; d < 3; d++) {
    bool id = d == 0; /* 2-D: a leading identity dim, as conv_gen's geometries have */
    geom.in[d] = id ? 1 : d == 1 ? c->H : c->W;
    geom.k[d] = id ? 1 : d == 1 ? c->KH : c->KW;
    geom.stride[d] = id ? 1 : d == 1 ? c->sh : c->sw;
    geom.dil[d] = id ? 1 : d == 1 ? c->dh : c->dw;
    geom.pad_b[d] = id ? 0 : d == 1 ? c->pt : c->pl;
    geom.pad_e[d] = id ? 0 : d == 1 ? c->Hp - c->H - c->pt : c->Wp - c->W - c->pl;
    geom.out[d] = id ? 1 : d == 1 ? c->OH : c->OW;
    geom.xfactor[d] = 1;
  }
  choose_block(cx, c, &geom);
  return KILN_OK;
}

/* The zero-bordered copy of X: one tile per padded row (n, icb, r). */
static kiln_code emit_pad_copy(kiln_emit_ctx *cx, const bconv *c, int xbuf, int xpbuf,
                               kiln_err *e) {
  unsigned B = (unsigned)c->b;
  cg_kernel k;
  KILN_TRY(cg_kernel_begin(cx, &k, "blocked_conv_prep", 2, e));
  LLVMBuilderRef b = k.b;
  LLVMValueRef x = cg_arg(&k, 0), xp = cg_arg(&k, 1);
  LLVMValueRef zero = LLVMConstNull(LLVMVectorType(k.t->f32, B));
  cg_loop lt, lw;
  LLVMValueRef t = cg_loop_begin(&k, &lt, k.lo, k.hi, cst(&k, 1), "t");
  LLVMValueRef r = LLVMBuildURem(b, t, cst(&k, c->Hp), "");
  LLVMValueRef plane = LLVMBuildUDiv(b, t, cst(&k, c->Hp), ""); /* n * ICB + icb */
  LLVMValueRef dst = cg_mul(&k, t, cst(&k, c->Wp * c->b));
  LLVMValueRef ih = LLVMBuildNSWSub(b, r, cst(&k, c->pt), "");
  /* unsigned compare: rows above the input wrap around to large values */
  LLVMValueRef inside = LLVMBuildICmp(b, LLVMIntULT, ih, cst(&k, c->H), "");
  LLVMValueRef src = cg_mul(&k, cg_add(&k, cg_mul(&k, plane, cst(&k, c->H)), ih),
                            cst(&k, c->W * c->b));
  LLVMValueRef wp = cg_loop_begin(&k, &lw, cst(&k, 0), cst(&k, c->Wp), cst(&k, 1), "w");
  LLVMValueRef iw = LLVMBuildNSWSub(b, wp, cst(&k, c->pl), "");
  LLVMValueRef ok = LLVMBuildAnd(
      b, inside, LLVMBuildICmp(b, LLVMIntULT, iw, cst(&k, c->W), ""), "");
  cg_if ci;
  LLVMValueRef di = cg_add(&k, dst, cg_mul(&k, wp, cst(&k, c->b)));
  cg_vstore(&k, zero, xp, di, B, B);
  cg_if_begin(&k, &ci, ok);
  cg_vstore(&k, cg_vload(&k, x, cg_add(&k, src, cg_mul(&k, iw, cst(&k, c->b))), B, B), xp, di,
            B, B);
  cg_if_end(&k, &ci);
  cg_loop_end(&k, &lw);
  cg_loop_end(&k, &lt);
  return cg_kernel_end(cx, &k, c->N * c->ICB * c->Hp, (int[]){xbuf, xpbuf}, e);
}

typedef struct bk {
  cg_kernel *k;
  const bconv *c;
  LLVMValueRef x, w, bias, z, y; /* argument pointers (bias, z may be NULL) */
  LLVMTypeRef vty;
  LLVMValueRef acc[64];          /* allocas, [(row * P + pixel) * OCV + vector] */
} bk;

/* One register block: pixels ow0 .. ow0 + P - 1 of rows oh .. oh + R - 1, channel blocks
 * ocb0 .. + OCV - 1.  Accumulator (r, j, v) is acc[(r * P + j) * OCV + v]. */
static void emit_block(bk *s, LLVMValueRef n, LLVMValueRef ocb0, LLVMValueRef oh,
                       LLVMValueRef ow0, int R, int P) {
  cg_kernel *k = s->k;
  const bconv *c = s->c;
  LLVMBuilderRef b = k->b;
  unsigned B = (unsigned)c->b;
  int V = c->OCV;
  LLVMValueRef zero = LLVMConstNull(s->vty);
  for (int i = 0; i < R * P * V; i++) LLVMBuildStore(b, zero, s->acc[i]);
  int64_t wstep_oc = c->ICB * c->KH * c->KW * c->b * c->b; /* one output channel block */
  /* the taps are one runtime loop: unrolled, the loads of neighbouring taps that read the
   * same input (stride 1) would be merged and kept live across taps, spilling accumulators */
  cg_loop li, lh;
  LLVMValueRef icb = cg_loop_begin(k, &li, cst(k, 0), cst(k, c->ICB), cst(k, 1), "icb");
  LLVMValueRef tap = cg_loop_begin(k, &lh, cst(k, 0), cst(k, c->KH * c->KW), cst(k, 1), "tap");
  LLVMValueRef kh = LLVMBuildUDiv(b, tap, cst(k, c->KW), "");
  LLVMValueRef kw = LLVMBuildURem(b, tap, cst(k, c->KW), "");
  LLVMValueRef ih = cg_add(k, cg_mul(k, oh, cst(k, c->sh)), cg_mul(k, kh, cst(k, c->dh)));
  LLVMValueRef xrow = cg_mul(
      k, cg_add(k, cg_mul(k, cg_add(k, cg_mul(k, n, cst(k, c->ICB)), icb), cst(k, c->Hp)), ih),
      cst(k, c->Wp * c->b));
  LLVMValueRef xcol0 = cg_add(k, cg_add(k, xrow, cg_mul(k, ow0, cst(k, c->sw * c->b))),
                              cg_mul(k, kw, cst(k, c->dw * c->b)));
  LLVMValueRef wtap = cg_mul(
      k, cg_add(k, cg_mul(k, cg_add(k, cg_mul(k, ocb0, cst(k, c->ICB)), icb),
                          cst(k, c->KH * c->KW)), tap),
      cst(k, c->b * c->b));
  for (int64_t ci = 0; ci < c->b; ci++) {
    LLVMValueRef wv[4];
    for (int v = 0; v < V; v++)
      wv[v] = cg_vload(k, s->w, cg_add(k, wtap, cst(k, v * wstep_oc + ci * c->b)), B, B);
    for (int r = 0; r < R; r++)
      for (int j = 0; j < P; j++) {
        int64_t off = (int64_t)r * c->sh * c->Wp * c->b + (int64_t)j * c->sw * c->b + ci;
        LLVMValueRef xs = cg_load(k, k->t->f32, s->x, cg_add(k, xcol0, cst(k, off)));
        LLVMValueRef xb = cg_splat(k, xs, B);
        for (int v = 0; v < V; v++) {
          LLVMValueRef *acc = &s->acc[(r * P + j) * V + v];
          LLVMValueRef a = LLVMBuildLoad2(b, s->vty, *acc, "");
          LLVMTypeRef vt = s->vty;
          a = cg_intrinsic(k, "llvm.fma", &vt, 1, (LLVMValueRef[]){xb, wv[v], a}, 3);
          LLVMBuildStore(b, a, *acc);
        }
      }
  }
  cg_loop_end(k, &lh);
  cg_loop_end(k, &li);
  /* epilogue: + bias, + residual, activation; whole-vector stores */
  for (int v = 0; v < V; v++) {
    LLVMValueRef ocb = cg_add(k, ocb0, cst(k, v));
    LLVMValueRef bv = s->bias ? cg_vload(k, s->bias, cg_mul(k, ocb, cst(k, c->b)), B, B) : NULL;
    LLVMValueRef yrow = cg_mul(
        k, cg_add(k, cg_mul(k, cg_add(k, cg_mul(k, n, cst(k, c->OCB)), ocb), cst(k, c->OH)), oh),
        cst(k, c->OW * c->b));
    LLVMValueRef ycol0 = cg_add(k, yrow, cg_mul(k, ow0, cst(k, c->b)));
    for (int r = 0; r < R; r++)
      for (int j = 0; j < P; j++) {
        LLVMValueRef val = LLVMBuildLoad2(b, s->vty, s->acc[(r * P + j) * V + v], "");
        if (bv) val = LLVMBuildFAdd(b, val, bv, "");
        LLVMValueRef yi = cg_add(k, ycol0, cst(k, ((int64_t)r * c->OW + j) * c->b));
        if (s->z) val = LLVMBuildFAdd(b, val, cg_vload(k, s->z, yi, B, B), "");
        if (c->epi.act) val = cg_conv_activate(k, &c->epi, val);
        cg_vstore(k, val, s->y, yi, B, B);
      }
  }
}

/* R rows from oh: the column blocks of P pixels, then the narrower last one. */
static void emit_row_group(bk *s, LLVMValueRef n, LLVMValueRef ocb0, LLVMValueRef oh, int R) {
  cg_kernel *k = s->k;
  const bconv *c = s->c;
  int64_t full = c->OW / c->P, tail = c->OW % c->P;
  if (full > 0) {
    cg_loop lc;
    LLVMValueRef ow0 = cg_loop_begin(k, &lc, cst(k, 0), cst(k, full * c->P), cst(k, c->P), "ow");
    emit_block(s, n, ocb0, oh, ow0, R, c->P);
    cg_loop_end(k, &lc);
  }
  if (tail) emit_block(s, n, ocb0, oh, cst(k, full * c->P), R, (int)tail);
}

static kiln_code emit_BlockedConv(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                                  kiln_err *e) {
  bconv c;
  KILN_TRY(bconv_init(cx, g, n, &c, e));
  int xbuf = cg_buf_value(cx, n->in[0]);
  if (c.padded) {
    int64_t bytes = c.N * c.ICB * c.Hp * c.Wp * c.b * (int64_t)sizeof(float);
    int xp = cg_buf_scratch(cx, (size_t)bytes, e);
    if (xp < 0) return e->code;
    KILN_TRY(emit_pad_copy(cx, &c, xbuf, xp, e));
    xbuf = xp;
  }
  bool has_b = n->n_in > 2 && n->in[2] >= 0, has_z = n->n_in > 3 && n->in[3] >= 0;
  cg_kernel k;
  KILN_TRY(cg_kernel_begin(cx, &k, "blocked_conv", 5, e));
  LLVMBuilderRef b = k.b;
  bk s = {.k = &k, .c = &c, .x = cg_arg(&k, 0), .w = cg_arg(&k, 1),
          .bias = has_b ? cg_arg(&k, 2) : NULL, .z = has_z ? cg_arg(&k, 3) : NULL,
          .y = cg_arg(&k, 4), .vty = LLVMVectorType(k.t->f32, (unsigned)c.b)};
  for (int i = 0; i < c.RB * c.P * c.OCV; i++) s.acc[i] = cg_entry_alloca(&k, s.vty);
  int64_t OCG = c.OCB / c.OCV, NRG = (c.OH + c.RB - 1) / c.RB, rtail = c.OH % c.RB;
  cg_loop lt;
  LLVMValueRef t = cg_loop_begin(&k, &lt, k.lo, k.hi, cst(&k, 1), "t");
  /* tile t = (n * OCG + og) * NRG + rg: consecutive tiles of a thread share their weights */
  LLVMValueRef rg = LLVMBuildURem(b, t, cst(&k, NRG), "");
  LLVMValueRef rest = LLVMBuildUDiv(b, t, cst(&k, NRG), "");
  LLVMValueRef og = LLVMBuildURem(b, rest, cst(&k, OCG), "");
  LLVMValueRef nn = LLVMBuildUDiv(b, rest, cst(&k, OCG), "");
  LLVMValueRef ocb0 = cg_mul(&k, og, cst(&k, c.OCV));
  LLVMValueRef oh = cg_mul(&k, rg, cst(&k, c.RB));
  if (rtail) { /* the last row group has fewer rows */
    cg_ifelse ie;
    cg_ifelse_begin(&k, &ie, LLVMBuildICmp(b, LLVMIntEQ, rg, cst(&k, NRG - 1), ""));
    emit_row_group(&s, nn, ocb0, oh, (int)rtail);
    cg_ifelse_else(&k, &ie);
    emit_row_group(&s, nn, ocb0, oh, c.RB);
    cg_ifelse_end(&k, &ie);
  } else {
    emit_row_group(&s, nn, ocb0, oh, c.RB);
  }
  cg_loop_end(&k, &lt);
  int bufs[5] = {xbuf, cg_buf_value(cx, n->in[1]), has_b ? cg_buf_value(cx, n->in[2]) : -1,
                 has_z ? cg_buf_value(cx, n->in[3]) : -1, cg_buf_value(cx, n->out[0])};
  return cg_kernel_end(cx, &k, c.N * OCG * NRG, bufs, e);
}

void cg_register_layout(kiln_emit_fn *table) {
  table[KILN_OP_ToBlocked] = emit_ToBlocked;
  table[KILN_OP_FromBlocked] = emit_FromBlocked;
  table[KILN_OP_BlockedConv] = emit_BlockedConv;
}
