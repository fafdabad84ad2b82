"""The client's public surface: everything public is re-exported from ``mlgate.client``
and listed in ``__all__``; the exception tree drawn in the docstring is the real one;
importing the client needs neither pandas nor numpy."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import subprocess
import sys

import mlgate.client as client
from mlgate.client import _exceptions


def _private_modules() -> list[str]:
    return [
        f"mlgate.client.{m.name}"
        for m in pkgutil.iter_modules(client.__path__)
        if m.name.startswith("_")
    ]


def test_all_lists_exactly_the_public_names() -> None:
    public = {
        name
        for name, value in vars(client).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name not in {"annotations"}
    }
    assert set(client.__all__) == public
    assert len(client.__all__) == len(set(client.__all__)), "duplicates in __all__"


def test_every_public_class_of_the_private_modules_is_exported() -> None:
    # A class added to a private module and meant for users must be re-exported (and
    # listed in __all__); helpers stay private by their leading underscore.
    exported = {getattr(client, name) for name in client.__all__}
    internal = {
        "ClientCore",
        "AdminCalls",
        "Credentials",
        "Token",
        "Call",
        "Send",
        "Sleep",
        "Authenticate",
        "Gather",
        "Batch",
        "Batcher",
        "Chunk",
        "Exchange",
    }
    for module_name in _private_modules():
        module = importlib.import_module(module_name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and value.__module__ in (module_name, "mlgate.client")
                and not name.startswith("_")
                and name not in internal
            ):
                assert value in exported, f"{module_name}.{name} is public but not exported"


def test_exported_names_say_they_live_in_mlgate_client() -> None:
    for name in client.__all__:
        value = getattr(client, name)
        if inspect.isclass(value):
            assert value.__module__ == "mlgate.client", name


def test_the_docstring_draws_the_real_exception_tree() -> None:
    doc = _exceptions.__doc__ or ""
    drawn: dict[str, str | None] = {}
    parents: list[tuple[int, str]] = []
    for line in doc.splitlines():
        match = re.match(r"^[\s│├└─]*([A-Z]\w+)", line)
        if not match or not isinstance(getattr(client, match[1], None), type):
            continue
        name = match[1]
        depth = line.index(name)
        while parents and parents[-1][0] >= depth:
            parents.pop()
        drawn[name] = parents[-1][1] if parents else None
        parents.append((depth, name))
    classes = {
        name: getattr(client, name)
        for name in client.__all__
        if inspect.isclass(getattr(client, name))
        and issubclass(getattr(client, name), client.MlgateClientError)
    }
    assert set(drawn) == set(classes), "every exception is drawn, and only those"
    for name, parent in drawn.items():
        if parent is not None:
            assert issubclass(classes[name], classes[parent]), f"{name} is not a {parent}"


def test_importing_the_client_imports_neither_pandas_nor_numpy() -> None:
    code = (
        "import sys, mlgate.client\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pandas', 'numpy', 'pyarrow', 'fastapi', 'sqlalchemy', 'onnxruntime'))\n"
        "print(heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"
