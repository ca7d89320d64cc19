/* files.c — the dataset behind every on-disk layout (CUB, class folders, CSV): a
 * list of image files with labels and masks (files merged by OR, or a bounding box),
 * checked when opened and decoded afresh on each get(). */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "data/internal.h"

typedef struct files_ds {
  data_base b;
  data_file *v;
  int64_t n;
} files_ds;

void data_file_clear(data_file *f) {
  kiln_free(f->image);
  data_free_strings(f->masks, f->n_masks);
  kiln_free(f->name);
  memset(f, 0, sizeof *f);
}

void data_files_clear(data_files *fs) {
  for (int64_t i = 0; i < fs->n; i++) data_file_clear(&fs->v[i]);
  kiln_free(fs->v);
  data_free_strings(fs->skipped, fs->n_skipped);
  memset(fs, 0, sizeof *fs);
}

kiln_code data_files_push(data_files *fs, data_file *f, kiln_err *e) {
  if (kiln_grow((void **)&fs->v, &fs->cap, fs->n + 1, sizeof(data_file), e)) {
    data_file_clear(f);
    return KILN_ERR_NOMEM;
  }
  fs->v[fs->n++] = *f;
  memset(f, 0, sizeof *f);
  return KILN_OK;
}

kiln_code data_files_skip(data_files *fs, const char *msg, kiln_err *e) {
  KILN_TRY(kiln_grow((void **)&fs->skipped, &fs->cap_skipped, fs->n_skipped + 1, sizeof(char *), e));
  if (!(fs->skipped[fs->n_skipped] = kiln_strdup(msg))) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  fs->n_skipped++;
  return KILN_OK;
}

static void files_free(void *impl) {
  files_ds *f = impl;
  for (int64_t i = 0; i < f->n; i++) {
    f->v[i].name = NULL; /* owned by b.names */
    data_file_clear(&f->v[i]);
  }
  kiln_free(f->v);
}

/* Decodes the mask files of `x` into one [0,1] plane (the maximum of them) or draws
 * its box; checks the masks have the image's size. */
static kiln_code load_mask(const data_file *x, int w, int h, kiln_image *mk, kiln_err *e) {
  if (!x->n_masks) {
    KILN_TRY(kiln_image_alloc(mk, w, h, 1, e));
    float bx = x->box[0], by = x->box[1], bw = x->box[2], bh = x->box[3];
    for (int y = 0; y < h; y++)
      for (int i = 0; i < w; i++) {
        float cx = (float)i + 0.5f, cy = (float)y + 0.5f;
        mk->px[(int64_t)y * w + i] = cx >= bx && cx <= bx + bw && cy >= by && cy <= by + bh ? 1.0f : 0.0f;
      }
    return KILN_OK;
  }
  for (int j = 0; j < x->n_masks; j++) {
    kiln_image m;
    KILN_TRY(kiln_image_read(x->masks[j], 1, &m, e));
    if (m.w != w || m.h != h) {
      kiln_code rc = kiln_errf(e, KILN_ERR_SHAPE, "%s: mask is %dx%d but its image %s is %dx%d", x->masks[j], m.w,
                               m.h, x->image, w, h);
      kiln_image_release(&m);
      return rc;
    }
    if (j == 0) {
      *mk = m;
    } else {
      for (int64_t i = 0; i < (int64_t)w * h; i++)
        if (m.px[i] > mk->px[i]) mk->px[i] = m.px[i];
      kiln_image_release(&m);
    }
  }
  return KILN_OK;
}

static kiln_code files_get(kiln_dataset *d, int64_t idx, const data_aug *aug, bool normalize, float *image,
                           int64_t *label, float *mask, bool *has_mask, kiln_err *e) {
  files_ds *f = d->impl;
  const data_file *x = &f->v[idx];
  bool has = x->n_masks > 0 || x->has_box;
  kiln_image img = {0}, mk = {0};
  kiln_code rc;
  if ((rc = kiln_image_read(x->image, 3, &img, e))) return rc;
  if (mask && has && (rc = load_mask(x, img.w, img.h, &mk, e))) goto done;
  rc = data_emit(&img, mask && has ? &mk : NULL, aug, normalize, (int)d->w, (int)d->h, image, mask, e);
  *label = x->label;
  *has_mask = has;
done:
  kiln_image_release(&img);
  kiln_image_release(&mk);
  return rc;
}

/* ---- checking the files when opening ---- */

typedef struct check_job {
  const data_files *fs;
  bool full;
  int t, nt;
  char **errors; /* per entry, NULL when fine */
  kiln_code *codes;
  bool nomem;
} check_job;

static kiln_code check_entry(const data_file *x, bool full, kiln_err *e) {
  int w, h;
  KILN_TRY(kiln_image_info(x->image, &w, &h, e));
  for (int j = 0; j < x->n_masks; j++) {
    int mw, mh;
    KILN_TRY(kiln_image_info(x->masks[j], &mw, &mh, e));
    if (mw != w || mh != h)
      return kiln_errf(e, KILN_ERR_SHAPE, "%s: mask is %dx%d but its image %s is %dx%d", x->masks[j], mw, mh,
                       x->image, w, h);
  }
  if (x->has_box && (x->box[2] <= 0 || x->box[3] <= 0))
    return kiln_errf(e, KILN_ERR_INVALID, "%s: empty bounding box %gx%g", x->image, x->box[2], x->box[3]);
  if (full) {
    kiln_image img, mk = {0};
    KILN_TRY(kiln_image_read(x->image, 3, &img, e));
    kiln_code rc = x->n_masks ? load_mask(x, img.w, img.h, &mk, e) : KILN_OK;
    kiln_image_release(&img);
    kiln_image_release(&mk);
    return rc;
  }
  return KILN_OK;
}

static void *check_main(void *p) {
  check_job *j = p;
  for (int64_t i = j->t; i < j->fs->n; i += j->nt) {
    kiln_err e = {0};
    if ((j->codes[i] = check_entry(&j->fs->v[i], j->full, &e))) {
      j->errors[i] = kiln_strdup(e.msg);
      if (!j->errors[i] || j->codes[i] == KILN_ERR_NOMEM) j->nomem = true;
    }
  }
  return NULL;
}

kiln_code data_files_open(data_files *fs, const kiln_data_opts *o, const char *layout, const char *name,
                          int64_t n_classes, const char *const *class_names, kiln_dataset **out, kiln_err *e) {
  *out = NULL;
  kiln_code rc = KILN_OK;
  kiln_dataset *d = NULL;
  int nt = o->threads > 0 ? o->threads : 4;
  if (nt > 64) nt = 64;
  if (fs->n < nt * 8) nt = 1;
  char **errors = kiln_calloc((size_t)(fs->n ? fs->n : 1), sizeof(char *));
  kiln_code *codes = kiln_calloc((size_t)(fs->n ? fs->n : 1), sizeof(kiln_code));
  check_job jobs[64];
  pthread_t th[64];
  bool started[64] = {false};
  if (!errors || !codes) {
    rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
    goto done;
  }
  for (int t = 0; t < nt; t++) {
    jobs[t] = (check_job){.fs = fs, .full = o->skip_bad, .t = t, .nt = nt, .errors = errors, .codes = codes};
    if (t > 0 && pthread_create(&th[t], NULL, check_main, &jobs[t]) == 0) started[t] = true;
  }
  check_main(&jobs[0]);
  for (int t = 1; t < nt; t++) {
    if (started[t]) pthread_join(th[t], NULL);
    else check_main(&jobs[t]);
  }
  int64_t bad = 0;
  for (int t = 0; t < nt; t++)
    if (jobs[t].nomem) {
      rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
      goto done;
    }
  for (int64_t i = 0; i < fs->n; i++)
    if (errors[i]) {
      if (!o->skip_bad) {
        rc = kiln_errf(e, codes[i], "%s (use --skip-bad to skip bad files)", errors[i]);
        goto done;
      }
      bad++;
    }
  int64_t n = fs->n - bad;
  if ((rc = data_new(sizeof(files_ds), n, layout, name, &d, e))) goto done;
  files_ds *f = d->impl;
  data_base *b = &f->b;
  b->get_ex = files_get;
  b->free_impl = files_free;
  b->found = fs->n + fs->n_skipped;
  for (int64_t i = 0; i < fs->n_skipped; i++)
    if ((rc = data_add_skipped(b, fs->skipped[i], e))) goto done;
  f->v = kiln_calloc((size_t)(n ? n : 1), sizeof(data_file));
  if (!f->v) {
    rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
    goto done;
  }
  if ((rc = data_set_classes(b, n_classes, class_names, e))) goto done;
  bool all_split = true, any_split = false;
  for (int64_t i = 0, k = 0; i < fs->n; i++) {
    if (errors[i]) {
      if ((rc = data_add_skipped(b, errors[i], e))) goto done;
      continue;
    }
    data_file *x = &fs->v[i];
    b->labels[k] = x->label;
    b->mask_avail[k] = x->n_masks > 0 || x->has_box;
    b->box_masks += !x->n_masks && x->has_box;
    b->split[k] = x->split;
    b->names[k] = x->name;
    all_split &= x->split >= 0;
    any_split |= x->split >= 0;
    f->v[k++] = *x;
    f->n = k;
    memset(x, 0, sizeof *x);
  }
  if (any_split && !all_split) {
    rc = kiln_errf(e, KILN_ERR_INVALID, "%s: some examples have a split and some do not", name);
    goto done;
  }
  rc = data_finish(d, o, all_split && n > 0, e);
done:
  for (int64_t i = 0; errors && i < fs->n; i++) kiln_free(errors[i]);
  kiln_free(errors);
  kiln_free(codes);
  data_files_clear(fs);
  if (rc) {
    kiln_dataset_free(d);
    return rc;
  }
  *out = d;
  return KILN_OK;
}
