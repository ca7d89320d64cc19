/* graph_build.h — what the pass and fusion tests share: golden IR text, a small graph builder
 * with seeded random weights, and tensor comparison.  Header-only (static inline) so that
 * each test stays one program built from one file (tests/CMakeLists.txt). */
#ifndef KILN_TESTS_GRAPH_BUILD_H
#define KILN_TESTS_GRAPH_BUILD_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/graph.h"
#include "models/models.h"
#include "runtime/ref.h"
#include "test.h"

/* ---- golden text ---- */

static inline char *gt_read_text(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
  if (s && fread(s, 1, (size_t)n, f) != (size_t)n) n = 0;
  if (s) s[n] = 0;
  fclose(f);
  return s;
}

/* Compares `text` with tests/data/<dir>/<name>.txt, or rewrites that file when
 * KILN_UPDATE_GOLDEN=1.  A difference shows the first differing line of each, then the
 * new text in full. */
static inline void check_golden_in(const char *dir, const char *name, const char *text) {
  char path[1024];
  snprintf(path, sizeof path, "%s/tests/data/%s/%s.txt", KILN_SOURCE_DIR, dir, name);
  const char *upd = getenv("KILN_UPDATE_GOLDEN");
  if (upd && !strcmp(upd, "1")) {
    FILE *f = fopen(path, "wb");
    CHECK_MSG(f != NULL, "cannot write %s", path);
    if (f) {
      fputs(text, f);
      fclose(f);
      printf("updated %s\n", path);
    }
    return;
  }
  char *want = gt_read_text(path);
  CHECK_MSG(want != NULL, "golden file %s is missing (run with KILN_UPDATE_GOLDEN=1)", path);
  if (!want) return;
  if (strcmp(want, text)) {
    const char *a = want, *b = text;
    int line = 1;
    while (*a && *a == *b) {
      if (*a == '\n') line++;
      a++, b++;
    }
    while (a > want && a[-1] != '\n') a--, b--;
    const char *ea = strchr(a, '\n'), *eb = strchr(b, '\n');
    CHECK_MSG(false, "%s differs at line %d:\n  golden: %.*s\n  got:    %.*s\n--- got in full:\n%s",
              path, line, (int)(ea ? ea - a : (long)strlen(a)), a,
              (int)(eb ? eb - b : (long)strlen(b)), b, text);
  }
  free(want);
}

/* The IR as text (free() it). */
static inline char *ir_text(const kiln_graph *g) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  ir_print(g, f);
  fclose(f);
  return buf;
}

/* ---- seeded randomness (splitmix64) ---- */

static inline uint64_t rng_next(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
static inline double rng_uniform(uint64_t *s) {
  return (double)(rng_next(s) >> 11) / 9007199254740992.0;
}

/* ---- graph building: errors collect in b->e, checked once at the end ---- */

typedef struct gb {
  kiln_graph *g;
  kiln_err e;
  uint64_t rng;
} gb;

static inline void gb_begin(gb *b, int opset, uint64_t seed) {
  memset(b, 0, sizeof *b);
  b->g = ir_graph_new();
  b->g->name = kiln_strdup("t");
  b->rng = seed;
  ir_set_opset(b->g, "", opset, &b->e);
}

static inline int gb_input(gb *b, const char *name, kiln_dtype dt, int rank, const int64_t *d) {
  int id = -1;
  if (ir_add_value(b->g, name, &id, &b->e)) return -1;
  kiln_value *v = ir_val(b->g, id);
  v->dtype = dt;
  v->shape = kiln_shape_make(rank, d);
  v->typed = true;
  ir_add_input(b->g, id, &b->e);
  return id;
}

/* A float initializer, uniform in [lo, hi). */
static inline int gb_rand(gb *b, const char *name, int rank, const int64_t *d, double lo,
                          double hi) {
  kiln_tensor *t = NULL;
  kiln_shape s = kiln_shape_make(rank, d);
  if (kiln_tensor_new(KILN_F32, &s, &t, &b->e)) return -1;
  for (int64_t i = 0; i < t->numel; i++)
    ((float *)t->data)[i] = (float)(lo + (hi - lo) * rng_uniform(&b->rng));
  int id = -1;
  ir_add_const(b->g, name, t, true, &id, &b->e);
  return id;
}

/* A float constant [n] with the given values. */
static inline int gb_floats(gb *b, const char *name, int n, const float *vals) {
  kiln_tensor *t = NULL;
  if (kiln_tensor_new(KILN_F32, &(kiln_shape){.rank = 1, .d = {n}}, &t, &b->e)) return -1;
  if (n) memcpy(t->data, vals, sizeof(float) * (size_t)n);
  int id = -1;
  ir_add_const(b->g, name, t, true, &id, &b->e);
  return id;
}

/* An int64 constant of the given rank (0 or 1) and values. */
static inline int gb_ints(gb *b, const char *name, int rank, int n, const int64_t *vals) {
  kiln_tensor *t = NULL;
  kiln_shape s = kiln_shape_make(rank, (int64_t[]){n});
  if (kiln_tensor_new(KILN_I64, &s, &t, &b->e)) return -1;
  if (n) memcpy(t->data, vals, sizeof(int64_t) * (size_t)n);
  int id = -1;
  ir_add_const(b->g, name, t, true, &id, &b->e);
  return id;
}

static inline int gb_scalar(gb *b, const char *name, kiln_dtype dt, double v) {
  kiln_tensor *t = NULL;
  kiln_shape s = {.rank = 0};
  if (kiln_tensor_new(dt, &s, &t, &b->e)) return -1;
  kiln_tensor_set_f(t, 0, v);
  int id = -1;
  ir_add_const(b->g, name, t, true, &id, &b->e);
  return id;
}

/* Adds node `name` with outputs "name" (and "name_1", ... when n_out > 1); returns the
 * first output's id and the node's id in *nid (-1 on failure). */
static inline int gb_node(gb *b, kiln_op op, const char *name, const int *in, int n_in, int n_out,
                          int *nid) {
  int outs[8];
  if (nid) *nid = -1;
  for (int o = 0; o < n_out; o++) {
    char nm[128];
    if (o)
      snprintf(nm, sizeof nm, "%s_%d", name, o);
    else
      snprintf(nm, sizeof nm, "%s", name);
    if (ir_add_value(b->g, nm, &outs[o], &b->e)) return -1;
  }
  int id = -1;
  if (ir_add_node(b->g, op, name, in, n_in, outs, n_out, &id, &b->e)) return -1;
  if (nid) *nid = id;
  return outs[0];
}
#define IN(...) ((const int[]){__VA_ARGS__}), (int)(sizeof((int[]){__VA_ARGS__}) / sizeof(int))
#define IV(...) ((const int64_t[]){__VA_ARGS__})
#define NIV(...) (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), IV(__VA_ARGS__)
#define NODE(b, op, name, ...) gb_node((b), KILN_OP_##op, (name), IN(__VA_ARGS__), 1, NULL)

static inline void gb_output(gb *b, int v) { ir_add_output(b->g, v, &b->e); }

static inline void gb_ints_attr(gb *b, int nid, const char *name, int n, const int64_t *v) {
  ir_set_attr_ints(b->g, nid, name, v, n, &b->e);
}

/* BatchNormalization over x with random parameters and statistics (one per channel), named
 * <name>.<part> for the parts given (NULL: weight, bias, mean, var). */
static inline int gb_bn_named(gb *b, const char *name, int x, int64_t c,
                              const char *const parts[4], int n_out, int *nid) {
  static const char *const dflt[] = {"weight", "bias", "mean", "var"};
  if (!parts) parts = dflt;
  char nm[4][128];
  for (int i = 0; i < 4; i++) snprintf(nm[i], sizeof nm[i], "%s.%s", name, parts[i]);
  int gamma = gb_rand(b, nm[0], 1, IV(c), 0.5, 1.5), beta = gb_rand(b, nm[1], 1, IV(c), -0.5, 0.5);
  int mean = gb_rand(b, nm[2], 1, IV(c), -0.5, 0.5), var = gb_rand(b, nm[3], 1, IV(c), 0.5, 1.5);
  return gb_node(b, KILN_OP_BatchNormalization, name, IN(x, gamma, beta, mean, var), n_out, nid);
}
static inline int gb_bn(gb *b, const char *name, int x, int64_t c) {
  return gb_bn_named(b, name, x, c, NULL, 1, NULL);
}

/* ---- the study's network, small ---- */

/* Seeded random BatchNormalization parameters and statistics (the builders start from
 * identity ones, which a folded BN would leave unchanged). */
static inline void gb_randomize_bn(kiln_graph *g) {
  uint64_t s = 99;
  for (int64_t i = 0; i < g->n_nodes; i++) {
    const kiln_node *n = &g->nodes[i];
    if (n->dead || n->op != KILN_OP_BatchNormalization) continue;
    for (int k = 1; k <= 4; k++) {
      kiln_tensor *t = g->values[n->in[k]].data;
      for (int64_t j = 0; t && j < t->numel; j++) {
        double u = rng_uniform(&s);
        ((float *)t->data)[j] = (float)(k == 1 || k == 4 ? 0.5 + u : 0.6 * u - 0.3);
      }
    }
  }
}

/* ResNet-18 + C-Net + SPN at 64x64, width 8, batch 2, 8 classes, with random BN statistics;
 * variant 0 upsamples nearest, 1 bilinear, 2 bilinear with aligned corners.  NULL (and a
 * failed check) when it cannot be built. */
static inline kiln_graph *gb_small_seed_network(int variant) {
  kiln_model_opts o;
  kiln_model_defaults(&o);
  o.backbone = KILN_RESNET18;
  o.classes = 8;
  o.image_size = 64;
  o.width = 8;
  o.cnet_hidden = 16;
  o.batch = 2;
  o.seed = 3;
  o.upsample = variant ? KILN_UPSAMPLE_BILINEAR : KILN_UPSAMPLE_NEAREST;
  o.align_corners = variant == 2;
  kiln_err e = {0};
  kiln_graph *g = NULL;
  CHECK_OK(kiln_model_build(&o, &g, &e), &e);
  if (g) gb_randomize_bn(g);
  return g;
}

/* ---- running and comparing ---- */

/* Seeded inputs for every graph input: floats uniform in [-1, 1), bools, ints in [0, 4). */
/* Nearest Resize (opset 13: X, roi omitted, constant scales [1, 1, s...]) with the given
 * coordinate transformation and rounding; returns the output's id. */
static inline int gb_resize_nearest(gb *b, const char *name, int x, int nsp, const int64_t *s,
                                    const char *coord, const char *nearest) {
  char nm[128];
  float sc[5] = {1, 1, 1, 1, 1};
  for (int d = 0; d < nsp; d++) sc[2 + d] = (float)s[d];
  snprintf(nm, sizeof nm, "%s.scales", name);
  int scales = gb_floats(b, nm, nsp + 2, sc), nid;
  int y = gb_node(b, KILN_OP_Resize, name, IN(x, -1, scales), 1, &nid);
  if (nid < 0) return -1;
  ir_set_attr_str(b->g, nid, "mode", "nearest", &b->e);
  ir_set_attr_str(b->g, nid, "coordinate_transformation_mode", coord, &b->e);
  ir_set_attr_str(b->g, nid, "nearest_mode", nearest, &b->e);
  return y;
}

static inline kiln_code random_inputs(const kiln_graph *g, uint64_t seed, kiln_tensor **in,
                                      kiln_err *e) {
  for (int i = 0; i < g->n_inputs; i++) {
    const kiln_value *v = &g->values[g->inputs[i]];
    KILN_TRY(kiln_tensor_new(v->dtype, &v->shape, &in[i], e));
    for (int64_t k = 0; k < in[i]->numel; k++) {
      double u = rng_uniform(&seed);
      kiln_tensor_set_f(in[i], k,
                        v->dtype == KILN_F32    ? 2 * u - 1
                        : v->dtype == KILN_BOOL ? (double)(u < 0.5)
                                                : (double)(int)(u * 4));
    }
  }
  return KILN_OK;
}

static inline void free_tensors(kiln_tensor **t, int n) {
  for (int i = 0; i < n; i++) {
    kiln_tensor_free(t[i]);
    t[i] = NULL;
  }
}

/* |a - b| <= tol * (1 + |b|) everywhere (NaN matches NaN); prints the first miss. */
static inline bool tensors_close(const kiln_tensor *a, const kiln_tensor *b, double tol,
                                 const char *what) {
  if (!a || !b || a->dtype != b->dtype || !kiln_shape_eq(&a->shape, &b->shape)) {
    fprintf(stderr, "%s: missing, or different dtype/shape\n", what);
    return false;
  }
  for (int64_t i = 0; i < a->numel; i++) {
    double x = kiln_tensor_get_f(a, i), y = kiln_tensor_get_f(b, i);
    if (isnan(x) && isnan(y)) continue;
    if (!(fabs(x - y) <= tol * (1 + fabs(y)))) {
      fprintf(stderr, "%s: element %lld is %.9g, expected %.9g\n", what, (long long)i, x, y);
      return false;
    }
  }
  return true;
}

static inline bool tensors_same(const kiln_tensor *a, const kiln_tensor *b) {
  return a && b && a->dtype == b->dtype && kiln_shape_eq(&a->shape, &b->shape) &&
         !memcmp(a->data, b->data, kiln_tensor_nbytes(a));
}

static inline int count_op(const kiln_graph *g, kiln_op op) {
  int k = 0;
  for (int64_t i = 0; i < g->n_nodes; i++) k += !g->nodes[i].dead && g->nodes[i].op == op;
  return k;
}

static inline int live_nodes(const kiln_graph *g) {
  int k = 0;
  for (int64_t i = 0; i < g->n_nodes; i++) k += !g->nodes[i].dead;
  return k;
}

#endif
