"""The memsidecar gRPC server: listeners, interceptors and one folder per memory block."""
