import sys

from diffkit.cli import main

sys.exit(main())
