/* checkpoint.c: checkpoint, export and --init files of lt-train (see checkpoint.h).
 *
 * The state's float tensors (backbone, head, queue, optimizer state) live in the model's backend
 * memory (m->be); on a device backend each is downloaded into a host copy before writing, and
 * read into a host buffer then uploaded when loading. The num_batches_tracked counters are
 * always host memory. */
#include "train/checkpoint.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "data/safetensors.h"
#include "nn/backend.h"

#define CKPT_FORMAT "lt-checkpoint"
#define CKPT_VERSION "1"

/* The backend holding the state's float tensors when it is not host memory, else NULL. */
static lt_backend *device_of(const lt_resnet *m) {
    return m->be && m->be->mem != LT_MEM_HOST ? m->be : NULL;
}

/* Float entries of a list being written whose data is still in device memory are replaced by
 * host copies (kept in copies[], n of them; freed by free_copies). */
static int stage_entries(lt_backend *be, lt_st_entry *e, int n, void **copies) {
    for (int i = 0; i < n; i++) copies[i] = NULL;
    if (!be) return 0;
    for (int i = 0; i < n; i++) {
        if (e[i].dtype != LT_DT_F32) continue; /* the int64 counters live on the host */
        int64_t numel = 1;
        for (int d = 0; d < e[i].ndim; d++) numel *= e[i].shape[d];
        size_t bytes = (size_t)numel * sizeof(float);
        if (!(copies[i] = lt_malloc(bytes ? bytes : 1, "checkpoint staging"))) return -1;
        if (be->download(be, copies[i], e[i].data, bytes) != 0) return -1;
        e[i].data = copies[i];
    }
    return 0;
}

static void free_copies(void **copies, int n) {
    for (int i = 0; i < n; i++) free(copies[i]);
}

/* One entry per backbone tensor (parameters, running stats, num_batches_tracked). */
static int add_backbone(lt_st_entry *e, int n, const lt_resnet *m) {
    for (int i = 0; i < m->n_tensors; i++) {
        const lt_resnet_tensor *t = &m->tensors[i];
        lt_st_entry *x = &e[n++];
        x->name = t->name;
        x->ndim = t->ndim;
        for (int d = 0; d < t->ndim; d++) x->shape[d] = t->shape[d];
        if (t->data_i64) {
            x->dtype = LT_DT_I64;
            x->data = t->data_i64;
        } else {
            x->dtype = LT_DT_F32;
            x->data = t->data;
        }
    }
    return n;
}

static lt_st_entry f32_entry(const char *name, const float *data, int ndim, int64_t d0, int64_t d1) {
    lt_st_entry e;
    memset(&e, 0, sizeof e);
    e.name = name;
    e.dtype = LT_DT_F32;
    e.ndim = ndim;
    e.shape[0] = d0;
    e.shape[1] = d1;
    e.data = data;
    return e;
}

int lt_export_student(const char *path, const lt_train_state *s) {
    lt_st_entry *e = lt_calloc((size_t)s->model->n_tensors, sizeof *e, "export list");
    if (!e) return -1;
    int n = add_backbone(e, 0, s->model);
    const char *k[] = {"format", "arch"}, *v[] = {"lt-student", s->model->arch};
    void **copies = lt_calloc((size_t)n + 1, sizeof *copies, "export staging");
    int rc = copies ? stage_entries(device_of(s->model), e, n, copies) : -1;
    if (rc == 0) rc = lt_st_write(path, e, n, k, v, 2);
    if (copies) free_copies(copies, n);
    free(copies);
    free(e);
    return rc;
}

int lt_checkpoint_save(const char *path, const lt_train_state *s, int64_t step, int64_t epoch,
                       const char *args_json) {
    const lt_resnet *m = s->model;
    const lt_optim *o = s->optim;
    int cap = m->n_tensors + 3 + 2 * o->nparams;
    lt_st_entry *e = lt_calloc((size_t)cap, sizeof *e, "checkpoint list");
    char **names = lt_calloc((size_t)(2 * o->nparams + 1), sizeof *names, "checkpoint names");
    if (!e || !names) {
        free(e);
        free(names);
        return -1;
    }
    int n = add_backbone(e, 0, m);
    e[n++] = f32_entry("head.weight", s->head_w, 2, s->D, m->C);
    e[n++] = f32_entry("head.bias", s->head_b, 1, s->D, 0);
    e[n++] = f32_entry("queue", s->queue->data, 2, s->queue->Q, s->queue->D);
    int nn = 0, rc = 0;
    for (int i = 0; i < o->nparams && rc == 0; i++) {
        const lt_param *p = &o->params[i];
        const float *bufs[2] = {p->m, p->v};
        const char *tag[2] = {"m", "v"};
        for (int k = 0; k < 2; k++) {
            if (!bufs[k]) continue;
            size_t len = strlen(p->name) + 16;
            names[nn] = malloc(len);
            if (!names[nn]) {
                rc = lt_err_set("out of memory");
                break;
            }
            snprintf(names[nn], len, "optim.%s.%s", tag[k], p->name);
            e[n++] = f32_entry(names[nn++], bufs[k], 1, p->n, 0);
        }
    }
    char sstep[32], sepoch[32], sostep[32];
    snprintf(sstep, sizeof sstep, "%" PRId64, step);
    snprintf(sepoch, sizeof sepoch, "%" PRId64, epoch);
    snprintf(sostep, sizeof sostep, "%" PRId64, o->step);
    const char *k[] = {"format", "version", "arch", "step", "epoch", "optim_step", "args"};
    const char *v[] = {CKPT_FORMAT, CKPT_VERSION, m->arch, sstep, sepoch, sostep, args_json};
    void **copies = rc == 0 ? lt_calloc((size_t)n + 1, sizeof *copies, "checkpoint staging") : NULL;
    if (rc == 0 && !copies) rc = -1;
    if (rc == 0) rc = stage_entries(device_of(m), e, n, copies);
    if (rc == 0) rc = lt_st_write(path, e, n, k, v, 7);
    if (copies) free_copies(copies, n);
    free(copies);
    for (int i = 0; i < nn; i++) free(names[i]);
    free(names);
    free(e);
    return rc;
}

/* "(a, b, c)" */
static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t k = (size_t)snprintf(buf, n, "(");
    for (int d = 0; d < ndim && k < n; d++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (k < n) snprintf(buf + k, n - k, ")");
}

/* Copies tensor `name` of st into dst after checking its shape exactly (ndim dims of shape);
 * finite: also require every value to be finite (weights from outside a run). dst is in the
 * memory of be (NULL: host memory). Returns 1 when the tensor is absent and not required. */
static int read_named_host(const lt_safetensors *st, const char *name, float *dst, int ndim,
                           const int64_t *shape, int required, int finite);

static int read_named_be(lt_backend *be, const lt_safetensors *st, const char *name, float *dst,
                         int ndim, const int64_t *shape, int required, int finite) {
    if (!be) return read_named_host(st, name, dst, ndim, shape, required, finite);
    int64_t numel = 1;
    for (int d = 0; d < ndim; d++) numel *= shape[d];
    float *host = lt_malloc((size_t)(numel ? numel : 1) * sizeof(float), "checkpoint staging");
    if (!host) return -1;
    int rc = read_named_host(st, name, host, ndim, shape, required, finite);
    if (rc == 0 && be->upload(be, dst, host, (size_t)numel * sizeof(float)) != 0) rc = -1;
    free(host);
    return rc;
}

static int read_named_host(const lt_safetensors *st, const char *name, float *dst, int ndim,
                           const int64_t *shape, int required, int finite) {
    const lt_st_tensor *t = lt_st_find(st, name);
    if (!t) return required ? lt_err_set("%s: no tensor '%s'", st->path, name) : 1;
    int same = t->ndim == ndim;
    for (int d = 0; same && d < ndim; d++) same = t->shape[d] == shape[d];
    if (!same) {
        char got[160], want[160];
        shape_str(got, sizeof got, t->ndim, t->shape);
        shape_str(want, sizeof want, ndim, shape);
        return lt_err_set("%s: tensor '%s' has shape %s, expected %s", st->path, name, got, want);
    }
    if (lt_st_read_f32(st, t, dst) != 0) return -1;
    for (int64_t i = 0; finite && i < t->numel; i++)
        if (!isfinite(dst[i]))
            return lt_err_set("%s: tensor '%s' holds a non-finite value (%g at element %lld): "
                              "these weights cannot be trained from", st->path, name,
                              (double)dst[i], (long long)i);
    return 0;
}

static int read_vec(lt_backend *be, const lt_safetensors *st, const char *name, float *dst,
                    int64_t n) {
    return read_named_be(be, st, name, dst, 1, &n, 1, 0);
}

static int read_head(const lt_safetensors *st, lt_train_state *s, int required, int finite) {
    int64_t w[2] = {s->D, s->model->C}, b[1] = {s->D};
    lt_backend *be = device_of(s->model);
    int rc = read_named_be(be, st, "head.weight", s->head_w, 2, w, required, finite);
    if (rc >= 0)
        rc = read_named_be(be, st, "head.bias", s->head_b, 1, b, required, finite) < 0 ? -1 : rc;
    return rc < 0 ? -1 : 0;
}

static int read_backbone(const lt_safetensors *st, lt_resnet *m) {
    for (int i = 0; i < m->n_tensors; i++) {
        lt_resnet_tensor *t = &m->tensors[i];
        if (t->data_i64) {
            const lt_st_tensor *x = lt_st_find(st, t->name);
            if (!x) return lt_err_set("%s: no tensor '%s'", st->path, t->name);
            if (x->dtype != LT_DT_I64 || x->numel != 1)
                return lt_err_set("%s: tensor '%s' must be one int64", st->path, t->name);
            memcpy(t->data_i64, st->data + x->begin, sizeof(int64_t));
        } else if (read_named_be(device_of(m), st, t->name, t->data, t->ndim, t->shape, 1, 0) !=
                   0) {
            return -1;
        }
    }
    return 0;
}

static int parse_i64_meta(const lt_safetensors *st, const char *key, int64_t *out) {
    const char *v = lt_st_meta(st, key);
    char *end;
    if (!v) return lt_err_set("%s: not an lt checkpoint (no '%s' in the metadata)", st->path, key);
    long long x = strtoll(v, &end, 10);
    if (*end || x < 0) return lt_err_set("%s: bad '%s' in the metadata", st->path, key);
    *out = x;
    return 0;
}

int lt_checkpoint_load(const char *path, lt_train_state *s, int64_t *step, int64_t *epoch,
                       char **args_json) {
    lt_safetensors st;
    *args_json = NULL;
    if (lt_st_open(path, &st) != 0) return -1;
    int rc = 0;
    const char *fmt = lt_st_meta(&st, "format"), *ver = lt_st_meta(&st, "version");
    const char *arch = lt_st_meta(&st, "arch"), *args = lt_st_meta(&st, "args");
    int64_t ostep = 0;
    if (!fmt || strcmp(fmt, CKPT_FORMAT) || !ver || strcmp(ver, CKPT_VERSION) || !args)
        rc = lt_err_set("%s: not an lt checkpoint of version %s", path, CKPT_VERSION);
    else if (!arch || strcmp(arch, s->model->arch))
        rc = lt_err_set("%s: checkpoint of a %s student, this run trains a %s", path,
                        arch ? arch : "?", s->model->arch);
    if (rc == 0) rc = parse_i64_meta(&st, "step", step);
    if (rc == 0) rc = parse_i64_meta(&st, "epoch", epoch);
    if (rc == 0) rc = parse_i64_meta(&st, "optim_step", &ostep);
    if (rc == 0) rc = read_backbone(&st, s->model);
    if (rc == 0) rc = read_head(&st, s, 1, 0);
    int64_t qshape[2] = {s->queue->Q, s->queue->D};
    if (rc == 0)
        rc = read_named_be(device_of(s->model), &st, "queue", s->queue->data, 2, qshape, 1, 0);
    for (int i = 0; i < s->optim->nparams && rc == 0; i++) {
        lt_param *p = &s->optim->params[i];
        float *bufs[2] = {p->m, p->v};
        const char *tag[2] = {"m", "v"};
        for (int k = 0; k < 2 && rc == 0; k++) {
            if (!bufs[k]) continue;
            char name[160];
            snprintf(name, sizeof name, "optim.%s.%s", tag[k], p->name);
            rc = read_vec(device_of(s->model), &st, name, bufs[k], p->n);
        }
    }
    if (rc == 0) {
        s->optim->step = ostep;
        *args_json = strdup(args);
        if (!*args_json) rc = lt_err_set("out of memory");
    }
    lt_st_close(&st);
    return rc;
}

int lt_init_from(const char *path, lt_train_state *s) {
    lt_safetensors st;
    if (lt_st_open(path, &st) != 0) return -1;
    int rc = 0;
    /* lt's own checkpoint: its backbone and head are used, its optimizer state and queue not */
    const char *fmt = lt_st_meta(&st, "format"), *arch = lt_st_meta(&st, "arch");
    int ckpt = fmt && !strcmp(fmt, CKPT_FORMAT);
    if (ckpt && (!arch || strcmp(arch, s->model->arch)))
        rc = lt_err_set("%s: checkpoint of a %s student, this run trains a %s (--student)", path,
                        arch ? arch : "?", s->model->arch);
    for (int i = 0; i < st.n && rc == 0; i++) {
        const char *name = st.tensors[i].name;
        if (!strncmp(name, "fc.", 3) || !strcmp(name, "head.weight") || !strcmp(name, "head.bias"))
            continue;
        if (ckpt && (!strncmp(name, "optim.", 6) || !strcmp(name, "queue"))) continue;
        if (!lt_resnet_find(s->model, name))
            rc = lt_err_set("%s: tensor '%s' is not part of a %s (weights of another architecture?)",
                            path, name, s->model->arch);
    }
    for (int i = 0; i < s->model->n_tensors && rc == 0; i++) {
        lt_resnet_tensor *t = &s->model->tensors[i];
        if (t->data_i64) {
            const lt_st_tensor *x = lt_st_find(&st, t->name);
            if (x && x->dtype == LT_DT_I64 && x->numel == 1)
                memcpy(t->data_i64, st.data + x->begin, sizeof(int64_t));
            continue; /* num_batches_tracked is optional */
        }
        rc = read_named_be(device_of(s->model), &st, t->name, t->data, t->ndim, t->shape, 1, 1);
    }
    if (rc == 0) rc = read_head(&st, s, 0, 1);
    lt_st_close(&st);
    return rc ? -1 : 0;
}
