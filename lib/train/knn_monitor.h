/* knn_monitor.h: lt-train --eval-data DIR: the kNN top-1 of the live student on a labelled folder,
 * scored every --eval-every epochs and at the end of the run.
 *
 * Why it exists: a user wants to see quality, not only the loss, while a long run goes on. The
 * score is lt-eval's (docs/evaluation.md): features of DIR/train/ and DIR/val/ through the
 * evaluation transform, weighted kNN (DINO's protocol), the train images as the memory bank.
 * It never changes the training: the features come from a second model (eval/student.h) into
 * which the live model's weights and running statistics are copied before each score, so the
 * live model, the optimizer, the queue and every RNG are untouched; a run with or without
 * --eval-data writes the same checkpoints. */
#ifndef LT_TRAIN_KNN_MONITOR_H
#define LT_TRAIN_KNN_MONITOR_H

#include "models/resnet.h"
#include "nn/backend.h"

typedef struct lt_knn_monitor lt_knn_monitor;

/* Reads DIR's classes and files (lt_imagefolder_open's errors) and builds the evaluation model
 * like `live` on be for size x size images in batches of up to batch. NULL + lt_err. */
lt_knn_monitor *lt_knn_monitor_open(const char *dir, lt_backend *be, const lt_resnet *live,
                                    int size, int batch, int k);
/* Scores the live model now: *top1 in [0, 1]. Files that fail to decode are skipped with a
 * warning the first time. -1 + lt_err. */
int lt_knn_monitor_score(lt_knn_monitor *mon, const lt_resnet *live, double *top1);
/* "3 classes, 96 train and 24 val images" */
void lt_knn_monitor_describe(const lt_knn_monitor *mon, char *buf, size_t n);
void lt_knn_monitor_free(lt_knn_monitor *mon);

#endif
