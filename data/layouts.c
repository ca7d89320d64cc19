/* layouts.c — readers of the on-disk layouts: CUB-200-2011, class folders (BUSI)
 * and CSV lists.  Each builds a list of files and hands it to data_files_open. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>

#include "data/internal.h"

/* Next line of a NUL-terminated buffer (NUL-terminated in place, "\r\n" handled);
 * NULL at the end. */
static char *next_line(char **p) {
  char *s = *p;
  if (!s || !*s) return NULL;
  char *nl = strchr(s, '\n');
  if (nl) {
    *nl = 0;
    *p = nl + 1;
  } else {
    *p = s + strlen(s);
  }
  size_t n = strlen(s);
  if (n && s[n - 1] == '\r') s[n - 1] = 0;
  return s;
}

static bool blank(const char *s) {
  while (isspace((unsigned char)*s)) s++;
  return !*s;
}

/* ---- CUB-200-2011 ---- */

#define CUB_MAX_ID 10000000

typedef struct cub_tables {
  int64_t max_id;
  char **path;     /* by image id */
  int64_t *cls;    /* by image id; 0 = none */
  float (*box)[4]; /* by image id */
  bool *has_box;
  int64_t max_class;
  char **cname;    /* by class id */
} cub_tables;

static void cub_free(cub_tables *t) {
  data_free_strings(t->path, t->path ? t->max_id + 1 : 0);
  kiln_free(t->cls);
  kiln_free(t->box);
  kiln_free(t->has_box);
  data_free_strings(t->cname, t->cname ? t->max_class + 1 : 0);
}

/* Reads "<id> <rest>" lines of dir/file into a callback; finds the largest id first. */
typedef kiln_code (*cub_line_fn)(cub_tables *t, const char *file, int line, int64_t id, const char *rest,
                                 kiln_err *e);

static kiln_code cub_read(const char *dir, const char *file, bool required, cub_tables *t, cub_line_fn fn,
                          int64_t *max_id, kiln_err *e) {
  char *path = data_join(dir, file), *text = NULL;
  if (!path) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  kiln_code rc = KILN_OK;
  if (!data_is_file(path)) {
    if (required) rc = kiln_errf(e, KILN_ERR_IO, "%s: missing (the CUB-200-2011 layout needs images.txt, "
                                             "image_class_labels.txt, classes.txt and images/)", path);
    goto done;
  }
  if ((rc = data_read_text(path, &text, NULL, e))) goto done;
  char *p = text, *s;
  int line = 0;
  while ((s = next_line(&p))) {
    line++;
    if (blank(s)) continue;
    char *end;
    long long id = strtoll(s, &end, 10);
    if (end == s || !isspace((unsigned char)*end) || id < 1 || id > CUB_MAX_ID) {
      rc = kiln_errf(e, KILN_ERR_PARSE, "%s:%d: expected '<id> <value>', got '%.60s'", path, line, s);
      goto done;
    }
    while (isspace((unsigned char)*end)) end++;
    size_t n = strlen(end);
    while (n && isspace((unsigned char)end[n - 1])) end[--n] = 0;
    if (max_id) {
      if (id > *max_id) *max_id = id;
    } else if ((rc = fn(t, path, line, id, end, e))) {
      goto done;
    }
  }
done:
  kiln_free(path);
  kiln_free(text);
  return rc;
}

static kiln_code cub_image_line(cub_tables *t, const char *file, int line, int64_t id, const char *rest,
                                kiln_err *e) {
  if (!*rest) return kiln_errf(e, KILN_ERR_PARSE, "%s:%d: image %lld has no path", file, line, (long long)id);
  if (t->path[id]) return kiln_errf(e, KILN_ERR_PARSE, "%s:%d: image id %lld appears twice", file, line, (long long)id);
  if (!(t->path[id] = kiln_strdup(rest))) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  return KILN_OK;
}

static kiln_code cub_label_line(cub_tables *t, const char *file, int line, int64_t id, const char *rest,
                                kiln_err *e) {
  char *end;
  long long c = strtoll(rest, &end, 10);
  if (end == rest || *end || c < 1 || c > t->max_class || !t->cname[c])
    return kiln_errf(e, KILN_ERR_INVALID, "%s:%d: class '%s' of image %lld is not in classes.txt", file, line, rest,
                     (long long)id);
  if (id > t->max_id || !t->path[id])
    return kiln_errf(e, KILN_ERR_INVALID, "%s:%d: image %lld is not in images.txt", file, line, (long long)id);
  t->cls[id] = c;
  return KILN_OK;
}

static kiln_code cub_class_line(cub_tables *t, const char *file, int line, int64_t id, const char *rest,
                                kiln_err *e) {
  if (t->cname[id])
    return kiln_errf(e, KILN_ERR_PARSE, "%s:%d: class id %lld appears twice", file, line, (long long)id);
  if (!(t->cname[id] = kiln_strdup(rest))) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  return KILN_OK;
}

static kiln_code cub_box_line(cub_tables *t, const char *file, int line, int64_t id, const char *rest, kiln_err *e) {
  float b[4];
  int used = 0;
  if (sscanf(rest, "%f %f %f %f%n", &b[0], &b[1], &b[2], &b[3], &used) != 4 || !blank(rest + used))
    return kiln_errf(e, KILN_ERR_PARSE, "%s:%d: expected '<id> <x> <y> <width> <height>'", file, line);
  if (id > t->max_id) return KILN_OK; /* a box of an image not listed: ignore */
  memcpy(t->box[id], b, sizeof b);
  t->has_box[id] = true;
  return KILN_OK;
}

/* A CUB class token: its id ("14"), its full name ("014.Indigo_Bunting") or the name
 * without the number ("Indigo_Bunting", any case). */
static int64_t cub_find_class(const cub_tables *t, const char *tok) {
  char *end;
  long long v = strtoll(tok, &end, 10);
  if (end != tok && !*end) return v >= 1 && v <= t->max_class && t->cname[v] ? v : 0;
  for (int64_t c = 1; c <= t->max_class; c++) {
    const char *n = t->cname[c];
    if (!n) continue;
    const char *dot = strchr(n, '.');
    if (!strcasecmp(n, tok) || (dot && !strcasecmp(dot + 1, tok))) return c;
  }
  return 0;
}

kiln_code data_open_cub(const char *dir, const kiln_data_opts *o, kiln_dataset **out, kiln_err *e) {
  *out = NULL;
  cub_tables t = {0};
  data_files fs = {0};
  char **toks = NULL, **names = NULL, *segdir = data_join(dir, "segmentations");
  int64_t ntok = 0, k = 0, *label_of = NULL;
  kiln_code rc = KILN_OK;
  if (!segdir) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  bool has_seg = data_is_dir(segdir);
  if ((rc = cub_read(dir, "images.txt", true, &t, NULL, &t.max_id, e)) ||
      (rc = cub_read(dir, "classes.txt", true, &t, NULL, &t.max_class, e)))
    goto done;
  t.path = kiln_calloc((size_t)t.max_id + 1, sizeof(char *));
  t.cls = kiln_calloc((size_t)t.max_id + 1, sizeof(int64_t));
  t.box = kiln_calloc((size_t)t.max_id + 1, sizeof *t.box);
  t.has_box = kiln_calloc((size_t)t.max_id + 1, sizeof(bool));
  t.cname = kiln_calloc((size_t)t.max_class + 1, sizeof(char *));
  label_of = kiln_malloc(sizeof(int64_t) * ((size_t)t.max_class + 1));
  if (!t.path || !t.cls || !t.box || !t.has_box || !t.cname || !label_of) {
    rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
    goto done;
  }
  if ((rc = cub_read(dir, "images.txt", true, &t, cub_image_line, NULL, e)) ||
      (rc = cub_read(dir, "classes.txt", true, &t, cub_class_line, NULL, e)) ||
      (rc = cub_read(dir, "image_class_labels.txt", true, &t, cub_label_line, NULL, e)) ||
      (rc = cub_read(dir, "bounding_boxes.txt", false, &t, cub_box_line, NULL, e)))
    goto done;
  for (int64_t c = 0; c <= t.max_class; c++) label_of[c] = -1;
  if (o->classes) {
    if ((rc = data_split_list(o->classes, &toks, &ntok, e))) goto done;
    if (!ntok) {
      rc = kiln_errf(e, KILN_ERR_INVALID, "--classes '%s' names no class", o->classes);
      goto done;
    }
    names = kiln_calloc((size_t)ntok, sizeof(char *));
    if (!names) {
      rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
      goto done;
    }
    for (int64_t i = 0; i < ntok; i++) {
      int64_t c = cub_find_class(&t, toks[i]);
      if (!c) {
        rc = kiln_errf(e, KILN_ERR_INVALID, "%s/classes.txt: no class '%s' (give CUB ids 1..%lld or names)", dir,
                       toks[i], (long long)t.max_class);
        goto done;
      }
      if (label_of[c] >= 0) {
        rc = kiln_errf(e, KILN_ERR_INVALID, "--classes lists class %lld twice", (long long)c);
        goto done;
      }
      label_of[c] = k;
      names[k++] = t.cname[c];
    }
  } else {
    names = kiln_calloc((size_t)t.max_class + 1, sizeof(char *));
    if (!names) {
      rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
      goto done;
    }
    for (int64_t c = 1; c <= t.max_class; c++)
      if (t.cname[c]) {
        label_of[c] = k;
        names[k++] = t.cname[c];
      }
  }
  for (int64_t id = 1; id <= t.max_id; id++) {
    if (!t.path[id]) continue;
    if (!t.cls[id]) {
      rc = kiln_errf(e, KILN_ERR_INVALID, "%s/image_class_labels.txt: image %lld (%s) has no class", dir,
                     (long long)id, t.path[id]);
      goto done;
    }
    if (label_of[t.cls[id]] < 0) continue;
    data_file f = {.label = label_of[t.cls[id]], .split = -1};
    char rel[4096];
    snprintf(rel, sizeof rel, "images/%s", t.path[id]);
    f.image = data_join(dir, rel);
    f.name = kiln_strdup(t.path[id]);
    if (!f.image || !f.name) {
      data_file_clear(&f);
      rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
      goto done;
    }
    if (has_seg) {
      snprintf(rel, sizeof rel, "%s", t.path[id]);
      char *dot = strrchr(rel, '.'), *slash = strrchr(rel, '/');
      if (dot && (!slash || dot > slash)) *dot = 0;
      strncat(rel, ".png", sizeof rel - strlen(rel) - 1);
      char *seg = data_join(segdir, rel);
      if (!seg) {
        data_file_clear(&f);
        rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
        goto done;
      }
      if (data_is_file(seg)) {
        f.masks = kiln_malloc(sizeof(char *));
        if (!f.masks) {
          kiln_free(seg);
          data_file_clear(&f);
          rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
          goto done;
        }
        f.masks[0] = seg;
        f.n_masks = 1;
      } else {
        kiln_free(seg);
      }
    }
    if (!f.n_masks && t.has_box[id]) {
      f.has_box = true;
      memcpy(f.box, t.box[id], sizeof f.box);
    }
    if ((rc = data_files_push(&fs, &f, e))) goto done;
  }
  rc = data_files_open(&fs, o, "CUB-200-2011", dir, k, (const char *const *)names, out, e);
done:
  data_files_clear(&fs);
  cub_free(&t);
  data_free_strings(toks, ntok);
  kiln_free(names); /* borrowed strings */
  kiln_free(label_of);
  kiln_free(segdir);
  return rc;
}

/* ---- class folders (BUSI) ---- */

static int natcmp_ptr(const void *a, const void *b) { return data_natcmp(*(char *const *)a, *(char *const *)b); }

/* Entries of a folder (no hidden ones), natural order; dirs_only picks folders. */
static kiln_code list_dir(const char *dir, bool dirs, char ***out, int64_t *n, kiln_err *e) {
  *out = NULL;
  *n = 0;
  DIR *dp = opendir(dir);
  if (!dp) return kiln_errf(e, KILN_ERR_IO, "%s: cannot open the folder", dir);
  int64_t cap = 0;
  char **v = NULL;
  kiln_code rc = KILN_OK;
  struct dirent *de;
  while ((de = readdir(dp))) {
    if (de->d_name[0] == '.') continue;
    char *full = data_join(dir, de->d_name);
    if (!full) {
      rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
      break;
    }
    bool is_dir = data_is_dir(full), keep = dirs ? is_dir : !is_dir && data_is_file(full);
    kiln_free(full);
    if (!keep) continue;
    if ((rc = kiln_grow((void **)&v, &cap, *n + 1, sizeof(char *), e))) break;
    if (!(v[*n] = kiln_strdup(de->d_name))) {
      rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
      break;
    }
    (*n)++;
  }
  closedir(dp);
  if (rc) {
    data_free_strings(v, *n);
    *n = 0;
    return rc;
  }
  if (*n) qsort(v, (size_t)*n, sizeof(char *), natcmp_ptr);
  *out = v;
  return KILN_OK;
}

/* If `file` is a mask ("<stem>_mask.<ext>" or "<stem>_mask_<k>.<ext>"), the length of
 * its stem; else -1. */
static ssize_t mask_stem(const char *file) {
  const char *dot = strrchr(file, '.');
  size_t n = dot ? (size_t)(dot - file) : strlen(file);
  /* strip "_<digits>" */
  size_t m = n;
  while (m && isdigit((unsigned char)file[m - 1])) m--;
  if (m < n && m && file[m - 1] == '_') m--;
  else m = n;
  if (m >= 5 && !strncasecmp(file + m - 5, "_mask", 5)) return (ssize_t)(m - 5);
  return -1;
}

static size_t stem_len(const char *file) {
  const char *dot = strrchr(file, '.');
  return dot ? (size_t)(dot - file) : strlen(file);
}

/* Counts the images of a class folder (without the masks). */
static int64_t count_images(const char *dir, kiln_err *e) {
  char **files;
  int64_t n, c = 0;
  if (list_dir(dir, false, &files, &n, e)) return -1;
  for (int64_t i = 0; i < n; i++) c += data_has_image_ext(files[i]) && mask_stem(files[i]) < 0;
  data_free_strings(files, n);
  return c;
}

bool data_looks_like_folders(const char *dir) {
  char **subs;
  int64_t n;
  kiln_err e = {0};
  if (list_dir(dir, true, &subs, &n, &e)) return false;
  bool any = false;
  for (int64_t i = 0; i < n && !any; i++) {
    char *full = data_join(dir, subs[i]);
    if (full) any = count_images(full, &e) > 0;
    kiln_free(full);
  }
  data_free_strings(subs, n);
  return any;
}

kiln_code data_open_folders(const char *dir, const kiln_data_opts *o, kiln_dataset **out, kiln_err *e) {
  *out = NULL;
  char **subs = NULL, **classes = NULL, **files = NULL;
  int64_t nsub = 0, ncls = 0, nfiles = 0;
  data_files fs = {0};
  kiln_code rc;
  if ((rc = list_dir(dir, true, &subs, &nsub, e))) return rc;
  if (o->classes) {
    if ((rc = data_split_list(o->classes, &classes, &ncls, e))) goto done;
    for (int64_t i = 0; i < ncls; i++) {
      bool found = false;
      for (int64_t j = 0; j < nsub; j++) found |= !strcmp(subs[j], classes[i]);
      for (int64_t j = 0; j < i; j++)
        if (!strcmp(classes[j], classes[i])) {
          rc = kiln_errf(e, KILN_ERR_INVALID, "--classes lists '%s' twice", classes[i]);
          goto done;
        }
      if (!found) {
        char list[512] = "";
        for (int64_t j = 0; j < nsub; j++)
          snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", j ? ", " : "", subs[j]);
        rc = kiln_errf(e, KILN_ERR_INVALID, "%s: no class folder '%s' (found: %s)", dir, classes[i], list);
        goto done;
      }
    }
  } else {
    classes = kiln_calloc((size_t)(nsub ? nsub : 1), sizeof(char *));
    if (!classes) {
      rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
      goto done;
    }
    for (int64_t j = 0; j < nsub; j++) {
      char *full = data_join(dir, subs[j]);
      int64_t c = full ? count_images(full, e) : -1;
      kiln_free(full);
      if (c < 0) {
        rc = e->code ? e->code : kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
        goto done;
      }
      if (c > 0 && !(classes[ncls++] = kiln_strdup(subs[j]))) {
        rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
        goto done;
      }
    }
  }
  if (!ncls) {
    rc = kiln_errf(e, KILN_ERR_INVALID, "%s: no class folder holds images", dir);
    goto done;
  }
  bool any_mask = false;
  for (int64_t k = 0; k < ncls; k++) {
    char *cdir = data_join(dir, classes[k]);
    if (!cdir) {
      rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
      goto done;
    }
    rc = list_dir(cdir, false, &files, &nfiles, e);
    kiln_free(cdir);
    if (rc) goto done;
    for (int64_t i = 0; i < nfiles; i++) any_mask |= data_has_image_ext(files[i]) && mask_stem(files[i]) >= 0;
    data_free_strings(files, nfiles);
    files = NULL;
  }
  for (int64_t k = 0; k < ncls; k++) {
    char *cdir = data_join(dir, classes[k]);
    if (!cdir || (rc = list_dir(cdir, false, &files, &nfiles, e))) {
      kiln_free(cdir);
      if (!rc) rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
      goto done;
    }
    bool *used = kiln_calloc((size_t)(nfiles ? nfiles : 1), sizeof(bool));
    if (!used) {
      kiln_free(cdir);
      rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
      goto done;
    }
    for (int64_t i = 0; i < nfiles && !rc; i++) {
      const char *im = files[i];
      if (!data_has_image_ext(im) || mask_stem(im) >= 0) continue;
      used[i] = true;
      size_t sl = stem_len(im);
      data_file f = {.label = k, .split = -1};
      char rel[4096];
      snprintf(rel, sizeof rel, "%s/%s", classes[k], im);
      f.image = data_join(cdir, im);
      f.name = kiln_strdup(rel);
      if (!f.image || !f.name) rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
      for (int64_t j = 0; j < nfiles && !rc; j++) {
        ssize_t ms = data_has_image_ext(files[j]) ? mask_stem(files[j]) : -1;
        if (ms != (ssize_t)sl || strncmp(files[j], im, sl)) continue;
        used[j] = true;
        char **nm = kiln_realloc(f.masks, sizeof(char *) * (size_t)(f.n_masks + 1));
        if (!nm || !(nm[f.n_masks] = data_join(cdir, files[j]))) {
          if (nm) f.masks = nm;
          rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
          break;
        }
        f.masks = nm;
        f.n_masks++;
      }
      if (!rc && any_mask && !f.n_masks) {
        /* a missing mask: bad input, reported here (or skipped and counted) */
        if (!o->skip_bad) {
          rc = kiln_errf(e, KILN_ERR_INVALID, "%s: no mask (expected %.*s_mask.png beside it; the other images "
                         "have masks; use --skip-bad to skip it)", f.image, (int)sl, im);
        } else {
          char msg[4200];
          snprintf(msg, sizeof msg, "%s: no mask", f.image);
          data_file_clear(&f);
          if ((rc = data_files_skip(&fs, msg, e))) break;
          continue;
        }
      }
      if (!rc) rc = data_files_push(&fs, &f, e);
      else data_file_clear(&f);
    }
    for (int64_t i = 0; i < nfiles && !rc; i++) {
      if (used[i] || !data_has_image_ext(files[i])) continue;
      if (!o->skip_bad) {
        rc = kiln_errf(e, KILN_ERR_INVALID, "%s/%s: a mask without an image (use --skip-bad to ignore it)", cdir,
                       files[i]);
      } else {
        char msg[4200];
        snprintf(msg, sizeof msg, "%s/%s: a mask without an image", cdir, files[i]);
        rc = data_files_skip(&fs, msg, e);
      }
    }
    kiln_free(used);
    kiln_free(cdir);
    data_free_strings(files, nfiles);
    files = NULL;
    if (rc) goto done;
  }
  rc = data_files_open(&fs, o, "class folders", dir, ncls, (const char *const *)classes, out, e);
done:
  data_files_clear(&fs);
  data_free_strings(subs, nsub);
  data_free_strings(classes, ncls);
  data_free_strings(files, nfiles);
  return rc;
}

/* ---- CSV ---- */

/* Splits one CSV record in place into fields (RFC 4180 quotes, no newlines inside). */
static int csv_fields(char *s, char **f, int max) {
  int n = 0;
  for (;;) {
    char *w = s, *start = s;
    if (*s == '"') {
      s++;
      for (;;) {
        if (*s == '"' && s[1] == '"') *w++ = '"', s += 2;
        else if (*s == '"') { s++; break; }
        else if (!*s) break;
        else *w++ = *s++;
      }
      while (*s && *s != ',') s++;
    } else {
      while (*s && *s != ',') *w++ = *s++;
    }
    char end = *s;
    *w = 0;
    /* trim spaces around unquoted values */
    while (isspace((unsigned char)*start)) start++;
    size_t len = strlen(start);
    while (len && isspace((unsigned char)start[len - 1])) start[--len] = 0;
    if (n < max) f[n] = start;
    n++;
    if (end != ',') break;
    s++;
  }
  return n;
}

static bool is_int(const char *s) {
  if (*s == '-' || *s == '+') s++;
  if (!isdigit((unsigned char)*s)) return false;
  while (isdigit((unsigned char)*s)) s++;
  return !*s;
}

/* An integer label's value, saturated: anything past DATA_MAX_CLASSES (or negative)
 * is refused by the caller, so the exact value of a huge one does not matter. */
static int64_t int_label(const char *s) {
  errno = 0;
  long long v = strtoll(s, NULL, 10);
  if (errno == ERANGE || v > DATA_MAX_CLASSES) return (int64_t)DATA_MAX_CLASSES + 1;
  return v < 0 ? -1 : (int64_t)v;
}

kiln_code data_open_csv(const char *path, const kiln_data_opts *o, kiln_dataset **out, kiln_err *e) {
  *out = NULL;
  char *text = NULL, *dir = NULL, **names = NULL, **toks = NULL;
  int64_t nnames = 0, cap_names = 0, ntok = 0;
  data_files fs = {0};
  kiln_code rc;
  if ((rc = data_read_text(path, &text, NULL, e))) return rc;
  const char *slash = strrchr(path, '/');
  dir = slash ? data_strndup(path, (size_t)(slash - path)) : kiln_strdup("");
  if (!dir) {
    rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
    goto done;
  }
  char *p = text, *s;
  if (!strncmp(p, "\xef\xbb\xbf", 3)) p += 3; /* UTF-8 BOM */
  int line = 0, col_img = -1, col_lab = -1, col_mask = -1, col_split = -1, ncols = 0;
  char *fv[64];
  while ((s = next_line(&p))) {
    line++;
    if (!blank(s)) break;
  }
  if (!s) {
    rc = kiln_errf(e, KILN_ERR_PARSE, "%s: empty (expected a header 'image,label[,mask][,split]')", path);
    goto done;
  }
  ncols = csv_fields(s, fv, 64);
  for (int i = 0; i < ncols && i < 64; i++) {
    if (!strcasecmp(fv[i], "image")) col_img = i;
    else if (!strcasecmp(fv[i], "label")) col_lab = i;
    else if (!strcasecmp(fv[i], "mask")) col_mask = i;
    else if (!strcasecmp(fv[i], "split")) col_split = i;
  }
  if (col_img < 0 || col_lab < 0 || ncols > 64) {
    rc = kiln_errf(e, KILN_ERR_PARSE, "%s:%d: the header must name the columns image,label[,mask][,split]", path, line);
    goto done;
  }
  /* first pass: are all labels integers? */
  char *rows = p;
  bool all_int = true;
  int64_t max_int = -1, rows_n = 0;
  {
    char *copy = kiln_strdup(rows), *q = copy, *r;
    if (!copy) {
      rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
      goto done;
    }
    int ln = line;
    while ((r = next_line(&q))) {
      ln++;
      if (blank(r)) continue;
      int nf = csv_fields(r, fv, 64);
      if (nf != ncols) {
        rc = kiln_errf(e, KILN_ERR_PARSE, "%s:%d: %d fields, the header has %d", path, ln, nf, ncols);
        break;
      }
      rows_n++;
      if (!is_int(fv[col_lab])) all_int = false;
      else if (int_label(fv[col_lab]) >= DATA_MAX_CLASSES && !o->classes) {
        rc = kiln_errf(e, KILN_ERR_LIMIT, "%s:%d: label %s: more than %d classes", path, ln, fv[col_lab],
                       DATA_MAX_CLASSES);
        break;
      } else if (int_label(fv[col_lab]) > max_int) max_int = int_label(fv[col_lab]);
    }
    kiln_free(copy);
    if (rc) goto done;
  }
  if (!rows_n) {
    rc = kiln_errf(e, KILN_ERR_INVALID, "%s: no rows after the header", path);
    goto done;
  }
  int64_t n_classes = 0;
  if (o->classes) {
    if ((rc = data_split_list(o->classes, &toks, &ntok, e))) goto done;
    n_classes = ntok;
  } else if (all_int) {
    n_classes = o->num_classes > 0 ? o->num_classes : max_int + 1;
  }
  if (n_classes > DATA_MAX_CLASSES) {
    rc = kiln_errf(e, KILN_ERR_LIMIT, "%s: %lld classes, more than the limit of %d", path, (long long)n_classes,
                   DATA_MAX_CLASSES);
    goto done;
  }
  while ((s = next_line(&rows))) {
    line++;
    if (blank(s)) continue;
    csv_fields(s, fv, 64);
    const char *lab = fv[col_lab];
    int64_t label = -1;
    if (!*lab) {
      rc = kiln_errf(e, KILN_ERR_PARSE, "%s:%d: empty label", path, line);
      goto done;
    }
    if (toks) {
      for (int64_t i = 0; i < ntok; i++)
        if (!strcmp(toks[i], lab)) label = i;
      if (label < 0) continue; /* not in the subset */
    } else if (all_int) {
      label = int_label(lab);
      if (label < 0 || label >= n_classes) {
        rc = kiln_errf(e, KILN_ERR_INVALID, "%s:%d: label %s is out of range [0, %lld)", path, line, lab,
                       (long long)n_classes);
        goto done;
      }
    } else {
      for (int64_t i = 0; i < nnames; i++)
        if (!strcmp(names[i], lab)) label = i;
      if (label < 0) {
        if ((rc = kiln_grow((void **)&names, &cap_names, nnames + 1, sizeof(char *), e))) goto done;
        if (!(names[nnames] = kiln_strdup(lab))) {
          rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
          goto done;
        }
        label = nnames++;
      }
    }
    if (!*fv[col_img]) {
      rc = kiln_errf(e, KILN_ERR_PARSE, "%s:%d: empty image path", path, line);
      goto done;
    }
    data_file f = {.label = label, .split = -1};
    f.image = data_join(dir, fv[col_img]);
    f.name = kiln_strdup(fv[col_img]);
    if (!f.image || !f.name) rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
    if (!rc && col_split >= 0) {
      const char *sp = fv[col_split];
      if (!strcasecmp(sp, "train")) f.split = KILN_SPLIT_TRAIN;
      else if (!strcasecmp(sp, "val") || !strcasecmp(sp, "valid") || !strcasecmp(sp, "validation"))
        f.split = KILN_SPLIT_VAL;
      else if (!strcasecmp(sp, "test")) f.split = KILN_SPLIT_TEST;
      else rc = kiln_errf(e, KILN_ERR_PARSE, "%s:%d: split '%s' is not train, val or test", path, line, sp);
    }
    if (!rc && col_mask >= 0 && *fv[col_mask]) { /* one or more masks separated by ';' */
      char *m = fv[col_mask];
      while (m && !rc) {
        char *semi = strchr(m, ';');
        if (semi) *semi = 0;
        while (isspace((unsigned char)*m)) m++;
        if (*m) {
          char **nm = kiln_realloc(f.masks, sizeof(char *) * (size_t)(f.n_masks + 1));
          if (!nm || !(nm[f.n_masks] = data_join(dir, m))) rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
          if (nm) f.masks = nm;
          if (!rc) f.n_masks++;
        }
        m = semi ? semi + 1 : NULL;
      }
    }
    if (rc) {
      data_file_clear(&f);
      goto done;
    }
    if ((rc = data_files_push(&fs, &f, e))) goto done;
  }
  if (toks) rc = data_files_open(&fs, o, "CSV", path, ntok, (const char *const *)toks, out, e);
  else if (all_int) rc = data_files_open(&fs, o, "CSV", path, n_classes, NULL, out, e);
  else rc = data_files_open(&fs, o, "CSV", path, nnames, (const char *const *)names, out, e);
done:
  data_files_clear(&fs);
  data_free_strings(names, nnames);
  data_free_strings(toks, ntok);
  kiln_free(text);
  kiln_free(dir);
  return rc;
}
