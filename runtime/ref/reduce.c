/* reduce.c — reference kernels of the reduce family: one reduction loop, with each op
 * supplying its accumulator's start value, step and finalisation. */
#include <math.h>
#include <string.h>

#include "ir/ops/reduce.h"
#include "runtime/ref/ref_util.h"

typedef enum reduce_start { START_ZERO, START_LOWEST, START_HIGHEST } reduce_start;

/* One reduction.  Floats accumulate in double, integers in int64 (sums wrap). */
typedef struct reducer {
  reduce_start start; /* the identity: 0, or the dtype's lowest/highest value for max/min */
  double (*step_f)(double acc, double x);
  double (*done_f)(double acc, int64_t count);
  int64_t (*step_i)(int64_t acc, int64_t x);
  int64_t (*done_i)(int64_t acc, int64_t count);
} reducer;

static int64_t wrap_add(int64_t a, int64_t b) { return (int64_t)((uint64_t)a + (uint64_t)b); }
static int64_t wrap_mul(int64_t a, int64_t b) { return (int64_t)((uint64_t)a * (uint64_t)b); }

static double sum_f(double a, double x) { return a + x; }
static double max_f(double a, double x) { return isnan(x) || x > a ? x : a; }
static double min_f(double a, double x) { return isnan(x) || x < a ? x : a; }
static double sumsq_f(double a, double x) { return a + x * x; }
static double same_f(double a, int64_t count) { return a; }
static double mean_f(double a, int64_t count) { return a / (double)count; } /* 0/0: NaN */
static double sqrt_f(double a, int64_t count) { return sqrt(a); }

static int64_t sum_i(int64_t a, int64_t x) { return wrap_add(a, x); }
static int64_t max_i(int64_t a, int64_t x) { return x > a ? x : a; }
static int64_t min_i(int64_t a, int64_t x) { return x < a ? x : a; }
static int64_t sumsq_i(int64_t a, int64_t x) { return wrap_add(a, wrap_mul(x, x)); }
static int64_t same_i(int64_t a, int64_t count) { return a; }
static int64_t mean_i(int64_t a, int64_t count) { return count ? a / count : 0; }
static int64_t sqrt_i(int64_t a, int64_t count) { return (int64_t)sqrt((double)a); }

static const reducer red_sum = {START_ZERO, sum_f, same_f, sum_i, same_i};
static const reducer red_mean = {START_ZERO, sum_f, mean_f, sum_i, mean_i};
static const reducer red_max = {START_LOWEST, max_f, same_f, max_i, same_i};
static const reducer red_min = {START_HIGHEST, min_f, same_f, min_i, same_i};
static const reducer red_sumsq = {START_ZERO, sumsq_f, same_f, sumsq_i, same_i};
static const reducer red_l2 = {START_ZERO, sumsq_f, sqrt_f, sumsq_i, sqrt_i};

/* Offset in x of the element whose coordinates along the `nd` dims dims[] (with x-strides
 * st[]) are the multi-index of flat index `k` over those dims. */
static int64_t sub_offset(int64_t k, int nd, const int64_t *dims, const int64_t *st) {
  int64_t off = 0;
  for (int i = nd - 1; i >= 0; i--) {
    off += (k % dims[i]) * st[i];
    k /= dims[i];
  }
  return off;
}

/* The reduction loop every Reduce* kernel shares: for each output element (a point of the
 * kept dims, in order), fold the x elements along the reduced dims. */
static kiln_code reduce(const reducer *r, const kiln_node *n, const kiln_tensor *const *in,
                        kiln_tensor *y, kiln_err *e) {
  const kiln_tensor *x = in[0], *axes = n->n_in > 1 ? in[1] : NULL;
  uint32_t mask;
  bool noop;
  KILN_TRY(kiln_reduce_axes(n, x->shape.rank, axes, &mask, &noop, e));
  if (noop) {
    memcpy(y->data, x->data, kiln_tensor_nbytes(x));
    return KILN_OK;
  }
  int64_t st[KILN_MAX_RANK];
  int64_t kept_d[KILN_MAX_RANK], kept_st[KILN_MAX_RANK], red_d[KILN_MAX_RANK],
      red_st[KILN_MAX_RANK];
  int nk = 0, nr = 0;
  int64_t count = 1;
  kiln_strides(&x->shape, st);
  for (int i = 0; i < x->shape.rank; i++) {
    if (mask & (1u << i)) {
      red_d[nr] = x->shape.d[i], red_st[nr++] = st[i];
      count *= x->shape.d[i];
    } else {
      kept_d[nk] = x->shape.d[i], kept_st[nk++] = st[i];
    }
  }
  bool is_float = x->dtype == KILN_F32;
  double start_f = r->start == START_ZERO ? 0 : r->start == START_LOWEST ? -INFINITY : INFINITY;
  int64_t lo = x->dtype == KILN_I32 ? INT32_MIN : INT64_MIN;
  int64_t hi = x->dtype == KILN_I32 ? INT32_MAX : INT64_MAX;
  int64_t start_i = r->start == START_ZERO ? 0 : r->start == START_LOWEST ? lo : hi;
  for (int64_t o = 0; o < y->numel; o++) {
    int64_t base = sub_offset(o, nk, kept_d, kept_st);
    double af = start_f;
    int64_t ai = start_i;
    for (int64_t k = 0; k < count; k++) {
      int64_t off = base + sub_offset(k, nr, red_d, red_st);
      if (is_float)
        af = r->step_f(af, F32(x)[off]);
      else
        ai = r->step_i(ai, kiln_tensor_get_i(x, off));
    }
    if (is_float)
      F32(y)[o] = (float)r->done_f(af, count);
    else if (y->dtype == KILN_I64)
      I64(y)[o] = r->done_i(ai, count);
    else
      I32(y)[o] = (int32_t)(uint32_t)(uint64_t)r->done_i(ai, count);
  }
  return KILN_OK;
}

#define REDUCE_KERNEL(op, red)                                                                     \
  kiln_code ref_##op(const kiln_ref_ctx *ctx, const kiln_node *n, const kiln_tensor *const *in,    \
                     kiln_tensor *const *out, kiln_err *e) {                                       \
    (void)ctx;                                                                                     \
    return reduce(&red, n, in, out[0], e);                                                         \
  }

REDUCE_KERNEL(ReduceSum, red_sum)
REDUCE_KERNEL(ReduceMean, red_mean)
REDUCE_KERNEL(ReduceMax, red_max)
REDUCE_KERNEL(ReduceMin, red_min)
REDUCE_KERNEL(ReduceSumSquare, red_sumsq)
REDUCE_KERNEL(ReduceL2, red_l2)
