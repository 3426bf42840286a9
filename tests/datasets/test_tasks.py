from __future__ import annotations

import pytest

from p2p_local.datasets import TASKS, load_task
from p2p_local.datasets.base import ConvertSettings, TaskSpec, safe_id, unique_ids
from p2p_local.errors import ConfigError, DatasetError
from p2p_local.paths import validate_user_name


def test_registry_names_every_corpus() -> None:
    assert sorted(TASKS) == ["fortunes", "movielens", "office", "shakespeare"]
    assert TASKS["movielens"].spec.kind == "rating"
    assert TASKS["movielens"].spec.labels == ("1", "2", "3", "4", "5")
    assert {s.name for s in TASKS["fortunes"].sources} == {
        "fortunes", "fortunes-min", "fortune-anarchism"
    }


def test_load_task_with_overrides(fortune_dirs: list) -> None:
    ds = load_task("fortunes", max_queries=1, max_users=10, seed=2)
    assert len(ds) == 10 and all(len(u.queries) == 1 for u in ds.users)


@pytest.mark.parametrize(
    "fixture", ["movielens_ds", "shakespeare_ds", "office_ds", "fortunes_ds"]
)
def test_user_ids_are_valid_vault_names(fixture: str, request: pytest.FixtureRequest) -> None:
    ds = request.getfixturevalue(fixture)
    ids = ds.user_ids()
    assert len(set(ids)) == len(ids)
    for uid in ids:
        validate_user_name(uid)  # dataset user ids double as vault user names


def test_load_task_errors() -> None:
    with pytest.raises(ConfigError, match="unknown task 'lamp'"):
        load_task("lamp")
    with pytest.raises(ConfigError, match="unknown setting"):
        load_task("fortunes", max_query=2)
    with pytest.raises(ConfigError, match="max_queries"):
        ConvertSettings(max_queries=0)
    with pytest.raises(ConfigError, match="kind"):
        TaskSpec("t", "d", "ranking")


def test_subset_and_ids(movielens_ds) -> None:  # type: ignore[no-untyped-def]
    sub = movielens_ds.subset(["ml-3", "ml-1"])
    assert sub.user_ids() == ["ml-1", "ml-3"] and sub.spec == movielens_ds.spec
    with pytest.raises(DatasetError, match="not in task"):
        movielens_ds.subset(["ml-100000"])
    assert safe_id("shk", "macbeth", "LADY MACBETH") == "shk.macbeth.LADY_MACBETH"
    assert unique_ids(["A B", "A_B"], "x") == {"A B": "x.A_B", "A_B": "x.A_B-2"}
