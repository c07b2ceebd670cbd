"""The frame list of frames/ paths (PS3.18: one or more non-duplicate frame numbers)."""

from __future__ import annotations

import pytest

from app.services.errors import BadRequest
from app.web.wado import frame_numbers


@pytest.mark.parametrize(
    ("text", "numbers"),
    [("1", [1]), ("3,1,2", [3, 1, 2]), (" 2 , 5", [2, 5]), ("007", [7])],
)
def test_frame_lists(text: str, numbers: list[int]) -> None:
    assert frame_numbers(text, 10) == numbers


@pytest.mark.parametrize(
    "text",
    [
        "\u0661",  # issue 10: an Arabic-Indic digit was served as frame 1
        "1,\u0662",
        "\uff11",  # FULLWIDTH DIGIT ONE
        "1_0",
        "0",
        "-1",
        "+1",
        "1.0",
        "",
        "1,,2",
        str(2**31),  # beyond any frame count (IS is 32-bit)
        "9" * 5000,  # beyond int()'s own digit limit: a 400, not a ValueError (500)
    ],
)
def test_invalid_frame_lists(text: str) -> None:
    with pytest.raises(BadRequest, match="expected frame numbers from 1 in ASCII digits"):
        frame_numbers(text, 10)


@pytest.mark.parametrize("text", ["1,1", "1,2,3,2"])
def test_a_frame_listed_twice_is_refused(text: str) -> None:
    with pytest.raises(BadRequest, match="a frame number is listed twice"):
        frame_numbers(text, 10)


def test_more_frames_than_the_limit_are_refused_naming_it() -> None:
    """Issue 10: frames/1,1,1,... (10,000 times) made a 328 MB response."""
    assert frame_numbers("1,2,3", 3) == [1, 2, 3]
    with pytest.raises(BadRequest) as caught:
        frame_numbers(",".join(["1"] * 10_000), 3)
    assert str(caught.value) == (
        "the frame list names 10000 frames, over the limit of 3 per request"
        " (PACS_MAX_FRAMES_PER_REQUEST)"
    )
