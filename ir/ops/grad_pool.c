/* grad_pool.c — op definitions of the kiln-domain gradient ops of pooling and resizing
 * (MaxPoolGrad, AveragePoolGrad, ResizeGrad), the decoding of ResizeGrad's attributes and the
 * per-axis resize taps and their adjoint (see ir/ops/grad_pool.h). */
#include "ir/ops/grad_pool.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ir/ops/common.h"
#include "ir/ops/nn_window.h"

/* ---- pools ---- */

/* The window of the forward pool over an input of shape x; errors name input `x_name`. */
static kiln_code pool_window_of(const kiln_node *n, const kiln_shape *x, const char *x_name,
                                nn_window *w, kiln_err *e) {
  const int64_t *ks;
  int64_t n_ks = ir_attr_ints(n, "kernel_shape", &ks);
  int nsp = x->rank - 2;
  if (nsp < 1 || nsp > NN_WIN_MAX) {
    char buf[96];
    return kiln_errf(e, KILN_ERR_SHAPE,
                     "input '%s' has shape %s; expected (N, C, D1[, D2[, D3]])", x_name,
                     kiln_shape_str(x, buf, sizeof buf));
  }
  if (n_ks != nsp)
    return kiln_errf(e, KILN_ERR_SHAPE,
                     "attribute 'kernel_shape' has %lld values; input '%s' has %d spatial "
                     "dimensions",
                     (long long)n_ks, x_name, nsp);
  int64_t ceil_mode = ir_attr_int(n, "ceil_mode");
  if (ceil_mode != 0 && ceil_mode != 1)
    return kiln_errf(e, KILN_ERR_INVALID, "ceil_mode must be 0 or 1, not %lld",
                     (long long)ceil_mode);
  KILN_TRY(nn_pool_kernel_check(ks, nsp, e));
  return nn_window_forward(n, x, x_name, ks, ceil_mode != 0, w, e);
}

/* dY must be float32 with the pooled shape of x. */
static kiln_code check_pooled(const kiln_graph *g, const kiln_node *n, int dy_slot,
                              const kiln_shape *x, const nn_window *w, kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, dy_slot, KILN_DT(KILN_F32), 0, KILN_MAX_RANK, e));
  const kiln_value *dy = ir_in(g, n, dy_slot);
  kiln_shape want = *x;
  for (int i = 0; i < w->nsp; i++) want.d[2 + i] = w->out[i];
  if (!kiln_shape_eq(&dy->shape, &want)) {
    char a[160], b[160];
    return kiln_errf(e, KILN_ERR_SHAPE,
                     "output gradient '%s' has shape %s; the pool's output has shape %s", dy->name,
                     kiln_shape_str(&dy->shape, a, sizeof a), kiln_shape_str(&want, b, sizeof b));
  }
  return KILN_OK;
}

static kiln_code infer_MaxPoolGrad(kiln_graph *g, kiln_node *n, kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT(KILN_F32), 3, 2 + NN_WIN_MAX, e));
  const kiln_value *x = ir_in(g, n, 0);
  nn_window w;
  KILN_TRY(pool_window_of(n, &x->shape, x->name, &w, e));
  KILN_TRY(check_pooled(g, n, 1, &x->shape, &w, e));
  return ir_set_output(g, n, 0, KILN_F32, &x->shape, e);
}

/* The forward input's shape from attribute input_shape. */
static kiln_code read_input_shape(const kiln_node *n, int min_rank, int max_rank, kiln_shape *x,
                                  kiln_err *e) {
  const int64_t *v;
  int64_t cnt = ir_attr_ints(n, "input_shape", &v);
  if (!v || cnt < min_rank || cnt > max_rank)
    return kiln_errf(e, KILN_ERR_SHAPE,
                     "attribute 'input_shape' has %lld values; expected %d to %d", (long long)cnt,
                     min_rank, max_rank);
  x->rank = (int)cnt;
  for (int i = 0; i < x->rank; i++) {
    if (v[i] < 0 || v[i] > KILN_MAX_DIM)
      return kiln_errf(e, KILN_ERR_SHAPE, "attribute 'input_shape' has an invalid size %lld",
                       (long long)v[i]);
    x->d[i] = v[i];
  }
  int64_t numel;
  if (!kiln_shape_numel(x, &numel))
    return kiln_errf(e, KILN_ERR_LIMIT, "attribute 'input_shape' describes a tensor too large");
  return KILN_OK;
}

static kiln_code infer_AveragePoolGrad(kiln_graph *g, kiln_node *n, kiln_err *e) {
  kiln_shape x;
  KILN_TRY(read_input_shape(n, 3, 2 + NN_WIN_MAX, &x, e));
  nn_window w;
  KILN_TRY(pool_window_of(n, &x, "input_shape", &w, e));
  KILN_TRY(check_pooled(g, n, 0, &x, &w, e));
  return ir_set_output(g, n, 0, KILN_F32, &x, e);
}

static const kiln_attr_spec maxpoolgrad_attrs[] = {
    A_STR("auto_pad", "NOTSET"), A_INT("ceil_mode", 0), A_INTS("dilations"),
    A_REQ_INTS("kernel_shape"),  A_INTS("pads"),        A_INTS("strides"),
};

static const kiln_attr_spec avgpoolgrad_attrs[] = {
    A_STR("auto_pad", "NOTSET"), A_INT("ceil_mode", 0),     A_INT("count_include_pad", 0),
    A_INTS("dilations"),         A_REQ_INTS("input_shape"), A_REQ_INTS("kernel_shape"),
    A_INTS("pads"),              A_INTS("strides"),
};

const kiln_op_def kiln_opdef_MaxPoolGrad = {
    .name = "MaxPoolGrad", .domain = "kiln", .min_in = 2, .max_in = 2, .min_out = 1, .max_out = 1,
    .attrs = maxpoolgrad_attrs, .n_attrs = NELEM(maxpoolgrad_attrs), .infer = infer_MaxPoolGrad,
    .doc = "dX (shape of X) of MaxPool: inputs X, dY; each window's dY goes to its first maximum "
           "in X; attributes those of the MaxPool"};

const kiln_op_def kiln_opdef_AveragePoolGrad = {
    .name = "AveragePoolGrad", .domain = "kiln", .min_in = 1, .max_in = 1, .min_out = 1,
    .max_out = 1, .attrs = avgpoolgrad_attrs, .n_attrs = NELEM(avgpoolgrad_attrs),
    .infer = infer_AveragePoolGrad,
    .doc = "dX of AveragePool: input dY; each window's dY / count is added to its taps; "
           "attributes those of the AveragePool plus input_shape (X's shape)"};

/* ---- ResizeGrad ---- */

static const char *const mode_names[] = {"nearest", "linear", "cubic"};
static const char *const coord_names[] = {"half_pixel",    "pytorch_half_pixel",
                                          "align_corners", "asymmetric",
                                          "tf_half_pixel_for_nn", "tf_crop_and_resize"};
static const char *const nearest_names[] = {"round_prefer_floor", "round_prefer_ceil", "floor",
                                            "ceil", "legacy"};

const char *kiln_resize_mode_name(kiln_resize_mode m) { return mode_names[m]; }
const char *kiln_coord_mode_name(kiln_coord_mode m) { return coord_names[m]; }
const char *kiln_nearest_mode_name(kiln_nearest_mode m) { return nearest_names[m]; }

int kiln_resize_max_taps(kiln_resize_mode m) {
  return m == KILN_RESIZE_NEAREST ? 1 : m == KILN_RESIZE_LINEAR ? 2 : 4;
}

kiln_code kiln_resize_grad_params(const kiln_node *n, const kiln_shape *dy, kiln_shape *x,
                                  kiln_resize_params *p, kiln_err *e) {
  memset(p, 0, sizeof *p);
  int rank = dy->rank;
  KILN_TRY(read_input_shape(n, 1, KILN_MAX_RANK, x, e));
  if (x->rank != rank)
    return kiln_errf(e, KILN_ERR_SHAPE,
                     "attribute 'input_shape' has rank %d but the output gradient has rank %d",
                     x->rank, rank);
  const char *s = ir_attr_str(n, "mode");
  int i;
  for (i = 0; i < NELEM(mode_names) && strcmp(s, mode_names[i]); i++) {}
  if (i == NELEM(mode_names))
    return kiln_errf(e, KILN_ERR_UNSUPPORTED, "mode '%s' is not nearest, linear or cubic", s);
  p->mode = (kiln_resize_mode)i;
  s = ir_attr_str(n, "coordinate_transformation_mode");
  if (!kiln_coord_mode_parse(s, &p->coord))
    return kiln_errf(e, KILN_ERR_UNSUPPORTED, "coordinate_transformation_mode '%s' is unknown", s);
  s = ir_attr_str(n, "nearest_mode");
  if (strcmp(s, "legacy") == 0)
    p->nearest = KILN_NEAREST_SIMPLE;
  else if (!kiln_nearest_mode_parse(s, &p->nearest))
    return kiln_errf(e, KILN_ERR_UNSUPPORTED, "nearest_mode '%s' is unknown", s);
  p->cubic_a = ir_attr_float(n, "cubic_coeff_a");
  p->exclude_outside = ir_attr_int(n, "exclude_outside") != 0;

  const double *roi, *scales;
  int64_t n_roi = ir_attr_floats(n, "roi", &roi), n_scales = ir_attr_floats(n, "scales", &scales);
  if (p->coord == KILN_COORD_TF_CROP_AND_RESIZE) {
    if (!roi || n_roi != 2 * rank)
      return kiln_errf(e, KILN_ERR_SHAPE,
                       "tf_crop_and_resize needs attribute 'roi' with %d values (starts, ends)",
                       2 * rank);
    for (int d = 0; d < rank; d++) p->roi_start[d] = roi[d], p->roi_end[d] = roi[rank + d];
  } else {
    for (int d = 0; d < rank; d++) p->roi_start[d] = 0, p->roi_end[d] = 1;
  }
  if (scales && n_scales != rank)
    return kiln_errf(e, KILN_ERR_SHAPE, "attribute 'scales' has %lld values; expected %d",
                     (long long)n_scales, rank);
  p->out = *dy;
  /* The same arithmetic as kiln_resize_params_get, so the mapping is bit-identical. */
  for (int d = 0; d < rank; d++) {
    if (!scales) { /* the forward was given sizes */
      if (x->d[d] == 0 && dy->d[d] != 0)
        return kiln_errf(e, KILN_ERR_SHAPE, "axis %d of the input is empty and cannot be resized",
                         d);
      p->scale[d] = x->d[d] ? (double)dy->d[d] / (double)x->d[d] : 1.0;
      p->resized_len[d] = (double)dy->d[d];
      continue;
    }
    double sc = scales[d];
    if (!(sc > 0) || !isfinite(sc))
      return kiln_errf(e, KILN_ERR_SHAPE, "scale %g on axis %d must be positive", sc, d);
    double len = (double)x->d[d] * sc;
    if (p->coord == KILN_COORD_TF_CROP_AND_RESIZE) len *= p->roi_end[d] - p->roi_start[d];
    if (!(len >= 0) || len > (double)KILN_MAX_DIM || (int64_t)floor(len) != dy->d[d])
      return kiln_errf(e, KILN_ERR_SHAPE,
                       "axis %d: input size %lld and scale %g give %g outputs, but the output "
                       "gradient has %lld",
                       d, (long long)x->d[d], sc, floor(len), (long long)dy->d[d]);
    p->scale[d] = sc;
    p->resized_len[d] = len;
  }
  return KILN_OK;
}

static kiln_code infer_ResizeGrad(kiln_graph *g, kiln_node *n, kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT(KILN_F32), 1, KILN_MAX_RANK, e));
  kiln_shape x;
  kiln_resize_params p;
  KILN_TRY(kiln_resize_grad_params(n, &ir_in(g, n, 0)->shape, &x, &p, e));
  return ir_set_output(g, n, 0, KILN_F32, &x, e);
}

static const kiln_attr_spec resizegrad_attrs[] = {
    A_STR("mode", "nearest"),
    A_STR("coordinate_transformation_mode", "half_pixel"),
    A_STR("nearest_mode", "round_prefer_floor"),
    A_FLOAT("cubic_coeff_a", -0.75),
    A_INT("exclude_outside", 0),
    A_REQ_INTS("input_shape"),
    A_FLOATS("scales"),
    A_FLOATS("roi"),
};

const kiln_op_def kiln_opdef_ResizeGrad = {
    .name = "ResizeGrad", .domain = "kiln", .min_in = 1, .max_in = 1, .min_out = 1, .max_out = 1,
    .attrs = resizegrad_attrs, .n_attrs = NELEM(resizegrad_attrs), .infer = infer_ResizeGrad,
    .doc = "dX of Resize/Upsample: input dY; the adjoint of the interpolation (each output's "
           "gradient goes to the taps it read, with their weights); attributes: Resize's modes "
           "(nearest_mode 'legacy' = Upsample/Resize-10), input_shape, per-axis scales (absent: "
           "the forward had sizes), roi (tf_crop_and_resize)"};

/* ---- resize taps ---- */


kiln_code kiln_resize_axis_adjoint(const kiln_resize_params *p, int d, int64_t in_len,
                                   int64_t **start_out, int64_t **src_out, double **w_out,
                                   bool *identity, kiln_err *e) {
  int64_t out_len = p->out.d[d];
  int max_taps = kiln_resize_max_taps(p->mode);
  size_t nt = (size_t)(out_len * max_taps + 1);
  int64_t *idx = kiln_malloc(sizeof(int64_t) * nt);
  double *tw = kiln_malloc(sizeof(double) * nt);
  int *count = kiln_malloc(sizeof(int) * (size_t)(out_len + 1));
  int64_t *start = kiln_calloc((size_t)in_len + 2, sizeof(int64_t));
  int64_t *pos = kiln_calloc((size_t)in_len + 1, sizeof(int64_t));
  int64_t *src = kiln_malloc(sizeof(int64_t) * nt);
  double *w = kiln_malloc(sizeof(double) * nt);
  if (!idx || !tw || !count || !start || !pos || !src || !w) {
    kiln_free(idx), kiln_free(tw), kiln_free(count), kiln_free(start), kiln_free(pos);
    kiln_free(src), kiln_free(w);
    return kiln_errf(e, KILN_ERR_NOMEM, "out of memory (resize gradient tables)");
  }
  kiln_resize_axis_taps(p, d, in_len, max_taps, idx, tw, count);
  /* Clamped taps of one output are non-decreasing, so taps that clamp to the same input index
   * are adjacent: count each (output, input) pair once. */
  for (int64_t o = 0; o < out_len; o++)
    for (int t = 0; t < count[o]; t++) {
      int64_t i = idx[o * max_taps + t];
      if (t == 0 || i != idx[o * max_taps + t - 1]) start[i + 1]++;
    }
  for (int64_t i = 0; i < in_len; i++) start[i + 1] += start[i];
  for (int64_t i = 0; i < in_len; i++) pos[i] = start[i];
  for (int64_t o = 0; o < out_len; o++)
    for (int t = 0; t < count[o]; t++) {
      int64_t i = idx[o * max_taps + t];
      double wt = tw[o * max_taps + t];
      if (t > 0 && i == idx[o * max_taps + t - 1]) {
        w[pos[i] - 1] += wt;
      } else {
        src[pos[i]] = o;
        w[pos[i]] = wt;
        pos[i]++;
      }
    }
  bool id = in_len == out_len;
  for (int64_t i = 0; id && i < in_len; i++)
    if (start[i + 1] - start[i] != 1 || src[start[i]] != i || w[start[i]] != 1) id = false;
  *identity = id;
  *start_out = start, *src_out = src, *w_out = w;
  kiln_free(idx), kiln_free(tw), kiln_free(count), kiln_free(pos);
  return KILN_OK;
}
