/* test_limits.c — resource limits on untrusted input (tensor bytes, element counts, dims,
 * rank, graph nodes), overflow-checked shape arithmetic in shape inference, the fuzzers'
 * regression inputs (tests/data/regress/), and a failing-allocator sweep over loading,
 * inferring, running (reference) and compiling (JIT) a small model. */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/image.h"
#include "frontend/onnx.h"
#include "include/kiln.h"
#include "one_node.h"
#include "onnx/onnx.pb-c.h"

/* The fuzz targets themselves, so every regression input replays exactly the path
 * the fuzzer took (their entry points renamed). */
#define LLVMFuzzerTestOneInput fuzz_onnx_one
#include "../fuzz/fuzz_onnx.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_tensor_pb_one
#include "../fuzz/fuzz_tensor_pb.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_npy_one
#include "../fuzz/fuzz_npy.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_infer_one
#include "../fuzz/fuzz_infer.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_image_one
#include "../fuzz/fuzz_image.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_dataset_one
#include "../fuzz/fuzz_dataset.c"
#undef LLVMFuzzerTestOneInput

static char tmpdir[64];
/* one_node.h helpers this file does not use */
static void __attribute__((unused)) unused_helpers(void) { (void)on_run, (void)on_node, (void)ti32; }

static bool has(const kiln_err *e, const char *s) { return strstr(e->msg, s) != NULL; }

#define T40 ((int64_t)1 << 40)
#define T33 ((int64_t)1 << 33)

/* Builds a one-node graph (inputs: graph inputs, or constants per const_mask), verifies
 * it and runs shape inference with constant folding; returns the code, message in *e. */
static kiln_code infer_one(kiln_op op, int opset, kiln_tensor *const *in, int n_in,
                           uint32_t const_mask, int n_out, kiln_err *e) {
  one_node t;
  on_begin(&t, op, opset, in, n_in, const_mask, n_out);
  kiln_code rc = t.e.code;
  if (!rc) rc = ir_verify(t.g, &t.e);
  kiln_evaluator ev = kiln_ref_evaluator();
  if (!rc) rc = ir_infer(t.g, &ev, &t.e);
  *e = t.e;
  on_end(&t);
  return rc;
}

/* A graph input's declared type without data: a tensor header over no memory. */
static kiln_tensor *decl(kiln_dtype dt, int rank, const int64_t *d) {
  kiln_tensor *t = calloc(1, sizeof *t);
  t->dtype = dt;
  t->shape = kiln_shape_make(rank, d);
  t->borrowed = true;
  return t;
}

#define EXPECT_LIMIT(call, e, ...)                                                                 \
  do {                                                                                             \
    kiln_code rc_ = (call);                                                                        \
    CHECK_MSG(rc_ == KILN_ERR_LIMIT, "code %d (%s): %s", rc_, kiln_code_name(rc_), (e)->msg);      \
    const char *want_[] = {__VA_ARGS__};                                                           \
    for (size_t i_ = 0; i_ < sizeof want_ / sizeof *want_; i_++)                                   \
      CHECK_MSG(has(e, want_[i_]), "message '%s' lacks '%s'", (e)->msg, want_[i_]);               \
  } while (0)

/* ---- checked arithmetic ---- */

static void test_checked_arithmetic(void) {
  int64_t r;
  CHECK(!kiln_mul_ok(T40, T40, &r));
  CHECK(kiln_mul_ok(T40, 1 << 20, &r) && r == T40 << 20);
  CHECK(!kiln_mul_ok(INT64_MAX, 2, &r));
  CHECK(!kiln_mul_ok(-1, 2, &r));
  CHECK(!kiln_add_ok(INT64_MAX, 1, &r));
  CHECK(kiln_add_ok(1, 2, &r) && r == 3);
  kiln_shape s = kiln_shape_make(2, IV(T40, T40));
  int64_t n;
  CHECK(!kiln_shape_numel(&s, &n));
  s = kiln_shape_make(1, IV(T40 + 1));
  CHECK(!kiln_shape_numel(&s, &n));
  s = kiln_shape_make(2, IV(-1, 3));
  CHECK(!kiln_shape_numel(&s, &n));
  /* an empty tensor whose other dims multiply past every limit: refused too, so any
   * partial product of a valid shape's dims fits in int64 */
  s = kiln_shape_make(3, IV(0, T40, T40));
  CHECK(!kiln_shape_numel(&s, &n));
  s = kiln_shape_make(3, IV(0, 3, 5));
  CHECK(kiln_shape_numel(&s, &n) && n == 0);
  s = kiln_shape_make(9, IV(1, 1, 1, 1, 1, 1, 1, 1, 1));
  CHECK(!kiln_shape_numel(&s, &n));
  kiln_err e = {0};
  int64_t bytes;
  s = kiln_shape_make(2, IV(1 << 20, 1 << 13));
  EXPECT_LIMIT(kiln_bytes_for(KILN_F32, &s, &bytes, &e), &e, "[1048576,8192]",
               "limit of 2147483648 elements");
  kiln_err_clear(&e);
  s = kiln_shape_make(2, IV(1 << 20, 1 << 11));
  CHECK_OK(kiln_bytes_for(KILN_F32, &s, &bytes, &e), &e);
  CHECK(bytes == (int64_t)1 << 33);
  s = kiln_shape_make(1, IV(KILN_MAX_ELEMS));
  CHECK_OK(kiln_bytes_for(KILN_I64, &s, &bytes, &e), &e); /* exactly the byte limit */
  CHECK(bytes == KILN_MAX_TENSOR_BYTES);
  s.d[0]++;
  EXPECT_LIMIT(kiln_bytes_for(KILN_BOOL, &s, &bytes, &e), &e, "2147483648 elements");
  kiln_tensor *t = NULL;
  kiln_err_clear(&e);
  EXPECT_LIMIT(kiln_tensor_new(KILN_I64, &s, &t, &e), &e, "elements");
  CHECK(t == NULL);
  void *arr = NULL;
  int64_t cap = 0;
  kiln_err_clear(&e);
  EXPECT_LIMIT(kiln_grow(&arr, &cap, INT64_MAX / 2, 16, &e), &e, "too large");
  kiln_free(arr);
}

/* Float to integer reads of values from files saturate instead of overflowing. */
static void test_saturating_reads(void) {
  kiln_tensor *f = tf(1, DIMS(5), FV(4e35f, -4e35f, NAN, 3.9f, -3.9f));
  CHECK(kiln_tensor_get_i(f, 0) == INT64_MAX && kiln_tensor_get_i(f, 1) == INT64_MIN);
  CHECK(kiln_tensor_get_i(f, 2) == 0 && kiln_tensor_get_i(f, 3) == 3 && kiln_tensor_get_i(f, 4) == -3);
  kiln_tensor *i32 = tn_new(KILN_I32, 1, DIMS(3)), *i64 = tn_new(KILN_I64, 1, DIMS(3));
  double v[3] = {1e30, -1e30, NAN};
  for (int k = 0; k < 3; k++) kiln_tensor_set_f(i32, k, v[k]), kiln_tensor_set_f(i64, k, v[k]);
  CHECK(kiln_tensor_get_i(i32, 0) == INT32_MAX && kiln_tensor_get_i(i32, 1) == INT32_MIN);
  CHECK(kiln_tensor_get_i(i64, 0) == INT64_MAX && kiln_tensor_get_i(i64, 1) == INT64_MIN);
  CHECK(kiln_tensor_get_i(i32, 2) == 0 && kiln_tensor_get_i(i64, 2) == 0);
  kiln_tensor_free(f);
  kiln_tensor_free(i32);
  kiln_tensor_free(i64);
}

/* ---- shape inference: outputs whose size overflows or passes the limits ---- */

static void test_infer_limits(void) {
  kiln_err e;
  kiln_tensor *x = decl(KILN_F32, 1, IV(1));
  kiln_tensor *big3 = ti64(1, DIMS(3), IV(1 << 21, 1 << 21, 1 << 21));

  /* Reshape: the requested shape's product overflows the limit */
  kiln_tensor *xs = decl(KILN_F32, 1, IV(8));
  EXPECT_LIMIT(infer_one(KILN_OP_Reshape, 13, (kiln_tensor *[]){xs, big3}, 2, 2, 1, &e), &e,
               "shape 'in1'", "too large");
  /* Expand to a huge shape */
  EXPECT_LIMIT(infer_one(KILN_OP_Expand, 13, (kiln_tensor *[]){x, big3}, 2, 2, 1, &e), &e,
               "output 'out0'", "limit of 2147483648 elements");
  /* ConstantOfShape, and one whose dims overflow int64 outright */
  EXPECT_LIMIT(infer_one(KILN_OP_ConstantOfShape, 13, (kiln_tensor *[]){big3}, 1, 1, 1, &e), &e,
               "output 'out0'");
  kiln_tensor *huge2 = ti64(1, DIMS(2), IV(INT64_MAX / 2, 4));
  EXPECT_LIMIT(infer_one(KILN_OP_ConstantOfShape, 13, (kiln_tensor *[]){huge2}, 1, 1, 1, &e), &e,
               "output 'out0'");
  /* Resize to sizes past the limit; by a scale that overflows */
  kiln_tensor *img = decl(KILN_F32, 4, IV(1, 1, 4, 4));
  kiln_tensor *sizes = ti64(1, DIMS(4), IV(1, 1, 1 << 20, 1 << 20));
  EXPECT_LIMIT(infer_one(KILN_OP_Resize, 13, (kiln_tensor *[]){img, NULL, NULL, sizes}, 4, 8, 1, &e),
               &e, "output 'out0'");
  kiln_tensor *scales = tf(1, DIMS(4), FV(1, 1, 1e30f, 1e30f));
  EXPECT_LIMIT(infer_one(KILN_OP_Resize, 13, (kiln_tensor *[]){img, NULL, scales}, 3, 4, 1, &e),
               &e, "'in2'");
  kiln_tensor *sizes_ovf = ti64(1, DIMS(4), IV(1, 1, INT64_MAX, 2));
  EXPECT_LIMIT(infer_one(KILN_OP_Resize, 13, (kiln_tensor *[]){img, NULL, NULL, sizes_ovf}, 4, 8, 1,
                         &e),
               &e, "'in3'");
  /* Concat of dims whose sum passes the limit */
  kiln_tensor *b8g = decl(KILN_F32, 1, IV(1 << 30));
  {
    one_node t;
    on_begin(&t, KILN_OP_Concat, 13, (kiln_tensor *[]){b8g, b8g, b8g}, 3, 0, 1);
    ir_set_attr_int(t.g, t.node, "axis", 0, &t.e);
    e = t.e;
    EXPECT_LIMIT(t.e.code ? t.e.code : ir_infer(t.g, NULL, &e), &e, "output 'out0'");
    on_end(&t);
  }
  /* Pad with huge pads, and with pads that would overflow int64 */
  kiln_tensor *pads = ti64(1, DIMS(2), IV(0, T40));
  EXPECT_LIMIT(infer_one(KILN_OP_Pad, 13, (kiln_tensor *[]){x, pads}, 2, 2, 1, &e), &e, "pads",
               "too large");
  kiln_tensor *pads2 = ti64(1, DIMS(4), IV(0, 0, INT64_MAX, INT64_MAX));
  kiln_tensor *x2 = decl(KILN_F32, 2, IV(2, 2));
  kiln_code rc = infer_one(KILN_OP_Pad, 13, (kiln_tensor *[]){x2, pads2}, 2, 2, 1, &e);
  CHECK_MSG(rc == KILN_ERR_LIMIT || rc == KILN_ERR_SHAPE, "%d %s", rc, e.msg);
  CHECK(has(&e, "pads"));
  /* Gather whose indices multiply the data's dims past the limit */
  kiln_tensor *data = decl(KILN_F32, 2, IV(2, 1 << 30));
  kiln_tensor *idx = decl(KILN_I64, 2, IV(1 << 10, 1 << 10));
  EXPECT_LIMIT(infer_one(KILN_OP_Gather, 13, (kiln_tensor *[]){data, idx}, 2, 0, 1, &e), &e,
               "output 'out0'");
  /* MatMul [2^20,1] x [1,2^20]: 2^40 elements */
  kiln_tensor *a = decl(KILN_F32, 2, IV(1 << 20, 1)), *b = decl(KILN_F32, 2, IV(1, 1 << 20));
  EXPECT_LIMIT(infer_one(KILN_OP_MatMul, 13, (kiln_tensor *[]){a, b}, 2, 0, 1, &e), &e,
               "output 'out0'");
  /* Broadcasting two large operands */
  kiln_tensor *c1 = decl(KILN_F32, 2, IV(1 << 20, 1)), *c2 = decl(KILN_F32, 2, IV(1, 1 << 20));
  EXPECT_LIMIT(infer_one(KILN_OP_Add, 13, (kiln_tensor *[]){c1, c2}, 2, 0, 1, &e), &e,
               "output 'out0'");
  /* ConvTranspose with a huge stride */
  kiln_tensor *cx = decl(KILN_F32, 4, IV(1, 1, 1 << 12, 1 << 12));
  kiln_tensor *cw = decl(KILN_F32, 4, IV(1, 1, 3, 3));
  {
    one_node t;
    on_begin(&t, KILN_OP_ConvTranspose, 13, (kiln_tensor *[]){cx, cw}, 2, 0, 1);
    ir_set_attr_ints(t.g, t.node, "strides", IV(1 << 20, 1 << 20), 2, &t.e);
    kiln_code r = t.e.code ? t.e.code : ir_infer(t.g, NULL, &t.e);
    CHECK_MSG(r == KILN_ERR_LIMIT, "%d %s", r, t.e.msg);
    on_end(&t);
  }
  /* Pools whose windows (from attributes, not weights) have billions of taps: a 1-D
   * kernel of 2^30 over one element with pads to match, and a 64^3 3-D window */
  {
    kiln_tensor *px = decl(KILN_F32, 3, IV(1, 1, 1));
    one_node t;
    on_begin(&t, KILN_OP_MaxPool, 13, (kiln_tensor *[]){px}, 1, 0, 1);
    ir_set_attr_ints(t.g, t.node, "kernel_shape", IV(1 << 30), 1, &t.e);
    ir_set_attr_ints(t.g, t.node, "pads", IV((1 << 30) - 1, (1 << 30) - 1), 2, &t.e);
    ir_set_attr_ints(t.g, t.node, "strides", IV(1 << 30), 1, &t.e);
    e = t.e;
    EXPECT_LIMIT(e.code ? e.code : ir_infer(t.g, NULL, &e), &e, "kernel_shape", "65536 taps");
    on_end(&t);
    kiln_tensor *p3 = decl(KILN_F32, 5, IV(1, 1, 64, 64, 64));
    on_begin(&t, KILN_OP_AveragePool, 13, (kiln_tensor *[]){p3}, 1, 0, 1);
    ir_set_attr_ints(t.g, t.node, "kernel_shape", IV(64, 64, 64), 3, &t.e);
    e = t.e;
    EXPECT_LIMIT(e.code ? e.code : ir_infer(t.g, NULL, &e), &e, "kernel_shape");
    on_end(&t);
    /* 256x256 is within the limit */
    kiln_tensor *p2 = decl(KILN_F32, 4, IV(1, 1, 256, 256));
    on_begin(&t, KILN_OP_AveragePool, 13, (kiln_tensor *[]){p2}, 1, 0, 1);
    ir_set_attr_ints(t.g, t.node, "kernel_shape", IV(256, 256), 2, &t.e);
    e = t.e;
    CHECK_OK(e.code ? e.code : ir_infer(t.g, NULL, &e), &e);
    on_end(&t);
    free(px);
    free(p3);
    free(p2);
  }
  /* Unsqueeze past the maximum rank */
  kiln_tensor *r8 = decl(KILN_F32, 8, IV(1, 1, 1, 1, 1, 1, 1, 1));
  kiln_tensor *ax = ti64(1, DIMS(1), IV(0));
  EXPECT_LIMIT(infer_one(KILN_OP_Unsqueeze, 13, (kiln_tensor *[]){r8, ax}, 2, 2, 1, &e), &e,
               "rank 9");
  /* An empty tensor whose other dims multiply past the limit is refused where it is
   * declared, so Flatten (or any stride computation) never multiplies them */
  kiln_tensor *f = decl(KILN_F32, 3, IV(0, 1 << 20, 1 << 20));
  EXPECT_LIMIT(infer_one(KILN_OP_Flatten, 13, (kiln_tensor *[]){f}, 1, 0, 1, &e), &e,
               "graph input 'in0'", "[0,1048576,1048576]");
  /* A graph input past the element limit */
  kiln_tensor *gi = decl(KILN_BOOL, 1, IV(((int64_t)1 << 31) + 1));
  EXPECT_LIMIT(infer_one(KILN_OP_Not, 13, (kiln_tensor *[]){gi}, 1, 0, 1, &e), &e,
               "graph input 'in0'", "2147483648 elements");
  free(gi);

  kiln_tensor *all[] = {x, xs, img, b8g, x2, data, idx, a, b, c1, c2, cx, cw, r8, f};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) free(all[i]);
  kiln_tensor *owned[] = {big3, huge2, sizes, scales, sizes_ovf, pads, pads2, ax};
  for (size_t i = 0; i < sizeof owned / sizeof *owned; i++) kiln_tensor_free(owned[i]);
}

/* ---- the loader: declared types, initializers, rank, node count ---- */

typedef struct mp {
  Onnx__ModelProto m;
  Onnx__GraphProto g;
  Onnx__OperatorSetIdProto os, *osp[1];
  Onnx__ValueInfoProto vin, vout, *ins[1], *outs[1];
  Onnx__TypeProto tin, tout;
  Onnx__TypeProto__Tensor ttin, ttout;
  Onnx__TensorShapeProto shin;
  Onnx__TensorShapeProto__Dimension dims[16], *dimp[16];
  Onnx__NodeProto node, **nodes;
  char *nin[1], *nout[1];
  Onnx__TensorProto init, *inits[1];
  int64_t init_dims[16];
} mp;

/* x (float, given dims) -> Relu -> y; no initializer until one is added. */
static void mp_init(mp *p, int rank, const int64_t *d) {
  memset(p, 0, sizeof *p);
  onnx__model_proto__init(&p->m);
  onnx__graph_proto__init(&p->g);
  onnx__operator_set_id_proto__init(&p->os);
  p->os.has_version = 1;
  p->os.version = 13;
  p->osp[0] = &p->os;
  p->m.has_ir_version = 1;
  p->m.ir_version = 8;
  p->m.n_opset_import = 1;
  p->m.opset_import = p->osp;
  p->m.graph = &p->g;
  onnx__value_info_proto__init(&p->vin);
  onnx__type_proto__init(&p->tin);
  onnx__type_proto__tensor__init(&p->ttin);
  onnx__tensor_shape_proto__init(&p->shin);
  p->vin.name = "x";
  p->vin.type = &p->tin;
  p->tin.value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
  p->tin.tensor_type = &p->ttin;
  p->ttin.has_elem_type = 1;
  p->ttin.elem_type = 1;
  p->ttin.shape = &p->shin;
  p->shin.n_dim = (size_t)rank;
  p->shin.dim = p->dimp;
  for (int i = 0; i < rank; i++) {
    onnx__tensor_shape_proto__dimension__init(&p->dims[i]);
    p->dims[i].value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
    p->dims[i].dim_value = d[i];
    p->dimp[i] = &p->dims[i];
  }
  onnx__value_info_proto__init(&p->vout);
  p->vout.name = "y";
  p->ins[0] = &p->vin;
  p->outs[0] = &p->vout;
  p->g.name = "g";
  p->g.n_input = 1;
  p->g.input = p->ins;
  p->g.n_output = 1;
  p->g.output = p->outs;
  onnx__node_proto__init(&p->node);
  p->node.op_type = "Relu";
  p->nin[0] = "x";
  p->nout[0] = "y";
  p->node.n_input = 1;
  p->node.input = p->nin;
  p->node.n_output = 1;
  p->node.output = p->nout;
  p->nodes = malloc(sizeof *p->nodes);
  p->nodes[0] = &p->node;
  p->g.n_node = 1;
  p->g.node = p->nodes;
}

static kiln_code mp_load(mp *p, kiln_graph **g, kiln_err *e) {
  size_t len = protobuf_c_message_get_packed_size(&p->m.base);
  uint8_t *buf = malloc(len ? len : 1);
  protobuf_c_message_pack(&p->m.base, buf);
  kiln_code rc = kiln_onnx_load_buffer(buf, len, NULL, "limits.onnx", g, e);
  free(buf);
  return rc;
}

/* Loads and infers; returns the first failure. */
static kiln_code mp_load_infer(mp *p, kiln_err *e) {
  kiln_graph *g = NULL;
  kiln_code rc = mp_load(p, &g, e);
  kiln_evaluator ev = kiln_ref_evaluator();
  if (!rc) rc = ir_infer(g, &ev, e);
  ir_graph_free(g);
  return rc;
}

static void test_loader_limits(void) {
  mp p;
  kiln_err e = {0};
  /* a graph input declared with 2^80 elements */
  mp_init(&p, 2, IV(T40, T40));
  EXPECT_LIMIT(mp_load_infer(&p, &e), &e, "graph input 'x'");
  free(p.nodes);
  /* a dimension past KILN_MAX_DIM */
  kiln_err_clear(&e);
  mp_init(&p, 1, IV(T40 + 1));
  kiln_code rc = mp_load_infer(&p, &e);
  CHECK_MSG(rc == KILN_ERR_LIMIT || rc == KILN_ERR_INVALID, "%d %s", rc, e.msg);
  CHECK(has(&e, "'x'"));
  free(p.nodes);
  /* rank 9 */
  kiln_err_clear(&e);
  mp_init(&p, 9, IV(1, 1, 1, 1, 1, 1, 1, 1, 1));
  EXPECT_LIMIT(mp_load_infer(&p, &e), &e, "'x'", "rank 9");
  free(p.nodes);
  /* an initializer whose dims claim 2^37 bytes (and hold none) */
  kiln_err_clear(&e);
  mp_init(&p, 1, IV(4));
  onnx__tensor_proto__init(&p.init);
  p.init.name = "w";
  p.init.has_data_type = 1;
  p.init.data_type = 1;
  p.init_dims[0] = (int64_t)1 << 31;
  p.init_dims[1] = 16;
  p.init.n_dims = 2;
  p.init.dims = p.init_dims;
  p.inits[0] = &p.init;
  p.g.n_initializer = 1;
  p.g.initializer = p.inits;
  EXPECT_LIMIT(mp_load_infer(&p, &e), &e, "initializer 'w'", "2147483648,16");
  /* dims whose product overflows int64 */
  kiln_err_clear(&e);
  p.init_dims[0] = INT64_MAX / 4;
  p.init_dims[1] = 16;
  EXPECT_LIMIT(mp_load_infer(&p, &e), &e, "initializer 'w'");
  /* an initializer of rank 9 */
  kiln_err_clear(&e);
  p.init.n_dims = 9;
  for (int i = 0; i < 9; i++) p.init_dims[i] = 1;
  EXPECT_LIMIT(mp_load_infer(&p, &e), &e, "initializer 'w'", "rank 9");
  free(p.nodes);
  /* more nodes than KILN_MAX_NODES: refused before any is built */
  kiln_err_clear(&e);
  mp_init(&p, 1, IV(4));
  free(p.nodes);
  p.g.n_node = (size_t)KILN_MAX_NODES + 1;
  p.nodes = malloc(sizeof *p.nodes * p.g.n_node);
  for (size_t i = 0; i < p.g.n_node; i++) p.nodes[i] = &p.node;
  p.g.node = p.nodes;
  EXPECT_LIMIT(mp_load_infer(&p, &e), &e, "1000001 nodes");
  free(p.nodes);
  /* and through the IR builder */
  kiln_graph *g = ir_graph_new();
  int xv, yv, node;
  kiln_err_clear(&e);
  ir_add_value(g, "x", &xv, &e);
  ir_add_value(g, "y", &yv, &e);
  g->n_nodes = KILN_MAX_NODES; /* pretend: the check comes before any array growth */
  EXPECT_LIMIT(ir_add_node(g, KILN_OP_Relu, "r", &xv, 1, &yv, 1, &node, &e), &e, "nodes");
  g->n_nodes = 0;
  ir_graph_free(g);
}

/* ---- tensor files ---- */

static void test_tensor_file_limits(void) {
  kiln_err e = {0};
  kiln_tensor *t = NULL;
  /* .npy: a shape of 2^80 elements; one of 2^36 bytes with 16 bytes of data */
  const char *hdrs[] = {"{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 1099511627776), }",
                        "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 16), }",
                        "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }",
                        "{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }"};
  for (size_t k = 0; k < sizeof hdrs / sizeof *hdrs; k++) {
    uint8_t buf[256] = "\x93NUMPY\x01\x00";
    size_t hl = strlen(hdrs[k]);
    memcpy(buf + 10, hdrs[k], hl);
    buf[10 + hl] = '\n';
    buf[8] = (uint8_t)(hl + 1);
    memset(buf + 11 + hl, 0, 16);
    kiln_err_clear(&e);
    EXPECT_LIMIT(kiln_tensor_load_npy_buffer(buf, 11 + hl + 16, "big.npy", &t, &e), &e, "big.npy");
    CHECK(t == NULL);
  }
  /* TensorProto: dims of 2^40 x 2^40, no data */
  Onnx__TensorProto tp = ONNX__TENSOR_PROTO__INIT;
  int64_t d[2] = {T40, T40};
  tp.n_dims = 2;
  tp.dims = d;
  tp.has_data_type = 1;
  tp.data_type = 1;
  tp.name = "huge";
  uint8_t buf[128];
  size_t n = protobuf_c_message_pack(&tp.base, buf);
  kiln_err_clear(&e);
  char *name = NULL;
  EXPECT_LIMIT(kiln_tensor_load_pb_buffer(buf, n, "big.pb", &t, &name, &e), &e, "big.pb",
               "tensor 'huge'");
  CHECK(t == NULL && name == NULL);
}

/* ---- images: headers claiming more pixels than the limits ---- */

static uint32_t crc32_of(const uint8_t *p, size_t n) {
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; i++) {
    c ^= p[i];
    for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
  }
  return ~c;
}

static void be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

static void test_image_limits(void) {
  struct { uint32_t w, h; } cases[] = {{KILN_IMAGE_MAX_SIDE + 1, 1}, {1, 0x7fffffffu}, {16384, 16384 + 1}};
  for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
    uint8_t png[64] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R'};
    be32(png + 16, cases[k].w);
    be32(png + 20, cases[k].h);
    png[24] = 8, png[25] = 2; /* 8-bit RGB */
    be32(png + 29, crc32_of(png + 12, 17));
    char path[128];
    snprintf(path, sizeof path, "%s/big%zu.png", tmpdir, k);
    FILE *f = fopen(path, "wb");
    fwrite(png, 1, 33, f);
    fclose(f);
    kiln_err e = {0};
    int w, h;
    kiln_code rc = kiln_image_info(path, &w, &h, &e);
    CHECK_MSG(rc != KILN_OK && has(&e, path), "%zu: %d %s", k, rc, e.msg);
    kiln_image im = {0};
    kiln_err_clear(&e);
    rc = kiln_image_read(path, 3, &im, &e);
    CHECK_MSG(rc != KILN_OK && has(&e, path) && im.px == NULL, "%zu: %d %s", k, rc, e.msg);
    unlink(path);
  }
}

/* ---- regression inputs found by the fuzzers ---- */

static void test_regressions(void) {
  const char *dir = KILN_SOURCE_DIR "/tests/data/regress";
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *de;
  int n = 0;
  while ((de = readdir(d))) {
    if (de->d_name[0] == '.' || strstr(de->d_name, ".txt")) continue;
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
    size_t len = 0;
    uint8_t *buf = NULL;
    kiln_err e = {0};
    if (kiln_read_file(path, 1 << 26, &buf, &len, &e)) {
      CHECK_MSG(0, "%s", e.msg);
      continue;
    }
    /* the file name's prefix says which fuzz target found it; a crash aborts here */
    const char *nm = de->d_name;
    fprintf(stderr, "regress: %s\n", nm);
    if (!strncmp(nm, "onnx-", 5)) fuzz_onnx_one(buf, len);
    else if (!strncmp(nm, "infer-", 6)) fuzz_infer_one(buf, len);
    else if (!strncmp(nm, "pb-", 3)) fuzz_tensor_pb_one(buf, len);
    else if (!strncmp(nm, "npy-", 4)) fuzz_npy_one(buf, len);
    else if (!strncmp(nm, "image-", 6)) fuzz_image_one(buf, len);
    else if (!strncmp(nm, "dataset-", 8)) fuzz_dataset_one(buf, len);
    else CHECK_MSG(0, "%s: unknown prefix (onnx-, infer-, pb-, npy-, image-, dataset-)", nm);
    kiln_free(buf);
    n++;
  }
  closedir(d);
  CHECK(n > 0);
  unlink(tmp_path()); /* fuzz_image's scratch file and fuzz_dataset's folder */
  char cmd[400];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", fuzz_dir());
  if (system(cmd)) fprintf(stderr, "could not remove %s\n", fuzz_dir());
}

/* ---- failing allocator over load, infer, reference run, JIT compile and run ---- */

/* x[1,2,6,6] -> Conv(3x3, pads 1) -> Relu -> MaxPool 2x2 -> Reshape (shape from
 * Shape->Gather->Concat, folded) -> Gemm -> Softmax: constants, shape chains, and the
 * common kernels, in few nodes. */
static void write_small_model(const char *path) {
  kiln_err e = {0};
  kiln_graph *g = ir_graph_new();
  ir_set_opset(g, "", 13, &e);
  int x, w, b, c, r, p, sh, i0, g0, m1, cat, rs, fw, fb, fc, y;
  ir_add_value(g, "x", &x, &e);
  kiln_value *xv = ir_val(g, x);
  xv->dtype = KILN_F32;
  xv->shape = kiln_shape_make(4, IV(1, 2, 6, 6));
  xv->typed = true;
  ir_add_input(g, x, &e);
  kiln_tensor *wt = tn_new(KILN_F32, 4, IV(3, 2, 3, 3)), *bt = tn_new(KILN_F32, 1, IV(3));
  for (int64_t i = 0; i < wt->numel; i++) ((float *)wt->data)[i] = (float)((i * 7) % 11 - 5) / 10;
  for (int64_t i = 0; i < bt->numel; i++) ((float *)bt->data)[i] = (float)i / 4;
  ir_add_const(g, "w", wt, true, &w, &e);
  ir_add_const(g, "b", bt, true, &b, &e);
  ir_add_const(g, "i0", ti64(1, DIMS(1), IV(0)), false, &i0, &e);
  ir_add_const(g, "m1", ti64(1, DIMS(1), IV(-1)), false, &m1, &e);
  kiln_tensor *fwt = tn_new(KILN_F32, 2, IV(27, 4)), *fbt = tn_new(KILN_F32, 1, IV(4));
  for (int64_t i = 0; i < fwt->numel; i++) ((float *)fwt->data)[i] = (float)((i * 5) % 13 - 6) / 20;
  ir_add_const(g, "fw", fwt, true, &fw, &e);
  ir_add_const(g, "fb", fbt, true, &fb, &e);
  const char *names[] = {"c", "r", "p", "sh", "g0", "cat", "rs", "fc", "y"};
  int *ids[] = {&c, &r, &p, &sh, &g0, &cat, &rs, &fc, &y};
  for (int i = 0; i < 9; i++) ir_add_value(g, names[i], ids[i], &e);
  int nd;
  ir_add_node(g, KILN_OP_Conv, "conv", (int[]){x, w, b}, 3, &c, 1, &nd, &e);
  ir_set_attr_ints(g, nd, "pads", IV(1, 1, 1, 1), 4, &e);
  ir_add_node(g, KILN_OP_Relu, "relu", &c, 1, &r, 1, &nd, &e);
  ir_add_node(g, KILN_OP_MaxPool, "pool", &r, 1, &p, 1, &nd, &e);
  ir_set_attr_ints(g, nd, "kernel_shape", IV(2, 2), 2, &e);
  ir_set_attr_ints(g, nd, "strides", IV(2, 2), 2, &e);
  ir_add_node(g, KILN_OP_Shape, "shape", &p, 1, &sh, 1, &nd, &e);
  ir_add_node(g, KILN_OP_Gather, "gather", (int[]){sh, i0}, 2, &g0, 1, &nd, &e);
  ir_add_node(g, KILN_OP_Concat, "concat", (int[]){g0, m1}, 2, &cat, 1, &nd, &e);
  ir_set_attr_int(g, nd, "axis", 0, &e);
  ir_add_node(g, KILN_OP_Reshape, "reshape", (int[]){p, cat}, 2, &rs, 1, &nd, &e);
  ir_add_node(g, KILN_OP_Gemm, "fc", (int[]){rs, fw, fb}, 3, &fc, 1, &nd, &e);
  ir_add_node(g, KILN_OP_Softmax, "softmax", &fc, 1, &y, 1, &nd, &e);
  ir_add_output(g, y, &e);
  CHECK_OK(e.code, &e);
  CHECK_OK(ir_toposort(g, &e), &e);
  CHECK_OK(kiln_onnx_save(g, path, &e), &e);
  ir_graph_free(g);
}

typedef struct sweep_stats {
  long points;  /* allocation indices tried */
  long nomem;   /* of which failed with KILN_ERR_NOMEM */
} sweep_stats;

/* One pass of load -> session (backend) -> run with the k-th allocation failing.
 * Returns the first failure; anything but KILN_OK or KILN_ERR_NOMEM is a test failure. */
static kiln_code pipeline_once(const char *path, kiln_backend backend, const char *cache,
                               long k, kiln_err *e) {
  kiln_model *m = NULL;
  kiln_session *s = NULL;
  kiln_tensor *in = NULL, *out[1] = {NULL};
  kiln_code rc = kiln_tensor_new(KILN_F32, &(kiln_shape){.rank = 4, .d = {1, 2, 6, 6}}, &in, e);
  if (rc) return rc;
  for (int64_t i = 0; i < in->numel; i++) ((float *)in->data)[i] = (float)(i % 9) - 4;
  kiln_alloc_fail_after(k);
  rc = kiln_model_load(path, NULL, &m, e);
  kiln_options o = kiln_options_default();
  o.backend = backend;
  o.threads = 1;
  o.cache_dir = cache;
  if (!rc) rc = kiln_session_create(m, &o, &s, e);
  if (!rc) rc = kiln_session_run(s, &in, out, e);
  kiln_alloc_fail_after(-1);
  if (!rc) { /* a successful run computes the right thing */
    float sum = 0;
    for (int64_t i = 0; i < out[0]->numel; i++) sum += ((float *)out[0]->data)[i];
    CHECK_CLOSE(sum, 1.0, 1e-5, 1e-5);
  }
  kiln_tensor_free(out[0]);
  kiln_session_free(s);
  kiln_model_free(m);
  kiln_tensor_free(in);
  return rc;
}

/* Fails allocation k for k = 0, 1, ... (every `stride`-th past `dense`) until the
 * whole pipeline succeeds. */
static void sweep(const char *what, const char *path, kiln_backend backend, const char *cache,
                  long dense, long stride, sweep_stats *st) {
  memset(st, 0, sizeof *st);
  long k;
  for (k = 0; k < 2000000; k = k < dense ? k + 1 : k + stride) {
    kiln_err e = {0};
    kiln_code rc = pipeline_once(path, backend, cache, k, &e);
    st->points++;
    if (rc == KILN_OK) break;
    CHECK_MSG(rc == KILN_ERR_NOMEM, "%s: allocation %ld: code %d (%s) '%s'", what, k, rc,
              kiln_code_name(rc), e.msg);
    CHECK_MSG(e.msg[0], "%s: allocation %ld: no message", what, k);
    if (rc == KILN_ERR_NOMEM) st->nomem++;
    if (rc != KILN_ERR_NOMEM) break;
  }
  printf("failing allocator, %s: %ld points tried up to allocation %ld, all out-of-memory errors\n",
         what, st->points, k);
}

static void test_failing_allocator(void) {
  char path[128], cache[128];
  snprintf(path, sizeof path, "%s/small.onnx", tmpdir);
  snprintf(cache, sizeof cache, "%s/cache", tmpdir);
  write_small_model(path);
  sweep_stats st;
  sweep("reference", path, KILN_BACKEND_REF, "", 1000000, 1, &st);
  CHECK(st.nomem > 100);
  /* JIT: every allocation with a warm kernel cache (cheap), then compiling from scratch
   * at every point up to 400 and every 7th after (each point compiles the model) */
  kiln_err e = {0};
  CHECK_OK(pipeline_once(path, KILN_BACKEND_JIT, cache, -1, &e), &e);
  sweep("JIT, cached kernels", path, KILN_BACKEND_JIT, cache, 1000000, 1, &st);
  CHECK(st.nomem > 100);
  const char *stride = getenv("KILN_ALLOC_SWEEP_STRIDE");
  sweep("JIT, compiling", path, KILN_BACKEND_JIT, "", 400, stride ? atol(stride) : 7, &st);
  CHECK(st.nomem > 100);
}

int main(void) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/kiln_limits_XXXXXX");
  if (!mkdtemp(tmpdir)) return 1;
  RUN(test_checked_arithmetic);
  RUN(test_saturating_reads);
  RUN(test_infer_limits);
  RUN(test_loader_limits);
  RUN(test_tensor_file_limits);
  RUN(test_image_limits);
  RUN(test_regressions);
  RUN(test_failing_allocator);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
  if (system(cmd)) fprintf(stderr, "could not remove %s\n", tmpdir);
  TEST_MAIN_END();
}
