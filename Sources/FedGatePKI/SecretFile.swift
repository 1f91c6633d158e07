import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Writes a secret (a private key) readable by its owner only (mode 0600), atomically: it is
/// written beside `url` and renamed over it, so a reader sees the old key or the new one, never a
/// partial one or none.
public func writeSecret(_ text: String, to url: URL) throws {
    let temporary = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).\(UUID().uuidString.prefix(8))")
    guard FileManager.default.createFile(atPath: temporary.path, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600]) else {
        throw PKIError("cannot write \(temporary.path): check that the folder exists and is writable")
    }
    guard rename(temporary.path, url.path) == 0 else {
        let reason = String(cString: strerror(errno))
        try? FileManager.default.removeItem(at: temporary)
        throw PKIError("cannot move the new key into \(url.path): \(reason)")
    }
}
