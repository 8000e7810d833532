"""The package layers hold: which modules may import which.

Layout and dependency direction: docs/architecture.md#package-layout-srcimageregistry.

The import graph is read from the source with `ast` (every import, including those inside
functions, since a lazy import is still a dependency), so these fail the moment a module
starts importing across a line the layout draws: the two blob-serving ports share only the
neutral modules (`httpbits`, `errorcodes`), the two `ac` operation commands share only
`cli/ac/operations.py`, no modules import each other in a circle, and nothing below the
HTTP layers depends on Starlette.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "imageregistry"
# Below the HTTP layers: core, storage, metadata and the leaves every layer may import.
BELOW_HTTP = (
    "content",
    "auth",
    "prune",
    "signatures",
    "tagpolicy",
    "storage",
    "metadata",
    "tuning",
    "apigroups",
    "clock",
    "errorcodes",
    "httpbits",
    "httpinput",
    "quantity",
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _graph() -> dict[str, frozenset[str]]:
    """Each module of the package and every dotted name it imports (modules and members)."""
    graph: dict[str, frozenset[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
        graph[_module_name(path)] = frozenset(names)
    return graph


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _imports_from(source: str, target: str) -> list[str]:
    """`module -> imported name` for every import in `source` of something in `target`."""
    return sorted(
        f"{module} -> {name}"
        for module, names in _graph().items()
        if _within(module, source)
        for name in names
        if _within(name, target)
    )


def test_the_graph_sees_the_package() -> None:
    graph = _graph()
    assert "imageregistry.blobport.server" in graph
    assert "imageregistry.errorcodes" in graph["imageregistry.blobport.server"]


def test_the_blob_port_does_not_import_the_oci_package() -> None:
    assert _imports_from("imageregistry.blobport", "imageregistry.oci") == []


def test_the_oci_package_does_not_import_the_blob_port() -> None:
    assert _imports_from("imageregistry.oci", "imageregistry.blobport") == []


def _cycle_in(package: str) -> list[str]:
    """One import cycle among the modules of `package` (as a path of modules), or []."""
    graph = _graph()
    modules = sorted(m for m in graph if _within(m, package))
    edges = {
        m: sorted(n for n in graph[m] if n in graph and n != m and n in modules) for m in modules
    }
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> list[str]:
        state[module] = 1
        for target in edges[module]:
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target, [*path, target])):
                return cycle
        state[module] = 2
        return []

    for module in modules:
        if module not in state and (cycle := visit(module, [module])):
            return cycle
    return []


def test_ac_gc_does_not_import_ac_prune() -> None:
    """`ac adm gc` used to borrow prune's request helper: now both use `cli/ac/operations.py`."""
    assert _imports_from("imageregistry.cli.ac.gc", "imageregistry.cli.ac.prune") == []


def test_the_ac_modules_import_no_cycle() -> None:
    assert _cycle_in("imageregistry.cli.ac") == []


def test_the_blob_serving_modules_import_no_cycle() -> None:
    for package in ("imageregistry.oci", "imageregistry.blobport"):
        assert _cycle_in(package) == []


def test_nothing_below_the_http_layers_imports_starlette() -> None:
    offenders = [
        hit
        for package in BELOW_HTTP
        for hit in _imports_from(f"imageregistry.{package}", "starlette")
    ]
    assert offenders == []


def test_the_package_imports_no_cycle() -> None:
    """Also the API's router and dispatcher, and the prune and verification resources."""
    assert _cycle_in("imageregistry") == []


def test_only_the_server_and_the_surfaces_route_builders_import_services() -> None:
    """`Services` is the composition root's value (docs/architecture.md#wiring): the server
    builds it and hands it to the HTTP surfaces, whose route builders pass parts on. Core
    (prune, signatures, content, auth, metadata, storage) and the background jobs are
    handed a database, blob store and clock instead. In `oci` only the route builder that
    takes it apart into the `Registry` may: handlers, the gate, the request pipeline and
    the inline pull layer read the `Registry`'s named fields. In `apiserver` only
    `api_routes`, which builds the `ApiCollaborators`; the `/metrics` scraper is handed
    the authenticator and authorizer."""
    allowed = (
        "imageregistry.server",
        "imageregistry.services",
        "imageregistry.oci.v2_routes",
        "imageregistry.apiserver.api_routes",
    )
    importers = [
        hit
        for hit in _imports_from("imageregistry", "imageregistry.services")
        if not any(_within(hit.split(" -> ")[0], package) for package in allowed)
    ]
    assert importers == []


# What the API layer may take from SQLAlchemy: the transaction handle it opens with
# `Database.read()`/`write()` and passes to `metadata` functions (a type, no SQL).
_API_SQLALCHEMY_NAMES = {"sqlalchemy", "sqlalchemy.Connection"}
# Modules allowed more, each with the reason.
_API_SQLALCHEMY_EXCEPTIONS = {
    # `ensure_namespace` treats a concurrent create of the `default` namespace by another
    # worker (the unique key refusing the second insert) as success.
    "imageregistry.apiserver.resources.namespaces -> sqlalchemy.exc",
    "imageregistry.apiserver.resources.namespaces -> sqlalchemy.exc.IntegrityError",
}


def test_the_api_layer_writes_no_sql() -> None:
    """SQL lives in `metadata/`, which returns typed rows; `apiserver` renders Kubernetes
    objects from them (docs/architecture.md#wiring). No API module imports the table
    definitions or builds a statement."""
    assert _imports_from("imageregistry.apiserver", "imageregistry.metadata.tables") == []
    offenders = [
        hit
        for hit in _imports_from("imageregistry.apiserver", "sqlalchemy")
        if hit.split(" -> ")[1] not in _API_SQLALCHEMY_NAMES
        and hit not in _API_SQLALCHEMY_EXCEPTIONS
    ]
    assert offenders == []
