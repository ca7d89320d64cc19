/* pass.h — the pass manager: graph-to-graph transformations registered in one
 * list (passes/passes.def), run as a pipeline given as text.
 *
 * A pass is one file, passes/<name>.c, defining
 *     kiln_code pass_<sym>(kiln_graph *g, kiln_pass_ctx *cx, kiln_pass_stats *st, kiln_err *e);
 * It rewrites the graph in place (marking removed nodes `dead`, adding nodes and
 * values with the ir_add_* builders), counts what it changed in st->changes
 * (and may describe it in st->detail), and returns an error only for a real
 * failure.  After each pass the manager drops dead nodes, re-sorts, re-infers
 * shapes (new nodes are typed) and, in debug builds or with `verify`, runs the
 * verifier, so passes may leave new values untyped.  Passes never see dead nodes. */
#ifndef KILN_PASS_H
#define KILN_PASS_H

#include <stdio.h>

#include "ir/graph.h"

typedef enum kiln_pass_mode {
  KILN_MODE_INFERENCE = 0, /* BatchNorm uses running statistics, Dropout is identity */
  KILN_MODE_TRAINING = 1,  /* keep everything training needs: no BN folding */
} kiln_pass_mode;

typedef struct kiln_pass_stats {
  int64_t changes;   /* rewrites made (nodes fused, removed, folded ...) */
  double seconds;
  char detail[256];  /* e.g. "5 upsample blocks fused" */
} kiln_pass_stats;

typedef struct kiln_pass_ctx {
  kiln_pass_mode mode;
  const kiln_evaluator *ev; /* constant evaluation (the reference kernels) */
  bool verify;              /* run the verifier after every pass */
  const char *print_after;  /* pass name or "all": print the IR after it */
  /* training mode: the graph already holds its backward pass (a training step from
   * kiln_train_graph_build), so fusions into ops without gradient rules are safe */
  bool differentiated;
  FILE *print_to;
  /* the target's float vector width (8 with AVX2, 16 with AVX-512): the channel block of the
   * layout pass; 0 = 8 */
  int vector_floats;
  /* the layout-blocked pass: a kiln_layout_choice (include/kiln.h): 0 = auto (blocked with
   * 16-float vectors), 1 = plain (the pass does nothing), 2 = blocked */
  int layout;
} kiln_pass_ctx;

typedef kiln_code (*kiln_pass_fn)(kiln_graph *g, kiln_pass_ctx *cx, kiln_pass_stats *st, kiln_err *e);

typedef struct kiln_pass_info {
  const char *name;    /* the name used in pipelines: "fold", "fuse-upsample-conv" */
  kiln_pass_fn fn;
  const char *summary;
} kiln_pass_info;

#define PASS(sym, name, summary) \
  kiln_code pass_##sym(kiln_graph *g, kiln_pass_ctx *cx, kiln_pass_stats *st, kiln_err *e);
#include "passes/passes.def"
#undef PASS

const kiln_pass_info *kiln_pass_list(int *count);
const kiln_pass_info *kiln_pass_find(const char *name);
/* The default pipeline of a mode, as text. */
const char *kiln_default_pipeline(kiln_pass_mode mode);

typedef struct kiln_pipeline_result {
  int n;
  const kiln_pass_info *pass[64];
  kiln_pass_stats stats[64];
} kiln_pipeline_result;

/* Runs a comma-separated pipeline ("fold,dce,fuse-upsample-conv"); NULL or ""
 * runs the mode's default.  An unknown name is an error listing the known ones. */
kiln_code kiln_run_pipeline(kiln_graph *g, const char *pipeline, kiln_pass_ctx *cx,
                            kiln_pipeline_result *res, kiln_err *e);

/* Helpers for passes. */
/* The only node reading value v (-1 if none or several), and whether v is a graph output. */
int pass_single_user(const kiln_graph *g, int v);
bool pass_is_output(const kiln_graph *g, int v);
/* Replaces every use of value `from` (node inputs and graph outputs) by `to`. */
void pass_replace_uses(kiln_graph *g, int from, int to);
/* Producer node of v if it is a live node of op `op`, else NULL. */
kiln_node *pass_producer_of(const kiln_graph *g, int v, kiln_op op);

#endif
