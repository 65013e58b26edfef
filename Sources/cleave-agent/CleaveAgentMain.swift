import ArgumentParser
import CleaveAgentCLI

/// The lean agent for boards: the same agent and options as `cleave agent`, without the
/// coordinator, training or model tools linked in.
@main
struct CleaveAgentMain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cleave-agent",
        abstract: "Cleave device agent: announce, take the assignment, serve requests over MQTT.",
        discussion: """
            Same options as `cleave agent`. With --samples 0 (the default) it stays online until SIGTERM or \
            SIGINT; then it finishes the requests in flight, publishes its offline state and exits 0.
            """)

    @OptionGroup var options: AgentOptions

    func run() async throws { try await options.run() }
}
