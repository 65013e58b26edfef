import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A failed system call: what was attempted (with its path or address) and the system's reason.
///
/// The one place where `errno` becomes a Swift error: file, mapping and socket code all go
/// through ``SystemCall``, so every such failure reads the same way.
public struct SystemError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What was attempted, e.g. `open /var/cache/cleave/x.onnx`.
    public let operation: String
    /// The `errno` value; 0 for a failure the system did not report through errno.
    public let code: Int32
    /// Why, when the failure is not an errno (e.g. "not a regular file").
    public let detail: String?

    public init(_ operation: String, code: Int32, detail: String? = nil) {
        self.operation = operation
        self.code = code
        self.detail = detail
    }

    /// The system's sentence for ``code`` (or the detail).
    public var reason: String { detail ?? String(cString: strerror(code)) }

    public var description: String { "\(operation) failed: \(reason)" }

    /// Whether the disk or quota is full (`ENOSPC`, `EDQUOT`).
    public var isOutOfSpace: Bool { code == ENOSPC || code == EDQUOT }
}

private let temporaryCounter = Atomic<UInt64>(0)

/// System calls that retry `EINTR` and throw ``SystemError``.
public enum SystemCall {
    /// Runs `call` until it does not fail with `EINTR`; returns its result, -1 included.
    @inline(__always)
    public static func retryingInterrupts<T: FixedWidthInteger>(_ call: () -> T) -> T {
        while true {
            let result = call()
            if result == -1 && errno == EINTR { continue }
            return result
        }
    }

    /// Runs `call` (retrying `EINTR`) and throws if it returns -1.
    @discardableResult
    public static func check<T: FixedWidthInteger>(_ operation: @autoclosure () -> String, _ call: () -> T) throws(SystemError) -> T {
        let result = retryingInterrupts(call)
        guard result != -1 else { throw SystemError(operation(), code: errno) }
        return result
    }

    /// The error for the call that just failed.
    public static func lastError(_ operation: String) -> SystemError { SystemError(operation, code: errno) }

    /// The whole file at `path`.
    public static func readFile(_ path: String) throws(SystemError) -> [UInt8] {
        let descriptor = try check("open \(path)") { open(path, O_RDONLY | O_CLOEXEC) }
        defer { close(descriptor) }
        var status = stat()
        try check("stat \(path)") { fstat(descriptor, &status) }
        guard (status.st_mode & S_IFMT) == S_IFREG else { throw SystemError("read \(path)", code: 0, detail: "not a regular file") }
        var bytes = [UInt8](repeating: 0, count: Int(status.st_size))
        var filled = 0
        while filled < bytes.count {
            let count = bytes.withUnsafeMutableBytes { buffer in
                retryingInterrupts { read(descriptor, buffer.baseAddress! + filled, buffer.count - filled) }
            }
            guard count != -1 else { throw lastError("read \(path)") }
            guard count > 0 else { break }
            filled += count
        }
        if filled < bytes.count { bytes.removeLast(bytes.count - filled) }
        return bytes
    }

    /// Writes `bytes` to `path` so that a crash or a full disk never leaves half a file under
    /// that name: a temporary file beside it, flushed to disk, then renamed over it.
    public static func writeFileAtomically(_ path: String, _ bytes: [UInt8]) throws(SystemError) {
        let writer = try AtomicFileWriter(path)
        try writer.append(bytes)
        try writer.commit()
    }

    /// SHA-256 of the file at `path`, read in 1 MiB pieces (the file is never mapped or held
    /// whole, so hashing a large file does not grow the resident set).
    public static func sha256(ofFile path: String) throws(SystemError) -> [UInt8] {
        let descriptor = try check("open \(path)") { open(path, O_RDONLY | O_CLOEXEC) }
        defer { close(descriptor) }
        var hasher = SHA256()
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let count = buffer.withUnsafeMutableBytes { raw in retryingInterrupts { read(descriptor, raw.baseAddress!, raw.count) } }
            guard count != -1 else { throw lastError("read \(path)") }
            if count == 0 { break }
            buffer.withUnsafeBytes { hasher.update(UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
        }
        return hasher.finish()
    }

    /// Makes `path` and its missing parents (mode 0755); an existing folder is fine.
    public static func makeDirectories(_ path: String) throws(SystemError) {
        var prefix = path.hasPrefix("/") ? "/" : ""
        for part in path.split(separator: "/") {
            prefix += part
            if mkdir(prefix, 0o755) != 0 && errno != EEXIST { throw lastError("mkdir \(prefix)") }
            prefix += "/"
        }
    }

    /// The names in the folder at `path` (without `.` and `..`), in the order the system gives.
    public static func listDirectory(_ path: String) throws(SystemError) -> [String] {
        guard let directory = opendir(path) else { throw lastError("open folder \(path)") }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// Makes a new, empty folder with a unique name beginning with `prefix` in `$TMPDIR` (or
    /// `/tmp`), readable by its owner only; returns its path.
    public static func makeTemporaryDirectory(prefix: String) throws(SystemError) -> String {
        let base = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
        var template = Array("\(base)/\(prefix)XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        guard made != nil else { throw lastError("mkdtemp \(base)/\(prefix)XXXXXX") }
        return String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Whether `path` exists and is readable.
    public static func isReadable(_ path: String) -> Bool { access(path, R_OK) == 0 }

    /// Removes a file; a missing one is fine.
    public static func remove(_ path: String) { unlink(path) }

    /// Appends `bytes` to the file at `path` (made if missing) and, when `durable`, flushes it
    /// to disk: a log of records that a crash must not lose (without the flush the records
    /// outlive the process, as after a `kill -9`, but not the machine).
    public static func append(_ path: String, _ bytes: [UInt8], durable: Bool = true) throws(SystemError) {
        let descriptor = try check("open \(path)") { open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644) }
        defer { close(descriptor) }
        var written = 0
        while written < bytes.count {
            let count = bytes.withUnsafeBytes { buffer in
                retryingInterrupts { write(descriptor, buffer.baseAddress! + written, buffer.count - written) }
            }
            guard count != -1 else { throw lastError("write \(path)") }
            written += count
        }
        if durable { try check("fsync \(path)") { fsync(descriptor) } }
    }
}

/// A file written piece by piece that appears under its name only when complete: the pieces
/// go to a unique temporary file beside it, which ``commit()`` flushes to disk and renames
/// over `path`; a writer dropped without committing removes its temporary file (a crash or
/// a full disk never leaves half a file under the name).
public final class AtomicFileWriter {
    public let path: String
    private let temporary: String
    private let descriptor: Int32
    private var open = true

    public init(_ path: String) throws(SystemError) {
        self.path = path
        // Unique per writer: several writers in one process (agents of a testbed) may write the same file.
        let temporary = "\(path).partial-\(getpid())-\(temporaryCounter.wrappingAdd(1, ordering: .relaxed).oldValue)"
        self.temporary = temporary
        descriptor = try SystemCall.check("create \(temporary)") { Glibc.open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) }
    }

    deinit {
        if open {
            close(descriptor)
            unlink(temporary)
        }
    }

    /// Appends `bytes`.
    public func append(_ bytes: [UInt8]) throws(SystemError) {
        var written = 0
        while written < bytes.count {
            let count = bytes.withUnsafeBytes { buffer in
                SystemCall.retryingInterrupts { write(descriptor, buffer.baseAddress! + written, buffer.count - written) }
            }
            guard count != -1 else { throw SystemCall.lastError("write \(temporary)") }
            written += count
        }
    }

    /// Flushes the file to disk and gives it its name.
    public func commit() throws(SystemError) {
        try SystemCall.check("fsync \(temporary)") { fsync(descriptor) }
        close(descriptor)
        open = false
        do throws(SystemError) {
            try SystemCall.check("rename \(temporary) to \(path)") { rename(temporary, path) }
        } catch {
            unlink(temporary)
            throw error
        }
    }
}

/// A read-only memory mapping of a whole file, or a private copy of bytes held in memory
/// (tests and fuzzing read the same way as from a file).
///
/// `@unchecked Sendable`: the memory is never written after creation and is unmapped only
/// when the last reference goes away.
public final class MappedFile: @unchecked Sendable {
    /// The bytes (package-visible: no unsafe pointer leaves the project).
    package let buffer: UnsafeRawBufferPointer
    private let mapped: Bool

    /// Maps the regular file at `path` (an empty file maps to no bytes).
    public init(path: String) throws(SystemError) {
        let descriptor = try SystemCall.check("open \(path)") { open(path, O_RDONLY | O_CLOEXEC) }
        defer { close(descriptor) }
        var status = stat()
        try SystemCall.check("stat \(path)") { fstat(descriptor, &status) }
        guard (status.st_mode & S_IFMT) == S_IFREG else { throw SystemError("map \(path)", code: 0, detail: "not a regular file") }
        let size = Int(status.st_size)
        guard size > 0 else {
            buffer = UnsafeRawBufferPointer(start: nil, count: 0)
            mapped = false
            return
        }
        guard let address = mmap(nil, size, PROT_READ, MAP_PRIVATE, descriptor, 0), address != MAP_FAILED else {
            throw SystemCall.lastError("mmap \(path)")
        }
        buffer = UnsafeRawBufferPointer(start: address, count: size)
        mapped = true
    }

    /// A private, 64-byte aligned copy of `bytes`.
    public init(copying bytes: [UInt8]) {
        let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 64)
        memory.copyBytes(from: bytes)
        buffer = UnsafeRawBufferPointer(start: memory.baseAddress, count: bytes.count)
        mapped = false
    }

    /// Size in bytes.
    public var count: Int { buffer.count }

    /// What ``advise(_:bytes:)`` tells the kernel about a range of a mapped file.
    public enum Advice: Sendable {
        /// Read these pages in now (asynchronously): they are needed soon.
        case willNeed
        /// Drop these pages from the process (they are read again from the file, or the page
        /// cache, when next touched): the resident set shrinks.
        case dontNeed
    }

    /// Advises the kernel on the pages covering `range` of a mapped file (rounded out to whole
    /// pages; nothing for a private copy).
    public func advise(_ advice: Advice, bytes range: Range<Int>) {
        guard mapped, let base = buffer.baseAddress, !range.isEmpty else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = max(0, range.lowerBound) / page * page
        let end = min(buffer.count, range.upperBound)
        guard end > start else { return }
        _ = madvise(UnsafeMutableRawPointer(mutating: base + start), end - start, advice == .willNeed ? MADV_WILLNEED : MADV_DONTNEED)
    }

    deinit {
        if mapped {
            munmap(UnsafeMutableRawPointer(mutating: buffer.baseAddress), buffer.count)
        } else {
            buffer.baseAddress.map { UnsafeMutableRawPointer(mutating: $0).deallocate() }
        }
    }
}

extension SystemCall {
    /// Gives the pages of freed heap memory back to the system (glibc's `malloc_trim`): after a
    /// burst of short-lived buffers — decoding a model, verifying an artifact — the allocator
    /// would otherwise keep them resident for good. A no-op where the C library has no such call
    /// (it is looked up at run time: `malloc.h` is not in Swift's Glibc module).
    public static func releaseFreedMemory() {
        _ = mallocTrim?(0)
    }

    private static let mallocTrim: (@convention(c) (Int) -> Int32)? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_trim") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (Int) -> Int32).self)
    }()
}

extension SystemCall {
    /// Runs `body` on a new detached thread of its own (not a pool thread: for work that
    /// blocks for long, such as serving a connection).
    public static func detachThread(_ body: @escaping @Sendable () -> Void) {
        final class Box: Sendable {
            let body: @Sendable () -> Void
            init(_ body: @escaping @Sendable () -> Void) { self.body = body }
        }
        let context = Unmanaged.passRetained(Box(body)).toOpaque()
        var thread = pthread_t()
        let status = pthread_create(
            &thread, nil,
            { raw in
                Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue().body()
                return nil
            }, context)
        precondition(status == 0, "cannot start a thread: error \(status)")
        pthread_detach(thread)
    }
}
