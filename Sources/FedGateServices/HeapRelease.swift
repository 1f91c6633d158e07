import CFedGateSystem

/// Large transfers pass through the heap as 1 MiB chunks (protobuf messages, NIO buffers) from
/// several threads' arenas; once freed, glibc keeps those pages resident. Measured with `fedgate
/// bench round` (101 MB model, 3 silos): the broker stayed near 670 MB between transfers with only
/// two model-sized arrays alive. After a transfer this large, the free pages go back to the system.
enum HeapRelease {
    static let threshold = 16 << 20

    static func after(transferOf bytes: Int) {
        if bytes >= threshold { _ = fedgate_release_free_memory() }
    }
}
