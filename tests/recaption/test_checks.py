"""Caption checks on crafted bad outputs, and on good captions that must pass."""

import pytest

from recaption.checks import check_caption

GOOD_DENSE = (
    "A red circle glides from left to right across a deep blue background while the camera pans slowly "
    "to the left. The shape is flat and evenly coloured, with crisp edges. The scene is evenly lit with "
    "saturated primary colours, framed as a wide shot in a simple graphic animation style."
)


def test_good_captions_pass():
    assert check_caption(GOOD_DENSE, "dense") is None
    assert check_caption("A red circle moves right across a blue background.", "short") is None


@pytest.mark.parametrize(
    "text, kind, cut, reason",
    [
        ("", "dense", False, "empty"),
        ("   \n ", "short", False, "empty"),
        ("A red circle.", "dense", False, "empty"),
        ("ab\x19cd \ufffd\ufffd efg", "dense", False, "garbled"),
        (GOOD_DENSE[:-1] + " and then the", "dense", False, "truncated"),
        (GOOD_DENSE, "dense", True, "truncated"),
        (GOOD_DENSE + " !!!!!!!!!!!!", "dense", False, "repetition"),
        ("A red circle moves moves moves moves across the blue background of the frame.", "short", False,
         "repetition"),
        ("The circle moves to the right. " * 8, "dense", False, "repetition"),
        ("I'm sorry, but I cannot describe the contents of this video because no frames were provided to me.",
         "dense", False, "refusal"),
        ("As an AI language model I am unable to see videos, so here is a general description of a scene.",
         "dense", False, "refusal"),
        ("Ein roter Kreis bewegt sich langsam nach rechts vor einem blauen Hintergrund, während die Kamera "
         "nach links schwenkt und die Szene gleichmäßig beleuchtet bleibt, in einem schlichten Grafikstil.",
         "dense", False, "wrong language"),
        ("一个红色的圆圈在蓝色背景上从左向右移动，摄像机缓慢地向左平移，画面明亮，颜色饱和，风格简洁。 red circle blue",
         "short", False, "wrong language"),
        (GOOD_DENSE, "short", False, "too long"),
    ],
)
def test_bad_outputs_are_caught(text, kind, cut, reason):
    problem = check_caption(text, kind, hit_token_limit=cut)
    assert problem is not None and problem.startswith(reason), problem


def test_unknown_kind_is_an_error():
    with pytest.raises(ValueError, match="dense"):
        check_caption("text", "long")
