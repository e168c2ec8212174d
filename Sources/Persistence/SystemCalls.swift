#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The system calls the persistence files make that differ by platform, under one name.
enum SystemCall {
    static func open(_ path: String, _ flags: Int32, _ mode: mode_t = 0) -> Int32 {
        #if canImport(Darwin)
        Darwin.open(path, flags, mode)
        #elseif canImport(Musl)
        Musl.open(path, flags, mode)
        #else
        Glibc.open(path, flags, mode)
        #endif
    }

    static func close(_ descriptor: Int32) -> Int32 {
        #if canImport(Darwin)
        Darwin.close(descriptor)
        #elseif canImport(Musl)
        Musl.close(descriptor)
        #else
        Glibc.close(descriptor)
        #endif
    }

    /// Makes the file's data durable: `fdatasync` on Linux; on Darwin, where `fsync` only
    /// reaches the drive's cache, `F_FULLFSYNC`.
    static func dataSync(_ descriptor: Int32) -> Int32 {
        #if canImport(Darwin)
        fcntl(descriptor, F_FULLFSYNC)
        #else
        fdatasync(descriptor)
        #endif
    }

    static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    /// Makes the file's data and size durable (what a file SQLite wrote needs).
    static func sync(path: String) -> String? {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return errno == ENOENT ? nil : lastError }
        defer { _ = close(descriptor) }
        #if canImport(Darwin)
        return fcntl(descriptor, F_FULLFSYNC) == 0 ? nil : lastError
        #else
        return fsync(descriptor) == 0 ? nil : lastError
        #endif
    }

    /// The size of the file at `path`, 0 if there is none.
    static func size(_ path: String) -> Int {
        var info = stat()
        return stat(path, &info) == 0 ? Int(info.st_size) : 0
    }

    /// The text of the last error (`errno`).
    static var lastError: String { String(cString: strerror(errno)) }
}
