/* ops_cpu.c: the CPU implementation of ops.h, the reference backend: fp32, GEMMs through
 * OpenBLAS's cblas_sgemm (single-threaded calls, split across OpenMP threads: see lt_op_gemm),
 * everything else plain loops parallelised with OpenMP (static schedules, so results are bitwise
 * reproducible for a fixed thread count). */
#include "nn/ops.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

/* expf and erff have vector variants in glibc's libmvec (x86-64, linked through libm); declaring
 * them `omp declare simd` lets the `omp simd` loops below (GELU, SwiGLU, softmax) call 8 at a
 * time instead of one. They agree with the scalar functions to a few ulp. */
#pragma omp declare simd notinbranch
extern float expf(float);
#pragma omp declare simd notinbranch
extern float erff(float);

/* GEMMs are parallelised here with OpenMP, each thread calling a single-threaded OpenBLAS sgemm on
 * its own block of rows (or columns) of C. Why not OpenBLAS's own threads: Debian's default
 * OpenBLAS is the pthreads build, whose worker threads and OpenMP's both spin-wait after each
 * call; interleaving the two pools (GEMM, then a LayerNorm, then a GEMM...) makes them fight over
 * the cores (measured: ViT-B forward 3x slower on 2 cores). One pool, OpenMP's, avoids that and
 * makes the partition, hence the result, a function of the thread count only. */
/* OpenBLAS is switched to one thread for the duration of an op and restored after, so code that
 * calls cblas directly keeps the lt_threads_set() count. Not for use inside a parallel region. */
static int blas_enter(void) {
    int n = openblas_get_num_threads();
    if (n != 1) openblas_set_num_threads(1);
    return n;
}
static void blas_leave(int n) {
    if (n != 1) openblas_set_num_threads(n);
}

int lt_op_blas_single_enter(void) { return blas_enter(); }
void lt_op_blas_single_leave(int saved) { blas_leave(saved); }

void lt_op_gemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,
                int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    const CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans;
    const CBLAS_TRANSPOSE tb = trans_b ? CblasTrans : CblasNoTrans;
    if (omp_in_parallel()) { /* the caller parallelises: one single-threaded GEMM */
        cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    const int saved = blas_enter();
    int nt = omp_get_max_threads();
    if ((int64_t)M * N * K < (1 << 18)) nt = 1;
    if (nt <= 1) {
        cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        blas_leave(saved);
        return;
    }
    /* split M or N into nt contiguous parts (multiples of 16 where possible). Every thread packs
     * the whole of the operand that is not split, so split the dimension of the larger one:
     * M when M >= N (B, K x N, is the smaller), else N, unless N is too short to share. (The
     * weight gradient of a conv, (Cout, K) += dyᵀ · col with Cout < K, splits N: each thread
     * then packs half of the large im2col matrix instead of all of it.) */
    const int split_m = M >= N || N < 16 * nt;
    const int len = split_m ? M : N;
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int t = 0; t < nt; t++) {
        int per = (len + nt - 1) / nt;
        if (per > 16) per = (per + 15) / 16 * 16;
        int a = t * per, b = a + per < len ? a + per : len;
        if (a >= b) continue;
        if (split_m) {
            const float *At = trans_a ? A + a : A + (int64_t)a * lda;
            cblas_sgemm(CblasRowMajor, ta, tb, b - a, N, K, alpha, At, lda, B, ldb, beta,
                        C + (int64_t)a * ldc, ldc);
        } else {
            const float *Bt = trans_b ? B + (int64_t)a * ldb : B + a;
            cblas_sgemm(CblasRowMajor, ta, tb, M, b - a, K, alpha, A, lda, Bt, ldb, beta, C + a,
                        ldc);
        }
    }
    blas_leave(saved);
}

void lt_op_layernorm(float *out, const float *in, const float *w, const float *b, int M, int C,
                     float eps) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < M; i++) {
        const float *x = in + (int64_t)i * C;
        float *y = out + (int64_t)i * C;
        double s = 0.0;
        #pragma omp simd reduction(+ : s)
        for (int c = 0; c < C; c++) s += x[c];
        double mean = s / C, v = 0.0;
        #pragma omp simd reduction(+ : v)
        for (int c = 0; c < C; c++) {
            double d = x[c] - mean;
            v += d * d;
        }
        float rstd = (float)(1.0 / sqrt(v / C + eps));
        float m = (float)mean;
        #pragma omp simd
        for (int c = 0; c < C; c++) y[c] = (x[c] - m) * rstd * w[c] + b[c];
    }
}

void lt_op_gelu(float *out, const float *in, int64_t n) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float x = in[i];
        out[i] = 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    }
}

void lt_op_swiglu(float *out, const float *in, int M, int H) {
    if (out == in) { /* in place: row i's output lies before row i's input, go serially */
        for (int i = 0; i < M; i++) {
            const float *x = in + (int64_t)i * 2 * H;
            float *y = out + (int64_t)i * H;
            for (int j = 0; j < H; j++) {
                float a = x[j], g = x[H + j];
                y[j] = a / (1.0f + expf(-a)) * g;
            }
        }
        return;
    }
#pragma omp parallel for schedule(static)
    for (int i = 0; i < M; i++) {
        const float *x = in + (int64_t)i * 2 * H;
        float *y = out + (int64_t)i * H;
        #pragma omp simd
        for (int j = 0; j < H; j++) {
            float a = x[j], g = x[H + j];
            y[j] = a / (1.0f + expf(-a)) * g;
        }
    }
}

static void softmax_row(float *r, int N) {
    float mx = r[0];
    #pragma omp simd reduction(max : mx)
    for (int j = 1; j < N; j++) mx = r[j] > mx ? r[j] : mx;
    float s = 0.0f;
    #pragma omp simd reduction(+ : s)
    for (int j = 0; j < N; j++) {
        r[j] = expf(r[j] - mx);
        s += r[j];
    }
    float inv = 1.0f / s;
    for (int j = 0; j < N; j++) r[j] *= inv;
}

void lt_op_softmax(float *x, int M, int N) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < M; i++) softmax_row(x + (int64_t)i * N, N);
}

int64_t lt_op_attention_scratch(int N) { return (int64_t)omp_get_max_threads() * N * N; }

void lt_op_attention(float *out, const float *qkv, float *scratch, int B, int N, int heads,
                     int hd) {
    const int D = heads * hd, ld = 3 * D;
    const float scale = 1.0f / sqrtf((float)hd);
    const int saved = blas_enter();
    /* One (batch, head) per iteration, each thread with its own (N, N) score matrix. */
#pragma omp parallel for schedule(static)
    for (int bh = 0; bh < B * heads; bh++) {
        const int b = bh / heads, h = bh % heads;
        float *S = scratch + (int64_t)omp_get_thread_num() * N * N;
        const float *q = qkv + (int64_t)b * N * ld + h * hd; /* (N, hd), row stride 3D */
        const float *k = q + D;
        const float *v = q + 2 * D;
        float *o = out + (int64_t)b * N * D + h * hd; /* (N, hd), row stride D */
        /* S (N,N) = scale · Q Kᵀ */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, N, hd, scale, q, ld, k, ld, 0.0f,
                    S, N);
        for (int i = 0; i < N; i++) softmax_row(S + (int64_t)i * N, N);
        /* O (N,hd) = S V */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, hd, N, 1.0f, S, N, v, ld, 0.0f,
                    o, D);
    }
    blas_leave(saved);
}

void lt_op_layerscale_add(float *x, const float *y, const float *gamma, int M, int C) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < M; i++) {
        float *xr = x + (int64_t)i * C;
        const float *yr = y + (int64_t)i * C;
        if (gamma)
            for (int c = 0; c < C; c++) xr[c] += gamma[c] * yr[c];
        else
            for (int c = 0; c < C; c++) xr[c] += yr[c];
    }
}

void lt_op_patchify(float *out, const float *x, int B, int H, int W, int C, int p) {
    const int gh = H / p, gw = W / p, K = C * p * p;
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int gy = 0; gy < gh; gy++)
            for (int gx = 0; gx < gw; gx++) {
                float *row = out + (((int64_t)b * gh + gy) * gw + gx) * K;
                for (int ky = 0; ky < p; ky++) {
                    const float *src = x + (((int64_t)b * H + gy * p + ky) * W + gx * p) * C;
                    for (int kx = 0; kx < p; kx++)
                        for (int c = 0; c < C; c++) row[(c * p + ky) * p + kx] = src[kx * C + c];
                }
            }
}

/* Cubic convolution weights of PyTorch (upsample_bicubic2d), A = -0.75, for fraction t. */
static void cubic_coeffs(float w[4], float t) {
    const float A = -0.75f;
    float x1 = t + 1.0f, x2 = 1.0f - t, x3 = 2.0f - t;
    w[0] = ((A * x1 - 5.0f * A) * x1 + 8.0f * A) * x1 - 4.0f * A;
    w[1] = ((A + 2.0f) * t - (A + 3.0f)) * t * t + 1.0f;
    w[2] = ((A + 2.0f) * x2 - (A + 3.0f)) * x2 * x2 + 1.0f;
    w[3] = ((A * x3 - 5.0f * A) * x3 + 8.0f * A) * x3 - 4.0f * A;
}

/* Source taps (clamped indices) and weights of output position i along one axis. */
static void cubic_taps(int i, int in_size, int out_size, double scale, int idx[4], float w[4]) {
    /* PyTorch: scale given → 1/scale_factor, else in/out; computed in the input's float type. */
    float sc = scale > 0.0 ? (float)(1.0 / scale) : (float)in_size / (float)out_size;
    float real = (float)(sc * (i + 0.5) - 0.5);
    int64_t f = (int64_t)floorf(real);
    if (f > in_size - 1) f = in_size - 1;
    float t = real - (float)f;
    t = t < 0.0f ? 0.0f : t > 1.0f ? 1.0f : t;
    cubic_coeffs(w, t);
    for (int j = 0; j < 4; j++) {
        int64_t k = f - 1 + j;
        idx[j] = (int)(k < 0 ? 0 : k > in_size - 1 ? in_size - 1 : k);
    }
}

void lt_op_bicubic(float *out, const float *in, int ih, int iw, int oh, int ow, int C,
                   double scale_h, double scale_w) {
#pragma omp parallel for schedule(static)
    for (int oy = 0; oy < oh; oy++) {
        int yi[4], xi[4];
        float wy[4], wx[4];
        cubic_taps(oy, ih, oh, scale_h, yi, wy);
        for (int ox = 0; ox < ow; ox++) {
            cubic_taps(ox, iw, ow, scale_w, xi, wx);
            float *o = out + ((int64_t)oy * ow + ox) * C;
            for (int c = 0; c < C; c++) {
                /* as PyTorch: sum over rows of w_y · (sum over columns of w_x · src) */
                float acc = 0.0f;
                for (int a = 0; a < 4; a++) {
                    const float *r = in + (int64_t)yi[a] * iw * C + c;
                    float t = r[(int64_t)xi[0] * C] * wx[0];
                    for (int b = 1; b < 4; b++) t += r[(int64_t)xi[b] * C] * wx[b];
                    acc = a ? acc + t * wy[a] : t * wy[a];
                }
                o[c] = acc;
            }
        }
    }
}

/* Channels per block of the bias-gradient reduction (one 64-byte cache line of floats). */
#define CBLK 16

/* ------------------------------------------------------------------------------------------ */
/* linear                                                                                      */

int lt_op_linear(float *y, const float *x, const float *w, const float *b, int M, int K, int N) {
    if (M <= 0) return 0;
    /* the bias first, then the GEMM adds onto it (beta 1): no second pass over y */
    if (b) {
#pragma omp parallel for schedule(static)
        for (int i = 0; i < M; i++) memcpy(y + (int64_t)i * N, b, (size_t)N * sizeof(float));
    }
    lt_op_gemm(0, 1, M, N, K, 1.0f, x, K, w, K, b ? 1.0f : 0.0f, y, N);
    return 0;
}

int lt_op_linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                          const float *w, int M, int K, int N, int accumulate) {
    if (dw)
        lt_op_gemm(1, 0, N, K, M, 1.0f, dy, N, x, K,
                    accumulate ? 1.0f : 0.0f, dw, K);
    if (db) {
        const int nblk = (N + CBLK - 1) / CBLK;
#pragma omp parallel for schedule(static)
        for (int blk = 0; blk < nblk; blk++) {
            const int c0 = blk * CBLK, nc = N - c0 < CBLK ? N - c0 : CBLK;
            double s[CBLK] = {0};
            for (int64_t i = 0; i < M; i++)
                for (int c = 0; c < nc; c++) s[c] += dy[i * N + c0 + c];
            for (int c = 0; c < nc; c++)
                db[c0 + c] = (float)(accumulate ? db[c0 + c] + s[c] : s[c]);
        }
    }
    if (dx)
        lt_op_gemm(0, 0, M, K, N, 1.0f, dy, N, w, K, 0.0f,
                    dx, K);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* L2 normalisation                                                                            */

int lt_op_l2norm(float *y, float *norm, const float *x, int B, int D) {
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        const float *xr = x + (int64_t)b * D;
        float *yr = y + (int64_t)b * D;
        double ss = 0.0;
        for (int d = 0; d < D; d++) ss += (double)xr[d] * xr[d];
        float n = (float)sqrt(ss);
        if (norm) norm[b] = n;
        float den = n > LT_L2NORM_EPS ? n : LT_L2NORM_EPS;
        for (int d = 0; d < D; d++) yr[d] = xr[d] / den;
    }
    return 0;
}

int lt_op_l2norm_backward(float *dx, const float *dy, const float *y, const float *norm, int B,
                        int D) {
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        const float *dyr = dy + (int64_t)b * D;
        const float *yr = y + (int64_t)b * D;
        float *dxr = dx + (int64_t)b * D;
        float n = norm[b];
        if (n >= LT_L2NORM_EPS) {
            /* y = x/n: dx = (dy − y⟨y,dy⟩)/n. */
            double dot = 0.0;
            for (int d = 0; d < D; d++) dot += (double)yr[d] * dyr[d];
            float fdot = (float)dot;
            for (int d = 0; d < D; d++) dxr[d] = (dyr[d] - yr[d] * fdot) / n;
        } else {
            /* Clamped: the denominator is the constant eps. */
            for (int d = 0; d < D; d++) dxr[d] = dyr[d] / LT_L2NORM_EPS;
        }
    }
    return 0;
}
