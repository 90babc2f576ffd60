import hashlib
import io
import zipfile

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from PIL import Image

import envs
from envs import omniglot_data as od
from envs.omniglot import OmniglotTasks


def _png(value: int) -> bytes:
    """A 105 x 105 drawing: white background, a black square whose size depends on `value`."""
    a = np.full((105, 105), 255, dtype=np.uint8)
    a[10 : 20 + value, 30:60] = 0
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def fake_archive(tmp_path):
    """A tiny archive in the official layout: 2 alphabets x 3 characters x 20 drawings, with MD5SUMS."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    path = data_dir / "images_tiny.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for a in ("Alpha", "Beta"):
            for c in range(3):
                for d in range(20):
                    zf.writestr(f"images_tiny/{a}/character{c + 1:02d}/{c}_{d:02d}.png", _png(c * 20 + d))
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    (data_dir / "MD5SUMS").write_text(f"{md5}  images_tiny.zip\n")
    return data_dir, md5


def test_archive_decodes_to_uint8_ink_and_is_cached(fake_archive, tmp_path):
    data_dir, _ = fake_archive
    data = od.load_archive("images_tiny", data_dir, tmp_path / "cache")
    assert data.images.shape == (6, 20, 28, 28) and data.images.dtype == torch.uint8
    assert data.alphabets == ["Alpha"] * 3 + ["Beta"] * 3
    assert data.images[0, 0, 0, 0] == 0 and data.images[0, 0, 4, 12] > 200  # background 0, ink 255
    # drawings are in file order: the square grows with the drawing index
    assert data.images[2, 19].float().sum() > data.images[2, 0].float().sum()
    assert len(list((tmp_path / "cache").glob("images_tiny-*.pt"))) == 1
    again = od.load_archive("images_tiny", data_dir, tmp_path / "cache")
    assert torch.equal(again.images, data.images)


def test_extracted_folder_gives_the_same_images(fake_archive, tmp_path):
    data_dir, _ = fake_archive
    with zipfile.ZipFile(data_dir / "images_tiny.zip") as zf:
        zf.extractall(tmp_path / "extracted")
    from_zip = od.load_archive("images_tiny", data_dir, tmp_path / "c1")
    from_dir = od.load_archive("images_tiny", tmp_path / "extracted", tmp_path / "c2")
    assert torch.equal(from_zip.images, from_dir.images) and from_zip.characters == from_dir.characters


def test_md5_rejects_a_corrupt_archive(fake_archive, tmp_path):
    data_dir, _ = fake_archive
    path = data_dir / "images_tiny.zip"
    raw = bytearray(path.read_bytes())
    raw[100] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(od.ChecksumError, match="corrupt"):
        od.load_archive("images_tiny", data_dir, tmp_path / "cache")


def test_download_from_file_url_verifies_checksum(fake_archive, tmp_path):
    data_dir, md5 = fake_archive
    url = data_dir.as_uri()
    out = tmp_path / "downloads"
    path = od.download_archive("images_tiny", out, base_url=url, md5=md5)
    assert path == out / "images_tiny.zip" and od.md5_of(path) == md5
    bad = tmp_path / "bad"
    with pytest.raises(od.ChecksumError):
        od.download_archive("images_tiny", bad, base_url=url, md5="0" * 32)
    assert not any(bad.iterdir())  # no partial or wrong file left behind
    with pytest.raises(KeyError, match="images_background.zip"):
        od.download_archive("images_unknown", bad, base_url=url)


def test_missing_archive_says_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match="METARL_DATA"):
        od.load_archive("images_background", tmp_path, tmp_path / "cache")


def test_default_data_dir_is_beside_the_repo(monkeypatch):
    monkeypatch.delenv("METARL_DATA", raising=False)
    assert od.default_data_dir().parts[-3:] == ("shared", "data", "omniglot")
    monkeypatch.setenv("METARL_DATA", "/somewhere")
    assert str(od.default_data_dir()) == "/somewhere"


needs_data = pytest.mark.skipif(
    not (od.default_data_dir() / "images_background_small1.zip").is_file(), reason="Omniglot small archives not found"
)


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    if not (od.default_data_dir() / "images_background_small1.zip").is_file():
        pytest.skip("Omniglot small archives not found")
    return OmniglotTasks(ways=5, cache_dir=tmp_path_factory.mktemp("cache"))


@needs_data
def test_default_split_is_by_alphabet(dist):
    assert dist.alphabets["train"] == ["Balinese", "Early_Aramaic", "Greek", "Korean", "Latin"]
    assert dist.alphabets["test"] == ["Japanese_(katakana)", "Sanskrit", "Tagalog"]
    chars = {s: set((dist.classes[s] // 4).tolist()) for s in ("train", "test")}
    assert not chars["train"] & chars["test"]
    assert dist.num_classes("train") == 136 * 4  # 136 characters, each in 4 rotations
    assert dist.num_classes("test") == 106  # no rotations at test time by default


@needs_data
def test_character_split_is_fixed_and_disjoint(dist):
    by_char = OmniglotTasks(split_by="character", train_characters=200, data=dist.data)
    again = OmniglotTasks(split_by="character", train_characters=200, data=dist.data)
    assert torch.equal(by_char.classes["train"], again.classes["train"])
    tr, te = set((by_char.classes["train"] // 4).tolist()), set((by_char.classes["test"] // 4).tolist())
    assert len(tr) == 200 and len(te) == dist.data.num_characters - 200 and not tr & te
    with pytest.raises(ValueError, match="split_by"):
        OmniglotTasks(split_by="drawer", data=dist.data)
    with pytest.raises(KeyError, match="Balinese"):
        OmniglotTasks(train_alphabets="Klingon", data=dist.data)


@needs_data
def test_episode_shapes_labels_and_disjoint_support_query(dist, gen):
    ep = dist.sample_episode(6, 2, 3, gen, "train")
    (sx, sy), (qx, qy) = ep.support, ep.query
    assert sx.shape == (6, 10, 1, 28, 28) and sy.shape == (6, 10) and sy.dtype == torch.long
    assert qx.shape == (6, 15, 1, 28, 28) and qy.shape == (6, 15)
    assert 0 <= sx.min() and sx.max() <= 1 and sx.dtype == torch.float32
    for t in range(6):
        assert torch.bincount(sy[t], minlength=5).tolist() == [2] * 5
        assert torch.bincount(qy[t], minlength=5).tolist() == [3] * 5
        assert len(set(ep.tasks["classes"][t].tolist())) == 5
        # no query drawing is also a support drawing
        s = {tuple(x.flatten().tolist()) for x in sx[t]}
        assert not any(tuple(x.flatten().tolist()) in s for x in qx[t])
    # labels are permuted per task: the same class gets different labels in different tasks
    first = ep.tasks["classes"][:, 0]
    assert not (ep.tasks["classes"].sort(dim=1).values == ep.tasks["classes"]).all()
    assert first.unique().numel() > 1


@needs_data
def test_train_ways_widens_training_tasks_and_the_head_only(dist, gen):
    wide = OmniglotTasks(ways=5, train_ways=20, data=dist.data)
    assert wide.output_dim == 20 and wide.task_classes_vary and not dist.task_classes_vary
    ep = wide.sample_episode(3, 1, 2, gen, "train")
    (_, sy), (_, qy) = ep.support, ep.query
    assert sy.shape == (3, 20) and qy.shape == (3, 40) and int(qy.max()) == 19
    assert wide.sample(4, gen, "test")["classes"].shape == (4, 5)
    with pytest.raises(ValueError, match="fewer than train_ways=600"):
        OmniglotTasks(ways=5, train_ways=600, data=dist.data)
    with pytest.raises(ValueError, match="train_ways must be"):
        OmniglotTasks(ways=5, train_ways=-1, data=dist.data)


@needs_data
def test_support_label_matches_class_image(dist, gen):
    tasks = dist.sample(3, gen, "train")
    (sx, sy), _ = dist.sample_support_query(tasks, 19, 1, gen, "train")
    for t in range(3):
        for j in range(5):
            cls = int(tasks["classes"][t, j])
            base = dist.data.images[cls // 4].float() / 255
            rotated = torch.rot90(base, cls % 4, dims=(-2, -1))
            mine = sx[t][sy[t] == j, 0]
            # every support drawing labelled j is one of the 20 drawings of class j (rotated as its id says)
            assert all(any(torch.equal(m, r) for r in rotated) for m in mine)


@needs_data
def test_rotations_are_distinct_classes(dist):
    c = int(dist.classes["train"][0]) // 4
    imgs = [dist.images[c, r, 0] for r in range(4)]
    assert torch.equal(imgs[1], torch.rot90(imgs[0], 1, dims=(0, 1)))
    assert not torch.equal(imgs[0], imgs[2])
    assert set(dist.classes["train"].remainder(4).tolist()) == {0, 1, 2, 3}
    assert set(dist.classes["test"].remainder(4).tolist()) == {0}


@needs_data
def test_same_seed_same_episode_and_splits_differ(dist):
    a = dist.sample_episode(4, 1, 2, torch.Generator().manual_seed(7), "test")
    b = dist.sample_episode(4, 1, 2, torch.Generator().manual_seed(7), "test")
    assert torch.equal(a.support[0], b.support[0]) and torch.equal(a.query[1], b.query[1])
    test_classes = set(dist.classes["test"].tolist())
    assert set(a.tasks["classes"].flatten().tolist()) <= test_classes
    with pytest.raises(ValueError, match="split"):
        dist.sample(2, torch.Generator(), "validation")
    with pytest.raises(ValueError, match="20 drawings"):
        dist.sample_support_query(a.tasks, 15, 6, torch.Generator(), "test")


@needs_data
def test_env_passes_check_env_and_rewards_minus_cross_entropy(dist):
    env = gym.make("metarl/Omniglot-v0", distribution=dist).unwrapped
    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=0)
    assert obs.shape == (1, 28, 28) and info["support_x"].shape == (5, 1, 28, 28)
    _, reward, terminated, truncated, step_info = env.step(np.zeros(5, dtype=np.float32))
    assert terminated and not truncated and reward == pytest.approx(-np.log(5), abs=1e-6)
    logits = np.full(5, -20.0, dtype=np.float32)
    logits[step_info["label"]] = 20.0
    env.reset(seed=0)
    assert env.step(logits)[1] == pytest.approx(0.0, abs=1e-6)


def test_registered_name_and_env_id():
    assert "Omniglot" in envs.known() and envs.family("omniglot").env_id == "metarl/Omniglot-v0"
    assert "metarl/Omniglot-v0" in gym.registry and not envs.family("omniglot").is_rl


@needs_data
def test_evaluator_writes_accuracy_json_and_episode_plot(dist, tmp_path):
    import json

    from metarl.nets.convnet import ConvNet
    from metarl.run.evaluate import Evaluator
    from metarl.supervised.source import SupervisedSource
    from metarl.algorithms.maml import MAML
    from metarl.nets import parameters_of
    from metarl.supervised.objective import SupervisedObjective

    net = ConvNet(1, 5, channels=4, generator=torch.Generator().manual_seed(0))
    objective = SupervisedObjective(net, dist.loss)
    learner = MAML(objective, parameters_of(net), inner_lr=0.4, inner_steps=1)
    source = SupervisedSource(dist, objective, 2, 0, torch.device("cpu"), 1, 2, eval_k_support=1, eval_k_query=2)
    evaluator = Evaluator(source, num_tasks=6, steps=2, batch_size=4, plot_tasks=1)
    summary = evaluator.run(learner, learner.init_meta_params())
    acc = summary["accuracy"]["mean"]
    assert len(acc) == 3 and all(0.0 <= a <= 1.0 for a in acc) and summary["metric"] == "accuracy"
    assert len(summary["accuracy"]["per_task"][0]) == 6
    paths = evaluator.write(summary, tmp_path, "r")
    assert json.loads((tmp_path / "r.json").read_text())["accuracy"]["mean"] == acc
    assert paths["episodes"] == tmp_path / "r_episodes.png" and paths["episodes"].stat().st_size > 10_000


@needs_data
def test_async_vector_env_works_with_gymnasiums_defaults():
    """Forked workers used to hang in their first torch op once the parent had run OpenMP work."""
    import subprocess
    import sys

    code = ("import numpy as np, torch, gymnasium as gym, envs\n"
            "torch.set_num_threads(2); x = torch.randn(1500, 1500); (x @ x).sum()  # OpenMP work in the parent\n"
            "venv = gym.make_vec('metarl/Omniglot-v0', num_envs=3, vectorization_mode='async')\n"
            "obs, info = venv.reset(seed=0)\n"
            "_, r, term, _, _ = venv.step(np.zeros((3, 5), dtype=np.float32))\n"
            "assert obs.shape == (3, 1, 28, 28) and term.all() and np.allclose(r, -np.log(5), atol=1e-5)\n"
            "venv.close(); print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]


@needs_data
def test_batch_norm_protocol_is_chosen_in_the_config_and_recorded_with_the_numbers(tmp_path):
    from metarl.run.config import Config, from_dict
    from metarl.run.trainer import Trainer

    results = {}
    for protocol in ("transductive", "support"):
        cfg = from_dict(Config, {
            "task": {"name": "Omniglot", "k_support": 1, "k_query": 1}, "model": {"arch": "conv", "channels": 4,
                                                                                  "batch_norm": protocol},
            "train": {"iterations": 2, "meta_batch_size": 2, "eval_every": 0}, "eval": {"num_tasks": 6, "k_query": 3,
                                                                                       "steps": 1, "plot_tasks": 3},
            "log": {"wandb": "disabled", "progress": False, "console": False}, "device": "cpu",
            "run_dir": str(tmp_path / protocol)}).validate()
        summary = Trainer(cfg).run()["eval"]  # the run's pictures drawn from 3 tasks' predictions, too
        assert summary["protocol"]["batch_norm"] == protocol
        assert (tmp_path / protocol / "eval_episodes.png").stat().st_size > 10_000
        results[protocol] = summary["loss"]["per_task"][1]
    assert results["transductive"] != results["support"]  # the protocol changes the numbers
