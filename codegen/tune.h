/* tune.h — measured blocking parameters for the convolution generator (`kiln tune`).
 *
 * conv_gen.c picks each convolution's register block (OCB output channels x RB rows x NV
 * vectors) with a cost model.  `kiln tune` times the model's best candidates and their
 * neighbours on this machine and keeps, per convolution geometry, the block that beat the
 * model's choice by a margin.  The table maps a key (the geometry as the generator sees it
 * after its own normalization, plus vector width and weight packing; not the thread count,
 * which changes the tiling, never the block, nor an output placement's offset, the only
 * difference between the phases of an upsampling convolution) to a block.
 *
 * It is stored as one small text file per CPU in the kernel cache directory,
 *   <cache dir>/tune-<cpu>-<features hash>.txt
 *     kiln-tune 1
 *     cpu znver3
 *     features <BLAKE3-128 of the LLVM feature string, hex>
 *     <key> <ocb> <rb> <nv> <model ms> <tuned ms>      (one line per convolution)
 *     end <number of entries>
 * written to a temporary name and renamed, so readers never see half a file.  kiln_compile
 * loads it (unless opts->no_tune or $KILN_TUNE=0); a corrupt, truncated or foreign file, or
 * one holding a value out of range, is ignored with one warning (reported with the kernel
 * cache's warnings) and the cost model's blocks are used.  An entry that does not fit the
 * convolution it names (more accumulators than registers, a block larger than the output)
 * is refused when applied, with a warning.
 *
 * Tuned and forced blocks change only how outputs are grouped into register blocks; every
 * output element is still computed by the same instruction sequence, so results are bitwise
 * identical to the cost model's blocks. */
#ifndef KILN_CODEGEN_TUNE_H
#define KILN_CODEGEN_TUNE_H

#include "codegen/conv_gen.h"

#define KILN_TUNE_KEY_MAX 384
#define KILN_TUNE_MAX_CANDS 32
#define KILN_TUNE_MAX_OCB 32 /* conv_gen's MAX_ACC */
#define KILN_TUNE_MAX_RB 8
#define KILN_TUNE_MAX_NV 32 /* conv_gen: vectors of columns; BlockedConv: pixels */
#define KILN_TUNE_MAX_ENTRIES 65536

typedef struct kiln_tune_block {
  int ocb, rb, nv;
} kiln_tune_block;

typedef struct kiln_tune_entry {
  char key[KILN_TUNE_KEY_MAX]; /* or "*": every convolution (forced blocks, tests) */
  kiln_tune_block blk;
  double ms_model, ms_tuned; /* what kiln tune measured (informational; 0: unknown) */
} kiln_tune_entry;

/* One distinct convolution met while compiling with table->record set. */
typedef struct kiln_tune_record {
  char key[KILN_TUNE_KEY_MAX];
  int node;              /* id of the first node that emitted it (-1: unknown) */
  int count;             /* kernels emitted with this key */
  kiln_tune_block model; /* the cost model's block */
  kiln_tune_block used;  /* the block compiled (the table's when valid, else the model's) */
  int64_t macs;          /* of one kernel */
  char shape[96];        /* e.g. "64>64 56x56 k3x3 s1" as the generator sees it */
  int n_cands;           /* cands[0] is the model's block, then its ranking and neighbours */
  kiln_tune_block cands[KILN_TUNE_MAX_CANDS];
} kiln_tune_record;

/* Where a recorded convolution's kernels start among the program's steps. */
typedef struct kiln_tune_mark {
  int64_t rec;  /* index into recs */
  int64_t step; /* its first step (an input copy, or the convolution) */
} kiln_tune_mark;

typedef struct kiln_tune_table {
  kiln_tune_entry *entries;
  int64_t n_entries, cap_entries;
  bool record; /* collect a record per distinct convolution compiled, and marks */
  kiln_tune_record *recs;
  int64_t n_recs, cap_recs;
  kiln_tune_mark *marks; /* one per convolution emitted, in step order */
  int64_t n_marks, cap_marks;
  bool record_oom;            /* a record was lost to an allocation failure */
  char warning[KILN_ERR_MSG]; /* the first problem: file ignored, entry refused */
} kiln_tune_table;

/* ---- the table ---- */
kiln_tune_table *kiln_tune_new(void); /* NULL when out of memory */
void kiln_tune_free(kiln_tune_table *t);
/* Adds or replaces the entry of `key`. */
kiln_code kiln_tune_set(kiln_tune_table *t, const char *key, kiln_tune_block b, double ms_model,
                        double ms_tuned, kiln_err *e);
/* Removes the entry of `key` (true if there was one). */
bool kiln_tune_remove(kiln_tune_table *t, const char *key);
const kiln_tune_entry *kiln_tune_find(const kiln_tune_table *t, const char *key);
/* Whether a block lies in the ranges any table may hold: 1..KILN_TUNE_MAX_* each, and no more
 * accumulators than any target has vector registers (32). */
bool kiln_tune_block_sane(kiln_tune_block b);

/* Sets mask[s] for the steps of a recording compile (n_steps in all) that belong to the
 * convolutions of `key`: from each of its marks to the next mark, or to the end.  Returns how
 * many. */
int64_t kiln_tune_steps_of(const kiln_tune_table *t, const char *key, int64_t n_steps, bool *mask);

/* ---- the file ---- */
/* The table file of a CPU in `dir`. */
void kiln_tune_path(const char *dir, const char *cpu, const char *features, char *out, size_t n);
/* Reads the table at `path` for this cpu/features into a new table (*out).  A missing file
 * gives an empty table; a corrupt, truncated, foreign or out-of-range one an empty table with
 * (*out)->warning naming the file and why.  Errors: out of memory only. */
kiln_code kiln_tune_load(const char *path, const char *cpu, const char *features,
                         kiln_tune_table **out, kiln_err *e);
/* Writes the entries (not "*") atomically: a temporary file in the same directory, renamed. */
kiln_code kiln_tune_save(const kiln_tune_table *t, const char *path, const char *cpu,
                         const char *features, kiln_err *e);

/* ---- the generator's side ---- */
/* What conv_gen knows when it has chosen a block. */
typedef struct cg_tune_query {
  const cg_conv_geom *geom; /* after the generator's normalization (1x1 planes flattened) */
  int V;                    /* vector width */
  bool packed;              /* constant weights, repacked per block */
  int max_acc;              /* accumulators that fit the vector registers */
  int max_rb;               /* the cost model's row limit (candidates go one beyond) */
  /* the model's estimated cost of a block, for ranking candidates */
  double (*cost)(const void *plan, const void *machine, int ocb, int rb, int nv);
  const void *plan, *machine;
  /* Another kernel family than conv_gen's (NULL): its name prefixes the key ("blocked:..."),
   * the block's fields mean what that generator says, lim_ocb/lim_rb/lim_nv bound them (each
   * 0: conv_gen's bounds from the geometry) and fits(), when set, must accept a block. */
  const char *family;
  int64_t lim_ocb, lim_rb, lim_nv;
  bool (*fits)(const void *plan, kiln_tune_block b);
} cg_tune_query;

/* The canonical key of a convolution ("" if it does not fit n: then it is never tuned);
 * family NULL for conv_gen's kernels. */
void cg_tune_conv_key(const cg_conv_geom *g, int V, bool packed, const char *family, char *out,
                      size_t n);
/* Whether block b fits convolution q (registers, channels, rows, vectors). */
bool cg_tune_block_ok(const cg_tune_query *q, kiln_tune_block b);
/* Candidate blocks for q, best first: `model` (the cost model's choice), the model's ranking,
 * then neighbours of `model` (one more row than the model allows, +-1/2 channels, ...).  Writes
 * at most `max` and returns the count. */
int cg_tune_candidates(const cg_tune_query *q, kiln_tune_block model, kiln_tune_block *out,
                       int max);
/* Called by conv_gen after its cost model chose *ocb x *rb x *nv: replaces them with the
 * compile's table entry for this convolution (or its "*" entry) when that fits, and records
 * the convolution when the table records.  Returns whether the block was replaced. */
bool cg_tune_conv(kiln_emit_ctx *cx, const cg_tune_query *q, int *ocb, int *rb, int *nv);

#endif
