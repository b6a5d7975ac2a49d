/* knn.c: DINO's weighted kNN classifier (see knn.h). */
#include "eval/knn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "nn/ops.h"

#define VAL_BLOCK 256 /* validation rows per similarity GEMM: (VAL_BLOCK, n_train) floats */

/* dst (n, D) = src rows / their L2 norm (in double). -1 on a zero or non-finite row. */
static int normalise_rows(float *dst, const float *src, int64_t n, int D, const char *what) {
    for (int64_t i = 0; i < n; i++) {
        const float *x = src + i * D;
        double s = 0;
        for (int d = 0; d < D; d++) s += (double)x[d] * x[d];
        if (!(s > 0) || !isfinite(s))
            return lt_err_set("kNN: %s feature %lld has norm %g; it cannot be compared by "
                              "cosine", what, (long long)i, sqrt(s));
        double inv = 1.0 / sqrt(s);
        for (int d = 0; d < D; d++) dst[i * D + d] = (float)(x[d] * inv);
    }
    return 0;
}

/* The k best of sim (n) into idx (k), best first: larger similarity, then lower index. */
static void top_k(const float *sim, int64_t n, int k, int64_t *idx) {
    int m = 0; /* entries in idx, sorted */
    for (int64_t j = 0; j < n; j++) {
        float s = sim[j];
        if (m == k && !(s > sim[idx[k - 1]])) continue; /* equal: the earlier index stays */
        int p = m < k ? m++ : k - 1;
        while (p > 0 && s > sim[idx[p - 1]]) {
            idx[p] = idx[p - 1];
            p--;
        }
        idx[p] = j;
    }
}

int lt_knn_top1(const float *train, const int32_t *train_labels, int64_t n_train,
                const float *val, const int32_t *val_labels, int64_t n_val, int D, int k,
                float T, int n_classes, int32_t *pred, double *top1) {
    *top1 = 0;
    if (n_train < 1 || D < 1 || k < 1 || !(T > 0) || n_classes < 1)
        return lt_err_set("kNN: bad arguments (n_train %lld, D %d, k %d, T %g, classes %d)",
                          (long long)n_train, D, k, (double)T, n_classes);
    for (int64_t i = 0; i < n_train; i++)
        if (train_labels[i] < 0 || train_labels[i] >= n_classes)
            return lt_err_set("kNN: training label %d outside 0..%d", train_labels[i],
                              n_classes - 1);
    if (n_val == 0) return 0;
    if (k > n_train) k = (int)n_train;
    float *tn = lt_malloc((size_t)n_train * D * sizeof(float), "kNN features");
    float *vn = lt_malloc((size_t)VAL_BLOCK * D * sizeof(float), "kNN features");
    float *sim = lt_malloc((size_t)VAL_BLOCK * n_train * sizeof(float), "kNN similarities");
    int32_t *p = lt_malloc((size_t)n_val * sizeof(int32_t), "kNN predictions");
    int rc = tn && vn && sim && p ? normalise_rows(tn, train, n_train, D, "training") : -1;
    for (int64_t b0 = 0; rc == 0 && b0 < n_val; b0 += VAL_BLOCK) {
        int nb = (int)(n_val - b0 < VAL_BLOCK ? n_val - b0 : VAL_BLOCK);
        if (normalise_rows(vn, val + b0 * D, nb, D, "validation") != 0) {
            rc = -1;
            break;
        }
        /* sim (nb, n_train) = vn (nb, D) · tnᵀ */
        lt_op_gemm(0, 1, nb, (int)n_train, D, 1.0f, vn, D, tn, D, 0.0f, sim, (int)n_train);
        int bad = 0;
#pragma omp parallel reduction(| : bad)
        {
            int64_t *idx = malloc((size_t)k * sizeof(int64_t));
            double *votes = malloc((size_t)n_classes * sizeof(double));
            if (!idx || !votes) bad = 1;
#pragma omp for schedule(static)
            for (int i = 0; i < nb; i++) {
                if (!idx || !votes) continue;
                top_k(sim + (size_t)i * n_train, n_train, k, idx);
                for (int c = 0; c < n_classes; c++) votes[c] = 0;
                for (int j = 0; j < k; j++)
                    votes[train_labels[idx[j]]] += exp((double)sim[(size_t)i * n_train + idx[j]] /
                                                       (double)T);
                int best = 0;
                for (int c = 1; c < n_classes; c++)
                    if (votes[c] > votes[best]) best = c;
                p[b0 + i] = best;
            }
            free(idx);
            free(votes);
        }
        if (bad) rc = lt_err_set("out of memory (kNN votes)");
    }
    if (rc == 0) {
        int64_t right = 0;
        for (int64_t i = 0; i < n_val; i++) right += p[i] == val_labels[i];
        *top1 = (double)right / (double)n_val;
        if (pred) memcpy(pred, p, (size_t)n_val * sizeof(int32_t));
    }
    free(tn), free(vn), free(sim), free(p);
    return rc;
}
