import CleaveSupport
import Foundation

/// Losses: each returns the mean loss over the batch and its gradient with respect to the prediction.
public enum Loss {
    /// Softmax followed by cross-entropy against integer `labels`, for logits `[N, K]`.
    public static func softmaxCrossEntropy(_ logits: FloatTensor, labels: [Int]) -> (loss: Double, gradient: FloatTensor) {
        let (batch, classes) = (logits.shape[0], logits.shape[1])
        precondition(labels.count == batch, "\(labels.count) labels for a batch of \(batch)")
        var gradient = FloatTensor(shape: logits.shape)
        var total = 0.0
        for sample in 0..<batch {
            let row = logits.data[(sample * classes)..<((sample + 1) * classes)]
            let peak = row.max()!
            let exponentials = row.map { Double(exp($0 - peak)) }
            let sum = exponentials.reduce(0, +)
            total += log(sum) - Double(row[row.startIndex + labels[sample]] - peak)
            for k in 0..<classes {
                let probability = exponentials[k] / sum
                gradient.data[sample * classes + k] = Float((probability - (k == labels[sample] ? 1 : 0)) / Double(batch))
            }
        }
        return (total / Double(batch), gradient)
    }

    /// Knowledge distillation (Hinton et al.): `T² · KL(softmax(teacher/T) ‖ softmax(student/T))`,
    /// averaged over the batch; the gradient is with respect to the student's logits.
    public static func distillation(_ student: FloatTensor, teacher: FloatTensor, temperature: Float) -> (loss: Double, gradient: FloatTensor) {
        precondition(student.shape == teacher.shape, "student \(student.shape) vs teacher \(teacher.shape)")
        let (batch, classes) = (student.shape[0], student.shape[1])
        var gradient = FloatTensor(shape: student.shape)
        var total = 0.0
        let t = Double(temperature)
        func softmax(_ row: ArraySlice<Float>) -> [Double] {
            let peak = Double(row.max()!) / t
            let exponentials = row.map { exp(Double($0) / t - peak) }
            let sum = exponentials.reduce(0, +)
            return exponentials.map { $0 / sum }
        }
        for sample in 0..<batch {
            let range = (sample * classes)..<((sample + 1) * classes)
            let p = softmax(teacher.data[range])
            let q = softmax(student.data[range])
            for k in 0..<classes {
                if p[k] > 0 { total += p[k] * (log(p[k]) - log(max(q[k], 1e-300))) }
                gradient.data[sample * classes + k] = Float(t * (q[k] - p[k]) / Double(batch))
            }
        }
        return (t * t * total / Double(batch), gradient)
    }

    /// Mean squared error over every element.
    public static func meanSquaredError(_ prediction: FloatTensor, target: FloatTensor) -> (loss: Double, gradient: FloatTensor) {
        precondition(prediction.shape == target.shape, "prediction \(prediction.shape) vs target \(target.shape)")
        var gradient = FloatTensor(shape: prediction.shape)
        var total = 0.0
        let scale = 2 / Float(prediction.count)
        for index in prediction.data.indices {
            let difference = prediction.data[index] - target.data[index]
            total += Double(difference * difference)
            gradient.data[index] = scale * difference
        }
        return (total / Double(prediction.count), gradient)
    }

    /// Index of the largest logit per sample.
    public static func predictions(_ logits: FloatTensor) -> [Int] {
        let classes = logits.shape[1]
        return (0..<logits.shape[0]).map { sample in
            let row = logits.data[(sample * classes)..<((sample + 1) * classes)]
            return Classification.argmax(row)!
        }
    }
}
