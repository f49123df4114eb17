"""`python -m launch`: see launch/cli.py for the commands and launch/commands.py for their work."""

import sys

from sagemaker_tfod.launch.cli import main

if __name__ == "__main__":
    sys.exit(main())
