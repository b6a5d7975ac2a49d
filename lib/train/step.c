/* step.c: the student and its training step (see step.h). */
#include "train/step.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/log.h"
#include "core/rng.h"

/* Head weight ~ trunc_normal(std 0.02) (torch's default bounds ±2 are absolute, so at this std
 * it is a plain normal, redrawn beyond ±2), drawn on the host from the RNG keyed (seed, "HEAD"). */
static void draw_head(float *w, int64_t n, uint64_t seed) {
    lt_rng r;
    lt_rng_init(&r, seed, 0x48454144u, 0, 0);
    for (int64_t i = 0; i < n; i++) {
        double v;
        do {
            double u1 = lt_rng_uniform(&r), u2 = lt_rng_uniform(&r);
            v = 0.02 * sqrt(-2.0 * log(1.0 - u1)) * cos(2 * M_PI * u2);
        } while (fabs(v) > 2.0);
        w[i] = (float)v;
    }
}

void lt_student_free(lt_student *st) {
    lt_backend *be = st->be;
    if (be && st->graph) be->graph_free(be, st->graph);
    if (be && st->mt) be->mt_free(be, st->mt);
    lt_optim_free(&st->optim);
    lt_resnet_free(st->model);
    if (be) {
        void *bufs[] = {st->head_w, st->head_b, st->dhead_w, st->dhead_b, st->z, st->znorm,
                        st->s, st->ds, st->dz, st->dfeat, st->probs, st->t,
                        st->queue.data, st->a, st->b, st->lambda, st->t_all_be, st->loss_dev};
        for (size_t k = 0; k < sizeof bufs / sizeof bufs[0]; k++) be->free(be, bufs[k]);
        if (be->bn_sync == &st->bn_sync) be->bn_sync = NULL;
    }
    free(st->t_all);
    free(st->grads);
    free(st->grad_ptrs);
    free(st->grad_ns);
    free(st->params);
    memset(st, 0, sizeof *st);
}

/* The device step's optimizer (nn/optim_multi.h) over the optimizer's parameters and state, on a
 * backend that has every entry it needs; nothing on one that has not. */
static int device_step_init(lt_student *st) {
    lt_backend *be = st->be;
    if (!be->kd_loss_forward_dev || !be->mt_create || !be->mt_io || !be->mt_step || !be->mt_free)
        return 0;
    const lt_optim *o = &st->optim;
    lt_mt_param *ps = lt_calloc((size_t)o->nparams + 1, sizeof *ps, "parameter list");
    if (!ps) return -1;
    for (int i = 0; i < o->nparams; i++) {
        const lt_param *p = &o->params[i];
        ps[i] = (lt_mt_param){.w = p->w, .g = p->g, .m = p->m, .v = p->v, .n = p->n,
                              .decay = p->weight_decay};
    }
    const lt_mt_config mc = {.kind = (int)o->cfg.kind, .weight_decay = o->cfg.weight_decay,
                             .trust_coef = o->cfg.trust_coef, .eps = o->cfg.eps,
                             .momentum = (float)o->cfg.momentum};
    st->mt = be->mt_create(be, &mc, ps, o->nparams);
    free(ps);
    if (!st->mt) return -1;
    st->loss_dev = be->alloc(be, sizeof(double), "the loss");
    const char *g = getenv("LT_CUDA_GRAPH");
    st->graph_off = !be->graph_begin || !be->graph_end || !be->graph_launch || !be->graph_free ||
                    (g && !strcmp(g, "0"));
    return st->loss_dev ? 0 : -1;
}

int lt_student_init(lt_student *st, lt_backend *be, const char *arch, int B, int size, int D,
                    int Q, uint64_t seed, const lt_optim_config *cfg, const float mean[3],
                    const float std[3]) {
    memset(st, 0, sizeof *st);
    st->be = be;
    memcpy(st->mean, mean, sizeof st->mean);
    memcpy(st->std, std, sizeof st->std);
    st->B = B;
    st->D = D;
    if (Q < 1 || D < 1) return lt_err_set("student: queue %d x %d", Q, D);
    st->model = lt_resnet_create(be, arch, B, size, size);
    if (!st->model) return -1;
    if (lt_resnet_init_weights(st->model, seed) != 0) return -1;
    const int C = st->C = st->model->C;
#define BUF(n, what) ((float *)be->alloc(be, (size_t)(n) * sizeof(float), what))
    st->head_w = BUF((int64_t)D * C, "head");
    st->head_b = BUF(D, "head");
    st->dhead_w = BUF((int64_t)D * C, "head grad");
    st->dhead_b = BUF(D, "head grad");
    st->z = BUF((int64_t)B * D, "projections");
    st->znorm = BUF(B, "norms");
    st->s = BUF((int64_t)B * D, "student embeddings");
    st->ds = BUF((int64_t)B * D, "gradients");
    st->dz = BUF((int64_t)B * D, "gradients");
    st->dfeat = BUF((int64_t)B * C, "gradients");
    st->probs = BUF((int64_t)2 * B * Q, "loss probabilities");
    st->queue.data = BUF((int64_t)Q * D, "the teacher-embedding queue");
    st->x = lt_resnet_input(st->model); /* mixed straight into the model's input */
    if (be->mem != LT_MEM_HOST) {
        size_t views = (size_t)B * size * size * 3;
        st->a = be->alloc(be, views, "input views");
        st->b = be->alloc(be, views, "input partner views");
        st->lambda = BUF(B, "mixup weights");
        st->t = BUF((int64_t)B * D, "teacher rows");
        if (!st->a || !st->b || !st->lambda || !st->t) return -1;
    }
#undef BUF
    if (!st->head_w || !st->head_b || !st->dhead_w || !st->dhead_b || !st->z || !st->znorm ||
        !st->s || !st->ds || !st->dz || !st->dfeat || !st->probs || !st->queue.data)
        return -1;
    st->queue.Q = Q;
    st->queue.D = D;
    float *w = lt_malloc((size_t)D * C * sizeof(float), "head");
    if (!w) return -1;
    draw_head(w, (int64_t)D * C, seed);
    int r = be->upload(be, st->head_w, w, (size_t)D * C * sizeof(float)); /* bias: zeroed */
    free(w);
    if (r != 0) return -1;
    st->params = lt_calloc((size_t)st->model->n_tensors + 2, sizeof *st->params,
                           "parameter list");
    if (!st->params) return -1;
    for (int i = 0; i < st->model->n_tensors; i++) {
        lt_resnet_tensor *x = &st->model->tensors[i];
        if (x->is_buffer) continue;
        st->params[st->nparams++] = (lt_param){.name = x->name, .w = x->data, .g = x->grad,
                                               .n = x->numel, .weight_decay = x->weight_decay};
    }
    st->params[st->nparams++] = (lt_param){.name = "head.weight", .w = st->head_w,
                                           .g = st->dhead_w, .n = (int64_t)D * C,
                                           .weight_decay = 1};
    st->params[st->nparams++] = (lt_param){.name = "head.bias", .w = st->head_b,
                                           .g = st->dhead_b, .n = D, .weight_decay = 0};
    if (lt_optim_init(&st->optim, be, cfg, st->params, st->nparams) != 0) return -1;
    return device_step_init(st);
}

/* lt_bn_sync's sum over the processes of the run */
static int comm_sum(void *ctx, double *x, int n) {
    lt_comm *c = ctx;
    return c->sum_f64(c, x, n);
}

int lt_student_data_parallel(lt_student *st, lt_comm *comm) {
    /* one process: nothing to do, unless its communicator has device collectives to check */
    if (!comm || (comm->size == 1 && !comm->mean_f32_dev)) return 0;
    lt_backend *be = st->be;
    const int64_t G = (int64_t)comm->size * st->B;
    st->comm = comm;
    st->bn_sync = (lt_bn_sync){.sum = comm_sum, .ctx = comm, .processes = comm->size};
    be->bn_sync = &st->bn_sync;
    st->t_all = lt_malloc((size_t)G * st->D * sizeof(float), "the global batch's teacher rows");
    if (!st->t_all) return -1;
    if (be->mem != LT_MEM_HOST &&
        !(st->t_all_be = be->alloc(be, (size_t)G * st->D * sizeof(float), "teacher rows")))
        return -1;
    st->grads_n = 0;
    for (int i = 0; i < st->nparams; i++) st->grads_n += st->params[i].n;
    st->grad_ptrs = lt_malloc((size_t)st->nparams * sizeof *st->grad_ptrs, "gradient list");
    st->grad_ns = lt_malloc((size_t)st->nparams * sizeof *st->grad_ns, "gradient list");
    if (!st->grad_ptrs || !st->grad_ns) return -1;
    for (int i = 0; i < st->nparams; i++) {
        st->grad_ptrs[i] = st->params[i].g;
        st->grad_ns[i] = st->params[i].n;
    }
    st->grads = lt_malloc((size_t)st->grads_n * sizeof(float), "gradients to average");
    return st->grads ? 0 : -1;
}

/* Every gradient = its mean over the processes: on the device when the communicator can (NCCL:
 * one group of all-reduces over the gradient tensors where they are), else packed into one host
 * buffer for one host collective. */
static int average_gradients(lt_student *st) {
    lt_backend *be = st->be;
    if (be->mem != LT_MEM_HOST && st->comm->mean_f32_dev)
        return st->comm->mean_f32_dev(st->comm, st->grad_ptrs, st->grad_ns, st->nparams);
    int64_t off = 0;
    for (int i = 0; i < st->nparams; i++) {
        const lt_param *p = &st->params[i];
        if (be->download(be, st->grads + off, p->g, (size_t)p->n * sizeof(float)) != 0) return -1;
        off += p->n;
    }
    if (st->comm->mean_f32(st->comm, st->grads, st->grads_n) != 0) return -1;
    off = 0;
    for (int i = 0; i < st->nparams; i++) {
        const lt_param *p = &st->params[i];
        if (be->upload(be, p->g, st->grads + off, (size_t)p->n * sizeof(float)) != 0) return -1;
        off += p->n;
    }
    return 0;
}

/* The device step's work after the inputs are in st->a, st->b, st->lambda, st->t: enqueued on the
 * backend's stream, nothing waited for (so it can be recorded as a graph). */
static int device_body(lt_student *st, int B, float tau) {
    lt_backend *be = st->be;
    const int C = st->C, D = st->D, Q = st->queue.Q;
    const lt_resnet *m = st->model;
    float *f = m->features;
    return be->mix_normalize(be, st->x, st->a, st->b, st->lambda, B, m->H * m->W, st->mean,
                             st->std) ||
                   lt_resnet_forward(st->model, st->x, B, 1) ||
                   be->linear_forward(be, st->z, f, st->head_w, st->head_b, B, C, D) ||
                   be->l2norm_forward(be, st->s, st->znorm, st->z, B, D) ||
                   be->queue_push(be, st->queue.data, Q, D, st->t, B) ||
                   be->kd_loss_forward_dev(be, st->loss_dev, st->t, st->s, st->queue.data, B, Q,
                                           D, tau, st->probs) ||
                   be->kd_loss_backward(be, st->ds, st->probs, st->queue.data, B, Q, D, tau) ||
                   be->l2norm_backward(be, st->dz, st->ds, st->s, st->znorm, B, D) ||
                   be->linear_backward(be, st->dfeat, st->dhead_w, st->dhead_b, st->dz, f,
                                       st->head_w, B, C, D, 0) ||
                   lt_resnet_backward(st->model, st->dfeat, NULL, 0) ||
                   be->mt_step(be, st->mt, st->loss_dev)
               ? -1
               : 0;
}

/* Records the device step as a graph (the second full batch: the first one has made every
 * convolution plan and workspace); 0 with st->graph set, or st->graph_off set when it could not
 * be recorded (then nothing of this step has run). -1 only when the stream is unusable. */
static int device_capture(lt_student *st, int B, float tau) {
    lt_backend *be = st->be;
    lt_resnet *m = st->model;
    /* the walk counts its batches on the host (num_batches_tracked) while it records: kept, as
     * the recorded step runs right after; put back when there will be no graph */
    int64_t *nbt = lt_malloc((size_t)(m->n_bn > 0 ? m->n_bn : 1) * sizeof *nbt, "batch counters");
    if (!nbt) return -1;
    memcpy(nbt, m->nbt, (size_t)m->n_bn * sizeof *nbt);
    if (be->graph_begin(be) != 0) {
        free(nbt);
        lt_debug("training step: no CUDA graph (%s); the step runs without one", lt_err_msg());
        st->graph_off = 1;
        lt_err_clear();
        return 0;
    }
    int r = device_body(st, B, tau);
    char why[512];
    snprintf(why, sizeof why, "%s", r != 0 ? lt_err_msg() : "");
    void *g = NULL;
    int e = be->graph_end(be, &g);
    if (r == 0 && e == 0) {
        free(nbt);
        st->graph = g;
        st->graph_tau = tau;
        lt_debug("training step: recorded as a CUDA graph for batches of %d", B);
        return 0;
    }
    memcpy(m->nbt, nbt, (size_t)m->n_bn * sizeof *nbt);
    free(nbt);
    if (g) be->graph_free(be, g);
    lt_debug("training step: no CUDA graph (%s); the step runs without one",
             r != 0 ? why : lt_err_msg());
    st->graph_off = 1;
    lt_err_clear();
    return be->sync(be);
}

static int device_step(lt_student *st, int B, double tau, double clip, double lr, double *loss,
                       double *gnorm) {
    lt_backend *be = st->be;
    if (!(lr >= 0.0) || !isfinite(lr)) return lt_err_set("optimizer: learning rate %g", lr);
    lt_mt_io *io = be->mt_io(be, st->mt);
    const lt_optim *o = &st->optim;
    io->lr = (float)lr;
    io->clip = clip;
    io->first = o->step == 0;
    lt_optim_adamw_scalars(o, lr, 0, &io->adam[0]);
    lt_optim_adamw_scalars(o, lr, 1, &io->adam[1]);
    const float ftau = (float)tau;
    int recorded = 0; /* this step's walk has just been recorded (and counted its batch) */
    if (!st->graph && !st->graph_off && B == st->B && st->dev_steps >= 1) {
        if (device_capture(st, B, ftau) != 0) return -1;
        recorded = st->graph != NULL;
    }
    /* the graph holds this batch size and temperature (1/τ went in as numbers) */
    int rc;
    if (st->graph && B == st->B && ftau == st->graph_tau) {
        if (!recorded) /* what the walk does on the host: a replay does not */
            lt_resnet_count_train_batch(st->model);
        rc = be->graph_launch(be, st->graph);
    } else {
        rc = device_body(st, B, ftau);
    }
    if (rc != 0 || be->sync(be) != 0) return -1;
    st->dev_steps++;
    *loss = io->loss;
    *gnorm = io->gnorm;
    if (io->updated) st->optim.step++;
    return 0;
}

int lt_student_step(lt_student *st, const uint8_t *a, const uint8_t *b, const float *lambda,
                    const float *t, int B, double tau, double clip, double lr, double *loss,
                    double *gnorm) {
    lt_backend *be = st->be;
    const int C = st->C, D = st->D, Q = st->queue.Q;
    const float ftau = (float)tau;
    const lt_resnet *m = st->model;
    const int HW = m->H * m->W;
    *loss = *gnorm = 0;
    if (B < 1 || B > st->B) return lt_err_set("student: batch %d outside 1..%d", B, st->B);
    /* the rows the queue takes: this batch, or the global batch of all processes */
    const float *tq = t;
    int Bq = B;
    if (st->comm) {
        if (B != st->B)
            return lt_err_set("student: a data-parallel step takes exactly %d rows, not %d",
                              st->B, B);
        if (st->comm->allgather(st->comm, st->t_all, t, (size_t)B * D * sizeof(float)) != 0)
            return -1;
        tq = st->t_all;
        Bq = st->comm->size * B;
        if (be->mem != LT_MEM_HOST) {
            if (be->upload(be, st->t_all_be, st->t_all, (size_t)Bq * D * sizeof(float)) != 0)
                return -1;
            tq = st->t_all_be;
        }
    }
    if (be->mem != LT_MEM_HOST) { /* bytes, not floats, go up; the walk reads them from there */
        size_t views = (size_t)B * HW * 3;
        /* a NULL: the views were made in st->a, st->b on the device (lt_student_views) */
        if ((a && (be->upload(be, st->a, a, views) || be->upload(be, st->b, b, views))) ||
            be->upload(be, st->lambda, lambda, (size_t)B * sizeof(float)) ||
            be->upload(be, st->t, t, (size_t)B * D * sizeof(float)))
            return -1;
        a = st->a, b = st->b, lambda = st->lambda, t = st->t;
        if (!st->comm) tq = t;
    }
    if (st->mt && !st->comm) return device_step(st, B, tau, clip, lr, loss, gnorm);
    float *f = st->model->features;
    if (be->mix_normalize(be, st->x, a, b, lambda, B, HW, st->mean, st->std) ||
        lt_resnet_forward(st->model, st->x, B, 1) ||
        be->linear_forward(be, st->z, f, st->head_w, st->head_b, B, C, D) ||
        be->l2norm_forward(be, st->s, st->znorm, st->z, B, D) ||
        be->queue_push(be, st->queue.data, Q, D, tq, Bq) ||
        be->kd_loss_forward(be, loss, t, st->s, st->queue.data, B, Q, D, ftau, st->probs))
        return -1;
    if (st->comm) { /* the global batch's loss: the mean of the processes' (equal) batch means */
        if (st->comm->sum_f64(st->comm, loss, 1) != 0) return -1;
        *loss /= st->comm->size;
    }
    if (!isfinite(*loss)) return 0;
    if (be->kd_loss_backward(be, st->ds, st->probs, st->queue.data, B, Q, D, ftau) ||
        be->l2norm_backward(be, st->dz, st->ds, st->s, st->znorm, B, D) ||
        be->linear_backward(be, st->dfeat, st->dhead_w, st->dhead_b, st->dz, f, st->head_w, B, C,
                            D, 0) ||
        lt_resnet_backward(st->model, st->dfeat, NULL, 0) ||
        (st->comm && average_gradients(st) != 0) ||
        lt_clip_grad_norm(&st->optim, clip, gnorm))
        return -1;
    if (!isfinite(*gnorm)) return 0;
    return lt_optim_step(&st->optim, lr);
}
