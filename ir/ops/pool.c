/* pool.c — op definitions of MaxPool, AveragePool, GlobalAveragePool and GlobalMaxPool. */
#include "ir/ops/common.h"
#include "ir/ops/nn_window.h"

static const kiln_attr_spec maxpool_attrs[] = {
    A_STR("auto_pad", "NOTSET"), A_INT("ceil_mode", 0), A_INTS("dilations"),
    A_REQ_INTS("kernel_shape"),  A_INTS("pads"),        A_INT("storage_order", 0),
    A_INTS("strides"),
};

/* `dilations` arrives in opset 19; accepting it costs nothing since the window helper
 * handles it for MaxPool anyway. */
static const kiln_attr_spec avgpool_attrs[] = {
    A_STR("auto_pad", "NOTSET"), A_INT("ceil_mode", 0), A_INT("count_include_pad", 0),
    A_INTS("dilations"),         A_REQ_INTS("kernel_shape"), A_INTS("pads"),
    A_INTS("strides"),
};

/* Output spatial sizes of a windowed pool: (N, C, out...). */
static kiln_code pool_shape(const kiln_graph *g, const kiln_node *n, kiln_shape *s, kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT(KILN_F32), 3, 2 + NN_WIN_MAX, e));
  const kiln_value *x = ir_in(g, n, 0);
  int nsp = x->shape.rank - 2;
  const int64_t *ks;
  int64_t n_ks = ir_attr_ints(n, "kernel_shape", &ks);
  if (n_ks != nsp)
    return kiln_errf(e, KILN_ERR_SHAPE,
                     "attribute 'kernel_shape' has %lld values; input '%s' has %d spatial "
                     "dimensions",
                     (long long)n_ks, x->name, nsp);
  int64_t ceil_mode = ir_attr_int(n, "ceil_mode");
  if (ceil_mode != 0 && ceil_mode != 1)
    return kiln_errf(e, KILN_ERR_INVALID, "ceil_mode must be 0 or 1, not %lld",
                     (long long)ceil_mode);
  KILN_TRY(nn_pool_kernel_check(ks, nsp, e));
  nn_window w;
  KILN_TRY(nn_window_forward(n, &x->shape, x->name, ks, ceil_mode != 0, &w, e));
  *s = x->shape;
  for (int i = 0; i < nsp; i++) s->d[2 + i] = w.out[i];
  return KILN_OK;
}

static kiln_code infer_maxpool(kiln_graph *g, kiln_node *n, kiln_err *e) {
  kiln_shape s;
  KILN_TRY(pool_shape(g, n, &s, e));
  int64_t so = ir_attr_int(n, "storage_order");
  if (so != 0 && so != 1)
    return kiln_errf(e, KILN_ERR_INVALID, "storage_order must be 0 or 1, not %lld", (long long)so);
  KILN_TRY(ir_set_output(g, n, 0, KILN_F32, &s, e));
  return ir_set_output(g, n, 1, KILN_I64, &s, e);
}

static kiln_code infer_avgpool(kiln_graph *g, kiln_node *n, kiln_err *e) {
  kiln_shape s;
  KILN_TRY(pool_shape(g, n, &s, e));
  return ir_set_output(g, n, 0, KILN_F32, &s, e);
}

static kiln_code infer_global_pool(kiln_graph *g, kiln_node *n, kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT(KILN_F32), 3, KILN_MAX_RANK, e));
  kiln_shape s = ir_in(g, n, 0)->shape;
  for (int i = 2; i < s.rank; i++) s.d[i] = 1;
  return ir_set_output(g, n, 0, KILN_F32, &s, e);
}

const kiln_op_def kiln_opdef_MaxPool = {
    .name = "MaxPool", .domain = "", .min_in = 1, .max_in = 1, .min_out = 1, .max_out = 2,
    .attrs = maxpool_attrs, .n_attrs = NELEM(maxpool_attrs), .infer = infer_maxpool,
    .doc = "max over sliding windows; optional int64 Indices of the maxima (flattened)"};

const kiln_op_def kiln_opdef_AveragePool = {
    .name = "AveragePool", .domain = "", .min_in = 1, .max_in = 1, .min_out = 1, .max_out = 1,
    .attrs = avgpool_attrs, .n_attrs = NELEM(avgpool_attrs), .infer = infer_avgpool,
    .doc = "mean over sliding windows, padding counted or not (count_include_pad)"};

const kiln_op_def kiln_opdef_GlobalAveragePool = {
    .name = "GlobalAveragePool", .domain = "", .min_in = 1, .max_in = 1, .min_out = 1,
    .max_out = 1, .infer = infer_global_pool,
    .doc = "mean over all spatial positions: (N, C, D...) -> (N, C, 1...)"};

const kiln_op_def kiln_opdef_GlobalMaxPool = {
    .name = "GlobalMaxPool", .domain = "", .min_in = 1, .max_in = 1, .min_out = 1, .max_out = 1,
    .infer = infer_global_pool,
    .doc = "max over all spatial positions: (N, C, D...) -> (N, C, 1...)"};
