#!/usr/bin/env bash
# Regenerates Sources/CleaveONNX/Proto/onnx.pb.swift from Sources/CleaveONNX/Proto/onnx.proto.
# The build never runs this: the generated file is committed. Run it only when updating onnx.proto
# (copy the new one from the `onnx` Python package: python3 -c "import onnx, os; print(os.path.dirname(onnx.__file__))").
# Needs protoc (Debian: protobuf-compiler) and protoc-gen-swift built from the swift-protobuf version in Package.swift.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v protoc >/dev/null || { echo "install protoc: sudo apt-get install protobuf-compiler" >&2; exit 1; }
work=$(mktemp -d)
git clone -q --depth 1 --branch "${SWIFT_PROTOBUF_VERSION:-1.39.0}" https://github.com/apple/swift-protobuf "$work/swift-protobuf"
(cd "$work/swift-protobuf" && swift build -c release --product protoc-gen-swift)
protoc --plugin="$work/swift-protobuf/.build/release/protoc-gen-swift" \
    --swift_out=Sources/CleaveONNX/Proto --swift_opt=Visibility=Internal \
    -I Sources/CleaveONNX/Proto Sources/CleaveONNX/Proto/onnx.proto
rm -rf "$work"
echo "regenerated Sources/CleaveONNX/Proto/onnx.pb.swift"
