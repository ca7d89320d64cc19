/* test_explain.c — saliency maps: the building blocks by hand (bilinear resize,
 * Grad-CAM weights, normalization, scores, colormaps, grids), Grad-CAM / gradient /
 * SPN maps of a small model against PyTorch (tests/data/gradcam, made by
 * scripts/make_gradcam_fixture.py) on the JIT and the reference backends, one
 * compiled program serving every class and image, a whole dataset, and bad input. */
#include <sys/stat.h>
#include <unistd.h>

#include "data/image.h"
#include "frontend/onnx.h"
#include "models/models.h"
#include "study/eval.h"
#include "study/explain.h"
#include "tests/test.h"

#define DATA KILN_SOURCE_DIR "/tests/data/gradcam"
#define TOL 1e-4

static char tmpdir[256];

/* ---- building blocks ---- */
static void test_resize(void) {
  /* PyTorch: F.interpolate([[1,2],[3,4]], size=(4,4), mode="bilinear", align_corners=False) */
  const float src[4] = {1, 2, 3, 4};
  const float want[16] = {1, 1.25f, 1.75f, 2, 1.5f, 1.75f, 2.25f, 2.5f, 2.5f, 2.75f, 3.25f, 3.5f, 3, 3.25f, 3.75f, 4};
  float dst[16];
  kiln_resize_bilinear(src, 2, 2, dst, 4, 4);
  for (int i = 0; i < 16; i++) CHECK_CLOSE(dst[i], want[i], 0, 1e-6);
  /* same size: a copy */
  float same[4];
  kiln_resize_bilinear(src, 2, 2, same, 2, 2);
  for (int i = 0; i < 4; i++) CHECK(same[i] == src[i]);
  /* 1x1: constant; 1x3 -> 2x5 (x: (i+0.5)*3/5-0.5 = -0.2 (clamped 0), 0.4, 1, 1.6, 2.2 (clamped to 2)) */
  float one = 7, big[6];
  kiln_resize_bilinear(&one, 1, 1, big, 2, 3);
  for (int i = 0; i < 6; i++) CHECK(big[i] == 7);
  const float row[3] = {0, 10, 20};
  float wide[10];
  kiln_resize_bilinear(row, 1, 3, wide, 2, 5);
  const float ww[5] = {0, 4, 10, 16, 20};
  for (int i = 0; i < 5; i++) {
    CHECK_CLOSE(wide[i], ww[i], 0, 1e-5);
    CHECK_CLOSE(wide[5 + i], ww[i], 0, 1e-5);
  }
}

static void test_gradcam_hand(void) {
  kiln_err e = {0};
  /* C=2, 1x2 map: alpha = (mean(1,3), mean(-1,-1)) = (2, -1);
   * cam = ReLU(2*A0 - A1) = ReLU(2*1 - 4, 2*3 - 1) = (0, 5) */
  const float A[4] = {1, 3, 4, 1}, dA[4] = {1, 3, -1, -1};
  float cam[2];
  CHECK_OK(kiln_gradcam(A, dA, 2, 1, 2, cam, &e), &e);
  CHECK(cam[0] == 0);
  CHECK_CLOSE(cam[1], 5, 0, 1e-6);
  kiln_alloc_fail_after(0);
  kiln_code rc = kiln_gradcam(A, dA, 2, 1, 2, cam, &e);
  kiln_alloc_fail_after(-1);
  CHECK(rc == KILN_ERR_NOMEM);
  float m[4] = {2, 4, 6, 10};
  kiln_map_normalize(m, 4);
  CHECK(m[0] == 0 && m[3] == 1);
  CHECK_CLOSE(m[1], 0.25, 0, 1e-7);
  float flat[3] = {5, 5, 5};
  kiln_map_normalize(flat, 3);
  CHECK(flat[0] == 0 && flat[2] == 0);
}

static void test_scores(void) {
  /* a 2x4 map; normalized (v-1)/4: 0 .25 .5 1 / 0 0 .75 .25 */
  const float map[8] = {1, 2, 3, 5, 1, 1, 4, 2};
  const float mask[8] = {0, 0, 1, 1, 0, 0, 1, 0};
  kiln_saliency_score s;
  CHECK(kiln_saliency_score_map(map, mask, 8, 0.25, &s));
  /* energy: (0.5 + 1 + 0.75) / (0.25+0.5+1+0.75+0.25) = 2.25 / 2.75 */
  CHECK_CLOSE(s.energy, 2.25 / 2.75, 0, 1e-9);
  CHECK(s.pointing == 1);
  /* >= 0.5: pixels 2,3,6 = the mask: IoU 1 */
  CHECK_CLOSE(s.iou_half, 1, 0, 1e-12);
  /* top 25% = 2 pixels (5 and 4): both in the mask of 3: IoU 2/3 */
  CHECK_CLOSE(s.iou_top, 2.0 / 3, 0, 1e-12);
  /* the argmax outside the mask */
  const float mask2[8] = {1, 1, 0, 0, 0, 0, 0, 0};
  CHECK(kiln_saliency_score_map(map, mask2, 8, 0.5, &s));
  CHECK(s.pointing == 0);
  CHECK_CLOSE(s.energy, 0.25 / 2.75, 0, 1e-9);
  CHECK(s.iou_half == 0);
  /* top 50% = 4 pixels (5,4,3,2 and the other 2: ties included -> 5 pixels): 1 of them in the mask of 2 */
  CHECK_CLOSE(s.iou_top, 1.0 / 6, 0, 1e-12);
  /* a constant map: energy = the mask's area share, everything above half */
  const float flat[4] = {3, 3, 3, 3}, m1[4] = {1, 0, 0, 0};
  CHECK(kiln_saliency_score_map(flat, m1, 4, 0.25, &s));
  CHECK_CLOSE(s.energy, 0.25, 0, 1e-12);
  CHECK(s.pointing == 1);
  CHECK_CLOSE(s.iou_half, 0.25, 0, 1e-12);
  /* an empty mask is not scored */
  const float none[4] = {0, 0, 0, 0};
  CHECK(!kiln_saliency_score_map(flat, none, 4, 0.25, &s));
  CHECK(isnan(s.energy) && isnan(s.iou_top));
  /* negative values and ties: top 3 of {-1, -5, 2, -1, 0} = 2, 0, -1 (both -1s) */
  const float neg[5] = {-1, -5, 2, -1, 0}, mk[5] = {1, 1, 0, 0, 0};
  CHECK(kiln_saliency_score_map(neg, mk, 5, 0.6, &s));
  CHECK_CLOSE(s.iou_top, 1.0 / 5, 0, 1e-12); /* selected 0,2,3,4; mask 0,1: TP 1, FP 3, FN 1 */
}

static void test_methods_and_colormaps(void) {
  unsigned b;
  CHECK(kiln_explain_methods_parse("all", &b) && b == KILN_EXPLAIN_ALL);
  CHECK(kiln_explain_methods_parse("gradcam,spn", &b) && b == 5);
  CHECK(kiln_explain_methods_parse("grad", &b) && b == 2);
  CHECK(!kiln_explain_methods_parse("cam", &b));
  CHECK(!strcmp(kiln_explain_method_name(KILN_EXPLAIN_GRADCAM), "Grad-CAM"));
  uint8_t c[3];
  kiln_colormap_rgb(KILN_CMAP_JET, 0, c);
  CHECK(c[0] == 0 && c[1] == 0 && c[2] == 128);
  kiln_colormap_rgb(KILN_CMAP_JET, 0.5f, c);
  CHECK(c[0] == 128 && c[1] == 255 && c[2] == 128);
  kiln_colormap_rgb(KILN_CMAP_JET, 1, c);
  CHECK(c[0] == 128 && c[1] == 0 && c[2] == 0);
  kiln_colormap_rgb(KILN_CMAP_JET, 7, c); /* clamped */
  CHECK(c[0] == 128 && c[2] == 0);
  kiln_colormap_rgb(KILN_CMAP_VIRIDIS, 0, c);
  CHECK(c[0] == 68 && c[1] == 1 && c[2] == 84);
  kiln_colormap_rgb(KILN_CMAP_VIRIDIS, 1, c);
  CHECK(c[0] == 253 && c[1] == 231 && c[2] == 37);
  kiln_colormap cm;
  CHECK(kiln_colormap_parse("viridis", &cm) && cm == KILN_CMAP_VIRIDIS);
  CHECK(!kiln_colormap_parse("hot", &cm));
  /* overlay: alpha 0 is the image, alpha 1 the colour of the normalized map */
  const float img[3 * 2] = {0, 1, 0.5f, 0.5f, 1, 0};
  const float map[2] = {2, 4};
  uint8_t rgb[6];
  kiln_render_overlay(img, map, 1, 2, KILN_CMAP_JET, 0, rgb);
  CHECK(rgb[0] == 0 && rgb[1] == 128 && rgb[2] == 255 && rgb[3] == 255 && rgb[4] == 128 && rgb[5] == 0);
  kiln_render_overlay(img, map, 1, 2, KILN_CMAP_JET, 1, rgb);
  CHECK(rgb[0] == 0 && rgb[2] == 128 && rgb[3] == 128 && rgb[5] == 0);
  kiln_render_gray(map, 1, 2, rgb);
  CHECK(rgb[0] == 255 && rgb[5] == 255);
}

static void test_grid(void) {
  kiln_err e = {0};
  kiln_grid g;
  const char *titles[3] = {"image", "truth", NULL};
  CHECK_OK(kiln_grid_init(&g, 2, 3, 20, 10, titles, &e), &e);
  uint8_t cell[20 * 10 * 3];
  memset(cell, 0, sizeof cell);
  for (int i = 0; i < 20 * 10; i++) cell[i * 3] = 200;
  kiln_grid_put(&g, 1, 2, cell);
  kiln_grid_put(&g, 5, 0, cell); /* out of range: ignored */
  char path[512];
  snprintf(path, sizeof path, "%s/grid.png", tmpdir);
  CHECK_OK(kiln_grid_write(&g, path, &e), &e);
  kiln_image im = {0};
  CHECK_OK(kiln_image_read(path, 3, &im, &e), &e);
  CHECK(im.w == g.W && im.h == g.H);
  CHECK(g.W == 3 * 24 + 4 && g.H == 2 * 14 + 4 + g.header);
  if (im.px) {
    int64_t x = g.pad + 2 * (g.cw + g.pad) + 3, y = g.header + g.pad + (g.ch + g.pad) + 2;
    CHECK_CLOSE(im.px[y * im.w + x], 200.0 / 255, 0, 1e-6);                 /* red */
    CHECK(im.px[(int64_t)im.w * im.h + y * im.w + x] == 0);                  /* green */
    CHECK(im.px[0] == 1);                                                    /* white gutter */
    /* the title row has ink */
    int ink = 0;
    for (int64_t i = 0; i < (int64_t)im.w * g.header; i++) ink += im.px[i] < 0.5f;
    CHECK(ink > 10);
  }
  kiln_image_release(&im);
  kiln_grid_free(&g);
  CHECK(kiln_grid_init(&g, 0, 1, 8, 8, NULL, &e) == KILN_ERR_INVALID);
  /* text: width and clipping */
  uint8_t canvas[12 * 8 * 3];
  memset(canvas, 0, sizeof canvas);
  const uint8_t white[3] = {255, 255, 255};
  CHECK(kiln_draw_text(canvas, 12, 8, 0, 0, "I\x01", 1, white) == 12);
  CHECK(canvas[(0 * 12 + 1) * 3] == 255 && canvas[(0 * 12 + 0) * 3] == 0); /* I's top bar: .###. */
  kiln_draw_text(canvas, 12, 8, 10, 5, "W", 3, white);                  /* clipped, no overrun */
}

/* ---- the model against PyTorch ---- */

/* scripts/make_gradcam_fixture.py's input_image(), exactly */
static void input_image(float *x, int b, int s) {
  for (int n = 0; n < b; n++)
    for (int c = 0; c < 3; c++)
      for (int i = 0; i < s; i++)
        for (int j = 0; j < s; j++) {
          int k = (j * j + 3 * i * i + 7 * i * j + 11 * c + 29 * n) % 101;
          double v = k / 50.0 - 1.0;
          if ((j - 20 - 10 * n) * (j - 20 - 10 * n) + (i - 30) * (i - 30) < 150) v += 1.0;
          x[((n * 3 + c) * s + i) * s + j] = (float)v;
        }
}

static kiln_tensor *load(const char *name) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s.npy", DATA, name);
  kiln_err e = {0};
  kiln_tensor *t = NULL;
  CHECK_OK(kiln_tensor_load_file(path, &t, &e), &e);
  return t;
}

/* max |got - want| <= TOL * max(1, max |want|) over n values; returns the max difference */
static double compare(const char *what, const float *got, const kiln_tensor *want, int64_t off, int64_t n) {
  if (!got || !want) {
    CHECK_MSG(false, "%s: missing", what);
    return INFINITY;
  }
  double md = 0, scale = 1;
  for (int64_t i = 0; i < n; i++) {
    double w = kiln_tensor_get_f(want, off + i);
    if (fabs(w) > scale) scale = fabs(w);
    if (fabs(got[i] - w) > md || isnan(got[i])) md = isnan(got[i]) ? INFINITY : fabs(got[i] - w);
  }
  CHECK_MSG(md <= TOL * scale, "%s: max |kiln - torch| %.3g > %.3g", what, md, TOL * scale);
  return md;
}

static void parity(kiln_backend backend) {
  kiln_err e = {0};
  kiln_explain_opts o = kiln_explain_opts_default();
  o.backend = backend;
  o.cache_dir = "";
  o.batch = 2;
  kiln_explainer *x = NULL;
  CHECK_OK(kiln_explainer_create(DATA "/model.onnx", &o, &x, &e), &e);
  if (!x) return;
  int64_t fc, fh, fw;
  const char *feat = kiln_explainer_feature(x, &fc, &fh, &fw);
  CHECK_MSG(feat && !strcmp(feat, "features"), "%s", feat ? feat : "(none)");
  CHECK(fc == 16 && fh == 2 && fw == 2);
  CHECK(kiln_explainer_methods(x) == KILN_EXPLAIN_ALL);
  CHECK(kiln_explainer_batch(x) == 2 && kiln_explainer_classes(x) == 3);
  float img[2 * 3 * 64 * 64];
  input_image(img, 2, 64);
  kiln_tensor *tg = load("targets"), *lg = load("logits"), *cl = load("cam_low"), *cam = load("cam"),
              *grad = load("grad"), *spn = load("spn");
  if (!tg || !lg || !cl || !cam || !grad || !spn) goto out;
  int64_t targets[2] = {kiln_tensor_get_i(tg, 0), kiln_tensor_get_i(tg, 1)};
  kiln_explanation ex;
  CHECK_OK(kiln_explain_run(x, img, targets, &ex, &e), &e);
  if (e.code) goto out;
  const char *bn = backend == KILN_BACKEND_JIT ? "jit" : "ref";
  double d_logits = compare("logits", ex.logits, lg, 0, 6);
  if (d_logits > TOL)
    fprintf(stderr, "the model's logits differ from the fixture's: regenerate tests/data/gradcam with "
                    "scripts/make_gradcam_fixture.py\n");
  double d_low = compare("Grad-CAM at the feature map's size", ex.cam, cl, 0, 8);
  double d_cam = compare("Grad-CAM", ex.map[KILN_EXPLAIN_GRADCAM], cam, 0, 2 * 64 * 64);
  double d_grad = compare("gradient", ex.map[KILN_EXPLAIN_GRAD], grad, 0, 2 * 64 * 64);
  double d_spn = compare("SPN", ex.map[KILN_EXPLAIN_SPN], spn, 0, 2 * 64 * 64);
  printf("%s: max |kiln - torch|: logits %.2g, Grad-CAM %.2g (feature size %.2g), gradient %.2g, SPN %.2g\n", bn,
         d_logits, d_cam, d_low, d_grad, d_spn);
  CHECK(ex.target[0] == targets[0] && ex.target[1] == targets[1]);
  kiln_explanation_free(&ex);
  /* the same program for other classes and images: rows are independent, -1 is the
   * predicted class (the fixture's target of image 0 is its prediction) */
  int64_t t2[2] = {-1, targets[1]};
  CHECK_OK(kiln_explain_run(x, img, t2, &ex, &e), &e);
  if (!e.code) {
    CHECK(ex.target[0] == targets[0]);
    compare("Grad-CAM, predicted class", ex.map[KILN_EXPLAIN_GRADCAM], cam, 0, 2 * 64 * 64);
    kiln_explanation_free(&ex);
  }
  int64_t t3[2] = {targets[0], (targets[1] + 1) % 3};
  CHECK_OK(kiln_explain_run(x, img, t3, &ex, &e), &e);
  if (!e.code) {
    compare("Grad-CAM, image 0 beside another class", ex.map[KILN_EXPLAIN_GRADCAM], cam, 0, 64 * 64);
    double diff = 0;
    for (int64_t i = 0; i < 64 * 64; i++)
      diff = fmax(diff, fabs(ex.map[KILN_EXPLAIN_GRADCAM][64 * 64 + i] - kiln_tensor_get_f(cam, 64 * 64 + i)));
    CHECK_MSG(diff > 1e-3, "another class gave the same Grad-CAM (%g)", diff);
    kiln_explanation_free(&ex);
  }
  /* NULL targets: both predicted */
  CHECK_OK(kiln_explain_run(x, img, NULL, &ex, &e), &e);
  if (!e.code) {
    CHECK(ex.target[0] == kiln_argmax(ex.logits, 3) && ex.target[1] == kiln_argmax(ex.logits + 3, 3));
    kiln_explanation_free(&ex);
  }
  /* a class out of range */
  int64_t bad[2] = {0, 3};
  kiln_err_clear(&e);
  CHECK(kiln_explain_run(x, img, bad, &ex, &e) == KILN_ERR_INVALID);
  CHECK_MSG(strstr(e.msg, "class 3"), "%s", e.msg);
out:
  kiln_tensor_free(tg);
  kiln_tensor_free(lg);
  kiln_tensor_free(cl);
  kiln_tensor_free(cam);
  kiln_tensor_free(grad);
  kiln_tensor_free(spn);
  kiln_explainer_free(x);
}

static void test_parity_jit(void) { parity(KILN_BACKEND_JIT); }
static void test_parity_ref(void) { parity(KILN_BACKEND_REF); }

/* A named feature map, one method at a time, a symbolic batch. */
static void test_options(void) {
  kiln_err e = {0};
  kiln_explain_opts o = kiln_explain_opts_default();
  o.cache_dir = "";
  o.batch = 2;
  o.methods = KILN_EXPLAIN_BIT(KILN_EXPLAIN_GRADCAM);
  o.feature = "fnet/layer3.1/relu2"; /* the output of layer3: 4x4 */
  kiln_explainer *x = NULL;
  CHECK_OK(kiln_explainer_create(DATA "/model.onnx", &o, &x, &e), &e);
  if (x) {
    int64_t c, h, w;
    kiln_explainer_feature(x, &c, &h, &w);
    CHECK(c == 8 && h == 4 && w == 4);
    CHECK(kiln_explainer_methods(x) == KILN_EXPLAIN_BIT(KILN_EXPLAIN_GRADCAM));
    float img[2 * 3 * 64 * 64];
    input_image(img, 2, 64);
    kiln_explanation ex;
    CHECK_OK(kiln_explain_run(x, img, NULL, &ex, &e), &e);
    if (!e.code) {
      CHECK(ex.map[KILN_EXPLAIN_GRADCAM] && !ex.map[KILN_EXPLAIN_GRAD] && !ex.map[KILN_EXPLAIN_SPN]);
      CHECK(ex.fh == 4 && ex.fw == 4);
      kiln_explanation_free(&ex);
    }
    kiln_explainer_free(x);
  }
  /* errors */
  o.feature = "no_such_value";
  kiln_err_clear(&e);
  CHECK(kiln_explainer_create(DATA "/model.onnx", &o, &x, &e) == KILN_ERR_INVALID);
  CHECK_MSG(strstr(e.msg, "no_such_value"), "%s", e.msg);
  o.feature = "conv1.weight"; /* a constant, not a feature map */
  kiln_err_clear(&e);
  CHECK(kiln_explainer_create(DATA "/model.onnx", &o, &x, &e) == KILN_ERR_INVALID);
  CHECK_MSG(strstr(e.msg, "conv1.weight"), "%s", e.msg);
  o.feature = NULL;
  o.methods = 0;
  kiln_err_clear(&e);
  CHECK(kiln_explainer_create(DATA "/model.onnx", &o, &x, &e) == KILN_ERR_INVALID);
  kiln_err_clear(&e);
  CHECK(kiln_explainer_create(DATA "/missing.onnx", NULL, &x, &e) == KILN_ERR_IO);
  /* a baseline without an SPN: the SPN map alone is refused, "all" drops it */
  kiln_model_opts mo;
  kiln_model_defaults(&mo);
  mo.width = 2;
  mo.classes = 3;
  mo.cnet_hidden = 0;
  mo.spn = false;
  mo.image_size = 64;
  snprintf(mo.batch_sym, sizeof mo.batch_sym, "N");
  kiln_graph *g = NULL;
  char path[512];
  snprintf(path, sizeof path, "%s/baseline.onnx", tmpdir);
  CHECK_OK(kiln_model_build(&mo, &g, &e), &e);
  if (g) CHECK_OK(kiln_onnx_save(g, path, &e), &e);
  ir_graph_free(g);
  o = kiln_explain_opts_default();
  o.cache_dir = "";
  o.batch = 3; /* binds N */
  o.methods = KILN_EXPLAIN_BIT(KILN_EXPLAIN_SPN);
  kiln_err_clear(&e);
  CHECK(kiln_explainer_create(path, &o, &x, &e) == KILN_ERR_INVALID);
  CHECK_MSG(strstr(e.msg, "saliency"), "%s", e.msg);
  o.methods = KILN_EXPLAIN_ALL;
  kiln_err_clear(&e);
  CHECK_OK(kiln_explainer_create(path, &o, &x, &e), &e);
  if (x) {
    CHECK(kiln_explainer_methods(x) == (KILN_EXPLAIN_BIT(KILN_EXPLAIN_GRADCAM) | KILN_EXPLAIN_BIT(KILN_EXPLAIN_GRAD)));
    CHECK(kiln_explainer_batch(x) == 3);
    kiln_explainer_free(x);
  }
}

/* A whole dataset in padded batches: the scores equal those of each map explained alone. */
static void test_dataset(void) {
  kiln_err e = {0};
  char dir[512], path[600];
  snprintf(dir, sizeof dir, "%s/ds", tmpdir);
  mkdir(dir, 0777);
  const int64_t n = 3, s = 64;
  kiln_tensor *img = NULL, *lab = NULL, *msk = NULL;
  CHECK_OK(kiln_tensor_new(KILN_F32, &(kiln_shape){4, {n, 3, s, s}}, &img, &e), &e);
  CHECK_OK(kiln_tensor_new(KILN_I64, &(kiln_shape){1, {n}}, &lab, &e), &e);
  CHECK_OK(kiln_tensor_new(KILN_F32, &(kiln_shape){4, {n, 1, s, s}}, &msk, &e), &e);
  if (e.code) goto out;
  float two[2 * 3 * 64 * 64];
  input_image(two, 2, 64);
  memcpy(img->data, two, sizeof two);
  memcpy((float *)img->data + 2 * 3 * s * s, two, sizeof(float) * 3 * s * s); /* example 2 = example 0 */
  for (int64_t i = 0; i < n; i++) ((int64_t *)lab->data)[i] = i % 3;
  for (int64_t i = 0; i < n; i++)
    for (int64_t y = 0; y < s; y++)
      for (int64_t xx = 0; xx < s; xx++) {
        int64_t dx = xx - 20 - 10 * (i % 2), dy = y - 30;
        ((float *)msk->data)[(i * s + y) * s + xx] = dx * dx + dy * dy < 150;
      }
  snprintf(path, sizeof path, "%s/images.npy", dir);
  CHECK_OK(kiln_tensor_save_npy(img, path, &e), &e);
  snprintf(path, sizeof path, "%s/labels.npy", dir);
  CHECK_OK(kiln_tensor_save_npy(lab, path, &e), &e);
  snprintf(path, sizeof path, "%s/masks.npy", dir);
  CHECK_OK(kiln_tensor_save_npy(msk, path, &e), &e);
  kiln_dataset *d = NULL;
  CHECK_OK(kiln_dataset_open_tensors(dir, &d, &e), &e);
  kiln_explain_opts o = kiln_explain_opts_default();
  o.cache_dir = "";
  o.batch = 2;
  kiln_explainer *x = NULL;
  CHECK_OK(kiln_explainer_create(DATA "/model.onnx", &o, &x, &e), &e);
  if (!d || !x) goto done;
  kiln_explain_data_opts dop = kiln_explain_data_opts_default();
  dop.target = KILN_TARGET_LABEL;
  kiln_explain_summary sum;
  CHECK_OK(kiln_explain_dataset(x, d, &dop, &sum, &e), &e);
  if (e.code) goto done;
  CHECK(sum.n == 3);
  for (int m = 0; m < KILN_EXPLAIN_METHODS; m++) {
    CHECK(sum.n_scored[m] == 3 && sum.per[m]);
    CHECK(sum.mean[m].energy >= 0 && sum.mean[m].energy <= 1);
    CHECK(sum.mean[m].iou_top >= 0 && sum.mean[m].iou_top <= 1);
  }
  CHECK(sum.target[0] == 0 && sum.target[1] == 1 && sum.target[2] == 2);
  /* example 2 (the padded batch) against example 0's image explained for class 2 directly */
  int64_t t[2] = {2, 2};
  kiln_explanation ex;
  CHECK_OK(kiln_explain_run(x, two, t, &ex, &e), &e);
  if (!e.code) {
    for (int m = 0; m < KILN_EXPLAIN_METHODS; m++) {
      kiln_saliency_score sc;
      CHECK(kiln_saliency_score_map(ex.map[m], msk->data, s * s, 0.2, &sc));
      CHECK_CLOSE(sum.per[m][2].energy, sc.energy, 0, 1e-6);
      CHECK_CLOSE(sum.per[m][2].iou_top, sc.iou_top, 0, 1e-6);
      CHECK(sum.per[m][2].pointing == sc.pointing);
    }
    kiln_explanation_free(&ex);
  }
  kiln_explain_summary_free(&sum);
  /* limit */
  dop.limit = 1;
  CHECK_OK(kiln_explain_dataset(x, d, &dop, &sum, &e), &e);
  CHECK(sum.n == 1);
  kiln_explain_summary_free(&sum);
done:
  kiln_explainer_free(x);
  kiln_dataset_free(d);
out:
  kiln_tensor_free(img);
  kiln_tensor_free(lab);
  kiln_tensor_free(msk);
}

/* Every allocation may fail: the error is NOMEM and nothing leaks (the sanitizer
 * build checks the leaks); the reference backend keeps the sweep fast. */
static void test_failing_allocator(void) {
  kiln_err e = {0};
  kiln_explain_opts o = kiln_explain_opts_default();
  o.backend = KILN_BACKEND_REF;
  o.batch = 2;
  kiln_explainer *x = NULL;
  int n, failures = 0;
  for (n = 0; n < 1000000; n += n < 40 ? 1 : n / 4) {
    kiln_err_clear(&e);
    kiln_alloc_fail_after(n);
    kiln_code rc = kiln_explainer_create(DATA "/model.onnx", &o, &x, &e);
    kiln_alloc_fail_after(-1);
    if (rc == KILN_OK) break;
    failures++;
    CHECK_MSG(rc == KILN_ERR_NOMEM, "allocation %d: %s", n, e.msg);
    CHECK(x == NULL);
  }
  CHECK(failures > 10);
  if (!x) return;
  float img[2 * 3 * 64 * 64];
  input_image(img, 2, 64);
  failures = 0;
  for (n = 0; n < 1000000; n += n < 40 ? 1 : n / 8) {
    kiln_explanation ex;
    kiln_err_clear(&e);
    kiln_alloc_fail_after(n);
    kiln_code rc = kiln_explain_run(x, img, NULL, &ex, &e);
    kiln_alloc_fail_after(-1);
    if (rc == KILN_OK) {
      kiln_explanation_free(&ex);
      break;
    }
    failures++;
    CHECK_MSG(rc == KILN_ERR_NOMEM, "allocation %d: %s", n, e.msg);
    CHECK(ex.logits == NULL && ex.map[0] == NULL);
  }
  CHECK(failures > 10);
  kiln_explainer_free(x);
  /* grids */
  kiln_grid g;
  kiln_alloc_fail_after(0);
  kiln_code rc = kiln_grid_init(&g, 2, 2, 8, 8, NULL, &e);
  kiln_alloc_fail_after(-1);
  CHECK(rc == KILN_ERR_NOMEM && g.rgb == NULL);
}

int main(void) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/kiln_test_explain_%d", (int)getpid());
  mkdir(tmpdir, 0777);
  RUN(test_resize);
  RUN(test_gradcam_hand);
  RUN(test_scores);
  RUN(test_methods_and_colormaps);
  RUN(test_grid);
  RUN(test_parity_jit);
  RUN(test_parity_ref);
  RUN(test_options);
  RUN(test_dataset);
  RUN(test_failing_allocator);
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  if (system(cmd)) fprintf(stderr, "could not remove %s\n", tmpdir);
  TEST_MAIN_END();
}
