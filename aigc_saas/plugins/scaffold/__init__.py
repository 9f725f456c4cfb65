"""Write a new generator plugin package: pyproject with the entry point, the plugin class, a contract-kit test."""

from __future__ import annotations

import json
from pathlib import Path

import jinja2

from generators.base import PLUGIN_API_VERSION
from generators.registry import NAME_PATTERN

TEMPLATES = Path(__file__).parent
MODALITIES = ("text", "image", "audio")
SAMPLE_PARAMS = {
    "text": {"prompt": "fresh bread every morning", "max_words": 8, "seed": 1},
    "image": {"prompt": "a lighthouse at dusk", "width": 64, "height": 64, "seed": 1},
    "audio": {"prompt": "a doorbell", "duration_seconds": 0.25, "seed": 1},
}

STDLIB_IMPORTS = {
    "text": ["random"],
    "image": ["io", "random"],
    "audio": ["io", "math", "random", "struct", "wave"],
}


class ScaffoldError(ValueError):
    pass


def package_names(name: str) -> dict[str, str]:
    """`my-plugin` → distribution `aigc-plugin-my-plugin`, module `aigc_plugin_my_plugin`, class `MyPluginGenerator`."""
    if not NAME_PATTERN.match(name):
        raise ScaffoldError(f"`name`: {name!r} must match {NAME_PATTERN.pattern} (lower case, digits, - . _)")
    words = [w for w in name.replace(".", "-").replace("_", "-").split("-") if w]
    return {
        "name": name,
        "distribution": f"aigc-plugin-{'-'.join(words)}",
        "module": f"aigc_plugin_{'_'.join(words)}",
        "class_name": "".join(w.capitalize() for w in words) + "Generator",
    }


def write_plugin_package(name: str, directory: Path, modality: str = "text") -> Path:
    """Render the templates into `directory/<distribution>`; refuse to overwrite anything."""
    if modality not in MODALITIES:
        raise ScaffoldError(f"`modality`: {modality!r} is not one of {list(MODALITIES)}")
    names = package_names(name)
    root = Path(directory) / names["distribution"]
    if root.exists():
        raise ScaffoldError(f"`directory`: {root} already exists; choose another name or directory")
    context = {
        **names,
        "modality": modality,
        "api_version": PLUGIN_API_VERSION,
        "description": f"{'An' if modality[0] in 'aeiou' else 'A'} {modality} generator plugin for aigc-saas.",
        "stdlib_imports": "\n".join(f"import {m}" for m in STDLIB_IMPORTS[modality]),
        "sample_params": json.dumps(SAMPLE_PARAMS[modality]),  # plain str/number values: valid Python too
        "base_imports": ", ".join(
            ["GenerationContext", "GenerationResult", "Generator", "GeneratorConfig", "Modality"]
            + ([] if modality == "text" else ["OutputFile"])
        ),
    }
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - renders Python and TOML, not HTML
    )
    files = {
        "pyproject.toml": "pyproject.toml.j2",
        "README.md": "README.md.j2",
        f"src/{names['module']}/__init__.py": "plugin.py.j2",
        "tests/test_contract.py": "test_contract.py.j2",
    }
    for target, template in files.items():
        path = root / target
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(env.get_template(template).render(context))
    return root
