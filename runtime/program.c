/* program.c — running a compiled program: resolve buffers, call each step's
 * kernel over its tiles with OpenMP, copy the outputs out. */
#include "runtime/program.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

kiln_code kiln_program_add_step(kiln_program *p, kiln_kernel_fn fn, const kiln_node *node,
                                const int *bufs, int n_args, int64_t n_tiles, kiln_err *e) {
  KILN_TRY(kiln_grow((void **)&p->steps, &p->cap_steps, p->n_steps + 1, sizeof(kiln_step), e));
  kiln_step *s = &p->steps[p->n_steps];
  memset(s, 0, sizeof *s);
  s->bufs = kiln_malloc(sizeof(int) * (size_t)(n_args ? n_args : 1));
  if (!s->bufs) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  if (n_args) memcpy(s->bufs, bufs, sizeof(int) * (size_t)n_args);
  s->fn = fn;
  s->node = node;
  s->n_args = n_args;
  s->n_tiles = n_tiles;
  if (node) {
    snprintf(s->label, sizeof s->label, "%s%s%s", node->def->name, node->name[0] ? " " : "", node->name);
    s->macs = node->def->macs ? node->def->macs(p->g, node) : 0;
  }
  p->n_steps++;
  return KILN_OK;
}

kiln_code kiln_program_add_buf(kiln_program *p, kiln_buf_kind kind, int64_t bytes, int *id, kiln_err *e) {
  KILN_TRY(kiln_grow((void **)&p->bufs, &p->cap_bufs, p->n_bufs + 1, sizeof(kiln_buf), e));
  kiln_buf *b = &p->bufs[p->n_bufs];
  memset(b, 0, sizeof *b);
  b->kind = kind;
  b->bytes = bytes;
  b->first = b->last = -1;
  b->alias_of = -1;
  *id = (int)p->n_bufs++;
  return KILN_OK;
}

int kiln_default_threads(void) {
  const char *env = getenv("KILN_NUM_THREADS");
  if (env && atoi(env) > 0) return atoi(env);
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

void kiln_parallel_for(kiln_kernel_fn fn, void **args, int64_t n_tiles, int threads) {
  if (n_tiles <= 0) return;
  if (threads <= 1 || n_tiles == 1) {
    fn(args, 0, n_tiles);
    return;
  }
  int nt = threads < n_tiles ? threads : (int)n_tiles;
  /* Tiles are claimed dynamically in chunks (about 8 per thread), not split statically:
   * a thread that the OS preempts, or whose tiles are heavier (border tiles of a conv),
   * no longer holds the others at the end of the kernel.  Each tile's result does not
   * depend on which thread computes it, so outputs are identical for any nt. */
  int64_t chunk = n_tiles / ((int64_t)nt * 8);
  if (chunk < 1) chunk = 1;
  int64_t n_chunks = (n_tiles + chunk - 1) / chunk;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
  for (int64_t c = 0; c < n_chunks; c++) {
    int64_t lo = c * chunk, hi = lo + chunk < n_tiles ? lo + chunk : n_tiles;
    fn(args, lo, hi);
  }
}

static void *buf_ptr(const kiln_program *p, int id, void **input_ptrs) {
  const kiln_buf *b = &p->bufs[id];
  while (b->alias_of >= 0) b = &p->bufs[b->alias_of];
  switch (b->kind) {
  case KILN_BUF_ARENA: return p->arena + b->offset;
  case KILN_BUF_CONST:
  case KILN_BUF_STATE: return b->data;
  case KILN_BUF_INPUT: return input_ptrs[b - p->bufs];
  default: return NULL;
  }
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static double cpu_now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

kiln_shape kiln_program_io_shape(const kiln_program *p, int value_id) {
  kiln_shape s = p->g->values[value_id].shape;
  if (p->micro > 1 && s.rank >= 1) s.d[0] *= p->micro;
  return s;
}

/* The steps in order, once, with graph inputs at input_ptrs. */
static kiln_code run_steps(kiln_program *p, void **input_ptrs, bool profile, kiln_err *e) {
  const kiln_graph *g = p->g;
  kiln_code rc = KILN_OK;
  void *argv_store[256];
  int32_t *status = p->status_buf >= 0 ? (int32_t *)buf_ptr(p, p->status_buf, input_ptrs) : NULL;
  if (status) *status = 0;
  for (int64_t s = 0; s < p->n_steps; s++) {
    kiln_step *st = &p->steps[s];
    double t0 = profile ? now_s() : 0, c0 = profile ? cpu_now_s() : 0;
    if (st->n_args > 256) {
      return kiln_errf(e, KILN_ERR_LIMIT, "step %s has too many arguments", st->label);
    }
    for (int a = 0; a < st->n_args; a++)
      argv_store[a] = st->bufs[a] < 0 ? NULL : buf_ptr(p, st->bufs[a], input_ptrs);
    if (st->fn) {
      kiln_parallel_for(st->fn, argv_store, st->n_tiles, p->threads);
      if (st->error && status && *status) {
        char lbl[200];
        rc = kiln_errf(e, KILN_ERR_INVALID, "%s: %s", st->node ? ir_node_label(st->node, lbl, sizeof lbl) : st->label,
                       st->error);
        return rc;
      }
    } else {
      /* Reference-kernel step: wrap the buffers as tensors. Args are the node's
       * inputs then outputs (-1 buffers for omitted ones). */
      const kiln_node *n = st->node;
      kiln_tensor tin[64], tout[16];
      const kiln_tensor *pin[64];
      kiln_tensor *pout[16];
      for (int k = 0; k < n->n_in && k < 64; k++) {
        const kiln_value *v = ir_in(g, n, k);
        pin[k] = NULL;
        if (!v) continue;
        memset(&tin[k], 0, sizeof tin[k]);
        tin[k].dtype = v->dtype;
        tin[k].shape = v->shape;
        kiln_shape_numel(&v->shape, &tin[k].numel);
        tin[k].data = argv_store[k];
        tin[k].borrowed = true;
        pin[k] = &tin[k];
      }
      for (int o = 0; o < n->n_out && o < 16; o++) {
        const kiln_value *v = ir_out(g, n, o);
        pout[o] = NULL;
        if (!v) continue;
        memset(&tout[o], 0, sizeof tout[o]);
        tout[o].dtype = v->dtype;
        tout[o].shape = v->shape;
        kiln_shape_numel(&v->shape, &tout[o].numel);
        tout[o].data = argv_store[n->n_in + o];
        tout[o].borrowed = true;
        pout[o] = &tout[o];
      }
      kiln_ref_ctx ctx = {.g = g, .training = false, .seed = 0};
      rc = kiln_ref_kernel(n->op)(&ctx, n, pin, pout, e);
      if (rc) {
        char lbl[200];
        kiln_err_prefix(e, "%s", ir_node_label(n, lbl, sizeof lbl));
        return rc;
      }
    }
    if (profile) {
      p->step_seconds[s] += now_s() - t0;
      p->step_cpu_seconds[s] += cpu_now_s() - c0;
    }
  }
  return KILN_OK;
}

kiln_code kiln_program_run(kiln_program *p, kiln_tensor *const *inputs, kiln_tensor **outputs,
                           bool profile, kiln_err *e) {
  const kiln_graph *g = p->g;
  kiln_code rc = KILN_OK;
  int64_t passes = p->micro > 1 ? p->micro : 1;
  void **input_ptrs = kiln_calloc((size_t)(p->n_bufs ? p->n_bufs : 1), sizeof(void *));
  for (int i = 0; i < g->n_outputs; i++) outputs[i] = NULL;
  if (!input_ptrs) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  for (int i = 0; i < g->n_inputs; i++) {
    const kiln_value *v = &g->values[g->inputs[i]];
    char a[160], b[160];
    if (p->bufs[g->inputs[i]].kind == KILN_BUF_STATE) continue; /* program-owned */
    if (!inputs[i]) {
      rc = kiln_errf(e, KILN_ERR_INVALID, "input '%s' was not given", v->name);
      goto done;
    }
    kiln_shape want = kiln_program_io_shape(p, g->inputs[i]);
    if (inputs[i]->dtype != v->dtype || !kiln_shape_eq(&inputs[i]->shape, &want)) {
      rc = kiln_errf(e, KILN_ERR_SHAPE, "input '%s' is %s %s; the model expects %s %s", v->name,
                     kiln_dtype_name(inputs[i]->dtype), kiln_shape_str(&inputs[i]->shape, a, sizeof a),
                     kiln_dtype_name(v->dtype), kiln_shape_str(&want, b, sizeof b));
      goto done;
    }
  }
  if (profile && !p->step_seconds) {
    p->step_seconds = kiln_calloc((size_t)(p->n_steps ? p->n_steps : 1), sizeof(double));
    p->step_cpu_seconds = kiln_calloc((size_t)(p->n_steps ? p->n_steps : 1), sizeof(double));
    if (!p->step_seconds || !p->step_cpu_seconds) {
      kiln_free(p->step_seconds);
      kiln_free(p->step_cpu_seconds);
      p->step_seconds = p->step_cpu_seconds = NULL;
      rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
      goto done;
    }
  }
  for (int i = 0; i < g->n_outputs; i++) {
    const kiln_value *v = &g->values[g->outputs[i]];
    kiln_shape s = kiln_program_io_shape(p, g->outputs[i]);
    rc = kiln_tensor_new(v->dtype, &s, &outputs[i], e);
    if (rc) goto done;
  }
  /* micro-batched: each pass reads and writes one slice of the batch (its samples are
   * contiguous: axis 0 is the outermost) */
  for (int64_t pass = 0; pass < passes; pass++) {
    for (int i = 0; i < g->n_inputs; i++) {
      if (p->bufs[g->inputs[i]].kind == KILN_BUF_STATE) continue;
      int64_t slice = kiln_tensor_nbytes(inputs[i]) / passes;
      input_ptrs[g->inputs[i]] = (char *)inputs[i]->data + pass * slice;
    }
    rc = run_steps(p, input_ptrs, profile, e);
    if (rc) goto done;
    /* state updates become the next run's state */
    for (int i = 0; i < p->n_state; i++) {
      const kiln_buf *bo = &p->bufs[p->state_out[i]];
      void *dst = p->bufs[p->state_in[i]].data;
      const void *src = buf_ptr(p, p->state_out[i], input_ptrs);
      if (dst != src && bo->bytes) memcpy(dst, src, (size_t)bo->bytes);
    }
    for (int i = 0; i < g->n_outputs; i++) {
      const kiln_value *v = &g->values[g->outputs[i]];
      int64_t slice = kiln_tensor_nbytes(outputs[i]) / passes;
      const void *src = v->data ? v->data->data : buf_ptr(p, g->outputs[i], input_ptrs);
      if (slice) memcpy((char *)outputs[i]->data + pass * slice, src, (size_t)slice);
    }
  }
done:
  if (rc)
    for (int i = 0; i < g->n_outputs; i++) {
      kiln_tensor_free(outputs[i]);
      outputs[i] = NULL;
    }
  kiln_free(input_ptrs);
  return rc;
}

int kiln_program_state_index(const kiln_program *p, int value_id) {
  for (int i = 0; i < p->n_state; i++)
    if (p->state_in[i] == value_id) return i;
  return -1;
}

void *kiln_program_state_data(kiln_program *p, int i, int64_t *bytes) {
  kiln_buf *b = &p->bufs[p->state_in[i]];
  if (bytes) *bytes = b->bytes;
  return b->data;
}

void kiln_program_free(kiln_program *p) {
  if (!p) return;
  kiln_free(p->state_in);
  kiln_free(p->state_out);
  for (int64_t s = 0; s < p->n_steps; s++) kiln_free(p->steps[s].bufs);
  kiln_free(p->steps);
  for (int64_t b = 0; b < p->n_bufs; b++)
    if (p->bufs[b].owned_data) free(p->bufs[b].data);
  kiln_free(p->bufs);
  free(p->arena);
  kiln_free(p->step_seconds);
  kiln_free(p->step_cpu_seconds);
  if (p->aot_module && p->aot_free) p->aot_free(p->aot_module);
  if (p->jit && p->jit_free) p->jit_free(p->jit);
  ir_graph_free(p->g);
  kiln_free(p);
}
