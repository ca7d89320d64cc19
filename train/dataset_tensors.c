/* dataset_tensors.c — a dataset read from a folder of .npy tensors. */
#include <stdio.h>
#include <string.h>

#include "frontend/onnx.h"
#include "train/dataset.h"

typedef struct tensor_ds {
  kiln_tensor *images, *labels, *masks, *present;
} tensor_ds;

void kiln_dataset_free(kiln_dataset *d) {
  if (!d) return;
  if (d->destroy) d->destroy(d);
  kiln_free(d->name);
  kiln_free(d);
}

static void tensors_destroy(kiln_dataset *d) {
  tensor_ds *t = d->impl;
  if (!t) return;
  kiln_tensor_free(t->images);
  kiln_tensor_free(t->labels);
  kiln_tensor_free(t->masks);
  kiln_tensor_free(t->present);
  kiln_free(t);
}

static kiln_code tensors_get(kiln_dataset *d, int64_t idx, float *image, int64_t *label, float *mask,
                             bool *has_mask, kiln_err *e) {
  tensor_ds *t = d->impl;
  if (idx < 0 || idx >= d->n) return kiln_errf(e, KILN_ERR_INVALID, "example %lld out of range", (long long)idx);
  int64_t per = d->c * d->h * d->w, hw = d->h * d->w;
  memcpy(image, (const float *)t->images->data + idx * per, sizeof(float) * (size_t)per);
  *label = kiln_tensor_get_i(t->labels, idx);
  bool present = t->masks && (!t->present || kiln_tensor_get_f(t->present, idx) != 0.0);
  *has_mask = present;
  if (mask) {
    if (present)
      memcpy(mask, (const float *)t->masks->data + idx * hw, sizeof(float) * (size_t)hw);
    else
      memset(mask, 0, sizeof(float) * (size_t)hw);
  }
  return KILN_OK;
}

static kiln_code load_opt(const char *dir, const char *name, kiln_tensor **out, bool required, kiln_err *e) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "rb");
  if (!f) {
    *out = NULL;
    if (required) return kiln_errf(e, KILN_ERR_IO, "%s: cannot open (the dataset folder needs images.npy and labels.npy)", path);
    return KILN_OK;
  }
  fclose(f);
  return kiln_tensor_load_npy(path, out, e);
}

kiln_code kiln_dataset_open_tensors(const char *dir, kiln_dataset **out, kiln_err *e) {
  *out = NULL;
  kiln_dataset *d = kiln_calloc(1, sizeof *d);
  tensor_ds *t = kiln_calloc(1, sizeof *t);
  char path[4096];
  if (!d || !t) {
    kiln_free(d);
    kiln_free(t);
    return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  }
  d->impl = t;
  d->destroy = tensors_destroy;
  d->get = tensors_get;
  d->name = kiln_strdup(dir);
  kiln_code rc;
  if ((rc = load_opt(dir, "images.npy", &t->images, true, e)) || (rc = load_opt(dir, "labels.npy", &t->labels, true, e)) ||
      (rc = load_opt(dir, "masks.npy", &t->masks, false, e)) ||
      (rc = load_opt(dir, "mask_present.npy", &t->present, false, e)))
    goto fail;
  const kiln_tensor *im = t->images;
  snprintf(path, sizeof path, "%s/images.npy", dir);
  if (im->dtype != KILN_F32 || im->shape.rank != 4) {
    rc = kiln_errf(e, KILN_ERR_SHAPE, "%s must be float32 [N,C,H,W]", path);
    goto fail;
  }
  d->n = im->shape.d[0];
  d->c = im->shape.d[1];
  d->h = im->shape.d[2];
  d->w = im->shape.d[3];
  snprintf(path, sizeof path, "%s/labels.npy", dir);
  if ((t->labels->dtype != KILN_I64 && t->labels->dtype != KILN_I32) || t->labels->numel != d->n) {
    rc = kiln_errf(e, KILN_ERR_SHAPE, "%s must be int64 [%lld] (one label per image)", path, (long long)d->n);
    goto fail;
  }
  int64_t maxl = -1;
  for (int64_t i = 0; i < d->n; i++) {
    int64_t l = kiln_tensor_get_i(t->labels, i);
    if (l < 0) {
      rc = kiln_errf(e, KILN_ERR_INVALID, "%s: label %lld of example %lld is negative", path, (long long)l, (long long)i);
      goto fail;
    }
    if (l > maxl) maxl = l;
  }
  d->classes = maxl + 1;
  if (t->masks) {
    snprintf(path, sizeof path, "%s/masks.npy", dir);
    const kiln_shape *ms = &t->masks->shape;
    bool ok = t->masks->dtype == KILN_F32 &&
              ((ms->rank == 4 && ms->d[0] == d->n && ms->d[1] == 1 && ms->d[2] == d->h && ms->d[3] == d->w) ||
               (ms->rank == 3 && ms->d[0] == d->n && ms->d[1] == d->h && ms->d[2] == d->w));
    if (!ok) {
      rc = kiln_errf(e, KILN_ERR_SHAPE, "%s must be float32 [N,1,H,W] matching the images (%lldx%lld)", path,
                     (long long)d->h, (long long)d->w);
      goto fail;
    }
    d->has_masks = true;
  }
  if (t->present && t->present->numel != d->n) {
    rc = kiln_errf(e, KILN_ERR_SHAPE, "%s/mask_present.npy must have one entry per image", dir);
    goto fail;
  }
  *out = d;
  return KILN_OK;
fail:
  kiln_dataset_free(d);
  return rc;
}
