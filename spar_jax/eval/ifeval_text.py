"""Text measures behind the IFEval checks: words, sentences, NLTK tokens, language.

The official checks count words with the regex `\\w+`, sentences with NLTK's
pretrained English Punkt model and tokens with `nltk.word_tokenize` (both read
the `punkt_tab` data files), and detect the language with `langdetect`.

NLTK's data is not downloaded at run time: point `NLTK_DATA` at a folder that
holds `tokenizers/punkt_tab/english/` (`python -c "import nltk;
nltk.download('punkt_tab')"` fetches it once). When it is missing,
`check_nltk_data()` raises `NltkDataError` with a one-line message saying so.

`langdetect` draws random numbers; the official code leaves them unseeded, so
its language verdicts can flip between runs on borderline texts. Here a private
detector factory seeded with 0 makes every verdict reproducible (and leaves
langdetect's global factory alone).
"""

from __future__ import annotations

import functools
import re

from spar_jax.errors import SparError

_PUNKT = "tokenizers/punkt_tab/english/"
_WORD = re.compile(r"\w+")


class NltkDataError(SparError, LookupError):
    """NLTK's punkt_tab data is not where NLTK looks; the message says how to get it."""


class LanguageUndetected(Exception):
    """langdetect found no features in the text (the official checks then count a pass)."""


@functools.cache
def check_nltk_data() -> None:
    """Raises NltkDataError unless NLTK can find the English punkt_tab files."""
    import nltk

    try:
        nltk.data.find(_PUNKT)
    except LookupError:
        raise NltkDataError(
            "NLTK data 'punkt_tab' (English) not found: set NLTK_DATA to a folder holding "
            'tokenizers/punkt_tab/english/ or run python -c "import nltk; '
            "nltk.download('punkt_tab')\""
        ) from None


def count_words(text: str) -> int:
    """Number of `\\w+` runs (NLTK's RegexpTokenizer(r"\\w+") in the official checks)."""
    return len(_WORD.findall(text))


@functools.cache
def _sentence_splitter():
    from nltk.tokenize.punkt import PunktTokenizer

    check_nltk_data()
    return PunktTokenizer("english")


def count_sentences(text: str) -> int:
    """Number of sentences by NLTK's pretrained English Punkt model."""
    return len(_sentence_splitter().tokenize(text))


def word_tokens(text: str) -> list[str]:
    """`nltk.word_tokenize(text)`: Treebank-style tokens, hyphenated words kept whole."""
    import nltk

    check_nltk_data()
    return nltk.word_tokenize(text)


@functools.cache
def _language_factory():
    from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory

    factory = DetectorFactory()
    factory.load_profile(PROFILES_DIRECTORY)
    factory.set_seed(0)
    return factory


def detect_language(text: str) -> str:
    """ISO 639-1 code of `text` by langdetect ("en", "fr", ...); LanguageUndetected if none."""
    from langdetect.lang_detect_exception import LangDetectException

    detector = _language_factory().create()
    detector.append(text)
    try:
        return detector.detect()
    except LangDetectException as e:
        raise LanguageUndetected(str(e)) from None
