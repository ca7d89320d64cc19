/* split.c — the stratified train/val/test split and the seeded choice of which
 * training images keep their masks (the loc ratio). */
#include <math.h>
#include <string.h>

#include "data/internal.h"

static void shuffle(int64_t *v, int64_t n, data_rng *r) {
  for (int64_t i = n - 1; i > 0; i--) {
    int64_t j = rng_below(r, i + 1), t = v[i];
    v[i] = v[j];
    v[j] = t;
  }
}

kiln_code kiln_data_split(const int64_t *labels, int64_t n, uint64_t seed, double val_frac, double test_frac,
                          int8_t *split, kiln_err *e) {
  if (!(val_frac >= 0 && test_frac >= 0 && val_frac + test_frac <= 1))
    return kiln_errf(e, KILN_ERR_INVALID, "split fractions val %g and test %g must be >= 0 and sum to <= 1",
                     val_frac, test_frac);
  int64_t k = 0;
  for (int64_t i = 0; i < n; i++) {
    if (labels[i] < 0) return kiln_errf(e, KILN_ERR_INVALID, "example %lld has a negative label", (long long)i);
    if (labels[i] + 1 > k) k = labels[i] + 1;
  }
  int64_t *members = kiln_malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
  if (!members) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  for (int64_t c = 0; c < k; c++) {
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++)
      if (labels[i] == c) members[m++] = i;
    data_rng r = {data_seed3(seed, 0x5911ull, (uint64_t)c)};
    shuffle(members, m, &r);
    int64_t n_test = llround(test_frac * (double)m), n_val = llround(val_frac * (double)m);
    if (n_test + n_val > m) n_val = m - n_test;
    for (int64_t j = 0; j < m; j++)
      split[members[j]] = j < n_test ? KILN_SPLIT_TEST : j < n_test + n_val ? KILN_SPLIT_VAL : KILN_SPLIT_TRAIN;
  }
  kiln_free(members);
  return KILN_OK;
}

int64_t kiln_data_loc_select(const int8_t *split, const bool *has_mask, int64_t n, double ratio, uint64_t seed,
                             bool *keep) {
  int64_t m = 0;
  for (int64_t i = 0; i < n; i++) {
    keep[i] = false;
    if (split[i] == KILN_SPLIT_TRAIN && has_mask[i]) m++;
  }
  if (ratio <= 0 || m == 0) return 0;
  int64_t want = ratio >= 1 ? m : llround(ratio * (double)m);
  /* selection sampling (Knuth's algorithm S): exactly `want` of the m candidates,
   * each subset equally likely, in one pass and no extra memory */
  data_rng r = {data_seed3(seed, 0x10cull, (uint64_t)m)};
  int64_t seen = 0, chosen = 0;
  for (int64_t i = 0; i < n && chosen < want; i++) {
    if (split[i] != KILN_SPLIT_TRAIN || !has_mask[i]) continue;
    if ((double)(m - seen) * rng_unit(&r) < (double)(want - chosen)) {
      keep[i] = true;
      chosen++;
    }
    seen++;
  }
  return chosen;
}
