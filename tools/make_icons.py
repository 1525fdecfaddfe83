"""Build static/vendor/lucide-<version>/icons.svg: the few Lucide icons the pages use, as one
SVG sprite (`<use href=".../icons.svg#name">`), from the lucide-static npm package.

    npm pack lucide-static@1.62.0 && tar xzf lucide-static-1.62.0.tgz
    python tools/make_icons.py package

Vendored, not built at run time: there is no JavaScript build, and the sprite is small.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

ICONS = ("circle-check", "info", "circle-alert", "triangle-alert", "x", "clock", "check", "ban", "shield-check",
         "keyboard", "printer", "history", "rotate-cw", "calendar-plus")
ROOT = Path(__file__).resolve().parent.parent


def symbol(name: str, svg: str) -> str:
    body = re.search(r"<svg[^>]*>(.*)</svg>", svg, re.S)
    assert body, name
    shapes = " ".join(line.strip() for line in body.group(1).strip().splitlines())
    return (f'<symbol id="{name}" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" '
            f'stroke-linecap="round" stroke-linejoin="round">{shapes}</symbol>')


def main(package: Path) -> None:
    version = json.loads((package / "package.json").read_text())["version"]
    target = ROOT / "static" / "vendor" / f"lucide-{version}"
    target.mkdir(parents=True, exist_ok=True)
    symbols = "\n".join(symbol(name, (package / "icons" / f"{name}.svg").read_text()) for name in ICONS)
    (target / "icons.svg").write_text(
        f'<!-- Lucide {version} (ISC, see LICENSE): {", ".join(ICONS)}; built by tools/make_icons.py -->\n'
        f'<svg xmlns="http://www.w3.org/2000/svg">\n{symbols}\n</svg>\n')
    shutil.copy(package / "LICENSE", target / "LICENSE")
    print(target / "icons.svg")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
