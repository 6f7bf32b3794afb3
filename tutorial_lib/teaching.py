"""Show the library's own code in a lesson, so the notebook never holds a copy that drifts."""

from __future__ import annotations

import inspect


def source(*objects) -> object:
    """The real source of classes or functions, as a highlighted Markdown block."""
    from IPython.display import Markdown

    code = "\n\n".join(inspect.getsource(obj).rstrip() for obj in objects)
    where = ", ".join(f"`{obj.__module__}.{obj.__qualname__}`" for obj in objects)
    return Markdown(f"From {where}:\n\n```python\n{code}\n```")
