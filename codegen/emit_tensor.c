/* emit_tensor.c — emitters of the tensor op family.  Everything but Gather is a copy
 * (emit_copy.h): the reshaping ops are contiguous copies (none at all when the planner runs them
 * in place), Transpose/Slice/Expand are affine gathers, Concat is one copy per input into a box
 * of the output, Split one copy per output, and Constant/Shape/ConstantOfShape (normally folded
 * before compilation) copy or broadcast a compile-time constant.
 *
 * Gather reads its indices at run time.  A kernel cannot return an error, so an index outside
 * [-dim, dim) yields rows of zeros where the reference reports an error (constant indices are
 * checked by shape inference, so this only concerns indices fed at run time). */
#include <string.h>

#include "codegen/emit_copy.h"
#include "ir/ops/common.h"
#include "ir/ops/tensor_ops.h"

#define MAX_ARGS 64

static void set_label(char *buf, size_t len, const char *what, const kiln_node *n) {
  snprintf(buf, len, "%s_%s", what, n->def->name);
}

/* A copy from bufs[src_arg] to bufs[dst_arg]; the caller fills dims and strides. */
static cg_copy copy_base(const char *label, kiln_dtype dt, const int *bufs, int n_bufs, int src_arg,
                         int dst_arg) {
  cg_copy c;
  memset(&c, 0, sizeof c);
  c.label = label;
  c.dtype = dt;
  c.bufs = bufs;
  c.n_bufs = n_bufs;
  c.src_arg = src_arg;
  c.dst_arg = dst_arg;
  c.fill_arg = -1;
  return c;
}

/* The whole of a contiguous source into a contiguous destination of the same size. */
static void copy_flat(cg_copy *c, const kiln_shape *s) {
  int64_t numel = 1;
  for (int d = 0; d < s->rank; d++) numel *= s->d[d];
  c->rank = 1;
  c->dims[0] = numel;
  c->src_stride[0] = c->dst_stride[0] = 1;
}

/* ---- reshaping ops: the bytes do not change ----
 * All node inputs are passed (unused but for input 0) so that the in-place planner, which
 * wants the node's operands, may alias the output to input 0; the kernel then does nothing. */
static kiln_code emit_reshape_like(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                                   kiln_err *e) {
  const kiln_value *y = ir_out(g, n, 0);
  int bufs[MAX_ARGS];
  if (n->n_in + 1 > MAX_ARGS) return kiln_errf(e, KILN_ERR_LIMIT, "too many inputs");
  for (int i = 0; i < n->n_in; i++) bufs[i] = n->in[i];
  bufs[n->n_in] = n->out[0];
  char label[64];
  set_label(label, sizeof label, "copy", n);
  cg_copy c = copy_base(label, y->dtype, bufs, n->n_in + 1, 0, n->n_in);
  copy_flat(&c, &y->shape);
  return cg_emit_copy(cx, &c, e);
}

/* ---- compile-time constants ---- */

/* Copies the constant tensor t (kept in a constant buffer) into output 0. */
static kiln_code emit_const_tensor(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                                   const kiln_tensor *t, kiln_err *e) {
  const kiln_value *y = ir_out(g, n, 0);
  if (t->dtype != y->dtype)
    return kiln_errf(e, KILN_ERR_INTERNAL, "constant disagrees with shape inference");
  int64_t numel;
  kiln_shape_numel(&y->shape, &numel);
  if (numel != t->numel) return kiln_errf(e, KILN_ERR_INTERNAL, "constant has the wrong size");
  if (numel == 0) return KILN_OK;
  int id = cg_buf_const(cx, t->data, kiln_tensor_nbytes(t), e);
  if (id < 0) return e->code;
  int bufs[2] = {id, n->out[0]};
  char label[64];
  set_label(label, sizeof label, "copy", n);
  cg_copy c = copy_base(label, y->dtype, bufs, 2, 0, 1);
  copy_flat(&c, &y->shape);
  return cg_emit_copy(cx, &c, e);
}

static kiln_code emit_Constant(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                               kiln_err *e) {
  kiln_tensor *t;
  KILN_TRY(kiln_constant_value(n, &t, e));
  kiln_code rc = emit_const_tensor(cx, g, n, t, e);
  kiln_tensor_free(t);
  return rc;
}

static kiln_code emit_Shape(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                            kiln_err *e) {
  const kiln_value *x = ir_in(g, n, 0);
  int start, end;
  kiln_shape_op_range(n, x->shape.rank, &start, &end);
  kiln_shape s = kiln_shape_make(1, (int64_t[]){end - start});
  kiln_tensor *t;
  KILN_TRY(kiln_tensor_new(KILN_I64, &s, &t, e));
  for (int i = start; i < end; i++) ((int64_t *)t->data)[i - start] = x->shape.d[i];
  kiln_code rc = emit_const_tensor(cx, g, n, t, e);
  kiln_tensor_free(t);
  return rc;
}

/* A fill kernel (for outputs too large to fold). */
static kiln_code emit_ConstantOfShape(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                                      kiln_err *e) {
  const kiln_value *y = ir_out(g, n, 0);
  const kiln_tensor *v = ir_attr_tensor(n, "value");
  uint64_t bits = 0; /* default: float 0 */
  if (v) {
    if (v->numel != 1 || v->dtype != y->dtype)
      return kiln_errf(e, KILN_ERR_INTERNAL, "attribute 'value' disagrees with shape inference");
    memcpy(&bits, v->data, kiln_dtype_size(v->dtype));
  }
  int bufs[2] = {n->in[0], n->out[0]};
  char label[64];
  set_label(label, sizeof label, "fill", n);
  cg_copy c = copy_base(label, y->dtype, bufs, 2, 0, 1);
  copy_flat(&c, &y->shape);
  c.src_empty = true;
  c.fill_bits = bits;
  return cg_emit_copy(cx, &c, e);
}

/* ---- affine gathers ---- */

static kiln_code emit_Transpose(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                                kiln_err *e) {
  const kiln_value *x = ir_in(g, n, 0), *y = ir_out(g, n, 0);
  int r = x->shape.rank;
  int64_t perm[KILN_MAX_RANK], xs[KILN_MAX_RANK];
  const int64_t *p;
  if (ir_attr_ints(n, "perm", &p) == r && p)
    memcpy(perm, p, sizeof(int64_t) * (size_t)r);
  else
    for (int i = 0; i < r; i++) perm[i] = r - 1 - i;
  kiln_strides(&x->shape, xs);
  int bufs[2] = {n->in[0], n->out[0]};
  cg_copy c = copy_base("copy_Transpose", y->dtype, bufs, 2, 0, 1);
  c.rank = r;
  for (int i = 0; i < r; i++) {
    c.dims[i] = y->shape.d[i];
    c.src_stride[i] = xs[perm[i]];
  }
  cg_contig_strides(r, c.dims, c.dst_stride);
  return cg_emit_copy(cx, &c, e);
}

static kiln_code emit_Expand(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                             kiln_err *e) {
  const kiln_value *x = ir_in(g, n, 0), *y = ir_out(g, n, 0);
  int r = y->shape.rank;
  int bufs[3] = {n->in[0], n->in[1], n->out[0]};
  cg_copy c = copy_base("copy_Expand", y->dtype, bufs, 3, 0, 2);
  c.rank = r;
  int64_t acc = 1;
  for (int i = r - 1; i >= 0; i--) { /* broadcast strides: 0 on broadcast axes */
    int j = i - (r - x->shape.rank);
    c.dims[i] = y->shape.d[i];
    c.src_stride[i] = (j < 0 || x->shape.d[j] == 1) ? 0 : acc;
    if (j >= 0) acc *= x->shape.d[j];
  }
  cg_contig_strides(r, c.dims, c.dst_stride);
  return cg_emit_copy(cx, &c, e);
}

/* Slice's arguments, from attributes (opset < 10) or constant inputs, resolved. */
static kiln_code slice_plan(const kiln_graph *g, const kiln_node *n, const kiln_shape *x,
                            kiln_slice_plan *p, kiln_err *e) {
  int64_t st[KILN_MAX_RANK], en[KILN_MAX_RANK], ax[KILN_MAX_RANK], sp[KILN_MAX_RANK];
  int ns = 0, ne = 0, na = 0, nst = 0;
  bool has_axes, has_steps = false;
  if (n->opset < 10) {
    const int64_t *a;
    if (ir_attr_ints(n, "starts", &a) > KILN_MAX_RANK ||
        ir_attr_ints(n, "ends", &a) > KILN_MAX_RANK ||
        ir_attr_ints(n, "axes", &a) > KILN_MAX_RANK)
      return kiln_errf(e, KILN_ERR_LIMIT, "too many Slice arguments");
    ns = (int)ir_attr_ints(n, "starts", &a);
    if (ns) memcpy(st, a, sizeof(int64_t) * (size_t)ns);
    ne = (int)ir_attr_ints(n, "ends", &a);
    if (ne) memcpy(en, a, sizeof(int64_t) * (size_t)ne);
    has_axes = ir_attr_has(n, "axes");
    na = (int)ir_attr_ints(n, "axes", &a);
    if (na) memcpy(ax, a, sizeof(int64_t) * (size_t)na);
  } else {
    KILN_TRY(ir_const_ints(g, n, 1, st, KILN_MAX_RANK, &ns, e));
    KILN_TRY(ir_const_ints(g, n, 2, en, KILN_MAX_RANK, &ne, e));
    has_axes = ir_in(g, n, 3) != NULL;
    if (has_axes) KILN_TRY(ir_const_ints(g, n, 3, ax, KILN_MAX_RANK, &na, e));
    has_steps = ir_in(g, n, 4) != NULL;
    if (has_steps) KILN_TRY(ir_const_ints(g, n, 4, sp, KILN_MAX_RANK, &nst, e));
  }
  if (ne != ns || (has_axes && na != ns) || (has_steps && nst != ns))
    return kiln_errf(e, KILN_ERR_SHAPE, "Slice arguments differ in length");
  return kiln_slice_resolve(x, st, en, has_axes ? ax : NULL, has_steps ? sp : NULL, ns, p, e);
}

static kiln_code emit_Slice(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                            kiln_err *e) {
  const kiln_value *x = ir_in(g, n, 0), *y = ir_out(g, n, 0);
  kiln_slice_plan p;
  KILN_TRY(slice_plan(g, n, &x->shape, &p, e));
  if (!kiln_shape_eq(&p.out, &y->shape))
    return kiln_errf(e, KILN_ERR_INTERNAL, "Slice output shape disagrees with shape inference");
  int64_t xs[KILN_MAX_RANK];
  kiln_strides(&x->shape, xs);
  int bufs[2] = {n->in[0], n->out[0]};
  cg_copy c = copy_base("copy_Slice", y->dtype, bufs, 2, 0, 1);
  c.rank = x->shape.rank;
  for (int a = 0; a < c.rank; a++) {
    c.dims[a] = p.out.d[a];
    c.src_off += p.start[a] * xs[a];
    c.src_stride[a] = p.step[a] * xs[a];
  }
  cg_contig_strides(c.rank, c.dims, c.dst_stride);
  return cg_emit_copy(cx, &c, e);
}

/* One copy per input, each into its box of the output. */
static kiln_code emit_Concat(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                             kiln_err *e) {
  const kiln_value *y = ir_out(g, n, 0);
  int axis;
  KILN_TRY(ir_axis(ir_attr_int(n, "axis"), y->shape.rank, &axis, e));
  int64_t ys[KILN_MAX_RANK], off = 0;
  kiln_strides(&y->shape, ys);
  for (int k = 0; k < n->n_in; k++) {
    const kiln_value *x = ir_in(g, n, k);
    int bufs[2] = {n->in[k], n->out[0]};
    cg_copy c = copy_base("copy_Concat", y->dtype, bufs, 2, 0, 1);
    c.rank = x->shape.rank;
    memcpy(c.dims, x->shape.d, sizeof(int64_t) * (size_t)c.rank);
    cg_contig_strides(c.rank, c.dims, c.src_stride);
    memcpy(c.dst_stride, ys, sizeof ys);
    c.dst_off = off * ys[axis];
    KILN_TRY(cg_emit_copy(cx, &c, e));
    off += x->shape.d[axis];
  }
  return KILN_OK;
}

/* One copy per (present) output, each from its box of the input. */
static kiln_code emit_Split(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                            kiln_err *e) {
  const kiln_value *x = ir_in(g, n, 0);
  if (n->n_out > 64) return kiln_errf(e, KILN_ERR_LIMIT, "Split has more than 64 outputs");
  int64_t split[64], sizes[64];
  const int64_t *sp = NULL;
  int64_t ns = 0;
  if (ir_in(g, n, 1)) {
    int cnt;
    KILN_TRY(ir_const_ints(g, n, 1, split, 64, &cnt, e));
    sp = split;
    ns = cnt;
  } else if (ir_attr_has(n, "split")) {
    ns = ir_attr_ints(n, "split", &sp);
  }
  int axis;
  KILN_TRY(kiln_split_sizes(n, &x->shape, sp, ns, &axis, sizes, e));
  int64_t xs[KILN_MAX_RANK], off = 0;
  kiln_strides(&x->shape, xs);
  for (int k = 0; k < n->n_out; k++) {
    const kiln_value *y = ir_out(g, n, k);
    if (y) {
      int bufs[2] = {n->in[0], n->out[k]};
      cg_copy c = copy_base("copy_Split", x->dtype, bufs, 2, 0, 1);
      c.rank = x->shape.rank;
      memcpy(c.dims, x->shape.d, sizeof(int64_t) * (size_t)c.rank);
      c.dims[axis] = sizes[k];
      memcpy(c.src_stride, xs, sizeof xs);
      c.src_off = off * xs[axis];
      cg_contig_strides(c.rank, c.dims, c.dst_stride);
      KILN_TRY(cg_emit_copy(cx, &c, e));
    }
    off += sizes[k];
  }
  return KILN_OK;
}

/* ---- Gather ----
 * Rows are (outer, index) pairs: each copies `inner` contiguous elements of x, or writes zeros
 * for an out-of-range index. */
static kiln_code emit_Gather(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                             kiln_err *e) {
  const kiln_value *x = ir_in(g, n, 0), *ind = ir_in(g, n, 1), *y = ir_out(g, n, 0);
  int axis;
  KILN_TRY(ir_axis(ir_attr_int(n, "axis"), x->shape.rank, &axis, e));
  int64_t outer = 1, inner = 1, dim = x->shape.d[axis], ni;
  for (int i = 0; i < axis; i++) outer *= x->shape.d[i];
  for (int i = axis + 1; i < x->shape.rank; i++) inner *= x->shape.d[i];
  kiln_shape_numel(&ind->shape, &ni);
  if (outer * ni * inner == 0) return KILN_OK;
  cg_rows rp;
  cg_rows_plan(&rp, outer * ni, inner, CG_TILE_ELEMS);
  int status = cg_buf_status(cx, e);
  if (status < 0) return e->code;
  cg_kernel k;
  KILN_TRY(cg_kernel_begin(cx, &k, "gather", 4, e));
  LLVMBuilderRef b = k.b;
  LLVMTypeRef ety = cg_bits_type(&k, y->dtype);
  size_t es = kiln_dtype_size(y->dtype);
  LLVMValueRef xp = cg_arg(&k, 0), ip = cg_arg(&k, 1), yp = cg_arg(&k, 2);
  LLVMValueRef row, jlo, jhi;
  cg_rows_begin(&k, &rp, &row, &jlo, &jhi);
  LLVMValueRef o = LLVMBuildUDiv(b, row, cg_i64(&k, ni), "");
  LLVMValueRef j = LLVMBuildURem(b, row, cg_i64(&k, ni), "");
  LLVMValueRef idx = cg_load(&k, cg_dtype(&k, ind->dtype), ip, j);
  if (ind->dtype != KILN_I64) idx = LLVMBuildSExt(b, idx, k.t->i64, "");
  LLVMValueRef neg = LLVMBuildICmp(b, LLVMIntSLT, idx, cg_i64(&k, 0), "");
  idx = cg_select(&k, neg, cg_add(&k, idx, cg_i64(&k, dim)), idx);
  /* unsigned compare: also false for what is still negative */
  LLVMValueRef ok = LLVMBuildICmp(b, LLVMIntULT, idx, cg_i64(&k, dim), "");
  LLVMValueRef dstbase = cg_mul(&k, row, cg_i64(&k, inner));
  cg_ifelse ie;
  cg_ifelse_begin(&k, &ie, ok);
  LLVMValueRef srcrow = cg_add(&k, cg_mul(&k, o, cg_i64(&k, dim)), idx);
  LLVMValueRef srcbase = cg_mul(&k, srcrow, cg_i64(&k, inner));
  cg_copy_run(&k, ety, es, yp, cg_add(&k, dstbase, jlo), xp, cg_add(&k, srcbase, jlo),
              LLVMBuildNSWSub(b, jhi, jlo, ""));
  cg_ifelse_else(&k, &ie);
  /* out of range: zeros, and the runner reports the error (never a silent result) */
  cg_fill_loop(&k, yp, dstbase, 1, jlo, jhi, LLVMConstInt(ety, 0, 0));
  cg_flag_error(&k, cg_arg(&k, 3));
  cg_ifelse_end(&k, &ie);
  cg_rows_end(&k, &rp);
  return cg_kernel_end_checked(cx, &k, rp.n_tiles, (int[]){n->in[0], n->in[1], n->out[0], status},
                               "an index in the indices input is out of range", e);
}

void cg_register_tensor(kiln_emit_fn *table) {
  table[KILN_OP_Constant] = emit_Constant;
  table[KILN_OP_ConstantOfShape] = emit_ConstantOfShape;
  table[KILN_OP_Shape] = emit_Shape;
  table[KILN_OP_Flatten] = emit_reshape_like;
  table[KILN_OP_Reshape] = emit_reshape_like;
  table[KILN_OP_Squeeze] = emit_reshape_like;
  table[KILN_OP_Unsqueeze] = emit_reshape_like;
  table[KILN_OP_Transpose] = emit_Transpose;
  table[KILN_OP_Concat] = emit_Concat;
  table[KILN_OP_Split] = emit_Split;
  table[KILN_OP_Slice] = emit_Slice;
  table[KILN_OP_Gather] = emit_Gather;
  table[KILN_OP_Expand] = emit_Expand;
}
