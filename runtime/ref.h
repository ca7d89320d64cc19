/* ref.h — the reference runtime: one naive C kernel per op, written for clarity
 * over speed, and an interpreter that runs a verified, shape-inferred graph.
 * It is the oracle every compiled kernel, pass and fusion is tested against. */
#ifndef KILN_REF_H
#define KILN_REF_H

#include "ir/graph.h"

/* What a reference kernel may know besides its node and tensors. */
typedef struct kiln_ref_ctx {
  const kiln_graph *g;
  bool training;  /* Dropout drops, BatchNormalization uses batch statistics */
  uint64_t seed;  /* for random ops (Dropout in training) */
} kiln_ref_ctx;

/* A reference kernel.  `in[i]` is NULL for an omitted optional input; `out[i]`
 * are allocated by the caller with the inferred dtype and shape (NULL for an
 * omitted optional output).  Kernels return errors only for conditions shape
 * inference cannot see (e.g. an index out of range in the data). */
typedef kiln_code (*kiln_ref_fn)(const kiln_ref_ctx *ctx, const kiln_node *n,
                                 const kiln_tensor *const *in, kiln_tensor *const *out, kiln_err *e);

/* The table of reference kernels, indexed by kiln_op (runtime/ref_table.c). */
kiln_ref_fn kiln_ref_kernel(kiln_op op);

#define OP(name, domain)                                                                           \
  kiln_code ref_##name(const kiln_ref_ctx *ctx, const kiln_node *n, const kiln_tensor *const *in,  \
                       kiln_tensor *const *out, kiln_err *e);
#include "ir/ops.def"
#undef OP

/* An evaluator for ir_infer() that folds constants with the reference kernels. */
kiln_evaluator kiln_ref_evaluator(void);

/* Runs the graph.  `inputs` are in the order of g->inputs, with matching dtypes and
 * shapes; `outputs` receives newly allocated tensors in the order of g->outputs
 * (the caller frees them).  Values are freed after their last use. */
kiln_code kiln_ref_run(const kiln_graph *g, const kiln_ref_ctx *ctx, kiln_tensor *const *inputs,
                       kiln_tensor **outputs, kiln_err *e);

#endif
