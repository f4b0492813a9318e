"""The built-in synthetic face set: cartoon faces whose action units are localised, graded drawings.

Each subject has its own geometry, colours, AU base rates and a resting face that already shows a
little of some AUs (drawn by the same code as the AU itself), so identity is a shortcut a model can
take on training subjects and that fails on unseen ones: the bias CL-ILE exists to remove.
A label is 1 when the frame's AU intensity reaches 0.5; what is drawn is the subject's resting amount
plus the intensity, so neither a single image nor a single subject gives the threshold away.

    python -m clile_core.data.synthetic --out data/synthetic/demo --subjects 18 --frames-per-subject 80

Modules by concern: ``subjects`` (people, AU intensities over a session, labels), ``drawing`` (one frame:
face, pose, lighting), ``writer`` (the dataset folder), ``cli`` (the command line).
"""

from clile_core.data.synthetic.cli import main
from clile_core.data.synthetic.drawing import FACE_CENTRE, FACE_ZOOM, Lighting, Pose, apply_lighting, draw_face, sample_jitter
from clile_core.data.synthetic.subjects import (AU_INDEX, MIMIC_AUS, RENDER_AUS, THRESHOLD, SubjectParams,
                                                labels_from_intensities, make_subject, sample_intensities, session_weights)
from clile_core.data.synthetic.writer import GENERATOR_VERSION, ensure_dataset, generate

__all__ = ["AU_INDEX", "FACE_CENTRE", "FACE_ZOOM", "GENERATOR_VERSION", "Lighting", "MIMIC_AUS", "Pose", "RENDER_AUS",
           "SubjectParams", "THRESHOLD", "apply_lighting", "draw_face", "ensure_dataset", "generate",
           "labels_from_intensities", "main", "make_subject", "sample_intensities", "sample_jitter", "session_weights"]
