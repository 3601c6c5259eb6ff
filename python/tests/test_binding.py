"""The binding table (internal/function/bindingtest/testdata/binding.json),
which the Go binder runs in its tests, run against a Python worker through
a real pool: each case must give the same result bytes, or the same gRPC
code with the same words in its message, as the Go runner demands of a Go
worker (guest/pool_test.go)."""

import time

import grpc
import pytest

import taskworker
from taskworker import taskworker_pb2

import bindingfuncs
from procs import start_worker, stop

PREFIX = "pybind_"

# The table's error kinds as the caller sees them, as in the Go runner. A
# Python function has no panic apart from its exceptions: both are its
# error, Unknown, as a guest's panic is.
KIND_CODES = {
    "": [grpc.StatusCode.OK],
    "invalid_argument": [grpc.StatusCode.INVALID_ARGUMENT],
    "function_error": [grpc.StatusCode.UNKNOWN],
    "panic": [grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN],
}

TABLE = bindingfuncs.load()


@pytest.fixture(scope="module")
def binding_worker(network, tmp_path_factory):
    p, _ = start_worker("bindingworker.py", "py_binding", tmp_path_factory.mktemp("binding"), PREFIX)
    try:
        with taskworker.Client() as c:
            # Registered; wait until the pool routes to it.
            deadline = time.time() + 60
            while True:
                try:
                    c.call(PREFIX + "add", 1, 2)
                    break
                except taskworker.TaskWorkerError as e:
                    if e.code != grpc.StatusCode.NOT_FOUND or time.time() > deadline:
                        raise
                    time.sleep(0.2)
            yield c
    finally:
        stop(p)


def check(case, code, message, result):
    """What the Go runner checks, as an error message or None."""
    want = KIND_CODES[case.get("error", "")]
    if code not in want or case.get("message", "") not in message:
        return f"got {code.name} {message!r}; want {[c.name for c in want]} containing {case.get('message', '')!r}"
    if code == grpc.StatusCode.OK and result != case.get("result", "").encode():
        return f"result {result!r}, want {case.get('result', '').encode()!r}"
    return None


@pytest.mark.parametrize("case", TABLE["cases"], ids=[f"{c['function']} {c['args']}" for c in TABLE["cases"]])
def test_binding_table_through_the_pool(binding_worker, case):
    req = taskworker_pb2.FunctionCallRequest(function_name=PREFIX + case["function"], args=case["args"].encode())
    try:
        resp = binding_worker.rpc.CallFunction(req, timeout=30)
        code, message, result = grpc.StatusCode.OK, "", resp.result
        assert resp.worker_id == "py_binding"
    except grpc.RpcError as e:
        code, message, result = e.code(), e.details(), None
    err = check(case, code, message, result)
    assert err is None, err


def test_the_check_fails_a_mismatch():
    # The runner's check itself: a wrong result, code or message is caught.
    ok = {"function": "add", "args": "[1, 2]", "result": "3"}
    assert check(ok, grpc.StatusCode.OK, "", b"3") is None
    assert check(ok, grpc.StatusCode.OK, "", b"3 ") is not None
    assert check(ok, grpc.StatusCode.UNKNOWN, "x", None) is not None
    bad = {"function": "add", "args": "[1]", "error": "invalid_argument", "message": "got 1"}
    assert check(bad, grpc.StatusCode.INVALID_ARGUMENT, "add: takes 2 arguments (int, int), got 1", None) is None
    assert check(bad, grpc.StatusCode.INVALID_ARGUMENT, "add: takes 2 arguments", None) is not None
    assert check(bad, grpc.StatusCode.UNKNOWN, "got 1", None) is not None
