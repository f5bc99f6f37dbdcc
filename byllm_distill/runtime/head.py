"""Logits for the tokens a call's grammar can write, without llama.cpp's output layer.

Contract. A student's output layer scores all ~49k tokens of the vocabulary at every
pass: on SmolLM2-135M here about 30% of a one-token pass (README, "Scoring only what the
grammar can write"). Under a grammar whose text uses only a few characters (a map:
digits, brackets and commas) every other token is forbidden anyway. So for such a model:

- `grammar_chars(gbnf)` is the set of characters the grammar's root can write, or None
  where it is open (a negated class such as JSON's string characters, a wide range,
  anything not ASCII);
- `Head.build(llama, gguf, chars)` keeps the tokens written with those characters only
  (and the end-of-text tokens), and their rows of the output matrix, dequantized once
  from the model's own GGUF (`output.weight`, else the tied `token_embd.weight`);
- `Tap` is an evaluation callback set on the model's context when it is made. While
  `on`, llama.cpp stops each pass once the last hidden state (`result_norm`, after the
  output norm) is computed and hands it over; the scheduler cancels the rest of the
  graph, the output layer included (ggml-backend.h: a callback returning false cancels
  the graph compute). Off, the callback declines every node and the pass runs whole;
- `Head.logits(hidden)` is then the kept tokens' logits (a float32 product of the hidden
  state and their rows), every other token at -inf: what the grammar leaves possible
  scored as the model's output layer would, to its rounding (llama.cpp's own product
  quantizes the hidden state to 8 bits first).

`Head.build` checks itself on a short text before it is used: the kept tokens' logits
from the tap against llama.cpp's own must agree (same best token, differences under
`TOLERANCE`); a model whose graph names its last state otherwise, or whose logits are not
a plain product (a logit scale or soft-capping), fails the check and keeps its output
layer (logged). The check is about the model, not the characters: once one head of a
model passed it, `Head.rows_for` makes heads for other characters without decoding.

Which models get a tap (models.py): a merged model where its site's grammar is closed;
a shared base whenever narrow heads are on (config `narrow_head`), checked with the head
of the site that loads it or, where that site's grammar is open, with `CHECK_CHARS`, so
the closed-grammar sites served as adapters after it get heads too. A site's adapter
with a LoRA on the output layer would change the rows a head reads from the base's file:
its calls keep the whole layer. The batcher (batch.py) gives each call the head for its
grammar's characters (`Batcher.head_for`, made on first use) and turns the tap on for a
step whose calls all have one; each call's logits come from its own head.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
from dataclasses import dataclass
from typing import Any

from byllm_distill.openmp import release_openmp_threads

log = logging.getLogger("byllm_distill")

LAST_STATE = b"result_norm"  # llama.cpp's name for the last hidden state
MAX_KEPT = 4096  # a grammar admitting more tokens than this keeps the output layer
TOLERANCE = 1.0  # the check's largest logit difference (8-bit rounding is ~0.5 here)
_RANGE = 128  # a character class range wider than this counts as open
CHECK_TEXT = "[[1,2],[3,4]],[[5"  # what the check decodes; its last token is kept
CHECK_CHARS = frozenset("0123456789[],")  # a head to check a model with, where no site gives one

_RULE = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*::=", re.M)
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "[": "[", "]": "]",
            "-": "-", "^": "^", "/": "/"}


def grammar_chars(gbnf: str) -> frozenset[str] | None:
    """The characters the root rule of `gbnf` can write (see the module docstring)."""
    starts = list(_RULE.finditer(gbnf))
    rules = {m.group(1): gbnf[m.end():(starts[i + 1].start() if i + 1 < len(starts)
                                      else len(gbnf))] for i, m in enumerate(starts)}
    if "root" not in rules:
        return None
    chars: set[str] = set()
    seen, todo = {"root"}, ["root"]
    while todo:
        body = rules.get(todo.pop())
        if body is None:
            return None  # a reference to a rule that is not there
        found = _body_chars(body)
        if found is None:
            return None
        written, refs = found
        chars |= written
        for ref in refs - seen:
            seen.add(ref)
            todo.append(ref)
    return frozenset(chars) if all(c.isascii() for c in chars) else None


def _body_chars(body: str) -> tuple[set[str], set[str]] | None:
    """(characters written, rules referenced) by one rule's body, or None if open."""
    chars: set[str] = set()
    refs: set[str] = set()
    i = 0
    while i < len(body):
        c = body[i]
        if c == '"':
            i += 1
            while i < len(body) and body[i] != '"':
                char, i = _char(body, i)
                chars.add(char)
            i += 1
        elif c == "[":
            i += 1
            if i < len(body) and body[i] == "^":
                return None
            while i < len(body) and body[i] != "]":
                low, i = _char(body, i)
                if body[i:i + 1] == "-" and body[i + 1:i + 2] not in ("]", ""):
                    high, i = _char(body, i + 1)
                    if ord(high) - ord(low) > _RANGE:
                        return None
                    chars.update(chr(o) for o in range(ord(low), ord(high) + 1))
                else:
                    chars.add(low)
            i += 1
        elif c == "{":
            i = body.index("}", i) + 1
        elif c == "#":
            end = body.find("\n", i)
            i = len(body) if end < 0 else end
        elif c.isalnum() or c in "_-":
            j = i
            while j < len(body) and (body[j].isalnum() or body[j] in "_-"):
                j += 1
            refs.add(body[i:j])
            i = j
        else:
            i += 1  # ( ) | * + ? . and spaces
    return chars, refs


def _char(text: str, i: int) -> tuple[str, int]:
    """The character written at `text[i]` (an escape taken whole) and the index after."""
    if text[i] != "\\":
        return text[i], i + 1
    kind = text[i + 1]
    if kind in "xuU":
        size = {"x": 2, "u": 4, "U": 8}[kind]
        return chr(int(text[i + 2:i + 2 + size], 16)), i + 2 + size
    return _ESCAPES.get(kind, kind), i + 2


class Tap:
    """The evaluation callback of one context (see the module docstring)."""

    def __init__(self) -> None:
        import llama_cpp

        lib = ctypes.CDLL(os.path.join(os.path.dirname(llama_cpp.__file__), "lib",
                                       "libggml-base.so"))
        self._name = lib.ggml_get_name
        self._name.restype, self._name.argtypes = ctypes.c_char_p, [ctypes.c_void_p]
        self._nbytes = lib.ggml_nbytes
        self._nbytes.restype, self._nbytes.argtypes = ctypes.c_size_t, [ctypes.c_void_p]
        self._get = lib.ggml_backend_tensor_get
        self._get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                              ctypes.c_size_t]
        self.n_embd = 0
        self.hidden: Any = None  # (rows, n_embd) float32, once `size` says
        self.on = False
        self.taken = 0  # rows handed over by the last pass
        self.callback = llama_cpp.ggml_backend_sched_eval_callback(self._observe)

    def size(self, n_embd: int, rows: int) -> None:
        """Room for `rows` hidden states of the loaded model (a pass's outputs at most)."""
        import numpy as np

        self.n_embd, self.hidden = n_embd, np.zeros((rows, n_embd), dtype=np.float32)

    def _observe(self, tensor: int, ask: bool, _user: Any) -> bool:
        if ask:
            return self.on and self._name(tensor) == LAST_STATE
        size = self._nbytes(tensor)
        if self.hidden is None or size > self.hidden.nbytes or size % (4 * self.n_embd):
            self.taken = 0  # not what was expected: the caller falls back
            return True
        self._get(tensor, self.hidden.ctypes.data, 0, size)
        self.taken = size // (4 * self.n_embd)
        return False  # the output layer is not needed: cancel the rest of the pass


@dataclass
class Head:
    """The kept tokens of one model under one character set, and their output rows."""

    chars: frozenset[str]
    ids: Any  # int array
    rows: Any  # float32 (len(ids), n_embd)
    n_vocab: int

    def covers(self, chars: frozenset[str] | None) -> bool:
        return chars is not None and chars <= self.chars

    def logits(self, hidden: Any) -> Any:
        import numpy as np

        out = np.full(self.n_vocab, -np.inf, dtype=np.float32)
        out[self.ids] = self.rows @ hidden
        return out

    @classmethod
    def build(cls, llama: Any, gguf: str, chars: frozenset[str], tap: Tap) -> Head | None:
        """The head for `chars` on the model loaded from `gguf`, checked against llama.cpp's
        own logits (see the module docstring); None where it would not help or fails. Run
        it while no call decodes on the model (it uses the whole KV cache)."""
        head = cls.rows_for(llama, gguf, chars)
        if head is None:
            return None
        why = head._check(llama, tap)
        if why:
            log.warning("byllm-distill: %s: logits from the last hidden state do not match "
                        "llama.cpp's (%s); it keeps llama.cpp's output layer.", gguf, why)
            return None
        return head

    @classmethod
    def rows_for(cls, llama: Any, gguf: str, chars: frozenset[str]) -> Head | None:
        """The head for `chars` without the check: for a model whose tap another head of
        it has passed (the check is about the model: its last state's name and a plain
        output product). None where it would not help or cannot be read. Any thread."""
        import llama_cpp
        import numpy as np

        ids = kept_tokens(llama, chars)
        if len(ids) > MAX_KEPT:
            return None
        try:
            rows = _output_rows(gguf, ids, llama_cpp.llama_model_n_embd(llama.model))
        except (OSError, ValueError, KeyError, IndexError, NotImplementedError) as exc:
            log.warning("byllm-distill: %s: its output layer cannot be read (%s); it keeps "
                        "llama.cpp's.", gguf, exc)
            return None
        return cls(chars, np.asarray(ids, dtype=np.int64), rows, llama.n_vocab())

    def _check(self, llama: Any, tap: Tap) -> str | None:
        """Why the kept tokens' logits from the tap differ from llama.cpp's, or None."""
        import llama_cpp
        import numpy as np

        tokens = llama.tokenize(CHECK_TEXT.encode(), add_bos=False, special=False)
        memory = llama_cpp.llama_get_memory(llama.ctx)
        array = (llama_cpp.llama_token * len(tokens))(*tokens)  # kept while decoding
        batch = llama_cpp.llama_batch_get_one(array, len(tokens))
        try:
            for on in (False, True):
                llama_cpp.llama_memory_seq_rm(memory, -1, -1, -1)
                tap.on, tap.taken = on, 0
                if llama_cpp.llama_decode(llama.ctx, batch) != 0:
                    return "llama_decode failed"
                if not on:
                    full = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llama.ctx, -1),
                                                 shape=(self.n_vocab,)).copy()
        finally:
            tap.on = False
            llama_cpp.llama_memory_seq_rm(memory, -1, -1, -1)
            # This thread is not the model's stepping thread: the OpenMP team these passes
            # parked would make every later pass sleep at its barriers (openmp.py).
            release_openmp_threads()
        if tap.taken < 1:
            return f"no {LAST_STATE.decode()} state was handed over"
        mine = self.logits(tap.hidden[tap.taken - 1])
        gap = float(np.max(np.abs(mine[self.ids] - full[self.ids])))
        if gap > TOLERANCE or int(np.argmax(mine)) != int(self.ids[np.argmax(full[self.ids])]):
            return f"largest difference {gap:.2f}"
        return None


def kept_tokens(llama: Any, chars: frozenset[str]) -> list[int]:
    """The tokens written with `chars` only, and the end-of-text tokens."""
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llama.model)
    ids = []
    for token in range(llama.n_vocab()):
        piece = llama.detokenize([token], special=False)
        if llama_cpp.llama_vocab_is_eog(vocab, token) or (
                piece and piece.isascii() and set(piece.decode()) <= chars):
            ids.append(token)
    return ids


def _output_rows(gguf: str, ids: list[int], n_embd: int) -> Any:
    """The output matrix's rows for `ids`, dequantized to float32 (n, n_embd)."""
    import numpy as np
    from gguf import GGUFReader
    from gguf.quants import dequantize

    tensors = {t.name: t for t in GGUFReader(gguf).tensors}
    matrix = tensors.get("output.weight") or tensors["token_embd.weight"]
    data = np.asarray(matrix.data)
    rows = dequantize(data[ids], matrix.tensor_type).reshape(len(ids), n_embd)
    return np.ascontiguousarray(rows, dtype=np.float32)
