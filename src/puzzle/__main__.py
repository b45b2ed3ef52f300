import sys

from puzzle.cli import main

sys.exit(main())
