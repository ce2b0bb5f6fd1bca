import sys

from clipfl.server.cli import main

sys.exit(main())
