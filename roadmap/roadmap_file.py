"""A roadmap file's text as plain data, and where each key sits (for errors that name a line).

TOML (tomllib, or tomli before Python 3.11) or YAML (pyyaml, strict: no duplicate keys, no
anchors). `custom` checks what the data says.
"""

import re
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple, Union

from .errors import RoadmapError

Path_ = Tuple[Union[str, int], ...]  # a key's place in the file, e.g. ("step", 2, "changes", "act")


def parse_toml(path: Path, text: str) -> Dict[str, Any]:
    try:
        import tomllib as toml  # Python 3.11+
    except ImportError:
        try:
            import tomli as toml
        except ImportError:
            raise RoadmapError(f"{path}: reading TOML needs Python 3.11+ or `pip install tomli`") from None
    try:
        return toml.loads(text)
    except toml.TOMLDecodeError as e:
        raise RoadmapError(f"{path}: not valid TOML: {e}") from None


def parse_yaml(path: Path, text: str):
    """The roadmap and a key locator, from one parse; duplicate keys and aliases refused."""
    try:
        import yaml
    except ImportError:
        raise RoadmapError(
            f"{path}: YAML roadmaps need pyyaml (`pip install pyyaml`); or write the roadmap in TOML"
        ) from None
    loader = _strict_loader(yaml)(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f", line {mark.line + 1}" if mark else ""
        raise RoadmapError(f"{path}{where}: not valid YAML: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise RoadmapError(f"{path}: not valid YAML: {e}") from None
    finally:
        loader.dispose()
    return data, _yaml_locator(node)


def _strict_loader(yaml):
    """yaml.SafeLoader refusing what a roadmap never needs and that misleads or hangs: a
    duplicate key (SafeLoader keeps the last one silently) and anchors/aliases (11 lines of
    nested aliases expand to billions of nodes: the "billion laughs")."""

    class StrictLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    "anchors and aliases (&name, *name) are not allowed in a roadmap file; write the values out",
                    event.start_mark,
                )
            return super().compose_node(parent, index)

        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    twice = key in seen
                except TypeError:  # unhashable: SafeLoader names it itself
                    continue
                if twice:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"key {key!r} appears twice in one table (YAML would keep the last silently); keep one",
                        key_node.start_mark,
                    )
                seen.add(key)
            return super().construct_mapping(node, deep)

    return StrictLoader


def _nearest(lines: Dict[Path_, int], path: Path_) -> Optional[int]:
    """The line of `path`, else of its closest enclosing key."""
    return next((lines[path[:n]] for n in range(len(path), 0, -1) if path[:n] in lines), None)


def _yaml_locator(root) -> Callable[[Path_], Optional[int]]:
    import yaml

    lines: Dict[Path_, int] = {}

    def walk(node, path):
        if isinstance(node, yaml.MappingNode):
            items = [(k.value, k, v) for k, v in node.value]
        elif isinstance(node, yaml.SequenceNode):
            items = [(i, v, v) for i, v in enumerate(node.value)]
        else:
            return
        for key, mark_node, child in items:
            lines[path + (key,)] = mark_node.start_mark.line + 1
            walk(child, path + (key,))

    walk(root, ())
    return lambda path: _nearest(lines, path)


def toml_locator(text: str) -> Callable[[Path_], Optional[int]]:
    """tomllib keeps no positions, so find keys in the text: within the k-th [[step]] block
    for a step's keys, before the first table for top-level keys."""
    lines = text.splitlines()
    headers = [n for n, line in enumerate(lines) if re.match(r"\s*\[\[\s*step\s*\]\]", line)]
    first_table = next((n for n, line in enumerate(lines) if re.match(r"\s*\[", line)), len(lines))

    def find(key, lo, hi) -> Optional[int]:
        pattern = re.compile(rf"""(^|[\s{{,.])["']?{re.escape(str(key))}["']?\s*=""")
        return next(
            (n + 1 for n in range(lo, hi) if not lines[n].lstrip().startswith("#") and pattern.search(lines[n])), None
        )

    def locate(path: Path_) -> Optional[int]:
        if len(path) > 1 and path[0] == "step" and isinstance(path[1], int) and path[1] < len(headers):
            lo = headers[path[1]]
            hi = headers[path[1] + 1] if path[1] + 1 < len(headers) else len(lines)
            # the innermost key first (changes.act: the `act =` line), then its parents
            found = (find(k, lo, hi) for k in reversed(path[2:]))
            return next((n for n in found if n), lo + 1)
        return find(path[0], 0, first_table) if path else None

    return locate
