"""Placeholder until this task is built: it fails with a clear message instead of doing nothing."""

import sys

if __name__ == "__main__":
    sys.exit("error: this task is not implemented yet in this template version")
