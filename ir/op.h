/* op.h — how an op is defined, once.
 *
 * Every op kiln knows is listed in ir/ops.def (which includes one .def file per
 * op family).  The list expands into the kiln_op enum and into the registry of
 * kiln_op_def descriptors.  A descriptor carries everything the IR needs about
 * the op: its ONNX name and domain, arity, attribute schema with defaults, shape
 * and dtype inference, and flags.  Later layers attach their own per-op part in
 * their own table indexed by kiln_op: the reference kernel (runtime/ref_table.c),
 * the gradient rule (passes/), the emitter (codegen/).
 *
 * To add an op: add `OP(Name, "domain")` to its family .def file, define
 * `const kiln_op_def kiln_opdef_Name` in ir/ops/<family>.c and
 * `kiln_code ref_Name(...)` in runtime/ref/<family>.c.  See docs/adding-an-op.md. */
#ifndef KILN_OP_H
#define KILN_OP_H

#include "ir/base.h"

typedef enum kiln_op {
  KILN_OP_INVALID = 0,
#define OP(name, domain) KILN_OP_##name,
#include "ir/ops.def"
#undef OP
  KILN_OP_COUNT
} kiln_op;

/* ONNX AttributeProto.AttributeType codes. */
typedef enum kiln_attr_kind {
  KILN_ATTR_UNDEF = 0,
  KILN_ATTR_FLOAT = 1,
  KILN_ATTR_INT = 2,
  KILN_ATTR_STRING = 3,
  KILN_ATTR_TENSOR = 4,
  KILN_ATTR_GRAPH = 5,
  KILN_ATTR_FLOATS = 6,
  KILN_ATTR_INTS = 7,
  KILN_ATTR_STRINGS = 8,
  KILN_ATTR_TENSORS = 9,
  KILN_ATTR_GRAPHS = 10,
  KILN_ATTR_SPARSE_TENSOR = 11,
  KILN_ATTR_SPARSE_TENSORS = 12,
  KILN_ATTR_TYPE_PROTO = 13,
  KILN_ATTR_TYPE_PROTOS = 14,
} kiln_attr_kind;

/* One entry of an op's attribute schema.  Absent attributes read their default. */
typedef struct kiln_attr_spec {
  const char *name;
  kiln_attr_kind kind;
  bool required;
  double def_f;           /* default for FLOAT */
  int64_t def_i;          /* default for INT */
  const char *def_s;      /* default for STRING */
  /* Attributes accepted for compatibility with older opsets that kiln reads but
   * whose value does not change the result (e.g. BatchNormalization's `spatial`,
   * `consumed_inputs`). */
  bool legacy;
} kiln_attr_spec;

struct kiln_graph;
struct kiln_node;

/* Shape and dtype inference: reads the node's inputs (types, shapes, and for the
 * inputs in `shape_inputs` their constant values) and writes its outputs' dtype
 * and shape with ir_set_output().  Returns an error naming the problem on bad
 * input; the caller prefixes the node name. */
typedef kiln_code (*kiln_infer_fn)(struct kiln_graph *g, struct kiln_node *n, kiln_err *e);

enum {
  KILN_OPF_ELEMENTWISE = 1u << 0,  /* out[i] depends only on in[i] (after broadcasting) */
  KILN_OPF_NO_FOLD = 1u << 1,      /* never constant-fold (random, stateful) */
  KILN_OPF_FUSED = 1u << 2,        /* a kiln-domain fused op produced by passes */
  KILN_OPF_INPLACE_OK = 1u << 3,   /* output 0 may share input 0's buffer */
};

#define KILN_VARIADIC 0x7fffffff

typedef struct kiln_op_def {
  const char *name;   /* ONNX op_type */
  const char *domain; /* "" for ai.onnx, "kiln" for kiln's own ops */
  int min_in, max_in;
  int min_out, max_out;
  const kiln_attr_spec *attrs;
  int n_attrs;
  kiln_infer_fn infer;
  uint32_t shape_inputs; /* bit i: the value of input i determines output shapes */
  /* Multiply-accumulates of one execution, from inferred shapes (NULL: 0). Used by
   * `kiln info` and `kiln bench` (GFLOP/s = 2*MACs/time). */
  int64_t (*macs)(const struct kiln_graph *g, const struct kiln_node *n);
  /* bit i: input i is not differentiated (running statistics, indices, labels).
   * shape_inputs and integer inputs are never differentiated either. */
  uint32_t nondiff_inputs;
  uint32_t flags;
  const char *doc; /* one line: what it computes */
} kiln_op_def;

/* The registry.  NULL for KILN_OP_INVALID. */
const kiln_op_def *kiln_op_get(kiln_op op);
const char *kiln_op_name(kiln_op op);
/* Finds an op by domain ("" or "ai.onnx" are the default domain) and name. */
kiln_op kiln_op_lookup(const char *domain, const char *name);
const kiln_attr_spec *kiln_op_attr_spec(const kiln_op_def *def, const char *name);

#define OP(name, domain) extern const kiln_op_def kiln_opdef_##name;
#include "ir/ops.def"
#undef OP

#endif
