# expect: killed
# signal: SIGSEGV
# Sends itself SIGSEGV: killed by SIGSEGV, as the init reports it.
import os, signal
os.kill(os.getpid(), signal.SIGSEGV)
