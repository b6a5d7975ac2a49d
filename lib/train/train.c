/* train.c: the lt-train pipeline (see train.h). One optimizer step:
 *
 *   x (B,H,W,3), t (B,D)          <- loader (rendered from the cache, teacher rows)
 *   f (B,C)   = resnet(x)                         training-mode BN
 *   z (B,D)   = f · head_wᵀ + head_b
 *   s (B,D)   = z / ‖z‖
 *   queue     <- push t (front)                   before the loss
 *   loss      = KL(softmax(t·Qᵀ/τ) ‖ softmax(s·Qᵀ/τ)), batch mean
 *   backward  : ds -> dz -> (dhead, df) -> resnet grads
 *   clip (global norm), lr = base · schedule(k), optimizer update
 *
 * Checkpoints every --checkpoint-every steps (default: each epoch) and at the end; SIGINT/SIGTERM
 * finish the step, checkpoint and stop; a non-finite loss stops without overwriting the last good
 * checkpoint. */
#include "train/train.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"
#include "core/fileio.h"
#include "core/log.h"
#include "core/rng.h"
#include "core/threads.h"
#include "core/version.h"
#include "data/cache.h"
#include "models/resnet.h"
#include "nn/cnn.h"
#include "train/checkpoint.h"
#include "train/loader.h"
#include "train/method.h"

void lt_train_defaults(lt_train_opts *o) {
    memset(o, 0, sizeof *o);
    o->out_dir = "out";
    o->student = "resnet18";
    o->epochs = 100;
    o->batch_size = 128;
    o->optimizer = LT_OPT_LARS;
    o->lr = -1;
    o->momentum = -1;
    o->weight_decay = -1;
    o->warmup_epochs = -1;
    o->clip_grad = 1.0;
    o->temperature = 0.07;
    o->shuffle = 1;
}

/* ---- the run's files ---- */

typedef struct {
    char *dir, *ckpt_dir, *ckpt, *student, *metrics, *log;
    FILE *metrics_f, *log_f;
} run_files;

static int files_init(run_files *f, const char *out) {
    memset(f, 0, sizeof *f);
    f->dir = strdup(out);
    f->ckpt_dir = lt_path_join(out, "checkpoints");
    f->ckpt = f->ckpt_dir ? lt_path_join(f->ckpt_dir, "last.safetensors") : NULL;
    f->student = lt_path_join(out, "student.safetensors");
    f->metrics = lt_path_join(out, "metrics.jsonl");
    f->log = lt_path_join(out, "train.log");
    if (!f->dir || !f->ckpt || !f->student || !f->metrics || !f->log)
        return lt_err_set("out of memory");
    return 0;
}

static void files_free(run_files *f) {
    if (f->metrics_f) fclose(f->metrics_f);
    if (f->log_f) fclose(f->log_f);
    free(f->dir);
    free(f->ckpt_dir);
    free(f->ckpt);
    free(f->student);
    free(f->metrics);
    free(f->log);
}

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

/* Keeps only the metrics lines of steps <= step (a resumed run rewrites what came after). */
static int truncate_metrics(const char *path, int64_t step) {
    FILE *in = fopen(path, "r");
    if (!in) return 0;
    size_t cap = 1 << 16, len = 0;
    char *keep = malloc(cap), line[4096];
    if (!keep) {
        fclose(in);
        return lt_err_set("out of memory");
    }
    while (fgets(line, sizeof line, in)) {
        const char *p = strstr(line, "\"step\": ");
        if (!p || strtoll(p + 8, NULL, 10) > step) continue;
        size_t n = strlen(line);
        if (len + n + 1 > cap) {
            char *k = realloc(keep, cap = 2 * (len + n + 1));
            if (!k) {
                free(keep);
                fclose(in);
                return lt_err_set("out of memory");
            }
            keep = k;
        }
        memcpy(keep + len, line, n);
        len += n;
    }
    fclose(in);
    int rc = lt_write_file_atomic(path, keep, len);
    free(keep);
    return rc;
}

static void logf_(run_files *f, const char *fmt, ...) LT_PRINTF(2, 3);
static void logf_(run_files *f, const char *fmt, ...) {
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    lt_info("%s", buf);
    if (f->log_f) {
        time_t now = time(NULL);
        char ts[32];
        strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
        char esc[4 * sizeof buf];
        fprintf(f->log_f, "%s %s\n", ts, lt_str_escape(buf, esc, sizeof esc));
        fflush(f->log_f);
    }
}

/* ---- the model state ---- */

typedef struct {
    lt_resnet *model;
    int B, C, D;
    float *head_w, *head_b, *dhead_w, *dhead_b; /* (D,C), (D) and their grads */
    float *z, *znorm, *s, *ds, *dz, *dfeat;     /* (B,D), (B), (B,D), (B,D), (B,D), (B,C) */
    float *probs;                               /* (2, B, Q) */
    lt_queue queue;
    lt_optim optim;
    lt_param *params;
    int nparams;
} trainer;

static void trainer_free(trainer *t) {
    lt_resnet_free(t->model);
    free(t->head_w);
    free(t->head_b);
    free(t->dhead_w);
    free(t->dhead_b);
    free(t->z);
    free(t->znorm);
    free(t->s);
    free(t->ds);
    free(t->dz);
    free(t->dfeat);
    free(t->probs);
    free(t->params);
    lt_queue_free(&t->queue);
    lt_optim_free(&t->optim);
}

/* Head init: weight ~ trunc_normal(std 0.02) (torch's default bounds ±2 are absolute, so at this
 * std it is a plain normal, redrawn beyond ±2), bias 0. Drawn from the RNG keyed (seed, "HEAD"). */
static void init_head(trainer *t, uint64_t seed) {
    lt_rng r;
    lt_rng_init(&r, seed, 0x48454144u, 0, 0);
    for (int64_t i = 0; i < (int64_t)t->D * t->C; i++) {
        double v;
        do {
            double u1 = lt_rng_uniform(&r), u2 = lt_rng_uniform(&r);
            v = 0.02 * sqrt(-2.0 * log(1.0 - u1)) * cos(2 * M_PI * u2);
        } while (fabs(v) > 2.0);
        t->head_w[i] = (float)v;
    }
    memset(t->head_b, 0, (size_t)t->D * sizeof(float));
}

static int trainer_init(trainer *t, const lt_train_opts *o, int size, int D, int Q) {
    memset(t, 0, sizeof *t);
    t->B = o->batch_size;
    t->D = D;
    t->model = lt_resnet_create(o->student, o->batch_size, size, size);
    if (!t->model) return -1;
    lt_resnet_init_weights(t->model, o->seed);
    t->C = t->model->C;
    int B = t->B, C = t->C;
    t->head_w = lt_malloc((size_t)D * C * sizeof(float), "head");
    t->head_b = lt_malloc((size_t)D * sizeof(float), "head");
    t->dhead_w = lt_malloc((size_t)D * C * sizeof(float), "head grad");
    t->dhead_b = lt_malloc((size_t)D * sizeof(float), "head grad");
    t->z = lt_malloc((size_t)B * D * sizeof(float), "projections");
    t->znorm = lt_malloc((size_t)B * sizeof(float), "norms");
    t->s = lt_malloc((size_t)B * D * sizeof(float), "student embeddings");
    t->ds = lt_malloc((size_t)B * D * sizeof(float), "gradients");
    t->dz = lt_malloc((size_t)B * D * sizeof(float), "gradients");
    t->dfeat = lt_malloc((size_t)B * C * sizeof(float), "gradients");
    t->probs = lt_malloc((size_t)2 * B * Q * sizeof(float), "loss probabilities");
    if (!t->head_w || !t->head_b || !t->dhead_w || !t->dhead_b || !t->z || !t->znorm || !t->s ||
        !t->ds || !t->dz || !t->dfeat || !t->probs)
        return -1;
    init_head(t, o->seed);
    if (lt_queue_init(&t->queue, Q, D) != 0) return -1;
    /* parameters: every trainable backbone tensor, then the head */
    t->params = lt_calloc((size_t)t->model->n_tensors + 2, sizeof *t->params, "parameter list");
    if (!t->params) return -1;
    for (int i = 0; i < t->model->n_tensors; i++) {
        lt_resnet_tensor *x = &t->model->tensors[i];
        if (x->is_buffer) continue;
        t->params[t->nparams++] = (lt_param){.name = x->name, .w = x->data, .g = x->grad,
                                             .n = x->numel, .weight_decay = x->weight_decay};
    }
    t->params[t->nparams++] = (lt_param){.name = "head.weight", .w = t->head_w, .g = t->dhead_w,
                                         .n = (int64_t)D * C, .weight_decay = 1};
    t->params[t->nparams++] = (lt_param){.name = "head.bias", .w = t->head_b, .g = t->dhead_b,
                                         .n = D, .weight_decay = 0};
    lt_optim_config cfg = lt_optim_defaults(o->optimizer);
    if (o->momentum >= 0) cfg.momentum = o->momentum;
    if (o->weight_decay >= 0) cfg.weight_decay = o->weight_decay;
    return lt_optim_init(&t->optim, &cfg, t->params, t->nparams);
}

static lt_train_state state_of(trainer *t) {
    return (lt_train_state){.model = t->model, .head_w = t->head_w, .head_b = t->head_b,
                            .D = t->D, .optim = &t->optim, .queue = &t->queue};
}

/* One step on batch b; returns the loss (NaN/inf propagate) and the gradient norm. */
static int train_step(trainer *t, const lt_batch *b, double tau, double clip, double lr,
                      double *loss, double *gnorm) {
    const int B = b->B, C = t->C, D = t->D, Q = t->queue.Q;
    if (lt_resnet_forward(t->model, b->x, B, 1) != 0) return -1;
    lt_linear_forward(t->z, t->model->features, t->head_w, t->head_b, B, C, D);
    lt_l2norm_forward(t->s, t->znorm, t->z, B, D);
    if (lt_queue_push(&t->queue, b->t, B) != 0) return -1;
    if (lt_kd_loss_forward(loss, b->t, t->s, t->queue.data, B, Q, D, (float)tau, t->probs) != 0)
        return -1;
    if (!isfinite(*loss)) return 0;
    lt_kd_loss_backward(t->ds, t->probs, t->queue.data, B, Q, D, (float)tau);
    lt_l2norm_backward(t->dz, t->ds, t->s, t->znorm, B, D);
    lt_linear_backward(t->dfeat, t->dhead_w, t->dhead_b, t->dz, t->model->features, t->head_w, B,
                       C, D, 0);
    if (lt_resnet_backward(t->model, t->dfeat, NULL, 0) != 0) return -1;
    *gnorm = lt_clip_grad_norm(t->optim.params, t->optim.nparams, clip);
    if (!isfinite(*gnorm)) return 0;
    return lt_optim_step(&t->optim, lr);
}

/* ---- arguments that a resumed run must share ---- */

static void args_json(const lt_train_opts *o, const lt_cache_meta *m, int64_t N, int Q, double lr,
                      char *buf, size_t n) {
    snprintf(buf, n,
             "{\"student\": \"%s\", \"epochs\": %.17g, \"batch_size\": %d, \"optimizer\": \"%s\", "
             "\"lr\": %.17g, \"momentum\": %.17g, \"weight_decay\": %.17g, \"warmup_epochs\": %.17g, "
             "\"clip_grad\": %.17g, \"temperature\": %.17g, \"queue_size\": %d, \"seed\": %llu, "
             "\"shuffle\": %d, \"cache_images\": %lld, \"cache_views\": %d, \"cache_seed\": %llu, "
             "\"teacher_sha256\": \"%s\", \"version\": \"%s\"}",
             o->student, o->epochs, o->batch_size, lt_opt_kind_name(o->optimizer), lr, o->momentum,
             o->weight_decay, o->warmup_epochs, o->clip_grad, o->temperature, Q,
             (unsigned long long)o->seed, o->shuffle, (long long)N, m->views_per_image,
             (unsigned long long)m->seed, m->teacher.sha256, LT_VERSION);
}

/* Compares the saved arguments with this run's, field by field; names the first difference. */
static int check_resume_args(const char *saved, const char *now, const char *ckpt) {
    const char *a = saved, *b = now;
    while (*a && *b) {
        const char *ka = strchr(a, '"'), *kb = strchr(b, '"');
        if (!ka || !kb) break;
        const char *ea = strpbrk(ka + 1, ",}"), *eb = strpbrk(kb + 1, ",}");
        if (!ea || !eb) break;
        if ((ea - ka) != (eb - kb) || strncmp(ka, kb, (size_t)(ea - ka)) != 0) {
            const char *colon = strchr(ka, ':');
            int klen = colon ? (int)(colon - ka) : (int)(ea - ka);
            return lt_err_set("%s was written by a run with different settings: %.*s was %.*s, "
                              "now %.*s; rerun with the original settings, or start over with "
                              "--overwrite",
                              ckpt, klen, ka, (int)(ea - (colon ? colon + 2 : ka)),
                              colon ? colon + 2 : ka, (int)(eb - (strchr(kb, ':') + 2)),
                              strchr(kb, ':') + 2);
        }
        a = ea + 1;
        b = eb + 1;
    }
    return 0;
}

/* ---- progress ---- */

static void print_progress(int tty, int64_t step, int64_t total, int64_t spe, double epochs,
                           double loss, double lr, double ips, double eta) {
    long e = (long)(eta > 0 ? eta + 0.5 : 0);
    char etab[32];
    snprintf(etab, sizeof etab, "%ld:%02ld:%02ld", e / 3600, (e / 60) % 60, e % 60);
    fprintf(stderr, "%slt-train: epoch %lld/%g step %lld/%lld loss %.5f lr %.5g %.1f img/s ETA %s%s",
            tty ? "\r\033[K" : "", (long long)(step / spe + 1), epochs, (long long)step,
            (long long)total, loss, lr, ips, etab, tty ? "" : "\n");
    fflush(stderr);
}

/* ---- the run ---- */

/* Decides how this run starts in OUT and prepares the folder. *resume is set when OUT holds a
 * checkpoint and neither --overwrite nor a fresh start was asked for: rerunning the command of an
 * interrupted or killed run continues it (the checkpoint's saved arguments must then match, see
 * check_resume_args). Without a checkpoint, metrics.jsonl/train.log alone are what a run killed
 * before its first checkpoint leaves: they are restarted. A student file without a checkpoint is
 * another run's result and is refused. */
static int prepare_out(const lt_train_opts *o, run_files *f, int *resume) {
    int has_ckpt = exists(f->ckpt);
    *resume = !o->overwrite && (o->resume || has_ckpt);
    if (o->resume && !has_ckpt)
        return lt_err_set("--resume: no checkpoint %s to resume from", f->ckpt);
    if (!*resume && !o->overwrite && exists(f->student))
        return lt_err_set("%s already holds a student (%s) but no checkpoint to continue from; "
                          "pass --overwrite to start over", o->out_dir, f->student);
    if (lt_mkdir_p(f->ckpt_dir) != 0) return -1;
    if (!*resume) {
        unlink(f->ckpt);
        unlink(f->metrics);
        unlink(f->student);
        unlink(f->log);
    }
    return 0;
}

/* --verify: the SHA-256 of the stored bytes of a seeded sample of images against /images/sha256. */
static int verify_cache(lt_cache *cache, const lt_train_opts *o) {
    double t0 = lt_now();
    int64_t checked = 0;
    if (lt_cache_verify_images(cache, o->verify, o->seed, &checked) != 0) return -1;
    lt_info("verified the stored bytes of %lld of %lld images against their SHA-256 (%.1f s)",
            (long long)checked, (long long)lt_cache_n_images(cache), lt_now() - t0);
    return 0;
}

int lt_train_run(const lt_train_opts *o, lt_train_report *rep) {
    memset(rep, 0, sizeof *rep);
    double t_start = lt_now();
    int threads = lt_threads_set(o->threads);
    lt_cache *cache = NULL;
    lt_loader *loader = NULL;
    trainer tr;
    memset(&tr, 0, sizeof tr);
    run_files f;
    char *saved_args = NULL;
    int rc = LT_EXIT_ERROR;
    if (files_init(&f, o->out_dir) != 0) goto done;

    if (lt_cache_open(o->cache_path, &cache) != 0) goto done;
    const lt_cache_meta *m = lt_cache_meta_of(cache);
    int64_t N = lt_cache_n_images(cache);
    if (o->verify > 0 && verify_cache(cache, o) != 0) goto done;
    if (o->batch_size > N) {
        lt_err_set("--batch-size %d is larger than the %lld images in %s (the last partial batch "
                   "of each epoch is dropped)", o->batch_size, (long long)N, o->cache_path);
        rc = LT_EXIT_USAGE;
        goto done;
    }
    int Q = o->queue_size > 0 ? (int)o->queue_size : lt_queue_size_auto(N);
    if (o->queue_size > 0 && lt_queue_size_check(o->queue_size, N) != 0) {
        rc = LT_EXIT_USAGE;
        goto done;
    }
    int64_t spe = N / o->batch_size;
    int64_t total = (int64_t)floor(o->epochs * spe);
    if (total < 1) {
        lt_err_set("--epochs %g gives no optimizer step (%lld steps per epoch)", o->epochs,
                   (long long)spe);
        rc = LT_EXIT_USAGE;
        goto done;
    }
    int64_t W = lt_sched_warmup_steps(spe, o->epochs, o->warmup_epochs);
    double base_lr = o->lr > 0 ? o->lr : lt_default_lr(o->optimizer, o->batch_size);
    int64_t last = o->steps > 0 && o->steps < total ? o->steps : total;
    int64_t ckpt_every = o->checkpoint_every > 0 ? o->checkpoint_every : spe;

    int resume = 0;
    if (prepare_out(o, &f, &resume) != 0) goto done;
    if (trainer_init(&tr, o, m->image_size, m->embed_dim, Q) != 0) goto done;
    lt_train_state st = state_of(&tr);
    char args[2048];
    args_json(o, m, N, Q, base_lr, args, sizeof args);

    int64_t step = 0, epoch = 0;
    if (resume) {
        if (lt_checkpoint_load(f.ckpt, &st, &step, &epoch, &saved_args) != 0) goto done;
        if (check_resume_args(saved_args, args, f.ckpt) != 0) goto done;
        if (truncate_metrics(f.metrics, step) != 0) goto done;
    } else if (o->init_path && lt_init_from(o->init_path, &st) != 0) {
        goto done;
    }
    f.metrics_f = fopen(f.metrics, "a");
    f.log_f = fopen(f.log, "a");
    if (!f.metrics_f || !f.log_f) {
        lt_err_set("%s: cannot write: %s", f.metrics_f ? f.log : f.metrics, strerror(errno));
        goto done;
    }
    logf_(&f, "%s", resume ? "resuming a run:" : "training:");
    logf_(&f, "  cache      %s: %lld images x %d views, D=%d, %d px, teacher %s", o->cache_path,
          (long long)N, m->views_per_image, m->embed_dim, m->image_size, m->teacher.file);
    logf_(&f, "  student    %s (C=%d) + linear head %d -> %d, out %s", o->student, tr.C, tr.C,
          m->embed_dim, o->out_dir);
    logf_(&f, "  schedule   %g epochs x %lld steps = %lld steps of %d images (last partial batch "
          "dropped), warmup %lld steps, %s", o->epochs, (long long)spe, (long long)total,
          o->batch_size, (long long)W, o->shuffle ? "shuffled" : "not shuffled");
    logf_(&f, "  optimizer  %s, base lr %.6g, momentum %g, weight decay %g, clip %g",
          lt_opt_kind_name(o->optimizer), base_lr, tr.optim.cfg.momentum,
          tr.optim.cfg.weight_decay, o->clip_grad);
    logf_(&f, "  loss       queue %d, temperature %g", Q, o->temperature);
    logf_(&f, "  run        seed %llu, %d threads, checkpoint every %lld steps%s",
          (unsigned long long)o->seed, threads, (long long)ckpt_every,
          o->steps > 0 ? ", stopping early (--steps)" : "");
    if (resume) logf_(&f, "  resumed at step %lld (epoch %lld) from %s", (long long)step,
                         (long long)epoch, f.ckpt);

    rep->first_step = step;
    rep->total_steps = total;
    if (step >= last) {
        logf_(&f, "nothing to do: step %lld of %lld already reached", (long long)step,
              (long long)last);
        rep->last_step = step;
        rc = LT_EXIT_OK;
        goto done;
    }
    int lcpu = lt_cpu_count();
    lt_loader_opts lo = {.cache = cache, .batch_size = o->batch_size,
                         .workers = o->workers > 0 ? o->workers : (lcpu >= 8 ? lcpu / 4 : 1),
                         .prefetch = 2, .seed = o->seed, .shuffle = o->shuffle, .first_step = step,
                         .last_step = last, .max_resident_bytes = (int64_t)4 << 30};
    if (lt_loader_start(&lo, &loader) != 0) goto done;

    int tty = isatty(2) && lt_log_verbosity() >= 1;
    double t0 = lt_now(), t_last_print = 0, loss = 0, gnorm = 0;
    int64_t first = step;
    while (step < last) {
        lt_batch *b = lt_loader_next(loader);
        if (!b) goto done;
        double lr = base_lr * lt_sched_multiplier(step, total, W);
        double ts = lt_now();
        if (train_step(&tr, b, o->temperature, o->clip_grad, lr, &loss, &gnorm) != 0) goto done;
        lt_loader_release(loader, b);
        if (!isfinite(loss) || !isfinite(gnorm)) {
            lt_err_set("the loss became %s at step %lld (gradient norm %g); stopped. The last good "
                       "checkpoint %s is kept: start over with a lower --lr (--overwrite)",
                       isfinite(loss) ? "finite but the gradients did not" : "non-finite",
                       (long long)step + 1, gnorm, f.ckpt);
            goto done;
        }
        step++;
        epoch = step / spe;
        double now = lt_now();
        double ips = (step - first) * (double)o->batch_size / (now - t0);
        fprintf(f.metrics_f,
                "{\"step\": %lld, \"epoch\": %.4f, \"loss\": %.8g, \"lr\": %.8g, \"img_per_s\": %.3f, "
                "\"grad_norm\": %.6g, \"step_s\": %.4f, \"data_wait_s\": %.3f}\n",
                (long long)step, (double)step / spe, loss, lr, ips, gnorm, now - ts,
                lt_loader_wait_seconds(loader));
        fflush(f.metrics_f);
        if (lt_log_verbosity() >= 1 && (tty ? now - t_last_print > 0.2 : now - t_last_print > 10)) {
            print_progress(tty, step, total, spe, o->epochs, loss, lr, ips,
                           (last - step) * o->batch_size / (ips > 0 ? ips : 1));
            t_last_print = now;
        }
        int stop = o->stop && *o->stop;
        if (step % ckpt_every == 0 || step == last || stop) {
            if (lt_checkpoint_save(f.ckpt, &st, step, epoch, args) != 0 ||
                lt_export_student(f.student, &st) != 0)
                goto done;
            if (tty) fputs("\r\033[K", stderr);
            lt_debug("checkpoint at step %lld", (long long)step);
        }
        if (step % spe == 0)
            logf_(&f, "epoch %lld done: step %lld, loss %.5f, lr %.5g, %.1f img/s",
                  (long long)(step / spe), (long long)step, loss, lr, ips);
        if (stop) {
            if (tty) fputs("\n", stderr);
            logf_(&f, "interrupted at step %lld: checkpoint written to %s; rerun the same command to continue",
                  (long long)step, f.ckpt);
            rep->interrupted = 1;
            break;
        }
    }
    if (tty) fputs("\r\033[K", stderr);
    rep->last_step = step;
    rep->last_loss = loss;
    rep->seconds = lt_now() - t_start;
    rep->img_per_s = (step - first) * (double)o->batch_size / (lt_now() - t0);
    rep->data_wait_s = lt_loader_wait_seconds(loader);
    if (!rep->interrupted)
        logf_(&f, "done: steps %lld..%lld of %lld, final loss %.5f, %.1f img/s (waited %.1f s for "
              "data); student written to %s",
              (long long)first, (long long)step, (long long)total, loss, rep->img_per_s,
              rep->data_wait_s, f.student);
    rc = rep->interrupted ? LT_EXIT_INTERRUPTED : LT_EXIT_OK;
done:
    lt_loader_free(loader);
    trainer_free(&tr);
    lt_cache_close(cache);
    files_free(&f);
    free(saved_args);
    return rc;
}
