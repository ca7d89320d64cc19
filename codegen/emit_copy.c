/* emit_copy.c — the shared data-movement kernel (affine or table-driven strided copies, see
 * emit_copy.h) and the row/chunk tiling and control-flow helpers its users share. */
#include "codegen/emit_copy.h"

#include <string.h>

void cg_contig_strides(int rank, const int64_t *dims, int64_t *st) {
  int64_t acc = 1;
  for (int d = rank - 1; d >= 0; d--) {
    st[d] = acc;
    acc *= dims[d];
  }
}

LLVMValueRef cg_max(cg_kernel *k, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildSelect(k->b, LLVMBuildICmp(k->b, LLVMIntSGT, a, b, ""), a, b, "");
}

LLVMTypeRef cg_bits_type(cg_kernel *k, kiln_dtype dt) {
  switch (kiln_dtype_size(dt)) {
  case 8: return k->t->i64;
  case 4: return k->t->i32;
  default: return k->t->i8;
  }
}

void cg_ifelse_begin(cg_kernel *k, cg_ifelse *c, LLVMValueRef cond) {
  c->then_bb = LLVMAppendBasicBlockInContext(k->ctx, k->fn, "then");
  c->else_bb = LLVMAppendBasicBlockInContext(k->ctx, k->fn, "else");
  c->merge_bb = LLVMAppendBasicBlockInContext(k->ctx, k->fn, "endif");
  LLVMBuildCondBr(k->b, cond, c->then_bb, c->else_bb);
  LLVMPositionBuilderAtEnd(k->b, c->then_bb);
}

void cg_ifelse_else(cg_kernel *k, cg_ifelse *c) {
  LLVMBuildBr(k->b, c->merge_bb);
  LLVMPositionBuilderAtEnd(k->b, c->else_bb);
}

void cg_ifelse_end(cg_kernel *k, cg_ifelse *c) {
  LLVMBuildBr(k->b, c->merge_bb);
  LLVMPositionBuilderAtEnd(k->b, c->merge_bb);
}

/* ---- tiling ---- */

void cg_rows_plan(cg_rows *t, int64_t n_rows, int64_t inner, int64_t tile_elems) {
  memset(t, 0, sizeof *t);
  t->n_rows = n_rows;
  t->inner = inner;
  t->n_chunks = 1;
  t->chunk = inner;
  t->items_per_tile = 1;
  if (inner > tile_elems) { /* long rows: one chunk of one row per tile */
    t->chunk = tile_elems;
    t->n_chunks = (inner + tile_elems - 1) / tile_elems;
  } else if (inner > 0) {
    t->items_per_tile = tile_elems / inner;
    if (t->items_per_tile > n_rows) t->items_per_tile = n_rows;
    if (t->items_per_tile < 1) t->items_per_tile = 1;
  }
  int64_t items = n_rows * t->n_chunks;
  t->n_tiles = (items + t->items_per_tile - 1) / t->items_per_tile;
}

void cg_rows_begin(cg_kernel *k, cg_rows *t, LLVMValueRef *row, LLVMValueRef *jlo,
                   LLVMValueRef *jhi) {
  int64_t items = t->n_rows * t->n_chunks;
  LLVMValueRef ipt = cg_i64(k, t->items_per_tile);
  LLVMValueRef ilo = cg_mul(k, k->lo, ipt);
  LLVMValueRef ihi = cg_min(k, cg_mul(k, k->hi, ipt), cg_i64(k, items));
  LLVMValueRef item = cg_loop_begin(k, &t->loop, ilo, ihi, NULL, "item");
  if (t->n_chunks == 1) {
    *row = item;
    *jlo = cg_i64(k, 0);
    *jhi = cg_i64(k, t->inner);
    return;
  }
  LLVMValueRef nc = cg_i64(k, t->n_chunks);
  *row = LLVMBuildUDiv(k->b, item, nc, "row");
  LLVMValueRef ch = LLVMBuildURem(k->b, item, nc, "chunk");
  *jlo = cg_mul(k, ch, cg_i64(k, t->chunk));
  *jhi = cg_min(k, cg_add(k, *jlo, cg_i64(k, t->chunk)), cg_i64(k, t->inner));
}

void cg_rows_end(cg_kernel *k, cg_rows *t) { cg_loop_end(k, &t->loop); }

void cg_unravel(cg_kernel *k, LLVMValueRef row, const int64_t *dims, int n, LLVMValueRef *coord) {
  LLVMValueRef rem = row;
  for (int d = n - 1; d >= 0; d--) {
    if (d == 0) {
      coord[d] = rem;
      break;
    }
    LLVMValueRef dim = cg_i64(k, dims[d]);
    coord[d] = LLVMBuildURem(k->b, rem, dim, "");
    rem = LLVMBuildUDiv(k->b, rem, dim, "");
  }
}

/* ---- the copy kernel ---- */

typedef enum seg_kind { SEG_FILL, SEG_AFFINE, SEG_TABLE } seg_kind;

/* A run [a, b) of the innermost axis.  AFFINE: source index srcbase + off + j * stride. */
typedef struct segment {
  seg_kind kind;
  int64_t a, b;
  int64_t off, stride;
  bool has_neg; /* TABLE: some entries are the fill value */
} segment;

#define MAX_SEGS 8
#define MIN_RUN 4 /* contiguous table runs at least this long become memcpy segments */

typedef struct axis {
  int64_t dim, sst, dst;
  const int64_t *tab;
  bool neg; /* the table has negative entries */
} axis;

/* Cuts the innermost axis' table into segments; false when there would be too many. */
static bool table_segments(const int64_t *tab, int64_t len, segment *segs, int *n_segs) {
  int n = 0;
  for (int64_t j = 0; j < len;) {
    segment s = {.a = j};
    if (tab[j] < 0) {
      while (j < len && tab[j] < 0) j++;
      s.kind = SEG_FILL;
    } else {
      int64_t run = 1;
      while (j + run < len && tab[j + run] == tab[j] + run) run++;
      if (run >= MIN_RUN) {
        s.kind = SEG_AFFINE;
        s.stride = 1;
        s.off = tab[j] - j;
        j += run;
      } else {
        s.kind = SEG_TABLE;
        j += run;
      }
    }
    s.b = j;
    if (s.kind == SEG_TABLE && n > 0 && segs[n - 1].kind == SEG_TABLE) {
      segs[n - 1].b = s.b;
      continue;
    }
    if (n == MAX_SEGS) return false;
    segs[n++] = s;
  }
  *n_segs = n;
  return true;
}

void cg_fill_loop(cg_kernel *k, LLVMValueRef dst, LLVMValueRef dstbase, int64_t ds,
                  LLVMValueRef lo, LLVMValueRef hi, LLVMValueRef v) {
  cg_loop l;
  LLVMValueRef j = cg_loop_begin(k, &l, lo, hi, NULL, "j");
  cg_store(k, v, dst, cg_add(k, dstbase, cg_mul(k, j, cg_i64(k, ds))));
  cg_loop_end(k, &l);
}

void cg_copy_run(cg_kernel *k, LLVMTypeRef ety, size_t esize, LLVMValueRef dst,
                 LLVMValueRef dst_idx, LLVMValueRef src, LLVMValueRef src_idx, LLVMValueRef n) {
  cg_if c;
  cg_if_begin(k, &c, LLVMBuildICmp(k->b, LLVMIntSGT, n, cg_i64(k, 0), ""));
  LLVMTypeRef tys[3] = {k->t->ptr, k->t->ptr, k->t->i64};
  LLVMValueRef args[4] = {cg_gep(k, ety, dst, dst_idx), cg_gep(k, ety, src, src_idx),
                          cg_mul(k, n, cg_i64(k, (int64_t)esize)), LLVMConstInt(k->t->i1, 0, 0)};
  cg_intrinsic(k, "llvm.memcpy", tys, 3, args, 4);
  cg_if_end(k, &c);
}

typedef struct row_ctx {
  LLVMTypeRef ety;
  LLVMValueRef src, dst, tab, fill;
  LLVMValueRef srcbase, dstbase, jlo, jhi;
  int64_t ds;         /* innermost destination stride */
  int64_t tab_inner;  /* offset of the innermost axis' table in the table buffer */
  size_t esize;
} row_ctx;

static void emit_segment(cg_kernel *k, const row_ctx *r, const segment *s) {
  LLVMBuilderRef b = k->b;
  LLVMValueRef lo = cg_max(k, cg_i64(k, s->a), r->jlo), hi = cg_min(k, cg_i64(k, s->b), r->jhi);
  switch (s->kind) {
  case SEG_FILL: cg_fill_loop(k, r->dst, r->dstbase, r->ds, lo, hi, r->fill); return;
  case SEG_AFFINE: {
    LLVMValueRef srcoff = cg_add(k, r->srcbase, cg_i64(k, s->off));
    if (s->stride == 1 && r->ds == 1) { /* contiguous on both sides */
      cg_copy_run(k, r->ety, r->esize, r->dst, cg_add(k, r->dstbase, lo), r->src,
                  cg_add(k, srcoff, lo), LLVMBuildNSWSub(b, hi, lo, ""));
      return;
    }
    if (s->stride == 0) { /* broadcast: one load per row */
      cg_fill_loop(k, r->dst, r->dstbase, r->ds, lo, hi, cg_load(k, r->ety, r->src, srcoff));
      return;
    }
    cg_loop l;
    LLVMValueRef j = cg_loop_begin(k, &l, lo, hi, NULL, "j");
    LLVMValueRef at = cg_add(k, srcoff, cg_mul(k, j, cg_i64(k, s->stride)));
    LLVMValueRef v = cg_load(k, r->ety, r->src, at);
    cg_store(k, v, r->dst, cg_add(k, r->dstbase, cg_mul(k, j, cg_i64(k, r->ds))));
    cg_loop_end(k, &l);
    return;
  }
  case SEG_TABLE: {
    cg_loop l;
    LLVMValueRef j = cg_loop_begin(k, &l, lo, hi, NULL, "j");
    LLVMValueRef t = cg_load(k, k->t->i64, r->tab, cg_add(k, j, cg_i64(k, r->tab_inner)));
    LLVMValueRef v;
    if (s->has_neg) { /* never load at a negative offset: read element srcbase instead */
      LLVMValueRef neg = LLVMBuildICmp(b, LLVMIntSLT, t, cg_i64(k, 0), "");
      LLVMValueRef idx = cg_select(k, neg, cg_i64(k, 0), t);
      v = cg_select(k, neg, r->fill, cg_load(k, r->ety, r->src, cg_add(k, r->srcbase, idx)));
    } else {
      v = cg_load(k, r->ety, r->src, cg_add(k, r->srcbase, t));
    }
    cg_store(k, v, r->dst, cg_add(k, r->dstbase, cg_mul(k, j, cg_i64(k, r->ds))));
    cg_loop_end(k, &l);
    return;
  }
  }
}

/* A transpose (the innermost axis is strided in the source, another axis is contiguous there):
 * copied in BLOCK x BLOCK blocks of those two axes, so that the lines read from the source and
 * written to the destination stay in cache (and in the TLB) while a block is moved.  Work items
 * are blocks; `ax` holds only affine axes. */
#define BLOCK 32
#define MIN_BLOCK_DIM 4

static kiln_code emit_blocked(kiln_emit_ctx *cx, const cg_copy *c, const axis *ax, int r, int p,
                              int64_t soff, int64_t doff, kiln_err *e) {
  const axis *ap = &ax[p], *aj = &ax[r - 1];
  int64_t qdims[KILN_MAX_RANK], nq_total = 1;
  int qax[KILN_MAX_RANK], nq = 0;
  for (int d = 0; d < r - 1; d++)
    if (d != p) {
      qax[nq] = d;
      qdims[nq++] = ax[d].dim;
      nq_total *= ax[d].dim;
    }
  int64_t pb = (ap->dim + BLOCK - 1) / BLOCK, jb = (aj->dim + BLOCK - 1) / BLOCK;
  int64_t items = nq_total * pb * jb, ipt = CG_TILE_ELEMS / (BLOCK * BLOCK);
  if (ipt > items) ipt = items;
  int64_t n_tiles = (items + ipt - 1) / ipt;
  cg_kernel k;
  KILN_TRY(cg_kernel_begin(cx, &k, c->label, c->n_bufs, e));
  LLVMBuilderRef b = k.b;
  LLVMTypeRef ety = cg_bits_type(&k, c->dtype);
  LLVMValueRef src = cg_arg(&k, c->src_arg), dst = cg_arg(&k, c->dst_arg);
  cg_loop li, lp, lj;
  LLVMValueRef ilo = cg_mul(&k, k.lo, cg_i64(&k, ipt));
  LLVMValueRef ihi = cg_min(&k, cg_mul(&k, k.hi, cg_i64(&k, ipt)), cg_i64(&k, items));
  LLVMValueRef item = cg_loop_begin(&k, &li, ilo, ihi, NULL, "block");
  LLVMValueRef jbi = LLVMBuildURem(b, item, cg_i64(&k, jb), "");
  LLVMValueRef rest = LLVMBuildUDiv(b, item, cg_i64(&k, jb), "");
  LLVMValueRef pbi = LLVMBuildURem(b, rest, cg_i64(&k, pb), "");
  LLVMValueRef q = LLVMBuildUDiv(b, rest, cg_i64(&k, pb), "");
  LLVMValueRef coord[KILN_MAX_RANK];
  cg_unravel(&k, q, qdims, nq, coord);
  LLVMValueRef sbase = cg_i64(&k, soff), dbase = cg_i64(&k, doff);
  for (int i = 0; i < nq; i++) {
    sbase = cg_add(&k, sbase, cg_mul(&k, coord[i], cg_i64(&k, ax[qax[i]].sst)));
    dbase = cg_add(&k, dbase, cg_mul(&k, coord[i], cg_i64(&k, ax[qax[i]].dst)));
  }
  LLVMValueRef p0 = cg_mul(&k, pbi, cg_i64(&k, BLOCK)), j0 = cg_mul(&k, jbi, cg_i64(&k, BLOCK));
  LLVMValueRef p1 = cg_min(&k, cg_add(&k, p0, cg_i64(&k, BLOCK)), cg_i64(&k, ap->dim));
  LLVMValueRef j1 = cg_min(&k, cg_add(&k, j0, cg_i64(&k, BLOCK)), cg_i64(&k, aj->dim));
  LLVMValueRef pp = cg_loop_begin(&k, &lp, p0, p1, NULL, "p");
  LLVMValueRef s = cg_add(&k, sbase, cg_mul(&k, pp, cg_i64(&k, ap->sst)));
  LLVMValueRef d = cg_add(&k, dbase, cg_mul(&k, pp, cg_i64(&k, ap->dst)));
  LLVMValueRef j = cg_loop_begin(&k, &lj, j0, j1, NULL, "j");
  LLVMValueRef v = cg_load(&k, ety, src, cg_add(&k, s, cg_mul(&k, j, cg_i64(&k, aj->sst))));
  cg_store(&k, v, dst, cg_add(&k, d, cg_mul(&k, j, cg_i64(&k, aj->dst))));
  cg_loop_end(&k, &lj);
  cg_loop_end(&k, &lp);
  cg_loop_end(&k, &li);
  return cg_kernel_end(cx, &k, n_tiles, c->bufs, e);
}

kiln_code cg_emit_copy(kiln_emit_ctx *cx, const cg_copy *c, kiln_err *e) {
  for (int d = 0; d < c->rank; d++)
    if (c->dims[d] == 0) return KILN_OK; /* empty box: no step */
  bool all_fill = c->src_empty;
  int64_t soff = c->src_off, doff = c->dst_off;
  /* 1. drop size-1 axes; turn affine tables into strides */
  axis ax[KILN_MAX_RANK];
  int r = 0;
  for (int d = 0; d < c->rank; d++) {
    axis a = {.dim = c->dims[d], .sst = c->src_stride[d], .dst = c->dst_stride[d],
              .tab = c->src_tab[d]};
    if (a.tab) {
      bool affine = true;
      int64_t step = a.dim > 1 ? a.tab[1] - a.tab[0] : 0;
      for (int64_t i = 0; i < a.dim; i++) {
        if (a.tab[i] < 0) a.neg = true;
        if (a.tab[i] != a.tab[0] + i * step) affine = false;
      }
      if (affine && !a.neg) {
        soff += a.tab[0];
        a.tab = NULL;
        a.sst = step;
      } else if (a.dim == 1) { /* negative: every element is the fill value */
        all_fill = true;
        a.tab = NULL;
        a.sst = 0;
      }
    }
    if (a.dim == 1 && !a.tab) continue;
    ax[r++] = a;
  }
  for (int d = 0; d < r; d++) /* an axis whose table is all negative makes everything fill */
    if (ax[d].tab) {
      bool any = false;
      for (int64_t i = 0; i < ax[d].dim; i++) any |= ax[d].tab[i] >= 0;
      if (!any) all_fill = true;
    }
  if (all_fill)
    for (int d = 0; d < r; d++) ax[d].tab = NULL, ax[d].sst = 0, ax[d].neg = false;
  /* 2. merge neighbouring affine axes that are contiguous in both buffers */
  int m = 0;
  for (int d = 0; d < r; d++) {
    axis a = ax[d];
    if (m > 0 && !ax[m - 1].tab && !a.tab && ax[m - 1].sst == a.sst * a.dim &&
        ax[m - 1].dst == a.dst * a.dim) {
      ax[m - 1].dim *= a.dim;
      ax[m - 1].sst = a.sst;
      ax[m - 1].dst = a.dst;
      continue;
    }
    ax[m++] = a;
  }
  r = m;
  if (r == 0) ax[r++] = (axis){.dim = 1, .sst = 0, .dst = 1};
  if (!all_fill && r >= 2 && ax[r - 1].sst != 1 && ax[r - 1].sst != 0 &&
      ax[r - 1].dim >= MIN_BLOCK_DIM) {
    bool any_tab = false;
    int p = -1;
    for (int d = 0; d < r; d++) any_tab |= ax[d].tab != NULL;
    for (int d = r - 2; d >= 0 && p < 0; d--)
      if (ax[d].sst == 1 && ax[d].dim >= MIN_BLOCK_DIM) p = d;
    if (!any_tab && p >= 0) return emit_blocked(cx, c, ax, r, p, soff, doff, e);
  }
  /* 3. the innermost axis' segments */
  const axis *in = &ax[r - 1];
  segment segs[MAX_SEGS];
  int n_segs = 1;
  if (all_fill)
    segs[0] = (segment){.kind = SEG_FILL, .a = 0, .b = in->dim};
  else if (!in->tab)
    segs[0] = (segment){.kind = SEG_AFFINE, .a = 0, .b = in->dim, .stride = in->sst};
  else if (!table_segments(in->tab, in->dim, segs, &n_segs)) {
    n_segs = 1;
    segs[0] = (segment){.kind = SEG_TABLE, .a = 0, .b = in->dim};
  }
  bool need_fill = false, need_inner_tab = false;
  for (int s = 0; s < n_segs; s++) {
    if (segs[s].kind == SEG_TABLE) {
      need_inner_tab = true;
      for (int64_t j = segs[s].a; j < segs[s].b; j++) segs[s].has_neg |= in->tab[j] < 0;
      need_fill |= segs[s].has_neg;
    }
    need_fill |= segs[s].kind == SEG_FILL;
  }
  bool row_neg = false;
  for (int d = 0; d < r - 1; d++) row_neg |= ax[d].tab && ax[d].neg;
  need_fill |= row_neg;
  /* 4. the tables of the outer axes (and of the innermost one when it gathers) */
  int64_t tab_len = 0, tab_base[KILN_MAX_RANK];
  for (int d = 0; d < r; d++) {
    tab_base[d] = tab_len;
    if (ax[d].tab && (d < r - 1 || need_inner_tab)) tab_len += ax[d].dim;
  }
  int bufs[64];
  if (c->n_bufs + 1 > 64) return kiln_errf(e, KILN_ERR_LIMIT, "too many copy arguments");
  memcpy(bufs, c->bufs, sizeof(int) * (size_t)c->n_bufs);
  int n_args = c->n_bufs, tab_arg = -1;
  if (tab_len) {
    int64_t *tab = kiln_malloc(sizeof(int64_t) * (size_t)tab_len);
    if (!tab) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory (copy tables)");
    for (int d = 0; d < r; d++)
      if (ax[d].tab && (d < r - 1 || need_inner_tab))
        memcpy(tab + tab_base[d], ax[d].tab, sizeof(int64_t) * (size_t)ax[d].dim);
    int id = cg_buf_const(cx, tab, sizeof(int64_t) * (size_t)tab_len, e);
    kiln_free(tab);
    if (id < 0) return e->code;
    tab_arg = n_args;
    bufs[n_args++] = id;
  }
  int64_t n_rows = 1;
  for (int d = 0; d < r - 1; d++) n_rows *= ax[d].dim;
  cg_rows rp;
  cg_rows_plan(&rp, n_rows, in->dim, CG_TILE_ELEMS);

  cg_kernel k;
  KILN_TRY(cg_kernel_begin(cx, &k, c->label, n_args, e));
  LLVMBuilderRef b = k.b;
  row_ctx rc = {.ety = cg_bits_type(&k, c->dtype), .src = cg_arg(&k, c->src_arg),
                .dst = cg_arg(&k, c->dst_arg), .ds = in->dst, .tab_inner = tab_base[r - 1],
                .esize = kiln_dtype_size(c->dtype)};
  if (tab_arg >= 0) rc.tab = cg_arg(&k, tab_arg);
  /* A copy onto itself (the planner ran a reshape in place) has nothing to do. */
  LLVMBasicBlockRef done = NULL;
  bool identity = !all_fill && r == 1 && !in->tab && in->sst == 1 && in->dst == 1 && soff == doff;
  if (identity) {
    LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(k.ctx, k.fn, "copy");
    done = LLVMAppendBasicBlockInContext(k.ctx, k.fn, "done");
    LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntEQ, rc.src, rc.dst, ""), done, body);
    LLVMPositionBuilderAtEnd(b, body);
  }
  if (need_fill) {
    if (c->fill_arg >= 0)
      rc.fill = cg_load(&k, rc.ety, cg_arg(&k, c->fill_arg), cg_i64(&k, 0));
    else
      rc.fill = LLVMConstInt(rc.ety, c->fill_bits, 0);
  }
  LLVMValueRef row, coord[KILN_MAX_RANK];
  cg_rows_begin(&k, &rp, &row, &rc.jlo, &rc.jhi);
  int64_t outer_dims[KILN_MAX_RANK];
  for (int d = 0; d < r - 1; d++) outer_dims[d] = ax[d].dim;
  cg_unravel(&k, row, outer_dims, r - 1, coord);
  rc.srcbase = cg_i64(&k, soff);
  rc.dstbase = cg_i64(&k, doff);
  LLVMValueRef neg = NULL;
  for (int d = 0; d < r - 1; d++) {
    rc.dstbase = cg_add(&k, rc.dstbase, cg_mul(&k, coord[d], cg_i64(&k, ax[d].dst)));
    if (all_fill) continue;
    if (!ax[d].tab) {
      rc.srcbase = cg_add(&k, rc.srcbase, cg_mul(&k, coord[d], cg_i64(&k, ax[d].sst)));
      continue;
    }
    LLVMValueRef t = cg_load(&k, k.t->i64, rc.tab, cg_add(&k, coord[d], cg_i64(&k, tab_base[d])));
    if (ax[d].neg) {
      LLVMValueRef nd = LLVMBuildICmp(b, LLVMIntSLT, t, cg_i64(&k, 0), "");
      neg = neg ? LLVMBuildOr(b, neg, nd, "") : nd;
    }
    rc.srcbase = cg_add(&k, rc.srcbase, t);
  }
  if (neg) { /* a row of the fill value (e.g. a padded row) */
    cg_ifelse ie;
    cg_ifelse_begin(&k, &ie, neg);
    cg_fill_loop(&k, rc.dst, rc.dstbase, rc.ds, rc.jlo, rc.jhi, rc.fill);
    cg_ifelse_else(&k, &ie);
    for (int s = 0; s < n_segs; s++) emit_segment(&k, &rc, &segs[s]);
    cg_ifelse_end(&k, &ie);
  } else {
    for (int s = 0; s < n_segs; s++) emit_segment(&k, &rc, &segs[s]);
  }
  cg_rows_end(&k, &rp);
  if (done) {
    LLVMBuildBr(b, done);
    LLVMPositionBuilderAtEnd(b, done);
  }
  return cg_kernel_end(cx, &k, rp.n_tiles, bufs, e);
}

kiln_code cg_emit_plane_gather(kiln_emit_ctx *cx, const char *label, int64_t planes,
                               const int64_t src_dims[3], const int64_t len[3], cg_plane_map map,
                               const void *user, int src_buf, int dst_buf, kiln_err *e) {
  int64_t *tab[3] = {0};
  int64_t sstride[3] = {src_dims[1] * src_dims[2], src_dims[2], 1};
  kiln_code rc = KILN_OK;
  for (int d = 0; d < 3 && !rc; d++) {
    tab[d] = kiln_malloc(sizeof(int64_t) * (size_t)(len[d] > 0 ? len[d] : 1));
    if (!tab[d]) rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory (%s tables)", label);
    for (int64_t i = 0; !rc && i < len[d]; i++) {
      int64_t s = map(d, i, user);
      tab[d][i] = s < 0 ? -1 : s * sstride[d];
    }
  }
  if (!rc) {
    cg_copy c = {.label = label, .dtype = KILN_F32, .rank = 4,
                 .dims = {planes, len[0], len[1], len[2]},
                 .src_stride = {src_dims[0] * src_dims[1] * src_dims[2], 0, 0, 0},
                 .src_tab = {NULL, tab[0], tab[1], tab[2]},
                 .bufs = (int[]){src_buf, dst_buf}, .n_bufs = 2, .src_arg = 0, .dst_arg = 1,
                 .fill_arg = -1, .fill_bits = 0};
    cg_contig_strides(4, c.dims, c.dst_stride);
    rc = cg_emit_copy(cx, &c, e);
  }
  for (int d = 0; d < 3; d++) kiln_free(tab[d]);
  return rc;
}
