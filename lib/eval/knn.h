/* knn.h: weighted k-nearest-neighbour classification of frozen features, the protocol of DINO
 * (Caron et al. 2021, eval_knn.py), as lt-eval reports it and lt-train can score it.
 *
 * Why it exists: kNN accuracy measures features without training anything on them. For each
 * validation feature v: s_j = cos(v, t_j) with every training feature t_j (each row is divided
 * by its L2 norm first, so the inputs need not be normalised); the k largest s_j (ties: the lower
 * training index first; k is capped at n_train) vote for their labels with weight exp(s_j / T);
 * the prediction is the class with the largest sum of weights (ties: the lower class index).
 * Top-1 accuracy = fraction of validation rows whose prediction is their label.
 * Similarities are float32 GEMMs (lt_op_gemm), weights and sums double. Pure: reads its inputs,
 * writes only its outputs; bitwise reproducible for a fixed thread count. */
#ifndef LT_EVAL_KNN_H
#define LT_EVAL_KNN_H

#include <stdint.h>

/* train (n_train, D), train_labels (n_train) in [0, n_classes); val (n_val, D), val_labels
 * (n_val). k >= 1, T > 0. pred (n_val): the predictions, or NULL. *top1 in [0, 1] (0 when
 * n_val = 0). -1 + lt_err on bad arguments (a label out of range, a zero row) or OOM. */
int lt_knn_top1(const float *train, const int32_t *train_labels, int64_t n_train,
                const float *val, const int32_t *val_labels, int64_t n_val, int D, int k,
                float T, int n_classes, int32_t *pred, double *top1);

#endif
