import sys

from diffprobe.cli import main

sys.exit(main())
