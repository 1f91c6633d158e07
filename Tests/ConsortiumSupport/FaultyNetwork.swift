import Foundation
import Synchronization

/// A TCP proxy on loopback that a test puts between gateways and the broker and turns bad on
/// demand: it delays every chunk, swallows everything (a network that drops packets while the
/// connection stays up), cuts every connection, or refuses new ones. Plain POSIX sockets and one
/// thread per direction: it knows nothing of TLS or gRPC, as a real network would not.
final class FaultyNetwork: Sendable {
    enum Mode: Sendable, Equatable {
        case pass
        case delay(milliseconds: Int)
        /// Bytes are read and dropped in both directions; nothing is closed.
        case blackhole
        /// New connections are closed at once.
        case refuse
    }

    let port: Int
    private let upstream: Int
    private let listener: Int32
    private let state = Mutex<(mode: Mode, generation: Int, open: Set<Int32>, closed: Bool)>((.pass, 0, [], false))

    init(to upstream: Int) throws {
        self.upstream = upstream
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var address = Self.loopback(port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard ok, listen(fd, 64) == 0 else { close(fd); throw CocoaError(.fileWriteUnknown) }
        listener = fd
        port = Int(UInt16(bigEndian: address.sin_port))
        let thread = Thread { [self] in acceptLoop() }
        thread.start()
    }

    var mode: Mode {
        get { state.withLock { $0.mode } }
        set { state.withLock { $0.mode = newValue } }
    }

    /// Closes every open connection now (as a router reboot would); new ones are accepted.
    func cutAll() {
        let open = state.withLock { s in defer { s.open.removeAll(); s.generation += 1 }; return s.open }
        for fd in open { shutdown(fd, Int32(SHUT_RDWR)) }
    }

    func stop() {
        state.withLock { $0.closed = true }
        cutAll()
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
    }

    private static func loopback(port: Int) -> sockaddr_in {
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_addr.s_addr = inet_addr("127.0.0.1")
        a.sin_port = UInt16(port).bigEndian
        return a
    }

    private func acceptLoop() {
        while true {
            let client = accept(listener, nil, nil)
            if client < 0 { if state.withLock({ $0.closed }) { return } else { continue } }
            if mode == .refuse { close(client); continue }
            let server = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = Self.loopback(port: upstream)
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(server, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
            }
            guard connected else { close(client); close(server); continue }
            let generation = state.withLock { s in s.open.formUnion([client, server]); return s.generation }
            for (from, to) in [(client, server), (server, client)] {
                Thread { [self] in pump(from, to, generation) }.start()
            }
        }
    }

    private func pump(_ from: Int32, _ to: Int32, _ generation: Int) {
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        defer { shutdown(to, Int32(SHUT_RDWR)); shutdown(from, Int32(SHUT_RDWR)) }
        while true {
            var poller = pollfd(fd: from, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, 50)
            if state.withLock({ $0.closed || $0.generation != generation }) { return }
            if ready <= 0 { continue }
            let n = read(from, &buffer, buffer.count)
            if n <= 0 { return }
            switch mode {
            case .blackhole: continue
            case .delay(let ms): usleep(useconds_t(ms * 1000))
            case .pass, .refuse: break
            }
            var sent = 0
            while sent < n {
                // MSG_NOSIGNAL: a peer that went away must not raise SIGPIPE in the test process.
                let w = buffer.withUnsafeBytes { send(to, $0.baseAddress! + sent, n - sent, Int32(MSG_NOSIGNAL)) }
                if w <= 0 { return }
                sent += w
            }
        }
    }
}
