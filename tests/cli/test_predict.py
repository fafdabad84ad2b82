"""`mlgate predict`: files scored in this process and through a real server give the
same rows; the summary's class counts are `mlgate eval ids`'s; progress is shown; errors
name the missing columns or the first bad line."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from mlgate.cli.main import cli
from mlgate.evaluation.ids import evaluate_ids
from mlgate.settings import bundled_repository
from tests.conftest import DATA_DIR
from tests.servers import clean_env, mlgate_serve

SAMPLE = DATA_DIR / "cicids2017" / "original_format_sample" / "CICIDS2017_sample.csv"
KEY_PATTERN = re.compile(r"mlg_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")
BASELINE_READINGS = 20


@dataclass(frozen=True)
class Server:
    url: str
    api_key: str


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("predict-serve")
    env = clean_env(MLGATE_DEVICES__BASELINE_READINGS=str(BASELINE_READINGS))
    with mlgate_serve(workdir, env) as running:
        (key,) = KEY_PATTERN.findall(running.log.read_text())
        yield Server(running.url, key)


def predict(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, ["predict", *map(str, args)], env=env)


def read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def test_local_scoring_of_the_sample_counts_as_eval_does(tmp_path: Path) -> None:
    out, summary = tmp_path / "scored.csv", tmp_path / "summary.json"
    result = predict(
        "--model", "ids", "--input", SAMPLE, "--output", out, "--summary-json", summary
    )
    assert result.exit_code == 0, result.output
    header, rows = read_rows(out)
    input_header, input_rows = read_rows(SAMPLE)
    assert header[: len(input_header)] == input_header  # the input's columns, then results
    assert len(rows) == len(input_rows) == 5_050
    assert [r[: len(input_header)] for r in rows] == input_rows
    counts = json.loads(summary.read_text())["class_counts"]
    # `mlgate eval ids` on the same file: predicted counts are its confusion matrix's
    # column sums.
    evaluation = evaluate_ids(bundled_repository(), [SAMPLE])
    matrix = evaluation.metrics["confusion_matrix"]
    column_sums = np.asarray(matrix["matrix"]).sum(axis=0).tolist()
    assert counts == dict(zip(matrix["labels"], column_sums, strict=True))
    predicted = header.index("predicted_class_name")
    assert counts == {c: sum(r[predicted] == c for r in rows) for c in counts}
    # The summary on the terminal, and the progress bar with its rate.
    for name, count in counts.items():
        assert re.search(rf"{name}\s+│\s+{count:,}\s", result.stdout), (name, result.stdout)
    assert "5,050 rows" in result.stdout and "attack rate" in result.stdout
    assert "rows/s" in result.stderr and "ETA" in result.stderr and "100%" in result.stderr


def test_remote_scoring_gives_the_same_output(tmp_path: Path, server: Server) -> None:
    local, remote = tmp_path / "local.csv", tmp_path / "remote.csv"
    assert predict("--model", "ids", "--input", SAMPLE, "--output", local).exit_code == 0
    result = predict(
        "--model",
        "ids",
        "--input",
        SAMPLE,
        "--output",
        remote,
        "--url",
        server.url,
        env={"MLGATE_API_KEY": server.api_key},
    )
    assert result.exit_code == 0, result.output
    assert "(remote)" in result.stderr and "rows/s" in result.stderr
    local_header, local_rows = read_rows(local)
    remote_header, remote_rows = read_rows(remote)
    # Every column the same, byte for byte; the server adds the ids of its predictions.
    assert remote_header == [*local_header, "prediction_id"]
    assert [r[:-1] for r in remote_rows] == local_rows
    assert len({r[-1] for r in remote_rows}) == 5_050


def test_chunks_stream_the_file_with_the_same_result(tmp_path: Path) -> None:
    whole, chunked = tmp_path / "whole.csv", tmp_path / "chunked.csv"
    assert predict("--model", "ids", "--input", SAMPLE, "--output", whole).exit_code == 0
    result = predict(
        "--model", "ids", "--input", SAMPLE, "--output", chunked, "--chunk-rows", "333"
    )
    assert result.exit_code == 0, result.output
    header, rows = read_rows(whole)
    chunked_header, chunked_rows = read_rows(chunked)
    assert chunked_header == header
    floats = [header.index("confidence")] + [
        j for j, name in enumerate(header) if name.startswith("probability_")
    ]
    exact = [j for j in range(len(header)) if j not in floats]
    # Inputs, classes and flags identical. onnxruntime's float64 tree ensemble may round
    # the last row of a batch differently in the last bit, so the probabilities of rows
    # at other batch boundaries are compared to 1e-15.
    assert [[r[j] for j in exact] for r in chunked_rows] == [[r[j] for j in exact] for r in rows]
    a = np.asarray([[r[j] for j in floats] for r in rows], dtype=np.float64)
    b = np.asarray([[r[j] for j in floats] for r in chunked_rows], dtype=np.float64)
    assert np.abs(a - b).max() <= 1e-15


def test_parquet_in_and_out(tmp_path: Path) -> None:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    source = tmp_path / "flows.parquet"
    pq.write_table(pacsv.read_csv(SAMPLE), source)
    from_csv, from_parquet = tmp_path / "a.parquet", tmp_path / "b.parquet"
    assert predict("--model", "ids", "--input", SAMPLE, "--output", from_csv).exit_code == 0
    result = predict("--model", "ids", "--input", source, "--output", from_parquet)
    assert result.exit_code == 0, result.output
    a, b = pq.read_table(from_csv), pq.read_table(from_parquet)
    assert a.num_rows == b.num_rows == 5_050
    for column in ("predicted_class_name", "confidence", "is_attack", "probability_DoS"):
        assert a.column(column).equals(b.column(column)), column
    assert b.schema.field("confidence").type == "double"
    assert b.schema.field("is_attack").type == "bool"


def _sample_rows(n: int) -> tuple[list[str], list[list[str]]]:
    header, rows = read_rows(SAMPLE)
    return header, rows[:n]


def _write(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_empty_cells_are_missing_values_the_manifest_replaces(tmp_path: Path) -> None:
    header, rows = _sample_rows(50)
    rates = [header.index("Flow Bytes/s"), header.index("Flow Packets/s")]
    blank, zero = [r.copy() for r in rows], [r.copy() for r in rows]
    for row_b, row_z in zip(blank[:10], zero[:10], strict=True):
        for j in rates:
            row_b[j], row_z[j] = "", "0"  # the manifest: a missing rate is 0
    outputs = []
    for name, data in (("blank", blank), ("zero", zero)):
        out = tmp_path / f"{name}-scored.csv"
        source = _write(tmp_path / f"{name}.csv", header, data)
        result = predict("--model", "ids", "--input", source, "--output", out, "--results-only")
        assert result.exit_code == 0, result.output
        outputs.append(out.read_text())
    assert outputs[0] == outputs[1]


def test_missing_columns_are_named(tmp_path: Path) -> None:
    header, rows = _sample_rows(5)
    drop = [header.index("Flow Duration"), header.index("Idle Min")]
    source = _write(
        tmp_path / "partial.csv",
        [h for j, h in enumerate(header) if j not in drop],
        [[c for j, c in enumerate(r) if j not in drop] for r in rows],
    )
    out = tmp_path / "never.csv"
    result = predict("--model", "ids", "--input", source, "--output", out)
    assert result.exit_code == 1
    assert "missing columns for 2 of 77 features: 'Flow Duration', 'Idle Min'" in result.output
    assert not out.exists(), "nothing is written when columns are missing"


def test_the_first_bad_line_is_named_locally_and_remotely(tmp_path: Path, server: Server) -> None:
    header, rows = _sample_rows(40)
    rows[12][header.index("Total Fwd Packets")] = "many"
    source = _write(tmp_path / "text.csv", header, rows)
    result = predict("--model", "ids", "--input", source)
    assert result.exit_code == 1
    assert "line 14 (data row 13)" in result.output
    assert "'Total Fwd Packets': 'many' is not a number" in result.output
    # A value the model refuses (no rule for an empty Flow Duration): the same line is
    # named whether the data plane runs here or on the server.
    _, rows = _sample_rows(40)
    rows[30][header.index("Flow Duration")] = ""
    source = _write(tmp_path / "gap.csv", header, rows)
    for extra in ([], ["--url", server.url, "--api-key", server.api_key, "--chunk-rows", "25"]):
        result = predict("--model", "ids", "--input", source, *extra)
        assert result.exit_code == 1, result.output
        assert "line 32 (data row 31)" in result.output, result.output
        assert "Flow Duration" in result.output


def test_unknown_model_or_server_errors_are_clear(tmp_path: Path, server: Server) -> None:
    result = predict("--model", "nope", "--input", SAMPLE)
    assert result.exit_code == 2 and "model 'nope' is not served" in result.output
    result = predict(
        "--model", "ids", "--input", SAMPLE, "--url", server.url, "--api-key", "mlg_wrong"
    )
    assert result.exit_code == 1 and "401" in result.output


def _iot_file(path: Path) -> Path:
    """Two pumps' readings interleaved (SKAB column names, `;`-separated)."""
    rng = np.random.default_rng(0)
    header = [
        "datetime",
        "pump",
        "Accelerometer1RMS",
        "Current",
        "Pressure",
        "Temperature",
        "Volume Flow RateRMS",
    ]
    rows = []
    for i in range(120):
        pump = "pump-1" if i % 3 else "pump-2"
        base = (0.2, 2.5, 0.5, 70.0, 125.0) if pump == "pump-1" else (0.3, 3.0, 0.9, 80.0, 90.0)
        values = [v * (1 + 0.02 * rng.standard_normal()) for v in base]
        if i == 100:
            values[3] = 140.0  # an overheating reading
        rows.append([f"t{i}", pump, *(f"{v:.5f}" for v in values)])
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh, delimiter=";")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_device_files_locally_and_remotely(tmp_path: Path, server: Server) -> None:
    source = _iot_file(tmp_path / "pumps.csv")
    common = ["--model", "iot", "--version", "2", "--input", source, "--delimiter", ";"]
    common += ["--device-column", "pump"]  # version 2: device baselines (stable is 3)
    local, remote = tmp_path / "local.csv", tmp_path / "remote.csv"
    result = predict(
        *common,
        "--output",
        local,
        env={"MLGATE_DEVICES__BASELINE_READINGS": str(BASELINE_READINGS)},
    )
    assert result.exit_code == 0, result.output
    assert f"{2 * BASELINE_READINGS:,} rows calibrated device baselines" in result.stdout
    result = predict(
        *common, "--output", remote, "--url", server.url, env={"MLGATE_API_KEY": server.api_key}
    )
    assert result.exit_code == 0, result.output
    local_header, local_rows = read_rows(local)
    remote_header, remote_rows = read_rows(remote)
    assert remote_header == [*local_header, "prediction_id"]
    assert [r[:-1] for r in remote_rows] == local_rows
    calibrating = local_header.index("calibrating")
    assert [r[calibrating] for r in local_rows].count("true") == 2 * BASELINE_READINGS
    anomaly = local_header.index("is_anomaly")
    assert local_rows[100][anomaly] == "true"


def test_results_to_standard_output(tmp_path: Path) -> None:
    header, rows = _sample_rows(3)
    source = _write(tmp_path / "three.csv", header, rows)
    result = predict(
        "--model", "ids", "--input", source, "--output", "-", "--results-only", "--no-progress"
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("predicted_class_name,predicted_class,confidence,is_attack")
    assert len(lines) == 4
    assert "3 rows" in result.stderr  # the summary leaves stdout to the data
