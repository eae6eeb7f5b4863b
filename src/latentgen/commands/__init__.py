"""One module per ``python -m latentgen`` command: ``add_arguments(parser)`` and ``run(args)``."""
