/* resize.c — op definitions of Resize, Upsample and Pad, and the decoding of their parameters
 * (shared with the reference kernels through ir/ops/resize.h). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ir/ops/common.h"
#include "ir/ops/resize.h"

/* Name of input i for messages. */
static const char *in_name(const kiln_graph *g, const kiln_node *n, int i, const char *fallback) {
  const kiln_value *v = g && i < n->n_in ? ir_in(g, n, i) : NULL;
  return v ? v->name : fallback;
}

/* An empty tensor counts as absent (ONNX models pass "" or an empty constant for unused inputs). */
static const kiln_tensor *present(const kiln_tensor *const *in, const kiln_node *n, int i) {
  if (i < 0 || i >= n->n_in || !in[i] || in[i]->numel == 0) return NULL;
  return in[i];
}

/* Checks a 1-D scales/sizes/roi tensor's dtype and length. */
static kiln_code check_vec(const kiln_tensor *t, const char *name, uint32_t dtypes, int64_t want,
                           const char *layout, kiln_err *e) {
  if (!(dtypes & KILN_DT(t->dtype)))
    return kiln_errf(e, KILN_ERR_SHAPE, "input '%s' has dtype %s, which is not allowed here", name,
                     kiln_dtype_name(t->dtype));
  if (t->shape.rank != 1 || t->numel != want) {
    char buf[96];
    return kiln_errf(e, KILN_ERR_SHAPE,
                     "input '%s' has shape %s; it must be 1-D with %lld values (%s)", name,
                     kiln_shape_str(&t->shape, buf, sizeof buf), (long long)want, layout);
  }
  return KILN_OK;
}

kiln_code kiln_resize_params_get(const kiln_graph *g, const kiln_node *n, const kiln_shape *x,
                                 const kiln_tensor *const *in, kiln_resize_params *p, kiln_err *e) {
  memset(p, 0, sizeof *p);
  int rank = x->rank;
  bool is_upsample = n->op == KILN_OP_Upsample;
  bool legacy = is_upsample || n->opset < 11; /* Upsample and Resize-10 */
  const char *mode = ir_attr_str(n, "mode");
  if (strcmp(mode, "nearest") == 0)
    p->mode = KILN_RESIZE_NEAREST;
  else if (strcmp(mode, "linear") == 0 || (is_upsample && strcmp(mode, "bilinear") == 0))
    p->mode = KILN_RESIZE_LINEAR;
  else if (strcmp(mode, "cubic") == 0 && !legacy)
    p->mode = KILN_RESIZE_CUBIC;
  else
    return kiln_errf(e, KILN_ERR_UNSUPPORTED, "mode '%s' is not supported (use nearest, linear%s)",
                     mode, legacy ? "" : " or cubic");

  if (legacy) {
    p->coord = KILN_COORD_ASYMMETRIC;
    p->nearest = KILN_NEAREST_SIMPLE;
    p->cubic_a = -0.75;
  } else {
    const char *cm = ir_attr_str(n, "coordinate_transformation_mode");
    if (!kiln_coord_mode_parse(cm, &p->coord))
      return kiln_errf(e, KILN_ERR_UNSUPPORTED, "coordinate_transformation_mode '%s' is unknown",
                       cm);
    const char *nm = ir_attr_str(n, "nearest_mode");
    if (!kiln_nearest_mode_parse(nm, &p->nearest))
      return kiln_errf(e, KILN_ERR_UNSUPPORTED, "nearest_mode '%s' is unknown", nm);
    p->cubic_a = ir_attr_float(n, "cubic_coeff_a");
    p->exclude_outside = ir_attr_int(n, "exclude_outside") != 0;
    p->extrapolation_value = ir_attr_float(n, "extrapolation_value");
  }

  /* Where scales, sizes and roi come from. */
  double attr_scales[KILN_MAX_RANK];
  const kiln_tensor *scales = NULL, *sizes = NULL, *roi = NULL;
  int scales_slot = -1, sizes_slot = -1, roi_slot = -1;
  bool have_attr_scales = false;
  if (is_upsample && n->opset < 9) {
    const double *s;
    int64_t ns = ir_attr_floats(n, "scales", &s);
    if (!s) return kiln_errf(e, KILN_ERR_INVALID, "attribute 'scales' is required before opset 9");
    if (ns != rank)
      return kiln_errf(e, KILN_ERR_SHAPE,
                       "attribute 'scales' has %lld values; the input has rank %d", (long long)ns,
                       rank);
    for (int d = 0; d < rank; d++) attr_scales[d] = s[d];
    have_attr_scales = true;
  } else if (legacy) {
    scales_slot = 1;
  } else {
    roi_slot = 1, scales_slot = 2, sizes_slot = 3;
  }
  const char *scales_name = in_name(g, n, scales_slot, "scales");
  const char *sizes_name = in_name(g, n, sizes_slot, "sizes");
  scales = present(in, n, scales_slot);
  sizes = present(in, n, sizes_slot);
  roi = present(in, n, roi_slot);
  if (scales && sizes)
    return kiln_errf(e, KILN_ERR_INVALID,
                     "both '%s' (scales) and '%s' (sizes) are given; exactly one must be non-empty",
                     scales_name, sizes_name);
  if (!scales && !sizes && !have_attr_scales)
    return kiln_errf(e, KILN_ERR_INVALID, "%s",
                     legacy ? "input 'scales' is required and must not be empty"
                            : "one of the inputs 'scales' and 'sizes' must be given and non-empty");

  if (p->coord == KILN_COORD_TF_CROP_AND_RESIZE) {
    if (!roi)
      return kiln_errf(e, KILN_ERR_INVALID,
                       "coordinate_transformation_mode tf_crop_and_resize needs the 'roi' input");
    KILN_TRY(check_vec(roi, in_name(g, n, roi_slot, "roi"), KILN_DT(KILN_F32), 2 * (int64_t)rank,
                       "starts then ends of each axis", e));
    for (int d = 0; d < rank; d++) {
      p->roi_start[d] = kiln_tensor_get_f(roi, d);
      p->roi_end[d] = kiln_tensor_get_f(roi, rank + d);
      /* NaN or infinite bounds would make NaN sample coordinates */
      if (!isfinite(p->roi_start[d]) || !isfinite(p->roi_end[d]))
        return kiln_errf(e, KILN_ERR_SHAPE, "input '%s' has a non-finite region bound on axis %d",
                         in_name(g, n, roi_slot, "roi"), d);
    }
  } else {
    for (int d = 0; d < rank; d++) p->roi_start[d] = 0, p->roi_end[d] = 1;
  }

  p->out.rank = rank;
  if (sizes) {
    KILN_TRY(check_vec(sizes, sizes_name, KILN_DT(KILN_I64) | KILN_DT(KILN_I32), rank,
                       "one per input axis", e));
    for (int d = 0; d < rank; d++) {
      int64_t s = kiln_tensor_get_i(sizes, d);
      if (s < 0)
        return kiln_errf(e, KILN_ERR_SHAPE, "input '%s' asks for size %lld on axis %d", sizes_name,
                         (long long)s, d);
      if (s > KILN_MAX_DIM)
        return kiln_errf(e, KILN_ERR_LIMIT, "input '%s' asks for size %lld on axis %d; the limit is %lld",
                         sizes_name, (long long)s, d, (long long)KILN_MAX_DIM);
      if (x->d[d] == 0 && s != 0)
        return kiln_errf(e, KILN_ERR_SHAPE, "axis %d of the input is empty and cannot be resized",
                         d);
      p->out.d[d] = s;
      p->scale[d] = x->d[d] ? (double)s / (double)x->d[d] : 1.0;
      p->resized_len[d] = (double)s;
    }
  } else {
    if (scales)
      KILN_TRY(check_vec(scales, scales_name, KILN_DT(KILN_F32), rank, "one per input axis", e));
    for (int d = 0; d < rank; d++) {
      double s = scales ? kiln_tensor_get_f(scales, d) : attr_scales[d];
      if (!(s > 0) || !isfinite(s))
        return kiln_errf(e, KILN_ERR_SHAPE, "scale %g on axis %d must be positive", s, d);
      double len = (double)x->d[d] * s;
      if (p->coord == KILN_COORD_TF_CROP_AND_RESIZE) len *= p->roi_end[d] - p->roi_start[d];
      if (len > (double)KILN_MAX_DIM)
        return kiln_errf(e, KILN_ERR_LIMIT,
                         "%s '%s': scale %g on axis %d gives an output size past the limit of %lld",
                         scales ? "input" : "attribute", scales_name, s, d, (long long)KILN_MAX_DIM);
      if (!(len >= 0))
        return kiln_errf(e, KILN_ERR_SHAPE, "scale %g on axis %d gives an output size out of range",
                         s, d);
      p->out.d[d] = (int64_t)floor(len);
      p->scale[d] = s;
      p->resized_len[d] = len;
    }
  }
  return KILN_OK;
}

static kiln_code infer_resize(kiln_graph *g, kiln_node *n, kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT_ANY, 1, KILN_MAX_RANK, e));
  const kiln_value *x = ir_in(g, n, 0);
  if (n->op == KILN_OP_Resize && n->opset < 11 && n->n_in != 2)
    return kiln_errf(e, KILN_ERR_INVALID,
                     "Resize before opset 11 takes exactly 2 inputs (X, scales)");
  const kiln_tensor *in[4] = {NULL};
  for (int i = 1; i < n->n_in && i < 4; i++) in[i] = ir_in_const(g, n, i);
  kiln_resize_params p;
  KILN_TRY(kiln_resize_params_get(g, n, &x->shape, in, &p, e));
  if (p.mode != KILN_RESIZE_NEAREST && x->dtype != KILN_F32)
    return kiln_errf(e, KILN_ERR_UNSUPPORTED,
                     "input '%s' is %s; linear and cubic resizing need float32", x->name,
                     kiln_dtype_name(x->dtype));
  return ir_set_output(g, n, 0, x->dtype, &p.out, e);
}

static const kiln_attr_spec resize_attrs[] = {
    A_STR("mode", "nearest"),
    A_STR("coordinate_transformation_mode", "half_pixel"),
    A_STR("nearest_mode", "round_prefer_floor"),
    A_FLOAT("cubic_coeff_a", -0.75),
    A_INT("exclude_outside", 0),
    A_FLOAT("extrapolation_value", 0.0),
};

const kiln_op_def kiln_opdef_Resize = {
    .name = "Resize",
    .domain = "",
    .min_in = 1,
    .max_in = 4,
    .min_out = 1,
    .max_out = 1,
    .attrs = resize_attrs,
    .n_attrs = NELEM(resize_attrs),
    .infer = infer_resize,
    .shape_inputs = (1u << 1) | (1u << 2) | (1u << 3),
    .doc = "resize by scales or to sizes: nearest, N-D linear or cubic interpolation"};

static const kiln_attr_spec upsample_attrs[] = {
    A_STR("mode", "nearest"), A_FLOATS("scales"), /* opset 7-8; an input from opset 9 */
};

const kiln_op_def kiln_opdef_Upsample = {
    .name = "Upsample",
    .domain = "",
    .min_in = 1,
    .max_in = 2,
    .min_out = 1,
    .max_out = 1,
    .attrs = upsample_attrs,
    .n_attrs = NELEM(upsample_attrs),
    .infer = infer_resize,
    .shape_inputs = 1u << 1,
    .doc =
        "deprecated Resize: nearest or linear, asymmetric coordinates, output = floor(in*scale)"};

/* ---- Pad ---- */

kiln_code kiln_pad_params_get(const kiln_graph *g, const kiln_node *n, const kiln_shape *x,
                              const kiln_tensor *pads, kiln_pad_params *p, kiln_err *e) {
  memset(p, 0, sizeof *p);
  int rank = x->rank;
  const char *mode = ir_attr_str(n, "mode");
  if (strcmp(mode, "constant") == 0)
    p->mode = KILN_PAD_CONSTANT;
  else if (strcmp(mode, "reflect") == 0)
    p->mode = KILN_PAD_REFLECT;
  else if (strcmp(mode, "edge") == 0)
    p->mode = KILN_PAD_EDGE;
  else
    return kiln_errf(e, KILN_ERR_UNSUPPORTED,
                     "mode '%s' is not supported (constant, reflect, edge)", mode);
  int64_t v[2 * KILN_MAX_RANK];
  int64_t count;
  const char *what;
  if (n->opset < 11) {
    const int64_t *a;
    count = ir_attr_ints(n, "pads", &a);
    if (!a) return kiln_errf(e, KILN_ERR_INVALID, "attribute 'pads' is required before opset 11");
    if (count != 2 * rank)
      return kiln_errf(e, KILN_ERR_SHAPE,
                       "attribute 'pads' has %lld values; the input of rank %d needs %d",
                       (long long)count, rank, 2 * rank);
    memcpy(v, a, sizeof(int64_t) * (size_t)count);
    what = "attribute 'pads'";
  } else {
    const char *name = in_name(g, n, 1, "pads");
    if (n->n_in < 2 || n->in[1] < 0)
      return kiln_errf(e, KILN_ERR_INVALID, "input 'pads' is required from opset 11");
    if (!pads) return kiln_errf(e, KILN_ERR_UNSUPPORTED, "input '%s' must be a constant", name);
    if (pads->dtype != KILN_I64 && pads->dtype != KILN_I32)
      return kiln_errf(e, KILN_ERR_SHAPE, "input '%s' must be int64, not %s", name,
                       kiln_dtype_name(pads->dtype));
    if (pads->shape.rank > 1 || pads->numel != 2 * rank)
      return kiln_errf(e, KILN_ERR_SHAPE,
                       "input '%s' has %lld values; the input of rank %d needs %d (1-D)", name,
                       (long long)pads->numel, rank, 2 * rank);
    count = pads->numel;
    for (int64_t i = 0; i < count; i++) v[i] = kiln_tensor_get_i(pads, i);
    what = "input 'pads'";
  }
  p->out.rank = rank;
  for (int d = 0; d < rank; d++) {
    int64_t b = v[d], en = v[rank + d];
    if (b < -KILN_MAX_DIM || b > KILN_MAX_DIM || en < -KILN_MAX_DIM || en > KILN_MAX_DIM)
      return kiln_errf(e, KILN_ERR_SHAPE, "%s on axis %d is out of range", what, d);
    int64_t crop = (b < 0 ? -b : 0) + (en < 0 ? -en : 0);
    if (crop > x->d[d])
      return kiln_errf(e, KILN_ERR_SHAPE,
                       "%s crops %lld elements from axis %d, which has only %lld", what,
                       (long long)crop, d, (long long)x->d[d]);
    int64_t kept = x->d[d] - crop;
    if (kept == 0 && p->mode != KILN_PAD_CONSTANT && (b > 0 || en > 0))
      return kiln_errf(e, KILN_ERR_SHAPE, "%s-padding axis %d needs at least one element", mode, d);
    p->begin[d] = b;
    p->end[d] = en;
    p->out.d[d] = x->d[d] + b + en;
    if (p->out.d[d] > KILN_MAX_DIM)
      return kiln_errf(e, KILN_ERR_LIMIT, "%s makes axis %d too large", what, d);
  }
  return KILN_OK;
}

static kiln_code infer_pad(kiln_graph *g, kiln_node *n, kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT_ANY, 0, KILN_MAX_RANK, e));
  const kiln_value *x = ir_in(g, n, 0);
  kiln_pad_params p;
  KILN_TRY(kiln_pad_params_get(g, n, &x->shape, n->n_in > 1 ? ir_in_const(g, n, 1) : NULL, &p, e));
  const kiln_value *cv = n->opset >= 11 && n->n_in > 2 ? ir_in(g, n, 2) : NULL;
  if (cv) {
    int64_t numel;
    kiln_shape_numel(&cv->shape, &numel);
    if (cv->dtype != x->dtype)
      return kiln_errf(e, KILN_ERR_SHAPE, "constant_value '%s' is %s but the data '%s' is %s",
                       cv->name, kiln_dtype_name(cv->dtype), x->name, kiln_dtype_name(x->dtype));
    if (numel > 1)
      return kiln_errf(e, KILN_ERR_SHAPE, "constant_value '%s' must be a scalar", cv->name);
  }
  return ir_set_output(g, n, 0, x->dtype, &p.out, e);
}

static const kiln_attr_spec pad_attrs[] = {
    A_STR("mode", "constant"), A_INTS("pads"), /* opset 2-10; an input from opset 11 */
    A_FLOAT("value", 0.0), /* opset 2-10; the constant_value input from opset 11 */
};

const kiln_op_def kiln_opdef_Pad = {
    .name = "Pad",
    .domain = "",
    .min_in = 1,
    .max_in = 3,
    .min_out = 1,
    .max_out = 1,
    .attrs = pad_attrs,
    .n_attrs = NELEM(pad_attrs),
    .infer = infer_pad,
    .shape_inputs = 1u << 1,
    .doc = "pad (constant, reflect, edge) or crop (negative pads) each axis"};

/* The one copy of the forward taps: the Resize reference kernel, its JIT emitter and
 * ResizeGrad all read them from here. */
void kiln_resize_axis_taps(const kiln_resize_params *p, int d, int64_t in_len, int max_taps,
                           int64_t *idx_all, double *w_all, int *count) {
  for (int64_t o = 0; o < p->out.d[d]; o++) {
    int64_t *idx = idx_all + o * max_taps;
    double *w = w_all + o * max_taps;
    double c = kiln_resize_coord(p->coord, (double)o, in_len, p->resized_len[d], p->scale[d],
                                 p->roi_start[d], p->roi_end[d]);
    if (kiln_resize_outside(p->coord, c, in_len)) {
      count[o] = -1;
      continue;
    }
    if (p->mode == KILN_RESIZE_NEAREST) {
      idx[0] = kiln_resize_clamp(kiln_resize_nearest(p->nearest, c, p->scale[d]), in_len);
      w[0] = 1;
      count[o] = 1;
      continue;
    }
    int64_t first;
    double t, coef[4];
    kiln_resize_taps(c, max_taps, in_len, &first, &t);
    if (p->mode == KILN_RESIZE_LINEAR) {
      coef[0] = 1 - t;
      coef[1] = t;
    } else {
      kiln_cubic_coeffs(t, p->cubic_a, coef);
    }
    if (p->exclude_outside) {
      double sum = 0;
      for (int k = 0; k < max_taps; k++) {
        if (first + k < 0 || first + k >= in_len) coef[k] = 0;
        sum += coef[k];
      }
      if (sum != 0)
        for (int k = 0; k < max_taps; k++) coef[k] /= sum;
    }
    int m = 0;
    for (int k = 0; k < max_taps; k++) {
      if (coef[k] == 0) continue;
      idx[m] = kiln_resize_clamp(first + k, in_len);
      w[m] = coef[k];
      m++;
    }
    count[o] = m;
  }
}
