import ArgumentParser
import CleaveAgentCLI
import CleaveCoordinator
import CleaveLLM
import CleaveMQTT
import CleaveProtocol
import CleaveSupport
import Foundation
import Synchronization

/// The options that turn a single-node LLM command into a tensor-parallel one.
struct ParallelOptions: ParsableArguments {
    @Option(help: "Shard workers (HOST:PORT,…): run the model's blocks across them (tensor parallelism).")
    var workers: String?
    @Option(help: "Find the shard workers on this MQTT broker (HOST:PORT) instead of --workers: those announced online.")
    var discover: BrokerAddress?
    @Option(help: "With --discover: wait until this many workers are online (default: take those online after 2 s).")
    var minimumWorkers: Int?
    @Option(help: "Relative speed of each worker (comma-separated, same order); shares follow it. Default: equal.")
    var speeds: String?
    @Option(help: "Speed share of the coordinator's own slice beside the workers (0: it holds only embedding, norms and head).")
    var coordinatorShare: Double = 0
    @Option(help: "How activations travel: f32 (exact) or q8_0 (34 bytes per 32 values).")
    var sync: String = "q8_0"
    @Option(help: "Seconds a worker may take to answer before its slice moves to the coordinator.")
    var workerTimeout: Double = 30
    @Flag(help: "Allow more nodes than key/value heads (the extra nodes get MLP rows only).")
    var loosePlan = false

    var isParallel: Bool { workers != nil || discover != nil }

    /// The workers' addresses, and their announced speeds and memory when discovered.
    func endpoints() throws -> [(endpoint: Endpoint, speed: Double?, memory: Int?)] {
        if let discover {
            let minimum = minimumWorkers
            let found = try blocking { try await discoverWorkers(on: discover, minimum: minimum) }
            standardError(
                "cleave llm: discovered \(found.count) worker(s) on \(discover.host):\(discover.port): \(found.map(\.id).joined(separator: ", "))")
            return try found.map { (try Endpoint(parsing: $0.endpoint), $0.speed, $0.memoryBytes) }
        }
        guard let workers else { return [] }
        return try workers.split(separator: ",").map { (try Endpoint(parsing: String($0)), nil, nil) }
    }

    var encoding: SyncEncoding {
        get throws {
            guard let encoding = SyncEncoding(rawValue: sync) else { throw ValidationError("--sync must be f32 or q8_0, not '\(sync)'") }
            return encoding
        }
    }

    /// The plan's nodes: the coordinator first when it takes a share, then the workers.
    func nodes() throws -> (nodes: [ShardNode], placements: [TensorParallelLlama.Placement]) {
        let found = try endpoints()
        let endpoints = found.map(\.endpoint)
        guard !endpoints.isEmpty else {
            throw ValidationError(discover == nil ? "--workers lists no HOST:PORT" : "no worker is online on the broker")
        }
        var weights = found.map { $0.speed ?? 1 }
        if let speeds {
            weights = try speeds.split(separator: ",").map {
                guard let value = Double($0), value > 0 else { throw ValidationError("--speeds: '\($0)' is not a positive number") }
                return value
            }
            guard weights.count == endpoints.count else {
                throw ValidationError("--speeds has \(weights.count) values for \(endpoints.count) workers")
            }
        }
        var nodes = zip(found, weights).map { ShardNode(name: $0.0.endpoint.description, speed: $0.1, memoryBytes: $0.0.memory) }
        var placements = endpoints.map { TensorParallelLlama.Placement.worker($0) }
        if coordinatorShare > 0 {
            nodes.insert(ShardNode(name: "coordinator", speed: coordinatorShare), at: 0)
            placements.insert(.coordinator, at: 0)
        }
        return (nodes, placements)
    }

    /// A tensor-parallel model over the workers, logging to standard error.
    func model(_ file: GGUFFile, threads: Int?, context: Int, batchSize: Int = 64, precision: ActivationPrecision) throws
        -> TensorParallelLlama
    {
        let c = try LlamaConfiguration(file)
        let (nodes, placements) = try nodes()
        let plan = try ShardPlan(
            configuration: c, costs: try ShardCosts(file, configuration: c), nodes: nodes, contextLength: context, strict: !loosePlan)
        return try TensorParallelLlama(
            file, plan: plan, placements: placements, encoding: try encoding, threads: threads, batchSize: batchSize, precision: precision,
            timeout: workerTimeout, log: { standardError("cleave llm: \($0)") })
    }
}

/// The shard workers announced online on `broker`: the retained announcements that arrive
/// within 2 s, or, with `minimum`, as soon as that many are online (30 s at most).
func discoverWorkers(on broker: BrokerAddress, minimum: Int?) async throws -> [LLMWorkerAnnouncement] {
    let client = try MQTTClient(MQTTConfiguration(host: broker.host, port: broker.port, clientID: "cleave-llm-\(getpid())"))
    let state = Mutex<[String: LLMWorkerAnnouncement]>([:])
    let (enough, signal) = AsyncStream.makeStream(of: Void.self)
    let events = try await client.connect { event in
        switch event {
        case .connected: try? client.subscribe(Topic.allLLMWorkers, qos: 1)
        case .message(let message):
            guard case .llmWorker(let id)? = Topic(parsing: message.topic),
                let announcement = try? JSONDecoder().decode(LLMWorkerAnnouncement.self, from: Data(message.payload)), announcement.id == id
            else { return }
            let online = state.withLock { workers in
                workers[id] = announcement
                return workers.values.filter(\.online).count
            }
            if let minimum, online >= minimum { signal.yield() }
        default: break
        }
    }
    defer {
        events.cancel()
        client.disconnect()
    }
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await Task.sleep(for: .seconds(minimum == nil ? 2 : 30)) }
        group.addTask { for await _ in enough { return } }
        try await group.next()
        group.cancelAll()
    }
    let online = state.withLock { $0.values.filter(\.online) }.sorted { $0.id < $1.id }
    if let minimum, online.count < minimum {
        throw ValidationError("only \(online.count) of the \(minimum) workers asked for are online on \(broker.host):\(broker.port) after 30 s")
    }
    return online
}

/// Runs `body` to completion from synchronous code (a command's `run()`).
func blocking<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
    let result = Mutex<Result<T, any Error>?>(nil)
    let done = DispatchSemaphore(value: 0)
    Task.detached {
        let outcome: Result<T, any Error>
        do { outcome = .success(try await body()) } catch { outcome = .failure(error) }
        result.withLock { $0 = outcome }
        done.signal()
    }
    done.wait()
    return try result.withLock { $0! }.get()
}

func standardError(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}

struct LLMWorker: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Serve a slice of an LLM's blocks to a tensor-parallel coordinator.",
        discussion: """
            Listens on --listen for a coordinator (`cleave llm generate|bench|serve --workers …`). \
            The coordinator says which slice of which model this worker computes (whole key/value-head \
            groups of attention, a run of MLP rows); the slice arrives once as a GGUF file of its own, \
            is checked against its SHA-256 and the model's digest, and is kept in --cache, so the \
            board never needs the whole model and a restart needs no transfer. Then, for every block \
            of every pass, the worker receives the normed input and answers with its slice's partial \
            output; it keeps the KV cache of its own heads.

            --memory-budget keeps only as many blocks' weights resident as fit (TPI-LLM's sliding \
            window): a thread reads the next blocks in while one computes, and each block's pages are \
            released when its MLP is done; tokens cost more page faults, the resident set stays small.

            One coordinator is served at a time; when it disconnects the worker waits for the next. \
            Stop with Ctrl-C. The protocol is described in docs/wire-format.md ("Tensor-parallel \
            shard protocol").
            """)

    @Option(help: "Address to listen on, HOST:PORT (port 0: any free port, printed).") var listen = "0.0.0.0:7311"
    @Option(help: "Folder of verified slice files (default: ~/.cache/cleave/llm-slices).") var cache: String?
    @Option(help: "Threads (default: one per core).") var threads: Int?
    @Option(help: "Slice weights kept resident, e.g. 64MiB: a sliding window of blocks (default: the whole slice).")
    var memoryBudget: String?
    @Option(help: "Announce this worker on an MQTT broker (HOST:PORT), where `--discover` finds it.") var broker: BrokerAddress?
    @Option(help: "The worker's id in its announcement (default: the host name and port).") var id: String?
    @Option(help: "Address coordinators should connect to, HOST:PORT (default: --listen, which must then not be 0.0.0.0).")
    var advertise: String?
    @Option(help: "A device profile (devices/*.yaml): its GFLOP/s are the announced speed, its memory budget the memory.")
    var profile: String?

    func run() async throws {
        let budget = try memoryBudget.map(parseBudget)
        let endpoint = try Endpoint(parsing: listen)
        let listener = try TCPSocket.listen(on: endpoint)
        let folder = cache ?? "\(ProcessInfo.processInfo.environment["HOME"] ?? ".")/.cache/cleave/llm-slices"
        standardError("cleave llm worker: listening on \(endpoint.host):\(listener.localPort), slices in \(folder)")
        let worker = ShardWorker(cacheDirectory: folder, threads: threads, memoryBudget: budget) { standardError("cleave llm worker: \($0)") }
        let serving = Task.detached { worker.serve(listener) }
        var announcer: (client: MQTTClient, events: Task<Void, Never>, topic: String, offline: [UInt8])?
        if let broker { announcer = try await announce(on: broker, port: listener.localPort, host: endpoint.host, budget: budget) }
        // Ctrl-C or SIGTERM: announce offline, stop serving.
        let (signals, signalled) = AsyncStream.makeStream(of: Int32.self)
        let sources = [SIGINT, SIGTERM].map { signalNumber -> DispatchSourceSignal in
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber)
            source.setEventHandler { signalled.yield(signalNumber) }
            source.resume()
            return source
        }
        defer { sources.forEach { $0.cancel() } }
        for await _ in signals { break }
        if let announcer {
            try? announcer.client.publish(MQTTMessage(topic: announcer.topic, payload: announcer.offline, qos: 1, retain: true))
            try? await Task.sleep(for: .milliseconds(200))
            announcer.events.cancel()
            announcer.client.disconnect()
        }
        worker.stop()
        _ = await serving.value
    }

    /// Publishes the retained announcement (again after every reconnection), with a will that
    /// marks the worker offline if it vanishes.
    private func announce(on broker: BrokerAddress, port: UInt16, host: String, budget: Int?) async throws
        -> (client: MQTTClient, events: Task<Void, Never>, topic: String, offline: [UInt8])
    {
        let address = advertise ?? "\(host):\(port)"
        guard !address.hasPrefix("0.0.0.0:") else { throw ValidationError("listening on 0.0.0.0: give --advertise HOST:PORT for the announcement") }
        let profile = try self.profile.map { try DeviceProfile.load($0) }
        let name = id ?? "\(ProcessInfo.processInfo.hostName)-\(port)"
        let online = LLMWorkerAnnouncement(
            id: name, endpoint: address, speed: profile?.gflops ?? 1, memoryBytes: budget ?? profile.map { $0.memoryBudgetMiB << 20 }, online: true)
        var offline = online
        offline.online = false
        let topic = Topic.llmWorker(id: name).path
        let (onlinePayload, offlinePayload) = (Array(try JSONEncoder().encode(online)), Array(try JSONEncoder().encode(offline)))
        let client = try MQTTClient(
            MQTTConfiguration(
                host: broker.host, port: broker.port, clientID: "cleave-llm-worker-\(name)",
                will: .init(topic: topic, payload: offlinePayload, qos: 1, retain: true)))
        let events = try await client.connect { event in
            // After every (re)connection: the will may have marked the worker offline meanwhile.
            if case .connected = event { try? client.publish(MQTTMessage(topic: topic, payload: onlinePayload, qos: 1, retain: true)) }
        }
        standardError("cleave llm worker: announced as \(name) at \(address) on \(broker.host):\(broker.port)")
        return (client, events, topic, offlinePayload)
    }
}

struct LLMShardPlan: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "shard-plan",
        abstract: "Show how a model would be split over boards: slices, memory per board, bytes per token.",
        discussion: """
            Plans the model over the boards of --profiles (device profiles: their GFLOP/s set the \
            shares, their memory budget caps them) or over --nodes N equal nodes, and prints one \
            line per node — its key/value heads, MLP rows, weight and KV-cache memory — and the \
            bytes each decoded token sends over the links with f32 and with Q8_0 sync. A plan that \
            cannot be made (more nodes than key/value heads without --loose-plan, a board too \
            small) is refused with the reason. --write DIR also cuts each node's slice file \
            (what a worker would be sent) into DIR.
            """)

    @Option(help: "The .gguf model file.") var model: String
    @Option(help: "Device profiles, comma-separated (devices/*.yaml).") var profiles: String?
    @Option(help: "Plan over this many equal nodes instead of profiles.") var nodes: Int?
    @Option(help: "KV-cache positions each node reserves.") var context = 2048
    @Flag(help: "Allow more nodes than key/value heads.") var loosePlan = false
    @Option(help: "Write each node's slice file into this folder.") var write: String?

    func run() throws {
        let file = try GGUFFile(contentsOf: model)
        let c = try LlamaConfiguration(file)
        var shardNodes: [ShardNode] = []
        if let profiles {
            for path in profiles.split(separator: ",") {
                let profile = try DeviceProfile.load(String(path))
                shardNodes.append(ShardNode(name: profile.name, speed: profile.gflops, memoryBytes: profile.memoryBudgetMiB << 20))
            }
        } else if let nodes, nodes > 0 {
            shardNodes = (0..<nodes).map { ShardNode(name: "node\($0)") }
        } else {
            throw ValidationError("give --profiles a.yaml,b.yaml or --nodes N")
        }
        let plan = try ShardPlan(
            configuration: c, costs: try ShardCosts(file, configuration: c), nodes: shardNodes, contextLength: context, strict: !loosePlan)
        print("model      \(model): \(c.layers) blocks, \(c.heads) heads / \(c.kvHeads) key/value heads, MLP \(c.feedForward) rows")
        print("trunk      embedding, norms and output head stay on the coordinator")
        print(
            "node".aligningLeft(24) + "speed".aligningRight(8) + "  kv heads  mlp rows".aligningLeft(22) + "weights MiB".aligningRight(13)
                + "kv cache MiB".aligningRight(14))
        for (index, node) in plan.nodes.enumerated() {
            let slice = plan.slices[index]
            let heads = slice.kvHeads.isEmpty ? "-" : "\(slice.kvHeads.lowerBound)..<\(slice.kvHeads.upperBound)"
            let rows = slice.feedForward.isEmpty ? "-" : "\(slice.feedForward.lowerBound)..<\(slice.feedForward.upperBound)"
            var line = node.name.aligningLeft(24) + node.speed.fixed(1).aligningRight(8) + "  " + heads.aligningLeft(10) + rows.aligningLeft(10)
            line += (Double(plan.weightBytes(index)) / 1_048_576).fixed(1).aligningRight(13)
            line += (Double(plan.cacheBytes(index)) / 1_048_576).fixed(1).aligningRight(14)
            if let memory = node.memoryBytes { line += "  of \(memory >> 20) MiB" }
            print(line)
        }
        let remote = Array(plan.nodes.indices)
        for encoding in SyncEncoding.allCases {
            let bytes = plan.syncBytesPerToken(remote: remote, encoding: encoding)
            print("bytes/token \(encoding.rawValue): \(bytes) (2 syncs × \(c.layers) blocks × \(remote.count) nodes × request and reply)")
        }
        if let write {
            try SystemCall.makeDirectories(write)
            let digest = ShardSliceFile.digest(of: file)
            for (index, slice) in plan.slices.enumerated() {
                let bytes = try ShardSliceFile.bytes(of: slice, from: file, modelSHA256: digest)
                let path = "\(write)/\(SHA256.hexString(SHA256.hash(bytes))).gguf"
                try SystemCall.writeFileAtomically(path, bytes)
                print("wrote node \(index)'s slice to \(path) (\(bytes.count) bytes)")
            }
        }
    }
}

struct LLMServe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve a GGUF model over an OpenAI-compatible HTTP API.",
        discussion: """
            Answers GET /v1/models, POST /v1/completions and POST /v1/chat/completions (the model's \
            chat template) as OpenAI's API does, whole or with "stream": true as server-sent events, \
            so that the openai client and the tools built on it work unchanged (base URL \
            http://HOST:PORT/v1, any API key). Fields used: prompt or messages, max_tokens (or \
            max_completion_tokens; default --max-tokens), temperature, top_p, top_k, min_p, \
            repeat_penalty, seed, stream. Requests run one at a time in arrival order; a streaming \
            client that disconnects stops its generation at the next token. A request whose prompt \
            and max_tokens do not fit --context gets a 400 with the reason. With --workers the model \
            runs tensor-parallel (see `cleave llm generate --help`). Stop with Ctrl-C.
            """)

    @Option(help: "The .gguf model file.") var model: String
    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port to listen on (0: any free port, printed).") var port = 8080
    @Option(help: "Name the API gives the model (default: the file name without .gguf).") var alias: String?
    @Option(help: "Context positions (prompt + completion) of every request.") var context = 2048
    @Option(help: "Completion tokens when a request gives no max_tokens.") var maxTokens = 256
    @Option(help: "Threads (default: one per core).") var threads: Int?
    @Option(help: "Inputs of matrix products: q8 (fast) or float (exact products).") var activations = "q8"
    @OptionGroup(title: "Tensor parallelism") var parallel: ParallelOptions

    func run() async throws {
        let file = try GGUFFile(contentsOf: model)
        let tokenizer = try Tokenizer(file)
        let generator: TextGenerator
        if parallel.isParallel {
            generator = TextGenerator(
                model: try parallel.model(file, threads: threads, context: context, precision: try precision(activations)), tokenizer: tokenizer)
        } else {
            let llm = try LlamaModel(file, threads: threads, precision: try precision(activations))
            generator = TextGenerator(model: llm, tokenizer: tokenizer, contextLength: context)
        }
        let name = alias ?? ((model as NSString).lastPathComponent as NSString).deletingPathExtension
        let server = LLMServer(generator: generator, modelName: name, defaultMaxTokens: maxTokens) { standardError("cleave llm serve: \($0)") }
        // Ctrl-C or SIGTERM ends the server.
        let (signals, signalled) = AsyncStream.makeStream(of: Int32.self)
        let sources = [SIGINT, SIGTERM].map { signalNumber -> DispatchSourceSignal in
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber)
            source.setEventHandler { signalled.yield(signalNumber) }
            source.resume()
            return source
        }
        defer { sources.forEach { $0.cancel() } }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await server.run(host: host, port: port) }
            group.addTask {
                for await _ in signals { return }
            }
            try await group.next()
            group.cancelAll()
        }
    }
}
