"""Print pyproject.toml's requirements, one per line: the runtime ones, plus the named extras.

    python scripts/project_requirements.py          # what the server needs
    python scripts/project_requirements.py test     # what the tests need besides
"""

import sys
import tomllib
from pathlib import Path

project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
extras = sys.argv[1:]
requirements = project["dependencies"] if not extras else []
for extra in extras:
    requirements += project["optional-dependencies"][extra]
print("\n".join(requirements))
