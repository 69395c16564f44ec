"""Sub-commands of the ``pwlab`` command line (one module each, ``main(argv) -> int``)."""
