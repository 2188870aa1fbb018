"""``python -m stageflow`` is the ``stageflow`` command."""

from stageflow.cli.main import main

if __name__ == "__main__":
    main()
