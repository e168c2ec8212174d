/// Told of every change a store makes to its data, so that a durable tier can follow it.
/// Evictions and expiries are not changes of the data (the durable copy stays, and expired
/// rows are purged there by their own deadline), so they are not reported.
///
/// Called with the key's shard locked: implementations copy what they need and return.
public protocol StoreJournal: Sendable {
    /// `key` now holds `value` (nil: a tombstone kept until `expiry`) with `expiry` and `version`.
    func stored(key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer?, expiry: Int64, version: Version)
    /// `key` is gone.
    func removed(key: UnsafeRawBufferPointer)
    /// Every key is gone.
    func removedAll()
}
