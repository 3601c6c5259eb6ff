"""Errors carry the gRPC status code the pool answered with."""

import grpc


class TaskWorkerError(Exception):
    """A call the pool refused or that failed: code is a grpc.StatusCode,
    details the pool's message (what went wrong and what to do)."""

    def __init__(self, code, details):
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


def from_rpc_error(err):
    if isinstance(err, grpc.RpcError) and hasattr(err, "code"):
        return TaskWorkerError(err.code(), err.details())
    return err
