"""One module per ``diffcut-lab`` command; each defines ``register(subparsers)`` and ``run(args)``."""
