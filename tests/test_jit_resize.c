/* test_jit_resize.c — Resize/Upsample/Pad JIT kernels against the reference on hand-built
 * graphs: every mode, coordinate transform and nearest rounding, scales and sizes, up- and
 * downsampling of 1 to 5 axes, tf_crop_and_resize extrapolation, old opsets, Pad's modes with
 * negative and oversized pads and run-time constants, every dtype, long rows, and results
 * bitwise identical at 1 and 3 threads. */
#include "jit_diff_tensor.h"

#define RF(...) jd_rand(KILN_F32, (int)(sizeof(DIMS(__VA_ARGS__)) / 8), DIMS(__VA_ARGS__))
#define RI(...) jd_rand(KILN_I64, (int)(sizeof(DIMS(__VA_ARGS__)) / 8), DIMS(__VA_ARGS__))
#define RI32(...) jd_rand(KILN_I32, (int)(sizeof(DIMS(__VA_ARGS__)) / 8), DIMS(__VA_ARGS__))
#define RB(...) jd_rand(KILN_BOOL, (int)(sizeof(DIMS(__VA_ARGS__)) / 8), DIMS(__VA_ARGS__))
#define VEC(...) ti64(1, DIMS((int64_t)(sizeof(IV(__VA_ARGS__)) / 8)), IV(__VA_ARGS__))
#define FVEC(...) tf(1, DIMS((int64_t)(sizeof(FV(__VA_ARGS__)) / 4)), FV(__VA_ARGS__))
#define NO_ROI() tn_new(KILN_F32, 1, DIMS(0))

/* interpolation: float32 accumulation against the reference's double */
#define RTOL 1e-4
#define ATOL 1e-5

static void run_free(jd_case c, const char *what) {
  jd_run(&c, what);
  jd_free(&c);
}

static const char *const coord_modes[] = {"half_pixel",           "pytorch_half_pixel",
                                          "align_corners",        "asymmetric",
                                          "tf_half_pixel_for_nn", "tf_crop_and_resize"};
static const char *const nearest_modes[] = {"round_prefer_floor", "round_prefer_ceil", "floor",
                                            "ceil"};

/* Resize (opset 11; 13 would refuse tf_half_pixel_for_nn) of x by scales or to sizes. */
static jd_case resize_case(kiln_tensor *x, kiln_tensor *scales, kiln_tensor *sizes,
                           const char *mode, const char *coord, const char *nearest) {
  int rank = x->shape.rank;
  kiln_tensor *roi = NO_ROI();
  if (strcmp(coord, "tf_crop_and_resize") == 0) { /* partly outside the input */
    kiln_tensor_free(roi);
    roi = tn_new(KILN_F32, 1, DIMS(2 * rank));
    float *r = roi->data;
    for (int d = 0; d < rank; d++) {
      r[d] = d < rank - 2 ? 0.0f : d == rank - 1 ? -0.2f : 0.1f;
      r[rank + d] = d < rank - 2 ? 1.0f : d == rank - 1 ? 1.3f : 0.8f;
    }
  }
  jd_case c = {KILN_OP_Resize,
               11,
               {x, roi, scales ? scales : tn_new(KILN_F32, 1, DIMS(0)), sizes},
               sizes ? 4 : 3,
               0xe,
               1,
               {AS("mode", mode), AS("coordinate_transformation_mode", coord),
                AS("nearest_mode", nearest ? nearest : "round_prefer_floor"),
                AF("extrapolation_value", -7.5)}};
  if (strcmp(mode, "nearest"))
    c.rtol = RTOL, c.atol = ATOL;
  return c;
}

static void test_nearest(void) {
  char what[200];
  for (int cm = 0; cm < 6; cm++)
    for (int nm = 0; nm < 4; nm++) {
      snprintf(what, sizeof what, "nearest %s %s", coord_modes[cm], nearest_modes[nm]);
      run_free(resize_case(RF(1, 2, 5, 7), FVEC(1, 1, 2, 1.7f), NULL, "nearest", coord_modes[cm],
                           nearest_modes[nm]),
               what);
      run_free(resize_case(RF(2, 3, 7, 9), FVEC(1, 1, 0.6f, 0.45f), NULL, "nearest",
                           coord_modes[cm], nearest_modes[nm]),
               what);
      run_free(resize_case(RF(1, 1, 4, 5), NULL, VEC(1, 1, 9, 3), "nearest", coord_modes[cm],
                           nearest_modes[nm]),
               what);
    }
  run_free(resize_case(RI(2, 3, 4), FVEC(1.5f, 1, 2.5f), NULL, "nearest", "asymmetric", "floor"),
           "nearest i64, all axes");
  run_free(resize_case(RB(3, 5), NULL, VEC(7, 4), "nearest", "half_pixel", NULL), "nearest bool");
  run_free(resize_case(RI32(6), FVEC(0.5f), NULL, "nearest", "align_corners", "ceil"),
           "nearest i32 1-d");
  run_free(resize_case(RF(1, 1, 3, 9000), FVEC(1, 1, 1, 2.5f), NULL, "nearest", "half_pixel", NULL),
           "nearest long rows");
  run_free(resize_case(RF(2, 3, 4, 5), FVEC(1, 1, 1, 1), NULL, "nearest", "half_pixel", NULL),
           "nearest scale 1");
  run_free(resize_case(RF(2, 3, 4, 5), NULL, VEC(2, 3, 0, 5), "nearest", "half_pixel", NULL),
           "nearest to empty");
}

static void test_linear(void) {
  char what[200];
  for (int cm = 0; cm < 6; cm++) {
    snprintf(what, sizeof what, "linear %s", coord_modes[cm]);
    run_free(
        resize_case(RF(1, 2, 5, 7), FVEC(1, 1, 2, 1.7f), NULL, "linear", coord_modes[cm], NULL),
        what);
    run_free(
        resize_case(RF(2, 3, 8, 9), FVEC(1, 1, 0.6f, 0.45f), NULL, "linear", coord_modes[cm], NULL),
        what);
    run_free(resize_case(RF(1, 1, 4, 5), NULL, VEC(1, 1, 9, 3), "linear", coord_modes[cm], NULL),
             what);
    run_free(resize_case(RF(7), FVEC(2.3f), NULL, "linear", coord_modes[cm], NULL), what);
    run_free(resize_case(RF(2, 3, 4, 5), FVEC(1.5f, 2, 0.5f, 1.3f), NULL, "linear", coord_modes[cm],
                         NULL),
             what);
  }
  run_free(resize_case(RF(2, 5, 6), FVEC(1, 1.5f, 1), NULL, "linear", "half_pixel", NULL),
           "linear middle axis only");
  run_free(
      resize_case(RF(1, 2, 3, 4, 5), FVEC(1, 1, 2, 2, 2), NULL, "linear", "align_corners", NULL),
      "trilinear");
  run_free(resize_case(RF(1, 1, 2, 20000), FVEC(1, 1, 2, 1.5f), NULL, "linear", "half_pixel", NULL),
           "linear long rows");
  run_free(resize_case(RF(1, 1, 2, 20000), FVEC(1, 1, 3, 1), NULL, "linear", "asymmetric", NULL),
           "linear long rows, rows only");
  run_free(resize_case(RF(3, 4), FVEC(1, 1), NULL, "linear", "half_pixel", NULL), "linear scale 1");
  run_free(resize_case(RF(1, 1, 1, 1), FVEC(1, 1, 3, 2), NULL, "linear", "half_pixel", NULL),
           "linear from one pixel");
}

static void test_cubic(void) {
  char what[200];
  for (int cm = 0; cm < 6; cm++)
    for (int ex = 0; ex < 2; ex++) {
      snprintf(what, sizeof what, "cubic %s exclude_outside=%d", coord_modes[cm], ex);
      jd_case c =
          resize_case(RF(1, 2, 6, 7), FVEC(1, 1, 1.8f, 0.7f), NULL, "cubic", coord_modes[cm], NULL);
      c.attrs[4] = (jd_attr)AI("exclude_outside", ex);
      c.attrs[5] = (jd_attr)AF("cubic_coeff_a", ex ? -0.5 : -0.75);
      run_free(c, what);
      c = resize_case(RF(1, 1, 4, 4), NULL, VEC(1, 1, 9, 3), "cubic", coord_modes[cm], NULL);
      c.attrs[4] = (jd_attr)AI("exclude_outside", ex);
      run_free(c, what);
    }
  run_free(
      resize_case(RF(3, 4, 5, 6), FVEC(1.4f, 1.5f, 0.6f, 2), NULL, "cubic", "half_pixel", NULL),
      "cubic of every axis (64 combinations)");
  run_free(resize_case(RF(2, 9000), FVEC(1.5f, 2.5f), NULL, "cubic", "asymmetric", NULL),
           "cubic long rows");
}

/* More tap combinations than the kernel unrolls: refused at compile time (the reference runs). */
static void test_too_many_axes(void) {
  jd_case c = resize_case(RF(2, 3, 3, 3, 3), FVEC(1.5f, 1.5f, 1.5f, 1.5f, 1.5f), NULL, "cubic",
                          "half_pixel", NULL);
  kiln_tensor *got[1] = {0};
  kiln_err e = {0};
  CHECK(jd_jit(&c, 1, got, &e) == KILN_ERR_UNSUPPORTED);
  CHECK(strstr(e.msg, "cubic") != NULL && strstr(e.msg, "Resize") != NULL);
  kiln_tensor_free(got[0]);
  jd_free(&c);
}

static void test_old_opsets(void) {
  run_free((jd_case){KILN_OP_Upsample,
                     7,
                     {RF(1, 2, 3, 4)},
                     1,
                     0,
                     1,
                     {AS("mode", "nearest"), AFV("scales", 1, 1, 2, 3)}},
           "upsample 7 nearest");
  run_free((jd_case){KILN_OP_Upsample,
                     7,
                     {RF(1, 2, 3, 4)},
                     1,
                     0,
                     1,
                     {AS("mode", "bilinear"), AFV("scales", 1, 1, 2, 2.5)},
                     RTOL,
                     ATOL},
           "upsample 7 bilinear");
  run_free((jd_case){KILN_OP_Upsample,
                     9,
                     {RI(1, 2, 3, 4), FVEC(1, 1, 2, 2)},
                     2,
                     2,
                     1,
                     {AS("mode", "nearest")}},
           "upsample 9 nearest i64");
  run_free((jd_case){KILN_OP_Upsample,
                     9,
                     {RF(2, 3, 4), FVEC(1, 1.5f, 2)},
                     2,
                     2,
                     1,
                     {AS("mode", "linear")},
                     RTOL,
                     ATOL},
           "upsample 9 linear");
  run_free((jd_case){KILN_OP_Resize,
                     10,
                     {RF(1, 2, 5, 6), FVEC(1, 1, 0.5f, 0.7f)},
                     2,
                     2,
                     1,
                     {AS("mode", "nearest")}},
           "resize 10 nearest downsample");
  run_free((jd_case){KILN_OP_Resize,
                     10,
                     {RF(1, 2, 5, 6), FVEC(1, 1, 1.5f, 2)},
                     2,
                     2,
                     1,
                     {AS("mode", "linear")},
                     RTOL,
                     ATOL},
           "resize 10 linear");
  run_free((jd_case){KILN_OP_Resize,
                     13,
                     {RF(1, 2, 5, 6), NULL, NULL, VEC(1, 2, 8, 4)},
                     4,
                     0xe,
                     1,
                     {AS("mode", "cubic")},
                     RTOL,
                     ATOL},
           "resize 13 sizes, no roi");
}

/* ---- Pad ---- */

static void test_pad_modes(void) {
  static const char *const modes[] = {"constant", "reflect", "edge"};
  char what[200];
  for (int m = 0; m < 3; m++) {
    snprintf(what, sizeof what, "pad 2 %s", modes[m]);
    run_free(
        (jd_case){KILN_OP_Pad,
                  2,
                  {RF(1, 2, 5, 7)},
                  1,
                  0,
                  1,
                  {AS("mode", modes[m]), AV("pads", 0, 0, 2, 3, 0, 0, 1, 2), AF("value", 1.25)}},
        what);
    snprintf(what, sizeof what, "pad 11 %s", modes[m]);
    run_free((jd_case){KILN_OP_Pad,
                       11,
                       {RF(1, 2, 5, 7), VEC(0, 1, 2, 3, 1, 0, 4, 2), FVEC(-3)},
                       3,
                       6,
                       1,
                       {AS("mode", modes[m])}},
             what);
    snprintf(what, sizeof what, "pad 11 %s negative pads", modes[m]);
    run_free((jd_case){KILN_OP_Pad,
                       11,
                       {RF(2, 3, 6, 7), VEC(0, -1, 2, -2, 0, 1, -1, 3)},
                       2,
                       2,
                       1,
                       {AS("mode", modes[m])}},
             what);
    snprintf(what, sizeof what, "pad 11 %s i64 rank 1", modes[m]);
    run_free((jd_case){KILN_OP_Pad, 11, {RI(5), VEC(3, 4)}, 2, 2, 1, {AS("mode", modes[m])}}, what);
    snprintf(what, sizeof what, "pad 11 %s bool rank 3", modes[m]);
    run_free(
        (jd_case){
            KILN_OP_Pad, 11, {RB(3, 4, 2), VEC(1, 0, 1, 1, 2, 0)}, 2, 2, 1, {AS("mode", modes[m])}},
        what);
    snprintf(what, sizeof what, "pad 11 %s long rows", modes[m]);
    run_free(
        (jd_case){
            KILN_OP_Pad, 11, {RF(2, 20000), VEC(1, 3, 0, 5)}, 2, 2, 1, {AS("mode", modes[m])}},
        what);
    snprintf(what, sizeof what, "pad 11 %s zero pads", modes[m]);
    run_free(
        (jd_case){KILN_OP_Pad, 11, {RI32(3, 4), VEC(0, 0, 0, 0)}, 2, 2, 1, {AS("mode", modes[m])}},
        what);
  }
  run_free(
      (jd_case){KILN_OP_Pad, 11, {RF(3, 2), VEC(5, 0, 4, 0)}, 2, 2, 1, {AS("mode", "reflect")}},
      "reflect more than the axis");
  run_free(
      (jd_case){KILN_OP_Pad, 11, {RF(1, 3), VEC(0, 4, 0, 3)}, 2, 2, 1, {AS("mode", "reflect")}},
      "reflect a size-1 axis");
  run_free((jd_case){KILN_OP_Pad, 11, {RF(2, 0), VEC(0, 1, 0, 2), FVEC(4.5f)}, 3, 6, 1},
           "pad an empty input");
  run_free((jd_case){KILN_OP_Pad, 11, {RF(3, 4), VEC(0, -2, 0, -2)}, 2, 2, 1}, "crop to empty");
  run_free(
      (jd_case){KILN_OP_Pad, 11, {RI(2, 3), VEC(1, 1, 1, 1), ti64(0, DIMS(0), IV(-9))}, 3, 2, 1},
      "pad constant fed at run time");
  run_free((jd_case){KILN_OP_Pad, 11, {RF(4, 5), VEC(2, 2, 2, 2)}, 2, 2, 1},
           "pad default constant");
  run_free(
      (jd_case){KILN_OP_Pad, 2, {RI(4, 5)}, 1, 0, 1, {AV("pads", 1, 0, 0, 2), AF("value", 3.9)}},
      "pad 2 i64 value");
}

int main(void) {
  RUN(test_nearest);
  RUN(test_linear);
  RUN(test_cubic);
  RUN(test_too_many_axes);
  RUN(test_old_opsets);
  RUN(test_pad_modes);
  (void)on_run, (void)on_end, (void)on_node, (void)ti32;
  TEST_MAIN_END();
}
