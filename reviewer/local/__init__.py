"""A local model for the ``openai_compatible`` tier: install it (``install``), serve it (``server``).

Stdlib only at import time: llama-cpp-python is imported by the server process, never by tradevet.
"""

from __future__ import annotations

from reviewer.local.models import DEFAULT_MODEL, MODELS, LocalModel, cache_dir, read_gguf_metadata
from reviewer.local.server import DEFAULT_PORT, MODEL_ALIAS, LocalServer, ServerError, ServerSettings

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_PORT",
    "MODELS",
    "MODEL_ALIAS",
    "LocalModel",
    "LocalServer",
    "ServerError",
    "ServerSettings",
    "cache_dir",
    "read_gguf_metadata",
]
