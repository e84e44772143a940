"""HTML pages from Jinja2 templates kept as files beside the code that fills them (``templates/``)."""

from __future__ import annotations

import functools
from pathlib import Path


@functools.cache
def _environment(folder: str):
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(template: Path, **context) -> str:
    """Render the template file ``template`` with ``context`` (HTML-escaped unless marked safe)."""
    template = Path(template)
    return _environment(str(template.parent)).get_template(template.name).render(**context)
