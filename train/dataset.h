/* dataset.h — what the training loop reads: a numbered set of examples, each an
 * image (float32 [C,H,W], already normalized), a class label, and optionally a
 * segmentation mask (float32 [H,W] in {0,1}) at the image's resolution.
 *
 * Implementations: tensor folders (kiln_dataset_open_tensors, here) and, from
 * the data layer, image folders in the CUB/BUSI/CSV layouts and the built-in
 * synthetic sets.  get() must be safe to call from several threads at once on
 * different indices (loader threads). */
#ifndef KILN_DATASET_H
#define KILN_DATASET_H

#include "ir/tensor.h"

typedef struct kiln_dataset kiln_dataset;
struct kiln_dataset {
  int64_t n;            /* examples */
  int64_t c, h, w;      /* image shape */
  int64_t classes;      /* labels lie in [0, classes) */
  bool has_masks;       /* some examples may have a mask */
  /* Writes example `idx`.  mask may be NULL (caller does not want it); *has_mask
   * says whether this example has one (when not, mask is left zero). */
  kiln_code (*get)(kiln_dataset *d, int64_t idx, float *image, int64_t *label, float *mask,
                   bool *has_mask, kiln_err *e);
  void (*destroy)(kiln_dataset *d);
  void *impl;
  char *name;
};

void kiln_dataset_free(kiln_dataset *d);

/* A folder of NumPy tensors:
 *   images.npy        float32 [N,C,H,W]
 *   labels.npy        int64 (or int32) [N]
 *   masks.npy         float32 [N,1,H,W] or [N,H,W]  (optional)
 *   mask_present.npy  float32/bool/int [N]           (optional; default: all present
 *                     when masks.npy exists) */
kiln_code kiln_dataset_open_tensors(const char *dir, kiln_dataset **out, kiln_err *e);

#endif
