/* emit_upconv_phases.c — nearest upsampling by integer scales followed by a stride-1
 * convolution, run on the low-resolution input as phase convolutions (emit_upconv.h).
 *
 * Along a dim with scale s, output o = s*i + p reads upsampled position s*i + q
 * (q = p + k*dil - pad_b) for tap k, which is X[i + floor(q / s)] — or zero padding exactly
 * when i + floor(q / s) is outside X, since 0 <= q mod s < s.  So phase p is a convolution
 * over X with one tap per distinct offset a = floor(q / s), its weights the sums of the taps
 * that share it (2 taps for s = 2 and a 3-tap kernel), writing every s-th output from p on.
 * Dims with s = 1 keep their taps.
 *
 * How the phases run:
 *  - One zero-padded copy of X serves every phase (each phase reads it at its own offset, a
 *    crop conv_gen reads in place), instead of one padded copy per phase.
 *  - The W phases run in one kernel (conv_gen's column phases): they share the input vectors
 *    and their outputs are interleaved in registers, so every line of Y is written once, in
 *    whole vectors.  Separate W phase kernels each stored every s-th element of every line,
 *    and each swept all of Y: at batch 8 the SPN's last block (16 x 224 x 224 per image)
 *    spent 1.6x per image what it spent at batch 1.
 *  - The D and H phases are separate kernels (their outputs are whole lines of Y).
 * Each phase's outputs take the same weights and the same FMA sequence as a phase kernel of
 * its own: results do not depend on how the phases are grouped. */
#include <stdint.h>
#include <string.h>

#include "codegen/conv_gen.h"
#include "codegen/emit_copy.h"
#include "codegen/emit_upconv.h"

static int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

/* The taps of one phase along one dim: X index o + a0 + t*dil for t in [0, k), o in [0, n). */
typedef struct phase_taps {
  int64_t a0, amax, k, dil, n;
  int64_t map[64]; /* original tap j -> this phase's tap t */
} phase_taps;

static void phase_taps_of(const cg_upconv *u, int d, int64_t p, phase_taps *pt) {
  int64_t s = u->s[d], k = u->k[d];
  if (s == 1) { /* the dim's own taps */
    pt->a0 = -u->pad_b[d];
    pt->amax = pt->a0 + (k - 1) * u->dil[d];
    pt->k = k, pt->dil = u->dil[d], pt->n = u->out[d];
    for (int64_t j = 0; j < k; j++) pt->map[j] = j;
    return;
  }
  int64_t amin = INT64_MAX, amax = INT64_MIN;
  for (int64_t j = 0; j < k; j++) {
    int64_t a = floor_div(p + j * u->dil[d] - u->pad_b[d], s);
    pt->map[j] = a;
    if (a < amin) amin = a;
    if (a > amax) amax = a;
  }
  for (int64_t j = 0; j < k; j++) pt->map[j] -= amin;
  pt->a0 = amin, pt->amax = amax, pt->k = amax - amin + 1, pt->dil = 1;
  pt->n = u->out[d] > p ? (u->out[d] - 1 - p) / s + 1 : 0;
}

bool cg_upconv_phases_ok(const cg_upconv *u) {
  for (int d = 0; d < 3; d++)
    if (u->s[d] < 1 || u->k[d] < 1 || u->k[d] > 64) return false;
  return true;
}

/* The zero-padded copy of X (N*C planes of L[0] x L[1] x L[2]; X starts at pb). */
typedef struct pad_map {
  const int64_t *pb, *low;
} pad_map;
static int64_t pad_src(int d, int64_t i, const void *user) {
  const pad_map *m = user;
  int64_t s = i - m->pb[d];
  return s < 0 || s >= m->low[d] ? -1 : s;
}

/* The weights of one (D, H) phase with its W phases: rows (oc, ic) of [wph][pk] taps, tap j of
 * the original kernel going to tap (m0[j0], m1[j1], mw[ph][j2]); taps outside a W phase's
 * range are 0.  Constant weights `w` are summed here in double into *pw (the caller frees it);
 * otherwise a kernel sums w_buf's in float32 into the scratch buffer *pw_buf, in the same order
 * (ascending original taps). */
static kiln_code phase_weights(kiln_emit_ctx *cx, const cg_upconv *u, const float *w, int w_buf,
                               const phase_taps *t0, const phase_taps *t1, const phase_taps *tw,
                               int wph, int64_t kw_u, float **pw, int *pw_buf, kiln_err *e) {
  int64_t cg = u->C / u->groups, rows = u->OC * cg;
  int64_t kk = u->k[0] * u->k[1] * u->k[2], pk = t0->k * t1->k * kw_u, dr = wph * pk;
  size_t n_src = (size_t)(wph * kk > 0 ? wph * kk : 1);
  int64_t *dst = kiln_malloc(sizeof(int64_t) * n_src);
  int64_t *start = kiln_calloc((size_t)dr + 1, sizeof(int64_t));
  int64_t *src = kiln_malloc(sizeof(int64_t) * n_src);
  int64_t *fill = kiln_malloc(sizeof(int64_t) * (size_t)(dr ? dr : 1));
  kiln_code rc = KILN_OK;
  *pw = NULL;
  *pw_buf = -1;
  if (!dst || !start || !src || !fill) {
    rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory (phase weights)");
    goto done;
  }
  /* dst[ph * kk + j]: where original tap j goes for phase ph; then a counting sort (stable, so
   * each destination lists its sources in ascending order) */
  for (int ph = 0; ph < wph; ph++)
    for (int64_t j0 = 0; j0 < u->k[0]; j0++)
      for (int64_t j1 = 0; j1 < u->k[1]; j1++)
        for (int64_t j2 = 0; j2 < u->k[2]; j2++) {
          int64_t j = (j0 * u->k[1] + j1) * u->k[2] + j2;
          int64_t tp = (t0->map[j0] * t1->k + t1->map[j1]) * kw_u + tw[ph].map[j2];
          dst[ph * kk + j] = ph * pk + tp;
          start[ph * pk + tp + 1]++;
        }
  for (int64_t i = 0; i < dr; i++) start[i + 1] += start[i];
  memcpy(fill, start, sizeof(int64_t) * (size_t)dr);
  for (int ph = 0; ph < wph; ph++)
    for (int64_t j = 0; j < kk; j++) src[fill[dst[ph * kk + j]]++] = j;
  if (!w) {
    *pw_buf = cg_buf_scratch(cx, sizeof(float) * (size_t)(rows * dr > 0 ? rows * dr : 1), e);
    if (*pw_buf < 0) {
      rc = e->code;
      goto done;
    }
    cg_wfold f = {.rows = rows, .src_row = kk, .dst_row = dr, .start = start, .src = src};
    rc = cg_emit_weight_fold(cx, "upsample_conv_phase_wfold", &f, w_buf, *pw_buf, e);
    goto done;
  }
  *pw = kiln_malloc(sizeof(float) * (size_t)(rows * dr > 0 ? rows * dr : 1));
  if (!*pw) {
    rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory (phase weights)");
    goto done;
  }
  for (int64_t r = 0; r < rows; r++)
    for (int64_t t = 0; t < dr; t++) {
      double acc = 0;
      for (int64_t i = start[t]; i < start[t + 1]; i++) acc += w[r * kk + src[i]];
      (*pw)[r * dr + t] = (float)acc;
    }
done:
  kiln_free(dst);
  kiln_free(start);
  kiln_free(src);
  kiln_free(fill);
  return rc;
}

kiln_code cg_emit_upconv_phases(kiln_emit_ctx *cx, const cg_upconv *u, const float *w,
                                int w_buf, const cg_conv_epilogue *epi, int x_buf, int y_buf,
                                kiln_err *e) {
  if (!cg_upconv_phases_ok(u))
    return kiln_errf(e, KILN_ERR_INTERNAL, "upsample-conv phases: unsupported geometry");
  /* W phases run together when there are a few of them */
  bool merge_w = u->s[2] > 1 && u->s[2] <= CG_MAX_WPH;
  int64_t nph[3] = {u->s[0], u->s[1], merge_w ? 1 : u->s[2]};
  int wph = merge_w ? (int)u->s[2] : 1;
  /* the part of X (and its padding) any phase reads, per dim */
  int64_t lo[3], hi[3], pb[3], L[3];
  bool pad = false;
  for (int d = 0; d < 3; d++) {
    lo[d] = INT64_MAX, hi[d] = INT64_MIN;
    int64_t ncols = d == 2 && merge_w ? (u->out[2] + u->s[2] - 1) / u->s[2] : 0;
    for (int64_t p = 0; p < u->s[d]; p++) {
      phase_taps pt;
      phase_taps_of(u, d, p, &pt);
      int64_t n = ncols ? ncols : pt.n; /* merged W phases all compute the widest's columns */
      if (n == 0) continue;
      if (pt.a0 < lo[d]) lo[d] = pt.a0;
      if (n - 1 + pt.amax > hi[d]) hi[d] = n - 1 + pt.amax;
    }
    if (lo[d] > hi[d]) return KILN_OK; /* no outputs */
    pb[d] = lo[d] < 0 ? -lo[d] : 0;
    int64_t pe = hi[d] >= u->low[d] ? hi[d] - u->low[d] + 1 : 0;
    L[d] = u->low[d] + pb[d] + pe;
    pad |= pb[d] || pe;
  }
  int xp_buf = x_buf;
  if (pad) {
    int64_t bytes;
    if (!kiln_mul_ok(u->N * u->C * L[0], L[1] * L[2] * 4, &bytes))
      return kiln_errf(e, KILN_ERR_INVALID, "upsample-conv: padded input too large");
    xp_buf = cg_buf_scratch(cx, (size_t)bytes, e);
    if (xp_buf < 0) return e->code;
    pad_map pm = {pb, u->low};
    KILN_TRY(cg_emit_plane_gather(cx, "upsample_conv_pad", u->N * u->C, u->low, L, pad_src, &pm,
                                  x_buf, xp_buf, e));
  }
  for (int64_t p0 = 0; p0 < nph[0]; p0++)
    for (int64_t p1 = 0; p1 < nph[1]; p1++)
      for (int64_t p2 = 0; p2 < nph[2]; p2++) {
        phase_taps t0, t1, tw[CG_MAX_WPH];
        phase_taps_of(u, 0, p0, &t0);
        phase_taps_of(u, 1, p1, &t1);
        if (t0.n == 0 || t1.n == 0) continue;
        cg_conv_geom pg = {.N = u->N, .C = u->C, .OC = u->OC, .groups = u->groups};
        const phase_taps *td[2] = {&t0, &t1};
        for (int d = 0; d < 2; d++) {
          pg.in[d] = L[d];
          pg.xform[d] = CG_IN_PLAIN, pg.xfactor[d] = 1, pg.stride[d] = 1;
          pg.k[d] = td[d]->k, pg.dil[d] = td[d]->dil;
          pg.pad_b[d] = -(td[d]->a0 + pb[d]);
          pg.out[d] = td[d]->n;
          pg.pad_e[d] = pg.out[d] - 1 + (pg.k[d] - 1) * pg.dil[d] + 1 - L[d] - pg.pad_b[d];
          pg.ostride[d] = u->s[d], pg.ooff[d] = d ? p1 : p0, pg.ydims[d] = u->out[d];
        }
        /* W: one phase, or the union of the merged phases' windows */
        int64_t a0 = INT64_MAX, a1 = INT64_MIN;
        for (int ph = 0; ph < wph; ph++) {
          phase_taps_of(u, 2, merge_w ? ph : p2, &tw[ph]);
          if (tw[ph].a0 < a0) a0 = tw[ph].a0;
          if (tw[ph].amax > a1) a1 = tw[ph].amax;
        }
        pg.in[2] = L[2];
        pg.xform[2] = CG_IN_PLAIN, pg.xfactor[2] = 1, pg.stride[2] = 1;
        pg.ydims[2] = u->out[2];
        if (merge_w) {
          pg.k[2] = a1 - a0 + 1, pg.dil[2] = 1;
          pg.out[2] = tw[0].n; /* phase 0 has the most columns */
          pg.ostride[2] = wph, pg.ooff[2] = 0, pg.wph = wph;
          for (int ph = 0; ph < wph; ph++) {
            pg.wph_lo[ph] = tw[ph].a0 - a0;
            pg.wph_hi[ph] = tw[ph].amax - a0 + 1;
            for (int64_t j = 0; j < u->k[2]; j++) tw[ph].map[j] += tw[ph].a0 - a0;
          }
        } else {
          if (tw[0].n == 0) continue;
          pg.k[2] = tw[0].k, pg.dil[2] = tw[0].dil;
          pg.out[2] = tw[0].n;
          pg.ostride[2] = u->s[2], pg.ooff[2] = p2;
        }
        pg.pad_b[2] = -(a0 + pb[2]);
        pg.pad_e[2] = pg.out[2] - 1 + (pg.k[2] - 1) * pg.dil[2] + 1 - L[2] - pg.pad_b[2];
        int64_t pk = pg.k[0] * pg.k[1] * pg.k[2], cg = u->C / u->groups;
        float *pw;
        int pw_buf;
        KILN_TRY(phase_weights(cx, u, w, w_buf, &t0, &t1, tw, wph, pg.k[2], &pw, &pw_buf, e));
        cg_conv_weights cw = {.buf = pw_buf, .data = pw, .off = 0,
                              .g_stride = (u->OC / u->groups) * cg * wph * pk,
                              .oc_stride = cg * wph * pk, .ic_stride = wph * pk,
                              .tap_stride = 1, .ph_stride = pk};
        kiln_code rc = cg_emit_conv(cx, "upsample_conv_phase", &pg, &cw, epi, xp_buf, y_buf, e);
        kiln_free(pw);
        KILN_TRY(rc);
      }
  return KILN_OK;
}
