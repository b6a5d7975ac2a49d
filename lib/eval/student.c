/* student.c: evaluation students from a file, from a seed, or copied from a live model (see
 * student.h). */
#include "eval/student.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "data/safetensors.h"

/* "(a, b, c)" */
static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t k = (size_t)snprintf(buf, n, "(");
    for (int d = 0; d < ndim && k < n; d++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (k < n) snprintf(buf + k, n - k, ")");
}

/* Tensors of a file that are not backbone tensors and are allowed there. */
static int ignorable(const char *name) {
    return !strncmp(name, "fc.", 3) || !strncmp(name, "head.", 5) || !strncmp(name, "optim.", 6) ||
           !strcmp(name, "queue");
}

/* Checks every tensor of m against st (shapes first, in state_dict order, then unknown names). */
static int check_file(const lt_safetensors *st, lt_resnet *m) {
    const char *farch = lt_st_meta(st, "arch");
    char hint[96] = "";
    if (farch && strcmp(farch, m->arch))
        snprintf(hint, sizeof hint, "; the file says it holds a %.32s", farch);
    for (int i = 0; i < m->n_tensors; i++) {
        const lt_resnet_tensor *t = &m->tensors[i];
        const lt_st_tensor *x = lt_st_find(st, t->name);
        if (!x) {
            if (t->data_i64) continue; /* num_batches_tracked is optional */
            return lt_err_set("%s: no tensor '%s', which a %s has (--student %s%s)", st->path,
                              t->name, m->arch, m->arch, hint);
        }
        int same = x->ndim == t->ndim;
        for (int d = 0; same && d < t->ndim; d++) same = x->shape[d] == t->shape[d];
        if (!same) {
            char got[160], want[160];
            shape_str(got, sizeof got, x->ndim, x->shape);
            shape_str(want, sizeof want, t->ndim, t->shape);
            return lt_err_set("%s: tensor '%s' has shape %s, a %s has %s: the weights are not "
                              "a %s (--student %s%s)", st->path, t->name, got, m->arch, want,
                              m->arch, m->arch, hint);
        }
        if (t->data_i64 && x->dtype != LT_DT_I64)
            return lt_err_set("%s: tensor '%s' must be one int64", st->path, t->name);
        if (!t->data_i64 && x->dtype != LT_DT_F32 && x->dtype != LT_DT_F16 &&
            x->dtype != LT_DT_BF16)
            return lt_err_set("%s: tensor '%s' is %s; expected F32, F16 or BF16", st->path,
                              t->name, lt_dtype_name(x->dtype));
    }
    for (int i = 0; i < st->n; i++) {
        const char *name = st->tensors[i].name;
        if (!ignorable(name) && !lt_resnet_find(m, name))
            return lt_err_set("%s: tensor '%s' is not part of a %s: the weights are not a %s "
                              "(--student %s%s)", st->path, name, m->arch, m->arch, m->arch, hint);
    }
    return 0;
}

/* Reads every tensor of st into m through the backend (host staging buffer). */
static int load_tensors(const lt_safetensors *st, lt_resnet *m) {
    lt_backend *be = m->be;
    int64_t cap = 0;
    for (int i = 0; i < m->n_tensors; i++)
        if (m->tensors[i].numel > cap) cap = m->tensors[i].numel;
    float *host = lt_malloc((size_t)cap * sizeof(float), "weights staging buffer");
    if (!host) return -1;
    int rc = 0;
    for (int i = 0; i < m->n_tensors && rc == 0; i++) {
        lt_resnet_tensor *t = &m->tensors[i];
        const lt_st_tensor *x = lt_st_find(st, t->name);
        if (t->data_i64) {
            *t->data_i64 = 0; /* host memory on every backend (models/resnet.h) */
            if (x) memcpy(t->data_i64, st->data + x->begin, sizeof(int64_t));
            continue;
        }
        rc = lt_st_read_f32(st, x, host);
        for (int64_t j = 0; rc == 0 && j < t->numel; j++)
            if (!isfinite(host[j]))
                rc = lt_err_set("%s: tensor '%s' holds a non-finite value (%g at element %lld)",
                                st->path, t->name, (double)host[j], (long long)j);
        if (rc == 0) rc = be->upload(be, t->data, host, (size_t)t->numel * sizeof(float));
    }
    free(host);
    return rc;
}

lt_resnet *lt_eval_student_load(lt_backend *be, const char *arch, const char *path, int max_B,
                                int size) {
    lt_safetensors st;
    if (lt_st_open(path, &st) != 0) return NULL;
    lt_resnet *m = lt_resnet_create(be, arch, max_B, size, size);
    int rc = m ? check_file(&st, m) : -1;
    if (rc == 0) rc = load_tensors(&st, m);
    lt_st_close(&st);
    if (rc != 0) {
        lt_resnet_free(m);
        return NULL;
    }
    return m;
}

/* Downloads n bytes of src (on sb) and uploads them to dst (on db). */
static int move(lt_backend *db, void *dst, lt_backend *sb, const void *src, size_t n, void *host) {
    return sb->download(sb, host, src, n) || db->upload(db, dst, host, n) ? -1 : 0;
}

int lt_eval_student_copy(lt_resnet *dst, const lt_resnet *src) {
    if (strcmp(dst->arch, src->arch) || dst->n_params != src->n_params ||
        dst->n_buffers != src->n_buffers || dst->n_bn != src->n_bn)
        return lt_err_set("cannot copy a %s into a %s", src->arch, dst->arch);
    int64_t n = src->n_params > src->n_buffers ? src->n_params : src->n_buffers;
    float *host = lt_malloc((size_t)n * sizeof(float), "weights staging buffer");
    if (!host) return -1;
    int rc = move(dst->be, dst->params, src->be, src->params,
                  (size_t)src->n_params * sizeof(float), host);
    if (rc == 0)
        rc = move(dst->be, dst->buffers, src->be, src->buffers,
                  (size_t)src->n_buffers * sizeof(float), host);
    if (rc == 0) memcpy(dst->nbt, src->nbt, (size_t)src->n_bn * sizeof(int64_t));
    free(host);
    return rc;
}

lt_resnet *lt_eval_student_like(const lt_resnet *src, lt_backend *be, int max_B, int size) {
    lt_resnet *m = lt_resnet_create(be, src->arch, max_B, size, size);
    if (m && lt_eval_student_copy(m, src) != 0) {
        lt_resnet_free(m);
        return NULL;
    }
    return m;
}

lt_resnet *lt_eval_student_random(lt_backend *be, const char *arch, uint64_t seed, int max_B,
                                  int size) {
    lt_resnet *m = lt_resnet_create(be, arch, max_B, size, size);
    if (m && lt_resnet_init_weights(m, seed) != 0) { /* drawn on the host, uploaded as needed */
        lt_resnet_free(m);
        return NULL;
    }
    return m;
}
