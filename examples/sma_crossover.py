"""Moving-average crossover over a CSV of daily closes (standard library only).

Prints each crossover signal and the strategy's return against buy-and-hold.
Usage: python3 sma_crossover.py [CSV] [FAST] [SLOW]
"""
# /// script
# requires-python = ">=3.8"
# dependencies = []
# ///

import csv
import sys
from collections import deque
from pathlib import Path


def moving_average(window):
    return sum(window) / len(window)


def main(argv):
    path = Path(argv[1]) if len(argv) > 1 else Path(__file__).parent / "data" / "prices.csv"
    fast_n = int(argv[2]) if len(argv) > 2 else 10
    slow_n = int(argv[3]) if len(argv) > 3 else 30
    fast, slow = deque(maxlen=fast_n), deque(maxlen=slow_n)
    position, entry, equity, first, last, prev = 0, 0.0, 1.0, None, None, None
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            close = float(row["close"])
            first = first or close
            last = close
            fast.append(close)
            slow.append(close)
            if len(slow) < slow_n:
                continue
            above = moving_average(fast) > moving_average(slow)
            if prev is not None and above != prev:
                if above and not position:
                    position, entry = 1, close
                    print(f"{row['date']} BUY  at {close:.2f}")
                elif not above and position:
                    equity *= close / entry
                    position = 0
                    print(f"{row['date']} SELL at {close:.2f}")
            prev = above
    if position:
        equity *= last / entry
    print(f"strategy return: {equity - 1:+.2%}  buy-and-hold: {last / first - 1:+.2%}")


if __name__ == "__main__":
    main(sys.argv)
