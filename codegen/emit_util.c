/* emit_util.c — IR-building helpers for emitters: constants, loops, memory
 * access, intrinsic and runtime calls, and the shared elementwise kernel
 * (cg_emit_map) that every elementwise op uses with its own scalar body. */
#include <string.h>

#include "codegen/emit.h"
#include "ir/ops/elementwise.h"

LLVMValueRef cg_i64(cg_kernel *k, int64_t v) { return LLVMConstInt(k->t->i64, (unsigned long long)v, 1); }
LLVMValueRef cg_i32(cg_kernel *k, int32_t v) { return LLVMConstInt(k->t->i32, (unsigned long long)(int64_t)v, 1); }
LLVMValueRef cg_f32(cg_kernel *k, double v) { return LLVMConstReal(k->t->f32, v); }

LLVMTypeRef cg_dtype(cg_kernel *k, kiln_dtype dt) {
  switch (dt) {
  case KILN_F32: return k->t->f32;
  case KILN_I32: return k->t->i32;
  case KILN_I64: return k->t->i64;
  case KILN_BOOL: return k->t->i8;
  default: return k->t->i8;
  }
}

LLVMValueRef cg_loop_begin(cg_kernel *k, cg_loop *l, LLVMValueRef start, LLVMValueRef end,
                           LLVMValueRef step, const char *name) {
  LLVMBasicBlockRef pre = LLVMGetInsertBlock(k->b);
  l->head = LLVMAppendBasicBlockInContext(k->ctx, k->fn, "loop.head");
  l->body = LLVMAppendBasicBlockInContext(k->ctx, k->fn, "loop.body");
  l->exit = LLVMAppendBasicBlockInContext(k->ctx, k->fn, "loop.exit");
  l->step = step ? step : cg_i64(k, 1);
  LLVMBuildBr(k->b, l->head);
  LLVMPositionBuilderAtEnd(k->b, l->head);
  l->phi = LLVMBuildPhi(k->b, k->t->i64, name ? name : "i");
  LLVMAddIncoming(l->phi, &start, &pre, 1);
  LLVMValueRef cond = LLVMBuildICmp(k->b, LLVMIntSLT, l->phi, end, "");
  LLVMBuildCondBr(k->b, cond, l->body, l->exit);
  LLVMPositionBuilderAtEnd(k->b, l->body);
  l->iv = l->phi;
  return l->iv;
}

void cg_loop_end(cg_kernel *k, cg_loop *l) {
  LLVMValueRef next = LLVMBuildNSWAdd(k->b, l->phi, l->step, "");
  LLVMBasicBlockRef latch = LLVMGetInsertBlock(k->b);
  LLVMAddIncoming(l->phi, &next, &latch, 1);
  LLVMBuildBr(k->b, l->head);
  LLVMPositionBuilderAtEnd(k->b, l->exit);
}

LLVMValueRef cg_gep(cg_kernel *k, LLVMTypeRef elt, LLVMValueRef base, LLVMValueRef idx) {
  return LLVMBuildInBoundsGEP2(k->b, elt, base, &idx, 1, "");
}

LLVMValueRef cg_load(cg_kernel *k, LLVMTypeRef elt, LLVMValueRef base, LLVMValueRef idx) {
  return LLVMBuildLoad2(k->b, elt, cg_gep(k, elt, base, idx), "");
}

void cg_store(cg_kernel *k, LLVMValueRef v, LLVMValueRef base, LLVMValueRef idx) {
  LLVMBuildStore(k->b, v, cg_gep(k, LLVMTypeOf(v), base, idx));
}

LLVMValueRef cg_intrinsic(cg_kernel *k, const char *name, LLVMTypeRef *types, int n_types,
                          LLVMValueRef *args, int n_args) {
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  LLVMValueRef f = LLVMGetIntrinsicDeclaration(k->mod, id, types, (size_t)n_types);
  LLVMTypeRef fty = LLVMIntrinsicGetType(k->ctx, id, types, (size_t)n_types);
  return LLVMBuildCall2(k->b, fty, f, args, (unsigned)n_args, "");
}

LLVMValueRef cg_call_rt(cg_kernel *k, const char *name, LLVMTypeRef ret, LLVMValueRef *args, int n_args) {
  LLVMTypeRef ptys[8];
  for (int i = 0; i < n_args && i < 8; i++) ptys[i] = LLVMTypeOf(args[i]);
  LLVMTypeRef fty = LLVMFunctionType(ret, ptys, (unsigned)n_args, 0);
  LLVMValueRef f = LLVMGetNamedFunction(k->mod, name);
  if (!f) f = LLVMAddFunction(k->mod, name, fty);
  return LLVMBuildCall2(k->b, fty, f, args, (unsigned)n_args, "");
}

LLVMValueRef cg_add(cg_kernel *k, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildNSWAdd(k->b, a, b, ""); }
LLVMValueRef cg_mul(cg_kernel *k, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildNSWMul(k->b, a, b, ""); }
LLVMValueRef cg_min(cg_kernel *k, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildSelect(k->b, LLVMBuildICmp(k->b, LLVMIntSLT, a, b, ""), a, b, "");
}
LLVMValueRef cg_select(cg_kernel *k, LLVMValueRef c, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildSelect(k->b, c, a, b, "");
}

void cg_if_begin(cg_kernel *k, cg_if *c, LLVMValueRef cond) {
  c->then_bb = LLVMAppendBasicBlockInContext(k->ctx, k->fn, "if.then");
  c->merge_bb = LLVMAppendBasicBlockInContext(k->ctx, k->fn, "if.end");
  LLVMBuildCondBr(k->b, cond, c->then_bb, c->merge_bb);
  LLVMPositionBuilderAtEnd(k->b, c->then_bb);
}

void cg_if_end(cg_kernel *k, cg_if *c) {
  LLVMBuildBr(k->b, c->merge_bb);
  LLVMPositionBuilderAtEnd(k->b, c->merge_bb);
}

/* ---- vectors ---- */
LLVMValueRef cg_entry_alloca(cg_kernel *k, LLVMTypeRef ty) {
  LLVMBuilderRef b2 = LLVMCreateBuilderInContext(k->ctx);
  LLVMBasicBlockRef entry = LLVMGetEntryBasicBlock(k->fn);
  LLVMValueRef first = LLVMGetFirstInstruction(entry);
  if (first)
    LLVMPositionBuilderBefore(b2, first);
  else
    LLVMPositionBuilderAtEnd(b2, entry);
  LLVMValueRef a = LLVMBuildAlloca(b2, ty, "");
  LLVMDisposeBuilder(b2);
  return a;
}

LLVMValueRef cg_splat(cg_kernel *k, LLVMValueRef s, unsigned w) {
  LLVMTypeRef vty = LLVMVectorType(LLVMTypeOf(s), w);
  LLVMValueRef v = LLVMBuildInsertElement(k->b, LLVMGetPoison(vty), s, cg_i32(k, 0), "");
  LLVMValueRef zeros = LLVMConstNull(LLVMVectorType(k->t->i32, w));
  return LLVMBuildShuffleVector(k->b, v, LLVMGetPoison(vty), zeros, "");
}

LLVMValueRef cg_lane_mask(cg_kernel *k, unsigned w, unsigned n) {
  LLVMValueRef bits[64];
  for (unsigned i = 0; i < w; i++) bits[i] = LLVMConstInt(k->t->i1, i < n, 0);
  return LLVMConstVector(bits, w);
}

LLVMValueRef cg_vload(cg_kernel *k, LLVMValueRef base, LLVMValueRef idx, unsigned w, unsigned n) {
  LLVMTypeRef vty = LLVMVectorType(k->t->f32, w);
  LLVMValueRef p = cg_gep(k, k->t->f32, base, idx);
  if (n >= w) {
    LLVMValueRef v = LLVMBuildLoad2(k->b, vty, p, "");
    LLVMSetAlignment(v, 4);
    return v;
  }
  LLVMValueRef args[4] = {p, cg_i32(k, 4), cg_lane_mask(k, w, n), LLVMConstNull(vty)};
  return cg_intrinsic(k, "llvm.masked.load", (LLVMTypeRef[]){vty, k->t->ptr}, 2, args, 4);
}

void cg_vstore(cg_kernel *k, LLVMValueRef v, LLVMValueRef base, LLVMValueRef idx, unsigned w, unsigned n) {
  LLVMValueRef p = cg_gep(k, k->t->f32, base, idx);
  if (n >= w) {
    LLVMValueRef s = LLVMBuildStore(k->b, v, p);
    LLVMSetAlignment(s, 4);
    return;
  }
  LLVMValueRef args[4] = {v, p, cg_i32(k, 4), cg_lane_mask(k, w, n)};
  cg_intrinsic(k, "llvm.masked.store", (LLVMTypeRef[]){LLVMTypeOf(v), k->t->ptr}, 2, args, 4);
}

/* ---- the shared elementwise kernel ----
 * The output is viewed as [outer, inner]: `inner` is the largest suffix of dims
 * along which every input is either contiguous or constant (broadcast), so the
 * inner loop has unit or zero stride and vectorizes.  A tile is a block of
 * rows of the outer space, or, when a row is longer than TILE_ELEMS, one
 * TILE_ELEMS chunk of a row; every element is computed by exactly one tile with
 * the same instructions whatever the thread count.
 *
 * Broadcasting follows numpy, and for the opset < 7 forms (binary ops with
 * broadcast=1 and `axis`, PRelu's per-channel slope) input i > 0 is first
 * reshaped against input 0 by kiln_ew_bshape, the rule the reference uses, so
 * the strides below honour the axis. */
#define MAP_MAX_IN 64
#define TILE_ELEMS 16384

typedef struct map_plan {
  const kiln_node *n;
  int n_in, split;
  const kiln_shape *os;
  bool present[MAP_MAX_IN];
  bool same_as_out[MAP_MAX_IN]; /* read at the output's own flat index */
  bool inner_step[MAP_MAX_IN];  /* contiguous along the inner run (else constant over it) */
  kiln_dtype dts[MAP_MAX_IN];
  int64_t st[MAP_MAX_IN][KILN_MAX_RANK]; /* element strides against the output (0: broadcast) */
  int64_t inner, outer, rows_per_tile, n_chunks;
  kiln_dtype out_dtype;
} map_plan;

/* Emits the tile/row/inner loop nest reading the inputs from ptrs[] and writing y. */
static void map_nest(cg_kernel *k, const map_plan *pl, LLVMValueRef *ptrs, LLVMValueRef y,
                     cg_scalar_body body, void *user) {
  LLVMBuilderRef b = k->b;
  LLVMTypeRef oty = cg_dtype(k, pl->out_dtype);
  cg_loop lt, lr, li;
  LLVMValueRef t = cg_loop_begin(k, &lt, k->lo, k->hi, NULL, "tile");
  LLVMValueRef row_lo, row_hi, j_lo, j_hi;
  if (pl->n_chunks == 1) {
    row_lo = cg_mul(k, t, cg_i64(k, pl->rows_per_tile));
    row_hi = cg_min(k, cg_add(k, row_lo, cg_i64(k, pl->rows_per_tile)), cg_i64(k, pl->outer));
    j_lo = cg_i64(k, 0);
    j_hi = cg_i64(k, pl->inner);
  } else {
    LLVMValueRef nch = cg_i64(k, pl->n_chunks);
    row_lo = LLVMBuildSDiv(b, t, nch, "");
    row_hi = cg_add(k, row_lo, cg_i64(k, 1));
    j_lo = cg_mul(k, LLVMBuildSRem(b, t, nch, ""), cg_i64(k, TILE_ELEMS));
    j_hi = cg_min(k, cg_add(k, j_lo, cg_i64(k, TILE_ELEMS)), cg_i64(k, pl->inner));
  }
  LLVMValueRef row = cg_loop_begin(k, &lr, row_lo, row_hi, NULL, "row");
  /* base offset of each input for this row: sum over outer dims of coord * stride */
  LLVMValueRef base[MAP_MAX_IN];
  for (int i = 0; i < pl->n_in; i++) base[i] = cg_i64(k, 0);
  for (int d = pl->split - 1; d >= 0; d--) {
    bool used = false;
    for (int i = 0; i < pl->n_in; i++)
      if (pl->present[i] && !pl->same_as_out[i] && pl->st[i][d]) used = true;
    if (!used) continue;
    int64_t below = 1; /* rows spanned by one step along dim d */
    for (int q = d + 1; q < pl->split; q++) below *= pl->os->d[q];
    LLVMValueRef c = below == 1 ? row : LLVMBuildSDiv(b, row, cg_i64(k, below), "");
    if (d > 0) c = LLVMBuildSRem(b, c, cg_i64(k, pl->os->d[d]), "");
    for (int i = 0; i < pl->n_in; i++)
      if (pl->present[i] && !pl->same_as_out[i] && pl->st[i][d])
        base[i] = cg_add(k, base[i], cg_mul(k, c, cg_i64(k, pl->st[i][d])));
  }
  LLVMValueRef obase = cg_mul(k, row, cg_i64(k, pl->inner));
  /* inputs constant along the inner run are loaded once per row */
  LLVMValueRef vals[MAP_MAX_IN];
  for (int i = 0; i < pl->n_in; i++) {
    vals[i] = NULL;
    if (pl->present[i] && !pl->same_as_out[i] && !pl->inner_step[i])
      vals[i] = cg_load(k, cg_dtype(k, pl->dts[i]), ptrs[i], base[i]);
  }
  LLVMValueRef j = cg_loop_begin(k, &li, j_lo, j_hi, NULL, "j");
  LLVMValueRef oidx = cg_add(k, obase, j);
  for (int i = 0; i < pl->n_in; i++) {
    if (!pl->present[i] || (!pl->same_as_out[i] && !pl->inner_step[i])) continue;
    LLVMValueRef idx = pl->same_as_out[i] ? oidx : cg_add(k, base[i], j);
    vals[i] = cg_load(k, cg_dtype(k, pl->dts[i]), ptrs[i], idx);
  }
  LLVMValueRef res = body(k, pl->n, vals, pl->dts, user);
  if (LLVMTypeOf(res) != oty) res = LLVMBuildZExt(b, res, oty, ""); /* i1 -> bool byte */
  cg_store(k, res, y, oidx);
  cg_loop_end(k, &li);
  cg_loop_end(k, &lr);
  cg_loop_end(k, &lt);
}

kiln_code cg_emit_map(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                      cg_scalar_body body, void *user, kiln_err *e) {
  const kiln_value *out = ir_out(g, n, 0);
  map_plan *pl = kiln_calloc(1, sizeof *pl);
  if (!pl) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  kiln_code rc = KILN_OK;
  pl->n = n;
  pl->n_in = n->n_in;
  pl->os = &out->shape;
  pl->out_dtype = out->dtype;
  if (n->n_in > MAP_MAX_IN) {
    rc = kiln_errf(e, KILN_ERR_LIMIT, "%d inputs exceed the elementwise kernel's limit of %d",
                   n->n_in, MAP_MAX_IN);
    goto done;
  }
  const kiln_shape *os = &out->shape;
  int r = os->rank;
  int64_t ost[KILN_MAX_RANK];
  kiln_strides(os, ost);
  const kiln_value *in0 = ir_in(g, n, 0);
  bool legacy = n->opset < 7 && in0 &&
                (n->op == KILN_OP_PRelu || kiln_op_attr_spec(n->def, "broadcast"));
  for (int i = 0; i < pl->n_in; i++) {
    const kiln_value *v = ir_in(g, n, i);
    pl->present[i] = v != NULL;
    if (!v) continue;
    pl->dts[i] = v->dtype;
    kiln_shape s = v->shape;
    if (i > 0 && legacy) {
      rc = kiln_ew_bshape(n, &in0->shape, &v->shape, &s, e);
      if (rc) goto done;
    }
    /* broadcast strides of input i against the output (0 on broadcast dims) */
    int64_t acc = 1;
    pl->same_as_out[i] = true;
    for (int d = r - 1; d >= 0; d--) {
      int jd = d - (r - s.rank);
      pl->st[i][d] = (jd < 0 || s.d[jd] == 1) ? 0 : acc;
      if (jd >= 0) acc *= s.d[jd];
      if (os->d[d] != 1 && pl->st[i][d] != ost[d]) pl->same_as_out[i] = false;
    }
  }
  /* the inner suffix: dims [split, r) such that each input's strides over them are
   * either all zero or exactly the contiguous strides of the output */
  int split = r;
  for (int d = r - 1; d >= 0; d--) {
    bool ok = true;
    for (int i = 0; i < pl->n_in && ok; i++) {
      if (!pl->present[i]) continue;
      bool all_zero = true, contiguous = true;
      for (int q = d; q < r; q++) {
        if (pl->st[i][q] != 0) all_zero = false;
        if (pl->st[i][q] != ost[q] && os->d[q] != 1) contiguous = false;
      }
      if (!all_zero && !contiguous) ok = false;
    }
    if (!ok) break;
    split = d;
  }
  pl->split = split;
  pl->inner = 1;
  pl->outer = 1;
  for (int d = split; d < r; d++) pl->inner *= os->d[d];
  for (int d = 0; d < split; d++) pl->outer *= os->d[d];
  if (pl->inner * pl->outer == 0) goto done; /* nothing to compute: no step */
  for (int i = 0; i < pl->n_in; i++) {
    pl->inner_step[i] = false;
    if (!pl->present[i]) continue;
    for (int d = split; d < r; d++)
      if (pl->st[i][d] != 0) pl->inner_step[i] = true;
  }
  int64_t n_tiles;
  if (pl->inner > TILE_ELEMS) {
    pl->rows_per_tile = 1;
    pl->n_chunks = (pl->inner + TILE_ELEMS - 1) / TILE_ELEMS;
    n_tiles = pl->outer * pl->n_chunks;
  } else {
    pl->n_chunks = 1;
    pl->rows_per_tile = TILE_ELEMS / pl->inner;
    if (pl->rows_per_tile > pl->outer) pl->rows_per_tile = pl->outer;
    n_tiles = (pl->outer + pl->rows_per_tile - 1) / pl->rows_per_tile;
  }

  cg_kernel k;
  char label[128];
  snprintf(label, sizeof label, "map_%s", n->def->name);
  rc = cg_kernel_begin(cx, &k, label, pl->n_in + 1, e);
  if (rc) goto done;
  LLVMValueRef y = cg_arg(&k, pl->n_in);
  LLVMValueRef ptrs[MAP_MAX_IN];
  for (int i = 0; i < pl->n_in; i++) ptrs[i] = pl->present[i] ? cg_arg(&k, i) : NULL;
  /* The memory planner may run an in-place op with input 0 and the output in one
   * buffer.  The vectorizer's runtime alias check fails for exactly equal ranges, so
   * that case gets its own loop reading input 0 through the output pointer at the
   * output's index: a dependence distance of 0 that vectorizes without checks. */
  bool version = (n->def->flags & KILN_OPF_INPLACE_OK) && pl->present[0] && pl->same_as_out[0] &&
                 kiln_dtype_size(pl->dts[0]) == kiln_dtype_size(out->dtype);
  if (version) {
    LLVMBasicBlockRef alias_bb = LLVMAppendBasicBlockInContext(k.ctx, k.fn, "inplace");
    LLVMBasicBlockRef sep_bb = LLVMAppendBasicBlockInContext(k.ctx, k.fn, "separate");
    LLVMBasicBlockRef end_bb = LLVMAppendBasicBlockInContext(k.ctx, k.fn, "end");
    LLVMBuildCondBr(k.b, LLVMBuildICmp(k.b, LLVMIntEQ, ptrs[0], y, ""), alias_bb, sep_bb);
    LLVMPositionBuilderAtEnd(k.b, alias_bb);
    LLVMValueRef aptrs[MAP_MAX_IN];
    memcpy(aptrs, ptrs, sizeof(LLVMValueRef) * (size_t)pl->n_in);
    aptrs[0] = y;
    map_nest(&k, pl, aptrs, y, body, user);
    LLVMBuildBr(k.b, end_bb);
    LLVMPositionBuilderAtEnd(k.b, sep_bb);
    map_nest(&k, pl, ptrs, y, body, user);
    LLVMBuildBr(k.b, end_bb);
    LLVMPositionBuilderAtEnd(k.b, end_bb);
  } else {
    map_nest(&k, pl, ptrs, y, body, user);
  }
  int bufs[MAP_MAX_IN + 1];
  for (int i = 0; i < pl->n_in; i++) bufs[i] = n->in[i];
  bufs[pl->n_in] = n->out[0];
  rc = cg_kernel_end(cx, &k, n_tiles, bufs, e);
done:
  kiln_free(pl);
  return rc;
}
