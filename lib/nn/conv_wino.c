/* conv_wino.c: 3×3 stride-1 convolutions by Winograd's F(2×2, 3×3) (see conv_wino.h).
 *
 * Why it exists: it takes the ResNet student's 3×3 stride-1 convolutions and their gradients
 * below the GEMM-rate bound of im2col + GEMM (2.25x fewer multiplications).
 *
 * With d a 4×4 input tile, g a 3×3 kernel, Y the 2×2 output tile (Lavin & Gray 2015):
 *   Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A,
 *   Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1], G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1],
 *   Aᵀ = [1 1 1 0; 0 1 −1 −1].
 * Summed over input channels, the ⊙ becomes 16 GEMMs, one per position ξ of the 4×4 tile:
 *   M[ξ] (tiles, Cout) = V[ξ] (tiles, Cin) · U[ξ] (Cin, Cout), V = Bᵀ d B, U = G g Gᵀ.
 * The weight gradient runs the same algebra backwards: dM = A dY Aᵀ (4×4 from each 2×2 dY tile),
 *   dU[ξ] (Cin, Cout) = Σ_tiles V[ξ]ᵀ · dM[ξ],   dg = Gᵀ dU G.
 *
 * The tiles go in blocks of nT: a thread transforms a block's input into its own V (16, nT, Cin),
 * runs the 16 single-threaded GEMMs into its M (16, nT, Cout) and transforms M back into y, while
 * the block is still in its cache. The transforms run along the channels, which NHWC keeps
 * contiguous. */
#include "nn/conv_wino.h"

#include <cblas.h>
#include <omp.h>
#include <string.h>

#include "nn/ops.h"
#include "nn/simd.h"

#define LT_INLINE static inline __attribute__((always_inline))
/* Tiles per block: the M of the block's 16 GEMMs. 256 rows amortise the packing of U[ξ] that each
 * GEMM does again (blocks of 32-64 tiles, which kept V and M in L2 at Cin = 512, were 1.5-2x
 * slower); V and M then take 16·256·C floats each (1 MiB at C = 64). */
#define WINO_TILES 256

/* A call's tiling: TY × TX tiles per image, T in all, nblk blocks of (at most) nT tiles. */
typedef struct {
    lt_wino_dims d;
    int TY, TX, nt, nT;
    int64_t T, nblk;
} wplan;

static wplan wino_plan(const lt_wino_dims *d, int threads) {
    wplan p = {.d = *d, .TY = (d->OH + 1) / 2, .TX = (d->OW + 1) / 2};
    p.T = (int64_t)d->B * p.TY * p.TX;
    p.nt = omp_get_max_threads();
    if (p.nt > threads) p.nt = threads;
    if (p.nt < 1) p.nt = 1;
    /* blocks: of at most WINO_TILES tiles, a multiple of the thread count (equal shares) */
    p.nblk = (p.T + WINO_TILES - 1) / WINO_TILES;
    p.nblk = (p.nblk + p.nt - 1) / p.nt * p.nt;
    if (p.nblk > p.T) p.nblk = p.T;
    p.nT = (int)((p.T + p.nblk - 1) / p.nblk);
    return p;
}

/* Floats between the 16 matrices (n, C) of a block: n·C rounded up to an odd number of cache
 * lines, so that the 16 rows a tile transform reads or writes at once fall in different cache
 * sets (a stride of a multiple of 4 KiB made them evict each other: 2-3x slower). */
static int64_t xi_stride(int64_t n, int C) {
    return (((n * C + 15) / 16) | 1) * 16;
}

int lt_wino_applies(int kh, int kw, int stride, int pad) {
    return kh == 3 && kw == 3 && stride == 1 && pad >= 0 && pad <= 2;
}

/* Scratch (floats): [U (16, Cin, Cout)] [zero row (C)] [per thread: V (16, nT, Cin), M (16, nT,
 * Cout), trash row (C)] [dU partials (threads, 16, Cin, Cout)], C = max(Cin, Cout) rounded up to
 * 16 and nT the largest block of any batch up to d->B. */
typedef struct {
    float *U, *zero, *VM, *part;
    int64_t per_thread; /* floats of one thread's V, M and trash row (its last C floats) */
} wlayout;

static int64_t wino_layout(const lt_wino_dims *d, int threads, float *ws, wlayout *l) {
    const int64_t C = ((d->Cin > d->Cout ? d->Cin : d->Cout) + 15) / 16 * 16;
    const int64_t T = (int64_t)d->B * ((d->OH + 1) / 2) * ((d->OW + 1) / 2);
    const int64_t nT = WINO_TILES < T ? WINO_TILES : T;
    const int64_t nU = 16 * (int64_t)d->Cin * d->Cout;
    const int nt = threads > 0 ? threads : 1;
    wlayout o = {.per_thread = 16 * (xi_stride(nT, d->Cin) + xi_stride(nT, d->Cout)) + C};
    int64_t off = 0;
    o.U = ws ? ws + off : NULL, off += nU;
    o.zero = ws ? ws + off : NULL, off += C;
    o.VM = ws ? ws + off : NULL, off += nt * o.per_thread;
    o.part = ws ? ws + off : NULL, off += nt * nU;
    if (l) *l = o;
    return off;
}

int64_t lt_wino_ws_floats(const lt_wino_dims *d, int threads) {
    return wino_layout(d, threads, NULL, NULL);
}

/* ---- transforms ---- */

/* u (4×4, stride su) = G g Gᵀ for one 3×3 kernel g (row stride 3; read flipped when flip). */
LT_INLINE void kernel_transform(float *u, int64_t su, const float *g, int flip) {
    float k[3][3], t[4][3];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) k[i][j] = flip ? g[(2 - i) * 3 + (2 - j)] : g[i * 3 + j];
    for (int j = 0; j < 3; j++) { /* t = G k */
        t[0][j] = k[0][j];
        t[1][j] = 0.5f * (k[0][j] + k[1][j] + k[2][j]);
        t[2][j] = 0.5f * (k[0][j] - k[1][j] + k[2][j]);
        t[3][j] = k[2][j];
    }
    for (int i = 0; i < 4; i++) { /* u = t Gᵀ */
        u[(4 * i + 0) * su] = t[i][0];
        u[(4 * i + 1) * su] = 0.5f * (t[i][0] + t[i][1] + t[i][2]);
        u[(4 * i + 2) * su] = 0.5f * (t[i][0] - t[i][1] + t[i][2]);
        u[(4 * i + 3) * su] = t[i][2];
    }
}

/* U (16, Cin, Cout): U[ξ][i][o] = (G g(o, i) Gᵀ)[ξ], g(o, i) = w[o][i] of w (Cout, Cin, 3, 3),
 * or, when flip, w[i][o] flipped of w (Cin, Cout, 3, 3). */
static void weight_transform(const lt_wino_dims *d, float *U, const float *w, int flip) {
    const int Cin = d->Cin, Cout = d->Cout;
    const int64_t su = (int64_t)Cin * Cout;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < Cin; i++)
        for (int o = 0; o < Cout; o++) {
            const float *g = flip ? w + ((int64_t)i * Cout + o) * 9 : w + ((int64_t)o * Cin + i) * 9;
            kernel_transform(U + (int64_t)i * Cout + o, su, g, flip);
        }
}

/* The 16 rows of input tile t (pointers to C floats; the zero row outside the image). */
static void tile_rows(const wplan *p, const float *x, int C, int64_t t, const float *zero,
                      const float *src[16]) {
    const lt_wino_dims *d = &p->d;
    const int64_t per_img = (int64_t)p->TY * p->TX, b = t / per_img, r = t % per_img;
    const int iy0 = (int)(r / p->TX) * 2 - d->pad, ix0 = (int)(r % p->TX) * 2 - d->pad;
    const float *xb = x + b * d->H * d->W * C;
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            const int iy = iy0 + i, ix = ix0 + j;
            src[4 * i + j] = iy < 0 || iy >= d->H || ix < 0 || ix >= d->W
                                 ? zero
                                 : xb + ((int64_t)iy * d->W + ix) * C;
        }
}

/* dst[ξ][c] = (Bᵀ d B)[ξ] for c < C, d[4i + j] the tile's rows. (The pointers are copied into
 * locals and the 4×4 loops fully unrolled so that the channel loop vectorises.) */
LT_INLINE void input_tile(float *const dst_[16], const float *const src_[16], int C) {
    float *d[16];
    const float *s[16];
    for (int e = 0; e < 16; e++) d[e] = dst_[e], s[e] = src_[e];
    #pragma omp simd
    for (int c = 0; c < C; c++) {
        float t[4][4];
        #pragma GCC unroll 4
        for (int j = 0; j < 4; j++) { /* t = Bᵀ d */
            const float d0 = s[j][c], d1 = s[4 + j][c], d2 = s[8 + j][c], d3 = s[12 + j][c];
            t[0][j] = d0 - d2, t[1][j] = d1 + d2, t[2][j] = d2 - d1, t[3][j] = d1 - d3;
        }
        #pragma GCC unroll 4
        for (int i = 0; i < 4; i++) { /* V = t B */
            d[4 * i + 0][c] = t[i][0] - t[i][2];
            d[4 * i + 1][c] = t[i][1] + t[i][2];
            d[4 * i + 2][c] = t[i][2] - t[i][1];
            d[4 * i + 3][c] = t[i][1] - t[i][3];
        }
    }
}

/* V (16, n, C) = the input transforms of tiles [t0, t0 + n) of x (B, H, W, C). */
LT_INLINE void input_block_any(const wplan *p, float *V, const float *x, int C, int64_t t0, int n,
                               const float *zero) {
    const float *src[16];
    float *dst[16];
    for (int k = 0; k < n; k++) {
        tile_rows(p, x, C, t0 + k, zero, src);
        for (int e = 0; e < 16; e++) dst[e] = V + e * xi_stride(n, C) + (int64_t)k * C;
        input_tile(dst, src, C);
    }
}

/* dst[2a + b][c] (+)= (Aᵀ m A)[a][b], m[ξ] = src[ξ][c]. */
LT_INLINE void output_tile(float *const dst_[4], const float *const src_[16], int C, int add) {
    float *d[4];
    const float *s[16];
    for (int e = 0; e < 16; e++) s[e] = src_[e];
    for (int e = 0; e < 4; e++) d[e] = dst_[e];
    #pragma omp simd
    for (int c = 0; c < C; c++) {
        float u[2][4];
        #pragma GCC unroll 4
        for (int j = 0; j < 4; j++) { /* u = Aᵀ m */
            const float m0 = s[j][c], m1 = s[4 + j][c], m2 = s[8 + j][c], m3 = s[12 + j][c];
            u[0][j] = m0 + m1 + m2, u[1][j] = m1 - m2 - m3;
        }
        #pragma GCC unroll 2
        for (int a = 0; a < 2; a++) { /* Y = u A */
            const float y0 = u[a][0] + u[a][1] + u[a][2], y1 = u[a][1] - u[a][2] - u[a][3];
            d[2 * a][c] = add ? d[2 * a][c] + y0 : y0;
            d[2 * a + 1][c] = add ? d[2 * a + 1][c] + y1 : y1;
        }
    }
}

/* The 4 output rows of tile t in y (B, OH, OW, Cout) (the trash row outside the image). */
static void tile_out_rows(const wplan *p, float *y, int64_t t, float *trash, float *dst[4]) {
    const lt_wino_dims *d = &p->d;
    const int64_t per_img = (int64_t)p->TY * p->TX, b = t / per_img, r = t % per_img;
    const int oy0 = (int)(r / p->TX) * 2, ox0 = (int)(r % p->TX) * 2;
    float *yb = y + b * d->OH * d->OW * d->Cout;
    for (int a = 0; a < 2; a++)
        for (int e = 0; e < 2; e++) {
            const int oy = oy0 + a, ox = ox0 + e;
            dst[2 * a + e] = oy >= d->OH || ox >= d->OW
                                 ? trash
                                 : yb + ((int64_t)oy * d->OW + ox) * d->Cout;
        }
}

/* y (+)= the output transforms of M (16, n, Cout) for tiles [t0, t0 + n). */
LT_INLINE void output_block_any(const wplan *p, float *y, const float *M, int64_t t0, int n,
                                float *trash, int add) {
    const int C = p->d.Cout;
    const float *src[16];
    float *dst[4];
    for (int k = 0; k < n; k++) {
        for (int e = 0; e < 16; e++) src[e] = M + e * xi_stride(n, C) + (int64_t)k * C;
        tile_out_rows(p, y, t0 + k, trash, dst);
        if (add) output_tile(dst, src, C, 1);
        else output_tile(dst, src, C, 0);
    }
}

/* dst[ξ][c] = (A g Aᵀ)[ξ], g the 2×2 tile of rows src[2a + b]. */
LT_INLINE void grad_tile(float *const dst_[16], const float *const src_[4], int C) {
    float *d[16];
    const float *s[4];
    for (int e = 0; e < 16; e++) d[e] = dst_[e];
    for (int e = 0; e < 4; e++) s[e] = src_[e];
    #pragma omp simd
    for (int c = 0; c < C; c++) {
        const float g00 = s[0][c], g01 = s[1][c], g10 = s[2][c], g11 = s[3][c];
        /* r = A g: rows g0, g0 + g1, g0 − g1, −g1 (per column) */
        const float r[4][2] = {{g00, g01}, {g00 + g10, g01 + g11}, {g00 - g10, g01 - g11},
                               {-g10, -g11}};
        #pragma GCC unroll 4
        for (int i = 0; i < 4; i++) { /* dM = r Aᵀ */
            d[4 * i + 0][c] = r[i][0];
            d[4 * i + 1][c] = r[i][0] + r[i][1];
            d[4 * i + 2][c] = r[i][0] - r[i][1];
            d[4 * i + 3][c] = -r[i][1];
        }
    }
}

/* dM (16, n, Cout) = A dY Aᵀ for tiles [t0, t0 + n) of dy (B, OH, OW, Cout). */
LT_INLINE void grad_block_any(const wplan *p, float *dM, const float *dy, int64_t t0, int n,
                              const float *zero) {
    const lt_wino_dims *d = &p->d;
    const int C = d->Cout;
    const int64_t per_img = (int64_t)p->TY * p->TX;
    for (int k = 0; k < n; k++) {
        const int64_t t = t0 + k, b = t / per_img, r = t % per_img;
        const int oy0 = (int)(r / p->TX) * 2, ox0 = (int)(r % p->TX) * 2;
        const float *src[4];
        for (int a = 0; a < 2; a++)
            for (int e = 0; e < 2; e++) {
                const int oy = oy0 + a, ox = ox0 + e;
                src[2 * a + e] = oy >= d->OH || ox >= d->OW
                                     ? zero
                                     : dy + ((b * d->OH + oy) * d->OW + ox) * C;
            }
        float *dst[16];
        for (int e = 0; e < 16; e++) dst[e] = dM + e * xi_stride(n, C) + (int64_t)k * C;
        grad_tile(dst, src, C);
    }
}

/* ---- the block transforms, in an AVX2 and an AVX-512 variant (nn/simd.h) ---- */

static void input_block_avx2(const wplan *p, float *V, const float *x, int C, int64_t t0, int n,
                             const float *zero) {
    input_block_any(p, V, x, C, t0, n, zero);
}
LT_TARGET_AVX512 static void input_block_avx512(const wplan *p, float *V, const float *x, int C,
                                                int64_t t0, int n, const float *zero) {
    input_block_any(p, V, x, C, t0, n, zero);
}
static void input_block(const wplan *p, float *V, const float *x, int C, int64_t t0, int n,
                        const float *zero) {
    if (lt_simd_avx512()) input_block_avx512(p, V, x, C, t0, n, zero);
    else input_block_avx2(p, V, x, C, t0, n, zero);
}

static void output_block_avx2(const wplan *p, float *y, const float *M, int64_t t0, int n,
                              float *trash, int add) {
    output_block_any(p, y, M, t0, n, trash, add);
}
LT_TARGET_AVX512 static void output_block_avx512(const wplan *p, float *y, const float *M,
                                                 int64_t t0, int n, float *trash, int add) {
    output_block_any(p, y, M, t0, n, trash, add);
}
static void output_block(const wplan *p, float *y, const float *M, int64_t t0, int n,
                         float *trash, int add) {
    if (lt_simd_avx512()) output_block_avx512(p, y, M, t0, n, trash, add);
    else output_block_avx2(p, y, M, t0, n, trash, add);
}

static void grad_block_avx2(const wplan *p, float *dM, const float *dy, int64_t t0, int n,
                            const float *zero) {
    grad_block_any(p, dM, dy, t0, n, zero);
}
LT_TARGET_AVX512 static void grad_block_avx512(const wplan *p, float *dM, const float *dy,
                                               int64_t t0, int n, const float *zero) {
    grad_block_any(p, dM, dy, t0, n, zero);
}
static void grad_block(const wplan *p, float *dM, const float *dy, int64_t t0, int n,
                       const float *zero) {
    if (lt_simd_avx512()) grad_block_avx512(p, dM, dy, t0, n, zero);
    else grad_block_avx2(p, dM, dy, t0, n, zero);
}

/* ---- the convolution and its weight gradient ---- */

void lt_wino_forward(const lt_wino_dims *d, int threads, float *y, const float *x,
                     const float *w, int flip, float beta, float *ws) {
    const wplan p = wino_plan(d, threads);
    wlayout l;
    wino_layout(d, threads, ws, &l);
    const int Cin = d->Cin, Cout = d->Cout;
    weight_transform(d, l.U, w, flip);
    memset(l.zero, 0, sizeof(float) * Cin);
    const int saved = lt_op_blas_single_enter();
#pragma omp parallel num_threads(p.nt)
    {
        float *V = l.VM + (int64_t)omp_get_thread_num() * l.per_thread;
        float *trash = V + l.per_thread - ((Cout + 15) / 16 * 16); /* written, never read back */
#pragma omp for schedule(static)
        for (int64_t blk = 0; blk < p.nblk; blk++) {
            const int64_t t0 = blk * p.nT;
            const int n = (int)(p.T - t0 < p.nT ? p.T - t0 : p.nT);
            if (n <= 0) continue;
            float *M = V + 16 * xi_stride(n, Cin);
            input_block(&p, V, x, Cin, t0, n, l.zero);
            for (int e = 0; e < 16; e++)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, Cout, Cin, 1.0f,
                            V + e * xi_stride(n, Cin), Cin, l.U + (int64_t)e * Cin * Cout, Cout,
                            0.0f, M + e * xi_stride(n, Cout), Cout);
            output_block(&p, y, M, t0, n, trash, beta != 0.0f);
        }
    }
    lt_op_blas_single_leave(saved);
}

/* dw[o][i] (3×3) (+)= Gᵀ dU G, dU[ξ] = the sum of the threads' partials for (i, o), in thread
 * order. Parallel over i; o runs innermost, along the partials' rows. */
static void fold_dw(const lt_wino_dims *d, float *dw, const float *part, int nth, int accumulate) {
    const int Cin = d->Cin, Cout = d->Cout;
    const int64_t nU = 16 * (int64_t)Cin * Cout, su = (int64_t)Cin * Cout;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < Cin; i++)
        for (int o = 0; o < Cout; o++) {
            float u[16], t[4][3];
            const float *pu = part + (int64_t)i * Cout + o;
            for (int e = 0; e < 16; e++) {
                float v = 0.0f;
                for (int th = 0; th < nth; th++) v += pu[th * nU + e * su];
                u[e] = v;
            }
            for (int r = 0; r < 4; r++) { /* t = dU G */
                const float *ur = u + 4 * r;
                t[r][0] = ur[0] + 0.5f * (ur[1] + ur[2]);
                t[r][1] = 0.5f * (ur[1] - ur[2]);
                t[r][2] = 0.5f * (ur[1] + ur[2]) + ur[3];
            }
            float *g = dw + ((int64_t)o * Cin + i) * 9;
            for (int j = 0; j < 3; j++) { /* dg = Gᵀ t */
                const float g0 = t[0][j] + 0.5f * (t[1][j] + t[2][j]);
                const float g1 = 0.5f * (t[1][j] - t[2][j]);
                const float g2 = 0.5f * (t[1][j] + t[2][j]) + t[3][j];
                g[j] = accumulate ? g[j] + g0 : g0;
                g[3 + j] = accumulate ? g[3 + j] + g1 : g1;
                g[6 + j] = accumulate ? g[6 + j] + g2 : g2;
            }
        }
}

void lt_wino_dw(const lt_wino_dims *d, int threads, float *dw, const float *dy, const float *x,
                int accumulate, float *ws) {
    const wplan p = wino_plan(d, threads);
    wlayout l;
    wino_layout(d, threads, ws, &l);
    const int Cin = d->Cin, Cout = d->Cout;
    const int64_t nU = 16 * (int64_t)Cin * Cout;
    memset(l.zero, 0, sizeof(float) * (Cin > Cout ? Cin : Cout));
    int nth = 1;
    const int saved = lt_op_blas_single_enter();
#pragma omp parallel num_threads(p.nt)
    {
        const int tid = omp_get_thread_num();
        float *V = l.VM + (int64_t)tid * l.per_thread, *P = l.part + tid * nU;
        memset(P, 0, sizeof(float) * nU);
#pragma omp single nowait
        nth = omp_get_num_threads();
#pragma omp for schedule(static)
        for (int64_t blk = 0; blk < p.nblk; blk++) {
            const int64_t t0 = blk * p.nT;
            const int n = (int)(p.T - t0 < p.nT ? p.T - t0 : p.nT);
            if (n <= 0) continue;
            float *dM = V + 16 * xi_stride(n, Cin);
            input_block(&p, V, x, Cin, t0, n, l.zero);
            grad_block(&p, dM, dy, t0, n, l.zero);
            for (int e = 0; e < 16; e++)
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Cin, Cout, n, 1.0f,
                            V + e * xi_stride(n, Cin), Cin, dM + e * xi_stride(n, Cout), Cout,
                            1.0f, P + e * (int64_t)Cin * Cout, Cout);
        }
    }
    lt_op_blas_single_leave(saved);
    fold_dw(d, dw, l.part, nth, accumulate);
}
