/* fold_bn.c — folds an inference-mode BatchNormalization into the Conv, ConvTranspose
 * or Gemm that feeds it:  BN(x) = (x - mean) * s + beta  with  s = gamma / sqrt(var + eps)
 * per channel, so scaling the producer's weights per output channel by s and replacing
 * its bias b by (b - mean) * s + beta gives the same result with one node fewer.
 *
 * Preconditions: inference mode; the BN uses its running statistics (opset >= 14:
 * training_mode = 0; before: no mean/var outputs asked for, or opset 6's is_test) and
 * its extra outputs are unused; gamma, beta, mean and var are constant, one per
 * channel; the producer's weights (and bias, if any) are constant; the producer's
 * output is read by the BN alone and is not a graph output.  New weights and biases
 * are new constants: an initializer shared with another node is never changed. */
#include <math.h>
#include <string.h>

#include "passes/pass.h"

typedef struct bn_params {
  int64_t c;
  double *s;     /* gamma / sqrt(var + eps) */
  double *shift; /* beta - mean * s: the bias of a producer without one */
} bn_params;

static bool const_f32(const kiln_tensor *t) { return t && t->dtype == KILN_F32; }

/* Whether the BN normalizes with its running statistics and nothing reads its
 * training outputs. */
static bool bn_is_inference(const kiln_graph *g, const kiln_node *bn) {
  bool extra_present = false;
  for (int o = 1; o < bn->n_out; o++) {
    if (bn->out[o] < 0) continue;
    extra_present = true;
    if (ir_use_count(g, bn->out[o]) > 0 || pass_is_output(g, bn->out[o])) return false;
  }
  if (bn->opset >= 14) return ir_attr_int(bn, "training_mode") == 0;
  if (bn->opset < 7 && ir_attr_int(bn, "is_test") != 0) return true;
  return !extra_present; /* asking for the statistics selects the training form */
}

static kiln_code bn_read(const kiln_graph *g, const kiln_node *bn, int64_t c, bn_params *p,
                         bool *ok, kiln_err *e) {
  *ok = false;
  const kiln_tensor *gamma = ir_in_const(g, bn, 1), *beta = ir_in_const(g, bn, 2);
  const kiln_tensor *mean = ir_in_const(g, bn, 3), *var = ir_in_const(g, bn, 4);
  if (!const_f32(gamma) || !const_f32(beta) || !const_f32(mean) || !const_f32(var)) return KILN_OK;
  if (gamma->numel != c || beta->numel != c || mean->numel != c || var->numel != c)
    return KILN_OK; /* the per-activation form of opsets < 9 */
  p->c = c;
  p->s = kiln_malloc(sizeof(double) * (size_t)(c ? c : 1));
  p->shift = kiln_malloc(sizeof(double) * (size_t)(c ? c : 1));
  if (!p->s || !p->shift) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory (fold-bn)");
  double eps = ir_attr_float(bn, "epsilon");
  const float *gd = gamma->data, *bd = beta->data, *md = mean->data, *vd = var->data;
  for (int64_t i = 0; i < c; i++) {
    p->s[i] = gd[i] / sqrt((double)vd[i] + eps);
    p->shift[i] = bd[i] - md[i] * p->s[i];
  }
  *ok = true;
  return KILN_OK;
}

/* Adds a constant named after `stem` ("conv1.weight" -> "conv1.weight_bn"). */
static kiln_code add_const(kiln_graph *g, const char *stem, kiln_tensor *t, int *id, kiln_err *e) {
  char buf[512], *name = NULL;
  snprintf(buf, sizeof buf, "%s_bn", stem);
  kiln_code rc = ir_unique_name(g, buf, &name, e);
  if (rc) {
    kiln_tensor_free(t);
    return rc;
  }
  rc = ir_add_const(g, name, t, true, id, e);
  kiln_free(name);
  return rc;
}

/* Sets input slot k of node `ni` to value v, growing the input list when the optional
 * input was not given. */
static kiln_code set_input(kiln_graph *g, int ni, int k, int v, kiln_err *e) {
  kiln_node *n = &g->nodes[ni];
  if (k >= n->n_in) {
    int *in = kiln_realloc(n->in, sizeof(int) * (size_t)(k + 1));
    if (!in) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory (fold-bn)");
    for (int i = n->n_in; i < k; i++) in[i] = -1;
    n->in = in;
    n->n_in = k + 1;
  }
  n->in[k] = v;
  return KILN_OK;
}

/* The bias of a Conv/ConvTranspose after folding: (b - mean) * s + beta.  `wname` is
 * the original weight's name, the stem of a new bias. */
static kiln_code conv_bias(kiln_graph *g, int pi, const bn_params *p, const char *wname,
                           kiln_err *e) {
  const kiln_tensor *b = ir_in_const(g, &g->nodes[pi], 2);
  kiln_tensor *nb = NULL;
  KILN_TRY(kiln_tensor_new(KILN_F32, &(kiln_shape){.rank = 1, .d = {p->c}}, &nb, e));
  float *d = nb->data;
  for (int64_t i = 0; i < p->c; i++)
    d[i] = (float)(p->shift[i] + (b ? ((const float *)b->data)[i] * p->s[i] : 0.0));
  const kiln_value *bv = ir_in(g, &g->nodes[pi], 2);
  char stem[512];
  snprintf(stem, sizeof stem, "%s", bv ? bv->name : wname);
  if (!bv) { /* "conv1.weight" -> "conv1.bias" reads better than "conv1.weight_bn" */
    char *dot = strrchr(stem, '.');
    if (dot && !strcmp(dot, ".weight")) strcpy(dot, ".bias");
  }
  int id;
  KILN_TRY(add_const(g, stem, nb, &id, e));
  return set_input(g, pi, 2, id, e);
}

/* Conv: W [M, C/group, k...]: output channel m scales W[m]. */
static kiln_code fold_conv(kiln_graph *g, int pi, const bn_params *p, kiln_err *e) {
  const kiln_value *wv = ir_in(g, &g->nodes[pi], 1);
  kiln_tensor *w = NULL;
  KILN_TRY(kiln_tensor_clone(wv->data, &w, e));
  int64_t per = w->numel / p->c;
  float *d = w->data;
  for (int64_t m = 0; m < p->c; m++)
    for (int64_t j = 0; j < per; j++) d[m * per + j] = (float)(d[m * per + j] * p->s[m]);
  char wname[512];
  snprintf(wname, sizeof wname, "%s", wv->name);
  int id;
  KILN_TRY(add_const(g, wname, w, &id, e));
  KILN_TRY(set_input(g, pi, 1, id, e));
  return conv_bias(g, pi, p, wname, e);
}

/* ConvTranspose: W [C, M/group, k...]; input channel ci of group ci / (C/group) feeds
 * output channels group * (M/group) + j. */
static kiln_code fold_conv_transpose(kiln_graph *g, int pi, const bn_params *p, kiln_err *e) {
  const kiln_node *n = &g->nodes[pi];
  const kiln_value *wv = ir_in(g, n, 1);
  int64_t group = ir_attr_int(n, "group");
  kiln_tensor *w = NULL;
  KILN_TRY(kiln_tensor_clone(wv->data, &w, e));
  int64_t cin = w->shape.d[0], mg = w->shape.d[1], k = w->numel / (cin * mg);
  float *d = w->data;
  for (int64_t ci = 0; ci < cin; ci++) {
    int64_t gi = ci / (cin / group);
    for (int64_t j = 0; j < mg; j++) {
      double s = p->s[gi * mg + j];
      float *row = d + (ci * mg + j) * k;
      for (int64_t t = 0; t < k; t++) row[t] = (float)(row[t] * s);
    }
  }
  char wname[512];
  snprintf(wname, sizeof wname, "%s", wv->name);
  int id;
  KILN_TRY(add_const(g, wname, w, &id, e));
  KILN_TRY(set_input(g, pi, 1, id, e));
  return conv_bias(g, pi, p, wname, e);
}

/* C's element at (m, n) of the [M, N] output, by ONNX broadcasting. */
static double c_at(const kiln_tensor *c, int64_t m, int64_t n) {
  if (!c) return 0;
  const float *d = c->data;
  switch (c->shape.rank) {
  case 0: return d[0];
  case 1: return d[c->shape.d[0] == 1 ? 0 : n];
  default:
    return d[(c->shape.d[0] == 1 ? 0 : m) * c->shape.d[1] + (c->shape.d[1] == 1 ? 0 : n)];
  }
}

/* Gemm: Y = alpha * A' B' + beta * C with channels along N.  Column n of B' (row n of
 * B when transB) scales by s[n]; C becomes (beta * C - mean) * s + beta_bn, and the
 * Gemm's beta 1; C' is [N] unless C varies along M. */
static kiln_code fold_gemm(kiln_graph *g, int pi, const bn_params *p, kiln_err *e) {
  const kiln_node *n = &g->nodes[pi];
  const kiln_value *bv = ir_in(g, n, 1), *yv = ir_out(g, n, 0);
  int b_id = n->in[1]; /* ids stay valid when adding values moves g->values */
  bool tb = ir_attr_int(n, "transB") != 0;
  double beta = ir_attr_float(n, "beta");
  int64_t rows = yv->shape.d[0], cols = p->c;
  kiln_tensor *b = NULL;
  KILN_TRY(kiln_tensor_clone(bv->data, &b, e));
  int64_t kdim = b->numel / cols;
  float *d = b->data;
  for (int64_t j = 0; j < cols; j++)
    for (int64_t k = 0; k < kdim; k++) {
      int64_t i = tb ? j * kdim + k : k * cols + j;
      d[i] = (float)(d[i] * p->s[j]);
    }
  int id;
  KILN_TRY(add_const(g, bv->name, b, &id, e));
  KILN_TRY(set_input(g, pi, 1, id, e));

  n = &g->nodes[pi];
  const kiln_value *cv = ir_in(g, n, 2);
  const kiln_tensor *c = cv ? cv->data : NULL;
  bool per_row = c && c->shape.rank == 2 && c->shape.d[0] != 1;
  kiln_shape cs = per_row ? kiln_shape_make(2, (int64_t[]){rows, cols})
                          : kiln_shape_make(1, (int64_t[]){cols});
  kiln_tensor *nc = NULL;
  KILN_TRY(kiln_tensor_new(KILN_F32, &cs, &nc, e));
  float *cd = nc->data;
  for (int64_t m = 0; m < (per_row ? rows : 1); m++)
    for (int64_t j = 0; j < cols; j++)
      cd[m * cols + j] = (float)(beta * c_at(c, m, j) * p->s[j] + p->shift[j]);
  char stem[512];
  snprintf(stem, sizeof stem, "%s", cv ? cv->name : g->values[b_id].name);
  if (!cv) {
    char *dot = strrchr(stem, '.');
    if (dot && !strcmp(dot, ".weight")) strcpy(dot, ".bias");
  }
  KILN_TRY(add_const(g, stem, nc, &id, e));
  KILN_TRY(set_input(g, pi, 2, id, e));
  KILN_TRY(ir_set_attr_float(g, pi, "beta", 1.0, e));
  if (g->nodes[pi].opset < 7) KILN_TRY(ir_set_attr_int(g, pi, "broadcast", 1, e));
  return KILN_OK;
}

/* Whether producer `pn` (whose output 0 feeds the BN) has the constant operands folding
 * needs, with `c` output channels. */
static bool producer_ok(const kiln_graph *g, const kiln_node *pn, int64_t c) {
  const kiln_tensor *w = ir_in_const(g, pn, 1);
  if (!const_f32(w) || w->numel == 0) return false;
  const kiln_value *bv = ir_in(g, pn, 2);
  if (bv && !const_f32(bv->data)) return false;
  switch (pn->op) {
  case KILN_OP_Conv: return w->shape.d[0] == c && (!bv || bv->data->numel == c);
  case KILN_OP_ConvTranspose: {
    int64_t group = ir_attr_int(pn, "group");
    return group >= 1 && w->shape.rank >= 3 && w->shape.d[0] % group == 0 &&
           group * w->shape.d[1] == c && (!bv || bv->data->numel == c);
  }
  case KILN_OP_Gemm: {
    const kiln_value *y = ir_out(g, pn, 0);
    if (w->shape.rank != 2 || y->shape.rank != 2 || y->shape.d[1] != c) return false;
    if (w->shape.d[ir_attr_int(pn, "transB") ? 0 : 1] != c) return false;
    return !bv || bv->data->shape.rank <= 2;
  }
  default: return false;
  }
}

kiln_code pass_fold_bn(kiln_graph *g, kiln_pass_ctx *cx, kiln_pass_stats *st, kiln_err *e) {
  if (cx->mode == KILN_MODE_TRAINING) {
    snprintf(st->detail, sizeof st->detail, "skipped: training mode keeps BatchNormalization");
    return KILN_OK;
  }
  int64_t by_op[3] = {0};
  for (int64_t i = 0; i < g->n_nodes; i++) {
    kiln_node *bn = &g->nodes[i];
    if (bn->dead || bn->op != KILN_OP_BatchNormalization || !bn_is_inference(g, bn)) continue;
    int x = bn->in[0], y = bn->out[0];
    if (x < 0 || y < 0 || pass_is_output(g, x) || pass_single_user(g, x) != (int)i) continue;
    int pi = g->values[x].producer;
    if (pi < 0 || g->nodes[pi].dead || g->values[x].producer_slot != 0) continue;
    kiln_node *pn = &g->nodes[pi];
    const kiln_value *xv = &g->values[x];
    if (!xv->typed || xv->shape.rank < 2 || !producer_ok(g, pn, xv->shape.d[1])) continue;
    bn_params p = {0};
    bool ok;
    kiln_code rc = bn_read(g, bn, xv->shape.d[1], &p, &ok, e);
    kiln_op op = pn->op;
    if (!rc && ok) {
      if (op == KILN_OP_Conv) rc = fold_conv(g, pi, &p, e);
      else if (op == KILN_OP_ConvTranspose) rc = fold_conv_transpose(g, pi, &p, e);
      else rc = fold_gemm(g, pi, &p, e);
    }
    kiln_free(p.s);
    kiln_free(p.shift);
    if (rc) return rc;
    if (!ok) continue;
    /* The producer now computes the BN's output, under the BN's output name. */
    bn = &g->nodes[i];
    bn->dead = true;
    g->nodes[pi].out[0] = y;
    g->values[y].producer = pi;
    g->values[y].producer_slot = 0;
    g->values[x].producer = -1;
    st->changes++;
    by_op[op == KILN_OP_Conv ? 0 : op == KILN_OP_Gemm ? 1 : 2]++;
  }
  snprintf(st->detail, sizeof st->detail,
           "%lld BatchNormalization folded (%lld into Conv, %lld into Gemm, %lld into "
           "ConvTranspose)",
           (long long)st->changes, (long long)by_op[0], (long long)by_op[1], (long long)by_op[2]);
  return KILN_OK;
}
