"""A client given several pool replicas: the address list, the order the
pools are tried in, and the failover rules, against the real pool of the
test network, an address where nothing listens, and a pool that answers
every call UNAVAILABLE (as one that is stopping does)."""

import asyncio
import datetime
import ipaddress
import os
import socket
from concurrent import futures

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import taskworker
from taskworker import _env, _pools


@pytest.mark.parametrize("pools,want", [
    ("127.0.0.1:50051", ["127.0.0.1:50051"]),
    ("a.example:1, b.example:2", ["a.example:1", "b.example:2"]),
    ("[::1]:50051,127.0.0.1:50052", ["[::1]:50051", "127.0.0.1:50052"]),
])
def test_parse(pools, want):
    assert _pools.parse(pools) == want


@pytest.mark.parametrize("pools,err", [
    ("nowhere", "not host:port"),
    ("a:1,,b:2", "entry 2 is empty"),
    ("a:1,a:1", "names a:1 twice"),
    ("a:70000", "not host:port"),
    (":1", "not host:port"),
])
def test_parse_refuses(pools, err):
    with pytest.raises(ValueError, match=err):
        _pools.parse(pools)


class _Err(grpc.RpcError):
    def __init__(self, code, details):
        self._c, self._d = code, details

    def code(self):
        return self._c

    def details(self):
        return self._d


@pytest.mark.parametrize("code,details,method,want", [
    (grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; last error: Connection refused", "/taskworker.v1.RPCService/CallFunction", True),
    (grpc.StatusCode.UNAVAILABLE, "DNS resolution failed for nosuch.invalid:1", "/taskworker.v1.FileService/Push", True),
    (grpc.StatusCode.UNAVAILABLE, "Socket closed", "/taskworker.v1.RPCService/CallFunction", False),
    (grpc.StatusCode.UNAVAILABLE, "Socket closed", "/taskworker.v1.FileService/Get", True),
    (grpc.StatusCode.UNAVAILABLE, "the pool is stopping", "/taskworker.v1.DNSService/ResolveDomain", True),
    (grpc.StatusCode.NOT_FOUND, "no such file", "/taskworker.v1.FileService/Get", False),
    (grpc.StatusCode.DEADLINE_EXCEEDED, "failed to connect to all addresses", "/taskworker.v1.FileService/Get", False),
])
def test_retriable(code, details, method, want):
    assert _pools.retriable(_Err(code, details), method) == want


def test_order_is_round_robin_with_pools_down_last():
    now = [100.0]
    o = _pools.Order(3, clock=lambda: now[0])
    assert [o.next() for _ in range(3)] == [[0, 1, 2], [1, 2, 0], [2, 0, 1]]
    o.down(1)
    assert [o.next() for _ in range(3)] == [[0, 2, 1], [2, 0, 1], [2, 0, 1]]
    now[0] += _pools.DOWN_FOR + 0.1
    assert o.next() == [0, 1, 2]
    o.down(0)
    o.up(0)
    assert o.next() == [1, 2, 0]


def _pool(network):
    return _env.read_env_file(os.path.join(network["home"], "env"))["TASKWORKER_POOL"]


def _free_addr():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    addr = "127.0.0.1:%d" % s.getsockname()[1]
    s.close()
    return addr


def test_a_pool_that_cannot_be_connected_is_passed_over(network):
    dead = _free_addr()
    for pools in (f"{dead},{_pool(network)}", f"{_pool(network)},{dead}"):
        with taskworker.Client(pool_address=pools) as c:
            assert [c.call("add", i, 1) for i in range(6)] == [i + 1 for i in range(6)]
            resp = c.storage.Push(taskworker.taskworker_pb2.PushRequest(file_data=b"x", filename="failover.txt"))
            assert c.storage.Get(taskworker.taskworker_pb2.GetRequest(file_id=resp.file_id)).file_data == b"x"
    with taskworker.Client(pool_address=f"{dead},{_free_addr()}") as c:
        with pytest.raises(taskworker.TaskWorkerError) as e:
            c.call("add", 1, 2, timeout=10)
        assert e.value.code == grpc.StatusCode.UNAVAILABLE


def test_async_a_pool_that_cannot_be_connected_is_passed_over(network):
    async def main():
        async with taskworker.AsyncClient(pool_address=f"{_free_addr()},{_pool(network)}") as c:
            return [await c.call("add", i, 1) for i in range(6)]

    assert asyncio.run(main()) == [i + 1 for i in range(6)]


class _Stopping(grpc.GenericRpcHandler):
    """A pool that answers every call UNAVAILABLE, and counts them."""

    def __init__(self):
        self.calls = {}

    def service(self, details):
        def answer(request, context):
            self.calls[details.method] = self.calls.get(details.method, 0) + 1
            context.abort(grpc.StatusCode.UNAVAILABLE, "the pool is stopping: send the call to another pool")
        return grpc.unary_unary_rpc_method_handler(answer)


def _serve_stopping(ca_key, ca):
    """A TLS server with a certificate ca_key signs for 127.0.0.1,
    answering every call UNAVAILABLE; returns its address, its handler and
    its server."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "taskworker-pool")]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    handler = _Stopping()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=[handler])
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        cert.public_bytes(serialization.Encoding.PEM))]))
    server.start()
    return f"127.0.0.1:{port}", handler, server


@pytest.fixture
def stopping_pool(network):
    """A pool of the network (its certificate from the network's CA)
    answering every call UNAVAILABLE."""
    pool_dir = os.path.join(network["home"], "pool")
    with open(os.path.join(pool_dir, "ca.key"), "rb") as f:
        ca_key = serialization.load_pem_private_key(f.read(), None)
    with open(os.path.join(pool_dir, "ca.crt"), "rb") as f:
        ca = x509.load_pem_x509_certificate(f.read())
    addr, handler, server = _serve_stopping(ca_key, ca)
    yield addr, handler
    server.stop(None)


# A pool in the list whose certificate another CA issued (a server
# someone put there to collect tokens and calls) gets no call: its
# handshake fails, and the calls go to the network's pool.
def test_a_pool_with_another_cas_certificate_gets_no_call(network):
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "another CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
          .not_valid_after(now + datetime.timedelta(hours=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    addr, handler, server = _serve_stopping(ca_key, ca)
    try:
        with taskworker.Client(pool_address=f"{addr},{_pool(network)}") as c:
            assert [c.call("add", i, 1) for i in range(4)] == [1, 2, 3, 4]
            assert c.resolve("add.fn.taskworker.internal") == ["127.0.0.1"]
        assert handler.calls == {}
    finally:
        server.stop(None)


def test_read_only_calls_go_on_and_others_are_sent_once(network, stopping_pool):
    addr, handler = stopping_pool
    with taskworker.Client(pool_address=f"{addr},{_pool(network)}") as c:
        # ResolveDomain changes nothing: the calls the stopping pool gets
        # first are sent again to the other, and all succeed.
        assert [c.resolve("add.fn.taskworker.internal") for _ in range(4)] == [["127.0.0.1"]] * 4
        assert handler.calls.get("/taskworker.v1.DNSService/ResolveDomain", 0) == 2
        # A call of a function may change something: the pool that
        # answered UNAVAILABLE got it, and it is not sent again.
        results, failed = [], 0
        for i in range(4):
            try:
                results.append(c.call("add", i, 1))
            except taskworker.TaskWorkerError as e:
                assert e.code == grpc.StatusCode.UNAVAILABLE and "stopping" in e.details
                failed += 1
        assert failed == 2 and len(results) == 2
        assert handler.calls["/taskworker.v1.RPCService/CallFunction"] == failed


def test_async_read_only_calls_go_on_and_others_are_sent_once(network, stopping_pool):
    addr, handler = stopping_pool

    async def main():
        async with taskworker.AsyncClient(pool_address=f"{addr},{_pool(network)}") as c:
            answers = [await c.resolve("add.fn.taskworker.internal") for _ in range(4)]
            failed = 0
            for i in range(4):
                try:
                    await c.call("add", i, 1)
                except taskworker.TaskWorkerError:
                    failed += 1
            return answers, failed

    answers, failed = asyncio.run(main())
    assert answers == [["127.0.0.1"]] * 4
    assert handler.calls["/taskworker.v1.DNSService/ResolveDomain"] == 2
    assert failed == 2 and handler.calls["/taskworker.v1.RPCService/CallFunction"] == 2


# A worker given a pool that cannot be connected before the real one
# enrols, registers and serves through the real one.
def test_a_worker_given_several_pools_joins_through_one_that_answers(network, tmp_path):
    from procs import start_worker, stop
    w, _ = start_worker("pyworker.py", "py_pools", tmp_path / "py_pools", env={"TASKWORKER_POOL": f"{_free_addr()},{_pool(network)}"})
    try:
        with taskworker.Client() as c:
            resp = c.rpc.CallFunction(taskworker.taskworker_pb2.FunctionCallRequest(function_name="echo_slow", args=b"[5]"), timeout=60)
            assert resp.result == b"5" and resp.worker_id == "py_pools"
    finally:
        stop(w)
