/* report.h — the study's tables (Markdown, CSV, HTML) from experiment results, the
 * saliency grids, and report.html: one self-contained page (inline CSS, SVG charts,
 * PNGs embedded as base64 data URIs) that opens offline in a browser.
 *
 * Tables (docs/study.md, "Experiments"):
 *   table1  method x loc label ratio per backbone (the study's Tables 1 and 3):
 *           "Ours" at each ratio with the CE loss (or the first loss of the grid),
 *           then the baseline;
 *   table2  loc loss x ratio per backbone (Tables 2 and 4), then the baseline;
 *   saliency  explanation scores per model (Grad-CAM energy in the mask, pointing
 *           game, SPN map energy, SPN IoU/Dice).
 * Every cell is the mean over the grid's seeds, with the 95% Student-t interval
 * ("96.1±1.4") when there are at least two. */
#ifndef KILN_STUDY_REPORT_H
#define KILN_STUDY_REPORT_H

#include <stdio.h>

#include "study/experiment.h"
#include "study/metrics.h"
#include "train/dataset.h"

#define KILN_TABLE_MAX_COLS 16

/* A cell: text, or a statistic over runs. */
typedef struct kiln_table_cell {
  char text[64];     /* label cells ("" for a statistic) */
  kiln_mean_ci ci;   /* of values in [0,1]; shown as percentages with one decimal */
} kiln_table_cell;

typedef struct kiln_table {
  char title[160];
  int n_cols, n_rows, cap;
  const char *head[KILN_TABLE_MAX_COLS]; /* column names (static strings) */
  const char *key[KILN_TABLE_MAX_COLS];  /* CSV names of statistic columns ("precision") */
  kiln_table_cell *cells;                /* n_rows * n_cols */
} kiln_table;

void kiln_table_free(kiln_table *t);

/* The tables from results (any order; seeds of one configuration are pooled). */
kiln_code kiln_table_methods(const kiln_exp_result *r, int n, kiln_table *t, kiln_err *e);
kiln_code kiln_table_losses(const kiln_exp_result *r, int n, kiln_table *t, kiln_err *e);
kiln_code kiln_table_saliency(const kiln_exp_result *r, int n, kiln_table *t, kiln_err *e);

/* A cell's text: its label, or "mean±half" in percent (no ± for one run), "–" for
 * no finite value. */
void kiln_table_cell_str(const kiln_table_cell *c, char *buf, size_t n);
/* Markdown (a pipe table), CSV (label columns, then <key>_mean,<key>_ci95 per
 * statistic, then n), HTML (a <table>). */
void kiln_table_markdown(const kiln_table *t, FILE *f);
void kiln_table_csv(const kiln_table *t, FILE *f);
void kiln_table_html(const kiln_table *t, FILE *f);

/* Standard base64 (RFC 4648, padded) of n bytes into out (4*ceil(n/3)+1 bytes). */
void kiln_base64(const uint8_t *in, size_t n, char *out);

/* One run's grid: rows = test examples idx[0..rows), columns image | truth |
 * Grad-CAM | gradient | (SPN when spn).  maps [rows,3,H,W]: Grad-CAM and gradient in
 * [0,1], the SPN's sigmoid.  The image is captioned with its class, the Grad-CAM map
 * with the predicted class pred[row] (green when right, red when wrong; pred may be
 * NULL). */
kiln_code kiln_report_run_grid(kiln_dataset *test, const int64_t *idx, const int64_t *pred, int rows,
                               const float *maps, bool spn, const char *path, kiln_err *e);
/* grid.csv of a run: row,example,pred. */
kiln_code kiln_report_grid_preds_save(const char *path, const int64_t *idx, const int64_t *pred, int rows,
                                      kiln_err *e);
/* Reads pred[0..rows) back; false when the file is missing or lists other examples. */
bool kiln_report_grid_preds_load(const char *path, const int64_t *idx, int rows, int64_t *pred);

/* Writes table1/table2/saliency (.md and .csv), runs.csv, compare-<backbone>.png and
 * report.html into c->out.  test and grid_idx give the examples of the grids. */
kiln_code kiln_report_write(const kiln_exp_config *c, const kiln_exp_result *r, int n, kiln_dataset *test,
                            const int64_t *grid_idx, int n_grid, double seconds, kiln_err *e);

#endif
