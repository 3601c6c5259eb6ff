"""The Python binder's rules beyond the shared table, in process: results
encoded byte for byte as Go's encoding/json encodes the same values (the
expected bytes were printed by Go), and what registration refuses."""

import asyncio
import dataclasses
import typing

import pytest

import taskworker
from taskworker.binding import ArgumentError, Binding, Raw, encode_result, int8, uint16


@pytest.mark.parametrize("value,go", [
    (0.0, "0"), (1.0, "1"), (-1.0, "-1"), (-0.0, "-0"), (0.1, "0.1"), (1 / 3, "0.3333333333333333"),
    (1e-06, "0.000001"), (9.99e-07, "9.99e-7"), (1e-07, "1e-7"), (123456789.125, "123456789.125"),
    (1e15, "1000000000000000"), (1e16, "10000000000000000"), (1.5e17, "150000000000000000"),
    (1e20, "100000000000000000000"), (9.999e20, "999900000000000000000"), (1e21, "1e+21"),
    (2.5e-300, "2.5e-300"), (1.7976931348623157e308, "1.7976931348623157e+308"), (5e-324, "5e-324"),
    ("a\"b\\c", '"a\\"b\\\\c"'), ("\x00\x01\x1f\x7f", '"\\u0000\\u0001\\u001f\x7f"'), ("\b\f\n\r\t", '"\\b\\f\\n\\r\\t"'),
    ("<>&", '"\\u003c\\u003e\\u0026"'), ("\u2028\u2029", '"\\u2028\\u2029"'), ("é€😀", '"é€😀"'),
    (2 ** 70, "1180591620717411303424"), (True, "true"), (None, "null"), ((1, [2.5]), "[1,[2.5]]"),
    ({"b": 1, 2: None, "a": {}}, '{"2":null,"a":{},"b":1}'), (b"\x00\xff", '"AP8="'), (Raw(b"not json"), "not json"),
])
def test_results_are_encoded_as_go_encodes_them(value, go):
    assert encode_result(value) == go.encode()


def test_results_json_cannot_hold_are_refused():
    for v in (float("nan"), float("inf"), object(), {1.5: 2}, {1, 2}):
        with pytest.raises((TypeError, ValueError)):
            encode_result(v)


@dataclasses.dataclass
class Inner:
    n: int


@dataclasses.dataclass
class Outer:
    name: str
    inner: Inner
    tags: list[str] = dataclasses.field(default_factory=lambda: ["default"])


def test_dataclasses_decode_nested_and_encode_in_field_order():
    def f(o: Outer) -> Outer:
        return o
    b = Binding("f", f)
    (o,) = b.decode(b'{"NAME": "x", "inner": {"N": 2}, "extra": 1}')
    assert o == Outer("x", Inner(2))
    assert encode_result(o) == b'{"name":"x","inner":{"n":2},"tags":["default"]}'
    with pytest.raises(ArgumentError, match=r"argument 1 \(Outer\): cannot use JSON string"):
        b.decode(b'["x"]')


def test_sized_integers_defaults_and_varargs():
    def f(a: int8, b: uint16 = 7, *rest: float):
        return [a, b, *rest]
    b = Binding("f", f)
    assert b.decode(b"[-128]") == [-128]
    assert b.decode(b"[1, 65535, 2, 3.5]") == [1, 65535, 2.0, 3.5]
    with pytest.raises(ArgumentError, match=r"argument 1 \(int8\): cannot use JSON number 128"):
        b.decode(b"[128]")
    with pytest.raises(ArgumentError, match=r"takes at least 1 argument \(int8, uint16, float...\), got 0"):
        b.decode(b"[]")

    def g(a: int, b: typing.Optional[str] = None):
        return a
    assert Binding("g", g).decode(b"[1, null]") == [1, None]
    with pytest.raises(ArgumentError, match=r"takes 1 to 2 arguments \(int, string \| None\), got 3"):
        Binding("g", g).decode(b"[1, 2, 3]")


def test_registration_refuses_what_json_cannot_carry():
    w = taskworker.TaskWorker("w", node_pool_address="127.0.0.1:1")
    with pytest.raises(TypeError, match="parameter lock: .* cannot be decoded from JSON"):
        w.register_function("f", _takes_a_lock)
    with pytest.raises(TypeError, match="keyword-only"):
        w.register_function("g", _keyword_only)
    with pytest.raises(TypeError, match="not callable"):
        w.register_function("h", 42)


def _takes_a_lock(lock: asyncio.Lock):
    pass


def _keyword_only(*, a):
    pass


def test_a_def_moves_to_the_loop_once_fast_and_back_for_good_once_slow():
    from taskworker.worker import _Placement
    where = []
    delay = [0.0]

    def f():
        import threading
        import time
        where.append(threading.get_ident())
        time.sleep(delay[0])

    async def main():
        import threading
        loop_thread = threading.get_ident()
        p = _Placement(None)
        for _ in range(_Placement.PROMOTE_AFTER):
            await p.run(f, ())
        assert loop_thread not in where, "a new function runs in threads"
        # On a loaded machine a run may take over FAST: it then takes
        # PROMOTE_AFTER fast runs in a row from there.
        for _ in range(1000):
            await p.run(f, ())
            if where[-1] == loop_thread:
                break
        assert where[-1] == loop_thread, "after PROMOTE_AFTER fast runs it runs on the loop"
        delay[0] = _Placement.SLOW * 2
        await p.run(f, ())
        assert where[-1] == loop_thread and p.blocking is True
        delay[0] = 0
        for _ in range(_Placement.PROMOTE_AFTER * 2):
            await p.run(f, ())
        assert where[-1] != loop_thread, "once slow on the loop, it stays in threads"
        # blocking=True and blocking=False are kept as given.
        assert await _Placement(True).run(threading.get_ident, ()) != loop_thread
        assert await _Placement(False).run(threading.get_ident, ()) == loop_thread

    asyncio.run(main())


def test_string_annotations_resolve_at_the_module_top_level():
    def f(x: "Inner", y: "int"):
        return x
    assert Binding("f", f).decode(b'[{"n": 1}, 2]') == [Inner(1), 2]

    def g(x: "Nowhere"):  # noqa: F821
        return x
    with pytest.raises(TypeError, match="names nothing at the module's top level"):
        Binding("g", g)
