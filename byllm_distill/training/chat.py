"""The base model's chat format: how a prompt is rendered for training and rebuilt for serving.

`render_prompt` puts messages through the tokenizer's chat template, ending where the
answer starts; `prompt_format` records the pieces (prefix, suffix, BOS, what follows an
answer) so the student runtime rebuilds exactly the text training saw without
transformers; `prompt_counter` counts a student prompt's tokens the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from byllm_distill.training import TrainingError

SYSTEM_PROMPT = ""
_SENTINEL = "\u2063BYLLM_DISTILL_PROMPT\u2063"


def message_text(content: Any) -> str:
    """The text of a chat message's content (a string, or a list of typed parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content
                       if isinstance(part, dict) and part.get("type", "text") == "text")
    return "" if content is None else json.dumps(content, ensure_ascii=False)


def render_prompt(tokenizer: Any, messages: list[dict[str, Any]]) -> str:
    """`messages` through the tokenizer's chat template, ending where the answer starts."""
    plain = [{"role": m.get("role", "user"), "content": message_text(m.get("content"))}
             for m in messages]
    if getattr(tokenizer, "chat_template", None):
        try:
            return tokenizer.apply_chat_template(plain, tokenize=False,
                                                 add_generation_prompt=True)
        except Exception as exc:  # noqa: BLE001 - jinja raises many types for odd roles
            raise TrainingError(f"the base model's chat template rejects these messages "
                                f"({type(exc).__name__}: {exc})") from exc
    text = "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in plain)
    return text + "<|assistant|>\n"


def answer_suffix(tokenizer: Any) -> str:
    """What the chat template writes after an assistant answer (e.g. `<|im_end|>`)."""
    if not getattr(tokenizer, "chat_template", None):
        return tokenizer.eos_token or ""
    probe = [{"role": "user", "content": "u"}]
    head = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(probe + [{"role": "assistant", "content": _SENTINEL}],
                                         tokenize=False)
    if not full.startswith(head) or _SENTINEL not in full:
        return tokenizer.eos_token or ""
    return full[full.index(_SENTINEL) + len(_SENTINEL):].rstrip("\n") or (
        tokenizer.eos_token or "")


def prompt_format(tokenizer: Any) -> dict[str, Any]:
    """How to rebuild the training prompt without transformers: prefix + compact + suffix.

    The student runtime uses this, so inference sees exactly the text training saw.
    """
    text = render_prompt(tokenizer, [{"role": "system", "content": SYSTEM_PROMPT},
                                     {"role": "user", "content": _SENTINEL}])
    prefix, _, suffix = text.partition(_SENTINEL)
    ids = tokenizer(prefix + "x", add_special_tokens=True)["input_ids"]
    bare = tokenizer(prefix + "x", add_special_tokens=False)["input_ids"]
    return {"prefix": prefix, "suffix": suffix, "add_bos": len(ids) > len(bare),
            "answer_suffix": answer_suffix(tokenizer), "system": SYSTEM_PROMPT}


def count_tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def prompt_counter(tokenizer: Any) -> Callable[[str], int]:
    """Tokens of the student's whole prompt around a compact prompt, as the trainer and the
    runtime tokenize it (prefix + compact + suffix, BOS when the template adds one)."""
    fmt = prompt_format(tokenizer)
    bos = 1 if fmt.get("add_bos") and tokenizer.bos_token_id is not None else 0

    def count(text: str) -> int:
        return bos + count_tokens(tokenizer, fmt["prefix"] + text + fmt["suffix"])
    return count
