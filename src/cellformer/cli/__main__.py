import sys

from cellformer.cli import main

sys.exit(main())
