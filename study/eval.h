/* eval.h — evaluating a classifier on a dataset: predictions, the confusion matrix,
 * the study's per-class metrics and, for models with a `saliency` output (the SPN),
 * IoU and Dice of the predicted mask (sigmoid > 0.5) against ground-truth masks.
 *
 *   kiln_eval_opts o = kiln_eval_opts_default();
 *   kiln_eval_result r;
 *   if (kiln_evaluate("ours.onnx", test, &o, &r, &err)) ...;
 *   kiln_metrics_format(&r.metrics, names, false, buf, sizeof buf);
 *   kiln_eval_result_free(&r);
 *
 * The model runs through the public API (a kiln.h session, JIT by default) in
 * batches of the model's batch size (a symbolic batch is bound to o.batch); the
 * last partial batch is padded with zero images whose outputs are ignored.  The
 * prediction is the argmax of `logits` (the first output when none is named so;
 * ties go to the lower class).  Dataset images must have the model's input shape. */
#ifndef KILN_STUDY_EVAL_H
#define KILN_STUDY_EVAL_H

#include "kiln.h"
#include "study/metrics.h"
#include "train/dataset.h"

typedef struct kiln_eval_opts {
  kiln_backend backend;   /* default JIT */
  int threads;            /* 0: all cores */
  const char *cache_dir;  /* NULL: the default kernel cache */
  bool allow_fallback;
  const char *passes;     /* graph passes before compiling (kiln_options.passes; NULL: none) */
  int64_t batch;          /* size bound to a symbolic batch dimension (default 8) */
  float threshold;        /* SPN: sigmoid(saliency) > threshold is the predicted mask (0.5) */
  int64_t limit;          /* evaluate the first `limit` examples only (0: all) */
  /* called after each batch (may be NULL) */
  void (*progress)(void *ctx, int64_t done, int64_t total);
  void *progress_ctx;
} kiln_eval_opts;

kiln_eval_opts kiln_eval_opts_default(void);

typedef struct kiln_eval_result {
  int64_t n, k;            /* examples evaluated, classes (the model's logits) */
  int64_t *label, *pred;   /* [n] */
  float *logits;           /* [n*k] */
  kiln_confusion cm;
  kiln_metrics metrics;
  /* SPN, for models with a `saliency` output, over examples with a mask */
  bool has_saliency;
  int64_t n_masked;
  double mean_iou, mean_dice; /* means of the per-image values (NaN when no example has a mask) */
  kiln_seg_counts seg;        /* pixel counts pooled over those examples */
  double *iou, *dice;         /* [n] per example, NaN without a mask (NULL without saliency) */
  double seconds;             /* wall time of the whole run, loading included */
} kiln_eval_result;

void kiln_eval_result_free(kiln_eval_result *r);

typedef struct kiln_eval kiln_eval;

/* Loads and compiles a model (ONNX file or kiln checkpoint). */
kiln_code kiln_eval_create(const char *model_path, const kiln_eval_opts *o, kiln_eval **out, kiln_err *e);
void kiln_eval_free(kiln_eval *ev);
int64_t kiln_eval_batch(const kiln_eval *ev);
int64_t kiln_eval_classes(const kiln_eval *ev);
/* The model's input image shape [C,H,W]. */
void kiln_eval_image_shape(const kiln_eval *ev, int64_t *c, int64_t *h, int64_t *w);
bool kiln_eval_has_saliency(const kiln_eval *ev);

/* Evaluates every example of `d` (or the first o.limit).  The dataset's classes
 * must equal the model's logits. */
kiln_code kiln_eval_run(kiln_eval *ev, kiln_dataset *d, kiln_eval_result *r, kiln_err *e);

/* create + run + free. */
kiln_code kiln_evaluate(const char *model_path, kiln_dataset *d, const kiln_eval_opts *o, kiln_eval_result *r,
                        kiln_err *e);

/* Loads an ONNX model (or checkpoint), binds a symbolic batch dimension of its
 * first input to `batch` and infers every shape.  For kiln's own tools. */
struct kiln_graph;
kiln_code kiln_load_model_bound(const char *path, int64_t batch, struct kiln_graph **out, kiln_err *e);

/* Index of the largest of x[0..k) (the first on ties; NaN never wins). */
int64_t kiln_argmax(const float *x, int64_t k);

/* Reads examples [first, first+count) of d into image [count,C,H,W], labels and
 * (when masks != NULL) masks [count,H,W] and has_mask, on `threads` threads
 * (get() is thread-safe).  The first error (lowest index) is reported. */
kiln_code kiln_load_examples(kiln_dataset *d, int64_t first, int64_t count, float *images, int64_t *labels,
                             float *masks, bool *has_mask, int threads, kiln_err *e);

#endif
