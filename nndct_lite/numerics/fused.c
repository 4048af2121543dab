/* nndct_lite fused CPU kernels: one pass over memory for what the torch-op path does in several.
 *
 * Built on first use by nndct_lite/numerics/native.py (cc -O3 -march=native -fopenmp-simd
 * -fno-math-errno -fno-trapping-math -ffp-contract=off; never -ffast-math, which would change
 * results) and called through ctypes on dense float32 buffers.
 * Every elementwise result is bit-identical to the torch-op path: the same IEEE operations in
 * the same order (multiplications by powers of two, floor/ceil/nearbyint, clamp that keeps NaN).
 * Sums are formed per block of BLOCK elements in float32 and across blocks in double, so they
 * differ from torch's float32 reductions only in the last bits (and are more accurate).
 */
#include <math.h>
#include <stdint.h>

#define BLOCK 2048

enum { MODE_HALF_EVEN = 0, MODE_HALF_UP = 1, MODE_FLOOR = 2, MODE_CEIL = 3 };

/* torch.clamp semantics: NaN stays NaN */
static inline float clampf(float v, float lo, float hi) {
    v = v < lo ? lo : v;
    return v > hi ? hi : v;
}

/* ---------------------------------------------------------------- fake quantization, in place */

/* x := clamp(ceil(floor(x * m2) * 0.5), qmin, qmax) * s   (half_up, m2 = 2 * 2^fp, s = 2^-fp) */
void nl_fq_half_up(float *x, int64_t n, float m2, float s, float qmin, float qmax) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
        float t = ceilf(floorf(x[i] * m2) * 0.5f);
        x[i] = clampf(t, qmin, qmax) * s;
    }
}

/* x := clamp(nearbyint(x * m), qmin, qmax) * s   (half_even) */
void nl_fq_half_even(float *x, int64_t n, float m, float s, float qmin, float qmax) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
        float t = nearbyintf(x[i] * m);
        x[i] = clampf(t, qmin, qmax) * s;
    }
}

/* ---------------------------------------------------------------- the diffs search */

#define ERROR_LOOP(ROUND)                                                        \
    for (int64_t b = 0; b < n; b += BLOCK) {                                     \
        int64_t e = b + BLOCK < n ? b + BLOCK : n;                               \
        for (int j = 0; j < k; ++j) {                                            \
            float mj = m[j], sj = s[j], acc = 0.0f;                              \
            _Pragma("omp simd reduction(+:acc)")                                 \
            for (int64_t i = b; i < e; ++i) {                                    \
                float q = clampf(ROUND(x[i] * mj), qmin, qmax);                  \
                float d = x[i] - q * sj;                                         \
                acc += d * d;                                                    \
            }                                                                    \
            out[j] += (double)acc;                                               \
        }                                                                        \
    }

/* out[j] = sum_i (x_i - clamp(round(x_i * m[j]), qmin, qmax) * s[j])^2 for j < k.
 * Rounding: half_even for the round-to-nearest modes (the same |error| as any tie rule),
 * floor or ceil for those modes. */
void nl_diffs_errors(const float *x, int64_t n, const float *m, const float *s, int k,
                     int mode, float qmin, float qmax, double *out) {
    for (int j = 0; j < k; ++j) out[j] = 0.0;
    if (mode == MODE_FLOOR) {
        ERROR_LOOP(floorf)
    } else if (mode == MODE_CEIL) {
        ERROR_LOOP(ceilf)
    } else {
        ERROR_LOOP(nearbyintf)
    }
}

/* ---------------------------------------------------------------- bias-correction statistics */

/* q, f: (outer, channels, inner) dense float32. sums[0] += f^2, sums[1] += (q - f)^2,
 * csum[c] += (q - f) over outer and inner. */
void nl_bc_stats(const float *q, const float *f, int64_t outer, int64_t channels, int64_t inner,
                 double *sums, double *csum) {
    double sig = 0.0, noi = 0.0;
    for (int64_t c = 0; c < channels; ++c) csum[c] = 0.0;
    if (inner == 1) {
        for (int64_t o = 0; o < outer; ++o) {
            const float *qo = q + o * channels, *fo = f + o * channels;
            float s1 = 0.0f, s2 = 0.0f;
#pragma omp simd reduction(+:s1, s2)
            for (int64_t c = 0; c < channels; ++c) {
                float fv = fo[c], e = qo[c] - fv;
                s1 += fv * fv;
                s2 += e * e;
                csum[c] += (double)e;
            }
            sig += s1;
            noi += s2;
        }
    } else {
        for (int64_t o = 0; o < outer; ++o) {
            for (int64_t c = 0; c < channels; ++c) {
                const float *qb = q + (o * channels + c) * inner;
                const float *fb = f + (o * channels + c) * inner;
                for (int64_t b = 0; b < inner; b += BLOCK) {
                    int64_t e = b + BLOCK < inner ? b + BLOCK : inner;
                    float s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
#pragma omp simd reduction(+:s1, s2, s3)
                    for (int64_t i = b; i < e; ++i) {
                        float fv = fb[i], d = qb[i] - fv;
                        s1 += fv * fv;
                        s2 += d * d;
                        s3 += d;
                    }
                    sig += s1;
                    noi += s2;
                    csum[c] += s3;
                }
            }
        }
    }
    sums[0] = sig;
    sums[1] = noi;
}
