import CleaveSupport
import CleaveTensor

/// niid-bench's "simple CNN" for 28×28 grey images (Li et al., "Federated Learning on Non-IID
/// Data Silos"): two 5×5 convolutions of 6 and 16 channels, each followed by ReLU and 2×2 max
/// pooling, then dense layers 256 → 120 → 84 → 10 with ReLU between. 44,426 parameters,
/// 281,640 multiply-adds per image.
public enum SimpleCNN {
    /// The network, initialised from `generator`; `pool` splits its im2col loops (one thread
    /// when several boards train side by side in one process).
    public static func make(_ generator: inout SeededGenerator, pool: ThreadPool = ThreadPool(threads: 1)) -> Sequential {
        Sequential(
            "simple_cnn",
            [
                Conv2D("conv1", 1, 6, window: Window2D(kernel: 5), generator: &generator, pool: pool), Rectifier("relu1"),
                MaxPool2D("pool1", kernel: 2),
                Conv2D("conv2", 6, 16, window: Window2D(kernel: 5), generator: &generator, pool: pool), Rectifier("relu2"),
                MaxPool2D("pool2", kernel: 2), Flatten("flatten"),
                Dense("fc1", 16 * 4 * 4, 120, generator: &generator), Rectifier("relu3"),
                Dense("fc2", 120, 84, generator: &generator), Rectifier("relu4"),
                Dense(FashionMNISTNetworks.outputName, 84, 10, generator: &generator),
            ])
    }

    /// Per-image input shape.
    public static let inputShape = [1, 28, 28]
}
