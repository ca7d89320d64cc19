/* test_metrics.c — the study's metrics against hand-computed values on fixed
 * confusion matrices, the 0/0 convention, Student-t quantiles and intervals,
 * segmentation IoU/Dice, and evaluation of a model over a dataset (predictions,
 * padding of the last batch, SPN IoU) with a failing-allocator sweep. */
#include <sys/stat.h>
#include <unistd.h>

#include "study/eval.h"
#include "study/metrics.h"
#include "tests/test.h"

#define MODEL KILN_SOURCE_DIR "/tests/data/gradcam/model.onnx"
static char tmpdir[256];

static void fill(kiln_confusion *c, const int64_t *m) {
  for (int64_t t = 0; t < c->k; t++)
    for (int64_t p = 0; p < c->k; p++)
      for (int64_t i = 0; i < m[t * c->k + p]; i++) {
        kiln_err e = {0};
        CHECK_OK(kiln_confusion_add(c, t, p, &e), &e);
      }
}

/* truth\pred    0  1  2
 *   0           5  1  0
 *   1           2  3  1
 *   2           0  0  4        16 examples, 12 on the diagonal. */
static void test_three_classes(void) {
  kiln_err e = {0};
  kiln_confusion c;
  CHECK_OK(kiln_confusion_init(&c, 3, &e), &e);
  const int64_t m[9] = {5, 1, 0, 2, 3, 1, 0, 0, 4};
  fill(&c, m);
  CHECK(c.n == 16);
  int64_t tp, fp, fn, tn;
  kiln_class_counts(&c, 1, &tp, &fp, &fn, &tn);
  CHECK(tp == 3 && fp == 1 && fn == 3 && tn == 9);
  kiln_metrics r;
  CHECK_OK(kiln_metrics_compute(&c, &r, &e), &e);
  const double tol = 1e-12;
  /* class 0: TP 5 FP 2 FN 1 TN 8 */
  CHECK_CLOSE(r.cls[0].precision, 5.0 / 7, 0, tol);
  CHECK_CLOSE(r.cls[0].sensitivity, 5.0 / 6, 0, tol);
  CHECK_CLOSE(r.cls[0].specificity, 8.0 / 10, 0, tol);
  CHECK_CLOSE(r.cls[0].f1, 10.0 / 13, 0, tol);
  /* class 1: TP 3 FP 1 FN 3 TN 9 */
  CHECK_CLOSE(r.cls[1].precision, 3.0 / 4, 0, tol);
  CHECK_CLOSE(r.cls[1].sensitivity, 3.0 / 6, 0, tol);
  CHECK_CLOSE(r.cls[1].specificity, 9.0 / 10, 0, tol);
  CHECK_CLOSE(r.cls[1].f1, 6.0 / 10, 0, tol);
  /* class 2: TP 4 FP 1 FN 0 TN 11 */
  CHECK_CLOSE(r.cls[2].precision, 4.0 / 5, 0, tol);
  CHECK_CLOSE(r.cls[2].sensitivity, 1.0, 0, tol);
  CHECK_CLOSE(r.cls[2].specificity, 11.0 / 12, 0, tol);
  CHECK_CLOSE(r.cls[2].f1, 8.0 / 9, 0, tol);
  CHECK(r.cls[0].support == 6 && r.cls[1].support == 6 && r.cls[2].support == 4);
  CHECK(r.cls[0].undefined == 0 && r.cls[1].undefined == 0 && r.cls[2].undefined == 0);
  CHECK_CLOSE(r.mean_precision, (5.0 / 7 + 3.0 / 4 + 4.0 / 5) / 3, 0, tol);
  CHECK_CLOSE(r.mean_sensitivity, (5.0 / 6 + 0.5 + 1.0) / 3, 0, tol);
  CHECK_CLOSE(r.mean_specificity, (0.8 + 0.9 + 11.0 / 12) / 3, 0, tol);
  CHECK_CLOSE(r.mean_f1, (10.0 / 13 + 0.6 + 8.0 / 9) / 3, 0, tol);
  CHECK_CLOSE(r.accuracy, 12.0 / 16, 0, tol);
  /* the tables, as text and Markdown */
  char buf[4096];
  const char *names[3] = {"disk", "square", NULL};
  kiln_metrics_format(&r, names, false, buf, sizeof buf);
  CHECK_MSG(strstr(buf, "disk") && strstr(buf, "square") && strstr(buf, "\n2 "), "%s", buf);
  CHECK_MSG(strstr(buf, "75.5") && strstr(buf, "77.8") && strstr(buf, "87.2") && strstr(buf, "75.3"), "%s", buf);
  CHECK_MSG(strstr(buf, "accuracy 75.0%"), "%s", buf);
  CHECK(!strchr(buf, '*'));
  kiln_metrics_format(&r, names, true, buf, sizeof buf);
  CHECK_MSG(strstr(buf, "| disk | 71.4 | 83.3 | 80.0 | 76.9 | 6 |"), "%s", buf);
  CHECK_MSG(strstr(buf, "| **mean** | **75.5** | **77.8** | **87.2** | **75.3** | 16 |"), "%s", buf);
  /* truncation never overruns */
  char small[20];
  kiln_metrics_format(&r, names, false, small, sizeof small);
  CHECK(strlen(small) < sizeof small);
  kiln_metrics_free(&r);
  /* clearing */
  kiln_confusion_clear(&c);
  CHECK(c.n == 0 && c.m[0] == 0);
  kiln_confusion_free(&c);
}

/* With two classes, the specificity of one is the sensitivity of the other: the
 * BUSI tables of the study show equal sensitivity and specificity columns. */
static void test_binary(void) {
  kiln_err e = {0};
  kiln_confusion c;
  CHECK_OK(kiln_confusion_init(&c, 2, &e), &e);
  const int64_t m[4] = {9, 3, 2, 10};
  fill(&c, m);
  kiln_metrics r;
  CHECK_OK(kiln_metrics_compute(&c, &r, &e), &e);
  CHECK_CLOSE(r.cls[0].specificity, r.cls[1].sensitivity, 0, 1e-15);
  CHECK_CLOSE(r.cls[1].specificity, r.cls[0].sensitivity, 0, 1e-15);
  CHECK_CLOSE(r.mean_sensitivity, r.mean_specificity, 0, 1e-15);
  CHECK_CLOSE(r.cls[0].precision, 9.0 / 11, 0, 1e-15);
  CHECK_CLOSE(r.cls[1].precision, 10.0 / 13, 0, 1e-15);
  CHECK_CLOSE(r.cls[0].f1, 18.0 / 23, 0, 1e-15);
  CHECK_CLOSE(r.accuracy, 19.0 / 24, 0, 1e-15);
  kiln_metrics_free(&r);
  kiln_confusion_free(&c);
}

/* A class never predicted and never present: 0/0 ratios are 0, flagged, and count
 * in the means; a perfect classifier of the others is not rewarded for it. */
static void test_zero_division(void) {
  kiln_err e = {0};
  kiln_confusion c;
  CHECK_OK(kiln_confusion_init(&c, 3, &e), &e);
  const int64_t m[9] = {2, 1, 0, 1, 2, 0, 0, 0, 0};
  fill(&c, m);
  kiln_metrics r;
  CHECK_OK(kiln_metrics_compute(&c, &r, &e), &e);
  CHECK(r.cls[2].precision == 0 && r.cls[2].sensitivity == 0 && r.cls[2].f1 == 0);
  CHECK(r.cls[2].specificity == 1);
  CHECK(r.cls[2].undefined == (KILN_UNDEF_PRECISION | KILN_UNDEF_SENSITIVITY | KILN_UNDEF_F1));
  CHECK_CLOSE(r.mean_precision, (2.0 / 3 + 2.0 / 3 + 0) / 3, 0, 1e-15);
  char buf[2048];
  kiln_metrics_format(&r, NULL, false, buf, sizeof buf);
  CHECK_MSG(strstr(buf, "0.0*") && strstr(buf, "0/0"), "%s", buf);
  kiln_metrics_free(&r);
  /* a class predicted but never present: precision 0 (all false positives), sensitivity 0/0 */
  kiln_confusion_clear(&c);
  const int64_t m2[9] = {2, 0, 1, 0, 3, 0, 0, 0, 0};
  fill(&c, m2);
  CHECK_OK(kiln_metrics_compute(&c, &r, &e), &e);
  CHECK(r.cls[2].precision == 0 && !(r.cls[2].undefined & KILN_UNDEF_PRECISION));
  CHECK(r.cls[2].undefined & KILN_UNDEF_SENSITIVITY);
  CHECK_CLOSE(r.cls[2].specificity, 5.0 / 6, 0, 1e-15);
  kiln_metrics_free(&r);
  /* an empty matrix: accuracy 0, no crash */
  kiln_confusion_clear(&c);
  CHECK_OK(kiln_metrics_compute(&c, &r, &e), &e);
  CHECK(r.n == 0 && r.accuracy == 0);
  kiln_metrics_free(&r);
  kiln_confusion_free(&c);
}

static void test_bad_input(void) {
  kiln_err e = {0};
  kiln_confusion c;
  CHECK(kiln_confusion_init(&c, 0, &e) == KILN_ERR_INVALID);
  kiln_err_clear(&e);
  CHECK_OK(kiln_confusion_init(&c, 2, &e), &e);
  CHECK(kiln_confusion_add(&c, 2, 0, &e) == KILN_ERR_INVALID);
  CHECK_MSG(strstr(e.msg, "label 2"), "%s", e.msg);
  kiln_err_clear(&e);
  CHECK(kiln_confusion_add(&c, 0, -1, &e) == KILN_ERR_INVALID);
  CHECK_MSG(strstr(e.msg, "prediction -1"), "%s", e.msg);
  CHECK(c.n == 0);
  kiln_confusion_free(&c);
  kiln_confusion_free(&c); /* idempotent */
  /* failing allocator */
  kiln_err_clear(&e);
  kiln_alloc_fail_after(0);
  kiln_code rc = kiln_confusion_init(&c, 4, &e);
  kiln_alloc_fail_after(-1);
  CHECK(rc == KILN_ERR_NOMEM);
  kiln_err_clear(&e);
  CHECK_OK(kiln_confusion_init(&c, 2, &e), &e);
  kiln_metrics r;
  kiln_alloc_fail_after(0);
  rc = kiln_metrics_compute(&c, &r, &e);
  kiln_alloc_fail_after(-1);
  CHECK(rc == KILN_ERR_NOMEM);
  kiln_metrics_free(&r);
  kiln_confusion_free(&c);
}

/* Quantiles of Student's t against published values (scipy.stats.t.ppf). */
static void test_student_t(void) {
  const struct {
    double p, df, want;
  } q[] = {
      {0.975, 1, 12.706204736174698}, {0.975, 2, 4.302652729749464}, {0.975, 3, 3.182446305284263},
      {0.975, 4, 2.7764451051977987}, {0.975, 9, 2.262157162797903}, {0.975, 29, 2.045229642132703},
      {0.975, 1000, 1.9623390808264078}, {0.95, 5, 2.0150483733332147}, {0.995, 10, 3.169272672616828},
      {0.6, 7, 0.26316686135202155}, {0.025, 4, -2.7764451051977987},
  };
  for (size_t i = 0; i < sizeof q / sizeof q[0]; i++) {
    double got = kiln_student_t_quantile(q[i].p, q[i].df);
    CHECK_CLOSE(got, q[i].want, 1e-9, 0);
    CHECK_CLOSE(kiln_student_t_cdf(got, q[i].df), q[i].p, 0, 1e-12);
  }
  /* df = 1 is the Cauchy distribution */
  for (double t = -5; t <= 5; t += 0.75) CHECK_CLOSE(kiln_student_t_cdf(t, 1), 0.5 + atan(t) / M_PI, 0, 1e-13);
  CHECK(kiln_student_t_cdf(0, 3) == 0.5);
  CHECK(kiln_student_t_quantile(0.5, 3) == 0);
  CHECK(isnan(kiln_student_t_quantile(0.9, 0)));
  CHECK(isnan(kiln_student_t_cdf(1, -1)));
  /* I_x(1,1) = x; I_x(a,b) + I_{1-x}(b,a) = 1 */
  CHECK_CLOSE(kiln_betainc(0.3, 1, 1), 0.3, 0, 1e-14);
  CHECK_CLOSE(kiln_betainc(0.2, 2.5, 4) + kiln_betainc(0.8, 4, 2.5), 1, 0, 1e-14);
  CHECK(isnan(kiln_betainc(1.5, 1, 1)));
}

static void test_mean_ci(void) {
  const double x[3] = {0.94, 0.96, 0.95};
  kiln_mean_ci ci = kiln_mean_ci95(x, 3);
  CHECK(ci.n == 3);
  CHECK_CLOSE(ci.mean, 0.95, 0, 1e-15);
  CHECK_CLOSE(ci.sd, 0.01, 1e-12, 0);
  CHECK_CLOSE(ci.half, 4.302652729749464 * 0.01 / sqrt(3.0), 1e-9, 0);
  char buf[64];
  kiln_mean_ci_format(&ci, 100, buf, sizeof buf);
  CHECK_MSG(!strcmp(buf, "95.0±2.5"), "%s", buf);
  /* five runs, a 90% interval */
  const double y[5] = {1, 2, 3, 4, 5};
  ci = kiln_mean_ci_level(y, 5, 0.90);
  CHECK_CLOSE(ci.half, 2.131846786326649 * sqrt(2.5) / sqrt(5.0), 1e-9, 0);
  /* one run: no interval */
  ci = kiln_mean_ci95(x, 1);
  CHECK(ci.mean == 0.94 && ci.sd == 0 && isnan(ci.half));
  kiln_mean_ci_format(&ci, 100, buf, sizeof buf);
  CHECK_MSG(!strcmp(buf, "94.0"), "%s", buf);
  ci = kiln_mean_ci95(x, 0);
  CHECK(isnan(ci.mean));
  kiln_mean_ci_format(&ci, 100, buf, sizeof buf);
  CHECK(!strcmp(buf, "-"));
  /* identical runs: zero width */
  const double z[4] = {0.5, 0.5, 0.5, 0.5};
  ci = kiln_mean_ci95(z, 4);
  CHECK(ci.half == 0);
}

static void test_segmentation(void) {
  const float map[6] = {0.9f, 0.2f, 0.6f, 0.4f, 0.5f, 0.51f};
  const float mask[6] = {1, 1, 0, 0, 0, 1};
  kiln_seg_counts c = {0};
  kiln_seg_count(map, 0.5f, mask, 6, &c);
  /* predicted (> 0.5): 1,0,1,0,0,1 -> TP 2 (0,5), FP 1 (2), FN 1 (1), TN 2 */
  CHECK(c.tp == 2 && c.fp == 1 && c.fn == 1 && c.tn == 2);
  CHECK_CLOSE(kiln_seg_iou(&c), 2.0 / 4, 0, 1e-15);
  CHECK_CLOSE(kiln_seg_dice(&c), 4.0 / 6, 0, 1e-15);
  /* counts accumulate */
  kiln_seg_count(map, 0.5f, mask, 6, &c);
  CHECK(c.tp == 4 && c.tn == 4);
  /* both empty: perfect agreement */
  kiln_seg_counts z = {0};
  const float zero[3] = {0, 0, 0};
  kiln_seg_count(zero, 0.5f, zero, 3, &z);
  CHECK(kiln_seg_iou(&z) == 1 && kiln_seg_dice(&z) == 1);
  /* prediction empty, mask not: 0 */
  kiln_seg_counts w = {0};
  const float ones[3] = {1, 1, 1};
  kiln_seg_count(zero, 0.5f, ones, 3, &w);
  CHECK(kiln_seg_iou(&w) == 0 && kiln_seg_dice(&w) == 0);
}


/* A tensor folder of n examples (images from a formula, labels i % 3, a disk mask on
 * every example but the last). */
static kiln_dataset *make_dataset(int64_t n, kiln_err *e) {
  char dir[512], path[600];
  snprintf(dir, sizeof dir, "%s/ds%lld", tmpdir, (long long)n);
  mkdir(dir, 0777);
  const int64_t s = 64;
  kiln_tensor *img = NULL, *lab = NULL, *msk = NULL, *pres = NULL;
  kiln_dataset *d = NULL;
  if (kiln_tensor_new(KILN_F32, &(kiln_shape){4, {n, 3, s, s}}, &img, e) ||
      kiln_tensor_new(KILN_I64, &(kiln_shape){1, {n}}, &lab, e) ||
      kiln_tensor_new(KILN_F32, &(kiln_shape){4, {n, 1, s, s}}, &msk, e) ||
      kiln_tensor_new(KILN_F32, &(kiln_shape){1, {n}}, &pres, e))
    goto out;
  for (int64_t i = 0; i < img->numel; i++) ((float *)img->data)[i] = (float)((i * 7919 % 2003) / 1001.5 - 1.0);
  for (int64_t i = 0; i < n; i++) {
    ((int64_t *)lab->data)[i] = i % 3;
    ((float *)pres->data)[i] = i < n - 1;
    for (int64_t y = 0; y < s; y++)
      for (int64_t x = 0; x < s; x++)
        ((float *)msk->data)[(i * s + y) * s + x] =
            i < n - 1 && (x - 30) * (x - 30) + (y - 20 - 3 * i) * (y - 20 - 3 * i) < 200;
  }
  const char *names[4] = {"images", "labels", "masks", "mask_present"};
  kiln_tensor *ts[4] = {img, lab, msk, pres};
  for (int k = 0; k < 4; k++) {
    snprintf(path, sizeof path, "%s/%s.npy", dir, names[k]);
    if (kiln_tensor_write_npy(ts[k], path, e)) goto out;
  }
  kiln_dataset_open_tensors(dir, &d, e);
out:
  kiln_tensor_free(img);
  kiln_tensor_free(lab);
  kiln_tensor_free(msk);
  kiln_tensor_free(pres);
  return d;
}

/* The model run directly, example by example, is what the evaluation reports. */
static void test_evaluate(void) {
  kiln_err e = {0};
  kiln_dataset *d = make_dataset(5, &e); /* batch 2: the last batch holds one example and padding */
  CHECK_OK(e.code, &e);
  if (!d) return;
  kiln_eval_opts o = kiln_eval_opts_default();
  o.cache_dir = "";
  kiln_eval_result r;
  CHECK_OK(kiln_evaluate(MODEL, d, &o, &r, &e), &e);
  if (e.code) {
    kiln_dataset_free(d);
    return;
  }
  CHECK(r.n == 5 && r.k == 3 && r.has_saliency && r.n_masked == 4);
  CHECK(r.cm.n == 5 && r.metrics.n == 5);
  /* reference: a session of the model, each example alone in row 0 of a zero batch */
  kiln_model *m = NULL;
  kiln_session *s = NULL;
  CHECK_OK(kiln_model_load(MODEL, NULL, &m, &e), &e);
  kiln_options so = kiln_options_default();
  so.backend = KILN_BACKEND_REF;
  if (m) CHECK_OK(kiln_session_create(m, &so, &s, &e), &e);
  kiln_tensor *x = NULL;
  CHECK_OK(kiln_tensor_new(KILN_F32, &(kiln_shape){4, {2, 3, 64, 64}}, &x, &e), &e);
  double sum_iou = 0;
  int64_t correct = 0;
  for (int64_t i = 0; s && x && i < 5; i++) {
    int64_t label;
    bool hm;
    float mask[64 * 64];
    CHECK_OK(d->get(d, i, x->data, &label, mask, &hm, &e), &e);
    kiln_tensor *out[2] = {0};
    CHECK_OK(kiln_session_run(s, &x, out, &e), &e);
    if (!out[0] || !out[1]) break;
    const float *lg = out[0]->data;
    for (int k = 0; k < 3; k++) CHECK_CLOSE(r.logits[i * 3 + k], lg[k], 1e-4, 1e-5);
    CHECK(r.pred[i] == kiln_argmax(lg, 3));
    CHECK(r.label[i] == i % 3);
    correct += r.pred[i] == label;
    if (hm) {
      float prob[64 * 64];
      for (int p = 0; p < 64 * 64; p++) prob[p] = (float)(1 / (1 + exp(-((const float *)out[1]->data)[p])));
      kiln_seg_counts c = {0};
      kiln_seg_count(prob, 0.5f, mask, 64 * 64, &c);
      CHECK_CLOSE(r.iou[i], kiln_seg_iou(&c), 0, 1e-3);
      CHECK_CLOSE(r.dice[i], kiln_seg_dice(&c), 0, 1e-3);
      sum_iou += kiln_seg_iou(&c);
    } else {
      CHECK(isnan(r.iou[i]) && isnan(r.dice[i]));
    }
    kiln_tensor_free(out[0]);
    kiln_tensor_free(out[1]);
  }
  CHECK_CLOSE(r.mean_iou, sum_iou / 4, 0, 1e-3);
  CHECK_CLOSE(r.metrics.accuracy, correct / 5.0, 0, 1e-12);
  int64_t diag = 0;
  for (int k = 0; k < 3; k++) diag += r.cm.m[k * 3 + k];
  CHECK(diag == correct);
  kiln_tensor_free(x);
  kiln_session_free(s);
  kiln_model_free(m);
  kiln_eval_result_free(&r);
  /* the reference backend gives the same predictions; limit */
  o.backend = KILN_BACKEND_REF;
  o.limit = 3;
  kiln_eval_result r2;
  CHECK_OK(kiln_evaluate(MODEL, d, &o, &r2, &e), &e);
  CHECK(r2.n == 3);
  kiln_eval_result_free(&r2);
  kiln_dataset_free(d);
}

static void test_evaluate_errors(void) {
  kiln_err e = {0};
  kiln_dataset *d = make_dataset(2, &e);
  if (!d) return;
  kiln_eval_result r;
  kiln_eval_opts o = kiln_eval_opts_default();
  o.backend = KILN_BACKEND_REF;
  CHECK(kiln_evaluate(KILN_SOURCE_DIR "/tests/data/gradcam/nothing.onnx", d, &o, &r, &e) == KILN_ERR_IO);
  CHECK_MSG(strstr(e.msg, "nothing.onnx"), "%s", e.msg);
  /* classes differ: the dataset has 2 (labels 0, 1), the model 3 */
  kiln_err_clear(&e);
  CHECK(kiln_evaluate(MODEL, d, &o, &r, &e) == KILN_ERR_INVALID);
  CHECK_MSG(strstr(e.msg, "2 classes") && strstr(e.msg, "3 logits"), "%s", e.msg);
  /* a batch of 0 */
  kiln_err_clear(&e);
  o.batch = 0;
  CHECK(kiln_evaluate(MODEL, d, &o, &r, &e) == KILN_ERR_INVALID);
  kiln_dataset_free(d);
}

/* Every allocation of an evaluation may fail: the error is NOMEM and nothing leaks
 * (the sanitizer build checks the leaks). */
static void test_evaluate_failing_allocator(void) {
  kiln_err e = {0};
  kiln_dataset *d = make_dataset(3, &e);
  if (!d) return;
  kiln_eval_opts o = kiln_eval_opts_default();
  o.backend = KILN_BACKEND_REF;
  o.threads = 1;
  kiln_eval *ev = NULL;
  CHECK_OK(kiln_eval_create(MODEL, &o, &ev, &e), &e);
  int failures = 0, n;
  for (n = 0; ev && n < 100000; n += n < 40 ? 1 : n / 8) {
    kiln_eval_result r;
    kiln_err_clear(&e);
    kiln_alloc_fail_after(n);
    kiln_code rc = kiln_eval_run(ev, d, &r, &e);
    kiln_alloc_fail_after(-1);
    if (rc == KILN_OK) {
      kiln_eval_result_free(&r);
      break;
    }
    failures++;
    CHECK_MSG(rc == KILN_ERR_NOMEM, "allocation %d: %s", n, e.msg);
    CHECK(r.label == NULL && r.cm.m == NULL);
  }
  CHECK(failures > 10);
  kiln_eval_free(ev);
  /* creating the evaluator */
  for (n = 0; n < 100000; n += n < 40 ? 1 : n / 4) {
    kiln_err_clear(&e);
    kiln_alloc_fail_after(n);
    kiln_code rc = kiln_eval_create(MODEL, &o, &ev, &e);
    kiln_alloc_fail_after(-1);
    if (rc == KILN_OK) {
      kiln_eval_free(ev);
      break;
    }
    CHECK_MSG(rc == KILN_ERR_NOMEM, "allocation %d: %s", n, e.msg);
  }
  kiln_dataset_free(d);
}

int main(void) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/kiln_test_metrics_%d", (int)getpid());
  mkdir(tmpdir, 0777);
  RUN(test_three_classes);
  RUN(test_binary);
  RUN(test_zero_division);
  RUN(test_bad_input);
  RUN(test_student_t);
  RUN(test_mean_ci);
  RUN(test_segmentation);
  RUN(test_evaluate);
  RUN(test_evaluate_errors);
  RUN(test_evaluate_failing_allocator);
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  if (system(cmd)) fprintf(stderr, "could not remove %s\n", tmpdir);
  TEST_MAIN_END();
}
