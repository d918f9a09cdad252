import os
from sys import (argv,
def broken(:
    return [1, 2
class X
    pass
print "hello"
import numpy as np
