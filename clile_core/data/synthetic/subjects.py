"""Synthetic people and what their faces do: per-subject geometry, colours, resting face and base rates;
AU intensities over a session (expression prototypes with onsets and offsets); labels from intensities."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clile_core.datasets import au_numbers

# AU5 (upper lid raiser) is drawn for surprise and fear but is in neither label set, as in BP4D/DISFA.
RENDER_AUS: tuple[int, ...] = (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 23, 24, 25, 26)
AU_INDEX = {au: i for i, au in enumerate(RENDER_AUS)}
THRESHOLD = 0.5
UNCODED_RATE = 0.015
MIMIC_AUS: tuple[int, ...] = (1, 2, 4, 6, 7, 10, 12, 15, 17, 24)

# A prototype is a list of (alternatives, probability): with that probability one of the
# alternatives is active. This makes AUs co-occur as in real expressions (FACS/EMFACS).
Item = tuple[tuple[int, ...], float]
PROTOTYPES: dict[str, tuple[Item, ...]] = {
    "neutral": (),
    "happiness": (((6,), 0.9), ((12,), 1.0), ((25,), 0.5), ((10,), 0.25), ((14,), 0.2), ((7,), 0.3), ((26,), 0.1)),
    "polite_smile": (((12,), 1.0), ((14,), 0.8), ((24,), 0.3), ((17,), 0.3)),
    "sadness": (((1,), 1.0), ((4,), 0.9), ((15,), 0.9), ((17,), 0.6)),
    "surprise": (((1,), 1.0), ((2,), 1.0), ((5,), 0.6), ((25, 26), 0.8)),
    "anger": (((4,), 1.0), ((7,), 0.9), ((23, 24), 0.8), ((17,), 0.3), ((10,), 0.2)),
    "disgust": (((9, 10), 1.0), ((9,), 0.3), ((10,), 0.3), ((17,), 0.7), ((4,), 0.3), ((15,), 0.2)),
    "fear": (((1,), 1.0), ((2,), 0.9), ((4,), 0.9), ((5,), 0.6), ((25,), 0.6), ((7,), 0.3)),
}
PROTOTYPE_NAMES = tuple(PROTOTYPES)
BASE_WEIGHTS = np.array([0.26, 0.2, 0.1, 0.1, 0.1, 0.1, 0.08, 0.06])
BROW_CONFLICT_OK = {"sadness", "fear"}  # AU1 with AU4 outside these is rare in real data

Colour = tuple[int, int, int]


@dataclass(frozen=True)
class SubjectParams:
    """Everything that makes one synthetic person: geometry (image units, the image spans [-1, 1]),
    colours, resting face and how often each expression and AU occurs."""

    face_w: float
    face_h: float
    chin_taper: float
    eye_y: float
    eye_dx: float
    eye_w: float
    eye_h: float
    eye_tilt: float
    brow_gap: float
    brow_thick: float
    brow_slant: float
    brow_arch: float
    nose_len: float
    nose_w: float
    mouth_gap: float
    mouth_w: float
    lip_up: float
    lip_lo: float
    hairline: float
    hair_volume: float
    hair_length: float
    skin: Colour
    hair: Colour
    brow: Colour
    lips: Colour
    iris: Colour
    shirt: Colour
    background: Colour
    rest: dict[int, float]  # resting-face amount per AU: drawn, never labelled
    gain: float  # expressivity: how strongly an intensity shows on this face
    proto_weights: tuple[float, ...]
    au_rates: tuple[float, ...]  # per RENDER_AUS, chance a segment adds the AU on its own

    @property
    def mouth_y(self) -> float:
        return self.eye_y + self.nose_len + self.mouth_gap

    @property
    def face_cy(self) -> float:
        return 0.06


# ----------------------------------------------------------------------------- subjects


def _colour(rng: np.random.Generator, lo: Colour, hi: Colour) -> Colour:
    t = rng.random()
    return tuple(int(a + (b - a) * t + rng.normal(0, 6)) for a, b in zip(lo, hi))  # type: ignore[return-value]


def mix(a: Colour, b: Colour, t: float) -> Colour:
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))  # type: ignore[return-value]


def _pick_mimics(rng: np.random.Generator) -> dict[int, float]:
    aus = [int(a) for a in rng.choice(MIMIC_AUS, size=int(rng.integers(1, 4)), replace=False)]
    if 12 in aus and 15 in aus:  # corners up and down would cancel out
        aus.remove(15)
    return {au: float(rng.uniform(0.1, 0.25)) for au in aus}


def _base_rates(rng: np.random.Generator, rest: dict[int, float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-subject expression mix and single-AU rates; half the time a subject also often does what
    its resting face mimics, which makes the identity shortcut pay off on training subjects."""
    weights = BASE_WEIGHTS * np.exp(rng.normal(0, 0.6, len(BASE_WEIGHTS)))
    weights[rng.integers(1, len(weights))] *= 3.0  # a favourite non-neutral expression
    rates = 0.04 * np.exp(rng.normal(0, 0.7, len(RENDER_AUS)))
    for au in rest:
        if rng.random() < 0.5:
            rates[AU_INDEX[au]] *= 2.5
    return tuple((weights / weights.sum()).tolist()), tuple(np.minimum(rates, 0.5).tolist())


def make_subject(rng: np.random.Generator) -> SubjectParams:
    u = rng.uniform
    skin = _colour(rng, (240, 206, 182), (112, 74, 52))
    hair = [(30, 24, 22), (82, 52, 32), (150, 104, 58), (214, 182, 120), (160, 158, 156), (140, 56, 30)][rng.integers(6)]
    hair = mix(hair, (int(u(0, 255)),) * 3, 0.1)
    rest = _pick_mimics(rng)
    proto_weights, au_rates = _base_rates(rng, rest)
    return SubjectParams(
        face_w=u(0.54, 0.66), face_h=u(0.68, 0.80), chin_taper=u(0.0, 0.35),
        eye_y=u(-0.13, -0.05), eye_dx=u(0.19, 0.26), eye_w=u(0.08, 0.105), eye_h=u(0.038, 0.058),
        eye_tilt=u(-0.012, 0.012), brow_gap=u(0.10, 0.15), brow_thick=u(0.028, 0.046),
        brow_slant=u(-0.015, 0.015), brow_arch=u(0.0, 0.03),
        nose_len=u(0.20, 0.27), nose_w=u(0.06, 0.085), mouth_gap=u(0.11, 0.15), mouth_w=u(0.13, 0.18),
        lip_up=u(0.024, 0.038), lip_lo=u(0.03, 0.048),
        hairline=u(-0.64, -0.5), hair_volume=u(0.03, 0.12), hair_length=u(-0.2, 0.7),
        skin=skin, hair=hair, brow=mix(hair, (20, 16, 14), u(0.2, 0.6)),
        lips=mix(skin, (178, 62, 74), u(0.35, 0.6)),
        iris=[(70, 46, 30), (60, 100, 140), (70, 110, 70), (40, 30, 26)][rng.integers(4)],
        shirt=tuple(int(c) for c in rng.integers(20, 235, 3)),  # type: ignore[arg-type]
        background=tuple(int(c) for c in rng.integers(40, 220, 3)),  # type: ignore[arg-type]
        rest=rest, gain=u(0.85, 1.15), proto_weights=proto_weights, au_rates=au_rates,
    )


# ----------------------------------------------------------------------------- labels


def _sample_expression(subject: SubjectParams, weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Target intensities of one expression segment: a prototype plus occasional independent AUs."""
    name = PROTOTYPE_NAMES[rng.choice(len(PROTOTYPE_NAMES), p=weights)]
    target = np.zeros(len(RENDER_AUS))
    strength = rng.uniform(0.35, 1.0)  # AUs of one expression rise together
    for alternatives, prob in PROTOTYPES[name]:
        if rng.random() < prob:
            au = alternatives[rng.integers(len(alternatives))]
            target[AU_INDEX[au]] = np.clip(strength + rng.normal(0, 0.15), 0.1, 1.0)
    for i, au in enumerate(RENDER_AUS):
        if target[i] > 0 or _brow_conflict(au, target, name):
            continue
        if rng.random() < subject.au_rates[i]:
            target[i] = rng.uniform(0.5, 1.0)
        elif rng.random() < 0.04:  # weak, sub-threshold activations keep the task from being trivial
            target[i] = rng.uniform(0.1, 0.45)
    return target


def _brow_conflict(au: int, target: np.ndarray, prototype: str) -> bool:
    other = {1: 4, 4: 1}.get(au)
    return other is not None and prototype not in BROW_CONFLICT_OK and target[AU_INDEX[other]] > 0


def sample_intensities(subject: SubjectParams, n_frames: int, rng: np.random.Generator,
                       weights: np.ndarray | None = None) -> np.ndarray:
    """(n_frames, len(RENDER_AUS)) intensities in [0, 1] of one video-like session: expressions hold
    for several frames and onsets/offsets ramp through intermediate values."""
    weights = np.asarray(subject.proto_weights if weights is None else weights)
    out = np.zeros((n_frames, len(RENDER_AUS)))
    current = np.zeros(len(RENDER_AUS))
    t = 0
    while t < n_frames:
        target = _sample_expression(subject, weights, rng)
        for _ in range(int(rng.integers(4, 13))):
            if t == n_frames:
                break
            current += 0.5 * (target - current)
            out[t] = np.clip(current + rng.normal(0, 0.03, len(RENDER_AUS)) * (current > 0.02), 0.0, 1.0)
            t += 1
    return out


def labels_from_intensities(intensities: np.ndarray, au_set: str, rng: np.random.Generator) -> np.ndarray:
    """1/0 by the 0.5 threshold on the set's AUs, with a few entries not coded (-1)."""
    cols = [AU_INDEX[a] for a in au_numbers(au_set)]
    labels = (intensities[:, cols] >= THRESHOLD).astype(np.int64)
    labels[rng.random(labels.shape) < UNCODED_RATE] = -1
    return labels


def session_weights(subject: SubjectParams, rng: np.random.Generator) -> np.ndarray:
    """Like BP4D's tasks, each session elicits one expression more than usual."""
    weights = np.array(subject.proto_weights)
    weights[rng.integers(1, len(weights))] *= 2.5
    return weights / weights.sum()
