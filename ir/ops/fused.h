/* fused.h — the kiln-domain fused ops made by the fusion passes (FusedConv, UpsampleConv,
 * GapGemm, FusedElementwise): their attributes decoded once, shared by shape inference
 * (ir/ops/fused.c), the reference kernels (runtime/ref/fused.c), the emitters
 * (codegen/emit_fused.c) and the passes (passes/fuse_*.c).  docs/ops-kiln.md documents them. */
#ifndef KILN_OPS_FUSED_H
#define KILN_OPS_FUSED_H

#include "ir/graph.h"

/* ---- the activation epilogue of FusedConv and UpsampleConv ---- */
typedef enum kiln_fused_act {
  KILN_FACT_NONE = 0,
  KILN_FACT_RELU,
  KILN_FACT_CLIP,       /* act_alpha = min, act_beta = max */
  KILN_FACT_LEAKY_RELU, /* act_alpha = alpha */
  KILN_FACT_SIGMOID,
} kiln_fused_act;

typedef struct kiln_fused_act_params {
  kiln_fused_act act;
  double alpha, beta;
} kiln_fused_act_params;

/* The activation names as the `activation` attribute spells them, indexed by kiln_fused_act. */
extern const char *const kiln_fused_act_names[5];
/* Reads `activation`, `act_alpha` and `act_beta`; errors name an unknown activation or a
 * clip without both bounds. */
kiln_code kiln_fused_act_get(const kiln_node *n, kiln_fused_act_params *p, kiln_err *e);

/* Attribute schema entries (ir/ops/common.h's A_* shorthands) of the ops built on Conv with an
 * activation epilogue: FusedConv, UpsampleConv, BlockedConv. */
#define CONV_ATTRS                                                                                 \
  A_STR("auto_pad", "NOTSET"), A_INTS("dilations"), A_INT("group", 1), A_INTS("kernel_shape"),     \
      A_INTS("pads"), A_INTS("strides")
#define ACT_ATTRS A_STR("activation", "none"), A_FLOAT("act_alpha", 0.01), A_FLOAT("act_beta", 0.0)

/* The residual input Z (input 3) of FusedConv and BlockedConv: present exactly when
 * has_residual is 1, float32 of the output's shape ys. */
kiln_code kiln_residual_check(const kiln_graph *g, const kiln_node *n, const kiln_shape *ys,
                              kiln_err *e);

/* ---- UpsampleConv: the resize in front of the convolution ---- */
typedef struct kiln_upconv_params {
  int nsp;                  /* spatial dims (1..3) */
  bool linear;              /* mode linear (else nearest) */
  const char *coord;        /* coordinate_transformation_mode, as written */
  const char *nearest;      /* nearest_mode, as written */
  int64_t scale[3];         /* integer scale per spatial dim (>= 1) */
} kiln_upconv_params;

/* Decodes mode, coordinate_transformation_mode, nearest_mode and scales against input X of
 * rank `rank`; errors name the attribute. */
kiln_code kiln_upconv_params_get(const kiln_node *n, int rank, kiln_upconv_params *p,
                                 kiln_err *e);

/* ---- FusedElementwise: a chain of elementwise steps ----
 * Step k applies ONNX op ops[k] (at ai.onnx opset `onnx_opset`) to arity[k] operands taken in
 * order from `operands`: operand j < n_inputs is input j of the fused node, j >= n_inputs the
 * result of step j - n_inputs (an earlier step), -1 an omitted optional input (Clip's
 * bounds).  alpha/beta/gamma hold each step's float attributes (see kiln_ew_step_attrs).  The
 * last step's result is the output. */
#define KILN_EW_MAX_STEPS 32
#define KILN_EW_MAX_ARITY 8
#define KILN_EW_MAX_INPUTS 64

typedef struct kiln_ew_step {
  kiln_op op;
  int arity;
  int operand[KILN_EW_MAX_ARITY];
  double alpha, beta, gamma;
} kiln_ew_step;

typedef struct kiln_ew_chain {
  int n_steps, n_inputs, opset;
  kiln_ew_step step[KILN_EW_MAX_STEPS];
} kiln_ew_chain;

/* Whether `op` may be a step (float elementwise ops whose result has the broadcast shape of
 * their operands), and its operand count range. */
bool kiln_ew_step_op(kiln_op op, int *min_arity, int *max_arity);
/* Decodes and checks the attributes of a FusedElementwise node with n_inputs inputs. */
kiln_code kiln_ew_chain_get(const kiln_node *n, int n_inputs, kiln_ew_chain *c, kiln_err *e);

/* ---- synthetic nodes: a step or a sub-operation seen as the plain ONNX node it stands for,
 * so that the reference kernels and scalar bodies of the unfused ops can run it.  Only the
 * fields those read are set (op, def, opset, n_in, attributes); in/out ids are -1. */
typedef struct kiln_synth_node {
  kiln_node n;
  kiln_attr attrs[6];
  int ids[KILN_EW_MAX_ARITY];
} kiln_synth_node;

void kiln_synth_init(kiln_synth_node *s, kiln_op op, int opset, int n_in);
void kiln_synth_float(kiln_synth_node *s, const char *name, double v);
void kiln_synth_str(kiln_synth_node *s, const char *name, const char *v);
/* The step as a node: its op, operand count, opset and attributes (alpha, beta, gamma mapped
 * to the op's attribute names; Clip before opset 11: min = alpha, max = beta). */
void kiln_ew_step_node(const kiln_ew_chain *c, int k, kiln_synth_node *s);
/* The activation as a node (Clip as opset 6 with min/max attributes). */
void kiln_fused_act_node(const kiln_fused_act_params *a, kiln_synth_node *s);

#endif
