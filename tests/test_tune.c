/* test_tune.c — the tuning table (codegen/tune.h): the file round trip; corrupt, truncated,
 * foreign and out-of-range files ignored with one warning (on the API and through
 * kiln_compile); entries that do not fit their convolution refused; forced blocks (including
 * channel, row and column tails) computing what the reference interpreter computes and
 * bitwise what the cost model's blocks compute; a tuned block deterministic across thread
 * counts; the recorded candidates.  (`kiln tune` itself: tests/tune_cli.cmake.) */
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "codegen/compile.h"
#include "codegen/tune.h"
#pragma GCC diagnostic ignored "-Wunused-function" /* one_node.h helpers this file does not use */
#include "one_node.h"

static bool has(const char *s, const char *sub) { return strstr(s, sub) != NULL; }

static void spit(const char *path, const char *text) {
  FILE *f = fopen(path, "wb");
  if (!f) return;
  fwrite(text, 1, strlen(text), f);
  fclose(f);
}

static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *p = calloc((size_t)(n > 0 ? n : 0) + 1, 1);
  if (fread(p, 1, (size_t)(n > 0 ? n : 0), f) != (size_t)n) p[0] = 0;
  fclose(f);
  return p;
}

static void rm_rf(const char *dir) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

#define BLK(a, b, c) ((kiln_tune_block){(a), (b), (c)})
static bool blk_eq(kiln_tune_block a, kiln_tune_block b) {
  return a.ocb == b.ocb && a.rb == b.rb && a.nv == b.nv;
}

static const char *CPU = "testcpu", *FEAT = "+avx2,+fma,-avx512f";

static void test_roundtrip(void) {
  char dir[] = "/tmp/kiln-test-tune-XXXXXX", path[512];
  CHECK(mkdtemp(dir) != NULL);
  kiln_tune_path(dir, "zn ver/3", FEAT, path, sizeof path);
  CHECK(has(path, "/tune-zn_ver_3-") && has(path, ".txt")); /* a safe file name */
  kiln_err e = {0};
  kiln_tune_table *t = kiln_tune_new();
  const char *k1 = "n1.c64.oc64.g1.i1:56:56.k1:3:3.s1:1:1.d1:1:1.pb0:1:1.pe0:1:1.o1:56:56.v8.w1";
  const char *k2 = "n1.c3.oc64.g1.i1:224:224.k1:7:7.s1:2:2.d1:1:1.pb0:3:3.pe0:3:3.o1:112:112";
  CHECK_OK(kiln_tune_set(t, k1, BLK(4, 1, 3), 1.5, 1.25, &e), &e);
  CHECK_OK(kiln_tune_set(t, k2, BLK(6, 2, 1), 2.0, 1.0, &e), &e);
  CHECK_OK(kiln_tune_set(t, "*", BLK(1, 1, 1), 0, 0, &e), &e); /* forced: never saved */
  CHECK_OK(kiln_tune_set(t, k1, BLK(5, 2, 1), 1.5, 1.2, &e), &e); /* replaces */
  CHECK(t->n_entries == 3);
  /* refused: bad keys and blocks out of range */
  CHECK(kiln_tune_set(t, "has space", BLK(1, 1, 1), 0, 0, &e) == KILN_ERR_INVALID);
  CHECK(kiln_tune_set(t, "", BLK(1, 1, 1), 0, 0, &e) == KILN_ERR_INVALID);
  CHECK(kiln_tune_set(t, "k", BLK(0, 1, 1), 0, 0, &e) == KILN_ERR_INVALID);
  CHECK(kiln_tune_set(t, "k", BLK(1, 1, 33), 0, 0, &e) == KILN_ERR_INVALID);
  CHECK(kiln_tune_set(t, "k", BLK(11, 3, 1), 0, 0, &e) == KILN_ERR_INVALID); /* 33 > 32 */
  CHECK_OK(kiln_tune_save(t, path, CPU, FEAT, &e), &e);
  kiln_tune_table *u = NULL;
  CHECK_OK(kiln_tune_load(path, CPU, FEAT, &u, &e), &e);
  CHECK(u && u->warning[0] == 0 && u->n_entries == 2);
  const kiln_tune_entry *a = u ? kiln_tune_find(u, k1) : NULL;
  const kiln_tune_entry *b = u ? kiln_tune_find(u, k2) : NULL;
  CHECK(a && blk_eq(a->blk, BLK(5, 2, 1)) && fabs(a->ms_model - 1.5) < 1e-4 &&
        fabs(a->ms_tuned - 1.2) < 1e-4);
  CHECK(b && blk_eq(b->blk, BLK(6, 2, 1)));
  CHECK(u && !kiln_tune_find(u, "*"));
  CHECK(u && kiln_tune_remove(u, k2) && !kiln_tune_remove(u, k2) && u->n_entries == 1);
  /* a missing file: an empty table, no warning */
  kiln_tune_table *m = NULL;
  char missing[600];
  snprintf(missing, sizeof missing, "%s/none.txt", dir);
  CHECK_OK(kiln_tune_load(missing, CPU, FEAT, &m, &e), &e);
  CHECK(m && m->n_entries == 0 && m->warning[0] == 0);
  /* no temporary file is left behind */
  char cmd[600];
  snprintf(cmd, sizeof cmd, "ls '%s' | grep -q tmp", dir);
  CHECK(system(cmd) != 0);
  kiln_tune_free(t);
  kiln_tune_free(u);
  kiln_tune_free(m);
  rm_rf(dir);
}

/* Each bad file loads as an empty table with one warning naming the file and why. */
static void test_bad_files(void) {
  char dir[] = "/tmp/kiln-test-tune-XXXXXX", path[512];
  CHECK(mkdtemp(dir) != NULL);
  snprintf(path, sizeof path, "%s/t.txt", dir);
  kiln_err e = {0};
  kiln_tune_table *t = kiln_tune_new();
  CHECK_OK(kiln_tune_set(t, "n1.c8.oc8", BLK(4, 1, 2), 1, 0.9, &e), &e);
  CHECK_OK(kiln_tune_set(t, "n1.c8.oc16", BLK(2, 2, 2), 1, 0.9, &e), &e);
  CHECK_OK(kiln_tune_save(t, path, CPU, FEAT, &e), &e);
  kiln_tune_free(t);
  char *good = slurp(path);
  CHECK(good && has(good, "end 2\n"));
  if (!good) return;
  size_t glen = strlen(good);
  char buf[4096];
  const char *hdr_end = strstr(good, "\n#"); /* after the three header lines */
  CHECK(hdr_end != NULL);
  struct {
    const char *what, *why;
    char text[2048];
  } cases[16];
  int n = 0;
#define CASE(w, y, ...)                                                                            \
  do {                                                                                             \
    cases[n].what = (w);                                                                           \
    cases[n].why = (y);                                                                            \
    snprintf(cases[n].text, sizeof cases[n].text, __VA_ARGS__);                                    \
    n++;                                                                                           \
  } while (0)
  CASE("empty", "not a kiln tuning table", "%s", "");
  CASE("garbage", "not a kiln tuning table", "%s", "\x7f" "ELF\x01\x02 binary junk\n");
  CASE("truncated mid-entry", "truncated", "%.*s", (int)(glen - 12), good);
  CASE("truncated before end", "truncated", "%.*s", (int)(strstr(good, "end 2") - good), good);
  CASE("count differs", "truncated", "%.*send 3\n", (int)(strstr(good, "end 2") - good), good);
  CASE("another cpu", "another CPU", "%s", "kiln-tune 1\ncpu othercpu\nfeatures 00\nend 0\n");
  CASE("other features", "other CPU features", "kiln-tune 1\ncpu %s\nfeatures 0123\nend 0\n", CPU);
  CASE("future version", "not a kiln tuning table", "kiln-tune 2%s", strchr(good, '\n'));
  CASE("after end", "after the end", "%sjunk\n", good);
  /* values out of range: the whole file is refused */
  CASE("zero channels", "out of range", "%.*s\nk1 0 1 1 1 1\nend 1\n",
       (int)(hdr_end - good), good);
  CASE("33 vectors", "out of range", "%.*s\nk1 1 1 33 1 1\nend 1\n", (int)(hdr_end - good), good);
  CASE("accumulators", "out of range", "%.*s\nk1 5 3 3 1 1\nend 1\n", (int)(hdr_end - good), good);
  CASE("negative", "out of range", "%.*s\nk1 -4 1 1 1 1\nend 1\n", (int)(hdr_end - good), good);
  CASE("not a number", "malformed", "%.*s\nk1 4 x 1 1 1\nend 1\n", (int)(hdr_end - good), good);
  CASE("bad key", "malformed key", "%.*s\nK/1 4 1 1 1 1\nend 1\n", (int)(hdr_end - good), good);
  CASE("nan time", "bad timing", "%.*s\nk1 4 1 1 nan 1\nend 1\n", (int)(hdr_end - good), good);
#undef CASE
  for (int i = 0; i < n; i++) {
    spit(path, cases[i].text);
    kiln_tune_table *u = NULL;
    CHECK_OK(kiln_tune_load(path, CPU, FEAT, &u, &e), &e);
    if (!u) continue;
    CHECK_MSG(u->n_entries == 0, "%s: %lld entries trusted", cases[i].what,
              (long long)u->n_entries);
    CHECK_MSG(has(u->warning, path) && has(u->warning, cases[i].why) &&
                  has(u->warning, "ignored"),
              "%s: warning '%s' lacks '%s'", cases[i].what, u->warning, cases[i].why);
    kiln_tune_free(u);
  }
  /* a directory where the file should be, and the same file read back intact */
  snprintf(buf, sizeof buf, "%s/d.txt", dir);
  mkdir(buf, 0755);
  kiln_tune_table *u = NULL;
  CHECK_OK(kiln_tune_load(buf, CPU, FEAT, &u, &e), &e);
  CHECK(u && u->n_entries == 0 && has(u->warning, "ignored"));
  kiln_tune_free(u);
  spit(path, good);
  CHECK_OK(kiln_tune_load(path, CPU, FEAT, &u, &e), &e);
  CHECK(u && u->n_entries == 2 && !u->warning[0]);
  kiln_tune_free(u);
  free(good);
  rm_rf(dir);
}

/* ---- convolutions ---- */

static uint64_t rng_ = 0x9e3779b97f4a7c15ull;
static kiln_tensor *rnd(int rank, const int64_t *d) {
  kiln_tensor *t = tn_new(KILN_F32, rank, d);
  for (int64_t i = 0; i < t->numel; i++) {
    rng_ = rng_ * 6364136223846793005ull + 1442695040888963407ull;
    ((float *)t->data)[i] = (float)((int64_t)((rng_ >> 33) % 4001) - 2000) / 1000.0f;
  }
  return t;
}
#define NARGS(...) ((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)))
#define T(...) rnd(NARGS(__VA_ARGS__), DIMS(__VA_ARGS__))

typedef struct ccase {
  const char *what;
  kiln_op op;
  kiln_tensor *in[3]; /* X, W, bias (NULL: none) */
  uint32_t const_mask;
  const int64_t *strides, *pads, *dil; /* 2 or 4 values each, NULL: default */
  int64_t group;
} ccase;

static kiln_graph *build(const ccase *c, kiln_tensor **feed, int *n_feed) {
  one_node t;
  int n_in = c->in[2] ? 3 : 2;
  on_begin(&t, c->op, 13, c->in, n_in, c->const_mask, 1);
  if (c->strides) ir_set_attr_ints(t.g, t.node, "strides", c->strides, 2, &t.e);
  if (c->pads) ir_set_attr_ints(t.g, t.node, "pads", c->pads, 4, &t.e);
  if (c->dil) ir_set_attr_ints(t.g, t.node, "dilations", c->dil, 2, &t.e);
  if (c->group > 1) ir_set_attr_int(t.g, t.node, "group", c->group, &t.e);
  if (!t.e.code) ir_infer(t.g, NULL, &t.e);
  if (t.e.code) {
    fprintf(stderr, "%s: %s\n", c->what, t.e.msg);
    abort();
  }
  *n_feed = 0;
  for (int i = 0; i < n_in; i++)
    if (t.in[i]) feed[(*n_feed)++] = t.in[i];
  return t.g;
}

/* Compiles and runs the case with `table` (NULL: none at all) at `threads`. */
static kiln_tensor *run_jit(const ccase *c, kiln_tune_table *table, int threads) {
  kiln_tensor *feed[3], *out[1] = {0};
  int nf;
  kiln_graph *g = build(c, feed, &nf);
  kiln_err e = {0};
  kiln_program *p = NULL;
  kiln_compile_opts o = {.threads = threads, .cache_dir = "", .tune = table, .no_tune = !table};
  CHECK_OK(kiln_compile(g, &o, &p, &e), &e);
  if (p) CHECK_OK(kiln_program_run(p, feed, out, false, &e), &e);
  kiln_program_free(p);
  return out[0];
}

static kiln_tensor *run_ref(const ccase *c) {
  kiln_tensor *feed[3], *out[1] = {0};
  int nf;
  kiln_graph *g = build(c, feed, &nf);
  kiln_err e = {0};
  kiln_ref_ctx ctx = {.g = g};
  CHECK_OK(kiln_ref_run(g, &ctx, feed, out, &e), &e);
  ir_graph_free(g);
  return out[0];
}

static bool same_bits(const kiln_tensor *a, const kiln_tensor *b) {
  return a && b && kiln_tensor_nbytes(a) == kiln_tensor_nbytes(b) &&
         !memcmp(a->data, b->data, kiln_tensor_nbytes(a));
}

/* The tolerance test_jit_nn uses for every compiled kernel against the reference. */
static bool close_to_ref(const kiln_tensor *got, const kiln_tensor *ref, const char *what) {
  if (!got || !ref || got->numel != ref->numel) return false;
  for (int64_t i = 0; i < ref->numel; i++) {
    double a = ((float *)got->data)[i], b = ((float *)ref->data)[i];
    if (!(fabs(a - b) <= 1e-5 + 1e-4 * fabs(b))) {
      fprintf(stderr, "%s: element %lld: jit %.9g, ref %.9g\n", what, (long long)i, a, b);
      return false;
    }
  }
  return true;
}

/* Every block in `blocks` forced on the case ("*"): those that fit are taken (the others
 * leave the model's), and all compute the reference's result, bitwise the model's. */
static void check_forced(const ccase *c) {
  kiln_tensor *ref = run_ref(c);
  kiln_tune_table *rec = kiln_tune_new();
  rec->record = true;
  kiln_tensor *model = run_jit(c, rec, 1);
  CHECK_MSG(rec->n_recs >= 1, "%s: no convolution recorded", c->what);
  CHECK_MSG(close_to_ref(model, ref, c->what), "%s: the model's block", c->what);
  static const kiln_tune_block blocks[] = {{1, 1, 1}, {3, 2, 1}, {2, 1, 2}, {5, 1, 2}, {4, 3, 1},
                                           {1, 3, 3}, {7, 1, 1}, {2, 2, 3}, {1, 4, 2}, {13, 1, 1}};
  int taken = 0;
  for (size_t b = 0; b < sizeof blocks / sizeof blocks[0] && rec->n_recs; b++) {
    kiln_err e = {0};
    kiln_tune_table *t = kiln_tune_new();
    t->record = true;
    CHECK_OK(kiln_tune_set(t, "*", blocks[b], 0, 0, &e), &e);
    kiln_tensor *got = run_jit(c, t, 1);
    bool any = false;
    for (int64_t r = 0; r < t->n_recs; r++) {
      const kiln_tune_record *tr = &t->recs[r];
      CHECK_MSG(blk_eq(tr->used, blocks[b]) || blk_eq(tr->used, tr->model),
                "%s: block %dx%dx%d neither taken nor refused", c->what, blocks[b].ocb,
                blocks[b].rb, blocks[b].nv);
      any |= blk_eq(tr->used, blocks[b]) && !blk_eq(tr->model, blocks[b]);
    }
    taken += any;
    CHECK_MSG(t->warning[0] == 0, "%s: a forced '*' block warned: %s", c->what, t->warning);
    CHECK_MSG(close_to_ref(got, ref, c->what), "%s: block %dx%dx%d vs the reference", c->what,
              blocks[b].ocb, blocks[b].rb, blocks[b].nv);
    CHECK_MSG(same_bits(got, model), "%s: block %dx%dx%d is not bitwise the model's", c->what,
              blocks[b].ocb, blocks[b].rb, blocks[b].nv);
    kiln_tensor_free(got);
    kiln_tune_free(t);
  }
  CHECK_MSG(taken >= 3, "%s: only %d forced blocks were taken", c->what, taken);
  /* the recorded candidates: the model's block first, all distinct and different */
  for (int64_t r = 0; r < rec->n_recs; r++) {
    const kiln_tune_record *tr = &rec->recs[r];
    CHECK(tr->n_cands >= 2 && blk_eq(tr->cands[0], tr->model) && blk_eq(tr->used, tr->model));
    for (int i = 0; i < tr->n_cands; i++)
      for (int j = 0; j < i; j++) CHECK(!blk_eq(tr->cands[i], tr->cands[j]));
    CHECK(tr->macs > 0 && tr->shape[0] && tr->count >= 1 && tr->node == 0);
  }
  kiln_tensor_free(ref);
  kiln_tensor_free(model);
  kiln_tune_free(rec);
  for (int i = 0; i < 3; i++) kiln_tensor_free(c->in[i]);
}

static void test_forced_blocks(void) {
  /* channel tail (13), row tail (9 rows), column tail (21: 2 vectors + 5 lanes on AVX2) */
  check_forced(&(ccase){"3x3 tails", KILN_OP_Conv, {T(1, 5, 9, 21), T(13, 5, 3, 3), T(13)}, 6,
                        .pads = IV(1, 1, 1, 1)});
  check_forced(&(ccase){"stride 2 asym pads batch 2", KILN_OP_Conv,
                        {T(2, 3, 10, 19), T(7, 3, 3, 3)}, 2, .strides = IV(2, 2),
                        .pads = IV(0, 1, 2, 1)});
  check_forced(&(ccase){"groups", KILN_OP_Conv, {T(1, 6, 7, 17), T(10, 3, 3, 3), T(10)}, 6,
                        .pads = IV(1, 1, 1, 1), .group = 2});
  check_forced(&(ccase){"dilation", KILN_OP_Conv, {T(1, 2, 12, 26), T(9, 2, 3, 3)}, 2,
                        .dil = IV(2, 3), .pads = IV(2, 1, 1, 2)});
  /* fed (unpacked) weights, 1x1: one flattened row (grouped: a single group's go to the GEMM
   * path, gemm_gen.h) */
  check_forced(&(ccase){"1x1 fed weights", KILN_OP_Conv, {T(1, 8, 6, 20), T(26, 4, 1, 1)}, 0,
                        .group = 2});
  /* ConvTranspose stride 2: phases with an output placement */
  check_forced(&(ccase){"convtranspose stride 2", KILN_OP_ConvTranspose,
                        {T(1, 4, 5, 13), T(4, 6, 3, 3), T(6)}, 6, .strides = IV(2, 2),
                        .pads = IV(1, 1, 1, 1)});
}

/* A table entry `bad` for recorded convolution r that does not fit it: refused with a warning,
 * the model's block compiled instead (bitwise `model`).  run(table, arg) compiles and runs
 * the convolution at one thread. */
typedef kiln_tensor *(*run_with_table)(kiln_tune_table *t, void *arg);
static void check_refused(const kiln_tune_record *r, kiln_tune_block bad,
                          const kiln_tensor *model, run_with_table run, void *arg) {
  kiln_err e = {0};
  kiln_tune_table *u = kiln_tune_new();
  u->record = true;
  CHECK_OK(kiln_tune_set(u, r->key, bad, 1, 0.5, &e), &e);
  kiln_tensor *got = run(u, arg);
  CHECK(u->n_recs == 1 && blk_eq(u->recs[0].used, r->model));
  CHECK_MSG(has(u->warning, "does not fit"), "block %dx%dx%d: warning '%s'", bad.ocb, bad.rb,
            bad.nv, u->warning);
  CHECK(same_bits(got, model));
  kiln_tensor_free(got);
  kiln_tune_free(u);
}

static kiln_tensor *run_case(kiln_tune_table *t, void *arg) { return run_jit(arg, t, 1); }

/* A tuned entry for the convolution's own key: taken, deterministic across thread counts,
 * bitwise the model's; an entry that does not fit: refused with a warning. */
static void test_tuned_entry(void) {
  ccase c = {"tuned", KILN_OP_Conv, {T(1, 6, 11, 37), T(14, 6, 3, 3), T(14)}, 6,
             .pads = IV(1, 1, 1, 1)};
  kiln_tune_table *rec = kiln_tune_new();
  rec->record = true;
  kiln_tensor *model = run_jit(&c, rec, 1);
  CHECK(rec->n_recs == 1);
  if (rec->n_recs != 1) return;
  const kiln_tune_record *r = &rec->recs[0];
  kiln_tune_block pick = blk_eq(r->model, BLK(3, 2, 1)) ? BLK(2, 1, 3) : BLK(3, 2, 1);
  kiln_err e = {0};
  kiln_tune_table *t = kiln_tune_new();
  t->record = true;
  CHECK_OK(kiln_tune_set(t, r->key, pick, 1, 0.5, &e), &e);
  kiln_tensor *t1 = run_jit(&c, t, 1), *t3 = run_jit(&c, t, 3), *t2 = run_jit(&c, t, 2);
  CHECK(t->n_recs == 1 && blk_eq(t->recs[0].used, pick) && !t->warning[0]);
  CHECK(same_bits(t1, t3) && same_bits(t1, t2) && same_bits(t1, model));
  /* does not fit: more channels than the convolution has, more accumulators (30) than any
   * target's registers allow, more vectors than a row has */
  kiln_tune_block bad[] = {BLK(15, 1, 1), BLK(10, 3, 1), BLK(2, 1, 8)};
  for (int i = 0; i < 3; i++) check_refused(r, bad[i], model, run_case, &c);
  kiln_tensor_free(t1);
  kiln_tensor_free(t2);
  kiln_tensor_free(t3);
  kiln_tensor_free(model);
  kiln_tune_free(t);
  kiln_tune_free(rec);
  for (int i = 0; i < 3; i++) kiln_tensor_free(c.in[i]);
}

/* The blocked convolution's register block (family "blocked": ocb = output channel vectors,
 * rb = 1, nv = pixels) is tuned through the same table: recorded under its own key, every
 * block that fits it computes bitwise the model's result, one that does not is refused. */
static kiln_tensor *run_blocked(kiln_tensor *const *in, kiln_tune_table *table, int threads,
                                bool ref) {
  one_node t;
  on_begin(&t, KILN_OP_BlockedConv, 13, (kiln_tensor **)in, 3, 6, 1);
  ir_set_attr_int(t.g, t.node, "block", 8, &t.e);
  ir_set_attr_ints(t.g, t.node, "pads", IV(1, 0, 1, 2), 4, &t.e);
  ir_set_attr_ints(t.g, t.node, "strides", IV(1, 2), 2, &t.e);
  ir_set_attr_str(t.g, t.node, "activation", "relu", &t.e);
  if (!t.e.code) ir_infer(t.g, NULL, &t.e);
  CHECK_OK(t.e.code, &t.e);
  kiln_tensor *out[1] = {0};
  kiln_err e = {0};
  if (ref) {
    kiln_ref_ctx ctx = {.g = t.g};
    CHECK_OK(kiln_ref_run(t.g, &ctx, (kiln_tensor *const[]){in[0]}, out, &e), &e);
    ir_graph_free(t.g);
    return out[0];
  }
  kiln_program *p = NULL;
  kiln_compile_opts o = {.threads = threads, .cache_dir = "", .tune = table, .no_tune = !table};
  CHECK_OK(kiln_compile(t.g, &o, &p, &e), &e);
  if (p) CHECK_OK(kiln_program_run(p, (kiln_tensor *const[]){in[0]}, out, false, &e), &e);
  kiln_program_free(p);
  return out[0];
}

static kiln_tensor *run_blocked_case(kiln_tune_table *t, void *arg) {
  return run_blocked(arg, t, 1, false);
}

static void test_blocked_conv(void) {
  /* 8 input and 2 output channel blocks of 8, 9x29 -> 9x14 (pads 1,0 / 1,2, stride 1x2) */
  kiln_tensor *in[3] = {T(1, 8, 9, 29, 8), T(2, 8, 3, 3, 8, 8), T(16)};
  kiln_tensor *ref = run_blocked(in, NULL, 1, true);
  kiln_tune_table *rec = kiln_tune_new();
  rec->record = true;
  kiln_tensor *model = run_blocked(in, rec, 1, false);
  CHECK(rec->n_recs == 1 && close_to_ref(model, ref, "blocked conv"));
  if (rec->n_recs != 1) return;
  const kiln_tune_record *r = &rec->recs[0];
  CHECK_MSG(!strncmp(r->key, "blocked:", 8) && has(r->shape, "blocked"), "%s / %s", r->key,
            r->shape);
  CHECK(r->model.rb == 1 && r->n_cands >= 2 && blk_eq(r->cands[0], r->model));
  kiln_tune_block picks[] = {BLK(1, 1, 1), BLK(1, 1, 9), BLK(2, 1, 3), BLK(2, 2, 2),
                             BLK(1, 3, 3), BLK(1, 4, 2), BLK(1, 1, 14)};
  int taken = 0;
  for (size_t i = 0; i < sizeof picks / sizeof picks[0]; i++) {
    kiln_err e = {0};
    kiln_tune_table *t = kiln_tune_new();
    t->record = true;
    CHECK_OK(kiln_tune_set(t, r->key, picks[i], 1, 0.5, &e), &e);
    kiln_tensor *t1 = run_blocked(in, t, 1, false), *t3 = run_blocked(in, t, 3, false);
    bool fits = picks[i].rb * picks[i].nv * picks[i].ocb + picks[i].ocb + 3 <= 16; /* AVX2 */
    if (t->n_recs == 1 && blk_eq(t->recs[0].used, picks[i])) taken++;
    else CHECK_MSG(!fits || has(t->warning, "does not fit"), "block %zu: %s", i, t->warning);
    CHECK_MSG(same_bits(t1, model) && same_bits(t3, model), "block %zu not bitwise the model's",
              i);
    kiln_tensor_free(t1);
    kiln_tensor_free(t3);
    kiln_tune_free(t);
  }
  CHECK_MSG(taken >= 3, "only %d tuned blocks taken", taken);
  /* 3 output channel vectors do not divide 2 blocks; 5 rows are more than the kernel takes;
   * 2 x 14 accumulators and 2 weight vectors are more than any target's registers */
  kiln_tune_block bad[] = {BLK(3, 1, 2), BLK(1, 5, 2), BLK(2, 1, 14)};
  for (int i = 0; i < 3; i++) check_refused(r, bad[i], model, run_blocked_case, in);
  kiln_tensor_free(ref);
  kiln_tensor_free(model);
  kiln_tune_free(rec);
  for (int i = 0; i < 3; i++) kiln_tensor_free(in[i]);
}

/* kiln_compile finds the table in the cache directory: used when valid; ignored with one
 * warning (among the JIT's) when corrupt; not read with no_tune or KILN_TUNE=0. */
static void test_compile_loads(void) {
  char dir[] = "/tmp/kiln-test-tune-XXXXXX", path[512];
  CHECK(mkdtemp(dir) != NULL);
  ccase c = {"load", KILN_OP_Conv, {T(1, 4, 8, 19), T(9, 4, 3, 3)}, 2, .pads = IV(1, 1, 1, 1)};
  kiln_tensor *feed[3];
  int nf;
  kiln_err e = {0};
  kiln_tune_table *rec = kiln_tune_new();
  rec->record = true;
  kiln_program *p = NULL;
  kiln_compile_opts o = {.threads = 1, .cache_dir = dir, .tune = rec};
  CHECK_OK(kiln_compile(build(&c, feed, &nf), &o, &p, &e), &e);
  if (!p || rec->n_recs != 1) return;
  const char *cpu = kiln_jit_cpu(p->jit), *feat = kiln_jit_features(p->jit);
  kiln_tune_path(dir, cpu, feat, path, sizeof path);
  kiln_tune_block pick = blk_eq(rec->recs[0].model, BLK(1, 1, 1)) ? BLK(2, 1, 1) : BLK(1, 1, 1);
  kiln_tune_table *t = kiln_tune_new();
  CHECK_OK(kiln_tune_set(t, rec->recs[0].key, pick, 1, 0.5, &e), &e);
  CHECK_OK(kiln_tune_save(t, path, cpu, feat, &e), &e);
  kiln_program_free(p);
  /* compiles that load the table: the block applies (its kernel differs from the model's, so
   * the JIT compiles one more kernel than a compile that ignores the table) */
  int compiled[4] = {0};
  const char *warn[4] = {0};
  char warnbuf[4][KILN_ERR_MSG];
  for (int k = 0; k < 4; k++) {
    if (k == 2) setenv("KILN_TUNE", "0", 1);
    if (k == 3) {
      unsetenv("KILN_TUNE");
      spit(path, "kiln-tune 1\ncpu x\n"); /* corrupt */
    }
    kiln_compile_opts lo = {.threads = 1, .cache_dir = dir, .no_tune = k == 1};
    p = NULL;
    CHECK_OK(kiln_compile(build(&c, feed, &nf), &lo, &p, &e), &e);
    if (!p) continue;
    const kiln_jit_stats *st = kiln_program_jit_stats(p);
    compiled[k] = st->kernels_compiled;
    warnbuf[k][0] = 0;
    for (int w = 0; w < st->n_warnings; w++)
      if (has(st->warnings[w], "tuning table"))
        snprintf(warnbuf[k], KILN_ERR_MSG, "%s", st->warnings[w]);
    warn[k] = warnbuf[k];
    kiln_tensor *out[1] = {0};
    CHECK_OK(kiln_program_run(p, feed, out, false, &e), &e);
    kiln_tensor_free(out[0]);
    kiln_program_free(p);
  }
  /* the first compile (tuned) builds the tuned kernel; the untuned ones find the model's in the
   * cache the recording compile filled */
  CHECK_MSG(compiled[0] >= 1 && compiled[1] == 0 && compiled[2] == 0 && compiled[3] == 0,
            "kernels compiled: tuned %d, no_tune %d, KILN_TUNE=0 %d, corrupt %d", compiled[0],
            compiled[1], compiled[2], compiled[3]);
  CHECK(warn[0] && !warn[0][0] && warn[1] && !warn[1][0] && warn[2] && !warn[2][0]);
  CHECK_MSG(warn[3] && has(warn[3], path) && has(warn[3], "ignored"), "corrupt: '%s'",
            warn[3] ? warn[3] : "");
  kiln_tune_free(t);
  kiln_tune_free(rec);
  for (int i = 0; i < 3; i++) kiln_tensor_free(c.in[i]);
  rm_rf(dir);
}

int main(void) {
  RUN(test_roundtrip);
  RUN(test_bad_files);
  RUN(test_forced_blocks);
  RUN(test_tuned_entry);
  RUN(test_blocked_conv);
  RUN(test_compile_loads);
  TEST_MAIN_END();
}
