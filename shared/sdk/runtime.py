"""State of the task running in this process (set by the worker's task runner)."""

from __future__ import annotations

from typing import Any

current_context: dict[str, Any] | None = None
