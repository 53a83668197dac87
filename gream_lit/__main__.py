import sys

from gream_lit.cli import main

sys.exit(main())
