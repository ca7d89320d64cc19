/* trainer.h — a compiled training step and its checkpoints.
 *
 * A trainer owns the inference model (to write checkpoints and exports), the
 * training graph and its compiled program.  kiln_trainer_step() runs one step:
 * forward, backward and the optimizer update, in one compiled program; the
 * parameters, BatchNorm statistics and optimizer moments live in the program's
 * persistent state between steps.
 *
 * Checkpoints are ONNX files: the inference model with the current weights as
 * initializers, plus the optimizer moments as extra initializers named
 * "optim.adam_m.<param>" etc. (no node reads them, so any ONNX tool still loads
 * the file as the model), and the training position in metadata_props
 * ("kiln.step", "kiln.epoch", ...).  They are written to a temporary name and
 * renamed, so a crash never leaves a half-written checkpoint. */
#ifndef KILN_TRAINER_H
#define KILN_TRAINER_H

#include "train/train_graph.h"

typedef struct kiln_trainer kiln_trainer;

typedef struct kiln_trainer_opts {
  kiln_train_config cfg;
  int threads;
  const char *cache_dir;
  bool allow_fallback; /* run ops without compiled kernels on reference kernels */
  const char *passes;  /* pipeline for the training graph (NULL: the training default) */
  bool profile;        /* time every kernel of each step after the first (kiln_trainer_profile) */
} kiln_trainer_opts;

/* Loads `model_path` (an inference ONNX model or a kiln checkpoint), binding its
 * symbolic batch dimension (if any) to `batch`, and compiles the training step. */
kiln_code kiln_trainer_create(const char *model_path, int64_t batch, const kiln_trainer_opts *o,
                              kiln_trainer **out, kiln_err *e);
void kiln_trainer_free(kiln_trainer *t);

typedef struct kiln_step_result {
  double loss, loss_cls, loss_loc;
  int correct; /* images whose argmax logit equals the label */
} kiln_step_result;

/* One step. mask/present may be NULL when the model trains without localization. */
kiln_code kiln_trainer_step(kiln_trainer *t, const kiln_tensor *image, const kiln_tensor *labels,
                            const kiln_tensor *mask, const kiln_tensor *present, kiln_step_result *r,
                            kiln_err *e);

int64_t kiln_trainer_batch(const kiln_trainer *t);
const kiln_shape *kiln_trainer_image_shape(const kiln_trainer *t);
/* Shape of the saliency mask the loss expects, or NULL without localization. */
const kiln_shape *kiln_trainer_mask_shape(const kiln_trainer *t);
int64_t kiln_trainer_num_classes(const kiln_trainer *t);
int64_t kiln_trainer_steps_done(const kiln_trainer *t);
/* Planned arena bytes of the training program and the sum of its state. */
void kiln_trainer_memory(const kiln_trainer *t, int64_t *arena, int64_t *state);

/* One node of the training program in a profile: the time of its kernels (a node may run
 * several, e.g. packing then the main kernel) summed over the profiled steps. */
typedef struct kiln_trainer_prof {
  char label[96];     /* "ConvGradWeight layer1.0.conv1.grad" */
  const char *op;
  char shape[96];     /* first input's shape -> first output's shape */
  double seconds;     /* wall time */
  double cpu_seconds; /* CPU time of all threads (OMP_WAIT_POLICY=PASSIVE keeps idle threads out) */
  int64_t macs;       /* of one step (0 when the op does no multiply-adds) */
  int kernels;        /* kernel calls per step */
  bool fallback;      /* runs on a reference kernel */
} kiln_trainer_prof;
/* The profile of the steps run so far (opts.profile), one row per node in program order
 * (*rows: kiln_free it); *steps: how many steps it sums (the first step is left out, its
 * first touches of the arena are not the kernels' cost). */
kiln_code kiln_trainer_profile(const kiln_trainer *t, kiln_trainer_prof **rows, int64_t *n_rows,
                               int64_t *steps, kiln_err *e);

/* Writes a checkpoint (atomically).  `meta` holds extra key/value pairs (NULL-terminated
 * pairs array, may be NULL). */
kiln_code kiln_trainer_save(kiln_trainer *t, const char *path, const char *const *meta, kiln_err *e);
/* Metadata of the checkpoint the trainer was created from (NULL if absent). */
const char *kiln_trainer_meta(const kiln_trainer *t, const char *key);

/* A standard inference ONNX from a checkpoint: optimizer state and training
 * metadata removed; with fold_bn, BatchNorm folded into the convolutions. */
kiln_code kiln_export_checkpoint(const char *ckpt, const char *out, bool fold_bn, kiln_err *e);

/* The current value of a parameter or BN statistic (by initializer name) as a new
 * tensor, for tests and parity checks. */
kiln_code kiln_trainer_get(kiln_trainer *t, const char *name, kiln_tensor **out, kiln_err *e);

#endif
