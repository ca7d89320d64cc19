/* train_bn.h — turning an inference graph's BatchNormalization nodes into their training
 * form, kiln.BatchNormTrain (batch statistics, running-statistic updates). */
#ifndef KILN_TRAIN_BN_H
#define KILN_TRAIN_BN_H

#include "ir/graph.h"

/* Rewrites every live BatchNormalization node of a typed (ir_infer'd) graph into a
 * kiln.BatchNormTrain node with the same inputs, epsilon and momentum (ONNX's momentum
 * convention, which is what PyTorch's exporter writes: ONNX 0.9 = PyTorch 0.1) and the
 * unbiased running-variance update (PyTorch's).  Y keeps its value; saved_mean and
 * saved_invstd are new values read by the gradient; the updated running statistics are
 * new values named "<running_mean name>.new" and "<running_var name>.new", appended to
 * the graph outputs (the training driver copies them into the running statistics after
 * each step).  Running-statistic outputs the node already had are kept, fed from the new
 * values by Identity nodes.  The graph is re-sorted; value ids stay valid and the new
 * nodes are typed.
 * Errors: UNSUPPORTED for the per-activation (spatial=0) form or a node whose saved
 * statistics outputs (opsets < 14) are read; INVALID when a ".new" name is taken (e.g. two
 * nodes sharing one running-statistics tensor) or the graph is not typed.
 * *n_converted (may be NULL) receives the number of nodes rewritten. */
kiln_code kiln_bn_to_training(kiln_graph *g, kiln_err *e);
kiln_code kiln_bn_to_training_count(kiln_graph *g, int *n_converted, kiln_err *e);

#endif
