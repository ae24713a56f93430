import pytest

from checkpointing.planning.units import format_size, parse_size


@pytest.mark.parametrize(
    ("text", "size"),
    [("1GiB", 2**30), ("768MiB", 768 * 2**20), ("1.5e9", 1_500_000_000), ("2 GB", 2 * 10**9)],
)
def test_sizes_parse(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0", "not a positive size"),
        ("-1GiB", "not a size"),
        ("lots", "not a size"),
        ("1XB", "unit"),
    ],
)
def test_bad_sizes_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_size(text)


def test_format() -> None:
    assert format_size(1.5 * 2**30) == "1.50 GiB"
    assert format_size(12) == "12 B"
