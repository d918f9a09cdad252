# expect: cpu-limit
# Ignores the CPU-limit warning signal and spins on.
import signal
signal.signal(signal.SIGXCPU, signal.SIG_IGN)
while True:
    pass
