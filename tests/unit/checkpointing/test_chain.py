import json
from pathlib import Path

import pytest

from checkpointing.planning.chain import Chain, ChainError

GOOD = {"fw": [1], "bw": [1, 1], "cw": [1, 1], "cbw": [0, 1], "ftmp": [0], "btmp": [0, 0]}


def test_round_trip_through_json(tmp_path: Path) -> None:
    path = tmp_path / "chain.json"
    path.write_text(json.dumps(GOOD))

    chain = Chain.from_json_file(path)

    assert chain.to_dict() == {**GOOD, "saves_output": [True], "ftmp_nograd": [0]}
    assert chain.length == 1
    assert chain.is_integral


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cw": [1]}, "'cw' must have 2 entries"),
        ({"fw": []}, "at least one stage"),
        ({"btmp": [0, -1]}, r"'btmp\[1\]' must not be negative"),
        ({"cbw": [0, "x"]}, r"'cbw\[1\]' must be a number"),
        ({"ftmp": [True]}, r"'ftmp\[0\]' must be a number"),
        ({"bw": 3}, "'bw' must be a list"),
        ({"extra": [1]}, "unknown key"),
        ({"saves_output": [1]}, r"'saves_output\[0\]' must be true or false"),
        ({"saves_output": [True, False]}, "'saves_output' must have 1 entries"),
        ({"saves_output": [False], "cbw": [0, 0.5]}, r"must be at least 'cw\[1\]'"),
    ],
)
def test_bad_chains_name_the_problem(change: dict[str, object], message: str) -> None:
    with pytest.raises(ChainError, match=message):
        Chain.from_dict({**GOOD, **change})


def test_missing_keys_named() -> None:
    with pytest.raises(ChainError, match=r"missing key.*cbw"):
        Chain.from_dict({k: v for k, v in GOOD.items() if k != "cbw"})


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ChainError, match="cannot read"):
        Chain.from_json_file(tmp_path / "absent.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ChainError, match="not valid JSON"):
        Chain.from_json_file(broken)
