"""The embedded default job: AllNC against CE on digits-LT, side by side (what `make demo` runs).

    python jobs/digits_lt.py [--methods allnc,ce] [--out DIR] [section.field=value ...]
"""

import sys
from pathlib import Path

from allnc_dist.cli import main

if __name__ == "__main__":
    config = Path(__file__).parent / "configs" / "digits_lt.yaml"
    sys.exit(main(["compare", "--config", str(config), *sys.argv[1:]]))
