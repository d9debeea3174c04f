"""Write pip constraints pinning each of lmtool's dependencies to the lowest version pyproject.toml allows.

`make test-min` installs lmtool with these constraints into a separate venv and runs the tests of the code
that calls version-dependent APIs, so a floor in pyproject.toml is a version the suite has passed on, not a
guess. pip has no "resolve lowest" mode; this reads each `name>=floor` of `[project].dependencies` (and of
the extras named with --extras) and prints `name==floor`, one a line (Python 3.11+: tomllib). A dependency without a floor is an
error: every range must be bounded below.

    python scripts/min_versions.py --extras lora > constraints-min.txt
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*([^;]*)")


def floor_pins(requirements: list[str]) -> list[str]:
    """`name==floor` for each requirement, from its `>=` bound (one with none raises ValueError)."""
    pins = []
    for requirement in requirements:
        match = REQUIREMENT.match(requirement)
        if match is None:
            raise ValueError(f"cannot parse requirement {requirement!r}")
        name, spec = match.group(1), match.group(2)
        floors = [part.strip()[2:].strip() for part in spec.split(",") if part.strip().startswith(">=")]
        if len(floors) != 1:
            raise ValueError(f"{requirement!r} needs exactly one '>=' lower bound")
        pins.append(f"{name}=={floors[0]}")
    return pins


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--extras", nargs="*", default=[], help="optional-dependency groups to pin too")
    parser.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml")
    args = parser.parse_args(argv)
    project = tomllib.loads(args.pyproject.read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in args.extras:
        requirements += project["optional-dependencies"][extra]
    try:
        pins = floor_pins(requirements)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("\n".join(dict.fromkeys(pins)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
