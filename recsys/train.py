"""`python -m recsys.train ...`: the same as the `recsys-train` command."""

from recsys.cli.train import main

if __name__ == "__main__":
    main()
