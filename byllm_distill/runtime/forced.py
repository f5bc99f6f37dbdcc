"""Jump-forward: the tokens a call's grammar leaves no choice about.

Contract. `Forced(llama).after(grammar, last)` looks at the grammar's state after the
token `last` was accepted and returns (tokens, complete):

- `tokens`: the tokens of the text the grammar allows next and nothing else (a tuple
  answer's `],[` after a coordinate that cannot have another digit, the `,` between two
  numbers), as the model's own tokenizer writes them, so the student reads what it was
  trained on. They go into the same forward pass as `last` (decode.py), which costs
  little more than `last` alone: a step of llama.cpp on this model is mostly reading the
  weights, whatever the number of tokens (benchmarks/batch_decode.py);
- `complete`: after those tokens the grammar admits nothing but the end of the answer,
  so the answer ends there without a forward pass for the end-of-text token.

The forced text is found one character at a time on a copy of the grammar: while exactly
one of the single-character ASCII tokens is allowed, it is taken. It stops before a
digit (a number is the model's to write, and the decoder's number repairs start from a
checkpoint before it) and after `LIMIT` characters. Its tokens are used only where they
are the tokenizer's own: `last` followed by the text (and by a digit, when only digits
may follow) must tokenize to `last`, those tokens (and the digit). Where it does not, or
where an open choice follows the text (its tokens may merge with the characters chosen
next), nothing is forced: tokens the tokenizer would not write here are never fed.

Grammars whose next character is open (a string, a free choice between `,` and `]`) force
nothing; answers then decode token by token as before.
"""

from __future__ import annotations

import ctypes
import math
from typing import Any

LIMIT = 16  # forced characters looked ahead at most


class Forced:
    def __init__(self, llama: Any) -> None:
        import llama_cpp

        self.llama = llama
        self._chars: dict[int, str] = {}
        for code in range(0x20, 0x7F):
            tokens = llama.tokenize(bytes([code]), add_bos=False, special=False)
            if len(tokens) == 1:
                self._chars[tokens[0]] = chr(code)
        self._ids = list(self._chars)
        self._data = (llama_cpp.llama_token_data * len(self._ids))()
        self._known: dict[tuple[int, str, str], list[int] | None] = {}

    def allowed(self, grammar: Any) -> list[int]:
        """The single-character tokens `grammar` allows next."""
        import llama_cpp

        for i, token in enumerate(self._ids):
            self._data[i].id, self._data[i].logit, self._data[i].p = token, 0.0, 0.0
        candidates = llama_cpp.llama_token_data_array(
            data=ctypes.cast(self._data, llama_cpp.llama_token_data_p), size=len(self._ids),
            selected=-1, sorted=False)
        llama_cpp.llama_sampler_apply(grammar, ctypes.byref(candidates))
        return [self._data[i].id for i in range(len(self._ids))
                if math.isfinite(self._data[i].logit)]

    def after(self, grammar: Any, last: int) -> tuple[list[int], bool]:
        """(forced tokens, complete) after `last` (see the module docstring)."""
        import llama_cpp

        allowed = self.allowed(grammar)
        if len(allowed) > 1:
            return [], False
        if not allowed:
            return [], True
        probe = llama_cpp.llama_sampler_clone(grammar)
        text = ""
        try:
            while len(allowed) == 1 and len(text) < LIMIT:
                char = self._chars[allowed[0]]
                if char.isdigit():
                    break
                text += char
                llama_cpp.llama_sampler_accept(probe, allowed[0])
                allowed = self.allowed(probe)
        finally:
            llama_cpp.llama_sampler_free(probe)
        if not text:
            return [], False
        complete = not allowed
        follow = "end" if complete else (
            "digit" if all(self._chars[t].isdigit() for t in allowed) else "open")
        return self._tokens(last, text, follow), complete

    def _tokens(self, last: int, text: str, follow: str) -> list[int]:
        """The tokens of `text` after `last`, as the tokenizer writes them, given what
        follows it: the end, a digit, or something open (cached)."""
        key = (last, text, follow)
        if key not in self._known:
            tokenize = self.llama.tokenize
            head = self.llama.detokenize([last], special=False)
            tail = b"0" if follow == "digit" else b""
            whole = tokenize(head + text.encode() + tail, add_bos=False, special=False)
            alone = tokenize(text.encode(), add_bos=False, special=False)
            expect = [last, *alone, *(tokenize(tail, add_bos=False, special=False)
                                      if tail else [])]
            # Before an open choice the text's tokens may merge with what comes next
            # (BPE may split "],[[" as "]," "[[" as well as "],[" "["): nothing is forced.
            fits = follow != "open" and whole == expect
            self._known[key] = alone if fits else None
        return list(self._known[key] or [])
