/* loop.c — epochs, batches (prepared on a loader thread), progress, CSV log,
 * checkpoints. */
#include "train/loop.h"

#include "data/data.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* The permutation of epoch `epoch`: Fisher-Yates driven by splitmix64(seed, epoch). */
static void epoch_order(int64_t *idx, int64_t n, uint64_t seed, int epoch) {
  uint64_t s = mix64(seed * 0x9e3779b97f4a7c15ull + (uint64_t)epoch + 1);
  for (int64_t i = 0; i < n; i++) idx[i] = i;
  for (int64_t i = n - 1; i > 0; i--) {
    s += 0x9e3779b97f4a7c15ull;
    int64_t j = (int64_t)(mix64(s) % (uint64_t)(i + 1));
    int64_t t = idx[i];
    idx[i] = idx[j];
    idx[j] = t;
  }
}

typedef struct batch {
  kiln_tensor *image, *labels, *mask, *present;
} batch;

typedef struct loader_job {
  kiln_dataset *d;
  const int64_t *idx; /* batch example indices */
  int64_t b;
  batch *out;
  kiln_err err;
  kiln_code rc;
} loader_job;

static void fill_batch(loader_job *j) {
  kiln_dataset *d = j->d;
  batch *bt = j->out;
  int64_t per = d->c * d->h * d->w, hw = d->h * d->w;
  j->rc = KILN_OK;
  for (int64_t i = 0; i < j->b && !j->rc; i++) {
    bool has = false;
    int64_t label = 0;
    float *mask = bt->mask ? (float *)bt->mask->data + i * hw : NULL;
    j->rc = d->get(d, j->idx[i], (float *)bt->image->data + i * per, &label, mask, &has, &j->err);
    ((int64_t *)bt->labels->data)[i] = label;
    if (bt->present) ((float *)bt->present->data)[i] = has ? 1.0f : 0.0f;
  }
}

static void *loader_main(void *p) {
  fill_batch(p);
  return NULL;
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void fmt_eta(double s, char *buf, size_t n) {
  if (s < 0 || s > 1e7) snprintf(buf, n, "?");
  else if (s >= 3600) snprintf(buf, n, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
  else snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)s % 60);
}

static kiln_code alloc_batch(kiln_trainer *t, batch *b, kiln_err *e) {
  memset(b, 0, sizeof *b);
  int64_t B = kiln_trainer_batch(t);
  kiln_shape sb = {.rank = 1, .d = {B}};
  KILN_TRY(kiln_tensor_new(KILN_F32, kiln_trainer_image_shape(t), &b->image, e));
  KILN_TRY(kiln_tensor_new(KILN_I64, &sb, &b->labels, e));
  if (kiln_trainer_mask_shape(t)) {
    KILN_TRY(kiln_tensor_new(KILN_F32, kiln_trainer_mask_shape(t), &b->mask, e));
    KILN_TRY(kiln_tensor_new(KILN_F32, &sb, &b->present, e));
  }
  return KILN_OK;
}

static void free_batch(batch *b) {
  kiln_tensor_free(b->image);
  kiln_tensor_free(b->labels);
  kiln_tensor_free(b->mask);
  kiln_tensor_free(b->present);
}

static kiln_code save_ckpt(kiln_trainer *t, const kiln_fit_opts *o, int epoch, int64_t epoch_step, kiln_err *e) {
  if (!o->checkpoint) return KILN_OK;
  char ep[32], es[32], seed[32];
  snprintf(ep, sizeof ep, "%d", epoch);
  snprintf(es, sizeof es, "%lld", (long long)epoch_step);
  snprintf(seed, sizeof seed, "%llu", (unsigned long long)o->seed);
  const char *meta[] = {"kiln.epoch", ep, "kiln.epoch_step", es, "kiln.seed", seed, NULL, NULL};
  return kiln_trainer_save(t, o->checkpoint, meta, e);
}

kiln_code kiln_fit(kiln_trainer *t, kiln_dataset *d, const kiln_fit_opts *o, kiln_fit_result *r, kiln_err *e) {
  memset(r, 0, sizeof *r);
  int64_t B = kiln_trainer_batch(t);
  const kiln_shape *is = kiln_trainer_image_shape(t);
  if (is->d[1] != d->c || is->d[2] != d->h || is->d[3] != d->w)
    return kiln_errf(e, KILN_ERR_SHAPE, "dataset '%s' has %lldx%lldx%lld images; the model takes %lldx%lldx%lld",
                     d->name ? d->name : "?", (long long)d->c, (long long)d->h, (long long)d->w, (long long)is->d[1],
                     (long long)is->d[2], (long long)is->d[3]);
  if (d->classes > kiln_trainer_num_classes(t))
    return kiln_errf(e, KILN_ERR_INVALID, "dataset '%s' has labels up to %lld; the model has %lld classes",
                     d->name ? d->name : "?", (long long)d->classes - 1, (long long)kiln_trainer_num_classes(t));
  int64_t steps_per_epoch = d->n / B;
  if (steps_per_epoch < 1)
    return kiln_errf(e, KILN_ERR_INVALID, "dataset '%s' has %lld examples, fewer than one batch of %lld",
                     d->name ? d->name : "?", (long long)d->n, (long long)B);
  /* resume position */
  int epoch0 = 0;
  int64_t step0 = 0;
  const char *me = kiln_trainer_meta(t, "kiln.epoch"), *ms = kiln_trainer_meta(t, "kiln.epoch_step");
  if (me) epoch0 = atoi(me);
  if (ms) step0 = strtoll(ms, NULL, 10);
  if (step0 >= steps_per_epoch) {
    epoch0++;
    step0 = 0;
  }
  int64_t *order = kiln_malloc(sizeof(int64_t) * (size_t)d->n);
  batch bufs[2];
  memset(bufs, 0, sizeof bufs);
  kiln_code rc = KILN_OK;
  FILE *log = NULL;
  if (!order) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  if ((rc = alloc_batch(t, &bufs[0], e)) || (rc = alloc_batch(t, &bufs[1], e))) goto done;
  if (o->log_csv) {
    FILE *probe = fopen(o->log_csv, "r");
    bool fresh = !probe;
    if (probe) fclose(probe);
    log = fopen(o->log_csv, "a");
    if (!log) {
      rc = kiln_errf(e, KILN_ERR_IO, "%s: cannot open the training log for writing", o->log_csv);
      goto done;
    }
    if (fresh) fprintf(log, "epoch,step,global_step,loss,loss_cls,loss_loc,batch_acc,images_per_s,seconds\n");
  }
  double t_start = now_s();
  int64_t images = 0, run_steps = 0;
  for (int epoch = epoch0; epoch < o->epochs && !rc; epoch++) {
    epoch_order(order, d->n, o->seed, epoch);
    kiln_data_view_set_epoch(d, epoch); /* no loader thread runs here */
    if (o->on_epoch_start) o->on_epoch_start(o->epoch_ctx, epoch);
    double sum_loss = 0, sum_cls = 0, sum_loc = 0;
    int64_t sum_correct = 0, n_steps = 0;
    int64_t first = epoch == epoch0 ? step0 : 0;
    /* prepare the first batch inline, then the next on the loader thread */
    loader_job jobs[2];
    pthread_t th;
    bool th_running = false;
    jobs[0] = (loader_job){.d = d, .idx = order + first * B, .b = B, .out = &bufs[0]};
    if (first < steps_per_epoch) {
      fill_batch(&jobs[0]);
      if (jobs[0].rc) {
        rc = jobs[0].rc;
        *e = jobs[0].err;
        goto done;
      }
    }
    for (int64_t s = first; s < steps_per_epoch; s++) {
      int cur = (int)((s - first) & 1), nxt = cur ^ 1;
      if (s + 1 < steps_per_epoch) {
        jobs[nxt] = (loader_job){.d = d, .idx = order + (s + 1) * B, .b = B, .out = &bufs[nxt]};
        if (o->loader_threads > 0 && pthread_create(&th, NULL, loader_main, &jobs[nxt]) == 0)
          th_running = true;
        else
          fill_batch(&jobs[nxt]);
      }
      kiln_step_result sr;
      double ts = now_s();
      rc = kiln_trainer_step(t, bufs[cur].image, bufs[cur].labels, bufs[cur].mask, bufs[cur].present, &sr, e);
      double dt = now_s() - ts;
      if (th_running) {
        pthread_join(th, NULL);
        th_running = false;
      }
      if (rc) goto done;
      if (s + 1 < steps_per_epoch && jobs[nxt].rc) {
        rc = jobs[nxt].rc;
        *e = jobs[nxt].err;
        goto done;
      }
      images += B;
      run_steps++;
      n_steps++;
      sum_loss += sr.loss;
      sum_cls += sr.loss_cls;
      sum_loc += sr.loss_loc;
      sum_correct += sr.correct;
      double elapsed = now_s() - t_start, ips = (double)images / (elapsed > 0 ? elapsed : 1e-9);
      int64_t remaining = (int64_t)(o->epochs - epoch - 1) * steps_per_epoch + (steps_per_epoch - s - 1);
      if (log)
        fprintf(log, "%d,%lld,%lld,%.6f,%.6f,%.6f,%.4f,%.2f,%.4f\n", epoch + 1, (long long)s + 1,
                (long long)kiln_trainer_steps_done(t), sr.loss, sr.loss_cls, sr.loss_loc, (double)sr.correct / (double)B,
                (double)B / (dt > 0 ? dt : 1e-9), elapsed);
      if (o->progress) {
        char eta[32];
        fmt_eta((double)remaining * (double)B / ips, eta, sizeof eta);
        bool line_now = o->tty || s + 1 == steps_per_epoch || (s + 1) % 10 == 0;
        if (line_now)
          fprintf(o->progress, "%sepoch %d/%d  step %lld/%lld  loss %.4f  cls %.4f  loc %.4f  acc %.3f  %.1f img/s  ETA %s%s",
                  o->tty ? "\r\033[K" : "", epoch + 1, o->epochs, (long long)s + 1, (long long)steps_per_epoch,
                  sum_loss / (double)n_steps, sum_cls / (double)n_steps, sum_loc / (double)n_steps,
                  (double)sum_correct / (double)(n_steps * B), ips, eta, o->tty ? "" : "\n");
        fflush(o->progress);
      }
      bool stop = (o->stop && *o->stop) || (o->max_steps > 0 && run_steps >= o->max_steps);
      if (stop) { /* report the partial epoch */
        r->last_loss = sum_loss / (double)n_steps;
        r->last_cls = sum_cls / (double)n_steps;
        r->last_loc = sum_loc / (double)n_steps;
        r->last_acc = (double)sum_correct / (double)(n_steps * B);
      }
      if (stop && s + 1 < steps_per_epoch) {
        r->stopped = o->stop && *o->stop;
        rc = save_ckpt(t, o, epoch, s + 1, e);
        r->steps_done = run_steps;
        goto finish;
      }
      if (stop) { /* at the epoch's last step: save as an epoch end */
        r->stopped = o->stop && *o->stop;
        rc = save_ckpt(t, o, epoch + 1, 0, e);
        r->epochs_done++;
        goto finish;
      }
    }
    if (o->progress && o->tty) fputc('\n', o->progress);
    r->epochs_done++;
    r->last_loss = n_steps ? sum_loss / (double)n_steps : 0;
    r->last_cls = n_steps ? sum_cls / (double)n_steps : 0;
    r->last_loc = n_steps ? sum_loc / (double)n_steps : 0;
    r->last_acc = n_steps ? (double)sum_correct / (double)(n_steps * B) : 0;
    if ((rc = save_ckpt(t, o, epoch + 1, 0, e))) goto done;
    if (o->on_epoch) {
      kiln_epoch_info info = {.epoch = epoch + 1,
                              .epochs = o->epochs,
                              .global_step = kiln_trainer_steps_done(t),
                              .loss = r->last_loss,
                              .loss_cls = r->last_cls,
                              .loss_loc = r->last_loc,
                              .acc = r->last_acc,
                              .seconds = now_s() - t_start};
      if ((rc = o->on_epoch(o->on_epoch_ctx, t, &info, e))) goto done;
    }
  }
finish:
  r->steps_done = run_steps;
  r->images_per_second = (double)images / (now_s() - t_start + 1e-9);
done:
  if (o->progress && o->tty) fputc('\n', o->progress);
  if (log) fclose(log);
  free_batch(&bufs[0]);
  free_batch(&bufs[1]);
  kiln_free(order);
  return rc;
}
