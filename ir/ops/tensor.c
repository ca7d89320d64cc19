/* tensor.c — op definitions of the tensor/shape family: Constant, ConstantOfShape,
 * Shape, Flatten, Reshape, Squeeze, Unsqueeze, Transpose, Concat, Split, Slice,
 * Gather, Expand (ONNX semantics, opsets 6..17). */
#include <stdio.h>
#include <string.h>

#include "ir/ops/common.h"
#include "ir/ops/tensor_ops.h"

/* Splits at most this many outputs (the interpreter's per-node output limit). */
#define SPLIT_MAX_OUT 64

/* Writes "[a,b,c]" for a list of ints (a requested shape may hold -1 and 0). */
static const char *ints_str(const int64_t *v, int n, char *buf, size_t len) {
  size_t k = (size_t)snprintf(buf, len, "[");
  for (int i = 0; i < n && k < len; i++)
    k += (size_t)snprintf(buf + k, len - k, i ? ",%lld" : "%lld", (long long)v[i]);
  if (k < len) snprintf(buf + k, len - k, "]");
  return buf;
}

/* Sets output `slot` to the constant t (taking ownership), so that shape inference
 * downstream sees its data without waiting for constant folding. */
static kiln_code set_output_const(kiln_graph *g, kiln_node *n, int slot, kiln_tensor *t,
                                  kiln_err *e) {
  kiln_code rc = ir_set_output(g, n, slot, t->dtype, &t->shape, e);
  kiln_value *v = ir_out(g, n, slot);
  if (rc || !v) {
    kiln_tensor_free(t);
    return rc;
  }
  kiln_tensor_free(v->data); /* a previous ir_infer() run's result */
  v->data = t;
  return KILN_OK;
}

/* Axes from input 1 when given (opset 13+), else from the `axes` attribute. */
static kiln_code read_axes(const kiln_graph *g, const kiln_node *n, int64_t *axes, int *count,
                           bool *given, kiln_err *e) {
  if (ir_in(g, n, 1)) {
    *given = true;
    return ir_const_ints(g, n, 1, axes, KILN_MAX_RANK, count, e);
  }
  const int64_t *a;
  int64_t k = ir_attr_ints(n, "axes", &a);
  *given = ir_attr_has(n, "axes");
  if (k > KILN_MAX_RANK)
    return kiln_errf(e, KILN_ERR_LIMIT, "attribute 'axes' has %lld entries; at most %d allowed",
                     (long long)k, KILN_MAX_RANK);
  for (int64_t i = 0; i < k; i++) axes[i] = a[i];
  *count = (int)k;
  return KILN_OK;
}

/* ---- Constant ---- */

kiln_code kiln_constant_value(const kiln_node *n, kiln_tensor **out, kiln_err *e) {
  static const char *const kinds[] = {"value",     "sparse_value", "value_float",
                                      "value_floats", "value_int",  "value_ints",
                                      "value_string", "value_strings"};
  *out = NULL;
  int count = 0;
  for (int i = 0; i < NELEM(kinds); i++) count += ir_attr_has(n, kinds[i]);
  if (ir_attr_has(n, "sparse_value"))
    return kiln_errf(e, KILN_ERR_UNSUPPORTED, "a Constant with a sparse_value is not supported");
  if (ir_attr_has(n, "value_string") || ir_attr_has(n, "value_strings"))
    return kiln_errf(e, KILN_ERR_UNSUPPORTED,
                     "string Constants are not supported (kiln handles float32, int32, int64 "
                     "and bool tensors)");
  if (count != 1)
    return kiln_errf(e, KILN_ERR_INVALID, "a Constant needs exactly one value attribute; it has %d",
                     count);
  kiln_shape s;
  memset(&s, 0, sizeof s);
  if (ir_attr_has(n, "value")) {
    const kiln_tensor *t = ir_attr_tensor(n, "value");
    if (!t) return kiln_errf(e, KILN_ERR_INVALID, "attribute 'value' holds no tensor");
    if (!kiln_dtype_size(t->dtype))
      return kiln_errf(e, KILN_ERR_UNSUPPORTED,
                       "attribute 'value' has dtype %s, which is not supported",
                       kiln_dtype_name(t->dtype));
    return kiln_tensor_clone(t, out, e);
  }
  if (ir_attr_has(n, "value_float")) {
    KILN_TRY(kiln_tensor_new(KILN_F32, &s, out, e));
    ((float *)(*out)->data)[0] = (float)ir_attr_float(n, "value_float");
    return KILN_OK;
  }
  if (ir_attr_has(n, "value_int")) {
    KILN_TRY(kiln_tensor_new(KILN_I64, &s, out, e));
    ((int64_t *)(*out)->data)[0] = ir_attr_int(n, "value_int");
    return KILN_OK;
  }
  if (ir_attr_has(n, "value_floats")) {
    const double *f;
    s.rank = 1;
    s.d[0] = ir_attr_floats(n, "value_floats", &f);
    KILN_TRY(kiln_tensor_new(KILN_F32, &s, out, e));
    for (int64_t i = 0; i < s.d[0]; i++) ((float *)(*out)->data)[i] = (float)f[i];
    return KILN_OK;
  }
  const int64_t *v;
  s.rank = 1;
  s.d[0] = ir_attr_ints(n, "value_ints", &v);
  KILN_TRY(kiln_tensor_new(KILN_I64, &s, out, e));
  if (s.d[0]) memcpy((*out)->data, v, sizeof(int64_t) * (size_t)s.d[0]);
  return KILN_OK;
}

static kiln_code infer_Constant(kiln_graph *g, kiln_node *n, kiln_err *e) {
  kiln_tensor *t;
  KILN_TRY(kiln_constant_value(n, &t, e));
  return set_output_const(g, n, 0, t, e);
}

static const kiln_attr_spec constant_attrs[] = {
    A_TENSOR("value"),
    {.name = "sparse_value", .kind = KILN_ATTR_SPARSE_TENSOR},
    A_FLOAT("value_float", 0),
    A_FLOATS("value_floats"),
    A_INT("value_int", 0),
    A_INTS("value_ints"),
    A_STR("value_string", ""),
    {.name = "value_strings", .kind = KILN_ATTR_STRINGS},
};

const kiln_op_def kiln_opdef_Constant = {
    .name = "Constant", .domain = "", .min_in = 0, .max_in = 0, .min_out = 1, .max_out = 1,
    .attrs = constant_attrs, .n_attrs = NELEM(constant_attrs), .infer = infer_Constant,
    .doc = "y = the tensor given by the value* attribute"};

/* ---- ConstantOfShape ---- */

static kiln_code infer_ConstantOfShape(kiln_graph *g, kiln_node *n, kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT(KILN_I64) | KILN_DT(KILN_I32), 1, 1, e));
  int64_t dims[KILN_MAX_RANK];
  int cnt;
  KILN_TRY(ir_const_ints(g, n, 0, dims, KILN_MAX_RANK, &cnt, e));
  const kiln_value *x = ir_in(g, n, 0);
  char buf[200];
  for (int i = 0; i < cnt; i++)
    if (dims[i] < 0)
      return kiln_errf(e, KILN_ERR_SHAPE, "shape '%s' = %s has a negative dimension", x->name,
                       ints_str(dims, cnt, buf, sizeof buf));
  kiln_dtype dt = KILN_F32;
  const kiln_tensor *val = ir_attr_tensor(n, "value");
  if (val) {
    if (val->numel != 1)
      return kiln_errf(e, KILN_ERR_SHAPE, "attribute 'value' must hold one element, not %lld",
                       (long long)val->numel);
    dt = val->dtype;
  }
  kiln_shape s = kiln_shape_make(cnt, dims);
  return ir_set_output(g, n, 0, dt, &s, e);
}

static const kiln_attr_spec constant_of_shape_attrs[] = {A_TENSOR("value")};

const kiln_op_def kiln_opdef_ConstantOfShape = {
    .name = "ConstantOfShape", .domain = "", .min_in = 1, .max_in = 1, .min_out = 1, .max_out = 1,
    .attrs = constant_of_shape_attrs, .n_attrs = NELEM(constant_of_shape_attrs),
    .infer = infer_ConstantOfShape, .shape_inputs = 1u << 0,
    .doc = "y = a tensor of shape `input` filled with `value` (default float 0)"};

/* ---- Shape ---- */

void kiln_shape_op_range(const kiln_node *n, int rank, int *start, int *end) {
  int64_t s = ir_attr_int(n, "start");
  int64_t en = ir_attr_has(n, "end") ? ir_attr_int(n, "end") : rank;
  if (s < 0) s += rank;
  if (en < 0) en += rank;
  s = s < 0 ? 0 : s > rank ? rank : s;
  en = en < 0 ? 0 : en > rank ? rank : en;
  if (en < s) en = s;
  *start = (int)s;
  *end = (int)en;
}

/* The output depends only on the input's (static) shape, so it is a constant even
 * when the input is not: set the data here so Shape -> Gather -> ... chains fold. */
static kiln_code infer_Shape(kiln_graph *g, kiln_node *n, kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT_ANY, 0, KILN_MAX_RANK, e));
  const kiln_value *x = ir_in(g, n, 0);
  int start, end;
  kiln_shape_op_range(n, x->shape.rank, &start, &end);
  kiln_shape s = kiln_shape_make(1, (int64_t[]){end - start});
  kiln_tensor *t;
  KILN_TRY(kiln_tensor_new(KILN_I64, &s, &t, e));
  for (int i = start; i < end; i++) ((int64_t *)t->data)[i - start] = x->shape.d[i];
  return set_output_const(g, n, 0, t, e);
}

static const kiln_attr_spec shape_attrs[] = {A_INT("start", 0), A_INT("end", 0)};

const kiln_op_def kiln_opdef_Shape = {
    .name = "Shape", .domain = "", .min_in = 1, .max_in = 1, .min_out = 1, .max_out = 1,
    .attrs = shape_attrs, .n_attrs = NELEM(shape_attrs), .infer = infer_Shape,
    .doc = "y = the input's shape (dims start..end) as int64"};

/* ---- Flatten ---- */

static kiln_code infer_Flatten(kiln_graph *g, kiln_node *n, kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT_ANY, 0, KILN_MAX_RANK, e));
  const kiln_value *x = ir_in(g, n, 0);
  int r = x->shape.rank;
  int64_t axis = ir_attr_int(n, "axis");
  if (axis < -r || axis > r) /* axis == rank is allowed: [numel, 1] */
    return kiln_errf(e, KILN_ERR_SHAPE, "axis %lld is out of range for input '%s' of rank %d",
                     (long long)axis, x->name, r);
  if (axis < 0) axis += r;
  int64_t outer = 1, inner = 1;
  for (int i = 0; i < r; i++) {
    if (i < axis)
      outer *= x->shape.d[i];
    else
      inner *= x->shape.d[i];
  }
  kiln_shape s = kiln_shape_make(2, (int64_t[]){outer, inner});
  return ir_set_output(g, n, 0, x->dtype, &s, e);
}

static const kiln_attr_spec flatten_attrs[] = {A_INT("axis", 1)};

const kiln_op_def kiln_opdef_Flatten = {
    .name = "Flatten", .domain = "", .min_in = 1, .max_in = 1, .min_out = 1, .max_out = 1,
    .attrs = flatten_attrs, .n_attrs = NELEM(flatten_attrs), .infer = infer_Flatten,
    .flags = KILN_OPF_INPLACE_OK, .doc = "y = x reshaped to 2-D [prod(d[:axis]), prod(d[axis:])]"};

/* ---- Reshape ---- */

static kiln_code infer_Reshape(kiln_graph *g, kiln_node *n, kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT_ANY, 0, KILN_MAX_RANK, e));
  if (!ir_in(g, n, 1)) {
    if (ir_attr_has(n, "shape"))
      return kiln_errf(e, KILN_ERR_UNSUPPORTED,
                       "Reshape with a 'shape' attribute (opset < 5) is not supported; "
                       "re-export the model with opset 5 or later");
    return kiln_errf(e, KILN_ERR_INVALID, "input 1 (shape) is required");
  }
  const kiln_value *x = ir_in(g, n, 0), *sv = ir_in(g, n, 1);
  int64_t req[KILN_MAX_RANK];
  int cnt;
  KILN_TRY(ir_const_ints(g, n, 1, req, KILN_MAX_RANK, &cnt, e));
  bool allowzero = ir_attr_int(n, "allowzero") != 0;
  char rb[200], xb[200], ob[200];
  ints_str(req, cnt, rb, sizeof rb);
  kiln_shape_str(&x->shape, xb, sizeof xb);
  kiln_shape out;
  memset(&out, 0, sizeof out);
  out.rank = cnt;
  int infer_at = -1;
  int64_t known = 1, in_numel;
  kiln_shape_numel(&x->shape, &in_numel);
  for (int i = 0; i < cnt; i++) {
    int64_t d = req[i];
    if (d == -1) {
      if (infer_at >= 0)
        return kiln_errf(e, KILN_ERR_SHAPE, "shape '%s' = %s has more than one -1", sv->name, rb);
      infer_at = i;
      continue;
    }
    if (d < -1)
      return kiln_errf(e, KILN_ERR_SHAPE, "shape '%s' = %s has an invalid dimension %lld", sv->name,
                       rb, (long long)d);
    if (d == 0 && !allowzero) { /* 0 copies the input's dimension */
      if (i >= x->shape.rank)
        return kiln_errf(e, KILN_ERR_SHAPE,
                         "shape '%s' = %s copies dimension %d (0), but input '%s' %s has rank %d",
                         sv->name, rb, i, x->name, xb, x->shape.rank);
      d = x->shape.d[i];
    }
    out.d[i] = d;
    if (!kiln_mul_ok(known, d, &known) || known > KILN_MAX_TENSOR_BYTES)
      return kiln_errf(e, KILN_ERR_LIMIT, "shape '%s' = %s is too large", sv->name, rb);
  }
  if (infer_at >= 0) {
    if (known == 0)
      return kiln_errf(e, KILN_ERR_SHAPE,
                       "cannot infer the -1 in shape '%s' = %s: the other dimensions multiply to 0",
                       sv->name, rb);
    if (in_numel % known)
      return kiln_errf(e, KILN_ERR_SHAPE,
                       "cannot reshape input '%s' %s (%lld elements) to %s: %lld is not a "
                       "multiple of %lld",
                       x->name, xb, (long long)in_numel, rb, (long long)in_numel, (long long)known);
    out.d[infer_at] = in_numel / known;
  } else if (known != in_numel) {
    return kiln_errf(e, KILN_ERR_SHAPE,
                     "cannot reshape input '%s' %s (%lld elements) to %s (%lld elements)", x->name,
                     xb, (long long)in_numel, kiln_shape_str(&out, ob, sizeof ob),
                     (long long)known);
  }
  return ir_set_output(g, n, 0, x->dtype, &out, e);
}

static const kiln_attr_spec reshape_attrs[] = {
    A_INT("allowzero", 0),
    A_INTS("shape"), /* opset 1-4; refused with a message */
    A_LEGACY("consumed_inputs", KILN_ATTR_INTS),
};

const kiln_op_def kiln_opdef_Reshape = {
    .name = "Reshape", .domain = "", .min_in = 1, .max_in = 2, .min_out = 1, .max_out = 1,
    .attrs = reshape_attrs, .n_attrs = NELEM(reshape_attrs), .infer = infer_Reshape,
    .shape_inputs = 1u << 1, .flags = KILN_OPF_INPLACE_OK,
    .doc = "y = x with the shape given by input 1 (0 copies, -1 infers a dim)"};

/* ---- Squeeze / Unsqueeze ---- */

static kiln_code infer_Squeeze(kiln_graph *g, kiln_node *n, kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT_ANY, 0, KILN_MAX_RANK, e));
  const kiln_value *x = ir_in(g, n, 0);
  int64_t axes[KILN_MAX_RANK];
  int cnt;
  bool given, drop[KILN_MAX_RANK] = {0};
  char xb[200];
  KILN_TRY(read_axes(g, n, axes, &cnt, &given, e));
  int r = x->shape.rank;
  if (!given)
    for (int i = 0; i < r; i++) drop[i] = x->shape.d[i] == 1;
  for (int i = 0; i < cnt; i++) {
    int a;
    KILN_TRY(ir_axis(axes[i], r, &a, e));
    if (r == 0) return kiln_errf(e, KILN_ERR_SHAPE, "cannot squeeze scalar input '%s'", x->name);
    if (drop[a])
      return kiln_errf(e, KILN_ERR_SHAPE, "axis %lld appears twice in 'axes'", (long long)axes[i]);
    if (x->shape.d[a] != 1)
      return kiln_errf(e, KILN_ERR_SHAPE,
                       "cannot squeeze axis %d of input '%s' %s: its size is %lld, not 1", a,
                       x->name, kiln_shape_str(&x->shape, xb, sizeof xb), (long long)x->shape.d[a]);
    drop[a] = true;
  }
  kiln_shape s;
  memset(&s, 0, sizeof s);
  for (int i = 0; i < r; i++)
    if (!drop[i]) s.d[s.rank++] = x->shape.d[i];
  return ir_set_output(g, n, 0, x->dtype, &s, e);
}

static kiln_code infer_Unsqueeze(kiln_graph *g, kiln_node *n, kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT_ANY, 0, KILN_MAX_RANK, e));
  const kiln_value *x = ir_in(g, n, 0);
  int64_t axes[KILN_MAX_RANK];
  int cnt;
  bool given, ins[KILN_MAX_RANK] = {0};
  KILN_TRY(read_axes(g, n, axes, &cnt, &given, e));
  if (!given) return kiln_errf(e, KILN_ERR_INVALID, "Unsqueeze needs 'axes'");
  int r = x->shape.rank + cnt;
  if (r > KILN_MAX_RANK)
    return kiln_errf(e, KILN_ERR_LIMIT, "unsqueezing input '%s' would give rank %d; at most %d",
                     x->name, r, KILN_MAX_RANK);
  for (int i = 0; i < cnt; i++) {
    int a;
    KILN_TRY(ir_axis(axes[i], r, &a, e));
    if (ins[a])
      return kiln_errf(e, KILN_ERR_SHAPE, "axis %lld appears twice in 'axes'", (long long)axes[i]);
    ins[a] = true;
  }
  kiln_shape s;
  memset(&s, 0, sizeof s);
  s.rank = r;
  for (int i = 0, j = 0; i < r; i++) s.d[i] = ins[i] ? 1 : x->shape.d[j++];
  return ir_set_output(g, n, 0, x->dtype, &s, e);
}

static const kiln_attr_spec axes_attrs[] = {A_INTS("axes")};

const kiln_op_def kiln_opdef_Squeeze = {
    .name = "Squeeze", .domain = "", .min_in = 1, .max_in = 2, .min_out = 1, .max_out = 1,
    .attrs = axes_attrs, .n_attrs = NELEM(axes_attrs), .infer = infer_Squeeze,
    .shape_inputs = 1u << 1, .flags = KILN_OPF_INPLACE_OK,
    .doc = "y = x without the size-1 axes listed (all size-1 axes when none are)"};

const kiln_op_def kiln_opdef_Unsqueeze = {
    .name = "Unsqueeze", .domain = "", .min_in = 1, .max_in = 2, .min_out = 1, .max_out = 1,
    .attrs = axes_attrs, .n_attrs = NELEM(axes_attrs), .infer = infer_Unsqueeze,
    .shape_inputs = 1u << 1, .flags = KILN_OPF_INPLACE_OK,
    .doc = "y = x with size-1 axes inserted at the output positions listed"};

/* ---- Transpose ---- */

static kiln_code infer_Transpose(kiln_graph *g, kiln_node *n, kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT_ANY, 0, KILN_MAX_RANK, e));
  const kiln_value *x = ir_in(g, n, 0);
  int r = x->shape.rank;
  const int64_t *perm;
  int64_t np = ir_attr_ints(n, "perm", &perm);
  kiln_shape s;
  memset(&s, 0, sizeof s);
  s.rank = r;
  if (!ir_attr_has(n, "perm")) {
    for (int i = 0; i < r; i++) s.d[i] = x->shape.d[r - 1 - i];
    return ir_set_output(g, n, 0, x->dtype, &s, e);
  }
  bool seen[KILN_MAX_RANK] = {0}, ok = np == r;
  for (int64_t i = 0; ok && i < np; i++) {
    ok = perm[i] >= 0 && perm[i] < r && !seen[perm[i]];
    if (ok) {
      seen[perm[i]] = true;
      s.d[i] = x->shape.d[perm[i]];
    }
  }
  if (!ok) {
    char pb[200];
    int shown = np > 2 * KILN_MAX_RANK ? 2 * KILN_MAX_RANK : (int)np;
    return kiln_errf(e, KILN_ERR_SHAPE,
                     "perm %s is not a permutation of 0..%d for input '%s' of rank %d",
                     ints_str(perm, shown, pb, sizeof pb), r - 1, x->name, r);
  }
  return ir_set_output(g, n, 0, x->dtype, &s, e);
}

static const kiln_attr_spec transpose_attrs[] = {A_INTS("perm")};

const kiln_op_def kiln_opdef_Transpose = {
    .name = "Transpose", .domain = "", .min_in = 1, .max_in = 1, .min_out = 1, .max_out = 1,
    .attrs = transpose_attrs, .n_attrs = NELEM(transpose_attrs), .infer = infer_Transpose,
    .doc = "y[i_perm...] = x[i...] (perm defaults to reversing the axes)"};

/* ---- Concat ---- */

static kiln_code infer_Concat(kiln_graph *g, kiln_node *n, kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT_ANY, 1, KILN_MAX_RANK, e));
  const kiln_value *x0 = ir_in(g, n, 0);
  int axis;
  KILN_TRY(ir_axis(ir_attr_int(n, "axis"), x0->shape.rank, &axis, e));
  kiln_shape s = x0->shape;
  for (int i = 1; i < n->n_in; i++) {
    KILN_TRY(ir_check_input(g, n, i, KILN_DT_ANY, 1, KILN_MAX_RANK, e));
    const kiln_value *x = ir_in(g, n, i);
    char a[200], b[200];
    if (x->dtype != x0->dtype)
      return kiln_errf(e, KILN_ERR_SHAPE, "inputs '%s' (%s) and '%s' (%s) have different dtypes",
                       x0->name, kiln_dtype_name(x0->dtype), x->name, kiln_dtype_name(x->dtype));
    bool ok = x->shape.rank == x0->shape.rank;
    for (int d = 0; ok && d < x->shape.rank; d++) ok = d == axis || x->shape.d[d] == x0->shape.d[d];
    if (!ok)
      return kiln_errf(e, KILN_ERR_SHAPE,
                       "inputs '%s' %s and '%s' %s differ in a dimension other than axis %d",
                       x0->name, kiln_shape_str(&x0->shape, a, sizeof a), x->name,
                       kiln_shape_str(&x->shape, b, sizeof b), axis);
    if (!kiln_add_ok(s.d[axis], x->shape.d[axis], &s.d[axis]))
      return kiln_errf(e, KILN_ERR_LIMIT, "concatenated axis %d is too large", axis);
  }
  return ir_set_output(g, n, 0, x0->dtype, &s, e);
}

static const kiln_attr_spec concat_attrs[] = {A_INT("axis", 1)}; /* default: opset 1-3 */

const kiln_op_def kiln_opdef_Concat = {
    .name = "Concat", .domain = "", .min_in = 1, .max_in = KILN_VARIADIC, .min_out = 1,
    .max_out = 1, .attrs = concat_attrs, .n_attrs = NELEM(concat_attrs), .infer = infer_Concat,
    .doc = "y = the inputs joined along axis"};

/* ---- Split ---- */

kiln_code kiln_split_sizes(const kiln_node *n, const kiln_shape *in, const int64_t *split,
                           int64_t n_split, int *axis, int64_t *sizes, kiln_err *e) {
  KILN_TRY(ir_axis(ir_attr_int(n, "axis"), in->rank, axis, e));
  int64_t dim = in->d[*axis];
  if (split) {
    char sb[200];
    if (n_split != n->n_out)
      return kiln_errf(e, KILN_ERR_SHAPE, "'split' %s has %lld sizes but the node has %d outputs",
                       ints_str(split, n_split > 16 ? 16 : (int)n_split, sb, sizeof sb),
                       (long long)n_split, n->n_out);
    int64_t sum = 0;
    for (int i = 0; i < n->n_out; i++) {
      if (split[i] < 0 || !kiln_add_ok(sum, split[i], &sum))
        return kiln_errf(e, KILN_ERR_SHAPE, "'split' %s has an invalid size %lld",
                         ints_str(split, n->n_out, sb, sizeof sb), (long long)split[i]);
      sizes[i] = split[i];
    }
    if (sum != dim)
      return kiln_errf(e, KILN_ERR_SHAPE, "'split' %s sums to %lld, but axis %d has size %lld",
                       ints_str(split, n->n_out, sb, sizeof sb), (long long)sum, *axis,
                       (long long)dim);
    return KILN_OK;
  }
  if (dim % n->n_out)
    return kiln_errf(e, KILN_ERR_SHAPE, "cannot split axis %d of size %lld into %d equal parts",
                     *axis, (long long)dim, n->n_out);
  for (int i = 0; i < n->n_out; i++) sizes[i] = dim / n->n_out;
  return KILN_OK;
}

static kiln_code infer_Split(kiln_graph *g, kiln_node *n, kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT_ANY, 1, KILN_MAX_RANK, e));
  const kiln_value *x = ir_in(g, n, 0);
  if (n->n_out > SPLIT_MAX_OUT)
    return kiln_errf(e, KILN_ERR_LIMIT, "Split has %d outputs; at most %d allowed", n->n_out,
                     SPLIT_MAX_OUT);
  int64_t split[SPLIT_MAX_OUT], sizes[SPLIT_MAX_OUT];
  const int64_t *sp = NULL;
  int64_t ns = 0;
  if (ir_in(g, n, 1)) { /* opset 13+ */
    int cnt;
    KILN_TRY(ir_const_ints(g, n, 1, split, SPLIT_MAX_OUT, &cnt, e));
    sp = split;
    ns = cnt;
  } else if (ir_attr_has(n, "split")) {
    ns = ir_attr_ints(n, "split", &sp);
  }
  int axis;
  KILN_TRY(kiln_split_sizes(n, &x->shape, sp, ns, &axis, sizes, e));
  for (int i = 0; i < n->n_out; i++) {
    kiln_shape s = x->shape;
    s.d[axis] = sizes[i];
    KILN_TRY(ir_set_output(g, n, i, x->dtype, &s, e));
  }
  return KILN_OK;
}

static const kiln_attr_spec split_attrs[] = {A_INT("axis", 0), A_INTS("split")};

const kiln_op_def kiln_opdef_Split = {
    .name = "Split", .domain = "", .min_in = 1, .max_in = 2, .min_out = 1,
    .max_out = KILN_VARIADIC, .attrs = split_attrs, .n_attrs = NELEM(split_attrs),
    .infer = infer_Split, .shape_inputs = 1u << 1,
    .doc = "outputs = x cut along axis into the given sizes (equal parts by default)"};

/* ---- Slice ---- */

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : v > hi ? hi : v; }

kiln_code kiln_slice_resolve(const kiln_shape *in, const int64_t *starts, const int64_t *ends,
                             const int64_t *axes, const int64_t *steps, int count,
                             kiln_slice_plan *p, kiln_err *e) {
  int r = in->rank;
  if (count > r)
    return kiln_errf(e, KILN_ERR_SHAPE, "Slice gives %d starts for an input of rank %d", count, r);
  memset(p, 0, sizeof *p);
  p->out = *in;
  for (int a = 0; a < r; a++) p->step[a] = 1;
  bool seen[KILN_MAX_RANK] = {0};
  for (int i = 0; i < count; i++) {
    int a;
    KILN_TRY(ir_axis(axes ? axes[i] : i, r, &a, e));
    if (seen[a])
      return kiln_errf(e, KILN_ERR_SHAPE, "axis %lld appears twice in Slice axes",
                       (long long)(axes ? axes[i] : i));
    seen[a] = true;
    int64_t step = steps ? steps[i] : 1, dim = in->d[a];
    if (step == 0) return kiln_errf(e, KILN_ERR_SHAPE, "Slice step for axis %d is 0", a);
    int64_t s = starts[i], en = ends[i];
    if (s < 0) s += dim; /* cannot overflow: dim >= 0 */
    if (en < 0) en += dim;
    /* A step longer than the axis takes at most one element; bounding it keeps the
     * arithmetic below (and the kernels' index math) free of overflow. */
    step = clamp64(step, -(dim + 1), dim + 1);
    int64_t len;
    if (step > 0) {
      s = clamp64(s, 0, dim);
      en = clamp64(en, 0, dim);
      len = en > s ? (en - s + step - 1) / step : 0;
    } else {
      s = clamp64(s, 0, dim - 1);
      en = clamp64(en, -1, dim - 1);
      len = s > en ? (s - en - step - 1) / -step : 0;
    }
    p->start[a] = s;
    p->step[a] = step;
    p->out.d[a] = len;
  }
  return KILN_OK;
}

static kiln_code infer_Slice(kiln_graph *g, kiln_node *n, kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT_ANY, 0, KILN_MAX_RANK, e));
  const kiln_value *x = ir_in(g, n, 0);
  int64_t st[KILN_MAX_RANK], en[KILN_MAX_RANK], ax[KILN_MAX_RANK], sp[KILN_MAX_RANK];
  bool has_axes, has_steps = false;
  int ns, ne, na = 0, nst = 0;
  if (n->opset < 10) { /* starts/ends/axes are attributes */
    const int64_t *a;
    if (!ir_attr_has(n, "starts") || !ir_attr_has(n, "ends"))
      return kiln_errf(e, KILN_ERR_INVALID, "Slice (opset %d) needs 'starts' and 'ends' attributes",
                       n->opset);
    int64_t k[3] = {ir_attr_ints(n, "starts", &a), ir_attr_ints(n, "ends", &a),
                    ir_attr_ints(n, "axes", &a)};
    for (int i = 0; i < 3; i++)
      if (k[i] > KILN_MAX_RANK)
        return kiln_errf(e, KILN_ERR_LIMIT, "Slice attributes have %lld entries; at most %d",
                         (long long)k[i], KILN_MAX_RANK);
    ns = (int)ir_attr_ints(n, "starts", &a);
    memcpy(st, a, sizeof(int64_t) * (size_t)ns);
    ne = (int)ir_attr_ints(n, "ends", &a);
    memcpy(en, a, sizeof(int64_t) * (size_t)ne);
    has_axes = ir_attr_has(n, "axes");
    na = (int)ir_attr_ints(n, "axes", &a);
    if (na) memcpy(ax, a, sizeof(int64_t) * (size_t)na);
  } else {
    if (!ir_in(g, n, 1) || !ir_in(g, n, 2))
      return kiln_errf(e, KILN_ERR_INVALID, "Slice (opset %d) needs inputs 'starts' and 'ends'",
                       n->opset);
    KILN_TRY(ir_const_ints(g, n, 1, st, KILN_MAX_RANK, &ns, e));
    KILN_TRY(ir_const_ints(g, n, 2, en, KILN_MAX_RANK, &ne, e));
    has_axes = ir_in(g, n, 3) != NULL;
    if (has_axes) KILN_TRY(ir_const_ints(g, n, 3, ax, KILN_MAX_RANK, &na, e));
    has_steps = ir_in(g, n, 4) != NULL;
    if (has_steps) KILN_TRY(ir_const_ints(g, n, 4, sp, KILN_MAX_RANK, &nst, e));
  }
  if (ne != ns || (has_axes && na != ns) || (has_steps && nst != ns))
    return kiln_errf(e, KILN_ERR_SHAPE,
                     "Slice starts, ends, axes and steps must have the same length "
                     "(%d, %d, %d, %d)",
                     ns, ne, has_axes ? na : ns, has_steps ? nst : ns);
  kiln_slice_plan p;
  KILN_TRY(kiln_slice_resolve(&x->shape, st, en, has_axes ? ax : NULL, has_steps ? sp : NULL, ns,
                              &p, e));
  return ir_set_output(g, n, 0, x->dtype, &p.out, e);
}

static const kiln_attr_spec slice_attrs[] = {A_INTS("starts"), A_INTS("ends"), A_INTS("axes")};

const kiln_op_def kiln_opdef_Slice = {
    .name = "Slice", .domain = "", .min_in = 1, .max_in = 5, .min_out = 1, .max_out = 1,
    .attrs = slice_attrs, .n_attrs = NELEM(slice_attrs), .infer = infer_Slice,
    .shape_inputs = (1u << 1) | (1u << 2) | (1u << 3) | (1u << 4),
    .doc = "y = x[starts:ends:steps] along the given axes"};

/* ---- Gather ---- */

static kiln_code infer_Gather(kiln_graph *g, kiln_node *n, kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT_ANY, 1, KILN_MAX_RANK, e));
  KILN_TRY(ir_check_input(g, n, 1, KILN_DT(KILN_I32) | KILN_DT(KILN_I64), 0, KILN_MAX_RANK, e));
  const kiln_value *x = ir_in(g, n, 0), *idx = ir_in(g, n, 1);
  int axis;
  KILN_TRY(ir_axis(ir_attr_int(n, "axis"), x->shape.rank, &axis, e));
  int r = x->shape.rank - 1 + idx->shape.rank;
  if (r > KILN_MAX_RANK)
    return kiln_errf(e, KILN_ERR_LIMIT, "the output would have rank %d; at most %d", r,
                     KILN_MAX_RANK);
  /* Constant indices are checked now, so the error comes before any run. */
  int64_t dim = x->shape.d[axis];
  if (idx->data)
    for (int64_t i = 0; i < idx->data->numel; i++) {
      int64_t k = kiln_tensor_get_i(idx->data, i);
      if (k < -dim || k >= dim)
        return kiln_errf(e, KILN_ERR_SHAPE,
                         "index %lld in '%s' is out of range for axis %d of input '%s' (size %lld)",
                         (long long)k, idx->name, axis, x->name, (long long)dim);
    }
  kiln_shape s;
  memset(&s, 0, sizeof s);
  for (int i = 0; i < axis; i++) s.d[s.rank++] = x->shape.d[i];
  for (int i = 0; i < idx->shape.rank; i++) s.d[s.rank++] = idx->shape.d[i];
  for (int i = axis + 1; i < x->shape.rank; i++) s.d[s.rank++] = x->shape.d[i];
  return ir_set_output(g, n, 0, x->dtype, &s, e);
}

static const kiln_attr_spec gather_attrs[] = {A_INT("axis", 0)};

const kiln_op_def kiln_opdef_Gather = {
    .name = "Gather", .domain = "", .min_in = 2, .max_in = 2, .min_out = 1, .max_out = 1,
    .attrs = gather_attrs, .n_attrs = NELEM(gather_attrs), .infer = infer_Gather,
    .doc = "y = x indexed along axis by the entries of indices (negative count from the end)"};

/* ---- Expand ---- */

static kiln_code infer_Expand(kiln_graph *g, kiln_node *n, kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT_ANY, 0, KILN_MAX_RANK, e));
  const kiln_value *x = ir_in(g, n, 0), *sv = ir_in(g, n, 1);
  int64_t dims[KILN_MAX_RANK];
  int cnt;
  char sb[200];
  KILN_TRY(ir_const_ints(g, n, 1, dims, KILN_MAX_RANK, &cnt, e));
  for (int i = 0; i < cnt; i++)
    if (dims[i] < 0)
      return kiln_errf(e, KILN_ERR_SHAPE, "shape '%s' = %s has a negative dimension", sv->name,
                       ints_str(dims, cnt, sb, sizeof sb));
  kiln_shape req = kiln_shape_make(cnt, dims), out;
  if (ir_broadcast(&x->shape, &req, &out, e)) {
    kiln_err_prefix(e, "cannot expand input '%s' to shape '%s'", x->name, sv->name);
    return e->code;
  }
  return ir_set_output(g, n, 0, x->dtype, &out, e);
}

const kiln_op_def kiln_opdef_Expand = {
    .name = "Expand", .domain = "", .min_in = 2, .max_in = 2, .min_out = 1, .max_out = 1,
    .infer = infer_Expand, .shape_inputs = 1u << 1,
    .doc = "y = x broadcast (numpy rules, both ways) with the shape given by input 1"};
