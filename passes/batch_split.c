/* batch_split.c — micro-batching of inference graphs (batch_split.h): which nodes keep samples
 * apart (a rule per op), and the rewrite to a smaller batch checked by shape inference. */
#include "passes/batch_split.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* How a node may treat axis 0 of its batched inputs (values computed from a graph input).  A
 * node none of whose inputs is batched computes a constant and needs no rule. */
typedef enum batch_rule {
  BR_NONE = 0,  /* unknown, or mixes samples: the graph stays whole */
  BR_EW,        /* elementwise: batched operands full rank with axis 0 = N; others broadcast
                 * without axis 0 (lower rank or size 1 there) */
  BR_SAMPLE,    /* X (input 0) batched, weights and the like unbatched, other batched inputs
                 * (a residual) shaped like the output; output axis 0 = N: convolutions,
                 * pools, normalizations with per-channel parameters */
  BR_BN,        /* BatchNormalization in inference mode: BR_SAMPLE */
  BR_RESHAPE,   /* Reshape/Flatten/Squeeze/Unsqueeze: axis 0 = N in and out, so each sample's
                 * elements (contiguous, row-major) stay its own */
  BR_GEMM,      /* Gemm: A batched and not transposed, B and C unbatched */
  BR_MATMUL,    /* MatMul: A batched (rank >= 2), B an unbatched matrix */
  BR_AXIS,      /* Softmax, LogSoftmax, Hardmax, Concat (all inputs batched): axis != 0 */
  BR_TRANSPOSE, /* perm[0] == 0 */
  BR_REDUCE,    /* reductions whose axes are known and leave out 0 */
  BR_RESIZE,    /* Resize/Upsample with axis 0 kept, coordinates that map it to itself */
  BR_DROPOUT,   /* inference Dropout (no training_mode input): identity */
} batch_rule;

static const unsigned char k_rule[KILN_OP_COUNT] = {
    /* elementwise */
    [KILN_OP_Identity] = BR_EW, [KILN_OP_Relu] = BR_EW, [KILN_OP_LeakyRelu] = BR_EW,
    [KILN_OP_Clip] = BR_EW, [KILN_OP_Sigmoid] = BR_EW, [KILN_OP_Tanh] = BR_EW,
    [KILN_OP_HardSigmoid] = BR_EW, [KILN_OP_HardSwish] = BR_EW, [KILN_OP_Elu] = BR_EW,
    [KILN_OP_Selu] = BR_EW, [KILN_OP_Softplus] = BR_EW, [KILN_OP_Softsign] = BR_EW,
    [KILN_OP_PRelu] = BR_EW, [KILN_OP_Add] = BR_EW, [KILN_OP_Sub] = BR_EW, [KILN_OP_Mul] = BR_EW,
    [KILN_OP_Div] = BR_EW, [KILN_OP_Pow] = BR_EW, [KILN_OP_Sqrt] = BR_EW, [KILN_OP_Exp] = BR_EW,
    [KILN_OP_Log] = BR_EW, [KILN_OP_Neg] = BR_EW, [KILN_OP_Abs] = BR_EW,
    [KILN_OP_Reciprocal] = BR_EW, [KILN_OP_Floor] = BR_EW, [KILN_OP_Ceil] = BR_EW,
    [KILN_OP_Erf] = BR_EW, [KILN_OP_Sum] = BR_EW, [KILN_OP_Mean] = BR_EW, [KILN_OP_Max] = BR_EW,
    [KILN_OP_Min] = BR_EW, [KILN_OP_Equal] = BR_EW, [KILN_OP_Greater] = BR_EW,
    [KILN_OP_Less] = BR_EW, [KILN_OP_Not] = BR_EW, [KILN_OP_Where] = BR_EW,
    [KILN_OP_Cast] = BR_EW, [KILN_OP_FusedElementwise] = BR_EW, [KILN_OP_Dropout] = BR_DROPOUT,
    /* per sample */
    [KILN_OP_Conv] = BR_SAMPLE, [KILN_OP_ConvTranspose] = BR_SAMPLE,
    [KILN_OP_MaxPool] = BR_SAMPLE, [KILN_OP_AveragePool] = BR_SAMPLE,
    [KILN_OP_GlobalAveragePool] = BR_SAMPLE, [KILN_OP_GlobalMaxPool] = BR_SAMPLE,
    [KILN_OP_InstanceNormalization] = BR_SAMPLE, [KILN_OP_LRN] = BR_SAMPLE,
    [KILN_OP_FusedConv] = BR_SAMPLE, [KILN_OP_UpsampleConv] = BR_SAMPLE,
    [KILN_OP_GapGemm] = BR_SAMPLE, [KILN_OP_BatchNormalization] = BR_BN,
    [KILN_OP_BlockedConv] = BR_SAMPLE, [KILN_OP_ToBlocked] = BR_SAMPLE,
    [KILN_OP_FromBlocked] = BR_SAMPLE,
    /* layout */
    [KILN_OP_Reshape] = BR_RESHAPE, [KILN_OP_Flatten] = BR_RESHAPE,
    [KILN_OP_Squeeze] = BR_RESHAPE, [KILN_OP_Unsqueeze] = BR_RESHAPE,
    [KILN_OP_Transpose] = BR_TRANSPOSE, [KILN_OP_Concat] = BR_AXIS,
    /* linear algebra */
    [KILN_OP_Gemm] = BR_GEMM, [KILN_OP_MatMul] = BR_MATMUL, [KILN_OP_Softmax] = BR_AXIS,
    [KILN_OP_LogSoftmax] = BR_AXIS,
    /* reductions */
    [KILN_OP_ReduceSum] = BR_REDUCE, [KILN_OP_ReduceMean] = BR_REDUCE,
    [KILN_OP_ReduceMax] = BR_REDUCE, [KILN_OP_ReduceMin] = BR_REDUCE,
    [KILN_OP_ReduceSumSquare] = BR_REDUCE,
    /* resampling */
    [KILN_OP_Resize] = BR_RESIZE, [KILN_OP_Upsample] = BR_RESIZE,
};

typedef struct split_cx {
  const kiln_graph *g;
  const bool *batched;
  int64_t N;
  char *why;
  size_t why_len;
} split_cx;

static bool refuse(split_cx *c, const kiln_node *n, const char *fmt, ...) {
  if (c->why && c->why_len) {
    char lbl[160], msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n)
      snprintf(c->why, c->why_len, "%s: %s", ir_node_label(n, lbl, sizeof lbl), msg);
    else
      snprintf(c->why, c->why_len, "%s", msg);
  }
  return false;
}

static const kiln_value *val(const split_cx *c, int id) { return id < 0 ? NULL : &c->g->values[id]; }
static bool is_batched(const split_cx *c, int id) { return id >= 0 && c->batched[id]; }
/* axis 0 of value id is the batch */
static bool leads(const split_cx *c, int id) {
  const kiln_value *v = val(c, id);
  return v && v->shape.rank >= 1 && v->shape.d[0] == c->N;
}

/* An INT attribute, or `def` when absent. */
static int64_t attr_int(const kiln_node *n, const char *name, int64_t def) {
  const kiln_attr *a = ir_attr_find(n, name);
  return a && a->kind == KILN_ATTR_INT ? a->i : def;
}

/* Axes of a reduction: the attribute, else a constant input 1; false when unknown or empty
 * (all axes). */
static bool reduce_axes_skip_0(const split_cx *c, const kiln_node *n, int rank) {
  const int64_t *ax = NULL;
  int64_t na = 0;
  const kiln_attr *a = ir_attr_find(n, "axes");
  if (a && a->kind == KILN_ATTR_INTS) {
    ax = a->ints;
    na = a->n;
  } else if (n->n_in > 1 && n->in[1] >= 0) {
    const kiln_value *v = val(c, n->in[1]);
    if (!v->data || v->data->dtype != KILN_I64) return false;
    ax = (const int64_t *)v->data->data;
    na = v->data->numel;
  }
  if (na == 0) return false;
  for (int64_t i = 0; i < na; i++)
    if (ax[i] == 0 || ax[i] == -rank) return false;
  return true;
}

/* Whether node n keeps samples apart (some input is batched). */
static bool node_ok(split_cx *c, const kiln_node *n) {
  batch_rule r = n->op < KILN_OP_COUNT ? (batch_rule)k_rule[n->op] : BR_NONE;
  const kiln_value *y = val(c, n->out[0]);
  if (r == BR_NONE) return refuse(c, n, "%s may mix the samples of a batch", n->def->name);
  for (int o = 0; o < n->n_out; o++)
    if (n->out[o] >= 0 && !leads(c, n->out[o]))
      return refuse(c, n, "output %d does not keep the batch in axis 0", o);
  int rank = y->shape.rank;
  switch (r) {
  case BR_DROPOUT:
    if (n->n_in > 2 && n->in[2] >= 0) return refuse(c, n, "Dropout with a training_mode input");
    /* fall through */
  case BR_EW:
    for (int k = 0; k < n->n_in; k++) {
      const kiln_value *v = val(c, n->in[k]);
      if (!v) continue;
      if (is_batched(c, n->in[k]) ? v->shape.rank != rank || v->shape.d[0] != c->N
                                  : v->shape.rank == rank && v->shape.d[0] != 1)
        return refuse(c, n, "input %d broadcasts along the batch axis", k);
    }
    return true;
  case BR_BN:
    if (attr_int(n, "training_mode", 0) != 0 || n->n_out > 1)
      return refuse(c, n, "BatchNormalization in training mode");
    /* fall through */
  case BR_SAMPLE:
    if (!is_batched(c, n->in[0]) || !leads(c, n->in[0]))
      return refuse(c, n, "X does not carry the batch");
    /* a second output (MaxPool's Indices) indexes the whole batch */
    for (int o = 1; o < n->n_out; o++)
      if (n->out[o] >= 0) return refuse(c, n, "output %d indexes across the batch", o);
    for (int k = 1; k < n->n_in; k++)
      if (is_batched(c, n->in[k]) &&
          !(val(c, n->in[k])->shape.rank == rank && leads(c, n->in[k])))
        return refuse(c, n, "input %d is batched differently from the output", k);
    return true;
  case BR_RESHAPE:
    if (!leads(c, n->in[0])) return refuse(c, n, "input does not keep the batch in axis 0");
    return true;
  case BR_GEMM:
    if (!is_batched(c, n->in[0]) || attr_int(n, "transA", 0) != 0 || is_batched(c, n->in[1]) ||
        (n->n_in > 2 && is_batched(c, n->in[2])))
      return refuse(c, n, "the batch is not A's rows");
    if (n->n_in > 2 && n->in[2] >= 0) {
      const kiln_value *cv = val(c, n->in[2]);
      if (cv->shape.rank == 2 && cv->shape.d[0] != 1) return refuse(c, n, "C has rows per sample");
    }
    return true;
  case BR_MATMUL:
    if (!is_batched(c, n->in[0]) || is_batched(c, n->in[1]) || val(c, n->in[0])->shape.rank < 2 ||
        val(c, n->in[1])->shape.rank != 2)
      return refuse(c, n, "the batch is not A's leading axis over a matrix B");
    return true;
  case BR_AXIS: {
    int64_t ax = attr_int(n, "axis", -1);
    if (ax < 0) ax += rank;
    if (ax == 0 || rank < 2) return refuse(c, n, "works along the batch axis");
    for (int k = 0; k < n->n_in; k++)
      if (n->in[k] >= 0 && !(is_batched(c, n->in[k]) && leads(c, n->in[k])))
        return refuse(c, n, "input %d is not batched", k);
    return true;
  }
  case BR_TRANSPOSE: {
    const kiln_attr *a = ir_attr_find(n, "perm");
    if (!a || a->kind != KILN_ATTR_INTS || a->n < 1 || a->ints[0] != 0)
      return refuse(c, n, "moves the batch axis");
    return true;
  }
  case BR_REDUCE:
    if (!reduce_axes_skip_0(c, n, val(c, n->in[0])->shape.rank) || !leads(c, n->in[0]))
      return refuse(c, n, "reduces over the batch axis (or over axes unknown here)");
    return true;
  case BR_RESIZE: {
    const kiln_attr *a = ir_attr_find(n, "coordinate_transformation_mode");
    const char *m = a && a->kind == KILN_ATTR_STRING ? a->s : "half_pixel";
    if (!leads(c, n->in[0]) || !strcmp(m, "tf_crop_and_resize") ||
        !strcmp(m, "tf_half_pixel_for_nn"))
      return refuse(c, n, "may resample along the batch axis");
    for (int k = 1; k < n->n_in; k++)
      if (is_batched(c, n->in[k])) return refuse(c, n, "batched sizes or scales");
    return true;
  }
  default: return refuse(c, n, "%s may mix the samples of a batch", n->def->name);
  }
}

/* Marks batched values and checks every node; true when the graph may be split. */
static bool analyse(split_cx *c, bool *batched) {
  const kiln_graph *g = c->g;
  if (g->n_inputs == 0 || g->n_outputs == 0) return refuse(c, NULL, "no inputs or outputs");
  for (int i = 0; i < g->n_inputs; i++) {
    const kiln_value *v = val(c, g->inputs[i]);
    if (!v->typed || v->shape.rank < 1) return refuse(c, NULL, "input '%s' has no batch axis", v->name);
    if (i == 0) c->N = v->shape.d[0];
    if (v->shape.d[0] != c->N)
      return refuse(c, NULL, "inputs differ in axis 0 ('%s' has %lld, not %lld)", v->name,
                    (long long)v->shape.d[0], (long long)c->N);
    batched[g->inputs[i]] = true;
  }
  if (c->N < 2) return refuse(c, NULL, "a batch of %lld", (long long)c->N);
  for (int64_t i = 0; i < g->n_nodes; i++) {
    const kiln_node *n = &g->nodes[i];
    if (n->dead) continue;
    bool any = false;
    for (int k = 0; k < n->n_in; k++) any |= is_batched(c, n->in[k]);
    if (!any) continue;
    if (!node_ok(c, n)) return false;
    for (int o = 0; o < n->n_out; o++)
      if (n->out[o] >= 0) batched[n->out[o]] = true;
  }
  for (int i = 0; i < g->n_outputs; i++)
    if (!batched[g->outputs[i]] || !leads(c, g->outputs[i]))
      return refuse(c, NULL, "output '%s' is not batched along axis 0", val(c, g->outputs[i])->name);
  return true;
}

/* PyTorch's x.view(x.size(0), -1) folds to a Reshape to the constant [N, -1]: where the
 * input carries the batch, the batch entry becomes 0 ("copy the input's size", ONNX's
 * allowzero = 0), the same reshape at any batch.  Each rewritten node's old shape input is
 * recorded in old_shape[node] for undoing (-1: untouched).  Returns false on out of memory. */
static bool batch_free_reshapes(kiln_graph *g, const bool *batched, int64_t N, int *old_shape,
                                kiln_err *e) {
  for (int64_t i = 0; i < g->n_nodes; i++) {
    kiln_node *n = &g->nodes[i];
    old_shape[i] = -1;
    if (n->dead || n->op != KILN_OP_Reshape || n->n_in < 2 || n->in[1] < 0 ||
        !batched[n->in[0]] || attr_int(n, "allowzero", 0) != 0)
      continue;
    const kiln_tensor *s = g->values[n->in[1]].data;
    if (!s || s->dtype != KILN_I64 || s->numel < 1 || ((const int64_t *)s->data)[0] != N ||
        g->values[n->in[0]].shape.d[0] != N)
      continue;
    kiln_tensor *t = NULL;
    char *name = NULL;
    int id = -1;
    if (ir_unique_name(g, "batch_free_shape", &name, e)) return false;
    if (kiln_tensor_clone(s, &t, e)) {
      kiln_free(name);
      return false;
    }
    ((int64_t *)t->data)[0] = 0;
    kiln_code rc = ir_add_const(g, name, t, false, &id, e); /* takes t */
    kiln_free(name);
    if (rc) return false;
    n = &g->nodes[i]; /* (values grew, nodes did not) */
    old_shape[i] = n->in[1];
    n->in[1] = id;
  }
  return true;
}

typedef struct saved_value {
  kiln_dtype dtype;
  kiln_shape shape;
  bool typed, had_data;
} saved_value;

kiln_code kiln_batch_split(kiln_graph *g, int64_t m, int64_t *passes, char *why, size_t why_len,
                           kiln_err *e) {
  *passes = 1;
  if (why && why_len) why[0] = 0;
  int64_t nv = g->n_values;
  bool *batched = kiln_calloc((size_t)(nv ? nv : 1), sizeof(bool));
  saved_value *saved = kiln_malloc(sizeof(saved_value) * (size_t)(nv ? nv : 1));
  if (!batched || !saved) {
    kiln_free(batched);
    kiln_free(saved);
    return kiln_errf(e, KILN_ERR_NOMEM, "out of memory (batch split)");
  }
  split_cx c = {.g = g, .batched = batched, .why = why, .why_len = why_len};
  bool ok = m >= 1 && analyse(&c, batched);
  if (ok && (c.N % m || c.N == m))
    ok = refuse(&c, NULL, "a batch of %lld does not split into slices of %lld", (long long)c.N,
                (long long)m);
  int *old_shape = ok ? kiln_malloc(sizeof(int) * (size_t)(g->n_nodes ? g->n_nodes : 1)) : NULL;
  if (ok && (!old_shape || !batch_free_reshapes(g, batched, c.N, old_shape, e))) {
    kiln_code rc = old_shape ? e->code : kiln_errf(e, KILN_ERR_NOMEM, "out of memory (batch split)");
    kiln_free(old_shape);
    kiln_free(batched);
    kiln_free(saved);
    return rc;
  }
  if (ok) {
    for (int64_t v = 0; v < nv; v++) {
      kiln_value *x = &g->values[v];
      saved[v] = (saved_value){x->dtype, x->shape, x->typed, x->data != NULL};
    }
    for (int i = 0; i < g->n_inputs; i++) g->values[g->inputs[i]].shape.d[0] = m;
    /* shapes again at batch m, without folding: every value must come out as it was, axis 0
     * of the batched ones scaled */
    kiln_err ie = {0};
    if (ir_infer(g, NULL, &ie))
      ok = refuse(&c, NULL, "at batch %lld: %s", (long long)m, ie.msg);
    for (int64_t v = 0; ok && v < nv; v++) {
      const kiln_value *x = &g->values[v];
      kiln_shape want = saved[v].shape;
      if (batched[v]) want.d[0] = m;
      if (x->typed != saved[v].typed || (x->data != NULL) != saved[v].had_data ||
          (x->typed && (x->dtype != saved[v].dtype || !kiln_shape_eq(&x->shape, &want))))
        ok = refuse(&c, NULL, "value '%s' does not scale with the batch", x->name);
    }
    if (!ok) {
      for (int64_t v = 0; v < nv; v++) {
        kiln_value *x = &g->values[v];
        x->dtype = saved[v].dtype;
        x->shape = saved[v].shape;
        x->typed = saved[v].typed;
      }
      for (int64_t i = 0; i < g->n_nodes; i++) /* the new shape constants stay, unread */
        if (old_shape[i] >= 0) g->nodes[i].in[1] = old_shape[i];
    }
  }
  kiln_free(old_shape);
  if (ok) *passes = c.N / m;
  kiln_free(batched);
  kiln_free(saved);
  return KILN_OK;
}
