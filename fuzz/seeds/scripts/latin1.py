# -*- coding: latin-1 -*-
# Prix en éuros
import csv
nom = "café"
print(nom, "£¥")
