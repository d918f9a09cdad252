# expect: killed
# signal: SIGSEGV
# expect-gvisor-local: failed
# signal-gvisor-local: none
# exit-code-gvisor-local: 139
# (Known limit: local gVisor runs without scriptbox's init, so runsc's
# 128+N exit status is all there is to read.)
# Sends itself SIGSEGV: killed by SIGSEGV, as the init reports it.
import os, signal
os.kill(os.getpid(), signal.SIGSEGV)
