"""The one 4-rank msrun launch (four_rank_worker.py) shared by test_msrun_ep.py and test_msrun_placement.py."""
import pytest

from tests.distributed.launch import launch


@pytest.fixture(scope="session")
def four_ranks(tmp_path_factory):
    """(results by rank, msrun exit code, wall seconds) of the 4-rank launch."""
    tmp = tmp_path_factory.mktemp("four_ranks")
    res, wall, rc = launch(4, "four_rank_worker.py", [str(tmp / "run")], tmp, timeout=600)
    return res, rc, wall
