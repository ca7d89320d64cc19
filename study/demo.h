/* demo.h — `kiln demo`: the study in a few minutes on a laptop.  On synthetic:shapes
 * (8 classes x 60 images, 25% of the training masks kept) it trains a baseline ResNet-18
 * and the same ResNet-18 with the SPN at a reduced size, through the experiment runner
 * (study/experiment.h), and prints the comparison the study makes. */
#ifndef KILN_STUDY_DEMO_H
#define KILN_STUDY_DEMO_H

#include <stdio.h>

#include "study/experiment.h"

typedef struct kiln_demo_opts {
  char out[KILN_EXP_PATH]; /* output folder ("kiln-demo") */
  uint64_t seed;           /* model initialization, batch order, augmentation, mask choice (1) */
  int epochs;              /* (20) */
  int64_t image_size;      /* (128) */
  int64_t width;           /* ResNet-18 stem channels (16; torchvision's is 64) */
  int64_t batch;           /* (16) */
  double loc_ratio;        /* share of training masks the SPN model sees (0.25) */
  int threads;             /* 0: all cores */
} kiln_demo_opts;

void kiln_demo_opts_default(kiln_demo_opts *o);
/* The experiment the demo runs. */
void kiln_demo_config(const kiln_demo_opts *o, kiln_exp_config *c);

/* The comparison table: one row per metric (test split), baseline | SPN | difference. */
void kiln_demo_print(const kiln_exp_outcome *o, FILE *f);

#endif
