# ml_strategy.py: the origin platform's "Advanced ML Script" example.
import pandas as pd
import numpy as np
from sklearn.ensemble import RandomForestClassifier
import matplotlib.pyplot as plt

# Requires: pandas, numpy, scikit-learn, matplotlib
