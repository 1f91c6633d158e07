import FedGateAggregation
import FedGatePKI
import FedGateLearning
import FedGateProto
import FedGateStore
import GRPCCore
import FedGateTransport
import Foundation

/// Models and updates as protobuf transfer chunks: the header on the first message, the SHA-256 of
/// the whole payload on the last (see `TransferAssembler`). Lazy: a chunk is made when it is sent.
/// A range in the middle of a payload passes nil for what its ends do not carry.
func transferMessages<Chunks: Collection<Data>>(_ header: TransferHeader?, chunks: Chunks, sha256: String?)
    -> some Sequence<Fedgate_V1_TransferChunk> {
    let last = chunks.count - 1
    return chunks.enumerated().lazy.map { i, data in
        var chunk = Fedgate_V1_TransferChunk()
        if i == 0, let header { chunk.header = Fedgate_V1_TransferHeader(header) }
        chunk.data = data
        if i == last, let sha256 { chunk.sha256 = sha256 }
        return chunk
    }
}

/// A file fetched range after range (models, registry versions) into one assembler, until the
/// chunk that ends it (the one carrying the SHA-256). Each range is at most `rangeBytes`: the server
/// never has more than one range of this client queued, and a server that sends more is refused.
public enum RangedFetch {
    public static func file(maximumBytes: Int, what: String, rangeBytes: Int,
                            range: (_ offset: UInt64, _ length: UInt64) async throws -> [Fedgate_V1_TransferChunk]) async throws
        -> (payload: [UInt8], sha256: String) {
        var assembler = TransferAssembler(maximumBytes: maximumBytes, what: what)
        var offset: UInt64 = 0
        while true {
            let chunks = try await range(offset, UInt64(rangeBytes))
            for chunk in chunks { try assembler.add(chunk) }
            if chunks.isEmpty || chunks.last?.sha256.isEmpty == false { break }
            offset += UInt64(rangeBytes)
        }
        let (_, payload, sha256) = try assembler.finishWithDigest()
        return (payload, sha256)
    }

    /// One range's chunks as they arrive, refused as soon as they pass `limit` bytes (the range asked
    /// for), so the growing file is never captured by the response closure.
    public static func gather(_ messages: RPCAsyncSequence<Fedgate_V1_TransferChunk, any Error>, limit: UInt64) async throws -> [Fedgate_V1_TransferChunk] {
        var (chunks, bytes) = ([Fedgate_V1_TransferChunk](), 0)
        for try await chunk in messages {
            bytes += chunk.data.count
            guard bytes <= limit else { throw TransferError("the server sent more than the \(limit) bytes asked for") }
            chunks.append(chunk)
        }
        return chunks
    }
}

extension TransferAssembler {
    public mutating func add(_ chunk: Fedgate_V1_TransferChunk) throws {
        try add(header: chunk.hasHeader ? chunk.header.transferHeader : nil, data: chunk.data, sha256: chunk.sha256)
    }
}

extension Fedgate_V1_TransferHeader {
    init(_ header: TransferHeader) {
        self.init()
        planHash = header.planHash
        round = UInt32(header.round)
        totalBytes = UInt64(header.totalBytes)
        examples = UInt64(header.examples)
        metrics = header.metrics
        scaffoldScale = header.scaffoldScale
    }

    var transferHeader: TransferHeader {
        var header = TransferHeader(planHash: planHash, round: Int(round), totalBytes: Int(clamping: totalBytes), examples: Int(clamping: examples), metrics: metrics)
        header.scaffoldScale = scaffoldScale
        return header
    }
}

extension Fedgate_V1_SignedAuditHead {
    init(_ head: AuditHead) {
        self.init()
        signer = head.signer
        seq = UInt64(head.seq)
        hash = head.hash
        at = head.at.timeIntervalSince1970
        certificatePem = head.certificate
        signature = head.signature
    }

    /// The head a peer sent, or nil when its fields cannot be one (sizes bounded before anything
    /// is parsed or stored).
    var auditHead: AuditHead? {
        guard (1...64).contains(signer.utf8.count), hash.utf8.count == 64, certificatePem.utf8.count <= 16 << 10,
              signature.utf8.count <= 256, seq >= 1, seq <= UInt64(Int.max), at.isFinite else { return nil }
        return AuditHead(signer: signer, seq: Int(seq), hash: hash, at: Date(timeIntervalSince1970: at), certificate: certificatePem, signature: signature)
    }
}

extension SliceFigure {
    /// A silo's reported cell, its name bounded as any peer's text.
    init(_ p: Fedgate_V1_SliceFigure) {
        self.init(slice: PeerText.bounded(p.slice, limit: 128), accuracy: p.accuracy, examples: Int(clamping: p.examples))
    }

    var proto: Fedgate_V1_SliceFigure {
        var out = Fedgate_V1_SliceFigure()
        (out.slice, out.accuracy, out.examples) = (slice, accuracy, UInt64(examples))
        return out
    }
}

extension AttackFlag {
    var proto: Fedgate_V1_AttackFlag {
        var out = Fedgate_V1_AttackFlag()
        (out.silo, out.kind, out.reason) = (silo, kind.rawValue, reason)
        return out
    }
}

extension BrokerCoordinator.PlanStatus.AttackAlert {
    var proto: Fedgate_V1_AttackAlert {
        var out = Fedgate_V1_AttackAlert()
        (out.silo, out.rounds) = (silo, rounds.map(UInt32.init))
        return out
    }
}

extension AnalyticsResult {
    /// The pooled figures as the status carries them, each column by its name.
    func proto(columns names: [String], silos: [String]) -> Fedgate_V1_StatisticsResult {
        var out = Fedgate_V1_StatisticsResult()
        (out.count, out.silos) = (count, silos)
        out.columns = zip(names, columns).enumerated().map { j, pair in
            var c = Fedgate_V1_ColumnStatistics()
            (c.column, c.mean, c.deviation) = (pair.0, pair.1.mean, pair.1.deviation)
            if let h = histograms.first(where: { $0.column == j }) {
                c.edges = h.edges
                c.counts = h.counts.map { $0 ?? 0 }
                c.withheld = h.counts.map { $0 == nil }
                c.quartiles = h.quartiles ?? []
            }
            return c
        }
        return out
    }
}

extension ReleasedAnalytics {
    /// A silo's statistics-plan release as the wire carries it, its bins cut into histograms of the
    /// plan's `sizes`; bins of another total stay whole, for `problem(columns:bins:)` to name.
    init(_ m: Fedgate_V1_FeatureMoments, histograms sizes: [Int]) {
        var bins: [[Double]] = [m.bins]
        if sizes.reduce(0, +) == m.bins.count {
            var at = 0
            bins = sizes.map { k in defer { at += k }; return Array(m.bins[at..<at + k]) }
        }
        self.init(count: m.count, sums: m.sums, squares: m.squares, bins: bins)
    }
}
