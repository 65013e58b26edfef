/// One turn of a conversation.
public struct ChatMessage: Sendable, Equatable {
    public var role: String
    public var content: String

    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
}

/// Formats a conversation as the prompt a chat model was trained on.
///
/// GGUF files carry their template as Jinja text (`tokenizer.chat_template`). Cleave
/// does not run Jinja; it recognizes the template's family and renders it itself.
/// ChatML (`<|im_start|>role\n…<|im_end|>\n`, used by SmolLM2 and Qwen) is supported;
/// when the template inserts a default system message for conversations without one
/// (SmolLM2's does), that message is taken from the template text.
public struct ChatTemplate: Sendable, Equatable {
    public enum Family: String, Sendable { case chatML }

    public let family: Family
    /// The system message used when a conversation has none, if the template has one.
    public let defaultSystem: String?

    /// The template of `file`, or nil when it has none or Cleave does not know its family.
    public init?(_ file: GGUFFile) {
        guard let text = file.metadata["tokenizer.chat_template"]?.string, text.contains("<|im_start|>") else { return nil }
        family = .chatML
        defaultSystem = Self.literalSystemMessage(in: text)
    }

    public init(family: Family, defaultSystem: String? = nil) {
        self.family = family
        self.defaultSystem = defaultSystem
    }

    /// The prompt text for `messages`, ending with the assistant's turn opened.
    public func render(_ messages: [ChatMessage], addGenerationPrompt: Bool = true) -> String {
        var messages = messages
        if messages.first?.role != "system", let defaultSystem {
            messages.insert(ChatMessage(role: "system", content: defaultSystem), at: 0)
        }
        var text = ""
        for message in messages { text += "<|im_start|>\(message.role)\n\(message.content)<|im_end|>\n" }
        if addGenerationPrompt { text += "<|im_start|>assistant\n" }
        return text
    }

    /// The text of a literal `'<|im_start|>system\n…<|im_end|>` string in the Jinja source.
    private static func literalSystemMessage(in template: String) -> String? {
        let opening = "'<|im_start|>system\n"
        guard let start = template.firstRange(of: opening)?.upperBound,
            let end = template[start...].firstRange(of: "<|im_end|>")?.lowerBound
        else { return nil }
        let message = template[start..<end]
        guard !message.isEmpty, !message.contains("{{"), !message.contains("'") else { return nil }
        return String(message)
    }
}
