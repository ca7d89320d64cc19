/* layout_blocked.c — the layout pass: convolutions run on channel-blocked activations
 * (NCHW<b>c, ir/ops/layout.h) and the graph converts only where a plain op reads them.
 *
 * Every eligible Conv or FusedConv becomes a kiln.BlockedConv whose weights are blocked here,
 * once, as a new constant.  Its input comes from the blocked form of X: when X is itself the
 * (unblocked) output of an earlier BlockedConv, that blocked value is read directly; otherwise
 * one kiln.ToBlocked per value converts it.  Its output is blocked; a kiln.FromBlocked gives
 * the original value back to the readers that need the plain layout (pools, reshapes, graph
 * outputs) and is removed when no one does.  So a chain of convolutions (a ResNet trunk)
 * converts once at its entry and once at its exit.
 *
 * Eligible: inference mode; float32 2-D convolution with static shapes, one group, constant
 * weights, input and output channels multiples of the block b (the target's vector width in
 * floats: kiln_pass_ctx.vector_floats, 8 when unset).  A 3-channel stem stays plain (padding
 * its channels to b would multiply its work).  Elementwise ops whose inputs are all blocked
 * (or constant scalars) follow them into the blocked layout.
 *
 * When: kiln_pass_ctx.layout (kiln_layout_choice).  Auto, the default, blocks only for targets
 * with 16-float vectors (AVX-512), where the blocked kernels measured faster; with 8-float
 * vectors (AVX2) the plain kernels, which vectorize along output columns, are as fast. */
#include <stdlib.h>
#include <string.h>

#include "ir/ops/layout.h"
#include "kiln.h"
#include "passes/fusion.h"

#define EW_MAX_IN 64 /* inputs of an elementwise node the pass moves (FusedElementwise's most) */

typedef struct lay {
  kiln_graph *g;
  int64_t b;
  int *blocked;  /* value id -> its blocked twin (-1: none yet); original values only */
  int n_orig;
} lay;

static bool eligible(const kiln_graph *g, const kiln_node *n, int64_t b) {
  if (n->op != KILN_OP_Conv && n->op != KILN_OP_FusedConv) return false;
  const kiln_value *x = ir_in(g, n, 0), *w = ir_in(g, n, 1), *y = ir_out(g, n, 0);
  if (!x || !w || !y || !x->typed || !w->typed || !y->typed) return false;
  if (x->dtype != KILN_F32 || x->shape.rank != 4 || w->shape.rank != 4) return false;
  if (!w->data || ir_attr_int(n, "group") != 1) return false;
  if (x->shape.d[1] % b || w->shape.d[0] % b || x->shape.d[1] != w->shape.d[1]) return false;
  const kiln_value *bias = ir_in(g, n, 2);
  if (bias && (!bias->typed || bias->dtype != KILN_F32)) return false;
  return true;
}

/* Adds value "<y>_blk" and returns its id. */
static kiln_code blocked_value(kiln_graph *g, int y, int *id, kiln_err *e) {
  char stem[512], *name = NULL;
  snprintf(stem, sizeof stem, "%s_blk", g->values[y].name);
  KILN_TRY(ir_unique_name(g, stem, &name, e));
  kiln_code rc = ir_add_value(g, name, id, e);
  kiln_free(name);
  return rc;
}

/* The blocked twin of plain value v, made on first use. */
static kiln_code blocked_of(lay *L, int v, int *out, kiln_err *e) {
  if (v < L->n_orig && L->blocked[v] >= 0) {
    *out = L->blocked[v];
    return KILN_OK;
  }
  kiln_graph *g = L->g;
  int id, nid;
  KILN_TRY(blocked_value(g, v, &id, e));
  KILN_TRY(ir_add_node(g, KILN_OP_ToBlocked, "", &v, 1, &id, 1, &nid, e));
  KILN_TRY(ir_set_attr_int(g, nid, "block", L->b, e));
  if (v < L->n_orig) L->blocked[v] = id;
  *out = id;
  return KILN_OK;
}

static const char *const act_attr_names[] = {"activation", "act_alpha", "act_beta",
                                             "has_residual", NULL};

static kiln_code block_conv(lay *L, int ci, kiln_err *e) {
  kiln_graph *g = L->g;
  const kiln_node *n = &g->nodes[ci];
  int64_t b = L->b;
  int x = n->in[0], w = n->in[1], y = n->out[0];
  int bias = n->n_in > 2 ? n->in[2] : -1, z = n->n_in > 3 ? n->in[3] : -1;
  const kiln_value *wv = &g->values[w];
  int64_t OC = wv->shape.d[0], IC = wv->shape.d[1], KH = wv->shape.d[2], KW = wv->shape.d[3];
  kiln_tensor *wb = NULL;
  KILN_TRY(kiln_tensor_new(KILN_F32, &(kiln_shape){.rank = 6, .d = {OC / b, IC / b, KH, KW, b, b}},
                           &wb, e));
  kiln_block_weights((const float *)wv->data->data, (float *)wb->data, OC, IC, KH * KW, b);
  int wb_id, xb, zb = -1, yb, nid, fid;
  KILN_TRY(fuse_add_const(g, g->values[w].name, "_blocked", wb, &wb_id, e));
  KILN_TRY(blocked_of(L, x, &xb, e));
  if (z >= 0) KILN_TRY(blocked_of(L, z, &zb, e));
  KILN_TRY(blocked_value(g, y, &yb, e));
  char *cname = kiln_strdup(g->nodes[ci].name);
  if (!cname) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  int in[4] = {xb, wb_id, bias, zb};
  int n_in = z >= 0 ? 4 : bias >= 0 ? 3 : 2;
  kiln_code rc = ir_add_node(g, KILN_OP_BlockedConv, cname, in, n_in, &yb, 1, &nid, e);
  kiln_free(cname);
  KILN_TRY(rc);
  KILN_TRY(fuse_copy_attrs(g, ci, nid, fuse_conv_attr_names, e));
  KILN_TRY(fuse_copy_attrs(g, ci, nid, act_attr_names, e));
  KILN_TRY(ir_set_attr_int(g, nid, "block", b, e));
  /* the plain output, for the readers that need it */
  g->nodes[ci].dead = true;
  g->values[y].producer = -1;
  KILN_TRY(ir_add_node(g, KILN_OP_FromBlocked, "", &yb, 1, &y, 1, &fid, e));
  KILN_TRY(ir_set_attr_int(g, fid, "block", b, e));
  L->blocked[y] = yb;
  return KILN_OK;
}

/* Whether elementwise node n can run on the blocked twins of its inputs: float32, one output,
 * every input either of the output's exact (4-D) shape and already blocked, or a constant
 * scalar (which broadcasts the same in any layout); at least one blocked. */
static bool follows_blocked(const lay *L, const kiln_node *n) {
  const kiln_graph *g = L->g;
  if (!(n->def->flags & KILN_OPF_ELEMENTWISE) || n->n_out != 1 || n->n_in > EW_MAX_IN ||
      n->n_attrs > 64)
    return false;
  const kiln_value *y = ir_out(g, n, 0);
  if (!y || !y->typed || y->dtype != KILN_F32 || y->shape.rank != 4) return false;
  bool any = false;
  for (int k = 0; k < n->n_in; k++) {
    int v = n->in[k];
    if (v < 0) continue;
    const kiln_value *x = &g->values[v];
    if (!x->typed || x->dtype != KILN_F32) return false;
    if (v < L->n_orig && L->blocked[v] >= 0 && kiln_shape_eq(&x->shape, &y->shape))
      any = true;
    else if (!(x->data && x->data->numel == 1))
      return false;
  }
  return any;
}

/* Node ni moves to the blocked layout: a copy reads the blocked inputs and writes the blocked
 * twin of its output; a FromBlocked gives the plain output to whoever still reads it. */
static kiln_code block_elementwise(lay *L, int ni, kiln_err *e) {
  kiln_graph *g = L->g;
  int in[EW_MAX_IN], n_in = g->nodes[ni].n_in, y = g->nodes[ni].out[0], yb, nid, fid;
  const char *names[65];
  for (int k = 0; k < n_in; k++) {
    int v = g->nodes[ni].in[k];
    in[k] = v >= 0 && v < L->n_orig && L->blocked[v] >= 0 ? L->blocked[v] : v;
  }
  KILN_TRY(blocked_value(g, y, &yb, e));
  char *nm = kiln_strdup(g->nodes[ni].name);
  if (!nm) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  kiln_code rc = ir_add_node(g, g->nodes[ni].op, nm, in, n_in, &yb, 1, &nid, e);
  kiln_free(nm);
  KILN_TRY(rc);
  g->nodes[nid].opset = g->nodes[ni].opset;
  int na = g->nodes[ni].n_attrs;
  for (int a = 0; a < na; a++) names[a] = g->nodes[ni].attrs[a].name;
  names[na] = NULL;
  KILN_TRY(fuse_copy_attrs(g, ni, nid, names, e));
  g->nodes[ni].dead = true;
  g->values[y].producer = -1;
  KILN_TRY(ir_add_node(g, KILN_OP_FromBlocked, "", &yb, 1, &y, 1, &fid, e));
  KILN_TRY(ir_set_attr_int(g, fid, "block", L->b, e));
  L->blocked[y] = yb;
  return KILN_OK;
}

kiln_code pass_layout_blocked(kiln_graph *g, kiln_pass_ctx *cx, kiln_pass_stats *st,
                              kiln_err *e) {
  if (cx->mode == KILN_MODE_TRAINING) {
    snprintf(st->detail, sizeof st->detail, "skipped: training graphs keep the plain layout");
    return KILN_OK;
  }
  lay L = {.g = g, .b = cx->vector_floats > 0 ? cx->vector_floats : 8, .n_orig = g->n_values};
  if (L.b > KILN_BLOCK_MAX) L.b = KILN_BLOCK_MAX;
  if (cx->layout == KILN_LAYOUT_PLAIN) {
    snprintf(st->detail, sizeof st->detail, "skipped: the plain layout was asked for");
    return KILN_OK;
  }
  /* auto: blocked where it measured faster, 16-float vectors (bench/RESULTS.md: ResNet-50
   * 6% at one thread, 22-38% at 16 on AVX-512); with 8 the plain kernels are level */
  if (cx->layout != KILN_LAYOUT_BLOCKED && L.b < 16) {
    snprintf(st->detail, sizeof st->detail,
             "skipped (layout auto): %lld-float vectors, where the plain layout is as fast",
             (long long)L.b);
    return KILN_OK;
  }
  L.blocked = kiln_malloc(sizeof(int) * (size_t)(L.n_orig ? L.n_orig : 1));
  if (!L.blocked) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  for (int i = 0; i < L.n_orig; i++) L.blocked[i] = -1;
  kiln_code rc = KILN_OK;
  int64_t n_ew = 0;
  int64_t n0 = g->n_nodes; /* in topological order: producers are blocked before readers */
  for (int64_t i = 0; i < n0 && !rc; i++) {
    if (g->nodes[i].dead) continue;
    if (eligible(g, &g->nodes[i], L.b)) {
      rc = block_conv(&L, (int)i, e);
      if (!rc) st->changes++;
    } else if (follows_blocked(&L, &g->nodes[i])) {
      rc = block_elementwise(&L, (int)i, e);
      if (!rc) n_ew++;
    }
  }
  /* conversions back to plain that nothing reads */
  int64_t to = 0, from = 0;
  for (int64_t i = 0; i < g->n_nodes && !rc; i++) {
    kiln_node *n = &g->nodes[i];
    if (n->dead || n->op != KILN_OP_FromBlocked) continue;
    if (ir_use_count(g, n->out[0]) == 0 && !pass_is_output(g, n->out[0]))
      n->dead = true;
    else
      from++;
  }
  for (int64_t i = 0; i < g->n_nodes; i++)
    if (!g->nodes[i].dead && g->nodes[i].op == KILN_OP_ToBlocked) to++;
  kiln_free(L.blocked);
  snprintf(st->detail, sizeof st->detail,
           "%lld convolutions and %lld elementwise ops blocked by %lld channels; %lld "
           "conversions in, %lld out",
           (long long)st->changes, (long long)n_ew, (long long)L.b, (long long)to,
           (long long)from);
  return rc;
}
