/* experiment.h — the study's experiment grid: backbones x {baseline, SPN at each loc
 * ratio} x localization losses x seeds on one dataset; each run builds its model,
 * trains it keeping the best epoch on the validation split, evaluates it on the test
 * split, scores its saliency maps against the masks, and leaves its results on disk
 * (runs/<id>/result.json and CSVs), where a rerun of the grid finds and reuses them.
 *
 *   kiln_exp_config c;
 *   kiln_exp_config_default(&c);
 *   kiln_exp_config_set(&c, "epochs", "5", &err);      // same keys as the config file
 *   kiln_exp_outcome o;
 *   if (kiln_experiment_run(&c, &o, &err)) ...;         // runs, tables, report.html
 *   kiln_exp_outcome_free(&o);
 *
 * See docs/study.md ("Experiments"). */
#ifndef KILN_STUDY_EXPERIMENT_H
#define KILN_STUDY_EXPERIMENT_H

#include <signal.h>
#include <stdio.h>

#include "models/models.h"
#include "train/train_graph.h"

#define KILN_EXP_MAX_BACKBONES 3
#define KILN_EXP_MAX_RATIOS 8
#define KILN_EXP_MAX_LOSSES 3
#define KILN_EXP_MAX_SEEDS 32
#define KILN_EXP_PATH 1024

typedef struct kiln_exp_config {
  /* data */
  char data[KILN_EXP_PATH];    /* dataset spec (default "synthetic:shapes") */
  char classes[KILN_EXP_PATH]; /* class subset in label order ("" : all) */
  int64_t count;               /* synthetic: images per class (60) */
  int64_t synth_classes;       /* synthetic:shapes: classes (8) */
  uint64_t data_seed;          /* synthetic: what the images look like (1) */
  uint64_t split_seed;         /* the 80/10/10 split, the same for every run (1) */
  bool skip_bad;
  bool augment;                /* random resized crop and flip of training images (true) */
  /* the grid */
  int n_backbones;
  kiln_backbone backbones[KILN_EXP_MAX_BACKBONES]; /* (resnet18) */
  bool baseline;               /* include the baseline of each backbone (true) */
  int n_ratios;
  double ratios[KILN_EXP_MAX_RATIOS]; /* SPN loc label ratios (1, 0.25) */
  int n_losses;
  kiln_loc_loss losses[KILN_EXP_MAX_LOSSES]; /* SPN localization losses (bce) */
  int n_seeds;
  uint64_t seeds[KILN_EXP_MAX_SEEDS]; /* repeated runs (1) */
  /* models (docs/models.md, "The study's tables") */
  int64_t image_size;          /* 224 */
  int64_t width;               /* stem channels (64) */
  int64_t cnet_hidden;         /* the SPN model's C-Net hidden width (1024) */
  int64_t baseline_hidden;     /* the baseline's (0: torchvision's single fc, the study's) */
  int n_spn_scales;
  int64_t spn_scales[KILN_SPN_MAX_BLOCKS]; /* (2,2,2,4: the study's four blocks, 32x) */
  int64_t spn_width_cap;       /* 0: none */
  char init_from[KILN_EXP_PATH]; /* pretrained F-Net weights (ONNX), "" : none */
  /* training (the study: Adam, lr 1e-3, batch 32, 40 epochs, lambda 1) */
  int epochs;
  int64_t batch;
  double lr, lambda;
  int threads;                 /* 0: all cores */
  /* output */
  char out[KILN_EXP_PATH];     /* output folder ("experiment") */
  int grid_rows;               /* test examples in the saliency grids (8) */
  bool keep_models;            /* keep each run's best.onnx (true) */
  bool report;                 /* write tables and report.html at the end (true) */
  char title[256];             /* report title */
} kiln_exp_config;

void kiln_exp_config_default(kiln_exp_config *c);

/* Sets one option by its key (the config file's and the CLI's names, e.g. "epochs",
 * "backbones", "ratios", "losses", "seeds"; docs/study.md lists them).  Lists are
 * comma-separated.  An unknown key or a bad value is KILN_ERR_INVALID naming it. */
kiln_code kiln_exp_config_set(kiln_exp_config *c, const char *key, const char *value, kiln_err *e);
/* Reads a config file: `key = value` lines, `#` comments, blank lines.  Errors name
 * the file and line. */
kiln_code kiln_exp_config_load(kiln_exp_config *c, const char *path, kiln_err *e);
/* Checks the whole configuration (sizes, lists, model plan). */
kiln_code kiln_exp_config_check(const kiln_exp_config *c, kiln_err *e);
/* The configuration as `key = value` lines (what kiln_exp_config_load reads back). */
void kiln_exp_config_write(const kiln_exp_config *c, FILE *f);

/* One run of the grid. */
typedef struct kiln_exp_run {
  char id[96];            /* "resnet18-baseline-s1", "resnet18-spn-r0.25-bce-s1" */
  kiln_backbone backbone;
  bool spn;
  double ratio;           /* 0 for the baseline */
  kiln_loc_loss loss;     /* KILN_LOC_NONE for the baseline */
  uint64_t seed;
} kiln_exp_run;

/* "CE", "L1", "L2", "-" (the study's names); "bce"/"ce", "l1", "l2" parse. */
const char *kiln_loc_loss_label(kiln_loc_loss l);
bool kiln_loc_loss_parse(const char *s, kiln_loc_loss *out);

/* Expands the grid: for each backbone and seed, the baseline then each ratio x loss.
 * *runs is kiln_malloc'd (free with kiln_free). */
kiln_code kiln_exp_plan(const kiln_exp_config *c, kiln_exp_run **runs, int *n, kiln_err *e);

/* What one finished run measured. */
typedef struct kiln_exp_result {
  kiln_exp_run run;
  char key[512];          /* the settings the run depends on; a rerun reuses it only if equal */
  int epochs, best_epoch; /* best_epoch 1-based, chosen on validation */
  double seconds;         /* training and evaluation */
  double images_per_second;
  /* test split */
  int64_t k, n_test;
  double accuracy, precision, sensitivity, specificity, f1; /* means over classes, in [0,1] */
  double *cls_precision, *cls_sensitivity, *cls_specificity, *cls_f1; /* [k] */
  int64_t *cls_support;   /* [k] */
  char **class_names;     /* [k] */
  double spn_iou, spn_dice; /* SPN mask vs ground truth (NaN for the baseline) */
  /* saliency scores on the test split (NaN where a method does not apply) */
  double cam_energy, cam_pointing, cam_iou;    /* Grad-CAM */
  double grad_energy, grad_pointing;           /* vanilla gradient */
  double spnmap_energy, spnmap_pointing;       /* the SPN map */
  double mask_area;       /* mean mask area share: a uniform map's energy */
  /* curves, one entry per epoch */
  int n_curve;
  double *train_loss, *train_cls, *train_loc, *train_acc, *val_acc, *val_f1, *val_loss, *val_iou;
} kiln_exp_result;

void kiln_exp_result_free(kiln_exp_result *r);
/* result.json of a run folder. */
kiln_code kiln_exp_result_save(const kiln_exp_result *r, const char *path, kiln_err *e);
kiln_code kiln_exp_result_load(const char *path, kiln_exp_result *r, kiln_err *e);

/* The outcome of a whole grid. */
typedef struct kiln_exp_outcome {
  int n;                    /* runs */
  kiln_exp_result *results; /* [n], in plan order */
  int n_reused;             /* runs whose results were found on disk */
  double seconds;
  char report[KILN_EXP_PATH]; /* report.html ("" when not written) */
} kiln_exp_outcome;

void kiln_exp_outcome_free(kiln_exp_outcome *o);

typedef struct kiln_exp_hooks {
  FILE *log;                /* progress lines (NULL: silent) */
  bool tty;                 /* rewrite the step line in place */
  volatile sig_atomic_t *stop; /* polled between steps (a signal flag; may be NULL) */
} kiln_exp_hooks;

/* Runs every run of the plan that has no matching result on disk, then writes the
 * tables (table1.md/csv, table2.md/csv, saliency.md/csv), runs.csv and report.html
 * into c->out. */
kiln_code kiln_experiment_run(const kiln_exp_config *c, const kiln_exp_hooks *h, kiln_exp_outcome *o,
                              kiln_err *e);

/* The test examples shown in saliency grids: up to `rows` indices of examples
 * with a non-empty mask, one class after another (round robin), in index order
 * within a class. */
int kiln_exp_grid_examples(const int64_t *labels, const bool *has_mask, int64_t n, int64_t k, int rows,
                           int64_t *out);

#endif
