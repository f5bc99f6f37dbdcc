"""Merge a LoRA adapter into its base, convert to GGUF and quantize.

The adapter is merged into the full-precision (fp32) base, never into a 4-bit one: merging
into nf4 weights damages the model. The merged Hugging Face folder goes through llama.cpp's
`convert_hf_to_gguf.py` (as a subprocess) to an f16 GGUF, which `llama_model_quantize`
(llama-cpp-python, in process) turns into Q4_K_M (default) or Q8_0.

Adapter serving (see bases.py): `export_adapter` turns the PEFT adapter itself into a LoRA
GGUF with llama.cpp's `convert_lora_to_gguf.py` (f16), and `base_gguf` converts and
quantizes the base alone, the same way and to the same quant as the merged model, once per
data dir and base (keyed by the base's name, its weights' hash and the quant).

The converters are not in the llama-cpp-python wheel, only in its sdist.
`prepare_converter()` fetches that sdist once with pip (the same version as the installed
wheel, from PyPI, no model hub involved), and keeps `convert_hf_to_gguf.py`,
`convert_lora_to_gguf.py`, `conversion/` and `gguf-py/` under
`<cache>/llama.cpp/llama-cpp-python-<version>/` (to a folder prepared before the LoRA
converter was kept, preparing again adds it). Setup scripts run it as

    python -m byllm_distill.training.export --prepare

An export run that finds no prepared converter raises `TrainingError` naming that command.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from byllm_distill.artifacts import sha256_file
from byllm_distill.training import TrainingError
from byllm_distill.training.base_model import BaseModelRef, cache_root, load_tokenizer

QUANT_TYPES = ("Q4_K_M", "Q4_0", "Q8_0", "F16")
CONVERTER = "convert_hf_to_gguf.py"
LORA_CONVERTER = "convert_lora_to_gguf.py"
# What the converters import from the llama.cpp tree; nothing else is kept.
_KEEP = (CONVERTER, LORA_CONVERTER, "conversion/", "gguf-py/", "LICENSE")
PREPARE_COMMAND = "python -m byllm_distill.training.export --prepare"


@dataclass(frozen=True)
class ExportResult:
    gguf: Path
    quant: str
    bytes: int
    seconds: float
    merge_seconds: float
    convert_seconds: float
    quantize_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"gguf": self.gguf.name, "quant": self.quant, "bytes": self.bytes,
                "seconds": round(self.seconds, 1), "merge_seconds": round(self.merge_seconds, 1),
                "convert_seconds": round(self.convert_seconds, 1),
                "quantize_seconds": round(self.quantize_seconds, 1),
                "converter": f"llama-cpp-python-{_llama_cpp_version()} sdist"}


def _llama_cpp_version() -> str:
    try:
        return version("llama-cpp-python")
    except PackageNotFoundError as exc:
        raise TrainingError("llama-cpp-python is not installed; run "
                            "`pip install 'byllm-distill[serve]'`.") from exc


def converter_dir() -> Path:
    return cache_root() / "llama.cpp" / f"llama-cpp-python-{_llama_cpp_version()}"


def converter_ready() -> bool:
    folder = converter_dir()
    return ((folder / CONVERTER).is_file() and (folder / LORA_CONVERTER).is_file()
            and (folder / "gguf-py" / "gguf").is_dir())


def prepare_converter(sdist: Path | None = None, force: bool = False) -> Path:
    """Make `convert_hf_to_gguf.py` available (see the module docstring); returns its folder.

    `sdist` uses a llama-cpp-python source archive already on disk instead of pip.
    """
    target = converter_dir()
    if converter_ready() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".prepare-") as tmp:
        work = Path(tmp)
        archive = Path(sdist) if sdist is not None else _download_sdist(work)
        staged = work / "llama.cpp"
        _extract(archive, staged)
        if force:
            shutil.rmtree(target, ignore_errors=True)
        if (target / CONVERTER).is_file():
            # Prepared before the LoRA converter was kept: add it, leave the rest in use.
            os.replace(staged / LORA_CONVERTER, target / LORA_CONVERTER)
        else:
            try:
                os.rename(staged, target)
            except OSError:
                if not converter_ready():
                    raise
    return target


def _download_sdist(work: Path) -> Path:
    wanted = _llama_cpp_version()
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           f"llama-cpp-python=={wanted}", "-d", str(work / "sdist")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    archives = sorted((work / "sdist").glob("llama_cpp_python-*.tar.gz"))
    if proc.returncode != 0 or not archives:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise TrainingError(
            f"cannot fetch the llama-cpp-python {wanted} sdist from PyPI (needed once for "
            f"its HF→GGUF converter):\n{tail}\nRun `{PREPARE_COMMAND}` where PyPI is "
            "reachable, or pass --sdist PATH to a downloaded llama_cpp_python-"
            f"{wanted}.tar.gz."
        )
    return archives[0]


def _extract(archive: Path, dest: Path) -> None:
    marker = "/vendor/llama.cpp/"
    try:
        with tarfile.open(archive) as tar:
            members = []
            for member in tar.getmembers():
                if marker not in member.name or not (member.isfile() or member.isdir()):
                    continue
                rel = member.name.split(marker, 1)[1]
                if rel.startswith(_KEEP):
                    member.name = rel
                    members.append(member)
            if not any(m.name == CONVERTER for m in members):
                raise TrainingError(f"{archive} has no vendor/llama.cpp/{CONVERTER}; use the "
                                    "llama-cpp-python sdist of the installed version.")
            tar.extractall(dest, members=members, filter="data")
    except (OSError, tarfile.TarError) as exc:
        raise TrainingError(f"cannot read {archive} ({exc}); rerun `{PREPARE_COMMAND}`.") from exc


def merge_adapter(base: BaseModelRef, adapter_dir: Path, out_dir: Path) -> Path:
    """Merge the adapter into the fp32 base and save a Hugging Face folder."""
    import torch

    from byllm_distill.training.trainer import load_adapter

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    model = load_adapter(base, adapter_dir, qlora=False).to("cpu", dtype=torch.float32)
    merged = model.merge_and_unload()
    merged.save_pretrained(out_dir)
    load_tokenizer(base).save_pretrained(out_dir)
    return out_dir


def _run_converter(script: str, args: list[str], out: Path, what: str) -> Path:
    if not converter_ready():
        raise TrainingError(f"the HF→GGUF converters are not prepared; run `{PREPARE_COMMAND}` "
                            "once (it fetches the llama-cpp-python sdist from PyPI).")
    folder = converter_dir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(folder / "gguf-py"), str(folder),
                                                       os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, str(folder / script), *args, "--outfile", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0 or not out.is_file():
        tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
        raise TrainingError(f"GGUF conversion of {what} failed (exit {proc.returncode}):\n"
                            f"{tail}")
    return out


def convert_to_gguf(hf_dir: Path, out: Path, outtype: str = "f16") -> Path:
    """Run llama.cpp's converter on a Hugging Face folder."""
    return _run_converter(CONVERTER, [str(hf_dir), "--outtype", outtype], out, str(hf_dir))


def export_adapter(base: BaseModelRef, adapter_dir: Path, out: Path) -> Path:
    """The PEFT adapter in `adapter_dir` as a LoRA GGUF (f16) for `base`'s architecture."""
    partial = out.with_name(out.name + ".partial")
    try:
        _run_converter(LORA_CONVERTER, [str(adapter_dir), "--base", str(base.path),
                                        "--outtype", "f16"], partial, str(adapter_dir))
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return out


def base_identity(base: BaseModelRef) -> str:
    """A hash of the base's weights: the GGUF it was converted from, else its folder's
    config and weight files."""
    if base.origin_sha256:
        return base.origin_sha256
    digest = hashlib.sha256()
    for path in sorted(base.path.iterdir()):
        if path.name == "config.json" or path.suffix in (".safetensors", ".bin"):
            digest.update(f"{path.name}:{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def base_gguf(base: BaseModelRef, data_dir: Path, quant: str = "Q4_K_M") -> dict[str, Any]:
    """The data dir's GGUF of `base` alone at `quant` (see bases.py), built on first use;
    returns what a version's manifest records of it (`adapter_serving.base`)."""
    from byllm_distill.bases import BASE_FILE, base_folder, file_sha256

    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(base.name).name)
    key = f"{name}-{base_identity(base)[:12]}-{quant}"
    folder = base_folder(data_dir, key)
    if not (folder / "base.json").is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{key}-") as tmp:
            staged = Path(tmp) / "base"
            staged.mkdir()
            f16 = convert_to_gguf(base.path, Path(tmp) / "base-f16.gguf")
            quantize(f16, staged / BASE_FILE, quant)
            (staged / "base.json").write_text(json.dumps(
                {"base_model": base.to_dict(), "quant": quant,
                 "sha256": sha256_file(staged / BASE_FILE),
                 "converter": f"llama-cpp-python-{_llama_cpp_version()} sdist"}, indent=2))
            try:
                os.rename(staged, folder)
            except OSError:  # another trainer built it first
                if not (folder / "base.json").is_file():
                    raise
    path = folder / BASE_FILE
    recorded = json.loads((folder / "base.json").read_text())["sha256"]
    if file_sha256(path) != recorded:
        raise TrainingError(f"the cached base GGUF {path} does not match its base.json "
                            f"(changed or corrupt); delete {folder} and train again.")
    return {"key": key, "quant": quant, "sha256": recorded, "bytes": path.stat().st_size}


def quantize(src: Path, dst: Path, quant: str = "Q4_K_M", threads: int = 2) -> Path:
    """`llama_model_quantize` from Python; F16 just copies."""
    if quant not in QUANT_TYPES:
        raise TrainingError(f"quant must be one of {', '.join(QUANT_TYPES)}, not {quant!r}.")
    if quant == "F16":
        shutil.copyfile(src, dst)
        return dst
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = {"Q4_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
                    "Q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0,
                    "Q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0}[quant]
    params.nthread = threads
    # llama.cpp writes a line per tensor straight to stderr; keep it for the error message.
    with tempfile.TemporaryFile() as log:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(log.fileno(), 2)
        try:
            status = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(),
                                                    ctypes.byref(params))
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        log.seek(0)
        tail = "\n".join(log.read().decode(errors="replace").strip().splitlines()[-5:])
    if status != 0 or not dst.is_file():
        raise TrainingError(f"quantizing {src} to {quant} failed (status {status}):\n{tail}")
    return dst


def export_gguf(base: BaseModelRef, adapter_dir: Path, out: Path, quant: str = "Q4_K_M",
                workdir: Path | None = None) -> ExportResult:
    """Adapter + base → merged fp32 folder → f16 GGUF → `out` quantized. Intermediates go in
    `workdir` (a temporary folder by default) and are removed."""
    if quant not in QUANT_TYPES:
        raise TrainingError(f"quant must be one of {', '.join(QUANT_TYPES)}, not {quant!r}.")
    if not converter_ready():
        raise TrainingError(f"the HF→GGUF converter is not prepared; run `{PREPARE_COMMAND}` "
                            "once (it fetches the llama-cpp-python sdist from PyPI).")
    out = Path(out)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=workdir, prefix="export-") as tmp:
        merged = merge_adapter(base, adapter_dir, Path(tmp) / "merged")
        merged_at = time.perf_counter()
        f16 = convert_to_gguf(merged, Path(tmp) / "model-f16.gguf")
        converted_at = time.perf_counter()
        partial = out.with_name(out.name + ".partial")
        try:
            quantize(f16, partial, quant)
            os.replace(partial, out)
        finally:
            partial.unlink(missing_ok=True)
    done = time.perf_counter()
    return ExportResult(out, quant, out.stat().st_size, done - started, merged_at - started,
                        converted_at - merged_at, done - converted_at)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m byllm_distill.training.export",
                                     description="Prepare llama.cpp's HF→GGUF converter.")
    parser.add_argument("--prepare", action="store_true",
                        help="fetch the llama-cpp-python sdist once and keep its converter")
    parser.add_argument("--sdist", type=Path, help="use this llama-cpp-python sdist file")
    parser.add_argument("--force", action="store_true", help="prepare again even if present")
    args = parser.parse_args(argv)
    if not args.prepare:
        parser.print_help()
        return 2
    try:
        folder = prepare_converter(args.sdist, force=args.force)
    except TrainingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"converter ready: {folder / CONVERTER}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
