"""Tracking never needs the network and never stops training."""
import json
import warnings

import pytest

from metarl.run.config import LogConfig
from metarl.run.logger import WandbLogger, make_logger
from metarl.run.trainer import Trainer
from test_trainer import small_config


def test_online_without_api_key_falls_back_to_offline(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    with pytest.warns(UserWarning, match="offline"):
        lg = WandbLogger("online", "metarl-test", None, "t", tmp_path, {"a": 1})
    assert lg.mode == "offline"
    lg.log({"x": 1.0}, step=1)
    lg.close()
    assert list((tmp_path / "wandb").glob("offline-run-*")), "offline run directory written"


def test_a_failing_wandb_does_not_stop_training(tmp_path, monkeypatch):
    import wandb

    def broken_init(*args, **kwargs):
        raise RuntimeError("wandb is down")

    monkeypatch.setattr(wandb, "init", broken_init)
    cfg = small_config(tmp_path, iterations=10)
    cfg.log.wandb = "offline"
    cfg.log.jsonl = True
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = Trainer(cfg).run()
    assert result["iterations"] == 10
    assert any("wandb failed" in str(w.message) for w in caught)
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(rows[-1])["summary"]["eval/loss_step0"] > 0


def test_console_and_jsonl_backends(tmp_path):
    lines = []
    lg = make_logger(LogConfig(wandb="disabled"), tmp_path, {}, "t", console_write=lines.append)
    lg.log({"loss": 0.5, "nan": float("nan")}, step=3)
    lg.close()
    assert lines == ["[3] loss=0.5 nan=nan"]
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 3, "loss": 0.5, "nan": "nan"}


def test_online_with_a_key_but_no_network_falls_back_to_offline_within_the_timeout(tmp_path, monkeypatch):
    import time

    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there: no answer
    monkeypatch.delenv("WANDB_MODE", raising=False)
    start = time.perf_counter()
    with pytest.warns(UserWarning, match="logging offline"):
        lg = WandbLogger("online", "metarl-test", None, "t", tmp_path, {"a": 1}, timeout_s=3)
    assert lg.mode == "offline" and lg.run is not None
    assert time.perf_counter() - start < 30  # without the bound wandb waits ~90 s
    lg.log({"x": 1.0}, step=1)
    lg.close()
