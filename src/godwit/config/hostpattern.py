"""Regular expressions for host names, matched in linear time: no pattern can hang godwit.

Bypass lists are written by people and copied from articles (``.*.blob.core.windows.net``).
Python's ``re`` backtracks, so a pattern such as ``(a+)+$`` takes exponential time on a host
name that almost matches, and ``re`` has no timeout. Here a pattern is parsed into a Thompson
NFA and run as a set of states over the host name (the way RE2 does it): the work is at most
``len(host) * states``, and the number of states is bounded when the pattern is compiled.

The dialect is the subset of Python's that host patterns need: literals, ``.``, classes
``[a-z0-9-]`` / ``[^.]``, ``\\d \\w \\s`` and their negations, escaped punctuation, groups ``( )`` and
``(?: )``, alternation ``|``, quantifiers ``* + ? {n} {n,} {n,m}`` (a lazy ``?`` after them is
accepted and changes nothing, since the whole name must match), ``^`` at the start and ``$`` at the
end. Anything else (back-references, look-arounds, inline flags, ``\\b``) is a clear error.
Matching is of the whole name and case-insensitive, as ``re.fullmatch(p, host, re.IGNORECASE)``.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass

MAX_PATTERN = 256  # characters: longer is not a host pattern
MAX_STATES = 2048  # after {n,m} expansion; bounds the work per character
MAX_REPEAT = 255

Pred = Callable[[str], bool]
_DIGITS = frozenset(string.digits)
_WORD = frozenset(string.ascii_letters + string.digits + "_")
_SPACE = frozenset(" \t\n\r\f\v")
_CLASS_ESCAPES: dict[str, tuple[frozenset[str], bool]] = {
    "d": (_DIGITS, False), "D": (_DIGITS, True), "w": (_WORD, False), "W": (_WORD, True),
    "s": (_SPACE, False), "S": (_SPACE, True),
}
_META = set("\\.^$*+?{}[]()|")


class PatternError(ValueError):
    """A pattern outside the supported dialect, or too large. ``str()`` says where and why."""


# -- the syntax tree -------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Char:
    pred: Pred


@dataclass(frozen=True)
class _Cat:
    items: tuple[object, ...]


@dataclass(frozen=True)
class _Alt:
    items: tuple[object, ...]


@dataclass(frozen=True)
class _Rep:
    item: object
    lo: int
    hi: int | None  # None: unbounded


def _literal(c: str) -> Pred:
    low, up = c.lower(), c.upper()
    return lambda x: x in (low, up)


def _any(_: str) -> bool:
    return True


def _set_pred(chars: frozenset[str], ranges: tuple[tuple[str, str], ...], negated: bool,
              subs: tuple[tuple[frozenset[str], bool], ...]) -> Pred:
    def raw(x: str) -> bool:
        if x in chars or any(a <= x <= b for a, b in ranges):
            return True
        return any((x in s) != neg for s, neg in subs)

    def pred(x: str) -> bool:
        hit = raw(x) or raw(x.lower()) or raw(x.upper())
        return hit != negated

    return pred


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, why: str) -> PatternError:
        return PatternError(f"{why} at position {self.pos} of {self.text!r}")

    def peek(self) -> str | None:
        return self.text[self.pos] if self.pos < len(self.text) else None

    def take(self) -> str:
        c = self.text[self.pos]
        self.pos += 1
        return c

    def parse(self) -> object:
        node = self.alt()
        if self.pos != len(self.text):
            raise self.fail("unbalanced ')'")
        return node

    def alt(self) -> object:
        items = [self.cat()]
        while self.peek() == "|":
            self.take()
            items.append(self.cat())
        return items[0] if len(items) == 1 else _Alt(tuple(items))

    def cat(self) -> object:
        items: list[object] = []
        while (c := self.peek()) is not None and c not in "|)":
            items.append(self.repeat())
        return items[0] if len(items) == 1 else _Cat(tuple(items))

    def repeat(self) -> object:
        node = self.atom()
        while (c := self.peek()) is not None and c in "*+?{":
            if c == "{":
                lo, hi = self.braces()
            else:
                self.take()
                lo, hi = {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
            if self.peek() == "?":
                self.take()  # lazy: the same set of matches for a whole-name match
            nxt = self.peek()
            if nxt is not None and nxt in "*+?{":
                raise self.fail("a quantifier cannot follow a quantifier (possessive or nested repeats)")
            node = _Rep(node, lo, hi)
        return node

    def braces(self) -> tuple[int, int | None]:
        start = self.pos
        end = self.text.find("}", start)
        body = self.text[start + 1:end] if end > 0 else ""
        lo_s, comma, hi_s = body.partition(",")
        if end < 0 or not lo_s.isdigit() or (hi_s and not hi_s.isdigit()):
            raise self.fail("a repeat is written {n}, {n,} or {n,m}")
        lo = int(lo_s)
        hi = int(hi_s) if hi_s else (None if comma else lo)
        if lo > MAX_REPEAT or (hi is not None and (hi > MAX_REPEAT or hi < lo)):
            raise self.fail(f"a repeat count must be at most {MAX_REPEAT}, with n <= m")
        self.pos = end + 1
        return lo, hi

    def atom(self) -> object:
        c = self.take()
        if c == "(":
            if self.text.startswith("?:", self.pos):
                self.pos += 2
            elif self.peek() == "?":
                raise self.fail("only (?:...) groups are supported (no look-arounds, flags or names)")
            node = self.alt()
            if self.peek() != ")":
                raise self.fail("missing ')'")
            self.take()
            return node
        if c == "[":
            return self.char_class()
        if c == ".":
            return _Char(_any)
        if c == "\\":
            return self.escape(in_class=False)
        if c in "*+?{":
            raise self.fail(f"nothing to repeat before {c!r}")
        if c in "^$":
            raise self.fail(f"{c!r} is accepted only at the very start (^) or end ($) of a pattern")
        if c in "])}":
            raise self.fail(f"unbalanced {c!r}")
        return _Char(_literal(c))

    def escape(self, *, in_class: bool) -> _Char:
        if self.peek() is None:
            raise self.fail("a pattern cannot end with '\\'")
        c = self.take()
        if c in _CLASS_ESCAPES:
            chars, neg = _CLASS_ESCAPES[c]
            return _Char(_set_pred(frozenset(), (), False, ((chars, neg),)))
        if c.isalnum():
            raise self.fail(f"the escape \\{c} is not supported")
        return _Char(_literal(c))

    def char_class(self) -> _Char:
        negated = self.peek() == "^"
        if negated:
            self.take()
        chars: set[str] = set()
        ranges: list[tuple[str, str]] = []
        subs: list[tuple[frozenset[str], bool]] = []
        first = True
        while True:
            c = self.peek()
            if c is None:
                raise self.fail("missing ']'")
            if c == "]" and not first:
                self.take()
                break
            first = False
            self.take()
            if c == "\\":
                if self.peek() in _CLASS_ESCAPES:
                    subs.append(_CLASS_ESCAPES[self.take()])
                    continue
                if self.peek() is None or str(self.peek()).isalnum():
                    raise self.fail("unsupported escape in a character class")
                c = self.take()
            elif c == "[" and self.peek() in (":", "=", "."):
                raise self.fail("POSIX classes such as [:alpha:] are not supported")
            if self.peek() == "-" and self.pos + 1 < len(self.text) and self.text[self.pos + 1] != "]":
                self.take()
                hi = self.take()
                if hi == "\\":
                    if self.peek() is None or str(self.peek()).isalnum():
                        raise self.fail("unsupported escape in a character class")
                    hi = self.take()
                if hi < c:
                    raise self.fail(f"bad range {c}-{hi}")
                ranges.append((c, hi))
            else:
                chars.add(c)
        return _Char(_set_pred(frozenset(chars), tuple(ranges), negated, tuple(subs)))


# -- the automaton ---------------------------------------------------------------------------------

class _Builder:
    def __init__(self) -> None:
        self.pred: list[Pred | None] = []  # None: an epsilon-only state
        self.next: list[int] = []  # target of the character transition
        self.eps: list[list[int]] = []

    def state(self) -> int:
        if len(self.pred) >= MAX_STATES:
            raise PatternError(f"the pattern is too complex (more than {MAX_STATES} states)")
        self.pred.append(None)
        self.next.append(-1)
        self.eps.append([])
        return len(self.pred) - 1

    def build(self, node: object) -> tuple[int, int]:
        if isinstance(node, _Char):
            s, e = self.state(), self.state()
            self.pred[s] = node.pred
            self.next[s] = e
            return s, e
        if isinstance(node, _Cat):
            s = e = self.state()
            for item in node.items:
                fs, fe = self.build(item)
                self.eps[e].append(fs)
                e = fe
            return s, e
        if isinstance(node, _Alt):
            s, e = self.state(), self.state()
            for item in node.items:
                fs, fe = self.build(item)
                self.eps[s].append(fs)
                self.eps[fe].append(e)
            return s, e
        assert isinstance(node, _Rep)
        s = e = self.state()
        for _ in range(node.lo):
            fs, fe = self.build(node.item)
            self.eps[e].append(fs)
            e = fe
        if node.hi is None:
            loop_s, loop_e = self.build(node.item)
            end = self.state()
            self.eps[e] += [loop_s, end]
            self.eps[loop_e] += [loop_s, end]
            return s, end
        end = self.state()
        for _ in range(node.hi - node.lo):
            fs, fe = self.build(node.item)
            self.eps[e] += [fs, end]
            e = fe
        self.eps[e].append(end)
        return s, end


@dataclass(frozen=True)
class HostPattern:
    """A compiled host pattern. :meth:`fullmatch` runs in ``O(len(host) * states)``."""

    text: str
    _preds: tuple[Pred | None, ...]
    _next: tuple[int, ...]
    _closure: tuple[frozenset[int], ...]
    _start: frozenset[int]
    _accept: int

    @property
    def states(self) -> int:
        return len(self._preds)

    def fullmatch(self, host: str) -> bool:
        current = self._start
        for ch in host:
            step: set[int] = set()
            for s in current:
                pred = self._preds[s]
                if pred is not None and pred(ch):
                    step |= self._closure[self._next[s]]
            if not step:
                return False
            current = frozenset(step)
        return self._accept in current


def compile_pattern(text: str) -> HostPattern:
    """Compile ``text``; PatternError if it is too long, too complex or outside the dialect."""
    if len(text) > MAX_PATTERN:
        raise PatternError(f"a host pattern is at most {MAX_PATTERN} characters, this one has {len(text)}")
    body = text[1:] if text.startswith("^") else text
    if body.endswith("$"):
        slashes = len(body[:-1]) - len(body[:-1].rstrip("\\"))
        if slashes % 2 == 0:  # an unescaped '$': the end anchor
            body = body[:-1]
    tree = _Parser(body).parse()
    b = _Builder()
    start, accept = b.build(tree)
    closure: list[frozenset[int]] = []
    for s in range(len(b.pred)):
        seen = {s}
        stack = [s]
        while stack:
            for t in b.eps[stack.pop()]:
                if t not in seen:
                    seen.add(t)
                    stack.append(t)
        # Keep only states that consume a character, plus acceptance.
        closure.append(frozenset(t for t in seen if b.pred[t] is not None or t == accept))
    return HostPattern(text, tuple(b.pred), tuple(b.next), tuple(closure), closure[start], accept)


def is_regex(text: str) -> bool:
    """Whether ``text`` uses any regular-expression syntax (a dot alone does not count)."""
    return any(c in _META and c != "." for c in text)
