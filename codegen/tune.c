/* tune.c — the tuning table (see tune.h): entries, the per-CPU text file (read tolerantly,
 * written atomically), the convolution key, candidate blocks, and the generator's hook. */
#include "codegen/tune.h"

#include <errno.h>
#include <llvm-c/blake3.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TUNE_MAGIC "kiln-tune 1"
#define TUNE_MAX_FILE ((size_t)8 << 20)
#define TUNE_MAX_REGS 32 /* the most vector registers of any target (AVX-512) */

/* ---- the table ---- */

kiln_tune_table *kiln_tune_new(void) { return kiln_calloc(1, sizeof(kiln_tune_table)); }

void kiln_tune_free(kiln_tune_table *t) {
  if (!t) return;
  kiln_free(t->entries);
  kiln_free(t->recs);
  kiln_free(t->marks);
  kiln_free(t);
}

static int64_t find_index(const kiln_tune_table *t, const char *key) {
  for (int64_t i = 0; i < t->n_entries; i++)
    if (!strcmp(t->entries[i].key, key)) return i;
  return -1;
}

const kiln_tune_entry *kiln_tune_find(const kiln_tune_table *t, const char *key) {
  int64_t i = find_index(t, key);
  return i < 0 ? NULL : &t->entries[i];
}

static bool key_ok(const char *key) {
  size_t n = strlen(key);
  if (n == 0 || n >= KILN_TUNE_KEY_MAX) return false;
  if (!strcmp(key, "*")) return true;
  for (size_t i = 0; i < n; i++) {
    char c = key[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == ':' ||
          c == '-' || c == '_'))
      return false;
  }
  return true;
}

bool kiln_tune_block_sane(kiln_tune_block b) {
  return b.ocb >= 1 && b.ocb <= KILN_TUNE_MAX_OCB && b.rb >= 1 && b.rb <= KILN_TUNE_MAX_RB &&
         b.nv >= 1 && b.nv <= KILN_TUNE_MAX_NV && b.ocb * b.rb * b.nv <= TUNE_MAX_REGS;
}

kiln_code kiln_tune_set(kiln_tune_table *t, const char *key, kiln_tune_block b, double ms_model,
                        double ms_tuned, kiln_err *e) {
  if (!key_ok(key)) return kiln_errf(e, KILN_ERR_INVALID, "tuning table: bad key '%s'", key);
  if (!kiln_tune_block_sane(b))
    return kiln_errf(e, KILN_ERR_INVALID, "tuning table: block %dx%dx%d out of range", b.ocb,
                     b.rb, b.nv);
  int64_t i = find_index(t, key);
  if (i < 0) {
    if (t->n_entries >= KILN_TUNE_MAX_ENTRIES)
      return kiln_errf(e, KILN_ERR_LIMIT, "tuning table: more than %d entries",
                       KILN_TUNE_MAX_ENTRIES);
    KILN_TRY(kiln_grow((void **)&t->entries, &t->cap_entries, t->n_entries + 1,
                       sizeof *t->entries, e));
    i = t->n_entries++;
    memset(&t->entries[i], 0, sizeof t->entries[i]);
    snprintf(t->entries[i].key, sizeof t->entries[i].key, "%s", key);
  }
  t->entries[i].blk = b;
  t->entries[i].ms_model = isfinite(ms_model) && ms_model > 0 ? ms_model : 0;
  t->entries[i].ms_tuned = isfinite(ms_tuned) && ms_tuned > 0 ? ms_tuned : 0;
  return KILN_OK;
}

bool kiln_tune_remove(kiln_tune_table *t, const char *key) {
  int64_t i = find_index(t, key);
  if (i < 0) return false;
  memmove(&t->entries[i], &t->entries[i + 1], sizeof *t->entries * (size_t)(t->n_entries - i - 1));
  t->n_entries--;
  return true;
}

/* ---- the file ---- */

/* BLAKE3-128 of the feature string in hex (as the kernel cache validates its entries). */
static void features_hash(const char *features, char hex[33]) {
  uint8_t h[16];
  llvm_blake3_hasher b;
  llvm_blake3_hasher_init(&b);
  llvm_blake3_hasher_update(&b, features ? features : "", features ? strlen(features) : 0);
  llvm_blake3_hasher_finalize(&b, h, sizeof h);
  for (int i = 0; i < 16; i++) snprintf(hex + 2 * i, 3, "%02x", h[i]);
}

void kiln_tune_path(const char *dir, const char *cpu, const char *features, char *out, size_t n) {
  char name[64], hex[33];
  size_t k = 0;
  for (const char *c = cpu ? cpu : ""; *c && k + 1 < sizeof name; c++)
    name[k++] = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
                        *c == '-' || *c == '_'
                    ? *c
                    : '_';
  name[k] = 0;
  features_hash(features, hex);
  snprintf(out, n, "%s/tune-%s-%.16s.txt", dir ? dir : ".", k ? name : "cpu", hex);
}

/* Reads a whole small file: 0 ok, ENOENT missing, EFBIG too large, else errno. */
static int read_file(const char *path, char **buf, size_t *len) {
  *buf = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) return errno ? errno : EIO;
  struct stat st;
  int rc = 0;
  if (fstat(fileno(f), &st) || !S_ISREG(st.st_mode)) rc = EIO;
  else if ((size_t)st.st_size > TUNE_MAX_FILE) rc = EFBIG;
  if (!rc && !(*buf = kiln_malloc((size_t)st.st_size + 1))) rc = ENOMEM;
  if (!rc) {
    *len = fread(*buf, 1, (size_t)st.st_size, f);
    (*buf)[*len] = 0;
    if (*len != (size_t)st.st_size) rc = EIO;
  }
  fclose(f);
  if (rc) {
    kiln_free(*buf);
    *buf = NULL;
  }
  return rc;
}

/* Next line of buf (NUL-terminated in place); NULL at the end.  *cut: the last line had no
 * newline (a truncated file). */
static char *next_line(char **cur, char *end, bool *cut) {
  if (*cur >= end) return NULL;
  char *s = *cur, *nl = memchr(s, '\n', (size_t)(end - s));
  if (nl) {
    *nl = 0;
    *cur = nl + 1;
  } else {
    *cut = true;
    *cur = end;
  }
  return s;
}

/* Parses the file's text into t; returns why it is unusable, or NULL.  Any problem rejects the
 * whole file: a half-trusted table is worse than the cost model. */
static const char *parse(kiln_tune_table *t, char *text, size_t len, const char *cpu,
                         const char *features, kiln_err *e) {
  if (memchr(text, 0, len)) return "not a text file";
  char *cur = text, *end = text + len, *line, hex[33], word[KILN_TUNE_KEY_MAX + 1];
  bool cut = false;
  features_hash(features, hex);
  line = next_line(&cur, end, &cut);
  if (!line || strcmp(line, TUNE_MAGIC)) return "not a kiln tuning table of this version";
  line = next_line(&cur, end, &cut);
  if (!line || strncmp(line, "cpu ", 4)) return "no cpu line";
  if (strcmp(line + 4, cpu ? cpu : "")) return "tuned on another CPU";
  line = next_line(&cur, end, &cut);
  if (!line || strncmp(line, "features ", 9)) return "no features line";
  if (strcmp(line + 9, hex)) return "tuned for other CPU features";
  bool ended = false;
  while ((line = next_line(&cur, end, &cut))) {
    if (cut) return "truncated";
    if (ended) {
      if (line[strspn(line, " \t\r")]) return "text after the end line";
      continue;
    }
    if (!line[0] || line[0] == '#') continue;
    long long count;
    char extra;
    if (sscanf(line, "end %lld %c", &count, &extra) == 1) {
      if (count != t->n_entries) return "truncated (entry count differs)";
      ended = true;
      continue;
    }
    kiln_tune_block b;
    double ms_model, ms_tuned;
    int used = 0;
    if (strlen(line) > KILN_TUNE_KEY_MAX + 128 ||
        sscanf(line, "%383s %d %d %d %lf %lf %n", word, &b.ocb, &b.rb, &b.nv, &ms_model,
               &ms_tuned, &used) != 6 ||
        line[used])
      return "malformed line";
    if (!key_ok(word) || !strcmp(word, "*")) return "malformed key";
    if (!kiln_tune_block_sane(b)) return "block out of range";
    if (!isfinite(ms_model) || !isfinite(ms_tuned) || ms_model < 0 || ms_tuned < 0)
      return "bad timing";
    if (kiln_tune_set(t, word, b, ms_model, ms_tuned, e)) {
      if (e->code == KILN_ERR_NOMEM) return NULL; /* the caller reports it */
      return "too many entries";
    }
  }
  return ended ? NULL : "truncated (no end line)";
}

kiln_code kiln_tune_load(const char *path, const char *cpu, const char *features,
                         kiln_tune_table **out, kiln_err *e) {
  kiln_tune_table *t = kiln_tune_new();
  *out = NULL;
  if (!t) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory (tuning table)");
  char *text = NULL;
  size_t len = 0;
  int err = read_file(path, &text, &len);
  const char *why = NULL;
  char buf[64];
  if (err == ENOMEM) {
    kiln_tune_free(t);
    return kiln_errf(e, KILN_ERR_NOMEM, "out of memory (tuning table)");
  } else if (err == EFBIG) {
    why = "larger than 8 MiB";
  } else if (err && err != ENOENT) {
    snprintf(buf, sizeof buf, "%s", strerror(err));
    why = buf;
  } else if (!err) {
    kiln_err pe = {0};
    why = parse(t, text, len, cpu, features, &pe);
    kiln_free(text);
    if (pe.code == KILN_ERR_NOMEM) {
      kiln_tune_free(t);
      return kiln_errf(e, KILN_ERR_NOMEM, "out of memory (tuning table)");
    }
  }
  if (why) {
    t->n_entries = 0;
    snprintf(t->warning, sizeof t->warning,
             "tuning table %s is ignored (%s); using the cost model's blocks", path, why);
  }
  *out = t;
  return KILN_OK;
}

kiln_code kiln_tune_save(const kiln_tune_table *t, const char *path, const char *cpu,
                         const char *features, kiln_err *e) {
  char tmp[4200], hex[33];
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
  features_hash(features, hex);
  FILE *f = fopen(tmp, "w");
  if (!f)
    return kiln_errf(e, KILN_ERR_IO, "cannot write tuning table %s: %s", tmp, strerror(errno));
  fprintf(f, "%s\ncpu %s\nfeatures %s\n", TUNE_MAGIC, cpu ? cpu : "", hex);
  fprintf(f, "# convolution key, block (output channels, rows, vectors), "
             "ms with the cost model's block, ms with this one\n");
  int64_t n = 0;
  for (int64_t i = 0; i < t->n_entries; i++) {
    const kiln_tune_entry *en = &t->entries[i];
    if (!strcmp(en->key, "*")) continue;
    fprintf(f, "%s %d %d %d %.4f %.4f\n", en->key, en->blk.ocb, en->blk.rb, en->blk.nv,
            en->ms_model, en->ms_tuned);
    n++;
  }
  fprintf(f, "end %lld\n", (long long)n);
  bool ok = !ferror(f) && fflush(f) == 0 && fsync(fileno(f)) == 0;
  ok = fclose(f) == 0 && ok;
  if (!ok || rename(tmp, path)) {
    int err = errno;
    unlink(tmp);
    return kiln_errf(e, KILN_ERR_IO, "cannot write tuning table %s: %s", path, strerror(err));
  }
  return KILN_OK;
}

/* ---- the generator's side ---- */

void cg_tune_conv_key(const cg_conv_geom *g, int V, bool packed, const char *family, char *out,
                      size_t n) {
  const int64_t *dims[7] = {g->in, g->k, g->stride, g->dil, g->pad_b, g->pad_e, g->out};
  const char *tag[7] = {"i", "k", "s", "d", "pb", "pe", "o"};
  size_t k = 0;
#define PUT(...)                                                                                   \
  do {                                                                                             \
    int w_ = snprintf(out + k, k < n ? n - k : 0, __VA_ARGS__);                                    \
    if (w_ > 0) k += (size_t)w_;                                                                   \
  } while (0)
  if (family) PUT("%s:", family);
  PUT("n%lld.c%lld.oc%lld.g%lld", (long long)g->N, (long long)g->C, (long long)g->OC,
      (long long)g->groups);
  for (int a = 0; a < 7; a++)
    PUT(".%s%lld:%lld:%lld", tag[a], (long long)dims[a][0], (long long)dims[a][1],
        (long long)dims[a][2]);
  PUT(".t");
  for (int d = 0; d < 3; d++)
    PUT("%s%d-%lld", d ? ":" : "", (int)g->xform[d],
        (long long)(g->xform[d] == CG_IN_PLAIN ? 1 : g->xfactor[d]));
  /* placement, without the offset: the phases of an upsampling convolution differ only there
   * and run alike */
  if (g->ostride[0] || g->ostride[1] || g->ostride[2]) {
    for (int d = 0; d < 3; d++)
      PUT("%s%lld-%lld", d ? ":" : ".y", (long long)g->ostride[d], (long long)g->ydims[d]);
  }
  if (g->wph > 1) /* column phases: their tap ranges */
    for (int64_t ph = 0; ph < g->wph && ph < CG_MAX_WPH; ph++)
      PUT("%s%lld-%lld", ph ? ":" : ".cp", (long long)g->wph_lo[ph], (long long)g->wph_hi[ph]);
  PUT(".v%d.w%d", V, packed ? 1 : 0);
#undef PUT
  if (n && k >= n) out[0] = 0; /* a truncated key could name another convolution */
}

static int64_t limit_ocb(const cg_tune_query *q) {
  if (q->lim_ocb > 0) return q->lim_ocb < KILN_TUNE_MAX_OCB ? q->lim_ocb : KILN_TUNE_MAX_OCB;
  int64_t ocg = q->geom->groups > 0 ? q->geom->OC / q->geom->groups : 1;
  return ocg < 1 ? 1 : ocg < KILN_TUNE_MAX_OCB ? ocg : KILN_TUNE_MAX_OCB;
}
static int64_t limit_rb(const cg_tune_query *q) {
  if (q->lim_rb > 0) return q->lim_rb < KILN_TUNE_MAX_RB ? q->lim_rb : KILN_TUNE_MAX_RB;
  int64_t oh = q->geom->out[1];
  return oh < 1 ? 1 : oh < KILN_TUNE_MAX_RB ? oh : KILN_TUNE_MAX_RB;
}
static int64_t limit_nv(const cg_tune_query *q) {
  if (q->lim_nv > 0) return q->lim_nv < KILN_TUNE_MAX_NV ? q->lim_nv : KILN_TUNE_MAX_NV;
  int64_t nvec = (q->geom->out[2] + q->V - 1) / q->V;
  return nvec < 1 ? 1 : nvec < KILN_TUNE_MAX_NV ? nvec : KILN_TUNE_MAX_NV;
}

bool cg_tune_block_ok(const cg_tune_query *q, kiln_tune_block b) {
  return kiln_tune_block_sane(b) && b.ocb <= limit_ocb(q) && b.rb <= limit_rb(q) &&
         b.nv <= limit_nv(q) && b.ocb * b.rb * b.nv <= q->max_acc &&
         (!q->fits || q->fits(q->plan, b));
}

typedef struct ranked {
  kiln_tune_block b;
  double cost;
} ranked;

static int cmp_ranked(const void *a, const void *b) {
  const ranked *x = a, *y = b;
  if (x->cost != y->cost) return x->cost < y->cost ? -1 : 1;
  /* ties: more accumulators first, as the model breaks them */
  int ax = x->b.ocb * x->b.rb * x->b.nv, ay = y->b.ocb * y->b.rb * y->b.nv;
  return ax != ay ? ay - ax : x->b.ocb != y->b.ocb ? y->b.ocb - x->b.ocb : y->b.rb - x->b.rb;
}

static bool push_cand(const cg_tune_query *q, kiln_tune_block b, kiln_tune_block *out, int *n,
                      int max) {
  if (*n >= max || !cg_tune_block_ok(q, b)) return false;
  for (int i = 0; i < *n; i++)
    if (out[i].ocb == b.ocb && out[i].rb == b.rb && out[i].nv == b.nv) return false;
  out[(*n)++] = b;
  return true;
}

int cg_tune_candidates(const cg_tune_query *q, kiln_tune_block model, kiln_tune_block *out,
                       int max) {
  int n = 0;
  push_cand(q, model, out, &n, max);
  /* the model's ranking over its own ranges (as choose_block searches them) */
  ranked r[KILN_TUNE_MAX_OCB * 4 * KILN_TUNE_MAX_NV];
  int nr = 0;
  int64_t rb_hi = q->max_rb < limit_rb(q) ? q->max_rb : limit_rb(q);
  for (int ob = 1; ob <= limit_ocb(q); ob++)
    for (int rb = 1; rb <= rb_hi && rb <= 4; rb++)
      for (int nv = 1; nv <= limit_nv(q); nv++) {
        kiln_tune_block b = {ob, rb, nv};
        if (!cg_tune_block_ok(q, b)) continue;
        r[nr++] = (ranked){b, q->cost ? q->cost(q->plan, q->machine, ob, rb, nv) : 0};
      }
  qsort(r, (size_t)nr, sizeof *r, cmp_ranked);
  int top = 6;
  for (int i = 0; i < nr && n < top; i++) push_cand(q, r[i].b, out, &n, max);
  /* neighbours of the model's block, including one row more than the model allows (it
   * caps rows where taller blocks measured slower on average, not everywhere) */
  const int d_oc[] = {-1, 1, -2, 2}, d_rb[] = {1, -1}, d_nv[] = {1, -1};
  for (int i = 0; i < 2; i++)
    push_cand(q, (kiln_tune_block){model.ocb, model.rb + d_rb[i], model.nv}, out, &n, max);
  for (int i = 0; i < 2; i++)
    push_cand(q, (kiln_tune_block){model.ocb, model.rb, model.nv + d_nv[i]}, out, &n, max);
  for (int i = 0; i < 4; i++)
    push_cand(q, (kiln_tune_block){model.ocb + d_oc[i], model.rb, model.nv}, out, &n, max);
  /* rows traded for channels and back, keeping the accumulators about equal */
  for (int rb = 1; rb <= limit_rb(q) && rb <= q->max_rb + 1; rb++)
    for (int nv = 1; nv <= limit_nv(q); nv++) {
      int ob = q->max_acc / (rb * nv);
      if (ob > limit_ocb(q)) ob = (int)limit_ocb(q);
      push_cand(q, (kiln_tune_block){ob, rb, nv}, out, &n, max);
    }
  for (int i = 0; i < nr && n < max; i++) push_cand(q, r[i].b, out, &n, max);
  return n;
}

static void shape_str(const cg_conv_geom *g, char *out, size_t n) {
  int k = snprintf(out, n, "%lld>%lld ", (long long)g->C, (long long)g->OC);
  if (k < 0 || (size_t)k >= n) return;
  if (g->out[0] > 1 || g->in[0] > 1)
    k += snprintf(out + k, n - (size_t)k, "%lldx", (long long)g->out[0]);
  if ((size_t)k >= n) return;
  k += snprintf(out + k, n - (size_t)k, "%lldx%lld k%lldx%lld s%lld", (long long)g->out[1],
                (long long)g->out[2], (long long)g->k[1], (long long)g->k[2],
                (long long)g->stride[2]);
  if ((size_t)k < n && g->groups > 1)
    k += snprintf(out + k, n - (size_t)k, " g%lld", (long long)g->groups);
  if ((size_t)k < n && (g->xform[1] != CG_IN_PLAIN || g->xform[2] != CG_IN_PLAIN))
    k += snprintf(out + k, n - (size_t)k, " %s%lld",
                  g->xform[2] == CG_IN_NEAREST ? "up" : "zi", (long long)g->xfactor[2]);
  if ((size_t)k < n && (g->ostride[1] > 1 || g->ostride[2] > 1))
    snprintf(out + k, n - (size_t)k, " phase");
}

int64_t kiln_tune_steps_of(const kiln_tune_table *t, const char *key, int64_t n_steps, bool *mask) {
  int64_t count = 0;
  for (int64_t s = 0; s < n_steps; s++) mask[s] = false;
  for (int64_t m = 0; m < t->n_marks; m++) {
    if (strcmp(t->recs[t->marks[m].rec].key, key)) continue;
    int64_t end = m + 1 < t->n_marks ? t->marks[m + 1].step : n_steps;
    for (int64_t s = t->marks[m].step; s < end && s < n_steps; s++) {
      count += !mask[s];
      mask[s] = true;
    }
  }
  return count;
}

static void record(kiln_tune_table *t, kiln_emit_ctx *cx, const char *key, const cg_tune_query *q,
                   kiln_tune_block model, kiln_tune_block used) {
  kiln_err e = {0};
  if (kiln_grow((void **)&t->marks, &t->cap_marks, t->n_marks + 1, sizeof *t->marks, &e)) {
    t->record_oom = true;
    return;
  }
  kiln_tune_mark *mk = &t->marks[t->n_marks++];
  mk->step = cg_step_count(cx);
  for (int64_t i = 0; i < t->n_recs; i++)
    if (!strcmp(t->recs[i].key, key)) {
      t->recs[i].count++;
      mk->rec = i;
      return;
    }
  if (kiln_grow((void **)&t->recs, &t->cap_recs, t->n_recs + 1, sizeof *t->recs, &e)) {
    t->n_marks--;
    t->record_oom = true;
    return;
  }
  mk->rec = t->n_recs;
  kiln_tune_record *r = &t->recs[t->n_recs++];
  memset(r, 0, sizeof *r);
  snprintf(r->key, sizeof r->key, "%s", key);
  r->node = cg_cur_node_id(cx);
  r->count = 1;
  r->model = model;
  r->used = used;
  const cg_conv_geom *g = q->geom;
  r->macs = g->N * g->OC * g->out[0] * g->out[1] * g->out[2] * (g->groups ? g->C / g->groups : 0) *
            g->k[0] * g->k[1] * g->k[2];
  shape_str(g, r->shape, sizeof r->shape);
  if (q->family) {
    size_t len = strlen(r->shape);
    snprintf(r->shape + len, sizeof r->shape - len, " %s", q->family);
  }
  r->n_cands = cg_tune_candidates(q, model, r->cands, KILN_TUNE_MAX_CANDS);
}

bool cg_tune_conv(kiln_emit_ctx *cx, const cg_tune_query *q, int *ocb, int *rb, int *nv) {
  kiln_tune_table *t = cg_tune_table(cx);
  if (!t) return false;
  char key[KILN_TUNE_KEY_MAX];
  cg_tune_conv_key(q->geom, q->V, q->packed, q->family, key, sizeof key);
  if (!key[0]) return false;
  kiln_tune_block model = {*ocb, *rb, *nv}, used = model;
  const kiln_tune_entry *en = kiln_tune_find(t, key);
  bool wild = false;
  if (!en && (en = kiln_tune_find(t, "*"))) wild = true;
  bool applied = false;
  if (en && cg_tune_block_ok(q, en->blk)) {
    used = en->blk;
    applied = true;
  } else if (en && !wild && !t->warning[0]) {
    /* a forced "*" block that does not fit a convolution is expected (it is one block for
     * all shapes); a tuned entry that does not fit its own convolution is not */
    snprintf(t->warning, sizeof t->warning,
             "tuned block %dx%dx%d does not fit convolution %s (%d accumulators at most); "
             "using the cost model's",
             en->blk.ocb, en->blk.rb, en->blk.nv, key, q->max_acc);
  }
  if (t->record) record(t, cx, key, q, model, used);
  *ocb = used.ocb;
  *rb = used.rb;
  *nv = used.nv;
  return applied;
}
