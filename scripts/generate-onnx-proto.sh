#!/usr/bin/env bash
# Regenerates Sources/CleaveONNX/Proto/onnx.pb.swift from Sources/CleaveONNX/Proto/onnx.proto.
# The build never runs this: the generated file is committed. Run it only when updating onnx.proto
# (copy the new one from the `onnx` Python package: python3 -c "import onnx, os; print(os.path.dirname(onnx.__file__))").
# Needs protoc (Debian: protobuf-compiler); protoc-gen-swift is built from the resolved swift-protobuf.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v protoc >/dev/null || { echo "install protoc: sudo apt-get install protobuf-compiler" >&2; exit 1; }
# Use the swift-protobuf checkout SwiftPM already resolved for this package, so the generator
# matches the runtime library version.
swift package resolve
work=$(mktemp -d)
cp -R .build/checkouts/swift-protobuf "$work/swift-protobuf"
(cd "$work/swift-protobuf" && swift build -c release --product protoc-gen-swift)
protoc --plugin="$work/swift-protobuf/.build/release/protoc-gen-swift" \
    --swift_out=Sources/CleaveONNX/Proto --swift_opt=Visibility=Internal \
    -I Sources/CleaveONNX/Proto Sources/CleaveONNX/Proto/onnx.proto
rm -rf "$work"
echo "regenerated Sources/CleaveONNX/Proto/onnx.pb.swift"
