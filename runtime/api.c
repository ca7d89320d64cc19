/* api.c — the public C API (include/kiln.h): models, sessions, tensors.
 * A model is a loaded, shape-inferred graph; a session is either a compiled
 * program (JIT) or a graph run by the reference interpreter. */
#include <stdlib.h>
#include <string.h>

#include "codegen/aot.h"
#include "codegen/compile.h"
#include "frontend/onnx.h"
#include "kiln.h"
#include "passes/pass.h"
#include "runtime/ref.h"

struct kiln_model {
  kiln_graph *g;
};

struct kiln_session {
  kiln_backend backend;
  kiln_program *prog;  /* JIT */
  kiln_graph *g;       /* REF: the graph (owned) */
  kiln_step_profile *profile;
  int64_t n_profile;
  int threads;
};

const char *kiln_version(void) { return "0.1.0"; }

kiln_options kiln_options_default(void) {
  kiln_options o;
  memset(&o, 0, sizeof o);
  o.backend = KILN_BACKEND_JIT;
  o.micro_batch = 1;
  return o;
}

kiln_code kiln_model_load(const char *path, const kiln_load_options *opts, kiln_model **out,
                          kiln_err *e) {
  *out = NULL;
  kiln_graph *g = NULL;
  KILN_TRY(kiln_onnx_load(path, &g, e));
  for (int i = 0; opts && i < opts->n_binds; i++) {
    const char *b = opts->binds[i];
    const char *eq = strchr(b, '=');
    char sym[256];
    char *end = NULL;
    long long v = eq ? strtoll(eq + 1, &end, 10) : 0;
    if (!eq || (size_t)(eq - b) >= sizeof sym || eq == b || !end || *end) {
      ir_graph_free(g);
      return kiln_errf(e, KILN_ERR_INVALID, "a binding must be NAME=SIZE, got '%s'", b);
    }
    memcpy(sym, b, (size_t)(eq - b));
    sym[eq - b] = 0;
    if (ir_bind_dim(g, sym, v, e)) {
      kiln_err_prefix(e, "%s", path);
      ir_graph_free(g);
      return e->code;
    }
  }
  kiln_evaluator ev = kiln_ref_evaluator();
  if (ir_infer(g, &ev, e)) {
    kiln_err_prefix(e, "%s", path);
    ir_graph_free(g);
    return e->code;
  }
  kiln_model *m = kiln_calloc(1, sizeof *m);
  if (!m) {
    ir_graph_free(g);
    return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  }
  m->g = g;
  *out = m;
  return KILN_OK;
}

/* For kiln's own tools: wrap an inferred graph (ownership moves to the model). */
kiln_model *kiln_model_from_graph(kiln_graph *g) {
  kiln_model *m = kiln_calloc(1, sizeof *m);
  if (m) m->g = g;
  return m;
}
const kiln_graph *kiln_model_graph(const kiln_model *m) { return m->g; }

void kiln_model_free(kiln_model *m) {
  if (!m) return;
  ir_graph_free(m->g);
  kiln_free(m);
}

int kiln_model_num_inputs(const kiln_model *m) { return m->g->n_inputs; }
int kiln_model_num_outputs(const kiln_model *m) { return m->g->n_outputs; }
const char *kiln_model_input_name(const kiln_model *m, int i) { return m->g->values[m->g->inputs[i]].name; }
const char *kiln_model_output_name(const kiln_model *m, int i) { return m->g->values[m->g->outputs[i]].name; }
kiln_dtype kiln_model_input_dtype(const kiln_model *m, int i) { return m->g->values[m->g->inputs[i]].dtype; }
kiln_dtype kiln_model_output_dtype(const kiln_model *m, int i) { return m->g->values[m->g->outputs[i]].dtype; }
const kiln_shape *kiln_model_input_shape(const kiln_model *m, int i) { return &m->g->values[m->g->inputs[i]].shape; }
const kiln_shape *kiln_model_output_shape(const kiln_model *m, int i) { return &m->g->values[m->g->outputs[i]].shape; }

int kiln_model_find_input(const kiln_model *m, const char *name) {
  for (int i = 0; i < m->g->n_inputs; i++)
    if (!strcmp(m->g->values[m->g->inputs[i]].name, name)) return i;
  return -1;
}

int64_t kiln_model_macs(const kiln_model *m) {
  int64_t total = 0;
  for (int64_t i = 0; i < m->g->n_nodes; i++) {
    const kiln_node *n = &m->g->nodes[i];
    if (!n->dead && n->def->macs) total += n->def->macs(m->g, n);
  }
  return total;
}

int64_t kiln_model_params(const kiln_model *m) {
  const kiln_graph *g = m->g;
  int64_t total = 0;
  char *seen = kiln_calloc((size_t)(g->n_values ? g->n_values : 1), 1);
  if (!seen) return -1;
  for (int64_t i = 0; i < g->n_nodes; i++) {
    const kiln_node *n = &g->nodes[i];
    if (n->dead) continue;
    for (int k = 0; k < n->n_in; k++) {
      int v = n->in[k];
      if (v < 0 || seen[v]) continue;
      const kiln_value *val = &g->values[v];
      bool nondiff = k < 32 && ((n->def->nondiff_inputs | n->def->shape_inputs) & (1u << k));
      if (val->is_initializer && val->data && val->dtype == KILN_F32 && !nondiff) {
        seen[v] = 1;
        total += val->data->numel;
      }
    }
  }
  kiln_free(seen);
  return total;
}

/* Deep copy of a graph through ONNX serialization would lose folded constants;
 * copy structurally instead: reload is not needed because the session only
 * needs an independent graph it can own. */
static kiln_code clone_graph(const kiln_graph *src, kiln_graph **out, kiln_err *e);

kiln_code kiln_session_create(const kiln_model *m, const kiln_options *opts, kiln_session **out,
                              kiln_err *e) {
  kiln_options def = kiln_options_default();
  if (!opts) opts = &def;
  *out = NULL;
  kiln_session *s = kiln_calloc(1, sizeof *s);
  if (!s) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  s->backend = opts->backend;
  kiln_graph *g = NULL;
  kiln_code rc = clone_graph(m->g, &g, e);
  if (!rc && opts->passes && *opts->passes) {
    kiln_evaluator ev = kiln_ref_evaluator();
    kiln_pass_ctx pcx = {.mode = KILN_MODE_INFERENCE, .ev = &ev,
                         .vector_floats = kiln_host_vector_floats(),
                         .layout = (int)opts->layout};
    rc = kiln_run_pipeline(g, strcmp(opts->passes, "default") ? opts->passes : NULL, &pcx, NULL,
                           e);
    if (rc) ir_graph_free(g);
  }
  if (rc) {
    kiln_free(s);
    return rc;
  }
  if (opts->backend == KILN_BACKEND_REF) {
    s->g = g;
    s->threads = 1;
  } else {
    kiln_compile_opts co = {.threads = opts->threads,
                            .cache_dir = opts->cache_dir,
                            .allow_fallback = opts->allow_fallback != 0,
                            .no_inplace = opts->no_inplace != 0,
                            .micro_batch = opts->micro_batch > 0 ? opts->micro_batch : 0,
                            .release_constants = true};
    rc = kiln_compile(g, &co, &s->prog, e); /* takes g */
    if (rc) {
      kiln_free(s);
      return rc;
    }
    s->threads = s->prog->threads;
  }
  *out = s;
  return KILN_OK;
}

void kiln_session_free(kiln_session *s) {
  if (!s) return;
  kiln_program_free(s->prog);
  ir_graph_free(s->g);
  kiln_free(s->profile);
  kiln_free(s);
}

kiln_code kiln_session_run(kiln_session *s, kiln_tensor *const *inputs, kiln_tensor **outputs,
                           kiln_err *e) {
  if (s->prog) return kiln_program_run(s->prog, inputs, outputs, false, e);
  kiln_ref_ctx ctx = {.g = s->g, .training = false, .seed = 0};
  return kiln_ref_run(s->g, &ctx, inputs, outputs, e);
}

void kiln_session_get_stats(const kiln_session *s, kiln_session_stats *st) {
  memset(st, 0, sizeof *st);
  st->threads = s->threads;
  if (!s->prog) return;
  const kiln_program *p = s->prog;
  st->planned_peak_bytes = p->arena_bytes;
  st->unplanned_bytes = p->unplanned_bytes;
  st->steps = p->n_steps;
  st->fallback_steps = p->n_fallback;
  st->passes = p->micro > 1 ? p->micro : 1;
  st->micro_why = p->micro_why;
  const kiln_jit_stats *js = kiln_program_jit_stats(p);
  if (js) {
    st->kernels_compiled = js->kernels_compiled;
    st->kernels_cached = js->kernels_cached;
    st->kernels_reused = js->kernels_reused;
    st->compile_seconds = js->compile_seconds;
    st->cpu = kiln_jit_cpu((const kiln_jit *)p->jit);
    st->n_warnings = js->n_warnings;
    for (int i = 0; i < js->n_warnings && i < 4; i++) st->warnings[i] = js->warnings[i];
  }
}

kiln_code kiln_session_profile(kiln_session *s, kiln_tensor *const *inputs, kiln_tensor **outputs,
                               const kiln_step_profile **steps, int64_t *n_steps, kiln_err *e) {
  *steps = NULL;
  *n_steps = 0;
  if (!s->prog) return kiln_errf(e, KILN_ERR_INVALID, "profiling needs the jit backend");
  kiln_program *p = s->prog;
  if (p->step_seconds) memset(p->step_seconds, 0, sizeof(double) * (size_t)p->n_steps);
  KILN_TRY(kiln_program_run(p, inputs, outputs, true, e));
  if (!s->profile) {
    s->profile = kiln_calloc((size_t)(p->n_steps ? p->n_steps : 1), sizeof *s->profile);
    if (!s->profile) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  }
  for (int64_t i = 0; i < p->n_steps; i++) {
    s->profile[i].label = p->steps[i].label;
    s->profile[i].op = p->steps[i].node ? p->steps[i].node->def->name : "?";
    s->profile[i].seconds = p->step_seconds[i];
    s->profile[i].macs = p->steps[i].macs * (p->micro > 1 ? p->micro : 1); /* all passes */
    s->profile[i].node = p->steps[i].node ? (int64_t)(p->steps[i].node - p->g->nodes) : -1;
    s->profile[i].kernel = p->steps[i].what;
  }
  s->n_profile = p->n_steps;
  *steps = s->profile;
  *n_steps = p->n_steps;
  return KILN_OK;
}

kiln_code kiln_compile_library(const kiln_model *m, const kiln_library_options *o, kiln_err *e) {
  if (!o || !o->so_path) return kiln_errf(e, KILN_ERR_INVALID, "no output library path given");
  const char *rt = o->runtime_lib ? o->runtime_lib : getenv("KILN_AOT_RT");
#ifdef KILN_AOT_RT_LIB
  if (!rt) rt = KILN_AOT_RT_LIB;
#endif
  if (!rt) return kiln_errf(e, KILN_ERR_INVALID, "the AOT runtime library (libkiln_aot_rt.a) is unknown; set $KILN_AOT_RT");
  kiln_graph *g = NULL;
  KILN_TRY(clone_graph(m->g, &g, e));
  kiln_program *p = NULL;
  kiln_compile_opts co = {.aot = true, .cache_dir = "",
                          .micro_batch = o->micro_batch > 0 ? o->micro_batch : 0};
  KILN_TRY(kiln_compile(g, &co, &p, e));
  kiln_aot_opts ao = {.so_path = o->so_path,
                      .header_path = o->header_path,
                      .prefix = o->prefix ? o->prefix : "model",
                      .weights_path = o->weights_path,
                      .runtime_lib = rt};
  kiln_code rc = kiln_aot_write(p, (kiln_jit *)p->jit, &ao, e);
  kiln_program_free(p);
  return rc;
}

kiln_code kiln_tensor_read(const char *path, kiln_tensor **out, kiln_err *e) {
  return kiln_tensor_load_file(path, out, e);
}
kiln_code kiln_tensor_write_pb(const kiln_tensor *t, const char *name, const char *path, kiln_err *e) {
  return kiln_tensor_save_pb(t, name, path, e);
}
kiln_code kiln_tensor_write_npy(const kiln_tensor *t, const char *path, kiln_err *e) {
  return kiln_tensor_save_npy(t, path, e);
}

/* ---- graph cloning ---- */
static kiln_code clone_graph(const kiln_graph *src, kiln_graph **out, kiln_err *e) {
  kiln_graph *g = ir_graph_new();
  kiln_code rc = KILN_OK;
  if (!g) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  for (int64_t v = 0; v < src->n_values && !rc; v++) {
    const kiln_value *sv = &src->values[v];
    int id;
    rc = ir_add_value(g, sv->name, &id, e);
    if (rc) break;
    kiln_value *dv = &g->values[id];
    dv->dtype = sv->dtype;
    dv->shape = sv->shape;
    dv->typed = sv->typed;
    dv->is_initializer = sv->is_initializer;
    dv->listed_as_input = sv->listed_as_input;
    dv->trainable = sv->trainable;
    if (sv->data) rc = kiln_tensor_clone(sv->data, &dv->data, e);
  }
  for (int64_t i = 0; i < src->n_nodes && !rc; i++) {
    const kiln_node *n = &src->nodes[i];
    if (n->dead) continue;
    int nid;
    rc = ir_add_node(g, n->op, n->name, n->in, n->n_in, n->out, n->n_out, &nid, e);
    if (rc) break;
    g->nodes[nid].opset = n->opset;
    for (int a = 0; a < n->n_attrs && !rc; a++) {
      kiln_attr copy;
      rc = ir_attr_clone(&n->attrs[a], &copy, e);
      if (!rc) rc = ir_push_attr(g, nid, &copy, e);
    }
  }
  for (int i = 0; i < src->n_inputs && !rc; i++) rc = ir_add_input(g, src->inputs[i], e);
  for (int i = 0; i < src->n_outputs && !rc; i++) rc = ir_add_output(g, src->outputs[i], e);
  for (int i = 0; i < src->n_opsets && !rc; i++)
    rc = ir_set_opset(g, src->opsets[i].domain, src->opsets[i].version, e);
  if (!rc && src->name && !(g->name = kiln_strdup(src->name))) rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  if (rc) {
    ir_graph_free(g);
    return rc;
  }
  /* producers were set by ir_add_node; values with data but a producer keep both,
   * as in the source (folded constants) */
  *out = g;
  return KILN_OK;
}
