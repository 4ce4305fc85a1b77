import Foundation

/// Reading files with errors in plain words: a missing file, a folder, a FIFO or device where a
/// file was expected, or the operating system's reason — never Foundation's numbered domains.
public enum FileIO {
    /// The bytes of a regular file (memory-mapped when `mapped`).
    /// - Throws: ``ModelError/io(path:reason:)`` saying what is wrong with the path.
    public static func read(_ url: URL, mapped: Bool = false, what: String = "file") throws -> Data {
        var st = stat()
        guard stat(url.path, &st) == 0 else {
            throw ModelError.io(path: url.path, reason: "cannot read the \(what): \(String(cString: strerror(errno)))")
        }
        switch st.st_mode & S_IFMT {
        case S_IFREG: break
        case S_IFDIR: throw ModelError.io(path: url.path, reason: "is a folder, not a \(what)")
        default:
            throw ModelError.io(
                path: url.path, reason: "is not a regular file (a FIFO, socket or device), not a \(what)")
        }
        if mapped { return try map(url, size: Int(st.st_size), what: what) }
        do { return try Data(contentsOf: url) } catch {
            throw ModelError.io(path: url.path, reason: "cannot read the \(what): \(describe(error))")
        }
    }

    /// The file memory-mapped read-only (`mmap`, private), unmapped when the `Data` goes: its
    /// pages are read on first touch and may be handed back (``SafeTensorsFile/withBytes``).
    static func map(_ url: URL, size: Int, what: String) throws -> Data {
        guard size > 0 else { return Data() }
        let fd = open(url.path, O_RDONLY)
        guard fd >= 0 else {
            throw ModelError.io(path: url.path, reason: "cannot read the \(what): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        guard let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            throw ModelError.io(path: url.path, reason: "cannot map the \(what): \(String(cString: strerror(errno)))")
        }
        return Data(bytesNoCopy: p, count: size, deallocator: .custom { p, n in munmap(p, n) })
    }

    /// A Foundation or POSIX error in plain words: the POSIX reason where there is one.
    public static func describe(_ error: Error) -> String {
        if let e = error as? ModelError { return "\(e)" }
        let ns = error as NSError
        if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
            return String(cString: strerror(Int32(underlying.code)))
        }
        if ns.domain == NSPOSIXErrorDomain { return String(cString: strerror(Int32(ns.code))) }
        guard ns.domain == NSCocoaErrorDomain else { return ns.localizedDescription }
        switch ns.code {
        case NSFileNoSuchFileError, NSFileReadNoSuchFileError: return "no such file or folder"
        case NSFileWriteNoPermissionError, NSFileReadNoPermissionError: return "permission denied"
        case NSFileWriteFileExistsError: return "a file of that name exists"
        case NSFileWriteOutOfSpaceError: return "no space left on the device"
        case NSFileWriteVolumeReadOnlyError: return "read-only file system"
        case NSFileWriteInvalidFileNameError, NSFileReadInvalidFileNameError: return "invalid file name (too long?)"
        case NSFileReadTooLargeError: return "too large to read"
        case NSFileReadCorruptFileError: return "not in the expected format"
        case NSFileLockingError: return "locked by another process"
        case NSFileWriteUnknownError:
            return "could not be written (a file where a folder was expected, or a name too long?)"
        case NSFileReadUnknownError: return "could not be read (a folder or special file where a file was expected?)"
        default: return ns.localizedDescription
        }
    }
}

extension FileIO {
    /// Throws ``ModelError/io(path:reason:)`` when the file system holding `folder` (or its
    /// nearest existing parent) has less than `bytes` free (plus 1% and 1 MiB of headroom), so
    /// that writers refuse before writing rather than leave a half-written file on a full disk.
    public static func requireFreeSpace(_ bytes: Int, in folder: URL, for what: String) throws {
        var existing = folder.standardizedFileURL
        while !FileManager.default.fileExists(atPath: existing.path) && existing.path != "/" {
            existing.deleteLastPathComponent()
        }
        var fs = statvfs()
        guard statvfs(existing.path, &fs) == 0 else { return }
        let free = Int(fs.f_bavail) &* Int(fs.f_frsize)
        let needed = saturating(bytes, plus: bytes / 100 + (1 << 20))
        if needed > free {
            throw ModelError.io(
                path: folder.path,
                reason:
                    "\(what) needs about \(formatBytes(needed)) but the device has \(formatBytes(free)) free; nothing was written"
            )
        }
    }
}
