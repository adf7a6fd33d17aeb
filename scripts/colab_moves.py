"""What the Colab install did to the packages Colab had (standard library only: it runs before the kit is installed).

    python scripts/colab_moves.py snapshot BEFORE.json PINS.txt   every installed package and its version; the pins
                                                                  that keep them (the install's first constraint file)
    python scripts/colab_moves.py report BEFORE.json              one line: every package kept, or which moved, from
                                                                  what to what, and the installed requirement that asks

A pre-installed package the kit moves can break the learner's other notebooks in the same runtime, so the install
keeps every one where it can, and says plainly which moved and why where it cannot.
"""
from __future__ import annotations

import json
import re
import sys
from importlib.metadata import distributions


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def installed() -> dict[str, str]:
    """Every installed distribution, by normalised name, with its version."""
    found = {}
    for dist in distributions():
        name = dist.metadata.get("Name")
        if name:
            found[_name(name)] = dist.version
    return found


def pins(before: dict[str, str], skip: tuple[str, ...] = ("own-the-stack",)) -> list[str]:
    """Constraint lines keeping ``before``'s versions (local version labels such as +cu128 dropped: an index has no
    such tag, and the public version is what a resolver compares)."""
    return [f"{name}=={version.split('+')[0]}" for name, version in sorted(before.items()) if name not in skip]


def moved(before: dict[str, str], after: dict[str, str]) -> dict[str, tuple[str, str]]:
    """Packages present before whose version changed (removed ones count as moved to "removed")."""
    return {name: (version, after.get(name, "removed")) for name, version in sorted(before.items())
            if after.get(name, "removed") != version}


def why(name: str) -> list[str]:
    """The installed requirements that name ``name`` (e.g. "guidellm needs click<8.5,>=8.0")."""
    reasons = []
    for dist in distributions():
        for requirement in dist.requires or []:
            head = re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0]
            if _name(head) == name and "extra ==" not in requirement:
                spec = requirement[len(head):].split(";")[0].strip() or "any version"
                reasons.append(f"{dist.metadata.get('Name')} needs {name}{spec if spec != 'any version' else ''}")
    return sorted(set(reasons))


def report(before: dict[str, str], after: dict[str, str]) -> str:
    changes = moved(before, after)
    if not changes:
        return f"[kit] every one of the {len(before)} packages Colab had kept its version"
    parts = []
    for name, (old, new) in changes.items():
        reasons = why(name)
        parts.append(f"{name} {old} -> {new}" + (f" ({'; '.join(reasons[:2])})" if reasons else ""))
    return (f"[kit] {len(changes)} of the {len(before)} packages Colab had moved, because a package the kit installs "
            "asks for another version: " + ", ".join(parts))


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "snapshot":
        before = installed()
        with open(argv[1], "w") as handle:
            json.dump(before, handle)
        with open(argv[2], "w") as handle:
            handle.write("\n".join(pins(before)) + "\n")
        return 0
    if len(argv) == 2 and argv[0] == "report":
        with open(argv[1]) as handle:
            print(report(json.load(handle), installed()))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
