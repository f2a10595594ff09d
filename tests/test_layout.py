"""The shape of the code: functions a reader can hold in mind, no import circle, a public API."""

import ast
from pathlib import Path

import pytest

import ted
from ted.testing.classroom import Classroom, problems

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted([*(ROOT / "ted").rglob("*.py"), *(ROOT / "server").rglob("*.py")])
MAX_FUNCTION_LINES = 80


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    parts[0] = "ted_server" if parts[0] == "server" else parts[0]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_function_is_longer_than_a_screen():
    long = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path in SOURCES
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, long


def test_no_module_imports_itself_through_others():
    modules = {module_name(path): path for path in SOURCES}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base])
                targets |= {base} | {f"{base}.{alias.name}" for alias in node.names}
        # A package's __init__ re-exporting its modules is not a dependency of those modules on it.
        graph[name] = {t for t in targets if t in modules and not (t == package and path.name != "__init__.py")}
        graph[name] -= {n for n in graph[name] if name.startswith(n + ".")}

    def cycle_from(start: str, node: str, seen: list[str]) -> list[str] | None:
        for nxt in sorted(graph[node]):
            if nxt == start:
                return [*seen, nxt]
            if nxt not in seen:
                if found := cycle_from(start, nxt, [*seen, nxt]):
                    return found
        return None

    for name in modules:
        assert (found := cycle_from(name, name, [name])) is None, " → ".join(found)


def test_the_public_api_resolves_and_runs_the_readme_sequence(tmp_path):
    """The "Use it as a library" section of the README, with the classroom's models."""
    for name in ted.__all__:
        assert getattr(ted, name) is not None, name
    classroom = Classroom()
    models = classroom.models()

    async def main() -> None:
        async with ted.Store.open(tmp_path / "ted.db") as store:
            await ted.add_experience(store, "arith", "Write the units of every quantity before combining them.")
            attempt = await ted.record_attempt(
                store,
                library="arith",
                task="What is 12 - 3?",
                trajectory="12 - 3 = 8 [E1]",
                answer="8",
                ground_truth="9",
            )
            assert attempt.correct is False and attempt.counted_ids == ["E1"]
            teacher = models(classroom.teacher)
            critique = await ted.critique_task(store, ted.Ledger(store), teacher, "arith", attempt.task_id)
            assert critique.operations

            data = await ted.dataset_from_items(problems(6))
            prepared = await ted.prepare_job(
                store, models, data, library="arith", student=classroom.student, teacher=teacher.name, epochs=1
            )
            job = await ted.create_job(store, prepared)
            finished = await ted.run_job(store, ted.Ledger(store), models, job.id)
            assert finished.state == "done"
            assert "For multiplication" in (await ted.get_experiences(store, "arith")).prompt

    import anyio

    anyio.run(main)


@pytest.mark.parametrize("module", ["ted", "ted_server"])
def test_importing_stays_light(module):
    import subprocess
    import sys

    heavy = ["numpy", "matplotlib", "math_verify", "sympy", "anthropic", "openai"]
    code = f"import sys, {module}; print([m for m in {heavy!r} if m in sys.modules])"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_the_installed_dashboard_has_every_template_and_static_file():
    """Under a non-editable install (CI's `pip install .`) `ted.ui` is the installed copy: the
    package data in pyproject.toml must ship every file the source tree has."""
    from importlib.resources import files

    installed = files("ted.ui")
    for folder in ("templates", "static"):
        names = sorted(p.name for p in (ROOT / "ted" / "ui" / folder).iterdir() if p.is_file())
        assert names and all((installed / folder / name).is_file() for name in names), folder


SDK_LOADED_AFTER_LISTING = """
import os, sys, tempfile, anyio
from mcp import Client
from ted_server.app import build_server

async def main():
    async with Client(build_server(tempfile.mktemp())) as client:
        first = "openai" in sys.modules
        await client.list_tools()
        with anyio.fail_after(30):
            while "openai" not in sys.modules:
                await anyio.sleep(0.02)
        print(first, "anthropic" in sys.modules)

anyio.run(main)
"""


def test_the_configured_providers_sdk_loads_after_the_first_tool_listing(tmp_path):
    """Not at start (it would slow the first reply), but before a first job or critique needs it;
    and only the SDK of a provider the environment configures."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "OPENAI_", "OPENROUTER_", "TED_"))}
    env |= {"TED_OPENAI_COMPATIBLE_BASE_URL": "http://127.0.0.1:9/v1", "TED_DB": str(tmp_path / "ted.db")}
    run = subprocess.run([sys.executable, "-c", SDK_LOADED_AFTER_LISTING], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["False", "False"]
