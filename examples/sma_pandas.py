"""Moving-average crossover with pandas over daily closes read from stdin.

Prints each crossover signal and the strategy's return against buy-and-hold.
Usage: python3 sma_pandas.py [FAST] [SLOW] < prices.csv   (columns: date, close)
Run it sandboxed: scriptbox run examples/sma_pandas.py --stdin examples/data/prices.csv
"""
import sys

import numpy as np
import pandas as pd


def main(argv):
    fast_n = int(argv[1]) if len(argv) > 1 else 10
    slow_n = int(argv[2]) if len(argv) > 2 else 30
    prices = pd.read_csv(sys.stdin, parse_dates=["date"]).set_index("date")["close"]
    fast = prices.rolling(fast_n).mean()
    slow = prices.rolling(slow_n).mean()
    position = (fast > slow).astype(int).where(slow.notna(), 0)
    for date, change in position.diff().fillna(0).items():
        if change:
            side = "BUY " if change > 0 else "SELL"
            print(f"{date:%Y-%m-%d} {side} at {prices[date]:.2f}")
    daily = prices.pct_change().fillna(0)
    strategy = float(np.prod(1 + daily * position.shift(1).fillna(0)) - 1)
    hold = float(prices.iloc[-1] / prices.iloc[0] - 1)
    print(f"strategy return {strategy:+.2%}, buy and hold {hold:+.2%}")


if __name__ == "__main__":
    main(sys.argv)
