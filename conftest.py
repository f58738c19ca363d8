"""Suite-wide setup."""

import signal

# A shell starts a background job (`nohup pytest ... &`, a CI step run in the background) with
# SIGINT ignored, and jdrop keeps a signal that was ignored when it started ignored, by
# design. The tests of Ctrl-C need it delivered: give this process (and so every child it
# starts) Python's own SIGINT handler back. A test of the ignored case ignores it itself.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
  signal.signal(signal.SIGINT, signal.default_int_handler)
