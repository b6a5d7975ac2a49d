/* test_recipe.c: statistics and invariants of the view recipes (recipe.c), the deterministic
 * exp/log, and lt_mix_normalize. Rates are checked to about 4 standard deviations over N draws.
 * (Pixel-level checks of rendering against PIL/torchvision live in tests/py/test_render.py.) */
#include <math.h>
#include <string.h>

#include "check.h"
#include "image/recipe.h"
#include "image/render.h"

#define N 20000

/* Tolerance of a rate p estimated from n Bernoulli draws: 4 sigma. */
static double tol4(double p, int n) { return 4.0 * sqrt(p * (1.0 - p) / n); }

static int perm_index(const uint8_t o[4]) { /* Lehmer code of a permutation of 0..3, or -1 */
    int seen = 0, idx = 0;
    for (int i = 0; i < 4; i++) {
        if (o[i] > 3 || (seen >> o[i] & 1)) return -1;
        int smaller = 0;
        for (int j = 0; j < o[i]; j++) smaller += !(seen >> j & 1);
        idx = idx * (4 - i) + smaller;
        seen |= 1 << o[i];
    }
    return idx;
}

static void test_default(void) {
    lt_transform t;
    lt_transform_default(&t);
    CHECK(t.image_size == 224);
    CHECK(t.crop_scale[0] == 0.14f && t.crop_scale[1] == 1.0f);
    CHECK(t.crop_ratio[0] == 0.75f && fabsf(t.crop_ratio[1] - 4.0f / 3.0f) < 1e-7f);
    CHECK(t.hflip_p == 0.5f && t.jitter_p == 0.8f && t.gray_p == 0.2f);
    CHECK(t.jitter[0] == 0.4f && t.jitter[1] == 0.4f && t.jitter[2] == 0.2f && t.jitter[3] == 0.1f);
    CHECK(t.blur_sigma[0] == 0.0f && t.blur_sigma[1] == 0.1f);
    CHECK(t.mean[0] == 0.485f && t.mean[1] == 0.456f && t.mean[2] == 0.406f);
    CHECK(t.std[0] == 0.229f && t.std[1] == 0.224f && t.std[2] == 0.225f);
}

static void test_recipe_stats(int W, int H) {
    lt_transform t;
    lt_transform_default(&t);
    int flips = 0, jit = 0, grays = 0, bad_crop = 0, bad_area = 0, bad_ratio = 0, bad_order = 0;
    int bad_factor = 0, bad_identity = 0, bad_sigma = 0, order_count[24] = {0};
    double sigma_sum = 0;
    for (uint32_t v = 0; v < N; v++) {
        lt_recipe r;
        lt_recipe_draw(&t, 42, 7, v, 0, W, H, &r);
        const int32_t *c = r.crop;
        if (c[0] < 0 || c[1] < 0 || c[2] < 1 || c[3] < 1 || c[0] + c[2] > W || c[1] + c[3] > H)
            bad_crop++;
        /* w, h are rounded to integers: allow half a pixel on each side. */
        double area = (double)c[2] * c[3] / ((double)W * H);
        if (area > 1.0 || (area < 0.14 && (c[2] + 0.5) * (c[3] + 0.5) / ((double)W * H) < 0.14))
            bad_area++;
        double rlo = (c[2] - 0.5) / (c[3] + 0.5), rhi = (c[2] + 0.5) / (c[3] - 0.5);
        if (rhi < 0.75 || rlo > 4.0 / 3.0) bad_ratio++;
        flips += r.flip;
        grays += r.gray;
        if (r.blur_sigma < 0 || r.blur_sigma > 0.1f) bad_sigma++;
        sigma_sum += r.blur_sigma;
        int pi = perm_index(r.order);
        if (pi < 0) bad_order++;
        if (r.jitter) {
            jit++;
            if (pi >= 0) order_count[pi]++;
            if (r.factor[0] < 0.6f || r.factor[0] > 1.4f || r.factor[1] < 0.6f ||
                r.factor[1] > 1.4f || r.factor[2] < 0.8f || r.factor[2] > 1.2f ||
                r.factor[3] < -0.1f || r.factor[3] > 0.1f)
                bad_factor++;
        } else if (r.factor[0] != 1 || r.factor[1] != 1 || r.factor[2] != 1 || r.factor[3] != 0 ||
                   pi != 0) {
            bad_identity++;
        }
    }
    CHECK_MSG(bad_crop == 0, "%dx%d: %d crops outside the image", W, H, bad_crop);
    CHECK_MSG(bad_area == 0, "%dx%d: %d crops with area fraction outside [0.14, 1]", W, H, bad_area);
    CHECK_MSG(bad_ratio == 0, "%dx%d: %d crops with ratio outside [3/4, 4/3]", W, H, bad_ratio);
    CHECK_MSG(fabs(flips / (double)N - 0.5) < tol4(0.5, N), "flip rate %g", flips / (double)N);
    CHECK_MSG(fabs(jit / (double)N - 0.8) < tol4(0.8, N), "jitter rate %g", jit / (double)N);
    CHECK_MSG(fabs(grays / (double)N - 0.2) < tol4(0.2, N), "gray rate %g", grays / (double)N);
    CHECK(bad_order == 0);
    CHECK(bad_factor == 0);
    CHECK(bad_identity == 0);
    CHECK(bad_sigma == 0);
    CHECK_MSG(fabs(sigma_sum / N - 0.05) < 4 * 0.1 / sqrt(12.0 * N), "sigma mean %g", sigma_sum / N);
    for (int k = 0; k < 24; k++) {
        double p = 1.0 / 24;
        CHECK_MSG(fabs(order_count[k] - jit * p) < 4 * sqrt(jit * p * (1 - p)),
                  "jitter order %d seen %d times of %d", k, order_count[k], jit);
    }
}

/* Factor distributions: uniform over their ranges (mean and spread). */
static void test_factor_dist(void) {
    lt_transform t;
    lt_transform_default(&t);
    double sum[4] = {0}, sq[4] = {0};
    int n = 0;
    for (uint32_t v = 0; v < N; v++) {
        lt_recipe r;
        lt_recipe_draw(&t, 3, 1, v, 0, 500, 375, &r);
        if (!r.jitter) continue;
        n++;
        for (int k = 0; k < 4; k++) sum[k] += r.factor[k], sq[k] += (double)r.factor[k] * r.factor[k];
    }
    double mean[4] = {1, 1, 1, 0}, half[4] = {0.4, 0.4, 0.2, 0.1};
    for (int k = 0; k < 4; k++) {
        double m = sum[k] / n, var = sq[k] / n - m * m, sd = half[k] / sqrt(3.0);
        CHECK_MSG(fabs(m - mean[k]) < 4 * sd / sqrt(n), "factor %d mean %g", k, m);
        CHECK_MSG(fabs(sqrt(var) - sd) < 0.03 * sd, "factor %d sd %g (want %g)", k, sqrt(var), sd);
    }
}

static void test_determinism(void) {
    lt_transform t;
    lt_transform_default(&t);
    lt_recipe a, b;
    int same = 1, diff_views = 0, diff_streams = 0, diff_seeds = 0;
    for (uint32_t v = 0; v < 1000; v++) {
        lt_recipe_draw(&t, 5, 11, v, 0, 333, 251, &a);
        lt_recipe_draw(&t, 5, 11, v, 0, 333, 251, &b);
        same &= memcmp(&a, &b, sizeof a) == 0;
        lt_recipe_draw(&t, 5, 11, v + 1, 0, 333, 251, &b);
        diff_views += memcmp(a.crop, b.crop, sizeof a.crop) != 0;
        lt_recipe_draw(&t, 5, 11, v, 1, 333, 251, &b);
        diff_streams += memcmp(a.crop, b.crop, sizeof a.crop) != 0;
        lt_recipe_draw(&t, 6, 11, v, 0, 333, 251, &b);
        diff_seeds += memcmp(a.crop, b.crop, sizeof a.crop) != 0;
    }
    CHECK(same);
    CHECK_MSG(diff_views > 990, "%d", diff_views);
    CHECK_MSG(diff_streams > 990, "%d", diff_streams);
    CHECK_MSG(diff_seeds > 990, "%d", diff_seeds);
}

/* Variables are drawn in a fixed order: changing a probability changes only its own op. */
static void test_fixed_order(void) {
    lt_transform t0, t1;
    lt_transform_default(&t0);
    t1 = t0;
    t0.jitter_p = 0.0f, t1.jitter_p = 1.0f;
    t0.hflip_p = 0.0f, t1.hflip_p = 1.0f;
    int ok = 1;
    for (uint32_t v = 0; v < 2000; v++) {
        lt_recipe a, b;
        lt_recipe_draw(&t0, 9, 4, v, 0, 640, 480, &a);
        lt_recipe_draw(&t1, 9, 4, v, 0, 640, 480, &b);
        ok &= memcmp(a.crop, b.crop, sizeof a.crop) == 0 && a.gray == b.gray &&
              a.blur_sigma == b.blur_sigma && !a.jitter && b.jitter && !a.flip && b.flip;
    }
    CHECK(ok);
}

static void test_crop_edge_cases(void) {
    lt_transform t;
    lt_transform_default(&t);
    lt_recipe r;
    lt_recipe_draw(&t, 1, 0, 0, 0, 1, 1, &r);
    CHECK(r.crop[0] == 0 && r.crop[1] == 0 && r.crop[2] == 1 && r.crop[3] == 1);
    /* A very wide image: every attempt fails, so torchvision's fallback centre crop applies. */
    int fallbacks = 0;
    for (uint32_t v = 0; v < 200; v++) {
        lt_recipe_draw(&t, 1, 0, v, 0, 1000, 10, &r);
        CHECK(r.crop[0] >= 0 && r.crop[0] + r.crop[2] <= 1000 && r.crop[3] <= 10);
        if (r.crop[2] == 13 && r.crop[3] == 10 && r.crop[0] == (1000 - 13) / 2 && r.crop[1] == 0)
            fallbacks++;
    }
    CHECK_MSG(fallbacks > 150, "%d fallbacks of 200", fallbacks);
    lt_recipe_draw(&t, 1, 0, 0, 0, 3, 2000, &r); /* tall: h = round(3 / (3/4)) = 4 */
    CHECK(r.crop[2] >= 1 && r.crop[2] <= 3 && r.crop[1] + r.crop[3] <= 2000);
}

static void test_samples(void) {
    lt_transform t;
    lt_transform_default(&t);
    int32_t ws[5] = {100, 640, 33, 1, 500}, hs[5] = {80, 480, 901, 1, 500};
    int count[5] = {0}, bad = 0, bad_primary = 0;
    double lsum = 0;
    for (uint32_t v = 0; v < N; v++) {
        lt_sample s;
        lt_sample_draw(&t, 77, 1, 5, ws, hs, 2, v, &s);
        lt_recipe p;
        lt_recipe_draw(&t, 77, 2, v, 0, ws[2], hs[2], &p);
        bad_primary += memcmp(&p, &s.r[0], sizeof p) != 0;
        if (s.image[0] != 2 || s.image[1] < 0 || s.image[1] > 4 || s.image[1] == 2) {
            bad++;
            continue;
        }
        count[s.image[1]]++;
        if (!(s.lambda >= 0.0f && s.lambda < 1.0f)) bad++;
        lsum += s.lambda;
        const int32_t *c = s.r[1].crop;
        int pw = ws[s.image[1]], ph = hs[s.image[1]];
        if (c[0] < 0 || c[1] < 0 || c[2] < 1 || c[3] < 1 || c[0] + c[2] > pw || c[1] + c[3] > ph)
            bad++;
    }
    CHECK(bad == 0);
    CHECK(bad_primary == 0);
    CHECK(count[2] == 0);
    for (int i = 0; i < 5; i++)
        if (i != 2)
            CHECK_MSG(fabs(count[i] - N / 4.0) < 4 * sqrt(N * 0.25 * 0.75), "partner %d: %d", i,
                      count[i]);
    CHECK_MSG(fabs(lsum / N - 0.5) < 4 / sqrt(12.0 * N), "lambda mean %g", lsum / N);

    /* Partners of image 0 and of the last image are also never themselves. */
    int self = 0;
    for (uint32_t v = 0; v < 2000; v++) {
        lt_sample s;
        lt_sample_draw(&t, 1, 1, 5, ws, hs, 0, v, &s);
        self += s.image[1] == 0;
        lt_sample_draw(&t, 1, 1, 5, ws, hs, 4, v, &s);
        self += s.image[1] == 4 || s.image[1] < 0;
    }
    CHECK(self == 0);

    /* Without mixup, or with one image: no partner. */
    lt_recipe zero;
    memset(&zero, 0, sizeof zero);
    for (int mode = 0; mode < 2; mode++) {
        lt_sample s;
        if (mode == 0) lt_sample_draw(&t, 77, 0, 5, ws, hs, 1, 3, &s);
        else lt_sample_draw(&t, 77, 1, 1, ws, hs, 0, 3, &s);
        CHECK(s.image[1] == -1 && s.lambda == 1.0f);
        CHECK(memcmp(&s.r[1], &zero, sizeof zero) == 0);
        CHECK(s.r[0].crop[2] >= 1);
    }
    /* Same key, same sample. */
    lt_sample a, b;
    lt_sample_draw(&t, 8, 1, 5, ws, hs, 3, 9, &a);
    lt_sample_draw(&t, 8, 1, 5, ws, hs, 3, 9, &b);
    CHECK(memcmp(&a, &b, sizeof a) == 0);
}

static void test_det_math(void) {
    double worst_exp = 0, worst_log = 0;
    for (int i = -7000; i <= 7000; i++) {
        double x = i * 0.1 + 0.0123;
        double e = lt_det_exp(x), ref = exp(x);
        if (ref > 1e-300 && ref < 1e300) worst_exp = fmax(worst_exp, fabs(e - ref) / ref);
    }
    for (int i = 1; i <= 20000; i++) {
        double x = i * 0.37e-3 * i;
        double l = lt_det_log(x), ref = log(x);
        worst_log = fmax(worst_log, fabs(l - ref) / fmax(1.0, fabs(ref)));
    }
    CHECK_MSG(worst_exp < 4e-15, "exp rel err %g", worst_exp);
    CHECK_MSG(worst_log < 4e-15, "log err %g", worst_log);
    CHECK(lt_det_exp(0.0) == 1.0);
    CHECK(lt_det_exp(-800.0) == 0.0);
    CHECK(lt_det_log(1.0) == 0.0);
    CHECK(isinf(lt_det_log(0.0)) && lt_det_log(0.0) < 0);
}

static void test_mix_normalize(void) {
    enum { P = 257 };
    uint8_t a[P * 3], b[P * 3];
    for (int i = 0; i < P * 3; i++) a[i] = (uint8_t)(i * 7), b[i] = (uint8_t)(255 - i * 3);
    lt_transform t;
    lt_transform_default(&t);
    float out[P * 3];
    double worst = 0;
    float lambdas[3] = {0.0f, 0.3125f, 0.77f};
    for (int k = 0; k < 3; k++) {
        lt_mix_normalize(a, b, lambdas[k], t.mean, t.std, P, out);
        for (int i = 0; i < P * 3; i++) {
            int c = i % 3;
            double ref = (lambdas[k] * a[i] / 255.0 + (1.0 - lambdas[k]) * b[i] / 255.0 - t.mean[c]) /
                         t.std[c];
            worst = fmax(worst, fabs(out[i] - ref));
        }
    }
    lt_mix_normalize(a, NULL, 1.0f, t.mean, t.std, P, out);
    for (int i = 0; i < P * 3; i++) {
        int c = i % 3;
        worst = fmax(worst, fabs(out[i] - (a[i] / 255.0 - t.mean[c]) / t.std[c]));
    }
    CHECK_MSG(worst < 2e-6, "mix_normalize max abs err %g", worst);
}

int main(void) {
    test_default();
    test_recipe_stats(640, 480);
    test_recipe_stats(97, 301); /* tall: many attempts fail, some fall back */
    test_recipe_stats(37, 41);
    test_factor_dist();
    test_determinism();
    test_fixed_order();
    test_crop_edge_cases();
    test_samples();
    test_det_math();
    test_mix_normalize();
    CHECK_DONE();
}
