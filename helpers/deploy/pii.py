"""Personal data detection for the router, with Microsoft Presidio, fully offline.

Presidio's analyzer normally loads a downloaded spaCy model for names and places; here it runs on a
blank spaCy pipeline with its pattern recognizers (e-mail, phone via ``phonenumbers``, IBAN with its
checksum, card numbers with Luhn), so nothing is downloaded at run time. Where Presidio lacks a
recognizer for a format the support desk sees, the kit adds its own as a Presidio ``PatternRecognizer``:
numbers written ``(555) 123-4567`` or ``+49 151 1234567``, which ``phonenumbers`` rejects when the
number is not a valid one for its region (the dataset's are fictional, but a router must still keep
them local: the format alone says "phone").

Names and street addresses need a trained NER model. Where one is installed (a spaCy pipeline package such as
``en_core_web_sm``, or the folder or package named by ``OTS_PII_SPACY_MODEL``), the analyzer runs on it and Presidio's
spaCy recognizer adds ``name`` (PERSON) and ``address`` (LOCATION) findings; without one they are *not* detected, and
the lab measures that gap on the dataset's labels instead of hiding it. To install one (about 13 MB, once, with a
network): ``pip install https://github.com/explosion/spacy-models/releases/download/en_core_web_sm-3.8.0/en_core_web_sm-3.8.0-py3-none-any.whl``;
``OTS_PII_SPACY_MODEL=none`` turns it off again.
"""
from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass

from ..errors import InputError

ENTITIES = {"email": "EMAIL_ADDRESS", "phone": "PHONE_NUMBER", "iban": "IBAN_CODE", "card": "CREDIT_CARD"}
NER_ENTITIES = {"name": "PERSON", "address": "LOCATION"}  # only with a trained NER model (ner_model())
NER_ENV = "OTS_PII_SPACY_MODEL"
STOCK_NER_MODELS = ("en_core_web_lg", "en_core_web_md", "en_core_web_sm", "en_core_web_trf")


def ner_model() -> str | None:
    """The spaCy pipeline that finds names and addresses: ``OTS_PII_SPACY_MODEL`` (a package name or a pipeline folder;
    ``none`` for none), else the first stock English pipeline installed, else None (pattern recognizers only)."""
    from pathlib import Path

    chosen = os.environ.get(NER_ENV, "").strip()
    if chosen.lower() in ("none", "off", "0", "false"):
        return None
    try:
        import spacy
    except ImportError:
        return None
    if chosen:
        if spacy.util.is_package(chosen) or Path(chosen).is_dir():
            return chosen
        raise InputError(f"{NER_ENV}={chosen!r} is neither an installed spaCy pipeline nor a pipeline folder",
                         fix="install the pipeline (pip install en_core_web_sm's wheel), point at its folder, or set it to none")
    return next((name for name in STOCK_NER_MODELS if spacy.util.is_package(name)), None)


def kinds() -> dict[str, str]:
    """The kinds the analyzer detects here, kit name -> Presidio entity (names and addresses only with a NER model)."""
    analyzer()
    return dict(ENTITIES, **(NER_ENTITIES if _NER["model"] else {}))
PHONE_REGIONS = ("US", "GB", "DE", "FR", "IT", "ES", "NL", "IE", "CH", "AT", "BE")


@dataclass(frozen=True)
class Finding:
    kind: str   # email, phone, iban, card
    start: int
    end: int
    score: float


_ANALYZER = None
_ANALYZER_LOCK = threading.Lock()
_NER = {"model": None}  # the NER pipeline the analyzer was built with
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

    model = ner_model()
    _NER["model"] = model
    registry = RecognizerRegistry(supported_languages=["en"])
    if model:  # a trained pipeline: Presidio's spaCy recognizer reads its PERSON and place entities
        from presidio_analyzer.predefined_recognizers import SpacyRecognizer

        registry.add_recognizer(SpacyRecognizer(supported_entities=list(NER_ENTITIES.values())))
    for recognizer in (EmailRecognizer(), PhoneRecognizer(supported_regions=PHONE_REGIONS), IbanRecognizer(), CreditCardRecognizer()):
        registry.add_recognizer(recognizer)
    registry.add_recognizer(CreditCardRecognizer(patterns=[Pattern("Mastercard 2-series", MASTERCARD_2_SERIES, 0.5)],
                                                 name="kit Mastercard 2-series"))
    registry.add_recognizer(PatternRecognizer(supported_entity="PHONE_NUMBER", name="kit phone formats",
                                              patterns=[Pattern("(ddd) ddd-dddd", r"\(\d{3}\)\s?\d{3}-\d{4}\b", 0.6),
                                                        Pattern("+cc groups", r"(?<![\w+])\+\d{1,3}(?:[ \-]\d{2,8}){2,4}\b", 0.5)]))
    engine = BlankSpacy()
    if model:  # street addresses are FAC (a facility) in spaCy's English pipelines: a place, like LOC and GPE
        from presidio_analyzer.nlp_engine import NerModelConfiguration
        from presidio_analyzer.nlp_engine.ner_model_configuration import MODEL_TO_PRESIDIO_ENTITY_MAPPING

        mapping = {**MODEL_TO_PRESIDIO_ENTITY_MAPPING, "FAC": "LOCATION"}
        engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": model}],
                                ner_model_configuration=NerModelConfiguration(model_to_presidio_entity_mapping=mapping))
    return AnalyzerEngine(registry=registry, nlp_engine=engine, supported_languages=["en"])


def find_pii(text: str, threshold: float = 0.3) -> list[Finding]:
    """Personal data in ``text`` (e-mail, phone, IBAN, card; names and addresses where a NER model is installed), as
    character spans."""
    detected = kinds()
    names = {v: k for k, v in detected.items()}
    results = analyzer().analyze(text, language="en", entities=list(detected.values()), score_threshold=threshold)
    found = [Finding(names[r.entity_type], r.start, r.end, r.score) for r in results
             if not (r.entity_type == "PHONE_NUMBER" and (DATE_SHAPE.match(text[r.start:r.end].strip()) or _inside_code(text, r.start, r.end)))]
    return sorted(found, key=lambda f: f.start)


def _inside_code(text: str, start: int, end: int) -> bool:
    """Whether the digits at start:end are glued to more of an identifier (INV-2026-000451, SKU4481-22): a phone number
    stands apart from its neighbours, an invoice or order code does not."""
    before, after = text[max(0, start - 2):start], text[end:end + 2]
    glued_before = before[-1:].isalnum() or (before[-1:] in "-/_" and before[:1].isalnum())
    glued_after = after[:1].isalnum() or (after[:1] in "-/_" and after[1:2].isalnum())
    return bool(glued_before or glued_after)


def redact(text: str, findings: list[Finding] | None = None) -> str:
    """``text`` with each finding replaced by ``<KIND>`` (for logs and the PII audit: never the value itself)."""
    findings = find_pii(text) if findings is None else findings
    for f in sorted(findings, key=lambda f: f.start, reverse=True):
        text = text[:f.start] + f"<{f.kind.upper()}>" + text[f.end:]
    return text


def evaluate(rows: list[dict]) -> "object":
    """Recall and precision per kind against the dataset's labelled spans (overlap counts as found)."""
    import pandas as pd

    detected = kinds()
    counts = {kind: {"labelled": 0, "found": 0, "detections": 0, "correct detections": 0} for kind in detected}
    for row in rows:
        findings = find_pii(row["message"])
        spans = [s for s in row.get("pii_spans", []) if s["type"] in detected]
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


def written_set() -> list[dict]:
    """The kit's hand-written labelled set (``datasets/deploy/pii_written.jsonl``): messages written for the kit, not
    produced by the support-desk dataset's templates, in several countries' formats (checksum-valid example IBANs and
    card-network test numbers, drama-range phone numbers), and number-heavy messages with no personal data (order and
    tracking numbers, dates, prices, versions) where any detection is a false positive. Rows in ``evaluate``'s shape."""
    import json

    from ..paths import dataset

    rows = []
    for number, line in enumerate(dataset("deploy/pii_written.jsonl").read_text().splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        spans = []
        for kind, value in row["pii"]:
            start = row["message"].find(value)
            if start < 0:
                raise InputError(f"pii_written.jsonl line {number}: {value!r} is not in its message", fix="copy the value exactly")
            spans.append({"type": kind, "start": start, "end": start + len(value)})
        rows.append({"message": row["message"], "pii_spans": spans})
    return rows


def false_positives(rows: list[dict]) -> list[tuple[str, str]]:
    """Every detection in ``rows`` that overlaps no labelled span: (kind, the detected text)."""
    found = []
    for row in rows:
        for f in find_pii(row["message"]):
            if not any(f.start < s["end"] and f.end > s["start"] for s in row.get("pii_spans", [])):
                found.append((f.kind, row["message"][f.start:f.end]))
    return found
