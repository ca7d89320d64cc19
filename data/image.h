/* image.h — PNG/JPEG decoding and PNG writing, antialiased bilinear resizing and
 * ImageNet normalization: the pixel layer under the datasets.
 *
 * Images are planar float: px[(ch*h + y)*w + x], values in [0,1] (8-bit samples
 * become v/255, 16-bit ones v/65535).  Decoding refuses images larger than
 * KILN_IMAGE_MAX_SIDE per side or KILN_IMAGE_MAX_PIXELS in all before allocating,
 * and every failure (unreadable, corrupt, truncated, unsupported) is a kiln_err
 * naming the file.  All functions are thread-safe (no shared state). */
#ifndef KILN_DATA_IMAGE_H
#define KILN_DATA_IMAGE_H

#include "ir/base.h"

#define KILN_IMAGE_MAX_SIDE 16384
#define KILN_IMAGE_MAX_PIXELS ((int64_t)256 << 20) /* 256 megapixels */

typedef struct kiln_image {
  int w, h, c; /* c is 1 (gray) or 3 (RGB) */
  float *px;   /* planar, c*h*w floats in [0,1], owned */
} kiln_image;

typedef enum kiln_image_format { KILN_IMG_UNKNOWN = 0, KILN_IMG_PNG, KILN_IMG_JPEG } kiln_image_format;

extern const float kiln_imagenet_mean[3], kiln_imagenet_std[3];

/* The format by the file's first bytes (not its name). */
kiln_image_format kiln_image_sniff(const unsigned char *head, size_t n);

/* Width and height from the header only (cheap): checks the file is a PNG or JPEG
 * whose header decodes and whose size is within the limits. */
kiln_code kiln_image_info(const char *path, int *w, int *h, kiln_err *e);

/* Decodes a whole PNG (1/2/4/8/16-bit gray, gray+alpha, palette, RGB, RGBA;
 * alpha is dropped) or JPEG (gray, RGB/YCbCr).  channels 3: gray is replicated;
 * channels 1: RGB becomes the per-pixel maximum of R, G, B (for masks: any
 * coloured mark counts); channels 0: as stored (1 or 3). */
kiln_code kiln_image_read(const char *path, int channels, kiln_image *out, kiln_err *e);

kiln_code kiln_image_alloc(kiln_image *im, int w, int h, int c, kiln_err *e);
void kiln_image_release(kiln_image *im);

/* Writes 8-bit interleaved pixels (c = 1 gray, 3 RGB, 4 RGBA) as a PNG, atomically
 * (a temporary file in the same folder, renamed over `path`). */
kiln_code kiln_png_write(const char *path, const uint8_t *pixels, int w, int h, int c, kiln_err *e);
/* Writes an 8-bit JPEG (c = 1 or 3), atomically; quality 1..100. */
kiln_code kiln_jpeg_write(const char *path, const uint8_t *pixels, int w, int h, int c, int quality,
                          kiln_err *e);
/* A planar [0,1] image as an 8-bit PNG (round(v*255), clamped). */
kiln_code kiln_image_write_png(const char *path, const kiln_image *im, kiln_err *e);

/* Planar [0,1] floats to interleaved 8-bit: round(v*255), clamped. */
void kiln_image_to_u8(const float *planar, int c, int w, int h, uint8_t *interleaved);

/* Resizes the region [x0,x0+cw) x [y0,y0+ch) of `src` (all channels) to dw x dh
 * into planar `dst` (src->c*dh*dw floats), mirrored left-right when `flip`.
 * Bilinear (triangle filter) with half-pixel centres; when shrinking, the filter's
 * support grows with the factor (antialiasing, as PIL and torchvision antialias=True
 * do).  Samples never come from outside the region.  The full image at its own
 * size is copied exactly. */
kiln_code kiln_image_resize(const kiln_image *src, int x0, int y0, int cw, int ch, bool flip, float *dst,
                            int dw, int dh, kiln_err *e);

/* In place: (v - mean[c]) / std[c] per channel with ImageNet's statistics (c = 3),
 * or the channel mean of them for c = 1. */
void kiln_image_normalize(float *planar, int c, int64_t hw);
void kiln_image_denormalize(float *planar, int c, int64_t hw);
/* In place: v >= 0.5 -> 1, else 0. */
void kiln_mask_threshold(float *m, int64_t n);

#endif
