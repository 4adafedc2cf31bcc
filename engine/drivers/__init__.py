"""What drives the pipeline: ``Replay`` (a finite feed on a simulated clock, as fast as possible), ``PaperLoop``
(closed bars from an exchange, one step per bar close), ``catch_up`` (resuming a recorded run) and the
operations metrics both expose."""

from __future__ import annotations

from engine import lazy

_EXPORTS = {
    "Replay": "replay", "RecordBatch": "replay", "fills_fingerprint": "replay",
    "PaperLoop": "live", "SliceSink": "live",
    "RecordedReviewer": "resume", "catch_up": "resume", "group_slices": "resume",
    "Metrics": "metrics",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy(__name__, _EXPORTS)
