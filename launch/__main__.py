"""`python -m launch` / `tfod-launch`: see launch/cli.py for the commands and launch/commands.py
for their work."""

import sys

from sagemaker_tfod.data_prep.console import missing_extra_message, prog_name


def main(argv: list[str] | None = None) -> int:
    try:
        from sagemaker_tfod.launch.cli import main as cli_main
    except ModuleNotFoundError as error:  # boto3 comes with the 'host' extra
        message = missing_extra_message(error, prog_name("launch"))
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
