/* models.h — kiln's built-in networks: the study's saliency-aware classifier
 * (ResNet F-Net + C-Net + SPN) built as an ONNX-compatible kiln_graph.
 *
 * The graph uses only standard ai.onnx ops at opset 13 (Conv, BatchNormalization,
 * Relu, MaxPool, Add, GlobalAveragePool, Flatten, Gemm, Resize), so it saves as a
 * plain .onnx file any ONNX tool loads.  Naming (see docs/models.md):
 *   - initializers follow torchvision's module names: conv1.weight, bn1.running_mean,
 *     layer1.0.conv1.weight, layer2.0.downsample.0.weight, fc.weight (plain head);
 *     cnet.fc1.*, cnet.fc2.* (hidden head); spn.<i>.conv.weight, spn.<i>.bn.*,
 *     spn.head.{weight,bias} (SPN), spn.<i>.scales (Resize scales, not a parameter);
 *   - node names carry their sub-network as a prefix: fnet/..., cnet/..., spn/...;
 *   - input `image` [B,3,H,W]; outputs `logits` [B,K] and `saliency` [B,1,H,W];
 *     the F-Net's output value is named `features`. */
#ifndef KILN_MODELS_H
#define KILN_MODELS_H

#include "ir/graph.h"

typedef enum kiln_backbone {
  KILN_RESNET18 = 18,
  KILN_RESNET34 = 34,
  KILN_RESNET50 = 50,
} kiln_backbone;

typedef enum kiln_upsample_mode {
  KILN_UPSAMPLE_NEAREST = 0,  /* Resize nearest, asymmetric, floor (nn.Upsample 'nearest') */
  KILN_UPSAMPLE_BILINEAR = 1, /* Resize linear, half_pixel or align_corners */
} kiln_upsample_mode;

#define KILN_SPN_MAX_BLOCKS 16
#define KILN_BATCH_SYM_MAX 64

typedef struct kiln_model_opts {
  kiln_backbone backbone;
  int64_t width;       /* channels of the stem and layer1 (torchvision: 64); stages double */
  int64_t classes;     /* K, the number of logits */
  int64_t cnet_hidden; /* width of the C-Net's hidden FC layer; 0: one FC (torchvision's fc) */
  bool spn;            /* build the saliency prediction net and the `saliency` output */
  int spn_blocks;      /* number of upsampling blocks; 0: derived from the scales or the sizes */
  int n_spn_scales;    /* explicit per-block scales (0: all blocks scale equally) */
  int64_t spn_scales[KILN_SPN_MAX_BLOCKS];
  int64_t spn_width_cap; /* channels of the first SPN block at most this; 0: no cap */
  kiln_upsample_mode upsample;
  bool align_corners;                 /* bilinear only */
  int64_t image_size;                 /* H = W */
  int64_t batch;                      /* fixed batch size, used when batch_sym is empty */
  char batch_sym[KILN_BATCH_SYM_MAX]; /* non-empty: a symbolic batch dimension (dim_param) */
  uint64_t seed;                      /* initialization seed: same options and seed, same bytes */
} kiln_model_opts;

/* ResNet-18, width 64, K=8, C-Net 1024, SPN with derived blocks, nearest, 224, batch 1, seed 0. */
void kiln_model_defaults(kiln_model_opts *o);

/* The sizes the options imply, checked: what `kiln model` prints and the builder uses. */
typedef struct kiln_model_plan {
  int64_t feat_channels; /* F-Net output channels (8*width, or 32*width for ResNet-50) */
  int64_t feat_size;     /* F-Net output height = width (7 at 224) */
  int spn_blocks;        /* 0 when the SPN is off */
  int64_t spn_scales[KILN_SPN_MAX_BLOCKS];
  int64_t spn_channels[KILN_SPN_MAX_BLOCKS]; /* output channels of each block */
} kiln_model_plan;

/* Validates the options and derives the plan.  Errors (KILN_ERR_INVALID) say which
 * option is wrong, e.g. when the SPN scales times the feature size miss the image size. */
kiln_code kiln_model_plan_make(const kiln_model_opts *o, kiln_model_plan *p, kiln_err *e);

/* Builds the network: a verified, topologically sorted graph at opset 13 with
 * initialized weights.  With a fixed batch, shapes are inferred (ir_infer) too; with
 * a symbolic batch the graph input and outputs carry the dim_param and -1. */
kiln_code kiln_model_build(const kiln_model_opts *o, kiln_graph **out, kiln_err *e);

/* Parameters in torchvision's sense (sum of p.numel() over model.parameters()): the
 * elements of float initializers, excluding BatchNormalization running statistics
 * (buffers in PyTorch) and inputs that determine shapes (Resize scales).  When
 * `prefix` is non-NULL only nodes whose name starts with it ("fnet/") are counted;
 * an initializer is credited to its first reader. */
int64_t kiln_model_param_count(const kiln_graph *g, const char *prefix);

/* What --init-from did.  Each list holds kiln_malloc'd strings (free with
 * kiln_init_report_free). */
typedef struct kiln_init_report {
  int n_matched; /* copied: same name, same shape, float32 */
  int64_t matched_elems;
  char **matched;
  int n_mismatched; /* same name, different shape or dtype ("name: [..] in source, [..] here") */
  char **mismatched;
  int n_unused; /* source initializers with no model initializer of that name */
  char **unused;
  int n_missing; /* F-Net initializers the source did not provide (keep their init) */
  char **missing;
} kiln_init_report;

/* Copies every initializer of `src` (an ONNX export of a torchvision ResNet) whose
 * name and shape match an initializer of `g` into `g`.  Names that torch.onnx.export
 * invents when it folds BatchNormalization into Conv (e.g. "onnx::Conv_193") match
 * nothing and are reported as unused. */
kiln_code kiln_model_init_from(kiln_graph *g, const kiln_graph *src, kiln_init_report *r,
                               kiln_err *e);
void kiln_init_report_free(kiln_init_report *r);

/* Parses "resnet18" | "resnet34" | "resnet50"; false otherwise. */
bool kiln_backbone_parse(const char *s, kiln_backbone *out);
const char *kiln_backbone_name(kiln_backbone b);

#endif
