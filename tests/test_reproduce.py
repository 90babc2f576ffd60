"""The table commands (scripts/reproduce.py): --dry-run lists every row and its state on a clean clone, and every
config a table names is a config the suite trains for two iterations (tests/test_configs.py)."""
import json
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
        # "changed" would mean a committed result or run no longer matches its config
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


def test_a_table_run_stops_after_a_segment_and_the_same_command_finishes_it(tmp_path, monkeypatch, capsys):
    """A toy table (one tiny Navigation2D row, 3 iterations): with --max-segments 1 and a time limit that ends
    every segment after one iteration, the first command leaves the row in progress at iteration 1; running the
    same command again continues from its checkpoint (not from 0) and records the finished row."""
    tiny = ("--train.iterations", "3", "--train.meta_batch_size", "2", "--rl.episodes_per_task", "2",
            "--eval.num_tasks", "2", "--eval.episodes_per_task", "2", "--train.checkpoint_every", "1")
    row = reproduce.Row("tiny", "configs/nav2d_maml_trpo.yaml", "toy", tiny)
    monkeypatch.setitem(reproduce.TABLES, "toy", reproduce.Table("toy", [row], keep_run_dir=True))
    monkeypatch.setitem(reproduce.COMMANDS, "toy-table", "toy")
    monkeypatch.setattr(reproduce, "PLACES", dict(reproduce.PLACES))
    args = ["reproduce.py", "toy-table", "--segment-s", "0.001", "--results", str(tmp_path / "results"),
            "--runs", str(tmp_path / "runs")]
    monkeypatch.setattr(sys, "argv", [*args, "--max-segments", "1"])
    reproduce.main()
    assert "stopped after 1 segment" in capsys.readouterr().out
    assert reproduce.state(row) == ("in progress", 1)
    monkeypatch.setattr(sys, "argv", [*args, "--dry-run"])  # the time left, at the pace of the segment run
    reproduce.main()
    logged = [json.loads(line) for line in (tmp_path / "runs" / "toy" / "tiny" / "metrics.jsonl").read_text().splitlines()]
    pace = 1 / [m["time/iter_per_s"] for m in logged if "time/iter_per_s" in m][-1]
    assert f"-> would resume (about {2 * pace / 60:.0f} min of training left at {pace:.2f} s per iteration)" in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", args)
    reproduce.main()
    out = capsys.readouterr().out
    assert "tiny             in progress       1 / 3" in out and out.count("scripts/train.py") == 2  # 2 more segments
    assert reproduce.state(row) == ("done", 3)
    record = json.loads((tmp_path / "results" / "toy" / "tiny" / "record.json").read_text())
    assert "--resume" in record["command"] and record["total_wall_s"] >= record["wall_s"]
    assert (tmp_path / "results" / "toy" / "tiny" / "metrics.jsonl").is_file()
    # Launch settings are not what a row trains; any other setting makes a finished row "changed", trained again.
    assert reproduce.state(reproduce.Row("tiny", row.config, "toy", (*tiny, "--train.time_limit_s", "9"))) == ("done", 3)
    changed = reproduce.Row("tiny", row.config, "toy", (*tiny, "--learner.inner_lr", "0.2"))
    monkeypatch.setitem(reproduce.TABLES, "toy", reproduce.Table("toy", [changed], keep_run_dir=True))
    assert reproduce.state(changed) == ("changed", 3)
    monkeypatch.setattr(sys, "argv", [*args, "--dry-run"])
    reproduce.main()
    assert ("(config changed since trained: learner.inner_lr: 0.5 -> 0.2)   -> would train it again from scratch"
            in capsys.readouterr().out)
    monkeypatch.setattr(sys, "argv", [*args, "--segment-s", "600"])
    reproduce.main()
    assert reproduce.state(changed) == ("done", 3)
    record = json.loads((tmp_path / "results" / "toy" / "tiny" / "record.json").read_text())
    assert "--resume" not in record["command"] and "inner_lr 0.2" in record["command"]


def test_the_meta_rl_tables_and_charts_are_drawn_from_the_rows_files(tmp_path):
    """results_rl reads record.json, eval.json and metrics.jsonl of each row: the one-step gain beyond both CIs,
    the episode length and reward terms of the last iterations, the KL ratio and the time per iteration."""
    import results_rl

    def row(folder, pre, post, extra):
        folder.mkdir(parents=True)
        (folder / "record.json").write_text(json.dumps({"wall_s": 10.0, "total_wall_s": 7200.0}))
        (folder / "eval.json").write_text(json.dumps({"iteration": 20, "num_tasks": 40, "return": {
            "mean": [pre, post], "ci95": [5.0, 5.0]}}))
        (folder / "metrics.jsonl").write_text("".join(json.dumps({"step": i, "train/return_pre": pre,
                                                                  "train/return_post": post, **extra(i)}) + "\n"
                                                      for i in range(1, 21)))

    row(tmp_path / "maml_paper" / "ant_vel", -30.0, -25.0,
        lambda i: {"train/episode_length_pre": 40.0, "train/reward_forward_pre": -20.0, "train/reward_control_pre": -2.0})
    row(tmp_path / "maml_paper" / "halfcheetah_dir", -50.0, 100.0, lambda i: {})
    row(tmp_path / "fisher" / "full", -50.0, 100.0,
        lambda i: {"train/kl_model_ratio": 1.0 if i > 5 else 9.0, "train/step_frac": 1.0, "time/iter_per_s": 0.1})
    table = "\n".join(results_rl.maml_paper_table(tmp_path))
    assert "| AntVel | 20 | 40 | -30.0 ± 5.0, -25.0 ± 5.0 | no | 40 steps; control -2, forward -20 |" in table
    assert "| HalfCheetahDir | 20 | 40 | -50.0 ± 5.0, 100.0 ± 5.0 | yes | — | -51.0 / +293.0" in table
    assert "| full | 20 | -50.0 ± 5.0, 100.0 ± 5.0 | 1.00 | 1.00 | 10.0 s | 2.0 h |" in "\n".join(results_rl.fisher_table(tmp_path))
    for draw, name in ((results_rl.maml_paper_chart, "maml_rl.png"), (results_rl.fisher_chart, "fisher.png")):
        assert draw(tmp_path / name, tmp_path).stat().st_size > 10_000
