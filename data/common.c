/* common.c — the shared part of the data layer's datasets: allocation, the common
 * get path (crop, flip, resize, normalize, masks), augmentation sampling, metadata
 * accessors and string/path helpers. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "data/internal.h"

kiln_data_opts kiln_data_opts_default(void) {
  return (kiln_data_opts){
      .height = 224,
      .width = 224,
      .seed = 1,
      .data_seed = 1,
      .val_frac = 0.1,
      .test_frac = 0.1,
      .loc_ratio = 1.0,
      .augment = true,
      .flip_p = 0.5,
      .scale_min = 0.5,
      .scale_max = 1.0,
      .ratio_min = 3.0 / 4.0,
      .ratio_max = 4.0 / 3.0,
      .crop = true,
      .count = 60,
      .synth_classes = 8,
      .cue = 0.9,
  };
}

/* ---- allocation ---- */

static void data_destroy(kiln_dataset *d) {
  data_base *b = d->impl;
  if (!b) return;
  if (b->free_impl) b->free_impl(b);
  kiln_free(b->labels);
  kiln_free(b->mask_avail);
  kiln_free(b->split);
  data_free_strings(b->class_names, b->n_classes);
  data_free_strings(b->names, b->names ? b->n : 0);
  data_free_strings(b->skipped, b->n_skipped);
  kiln_free(b);
  d->impl = NULL;
}

bool data_is_ours(const kiln_dataset *d) { return d && d->destroy == data_destroy && d->impl; }

static kiln_code data_public_get(kiln_dataset *d, int64_t idx, float *image, int64_t *label, float *mask,
                                 bool *has_mask, kiln_err *e) {
  if (idx < 0 || idx >= d->n)
    return kiln_errf(e, KILN_ERR_INVALID, "%s: example %lld out of range", d->name, (long long)idx);
  return data_hdr(d)->get_ex(d, idx, NULL, true, image, label, mask, has_mask, e);
}

kiln_code data_new(size_t impl_size, int64_t n, const char *layout, const char *name, kiln_dataset **out,
                   kiln_err *e) {
  *out = NULL;
  kiln_dataset *d = kiln_calloc(1, sizeof *d);
  data_base *b = kiln_calloc(1, impl_size);
  size_t m = (size_t)(n > 0 ? n : 1);
  if (d) d->impl = b, d->destroy = data_destroy;
  if (b) {
    b->n = n;
    b->layout = layout;
    b->labels = kiln_calloc(m, sizeof(int64_t));
    b->mask_avail = kiln_calloc(m, sizeof(bool));
    b->split = kiln_malloc(m);
    b->names = kiln_calloc(m, sizeof(char *));
  }
  if (d) d->name = kiln_strdup(name ? name : layout);
  if (!d || !b || !b->labels || !b->mask_avail || !b->split || !b->names || !d->name) {
    if (d) kiln_dataset_free(d);
    else kiln_free(b);
    return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  }
  memset(b->split, -1, m);
  d->n = n;
  d->get = data_public_get;
  *out = d;
  return KILN_OK;
}

kiln_code data_set_classes(data_base *b, int64_t k, const char *const *names, kiln_err *e) {
  if (k > DATA_MAX_CLASSES)
    return kiln_errf(e, KILN_ERR_LIMIT, "%lld classes, more than the limit of %d", (long long)k, DATA_MAX_CLASSES);
  b->class_names = kiln_calloc((size_t)(k > 0 ? k : 1), sizeof(char *));
  if (!b->class_names) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  b->n_classes = k;
  for (int64_t i = 0; i < k; i++) {
    char num[32];
    snprintf(num, sizeof num, "%lld", (long long)i);
    b->class_names[i] = kiln_strdup(names && names[i] ? names[i] : num);
    if (!b->class_names[i]) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  }
  return KILN_OK;
}

kiln_code data_add_skipped(data_base *b, const char *msg, kiln_err *e) {
  KILN_TRY(kiln_grow((void **)&b->skipped, &b->cap_skipped, b->n_skipped + 1, sizeof(char *), e));
  if (!(b->skipped[b->n_skipped] = kiln_strdup(msg))) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  b->n_skipped++;
  return KILN_OK;
}

kiln_code data_finish(kiln_dataset *d, const kiln_data_opts *o, bool keep_split, kiln_err *e) {
  data_base *b = data_hdr(d);
  int64_t *count = kiln_calloc((size_t)(b->n_classes > 0 ? b->n_classes : 1), sizeof(int64_t));
  if (!count) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  kiln_code rc = KILN_OK;
  for (int64_t i = 0; i < b->n; i++) {
    if (b->labels[i] < 0 || b->labels[i] >= b->n_classes) {
      rc = kiln_errf(e, KILN_ERR_INVALID, "%s: example %s has label %lld outside [0, %lld)", d->name,
                     b->names[i] ? b->names[i] : "?", (long long)b->labels[i], (long long)b->n_classes);
      goto done;
    }
    count[b->labels[i]]++;
    if (b->mask_avail[i]) d->has_masks = true;
  }
  for (int64_t k = 0; k < b->n_classes; k++)
    if (!count[k]) {
      rc = kiln_errf(e, KILN_ERR_INVALID, "%s: class '%s' (label %lld) has no images%s", d->name, b->class_names[k],
                     (long long)k, b->n_skipped ? " left after skipping bad files" : "");
      goto done;
    }
  if (b->n_classes == 0) {
    rc = kiln_errf(e, KILN_ERR_INVALID, "%s: the dataset has no classes", d->name);
    goto done;
  }
  if (!keep_split) rc = kiln_data_split(b->labels, b->n, o->seed, o->val_frac, o->test_frac, b->split, e);
  d->classes = b->n_classes;
  if (!d->c) d->c = 3;
  if (!d->h) d->h = o->height;
  if (!d->w) d->w = o->width;
done:
  kiln_free(count);
  return rc;
}

/* ---- the get path ---- */

void data_aug_sample(const data_aug *a, int w, int h, int *x0, int *y0, int *cw, int *ch, bool *flip) {
  *x0 = *y0 = 0;
  *cw = w;
  *ch = h;
  *flip = false;
  if (!a) return;
  data_rng r = {a->seed};
  if (a->crop) {
    double area = (double)w * h, lr0 = log(a->ratio_min), lr1 = log(a->ratio_max);
    bool found = false;
    for (int t = 0; t < 10 && !found; t++) {
      double target = area * rng_range(&r, a->scale_min, a->scale_max), ar = exp(rng_range(&r, lr0, lr1));
      int tw = (int)lround(sqrt(target * ar)), th = (int)lround(sqrt(target / ar));
      if (tw > 0 && tw <= w && th > 0 && th <= h) {
        *y0 = (int)rng_below(&r, h - th + 1);
        *x0 = (int)rng_below(&r, w - tw + 1);
        *cw = tw;
        *ch = th;
        found = true;
      }
    }
    if (!found) { /* torchvision's fallback: the central crop with the ratio clamped */
      double in_ratio = (double)w / h;
      if (in_ratio < a->ratio_min) *cw = w, *ch = (int)lround(w / a->ratio_min);
      else if (in_ratio > a->ratio_max) *ch = h, *cw = (int)lround(h * a->ratio_max);
      if (*cw < 1) *cw = 1;
      if (*ch < 1) *ch = 1;
      if (*cw > w) *cw = w;
      if (*ch > h) *ch = h;
      *y0 = (h - *ch) / 2;
      *x0 = (w - *cw) / 2;
    }
  }
  *flip = rng_unit(&r) < a->flip_p;
}

kiln_code data_emit(const kiln_image *img, const kiln_image *mask, const data_aug *aug, bool normalize, int ow,
                    int oh, float *image, float *mask_out, kiln_err *e) {
  int x0, y0, cw, ch;
  bool flip;
  data_aug_sample(aug, img->w, img->h, &x0, &y0, &cw, &ch, &flip);
  KILN_TRY(kiln_image_resize(img, x0, y0, cw, ch, flip, image, ow, oh, e));
  if (normalize) kiln_image_normalize(image, img->c, (int64_t)ow * oh);
  if (mask_out) {
    if (mask) {
      KILN_TRY(kiln_image_resize(mask, x0, y0, cw, ch, flip, mask_out, ow, oh, e));
      kiln_mask_threshold(mask_out, (int64_t)ow * oh);
    } else {
      memset(mask_out, 0, sizeof(float) * (size_t)ow * oh);
    }
  }
  return KILN_OK;
}

kiln_code data_get(kiln_dataset *d, int64_t idx, const data_aug *aug, bool normalize, float *image,
                   int64_t *label, float *mask, bool *has_mask, kiln_err *e) {
  if (idx < 0 || idx >= d->n)
    return kiln_errf(e, KILN_ERR_INVALID, "%s: example %lld out of range", d->name ? d->name : "dataset",
                     (long long)idx);
  if (data_is_ours(d)) return data_hdr(d)->get_ex(d, idx, aug, normalize, image, label, mask, has_mask, e);
  /* another kind of dataset (a tensor folder): its examples come normalized at its size */
  int64_t hw = d->h * d->w;
  if (!aug) {
    KILN_TRY(d->get(d, idx, image, label, mask, has_mask, e));
    if (!normalize) kiln_image_denormalize(image, (int)d->c, hw);
    return KILN_OK;
  }
  kiln_image im = {0}, mk = {0};
  kiln_code rc;
  if ((rc = kiln_image_alloc(&im, (int)d->w, (int)d->h, (int)d->c, e)) ||
      (rc = kiln_image_alloc(&mk, (int)d->w, (int)d->h, 1, e)))
    goto done;
  bool has = false;
  if ((rc = d->get(d, idx, im.px, label, mk.px, &has, e))) goto done;
  *has_mask = has;
  if (!normalize) kiln_image_denormalize(im.px, im.c, hw);
  rc = data_emit(&im, has ? &mk : NULL, aug, false, (int)d->w, (int)d->h, image, mask, e);
done:
  kiln_image_release(&im);
  kiln_image_release(&mk);
  return rc;
}

kiln_code kiln_data_get_raw(kiln_dataset *d, int64_t idx, float *image, int64_t *label, float *mask,
                            bool *has_mask, kiln_err *e) {
  return data_get(d, idx, NULL, false, image, label, mask, has_mask, e);
}

/* ---- metadata ---- */

kiln_code kiln_data_meta(kiln_dataset *d, int64_t *labels, bool *has_mask, int8_t *split, kiln_err *e) {
  if (data_is_ours(d)) {
    data_base *b = data_hdr(d);
    for (int64_t i = 0; i < d->n; i++) {
      if (labels) labels[i] = b->labels[i];
      if (has_mask) has_mask[i] = b->mask_avail[i];
      if (split) split[i] = b->split[i];
    }
    return KILN_OK;
  }
  /* other datasets: read each example once */
  float *img = kiln_malloc(sizeof(float) * (size_t)(d->c * d->h * d->w));
  if (!img) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  kiln_code rc = KILN_OK;
  for (int64_t i = 0; i < d->n && !rc; i++) {
    int64_t l = 0;
    bool h = false;
    rc = d->get(d, i, img, &l, NULL, &h, e);
    if (labels) labels[i] = l;
    if (has_mask) has_mask[i] = h;
    if (split) split[i] = KILN_SPLIT_ALL;
  }
  kiln_free(img);
  return rc;
}

const char *kiln_data_class_name(const kiln_dataset *d, int64_t k) {
  if (!data_is_ours(d) || k < 0 || k >= data_hdr(d)->n_classes) return NULL;
  return data_hdr(d)->class_names[k];
}

const char *kiln_data_example_name(const kiln_dataset *d, int64_t idx) {
  if (!data_is_ours(d) || idx < 0 || idx >= d->n || !data_hdr(d)->names) return NULL;
  return data_hdr(d)->names[idx];
}

int64_t kiln_data_skipped(const kiln_dataset *d, const char *const **msgs) {
  if (!data_is_ours(d)) {
    if (msgs) *msgs = NULL;
    return 0;
  }
  data_base *b = data_hdr(d);
  while (b->base && data_is_ours(b->base) && !b->n_skipped) b = data_hdr(b->base); /* a view: its base's */
  if (msgs) *msgs = (const char *const *)b->skipped;
  return b->n_skipped;
}

/* ---- strings and paths ---- */

char *data_strndup(const char *s, size_t n) {
  char *p = kiln_malloc(n + 1);
  if (!p) return NULL;
  memcpy(p, s, n);
  p[n] = 0;
  return p;
}

char *data_join(const char *dir, const char *rel) {
  if (rel[0] == '/' || !dir || !dir[0]) return kiln_strdup(rel);
  size_t a = strlen(dir), b = strlen(rel);
  char *p = kiln_malloc(a + b + 2);
  if (!p) return NULL;
  memcpy(p, dir, a);
  size_t k = a;
  if (a && dir[a - 1] != '/') p[k++] = '/';
  memcpy(p + k, rel, b + 1);
  return p;
}

bool data_is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

bool data_is_file(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

kiln_code data_read_text(const char *path, char **out, size_t *len, kiln_err *e) {
  *out = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) return kiln_errf(e, KILN_ERR_IO, "%s: cannot open (%s)", path, strerror(errno));
  size_t cap = 4096, n = 0;
  char *buf = kiln_malloc(cap);
  kiln_code rc = KILN_OK;
  while (buf) {
    if (n + 1 >= cap) {
      if (cap >= ((size_t)256 << 20)) {
        rc = kiln_errf(e, KILN_ERR_LIMIT, "%s: larger than 256 MiB", path);
        break;
      }
      char *nb = kiln_realloc(buf, cap * 2);
      if (!nb) break;
      buf = nb;
      cap *= 2;
    }
    size_t got = fread(buf + n, 1, cap - n - 1, f);
    n += got;
    if (got == 0) break;
  }
  if (!rc && buf && ferror(f)) rc = kiln_errf(e, KILN_ERR_IO, "%s: read error", path);
  fclose(f);
  if (!buf) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory reading %s", path);
  if (rc) {
    kiln_free(buf);
    return rc;
  }
  buf[n] = 0;
  *out = buf;
  if (len) *len = n;
  return KILN_OK;
}

int data_natcmp(const char *a, const char *b) {
  while (*a && *b) {
    if (isdigit((unsigned char)*a) && isdigit((unsigned char)*b)) {
      while (*a == '0') a++;
      while (*b == '0') b++;
      size_t la = 0, lb = 0;
      while (isdigit((unsigned char)a[la])) la++;
      while (isdigit((unsigned char)b[lb])) lb++;
      if (la != lb) return la < lb ? -1 : 1;
      int c = strncmp(a, b, la);
      if (c) return c;
      a += la;
      b += lb;
    } else {
      if (*a != *b) return (unsigned char)*a < (unsigned char)*b ? -1 : 1;
      a++;
      b++;
    }
  }
  return *a ? 1 : *b ? -1 : 0;
}

bool data_has_image_ext(const char *name) {
  const char *dot = strrchr(name, '.');
  if (!dot) return false;
  return !strcasecmp(dot, ".png") || !strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg");
}

kiln_code data_split_list(const char *s, char ***out, int64_t *n, kiln_err *e) {
  *out = NULL;
  *n = 0;
  int64_t cap = 0;
  char **v = NULL;
  const char *p = s;
  while (p && *p) {
    const char *q = strchr(p, ',');
    size_t len = q ? (size_t)(q - p) : strlen(p);
    while (len && isspace((unsigned char)*p)) p++, len--;
    while (len && isspace((unsigned char)p[len - 1])) len--;
    if (len) {
      if (kiln_grow((void **)&v, &cap, *n + 1, sizeof(char *), e) || !(v[*n] = data_strndup(p, len))) {
        data_free_strings(v, *n);
        *n = 0;
        return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
      }
      (*n)++;
    }
    p = q ? q + 1 : NULL;
  }
  *out = v;
  return KILN_OK;
}

void data_free_strings(char **v, int64_t n) {
  if (!v) return;
  for (int64_t i = 0; i < n; i++) kiln_free(v[i]);
  kiln_free(v);
}
