import sys

from clile_core.data.synthetic.cli import main

sys.exit(main())
