import ArgumentParser
import CleaveLLM
import CleaveONNX
import CleaveTensor
import Foundation

struct LLMCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "llm",
        abstract: "Large language models in GGUF files.",
        subcommands: [
            LLMGenerate.self, LLMBench.self, LLMPerplexity.self, LLMServe.self, LLMWorker.self, LLMShardPlan.self, LLMInspect.self, LLMTokenize.self,
        ])
}

struct LLMInspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "List a GGUF file's metadata and tensors.",
        discussion: """
            Reads the header only (the tensor data stays memory-mapped and untouched) and prints \
            the version, every metadata key with its value (long strings and arrays elided), and one \
            line per tensor: name, shape (ggml order, innermost first), type and size. With \
            --dequantize NAME --out FILE.npy it writes that tensor as float32 (rows outermost), \
            for checking against other tools.
            """)

    @Argument(help: "The .gguf file.") var path: String
    @Option(help: "Print at most this many tensor lines (0: all).") var tensors: Int = 0
    @Option(help: "A tensor to dequantize to --out.") var dequantize: String?
    @Option(help: "Where --dequantize writes its .npy file.") var out: String?

    func run() throws {
        let file = try GGUFFile(contentsOf: path)
        if let name = dequantize {
            guard let out else { throw ValidationError("--dequantize needs --out FILE.npy") }
            guard let info = file.tensor(named: name) else { throw ValidationError("no tensor '\(name)' in \(path)") }
            let values = try file.floats(info)
            try TensorFile.writeNPY(Tensor(shape: info.shape.reversed(), scalars: values), to: out)
            print("wrote \(name) (\(info.type), \(info.shape.reversed().map(String.init).joined(separator: "×"))) to \(out)")
            return
        }
        print("file       \(path)  (GGUF v\(file.version), \(file.fileSize) bytes, alignment \(file.alignment))")
        print("metadata   \(file.keys.count) keys")
        for key in file.keys { print("  \(key) = \(file.metadata[key]!.summary)") }
        var byType: [String: (count: Int, bytes: Int)] = [:]
        for info in file.tensors {
            byType[info.type.description, default: (0, 0)].count += 1
            byType[info.type.description, default: (0, 0)].bytes += info.byteCount
        }
        let types = byType.sorted { $0.value.bytes > $1.value.bytes }.map { "\($0.key)×\($0.value.count)" }.joined(separator: " ")
        let parameters = file.tensors.reduce(0) { $0 + $1.elementCount }
        print("tensors    \(file.tensors.count) (\(types)), \(parameters) parameters")
        for info in tensors > 0 ? Array(file.tensors.prefix(tensors)) : file.tensors {
            print("  \(info.name)  \(info.type)  [\(info.shape.map(String.init).joined(separator: ", "))]  \(info.byteCount) bytes")
        }
    }
}

struct LLMTokenize: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize",
        abstract: "Turn text into token ids with a GGUF file's tokenizer.",
        discussion: """
            Prints the ids of TEXT as a JSON array, then the pieces they decode to. With --jsonl FILE, \
            reads one JSON string per line and prints one JSON array of ids per line (for comparing \
            with llama.cpp on many strings at once). Special-token texts such as <|im_start|> become \
            their ids unless --no-special is given.
            """)

    @Argument(help: "The .gguf file.") var path: String
    @Argument(help: "Text to tokenize.") var text: String?
    @Option(help: "A file of JSON strings, one per line.") var jsonl: String?
    @Flag(help: "Treat special-token texts as plain text.") var noSpecial = false

    func run() throws {
        let tokenizer = try Tokenizer(try GGUFFile(contentsOf: path))
        if let jsonl {
            guard let data = FileManager.default.contents(atPath: jsonl) else { throw ValidationError("cannot read \(jsonl)") }
            for (number, line) in String(decoding: data, as: UTF8.self).split(separator: "\n").enumerated() {
                guard let string = try? JSONDecoder().decode(String.self, from: Data(line.utf8)) else {
                    throw ValidationError("\(jsonl) line \(number + 1) is not a JSON string")
                }
                print("[" + tokenizer.encode(string, parseSpecial: !noSpecial).map(String.init).joined(separator: ", ") + "]")
            }
            return
        }
        guard let text else { throw ValidationError("give TEXT or --jsonl FILE") }
        let ids = tokenizer.encode(text, parseSpecial: !noSpecial)
        print("[" + ids.map(String.init).joined(separator: ", ") + "]")
        print(ids.map { "\($0) \(String(reflecting: tokenizer.decode([$0])))" }.joined(separator: "\n"))
    }
}
