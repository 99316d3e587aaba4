from pathlib import Path

import evaluate
from evaluate.utils import launch_gradio_widget

# The Space's own metric script (`grokcopy push-metric` names it after the Space). evaluate.load("copy_accuracy")
# would resolve to evaluate-metric/copy_accuracy on the Hub instead of this Space.
script = next(p for p in sorted(Path(__file__).resolve().parent.glob("*.py")) if p.name != "app.py")
module = evaluate.load(str(script))
launch_gradio_widget(module)
