/* internal.h — what the data layer's files share: the common header of its
 * datasets, the seeded RNG, augmentation parameters and small string helpers. */
#ifndef KILN_DATA_INTERNAL_H
#define KILN_DATA_INTERNAL_H

#include <math.h>

#include "data/data.h"
#include "data/image.h"

/* The most classes a dataset may have.  Class tables are allocated per class, so an
 * unchecked integer label in a two-line CSV would otherwise ask for gigabytes. */
#define DATA_MAX_CLASSES 100000

/* ---- deterministic randomness: splitmix64 ---- */

static inline uint64_t data_mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
/* A seed from several values, order-sensitive. */
static inline uint64_t data_seed3(uint64_t a, uint64_t b, uint64_t c) {
  return data_mix(data_mix(data_mix(a) ^ b) ^ c);
}

typedef struct data_rng {
  uint64_t s;
} data_rng;

static inline uint64_t rng_u64(data_rng *r) {
  r->s += 0x9e3779b97f4a7c15ull;
  uint64_t z = r->s;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
/* Uniform in [0,1). */
static inline double rng_unit(data_rng *r) { return (double)(rng_u64(r) >> 11) * (1.0 / 9007199254740992.0); }
static inline double rng_range(data_rng *r, double lo, double hi) { return lo + (hi - lo) * rng_unit(r); }
/* Uniform integer in [0, n). */
static inline int64_t rng_below(data_rng *r, int64_t n) { return n <= 1 ? 0 : (int64_t)(rng_u64(r) % (uint64_t)n); }
static inline double rng_normal(data_rng *r) {
  double u = rng_unit(r), v = rng_unit(r);
  return sqrt(-2.0 * log(1.0 - u)) * cos(6.283185307179586 * v);
}

/* ---- augmentation ---- */

typedef struct data_aug {
  uint64_t seed;               /* already mixed with (epoch, example) */
  double flip_p;
  bool crop;
  double scale_min, scale_max, ratio_min, ratio_max;
} data_aug;

/* torchvision's RandomResizedCrop.get_params and RandomHorizontalFlip on a w x h
 * source: the crop rectangle and the flip.  aug NULL: the whole image, no flip. */
void data_aug_sample(const data_aug *aug, int w, int h, int *x0, int *y0, int *cw, int *ch, bool *flip);

/* ---- the common header of this layer's datasets ---- */

/* Writes example idx at the dataset's size: image [c,h,w] (normalized or in [0,1]),
 * label, and mask [h,w] when mask != NULL (zero when the example has none). */
typedef kiln_code (*data_get_fn)(kiln_dataset *d, int64_t idx, const data_aug *aug, bool normalize,
                                 float *image, int64_t *label, float *mask, bool *has_mask, kiln_err *e);

typedef struct data_base {
  data_get_fn get_ex;
  void (*free_impl)(void *impl); /* frees what follows the header (the struct itself is freed after) */
  const char *layout;            /* "CUB-200-2011", "BUSI folders", "CSV", "synthetic:shapes", "view" ... */
  int64_t n;
  int64_t *labels;
  bool *mask_avail;              /* example has a mask */
  int8_t *split;                 /* KILN_SPLIT_* per example */
  int64_t n_classes;
  char **class_names;            /* n_classes strings */
  char **names;                  /* per-example short names (may be NULL) */
  int64_t found;                 /* candidate examples before skipping */
  char **skipped;                /* "path: reason" */
  int64_t n_skipped, cap_skipped;
  int64_t box_masks;             /* masks made from bounding boxes */
  /* views */
  kiln_dataset *base;
  kiln_split which;
} data_base;

/* True when d was opened by this layer (its impl starts with a data_base). */
bool data_is_ours(const kiln_dataset *d);
static inline data_base *data_hdr(const kiln_dataset *d) { return (data_base *)d->impl; }

/* Allocates the dataset and an impl of `impl_size` bytes whose first member is a
 * data_base, with labels/mask_avail/split/names arrays for n examples. */
kiln_code data_new(size_t impl_size, int64_t n, const char *layout, const char *name, kiln_dataset **out,
                   kiln_err *e);
/* Sets the class names (copied). */
kiln_code data_set_classes(data_base *b, int64_t k, const char *const *names, kiln_err *e);
kiln_code data_add_skipped(data_base *b, const char *msg, kiln_err *e);
/* Finishes a base dataset: d->classes, d->has_masks, the split from labels (unless
 * keep_split), and the check that no class is empty. */
kiln_code data_finish(kiln_dataset *d, const kiln_data_opts *o, bool keep_split, kiln_err *e);
/* Any dataset's example with optional augmentation and normalization. */
kiln_code data_get(kiln_dataset *d, int64_t idx, const data_aug *aug, bool normalize, float *image,
                   int64_t *label, float *mask, bool *has_mask, kiln_err *e);
/* The shared tail of every get: crops/flips/resizes a decoded image (planar [0,1])
 * and mask into the outputs at out_w x out_h, normalizing when asked. */
kiln_code data_emit(const kiln_image *img, const kiln_image *mask, const data_aug *aug, bool normalize,
                    int out_w, int out_h, float *image, float *mask_out, kiln_err *e);

/* ---- layouts ---- */

bool data_looks_like_folders(const char *dir);
kiln_code data_open_cub(const char *dir, const kiln_data_opts *o, kiln_dataset **out, kiln_err *e);
kiln_code data_open_folders(const char *dir, const kiln_data_opts *o, kiln_dataset **out, kiln_err *e);
kiln_code data_open_csv(const char *path, const kiln_data_opts *o, kiln_dataset **out, kiln_err *e);
kiln_code data_open_synthetic(const char *name, const kiln_data_opts *o, kiln_dataset **out, kiln_err *e);

/* A file-backed example, for the layouts that read images from disk (files.c). */
typedef struct data_file {
  char *image;     /* path */
  char **masks;    /* paths merged by OR; n_masks may be 0 */
  int n_masks;
  bool has_box;
  float box[4];    /* x, y, w, h in source pixels */
  int64_t label;
  int8_t split;    /* -1: assigned by the stratified split */
  char *name;      /* short name */
} data_file;

typedef struct data_files {
  data_file *v;
  int64_t n, cap;
  char **skipped;  /* found bad while listing (skip_bad): "path: reason" */
  int64_t n_skipped, cap_skipped;
} data_files;

kiln_code data_files_push(data_files *fs, data_file *f, kiln_err *e); /* takes ownership of f's strings */
kiln_code data_files_skip(data_files *fs, const char *msg, kiln_err *e);
void data_file_clear(data_file *f);
void data_files_clear(data_files *fs);
/* Checks every file (headers; with skip_bad a full decode, skipping and counting the
 * bad ones) and builds the dataset.  Takes ownership of fs. */
kiln_code data_files_open(data_files *fs, const kiln_data_opts *o, const char *layout, const char *name,
                          int64_t n_classes, const char *const *class_names, kiln_dataset **out, kiln_err *e);

/* ---- strings and paths ---- */

char *data_join(const char *dir, const char *rel); /* dir/rel, or rel when absolute; NULL on OOM */
char *data_strndup(const char *s, size_t n);
bool data_is_dir(const char *path);
bool data_is_file(const char *path);
/* Reads a whole text file (limit 256 MiB), NUL-terminated. */
kiln_code data_read_text(const char *path, char **out, size_t *len, kiln_err *e);
/* Natural order ("a (2)" before "a (10)"), for stable file listings. */
int data_natcmp(const char *a, const char *b);
bool data_has_image_ext(const char *name);
/* Splits a comma-separated list into trimmed tokens (caller frees each and the array). */
kiln_code data_split_list(const char *s, char ***out, int64_t *n, kiln_err *e);
void data_free_strings(char **v, int64_t n);

#endif
