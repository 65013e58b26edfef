/// Matrix products for convolutions, written with Swift `SIMD16` — an 8 × 32 tile of the
/// result in sixteen vector registers, one fused multiply-add per register per step of the
/// inner dimension — with the convolution's epilogue (bias, residual, activation) applied to
/// each tile as it is stored, while it is in the L1 cache.
///
/// On this machine's shapes (MobileNetV2's 1×1 convolutions, K from 16 to 960) the tile alone
/// reached 54–60 G multiply-adds/s on one core where OpenBLAS's `sgemm` reached 40–50: the
/// matrices are too small for its packing to pay (`docs/benchmarks.md`, step 14). `SIMD16`
/// is one AVX-512 register here, two AVX ones elsewhere on x86, four NEON ones on the boards.
/// The weights are read in place (no packing); products of 48–64 columns use 4 × 64 tiles,
/// narrower ones 8 × 16 tiles when they fill them, else OpenBLAS.
enum TiledGEMM {
    typealias Vector = SIMD16<Float>
    static let tileRows = 8
    static let tileColumns = 32

    /// `c = epilogue(a · b + bias)`: `a` is `m × k` (row stride `lda`), `b` is `k × n` (row
    /// stride `ldb`), `c` is `m × n` (row stride `ldc`); `bias` has `m` entries; the
    /// epilogue's residual, if any, has `c`'s layout from `residualOffset` on.
    ///
    /// Column tiles are spread over the pool's threads; when there are fewer of them than
    /// threads, groups of row tiles are too.
    static func multiply(
        m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        c: UnsafeMutablePointer<Float>, ldc: Int, bias: UnsafePointer<Float>?, epilogue: Convolution.Epilogue, residualOffset: Int,
        pool: ThreadPool?
    ) {
        guard m > 0, n > 0 else { return }
        if n >= 48 && n <= 64 {
            wideProduct(
                m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb, c: c, ldc: ldc, bias: bias, epilogue: epilogue,
                residualOffset: residualOffset, pool: pool)
            return
        }
        // Narrow products that fill 16-column tiles (Winograd's 16 tiles of a 7×7 output in
        // ResNet's last stage: 3.8 → 2.7 ms per layer, where OpenBLAS spent the time packing
        // the weights on every call) use them; other narrow ones (36 columns: a quarter of the
        // last tile would be padding) go to OpenBLAS.
        if n < 64 && (16 - n % 16) % 16 > n / 10 {
            GEMM.multiply(m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb, c: c, ldc: ldc, pool: pool)
            for row in 0..<m { epilogue.apply(c + row * ldc, count: n, offset: residualOffset + row * ldc, bias: bias.map { $0[row] }) }
            return
        }
        let width = n < 64 ? 16 : tileColumns
        // Relu and Clip are bounds applied to the tile's registers; other activations run on the stored tile.
        let clamp: (Float, Float)? =
            switch epilogue.activation {
            case .relu?: (0, .infinity)
            case .clip(let low, let high)?: (low, high)
            default: nil
            }
        // Columns go in blocks whose rows of b fit the L1 cache (~32 KiB): every row tile of
        // `a` sweeps a block's column tiles, so the output is written eight rows at a time
        // along the rows and the block of b is read from L1 by each row tile. (Column tile by
        // column tile, MobileNetV2's 96 × 16 expansion at 112×112 wrote 96 rows 50 KB apart at
        // once and ran at 27 G multiply-adds/s against 50 blocked.)
        let columnTiles = (n + width - 1) / width
        let tilesPerBlock = max(1, min(32, 8192 / max(k, 1) / width))
        let blocks = (columnTiles + tilesPerBlock - 1) / tilesPerBlock
        let rowTiles = (m + tileRows - 1) / tileRows
        let threads = pool?.threads ?? 1
        let rowGroups = blocks >= 2 * threads ? 1 : min(rowTiles, threads)
        let tasks = blocks * rowGroups
        let workers = min(threads, tasks)
        // Enough work per thread to be worth handing over (~64 K multiply-adds).
        let parallel = workers > 1 && m * n * k >= 1 << 16
        (parallel ? pool! : ThreadPool(threads: 1)).parallelFor(parallel ? workers : 1) { range in
            let chunks = parallel ? workers : 1
            // Zero-padded copies for edge tiles: rows of a, columns of b, and the tile itself.
            let padded = UnsafeMutablePointer<Float>.allocate(capacity: k * tileRows + k * width + tileRows * width)
            defer { padded.deallocate() }
            let (paddedA, paddedB, paddedC) = (padded, padded + k * tileRows, padded + k * tileRows + k * width)
            for chunk in range {
                for task in (tasks * chunk / chunks)..<(tasks * (chunk + 1) / chunks) {
                    let block = task / rowGroups
                    let group = task % rowGroups
                    let blockTiles = (block * tilesPerBlock)..<min(columnTiles, (block + 1) * tilesPerBlock)
                    // The last column tile of the product may be partial: its columns, zero-padded.
                    let lastColumns = n - (columnTiles - 1) * width
                    if blockTiles.contains(columnTiles - 1) && lastColumns < width {
                        for step in 0..<k {
                            let destination = paddedB + step * width
                            destination.update(from: b + step * ldb + (columnTiles - 1) * width, count: lastColumns)
                            (destination + lastColumns).update(repeating: 0, count: width - lastColumns)
                        }
                    }
                    for rowTile in (rowTiles * group / rowGroups)..<(rowTiles * (group + 1) / rowGroups) {
                        let row = rowTile * tileRows
                        let rows = min(tileRows, m - row)
                        var tileA = a + row * lda
                        var strideA = lda
                        if rows < tileRows {
                            for r in 0..<tileRows {
                                let destination = paddedA + r * k
                                if r < rows {
                                    destination.update(from: a + (row + r) * lda, count: k)
                                } else {
                                    destination.update(repeating: 0, count: k)
                                }
                            }
                            (tileA, strideA) = (UnsafePointer(paddedA), k)
                        }
                        for columnTile in blockTiles {
                            let column = columnTile * width
                            let columns = min(width, n - column)
                            let (tileB, strideB) = columns < width ? (UnsafePointer(paddedB), width) : (b + column, ldb)
                            if rows == tileRows && columns == width {
                                // A whole tile: bias, residual and a clamping activation in registers.
                                let out = c + row * ldc + column
                                let residual = epilogue.residual.map { UnsafePointer($0 + residualOffset + row * ldc + column) }
                                if width == tileColumns {
                                    tile(
                                        a: tileA, lda: strideA, b: tileB, ldb: strideB, k: k, c: out, ldc: ldc, bias: bias.map { $0 + row },
                                        residual: residual, clamp: clamp)
                                } else {
                                    narrowTile(
                                        a: tileA, lda: strideA, b: tileB, ldb: strideB, k: k, c: out, ldc: ldc, bias: bias.map { $0 + row },
                                        residual: residual, clamp: clamp)
                                }
                                if clamp == nil, let activation = epilogue.activation {
                                    for r in 0..<tileRows { activation.apply(out + r * ldc, count: width) }
                                }
                                continue
                            }
                            // An edge tile: computed on the padded copies, then copied out and finished here;
                            // 16 columns of it when that covers them (14×14 outputs: 196 = 6 · 32 + 4).
                            if width == tileColumns && columns > 16 {
                                tile(
                                    a: tileA, lda: strideA, b: tileB, ldb: strideB, k: k, c: paddedC, ldc: width, bias: nil,
                                    residual: nil, clamp: nil)
                            } else {
                                narrowTile(
                                    a: tileA, lda: strideA, b: tileB, ldb: strideB, k: k, c: paddedC, ldc: width, bias: nil,
                                    residual: nil, clamp: nil)
                            }
                            for r in 0..<rows {
                                let line = c + (row + r) * ldc + column
                                line.update(from: paddedC + r * width, count: columns)
                                epilogue.apply(
                                    line, count: columns, offset: residualOffset + (row + r) * ldc + column, bias: bias.map { $0[row + r] })
                            }
                        }
                    }
                }
            }
        }
    }

    /// Products of 48 to 64 columns (7×7 outputs) in 4 × 64 tiles: every row of the result in
    /// one tile, so each weight is read once — from memory, inside a model — where OpenBLAS
    /// packs all of them on every call (MobileNetV2-224's eight 7×7 1×1 layers: 2.6 → 2.35 ms,
    /// one thread). `b` is copied once into 64 zero-padded columns; each tile is computed into
    /// a small buffer and its `n` columns copied out with the epilogue. Narrower products pad
    /// too much (6×6 outputs, 36 columns, ran ~50% slower than on OpenBLAS).
    ///
    /// Not inlined: inlined into ``multiply``, it made the compiler generate slower code for the
    /// 8 × 32 path (MobileNetV2's 14×14 layers 105 → 160 µs).
    @inline(never)
    static func wideProduct(
        m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        c: UnsafeMutablePointer<Float>, ldc: Int, bias: UnsafePointer<Float>?, epilogue: Convolution.Epilogue, residualOffset: Int,
        pool: ThreadPool?
    ) {
        let width = 64
        let paddedB = UnsafeMutablePointer<Float>.allocate(capacity: k * width)
        defer { paddedB.deallocate() }
        for step in 0..<k {
            let destination = paddedB + step * width
            destination.update(from: b + step * ldb, count: n)
            (destination + n).update(repeating: 0, count: width - n)
        }
        let rowTiles = (m + 3) / 4
        let parallel = (pool?.threads ?? 1) > 1 && m * n * k >= 1 << 16
        (parallel ? pool! : ThreadPool(threads: 1)).parallelFor(rowTiles) { range in
            let scratch = UnsafeMutablePointer<Float>.allocate(capacity: 4 * width + 4 * k)
            defer { scratch.deallocate() }
            let (tileC, paddedA) = (scratch, scratch + 4 * width)
            for rowTile in range {
                let row = rowTile * 4
                let rows = min(4, m - row)
                var (tileA, strideA) = (a + row * lda, lda)
                if rows < 4 {
                    for r in 0..<4 {
                        if r < rows {
                            (paddedA + r * k).update(from: a + (row + r) * lda, count: k)
                        } else {
                            (paddedA + r * k).update(repeating: 0, count: k)
                        }
                    }
                    (tileA, strideA) = (UnsafePointer(paddedA), k)
                }
                wideTile(a: tileA, lda: strideA, b: paddedB, k: k, c: tileC)
                for r in 0..<rows {
                    let line = c + (row + r) * ldc
                    line.update(from: tileC + r * width, count: n)
                    epilogue.apply(line, count: n, offset: residualOffset + (row + r) * ldc, bias: bias.map { $0[row + r] })
                }
            }
        }
    }

    /// One 4 × 64 tile of `a · b` (b with row stride 64) into `c` (row stride 64): sixteen
    /// accumulators, four loads of b and four broadcasts of a per step of k.
    @inline(__always)
    static func wideTile(a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, k: Int, c: UnsafeMutablePointer<Float>) {
        @inline(__always) func load(_ pointer: UnsafePointer<Float>) -> Vector { UnsafeRawPointer(pointer).loadUnaligned(as: Vector.self) }
        let zero = Vector(repeating: 0)
        var (r0a, r0b, r0c, r0d) = (zero, zero, zero, zero)
        var (r1a, r1b, r1c, r1d) = (zero, zero, zero, zero)
        var (r2a, r2b, r2c, r2d) = (zero, zero, zero, zero)
        var (r3a, r3b, r3c, r3d) = (zero, zero, zero, zero)
        var (row, weight) = (UnsafePointer(b), a)
        for _ in 0..<k {
            let (x0, x1, x2, x3) = (load(row), load(row + 16), load(row + 32), load(row + 48))
            var s = weight[0]
            r0a = r0a.addingProduct(x0, s)
            r0b = r0b.addingProduct(x1, s)
            r0c = r0c.addingProduct(x2, s)
            r0d = r0d.addingProduct(x3, s)
            s = weight[lda]
            r1a = r1a.addingProduct(x0, s)
            r1b = r1b.addingProduct(x1, s)
            r1c = r1c.addingProduct(x2, s)
            r1d = r1d.addingProduct(x3, s)
            s = weight[2 * lda]
            r2a = r2a.addingProduct(x0, s)
            r2b = r2b.addingProduct(x1, s)
            r2c = r2c.addingProduct(x2, s)
            r2d = r2d.addingProduct(x3, s)
            s = weight[3 * lda]
            r3a = r3a.addingProduct(x0, s)
            r3b = r3b.addingProduct(x1, s)
            r3c = r3c.addingProduct(x2, s)
            r3d = r3d.addingProduct(x3, s)
            row += 64
            weight += 1
        }
        @inline(__always) func store(_ r: Int, _ v0: Vector, _ v1: Vector, _ v2: Vector, _ v3: Vector) {
            let out = UnsafeMutableRawPointer(c + r * 64)
            out.storeBytes(of: v0, as: Vector.self)
            out.storeBytes(of: v1, toByteOffset: 64, as: Vector.self)
            out.storeBytes(of: v2, toByteOffset: 128, as: Vector.self)
            out.storeBytes(of: v3, toByteOffset: 192, as: Vector.self)
        }
        store(0, r0a, r0b, r0c, r0d)
        store(1, r1a, r1b, r1c, r1d)
        store(2, r2a, r2b, r2c, r2d)
        store(3, r3a, r3b, r3c, r3d)
    }

    /// One 8 × 16 tile, as ``tile(a:lda:b:ldb:k:c:ldc:bias:residual:clamp:)`` with one vector per row.
    @inline(__always)
    static func narrowTile(
        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int, k: Int, c: UnsafeMutablePointer<Float>, ldc: Int,
        bias: UnsafePointer<Float>?, residual: UnsafePointer<Float>?, clamp: (Float, Float)?
    ) {
        @inline(__always) func start(_ r: Int) -> Vector { Vector(repeating: bias?[r] ?? 0) }
        var (r0, r1, r2, r3, r4, r5, r6, r7) = (start(0), start(1), start(2), start(3), start(4), start(5), start(6), start(7))
        var (row, weight) = (b, a)
        for _ in 0..<k {
            let x = UnsafeRawPointer(row).loadUnaligned(as: Vector.self)
            r0 = r0.addingProduct(x, weight[0])
            r1 = r1.addingProduct(x, weight[lda])
            r2 = r2.addingProduct(x, weight[2 * lda])
            r3 = r3.addingProduct(x, weight[3 * lda])
            r4 = r4.addingProduct(x, weight[4 * lda])
            r5 = r5.addingProduct(x, weight[5 * lda])
            r6 = r6.addingProduct(x, weight[6 * lda])
            r7 = r7.addingProduct(x, weight[7 * lda])
            row += ldb
            weight += 1
        }
        @inline(__always) func store(_ r: Int, _ value: Vector) {
            var value = value
            if let residual { value += UnsafeRawPointer(residual + r * ldc).loadUnaligned(as: Vector.self) }
            if let (bottom, top) = clamp {
                let (floor, ceiling) = (Vector(repeating: bottom), Vector(repeating: top))
                value.replace(with: floor, where: value .< floor)
                value.replace(with: ceiling, where: value .> ceiling)
            }
            UnsafeMutableRawPointer(c + r * ldc).storeBytes(of: value, as: Vector.self)
        }
        store(0, r0)
        store(1, r1)
        store(2, r2)
        store(3, r3)
        store(4, r4)
        store(5, r5)
        store(6, r6)
        store(7, r7)
    }

    /// One 8 × 32 tile: `c[r][0..<32] = clamp(bias[r] + Σ_s a[r][s] · b[s][0..<32] + residual[r][0..<32])`
    /// for r in 0..<8 (the residual with `c`'s row stride).
    @inline(__always)
    static func tile(
        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int, k: Int, c: UnsafeMutablePointer<Float>, ldc: Int,
        bias: UnsafePointer<Float>?, residual: UnsafePointer<Float>?, clamp: (Float, Float)?
    ) {
        @inline(__always) func load(_ pointer: UnsafePointer<Float>) -> Vector {
            UnsafeRawPointer(pointer).loadUnaligned(as: Vector.self)
        }
        @inline(__always) func start(_ r: Int) -> Vector { Vector(repeating: bias?[r] ?? 0) }
        var (r0a, r1a, r2a, r3a, r4a, r5a, r6a, r7a) = (start(0), start(1), start(2), start(3), start(4), start(5), start(6), start(7))
        var (r0b, r1b, r2b, r3b, r4b, r5b, r6b, r7b) = (r0a, r1a, r2a, r3a, r4a, r5a, r6a, r7a)
        var (row, weight) = (b, a)
        for _ in 0..<k {
            let (low, high) = (load(row), load(row + 16))
            var s = weight[0]
            r0a = r0a.addingProduct(low, s)
            r0b = r0b.addingProduct(high, s)
            s = weight[lda]
            r1a = r1a.addingProduct(low, s)
            r1b = r1b.addingProduct(high, s)
            s = weight[2 * lda]
            r2a = r2a.addingProduct(low, s)
            r2b = r2b.addingProduct(high, s)
            s = weight[3 * lda]
            r3a = r3a.addingProduct(low, s)
            r3b = r3b.addingProduct(high, s)
            s = weight[4 * lda]
            r4a = r4a.addingProduct(low, s)
            r4b = r4b.addingProduct(high, s)
            s = weight[5 * lda]
            r5a = r5a.addingProduct(low, s)
            r5b = r5b.addingProduct(high, s)
            s = weight[6 * lda]
            r6a = r6a.addingProduct(low, s)
            r6b = r6b.addingProduct(high, s)
            s = weight[7 * lda]
            r7a = r7a.addingProduct(low, s)
            r7b = r7b.addingProduct(high, s)
            row += ldb
            weight += 1
        }
        @inline(__always) func store(_ r: Int, _ low: Vector, _ high: Vector) {
            var (low, high) = (low, high)
            if let residual {
                low += load(residual + r * ldc)
                high += load(residual + r * ldc + 16)
            }
            if let (bottom, top) = clamp {
                let (floor, ceiling) = (Vector(repeating: bottom), Vector(repeating: top))
                // `replacing(with:where:)` is one vector select; `pointwiseMin`/`pointwiseMax`
                // compiled to a loop over lanes here.
                low.replace(with: floor, where: low .< floor)
                low.replace(with: ceiling, where: low .> ceiling)
                high.replace(with: floor, where: high .< floor)
                high.replace(with: ceiling, where: high .> ceiling)
            }
            UnsafeMutableRawPointer(c + r * ldc).storeBytes(of: low, as: Vector.self)
            UnsafeMutableRawPointer(c + r * ldc + 16).storeBytes(of: high, as: Vector.self)
        }
        store(0, r0a, r0b)
        store(1, r1a, r1b)
        store(2, r2a, r2b)
        store(3, r3a, r3b)
        store(4, r4a, r4b)
        store(5, r5a, r5b)
        store(6, r6a, r6b)
        store(7, r7a, r7b)
    }
}
