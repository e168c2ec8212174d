import Persistence

/// A whole pending-log file: its framing (both formats) and every batch's changes.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    _ = PendingLogCheck.problem(in: UnsafeRawBufferPointer(start: data, count: count))
    return 0
}
