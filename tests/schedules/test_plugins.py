"""A third-party schedule through the real entry-point machinery: a throwaway distribution on PYTHONPATH.

Its plugin module defines a :class:`pruneplug.Schedule` subclass and hands it
over through ``pruneplug_add_schedules``; a fresh interpreter finds it with
``importlib.metadata`` as it would an installed package, and
``pruneplug.make_schedule``, ``pruneplug list --json`` and
``pruneplug schema --schedule`` all see it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

PLUGIN = """
    import math

    import pruneplug


    class Sine(pruneplug.Schedule):
        \"\"\"A quarter sine wave from initial to final: fast at first.\"\"\"

        name = "sine"

        def sparsity(self, step, initial, final):
            return initial + (final - initial) * math.sin(math.pi / 2 * self.progress(step))


    class Broken(Sine):
        name = "Broken Name"


    @pruneplug.hookimpl
    def pruneplug_add_schedules():
        return [Sine, Broken]
"""

SCRIPT = """
import json, warnings
import pruneplug
from pruneplug.cli import main

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    sine = pruneplug.make_schedule({"name": "sine", "final": 0.8, "end": 90, "every": 30})
print(json.dumps({
    "preview": sine.preview(),
    "warnings": [str(w.message) for w in caught if issubclass(w.category, pruneplug.PluginLoadWarning)],
}))
main(["list", "--json"])
main(["schema", "--schedule", "--indent", "0"])
"""


def _documents(text: str) -> list[dict[str, Any]]:
    """The JSON documents printed one after another (``pruneplug list --json`` spans many lines)."""
    decoder, documents, index = json.JSONDecoder(), [], 0
    while index < len(text):
        if text[index].isspace():
            index += 1
            continue
        document, index = decoder.raw_decode(text, index)
        documents.append(document)
    return documents


def test_a_distributions_schedule_is_found_made_listed_and_in_the_schema(tmp_path: Path) -> None:
    site = tmp_path / "site"
    dist_info = site / "pruneplug_sine-1.2.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: pruneplug-sine\nVersion: 1.2.0\n")
    (dist_info / "entry_points.txt").write_text("[pruneplug]\nsine = pp_sine\n")
    (site / "pp_sine.py").write_text(textwrap.dedent(PLUGIN))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    env.pop("PRUNEPLUG_DISABLE_PLUGIN_AUTOLOAD", None)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=False, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    made, listed, schema = _documents(done.stdout)
    steps, values = zip(*made["preview"])
    assert steps == (0, 30, 60, 90) and values[0] == 0.0 and values[-1] == 0.8
    assert abs(values[1] - 0.4) < 1e-12  # sin(pi/6) = 1/2
    assert made["warnings"] == [
        "pruneplug plugin pruneplug-sine 1.2.0 (entry point 'sine = pp_sine'): it handed over something that is "
        "not a schedule: schedule name 'Broken Name' of Broken must be lowercase letters, digits and underscores, "
        "starting with a letter"
    ]
    sine = next(s for s in listed["schedules"] if s["name"] == "sine")
    assert sine["provider"] == "pruneplug-sine 1.2.0 (entry point 'sine = pp_sine')"
    assert sine["summary"] == "A quarter sine wave from initial to final: fast at first."
    plugin = next(p for p in listed["plugins"] if p["name"] == "sine")
    assert plugin["status"] == "broken" and plugin["schedules"] == ["sine"]
    assert "sine" in [variant["title"] for variant in schema["oneOf"]]
