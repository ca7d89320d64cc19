/* fuzz_dataset.c — libFuzzer target: a dataset list (CSV: image,label[,mask][,split]) ->
 * kiln_dataset_open_spec, then a few examples of it and of its training view read.
 * The list sits in a per-process folder beside two small valid images it may name
 * (a.png, an RGB picture, and m.png, a mask) so rows can reach the image loaders. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/data.h"
#include "data/image.h"
#include "fuzz/fuzz.h"

static const char *fuzz_dir(void) {
  static char dir[256]; /* the fuzzer process's scratch folder; not library state */
  if (!dir[0]) {
    const char *t = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/kiln-fuzz-dataset-%ld", t && *t ? t : "/tmp", (long)getpid());
    mkdir(dir, 0777);
    uint8_t px[4 * 4 * 3], mk[4 * 4];
    for (int i = 0; i < 48; i++) px[i] = (uint8_t)(i * 37);
    for (int i = 0; i < 16; i++) mk[i] = i % 3 ? 255 : 0;
    char p[300];
    kiln_err e = {0};
    snprintf(p, sizeof p, "%s/a.png", dir);
    if (kiln_png_write(p, px, 4, 4, 3, &e)) abort();
    snprintf(p, sizeof p, "%s/m.png", dir);
    if (kiln_png_write(p, mk, 4, 4, 1, &e)) abort();
  }
  return dir;
}

static void read_some(kiln_dataset *d) {
  if (d->c < 1 || d->c > 3 || d->h < 1 || d->w < 1 || d->h * d->w > (1 << 16)) abort();
  float *img = malloc(sizeof(float) * (size_t)(d->c * d->h * d->w));
  float *mask = malloc(sizeof(float) * (size_t)(d->h * d->w));
  for (int64_t i = 0; i < d->n && i < 3; i++) {
    int64_t label = -1;
    bool has = false;
    kiln_err e = {0};
    kiln_code rc = d->get(d, i, img, &label, mask, &has, &e);
    fuzz_check_err(rc, &e, NULL);
    if (rc == KILN_OK && (label < 0 || label >= d->classes)) abort();
  }
  free(img);
  free(mask);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *dir = fuzz_dir();
  char path[300];
  snprintf(path, sizeof path, "%s/dataset.csv", dir);
  FILE *f = fopen(path, "wb");
  if (!f) abort();
  if (size && fwrite(data, 1, size, f) != size) abort();
  fclose(f);

  kiln_data_opts o = kiln_data_opts_default();
  o.height = o.width = 8;
  o.threads = 1;
  o.skip_bad = size & 1;
  kiln_dataset *all = NULL;
  kiln_err e = {0};
  kiln_code rc = kiln_dataset_open_spec(path, &o, &all, &e);
  fuzz_check_err(rc, &e, all);
  if (rc) return 0;
  read_some(all);
  kiln_dataset *train = NULL;
  kiln_err e2 = {0};
  rc = kiln_data_view(all, KILN_SPLIT_TRAIN, &o, &train, &e2);
  fuzz_check_err(rc, &e2, train);
  if (rc == KILN_OK) read_some(train);
  kiln_dataset_free(train);
  kiln_dataset_free(all);
  return 0;
}
