/* checkpoint.h: lt-train's checkpoint and export files (formats/checkpoint.md is the spec).
 *
 * A checkpoint is a .safetensors file holding everything a resumed run needs: the backbone (its
 * torchvision names), head.weight/head.bias, the optimizer state ("optim.m.<name>",
 * "optim.v.<name>"), the queue ("queue"), and in the metadata the step, epoch, optimizer step
 * count and the run's arguments (JSON). The export is the backbone alone with torchvision's names.
 * Both are written atomically (temp + rename). */
#ifndef LT_CHECKPOINT_H
#define LT_CHECKPOINT_H

#include <stdint.h>

#include "models/resnet.h"
#include "nn/kd.h"
#include "train/optim.h"

typedef struct {
    lt_resnet *model;
    float *head_w;      /* (D, C) */
    float *head_b;      /* (D) */
    int D;
    lt_optim *optim;
    lt_queue *queue;
} lt_train_state;

/* Writes the backbone only (torchvision names, float32, num_batches_tracked as int64). */
int lt_export_student(const char *path, const lt_train_state *s);
/* Writes a full checkpoint; meta: key/value pairs added to the metadata. */
int lt_checkpoint_save(const char *path, const lt_train_state *s, int64_t step, int64_t epoch,
                       const char *args_json);
/* Restores a checkpoint into s (shapes must match exactly). *step, *epoch and the args JSON (malloc'd)
 * are returned. */
int lt_checkpoint_load(const char *path, lt_train_state *s, int64_t *step, int64_t *epoch,
                       char **args_json);
/* Loads torchvision-named weights (--init): every backbone tensor must be present with exactly
 * its shape and finite values; fc.* is ignored; head.weight / head.bias are used when present
 * (else left as they are). An lt checkpoint (format lt-checkpoint) is accepted too: its arch must
 * match, its optim.* and queue are ignored. Any other key is an error (weights of another
 * architecture). */
int lt_init_from(const char *path, lt_train_state *s);

#endif
