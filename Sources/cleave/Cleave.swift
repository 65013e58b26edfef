import ArgumentParser

@main
struct Cleave: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cleave",
        abstract: "Split deep-learning inference across small Linux boards and a coordinator.",
        discussion: """
            Cleave runs ONNX models on the CPU, cuts them into a head (for the device) and a \
            tail (for the coordinator), and serves them over MQTT. This build has the model tools; \
            agents, the coordinator and the demo come with later releases.
            """,
        version: "0.1.0",
        subcommands: [ModelCommand.self])
}
