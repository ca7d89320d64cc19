/* resize_coords.h — Resize/Upsample coordinate transforms and nearest rounding as pure functions,
 * shared by shape inference (mode parsing), the reference kernels and fused upsample kernels.
 *
 * Self-contained on purpose (no kiln headers): any kernel, in any layer, can include it.
 *
 * Conventions follow the ONNX backend suite's reference implementation (onnx 1.12
 * backend/test/case/node/resize.py), which is what conformance checks:
 *  - `scale` is the per-axis scale: the `scales` input when given, else out_size / in_size.
 *  - `resized_len` is in_len * scale *before* flooring (the suite uses it, not the integer output
 *    size, in align_corners, pytorch_half_pixel and tf_crop_and_resize; they agree whenever sizes
 *    are given or in_len * scale is an integer). */
#ifndef KILN_RESIZE_COORDS_H
#define KILN_RESIZE_COORDS_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

typedef enum kiln_coord_mode {
  KILN_COORD_HALF_PIXEL = 0,
  KILN_COORD_PYTORCH_HALF_PIXEL,
  KILN_COORD_ALIGN_CORNERS,
  KILN_COORD_ASYMMETRIC,
  KILN_COORD_TF_HALF_PIXEL_FOR_NN, /* opset 11 only */
  KILN_COORD_TF_CROP_AND_RESIZE,
} kiln_coord_mode;

typedef enum kiln_nearest_mode {
  KILN_NEAREST_ROUND_PREFER_FLOOR = 0,
  KILN_NEAREST_ROUND_PREFER_CEIL,
  KILN_NEAREST_FLOOR,
  KILN_NEAREST_CEIL,
  /* Resize-10 and Upsample: floor when upsampling, ceil when downsampling (what onnxruntime does
   * and what the opset-10 suite data encodes). */
  KILN_NEAREST_SIMPLE,
} kiln_nearest_mode;

/* Parses an ONNX coordinate_transformation_mode string; false when unknown. */
static inline bool kiln_coord_mode_parse(const char *s, kiln_coord_mode *m) {
  static const char *const names[] = {"half_pixel", "pytorch_half_pixel", "align_corners",
                                      "asymmetric", "tf_half_pixel_for_nn", "tf_crop_and_resize"};
  for (int i = 0; i < (int)(sizeof names / sizeof names[0]); i++)
    if (strcmp(s, names[i]) == 0) {
      *m = (kiln_coord_mode)i;
      return true;
    }
  return false;
}

/* Parses an ONNX nearest_mode string; false when unknown. */
static inline bool kiln_nearest_mode_parse(const char *s, kiln_nearest_mode *m) {
  static const char *const names[] = {"round_prefer_floor", "round_prefer_ceil", "floor", "ceil"};
  for (int i = 0; i < (int)(sizeof names / sizeof names[0]); i++)
    if (strcmp(s, names[i]) == 0) {
      *m = (kiln_nearest_mode)i;
      return true;
    }
  return false;
}

/* The input coordinate that output index `x` maps to along one axis.  roi_start/roi_end are the
 * axis' region of interest in normalized [0, 1] coordinates (tf_crop_and_resize only). */
static inline double kiln_resize_coord(kiln_coord_mode m, double x, int64_t in_len,
                                       double resized_len, double scale, double roi_start,
                                       double roi_end) {
  switch (m) {
  case KILN_COORD_HALF_PIXEL: return (x + 0.5) / scale - 0.5;
  case KILN_COORD_PYTORCH_HALF_PIXEL: return resized_len > 1 ? (x + 0.5) / scale - 0.5 : 0.0;
  case KILN_COORD_ALIGN_CORNERS:
    return resized_len == 1 ? 0.0 : x * (double)(in_len - 1) / (resized_len - 1);
  case KILN_COORD_ASYMMETRIC: return x / scale;
  case KILN_COORD_TF_HALF_PIXEL_FOR_NN: return (x + 0.5) / scale;
  case KILN_COORD_TF_CROP_AND_RESIZE: {
    double span = (roi_end - roi_start) * (double)(in_len - 1);
    double c = resized_len == 1 ? span / 2 : x * span / (resized_len - 1);
    return c + roi_start * (double)(in_len - 1);
  }
  }
  return 0.0;
}

/* tf_crop_and_resize samples outside the input take extrapolation_value instead. */
static inline bool kiln_resize_outside(kiln_coord_mode m, double c, int64_t in_len) {
  return m == KILN_COORD_TF_CROP_AND_RESIZE && (c < 0 || c > (double)(in_len - 1));
}

/* Nearest input index for coordinate `c` (not clamped; callers clamp to [0, in_len - 1]).
 * `scale` only matters for KILN_NEAREST_SIMPLE. */
static inline int64_t kiln_resize_nearest(kiln_nearest_mode m, double c, double scale) {
  double f = floor(c);
  if (c == f) return (int64_t)f;
  switch (m) {
  case KILN_NEAREST_ROUND_PREFER_FLOOR: return (int64_t)(c - f <= 0.5 ? f : f + 1);
  case KILN_NEAREST_ROUND_PREFER_CEIL: return (int64_t)(c - f < 0.5 ? f : f + 1);
  case KILN_NEAREST_FLOOR: return (int64_t)f;
  case KILN_NEAREST_CEIL: return (int64_t)f + 1;
  case KILN_NEAREST_SIMPLE: return (int64_t)(scale < 1 ? f + 1 : f);
  }
  return (int64_t)f;
}

static inline int64_t kiln_resize_clamp(int64_t i, int64_t in_len) {
  return i < 0 ? 0 : i >= in_len ? in_len - 1 : i;
}

/* Cubic convolution weights (Keys, parameter a) of the 4 taps around a coordinate whose
 * fractional distance from tap 1 is `t` in (0, 1]. */
static inline void kiln_cubic_coeffs(double t, double a, double w[4]) {
  double s = 1 - t;
  w[0] = ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a;
  w[1] = ((a + 2) * t - (a + 3)) * t * t + 1;
  w[2] = ((a + 2) * s - (a + 3)) * s * s + 1;
  w[3] = ((a * (s + 1) - 5 * a) * (s + 1) + 8 * a) * (s + 1) - 4 * a;
}

/* The taps of linear (n = 2) or cubic (n = 4) interpolation at coordinate `c`: writes the first
 * tap's (unclamped) index to *first and the fraction t in (0, 1] from tap n/2 - 1 to *t.
 * Like the suite's reference, an integral coordinate uses t = 1 from the tap below it, and the
 * window is shifted to stay within the input padded by n/2 on each side (edge padding). */
static inline void kiln_resize_taps(double c, int n, int64_t in_len, int64_t *first, double *t) {
  double f = floor(c);
  double base = c == f ? f - 1 : f;
  *t = c - base;
  int64_t start = (int64_t)base - n / 2 + 1;
  int64_t pad = n / 2;
  if (start < -pad) start = -pad;
  if (start + n - 1 > in_len - 1 + pad) start = in_len - 1 + pad - (n - 1);
  *first = start;
}

#endif
