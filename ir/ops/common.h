/* common.h — shape-inference building blocks shared by the op family files. */
#ifndef KILN_OPS_COMMON_H
#define KILN_OPS_COMMON_H

#include "ir/graph.h"

/* Output 0 = input 0's dtype and shape (unary elementwise ops). Input 0 must be float. */
kiln_code infer_unary_float(kiln_graph *g, kiln_node *n, kiln_err *e);
/* Output 0 = input 0's dtype and shape, any dtype. */
kiln_code infer_unary_any(kiln_graph *g, kiln_node *n, kiln_err *e);
/* Output 0 = input 0's dtype and shape, any numeric dtype. */
kiln_code infer_unary_numeric(kiln_graph *g, kiln_node *n, kiln_err *e);
/* Output 0 = broadcast of all inputs; all inputs share one dtype (numeric). */
kiln_code infer_broadcast_same(kiln_graph *g, kiln_node *n, kiln_err *e);
/* Same, with a bool output (comparisons). */
kiln_code infer_broadcast_bool(kiln_graph *g, kiln_node *n, kiln_err *e);

/* Reads an int64/int32 1-D constant input as a list of ints (at most `max`).
 * Returns the count via *count. Errors name the input. */
kiln_code ir_const_ints(const kiln_graph *g, const kiln_node *n, int i, int64_t *vals, int max,
                        int *count, kiln_err *e);

/* Attribute schema shorthands */
#define A_INT(nm, d) {.name = nm, .kind = KILN_ATTR_INT, .def_i = (d)}
#define A_FLOAT(nm, d) {.name = nm, .kind = KILN_ATTR_FLOAT, .def_f = (d)}
#define A_STR(nm, d) {.name = nm, .kind = KILN_ATTR_STRING, .def_s = (d)}
#define A_INTS(nm) {.name = nm, .kind = KILN_ATTR_INTS}
#define A_FLOATS(nm) {.name = nm, .kind = KILN_ATTR_FLOATS}
#define A_TENSOR(nm) {.name = nm, .kind = KILN_ATTR_TENSOR}
#define A_REQ_INT(nm) {.name = nm, .kind = KILN_ATTR_INT, .required = true}
#define A_REQ_INTS(nm) {.name = nm, .kind = KILN_ATTR_INTS, .required = true}
/* accepted from old opsets, no effect on the result */
#define A_LEGACY(nm, k) {.name = nm, .kind = (k), .legacy = true}

#define NELEM(a) ((int)(sizeof(a) / sizeof((a)[0])))

#endif
