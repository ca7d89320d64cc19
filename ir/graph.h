/* graph.h — kiln's IR: a graph of nodes over named values.
 *
 * Values and nodes are referred to by integer ids (indices into g->values and
 * g->nodes) so that arrays may grow without invalidating references.  After
 * ir_toposort() the live nodes of g->nodes are in topological order.
 *
 * Every value has a static dtype and shape once ir_infer() has run.  Constant
 * values (initializers, Constant outputs, and anything folded from constants)
 * carry their data in `data`. */
#ifndef KILN_GRAPH_H
#define KILN_GRAPH_H

#include "ir/base.h"
#include "ir/op.h"
#include "ir/tensor.h"

typedef struct kiln_attr {
  char *name;
  kiln_attr_kind kind;
  double f;
  int64_t i;
  char *s;        /* STRING: bytes (NUL-terminated too) */
  size_t s_len;
  kiln_tensor *t; /* TENSOR */
  int64_t n;      /* element count for FLOATS / INTS / STRINGS */
  double *floats;
  int64_t *ints;
  char **strings;
  /* GRAPH, GRAPHS, TENSORS, SPARSE_*, TYPE_PROTO*: kept as the serialized
   * AttributeProto so that load -> save round-trips; kiln's ops never read them. */
  uint8_t *opaque;
  size_t opaque_len;
} kiln_attr;

typedef struct kiln_value {
  char *name;
  kiln_dtype dtype;
  kiln_shape shape;
  bool typed;                     /* dtype and shape are known */
  char *sym[KILN_MAX_RANK];       /* symbolic dim names of graph inputs (dim_param), or NULL */
  int producer;                   /* node id, or -1 for graph inputs and initializers */
  int producer_slot;
  kiln_tensor *data;              /* constant contents, or NULL */
  bool is_initializer;            /* from graph.initializer: a parameter/weight */
  bool is_input;                  /* a graph input the caller feeds */
  bool is_output;                 /* a graph output */
  bool listed_as_input;           /* an initializer that was also listed in graph.input */
  bool trainable;                 /* a parameter that training updates */
  char *doc;
} kiln_value;

typedef struct kiln_node {
  kiln_op op;
  const kiln_op_def *def;
  char *name;
  char *domain;
  int opset;  /* the opset version of the node's domain imported by the model */
  int n_in;
  int *in;    /* value ids; -1 for an omitted optional input */
  int n_out;
  int *out;   /* value ids; -1 for an omitted optional output */
  int n_attrs;
  kiln_attr *attrs;
  char *doc;
  bool dead;  /* removed by a pass; dropped by ir_compact() */
} kiln_node;

typedef struct kiln_opset {
  char *domain;
  int64_t version;
} kiln_opset;

typedef struct kiln_graph {
  char *name;
  kiln_value *values;
  int64_t n_values, cap_values;
  kiln_node *nodes;
  int64_t n_nodes, cap_nodes;
  int *inputs;   /* graph inputs fed by the caller, in ONNX order */
  int n_inputs;
  int *outputs;  /* graph outputs, in ONNX order */
  int n_outputs;
  kiln_opset *opsets;
  int n_opsets;
  int64_t ir_version;
  char *producer_name, *producer_version, *doc;
  char *source_path; /* file the graph was loaded from, for messages */
  /* ModelProto.metadata_props: key/value strings (training checkpoints keep
   * their epoch, step and configuration here). */
  char **meta_keys, **meta_vals;
  int n_meta;
  /* Name lookup: open-addressing hash of value names -> id. */
  int *name_index;
  int64_t name_index_cap;
} kiln_graph;

/* ---- construction ---- */
kiln_graph *ir_graph_new(void);
void ir_graph_free(kiln_graph *g);
/* Adds a value; fails if the name exists.  name NULL makes a unique one. */
kiln_code ir_add_value(kiln_graph *g, const char *name, int *id, kiln_err *e);
/* Id of a value by name, or -1. */
int ir_find_value(const kiln_graph *g, const char *name);
/* Makes a unique value name from a stem ("conv1_out", "conv1_out_1", ...). */
kiln_code ir_unique_name(kiln_graph *g, const char *stem, char **out, kiln_err *e);
/* Adds a node of a registered op; inputs/outputs are value ids (outputs must not
 * have a producer yet).  The node id is returned through *node_id. */
kiln_code ir_add_node(kiln_graph *g, kiln_op op, const char *name, const int *in, int n_in,
                      const int *out, int n_out, int *node_id, kiln_err *e);
/* Adds a constant (initializer) value that takes ownership of t. */
kiln_code ir_add_const(kiln_graph *g, const char *name, kiln_tensor *t, bool initializer, int *id,
                       kiln_err *e);
kiln_code ir_add_input(kiln_graph *g, int value_id, kiln_err *e);
kiln_code ir_add_output(kiln_graph *g, int value_id, kiln_err *e);
kiln_code ir_set_opset(kiln_graph *g, const char *domain, int64_t version, kiln_err *e);
/* Sets (or replaces) a metadata entry; ir_get_meta returns NULL when absent. */
kiln_code ir_set_meta(kiln_graph *g, const char *key, const char *val, kiln_err *e);
const char *ir_get_meta(const kiln_graph *g, const char *key);
int64_t ir_get_opset(const kiln_graph *g, const char *domain); /* 0 if not imported */

/* ---- attributes (set on a node; read through the op's schema) ---- */
kiln_code ir_set_attr_int(kiln_graph *g, int node, const char *name, int64_t v, kiln_err *e);
kiln_code ir_set_attr_float(kiln_graph *g, int node, const char *name, double v, kiln_err *e);
kiln_code ir_set_attr_str(kiln_graph *g, int node, const char *name, const char *v, kiln_err *e);
kiln_code ir_set_attr_ints(kiln_graph *g, int node, const char *name, const int64_t *v, int64_t n,
                           kiln_err *e);
kiln_code ir_set_attr_floats(kiln_graph *g, int node, const char *name, const double *v, int64_t n,
                             kiln_err *e);
/* Takes ownership of t. */
kiln_code ir_set_attr_tensor(kiln_graph *g, int node, const char *name, kiln_tensor *t, kiln_err *e);
/* Appends an attribute record (used by the frontend); takes ownership of its pointers. */
kiln_code ir_push_attr(kiln_graph *g, int node, kiln_attr *a, kiln_err *e);
void ir_attr_free(kiln_attr *a);
/* A deep copy of attribute a (every kind: strings, tensors and opaque records too). */
kiln_code ir_attr_clone(const kiln_attr *a, kiln_attr *copy, kiln_err *e);

const kiln_attr *ir_attr_find(const kiln_node *n, const char *name);
bool ir_attr_has(const kiln_node *n, const char *name);
/* Typed reads that fall back to the schema default.  Asking for a name that is
 * not in the op's schema is a compiler bug (assert). */
int64_t ir_attr_int(const kiln_node *n, const char *name);
double ir_attr_float(const kiln_node *n, const char *name);
const char *ir_attr_str(const kiln_node *n, const char *name);
/* INTS: returns the count (0 when absent) and points *v at the data (NULL when absent). */
int64_t ir_attr_ints(const kiln_node *n, const char *name, const int64_t **v);
int64_t ir_attr_floats(const kiln_node *n, const char *name, const double **v);
const kiln_tensor *ir_attr_tensor(const kiln_node *n, const char *name);

/* ---- queries ---- */
static inline kiln_value *ir_val(const kiln_graph *g, int id) { return &g->values[id]; }
static inline kiln_node *ir_node(const kiln_graph *g, int id) { return &g->nodes[id]; }
/* Input i of node n, or NULL when absent/omitted. */
kiln_value *ir_in(const kiln_graph *g, const kiln_node *n, int i);
kiln_value *ir_out(const kiln_graph *g, const kiln_node *n, int i);
/* Constant data of input i, or NULL. */
const kiln_tensor *ir_in_const(const kiln_graph *g, const kiln_node *n, int i);
/* Display name for messages: "Conv node 'conv1'" (or "Conv node #12" when unnamed). */
const char *ir_node_label(const kiln_node *n, char *buf, size_t len);
/* Number of live nodes consuming value v. */
int ir_use_count(const kiln_graph *g, int v);

/* ---- shape inference helpers for kiln_infer_fn implementations ---- */
kiln_code ir_set_output(kiln_graph *g, kiln_node *n, int slot, kiln_dtype dt, const kiln_shape *s,
                        kiln_err *e);
/* Numpy-style multidirectional broadcast of two shapes. */
kiln_code ir_broadcast(const kiln_shape *a, const kiln_shape *b, kiln_shape *out, kiln_err *e);
/* Requires input i present and typed with one of the dtypes in `mask` (bit = dtype code). */
kiln_code ir_check_input(const kiln_graph *g, const kiln_node *n, int i, uint32_t dtype_mask,
                         int min_rank, int max_rank, kiln_err *e);
#define KILN_DT(t) (1u << (t))
#define KILN_DT_NUM (KILN_DT(KILN_F32) | KILN_DT(KILN_I32) | KILN_DT(KILN_I64))
#define KILN_DT_ANY (KILN_DT_NUM | KILN_DT(KILN_BOOL))
/* Normalizes a possibly negative axis against a rank; error when out of range. */
kiln_code ir_axis(int64_t axis, int rank, int *out, kiln_err *e);

/* ---- whole-graph operations ---- */
/* Orders live nodes topologically; reports a cycle naming a node on it. */
kiln_code ir_toposort(kiln_graph *g, kiln_err *e);
/* Drops dead nodes and unreferenced non-IO values; renumbers ids. */
kiln_code ir_compact(kiln_graph *g, kiln_err *e);
/* Checks structure: ids in range, single producer per value, inputs defined before
 * use, arity against the op def, attributes against the schema. */
kiln_code ir_verify(const kiln_graph *g, kiln_err *e);

/* Evaluates one node on constant inputs (provided by the runtime: the reference
 * kernels).  Used by ir_infer to propagate constants through shape chains. */
typedef kiln_code (*kiln_eval_fn)(void *ctx, const kiln_graph *g, const kiln_node *n,
                                  kiln_tensor *const *in, kiln_tensor **out, kiln_err *e);
typedef struct kiln_evaluator {
  kiln_eval_fn eval;
  void *ctx;
  int64_t max_fold_elems; /* fold only nodes whose outputs hold at most this many elements */
} kiln_evaluator;

/* Binds a symbolic dimension (dim_param) of the graph inputs to a size. */
kiln_code ir_bind_dim(kiln_graph *g, const char *sym, int64_t size, kiln_err *e);
/* Turns graph input `name` into a constant with the given contents (used when an
 * input feeds a shape-determining slot, e.g. Reshape's shape). Takes ownership. */
kiln_code ir_bind_input_const(kiln_graph *g, const char *name, kiln_tensor *t, kiln_err *e);
/* True if graph input v (transitively) feeds an input slot that determines shapes. */
bool ir_input_feeds_shape(const kiln_graph *g, int v);
/* Runs every node's shape inference in topological order and folds constants
 * with `ev` (may be NULL).  Errors name the node. */
kiln_code ir_infer(kiln_graph *g, const kiln_evaluator *ev, kiln_err *e);

/* ---- printing ---- */
#include <stdio.h>
/* One line per node: `%out[1,64,56,56]:f32 = Conv(%x, %w) {strides=[1,1], ...}  # name`. */
void ir_print(const kiln_graph *g, FILE *f);
void ir_print_node(const kiln_graph *g, const kiln_node *n, FILE *f);

#endif
