import sys

from dainrt.cli import main

sys.exit(main())
