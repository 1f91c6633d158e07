/// This build's version: printed by `fedgate --version` and sent by a gateway in its hello.
public enum FedGateVersion {
    public static let current = "0.2.0"
}
