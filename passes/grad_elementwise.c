/* grad_elementwise.c — gradient rules of the elementwise family, composed from
 * forward ops.  Binary ops un-broadcast their input gradients by summation. */
#include "passes/autodiff.h"

/* dx = unbroadcast(d, shape of input i) */
static kiln_code to_input(kiln_grad_ctx *gc, const kiln_node *n, int i, int d, int *dx, kiln_err *e) {
  KILN_TRY(grad_infer_new(gc, e));
  return grad_unbroadcast(gc, d, &grad_val(gc, n->in[i])->shape, dx, e);
}

static kiln_code g_add(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx, const bool *w,
                       kiln_err *e) {
  for (int i = 0; i < 2; i++)
    if (w[i]) KILN_TRY(to_input(gc, n, i, dy[0], &dx[i], e));
  return KILN_OK;
}

static kiln_code g_sub(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx, const bool *w,
                       kiln_err *e) {
  if (w[0]) KILN_TRY(to_input(gc, n, 0, dy[0], &dx[0], e));
  if (w[1]) {
    int neg;
    KILN_TRY(grad_op1(gc, KILN_OP_Neg, (int[]){dy[0]}, 1, &neg, NULL, e));
    KILN_TRY(to_input(gc, n, 1, neg, &dx[1], e));
  }
  return KILN_OK;
}

static kiln_code g_mul(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx, const bool *w,
                       kiln_err *e) {
  for (int i = 0; i < 2; i++)
    if (w[i]) {
      int t;
      KILN_TRY(grad_op1(gc, KILN_OP_Mul, (int[]){dy[0], n->in[1 - i]}, 2, &t, NULL, e));
      KILN_TRY(to_input(gc, n, i, t, &dx[i], e));
    }
  return KILN_OK;
}

/* y = a / b:  da = dy / b;  db = -dy * y / b */
static kiln_code g_div(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx, const bool *w,
                       kiln_err *e) {
  int t;
  if (w[0]) {
    KILN_TRY(grad_op1(gc, KILN_OP_Div, (int[]){dy[0], n->in[1]}, 2, &t, NULL, e));
    KILN_TRY(to_input(gc, n, 0, t, &dx[0], e));
  }
  if (w[1]) {
    int t1, t2, t3;
    KILN_TRY(grad_op1(gc, KILN_OP_Mul, (int[]){dy[0], n->out[0]}, 2, &t1, NULL, e));
    KILN_TRY(grad_op1(gc, KILN_OP_Div, (int[]){t1, n->in[1]}, 2, &t2, NULL, e));
    KILN_TRY(grad_op1(gc, KILN_OP_Neg, (int[]){t2}, 1, &t3, NULL, e));
    KILN_TRY(to_input(gc, n, 1, t3, &dx[1], e));
  }
  return KILN_OK;
}

static kiln_code g_identity(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx, const bool *w,
                            kiln_err *e) {
  dx[0] = dy[0];
  return KILN_OK;
}

static kiln_code g_neg(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx, const bool *w,
                       kiln_err *e) {
  return grad_op1(gc, KILN_OP_Neg, (int[]){dy[0]}, 1, &dx[0], NULL, e);
}

/* relu: dx = dy where x > 0 (y > 0 is the same set), else 0 */
static kiln_code g_relu(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx, const bool *w,
                        kiln_err *e) {
  int zero, pos;
  KILN_TRY(grad_const_f32(gc, 0.0f, &zero, e));
  KILN_TRY(grad_op1(gc, KILN_OP_Greater, (int[]){n->out[0], zero}, 2, &pos, NULL, e));
  return grad_op1(gc, KILN_OP_Where, (int[]){pos, dy[0], zero}, 3, &dx[0], NULL, e);
}

/* sigmoid: dx = dy * y * (1 - y) */
static kiln_code g_sigmoid(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx, const bool *w,
                           kiln_err *e) {
  int one, om, t;
  KILN_TRY(grad_const_f32(gc, 1.0f, &one, e));
  KILN_TRY(grad_op1(gc, KILN_OP_Sub, (int[]){one, n->out[0]}, 2, &om, NULL, e));
  KILN_TRY(grad_op1(gc, KILN_OP_Mul, (int[]){n->out[0], om}, 2, &t, NULL, e));
  return grad_op1(gc, KILN_OP_Mul, (int[]){dy[0], t}, 2, &dx[0], NULL, e);
}

/* tanh: dx = dy * (1 - y^2) */
static kiln_code g_tanh(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx, const bool *w,
                        kiln_err *e) {
  int one, y2, om;
  KILN_TRY(grad_const_f32(gc, 1.0f, &one, e));
  KILN_TRY(grad_op1(gc, KILN_OP_Mul, (int[]){n->out[0], n->out[0]}, 2, &y2, NULL, e));
  KILN_TRY(grad_op1(gc, KILN_OP_Sub, (int[]){one, y2}, 2, &om, NULL, e));
  return grad_op1(gc, KILN_OP_Mul, (int[]){dy[0], om}, 2, &dx[0], NULL, e);
}

/* exp: dx = dy * y */
static kiln_code g_exp(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx, const bool *w,
                       kiln_err *e) {
  return grad_op1(gc, KILN_OP_Mul, (int[]){dy[0], n->out[0]}, 2, &dx[0], NULL, e);
}

/* log: dx = dy / x */
static kiln_code g_log(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx, const bool *w,
                       kiln_err *e) {
  return grad_op1(gc, KILN_OP_Div, (int[]){dy[0], n->in[0]}, 2, &dx[0], NULL, e);
}

/* sqrt: dx = dy / (2 y) */
static kiln_code g_sqrt(kiln_grad_ctx *gc, const kiln_node *n, const int *dy, int *dx, const bool *w,
                        kiln_err *e) {
  int half, t;
  KILN_TRY(grad_const_f32(gc, 0.5f, &half, e));
  KILN_TRY(grad_op1(gc, KILN_OP_Div, (int[]){dy[0], n->out[0]}, 2, &t, NULL, e));
  return grad_op1(gc, KILN_OP_Mul, (int[]){t, half}, 2, &dx[0], NULL, e);
}

void grad_register_elementwise(kiln_grad_fn *table) {
  table[KILN_OP_Add] = g_add;
  table[KILN_OP_Sub] = g_sub;
  table[KILN_OP_Mul] = g_mul;
  table[KILN_OP_Div] = g_div;
  table[KILN_OP_Identity] = g_identity;
  table[KILN_OP_Neg] = g_neg;
  table[KILN_OP_Relu] = g_relu;
  table[KILN_OP_Sigmoid] = g_sigmoid;
  table[KILN_OP_Tanh] = g_tanh;
  table[KILN_OP_Exp] = g_exp;
  table[KILN_OP_Log] = g_log;
  table[KILN_OP_Sqrt] = g_sqrt;
}
