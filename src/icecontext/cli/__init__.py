"""The ``icecontext`` command line: one command, one module per subcommand."""
