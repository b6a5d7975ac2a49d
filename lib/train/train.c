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

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/cli.h"
#include "core/error.h"
#include "core/fileio.h"
#include "core/log.h"
#include "core/rng.h"
#include "core/sha256.h"
#include "core/tfevents.h"
#include "core/threads.h"
#include "core/version.h"
#include "data/cache.h"
#include "image/render_cuda.h"
#include "models/resnet.h"
#include "nn/backend.h"
#include "nn/kd.h"
#include "train/cache_identity.h"
#include "train/checkpoint.h"
#include "train/knn_monitor.h"
#include "train/loader.h"
#include "train/step.h"

void lt_train_defaults(lt_train_opts *o) {
    memset(o, 0, sizeof *o);
    o->out_dir = "out";
    o->student = "resnet18";
    /* cpu, not auto, until the CUDA student has passed a device check (docs/cuda.md) */
    o->device = "cpu";
    o->precision = -1;
    o->epochs = 100;
    o->batch_size = 0; /* min(128, a power of two <= N) */
    o->optimizer = LT_OPT_LARS;
    o->lr = -1;
    o->momentum = -1;
    o->weight_decay = -1;
    o->warmup_epochs = -1;
    o->clip_grad = 1.0;
    o->temperature = 0.07;
    o->shuffle = 1;
    o->tensorboard = 1;
    o->eval_knn_k = 20;
}

static const char *plural(double n) { return n == 1 ? "" : "s"; }

/* n with thousands separators: 1234567 -> "1,234,567". */
static void grouped(int64_t n, char *buf, size_t size) {
    char d[32];
    int len = snprintf(d, sizeof d, "%lld", (long long)n);
    size_t j = 0;
    for (int i = 0; i < len && j + 1 < size; i++) {
        if (i > 0 && d[i - 1] != '-' && (len - i) % 3 == 0 && j + 2 < size) buf[j++] = ',';
        buf[j++] = d[i];
    }
    buf[j] = 0;
}

/* ---- the run's files ---- */

typedef struct {
    char *dir, *ckpt_dir, *ckpt, *student, *metrics, *log;
    FILE *metrics_f, *log_f;
    /* TensorBoard: this run's event file (OUT/events.out.tfevents.<seconds>.<host>, or the one a
     * resumed run continues), the base name of its temporaries (OUT/events: a temporary must not
     * hold "tfevents", or TensorBoard would read it), the event files OUT held at the start
     * (sorted), and the stream of scalars (NULL with --no-tensorboard) */
    char *events, *events_tmp;
    char **events_old;
    int n_events_old;
    FILE *events_f;
    /* pending: OUT holds an earlier run that this one replaces at its first checkpoint; until then
     * the metrics and log lines and the events go to memory (mem_*) and the earlier files stay as
     * they are */
    int pending;
    char *mem_metrics, *mem_log, *mem_events;
    size_t mem_metrics_n, mem_log_n, mem_events_n;
    int64_t ckpt_step; /* step of this run's checkpoint in OUT (resumed from or written), or -1 */
} run_files;

/* The program named in the first record of lt-train's event files (lib/core/tfevents.h). */
#define EVENTS_WRITER "lt-train"

static int files_init(run_files *f, const char *out) {
    memset(f, 0, sizeof *f);
    f->ckpt_step = -1;
    f->dir = strdup(out);
    f->ckpt_dir = lt_path_join(out, "checkpoints");
    f->ckpt = f->ckpt_dir ? lt_path_join(f->ckpt_dir, "last.safetensors") : NULL;
    f->student = lt_path_join(out, "student.safetensors");
    f->metrics = lt_path_join(out, "metrics.jsonl");
    f->log = lt_path_join(out, "train.log");
    f->events_tmp = lt_path_join(out, "events");
    if (!f->dir || !f->ckpt || !f->student || !f->metrics || !f->log || !f->events_tmp)
        return lt_err_set("out of memory");
    return 0;
}

static void files_free(run_files *f) {
    if (f->metrics_f) fclose(f->metrics_f);
    if (f->log_f) fclose(f->log_f);
    if (f->events_f) fclose(f->events_f); /* the events of the steps since the last checkpoint */
    free(f->mem_metrics);
    free(f->mem_log);
    free(f->mem_events);
    for (int i = 0; i < f->n_events_old; i++) free(f->events_old[i]);
    free(f->events_old);
    free(f->events);
    free(f->events_tmp);
    free(f->dir);
    free(f->ckpt_dir);
    free(f->ckpt);
    free(f->student);
    free(f->metrics);
    free(f->log);
}

/* Opens metrics.jsonl and train.log for appending, or, while pending, memory streams. */
static int files_open(run_files *f) {
    if (f->pending) {
        f->metrics_f = open_memstream(&f->mem_metrics, &f->mem_metrics_n);
        f->log_f = open_memstream(&f->mem_log, &f->mem_log_n);
        if (!f->metrics_f || !f->log_f) return lt_err_set("out of memory");
        return 0;
    }
    f->metrics_f = fopen(f->metrics, "a");
    f->log_f = fopen(f->log, "a");
    if (!f->metrics_f || !f->log_f)
        return lt_err_set("%s: cannot write: %s", f->metrics_f ? f->log : f->metrics,
                          strerror(errno));
    return 0;
}

/* At the first checkpoint of a run that replaces an earlier one: the earlier checkpoint and
 * student go (the checkpoint first, so that a kill in between leaves no checkpoint beside the new
 * metrics), the lines kept in memory become metrics.jsonl and train.log. */
static int replace_earlier_run(run_files *f) {
    fclose(f->metrics_f);
    fclose(f->log_f);
    f->metrics_f = f->log_f = NULL;
    f->pending = 0;
    const char *gone[] = {f->ckpt, f->student};
    for (int i = 0; i < 2; i++)
        if (unlink(gone[i]) != 0 && errno != ENOENT)
            return lt_err_set("%s: cannot remove the earlier run's file: %s", gone[i],
                              strerror(errno));
    if (lt_write_file_atomic(f->metrics, f->mem_metrics, f->mem_metrics_n) != 0 ||
        lt_write_file_atomic(f->log, f->mem_log, f->mem_log_n) != 0)
        return -1;
    if (f->events_f) { /* this run's events so far, then the earlier run's event files go */
        fclose(f->events_f);
        f->events_f = NULL;
        lt_atomic_file af;
        if (lt_atomic_open_named(&af, f->events, f->events_tmp) != 0) return -1;
        if (lt_write_all(af.fd, f->mem_events, f->mem_events_n) != 0) {
            lt_err_set("%s: write failed: %s", af.tmp, strerror(errno));
            lt_atomic_discard(&af);
            return -1;
        }
        if (lt_atomic_commit(&af) != 0) return -1;
        if (!(f->events_f = fopen(f->events, "ab")))
            return lt_err_set("%s: cannot write: %s", f->events, strerror(errno));
    }
    for (int i = 0; i < f->n_events_old; i++) /* all but the one just written under its name */
        if (!(f->events_f && !strcmp(f->events_old[i], f->events)) &&
            unlink(f->events_old[i]) != 0 && errno != ENOENT)
            return lt_err_set("%s: cannot remove the earlier run's file: %s", f->events_old[i],
                              strerror(errno));
    return files_open(f);
}

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

/* ---- TensorBoard event files (docs/architecture.md §3) ---- */

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Lists the files of OUT that TensorBoard reads as event files (a name holding "tfevents"),
 * sorted by name: the earlier runs' ones, which this run continues, replaces or refuses. */
static int find_event_files(run_files *f) {
    DIR *d = opendir(f->dir);
    if (!d) return errno == ENOENT ? 0 : lt_err_set("%s: cannot read: %s", f->dir, strerror(errno));
    struct dirent *e;
    int cap = 0, rc = 0;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (!strstr(e->d_name, "tfevents")) continue;
        char *p = lt_path_join(f->dir, e->d_name);
        struct stat st;
        if (!p || stat(p, &st) != 0 || !S_ISREG(st.st_mode)) {
            free(p);
            continue;
        }
        if (f->n_events_old == cap) {
            char **g = realloc(f->events_old, (size_t)(cap = 2 * cap + 4) * sizeof *g);
            if (!g) {
                free(p);
                rc = lt_err_set("out of memory");
                break;
            }
            f->events_old = g;
        }
        f->events_old[f->n_events_old++] = p;
    }
    closedir(d);
    if (f->n_events_old > 1) qsort(f->events_old, (size_t)f->n_events_old, sizeof(char *), by_name);
    return rc;
}

/* -1 naming an event file of OUT that lt-train did not write (an empty one, which a kill can
 * leave before the first record reaches the disk, is taken as its own: nothing in it is lost). */
static int check_own_event_files(const run_files *f) {
    for (int i = 0; i < f->n_events_old; i++) {
        struct stat st;
        if (stat(f->events_old[i], &st) == 0 && st.st_size == 0) continue;
        int ours = lt_tfevents_written_by(f->events_old[i], EVENTS_WRITER);
        if (ours < 0) return -1;
        if (!ours)
            return lt_err_set("%s is a TensorBoard event file that lt-train did not write; a run "
                              "in this folder would replace it: move it away, choose another "
                              "--out, or pass --overwrite to replace it", f->events_old[i]);
    }
    return 0;
}

/* This run's event file: the last one of OUT when a resumed run continues, else a new name as
 * TensorBoard's own writers give it, events.out.tfevents.<unix seconds>.<host>. */
static int choose_event_file(run_files *f, int resume) {
    if (resume && f->n_events_old > 0) {
        f->events = strdup(f->events_old[f->n_events_old - 1]);
        return f->events ? 0 : lt_err_set("out of memory");
    }
    char host[256] = "localhost", name[320];
    if (gethostname(host, sizeof host) != 0 || !host[0]) snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = 0;
    for (char *c = host; *c; c++)
        if (*c == '/') *c = '_';
    snprintf(name, sizeof name, "events.out.tfevents.%lld.%s", (long long)time(NULL), host);
    f->events = lt_path_join(f->dir, name);
    return f->events ? 0 : -1;
}

/* A resumed run keeps the events of the steps up to its checkpoint, as it does the metrics
 * lines: the steps after it are run again and must not show twice. */
static int truncate_events(const run_files *f, int64_t step) {
    for (int i = 0; i < f->n_events_old; i++) {
        int64_t dropped, tail;
        if (lt_tfevents_keep_until(f->events_old[i], step, f->events_tmp, &dropped, &tail) != 0)
            return -1;
        if (dropped || tail)
            lt_debug("%s: dropped the events of %lld step%s after the checkpoint's step %lld%s",
                     f->events_old[i], (long long)dropped, plural((double)dropped),
                     (long long)step, tail ? " and the torn record a killed write left" : "");
    }
    return 0;
}

/* Opens this run's event stream: memory while pending, else the file for appending, begun with
 * the version record (flushed at once) when it is new or empty. */
static int events_open(run_files *f) {
    struct stat st;
    int fresh = f->pending || stat(f->events, &st) != 0 || st.st_size == 0;
    f->events_f = f->pending ? open_memstream(&f->mem_events, &f->mem_events_n)
                             : fopen(f->events, "ab");
    if (!f->events_f) return lt_err_set("%s: cannot write: %s", f->events, strerror(errno));
    if (fresh && (lt_tfevents_write_version(f->events_f, EVENTS_WRITER) != 0 ||
                  fflush(f->events_f) != 0))
        return lt_err_set("%s: cannot write: %s", f->events, strerror(errno));
    return 0;
}

/* Puts the events written so far on the disk: before each checkpoint, so that a killed run
 * keeps the events of every step its checkpoint holds. */
static int events_flush(run_files *f) {
    if (!f->events_f || f->pending) return 0;
    if (fflush(f->events_f) != 0 || fsync(fileno(f->events_f)) != 0)
        return lt_err_set("%s: cannot write: %s", f->events, strerror(errno));
    return 0;
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

/* A line to stderr (info, or a warning) and, whatever the verbosity, to train.log. */
static void vlog_(run_files *f, int warn, const char *fmt, va_list ap) {
    char buf[8192];
    vsnprintf(buf, sizeof buf, fmt, ap);
    if (warn) lt_warn("%s", buf);
    else lt_info("%s", buf);
    if (f->log_f) {
        time_t now = time(NULL);
        char ts[32];
        strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
        char esc[4 * sizeof buf];
        fprintf(f->log_f, "%s %s%s\n", ts, warn ? "warning: " : "",
                lt_str_escape(buf, esc, sizeof esc));
        fflush(f->log_f);
    }
}

static void logf_(run_files *f, const char *fmt, ...) LT_PRINTF(2, 3);
static void logf_(run_files *f, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vlog_(f, 0, fmt, ap);
    va_end(ap);
}

static void warnf_(run_files *f, const char *fmt, ...) LT_PRINTF(2, 3);
static void warnf_(run_files *f, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vlog_(f, 1, fmt, ap);
    va_end(ap);
}

/* ---- the student (lib/train/step.c) ---- */

static int student_init(lt_student *st, lt_backend *be, const lt_train_opts *o,
                        const lt_cache_meta *m, int Q, int B) {
    lt_optim_config cfg = lt_optim_defaults(o->optimizer);
    if (o->momentum >= 0) cfg.momentum = o->momentum;
    if (o->weight_decay >= 0) cfg.weight_decay = o->weight_decay;
    return lt_student_init(st, be, o->student, B, m->image_size, m->embed_dim, Q,
                           o->seed, &cfg, m->transform.mean, m->transform.std);
}

static lt_train_state state_of(lt_student *t) {
    return (lt_train_state){.model = t->model, .head_w = t->head_w, .head_b = t->head_b,
                            .D = t->D, .optim = &t->optim, .queue = &t->queue};
}

/* buf (n floats in be's memory) = rank 0's, through a host copy (tmp: n floats) */
static int bcast_floats(lt_comm *c, lt_backend *be, float *buf, int64_t n, float *tmp) {
    size_t bytes = (size_t)n * sizeof(float);
    if (!buf || n == 0) return 0;
    return be->download(be, tmp, buf, bytes) || c->bcast(c, tmp, bytes) ||
                   be->upload(be, buf, tmp, bytes)
               ? -1
               : 0;
}

/* Data parallel on GPUs: every process's backend is on a GPU, and the gradients are then averaged
 * GPU to GPU over NCCL (train/comm.h lt_comm_nccl_open): *comm becomes that communicator (its host
 * collectives are the old one's), for the step too; *made is set to it (the caller destroys it).
 * All processes call this at the same point and fail together (-1 + lt_err; *own: this process's
 * own part failed, so it should say why, not only rank 0). LT_NCCL=1 in the
 * environment takes the NCCL path even for one process on a GPU (to check it against the plain
 * run: the mean over one process must change nothing). */
static int gpu_collectives(lt_comm **comm, lt_backend *be, lt_student *tr, lt_comm **made,
                           int *own) {
    lt_comm *c = *comm;
    *own = 0; /* a failure the same on every process: rank 0 says it */
    double on_gpu = be->mem == LT_MEM_DEVICE ? 1 : 0;
    const char *force = getenv("LT_NCCL");
    if (c->size < 2 && !(force && !strcmp(force, "1") && on_gpu > 0)) return 0;
    if (c->sum_f64(c, &on_gpu, 1) != 0) return -1;
    if (on_gpu == 0) return 0;
    if (on_gpu < c->size)
        return lt_err_set("data parallel: %d of %d processes train on a GPU; give every process "
                          "a GPU, or use --device cpu", (int)on_gpu, c->size);
    lt_comm *nc = lt_comm_nccl_open(c, be->stream, own);
    if (!nc) return -1;
    *made = *comm = nc;
    if (c->size < 2) { /* forced: set up as for P > 1 */
        *own = 1;
        return lt_student_data_parallel(tr, nc);
    }
    tr->comm = nc;
    return 0;
}

/* Data parallel: every process takes rank 0's state (weights, running statistics, head, queue,
 * optimizer state, step, epoch), which rank 0 alone restored from a checkpoint or --init. */
static int bcast_state(lt_comm *c, lt_student *t, int64_t *step, int64_t *epoch) {
    if (c->size == 1) return 0;
    lt_backend *be = t->be;
    const lt_resnet *m = t->model;
    int64_t most = m->n_params > m->n_buffers ? m->n_params : m->n_buffers;
    if ((int64_t)t->queue.Q * t->D > most) most = (int64_t)t->queue.Q * t->D;
    if ((int64_t)t->D * t->C > most) most = (int64_t)t->D * t->C;
    float *tmp = lt_malloc((size_t)most * sizeof(float), "state broadcast");
    if (!tmp) return -1;
    int64_t ints[3] = {*step, *epoch, t->optim.step};
    int rc = c->bcast(c, ints, sizeof ints) || c->bcast(c, m->nbt, (size_t)m->n_bn * 8) ||
             bcast_floats(c, be, m->params, m->n_params, tmp) ||
             bcast_floats(c, be, m->buffers, m->n_buffers, tmp) ||
             bcast_floats(c, be, t->head_w, (int64_t)t->D * t->C, tmp) ||
             bcast_floats(c, be, t->head_b, t->D, tmp) ||
             bcast_floats(c, be, t->queue.data, (int64_t)t->queue.Q * t->D, tmp);
    for (int i = 0; rc == 0 && i < t->optim.nparams; i++) {
        const lt_param *p = &t->optim.params[i];
        rc = bcast_floats(c, be, p->m, p->n, tmp) || bcast_floats(c, be, p->v, p->n, tmp);
    }
    free(tmp);
    *step = ints[0];
    *epoch = ints[1];
    t->optim.step = ints[2];
    return rc ? -1 : 0;
}

#define EVAL_BATCH 32 /* images per forward pass of the --eval-data model */

/* ---- arguments that a resumed run must share ---- */

static void args_json(const lt_train_opts *o, const lt_cache_meta *m, int64_t N, int Q, double lr,
                      const char *identity, const char *init, char *buf, size_t n) {
    snprintf(buf, n,
             "{\"student\": \"%s\", \"epochs\": %.17g, \"batch_size\": %d, \"optimizer\": \"%s\", "
             "\"lr\": %.17g, \"momentum\": %.17g, \"weight_decay\": %.17g, \"warmup_epochs\": %.17g, "
             "\"clip_grad\": %.17g, \"temperature\": %.17g, \"queue_size\": %d, \"seed\": %llu, "
             "\"shuffle\": %d, \"cache_images\": %lld, \"cache_views\": %d, \"cache_seed\": %llu, "
             "\"teacher_sha256\": \"%s\", \"cache_identity\": \"%s\", \"epochs_per_view\": %.17g, "
             "\"init\": \"%s\", \"version\": \"%s\"}",
             o->student, o->epochs, o->batch_size, lt_opt_kind_name(o->optimizer), lr, o->momentum,
             o->weight_decay, o->warmup_epochs, o->clip_grad, o->temperature, Q,
             (unsigned long long)o->seed, o->shuffle, (long long)N, m->views_per_image,
             (unsigned long long)m->seed, m->teacher.sha256, identity,
             o->epochs / m->views_per_image, init, LT_VERSION);
}

/* Compares the saved arguments with this run's, field by field; names the first difference. */
static int check_resume_args(const char *saved, const char *now, const char *ckpt,
                             const char *cache) {
    const char *a = saved, *b = now;
    while (*a && *b) {
        const char *ka = strchr(a, '"'), *kb = strchr(b, '"');
        if (!ka || !kb) break;
        const char *ea = strpbrk(ka + 1, ",}"), *eb = strpbrk(kb + 1, ",}");
        const char *ca = strchr(ka, ':'), *cb = strchr(kb, ':');
        if (!ea || !eb || !ca || !cb || ca > ea || cb > eb) break;
        int kla = (int)(ca - ka), klb = (int)(cb - kb);
        if (kla != klb || strncmp(ka, kb, (size_t)kla) != 0)
            return lt_err_set("%s was written by a run with different settings: it records no "
                              "%.*s (written by another version of lt-train?); start over with "
                              "--overwrite", ckpt, klb, kb);
        if ((ea - ka) != (eb - kb) || strncmp(ka, kb, (size_t)(ea - ka)) != 0) {
            char hint[1024] = "";
            if (kla == 16 && !strncmp(ka, "\"cache_identity\"", 16))
                snprintf(hint, sizeof hint, " (%s holds other images or views than the cache "
                         "that run was trained on)", cache);
            else if (kla == 8 && !strncmp(ka, "\"epochs\"", 8))
                snprintf(hint, sizeof hint, " (to train a run longer, start a new one from its "
                         "checkpoint: --init %s --out NEW_DIR)", ckpt);
            return lt_err_set("%s was written by a run with different settings: %.*s was %.*s, "
                              "now %.*s%s; rerun with the original settings, or start over "
                              "with --overwrite",
                              ckpt, kla, ka, (int)(ea - (ca + 2)), ca + 2, (int)(eb - (cb + 2)),
                              cb + 2, hint);
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
    /* the epoch that step (1-based) belongs to: step spe*k ends epoch k */
    int64_t ep = (step - 1) / spe + 1, last_ep = (int64_t)ceil(epochs);
    fprintf(stderr, "%slt-train: epoch %lld/%g step %lld/%lld loss %.5f lr %.5g %.1f img/s ETA %s%s",
            tty ? "\r\033[K" : "", (long long)(ep < last_ep ? ep : last_ep), epochs,
            (long long)step, (long long)total, loss, lr, ips, etab, tty ? "" : "\n");
    fflush(stderr);
}

/* ---- the run ---- */

/* Lines lt-train writes: metrics.jsonl holds JSON objects that begin with the step; train.log
 * lines begin with a UTC timestamp, and its first line is a run's header. */
static int metrics_line(const char *l, int first) {
    (void)first;
    return !strncmp(l, "{\"step\": ", 9);
}

static int log_line(const char *l, int first) {
    static const char ts[] = "dddd-dd-ddTdd:dd:ddZ ";
    for (int i = 0; ts[i]; i++)
        if (ts[i] == 'd' ? !isdigit((unsigned char)l[i]) : l[i] != ts[i]) return 0;
    return !first || !strncmp(l + 21, "training:", 9) || !strncmp(l + 21, "resuming a run:", 15);
}

/* -1 naming path when it exists and a line of it is not one lt-train writes: a run replaces or
 * truncates its own metrics.jsonl and train.log, never a file of the user's. */
static int check_own_file(const char *path, int (*ours)(const char *, int)) {
    FILE *in = fopen(path, "r");
    if (!in) return errno == ENOENT ? 0 : lt_err_set("%s: cannot read: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    long long k = 0;
    int rc = 0;
    ssize_t len;
    while (rc == 0 && (len = getline(&line, &cap, in)) > 0)
        if (line[len - 1] == '\n' && !ours(line, ++k == 1)) /* a torn last line is ours too */
            rc = lt_err_set("%s was not written by lt-train (line %lld is not one of its lines); "
                            "a run in this folder would replace it: move it away, choose another "
                            "--out, or pass --overwrite to replace it", path, k);
    free(line);
    fclose(in);
    return rc;
}

/* Decides how this run starts in OUT, reading only. *resume is set when OUT holds a checkpoint
 * and neither --overwrite nor a fresh start was asked for: rerunning the command of an
 * interrupted or killed run continues it (the checkpoint's saved arguments must then match, see
 * check_resume_args). Without a checkpoint, metrics.jsonl/train.log alone are what a run killed
 * before its first checkpoint leaves: they are restarted. A student file without a checkpoint is
 * another run's result and is refused, and so are a metrics.jsonl or train.log that lt-train did
 * not write, and so are event files (a name holding "tfevents") that it did not write. A fresh
 * run in an OUT that holds any of these files replaces them only at its first checkpoint
 * (f->pending). */
static int inspect_out(const lt_train_opts *o, run_files *f, int *resume) {
    int has_ckpt = exists(f->ckpt);
    *resume = !o->overwrite && (o->resume || has_ckpt);
    if (o->resume && !has_ckpt)
        return lt_err_set("--resume: no checkpoint %s to resume from", f->ckpt);
    if (!*resume && !o->overwrite && exists(f->student))
        return lt_err_set("%s already holds a student (%s) but no checkpoint to continue from; "
                          "pass --overwrite to start over", o->out_dir, f->student);
    if (find_event_files(f) != 0) return -1;
    if (!o->overwrite &&
        (check_own_file(f->metrics, metrics_line) != 0 || check_own_file(f->log, log_line) != 0 ||
         check_own_event_files(f) != 0))
        return -1;
    f->pending = !*resume && (has_ckpt || exists(f->student) || exists(f->metrics) ||
                              exists(f->log) || f->n_events_old > 0);
    return choose_event_file(f, *resume);
}

/* Removes NAME.tmp.PID files in dir that a write of lt-train's files (names) left when its
 * process was killed: only where no process PID runs (a live one may be writing it now). */
static void remove_stale_temporaries(const char *dir, const char *const *names) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        for (int i = 0; names[i]; i++) {
            size_t n = strlen(names[i]);
            if (strncmp(e->d_name, names[i], n) != 0 || strncmp(e->d_name + n, ".tmp.", 5) != 0)
                continue;
            const char *p = e->d_name + n + 5;
            char *end;
            long pid = strtol(p, &end, 10);
            if (!isdigit((unsigned char)*p) || *end || pid <= 0 || pid == (long)getpid() ||
                pid > INT32_MAX)
                continue;
            if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
            char *path = lt_path_join(dir, e->d_name);
            if (path && unlink(path) == 0)
                lt_debug("removed %s, left by a write of process %ld, which no longer runs", path,
                         pid);
            free(path);
        }
    }
    closedir(d);
}

/* The likely cause of a non-finite loss at this step, for the message. */
static void nonfinite_cause(const lt_train_opts *o, lt_cache *cache, const lt_batch *b,
                            int first_of_init, char *buf, size_t n) {
    for (int i = 0; i < b->B; i++)
        for (int d = 0; d < b->D; d++)
            if (!isfinite(b->t[(int64_t)i * b->D + d])) {
                int64_t s = b->sample[i], V = lt_cache_meta_of(cache)->views_per_image;
                snprintf(buf, n, "the teacher embedding of sample %lld (image %lld, %s) in %s is "
                         "not finite: the cache is damaged, or its teacher gave NaN; rebuild it "
                         "with lt-embed --overwrite", (long long)s, (long long)(s / V),
                         lt_cache_image_path(cache, s / V), o->cache_path);
                return;
            }
    if (first_of_init)
        snprintf(buf, n, "the --init weights (%s) make the student's outputs overflow at the "
                 "first step: check that file", o->init_path);
    else
        snprintf(buf, n, "the training diverged: start over (--overwrite) with a lower --lr%s",
                 o->clip_grad > 0 ? "" : " or with --clip-grad");
}

/* --verify: the SHA-256 of the stored bytes of a seeded sample of images against /images/sha256. */
static int verify_cache(lt_cache *cache, const lt_train_opts *o) {
    double t0 = lt_now();
    int64_t checked = 0;
    if (lt_cache_verify_images(cache, o->verify, o->seed, &checked) != 0) return -1;
    int64_t N = lt_cache_n_images(cache);
    lt_info("verified the stored bytes of %lld of %lld image%s against their SHA-256, and the "
            "recipes and teacher embeddings of their views against their checksums (%.1f s)",
            (long long)checked, (long long)N, plural((double)N), lt_now() - t0);
    return 0;
}

/* The batch size when --batch-size is not given: 128, or the largest power of two <= N. */
static int default_batch_size(int64_t N) {
    int B = 128;
    while (B > 1 && B > N) B /= 2;
    return B;
}

int lt_train_run(const lt_train_opts *opts, lt_train_report *rep) {
    memset(rep, 0, sizeof *rep);
    rep->knn_top1 = -1;
    double t_start = lt_now();
    lt_train_opts run_opts = *opts; /* with the batch size resolved */
    const lt_train_opts *o = &run_opts;
    /* data parallel: P processes; rank 0 (lead) alone reads and writes OUT */
    lt_comm *comm = o->comm ? o->comm : lt_comm_single();
    const int P = comm->size, lead = comm->rank == 0;
    int threads = lt_threads_set(o->threads > 0 || P == 1 ? o->threads
                                 : (lt_cpu_count() / comm->local_size > 0
                                        ? lt_cpu_count() / comm->local_size : 1));
    /* 1 while an agreement of the processes on the setup is pending (see `done`), 2 in the
     * training loop, where a process that fails must end them all */
    int phase = P > 1 ? 1 : 0;
    lt_cache *cache = NULL;
    lt_loader *loader = NULL;
    lt_image_pool *pool = NULL; /* the host image pool, or NULL (the stream kind) */
    uint8_t *dev_block = NULL;  /* --image-pool device: the pool's images in GPU memory */
    lt_render_gpu *rgpu = NULL; /* and the renderer's scratch */
    int64_t *img_rows = NULL;   /* (B, 2) a batch's image indices, for that renderer */
    lt_knn_monitor *mon = NULL; /* --eval-data */
    lt_student tr;
    memset(&tr, 0, sizeof tr);
    lt_backend *be = NULL;
    lt_comm *nccl_comm = NULL; /* data parallel on GPUs: comm, with collectives on the GPU */
    run_files f;
    char *saved_args = NULL;
    int rc = LT_EXIT_ERROR;
    if (files_init(&f, o->out_dir) != 0) goto done;

    /* Everything is checked before OUT is touched: the cache, the options against it, the
     * checkpoint to resume or the --init weights. */
    if (lt_cache_open(o->cache_path, &cache) != 0) goto done;
    const lt_cache_meta *m = lt_cache_meta_of(cache);
    int64_t N = lt_cache_n_images(cache);
    if (o->verify > 0 && verify_cache(cache, o) != 0) goto done;
    if (o->batch_size == 0) {
        run_opts.batch_size = default_batch_size(N) / P * P; /* a multiple of the processes */
        if (o->batch_size < 1) {
            lt_err_set("%s holds %lld image%s, fewer than the %d processes of this run: each "
                       "process needs at least one image of every batch", o->cache_path,
                       (long long)N, plural((double)N), P);
            rc = LT_EXIT_USAGE;
            goto done;
        }
        if (o->batch_size < 128 && lead)
            lt_info("--batch-size not given: using %d, the largest power of two up to the %lld "
                    "image%s of %s (the default 128 is larger)", o->batch_size, (long long)N,
                    plural((double)N), o->cache_path);
    } else if (o->batch_size > N) {
        lt_err_set("--batch-size %d is larger than the %lld image%s in %s (the last partial batch "
                   "of each epoch is dropped): pass --batch-size %lld or less, or leave it out",
                   o->batch_size, (long long)N, plural((double)N), o->cache_path, (long long)N);
        rc = LT_EXIT_USAGE;
        goto done;
    }
    if (o->batch_size % P != 0) {
        lt_err_set("--batch-size %d does not split over the %d processes of this run: pass a "
                   "multiple of %d (each process trains on batch-size/%d images of each batch)",
                   o->batch_size, P, P, P);
        rc = LT_EXIT_USAGE;
        goto done;
    }
    const int B_local = o->batch_size / P;
    int Q = (int)o->queue_size;
    if (o->queue_size > 0 && lt_queue_size_check(o->queue_size, N) != 0) {
        rc = LT_EXIT_USAGE;
        goto done;
    }
    if (o->queue_size == 0) { /* auto, under the rule of an explicit size: Q < N */
        Q = lt_queue_size_auto(N);
        if (Q >= N) Q = (int)N - 1;
        if (Q < 1) {
            lt_err_set("%s holds %lld image%s: the loss compares each batch with a queue of "
                       "teacher embeddings, which must be smaller than the number of images; "
                       "add images (lt-embed --append) to train", o->cache_path, (long long)N,
                       plural((double)N));
            goto done;
        }
    }
    int64_t spe = N / o->batch_size;
    int64_t total = (int64_t)floor(o->epochs * spe);
    if (total < 1) {
        lt_err_set("--epochs %g gives no optimizer step (%lld step%s per epoch)", o->epochs,
                   (long long)spe, plural((double)spe));
        rc = LT_EXIT_USAGE;
        goto done;
    }
    int64_t W = lt_sched_warmup_steps(spe, o->epochs, o->warmup_epochs);
    double base_lr = o->lr > 0 ? o->lr : lt_default_lr(o->optimizer, o->batch_size);
    int64_t last = o->steps > 0 && o->steps < total ? o->steps : total;
    int64_t ckpt_every = o->checkpoint_every > 0 ? o->checkpoint_every : spe;
    /* The image pool (data/image_pool.h): its kind is settled here, before any work; it is
     * decoded just before the loader starts. */
    const int64_t pool_need = lt_pool_decoded_bytes(cache);
    const int64_t pool_budget = o->pool_memory > 0 ? o->pool_memory
                                : lt_pool_default_budget() / comm->local_size;
    lt_pool_kind pool_kind = o->image_pool;
    char need_s[32], budget_s[32];
    lt_human_bytes((double)pool_need, need_s, sizeof need_s);
    lt_human_bytes((double)pool_budget, budget_s, sizeof budget_s);
    if (pool_kind == LT_POOL_HOST && pool_need > pool_budget) {
        lt_err_set("--image-pool host: the %lld images of %s take %s decoded (%lld bytes), more "
                   "than the pool's budget of %s (%lld bytes, %s): raise --pool-memory, or use "
                   "--image-pool stream to decode per view", (long long)N, o->cache_path, need_s,
                   (long long)pool_need, budget_s, (long long)pool_budget,
                   o->pool_memory > 0 ? "--pool-memory"
                   : comm->local_size > 1 ? "half of the available memory, divided among this "
                                            "machine's processes"
                                          : "half of the available memory");
        rc = LT_EXIT_USAGE;
        goto done;
    }
    const int pool_auto = pool_kind == LT_POOL_AUTO; /* settled once the backend is known */
    char identity[65] = "";
    double t_id = lt_now();
    if (lead && lt_cache_identity(cache, o->cache_path, identity) != 0) goto done;
    lt_debug("cache identity %s (%.2f s)", identity, lt_now() - t_id);

    int resume = 0;
    if (lead && inspect_out(o, &f, &resume) != 0) goto done;
    if (!(be = lt_backend_open_local(o->device, threads, comm->local_rank))) goto done;
    if (o->precision >= 0 && o->precision != LT_PREC_FP32 && /* fp32: every backend's default */
        lt_backend_cuda_set_precision(be, (lt_precision)o->precision) != 0) {
        rc = LT_EXIT_USAGE;
        goto done;
    }
    if (lead)
        lt_debug("training on %s%s", be->name,
                 be->mem == LT_MEM_DEVICE
                     ? (o->precision == LT_PREC_TF32   ? " (tf32 tensor cores)"
                        : o->precision == LT_PREC_BF16 ? " (bf16 activations, fp32 parameters)"
                                                       : " (fp32)")
                     : "");
    if (pool_auto)
        pool_kind = lt_pool_auto_kind(pool_need, pool_budget,
                                      be->mem == LT_MEM_DEVICE
                                          ? (int64_t)lt_render_gpu_free_memory()
                                          : 0);
    if (pool_kind == LT_POOL_DEVICE && be->mem != LT_MEM_DEVICE) {
        lt_err_set("--image-pool device keeps the decoded images in the training device's memory "
                   "and needs a GPU backend; this run trains on the %s (--device %s): use "
                   "--image-pool host, stream or auto", be->name, o->device);
        rc = LT_EXIT_USAGE;
        goto done;
    }
    if (student_init(&tr, be, o, m, Q, B_local) != 0 || lt_student_data_parallel(&tr, comm) != 0)
        goto done;
    int64_t eval_steps = 0; /* --eval-data: steps between kNN scores */
    int eval_size = o->eval_image_size > 0 ? o->eval_image_size : m->image_size;
    if (o->eval_data && lead) {
        if (!(mon = lt_knn_monitor_open(o->eval_data, be, tr.model, eval_size, EVAL_BATCH,
                                        o->eval_knn_k)))
            goto done;
        double every = o->eval_every > 0 ? o->eval_every : fmax(1.0, floor(o->epochs / 10));
        eval_steps = llround(every * spe) > 0 ? llround(every * spe) : 1;
    }
    lt_train_state st = state_of(&tr);
    char args[2048];
    /* --init is part of the run: a rerun continues only with the same weights file (by content) */
    char init[80] = "none";
    if (o->init_path && lead) {
        char sha[65];
        if (lt_sha256_file(o->init_path, sha) != 0) {
            lt_err_prefix("--init");
            goto done;
        }
        snprintf(init, sizeof init, "sha256:%s", sha);
    }
    args_json(o, m, N, Q, base_lr, identity, init, args, sizeof args);

    int64_t step = 0, epoch = 0;
    if (lead && resume) {
        if (lt_checkpoint_load(f.ckpt, &st, &step, &epoch, &saved_args) != 0) goto done;
        if (check_resume_args(saved_args, args, f.ckpt, o->cache_path) != 0) goto done;
        f.ckpt_step = step;
    } else if (lead && o->init_path && lt_init_from(o->init_path, &st) != 0) {
        goto done;
    }
    if (phase == 1) { /* every process is ready: all take rank 0's state */
        int r0 = 0, failed = lt_comm_agree(comm, 0, &r0);
        if (failed != 0) {
            if (failed > 0) rep->reported_elsewhere = 1; /* by the process that failed */
            phase = 0;
            goto done;
        }
        int own = 0;
        if (gpu_collectives(&comm, be, &tr, &nccl_comm, &own) != 0) { /* on every process */
            /* a process whose own part failed says why; rank 0 also says what it knows */
            if (!lead && !own) rep->reported_elsewhere = 1;
            phase = 0;
            goto done;
        }
        if (bcast_state(comm, &tr, &step, &epoch) != 0) {
            phase = 2; /* a broken collective: end every process */
            goto done;
        }
    } else {
        int own = 0;
        if (gpu_collectives(&comm, be, &tr, &nccl_comm, &own) != 0) /* LT_NCCL=1, one process */
            goto done;
    }
    int lcpu = lt_cpu_count() / comm->local_size;
    lt_loader_opts lo = {.cache = cache, .cache_path = o->cache_path,
                         .batch_size = o->batch_size, .part = comm->rank, .parts = P,
                         .workers = o->workers > 0 ? o->workers : (lcpu >= 8 ? lcpu / 4 : 1),
                         .prefetch = 2, .seed = o->seed, .shuffle = o->shuffle, .first_step = step,
                         .last_step = last,
                         .max_resident_bytes = ((int64_t)4 << 30) / comm->local_size};
    if (step < last) {
        char n_s[32];
        grouped(N, n_s, sizeof n_s);
        if (pool_kind == LT_POOL_HOST || pool_kind == LT_POOL_DEVICE) {
            /* every process pools every image: its rows of a batch change with the epoch order */
            if (lt_image_pool_build(cache, threads, lead, &pool) != 0) goto done;
            if (lead) {
                lt_info("image pool: %s, %s images decoded, %s of %s", lt_pool_kind_name(pool_kind),
                        n_s, need_s, pool_kind == LT_POOL_DEVICE ? "GPU memory" : budget_s);
                lt_debug("image pool: decoded in %.2f s on %d thread%s (%.0f images/s)",
                         pool->decode_s, pool->threads, plural(pool->threads),
                         pool->decode_s > 0 ? (double)N / pool->decode_s : 0.0);
            }
            if (pool_kind == LT_POOL_DEVICE) {
                /* the GPU renders each batch from its copy of the images (image/render_cuda.h);
                 * the loader only gathers recipes and teacher rows */
                if (lt_render_gpu_upload_block(pool->block, (size_t)pool->bytes, &dev_block) != 0 ||
                    lt_render_gpu_create(&rgpu) != 0) {
                    lt_err_prefix("--image-pool device");
                    goto done;
                }
                free(pool->block);
                pool->block = NULL;
                lo.recipes_only = 1;
            } else {
                lo.pool = pool;
            }
        } else {
            if (lead && o->image_pool == LT_POOL_STREAM)
                lt_info("image pool: stream (--image-pool stream), %s images decoded per view; "
                        "pooled they would take %s of %s budget", n_s, need_s, budget_s);
            else if (lead)
                lt_info("image pool: stream, %s images decoded per view: decoded they take %s, "
                        "over the %s budget (--pool-memory)", n_s, need_s, budget_s);
            /* a few recent images per worker, within 1/16 of the budget */
            lo.recent_bytes = pool_budget / 16 / lo.workers;
        }
        if (lt_loader_start(&lo, &loader) != 0) goto done;
    }

    /* OUT from here on: rank 0's alone */
    if (lead) {
        if (lt_mkdir_p(f.ckpt_dir) != 0) goto done;
        const char *out_names[] = {"student.safetensors", "metrics.jsonl", "train.log", "events",
                                   NULL};
        const char *ckpt_names[] = {"last.safetensors", NULL};
        remove_stale_temporaries(f.dir, out_names);
        remove_stale_temporaries(f.ckpt_dir, ckpt_names);
        if (resume && (truncate_metrics(f.metrics, step) != 0 || truncate_events(&f, step) != 0))
            goto done;
        if (files_open(&f) != 0) goto done;
        logf_(&f, "%s", resume ? "resuming a run:" : "training:");
        logf_(&f, "  cache      %s: %lld image%s x %d view%s, D=%d, %d px, teacher %s",
              o->cache_path, (long long)N, plural((double)N), m->views_per_image,
              plural(m->views_per_image), m->embed_dim, m->image_size, m->teacher.file);
        logf_(&f, "  student    %s (C=%d) + linear head %d -> %d, out %s", o->student, tr.C, tr.C,
              m->embed_dim, o->out_dir);
        logf_(&f, "  schedule   %g epoch%s x %lld step%s = %lld step%s of %d image%s (last "
              "partial batch dropped), warmup %lld step%s, %s", o->epochs, plural(o->epochs),
              (long long)spe, plural((double)spe), (long long)total, plural((double)total),
              o->batch_size, plural(o->batch_size), (long long)W, plural((double)W),
              o->shuffle ? "shuffled" : "not shuffled");
        logf_(&f, "  optimizer  %s, base lr %.6g, momentum %g, weight decay %g, clip %g",
              lt_opt_kind_name(o->optimizer), base_lr, tr.optim.cfg.momentum,
              tr.optim.cfg.weight_decay, o->clip_grad);
        logf_(&f, "  loss       queue %d, temperature %g", Q, o->temperature);
        const double epv = o->epochs / m->views_per_image; /* times each cached view is shown */
        logf_(&f, "  views      %d per image: each view is shown %.3g time%s (epochs per view, "
              "E/V)", m->views_per_image, epv, plural(epv));
        if (epv > LT_EPOCHS_PER_VIEW_MAX) {
            int want = (int)ceil(o->epochs / LT_EPOCHS_PER_VIEW_MAX);
            warnf_(&f, "%g epochs over %d view%s per image show each cached teacher target "
                   "%.3g times (E/V > %g): the student starts to fit fixed targets and loses part "
                   "of what distillation gives. %d views per image bring E/V to %g or less; add "
                   "them without recomputing anything: lt-embed --append --views %d DATA_DIR %s",
                   o->epochs, m->views_per_image, plural(m->views_per_image), epv,
                   LT_EPOCHS_PER_VIEW_MAX, want, LT_EPOCHS_PER_VIEW_MAX, want, o->cache_path);
        }
        char procs[96] = "";
        if (P > 1)
            snprintf(procs, sizeof procs, "%d processes (%d image%s of each batch) of ", P,
                     B_local, plural(B_local));
        logf_(&f, "  run        seed %llu, %s%d thread%s, checkpoint every %lld step%s%s",
              (unsigned long long)o->seed, procs, threads, plural(threads), (long long)ckpt_every,
              plural((double)ckpt_every), o->steps > 0 ? ", stopping early (--steps)" : "");
        if (o->tensorboard && step < last)
            logf_(&f, "  events     %s (tensorboard --logdir %s)", f.events, o->out_dir);
        if (mon) {
            char what[256];
            lt_knn_monitor_describe(mon, what, sizeof what);
            logf_(&f, "  eval       kNN top-1 (k %d) on %s (%s, %d px), every %lld step%s and at "
                  "the end", o->eval_knn_k, o->eval_data, what, eval_size, (long long)eval_steps,
                  plural((double)eval_steps));
        }
        if (resume) logf_(&f, "  resumed at step %lld (epoch %lld) from %s", (long long)step,
                             (long long)epoch, f.ckpt);
        if (f.pending)
            logf_(&f, "  replaces   the earlier run in %s at this run's first checkpoint",
                  o->out_dir);
        if (step < last && o->tensorboard && events_open(&f) != 0) goto done;
    } /* lead */
    if (phase == 1) { /* the loader of every process started, rank 0 opened OUT */
        int r0 = 0, failed = lt_comm_agree(comm, 0, &r0);
        if (failed != 0) {
            if (failed > 0) rep->reported_elsewhere = 1;
            phase = 0;
            goto done;
        }
        phase = 2;
    }

    rep->first_step = step;
    rep->total_steps = total;
    if (step >= last) {
        if (lead)
            logf_(&f, "nothing to do: step %lld of %lld already reached", (long long)step,
                  (long long)last);
        rep->last_step = step;
        rc = LT_EXIT_OK;
        goto done;
    }

    int tty = isatty(2) && lt_log_verbosity() >= 1;
    double t0 = lt_now(), t_last_print = 0, loss = 0, gnorm = 0, t_eval = 0;
    int64_t first = step;
    while (step < last) {
        lt_batch *b = lt_loader_next(loader);
        if (!b) goto done;
        double lr = base_lr * lt_sched_multiplier(step, total, W);
        double ts = lt_now();
        if (b->smp) { /* --image-pool device: the views are rendered into the student's input */
            if (b->B > tr.B) {
                lt_err_set("internal: a batch of %d rows for a student of %d", b->B, tr.B);
                goto done;
            }
            if (!img_rows && !(img_rows = lt_malloc((size_t)tr.B * 2 * sizeof *img_rows, "rows")))
                goto done;
            for (int i = 0; i < b->B; i++)
                img_rows[2 * i] = b->smp[i].image[0], img_rows[2 * i + 1] = b->smp[i].image[1];
            if (lt_render_gpu_pairs_resident(rgpu, dev_block, pool->offset, pool->width,
                                             pool->height, pool->n, b->smp, img_rows, b->B,
                                             m->image_size, tr.a, tr.b, be->stream) != 0)
                goto done;
        }
        if (lt_student_step(&tr, b->smp ? NULL : b->a, b->smp ? NULL : b->b, b->lambda, b->t, b->B,
                            o->temperature, o->clip_grad, lr, &loss, &gnorm) != 0)
            goto done;
        if (!isfinite(loss) || !isfinite(gnorm)) {
            char cause[1024], kept[1024];
            nonfinite_cause(o, cache, b, !resume && o->init_path && step == first, cause,
                            sizeof cause);
            if (f.ckpt_step >= 0)
                snprintf(kept, sizeof kept, "the last good checkpoint %s (step %lld) is kept",
                         f.ckpt, (long long)f.ckpt_step);
            else if (f.pending)
                snprintf(kept, sizeof kept, "no checkpoint of this run was written, and the "
                         "earlier run in %s is left as it was", o->out_dir);
            else
                snprintf(kept, sizeof kept, "no checkpoint was written");
            lt_err_set("%s at step %lld (loss %g, gradient norm %g); stopped: %s. Likely "
                       "cause: %s", isfinite(loss) ? "the gradient norm became non-finite"
                                                   : "the loss became non-finite",
                       (long long)step + 1, loss, gnorm, kept, cause);
            /* every process saw the same loss and norm and stops here: rank 0 says why */
            phase = 0;
            rep->reported_elsewhere = !lead;
            goto done;
        }
        lt_loader_release(loader, b);
        step++;
        epoch = step / spe;
        int stop = o->stop && *o->stop;
        if (P > 1) { /* every process stops at the same step; rank 0 writes its checkpoint */
            double any = stop;
            if (comm->sum_f64(comm, &any, 1) != 0) goto done;
            stop = any > 0;
        }
        if (!lead) {
            if (stop) {
                rep->interrupted = rep->reported_elsewhere = 1;
                break;
            }
            continue;
        }
        double now = lt_now();
        double ips = (step - first) * (double)o->batch_size / (now - t0 - t_eval);
        double wait = lt_loader_wait_seconds(loader);
        fprintf(f.metrics_f,
                "{\"step\": %lld, \"epoch\": %.4f, \"loss\": %.8g, \"lr\": %.8g, \"img_per_s\": %.3f, "
                "\"grad_norm\": %.6g, \"step_s\": %.4f, \"data_wait_s\": %.3f}\n",
                (long long)step, (double)step / spe, loss, lr, ips, gnorm, now - ts, wait);
        fflush(f.metrics_f);
        /* the same scalars for TensorBoard, tagged train/<key of metrics.jsonl>; one more is
         * one call: lt_tfevents_write_scalar(f.events_f, step, "eval/knn_top1", top1) */
        static const char *const tags[] = {"train/epoch", "train/loss", "train/lr",
                                           "train/img_per_s", "train/grad_norm", "train/step_s",
                                           "train/data_wait_s"};
        const double vals[] = {(double)step / spe, loss, lr, ips, gnorm, now - ts, wait};
        if (lt_tfevents_write_scalars(f.events_f, step, (int)(sizeof tags / sizeof *tags), tags,
                                      vals) != 0) {
            lt_err_prefix("%s", f.events);
            goto done;
        }
        if (lt_log_verbosity() >= 1 && (tty ? now - t_last_print > 0.2 : now - t_last_print > 10)) {
            print_progress(tty, step, total, spe, o->epochs, loss, lr, ips,
                           (last - step) * o->batch_size / (ips > 0 ? ips : 1));
            t_last_print = now;
        }
        if (mon && !stop && (step % eval_steps == 0 || step == last)) {
            double te = lt_now(), top1 = 0;
            if (lt_knn_monitor_score(mon, tr.model, &top1) != 0) {
                warnf_(&f, "--eval-data: %s; training goes on without scores", lt_err_msg());
                lt_knn_monitor_free(mon);
                mon = NULL;
            } else {
                double es = lt_now() - te;
                t_eval += es;
                rep->knn_top1 = top1;
                fprintf(f.metrics_f, "{\"step\": %lld, \"epoch\": %.4f, \"knn_top1\": %.6f, "
                        "\"eval_s\": %.3f}\n", (long long)step, (double)step / spe, top1, es);
                fflush(f.metrics_f);
                if (lt_tfevents_write_scalar(f.events_f, step, "eval/knn_top1", top1) != 0) {
                    lt_err_prefix("%s", f.events);
                    goto done;
                }
                if (tty) fputs("\r\033[K", stderr);
                logf_(&f, "step %lld (epoch %.4g): kNN top-1 %.4f on %s (%.1f s)", (long long)step,
                      (double)step / spe, top1, o->eval_data, es);
            }
        }
        if (step % ckpt_every == 0 || step == last || stop) {
            if (f.pending) {
                logf_(&f, "replacing the earlier run in %s", o->out_dir);
                if (replace_earlier_run(&f) != 0) goto done;
            }
            if (events_flush(&f) != 0 || lt_checkpoint_save(f.ckpt, &st, step, epoch, args) != 0 ||
                lt_export_student(f.student, &st) != 0)
                goto done;
            f.ckpt_step = step;
            if (tty) fputs("\r\033[K", stderr);
            lt_debug("checkpoint at step %lld", (long long)step);
        }
        if (step % spe == 0)
            logf_(&f, "epoch %lld done: step %lld, loss %.5f, lr %.5g, %.1f img/s",
                  (long long)(step / spe), (long long)step, loss, lr, ips);
        if (stop) {
            if (tty) fputs("\n", stderr);
            char how[4096];
            lt_train_continue_hint(o, how, sizeof how);
            logf_(&f, "interrupted at step %lld: checkpoint written to %s; %s", (long long)step,
                  f.ckpt, how);
            rep->interrupted = 1;
            break;
        }
    }
    if (tty) fputs("\r\033[K", stderr);
    rep->last_step = step;
    rep->last_loss = loss;
    rep->seconds = lt_now() - t_start;
    rep->img_per_s = (step - first) * (double)o->batch_size / (lt_now() - t0 - t_eval);
    rep->data_wait_s = lt_loader_wait_seconds(loader);
    if (!rep->interrupted && lead) {
        char steps[64];
        if (step == first + 1)
            snprintf(steps, sizeof steps, "step %lld", (long long)step);
        else
            snprintf(steps, sizeof steps, "steps %lld..%lld", (long long)first + 1,
                     (long long)step);
        char knn[64] = "";
        if (rep->knn_top1 >= 0) snprintf(knn, sizeof knn, ", kNN top-1 %.4f", rep->knn_top1);
        logf_(&f, "done: %s of %lld, final loss %.5f%s, %.1f img/s (waited %.1f s for data), "
              "%.3g epochs per view; student written to %s", steps, (long long)total, loss, knn,
              rep->img_per_s, rep->data_wait_s, o->epochs / m->views_per_image, f.student);
    }
    rc = rep->interrupted ? LT_EXIT_INTERRUPTED : LT_EXIT_OK;
done:
    if (rc != LT_EXIT_OK && rc != LT_EXIT_INTERRUPTED && phase == 1) {
        /* a failed setup: the other processes learn it at their next agreement */
        int r0 = 0;
        if (lt_comm_agree(comm, 1, &r0) > 0 && r0 && !lead) rep->reported_elsewhere = 1;
    } else if (rc != LT_EXIT_OK && rc != LT_EXIT_INTERRUPTED && phase == 2) {
        /* the others wait in a collective this process will not join: end them all (OUT holds
         * only files written atomically) */
        lt_error("%s", lt_err_msg());
        comm->abort(comm, rc);
    }
    lt_loader_free(loader);
    lt_render_gpu_free(rgpu); /* waits for its work on the backend's stream */
    lt_render_gpu_free_block(dev_block);
    free(img_rows);
    lt_image_pool_free(pool);
    lt_knn_monitor_free(mon);
    lt_student_free(&tr);
    if (nccl_comm) nccl_comm->destroy(nccl_comm);
    if (be) be->destroy(be);
    lt_cache_close(cache);
    files_free(&f);
    free(saved_args);
    return rc;
}

void lt_train_continue_hint(const lt_train_opts *o, char *buf, size_t n) {
    if (!o->overwrite) {
        snprintf(buf, n, "rerun the same command to continue");
        return;
    }
    char cmd[4096] = "the same command without --overwrite";
    if (o->continue_argv) lt_shell_join(o->continue_argv, cmd, sizeof cmd);
    snprintf(buf, n, "rerunning this command would start over (--overwrite); continue with: %s",
             cmd);
}
