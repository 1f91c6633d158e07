import FedGateProto
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
    }

    var transferHeader: TransferHeader {
        TransferHeader(planHash: planHash, round: Int(round), totalBytes: Int(clamping: totalBytes), examples: Int(clamping: examples), metrics: metrics)
    }
}
