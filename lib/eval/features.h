/* features.h: the evaluation transform and the frozen features of a list of images, from a
 * ResNet student or the DINOv2 teacher.
 *
 * Why it exists: lt-eval scores features, and lt-train will score its live student the same way,
 * so the preprocessing and the extraction live here, apart from any command line.
 *
 * The transform is torchvision's standard evaluation transform on a PIL image:
 *   Resize(int(size / 0.875)) of the short side: short -> r = int(size / 0.875),
 *     long -> int(r · long / short) (torchvision's _compute_resized_output_size), PIL bilinear
 *     with its antialias (lt_resize, image/render.h);
 *   CenterCrop(size): top = int(round((H' − size) / 2)), left = int(round((W' − size) / 2)) with
 *     Python's round (half to even);
 *   ToTensor + Normalize(mean, std): (v/255 − mean) / std per channel (lt_mix_normalize with
 *     λ = 1, or the backend's mix_normalize for a student).
 *
 * Extraction decodes and preprocesses a batch of files on all threads (OpenMP), then runs the
 * model on the images that decoded; a file that cannot be read or decoded is skipped with a
 * warning (lt_warn, "skipping PATH: reason"), as lt-embed does, and flagged in `skipped` so that a
 * second model over the same list neither retries nor warns again. */
#ifndef LT_EVAL_FEATURES_H
#define LT_EVAL_FEATURES_H

#include <stddef.h>
#include <stdint.h>

#include "image/decode.h"
#include "models/dinov2.h"
#include "models/resnet.h"

/* The images to extract: root/paths[i]. skipped (n) is read and written: a nonzero entry is not
 * loaded; an entry whose file fails is set to 1. Rows of skipped images in the output are 0. */
typedef struct {
    const char *root;
    char *const *paths;
    size_t n;
    int64_t max_pixels;  /* larger images are skipped (LT_DEFAULT_MAX_PIXELS) */
    uint8_t *skipped;
} lt_eval_images;

/* The side the short edge is resized to before the centre crop: int(size / 0.875). */
int lt_eval_resize_side(int size);
/* The evaluation transform of one decoded image: out (size, size, 3) uint8, the pixels
 * torchvision's Resize + CenterCrop give (before ToTensor). -1 + lt_err on OOM. */
int lt_eval_preprocess(const lt_image *im, int size, uint8_t *out);

/* Features (n, m->C) of src from a student, in host memory: the globally average-pooled output
 * of lt_resnet_forward(train = 0), batch by batch of up to m->max_B images of m->H x m->W (square)
 * pixels, normalised with mean/std through the model's backend. The forward runs with the running
 * statistics: it changes no parameter, running statistic, num_batches_tracked counter or RNG, but
 * it does overwrite the model's activations and m->features, so a training loop calls it between
 * steps, never between a forward and its backward. For images of another size than the model
 * was built for, evaluate a copy (eval/student.h). progress: show lt_progress on stderr.
 * -1 + lt_err on a model failure (not on a bad file). */
int lt_eval_features_student(lt_resnet *m, const lt_eval_images *src, const float mean[3],
                             const float std[3], float *out, int progress);

/* The teacher's L2-normalised CLS embeddings (n, D) of src at size x size, batch by batch of up
 * to `batch` images. size must be a multiple of the patch size (lt_eval_teacher_check_size). */
int lt_eval_features_teacher(lt_dinov2 *t, int batch, int size, const lt_eval_images *src,
                             const float mean[3], const float std[3], float *out, int progress);
/* -1 + lt_err ("--image-size 30 is not a multiple of the teacher's patch size 14 ...") when the
 * teacher would not see the whole image. */
int lt_eval_teacher_check_size(const lt_dinov2 *t, int size);

/* The rows of features (n_train + n_val, D) (train images first, then val) of the images not
 * skipped, split in two: train (n_train', D) with train_labels, val (n_val', D) with val_labels,
 * malloc'd (lt_eval_split_free). skipped (n_train + n_val) may be NULL. -1 + lt_err on OOM, or
 * when a split has no usable image left ("no usable val images: every file was skipped"). */
typedef struct {
    float *train, *val;
    int32_t *train_labels, *val_labels;
    int64_t n_train, n_val;
} lt_eval_feature_split;
int lt_eval_split_features(const float *feat, int D, const uint8_t *skipped,
                           const int32_t *labels_train, size_t n_train,
                           const int32_t *labels_val, size_t n_val, lt_eval_feature_split *out);
void lt_eval_split_free(lt_eval_feature_split *s);

#endif
