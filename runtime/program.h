/* program.h — a compiled program: an ordered list of kernel calls over buffers
 * placed in one arena by the static memory planner.  Free of LLVM, so the same
 * runner serves JIT'd programs and AOT shared libraries.
 *
 * Buffers: every graph value has a buffer id equal to its value id; extra
 * buffers (repacked constants, scratch) follow.  A buffer lives either in the
 * arena (offset), in constant memory owned by the program, or in caller memory
 * (graph inputs are read in place, never written). */
#ifndef KILN_PROGRAM_H
#define KILN_PROGRAM_H

#include "ir/graph.h"
#include "runtime/ref.h"

typedef void (*kiln_kernel_fn)(void **args, int64_t lo, int64_t hi);

typedef enum kiln_buf_kind {
  KILN_BUF_NONE = 0,
  KILN_BUF_ARENA,  /* offset into the arena */
  KILN_BUF_CONST,  /* program-owned constant data */
  KILN_BUF_INPUT,  /* a graph input: the caller's memory */
  KILN_BUF_STATE,  /* persistent program-owned memory: a state input (parameters,
                    * running statistics, optimizer moments) updated every run */
} kiln_buf_kind;

typedef struct kiln_buf {
  kiln_buf_kind kind;
  int64_t bytes;
  int64_t offset;  /* ARENA */
  void *data;      /* CONST (owned when owned_data), else resolved at run time */
  bool owned_data;
  int64_t first, last; /* step indices of first write and last read (planner) */
  int alias_of;    /* in-place: shares the storage of this buffer, or -1 */
} kiln_buf;

typedef struct kiln_step {
  kiln_kernel_fn fn;       /* a compiled kernel, or NULL for a reference-kernel step */
  const kiln_node *node;   /* the node this step computes (labels, reference fallback) */
  int n_args;
  int *bufs;               /* buffer id of each argument */
  int64_t n_tiles;
  int64_t macs;            /* for bench: MACs of the node (0 if not compute) */
  char label[96];
  char kernel[48];         /* the kernel's symbol (kiln_k_<hash>); for AOT */
  char what[48];           /* what the kernel does, its emitter's label ("fused_conv_prep",
                            * "gemm_conv_pack", ...); empty for reference-kernel steps */
  /* Data-dependent errors a kernel can detect but not return (an index out of
   * range): the kernel sets the program's status word and the runner reports
   * this message with the step's node. NULL when the step never flags. */
  const char *error;
} kiln_step;

typedef struct kiln_program {
  kiln_graph *g;           /* the graph the program was compiled from (owned) */
  kiln_step *steps;
  int64_t n_steps, cap_steps;
  kiln_buf *bufs;
  int64_t n_bufs, cap_bufs;
  uint8_t *arena;
  int64_t arena_bytes;     /* planned peak */
  int64_t unplanned_bytes; /* sum of all planned buffers, for --stats */
  int threads;
  int n_fallback;          /* steps that run a reference kernel */
  void *jit;               /* the JIT that owns the kernels (codegen), freed with the program */
  void *aot_module;        /* AOT: the LLVM module collecting every kernel (LLVMModuleRef) */
  void (*aot_free)(void *);
  void (*jit_free)(void *);
  double *step_seconds;    /* per-step wall time summed over profiled runs, or NULL */
  double *step_cpu_seconds; /* per-step CPU time of the process (all threads), likewise: on a
                            * shared machine it moves less than wall time */
  /* State: graph inputs that persist across runs.  state_in[i] is a graph input
   * whose storage the program owns; after each run the value state_out[i] is
   * copied into it (the next run reads the updated state).  The caller passes
   * NULL for state inputs to kiln_program_run. */
  int *state_in, *state_out;
  int n_state;
  int status_buf;          /* buffer id of the int32 status word, or -1 */
  /* Micro-batching (kiln_compile_opts.micro_batch): g was rewritten to a slice of the batch;
   * the graph's inputs and outputs are micro times larger along axis 0 than g says, and a
   * run executes the steps micro times over consecutive slices.  1: no slicing. */
  int64_t micro;
  char micro_why[200];     /* micro-batching was asked for and not done: why (else empty) */
} kiln_program;

/* The shape the caller sees for graph input or output value_id: g's, with axis 0 scaled by
 * p->micro. */
kiln_shape kiln_program_io_shape(const kiln_program *p, int value_id);

/* Appends a step; bufs is copied. */
kiln_code kiln_program_add_step(kiln_program *p, kiln_kernel_fn fn, const kiln_node *node,
                                const int *bufs, int n_args, int64_t n_tiles, kiln_err *e);
/* Adds a buffer; returns its id through *id. */
kiln_code kiln_program_add_buf(kiln_program *p, kiln_buf_kind kind, int64_t bytes, int *id, kiln_err *e);
/* Runs the program on inputs (g->inputs order) into newly allocated outputs.
 * `profile` records per-step seconds in p->step_seconds. */
kiln_code kiln_program_run(kiln_program *p, kiln_tensor *const *inputs, kiln_tensor **outputs,
                           bool profile, kiln_err *e);
void kiln_program_free(kiln_program *p);
/* Index of the state whose input value is `value_id`, or -1. */
int kiln_program_state_index(const kiln_program *p, int value_id);
/* The storage of state i (bytes = the value's size); read or write it between runs. */
void *kiln_program_state_data(kiln_program *p, int i, int64_t *bytes);

/* Thread count from $KILN_NUM_THREADS, else all cores. */
int kiln_default_threads(void);
/* Runs fn over [0, n_tiles) on `threads` threads, split into contiguous chunks. */
void kiln_parallel_for(kiln_kernel_fn fn, void **args, int64_t n_tiles, int threads);

#endif
