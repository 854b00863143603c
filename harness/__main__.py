import sys

try:
    from .cli import main  # imports torch and the rest: seconds, in which a Ctrl-C is one line, not a traceback
except KeyboardInterrupt:
    sys.stderr.write("\nharness: interrupted while starting\n")
    sys.exit(130)

sys.exit(main())
