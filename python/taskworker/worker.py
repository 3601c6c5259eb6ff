"""A TaskWorker worker in Python: it joins a pool exactly as a Go worker
does (docs/PROTOCOL.md) and serves Python functions, sync or async, with
arguments mapped from JSON as the Go library maps them.

Python functions run natively, in this process: this is the operator's own
code. Untrusted code is deployed as WebAssembly or Starlark instead."""

import asyncio
import collections
import contextvars
import datetime
import inspect
import os
import socket
import time

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID

from . import _env, _pools
from .binding import ArgumentError, Binding, encode_result
from .client import AsyncClient
from .v1 import control_pb2, control_pb2_grpc, secrets_pb2, secrets_pb2_grpc, taskworker_pb2, taskworker_pb2_grpc

VERSION = "python-0.1.0"
TRAILER_WORKER = "x-taskworker-worker"
POOL_CN = "taskworker-pool"


class _CallError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = code, message


TaskInfo = collections.namedtuple("TaskInfo", "id attempt")
TaskInfo.__doc__ = """The task a call runs for: its id and which attempt this is (from 1)."""

_task = contextvars.ContextVar("taskworker_task", default=None)
# The token of the call running now, which the pool resolves when the
# function asks for a secret or an outbound request.
_call_token = contextvars.ContextVar("taskworker_call_token", default="")


def current_task():
    """The task the running call is for (a TaskInfo), or None for a plain
    call. A task runs at least once: a function with effects outside
    itself uses its id and attempt to make them idempotent."""
    return _task.get()


class TaskWorker:
    """A worker: TaskWorker(worker_id, node_pool_address=None).

    The pool address, the join token (a file: TASKWORKER_JOIN_TOKEN_FILE, or
    the token itself in TASKWORKER_JOIN_TOKEN) and the CA (TASKWORKER_CA)
    default to the environment, then to the env file of the running
    `taskworker up`. The address may name several pool replicas,
    "host:port,host:port": the worker enrols, registers and heartbeats
    through whichever answers, as a Go worker does (see Client). Register functions with register_function or the
    function decorator, then `await start_server(port=50052)`."""

    def __init__(self, worker_id, node_pool_address=None, *, join_token=None, ca=None, data_dir=None, labels=None,
                 advertise=None, token=None):
        self.worker_id = worker_id
        self.node_pool_address = _env.from_env(node_pool_address, "TASKWORKER_POOL")
        self._join_token = join_token
        self._ca_file = _env.from_env(ca, "TASKWORKER_CA")
        self._data_dir = data_dir
        self._labels = dict(labels or {})
        self._advertise = advertise
        self._token = token
        self._functions = {}
        self._storage_client = None
        # A synchronous mTLS channel to the pool, for get_secret and
        # call_external_api from a def (made on first use).
        self._sync_pool = None
        self._server = None
        self._tasks = []
        self._inflight = 0
        self._completed = 0
        self._stopping = None

    # Functions.

    def register_function(self, name, func, idempotent=False, blocking=None):
        """Serve func as name. Its arguments come from the call's JSON array,
        by position, typed by their annotations (taskworker.binding); its
        result goes back as JSON. An async def is awaited; a def runs in a
        thread, or on the event loop once it has shown it returns at once
        (blocking=None: see _Placement); blocking=True keeps it in threads,
        blocking=False runs it on the loop always. A parameter whose
        annotation JSON cannot carry is refused here, with a TypeError."""
        if not callable(func):
            raise TypeError(f"{name}: {func!r} is not callable")
        if name in self._functions:
            raise ValueError(f"function {name!r} is registered already")
        binding = Binding(name, func)
        self._functions[name] = (func, idempotent, binding, None if binding.is_async else _Placement(blocking))
        return func

    def function(self, name=None, idempotent=False, blocking=None):
        """Decorator: @worker.function("add") serves the function as add (its
        own name when none is given)."""
        def deco(func):
            self.register_function(name or func.__name__, func, idempotent, blocking)
            return func
        return deco

    # Storage: the seed's `await worker.storage.Push(...)`.

    @property
    def storage(self):
        """FileService over the pool, with an API token (token=, else
        TASKWORKER_TOKEN or the env file): awaitable, as in the seed's File
        Operation Examples. Made on first use, in the running loop."""
        if self._storage_client is None:
            self._storage_client = AsyncClient(self.node_pool_address or None, token=self._token, ca=self._ca_file or None)
        return self._storage_client.storage

    def get_secret(self, name):
        """The value (bytes) of the secret name, read through the pool for the
        call running now: the function's caller (or, for a deployed
        function, its owner) must have granted it to this function
        (`taskworker secret grant NAME --function F`). Every read is audited.
        Raises PermissionError without a grant, LookupError for no such
        secret, RuntimeError outside a call."""
        resp = self._for_call(lambda stub, token: stub.ReadForCall(
            secrets_pb2.ReadForCallRequest(call_token=token, name=name), timeout=30), secrets_pb2_grpc.SecretServiceStub)
        return resp.value

    def call_external_api(self, url, headers=None, method="GET", body=b"", **kwargs):
        """An outbound HTTP request, made by the pool for the call running now,
        under the pool's rules (no private addresses) and only toward hosts a
        secret grant of this function names; `{{secret:NAME}}` in a header
        value is filled in by the pool, and echoed back redacted. Returns a
        dict: status_code, headers (a list of (name, value)), body (bytes)."""
        hs = [secrets_pb2.HTTPHeader(name=k, value=v) for k, v in (headers or {}).items()]
        if isinstance(body, str):
            body = body.encode()
        req = secrets_pb2.FetchRequest(method=method, url=url, headers=hs, body=body)
        resp = self._for_call(lambda stub, token: stub.FetchForCall(
            secrets_pb2.FetchForCallRequest(call_token=token, request=req), timeout=60), secrets_pb2_grpc.EgressServiceStub)
        return {"status_code": resp.status_code, "headers": [(h.name, h.value) for h in resp.headers], "body": resp.body}

    def _for_call(self, rpc, stub_type):
        token = _call_token.get()
        if not token:
            raise RuntimeError("get_secret and call_external_api work only inside a call that came through the pool")
        if self._sync_pool is None:
            creds = grpc.ssl_channel_credentials(root_certificates=self._ca_pem, private_key=self._key_pem(), certificate_chain=self._cert_pem)
            self._sync_pool = _pools.channel([grpc.secure_channel(a, creds) for a in self._pool_addrs])
        try:
            return rpc(stub_type(self._sync_pool), token)
        except grpc.RpcError as e:
            code = e.code()
            if code == grpc.StatusCode.PERMISSION_DENIED:
                raise PermissionError(e.details()) from None
            if code == grpc.StatusCode.NOT_FOUND:
                raise LookupError(e.details()) from None
            raise

    # Joining the pool.

    def _read_join_token(self):
        if self._join_token:
            return self._join_token
        t = os.environ.get("TASKWORKER_JOIN_TOKEN")
        if t:
            return t
        path = _env.from_env(None, "TASKWORKER_JOIN_TOKEN_FILE")
        if not path:
            raise ValueError("no join token: pass join_token, set TASKWORKER_JOIN_TOKEN_FILE (the pool's join.token), or start 'taskworker up'")
        with open(path) as f:
            return f.read().strip()

    def _identity_dir(self):
        d = self._data_dir or os.path.join(_env.home_dir(), "python-workers", self.worker_id)
        d = os.path.join(d, "identity")
        os.makedirs(d, mode=0o700, exist_ok=True)
        os.chmod(d, 0o700)
        return d

    def _load_key(self, d):
        path = os.path.join(d, "worker.key")
        if os.path.exists(path):
            with open(path, "rb") as f:
                return serialization.load_pem_private_key(f.read(), None)
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        os.replace(path + ".tmp", path)
        return key

    def _csr(self):
        return x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(self._key, hashes.SHA256()).public_bytes(
            serialization.Encoding.DER)

    async def _enroll(self, channel, join_token):
        stub = control_pb2_grpc.RegistryServiceStub(channel)
        try:
            resp = await stub.Enroll(control_pb2.EnrollRequest(worker_id=self.worker_id, csr=self._csr(), join_token=join_token,
                                                               cluster_id=self._cluster_id), timeout=15)
        except grpc.RpcError as e:
            raise RuntimeError(f"enrolling {self.worker_id} with the pool at {self.node_pool_address}: {e.code().name}: {e.details()}") from None
        cert = x509.load_der_x509_certificate(resp.certificate)
        self._cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        self._not_after = resp.not_after_ms / 1000
        self._not_before = time.time()
        self._cluster_id = resp.cluster_id
        with open(os.path.join(self._idir, "worker.crt"), "wb") as f:
            f.write(self._cert_pem)
        with open(os.path.join(self._idir, "cluster"), "w") as f:
            f.write(self._cluster_id)

    def _key_pem(self):
        return self._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())

    def _server_credentials(self):
        """The worker's certificate as the server presents it: the current
        one, as renewal replaces it (grpc asks at each new connection)."""
        def config():
            return grpc.ssl_server_certificate_configuration([(self._key_pem(), self._cert_pem)], root_certificates=self._ca_pem)
        served = [self._cert_pem]

        def fetch():
            if self._cert_pem is served[0]:
                return None  # unchanged
            served[0] = self._cert_pem
            return config()
        return grpc.dynamic_ssl_server_credentials(config(), fetch, require_client_authentication=True)

    def _mtls_channel(self):
        creds = grpc.ssl_channel_credentials(root_certificates=self._ca_pem, private_key=self._key_pem(), certificate_chain=self._cert_pem)
        return _pools.channel([grpc.aio.secure_channel(a, creds) for a in self._pool_addrs])

    async def start_server(self, port=50052, host="127.0.0.1"):
        """Enrol with the pool if this worker has no certificate yet, serve
        the registered functions on host:port over mTLS (only the pool may
        call), and register with the pool. Returns once registered; the
        worker then serves until stop_server."""
        if not self.node_pool_address:
            raise ValueError("no pool address: pass node_pool_address, set TASKWORKER_POOL, or start 'taskworker up'")
        self._pool_addrs = _pools.parse(self.node_pool_address)
        if not self._ca_file:
            raise ValueError("no CA: pass ca or set TASKWORKER_CA (the pool's ca.crt)")
        with open(self._ca_file, "rb") as f:
            self._ca_pem = f.read()
        self._stopping = asyncio.Event()
        self._idir = self._identity_dir()
        self._key = self._load_key(self._idir)
        self._cluster_id = ""
        cpath = os.path.join(self._idir, "cluster")
        if os.path.exists(cpath):
            with open(cpath) as f:
                self._cluster_id = f.read().strip()
        self._cert_pem = None
        crt = os.path.join(self._idir, "worker.crt")
        if os.path.exists(crt):
            with open(crt, "rb") as f:
                pem = f.read()
            cert = x509.load_pem_x509_certificate(pem)
            if cert.not_valid_after.replace(tzinfo=datetime.timezone.utc).timestamp() > time.time() + 60:
                self._cert_pem, self._not_after = pem, cert.not_valid_after.replace(tzinfo=datetime.timezone.utc).timestamp()
                self._not_before = cert.not_valid_before.replace(tzinfo=datetime.timezone.utc).timestamp()
        if self._cert_pem is None:
            creds = grpc.ssl_channel_credentials(root_certificates=self._ca_pem)
            async with _pools.channel([grpc.aio.secure_channel(a, creds) for a in self._pool_addrs]) as ch:
                await self._enroll(ch, self._read_join_token())
        self._pool = self._mtls_channel()

        self._server = grpc.aio.server()
        taskworker_pb2_grpc.add_RPCServiceServicer_to_server(_RPCService(self), self._server)
        bound = self._server.add_secure_port(f"{host}:{port}", self._server_credentials())
        if bound == 0:
            raise OSError(f"cannot listen on {host}:{port}")
        await self._server.start()
        self.port = bound
        self._address = self._advertise or f"{host}:{bound}"
        await self._register()
        self._tasks.append(asyncio.create_task(self._heartbeat()))

    async def _register(self):
        specs = [control_pb2.FunctionSpec(name=n, idempotent=idem, signature="python " + _signature(f))
                 for n, (f, idem, _, _) in sorted(self._functions.items())]
        stub = control_pb2_grpc.RegistryServiceStub(self._pool)
        try:
            resp = await stub.Register(control_pb2.RegisterRequest(worker_id=self.worker_id, address=self._address, functions=specs,
                                                                   labels=self._labels, version=VERSION, cluster_id=self._cluster_id), timeout=15)
        except grpc.RpcError as e:
            raise RuntimeError(f"registering {self.worker_id} with the pool: {e.code().name}: {e.details()}") from None
        self._lease = resp.lease_id
        self._interval = max(resp.heartbeat_interval_ms / 1000, 0.1)

    async def _heartbeat(self):
        stub = control_pb2_grpc.RegistryServiceStub(self._pool)
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._stopping.wait(), self._interval)
                return
            except asyncio.TimeoutError:
                pass
            try:
                # Renew the certificate at two thirds of its life.
                if time.time() > self._not_before + (self._not_after - self._not_before) * 2 / 3:
                    await self._enroll(self._pool, "")
                    old, self._pool = self._pool, self._mtls_channel()
                    self._sync_pool = None  # the next use dials with the renewed certificate
                    stub = control_pb2_grpc.RegistryServiceStub(self._pool)
                    await old.close()
                await stub.Heartbeat(control_pb2.HeartbeatRequest(worker_id=self.worker_id, lease_id=self._lease,
                                                                  inflight=self._inflight, calls_total=self._completed), timeout=5)
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.NOT_FOUND:
                    try:
                        await self._register()
                    except Exception:
                        pass
            except Exception:
                pass

    async def stop_server(self, grace=10):
        """Leave the pool, finish the calls running (up to grace seconds),
        then stop serving."""
        if self._server is None:
            return
        self._stopping.set()
        try:
            await control_pb2_grpc.RegistryServiceStub(self._pool).Deregister(
                control_pb2.DeregisterRequest(worker_id=self.worker_id, lease_id=self._lease), timeout=5)
        except grpc.RpcError:
            pass
        await asyncio.sleep(0.2)  # calls routed before the pool saw it leave
        await self._server.stop(grace)
        for t in self._tasks:
            t.cancel()
        await self._pool.close()
        if self._storage_client is not None:
            await self._storage_client.close()
        self._server = None

    # Serving a call.

    def _check_pool(self, context):
        """Only the pool may call: its certificate names it."""
        pems = context.auth_context().get("x509_pem_cert")
        if not pems:
            return False
        cert = x509.load_pem_x509_certificate(pems[0])
        cns = [a.value for a in cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)]
        try:
            uris = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value.get_values_for_type(
                x509.UniformResourceIdentifier)
        except x509.ExtensionNotFound:
            uris = []
        return POOL_CN in cns and f"spiffe://{self._cluster_id}/pool" in uris

    def _entry(self, req):
        entry = self._functions.get(req.function_name)
        if entry is None:
            raise _CallError(grpc.StatusCode.NOT_FOUND, f"worker {self.worker_id} does not serve function {req.function_name!r}")
        return entry

    @staticmethod
    def _args(binding, req):
        try:
            return binding.decode(req.args)
        except ArgumentError as e:
            raise _CallError(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None

    def _response(self, req, result):
        try:
            out = encode_result(result)
        except (TypeError, ValueError) as e:
            raise _CallError(grpc.StatusCode.UNKNOWN, f"{req.function_name}: encoding the result as JSON: {e}") from None
        return taskworker_pb2.FunctionCallResponse(result=out, worker_id=self.worker_id)

    async def _run(self, req):
        fn, _, binding, placement = self._entry(req)
        if placement is not None and placement.on_loop():
            return self._run_now(req, fn, binding, placement)
        args = self._args(binding, req)
        if req.task_id:
            _task.set(TaskInfo(req.task_id, req.task_attempt))
        _call_token.set(req.call_token)
        self._inflight += 1
        try:
            if placement is None:
                result = await fn(*args)
            else:
                result = await placement.run_in_thread(fn, args)
        except _CallError:
            raise
        except Exception as e:
            raise _CallError(grpc.StatusCode.UNKNOWN, f"{req.function_name}: {type(e).__name__}: {e}") from None
        finally:
            self._inflight -= 1
            self._completed += 1
        return self._response(req, result)

    def _run_now(self, req, fn, binding, placement):
        """A call of a def that runs on the loop, start to end, with no
        await: the stream's reader runs it as the frame arrives."""
        args = self._args(binding, req)
        token = _task.set(TaskInfo(req.task_id, req.task_attempt) if req.task_id else None)
        call = _call_token.set(req.call_token)
        self._inflight += 1
        try:
            result = placement.run_here(fn, args)
        except Exception as e:
            raise _CallError(grpc.StatusCode.UNKNOWN, f"{req.function_name}: {type(e).__name__}: {e}") from None
        finally:
            self._inflight -= 1
            self._completed += 1
            _task.reset(token)
            _call_token.reset(call)
        return self._response(req, result)


class _Placement:
    """Where a def runs. In a thread, so that a function that blocks does
    not hold up the other calls and the heartbeats; but the two thread
    switches of a call cost more than a short function itself (most of a
    trivial call's time in the worker: docs/BENCHMARKS.md), so a function
    whose last PROMOTE_AFTER runs each returned within FAST seconds runs on
    the event loop from then on. One run there that takes over SLOW sends
    it back to threads for good: a function that can block holds the loop
    up at most once."""

    PROMOTE_AFTER = 16
    FAST = 0.001
    SLOW = 0.02

    def __init__(self, blocking):
        self.blocking = blocking  # True: threads; False: the loop; None: learn which
        self.fast_runs = 0

    def on_loop(self):
        return self.blocking is False or (self.blocking is None and self.fast_runs >= self.PROMOTE_AFTER)

    async def run(self, fn, args):
        if self.on_loop():
            return self.run_here(fn, args)
        return await self.run_in_thread(fn, args)

    def run_here(self, fn, args):
        t = time.perf_counter()
        try:
            return fn(*args)
        finally:
            if self.blocking is None and time.perf_counter() - t > self.SLOW:
                self.blocking = True

    async def run_in_thread(self, fn, args):
        took = [0.0]

        def timed():
            t = time.perf_counter()
            try:
                return fn(*args)
            finally:
                took[0] = time.perf_counter() - t
        try:
            return await asyncio.to_thread(timed)
        finally:
            if self.blocking is None:
                self.fast_runs = self.fast_runs + 1 if took[0] < self.FAST else 0


def _signature(f):
    try:
        return f.__name__ + str(inspect.signature(f))
    except (TypeError, ValueError):
        return getattr(f, "__name__", "function")


class _RPCService(taskworker_pb2_grpc.RPCServiceServicer):
    def __init__(self, w):
        self.w = w

    async def CallFunction(self, request, context):
        context.set_trailing_metadata(((TRAILER_WORKER, self.w.worker_id),))
        if not self.w._check_pool(context):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "only the pool may call this worker")
        try:
            return await self.w._run(request)
        except _CallError as e:
            await context.abort(e.code, e.message)

    async def CallStream(self, request_iterator, context):
        # The reader/writer form of a stream (context.read, context.write):
        # each call runs in a task of its own and writes its reply as it
        # ends, one write at a time, with no queue between; a def that runs
        # on the loop (_Placement) runs in the reader, as its frame arrives.
        if not self.w._check_pool(context):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "only the pool may call this worker")
        running = {}
        writing = asyncio.Lock()

        async def send(reply):
            async with writing:
                await context.write(reply)

        async def one(frame):
            try:
                if frame.deadline_unix_nano:
                    async with asyncio.timeout(max(frame.deadline_unix_nano / 1e9 - time.time(), 0)):
                        resp = await self.w._run(frame.request)
                else:
                    resp = await self.w._run(frame.request)
                reply = taskworker_pb2.CallReply(id=frame.id, response=resp)
            except _CallError as e:
                reply = taskworker_pb2.CallReply(id=frame.id, code=e.code.value[0], message=e.message)
            except TimeoutError:
                reply = taskworker_pb2.CallReply(id=frame.id, code=grpc.StatusCode.DEADLINE_EXCEEDED.value[0],
                                                 message="the call's deadline passed")
            except asyncio.CancelledError:
                reply = taskworker_pb2.CallReply(id=frame.id, code=grpc.StatusCode.CANCELLED.value[0], message="cancelled")
            finally:
                running.pop(frame.id, None)
            try:
                await send(reply)
            except Exception:
                pass  # the stream is gone: the pool sees the call fail with it

        try:
            while True:
                frame = await context.read()
                if frame is grpc.aio.EOF:
                    break
                if frame.cancel:
                    t = running.get(frame.id)
                    if t:
                        t.cancel()
                    continue
                if self.w._stopping.is_set():
                    await send(taskworker_pb2.CallReply(id=frame.id, code=grpc.StatusCode.UNAVAILABLE.value[0],
                                                        message="the worker is stopping", not_run=True))
                    continue
                fn, _, binding, placement = self.w._functions.get(frame.request.function_name, (None, None, None, None))
                if placement is not None and placement.on_loop():
                    # A def that returns at once: run it here, without a
                    # task of its own.
                    try:
                        reply = taskworker_pb2.CallReply(id=frame.id, response=self.w._run_now(frame.request, fn, binding, placement))
                    except _CallError as e:
                        reply = taskworker_pb2.CallReply(id=frame.id, code=e.code.value[0], message=e.message)
                    await send(reply)
                    continue
                running[frame.id] = asyncio.create_task(one(frame))
        finally:
            for t in list(running.values()):
                t.cancel()
