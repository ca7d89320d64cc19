/* explain.c — Grad-CAM, gradient saliency and SPN maps from one compiled graph
 * (forward + kiln_autodiff seeded by a graph input), and their scores against
 * ground-truth masks (study/explain.h).  Pictures are in explain_draw.c. */
#include "study/explain.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen/compile.h"
#include "ir/graph.h"
#include "passes/autodiff.h"
#include "runtime/ref.h"
#include "study/eval.h"

enum { OUT_LOGITS, OUT_FEAT, OUT_FEAT_GRAD, OUT_IMAGE_GRAD, OUT_SALIENCY, N_OUT };

struct kiln_explainer {
  kiln_explain_opts o;
  unsigned methods;
  kiln_program *prog; /* JIT */
  kiln_graph *g;      /* REF: the graph (owned); JIT: prog->g */
  int slot[N_OUT];    /* graph output index of each, -1 when absent */
  int in_image, in_seed, in_pred; /* graph input indices (seed, pred: -1 without autodiff) */
  int n_outputs;
  int64_t b, k, c, h, w, fc, fh, fw;
  char *feature;
  kiln_tensor *seed; /* [b,k] one-hot of the explained classes given by the caller */
  kiln_tensor *pred; /* [b,1] 1 where the graph seeds the predicted class instead */
};

const char *kiln_explain_method_name(kiln_explain_method m) {
  static const char *const names[KILN_EXPLAIN_METHODS] = {"Grad-CAM", "gradient", "SPN"};
  return m >= 0 && m < KILN_EXPLAIN_METHODS ? names[m] : "?";
}

bool kiln_explain_methods_parse(const char *s, unsigned *bits) {
  *bits = 0;
  char buf[256];
  snprintf(buf, sizeof buf, "%s", s);
  char *save = NULL;
  for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
    if (!strcmp(t, "gradcam") || !strcmp(t, "grad-cam")) *bits |= KILN_EXPLAIN_BIT(KILN_EXPLAIN_GRADCAM);
    else if (!strcmp(t, "grad") || !strcmp(t, "gradient")) *bits |= KILN_EXPLAIN_BIT(KILN_EXPLAIN_GRAD);
    else if (!strcmp(t, "spn")) *bits |= KILN_EXPLAIN_BIT(KILN_EXPLAIN_SPN);
    else if (!strcmp(t, "all")) *bits |= KILN_EXPLAIN_ALL;
    else return false;
  }
  return *bits != 0;
}

kiln_explain_opts kiln_explain_opts_default(void) {
  kiln_explain_opts o;
  memset(&o, 0, sizeof o);
  o.backend = KILN_BACKEND_JIT;
  o.batch = 1;
  o.methods = KILN_EXPLAIN_ALL;
  return o;
}

/* The Grad-CAM feature map: the input of the C-Net's GlobalAveragePool (a node
 * named cnet/..., else the last GlobalAveragePool on the way to the logits). */
static int find_feature(const kiln_graph *g, int logits) {
  int best = -1;
  for (int64_t i = 0; i < g->n_nodes; i++) {
    const kiln_node *n = &g->nodes[i];
    if (n->dead || n->op != KILN_OP_GlobalAveragePool || n->n_in < 1) continue;
    if (n->name && !strncmp(n->name, "cnet/", 5)) return n->in[0];
    best = n->in[0];
  }
  (void)logits;
  return best;
}

static kiln_code add_typed_input(kiln_graph *g, const char *name, const kiln_shape *s, int *id, kiln_err *e) {
  char *nm = NULL;
  KILN_TRY(ir_unique_name(g, name, &nm, e));
  kiln_code rc = ir_add_value(g, nm, id, e);
  kiln_free(nm);
  if (rc) return rc;
  g->values[*id].dtype = KILN_F32;
  g->values[*id].shape = *s;
  g->values[*id].typed = true;
  return ir_add_input(g, *id, e);
}

/* A one-output node at opset 13 (the seed's small graph) with a fresh output value. */
static kiln_code add_node1(kiln_graph *g, kiln_op op, const char *name, const int *in, int n_in, int *out, int *node,
                           kiln_err *e) {
  char *vn = NULL;
  KILN_TRY(ir_unique_name(g, name, &vn, e));
  kiln_code rc = ir_add_value(g, vn, out, e);
  kiln_free(vn);
  if (rc) return rc;
  KILN_TRY(ir_add_node(g, op, name, in, n_in, out, 1, node, e));
  g->nodes[*node].opset = 13;
  return KILN_OK;
}

/* The output gradient: seed + pred * onehot(argmax(logits)), where the one-hot is
 * Cast(Equal(logits, ReduceMax(logits))) — so that explaining the predicted class
 * takes one run.  (Exactly tied maximal logits would seed each of them.) */
static kiln_code add_seed(kiln_graph *g, int logits, int seed_in, int pred_in, int *seed, kiln_err *e) {
  int mx, eq, oh, sel, nid;
  KILN_TRY(add_node1(g, KILN_OP_ReduceMax, "explain/max", &logits, 1, &mx, &nid, e));
  KILN_TRY(ir_set_attr_ints(g, nid, "axes", (const int64_t[]){1}, 1, e));
  KILN_TRY(ir_set_attr_int(g, nid, "keepdims", 1, e));
  KILN_TRY(add_node1(g, KILN_OP_Equal, "explain/is_max", (const int[]){logits, mx}, 2, &eq, &nid, e));
  KILN_TRY(add_node1(g, KILN_OP_Cast, "explain/onehot", &eq, 1, &oh, &nid, e));
  KILN_TRY(ir_set_attr_int(g, nid, "to", KILN_F32, e));
  KILN_TRY(add_node1(g, KILN_OP_Mul, "explain/pred_onehot", (const int[]){oh, pred_in}, 2, &sel, &nid, e));
  KILN_TRY(add_node1(g, KILN_OP_Add, "explain/seed", (const int[]){seed_in, sel}, 2, seed, &nid, e));
  kiln_evaluator evr = kiln_ref_evaluator();
  return ir_infer(g, &evr, e);
}

static int input_index(const kiln_graph *g, int v) {
  for (int i = 0; i < g->n_inputs; i++)
    if (g->inputs[i] == v) return i;
  return -1;
}

/* Adds the backward nodes and sets the outputs; fills x's shapes and slots. */
static kiln_code build_graph(kiln_explainer *x, kiln_graph *g, const char *path, kiln_err *e) {
  if (g->n_inputs != 1)
    return kiln_errf(e, KILN_ERR_INVALID, "%s: expected one image input, found %d inputs", path, g->n_inputs);
  int image = g->inputs[0], logits = -1, saliency = -1;
  for (int i = 0; i < g->n_outputs; i++) {
    const char *nm = g->values[g->outputs[i]].name;
    if (!strcmp(nm, "logits")) logits = g->outputs[i];
    if (!strcmp(nm, "saliency")) saliency = g->outputs[i];
  }
  if (logits < 0 && g->n_outputs) logits = g->outputs[0];
  const kiln_value *iv = &g->values[image];
  if (iv->dtype != KILN_F32 || iv->shape.rank != 4)
    return kiln_errf(e, KILN_ERR_INVALID, "%s: input '%s' is not a float32 image [B,C,H,W]", path, iv->name);
  x->b = iv->shape.d[0];
  x->c = iv->shape.d[1];
  x->h = iv->shape.d[2];
  x->w = iv->shape.d[3];
  if (logits < 0 || g->values[logits].shape.rank != 2 || g->values[logits].shape.d[0] != x->b)
    return kiln_errf(e, KILN_ERR_INVALID, "%s: no logits output [B,K]", path);
  x->k = g->values[logits].shape.d[1];
  unsigned m = x->o.methods;
  if (saliency < 0) m &= ~KILN_EXPLAIN_BIT(KILN_EXPLAIN_SPN);
  if (saliency >= 0) {
    const kiln_shape *s = &g->values[saliency].shape;
    if (s->rank != 4 || s->d[1] != 1 || s->d[2] != x->h || s->d[3] != x->w)
      return kiln_errf(e, KILN_ERR_INVALID, "%s: output 'saliency' is not [B,1,H,W] at the input's size", path);
  }
  int feat = -1;
  if (m & KILN_EXPLAIN_BIT(KILN_EXPLAIN_GRADCAM)) {
    if (x->o.feature) {
      feat = ir_find_value(g, x->o.feature);
      if (feat < 0) return kiln_errf(e, KILN_ERR_INVALID, "%s has no value named '%s'", path, x->o.feature);
    } else {
      feat = find_feature(g, logits);
      if (feat < 0)
        return kiln_errf(e, KILN_ERR_INVALID,
                         "%s: no GlobalAveragePool feeds the classifier; name the Grad-CAM feature map with --feature",
                         path);
    }
    const kiln_value *fv = &g->values[feat];
    if (fv->dtype != KILN_F32 || fv->shape.rank != 4 || fv->shape.d[0] != x->b || fv->data)
      return kiln_errf(e, KILN_ERR_INVALID, "%s: the Grad-CAM feature map '%s' is not a computed float32 [B,C,h,w]",
                       path, fv->name);
    x->fc = fv->shape.d[1];
    x->fh = fv->shape.d[2];
    x->fw = fv->shape.d[3];
    x->feature = kiln_strdup(fv->name);
    if (!x->feature) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  }
  x->methods = m;
  int wrt[2], grads[2] = {-1, -1}, n_wrt = 0, seed_in = -1, pred_in = -1;
  if (m & KILN_EXPLAIN_BIT(KILN_EXPLAIN_GRADCAM)) wrt[n_wrt++] = feat;
  if (m & KILN_EXPLAIN_BIT(KILN_EXPLAIN_GRAD)) wrt[n_wrt++] = image;
  if (n_wrt) {
    kiln_shape ss = kiln_shape_make(2, (int64_t[]){x->b, x->k}), ps = kiln_shape_make(2, (int64_t[]){x->b, 1});
    KILN_TRY(add_typed_input(g, "explain_seed", &ss, &seed_in, e));
    KILN_TRY(add_typed_input(g, "explain_pred", &ps, &pred_in, e));
    int seed = -1;
    kiln_code rc = add_seed(g, logits, seed_in, pred_in, &seed, e);
    if (rc) {
      kiln_err_prefix(e, "%s", path);
      return rc;
    }
    kiln_autodiff_opts ao = {.loss = logits, .wrt = wrt, .n_wrt = n_wrt, .seed = seed};
    rc = kiln_autodiff(g, &ao, grads, e);
    if (rc) {
      kiln_err_prefix(e, "%s", path);
      return rc;
    }
  }
  /* outputs: logits, [feature, its gradient], [image gradient], [saliency] */
  g->n_outputs = 0;
  for (int64_t v = 0; v < g->n_values; v++) g->values[v].is_output = false;
  int vals[N_OUT] = {logits, -1, -1, -1, -1};
  int gi = 0;
  if (m & KILN_EXPLAIN_BIT(KILN_EXPLAIN_GRADCAM)) {
    vals[OUT_FEAT] = feat;
    vals[OUT_FEAT_GRAD] = grads[gi++];
  }
  if (m & KILN_EXPLAIN_BIT(KILN_EXPLAIN_GRAD)) vals[OUT_IMAGE_GRAD] = grads[gi++];
  if (m & KILN_EXPLAIN_BIT(KILN_EXPLAIN_SPN)) vals[OUT_SALIENCY] = saliency;
  for (int i = 0; i < N_OUT; i++) {
    x->slot[i] = -1;
    if (vals[i] < 0) continue;
    /* a value may be an output only once: a constant zero gradient (the logits do
     * not depend on it) would still be a distinct value, so this never repeats */
    x->slot[i] = g->n_outputs;
    KILN_TRY(ir_add_output(g, vals[i], e));
  }
  x->n_outputs = g->n_outputs;
  kiln_evaluator evr = kiln_ref_evaluator();
  kiln_code rc = ir_toposort(g, e);
  if (!rc) rc = ir_verify(g, e);
  if (!rc) rc = ir_infer(g, &evr, e);
  if (rc) {
    kiln_err_prefix(e, "%s", path);
    return rc;
  }
  x->in_image = input_index(g, image);
  x->in_seed = seed_in >= 0 ? input_index(g, seed_in) : -1;
  x->in_pred = pred_in >= 0 ? input_index(g, pred_in) : -1;
  if (x->in_image < 0 || g->n_inputs != (seed_in >= 0 ? 3 : 1))
    return kiln_errf(e, KILN_ERR_INVALID, "%s: unexpected inputs after differentiation", path);
  return KILN_OK;
}

kiln_code kiln_explainer_create(const char *model_path, const kiln_explain_opts *o, kiln_explainer **out,
                                kiln_err *e) {
  *out = NULL;
  kiln_explain_opts def = kiln_explain_opts_default();
  if (!o) o = &def;
  if (o->batch < 1) return kiln_errf(e, KILN_ERR_INVALID, "the batch must be at least 1");
  if (!(o->methods & KILN_EXPLAIN_ALL)) return kiln_errf(e, KILN_ERR_INVALID, "no explanation method chosen");
  kiln_explainer *x = kiln_calloc(1, sizeof *x);
  if (!x) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  x->o = *o;
  x->o.feature = NULL; /* not kept: the caller's string */
  kiln_graph *g = NULL;
  kiln_code rc = kiln_load_model_bound(model_path, o->batch, &g, e);
  if (!rc) {
    x->o.feature = o->feature;
    rc = build_graph(x, g, model_path, e);
    x->o.feature = NULL;
  }
  if (!rc && !x->methods)
    rc = kiln_errf(e, KILN_ERR_INVALID, "%s has no `saliency` output: the SPN map needs an SPN model", model_path);
  if (!rc) {
    kiln_shape ss = kiln_shape_make(2, (int64_t[]){x->b, x->k}), ps = kiln_shape_make(2, (int64_t[]){x->b, 1});
    rc = kiln_tensor_new(KILN_F32, &ss, &x->seed, e);
    if (!rc) rc = kiln_tensor_new(KILN_F32, &ps, &x->pred, e);
  }
  if (!rc && o->backend == KILN_BACKEND_REF) {
    x->g = g;
    g = NULL;
  } else if (!rc) {
    kiln_compile_opts co = {.threads = o->threads, .cache_dir = o->cache_dir, .allow_fallback = o->allow_fallback};
    rc = kiln_compile(g, &co, &x->prog, e); /* takes g */
    g = NULL;
    if (rc) kiln_err_prefix(e, "%s", model_path);
    else x->g = x->prog->g;
  }
  ir_graph_free(g);
  if (rc) {
    kiln_explainer_free(x);
    return rc;
  }
  *out = x;
  return KILN_OK;
}

void kiln_explainer_free(kiln_explainer *x) {
  if (!x) return;
  if (x->prog)
    kiln_program_free(x->prog);
  else
    ir_graph_free(x->g);
  kiln_tensor_free(x->seed);
  kiln_tensor_free(x->pred);
  kiln_free(x->feature);
  kiln_free(x);
}

int64_t kiln_explainer_batch(const kiln_explainer *x) { return x->b; }
int64_t kiln_explainer_classes(const kiln_explainer *x) { return x->k; }
unsigned kiln_explainer_methods(const kiln_explainer *x) { return x->methods; }
void kiln_explainer_image_shape(const kiln_explainer *x, int64_t *c, int64_t *h, int64_t *w) {
  *c = x->c;
  *h = x->h;
  *w = x->w;
}
const char *kiln_explainer_feature(const kiln_explainer *x, int64_t *c, int64_t *h, int64_t *w) {
  if (c) *c = x->fc;
  if (h) *h = x->fh;
  if (w) *w = x->fw;
  return x->feature;
}

/* ---- building blocks ---- */
kiln_code kiln_gradcam(const float *A, const float *dA, int64_t C, int64_t h, int64_t w, float *cam, kiln_err *e) {
  int64_t hw = h * w;
  double *alpha = kiln_malloc(sizeof(double) * (size_t)(C ? C : 1));
  if (!alpha) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  for (int64_t c = 0; c < C; c++) {
    double s = 0;
    for (int64_t i = 0; i < hw; i++) s += dA[c * hw + i];
    alpha[c] = s / (double)hw;
  }
  /* pixel by pixel, summing channels in double */
  for (int64_t i = 0; i < hw; i++) {
    double v = 0;
    for (int64_t c = 0; c < C; c++) v += alpha[c] * A[c * hw + i];
    cam[i] = v > 0 ? (float)v : 0.0f;
  }
  kiln_free(alpha);
  return KILN_OK;
}

void kiln_resize_bilinear(const float *src, int64_t h, int64_t w, float *dst, int64_t H, int64_t W) {
  /* source coordinate of output pixel i: (i + 0.5) * in/out - 0.5, clamped below at 0 */
  double sy = (double)h / (double)H, sx = (double)w / (double)W;
  for (int64_t y = 0; y < H; y++) {
    double fy = ((double)y + 0.5) * sy - 0.5;
    if (fy < 0) fy = 0;
    int64_t y0 = (int64_t)fy;
    if (y0 > h - 1) y0 = h - 1;
    int64_t y1 = y0 + 1 < h ? y0 + 1 : h - 1;
    double ly = fy - (double)y0;
    for (int64_t x = 0; x < W; x++) {
      double fx = ((double)x + 0.5) * sx - 0.5;
      if (fx < 0) fx = 0;
      int64_t x0 = (int64_t)fx;
      if (x0 > w - 1) x0 = w - 1;
      int64_t x1 = x0 + 1 < w ? x0 + 1 : w - 1;
      double lx = fx - (double)x0;
      double top = (1 - lx) * src[y0 * w + x0] + lx * src[y0 * w + x1];
      double bot = (1 - lx) * src[y1 * w + x0] + lx * src[y1 * w + x1];
      dst[y * W + x] = (float)((1 - ly) * top + ly * bot);
    }
  }
}

static void min_max(const float *m, int64_t n, float *lo, float *hi) {
  float a = n ? m[0] : 0, b = a;
  for (int64_t i = 1; i < n; i++) {
    if (m[i] < a) a = m[i];
    if (m[i] > b) b = m[i];
  }
  *lo = a;
  *hi = b;
}

void kiln_map_normalize(float *m, int64_t n) {
  float lo, hi;
  min_max(m, n, &lo, &hi);
  float r = hi - lo;
  for (int64_t i = 0; i < n; i++) m[i] = r > 0 ? (m[i] - lo) / r : 0.0f;
}

/* A float's bits as an unsigned key with the same order (sign-magnitude to offset). */
static uint32_t order_key(float f) {
  uint32_t b;
  memcpy(&b, &f, sizeof b);
  return b & 0x80000000u ? ~b : b | 0x80000000u;
}

/* The k-th largest value's key (1 <= k <= n), without sorting or allocating: the
 * largest key K with at least k values >= K, by bisection over the 32-bit keys. */
static uint32_t kth_largest_key(const float *m, int64_t n, int64_t k) {
  uint64_t lo = 0, hi = 0xFFFFFFFFull; /* count(>= lo) >= k always; answer in [lo, hi] */
  while (lo < hi) {
    uint64_t mid = (lo + hi + 1) / 2;
    int64_t c = 0;
    for (int64_t i = 0; i < n; i++) c += order_key(m[i]) >= mid;
    if (c >= k)
      lo = mid;
    else
      hi = mid - 1;
  }
  return (uint32_t)lo;
}

bool kiln_saliency_score_map(const float *map, const float *mask, int64_t n, double top_frac,
                             kiln_saliency_score *s) {
  s->energy = s->pointing = s->iou_half = s->iou_top = NAN;
  int64_t area = 0;
  for (int64_t i = 0; i < n; i++) area += mask[i] >= 0.5f;
  if (!area || n < 1) return false;
  float lo, hi;
  min_max(map, n, &lo, &hi);
  float r = hi - lo;
  /* energy and pointing */
  double in = 0, all = 0;
  int64_t arg = 0;
  for (int64_t i = 0; i < n; i++) {
    double v = r > 0 ? (map[i] - lo) / r : 0;
    all += v;
    if (mask[i] >= 0.5f) in += v;
    if (map[i] > map[arg]) arg = i;
  }
  s->energy = all > 0 ? in / all : (double)area / (double)n;
  s->pointing = mask[arg] >= 0.5f;
  /* IoU at half the normalized range */
  int64_t tp = 0, fp = 0, fn = 0;
  for (int64_t i = 0; i < n; i++) {
    bool p = r > 0 ? (map[i] - lo) / r >= 0.5f : true, t = mask[i] >= 0.5f;
    tp += p && t;
    fp += p && !t;
    fn += !p && t;
  }
  s->iou_half = (double)tp / (double)(tp + fp + fn);
  /* IoU of the top fraction: at or above the ceil(top_frac*n)-th largest value */
  int64_t kth = (int64_t)ceil(top_frac * (double)n);
  if (kth < 1) kth = 1;
  if (kth > n) kth = n;
  uint32_t thr = kth_largest_key(map, n, kth);
  tp = fp = fn = 0;
  for (int64_t i = 0; i < n; i++) {
    bool p = order_key(map[i]) >= thr, t = mask[i] >= 0.5f;
    tp += p && t;
    fp += p && !t;
    fn += !p && t;
  }
  s->iou_top = (double)tp / (double)(tp + fp + fn);
  return true;
}

/* ---- running ---- */
void kiln_explanation_free(kiln_explanation *ex) {
  if (!ex) return;
  kiln_free(ex->logits);
  kiln_free(ex->target);
  kiln_free(ex->cam);
  for (int m = 0; m < KILN_EXPLAIN_METHODS; m++) kiln_free(ex->map[m]);
  memset(ex, 0, sizeof *ex);
}

static kiln_code run_graph(kiln_explainer *x, kiln_tensor *const *in, kiln_tensor **outs, kiln_err *e) {
  if (x->prog) return kiln_program_run(x->prog, in, outs, false, e);
  kiln_ref_ctx ctx = {.g = x->g};
  return kiln_ref_run(x->g, &ctx, in, outs, e);
}

static void free_outs(kiln_tensor **outs, int n) {
  for (int i = 0; i < n; i++) {
    kiln_tensor_free(outs[i]);
    outs[i] = NULL;
  }
}

kiln_code kiln_explain_run(kiln_explainer *x, const float *images, const int64_t *targets, kiln_explanation *out,
                           kiln_err *e) {
  memset(out, 0, sizeof *out);
  int64_t B = x->b, K = x->k, H = x->h, W = x->w, hw = H * W;
  out->b = B;
  out->k = K;
  out->h = H;
  out->w = W;
  out->fh = x->fh;
  out->fw = x->fw;
  kiln_tensor *img = NULL, *outs[N_OUT] = {0};
  kiln_tensor *in[3] = {0};
  kiln_shape is = kiln_shape_make(4, (int64_t[]){B, x->c, H, W});
  kiln_code rc = kiln_tensor_wrap(KILN_F32, &is, (void *)images, &img, e);
  if (rc) return rc;
  in[x->in_image] = img;
  if (x->in_seed >= 0) {
    in[x->in_seed] = x->seed;
    in[x->in_pred] = x->pred;
  }
  out->logits = kiln_malloc(sizeof(float) * (size_t)(B * K));
  out->target = kiln_malloc(sizeof(int64_t) * (size_t)B);
  if (!out->logits || !out->target) {
    rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
    goto fail;
  }
  for (int64_t i = 0; targets && i < B; i++)
    if (targets[i] >= K) {
      rc = kiln_errf(e, KILN_ERR_INVALID, "class %lld is out of range (%lld classes)", (long long)targets[i],
                     (long long)K);
      goto fail;
    }
  /* given classes go in the seed; the graph seeds the others with their prediction */
  float *seed = x->seed->data, *pred = x->pred->data;
  memset(seed, 0, sizeof(float) * (size_t)(B * K));
  for (int64_t i = 0; i < B; i++) {
    bool given = targets && targets[i] >= 0;
    pred[i] = given ? 0.0f : 1.0f;
    if (given) seed[i * K + targets[i]] = 1.0f;
  }
  rc = run_graph(x, in, outs, e);
  if (rc) goto fail;
  const float *lg = outs[x->slot[OUT_LOGITS]]->data;
  for (int64_t i = 0; i < B; i++) out->target[i] = targets && targets[i] >= 0 ? targets[i] : kiln_argmax(lg + i * K, K);
  memcpy(out->logits, outs[x->slot[OUT_LOGITS]]->data, sizeof(float) * (size_t)(B * K));
  for (int m = 0; m < KILN_EXPLAIN_METHODS; m++) {
    if (!(x->methods & KILN_EXPLAIN_BIT(m))) continue;
    out->map[m] = kiln_malloc(sizeof(float) * (size_t)(B * hw));
    if (!out->map[m]) {
      rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
      goto fail;
    }
  }
  if (x->methods & KILN_EXPLAIN_BIT(KILN_EXPLAIN_GRADCAM)) {
    int64_t fhw = x->fh * x->fw;
    out->cam = kiln_malloc(sizeof(float) * (size_t)(B * fhw));
    if (!out->cam) {
      rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
      goto fail;
    }
    const float *A = outs[x->slot[OUT_FEAT]]->data, *dA = outs[x->slot[OUT_FEAT_GRAD]]->data;
    for (int64_t i = 0; i < B; i++) {
      rc = kiln_gradcam(A + i * x->fc * fhw, dA + i * x->fc * fhw, x->fc, x->fh, x->fw, out->cam + i * fhw, e);
      if (rc) goto fail;
      kiln_resize_bilinear(out->cam + i * fhw, x->fh, x->fw, out->map[KILN_EXPLAIN_GRADCAM] + i * hw, H, W);
    }
  }
  if (x->methods & KILN_EXPLAIN_BIT(KILN_EXPLAIN_GRAD)) {
    const float *g = outs[x->slot[OUT_IMAGE_GRAD]]->data;
    for (int64_t i = 0; i < B; i++) {
      float *dst = out->map[KILN_EXPLAIN_GRAD] + i * hw;
      for (int64_t p = 0; p < hw; p++) {
        float mx = 0;
        for (int64_t c = 0; c < x->c; c++) {
          float v = fabsf(g[(i * x->c + c) * hw + p]);
          if (v > mx) mx = v;
        }
        dst[p] = mx;
      }
    }
  }
  if (x->methods & KILN_EXPLAIN_BIT(KILN_EXPLAIN_SPN)) {
    const float *s = outs[x->slot[OUT_SALIENCY]]->data;
    float *dst = out->map[KILN_EXPLAIN_SPN];
    for (int64_t i = 0; i < B * hw; i++) dst[i] = (float)(1.0 / (1.0 + exp(-(double)s[i])));
  }
fail:
  free_outs(outs, x->n_outputs);
  kiln_tensor_free(img);
  if (rc) kiln_explanation_free(out);
  return rc;
}

/* ---- a dataset ---- */
kiln_explain_data_opts kiln_explain_data_opts_default(void) {
  kiln_explain_data_opts o;
  memset(&o, 0, sizeof o);
  o.target = KILN_TARGET_PRED;
  o.top_frac = 0.2;
  return o;
}

void kiln_explain_summary_free(kiln_explain_summary *s) {
  if (!s) return;
  for (int m = 0; m < KILN_EXPLAIN_METHODS; m++) kiln_free(s->per[m]);
  kiln_free(s->label);
  kiln_free(s->pred);
  kiln_free(s->target);
  memset(s, 0, sizeof *s);
}

kiln_code kiln_explain_dataset(kiln_explainer *x, kiln_dataset *d, const kiln_explain_data_opts *o,
                               kiln_explain_summary *s, kiln_err *e) {
  memset(s, 0, sizeof *s);
  kiln_explain_data_opts def = kiln_explain_data_opts_default();
  if (!o) o = &def;
  if (d->c != x->c || d->h != x->h || d->w != x->w)
    return kiln_errf(e, KILN_ERR_SHAPE, "dataset '%s' has images [%lld,%lld,%lld] but the model takes [%lld,%lld,%lld]",
                     d->name ? d->name : "?", (long long)d->c, (long long)d->h, (long long)d->w, (long long)x->c,
                     (long long)x->h, (long long)x->w);
  if (d->classes != x->k)
    return kiln_errf(e, KILN_ERR_INVALID, "dataset '%s' has %lld classes but the model has %lld logits",
                     d->name ? d->name : "?", (long long)d->classes, (long long)x->k);
  int64_t n = d->n;
  if (o->limit > 0 && o->limit < n) n = o->limit;
  int64_t B = x->b, K = x->k, hw = x->h * x->w, img = x->c * hw;
  s->n = n;
  kiln_code rc = KILN_OK;
  float *images = kiln_calloc((size_t)(B * img), sizeof *images);
  float *masks = kiln_calloc((size_t)(B * hw), sizeof *masks);
  bool *has_mask = kiln_calloc((size_t)B, sizeof *has_mask);
  int64_t *labels = kiln_calloc((size_t)B, sizeof *labels), *targets = kiln_calloc((size_t)B, sizeof *targets);
  s->label = kiln_calloc((size_t)(n ? n : 1), sizeof *s->label);
  s->pred = kiln_calloc((size_t)(n ? n : 1), sizeof *s->pred);
  s->target = kiln_calloc((size_t)(n ? n : 1), sizeof *s->target);
  bool oom = !images || !masks || !has_mask || !labels || !targets || !s->label || !s->pred || !s->target;
  for (int m = 0; m < KILN_EXPLAIN_METHODS && !oom; m++) {
    s->mean[m] = (kiln_saliency_score){NAN, NAN, NAN, NAN};
    if (!(x->methods & KILN_EXPLAIN_BIT(m))) continue;
    s->per[m] = kiln_calloc((size_t)(n ? n : 1), sizeof *s->per[m]);
    oom = !s->per[m];
  }
  if (oom) {
    rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
    goto out;
  }
  kiln_saliency_score sum[KILN_EXPLAIN_METHODS];
  memset(sum, 0, sizeof sum);
  double area_sum = 0;
  s->mask_area = NAN;
  int threads = x->o.threads > 0 ? x->o.threads : omp_get_max_threads();
  for (int64_t first = 0; first < n; first += B) {
    int64_t cnt = n - first < B ? n - first : B;
    if (cnt < B) memset(images + cnt * img, 0, sizeof(float) * (size_t)((B - cnt) * img));
    rc = kiln_load_examples(d, first, cnt, images, labels, masks, has_mask, threads, e);
    if (rc) goto out;
    for (int64_t i = 0; i < B; i++) {
      targets[i] = -1;
      if (i < cnt && o->target == KILN_TARGET_LABEL) {
        if (labels[i] < 0 || labels[i] >= K) {
          rc = kiln_errf(e, KILN_ERR_INVALID, "example %lld: label %lld is out of range", (long long)(first + i),
                         (long long)labels[i]);
          goto out;
        }
        targets[i] = labels[i];
      }
    }
    kiln_explanation ex;
    rc = kiln_explain_run(x, images, targets, &ex, e);
    if (rc) goto out;
    for (int64_t i = 0; i < cnt; i++) {
      int64_t idx = first + i;
      if (has_mask[i]) {
        int64_t area = 0;
        for (int64_t p = 0; p < hw; p++) area += masks[i * hw + p] >= 0.5f;
        if (area) {
          s->n_masks++;
          area_sum += (double)area / (double)hw;
        }
      }
      s->label[idx] = labels[i];
      s->pred[idx] = kiln_argmax(ex.logits + i * K, K);
      s->target[idx] = ex.target[i];
      for (int m = 0; m < KILN_EXPLAIN_METHODS; m++) {
        if (!s->per[m]) continue;
        kiln_saliency_score *sc = &s->per[m][idx];
        bool scored = has_mask[i] && kiln_saliency_score_map(ex.map[m] + i * hw, masks + i * hw, hw, o->top_frac, sc);
        if (!scored) {
          *sc = (kiln_saliency_score){NAN, NAN, NAN, NAN};
          continue;
        }
        s->n_scored[m]++;
        sum[m].energy += sc->energy;
        sum[m].pointing += sc->pointing;
        sum[m].iou_half += sc->iou_half;
        sum[m].iou_top += sc->iou_top;
      }
    }
    kiln_explanation_free(&ex);
    if (o->progress) o->progress(o->progress_ctx, first + cnt, n);
  }
  if (s->n_masks) s->mask_area = area_sum / (double)s->n_masks;
  for (int m = 0; m < KILN_EXPLAIN_METHODS; m++) {
    if (!s->n_scored[m]) continue;
    double c = (double)s->n_scored[m];
    s->mean[m] = (kiln_saliency_score){sum[m].energy / c, sum[m].pointing / c, sum[m].iou_half / c, sum[m].iou_top / c};
  }
out:
  kiln_free(images);
  kiln_free(masks);
  kiln_free(has_mask);
  kiln_free(labels);
  kiln_free(targets);
  if (rc) kiln_explain_summary_free(s);
  return rc;
}
