"""``python -m clipfl`` runs the local federation launcher."""

import sys

from clipfl.launch import main

sys.exit(main())
