/* test_ops_resize.c — Resize, Upsample and Pad on hand-built graphs: PyTorch interpolate
 * semantics (nearest, bilinear with and without align_corners, bicubic), sizes vs scales,
 * crop-and-resize, the shared coordinate functions, every Pad mode, and bad inputs. */
#include "ir/graph.h"
#include "runtime/ref.h"
#include "runtime/ref/resize_coords.h"
#include "test.h"

/* ---- graph building ---- */

#define OMIT ((kiln_tensor *)1) /* an omitted optional input ("" in ONNX) */

static kiln_tensor *tensor_f32(int rank, const int64_t *dims, const float *v) {
  kiln_err e = {0};
  kiln_tensor *t = NULL;
  kiln_shape s = kiln_shape_make(rank, dims);
  if (kiln_tensor_new(KILN_F32, &s, &t, &e)) return NULL;
  for (int64_t i = 0; i < t->numel; i++) ((float *)t->data)[i] = v ? v[i] : (float)(i + 1);
  return t;
}

static kiln_tensor *vec_f32(int n, const float *v) { return tensor_f32(1, (int64_t[]){n}, v); }

static kiln_tensor *vec_i64(int n, const int64_t *v) {
  kiln_err e = {0};
  kiln_tensor *t = NULL;
  kiln_shape s = kiln_shape_make(1, (int64_t[]){n});
  if (kiln_tensor_new(KILN_I64, &s, &t, &e)) return NULL;
  for (int i = 0; i < n; i++) ((int64_t *)t->data)[i] = v[i];
  return t;
}

typedef struct built {
  kiln_graph *g;
  int node;
} built;

/* y = op(x, in[1], in[2], ...) where x is a graph input of dtype dt and shape xs and in[i] are
 * constants (ownership taken), OMIT, or NULL (the list ends at the first NULL). */
static built build(kiln_op op, int opset, kiln_dtype dt, int rank, const int64_t *xdims,
                   kiln_tensor *const *consts) {
  kiln_err e = {0};
  built b = {ir_graph_new(), -1};
  ir_set_opset(b.g, "", opset, &e);
  int ids[8], x, y, n = 1;
  ir_add_value(b.g, "x", &x, &e);
  b.g->values[x].dtype = dt;
  b.g->values[x].shape = kiln_shape_make(rank, xdims);
  b.g->values[x].typed = true;
  ir_add_input(b.g, x, &e);
  ids[0] = x;
  static const char *names[] = {"x", "in1", "in2", "in3", "in4"};
  for (; consts && consts[n - 1]; n++) {
    if (consts[n - 1] == OMIT) {
      ids[n] = -1;
      continue;
    }
    ir_add_const(b.g, names[n], consts[n - 1], true, &ids[n], &e);
  }
  ir_add_value(b.g, "y", &y, &e);
  ir_add_node(b.g, op, "node", ids, n, (int[]){y}, 1, &b.node, &e);
  ir_add_output(b.g, y, &e);
  CHECK_MSG(e.code == KILN_OK, "%s", e.msg);
  return b;
}

/* Infers and runs; returns y (caller frees) or NULL with *rc set by the failing step. */
static kiln_tensor *run(built b, const kiln_tensor *x, kiln_code *rc, kiln_err *e) {
  kiln_evaluator ev = kiln_ref_evaluator();
  *rc = ir_verify(b.g, e);
  if (!*rc) *rc = ir_infer(b.g, &ev, e);
  if (*rc) return NULL;
  kiln_tensor *y = NULL;
  kiln_ref_ctx ctx = {.g = b.g};
  *rc = kiln_ref_run(b.g, &ctx, (kiln_tensor *const[]){(kiln_tensor *)x}, &y, e);
  return y;
}

/* Runs and compares y to `want` of shape (rank, dims). */
static void expect_f32(built b, const kiln_tensor *x, int rank, const int64_t *dims,
                       const float *want, double atol) {
  kiln_err e = {0};
  kiln_code rc;
  kiln_tensor *y = run(b, x, &rc, &e);
  CHECK_MSG(rc == KILN_OK, "%s", e.msg);
  if (y) {
    kiln_shape s = kiln_shape_make(rank, dims);
    char a[96], w[96];
    CHECK_MSG(kiln_shape_eq(&y->shape, &s), "shape %s, want %s",
              kiln_shape_str(&y->shape, a, sizeof a), kiln_shape_str(&s, w, sizeof w));
    if (kiln_shape_eq(&y->shape, &s))
      for (int64_t i = 0; i < y->numel; i++)
        CHECK_CLOSE(((float *)y->data)[i], want[i], 1e-6, atol);
  }
  kiln_tensor_free(y);
  ir_graph_free(b.g);
}

/* Expects shape inference to fail with `code` and a message containing `needle`. */
static void expect_error(built b, kiln_code code, const char *needle) {
  kiln_err e = {0};
  kiln_evaluator ev = kiln_ref_evaluator();
  kiln_code rc = ir_verify(b.g, &e);
  if (!rc) rc = ir_infer(b.g, &ev, &e);
  CHECK_MSG(rc == code, "got %s: %s", kiln_code_name(rc), e.msg);
  CHECK_MSG(strstr(e.msg, needle) != NULL, "message '%s' lacks '%s'", e.msg, needle);
  ir_graph_free(b.g);
}

static const float X22[] = {1, 2, 3, 4};
#define NELEM_(a) ((int)(sizeof(a) / sizeof((a)[0])))
#define D4(a, b, c, d) ((const int64_t[]){a, b, c, d})

/* ---- Resize ---- */

static void test_nearest_x2_pytorch(void) {
  /* F.interpolate(mode='nearest', scale_factor=2) = asymmetric coordinates + floor. */
  static const float want[] = {1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4};
  kiln_tensor *x = tensor_f32(4, D4(1, 1, 2, 2), X22);
  built b = build(KILN_OP_Resize, 13, KILN_F32, 4, D4(1, 1, 2, 2),
                  (kiln_tensor *[]){OMIT, vec_f32(4, (float[]){1, 1, 2, 2}), NULL});
  kiln_err e = {0};
  ir_set_attr_str(b.g, b.node, "coordinate_transformation_mode", "asymmetric", &e);
  ir_set_attr_str(b.g, b.node, "nearest_mode", "floor", &e);
  expect_f32(b, x, 4, D4(1, 1, 4, 4), want, 0);
  /* Upsample opset 9 (scales input) and opset 7 (scales attribute) give the same. */
  b = build(KILN_OP_Upsample, 9, KILN_F32, 4, D4(1, 1, 2, 2),
            (kiln_tensor *[]){vec_f32(4, (float[]){1, 1, 2, 2}), NULL});
  expect_f32(b, x, 4, D4(1, 1, 4, 4), want, 0);
  b = build(KILN_OP_Upsample, 7, KILN_F32, 4, D4(1, 1, 2, 2), NULL);
  ir_set_attr_floats(b.g, b.node, "scales", (double[]){1, 1, 2, 2}, 4, &e);
  expect_f32(b, x, 4, D4(1, 1, 4, 4), want, 0);
  kiln_tensor_free(x);
}

static void test_nearest_sizes_and_ints(void) {
  /* F.interpolate(3x3, size=(2,5), mode='nearest') on int64 data: exact copies. */
  kiln_err e = {0};
  kiln_tensor *x = NULL;
  kiln_tensor_new(KILN_I64, &(kiln_shape){.rank = 2, .d = {3, 3}}, &x, &e);
  for (int i = 0; i < 9; i++) ((int64_t *)x->data)[i] = ((int64_t)1 << 40) + i;
  built b = build(KILN_OP_Resize, 13, KILN_I64, 2, (int64_t[]){3, 3},
                  (kiln_tensor *[]){OMIT, OMIT, vec_i64(2, (int64_t[]){2, 5}), NULL});
  ir_set_attr_str(b.g, b.node, "coordinate_transformation_mode", "asymmetric", &e);
  ir_set_attr_str(b.g, b.node, "nearest_mode", "floor", &e);
  kiln_code rc;
  kiln_tensor *y = run(b, x, &rc, &e);
  CHECK_MSG(rc == KILN_OK, "%s", e.msg);
  static const int want[] = {0, 0, 1, 1, 2, 3, 3, 4, 4, 5};
  if (y) {
    CHECK(y->shape.rank == 2 && y->shape.d[0] == 2 && y->shape.d[1] == 5);
    for (int i = 0; i < 10; i++) CHECK(((int64_t *)y->data)[i] == ((int64_t)1 << 40) + want[i]);
  }
  kiln_tensor_free(y);
  kiln_tensor_free(x);
  ir_graph_free(b.g);
}

static void test_nearest_modes(void) {
  /* round_prefer_floor/ceil differ only at .5; half_pixel 2 -> 4 hits exactly .25/.75. */
  CHECK(kiln_resize_nearest(KILN_NEAREST_ROUND_PREFER_FLOOR, 1.5, 1) == 1);
  CHECK(kiln_resize_nearest(KILN_NEAREST_ROUND_PREFER_CEIL, 1.5, 1) == 2);
  CHECK(kiln_resize_nearest(KILN_NEAREST_FLOOR, 1.9, 1) == 1);
  CHECK(kiln_resize_nearest(KILN_NEAREST_CEIL, 1.1, 1) == 2);
  CHECK(kiln_resize_nearest(KILN_NEAREST_CEIL, 2.0, 1) == 2);
  CHECK(kiln_resize_nearest(KILN_NEAREST_SIMPLE, 1.4, 2) == 1);   /* upsampling: floor */
  CHECK(kiln_resize_nearest(KILN_NEAREST_SIMPLE, 1.4, 0.5) == 2); /* downsampling: ceil */
  CHECK(kiln_resize_nearest(KILN_NEAREST_ROUND_PREFER_FLOOR, -0.25, 1) == 0);
  CHECK_CLOSE(kiln_resize_coord(KILN_COORD_HALF_PIXEL, 0, 2, 4, 2, 0, 1), -0.25, 0, 0);
  CHECK_CLOSE(kiln_resize_coord(KILN_COORD_PYTORCH_HALF_PIXEL, 0, 4, 1, 0.25, 0, 1), 0, 0, 0);
  CHECK_CLOSE(kiln_resize_coord(KILN_COORD_ALIGN_CORNERS, 2, 2, 4, 2, 0, 1), 2.0 / 3, 1e-12, 0);
  CHECK_CLOSE(kiln_resize_coord(KILN_COORD_ASYMMETRIC, 3, 2, 4, 2, 0, 1), 1.5, 0, 0);
  CHECK_CLOSE(kiln_resize_coord(KILN_COORD_TF_HALF_PIXEL_FOR_NN, 1, 4, 2, 0.5, 0, 1), 3, 0, 0);
  CHECK_CLOSE(kiln_resize_coord(KILN_COORD_TF_CROP_AND_RESIZE, 1, 5, 3, 0.6, 0.25, 0.75), 2, 0,
              1e-12);

  /* Resize 1x4 -> 1x8 along the last axis.  half_pixel coordinates are -.25 .25 .75 1.25 ...;
   * asymmetric ones are 0 .5 1 1.5 ..., where the round_prefer_* modes differ. */
  static const struct {
    const char *coord, *mode;
    float want[8];
  } cases[] = {
      {"half_pixel", "round_prefer_floor", {1, 1, 2, 2, 3, 3, 4, 4}},
      {"half_pixel", "round_prefer_ceil", {1, 1, 2, 2, 3, 3, 4, 4}},
      {"half_pixel", "floor", {1, 1, 1, 2, 2, 3, 3, 4}},
      {"half_pixel", "ceil", {1, 2, 2, 3, 3, 4, 4, 4}},
      {"asymmetric", "round_prefer_floor", {1, 1, 2, 2, 3, 3, 4, 4}},
      {"asymmetric", "round_prefer_ceil", {1, 2, 2, 3, 3, 4, 4, 4}},
      {"asymmetric", "floor", {1, 1, 2, 2, 3, 3, 4, 4}},
      {"align_corners", "round_prefer_floor", {1, 1, 2, 2, 3, 3, 4, 4}}, /* 3/7 steps */
  };
  kiln_tensor *x = tensor_f32(2, (int64_t[]){1, 4}, NULL);
  for (int c = 0; c < NELEM_(cases); c++) {
    kiln_err e = {0};
    built b = build(KILN_OP_Resize, 13, KILN_F32, 2, (int64_t[]){1, 4},
                    (kiln_tensor *[]){OMIT, vec_f32(2, (float[]){1, 2}), NULL});
    ir_set_attr_str(b.g, b.node, "coordinate_transformation_mode", cases[c].coord, &e);
    ir_set_attr_str(b.g, b.node, "nearest_mode", cases[c].mode, &e);
    expect_f32(b, x, 2, (int64_t[]){1, 8}, cases[c].want, 0);
  }
  kiln_tensor_free(x);
}

static const float BILINEAR_HALF_PIXEL[] = {1,   1.25, 1.75, 2,   1.5, 1.75, 2.25, 2.5,
                                            2.5, 2.75, 3.25, 3.5, 3,   3.25, 3.75, 4};

static void test_bilinear_x2(void) {
  /* F.interpolate(mode='bilinear', align_corners=False) = linear + half_pixel (the default). */
  kiln_tensor *x = tensor_f32(4, D4(1, 1, 2, 2), X22);
  built b = build(KILN_OP_Resize, 13, KILN_F32, 4, D4(1, 1, 2, 2),
                  (kiln_tensor *[]){OMIT, vec_f32(4, (float[]){1, 1, 2, 2}), NULL});
  kiln_err e = {0};
  ir_set_attr_str(b.g, b.node, "mode", "linear", &e);
  expect_f32(b, x, 4, D4(1, 1, 4, 4), BILINEAR_HALF_PIXEL, 1e-6);

  /* align_corners=True: coordinates 0, 1/3, 2/3, 1. */
  static const float want_ac[] = {1,       4.f / 3,  5.f / 3,  2,       5.f / 3, 2,
                                  7.f / 3, 8.f / 3,  7.f / 3,  8.f / 3, 3,       10.f / 3,
                                  3,       10.f / 3, 11.f / 3, 4};
  b = build(KILN_OP_Resize, 11, KILN_F32, 4, D4(1, 1, 2, 2),
            (kiln_tensor *[]){vec_f32(0, NULL), vec_f32(4, (float[]){1, 1, 2, 2}), NULL});
  ir_set_attr_str(b.g, b.node, "mode", "linear", &e);
  ir_set_attr_str(b.g, b.node, "coordinate_transformation_mode", "align_corners", &e);
  expect_f32(b, x, 4, D4(1, 1, 4, 4), want_ac, 1e-6);

  /* Upsample linear = asymmetric: coordinates 0, .5, 1, 1.5 (clamped). */
  static const float want_up[] = {1, 1.5, 2, 2, 2, 2.5, 3, 3, 3, 3.5, 4, 4, 3, 3.5, 4, 4};
  b = build(KILN_OP_Upsample, 9, KILN_F32, 4, D4(1, 1, 2, 2),
            (kiln_tensor *[]){vec_f32(4, (float[]){1, 1, 2, 2}), NULL});
  ir_set_attr_str(b.g, b.node, "mode", "linear", &e);
  expect_f32(b, x, 4, D4(1, 1, 4, 4), want_up, 1e-6);
  kiln_tensor_free(x);
}

static void test_sizes_vs_scales(void) {
  /* sizes [1,1,4,4] is the same resize as scales [1,1,2,2]. */
  kiln_tensor *x = tensor_f32(4, D4(1, 1, 2, 2), X22);
  kiln_err e = {0};
  built b = build(KILN_OP_Resize, 13, KILN_F32, 4, D4(1, 1, 2, 2),
                  (kiln_tensor *[]){OMIT, vec_f32(0, NULL), vec_i64(4, D4(1, 1, 4, 4)), NULL});
  ir_set_attr_str(b.g, b.node, "mode", "linear", &e);
  expect_f32(b, x, 4, D4(1, 1, 4, 4), BILINEAR_HALF_PIXEL, 1e-6);
  /* Output size is floor(in * scale): 2 * 1.7 = 3.4 -> 3. */
  b = build(KILN_OP_Resize, 13, KILN_F32, 4, D4(1, 1, 2, 2),
            (kiln_tensor *[]){OMIT, vec_f32(4, (float[]){1, 1, 1.7f, 1}), NULL});
  kiln_code rc;
  kiln_tensor *y = run(b, x, &rc, &e);
  CHECK_MSG(rc == KILN_OK, "%s", e.msg);
  CHECK(y && y->shape.d[2] == 3 && y->shape.d[3] == 2);
  kiln_tensor_free(y);
  ir_graph_free(b.g);
  kiln_tensor_free(x);
}

static void test_bicubic_pytorch(void) {
  /* F.interpolate(3x3, scale_factor=2, mode='bicubic', align_corners=False) from torch 1.13:
   * cubic, a = -0.75, half_pixel, edge-clamped taps. */
  static const float xv[] = {1, 2, 3, 4, 5, 6, 7, 8, 10};
  static const float want[] = {0.578125,  0.875,     1.3515625, 2.015625,  2.4921875, 2.7890625,
                               1.46875,   1.7668610, 2.2458954, 2.8982849, 3.3556213, 3.6408234,
                               2.8984375, 3.1990204, 3.6829987, 4.3120422, 4.7309265, 4.9927826,
                               4.890625,  5.1795349, 5.6401672, 6.3794556, 6.9799194, 7.3520203,
                               6.3203125, 6.5899963, 7.0121765, 7.9330444, 8.8325806, 9.3862610,
                               7.2109375, 7.4689484, 7.8677826, 8.8988953, 9.9800110, 10.643936};
  kiln_tensor *x = tensor_f32(4, D4(1, 1, 3, 3), xv);
  kiln_err e = {0};
  built b = build(KILN_OP_Resize, 13, KILN_F32, 4, D4(1, 1, 3, 3),
                  (kiln_tensor *[]){OMIT, vec_f32(4, (float[]){1, 1, 2, 2}), NULL});
  ir_set_attr_str(b.g, b.node, "mode", "cubic", &e);
  expect_f32(b, x, 4, D4(1, 1, 6, 6), want, 1e-5);
  kiln_tensor_free(x);
}

static void test_crop_and_resize(void) {
  /* 1-D: input 1..5, roi [0.25, 0.75] sampled at 3 points: coords 1, 2, 3 -> values 2, 3, 4.
   * roi [0.5, 1.5]: coords 2, 4, 6 -> 3, 5, extrapolation. */
  kiln_tensor *x = tensor_f32(1, (int64_t[]){5}, NULL);
  kiln_err e = {0};
  built b = build(KILN_OP_Resize, 13, KILN_F32, 1, (int64_t[]){5},
                  (kiln_tensor *[]){vec_f32(2, (float[]){0.25f, 0.75f}), OMIT,
                                    vec_i64(1, (int64_t[]){3}), NULL});
  ir_set_attr_str(b.g, b.node, "mode", "linear", &e);
  ir_set_attr_str(b.g, b.node, "coordinate_transformation_mode", "tf_crop_and_resize", &e);
  expect_f32(b, x, 1, (int64_t[]){3}, (float[]){2, 3, 4}, 1e-6);
  b = build(
      KILN_OP_Resize, 13, KILN_F32, 1, (int64_t[]){5},
      (kiln_tensor *[]){vec_f32(2, (float[]){0.5f, 1.5f}), OMIT, vec_i64(1, (int64_t[]){3}), NULL});
  ir_set_attr_str(b.g, b.node, "mode", "linear", &e);
  ir_set_attr_str(b.g, b.node, "coordinate_transformation_mode", "tf_crop_and_resize", &e);
  ir_set_attr_float(b.g, b.node, "extrapolation_value", -7, &e);
  expect_f32(b, x, 1, (int64_t[]){3}, (float[]){3, 5, -7}, 1e-6);
  kiln_tensor_free(x);
}

static void test_resize_errors(void) {
  int64_t xd[] = {1, 1, 2, 2};
  built b = build(
      KILN_OP_Resize, 13, KILN_F32, 4, xd,
      (kiln_tensor *[]){OMIT, vec_f32(4, (float[]){1, 1, 2, 2}), vec_i64(4, D4(1, 1, 4, 4)), NULL});
  expect_error(b, KILN_ERR_INVALID, "exactly one");
  b = build(KILN_OP_Resize, 13, KILN_F32, 4, xd,
            (kiln_tensor *[]){OMIT, vec_f32(2, (float[]){2, 2}), NULL});
  expect_error(b, KILN_ERR_SHAPE, "in2");
  b = build(KILN_OP_Resize, 13, KILN_F32, 4, xd,
            (kiln_tensor *[]){OMIT, OMIT, vec_i64(3, D4(1, 4, 4, 0)), NULL});
  expect_error(b, KILN_ERR_SHAPE, "in3");
  b = build(KILN_OP_Resize, 13, KILN_F32, 4, xd,
            (kiln_tensor *[]){OMIT, vec_f32(0, NULL), OMIT, NULL});
  expect_error(b, KILN_ERR_INVALID, "must be given");
  b = build(KILN_OP_Resize, 13, KILN_F32, 4, xd,
            (kiln_tensor *[]){OMIT, vec_f32(4, (float[]){1, 1, 0, 2}), NULL});
  expect_error(b, KILN_ERR_SHAPE, "positive");
  kiln_err e = {0};
  b = build(KILN_OP_Resize, 13, KILN_F32, 4, xd,
            (kiln_tensor *[]){OMIT, vec_f32(4, (float[]){1, 1, 2, 2}), NULL});
  ir_set_attr_str(b.g, b.node, "coordinate_transformation_mode", "sideways", &e);
  expect_error(b, KILN_ERR_UNSUPPORTED, "sideways");
  b = build(KILN_OP_Resize, 13, KILN_I32, 4, xd,
            (kiln_tensor *[]){OMIT, vec_f32(4, (float[]){1, 1, 2, 2}), NULL});
  ir_set_attr_str(b.g, b.node, "mode", "linear", &e);
  expect_error(b, KILN_ERR_UNSUPPORTED, "float32");
  b = build(KILN_OP_Resize, 13, KILN_F32, 4, xd,
            (kiln_tensor *[]){OMIT, OMIT, vec_i64(4, D4(1, 1, 3, 3)), NULL});
  ir_set_attr_str(b.g, b.node, "coordinate_transformation_mode", "tf_crop_and_resize", &e);
  expect_error(b, KILN_ERR_INVALID, "roi");
  b = build(KILN_OP_Resize, 10, KILN_F32, 4, xd,
            (kiln_tensor *[]){vec_f32(4, (float[]){1, 1, 2, 2}), NULL});
  ir_set_attr_str(b.g, b.node, "mode", "cubic", &e);
  expect_error(b, KILN_ERR_UNSUPPORTED, "cubic");
  b = build(KILN_OP_Upsample, 7, KILN_F32, 4, xd, NULL);
  expect_error(b, KILN_ERR_INVALID, "scales");
}

static void test_resize10_downsample(void) {
  /* Resize-10 nearest, scales 0.6: output floor(4 * 0.6) = 2; coordinates x / 0.6 rounded up
   * when downsampling (0, 1.67 -> 0, 2), as the opset-10 suite data has it. */
  kiln_tensor *x = tensor_f32(2, (int64_t[]){2, 4}, NULL);
  built b = build(KILN_OP_Resize, 10, KILN_F32, 2, (int64_t[]){2, 4},
                  (kiln_tensor *[]){vec_f32(2, (float[]){0.6f, 0.6f}), NULL});
  expect_f32(b, x, 2, (int64_t[]){1, 2}, (float[]){1, 3}, 0);
  kiln_tensor_free(x);
}

/* ---- Pad ---- */

static void test_pad_modes(void) {
  /* x = [[1,2,3],[4,5,6]]; pads: 1 row before, 2 columns before, 1 column after. */
  kiln_tensor *x = tensor_f32(2, (int64_t[]){2, 3}, NULL);
  int64_t pads[] = {1, 2, 0, 1};
  static const float want_const[] = {9, 9, 9, 9, 9, 9, 9, 9, 1, 2, 3, 9, 9, 9, 4, 5, 6, 9};
  static const float want_reflect[] = {6, 5, 4, 5, 6, 5, 3, 2, 1, 2, 3, 2, 6, 5, 4, 5, 6, 5};
  static const float want_edge[] = {1, 1, 1, 2, 3, 3, 1, 1, 1, 2, 3, 3, 4, 4, 4, 5, 6, 6};
  kiln_err e = {0};
  /* opset 11+: pads and constant_value inputs */
  kiln_tensor *cv = NULL;
  kiln_tensor_new(KILN_F32, &(kiln_shape){.rank = 0}, &cv, &e);
  ((float *)cv->data)[0] = 9;
  built b = build(KILN_OP_Pad, 13, KILN_F32, 2, (int64_t[]){2, 3},
                  (kiln_tensor *[]){vec_i64(4, pads), cv, NULL});
  expect_f32(b, x, 2, (int64_t[]){3, 6}, want_const, 0);
  const char *modes[] = {"reflect", "edge"};
  const float *wants[] = {want_reflect, want_edge};
  for (int m = 0; m < 2; m++) {
    b = build(KILN_OP_Pad, 13, KILN_F32, 2, (int64_t[]){2, 3},
              (kiln_tensor *[]){vec_i64(4, pads), NULL});
    ir_set_attr_str(b.g, b.node, "mode", modes[m], &e);
    expect_f32(b, x, 2, (int64_t[]){3, 6}, wants[m], 0);
    /* opset 2-10: pads attribute */
    b = build(KILN_OP_Pad, 6, KILN_F32, 2, (int64_t[]){2, 3}, NULL);
    ir_set_attr_str(b.g, b.node, "mode", modes[m], &e);
    ir_set_attr_ints(b.g, b.node, "pads", pads, 4, &e);
    expect_f32(b, x, 2, (int64_t[]){3, 6}, wants[m], 0);
  }
  b = build(KILN_OP_Pad, 2, KILN_F32, 2, (int64_t[]){2, 3}, NULL);
  ir_set_attr_ints(b.g, b.node, "pads", pads, 4, &e);
  ir_set_attr_float(b.g, b.node, "value", 9, &e);
  expect_f32(b, x, 2, (int64_t[]){3, 6}, want_const, 0);
  kiln_tensor_free(x);
}

static void test_pad_crop_and_wide_reflect(void) {
  kiln_tensor *x = tensor_f32(1, (int64_t[]){4}, NULL); /* 1 2 3 4 */
  kiln_err e = {0};
  /* Negative pads crop: drop 1 before, pad 2 after with edge -> 2 3 4 4 4. */
  built b = build(KILN_OP_Pad, 11, KILN_F32, 1, (int64_t[]){4},
                  (kiln_tensor *[]){vec_i64(2, (int64_t[]){-1, 2}), NULL});
  ir_set_attr_str(b.g, b.node, "mode", "edge", &e);
  expect_f32(b, x, 1, (int64_t[]){5}, (float[]){2, 3, 4, 4, 4}, 0);
  /* Crop both sides, constant 0 pad -> 0 2 3. */
  b = build(KILN_OP_Pad, 11, KILN_F32, 1, (int64_t[]){4},
            (kiln_tensor *[]){vec_i64(2, (int64_t[]){-1, -1}), NULL});
  expect_f32(b, x, 1, (int64_t[]){2}, (float[]){2, 3}, 0);
  /* Reflect wider than the axis repeats like numpy.pad: 1 2 3 4 -> pad 5 before. */
  b = build(KILN_OP_Pad, 11, KILN_F32, 1, (int64_t[]){4},
            (kiln_tensor *[]){vec_i64(2, (int64_t[]){5, 4}), NULL});
  ir_set_attr_str(b.g, b.node, "mode", "reflect", &e);
  expect_f32(b, x, 1, (int64_t[]){13}, (float[]){2, 3, 4, 3, 2, 1, 2, 3, 4, 3, 2, 1, 2}, 0);
  kiln_tensor_free(x);

  /* bool data, constant pad with constant_value omitted -> false. */
  kiln_tensor *xb = NULL;
  kiln_tensor_new(KILN_BOOL, &(kiln_shape){.rank = 1, .d = {2}}, &xb, &e);
  ((uint8_t *)xb->data)[0] = 1, ((uint8_t *)xb->data)[1] = 1;
  b = build(KILN_OP_Pad, 13, KILN_BOOL, 1, (int64_t[]){2},
            (kiln_tensor *[]){vec_i64(2, (int64_t[]){1, 1}), NULL});
  kiln_code rc;
  kiln_tensor *y = run(b, xb, &rc, &e);
  CHECK_MSG(rc == KILN_OK, "%s", e.msg);
  if (y) {
    uint8_t *v = y->data;
    CHECK(y->numel == 4 && v[0] == 0 && v[1] == 1 && v[2] == 1 && v[3] == 0);
  }
  kiln_tensor_free(y);
  kiln_tensor_free(xb);
  ir_graph_free(b.g);
}

static void test_pad_errors(void) {
  int64_t xd[] = {2, 3};
  built b = build(KILN_OP_Pad, 13, KILN_F32, 2, xd,
                  (kiln_tensor *[]){vec_i64(3, (int64_t[]){1, 1, 1}), NULL});
  expect_error(b, KILN_ERR_SHAPE, "in1");
  b = build(KILN_OP_Pad, 13, KILN_F32, 2, xd,
            (kiln_tensor *[]){vec_i64(4, (int64_t[]){-2, 0, -1, 0}), NULL});
  expect_error(b, KILN_ERR_SHAPE, "crops");
  kiln_err e = {0};
  b = build(KILN_OP_Pad, 13, KILN_F32, 2, xd,
            (kiln_tensor *[]){vec_i64(4, (int64_t[]){0, 0, 0, 0}), NULL});
  ir_set_attr_str(b.g, b.node, "mode", "wrap", &e);
  expect_error(b, KILN_ERR_UNSUPPORTED, "wrap");
  b = build(
      KILN_OP_Pad, 13, KILN_F32, 2, xd,
      (kiln_tensor *[]){vec_i64(4, (int64_t[]){0, 0, 0, 0}), vec_i64(1, (int64_t[]){3}), NULL});
  expect_error(b, KILN_ERR_SHAPE, "constant_value");
  b = build(KILN_OP_Pad, 6, KILN_F32, 2, xd, NULL);
  expect_error(b, KILN_ERR_INVALID, "pads");
  b = build(KILN_OP_Pad, 13, KILN_F32, 2, xd,
            (kiln_tensor *[]){vec_i64(4, (int64_t[]){0, -3, 0, 1}), NULL});
  ir_set_attr_str(b.g, b.node, "mode", "reflect", &e);
  expect_error(b, KILN_ERR_SHAPE, "at least one");
}

static void test_failing_allocator(void) {
  /* Every allocation failure inside the Resize and Pad kernels is reported as NOMEM.  (The
   * kernels are called directly so the failures land in them, not in the interpreter.) */
  kiln_err e = {0};
  kiln_tensor *x = tensor_f32(4, D4(1, 1, 2, 2), X22);
  built rs = build(KILN_OP_Resize, 13, KILN_F32, 4, D4(1, 1, 2, 2),
                   (kiln_tensor *[]){OMIT, vec_f32(4, (float[]){1, 1, 2, 2}), NULL});
  ir_set_attr_str(rs.g, rs.node, "mode", "cubic", &e);
  built pd = build(KILN_OP_Pad, 13, KILN_F32, 4, D4(1, 1, 2, 2),
                   (kiln_tensor *[]){vec_i64(8, (int64_t[]){0, 0, 1, 1, 0, 0, 1, 1}), NULL});
  built both[] = {rs, pd};
  for (int t = 0; t < 2; t++) {
    kiln_graph *g = both[t].g;
    kiln_evaluator ev = kiln_ref_evaluator();
    CHECK_OK(ir_infer(g, &ev, &e), &e);
    const kiln_node *n = &g->nodes[both[t].node];
    const kiln_value *yv = ir_out(g, n, 0);
    kiln_tensor *y = NULL;
    CHECK_OK(kiln_tensor_new(KILN_F32, &yv->shape, &y, &e), &e);
    const kiln_tensor *in[4] = {x};
    for (int i = 1; i < n->n_in; i++) in[i] = n->in[i] >= 0 ? ir_in(g, n, i)->data : NULL;
    kiln_ref_ctx ctx = {.g = g};
    for (long k = 0; k < 4; k++) {
      kiln_err_clear(&e);
      kiln_alloc_fail_after(k);
      kiln_code rc = kiln_ref_kernel(n->op)(&ctx, n, in, (kiln_tensor *const[]){y}, &e);
      kiln_alloc_fail_after(-1);
      CHECK_MSG(rc == KILN_OK || rc == KILN_ERR_NOMEM, "%s", e.msg);
      if (k == 0) CHECK(rc == KILN_ERR_NOMEM);
    }
    kiln_tensor_free(y);
    ir_graph_free(g);
  }
  kiln_tensor_free(x);
}

int main(void) {
  RUN(test_nearest_x2_pytorch);
  RUN(test_nearest_sizes_and_ints);
  RUN(test_nearest_modes);
  RUN(test_bilinear_x2);
  RUN(test_sizes_vs_scales);
  RUN(test_bicubic_pytorch);
  RUN(test_crop_and_resize);
  RUN(test_resize_errors);
  RUN(test_resize10_downsample);
  RUN(test_pad_modes);
  RUN(test_pad_crop_and_wide_reflect);
  RUN(test_pad_errors);
  RUN(test_failing_allocator);
  TEST_MAIN_END();
}
