#define _GNU_SOURCE /* qsort_r */
/* memplan.c — the static memory planner: places every arena buffer of a
 * compiled program at an offset so that buffers whose lifetimes overlap never
 * overlap in memory, and lets elementwise steps write in place over an input
 * that dies at that step.
 *
 * Lifetimes are step intervals [first write, last read]; graph outputs live to
 * the end.  Placement is greedy by size (largest first, lowest fitting offset),
 * which packs the long-lived large activations first and fills gaps with small
 * ones: O(n^2) in buffers, fine for thousands. */
#include <stdlib.h>
#include <string.h>

#include "passes/memplan.h"

#define ALIGN 64

static int64_t align_up(int64_t x) { return (x + ALIGN - 1) / ALIGN * ALIGN; }

static int root_of(const kiln_program *p, int b) {
  while (p->bufs[b].alias_of >= 0) b = p->bufs[b].alias_of;
  return b;
}

static void compute_lifetimes(kiln_program *p) {
  for (int64_t b = 0; b < p->n_bufs; b++) p->bufs[b].first = p->bufs[b].last = -1;
  for (int64_t s = 0; s < p->n_steps; s++) {
    const kiln_step *st = &p->steps[s];
    for (int a = 0; a < st->n_args; a++) {
      int b = st->bufs[a];
      if (b < 0) continue;
      b = root_of(p, b);
      kiln_buf *buf = &p->bufs[b];
      if (buf->first < 0) buf->first = s;
      if (buf->last < s) buf->last = s;
    }
  }
  /* graph outputs must survive until the program ends */
  const kiln_graph *g = p->g;
  for (int i = 0; i < g->n_outputs; i++) {
    int b = root_of(p, g->outputs[i]);
    if (p->bufs[b].first < 0) p->bufs[b].first = 0;
    p->bufs[b].last = p->n_steps;
  }
  /* the status word is cleared before the first step and read after flagged ones */
  if (p->status_buf >= 0) {
    p->bufs[p->status_buf].first = 0;
    p->bufs[p->status_buf].last = p->n_steps;
  }
  /* state updates are copied back after the last step */
  for (int i = 0; i < p->n_state; i++) {
    int b = root_of(p, p->state_out[i]);
    if (p->bufs[b].first < 0) p->bufs[b].first = 0;
    p->bufs[b].last = p->n_steps;
  }
}

/* In place: step s computes an elementwise node whose output 0 has the size of
 * input 0, and input 0 is an arena buffer not read after s (and not a graph
 * output): the output reuses input 0's storage. */
static void plan_inplace(kiln_program *p) {
  compute_lifetimes(p);
  for (int64_t s = 0; s < p->n_steps; s++) {
    kiln_step *st = &p->steps[s];
    const kiln_node *n = st->node;
    if (!st->fn || !n || !(n->def->flags & KILN_OPF_INPLACE_OK) || n->n_in < 1 || n->n_out < 1) continue;
    if (st->n_args < n->n_in + 1) continue;
    int in0 = n->in[0], out0 = n->out[0];
    if (in0 < 0 || out0 < 0) continue;
    int rin = root_of(p, in0);
    kiln_buf *bi = &p->bufs[rin], *bo = &p->bufs[out0];
    if (bi->kind != KILN_BUF_ARENA || bo->kind != KILN_BUF_ARENA || bo->alias_of >= 0) continue;
    if (bi->bytes != bo->bytes || bi->last != s) continue;
    /* input 0 must not also be another argument of this step (e.g. Add(x, x)) */
    bool reused = false;
    for (int k = 1; k < n->n_in; k++)
      if (n->in[k] >= 0 && root_of(p, n->in[k]) == rin) reused = true;
    if (reused) continue;
    bo->alias_of = rin;
    /* the merged buffer now lives as long as the output */
    compute_lifetimes(p);
  }
}

typedef struct placed {
  int64_t off, end, first, last;
} placed;

static int by_size_desc(const void *a, const void *b, void *ctx) {
  const kiln_program *p = ctx;
  int64_t sa = p->bufs[*(const int *)a].bytes, sb = p->bufs[*(const int *)b].bytes;
  if (sa != sb) return sa < sb ? 1 : -1;
  return *(const int *)a - *(const int *)b; /* deterministic */
}

kiln_code kiln_memplan(kiln_program *p, bool inplace, kiln_err *e) {
  if (inplace) plan_inplace(p);
  else compute_lifetimes(p);
  int64_t n = p->n_bufs;
  int *order = kiln_malloc(sizeof(int) * (size_t)(n ? n : 1));
  placed *pl = kiln_malloc(sizeof(placed) * (size_t)(n ? n : 1));
  if (!order || !pl) {
    kiln_free(order);
    kiln_free(pl);
    return kiln_errf(e, KILN_ERR_NOMEM, "out of memory (memory planner)");
  }
  int64_t k = 0, total = 0;
  for (int64_t b = 0; b < n; b++) {
    kiln_buf *buf = &p->bufs[b];
    if (buf->kind != KILN_BUF_ARENA || buf->alias_of >= 0) continue;
    if (buf->first < 0) buf->first = buf->last = 0; /* never used: give it a slot anyway */
    order[k++] = (int)b;
    total += align_up(buf->bytes);
  }
  qsort_r(order, (size_t)k, sizeof(int), by_size_desc, p);
  int64_t np = 0, peak = 0;
  for (int64_t i = 0; i < k; i++) {
    kiln_buf *buf = &p->bufs[order[i]];
    int64_t size = align_up(buf->bytes ? buf->bytes : 1);
    /* candidate offsets: 0 and the end of every placed buffer whose lifetime overlaps */
    int64_t best = -1;
    for (int64_t c = -1; c < np; c++) {
      int64_t off;
      if (c < 0)
        off = 0;
      else {
        if (pl[c].last < buf->first || pl[c].first > buf->last) continue;
        off = pl[c].end;
      }
      if (best >= 0 && off >= best) continue;
      bool fits = true;
      for (int64_t q = 0; q < np && fits; q++) {
        if (pl[q].last < buf->first || pl[q].first > buf->last) continue;
        if (off < pl[q].end && pl[q].off < off + size) fits = false;
      }
      if (fits) best = off;
    }
    buf->offset = best;
    pl[np++] = (placed){best, best + size, buf->first, buf->last};
    if (best + size > peak) peak = best + size;
  }
  p->arena_bytes = peak;
  p->unplanned_bytes = total;
  kiln_free(order);
  kiln_free(pl);
  return KILN_OK;
}
