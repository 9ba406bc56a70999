"""The layers import one way, read from the source of every module (lazy imports inside functions included).

    neutral (errors, exit codes, output, progress, sizes, the Hub client, model cards)
      <- science (bot.reef: fingerprints, evidence, verdicts; no network, no integrations)
      <- core (registry, report, sources, engine, the flag table)
      <- trap2 (protection)
      <- github, hub (the integrations; neither imports the other, the Hub side never imports trap2)
      <- the CLI and the package root

Outside ``bot/reef`` the science is used only through ``bot.reef``'s public names, so its modules can move.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

NEUTRAL = frozenset(
    {"bot.errors", "bot.exit_codes", "bot._output", "bot.progress", "bot.sizes", "bot._http", "bot.cards", "bot._lazy"}
)
CORE = frozenset({"bot.registry", "bot.report", "bot.sources", "bot.engine", "bot.options"})
# What each layer may import, besides itself and the neutral modules.
ALLOWED = {
    "neutral": frozenset(),
    "reef": frozenset(),
    "core": frozenset({"reef"}),
    "trap2": frozenset({"reef", "core", "root"}),
    "github": frozenset({"reef", "core", "trap2", "root"}),
    "hub": frozenset({"reef", "core", "root"}),
    "cli": frozenset({"reef", "core", "trap2", "github", "hub", "root"}),
    "root": frozenset({"reef", "core"}),
}


def layer_of(module: str) -> str:
    if module in NEUTRAL:
        return "neutral"
    if module in CORE:
        return "core"
    if module == "bot":
        return "root"
    parts = module.split(".")
    if parts[1] in {"reef", "trap2", "github", "hub", "cli"}:
        return parts[1]
    raise AssertionError(f"{module} belongs to no layer: add it to this test's table")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def bot_imports(path: Path) -> Iterator[str]:
    """Every ``bot...`` module a file imports, at any depth of the file."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name.split(".")[0] == "bot")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "bot":
            yield str(node.module)


BOT_MODULES = sorted((REPO / "bot").rglob("*.py"))


@pytest.mark.parametrize("path", BOT_MODULES, ids=lambda path: module_name(path))
def test_each_module_imports_only_lower_layers(path: Path) -> None:
    layer = layer_of(module_name(path))
    wrong = [
        imported for imported in bot_imports(path) if layer_of(imported) not in {layer, "neutral"} | ALLOWED[layer]
    ]
    assert not wrong, f"{module_name(path)} ({layer}) imports {wrong}"


def callers_outside_the_science() -> list[Path]:
    files = [*(REPO / "bot").rglob("*.py"), *(REPO / "bench").rglob("*.py"), *(REPO / "demo").rglob("*.py")]
    files += [path for path in (REPO / "tests").rglob("*.py") if "reef" not in path.relative_to(REPO / "tests").parts]
    return sorted(path for path in files if "reef" not in path.relative_to(REPO).parts[:2])


@pytest.mark.parametrize("path", callers_outside_the_science(), ids=lambda path: str(path.relative_to(REPO)))
def test_the_science_is_used_through_its_public_names(path: Path) -> None:
    private = [imported for imported in bot_imports(path) if imported.startswith("bot.reef.")]
    assert not private, f"{path.relative_to(REPO)} imports {private}; import the names from bot.reef"


def test_the_public_science_names_resolve() -> None:
    import bot.reef

    assert bot.reef.__all__ == sorted(bot.reef.__all__)
    assert all(hasattr(bot.reef, name) for name in bot.reef.__all__)
