"""The `power-bert` console command's entry point. It imports the package (torch and the training
stack: seconds) inside :func:`main`, so Ctrl-C while it loads ends the command quietly with status
130, as Ctrl-C does at any later moment (:func:`power_bert_ops.cli.main`)."""
import sys


def main() -> int:
    try:
        from power_bert_ops.cli import main as run
    except KeyboardInterrupt:
        print("\npower-bert: interrupted", file=sys.stderr)
        return 130
    return run()


if __name__ == "__main__":
    sys.exit(main())
