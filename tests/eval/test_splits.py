from __future__ import annotations

import json

import numpy as np
import pytest

from p2p_local.datasets import movielens
from p2p_local.datasets.base import TaskDataset
from p2p_local.errors import ConfigError, DatasetError
from p2p_local.eval.splits import Split, SplitSettings, ood_split, random_split, read_split


def _blobs(
    sizes: list[int], dim: int = 16, seed: int = 0
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Gaussian blobs; the last two are small and placed far from the others."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(len(sizes), dim)) * 2.0
    centers[-2:] *= 4.0
    pairs = zip(centers, sizes, strict=True)
    x = np.concatenate([c + rng.normal(size=(n, dim)) * 0.5 for c, n in pairs])
    truth = np.repeat(np.arange(len(sizes)), sizes)
    return [f"user-{i:04d}" for i in range(len(x))], x, truth


def test_random_split_is_disjoint_complete_and_deterministic() -> None:
    ids = [f"u{i}" for i in range(200)]
    s = SplitSettings(val_fraction=0.1, test_fraction=0.2, seed=7)
    a = random_split(ids, s)
    assert (len(a.train), len(a.val), len(a.test)) == (140, 20, 40)
    assert not set(a.train) & set(a.val) and not set(a.train) & set(a.test)
    assert not set(a.val) & set(a.test)
    assert set(a.train) | set(a.val) | set(a.test) == set(ids)
    assert random_split(list(reversed(ids)), s) == a  # input order does not matter
    assert random_split(ids, SplitSettings(val_fraction=0.1, test_fraction=0.2, seed=8)) != a
    assert a.kind == "random" and a.clusters == {}
    assert Split.from_dict(a.to_dict()) == a
    assert a.part_of(a.test[0]) == "test"


def test_ood_split_sends_small_isolated_clusters_to_test() -> None:
    ids, x, truth = _blobs([150, 150, 150, 150, 150, 20, 25])
    split = ood_split(ids, x, SplitSettings(test_fraction=0.05, val_fraction=0.1, n_clusters=7))
    test_truth = {int(truth[ids.index(u)]) for u in split.test}
    assert test_truth == {5, 6}  # exactly the two small far blobs
    assert len(split.test) == 45 and len(split.val) == 80 and len(split.train) == 670
    _assert_clusters_held_out(split)


def test_ood_split_is_deterministic_and_order_free() -> None:
    ids, x, _ = _blobs([60, 50, 40, 30, 20, 10, 8], seed=1)
    s = SplitSettings(test_fraction=0.15, seed=3)
    a = ood_split(ids, x, s)
    perm = np.random.default_rng(0).permutation(len(ids))
    b = ood_split([ids[i] for i in perm], x[perm], s)
    assert a == b
    _assert_clusters_held_out(a)
    assert Split.from_dict(a.to_dict()) == a


def _assert_clusters_held_out(split: Split) -> None:
    assert split.kind == "ood"
    train_side = {split.clusters[u] for u in split.train + split.val}
    test_side = {split.clusters[u] for u in split.test}
    assert test_side and not test_side & train_side
    assert set(split.test_clusters) == test_side
    assert not set(split.train) & set(split.test) and not set(split.val) & set(split.test)
    assert len(split.clusters) == len(split.train) + len(split.val) + len(split.test)


@pytest.fixture(scope="module")
def movielens_users() -> TaskDataset:
    return movielens.load()


def test_ood_split_on_real_users(movielens_users: TaskDataset) -> None:
    """OOD over MovieLens users, embedded as their mean rating per genre (no model needed)."""
    genres = sorted({g for u in movielens_users.users for h in u.history
                     for g in (h.label or "").split(", ") if g})
    col = {g: i for i, g in enumerate(genres)}
    emb = np.zeros((len(movielens_users), len(genres)))
    for r, user in enumerate(movielens_users.users):
        counts = np.zeros(len(genres))
        for h in user.history:
            for g in (h.label or "").split(", "):
                if g:
                    emb[r, col[g]] += h.score or 0.0
                    counts[col[g]] += 1
        emb[r] /= np.maximum(counts, 1)
    split = ood_split(movielens_users.user_ids(), emb, SplitSettings(test_fraction=0.1))
    _assert_clusters_held_out(split)
    assert 0.075 * 943 <= len(split.test) <= 0.125 * 943
    train_ds = movielens_users.subset(split.train)
    assert len(train_ds) == len(split.train)


def test_split_settings_and_inputs_are_validated() -> None:
    with pytest.raises(ConfigError, match="test_fraction"):
        SplitSettings(test_fraction=1.5)
    with pytest.raises(ConfigError, match="must be < 1"):
        SplitSettings(val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ConfigError, match="n_clusters"):
        SplitSettings(n_clusters=1)
    with pytest.raises(DatasetError, match="unique"):
        random_split(["a", "a", "b"])
    with pytest.raises(DatasetError, match="shape"):
        ood_split(["a", "b", "c"], np.zeros((2, 4)))
    with pytest.raises(DatasetError, match="NaN"):
        ood_split(["a", "b", "c"], np.full((3, 4), np.nan))
    with pytest.raises(DatasetError, match="disjoint"):
        Split("random", ("a",), (), ("a",), 0)


def test_saved_split_reads_back_and_bad_files_are_named(tmp_path) -> None:
    split = random_split([f"u{i}" for i in range(20)], SplitSettings(seed=3))
    path = tmp_path / "task.json"
    path.write_text(json.dumps(split.to_dict()))
    assert read_split(path) == split
    path.write_text('{"kind": "random"}')
    with pytest.raises(DatasetError, match=f"cannot read split file {path}"):
        read_split(path)
    with pytest.raises(DatasetError, match="cannot read split file"):
        read_split(tmp_path / "missing.json")
