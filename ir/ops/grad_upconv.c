/* grad_upconv.c — op definition of kiln.UpsampleConvGradInput (ir/ops/grad_upconv.h). */
#include "ir/ops/grad_upconv.h"

#include <string.h>

#include "ir/ops/common.h"

bool kiln_upconv_floor_map(kiln_coord_mode coord, kiln_nearest_mode nearest, int64_t s,
                           int64_t len) {
  if (s < 1 || coord == KILN_COORD_TF_CROP_AND_RESIZE) return false;
  for (int64_t o = 0; o < s * len; o++) {
    double c = kiln_resize_coord(coord, (double)o, len, (double)(s * len), (double)s, 0.0, 1.0);
    if (kiln_resize_clamp(kiln_resize_nearest(nearest, c, (double)s), len) != o / s) return false;
  }
  return true;
}

/* Reads INTS attribute `name` (absent: `def` everywhere) of nsp values >= lo. */
static kiln_code read_ints(const kiln_node *n, const char *name, int nsp, int64_t lo,
                           int64_t def, int64_t *v, kiln_err *e) {
  const int64_t *a;
  int64_t cnt = ir_attr_ints(n, name, &a);
  for (int i = 0; i < nsp; i++) v[i] = def;
  if (!a) return KILN_OK;
  if (cnt != nsp)
    return kiln_errf(e, KILN_ERR_SHAPE, "attribute '%s' has %lld values; expected %d", name,
                     (long long)cnt, nsp);
  for (int i = 0; i < nsp; i++) {
    if (a[i] < lo || a[i] > KILN_MAX_DIM)
      return kiln_errf(e, KILN_ERR_SHAPE, "attribute '%s' value %lld is out of range (min %lld)",
                       name, (long long)a[i], (long long)lo);
    v[i] = a[i];
  }
  return KILN_OK;
}

kiln_code kiln_upconv_grad_get(const kiln_node *n, const kiln_shape *dy, const char *dy_name,
                               const kiln_shape *w, const char *w_name, kiln_upconv_grad *p,
                               kiln_shape *dx, kiln_err *e) {
  memset(p, 0, sizeof *p);
  char b1[160], b2[160];
  int nsp = dy->rank - 2;
  if (nsp < 1 || nsp > NN_WIN_MAX)
    return kiln_errf(e, KILN_ERR_SHAPE, "output gradient '%s' has shape %s; expected (N, M, D1[, "
                     "D2[, D3]])", dy_name, kiln_shape_str(dy, b1, sizeof b1));
  if (w->rank != dy->rank)
    return kiln_errf(e, KILN_ERR_SHAPE, "weight '%s' %s must have the rank of the output "
                     "gradient '%s' %s", w_name, kiln_shape_str(w, b1, sizeof b1), dy_name,
                     kiln_shape_str(dy, b2, sizeof b2));
  p->nsp = nsp;
  const char *mode = ir_attr_str(n, "mode");
  if (strcmp(mode, "nearest"))
    return kiln_errf(e, KILN_ERR_UNSUPPORTED, "mode '%s' is not nearest", mode);
  const char *cs = ir_attr_str(n, "coordinate_transformation_mode");
  if (!kiln_coord_mode_parse(cs, &p->coord) || p->coord == KILN_COORD_TF_CROP_AND_RESIZE ||
      p->coord == KILN_COORD_TF_HALF_PIXEL_FOR_NN)
    return kiln_errf(e, KILN_ERR_UNSUPPORTED,
                     "coordinate_transformation_mode '%s' is not one of asymmetric, half_pixel, "
                     "pytorch_half_pixel, align_corners", cs);
  const char *ns = ir_attr_str(n, "nearest_mode");
  if (!strcmp(ns, "legacy"))
    p->nearest = KILN_NEAREST_SIMPLE;
  else if (!kiln_nearest_mode_parse(ns, &p->nearest))
    return kiln_errf(e, KILN_ERR_UNSUPPORTED, "nearest_mode '%s' is unknown", ns);
  const int64_t *sc;
  int64_t n_sc = ir_attr_ints(n, "scales", &sc);
  if (!sc || n_sc != nsp)
    return kiln_errf(e, KILN_ERR_SHAPE, "attribute 'scales' has %lld values; expected one per "
                     "spatial dimension (%d)", (long long)n_sc, nsp);
  for (int d = 0; d < nsp; d++) {
    if (sc[d] < 1 || sc[d] > 1024)
      return kiln_errf(e, KILN_ERR_SHAPE, "scale %lld of spatial dimension %d must be in "
                       "[1, 1024]", (long long)sc[d], d);
    p->scale[d] = sc[d];
  }
  const char *ap = ir_attr_str(n, "auto_pad");
  if (ap[0] && strcmp(ap, "NOTSET"))
    return kiln_errf(e, KILN_ERR_UNSUPPORTED, "auto_pad '%s': the op takes explicit pads", ap);
  int64_t strides[NN_WIN_MAX], dil[NN_WIN_MAX], pads[2 * NN_WIN_MAX];
  KILN_TRY(read_ints(n, "strides", nsp, 1, 1, strides, e));
  for (int d = 0; d < nsp; d++)
    if (strides[d] != 1)
      return kiln_errf(e, KILN_ERR_UNSUPPORTED, "stride %lld of spatial dimension %d: only "
                       "stride-1 convolutions are supported", (long long)strides[d], d);
  KILN_TRY(read_ints(n, "dilations", nsp, 1, 1, dil, e));
  const int64_t *pa;
  int64_t n_pa = ir_attr_ints(n, "pads", &pa);
  for (int i = 0; i < 2 * nsp; i++) pads[i] = 0;
  if (pa && n_pa != 2 * nsp)
    return kiln_errf(e, KILN_ERR_SHAPE, "attribute 'pads' has %lld values; expected %d",
                     (long long)n_pa, 2 * nsp);
  for (int i = 0; pa && i < 2 * nsp; i++) {
    if (pa[i] < 0 || pa[i] > KILN_MAX_DIM)
      return kiln_errf(e, KILN_ERR_SHAPE, "attribute 'pads' value %lld is out of range",
                       (long long)pa[i]);
    pads[i] = pa[i];
  }
  p->group = ir_attr_int(n, "group");
  if (p->group < 1 || p->group > KILN_MAX_DIM || dy->d[1] % p->group)
    return kiln_errf(e, KILN_ERR_SHAPE, "group %lld does not divide the %lld channels of output "
                     "gradient '%s'", (long long)p->group, (long long)dy->d[1], dy_name);
  if (w->d[0] != dy->d[1])
    return kiln_errf(e, KILN_ERR_SHAPE, "weight '%s' %s has %lld output channels; output "
                     "gradient '%s' %s has %lld", w_name, kiln_shape_str(w, b1, sizeof b1),
                     (long long)w->d[0], dy_name, kiln_shape_str(dy, b2, sizeof b2),
                     (long long)dy->d[1]);
  const int64_t *ks;
  int64_t n_ks = ir_attr_ints(n, "kernel_shape", &ks);
  if (ks && n_ks != nsp)
    return kiln_errf(e, KILN_ERR_SHAPE, "attribute 'kernel_shape' has %lld values; expected %d",
                     (long long)n_ks, nsp);
  *dx = *dy;
  if (!kiln_mul_ok(w->d[1], p->group, &dx->d[1]) || dx->d[1] > KILN_MAX_DIM)
    return kiln_errf(e, KILN_ERR_LIMIT, "weight '%s' describes too many input channels", w_name);
  kiln_shape us = *dx; /* the upsampled input */
  int64_t kernel[NN_WIN_MAX];
  for (int d = 0; d < nsp; d++) {
    kernel[d] = w->d[2 + d];
    if (ks && ks[d] != kernel[d])
      return kiln_errf(e, KILN_ERR_SHAPE, "attribute 'kernel_shape' disagrees with weight '%s'",
                       w_name);
    if (kernel[d] < 1)
      return kiln_errf(e, KILN_ERR_SHAPE, "weight '%s' has an empty kernel", w_name);
    int64_t ext, span;
    if (!kiln_mul_ok(kernel[d] - 1, dil[d], &ext) || ext >= KILN_MAX_DIM)
      return kiln_errf(e, KILN_ERR_LIMIT, "kernel extent too large");
    ext += 1;
    /* the forward's out = U + pads - ext + 1 for the upsampled size U = s * L */
    span = dy->d[2 + d] - 1 + ext - pads[d] - pads[nsp + d];
    if (span < 1 || span % p->scale[d])
      return kiln_errf(e, KILN_ERR_SHAPE, "output gradient '%s' %s: no input size upsampled by "
                       "%lld gives %lld outputs along spatial dimension %d with this kernel and "
                       "pads", dy_name, kiln_shape_str(dy, b1, sizeof b1),
                       (long long)p->scale[d], (long long)dy->d[2 + d], d);
    dx->d[2 + d] = span / p->scale[d];
    us.d[2 + d] = span;
    if (!kiln_upconv_floor_map(p->coord, p->nearest, p->scale[d], dx->d[2 + d]))
      return kiln_errf(e, KILN_ERR_UNSUPPORTED,
                       "nearest resizing with coordinate_transformation_mode '%s' and "
                       "nearest_mode '%s' does not read element floor(o / %lld) at every "
                       "position o of spatial dimension %d", cs, ns, (long long)p->scale[d], d);
  }
  KILN_TRY(nn_window_forward(n, &us, dy_name, kernel, false, &p->win, e));
  for (int d = 0; d < nsp; d++)
    if (p->win.out[d] != dy->d[2 + d])
      return kiln_errf(e, KILN_ERR_INTERNAL, "upsample-conv gradient window disagrees");
  return KILN_OK;
}

static kiln_code infer_upconv_grad_input(kiln_graph *g, kiln_node *n, kiln_err *e) {
  KILN_TRY(ir_check_input(g, n, 0, KILN_DT(KILN_F32), 3, 2 + NN_WIN_MAX, e));
  const kiln_value *dy = ir_in(g, n, 0);
  KILN_TRY(ir_check_input(g, n, 1, KILN_DT(KILN_F32), dy->shape.rank, dy->shape.rank, e));
  const kiln_value *w = ir_in(g, n, 1);
  kiln_upconv_grad p;
  kiln_shape dx;
  KILN_TRY(kiln_upconv_grad_get(n, &dy->shape, dy->name, &w->shape, w->name, &p, &dx, e));
  return ir_set_output(g, n, 0, KILN_F32, &dx, e);
}

/* As the ConvTranspose it replaces: upsampled-input elements x (M / group) x kernel volume
 * (the compiled kernel does about prod((k-1)*dil + s) / prod(s * k) of them). */
static int64_t macs_upconv_grad_input(const kiln_graph *g, const kiln_node *n) {
  const kiln_value *dx = ir_out(g, n, 0), *w = ir_in(g, n, 1);
  int64_t numel;
  if (!dx || !dx->typed || !w || !w->typed || !kiln_shape_numel(&dx->shape, &numel)) return 0;
  const int64_t *sc;
  int64_t n_sc = ir_attr_ints(n, "scales", &sc);
  for (int64_t d = 0; sc && d < n_sc; d++) numel *= sc[d];
  int64_t kvol = 1;
  for (int i = 2; i < w->shape.rank; i++) kvol *= w->shape.d[i];
  return numel * (w->shape.d[0] / (ir_attr_int(n, "group") > 0 ? ir_attr_int(n, "group") : 1)) *
         kvol;
}

static const kiln_attr_spec upconv_grad_input_attrs[] = {
    A_STR("mode", "nearest"),
    A_STR("coordinate_transformation_mode", "asymmetric"),
    A_STR("nearest_mode", "floor"),
    A_REQ_INTS("scales"),
    A_STR("auto_pad", "NOTSET"),
    A_INTS("dilations"),
    A_INT("group", 1),
    A_INTS("kernel_shape"),
    A_INTS("pads"),
    A_INTS("strides"),
};

const kiln_op_def kiln_opdef_UpsampleConvGradInput = {
    .name = "UpsampleConvGradInput", .domain = "kiln", .min_in = 2, .max_in = 2, .min_out = 1,
    .max_out = 1, .attrs = upconv_grad_input_attrs, .n_attrs = NELEM(upconv_grad_input_attrs),
    .infer = infer_upconv_grad_input, .macs = macs_upconv_grad_input,
    .doc = "dX (N, C, L...) of Y = Conv(Resize_nearest(X, integer scales), W) from dY (N, M, ...) "
           "and W (M, C/group, k...): ResizeGrad(ConvTranspose(dY, W)) in one op; attributes: "
           "the Conv's (stride 1, pads, dilations, group) and the resize's (scales, modes whose "
           "index map is floor(o / s))"};
