/// Waits for a known number of answers, each given with its index, and hands them all on,
/// exactly once, when the last has come, or when ``finish()`` ends the wait early (a
/// timeout); answers after that are ignored. The one place the cluster counts answers down,
/// in place of a countdown written out at each fan-out. Confined to one event loop.
final class FanIn<Answer> {
    private var answers: [Answer?]
    private var outstanding: Int
    private var done: (([Answer?]) -> Void)?

    /// With a `count` of 0, `done` runs at once, with no answers.
    init(count: Int, _ done: @escaping ([Answer?]) -> Void) {
        answers = [Answer?](repeating: nil, count: count)
        outstanding = count
        self.done = done
        if count == 0 { finish() }
    }

    var isFinished: Bool { done == nil }

    /// The answer of the `index`th party; the first answer of each counts.
    func answer(_ index: Int, _ answer: Answer) {
        guard done != nil, answers.indices.contains(index), answers[index] == nil else { return }
        answers[index] = answer
        outstanding -= 1
        if outstanding == 0 { finish() }
    }

    /// Hands on the answers that came (nil for the others) and stops waiting.
    func finish() {
        guard let done else { return }
        self.done = nil
        done(answers)
    }
}

extension FanIn where Answer == Void {
    /// One more party is done (for fan-outs that only count).
    func answer(_ index: Int) { answer(index, ()) }
}
