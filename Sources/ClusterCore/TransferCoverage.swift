/// Who has sent what after a ring change, and whether reads may move to the new ring.
///
/// Each key that changes owner is sent by one old owner: the first of its old replicas that
/// the sender counts as unreachable-free (``HashRing/sender(forPosition:unreachable:)``). A
/// sender that finishes says which old owners it counted as down at every step of its run,
/// its *coverage*: it sent every key whose old replicas before it are all in that set. So
/// when an old owner dies before it finished, its keys are covered once every live old owner
/// has finished with a coverage that includes it; a live owner whose coverage falls short
/// sends again (a takeover run), counting the dead as down.
///
/// Claims are facts a member made about itself, so any node may relay them; a member's later
/// claims cover at least what its earlier ones did, so two claims merge by union.
public struct TransferCoverage: Sendable, Equatable {
    /// Member name → the old owners it covered; nil covers everyone (a member that was not
    /// sending when it finished the transition, or restarted after it).
    public private(set) var finished: [String: Set<String>?] = [:]

    public init() {}

    /// Takes in a member's claim; true if it added anything.
    @discardableResult
    public mutating func record(_ member: String, covering: Set<String>?) -> Bool {
        guard let known = finished[member] else {
            finished[member] = .some(covering)
            return true
        }
        guard let knownSet = known else { return false }
        guard let covering else {
            finished[member] = .some(nil)
            return true
        }
        let merged = knownSet.union(covering)
        guard merged != knownSet else { return false }
        finished[member] = .some(merged)
        return true
    }

    public func hasFinished(_ member: String) -> Bool { finished[member] != nil }

    /// What `member` covered: nil when it has not finished, `.some(nil)` when it covers all.
    public func coverage(of member: String) -> Set<String>?? { finished[member] }

    /// Old owners that died before they finished: someone else must send their keys.
    public func unfinished(dead: Set<String>, oldOwners: [String]) -> Set<String> {
        Set(oldOwners.filter { dead.contains($0) && finished[$0] == nil })
    }

    /// What every live old owner must have covered. A key is delivered once one of its old
    /// replicas finished covering every replica before it in the key's list; the first replica
    /// of each list is enough unless it died unfinished. Then the first live replica must count
    /// every dead one before it as down, finished or not (a dead one that finished did not
    /// send for the one that died unfinished), so, once anyone died unfinished, every dead
    /// old owner. Empty when nobody did.
    public func required(oldOwners: [String], dead: Set<String>) -> Set<String> {
        unfinished(dead: dead, oldOwners: oldOwners).isEmpty ? [] : dead.intersection(oldOwners)
    }

    /// The live old owners reads still wait for: those that have not finished, or finished
    /// without covering what ``required(oldOwners:dead:)`` says. Empty: reads move to the new
    /// ring.
    public func waiting(oldOwners: [String], dead: Set<String>) -> [String] {
        let required = required(oldOwners: oldOwners, dead: dead)
        return oldOwners.filter { owner in
            guard !dead.contains(owner) else { return false }
            guard let claim = finished[owner] else { return true }
            guard let covered = claim else { return false }
            return !required.isSubset(of: covered)
        }
    }

    /// The dead old owners `member` has still to cover (it must send again): empty unless it
    /// finished with a coverage that leaves some of the required out.
    public func owedBy(_ member: String, oldOwners: [String], dead: Set<String>) -> Set<String> {
        guard case .some(.some(let covered)) = finished[member] else { return [] }
        return required(oldOwners: oldOwners, dead: dead).subtracting(covered)
    }
}
