/* emit.h — what an op's emitter uses to generate its kernels with the LLVM C API.
 *
 * An emitter (`kiln_emit_fn`, one per op, in codegen/emit_<family>.c, registered
 * in the family's table) turns one node with static shapes into one or more
 * kernels.  Each kernel is an LLVM function with the kernel ABI
 *     void kernel(void **args, int64_t lo, int64_t hi)
 * that computes tiles [lo, hi) of its iteration space; the runtime splits the
 * tiles over threads.  A kernel must compute each output element in exactly one
 * tile and in an order that does not depend on the split, so results are
 * bitwise independent of the thread count.
 *
 *   cg_kernel k;
 *   KILN_TRY(cg_kernel_begin(cx, &k, "relu", 2, e));      // args: in, out
 *   LLVMValueRef x = cg_arg(&k, 0), y = cg_arg(&k, 1);
 *   ... loops over [lo*tile, hi*tile) with cg_loop_begin/cg_loop_end ...
 *   KILN_TRY(cg_kernel_end(cx, &k, n_tiles, (int[]){cg_buf_value(cx, n->in[0]),
 *                                                    cg_buf_value(cx, n->out[0])}, e));
 *
 * Arguments are bound to buffers: graph values (cg_buf_value), new constant
 * buffers made at compile time from constant data (cg_buf_const, e.g. repacked
 * weights), or per-program scratch memory (cg_buf_scratch). */
#ifndef KILN_CODEGEN_EMIT_H
#define KILN_CODEGEN_EMIT_H

#include <llvm-c/Core.h>

#include "codegen/jit.h"
#include "ir/graph.h"

typedef struct kiln_emit_ctx kiln_emit_ctx;

typedef kiln_code (*kiln_emit_fn)(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                                  kiln_err *e);

/* Commonly used LLVM types, made once per compile. */
typedef struct cg_types {
  LLVMTypeRef f32, f64, i1, i8, i32, i64, ptr, void_, v16f32, v8f32;
} cg_types;

typedef struct cg_kernel {
  kiln_emit_ctx *cx;
  LLVMContextRef ctx;
  LLVMModuleRef mod;
  LLVMBuilderRef b;
  LLVMValueRef fn;
  LLVMValueRef args_ptr, lo, hi; /* the function's parameters */
  LLVMValueRef *args;            /* loaded argument pointers */
  int n_args;
  const cg_types *t;
  char label[128];
} cg_kernel;

typedef struct cg_loop {
  LLVMBasicBlockRef head, body, latch, exit;
  LLVMValueRef iv;    /* the induction variable (i64) inside the body */
  LLVMValueRef phi;
  LLVMValueRef step;
} cg_loop;

/* ---- kernels ---- */
kiln_code cg_kernel_begin(kiln_emit_ctx *cx, cg_kernel *k, const char *label, int n_args, kiln_err *e);
LLVMValueRef cg_arg(cg_kernel *k, int i); /* the i-th buffer pointer */
/* Finishes the function (ret void), compiles it and appends a program step that
 * runs it over n_tiles tiles with arguments bound to `bufs`. */
kiln_code cg_kernel_end(kiln_emit_ctx *cx, cg_kernel *k, int64_t n_tiles, const int *bufs, kiln_err *e);
/* Abandons a kernel under construction (on an error path). */
void cg_kernel_abort(cg_kernel *k);

/* ---- buffers ---- */
int cg_buf_value(kiln_emit_ctx *cx, int value_id);
/* A new constant buffer holding a copy of `data` (e.g. repacked weights). -1 on OOM. */
int cg_buf_const(kiln_emit_ctx *cx, const void *data, size_t bytes, kiln_err *e);
/* Scratch memory live only during this node's kernels. -1 on OOM. */
int cg_buf_scratch(kiln_emit_ctx *cx, size_t bytes, kiln_err *e);

/* The program's status word (int32), for kernels that detect bad data they
 * cannot return as an error (an index out of range).  Pass it as an argument;
 * flag with cg_flag_error() and end the kernel with cg_kernel_end_checked(): the
 * runner then stops with `msg` naming the node instead of a silently wrong result. */
int cg_buf_status(kiln_emit_ctx *cx, kiln_err *e);
void cg_flag_error(cg_kernel *k, LLVMValueRef status_ptr);
kiln_code cg_kernel_end_checked(kiln_emit_ctx *cx, cg_kernel *k, int64_t n_tiles, const int *bufs,
                                const char *msg, kiln_err *e);

/* ---- context queries ---- */
const cg_types *cg_t(kiln_emit_ctx *cx);
bool cg_avx512(kiln_emit_ctx *cx);
int cg_threads(kiln_emit_ctx *cx); /* the thread count the program will run with */
/* The compile's tuning table (codegen/tune.h: measured convolution blocks), or NULL. */
struct kiln_tune_table *cg_tune_table(kiln_emit_ctx *cx);
int cg_gemm_kernel(kiln_emit_ctx *cx); /* kiln_compile_opts.gemm_kernel (tests) */
int cg_cur_node_id(kiln_emit_ctx *cx); /* the node being emitted, or -1 */
int64_t cg_step_count(kiln_emit_ctx *cx); /* program steps emitted so far */

/* ---- IR building helpers ---- */
LLVMValueRef cg_i64(cg_kernel *k, int64_t v);
LLVMValueRef cg_i32(cg_kernel *k, int32_t v);
LLVMValueRef cg_f32(cg_kernel *k, double v);
/* for (iv = start; iv < end; iv += step) — unsigned-free, i64. */
LLVMValueRef cg_loop_begin(cg_kernel *k, cg_loop *l, LLVMValueRef start, LLVMValueRef end,
                           LLVMValueRef step, const char *name);
void cg_loop_end(cg_kernel *k, cg_loop *l);
/* Pointer to element `idx` of type `elt` from `base`. */
LLVMValueRef cg_gep(cg_kernel *k, LLVMTypeRef elt, LLVMValueRef base, LLVMValueRef idx);
LLVMValueRef cg_load(cg_kernel *k, LLVMTypeRef elt, LLVMValueRef base, LLVMValueRef idx);
void cg_store(cg_kernel *k, LLVMValueRef v, LLVMValueRef base, LLVMValueRef idx);
/* Calls an LLVM intrinsic overloaded on `types` (e.g. "llvm.fma", {f32}). */
LLVMValueRef cg_intrinsic(cg_kernel *k, const char *name, LLVMTypeRef *types, int n_types,
                          LLVMValueRef *args, int n_args);
/* Calls an allow-listed runtime function (e.g. "expf") of type ret(args...). */
LLVMValueRef cg_call_rt(cg_kernel *k, const char *name, LLVMTypeRef ret, LLVMValueRef *args, int n_args);
LLVMValueRef cg_add(cg_kernel *k, LLVMValueRef a, LLVMValueRef b);   /* i64 */
LLVMValueRef cg_mul(cg_kernel *k, LLVMValueRef a, LLVMValueRef b);   /* i64 */
LLVMValueRef cg_min(cg_kernel *k, LLVMValueRef a, LLVMValueRef b);   /* i64 signed */
LLVMValueRef cg_select(cg_kernel *k, LLVMValueRef c, LLVMValueRef a, LLVMValueRef b);
/* An alloca in the entry block, where mem2reg/SROA promote it to registers. */
LLVMValueRef cg_entry_alloca(cg_kernel *k, LLVMTypeRef ty);
/* <w x T> with every lane s. */
LLVMValueRef cg_splat(cg_kernel *k, LLVMValueRef s, unsigned w);
/* <w x i1> with the first n lanes on. */
LLVMValueRef cg_lane_mask(cg_kernel *k, unsigned w, unsigned n);
/* w floats at base[idx] (unaligned); only the first n lanes when n < w (masked, others 0). */
LLVMValueRef cg_vload(cg_kernel *k, LLVMValueRef base, LLVMValueRef idx, unsigned w, unsigned n);
void cg_vstore(cg_kernel *k, LLVMValueRef v, LLVMValueRef base, LLVMValueRef idx, unsigned w, unsigned n);
/* if (cond) { ... } — returns the merge block's builder position after cg_if_end. */
typedef struct cg_if {
  LLVMBasicBlockRef then_bb, merge_bb;
} cg_if;
void cg_if_begin(cg_kernel *k, cg_if *c, LLVMValueRef cond);
void cg_if_end(cg_kernel *k, cg_if *c);

/* ---- elementwise kernels: one scalar body, shared loops and broadcasting ----
 * `body` computes the output element from the (already loaded and, if needed,
 * converted) input elements.  in_types are the LLVM types of the inputs. */
typedef LLVMValueRef (*cg_scalar_body)(cg_kernel *k, const kiln_node *n, LLVMValueRef *in,
                                       const kiln_dtype *in_dtypes, void *user);
kiln_code cg_emit_map(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                      cg_scalar_body body, void *user, kiln_err *e);
LLVMTypeRef cg_dtype(cg_kernel *k, kiln_dtype dt);

/* ---- the emitter tables ----
 * Each family registers its emitters into the table (indexed by kiln_op). */
void cg_register_elementwise(kiln_emit_fn *table);
void cg_register_nn(kiln_emit_fn *table);
void cg_register_linalg(kiln_emit_fn *table);
void cg_register_reduce(kiln_emit_fn *table);
void cg_register_tensor(kiln_emit_fn *table);
void cg_register_resize(kiln_emit_fn *table);
void cg_register_kiln(kiln_emit_fn *table);
void cg_register_grad_nn(kiln_emit_fn *table);
void cg_register_conv_grad(kiln_emit_fn *table);
void cg_register_grad_pool(kiln_emit_fn *table);
void cg_register_train(kiln_emit_fn *table);
void cg_register_fused(kiln_emit_fn *table);
void cg_register_optim(kiln_emit_fn *table);
void cg_register_layout(kiln_emit_fn *table);
/* Fills `table` (KILN_OP_COUNT entries) with every family's emitters; NULL = none. */
void cg_emitters(kiln_emit_fn *table);

#endif
