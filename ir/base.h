/* base.h — status codes, diagnostics, dtypes, shapes and overflow-checked size
 * arithmetic shared by every layer of kiln.
 *
 * Errors caused by user input (a bad file, an unsupported op, a shape mismatch)
 * are *returned*: a function returns a kiln_code and writes one human-readable
 * message naming the file, node or tensor into a caller-owned kiln_err.
 * Compiler bugs (broken invariants) are assert()ed.  The library never exits. */
#ifndef KILN_BASE_H
#define KILN_BASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum kiln_code {
  KILN_OK = 0,
  KILN_ERR_IO,          /* file cannot be opened/read/written */
  KILN_ERR_PARSE,       /* malformed protobuf / npy / text */
  KILN_ERR_UNSUPPORTED, /* valid ONNX that kiln does not handle (op, dtype, opset) */
  KILN_ERR_INVALID,     /* structurally invalid graph or argument */
  KILN_ERR_SHAPE,       /* shape or dtype mismatch */
  KILN_ERR_NOMEM,       /* allocation failure */
  KILN_ERR_LIMIT,       /* a resource limit (bytes, elements, nodes, rank) exceeded */
  KILN_ERR_INTERNAL     /* an internal failure that is not the user's fault (e.g. LLVM) */
} kiln_code;

#define KILN_ERR_MSG 1024
typedef struct kiln_err {
  kiln_code code;
  char msg[KILN_ERR_MSG];
} kiln_err;

/* Records the first error (later ones are ignored so the root cause survives)
 * and returns `code`, so callers write `return kiln_errf(e, KILN_ERR_IO, ...)`. */
kiln_code kiln_errf(kiln_err *e, kiln_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prefixes the existing message with context ("in node 'conv1': ..."). */
void kiln_err_prefix(kiln_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void kiln_err_clear(kiln_err *e);
const char *kiln_code_name(kiln_code c);

#define KILN_TRY(expr)                                                                             \
  do {                                                                                             \
    kiln_code kiln_try_rc_ = (expr);                                                               \
    if (kiln_try_rc_ != KILN_OK) return kiln_try_rc_;                                              \
  } while (0)

/* ---- dtypes: the numeric codes are ONNX's TensorProto.DataType ---- */
typedef enum kiln_dtype {
  KILN_UNDEF = 0,
  KILN_F32 = 1,
  KILN_I32 = 6,
  KILN_I64 = 7,
  KILN_BOOL = 9,
} kiln_dtype;

bool kiln_dtype_supported(int onnx_type);
size_t kiln_dtype_size(kiln_dtype t); /* 0 for unsupported */
const char *kiln_dtype_name(int onnx_type); /* also names unsupported ONNX types */

/* ---- shapes ---- */
#define KILN_MAX_RANK 8
typedef struct kiln_shape {
  int rank;
  int64_t d[KILN_MAX_RANK];
} kiln_shape;

/* ---- limits on untrusted input (see docs/security.md) ---- */
#define KILN_MAX_TENSOR_BYTES ((int64_t)1 << 34) /* 16 GiB per tensor */
#define KILN_MAX_ELEMS ((int64_t)1 << 31)        /* elements per tensor (16 GiB of int64) */
#define KILN_MAX_NODES 1000000
#define KILN_MAX_DIM ((int64_t)1 << 40)

/* Overflow-checked arithmetic: return false on overflow or negative inputs. */
bool kiln_mul_ok(int64_t a, int64_t b, int64_t *out);
bool kiln_add_ok(int64_t a, int64_t b, int64_t *out);
/* Element count of a shape; false when a dim is negative or over KILN_MAX_DIM, or the
 * product of the (non-zero) dims overflows KILN_MAX_TENSOR_BYTES worth of the widest
 * dtype — so no partial product of a valid shape's dims overflows int64. */
bool kiln_shape_numel(const kiln_shape *s, int64_t *numel);
bool kiln_shape_eq(const kiln_shape *a, const kiln_shape *b);
/* Writes "[1,3,224,224]" into buf. Returns buf. */
char *kiln_shape_str(const kiln_shape *s, char *buf, size_t n);
kiln_shape kiln_shape_make(int rank, const int64_t *d);

/* ---- allocation: every allocation in kiln goes through these, so a test can
 * make the N-th allocation fail (failing-allocator test). ---- */
void *kiln_malloc(size_t n);
void *kiln_calloc(size_t n, size_t sz);
void *kiln_realloc(void *p, size_t n);
void kiln_free(void *p);
char *kiln_strdup(const char *s);
/* Test hook: fail the allocation after `n` more succeed (-1 disables). Only
 * compiled into test builds' behaviour; harmless otherwise. Thread-local. */
void kiln_alloc_fail_after(long n);

/* Grows a dynamic array `*arr` of element size `esz` to hold at least `need`
 * elements; `*cap` tracks capacity. */
kiln_code kiln_grow(void **arr, int64_t *cap, int64_t need, size_t esz, kiln_err *e);

#ifdef __cplusplus
}
#endif
#endif
