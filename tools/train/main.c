/* lt-train: command line of the training tool. Parses and validates the options, runs the
 * pipeline of lib/train, reports. All logic lives in lib/. */
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/cli.h"
#include "core/error.h"
#include "core/fileio.h"
#include "core/lock.h"
#include "core/log.h"
#include "core/signals.h"
#include "core/version.h"
#include "data/cache_check.h"
#include "nn/blas_select.h"
#include "nn/simd.h"
#include "train/comm.h"
#include "train/train.h"

static void usage(FILE *f) {
    fputs(
        "Usage: lt-train [options] CACHE\n"
        "\n"
        "Distils the teacher embeddings of CACHE (made by lt-embed) into a ResNet student, with\n"
        "LightlyTrain's distillation method; re-renders exactly the views the teacher saw.\n"
        "Writes OUT/student.safetensors (torchvision key names), OUT/checkpoints/last.safetensors,\n"
        "OUT/metrics.jsonl, OUT/train.log and a TensorBoard event file\n"
        "OUT/events.out.tfevents.* (tensorboard --logdir OUT).\n"
        "\n"
        "Options:\n"
        "  --student NAME        resnet18 (default), resnet34 or resnet50\n"
        "  --out DIR             output folder (default out)\n"
        "  --epochs N            epochs of the schedule (default 100)\n"
        "  --steps N             stop after global step N (the schedule is unchanged)\n"
        "  --batch-size N        images per step (default 128, or the largest power of two up\n"
        "                        to the cache's images when that is smaller); the last partial\n"
        "                        batch is dropped\n"
        "  --optimizer NAME      lars (default), adamw or sgd\n"
        "  --lr X                base learning rate (default: LARS and SGD 1.8*sqrt(B/1536),\n"
        "                        AdamW 5e-4)\n"
        "  --momentum X          LARS/SGD momentum (default 0.9)\n"
        "  --weight-decay X      default: LARS/SGD 1e-6, AdamW 0 (biases and norms never decay)\n"
        "  --warmup-epochs X     linear warmup (default min(10, epochs/10))\n"
        "  --clip-grad X         global gradient-norm clipping, 0 = off (default 1.0)\n"
        "  --temperature X       KL temperature tau (default 0.07)\n"
        "  --queue-size N|auto   teacher-embedding queue, smaller than the number of images\n"
        "                        (default auto, by dataset size)\n"
        "  --seed N              student init and epoch order (default 0)\n"
        "  --no-shuffle          epoch e visits images 0..N-1 in order, each with view e mod V\n"
        "  --init FILE           start from these weights (torchvision names; fc.* ignored,\n"
        "                        head.weight/head.bias used when present), or from an lt\n"
        "                        checkpoint (OUT/checkpoints/last.safetensors) to train a\n"
        "                        finished run longer, with a fresh schedule\n"
        "  --resume              continue the run in OUT from its last checkpoint; an error if\n"
        "                        there is none (without it, a checkpoint in OUT is continued\n"
        "                        too when its settings match this command's)\n"
        "  --overwrite           start over in an OUT that already holds a run (replaced at the\n"
        "                        new run's first checkpoint)\n"
        "  --checkpoint-every N  steps between checkpoints (default: every epoch, and at the end)\n"
        "  --no-tensorboard      write no TensorBoard event file (metrics.jsonl holds the same\n"
        "                        scalars)\n"
        "  --eval-data DIR       score the student by kNN (lt-eval's protocol) on the labelled\n"
        "                        folder DIR (DIR/train/<class>/, DIR/val/<class>/) every\n"
        "                        --eval-every epochs and at the end, into metrics.jsonl\n"
        "                        (knn_top1), the log and TensorBoard; training is unchanged\n"
        "  --eval-every N        epochs between scores (default epochs/10, at least 1)\n"
        "  --eval-image-size N   evaluation crop side (default: the cache's image size)\n"
        "  --eval-knn-k N        neighbours of the kNN vote (default 20)\n"
        "  --device auto|cpu|cuda  where to train: cuda is the GPU (fp32; under mpirun one GPU\n"
        "                        per process, gradients averaged over NCCL), auto the GPU when\n"
        "                        one is usable, else the CPU (default cpu: the GPU student has\n"
        "                        not yet been checked on a GPU, see docs/cuda.md)\n"
        "  --precision fp32|tf32|bf16  GPU arithmetic (default fp32; tf32: cuDNN's and\n"
        "                        cuBLAS's TF32 tensor cores, fp32 accumulation; bf16:\n"
        "                        activations and their gradients in bf16, bf16 convolutions\n"
        "                        with fp32 accumulation, parameters, statistics, the head and\n"
        "                        the optimizer in fp32; the CPU is fp32)\n"
        "  --threads N           compute threads, 0 = all cores (default 0; under mpirun:\n"
        "                        the cores divided among the run's processes on each machine)\n"
        "  --workers N           data loader threads (default: 1, or cores/4 on 8+ cores)\n"
        "  --image-pool KIND     where the decoded images live: host (every image decoded once\n"
        "                        at start into memory), stream (decoded per view), device (GPU\n"
        "                        memory, views rendered there; needs a GPU backend) or auto\n"
        "                        (default: device on a GPU when the images take at most a\n"
        "                        quarter of its free memory, else host when they fit in\n"
        "                        --pool-memory, else stream)\n"
        "  --pool-memory SIZE    the pool's budget per process, bytes or with a K/M/G/T suffix\n"
        "                        (default: half of MemAvailable, divided among the processes on\n"
        "                        the machine); host over it is an error\n"
        "  --verify FRACTION     before training, check the stored bytes of this fraction of\n"
        "                        the images (at least one; 1 = all) against their SHA-256 in\n"
        "                        the cache; a mismatch is an error (default 0 = off)\n"
        "  -q, --quiet           errors only\n"
        "  -v, --verbose         more detail\n"
        "  -h, --help            this help\n"
        "  -V, --version         print the version\n"
        "\n"
        "Data parallel: mpirun -np P lt-train ... splits every batch over P processes (P must\n"
        "divide --batch-size) and gives the run one process gives, within float rounding; rank 0\n"
        "alone writes OUT. A checkpoint continues under any P.\n"
        "\n"
        "Exit status: 0 ok, 1 runtime error, 2 usage error, 130 interrupted (a checkpoint was\n"
        "written: rerun the same command, without --overwrite, to continue).\n",
        f);
}

enum {
    OPT_STUDENT = 256, OPT_OUT, OPT_EPOCHS, OPT_STEPS, OPT_BATCH, OPT_OPTIM, OPT_LR, OPT_MOM, OPT_WD,
    OPT_WARM, OPT_CLIP, OPT_TEMP, OPT_QUEUE, OPT_SEED, OPT_NOSHUF, OPT_INIT, OPT_RESUME,
    OPT_OVERWRITE, OPT_CKPT, OPT_DEVICE, OPT_THREADS, OPT_WORKERS, OPT_VERIFY, OPT_NOTB,
    OPT_EVAL_DATA, OPT_EVAL_EVERY, OPT_EVAL_SIZE, OPT_EVAL_K, OPT_POOL, OPT_POOL_MEM, OPT_PRECISION
};

static const struct option long_opts[] = {
    {"student", required_argument, 0, OPT_STUDENT}, {"out", required_argument, 0, OPT_OUT},
    {"epochs", required_argument, 0, OPT_EPOCHS},   {"steps", required_argument, 0, OPT_STEPS},
    {"batch-size", required_argument, 0, OPT_BATCH}, {"optimizer", required_argument, 0, OPT_OPTIM},
    {"lr", required_argument, 0, OPT_LR},           {"momentum", required_argument, 0, OPT_MOM},
    {"weight-decay", required_argument, 0, OPT_WD}, {"warmup-epochs", required_argument, 0, OPT_WARM},
    {"clip-grad", required_argument, 0, OPT_CLIP},  {"temperature", required_argument, 0, OPT_TEMP},
    {"queue-size", required_argument, 0, OPT_QUEUE}, {"seed", required_argument, 0, OPT_SEED},
    {"no-shuffle", no_argument, 0, OPT_NOSHUF},     {"init", required_argument, 0, OPT_INIT},
    {"resume", no_argument, 0, OPT_RESUME},         {"overwrite", no_argument, 0, OPT_OVERWRITE},
    {"checkpoint-every", required_argument, 0, OPT_CKPT},
    {"no-tensorboard", no_argument, 0, OPT_NOTB},
    {"eval-data", required_argument, 0, OPT_EVAL_DATA},
    {"eval-every", required_argument, 0, OPT_EVAL_EVERY},
    {"eval-image-size", required_argument, 0, OPT_EVAL_SIZE},
    {"eval-knn-k", required_argument, 0, OPT_EVAL_K},
    {"device", required_argument, 0, OPT_DEVICE},
    {"precision", required_argument, 0, OPT_PRECISION},
    {"threads", required_argument, 0, OPT_THREADS},
    {"workers", required_argument, 0, OPT_WORKERS}, {"verify", required_argument, 0, OPT_VERIFY},
    {"image-pool", required_argument, 0, OPT_POOL},
    {"pool-memory", required_argument, 0, OPT_POOL_MEM},
    {"quiet", no_argument, 0, 'q'},
    {"verbose", no_argument, 0, 'v'},               {"help", no_argument, 0, 'h'},
    {"version", no_argument, 0, 'V'},               {0, 0, 0, 0}};

static int parse_double(const char *opt, const char *s, double lo, double hi, double *out) {
    float f;
    if (lt_parse_float(opt, s, lo, hi, &f) != 0) return -1;
    *out = strtod(s, NULL); /* keep full double precision */
    return 0;
}

static int apply(int c, const char *arg, lt_train_opts *o, int *verbosity) {
    switch (c) {
    case OPT_STUDENT:
        if (strcmp(arg, "resnet18") && strcmp(arg, "resnet34") && strcmp(arg, "resnet50"))
            return lt_err_set("--student: expected resnet18, resnet34 or resnet50, got '%s'", arg);
        o->student = arg;
        return 0;
    case OPT_OUT: o->out_dir = arg; return 0;
    case OPT_EPOCHS: return parse_double("epochs", arg, 1e-6, 1e7, &o->epochs);
    case OPT_STEPS: return lt_parse_i64("steps", arg, 1, INT64_C(1) << 50, &o->steps);
    case OPT_BATCH: return lt_parse_int("batch-size", arg, 1, 1 << 16, &o->batch_size);
    case OPT_OPTIM:
        if (lt_opt_kind_parse(arg, &o->optimizer) != 0)
            return lt_err_set("--optimizer: expected lars, adamw or sgd, got '%s'", arg);
        return 0;
    case OPT_LR: return parse_double("lr", arg, 1e-12, 1e3, &o->lr);
    case OPT_MOM: return parse_double("momentum", arg, 0, 0.999999, &o->momentum);
    case OPT_WD: return parse_double("weight-decay", arg, 0, 10, &o->weight_decay);
    case OPT_WARM: return parse_double("warmup-epochs", arg, 0, 1e7, &o->warmup_epochs);
    case OPT_CLIP: return parse_double("clip-grad", arg, 0, 1e9, &o->clip_grad);
    case OPT_TEMP: return parse_double("temperature", arg, 1e-4, 100, &o->temperature);
    case OPT_QUEUE:
        if (!strcmp(arg, "auto")) {
            o->queue_size = 0;
            return 0;
        }
        return lt_parse_i64("queue-size", arg, 1, 1 << 24, &o->queue_size);
    case OPT_SEED: return lt_parse_u64("seed", arg, &o->seed);
    case OPT_NOSHUF: o->shuffle = 0; return 0;
    case OPT_INIT: o->init_path = arg; return 0;
    case OPT_RESUME: o->resume = 1; return 0;
    case OPT_OVERWRITE: o->overwrite = 1; return 0;
    case OPT_NOTB: o->tensorboard = 0; return 0;
    case OPT_EVAL_DATA: o->eval_data = arg; return 0;
    case OPT_EVAL_EVERY: return parse_double("eval-every", arg, 1e-6, 1e7, &o->eval_every);
    case OPT_EVAL_SIZE: return lt_parse_int("eval-image-size", arg, 8, 4096, &o->eval_image_size);
    case OPT_EVAL_K: return lt_parse_int("eval-knn-k", arg, 1, 1 << 20, &o->eval_knn_k);
    case OPT_CKPT:
        return lt_parse_i64("checkpoint-every", arg, 1, INT64_C(1) << 50, &o->checkpoint_every);
    case OPT_PRECISION: {
        lt_precision p;
        if (lt_precision_parse(arg, &p) != 0)
            return lt_err_set("--precision: expected fp32, tf32 or bf16, got '%s'", arg);
        o->precision = (int)p;
        return 0;
    }
    case OPT_DEVICE:
        /* whether cuda is usable (a GPU, a CUDA build) is decided when the backend opens */
        if (!strcmp(arg, "auto") || !strcmp(arg, "cpu") || !strcmp(arg, "cuda")) {
            o->device = arg;
            return 0;
        }
        return lt_err_set("--device: expected auto, cpu or cuda, got '%s'", arg);
    case OPT_THREADS: return lt_parse_int("threads", arg, 0, 4096, &o->threads);
    case OPT_WORKERS: return lt_parse_int("workers", arg, 0, 1024, &o->workers);
    case OPT_VERIFY: return parse_double("verify", arg, 0, 1, &o->verify);
    case OPT_POOL: return lt_pool_kind_parse(arg, &o->image_pool);
    case OPT_POOL_MEM: return lt_parse_bytes("pool-memory", arg, 1, &o->pool_memory);
    case 'q': *verbosity = 0; return 0;
    case 'v': *verbosity = 2; return 0;
    }
    return lt_err_set("unknown option");
}

/* OUT when this run created it (to remove it again at exit if the run left nothing there). */
static const char *g_created_out;

static void remove_created_out(void) {
    if (!g_created_out) return;
    char *ck = lt_path_join(g_created_out, "checkpoints");
    if (ck) rmdir(ck); /* each fails, harmlessly, unless empty */
    free(ck);
    rmdir(g_created_out);
}

/* Creates OUT if needed and locks it for this process (OUT/lt-train.lock, removed at exit). A run
 * refused before it wrote anything leaves no OUT behind. */
static int hold_out_lock(const char *out) {
    struct stat st;
    if (stat(out, &st) != 0) {
        g_created_out = out;
        atexit(remove_created_out); /* registered first: runs after the lock file is removed */
    }
    if (lt_mkdir_p(out) != 0) return -1;
    char *lock = lt_path_join(out, "lt-train.lock");
    char what[4200];
    snprintf(what, sizeof what, "the output folder %s", out);
    int r = lock ? lt_lock_hold(lock, what) : -1;
    free(lock);
    return r;
}

int main(int argc, char **argv) {
    lt_train_opts o;
    lt_train_defaults(&o);
    int verbosity = 1, c;
    lt_blas_ensure(argv); /* the GEMM kernels this CPU can run (may restart the program) */
    lt_log_init("lt-train", 1);
    /* The command that continues an interrupted run: argv in its original order (getopt_long
     * permutes argv) without the --overwrite words, which getopt_long points us to. */
    static char **again; /* static: still reachable on the early returns */
    if (!(again = lt_argv_copy(argc, argv))) {
        lt_error("%s", lt_err_msg());
        return LT_EXIT_ERROR;
    }
    while ((c = getopt_long(argc, argv, "qvhV", long_opts, NULL)) != -1) {
        if (c == OPT_OVERWRITE) lt_argv_drop(again, argv[optind - 1]);
        if (c == 'h') {
            usage(stdout);
            return LT_EXIT_OK;
        }
        if (c == 'V') {
            printf("lt-train %s\n", LT_VERSION);
            return LT_EXIT_OK;
        }
        if (c == '?') {
            fprintf(stderr, "Try 'lt-train --help'.\n");
            return LT_EXIT_USAGE;
        }
        if (apply(c, optarg, &o, &verbosity) != 0) {
            lt_error("%s", lt_err_msg());
            return LT_EXIT_USAGE;
        }
    }
    lt_log_init("lt-train", verbosity);
    if (lt_log_verbosity() >= 2) {
        char blas[512];
        lt_blas_describe(blas, sizeof blas);
        lt_debug("BLAS: %s", blas);
        lt_debug("lt kernels: %s", lt_simd_name());
    }
    if (argc - optind != 1) {
        lt_error("expected one CACHE argument, got %d (try 'lt-train --help')", argc - optind);
        return LT_EXIT_USAGE;
    }
    if (o.resume && o.overwrite) {
        lt_error("--resume and --overwrite exclude each other");
        return LT_EXIT_USAGE;
    }
    if (o.resume && o.init_path) {
        lt_error("--init starts a new run; it cannot be combined with --resume");
        return LT_EXIT_USAGE;
    }
    o.cache_path = argv[optind];
    /* Data parallel (mpirun -np P lt-train ...): rank 0 alone writes OUT, so it alone locks it. */
    int rank = 0, ranks = 1, launched = lt_comm_launched(&rank, &ranks);
    /* One lt-train per OUT: a second run on the same folder would silently replace this one's
     * checkpoints and student. */
    if (rank == 0 && hold_out_lock(o.out_dir) != 0) {
        lt_error("%s", lt_err_msg());
        return LT_EXIT_ERROR;
    }
    /* A crash or hang of libhdf5 on a damaged cache ends a child process, not this one. */
    if (lt_cache_check_isolated(o.cache_path, 0) != 0) {
        lt_error("%s", lt_err_msg());
        return LT_EXIT_ERROR;
    }
    o.stop = lt_stop_on_signals();
    o.continue_argv = again;
    lt_comm *comm = NULL;
    if (launched) { /* after the check above: its child process must not inherit MPI */
        if (!(comm = lt_comm_mpi_open(&argc, &argv))) {
            lt_error("%s", lt_err_msg());
            return LT_EXIT_ERROR;
        }
        if (comm->rank != 0) { /* rank 0 speaks for the run; the others say only their errors */
            static char prog[48];
            snprintf(prog, sizeof prog, "lt-train (rank %d)", comm->rank);
            lt_log_init(prog, 0);
        }
        o.comm = comm;
    }

    lt_train_report r;
    int rc = lt_train_run(&o, &r);
    if (r.reported_elsewhere) {
        /* rank 0, or the process that failed, said it */
    } else if (rc == LT_EXIT_INTERRUPTED) {
        char how[4096];
        lt_train_continue_hint(&o, how, sizeof how);
        lt_error("interrupted at step %lld; the checkpoint is in %s/checkpoints: %s",
                 (long long)r.last_step, o.out_dir, how);
    } else if (rc != LT_EXIT_OK) {
        lt_error("%s", lt_err_msg());
    }
    if (comm) comm->destroy(comm);
    free(again);
    return rc;
}
