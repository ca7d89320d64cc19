/* jit.h — the host target, the ORC LLJIT that loads compiled kernels, and the
 * on-disk kernel cache.
 *
 * A kernel is an LLVM module holding one function with the kernel ABI
 *     void kiln_k_<hash>(void **args, int64_t lo, int64_t hi)
 * where args[] are the base pointers of the tensors the kernel reads and writes
 * and [lo, hi) is the range of tiles this call computes.  Shapes, strides and
 * attributes are constants inside the IR.  The module is optimized with the new
 * pass manager (default<O3>) for the host CPU, compiled to an object file by the
 * TargetMachine, cached on disk under a key of (IR hash, CPU, features, LLVM and
 * kiln versions), and added to the LLJIT.  Identical kernels (same shapes) hash
 * alike and are compiled and loaded once.
 *
 * JIT'd code may call only the functions on the allow-list (jit.c): the JIT's
 * symbol table holds nothing else, so a kernel cannot reach arbitrary process
 * symbols. */
#ifndef KILN_CODEGEN_JIT_H
#define KILN_CODEGEN_JIT_H

#include <llvm-c/Core.h>
#include <llvm-c/TargetMachine.h>

#include "ir/base.h"

typedef void (*kiln_kernel_fn)(void **args, int64_t lo, int64_t hi);

typedef struct kiln_jit_stats {
  int kernels_compiled;  /* optimized and compiled by LLVM in this session */
  int kernels_cached;    /* loaded from the disk cache */
  int kernels_reused;    /* identical to a kernel already loaded */
  int cache_rebuilt;     /* corrupt or stale entries rebuilt */
  double compile_seconds;
  char warnings[4][KILN_ERR_MSG]; /* cache problems, reported by the caller */
  int n_warnings;
} kiln_jit_stats;

typedef struct kiln_jit kiln_jit;

typedef struct kiln_jit_opts {
  const char *cache_dir;  /* NULL: $KILN_CACHE_DIR or ~/.cache/kiln; "" disables the cache */
  int opt_level;          /* 0..3, default 3 */
  const char *cpu;        /* NULL: the host CPU */
  const char *features;   /* NULL: the host's features */
} kiln_jit_opts;

kiln_code kiln_jit_create(const kiln_jit_opts *opts, kiln_jit **out, kiln_err *e);
void kiln_jit_free(kiln_jit *j);

LLVMContextRef kiln_jit_context(kiln_jit *j);
/* A new empty module configured for the target (triple, data layout). */
LLVMModuleRef kiln_jit_new_module(kiln_jit *j, const char *name);

/* Names the module's one kernel function after the hash of its IR, optimizes,
 * compiles (or loads from cache), loads it into the JIT, and returns its address.
 * Takes ownership of `mod`. `fn` is the kernel function inside `mod`. */
kiln_code kiln_jit_add_kernel(kiln_jit *j, LLVMModuleRef mod, LLVMValueRef fn, kiln_kernel_fn *out,
                              kiln_err *e);

/* Renames `fn` to kiln_k_<hash of the module's IR> (40 bytes with the NUL). */
void kiln_jit_name_kernel(LLVMModuleRef mod, LLVMValueRef fn, char *name);

/* The optimized object of a module, for AOT: writes the module (already holding
 * every kernel) to an object file. */
kiln_code kiln_jit_emit_object(kiln_jit *j, LLVMModuleRef mod, const char *path, kiln_err *e);
kiln_code kiln_jit_optimize(kiln_jit *j, LLVMModuleRef mod, kiln_err *e);

const kiln_jit_stats *kiln_jit_get_stats(const kiln_jit *j);
const char *kiln_jit_cpu(const kiln_jit *j);
const char *kiln_jit_features(const kiln_jit *j);
/* True when the target has AVX-512F (kernels choose 16-wide vectors). */
bool kiln_jit_has_avx512(const kiln_jit *j);
/* The host's float vector width as the kernels use it (16 with AVX-512F, else 8), without a
 * JIT: what the layout pass blocks channels by (kiln_pass_ctx.vector_floats). */
int kiln_host_vector_floats(void);

/* The allow-list: name -> address of every function JIT'd code may call. */
typedef struct kiln_jit_symbol {
  const char *name;
  void *addr;
} kiln_jit_symbol;
const kiln_jit_symbol *kiln_jit_allowlist(int *count);

#endif
