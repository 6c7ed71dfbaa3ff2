"""Captions checked against what curation measured: does the caption say what the clip's row says?

Every caption (generated, enhanced or imported) is read for claims about five signals, and each
claim is compared with the clip's manifest row:

| signal          | caption claims                                      | measured (manifest)          |
|-----------------|-----------------------------------------------------|------------------------------|
| camera_motion   | pans/tilts/zooms and their direction, a static camera | `camera_motion`              |
| motion          | still / slow / moderate / fast                      | `motion_score` as a level    |
| brightness      | dark / dim / evenly lit / bright (lighting, not a colour shade) | `luminance_mean` as a level |
| text            | burnt-in text, or "no text"                         | `text_area` (when OCR ran)   |
| colors          | colour names (with synonyms)                        | `dominant_colors`            |

A signal the caption says nothing about, or that was not measured, is not compared. Words are
matched per clause (split at sentence ends and at "but", "while", "whereas"), with synonyms, and a
negator up to four words before a claim, in its phrase (a comma, semicolon, "and" or "but" ends its
reach), turns it around or drops it ("the camera does not move", "no text"); "barely" or "hardly" there
weakens it instead ("the camera barely pans left" pans left; "barely moves" says neither still nor
moving). Stillness words said of the camera ("a motionless camera", "no movement of the camera") say
nothing of the scene's amount of motion. A camera verb counts
only with the camera as its subject ("the camera pans left", not "a dog tilts its head up"). Levels
one step apart agree (a "slow" caption on a "moderate" clip): the level boundaries are arbitrary,
the opposite ends are not.

`signal_checks(dense, short, row)` returns one entry per (field, signal) compared: the signal, which
caption field, the words the caption used, what was measured, and whether they agree. They are
stored with the caption row (`CAPTIONS.signal_checks`); `policy` decides whether a disagreement
fails the caption or only flags it.
"""

from __future__ import annotations

import re

from curation.core.schema import CHK, M
from curation.core.vocab import COLORS
from recaption.prompts import BRIGHTNESS_LEVELS, MOTION_LEVELS
from recaption.prompts import level as level_of

SIGNALS = ("camera_motion", "motion", "brightness", "text", "colors")

# text_area (fraction of the frame) at or above which a clip has burnt-in text, and at or below which
# it has none; between the two the OCR is too unsure to contradict a caption either way
TEXT_PRESENT_AREA = 0.01
TEXT_ABSENT_AREA = 0.001

NEGATORS = frozenset("not no nothing never without nor neither".split())
# "barely", "hardly": a little, not the opposite ("the camera barely pans left" still pans left); a claim
# they weaken keeps its direction but says nothing of its amount
DIMINISHERS = frozenset("barely hardly scarcely".split())
CAMERA_NOUNS = frozenset("camera view shot lens viewpoint footage".split())
CLAUSE_BREAK = re.compile(r"[.;!?]+|\s+(?:but|while|whereas|although|though|as)\s+|\s+-+\s+")


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+(?:['-][a-z]+)*", text)


NEGATION_STOP = re.compile(r"[,;]|\b(?:and|but)\b")


def _negated(before: str) -> bool:
    """A negator among the four words before a claim, in its own phrase: a comma, a semicolon, "and" or
    "but" ends a negation's reach ("no people, and text reads 'Exit'" says there is text)."""
    return any(w in NEGATORS or w.endswith("n't") for w in _reach(before))


def _diminished(before: str) -> bool:
    """"barely" or "hardly" in a negator's reach before a claim."""
    return any(w in DIMINISHERS for w in _reach(before))


def _reach(before: str) -> list[str]:
    return _words(NEGATION_STOP.split(before)[-1])[-4:]


# words that may stand between the camera and its verb: auxiliaries, negators, adverbs
SUBJECT_FILLERS = frozenset("is are was were be been being has have had does do did can could will would may might "
                            "seems appears continues starts begins to then also still just now itself".split())


def _camera_subject(before: str) -> bool:
    """The camera (or view, shot) is the subject of the verb that follows `before`: it is the last word
    before it but for auxiliaries, negators and adverbs ("the camera then slowly pans", "the camera does
    not move"); "the camera captures a car turning left" and "the footage shows people moving" are not."""
    for w in reversed(_words(before.rsplit(",", 1)[-1])):
        if w in CAMERA_NOUNS:
            return True
        if not (w in SUBJECT_FILLERS or w in NEGATORS or w.endswith(("ly", "n't"))):
            return False
    return False


def clauses(text: str) -> list[str]:
    text = (text or "").lower().replace("\u2019", "'")
    return [c.strip() for c in CLAUSE_BREAK.split(text) if c and c.strip()]


# -- camera motion ---------------------------------------------------------------------------------
PAN = re.compile(r"\bpan(?:s|ning|ned)?\b")
TILT = re.compile(r"\btilt(?:s|ing|ed)?\b")
ZOOM = re.compile(r"\bzoom(?:s|ing|ed)?\b")
MOVE = re.compile(r"\b(?:move[sd]?|moving|sweep(?:s|ing)?|swept|drift(?:s|ing|ed)?|glid(?:e|es|ing|ed)|"
                  r"slid(?:e|es|ing)?|track(?:s|ing|ed)?|truck(?:s|ing|ed)?|travel(?:s|ling|ing|led|ed)?|"
                  r"swing(?:s|ing)?|swung|turn(?:s|ing|ed)?|dolly(?:ing)?|dollies|push(?:es|ing|ed)?|"
                  r"pull(?:s|ing|ed)?|crane[sd]?|craning|rise[sn]?|rising|rose|descend(?:s|ing|ed)?|"
                  r"lower(?:s|ing|ed)?|follow(?:s|ing|ed)?|shake[sn]?|shaking|wobbl(?:e|es|ing))\b")
LEFT_RIGHT = {"left": "left", "leftward": "left", "leftwards": "left", "right": "right", "rightward": "right",
              "rightwards": "right"}
UP_DOWN = {"up": "up", "upward": "up", "upwards": "up", "skyward": "up", "down": "down", "downward": "down",
           "downwards": "down"}
IN_OUT = {"in": "in", "into": "in", "inward": "in", "inwards": "in", "closer": "in", "forward": "in",
          "forwards": "in", "toward": "in", "towards": "in", "out": "out", "outward": "out", "outwards": "out",
          "away": "out", "back": "out", "backward": "out", "backwards": "out"}
STATIC_ADJ = r"(?:static|still(?!\s+\w+ing\b)|stationary|fixed|steady|motionless|unmoving|immobile|locked(?:[- ]off)?)"
STATIC = [
    re.compile(r"\b(?:static|stationary|fixed|locked[- ]off|locked|still|steady|tripod|unmoving|motionless)\s+"
               r"(?:camera|shot|view|angle|viewpoint|perspective|framing)\b"),
    re.compile(rf"\b(?:camera|view|shot|framing)\s+(?:is\s+|remains\s+|stays\s+|holds\s+|appears\s+|seems\s+|"
               rf"keeps\s+|stands\s+)?(?:\w+ly\s+)?{STATIC_ADJ}\b"),
    re.compile(r"\b(?:no|without\s+(?:any\s+)?)\s*(?:visible\s+|noticeable\s+)?camera\s+(?:movement|motion|moves)\b"),
]
MOVING = re.compile(r"\b(?:hand-?held|shaky)\s+(?:camera|shot|footage)\b")


def _direction(after: str, table: dict[str, str], within: int) -> str | None:
    """The first direction word of `table` among the next `within` words (before a comma)."""
    window = _words(after.split(",", 1)[0])[: within + 3]
    joined = " ".join(window)
    if table is LEFT_RIGHT:
        if re.search(r"\bleft to (?:the )?right\b", joined):
            return "right"
        if re.search(r"\bright to (?:the )?left\b", joined):
            return "left"
    if table is UP_DOWN:
        if re.search(r"\bbottom to (?:the )?top\b", joined):
            return "up"
        if re.search(r"\btop to (?:the )?bottom\b", joined):
            return "down"
    for i, w in enumerate(window[:within]):
        if w in table and not (w == "in" and window[i + 1: i + 2] in (["a"], ["an"], ["the"], ["its"])):  # "in a circle"
            return table[w]
    return None


DETERMINERS = frozenset("a an the one another this that its".split())


def _tight_direction(after: str, tables: tuple[dict[str, str], ...]) -> bool:
    """A direction right after a word ("to the right", "into the face", "from left to right", "slowly up")."""
    w = _words(after.split(",", 1)[0])[:5]
    if w and w[0].endswith("ly"):
        w = w[1:]
    if w and any(w[0] in t for t in tables):
        return True
    if w[:1] in (["to"], ["toward"], ["towards"], ["from"], ["over"]):
        rest = w[1:]
        rest = rest[1:] if rest[:1] == ["to"] else rest  # "over to the left"
        rest = rest[1:] if rest[:1] == ["the"] else rest
        return bool(rest) and (any(rest[0] in t for t in tables) or rest[0] in ("top", "bottom"))
    return False


def _camera_noun(verb: str, before: str, after: str, tables: tuple[dict[str, str], ...]) -> bool:
    """The move named with its direction right after it, as a noun ("a slow pan to the right", "a zoom into
    the face"; not "holds a pan in her right hand") or as a verb opening its clause with no subject
    ("Panning left, the camera ...", "Slowly tilting up to the sky")."""
    if not _tight_direction(after, tables):
        return False
    if all(w.endswith("ly") for w in _words(before)):
        return True
    return verb in ("pan", "tilt", "zoom") and any(w in DETERMINERS for w in _words(before.rsplit(",", 1)[-1])[-3:])


def _camera_claim(verb: str, before: str, after: str, subject: bool | None = None) -> str | None:
    """A camera-motion label (or an axis "pan"/"tilt"/"zoom", or "moving") for one verb, or None.

    The camera must be the verb's subject ("a dog tilts its head up", "a motorcycle zooms away" are not
    the camera), or the move named as a noun with its direction ("a slow pan to the right")."""
    subject = _camera_subject(before) if subject is None else subject
    if PAN.fullmatch(verb):
        if not subject and _words(before)[-1:] and _words(before)[-1] in ("leftward", "leftwards", "rightward",
                                                                          "rightwards"):
            return f"pan_{LEFT_RIGHT[_words(before)[-1]]}"  # "a slow leftward pan"
        # a bare "pan" is a noun as often as a verb ("pots and pans", "holds a pan in her right hand")
        across = verb != "pan" and re.match(r"\s*(?:across|over|around|along)\b", after)
        if not (subject or across or _camera_noun(verb, before, after, (LEFT_RIGHT, UP_DOWN))):
            return None
        lr, ud = _direction(after, LEFT_RIGHT, 6), _direction(after, UP_DOWN, 2)
        if lr or ud:
            return f"pan_{lr}" if lr else f"tilt_{ud}"  # "pans up" is what people call a tilt
        return "pan"
    if TILT.fullmatch(verb):
        if not (subject or _camera_noun(verb, before, after, (UP_DOWN,))):
            return None
        ud = _direction(after, UP_DOWN, 4)
        return f"tilt_{ud}" if ud else "tilt"
    if ZOOM.fullmatch(verb):  # "a car zooms past" is not the camera
        if not (subject or _camera_noun(verb, before, after, (IN_OUT,))):
            return None
        io = _direction(after, IN_OUT, 2)
        return f"zoom_{io}" if io else "zoom"
    if not subject:  # "the circle moves left" is the subject's motion, not the camera's
        return None
    if verb.startswith(("rise", "rising", "rose", "crane", "craning")):
        return "tilt_up"
    if verb.startswith(("descend", "lower")):
        return "tilt_down"
    lr, ud, io = _direction(after, LEFT_RIGHT, 4), _direction(after, UP_DOWN, 2), _direction(after, IN_OUT, 2)
    if lr or ud or io:
        return f"pan_{lr}" if lr else f"tilt_{ud}" if ud else f"zoom_{io}"
    return "zoom_in" if verb.startswith("push") else "moving"


DIRECTION_WORDS = set(LEFT_RIGHT) | set(UP_DOWN) | (set(IN_OUT) - {"in", "into", "toward", "towards"})
# words between two verbs of one subject: "pans left and then tilts up", "zooms in, then pans to the right"
CARRIES_SUBJECT = set(LEFT_RIGHT) | set(UP_DOWN) | set(IN_OUT) | set("and then to the from before finally".split())


def _phrase(verb: str, after: str) -> str:
    """The verb and the words after it up to its direction ("pans slowly to the left"), for the record."""
    window = _words(after.split(",", 1)[0])[:6]
    ends = [i for i, w in enumerate(window) if w in DIRECTION_WORDS or w == "in" and i == 0]
    if not ends:
        return verb
    end = ends[1] if len(ends) > 1 and window[ends[0] - 1: ends[0]] == ["from"] else ends[0]  # "from left to right"
    return " ".join([verb, *window[: end + 1]])


def camera_claims(text: str) -> tuple[set[str], set[str], bool, list[str]]:
    """(motions claimed, motions denied, static claimed, the words used) of a caption."""
    claimed, denied, static, said = set(), set(), False, []
    for clause in clauses(text):
        for pattern in STATIC:
            for m in pattern.finditer(clause):
                before = clause[: m.start()]
                if not (pattern is not STATIC[2] and (_negated(before) or _diminished(before))):
                    static = True
                    said.append(m.group(0))
        if MOVING.search(clause):
            claimed.add("moving")
            said.append(MOVING.search(clause).group(0))
        last_end = None  # where the last camera verb of the clause ended: "the camera pans left, then tilts up"
        for m in re.finditer(rf"{PAN.pattern}|{TILT.pattern}|{ZOOM.pattern}|{MOVE.pattern}", clause):
            before, after = clause[: m.start()], clause[m.end():]
            subject = None
            if last_end is not None and all(w in CARRIES_SUBJECT or w.endswith("ly")
                                            for w in _words(clause[last_end: m.start()])):
                subject = True  # the same subject, the camera, carried over to the next verb
            claim = _camera_claim(m.group(0), before, after, subject)
            if claim is None:
                continue
            last_end = m.end()
            phrase = _phrase(m.group(0), after)
            if _negated(before):
                if claim == "moving":  # "the camera does not move"
                    static = True
                else:
                    denied.add(claim)
                said.append(f"{_words(before)[-1]} {phrase}" if _words(before) else phrase)
                continue
            slight = _diminished(before) or re.match(r"(?:\s+\w+ly)?\s+(?:only\s+)?slightly\b", after)
            if slight and claim == "moving":  # "the camera barely moves": neither still nor a named move
                continue
            claimed.add(claim)
            said.append(phrase)
    return claimed, denied, static, said


def compare_camera(text: str, measured: str) -> tuple[str, bool] | None:
    """(the caption's words, agrees) about camera motion, or None when the caption says nothing of it.

    "moving" (a handheld camera, "the camera moves") agrees with any motion; a named motion must be
    the measured one or its axis ("pans" on a pan_left clip); anything but "static" agrees with mixed."""
    claimed, denied, static, said = camera_claims(text)
    if not (claimed or denied or static):
        return None
    named = claimed - {"moving"}
    axis = measured.split("_")[0]
    if measured == "static":
        agrees = not claimed
    elif named:
        agrees = measured == "mixed" or bool(named & {measured, axis})
    else:
        agrees = bool(claimed) or not static
    if denied & {measured, axis}:  # "the camera does not pan left" on a pan_left clip
        agrees = False
    return "; ".join(dict.fromkeys(said)), agrees


# -- amount of motion, brightness: levels ------------------------------------------------------------
MOTION_ORDER = [name for _, name in MOTION_LEVELS]  # almost still, slow, moderate, fast
BRIGHTNESS_ORDER = [name for _, name in BRIGHTNESS_LEVELS]  # dark, dim, evenly lit, bright
MOTION_WORDS = [
    (0, re.compile(r"\b(?:almost\s+|nearly\s+|virtually\s+)?nothing\s+(?:\w+\s+){0,3}?(?:moves|moving|happens|stirs)\b")),
    (0, re.compile(r"\bno\s+(?:visible\s+|noticeable\s+|apparent\s+)?(?:movement|motion)\b")),
    (0, re.compile(r"\b(?:motionless|still\s+(?:scene|image|life|picture)|frozen\s+(?:frame|image|picture|shot|"
                   r"moment|in\s+time)|(?:image|picture|frame|scene|shot|video|footage|everything)\s+(?:is|remains|stays|seems|appears)\s+"
                   r"frozen)\b")),
    (0, re.compile(r"\b(?:is|are|remains?|stays?|stands?|sits?|lies?|holds?)\s+(?:completely\s+|perfectly\s+|"
                   r"almost\s+|nearly\s+|entirely\s+)?still\b(?!\s+\w+ing\b)")),
    (1, re.compile(r"\b(?:slow|slowly|slower|gradual|gradually|gently|leisurely|lazily|unhurried|sluggish(?:ly)?)\b")),
    (2, re.compile(r"\b(?:moderate(?:ly)?|steady\s+pace)\b")),
    (3, re.compile(r"\b(?:fast|faster|quick|quickly|rapid|rapidly|swift|swiftly|speed(?:s|ing)?|races?|racing|"
                   r"dash(?:es|ing)?|darts?|darting|hurtl(?:e|es|ing)|whizz(?:es|ing)?|zips?|zipping|"
                   r"frantic(?:ally)?|briskly)\b")),
]
COLOR_SYNONYMS = {
    "grey": "gray", "silver": "gray", "crimson": "red", "scarlet": "red", "maroon": "red", "navy": "blue",
    "azure": "blue", "cobalt": "blue", "teal": "cyan", "turquoise": "cyan", "aqua": "cyan", "gold": "yellow",
    "golden": "yellow", "amber": "orange", "violet": "purple", "lavender": "purple", "lilac": "purple",
    "magenta": "pink", "fuchsia": "pink", "beige": "brown", "tan": "brown", "chocolate": "brown",
    "lime": "green", "olive": "green", "emerald": "green", "ivory": "white", "cream": "white",
}
COLOR_NAMES = {**{c: c for c in COLORS}, **COLOR_SYNONYMS}
COLOR_WORD = re.compile(r"\b(" + "|".join(sorted(COLOR_NAMES, key=len, reverse=True)) + r")(?:ish)?\b")
COLOR_CONTEXT = r"(?:-?\s*(?:" + "|".join(COLOR_NAMES) + r"|colou?r(?:s|ed|ful)?|hues?|palette|tones?))"
LIGHT_NOUNS = (r"(?:scene|setting|room|image|picture|frame|shot|video|clip|footage|lighting|light|interior|"
               r"environment|background|surroundings|atmosphere|night|sky|space|place|area|exposure)")
# words about the light, by level: adjectives (about the scene or its light only) and phrases alone
BRIGHTNESS_ADJECTIVES = {
    "dark": 0, "darker": 0, "gloomy": 0, "murky": 0, "unlit": 0, "pitch black": 0, "pitch dark": 0,
    "dim": 1, "dimmer": 1, "dusky": 1, "shadowy": 1, "poorly lit": 1, "dimly lit": 1,
    "evenly lit": 2, "well lit": 2, "even": 2,
    "bright": 3, "brighter": 3, "brilliant": 3, "sunlit": 3, "sunny": 3, "brightly lit": 3, "glaring": 3,
    "dazzling": 3, "luminous": 3,
}
BRIGHTNESS_PHRASES = {
    "darkness": 0, "low key": 0, "underexposed": 0, "darkly lit": 0, "pitch black": 0, "dimly lit": 1,
    "poorly lit": 1, "low light": 1, "evenly lit": 2, "well lit": 2, "brightly lit": 3, "high key": 3,
    "overexposed": 3, "blown out": 3, "sunlit": 3, "sun drenched": 3,
}


def _alternatives(words) -> str:
    return "|".join(re.escape(w).replace(r"\ ", "[- ]") for w in sorted(words, key=len, reverse=True))


ADJECTIVE = _alternatives(BRIGHTNESS_ADJECTIVES)
BRIGHTNESS_PATTERNS = [  # the group is the word whose level counts
    re.compile(rf"\b({_alternatives(BRIGHTNESS_PHRASES)})\b"),
    re.compile(rf"\b({ADJECTIVE})\b(?!{COLOR_CONTEXT})\s+(?:\w+\s+)?{LIGHT_NOUNS}\b"),
    re.compile(rf"\b{LIGHT_NOUNS}\s+(?:is|are|looks|appears|remains|seems|stays)\s+(?:very\s+|quite\s+|rather\s+|"
               rf"fairly\s+|mostly\s+|extremely\s+)?({ADJECTIVE})\b(?!{COLOR_CONTEXT})"),
]


def brightness_claims(text: str) -> list[tuple[int, str]]:
    """(level, words) for each statement about the light: "brightly lit", "a dark scene", "the picture is dim".

    An adjective counts only about the light or the scene: "bright red", "a dark blue background" and
    "a dark suit" say nothing about the exposure."""
    found = []
    for clause in clauses(text):
        for pattern in BRIGHTNESS_PATTERNS:
            for m in pattern.finditer(clause):
                before = clause[: m.start()]
                if _negated(before) or _diminished(before) or re.search(r"\bnot\b", m.group(0)):
                    continue
                word = re.sub(r"[- ]+", " ", m.group(1))
                found.append((BRIGHTNESS_PHRASES.get(word, BRIGHTNESS_ADJECTIVES.get(word)), m.group(0)))
    return found


def motion_claims(text: str) -> list[tuple[int, str]]:
    found = []
    for clause in clauses(text):
        for level, pattern in MOTION_WORDS:
            for m in pattern.finditer(clause):
                before, after = clause[: m.start()], clause[m.end():]
                if level > 0 and (_negated(before) or _diminished(before)):  # "not fast" says nothing
                    continue
                if level == 0 and _about_the_camera(before, after):  # "the camera is still": a camera claim
                    continue
                found.append((level, m.group(0)))
    return found


CAMERA_AFTER = re.compile(rf"\s+(?:(?:of|from|by)\s+(?:the\s+)?)?(?:{'|'.join(CAMERA_NOUNS)})\b")


def _about_the_camera(before: str, after: str) -> bool:
    """A stillness word said of the camera: its subject ("the camera is still"), the noun it describes ("a
    motionless camera"), or what it is of ("no movement of the camera")."""
    return _camera_subject(before) or bool(CAMERA_AFTER.match(after))


def compare_levels(claims: list[tuple[int, str]], order: list[str], measured: str) -> tuple[str, bool] | None:
    if not claims:
        return None
    distance = min(abs(level - order.index(measured)) for level, _ in claims)
    return "; ".join(dict.fromkeys(words for _, words in claims)), distance <= 1


# -- burnt-in text, colours ------------------------------------------------------------------------
TEXT_WORDS = re.compile(r"\b(?:text|texts|lettering|letters|captions?|subtitles?|title\s+cards?|titles|typography|"
                        r"inscriptions?|written\s+words?|watermarks?|credits|words)\b")


def text_claims(text: str) -> list[tuple[bool, str]]:
    """(present, words): "white text reads 'Sale'" -> present; "no text is visible" -> absent."""
    found = []
    for clause in clauses(text):
        for m in TEXT_WORDS.finditer(clause):
            before = clause[: m.start()]
            if _diminished(before) and not _negated(before):  # "barely legible text", "hardly any text": unsure
                continue
            absent = _negated(before) or bool(re.search(r"\bfree\s+of\s+(?:\w+\s+)?$", before))
            absent = absent or bool(re.match(r"-free\b", clause[m.end():]))
            found.append((not absent, (f"{_words(before)[-1]} " if absent and _words(before) else "") + m.group(0)))
    return found


def color_claims(text: str) -> list[tuple[str, str]]:
    """(palette colour, word) for each colour the caption names; "black and white" is a style, not colours."""
    found = []
    for clause in clauses(text):
        clause = re.sub(r"\bblack[- ]and[- ]white\b", " ", clause)
        for m in COLOR_WORD.finditer(clause):
            before = clause[: m.start()]
            if not (_negated(before) or _diminished(before)):  # "no red", "hardly any red": not a claim
                found.append((COLOR_NAMES[m.group(1)], m.group(0)))
    return found


NEAR_COLORS = {frozenset(p) for p in [("orange", "yellow"), ("orange", "red"), ("pink", "red"), ("pink", "purple"),
                                      ("cyan", "blue"), ("cyan", "green"), ("brown", "orange"), ("gray", "white"),
                                      ("gray", "black")]}


def compare_colors(text: str, measured: list[str]) -> tuple[str, bool] | None:
    claims = color_claims(text)
    if not claims:
        return None
    agrees = any(c in measured or frozenset((c, m)) in NEAR_COLORS for c, _ in claims for m in measured)
    return ", ".join(dict.fromkeys(word for _, word in claims)), agrees


# -- one caption against one clip ------------------------------------------------------------------
def measured_signals(row: dict) -> dict[str, str | list[str] | float]:
    """The clip's measurements, as the words compared: {signal: value}. Missing ones are left out."""
    out: dict = {}
    if row.get(M.camera_motion):
        out["camera_motion"] = row[M.camera_motion]
    motion = level_of(row.get(M.motion_score), MOTION_LEVELS)
    if motion:
        out["motion"] = motion
    brightness = level_of(row.get(M.luminance_mean), BRIGHTNESS_LEVELS)
    if brightness:
        out["brightness"] = brightness
    if row.get(M.text_area) is not None and row.get(M.text_detector) not in (None, "none"):
        out["text"] = float(row[M.text_area])
    if row.get(M.dominant_colors):
        out["colors"] = list(row[M.dominant_colors])
    return out


def _compare(signal: str, text: str, measured) -> tuple[str, bool, str] | None:
    """(caption words, agrees, measured as words) for one signal, or None when the caption says nothing."""
    if signal == "camera_motion":
        result = compare_camera(text, measured)
        shown = measured
    elif signal == "motion":
        result = compare_levels(motion_claims(text), MOTION_ORDER, measured)
        shown = measured
    elif signal == "brightness":
        result = compare_levels(brightness_claims(text), BRIGHTNESS_ORDER, measured)
        shown = measured
    elif signal == "text":
        claims = text_claims(text)
        if not claims:
            return None
        said_present = any(present for present, _ in claims)
        agrees = measured > TEXT_ABSENT_AREA if said_present else measured < TEXT_PRESENT_AREA
        result = ("; ".join(dict.fromkeys(w for _, w in claims)), agrees)
        shown = f"text on {measured:.1%} of the frame" if measured > 0 else "no text found"
    else:
        result = compare_colors(text, measured)
        shown = ", ".join(measured)
    if result is None:
        return None
    return result[0], result[1], shown


def signal_checks(dense: str | None, short: str | None, row: dict) -> list[dict]:
    """Every comparison of the captions of one clip with its measured signals (see the module doc)."""
    measured = measured_signals(row)
    checks = []
    for field, text in (("dense", dense), ("short", short)):
        if not text:
            continue
        for signal in SIGNALS:
            if signal not in measured:
                continue
            result = _compare(signal, text, measured[signal])
            if result is not None:
                words, agrees, shown = result
                checks.append({CHK.signal: signal, CHK.field: field, CHK.caption: words, CHK.measured: shown,
                               CHK.agrees: agrees})
    return checks


def disagreement_error(checks: list[dict], signals=None) -> str | None:
    """The error of a caption that fails on its disagreements (policy `fail`) of `signals` (None: all), or None."""
    wrong = [c for c in checks if not c[CHK.agrees] and (signals is None or c[CHK.signal] in signals)]
    if not wrong:
        return None
    return "disagrees with the measurements: " + "; ".join(
        f"{c[CHK.signal]} ({c[CHK.field]} caption says '{c[CHK.caption]}', measured {c[CHK.measured]})" for c in wrong)
