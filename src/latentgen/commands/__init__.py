"""One module per ``python -m latentgen`` command: ``run(args)`` and its help (the module docstring);
its options are defined in ``latentgen.options.<name>`` (``add_arguments(parser)``)."""
