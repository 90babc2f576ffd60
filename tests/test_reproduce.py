"""The table commands (scripts/reproduce.py): --dry-run lists every row and its state on a clean clone, and every
config a table names is a config the suite trains for two iterations (tests/test_configs.py)."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import reproduce  # noqa: E402


@pytest.mark.parametrize("table", sorted(reproduce.COMMANDS))
def test_dry_run_lists_every_row_with_its_state(table):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "reproduce.py"), table, "--dry-run"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = reproduce.TABLES[reproduce.COMMANDS[table]].rows
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == len(rows)
    for row, line in zip(rows, lines):
        assert line.split()[0] == row.name and any(s in line for s in ("done", "in progress", "to do"))


def test_every_row_names_a_config_the_suite_trains():
    trained = {p.relative_to(ROOT).as_posix() for p in (ROOT / "configs").rglob("*.yaml")}
    for rows in (t.rows for t in reproduce.TABLES.values()):
        for row in rows:
            assert row.config in trained, row


def test_an_unknown_row_is_a_one_line_error():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "reproduce.py"), "fewshot", "--only", "nope",
                           "--dry-run"], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and proc.stderr.strip().startswith("error: no row 'nope'")
