/* test_bn_sync.c: synchronised batch norm (lt_bn_forward_train_sync, lt_bn_backward_sync) over P
 * simulated processes against lt_bn_forward_train / lt_bn_backward over all their rows at once
 * (the CPU reference, itself tested against torch.nn.BatchNorm2d in tests/py/test_resnet.py).
 *
 * The processes are P threads; their collective "sum" is a shared table filled under a barrier
 * and added in rank order, as comm_mpi.c does over MPI. Inputs are random with a channel mean far
 * from zero (100 ± 1), where a careless combination of per-process variances loses digits. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "nn/cnn.h"

#define P 3
#define ROWS 37 /* per process */
#define C 5

typedef struct {
    pthread_barrier_t bar;
    double slot[P][2 * C];
} table;

typedef struct {
    table *t;
    int rank;
} proc_ctx;

static int table_sum(void *ctx, double *x, int n) {
    proc_ctx *p = ctx;
    memcpy(p->t->slot[p->rank], x, (size_t)n * sizeof *x);
    pthread_barrier_wait(&p->t->bar);
    for (int i = 0; i < n; i++) {
        double v = 0;
        for (int r = 0; r < P; r++) v += p->t->slot[r][i];
        x[i] = v;
    }
    pthread_barrier_wait(&p->t->bar); /* nobody overwrites a slot before all have read it */
    return 0;
}

/* every buffer of the whole batch (P·ROWS, C); each process works on its own rows */
typedef struct {
    float x[P * ROWS * C], res[P * ROWS * C], dy[P * ROWS * C];
    float gamma[C], beta[C];
    int relu, use_res;
    /* per process outputs */
    float y[P * ROWS * C], dx[P * ROWS * C];
    float mean[P][C], invstd[P][C], rm[P][C], rv[P][C], dg[P][C], db[P][C];
    int rc[P];
    table t;
} problem;

typedef struct {
    problem *pb;
    int rank;
} job;

static void *run_process(void *arg) {
    job *j = arg;
    problem *pb = j->pb;
    const int r = j->rank;
    const size_t off = (size_t)r * ROWS * C;
    proc_ctx ctx = {&pb->t, r};
    lt_bn_sync sync = {.sum = table_sum, .ctx = &ctx, .processes = P};
    double ws[2 * C];
    for (int c = 0; c < C; c++) pb->rm[r][c] = 0.5f, pb->rv[r][c] = 2.0f;
    pb->rc[r] = lt_bn_forward_train_sync(pb->y + off, pb->x + off,
                                         pb->use_res ? pb->res + off : NULL, pb->gamma, pb->beta,
                                         pb->mean[r], pb->invstd[r], pb->rm[r], pb->rv[r], ROWS, C,
                                         1e-5f, 0.1f, pb->relu, 1, ws, &sync);
    pb->rc[r] |= lt_bn_backward_sync(pb->dx + off, pb->dg[r], pb->db[r], pb->dy + off,
                                     pb->x + off, pb->y + off, pb->gamma, pb->mean[r],
                                     pb->invstd[r], ROWS, C, pb->relu, 0, 1, ws, &sync);
    return NULL;
}

static uint64_t state = 0x9E3779B97F4A7C15ull;
static double uniform(void) {
    state ^= state << 13, state ^= state >> 7, state ^= state << 17;
    return (double)(state >> 11) / 9007199254740992.0;
}
static double normal(void) {
    double u = uniform(), v = uniform();
    return sqrt(-2.0 * log(1.0 - u)) * cos(2 * M_PI * v);
}

static int close_to(float a, float b, double tol) {
    return fabs((double)a - b) <= tol * (1.0 + fabs((double)b));
}

static void test_case(int relu, int use_res) {
    static problem pb;
    memset(&pb, 0, sizeof pb);
    pb.relu = relu, pb.use_res = use_res;
    const int M = P * ROWS;
    for (int i = 0; i < M * C; i++) {
        pb.x[i] = (float)(100.0 + normal());
        pb.res[i] = (float)normal();
        pb.dy[i] = (float)normal();
    }
    for (int c = 0; c < C; c++) pb.gamma[c] = (float)(0.5 + uniform()), pb.beta[c] = (float)normal();
    pthread_barrier_init(&pb.t.bar, NULL, P);
    pthread_t th[P];
    job jobs[P];
    for (int r = 0; r < P; r++) {
        jobs[r] = (job){&pb, r};
        pthread_create(&th[r], NULL, run_process, &jobs[r]);
    }
    for (int r = 0; r < P; r++) pthread_join(th[r], NULL);
    pthread_barrier_destroy(&pb.t.bar);
    for (int r = 0; r < P; r++) CHECK(pb.rc[r] == 0);

    /* the reference: one process over all M rows */
    static float y[P * ROWS * C], dx[P * ROWS * C];
    float mean[C], invstd[C], rm[C], rv[C], dg[C], db[C];
    double ws[2 * C];
    for (int c = 0; c < C; c++) rm[c] = 0.5f, rv[c] = 2.0f;
    CHECK(lt_bn_forward_train(y, pb.x, use_res ? pb.res : NULL, pb.gamma, pb.beta, mean, invstd,
                              rm, rv, M, C, 1e-5f, 0.1f, relu, 1, ws) == 0);
    CHECK(lt_bn_backward(dx, dg, db, pb.dy, pb.x, y, pb.gamma, mean, invstd, M, C, relu, 0, 1,
                         ws) == 0);
    int bad = 0;
    for (int i = 0; i < M * C; i++) {
        bad += !close_to(pb.y[i], y[i], 1e-5);
        bad += !close_to(pb.dx[i], dx[i], 1e-4);
    }
    CHECK_MSG(bad == 0, "relu %d res %d: %d of y, dx differ", relu, use_res, bad);
    for (int r = 0; r < P; r++)
        for (int c = 0; c < C; c++) {
            /* statistics and running statistics: the whole batch's, on every process */
            CHECK(close_to(pb.mean[r][c], mean[c], 1e-6));
            CHECK(close_to(pb.invstd[r][c], invstd[c], 1e-5));
            CHECK(close_to(pb.rm[r][c], rm[c], 1e-6));
            CHECK(close_to(pb.rv[r][c], rv[c], 1e-5));
            /* parameter gradients: the processes' mean, the same on each */
            CHECK(close_to(pb.dg[r][c], dg[c] / P, 1e-4));
            CHECK(close_to(pb.db[r][c], db[c] / P, 1e-4));
            CHECK(pb.dg[r][c] == pb.dg[0][c] && pb.db[r][c] == pb.db[0][c]);
        }
}

int main(void) {
    for (int relu = 0; relu < 2; relu++)
        for (int res = 0; res < 2; res++) test_case(relu, res);
    CHECK_DONE();
}
