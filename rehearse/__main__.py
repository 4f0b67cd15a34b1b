"""`python -m rehearse -c stage=NAME` (or `-c config=PATH`); `--assembly DIR` rehearses a cdk.out as is."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rehearse.assembly import AssemblyError
from rehearse.run import Options, rehearse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/rehearse", description=__doc__)
    parser.add_argument(
        "-c", "--context", action="append", default=[], metavar="KEY=VALUE", help="stage=NAME or config=PATH"
    )
    parser.add_argument("--assembly", type=Path, help="an already synthesized cloud assembly (skips synth)")
    parser.add_argument(
        "--requests", type=int, default=Options.requests, help="API requests the producer sends"
    )
    parser.add_argument(
        "--fetches", type=int, default=Options.fetches, help="calls to the flaky outside service"
    )
    parser.add_argument("--summary", type=Path, help="also write the pull-request summary (Markdown) here")
    args = parser.parse_args(argv)
    context = dict(item.split("=", 1) for item in args.context if "=" in item)
    unknown = sorted(set(context) - {"stage", "config"})
    if unknown:
        parser.error(f"-c {unknown[0]}=...: only stage=NAME and config=PATH are understood")
    options = Options(
        stage=context.get("stage", "dev" if "config" not in context else None),
        config=context.get("config"),
        assembly=args.assembly,
        requests=args.requests,
        fetches=args.fetches,
    )
    try:
        report = rehearse(options)
    except AssemblyError as error:
        print(f"rehearse: {error}", file=sys.stderr)
        return 2
    summary = report.summary()
    print("\n" + summary)
    if args.summary:
        args.summary.write_text(summary + "\n")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
