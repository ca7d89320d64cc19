/* onnx.h — ONNX in and out: ModelProto <-> kiln_graph, TensorProto .pb files and
 * NumPy .npy files.  Everything read here is untrusted: sizes are checked against
 * the limits in ir/base.h and every error names the file and the tensor or node. */
#ifndef KILN_FRONTEND_ONNX_H
#define KILN_FRONTEND_ONNX_H

#include "ir/graph.h"

/* Loads a .onnx model.  On success *out is a verified, topologically sorted graph
 * whose graph inputs carry their declared dtype and shape (symbolic dims keep their
 * dim_param name in value->sym[] and -1 in the shape until ir_bind_dim()).
 * External data files are read relative to the model's directory.
 * Unsupported ops, opsets and dtypes are refused with a one-line reason.
 * Shape inference is NOT run (the caller binds dims first, then calls ir_infer). */
kiln_code kiln_onnx_load(const char *path, kiln_graph **out, kiln_err *e);
/* Same, from memory (used by fuzzers and tests).  `base_dir` resolves external
 * data (NULL: external data is refused). `label` names the source in messages. */
kiln_code kiln_onnx_load_buffer(const void *buf, size_t len, const char *base_dir, const char *label,
                                kiln_graph **out, kiln_err *e);
/* Writes the graph as a .onnx file: to a temporary name, then renamed over `path`,
 * so a crash never leaves a half-written model.  Initializers are written as
 * raw_data.  Inferred shapes of intermediate values are written as value_info. */
kiln_code kiln_onnx_save(const kiln_graph *g, const char *path, kiln_err *e);
/* Serializes to a malloc'd buffer (kiln_free it). */
kiln_code kiln_onnx_save_buffer(const kiln_graph *g, uint8_t **buf, size_t *len, kiln_err *e);

/* TensorProto files (the ONNX test suite's input_0.pb / output_0.pb). */
kiln_code kiln_tensor_load_pb(const char *path, kiln_tensor **out, char **name, kiln_err *e);
kiln_code kiln_tensor_load_pb_buffer(const void *buf, size_t len, const char *label,
                                     kiln_tensor **out, char **name, kiln_err *e);
kiln_code kiln_tensor_save_pb(const kiln_tensor *t, const char *name, const char *path, kiln_err *e);

/* NumPy .npy files (format 1.0/2.0/3.0; little-endian <f4 <i4 <i8 |b1; C order;
 * Fortran order is refused). */
kiln_code kiln_tensor_load_npy(const char *path, kiln_tensor **out, kiln_err *e);
kiln_code kiln_tensor_load_npy_buffer(const void *buf, size_t len, const char *label,
                                      kiln_tensor **out, kiln_err *e);
kiln_code kiln_tensor_save_npy(const kiln_tensor *t, const char *path, kiln_err *e);

/* Loads by extension: .npy -> npy, anything else -> TensorProto. */
kiln_code kiln_tensor_load_file(const char *path, kiln_tensor **out, kiln_err *e);

/* Reads a whole file (at most `max_bytes`) into a malloc'd buffer. */
kiln_code kiln_read_file(const char *path, int64_t max_bytes, uint8_t **buf, size_t *len, kiln_err *e);
/* Writes a file atomically: `path.tmp.<pid>`, fsync, rename. */
kiln_code kiln_write_file_atomic(const char *path, const void *buf, size_t len, kiln_err *e);

#endif
