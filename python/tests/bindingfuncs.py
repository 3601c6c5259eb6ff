"""The binding table's functions (internal/function/bindingtest) in Python,
with the annotations that say what the Go signatures say."""

import dataclasses
import json
import os

from taskworker import Raw
from taskworker.binding import uint8

TABLE = os.path.join(os.path.dirname(__file__), "..", "..", "internal", "function", "bindingtest", "testdata", "binding.json")


@dataclasses.dataclass
class Point:
    X: int
    Y: int


def add(a: int, b: int) -> int:
    return a + b


def hello(name: str) -> str:
    return "Hello, " + name + "!"


def none():
    pass


def sink(a: int):
    pass


def count(s: list[str]) -> int:
    return len(s)


def fail():
    raise Exception("it failed")


def area(p: Point) -> int:
    return p.X * p.Y


def swap(p: Point | None) -> Point:
    return Point(p.Y, p.X)


def echo_raw(b: Raw) -> Raw:
    return b


def echo_bytes(b: bytes) -> bytes:
    return b


def divide(a: float, b: float) -> float:
    if b == 0:
        raise ValueError("division by zero")
    return a / b


def explode() -> int:
    raise RuntimeError("boom")


def wrap(d):
    return {"processed": True, "result": d}


def mixed(a: int, s: str, b: bool, u: uint8) -> str:
    return f"{a} {s} {str(b).lower()} {u}"


def nothing() -> Point | None:
    return None


FUNCTIONS = {f.__name__: f for f in (add, hello, none, sink, count, fail, area, swap, echo_raw, echo_bytes, divide,
                                     explode, wrap, mixed, nothing)}


def load():
    """The table, checked as bindingtest.Load checks it: every function it
    describes is here, and every one here is described."""
    with open(TABLE) as f:
        table = json.load(f)
    if set(table["functions"]) != set(FUNCTIONS):
        raise AssertionError(f"the table describes {sorted(table['functions'])}, Python implements {sorted(FUNCTIONS)}")
    for c in table["cases"]:
        if c["function"] not in FUNCTIONS:
            raise AssertionError(f"case {c}: no function {c['function']}")
    return table
