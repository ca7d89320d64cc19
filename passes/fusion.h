/* fusion.h — helpers shared by the fusion passes (passes/fuse_*.c): recognizing the
 * activations a fused op can take in its epilogue, building the fused node in place of the
 * nodes it replaces, and folding an inference BatchNormalization into constant weights. */
#ifndef KILN_PASSES_FUSION_H
#define KILN_PASSES_FUSION_H

#include "ir/ops/fused.h"
#include "ir/ops/resize.h"
#include "passes/pass.h"

/* Whether live node `n` is an activation a fused convolution can apply (Relu, Clip with
 * constant scalar bounds or attributes, LeakyRelu, Sigmoid) on float32; fills *a. */
bool fuse_act_of(const kiln_graph *g, const kiln_node *n, kiln_fused_act_params *a);

/* The live node that alone reads value v (once or more), when v is not a graph output;
 * else -1. */
int fuse_sole_reader(const kiln_graph *g, int v);

/* Replaces nodes dead[0..n_dead) by one new node of `op` named `name`, with inputs in[]
 * (-1: omitted) and output value `out` (the value the last replaced node produced, so graph
 * output names survive).  The new node's id is returned in *nid.  ids only: g->nodes and
 * g->values may move. */
kiln_code fuse_replace(kiln_graph *g, const int *dead, int n_dead, kiln_op op, const char *name,
                       const int *in, int n_in, int out, int *nid, kiln_err *e);

/* Copies node `from`'s attributes named in `names` (NULL-terminated) onto node `to`. */
kiln_code fuse_copy_attrs(kiln_graph *g, int from, int to, const char *const *names, kiln_err *e);
/* Conv's attributes, for fuse_copy_attrs. */
extern const char *const fuse_conv_attr_names[];

/* Sets `activation` (and act_alpha / act_beta when the activation has them) on node nid. */
kiln_code fuse_set_act(kiln_graph *g, int nid, const kiln_fused_act_params *a, kiln_err *e);

/* Adds constant t (taking it) named after `stem` with `suffix` ("w" + "_fused"). */
kiln_code fuse_add_const(kiln_graph *g, const char *stem, const char *suffix, kiln_tensor *t,
                         int *id, kiln_err *e);

/* Whether BatchNormalization node `bn` normalizes with constant running statistics (one per
 * channel, `c` channels) and nothing reads its training outputs — fold-bn's preconditions. */
bool fuse_bn_foldable(const kiln_graph *g, const kiln_node *bn, int64_t c);
/* Folds `bn` into Conv weights w [c, ...] and bias b ([c] or NULL): new constants in *w_id and
 * *b_id named after the originals. */
kiln_code fuse_fold_bn(kiln_graph *g, const kiln_node *bn, int w, int b, int *w_id, int *b_id,
                       kiln_err *e);

/* Node ri when it is a Resize or Upsample over a float32 X of rank 3 to 5 whose other inputs
 * (roi, scales, sizes) are all constants: its decoded mapping in *p.  False otherwise (a
 * mapping that fails to decode included: the node is then simply not fused). */
bool fuse_resize_params(const kiln_graph *g, int ri, kiln_resize_params *p);

#endif
