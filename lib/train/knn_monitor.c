/* knn_monitor.c: the kNN score of lt-train's live student (see knn_monitor.h). */
#include "train/knn_monitor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/fileio.h"
#include "core/log.h"
#include "eval/features.h"
#include "eval/imagefolder.h"
#include "eval/knn.h"
#include "eval/student.h"
#include "image/recipe.h"

#define KNN_TEMPERATURE 0.07f

struct lt_knn_monitor {
    lt_imagefolder folder;
    char **paths;        /* (n) train paths then val paths (borrowed from folder) */
    uint8_t *skipped;    /* (n) */
    size_t n;
    lt_eval_images src;
    lt_resnet *model;    /* the evaluation copy */
    float *feat;         /* (n, C) */
    float mean[3], std[3];
    int k;
};

static void scan_warn(const char *msg, void *ctx) {
    (void)ctx;
    lt_warn("--eval-data: %s", msg);
}

lt_knn_monitor *lt_knn_monitor_open(const char *dir, lt_backend *be, const lt_resnet *live,
                                    int size, int batch, int k) {
    lt_knn_monitor *m = lt_calloc(1, sizeof *m, "kNN monitor");
    if (!m) return NULL;
    if (lt_imagefolder_open(dir, &m->folder, scan_warn, NULL) != 0) {
        free(m);
        lt_err_prefix("--eval-data");
        return NULL;
    }
    m->n = m->folder.train.n + m->folder.val.n;
    m->k = k;
    lt_transform tf;
    lt_transform_default(&tf);
    memcpy(m->mean, tf.mean, sizeof m->mean);
    memcpy(m->std, tf.std, sizeof m->std);
    m->paths = lt_malloc(m->n * sizeof(char *), "file list");
    m->skipped = lt_calloc(m->n, 1, "file list");
    m->feat = lt_malloc(m->n * (size_t)live->C * sizeof(float), "features");
    if (m->paths && m->skipped && m->feat) {
        memcpy(m->paths, m->folder.train.paths, m->folder.train.n * sizeof(char *));
        memcpy(m->paths + m->folder.train.n, m->folder.val.paths,
               m->folder.val.n * sizeof(char *));
        m->src = (lt_eval_images){.root = dir, .paths = m->paths, .n = m->n,
                                  .max_pixels = LT_DEFAULT_MAX_PIXELS, .skipped = m->skipped};
        m->model = lt_eval_student_like(live, be, batch, size);
    }
    if (!m->model) {
        lt_knn_monitor_free(m);
        return NULL;
    }
    return m;
}

int lt_knn_monitor_score(lt_knn_monitor *m, const lt_resnet *live, double *top1) {
    *top1 = 0;
    if (lt_eval_student_copy(m->model, live) != 0 ||
        lt_eval_features_student(m->model, &m->src, m->mean, m->std, m->feat, 0) != 0)
        return -1;
    lt_eval_feature_split sp;
    if (lt_eval_split_features(m->feat, live->C, m->skipped, m->folder.train.labels,
                               m->folder.train.n, m->folder.val.labels, m->folder.val.n, &sp) != 0)
        return -1;
    int rc = lt_knn_top1(sp.train, sp.train_labels, sp.n_train, sp.val, sp.val_labels, sp.n_val,
                         live->C, m->k, KNN_TEMPERATURE, m->folder.n_classes, NULL, top1);
    lt_eval_split_free(&sp);
    return rc;
}

void lt_knn_monitor_describe(const lt_knn_monitor *m, char *buf, size_t n) {
    snprintf(buf, n, "%d classes, %zu train and %zu val images", m->folder.n_classes,
             m->folder.train.n, m->folder.val.n);
}

void lt_knn_monitor_free(lt_knn_monitor *m) {
    if (!m) return;
    lt_resnet_free(m->model);
    lt_imagefolder_free(&m->folder);
    free(m->paths);
    free(m->skipped);
    free(m->feat);
    free(m);
}
