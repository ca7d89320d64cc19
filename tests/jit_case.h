/* jit_case.h — the differential harness of the linalg and reduce JIT tests: a one-node graph
 * (op, inputs, which are constants, attributes) compiled at 1 and 3 threads and compared with
 * the reference interpreter (floats within rtol/atol, default 1e-5/1e-6, integers exactly),
 * the two thread counts bitwise; optionally a floor on the node's largest tile count, so that
 * a case is known to split work.  Also deterministic random inputs. */
#ifndef KILN_TEST_JIT_CASE_H
#define KILN_TEST_JIT_CASE_H

#include <math.h>

#include "codegen/compile.h"
#include "one_node.h"

typedef struct jattr {
  const char *name;
  char kind; /* 'i', 'f', 's', 'v' (ints) */
  int64_t i, n;
  const int64_t *v;
  double f;
  const char *s;
} jattr;
#define AI(n, v) ((jattr){.name = (n), .kind = 'i', .i = (v)})
#define AF(n, v) ((jattr){.name = (n), .kind = 'f', .f = (v)})
#define AS(n, v) ((jattr){.name = (n), .kind = 's', .s = (v)})
#define AINTS(nm, cnt, ...)                                                                        \
  ((jattr){.name = (nm), .kind = 'v', .n = (cnt), .v = (const int64_t[]){__VA_ARGS__}})

typedef struct jcase {
  kiln_op op;
  int opset;
  kiln_tensor *in[4];
  int n_in;
  uint32_t const_mask;
  int n_out;
  jattr attrs[6];
  int n_attrs;
  double rtol, atol;
  int64_t min_tiles; /* the node's largest step must have at least this many tiles */
} jcase;

static void jc_build(const jcase *c, one_node *t) {
  on_begin(t, c->op, c->opset, c->in, c->n_in, c->const_mask, c->n_out);
  for (int a = 0; a < c->n_attrs; a++) {
    const jattr *at = &c->attrs[a];
    if (at->kind == 'i') ir_set_attr_int(t->g, t->node, at->name, at->i, &t->e);
    if (at->kind == 'f') ir_set_attr_float(t->g, t->node, at->name, at->f, &t->e);
    if (at->kind == 's') ir_set_attr_str(t->g, t->node, at->name, at->s, &t->e);
    if (at->kind == 'v') ir_set_attr_ints(t->g, t->node, at->name, at->v, at->n, &t->e);
  }
}

static bool fclose_(float got, float want, double rtol, double atol) {
  if (isnan(want)) return isnan(got);
  if (isinf(want)) return got == want;
  return fabs((double)got - want) <= atol + rtol * fabs((double)want);
}

/* Compiles the case at `threads` and runs it; outputs into got[] (NULL on failure). */
static void jc_jit(const jcase *c, int threads, kiln_tensor **got, int64_t *max_tiles) {
  one_node j;
  jc_build(c, &j);
  kiln_err *e = &j.e;
  CHECK_OK(e->code, e);
  CHECK_OK(ir_verify(j.g, e), e);
  CHECK_OK(ir_infer(j.g, NULL, e), e);
  kiln_tensor *feed[8];
  int nf = 0;
  for (int i = 0; i < j.n_in; i++)
    if (j.in[i]) feed[nf++] = j.in[i];
  kiln_program *p = NULL;
  kiln_compile_opts o = {.threads = threads, .cache_dir = ""};
  CHECK_OK(kiln_compile(j.g, &o, &p, e), e); /* takes the graph */
  if (!p) return;
  CHECK(p->n_fallback == 0);
  *max_tiles = 0;
  for (int64_t s = 0; s < p->n_steps; s++)
    if (p->steps[s].n_tiles > *max_tiles) *max_tiles = p->steps[s].n_tiles;
  CHECK_OK(kiln_program_run(p, feed, got, false, e), e);
  kiln_program_free(p);
}

static void jc_run(const jcase *c, const char *what) {
  one_node r;
  jc_build(c, &r);
  CHECK_OK(on_run(&r), &r.e);
  double rtol = c->rtol ? c->rtol : 1e-5, atol = c->atol ? c->atol : 1e-6;
  kiln_tensor *first[4] = {0};
  for (int ti = 0; ti < 2; ti++) {
    kiln_tensor *got[4] = {0};
    int64_t tiles = 0;
    jc_jit(c, ti ? 3 : 1, got, &tiles);
    if (c->min_tiles) CHECK_MSG(tiles >= c->min_tiles, "%s: %lld tiles", what, (long long)tiles);
    for (int o = 0; o < c->n_out; o++) {
      const kiln_tensor *w = r.out[o], *g = got[o];
      CHECK_MSG(w && g, "%s: output %d missing", what, o);
      if (!w || !g) continue;
      CHECK_MSG(g->dtype == w->dtype && kiln_shape_eq(&g->shape, &w->shape), "%s: output %d type",
                what, o);
      if (g->dtype != w->dtype || !kiln_shape_eq(&g->shape, &w->shape)) continue;
      int bad = 0;
      for (int64_t i = 0; i < w->numel && bad < 3; i++) {
        bool ok = w->dtype == KILN_F32
                      ? fclose_(((float *)g->data)[i], ((float *)w->data)[i], rtol, atol)
                      : kiln_tensor_get_i(g, i) == kiln_tensor_get_i(w, i);
        if (!ok) {
          bad++;
          CHECK_MSG(ok, "%s: output %d element %lld: jit %.9g, reference %.9g", what, o,
                    (long long)i, kiln_tensor_get_f(g, i), kiln_tensor_get_f(w, i));
        }
      }
      if (ti == 1 && first[o])
        CHECK_MSG(!memcmp(first[o]->data, g->data, kiln_tensor_nbytes(g)),
                  "%s: output %d differs between 1 and 3 threads", what, o);
    }
    for (int o = 0; o < 4; o++) {
      if (ti == 0)
        first[o] = got[o];
      else
        kiln_tensor_free(got[o]);
    }
  }
  for (int o = 0; o < 4; o++) kiln_tensor_free(first[o]);
  on_end(&r);
}

static void jc_free(jcase *c) {
  for (int i = 0; i < c->n_in; i++) kiln_tensor_free(c->in[i]);
}

/* Deterministic pseudo-random data in [-1, 1) (floats) or [-9, 9] (ints). */
static uint64_t rng_state = 12345;
static double rnd(void) {
  rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
  return (double)(rng_state >> 11) / (double)(1ULL << 53) * 2.0 - 1.0;
}
static kiln_tensor *rf(int rank, const int64_t *d) {
  kiln_tensor *t = tn_new(KILN_F32, rank, d);
  for (int64_t i = 0; i < t->numel; i++) ((float *)t->data)[i] = (float)rnd();
  return t;
}
static kiln_tensor *ri(kiln_dtype dt, int rank, const int64_t *d) {
  kiln_tensor *t = tn_new(dt, rank, d);
  for (int64_t i = 0; i < t->numel; i++) kiln_tensor_set_f(t, i, floor(rnd() * 9.5));
  return t;
}

#endif
