import FedGateRounds
import FedGateLearning
import FedGatePKI
import FedGatePolicy
import FedGatePrivacy
import FedGateStore
import FedGateTensors
import FedGateTransport
import GRPCCore
import Logging

/// The one mapping from the domain's errors to the status a client sees: every refusal reaches the
/// caller with a code that says what kind of problem it is and a message that says what to do,
/// never as `UNKNOWN` with an empty message.
enum ErrorStatus {
    static func rpcError(for error: any Error) -> RPCError {
        if let e = error as? RPCError { return e }
        let message = PeerText.bounded("\(error)", limit: 2000)
        switch error {
        case is PolicyFileError, is DatasetError, is PlanUnsupportedByExecutor, is TensorError, is SafeTensorsError, is PrivacyError:
            return RPCError(code: .invalidArgument, message: message)
        case is PlanUnsupported:
            return RPCError(code: .unimplemented, message: message)
        case is PKIError:
            return RPCError(code: .permissionDenied, message: message)
        case is TransferError:
            return RPCError(code: .invalidArgument, message: message)
        case is ModelPayload.WrongShape, is ModelPayload.MissingTensor:
            return RPCError(code: .invalidArgument, message: message)
        case is RoundRefusal, is UpdateRefused:
            return RPCError(code: .failedPrecondition, message: message)
        case let e as BrokerError:
            return RPCError(code: e.code, message: message)
        case is GatewayError, is ServiceSetupError:
            // Raised at a gateway or while a service starts; never a handler's answer.
            return RPCError(code: .internalError, message: message)
        case is CancellationError:
            return RPCError(code: .cancelled, message: "the call was cancelled")
        case let e as LedgerError:
            if case .unavailable = e { return RPCError(code: .unavailable, message: message + "; try again") }
            if case .budgetExceeded = e { return RPCError(code: .resourceExhausted, message: message) }
            return RPCError(code: .internalError, message: message)
        default:
            return RPCError(code: .internalError, message: "the broker failed to answer: \(message)")
        }
    }
}

/// Maps whatever a handler throws through `ErrorStatus` (and logs what was not already an RPC error).
struct ErrorStatusInterceptor: ServerInterceptor {
    let logger: Logger

    func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingServerRequest<Input>,
        context: ServerContext,
        next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
    ) async throws -> StreamingServerResponse<Output> {
        do { return try await next(request, context) } catch let error as RPCError { throw error } catch {
            let mapped = ErrorStatus.rpcError(for: error)
            logger.warning("call failed", metadata: ["method": "\(context.descriptor.method)", "code": "\(mapped.code)", "reason": "\(mapped.message)"])
            throw mapped
        }
    }
}

extension BrokerError {
    /// Each case's status, in the one place statuses are chosen.
    var code: RPCError.Code {
        switch self {
        case .planAlreadyRunning: .alreadyExists
        case .unknownPlan: .notFound
        case .notAskedToEvaluate, .roundNotTraining: .failedPrecondition
        case .checkpointUnusable: .dataLoss
        case .approvalsNotGiven, .everyRoundAborted, .deployment: .failedPrecondition
        }
    }
}
