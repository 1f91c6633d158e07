#!/usr/bin/env bash
# Regenerates the Swift code for the wire contract in Protos/ into Sources/FedGateProto/Generated.
# The generated files are committed; run this only after changing a .proto. It needs protoc
# (Debian's protobuf-compiler) and builds the two Swift plugins once from the package mirror into
# .build-protoc (a few minutes the first time).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v protoc >/dev/null; then
  echo "gen-proto: installing protoc (protobuf-compiler)"
  apt-get install -y -qq protobuf-compiler || { apt-get update -qq && apt-get install -y -qq protobuf-compiler; }
fi
P=.build-protoc/release
for plugin in protoc-gen-swift protoc-gen-grpc-swift-2; do
  [ -x "$P/$plugin" ] || swift build -c release --scratch-path .build-protoc --product "$plugin"
done
out=Sources/FedGateProto/Generated
rm -f "$out"/*.swift
protoc -I Protos \
  --plugin=protoc-gen-swift="$P/protoc-gen-swift" --swift_out="$out" --swift_opt=Visibility=Public \
  --plugin=protoc-gen-grpc-swift-2="$P/protoc-gen-grpc-swift-2" --grpc-swift-2_out="$out" \
  --grpc-swift-2_opt=Visibility=Public,Client=true,Server=true \
  Protos/fedgate/v1/*.proto
echo "gen-proto: wrote $(ls "$out"/*/*/*.swift 2>/dev/null || ls "$out")"
