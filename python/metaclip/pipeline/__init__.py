"""The curation pipeline (spec §7): read → (LID) → match → count → balance → sample →
write subset + datacard + report.

``Config`` (``config.py``) holds a run's settings and ``Engine`` (``engine.py``) runs them
on this machine; ``ray_engine.RayEngine`` runs the same stages on a Ray cluster. Both are
imported on first use, so importing this package stays cheap (the CLI sets up Arrow's
allocator before pyarrow loads).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metaclip.pipeline.config import Config
    from metaclip.pipeline.engine import Engine

__all__ = ["Config", "Engine"]


def __getattr__(name: str) -> Any:
    if name == "Config":
        from metaclip.pipeline.config import Config

        return Config
    if name == "Engine":
        from metaclip.pipeline.engine import Engine

        return Engine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
