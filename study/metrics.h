/* metrics.h — the study's classification and segmentation metrics: confusion
 * matrix, per-class precision / sensitivity / specificity / F1 and their means over
 * classes (Tables 1-4), accuracy, mean ± 95% Student-t interval over repeated runs,
 * and IoU / Dice of a thresholded map against a mask.
 *
 * Conventions (docs/study.md, "Metrics"):
 *   - the confusion matrix counts m[truth * k + pred];
 *   - for class c: TP = m[c][c], FP = column c minus TP, FN = row c minus TP,
 *     TN = everything else;
 *     precision TP/(TP+FP), sensitivity TP/(TP+FN), specificity TN/(TN+FP),
 *     F1 2TP/(2TP+FP+FN);
 *   - a ratio whose denominator is 0 (a class never predicted, a class absent
 *     from the truth) is 0, as scikit-learn's zero_division=0, and counts in the
 *     mean over classes; the class is flagged (`undefined` bits) so that a table
 *     can mark it.  This never rewards a classifier for ignoring a class;
 *   - the means are unweighted over the k classes (macro averages);
 *   - IoU and Dice of two empty masks are 1 (they agree perfectly).
 * Pure functions: nothing prints, nothing allocates except where noted. */
#ifndef KILN_STUDY_METRICS_H
#define KILN_STUDY_METRICS_H

#include <stddef.h>

#include "ir/base.h"

/* ---- confusion matrix ---- */
typedef struct kiln_confusion {
  int64_t k;  /* classes */
  int64_t n;  /* examples counted */
  int64_t *m; /* k*k counts, m[truth*k + pred] (owned) */
} kiln_confusion;

kiln_code kiln_confusion_init(kiln_confusion *c, int64_t k, kiln_err *e);
void kiln_confusion_free(kiln_confusion *c);
void kiln_confusion_clear(kiln_confusion *c);
/* Counts one example; labels outside [0,k) are an error naming them. */
kiln_code kiln_confusion_add(kiln_confusion *c, int64_t truth, int64_t pred, kiln_err *e);

/* Bits of kiln_class_metrics.undefined: which ratios had a zero denominator. */
enum {
  KILN_UNDEF_PRECISION = 1,
  KILN_UNDEF_SENSITIVITY = 2,
  KILN_UNDEF_SPECIFICITY = 4,
  KILN_UNDEF_F1 = 8,
};

typedef struct kiln_class_metrics {
  int64_t tp, fp, fn, tn;
  int64_t support; /* TP + FN: examples whose truth is this class */
  double precision, sensitivity, specificity, f1;
  unsigned undefined; /* KILN_UNDEF_* bits */
} kiln_class_metrics;

#define KILN_METRICS_MAX_CLASSES 1024
typedef struct kiln_metrics {
  int64_t k, n;
  double accuracy; /* trace / n (0 when n = 0) */
  double mean_precision, mean_sensitivity, mean_specificity, mean_f1; /* over the k classes */
  kiln_class_metrics *cls; /* k entries (owned; kiln_metrics_free) */
} kiln_metrics;

/* The four counts of class c from a confusion matrix. */
void kiln_class_counts(const kiln_confusion *c, int64_t cls, int64_t *tp, int64_t *fp, int64_t *fn, int64_t *tn);
/* Per-class metrics and their means. */
kiln_code kiln_metrics_compute(const kiln_confusion *c, kiln_metrics *out, kiln_err *e);
void kiln_metrics_free(kiln_metrics *m);

/* The per-class table (one row per class, then the means and the accuracy) as text
 * for a terminal, or as a Markdown table.  names[k] may be NULL (classes print as
 * their numbers).  Values are percentages with one decimal; a ratio with a zero
 * denominator is shown as "0.0*" with a footnote.  Truncates to n bytes. */
void kiln_metrics_format(const kiln_metrics *m, const char *const *names, bool markdown, char *buf, size_t n);

/* ---- repeated runs ---- */
typedef struct kiln_mean_ci {
  int64_t n;
  double mean;
  double sd;   /* sample standard deviation (n-1); 0 for n = 1 */
  double half; /* half-width of the 95% interval: t(0.975, n-1) * sd / sqrt(n); NaN for n < 2 */
} kiln_mean_ci;

/* Mean ± 95% Student-t interval of x[0..n).  n = 0 gives mean NaN. */
kiln_mean_ci kiln_mean_ci95(const double *x, int64_t n);
/* Mean ± the `level` (e.g. 0.95) two-sided Student-t interval. */
kiln_mean_ci kiln_mean_ci_level(const double *x, int64_t n, double level);
/* Student's t distribution with df > 0 degrees of freedom: CDF and quantile
 * (computed from the regularized incomplete beta function, not from a table). */
double kiln_student_t_cdf(double t, double df);
double kiln_student_t_quantile(double p, double df);
/* The regularized incomplete beta function I_x(a, b), a, b > 0, x in [0,1]. */
double kiln_betainc(double x, double a, double b);
/* "96.1±1.4" (one decimal; the ± part omitted when n < 2); scale multiplies
 * mean and half-width (100 for percentages). */
void kiln_mean_ci_format(const kiln_mean_ci *ci, double scale, char *buf, size_t n);

/* ---- segmentation ---- */
typedef struct kiln_seg_counts {
  int64_t tp, fp, fn, tn;
} kiln_seg_counts;

/* Counts pixels of `map > thresh` against `mask >= 0.5` over n pixels (adds to *c). */
void kiln_seg_count(const float *map, float thresh, const float *mask, int64_t n, kiln_seg_counts *c);
/* IoU = TP/(TP+FP+FN), Dice = 2TP/(2TP+FP+FN); 1 when both masks are empty. */
double kiln_seg_iou(const kiln_seg_counts *c);
double kiln_seg_dice(const kiln_seg_counts *c);

#endif
