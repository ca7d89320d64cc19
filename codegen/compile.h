/* compile.h — graph -> compiled program: every node's emitter generates its
 * kernels, the memory planner lays out the arena, the JIT loads the code. */
#ifndef KILN_CODEGEN_COMPILE_H
#define KILN_CODEGEN_COMPILE_H

#include "codegen/jit.h"
#include "runtime/program.h"

typedef struct kiln_compile_opts {
  int threads;             /* 0: kiln_default_threads() */
  const char *cache_dir;   /* see kiln_jit_opts */
  bool allow_fallback;     /* ops without an emitter run their reference kernel */
  bool no_inplace;         /* disable in-place buffer reuse */
  /* State pairs (see runtime/program.h): graph input state_in[i] persists across
   * runs and takes the value of state_out[i] after each run.  Its storage starts
   * zeroed; the caller writes initial values with kiln_program_state_data(). */
  const int *state_in, *state_out;
  int n_state;
  /* Ahead of time: kernels are collected into one module (p->aot_module) instead
   * of being loaded into the JIT; steps name their kernel; no fallbacks allowed. */
  bool aot;
  /* Convolution blocks measured by `kiln tune` (codegen/tune.h).  NULL: the table of this CPU
   * in the cache directory, when there is one, unless no_tune or $KILN_TUNE=0; its problems
   * join the JIT's warnings.  Given: used as it is (kiln tune's forced blocks and records). */
  struct kiln_tune_table *tune;
  bool no_tune;
  /* Tests: the micro-kernel of gemm_gen's convolutions (gemm_gen.h: 0 the plan's choice,
   * CG_GEMM_PIXELS, CG_GEMM_CHANNELS); results are bitwise the same with each. */
  int gemm_kernel;
  /* Micro-batching (passes/batch_split.h): when > 0 and the graph keeps its samples apart
   * (inference, every input and output batched along axis 0), the program is compiled for
   * slices of this many samples and runs over the batch slice by slice (p->micro times).
   * 0: the whole batch at once.  Ignored for programs with state. */
  int64_t micro_batch;
  /* Free the graph's constant data that no compiled step reads (weights repacked into the
   * kernels' own constant buffers), so the program does not hold them twice.  For callers
   * that do not read p->g's constants after compiling (the C API's sessions). */
  bool release_constants;
} kiln_compile_opts;

/* Compiles an inferred graph (takes ownership of g, also on failure). */
kiln_code kiln_compile(kiln_graph *g, const kiln_compile_opts *opts, kiln_program **out, kiln_err *e);
/* Ops of the graph that have no emitter (fallbacks), as a count per op. */
int kiln_list_fallbacks(const kiln_graph *g, int *count_per_op);
const kiln_jit_stats *kiln_program_jit_stats(const kiln_program *p);

#endif
