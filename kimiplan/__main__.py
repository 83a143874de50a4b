import sys

from kimiplan.cli import main

sys.exit(main())
