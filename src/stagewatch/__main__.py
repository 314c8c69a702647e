"""``python -m stagewatch`` is the same as the ``stagewatch`` command."""

from stagewatch.cli.main import main

if __name__ == "__main__":
    main()
