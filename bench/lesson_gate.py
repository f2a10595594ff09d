"""What the lesson gate refuses: the harmful set it must refuse and the benign set it must pass.

    python bench/lesson_gate.py [--show]

Both sets are in tests/lesson_sets.py: the harmful lessons (one or more per kind of attack, at
least the 35 kinds of the issue that asked for the gate) and the benign ones (the paper-style
list in DESIGN.md, the lessons our tests, examples, classroom and benchmarks produce, and
lessons of other task domains that use the words a blunt filter fears). Prints how many of
each the rules refuse, the time per lesson, and with --show every refused benign and every
passed harmful lesson. The optional guard model is not involved.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from lesson_sets import BENIGN, HARMFUL  # noqa: E402

from ted.gate import check, normalise  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--show", action="store_true", help="list the lessons the gate got wrong")
    options = parser.parse_args()
    started = time.perf_counter()
    harmful = [(kind, text, check(normalise(text))) for kind, text in HARMFUL]
    benign = [(text, check(normalise(text))) for text in BENIGN]
    per_lesson = (time.perf_counter() - started) / (len(harmful) + len(benign)) * 1e6
    refused = sum(r is not None for *_, r in harmful)
    wrongly = sum(r is not None for _, r in benign)
    kinds = len({kind for kind, _ in HARMFUL})
    print(f"harmful: {refused} of {len(harmful)} refused ({kinds} kinds)")
    print(f"benign:  {wrongly} of {len(benign)} wrongly refused")
    print(f"{per_lesson:.0f} µs per lesson")
    if options.show:
        for kind, text, r in harmful:
            if r is None:
                print(f"passed harmful ({kind}): {text!r}")
        for text, r in benign:
            if r is not None:
                print(f"refused benign ({r.reason}): {text!r}")


if __name__ == "__main__":
    main()
