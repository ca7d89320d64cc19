/* peak.c — kiln_peak: measures the machine's fp32 FMA peak (GFLOP/s) on 1 and N threads.
 *
 * Each thread runs many independent vector FMA chains (more chains than FMA latency x FMA
 * ports, so the FMA units never wait), which is the most a convolution kernel can reach.
 * AVX-512 (24 zmm chains) is used when the CPU has it, else AVX2+FMA (12 ymm chains), else
 * a portable vector loop; the CPU is checked at run time, both x86 paths are compiled with
 * target attributes, so one binary serves both kinds of machine.  Each figure is the median
 * of several timed runs.  Build: the kiln_peak target (-O3 -march=native -funroll-loops).
 *
 * usage: kiln_peak [--threads N] [--runs R] [--seconds S] [--isa auto|avx512|avx2|generic]
 *                  [--json]
 * Prints "peak: 1 thread G1 GFLOP/s, N threads GN GFLOP/s (isa)"; --json prints one object
 * {"isa":..., "threads":N, "gflops_1":G1, "gflops_n":GN, ...} for scripts.  Both are wall-time
 * rates; "GFLOP/s per CPU-second" (gflops_per_cpu_s) divides by the CPU time the threads
 * actually ran, which other processes on the machine do not change: on a shared machine it
 * is the per-core peak to hold CPU-time rates against. */
#include <math.h>
#include <omp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define PEAK_X86 1
#endif

/* Multiplier and addend keep every chain bounded and away from denormals: x -> x*m + a
 * converges to a/(1-m) = 1, so no value overflows however long the loop runs.  Each chain
 * starts from a different value: chains with equal start values are equal, and the compiler
 * merges them. */
#define PEAK_MUL 0.9999999f
#define PEAK_ADD 0.0000001f

typedef double (*chain_fn)(long iters, float mul, float add);

static double clock_s(clockid_t id) {
  struct timespec t;
  clock_gettime(id, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}
static double now_s(void) { return clock_s(CLOCK_MONOTONIC); }

#ifdef PEAK_X86
/* 24 independent zmm accumulators: Zen 4/5 and Intel server cores have two 512-bit FMA
 * pipes of latency 4, so 8 chains are the minimum; 24 leaves no dependency stall. */
__attribute__((target("avx512f"))) static double chains_avx512(long iters, float mul, float add) {
  __m512 m = _mm512_set1_ps(mul), a = _mm512_set1_ps(add);
#define I(k) _mm512_set1_ps(add * (k))
  __m512 c0 = I(0), c1 = I(1), c2 = I(2), c3 = I(3), c4 = I(4), c5 = I(5), c6 = I(6), c7 = I(7);
  __m512 c8 = I(8), c9 = I(9), c10 = I(10), c11 = I(11), c12 = I(12), c13 = I(13), c14 = I(14);
  __m512 c15 = I(15), c16 = I(16), c17 = I(17), c18 = I(18), c19 = I(19), c20 = I(20);
  __m512 c21 = I(21), c22 = I(22), c23 = I(23);
#undef I
  for (long i = 0; i < iters; i++) {
#define F(c) c = _mm512_fmadd_ps(c, m, a)
    F(c0); F(c1); F(c2); F(c3); F(c4); F(c5); F(c6); F(c7);
    F(c8); F(c9); F(c10); F(c11); F(c12); F(c13); F(c14); F(c15);
    F(c16); F(c17); F(c18); F(c19); F(c20); F(c21); F(c22); F(c23);
#undef F
    /* keeps the compiler from collapsing the loop into a closed form */
    __asm__ volatile("" : "+v"(c0), "+v"(c8), "+v"(c16));
  }
  __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(c0, c1), _mm512_add_ps(c2, c3)),
                           _mm512_add_ps(_mm512_add_ps(c4, c5), _mm512_add_ps(c6, c7)));
  s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(c8, c9), _mm512_add_ps(c10, c11)),
                                     _mm512_add_ps(_mm512_add_ps(c12, c13), _mm512_add_ps(c14, c15))));
  s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(c16, c17), _mm512_add_ps(c18, c19)),
                                     _mm512_add_ps(_mm512_add_ps(c20, c21), _mm512_add_ps(c22, c23))));
  return (double)_mm512_reduce_add_ps(s);
}

/* 12 independent ymm accumulators (of 16 registers): Zen 3 has two 256-bit FMA pipes of
 * latency 4 (8 chains needed); Intel client cores two of latency 4-5 (8-10). */
__attribute__((target("avx2,fma"))) static double chains_avx2(long iters, float mul, float add) {
  __m256 m = _mm256_set1_ps(mul), a = _mm256_set1_ps(add);
#define I(k) _mm256_set1_ps(add * (k))
  __m256 c0 = I(0), c1 = I(1), c2 = I(2), c3 = I(3), c4 = I(4), c5 = I(5), c6 = I(6), c7 = I(7);
  __m256 c8 = I(8), c9 = I(9), c10 = I(10), c11 = I(11);
#undef I
  for (long i = 0; i < iters; i++) {
#define F(c) c = _mm256_fmadd_ps(c, m, a)
    F(c0); F(c1); F(c2); F(c3); F(c4); F(c5); F(c6); F(c7); F(c8); F(c9); F(c10); F(c11);
#undef F
    __asm__ volatile("" : "+x"(c0), "+x"(c6));
  }
  __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(c0, c1), _mm256_add_ps(c2, c3)),
                           _mm256_add_ps(_mm256_add_ps(c4, c5), _mm256_add_ps(c6, c7)));
  s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(c8, c9), _mm256_add_ps(c10, c11)));
  float v[8];
  _mm256_storeu_ps(v, s);
  return (double)(v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7]);
}
#endif

/* Portable fallback: GCC vector extensions, 8 chains of 4 lanes; the compiler contracts
 * x*m+a into an FMA where the target has one (-march=native, -ffp-contract=fast is GCC's
 * default in GNU C mode).  No barrier is needed: without -ffast-math the float recurrence
 * cannot be folded. */
typedef float v4f __attribute__((vector_size(16)));
static double chains_generic(long iters, float mul, float add) {
  v4f m = {mul, mul, mul, mul}, a = {add, add, add, add};
  v4f c[8];
  for (int k = 0; k < 8; k++) c[k] = a * (float)k;
  for (long i = 0; i < iters; i++) {
    for (int k = 0; k < 8; k++) c[k] = c[k] * m + a;
  }
  double s = 0;
  for (int k = 0; k < 8; k++) s += c[k][0] + c[k][1] + c[k][2] + c[k][3];
  return s;
}

typedef struct isa_path {
  const char *name;
  chain_fn fn;
  int flops_per_iter; /* 2 per FMA lane */
} isa_path;

static int pick_isa(const char *want, isa_path *p) {
#ifdef PEAK_X86
  __builtin_cpu_init();
  bool auto_pick = !strcmp(want, "auto");
  if ((auto_pick || !strcmp(want, "avx512")) && __builtin_cpu_supports("avx512f")) {
    *p = (isa_path){"avx512", chains_avx512, 24 * 16 * 2};
    return 0;
  }
  if ((auto_pick || !strcmp(want, "avx2")) && __builtin_cpu_supports("avx2") &&
      __builtin_cpu_supports("fma")) {
    *p = (isa_path){"avx2", chains_avx2, 12 * 8 * 2};
    return 0;
  }
  if (!auto_pick && strcmp(want, "generic")) return -1;
#else
  if (strcmp(want, "auto") && strcmp(want, "generic")) return -1;
#endif
  *p = (isa_path){"generic", chains_generic, 8 * 4 * 2};
  return 0;
}

static volatile double sink;

/* One timed run on `threads` threads, each running `iters` iterations; returns GFLOP/s of
 * wall time, and in *per_cpu the GFLOP/s per CPU-second the threads were running (what one
 * core does while it is scheduled: unchanged by other processes sharing the machine). */
static double run_once(const isa_path *p, int threads, long iters, double *per_cpu) {
  double t0 = 0, t1 = 0, total = 0, cpu = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total, cpu)
  {
#pragma omp barrier
#pragma omp master
    t0 = now_s();
    double c0 = clock_s(CLOCK_THREAD_CPUTIME_ID);
    total += p->fn(iters, PEAK_MUL, PEAK_ADD);
    cpu += clock_s(CLOCK_THREAD_CPUTIME_ID) - c0;
#pragma omp barrier
#pragma omp master
    t1 = now_s();
  }
  sink = total;
  double flops = (double)p->flops_per_iter * (double)iters * threads;
  *per_cpu = flops / cpu / 1e9;
  return flops / (t1 - t0) / 1e9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Median of `runs` runs, each sized to take about `seconds`; also the best run and the median
 * GFLOP/s per CPU-second. */
static double measure(const isa_path *p, int threads, int runs, double seconds, double *best,
                      double *per_cpu) {
  long iters = 1 << 16;
  /* calibrate on one thread: grow until a run takes a tenth of the target */
  for (;;) {
    double t0 = now_s();
    sink = p->fn(iters, PEAK_MUL, PEAK_ADD);
    double dt = now_s() - t0;
    if (dt > seconds / 10 || iters > (1L << 40)) {
      iters = (long)((double)iters * seconds / fmax(dt, 1e-9));
      break;
    }
    iters *= 4;
  }
  if (iters < 1) iters = 1;
  double *g = calloc(2 * (size_t)runs, sizeof *g), *c = g + runs;
  if (!g) return 0;
  for (int r = 0; r < runs; r++) g[r] = run_once(p, threads, iters, &c[r]);
  qsort(g, (size_t)runs, sizeof *g, cmp_double);
  qsort(c, (size_t)runs, sizeof *c, cmp_double);
  double med = runs % 2 ? g[runs / 2] : 0.5 * (g[runs / 2 - 1] + g[runs / 2]);
  *per_cpu = runs % 2 ? c[runs / 2] : 0.5 * (c[runs / 2 - 1] + c[runs / 2]);
  *best = g[runs - 1];
  free(g);
  return med;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: kiln_peak [--threads N] [--runs R] [--seconds S] [--isa auto|avx512|avx2|generic] "
          "[--json]\n"
          "Measures the fp32 FMA peak on 1 thread and on N threads (default: all online CPUs, or\n"
          "$OMP_NUM_THREADS), median of R runs (default 7) of about S seconds each (default 0.2).\n");
}

int main(int argc, char **argv) {
  int threads = 0, runs = 7;
  double seconds = 0.2;
  const char *isa = "auto";
  int json = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(stdout);
      return 0;
    } else if (!strcmp(a, "--json")) {
      json = 1;
    } else if (i + 1 < argc && !strcmp(a, "--threads")) {
      threads = atoi(argv[++i]);
    } else if (i + 1 < argc && !strcmp(a, "--runs")) {
      runs = atoi(argv[++i]);
    } else if (i + 1 < argc && !strcmp(a, "--seconds")) {
      seconds = atof(argv[++i]);
    } else if (i + 1 < argc && !strcmp(a, "--isa")) {
      isa = argv[++i];
    } else {
      fprintf(stderr, "kiln_peak: unknown or incomplete option '%s'\n", a);
      usage(stderr);
      return 2;
    }
  }
  if (threads <= 0) {
    const char *env = getenv("OMP_NUM_THREADS");
    threads = env && atoi(env) > 0 ? atoi(env) : (int)sysconf(_SC_NPROCESSORS_ONLN);
  }
  if (threads < 1) threads = 1;
  if (runs < 1) runs = 1;
  if (!(seconds > 0)) seconds = 0.2;
  isa_path p;
  if (pick_isa(isa, &p)) {
    fprintf(stderr, "kiln_peak: this CPU cannot run --isa %s\n", isa);
    return 1;
  }
  double best1, bestn, cpu1, cpun;
  double g1 = measure(&p, 1, runs, seconds, &best1, &cpu1);
  double gn = threads > 1 ? measure(&p, threads, runs, seconds, &bestn, &cpun)
                          : (bestn = best1, cpun = cpu1, g1);
  if (json) {
    printf("{\"isa\": \"%s\", \"threads\": %d, \"runs\": %d, \"gflops_1\": %.2f, \"gflops_n\": %.2f, "
           "\"best_1\": %.2f, \"best_n\": %.2f, \"gflops_per_cpu_s\": %.2f}\n",
           p.name, threads, runs, g1, gn, best1, bestn, cpun);
  } else {
    printf("peak: 1 thread %.1f GFLOP/s, %d threads %.1f GFLOP/s (%s FMA, median of %d runs; "
           "best %.1f / %.1f); %.1f GFLOP/s per CPU-second\n",
           g1, threads, gn, p.name, runs, best1, bestn, cpun);
  }
  return 0;
}
