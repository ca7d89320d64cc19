/* fuzz_image.c — libFuzzer target: PNG/JPEG bytes -> kiln_image_info and kiln_image_read
 * (as stored, as RGB, and as a one-channel mask), then a resize of the decoded image.
 * The decoders read files, so each input is written to a per-process temporary file. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "data/image.h"
#include "fuzz/fuzz.h"

/* Decoding allocates c*w*h floats before reading pixel data; past this many pixels
 * the fuzzer only checks the header path (the limits in data/image.h are far higher
 * and are tested directly in tests/test_limits.c). */
#define FUZZ_MAX_PIXELS (1 << 18)

static const char *tmp_path(void) {
  static char path[256]; /* the fuzzer process's scratch file; not library state */
  if (!path[0]) {
    const char *d = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/kiln-fuzz-image-%ld", d && *d ? d : "/tmp", (long)getpid());
  }
  return path;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *path = tmp_path();
  FILE *f = fopen(path, "wb");
  if (!f) abort();
  if (size && fwrite(data, 1, size, f) != size) abort();
  fclose(f);

  kiln_err e = {0};
  int w = 0, h = 0;
  kiln_code rc = kiln_image_info(path, &w, &h, &e);
  fuzz_check_err(rc, &e, NULL);
  if (rc == KILN_OK && (w < 1 || h < 1 || w > KILN_IMAGE_MAX_SIDE || h > KILN_IMAGE_MAX_SIDE)) abort();
  if (rc == KILN_OK && (int64_t)w * h > FUZZ_MAX_PIXELS) return 0;

  static const int channels[3] = {0, 3, 1};
  kiln_image im = {0};
  kiln_err e2 = {0};
  rc = kiln_image_read(path, channels[size % 3], &im, &e2);
  fuzz_check_err(rc, &e2, im.px);
  if (rc == KILN_OK) {
    if (im.w != w || im.h != h || (im.c != 1 && im.c != 3) || !im.px) abort();
    int64_t n = (int64_t)im.c * im.w * im.h;
    for (int64_t i = 0; i < n; i++)
      if (!(im.px[i] >= 0.0f && im.px[i] <= 1.0f)) abort();
    /* a crop of the image to an odd size, mirrored for odd inputs */
    int cw = im.w > 1 ? im.w - 1 : 1, ch = im.h > 2 ? im.h - 2 : im.h;
    int dw = (int)(size % 17) + 1, dh = (int)(size % 13) + 1;
    float *dst = malloc(sizeof(float) * (size_t)im.c * (size_t)dw * (size_t)dh);
    if (dst) {
      kiln_err e3 = {0};
      rc = kiln_image_resize(&im, im.w - cw, 0, cw, ch, size & 1, dst, dw, dh, &e3);
      fuzz_check_err(rc, &e3, NULL);
      free(dst);
    }
    kiln_image_release(&im);
  }
  return 0;
}
