import CleaveSupport
import Dispatch
import Synchronization

/// A sliding window over a slice's blocks for boards that cannot hold the whole slice
/// (TPI-LLM's weight scheduler): at most ``window`` blocks' weights are resident; while
/// block `l` computes, a prefetch thread reads the next blocks' pages in, and a block is
/// released from the process (`madvise(MADV_DONTNEED)`) once its MLP is done.
///
/// Released pages stay in the page cache while memory allows, so reading them again costs
/// page faults rather than disk reads; under memory pressure the kernel drops them and they
/// come from the file.
final class WeightWindow: Sendable {
    /// Blocks resident at once.
    let window: Int
    /// File bytes of each block's tensors.
    let ranges: [Range<Int>]
    private let file: GGUFFile
    private let prefetcher = DispatchQueue(label: "cleave.llm.prefetch")
    /// A value the prefetch reads feed, so that they are not optimized away.
    private let sink = Atomic<UInt8>(0)
    /// The block computing now (the prefetcher skips blocks that fell out of the window).
    private let current = Atomic<Int>(0)

    /// A window of as many blocks as `budget` bytes hold (at least one).
    init(file: GGUFFile, layers: Int, budget: Int) {
        self.file = file
        ranges = (0..<layers).map { layer in
            let infos = file.tensors.filter { $0.name.hasPrefix("blk.\(layer).") }
            let start = infos.map(\.fileOffset).min() ?? 0
            let end = infos.map { $0.fileOffset + $0.byteCount }.max() ?? start
            return start..<end
        }
        let largest = ranges.map(\.count).max() ?? 1
        window = max(1, min(layers, budget / max(1, largest)))
        for layer in window..<layers { file.bytes.advise(.dontNeed, bytes: ranges[layer]) }
    }

    /// Block `layer` is about to compute: the block that enters the window with it (`window − 1`
    /// ahead, the next pass's first blocks after the last) is read in by the prefetch thread.
    func entering(_ layer: Int) {
        guard window < ranges.count else { return }
        current.store(layer, ordering: .relaxed)
        let count = ranges.count
        let ahead = layer == 0 ? Array(1..<window) : [(layer + window - 1) % count]
        prefetcher.async { [self] in
            for block in ahead {
                // Still ahead of the computation and inside the window? (A late prefetch of a
                // block already released would only bring it back.)
                let distance = (block - current.load(ordering: .relaxed) + count) % count
                if distance > 0 && distance < window { touch(ranges[block]) }
            }
        }
    }

    /// Block `layer` is done for this pass: release its pages.
    func leaving(_ layer: Int) {
        guard window < ranges.count else { return }
        file.bytes.advise(.dontNeed, bytes: ranges[layer])
    }

    /// Reads one byte of every page of `range`, so that the compute thread finds them mapped.
    private func touch(_ range: Range<Int>) {
        guard let base = file.bytes.buffer.baseAddress else { return }
        var total: UInt8 = 0
        for offset in stride(from: range.lowerBound, to: range.upperBound, by: 4096) { total &+= base.load(fromByteOffset: offset, as: UInt8.self) }
        sink.store(total, ordering: .relaxed)
    }
}
