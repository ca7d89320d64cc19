/* batch_split.h — micro-batching: running an inference graph over its batch in slices.
 *
 * A convolutional network at batch N does the work of N batch-1 runs, but its activations are
 * N times larger: at batch 8 the layers' inputs and outputs (and the convolutions' padded
 * copies) no longer stay in the caches between one kernel and the next, and every kernel
 * streams them from memory.  When every node computes output sample i from input sample i
 * alone, the program can instead be compiled for a slice of m samples and run N / m times on
 * consecutive slices of the inputs, giving the same outputs with the working set of batch m
 * (and an arena m / N the size).
 *
 * kiln_batch_split decides whether a graph allows it and, when it does, rewrites it in place
 * to batch m.  The decision takes three things:
 *  - the graph: every graph input and output has the same leading size N > 1 (the batch), and
 *    there is no state (training);
 *  - each node, by a per-op rule (batch_split.c: elementwise ops broadcasting only unbatched
 *    operands, convolutions and pools with unbatched weights, Gemm/MatMul with the batch on
 *    A's rows, Softmax/Concat/Transpose/reductions that leave axis 0 alone, reshapes that keep
 *    it); an op without a rule (or a rule that fails) keeps the graph whole;
 *  - shape inference at batch m: every batched value must come out with its shape at batch N
 *    except axis 0 (a Squeeze of every size-1 axis does not), every other value unchanged.
 *    A Reshape of a batched value to a constant [N, ...] (PyTorch's x.view(x.size(0), -1),
 *    folded) first gets 0 for N, "the input's size": the same reshape at any batch.
 * Outputs at batch m are then the same computation per sample; the kernels may differ in
 * blocking (not in what they compute). */
#ifndef KILN_PASSES_BATCH_SPLIT_H
#define KILN_PASSES_BATCH_SPLIT_H

#include "ir/graph.h"

/* Splits g's batch into slices of m samples (m >= 1).  On success *passes = N / m and g's
 * batched values (the graph's inputs and outputs among them) have m in axis 0; otherwise
 * *passes = 1, g is as it was, and `why` (when given) says what kept it whole.  Errors: out of
 * memory only (a graph that cannot be split is not an error). */
kiln_code kiln_batch_split(kiln_graph *g, int64_t m, int64_t *passes, char *why, size_t why_len,
                           kiln_err *e);

#endif
