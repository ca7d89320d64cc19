/* make_tensor_dataset.c — writes a small synthetic tensor dataset for CLI tests
 * (kiln train --data DIR): images.npy [N,3,S,S], labels.npy [N], masks.npy [N,1,S,S]
 * and mask_present.npy [N].  Class k is a bright square at a class-specific place on
 * noise, and its mask is the square; every second image keeps its mask.
 *   make_tensor_dataset DIR N SIZE CLASSES */
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "frontend/onnx.h"

static int save(kiln_tensor *t, const char *dir, const char *name) {
  char p[1024];
  kiln_err e = {0};
  snprintf(p, sizeof p, "%s/%s", dir, name);
  if (kiln_tensor_save_npy(t, p, &e)) {
    fprintf(stderr, "make_tensor_dataset: %s\n", e.msg);
    return 1;
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: make_tensor_dataset DIR N SIZE CLASSES\n");
    return 2;
  }
  const char *dir = argv[1];
  int64_t n = atoll(argv[2]), s = atoll(argv[3]), k = atoll(argv[4]);
  if (n < 1 || s < 8 || k < 1 || k > 16) {
    fprintf(stderr, "make_tensor_dataset: need N >= 1, SIZE >= 8, 1 <= CLASSES <= 16\n");
    return 2;
  }
  kiln_err e = {0};
  kiln_shape si = {.rank = 4, .d = {n, 3, s, s}}, sl = {.rank = 1, .d = {n}}, sm = {.rank = 4, .d = {n, 1, s, s}};
  kiln_tensor *im = NULL, *lb = NULL, *mk = NULL, *pr = NULL;
  if (kiln_tensor_new(KILN_F32, &si, &im, &e) || kiln_tensor_new(KILN_I64, &sl, &lb, &e) ||
      kiln_tensor_new(KILN_F32, &sm, &mk, &e) || kiln_tensor_new(KILN_F32, &sl, &pr, &e)) {
    fprintf(stderr, "make_tensor_dataset: %s\n", e.msg);
    return 1;
  }
  uint64_t r = 42;
  int64_t side = s / 4;
  for (int64_t i = 0; i < n; i++) {
    int64_t c = i % k;
    ((int64_t *)lb->data)[i] = c;
    ((float *)pr->data)[i] = i % 2 == 0 ? 1.0f : 0.0f;
    int64_t y0 = (c * 5) % (s - side), x0 = (s - side - 1) - (c * 7) % (s - side);
    for (int64_t y = 0; y < s; y++)
      for (int64_t x = 0; x < s; x++) {
        int in = y >= y0 && y < y0 + side && x >= x0 && x < x0 + side;
        ((float *)mk->data)[(i * s + y) * s + x] = in ? 1.0f : 0.0f;
        for (int ch = 0; ch < 3; ch++) {
          r = r * 6364136223846793005ull + 1442695040888963407ull;
          float noise = (float)((r >> 40) & 0xffff) / 65536.0f - 0.5f;
          ((float *)im->data)[((i * 3 + ch) * s + y) * s + x] = noise * 0.5f + (in ? 1.5f : 0.0f);
        }
      }
  }
  mkdir(dir, 0777);
  int rc = save(im, dir, "images.npy") || save(lb, dir, "labels.npy") || save(mk, dir, "masks.npy") ||
           save(pr, dir, "mask_present.npy");
  kiln_tensor_free(im);
  kiln_tensor_free(lb);
  kiln_tensor_free(mk);
  kiln_tensor_free(pr);
  return rc;
}
