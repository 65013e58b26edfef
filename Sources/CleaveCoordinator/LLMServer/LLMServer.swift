import CleaveLLM
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// An OpenAI-compatible HTTP API over one model (single-node or tensor-parallel), which is
/// what users' tools already speak to llama.cpp's server and Ollama.
///
/// `GET /v1/models`, `POST /v1/completions` and `POST /v1/chat/completions` (the model's chat
/// template), answers whole or, with `"stream": true`, as server-sent events (`data: {…}`
/// per piece of text, then `data: [DONE]`). Completions run one at a time in arrival order
/// (``GenerationQueue``); a streaming client that disconnects stops its generation at the
/// next token. Bad requests get a 400 with OpenAI's error object naming the problem.
public final class LLMServer: Sendable {
    /// What `/v1/models` lists and answers carry as `model`.
    public let modelName: String
    private let queue: GenerationQueue
    private let template: ChatTemplate?
    private let defaultMaxTokens: Int
    private let log: @Sendable (String) -> Void
    private let counter = IDCounter()

    /// A server for `generator`'s model.
    public init(
        generator: TextGenerator, modelName: String, defaultMaxTokens: Int = 256, log: @escaping @Sendable (String) -> Void = { _ in }
    ) {
        self.modelName = modelName
        template = ChatTemplate(generator.model.file)
        self.defaultMaxTokens = defaultMaxTokens
        self.log = log
        queue = GenerationQueue(generator: generator, log: log)
    }

    /// Binds `host:port` (port 0: any free port) and serves until the task is cancelled.
    /// `onListening` gets the bound port.
    public func run(host: String, port: Int, onListening: @Sendable (Int) -> Void = { _ in }) async throws {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    return try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(wrappingChannelSynchronously: channel)
                }
            }
        onListening(server.channel.localAddress?.port ?? port)
        log("serving \(modelName) on http://\(host):\(server.channel.localAddress?.port ?? port)/v1")
        defer { queue.stop() }
        try await withThrowingDiscardingTaskGroup { group in
            try await server.executeThenClose { connections in
                for try await connection in connections {
                    group.addTask { await self.serve(connection) }
                }
            }
        }
    }

    // MARK: - One connection

    private func serve(_ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>) async {
        do {
            try await connection.executeThenClose { inbound, outbound in
                var head: HTTPRequestHead?
                var body = ByteBuffer()
                for try await part in inbound {
                    switch part {
                    case .head(let requestHead):
                        head = requestHead
                        body.clear()
                    case .body(var chunk):
                        body.writeBuffer(&chunk)
                    case .end:
                        guard let head else { continue }
                        let keepAlive = try await respond(head, body: body, outbound)
                        if !keepAlive { return }
                    }
                }
            }
        } catch {
            // The client went away or sent something NIO could not parse; nothing to answer.
        }
    }

    /// Answers one request; returns whether the connection stays open.
    private func respond(_ head: HTTPRequestHead, body: ByteBuffer, _ out: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>) async throws -> Bool
    {
        let path = head.uri.split(separator: "?").first.map(String.init) ?? head.uri
        switch (head.method, path) {
        case (.GET, "/v1/models"), (.GET, "/models"):
            let listing: [String: Any] = [
                "object": "list",
                "data": [["id": modelName, "object": "model", "created": Self.now, "owned_by": "cleave"]],
            ]
            try await send(out, status: .ok, json: listing, keepAlive: head.isKeepAlive)
        case (.GET, "/health"):
            try await send(out, status: .ok, json: ["status": "ok", "waiting": queue.waiting], keepAlive: head.isKeepAlive)
        case (.POST, "/v1/completions"), (.POST, "/v1/chat/completions"):
            let chat = path.hasSuffix("chat/completions")
            do {
                let request = try CompletionRequest(
                    body: Array(body.readableBytesView), chat: chat, template: template, defaultMaxTokens: defaultMaxTokens)
                try await complete(request, chat: chat, keepAlive: head.isKeepAlive, out)
            } catch let error as RequestError {
                try await send(out, status: .badRequest, json: Self.error(error.message), keepAlive: head.isKeepAlive)
            }
        default:
            try await send(
                out, status: .notFound,
                json: Self.error("no route \(head.method) \(path); this server has /v1/models, /v1/completions, /v1/chat/completions"),
                keepAlive: head.isKeepAlive)
        }
        return head.isKeepAlive
    }

    private func complete(
        _ request: CompletionRequest, chat: Bool, keepAlive: Bool, _ out: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>
    ) async throws {
        let job = GenerationJob(prompt: request.prompt, maxTokens: request.maxTokens, sampling: request.sampling)
        queue.submit(job)
        let id = (chat ? "chatcmpl-" : "cmpl-") + String(counter.next())
        var text = ""
        var promptTokens = 0
        var streaming = false
        do {
            for await event in job.events {
                switch event {
                case .started(let tokens):
                    promptTokens = tokens
                    if request.stream {
                        streaming = true
                        var headers = HTTPHeaders([("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")])
                        headers.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
                        try await out.write(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers)))
                        if chat { try await sendEvent(out, chunk(id, chat: true, delta: ["role": "assistant", "content": ""], finish: nil)) }
                    }
                case .text(let piece):
                    if streaming {
                        try await sendEvent(out, chunk(id, chat: chat, delta: chat ? ["content": piece] : piece, finish: nil))
                    } else {
                        text += piece
                    }
                case .finished(let reason, let completionTokens):
                    let usage = [
                        "prompt_tokens": promptTokens, "completion_tokens": completionTokens, "total_tokens": promptTokens + completionTokens,
                    ]
                    if streaming {
                        var last = chunk(id, chat: chat, delta: chat ? [String: String]() : "", finish: reason)
                        last["usage"] = usage
                        try await sendEvent(out, last)
                        try await out.write(.body(.byteBuffer(ByteBuffer(string: "data: [DONE]\n\n"))))
                        try await out.write(.end(nil))
                    } else {
                        let choice: [String: Any] =
                            chat
                            ? ["index": 0, "message": ["role": "assistant", "content": text], "finish_reason": reason]
                            : ["index": 0, "text": text, "finish_reason": reason, "logprobs": NSNull()]
                        let answer: [String: Any] = [
                            "id": id, "object": chat ? "chat.completion" : "text_completion", "created": Self.now, "model": modelName,
                            "choices": [choice], "usage": usage,
                        ]
                        try await send(out, status: .ok, json: answer, keepAlive: keepAlive)
                    }
                case .refused(let message):
                    if streaming {
                        try await sendEvent(out, Self.error(message))
                        try await out.write(.end(nil))
                    } else {
                        try await send(out, status: .badRequest, json: Self.error(message), keepAlive: keepAlive)
                    }
                }
            }
        } catch {
            // A write failed: the client is gone. Its generation stops at the next token.
            job.cancel()
            throw error
        }
    }

    // MARK: - Writing

    private func chunk(_ id: String, chat: Bool, delta: Any, finish: String?) -> [String: Any] {
        let choice: [String: Any] =
            chat
            ? ["index": 0, "delta": delta, "finish_reason": finish ?? NSNull()]
            : ["index": 0, "text": delta, "finish_reason": finish ?? NSNull(), "logprobs": NSNull()]
        return ["id": id, "object": chat ? "chat.completion.chunk" : "text_completion", "created": Self.now, "model": modelName, "choices": [choice]]
    }

    private func sendEvent(_ out: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>, _ object: [String: Any]) async throws {
        let data = try JSONSerialization.data(withJSONObject: object)
        var buffer = ByteBuffer(string: "data: ")
        buffer.writeBytes(data)
        buffer.writeString("\n\n")
        try await out.write(.body(.byteBuffer(buffer)))
    }

    private func send(_ out: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>, status: HTTPResponseStatus, json: [String: Any], keepAlive: Bool)
        async throws
    {
        let data = try JSONSerialization.data(withJSONObject: json)
        var headers = HTTPHeaders([("Content-Type", "application/json"), ("Content-Length", "\(data.count)")])
        headers.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        try await out.write(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers)))
        try await out.write(.body(.byteBuffer(ByteBuffer(bytes: data))))
        try await out.write(.end(nil))
    }

    static func error(_ message: String) -> [String: Any] {
        ["error": ["message": message, "type": "invalid_request_error", "param": NSNull(), "code": NSNull()]]
    }

    static var now: Int { Int(Date().timeIntervalSince1970) }
}

/// A bad request, with the reason for the client.
struct RequestError: Error {
    let message: String
}

/// The fields of a completion or chat completion request that Cleave uses.
struct CompletionRequest {
    var prompt: String
    var maxTokens: Int
    var sampling: SamplingParameters
    var stream: Bool

    init(body: [UInt8], chat: Bool, template: ChatTemplate?, defaultMaxTokens: Int) throws {
        guard let object = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else {
            throw RequestError(message: "the body is not a JSON object")
        }
        if chat {
            guard let messages = object["messages"] as? [[String: Any]], !messages.isEmpty else {
                throw RequestError(message: "'messages' must be a non-empty array of {role, content}")
            }
            let turns = try messages.map { message -> ChatMessage in
                guard let role = message["role"] as? String else { throw RequestError(message: "every message needs a 'role'") }
                if let content = message["content"] as? String { return ChatMessage(role: role, content: content) }
                if let parts = message["content"] as? [[String: Any]] {
                    return ChatMessage(role: role, content: parts.compactMap { $0["text"] as? String }.joined())
                }
                throw RequestError(message: "message content must be a string or text parts")
            }
            guard let template else { throw RequestError(message: "this model has no chat template Cleave knows; use /v1/completions") }
            prompt = template.render(turns)
        } else {
            if let text = object["prompt"] as? String {
                prompt = text
            } else if let texts = object["prompt"] as? [String], texts.count == 1 {
                prompt = texts[0]
            } else {
                throw RequestError(message: "'prompt' must be a string")
            }
        }
        let tokens = object["max_completion_tokens"] ?? object["max_tokens"]
        if let tokens, !(tokens is NSNull) {
            guard let count = tokens as? Int, count > 0 else { throw RequestError(message: "max_tokens must be a positive integer") }
            maxTokens = count
        } else {
            maxTokens = defaultMaxTokens
        }
        var sampling = SamplingParameters()
        sampling.temperature = 1
        sampling.topK = 0
        sampling.topP = 1
        sampling.minP = 0
        if let value = object["temperature"] as? Double { sampling.temperature = Float(value) }
        if let value = object["top_p"] as? Double { sampling.topP = Float(value) }
        if let value = object["top_k"] as? Int { sampling.topK = value }
        if let value = object["min_p"] as? Double { sampling.minP = Float(value) }
        if let value = object["repeat_penalty"] as? Double { sampling.repetitionPenalty = Float(value) }
        sampling.seed = (object["seed"] as? Int).map { UInt64(truncatingIfNeeded: $0) } ?? UInt64.random(in: 0...UInt64(UInt32.max))
        do {
            try sampling.validate()
        } catch {
            throw RequestError(message: "\(error)")
        }
        self.sampling = sampling
        stream = object["stream"] as? Bool ?? false
    }
}

/// Numbers for response ids.
final class IDCounter: Sendable {
    private let value = Atomic<Int>(0)
    func next() -> Int { value.add(1, ordering: .relaxed).newValue }
}
