"""Several pool replicas behind one channel, as the Go client has them
(internal/pools): calls go round robin over the pools; a pool that could not
be connected is tried last for a while; a call no pool began goes to the
next pool, and so does a read-only call that a pool answers UNAVAILABLE (a
pool that is stopping, or lost its etcd); a call that changes something is
never sent twice. Streaming calls go to one pool and are not retried."""

import itertools
import threading
import time

import grpc

# The methods that change nothing, which may be sent again to another pool:
# the same table as the Go client's (internal/pools ReadOnly; a Go test
# holds the two equal).
READ_ONLY = {
    "taskworker.v1.FileService": ("Get", "Synchronous", "Download", "List", "Stat", "FileHistory"),
    "taskworker.v1.AdminService": ("ListWorkers", "ListFunctions", "WhoAmI", "Status", "ListTokens"),
    "taskworker.v1.DeployService": ("History",),
    "taskworker.v1.QuotaService": ("GetQuota", "ListQuotas"),
    "taskworker.v1.SecretService": ("List", "Audit"),
    "taskworker.v1.TaskService": ("GetTask", "ListTasks", "ListSchedules"),
    "taskworker.v1.DNSService": ("ResolveDomain",),
}

_READ_ONLY_PATHS = {f"/{svc}/{m}" for svc, methods in READ_ONLY.items() for m in methods}

# In gRPC's UNAVAILABLE for a call it could not send anywhere: no connection
# (refused, or the TLS handshake failed) or no address for the name.
_NEVER_SENT = ("failed to connect to all addresses", "DNS resolution failed", "empty address list",
               "Name resolution failure")

# How long a pool that could not be connected is tried last.
DOWN_FOR = 2.0


def parse(pools):
    """The addresses of a comma-separated list of host:port, each checked,
    none twice."""
    addrs = []
    for i, a in enumerate(pools.split(",")):
        a = a.strip()
        if not a:
            raise ValueError(f"pool address list {pools!r}: entry {i + 1} is empty; separate host:port addresses by single commas")
        host, sep, port = a.rpartition(":")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"pool address {a!r} is not host:port; pass pool_address or set TASKWORKER_POOL, like 127.0.0.1:50051")
        if a in addrs:
            raise ValueError(f"pool address list {pools!r} names {a} twice")
        addrs.append(a)
    return addrs


def channel(channels):
    """One channel of channels to the pools: the only one, or all behind
    Channel or AioChannel."""
    if len(channels) == 1:
        return channels[0]
    return AioChannel(channels) if isinstance(channels[0], grpc.aio.Channel) else Channel(channels)


def never_sent(err):
    """Whether err is gRPC's failure to reach the pool at all, so that the
    call was not sent and the pool did nothing."""
    return (isinstance(err, grpc.RpcError) and err.code() == grpc.StatusCode.UNAVAILABLE
            and any(m in (err.details() or "") for m in _NEVER_SENT))


def retriable(err, method):
    """Whether a call of method that failed with err may go to another
    pool: it was never sent, or it changes nothing and the pool was
    unavailable."""
    if not isinstance(err, grpc.RpcError) or err.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    return never_sent(err) or method in _READ_ONLY_PATHS


class Order:
    """The order to try the pools in for each call: round robin, pools
    that could not be connected lately last."""

    def __init__(self, n, clock=time.monotonic):
        self._n = n
        self._next = itertools.count()
        self._down_until = [0.0] * n
        self._clock = clock
        self._mu = threading.Lock()

    def next(self):
        start = next(self._next) % self._n
        order = [(start + i) % self._n for i in range(self._n)]
        now = self._clock()
        with self._mu:
            return sorted(order, key=lambda i: self._down_until[i] > now)

    def down(self, i):
        with self._mu:
            self._down_until[i] = self._clock() + DOWN_FOR

    def up(self, i):
        with self._mu:
            self._down_until[i] = 0.0


class _Tries:
    """The pools a unary call tries, in order, each with what is left of
    the call's timeout: the next only after a failure that allows one
    (retriable) and while time is left. After the last, last is the
    error to raise."""

    def __init__(self, order, method, timeout):
        self._order, self._method = order, method
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self.last = None

    def __iter__(self):
        for i in self._order.next():
            if self.last is not None and self._deadline is not None and time.monotonic() >= self._deadline:
                return
            yield i, None if self._deadline is None else max(self._deadline - time.monotonic(), 0.001)

    def failed(self, i, err):
        """Record err from pool i; raise it if no other pool may be tried."""
        if never_sent(err):
            self._order.down(i)
        if not retriable(err, self._method):
            raise err
        self.last = err

    def succeeded(self, i):
        self._order.up(i)


class _Spread:
    """What Channel and AioChannel share: the channels, the order of the
    pools, and streaming calls, each to the first pool in that order."""

    def __init__(self, channels):
        self._chs = channels
        self._order = Order(len(channels))

    def _each(self, kind, method, args, kw):
        return [getattr(ch, kind)(method, *args, **kw) for ch in self._chs]

    def _first(self, kind, method, args, kw):
        calls = self._each(kind, method, args, kw)
        return lambda *a, **k: calls[self._order.next()[0]](*a, **k)

    def unary_stream(self, method, *args, **kw):
        return self._first("unary_stream", method, args, kw)

    def stream_unary(self, method, *args, **kw):
        return self._first("stream_unary", method, args, kw)

    def stream_stream(self, method, *args, **kw):
        return self._first("stream_stream", method, args, kw)


class Channel(_Spread, grpc.Channel):
    """Blocking channels to several pools as one grpc.Channel."""

    def unary_unary(self, method, *args, **kw):
        return _UnaryUnary(method, self._each("unary_unary", method, args, kw), self._order)

    def subscribe(self, callback, try_to_connect=False):
        for ch in self._chs:
            ch.subscribe(callback, try_to_connect)

    def unsubscribe(self, callback):
        for ch in self._chs:
            ch.unsubscribe(callback)

    def close(self):
        for ch in self._chs:
            ch.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class _UnaryUnary(grpc.UnaryUnaryMultiCallable):
    def __init__(self, method, calls, order):
        self._method, self._calls, self._order = method, calls, order

    def _invoke(self, how, request, timeout, kw):
        tries = _Tries(self._order, self._method, timeout)
        for i, remaining in tries:
            try:
                out = getattr(self._calls[i], how)(request, timeout=remaining, **kw)
            except grpc.RpcError as e:
                tries.failed(i, e)
                continue
            tries.succeeded(i)
            return out
        raise tries.last

    def __call__(self, request, timeout=None, **kw):
        return self._invoke("__call__", request, timeout, kw)

    def with_call(self, request, timeout=None, **kw):
        return self._invoke("with_call", request, timeout, kw)

    def future(self, request, timeout=None, **kw):
        # A future is one pool's call: not retried.
        return self._calls[self._order.next()[0]].future(request, timeout=timeout, **kw)


class AioChannel(_Spread, grpc.aio.Channel):
    """grpc.aio channels to several pools as one: the same rules. A unary
    call returns a coroutine rather than a grpc.aio.Call, so `await` works
    and the call's metadata methods do not."""

    def unary_unary(self, method, *args, **kw):
        return _AioUnaryUnary(method, self._each("unary_unary", method, args, kw), self._order)

    def get_state(self, try_to_connect=False):
        states = [ch.get_state(try_to_connect) for ch in self._chs]
        for s in (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.CONNECTING, grpc.ChannelConnectivity.IDLE):
            if s in states:
                return s
        return states[0]

    async def wait_for_state_change(self, last_observed_state):
        await self._chs[0].wait_for_state_change(last_observed_state)

    async def channel_ready(self):
        await self._chs[self._order.next()[0]].channel_ready()

    async def close(self, grace=None):
        for ch in self._chs:
            await ch.close(grace)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()


class _AioUnaryUnary(grpc.aio.UnaryUnaryMultiCallable):
    def __init__(self, method, calls, order):
        self._method, self._calls, self._order = method, calls, order

    def __call__(self, request, *, timeout=None, **kw):
        return self._invoke(request, timeout, kw)

    async def _invoke(self, request, timeout, kw):
        tries = _Tries(self._order, self._method, timeout)
        for i, remaining in tries:
            try:
                out = await self._calls[i](request, timeout=remaining, **kw)
            except grpc.RpcError as e:
                tries.failed(i, e)
                continue
            tries.succeeded(i)
            return out
        raise tries.last
