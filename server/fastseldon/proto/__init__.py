"""Generated protobuf and gRPC modules (see proto/generate.py); do not edit by hand."""
