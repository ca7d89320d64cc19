/* metrics.c — confusion matrices, per-class metrics and their means, Student-t
 * intervals, and segmentation IoU/Dice (study/metrics.h). */
#include "study/metrics.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* ---- confusion matrix ---- */
kiln_code kiln_confusion_init(kiln_confusion *c, int64_t k, kiln_err *e) {
  memset(c, 0, sizeof *c);
  if (k < 1 || k > KILN_METRICS_MAX_CLASSES)
    return kiln_errf(e, KILN_ERR_INVALID, "a confusion matrix needs 1..%d classes, got %lld", KILN_METRICS_MAX_CLASSES,
                     (long long)k);
  c->m = kiln_calloc((size_t)(k * k), sizeof *c->m);
  if (!c->m) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  c->k = k;
  return KILN_OK;
}

void kiln_confusion_free(kiln_confusion *c) {
  if (!c) return;
  kiln_free(c->m);
  memset(c, 0, sizeof *c);
}

void kiln_confusion_clear(kiln_confusion *c) {
  if (c->m) memset(c->m, 0, sizeof *c->m * (size_t)(c->k * c->k));
  c->n = 0;
}

kiln_code kiln_confusion_add(kiln_confusion *c, int64_t truth, int64_t pred, kiln_err *e) {
  if (truth < 0 || truth >= c->k)
    return kiln_errf(e, KILN_ERR_INVALID, "label %lld is out of range [0, %lld)", (long long)truth, (long long)c->k);
  if (pred < 0 || pred >= c->k)
    return kiln_errf(e, KILN_ERR_INVALID, "prediction %lld is out of range [0, %lld)", (long long)pred,
                     (long long)c->k);
  c->m[truth * c->k + pred]++;
  c->n++;
  return KILN_OK;
}

void kiln_class_counts(const kiln_confusion *c, int64_t cls, int64_t *tp, int64_t *fp, int64_t *fn, int64_t *tn) {
  int64_t k = c->k, row = 0, col = 0, total = 0;
  for (int64_t i = 0; i < k; i++) {
    row += c->m[cls * k + i];
    col += c->m[i * k + cls];
  }
  for (int64_t i = 0; i < k * k; i++) total += c->m[i];
  *tp = c->m[cls * k + cls];
  *fp = col - *tp;
  *fn = row - *tp;
  *tn = total - *tp - *fp - *fn;
}

/* num/den, or 0 with `bit` set in *undef when den is 0 (the documented convention). */
static double ratio(double num, double den, unsigned bit, unsigned *undef) {
  if (den == 0) {
    *undef |= bit;
    return 0;
  }
  return num / den;
}

kiln_code kiln_metrics_compute(const kiln_confusion *c, kiln_metrics *out, kiln_err *e) {
  memset(out, 0, sizeof *out);
  out->cls = kiln_calloc((size_t)c->k, sizeof *out->cls);
  if (!out->cls) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  out->k = c->k;
  int64_t trace = 0, total = 0;
  for (int64_t i = 0; i < c->k; i++) trace += c->m[i * c->k + i];
  for (int64_t i = 0; i < c->k * c->k; i++) total += c->m[i];
  out->n = total;
  out->accuracy = total ? (double)trace / (double)total : 0;
  for (int64_t k = 0; k < c->k; k++) {
    kiln_class_metrics *m = &out->cls[k];
    kiln_class_counts(c, k, &m->tp, &m->fp, &m->fn, &m->tn);
    m->support = m->tp + m->fn;
    double tp = (double)m->tp, fp = (double)m->fp, fn = (double)m->fn, tn = (double)m->tn;
    m->precision = ratio(tp, tp + fp, KILN_UNDEF_PRECISION, &m->undefined);
    m->sensitivity = ratio(tp, tp + fn, KILN_UNDEF_SENSITIVITY, &m->undefined);
    m->specificity = ratio(tn, tn + fp, KILN_UNDEF_SPECIFICITY, &m->undefined);
    m->f1 = ratio(2 * tp, 2 * tp + fp + fn, KILN_UNDEF_F1, &m->undefined);
    out->mean_precision += m->precision;
    out->mean_sensitivity += m->sensitivity;
    out->mean_specificity += m->specificity;
    out->mean_f1 += m->f1;
  }
  out->mean_precision /= (double)c->k;
  out->mean_sensitivity /= (double)c->k;
  out->mean_specificity /= (double)c->k;
  out->mean_f1 /= (double)c->k;
  return KILN_OK;
}

void kiln_metrics_free(kiln_metrics *m) {
  if (!m) return;
  kiln_free(m->cls);
  m->cls = NULL;
}

/* Appends to a bounded buffer; *len tracks what was written (stops at the end). */
static void put(char *buf, size_t n, size_t *len, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void put(char *buf, size_t n, size_t *len, const char *fmt, ...) {
  if (*len + 1 >= n) return;
  va_list ap;
  va_start(ap, fmt);
  int w = vsnprintf(buf + *len, n - *len, fmt, ap);
  va_end(ap);
  if (w > 0) *len = *len + (size_t)w < n ? *len + (size_t)w : n - 1;
}

static void pct(char *out, size_t n, double v, bool undef) {
  snprintf(out, n, "%.1f%s", 100 * v, undef ? "*" : "");
}

void kiln_metrics_format(const kiln_metrics *m, const char *const *names, bool markdown, char *buf, size_t n) {
  size_t len = 0;
  if (!n) return;
  buf[0] = 0;
  int w = 5; /* width of the class column */
  for (int64_t k = 0; k < m->k; k++) {
    int l = names && names[k] ? (int)strlen(names[k]) : 4;
    if (l > w) w = l;
  }
  if (w > 40) w = 40;
  bool any_undef = false;
  const char *hdr[5] = {"precision", "sensitivity", "specificity", "F1", "support"};
  if (markdown) {
    put(buf, n, &len, "| class | precision (%%) | sensitivity (%%) | specificity (%%) | F1 (%%) | support |\n");
    put(buf, n, &len, "|---|---:|---:|---:|---:|---:|\n");
  } else {
    put(buf, n, &len, "%-*s %11s %11s %11s %11s %8s\n", w, "class", hdr[0], hdr[1], hdr[2], hdr[3], hdr[4]);
  }
  for (int64_t k = 0; k < m->k; k++) {
    const kiln_class_metrics *c = &m->cls[k];
    char num[32], cell[4][32];
    snprintf(num, sizeof num, "%lld", (long long)k);
    const char *nm = names && names[k] ? names[k] : num;
    pct(cell[0], 32, c->precision, c->undefined & KILN_UNDEF_PRECISION);
    pct(cell[1], 32, c->sensitivity, c->undefined & KILN_UNDEF_SENSITIVITY);
    pct(cell[2], 32, c->specificity, c->undefined & KILN_UNDEF_SPECIFICITY);
    pct(cell[3], 32, c->f1, c->undefined & KILN_UNDEF_F1);
    any_undef |= c->undefined != 0;
    if (markdown)
      put(buf, n, &len, "| %s | %s | %s | %s | %s | %lld |\n", nm, cell[0], cell[1], cell[2], cell[3],
          (long long)c->support);
    else
      put(buf, n, &len, "%-*.*s %11s %11s %11s %11s %8lld\n", w, w, nm, cell[0], cell[1], cell[2], cell[3],
          (long long)c->support);
  }
  if (markdown) {
    put(buf, n, &len, "| **mean** | **%.1f** | **%.1f** | **%.1f** | **%.1f** | %lld |\n", 100 * m->mean_precision,
        100 * m->mean_sensitivity, 100 * m->mean_specificity, 100 * m->mean_f1, (long long)m->n);
    put(buf, n, &len, "\naccuracy %.1f%% (%lld examples)\n", 100 * m->accuracy, (long long)m->n);
  } else {
    put(buf, n, &len, "%-*s %11.1f %11.1f %11.1f %11.1f %8lld\n", w, "mean", 100 * m->mean_precision,
        100 * m->mean_sensitivity, 100 * m->mean_specificity, 100 * m->mean_f1, (long long)m->n);
    put(buf, n, &len, "accuracy %.1f%% (%lld examples)\n", 100 * m->accuracy, (long long)m->n);
  }
  if (any_undef) put(buf, n, &len, "* 0/0: the class was never predicted or never present; counted as 0\n");
}

/* ---- Student's t ---- */

/* Continued fraction of the incomplete beta function (modified Lentz), valid for
 * x < (a+1)/(a+b+2); the caller uses the symmetry I_x(a,b) = 1 - I_{1-x}(b,a). */
static double betacf(double x, double a, double b) {
  const double tiny = 1e-300, eps = 1e-16;
  double qab = a + b, qap = a + 1, qam = a - 1;
  double c = 1, d = 1 - qab * x / qap;
  if (fabs(d) < tiny) d = tiny;
  d = 1 / d;
  double h = d;
  for (int m = 1; m <= 1000; m++) {
    int m2 = 2 * m;
    double aa = m * (b - m) * x / ((qam + m2) * (a + m2));
    d = 1 + aa * d;
    if (fabs(d) < tiny) d = tiny;
    c = 1 + aa / c;
    if (fabs(c) < tiny) c = tiny;
    d = 1 / d;
    h *= d * c;
    aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
    d = 1 + aa * d;
    if (fabs(d) < tiny) d = tiny;
    c = 1 + aa / c;
    if (fabs(c) < tiny) c = tiny;
    d = 1 / d;
    double del = d * c;
    h *= del;
    if (fabs(del - 1) < eps) break;
  }
  return h;
}

double kiln_betainc(double x, double a, double b) {
  if (!(a > 0) || !(b > 0) || !(x >= 0) || !(x <= 1)) return NAN;
  if (x == 0 || x == 1) return x;
  double lbt = lgamma(a + b) - lgamma(a) - lgamma(b) + a * log(x) + b * log1p(-x);
  double bt = exp(lbt);
  if (x < (a + 1) / (a + b + 2)) return bt * betacf(x, a, b) / a;
  return 1 - bt * betacf(1 - x, b, a) / b;
}

double kiln_student_t_cdf(double t, double df) {
  if (!(df > 0) || isnan(t)) return NAN;
  if (isinf(t)) return t > 0 ? 1 : 0;
  /* P(|T| > |t|) = I_{df/(df+t^2)}(df/2, 1/2) */
  double tail = 0.5 * kiln_betainc(df / (df + t * t), df / 2, 0.5);
  return t > 0 ? 1 - tail : tail;
}

double kiln_student_t_quantile(double p, double df) {
  if (!(df > 0) || !(p > 0) || !(p < 1)) return p == 0 ? -INFINITY : p == 1 ? INFINITY : NAN;
  if (p == 0.5) return 0;
  if (p < 0.5) return -kiln_student_t_quantile(1 - p, df);
  /* bracket, then bisect: the CDF is monotone, and 200 halvings reach double precision */
  double lo = 0, hi = 1;
  while (kiln_student_t_cdf(hi, df) < p && hi < 1e300) hi *= 2;
  for (int i = 0; i < 200 && hi - lo > 1e-15 * hi; i++) {
    double mid = 0.5 * (lo + hi);
    if (kiln_student_t_cdf(mid, df) < p)
      lo = mid;
    else
      hi = mid;
  }
  return 0.5 * (lo + hi);
}

kiln_mean_ci kiln_mean_ci_level(const double *x, int64_t n, double level) {
  kiln_mean_ci r = {.n = n, .mean = NAN, .sd = NAN, .half = NAN};
  if (n < 1) return r;
  double s = 0;
  for (int64_t i = 0; i < n; i++) s += x[i];
  r.mean = s / (double)n;
  double ss = 0;
  for (int64_t i = 0; i < n; i++) ss += (x[i] - r.mean) * (x[i] - r.mean);
  r.sd = n > 1 ? sqrt(ss / (double)(n - 1)) : 0;
  if (n > 1) r.half = kiln_student_t_quantile(0.5 + level / 2, (double)(n - 1)) * r.sd / sqrt((double)n);
  return r;
}

kiln_mean_ci kiln_mean_ci95(const double *x, int64_t n) { return kiln_mean_ci_level(x, n, 0.95); }

void kiln_mean_ci_format(const kiln_mean_ci *ci, double scale, char *buf, size_t n) {
  if (isnan(ci->mean))
    snprintf(buf, n, "-");
  else if (ci->n < 2 || isnan(ci->half))
    snprintf(buf, n, "%.1f", scale * ci->mean);
  else
    snprintf(buf, n, "%.1f±%.1f", scale * ci->mean, scale * ci->half);
}

/* ---- segmentation ---- */
void kiln_seg_count(const float *map, float thresh, const float *mask, int64_t n, kiln_seg_counts *c) {
  int64_t tp = 0, fp = 0, fn = 0, tn = 0;
  for (int64_t i = 0; i < n; i++) {
    bool p = map[i] > thresh, t = mask[i] >= 0.5f;
    tp += p && t;
    fp += p && !t;
    fn += !p && t;
    tn += !p && !t;
  }
  c->tp += tp;
  c->fp += fp;
  c->fn += fn;
  c->tn += tn;
}

double kiln_seg_iou(const kiln_seg_counts *c) {
  int64_t den = c->tp + c->fp + c->fn;
  return den ? (double)c->tp / (double)den : 1.0;
}

double kiln_seg_dice(const kiln_seg_counts *c) {
  int64_t den = 2 * c->tp + c->fp + c->fn;
  return den ? 2.0 * (double)c->tp / (double)den : 1.0;
}
