"""The README's Python client and `mlgate predict` examples run as written against a
real `mlgate serve` (with its bootstrap key in MLGATE_API_KEY and its URL in MLGATE_URL,
as a reader who exported them would), and print what the README says."""

from __future__ import annotations

import ast
import csv
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.conftest import PROJECT_ROOT
from tests.servers import clean_env, mlgate_serve

KEY_PATTERN = re.compile(r"mlg_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Reader:
    """Where the examples run: a directory with the project's data/, and the env."""

    workdir: Path
    env: dict[str, str]
    url: str


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reader]:
    server_dir = tmp_path_factory.mktemp("readme-serve")
    with mlgate_serve(server_dir, clean_env()) as running:
        (key,) = KEY_PATTERN.findall(running.log.read_text())
        workdir = tmp_path_factory.mktemp("reader")
        (workdir / "data").symlink_to(PROJECT_ROOT / "data")
        env = clean_env(MLGATE_URL=running.url, MLGATE_API_KEY=key)
        yield Reader(workdir, env, running.url)


def _section(title: str) -> str:
    text = (PROJECT_ROOT / "README.md").read_text()
    start = text.index(f"## {title}\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def python_examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", _section("Python client"), flags=re.S)


def predict_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", _section("Scoring files (`mlgate predict`)"), re.S)
    return [line.strip() for b in blocks for line in b.splitlines() if line.startswith("mlgate")]


def _first_lines(out: str) -> list[str]:
    return out.strip().splitlines()


def _basics(out: str) -> None:
    lines = _first_lines(out)
    assert lines[0] == "healthy"
    assert lines[1] == "3 77 ['BENIGN', 'Bot', 'BruteForce']"
    flag, prediction_id = lines[2].split()
    assert flag == "False" and re.fullmatch(r"\w+-0", prediction_id)


def _frame(out: str) -> None:
    counts, accuracy = _first_lines(out)
    assert sum(ast.literal_eval(counts).values()) == 5_050
    # The sample is the stable version's training data: near-perfect, not a held-out figure.
    assert re.fullmatch(r"accuracy (0\.9[5-9]\d|1\.000)", accuracy), accuracy


def _stream(out: str) -> None:
    lines = _first_lines(out)
    assert len(lines) == 10
    assert lines[0] == "pump-0 calibrating {'seen': 1, 'required': 400}"
    assert lines[1] == "pump-1 calibrating {'seen': 1, 'required': 400}"
    assert lines[9] == "pump-1 calibrating {'seen': 5, 'required': 400}"


def _errors(out: str) -> None:
    error, users = _first_lines(out)
    assert error == "validation_error features[0]"
    assert users.startswith("['admin'")


#: What each example prints, in README order.
DOCUMENTED: list[Callable[[str], None]] = [_basics, _frame, _stream, _errors]


def test_python_client_examples_run_as_written(reader: Reader) -> None:
    examples = python_examples()
    assert len(examples) == len(DOCUMENTED), "an example was added or removed: check it here"
    for code, check in zip(examples, DOCUMENTED, strict=True):
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=reader.workdir,
            env=reader.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, f"{code}\n{result.stderr}"
        try:
            check(result.stdout)
        except (AssertionError, ValueError) as exc:
            raise AssertionError(f"{code}\n-> {result.stdout}") from exc


def _rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as fh:
        return list(csv.reader(fh))


def test_predict_commands_run_as_written(reader: Reader) -> None:
    commands = predict_commands()
    assert [("--url" in c) for c in commands] == [False, True], commands
    outputs = []
    for command in commands:
        argv = shlex.split(command.replace("http://127.0.0.1:8000", reader.url))
        result = subprocess.run(
            [sys.executable, "-m", "mlgate", *argv[1:]],
            cwd=reader.workdir,
            env=reader.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        assert "5,050 rows" in result.stdout and "rows/s" in result.stderr
        outputs.append(_rows(reader.workdir / argv[argv.index("--output") + 1]))
    local, remote = outputs
    # "Both give the same rows (the remote file adds each row's prediction_id)"
    assert remote[0] == [*local[0], "prediction_id"]
    assert [row[:-1] for row in remote] == local
