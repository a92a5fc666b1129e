"""Invented, pronounceable, unique names built from short syllables.

Short syllable words ("Kelvor", "Teel") are what a byte-level BPE trained on the world merges into one or
two tokens, which a tiny model needs in order to learn a fact about them.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

_ONSETS = (
    "b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "tr", "st",
)  # fmt: skip
# Repeated entries weight the draw toward plain vowels.
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "ai", "ee", "ou")
_CODAS = ("", "", "", "", "n", "r", "l", "s", "m", "k", "rn", "nd")
# Syllable soup can land on words nobody wants as a name, or on plain English words that would read as
# part of the sentence ("Aldir End").
_BLOCKED_WORDS = """
anal anus bum butt cock cum damn dick fag fuck hell homo kike nazi nigg porn rape sex shit slut spic tit
tits twat piss poo poop
able add age ago aid aim air all and ant any arm art ask bad bag ban bar bat bed bee bet big bin bit
boo born box boy bud bus but buy can cap car cat cod con cot cow cub cup cut dad day den did die dig
dim din dog don dot due dug ear eat egg end era eve far fat fee few fin fit fix fog for fun fur gap
gas get god got gum gun gut had ham has hat her hid him hip his hit hot how hub hug hut ill ink inn
its job kid kin kit lab lad lap law lay led leg let lid lip lit log lot low mad man map mat men met
mid mob mom mud mug nap net new nod nor not now nun nut oak odd off oil old one our out own pad pal
pan pat pen pet pig pin pit pod pop pot pub pun pup put ran rat raw red rib rid rim rip rob rod rot
row rub rug rum run sad sat saw say sea see set she sin sip sir sit six ski sky son sue sum sun tab
tan tap tar tea ten the tie tin tip toe ton too top tot toy try tub two van vat vet via vow war was
wet who why win yes yet zoo also back band bank base bend bird bold bone book boot dark dear deal
dean deer done door down else ever fall farm fast fear feel fern fine fire fold fond food fool foot
form found four from fund gain game gold golf gone good hand hard harm head hear heat hold home hope
kind king land last late lean lend less life line lion lord lose loss lost love main make male mall
mark meal mean meet mile milk mind mine miss mode mole moon more most move much must name near need
none noon nose note once only over pain park part pass past path pole pond pool poor pore post pour
rain rank rare read real rest rice rich ride ring rise risk road rock role room root rose rule sale
salt same sand seal seat seed seem sell send ship shoe shop shot side sign silk sink slim slow snow
soil sold sole some song soon sore sort soul soup star stay stem step stir stop such suit sure tail
take tale talk tall tank task team tear tell tend tent term test than that them then they thin this
tide till time tiny tone took tool tour town tree trim true tube tune turn vast very vote wait walk
wall want warm wave weak wear week well went were west what when whom wide wife wild will wind wine
wise with wood word wore work yard year zone pus
"""
_BLOCKED = frozenset(_BLOCKED_WORDS.split())
_MAX_TRIES = 100_000


class NameGenerator:
    """Draws words that were never drawn before (case-insensitively) and are not reserved."""

    def __init__(self, rng: random.Random, reserved: Iterable[str] = ()) -> None:
        self._rng = rng
        # Only used for membership tests, so its iteration order never reaches the output.
        self._used: set[str] = {w.lower() for w in reserved} | _BLOCKED

    def word(self, syllables: int, min_len: int = 3, max_len: int = 7) -> str:
        """A new capitalised word of `syllables` syllables."""
        if syllables < 1:
            raise ValueError(f"syllables must be at least 1, got {syllables}")
        for _ in range(_MAX_TRIES):
            candidate = self._draw(syllables)
            key = candidate.lower()
            if min_len <= len(candidate) <= max_len and key not in self._used:
                self._used.add(key)
                return candidate
        raise RuntimeError(f"no unused {syllables}-syllable name left after {_MAX_TRIES} draws")

    def sample(self, syllables: int, min_len: int = 3, max_len: int = 7) -> str:
        """A capitalised word of `syllables` syllables that is not reserved; unlike `word`, it may have been
        drawn before (for the many throwaway names of training drills)."""
        for _ in range(_MAX_TRIES):
            candidate = self._draw(syllables)
            if min_len <= len(candidate) <= max_len and candidate.lower() not in self._used:
                return candidate
        raise RuntimeError(f"no {syllables}-syllable name left after {_MAX_TRIES} draws")

    def reserve(self, word: str) -> None:
        self._used.add(word.lower())

    def _draw(self, syllables: int) -> str:
        rng = self._rng
        out = ""
        for i in range(syllables):
            # Only the first syllable may start with a vowel ("Orvan"); later ones need a consonant.
            onset = rng.choice(_ONSETS) if i > 0 or rng.random() < 0.85 else ""
            if out and out[-1] not in "aeiou":
                # After a coda, a single consonant keeps clusters pronounceable ("Kelvor", not "Kelndbr").
                onset = onset[0]
                if onset == out[-1]:
                    onset = "t" if onset != "t" else "d"
            coda = rng.choice(_CODAS)
            if len(coda) == 2 and i < syllables - 1:
                coda = coda[0]  # two-letter codas only end a word: "Kelrn-bo" is unpronounceable
            vowel = rng.choice(_VOWELS)
            if len(vowel) == 2 and len(out) >= 2 and out[-2:] in ("ai", "ee", "ou"):
                vowel = vowel[0]  # "Ailail" reads as a stutter
            if i == syllables - 1 and i > 0 and coda == "s":
                coda = "n"  # "Sto-nes" would read as the English plural "Stones"
            out += onset + vowel + coda
        return out[0].upper() + out[1:]
