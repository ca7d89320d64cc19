/* spec.c — opening a dataset from a spec string (layout auto-detection), the
 * split views with partial masks and augmentation, summaries, and export to the
 * CSV layout. */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/internal.h"

static const char *const layouts_help =
    "a dataset is one of: synthetic:shapes or synthetic:ultrasound (built in); a CUB-200-2011 folder "
    "(images.txt, image_class_labels.txt, classes.txt, images/, optional bounding_boxes.txt and "
    "segmentations/); a folder of class folders like BUSI (benign/, malignant/, normal/ holding "
    "'name (k).png' and 'name (k)_mask.png'); a CSV list (FILE.csv or a folder with dataset.csv, header "
    "image,label[,mask][,split]); a tensor folder (images.npy, labels.npy[, masks.npy])";

/* ---- tensor folders, wrapped so that they carry a split like the others ---- */

typedef struct wrap_ds {
  data_base b;
  kiln_dataset *inner;
} wrap_ds;

static void wrap_free(void *impl) { kiln_dataset_free(((wrap_ds *)impl)->inner); }

static kiln_code wrap_get(kiln_dataset *d, int64_t idx, const data_aug *aug, bool normalize, float *image,
                          int64_t *label, float *mask, bool *has_mask, kiln_err *e) {
  return data_get(((wrap_ds *)d->impl)->inner, idx, aug, normalize, image, label, mask, has_mask, e);
}

static kiln_code open_tensors(const char *dir, const kiln_data_opts *o, kiln_dataset **out, kiln_err *e) {
  kiln_dataset *in, *d;
  KILN_TRY(kiln_dataset_open_tensors(dir, &in, e));
  kiln_code rc = data_new(sizeof(wrap_ds), in->n, "tensor folder", dir, &d, e);
  if (rc) {
    kiln_dataset_free(in);
    return rc;
  }
  wrap_ds *w = d->impl;
  w->inner = in;
  w->b.get_ex = wrap_get;
  w->b.free_impl = wrap_free;
  w->b.found = in->n;
  d->c = in->c, d->h = in->h, d->w = in->w;
  if ((rc = kiln_data_meta(in, w->b.labels, w->b.mask_avail, NULL, e)) ||
      (rc = data_set_classes(&w->b, in->classes, NULL, e)) || (rc = data_finish(d, o, false, e))) {
    kiln_dataset_free(d);
    return rc;
  }
  *out = d;
  return KILN_OK;
}

kiln_code kiln_dataset_open_spec(const char *spec, const kiln_data_opts *o, kiln_dataset **out, kiln_err *e) {
  *out = NULL;
  kiln_data_opts def = kiln_data_opts_default();
  if (!o) o = &def;
  if (o->height < 1 || o->width < 1 || o->height > 16384 || o->width > 16384)
    return kiln_errf(e, KILN_ERR_INVALID, "image size %lldx%lld is out of range", (long long)o->width,
                     (long long)o->height);
  if (!strncmp(spec, "synthetic:", 10)) return data_open_synthetic(spec + 10, o, out, e);
  if (data_is_file(spec)) {
    const char *dot = strrchr(spec, '.');
    if (dot && !strcasecmp(dot, ".csv")) return data_open_csv(spec, o, out, e);
    return kiln_errf(e, KILN_ERR_INVALID, "%s: not a dataset (%s)", spec, layouts_help);
  }
  if (!data_is_dir(spec))
    return kiln_errf(e, KILN_ERR_IO, "%s: no such file or folder (%s)", spec, layouts_help);
  static const char *const probes[] = {"images.npy", "images.txt", "dataset.csv"};
  for (int i = 0; i < 3; i++) {
    char *p = data_join(spec, probes[i]);
    if (!p) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
    bool hit = data_is_file(p);
    kiln_code rc = KILN_OK;
    if (hit) rc = i == 0 ? open_tensors(spec, o, out, e) : i == 1 ? data_open_cub(spec, o, out, e)
                                                                  : data_open_csv(p, o, out, e);
    kiln_free(p);
    if (hit) return rc;
  }
  if (data_looks_like_folders(spec)) return data_open_folders(spec, o, out, e);
  return kiln_errf(e, KILN_ERR_INVALID, "%s: no dataset layout fits this folder; %s", spec, layouts_help);
}

/* ---- views ---- */

typedef struct view_ds {
  data_base b;
  int64_t *idx; /* base index of each example */
  bool augment;
  data_aug aug; /* seed filled per example */
  uint64_t seed;
  atomic_int epoch;
} view_ds;

static void view_free(void *impl) { kiln_free(((view_ds *)impl)->idx); }

/* Without augmentation (raw gets, export): the base example, with the mask dropped
 * when this view does not keep it. */
static kiln_code view_get_ex(kiln_dataset *d, int64_t i, const data_aug *aug, bool normalize, float *image,
                             int64_t *label, float *mask, bool *has_mask, kiln_err *e) {
  view_ds *v = d->impl;
  bool has = false;
  KILN_TRY(data_get(v->b.base, v->idx[i], aug, normalize, image, label, mask, &has, e));
  *has_mask = has && v->b.mask_avail[i];
  if (mask && !*has_mask) memset(mask, 0, sizeof(float) * (size_t)(d->h * d->w));
  return KILN_OK;
}

static kiln_code view_get(kiln_dataset *d, int64_t i, float *image, int64_t *label, float *mask, bool *has_mask,
                          kiln_err *e) {
  view_ds *v = d->impl;
  if (i < 0 || i >= d->n) return kiln_errf(e, KILN_ERR_INVALID, "%s: example %lld out of range", d->name, (long long)i);
  if (!v->augment) return view_get_ex(d, i, NULL, true, image, label, mask, has_mask, e);
  data_aug a = v->aug;
  a.seed = data_seed3(v->seed ^ 0xa11a11ull, (uint64_t)atomic_load(&v->epoch), (uint64_t)v->idx[i]);
  return view_get_ex(d, i, &a, true, image, label, mask, has_mask, e);
}

static bool is_view(const kiln_dataset *d) { return data_is_ours(d) && data_hdr(d)->get_ex == view_get_ex; }

void kiln_data_view_set_epoch(kiln_dataset *d, int epoch) {
  if (is_view(d)) atomic_store(&((view_ds *)d->impl)->epoch, epoch);
}

static const char *split_name(int s) {
  return s == KILN_SPLIT_TRAIN ? "train" : s == KILN_SPLIT_VAL ? "val" : s == KILN_SPLIT_TEST ? "test" : "all";
}

kiln_code kiln_data_view(kiln_dataset *base, kiln_split which, const kiln_data_opts *o, kiln_dataset **out,
                         kiln_err *e) {
  *out = NULL;
  kiln_data_opts def = kiln_data_opts_default();
  if (!o) o = &def;
  if (!(o->loc_ratio >= 0 && o->loc_ratio <= 1))
    return kiln_errf(e, KILN_ERR_INVALID, "loc ratio %g must lie in [0, 1]", o->loc_ratio);
  if (o->augment && which == KILN_SPLIT_TRAIN &&
      (!(o->scale_min > 0 && o->scale_min <= o->scale_max && o->scale_max <= 1) ||
       !(o->ratio_min > 0 && o->ratio_min <= o->ratio_max) || !(o->flip_p >= 0 && o->flip_p <= 1)))
    return kiln_errf(e, KILN_ERR_INVALID, "augmentation needs 0 < scale_min <= scale_max <= 1, 0 < ratio_min <= "
                     "ratio_max and flip probability in [0, 1]");
  int64_t n = base->n;
  size_t m = (size_t)(n ? n : 1);
  int64_t *labels = kiln_malloc(sizeof(int64_t) * m);
  bool *has = kiln_malloc(sizeof(bool) * m), *keep = kiln_malloc(sizeof(bool) * m);
  int8_t *split = kiln_malloc(m);
  kiln_dataset *d = NULL;
  kiln_code rc = KILN_OK;
  if (!labels || !has || !keep || !split) {
    rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
    goto done;
  }
  if ((rc = kiln_data_meta(base, labels, has, split, e))) goto done;
  if (!data_is_ours(base) && (rc = kiln_data_split(labels, n, o->seed, o->val_frac, o->test_frac, split, e)))
    goto done;
  if (which == KILN_SPLIT_TRAIN) kiln_data_loc_select(split, has, n, o->loc_ratio, o->seed, keep);
  else memcpy(keep, has, sizeof(bool) * m);
  int64_t count = 0;
  for (int64_t i = 0; i < n; i++) count += which == KILN_SPLIT_ALL || split[i] == (int8_t)which;
  char name[512];
  snprintf(name, sizeof name, "%s [%s]", base->name ? base->name : "dataset", split_name(which));
  if ((rc = data_new(sizeof(view_ds), count, "view", name, &d, e))) goto done;
  view_ds *v = d->impl;
  v->b.get_ex = view_get_ex;
  v->b.free_impl = view_free;
  v->b.base = base;
  v->b.which = which;
  v->b.found = count;
  d->get = view_get;
  v->idx = kiln_malloc(sizeof(int64_t) * (size_t)(count ? count : 1));
  if (!v->idx) {
    rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
    goto done;
  }
  for (int64_t i = 0, k = 0; i < n; i++) {
    if (which != KILN_SPLIT_ALL && split[i] != (int8_t)which) continue;
    v->idx[k] = i;
    v->b.labels[k] = labels[i];
    v->b.mask_avail[k] = keep[i];
    v->b.split[k] = split[i];
    const char *nm = kiln_data_example_name(base, i);
    if (nm && !(v->b.names[k] = kiln_strdup(nm))) {
      rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
      goto done;
    }
    if (keep[i]) d->has_masks = true;
    k++;
  }
  int64_t classes = base->classes;
  const char **cn = kiln_calloc((size_t)(classes ? classes : 1), sizeof(char *));
  if (!cn) {
    rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
    goto done;
  }
  for (int64_t k = 0; k < classes; k++) cn[k] = kiln_data_class_name(base, k);
  rc = data_set_classes(&v->b, classes, cn, e);
  kiln_free(cn);
  if (rc) goto done;
  d->classes = classes;
  d->c = base->c, d->h = base->h, d->w = base->w;
  v->seed = o->seed;
  v->augment = which == KILN_SPLIT_TRAIN && o->augment;
  v->aug = (data_aug){.flip_p = o->flip_p, .crop = o->crop, .scale_min = o->scale_min, .scale_max = o->scale_max,
                      .ratio_min = o->ratio_min, .ratio_max = o->ratio_max};
  atomic_init(&v->epoch, 0);
done:
  kiln_free(labels);
  kiln_free(has);
  kiln_free(keep);
  kiln_free(split);
  if (rc) {
    kiln_dataset_free(d);
    return rc;
  }
  *out = d;
  return KILN_OK;
}

kiln_code kiln_data_open_splits(const char *spec, const kiln_data_opts *o, kiln_dataset **base,
                                kiln_dataset **train, kiln_dataset **val, kiln_dataset **test, kiln_err *e) {
  *base = *train = *val = *test = NULL;
  kiln_code rc;
  if ((rc = kiln_dataset_open_spec(spec, o, base, e))) return rc;
  if ((rc = kiln_data_view(*base, KILN_SPLIT_TRAIN, o, train, e)) ||
      (rc = kiln_data_view(*base, KILN_SPLIT_VAL, o, val, e)) ||
      (rc = kiln_data_view(*base, KILN_SPLIT_TEST, o, test, e))) {
    kiln_dataset_free(*train);
    kiln_dataset_free(*val);
    kiln_dataset_free(*test);
    kiln_dataset_free(*base);
    *base = *train = *val = *test = NULL;
  }
  return rc;
}

/* ---- summary ---- */

#define APPEND(...) (void)(used < n ? used += (size_t)snprintf(buf + used, n - used, __VA_ARGS__) : 0)

void kiln_data_summary(kiln_dataset *d, char *buf, size_t n) {
  size_t used = 0;
  if (!n) return;
  buf[0] = 0;
  if (!data_is_ours(d)) {
    APPEND("%s: %lld examples of %lldx%lldx%lld, %lld classes%s\n", d->name ? d->name : "dataset", (long long)d->n,
           (long long)d->c, (long long)d->h, (long long)d->w, (long long)d->classes,
           d->has_masks ? ", with masks" : "");
    return;
  }
  data_base *b = data_hdr(d);
  int64_t masks = 0, per[4] = {0};
  for (int64_t i = 0; i < b->n; i++)
    masks += b->mask_avail[i], per[b->split[i] >= 0 && b->split[i] < 3 ? b->split[i] : 3]++;
  const char *layout = b->base ? "view" : b->layout;
  if (!strcmp(layout, d->name)) APPEND("%s", d->name);
  else APPEND("%s (%s)", d->name, layout);
  APPEND(": %lld examples of %lldx%lld, %lld classes, %lld with a mask", (long long)b->n, (long long)d->w,
         (long long)d->h, (long long)b->n_classes, (long long)masks);
  if (b->box_masks) APPEND(" (%lld from bounding boxes)", (long long)b->box_masks);
  APPEND("\n  split: %lld train, %lld val, %lld test\n", (long long)per[0], (long long)per[1], (long long)per[2]);
  APPEND("  %-28s %7s %6s %6s %7s\n", "class", "train", "val", "test", "masks");
  for (int64_t k = 0; k < b->n_classes; k++) {
    int64_t c[3] = {0}, mk = 0;
    for (int64_t i = 0; i < b->n; i++)
      if (b->labels[i] == k) {
        if (b->split[i] >= 0 && b->split[i] < 3) c[b->split[i]]++;
        mk += b->mask_avail[i];
      }
    APPEND("  %-28.28s %7lld %6lld %6lld %7lld\n", b->class_names[k], (long long)c[0], (long long)c[1],
           (long long)c[2], (long long)mk);
  }
  const char *const *sk;
  int64_t ns = kiln_data_skipped(d, &sk);
  if (ns) {
    APPEND("  skipped %lld bad file%s:\n", (long long)ns, ns == 1 ? "" : "s");
    for (int64_t i = 0; i < ns && i < 20; i++) APPEND("    %s\n", sk[i]);
    if (ns > 20) APPEND("    ... and %lld more\n", (long long)(ns - 20));
  }
  if (used >= n && n > 4) memcpy(buf + n - 4, "...", 4);
}

/* ---- export ---- */

static kiln_code mkdir_p(const char *path, kiln_err *e) {
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s", path);
  for (char *p = tmp + 1; *p; p++)
    if (*p == '/') {
      *p = 0;
      if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
        return kiln_errf(e, KILN_ERR_IO, "%s: cannot create the folder (%s)", tmp, strerror(errno));
      *p = '/';
    }
  if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
    return kiln_errf(e, KILN_ERR_IO, "%s: cannot create the folder (%s)", tmp, strerror(errno));
  if (!data_is_dir(tmp)) return kiln_errf(e, KILN_ERR_IO, "%s: exists and is not a folder", tmp);
  return KILN_OK;
}

static void csv_field(FILE *f, const char *s) {
  if (!strpbrk(s, ",\"\n\r") && s[0] != ' ' && (!*s || s[strlen(s) - 1] != ' ')) {
    fputs(s, f);
    return;
  }
  fputc('"', f);
  for (; *s; s++) {
    if (*s == '"') fputc('"', f);
    fputc(*s, f);
  }
  fputc('"', f);
}

typedef struct order_key {
  int64_t label, idx;
} order_key;

static int order_cmp(const void *a, const void *b) {
  const order_key *x = a, *y = b;
  if (x->label != y->label) return x->label < y->label ? -1 : 1;
  return x->idx < y->idx ? -1 : x->idx > y->idx;
}

kiln_code kiln_data_export(kiln_dataset *d, const char *dir, kiln_err *e) {
  char path[4096], tmp[4200];
  snprintf(path, sizeof path, "%s/images", dir);
  KILN_TRY(mkdir_p(path, e));
  snprintf(path, sizeof path, "%s/masks", dir);
  KILN_TRY(mkdir_p(path, e));
  int64_t n = d->n, hw = d->h * d->w;
  size_t m = (size_t)(n ? n : 1);
  int64_t *labels = kiln_malloc(sizeof(int64_t) * m);
  int8_t *split = kiln_malloc(m);
  order_key *ord = kiln_malloc(sizeof(order_key) * m);
  float *img = kiln_malloc(sizeof(float) * (size_t)(d->c * hw)), *mask = kiln_malloc(sizeof(float) * (size_t)hw);
  uint8_t *pix = kiln_malloc((size_t)(d->c * hw));
  FILE *f = NULL;
  kiln_code rc = KILN_OK;
  if (!labels || !split || !ord || !img || !mask || !pix) {
    rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
    goto done;
  }
  if (d->c != 1 && d->c != 3) {
    rc = kiln_errf(e, KILN_ERR_UNSUPPORTED, "%s: cannot write images of %lld channels as PNG", d->name,
                   (long long)d->c);
    goto done;
  }
  if ((rc = kiln_data_meta(d, labels, NULL, split, e))) goto done;
  bool with_split = data_is_ours(d);
  for (int64_t i = 0; i < n; i++) {
    ord[i] = (order_key){labels[i], i};
    if (split[i] < 0 || split[i] > 2) with_split = false;
  }
  qsort(ord, (size_t)n, sizeof *ord, order_cmp);
  snprintf(path, sizeof path, "%s/dataset.csv", dir);
  snprintf(tmp, sizeof tmp, "%s.tmpXXXXXX", path);
  int fd = mkstemp(tmp);
  if (fd < 0 || !(f = fdopen(fd, "w"))) {
    if (fd >= 0) close(fd), unlink(tmp);
    rc = kiln_errf(e, KILN_ERR_IO, "%s: cannot create (%s)", path, strerror(errno));
    goto done;
  }
  fchmod(fd, 0644);
  fprintf(f, "image,label,mask%s\n", with_split ? ",split" : "");
  for (int64_t j = 0; j < n && !rc; j++) {
    int64_t i = ord[j].idx, label;
    bool has = false;
    if ((rc = kiln_data_get_raw(d, i, img, &label, mask, &has, e))) break;
    char rel_img[64], rel_mask[64] = "", full[4200];
    snprintf(rel_img, sizeof rel_img, "images/%05lld.png", (long long)i);
    snprintf(full, sizeof full, "%s/%s", dir, rel_img);
    kiln_image_to_u8(img, (int)d->c, (int)d->w, (int)d->h, pix);
    if ((rc = kiln_png_write(full, pix, (int)d->w, (int)d->h, (int)d->c, e))) break;
    if (has) {
      snprintf(rel_mask, sizeof rel_mask, "masks/%05lld.png", (long long)i);
      snprintf(full, sizeof full, "%s/%s", dir, rel_mask);
      kiln_image_to_u8(mask, 1, (int)d->w, (int)d->h, pix);
      if ((rc = kiln_png_write(full, pix, (int)d->w, (int)d->h, 1, e))) break;
    }
    const char *cname = kiln_data_class_name(d, label);
    char num[32];
    snprintf(num, sizeof num, "%lld", (long long)label);
    /* a numeric class name other than the label's number would read back as that number */
    if (cname && cname[strspn(cname, "0123456789")] == 0 && strcmp(cname, num)) cname = NULL;
    csv_field(f, rel_img);
    fputc(',', f);
    csv_field(f, cname ? cname : num);
    fputc(',', f);
    csv_field(f, rel_mask);
    if (with_split) fprintf(f, ",%s", split_name(split[i]));
    fputc('\n', f);
  }
  if (fflush(f) != 0 && !rc) rc = kiln_errf(e, KILN_ERR_IO, "%s: write failed (%s)", path, strerror(errno));
  if (fclose(f) != 0 && !rc) rc = kiln_errf(e, KILN_ERR_IO, "%s: write failed (%s)", path, strerror(errno));
  if (!rc && rename(tmp, path) != 0) rc = kiln_errf(e, KILN_ERR_IO, "%s: cannot rename (%s)", path, strerror(errno));
  if (rc) unlink(tmp);
done:
  kiln_free(labels);
  kiln_free(split);
  kiln_free(ord);
  kiln_free(img);
  kiln_free(mask);
  kiln_free(pix);
  return rc;
}
