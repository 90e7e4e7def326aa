"""The `fastcredit` command line."""

from __future__ import annotations

import argparse
import json
import sys


def _info(args: argparse.Namespace) -> int:
    import torch

    import fastcredit

    info = fastcredit.build_info()
    info["torch_threads"] = torch.get_num_threads()
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    width = max(map(len, info))
    for key, value in info.items():
        print(f"{key:<{width}}  {value}")
    ops = sorted(
        name.split("::")[1]
        for name in torch._C._dispatch_get_all_op_names()
        if name.startswith("fastcredit::")
    )
    print(f"{'ops':<{width}}  {', '.join(ops)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastcredit", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser("info", help="how fastcredit was built and what is loaded")
    info.add_argument("--json", action="store_true", help="print machine-readable JSON")
    info.set_defaults(run=_info)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
