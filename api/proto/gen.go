// Package repstreampb holds the protobuf schema of the "repstream.v1.proto"
// WebSocket subprotocol and its generated Go code.
package repstreampb

// Needs protoc (Debian: apt-get install -y protobuf-compiler) and
// protoc-gen-go (go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12).
//go:generate protoc --proto_path=. --go_out=. --go_opt=paths=source_relative repstream.proto
