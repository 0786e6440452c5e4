"""The app's state: settings, metrics, and the generation service once the model is loaded."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from kubellm.runtime.serving.errors import NotReadyError
from kubellm.runtime.serving.metrics import ServerMetrics
from kubellm.runtime.serving.service import GenerationService
from kubellm.runtime.serving.settings import ServerSettings

__all__ = ["ServerState"]


@dataclass
class ServerState:
    """What every request handler reads; ``service`` is None until the model is loaded."""

    settings: ServerSettings
    metrics: ServerMetrics
    service: GenerationService | None = None
    load_error: str | None = None
    started_at: float = field(default_factory=time.time)

    def ready_service(self) -> GenerationService:
        """The service, or NotReadyError while the model loads (or after it failed to)."""
        if self.service is not None:
            return self.service
        if self.load_error is not None:
            raise NotReadyError(f"the model failed to load: {self.load_error}")
        raise NotReadyError("the model is still loading; retry shortly")
