"""``python -m helpers.course build [LAB ...]`` (solutions/ -> labs/ + build/autograder/*.zip),
``python -m helpers.course grade DIR [LAB]`` (DIR/*.ipynb -> grades/<lab>.csv) and
``python -m helpers.course release DIR`` (the student release)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .grading import grade_folder
from .labs import build, lab_names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.course")
    sub = parser.add_subparsers(dest="command", required=True)
    p_build = sub.add_parser("build", help="generate labs/ from solutions/")
    p_build.add_argument("--repository", default=None,
                         help="only point the labs' badges and setup cells (and pyproject.toml) at this GitHub repository "
                              "(what a class copy needs; it has no solutions/ to build from)")
    p_build.add_argument("labs", nargs="*")
    p_release = sub.add_parser("release", help="write the student release (no solutions, hidden tests or autograders) to DIR")
    p_release.add_argument("folder")
    p_release.add_argument("--repository", default=None,
                           help="the GitHub repository the class clones from (https://github.com/<you>/<class-repo>): "
                                "badges and setup cells point there")
    sub.add_parser("selfcheck", help="the set-up self-check a student release runs as `bash kit test`")
    p_grade = sub.add_parser("grade", help="grade a folder of submitted notebooks into a CSV")
    p_grade.add_argument("folder")
    p_grade.add_argument("lab", nargs="?", help="lab name, e.g. 00_first_open_model (default: guessed from the notebooks)")
    p_grade.add_argument("--out", default=None)
    p_grade.add_argument("--timeout", type=float, default=None,
                         help="seconds per submission (default: the lab plan's expected time x 4, at least 120; a timeout is re-run alone at 2x)")
    p_grade.add_argument("--workers", type=int, default=2)
    p_grade.add_argument("--quick", action="store_true",
                         help="run each submission at CI's sizes (OTS_QUICK=1: the same code and checks, a few training steps "
                              "and test rows): Lab 03 in about a minute instead of its full CPU run")
    p_grade.add_argument("--no-sandbox", action="store_true",
                         help="grade without the bubblewrap sandbox: only for notebooks you trust (your own, a TA's)")
    args = parser.parse_args(argv)
    if args.command == "selfcheck":
        from .selfcheck import run

        return run()
    if args.command == "build":
        from ..errors import KitError
        from ..paths import REPO_ROOT
        from .labs import check_class_repository, point_labs_at

        try:
            if args.repository:  # a class copy (or the kit) pointed at another repository: badges and setup cells only
                url = check_class_repository(args.repository)
                changed = point_labs_at(REPO_ROOT, url)
                print(f"{len(changed)} lab notebooks and pyproject.toml now point at {url}")
                return 0
            build(args.labs or None)
        except KitError as error:
            print(f"{error.problem}\n  -> fix: {error.fix}", file=sys.stderr)
            return 2
        return 0
    if args.command == "release":
        from ..errors import KitError
        from .release import release

        try:
            out = release(args.folder, args.repository)
        except KitError as error:
            print(f"{error.problem}\n  -> fix: {error.fix}", file=sys.stderr)
            return 2
        print(f"student release written to {out} (one git commit), its badges and setup cells pointing at "
              f"{args.repository.rstrip('/').removesuffix('.git')}: push it there (git -C {out} push <that URL> HEAD:main)")
        return 0
    lab = args.lab
    if lab is None:  # the instructor's word, the folder's name, or a clear majority: never one submission's say-so
        from .grading import guess_lab

        lab, why = guess_lab(Path(args.folder))
        if lab is None:
            print(f"which lab is this class? {why}: name it, e.g. bash kit grade {args.folder} 01_tco_economics",
                  file=sys.stderr)
            return 2
        print(f"grading {lab} ({why})", file=sys.stderr)
    if lab not in lab_names():
        print(f"unknown lab {lab!r}; labs: {', '.join(lab_names())}", file=sys.stderr)
        return 2
    from ..errors import KitError

    if args.quick:  # the sandbox passes OTS_QUICK on (grading.SANDBOX_ENV)
        os.environ["OTS_QUICK"] = "1"
        print("grading at CI's sizes (--quick): the checks are the same; the submissions' own figures are not the full run's",
              file=sys.stderr)
    if args.no_sandbox:
        print("warning: grading without a sandbox: a submission can read and write whatever you can", file=sys.stderr)
    try:
        out = grade_folder(Path(args.folder), lab, Path(args.out) if args.out else None, args.timeout, args.workers,
                           sandbox=not args.no_sandbox)
    except KitError as error:
        print(f"{error.problem}\n  -> fix: {error.fix}", file=sys.stderr)
        return 2
    print(out.read_text())
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
