"""Scoring for the support_desk_triage lm-eval task: the reply's first JSON object, field by field.

Written apart from helpers.finetune (same definition: a reply that is not a JSON object with all five
keys is wrong on every field), so lm_eval's score and the kit's are two implementations that must agree.
"""
import json
import re

KEYS = ("category", "priority", "product", "personal_data", "needs_human")


def first_object(text):
    found = re.search(r"\{.*?\}", text or "", re.S)
    if found is None:
        return None
    try:
        value = json.loads(found.group(0))
    except ValueError:
        return None
    return value if isinstance(value, dict) and all(key in value for key in KEYS) else None


def doc_to_target(doc):
    """The answer as a few-shot example shows it: compact JSON, keys in a fixed order (as Lab 03 trains)."""
    return json.dumps({key: doc["target"][key] for key in KEYS}, separators=(",", ":"))


def process_results(doc, results):
    reply = first_object(results[0])
    target = doc["target"]
    return {"valid_json": float(reply is not None),
            "category": float(reply is not None and reply["category"] == target["category"]),
            "product": float(reply is not None and reply["product"] == target["product"])}
