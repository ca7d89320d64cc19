/* one_node.h — test helpers: build a graph of one op on given tensors, run shape inference
 * and the reference interpreter, and compare the outputs with hand-computed values. */
#ifndef KILN_TEST_ONE_NODE_H
#define KILN_TEST_ONE_NODE_H

#include "ir/graph.h"
#include "runtime/ref.h"
#include "test.h"

static kiln_tensor *tn_new(kiln_dtype dt, int rank, const int64_t *d) {
  kiln_err e = {0};
  kiln_tensor *t = NULL;
  kiln_shape s = kiln_shape_make(rank, d);
  if (kiln_tensor_new(dt, &s, &t, &e)) {
    fprintf(stderr, "tensor: %s\n", e.msg);
    abort();
  }
  return t;
}
/* tf(rank, dims, values): float32 tensor; ti64 / ti32 likewise. */
static kiln_tensor *tf(int rank, const int64_t *d, const float *v) {
  kiln_tensor *t = tn_new(KILN_F32, rank, d);
  if (t->numel) memcpy(t->data, v, sizeof(float) * (size_t)t->numel);
  return t;
}
static kiln_tensor *ti64(int rank, const int64_t *d, const int64_t *v) {
  kiln_tensor *t = tn_new(KILN_I64, rank, d);
  if (t->numel) memcpy(t->data, v, sizeof(int64_t) * (size_t)t->numel);
  return t;
}
static kiln_tensor *ti32(int rank, const int64_t *d, const int32_t *v) {
  kiln_tensor *t = tn_new(KILN_I32, rank, d);
  if (t->numel) memcpy(t->data, v, sizeof(int32_t) * (size_t)t->numel);
  return t;
}
#define DIMS(...) ((const int64_t[]){__VA_ARGS__})
#define FV(...) ((const float[]){__VA_ARGS__})
#define IV(...) ((const int64_t[]){__VA_ARGS__})

/* A one-node graph under construction.  Input i is a graph input, or a constant when bit i
 * of const_mask is set; a NULL tensor is an omitted optional input. */
typedef struct one_node {
  kiln_graph *g;
  int node;
  kiln_tensor *in[8]; /* borrowed: the caller's tensors (constants are cloned) */
  int n_in;
  kiln_tensor *out[4];
  int n_out;
  kiln_err e;
} one_node;

static void on_begin(one_node *t, kiln_op op, int opset, kiln_tensor *const *in, int n_in,
                     uint32_t const_mask, int n_out) {
  memset(t, 0, sizeof *t);
  t->g = ir_graph_new();
  t->n_in = n_in;
  t->n_out = n_out;
  kiln_err *e = &t->e;
  ir_set_opset(t->g, "", opset, e);
  int ids[8], outs[4];
  for (int i = 0; i < n_in; i++) {
    char name[16];
    snprintf(name, sizeof name, "in%d", i);
    t->in[i] = in[i];
    ids[i] = -1;
    if (!in[i]) continue;
    if (const_mask & (1u << i)) {
      kiln_tensor *c = NULL;
      kiln_tensor_clone(in[i], &c, e);
      ir_add_const(t->g, name, c, true, &ids[i], e);
      t->in[i] = NULL; /* not fed at run time */
    } else {
      ir_add_value(t->g, name, &ids[i], e);
      kiln_value *v = ir_val(t->g, ids[i]);
      v->dtype = in[i]->dtype;
      v->shape = in[i]->shape;
      v->typed = true;
      ir_add_input(t->g, ids[i], e);
    }
  }
  for (int o = 0; o < n_out; o++) {
    char name[16];
    snprintf(name, sizeof name, "out%d", o);
    ir_add_value(t->g, name, &outs[o], e);
  }
  ir_add_node(t->g, op, "n", ids, n_in, outs, n_out, &t->node, e);
  for (int o = 0; o < n_out; o++) ir_add_output(t->g, outs[o], e);
}

static kiln_node *on_node(one_node *t) { return ir_node(t->g, t->node); }

/* Verifies, infers and runs; returns the first failing code (the message is in t->e). */
static kiln_code on_run(one_node *t) {
  kiln_err *e = &t->e;
  if (e->code) return e->code;
  KILN_TRY(ir_verify(t->g, e));
  KILN_TRY(ir_infer(t->g, NULL, e));
  kiln_tensor *feed[8];
  int nf = 0;
  for (int i = 0; i < t->n_in; i++)
    if (t->in[i]) feed[nf++] = t->in[i];
  kiln_ref_ctx ctx = {.g = t->g};
  return kiln_ref_run(t->g, &ctx, feed, t->out, e);
}

static void on_end(one_node *t) {
  for (int o = 0; o < t->n_out; o++) kiln_tensor_free(t->out[o]);
  ir_graph_free(t->g);
}

/* Checks a result tensor's shape and float contents (|got-want| <= 1e-5 + 1e-5*|want|). */
#define CHECK_TF(t, rank, dims, vals)                                                              \
  do {                                                                                             \
    const kiln_tensor *t_ = (t);                                                                   \
    kiln_shape s_ = kiln_shape_make((rank), (dims));                                               \
    CHECK(t_ != NULL);                                                                             \
    if (!t_) break;                                                                                \
    CHECK(t_->dtype == KILN_F32);                                                                  \
    CHECK(kiln_shape_eq(&t_->shape, &s_));                                                         \
    if (!kiln_shape_eq(&t_->shape, &s_) || t_->dtype != KILN_F32) break;                           \
    for (int64_t i_ = 0; i_ < t_->numel; i_++)                                                     \
      CHECK_CLOSE(((const float *)t_->data)[i_], (vals)[i_], 1e-5, 1e-5);                          \
  } while (0)

/* Same for integer tensors (any int dtype), exact. */
#define CHECK_TI(t, dt, rank, dims, vals)                                                          \
  do {                                                                                             \
    const kiln_tensor *t_ = (t);                                                                   \
    kiln_shape s_ = kiln_shape_make((rank), (dims));                                               \
    CHECK(t_ != NULL);                                                                             \
    if (!t_) break;                                                                                \
    CHECK(t_->dtype == (dt));                                                                      \
    CHECK(kiln_shape_eq(&t_->shape, &s_));                                                         \
    if (!kiln_shape_eq(&t_->shape, &s_) || t_->dtype != (dt)) break;                               \
    for (int64_t i_ = 0; i_ < t_->numel; i_++)                                                     \
      CHECK_MSG(kiln_tensor_get_i(t_, i_) == (vals)[i_], "element %lld: %lld != %lld",             \
                (long long)i_, (long long)kiln_tensor_get_i(t_, i_), (long long)(vals)[i_]);       \
  } while (0)

#endif
