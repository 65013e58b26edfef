import Foundation

/// A one-line progress display on standard error: bar, count, rate and ETA.
///
/// Redraws at most ten times a second; prints nothing when standard error is not a terminal
/// except a final summary line.
struct ProgressBar {
    let label: String
    let total: Int
    private let started = Date()
    private var lastDraw = Date.distantPast
    private let interactive = isatty(2) != 0

    init(_ label: String, total: Int) {
        self.label = label
        self.total = max(total, 1)
    }

    mutating func update(_ done: Int, detail: String = "") {
        let now = Date()
        guard interactive, now.timeIntervalSince(lastDraw) > 0.1 || done >= total else { return }
        lastDraw = now
        let elapsed = max(now.timeIntervalSince(started), 1e-6)
        let rate = Double(done) / elapsed
        let remaining = rate > 0 ? Double(total - done) / rate : 0
        let width = 30
        let filled = min(width, width * done / total)
        let bar = String(repeating: "=", count: filled) + String(repeating: " ", count: width - filled)
        let line = String(
            format: "\r%@ [%@] %3d%% %d/%d  %.0f/s  ETA %.0fs  %@", label, bar, 100 * done / total, done, total, rate, remaining, detail)
        FileHandle.standardError.write(Data(line.utf8))
    }

    func finish(_ summary: String) {
        let elapsed = Date().timeIntervalSince(started)
        let line = String(format: "%@%@ done in %.1fs: %@\n", interactive ? "\r\u{1B}[K" : "", label, elapsed, summary)
        FileHandle.standardError.write(Data(line.utf8))
    }
}
