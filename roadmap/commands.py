"""Subcommands that need the training stack (run, plot); registered by cli.py."""


def add_subcommands(sub):
    return sub
