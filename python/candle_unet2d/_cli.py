"""The ``unet2d`` console script: the Rust command line, run inside the extension module."""

from __future__ import annotations

import sys


def main() -> None:
    """Runs ``unet2d`` with this process's arguments and exits with its exit code."""
    from ._core import run_cli

    sys.exit(run_cli(["unet2d", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
