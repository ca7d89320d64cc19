/* test_frontend.c — the ONNX frontend: loading, saving and round trips of
 * models (suite models and hand-built ones), TensorProto and .npy files, the
 * file helpers, and bad input of every kind (each must fail with a message
 * naming the tensor or node, without crashing or leaking). */
#define _GNU_SOURCE
#include <dirent.h>
#include <ftw.h>
#include <glob.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "frontend/onnx.h"
#include "onnx/onnx.pb-c.h"
#include "test.h"

#define SUITE "/usr/share/libonnx-testdata/data"

static char tmpdir[64];

static const char *tmp_path(const char *name) {
  static char buf[8][256];
  static int k;
  k = (k + 1) % 8;
  snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
  return buf[k];
}

static bool has(const kiln_err *e, const char *s) { return strstr(e->msg, s) != NULL; }

static uint8_t *slurp(const char *path, size_t *len) {
  kiln_err e = {0};
  uint8_t *buf = NULL;
  if (kiln_read_file(path, 1 << 30, &buf, len, &e)) return NULL;
  return buf;
}

static void write_bytes(const char *path, const void *p, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f) return;
  fwrite(p, 1, n, f);
  fclose(f);
}

/* ---- a tiny ModelProto builder for hand-made (and broken) models ---- */

typedef struct mb {
  Onnx__ModelProto m;
  Onnx__GraphProto g;
  void *blocks[2048];
  int nb;
  Onnx__OperatorSetIdProto *opsets[8];
  Onnx__NodeProto *nodes[64];
  Onnx__TensorProto *inits[64];
  Onnx__ValueInfoProto *ins[32], *outs[32];
} mb;

static void *mb_new(mb *b, size_t n) {
  void *p = calloc(1, n ? n : 1);
  b->blocks[b->nb++] = p;
  return p;
}

static char *mb_str(mb *b, const char *s) {
  char *p = mb_new(b, strlen(s) + 1);
  strcpy(p, s);
  return p;
}

static void mb_opset(mb *b, const char *dom, int64_t v) {
  Onnx__OperatorSetIdProto *o = mb_new(b, sizeof *o);
  onnx__operator_set_id_proto__init(o);
  o->domain = mb_str(b, dom);
  o->has_version = 1;
  o->version = v;
  b->opsets[b->m.n_opset_import++] = o;
}

static mb *mb_begin(int64_t opset) {
  mb *b = calloc(1, sizeof *b);
  onnx__model_proto__init(&b->m);
  onnx__graph_proto__init(&b->g);
  b->m.has_ir_version = 1;
  b->m.ir_version = 8;
  b->m.producer_name = "test_frontend";
  b->m.graph = &b->g;
  b->m.opset_import = b->opsets;
  b->g.name = "g";
  b->g.node = b->nodes;
  b->g.initializer = b->inits;
  b->g.input = b->ins;
  b->g.output = b->outs;
  if (opset) mb_opset(b, "", opset);
  return b;
}

static void mb_end(mb *b) {
  for (int i = 0; i < b->nb; i++) free(b->blocks[i]);
  free(b);
}

/* A tensor type; params[d] non-NULL makes dim d symbolic; dims[d] < 0 without a
 * param leaves it unset; rank < 0 leaves the shape out. */
static Onnx__ValueInfoProto *mb_vi(mb *b, const char *name, int elem, int rank, const int64_t *dims,
                                   const char *const *params) {
  Onnx__ValueInfoProto *vi = mb_new(b, sizeof *vi);
  onnx__value_info_proto__init(vi);
  vi->name = mb_str(b, name);
  Onnx__TypeProto *tp = mb_new(b, sizeof *tp);
  onnx__type_proto__init(tp);
  Onnx__TypeProto__Tensor *tt = mb_new(b, sizeof *tt);
  onnx__type_proto__tensor__init(tt);
  tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
  tp->tensor_type = tt;
  tt->has_elem_type = 1;
  tt->elem_type = elem;
  vi->type = tp;
  if (rank < 0) return vi;
  Onnx__TensorShapeProto *sh = mb_new(b, sizeof *sh);
  onnx__tensor_shape_proto__init(sh);
  sh->dim = mb_new(b, sizeof(void *) * 8);
  for (int d = 0; d < rank; d++) {
    Onnx__TensorShapeProto__Dimension *dm = mb_new(b, sizeof *dm);
    onnx__tensor_shape_proto__dimension__init(dm);
    if (params && params[d]) {
      dm->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
      dm->dim_param = mb_str(b, params[d]);
    } else if (dims[d] >= 0) {
      dm->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
      dm->dim_value = dims[d];
    }
    sh->dim[sh->n_dim++] = dm;
  }
  tt->shape = sh;
  return vi;
}

static Onnx__ValueInfoProto *mb_input(mb *b, const char *name, int elem, int rank,
                                      const int64_t *dims, const char *const *params) {
  return b->ins[b->g.n_input++] = mb_vi(b, name, elem, rank, dims, params);
}

static Onnx__ValueInfoProto *mb_output(mb *b, const char *name, int elem) {
  return b->outs[b->g.n_output++] = mb_vi(b, name, elem, -1, NULL, NULL);
}

static Onnx__TensorProto *mb_tensor(mb *b, const char *name, int dt, int rank,
                                    const int64_t *dims) {
  Onnx__TensorProto *t = mb_new(b, sizeof *t);
  onnx__tensor_proto__init(t);
  if (name) t->name = mb_str(b, name);
  t->has_data_type = 1;
  t->data_type = dt;
  t->n_dims = (size_t)rank;
  t->dims = mb_new(b, sizeof(int64_t) * 16);
  if (rank) memcpy(t->dims, dims, sizeof(int64_t) * (size_t)rank);
  return t;
}

static void mb_raw(mb *b, Onnx__TensorProto *t, const void *data, size_t len) {
  t->has_raw_data = 1;
  t->raw_data.len = len;
  t->raw_data.data = mb_new(b, len);
  memcpy(t->raw_data.data, data, len);
}

static Onnx__TensorProto *mb_init(mb *b, Onnx__TensorProto *t) {
  return b->inits[b->g.n_initializer++] = t;
}

/* ins/outs are comma-separated names; an empty entry is an omitted optional. */
static void mb_names(mb *b, const char *list, char ***arr, size_t *n) {
  *arr = mb_new(b, sizeof(char *) * 16);
  *n = 0;
  if (!list) return;
  const char *p = list;
  for (;;) {
    const char *q = strchr(p, ',');
    size_t len = q ? (size_t)(q - p) : strlen(p);
    char *s = mb_new(b, len + 1);
    memcpy(s, p, len);
    (*arr)[(*n)++] = s;
    if (!q) break;
    p = q + 1;
  }
}

static Onnx__NodeProto *mb_node(mb *b, const char *op, const char *name, const char *ins,
                                const char *outs) {
  Onnx__NodeProto *n = mb_new(b, sizeof *n);
  onnx__node_proto__init(n);
  n->op_type = mb_str(b, op);
  if (name) n->name = mb_str(b, name);
  mb_names(b, ins, &n->input, &n->n_input);
  mb_names(b, outs, &n->output, &n->n_output);
  n->attribute = mb_new(b, sizeof(void *) * 16);
  return b->nodes[b->g.n_node++] = n;
}

static Onnx__AttributeProto *mb_attr(mb *b, Onnx__NodeProto *n, const char *name, int type) {
  Onnx__AttributeProto *a = mb_new(b, sizeof *a);
  onnx__attribute_proto__init(a);
  a->name = mb_str(b, name);
  if (type) {
    a->has_type = 1;
    a->type = type;
  }
  return n->attribute[n->n_attribute++] = a;
}

static uint8_t *mb_pack(mb *b, size_t *len) {
  *len = protobuf_c_message_get_packed_size(&b->m.base);
  uint8_t *p = malloc(*len ? *len : 1);
  protobuf_c_message_pack(&b->m.base, p);
  return p;
}

/* Packs and loads; returns the code, leaves the graph in *g (or NULL). */
static kiln_code mb_load(mb *b, kiln_graph **g, kiln_err *e) {
  size_t len;
  uint8_t *buf = mb_pack(b, &len);
  kiln_code rc = kiln_onnx_load_buffer(buf, len, tmpdir, "test.onnx", g, e);
  free(buf);
  return rc;
}

/* x[N,3] + c -> s, Relu -> y: the smallest useful valid model. */
static mb *mb_small(void) {
  mb *b = mb_begin(13);
  mb_input(b, "x", 1, 2, (int64_t[]){-1, 3}, (const char *[]){"N", NULL});
  float c[3] = {1, -2, 3};
  mb_raw(b, mb_init(b, mb_tensor(b, "c", 1, 1, (int64_t[]){3})), c, sizeof c);
  mb_node(b, "Add", "add", "x,c", "s");
  mb_node(b, "Relu", "relu", "s", "y");
  mb_output(b, "y", 1);
  return b;
}

/* ---- graph comparison for round trips ---- */

static bool str_same(const char *a, const char *b) { return strcmp(a ? a : "", b ? b : "") == 0; }

static bool tensor_same(const kiln_tensor *a, const kiln_tensor *b) {
  if (!a || !b) return a == b;
  return a->dtype == b->dtype && kiln_shape_eq(&a->shape, &b->shape) &&
         memcmp(a->data, b->data, kiln_tensor_nbytes(a)) == 0;
}

static bool attr_same(const kiln_attr *a, const kiln_attr *b) {
  if (!str_same(a->name, b->name) || a->kind != b->kind) return false;
  switch (a->kind) {
  case KILN_ATTR_FLOAT: return memcmp(&a->f, &b->f, sizeof a->f) == 0;
  case KILN_ATTR_INT: return a->i == b->i;
  case KILN_ATTR_STRING: return a->s_len == b->s_len && memcmp(a->s, b->s, a->s_len) == 0;
  case KILN_ATTR_TENSOR: return tensor_same(a->t, b->t);
  case KILN_ATTR_FLOATS:
    return a->n == b->n && (!a->n || memcmp(a->floats, b->floats, sizeof(double) * a->n) == 0);
  case KILN_ATTR_INTS:
    return a->n == b->n && (!a->n || memcmp(a->ints, b->ints, sizeof(int64_t) * a->n) == 0);
  case KILN_ATTR_STRINGS:
    if (a->n != b->n) return false;
    for (int64_t i = 0; i < a->n; i++)
      if (!str_same(a->strings[i], b->strings[i])) return false;
    return true;
  default:
    return a->opaque_len == b->opaque_len && memcmp(a->opaque, b->opaque, a->opaque_len) == 0;
  }
}

static bool value_decl_same(const kiln_value *a, const kiln_value *b) {
  if (!str_same(a->name, b->name) || a->dtype != b->dtype || a->typed != b->typed) return false;
  if (a->dtype && !kiln_shape_eq(&a->shape, &b->shape)) return false;
  for (int d = 0; d < KILN_MAX_RANK; d++)
    if (!str_same(a->sym[d], b->sym[d])) return false;
  return str_same(a->doc, b->doc);
}

/* Returns NULL when b is a (saved and reloaded) copy of a, else what differs.
 * Saving fills what ONNX requires and a may lack: a graph name, the IR
 * version, the producer, the default opset import. */
static const char *graph_diff(const kiln_graph *a, const kiln_graph *b) {
  static char why[512];
  if (!str_same(a->name, b->name) && !(str_same(a->name, "") && str_same(b->name, "kiln_graph")))
    return "graph name";
  if (a->ir_version != b->ir_version && !(a->ir_version == 0 && b->ir_version == 8))
    return "ir_version";
  if ((!str_same(a->producer_name, b->producer_name) &&
       !(str_same(a->producer_name, "") && str_same(b->producer_name, "kiln"))) ||
      !str_same(a->producer_version, b->producer_version))
    return "producer";
  if (!str_same(a->doc, b->doc)) return "doc";
  if (a->n_opsets != b->n_opsets && !(a->n_opsets + 1 == b->n_opsets && !ir_get_opset(a, "")))
    return "opset count";
  for (int i = 0; i < a->n_opsets; i++)
    if (ir_get_opset(b, a->opsets[i].domain) != a->opsets[i].version) return "opset version";
  if (a->n_inputs != b->n_inputs || a->n_outputs != b->n_outputs) return "input/output count";
  for (int i = 0; i < a->n_inputs; i++)
    if (!value_decl_same(&a->values[a->inputs[i]], &b->values[b->inputs[i]])) {
      snprintf(why, sizeof why, "graph input %d ('%s')", i, a->values[a->inputs[i]].name);
      return why;
    }
  for (int i = 0; i < a->n_outputs; i++)
    if (!value_decl_same(&a->values[a->outputs[i]], &b->values[b->outputs[i]])) {
      snprintf(why, sizeof why, "graph output %d ('%s')", i, a->values[a->outputs[i]].name);
      return why;
    }
  if (a->n_nodes != b->n_nodes) return "node count";
  if (a->n_values != b->n_values) return "value count";
  for (int64_t i = 0; i < a->n_nodes; i++) {
    const kiln_node *x = &a->nodes[i], *y = &b->nodes[i];
    snprintf(why, sizeof why, "node %lld ('%s')", (long long)i, x->name);
    if (x->op != y->op || !str_same(x->name, y->name) || !str_same(x->domain, y->domain) ||
        x->opset != y->opset || !str_same(x->doc, y->doc) || x->n_in != y->n_in ||
        x->n_out != y->n_out || x->n_attrs != y->n_attrs)
      return why;
    for (int k = 0; k < x->n_in; k++)
      if ((x->in[k] < 0) != (y->in[k] < 0) ||
          (x->in[k] >= 0 && !str_same(a->values[x->in[k]].name, b->values[y->in[k]].name)))
        return why;
    for (int k = 0; k < x->n_out; k++)
      if ((x->out[k] < 0) != (y->out[k] < 0) ||
          (x->out[k] >= 0 && !str_same(a->values[x->out[k]].name, b->values[y->out[k]].name)))
        return why;
    for (int k = 0; k < x->n_attrs; k++)
      if (!attr_same(&x->attrs[k], &y->attrs[k])) {
        snprintf(why, sizeof why, "node '%s' attribute '%s'", x->name, x->attrs[k].name);
        return why;
      }
  }
  for (int64_t v = 0; v < a->n_values; v++) {
    const kiln_value *x = &a->values[v];
    if (!x->data || x->producer >= 0) continue;
    int w = ir_find_value(b, x->name);
    snprintf(why, sizeof why, "constant '%s'", x->name);
    if (w < 0) return why;
    const kiln_value *y = &b->values[w];
    if (y->producer >= 0 || x->is_initializer != y->is_initializer ||
        x->listed_as_input != y->listed_as_input || !tensor_same(x->data, y->data) ||
        !str_same(x->doc, y->doc))
      return why;
  }
  return NULL;
}

/* load -> save (buffer) -> load; returns the difference or NULL. */
static const char *roundtrip(const kiln_graph *g, kiln_err *e) {
  uint8_t *buf;
  size_t len;
  if (kiln_onnx_save_buffer(g, &buf, &len, e)) return e->msg;
  kiln_graph *g2;
  kiln_code rc = kiln_onnx_load_buffer(buf, len, NULL, "saved", &g2, e);
  kiln_free(buf);
  if (rc) return e->msg;
  const char *d = graph_diff(g, g2);
  ir_graph_free(g2);
  return d;
}

/* ---- loading suite models ---- */

static void test_load_conv_model(void) {
  kiln_err e = {0};
  kiln_graph *g = NULL;
  CHECK_OK(kiln_onnx_load(SUITE "/node/test_conv_with_strides_padding/model.onnx", &g, &e), &e);
  if (!g) return;
  CHECK(g->n_inputs == 2 && g->n_outputs == 1 && g->n_nodes == 1);
  CHECK(strcmp(g->nodes[0].def->name, "Conv") == 0 && g->nodes[0].opset == ir_get_opset(g, ""));
  const kiln_value *x = &g->values[g->inputs[0]];
  CHECK(strcmp(x->name, "x") == 0 && x->typed && x->dtype == KILN_F32);
  CHECK(x->shape.rank == 4 && x->shape.d[2] == 7 && x->shape.d[3] == 5);
  const int64_t *strides;
  CHECK(ir_attr_ints(&g->nodes[0], "strides", &strides) == 2 && strides[0] == 2);
  CHECK(strstr(g->source_path, "test_conv_with_strides_padding") != NULL);
  const char *d = roundtrip(g, &e);
  CHECK_MSG(d == NULL, "round trip differs: %s", d);

  /* through a file too, and the saved model loads back the same */
  CHECK_OK(kiln_onnx_save(g, tmp_path("conv.onnx"), &e), &e);
  kiln_graph *g2 = NULL;
  CHECK_OK(kiln_onnx_load(tmp_path("conv.onnx"), &g2, &e), &e);
  if (g2) {
    d = graph_diff(g, g2);
    CHECK_MSG(d == NULL, "file round trip differs: %s", d);
  }
  ir_graph_free(g2);
  ir_graph_free(g);
}

static void test_old_style_initializers(void) {
  /* pytorch-converted models list their weights as graph inputs too */
  kiln_err e = {0};
  kiln_graph *g = NULL;
  CHECK_OK(kiln_onnx_load(SUITE "/pytorch-converted/test_ConvTranspose2d/model.onnx", &g, &e), &e);
  if (!g) return;
  int listed = 0;
  for (int64_t v = 0; v < g->n_values; v++)
    if (g->values[v].listed_as_input) {
      listed++;
      CHECK(g->values[v].data && g->values[v].is_initializer && !g->values[v].is_input);
    }
  CHECK(listed == 2);
  CHECK(g->n_inputs == 1);
  const char *d = roundtrip(g, &e);
  CHECK_MSG(d == NULL, "round trip differs: %s", d);
  ir_graph_free(g);
}

/* Every suite model loads or fails with a message; every one that loads
 * round-trips through save. */
static void test_all_suite_models(void) {
  glob_t gl;
  if (glob(SUITE "/*/*/model.onnx", 0, NULL, &gl) != 0) {
    printf("suite not installed; skipping\n");
    return;
  }
  int ok = 0, failed = 0, bad_rt = 0;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (size_t i = 0; i < gl.gl_pathc; i++) {
    kiln_err e = {0};
    kiln_graph *g = NULL;
    kiln_code rc = kiln_onnx_load(gl.gl_pathv[i], &g, &e);
    if (rc) {
      failed++;
      CHECK_MSG(e.msg[0] && rc != KILN_ERR_NOMEM && rc != KILN_ERR_INTERNAL && rc != KILN_ERR_IO,
                "%s: code %d '%s'", gl.gl_pathv[i], rc, e.msg);
      CHECK(g == NULL);
      continue;
    }
    ok++;
    const char *d = roundtrip(g, &e);
    if (d) {
      bad_rt++;
      CHECK_MSG(d == NULL, "%s: round trip differs: %s", gl.gl_pathv[i], d);
    }
    ir_graph_free(g);
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
  printf("suite: %zu models, %d load (%d round-trip differences), %d refused, %.2f s\n",
         gl.gl_pathc, ok, bad_rt, failed, secs);
  CHECK(gl.gl_pathc == 1072);
  CHECK(ok > 0);
  CHECK(secs < 20);
  globfree(&gl);
}

/* ---- a hand-built model with every attribute kind and data encoding ---- */

static mb *mb_rich(void) {
  mb *b = mb_begin(17);
  b->m.doc_string = "model doc";
  b->m.producer_version = "1.2";
  mb_input(b, "x", 1, 2, (int64_t[]){-1, 3}, (const char *[]){"batch", NULL})->doc_string =
      "the input";
  /* typed-field initializers of every dtype, one raw, one listed as an input */
  Onnx__TensorProto *f = mb_init(b, mb_tensor(b, "wf", 1, 1, (int64_t[]){3}));
  f->n_float_data = 3;
  f->float_data = mb_new(b, 12);
  f->float_data[0] = 0.5f, f->float_data[1] = -1.25f, f->float_data[2] = 3e-7f;
  f->doc_string = "weights";
  Onnx__TensorProto *i32 = mb_init(b, mb_tensor(b, "wi32", 6, 2, (int64_t[]){1, 2}));
  i32->n_int32_data = 2;
  i32->int32_data = mb_new(b, 8);
  i32->int32_data[0] = -7, i32->int32_data[1] = 1 << 30;
  Onnx__TensorProto *i64 = mb_init(b, mb_tensor(b, "wi64", 7, 0, NULL)); /* a scalar */
  i64->n_int64_data = 1;
  i64->int64_data = mb_new(b, 8);
  i64->int64_data[0] = INT64_MIN;
  Onnx__TensorProto *bl = mb_init(b, mb_tensor(b, "wb", 9, 1, (int64_t[]){3}));
  bl->n_int32_data = 3;
  bl->int32_data = mb_new(b, 12);
  bl->int32_data[0] = 1, bl->int32_data[1] = 0, bl->int32_data[2] = 5;
  int64_t raw[2] = {42, -1};
  mb_raw(b, mb_init(b, mb_tensor(b, "wraw", 7, 1, (int64_t[]){2})), raw, sizeof raw);
  Onnx__TensorProto *empty = mb_init(b, mb_tensor(b, "wempty", 1, 2, (int64_t[]){0, 4}));
  (void)empty;
  mb_input(b, "wraw", 7, 1, (int64_t[]){2}, NULL);

  Onnx__NodeProto *add = mb_node(b, "Add", "add", "x,c", "s");
  add->doc_string = "adds";
  mb_node(b, "Relu", "", "s", "y"); /* unnamed */
  /* Constants carry the attribute kinds */
  Onnx__NodeProto *c = mb_node(b, "Constant", "c_tensor", NULL, "c");
  Onnx__AttributeProto *a = mb_attr(b, c, "value", 4);
  float cv[3] = {1, 2, 3};
  a->t = mb_tensor(b, "cval", 1, 1, (int64_t[]){3});
  mb_raw(b, a->t, cv, sizeof cv);
  a = mb_attr(b, mb_node(b, "Constant", "c_float", NULL, "k1"), "value_float", 1);
  a->has_f = 1, a->f = 0.1f;
  a = mb_attr(b, mb_node(b, "Constant", "c_int", NULL, "k2"), "value_int", 0); /* no type: old style */
  a->has_i = 1, a->i = -5;
  a = mb_attr(b, mb_node(b, "Constant", "c_floats", NULL, "k3"), "value_floats", 6);
  a->n_floats = 2, a->floats = mb_new(b, 8), a->floats[0] = 1.5f, a->floats[1] = -0.0f;
  a = mb_attr(b, mb_node(b, "Constant", "c_ints", NULL, "k4"), "value_ints", 7);
  a->n_ints = 3, a->ints = mb_new(b, 24), a->ints[0] = 1, a->ints[2] = INT64_MAX;
  a = mb_attr(b, mb_node(b, "Constant", "c_str", NULL, "k5"), "value_string", 3);
  a->has_s = 1, a->s.data = (uint8_t *)mb_str(b, "hello"), a->s.len = 5;
  a = mb_attr(b, mb_node(b, "Constant", "c_strs", NULL, "k6"), "value_strings", 8);
  a->n_strings = 2, a->strings = mb_new(b, sizeof(ProtobufCBinaryData) * 2);
  a->strings[0].data = (uint8_t *)mb_str(b, "a"), a->strings[0].len = 1;
  a->strings[1].data = (uint8_t *)mb_str(b, ""), a->strings[1].len = 0;
  /* an opaque kind (sparse tensor), kept serialized */
  a = mb_attr(b, mb_node(b, "Constant", "c_sparse", NULL, "k7"), "sparse_value", 11);
  Onnx__SparseTensorProto *sp = mb_new(b, sizeof *sp);
  onnx__sparse_tensor_proto__init(sp);
  sp->values = mb_tensor(b, "sv", 1, 1, (int64_t[]){1});
  mb_raw(b, sp->values, cv, 4);
  sp->indices = mb_tensor(b, "si", 7, 1, (int64_t[]){1});
  mb_raw(b, sp->indices, raw, 8);
  sp->n_dims = 1, sp->dims = mb_new(b, 8), sp->dims[0] = 10;
  a->sparse_tensor = sp;
  mb_node(b, "Identity", "ident", "y", "z");
  mb_output(b, "z", 1);
  mb_output(b, "wi64", 7); /* an initializer may be a graph output */
  return b;
}

static void test_rich_model(void) {
  kiln_err e = {0};
  mb *b = mb_rich();
  kiln_graph *g = NULL;
  CHECK_OK(mb_load(b, &g, &e), &e);
  mb_end(b);
  if (!g) return;
  CHECK(str_same(g->doc, "model doc") && str_same(g->producer_name, "test_frontend") &&
        str_same(g->producer_version, "1.2") && str_same(g->name, "g") && g->ir_version == 8);
  CHECK(ir_get_opset(g, "") == 17);
  CHECK(g->n_inputs == 1);
  const kiln_value *x = &g->values[g->inputs[0]];
  CHECK(x->shape.d[0] == -1 && str_same(x->sym[0], "batch") && x->sym[1] == NULL &&
        x->shape.d[1] == 3 && str_same(x->doc, "the input"));
  const kiln_value *v = &g->values[ir_find_value(g, "wf")];
  CHECK(v->data && ((float *)v->data->data)[1] == -1.25f && str_same(v->doc, "weights"));
  v = &g->values[ir_find_value(g, "wi32")];
  CHECK(v->data->dtype == KILN_I32 && ((int32_t *)v->data->data)[1] == 1 << 30);
  v = &g->values[ir_find_value(g, "wi64")];
  CHECK(v->data->shape.rank == 0 && ((int64_t *)v->data->data)[0] == INT64_MIN && v->is_output);
  v = &g->values[ir_find_value(g, "wb")];
  CHECK(v->data->dtype == KILN_BOOL && ((uint8_t *)v->data->data)[2] == 1);
  v = &g->values[ir_find_value(g, "wraw")];
  CHECK(v->listed_as_input && !v->is_input && ((int64_t *)v->data->data)[1] == -1);
  v = &g->values[ir_find_value(g, "wempty")];
  CHECK(v->data && v->data->numel == 0);
  /* Constants come before their consumers after toposort */
  int add = -1, cn = -1;
  for (int64_t i = 0; i < g->n_nodes; i++) {
    if (str_same(g->nodes[i].name, "add")) add = (int)i;
    if (str_same(g->nodes[i].name, "c_tensor")) cn = (int)i;
  }
  CHECK(add >= 0 && cn >= 0 && cn < add && str_same(g->nodes[add].doc, "adds"));
  for (int64_t i = 0; i < g->n_nodes; i++) {
    const kiln_node *n = &g->nodes[i];
    if (strcmp(n->def->name, "Constant") != 0) continue;
    const kiln_attr *at = &n->attrs[0];
    if (str_same(n->name, "c_int")) CHECK(at->kind == KILN_ATTR_INT && at->i == -5);
    if (str_same(n->name, "c_float")) CHECK(at->kind == KILN_ATTR_FLOAT && at->f == 0.1f);
    if (str_same(n->name, "c_floats")) CHECK(at->n == 2 && at->floats[0] == 1.5);
    if (str_same(n->name, "c_ints")) CHECK(at->n == 3 && at->ints[2] == INT64_MAX);
    if (str_same(n->name, "c_str")) CHECK(at->s_len == 5 && strcmp(at->s, "hello") == 0);
    if (str_same(n->name, "c_strs")) CHECK(at->n == 2 && strcmp(at->strings[0], "a") == 0);
    if (str_same(n->name, "c_sparse"))
      CHECK(at->kind == KILN_ATTR_SPARSE_TENSOR && at->opaque && at->opaque_len > 10);
    if (str_same(n->name, "c_tensor")) CHECK(at->t && ((float *)at->t->data)[2] == 3);
  }
  const char *d = roundtrip(g, &e);
  CHECK_MSG(d == NULL, "round trip differs: %s", d);

  /* after binding and inference the saved model carries value_info, keeps
   * the symbolic input, and still loads back */
  if (g->n_inputs == 1) {
    CHECK_OK(ir_bind_dim(g, "batch", 2, &e), &e);
    for (int64_t i = 0; i < g->n_nodes; i++) /* the sparse Constant cannot be inferred */
      if (str_same(g->nodes[i].name, "c_sparse") || str_same(g->nodes[i].name, "c_str") ||
          str_same(g->nodes[i].name, "c_strs"))
        g->nodes[i].dead = true;
    CHECK_OK(ir_compact(g, &e), &e);
    CHECK_OK(ir_infer(g, NULL, &e), &e);
    uint8_t *buf;
    size_t len;
    CHECK_OK(kiln_onnx_save_buffer(g, &buf, &len, &e), &e);
    Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, len, buf);
    CHECK(m && m->graph->n_value_info >= 2);
    if (m) {
      CHECK(m->graph->input[0]->type->tensor_type->shape->dim[0]->value_case ==
            ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM);
      /* Constant outputs were folded? no evaluator here: they stay nodes, not initializers */
      for (size_t k = 0; k < m->graph->n_initializer; k++)
        CHECK(strcmp(m->graph->initializer[k]->name, "c") != 0);
      onnx__model_proto__free_unpacked(m, NULL);
    }
    kiln_graph *g2 = NULL;
    CHECK_OK(kiln_onnx_load_buffer(buf, len, NULL, NULL, &g2, &e), &e);
    if (g2) CHECK(g2->n_nodes == g->n_nodes && g2->values[g2->inputs[0]].shape.d[0] == -1);
    ir_graph_free(g2);
    kiln_free(buf);
  }
  ir_graph_free(g);
}

static void test_folded_constants_not_initializers(void) {
  /* a value folded by inference keeps its producer: saved as a node, not an initializer */
  kiln_err e = {0};
  mb *b = mb_begin(13);
  mb_input(b, "x", 1, 1, (int64_t[]){3}, NULL);
  float one[3] = {1, 1, 1};
  mb_raw(b, mb_init(b, mb_tensor(b, "one", 1, 1, (int64_t[]){3})), one, sizeof one);
  mb_node(b, "Relu", "r", "one", "folded");
  mb_node(b, "Add", "a", "x,folded", "y");
  mb_output(b, "y", 1);
  kiln_graph *g = NULL;
  CHECK_OK(mb_load(b, &g, &e), &e);
  mb_end(b);
  if (!g) return;
  /* fake what folding does: the value gets data but keeps its producer */
  int f = ir_find_value(g, "folded");
  kiln_tensor_clone(g->values[ir_find_value(g, "one")].data, &g->values[f].data, &e);
  uint8_t *buf;
  size_t len;
  CHECK_OK(kiln_onnx_save_buffer(g, &buf, &len, &e), &e);
  Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, len, buf);
  CHECK(m && m->graph->n_initializer == 1 && m->graph->n_node == 2);
  if (m) onnx__model_proto__free_unpacked(m, NULL);
  kiln_free(buf);
  ir_graph_free(g);
}

static void test_kiln_domain_import(void) {
  /* a graph built in memory without opset imports gets the default one */
  kiln_err e = {0};
  kiln_graph *g = ir_graph_new();
  int x, y;
  ir_add_value(g, "x", &x, &e);
  g->values[x].dtype = KILN_F32;
  g->values[x].shape = kiln_shape_make(1, (int64_t[]){4});
  g->values[x].typed = true;
  ir_add_input(g, x, &e);
  ir_add_value(g, "y", &y, &e);
  ir_add_node(g, KILN_OP_Relu, "r", &x, 1, &y, 1, NULL, &e);
  ir_add_output(g, y, &e);
  CHECK_OK(ir_infer(g, NULL, &e), &e);
  uint8_t *buf;
  size_t len;
  CHECK_OK(kiln_onnx_save_buffer(g, &buf, &len, &e), &e);
  kiln_graph *g2 = NULL;
  CHECK_OK(kiln_onnx_load_buffer(buf, len, NULL, NULL, &g2, &e), &e);
  if (g2) {
    CHECK(ir_get_opset(g2, "") == 17 && g2->n_nodes == 1);
    CHECK(str_same(g2->name, "kiln_graph") && str_same(g2->producer_name, "kiln"));
    CHECK(g2->values[g2->outputs[0]].dtype == KILN_F32);
  }
  ir_graph_free(g2);
  kiln_free(buf);
  ir_graph_free(g);
}

/* ---- external data ---- */

static Onnx__TensorProto *mb_external(mb *b, const char *loc, const char *offset,
                                      const char *length) {
  Onnx__TensorProto *t = mb_init(b, mb_tensor(b, "w", 1, 1, (int64_t[]){3}));
  t->has_data_location = 1;
  t->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
  t->external_data = mb_new(b, sizeof(void *) * 4);
  const char *keys[3] = {"location", "offset", "length"}, *vals[3] = {loc, offset, length};
  for (int i = 0; i < 3; i++) {
    if (!vals[i]) continue;
    Onnx__StringStringEntryProto *kv = mb_new(b, sizeof *kv);
    onnx__string_string_entry_proto__init(kv);
    kv->key = mb_str(b, keys[i]);
    kv->value = mb_str(b, vals[i]);
    t->external_data[t->n_external_data++] = kv;
  }
  return t;
}

static kiln_code load_external(const char *loc, const char *offset, const char *length,
                               const char *base, kiln_graph **g, kiln_err *e) {
  mb *b = mb_begin(13);
  mb_input(b, "x", 1, 1, (int64_t[]){3}, NULL);
  mb_external(b, loc, offset, length);
  mb_node(b, "Add", "a", "x,w", "y");
  mb_output(b, "y", 1);
  size_t len;
  uint8_t *buf = mb_pack(b, &len);
  kiln_code rc;
  if (base) {
    rc = kiln_onnx_load_buffer(buf, len, base, "ext.onnx", g, e);
  } else { /* through a file: the base is the model's directory */
    write_bytes(tmp_path("ext.onnx"), buf, len);
    rc = kiln_onnx_load(tmp_path("ext.onnx"), g, e);
  }
  free(buf);
  mb_end(b);
  return rc;
}

static void test_external_data(void) {
  float data[5] = {9, 1, 2, 3, 9};
  mkdir(tmp_path("sub"), 0755);
  write_bytes(tmp_path("sub/w.bin"), data, sizeof data);
  kiln_err e = {0};
  kiln_graph *g = NULL;
  CHECK_OK(load_external("sub/w.bin", "4", "12", NULL, &g, &e), &e);
  if (g) {
    const kiln_tensor *t = g->values[ir_find_value(g, "w")].data;
    CHECK(t && ((float *)t->data)[0] == 1 && ((float *)t->data)[2] == 3);
    /* saving writes the weights inline */
    const char *d = roundtrip(g, &e);
    CHECK_MSG(d == NULL, "round trip differs: %s", d);
  }
  ir_graph_free(g);
  struct {
    const char *loc, *off, *len, *want;
    kiln_code code;
  } bad[] = {
      {"../w.bin", "0", NULL, "leaves the model's directory", KILN_ERR_INVALID},
      {"sub/../../etc/passwd", "0", NULL, "leaves the model's directory", KILN_ERR_INVALID},
      {"/etc/passwd", "0", NULL, "absolute", KILN_ERR_INVALID},
      {"sub/missing.bin", "0", NULL, "missing.bin", KILN_ERR_IO},
      {"sub/w.bin", "12", NULL, "does not fit", KILN_ERR_SHAPE},
      {"sub/w.bin", "0", "8", "length is 8 bytes", KILN_ERR_SHAPE},
      {"sub/w.bin", "-4", NULL, "offset '-4'", KILN_ERR_PARSE},
      {"sub/w.bin", "99999999999999999999", NULL, "offset", KILN_ERR_PARSE},
      {"sub", "0", NULL, "not a regular file", KILN_ERR_IO},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    kiln_err_clear(&e);
    g = NULL;
    kiln_code rc = load_external(bad[i].loc, bad[i].off, bad[i].len, NULL, &g, &e);
    CHECK_MSG(rc == bad[i].code && has(&e, bad[i].want) && has(&e, "initializer 'w'"),
              "%s: got %d '%s'", bad[i].loc, rc, e.msg);
    CHECK(g == NULL);
  }
  /* a symlink inside the directory that points outside it */
  unlink(tmp_path("sub/link.bin"));
  CHECK(symlink("/etc/passwd", tmp_path("sub/link.bin")) == 0);
  kiln_err_clear(&e);
  CHECK(load_external("sub/link.bin", "0", NULL, NULL, &g, &e) == KILN_ERR_INVALID);
  CHECK_MSG(has(&e, "outside the model's directory"), "%s", e.msg);
  /* from memory without a directory, external data is refused */
  kiln_err_clear(&e);
  mb *b = mb_begin(13);
  mb_input(b, "x", 1, 1, (int64_t[]){3}, NULL);
  mb_external(b, "sub/w.bin", "4", NULL);
  mb_node(b, "Add", "a", "x,w", "y");
  mb_output(b, "y", 1);
  size_t len;
  uint8_t *buf = mb_pack(b, &len);
  CHECK(kiln_onnx_load_buffer(buf, len, NULL, "mem", &g, &e) == KILN_ERR_UNSUPPORTED);
  CHECK(has(&e, "external data") && has(&e, "initializer 'w'"));
  free(buf);
  mb_end(b);
}

/* ---- bad models ---- */

static void expect_fail(mb *b, kiln_code code, const char *want1, const char *want2) {
  kiln_err e = {0};
  kiln_graph *g = NULL;
  kiln_code rc = mb_load(b, &g, &e);
  CHECK_MSG(rc == code, "expected code %d, got %d: %s", code, rc, e.msg);
  CHECK_MSG(has(&e, want1), "message '%s' lacks '%s'", e.msg, want1);
  if (want2) CHECK_MSG(has(&e, want2), "message '%s' lacks '%s'", e.msg, want2);
  CHECK_MSG(has(&e, "test.onnx"), "message '%s' does not name the file", e.msg);
  CHECK(g == NULL);
  ir_graph_free(g);
  mb_end(b);
}

static void test_bad_graphs(void) {
  mb *b = mb_begin(13);
  mb_input(b, "x", 1, 1, (int64_t[]){3}, NULL);
  mb_node(b, "Add", "a1", "x,t2", "t1");
  mb_node(b, "Relu", "r1", "t1", "t2");
  mb_node(b, "Identity", "i1", "t2", "y");
  mb_output(b, "y", 1);
  expect_fail(b, KILN_ERR_INVALID, "cycle", NULL);

  b = mb_small();
  b->nodes[1]->input[0] = "nope";
  expect_fail(b, KILN_ERR_INVALID, "node 'relu' (Relu) reads 'nope'", NULL);

  b = mb_small();
  mb_node(b, "LSTM", "lstm1", "x", "h");
  expect_fail(b, KILN_ERR_UNSUPPORTED, "unsupported op: LSTM (node 'lstm1')", NULL);

  b = mb_small();
  mb_node(b, "LSTM", NULL, "x", "h");
  expect_fail(b, KILN_ERR_UNSUPPORTED, "unsupported op: LSTM (node #2)", NULL);

  b = mb_small();
  b->opsets[0]->version = 19;
  expect_fail(b, KILN_ERR_UNSUPPORTED, "opset 19 of ai.onnx is newer than kiln supports", NULL);

  b = mb_small();
  mb_opset(b, "com.microsoft", 1);
  mb_node(b, "FusedConv", "fc", "x", "h")->domain = "com.microsoft";
  expect_fail(b, KILN_ERR_UNSUPPORTED, "com.microsoft.FusedConv", "node 'fc'");

  b = mb_small();
  mb_opset(b, "ai.onnx.ml", 3); /* imported but unused: fine */
  kiln_err e = {0};
  kiln_graph *g = NULL;
  CHECK_OK(mb_load(b, &g, &e), &e);
  ir_graph_free(g);
  mb_end(b);

  b = mb_small();
  b->m.n_opset_import = 0;
  expect_fail(b, KILN_ERR_INVALID, "imports no opset", NULL);

  b = mb_small();
  b->ins[0]->type->tensor_type->elem_type = 10;
  expect_fail(b, KILN_ERR_UNSUPPORTED, "graph input 'x' has dtype float16", NULL);

  b = mb_small();
  b->outs[0]->type->tensor_type->elem_type = 2;
  expect_fail(b, KILN_ERR_UNSUPPORTED, "graph output 'y' has dtype uint8", NULL);

  b = mb_small();
  b->inits[0]->data_type = 11;
  expect_fail(b, KILN_ERR_UNSUPPORTED, "initializer 'c' has dtype float64", NULL);

  b = mb_small();
  b->inits[0]->data_type = 8;
  expect_fail(b, KILN_ERR_UNSUPPORTED, "initializer 'c' has dtype string", NULL);

  b = mb_small();
  b->ins[0]->type->tensor_type->shape->dim[1]->value_case =
      ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE__NOT_SET;
  expect_fail(b, KILN_ERR_INVALID, "graph input 'x' dimension 1 has neither", NULL);

  b = mb_small();
  b->ins[0]->type->tensor_type->shape = NULL;
  expect_fail(b, KILN_ERR_UNSUPPORTED, "graph input 'x' has no shape", NULL);

  b = mb_small();
  b->ins[0]->type = NULL;
  expect_fail(b, KILN_ERR_INVALID, "graph input 'x' has no type", NULL);

  b = mb_small();
  b->ins[0]->type->value_case = ONNX__TYPE_PROTO__VALUE_SEQUENCE_TYPE;
  b->ins[0]->type->sequence_type = mb_new(b, sizeof(Onnx__TypeProto__Sequence));
  onnx__type_proto__sequence__init(b->ins[0]->type->sequence_type);
  expect_fail(b, KILN_ERR_UNSUPPORTED, "graph input 'x' is not a tensor", NULL);

  /* dims whose element count overflows int64, and dims that disagree with the data */
  b = mb_small();
  b->inits[0]->n_dims = 3;
  b->inits[0]->dims[0] = b->inits[0]->dims[1] = b->inits[0]->dims[2] = (int64_t)1 << 40;
  expect_fail(b, KILN_ERR_LIMIT, "initializer 'c' has dims [1099511627776,", "overflows");

  b = mb_small();
  b->inits[0]->n_dims = 2;
  b->inits[0]->dims[0] = INT64_MAX, b->inits[0]->dims[1] = 2;
  expect_fail(b, KILN_ERR_LIMIT, "initializer 'c'", NULL);

  b = mb_small();
  b->inits[0]->dims[0] = -3;
  expect_fail(b, KILN_ERR_INVALID, "initializer 'c' has a negative dimension", NULL);

  b = mb_small();
  b->inits[0]->dims[0] = 4;
  expect_fail(b, KILN_ERR_SHAPE, "initializer 'c' has 12 bytes of raw_data", "need 16");

  b = mb_small();
  b->inits[0]->has_raw_data = 0;
  b->inits[0]->n_float_data = 2;
  b->inits[0]->float_data = mb_new(b, 8);
  expect_fail(b, KILN_ERR_SHAPE, "initializer 'c' has 2 float_data values", "need 3");

  b = mb_small();
  b->inits[0]->n_dims = 9;
  expect_fail(b, KILN_ERR_LIMIT, "initializer 'c' has rank 9", NULL);

  b = mb_small();
  b->inits[0]->has_data_type = 0;
  expect_fail(b, KILN_ERR_INVALID, "initializer 'c' has no data type", NULL);

  b = mb_small();
  mb_input(b, "x", 1, 1, (int64_t[]){3}, NULL);
  expect_fail(b, KILN_ERR_INVALID, "graph input 'x' is listed more than once", NULL);

  b = mb_small();
  mb_init(b, b->inits[0]);
  expect_fail(b, KILN_ERR_INVALID, "value 'c' is defined more than once", NULL);

  b = mb_small();
  b->nodes[1]->output[0] = "s"; /* two producers */
  expect_fail(b, KILN_ERR_INVALID, "'s' is defined more than once", "node 'relu'");

  b = mb_small();
  b->outs[0]->name = "ghost";
  expect_fail(b, KILN_ERR_INVALID, "graph output 'ghost' is not produced", NULL);

  b = mb_small();
  b->m.graph = NULL;
  expect_fail(b, KILN_ERR_INVALID, "no graph", NULL);

  b = mb_small();
  mb_attr(b, b->nodes[0], "bogus", 2)->has_i = 1;
  expect_fail(b, KILN_ERR_INVALID, "unknown attribute 'bogus'", "node 'add'");

  b = mb_small();
  mb_attr(b, b->nodes[0], "axis", 2);
  mb_attr(b, b->nodes[0], "axis", 2);
  expect_fail(b, KILN_ERR_INVALID, "attribute 'axis' more than once", "node 'add'");

  b = mb_small();
  mb_attr(b, b->nodes[0], "zzz", 0); /* no type, no value, not in the schema */
  expect_fail(b, KILN_ERR_INVALID, "node 'add' attribute 'zzz' has an unknown type", NULL);

  b = mb_small();
  Onnx__AttributeProto *a = mb_attr(b, mb_node(b, "Constant", "k", NULL, "kk"), "value", 4);
  a->t = mb_tensor(b, NULL, 10, 1, (int64_t[]){1});
  expect_fail(b, KILN_ERR_UNSUPPORTED, "node 'k' attribute 'value' has dtype float16", NULL);

  b = mb_small();
  mb_node(b, "Relu", "r2", "x,x", "q"); /* too many inputs */
  expect_fail(b, KILN_ERR_INVALID, "has 2 inputs", "r2");

  b = mb_small();
  b->nodes[0]->op_type = "";
  expect_fail(b, KILN_ERR_INVALID, "node 'add' has no op_type", NULL);

  b = mb_small();
  b->ins[0]->name = "";
  expect_fail(b, KILN_ERR_INVALID, "graph input #0 has no name", NULL);
}

static void test_optional_names(void) {
  /* an empty input or output name is an omitted optional: -1 */
  kiln_err e = {0};
  mb *b = mb_begin(13);
  mb_input(b, "x", 1, 1, (int64_t[]){3}, NULL);
  mb_node(b, "Clip", "clip", "x,,", "y"); /* min and max omitted */
  mb_node(b, "Dropout", "drop", "y", "z,"); /* mask omitted */
  mb_output(b, "z", 1);
  kiln_graph *g = NULL;
  CHECK_OK(mb_load(b, &g, &e), &e);
  mb_end(b);
  if (!g) return;
  CHECK(g->nodes[0].n_in == 3 && g->nodes[0].in[1] == -1 && g->nodes[0].in[2] == -1);
  CHECK(g->nodes[1].n_out == 2 && g->nodes[1].out[1] == -1);
  const char *d = roundtrip(g, &e);
  CHECK_MSG(d == NULL, "round trip differs: %s", d);
  ir_graph_free(g);
}

static void test_opset_recorded(void) {
  kiln_err e = {0};
  for (int v = 1; v <= 18; v++) {
    mb *b = mb_small();
    b->opsets[0]->version = v;
    kiln_graph *g = NULL;
    CHECK_OK(mb_load(b, &g, &e), &e);
    if (g) CHECK(g->nodes[0].opset == v && g->nodes[1].opset == v);
    ir_graph_free(g);
    mb_end(b);
  }
  /* IR version 1..2 models without imports get opset 1 */
  mb *b = mb_small();
  b->m.n_opset_import = 0;
  b->m.ir_version = 2;
  kiln_graph *g = NULL;
  CHECK_OK(mb_load(b, &g, &e), &e);
  if (g) CHECK(g->nodes[0].opset == 1);
  ir_graph_free(g);
  mb_end(b);
}

/* Truncations, random bytes and bit flips: never a crash, always a message. */
static void test_corrupt_bytes(void) {
  mb *b = mb_rich();
  size_t len;
  uint8_t *good = mb_pack(b, &len);
  mb_end(b);
  int failed = 0;
  for (size_t cut = 0; cut < len; cut++) {
    kiln_err e = {0};
    kiln_graph *g = NULL;
    kiln_code rc = kiln_onnx_load_buffer(good, cut, NULL, "cut", &g, &e);
    if (rc) {
      failed++;
      CHECK_MSG(e.msg[0] && g == NULL, "cut at %zu: empty message", cut);
    }
    ir_graph_free(g);
  }
  CHECK(failed > (int)len / 2);
  kiln_err e = {0};
  kiln_graph *g = NULL;
  CHECK(kiln_onnx_load_buffer(good, len - 1, NULL, "cut", &g, &e) == KILN_ERR_PARSE);
  CHECK(has(&e, "cut: not a valid ONNX model"));

  uint64_t s = 12345;
  uint8_t *buf = malloc(len + 4096);
  for (int iter = 0; iter < 3000; iter++) {
    size_t n;
    if (iter < 1000) { /* random bytes */
      n = (size_t)(iter * 7 % 3000);
      for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        buf[i] = (uint8_t)(s >> 56);
      }
    } else { /* a few flipped bytes in a valid model */
      n = len;
      memcpy(buf, good, len);
      for (int k = 0; k < 1 + iter % 4; k++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        buf[(s >> 20) % len] ^= (uint8_t)(1u << ((s >> 8) % 8));
      }
    }
    kiln_err e2 = {0};
    g = NULL;
    kiln_code rc = kiln_onnx_load_buffer(buf, n, tmpdir, "fuzz", &g, &e2);
    if (rc) CHECK_MSG(e2.msg[0] && g == NULL, "iteration %d: code %d, empty message", iter, rc);
    if (!rc) { /* whatever loads must also save and reload */
      const char *d = roundtrip(g, &e2);
      CHECK_MSG(d == NULL, "iteration %d: round trip differs: %s", iter, d);
    }
    ir_graph_free(g);
  }
  free(buf);
  free(good);
}

static void test_hostile_sizes(void) {
  /* lengths that claim more bytes than the buffer holds are refused before
   * anything of that size is allocated */
  size_t n = 64;
  uint8_t *buf = calloc(1, n);
  /* ModelProto.graph (7) { GraphProto.initializer (5) { TensorProto.dims (1) packed, len 2^31 } } */
  uint8_t hdr[] = {0x3a, 0x8a, 0x80, 0x80, 0x80, 0x08, 0x2a, 0x85, 0x80, 0x80, 0x80, 0x08,
                   0x0a, 0x80, 0x80, 0x80, 0x80, 0x08};
  memcpy(buf, hdr, sizeof hdr);
  kiln_err e = {0};
  kiln_graph *g = NULL;
  kiln_code rc = kiln_onnx_load_buffer(buf, n, NULL, "huge", &g, &e);
  CHECK(rc == KILN_ERR_PARSE || rc == KILN_ERR_LIMIT);
  CHECK(g == NULL && e.msg[0]);
  free(buf);
  /* 2M empty NodeProtos in 4 MiB: unpacked they would need ~300 MiB, past the limit */
  n = 4 << 20;
  buf = malloc(n);
  size_t k = 0;
  buf[k++] = 0x3a; /* graph */
  size_t body = n - 6;
  buf[k++] = (uint8_t)(0x80 | (body & 0x7f));
  buf[k++] = (uint8_t)(0x80 | ((body >> 7) & 0x7f));
  buf[k++] = (uint8_t)(0x80 | ((body >> 14) & 0x7f));
  buf[k++] = (uint8_t)(0x80 | ((body >> 21) & 0x7f));
  buf[k++] = (uint8_t)(body >> 28);
  while (k + 2 <= n) { /* empty NodeProto entries */
    buf[k++] = 0x0a;
    buf[k++] = 0x00;
  }
  kiln_err_clear(&e);
  rc = kiln_onnx_load_buffer(buf, k, NULL, "many", &g, &e);
  CHECK_MSG(rc == KILN_ERR_LIMIT && has(&e, "many: parsing the ONNX model needs more than"),
            "%d %s", rc, e.msg);
  free(buf);
  ir_graph_free(g);
}

static void test_failing_allocator(void) {
  mb *b = mb_rich();
  size_t len;
  uint8_t *buf = mb_pack(b, &len);
  mb_end(b);
  int nomem = 0;
  long k;
  for (k = 0; k < 100000; k++) {
    kiln_err e = {0};
    kiln_graph *g = NULL;
    kiln_alloc_fail_after(k);
    kiln_code rc = kiln_onnx_load_buffer(buf, len, NULL, "m", &g, &e);
    uint8_t *out = NULL;
    size_t olen = 0;
    if (!rc) rc = kiln_onnx_save_buffer(g, &out, &olen, &e);
    kiln_alloc_fail_after(-1);
    kiln_free(out);
    ir_graph_free(g);
    if (rc == KILN_OK) break;
    CHECK_MSG(rc == KILN_ERR_NOMEM, "allocation %ld: code %d '%s'", k, rc, e.msg);
    nomem++;
  }
  CHECK(nomem > 50 && k < 100000);
  /* tensor files too */
  kiln_err e = {0};
  kiln_tensor *t = NULL;
  kiln_tensor_new(KILN_F32, &(kiln_shape){.rank = 2, .d = {2, 3}}, &t, &e);
  CHECK_OK(kiln_tensor_save_npy(t, tmp_path("fa.npy"), &e), &e);
  CHECK_OK(kiln_tensor_save_pb(t, "t", tmp_path("fa.pb"), &e), &e);
  kiln_tensor_free(t);
  for (k = 0; k < 1000; k++) {
    kiln_err_clear(&e);
    kiln_tensor *a = NULL, *c = NULL;
    char *name = NULL;
    kiln_alloc_fail_after(k);
    kiln_code r1 = kiln_tensor_load_npy(tmp_path("fa.npy"), &a, &e);
    kiln_code r2 = kiln_tensor_load_pb(tmp_path("fa.pb"), &c, &name, &e);
    kiln_alloc_fail_after(-1);
    kiln_tensor_free(a);
    kiln_tensor_free(c);
    kiln_free(name);
    CHECK(r1 == KILN_OK || r1 == KILN_ERR_NOMEM);
    CHECK(r2 == KILN_OK || r2 == KILN_ERR_NOMEM);
    if (!r1 && !r2) break;
  }
  free(buf);
}

/* ---- tensor files ---- */

static kiln_tensor *make_tensor(kiln_dtype dt, int rank, const int64_t *d) {
  kiln_err e = {0};
  kiln_tensor *t = NULL;
  kiln_shape s = kiln_shape_make(rank, d);
  kiln_tensor_new(dt, &s, &t, &e);
  for (int64_t i = 0; i < t->numel; i++) kiln_tensor_set_f(t, i, (double)(i * 3 % 7) - 2.5);
  return t;
}

static void test_npy_roundtrip(void) {
  kiln_dtype dts[4] = {KILN_F32, KILN_I32, KILN_I64, KILN_BOOL};
  int64_t dims[3] = {2, 3, 4};
  for (int i = 0; i < 4; i++)
    for (int rank = 0; rank <= 3; rank++) {
      kiln_err e = {0};
      kiln_tensor *t = make_tensor(dts[i], rank, dims), *u = NULL;
      CHECK_OK(kiln_tensor_save_npy(t, tmp_path("t.npy"), &e), &e);
      CHECK_OK(kiln_tensor_load_file(tmp_path("t.npy"), &u, &e), &e);
      CHECK(tensor_same(t, u));
      size_t len;
      uint8_t *raw = slurp(tmp_path("t.npy"), &len);
      CHECK(raw && (len - kiln_tensor_nbytes(t)) % 64 == 0);
      free(raw);
      kiln_tensor_free(u);
      kiln_tensor_free(t);
    }
}

/* Writes an .npy with a given version and header dict (padded as numpy does). */
static size_t npy_bytes(uint8_t *out, int major, const char *dict, const void *data, size_t n) {
  size_t pre = major == 1 ? 10 : 12;
  size_t hl = strlen(dict) + 1;
  size_t total = (pre + hl + 63) / 64 * 64;
  memcpy(out, "\x93NUMPY", 6);
  out[6] = (uint8_t)major;
  out[7] = 0;
  size_t h = total - pre;
  out[8] = (uint8_t)h, out[9] = (uint8_t)(h >> 8);
  if (major > 1) out[10] = (uint8_t)(h >> 16), out[11] = (uint8_t)(h >> 24);
  memcpy(out + pre, dict, hl - 1);
  memset(out + pre + hl - 1, ' ', total - pre - hl);
  out[total - 1] = '\n';
  memcpy(out + total, data, n);
  return total + n;
}

static void test_npy_versions_and_errors(void) {
  uint8_t buf[1024];
  int32_t v[6] = {1, 2, 3, 4, 5, 6};
  for (int major = 1; major <= 3; major++) {
    kiln_err e = {0};
    kiln_tensor *t = NULL;
    size_t n = npy_bytes(buf, major, "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }",
                         v, sizeof v);
    CHECK_OK(kiln_tensor_load_npy_buffer(buf, n, "v.npy", &t, &e), &e);
    CHECK(t && t->dtype == KILN_I32 && t->shape.rank == 2 && ((int32_t *)t->data)[5] == 6);
    kiln_tensor_free(t);
  }
  /* key order and quoting are free; a 1-D shape has a trailing comma */
  kiln_err e = {0};
  kiln_tensor *t = NULL;
  size_t n = npy_bytes(buf, 1, "{\"shape\": (6,), \"fortran_order\": False, \"descr\": \"<i4\"}", v,
                       sizeof v);
  CHECK_OK(kiln_tensor_load_npy_buffer(buf, n, "v.npy", &t, &e), &e);
  CHECK(t && t->shape.rank == 1 && t->shape.d[0] == 6);
  kiln_tensor_free(t);
  struct {
    const char *dict;
    size_t data;
    const char *want;
    kiln_code code;
  } bad[] = {
      {"{'descr': '<i4', 'fortran_order': True, 'shape': (2, 3), }", 24, "Fortran", KILN_ERR_UNSUPPORTED},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }", 24, "'<f8'", KILN_ERR_UNSUPPORTED},
      {"{'descr': '>i4', 'fortran_order': False, 'shape': (6,), }", 24, "'>i4'", KILN_ERR_UNSUPPORTED},
      {"{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }", 20, "needs 24", KILN_ERR_SHAPE},
      {"{'descr': '<i4', 'fortran_order': False, 'shape': (2, 2), }", 24, "needs 16", KILN_ERR_SHAPE},
      {"{'descr': '<i4', 'shape': (6,), }", 24, "lacks 'fortran_order'", KILN_ERR_PARSE},
      {"{'descr': '<i4', 'fortran_order': False, 'shape': (6,), 'x': 1}", 24, "unexpected", KILN_ERR_PARSE},
      {"{'descr': '<i4', 'descr': '<i4', 'fortran_order': False, 'shape': (6,)}", 24, "repeated", KILN_ERR_PARSE},
      {"{'descr': '<i4', 'fortran_order': False, 'shape': (6,)} junk", 24, "trailing", KILN_ERR_PARSE},
      {"{'descr': '<i4', 'fortran_order': Maybe, 'shape': (6,)}", 24, "fortran_order", KILN_ERR_PARSE},
      {"{'descr': '<i4', 'fortran_order': False, 'shape': (-6,)}", 24, "shape", KILN_ERR_PARSE},
      {"{'descr': '<i4', 'fortran_order': False, 'shape': (6,", 24, "shape", KILN_ERR_PARSE},
      {"{'descr': '<i4, 'fortran_order': False, 'shape': (6,)}", 24, "npy header", KILN_ERR_PARSE},
      {"['descr', '<i4']", 24, "not a dict", KILN_ERR_PARSE},
      {"{'descr': '<i4', 'fortran_order': False, 'shape': (1099511627776, 1099511627776)}", 24,
       "size limit", KILN_ERR_LIMIT},
      {"{'descr': '<i4', 'fortran_order': False, 'shape': (99999999999999999999,)}", 24,
       "over", KILN_ERR_LIMIT},
      {"{'descr': '<i4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1)}", 4, "rank", KILN_ERR_LIMIT},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    kiln_err_clear(&e);
    t = NULL;
    n = npy_bytes(buf, 1, bad[i].dict, v, bad[i].data);
    kiln_code rc = kiln_tensor_load_npy_buffer(buf, n, "bad.npy", &t, &e);
    CHECK_MSG(rc == bad[i].code && has(&e, bad[i].want) && has(&e, "bad.npy"),
              "%s: got %d '%s'", bad[i].dict, rc, e.msg);
    CHECK(t == NULL);
  }
  /* broken preambles */
  kiln_err_clear(&e);
  CHECK(kiln_tensor_load_npy_buffer("\x93NUMPZ\x01\x00\x10\x00", 10, "m.npy", &t, &e) ==
        KILN_ERR_PARSE);
  CHECK(has(&e, "bad magic"));
  kiln_err_clear(&e);
  CHECK(kiln_tensor_load_npy_buffer("\x93NUMPY\x01\x00\xff\xff{}", 12, "m.npy", &t, &e) ==
        KILN_ERR_PARSE);
  CHECK(has(&e, "truncated"));
  kiln_err_clear(&e);
  CHECK(kiln_tensor_load_npy_buffer("\x93NUMPY\x09\x00\x10\x00", 10, "m.npy", &t, &e) ==
        KILN_ERR_UNSUPPORTED);
  kiln_err_clear(&e);
  CHECK(kiln_tensor_load_npy_buffer("\x93NUMPY", 6, "m.npy", &t, &e) == KILN_ERR_PARSE);
  kiln_err_clear(&e);
  CHECK(kiln_tensor_load_npy(tmp_path("nonexistent.npy"), &t, &e) == KILN_ERR_IO);
  CHECK(has(&e, "nonexistent.npy"));
}

static void test_pb_tensors(void) {
  kiln_err e = {0};
  kiln_tensor *t = NULL;
  char *name = NULL;
  /* a suite input */
  kiln_code rc = kiln_tensor_load_pb(SUITE "/node/test_add/test_data_set_0/input_0.pb", &t, &name, &e);
  CHECK_OK(rc, &e);
  if (!rc) {
    CHECK(t->dtype == KILN_F32 && t->shape.rank == 3 && t->shape.d[2] == 5);
    CHECK(name && strcmp(name, "x") == 0);
  }
  kiln_tensor_free(t);
  kiln_free(name);
  /* round trips with and without a name, by extension */
  kiln_dtype dts[4] = {KILN_F32, KILN_I32, KILN_I64, KILN_BOOL};
  for (int i = 0; i < 4; i++) {
    kiln_tensor *a = make_tensor(dts[i], 2, (int64_t[]){3, 5}), *c = NULL;
    CHECK_OK(kiln_tensor_save_pb(a, i ? "named" : NULL, tmp_path("t.pb"), &e), &e);
    name = NULL;
    CHECK_OK(kiln_tensor_load_pb(tmp_path("t.pb"), &c, &name, &e), &e);
    CHECK(tensor_same(a, c) && name && strcmp(name, i ? "named" : "") == 0);
    kiln_tensor_free(c);
    c = NULL;
    CHECK_OK(kiln_tensor_load_file(tmp_path("t.pb"), &c, &e), &e);
    CHECK(tensor_same(a, c));
    kiln_tensor_free(c);
    kiln_tensor_free(a);
    kiln_free(name);
  }
  /* errors name the file and the tensor */
  mb *b = mb_begin(0);
  Onnx__TensorProto *tp = mb_tensor(b, "h", 10, 1, (int64_t[]){2});
  mb_raw(b, tp, "abcd", 4);
  size_t len = protobuf_c_message_get_packed_size(&tp->base);
  uint8_t *buf = malloc(len);
  protobuf_c_message_pack(&tp->base, buf);
  kiln_err_clear(&e);
  t = NULL;
  CHECK(kiln_tensor_load_pb_buffer(buf, len, "h.pb", &t, NULL, &e) == KILN_ERR_UNSUPPORTED);
  CHECK(has(&e, "h.pb: tensor 'h' has dtype float16"));
  kiln_err_clear(&e);
  CHECK(kiln_tensor_load_pb_buffer(buf, len - 1, "h.pb", &t, NULL, &e) == KILN_ERR_PARSE);
  CHECK(has(&e, "h.pb"));
  free(buf);
  mb_end(b);
}

/* ---- file helpers ---- */

static int count_files(const char *dir) {
  DIR *d = opendir(dir);
  int n = 0;
  if (!d) return -1;
  for (struct dirent *de; (de = readdir(d));)
    if (de->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

static void test_file_helpers(void) {
  kiln_err e = {0};
  mkdir(tmp_path("atomic"), 0755);
  CHECK_OK(kiln_write_file_atomic(tmp_path("atomic/f"), "hello", 5, &e), &e);
  CHECK_OK(kiln_write_file_atomic(tmp_path("atomic/f"), "bye", 3, &e), &e);
  uint8_t *buf;
  size_t len;
  CHECK_OK(kiln_read_file(tmp_path("atomic/f"), 100, &buf, &len, &e), &e);
  CHECK(len == 3 && memcmp(buf, "bye", 3) == 0);
  kiln_free(buf);
  CHECK(count_files(tmp_path("atomic")) == 1); /* no temporary left behind */
  CHECK(kiln_write_file_atomic(tmp_path("nodir/f"), "x", 1, &e) == KILN_ERR_IO);
  CHECK(has(&e, "nodir/f"));
  kiln_err_clear(&e);
  CHECK(kiln_read_file(tmp_path("atomic/f"), 2, &buf, &len, &e) == KILN_ERR_LIMIT);
  CHECK(has(&e, "is 3 bytes; the limit is 2"));
  kiln_err_clear(&e);
  CHECK(kiln_read_file(tmp_path("atomic"), 100, &buf, &len, &e) == KILN_ERR_IO);
  CHECK(has(&e, "not a regular file"));
  kiln_err_clear(&e);
  CHECK(kiln_read_file(tmp_path("missing"), 100, &buf, &len, &e) == KILN_ERR_IO);
  CHECK(has(&e, "No such file"));
  /* a failing save leaves an existing model untouched */
  kiln_err_clear(&e);
  kiln_graph *g = NULL;
  mb *b = mb_small();
  CHECK_OK(mb_load(b, &g, &e), &e);
  mb_end(b);
  CHECK(kiln_onnx_save(g, tmp_path("nodir/m.onnx"), &e) == KILN_ERR_IO);
  ir_graph_free(g);
  kiln_err_clear(&e);
  CHECK(kiln_onnx_load(tmp_path("missing.onnx"), &g, &e) == KILN_ERR_IO);
  CHECK(has(&e, "missing.onnx"));
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(p);
}

int main(void) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/kiln-frontend-XXXXXX");
  if (!mkdtemp(tmpdir)) {
    perror("mkdtemp");
    return 1;
  }
  RUN(test_load_conv_model);
  RUN(test_old_style_initializers);
  RUN(test_all_suite_models);
  RUN(test_rich_model);
  RUN(test_folded_constants_not_initializers);
  RUN(test_kiln_domain_import);
  RUN(test_external_data);
  RUN(test_bad_graphs);
  RUN(test_optional_names);
  RUN(test_opset_recorded);
  RUN(test_corrupt_bytes);
  RUN(test_hostile_sizes);
  RUN(test_failing_allocator);
  RUN(test_npy_roundtrip);
  RUN(test_npy_versions_and_errors);
  RUN(test_pb_tensors);
  RUN(test_file_helpers);
  nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  TEST_MAIN_END();
}
