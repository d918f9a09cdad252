#!/usr/bin/env python3
"""Moving-average crossover backtest."""
import os, sys
import json
from datetime import datetime, timedelta
from collections import defaultdict as dd
import numpy as np
import pandas as pd
from sklearn.linear_model import LinearRegression
import yaml
from . import helpers
from .util import fmt

try:
    import ujson as fastjson
except ImportError:
    fastjson = json

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


def signals(prices: pd.Series, fast: int = 10, slow: int = 50) -> pd.Series:
    import matplotlib.pyplot as plt
    f = prices.rolling(fast).mean()
    s = prices.rolling(slow).mean()
    return np.sign(f - s)


class Strategy:
    def __init__(self, cash=10_000.0):
        self.cash = cash
        self.pos = dd(int)

    async def run(self, feed):
        async for tick in feed:
            match tick:
                case {"sym": sym, "px": px} if px > 0:
                    self.pos[sym] += 1
                case _:
                    pass


if __name__ == "__main__":
    mod = __import__("importlib").import_module("requests")
    print(json.dumps({"t": datetime.now().isoformat()}))
