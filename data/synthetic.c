/* synthetic.c — the built-in datasets, generated on the fly and deterministically
 * from (data_seed, example): synthetic:shapes (textured shapes on cluttered,
 * class-tinted backgrounds: the wolves-on-snow trap) and synthetic:ultrasound
 * (speckled B-mode-like images with a smooth benign or spiculated malignant lesion). */
#include <stdio.h>
#include <string.h>

#include "data/internal.h"

#define PI 3.14159265358979323846

enum { SYN_SHAPES, SYN_ULTRASOUND };

typedef struct synth_ds {
  data_base b;
  int kind;
  uint64_t data_seed;
  double cue;
  int64_t count;
} synth_ds;

/* An approximately normal deviate, cheap, for pixel noise: the sum of four 16-bit
 * uniforms from one draw (Irwin-Hall), scaled to unit variance. */
static inline double fast_normal(data_rng *r) {
  uint64_t z = rng_u64(r);
  double s = (double)(z & 0xffff) + (double)((z >> 16) & 0xffff) + (double)((z >> 32) & 0xffff) + (double)(z >> 48);
  return (s * (1.0 / 65536.0) - 2.0) * 1.7320508075688772;
}

static void hsv(double h, double s, double v, float rgb[3]) {
  h = (h - floor(h)) * 6.0;
  int i = (int)h;
  double f = h - i, p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
  double r, g, b;
  switch (i % 6) {
  case 0: r = v, g = t, b = p; break;
  case 1: r = q, g = v, b = p; break;
  case 2: r = p, g = v, b = t; break;
  case 3: r = p, g = q, b = v; break;
  case 4: r = t, g = p, b = v; break;
  default: r = v, g = p, b = q; break;
  }
  rgb[0] = (float)r, rgb[1] = (float)g, rgb[2] = (float)b;
}

/* Quantizes a [0,1] value to 8 bits and back, so that the generated pixels are
 * exactly what a PNG of them decodes to. */
static inline float q8(double v) {
  int q = (int)(v * 255.0 + 0.5);
  return (float)(q < 0 ? 0 : q > 255 ? 255 : q) / 255.0f;
}

/* ---- synthetic:shapes ---- */

enum { SH_DISK, SH_SQUARE, SH_TRIANGLE, SH_STAR, SH_CROSS, SH_RING, SH_ELLIPSE, SH_DIAMOND };
enum { TX_STRIPES, TX_DOTS, TX_CHECKER, TX_SOLID };
static const char *const shape_names[8] = {"disk", "square", "triangle", "star", "cross", "ring", "ellipse", "diamond"};
static const char *const texture_names[4] = {"stripes", "dots", "checker", "solid"};
static const int base_texture[8] = {TX_STRIPES, TX_DOTS, TX_CHECKER, TX_STRIPES, TX_SOLID, TX_STRIPES, TX_CHECKER,
                                    TX_STRIPES};
static const double base_angle[8] = {0, 0, 0, 45, 0, 90, 45, 135};

/* Class k: shape k%8; classes 8.. reuse the shapes with the next textures and turned
 * patterns, so every class is a distinct (shape, texture) pair. */
static void shape_class(int64_t k, int *shape, int *tex, double *angle) {
  int v = (int)(k / 8);
  *shape = (int)(k % 8);
  *tex = (base_texture[*shape] + v) % 4;
  *angle = (base_angle[*shape] + 30.0 * v) * PI / 180.0;
}

static bool in_poly(const double *p, int n, double x, double y) {
  bool in = false;
  for (int i = 0, j = n - 1; i < n; j = i++) {
    double xi = p[2 * i], yi = p[2 * i + 1], xj = p[2 * j], yj = p[2 * j + 1];
    if ((yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi) in = !in;
  }
  return in;
}

typedef struct shape_geo {
  double tri[6], star[20];
} shape_geo;

static void shape_geo_init(shape_geo *g) {
  for (int i = 0; i < 3; i++) {
    double a = -PI / 2 + i * 2 * PI / 3;
    g->tri[2 * i] = cos(a), g->tri[2 * i + 1] = sin(a);
  }
  for (int i = 0; i < 10; i++) {
    double a = -PI / 2 + i * PI / 5, r = i % 2 ? 0.45 : 1.0;
    g->star[2 * i] = r * cos(a), g->star[2 * i + 1] = r * sin(a);
  }
}

/* Inside the shape, in the object's frame (units of its radius). */
static bool in_shape(const shape_geo *g, int shape, double u, double v) {
  switch (shape) {
  case SH_DISK: return u * u + v * v <= 1.0;
  case SH_SQUARE: return fabs(u) <= 0.8 && fabs(v) <= 0.8;
  case SH_TRIANGLE: return in_poly(g->tri, 3, u, v * 1.0 - 0.1);
  case SH_STAR: return in_poly(g->star, 10, u, v);
  case SH_CROSS: return (fabs(u) <= 0.3 && fabs(v) <= 0.95) || (fabs(v) <= 0.3 && fabs(u) <= 0.95);
  case SH_RING: { double r2 = u * u + v * v; return r2 <= 1.0 && r2 >= 0.55 * 0.55; }
  case SH_ELLIPSE: return u * u + (v / 0.58) * (v / 0.58) <= 1.0;
  default: return fabs(u) / 0.72 + fabs(v) <= 1.0; /* diamond */
  }
}

/* Second colour of the texture at (u,v) in the object's frame; (c,s) is the cosine
 * and sine of the pattern's angle. */
static bool texture_on(int tex, double c, double s, double u, double v) {
  double p = c * u + s * v, q = -s * u + c * v;
  switch (tex) {
  case TX_STRIPES: return p / 0.3 - floor(p / 0.3) < 0.5;
  case TX_DOTS: {
    double a = p / 0.4 - floor(p / 0.4) - 0.5, b = q / 0.4 - floor(q / 0.4) - 0.5;
    return a * a + b * b < 0.3 * 0.3;
  }
  case TX_CHECKER: return ((int64_t)floor(p / 0.34) + (int64_t)floor(q / 0.34)) & 1;
  default: return false;
  }
}

typedef struct clutter {
  int line;
  double bx0, by0, bx1, by1; /* bounding box */
  double x0, y0, x1, y1, r1, r2, ca, sa, thick; /* blob: centre (x0,y0), radii, cos/sin of its angle;
                                                  line: segment, thickness */
  float rgb[3];
} clutter;

static double seg_dist2(double px, double py, double ax, double ay, double bx, double by) {
  double dx = bx - ax, dy = by - ay, l2 = dx * dx + dy * dy;
  double t = l2 > 0 ? ((px - ax) * dx + (py - ay) * dy) / l2 : 0;
  t = t < 0 ? 0 : t > 1 ? 1 : t;
  double qx = ax + t * dx - px, qy = ay + t * dy - py;
  return qx * qx + qy * qy;
}

/* The background tint of an example: its class's with probability `cue` in the
 * training split, else another class's; uniform over the classes elsewhere. */
static int64_t shapes_tint(const synth_ds *s, int64_t idx, data_rng *r) {
  int64_t k = s->b.n_classes, label = s->b.labels[idx];
  if (s->b.split[idx] == KILN_SPLIT_TRAIN) {
    if (rng_unit(r) < s->cue || k < 2) return label;
    int64_t t = rng_below(r, k - 1);
    return t >= label ? t + 1 : t;
  }
  return rng_below(r, k);
}

static void render_shapes(const synth_ds *s, int64_t idx, kiln_image *img, kiln_image *mk) {
  int W = img->w, H = img->h;
  double S = W < H ? W : H, Ws = W / S, Hs = H / S;
  int64_t hw = (int64_t)W * H, label = s->b.labels[idx], K = s->b.n_classes;
  data_rng r = {data_seed3(s->data_seed, 0x5a4e5ull, (uint64_t)idx)};
  int64_t tint = shapes_tint(s, idx, &r);
  float bg[3];
  hsv((double)tint / (double)K + 0.08, 0.45, 0.82, bg);
  double ga = rng_range(&r, 0, 2 * PI), gx = cos(ga), gy = sin(ga);
  /* clutter: blobs and lines in colours of their own */
  clutter cl[12];
  int ncl = 4 + (int)rng_below(&r, 6);
  for (int i = 0; i < ncl; i++) {
    clutter *c = &cl[i];
    c->line = rng_unit(&r) < 0.45;
    c->x0 = rng_range(&r, 0, Ws), c->y0 = rng_range(&r, 0, Hs);
    if (c->line) {
      double a = rng_range(&r, 0, 2 * PI), len = rng_range(&r, 0.15, 0.5);
      c->x1 = c->x0 + len * cos(a), c->y1 = c->y0 + len * sin(a);
      c->thick = rng_range(&r, 0.006, 0.02);
    } else {
      c->r1 = rng_range(&r, 0.03, 0.09), c->r2 = c->r1 * rng_range(&r, 0.5, 1.0);
      double ang = rng_range(&r, 0, PI);
      c->ca = cos(ang), c->sa = sin(ang);
    }
    hsv(rng_unit(&r), rng_range(&r, 0.25, 0.7), rng_range(&r, 0.3, 0.95), c->rgb);
    double m = c->line ? c->thick : c->r1;
    c->bx0 = (c->line ? fmin(c->x0, c->x1) : c->x0) - m, c->bx1 = (c->line ? fmax(c->x0, c->x1) : c->x0) + m;
    c->by0 = (c->line ? fmin(c->y0, c->y1) : c->y0) - m, c->by1 = (c->line ? fmax(c->y0, c->y1) : c->y0) + m;
  }
  /* the object */
  int shape, tex;
  double tang;
  shape_class(label, &shape, &tex, &tang);
  double R = rng_range(&r, 0.17, 0.28), rot = rng_range(&r, 0, 2 * PI);
  double cx = rng_range(&r, 0.3, 0.7) * Ws, cy = rng_range(&r, 0.3, 0.7) * Hs;
  double hue = rng_unit(&r);
  float fg[3], fg2[3];
  hsv(hue, 0.75, 0.92, fg);
  hsv(hue + 0.04, 0.8, 0.42, fg2);
  double cr = cos(rot), sr = sin(rot), tc = cos(tang), ts = sin(tang);
  shape_geo geo;
  shape_geo_init(&geo);
  data_rng nr = {data_seed3(s->data_seed, 0x401ull, (uint64_t)idx)};
  for (int y = 0; y < H; y++)
    for (int x = 0; x < W; x++) {
      double X = (x + 0.5) / S, Y = (y + 0.5) / S;
      double shade = 0.88 + 0.24 * ((X / Ws - 0.5) * gx + (Y / Hs - 0.5) * gy);
      float c[3] = {(float)(bg[0] * shade), (float)(bg[1] * shade), (float)(bg[2] * shade)};
      for (int i = 0; i < ncl; i++) {
        const clutter *q = &cl[i];
        if (X < q->bx0 || X > q->bx1 || Y < q->by0 || Y > q->by1) continue;
        bool on;
        if (q->line) {
          on = seg_dist2(X, Y, q->x0, q->y0, q->x1, q->y1) <= q->thick * q->thick;
        } else {
          double dx = X - q->x0, dy = Y - q->y0;
          double u = (q->ca * dx + q->sa * dy) / q->r1, v = (-q->sa * dx + q->ca * dy) / q->r2;
          on = u * u + v * v <= 1.0;
        }
        if (on) memcpy(c, q->rgb, sizeof c);
      }
      double dx = X - cx, dy = Y - cy, u = (cr * dx + sr * dy) / R, v = (-sr * dx + cr * dy) / R;
      bool in = fabs(u) <= 1.0 && fabs(v) <= 1.0 && in_shape(&geo, shape, u, v);
      if (in) memcpy(c, texture_on(tex, tc, ts, u, v) ? fg2 : fg, sizeof c);
      int64_t p = (int64_t)y * W + x;
      for (int k = 0; k < 3; k++) img->px[k * hw + p] = q8(c[k] + 0.025 * fast_normal(&nr));
      if (mk) mk->px[p] = in ? 1.0f : 0.0f;
    }
}

/* ---- synthetic:ultrasound ---- */

typedef struct lesion {
  bool malignant;
  double cx, cy, a, b, rot;     /* centre, semi-axes, rotation */
  double harm_a[8], harm_c[8], harm_s[8]; /* margin harmonics: amplitude, cos and sin of the phase */
  int nspike;
  double sp_ang[16], sp_len[16], sp_w[16];
  double inside, rim, posterior; /* echo levels */
} lesion;

/* The lesion's boundary radius (relative, 1 = the ellipse) at the angle phi whose
 * cosine and sine are (c, s): harmonics by the Chebyshev recurrence, spicules by
 * angular distance. */
static double lesion_radius(const lesion *l, double c, double s) {
  double r = 1.0, ck = c, sk = s; /* cos(k phi), sin(k phi) for k = 1 */
  for (int k = 2; k < 8; k++) {
    double c2 = ck * c - sk * s, s2 = sk * c + ck * s;
    ck = c2, sk = s2;
    if (l->harm_a[k] != 0) r += l->harm_a[k] * (sk * l->harm_c[k] + ck * l->harm_s[k]);
  }
  if (l->nspike) {
    double phi = atan2(s, c);
    for (int i = 0; i < l->nspike; i++) {
      double d = phi - l->sp_ang[i];
      d -= 2 * PI * floor((d + PI) / (2 * PI));
      d = fabs(d) / l->sp_w[i];
      if (d < 1) r += l->sp_len[i] * (1 - d) * (1 - d);
    }
  }
  return r;
}

static void render_ultrasound(const synth_ds *s, int64_t idx, kiln_image *img, kiln_image *mk, kiln_err *e,
                              float *work) {
  int W = img->w, H = img->h;
  double S = W < H ? W : H, Ws = W / S, Hs = H / S;
  int64_t hw = (int64_t)W * H;
  data_rng r = {data_seed3(s->data_seed, 0x0175ull, (uint64_t)idx)};
  lesion L = {.malignant = s->b.labels[idx] == 0};
  L.cx = rng_range(&r, 0.32, 0.68) * Ws;
  L.cy = rng_range(&r, 0.38, 0.6) * Hs;
  memset(L.harm_a, 0, sizeof L.harm_a);
  if (L.malignant) {
    L.a = rng_range(&r, 0.1, 0.16);
    L.b = L.a * rng_range(&r, 0.85, 1.3); /* taller than wide */
    L.rot = rng_range(&r, -0.5, 0.5);
    for (int k = 3; k < 8; k++) {
      double ph = rng_range(&r, 0, 2 * PI);
      L.harm_a[k] = rng_range(&r, 0.03, 0.09), L.harm_c[k] = cos(ph), L.harm_s[k] = sin(ph);
    }
    L.nspike = 7 + (int)rng_below(&r, 8);
    for (int i = 0; i < L.nspike; i++) {
      L.sp_ang[i] = rng_range(&r, 0, 2 * PI);
      L.sp_len[i] = rng_range(&r, 0.25, 0.65);
      L.sp_w[i] = rng_range(&r, 0.06, 0.14);
    }
    L.inside = rng_range(&r, 0.1, 0.22);
    L.rim = 1.25;
    L.posterior = rng_range(&r, 0.3, 0.5); /* acoustic shadow */
  } else {
    L.a = rng_range(&r, 0.12, 0.2);
    L.b = L.a * rng_range(&r, 0.5, 0.75); /* wider than tall, parallel to the skin */
    L.rot = rng_range(&r, -0.3, 0.3);
    for (int k = 2; k < 4; k++) {
      double ph = rng_range(&r, 0, 2 * PI);
      L.harm_a[k] = rng_range(&r, 0.0, 0.03), L.harm_c[k] = cos(ph), L.harm_s[k] = sin(ph);
    }
    L.nspike = 0;
    L.inside = rng_range(&r, 0.16, 0.3);
    L.rim = 1.45;                            /* thin echogenic capsule */
    L.posterior = rng_range(&r, 1.15, 1.35); /* posterior enhancement */
  }
  double atten = rng_range(&r, 0.5, 1.1), ph1 = rng_range(&r, 0, 2 * PI), ph2 = rng_range(&r, 0, 2 * PI);
  double fat = rng_range(&r, 0.1, 0.2), gland = rng_range(&r, 0.55, 0.75), gain = rng_range(&r, 0.8, 1.0);
  /* speckle: a complex Gaussian field, blurred (wider laterally), its magnitude (Rayleigh) */
  data_rng nr = {data_seed3(s->data_seed, 0x5be0ull, (uint64_t)idx)};
  float *re = work, *im = work + hw, *tmp = work + 2 * hw;
  for (int64_t i = 0; i < hw; i++) re[i] = (float)fast_normal(&nr), im[i] = (float)fast_normal(&nr);
  static const float kx[5] = {1, 4, 6, 4, 1}, ky[3] = {1, 2, 1};
  for (int pass = 0; pass < 2; pass++) {
    float *f = pass ? im : re;
    for (int y = 0; y < H; y++)
      for (int x = 0; x < W; x++) {
        float acc = 0, ws = 0;
        for (int j = -2; j <= 2; j++)
          if (x + j >= 0 && x + j < W) acc += kx[j + 2] * f[(int64_t)y * W + x + j], ws += kx[j + 2];
        tmp[(int64_t)y * W + x] = acc / ws;
      }
    for (int y = 0; y < H; y++)
      for (int x = 0; x < W; x++) {
        float acc = 0, ws = 0;
        for (int j = -1; j <= 1; j++)
          if (y + j >= 0 && y + j < H) acc += ky[j + 1] * tmp[(int64_t)(y + j) * W + x], ws += ky[j + 1];
        f[(int64_t)y * W + x] = acc / ws;
      }
  }
  double mean = 0;
  for (int64_t i = 0; i < hw; i++) mean += sqrt((double)re[i] * re[i] + (double)im[i] * im[i]);
  mean = mean > 0 ? mean / (double)hw : 1;
  double ca = cos(L.rot), sa = sin(L.rot);
  /* per-column and per-row terms of the tissue model (sin(a+b) expanded) */
  double *cb1 = (double *)(work + ((3 * hw + 1) & ~(int64_t)1)), *cb2 = cb1 + W, *cb3 = cb2 + W, *s18 = cb3 + W,
         *c18 = s18 + W;
  double *s9 = c18 + W, *c9 = s9 + H, *att = c9 + H;
  for (int x = 0; x < W; x++) {
    double X = (x + 0.5) / S;
    cb1[x] = 0.035 + 0.01 * sin(6 * X + ph1), cb2[x] = fat + 0.03 * sin(4 * X + ph2), cb3[x] = 0.78 + 0.05 * sin(3 * X);
    s18[x] = sin(18 * X), c18[x] = cos(18 * X);
  }
  for (int y = 0; y < H; y++) {
    double depth = (y + 0.5) / S / Hs;
    s9[y] = sin(9 * depth), c9[y] = cos(9 * depth), att[y] = exp(-atten * depth);
  }
  for (int y = 0; y < H; y++)
    for (int x = 0; x < W; x++) {
      double X = (x + 0.5) / S, Y = (y + 0.5) / S, depth = Y / Hs;
      /* tissue layers: skin line, subcutaneous fat, glandular tissue, deeper tissue */
      double t = depth < cb1[x]   ? 0.95
                 : depth < cb2[x] ? 0.32
                 : depth < cb3[x] ? gland + 0.08 * (s18[x] * c9[y] + c18[x] * s9[y])
                                  : 0.4;
      double dx = X - L.cx, dy = Y - L.cy;
      double u = (ca * dx + sa * dy) / L.a, v = (-sa * dx + ca * dy) / L.b;
      double rr = sqrt(u * u + v * v);
      bool in = false;
      if (rr < 2.5) {
        double bound = rr > 0 ? lesion_radius(&L, u / rr, v / rr) : 1.0;
        in = rr <= bound;
        if (in) t *= L.inside * (L.malignant ? 1.0 + 0.35 * sin(40 * u + 30 * v) : 1.0);
        else if (rr <= bound * (L.malignant ? 1.18 : 1.07)) t *= L.rim;
      }
      /* behind the lesion: shadow (malignant) or enhancement (benign) */
      double half = L.a * 1.1, below = Y - (L.cy + L.b * 0.6);
      if (below > 0 && fabs(dx) < half) {
        double wgt = (1 - fabs(dx) / half) * (below < 0.06 ? below / 0.06 : 1.0);
        t *= 1 + (L.posterior - 1) * wgt;
      }
      int64_t p = (int64_t)y * W + x;
      double sp = sqrt((double)re[p] * re[p] + (double)im[p] * im[p]) / mean;
      double val = gain * t * att[y] * sp;
      float g = q8(1.0 - exp(-1.4 * val)); /* soft compression, as a display map would */
      img->px[p] = img->px[hw + p] = img->px[2 * hw + p] = g;
      if (mk) mk->px[p] = in ? 1.0f : 0.0f;
    }
  (void)e;
}

/* ---- the dataset ---- */

static kiln_code synth_get(kiln_dataset *d, int64_t idx, const data_aug *aug, bool normalize, float *image,
                           int64_t *label, float *mask, bool *has_mask, kiln_err *e) {
  synth_ds *s = d->impl;
  kiln_image img = {0}, mk = {0};
  float *work = NULL;
  int W = (int)d->w, H = (int)d->h;
  kiln_code rc;
  if ((rc = kiln_image_alloc(&img, W, H, 3, e)) || (rc = kiln_image_alloc(&mk, W, H, 1, e))) goto done;
  if (s->kind == SYN_SHAPES) {
    render_shapes(s, idx, &img, &mk);
  } else {
    /* three float planes, then per-column and per-row doubles */
    work = kiln_malloc(sizeof(float) * 3 * (size_t)W * H + sizeof(double) * (5 * (size_t)W + 3 * (size_t)H) + 8);
    if (!work) {
      rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
      goto done;
    }
    render_ultrasound(s, idx, &img, &mk, e, work);
  }
  rc = data_emit(&img, &mk, aug, normalize, W, H, image, mask, e);
  *label = s->b.labels[idx];
  *has_mask = true;
done:
  kiln_image_release(&img);
  kiln_image_release(&mk);
  kiln_free(work);
  return rc;
}

kiln_code data_open_synthetic(const char *name, const kiln_data_opts *o, kiln_dataset **out, kiln_err *e) {
  *out = NULL;
  int kind;
  int64_t K;
  if (!strcmp(name, "shapes")) {
    kind = SYN_SHAPES;
    K = o->synth_classes;
    if (K < 2 || K > 32)
      return kiln_errf(e, KILN_ERR_INVALID, "synthetic:shapes has 2 to 32 classes, not %lld", (long long)K);
  } else if (!strcmp(name, "ultrasound")) {
    kind = SYN_ULTRASOUND;
    K = 2;
  } else {
    return kiln_errf(e, KILN_ERR_INVALID, "unknown synthetic dataset 'synthetic:%s' (there are synthetic:shapes and "
                     "synthetic:ultrasound)", name);
  }
  if (o->count < 1 || o->count > 1000000)
    return kiln_errf(e, KILN_ERR_INVALID, "synthetic:%s: --count %lld is out of range (1..1000000 per class)", name,
                     (long long)o->count);
  if (o->height < 8 || o->width < 8 || o->height > 4096 || o->width > 4096)
    return kiln_errf(e, KILN_ERR_INVALID, "synthetic:%s: size %lldx%lld is out of range (8..4096)", name,
                     (long long)o->width, (long long)o->height);
  char full[64];
  snprintf(full, sizeof full, "synthetic:%s", name);
  kiln_dataset *d;
  KILN_TRY(data_new(sizeof(synth_ds), K * o->count, kind == SYN_SHAPES ? "synthetic:shapes" : "synthetic:ultrasound",
                    full, &d, e));
  synth_ds *s = d->impl;
  s->b.get_ex = synth_get;
  s->kind = kind;
  s->data_seed = o->data_seed;
  s->cue = o->cue;
  s->count = o->count;
  s->b.found = d->n;
  kiln_code rc;
  const char *us_names[2] = {"malignant", "benign"};
  char *sh_names[32];
  char buf[32][48];
  for (int64_t k = 0; k < K && kind == SYN_SHAPES; k++) {
    int shape, tex;
    double ang;
    shape_class(k, &shape, &tex, &ang);
    if (k < 8) snprintf(buf[k], sizeof buf[k], "%s", shape_names[shape]);
    else if (tex == TX_SOLID || tex == TX_DOTS)
      snprintf(buf[k], sizeof buf[k], "%s-%s", shape_names[shape], texture_names[tex]);
    else
      snprintf(buf[k], sizeof buf[k], "%s-%s%d", shape_names[shape], texture_names[tex], (int)lround(ang * 180 / PI));
    sh_names[k] = buf[k];
  }
  if ((rc = data_set_classes(&s->b, K, kind == SYN_SHAPES ? (const char *const *)sh_names : us_names, e))) goto fail;
  for (int64_t i = 0; i < d->n; i++) {
    char nm[64];
    s->b.labels[i] = i / o->count;
    s->b.mask_avail[i] = true;
    snprintf(nm, sizeof nm, "%s/%05lld", name, (long long)i);
    if (!(s->b.names[i] = kiln_strdup(nm))) {
      rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
      goto fail;
    }
  }
  d->h = o->height;
  d->w = o->width;
  /* the split first: the shapes' background tint depends on it */
  if ((rc = data_finish(d, o, false, e))) goto fail;
  *out = d;
  return KILN_OK;
fail:
  kiln_dataset_free(d);
  return rc;
}
