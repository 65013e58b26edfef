/// Places intermediate tensors in one arena so that tensors whose lifetimes do
/// not overlap share bytes.
///
/// Lifetimes are inclusive step ranges `[first, last]`: a tensor is live from the
/// step that produces it through the last step that reads it. Placement is greedy
/// by decreasing size, each block at the lowest offset that clears every placed
/// block whose lifetime overlaps — the "greedy by size" strategy of TFLite's
/// planner, which is close to optimal on CNN chains.
struct MemoryPlanner {
    struct Block {
        let bytes: Int
        let first: Int
        let last: Int
    }

    /// Every offset and the arena size are multiples of this many bytes.
    static let alignment = 64

    /// Offsets for `blocks` (same order) and the arena size, in bytes.
    static func place(_ blocks: [Block]) -> (offsets: [Int], arenaBytes: Int) {
        var offsets = [Int](repeating: 0, count: blocks.count)
        var placed: [(offset: Int, size: Int, block: Block)] = []
        var arena = 0
        let order = blocks.indices.sorted { blocks[$0].bytes != blocks[$1].bytes ? blocks[$0].bytes > blocks[$1].bytes : $0 < $1 }
        for index in order {
            let block = blocks[index]
            let size = aligned(block.bytes)
            let conflicts =
                placed
                .filter { $0.block.first <= block.last && block.first <= $0.block.last }
                .sorted { $0.offset < $1.offset }
            var offset = 0
            for conflict in conflicts {
                if offset + size <= conflict.offset { break }
                offset = max(offset, conflict.offset + conflict.size)
            }
            offsets[index] = offset
            placed.append((offset, size, block))
            arena = max(arena, offset + size)
        }
        return (offsets, arena)
    }

    /// The lower bound no placement can beat: the largest total size of tensors live at one step.
    static func peakLiveBytes(_ blocks: [Block]) -> Int {
        guard let lastStep = blocks.map(\.last).max() else { return 0 }
        var delta = [Int](repeating: 0, count: lastStep + 2)
        for block in blocks {
            delta[block.first] += aligned(block.bytes)
            delta[block.last + 1] -= aligned(block.bytes)
        }
        var live = 0
        var peak = 0
        for change in delta {
            live += change
            peak = max(peak, live)
        }
        return peak
    }

    static func aligned(_ bytes: Int) -> Int { (bytes + alignment - 1) / alignment * alignment }
}
