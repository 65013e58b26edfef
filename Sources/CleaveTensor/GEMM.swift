import COpenBLAS

/// Single-precision matrix multiply on row-major matrices, through OpenBLAS.
///
/// Computes `C = alpha · op(A) · op(B) + beta · C` where `op` transposes when asked.
/// `A` is `m×k` after `op`, `B` is `k×n` after `op`, `C` is `m×n`; the leading
/// dimensions are the row lengths as stored.
package enum GEMM {
    /// Products of fewer multiply-adds run on one thread (raising it to 2²⁰ or 2²² changed
    /// nothing measurable on MobileNetV2).
    static let parallelThreshold = 1 << 18

    package static func multiply(
        m: Int, n: Int, k: Int,
        a: UnsafePointer<Float>, lda: Int, transposeA: Bool = false,
        b: UnsafePointer<Float>, ldb: Int, transposeB: Bool = false,
        c: UnsafeMutablePointer<Float>, ldc: Int,
        alpha: Float = 1, beta: Float = 0, pool: ThreadPool? = nil
    ) {
        guard m > 0, n > 0 else { return }
        // Split across the pool, by column blocks when C is wide, else by row blocks, each a
        // single-threaded OpenBLAS call on its own part of C (OpenBLAS's own threads would
        // compete with the pool's for the same cores).
        if let pool, pool.threads > 1, k > 0, m * n * k >= GEMM.parallelThreshold {
            let byColumns = n >= m
            let extent = byColumns ? n : m
            let step = 16
            let blocks = (extent + step - 1) / step
            pool.parallelFor(blocks) { range in
                let start = range.lowerBound * step
                let end = min(extent, range.upperBound * step)
                guard start < end else { return }
                if byColumns {
                    multiply(
                        m: m, n: end - start, k: k, a: a, lda: lda, transposeA: transposeA,
                        b: transposeB ? b + start * ldb : b + start, ldb: ldb, transposeB: transposeB,
                        c: c + start, ldc: ldc, alpha: alpha, beta: beta)
                } else {
                    multiply(
                        m: end - start, n: n, k: k, a: transposeA ? a + start : a + start * lda, lda: lda, transposeA: transposeA,
                        b: b, ldb: ldb, transposeB: transposeB, c: c + start * ldc, ldc: ldc, alpha: alpha, beta: beta)
                }
            }
            return
        }
        if k == 0 {
            for row in 0..<m {
                for column in 0..<n { c[row * ldc + column] = beta == 0 ? 0 : beta * c[row * ldc + column] }
            }
            return
        }
        if m == 1 {
            // One row (a classifier at batch 1): OpenBLAS's matrix–vector kernel, which streams
            // B once instead of packing it (0.53 → 0.30 ms for MobileNetV2's 1280 → 1000 head).
            cblas_sgemv(
                CblasRowMajor, transposeB ? CblasNoTrans : CblasTrans,
                blasint(transposeB ? n : k), blasint(transposeB ? k : n),
                alpha, b, blasint(ldb), a, blasint(transposeA ? lda : 1), beta, c, 1)
            return
        }
        cblas_sgemm(
            CblasRowMajor,
            transposeA ? CblasTrans : CblasNoTrans,
            transposeB ? CblasTrans : CblasNoTrans,
            blasint(m), blasint(n), blasint(k),
            alpha, a, blasint(lda), b, blasint(ldb),
            beta, c, blasint(ldc))
    }
}

extension Tensor {
    /// Matrix product of two float32 matrices, `self` (`m×k`) times `other` (`k×n`).
    public func matmul(_ other: Tensor) -> Tensor {
        precondition(rank == 2 && other.rank == 2 && shape[1] == other.shape[0], "matmul of \(shape) and \(other.shape)")
        precondition(dtype == .float32 && other.dtype == .float32, "matmul needs float32")
        let result = Tensor(zeros: [shape[0], other.shape[1]])
        GEMM.multiply(
            m: shape[0], n: other.shape[1], k: shape[1],
            a: pointer(as: Float.self), lda: shape[1],
            b: other.pointer(as: Float.self), ldb: other.shape[1],
            c: result.pointer(as: Float.self), ldc: other.shape[1])
        return result
    }
}
