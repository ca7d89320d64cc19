/* compile.c — the compile driver and the kernel/buffer half of the emitter API:
 * walks the graph, calls each node's emitter (or plans a reference-kernel step
 * where none exists and fallback is allowed), plans memory and allocates the arena. */
#include "codegen/compile.h"

#include <llvm-c/Linker.h>

#include <stdlib.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <string.h>

#include "codegen/cache.h"
#include "codegen/emit.h"
#include "codegen/tune.h"
#include "passes/batch_split.h"
#include "passes/memplan.h"

struct kiln_emit_ctx {
  kiln_jit *jit;
  kiln_program *p;
  const kiln_graph *g;
  cg_types t;
  int threads;
  const kiln_node *cur;
  kiln_emit_fn table[KILN_OP_COUNT];
  LLVMModuleRef aot;      /* AOT: every kernel linked into this module */
  kiln_tune_table *tune;  /* measured convolution blocks, or NULL */
  int gemm_kernel;        /* opts->gemm_kernel */
  bool tune_owned;        /* loaded here from the cache directory */
};

const cg_types *cg_t(kiln_emit_ctx *cx) { return &cx->t; }
bool cg_avx512(kiln_emit_ctx *cx) { return kiln_jit_has_avx512(cx->jit); }
int cg_threads(kiln_emit_ctx *cx) { return cx->threads; }
kiln_tune_table *cg_tune_table(kiln_emit_ctx *cx) { return cx->tune; }
int cg_gemm_kernel(kiln_emit_ctx *cx) { return cx->gemm_kernel; }
int cg_cur_node_id(kiln_emit_ctx *cx) { return cx->cur ? (int)(cx->cur - cx->g->nodes) : -1; }
int64_t cg_step_count(kiln_emit_ctx *cx) { return cx->p->n_steps; }

static void make_types(kiln_emit_ctx *cx) {
  LLVMContextRef c = kiln_jit_context(cx->jit);
  cx->t.f32 = LLVMFloatTypeInContext(c);
  cx->t.f64 = LLVMDoubleTypeInContext(c);
  cx->t.i1 = LLVMInt1TypeInContext(c);
  cx->t.i8 = LLVMInt8TypeInContext(c);
  cx->t.i32 = LLVMInt32TypeInContext(c);
  cx->t.i64 = LLVMInt64TypeInContext(c);
  cx->t.ptr = LLVMPointerTypeInContext(c, 0);
  cx->t.void_ = LLVMVoidTypeInContext(c);
  cx->t.v16f32 = LLVMVectorType(cx->t.f32, 16);
  cx->t.v8f32 = LLVMVectorType(cx->t.f32, 8);
}

kiln_code cg_kernel_begin(kiln_emit_ctx *cx, cg_kernel *k, const char *label, int n_args, kiln_err *e) {
  memset(k, 0, sizeof *k);
  k->cx = cx;
  k->ctx = kiln_jit_context(cx->jit);
  k->t = &cx->t;
  snprintf(k->label, sizeof k->label, "%s", label);
  /* Every kernel module has the same name so identical kernels hash alike. */
  k->mod = kiln_jit_new_module(cx->jit, "kiln");
  LLVMTypeRef params[3] = {cx->t.ptr, cx->t.i64, cx->t.i64};
  LLVMTypeRef fty = LLVMFunctionType(cx->t.void_, params, 3, 0);
  k->fn = LLVMAddFunction(k->mod, "kiln_kernel", fty);
  LLVMSetLinkage(k->fn, LLVMExternalLinkage);
  /* kernels never unwind; their arguments never alias in ways the IR can't see */
  unsigned nounwind = LLVMGetEnumAttributeKindForName("nounwind", 8);
  LLVMAddAttributeAtIndex(k->fn, LLVMAttributeFunctionIndex, LLVMCreateEnumAttribute(k->ctx, nounwind, 0));
  k->args_ptr = LLVMGetParam(k->fn, 0);
  k->lo = LLVMGetParam(k->fn, 1);
  k->hi = LLVMGetParam(k->fn, 2);
  k->b = LLVMCreateBuilderInContext(k->ctx);
  LLVMBasicBlockRef entry = LLVMAppendBasicBlockInContext(k->ctx, k->fn, "entry");
  LLVMPositionBuilderAtEnd(k->b, entry);
  k->n_args = n_args;
  k->args = kiln_calloc((size_t)(n_args ? n_args : 1), sizeof(LLVMValueRef));
  if (!k->args) {
    cg_kernel_abort(k);
    return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  }
  for (int i = 0; i < n_args; i++) {
    LLVMValueRef slot = LLVMBuildGEP2(k->b, cx->t.ptr, k->args_ptr, (LLVMValueRef[]){cg_i64(k, i)}, 1, "");
    LLVMValueRef ld = LLVMBuildLoad2(k->b, cx->t.ptr, slot, "arg");
    k->args[i] = ld;
  }
  return KILN_OK;
}

LLVMValueRef cg_arg(cg_kernel *k, int i) { return k->args[i]; }

void cg_kernel_abort(cg_kernel *k) {
  if (k->b) LLVMDisposeBuilder(k->b);
  if (k->mod) LLVMDisposeModule(k->mod);
  kiln_free(k->args);
  memset(k, 0, sizeof *k);
}

kiln_code cg_kernel_end(kiln_emit_ctx *cx, cg_kernel *k, int64_t n_tiles, const int *bufs, kiln_err *e) {
  LLVMBuildRetVoid(k->b);
  LLVMDisposeBuilder(k->b);
  k->b = NULL;
  kiln_kernel_fn fn = NULL;
  LLVMModuleRef mod = k->mod;
  k->mod = NULL;
  int n_args = k->n_args;
  kiln_free(k->args);
  k->args = NULL;
  if (cx->aot) {
    char name[64];
    kiln_jit_name_kernel(mod, k->fn, name);
    if (LLVMGetNamedFunction(cx->aot, name)) {
      LLVMDisposeModule(mod); /* identical kernel already collected */
    } else if (LLVMLinkModules2(cx->aot, mod)) {
      return kiln_errf(e, KILN_ERR_INTERNAL, "LLVM: cannot link kernel %s into the AOT module", name);
    }
    KILN_TRY(kiln_program_add_step(cx->p, NULL, cx->cur, bufs, n_args, n_tiles, e));
    kiln_step *st = &cx->p->steps[cx->p->n_steps - 1];
    snprintf(st->kernel, sizeof st->kernel, "%s", name);
    snprintf(st->what, sizeof st->what, "%s", k->label);
    return KILN_OK;
  }
  kiln_code rc = kiln_jit_add_kernel(cx->jit, mod, k->fn, &fn, e);
  if (rc) return rc;
  KILN_TRY(kiln_program_add_step(cx->p, fn, cx->cur, bufs, n_args, n_tiles, e));
  snprintf(cx->p->steps[cx->p->n_steps - 1].what, sizeof cx->p->steps[0].what, "%s", k->label);
  return KILN_OK;
}

int cg_buf_value(kiln_emit_ctx *cx, int value_id) { return value_id; }

int cg_buf_status(kiln_emit_ctx *cx, kiln_err *e) {
  kiln_program *p = cx->p;
  if (p->status_buf >= 0) return p->status_buf;
  int id;
  /* an arena word live for the whole run (the planner keeps it) */
  if (kiln_program_add_buf(p, KILN_BUF_ARENA, 4, &id, e)) return -1;
  p->status_buf = id;
  return id;
}

void cg_flag_error(cg_kernel *k, LLVMValueRef status_ptr) {
  /* every flagging thread stores the same value: an atomic store keeps it race-free */
  LLVMValueRef st = LLVMBuildStore(k->b, cg_i32(k, 1), status_ptr);
  LLVMSetOrdering(st, LLVMAtomicOrderingMonotonic);
  LLVMSetAlignment(st, 4);
}

kiln_code cg_kernel_end_checked(kiln_emit_ctx *cx, cg_kernel *k, int64_t n_tiles, const int *bufs,
                                const char *msg, kiln_err *e) {
  int64_t before = cx->p->n_steps;
  KILN_TRY(cg_kernel_end(cx, k, n_tiles, bufs, e));
  if (cx->p->n_steps > before) cx->p->steps[cx->p->n_steps - 1].error = msg;
  return KILN_OK;
}

int cg_buf_const(kiln_emit_ctx *cx, const void *data, size_t bytes, kiln_err *e) {
  int id;
  if (kiln_program_add_buf(cx->p, KILN_BUF_CONST, (int64_t)bytes, &id, e)) return -1;
  void *copy = aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);
  if (!copy) {
    kiln_errf(e, KILN_ERR_NOMEM, "out of memory (%zu bytes of constants)", bytes);
    return -1;
  }
  if (bytes) memcpy(copy, data, bytes);
  cx->p->bufs[id].data = copy;
  cx->p->bufs[id].owned_data = true;
  return id;
}

int cg_buf_scratch(kiln_emit_ctx *cx, size_t bytes, kiln_err *e) {
  int id;
  if (kiln_program_add_buf(cx->p, KILN_BUF_ARENA, (int64_t)bytes, &id, e)) return -1;
  return id;
}

void cg_emitters(kiln_emit_fn *table) {
  memset(table, 0, sizeof(kiln_emit_fn) * KILN_OP_COUNT);
  cg_register_elementwise(table);
  cg_register_nn(table);
  cg_register_linalg(table);
  cg_register_reduce(table);
  cg_register_tensor(table);
  cg_register_resize(table);
  cg_register_kiln(table);
  cg_register_grad_nn(table);
  cg_register_conv_grad(table);
  cg_register_grad_pool(table);
  cg_register_train(table);
  cg_register_fused(table);
  cg_register_optim(table);
  cg_register_layout(table);
}

int kiln_list_fallbacks(const kiln_graph *g, int *count_per_op) {
  kiln_emit_fn table[KILN_OP_COUNT];
  cg_emitters(table);
  int total = 0;
  memset(count_per_op, 0, sizeof(int) * KILN_OP_COUNT);
  for (int64_t i = 0; i < g->n_nodes; i++) {
    const kiln_node *n = &g->nodes[i];
    if (n->dead) continue;
    bool need = false;
    for (int o = 0; o < n->n_out; o++) {
      const kiln_value *v = ir_out(g, n, o);
      if (v && !v->data) need = true;
    }
    if (need && !table[n->op]) {
      count_per_op[n->op]++;
      total++;
    }
  }
  return total;
}

const kiln_jit_stats *kiln_program_jit_stats(const kiln_program *p) {
  return p->jit ? kiln_jit_get_stats((const kiln_jit *)p->jit) : NULL;
}

/* The tuning table of this CPU in the cache directory (tune.h), unless disabled.  Only out of
 * memory fails; a missing directory or file means no table. */
static kiln_code load_tune(kiln_emit_ctx *cx, const kiln_compile_opts *opts, kiln_err *e) {
  const char *env = getenv("KILN_TUNE");
  if (opts->no_tune || (env && !strcmp(env, "0"))) return KILN_OK;
  kiln_cache c;
  const char *cpu = kiln_jit_cpu(cx->jit), *features = kiln_jit_features(cx->jit);
  kiln_cache_open(&c, opts->cache_dir, cpu, features); /* resolves the directory as the JIT did */
  kiln_code rc = KILN_OK;
  if (c.dir) {
    char path[4300];
    kiln_tune_path(c.dir, cpu, features, path, sizeof path);
    rc = kiln_tune_load(path, cpu, features, &cx->tune, e);
    cx->tune_owned = cx->tune != NULL;
  }
  kiln_cache_close(&c);
  return rc;
}

/* Reports the loaded table's problem (a file ignored, an entry refused) with the kernel
 * cache's warnings, which every caller already prints, and frees the table. */
static void end_tune(kiln_emit_ctx *cx) {
  if (!cx->tune_owned) return;
  /* the JIT's stats are its own mutable record, returned const only to callers */
  kiln_jit_stats *st = (kiln_jit_stats *)kiln_jit_get_stats(cx->jit);
  if (cx->tune->warning[0] && st->n_warnings < 4)
    snprintf(st->warnings[st->n_warnings++], KILN_ERR_MSG, "%s", cx->tune->warning);
  kiln_tune_free(cx->tune);
  cx->tune = NULL;
  cx->tune_owned = false;
}

static void jit_free_cb(void *j) { kiln_jit_free(j); }
static void aot_free_cb(void *m) { LLVMDisposeModule((LLVMModuleRef)m); }

/* Frees the graph's constant data that no step reads (weights the emitters repacked into
 * constant buffers of their own) and that is no graph output: it would otherwise stay
 * beside its packed copy for the program's life. */
static void release_unread_constants(kiln_program *p) {
  kiln_graph *g = p->g;
  bool *read = kiln_calloc((size_t)(g->n_values ? g->n_values : 1), sizeof(bool));
  if (!read) return; /* only a saving */
  bool freed = false;
  for (int64_t s = 0; s < p->n_steps; s++)
    for (int a = 0; a < p->steps[s].n_args; a++) /* the buffer and those it shares storage with */
      for (int b = p->steps[s].bufs[a]; b >= 0 && b < p->n_bufs; b = p->bufs[b].alias_of)
        if (b < g->n_values) read[b] = true;
  for (int i = 0; i < g->n_outputs; i++) read[g->outputs[i]] = true;
  for (int64_t v = 0; v < g->n_values; v++) {
    kiln_value *val = &g->values[v];
    if (read[v] || !val->data || p->bufs[v].kind != KILN_BUF_CONST) continue;
    kiln_tensor_free(val->data);
    val->data = NULL;
    p->bufs[v].data = NULL;
    p->bufs[v].kind = KILN_BUF_NONE;
    freed = true;
  }
  kiln_free(read);
#ifdef __GLIBC__
  /* the weights sat among other allocations: hand their pages back to the system */
  if (freed) malloc_trim(0);
#endif
}

kiln_code kiln_compile(kiln_graph *g, const kiln_compile_opts *opts, kiln_program **out, kiln_err *e) {
  kiln_compile_opts def = {0};
  if (!opts) opts = &def;
  *out = NULL;
  kiln_code rc = KILN_OK;
  char lbl[256];
  kiln_emit_ctx *cx = kiln_calloc(1, sizeof *cx);
  kiln_program *p = kiln_calloc(1, sizeof *p);
  if (!cx || !p) {
    kiln_free(cx);
    kiln_free(p);
    ir_graph_free(g);
    return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  }
  p->g = g;
  p->status_buf = -1;
  p->micro = 1;
  if (opts->micro_batch > 0 && opts->n_state == 0) {
    rc = kiln_batch_split(g, opts->micro_batch, &p->micro, p->micro_why, sizeof p->micro_why, e);
    if (rc) goto fail;
  }
  p->threads = opts->threads > 0 ? opts->threads : kiln_default_threads();
  kiln_jit_opts jo = {.cache_dir = opts->cache_dir};
  kiln_jit *jit = NULL;
  rc = kiln_jit_create(&jo, &jit, e);
  if (rc) goto fail;
  p->jit = jit;
  p->jit_free = jit_free_cb;
  cx->jit = jit;
  cx->p = p;
  cx->g = g;
  cx->threads = p->threads;
  make_types(cx);
  cg_emitters(cx->table);
  cx->tune = opts->tune;
  cx->gemm_kernel = opts->gemm_kernel;
  if (!cx->tune) {
    rc = load_tune(cx, opts, e);
    if (rc) goto fail;
  }
  if (opts->aot) {
    cx->aot = kiln_jit_new_module(jit, "kiln_aot");
    p->aot_module = cx->aot;
    p->aot_free = aot_free_cb;
  }

  /* one buffer per value, same id */
  for (int64_t v = 0; v < g->n_values; v++) {
    const kiln_value *val = &g->values[v];
    int64_t bytes = 0;
    int id;
    if (val->typed && kiln_bytes_for(val->dtype, &val->shape, &bytes, e)) {
      rc = e->code;
      goto fail;
    }
    kiln_buf_kind kind = val->data ? KILN_BUF_CONST : val->is_input ? KILN_BUF_INPUT : KILN_BUF_ARENA;
    if (!val->typed) kind = KILN_BUF_NONE;
    rc = kiln_program_add_buf(p, kind, bytes, &id, e);
    if (rc) goto fail;
    if (kind == KILN_BUF_CONST) p->bufs[id].data = val->data->data;
  }
  /* state: program-owned persistent buffers */
  if (opts->n_state) {
    p->state_in = kiln_malloc(sizeof(int) * (size_t)opts->n_state);
    p->state_out = kiln_malloc(sizeof(int) * (size_t)opts->n_state);
    if (!p->state_in || !p->state_out) {
      rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
      goto fail;
    }
  }
  for (int i = 0; i < opts->n_state; i++) {
    int vin = opts->state_in[i], vout = opts->state_out[i];
    if (vin < 0 || vin >= g->n_values || vout < 0 || vout >= g->n_values || !g->values[vin].is_input ||
        g->values[vin].dtype != g->values[vout].dtype ||
        !kiln_shape_eq(&g->values[vin].shape, &g->values[vout].shape)) {
      rc = kiln_errf(e, KILN_ERR_INVALID, "state pair %d: '%s' must be a graph input with the type of '%s'", i,
                     vin >= 0 && vin < g->n_values ? g->values[vin].name : "?",
                     vout >= 0 && vout < g->n_values ? g->values[vout].name : "?");
      goto fail;
    }
    kiln_buf *b = &p->bufs[vin];
    b->kind = KILN_BUF_STATE;
    b->data = aligned_alloc(64, (size_t)((b->bytes + 63) / 64 * 64 + 64));
    if (!b->data) {
      rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory allocating state '%s'", g->values[vin].name);
      goto fail;
    }
    b->owned_data = true;
    memset(b->data, 0, (size_t)b->bytes);
    p->state_in[i] = vin;
    p->state_out[i] = vout;
    p->n_state++;
  }
  for (int64_t i = 0; i < g->n_nodes; i++) {
    const kiln_node *n = &g->nodes[i];
    if (n->dead) continue;
    bool need = false;
    for (int o = 0; o < n->n_out; o++) {
      const kiln_value *v = ir_out(g, n, o);
      if (v && !v->data) need = true;
    }
    if (!need) continue; /* folded to a constant */
    cx->cur = n;
    kiln_emit_fn fn = cx->table[n->op];
    if (fn) {
      rc = fn(cx, g, n, e);
      if (rc) {
        kiln_err_prefix(e, "compiling %s", ir_node_label(n, lbl, sizeof lbl));
        goto fail;
      }
      continue;
    }
    if (!opts->allow_fallback || opts->aot) {
      rc = kiln_errf(e, KILN_ERR_UNSUPPORTED, "no compiled kernel for %s", ir_node_label(n, lbl, sizeof lbl));
      goto fail;
    }
    int bufs[96];
    if (n->n_in + n->n_out > 96) {
      rc = kiln_errf(e, KILN_ERR_LIMIT, "%s has too many operands", ir_node_label(n, lbl, sizeof lbl));
      goto fail;
    }
    for (int k = 0; k < n->n_in; k++) bufs[k] = n->in[k];
    for (int o = 0; o < n->n_out; o++) bufs[n->n_in + o] = n->out[o];
    rc = kiln_program_add_step(p, NULL, n, bufs, n->n_in + n->n_out, 1, e);
    if (rc) goto fail;
    p->n_fallback++;
  }
  rc = kiln_memplan(p, !opts->no_inplace, e);
  if (rc) goto fail;
  /* Allocate and pre-fault the arena once: page faults are expensive on VMs,
   * and a static plan means no allocation while running. */
  p->arena = aligned_alloc(64, (size_t)((p->arena_bytes + 63) / 64 * 64 + 64));
  if (!p->arena) {
    rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory allocating a %lld-byte arena", (long long)p->arena_bytes);
    goto fail;
  }
  memset(p->arena, 0, (size_t)p->arena_bytes);
  if (opts->release_constants) release_unread_constants(p);
  end_tune(cx);
  kiln_free(cx);
  *out = p;
  return KILN_OK;
fail:
  if (cx->jit) end_tune(cx);
  kiln_free(cx);
  kiln_program_free(p);
  return rc;
}
