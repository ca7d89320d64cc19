/* resnet.c — the study's network as a kiln_graph: torchvision's ResNet-18/34/50
 * trunk (F-Net), a classification head (C-Net) and the saliency prediction net (SPN),
 * with seeded, reproducible initialization and --init-from by initializer name. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "models/models.h"

/* ---- options ---- */

void kiln_model_defaults(kiln_model_opts *o) {
  memset(o, 0, sizeof *o);
  o->backbone = KILN_RESNET18;
  o->width = 64;
  o->classes = 8;
  o->cnet_hidden = 1024;
  o->spn = true;
  o->upsample = KILN_UPSAMPLE_NEAREST;
  o->image_size = 224;
  o->batch = 1;
}

bool kiln_backbone_parse(const char *s, kiln_backbone *out) {
  if (!strcmp(s, "resnet18"))
    *out = KILN_RESNET18;
  else if (!strcmp(s, "resnet34"))
    *out = KILN_RESNET34;
  else if (!strcmp(s, "resnet50"))
    *out = KILN_RESNET50;
  else
    return false;
  return true;
}

const char *kiln_backbone_name(kiln_backbone b) {
  switch (b) {
  case KILN_RESNET18: return "resnet18";
  case KILN_RESNET34: return "resnet34";
  case KILN_RESNET50: return "resnet50";
  }
  return "?";
}

/* Blocks per stage and whether the blocks are bottlenecks (torchvision's table). */
static void backbone_layout(kiln_backbone b, int blocks[4], bool *bottleneck) {
  static const int r18[4] = {2, 2, 2, 2}, r34[4] = {3, 4, 6, 3};
  memcpy(blocks, b == KILN_RESNET18 ? r18 : r34, sizeof r18);
  *bottleneck = b == KILN_RESNET50;
}

/* Output size of a conv/pool window along one axis. */
static int64_t window_out(int64_t in, int64_t k, int64_t stride, int64_t pad) {
  return (in + 2 * pad - k) / stride + 1;
}

static bool valid_sym(const char *s) {
  if (!s[0] || (s[0] >= '0' && s[0] <= '9')) return false;
  for (const char *p = s; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
          *p == '_'))
      return false;
  return true;
}

kiln_code kiln_model_plan_make(const kiln_model_opts *o, kiln_model_plan *p, kiln_err *e) {
  memset(p, 0, sizeof *p);
  if (o->backbone != KILN_RESNET18 && o->backbone != KILN_RESNET34 && o->backbone != KILN_RESNET50)
    return kiln_errf(e, KILN_ERR_INVALID, "unknown backbone %d (resnet18, resnet34 or resnet50)",
                     (int)o->backbone);
  if (o->width < 1 || o->width > 4096)
    return kiln_errf(e, KILN_ERR_INVALID, "width %lld is out of range (1..4096)",
                     (long long)o->width);
  if (o->classes < 1 || o->classes > 1000000)
    return kiln_errf(e, KILN_ERR_INVALID, "classes %lld is out of range (1..1000000)",
                     (long long)o->classes);
  if (o->cnet_hidden < 0 || o->cnet_hidden > 1000000)
    return kiln_errf(e, KILN_ERR_INVALID, "C-Net hidden width %lld is out of range (0..1000000)",
                     (long long)o->cnet_hidden);
  if (o->image_size < 1 || o->image_size > 16384)
    return kiln_errf(e, KILN_ERR_INVALID, "image size %lld is out of range (1..16384)",
                     (long long)o->image_size);
  if (o->batch_sym[0]) {
    if (!valid_sym(o->batch_sym))
      return kiln_errf(e, KILN_ERR_INVALID,
                       "batch dimension name '%s' must be an identifier (letters, digits, _)",
                       o->batch_sym);
  } else if (o->batch < 1 || o->batch > 65536) {
    return kiln_errf(e, KILN_ERR_INVALID, "batch %lld is out of range (1..65536)",
                     (long long)o->batch);
  }
  if (o->spn_width_cap < 0)
    return kiln_errf(e, KILN_ERR_INVALID, "SPN width cap must not be negative");
  if (o->upsample != KILN_UPSAMPLE_NEAREST && o->upsample != KILN_UPSAMPLE_BILINEAR)
    return kiln_errf(e, KILN_ERR_INVALID, "unknown upsampling mode %d", (int)o->upsample);

  int blocks[4];
  bool bottleneck;
  backbone_layout(o->backbone, blocks, &bottleneck);
  p->feat_channels = o->width * 8 * (bottleneck ? 4 : 1);
  int64_t h = window_out(o->image_size, 7, 2, 3); /* conv1 */
  h = window_out(h, 3, 2, 1);                     /* maxpool */
  for (int s = 1; s < 4; s++)
    h = window_out(h, 3, 2, 1); /* layer2..4 downsample */
  p->feat_size = h;
  if (!o->spn) {
    if (o->spn_blocks || o->n_spn_scales || o->spn_width_cap || o->align_corners)
      return kiln_errf(e, KILN_ERR_INVALID, "SPN options were given together with no SPN");
    return KILN_OK;
  }
  if (o->align_corners && o->upsample == KILN_UPSAMPLE_NEAREST)
    return kiln_errf(e, KILN_ERR_INVALID,
                     "align_corners applies to bilinear upsampling only (as in PyTorch)");
  if (o->spn_blocks < 0 || o->spn_blocks > KILN_SPN_MAX_BLOCKS)
    return kiln_errf(e, KILN_ERR_INVALID, "SPN blocks %d is out of range (0..%d)", o->spn_blocks,
                     KILN_SPN_MAX_BLOCKS);
  if (o->n_spn_scales < 0 || o->n_spn_scales > KILN_SPN_MAX_BLOCKS)
    return kiln_errf(e, KILN_ERR_INVALID, "at most %d SPN scales", KILN_SPN_MAX_BLOCKS);
  int64_t ratio = h > 0 && o->image_size % h == 0 ? o->image_size / h : 0;
  if (o->n_spn_scales > 0) {
    if (o->spn_blocks && o->spn_blocks != o->n_spn_scales)
      return kiln_errf(e, KILN_ERR_INVALID, "%d SPN blocks but %d SPN scales were given",
                       o->spn_blocks, o->n_spn_scales);
    int64_t prod = 1;
    for (int i = 0; i < o->n_spn_scales; i++) {
      if (o->spn_scales[i] < 1 || o->spn_scales[i] > 64)
        return kiln_errf(e, KILN_ERR_INVALID, "SPN scale %lld is out of range (1..64)",
                         (long long)o->spn_scales[i]);
      prod *= o->spn_scales[i];
      p->spn_scales[i] = o->spn_scales[i];
    }
    p->spn_blocks = o->n_spn_scales;
    if (prod * h != o->image_size)
      return kiln_errf(e, KILN_ERR_INVALID,
                       "the SPN scales multiply to %lld and the %lldx%lld feature map would "
                       "become %lldx%lld, not the %lldx%lld image",
                       (long long)prod, (long long)h, (long long)h, (long long)(prod * h),
                       (long long)(prod * h), (long long)o->image_size, (long long)o->image_size);
  } else if (o->spn_blocks > 0) {
    /* N equal scales s with s^N * h = image size */
    int64_t s = ratio ? (int64_t)llround(pow((double)ratio, 1.0 / o->spn_blocks)) : 0;
    int64_t prod = 1;
    for (int i = 0; i < o->spn_blocks && s > 0; i++)
      prod *= s;
    if (!ratio || s < 1 || prod != ratio)
      return kiln_errf(e, KILN_ERR_INVALID,
                       "%d equal SPN blocks cannot upsample the %lldx%lld feature map to "
                       "%lldx%lld; give --spn-scales",
                       o->spn_blocks, (long long)h, (long long)h, (long long)o->image_size,
                       (long long)o->image_size);
    p->spn_blocks = o->spn_blocks;
    for (int i = 0; i < p->spn_blocks; i++)
      p->spn_scales[i] = s;
  } else {
    int n = 0;
    int64_t r = ratio;
    while (r > 1 && r % 2 == 0)
      r /= 2, n++;
    if (r != 1)
      return kiln_errf(e, KILN_ERR_INVALID,
                       "the %lldx%lld feature map cannot reach the %lldx%lld image by doubling; "
                       "give --spn-scales (their product times %lld must be %lld)",
                       (long long)h, (long long)h, (long long)o->image_size,
                       (long long)o->image_size, (long long)h, (long long)o->image_size);
    if (n > KILN_SPN_MAX_BLOCKS)
      return kiln_errf(e, KILN_ERR_INVALID, "the SPN would need %d blocks (at most %d)", n,
                       KILN_SPN_MAX_BLOCKS);
    p->spn_blocks = n;
    for (int i = 0; i < n; i++)
      p->spn_scales[i] = 2;
  }
  /* Channels halve each block; the cap bounds the first block and halving continues
   * from there, so a capped ResNet-50 SPN costs what a ResNet-18 one does. */
  int64_t c = p->feat_channels / 2;
  if (o->spn_width_cap && c > o->spn_width_cap) c = o->spn_width_cap;
  for (int i = 0; i < p->spn_blocks; i++) {
    p->spn_channels[i] = c > 1 ? c : 1;
    c /= 2;
  }
  return KILN_OK;
}

/* ---- deterministic initialization ----
 * Each tensor draws from its own stream, seeded from the model seed and the tensor's
 * name, so adding or removing a sub-network leaves the other weights unchanged. */

typedef struct rng {
  uint64_t s[4];
} rng;

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static void rng_seed(rng *r, uint64_t seed, const char *name) {
  uint64_t h = 0xCBF29CE484222325ull; /* FNV-1a of the name */
  for (const unsigned char *p = (const unsigned char *)name; *p; p++)
    h = (h ^ *p) * 0x100000001B3ull;
  uint64_t x = seed ^ splitmix64(&h);
  for (int i = 0; i < 4; i++)
    r->s[i] = splitmix64(&x);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t xoshiro256ss(rng *r) { /* xoshiro256** 1.0 */
  uint64_t *s = r->s;
  uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return out;
}

/* Uniform in (0, 1]: never 0, so log() below is finite. */
static double rng_unit(rng *r) { return (double)((xoshiro256ss(r) >> 11) + 1) * 0x1.0p-53; }

/* Fills with N(0, std^2) by Box-Muller, two values per pair of draws. */
static void fill_normal(float *w, int64_t n, double std, uint64_t seed, const char *name) {
  rng r;
  rng_seed(&r, seed, name);
  const double two_pi = 6.283185307179586476925286766559;
  for (int64_t i = 0; i < n; i += 2) {
    double u1 = rng_unit(&r), u2 = rng_unit(&r);
    double rad = sqrt(-2.0 * log(u1));
    w[i] = (float)(std * rad * cos(two_pi * u2));
    if (i + 1 < n) w[i + 1] = (float)(std * rad * sin(two_pi * u2));
  }
}

typedef enum init_kind {
  INIT_ZERO,
  INIT_ONE,
  INIT_FAN_OUT, /* Kaiming-normal, mode fan_out, ReLU gain: torchvision's ResNet conv init */
  INIT_FAN_IN,  /* Kaiming-normal, mode fan_in, ReLU gain: the Linear layers and the SPN head */
} init_kind;

/* ---- graph building ---- */

typedef struct builder {
  kiln_graph *g;
  const kiln_model_opts *o;
  kiln_err *e;
} builder;

/* Adds an initializer; `trainable` marks parameters (not BN running statistics). */
static kiln_code param(builder *b, const char *name, int rank, const int64_t *dims, init_kind k,
                       bool trainable, int *id) {
  kiln_tensor *t = NULL;
  kiln_shape s = kiln_shape_make(rank, dims);
  KILN_TRY(kiln_tensor_new(KILN_F32, &s, &t, b->e));
  float *w = t->data;
  if (k == INIT_ONE) {
    for (int64_t i = 0; i < t->numel; i++)
      w[i] = 1.0f;
  } else if (k == INIT_FAN_OUT || k == INIT_FAN_IN) {
    /* weight [out, in, kh, kw...]: fan_in = in*receptive, fan_out = out*receptive */
    int64_t recept = 1;
    for (int i = 2; i < rank; i++)
      recept *= dims[i];
    /* fan-in initialization is for weights (rank >= 2); a rank-1 tensor counts its one dim */
    int64_t fan = (k == INIT_FAN_OUT || rank < 2 ? dims[0] : dims[1]) * recept;
    fill_normal(w, t->numel, sqrt(2.0 / (double)fan), b->o->seed, name);
  }
  KILN_TRY(ir_add_const(b->g, name, t, true, id, b->e));
  b->g->values[*id].trainable = trainable;
  return KILN_OK;
}

static kiln_code node(builder *b, kiln_op op, const char *name, const int *in, int n_in, int *out) {
  KILN_TRY(ir_add_value(b->g, name, out, b->e));
  int nid;
  return ir_add_node(b->g, op, name, in, n_in, out, 1, &nid, b->e);
}

static int last_node(const builder *b) { return (int)b->g->n_nodes - 1; }

static kiln_code conv(builder *b, const char *node_name, int x, const char *wname, int64_t cin,
                      int64_t cout, int64_t k, int64_t stride, int64_t pad, const char *bias_name,
                      init_kind init, int *y) {
  int w, bias = -1;
  KILN_TRY(param(b, wname, 4, (int64_t[]){cout, cin, k, k}, init, true, &w));
  if (bias_name) KILN_TRY(param(b, bias_name, 1, (int64_t[]){cout}, INIT_ZERO, true, &bias));
  int in[3] = {x, w, bias};
  KILN_TRY(node(b, KILN_OP_Conv, node_name, in, bias_name ? 3 : 2, y));
  int n = last_node(b);
  KILN_TRY(ir_set_attr_ints(b->g, n, "kernel_shape", (int64_t[]){k, k}, 2, b->e));
  KILN_TRY(ir_set_attr_ints(b->g, n, "strides", (int64_t[]){stride, stride}, 2, b->e));
  KILN_TRY(ir_set_attr_ints(b->g, n, "pads", (int64_t[]){pad, pad, pad, pad}, 4, b->e));
  return KILN_OK;
}

/* BatchNormalization with initializers <prefix>.weight/.bias/.running_mean/.running_var. */
static kiln_code bnorm(builder *b, const char *node_name, int x, const char *prefix, int64_t c,
                       int *y) {
  static const char *suffix[4] = {"weight", "bias", "running_mean", "running_var"};
  static const init_kind init[4] = {INIT_ONE, INIT_ZERO, INIT_ZERO, INIT_ONE};
  int in[5] = {x};
  char nm[256];
  for (int i = 0; i < 4; i++) {
    snprintf(nm, sizeof nm, "%s.%s", prefix, suffix[i]);
    KILN_TRY(param(b, nm, 1, &c, init[i], i < 2, &in[1 + i]));
  }
  KILN_TRY(node(b, KILN_OP_BatchNormalization, node_name, in, 5, y));
  /* PyTorch's defaults: eps 1e-5, momentum 0.1 (ONNX counts momentum the other way) */
  KILN_TRY(ir_set_attr_float(b->g, last_node(b), "epsilon", 1e-5, b->e));
  return ir_set_attr_float(b->g, last_node(b), "momentum", 0.9, b->e);
}

static kiln_code relu(builder *b, const char *node_name, int x, int *y) {
  return node(b, KILN_OP_Relu, node_name, &x, 1, y);
}

/* Conv (no bias) -> BN (-> ReLU); names "<pre>/<conv>", initializers "<ipre>.<conv>.weight". */
static kiln_code conv_bn(builder *b, const char *pre, const char *ipre, const char *conv_nm,
                         const char *bn_nm, const char *relu_nm, int x, int64_t cin, int64_t cout,
                         int64_t k, int64_t stride, int *y) {
  char nn[256], wn[256];
  int t;
  snprintf(nn, sizeof nn, "%s/%s", pre, conv_nm);
  snprintf(wn, sizeof wn, "%s%s%s.weight", ipre, *ipre ? "." : "", conv_nm);
  KILN_TRY(conv(b, nn, x, wn, cin, cout, k, stride, k / 2, NULL, INIT_FAN_OUT, &t));
  snprintf(nn, sizeof nn, "%s/%s", pre, bn_nm);
  snprintf(wn, sizeof wn, "%s%s%s", ipre, *ipre ? "." : "", bn_nm);
  KILN_TRY(bnorm(b, nn, t, wn, cout, relu_nm ? &t : y));
  if (!relu_nm) return KILN_OK;
  snprintf(nn, sizeof nn, "%s/%s", pre, relu_nm);
  return relu(b, nn, t, y);
}

/* One residual block, torchvision's BasicBlock or Bottleneck (v1.5: stride on the 3x3). */
static kiln_code res_block(builder *b, const char *name, int x, int64_t cin, int64_t planes,
                           int64_t stride, bool bottleneck, const char *out_name, int *y) {
  char pre[128], nn[256];
  snprintf(pre, sizeof pre, "fnet/%s", name);
  int64_t cout = bottleneck ? planes * 4 : planes;
  int t, skip = x;
  if (bottleneck) {
    KILN_TRY(conv_bn(b, pre, name, "conv1", "bn1", "relu1", x, cin, planes, 1, 1, &t));
    KILN_TRY(conv_bn(b, pre, name, "conv2", "bn2", "relu2", t, planes, planes, 3, stride, &t));
    KILN_TRY(conv_bn(b, pre, name, "conv3", "bn3", NULL, t, planes, cout, 1, 1, &t));
  } else {
    KILN_TRY(conv_bn(b, pre, name, "conv1", "bn1", "relu1", x, cin, planes, 3, stride, &t));
    KILN_TRY(conv_bn(b, pre, name, "conv2", "bn2", NULL, t, planes, cout, 3, 1, &t));
  }
  if (stride != 1 || cin != cout)
    KILN_TRY(conv_bn(b, pre, name, "downsample.0", "downsample.1", NULL, x, cin, cout, 1, stride,
                     &skip));
  int sum;
  snprintf(nn, sizeof nn, "%s/add", pre);
  KILN_TRY(node(b, KILN_OP_Add, nn, (int[]){t, skip}, 2, &sum));
  snprintf(nn, sizeof nn, "%s/%s", pre, bottleneck ? "relu3" : "relu2");
  if (!out_name) return relu(b, nn, sum, y);
  KILN_TRY(ir_add_value(b->g, out_name, y, b->e));
  return ir_add_node(b->g, KILN_OP_Relu, nn, &sum, 1, y, 1, NULL, b->e);
}

static kiln_code build_fnet(builder *b, int image, int *feat) {
  const kiln_model_opts *o = b->o;
  int blocks[4];
  bool bottleneck;
  backbone_layout(o->backbone, blocks, &bottleneck);
  int x;
  KILN_TRY(conv_bn(b, "fnet", "", "conv1", "bn1", "relu", image, 3, o->width, 7, 2, &x));
  int nid;
  int pooled;
  KILN_TRY(ir_add_value(b->g, "fnet/maxpool", &pooled, b->e));
  KILN_TRY(ir_add_node(b->g, KILN_OP_MaxPool, "fnet/maxpool", &x, 1, &pooled, 1, &nid, b->e));
  KILN_TRY(ir_set_attr_ints(b->g, nid, "kernel_shape", (int64_t[]){3, 3}, 2, b->e));
  KILN_TRY(ir_set_attr_ints(b->g, nid, "strides", (int64_t[]){2, 2}, 2, b->e));
  KILN_TRY(ir_set_attr_ints(b->g, nid, "pads", (int64_t[]){1, 1, 1, 1}, 4, b->e));
  x = pooled;
  int64_t cin = o->width;
  for (int s = 0; s < 4; s++) {
    int64_t planes = o->width << s;
    for (int k = 0; k < blocks[s]; k++) {
      char name[32];
      snprintf(name, sizeof name, "layer%d.%d", s + 1, k);
      bool last = s == 3 && k == blocks[s] - 1;
      KILN_TRY(res_block(b, name, x, cin, planes, k == 0 && s > 0 ? 2 : 1, bottleneck,
                         last ? "features" : NULL, &x));
      cin = bottleneck ? planes * 4 : planes;
    }
  }
  *feat = x;
  return KILN_OK;
}

static kiln_code gemm(builder *b, const char *node_name, const char *ipre, int x, int64_t in,
                      int64_t out, int *y) {
  char nm[256];
  int w, bias;
  snprintf(nm, sizeof nm, "%s.weight", ipre);
  KILN_TRY(param(b, nm, 2, (int64_t[]){out, in}, INIT_FAN_IN, true, &w));
  snprintf(nm, sizeof nm, "%s.bias", ipre);
  KILN_TRY(param(b, nm, 1, &out, INIT_ZERO, true, &bias));
  KILN_TRY(node(b, KILN_OP_Gemm, node_name, (int[]){x, w, bias}, 3, y));
  return ir_set_attr_int(b->g, last_node(b), "transB", 1, b->e);
}

static kiln_code build_cnet(builder *b, int feat, int64_t feat_c, int logits) {
  const kiln_model_opts *o = b->o;
  int pooled, flat, h;
  KILN_TRY(node(b, KILN_OP_GlobalAveragePool, "cnet/gap", &feat, 1, &pooled));
  KILN_TRY(node(b, KILN_OP_Flatten, "cnet/flatten", &pooled, 1, &flat));
  KILN_TRY(ir_set_attr_int(b->g, last_node(b), "axis", 1, b->e));
  int nid;
  if (o->cnet_hidden == 0) { /* torchvision's head: fc.weight, fc.bias */
    int w, bias;
    KILN_TRY(param(b, "fc.weight", 2, (int64_t[]){o->classes, feat_c}, INIT_FAN_IN, true, &w));
    KILN_TRY(param(b, "fc.bias", 1, &o->classes, INIT_ZERO, true, &bias));
    KILN_TRY(ir_add_node(b->g, KILN_OP_Gemm, "cnet/fc", (int[]){flat, w, bias}, 3, &logits, 1, &nid,
                         b->e));
    return ir_set_attr_int(b->g, nid, "transB", 1, b->e);
  }
  KILN_TRY(gemm(b, "cnet/fc1", "cnet.fc1", flat, feat_c, o->cnet_hidden, &h));
  KILN_TRY(relu(b, "cnet/relu", h, &h));
  int w, bias;
  KILN_TRY(param(b, "cnet.fc2.weight", 2, (int64_t[]){o->classes, o->cnet_hidden}, INIT_FAN_IN,
                 true, &w));
  KILN_TRY(param(b, "cnet.fc2.bias", 1, &o->classes, INIT_ZERO, true, &bias));
  KILN_TRY(
      ir_add_node(b->g, KILN_OP_Gemm, "cnet/fc2", (int[]){h, w, bias}, 3, &logits, 1, &nid, b->e));
  return ir_set_attr_int(b->g, nid, "transB", 1, b->e);
}

static kiln_code build_spn(builder *b, int feat, const kiln_model_plan *p, int saliency) {
  const kiln_model_opts *o = b->o;
  int x = feat;
  int64_t c = p->feat_channels;
  char nn[128], in[128];
  for (int i = 0; i < p->spn_blocks; i++) {
    /* Resize(X, roi omitted, scales [1,1,s,s]) */
    kiln_tensor *st = NULL;
    KILN_TRY(kiln_tensor_new(KILN_F32, &(kiln_shape){.rank = 1, .d = {4}}, &st, b->e));
    float *sv = st->data;
    sv[0] = sv[1] = 1.0f;
    sv[2] = sv[3] = (float)p->spn_scales[i];
    int scales, up;
    snprintf(in, sizeof in, "spn.%d.scales", i);
    KILN_TRY(ir_add_const(b->g, in, st, true, &scales, b->e));
    snprintf(nn, sizeof nn, "spn/%d/upsample", i);
    KILN_TRY(node(b, KILN_OP_Resize, nn, (int[]){x, -1, scales}, 3, &up));
    int nid = last_node(b);
    if (o->upsample == KILN_UPSAMPLE_NEAREST) {
      KILN_TRY(ir_set_attr_str(b->g, nid, "mode", "nearest", b->e));
      KILN_TRY(ir_set_attr_str(b->g, nid, "coordinate_transformation_mode", "asymmetric", b->e));
      KILN_TRY(ir_set_attr_str(b->g, nid, "nearest_mode", "floor", b->e));
    } else {
      KILN_TRY(ir_set_attr_str(b->g, nid, "mode", "linear", b->e));
      KILN_TRY(ir_set_attr_str(b->g, nid, "coordinate_transformation_mode",
                               o->align_corners ? "align_corners" : "half_pixel", b->e));
    }
    char pre[32], ipre[32];
    snprintf(pre, sizeof pre, "spn/%d", i);
    snprintf(ipre, sizeof ipre, "spn.%d", i);
    KILN_TRY(conv_bn(b, pre, ipre, "conv", "bn", "relu", up, c, p->spn_channels[i], 3, 1, &x));
    c = p->spn_channels[i];
  }
  int w, bias, nid;
  KILN_TRY(param(b, "spn.head.weight", 4, (int64_t[]){1, c, 1, 1}, INIT_FAN_IN, true, &w));
  KILN_TRY(param(b, "spn.head.bias", 1, (int64_t[]){1}, INIT_ZERO, true, &bias));
  KILN_TRY(ir_add_node(b->g, KILN_OP_Conv, "spn/head", (int[]){x, w, bias}, 3, &saliency, 1, &nid,
                       b->e));
  KILN_TRY(ir_set_attr_ints(b->g, nid, "kernel_shape", (int64_t[]){1, 1}, 2, b->e));
  KILN_TRY(ir_set_attr_ints(b->g, nid, "strides", (int64_t[]){1, 1}, 2, b->e));
  return ir_set_attr_ints(b->g, nid, "pads", (int64_t[]){0, 0, 0, 0}, 4, b->e);
}

static kiln_code set_io_type(kiln_graph *g, int v, int rank, const int64_t *dims, const char *sym,
                             kiln_err *e) {
  kiln_value *val = &g->values[v];
  val->dtype = KILN_F32;
  val->shape = kiln_shape_make(rank, dims);
  val->typed = true;
  kiln_free(val->sym[0]);
  val->sym[0] = NULL;
  if (sym && sym[0]) {
    val->shape.d[0] = -1;
    val->sym[0] = kiln_strdup(sym);
    if (!val->sym[0]) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  }
  return KILN_OK;
}

static kiln_code build(builder *b, const kiln_model_plan *p) {
  kiln_graph *g = b->g;
  const kiln_model_opts *o = b->o;
  KILN_TRY(ir_set_opset(g, "", 13, b->e));
  g->ir_version = 7; /* what opset 13 pairs with (ONNX 1.8) */
  g->producer_name = kiln_strdup("kiln");
  g->producer_version = kiln_strdup("0.1");
  g->name = kiln_strdup("kiln_model");
  if (!g->producer_name || !g->producer_version || !g->name)
    return kiln_errf(b->e, KILN_ERR_NOMEM, "out of memory");
  char doc[512];
  snprintf(doc, sizeof doc,
           "%s F-Net (width %lld) + C-Net (hidden %lld, K=%lld)%s; built by kiln model, seed %llu",
           kiln_backbone_name(o->backbone), (long long)o->width, (long long)o->cnet_hidden,
           (long long)o->classes, o->spn ? " + SPN" : "", (unsigned long long)o->seed);
  g->doc = kiln_strdup(doc);
  if (!g->doc) return kiln_errf(b->e, KILN_ERR_NOMEM, "out of memory");

  int64_t batch = o->batch_sym[0] ? 1 : o->batch, hw = o->image_size;
  int image, logits, saliency = -1, feat;
  KILN_TRY(ir_add_value(g, "image", &image, b->e));
  KILN_TRY(set_io_type(g, image, 4, (int64_t[]){batch, 3, hw, hw}, NULL, b->e));
  KILN_TRY(ir_add_input(g, image, b->e));
  KILN_TRY(ir_add_value(g, "logits", &logits, b->e));
  if (o->spn) KILN_TRY(ir_add_value(g, "saliency", &saliency, b->e));
  KILN_TRY(build_fnet(b, image, &feat));
  KILN_TRY(build_cnet(b, feat, p->feat_channels, logits));
  KILN_TRY(ir_add_output(g, logits, b->e));
  if (o->spn) {
    KILN_TRY(build_spn(b, feat, p, saliency));
    KILN_TRY(ir_add_output(g, saliency, b->e));
  }
  KILN_TRY(ir_toposort(g, b->e));
  KILN_TRY(ir_verify(g, b->e));
  /* Shape inference checks the construction; with a symbolic batch it runs at batch 1
   * and the inferred intermediate shapes are dropped again (they would pin the batch). */
  KILN_TRY(ir_infer(g, NULL, b->e));
  if (o->batch_sym[0]) {
    for (int64_t v = 0; v < g->n_values; v++) {
      kiln_value *val = &g->values[v];
      if (!val->data && !val->is_input && !val->is_output) val->typed = false;
    }
    KILN_TRY(set_io_type(g, image, 4, (int64_t[]){batch, 3, hw, hw}, o->batch_sym, b->e));
    KILN_TRY(set_io_type(g, logits, 2, (int64_t[]){batch, o->classes}, o->batch_sym, b->e));
    if (o->spn)
      KILN_TRY(set_io_type(g, saliency, 4, (int64_t[]){batch, 1, hw, hw}, o->batch_sym, b->e));
  }
  return KILN_OK;
}

kiln_code kiln_model_build(const kiln_model_opts *o, kiln_graph **out, kiln_err *e) {
  *out = NULL;
  kiln_model_plan p;
  KILN_TRY(kiln_model_plan_make(o, &p, e));
  kiln_graph *g = ir_graph_new();
  if (!g) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  builder b = {.g = g, .o = o, .e = e};
  kiln_code rc = build(&b, &p);
  if (rc) {
    kiln_err_prefix(e, "building %s", kiln_backbone_name(o->backbone));
    ir_graph_free(g);
    return rc;
  }
  *out = g;
  return KILN_OK;
}

/* ---- parameter counting ---- */

int64_t kiln_model_param_count(const kiln_graph *g, const char *prefix) {
  char *credited = kiln_calloc((size_t)(g->n_values ? g->n_values : 1), 1);
  if (!credited) return -1;
  int64_t total = 0;
  size_t plen = prefix ? strlen(prefix) : 0;
  for (int64_t i = 0; i < g->n_nodes; i++) {
    const kiln_node *n = &g->nodes[i];
    if (n->dead) continue;
    bool counted = !prefix || (n->name && strncmp(n->name, prefix, plen) == 0);
    for (int k = 0; k < n->n_in; k++) {
      int v = n->in[k];
      if (v < 0 || credited[v]) continue;
      const kiln_value *val = &g->values[v];
      if (!val->is_initializer || !val->data || val->dtype != KILN_F32) continue;
      if (k < 32 && (n->def->shape_inputs & (1u << k))) continue;
      if (n->op == KILN_OP_BatchNormalization && (k == 3 || k == 4)) continue; /* buffers */
      credited[v] = 1;
      if (counted) total += val->data->numel;
    }
  }
  kiln_free(credited);
  return total;
}

/* ---- --init-from ---- */

static kiln_code push_name(char ***list, int *n, const char *s, kiln_err *e) {
  char **p = kiln_realloc(*list, sizeof(char *) * (size_t)(*n + 1));
  if (!p) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  *list = p;
  p[*n] = kiln_strdup(s);
  if (!p[*n]) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  (*n)++;
  return KILN_OK;
}

void kiln_init_report_free(kiln_init_report *r) {
  char **lists[4] = {r->matched, r->mismatched, r->unused, r->missing};
  int counts[4] = {r->n_matched, r->n_mismatched, r->n_unused, r->n_missing};
  for (int l = 0; l < 4; l++) {
    for (int i = 0; i < counts[l]; i++)
      kiln_free(lists[l][i]);
    kiln_free(lists[l]);
  }
  memset(r, 0, sizeof *r);
}

/* True for initializers of the F-Net (torchvision's trunk names). */
static bool is_fnet_name(const char *s) {
  return !strncmp(s, "conv1.", 6) || !strncmp(s, "bn1.", 4) || !strncmp(s, "layer", 5);
}

kiln_code kiln_model_init_from(kiln_graph *g, const kiln_graph *src, kiln_init_report *r,
                               kiln_err *e) {
  memset(r, 0, sizeof *r);
  char *filled = kiln_calloc((size_t)(g->n_values ? g->n_values : 1), 1);
  if (!filled) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  kiln_code rc = KILN_OK;
  char a[160], c[160], msg[600];
  for (int64_t i = 0; i < src->n_values && !rc; i++) {
    const kiln_value *sv = &src->values[i];
    if (!sv->is_initializer || !sv->data) continue;
    int t = ir_find_value(g, sv->name);
    kiln_value *tv = t >= 0 ? &g->values[t] : NULL;
    if (!tv || !tv->is_initializer || !tv->data || filled[t]) {
      rc = push_name(&r->unused, &r->n_unused, sv->name, e);
    } else if (sv->data->dtype != tv->data->dtype ||
               !kiln_shape_eq(&sv->data->shape, &tv->data->shape)) {
      snprintf(msg, sizeof msg, "%s: %s %s in the source, %s %s here", sv->name,
               kiln_dtype_name(sv->data->dtype), kiln_shape_str(&sv->data->shape, a, sizeof a),
               kiln_dtype_name(tv->data->dtype), kiln_shape_str(&tv->data->shape, c, sizeof c));
      rc = push_name(&r->mismatched, &r->n_mismatched, msg, e);
    } else {
      memcpy(tv->data->data, sv->data->data, kiln_tensor_nbytes(sv->data));
      filled[t] = 1;
      r->matched_elems += sv->data->numel;
      rc = push_name(&r->matched, &r->n_matched, sv->name, e);
    }
  }
  for (int64_t v = 0; v < g->n_values && !rc; v++) {
    const kiln_value *tv = &g->values[v];
    if (tv->is_initializer && tv->data && !filled[v] && is_fnet_name(tv->name))
      rc = push_name(&r->missing, &r->n_missing, tv->name, e);
  }
  kiln_free(filled);
  if (rc) kiln_init_report_free(r);
  return rc;
}
