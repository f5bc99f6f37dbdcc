"""Call-site identity: a stable key plus a fingerprint of the site's contract.

The key is `module.qualname`, exactly as byLLM names the site in its MTIR map; for the
program run as `__main__` the module is the main file's stem (`quests.make_npc`). The
fingerprint hashes the contract: parameter names and annotations, the return type's JSON
schema, the docstring and semstrings; types defined in the main program are named by its
stem too, so running a program and importing it give the same fingerprint. A changed
contract gives a new fingerprint, which marks students trained on the old one as stale.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import re
import sys
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from byllm_distill.serialize import dumps_canonical, to_jsonable


@dataclass(frozen=True)
class CallSite:
    key: str
    fingerprint: str
    contract: dict[str, Any]
    schema: dict[str, Any] | None


_cache: weakref.WeakKeyDictionary[Any, CallSite] = weakref.WeakKeyDictionary()


def main_module_name() -> str:
    """What the program run as `__main__` is called here: its file's stem (`quests` for
    `jac run quests.jac`), the name byLLM gives it and the one it has when imported."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if main_file:
        stem = Path(main_file).stem
        for suffix in (".impl", ".cl", ".sv"):
            stem = stem.removesuffix(suffix)
        return stem
    return Path(sys.argv[0]).stem if sys.argv and sys.argv[0] else "__main__"


def module_name(obj: Any) -> str:
    name = getattr(obj, "__module__", None)
    if not name:
        return "__main__"
    return main_module_name() if name == "__main__" else name


def site_key(func: Any) -> str:
    return f"{module_name(func)}.{getattr(func, '__qualname__', repr(func))}"


def _type_name(annotation: Any) -> str:
    """A type as it appears in the contract. Types defined in the program run as `__main__`
    are named by the main file's stem, as site keys are, so `jac run rpg.jac` and
    `import rpg` give one fingerprint (`rpg.Map`, not `__main__.Map`)."""
    if annotation is inspect.Parameter.empty:
        return ""
    if isinstance(annotation, type):
        return f"{module_name(annotation)}.{annotation.__qualname__}"
    text = str(annotation)  # generics and unions: `list[__main__.Map]`, `__main__.Map | None`
    if "__main__." in text:
        text = re.sub(r"(?<![\w.])__main__\.", f"{main_module_name()}.", text)
    return text


def _semstrings(ir_info: Any) -> dict[str, Any]:
    if ir_info is None:
        return {}
    params = [{"name": getattr(p, "name", ""), "semstr": getattr(p, "semstr", "") or ""}
              for p in getattr(ir_info, "params", []) or []]
    ret = getattr(ir_info, "return_type", None)
    return {"params": params, "semstr": getattr(ir_info, "semstr", "") or "",
            "return": str(getattr(ret, "semstr", "") or "") if ret is not None else ""}


def describe(mt_run: Any) -> CallSite:
    """The call site of a byLLM `MTRuntime`, cached per function object."""
    mtir = mt_run.mtir
    caller = mtir.caller
    func = getattr(caller, "__func__", caller)
    try:
        cached = _cache.get(func)
    except TypeError:
        cached = None
    if cached is not None:
        return cached
    try:
        signature = inspect.signature(func)
        params = [[name, _type_name(p.annotation)] for name, p in signature.parameters.items()]
    except (TypeError, ValueError):
        params = []
    schema = mt_run.get_typed_output_schema()
    resp_type = mt_run.resp_type
    contract = {
        "params": params,
        "returns": _type_name(resp_type) if resp_type is not None else "",
        "schema": to_jsonable(schema) if schema is not None else None,
        "doc": inspect.getdoc(func) or "",
        "semstrings": to_jsonable(_semstrings(getattr(mtir, "ir_info", None))),
    }
    fingerprint = hashlib.sha256(dumps_canonical(contract).encode()).hexdigest()[:16]
    site = CallSite(key=site_key(caller), fingerprint=fingerprint, contract=contract,
                    schema=contract["schema"])
    with contextlib.suppress(TypeError):
        _cache[func] = site
    return site


def fresh_run(mt_run: Any) -> Any:
    """A new MTRuntime for the same call (same caller, arguments and call params)."""
    from byllm.mtir import MTIR

    mtir = mt_run.mtir
    return MTIR(caller=mtir.caller, args=mtir.args, call_params=mtir.call_params,
                ir_info=mtir.ir_info).runtime
