import sys

from clipfl.client.cli import main

sys.exit(main())
