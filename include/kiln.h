/* kiln.h — the public C API of kiln, for programs that embed it.
 *
 *   kiln_err err = {0};
 *   kiln_model *m;
 *   if (kiln_model_load("model.onnx", NULL, &m, &err)) { puts(err.msg); return 1; }
 *   kiln_session *s;
 *   kiln_options opt = kiln_options_default();           // JIT, all cores
 *   if (kiln_session_create(m, &opt, &s, &err)) { ... }  // compiles; m may be freed after
 *   kiln_tensor *in = ..., *out[1];
 *   kiln_session_run(s, &in, out, &err);                 // out[0] is yours to kiln_tensor_free
 *   kiln_session_free(s); kiln_model_free(m);
 *
 * Conventions.  Every function that can fail returns a kiln_code (KILN_OK = 0)
 * and writes one message naming the file, node or tensor into the caller's
 * kiln_err; nothing prints and nothing exits.  Objects returned through `**out`
 * parameters belong to the caller, who frees them with the matching _free
 * function; pointers returned by getters stay owned by the object they came from
 * and live as long as it does.  Tensors passed as inputs are only read and stay
 * the caller's.  A session may be run repeatedly but not from two threads at
 * once (it owns one arena); create one session per thread instead. */
#ifndef KILN_H
#define KILN_H

#include "ir/base.h"
#include "ir/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kiln_model kiln_model;
typedef struct kiln_session kiln_session;

/* ---- models ---- */
typedef struct kiln_load_options {
  /* symbolic input dimensions to bind, as "name=size" strings */
  const char *const *binds;
  int n_binds;
} kiln_load_options;

/* Loads an ONNX file and infers every shape (static after binding). */
kiln_code kiln_model_load(const char *path, const kiln_load_options *opts, kiln_model **out,
                          kiln_err *e);
void kiln_model_free(kiln_model *m);

int kiln_model_num_inputs(const kiln_model *m);
int kiln_model_num_outputs(const kiln_model *m);
/* Name, dtype and shape of input/output i (owned by the model). */
const char *kiln_model_input_name(const kiln_model *m, int i);
const char *kiln_model_output_name(const kiln_model *m, int i);
kiln_dtype kiln_model_input_dtype(const kiln_model *m, int i);
kiln_dtype kiln_model_output_dtype(const kiln_model *m, int i);
const kiln_shape *kiln_model_input_shape(const kiln_model *m, int i);
const kiln_shape *kiln_model_output_shape(const kiln_model *m, int i);
/* Index of the named input, or -1. */
int kiln_model_find_input(const kiln_model *m, const char *name);
/* Total MACs of one run and the number of trainable parameters. */
int64_t kiln_model_macs(const kiln_model *m);
int64_t kiln_model_params(const kiln_model *m);

/* ---- compiling and running ---- */
typedef enum kiln_backend {
  KILN_BACKEND_JIT = 0, /* LLVM-compiled kernels */
  KILN_BACKEND_REF = 1, /* the reference interpreter (the oracle; slow) */
} kiln_backend;

/* Activation layout of the convolutions (the layout-blocked pass of the default inference
 * pipeline, docs/passes.md). */
typedef enum kiln_layout_choice {
  KILN_LAYOUT_AUTO = 0,    /* blocked (NCHW16c) where the target has 16-float vectors (AVX-512),
                            * where it measured faster; plain with 8-float vectors (AVX2), where
                            * it measured level (bench/RESULTS.md) */
  KILN_LAYOUT_PLAIN = 1,   /* NCHW everywhere */
  KILN_LAYOUT_BLOCKED = 2, /* channels blocked by the vector width wherever a convolution can */
} kiln_layout_choice;

typedef struct kiln_options {
  kiln_backend backend;
  int threads;           /* 0: $KILN_NUM_THREADS or all cores */
  const char *cache_dir; /* NULL: $KILN_CACHE_DIR or ~/.cache/kiln; "": no cache */
  int allow_fallback;    /* JIT: run ops without a compiled kernel with their reference kernel */
  int no_inplace;        /* disable in-place buffer reuse in the memory plan */
  /* Graph passes run (inference mode) before compiling: NULL or "": none, the model as
   * loaded; "default": the default inference pipeline (folding and fusion, docs/passes.md);
   * else a comma-separated pipeline ("fold,dce,fold-bn"). */
  const char *passes;
  /* Micro-batching (JIT): when the graph keeps the samples of its batch apart (inference;
   * every input and output batched along axis 0; docs/architecture.md), compile it for
   * slices of this many samples and run the batch slice by slice: the same outputs, with the
   * working set (and the arena) of the slice.  kiln_options_default(): 1; 0: the whole batch
   * in one pass. */
  int micro_batch;
  kiln_layout_choice layout; /* for the layout-blocked pass, when `passes` runs it */
} kiln_options;
/* The default inference pipeline without its fusion passes (folding, BatchNorm folding). */
#define KILN_PIPELINE_NO_FUSE "eliminate-identity,fold,dce,fold-bn,dce"

kiln_options kiln_options_default(void);

/* Compiles the model (the session keeps its own copy; the model may be freed). */
kiln_code kiln_session_create(const kiln_model *m, const kiln_options *opts, kiln_session **out,
                              kiln_err *e);
void kiln_session_free(kiln_session *s);
/* inputs[i] in model input order; outputs[i] receive new tensors (caller frees). */
kiln_code kiln_session_run(kiln_session *s, kiln_tensor *const *inputs, kiln_tensor **outputs,
                           kiln_err *e);

typedef struct kiln_session_stats {
  int64_t planned_peak_bytes;  /* arena size from the static memory plan */
  int64_t unplanned_bytes;     /* sum of all intermediate tensors */
  int64_t steps;               /* kernel calls per run */
  int fallback_steps;          /* steps running a reference kernel */
  int64_t passes;              /* micro-batching: the steps run this many times per call, each
                                * on a slice of the batch (1: the whole batch at once) */
  const char *micro_why;       /* micro-batching was asked for but the graph runs whole: why
                                * (the node that mixes samples, ...); "" otherwise */
  int kernels_compiled, kernels_cached, kernels_reused;
  double compile_seconds;      /* LLVM time in this session's compile */
  int threads;
  const char *cpu;             /* host CPU name the code was built for */
  int n_warnings;
  const char *warnings[4];     /* kernel-cache problems, etc. */
} kiln_session_stats;
void kiln_session_get_stats(const kiln_session *s, kiln_session_stats *st);

/* Per-kernel profile of the last kiln_session_profile() run. */
typedef struct kiln_step_profile {
  const char *label;  /* "Conv layer1.0.conv1" */
  const char *op;
  double seconds;
  int64_t macs;       /* of the whole node: a node compiled to several kernels (an input
                       * copy, a packing pass, the convolution) has them on each of its steps */
  int64_t node;       /* the graph node it computes (-1: none); a node's steps are adjacent */
  const char *kernel; /* what the step's kernel does (its emitter's label, e.g. "fused_conv",
                       * "fused_conv_prep": the padded input copy); "" for a reference kernel */
} kiln_step_profile;
/* Runs once with timing of every step; *steps points into the session. */
kiln_code kiln_session_profile(kiln_session *s, kiln_tensor *const *inputs, kiln_tensor **outputs,
                               const kiln_step_profile **steps, int64_t *n_steps, kiln_err *e);

/* ---- ahead-of-time libraries ---- */
typedef struct kiln_library_options {
  const char *so_path;      /* shared library to write (required) */
  const char *header_path;  /* C header describing it (NULL: none) */
  const char *prefix;       /* entry points <prefix>_create/_run/_destroy (default "model") */
  const char *weights_path; /* NULL: weights embedded in the library; else a side file */
  const char *runtime_lib;  /* libkiln_aot_rt.a (NULL: the one built with kiln, or $KILN_AOT_RT) */
  int micro_batch;          /* samples per pass, as kiln_options.micro_batch (0: the whole batch) */
} kiln_library_options;
/* Compiles every kernel of the model into one shared library with a plain C API;
 * the library needs no LLVM (and no kiln) at run time. */
kiln_code kiln_compile_library(const kiln_model *m, const kiln_library_options *o, kiln_err *e);

/* ---- tensors ---- (see ir/tensor.h for kiln_tensor) */
kiln_code kiln_tensor_read(const char *path, kiln_tensor **out, kiln_err *e); /* .pb or .npy */
kiln_code kiln_tensor_write_pb(const kiln_tensor *t, const char *name, const char *path, kiln_err *e);
kiln_code kiln_tensor_write_npy(const kiln_tensor *t, const char *path, kiln_err *e);

const char *kiln_version(void);

#ifdef __cplusplus
}
#endif
#endif
