/* explain.h — saliency maps of the study's classifier, computed with kiln's own
 * autodiff, their scores against ground-truth masks, and overlays written as PNG
 * grids like the study's figures.
 *
 * Methods (docs/study.md, "Explainability"):
 *   - Grad-CAM (Selvaraju et al.) on the last F-Net block: A = the feature map
 *     feeding the C-Net's GlobalAveragePool ([B,C,h,w], the output of layer4),
 *     Y = the logit of the explained class.  alpha_c = mean over (h,w) of dY/dA_c;
 *     cam = ReLU(sum_c alpha_c A_c), upsampled bilinearly to the input size with
 *     half-pixel centres (PyTorch's F.interpolate(mode="bilinear",
 *     align_corners=False)).  The map is not normalized (see kiln_map_normalize).
 *   - vanilla gradient (Simonyan et al.): max over channels of |dY/d image|.
 *   - SPN: sigmoid(saliency), the study's saliency prediction net.
 * One graph serves all three: the forward pass, then kiln_autodiff of the logits
 * seeded by a graph input (the one-hot of the explained class per image, so one
 * compiled program serves every class and image), with the feature map, its
 * gradient, the image gradient, the logits and the saliency as outputs; the JIT
 * compiles it once.  BatchNorm runs in inference mode. */
#ifndef KILN_STUDY_EXPLAIN_H
#define KILN_STUDY_EXPLAIN_H

#include "kiln.h"
#include "train/dataset.h"

typedef enum kiln_explain_method {
  KILN_EXPLAIN_GRADCAM = 0,
  KILN_EXPLAIN_GRAD = 1,
  KILN_EXPLAIN_SPN = 2,
  KILN_EXPLAIN_METHODS = 3,
} kiln_explain_method;
#define KILN_EXPLAIN_BIT(m) (1u << (m))
#define KILN_EXPLAIN_ALL 7u

/* "Grad-CAM", "gradient", "SPN". */
const char *kiln_explain_method_name(kiln_explain_method m);
/* "gradcam" | "grad" | "spn" | "all" (or a comma list) to a bit set; false otherwise. */
bool kiln_explain_methods_parse(const char *s, unsigned *bits);

typedef struct kiln_explain_opts {
  kiln_backend backend;  /* default JIT */
  int threads;           /* 0: all cores */
  const char *cache_dir; /* NULL: the default kernel cache */
  bool allow_fallback;
  int64_t batch;         /* size bound to a symbolic batch dimension (default 1) */
  unsigned methods;      /* KILN_EXPLAIN_BIT set; SPN is dropped for models without `saliency` */
  const char *feature;   /* Grad-CAM feature map (NULL: the input of the C-Net's GlobalAveragePool) */
} kiln_explain_opts;

kiln_explain_opts kiln_explain_opts_default(void);

typedef struct kiln_explainer kiln_explainer;

kiln_code kiln_explainer_create(const char *model_path, const kiln_explain_opts *o, kiln_explainer **out,
                                kiln_err *e);
void kiln_explainer_free(kiln_explainer *x);
int64_t kiln_explainer_batch(const kiln_explainer *x);
int64_t kiln_explainer_classes(const kiln_explainer *x);
void kiln_explainer_image_shape(const kiln_explainer *x, int64_t *c, int64_t *h, int64_t *w);
/* The Grad-CAM feature map's name and shape [C,h,w]. */
const char *kiln_explainer_feature(const kiln_explainer *x, int64_t *c, int64_t *h, int64_t *w);
/* The methods this explainer computes (the requested ones the model supports). */
unsigned kiln_explainer_methods(const kiln_explainer *x);

/* Maps of one batch.  Arrays are owned by the explanation; a map is NULL when its
 * method was not requested. */
typedef struct kiln_explanation {
  int64_t b, k, h, w;   /* batch, classes, input height and width */
  int64_t fh, fw;       /* feature map size */
  float *logits;        /* [b,k] */
  int64_t *target;      /* [b] the class explained */
  float *cam;           /* [b,fh,fw] Grad-CAM at the feature map's resolution */
  float *map[KILN_EXPLAIN_METHODS]; /* [b,h,w] each: Grad-CAM (upsampled), gradient, SPN */
} kiln_explanation;

/* Explains one batch: images [B,C,H,W] (normalized, as the model takes them);
 * targets[i] the class to explain for image i, -1 for its predicted class (the
 * argmax of the logits, chosen inside the graph: still one run); targets NULL: all
 * predicted. */
kiln_code kiln_explain_run(kiln_explainer *x, const float *images, const int64_t *targets, kiln_explanation *out,
                           kiln_err *e);
void kiln_explanation_free(kiln_explanation *ex);

/* ---- building blocks (pure) ---- */

/* Grad-CAM of one image from A and dY/dA ([C,h,w] each) into cam [h,w]
 * (weights and sums in double). */
kiln_code kiln_gradcam(const float *A, const float *dA, int64_t C, int64_t h, int64_t w, float *cam, kiln_err *e);
/* Bilinear resize of one plane [h,w] -> [H,W], half-pixel centres, edge-clamped, no
 * antialiasing: PyTorch's F.interpolate(size=(H,W), mode="bilinear", align_corners=False). */
void kiln_resize_bilinear(const float *src, int64_t h, int64_t w, float *dst, int64_t H, int64_t W);
/* In place: (v - min) / (max - min); a constant map becomes all zeros. */
void kiln_map_normalize(float *m, int64_t n);

/* Scores of one map against a mask ({0,1}, n pixels).  The map is min-max
 * normalized first (on the fly; the input is not changed):
 *   energy    share of the map's sum inside the mask (a constant map: the mask's area share);
 *   pointing  1 when the map's largest pixel (the first on ties) lies in the mask, else 0;
 *   iou_half  IoU of {map >= 0.5} with the mask;
 *   iou_top   IoU of the top `top_frac` of pixels ({map >= the ceil(top_frac*n)-th largest
 *             value}, ties included) with the mask.
 * Returns false (scores NaN) when the mask is empty: such examples are not scored. */
typedef struct kiln_saliency_score {
  double energy, pointing, iou_half, iou_top;
} kiln_saliency_score;
bool kiln_saliency_score_map(const float *map, const float *mask, int64_t n, double top_frac,
                             kiln_saliency_score *s);

/* ---- a dataset at once ---- */
typedef enum kiln_explain_target { KILN_TARGET_PRED = 0, KILN_TARGET_LABEL = 1 } kiln_explain_target;

typedef struct kiln_explain_data_opts {
  kiln_explain_target target; /* explain the predicted class (default) or the true label */
  double top_frac;            /* for iou_top (default 0.2) */
  int64_t limit;              /* the first `limit` examples only (0: all) */
  void (*progress)(void *ctx, int64_t done, int64_t total);
  void *progress_ctx;
} kiln_explain_data_opts;

kiln_explain_data_opts kiln_explain_data_opts_default(void);

typedef struct kiln_explain_summary {
  int64_t n;                                       /* examples explained */
  int64_t n_scored[KILN_EXPLAIN_METHODS];          /* examples with a non-empty mask, per method */
  kiln_saliency_score mean[KILN_EXPLAIN_METHODS];  /* means over them (NaN when none) */
  kiln_saliency_score *per[KILN_EXPLAIN_METHODS];  /* [n] each, NaN where not scored; NULL when
                                                      the method did not run */
  int64_t *label, *pred, *target;                  /* [n] */
  int64_t n_masks;                                 /* examples with a non-empty mask */
  double mask_area; /* their mean area share: what a uniform map scores as energy */
} kiln_explain_summary;

/* Explains every example of `d` (batches of the explainer's batch; the last one
 * padded) and scores each map against the example's mask. */
kiln_code kiln_explain_dataset(kiln_explainer *x, kiln_dataset *d, const kiln_explain_data_opts *o,
                               kiln_explain_summary *s, kiln_err *e);
void kiln_explain_summary_free(kiln_explain_summary *s);

/* ---- pictures ---- */
typedef enum kiln_colormap { KILN_CMAP_JET = 0, KILN_CMAP_VIRIDIS = 1 } kiln_colormap;
bool kiln_colormap_parse(const char *s, kiln_colormap *out);
/* v in [0,1] (clamped) to RGB. */
void kiln_colormap_rgb(kiln_colormap cm, float v, uint8_t rgb[3]);

/* Cells, all h x w, interleaved 8-bit RGB. */
/* A planar [3,h,w] image in [0,1] (clamped). */
void kiln_render_image(const float *planar, int64_t h, int64_t w, uint8_t *rgb);
/* A map in [0,1] as gray (a mask: white object on black). */
void kiln_render_gray(const float *map, int64_t h, int64_t w, uint8_t *rgb);
/* The map (normalized here to [0,1]) through the colormap, blended over the image:
 * (1 - alpha) * image + alpha * colour. */
void kiln_render_overlay(const float *planar, const float *map, int64_t h, int64_t w, kiln_colormap cm, float alpha,
                         uint8_t *rgb);

/* A grid of cells with white gutters and an optional header row of column titles
 * (drawn with a built-in 5x7 font). */
typedef struct kiln_grid {
  int rows, cols;
  int64_t cw, ch;     /* cell size */
  int pad, header;    /* gutter and header height in pixels */
  int64_t W, H;
  uint8_t *rgb;       /* H*W*3 */
} kiln_grid;
kiln_code kiln_grid_init(kiln_grid *g, int rows, int cols, int64_t cw, int64_t ch, const char *const *titles,
                         kiln_err *e);
void kiln_grid_put(kiln_grid *g, int row, int col, const uint8_t *cell);
kiln_code kiln_grid_write(const kiln_grid *g, const char *path, kiln_err *e);
void kiln_grid_free(kiln_grid *g);
/* Draws text (ASCII; unknown characters as '?') at (x, y) in the given colour,
 * each font pixel `scale` pixels wide, into an interleaved RGB image of width W
 * and height H (clipped).  Returns the width drawn. */
int64_t kiln_draw_text(uint8_t *rgb, int64_t W, int64_t H, int64_t x, int64_t y, const char *s, int scale,
                       const uint8_t color[3]);

#endif
