/* bench_data_gpu: times the data path with the views rendered on the GPU, for the device check
 * (scripts/device-check.sh): decode on the CPU, render primary and partner views with the CUDA
 * renderer (image/render_cuda.h), mix + normalise them on the GPU (lt_cuda_mix_normalize), with
 * nothing behind it.
 *
 *   bench_data_gpu CACHE SAMPLES [--batch B] [--threads N] [--mode stream|device]
 *
 * stream: per batch of B samples, the images it needs (primary and partner) are read from the
 *   cache and decoded on N threads, then lt_render_gpu_pairs uploads them and renders the views;
 *   two batches alternate so that the GPU works on one while the CPU decodes the next (what
 *   lt-embed does).
 * device: every image of the cache is decoded once and uploaded once (timed apart), then batches
 *   are rendered from the device-resident images (lt_render_cuda): the GPU's own rate.
 * SAMPLES samples cycle over the cache's samples; one warm-up batch is not timed. Prints one JSON
 * line: {"mode", "samples", "batch", "threads", "decode_s", "upload_s", "seconds",
 * "samples_per_s"} where seconds covers the timed batches (decode included in stream mode). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/log.h"
#include "data/cache.h"
#include "image/decode.h"
#include "image/render_cuda.h"
#include "nn/ops_cuda.h"

static void die(const char *what) {
    fprintf(stderr, "bench_data_gpu: error: %s: %s\n", what, lt_err_msg());
    exit(1);
}

int main(int argc, char **argv) {
    int B = 256, T = omp_get_max_threads(), device_mode = 0;
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--batch") && i + 1 < argc) B = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) T = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--mode") && i + 1 < argc) device_mode = !strcmp(argv[++i], "device");
        else argc = 0;
    }
    if (argc < 3 || B < 1 || T < 1) {
        fprintf(stderr, "usage: bench_data_gpu CACHE SAMPLES [--batch B] [--threads N] "
                        "[--mode stream|device]\n");
        return 2;
    }
    int64_t S = atoll(argv[2]);
    if (S < 1) return 2;
    omp_set_num_threads(T);
    if (!lt_cuda_available()) {
        fprintf(stderr, "bench_data_gpu: no CUDA device\n");
        return 77;
    }
    lt_cache *c;
    lt_cuda_ctx *ctx;
    if (lt_cache_open(argv[1], &c) != 0) die("opening the cache");
    if (lt_cuda_ctx_create(&ctx) != 0) die("CUDA context");
    const lt_cache_meta *m = lt_cache_meta_of(c);
    const int size = m->image_size;
    const int64_t N = lt_cache_n_images(c), n_samples = lt_cache_n_samples(c);
    lt_sample *samples = malloc((size_t)n_samples * sizeof *samples);
    if (!samples || lt_cache_samples(c, 0, n_samples, samples) != 0) die("reading the recipes");
    const size_t view = (size_t)size * size * 3;
    uint8_t *da[2], *db[2];
    float *dx, *dlambda;
    float *lambda = malloc((size_t)B * sizeof *lambda);
    for (int k = 0; k < 2; k++)
        if (lt_cuda_malloc((void **)&da[k], view * B, "views") ||
            lt_cuda_malloc((void **)&db[k], view * B, "views"))
            die("device memory");
    if (lt_cuda_malloc((void **)&dx, view * B * sizeof(float), "input") ||
        lt_cuda_malloc((void **)&dlambda, (size_t)B * sizeof(float), "lambda"))
        die("device memory");
    void *stream = lt_cuda_ctx_stream(ctx);
    const int64_t batches = (S + B - 1) / B;
    double decode_s = 0, upload_s = 0, t_start = 0;

    if (device_mode) {
        /* every image decoded once, then uploaded once */
        lt_image *ims = calloc((size_t)N, sizeof *ims);
        int bad = 0;
        double t0 = lt_now();
#pragma omp parallel for schedule(dynamic, 4) reduction(| : bad)
        for (int64_t i = 0; i < N; i++) bad |= lt_cache_decode_image(c, i, &ims[i]) != 0;
        decode_s = lt_now() - t0;
        if (bad) die("decoding");
        uint8_t **dev = malloc((size_t)N * sizeof *dev);
        t0 = lt_now();
        for (int64_t i = 0; i < N; i++) {
            size_t nb = (size_t)ims[i].w * ims[i].h * 3;
            if (lt_cuda_malloc((void **)&dev[i], nb, "image") ||
                lt_cuda_upload(ctx, dev[i], ims[i].rgb, nb))
                die("uploading the images");
        }
        if (lt_cuda_sync(ctx)) die("uploading the images");
        upload_s = lt_now() - t0;
        lt_render_job *jobs = malloc((size_t)2 * B * sizeof *jobs);
        uint8_t *ws = NULL;
        size_t cap = 0;
        for (int64_t bi = -1; bi < batches; bi++) { /* bi = -1: warm-up */
            if (bi == 0) {
                if (lt_cuda_sync(ctx)) die("warm-up");
                t_start = lt_now();
            }
            int64_t first = (bi < 0 ? 0 : bi) * B;
            int count = (int)(S - first < B ? S - first : B), n = 0;
            for (int k = 0; k < count; k++) {
                const lt_sample *s = &samples[(first + k) % n_samples];
                lambda[k] = s->image[1] >= 0 ? s->lambda : 1.0f;
                for (int q = 0; q < 2; q++) {
                    int64_t i = s->image[q];
                    if (i < 0) continue;
                    jobs[n] = (lt_render_job){.rgb = dev[i], .w = ims[i].w, .h = ims[i].h,
                                              .r = s->r[q], .out = (q ? db[0] : da[0]) + view * k};
                    n++;
                }
            }
            size_t need = lt_render_cuda_ws_bytes(jobs, n, size);
            if (need > cap) {
                if (lt_cuda_sync(ctx)) die("render");
                lt_cuda_free(ws);
                if (lt_cuda_malloc((void **)&ws, need, "render scratch")) die("render scratch");
                cap = need;
            }
            if (lt_render_cuda(jobs, n, size, NULL, ws, cap, stream) ||
                lt_cuda_upload(ctx, dlambda, lambda, (size_t)count * sizeof(float)) ||
                lt_cuda_mix_normalize(ctx, dx, da[0], db[0], dlambda, m->transform.mean,
                                      m->transform.std, count, (int64_t)size * size))
                die("render");
            /* the jobs and lambda arrays are reused next batch: their copies must be done */
            if (lt_cuda_sync(ctx)) die("render");
        }
    } else {
        lt_render_gpu *rg[2];
        if (lt_render_gpu_create(&rg[0]) || lt_render_gpu_create(&rg[1])) die("renderer");
        lt_image *ims = calloc((size_t)2 * B, sizeof *ims);
        int *slot_of = malloc((size_t)2 * B * sizeof *slot_of);
        int64_t *which = malloc((size_t)2 * B * sizeof *which);
        lt_sample *smp = malloc((size_t)B * sizeof *smp);
        for (int64_t bi = -1; bi < batches; bi++) {
            if (bi == 0) {
                if (lt_cuda_sync(ctx)) die("warm-up");
                t_start = lt_now();
                decode_s = 0;
            }
            int64_t first = (bi < 0 ? 0 : bi) * B;
            int count = (int)(S - first < B ? S - first : B), ns = 0;
            for (int k = 0; k < count; k++) {
                smp[k] = samples[(first + k) % n_samples];
                lambda[k] = smp[k].image[1] >= 0 ? smp[k].lambda : 1.0f;
                for (int q = 0; q < 2; q++) {
                    int64_t i = smp[k].image[q];
                    slot_of[2 * k + q] = -1;
                    if (i < 0) continue;
                    int f = -1;
                    for (int j = 0; j < ns && f < 0; j++)
                        if (which[j] == i) f = j;
                    if (f < 0) which[f = ns++] = i;
                    slot_of[2 * k + q] = f;
                }
            }
            double t0 = lt_now();
            int bad = 0;
#pragma omp parallel for schedule(dynamic, 1) reduction(| : bad)
            for (int j = 0; j < ns; j++) bad |= lt_cache_decode_image(c, which[j], &ims[j]) != 0;
            decode_s += lt_now() - t0;
            if (bad) die("decoding");
            int slot = (int)((bi + 1) & 1);
            if (lt_render_gpu_pairs(rg[slot], ims, ns, smp, slot_of, count, size, da[slot],
                                    db[slot], stream) ||
                lt_cuda_upload(ctx, dlambda, lambda, (size_t)count * sizeof(float)) ||
                lt_cuda_mix_normalize(ctx, dx, da[slot], db[slot], dlambda, m->transform.mean,
                                      m->transform.std, count, (int64_t)size * size))
                die("render");
            for (int j = 0; j < ns; j++) lt_image_free(&ims[j]);
        }
        if (lt_cuda_sync(ctx)) die("render");
        lt_render_gpu_free(rg[0]);
        lt_render_gpu_free(rg[1]);
    }
    if (lt_cuda_sync(ctx)) die("render");
    double secs = lt_now() - t_start;
    int64_t timed = S;
    printf("{\"mode\": \"%s\", \"samples\": %lld, \"batch\": %d, \"threads\": %d, \"images\": %lld, "
           "\"decode_s\": %.4f, \"upload_s\": %.4f, \"seconds\": %.4f, \"samples_per_s\": %.1f}\n",
           device_mode ? "device" : "stream", (long long)timed, B, T, (long long)N, decode_s,
           upload_s, secs, secs > 0 ? timed / secs : 0.0);
    lt_cache_close(c);
    return 0;
}
