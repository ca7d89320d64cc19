/* emit_norm.c — emitters of BatchNormalization (inference and training forms),
 * InstanceNormalization and LRN.
 *
 * Normalization arithmetic follows the reference: statistics and the affine map are in
 * double, y = (float)((x - mean) * k + B) with k = scale / sqrt(var + epsilon).  Inference
 * BatchNormalization with constant parameters gets (mean, k, B) per channel computed at
 * compile time. */
#include <math.h>
#include <string.h>

#include "codegen/emit_copy.h"
#include "codegen/emit_nn.h"

/* Whether BatchNormalization normalizes with batch statistics (as runtime/ref/norm.c decides
 * for a compiled program, which never runs in the reference's training context). */
static bool bn_training(const kiln_node *n) {
  if (n->opset >= 14) return ir_attr_int(n, "training_mode") != 0;
  bool extra = false;
  for (int o = 1; o < n->n_out; o++) extra = extra || n->out[o] >= 0;
  if (n->opset < 7 && ir_attr_int(n, "is_test") != 0) return false;
  return extra;
}

static LLVMValueRef f64c(cg_kernel *k, double v) { return LLVMConstReal(k->t->f64, v); }
static LLVMValueRef ext(cg_kernel *k, LLVMValueRef v) {
  return LLVMBuildFPExt(k->b, v, k->t->f64, "");
}
static LLVMValueRef sqrt64(cg_kernel *k, LLVMValueRef v) {
  LLVMTypeRef t = k->t->f64;
  return cg_intrinsic(k, "llvm.sqrt", &t, 1, &v, 1);
}

/* y[off + j] = (float)((x[off + j] - mean) * kf + bias) for j in [jlo, jhi). */
static void emit_affine_run(cg_kernel *k, LLVMValueRef x, LLVMValueRef y, LLVMValueRef off,
                            LLVMValueRef jlo, LLVMValueRef jhi, LLVMValueRef mean,
                            LLVMValueRef kf, LLVMValueRef bias) {
  LLVMBuilderRef b = k->b;
  cg_loop l;
  LLVMValueRef j = cg_loop_begin(k, &l, jlo, jhi, NULL, "j");
  LLVMValueRef i = cg_add(k, off, j);
  LLVMValueRef v = LLVMBuildFSub(b, ext(k, cg_load(k, k->t->f32, x, i)), mean, "");
  v = LLVMBuildFAdd(b, LLVMBuildFMul(b, v, kf, ""), bias, "");
  cg_store(k, LLVMBuildFPTrunc(b, v, k->t->f32, ""), y, i);
  cg_loop_end(k, &l);
}

/* Shape of BatchNormalization's data: element (b, p, j) at (b * P + p) * pp + j. */
typedef struct bn_dims {
  int64_t batch, P, pp;
} bn_dims;

static bn_dims bn_get_dims(const kiln_graph *g, const kiln_node *n) {
  const kiln_value *x = ir_in(g, n, 0), *s = ir_in(g, n, 1);
  int64_t spatial = 1, P = 1;
  for (int i = 2; i < x->shape.rank; i++) spatial *= x->shape.d[i];
  for (int i = 0; i < s->shape.rank; i++) P *= s->shape.d[i];
  bool per_channel = P == x->shape.d[1];
  return (bn_dims){.batch = x->shape.d[0], .P = P, .pp = per_channel ? spatial : 1};
}

static int out_buf(const kiln_node *n, int o) { return n->n_out > o ? n->out[o] : -1; }

/* Inference: rows (b, p) of pp elements. */
static kiln_code emit_bn_inference(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                                   kiln_err *e) {
  bn_dims d = bn_get_dims(g, n);
  double eps = ir_attr_float(n, "epsilon");
  const kiln_tensor *pc[4];
  bool all_const = true;
  for (int i = 0; i < 4; i++) {
    pc[i] = ir_in_const(g, n, 1 + i);
    all_const = all_const && pc[i];
  }
  int bufs[8] = {n->in[0], out_buf(n, 0)};
  int n_args = 2;
  if (all_const) { /* (mean, k, B) per parameter, in double */
    double *tab = kiln_malloc(sizeof(double) * 3 * (size_t)(d.P ? d.P : 1));
    if (!tab) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory (BatchNormalization)");
    const float *sc = pc[0]->data, *bi = pc[1]->data, *mu = pc[2]->data, *va = pc[3]->data;
    for (int64_t p = 0; p < d.P; p++) {
      tab[3 * p] = mu[p];
      tab[3 * p + 1] = sc[p] / sqrt(va[p] + eps);
      tab[3 * p + 2] = bi[p];
    }
    int id = cg_buf_const(cx, tab, sizeof(double) * 3 * (size_t)d.P, e);
    kiln_free(tab);
    if (id < 0) return e->code;
    bufs[n_args++] = id;
  } else {
    for (int i = 1; i <= 4; i++) bufs[n_args++] = n->in[i];
  }
  int64_t numel = d.batch * d.P * d.pp;
  if (numel > 0 && out_buf(n, 0) >= 0) {
    cg_rows rp;
    cg_rows_plan(&rp, d.batch * d.P, d.pp, CG_TILE_ELEMS);
    cg_kernel k;
    KILN_TRY(cg_kernel_begin(cx, &k, "batchnorm", n_args, e));
    LLVMValueRef row, jlo, jhi;
    cg_rows_begin(&k, &rp, &row, &jlo, &jhi);
    LLVMValueRef p = LLVMBuildURem(k.b, row, cg_i64(&k, d.P), "p");
    LLVMValueRef mean, kf, bias;
    if (all_const) {
      LLVMValueRef tab = cg_arg(&k, 2), p3 = nn_mulc(&k, p, 3);
      mean = cg_load(&k, k.t->f64, tab, p3);
      kf = cg_load(&k, k.t->f64, tab, nn_addc(&k, p3, 1));
      bias = cg_load(&k, k.t->f64, tab, nn_addc(&k, p3, 2));
    } else {
      LLVMValueRef sc = ext(&k, cg_load(&k, k.t->f32, cg_arg(&k, 2), p));
      bias = ext(&k, cg_load(&k, k.t->f32, cg_arg(&k, 3), p));
      mean = ext(&k, cg_load(&k, k.t->f32, cg_arg(&k, 4), p));
      LLVMValueRef var = ext(&k, cg_load(&k, k.t->f32, cg_arg(&k, 5), p));
      kf = LLVMBuildFDiv(k.b, sc, sqrt64(&k, LLVMBuildFAdd(k.b, var, f64c(&k, eps), "")), "");
    }
    emit_affine_run(&k, cg_arg(&k, 0), cg_arg(&k, 1), nn_mulc(&k, row, d.pp), jlo, jhi, mean, kf,
                    bias);
    cg_rows_end(&k, &rp);
    KILN_TRY(cg_kernel_end(cx, &k, rp.n_tiles, bufs, e));
  }
  /* optional outputs pass the inputs' statistics through: running mean/var, then the saved
   * mean/var of opsets < 14 */
  static const int src_of[5] = {0, 3, 4, 3, 4};
  for (int o = 1; o < n->n_out && o < 5; o++) {
    if (n->out[o] < 0 || d.P == 0) continue;
    cg_copy c = {.label = "batchnorm_stat", .dtype = KILN_F32, .rank = 1, .dims = {d.P},
                 .src_stride = {1}, .dst_stride = {1},
                 .bufs = (int[]){n->in[src_of[o]], n->out[o]}, .n_bufs = 2, .src_arg = 0,
                 .dst_arg = 1, .fill_arg = -1};
    KILN_TRY(cg_emit_copy(cx, &c, e));
  }
  return KILN_OK;
}

/* Training: one tile per parameter p: batch statistics (double, fixed order), normalize, and
 * the running statistics blended with momentum. */
static kiln_code emit_bn_training(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                                  kiln_err *e) {
  bn_dims d = bn_get_dims(g, n);
  if (d.P == 0) return KILN_OK;
  double eps = ir_attr_float(n, "epsilon"), momentum = ir_attr_float(n, "momentum");
  int bufs[10] = {n->in[0], n->in[1], n->in[2], n->in[3], n->in[4]};
  int n_args = 5, arg_out[5];
  for (int o = 0; o < 5; o++) {
    arg_out[o] = -1;
    if (out_buf(n, o) >= 0) arg_out[o] = n_args, bufs[n_args++] = n->out[o];
  }
  cg_kernel k;
  KILN_TRY(cg_kernel_begin(cx, &k, "batchnorm_train", n_args, e));
  LLVMBuilderRef b = k.b;
  LLVMValueRef x = cg_arg(&k, 0);
  cg_loop lp;
  LLVMValueRef p = nn_items_begin(&k, &lp, 1, d.P);
  double count = (double)(d.batch * d.pp);
  /* sum over images b of the per-image run sums, then the squared deviations likewise */
  LLVMValueRef mean = f64c(&k, 0), var = f64c(&k, 0);
  if (count > 0) {
    LLVMValueRef acc = nn_alloca(&k, k.t->f64, "s");
    for (int pass = 0; pass < 2; pass++) {
      LLVMBuildStore(b, f64c(&k, 0), acc);
      cg_loop lb;
      LLVMValueRef bi = cg_loop_begin(&k, &lb, cg_i64(&k, 0), cg_i64(&k, d.batch), NULL, "b");
      LLVMValueRef off = nn_mulc(&k, cg_add(&k, nn_mulc(&k, bi, d.P), p), d.pp);
      LLVMValueRef s = nn_sum_f64(&k, x, off, d.pp, pass ? mean : NULL);
      LLVMBuildStore(b, LLVMBuildFAdd(b, LLVMBuildLoad2(b, k.t->f64, acc, ""), s, ""), acc);
      cg_loop_end(&k, &lb);
      LLVMValueRef r = LLVMBuildFDiv(b, LLVMBuildLoad2(b, k.t->f64, acc, ""), f64c(&k, count), "");
      if (pass)
        var = r;
      else
        mean = r;
    }
  }
  LLVMValueRef sc = ext(&k, cg_load(&k, k.t->f32, cg_arg(&k, 1), p));
  LLVMValueRef bias = ext(&k, cg_load(&k, k.t->f32, cg_arg(&k, 2), p));
  LLVMValueRef kf = LLVMBuildFDiv(b, sc, sqrt64(&k, LLVMBuildFAdd(b, var, f64c(&k, eps), "")), "");
  if (arg_out[0] >= 0 && d.batch * d.pp > 0) {
    cg_loop lb;
    LLVMValueRef bi = cg_loop_begin(&k, &lb, cg_i64(&k, 0), cg_i64(&k, d.batch), NULL, "b");
    LLVMValueRef off = nn_mulc(&k, cg_add(&k, nn_mulc(&k, bi, d.P), p), d.pp);
    emit_affine_run(&k, x, cg_arg(&k, arg_out[0]), off, cg_i64(&k, 0), cg_i64(&k, d.pp), mean, kf,
                    bias);
    cg_loop_end(&k, &lb);
  }
  LLVMValueRef in_mean = ext(&k, cg_load(&k, k.t->f32, cg_arg(&k, 3), p));
  LLVMValueRef in_var = ext(&k, cg_load(&k, k.t->f32, cg_arg(&k, 4), p));
  LLVMValueRef mom = f64c(&k, momentum), mom1 = f64c(&k, 1 - momentum);
  LLVMValueRef stats[5] = {
      NULL,
      LLVMBuildFAdd(b, LLVMBuildFMul(b, in_mean, mom, ""), LLVMBuildFMul(b, mean, mom1, ""), ""),
      LLVMBuildFAdd(b, LLVMBuildFMul(b, in_var, mom, ""), LLVMBuildFMul(b, var, mom1, ""), ""),
      mean, var};
  for (int o = 1; o < 5; o++)
    if (arg_out[o] >= 0)
      cg_store(&k, LLVMBuildFPTrunc(b, stats[o], k.t->f32, ""), cg_arg(&k, arg_out[o]), p);
  cg_loop_end(&k, &lp);
  return cg_kernel_end(cx, &k, d.P, bufs, e);
}

static kiln_code emit_BatchNormalization(kiln_emit_ctx *cx, const kiln_graph *g,
                                         const kiln_node *n, kiln_err *e) {
  return bn_training(n) ? emit_bn_training(cx, g, n, e) : emit_bn_inference(cx, g, n, e);
}

/* One tile per (n, c) plane: mean and variance of the plane, then the affine map. */
static kiln_code emit_InstanceNormalization(kiln_emit_ctx *cx, const kiln_graph *g,
                                            const kiln_node *n, kiln_err *e) {
  const kiln_value *xv = ir_in(g, n, 0);
  int64_t C = xv->shape.d[1], planes = xv->shape.d[0] * C, plane = 1;
  for (int i = 2; i < xv->shape.rank; i++) plane *= xv->shape.d[i];
  if (planes * plane == 0) return KILN_OK;
  double eps = ir_attr_float(n, "epsilon");
  cg_kernel k;
  KILN_TRY(cg_kernel_begin(cx, &k, "instancenorm", 4, e));
  LLVMBuilderRef b = k.b;
  LLVMValueRef x = cg_arg(&k, 0);
  cg_loop lp;
  LLVMValueRef pl = nn_items_begin(&k, &lp, 1, planes);
  LLVMValueRef off = nn_mulc(&k, pl, plane);
  LLVMValueRef cnt = f64c(&k, (double)plane);
  LLVMValueRef mean = LLVMBuildFDiv(b, nn_sum_f64(&k, x, off, plane, NULL), cnt, "");
  LLVMValueRef var = LLVMBuildFDiv(b, nn_sum_f64(&k, x, off, plane, mean), cnt, "");
  LLVMValueRef c = LLVMBuildURem(b, pl, cg_i64(&k, C), "");
  LLVMValueRef sc = ext(&k, cg_load(&k, k.t->f32, cg_arg(&k, 1), c));
  LLVMValueRef bias = ext(&k, cg_load(&k, k.t->f32, cg_arg(&k, 2), c));
  LLVMValueRef kf = LLVMBuildFDiv(b, sc, sqrt64(&k, LLVMBuildFAdd(b, var, f64c(&k, eps), "")), "");
  emit_affine_run(&k, x, cg_arg(&k, 3), off, cg_i64(&k, 0), cg_i64(&k, plane), mean, kf, bias);
  cg_loop_end(&k, &lp);
  return cg_kernel_end(cx, &k, planes, (int[]){n->in[0], n->in[1], n->in[2], n->out[0]}, e);
}

/* y = x / (bias + alpha/size * sum of x^2 over neighbouring channels)^beta, one tile per
 * (n, c) plane. */
static kiln_code emit_LRN(kiln_emit_ctx *cx, const kiln_graph *g, const kiln_node *n,
                          kiln_err *e) {
  const kiln_value *xv = ir_in(g, n, 0);
  int64_t C = xv->shape.d[1], planes = xv->shape.d[0] * C, plane = 1;
  for (int i = 2; i < xv->shape.rank; i++) plane *= xv->shape.d[i];
  if (planes * plane == 0) return KILN_OK;
  double alpha = ir_attr_float(n, "alpha"), beta = ir_attr_float(n, "beta");
  double bias = ir_attr_float(n, "bias");
  int64_t size = ir_attr_int(n, "size");
  int64_t before = (size - 1) / 2, after = size / 2;
  cg_kernel k;
  KILN_TRY(cg_kernel_begin(cx, &k, "lrn", 2, e));
  LLVMBuilderRef b = k.b;
  LLVMValueRef x = cg_arg(&k, 0), y = cg_arg(&k, 1);
  cg_loop lp;
  LLVMValueRef pl = nn_items_begin(&k, &lp, 1, planes);
  LLVMValueRef c = LLVMBuildURem(b, pl, cg_i64(&k, C), "");
  LLVMValueRef img = cg_mul(&k, LLVMBuildUDiv(b, pl, cg_i64(&k, C), ""), cg_i64(&k, C * plane));
  LLVMValueRef lo = cg_select(&k, LLVMBuildICmp(b, LLVMIntSLT, c, cg_i64(&k, before), ""),
                              cg_i64(&k, 0), nn_addc(&k, c, -before));
  LLVMValueRef hi = cg_min(&k, nn_addc(&k, c, after + 1), cg_i64(&k, C));
  cg_loop li, lc;
  LLVMValueRef i = cg_loop_begin(&k, &li, cg_i64(&k, 0), cg_i64(&k, plane), NULL, "i");
  LLVMValueRef sq = nn_alloca(&k, k.t->f64, "sq");
  LLVMBuildStore(b, f64c(&k, 0), sq);
  LLVMValueRef ch = cg_loop_begin(&k, &lc, lo, hi, NULL, "ch");
  LLVMValueRef at = cg_add(&k, img, cg_add(&k, nn_mulc(&k, ch, plane), i));
  LLVMValueRef v = ext(&k, cg_load(&k, k.t->f32, x, at));
  LLVMValueRef sum = LLVMBuildLoad2(b, k.t->f64, sq, "");
  LLVMBuildStore(b, LLVMBuildFAdd(b, sum, LLVMBuildFMul(b, v, v, ""), ""), sq);
  cg_loop_end(&k, &lc);
  LLVMValueRef idx = cg_add(&k, nn_mulc(&k, pl, plane), i);
  LLVMValueRef xc = ext(&k, cg_load(&k, k.t->f32, x, idx));
  LLVMValueRef scaled = LLVMBuildFMul(b, f64c(&k, alpha / (double)size),
                                      LLVMBuildLoad2(b, k.t->f64, sq, ""), "");
  LLVMValueRef base = LLVMBuildFAdd(b, f64c(&k, bias), scaled, "");
  LLVMValueRef pw = cg_call_rt(&k, "pow", k.t->f64, (LLVMValueRef[]){base, f64c(&k, beta)}, 2);
  cg_store(&k, LLVMBuildFPTrunc(b, LLVMBuildFDiv(b, xc, pw, ""), k.t->f32, ""), y, idx);
  cg_loop_end(&k, &li);
  cg_loop_end(&k, &lp);
  return cg_kernel_end(cx, &k, planes, (int[]){n->in[0], n->out[0]}, e);
}

void cg_register_norm(kiln_emit_fn *table) {
  table[KILN_OP_BatchNormalization] = emit_BatchNormalization;
  table[KILN_OP_InstanceNormalization] = emit_InstanceNormalization;
  table[KILN_OP_LRN] = emit_LRN;
}
