import ArgumentParser

@main
struct Cleave: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cleave",
        abstract: "Split deep-learning inference across small Linux boards and a coordinator.",
        discussion: """
            Cleave runs ONNX models on the CPU, cuts them into a head (for the device) and a \
            tail (for the coordinator), and serves them over MQTT. `cleave demo` runs the whole path on one machine.
            """,
        version: "0.1.0",
        subcommands: [
            DemoCommand.self, AgentCommand.self, CoordinatorCommand.self, ModelCommand.self, TrainCommand.self, BenchCommand.self, LLMCommand.self,
            NetemCommand.self, HarnessCommand.self, FederatedCommand.self, FleetCommand.self,
        ])
}
