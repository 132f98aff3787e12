"""Instructions of the coloured-targets task: colours, paraphrase templates (train / held-out) and held-out pairs.

An instruction names the colour of the pad the T must reach; the paraphrase is drawn per episode. The held-out
templates share no verb, noun or adjective with the training templates (only function words such as "the", "to",
"on" and the colour itself), so success on them measures paraphrase generalisation, not memorised strings.
"""

from __future__ import annotations

import string

COLORS = ("red", "green", "blue", "yellow")
# RGBA of each pad: saturated and far apart in hue, all clearly different from the grey table, the blue-grey T and
# the orange pusher.
COLOR_RGBA = {
    "red": (0.90, 0.10, 0.10, 1.0),
    "green": (0.10, 0.75, 0.15, 1.0),
    "blue": (0.10, 0.25, 0.95, 1.0),
    "yellow": (0.95, 0.85, 0.05, 1.0),
}
SPLITS = ("train", "heldout")

TRAIN_TEMPLATES = (
    "push the T onto the {color} target",
    "push the T-shaped block onto the {color} target",
    "move the block to the {color} pad",
    "slide the T block onto the {color} circle",
    "put the T on the {color} target",
    "push the block to the {color} marker",
    "bring the T to the {color} pad",
)
HELDOUT_TEMPLATES = (
    "shove the tee over to the {color} disc",
    "nudge the tee piece until it rests on the {color} dot",
    "the {color} spot is where the shape should end up",
)
TEMPLATES = {"train": TRAIN_TEMPLATES, "heldout": HELDOUT_TEMPLATES}

# Held-out (colour, slot) pairs: the instructed colour's pad at that slot never occurs in a training episode. One per
# colour and one per slot (a Latin-square transversal), so every colour and every slot is still trained on three
# slots / colours.
HELDOUT_COMBOS = (("red", 2), ("green", 0), ("blue", 3), ("yellow", 1))
COMBO_SPLITS = ("train", "heldout", "all")

# Characters an instruction may hold (the observation's gymnasium Text space).
CHARSET = string.ascii_letters + string.digits + " -',.!?"
MAX_LENGTH = 96


def instructions(color: str, split: str = "train") -> list[str]:
    """Every paraphrase of the instruction for ``color`` in ``split`` (``train`` or ``heldout``).

    Raises:
        ValueError: an unknown colour or split, naming it.
    """
    if color not in COLORS:
        raise ValueError(f"unknown colour {color!r}; colours are {COLORS}")
    if split not in SPLITS:
        raise ValueError(f"unknown instruction split {split!r}; splits are {SPLITS}")
    return [template.format(color=color) for template in TEMPLATES[split]]


def color_of(instruction: str) -> str | None:
    """The colour an instruction names (the first colour word in it), or None when it names none."""
    words = instruction.lower().replace("-", " ").split()
    return next((word for word in words if word in COLORS), None)
