"""hyperenclave-verify EVIDENCE_DIR --policy FILE: print the verdict, write verdict.json, exit 0
only when every check holds (1 when one fails, 2 when the policy or arguments are unusable)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .policy import Policy, PolicyError
from .verify import VERDICT_FILE, verify


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hyperenclave-verify", description=__doc__)
    p.add_argument("evidence", type=Path, help="evidence directory (python boot.py --out)")
    p.add_argument("--policy", type=Path, required=True, help="appraisal policy (JSON)")
    p.add_argument("--no-write", action="store_true", help=f"do not write {VERDICT_FILE}")
    args = p.parse_args(argv)
    if not args.evidence.is_dir():
        print(f"hyperenclave-verify: {args.evidence} is not a directory", file=sys.stderr)
        return 2
    try:
        policy = Policy.load(args.policy)
    except PolicyError as err:
        print(f"hyperenclave-verify: policy {err}", file=sys.stderr)
        return 2
    verdict = verify(args.evidence, policy, write=not args.no_write)
    print(json.dumps(verdict, indent=2))
    return 0 if verdict["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
