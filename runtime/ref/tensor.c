/* tensor.c — reference kernels of the tensor/shape family.  They move bytes, so
 * one loop serves every dtype; the element size comes from the tensor. */
#include <stdio.h>
#include <string.h>

#include "ir/ops/tensor_ops.h"
#include "runtime/ref/ref_util.h"

#define BYTES(t) ((uint8_t *)(t)->data)
#define CBYTES(t) ((const uint8_t *)(t)->data)

static size_t esize(const kiln_tensor *t) { return kiln_dtype_size(t->dtype); }

/* Name of input i for messages ("input 1" when the graph is not at hand). */
static const char *in_name(const kiln_ref_ctx *ctx, const kiln_node *n, int i, char *buf,
                           size_t len) {
  if (ctx && ctx->g && i < n->n_in && n->in[i] >= 0) return ctx->g->values[n->in[i]].name;
  snprintf(buf, len, "input %d", i);
  return buf;
}

/* Copies the input unchanged: the ops that only relabel the shape. */
static kiln_code copy_all(const kiln_tensor *in, kiln_tensor *out, kiln_err *e) {
  if (in->numel != out->numel || in->dtype != out->dtype)
    return kiln_errf(e, KILN_ERR_INTERNAL, "reshaping kernel got %lld elements for %lld",
                     (long long)in->numel, (long long)out->numel);
  memcpy(out->data, in->data, kiln_tensor_nbytes(out));
  return KILN_OK;
}

kiln_code ref_Constant(const kiln_ref_ctx *ctx, const kiln_node *n, const kiln_tensor *const *in,
                       kiln_tensor *const *out, kiln_err *e) {
  (void)ctx, (void)in;
  kiln_tensor *t;
  KILN_TRY(kiln_constant_value(n, &t, e));
  kiln_code rc = copy_all(t, out[0], e);
  kiln_tensor_free(t);
  return rc;
}

kiln_code ref_ConstantOfShape(const kiln_ref_ctx *ctx, const kiln_node *n,
                              const kiln_tensor *const *in, kiln_tensor *const *out, kiln_err *e) {
  (void)ctx, (void)in, (void)e;
  const kiln_tensor *v = ir_attr_tensor(n, "value");
  size_t es = esize(out[0]);
  if (!v) {
    memset(out[0]->data, 0, kiln_tensor_nbytes(out[0])); /* float 0 */
    return KILN_OK;
  }
  for (int64_t i = 0; i < out[0]->numel; i++) memcpy(BYTES(out[0]) + (size_t)i * es, v->data, es);
  return KILN_OK;
}

kiln_code ref_Shape(const kiln_ref_ctx *ctx, const kiln_node *n, const kiln_tensor *const *in,
                    kiln_tensor *const *out, kiln_err *e) {
  (void)ctx, (void)e;
  int start, end;
  kiln_shape_op_range(n, in[0]->shape.rank, &start, &end);
  for (int i = start; i < end; i++) I64(out[0])[i - start] = in[0]->shape.d[i];
  return KILN_OK;
}

kiln_code ref_Flatten(const kiln_ref_ctx *ctx, const kiln_node *n, const kiln_tensor *const *in,
                      kiln_tensor *const *out, kiln_err *e) {
  (void)ctx, (void)n;
  return copy_all(in[0], out[0], e);
}

kiln_code ref_Reshape(const kiln_ref_ctx *ctx, const kiln_node *n, const kiln_tensor *const *in,
                      kiln_tensor *const *out, kiln_err *e) {
  (void)ctx, (void)n;
  return copy_all(in[0], out[0], e);
}

kiln_code ref_Squeeze(const kiln_ref_ctx *ctx, const kiln_node *n, const kiln_tensor *const *in,
                      kiln_tensor *const *out, kiln_err *e) {
  (void)ctx, (void)n;
  return copy_all(in[0], out[0], e);
}

kiln_code ref_Unsqueeze(const kiln_ref_ctx *ctx, const kiln_node *n, const kiln_tensor *const *in,
                        kiln_tensor *const *out, kiln_err *e) {
  (void)ctx, (void)n;
  return copy_all(in[0], out[0], e);
}

kiln_code ref_Transpose(const kiln_ref_ctx *ctx, const kiln_node *n, const kiln_tensor *const *in,
                        kiln_tensor *const *out, kiln_err *e) {
  (void)ctx, (void)e;
  const kiln_tensor *x = in[0];
  kiln_tensor *y = out[0];
  int r = x->shape.rank;
  int64_t perm[KILN_MAX_RANK], xs[KILN_MAX_RANK], idx[KILN_MAX_RANK];
  const int64_t *p;
  if (ir_attr_ints(n, "perm", &p) == r && p)
    memcpy(perm, p, sizeof(int64_t) * (size_t)r);
  else
    for (int i = 0; i < r; i++) perm[i] = r - 1 - i;
  kiln_strides(&x->shape, xs);
  size_t es = esize(x);
  for (int64_t o = 0; o < y->numel; o++) {
    ref_unflatten(o, &y->shape, idx);
    int64_t src = 0;
    for (int i = 0; i < r; i++) src += idx[i] * xs[perm[i]];
    memcpy(BYTES(y) + (size_t)o * es, CBYTES(x) + (size_t)src * es, es);
  }
  return KILN_OK;
}

/* Product of dims [from, to) of s. */
static int64_t dims_prod(const kiln_shape *s, int from, int to) {
  int64_t p = 1;
  for (int i = from; i < to; i++) p *= s->d[i];
  return p;
}

kiln_code ref_Concat(const kiln_ref_ctx *ctx, const kiln_node *n, const kiln_tensor *const *in,
                     kiln_tensor *const *out, kiln_err *e) {
  (void)ctx;
  kiln_tensor *y = out[0];
  int axis;
  KILN_TRY(ir_axis(ir_attr_int(n, "axis"), y->shape.rank, &axis, e));
  int64_t outer = dims_prod(&y->shape, 0, axis);
  int64_t inner = dims_prod(&y->shape, axis + 1, y->shape.rank);
  size_t es = esize(y);
  int64_t row = y->shape.d[axis] * inner; /* elements of y per outer index */
  for (int64_t o = 0; o < outer; o++) {
    int64_t off = 0;
    for (int k = 0; k < n->n_in; k++) {
      int64_t chunk = in[k]->shape.d[axis] * inner;
      if (chunk)
        memcpy(BYTES(y) + (size_t)(o * row + off) * es, CBYTES(in[k]) + (size_t)(o * chunk) * es,
               (size_t)chunk * es);
      off += chunk;
    }
  }
  return KILN_OK;
}

kiln_code ref_Split(const kiln_ref_ctx *ctx, const kiln_node *n, const kiln_tensor *const *in,
                    kiln_tensor *const *out, kiln_err *e) {
  (void)ctx;
  const kiln_tensor *x = in[0];
  int64_t split[64], sizes[64];
  const int64_t *sp = NULL;
  int64_t ns = 0;
  if (n->n_out > 64) return kiln_errf(e, KILN_ERR_LIMIT, "Split has more than 64 outputs");
  if (n->n_in > 1 && in[1]) {
    if (in[1]->numel > 64) return kiln_errf(e, KILN_ERR_LIMIT, "'split' has more than 64 sizes");
    for (int64_t i = 0; i < in[1]->numel; i++) split[i] = kiln_tensor_get_i(in[1], i);
    sp = split;
    ns = in[1]->numel;
  } else if (ir_attr_has(n, "split")) {
    ns = ir_attr_ints(n, "split", &sp);
  }
  int axis;
  KILN_TRY(kiln_split_sizes(n, &x->shape, sp, ns, &axis, sizes, e));
  int64_t outer = dims_prod(&x->shape, 0, axis);
  int64_t inner = dims_prod(&x->shape, axis + 1, x->shape.rank);
  int64_t dim = x->shape.d[axis];
  size_t es = esize(x);
  int64_t off = 0; /* start of part k along the axis */
  for (int k = 0; k < n->n_out; k++) {
    int64_t chunk = sizes[k] * inner;
    if (out[k] && chunk)
      for (int64_t o = 0; o < outer; o++)
        memcpy(BYTES(out[k]) + (size_t)(o * chunk) * es,
               CBYTES(x) + (size_t)((o * dim + off) * inner) * es, (size_t)chunk * es);
    off += sizes[k];
  }
  return KILN_OK;
}

/* Reads a 1-D index input (starts/ends/axes/steps) into v; *count = its length. */
static kiln_code read_index_input(const kiln_tensor *t, int64_t *v, int *count, kiln_err *e) {
  if (t->numel > KILN_MAX_RANK)
    return kiln_errf(e, KILN_ERR_LIMIT, "Slice argument has %lld entries; at most %d",
                     (long long)t->numel, KILN_MAX_RANK);
  for (int64_t i = 0; i < t->numel; i++) v[i] = kiln_tensor_get_i(t, i);
  *count = (int)t->numel;
  return KILN_OK;
}

kiln_code ref_Slice(const kiln_ref_ctx *ctx, const kiln_node *n, const kiln_tensor *const *in,
                    kiln_tensor *const *out, kiln_err *e) {
  (void)ctx;
  const kiln_tensor *x = in[0];
  kiln_tensor *y = out[0];
  int64_t st[KILN_MAX_RANK], en[KILN_MAX_RANK], ax[KILN_MAX_RANK], sp[KILN_MAX_RANK];
  int ns = 0, ne = 0, na = 0, nst = 0;
  bool has_axes, has_steps = false;
  if (n->opset < 10) {
    const int64_t *a;
    ns = (int)ir_attr_ints(n, "starts", &a);
    if (ns > KILN_MAX_RANK) return kiln_errf(e, KILN_ERR_LIMIT, "too many Slice starts");
    if (ns) memcpy(st, a, sizeof(int64_t) * (size_t)ns);
    ne = (int)ir_attr_ints(n, "ends", &a);
    if (ne != ns) return kiln_errf(e, KILN_ERR_SHAPE, "Slice starts and ends differ in length");
    if (ne) memcpy(en, a, sizeof(int64_t) * (size_t)ne);
    has_axes = ir_attr_has(n, "axes");
    na = (int)ir_attr_ints(n, "axes", &a);
    if (na != (has_axes ? ns : 0))
      return kiln_errf(e, KILN_ERR_SHAPE, "Slice axes has the wrong length");
    if (na) memcpy(ax, a, sizeof(int64_t) * (size_t)na);
  } else {
    KILN_TRY(read_index_input(in[1], st, &ns, e));
    KILN_TRY(read_index_input(in[2], en, &ne, e));
    has_axes = n->n_in > 3 && in[3];
    if (has_axes) KILN_TRY(read_index_input(in[3], ax, &na, e));
    has_steps = n->n_in > 4 && in[4];
    if (has_steps) KILN_TRY(read_index_input(in[4], sp, &nst, e));
    if (ne != ns || (has_axes && na != ns) || (has_steps && nst != ns))
      return kiln_errf(e, KILN_ERR_SHAPE, "Slice arguments differ in length");
  }
  kiln_slice_plan p;
  KILN_TRY(kiln_slice_resolve(&x->shape, st, en, has_axes ? ax : NULL, has_steps ? sp : NULL, ns,
                              &p, e));
  if (!kiln_shape_eq(&p.out, &y->shape))
    return kiln_errf(e, KILN_ERR_INTERNAL, "Slice output shape disagrees with shape inference");
  int64_t xs[KILN_MAX_RANK], idx[KILN_MAX_RANK];
  kiln_strides(&x->shape, xs);
  size_t es = esize(x);
  for (int64_t o = 0; o < y->numel; o++) {
    ref_unflatten(o, &y->shape, idx);
    int64_t src = 0;
    for (int a = 0; a < x->shape.rank; a++) src += (p.start[a] + idx[a] * p.step[a]) * xs[a];
    memcpy(BYTES(y) + (size_t)o * es, CBYTES(x) + (size_t)src * es, es);
  }
  return KILN_OK;
}

kiln_code ref_Gather(const kiln_ref_ctx *ctx, const kiln_node *n, const kiln_tensor *const *in,
                     kiln_tensor *const *out, kiln_err *e) {
  const kiln_tensor *x = in[0], *ind = in[1];
  kiln_tensor *y = out[0];
  int axis;
  KILN_TRY(ir_axis(ir_attr_int(n, "axis"), x->shape.rank, &axis, e));
  int64_t outer = dims_prod(&x->shape, 0, axis);
  int64_t inner = dims_prod(&x->shape, axis + 1, x->shape.rank);
  int64_t dim = x->shape.d[axis], ni = ind->numel;
  size_t es = esize(x);
  /* Check every index before writing anything. */
  for (int64_t j = 0; j < ni; j++) {
    int64_t k = kiln_tensor_get_i(ind, j);
    if (k < -dim || k >= dim) {
      char b0[32], b1[32];
      return kiln_errf(e, KILN_ERR_SHAPE,
                       "index %lld in '%s' is out of range for axis %d of '%s' (size %lld)",
                       (long long)k, in_name(ctx, n, 1, b1, sizeof b1), axis,
                       in_name(ctx, n, 0, b0, sizeof b0), (long long)dim);
    }
  }
  for (int64_t o = 0; o < outer; o++)
    for (int64_t j = 0; j < ni; j++) {
      int64_t k = kiln_tensor_get_i(ind, j);
      if (k < 0) k += dim;
      if (inner)
        memcpy(BYTES(y) + (size_t)((o * ni + j) * inner) * es,
               CBYTES(x) + (size_t)((o * dim + k) * inner) * es, (size_t)inner * es);
    }
  return KILN_OK;
}

kiln_code ref_Expand(const kiln_ref_ctx *ctx, const kiln_node *n, const kiln_tensor *const *in,
                     kiln_tensor *const *out, kiln_err *e) {
  (void)ctx, (void)n, (void)e;
  const kiln_tensor *x = in[0];
  kiln_tensor *y = out[0];
  int64_t st[KILN_MAX_RANK];
  size_t es = esize(x);
  ref_bcast_strides(&x->shape, &y->shape, st);
  for (int64_t o = 0; o < y->numel; o++)
    memcpy(BYTES(y) + (size_t)o * es, CBYTES(x) + (size_t)ref_bcast_index(o, &y->shape, st) * es,
           es);
  return KILN_OK;
}
