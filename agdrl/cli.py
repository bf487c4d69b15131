"""Command-line interface, generated from the dataclass configs with tyro.

``agdrl avalanche [--preset demo|default|reference] [--field value ...]``
"""

from __future__ import annotations

import sys

import tyro
from gymnasium.error import Error as GymError

from agdrl.avalanche import PRESETS as AVALANCHE_PRESETS
from agdrl.avalanche import AvalancheConfig, run_avalanche

USAGE = """usage: agdrl COMMAND [--preset NAME] [options]

commands:
  avalanche   error of the diffusion and autoregressive world models vs open-loop horizon
              presets: demo (a few minutes on 2 cores), default, reference (paper-size model)

'agdrl COMMAND --help' lists every option with its default.
"""


def _split_preset(args: list[str], presets: dict, default: str) -> tuple[str, list[str]]:
    name, rest, i = default, [], 0
    while i < len(args):
        if args[i] == "--preset" and i + 1 < len(args):
            name, i = args[i + 1], i + 2
        elif args[i].startswith("--preset="):
            name, i = args[i].split("=", 1)[1], i + 1
        else:
            rest.append(args[i])
            i += 1
    if name not in presets:
        raise SystemExit(f"agdrl: unknown preset {name!r}; choose one of {', '.join(presets)}")
    return name, rest


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = args[0], args[1:]
    if command == "avalanche":
        name, rest = _split_preset(rest, AVALANCHE_PRESETS, "default")
        cfg = tyro.cli(AvalancheConfig, args=rest, default=AVALANCHE_PRESETS[name],
                       prog=f"agdrl avalanche --preset {name}")
        try:
            run_avalanche(cfg, log=lambda msg: print(msg, flush=True))
        except (ValueError, ImportError, GymError) as err:
            raise SystemExit(f"agdrl: {err}") from err
        return 0
    raise SystemExit(f"agdrl: unknown command {command!r}\n{USAGE}")


if __name__ == "__main__":
    sys.exit(main())
