/* emit_util.c — IR-building helpers for emitters: constants, loops, memory
 * access, intrinsic and runtime calls, and the shared elementwise kernel
 * (cg_emit_map) that every elementwise op uses with its own scalar body. */
#include <string.h>

#include "codegen/emit.h"

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

/* ---- the shared elementwise kernel ----
 * The output is viewed as [outer, inner]: `inner` is the largest suffix of dims
 * along which every input is either contiguous or constant (broadcast), so the
 * inner loop has unit or zero stride and vectorizes.  Tiles split `outer`
 * (or, when outer is 1, `inner` in chunks). */
#define MAP_MAX_IN 16
#define TILE_ELEMS 16384

kiln_code cg_emit_map(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n, cg_scalar_body body,
                      void *user, kiln_err *e) {
  const kiln_value *out = ir_out(g, n, 0);
  int n_in = n->n_in;
  if (n_in > MAP_MAX_IN) return kiln_errf(e, KILN_ERR_LIMIT, "too many inputs for an elementwise kernel");
  const kiln_shape *os = &out->shape;
  int r = os->rank;
  int64_t st[MAP_MAX_IN][KILN_MAX_RANK];
  kiln_dtype dts[MAP_MAX_IN];
  bool present[MAP_MAX_IN];
  for (int i = 0; i < n_in; i++) {
    const kiln_value *v = ir_in(g, n, i);
    present[i] = v != NULL;
    if (!v) continue;
    dts[i] = v->dtype;
    /* broadcast strides of input i against the output (0 on broadcast dims) */
    int64_t acc = 1;
    for (int d = r - 1; d >= 0; d--) {
      int j = d - (r - v->shape.rank);
      st[i][d] = (j < 0 || v->shape.d[j] == 1) ? 0 : acc;
      if (j >= 0) acc *= v->shape.d[j];
    }
  }
  /* find the inner suffix: dims [split, r) such that each input's strides over
   * them are either all zero or exactly the contiguous strides of the output. */
  int64_t ost[KILN_MAX_RANK];
  kiln_strides(os, ost);
  int split = r;
  for (int d = r - 1; d >= 0; d--) {
    bool ok = true;
    for (int i = 0; i < n_in && ok; i++) {
      if (!present[i]) continue;
      bool all_zero = true, contiguous = true;
      for (int q = d; q < r; q++) {
        if (st[i][q] != 0) all_zero = false;
        if (st[i][q] != ost[q] && os->d[q] != 1) contiguous = false;
      }
      if (!all_zero && !contiguous) ok = false;
    }
    if (!ok) break;
    split = d;
  }
  int64_t inner = 1, outer = 1;
  for (int d = split; d < r; d++) inner *= os->d[d];
  for (int d = 0; d < split; d++) outer *= os->d[d];
  int64_t numel = inner * outer;
  if (numel == 0) return KILN_OK; /* nothing to compute: no step */
  /* per input: is the inner run contiguous (1) or broadcast (0)? */
  int inner_step[MAP_MAX_IN];
  for (int i = 0; i < n_in; i++) {
    inner_step[i] = 0;
    if (!present[i]) continue;
    for (int d = split; d < r; d++)
      if (st[i][d] != 0) inner_step[i] = 1;
  }
  /* tiles: rows of the outer space, or chunks of the inner run when outer is small */
  int64_t chunk = inner, n_chunks = 1;
  if (outer == 1 && inner > TILE_ELEMS) {
    chunk = TILE_ELEMS;
    n_chunks = (inner + chunk - 1) / chunk;
  }
  int64_t rows_per_tile = 1;
  if (inner < TILE_ELEMS) rows_per_tile = TILE_ELEMS / inner;
  if (rows_per_tile > outer) rows_per_tile = outer;
  int64_t n_tiles = outer == 1 ? n_chunks : (outer + rows_per_tile - 1) / rows_per_tile;

  cg_kernel k;
  char label[128];
  snprintf(label, sizeof label, "map_%s", n->def->name);
  KILN_TRY(cg_kernel_begin(cx, &k, label, n_in + 1, e));
  LLVMBuilderRef b = k.b;
  LLVMTypeRef oty = cg_dtype(&k, out->dtype);
  LLVMValueRef y = cg_arg(&k, n_in);
  /* row range of this call */
  LLVMValueRef row_lo, row_hi, in_lo, in_hi;
  if (outer == 1) {
    row_lo = cg_i64(&k, 0);
    row_hi = cg_i64(&k, 1);
    in_lo = cg_mul(&k, k.lo, cg_i64(&k, chunk));
    in_hi = cg_min(&k, cg_mul(&k, k.hi, cg_i64(&k, chunk)), cg_i64(&k, inner));
  } else {
    row_lo = cg_mul(&k, k.lo, cg_i64(&k, rows_per_tile));
    row_hi = cg_min(&k, cg_mul(&k, k.hi, cg_i64(&k, rows_per_tile)), cg_i64(&k, outer));
    in_lo = cg_i64(&k, 0);
    in_hi = cg_i64(&k, inner);
  }
  cg_loop lr, li;
  LLVMValueRef row = cg_loop_begin(&k, &lr, row_lo, row_hi, NULL, "row");
  /* base offset of each input for this row: sum over outer dims of coord * stride */
  LLVMValueRef base[MAP_MAX_IN];
  {
    LLVMValueRef rem = row;
    for (int i = 0; i < n_in; i++) base[i] = cg_i64(&k, 0);
    for (int d = split - 1; d >= 0; d--) {
      LLVMValueRef dim = cg_i64(&k, os->d[d]);
      LLVMValueRef c = LLVMBuildSRem(b, rem, dim, "");
      rem = LLVMBuildSDiv(b, rem, dim, "");
      for (int i = 0; i < n_in; i++)
        if (present[i] && st[i][d]) base[i] = cg_add(&k, base[i], cg_mul(&k, c, cg_i64(&k, st[i][d])));
    }
  }
  LLVMValueRef obase = cg_mul(&k, row, cg_i64(&k, inner));
  LLVMValueRef j = cg_loop_begin(&k, &li, in_lo, in_hi, NULL, "j");
  LLVMValueRef vals[MAP_MAX_IN];
  for (int i = 0; i < n_in; i++) {
    if (!present[i]) {
      vals[i] = NULL;
      continue;
    }
    LLVMValueRef idx = inner_step[i] ? cg_add(&k, base[i], j) : base[i];
    vals[i] = cg_load(&k, cg_dtype(&k, dts[i]), cg_arg(&k, i), idx);
  }
  LLVMValueRef res = body(&k, n, vals, dts, user);
  if (LLVMTypeOf(res) != oty) { /* bools computed as i1 are stored as bytes */
    res = LLVMBuildZExt(b, res, oty, "");
  }
  cg_store(&k, res, y, cg_add(&k, obase, j));
  cg_loop_end(&k, &li);
  cg_loop_end(&k, &lr);
  int bufs[MAP_MAX_IN + 1];
  for (int i = 0; i < n_in; i++) bufs[i] = n->in[i];
  bufs[n_in] = n->out[0];
  return cg_kernel_end(cx, &k, n_tiles, bufs, e);
}
