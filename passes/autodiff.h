/* autodiff.h — reverse-mode automatic differentiation over the IR.
 *
 * kiln_autodiff() appends to a graph the nodes that compute the gradient of a
 * scalar value (the loss) with respect to chosen values (parameters, inputs,
 * feature maps).  The backward graph is made of ordinary nodes — forward ops
 * where they suffice (Mul, ReduceSum, Transpose, Gemm, ...) and a few dedicated
 * kiln-domain gradient ops where they are faster (ConvGradWeight, pooling and
 * resize gradients, BatchNorm backward) — so it prints, saves as ONNX, goes
 * through the same passes and the same LLVM code generation as the forward pass.
 *
 * Each op's gradient rule lives in a table indexed by kiln_op, filled by the
 * family files passes/grad_<family>.c (see kiln_grad_rules()).  A rule receives
 * the gradients of the node's outputs (value ids, -1 when an output has none)
 * and adds nodes producing the gradient of each input it can differentiate
 * (writing their value ids, -1 for none).  The driver accumulates gradients of
 * values used several times (one Add per extra use), un-broadcasts nothing
 * itself (rules call grad_unbroadcast), and checks that every gradient has its
 * value's shape.  Inputs that are integer-typed, shape-determining
 * (def->shape_inputs) or marked non-differentiable (def->nondiff_inputs) get no
 * gradient. */
#ifndef KILN_AUTODIFF_H
#define KILN_AUTODIFF_H

#include "ir/graph.h"

typedef struct kiln_grad_ctx kiln_grad_ctx;

/* A gradient rule.  dy[o]: gradient value of output o or -1; dx[i]: set to the
 * gradient of input i (or leave -1).  wants[i]: whether input i needs a gradient
 * at all (rules may skip work for inputs that don't). */
typedef kiln_code (*kiln_grad_fn)(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx,
                                  const bool *wants, kiln_err *e);

typedef struct kiln_autodiff_opts {
  int loss;        /* value id of the scalar (or any-shape: seeded with ones) to differentiate */
  const int *wrt;  /* value ids to differentiate with respect to */
  int n_wrt;
  int seed;        /* optional value id holding the output gradient (same shape as loss); -1: ones */
} kiln_autodiff_opts;

/* Adds the backward nodes.  grads[i] receives the gradient value id of wrt[i]
 * (a zeros constant when the loss does not depend on it).  Names of gradient
 * values are "<name>_grad". Node names are prefixed "grad/". */
kiln_code kiln_autodiff(kiln_graph *g, const kiln_autodiff_opts *o, int *grads, kiln_err *e);

/* ---- for gradient rules ---- */
kiln_graph *grad_graph(kiln_grad_ctx *gc);
/* Adds a node with fresh output values (named after `stem`); returns the outputs
 * through out_ids (n_out of them).  The node is named "grad/<forward node>/<op>". */
kiln_code grad_node(kiln_grad_ctx *gc, kiln_op op, const int *in, int n_in, int *out_ids, int n_out,
                    int *node_id, kiln_err *e);
/* One-output shorthand: returns the output value id through *out. */
kiln_code grad_op1(kiln_grad_ctx *gc, kiln_op op, const int *in, int n_in, int *out, int *node_id,
                   kiln_err *e);
/* Infers shapes of the nodes this rule has added so far (call before reading the
 * shape of an intermediate the rule built; the driver infers the rest after). */
kiln_code grad_infer_new(kiln_grad_ctx *gc, kiln_err *e);
/* A float32 scalar or 1-D int64 constant. */
kiln_code grad_const_f32(kiln_grad_ctx *gc, float v, int *out, kiln_err *e);
kiln_code grad_const_i64s(kiln_grad_ctx *gc, const int64_t *v, int n, int *out, kiln_err *e);
/* Sums `dy` (shape of a broadcast result) down to `shape` (the input's shape):
 * ReduceSum over the broadcast axes, then Reshape. Returns dy itself when the
 * shapes already agree. */
kiln_code grad_unbroadcast(kiln_grad_ctx *gc, int dy, const kiln_shape *shape, int *out, kiln_err *e);
/* Reshape v to `shape`. */
kiln_code grad_reshape(kiln_grad_ctx *gc, int v, const kiln_shape *shape, int *out, kiln_err *e);
/* The typed forward value (shapes are known when rules run). */
const kiln_value *grad_val(kiln_grad_ctx *gc, int v);

/* The table of gradient rules, indexed by kiln_op; NULL = no rule. */
void kiln_grad_rules(kiln_grad_fn *table);
void grad_register_elementwise(kiln_grad_fn *table);
void grad_register_nn(kiln_grad_fn *table);
void grad_register_linalg(kiln_grad_fn *table);
void grad_register_tensor(kiln_grad_fn *table);
void grad_register_resize(kiln_grad_fn *table);
void grad_register_pool(kiln_grad_fn *table);
void grad_register_reduce(kiln_grad_fn *table);
void grad_register_kiln(kiln_grad_fn *table);
void grad_register_activations(kiln_grad_fn *table);

#endif
