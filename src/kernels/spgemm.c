/* Zero-skipping / output-masked GEMM (spgemm.h). */
#include "kernels/spgemm.h"

static float at(const float *X, int t, int ld, int r, int c) {
    return t ? X[(int64_t)c * ld + r] : X[(int64_t)r * ld + c];
}

void et_sgemm_sparse_ref(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                         float beta, float *C, int ldc, int skip_zeros, const uint8_t *mask, int ldmask,
                         et_spgemm_stats *st) {
    et_sgemm(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
    uint64_t elem = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            if (mask && !mask[(int64_t)i * ldmask + j]) {
                C[(int64_t)i * ldc + j] = 0.0f;
                continue;
            }
            if (!skip_zeros) {
                elem += (uint64_t)K;
                continue;
            }
            for (int k = 0; k < K; k++)
                elem += at(A, ta, lda, i, k) != 0.0f && at(B, tb, ldb, k, j) != 0.0f;
        }
    if (st) {
        st->macs_elem = elem;
        st->macs_cpu = (uint64_t)M * (uint64_t)N * (uint64_t)K;
    }
}

void et_sgemm_sparse(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                     float beta, float *C, int ldc, int skip_zeros, const uint8_t *mask, int ldmask,
                     et_spgemm_stats *st) {
    et_sgemm_sparse_ref(ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc, skip_zeros, mask, ldmask, st);
}
