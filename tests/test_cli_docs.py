"""docs/cli.md is generated from roadmap/cli.py's parsers (scripts/gen_cli_docs.py) and must
not drift from them: a flag added to a parser fails here until the page is regenerated."""

import argparse
import importlib.util

from helpers import ROOT
from roadmap.cli import build_parser


def _generator():
    spec = importlib.util.spec_from_file_location("gen_cli_docs", ROOT / "scripts" / "gen_cli_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_cli_md_is_what_the_parsers_generate():
    page = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert page == _generator().render(), "docs/cli.md is stale: run python scripts/gen_cli_docs.py"


def test_the_page_names_every_command_and_every_flag_with_its_help():
    page = _generator().render()
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        assert f"## `roadmap {name}`" in page
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for flag in action.option_strings or [action.metavar or action.dest]:
                assert f"`{flag}`" in page, (name, flag)
            if action.help:  # as --help shows it: %(default)s filled in, %% as %
                shown = sub._get_formatter()._expand_help(action)
                assert " ".join(shown.split()) in page, (name, action.dest)


def test_check_mode_reports_a_stale_page(tmp_path, monkeypatch, capsys):
    gen = _generator()
    monkeypatch.setattr(gen, "PAGE", tmp_path / "cli.md")
    monkeypatch.setattr(gen, "ROOT", tmp_path)
    (tmp_path / "cli.md").write_text("# old\n")
    assert gen.main(["--check"]) == 1 and "stale" in capsys.readouterr().err
    assert gen.main([]) == 0 and gen.main(["--check"]) == 0
