/* dropout_rng.h — the random stream of Dropout's mask, shared by the reference kernel
 * (runtime/ref/elementwise.c) and the JIT emitter (codegen/emit_elementwise.c), which draws it
 * at compile time: MT19937 as numpy's legacy RandomState (np.random.seed(s);
 * np.random.uniform(0, 1, shape) >= ratio), so that kiln reproduces the ONNX reference's masks
 * bit for bit. */
#ifndef KILN_REF_DROPOUT_RNG_H
#define KILN_REF_DROPOUT_RNG_H

#include <stdint.h>

#include "ir/graph.h"

enum { KILN_MT_N = 624, KILN_MT_M = 397 };
typedef struct kiln_mt19937 {
  uint32_t s[KILN_MT_N];
  int pos;
} kiln_mt19937;

static inline void kiln_mt_seed32(kiln_mt19937 *m, uint32_t seed) {
  m->s[0] = seed;
  for (int i = 1; i < KILN_MT_N; i++)
    m->s[i] = 1812433253u * (m->s[i - 1] ^ (m->s[i - 1] >> 30)) + (uint32_t)i;
  m->pos = KILN_MT_N;
}

/* Seeds as numpy does: a seed beyond 32 bits goes through Matsumoto and Nishimura's
 * init_by_array with its two 32-bit words. */
static inline void kiln_mt_seed(kiln_mt19937 *m, uint64_t seed) {
  if (seed <= UINT32_MAX) {
    kiln_mt_seed32(m, (uint32_t)seed);
    return;
  }
  const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
  const int len = 2;
  kiln_mt_seed32(m, 19650218u);
  int i = 1, j = 0;
  for (int k = KILN_MT_N > len ? KILN_MT_N : len; k; k--) {
    m->s[i] = (m->s[i] ^ ((m->s[i - 1] ^ (m->s[i - 1] >> 30)) * 1664525u)) + key[j] + (uint32_t)j;
    i++, j++;
    if (i >= KILN_MT_N) m->s[0] = m->s[KILN_MT_N - 1], i = 1;
    if (j >= len) j = 0;
  }
  for (int k = KILN_MT_N - 1; k; k--) {
    m->s[i] = (m->s[i] ^ ((m->s[i - 1] ^ (m->s[i - 1] >> 30)) * 1566083941u)) - (uint32_t)i;
    i++;
    if (i >= KILN_MT_N) m->s[0] = m->s[KILN_MT_N - 1], i = 1;
  }
  m->s[0] = 0x80000000u;
}

static inline uint32_t kiln_mt_next(kiln_mt19937 *m) {
  if (m->pos >= KILN_MT_N) {
    for (int k = 0; k < KILN_MT_N; k++) {
      uint32_t y = (m->s[k] & 0x80000000u) | (m->s[(k + 1) % KILN_MT_N] & 0x7fffffffu);
      m->s[k] = m->s[(k + KILN_MT_M) % KILN_MT_N] ^ (y >> 1) ^ ((y & 1) ? 0x9908b0dfu : 0);
    }
    m->pos = 0;
  }
  uint32_t y = m->s[m->pos++];
  y ^= y >> 11;
  y ^= (y << 7) & 0x9d2c5680u;
  y ^= (y << 15) & 0xefc60000u;
  return y ^ (y >> 18);
}

/* A double in [0, 1) with 53 random bits (numpy's random_sample). */
static inline double kiln_mt_uniform(kiln_mt19937 *m) {
  uint32_t a = kiln_mt_next(m) >> 5, b = kiln_mt_next(m) >> 6;
  return (a * 67108864.0 + b) / 9007199254740992.0;
}

/* The mask's seed: the node's `seed` attribute offset by the run's seed, so a run seed of 0
 * (the conformance runs, and compiled programs, which have none) reproduces ONNX's reference;
 * without the attribute, the run's seed mixed with the node's name (FNV-1a) so that two
 * Dropouts of one graph draw different masks. */
static inline uint64_t kiln_dropout_seed(const kiln_node *n, uint64_t run) {
  if (ir_attr_has(n, "seed")) return (uint64_t)ir_attr_int(n, "seed") + run;
  uint64_t h = 1469598103934665603ull;
  for (const char *s = n->name ? n->name : ""; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
  return run ^ h;
}

#endif
