/* emit_copy.h — the shared data-movement kernel of the tensor and resize families, and the
 * row/chunk tiling that their kernels share.
 *
 * A copy moves elements bitwise from a source buffer to a box of a destination buffer:
 *
 *   dst[dst_off + sum_d i_d * dst_stride[d]] = src[src_off + sum_d a_d(i_d)]   for i in dims
 *
 * where each axis' source term a_d is either affine (i_d * src_stride[d]; a stride of 0
 * broadcasts) or read from a compile-time table (src_tab[d][i_d], an element offset; a negative
 * entry means the element takes the fill value instead).  Transpose, Slice, Expand, Concat (one
 * copy per input), Split (one per output) and the reshaping ops are affine copies; nearest
 * Resize and Pad use tables.  The emitter drops size-1 axes, merges axes that are contiguous in
 * both buffers, turns tables that are really affine back into strides, and cuts a table on the
 * innermost axis into fill / contiguous / gathered segments, so that contiguous runs become
 * memcpy and fills become splat stores. */
#ifndef KILN_CODEGEN_EMIT_COPY_H
#define KILN_CODEGEN_EMIT_COPY_H

#include "codegen/emit.h"

typedef struct cg_copy {
  const char *label;     /* kernel label, e.g. "copy_Transpose" */
  kiln_dtype dtype;      /* element type (moved bitwise) */
  int rank;              /* 0 = one element */
  int64_t dims[KILN_MAX_RANK];
  int64_t src_off, src_stride[KILN_MAX_RANK];
  const int64_t *src_tab[KILN_MAX_RANK]; /* NULL: affine; else dims[d] entries (borrowed) */
  int64_t dst_off, dst_stride[KILN_MAX_RANK];
  bool src_empty;        /* the source holds no elements: everything is the fill value */
  /* Kernel arguments: bufs[0..n_bufs) (extra ones are passed but not accessed, e.g. so that the
   * in-place planner sees all of a node's inputs); src/dst/fill index into them. */
  const int *bufs;
  int n_bufs;
  int src_arg, dst_arg;
  int fill_arg;          /* argument whose element 0 is the fill value, or -1: fill_bits */
  uint64_t fill_bits;    /* the fill value's bytes (little-endian), when fill_arg < 0 */
} cg_copy;

/* Row-major contiguous strides of dims (like kiln_strides). */
void cg_contig_strides(int rank, const int64_t *dims, int64_t *strides);

/* Emits the kernel of a copy (nothing when the box is empty). */
kiln_code cg_emit_copy(kiln_emit_ctx *cx, const cg_copy *c, kiln_err *e);

/* A float32 gather of planes: dst (planes, len[0], len[1], len[2]), contiguous, element
 * (p, i0, i1, i2) = src[p * plane + sum_d map(d, i_d) * stride_d] where plane and stride_d
 * come from the source planes' sizes src_dims, or 0 where any map(d, i_d) is negative: the
 * zero-padded (and possibly resampled) copies that convolutions read.  `map` is called once
 * per (d, i) at compile time. */
typedef int64_t (*cg_plane_map)(int d, int64_t i, const void *user);
kiln_code cg_emit_plane_gather(kiln_emit_ctx *cx, const char *label, int64_t planes,
                               const int64_t src_dims[3], const int64_t len[3], cg_plane_map map,
                               const void *user, int src_buf, int dst_buf, kiln_err *e);

/* ---- row/chunk tiling ----
 * A kernel's iteration space is n_rows rows of `inner` elements.  Tiles are groups of whole rows
 * (about CG_TILE_ELEMS elements), or, when rows are long, chunks of one row, so that a few long
 * rows still spread over threads.  Every element belongs to exactly one tile. */
#define CG_TILE_ELEMS 16384

typedef struct cg_rows {
  int64_t n_rows, inner;
  int64_t n_chunks, chunk; /* chunks per row and their length (n_chunks == 1: whole rows) */
  int64_t items_per_tile;  /* items are (row, chunk) pairs */
  int64_t n_tiles;
  cg_loop loop;
} cg_rows;

void cg_rows_plan(cg_rows *t, int64_t n_rows, int64_t inner, int64_t tile_elems);
/* Opens the loop over this call's items; sets the row and its element range [*jlo, *jhi). */
void cg_rows_begin(cg_kernel *k, cg_rows *t, LLVMValueRef *row, LLVMValueRef *jlo,
                   LLVMValueRef *jhi);
void cg_rows_end(cg_kernel *k, cg_rows *t);
/* Splits a row index into coordinates over dims[0..n) (row-major). */
void cg_unravel(cg_kernel *k, LLVMValueRef row, const int64_t *dims, int n, LLVMValueRef *coord);

/* Stores v to dst[dstbase + j * ds] for j in [lo, hi). */
void cg_fill_loop(cg_kernel *k, LLVMValueRef dst, LLVMValueRef dstbase, int64_t ds,
                  LLVMValueRef lo, LLVMValueRef hi, LLVMValueRef v);
/* memcpy of n elements (of type ety, esize bytes) from src[src_idx] to dst[dst_idx]; n <= 0:
 * nothing. */
void cg_copy_run(cg_kernel *k, LLVMTypeRef ety, size_t esize, LLVMValueRef dst,
                 LLVMValueRef dst_idx, LLVMValueRef src, LLVMValueRef src_idx, LLVMValueRef n);

/* i64 helpers */
LLVMValueRef cg_max(cg_kernel *k, LLVMValueRef a, LLVMValueRef b);
/* if (cond) { ... } else { ... } */
typedef struct cg_ifelse {
  LLVMBasicBlockRef then_bb, else_bb, merge_bb;
} cg_ifelse;
void cg_ifelse_begin(cg_kernel *k, cg_ifelse *c, LLVMValueRef cond); /* builds the then part */
void cg_ifelse_else(cg_kernel *k, cg_ifelse *c);                     /* then the else part */
void cg_ifelse_end(cg_kernel *k, cg_ifelse *c);
/* The integer type of an element of dt (bitwise moves). */
LLVMTypeRef cg_bits_type(cg_kernel *k, kiln_dtype dt);

#endif
