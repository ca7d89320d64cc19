/* test_data.c — the data layer: image codecs and their failures, resize and
 * normalization, the CUB/BUSI/CSV layouts on trees made here, the split and the
 * loc-ratio selection, the synthetic sets (determinism, the background cue),
 * augmentation, export round trips, skip_bad, and concurrent get(). */
#include <png.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "data/data.h"
#include "data/internal.h"
#include "frontend/onnx.h"
#include "test.h"

static char root[256];

static void path_of(char *buf, size_t n, const char *rel) { snprintf(buf, n, "%s/%s", root, rel); }

static void mkdirs(const char *rel) {
  char p[512];
  path_of(p, sizeof p, rel);
  for (char *s = p + 1; *s; s++)
    if (*s == '/') {
      *s = 0;
      mkdir(p, 0755);
      *s = '/';
    }
  mkdir(p, 0755);
}

static void write_text(const char *rel, const char *text) {
  char p[512];
  path_of(p, sizeof p, rel);
  FILE *f = fopen(p, "w");
  fputs(text, f);
  fclose(f);
}

/* A w x h RGB test pattern, deterministic from `seed`. */
static void pattern(uint8_t *px, int w, int h, int c, int seed) {
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++)
      for (int k = 0; k < c; k++) px[(y * w + x) * c + k] = (uint8_t)((x * 7 + y * 13 + k * 50 + seed * 31) & 255);
}

static void write_png_rel(const char *rel, int w, int h, int c, int seed) {
  char p[512];
  path_of(p, sizeof p, rel);
  uint8_t *px = malloc((size_t)w * h * c);
  pattern(px, w, h, c, seed);
  kiln_err e = {0};
  CHECK_OK(kiln_png_write(p, px, w, h, c, &e), &e);
  free(px);
}

/* A mask PNG: 255 inside the rectangle [x0,x1) x [y0,y1). */
static void write_mask_rel(const char *rel, int w, int h, int x0, int y0, int x1, int y1) {
  char p[512];
  path_of(p, sizeof p, rel);
  uint8_t *px = calloc((size_t)w * h, 1);
  for (int y = y0; y < y1; y++)
    for (int x = x0; x < x1; x++) px[y * w + x] = 255;
  kiln_err e = {0};
  CHECK_OK(kiln_png_write(p, px, w, h, 1, &e), &e);
  free(px);
}

static void write_jpeg_rel(const char *rel, int w, int h, int c, int seed) {
  char p[512];
  path_of(p, sizeof p, rel);
  uint8_t *px = malloc((size_t)w * h * c);
  pattern(px, w, h, c, seed);
  kiln_err e = {0};
  CHECK_OK(kiln_jpeg_write(p, px, w, h, c, 92, &e), &e);
  free(px);
}

/* Raw libpng writer for the layouts kiln_png_write does not produce. */
static void write_png_raw(const char *path, int w, int h, int color, int bits, const uint8_t *rows_data,
                          size_t rowbytes, const png_color *pal, int npal) {
  FILE *f = fopen(path, "wb");
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
  png_infop info = png_create_info_struct(png);
  png_init_io(png, f);
  png_set_IHDR(png, info, w, h, bits, color, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (pal) png_set_PLTE(png, info, pal, npal);
  png_write_info(png, info);
  for (int y = 0; y < h; y++) png_write_row(png, rows_data + y * rowbytes);
  png_write_end(png, NULL);
  png_destroy_write_struct(&png, &info);
  fclose(f);
}

static long file_size(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 ? (long)st.st_size : -1;
}

static void truncate_copy(const char *src, const char *dst, long keep) {
  FILE *a = fopen(src, "rb"), *b = fopen(dst, "wb");
  for (long i = 0; i < keep; i++) {
    int ch = fgetc(a);
    if (ch == EOF) break;
    fputc(ch, b);
  }
  fclose(a);
  fclose(b);
}

/* ---- codecs ---- */

static void test_png_roundtrip(void) {
  kiln_err e = {0};
  char p[512];
  for (int c = 1; c <= 4; c += (c == 1 ? 2 : 1)) { /* 1, 3, 4 channels */
    char rel[64];
    snprintf(rel, sizeof rel, "codec/rt%d.png", c);
    write_png_rel(rel, 17, 9, c, c);
    path_of(p, sizeof p, rel);
    kiln_image im;
    CHECK_OK(kiln_image_read(p, 3, &im, &e), &e);
    CHECK(im.w == 17 && im.h == 9 && im.c == 3);
    uint8_t px[17 * 9 * 4];
    pattern(px, 17, 9, c, c);
    int bad = 0;
    for (int y = 0; y < 9; y++)
      for (int x = 0; x < 17; x++)
        for (int k = 0; k < 3; k++) {
          int src = c == 1 ? 0 : k; /* gray replicated; alpha dropped */
          bad += im.px[(k * 9 + y) * 17 + x] != (float)px[(y * 17 + x) * c + src] / 255.0f;
        }
    CHECK_MSG(bad == 0, "%d channels: %d samples differ", c, bad);
    kiln_image_release(&im);
    int w, h;
    CHECK_OK(kiln_image_info(p, &w, &h, &e), &e);
    CHECK(w == 17 && h == 9);
  }
  /* one channel from RGB: the maximum of R, G, B */
  path_of(p, sizeof p, "codec/rt3.png");
  kiln_image g;
  CHECK_OK(kiln_image_read(p, 1, &g, &e), &e);
  uint8_t px[17 * 9 * 3];
  pattern(px, 17, 9, 3, 3);
  uint8_t m = px[0] > px[1] ? px[0] : px[1];
  m = m > px[2] ? m : px[2];
  CHECK(g.c == 1 && g.px[0] == (float)m / 255.0f);
  kiln_image_release(&g);
}

static void test_png_formats(void) {
  kiln_err e = {0};
  char p[512];
  kiln_image im;
  /* 16-bit RGB */
  uint16_t rgb16[2 * 3 * 3];
  uint8_t be[sizeof rgb16];
  for (int i = 0; i < 18; i++) rgb16[i] = (uint16_t)(i * 3000 + 7);
  for (int i = 0; i < 18; i++) be[2 * i] = rgb16[i] >> 8, be[2 * i + 1] = rgb16[i] & 255;
  path_of(p, sizeof p, "codec/rgb16.png");
  write_png_raw(p, 3, 2, PNG_COLOR_TYPE_RGB, 16, be, 3 * 3 * 2, NULL, 0);
  CHECK_OK(kiln_image_read(p, 3, &im, &e), &e);
  CHECK(im.w == 3 && im.h == 2);
  CHECK_CLOSE(im.px[0], rgb16[0] / 65535.0, 0, 1e-6);           /* R of (0,0) */
  CHECK_CLOSE(im.px[6 + 1], rgb16[1 * 3 + 1] / 65535.0, 0, 1e-6); /* G of (1,0) */
  kiln_image_release(&im);
  /* palette, 4 bits */
  png_color pal[3] = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}};
  uint8_t idx[2] = {0x01, 0x20}; /* row 0: pixels 0,1 ; row 1: pixels 2,0 */
  path_of(p, sizeof p, "codec/pal.png");
  write_png_raw(p, 2, 2, PNG_COLOR_TYPE_PALETTE, 4, idx, 1, pal, 3);
  CHECK_OK(kiln_image_read(p, 3, &im, &e), &e);
  CHECK(im.px[0] == 1.0f && im.px[4 + 0] == 0.0f);    /* (0,0) red */
  CHECK(im.px[4 + 1] == 1.0f && im.px[1] == 0.0f);    /* (1,0) green */
  CHECK(im.px[8 + 2] == 1.0f && im.px[2] == 0.0f);    /* (0,1) blue */
  kiln_image_release(&im);
  /* gray + alpha, 8 bits: alpha dropped */
  uint8_t ga[2 * 2] = {10, 255, 200, 0};
  path_of(p, sizeof p, "codec/ga.png");
  write_png_raw(p, 2, 1, PNG_COLOR_TYPE_GRAY_ALPHA, 8, ga, 4, NULL, 0);
  CHECK_OK(kiln_image_read(p, 3, &im, &e), &e);
  CHECK(im.c == 3 && im.px[0] == 10 / 255.0f && im.px[1] == 200 / 255.0f && im.px[2 + 1] == 200 / 255.0f);
  kiln_image_release(&im);
  /* 1-bit gray */
  uint8_t bits[1] = {0xa0}; /* 1,0,1 */
  path_of(p, sizeof p, "codec/g1.png");
  write_png_raw(p, 3, 1, PNG_COLOR_TYPE_GRAY, 1, bits, 1, NULL, 0);
  CHECK_OK(kiln_image_read(p, 1, &im, &e), &e);
  CHECK(im.px[0] == 1.0f && im.px[1] == 0.0f && im.px[2] == 1.0f);
  kiln_image_release(&im);
}

static void test_jpeg(void) {
  kiln_err e = {0};
  char p[512];
  /* a smooth image survives JPEG closely */
  int w = 40, h = 24;
  uint8_t *px = malloc((size_t)w * h * 3);
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++)
      for (int k = 0; k < 3; k++) px[(y * w + x) * 3 + k] = (uint8_t)(40 + x * 2 + y * 2 + k * 30);
  path_of(p, sizeof p, "codec/smooth.jpg");
  CHECK_OK(kiln_jpeg_write(p, px, w, h, 3, 95, &e), &e);
  kiln_image im;
  CHECK_OK(kiln_image_read(p, 3, &im, &e), &e);
  double maxd = 0;
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++)
      for (int k = 0; k < 3; k++) {
        double d = fabs(im.px[(k * h + y) * w + x] - px[(y * w + x) * 3 + k] / 255.0);
        if (d > maxd) maxd = d;
      }
  CHECK_MSG(maxd < 0.05, "JPEG max error %g", maxd);
  kiln_image_release(&im);
  /* grayscale JPEG -> RGB with equal channels */
  path_of(p, sizeof p, "codec/gray.jpg");
  CHECK_OK(kiln_jpeg_write(p, px, w, h, 1, 90, &e), &e);
  CHECK_OK(kiln_image_read(p, 3, &im, &e), &e);
  CHECK(im.c == 3 && im.px[5] == im.px[w * h + 5] && im.px[5] == im.px[2 * w * h + 5]);
  kiln_image_release(&im);
  int iw, ih;
  CHECK_OK(kiln_image_info(p, &iw, &ih, &e), &e);
  CHECK(iw == w && ih == h);
  free(px);
}

static void expect_fail(const char *path, const char *needle1, const char *needle2) {
  kiln_err e = {0};
  kiln_image im = {0};
  kiln_code rc = kiln_image_read(path, 3, &im, &e);
  CHECK_MSG(rc != KILN_OK, "%s decoded", path);
  CHECK_MSG(strstr(e.msg, path) != NULL, "message does not name the file: %s", e.msg);
  CHECK_MSG(!needle1 || strstr(e.msg, needle1), "message lacks '%s': %s", needle1, e.msg);
  CHECK_MSG(!needle2 || strstr(e.msg, needle2), "message lacks '%s': %s", needle2, e.msg);
  CHECK(im.px == NULL);
}

static void test_bad_images(void) {
  char src[512], dst[512];
  write_png_rel("codec/big.png", 64, 64, 3, 1);
  path_of(src, sizeof src, "codec/big.png");
  path_of(dst, sizeof dst, "codec/trunc.png");
  truncate_copy(src, dst, file_size(src) / 2);
  expect_fail(dst, "truncated", "PNG");
  /* a flipped byte inside the image data: CRC or zlib error */
  path_of(dst, sizeof dst, "codec/corrupt.png");
  truncate_copy(src, dst, file_size(src));
  FILE *f = fopen(dst, "r+b");
  fseek(f, 60, SEEK_SET);
  fputc(0x5a, f);
  fseek(f, 70, SEEK_SET);
  fputc(0xa5, f);
  fclose(f);
  expect_fail(dst, "PNG", NULL);
  write_jpeg_rel("codec/big.jpg", 64, 64, 3, 2);
  path_of(src, sizeof src, "codec/big.jpg");
  path_of(dst, sizeof dst, "codec/trunc.jpg");
  truncate_copy(src, dst, file_size(src) / 2);
  expect_fail(dst, "truncated", "JPEG");
  path_of(dst, sizeof dst, "codec/hdr.jpg");
  truncate_copy(src, dst, 40);
  expect_fail(dst, "JPEG", NULL);
  write_text("codec/text.png", "hello, not an image\n");
  path_of(dst, sizeof dst, "codec/text.png");
  expect_fail(dst, "not a PNG or JPEG", NULL);
  write_text("codec/empty.png", "");
  path_of(dst, sizeof dst, "codec/empty.png");
  expect_fail(dst, "empty", NULL);
  path_of(dst, sizeof dst, "codec/missing.png");
  expect_fail(dst, "cannot open", NULL);
  /* a header announcing 20000 x 20000: refused before any pixel is allocated */
  path_of(dst, sizeof dst, "codec/huge.png");
  FILE *hf = fopen(dst, "wb");
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
  png_infop info = png_create_info_struct(png);
  png_init_io(png, hf);
  png_set_IHDR(png, info, 20000, 20000, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  png_destroy_write_struct(&png, &info);
  fclose(hf);
  kiln_err e = {0};
  int w, h;
  kiln_code hrc = kiln_image_info(dst, &w, &h, &e);
  CHECK_MSG(hrc == KILN_ERR_LIMIT && strstr(e.msg, "exceeds the limit"), "%d %s", hrc, e.msg);
  /* writing is atomic: a failed write leaves no file behind */
  kiln_err e2 = {0};
  uint8_t px[4] = {0};
  CHECK(kiln_png_write("/nonexistent-dir/x.png", px, 2, 2, 1, &e2) == KILN_ERR_IO);
}

/* ---- resize, normalization ---- */

static void test_resize(void) {
  kiln_err e = {0};
  kiln_image im;
  CHECK_OK(kiln_image_alloc(&im, 8, 1, 1, &e), &e);
  for (int i = 0; i < 8; i++) im.px[i] = (float)i;
  float out[8];
  /* PyTorch interpolate(bilinear, antialias=True, align_corners=False) values */
  CHECK_OK(kiln_image_resize(&im, 0, 0, 4, 1, false, out, 2, 1, &e), &e);
  CHECK_CLOSE(out[0], 0.714286, 0, 1e-5);
  CHECK_CLOSE(out[1], 2.285714, 0, 1e-5);
  CHECK_OK(kiln_image_resize(&im, 0, 0, 8, 1, false, out, 3, 1, &e), &e);
  CHECK_CLOSE(out[0], 1.105263, 0, 1e-5);
  CHECK_CLOSE(out[1], 3.5, 0, 1e-5);
  CHECK_CLOSE(out[2], 5.894737, 0, 1e-5);
  /* upsampling 2 -> 4: plain bilinear with half-pixel centres */
  CHECK_OK(kiln_image_resize(&im, 0, 0, 2, 1, false, out, 4, 1, &e), &e);
  CHECK(out[0] == 0.0f && out[1] == 0.25f && out[2] == 0.75f && out[3] == 1.0f);
  /* a region: samples never come from outside it */
  CHECK_OK(kiln_image_resize(&im, 4, 0, 2, 1, false, out, 4, 1, &e), &e);
  CHECK(out[0] == 4.0f && out[3] == 5.0f);
  /* flip mirrors */
  float fl[3];
  CHECK_OK(kiln_image_resize(&im, 0, 0, 8, 1, false, out, 3, 1, &e), &e);
  CHECK_OK(kiln_image_resize(&im, 0, 0, 8, 1, true, fl, 3, 1, &e), &e);
  CHECK(fl[0] == out[2] && fl[1] == out[1] && fl[2] == out[0]);
  /* identity is exact */
  CHECK_OK(kiln_image_resize(&im, 0, 0, 8, 1, false, out, 8, 1, &e), &e);
  CHECK(!memcmp(out, im.px, sizeof out));
  CHECK(kiln_image_resize(&im, 0, 0, 9, 1, false, out, 8, 1, &e) == KILN_ERR_INVALID);
  kiln_image_release(&im);
  /* 2-D: a constant image stays constant at any size */
  CHECK_OK(kiln_image_alloc(&im, 37, 23, 3, &e), &e);
  for (int i = 0; i < 37 * 23 * 3; i++) im.px[i] = 0.25f;
  float *big = malloc(sizeof(float) * 3 * 50 * 11);
  CHECK_OK(kiln_image_resize(&im, 3, 2, 30, 20, false, big, 50, 11, &e), &e);
  double maxd = 0;
  for (int i = 0; i < 3 * 50 * 11; i++) maxd = fmax(maxd, fabs(big[i] - 0.25));
  CHECK(maxd < 1e-6);
  free(big);
  kiln_image_release(&im);
  /* normalization */
  float v[3] = {0.485f, 0.456f + 0.224f, 1.0f};
  kiln_image_normalize(v, 3, 1);
  CHECK_CLOSE(v[0], 0.0, 0, 1e-6);
  CHECK_CLOSE(v[1], 1.0, 0, 1e-6);
  CHECK_CLOSE(v[2], (1.0 - 0.406) / 0.225, 1e-6, 0);
  kiln_image_denormalize(v, 3, 1);
  CHECK_CLOSE(v[2], 1.0, 0, 1e-6);
  float m[4] = {0.49f, 0.5f, 0.51f, 0.0f};
  kiln_mask_threshold(m, 4);
  CHECK(m[0] == 0 && m[1] == 1 && m[2] == 1 && m[3] == 0);
}

/* ---- split and loc ratio ---- */

static void test_split(void) {
  kiln_err e = {0};
  int64_t n = 60 * 3 + 7, labels[187];
  for (int64_t i = 0; i < n; i++) labels[i] = i < 180 ? i % 3 : 3; /* classes 0..2 interleaved, class 3 small */
  int8_t s1[187], s2[187], s3[187];
  CHECK_OK(kiln_data_split(labels, n, 7, 0.1, 0.1, s1, &e), &e);
  CHECK_OK(kiln_data_split(labels, n, 7, 0.1, 0.1, s2, &e), &e);
  CHECK_OK(kiln_data_split(labels, n, 8, 0.1, 0.1, s3, &e), &e);
  CHECK(!memcmp(s1, s2, sizeof s1));
  CHECK(memcmp(s1, s3, sizeof s1) != 0);
  for (int c = 0; c < 4; c++) {
    int cnt[3] = {0};
    for (int64_t i = 0; i < n; i++)
      if (labels[i] == c) cnt[s1[i]]++;
    if (c < 3) CHECK_MSG(cnt[0] == 48 && cnt[1] == 6 && cnt[2] == 6, "class %d: %d/%d/%d", c, cnt[0], cnt[1], cnt[2]);
    else CHECK_MSG(cnt[0] == 5 && cnt[1] == 1 && cnt[2] == 1, "class 3: %d/%d/%d", cnt[0], cnt[1], cnt[2]);
  }
  CHECK(kiln_data_split(labels, n, 7, 0.6, 0.6, s1, &e) == KILN_ERR_INVALID);
}

static void test_loc_select(void) {
  int64_t n = 200;
  int8_t split[200];
  bool has[200], keep[200], keep2[200], keep3[200];
  int64_t m = 0;
  for (int64_t i = 0; i < n; i++) {
    split[i] = i % 10 == 0 ? KILN_SPLIT_VAL : i % 10 == 1 ? KILN_SPLIT_TEST : KILN_SPLIT_TRAIN;
    has[i] = i % 7 != 3;
    m += split[i] == KILN_SPLIT_TRAIN && has[i];
  }
  int64_t k = kiln_data_loc_select(split, has, n, 0.25, 3, keep);
  int64_t cnt = 0;
  bool only_train = true;
  for (int64_t i = 0; i < n; i++) {
    cnt += keep[i];
    if (keep[i] && (split[i] != KILN_SPLIT_TRAIN || !has[i])) only_train = false;
  }
  CHECK(k == llround(0.25 * (double)m) && cnt == k);
  CHECK(only_train);
  kiln_data_loc_select(split, has, n, 0.25, 3, keep2);
  CHECK(!memcmp(keep, keep2, sizeof keep));
  kiln_data_loc_select(split, has, n, 0.25, 4, keep3);
  CHECK(memcmp(keep, keep3, sizeof keep) != 0);
  CHECK(kiln_data_loc_select(split, has, n, 1.0, 3, keep) == m);
  CHECK(kiln_data_loc_select(split, has, n, 0.0, 3, keep) == 0);
}

/* ---- synthetic sets ---- */

static kiln_data_opts small_opts(int size, int count) {
  kiln_data_opts o = kiln_data_opts_default();
  o.height = o.width = size;
  o.count = count;
  return o;
}

static void test_synthetic_determinism(void) {
  kiln_err e = {0};
  const char *specs[2] = {"synthetic:shapes", "synthetic:ultrasound"};
  for (int s = 0; s < 2; s++) {
    kiln_data_opts o = small_opts(48, 4);
    kiln_dataset *a, *b, *c;
    CHECK_OK(kiln_dataset_open_spec(specs[s], &o, &a, &e), &e);
    CHECK_OK(kiln_dataset_open_spec(specs[s], &o, &b, &e), &e);
    o.data_seed = 2;
    CHECK_OK(kiln_dataset_open_spec(specs[s], &o, &c, &e), &e);
    if (!a || !b || !c) return;
    CHECK(a->n == (s ? 8 : 32) && a->c == 3 && a->h == 48 && a->has_masks);
    int64_t hw = 48 * 48;
    float *i1 = malloc(sizeof(float) * 3 * hw), *i2 = malloc(sizeof(float) * 3 * hw), *m1 = malloc(4 * hw),
          *m2 = malloc(4 * hw);
    int same = 0, diff_seed = 0;
    for (int64_t i = 0; i < a->n; i++) {
      int64_t l1, l2;
      bool h1, h2;
      CHECK_OK(a->get(a, i, i1, &l1, m1, &h1, &e), &e);
      CHECK_OK(b->get(b, i, i2, &l2, m2, &h2, &e), &e);
      same += !memcmp(i1, i2, sizeof(float) * 3 * hw) && !memcmp(m1, m2, 4 * hw) && l1 == l2 && h1 && h2;
      CHECK_OK(c->get(c, i, i2, &l2, m2, &h2, &e), &e);
      diff_seed += memcmp(i1, i2, sizeof(float) * 3 * hw) != 0;
      double area = 0;
      for (int64_t p = 0; p < hw; p++) area += m1[p];
      CHECK_MSG(area > 0.01 * hw && area < 0.6 * hw, "%s %lld: mask area %g", specs[s], (long long)i, area);
    }
    CHECK(same == a->n);
    CHECK(diff_seed == a->n);
    CHECK(!strcmp(kiln_data_class_name(a, 0), s ? "malignant" : "disk"));
    free(i1), free(i2), free(m1), free(m2);
    kiln_dataset_free(a), kiln_dataset_free(b), kiln_dataset_free(c);
  }
  /* any size: a non-square one */
  kiln_data_opts o = small_opts(32, 2);
  o.width = 50;
  kiln_dataset *d;
  CHECK_OK(kiln_dataset_open_spec("synthetic:shapes", &o, &d, &e), &e);
  CHECK(d && d->w == 50 && d->h == 32);
  kiln_dataset_free(d);
  kiln_err e2 = {0};
  CHECK(kiln_dataset_open_spec("synthetic:clouds", &o, &d, &e2) == KILN_ERR_INVALID &&
        strstr(e2.msg, "synthetic:shapes"));
}

/* The wolves-on-snow trap: a nearest-centroid classifier on the mean background
 * colour, fit on the training split, is right on most training images and near
 * chance on the test split. */
static void test_shapes_background_cue(void) {
  kiln_err e = {0};
  kiln_data_opts o = small_opts(40, 40);
  o.test_frac = 0.25;
  kiln_dataset *d;
  CHECK_OK(kiln_dataset_open_spec("synthetic:shapes", &o, &d, &e), &e);
  if (!d) return;
  int64_t n = d->n, K = d->classes, hw = 40 * 40;
  int8_t *split = malloc(n);
  int64_t *labels = malloc(8 * n);
  double (*col)[3] = calloc(n, sizeof *col), cen[8][3] = {{0}};
  int64_t cnt[8] = {0};
  CHECK_OK(kiln_data_meta(d, labels, NULL, split, &e), &e);
  float *img = malloc(sizeof(float) * 3 * hw), *mask = malloc(4 * hw);
  for (int64_t i = 0; i < n; i++) {
    int64_t l;
    bool h;
    CHECK_OK(kiln_data_get_raw(d, i, img, &l, mask, &h, &e), &e);
    double s[3] = {0}, m = 0;
    for (int64_t p = 0; p < hw; p++)
      if (mask[p] == 0) {
        for (int k = 0; k < 3; k++) s[k] += img[k * hw + p];
        m++;
      }
    for (int k = 0; k < 3; k++) col[i][k] = s[k] / m;
    if (split[i] == KILN_SPLIT_TRAIN) {
      for (int k = 0; k < 3; k++) cen[l][k] += col[i][k];
      cnt[l]++;
    }
  }
  for (int64_t c = 0; c < K; c++)
    for (int k = 0; k < 3; k++) cen[c][k] /= (double)cnt[c];
  int64_t ok[3] = {0}, tot[3] = {0};
  for (int64_t i = 0; i < n; i++) {
    int64_t best = 0;
    double bd = 1e9;
    for (int64_t c = 0; c < K; c++) {
      double dd = 0;
      for (int k = 0; k < 3; k++) dd += (col[i][k] - cen[c][k]) * (col[i][k] - cen[c][k]);
      if (dd < bd) bd = dd, best = c;
    }
    ok[split[i]] += best == labels[i];
    tot[split[i]]++;
  }
  double acc_train = (double)ok[0] / tot[0], acc_test = (double)ok[2] / tot[2];
  printf("background-colour classifier: train accuracy %.2f, test accuracy %.2f (chance %.2f)\n", acc_train, acc_test,
         1.0 / K);
  CHECK_MSG(acc_train > 0.75, "train accuracy %g", acc_train);
  CHECK_MSG(acc_test < 0.35, "test accuracy %g", acc_test);
  free(split), free(labels), free(col), free(img), free(mask);
  kiln_dataset_free(d);
}

/* ---- augmentation ---- */

static void test_aug_params(void) {
  int flips = 0, N = 2000;
  bool ok = true;
  for (int i = 0; i < N; i++) {
    data_aug a = {.seed = data_mix((uint64_t)i), .flip_p = 0.5, .crop = true, .scale_min = 0.5, .scale_max = 1,
                  .ratio_min = 0.75, .ratio_max = 4.0 / 3};
    int x0, y0, cw, ch;
    bool fl;
    data_aug_sample(&a, 300, 200, &x0, &y0, &cw, &ch, &fl);
    double area = (double)cw * ch / (300.0 * 200), ar = (double)cw / ch;
    if (x0 < 0 || y0 < 0 || x0 + cw > 300 || y0 + ch > 200 || area < 0.49 || area > 1.0 || ar < 0.74 || ar > 1.35)
      ok = false;
    flips += fl;
    int x1, y1, cw1, ch1;
    bool fl1;
    data_aug_sample(&a, 300, 200, &x1, &y1, &cw1, &ch1, &fl1);
    if (x1 != x0 || y1 != y0 || cw1 != cw || ch1 != ch || fl1 != fl) ok = false;
  }
  CHECK(ok);
  CHECK_MSG(flips > N * 0.45 && flips < N * 0.55, "%d flips of %d", flips, N);
}

/* An image that equals its mask (white object, black background) in a CSV dataset:
 * after augmentation the thresholded image must still equal the mask. */
static void test_aug_image_mask_agree(void) {
  kiln_err e = {0};
  mkdirs("agree");
  char csv[4096] = "image,label,mask\n";
  for (int i = 0; i < 6; i++) {
    int w = 60 + i * 7, h = 45 + i * 3;
    uint8_t *px = calloc((size_t)w * h, 1);
    for (int y = 0; y < h; y++)
      for (int x = 0; x < w; x++)
        px[y * w + x] = (x > w / 5 && x < w / 2 && y > h / 4 + x / 8 && y < h - 3) || (x > 3 * w / 4 && y < h / 3)
                            ? 255 : 0; /* asymmetric: flips show */
    char p[512], rel[64];
    snprintf(rel, sizeof rel, "agree/%d.png", i);
    path_of(p, sizeof p, rel);
    CHECK_OK(kiln_png_write(p, px, w, h, 1, &e), &e);
    free(px);
    snprintf(csv + strlen(csv), sizeof csv - strlen(csv), "%d.png,%d,%d.png\n", i, i % 2, i);
  }
  write_text("agree/list.csv", csv);
  char p[512];
  path_of(p, sizeof p, "agree/list.csv");
  kiln_data_opts o = small_opts(32, 1);
  o.val_frac = o.test_frac = 0;
  kiln_dataset *d, *tr;
  CHECK_OK(kiln_dataset_open_spec(p, &o, &d, &e), &e);
  if (!d) return;
  CHECK_OK(kiln_data_view(d, KILN_SPLIT_TRAIN, &o, &tr, &e), &e);
  if (!tr) return;
  CHECK(tr->n == 6);
  int64_t hw = 32 * 32;
  float *img = malloc(sizeof(float) * 3 * hw), *mask = malloc(4 * hw), *img2 = malloc(sizeof(float) * 3 * hw),
        *raw = malloc(sizeof(float) * 3 * hw);
  int64_t agree = 0, total = 0, changed = 0, epoch_changed = 0;
  for (int epoch = 0; epoch < 3; epoch++) {
    kiln_data_view_set_epoch(tr, epoch);
    for (int64_t i = 0; i < tr->n; i++) {
      int64_t l;
      bool h;
      CHECK_OK(tr->get(tr, i, img, &l, mask, &h, &e), &e);
      CHECK(h);
      kiln_image_denormalize(img, 3, hw);
      for (int64_t q = 0; q < hw; q++) agree += (img[q] >= 0.5f) == (mask[q] == 1.0f), total++;
      /* deterministic: the same (seed, epoch, example) gives the same example */
      CHECK_OK(tr->get(tr, i, img2, &l, mask, &h, &e), &e);
      kiln_image_denormalize(img2, 3, hw);
      CHECK(!memcmp(img, img2, sizeof(float) * 3 * hw));
      CHECK_OK(kiln_data_get_raw(tr, i, raw, &l, NULL, &h, &e), &e);
      double md = 0;
      for (int64_t q = 0; q < 3 * hw; q++) md = fmax(md, fabs(raw[q] - img[q]));
      changed += md > 0.05;
      if (epoch == 1) {
        kiln_data_view_set_epoch(tr, 0);
        CHECK_OK(tr->get(tr, i, img2, &l, NULL, &h, &e), &e);
        kiln_image_denormalize(img2, 3, hw);
        double dd = 0;
        for (int64_t q = 0; q < 3 * hw; q++) dd = fmax(dd, fabs(img2[q] - img[q]));
        epoch_changed += dd > 0.05;
        kiln_data_view_set_epoch(tr, 1);
      }
    }
  }
  CHECK_MSG(agree >= total - total / 1000, "image and mask disagree on %lld of %lld pixels", (long long)(total - agree),
            (long long)total);
  CHECK_MSG(changed >= 12, "augmentation changed only %lld of 18 examples", (long long)changed);
  CHECK_MSG(epoch_changed >= 4, "epochs 0 and 1 differ on %lld of 6 examples", (long long)epoch_changed);
  /* validation views are not augmented */
  kiln_dataset *all;
  CHECK_OK(kiln_data_view(d, KILN_SPLIT_ALL, &o, &all, &e), &e);
  if (all) {
    int64_t l;
    bool h;
    CHECK_OK(all->get(all, 0, img, &l, mask, &h, &e), &e);
    CHECK_OK(kiln_data_get_raw(all, 0, raw, &l, NULL, &h, &e), &e);
    kiln_image_normalize(raw, 3, hw);
    double dd = 0;
    for (int64_t q = 0; q < 3 * hw; q++) dd = fmax(dd, fabs(raw[q] - img[q]));
    CHECK(dd < 1e-5);
    kiln_dataset_free(all);
  }
  free(img), free(mask), free(img2), free(raw);
  kiln_dataset_free(tr);
  kiln_dataset_free(d);
}

/* ---- views: split and loc ratio over a dataset ---- */

static void test_views(void) {
  kiln_err e = {0};
  kiln_data_opts o = small_opts(24, 20);
  o.loc_ratio = 0.25;
  kiln_dataset *base, *tr, *va, *te;
  CHECK_OK(kiln_data_open_splits("synthetic:shapes", &o, &base, &tr, &va, &te, &e), &e);
  if (!base) return;
  CHECK(tr->n == 128 && va->n == 16 && te->n == 16);
  CHECK(tr->classes == 8 && tr->h == 24);
  bool has[128];
  CHECK_OK(kiln_data_meta(tr, NULL, has, NULL, &e), &e);
  int64_t kept = 0;
  for (int i = 0; i < 128; i++) kept += has[i];
  CHECK(kept == 32);
  /* has_mask from get() follows the selection, and the mask is zero when dropped */
  float *img = malloc(sizeof(float) * 3 * 24 * 24), *mask = malloc(4 * 24 * 24);
  int64_t agree = 0;
  for (int64_t i = 0; i < tr->n; i++) {
    int64_t l;
    bool h;
    CHECK_OK(tr->get(tr, i, img, &l, mask, &h, &e), &e);
    double s = 0;
    for (int q = 0; q < 24 * 24; q++) s += mask[q];
    agree += h == has[i] && (h || s == 0);
  }
  CHECK(agree == tr->n);
  bool vh[16];
  CHECK_OK(kiln_data_meta(va, NULL, vh, NULL, &e), &e);
  for (int i = 0; i < 16; i++) CHECK(vh[i]); /* validation keeps every mask */
  /* loc ratio 0: the training view has no masks */
  kiln_data_opts o0 = o;
  o0.loc_ratio = 0;
  kiln_dataset *t0;
  CHECK_OK(kiln_data_view(base, KILN_SPLIT_TRAIN, &o0, &t0, &e), &e);
  CHECK(t0 && !t0->has_masks);
  kiln_dataset_free(t0);
  char sum[8192];
  kiln_data_summary(base, sum, sizeof sum);
  CHECK(strstr(sum, "128 train, 16 val, 16 test") != NULL);
  free(img), free(mask);
  kiln_dataset_free(tr), kiln_dataset_free(va), kiln_dataset_free(te), kiln_dataset_free(base);
}

/* ---- layouts ---- */

static void test_cub(void) {
  kiln_err e = {0};
  mkdirs("cub/images/001.Alpha");
  mkdirs("cub/images/002.Beta");
  mkdirs("cub/images/003.Gamma");
  mkdirs("cub/segmentations/001.Alpha");
  mkdirs("cub/segmentations/003.Gamma");
  char images[2048] = "", labels[1024] = "", boxes[1024] = "";
  const char *cls[3] = {"001.Alpha", "002.Beta", "003.Gamma"};
  int id = 1;
  for (int c = 0; c < 3; c++)
    for (int k = 0; k < 5; k++, id++) {
      char rel[256], full[256];
      snprintf(rel, sizeof rel, "%s/img_%d.jpg", cls[c], id);
      snprintf(full, sizeof full, "cub/images/%s", rel);
      write_jpeg_rel(full, 40 + c * 4, 30, 3, id);
      snprintf(images + strlen(images), sizeof images - strlen(images), "%d %s\n", id, rel);
      snprintf(labels + strlen(labels), sizeof labels - strlen(labels), "%d %d\n", id, c + 1);
      snprintf(boxes + strlen(boxes), sizeof boxes - strlen(boxes), "%d 10.0 5.0 20.0 15.0\n", id);
      if (c != 1 && k != 4) { /* class 2 has no segmentations; every last image of a class neither */
        snprintf(full, sizeof full, "cub/segmentations/%s/img_%d.png", cls[c], id);
        write_mask_rel(full, 40 + c * 4, 30, 5, 5, 25, 25);
      }
    }
  write_text("cub/images.txt", images);
  write_text("cub/image_class_labels.txt", labels);
  write_text("cub/classes.txt", "1 001.Alpha\n2 002.Beta\n3 003.Gamma\n4 004.Empty\n");
  write_text("cub/bounding_boxes.txt", boxes);
  write_text("cub/train_test_split.txt", "1 1\n");
  char dir[512];
  path_of(dir, sizeof dir, "cub");
  kiln_data_opts o = small_opts(32, 1);
  o.classes = "3,Alpha";
  kiln_dataset *d;
  CHECK_OK(kiln_dataset_open_spec(dir, &o, &d, &e), &e);
  if (!d) return;
  CHECK(d->n == 10 && d->classes == 2 && d->has_masks);
  CHECK(!strcmp(kiln_data_class_name(d, 0), "003.Gamma") && !strcmp(kiln_data_class_name(d, 1), "001.Alpha"));
  int64_t lab[10];
  CHECK_OK(kiln_data_meta(d, lab, NULL, NULL, &e), &e);
  CHECK(lab[0] == 1 && lab[9] == 0); /* image order: ids ascending; class 1 = label 1 */
  CHECK(!strcmp(kiln_data_example_name(d, 0), "001.Alpha/img_1.jpg"));
  /* the 5th image of a class has no segmentation: its mask is the bounding box */
  float *img = malloc(sizeof(float) * 3 * 32 * 32), *mask = malloc(4 * 32 * 32);
  int64_t l;
  bool h;
  o.height = 30, o.width = 40; /* at the source size the box is exact */
  kiln_dataset *d2;
  CHECK_OK(kiln_dataset_open_spec(dir, &o, &d2, &e), &e);
  float *img2 = malloc(sizeof(float) * 3 * 30 * 40), *mask2 = malloc(4 * 30 * 40);
  CHECK_OK(kiln_data_get_raw(d2, 4, img2, &l, mask2, &h, &e), &e); /* id 5: Alpha's last, box */
  CHECK(h && l == 1);
  double area = 0;
  for (int q = 0; q < 30 * 40; q++) area += mask2[q];
  CHECK_MSG(area == 20 * 15, "box mask area %g", area);
  CHECK(mask2[5 * 40 + 10] == 1 && mask2[5 * 40 + 9] == 0 && mask2[4 * 40 + 10] == 0);
  CHECK_OK(kiln_data_get_raw(d2, 0, img2, &l, mask2, &h, &e), &e); /* segmentation */
  area = 0;
  for (int q = 0; q < 30 * 40; q++) area += mask2[q];
  CHECK(h && area == 20 * 20);
  char sum[4096];
  kiln_data_summary(d2, sum, sizeof sum);
  CHECK(strstr(sum, "2 from bounding boxes") != NULL);
  kiln_dataset_free(d2);
  /* all classes when none are named */
  o.classes = "1,2,3";
  CHECK_OK(kiln_dataset_open_spec(dir, &o, &d2, &e), &e);
  CHECK(d2 && d2->n == 15 && d2->classes == 3);
  kiln_dataset_free(d2);
  /* errors: an unknown class, an empty class, a label outside classes.txt */
  kiln_err e2 = {0};
  o.classes = "3,99";
  CHECK(kiln_dataset_open_spec(dir, &o, &d2, &e2) != KILN_OK && strstr(e2.msg, "no class '99'"));
  kiln_err e3 = {0};
  o.classes = "1,4";
  CHECK(kiln_dataset_open_spec(dir, &o, &d2, &e3) != KILN_OK && strstr(e3.msg, "004.Empty") &&
        strstr(e3.msg, "no images"));
  kiln_err e4 = {0};
  o.classes = NULL;
  CHECK(kiln_dataset_open_spec(dir, &o, &d2, &e4) != KILN_OK && strstr(e4.msg, "004.Empty"));
  write_text("cub/image_class_labels.txt", "1 7\n");
  kiln_err e5 = {0};
  CHECK(kiln_dataset_open_spec(dir, &o, &d2, &e5) != KILN_OK && strstr(e5.msg, "image_class_labels.txt:1"));
  write_text("cub/image_class_labels.txt", labels);
  free(img), free(mask), free(img2), free(mask2);
  kiln_dataset_free(d);
}

static void test_busi(void) {
  kiln_err e = {0};
  const char *cls[3] = {"benign", "malignant", "normal"};
  for (int c = 0; c < 3; c++) {
    char rel[128];
    snprintf(rel, sizeof rel, "busi/%s", cls[c]);
    mkdirs(rel);
    for (int k = 1; k <= 3; k++) {
      int kk = k == 3 ? 10 : k; /* natural order: (1), (2), (10) */
      snprintf(rel, sizeof rel, "busi/%s/%s (%d).png", cls[c], cls[c], kk);
      write_png_rel(rel, 30, 20, 1, c * 10 + k);
      snprintf(rel, sizeof rel, "busi/%s/%s (%d)_mask.png", cls[c], cls[c], kk);
      write_mask_rel(rel, 30, 20, 0, 0, 10, 10);
    }
  }
  write_mask_rel("busi/benign/benign (2)_mask_1.png", 30, 20, 20, 10, 30, 20); /* a second mask: merged */
  char dir[512];
  path_of(dir, sizeof dir, "busi");
  kiln_data_opts o = small_opts(20, 1);
  o.width = 30;
  o.classes = "malignant,benign";
  kiln_dataset *d;
  CHECK_OK(kiln_dataset_open_spec(dir, &o, &d, &e), &e);
  if (!d) return;
  CHECK(d->n == 6 && d->classes == 2 && d->has_masks);
  CHECK(!strcmp(kiln_data_class_name(d, 0), "malignant"));
  CHECK(!strcmp(kiln_data_example_name(d, 0), "malignant/malignant (1).png"));
  CHECK(!strcmp(kiln_data_example_name(d, 2), "malignant/malignant (10).png"));
  float img[3 * 600], mask[600];
  int64_t l;
  bool h;
  CHECK_OK(kiln_data_get_raw(d, 4, img, &l, mask, &h, &e), &e); /* benign (2): two masks */
  double area = 0;
  for (int q = 0; q < 600; q++) area += mask[q];
  CHECK(l == 1 && h && area == 200);
  /* gray source replicated to RGB, pixel exact at the source size */
  uint8_t px[600];
  pattern(px, 30, 20, 1, 2); /* benign is folder 0, image 2 */
  CHECK(img[7] == px[7] / 255.0f && img[600 + 7] == px[7] / 255.0f);
  kiln_dataset_free(d);
  /* all folders when no classes are named, alphabetical */
  o.classes = NULL;
  CHECK_OK(kiln_dataset_open_spec(dir, &o, &d, &e), &e);
  CHECK(d && d->classes == 3 && !strcmp(kiln_data_class_name(d, 2), "normal"));
  kiln_dataset_free(d);
  /* a missing mask: an error naming the image; skipped and counted with skip_bad */
  char p[512];
  path_of(p, sizeof p, "busi/normal/normal (2)_mask.png");
  unlink(p);
  kiln_err e2 = {0};
  CHECK(kiln_dataset_open_spec(dir, &o, &d, &e2) != KILN_OK && strstr(e2.msg, "normal (2).png") &&
        strstr(e2.msg, "no mask"));
  o.skip_bad = true;
  CHECK_OK(kiln_dataset_open_spec(dir, &o, &d, &e), &e);
  if (d) {
    const char *const *msgs;
    CHECK(d->n == 8 && kiln_data_skipped(d, &msgs) == 1 && strstr(msgs[0], "normal (2).png"));
    kiln_dataset_free(d);
  }
  o.skip_bad = false;
  write_mask_rel("busi/normal/normal (2)_mask.png", 30, 20, 0, 0, 10, 10);
  /* a mask whose size differs from its image */
  write_mask_rel("busi/normal/normal (1)_mask.png", 31, 20, 0, 0, 10, 10);
  kiln_err e3 = {0};
  CHECK(kiln_dataset_open_spec(dir, &o, &d, &e3) != KILN_OK && strstr(e3.msg, "normal (1)_mask.png") &&
        strstr(e3.msg, "31x20"));
  write_mask_rel("busi/normal/normal (1)_mask.png", 30, 20, 0, 0, 10, 10);
  /* a class folder that is not there */
  kiln_err e4 = {0};
  o.classes = "malignant,cancer";
  CHECK(kiln_dataset_open_spec(dir, &o, &d, &e4) != KILN_OK && strstr(e4.msg, "cancer") && strstr(e4.msg, "benign"));
  /* a mask without an image */
  o.classes = NULL;
  write_mask_rel("busi/benign/benign (7)_mask.png", 30, 20, 0, 0, 10, 10);
  kiln_err e5 = {0};
  CHECK(kiln_dataset_open_spec(dir, &o, &d, &e5) != KILN_OK && strstr(e5.msg, "benign (7)_mask.png"));
  path_of(p, sizeof p, "busi/benign/benign (7)_mask.png");
  unlink(p);
}

static void test_csv(void) {
  kiln_err e = {0};
  mkdirs("csv/img");
  mkdirs("csv/mask");
  for (int i = 0; i < 6; i++) {
    char rel[64];
    snprintf(rel, sizeof rel, "csv/img/%d.png", i);
    write_png_rel(rel, 16, 12, 3, i);
    snprintf(rel, sizeof rel, "csv/mask/%d.png", i);
    write_mask_rel(rel, 16, 12, i, 0, i + 4, 12);
  }
  write_text("csv/names.csv", "image,label,mask\n"
                              "img/0.png,cat,mask/0.png\n"
                              "img/1.png,dog,\n"
                              "\"img/2.png\",cat,mask/2.png;mask/3.png\n"
                              "img/3.png,bird,mask/3.png\n"
                              "img/4.png,dog,mask/4.png\n"
                              "img/5.png,bird,mask/5.png\n");
  char p[512];
  path_of(p, sizeof p, "csv/names.csv");
  kiln_data_opts o = small_opts(12, 1);
  o.width = 16;
  kiln_dataset *d;
  CHECK_OK(kiln_dataset_open_spec(p, &o, &d, &e), &e);
  if (!d) return;
  CHECK(d->n == 6 && d->classes == 3);
  CHECK(!strcmp(kiln_data_class_name(d, 0), "cat") && !strcmp(kiln_data_class_name(d, 1), "dog") &&
        !strcmp(kiln_data_class_name(d, 2), "bird"));
  int64_t lab[6];
  bool has[6];
  CHECK_OK(kiln_data_meta(d, lab, has, NULL, &e), &e);
  CHECK(lab[0] == 0 && lab[1] == 1 && lab[3] == 2 && !has[1] && has[2]);
  float img[3 * 192], mask[192];
  int64_t l;
  bool h;
  CHECK_OK(kiln_data_get_raw(d, 2, img, &l, mask, &h, &e), &e);
  double area = 0;
  for (int q = 0; q < 192; q++) area += mask[q];
  CHECK_MSG(area == 12 * 5, "merged mask area %g", area); /* columns 2..6 */
  uint8_t px[192 * 3];
  pattern(px, 16, 12, 3, 2);
  CHECK(img[192 + 5] == px[5 * 3 + 1] / 255.0f);
  kiln_dataset_free(d);
  /* class subset by name, in the given order */
  o.classes = "bird,cat";
  CHECK_OK(kiln_dataset_open_spec(p, &o, &d, &e), &e);
  CHECK(d && d->n == 4 && !strcmp(kiln_data_class_name(d, 0), "bird"));
  kiln_dataset_free(d);
  o.classes = NULL;
  /* integer labels, a split column, a folder holding dataset.csv */
  write_text("csv/dataset.csv", "label,image,split\n1,img/0.png,train\n0,img/1.png,test\n1,img/2.png,val\n"
                                "0,img/3.png,train\n");
  char dir[512];
  path_of(dir, sizeof dir, "csv");
  CHECK_OK(kiln_dataset_open_spec(dir, &o, &d, &e), &e);
  if (d) {
    int8_t sp[4];
    CHECK_OK(kiln_data_meta(d, lab, NULL, sp, &e), &e);
    CHECK(d->classes == 2 && !d->has_masks && lab[0] == 1 && sp[0] == KILN_SPLIT_TRAIN && sp[1] == KILN_SPLIT_TEST &&
          sp[2] == KILN_SPLIT_VAL);
    kiln_dataset_free(d);
  }
  /* labels out of range, negative, bad rows, a bad header, an empty class, a missing file */
  struct {
    const char *text, *needle;
    int64_t num_classes;
  } bad[] = {
      {"image,label\nimg/0.png,3\n", "out of range", 2},
      {"image,label\nimg/0.png,-1\n", "out of range", 0},
      {"image,label\nimg/0.png,1,extra\n", "3 fields", 0},
      {"picture,label\nimg/0.png,1\n", "header", 0},
      {"image,label\nimg/0.png,0\nimg/1.png,2\n", "class '1'", 0},
      {"image,label,mask\nimg/0.png,0,mask/nothere.png\n", "nothere.png", 0},
      {"image,label\nimg/9.png,0\n", "img/9.png", 0},
      {"image,label\n", "no rows", 0},
      {"image,label,split\nimg/0.png,0,holdout\n", "holdout", 0},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    write_text("csv/bad.csv", bad[i].text);
    path_of(p, sizeof p, "csv/bad.csv");
    kiln_err eb = {0};
    o.num_classes = bad[i].num_classes;
    kiln_code rc = kiln_dataset_open_spec(p, &o, &d, &eb);
    CHECK_MSG(rc != KILN_OK && strstr(eb.msg, bad[i].needle), "case %zu: '%s'", i, eb.msg);
    if (!rc) kiln_dataset_free(d);
  }
}

static void test_skip_bad(void) {
  kiln_err e = {0};
  mkdirs("skip");
  write_png_rel("skip/a.png", 20, 20, 3, 1);
  write_png_rel("skip/b.png", 20, 20, 3, 2);
  write_png_rel("skip/c.png", 64, 64, 3, 3);
  char src[512], dst[512];
  path_of(src, sizeof src, "skip/c.png");
  path_of(dst, sizeof dst, "skip/trunc.png");
  truncate_copy(src, dst, file_size(src) - 100); /* header fine, pixels cut */
  write_text("skip/notimg.png", "text");
  write_mask_rel("skip/wrong_mask.png", 21, 20, 0, 0, 5, 5);
  write_text("skip/list.csv", "image,label,mask\na.png,0,\nb.png,1,\ntrunc.png,0,\nnotimg.png,1,\nmissing.png,0,\n"
                              "a.png,1,wrong_mask.png\nb.png,0,\n");
  char p[512];
  path_of(p, sizeof p, "skip/list.csv");
  kiln_data_opts o = small_opts(16, 1);
  kiln_dataset *d;
  kiln_err e1 = {0};
  CHECK(kiln_dataset_open_spec(p, &o, &d, &e1) != KILN_OK && strstr(e1.msg, "notimg.png") &&
        strstr(e1.msg, "--skip-bad"));
  o.skip_bad = true;
  CHECK_OK(kiln_dataset_open_spec(p, &o, &d, &e), &e);
  if (!d) return;
  const char *const *msgs;
  int64_t ns = kiln_data_skipped(d, &msgs);
  CHECK_MSG(d->n == 3 && ns == 4, "n %lld, skipped %lld", (long long)d->n, (long long)ns);
  bool trunc = false, wrong = false;
  for (int64_t i = 0; i < ns; i++) {
    trunc |= strstr(msgs[i], "trunc.png") && strstr(msgs[i], "truncated");
    wrong |= strstr(msgs[i], "wrong_mask.png") != NULL;
  }
  CHECK(trunc && wrong);
  char sum[4096];
  kiln_data_summary(d, sum, sizeof sum);
  CHECK(strstr(sum, "skipped 4 bad files") != NULL);
  kiln_dataset *tr;
  o.val_frac = o.test_frac = 0;
  CHECK_OK(kiln_data_view(d, KILN_SPLIT_ALL, &o, &tr, &e), &e);
  CHECK(kiln_data_skipped(tr, NULL) == 4);
  kiln_dataset_free(tr);
  kiln_dataset_free(d);
  /* without skip_bad, a file truncated only in its pixels fails in get(), naming it */
  write_text("skip/list2.csv", "image,label\na.png,0\ntrunc.png,1\n");
  path_of(p, sizeof p, "skip/list2.csv");
  o.skip_bad = false;
  CHECK_OK(kiln_dataset_open_spec(p, &o, &d, &e), &e);
  if (d) {
    float img[3 * 256], mask[256];
    int64_t l;
    bool h;
    kiln_err eg = {0};
    CHECK(d->get(d, 1, img, &l, mask, &h, &eg) != KILN_OK && strstr(eg.msg, "trunc.png"));
    kiln_dataset_free(d);
  }
}

static void test_wrong_layout(void) {
  mkdirs("loose");
  write_png_rel("loose/a.png", 8, 8, 3, 1);
  char p[512];
  path_of(p, sizeof p, "loose");
  kiln_data_opts o = small_opts(8, 1);
  kiln_dataset *d;
  kiln_err e = {0};
  CHECK(kiln_dataset_open_spec(p, &o, &d, &e) != KILN_OK && strstr(e.msg, "no dataset layout fits") &&
        strstr(e.msg, "CUB-200-2011") && strstr(e.msg, "BUSI") && strstr(e.msg, "CSV"));
  kiln_err e2 = {0};
  path_of(p, sizeof p, "nothing-here");
  CHECK(kiln_dataset_open_spec(p, &o, &d, &e2) == KILN_ERR_IO && strstr(e2.msg, "nothing-here"));
  /* a CUB folder missing a file */
  mkdirs("cubbad");
  write_text("cubbad/images.txt", "1 a/b.jpg\n");
  kiln_err e3 = {0};
  path_of(p, sizeof p, "cubbad");
  CHECK(kiln_dataset_open_spec(p, &o, &d, &e3) != KILN_OK && strstr(e3.msg, "classes.txt"));
}

static void test_tensor_folder(void) {
  kiln_err e = {0};
  mkdirs("tens");
  kiln_tensor *im, *lb;
  kiln_shape si = {.rank = 4, .d = {10, 3, 8, 8}}, sl = {.rank = 1, .d = {10}};
  CHECK_OK(kiln_tensor_new(KILN_F32, &si, &im, &e), &e);
  CHECK_OK(kiln_tensor_new(KILN_I64, &sl, &lb, &e), &e);
  for (int64_t i = 0; i < im->numel; i++) ((float *)im->data)[i] = (float)(i % 17) * 0.1f;
  for (int i = 0; i < 10; i++) ((int64_t *)lb->data)[i] = i % 2;
  char p[512];
  path_of(p, sizeof p, "tens/images.npy");
  CHECK_OK(kiln_tensor_save_npy(im, p, &e), &e);
  path_of(p, sizeof p, "tens/labels.npy");
  CHECK_OK(kiln_tensor_save_npy(lb, p, &e), &e);
  path_of(p, sizeof p, "tens");
  kiln_data_opts o = small_opts(8, 1);
  kiln_dataset *d, *tr;
  CHECK_OK(kiln_dataset_open_spec(p, &o, &d, &e), &e);
  if (d) {
    CHECK(d->n == 10 && d->classes == 2 && d->h == 8);
    CHECK_OK(kiln_data_view(d, KILN_SPLIT_TRAIN, &o, &tr, &e), &e);
    CHECK(tr && tr->n == 6); /* 5 per class: 1 test, 1 val, 3 train */
    float img[3 * 64];
    int64_t l;
    bool h;
    CHECK_OK(tr->get(tr, 0, img, &l, NULL, &h, &e), &e); /* augmented through the generic path */
    kiln_dataset_free(tr);
    kiln_dataset_free(d);
  }
  kiln_tensor_free(im);
  kiln_tensor_free(lb);
}

/* ---- export and reload ---- */

static void test_export_roundtrip(void) {
  kiln_err e = {0};
  const char *specs[2] = {"synthetic:shapes", "synthetic:ultrasound"};
  for (int s = 0; s < 2; s++) {
    kiln_data_opts o = small_opts(36, 3);
    o.synth_classes = 4;
    kiln_dataset *a, *b;
    CHECK_OK(kiln_dataset_open_spec(specs[s], &o, &a, &e), &e);
    if (!a) return;
    char dir[512];
    path_of(dir, sizeof dir, s ? "export/us" : "export/shapes");
    CHECK_OK(kiln_data_export(a, dir, &e), &e);
    o.seed = 99; /* the split comes from the file, not the seed */
    CHECK_OK(kiln_dataset_open_spec(dir, &o, &b, &e), &e);
    if (!b) {
      kiln_dataset_free(a);
      return;
    }
    CHECK(b->n == a->n && b->classes == a->classes);
    for (int64_t k = 0; k < a->classes; k++) CHECK(!strcmp(kiln_data_class_name(a, k), kiln_data_class_name(b, k)));
    int64_t hw = 36 * 36, la[40], lb[40];
    int8_t sa[40], sb[40];
    CHECK_OK(kiln_data_meta(a, la, NULL, sa, &e), &e);
    CHECK_OK(kiln_data_meta(b, lb, NULL, sb, &e), &e);
    CHECK(!memcmp(la, lb, sizeof(int64_t) * a->n) && !memcmp(sa, sb, a->n));
    float *i1 = malloc(sizeof(float) * 3 * hw), *i2 = malloc(sizeof(float) * 3 * hw), *m1 = malloc(4 * hw),
          *m2 = malloc(4 * hw);
    int same_raw = 0, same_norm = 0;
    for (int64_t i = 0; i < a->n; i++) {
      int64_t l1, l2;
      bool h1, h2;
      CHECK_OK(kiln_data_get_raw(a, i, i1, &l1, m1, &h1, &e), &e);
      CHECK_OK(kiln_data_get_raw(b, i, i2, &l2, m2, &h2, &e), &e);
      same_raw += !memcmp(i1, i2, sizeof(float) * 3 * hw) && !memcmp(m1, m2, 4 * hw) && h1 == h2 && l1 == l2;
      CHECK_OK(a->get(a, i, i1, &l1, m1, &h1, &e), &e);
      CHECK_OK(b->get(b, i, i2, &l2, m2, &h2, &e), &e);
      same_norm += !memcmp(i1, i2, sizeof(float) * 3 * hw);
    }
    CHECK_MSG(same_raw == a->n, "%s: %d of %lld identical", specs[s], same_raw, (long long)a->n);
    CHECK(same_norm == a->n);
    free(i1), free(i2), free(m1), free(m2);
    kiln_dataset_free(a);
    kiln_dataset_free(b);
  }
}

/* ---- threads and speed ---- */

typedef struct get_job {
  kiln_dataset *d;
  int t;
  float *out; /* n * per */
  int fails;
} get_job;

static void *get_main(void *p) {
  get_job *j = p;
  int64_t per = j->d->c * j->d->h * j->d->w;
  for (int64_t i = j->t; i < j->d->n; i += 4) {
    kiln_err e = {0};
    int64_t l;
    bool h;
    if (j->d->get(j->d, i, j->out + i * per, &l, NULL, &h, &e)) j->fails++;
  }
  return NULL;
}

static void test_threads(void) {
  kiln_err e = {0};
  kiln_data_opts o = small_opts(32, 6);
  kiln_dataset *base, *tr;
  CHECK_OK(kiln_dataset_open_spec("synthetic:shapes", &o, &base, &e), &e);
  CHECK_OK(kiln_data_view(base, KILN_SPLIT_TRAIN, &o, &tr, &e), &e);
  if (!tr) return;
  int64_t per = 3 * 32 * 32, n = tr->n;
  float *seq = malloc(sizeof(float) * per * n), *par = malloc(sizeof(float) * per * n);
  for (int64_t i = 0; i < n; i++) {
    int64_t l;
    bool h;
    CHECK_OK(tr->get(tr, i, seq + i * per, &l, NULL, &h, &e), &e);
  }
  pthread_t th[4];
  get_job jobs[4];
  for (int t = 0; t < 4; t++) {
    jobs[t] = (get_job){.d = tr, .t = t, .out = par};
    pthread_create(&th[t], NULL, get_main, &jobs[t]);
  }
  int fails = 0;
  for (int t = 0; t < 4; t++) pthread_join(th[t], NULL), fails += jobs[t].fails;
  CHECK(fails == 0);
  CHECK(!memcmp(seq, par, sizeof(float) * per * n));
  free(seq), free(par);
  kiln_dataset_free(tr);
  kiln_dataset_free(base);
}

/* Decoding a batch of 8 JPEGs of 500x375 to 224x224 (CUB's typical size): works, and
 * prints its time (no assertion on it: speed is for benchmarks). */
static void test_decode_speed(void) {
  kiln_err e = {0};
  mkdirs("speed");
  char csv[2048] = "image,label\n";
  for (int i = 0; i < 8; i++) {
    char rel[64];
    snprintf(rel, sizeof rel, "speed/%d.jpg", i);
    write_jpeg_rel(rel, 500, 375, 3, i);
    snprintf(csv + strlen(csv), sizeof csv - strlen(csv), "%d.jpg,%d\n", i, i % 2);
  }
  write_text("speed/list.csv", csv);
  char p[512];
  path_of(p, sizeof p, "speed/list.csv");
  kiln_data_opts o = kiln_data_opts_default();
  o.val_frac = o.test_frac = 0;
  kiln_dataset *d, *tr;
  CHECK_OK(kiln_dataset_open_spec(p, &o, &d, &e), &e);
  CHECK_OK(kiln_data_view(d, KILN_SPLIT_TRAIN, &o, &tr, &e), &e);
  if (!tr) return;
  float *img = malloc(sizeof(float) * 3 * 224 * 224), *mask = malloc(4 * 224 * 224);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int64_t i = 0; i < 8; i++) {
    int64_t l;
    bool h;
    CHECK_OK(tr->get(tr, i, img, &l, mask, &h, &e), &e);
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-6;
  printf("a batch of 8 JPEGs 500x375 -> 224x224 (augmented): %.1f ms (informational)\n", ms);
  free(img), free(mask);
  kiln_dataset_free(tr);
  kiln_dataset_free(d);
}

/* Every allocation failing in turn: a clean NOMEM, nothing leaked (under ASan). */
static void test_failing_allocator(void) {
  char p[512];
  path_of(p, sizeof p, "csv/names.csv");
  kiln_data_opts o = small_opts(12, 2);
  o.width = 16;
  int ok_runs = 0;
  for (long k = 0; k < 400; k++) {
    kiln_err e = {0};
    kiln_dataset *d = NULL, *tr = NULL;
    float img[3 * 192], mask[192];
    int64_t l;
    bool h;
    kiln_alloc_fail_after(k);
    kiln_code rc = kiln_dataset_open_spec(p, &o, &d, &e);
    if (!rc) rc = kiln_data_view(d, KILN_SPLIT_TRAIN, &o, &tr, &e);
    if (!rc) rc = tr->get(tr, 0, img, &l, mask, &h, &e);
    kiln_alloc_fail_after(-1);
    CHECK_MSG(rc == KILN_OK || rc == KILN_ERR_NOMEM, "k=%ld: %s", k, e.msg);
    ok_runs += rc == KILN_OK;
    kiln_dataset_free(tr);
    kiln_dataset_free(d);
  }
  CHECK(ok_runs > 0);
  for (long k = 0; k < 60; k++) {
    kiln_err e = {0};
    kiln_dataset *d = NULL;
    float img[3 * 192], mask[192];
    int64_t l;
    bool h;
    kiln_alloc_fail_after(k);
    kiln_code rc = kiln_dataset_open_spec("synthetic:ultrasound", &o, &d, &e);
    if (!rc) rc = d->get(d, 1, img, &l, mask, &h, &e);
    kiln_alloc_fail_after(-1);
    CHECK_MSG(rc == KILN_OK || rc == KILN_ERR_NOMEM, "k=%ld: %s", k, e.msg);
    kiln_dataset_free(d);
  }
}

int main(void) {
  snprintf(root, sizeof root, "/tmp/kiln_test_data_%d", (int)getpid());
  mkdirs("codec");
  RUN(test_png_roundtrip);
  RUN(test_png_formats);
  RUN(test_jpeg);
  RUN(test_bad_images);
  RUN(test_resize);
  RUN(test_split);
  RUN(test_loc_select);
  RUN(test_synthetic_determinism);
  RUN(test_shapes_background_cue);
  RUN(test_aug_params);
  RUN(test_aug_image_mask_agree);
  RUN(test_views);
  RUN(test_cub);
  RUN(test_busi);
  RUN(test_csv);
  RUN(test_skip_bad);
  RUN(test_wrong_layout);
  RUN(test_failing_allocator);
  RUN(test_tensor_folder);
  RUN(test_export_roundtrip);
  RUN(test_threads);
  RUN(test_decode_speed);
  if (!tests_failed_) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
  }
  TEST_MAIN_END();
}
