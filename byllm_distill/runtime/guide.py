"""Guided decoding: check a tuple answer item by item while the student writes it.

Contract. `guide_for(site, codec, args, schema)` returns None when nothing can be checked
early: the codec is not in tuple mode, or no validator of the site named prefix-closed
verdicts (see `validators/registry.py`). Otherwise the engine hands the returned `Guide`
the bytes of each token it samples (`feed`), and gets back:

- `None`: no top-level field or array item ended in this token (or the answer so far
  cannot be read yet): keep going;
- `True`: one ended and the answer so far, its arrays cut short, passes every
  prefix-closed verdict: the engine marks a checkpoint here;
- `False`: it fails one (an enemy on a wall, a wall that cuts the map in two): the engine
  rolls the model, the grammar and this guide back to the last checkpoint (`state()` /
  `restore()`) and draws the item again.

After a failed check, `passing_numbers()` tries every value in the place of the last
number written (0 up to the largest integer bound of the call) and lists those that
would have passed; the decoder redraws that number among them (decode.py).

The guide follows the tuple text with a small scanner (list depth, strings) rather than
parsing it again per token: a top-level field or an array item of a top-level field ends
at a `,` or `]` that leaves the depth at two or less. Only there is the text so far closed
(`]` per open list), parsed, decoded with `SiteCodec.decode_prefix` and checked.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from byllm_distill.codec.site import SiteCodec

if TYPE_CHECKING:
    from byllm_distill.store.record import Record

log = logging.getLogger("byllm_distill")

Check = Callable[[Any], bool]
MAX_CANDIDATE = 999  # numbers tried in a failed number's place go up to this at most


@dataclass
class _Cursor:
    """Where the scanner is in the tuple text."""

    length: int = 0  # bytes read
    depth: int = 0  # open lists
    in_string: bool = False
    escaped: bool = False
    checked: str = ""  # the last closed text checked (a "]," pair ends one item once)
    number: str = ""  # digits of the number being written ("" between numbers)
    number_at: int = -1  # where the last number began (byte offset)
    number_end: int = -1  # ... and ended


@dataclass
class Guide:
    codec: SiteCodec
    args: dict[str, Any]
    check: Check
    text: bytearray = field(default_factory=bytearray)
    cursor: _Cursor = field(default_factory=_Cursor)
    failed: tuple[int, int] | None = None  # (end, depth) of the last check that failed

    def state(self) -> _Cursor:
        return replace(self.cursor)

    def restore(self, state: _Cursor) -> None:
        del self.text[state.length:]
        self.cursor = replace(state)

    def number_prefix(self) -> str:
        """The digits of the number being written, "" when none is."""
        return self.cursor.number

    def feed(self, piece: bytes) -> bool | None:
        """Read one token's bytes; see the module docstring for the answer."""
        verdict: bool | None = None
        c = self.cursor
        for byte in piece:
            self.text.append(byte)
            c.length += 1
            if c.in_string:
                if c.escaped:
                    c.escaped = False
                elif byte == 0x5C:  # backslash
                    c.escaped = True
                elif byte == 0x22:  # closing quote
                    c.in_string = False
                continue
            if 0x30 <= byte <= 0x39:  # a digit
                if not c.number:
                    c.number_at = c.length - 1
                c.number += chr(byte)
                continue
            if c.number:
                c.number, c.number_end = "", c.length - 1
            if byte == 0x22:
                c.in_string = True
            elif byte == 0x5B:  # [
                c.depth += 1
            elif byte == 0x5D or byte == 0x2C:  # ] or ,
                if byte == 0x5D:
                    c.depth -= 1
                    end = c.length
                else:
                    end = c.length - 1
                if 0 < c.depth <= 2 or (byte == 0x5D and c.depth == 0):
                    found = self._check_upto(end, c.depth)
                    if found is False:
                        self.failed = (end, c.depth)
                        return False
                    verdict = found if found is not None else verdict
        return verdict

    def _check_upto(self, end: int, depth: int) -> bool | None:
        closed = self.text[:end].decode("utf-8", errors="replace") + "]" * depth
        if closed == self.cursor.checked:
            return None
        self.cursor.checked = closed
        return self._passes(closed)

    def _passes(self, closed: str) -> bool | None:
        try:
            output = self.codec.decode_prefix(json.loads(closed), self.args)
        except ValueError:
            return None
        return self.check(output)

    def passing_numbers(self) -> list[str]:
        """The values the last number before the failed check could have had for that
        check to pass, each tried in its place (the candidates run from 0 to the largest
        integer bound the codec gives this call)."""
        c = self.cursor
        if self.failed is None or not 0 <= c.number_at < c.number_end <= self.failed[0]:
            return []
        end, depth = self.failed
        text = self.text[:end].decode("utf-8", errors="replace")
        head, tail = text[:c.number_at], text[c.number_end:] + "]" * depth
        return [str(v) for v in range(self._largest() + 1)
                if self._passes(f"{head}{v}{tail}")]

    def _largest(self) -> int:
        highs = [self.codec.int_range(path, self.args)[1] for path in self.codec.ints]
        return min(MAX_CANDIDATE, max((h for h in highs if h is not None), default=99))


def student_record(site: str, args: dict[str, Any], schema: dict[str, Any] | None,
                   output: Any) -> Record:
    """A record of a student answer, as validators read it (never stored)."""
    from byllm_distill.store.record import Record

    return Record(site=site, fingerprint="", model="student", messages=[], args=args,
                  latency_ms=0.0, schema=schema,
                  output_raw=json.dumps(output, ensure_ascii=False), output=output)


def prefix_check(site: str, args: dict[str, Any], schema: dict[str, Any] | None
                 ) -> Check | None:
    """A function telling whether a cut-short answer passes the site's prefix-closed
    verdicts, or None when the site's validators declared none."""
    from byllm_distill.validators import registry as validators

    declared = validators.prefix_validators(site)
    if not declared:
        return None

    def check(output: Any) -> bool:
        record = student_record(site, args, schema, output)
        for fn, names in declared:
            try:
                verdicts = list(fn(record))
            except Exception as exc:  # noqa: BLE001 - the full check still runs at the end
                log.debug("byllm-distill: prefix check of %s raised %s", site, exc)
                continue
            if any(not v.passed for v in verdicts if v.name in names):
                return False
        return True

    return check


def guide_for(site: str, codec: SiteCodec, args: dict[str, Any],
              schema: dict[str, Any] | None) -> Guide | None:
    """A fresh guide for one answer, or None (see the module docstring)."""
    if codec.mode != "tuple":
        return None
    check = prefix_check(site, args, schema)
    return None if check is None else Guide(codec, args, check)
