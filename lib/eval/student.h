/* student.h: ResNet students for evaluation: from a weights file, freshly initialised, or a
 * copy of a live model (lt-train's) built for another batch or image size.
 *
 * Why it exists: a model's activation buffers are sized once for (max_B, H, W) (models/resnet.h),
 * so a model trained on views of one size cannot be run on evaluation images of another. The
 * evaluation model is a second lt_resnet on the same backend, built for the evaluation size,
 * that shares nothing with the live one: its weights, running statistics and counters are copied
 * in (lt_eval_student_copy) before each evaluation, so the live model is never touched. Every
 * weight moves through the backend's upload/download, so this works on any backend. */
#ifndef LT_EVAL_STUDENT_H
#define LT_EVAL_STUDENT_H

#include <stdint.h>

#include "models/resnet.h"
#include "nn/backend.h"

/* arch built on be for batches of up to max_B images of size x size, with the weights of path:
 * lt-train's student.safetensors (torchvision names; fc.* ignored), any torchvision-named
 * state_dict saved as safetensors, or an lt-train checkpoint (head.*, optim.* and queue ignored).
 * Every tensor of arch must be present with exactly its shape and finite values
 * (num_batches_tracked is optional); the first mismatch is an error naming the tensor and both
 * shapes. NULL + lt_err on failure. */
lt_resnet *lt_eval_student_load(lt_backend *be, const char *arch, const char *path, int max_B,
                                int size);
/* arch with torchvision's initialisation drawn from seed (lt_resnet_init_weights): the baseline
 * of an untrained network. NULL + lt_err on failure. */
lt_resnet *lt_eval_student_random(lt_backend *be, const char *arch, uint64_t seed, int max_B,
                                  int size);
/* A new model of src's arch on be for (max_B, size, size) with src's weights (copied). */
lt_resnet *lt_eval_student_like(const lt_resnet *src, lt_backend *be, int max_B, int size);
/* Copies every parameter, running statistic and num_batches_tracked counter of src into dst (same
 * arch; the two may live on different backends and be built for different sizes). src is only
 * read. -1 + lt_err on a mismatch or a backend failure. */
int lt_eval_student_copy(lt_resnet *dst, const lt_resnet *src);

#endif
