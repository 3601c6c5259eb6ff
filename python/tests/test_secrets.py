"""A Python worker's functions read secrets and reach the network only
through the pool, for the call they run: a granted secret reads, one not
granted to the function is refused, and a request toward a private address
is refused by the pool's rules."""

import subprocess
import time

import grpc
import pytest

import taskworker

from procs import start_worker, stop


def cli(network, *args, stdin=None):
    return subprocess.run([network["binary"], *args], input=stdin, capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def py_secrets(network, tmp_path_factory):
    p, _ = start_worker("pyworker.py", "py_secrets", tmp_path_factory.mktemp("secrets"), "secrets")
    try:
        cli(network, "secret", "put", "PY_KEY", stdin="py-secret-value-7c1e")
        cli(network, "secret", "put", "PY_OTHER", stdin="not-for-this-function")
        cli(network, "secret", "grant", "PY_KEY", "--function", "py_secret")
        with taskworker.Client() as c:
            deadline = time.time() + 60
            while True:
                try:
                    c.call("py_secret", "PY_KEY")
                    break
                except taskworker.TaskWorkerError as e:
                    if e.code != grpc.StatusCode.NOT_FOUND or time.time() > deadline:
                        raise
                    time.sleep(0.2)
        yield p
    finally:
        stop(p)


def test_a_granted_secret_reads(py_secrets):
    with taskworker.Client() as c:
        assert c.call("py_secret", "PY_KEY") == "py-secret-value-7c1e"


def test_a_secret_not_granted_is_refused(py_secrets):
    with taskworker.Client() as c:
        with pytest.raises(taskworker.TaskWorkerError) as e:
            c.call("py_secret", "PY_OTHER")
    assert "PermissionError" in str(e.value) and "grant" in str(e.value)


def test_a_private_address_is_refused(py_secrets):
    with taskworker.Client() as c:
        with pytest.raises(taskworker.TaskWorkerError) as e:
            c.call("py_fetch", "http://127.0.0.1:1/")
    assert "PermissionError" in str(e.value)
