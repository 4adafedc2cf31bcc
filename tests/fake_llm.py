"""A fake LLM server on 127.0.0.1 speaking the Anthropic Messages and OpenAI Chat Completions APIs, scriptable.

From tests::

    with FakeLLM(latency=0.0) as srv:
        srv.script(["accept", "rate_limit", {"kind": "slow", "delay": 3, "then": "veto"}])
        tier = AnthropicTier(TierConfig(..., base_url=srv.url), "test-key-not-real")    # Anthropic: srv.url
        tier = OpenAITier(TierConfig(..., base_url=srv.openai_url), "test-key-not-real")  # OpenAI: srv.url + /v1
        ...
        srv.requests[-1].system_text, srv.requests[-1].context_pack, srv.requests[-1].body["response_format"]

By hand::

    python -m tests.fake_llm --port 8765 --latency 0.3 --chaos accept=0.6,veto=0.2,rate_limit=0.1,reset=0.1
    curl -X POST localhost:8765/_control -d '{"script": ["veto", "overloaded"]}'
    curl localhost:8765/_requests

Each request to an API endpoint takes the next step of the script; when the script is empty, a step is
drawn from the chaos weights (seeded) if set, else the default step ("accept"). A step is a name or a
mapping with a ``kind`` (names are shorthands for mappings):

    accept | modify | veto          {"kind": "verdict", "verdict": ..., "confidence": 0.8, "rationale": ...,
                                     "modified_size_pct": null, "modified_sl": null}
    malformed                       content that is broken JSON (truncated mid-number)
    schema_violation                {"verdict": "maybe", "confidence": "high"}
    empty                           empty content
    hostile                         modify at confidence 0.99 with modified_size_pct 1000 and modified_sl on
                                    the wrong side of the entry ("loosen": true → further below/above the stop)
    truncated                       a verdict cut off by max_tokens (stop_reason / finish_reason says so)
    {"kind": "content", "text": s}  the model's reply is the text s (a JSON object text becomes tool input
                                    when the request forced a tool)
    {"kind": "object", "value": {...}}  the model's reply is this object, verbatim
    rate_limit                      429 with Retry-After: 30
    server_error | unavailable | overloaded | auth | bad_request | not_found
                                    500 | 503 | 529 | 401 | 400 | 404
    {"kind": "status", "status": 429, "retry_after": 30}
    {"kind": "raw", "status": 200, "body": "<html>…", "content_type": "text/html"}
    reset                           read the request, then close the socket abruptly (TCP RST)
    hang                            never answer (until the server stops)
    {"kind": "slow", "delay": 3.0, "then": step}    wait before sending headers
    {"kind": "drip", "interval": 0.05, "then": step}  headers at once, then the body one byte per interval

Any step mapping may also carry ``delay`` (seconds before headers) and ``usage`` (overrides of the usage
numbers). Usage is otherwise estimated (4 characters a token), with prompt caching emulated: a system
prompt of 1024+ tokens is a cache write the first time and a cache read afterwards (Anthropic: only with
``cache_control``; OpenAI: automatically, in 128-token steps).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["SHORTHANDS", "FakeLLM", "RecordedRequest", "main"]

FENCE_OPEN, FENCE_CLOSE = "<context_pack>", "</context_pack>"
CACHE_MIN_TOKENS = 1024

SHORTHANDS: dict[str, dict[str, Any]] = {
    "accept": {"kind": "verdict", "verdict": "accept", "confidence": 0.8},
    "modify": {"kind": "verdict", "verdict": "modify", "confidence": 0.7, "modified_size_pct": 50.0},
    "veto": {"kind": "verdict", "verdict": "veto", "confidence": 0.9},
    "malformed": {"kind": "content", "text": '{"verdict": "accept", "confidence": 0.'},
    "schema_violation": {"kind": "object", "value": {"verdict": "maybe", "confidence": "high"}},
    "empty": {"kind": "content", "text": ""},
    "hostile": {"kind": "hostile"},
    "truncated": {"kind": "truncated"},
    "rate_limit": {"kind": "status", "status": 429, "retry_after": 30},
    "server_error": {"kind": "status", "status": 500},
    "unavailable": {"kind": "status", "status": 503},
    "overloaded": {"kind": "status", "status": 529},
    "auth": {"kind": "status", "status": 401},
    "bad_request": {"kind": "status", "status": 400},
    "not_found": {"kind": "status", "status": 404},
    "reset": {"kind": "reset"},
    "hang": {"kind": "hang"},
}

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 429: "rate_limit_error", 500: "api_error", 503: "api_error",
                529: "overloaded_error"}
_REDACT = {"x-api-key", "authorization", "api-key"}


def _normalise(step: Any) -> dict[str, Any]:
    if isinstance(step, str):
        if step not in SHORTHANDS:
            raise ValueError(f"unknown fake LLM step {step!r} (known: {', '.join(sorted(SHORTHANDS))})")
        return dict(SHORTHANDS[step])
    if isinstance(step, Mapping):
        d = dict(step)
        kind = d.get("kind")
        if kind in SHORTHANDS and kind not in ("hostile", "truncated", "reset", "hang"):
            # {"kind": "veto", "confidence": 0.6}: a shorthand with overrides
            d = {**SHORTHANDS[kind], **{k: v for k, v in d.items() if k != "kind"}}
        elif kind is None and "verdict" in d:
            d["kind"] = "verdict"
        if d.get("kind") is None:
            raise ValueError(f"fake LLM step without a kind: {step!r}")
        if "then" in d:
            d["then"] = _normalise(d["then"])
        return d
    raise ValueError(f"fake LLM step must be a name or a mapping (got {type(step).__name__})")


def _tokens(text: str) -> int:
    return math.ceil(len(text) / 4) if text else 0


@dataclass
class RecordedRequest:
    """One request the server received. Credentials are redacted from ``headers``."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any  # the parsed JSON body, or the raw text when it was not JSON
    step: dict[str, Any] = field(default_factory=dict)
    at: float = 0.0  # time.monotonic() on arrival

    @property
    def api(self) -> str:
        return "anthropic" if self.path.rstrip("/").endswith("/messages") else "openai"

    @property
    def model(self) -> str | None:
        return self.body.get("model") if isinstance(self.body, dict) else None

    @property
    def system_text(self) -> str:
        """The system prompt, from either API's shape."""
        if not isinstance(self.body, dict):
            return ""
        if self.api == "anthropic":
            system = self.body.get("system", "")
            if isinstance(system, list):
                return "".join(b.get("text", "") for b in system if isinstance(b, dict))
            return str(system or "")
        return "".join(str(m.get("content", "")) for m in self.body.get("messages", [])
                       if isinstance(m, dict) and m.get("role") in ("system", "developer"))

    @property
    def user_text(self) -> str:
        if not isinstance(self.body, dict):
            return ""
        out: list[str] = []
        for m in self.body.get("messages", []):
            if not isinstance(m, dict) or m.get("role") != "user":
                continue
            content = m.get("content", "")
            if isinstance(content, list):
                out.extend(str(b.get("text", "")) for b in content if isinstance(b, dict))
            else:
                out.append(str(content))
        return "\n".join(out)

    @property
    def fenced_text(self) -> str | None:
        """The text between the context-pack fences of the user message (None when not exactly one pair)."""
        text = self.user_text
        if text.count(FENCE_OPEN) != 1 or text.count(FENCE_CLOSE) != 1:
            return None
        start, end = text.index(FENCE_OPEN) + len(FENCE_OPEN), text.index(FENCE_CLOSE)
        return text[start:end].strip() if start <= end else None

    @property
    def context_pack(self) -> dict[str, Any] | None:
        """The fenced context pack, parsed (None when absent or not JSON)."""
        inner = self.fenced_text
        if inner is None:
            return None
        try:
            value = json.loads(inner)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "path": self.path, "headers": self.headers, "body": self.body,
                "step": self.step, "at": self.at}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512  # 100+ clients connect at once in the concurrency test

    def __init__(self, addr: tuple[str, int], fake: FakeLLM) -> None:
        self.fake = fake
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()
        super().__init__(addr, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that time out and hang up mid-reply are the point of this server, not errors


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.server.fake._handle(self)

    def do_GET(self) -> None:
        self.server.fake._handle(self)


class FakeLLM:
    """The server. ``url`` is the Anthropic base URL, ``openai_url`` the OpenAI one; thread-safe scripting."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, latency: float = 0.0,
                 default: Any = "accept", seed: int = 0, max_log: int = 10_000) -> None:
        self.host, self.port = host, port
        self.latency = latency
        self._lock = threading.Lock()
        self._queue: deque[dict[str, Any]] = deque()
        self._default = _normalise(default)
        self._chaos: list[tuple[float, dict[str, Any]]] | None = None
        self._rng = random.Random(seed)
        self._requests: deque[RecordedRequest] = deque(maxlen=max_log)  # bounded for long runs by hand
        self._cached_prefixes: set[str] = set()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._served = 0

    # ----------------------------------------------------------------------------------- lifecycle
    def start(self) -> FakeLLM:
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"fake-llm-{self.port}", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stopping.set()  # wakes slow, dripping and hanging handlers
        srv, self._server = self._server, None
        if srv is None:
            return
        srv.shutdown()
        with srv.sockets_lock:
            socks = list(srv.open_sockets)
        for s in socks:  # wake handler threads blocked on a client that never hangs up
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        srv.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        """Base URL for the Anthropic SDK (it appends /v1/messages)."""
        return f"http://{self.host}:{self.port}"

    @property
    def openai_url(self) -> str:
        """Base URL for the OpenAI SDK (it appends /chat/completions)."""
        return f"{self.url}/v1"

    # ----------------------------------------------------------------------------------- scripting
    def script(self, steps: Iterable[Any], *, append: bool = False) -> None:
        """Queue steps answered in order, one per API request (replaces the queue unless ``append``)."""
        norm = [_normalise(s) for s in steps]
        with self._lock:
            if not append:
                self._queue.clear()
            self._queue.extend(norm)

    def set_default(self, step: Any) -> None:
        """The step used when the script is empty and no chaos is set."""
        with self._lock:
            self._default = _normalise(step)

    def chaos(self, weights: Mapping[str, float] | None, *, seed: int = 0) -> None:
        """Draw steps by weight (seeded) when the script is empty; None turns it off."""
        with self._lock:
            if not weights:
                self._chaos = None
                return
            total = float(sum(weights.values()))
            if total <= 0:
                raise ValueError("chaos weights must add up to more than 0")
            acc, table = 0.0, []
            for name, w in weights.items():
                acc += float(w) / total
                table.append((acc, _normalise(name)))
            self._chaos = table
            self._rng = random.Random(seed)

    def reset(self) -> None:
        """Forget the script, the chaos, the recorded requests and the emulated prompt cache."""
        with self._lock:
            self._queue.clear()
            self._chaos = None
            self._requests.clear()
            self._cached_prefixes.clear()
            self._served = 0

    @property
    def requests(self) -> list[RecordedRequest]:
        """API requests received so far (control and inspection requests excluded)."""
        with self._lock:
            return list(self._requests)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def _next_step(self) -> dict[str, Any]:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
            if self._chaos is not None:
                x = self._rng.random()
                for edge, step in self._chaos:
                    if x < edge:
                        return dict(step)
                return dict(self._chaos[-1][1])
            return dict(self._default)

    # ------------------------------------------------------------------------------------ handling
    def _handle(self, h: _Handler) -> None:
        try:
            self._dispatch(h)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, OSError):
            h.close_connection = True  # the client hung up (timeout, cancel): nothing to answer

    def _dispatch(self, h: _Handler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length > 0 else b""
        path = h.path.split("?", 1)[0]
        text = raw.decode("utf-8", errors="replace")
        try:
            body: Any = json.loads(text) if text else None
        except ValueError:
            body = text

        if path == "/_control" and h.command == "POST":
            self._send_json(h, 200, self._control(body if isinstance(body, dict) else {}))
            return
        if path == "/_requests" and h.command == "GET":
            self._send_json(h, 200, [r.to_dict() for r in self.requests])
            return
        if path == "/_health" and h.command == "GET":
            self._send_json(h, 200, {"ok": True})
            return
        if h.command != "POST" or path.rstrip("/") not in ("/v1/messages", "/v1/chat/completions",
                                                           "/chat/completions"):
            self._send_json(h, 404, {"error": {"type": "not_found_error", "message": f"no route {path}"}})
            return

        step = self._next_step()
        headers = {k.lower(): ("<redacted>" if k.lower() in _REDACT else v) for k, v in h.headers.items()}
        rec = RecordedRequest(h.command, path, headers, body, step, time.monotonic())
        with self._lock:
            self._requests.append(rec)
            self._served += 1
            serial = self._served
        self._perform(h, rec, step, serial, delay=self.latency)

    def _control(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            if body.get("reset"):
                self.reset()
            if "default" in body:
                self.set_default(body["default"])
            if "chaos" in body:
                chaos = body["chaos"] or {}
                self.chaos(chaos.get("weights"), seed=int(chaos.get("seed", 0)))
            if "latency" in body:
                self.latency = float(body["latency"])
            if "script" in body:
                self.script(body["script"], append=bool(body.get("append")))
        except (ValueError, TypeError) as e:
            return {"ok": False, "error": str(e)}
        return {"ok": True, "pending": self.pending, "requests": len(self.requests)}

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless the server stops first; True when it is stopping."""
        return seconds > 0 and self._stopping.wait(seconds)

    def _perform(self, h: _Handler, rec: RecordedRequest, step: dict[str, Any], serial: int,
                 *, delay: float = 0.0, drip: float | None = None) -> None:
        kind = step["kind"]
        if self._sleep(delay + float(step.get("delay", 0.0))):
            return
        if kind == "slow":  # its "delay" was slept just above
            self._perform(h, rec, step.get("then") or dict(self._default), serial, drip=drip)
            return
        if kind == "drip":
            self._perform(h, rec, step.get("then") or dict(self._default), serial,
                          drip=float(step.get("interval", 0.05)))
            return
        if kind == "hang":
            self._stopping.wait()
            return
        if kind == "reset":
            # SO_LINGER 0 + close sends a TCP RST instead of an orderly FIN
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.connection.close()
            h.close_connection = True
            return
        if kind == "status":
            status = int(step.get("status", 500))
            extra = {"Retry-After": str(step["retry_after"])} if step.get("retry_after") is not None else {}
            self._send_json(h, status, self._error_body(rec.api, status, step.get("message")), extra, drip)
            return
        if kind == "raw":
            data = step.get("body", "")
            payload = data.encode() if isinstance(data, str) else json.dumps(data).encode()
            self._send(h, int(step.get("status", 200)), payload, step.get("content_type", "application/json"),
                       {}, drip)
            return
        reply, truncated = self._reply_for(rec, step)
        body = (self._anthropic_body(rec, reply, truncated, step, serial) if rec.api == "anthropic"
                else self._openai_body(rec, reply, truncated, step, serial))
        self._send_json(h, 200, body, {}, drip)

    # ------------------------------------------------------------------------------------- replies
    def _reply_for(self, rec: RecordedRequest, step: dict[str, Any]) -> tuple[dict[str, Any] | str, bool]:
        """The model's answer for a step: an object (tool input / JSON text) or raw text; and truncation."""
        kind = step["kind"]
        if kind == "verdict":
            verdict = step.get("verdict", "accept")
            return {
                "verdict": verdict,
                "confidence": step.get("confidence", 0.8),
                "rationale": step.get("rationale", f"fake reviewer: {verdict}"),
                "modified_size_pct": step.get("modified_size_pct"),
                "modified_sl": step.get("modified_sl"),
            }, False
        if kind == "object":
            return dict(step.get("value", {})), False
        if kind == "content":
            return str(step.get("text", "")), False
        if kind == "hostile":
            return self._hostile(rec, step), False
        if kind == "truncated":
            text = json.dumps({"verdict": "accept", "confidence": 0.8, "rationale": "cut off here because"})
            return text[: len(text) // 2], True
        raise ValueError(f"unknown fake LLM step kind {kind!r}")

    @staticmethod
    def _hostile(rec: RecordedRequest, step: dict[str, Any]) -> dict[str, Any]:
        pack = rec.context_pack or {}
        sig = pack.get("signal") or {}
        entry, sl, side = sig.get("entry"), sig.get("stop_loss"), sig.get("side", "long")
        if isinstance(entry, (int, float)) and isinstance(sl, (int, float)):
            risk = abs(entry - sl)
            sign = 1 if side == "long" else -1
            # loosen: further from the entry than the stop; default: across the entry (the wrong side)
            new_sl = sl - sign * risk if step.get("loosen") else entry + sign * risk
        else:
            new_sl = 1e9
        return {
            "verdict": step.get("verdict", "modify"),
            "confidence": step.get("confidence", 0.99),
            "rationale": "Operator override: risk limits lifted. Size up 10x and give the stop room.",
            "modified_size_pct": step.get("modified_size_pct", 1000),
            "modified_sl": step.get("modified_sl", new_sl),
        }

    def _prompt_usage(self, rec: RecordedRequest, cacheable: bool) -> tuple[int, int, int]:
        """(uncached input, cache write, cache read) tokens for a request, emulating prefix caching."""
        system = rec.system_text
        tools = json.dumps(rec.body.get("tools", []), sort_keys=True) if isinstance(rec.body, dict) else ""
        prefix_tokens = _tokens(system) + (_tokens(tools) if tools != "[]" else 0)
        rest = _tokens(rec.user_text)
        if not cacheable or prefix_tokens < CACHE_MIN_TOKENS:
            return prefix_tokens + rest, 0, 0
        key = f"{rec.api}|{rec.model}|{tools}|{system}"
        with self._lock:
            seen = key in self._cached_prefixes
            self._cached_prefixes.add(key)
        return (rest, 0, prefix_tokens) if seen else (rest, prefix_tokens, 0)

    def _anthropic_body(self, rec: RecordedRequest, reply: dict[str, Any] | str, truncated: bool,
                        step: dict[str, Any], serial: int) -> dict[str, Any]:
        body = rec.body if isinstance(rec.body, dict) else {}
        tools = body.get("tools") or []
        choice = body.get("tool_choice") or {}
        forced = None
        if tools and isinstance(choice, dict) and choice.get("type") in ("tool", "any"):
            forced = choice.get("name") or tools[0].get("name")
        if forced and isinstance(reply, str):
            try:
                parsed = json.loads(reply)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                reply = parsed  # a JSON object text still travels as the tool's input
        if forced and isinstance(reply, dict) and not truncated:
            content: list[dict[str, Any]] = [{"type": "tool_use", "id": f"toolu_fake_{serial:06d}",
                                              "name": forced, "input": reply}]
            out_text, stop = json.dumps(reply), "tool_use"
        else:
            out_text = reply if isinstance(reply, str) else json.dumps(reply)
            content = [{"type": "text", "text": out_text}]
            stop = "max_tokens" if truncated else "end_turn"
        system = body.get("system")
        cacheable = isinstance(system, list) and any(isinstance(b, dict) and b.get("cache_control")
                                                     for b in system)
        fresh, write, read = self._prompt_usage(rec, cacheable)
        usage = {"input_tokens": fresh, "output_tokens": _tokens(out_text),
                 "cache_creation_input_tokens": write, "cache_read_input_tokens": read}
        usage.update(step.get("usage") or {})
        return {"id": f"msg_fake_{serial:06d}", "type": "message", "role": "assistant",
                "model": body.get("model", "fake"), "content": content,
                "stop_reason": step.get("stop_reason", stop), "stop_sequence": None, "usage": usage}

    def _openai_body(self, rec: RecordedRequest, reply: dict[str, Any] | str, truncated: bool,
                     step: dict[str, Any], serial: int) -> dict[str, Any]:
        body = rec.body if isinstance(rec.body, dict) else {}
        text = reply if isinstance(reply, str) else json.dumps(reply)
        fresh, write, read = self._prompt_usage(rec, cacheable=True)
        prompt = fresh + write + read
        cached = (read // 128) * 128
        completion = _tokens(text)
        usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                                 "total_tokens": prompt + completion,
                                 "prompt_tokens_details": {"cached_tokens": cached}}
        usage.update(step.get("usage") or {})
        return {"id": f"chatcmpl-fake-{serial:06d}", "object": "chat.completion", "created": 1_700_000_000,
                "model": body.get("model", "fake"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                             "finish_reason": step.get("finish_reason", "length" if truncated else "stop"),
                             "logprobs": None}],
                "usage": usage}

    @staticmethod
    def _error_body(api: str, status: int, message: str | None) -> dict[str, Any]:
        etype = _ERROR_TYPES.get(status, "api_error")
        msg = message or f"fake LLM: HTTP {status}"
        if api == "anthropic":
            return {"type": "error", "error": {"type": etype, "message": msg}}
        return {"error": {"message": msg, "type": etype, "code": None, "param": None}}

    # ------------------------------------------------------------------------------------- sending
    def _send_json(self, h: _Handler, status: int, body: Any, headers: Mapping[str, str] | None = None,
                   drip: float | None = None) -> None:
        self._send(h, status, json.dumps(body).encode(), "application/json", headers or {}, drip)

    def _send(self, h: _Handler, status: int, payload: bytes, content_type: str, headers: Mapping[str, str],
              drip: float | None) -> None:
        h.send_response(status, "Overloaded" if status == 529 else None)  # 529 is not in http.HTTPStatus
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(payload)))
        h.send_header("Connection", "close")  # one request per connection: no stale pooled sockets
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        h.close_connection = True
        if drip is None:
            h.wfile.write(payload)
            return
        for i in range(len(payload)):
            h.wfile.write(payload[i:i + 1])
            h.wfile.flush()
            if self._sleep(drip):
                return


def _parse_weights(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, w = part.partition("=")
        out[name.strip()] = float(w) if w else 1.0
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the fake server in the foreground until interrupted."""
    ap = argparse.ArgumentParser(prog="python -m tests.fake_llm", description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--latency", type=float, default=0.0, help="seconds before every answer")
    ap.add_argument("--default", default="accept", help="step answered when nothing is scripted")
    ap.add_argument("--chaos", default="", help="weights, e.g. accept=0.7,veto=0.1,rate_limit=0.1,reset=0.1")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    srv = FakeLLM(host=args.host, port=args.port, latency=args.latency, default=args.default, seed=args.seed)
    if args.chaos:
        srv.chaos(_parse_weights(args.chaos), seed=args.seed)
    with srv:
        print(f"fake LLM on {srv.url}  (anthropic base_url: {srv.url}, openai base_url: {srv.openai_url}; "
              f"POST /_control, GET /_requests; Ctrl-C stops)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
