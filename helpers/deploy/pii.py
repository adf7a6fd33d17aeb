"""Personal data detection for the router, with Microsoft Presidio, fully offline.

Presidio's analyzer normally loads a downloaded spaCy model for names and places; here it runs on a
blank spaCy pipeline with its pattern recognizers (e-mail, phone via ``phonenumbers``, IBAN with its
checksum, card numbers with Luhn), so nothing is downloaded at run time. Where Presidio lacks a
recognizer for a format the support desk sees, the kit adds its own as a Presidio ``PatternRecognizer``:
numbers written ``(555) 123-4567`` or ``+49 151 1234567``, which ``phonenumbers`` rejects when the
number is not a valid one for its region (the dataset's are fictional, but a router must still keep
them local: the format alone says "phone").

Names and street addresses need a trained NER model and are *not* detected here: the lab measures
that gap on the dataset's labels instead of hiding it.
"""
from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass

from ..errors import InputError

ENTITIES = {"email": "EMAIL_ADDRESS", "phone": "PHONE_NUMBER", "iban": "IBAN_CODE", "card": "CREDIT_CARD"}
PHONE_REGIONS = ("US", "GB", "DE", "FR", "IT", "ES", "NL", "IE", "CH", "AT", "BE")


@dataclass(frozen=True)
class Finding:
    kind: str   # email, phone, iban, card
    start: int
    end: int
    score: float


_ANALYZER = None
_ANALYZER_LOCK = threading.Lock()
# Mastercard's 2-series (BINs 2221-2720, since 2017), which Presidio's card pattern does not cover; Luhn-checked
MASTERCARD_2_SERIES = r"\b2(?:2(?:2[1-9]|[3-9]\d)|[3-6]\d\d|7(?:[01]\d|20))(?:[ \-]?\d{4}){3}\b"
# a date written with dots, slashes or dashes (12.05.2024, 05/12/24) is not a phone number, whatever phonenumbers says
DATE_SHAPE = re.compile(r"^\d{1,4}[./\-]\d{1,2}[./\-]\d{1,4}$")


def analyzer():
    """The Presidio analyzer, built once per process (a few seconds: spaCy and phonenumbers load), under a lock: a
    burst of concurrent first requests waits for one build instead of building one each."""
    global _ANALYZER
    if _ANALYZER is None:
        with _ANALYZER_LOCK:
            if _ANALYZER is None:
                _ANALYZER = _build_analyzer()
    return _ANALYZER


def _build_analyzer():
    # tldextract (used by the e-mail recognizer) would fetch the public suffix list from the network
    os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
    try:
        import spacy
        from presidio_analyzer import AnalyzerEngine, Pattern, PatternRecognizer, RecognizerRegistry
        from presidio_analyzer.nlp_engine import SpacyNlpEngine
        from presidio_analyzer.predefined_recognizers import (CreditCardRecognizer, EmailRecognizer, IbanRecognizer,
                                                              PhoneRecognizer)
    except ImportError as error:
        raise InputError(f"Presidio is not installed ({error}); the router will not run without personal-data detection",
                         fix="pip install 'presidio-analyzer>=2.2,<2.3' (bash kit setup does)") from None

    class BlankSpacy(SpacyNlpEngine):
        """spaCy's blank English pipeline: tokenisation only, nothing to download."""

        def __init__(self):
            super().__init__(models=[{"lang_code": "en", "model_name": "blank"}])

        def load(self):
            self.nlp = {"en": spacy.blank("en")}

    registry = RecognizerRegistry(supported_languages=["en"])
    for recognizer in (EmailRecognizer(), PhoneRecognizer(supported_regions=PHONE_REGIONS), IbanRecognizer(), CreditCardRecognizer()):
        registry.add_recognizer(recognizer)
    registry.add_recognizer(CreditCardRecognizer(patterns=[Pattern("Mastercard 2-series", MASTERCARD_2_SERIES, 0.5)],
                                                 name="kit Mastercard 2-series"))
    registry.add_recognizer(PatternRecognizer(supported_entity="PHONE_NUMBER", name="kit phone formats",
                                              patterns=[Pattern("(ddd) ddd-dddd", r"\(\d{3}\)\s?\d{3}-\d{4}\b", 0.6),
                                                        Pattern("+cc groups", r"(?<![\w+])\+\d{1,3}(?:[ \-]\d{2,8}){2,4}\b", 0.5)]))
    return AnalyzerEngine(registry=registry, nlp_engine=BlankSpacy(), supported_languages=["en"])


def find_pii(text: str, threshold: float = 0.3) -> list[Finding]:
    """Personal data in ``text`` (e-mail, phone, IBAN, card), as character spans."""
    names = {v: k for k, v in ENTITIES.items()}
    results = analyzer().analyze(text, language="en", entities=list(ENTITIES.values()), score_threshold=threshold)
    found = [Finding(names[r.entity_type], r.start, r.end, r.score) for r in results
             if not (r.entity_type == "PHONE_NUMBER" and DATE_SHAPE.match(text[r.start:r.end].strip()))]
    return sorted(found, key=lambda f: f.start)


def redact(text: str, findings: list[Finding] | None = None) -> str:
    """``text`` with each finding replaced by ``<KIND>`` (for logs and the PII audit: never the value itself)."""
    findings = find_pii(text) if findings is None else findings
    for f in sorted(findings, key=lambda f: f.start, reverse=True):
        text = text[:f.start] + f"<{f.kind.upper()}>" + text[f.end:]
    return text


def evaluate(rows: list[dict]) -> "object":
    """Recall and precision per kind against the dataset's labelled spans (overlap counts as found)."""
    import pandas as pd

    counts = {kind: {"labelled": 0, "found": 0, "detections": 0, "correct detections": 0} for kind in ENTITIES}
    for row in rows:
        findings = find_pii(row["message"])
        spans = [s for s in row.get("pii_spans", []) if s["type"] in ENTITIES]
        for span in spans:
            counts[span["type"]]["labelled"] += 1
            counts[span["type"]]["found"] += any(f.kind == span["type"] and f.start < span["end"] and f.end > span["start"] for f in findings)
        for f in findings:
            counts[f.kind]["detections"] += 1
            counts[f.kind]["correct detections"] += any(f.kind == s["type"] and f.start < s["end"] and f.end > s["start"] for s in spans)
    table = pd.DataFrame(counts).T
    table["recall"] = table["found"] / table["labelled"]
    table["precision"] = table["correct detections"] / table["detections"].where(table["detections"] > 0)
    return table
