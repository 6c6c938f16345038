"""The README's configuration table names every variable the settings read."""

import re
from pathlib import Path

from django.conf import settings

ROOT = Path(settings.BASE_DIR)


def test_every_settings_variable_is_documented():
    read = set()
    for path in (ROOT / "config" / "settings").glob("*.py"):
        source = path.read_text()
        read |= set(re.findall(r'\benv(?:\.\w+)?\(\s*"([A-Z][A-Z0-9_]+)"', source))
        read |= set(re.findall(r'os\.environ(?:\.get)?[\(\[]\s*"([A-Z][A-Z0-9_]+)"', source))
    assert "DATABASE_URL" in read  # the scan itself works

    readme = (ROOT / "README.md").read_text()
    # A row documents every `NAME` in its first cell (related variables share a row).
    first_cells = re.findall(r"^\| ([^|]+) \|", readme, re.M)
    documented = {name for cell in first_cells for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", cell)}
    assert read - documented == set(), "add these to README.md's configuration table"
