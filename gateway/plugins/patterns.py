"""The redact plugin's matcher: named regexes compiled into one search, with checks.

``Redactor(patterns, replacement)`` takes ``(name, alternatives, check)`` triples,
the built-in ones (``BUILTINS``) and the operator's own (``custom``), and joins
every alternative into one regex, so a text is searched once however many
patterns are on. Two things keep that search fast in CPython's ``re``:

* every built-in alternative starts with a plain character or class (its first
  character) and puts its boundary lookbehind *after* it (``\\d(?<![\\d-]\\d)``):
  the engine then skips an alternative at a position with one comparison;
* the name of the alternative that matched is an empty group at its *end*
  (``(?P<_3>)``), so no group is opened at every position (``m.lastindex``).

A check refines a match the regex cannot judge: Luhn for card numbers, the
length and mod-97 of IBANs, the never-issued SSN areas, a digit in tokens. It
returns the accepted ``(start, end)`` (a prefix of a card number followed by
more digits, say; the e-mail check extends the start back over the local part,
since the alternative starts at ``@``), or None. When it refuses, the later
patterns are tried at the same position before the search moves on.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

__all__ = ["BUILTINS", "DEFAULT_BUILTINS", "Redactor", "custom"]

# (text, start, end, floor) -> the accepted (start, end), or None. ``floor``: the
# start may not move before it (the end of the previous match).
Check = Callable[[str, int, int, int], "tuple[int, int] | None"]
Pattern = tuple[str, tuple[str, ...], "Check | None"]  # name, alternatives, check


def _prefixes(text: str, seps: str) -> Iterator[int]:
    """The whole text's length, then each shorter prefix that ends before a separator."""
    yield len(text)
    for i in range(len(text) - 1, 0, -1):
        if text[i] in seps and text[i - 1] not in seps:
            yield i


# Luhn: every second digit from the right is doubled, and 10-18 count as their digit sum.
_DOUBLED = str.maketrans("0123456789", "0246813579")
_NO_SEPARATORS = str.maketrans("", "", " -")


def _luhn(digits: str) -> bool:
    return sum(map(int, digits[-1::-2] + digits[-2::-2].translate(_DOUBLED))) % 10 == 0


def _card(text: str, start: int, end: int, floor: int) -> tuple[int, int] | None:
    """The match, or its longest prefix before a separator, that is a card number."""
    for n in _prefixes(text[start:end], " -"):
        digits = text[start : start + n].translate(_NO_SEPARATORS)
        if len(digits) < 13:
            return None
        if len(digits) <= 19 and _luhn(digits) and digits.count(digits[0]) < len(digits):
            return start, start + n
    return None


# IBAN lengths by country (the ISO 13616 registry).
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24,
    "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31,
    "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip


def _iban(text: str, start: int, end: int, floor: int) -> tuple[int, int] | None:
    want = _IBAN_LENGTHS.get(text[start : start + 2])
    if want is None:
        return None
    for n in _prefixes(text[start:end], " "):
        compact = text[start : start + n].replace(" ", "")
        if len(compact) == want:
            number = "".join(str(int(c, 36)) for c in compact[4:] + compact[:4])
            return (start, start + n) if int(number) % 97 == 1 else None
    return None


def _ssn(text: str, start: int, end: int, floor: int) -> tuple[int, int] | None:
    area, group, serial = text[start : start + 3], text[start + 4 : start + 6], text[end - 4 : end]
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return None
    return start, end


def _ipv4(text: str, start: int, end: int, floor: int) -> tuple[int, int] | None:
    for octet in text[start:end].split("."):
        if int(octet) > 255 or (len(octet) > 1 and octet[0] == "0"):
            return None
    return start, end


def _has_digit(text: str, start: int, end: int, floor: int) -> tuple[int, int] | None:
    return (start, end) if any(c.isdigit() for c in text[start:end]) else None


_LOCAL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-")


def _email(text: str, start: int, end: int, floor: int) -> tuple[int, int] | None:
    """The alternative matched ``@domain``: take the local part before it (1-64
    characters, not preceded by another word character)."""
    i = start
    while i > floor and start - i < 64 and text[i - 1] in _LOCAL:
        i -= 1
    if i == start or (
        i > 0 and (text[i - 1] in _LOCAL or text[i - 1].isalnum() or text[i - 1] == "_")
    ):
        return None
    return i, end


# A digit that does not continue a number (not after a digit, nor after "digit-").
_DIGIT_START = r"\d(?<!\d\d)(?<!\d-\d)"
_NANP_TAIL = r"[ .-]?[2-9]\d\d[ .-]?\d{4}(?!\w|-\d)"

# Name -> (alternatives, check). Order matters: at one position the first pattern
# that matches and passes its check wins, so the specific ones come first.
BUILTINS: dict[str, tuple[tuple[str, ...], Check | None]] = {
    "api_key": (
        (
            r"s(?<![\w-]s)k-(?:ant-|proj-|svcacct-)?[\w-]{20,}+",
            r"g(?<![\w-]g)(?:h[pousr]_[A-Za-z0-9]{36,}+|ithub_pat_\w{22,}+)",
            r"x(?<![\w-]x)ox[abposr]-[A-Za-z0-9-]{10,}+",
            r"A(?<![\w-]A)Iza[\w-]{35,}+",
        ),
        _has_digit,
    ),
    "aws_access_key": ((r"A(?<![A-Z0-9]A)(?:KIA|SIA|BIA|CCA)[A-Z0-9]{16}(?![A-Z0-9])",), None),
    "bearer_token": ((r"[Bb](?<![\w-].)(?i:earer)[ \t]+[A-Za-z0-9._~+/-]{16,}+=*",), _has_digit),
    "email": (
        (r"@(?<=[A-Za-z0-9._%+-]@)(?:[A-Za-z0-9-]{1,63}\.){1,8}[A-Za-z]{2,24}(?![A-Za-z0-9-])",),
        _email,
    ),
    "us_ssn": ((_DIGIT_START + r"\d\d(?:-\d\d-\d{4}| \d\d \d{4})(?!-?\d)",), _ssn),
    "credit_card": (
        (  # 13-19 digits together, or in the groups cards are printed in
            _DIGIT_START + r"\d{12,18}(?!-?\d)",
            _DIGIT_START + r"\d{3}(?:[ -]\d{4}){3}(?:[ -]\d{1,3})?(?!-?\d)",  # 4-4-4-4(-3)
            _DIGIT_START + r"\d{3}[ -]\d{6}[ -]\d{4,5}(?!-?\d)",  # 4-6-5, 4-6-4
        ),
        _card,
    ),
    "iban": ((r"[A-Z](?<![A-Za-z0-9][A-Z])[A-Z]\d\d(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])",), _iban),
    "ipv4": ((r"\d(?<![\d.]\d)\d{0,2}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?!\d|\.\d)",), _ipv4),
    "phone": (
        (
            r"\+(?<![\w+]\+)(?:\d[ .()-]{0,2}){7,14}\d(?!\w|-\d)",
            r"1(?<![\w+]1)[ .-]?(?:\([2-9]\d\d\)|[2-9]\d\d)" + _NANP_TAIL,
            r"\((?<![\w+]\()[2-9]\d\d\)" + _NANP_TAIL,
            r"[2-9](?<![\w+][2-9])\d\d" + _NANP_TAIL,
        ),
        None,
    ),
}
DEFAULT_BUILTINS = ("api_key", "aws_access_key", "bearer_token", "email", "us_ssn", "credit_card")

_GLOBAL_FLAGS = re.compile(r"^\(\?([aimsux]+)\)")


def _backreference(src: str) -> bool:
    """Whether a regex refers to a group (``\\1``, ``(?P=x)``, ``(?(1)...)``): the
    reference would point elsewhere once the pattern joins the others."""
    i, n = 0, len(src)
    while i < n:
        if src[i] == "\\":
            if i + 1 < n and src[i + 1] in "123456789":
                return True
            i += 2
            continue
        if src.startswith("(?P=", i) or src.startswith("(?(", i):
            return True
        i += 1
    return False


def custom(name: str, src: str) -> Pattern:
    """An operator's regex as a pattern (``ValueError`` naming it when it cannot be one)."""
    where = f"patterns.{name}"
    try:
        alone = re.compile(src)
    except re.error as exc:
        raise ValueError(f"{where}: invalid regex ({exc.msg} at position {exc.pos})") from None
    if alone.fullmatch(""):
        raise ValueError(f"{where}: matches the empty string")
    if alone.groupindex:
        raise ValueError(f"{where}: named groups are not supported (use (?:...))")
    if _backreference(src):
        raise ValueError(f"{where}: backreferences are not supported")
    flags = _GLOBAL_FLAGS.match(src)
    if flags:  # global flags must lead the whole regex: scope them to this pattern
        letters, body = flags.group(1), src[flags.end() :]
        src = f"(?{letters}:{body}\n)" if "x" in letters else f"(?{letters}:{body})"
    else:
        src = f"(?:{src})"
    return name, (src,), None


class Redactor:
    """The enabled patterns, compiled once. ``find`` gives the first match; ``redact``
    replaces them all."""

    PASSES = 8  # searches of one text while replacements join text into new matches

    def __init__(self, patterns: list[Pattern], replacement: str) -> None:
        self.names = [name for name, _, _ in patterns]
        self._checks = [check for _, _, check in patterns]
        alternatives = [(i, alt) for i, (_, alts, _) in enumerate(patterns) for alt in alts]
        self._alts = [alt for _, alt in alternatives]
        self._owner = [i for i, _ in alternatives]
        self._after: dict[int, re.Pattern[str]] = {}
        self._rx = self._later(-1)
        self.replacements = [replacement.replace("{name}", name) for name in self.names]
        for name, text in zip(self.names, self.replacements, strict=True):
            hit = self.find(text)
            if hit is not None:
                raise ValueError(
                    f"replacement: {text!r} (for {name}) matches the pattern {self.names[hit[2]]}"
                )

    def _accept(
        self, k: int, text: str, start: int, end: int, floor: int
    ) -> tuple[int, int] | None:
        check = self._checks[self._owner[k]]
        span = (start, end) if check is None else check(text, start, end, floor)
        return span if span is not None and span[1] > span[0] else None

    def _later(self, k: int) -> re.Pattern[str]:
        """The alternatives after ``k``, joined (built when first needed)."""
        rx = self._after.get(k)
        if rx is None:
            rx = self._after[k] = re.compile(
                "|".join(f"{alt}(?P<_{j}>)" for j, alt in enumerate(self._alts) if j > k)
            )
        return rx

    def find(self, text: str, pos: int = 0) -> tuple[int, int, int] | None:
        """The first match at or after ``pos``: (start, end, pattern index)."""
        rx, last = self._rx, len(self._alts) - 1
        floor = pos
        while True:
            m = rx.search(text, pos)
            if m is None:
                return None
            start = m.start()
            while True:
                k = int(m.lastgroup[1:])  # type: ignore[index]
                span = self._accept(k, text, start, m.end(), floor)
                if span is not None:
                    return span[0], span[1], self._owner[k]
                if k == last:
                    break
                # Refused: the later alternatives, at the same position.
                m = self._later(k).match(text, start)
                if m is None:
                    break
            pos = start + 1

    def _pass(self, text: str, counts: list[int]) -> tuple[str, int]:
        out: list[str] = []
        last = n = 0
        hit = self.find(text)
        while hit is not None:
            start, end, i = hit
            out.append(text[last:start])
            out.append(self.replacements[i])
            counts[i] += 1
            n += 1
            last = end
            hit = self.find(text, end)
        if not n:
            return text, 0
        out.append(text[last:])
        return "".join(out), n

    def redact(self, text: str, counts: list[int]) -> str | None:
        """``text`` with every match replaced (``counts[i]`` += matches of pattern i);
        None if replacements keep joining text into new matches."""
        for _ in range(self.PASSES):
            text, n = self._pass(text, counts)
            if not n:
                return text
        return None
