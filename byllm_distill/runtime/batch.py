"""Batched decoding: the calls answering on one model share each forward pass.

Contract. A `Batcher` serves one resident `Llama` (models.py) whose context has room for
`slots` sequences in one KV cache of `cells` cells. A call hands `run(loop, tag,
activate, need)` its token loop, a generator (decode.py) that yields `Eval` requests and
is sent the next-token logits; `run` takes a turn (load.py: at most `slots` calls answer
at once, the rest queue first come, first served), gives the loop a sequence of its own
and returns what the loop returns, or raises what it raised, on the caller's thread.

One driver at a time makes the steps: the batcher's own stepping thread, started with it
and kept until `close()`, while the callers' threads wait (callers taking turns at
driving got about half the maps per second with eight callers here). Where it has
none (Python refuses new threads while the interpreter shuts down, and at exit the
stepping threads are stopped, so that none is inside llama.cpp when the libraries go:
the router's shadow answers still run then), the callers drive themselves, one at a
time, each until its own answer is done. A step starts each new loop, takes the
requests waiting under one set of weights (`tag`: the merged file, or base + adapter;
llama.cpp applies one adapter set to a whole context, so sequences under another adapter
take the next step, in turn), drops each sequence's KV entries from its request's
position on (a rollback is a request at an earlier position), puts every request's
tokens into one `llama_batch` with logits for the last token of each, runs one
`llama_decode` and sends each loop a copy of its logits (a request's draft, decode.py,
is read only when its call is the step's only one: beside others its tokens would cost
them time for a guess; then the loop gets two rows, after its tokens and after the
draft; with narrow heads, head.py, a step whose calls all decode under closed
grammars stops after the last hidden state and scores only the tokens of each call's own
head); the loops' own Python
(sampling, grammar, item checks) runs on the driver's thread, one after another. A
prompt longer than the batch is spread over several steps. A sequence is emptied when
its call ends, so the cells in use, and with them the attention each step reads, stay
those of the calls answering.

Room: a call starts decoding only when the cells it may fill (`need`: its prompt and
longest answer; a rollback never needs more) fit beside what the answering calls
reserved; otherwise it waits, in turn, for calls to finish. So llama.cpp never runs out
of cells mid-answer, and `cells` is at least what one call may need.

Failures: a loop that raises ends its own call only; a `llama_decode` that fails ends
every call of that step with `RuntimeError`. `close()` (under `turns.exclusive()`, so no
call answers) frees the batch before the model is freed.
"""

from __future__ import annotations

import atexit
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from byllm_distill.openmp import release_openmp_threads
from byllm_distill.runtime.decode import Eval, Loop
from byllm_distill.runtime.head import Head, Tap
from byllm_distill.runtime.load import Turns

_batchers: weakref.WeakSet[Batcher] = weakref.WeakSet()


@dataclass
class _Call:
    loop: Loop
    tag: str
    activate: Callable[[], None]
    seq: int  # its sequence in the context
    need: int  # KV cells it may fill at most
    head: Head | None = None  # the narrow head its grammar fits (head.py), if any
    done: Future = field(default_factory=Future)
    request: Eval | None = None
    sent: int = 0  # tokens of `request` already decoded (a long prompt takes several steps)
    filled: int = 0  # KV positions its sequence holds (0..filled-1)


class Batcher:
    def __init__(self, llama: Any, slots: int, head: Head | None = None,
                 tap: Tap | None = None, gguf: str | None = None) -> None:
        import llama_cpp

        self.llama = llama
        self.head, self._tap = head, tap  # the narrow output layer, if any (head.py)
        # With `gguf` (the loaded file), heads for other characters are made as calls
        # need them, on the model `head` checked; a head for a character set, or None.
        self._gguf = gguf if head is not None else None
        self._heads: dict[frozenset[str], Head | None] = {}
        self._heads_lock = threading.Lock()
        self.narrow_steps = 0  # steps that scored only the head's tokens
        self.slots = slots
        self.cells = llama.n_ctx()
        self.turns = Turns(slots)
        self.n_batch = llama.n_batch
        self._ctx = llama.ctx
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self._cond = threading.Condition()
        self._incoming: list[_Call] = []  # handed in, not yet seen by a driver
        self._waiting: list[_Call] = []  # seen, waiting for room in the KV cache
        self._active: list[_Call] = []  # decoding (the driver's alone)
        self._driving = False
        self._closed = False  # unloaded: no new calls
        self._stop = False  # the stepping thread ends (close, or the interpreter's exit)
        self._last_tag: str | None = None
        self._stepper: threading.Thread | None = None
        try:
            self._stepper = threading.Thread(target=self._steps, daemon=True,
                                             name="byllm-distill-steps")
            self._stepper.start()
        except RuntimeError:  # the interpreter is shutting down: callers drive
            self._stepper = None
        _batchers.add(self)

    def run(self, loop: Loop, tag: str, activate: Callable[[], None],
            need: int | None = None, chars: frozenset[str] | None = None) -> Any:
        """Drive `loop` to its end in a sequence of its own; its result (see above).
        `need` is the most KV cells it may fill (default: all, so it decodes alone);
        `chars`, what its grammar can write (head.py), if that is closed."""
        need = self.cells if need is None else need
        if need > self.cells:
            raise ValueError(f"a call that may fill {need} KV cells cannot run in a cache "
                             f"of {self.cells}")
        head = self.head_for(chars)
        with self.turns.turn() as slot:
            call = _Call(loop, tag, activate, slot, need, head)
            with self._cond:
                if self._closed:
                    raise RuntimeError("this model was unloaded while the call waited; "
                                       "call again")
                self._incoming.append(call)
                self._cond.notify_all()
                while self._stepping() and not call.done.done():
                    self._cond.wait(0.5)  # the stepping thread answers it
            self.drive(call.done.done)  # returns at once if it did
            return call.done.result()

    def head_for(self, chars: frozenset[str] | None) -> Head | None:
        """The narrow head for a grammar writing `chars` (None: open), if this model has
        one: the checked head where it covers them, else one made for them on first use
        (the model's check holds for any rows of its output layer)."""
        if chars is None or self.head is None:
            return None
        if self.head.covers(chars):
            return self.head
        if self._gguf is None:
            return None
        with self._heads_lock:
            if chars not in self._heads:
                self._heads[chars] = Head.rows_for(self.llama, self._gguf, chars)
            return self._heads[chars]

    def _stepping(self) -> bool:
        return self._stepper is not None and self._stepper.is_alive()

    def drive(self, until: Callable[[], bool]) -> None:
        """Make steps, taking turns with other callers as driver, until `until()`."""
        with self._cond:
            while not until():
                if not self._driving:
                    self._driving = True
                    break
                self._cond.wait()
            else:
                return
        try:
            while not until():
                self._step_once()
        finally:
            with self._cond:
                self._driving = False
                self._cond.notify_all()  # a waiting caller takes over, or sees its answer

    def close(self) -> None:
        """End the stepping thread and free the batch (callers hold `turns.exclusive()`:
        no call is answering)."""
        import llama_cpp

        with self._cond:
            self._closed = True
        self.stop_stepping()
        llama_cpp.llama_batch_free(self._batch)

    def stop_stepping(self) -> None:
        """End the stepping thread after its current step; callers then drive."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._stepper is not None and self._stepper is not threading.current_thread():
            self._stepper.join()

    def _steps(self) -> None:
        """The stepping thread: drive while there is work, until closed. Out of work, it
        gives back the OpenMP threads its steps parked: another resident model's steps
        (or torch's) would otherwise sleep at every barrier (byllm_distill/openmp.py)."""
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stop or self._incoming or self._waiting
                                    or self._active)
                if self._stop:
                    return
            self.drive(lambda: self._stop or not (self._incoming or self._waiting
                                                  or self._active))
            release_openmp_threads()

    # The driver's side --------------------------------------------------------------------

    def _step_once(self) -> None:
        with self._cond:
            self._waiting += self._incoming
            self._incoming = []
        while self._waiting and (sum(c.need for c in self._active) + self._waiting[0].need
                                 <= self.cells):
            call = self._waiting.pop(0)
            if self._advance(call, None):
                self._active.append(call)
        if self._active:
            self._step(self._active)
        ended = [c for c in self._active if c.done.done()]
        if ended or not self._active:
            self._active = [c for c in self._active if not c.done.done()]
            with self._cond:
                self._cond.notify_all()  # their callers return

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
        group = [c for c in active if c.tag == tag]
        batch, n, rows, added, outputs = self._batch, 0, [], [], []
        for call in group:
            request = call.request
            room = self.n_batch - n
            if room <= 0:
                break
            pos = request.pos + call.sent
            if call.filled > pos:
                llama_cpp.llama_memory_seq_rm(self._memory, call.seq, pos, -1)
            part = request.tokens[call.sent:call.sent + room]
            # A draft rides along only in a pass of its own call: beside other calls its
            # tokens would cost them time for a guess (decode.py).
            draft = list(request.draft) if (
                len(group) == 1 and call.sent + len(part) == len(request.tokens)
                and len(part) + len(request.draft) <= room) else []
            for i, token in enumerate(part + draft):
                batch.token[n + i], batch.pos[n + i] = token, pos + i
                batch.n_seq_id[n + i], batch.seq_id[n + i][0] = 1, call.seq
                batch.logits[n + i] = False
            n += len(part) + len(draft)
            added.append(call)
            call.sent += len(part)
            call.filled = pos + len(part) + len(draft)
            if call.sent == len(request.tokens):
                batch.logits[n - 1 - len(draft)] = batch.logits[n - 1] = True
                rows.append((call, n - 1 - len(draft), n - 1 if draft else None))
                outputs += [n - 1 - len(draft)] + ([n - 1] if draft else [])
        batch.n_tokens = n
        # Only the head's tokens are scored when every call of the step can do with them.
        narrow = self._tap is not None and all(c.head is not None for c in added)
        try:
            added[0].activate()
            if self._tap is not None:
                self._tap.on, self._tap.taken = narrow, 0
            code = llama_cpp.llama_decode(self._ctx, batch)
            if code != 0:
                raise RuntimeError(f"llama_decode failed with code {code} ({len(added)} "
                                   f"sequences, {n} tokens, {self.cells} KV cells)")
            if narrow and self._tap is not None and self._tap.taken != len(outputs):
                raise RuntimeError(f"the pass handed over {self._tap.taken} hidden states "
                                   f"for {len(outputs)} outputs")
        except Exception as exc:  # noqa: BLE001 - every call of the step gets it
            for call in added:
                call.loop.close()
                call.done.set_exception(exc)
                llama_cpp.llama_memory_seq_rm(self._memory, call.seq, -1, -1)
            return
        finally:
            if self._tap is not None:
                self._tap.on = False
        n_vocab = self.llama.n_vocab()
        self.narrow_steps += narrow

        def logits_at(call: _Call, row: int) -> Any:
            if narrow and call.head is not None and self._tap is not None:
                return call.head.logits(self._tap.hidden[outputs.index(row)])
            return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self._ctx, row),
                                         shape=(n_vocab,)).copy()

        for call, row, draft_row in rows:
            self._advance(call, logits_at(call, row) if draft_row is None else np.stack(
                [logits_at(call, row), logits_at(call, draft_row)]))


@atexit.register
def _stop_at_exit() -> None:
    # No stepping thread may be inside llama.cpp when the process tears the libraries
    # down. atexit runs handlers newest first: where this one runs before the router's
    # exit wait, the callers drive the shadow answers still due (the router can park its
    # thread between two steps); where after, the stepping thread finishes its step first.
    for batcher in list(_batchers):
        batcher.stop_stepping()
