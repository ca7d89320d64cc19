/* aot_rt.c — the AOT runtime: parses a plan, owns the arena, runs the steps
 * with OpenMP.  Built as the static library libkiln_aot_rt.a and linked into
 * every `kiln compile -o lib.so` output. */
#include "runtime/aot_rt.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct aot_step {
  kiln_aot_kernel fn;
  int64_t n_tiles, n_args;
  const int64_t *args; /* buffer ids */
} aot_step;

typedef struct aot_model {
  const int64_t *plan;
  int64_t n_bufs, n_steps, n_in, n_out, arena_bytes, status_buf;
  int64_t passes; /* micro-batching: runs of the steps per call, one slice of the batch each */
  const int64_t *bufs; /* n_bufs x (kind, bytes, offset) */
  aot_step *steps;
  int64_t *in_buf, *out_buf;
  uint8_t *arena;
  uint8_t *weights_owned;
  const uint8_t *weights;
  void **ptrs; /* per buffer, resolved */
  void **argv;
  int64_t max_args;
  int threads;
} aot_model;

static int fail(char *err, size_t n, const char *msg) {
  if (err && n) snprintf(err, n, "%s", msg);
  return 1;
}

static const int64_t *skip_tensor_desc(const int64_t *p, int64_t *buf) {
  *buf = p[0];
  int64_t name_len = p[11];
  return p + 12 + (name_len + 7) / 8;
}

int kiln_aot_create(const int64_t *plan, const kiln_aot_kernel *kernels, const uint8_t *weights,
                    const char *weights_path, void **out, char *err, size_t errlen) {
  *out = NULL;
  if (plan[0] != KILN_AOT_MAGIC || plan[1] != KILN_AOT_VERSION) return fail(err, errlen, "bad plan (version mismatch)");
  aot_model *m = calloc(1, sizeof *m);
  if (!m) return fail(err, errlen, "out of memory");
  m->plan = plan;
  m->n_bufs = plan[2];
  m->arena_bytes = plan[3];
  m->n_steps = plan[4];
  m->n_in = plan[5];
  m->n_out = plan[6];
  int64_t weights_bytes = plan[7];
  m->status_buf = plan[8];
  m->passes = plan[9] > 1 ? plan[9] : 1;
  const int64_t *p = plan + 10;
  m->bufs = p;
  p += 3 * m->n_bufs;
  m->steps = calloc((size_t)(m->n_steps ? m->n_steps : 1), sizeof *m->steps);
  m->in_buf = calloc((size_t)m->n_in + 1, sizeof(int64_t));
  m->out_buf = calloc((size_t)m->n_out + 1, sizeof(int64_t));
  m->ptrs = calloc((size_t)(m->n_bufs ? m->n_bufs : 1), sizeof(void *));
  if (!m->steps || !m->in_buf || !m->out_buf || !m->ptrs) goto oom;
  for (int64_t s = 0; s < m->n_steps; s++) {
    m->steps[s].fn = kernels[p[0]];
    m->steps[s].n_tiles = p[1];
    m->steps[s].n_args = p[2];
    m->steps[s].args = p + 3;
    if (p[2] > m->max_args) m->max_args = p[2];
    p += 3 + p[2];
  }
  for (int64_t i = 0; i < m->n_in; i++) p = skip_tensor_desc(p, &m->in_buf[i]);
  for (int64_t i = 0; i < m->n_out; i++) p = skip_tensor_desc(p, &m->out_buf[i]);
  m->argv = calloc((size_t)m->max_args + 1, sizeof(void *));
  if (!m->argv) goto oom;
  if (weights) {
    m->weights = weights;
  } else {
    FILE *f = weights_path ? fopen(weights_path, "rb") : NULL;
    if (!f) {
      free(m->steps);
      free(m->in_buf);
      free(m->out_buf);
      free(m->ptrs);
      free(m->argv);
      free(m);
      return fail(err, errlen, "cannot open the weights file");
    }
    m->weights_owned = aligned_alloc(64, (size_t)(weights_bytes + 63) / 64 * 64 + 64);
    size_t got = m->weights_owned ? fread(m->weights_owned, 1, (size_t)weights_bytes, f) : 0;
    int extra = fgetc(f);
    fclose(f);
    if (!m->weights_owned || got != (size_t)weights_bytes || extra != EOF) {
      free(m->weights_owned);
      free(m->steps);
      free(m->in_buf);
      free(m->out_buf);
      free(m->ptrs);
      free(m->argv);
      free(m);
      return fail(err, errlen, "the weights file does not match this library (wrong size)");
    }
    m->weights = m->weights_owned;
  }
  m->arena = aligned_alloc(64, (size_t)(m->arena_bytes + 63) / 64 * 64 + 64);
  if (!m->arena) goto oom;
  memset(m->arena, 0, (size_t)m->arena_bytes); /* pre-fault once */
  for (int64_t b = 0; b < m->n_bufs; b++) {
    int64_t kind = m->bufs[3 * b], off = m->bufs[3 * b + 2];
    if (kind == KILN_AOT_BUF_ARENA) m->ptrs[b] = m->arena + off;
    else if (kind == KILN_AOT_BUF_CONST) m->ptrs[b] = (void *)(m->weights + off);
  }
  long nproc = sysconf(_SC_NPROCESSORS_ONLN);
  const char *env = getenv("KILN_NUM_THREADS");
  m->threads = env && atoi(env) > 0 ? atoi(env) : nproc > 0 ? (int)nproc : 1;
  *out = m;
  return 0;
oom:
  kiln_aot_destroy(m);
  return fail(err, errlen, "out of memory");
}

void kiln_aot_set_threads(void *mp, int threads) {
  aot_model *m = mp;
  if (threads > 0) m->threads = threads;
}

/* The steps once, over inputs already bound in m->ptrs. */
static void run_steps(aot_model *m) {
  for (int64_t s = 0; s < m->n_steps; s++) {
    const aot_step *st = &m->steps[s];
    for (int64_t a = 0; a < st->n_args; a++) m->argv[a] = st->args[a] < 0 ? NULL : m->ptrs[st->args[a]];
    int64_t n = st->n_tiles;
    int nt = m->threads < n ? m->threads : (int)n;
    if (nt <= 1) {
      st->fn(m->argv, 0, n);
      continue;
    }
    /* chunks claimed dynamically, as kiln_parallel_for (runtime/program.c) does */
    int64_t chunk = n / ((int64_t)nt * 8);
    if (chunk < 1) chunk = 1;
    int64_t n_chunks = (n + chunk - 1) / chunk;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int64_t c = 0; c < n_chunks; c++) {
      int64_t lo = c * chunk, hi = lo + chunk < n ? lo + chunk : n;
      st->fn(m->argv, lo, hi);
    }
  }
}

int kiln_aot_run(void *mp, const void *const *inputs, void *const *outputs) {
  aot_model *m = mp;
  int32_t *status = m->status_buf >= 0 ? (int32_t *)m->ptrs[m->status_buf] : NULL;
  /* micro-batched: the plan's buffers hold one slice; pass k reads and writes slice k */
  for (int64_t k = 0; k < m->passes; k++) {
    for (int64_t i = 0; i < m->n_in; i++) {
      int64_t b = m->in_buf[i];
      m->ptrs[b] = (void *)((const uint8_t *)inputs[i] + k * m->bufs[3 * b + 1]);
    }
    if (status) *status = 0;
    run_steps(m);
    for (int64_t i = 0; i < m->n_out; i++) {
      int64_t b = m->out_buf[i], bytes = m->bufs[3 * b + 1];
      memcpy((uint8_t *)outputs[i] + k * bytes, m->ptrs[b], (size_t)bytes);
    }
    /* a kernel found invalid data (an index or label out of range): outputs are not valid */
    if (status && *status) return 2;
  }
  return 0;
}

void kiln_aot_destroy(void *mp) {
  aot_model *m = mp;
  if (!m) return;
  free(m->steps);
  free(m->in_buf);
  free(m->out_buf);
  free(m->ptrs);
  free(m->argv);
  free(m->arena);
  free(m->weights_owned);
  free(m);
}
