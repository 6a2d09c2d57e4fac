import sys

from spikeline.cli import main

sys.exit(main())
