"""Batched decoding: the calls answering on one model share each forward pass.

Contract. A `Batcher` serves one resident `Llama` (models.py) whose context has room for
`slots` sequences in one KV cache of `cells` cells. A call hands `run(loop, tag,
activate, need)` its token loop, a generator (decode.py) that yields `Eval` requests and
is sent the next-token logits; `run` takes a turn (load.py: at most `slots` calls answer
at once, the rest queue first come, first served), gives the loop a sequence of its own
and returns what the loop returns, or raises what it raised, on the caller's thread.

One thread per batcher makes every step. It starts each new loop, takes the requests
waiting under one set of weights (`tag`: the merged file, or base + adapter; llama.cpp
applies one adapter set to a whole context, so sequences under another adapter take the
next step, in turn), drops each sequence's KV entries from its request's position on (a
rollback is a request at an earlier position), puts every request's tokens into one
`llama_batch` with logits for the last token of each, runs one `llama_decode` and sends
each loop a copy of its logits. The loops' own Python (sampling, grammar, item checks)
then runs on this thread, one after another, while the callers' threads wait. A prompt
longer than the batch is spread over several steps. A sequence is emptied when its call
ends, so the cells in use, and with them the attention each step reads, stay those of
the calls answering.

Room: a call starts decoding only when the cells it may fill (`need`: its prompt and
longest answer; a rollback never needs more) fit beside what the answering calls
reserved; otherwise it waits, in turn, for calls to finish. So llama.cpp never runs out
of cells mid-answer, and `cells` is at least what one call may need.

Failures: a loop that raises ends its own call only; a `llama_decode` that fails ends
every call of that step with `RuntimeError`. The thread ends after `IDLE_S` without work
and starts again with the next call; `close()` (under `turns.exclusive()`) ends it
before the model is freed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from byllm_distill.runtime.decode import Eval, Loop
from byllm_distill.runtime.load import Turns

IDLE_S = 5.0  # the stepping thread ends after this long without a call


@dataclass
class _Call:
    loop: Loop
    tag: str
    activate: Callable[[], None]
    seq: int  # its sequence in the context
    need: int  # KV cells it may fill at most
    done: Future = field(default_factory=Future)
    request: Eval | None = None
    sent: int = 0  # tokens of `request` already decoded (a long prompt takes several steps)
    filled: int = 0  # KV positions its sequence holds (0..filled-1)


class Batcher:
    def __init__(self, llama: Any, slots: int) -> None:
        import llama_cpp

        self.llama = llama
        self.slots = slots
        self.cells = llama.n_ctx()
        self.turns = Turns(slots)
        self.n_batch = llama.n_batch
        self._ctx = llama.ctx
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self._cond = threading.Condition()
        self._incoming: list[_Call] = []
        self._thread: threading.Thread | None = None
        self._closed = False
        self._last_tag: str | None = None

    # The caller's side --------------------------------------------------------------------

    def run(self, loop: Loop, tag: str, activate: Callable[[], None],
            need: int | None = None) -> Any:
        """Drive `loop` to its end in a sequence of its own; its result (see above).
        `need` is the most KV cells it may fill (default: all, so it decodes alone)."""
        need = self.cells if need is None else need
        if need > self.cells:
            raise ValueError(f"a call that may fill {need} KV cells cannot run in a cache "
                             f"of {self.cells}")
        with self.turns.turn() as slot:
            call = _Call(loop, tag, activate, slot, need)
            with self._cond:
                if self._closed:
                    raise RuntimeError("this model was unloaded while the call waited; "
                                       "call again")
                self._incoming.append(call)
                if self._thread is None:
                    self._thread = threading.Thread(target=self._steps, daemon=True,
                                                    name="byllm-distill-batcher")
                    self._thread.start()
                self._cond.notify()
            return call.done.result()

    def close(self) -> None:
        """End the stepping thread and free the batch (callers hold `turns.exclusive()`)."""
        import llama_cpp

        with self._cond:
            self._closed = True
            thread = self._thread
            self._cond.notify()
        if thread is not None:
            thread.join()
        llama_cpp.llama_batch_free(self._batch)

    # The stepping thread ------------------------------------------------------------------

    def _steps(self) -> None:
        active: list[_Call] = []
        waiting: list[_Call] = []  # took a turn, waits for room in the KV cache
        while True:
            with self._cond:
                if not active and not waiting and not self._incoming:
                    self._cond.wait_for(lambda: self._incoming or self._closed, IDLE_S)
                if not active and not waiting and (self._closed or not self._incoming):
                    self._thread = None
                    return
                waiting += self._incoming
                self._incoming = []
            while waiting and sum(c.need for c in active) + waiting[0].need <= self.cells:
                call = waiting.pop(0)
                if self._advance(call, None):
                    active.append(call)
            if active:
                self._step(active)
                active = [c for c in active if not c.done.done()]

    def _advance(self, call: _Call, logits: Any) -> bool:
        """Send the loop its logits (None: start it) and take its next request; False once
        the call has ended (its sequence emptied)."""
        import llama_cpp

        try:
            call.request = call.loop.send(logits)
            call.sent = 0
            return True
        except StopIteration as stop:
            call.done.set_result(stop.value)
        except BaseException as exc:  # noqa: BLE001 - it belongs to the caller
            call.done.set_exception(exc)
        llama_cpp.llama_memory_seq_rm(self._memory, call.seq, -1, -1)
        return False

    def _step(self, active: list[_Call]) -> None:
        import llama_cpp
        import numpy as np

        tags = list(dict.fromkeys(c.tag for c in active))
        # Take turns between weights: the group after the one that decoded last.
        tag = tags[(tags.index(self._last_tag) + 1) % len(tags)] if (
            self._last_tag in tags) else tags[0]
        self._last_tag = tag
        batch, n, rows, added = self._batch, 0, [], []
        for call in (c for c in active if c.tag == tag):
            request = call.request
            room = self.n_batch - n
            if room <= 0:
                break
            pos = request.pos + call.sent
            if call.filled > pos:
                llama_cpp.llama_memory_seq_rm(self._memory, call.seq, pos, -1)
            part = request.tokens[call.sent:call.sent + room]
            for i, token in enumerate(part):
                batch.token[n + i], batch.pos[n + i] = token, pos + i
                batch.n_seq_id[n + i], batch.seq_id[n + i][0] = 1, call.seq
                batch.logits[n + i] = False
            n += len(part)
            added.append(call)
            call.sent += len(part)
            call.filled = pos + len(part)
            if call.sent == len(request.tokens):
                batch.logits[n - 1] = True
                rows.append((call, n - 1))
        batch.n_tokens = n
        try:
            added[0].activate()
            code = llama_cpp.llama_decode(self._ctx, batch)
            if code != 0:
                raise RuntimeError(f"llama_decode failed with code {code} ({len(added)} "
                                   f"sequences, {n} tokens, {self.cells} KV cells)")
        except Exception as exc:  # noqa: BLE001 - every call of the step gets it
            for call in added:
                call.loop.close()
                call.done.set_exception(exc)
                llama_cpp.llama_memory_seq_rm(self._memory, call.seq, -1, -1)
            return
        n_vocab = self.llama.n_vocab()
        for call, row in rows:
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self._ctx, row),
                                           shape=(n_vocab,)).copy()
            self._advance(call, logits)
