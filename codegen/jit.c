/* jit.c — host target machine, ORC LLJIT with an allow-listed symbol table,
 * kernel optimization/compilation, and the kernel-hash registry. */
#include "codegen/jit.h"

#include <llvm-c/Analysis.h>
#include <llvm-c/Error.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Target.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include <llvm-c/blake3.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codegen/cache.h"

struct kiln_jit {
  LLVMTargetMachineRef tm;
  char *triple, *cpu, *features;
  char *data_layout;
  LLVMOrcThreadSafeContextRef tsctx;
  LLVMContextRef ctx;
  LLVMOrcLLJITRef lljit;
  int opt_level;
  kiln_cache cache;
  /* loaded kernels: hash name -> address (linear list; a model has ~100 kernels) */
  char **names;
  kiln_kernel_fn *addrs;
  int n_kernels, cap_kernels;
  kiln_jit_stats stats;
};

/* Every function JIT'd code may call.  Kernels are pure loops over tensors; what
 * they need beyond arithmetic is scalar math from libm and kiln's own runtime
 * helpers.  Nothing else in the process is visible to them. */
static const kiln_jit_symbol allowlist[] = {
    {"expf", (void *)expf},       {"logf", (void *)logf},     {"tanhf", (void *)tanhf},
    {"erff", (void *)erff},       {"powf", (void *)powf},     {"sqrtf", (void *)sqrtf},
    {"floorf", (void *)floorf},   {"ceilf", (void *)ceilf},   {"roundf", (void *)roundf},
    {"nearbyintf", (void *)nearbyintf}, {"fmodf", (void *)fmodf}, {"log1pf", (void *)log1pf},
    {"expm1f", (void *)expm1f},   {"exp", (void *)exp},       {"log", (void *)log},
    {"pow", (void *)pow},         {"sqrt", (void *)sqrt},     {"floor", (void *)floor},
    {"memcpy", (void *)memcpy},   {"memset", (void *)memset}, {"memmove", (void *)memmove},
};

const kiln_jit_symbol *kiln_jit_allowlist(int *count) {
  *count = (int)(sizeof allowlist / sizeof allowlist[0]);
  return allowlist;
}

static kiln_code llvm_err(kiln_err *e, LLVMErrorRef err, const char *what) {
  char *msg = LLVMGetErrorMessage(err);
  kiln_errf(e, KILN_ERR_INTERNAL, "LLVM: %s: %s", what, msg);
  LLVMDisposeErrorMessage(msg);
  return KILN_ERR_INTERNAL;
}

static void init_llvm_once(void) {
  /* LLVM's target registry is process-wide; initializing it twice is harmless. */
  LLVMInitializeNativeTarget();
  LLVMInitializeNativeAsmPrinter();
}

kiln_code kiln_jit_create(const kiln_jit_opts *opts, kiln_jit **out, kiln_err *e) {
  kiln_jit_opts def = {0};
  if (!opts) opts = &def;
  *out = NULL;
  init_llvm_once();
  kiln_jit *j = kiln_calloc(1, sizeof *j);
  if (!j) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  j->opt_level = opts->opt_level ? opts->opt_level : 3;
  j->triple = LLVMGetDefaultTargetTriple();
  j->cpu = opts->cpu ? LLVMCreateMessage(opts->cpu) : LLVMGetHostCPUName();
  j->features = opts->features ? LLVMCreateMessage(opts->features) : LLVMGetHostCPUFeatures();
  char *tmsg = NULL;
  LLVMTargetRef target;
  if (LLVMGetTargetFromTriple(j->triple, &target, &tmsg)) {
    kiln_errf(e, KILN_ERR_INTERNAL, "LLVM: no target for %s: %s", j->triple, tmsg ? tmsg : "");
    LLVMDisposeMessage(tmsg);
    kiln_jit_free(j);
    return KILN_ERR_INTERNAL;
  }
  /* PIC so the same objects serve the JIT and AOT shared libraries. */
  j->tm = LLVMCreateTargetMachine(target, j->triple, j->cpu, j->features,
                                  LLVMCodeGenLevelAggressive, LLVMRelocPIC, LLVMCodeModelDefault);
  if (!j->tm) {
    kiln_jit_free(j);
    return kiln_errf(e, KILN_ERR_INTERNAL, "LLVM: cannot create a target machine for %s", j->triple);
  }
  LLVMTargetDataRef td = LLVMCreateTargetDataLayout(j->tm);
  j->data_layout = LLVMCopyStringRepOfTargetData(td);
  LLVMDisposeTargetData(td);

  j->tsctx = LLVMOrcCreateNewThreadSafeContext();
  j->ctx = LLVMOrcThreadSafeContextGetContext(j->tsctx);

  /* LLJIT with a target machine builder for the same CPU and features. */
  LLVMTargetMachineRef tm2 = LLVMCreateTargetMachine(target, j->triple, j->cpu, j->features,
                                                     LLVMCodeGenLevelAggressive, LLVMRelocPIC,
                                                     LLVMCodeModelDefault);
  LLVMOrcJITTargetMachineBuilderRef jtmb = LLVMOrcJITTargetMachineBuilderCreateFromTargetMachine(tm2);
  LLVMOrcLLJITBuilderRef builder = LLVMOrcCreateLLJITBuilder();
  LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(builder, jtmb);
  LLVMErrorRef err = LLVMOrcCreateLLJIT(&j->lljit, builder);
  if (err) {
    llvm_err(e, err, "creating LLJIT");
    j->lljit = NULL;
    kiln_jit_free(j);
    return KILN_ERR_INTERNAL;
  }
  /* The allow-list, as absolute symbols in the main JITDylib. */
  int n_allow;
  const kiln_jit_symbol *al = kiln_jit_allowlist(&n_allow);
  LLVMOrcCSymbolMapPair pairs[64];
  for (int i = 0; i < n_allow; i++) {
    pairs[i].Name = LLVMOrcLLJITMangleAndIntern(j->lljit, al[i].name);
    pairs[i].Sym.Address = (LLVMOrcExecutorAddress)(uintptr_t)al[i].addr;
    pairs[i].Sym.Flags.GenericFlags = LLVMJITSymbolGenericFlagsExported | LLVMJITSymbolGenericFlagsCallable;
    pairs[i].Sym.Flags.TargetFlags = 0;
  }
  LLVMOrcMaterializationUnitRef mu = LLVMOrcAbsoluteSymbols(pairs, (size_t)n_allow);
  err = LLVMOrcJITDylibDefine(LLVMOrcLLJITGetMainJITDylib(j->lljit), mu);
  if (err) {
    llvm_err(e, err, "defining the runtime symbols");
    kiln_jit_free(j);
    return KILN_ERR_INTERNAL;
  }
  kiln_cache_open(&j->cache, opts->cache_dir, j->cpu, j->features);
  if (j->cache.warning[0] && j->stats.n_warnings < 4)
    snprintf(j->stats.warnings[j->stats.n_warnings++], KILN_ERR_MSG, "%s", j->cache.warning);
  *out = j;
  return KILN_OK;
}

void kiln_jit_free(kiln_jit *j) {
  if (!j) return;
  if (j->lljit) {
    LLVMErrorRef err = LLVMOrcDisposeLLJIT(j->lljit);
    if (err) LLVMConsumeError(err);
  }
  if (j->tsctx) LLVMOrcDisposeThreadSafeContext(j->tsctx);
  if (j->tm) LLVMDisposeTargetMachine(j->tm);
  LLVMDisposeMessage(j->triple);
  LLVMDisposeMessage(j->cpu);
  LLVMDisposeMessage(j->features);
  LLVMDisposeMessage(j->data_layout);
  for (int i = 0; i < j->n_kernels; i++) kiln_free(j->names[i]);
  kiln_free(j->names);
  kiln_free(j->addrs);
  kiln_cache_close(&j->cache);
  kiln_free(j);
}

LLVMContextRef kiln_jit_context(kiln_jit *j) { return j->ctx; }
const kiln_jit_stats *kiln_jit_get_stats(const kiln_jit *j) { return &j->stats; }
const char *kiln_jit_cpu(const kiln_jit *j) { return j->cpu; }
const char *kiln_jit_features(const kiln_jit *j) { return j->features; }
bool kiln_jit_has_avx512(const kiln_jit *j) { return strstr(j->features, "+avx512f") != NULL; }

int kiln_host_vector_floats(void) {
  char *f = LLVMGetHostCPUFeatures();
  int w = f && strstr(f, "+avx512f") ? 16 : 8;
  LLVMDisposeMessage(f);
  return w;
}

LLVMModuleRef kiln_jit_new_module(kiln_jit *j, const char *name) {
  LLVMModuleRef m = LLVMModuleCreateWithNameInContext(name, j->ctx);
  LLVMSetTarget(m, j->triple);
  LLVMSetDataLayout(m, j->data_layout);
  return m;
}

kiln_code kiln_jit_optimize(kiln_jit *j, LLVMModuleRef mod, kiln_err *e) {
  char *vmsg = NULL;
  if (LLVMVerifyModule(mod, LLVMReturnStatusAction, &vmsg)) {
    /* an emitter produced invalid IR: a compiler bug, reported rather than crashing */
    kiln_errf(e, KILN_ERR_INTERNAL, "LLVM verifier rejected a kernel: %.600s", vmsg ? vmsg : "");
    LLVMDisposeMessage(vmsg);
    return KILN_ERR_INTERNAL;
  }
  LLVMDisposeMessage(vmsg);
  LLVMPassBuilderOptionsRef po = LLVMCreatePassBuilderOptions();
  LLVMPassBuilderOptionsSetLoopVectorization(po, 1);
  LLVMPassBuilderOptionsSetSLPVectorization(po, 1);
  LLVMPassBuilderOptionsSetLoopUnrolling(po, 1);
  LLVMPassBuilderOptionsSetLoopInterleaving(po, 1);
  char pipeline[32];
  snprintf(pipeline, sizeof pipeline, "default<O%d>", j->opt_level);
  LLVMErrorRef err = LLVMRunPasses(mod, pipeline, j->tm, po);
  LLVMDisposePassBuilderOptions(po);
  if (err) return llvm_err(e, err, "running the optimization pipeline");
  return KILN_OK;
}

static void hex(const uint8_t *h, int n, char *out) {
  for (int i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", h[i]);
}

void kiln_jit_name_kernel(LLVMModuleRef mod, LLVMValueRef fn, char *name) {
  /* Name the kernel by the hash of its unoptimized IR (with a neutral name). */
  LLVMSetValueName2(fn, "kiln_kernel", strlen("kiln_kernel"));
  char *ir = LLVMPrintModuleToString(mod);
  llvm_blake3_hasher h;
  llvm_blake3_hasher_init(&h);
  llvm_blake3_hasher_update(&h, ir, strlen(ir));
  LLVMDisposeMessage(ir);
  uint8_t digest[16];
  llvm_blake3_hasher_finalize(&h, digest, sizeof digest);
  memcpy(name, "kiln_k_", 7);
  hex(digest, 16, name + 7);
  LLVMSetValueName2(fn, name, strlen(name));
}

kiln_code kiln_jit_add_kernel(kiln_jit *j, LLVMModuleRef mod, LLVMValueRef fn, kiln_kernel_fn *out,
                              kiln_err *e) {
  kiln_code rc = KILN_OK;
  char name[64];
  kiln_jit_name_kernel(mod, fn, name);

  for (int i = 0; i < j->n_kernels; i++)
    if (!strcmp(j->names[i], name)) {
      *out = j->addrs[i];
      j->stats.kernels_reused++;
      LLVMDisposeModule(mod);
      return KILN_OK;
    }

  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  LLVMMemoryBufferRef obj = NULL;
  bool from_cache = false;
  char warn[KILN_ERR_MSG] = "";
  if (kiln_cache_get(&j->cache, name, &obj, warn, sizeof warn)) from_cache = true;
  if (warn[0]) {
    j->stats.cache_rebuilt++;
    if (j->stats.n_warnings < 4) snprintf(j->stats.warnings[j->stats.n_warnings++], KILN_ERR_MSG, "%s", warn);
  }
  if (!from_cache) {
    rc = kiln_jit_optimize(j, mod, e);
    if (rc) goto done;
    char *emsg = NULL;
    if (LLVMTargetMachineEmitToMemoryBuffer(j->tm, mod, LLVMObjectFile, &emsg, &obj)) {
      rc = kiln_errf(e, KILN_ERR_INTERNAL, "LLVM: code generation failed: %s", emsg ? emsg : "");
      LLVMDisposeMessage(emsg);
      goto done;
    }
    warn[0] = 0;
    kiln_cache_put(&j->cache, name, LLVMGetBufferStart(obj), LLVMGetBufferSize(obj), warn, sizeof warn);
    if (warn[0] && j->stats.n_warnings < 4)
      snprintf(j->stats.warnings[j->stats.n_warnings++], KILN_ERR_MSG, "%s", warn);
    j->stats.kernels_compiled++;
  } else {
    j->stats.kernels_cached++;
  }
  /* LLJIT takes ownership of the buffer. */
  LLVMErrorRef err = LLVMOrcLLJITAddObjectFile(j->lljit, LLVMOrcLLJITGetMainJITDylib(j->lljit), obj);
  obj = NULL;
  if (err) {
    rc = llvm_err(e, err, "loading a compiled kernel");
    goto done;
  }
  LLVMOrcExecutorAddress addr = 0;
  err = LLVMOrcLLJITLookup(j->lljit, &addr, name);
  if (err) {
    rc = llvm_err(e, err, "looking up a compiled kernel");
    goto done;
  }
  if (j->n_kernels == j->cap_kernels) {
    int nc = j->cap_kernels ? j->cap_kernels * 2 : 64;
    char **nn = kiln_realloc(j->names, sizeof(char *) * (size_t)nc);
    if (!nn) {
      rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
      goto done;
    }
    j->names = nn;
    kiln_kernel_fn *na = kiln_realloc(j->addrs, sizeof(kiln_kernel_fn) * (size_t)nc);
    if (!na) {
      rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
      goto done;
    }
    j->addrs = na;
    j->cap_kernels = nc;
  }
  j->names[j->n_kernels] = kiln_strdup(name);
  if (!j->names[j->n_kernels]) {
    rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
    goto done;
  }
  j->addrs[j->n_kernels++] = (kiln_kernel_fn)(uintptr_t)addr;
  *out = (kiln_kernel_fn)(uintptr_t)addr;
done:
  if (obj) LLVMDisposeMemoryBuffer(obj);
  LLVMDisposeModule(mod);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  j->stats.compile_seconds += (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
  return rc;
}

kiln_code kiln_jit_emit_object(kiln_jit *j, LLVMModuleRef mod, const char *path, kiln_err *e) {
  KILN_TRY(kiln_jit_optimize(j, mod, e));
  char *emsg = NULL;
  if (LLVMTargetMachineEmitToFile(j->tm, mod, path, LLVMObjectFile, &emsg)) {
    kiln_errf(e, KILN_ERR_IO, "LLVM: cannot write object file %s: %s", path, emsg ? emsg : "");
    LLVMDisposeMessage(emsg);
    return KILN_ERR_IO;
  }
  return KILN_OK;
}
