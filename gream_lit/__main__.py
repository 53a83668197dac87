import sys

from gream_lit.experiment.cli import entry

sys.exit(entry())
