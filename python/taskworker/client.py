"""Clients of a TaskWorker pool: Client (blocking) and AsyncClient
(asyncio, grpc.aio), over the same gRPC API as the Go client."""

import json

import grpc

from . import _env, _pools
from .errors import TaskWorkerError, from_rpc_error
from .v1 import control_pb2_grpc, task_pb2, task_pb2_grpc, taskworker_pb2, taskworker_pb2_grpc


class _Settings:
    """The pool addresses, token and channel credentials of a client, from
    its arguments or the environment."""

    def __init__(self, pool_address, token, ca, insecure):
        pool = _env.from_env(pool_address, "TASKWORKER_POOL")
        if not pool:
            raise ValueError("no pool address: pass pool_address, set TASKWORKER_POOL, or start a local network with 'taskworker up'")
        self.targets = _pools.parse(pool)
        self.token = _env.from_env(token, "TASKWORKER_TOKEN")
        if not self.token:
            raise ValueError("no API token: pass token or set TASKWORKER_TOKEN (a pool's admin token is admin.token in its data directory)")
        self.insecure = insecure
        if insecure:
            return
        ca = _env.from_env(ca, "TASKWORKER_CA")
        root = None
        if ca:
            with open(ca, "rb") as f:
                root = f.read()
        self.credentials = grpc.composite_channel_credentials(
            grpc.ssl_channel_credentials(root_certificates=root), grpc.access_token_call_credentials(self.token))

    def metadata(self):
        # With TLS the token travels as call credentials; in plaintext gRPC
        # refuses those, so it goes as a header.
        return (("authorization", "Bearer " + self.token),) if self.insecure else None


def _args_json(args):
    try:
        return json.dumps(list(args)).encode()
    except TypeError as e:
        raise TypeError(f"arguments must be JSON values (numbers, strings, lists, dicts, None): {e}") from None


class Client:
    """A blocking client of a pool.

    Client(pool_address=None, token=None, ca=None): each defaults to
    TASKWORKER_POOL, TASKWORKER_TOKEN and TASKWORKER_CA, else to the env
    file of the running `taskworker up`. `storage` is the FileService stub,
    with the token attached: taskworker_pb2.PushRequest(...) code runs as
    written.

    pool_address may name several pool replicas, "host:port,host:port":
    calls are spread over them; a call no pool began (its pool could not
    be connected) goes to the next one, and so does a read-only call (Get,
    Stat, GetTask, ResolveDomain, ...) that a pool answers UNAVAILABLE; a
    call that changes something (call, Push, submit, ...) is never sent
    twice, so when its pool dies while it runs it fails with UNAVAILABLE
    and may or may not have been carried out. Streaming calls go to one
    pool and are not retried. Each pool's certificate is checked against
    its own address."""

    def __init__(self, pool_address=None, token=None, ca=None, insecure=False):
        self._s = _Settings(pool_address, token, ca, insecure)
        md = self._s.metadata()
        channels = []
        for target in self._s.targets:
            ch = grpc.insecure_channel(target) if insecure else grpc.secure_channel(target, self._s.credentials)
            if md:
                ch = grpc.intercept_channel(ch, _HeaderInterceptor(md))
            channels.append(ch)
        self._channel = _pools.channel(channels)
        self.rpc = taskworker_pb2_grpc.RPCServiceStub(self._channel)
        self.storage = taskworker_pb2_grpc.FileServiceStub(self._channel)
        self.dns = taskworker_pb2_grpc.DNSServiceStub(self._channel)
        self.tasks = task_pb2_grpc.TaskServiceStub(self._channel)
        self.admin = control_pb2_grpc.AdminServiceStub(self._channel)

    def call(self, name, *args, timeout=30):
        """Call the function name with args (JSON values) and return its
        result, decoded from JSON."""
        try:
            resp = self.rpc.CallFunction(taskworker_pb2.FunctionCallRequest(function_name=name, args=_args_json(args)), timeout=timeout)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        return json.loads(resp.result) if resp.result else None

    def submit(self, name, *args, idempotency_key="", max_attempts=0, retry_errors=False, task_timeout=0, timeout=10):
        """Record a call of name with args as a task and return its id once
        the task is durable: it runs even if this client goes away, and
        runs again on another worker if its worker is lost. A second submit
        with the same idempotency_key returns the first task's id.
        max_attempts bounds the tries (0: the pool's default); retry_errors
        retries the function's own errors too; task_timeout (seconds)
        bounds each attempt."""
        try:
            return self.tasks.Submit(_submit_request(name, args, idempotency_key, max_attempts, retry_errors, task_timeout),
                                     timeout=timeout).task.id
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

    def task(self, task_id, timeout=10):
        """The task as it is now (a task_pb2.Task: state, attempts, result)."""
        try:
            return self.tasks.GetTask(task_pb2.GetTaskRequest(id=task_id), timeout=timeout).task
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

    def wait(self, task_id, timeout=3600):
        """Wait for a task to end; return its result, decoded from JSON, or
        raise TaskWorkerError with its last attempt's code and error
        (CANCELLED for a cancelled task)."""
        try:
            t = self.tasks.WaitTask(task_pb2.WaitTaskRequest(id=task_id), timeout=timeout).task
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        return _task_result(t)

    def cancel(self, task_id, timeout=10):
        """Cancel a task: a queued one never runs, a running one is
        cancelled on its worker. Returns the task as it is then."""
        try:
            return self.tasks.CancelTask(task_pb2.CancelTaskRequest(id=task_id), timeout=timeout).task
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

    def resolve(self, name, record_type="", timeout=10):
        """Resolve name through the pool; returns the answers."""
        try:
            resp = self.dns.ResolveDomain(taskworker_pb2.DNSRequest(domain=name, record_type=record_type), timeout=timeout)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        return list(resp.addresses)

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _submit_request(name, args, idempotency_key, max_attempts, retry_errors, task_timeout):
    return task_pb2.SubmitRequest(function_name=name, args=_args_json(args), idempotency_key=idempotency_key,
                                  retry=task_pb2.RetryPolicy(max_attempts=max_attempts, retry_errors=retry_errors),
                                  timeout_ms=int(task_timeout * 1000))


def _task_result(t):
    if t.state == task_pb2.TASK_STATE_SUCCEEDED:
        return json.loads(t.result) if t.result else None
    if t.state == task_pb2.TASK_STATE_CANCELLED:
        raise TaskWorkerError(grpc.StatusCode.CANCELLED, f"task {t.id} was cancelled")
    last = t.attempts[-1] if t.attempts else None
    code = grpc.StatusCode.UNKNOWN
    for c in grpc.StatusCode:
        if last is not None and c.value[0] == last.code:
            code = c
    raise TaskWorkerError(code, f"task {t.id} failed after {len(t.attempts)} attempts: {last.error if last else ''}")


class _HeaderInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                         grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    def __init__(self, metadata):
        self._md = metadata

    def _details(self, d):
        md = list(d.metadata or []) + list(self._md)
        return _CallDetails(d.method, d.timeout, md, d.credentials, getattr(d, "wait_for_ready", None), getattr(d, "compression", None))

    def intercept_unary_unary(self, cont, d, req):
        return cont(self._details(d), req)

    def intercept_unary_stream(self, cont, d, req):
        return cont(self._details(d), req)

    def intercept_stream_unary(self, cont, d, reqs):
        return cont(self._details(d), reqs)

    def intercept_stream_stream(self, cont, d, reqs):
        return cont(self._details(d), reqs)


class _CallDetails(grpc.ClientCallDetails):
    def __init__(self, method, timeout, metadata, credentials, wait_for_ready, compression):
        self.method, self.timeout, self.metadata = method, timeout, metadata
        self.credentials, self.wait_for_ready, self.compression = credentials, wait_for_ready, compression


class AsyncClient:
    """The asyncio form of Client (grpc.aio): the same arguments and
    methods, each a coroutine; `storage` is the aio FileService stub, so
    `await client.storage.Push(taskworker_pb2.PushRequest(...))` works.
    Make it inside a running event loop."""

    def __init__(self, pool_address=None, token=None, ca=None, insecure=False):
        self._s = _Settings(pool_address, token, ca, insecure)
        channels = [grpc.aio.insecure_channel(t, interceptors=_aio_interceptors(self._s.metadata())) if insecure
                    else grpc.aio.secure_channel(t, self._s.credentials) for t in self._s.targets]
        self._channel = _pools.channel(channels)
        self.rpc = taskworker_pb2_grpc.RPCServiceStub(self._channel)
        self.storage = taskworker_pb2_grpc.FileServiceStub(self._channel)
        self.dns = taskworker_pb2_grpc.DNSServiceStub(self._channel)
        self.tasks = task_pb2_grpc.TaskServiceStub(self._channel)
        self.admin = control_pb2_grpc.AdminServiceStub(self._channel)

    async def call(self, name, *args, timeout=30):
        try:
            resp = await self.rpc.CallFunction(taskworker_pb2.FunctionCallRequest(function_name=name, args=_args_json(args)), timeout=timeout)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        return json.loads(resp.result) if resp.result else None

    async def submit(self, name, *args, idempotency_key="", max_attempts=0, retry_errors=False, task_timeout=0, timeout=10):
        try:
            return (await self.tasks.Submit(_submit_request(name, args, idempotency_key, max_attempts, retry_errors, task_timeout),
                                            timeout=timeout)).task.id
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

    async def task(self, task_id, timeout=10):
        try:
            return (await self.tasks.GetTask(task_pb2.GetTaskRequest(id=task_id), timeout=timeout)).task
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

    async def wait(self, task_id, timeout=3600):
        try:
            t = (await self.tasks.WaitTask(task_pb2.WaitTaskRequest(id=task_id), timeout=timeout)).task
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        return _task_result(t)

    async def cancel(self, task_id, timeout=10):
        try:
            return (await self.tasks.CancelTask(task_pb2.CancelTaskRequest(id=task_id), timeout=timeout)).task
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

    async def resolve(self, name, record_type="", timeout=10):
        try:
            resp = await self.dns.ResolveDomain(taskworker_pb2.DNSRequest(domain=name, record_type=record_type), timeout=timeout)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        return list(resp.addresses)

    async def close(self):
        await self._channel.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()


def _aio_interceptors(md):
    if not md:
        return None

    class Add(grpc.aio.UnaryUnaryClientInterceptor, grpc.aio.UnaryStreamClientInterceptor):
        async def intercept_unary_unary(self, cont, d, req):
            return await cont(_with(d), req)

        async def intercept_unary_stream(self, cont, d, req):
            return await cont(_with(d), req)

    def _with(d):
        m = grpc.aio.Metadata(*(list(d.metadata or []) + list(md)))
        return grpc.aio.ClientCallDetails(d.method, d.timeout, m, d.credentials, d.wait_for_ready)

    return [Add()]
