/* aot_scaling.c — times kiln AOT libraries (from `kiln compile -o`) at several thread counts,
 * for a machine without LLVM or kiln's build dependencies (the multicore scaling check).
 *
 * Each library is compiled for one thread count (the tiling of its kernels depends on it:
 * KILN_NUM_THREADS=T kiln compile MODEL -o libT.so --weights w.bin), and they share the
 * weights file.  The library is opened with dlopen, its threads set to T, and a random
 * input run W times then timed N times (median, min).
 *   cc -O2 aot_scaling.c -ldl -o aot_scaling
 * usage: aot_scaling WEIGHTS INPUT_BYTES MACS ITERS T1:LIB1 [T2:LIB2 ...]
 * Prints one line per library: threads, median and min ms, GFLOP/s at the median, speedup
 * over the first line, and parallel efficiency. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef void *(*create_fn)(const char *weights, char *err, size_t errlen);
typedef int (*run_fn)(void *m, const void *const *in, void *const *out);
typedef void (*threads_fn)(void *m, int threads);
typedef void (*destroy_fn)(void *m);

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  if (argc < 6) {
    fprintf(stderr, "usage: aot_scaling WEIGHTS INPUT_BYTES MACS ITERS T1:LIB1 [T2:LIB2 ...]\n");
    return 2;
  }
  const char *weights = argv[1];
  size_t in_bytes = (size_t)atoll(argv[2]);
  double macs = atof(argv[3]);
  int iters = atoi(argv[4]) > 0 ? atoi(argv[4]) : 5;
  float *in = malloc(in_bytes);
  /* outputs: generously sized scratch (the scaling check models have <= 2 outputs no larger
   * than the input) */
  void *out[4] = {malloc(in_bytes), malloc(in_bytes), malloc(in_bytes), malloc(in_bytes)};
  double *t = calloc((size_t)iters, sizeof *t);
  if (!in || !out[0] || !out[1] || !out[2] || !out[3] || !t) return 1;
  unsigned s = 12345;
  for (size_t i = 0; i < in_bytes / sizeof(float); i++) {
    s = s * 1103515245u + 12345u;
    in[i] = (float)((s >> 9) & 0xffff) / 32768.0f - 1.0f;
  }
  double base = 0;
  int base_threads = 1;
  printf("%8s %12s %12s %10s %8s %10s\n", "threads", "median ms", "min ms", "GFLOP/s", "speedup",
         "efficiency");
  for (int a = 5; a < argc; a++) {
    int threads = atoi(argv[a]);
    const char *lib = strchr(argv[a], ':');
    if (!lib) return 2;
    lib++;
    void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      fprintf(stderr, "dlopen %s: %s\n", lib, dlerror());
      return 1;
    }
    create_fn create = (create_fn)dlsym(h, "model_create");
    run_fn run = (run_fn)dlsym(h, "model_run");
    threads_fn set_threads = (threads_fn)dlsym(h, "model_set_threads");
    destroy_fn destroy = (destroy_fn)dlsym(h, "model_destroy");
    if (!create || !run || !set_threads || !destroy) {
      fprintf(stderr, "%s: missing model_* entry points\n", lib);
      return 1;
    }
    char err[256];
    void *m = create(weights, err, sizeof err);
    if (!m) {
      fprintf(stderr, "%s: %s\n", lib, err);
      return 1;
    }
    set_threads(m, threads);
    const void *ins[1] = {in};
    for (int i = 0; i < 2; i++) run(m, ins, out);
    for (int i = 0; i < iters; i++) {
      double t0 = now_s();
      if (run(m, ins, out)) {
        fprintf(stderr, "%s: model_run failed\n", lib);
        return 1;
      }
      t[i] = now_s() - t0;
    }
    qsort(t, (size_t)iters, sizeof *t, cmp_double);
    double med = t[iters / 2];
    if (a == 5) {
      base = med;
      base_threads = threads;
    }
    double speedup = base / med;
    printf("%8d %12.2f %12.2f %10.1f %7.2fx %9.0f%%\n", threads, med * 1e3, t[0] * 1e3,
           2.0 * macs / med / 1e9, speedup, 100.0 * speedup * base_threads / threads);
    fflush(stdout);
    destroy(m);
    /* libgomp's pool stays alive across dlclose in the same process; keep the handle */
  }
  return 0;
}
