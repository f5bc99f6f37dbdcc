"""byllm-distill: capture what a hosted model answers at each Jac `by llm()` call site.

Importing this package is cheap: no jaclang, byLLM, torch or llama.cpp is loaded until a
function that needs it runs. In Jac programs capture is automatic where jaclang loads
plugins (0.16.7 does); on a Jac without plugins, wrap the model: `distill(model)`. Python
users of byLLM decorate functions with `byllm_distill.by(model)`. `teacher(name)` gives a
program the configured hosted teacher, else a task's offline one (teachers.py).
"""

from byllm_distill.api import by, flush
from byllm_distill.attach import distill
from byllm_distill.teachers import teacher

__version__ = "0.1.0"
__all__ = ["__version__", "by", "distill", "flush", "teacher"]
