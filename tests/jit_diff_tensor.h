/* jit_diff_tensor.h — differential checks of one-node graphs for the tensor and resize JIT tests:
 * the compiled program's outputs must equal the reference interpreter's (bitwise, or within a
 * tolerance for interpolation), and be bitwise identical at 1 and 3 threads. */
#ifndef KILN_TEST_JIT_DIFF_TENSOR_H
#define KILN_TEST_JIT_DIFF_TENSOR_H

#include "codegen/compile.h"
#include "one_node.h"

/* Cases are written as positional compound literals that leave the trailing fields zero. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

/* An attribute: kind 'i' int, 'f' float, 's' string, 'I' ints, 'F' floats, 't' tensor (cloned). */
typedef struct jd_attr {
  const char *name;
  char kind;
  int64_t i;
  double f;
  const char *s;
  const int64_t *v;
  const double *fv;
  int n;
  const kiln_tensor *t;
} jd_attr;

#define AI(nm, x) {.name = (nm), .kind = 'i', .i = (x)}
#define AF(nm, x) {.name = (nm), .kind = 'f', .f = (x)}
#define AS(nm, x) {.name = (nm), .kind = 's', .s = (x)}
#define AV(nm, ...)                                                                                \
  {.name = (nm), .kind = 'I', .v = (const int64_t[]){__VA_ARGS__},                                 \
   .n = (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t))}
#define AFV(nm, ...)                                                                               \
  {.name = (nm), .kind = 'F', .fv = (const double[]){__VA_ARGS__},                                 \
   .n = (int)(sizeof((double[]){__VA_ARGS__}) / sizeof(double))}
#define AT(nm, x) {.name = (nm), .kind = 't', .t = (x)}

typedef struct jd_case {
  kiln_op op;
  int opset;
  kiln_tensor *in[8]; /* NULL: omitted */
  int n_in;
  uint32_t const_mask; /* bit i: input i is a constant (initializer) */
  int n_out;
  jd_attr attrs[8];
  double rtol, atol;   /* 0, 0: bitwise equal to the reference */
  bool unfold;         /* drop constant data inference put on the outputs (Constant, Shape), so
                          that the compiler emits a kernel for them */
} jd_case;

static uint64_t jd_rng_ = 0x9e3779b97f4a7c15ull;
static uint64_t jd_next(void) {
  jd_rng_ = jd_rng_ * 6364136223846793005ull + 1442695040888963407ull;
  return jd_rng_ >> 33;
}

/* A tensor of dtype dt with deterministic pseudo-random contents. */
static kiln_tensor *jd_rand(kiln_dtype dt, int rank, const int64_t *d) {
  kiln_tensor *t = tn_new(dt, rank, d);
  for (int64_t i = 0; i < t->numel; i++) {
    uint64_t r = jd_next();
    switch (dt) {
    case KILN_F32: ((float *)t->data)[i] = (float)((int64_t)(r % 4001) - 2000) / 997.0f; break;
    case KILN_I32: ((int32_t *)t->data)[i] = (int32_t)(r % 2001) - 1000; break;
    case KILN_I64: ((int64_t *)t->data)[i] = (int64_t)(r % 200001) - 100000; break;
    default: ((uint8_t *)t->data)[i] = (uint8_t)(r & 1); break;
    }
  }
  return t;
}

/* Builds the case's graph and infers it (no constant folding). */
static kiln_code jd_build(const jd_case *c, one_node *t) {
  on_begin(t, c->op, c->opset, c->in, c->n_in, c->const_mask, c->n_out);
  kiln_err *e = &t->e;
  for (int a = 0; a < 8 && c->attrs[a].name; a++) {
    const jd_attr *at = &c->attrs[a];
    switch (at->kind) {
    case 'i': ir_set_attr_int(t->g, t->node, at->name, at->i, e); break;
    case 'f': ir_set_attr_float(t->g, t->node, at->name, at->f, e); break;
    case 's': ir_set_attr_str(t->g, t->node, at->name, at->s, e); break;
    case 'I': ir_set_attr_ints(t->g, t->node, at->name, at->v, at->n, e); break;
    case 'F': ir_set_attr_floats(t->g, t->node, at->name, at->fv, at->n, e); break;
    case 't': {
      kiln_tensor *cl = NULL;
      kiln_tensor_clone(at->t, &cl, e);
      ir_set_attr_tensor(t->g, t->node, at->name, cl, e);
      break;
    }
    }
  }
  if (e->code) return e->code;
  KILN_TRY(ir_verify(t->g, e));
  return ir_infer(t->g, NULL, e);
}

/* Compiles and runs the case at `threads`; outputs go to got[]. */
static kiln_code jd_jit(const jd_case *c, int threads, kiln_tensor **got, kiln_err *e) {
  one_node t;
  kiln_code rc = jd_build(c, &t);
  if (rc) {
    *e = t.e;
    ir_graph_free(t.g);
    return rc;
  }
  if (c->unfold)
    for (int o = 0; o < t.g->n_outputs; o++) {
      kiln_value *v = ir_val(t.g, t.g->outputs[o]);
      kiln_tensor_free(v->data);
      v->data = NULL;
    }
  kiln_tensor *feed[8];
  int nf = 0;
  for (int i = 0; i < t.n_in; i++)
    if (t.in[i]) feed[nf++] = t.in[i];
  kiln_program *p = NULL;
  kiln_compile_opts o = {.threads = threads, .cache_dir = ""};
  KILN_TRY(kiln_compile(t.g, &o, &p, e)); /* takes the graph */
  if (p->n_fallback) {
    int nfb = p->n_fallback;
    kiln_program_free(p);
    return kiln_errf(e, KILN_ERR_INTERNAL, "%d reference fallbacks", nfb);
  }
  rc = kiln_program_run(p, feed, got, false, e);
  kiln_program_free(p);
  return rc;
}

static bool jd_close(const kiln_tensor *a, const kiln_tensor *b, double rtol, double atol,
                     const char *what) {
  if (!a || !b || a->dtype != b->dtype || !kiln_shape_eq(&a->shape, &b->shape)) {
    fprintf(stderr, "%s: outputs differ in dtype or shape\n", what);
    return false;
  }
  if (rtol == 0 && atol == 0) {
    if (memcmp(a->data, b->data, kiln_tensor_nbytes(a)) == 0) return true;
    for (int64_t i = 0; i < a->numel; i++)
      if (kiln_tensor_get_f(a, i) != kiln_tensor_get_f(b, i)) {
        fprintf(stderr, "%s: element %lld: jit %.9g, ref %.9g\n", what, (long long)i,
                kiln_tensor_get_f(a, i), kiln_tensor_get_f(b, i));
        return false;
      }
    fprintf(stderr, "%s: outputs differ in bits\n", what);
    return false;
  }
  for (int64_t i = 0; i < a->numel; i++) {
    double x = kiln_tensor_get_f(a, i), y = kiln_tensor_get_f(b, i);
    if (!(fabs(x - y) <= atol + rtol * fabs(y)) && !(isnan(x) && isnan(y))) {
      fprintf(stderr, "%s: element %lld: jit %.9g, ref %.9g\n", what, (long long)i, x, y);
      return false;
    }
  }
  return true;
}

/* Runs the case on the reference and on the JIT at 1 and 3 threads and compares. */
static void jd_run(const jd_case *c, const char *what) {
  one_node t;
  kiln_tensor *want[4] = {0}, *got1[4] = {0}, *got3[4] = {0};
  kiln_err e1 = {0}, e3 = {0};
  kiln_code rc = jd_build(c, &t);
  if (!rc) {
    kiln_tensor *feed[8];
    int nf = 0;
    for (int i = 0; i < t.n_in; i++)
      if (t.in[i]) feed[nf++] = t.in[i];
    kiln_ref_ctx ctx = {.g = t.g};
    rc = kiln_ref_run(t.g, &ctx, feed, want, &t.e);
  }
  CHECK_MSG(rc == KILN_OK, "%s: reference: %s", what, t.e.msg);
  ir_graph_free(t.g);
  kiln_code r1 = jd_jit(c, 1, got1, &e1), r3 = jd_jit(c, 3, got3, &e3);
  CHECK_MSG(r1 == KILN_OK, "%s: jit (1 thread): %s", what, e1.msg);
  CHECK_MSG(r3 == KILN_OK, "%s: jit (3 threads): %s", what, e3.msg);
  if (!rc && !r1 && !r3)
    for (int o = 0; o < c->n_out; o++) {
      char w[200];
      snprintf(w, sizeof w, "%s: output %d", what, o);
      CHECK(jd_close(got1[o], want[o], c->rtol, c->atol, w));
      snprintf(w, sizeof w, "%s: output %d, 1 vs 3 threads", what, o);
      CHECK(jd_close(got1[o], got3[o], 0, 0, w));
    }
  for (int o = 0; o < 4; o++) {
    kiln_tensor_free(want[o]);
    kiln_tensor_free(got1[o]);
    kiln_tensor_free(got3[o]);
  }
}

/* Frees the case's input tensors. */
static void jd_free(jd_case *c) {
  for (int i = 0; i < c->n_in; i++) {
    kiln_tensor_free(c->in[i]);
    c->in[i] = NULL;
  }
}

#endif
