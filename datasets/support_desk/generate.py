"""Generate the support-desk triage dataset (Lab 03 trains on it, Labs 04-05 evaluate and route with it).

    python datasets/support_desk/generate.py            # rewrites train/validation/test .jsonl here

Deterministic from SEED. Each row: a customer message and its triage as strict JSON, plus the
labels later labs use (personal-data spans, difficulty). The test split is built from templates,
openers, closers and fillers that never appear in train or validation, so test scores measure
generalisation rather than memorised phrasings. See README.md (the datasheet).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

SEED = 20261122
HERE = Path(__file__).resolve().parent
SIZES = {"train": 2400, "validation": 300, "test": 400}
CATEGORIES = ["billing", "refund", "shipping", "technical_issue", "account_access", "cancellation", "product_question", "privacy_request"]
PRIORITIES = ["low", "medium", "high", "urgent"]
PRODUCTS = {"app": "the Nimbus app", "thermostat": "my Nimbus thermostat", "router": "the Nimbus router",
            "camera": "my Nimbus camera", "subscription": "my Nimbus Plus subscription"}
PRODUCT_WORDS = {"app": ["the app", "the Nimbus app", "your mobile app"], "thermostat": ["my thermostat", "the Nimbus thermostat", "the thermostat"],
                 "router": ["my router", "the Nimbus router", "the wifi router"], "camera": ["my camera", "the security camera", "the Nimbus cam"],
                 "subscription": ["my subscription", "Nimbus Plus", "my plan"]}

# (category, priority, needs_human, text with {product}); a template without {product} gives product "none"
TEMPLATES = {
    "billing": [
        ("medium", False, "I was charged twice this month for {product}. Can you check my invoice?"),
        ("medium", False, "The invoice for {product} shows a price higher than the one on your website."),
        ("low", False, "Where can I download last month's invoice? I need it for my accountant."),
        ("medium", False, "Why did my bill go up? Nothing changed on {product}."),
        ("high", False, "You billed my card three times for {product} and now my account is overdrawn."),
        ("low", False, "Can I change the card you charge every month?"),
        ("medium", False, "There is a charge on my statement for {product} that I do not recognise the amount of."),
        ("medium", False, "My invoice lists a late fee but I paid on time."),
    ],
    "refund": [
        ("medium", False, "I returned {product} two weeks ago and still have not received my refund."),
        ("medium", False, "Please refund me for {product}, it arrived broken."),
        ("low", False, "How long does a refund usually take to show up on my card?"),
        ("high", True, "I was promised a refund for {product} a month ago and nobody answers my emails."),
        ("medium", False, "I want my money back for {product}, it does not do what the page said."),
        ("medium", False, "The refund you sent for {product} is less than what I paid."),
        ("low", False, "Can I get a refund as store credit instead of to my card?"),
    ],
    "shipping": [
        ("medium", False, "My order with {product} still says processing after 9 days. Where is it?"),
        ("medium", False, "The tracking number for {product} does not work."),
        ("high", False, "The courier marked {product} as delivered but nothing arrived."),
        ("low", False, "Can I change the delivery address on an order I placed today?"),
        ("medium", False, "{product} arrived but the box was soaked and damaged."),
        ("low", False, "Do you ship to Norway, and how much does it cost?"),
        ("medium", False, "I received the wrong item instead of {product}."),
    ],
    "technical_issue": [
        ("high", False, "{product} keeps disconnecting every few minutes since the last update."),
        ("medium", False, "{product} crashes every time I open the settings page."),
        ("high", False, "{product} stopped working completely this morning and shows a red light."),
        ("medium", False, "I cannot pair {product} with my phone, the code is rejected."),
        ("low", False, "Is there a way to change the language of {product}?"),
        ("high", True, "{product} overheated and there was a burning smell. Is it safe to use?"),
        ("medium", False, "The export button in {product} produces an empty file."),
        ("medium", False, "Notifications from {product} arrive hours late."),
    ],
    "account_access": [
        ("high", False, "I cannot log in to my account, it says my password is wrong but it is not."),
        ("medium", False, "The password reset link expired before I could use it. Please send a new one."),
        ("urgent", True, "Someone changed my account email and I am locked out. I think I was hacked."),
        ("medium", False, "Two-factor codes arrive by SMS too late and always expire."),
        ("low", False, "How do I change the email address on my account?"),
        ("high", False, "My account was locked after too many attempts and I need it for work today."),
        ("urgent", True, "I see logins from a country I have never been to. Please secure my account."),
    ],
    "cancellation": [
        ("low", False, "I would like to cancel {product} at the end of this billing period."),
        ("medium", False, "I cancelled {product} last month but you charged me again."),
        ("low", False, "How do I close my account and delete {product}?"),
        ("medium", True, "Cancel everything. I am done with your service after this week."),
        ("low", False, "Can I pause {product} for two months instead of cancelling?"),
        ("medium", False, "The cancel button does not do anything when I click it."),
    ],
    "product_question": [
        ("low", False, "Does {product} work with Google Home?"),
        ("low", False, "What is the difference between the basic plan and Nimbus Plus?"),
        ("low", False, "Can {product} record video at night?"),
        ("low", False, "How many devices can I connect to {product}?"),
        ("low", False, "Is {product} compatible with older Android phones?"),
        ("low", False, "Will {product} get the new features announced last week?"),
    ],
    "privacy_request": [
        ("medium", True, "Please delete all my personal data and confirm in writing."),
        ("medium", True, "I want a copy of all the data you hold about me under GDPR."),
        ("high", True, "Why does {product} upload video to your servers without asking me?"),
        ("medium", True, "Stop using my data for marketing and remove me from every list."),
        ("medium", True, "Who do you share the recordings from {product} with?"),
    ],
}
# per category, the templates held out for the test split (never seen in train/validation)
TEST_TEMPLATES = {category: {len(items) - 2, len(items) - 1} for category, items in TEMPLATES.items()}

OPENERS = {"seen": ["Hi,", "Hello,", "Hello team,", "Hi there!", "", "Good morning,", "Dear support,", "Hey,"],
           "held_out": ["Greetings,", "Hi support team,", "To whom it may concern,", "Evening,"]}
CLOSERS = {"seen": ["Thanks.", "Thank you!", "Regards", "", "Please help.", "Cheers", "Thanks in advance."],
           "held_out": ["Many thanks,", "Appreciate it.", "Looking forward to your reply.", "Best wishes"]}
FILLERS = {"seen": ["I have been a customer for years.", "This is the second time I write about this.", "I tried restarting already.",
                    "My neighbour has the same problem.", "I need this sorted quickly."],
           "held_out": ["I already checked your help pages.", "My partner set this up for me.", "This started after I moved house."]}
URGENT_OPENERS = {"seen": ["URGENT:", "Please answer today:"], "held_out": ["Time-sensitive:"]}

FIRST = ["Anna", "Ben", "Carla", "David", "Elif", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Keiko", "Liam", "Maya", "Noah", "Olga", "Priya"]
LAST = ["Schmidt", "Okafor", "Rossi", "Nguyen", "Kowalski", "Garcia", "Smith", "Haddad", "Larsen", "Moreau", "Ivanova", "Tanaka"]
STREETS = ["Elm Street", "Station Road", "Rue Victor Hugo", "Hauptstrasse", "Maple Avenue", "Via Roma", "King Street"]
CITIES = ["Leeds", "Lyon", "Berlin", "Porto", "Kraków", "Dublin", "Turin", "Utrecht"]
DOMAINS = ["mail.com", "example.org", "inbox.net", "post.eu"]


def luhn_card(rng: random.Random) -> str:
    digits = [4] + [rng.randint(0, 9) for _ in range(14)]
    total = 0
    for index, digit in enumerate(reversed(digits)):
        doubled = digit * 2 if index % 2 == 0 else digit
        total += doubled - 9 if doubled > 9 else doubled
    digits.append((10 - total % 10) % 10)
    text = "".join(map(str, digits))
    return " ".join(text[i:i + 4] for i in range(0, 16, 4))


def iban(rng: random.Random) -> str:
    country, bban = rng.choice([("DE", 18), ("FR", 23), ("GB", 18)])
    if country == "GB":
        body = "NWBK" + "".join(str(rng.randint(0, 9)) for _ in range(14))
    else:
        body = "".join(str(rng.randint(0, 9)) for _ in range(bban))
    numeric = "".join(str(int(ch, 36)) for ch in body + country + "00")
    check = 98 - int(numeric) % 97
    return f"{country}{check:02d}{body}"


def phone(rng: random.Random) -> str:
    return rng.choice([f"+44 7{rng.randint(100, 999)} {rng.randint(100000, 999999)}", f"+49 151 {rng.randint(1000000, 9999999)}",
                       f"(555) {rng.randint(100, 999)}-{rng.randint(1000, 9999)}"])


def pii_sentence(rng: random.Random, held_out: bool) -> tuple[str, str, str]:
    """(sentence with one {pii} slot, pii text, pii type)."""
    name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    kind = rng.choice(["email", "phone", "card", "iban", "name", "address"])
    value = {"email": f"{name.split()[0].lower()}.{name.split()[1].lower()}@{rng.choice(DOMAINS)}", "phone": phone(rng),
             "card": luhn_card(rng), "iban": iban(rng), "name": name,
             "address": f"{rng.randint(1, 220)} {rng.choice(STREETS)}, {rng.choice(CITIES)}"}[kind]
    seen = {"email": "You can reach me at {pii}.", "phone": "Call me on {pii}.", "card": "The card was {pii}.",
            "iban": "My IBAN is {pii}.", "name": "My name is {pii}.", "address": "I live at {pii}."}
    unseen = {"email": "Reply to {pii} please.", "phone": "My number: {pii}.", "card": "Card number {pii} was used.",
              "iban": "Refund to account {pii}.", "name": "This is {pii} writing.", "address": "Ship to {pii}."}
    return (unseen if held_out else seen)[kind], value, kind


def typo(rng: random.Random, text: str, rate: float) -> str:
    """Swap or drop letters in a few words (never inside personal data: applied before it is inserted)."""
    words = text.split(" ")
    for i, word in enumerate(words):
        if len(word) > 4 and word.isalpha() and rng.random() < rate:
            j = rng.randrange(1, len(word) - 2)
            words[i] = word[:j] + word[j + 1] + word[j] + word[j + 2:] if rng.random() < 0.5 else word[:j] + word[j + 1:]
    return " ".join(words)


def issue(rng: random.Random, held_out: bool, category: str | None = None):
    category = category or rng.choice(CATEGORIES)
    pool = [i for i in range(len(TEMPLATES[category])) if (i in TEST_TEMPLATES[category]) == held_out]
    index = rng.choice(pool)
    priority, human, text = TEMPLATES[category][index]
    product = "none"
    if "{product}" in text:
        product = rng.choice(list(PRODUCT_WORDS))
        text = text.replace("{product}", rng.choice(PRODUCT_WORDS[product]))
        text = text[0].upper() + text[1:]
    return {"category": category, "priority": priority, "human": human, "product": product, "text": text, "template": f"{category}/{index}"}


def make_row(rng: random.Random, split: str, row_id: int) -> dict:
    held_out = split == "test"
    pool = "held_out" if held_out else "seen"
    first = issue(rng, held_out)
    multi = rng.random() < 0.2
    parts = [first["text"]]
    templates = [first["template"]]
    if multi:
        second = issue(rng, held_out, rng.choice([c for c in CATEGORIES if c != first["category"]]))
        parts.append(rng.choice(["Also,", "And another thing:", "Separately,"] if not held_out else ["On top of that,", "One more issue:"]))
        parts.append(second["text"][0].lower() + second["text"][1:])
        templates.append(second["template"])
    priority = PRIORITIES.index(first["priority"])
    opener = rng.choice(OPENERS[pool])
    if rng.random() < 0.12:
        opener = rng.choice(URGENT_OPENERS[pool])
        priority = min(priority + 1, 3)
    body = " ".join(parts)
    if rng.random() < 0.35:
        body += " " + rng.choice(FILLERS[pool])
    body = typo(rng, body, rate=rng.choice([0.0, 0.0, 0.05, 0.12]))
    if rng.random() < 0.15:
        body = body.lower()
    pieces = [opener, body]
    spans = []
    if rng.random() < 0.35:
        sentence, value, kind = pii_sentence(rng, held_out)
        pieces.append(sentence)
        pii = (kind, value)
    else:
        pii = None
    pieces.append(rng.choice(CLOSERS[pool]))
    message = " ".join(p for p in pieces if p).strip()
    if pii:
        kind, value = pii
        message = message.replace("{pii}", value)
        start = message.index(value)
        spans.append({"start": start, "end": start + len(value), "type": kind})
    priority_name = PRIORITIES[priority]
    target = {"category": first["category"], "priority": priority_name, "product": first["product"], "personal_data": bool(spans),
              "needs_human": bool(first["human"] or multi or priority_name == "urgent")}
    return {"id": f"{split}-{row_id:05d}", "message": message, "target": target, "pii_spans": spans,
            "difficulty": "multi_issue" if multi else "simple", "templates": templates}


def generate(seed: int = SEED) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    return {split: [make_row(rng, split, i) for i in range(size)] for split, size in SIZES.items()}


def main() -> None:
    for split, rows in generate().items():
        with open(HERE / f"{split}.jsonl", "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"{split}: {len(rows)} rows")


if __name__ == "__main__":
    main()
