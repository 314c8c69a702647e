"""The public surface: the names ``import stagewatch`` exports, and that the SDK imports with only its
own dependencies (httpx, psutil) when the server's are missing."""

from __future__ import annotations

import json
import subprocess
import sys

import stagewatch

SERVER_DEPENDENCIES = [
    "fastapi", "sqlalchemy", "pydantic", "orjson", "rich", "click", "uvicorn", "alembic", "psycopg",
    "starlette", "jinja2", "prometheus_client",
]  # fmt: skip


def test_the_public_names() -> None:
    assert sorted(stagewatch.__all__) == [
        "Aborted", "AsyncClient", "Cancelled", "Client", "DeadLettered", "Run", "Skip", "Wait",
        "__version__", "current_run",
    ]  # fmt: skip
    for name in stagewatch.__all__:
        assert getattr(stagewatch, name) is not None
    assert issubclass(stagewatch.Cancelled, Exception)
    wait = stagewatch.Wait(30, "concurrency account:42 3/3")
    assert (wait.retry_after, wait.reason) == (30, "concurrency account:42 3/3")


BLOCKED_IMPORT = """
import importlib, json, pkgutil, sys

BLOCKED = set(json.loads(sys.argv[1]))

class Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not installed")
        return None

sys.meta_path.insert(0, Missing())
import stagewatch
import stagewatch.sdk
for module in pkgutil.walk_packages(stagewatch.sdk.__path__, "stagewatch.sdk."):
    importlib.import_module(module.name)
client = stagewatch.Client("http://127.0.0.1:9", spool_dir=False, timeout=0.2)
with client.stage("download", "v-1") as run:
    run.progress(0.5)
    assert stagewatch.current_run() is run
client.close(timeout=0.5)
loaded = sorted({m.split(".")[0] for m in sys.modules} & BLOCKED)
server_side = sorted(
    m for m in sys.modules if m.startswith("stagewatch.") and not m.startswith("stagewatch.sdk")
)
print(json.dumps({"loaded": loaded, "server_side": server_side}))
"""


def test_the_sdk_imports_and_works_without_the_servers_dependencies() -> None:
    done = subprocess.run(
        [sys.executable, "-c", BLOCKED_IMPORT, json.dumps(SERVER_DEPENDENCIES)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"loaded": [], "server_side": []}
