import Crypto
import FedGateProto
import FedGateServices
import FedGateTransport
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix

/// A silo that follows the protocol's shape but not its honesty, for the hostile-party tests: it
/// opens a task stream over mutual TLS with its own certificate, answers each offer as `answer`
/// says, and on each task runs `onTask` (to upload what it likes). It ends its stream when
/// `onTask` returns false.
struct HostilePeer {
    let credentials: TLSCredentials
    let port: Int
    let answer: @Sendable (Fedgate_V1_RoundOffer) -> Fedgate_V1_OfferReply
    let onTask: @Sendable (Fedgate_V1_RoundTask, Fedgate_V1_Broker.Client<HTTP2ClientTransport.Posix>) async throws -> Bool
    /// Called when the broker welcomes its stream (the peer is connected).
    var onWelcome: @Sendable () -> Void = {}

    /// Runs until the stream ends or the task is cancelled; the error that ended it, if any.
    func run() async -> (any Error)? {
        do {
            let transport = try FedGateTransports.client(host: "127.0.0.1", port: port, serverName: "broker", credentials: credentials)
            try await withGRPCClient(transport: transport) { grpc in
                let client = Fedgate_V1_Broker.Client(wrapping: grpc)
                let (outbox, continuation) = AsyncStream.makeStream(of: Fedgate_V1_GatewayMessage.self)
                var hello = Fedgate_V1_GatewayMessage()
                hello.hello.datasets = ["breast-cancer-2024"]
                continuation.yield(hello)
                // Heartbeats like an honest gateway's, so the broker does not close it as silent.
                let heartbeats = Task {
                    while !Task.isCancelled {
                        var beat = Fedgate_V1_GatewayMessage()
                        beat.heartbeat.sentAtMs = Int64(Date().timeIntervalSince1970 * 1000)
                        continuation.yield(beat)
                        try? await Task.sleep(for: .milliseconds(200))
                    }
                }
                defer { heartbeats.cancel() }
                try await client.connect(request: StreamingClientRequest { writer in
                    for await message in outbox { try await writer.write(message) }
                }) { response in
                    for try await message in response.messages {
                        switch message.kind {
                        case .offer(let offer):
                            var reply = Fedgate_V1_GatewayMessage()
                            reply.offerReply = answer(offer)
                            continuation.yield(reply)
                        case .welcome:
                            onWelcome()
                        case .task(let task):
                            if try await !onTask(task, client) { continuation.finish(); return }
                        default: continue
                        }
                    }
                }
            }
            return nil
        } catch { return error }
    }

    /// An acceptance carrying these feature moments.
    static func accept(_ offer: Fedgate_V1_RoundOffer, count: Double = 100, sums: [Double], squares: [Double], classes: UInt32 = 2) -> Fedgate_V1_OfferReply {
        var reply = Fedgate_V1_OfferReply()
        reply.planHash = offer.planHash
        reply.round = offer.round
        reply.accepted = true
        reply.moments.count = count
        reply.moments.sums = sums
        reply.moments.squares = squares
        reply.moments.classes = classes
        return reply
    }

    /// Uploads `delta` as this round's update; the broker's receipt.
    static func upload(_ delta: [Float], for task: Fedgate_V1_RoundTask, examples: UInt64 = 100,
                       via client: Fedgate_V1_Broker.Client<HTTP2ClientTransport.Posix>) async throws -> Fedgate_V1_UploadReceipt {
        let bytes = try ModelPayload.update(delta)
        var chunk = Fedgate_V1_TransferChunk()
        chunk.header.planHash = task.planHash
        chunk.header.round = task.round
        chunk.header.totalBytes = UInt64(bytes.count)
        chunk.header.examples = examples
        chunk.data = Data(bytes)
        chunk.sha256 = SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
        let message = chunk
        return try await client.uploadUpdate(request: StreamingClientRequest { try await $0.write(message) })
    }
}
