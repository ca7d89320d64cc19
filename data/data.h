/* data.h — the data layer: image datasets (CUB-200-2011, BUSI-style class folders,
 * CSV lists), the built-in synthetic sets, tensor folders, the stratified split,
 * partial masks (loc ratio), augmentation, and export to disk.
 *
 * Every dataset opened here is a kiln_dataset (train/dataset.h) whose get() returns
 * an image resized to the requested size and ImageNet-normalized (float32 [3,H,W]),
 * its label, and its mask at the same size ({0,1}) when it has one.  get() is
 * thread-safe: datasets hold no mutable state after opening; each call decodes
 * its files afresh.
 *
 * Typical use:
 *   kiln_data_opts o = kiln_data_opts_default();
 *   o.height = o.width = 224; o.loc_ratio = 0.25;
 *   kiln_dataset *all, *train, *val, *test;
 *   kiln_dataset_open_spec("synthetic:shapes", &o, &all, &e);
 *   kiln_data_view(all, KILN_SPLIT_TRAIN, &o, &train, &e);   // augmented, 25% masks
 *   kiln_data_view(all, KILN_SPLIT_VAL, &o, &val, &e);
 *   ...  kiln_data_view_set_epoch(train, epoch) before each epoch ...
 *   kiln_dataset_free(train); ...; kiln_dataset_free(all);   // views before their base
 * See docs/data.md. */
#ifndef KILN_DATA_H
#define KILN_DATA_H

#include "train/dataset.h"

typedef enum kiln_split { KILN_SPLIT_TRAIN = 0, KILN_SPLIT_VAL = 1, KILN_SPLIT_TEST = 2, KILN_SPLIT_ALL = 3 } kiln_split;

typedef struct kiln_data_opts {
  int64_t height, width;   /* size of the examples (default 224x224) */
  uint64_t seed;           /* the split, the loc-ratio selection and augmentation (default 1) */
  uint64_t data_seed;      /* synthetic sets: what the images look like (default 1) */
  const char *classes;     /* class subset in label order: "3,14,67" (CUB ids or names),
                              "malignant,benign" (folder names), CSV label names; NULL: all */
  int64_t num_classes;     /* CSV with integer labels: labels must lie in [0, num_classes) (0: any) */
  double val_frac, test_frac; /* stratified split (default 0.1, 0.1; train gets the rest) */
  double loc_ratio;        /* fraction of training images that keep their mask (default 1) */
  bool skip_bad;           /* skip (and count) unreadable or inconsistent files instead of failing */
  int threads;             /* threads checking files when opening (0: 4) */
  /* augmentation of the training view */
  bool augment;            /* default true */
  double flip_p;           /* horizontal flip probability (default 0.5) */
  double scale_min, scale_max; /* random resized crop: area fraction (default 0.5, 1) */
  double ratio_min, ratio_max; /* random resized crop: aspect ratio (default 3/4, 4/3) */
  bool crop;               /* random resized crop on (default true) */
  /* synthetic sets */
  int64_t count;           /* images per class (default 60) */
  int64_t synth_classes;   /* synthetic:shapes classes (default 8, at most 32) */
  double cue;              /* synthetic:shapes: share of training images whose background tint is
                              their class's (default 0.9); validation/test tints are random */
} kiln_data_opts;

kiln_data_opts kiln_data_opts_default(void);

/* Opens a dataset from a spec:
 *   synthetic:shapes | synthetic:ultrasound     built-in, generated from o->data_seed
 *   DIR with images.txt + image_class_labels.txt  CUB-200-2011
 *   DIR with class folders (benign/, malignant/, normal/ ...) of "name (k).png" and
 *       "name (k)_mask*.png"                    BUSI (or any image-folder tree)
 *   FILE.csv, or DIR with dataset.csv           CSV list (image,label[,mask][,split])
 *   DIR with images.npy + labels.npy            tensor folder (train/dataset_tensors.c)
 * The result holds every example (all splits) with its split assigned (stratified,
 * from o->seed; a CSV split column wins).  Fails with one clear error naming the file
 * or listing the layouts when none fits. */
kiln_code kiln_dataset_open_spec(const char *spec, const kiln_data_opts *o, kiln_dataset **out, kiln_err *e);

/* The examples of one split of `base` (KILN_SPLIT_ALL: all of them).  For the training
 * split: only round(loc_ratio * masked training images) of them, drawn with o->seed,
 * keep their masks (the rest report has_mask = false), and with o->augment the
 * examples are randomly cropped and flipped, seeded by (seed, epoch, example).
 * The view borrows `base`: free it before the base. */
kiln_code kiln_data_view(kiln_dataset *base, kiln_split split, const kiln_data_opts *o, kiln_dataset **out,
                         kiln_err *e);
/* The epoch the augmentation of a training view draws for (call before each epoch;
 * not while get() runs on another thread).  No effect on other datasets. */
void kiln_data_view_set_epoch(kiln_dataset *view, int epoch);
/* Convenience: base + its three views. */
kiln_code kiln_data_open_splits(const char *spec, const kiln_data_opts *o, kiln_dataset **base,
                                kiln_dataset **train, kiln_dataset **val, kiln_dataset **test, kiln_err *e);

/* An example without augmentation and without normalization: image in [0,1]
 * (for pictures, overlays and export).  mask may be NULL. */
kiln_code kiln_data_get_raw(kiln_dataset *d, int64_t idx, float *image, int64_t *label, float *mask,
                            bool *has_mask, kiln_err *e);

/* Labels, mask availability (after the loc ratio, for views) and split of every
 * example, without decoding images for datasets of this layer.  Any pointer may be
 * NULL; arrays have d->n entries. */
kiln_code kiln_data_meta(kiln_dataset *d, int64_t *labels, bool *has_mask, int8_t *split, kiln_err *e);
/* Class name of label k ("0", "1"... when the layout has none); NULL out of range. */
const char *kiln_data_class_name(const kiln_dataset *d, int64_t k);
/* A short name for example idx (its image file relative to the dataset, or
 * "shapes/00012"); NULL for datasets not opened here. */
const char *kiln_data_example_name(const kiln_dataset *d, int64_t idx);
/* Files skipped with skip_bad, each "path: reason". */
int64_t kiln_data_skipped(const kiln_dataset *d, const char *const **msgs);
/* A multi-line human summary: layout, examples per class and split, masks, skips. */
void kiln_data_summary(kiln_dataset *d, char *buf, size_t n);

/* Writes `d` (no augmentation, before normalization) as PNGs in the CSV layout:
 * DIR/images/NNNNN.png, DIR/masks/NNNNN.png, DIR/dataset.csv with the columns
 * image,label,mask,split (labels as class names, rows in label order so that the
 * names map back to the same labels).  Loading DIR back gives identical pixels. */
kiln_code kiln_data_export(kiln_dataset *d, const char *dir, kiln_err *e);

/* ---- building blocks (data/split.c) ---- */

/* Stratified split: per class, a seeded shuffle; round(test_frac*n_c) to test,
 * round(val_frac*n_c) to validation, the rest to training. */
kiln_code kiln_data_split(const int64_t *labels, int64_t n, uint64_t seed, double val_frac, double test_frac,
                          int8_t *split, kiln_err *e);
/* Of the examples with split[i] == KILN_SPLIT_TRAIN and has_mask[i], keeps exactly
 * round(ratio * count) (a seeded choice); keep[i] is false for every other example. */
int64_t kiln_data_loc_select(const int8_t *split, const bool *has_mask, int64_t n, double ratio, uint64_t seed,
                             bool *keep);

#endif
