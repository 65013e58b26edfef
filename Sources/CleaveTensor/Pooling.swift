/// Window pooling (ONNX `MaxPool`, `AveragePool`, `GlobalAveragePool`) on NC… tensors.
public enum Pooling {
    /// How a window is reduced.
    public enum Kind: Sendable, Equatable {
        case max
        /// Average; `countIncludePad` divides by the window size including padding.
        case average(countIncludePad: Bool)
    }

    /// Pools `input` `[N, C, S…]` into `output` `[N, C, O…]` (float32, or uint8 for max).
    public static func forward(
        input: Tensor, kind: Kind, geometry: WindowGeometry, into output: Tensor,
        pool: ThreadPool = ThreadPool(threads: 1)
    ) {
        let g = geometry.promoted
        let planar = g.kernel[0] == 1 && g.strides[0] == 1 && g.padsBegin[0] == 0 && g.padsEnd[0] == 0 && g.dilations == [1, 1, 1]
        if kind == .max, input.dtype == .float32, planar {
            maxPlanar(input: input, geometry: g, into: output, pool: pool)
            return
        }
        switch input.dtype {
        case .float32: run(Float.self, input, kind, geometry, output, pool)
        case .uint8: run(UInt8.self, input, kind, geometry, output, pool)
        case .int8: run(Int8.self, input, kind, geometry, output, pool)
        default: preconditionFailure("pooling on \(input.dtype)")
        }
    }

    private static func run<T: TensorScalar>(
        _ type: T.Type, _ input: Tensor, _ kind: Kind, _ geometry: WindowGeometry, _ output: Tensor, _ pool: ThreadPool
    ) {
        let g = geometry.promoted
        let planes = input.shape[0] * input.shape[1]
        let inSize = promoted3(input.shape[2...])
        let outSize = promoted3(output.shape[2...])
        let x = input.pointer(as: T.self)
        let y = output.pointer(as: T.self)
        let inPlane = inSize.reduce(1, *)
        let outPlane = outSize.reduce(1, *)
        pool.parallelFor(planes) { range in
            for plane in range {
                let source = x + plane * inPlane
                var destination = y + plane * outPlane
                for z in 0..<outSize[0] {
                    for yy in 0..<outSize[1] {
                        for xx in 0..<outSize[2] {
                            let start = Start(
                                z * g.strides[0] - g.padsBegin[0], yy * g.strides[1] - g.padsBegin[1], xx * g.strides[2] - g.padsBegin[2])
                            destination.pointee = reduce(source, start: start, inSize: inSize, kind: kind, g: g)
                            destination += 1
                        }
                    }
                }
            }
        }
    }

    /// Max pooling over 1-D or 2-D planes with undilated windows (the common CNN case).
    ///
    /// Separable: for each output row, the input rows under the window are first reduced
    /// element-wise into one scratch row (a vectorizable loop), then each output column takes
    /// the maximum of its horizontal span of that row. Windows are clipped to the input,
    /// which is what padding and ceil mode mean for max pooling. For horizontal strides 1
    /// and 2 with no window wholly outside the input (every CNN's pools), the scratch row is
    /// padded with −∞ and, for stride 2, split into even and odd columns, so that each tap is
    /// one vectorized pass over consecutive floats.
    private static func maxPlanar(input: Tensor, geometry g: WindowGeometry, into output: Tensor, pool: ThreadPool) {
        let planes = input.shape[0] * input.shape[1]
        let inSize = promoted3(input.shape[2...])
        let outSize = promoted3(output.shape[2...])
        let (depth, inH, inW) = (inSize[0], inSize[1], inSize[2])
        let (outH, outW) = (outSize[1], outSize[2])
        let (kH, kW, sH, sW, padTop, padLeft) = (g.kernel[1], g.kernel[2], g.strides[1], g.strides[2], g.padsBegin[1], g.padsBegin[2])
        let x = input.pointer(as: Float.self)
        let y = output.pointer(as: Float.self)
        // Taps read phase (kw · 1) % sW at column c + kw / sW of a row of `phaseW` floats per phase.
        let fast = (sW == 1 || sW == 2) && padLeft < kW && (outW - 1) * sW - padLeft < inW && outW > 0
        let phaseW = outW + (kW - 1) / sW + 1
        // 2×2 windows, stride 2, no padding, every window inside (the Fashion-MNIST model's, VGG's).
        let pairs = kH == 2 && kW == 2 && sH == 2 && sW == 2 && padTop == 0 && padLeft == 0 && 2 * outH <= inH && 2 * outW <= inW
        pool.parallelFor(planes * depth) { range in
            let rowMax = UnsafeMutablePointer<Float>.allocate(capacity: max(inW, 1))
            let phases = UnsafeMutablePointer<Float>.allocate(capacity: fast ? sW * phaseW : 0)
            defer {
                rowMax.deallocate()
                phases.deallocate()
            }
            for plane in range {
                let source = x + plane * inH * inW
                let destination = y + plane * outH * outW
                if pairs {
                    maxPairs(source, inW: inW, into: destination, outH: outH, outW: outW)
                    continue
                }
                for outRow in 0..<outH {
                    let top = max(outRow * sH - padTop, 0)
                    let bottom = min(outRow * sH - padTop + kH, inH)
                    let out = destination + outRow * outW
                    guard top < bottom else {
                        out.update(repeating: 0, count: outW)
                        continue
                    }
                    rowMax.update(from: source + top * inW, count: inW)
                    for inRow in (top + 1)..<bottom {
                        let row = source + inRow * inW
                        for column in 0..<inW {
                            let value = row[column]
                            let best = rowMax[column]
                            rowMax[column] = value > best ? value : best
                        }
                    }
                    if fast {
                        if sW == 2 {
                            Convolution.splitPhases(rowMax, inW: inW, left: padLeft, into: phases, phaseW: phaseW, padding: -.infinity)
                        } else {
                            phases.update(repeating: -.infinity, count: phaseW)
                            (phases + padLeft).update(from: rowMax, count: min(inW, phaseW - padLeft))
                        }
                        out.update(from: phases, count: outW)
                        for kw in 1..<max(kW, 1) {
                            let tap = phases + (kw % sW) * phaseW + kw / sW
                            for column in 0..<outW {
                                let value = tap[column]
                                out[column] = value > out[column] ? value : out[column]
                            }
                        }
                        continue
                    }
                    for column in 0..<outW {
                        let left = max(column * sW - padLeft, 0)
                        let right = min(column * sW - padLeft + kW, inW)
                        guard left < right else {
                            out[column] = 0
                            continue
                        }
                        var best = rowMax[left]
                        for index in (left + 1)..<right where rowMax[index] > best { best = rowMax[index] }
                        out[column] = best
                    }
                }
            }
        }
    }

    /// 2×2 stride-2 max pooling of one plane: for each output row, the two input rows'
    /// element-wise maximum of sixteen columns, then the maximum of its even and odd halves
    /// gives eight outputs; a vector select per step, no window loop. A row whose width is
    /// not a multiple of eight ends with one vector that overlaps the previous one.
    private static func maxPairs(_ source: UnsafeMutablePointer<Float>, inW: Int, into out: UnsafeMutablePointer<Float>, outH: Int, outW: Int) {
        // Concrete types and the mutating `replace(with:where:)`: the generic non-mutating
        // form compiled to a loop over lanes through the stack (4× slower).
        @inline(__always) func eight(_ top: UnsafeMutablePointer<Float>, _ bottom: UnsafeMutablePointer<Float>) -> SIMD8<Float> {
            var both = UnsafeRawPointer(top).loadUnaligned(as: SIMD16<Float>.self)
            let lower = UnsafeRawPointer(bottom).loadUnaligned(as: SIMD16<Float>.self)
            both.replace(with: lower, where: lower .> both)
            var even = both.evenHalf
            let odd = both.oddHalf
            even.replace(with: odd, where: odd .> even)
            return even
        }
        for row in 0..<outH {
            let (top, bottom) = (source + 2 * row * inW, source + (2 * row + 1) * inW)
            let line = out + row * outW
            guard outW >= 8 else {
                for column in 0..<outW {
                    let pair = max(top[2 * column], top[2 * column + 1])
                    line[column] = max(pair, max(bottom[2 * column], bottom[2 * column + 1]))
                }
                continue
            }
            var column = 0
            while true {
                let start = min(column, outW - 8)
                UnsafeMutableRawPointer(line + start).storeBytes(of: eight(top + 2 * start, bottom + 2 * start), as: SIMD8<Float>.self)
                column += 8
                if start == outW - 8 { break }
            }
        }
    }

    /// First input position of one window, per promoted spatial axis (a struct, not an array:
    /// this runs once per output element and must not allocate).
    private struct Start {
        let values: (Int, Int, Int)
        init(_ a: Int, _ b: Int, _ c: Int) { values = (a, b, c) }
        subscript(axis: Int) -> Int { axis == 0 ? values.0 : axis == 1 ? values.1 : values.2 }
    }

    @inline(__always)
    private static func reduce<T: TensorScalar>(
        _ source: UnsafeMutablePointer<T>, start: Start, inSize: [Int], kind: Kind, g: WindowGeometry
    ) -> T {
        var best: T? = nil
        var sum = 0.0
        var count = 0
        var padded = 1
        if case .average(countIncludePad: true) = kind {
            for axis in 0..<3 {
                // Window taps that fall inside the padded input (ceil mode may run past it).
                var inside = 0
                for tap in 0..<g.kernel[axis] {
                    let position = start[axis] + tap * g.dilations[axis]
                    if position < inSize[axis] + g.padsEnd[axis] { inside += 1 }
                }
                padded *= inside
            }
        }
        for kd in 0..<g.kernel[0] {
            let iz = start[0] + kd * g.dilations[0]
            if iz < 0 || iz >= inSize[0] { continue }
            for kh in 0..<g.kernel[1] {
                let iy = start[1] + kh * g.dilations[1]
                if iy < 0 || iy >= inSize[1] { continue }
                let row = source + (iz * inSize[1] + iy) * inSize[2]
                for kw in 0..<g.kernel[2] {
                    let ix = start[2] + kw * g.dilations[2]
                    if ix < 0 || ix >= inSize[2] { continue }
                    let value = row[ix]
                    switch kind {
                    case .max: if best == nil || value > best! { best = value }
                    case .average: sum += value.doubleValue
                    }
                    count += 1
                }
            }
        }
        switch kind {
        case .max:
            return best ?? T(fromDouble: 0)
        case .average(let includePad):
            let divisor = includePad ? padded : count
            return T(fromDouble: divisor > 0 ? sum / Double(divisor) : 0)
        }
    }

    /// Averages each `[N, C]` plane of `input` into `output` `[N, C, 1…]`.
    public static func globalAverage(input: Tensor, into output: Tensor, pool: ThreadPool = ThreadPool(threads: 1)) {
        let planes = input.shape[0] * input.shape[1]
        let size = input.count / max(planes, 1)
        let x = input.pointer(as: Float.self)
        let y = output.pointer(as: Float.self)
        pool.parallelFor(planes) { range in
            for plane in range {
                var sum: Float = 0
                let source = x + plane * size
                for index in 0..<size { sum += source[index] }
                y[plane] = size > 0 ? sum / Float(size) : 0
            }
        }
    }
}
