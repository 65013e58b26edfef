import Foundation

/// Updates parameters from their gradients.
public protocol Optimizer {
    /// One update of every trainable parameter with learning rate `rate`; clears the gradients.
    mutating func step(_ parameters: [Parameter], rate: Float)
}

/// Stochastic gradient descent with momentum and L2 weight decay on weights.
public struct SGD: Optimizer {
    public var momentum: Float
    public var weightDecay: Float

    public init(momentum: Float = 0.9, weightDecay: Float = 5e-4) {
        self.momentum = momentum
        self.weightDecay = weightDecay
    }

    public mutating func step(_ parameters: [Parameter], rate: Float) {
        for parameter in parameters {
            defer { parameter.zeroGradient() }
            guard parameter.trainable else { continue }
            if parameter.firstMoment.isEmpty { parameter.firstMoment = [Float](repeating: 0, count: parameter.value.count) }
            let decay = parameter.decays ? weightDecay : 0
            let momentum = momentum
            parameter.value.withUnsafeMutableBufferPointer { value in
                parameter.firstMoment.withUnsafeMutableBufferPointer { velocity in
                    parameter.gradient.withUnsafeBufferPointer { gradient in
                        for index in value.indices {
                            velocity[index] = momentum * velocity[index] + gradient[index] + decay * value[index]
                            value[index] -= rate * velocity[index]
                        }
                    }
                }
            }
        }
    }
}

/// Adam with decoupled weight decay (AdamW) on weights.
public struct Adam: Optimizer {
    public var beta1: Float
    public var beta2: Float
    public var epsilon: Float
    public var weightDecay: Float
    private var steps = 0

    public init(beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8, weightDecay: Float = 1e-4) {
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.weightDecay = weightDecay
    }

    public mutating func step(_ parameters: [Parameter], rate: Float) {
        steps += 1
        let correction1 = 1 - pow(beta1, Float(steps))
        let correction2 = 1 - pow(beta2, Float(steps))
        for parameter in parameters {
            defer { parameter.zeroGradient() }
            guard parameter.trainable else { continue }
            if parameter.firstMoment.isEmpty {
                parameter.firstMoment = [Float](repeating: 0, count: parameter.value.count)
                parameter.secondMoment = [Float](repeating: 0, count: parameter.value.count)
            }
            let decay = parameter.decays ? weightDecay : 0
            let (beta1, beta2, epsilon) = (beta1, beta2, epsilon)
            parameter.value.withUnsafeMutableBufferPointer { value in
                parameter.firstMoment.withUnsafeMutableBufferPointer { first in
                    parameter.secondMoment.withUnsafeMutableBufferPointer { second in
                        parameter.gradient.withUnsafeBufferPointer { gradient in
                            for index in value.indices {
                                let g = gradient[index]
                                first[index] = beta1 * first[index] + (1 - beta1) * g
                                second[index] = beta2 * second[index] + (1 - beta2) * g * g
                                let m = first[index] / correction1
                                let v = second[index] / correction2
                                value[index] -= rate * (m / (v.squareRoot() + epsilon) + decay * value[index])
                            }
                        }
                    }
                }
            }
        }
    }
}
