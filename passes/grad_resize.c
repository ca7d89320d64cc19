/* grad_resize.c — gradient rules of the resize op family: Resize and Upsample differentiate
 * their data input through kiln.ResizeGrad, the adjoint of the forward interpolation.  The
 * forward node is decoded once (kiln_resize_params_get) and its resolved mapping is written
 * into ResizeGrad's attributes, which decode back to the very same parameters (checked). */
#include "ir/ops/grad_pool.h"
#include "passes/autodiff.h"

/* True when decoding ResizeGrad without `scales` (the forward had sizes) reproduces p. */
static bool sizes_form(const kiln_resize_params *p, const kiln_shape *x) {
  for (int d = 0; d < x->rank; d++) {
    double s = x->d[d] ? (double)p->out.d[d] / (double)x->d[d] : 1.0;
    if (s != p->scale[d] || p->resized_len[d] != (double)p->out.d[d]) return false;
  }
  return true;
}

static bool same_mapping(const kiln_resize_params *a, const kiln_resize_params *b, int rank) {
  if (a->mode != b->mode || a->coord != b->coord || a->exclude_outside != b->exclude_outside ||
      !kiln_shape_eq(&a->out, &b->out))
    return false;
  if (a->mode == KILN_RESIZE_NEAREST && a->nearest != b->nearest) return false;
  if (a->mode == KILN_RESIZE_CUBIC && a->cubic_a != b->cubic_a) return false;
  for (int d = 0; d < rank; d++)
    if (a->scale[d] != b->scale[d] || a->resized_len[d] != b->resized_len[d] ||
        a->roi_start[d] != b->roi_start[d] || a->roi_end[d] != b->roi_end[d])
      return false;
  return true;
}

static kiln_code g_resize(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                          const bool *wants, kiln_err *e) {
  if (!wants[0] || dy[0] < 0) return KILN_OK;
  kiln_graph *g = grad_graph(gc);
  kiln_shape xs = grad_val(gc, n->in[0])->shape;
  const kiln_tensor *in[4] = {NULL};
  for (int i = 1; i < n->n_in && i < 4; i++) in[i] = ir_in_const(g, n, i);
  kiln_resize_params p;
  KILN_TRY(kiln_resize_params_get(g, n, &xs, in, &p, e));
  int rank = xs.rank, nid;
  KILN_TRY(grad_op1(gc, KILN_OP_ResizeGrad, (int[]){dy[0]}, 1, &dx[0], &nid, e));
  KILN_TRY(ir_set_attr_str(g, nid, "mode", kiln_resize_mode_name(p.mode), e));
  KILN_TRY(ir_set_attr_str(g, nid, "coordinate_transformation_mode", kiln_coord_mode_name(p.coord),
                           e));
  if (p.mode == KILN_RESIZE_NEAREST)
    KILN_TRY(ir_set_attr_str(g, nid, "nearest_mode", kiln_nearest_mode_name(p.nearest), e));
  if (p.mode == KILN_RESIZE_CUBIC)
    KILN_TRY(ir_set_attr_float(g, nid, "cubic_coeff_a", p.cubic_a, e));
  if (p.exclude_outside) KILN_TRY(ir_set_attr_int(g, nid, "exclude_outside", 1, e));
  KILN_TRY(ir_set_attr_ints(g, nid, "input_shape", xs.d, rank, e));
  if (!sizes_form(&p, &xs)) KILN_TRY(ir_set_attr_floats(g, nid, "scales", p.scale, rank, e));
  if (p.coord == KILN_COORD_TF_CROP_AND_RESIZE) {
    double roi[2 * KILN_MAX_RANK];
    for (int d = 0; d < rank; d++) roi[d] = p.roi_start[d], roi[rank + d] = p.roi_end[d];
    KILN_TRY(ir_set_attr_floats(g, nid, "roi", roi, 2 * rank, e));
  }
  kiln_shape xs2;
  kiln_resize_params back;
  KILN_TRY(kiln_resize_grad_params(&g->nodes[nid], &p.out, &xs2, &back, e));
  if (!kiln_shape_eq(&xs, &xs2) || !same_mapping(&p, &back, rank))
    return kiln_errf(e, KILN_ERR_INTERNAL, "ResizeGrad attributes do not reproduce the mapping");
  return KILN_OK;
}

void grad_register_resize(kiln_grad_fn *table) {
  table[KILN_OP_Resize] = g_resize;
  table[KILN_OP_Upsample] = g_resize;
}
