/* fuse_upsample_conv.c — the SPN block: Resize/Upsample (nearest or linear, integer scales)
 * → Conv → [BatchNormalization] → [activation] becomes one kiln.UpsampleConv that reads the
 * low-resolution input directly; the upsampled tensor is never stored.
 *
 * Matches what PyTorch exports for nn.Upsample(scale_factor=s) and F.interpolate: Resize-10
 * and -11..-17 with constant scales (opset 11+ often with an empty roi), or with constant
 * sizes after `fold` has evaluated the Shape → Slice → Concat chain that computes them, and
 * Upsample-7/9.  A BatchNormalization still there (fold-bn did not run, or could not) is
 * folded into the fused op's weights and bias here; after fuse-conv-act the Conv may already
 * be a kiln.FusedConv with an activation and no residual, which carries over.
 *
 * Preconditions: inference mode; float32 X of rank 3..5; the resize keeps N and C and scales
 * every spatial dim by an integer s >= 1 (output = input * s exactly); mode nearest or linear
 * (not cubic, no exclude_outside), coordinate mode asymmetric, half_pixel, pytorch_half_pixel
 * or align_corners; the upsampled value is read by the Conv alone (as X) and is not a graph
 * output; a BatchNormalization folded here needs constant weights (and bias) on the Conv. */
#include <math.h>
#include <string.h>

#include "ir/ops/resize.h"
#include "passes/fusion.h"

typedef struct up_match {
  int resize;          /* node ids */
  bool linear;
  const char *coord, *nearest;
  int64_t scale[3];
  int nsp;
} up_match;

/* Whether node ri (producing the conv's X) is a resize the fused op can absorb. */
static bool resize_ok(const kiln_graph *g, int ri, up_match *m) {
  kiln_resize_params p;
  if (!fuse_resize_params(g, ri, &p)) return false;
  const kiln_node *r = &g->nodes[ri];
  const kiln_value *x = ir_in(g, r, 0), *y = ir_out(g, r, 0);
  if (!y || !y->typed) return false;
  if (p.mode == KILN_RESIZE_CUBIC || p.exclude_outside) return false;
  bool legacy = r->op == KILN_OP_Upsample || r->opset < 11;
  static const char *const coords[] = {"half_pixel", "pytorch_half_pixel", "align_corners",
                                       "asymmetric"};
  if ((int)p.coord > (int)KILN_COORD_ASYMMETRIC) return false; /* the tf_* modes */
  m->resize = ri;
  m->linear = p.mode == KILN_RESIZE_LINEAR;
  m->coord = coords[p.coord];
  /* Upsample and Resize-10 round down when upsampling: floor */
  m->nearest = legacy ? "floor" : ir_attr_str(r, "nearest_mode");
  m->nsp = x->shape.rank - 2;
  if (p.out.d[0] != x->shape.d[0] || p.out.d[1] != x->shape.d[1]) return false;
  for (int d = 0; d < m->nsp; d++) {
    int64_t in_len = x->shape.d[2 + d], out_len = p.out.d[2 + d];
    if (in_len < 1 || out_len % in_len) return false;
    int64_t s = out_len / in_len;
    if (s > 1024) return false; /* kiln.UpsampleConv's limit */
    /* the coordinates must be those of scale s: with sizes, scale = out / in exactly */
    if (p.scale[2 + d] != (double)s || p.resized_len[2 + d] != (double)out_len) return false;
    m->scale[d] = s;
  }
  return true;
}

kiln_code pass_fuse_upsample_conv(kiln_graph *g, kiln_pass_ctx *cx, kiln_pass_stats *st,
                                  kiln_err *e) {
  if (cx->mode == KILN_MODE_TRAINING) {
    snprintf(st->detail, sizeof st->detail, "skipped: training mode keeps the unfused ops");
    return KILN_OK;
  }
  int64_t n_linear = 0, n_bn = 0, n_act = 0;
  int64_t n0 = g->n_nodes;
  for (int64_t i = 0; i < n0; i++) {
    const kiln_node *conv = &g->nodes[i];
    if (conv->dead || (conv->op != KILN_OP_Conv && conv->op != KILN_OP_FusedConv)) continue;
    if (conv->op == KILN_OP_FusedConv && ir_attr_int(conv, "has_residual")) continue;
    int xv = conv->in[0];
    if (xv < 0 || fuse_sole_reader(g, xv) != (int)i || g->values[xv].producer < 0) continue;
    up_match m;
    if (!resize_ok(g, g->values[xv].producer, &m)) continue;
    int w = conv->in[1], b = conv->n_in > 2 ? conv->in[2] : -1, out = conv->out[0];
    int dead[4] = {m.resize, (int)i, -1, -1}, n_dead = 2;
    kiln_fused_act_params act = {.act = KILN_FACT_NONE};
    if (conv->op == KILN_OP_FusedConv) {
      if (kiln_fused_act_get(conv, &act, e)) return e->code;
    } else {
      /* BatchNormalization, then an activation, each reading the previous output alone */
      int bi = fuse_sole_reader(g, out);
      const kiln_value *wv = &g->values[w];
      if (bi >= 0 && g->nodes[bi].op == KILN_OP_BatchNormalization && g->nodes[bi].in[0] == out &&
          wv->data && wv->data->dtype == KILN_F32 && wv->data->shape.rank >= 3 &&
          (b < 0 || g->values[b].data) && fuse_bn_foldable(g, &g->nodes[bi], wv->data->shape.d[0])) {
        int nw, nb;
        KILN_TRY(fuse_fold_bn(g, &g->nodes[bi], w, b, &nw, &nb, e));
        w = nw, b = nb;
        out = g->nodes[bi].out[0];
        dead[n_dead++] = bi;
        n_bn++;
      }
      int ai = fuse_sole_reader(g, out);
      if (ai >= 0 && fuse_act_of(g, &g->nodes[ai], &act) && g->nodes[ai].in[0] == out) {
        out = g->nodes[ai].out[0];
        dead[n_dead++] = ai;
      } else {
        act.act = KILN_FACT_NONE;
      }
    }
    int in[3] = {g->nodes[m.resize].in[0], w, b}, nid;
    KILN_TRY(fuse_replace(g, dead, n_dead, KILN_OP_UpsampleConv, g->nodes[i].name, in,
                          b >= 0 ? 3 : 2, out, &nid, e));
    KILN_TRY(fuse_copy_attrs(g, (int)i, nid, fuse_conv_attr_names, e));
    KILN_TRY(ir_set_attr_str(g, nid, "mode", m.linear ? "linear" : "nearest", e));
    KILN_TRY(ir_set_attr_str(g, nid, "coordinate_transformation_mode", m.coord, e));
    if (!m.linear) KILN_TRY(ir_set_attr_str(g, nid, "nearest_mode", m.nearest, e));
    KILN_TRY(ir_set_attr_ints(g, nid, "scales", m.scale, m.nsp, e));
    KILN_TRY(fuse_set_act(g, nid, &act, e));
    n_linear += m.linear;
    n_act += act.act != KILN_FACT_NONE;
    st->changes++;
  }
  snprintf(st->detail, sizeof st->detail,
           "%lld upsample blocks fused (%lld nearest, %lld linear; %lld with an activation, "
           "%lld BatchNormalization folded here)",
           (long long)st->changes, (long long)(st->changes - n_linear), (long long)n_linear,
           (long long)n_act, (long long)n_bn);
  return KILN_OK;
}
