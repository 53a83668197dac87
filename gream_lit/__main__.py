import sys

from gream_lit.experiment.cli import main

sys.exit(main())
