/// Redis's glob-style matching for KEYS and SCAN MATCH: `*`, `?`, `[abc]`, `[^a-z]`, and
/// `\` to escape, over raw bytes.
public enum GlobPattern {
    /// True if `string` matches `pattern`. Backtracking is bounded by the nesting limit
    /// Redis uses, so a hostile pattern cannot recurse without end.
    public static func matches(_ pattern: UnsafeRawBufferPointer, _ string: UnsafeRawBufferPointer) -> Bool {
        var skipLongerMatches = false
        return match(pattern[...], string[...], nesting: 0, skipLongerMatches: &skipLongerMatches)
    }

    public static func matches(_ pattern: [UInt8], _ string: [UInt8]) -> Bool {
        pattern.withUnsafeBytes { p in string.withUnsafeBytes { s in matches(p, s) } }
    }

    /// True when the pattern is just `*`, so callers can skip matching.
    public static func matchesEverything(_ pattern: UnsafeRawBufferPointer) -> Bool {
        pattern.count == 1 && pattern[0] == UInt8(ascii: "*")
    }

    private static func match(
        _ pattern: Slice<UnsafeRawBufferPointer>,
        _ string: Slice<UnsafeRawBufferPointer>,
        nesting: Int,
        skipLongerMatches: inout Bool
    ) -> Bool {
        if nesting > 1000 { return false }
        var p = pattern.startIndex
        var s = string.startIndex
        let pEnd = pattern.endIndex
        let sEnd = string.endIndex
        while p < pEnd && s < sEnd {
            switch pattern[p] {
            case UInt8(ascii: "*"):
                while p + 1 < pEnd && pattern[p + 1] == UInt8(ascii: "*") { p += 1 }
                if p + 1 == pEnd { return true }
                while s < sEnd {
                    if match(pattern[(p + 1)...], string[s...], nesting: nesting + 1, skipLongerMatches: &skipLongerMatches) {
                        return true
                    }
                    if skipLongerMatches { return false }
                    s += 1
                }
                skipLongerMatches = true
                return false
            case UInt8(ascii: "?"):
                s += 1
            case UInt8(ascii: "["):
                p += 1
                let negate = p < pEnd && pattern[p] == UInt8(ascii: "^")
                if negate { p += 1 }
                var matched = false
                while true {
                    if p >= pEnd {
                        p -= 1
                        break
                    }
                    let c = pattern[p]
                    if c == UInt8(ascii: "\\") && p + 1 < pEnd {
                        p += 1
                        if pattern[p] == string[s] { matched = true }
                    } else if c == UInt8(ascii: "]") {
                        break
                    } else if p + 2 < pEnd && pattern[p + 1] == UInt8(ascii: "-") {
                        var start = pattern[p]
                        var end = pattern[p + 2]
                        if start > end { swap(&start, &end) }
                        p += 2
                        if string[s] >= start && string[s] <= end { matched = true }
                    } else if c == string[s] {
                        matched = true
                    }
                    p += 1
                }
                if negate { matched.toggle() }
                if !matched { return false }
                s += 1
            case UInt8(ascii: "\\") where p + 1 < pEnd:
                p += 1
                if pattern[p] != string[s] { return false }
                s += 1
            default:
                if pattern[p] != string[s] { return false }
                s += 1
            }
            p += 1
        }
        if s == sEnd {
            while p < pEnd && pattern[p] == UInt8(ascii: "*") { p += 1 }
        }
        return p == pEnd && s == sEnd
    }
}
