/* train_graph.h — builds the one training graph kiln compiles: the forward pass
 * (BatchNorm in training mode), the study's losses, the backward pass derived by
 * autodiff, and the optimizer update of every parameter.
 *
 *   inputs fed each step : image [B,3,H,W], labels [B] int64, and when the model
 *                          has a `saliency` output and a localization loss is
 *                          chosen: mask [B,1,H,W] in {0,1}, mask_present [B]
 *                          in {0,1}; and optim.hyper (optimizer scalars).
 *   state (persistent)   : every parameter, BatchNorm running statistics, the
 *                          optimizer's moments; each paired with its updated value.
 *   outputs              : loss, loss_cls, loss_loc (scalars), and the model's
 *                          logits (for training accuracy).
 *
 * Losses (the study's, as its PyTorch code computed them):
 *   L_cls = softmax cross-entropy of logits vs labels, mean over the batch;
 *   L_loc, per image the mean over pixels of
 *     bce: BCE-with-logits(s, m) = softplus(s) - s*m
 *     l1 : |sigmoid(s) - m|        l2: (sigmoid(s) - m)^2
 *   times mask_present, summed and divided by max(1, number of images with a
 *   mask) — images without a mask contribute only the class loss;
 *   loss = L_cls + lambda * L_loc. */
#ifndef KILN_TRAIN_GRAPH_H
#define KILN_TRAIN_GRAPH_H

#include "ir/graph.h"
#include "passes/pass.h"

typedef enum kiln_loc_loss { KILN_LOC_NONE = 0, KILN_LOC_BCE, KILN_LOC_L1, KILN_LOC_L2 } kiln_loc_loss;
typedef enum kiln_optim { KILN_OPTIM_ADAM = 0, KILN_OPTIM_ADAMW, KILN_OPTIM_SGD } kiln_optim;

typedef struct kiln_train_config {
  kiln_loc_loss loc_loss;
  double lambda;        /* weight of the localization loss (the study: 1) */
  kiln_optim optim;
  double lr;            /* 1e-3 */
  double beta1, beta2, eps; /* Adam: 0.9, 0.999, 1e-8 */
  double weight_decay;
  double momentum;      /* SGD */
  int nesterov;
  const char *logits_name;   /* default "logits" */
  const char *saliency_name; /* default "saliency" */
} kiln_train_config;

kiln_train_config kiln_train_config_default(void);

typedef struct kiln_state_entry {
  int in;             /* graph input value holding the state */
  int out;            /* value holding its update */
  kiln_tensor *init;  /* initial contents (owned) */
  bool is_param;      /* a trainable parameter (exported), else running stat / moment */
  char *param_name;   /* for moments: the parameter it belongs to */
  char *kind;         /* "param", "bn_stat", "adam_m", "adam_v", "sgd_buf" */
} kiln_state_entry;

typedef struct kiln_train_graph {
  kiln_graph *g;      /* the training graph (typed) */
  kiln_state_entry *state;
  int n_state;
  int in_image, in_labels, in_mask, in_present, in_hyper; /* value ids (-1 if absent) */
  int out_loss, out_cls, out_loc, out_logits;             /* value ids (-1 if absent) */
  kiln_train_config cfg;
} kiln_train_graph;

/* Builds the training graph from an inference model (typed, from kiln_onnx_load
 * and ir_infer).  `fwd` is consumed. */
kiln_code kiln_train_graph_build(kiln_graph *fwd, const kiln_train_config *cfg, kiln_train_graph **out,
                                 kiln_err *e);
void kiln_train_graph_free(kiln_train_graph *tg);

/* Runs a pass pipeline (NULL or "": the training default; `kiln train --passes` passes
 * another) over the training graph, keeping the state updates alive and
 * every recorded value id valid. */
kiln_code kiln_train_graph_optimize(kiln_train_graph *tg, const char *pipeline, kiln_err *e);
/* The same with the caller's pass context (printing, verification; its mode is training and
 * `differentiated` set) and each pass's statistics in *res (may be NULL); no environment. */
kiln_code kiln_train_graph_optimize_ex(kiln_train_graph *tg, const char *pipeline,
                                       const kiln_pass_ctx *opts, kiln_pipeline_result *res,
                                       kiln_err *e);

/* Optimizer scalars for step t (1-based), written into hyper[0..2]. */
void kiln_optim_hyper(const kiln_train_config *cfg, int64_t t, float *hyper);

/* Turns constant float values (e.g. parameters) into fed graph inputs so nothing
 * folds them; their initial data moves into `init` (caller frees) when non-NULL. */
kiln_code kiln_unfreeze(kiln_graph *g, int v, kiln_tensor **init, kiln_err *e);

#endif
