/* proto_tensor.h — shared pieces of the ONNX frontend: a bounded protobuf-c
 * allocator and the TensorProto <-> kiln_tensor conversions.  Internal to frontend/. */
#ifndef KILN_FRONTEND_PROTO_TENSOR_H
#define KILN_FRONTEND_PROTO_TENSOR_H

#include "ir/tensor.h"
#include "onnx/onnx.pb-c.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "kiln's ONNX frontend assumes a little-endian host (raw_data is little-endian)"
#endif

/* Files larger than this are refused before they are read. */
#define KILN_MAX_MODEL_BYTES ((int64_t)4 << 30)

/* A protobuf-c allocator that routes through kiln_malloc/kiln_free (so the
 * failing-allocator hook reaches protobuf-c) and refuses to hold more than
 * `limit` live bytes, so a hostile file that declares huge repeated fields
 * cannot exhaust memory. */
typedef struct kiln_pb_alloc {
  ProtobufCAllocator base;
  size_t live, limit;
  bool failed;    /* an allocation failed (out of memory) */
  bool over;      /* an allocation was refused by the limit */
} kiln_pb_alloc;

/* The limit grows with the input: protobuf-c may need several times the
 * encoded size (packed varints expand to 8-byte integers). */
void kiln_pb_alloc_init(kiln_pb_alloc *pa, size_t input_len);

/* Unpacks `len` bytes as a message of `desc`.  On failure returns an error
 * naming `label` (out of memory / limit / malformed) and *out is NULL. */
kiln_code kiln_pb_unpack(const ProtobufCMessageDescriptor *desc, const void *buf, size_t len,
                         const char *label, const char *what, kiln_pb_alloc *pa,
                         ProtobufCMessage **out, kiln_err *e);
/* Serializes a message to a kiln_malloc'd buffer. */
kiln_code kiln_pb_pack(const ProtobufCMessage *m, uint8_t **buf, size_t *len, kiln_err *e);

/* Converts a TensorProto to a tensor.  `what` names the tensor in messages
 * ("initializer 'w'").  External data is read relative to `base_dir` (NULL:
 * refused).  Sizes are checked: the data must match the dims exactly. */
kiln_code kiln_proto_to_tensor(const Onnx__TensorProto *tp, const char *base_dir, const char *what,
                               kiln_tensor **out, kiln_err *e);

/* A TensorProto over a tensor's memory (no copy): raw_data points at t->data,
 * which must outlive the proto.  `name` may be NULL. */
typedef struct kiln_pb_tensor {
  Onnx__TensorProto tp;
  int64_t dims[KILN_MAX_RANK];
} kiln_pb_tensor;
void kiln_tensor_to_proto(const kiln_tensor *t, const char *name, kiln_pb_tensor *out);

#endif
