/* train.h: the lt-train pipeline: cache -> loader -> ResNet student + projection head -> L2 norm
 * -> queue + KL loss -> clipping -> LARS/AdamW/SGD with the warmup-cosine schedule, with
 * checkpoints, resume, metrics (metrics.jsonl and a TensorBoard event file) and the
 * torchvision-named export. The tool (tools/train) only parses arguments; all work is here.
 * docs/architecture.md §1 is the method, §3 the outputs. */
#ifndef LT_TRAIN_H
#define LT_TRAIN_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "train/comm.h"
#include "data/image_pool.h"
#include "train/optim.h"

/* Above this many epochs per cached view (E/V) lt-train warns: each view is a fixed teacher
 * target, and a student shown the same targets more often than this starts to fit them (a study
 * of the method on Fashion-MNIST kept 77 % of the distillation gain at E/V 19 and 20 % at 150,
 * against 91 % at 4.7, as much as a teacher run online; lt's own run of it with a teacher of the
 * same strength, docs/views-study-strong.md, kept 74 % at E/V 19 and 90 % at 4.7). */
#define LT_EPOCHS_PER_VIEW_MAX 10.0

typedef struct {
    const char *cache_path;
    const char *out_dir;        /* "out" */
    const char *student;        /* "resnet18", "resnet34", "resnet50" */
    const char *device;         /* "auto", "cpu" or "cuda": the backend (nn/backend.h) */
    int precision;              /* -1: not given (fp32); else lt_precision, for a GPU backend */
    const char *init_path;      /* --init: torchvision-named weights, or NULL */
    double epochs;              /* 100 */
    int64_t steps;              /* --steps: stop after this global step (0 = run the schedule) */
    int batch_size;             /* 0: min(128, the largest power of two <= the cache's images) */
    lt_opt_kind optimizer;      /* LARS */
    double lr;                  /* < 0: the optimizer's default rule */
    double momentum;            /* < 0: default (0.9) */
    double weight_decay;        /* < 0: default (LARS/SGD 1e-6, AdamW 0) */
    double warmup_epochs;       /* < 0: min(10, epochs / 10) */
    double clip_grad;           /* 1.0; 0 = off */
    double temperature;         /* 0.07 */
    int64_t queue_size;         /* 0: auto */
    uint64_t seed;              /* 0 */
    int threads;                /* 0: all cores */
    int workers;                /* loader threads; 0: automatic */
    lt_pool_kind image_pool;    /* --image-pool: where the decoded images live (auto) */
    int64_t pool_memory;        /* --pool-memory: the pool's budget in bytes per process; 0: half
                                   of MemAvailable, divided among the processes on the machine */
    int shuffle;                /* 1 */
    int tensorboard;            /* 1: TensorBoard event file OUT/events.out.tfevents.* (0:
                                   --no-tensorboard) */
    const char *eval_data;      /* --eval-data: labelled folder scored by kNN during the run, or
                                   NULL (train/knn_monitor.h) */
    double eval_every;          /* epochs between scores; 0: epochs / 10, at least 1 */
    int eval_image_size;        /* 0: the cache's image size */
    int eval_knn_k;             /* 20 */
    int resume, overwrite;
    int64_t checkpoint_every;   /* steps; 0: every epoch */
    double verify;              /* --verify: fraction of images whose stored bytes are checked
                                   against /images/sha256 before training (0 = off, 1 = all) */
    volatile sig_atomic_t *stop;/* set by SIGINT/SIGTERM: finish the step, checkpoint, stop */
    char *const *continue_argv; /* the command that continues this run once it has a checkpoint
                                   (this one without --overwrite), NULL-terminated; NULL: unknown */
    lt_comm *comm;              /* data parallel (mpirun -np P): the run's processes, each
                                   training on batch_size/P rows of every batch; rank 0 alone
                                   writes OUT. NULL: one process (docs/architecture.md §7) */
} lt_train_opts;

typedef struct {
    int64_t first_step, last_step; /* steps run: [first_step, last_step) */
    int64_t total_steps;           /* scheduled */
    double last_loss;
    double img_per_s;
    double data_wait_s, seconds;
    double knn_top1;               /* the last --eval-data score, or -1 */
    int interrupted;
    int reported_elsewhere;        /* data parallel: this process's error or interruption is
                                      reported by rank 0 (it hit the same one): say nothing */
} lt_train_report;

void lt_train_defaults(lt_train_opts *o);
/* Returns LT_EXIT_OK, LT_EXIT_ERROR (lt_err holds the message), LT_EXIT_USAGE (an option that
 * does not fit the cache, e.g. the queue size) or LT_EXIT_INTERRUPTED. */
int lt_train_run(const lt_train_opts *o, lt_train_report *rep);
/* How to continue an interrupted run, for its message: "rerun the same command to continue", or
 * with --overwrite "... continue with: CMD", CMD from continue_argv. */
void lt_train_continue_hint(const lt_train_opts *o, char *buf, size_t n);

#endif
