"""The memory probes (`benchmarks/memory_probes.c`, docs/benchmarks.md "What the arithmetic
costs on rows from memory") build with the system compiler, refuse bad arguments with a message
that names them, and write the JSON they promise. Nothing here is timed: the numbers' sizes are
the benchmark's business."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest

from kernels import ops

SOURCE = Path(__file__).resolve().parents[2] / "benchmarks" / "memory_probes.c"


# The kernels' own CPU detection decides, not a second parser: the probes' arithmetic is
# AVX-512 (F/BW) or AVX2 with FMA, whichever the host's compiler targets with -march=native.
pytestmark = pytest.mark.skipif(
    shutil.which("cc") is None or ops.best_isa() not in ("avx512", "avx2"),
    reason="needs a C compiler and AVX2 or AVX-512",
)


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    exe = tmp_path_factory.mktemp("probe") / "memory_probes"
    subprocess.run(["cc", "-O2", "-march=native", str(SOURCE), "-o", str(exe)], check=True)
    return exe


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dims", "8"], "--dims takes multiples of 16 in [16, 256], got 8"),
        (["--dims", "272"], "got 272"),
        (["--dims"], "--dims needs at least one width"),
        (["--rows"], "usage:"),
    ],
)
def test_bad_arguments_are_refused_by_name(probe: Path, args: list[str], message: str) -> None:
    run = subprocess.run([str(probe), *args], capture_output=True, text=True)
    assert run.returncode == 2
    assert message in run.stderr


def test_an_unwritable_json_path_is_an_error_naming_it(probe: Path, tmp_path: Path) -> None:
    target = tmp_path / "missing" / "probes.json"
    run = subprocess.run([str(probe), "--quick", "--dims", "16", "--json", str(target)],
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 1
    assert str(target) in run.stderr
    assert not target.exists()


def test_quick_run_writes_every_measurement(probe: Path, tmp_path: Path) -> None:
    target = tmp_path / "probes.json"
    run = subprocess.run([str(probe), "--quick", "--dims", "16", "64", "--json", str(target)],
                         capture_output=True, text=True, check=True)  # fmt: skip
    data = json.loads(target.read_text())
    assert not (tmp_path / "probes.json.tmp").exists()  # written aside, then renamed
    assert data["isa"] == ops.best_isa()  # -march=native: the widest arithmetic the host has
    latency = data["load_latency_ns"]
    assert list(latency) == ["32 KiB", "256 KiB", "1024 KiB", "2048 KiB", "4096 KiB", "8192 KiB"]
    assert all(math.isfinite(v) and v > 0 for v in latency.values())
    assert (data["batch"], data["pooling"], data["prefetch_ahead"]) == (512, 20, 24)
    rows = data["int8_ns_per_id"]
    assert [(r["dim"], r["rows"]) for r in rows] == [(16, 1000), (16, 100000), (64, 1000),
                                                     (64, 100000)]  # fmt: skip
    for r in rows:
        values = [r[v] for v in ("touch", "touch+nops", "touch+hot", "lookup")]
        assert all(math.isfinite(v) and v > 0 for v in values)
    assert "lookup - touch" in run.stdout
    translation = data["translation_ns"]
    counts = ["32", "64", "128", "256", "512", "1024", "2048", "4096", "8192", "16384"]
    assert list(translation["one_line_per_4k_page"]) == counts
    assert list(translation["packed"]) == counts
    assert list(translation["4096_pages_over"]) == ["16 MiB", "64 MiB"]  # --quick: two spans
    values = [v for part in translation.values() for v in part.values()]
    assert all(math.isfinite(v) and v > 0 for v in values)


@pytest.mark.skipif(ops.best_isa() != "avx2", reason="needs a host without AVX-512")
def test_a_build_for_a_wider_isa_refuses_to_run_and_says_why(tmp_path: Path) -> None:
    exe = tmp_path / "memory_probes_avx512"
    subprocess.run(["cc", "-O2", "-mavx512f", "-mavx512bw", "-mfma", str(SOURCE), "-o", str(exe)],
                   check=True)  # fmt: skip
    run = subprocess.run([str(exe), "--quick"], capture_output=True, text=True)
    assert run.returncode == 2
    assert "built for avx512, which this CPU lacks" in run.stderr
    assert run.stdout == ""  # refused before measuring anything
