/* features.c: evaluation preprocessing and feature extraction (see features.h). */
#include "eval/features.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/fileio.h"
#include "core/log.h"
#include "image/render.h"

#define MAX_FILE_BYTES ((size_t)1 << 31) /* as lt-embed: no image file we accept is larger */

int lt_eval_resize_side(int size) { return (int)((double)size / 0.875); }

int lt_eval_preprocess(const lt_image *im, int size, uint8_t *out) {
    if (size < 1) return lt_err_set("evaluation size %d must be >= 1", size);
    const int r = lt_eval_resize_side(size);
    const int w = im->w, h = im->h;
    const int shortest = w <= h ? w : h, longest = w <= h ? h : w;
    /* torchvision: new_long = int(requested * long / short), a double division truncated */
    double new_long = (double)((int64_t)r * longest) / (double)shortest;
    if (new_long > (double)(1 << 30))
        return lt_err_set("a %dx%d image is too elongated to resize to a short side of %d", w, h,
                          r);
    const int nw = w <= h ? r : (int)new_long, nh = w <= h ? (int)new_long : r;
    /* torchvision: int(round((H' - size) / 2.0)), round half to even (rint's default mode) */
    const int32_t box[4] = {0, 0, w, h};
    const int32_t crop[4] = {(int32_t)rint((double)(nw - size) / 2.0),
                             (int32_t)rint((double)(nh - size) / 2.0), size, size};
    return lt_resize(im, box, nw, nh, crop, out); /* only the crop of the resized image */
}

/* Reads, decodes and preprocesses root/rel into out; on failure the reason goes to why. */
static int load_one(const char *root, const char *rel, int64_t max_pixels, int size,
                    uint8_t *out, char *why, size_t nwhy) {
    char *full = lt_path_join(root, rel);
    uint8_t *bytes = NULL;
    size_t n = 0;
    lt_image im = {0};
    int rc = -1;
    if (!full) {
        snprintf(why, nwhy, "%s", lt_err_msg());
    } else if (lt_read_file(full, MAX_FILE_BYTES, &bytes, &n) != 0) {
        /* lt_read_file names the full path; the warning names the relative one */
        const char *m = lt_err_msg(), *colon = strstr(m, ": ");
        snprintf(why, nwhy, "%s", colon ? colon + 2 : m);
    } else if (lt_image_decode(bytes, n, max_pixels, &im) != 0 ||
               lt_eval_preprocess(&im, size, out) != 0) {
        snprintf(why, nwhy, "%s", lt_err_msg());
    } else {
        rc = 0;
    }
    lt_image_free(&im);
    free(bytes);
    free(full);
    return rc;
}

/* A model as the extraction loop sees it: views (B, size, size, 3) uint8 host -> feat (B, dim)
 * host. */
typedef int (*model_fn)(void *ctx, const uint8_t *views, int B, float *feat);

static int extract(const lt_eval_images *src, int batch, int size, int dim, model_fn fn,
                   void *ctx, float *out, int progress) {
    const size_t view = (size_t)size * size * 3;
    uint8_t *views = lt_malloc((size_t)batch * view, "evaluation views");
    float *feat = lt_malloc((size_t)batch * dim * sizeof(float), "features");
    int *ok = lt_malloc((size_t)batch * sizeof(int), "batch slots");
    char(*why)[512] = lt_malloc((size_t)batch * sizeof *why, "batch slots");
    int rc = views && feat && ok && why ? 0 : -1;
    lt_progress pr;
    if (progress) lt_progress_start(&pr, "images", (int64_t)src->n);
    for (size_t first = 0; rc == 0 && first < src->n; first += (size_t)batch) {
        int count = (int)(src->n - first < (size_t)batch ? src->n - first : (size_t)batch);
#pragma omp parallel for schedule(dynamic, 1)
        for (int k = 0; k < count; k++) {
            ok[k] = 0;
            why[k][0] = 0;
            if (src->skipped[first + k]) continue;
            ok[k] = load_one(src->root, src->paths[first + k], src->max_pixels, size,
                             views + (size_t)k * view, why[k], sizeof why[k]) == 0;
            if (!ok[k] && !why[k][0]) snprintf(why[k], sizeof why[k], "cannot be used");
        }
        int B = 0;
        for (int k = 0; k < count; k++) {
            if (ok[k]) {
                if (B != k) memcpy(views + (size_t)B * view, views + (size_t)k * view, view);
                B++;
            } else if (!src->skipped[first + k]) {
                lt_warn("skipping %s: %s", src->paths[first + k], why[k]); /* escaped by lt_warn */
                src->skipped[first + k] = 1;
            }
        }
        if (B > 0 && fn(ctx, views, B, feat) != 0) {
            rc = -1;
            break;
        }
        for (int k = 0, j = 0; k < count; k++) {
            float *row = out + (first + (size_t)k) * (size_t)dim;
            if (ok[k]) memcpy(row, feat + (size_t)j++ * dim, (size_t)dim * sizeof(float));
            else memset(row, 0, (size_t)dim * sizeof(float));
        }
        if (progress) lt_progress_update(&pr, (int64_t)(first + (size_t)count));
    }
    if (progress) lt_progress_end(&pr);
    free(views), free(feat), free(ok), free(why);
    return rc;
}

/* ---- the student, through its backend ---- */

typedef struct {
    lt_resnet *m;
    const float *mean, *std;
    uint8_t *dev_views; /* (max_B, H, W, 3) on a device backend, else NULL */
    float *lambda;      /* (max_B) ones, in the backend's memory */
} student_ctx;

static int student_fn(void *vctx, const uint8_t *views, int B, float *feat) {
    student_ctx *c = vctx;
    lt_resnet *m = c->m;
    lt_backend *be = m->be;
    const int HW = m->H * m->W;
    if (c->dev_views) {
        if (be->upload(be, c->dev_views, views, (size_t)B * HW * 3)) return -1;
        views = c->dev_views;
    }
    float *x = lt_resnet_input(m); /* (B, H, W, 3) normalised straight into the model's input */
    if (be->mix_normalize(be, x, views, NULL, c->lambda, B, HW, c->mean, c->std) ||
        lt_resnet_forward(m, x, B, 0))
        return -1;
    return be->download(be, feat, m->features, (size_t)B * m->C * sizeof(float));
}

int lt_eval_features_student(lt_resnet *m, const lt_eval_images *src, const float mean[3],
                             const float std[3], float *out, int progress) {
    if (m->H != m->W)
        return lt_err_set("%s: built for %dx%d inputs; evaluation needs a square model", m->arch,
                          m->H, m->W);
    lt_backend *be = m->be;
    student_ctx c = {.m = m, .mean = mean, .std = std};
    float *ones = lt_malloc((size_t)m->max_B * sizeof(float), "mixup weights");
    if (!ones) return -1;
    for (int i = 0; i < m->max_B; i++) ones[i] = 1.0f;
    int rc = 0;
    if (be->mem != LT_MEM_HOST) {
        c.dev_views = be->alloc(be, (size_t)m->max_B * m->H * m->W * 3, "evaluation views");
        c.lambda = be->alloc(be, (size_t)m->max_B * sizeof(float), "mixup weights");
        rc = c.dev_views && c.lambda &&
                     be->upload(be, c.lambda, ones, (size_t)m->max_B * sizeof(float)) == 0
                 ? 0
                 : -1;
    } else {
        c.lambda = ones;
    }
    if (rc == 0) rc = extract(src, m->max_B, m->H, m->C, student_fn, &c, out, progress);
    if (be->mem != LT_MEM_HOST) {
        be->free(be, c.dev_views);
        be->free(be, c.lambda);
    }
    free(ones);
    return rc;
}

/* ---- the teacher, on the CPU ---- */

typedef struct {
    lt_dinov2 *t;
    int size;
    const float *mean, *std;
    float *x; /* (batch, size, size, 3) */
} teacher_ctx;

static int teacher_fn(void *vctx, const uint8_t *views, int B, float *feat) {
    teacher_ctx *c = vctx;
    const int64_t npix = (int64_t)c->size * c->size;
    for (int i = 0; i < B; i++)
        lt_mix_normalize(views + (size_t)i * npix * 3, NULL, 1.0f, c->mean, c->std, npix,
                         c->x + (size_t)i * npix * 3);
    return lt_dinov2_forward(c->t, c->x, B, c->size, c->size, feat);
}

int lt_eval_teacher_check_size(const lt_dinov2 *t, int size) {
    int p = lt_dinov2_config_of(t)->patch;
    if (size % p == 0) return 0;
    int lo = size / p * p, hi = lo + p;
    if (lo == 0)
        return lt_err_set("--image-size %d is smaller than the teacher's patch size %d; use a "
                          "multiple of %d, e.g. %d", size, p, p, hi);
    return lt_err_set("--image-size %d is not a multiple of the teacher's patch size %d (the "
                      "teacher would not see the whole image); use %d or %d", size, p, lo, hi);
}

int lt_eval_features_teacher(lt_dinov2 *t, int batch, int size, const lt_eval_images *src,
                             const float mean[3], const float std[3], float *out, int progress) {
    if (lt_eval_teacher_check_size(t, size) != 0) return -1;
    if (batch < 1) return lt_err_set("teacher batch %d must be >= 1", batch);
    teacher_ctx c = {.t = t, .size = size, .mean = mean, .std = std};
    c.x = lt_malloc((size_t)batch * size * size * 3 * sizeof(float), "teacher input");
    if (!c.x) return -1;
    int rc = extract(src, batch, size, lt_dinov2_config_of(t)->embed_dim, teacher_fn, &c, out,
                     progress);
    free(c.x);
    return rc;
}

int lt_eval_split_features(const float *feat, int D, const uint8_t *skipped,
                           const int32_t *labels_train, size_t n_train,
                           const int32_t *labels_val, size_t n_val, lt_eval_feature_split *out) {
    memset(out, 0, sizeof *out);
    out->train = lt_malloc(n_train * (size_t)D * sizeof(float) + 1, "features");
    out->val = lt_malloc(n_val * (size_t)D * sizeof(float) + 1, "features");
    out->train_labels = lt_malloc(n_train * sizeof(int32_t) + 1, "labels");
    out->val_labels = lt_malloc(n_val * sizeof(int32_t) + 1, "labels");
    if (!out->train || !out->val || !out->train_labels || !out->val_labels) {
        lt_eval_split_free(out);
        return -1;
    }
    for (size_t i = 0; i < n_train + n_val; i++) {
        if (skipped && skipped[i]) continue;
        int train = i < n_train;
        int64_t *k = train ? &out->n_train : &out->n_val;
        float *dst = (train ? out->train : out->val) + *k * D;
        memcpy(dst, feat + i * (size_t)D, (size_t)D * sizeof(float));
        if (train) out->train_labels[(*k)++] = labels_train[i];
        else out->val_labels[(*k)++] = labels_val[i - n_train];
    }
    if (out->n_train == 0 || out->n_val == 0) {
        int none_train = out->n_train == 0;
        lt_eval_split_free(out);
        return lt_err_set("no usable %s images: every file was skipped",
                          none_train ? "train" : "val");
    }
    return 0;
}

void lt_eval_split_free(lt_eval_feature_split *s) {
    free(s->train);
    free(s->val);
    free(s->train_labels);
    free(s->val_labels);
    memset(s, 0, sizeof *s);
}
