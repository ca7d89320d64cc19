/* loop.h — the training loop: epochs of shuffled batches from a dataset, one
 * compiled step per batch, progress, a CSV log, and checkpoints at each epoch
 * end and when asked to stop (SIGINT in the CLI).
 *
 * Determinism: the order of examples in epoch k is a permutation drawn from
 * (seed, k) alone, so a run resumed from a checkpoint — at an epoch end or in
 * the middle of one — sees exactly the batches an uninterrupted run sees, and
 * (same thread count) ends with bitwise-identical weights.  Before each epoch the
 * dataset's epoch is set (kiln_data_view_set_epoch), so an augmented training view
 * draws new crops and flips every epoch, and the same ones again on resume. */
#ifndef KILN_LOOP_H
#define KILN_LOOP_H

#include <signal.h>
#include <stdio.h>

#include "train/dataset.h"
#include "train/trainer.h"

/* What kiln_fit reports to on_epoch after each completed epoch. */
typedef struct kiln_epoch_info {
  int epoch;                    /* 1-based number of the epoch just finished */
  int epochs;                   /* kiln_fit_opts.epochs */
  int64_t global_step;          /* steps done by the trainer so far */
  double loss, loss_cls, loss_loc, acc; /* means over the epoch's steps (of this run) */
  double seconds;               /* since this kiln_fit call started */
} kiln_epoch_info;

typedef struct kiln_fit_opts {
  int epochs;
  int64_t max_steps;            /* stop after this many steps in this run (0: no limit) */
  uint64_t seed;
  const char *checkpoint;       /* path written at each epoch end and on stop (NULL: none) */
  const char *log_csv;          /* appended to (NULL: none) */
  volatile sig_atomic_t *stop;  /* polled between steps; set by a signal handler */
  FILE *progress;               /* NULL: silent */
  bool tty;                     /* progress as a bar rewritten in place */
  int loader_threads;           /* batches prepared on a thread while the step runs (0: inline) */
  /* Called before each epoch's first batch is prepared (also when resuming mid-epoch),
   * e.g. to set a data view's augmentation epoch (kiln_data_view_set_epoch). */
  void (*on_epoch_start)(void *ctx, int epoch);
  void *epoch_ctx;
  /* Called after each completed epoch, once its checkpoint is written (e.g. to evaluate
   * on a validation split and keep the best epoch); a non-zero code stops kiln_fit with
   * that error.  May be NULL. */
  kiln_code (*on_epoch)(void *ctx, kiln_trainer *t, const kiln_epoch_info *info, kiln_err *e);
  void *on_epoch_ctx;
} kiln_fit_opts;

typedef struct kiln_fit_result {
  int epochs_done;
  int64_t steps_done;
  double last_loss, last_cls, last_loc, last_acc; /* means over the last epoch (or partial epoch) */
  double images_per_second;
  bool stopped;                 /* interrupted; a checkpoint was written */
} kiln_fit_result;

kiln_code kiln_fit(kiln_trainer *t, kiln_dataset *train, const kiln_fit_opts *o, kiln_fit_result *r,
                   kiln_err *e);

#endif
