import FedGateCLI
import Logging

// Logs go to standard error so that `--json` output on standard out stays one clean object.
LoggingSystem.bootstrap(StreamLogHandler.standardError)
await runFedGate()
