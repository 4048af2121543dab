/* nndct_lite fused CPU kernels: one pass over memory for what the torch-op path does in several.
 *
 * Built on first use by nndct_lite/numerics/native.py (cc -O3 -march=native -fopenmp
 * [-mprefer-vector-width=512 on x86-64]
 * -fno-math-errno -fno-trapping-math -ffp-contract=off; never -ffast-math, which would change
 * results) and called through ctypes on dense float32 buffers.
 * Every elementwise result is bit-identical to the torch-op path: the same IEEE operations in
 * the same order (multiplications by powers of two, floor/ceil/nearbyint, clamp that keeps NaN).
 * Sums are formed per block of BLOCK elements in float32 and across blocks in double, in block
 * order, so they differ from torch's float32 reductions only in the last bits (and are more
 * accurate), and they do not depend on the number of threads.
 *
 * Threads: each kernel takes `nt`, the caller's torch.get_num_threads(). The library links the
 * libgomp that torch has already loaded (same soname), so a parallel region reuses torch's warm
 * worker threads instead of starting a second pool that would fight them for the cores. Work is
 * split into whole blocks; a thread's partial results go to per-block slots that one thread
 * then adds in block order: the same bits for any `nt`.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define BLOCK 2048
/* below this many elements one thread is faster than waking the others */
#define PARALLEL_MIN 65536

enum { MODE_HALF_EVEN = 0, MODE_HALF_UP = 1, MODE_FLOOR = 2, MODE_CEIL = 3 };

/* torch.clamp semantics: NaN stays NaN */
static inline float clampf(float v, float lo, float hi) {
    v = v < lo ? lo : v;
    return v > hi ? hi : v;
}

static inline int threads_for(int64_t n, int nt) {
    return (n < PARALLEL_MIN || nt < 1) ? 1 : nt;
}

/* ---------------------------------------------------------------- fake quantization, in place */

/* x := clamp(CODE(x), qmin, qmax) * s, block by block */
#define FQ_LOOP(CODE)                                                            \
    int64_t nb = (n + BLOCK - 1) / BLOCK;                                        \
    _Pragma("omp parallel for schedule(static) num_threads(threads_for(n, nt))") \
    for (int64_t b = 0; b < nb; ++b) {                                           \
        int64_t e = (b + 1) * BLOCK < n ? (b + 1) * BLOCK : n;                   \
        _Pragma("omp simd")                                                      \
        for (int64_t i = b * BLOCK; i < e; ++i)                                  \
            x[i] = clampf(CODE(x[i]), qmin, qmax) * s;                           \
    }

/* half_up: code = ceil(floor(x * m2) * 0.5), m2 = 2 * 2^fp, s = 2^-fp */
#define HALF_UP_CODE(v) ceilf(floorf((v) * m2) * 0.5f)
void nl_fq_half_up(float *x, int64_t n, float m2, float s, float qmin, float qmax, int nt) {
    FQ_LOOP(HALF_UP_CODE)
}

/* half_even: code = nearbyint(x * m), m = 2^fp */
#define HALF_EVEN_CODE(v) nearbyintf((v) * m)
void nl_fq_half_even(float *x, int64_t n, float m, float s, float qmin, float qmax, int nt) {
    FQ_LOOP(HALF_EVEN_CODE)
}

/* ---------------------------------------------------------------- the diffs search */

/* Candidate j's error, scaled: with t = x * 2^f0 (exact) and t_j = t * 2^j (exact),
 * x - clamp(round(x * 2^fj)) * 2^-fj = (t_j - clamp(round(t_j))) * 2^-fj exactly (both
 * differences are exact: Sterbenz), so each block sums d^2 for d = t_j - q in units of the
 * candidate's step and the caller scales by 4^-fj, a power of two: the same sum as on the
 * unscaled values, minus their underflow. */
#define ERROR_LOOP(ROUND)                                                        \
    _Pragma("omp parallel for schedule(static) num_threads(threads_for(n, nt))") \
    for (int64_t b = 0; b < nb; ++b) {                                           \
        int64_t lo = b * BLOCK, e = lo + BLOCK < n ? lo + BLOCK : n;             \
        for (int j = 0; j < k; ++j) {                                            \
            float mj = m[j], acc = 0.0f;                                         \
            _Pragma("omp simd reduction(+:acc)")                                 \
            for (int64_t i = lo; i < e; ++i) {                                   \
                float t = x[i] * mj;                                             \
                float d = t - clampf(ROUND(t), qmin, qmax);                      \
                acc += d * d;                                                    \
            }                                                                    \
            part[b * k + j] = acc;                                               \
        }                                                                        \
    }

/* out[j] = sum_i (x_i - clamp(round(x_i * m[j]), qmin, qmax) * s[j])^2 for j < k.
 * Rounding: half_even for the round-to-nearest modes (the same |error| as any tie rule),
 * floor or ceil for those modes. Returns -1 when the scratch cannot be allocated. */
int nl_diffs_errors(const float *x, int64_t n, const float *m, const float *s, int k,
                    int mode, float qmin, float qmax, double *out, int nt) {
    int64_t nb = (n + BLOCK - 1) / BLOCK;
    float *part = (float *)malloc(sizeof(float) * (size_t)(nb > 0 ? nb : 1) * (size_t)k);
    if (part == NULL) return -1;
    if (mode == MODE_FLOOR) {
        ERROR_LOOP(floorf)
    } else if (mode == MODE_CEIL) {
        ERROR_LOOP(ceilf)
    } else {
        ERROR_LOOP(nearbyintf)
    }
    for (int j = 0; j < k; ++j) out[j] = 0.0;
    for (int64_t b = 0; b < nb; ++b)
        for (int j = 0; j < k; ++j) out[j] += (double)part[b * k + j];
    for (int j = 0; j < k; ++j) out[j] *= (double)s[j] * (double)s[j];
    free(part);
    return 0;
}

/* ---------------------------------------------------------------- bias-correction statistics */

/* q, f: (outer, channels, inner) dense float32. sums[0] += f^2, sums[1] += (q - f)^2,
 * csum[c] += (q - f) over outer and inner. Returns -1 when the scratch cannot be allocated. */
int nl_bc_stats(const float *q, const float *f, int64_t outer, int64_t channels, int64_t inner,
                double *sums, double *csum, int nt) {
    double sig = 0.0, noi = 0.0;
    for (int64_t c = 0; c < channels; ++c) csum[c] = 0.0;
    if (inner == 1) {   /* channels-last or (N, C): chunks of whole rows, per-channel partials */
        int64_t rpc = channels >= BLOCK ? 1 : BLOCK / channels;      /* rows per chunk */
        int64_t nch = (outer + rpc - 1) / rpc, width = 3 * channels;
        float *part = (float *)malloc(sizeof(float) * (size_t)(nch > 0 ? nch : 1) * (size_t)width);
        if (part == NULL) return -1;
        /* per-channel accumulators for all three sums: no horizontal reduction per row */
#pragma omp parallel for schedule(static) num_threads(threads_for(outer * channels, nt))
        for (int64_t ch = 0; ch < nch; ++ch) {
            float *p1 = part + ch * width, *p2 = p1 + channels, *p3 = p2 + channels;
            int64_t lo = ch * rpc, hi = lo + rpc < outer ? lo + rpc : outer;
            for (int64_t c = 0; c < width; ++c) p1[c] = 0.0f;
            for (int64_t o = lo; o < hi; ++o) {
                const float *qo = q + o * channels, *fo = f + o * channels;
#pragma omp simd
                for (int64_t c = 0; c < channels; ++c) {
                    float fv = fo[c], e = qo[c] - fv;
                    p1[c] += fv * fv;
                    p2[c] += e * e;
                    p3[c] += e;
                }
            }
        }
        for (int64_t ch = 0; ch < nch; ++ch) {
            const float *p1 = part + ch * width, *p2 = p1 + channels, *p3 = p2 + channels;
            for (int64_t c = 0; c < channels; ++c) {
                sig += p1[c];
                noi += p2[c];
                csum[c] += p3[c];
            }
        }
        free(part);
        sums[0] = sig;
        sums[1] = noi;
        return 0;
    }
    int64_t rows = outer * channels, per_row = (inner + BLOCK - 1) / BLOCK;
    float *part = (float *)malloc(sizeof(float) * 3 * (size_t)(rows * per_row > 0 ? rows * per_row : 1));
    if (part == NULL) return -1;
#pragma omp parallel for schedule(static) num_threads(threads_for(rows * inner, nt))
    for (int64_t r = 0; r < rows; ++r) {
        const float *qb = q + r * inner, *fb = f + r * inner;
        for (int64_t bi = 0; bi < per_row; ++bi) {
            int64_t lo = bi * BLOCK, e = lo + BLOCK < inner ? lo + BLOCK : inner;
            float s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
#pragma omp simd reduction(+:s1, s2, s3)
            for (int64_t i = lo; i < e; ++i) {
                float fv = fb[i], d = qb[i] - fv;
                s1 += fv * fv;
                s2 += d * d;
                s3 += d;
            }
            float *p = part + 3 * (r * per_row + bi);
            p[0] = s1;
            p[1] = s2;
            p[2] = s3;
        }
    }
    for (int64_t r = 0; r < rows; ++r) {
        int64_t c = r % channels;
        for (int64_t bi = 0; bi < per_row; ++bi) {
            const float *p = part + 3 * (r * per_row + bi);
            sig += p[0];
            noi += p[1];
            csum[c] += p[2];
        }
    }
    free(part);
    sums[0] = sig;
    sums[1] = noi;
    return 0;
}
