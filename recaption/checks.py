"""Checks a generated caption must pass before it is written as good.

Each check returns a short reason, or None. The heuristics, and why they are enough:

- garbled: control characters or Unicode replacement characters (what random or broken weights emit).
- empty: fewer than `min_words` words after stripping (dense 15, short 2).
- truncated: generation stopped at `max_new_tokens` without the end-of-turn token, or a dense caption
  that does not end with sentence punctuation.
- repetition: one character repeated 8+ times ("!!!!!!!!"), one word repeated 4+ times in a row, or
  fewer than half of the word 3-grams distinct in a caption of 12+ words (a generation loop).
- refusal: phrases models use to decline ("I'm sorry", "I cannot", "as an AI", "unable to see").
- wrong language: captions must be English. Less than 90% of the letters are ASCII letters, or, in a
  caption of 8+ words, fewer than 5% of the words are common English function words ("the", "a",
  "is", "with", ...), which every English sentence of that length has and other languages rarely do.
- too long: a short caption over twice its word limit.
"""

from __future__ import annotations

import re

from recaption.prompts import SHORT_MAX_WORDS

ENGLISH_FUNCTION_WORDS = frozenset(
    "a an the is are was were be of in on at to from with and or but as by for into over under its their his "
    "her this that these those it they he she while through across against behind near".split()
)
REFUSAL = re.compile(
    r"\b(i'?m sorry|i am sorry|i apologi[sz]e|i can(?:no|')t|i am unable|i'm unable|as an ai|"
    r"unable to (?:see|view|watch|describe|process)|cannot (?:see|view|watch|describe)|"
    r"no (?:video|image|frames?) (?:was|were|is) (?:provided|attached))\b",
    re.IGNORECASE,
)
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ufffd]")
CHAR_RUN = re.compile(r"(.)\1{7,}")


def _words(text: str) -> list[str]:
    return re.findall(r"[^\W\d_]+(?:'[^\W\d_]+)?", text.lower())


def check_caption(text: str | None, kind: str = "dense", hit_token_limit: bool = False) -> str | None:
    """Why `text` is not a usable caption of `kind` ("dense" or "short"), or None when it passes."""
    if kind not in ("dense", "short"):
        raise ValueError(f"caption kind must be 'dense' or 'short', not {kind!r}")
    text = (text or "").strip()
    min_words = 15 if kind == "dense" else 2
    words = _words(text)
    if CONTROL.search(text):
        return "garbled: control or replacement characters in the output"
    if len(words) < min_words:
        return f"empty: {len(words)} words (at least {min_words} expected)"
    if CHAR_RUN.search(text):
        return "repetition: a character repeated 8 or more times"
    for i in range(len(words) - 3):
        if words[i] == words[i + 1] == words[i + 2] == words[i + 3]:
            return f"repetition: '{words[i]}' repeated 4 or more times in a row"
    if len(words) >= 12:
        trigrams = list(zip(words, words[1:], words[2:], strict=False))
        if len(set(trigrams)) < 0.5 * len(trigrams):
            return "repetition: the same phrases loop"
    if REFUSAL.search(text):
        return "refusal: the model declined to describe the clip"
    letters = [c for c in text if c.isalpha()]
    if letters and sum(c.isascii() for c in letters) < 0.9 * len(letters):
        return "wrong language: under 90% of letters are Latin ASCII (captions must be English)"
    if len(words) >= 8 and sum(w in ENGLISH_FUNCTION_WORDS for w in words) < 0.05 * len(words):
        return "wrong language: no common English words (captions must be English)"
    if hit_token_limit:
        return "truncated: generation stopped at max_new_tokens; raise it or shorten the prompt"
    if kind == "dense" and not text.endswith((".", "!", "?", '"', "'", ")")):
        return "truncated: the caption stops mid-sentence"
    if kind == "short" and len(words) > 2 * SHORT_MAX_WORDS:
        return f"too long: {len(words)} words for a short caption (limit about {SHORT_MAX_WORDS})"
    return None
