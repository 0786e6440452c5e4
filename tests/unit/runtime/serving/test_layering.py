"""The engine, the scheduler and the service know nothing of HTTP (style: serving.engine never imports FastAPI)."""

from __future__ import annotations

import subprocess
import sys

HTTP_FREE = ("engine", "batching", "sampling", "service", "cache", "metrics", "quantize", "settings", "command")


def test_the_core_modules_import_no_web_framework() -> None:
    imports = "; ".join(f"import kubellm.runtime.serving.{name}" for name in HTTP_FREE)
    check = "import sys; print(sorted(m for m in ('fastapi', 'starlette', 'uvicorn') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", f"{imports}; {check}"], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
