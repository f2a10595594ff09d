"""`ted setup CLIENT`: the configuration a desktop client needs to launch this ted-mcp with a
teacher, and a check that the models it names answer.

Desktop clients start `ted-mcp` with their own environment, not your shell's: the command must
be an absolute path (a virtual environment's bin is not on their PATH) and the models and keys
must be in the entry's `env`. This prints that entry for the named client, with the `ted-mcp`
installed beside this `ted`, the database this `ted` uses, and the teacher and student given
(or TED_TEACHER / TED_STUDENT); then it sends each model one short request through the same
adapters the server uses and says what answered. Keys are printed only with --include-keys;
otherwise the entry holds a placeholder to replace.
"""

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

from rich.console import Console

from ted.errors import ConfigError, TedError
from ted.ledger import Ledger
from ted.llm.base import GenerationSettings, Message
from ted.llm.registry import ALIASES, PROVIDERS, closing_models, split_name
from ted.store import Store

# Where each client reads its configuration, and the shape of its server entry.
CLIENTS = {
    "claude-desktop": (
        "Settings → Developer → Edit Config; on macOS ~/Library/Application Support/Claude/"
        "claude_desktop_config.json, on Windows %APPDATA%\\Claude\\claude_desktop_config.json. "
        "Merge the entry into its mcpServers, then restart Claude Desktop."
    ),
    "cursor": "~/.cursor/mcp.json (every project) or .cursor/mcp.json in a project; merge into its mcpServers.",
    "vscode": ".vscode/mcp.json in a workspace, or MCP: Open User Configuration; merge into its servers.",
    "claude-code": "Run this command once; `claude mcp list` then shows the server.",
}
PLACEHOLDER = "paste your {} here"


def ted_mcp_path() -> str:
    """The `ted-mcp` installed beside this interpreter (a venv's, pipx's), else the one on PATH.

    The interpreter's own path is kept as it is: a venv's python is a link to the system one,
    and resolving it would leave the venv.
    """
    beside = Path(sys.executable).absolute().parent / ("ted-mcp.exe" if os.name == "nt" else "ted-mcp")
    if beside.exists():
        return str(beside)
    if found := shutil.which("ted-mcp"):
        return str(Path(found).absolute())
    raise ConfigError("ted-mcp is not installed beside this ted: run `pip install .` in the environment `ted` is in.")


def server_env(models: dict[str, str], db: Path, include_keys: bool) -> dict[str, str]:
    """The variables the server needs for these models: TED_*, and each provider's key and base URL."""
    env = {"TED_DB": str(db.absolute())} | {f"TED_{role.upper()}": name for role, name in models.items()}
    for name in models.values():
        provider_name, _ = split_name(name)
        provider = PROVIDERS[ALIASES.get(provider_name, provider_name)]
        if provider.key_env:
            value = os.environ.get(provider.key_env) if include_keys else None
            if value or provider.key_required:
                env[provider.key_env] = value or PLACEHOLDER.format(provider.key_env)
        if provider.base_url_env and (url := os.environ.get(provider.base_url_env)):
            env[provider.base_url_env] = url
    return env


def client_config(client: str, command: str, env: dict[str, str]) -> str:
    if client == "claude-code":
        pairs = [f"{k}={v}" for k, v in env.items()]
        # --env takes every value up to the next option, so it follows the server's name.
        words = ["claude", "mcp", "add", "--transport", "stdio", "--scope", "user", "ted", "--env", *pairs]
        return shlex.join([*words, "--", command])
    entry = {"command": command, "args": [], "env": env}
    if client == "vscode":
        return json.dumps({"servers": {"ted": {"type": "stdio", **entry}}}, indent=2)
    return json.dumps({"mcpServers": {"ted": entry}}, indent=2)


async def check(store: Store, models: dict[str, str], out: Console) -> int:
    """Send each model one short request and say what answered; how many did not."""
    failed = 0
    ledger = Ledger(store)
    async with closing_models() as resolve:
        for role, name in models.items():
            started = time.perf_counter()
            try:
                model = ledger.bind(resolve(name), "check", settings=GenerationSettings(max_tokens=16))
                await model.complete([Message.user("Reply with the word: ready")])
            except TedError as e:
                failed += 1
                out.print(f"✗ {role} {name}: {e}", markup=False)
            else:
                out.print(f"✓ {role} {name} answered in {time.perf_counter() - started:.1f} s", markup=False)
    return failed


async def setup(store: Store, args: argparse.Namespace, out: Console) -> None:
    chosen = {
        "teacher": args.teacher or os.environ.get("TED_TEACHER"),
        "student": args.student or os.environ.get("TED_STUDENT"),
    }
    models = {role: name for role, name in chosen.items() if name}
    for name in models.values():
        split_name(name)  # a typo fails here, naming the valid providers
    env = server_env(models, store.path, args.include_keys)
    out.print(f"# {CLIENTS[args.client]}", markup=False, soft_wrap=True)
    out.print(client_config(args.client, ted_mcp_path(), env), markup=False, soft_wrap=True)
    if "teacher" not in models:
        out.print(
            "# No teacher given (--teacher or TED_TEACHER): the server will record attempts, but critiques, "
            "compression and distillation need one.",
            markup=False,
            soft_wrap=True,
        )
    if any(value == PLACEHOLDER.format(name) for name, value in env.items()):
        out.print("# Replace the key placeholders, or run again with --include-keys.", markup=False, soft_wrap=True)
    if args.no_check or not models:
        return
    if failed := await check(store, models, out):
        raise ConfigError(f"{failed} of {len(models)} models did not answer; fix the above, then run it again.")


def add_command(command) -> None:
    s = command("setup", setup, "print a client's configuration for this ted-mcp and check its models", library=False)
    s.add_argument("client", choices=sorted(CLIENTS), help="the client to configure")
    s.add_argument("--teacher", help="provider:model for critiques and distillation (default: TED_TEACHER)")
    s.add_argument("--student", help="provider:model for distillation and evaluation (default: TED_STUDENT)")
    s.add_argument("--include-keys", action="store_true", help="write the keys from your environment into the entry")
    s.add_argument("--no-check", action="store_true", help="do not call the models")
