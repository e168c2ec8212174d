/// What the store does when `maxmemory` is reached (`maxmemory-policy`).
public enum EvictionPolicy: String, CaseIterable, Sendable {
    /// Evict the least recently used key of all keys.
    case allKeysLRU = "allkeys-lru"
    /// Evict the least recently used key among keys with an expiry.
    case volatileLRU = "volatile-lru"
    /// Evict the key with an expiry that would expire soonest.
    case volatileTTL = "volatile-ttl"
    /// Evict nothing; writes fail with `-OOM`.
    case noEviction = "noeviction"
}
