"""How a Python function's JSON arguments and result are bound: the rules of
docs/ABI.md ("Arguments and results"), which the Go binder follows too, and
the same table of cases (internal/function/bindingtest/testdata/binding.json)
holds both to them.

A parameter's annotation says what JSON it takes, as a Go parameter's type
does: int (an integer, no fraction), float, str, bool, bytes (base64),
list[X], dict[str, X], X | None, a dataclass (a JSON object; fields matched
by name, then ignoring case; unknown fields ignored), the fixed-size integers
below (int8 ... uint64, range-checked) or nothing (any JSON value). JSON null
gives the type's zero value (0, "", [], ...) as in Go, or None for an
optional, a dataclass or an unannotated parameter. A function whose only
parameter is a Raw gets the argument bytes unparsed; a Raw result is sent
as it is. A function whose only parameter is a dataclass also takes a JSON
object for it.

The result is encoded as Go's encoding/json encodes the same value, so a
Python worker answers byte for byte as a Go one: no spaces, dict keys
sorted, numbers as Go writes them (3.0 is "3"), <, > and & escaped, bytes
as base64, a dataclass as an object in field order."""

import base64
import dataclasses
import decimal
import inspect
import json
import math
import re
import types
import typing

__all__ = ["ArgumentError", "Binding", "Raw", "encode_result",
           "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]


class Raw(bytes):
    """The escape from JSON: a function whose only parameter is annotated Raw
    receives the call's arguments as they came, unparsed; a Raw result is the
    call's result as it is, unencoded."""


class _IntRange:
    def __init__(self, name, lo, hi):
        self.name, self.lo, self.hi = name, lo, hi

    def __repr__(self):
        return self.name


def _sized(name, bits, signed):
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return typing.Annotated[int, _IntRange(name, lo, hi)]


int8, int16, int32, int64 = (_sized(f"int{b}", b, True) for b in (8, 16, 32, 64))
uint8, uint16, uint32, uint64 = (_sized(f"uint{b}", b, False) for b in (8, 16, 32, 64))


class ArgumentError(Exception):
    """The arguments do not fit the function: the caller's fault, answered
    with InvalidArgument."""


class _Mismatch(Exception):
    """A value that does not fit its type; the binder says which argument."""


def _json_kind(v):
    if isinstance(v, str):
        return "string"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return f"number {encode_result(v).decode()}"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return "null"


def _mismatch(v):
    return _Mismatch(f"cannot use JSON {_json_kind(v)}")


def _any(v):
    return v


_ANY = (_any, "any", None)


def _decoder(t, where):
    """(decode, name, zero) for annotation t: decode maps a parsed JSON value
    to the argument (None handled by the caller: zero)."""
    if t is inspect.Parameter.empty or t is typing.Any or t is object:
        return _ANY
    origin, targs = typing.get_origin(t), typing.get_args(t)
    if origin is typing.Annotated:
        base, meta = targs[0], targs[1:]
        rng = next((m for m in meta if isinstance(m, _IntRange)), None)
        if rng is None:
            return _decoder(base, where)

        def sized(v):
            if isinstance(v, bool) or not isinstance(v, int) or not rng.lo <= v <= rng.hi:
                raise _mismatch(v)
            return v
        return sized, rng.name, 0
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in targs if a is not type(None)]
        if len(rest) == 1:
            dec, name, _ = _decoder(rest[0], where)
            return dec, f"{name} | None", None
        return _ANY
    if t is Raw:
        t = bytes
    if t is int:
        def integer(v):
            if isinstance(v, bool) or not isinstance(v, int):
                raise _mismatch(v)
            return v
        return integer, "int", 0
    if t is float:
        def number(v):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise _mismatch(v)
            return float(v)
        return number, "float", 0.0
    if t is str:
        def string(v):
            if not isinstance(v, str):
                raise _mismatch(v)
            return v
        return string, "string", ""
    if t is bool:
        def boolean(v):
            if not isinstance(v, bool):
                raise _mismatch(v)
            return v
        return boolean, "bool", False
    if t is bytes:
        def b64(v):
            if not isinstance(v, str):
                raise _mismatch(v)
            try:
                return base64.b64decode(v, validate=True)
            except ValueError:
                raise _Mismatch("illegal base64 data") from None
        return b64, "bytes", b""
    if t in (list, tuple) or origin in (list, tuple, typing.get_origin(typing.Sequence[int])):
        # list[X], Sequence[X] and tuple[X, ...] type their elements;
        # a tuple of fixed types is taken as a list of any values.
        typed = targs and (origin is not tuple or (len(targs) == 2 and targs[1] is Ellipsis))
        targs = targs if typed else ()
        elem = _decoder(targs[0], where) if targs else _ANY
        edec, ename, ezero = elem

        def array(v):
            if not isinstance(v, list):
                raise _mismatch(v)
            return [ezero if x is None else edec(x) for x in v]
        return array, f"list[{ename}]" if targs else "list", []
    if t is dict or origin is dict:
        vdec, vname, vzero = _decoder(targs[1], where) if len(targs) == 2 else _ANY

        def obj(v):
            if not isinstance(v, dict):
                raise _mismatch(v)
            return {k: vzero if x is None else vdec(x) for k, x in v.items()}
        return obj, f"dict[string, {vname}]" if targs else "dict", {}
    if dataclasses.is_dataclass(t) and isinstance(t, type):
        return _dataclass_decoder(t, where), t.__name__, None
    raise TypeError(f"{where}: {t!r} cannot be decoded from JSON; annotate it with int, float, str, bool, bytes, "
                    "list[...], dict[str, ...], a dataclass, or leave it unannotated for any JSON value")


def _dataclass_decoder(cls, where):
    hints = _hints(cls)
    fields = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        dec, _, zero = _decoder(hints.get(f.name, inspect.Parameter.empty), f"{where}: field {f.name}")
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        fields.append((f.name, f.name.lower(), dec, zero, has_default))

    def struct(v):
        if not isinstance(v, dict):
            raise _mismatch(v)
        lower = None
        kw = {}
        for name, folded, dec, zero, has_default in fields:
            if name in v:
                x = v[name]
            else:
                if lower is None:
                    lower = {k.lower(): x for k, x in v.items()}
                if folded not in lower:
                    if not has_default:
                        kw[name] = zero
                    continue
                x = lower[folded]
            kw[name] = zero if x is None else dec(x)
        return cls(**kw)
    return struct


def _hints(obj):
    try:
        return typing.get_type_hints(obj, include_extras=True)
    except Exception:
        return getattr(obj, "__annotations__", {}) or {}


def _resolve(ann, fn, where):
    """An annotation left as a string (from __future__ import annotations)
    that get_type_hints could not resolve with the others."""
    if not isinstance(ann, str):
        return ann
    try:
        return eval(ann, getattr(fn, "__globals__", {}))
    except Exception:
        raise TypeError(f"{where}: the annotation {ann!r} names nothing at the module's top level; "
                        "define the type there (or leave the parameter unannotated)") from None


def _reject_constant(c):
    raise ValueError(f"{c} is not JSON")


class Binding:
    """A Python function prepared for calls with JSON arguments: made once at
    registration (where a parameter JSON cannot carry is refused), then
    decode(args) gives the positional arguments of each call."""

    def __init__(self, name, fn):
        self.name = name
        sig = inspect.signature(fn)
        hints = _hints(fn)
        self.params = []  # (decode, type name, zero)
        self.required = 0
        self.varargs = None
        for p in sig.parameters.values():
            where = f"function {name!r}: parameter {p.name}"
            ann = _resolve(hints.get(p.name, p.annotation), fn, where)
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                self.params.append(_decoder(ann, where))
                if p.default is p.empty:
                    self.required = len(self.params)
            elif p.kind is p.VAR_POSITIONAL:
                self.varargs = _decoder(ann, where)
            elif p.kind is p.KEYWORD_ONLY and p.default is p.empty:
                raise TypeError(f"{where} is keyword-only without a default; arguments come by position")
        one = len(self.params) == 1 and self.varargs is None
        first = next(iter(sig.parameters.values()), None)
        first_ann = _resolve(hints.get(first.name, first.annotation), fn, "") if one else None
        self.raw = one and first_ann is Raw
        self.object = one and self._is_struct(first_ann)
        self.is_async = inspect.iscoroutinefunction(fn)

    @staticmethod
    def _is_struct(t):
        if typing.get_origin(t) in (typing.Union, types.UnionType):
            rest = [a for a in typing.get_args(t) if a is not type(None)]
            t = rest[0] if len(rest) == 1 else None
        return isinstance(t, type) and dataclasses.is_dataclass(t)

    def describe(self):
        names = [n for _, n, _ in self.params]
        if self.varargs is not None:
            names.append(self.varargs[1] + "...")
        n = len(self.params)
        if n == 0 and self.varargs is None:
            return "no arguments"
        if self.varargs is not None:
            count = f"at least {self.required}"
        elif self.required < n:
            count = f"{self.required} to {n}"
        else:
            count = str(n)
        noun = "argument" if count.split()[-1] == "1" else "arguments"
        return f"{count} {noun} ({', '.join(names)})"

    def _err(self, msg):
        return ArgumentError(f"{self.name}: {msg}")

    def decode(self, args):
        """The positional arguments of a call from its JSON bytes, or an
        ArgumentError saying what does not fit."""
        if self.raw:
            return [Raw(args)]
        s = args.strip()
        if not s or s == b"null":
            values = []
        else:
            try:
                v = json.loads(s, parse_constant=_reject_constant)
            except ValueError as e:
                raise self._err(f"arguments must be a JSON array (or an object for a function of one dataclass): {e}") from None
            if isinstance(v, dict):
                if not self.object:
                    raise self._err(f"got a JSON object; this function takes {self.describe()}, so pass a JSON array")
                values = [v]
            elif isinstance(v, list):
                values = v
            else:
                raise self._err(f"arguments must be a JSON array (or an object for a function of one dataclass): got JSON {_json_kind(v)}")
        n = len(values)
        if n < self.required or (self.varargs is None and n > len(self.params)):
            raise self._err(f"takes {self.describe()}, got {n}")
        out = []
        for i, x in enumerate(values):
            dec, tname, zero = self.params[i] if i < len(self.params) else self.varargs
            if x is None:
                out.append(zero)
                continue
            try:
                out.append(dec(x))
            except _Mismatch as e:
                raise self._err(f"argument {i + 1} ({tname}): {e}") from None
        return out


# Encoding, as Go's encoding/json writes the same value.

_HTML = re.compile("[<>&\u2028\u2029]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _html_escape(m):
    return "\\u%04x" % ord(m.group())


def _string(s):
    out = json.dumps(s, ensure_ascii=False)
    if _HTML.search(out):
        out = _HTML.sub(_html_escape, out)
    return out


def _float(v):
    if math.isnan(v) or math.isinf(v):
        raise ValueError(f"unsupported value: {v}")
    r = repr(v)
    a = abs(v)
    if a != 0 and (a < 1e-6 or a >= 1e21):
        # Go's exponent form, without the padding zero of e-07.
        if len(r) >= 4 and r[-4] == "e" and r[-3] == "-" and r[-2] == "0":
            r = r[:-2] + r[-1]
        return r
    if "e" in r:
        return format(decimal.Decimal(r), "f")
    if r.endswith(".0"):
        return r[:-2]
    return r


def _encode(v, out):
    if v is None:
        out.append("null")
    elif v is True:
        out.append("true")
    elif v is False:
        out.append("false")
    elif isinstance(v, str):
        out.append(_string(v))
    elif isinstance(v, int):
        out.append(int.__repr__(v))
    elif isinstance(v, float):
        out.append(_float(v))
    elif isinstance(v, (list, tuple)):
        out.append("[")
        for i, x in enumerate(v):
            if i:
                out.append(",")
            _encode(x, out)
        out.append("]")
    elif isinstance(v, dict):
        items = []
        for k, x in v.items():
            if isinstance(k, str):
                items.append((k, x))
            elif isinstance(k, int) and not isinstance(k, bool):
                items.append((str(k), x))
            else:
                raise TypeError(f"a dict key must be a str or an int, not {type(k).__name__}")
        items.sort(key=lambda kv: kv[0])
        _members(items, out)
    elif isinstance(v, (bytes, bytearray, memoryview)):
        out.append('"' + base64.b64encode(v).decode() + '"')
    elif dataclasses.is_dataclass(v) and not isinstance(v, type):
        _members([(f.name, getattr(v, f.name)) for f in dataclasses.fields(v)], out)
    else:
        raise TypeError(f"a {type(v).__name__} cannot be encoded as JSON; return numbers, strings, lists, dicts, bytes or dataclasses")


def _members(items, out):
    out.append("{")
    for i, (k, x) in enumerate(items):
        if i:
            out.append(",")
        out.append(_string(k))
        out.append(":")
        _encode(x, out)
    out.append("}")


def encode_result(v):
    """The JSON bytes of a function's result (a Raw as it is); TypeError or
    ValueError for a value JSON cannot hold."""
    if type(v) is int:
        return int.__repr__(v).encode()
    if isinstance(v, Raw):
        return bytes(v)
    out = []
    _encode(v, out)
    s = "".join(out)
    try:
        return s.encode()
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", s).encode()
