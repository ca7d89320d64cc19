/* test_kernel_cache.c — the on-disk kernel cache never breaks a run: entries that are
 * truncated, corrupt, empty, oversized, built for another CPU, CPU feature set or LLVM
 * version are ignored with a warning and rebuilt; an unwritable directory disables the
 * cache with a warning.  (tests/test_jit.c covers corrupt and truncated entries end to
 * end; this file covers each case on the cache API and the other-CPU case end to end.) */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "codegen/cache.h"
#include "codegen/compile.h"
#include "runtime/ref.h"
#include "test.h"

static bool has(const char *s, const char *sub) { return strstr(s, sub) != NULL; }

static uint8_t *slurp(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *p = malloc(len > 0 ? (size_t)len : 1);
  *n = fread(p, 1, (size_t)(len > 0 ? len : 0), f);
  fclose(f);
  return p;
}

static void spit(const char *path, const void *p, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f) return;
  fwrite(p, 1, n, f);
  fclose(f);
}

/* Replaces the first occurrence of `from` in the file by `to` (same length). */
static bool rewrite(const char *path, const char *from, const char *to) {
  size_t n;
  uint8_t *p = slurp(path, &n);
  size_t fl = strlen(from);
  bool done = false;
  for (size_t i = 0; p && i + fl <= n && !done; i++)
    if (!memcmp(p + i, from, fl)) {
      memcpy(p + i, to, fl);
      done = true;
    }
  if (done) spit(path, p, n);
  free(p);
  return done;
}

/* A cache hit returns the object; a bad entry returns false with a warning naming why. */
static void expect_get(kiln_cache *c, const char *key, bool hit, const char *why) {
  LLVMMemoryBufferRef obj = NULL;
  char warn[KILN_ERR_MSG] = "";
  bool got = kiln_cache_get(c, key, &obj, warn, sizeof warn);
  CHECK_MSG(got == hit, "%s: expected a %s", key, hit ? "hit" : "miss");
  if (why) CHECK_MSG(has(warn, why) && has(warn, "rebuilding"), "warning '%s' lacks '%s'", warn, why);
  else CHECK_MSG(warn[0] == 0, "unexpected warning '%s'", warn);
  if (obj) {
    CHECK(LLVMGetBufferSize(obj) == 4000);
    LLVMDisposeMemoryBuffer(obj);
  }
}

static void test_cache_entries(void) {
  char dir[] = "/tmp/kiln-cache-entries-XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  kiln_cache c;
  kiln_cache_open(&c, dir, "test-cpu-a", "+avx2,+fma");
  CHECK(c.dir != NULL && c.warning[0] == 0);
  uint8_t payload[4000];
  for (int i = 0; i < 4000; i++) payload[i] = (uint8_t)(i * 31);
  char warn[KILN_ERR_MSG] = "", path[4096];
  const char *key = "k0123";
  expect_get(&c, key, false, NULL); /* a plain miss: no warning */
  kiln_cache_put(&c, key, payload, sizeof payload, warn, sizeof warn);
  CHECK(warn[0] == 0);
  expect_get(&c, key, true, NULL);
  kiln_cache_path(&c, key, path, sizeof path);
  size_t n = 0;
  uint8_t *good = slurp(path, &n);
  CHECK(good && n > sizeof payload);
  if (!good || n <= sizeof payload) return;

  /* another CPU: the header's CPU name rewritten */
  CHECK(rewrite(path, "test-cpu-a", "test-cpu-b"));
  expect_get(&c, key, false, "another CPU");
  /* the same entry read by a cache for another CPU, or other CPU features */
  spit(path, good, n);
  kiln_cache other;
  kiln_cache_open(&other, dir, "test-cpu-b", "+avx2,+fma");
  expect_get(&other, key, false, "another CPU");
  kiln_cache_close(&other);
  kiln_cache_open(&other, dir, "test-cpu-a", "+avx2,-fma");
  expect_get(&other, key, false, "another CPU");
  kiln_cache_close(&other);
  /* another LLVM version: bump the major version after the 8-byte magic */
  uint8_t *bad = malloc(n);
  memcpy(bad, good, n);
  bad[8] ^= 0x40;
  spit(path, bad, n);
  expect_get(&c, key, false, "LLVM");
  /* a flipped payload byte */
  memcpy(bad, good, n);
  bad[n - 100] ^= 1;
  spit(path, bad, n);
  expect_get(&c, key, false, "checksum");
  /* bad magic */
  memcpy(bad, good, n);
  bad[0] = 'X';
  spit(path, bad, n);
  expect_get(&c, key, false, "bad magic");
  /* truncated payload, truncated header, empty file */
  spit(path, good, n - 1);
  expect_get(&c, key, false, "truncated");
  spit(path, good, 20);
  expect_get(&c, key, false, "truncated");
  spit(path, good, 0);
  expect_get(&c, key, false, "truncated");
  /* a payload length claiming terabytes */
  memcpy(bad, good, n);
  for (size_t i = 0; i + 8 <= n; i++) /* the length field holds 4000: find and inflate it */
    if (bad[i] == (4000 & 0xff) && bad[i + 1] == (4000 >> 8) && !bad[i + 2] && !bad[i + 3] &&
        !bad[i + 4] && !bad[i + 5] && !bad[i + 6] && !bad[i + 7]) {
      bad[i + 6] = 1;
      break;
    }
  spit(path, bad, n);
  expect_get(&c, key, false, "oversized");
  /* extra bytes after the payload */
  memcpy(bad, good, n);
  FILE *f = fopen(path, "wb");
  fwrite(good, 1, n, f);
  fwrite("tail", 1, 4, f);
  fclose(f);
  expect_get(&c, key, false, "truncated or oversized");
  /* a directory where the entry should be */
  unlink(path);
  CHECK(mkdir(path, 0755) == 0);
  expect_get(&c, key, false, "unusable");
  /* ... which put cannot replace: a warning, no crash */
  warn[0] = 0;
  kiln_cache_put(&c, key, payload, sizeof payload, warn, sizeof warn);
  CHECK_MSG(warn[0] != 0, "put over a directory gave no warning");
  rmdir(path);
  /* rewriting the entry makes it usable again */
  warn[0] = 0;
  kiln_cache_put(&c, key, payload, sizeof payload, warn, sizeof warn);
  expect_get(&c, key, true, NULL);
  /* the directory removed under an open cache: put warns, get misses */
  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  CHECK(system(cmd) == 0);
  warn[0] = 0;
  kiln_cache_put(&c, "k2", payload, sizeof payload, warn, sizeof warn);
  CHECK(has(warn, "cannot write kernel cache entry"));
  expect_get(&c, "k2", false, NULL);
  kiln_cache_close(&c);
  free(bad);
  free(good);
}

static void test_unwritable_dirs(void) {
  kiln_cache c;
  /* under a regular file: can never be created */
  kiln_cache_open(&c, "/dev/null/kiln-cache", "cpu", "");
  CHECK(c.dir == NULL && has(c.warning, "not writable") && has(c.warning, "/dev/null/kiln-cache"));
  char warn[KILN_ERR_MSG] = "";
  LLVMMemoryBufferRef obj = NULL;
  CHECK(!kiln_cache_get(&c, "k", &obj, warn, sizeof warn));
  kiln_cache_put(&c, "k", "x", 1, warn, sizeof warn); /* disabled: silently nothing */
  kiln_cache_close(&c);
  /* a read-only directory (permissions do not bind root, who is skipped) */
  if (geteuid() != 0) {
    char dir[] = "/tmp/kiln-cache-ro-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    chmod(dir, 0555);
    kiln_cache_open(&c, dir, "cpu", "");
    CHECK(c.dir == NULL && has(c.warning, "not writable"));
    kiln_cache_close(&c);
    rmdir(dir);
  }
  /* "" disables the cache without a warning */
  kiln_cache_open(&c, "", "cpu", "");
  CHECK(c.dir == NULL && c.warning[0] == 0);
  kiln_cache_close(&c);
}

/* ---- end to end: a compiled graph with its cache entries rewritten for another CPU ---- */

/* y = relu(x * w + b) over [16, 300] */
static kiln_graph *build(kiln_err *e) {
  kiln_graph *g = ir_graph_new();
  int x, w, b, m, s, y;
  ir_add_value(g, "x", &x, e);
  g->values[x].dtype = KILN_F32;
  g->values[x].shape = kiln_shape_make(2, (int64_t[]){16, 300});
  g->values[x].typed = true;
  ir_add_input(g, x, e);
  kiln_tensor *wt, *bt;
  kiln_tensor_new(KILN_F32, &(kiln_shape){.rank = 1, .d = {300}}, &wt, e);
  kiln_tensor_new(KILN_F32, &(kiln_shape){.rank = 1, .d = {300}}, &bt, e);
  for (int i = 0; i < 300; i++) {
    ((float *)wt->data)[i] = (float)(i % 5) * 0.5f - 1.0f;
    ((float *)bt->data)[i] = (float)(i % 3) * 0.25f - 0.25f;
  }
  ir_add_const(g, "w", wt, true, &w, e);
  ir_add_const(g, "b", bt, true, &b, e);
  ir_add_value(g, "m", &m, e);
  ir_add_value(g, "s", &s, e);
  ir_add_value(g, "y", &y, e);
  ir_add_node(g, KILN_OP_Mul, "mul", (int[]){x, w}, 2, (int[]){m}, 1, NULL, e);
  ir_add_node(g, KILN_OP_Add, "add", (int[]){m, b}, 2, (int[]){s}, 1, NULL, e);
  ir_add_node(g, KILN_OP_Relu, "relu", (int[]){s}, 1, (int[]){y}, 1, NULL, e);
  ir_add_output(g, y, e);
  kiln_evaluator ev = kiln_ref_evaluator();
  ir_toposort(g, e);
  ir_infer(g, &ev, e);
  return g;
}

/* Compiles and runs with the cache in `dir`; checks the result against the reference. */
static void run_cached(const char *dir, kiln_jit_stats *st, const char **cpu) {
  kiln_err e = {0};
  kiln_graph *gref = build(&e), *gjit = build(&e);
  CHECK_OK(e.code, &e);
  kiln_tensor *x, *want = NULL, *got = NULL;
  kiln_tensor_new(KILN_F32, &gref->values[gref->inputs[0]].shape, &x, &e);
  for (int64_t i = 0; i < x->numel; i++) ((float *)x->data)[i] = (float)(i % 17) * 0.125f - 1.0f;
  kiln_ref_ctx ctx = {.g = gref};
  CHECK_OK(kiln_ref_run(gref, &ctx, &x, &want, &e), &e);
  kiln_program *p = NULL;
  kiln_compile_opts o = {.threads = 1, .cache_dir = dir};
  CHECK_OK(kiln_compile(gjit, &o, &p, &e), &e);
  if (p) {
    CHECK_OK(kiln_program_run(p, &x, &got, false, &e), &e);
    if (got && want) CHECK(memcmp(got->data, want->data, kiln_tensor_nbytes(want)) == 0);
    *st = *kiln_program_jit_stats(p);
    static char cpu_name[128];
    snprintf(cpu_name, sizeof cpu_name, "%s", kiln_jit_cpu((kiln_jit *)p->jit));
    *cpu = cpu_name;
    kiln_program_free(p);
  }
  kiln_tensor_free(want);
  kiln_tensor_free(got);
  kiln_tensor_free(x);
  ir_graph_free(gref);
}

static void test_other_cpu_end_to_end(void) {
  char dir[] = "/tmp/kiln-cache-cpu-XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  kiln_jit_stats cold, warm, rebuilt, again;
  const char *cpu = "";
  run_cached(dir, &cold, &cpu);
  CHECK(cold.kernels_compiled > 0 && cold.kernels_cached == 0);
  run_cached(dir, &warm, &cpu);
  CHECK(warm.kernels_compiled == 0 && warm.kernels_cached == cold.kernels_compiled);
  /* every entry claims another CPU: same-length name, so only the name differs */
  char cmd[512];
  snprintf(cmd, sizeof cmd, "ls %s/*.kc > %s.list", dir, dir);
  CHECK(system(cmd) == 0);
  char list[600];
  snprintf(list, sizeof list, "%s.list", dir);
  FILE *f = fopen(list, "r");
  char line[4096], other[128];
  snprintf(other, sizeof other, "%s", cpu);
  for (char *q = other; *q; q++) *q = *q == 'z' ? 'y' : 'z';
  int n = 0;
  while (f && fgets(line, sizeof line, f)) {
    line[strcspn(line, "\n")] = 0;
    n += rewrite(line, cpu, other);
  }
  if (f) fclose(f);
  unlink(list);
  CHECK_MSG(n == cold.kernels_compiled, "rewrote %d of %d entries (cpu '%s')", n,
            cold.kernels_compiled, cpu);
  run_cached(dir, &rebuilt, &cpu);
  CHECK(rebuilt.kernels_compiled == cold.kernels_compiled && rebuilt.kernels_cached == 0);
  CHECK(rebuilt.cache_rebuilt == cold.kernels_compiled);
  CHECK(rebuilt.n_warnings > 0 && has(rebuilt.warnings[0], "another CPU"));
  /* the rebuilt entries were written back for this CPU */
  run_cached(dir, &again, &cpu);
  CHECK(again.kernels_compiled == 0 && again.kernels_cached == cold.kernels_compiled);
  CHECK(again.n_warnings == 0);
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  CHECK(system(cmd) == 0);
}

int main(void) {
  RUN(test_cache_entries);
  RUN(test_unwritable_dirs);
  RUN(test_other_cpu_end_to_end);
  TEST_MAIN_END();
}
