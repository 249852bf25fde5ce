"""`python -m lbspeaker.lbctl`."""

import sys

from lbspeaker.lbctl.cli import main

sys.exit(main())
