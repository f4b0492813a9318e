"""Rendering one frame: the subject's face with its AU intensities drawn as localised, graded changes, then
head pose, lighting and sensor noise."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

from clile_core.data.synthetic.subjects import Colour, SubjectParams, mix


@dataclass(frozen=True)
class Pose:
    rotation: float = 0.0  # degrees
    scale: float = 1.0
    shift: tuple[float, float] = (0.0, 0.0)  # image units


@dataclass(frozen=True)
class Lighting:
    brightness: float
    contrast: float
    cast: tuple[float, float, float]
    gradient: float  # left-right illumination falloff
    noise: float  # Gaussian pixel noise, in 0-255 levels


# Real AU datasets are aligned face crops: the face, brows to chin, fills the frame. Face units are
# zoomed about FACE_CENTRE so each AU's change covers as many pixels as it would in such a crop.
FACE_ZOOM = 1.45
# AU drawings at intensity 1 are this many times the base geometry's unit displacement: large enough
# that an AU outweighs the differences between subjects' resting geometry, as creases do on real faces.
AU_AMPLITUDE = 1.8
FACE_CENTRE = (0.0, 0.08)


class _Canvas:
    """Draws in face units (x right, y down, [-1, 1] before zoom) on a 2x canvas, posed and zoomed."""

    def __init__(self, size: int, pose: Pose, background: Colour):
        self.px = 2 * size
        self.img = Image.new("RGB", (self.px, self.px), background)
        self.draw = ImageDraw.Draw(self.img)
        half = self.px / 2
        theta = np.deg2rad(pose.rotation)
        scale = pose.scale * FACE_ZOOM
        c, s = np.cos(theta) * scale, np.sin(theta) * scale
        self.matrix = np.array([[c, -s], [s, c]]) * half
        self.offset = (np.asarray(pose.shift) + 1.0) * half
        self.unit = half * scale

    def _pts(self, xs: np.ndarray, ys: np.ndarray) -> list[float]:
        centred = np.stack([xs, ys], axis=1) - np.asarray(FACE_CENTRE)
        return (centred @ self.matrix.T + self.offset).ravel().tolist()

    def polygon(self, xs: np.ndarray, ys: np.ndarray, fill: Colour) -> None:
        self.draw.polygon(self._pts(xs, ys), fill=fill)

    def line(self, xs: np.ndarray, ys: np.ndarray, fill: Colour, width: float) -> None:
        self.draw.line(self._pts(xs, ys), fill=fill, width=max(1, round(width * self.unit)), joint="curve")

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, fill: Colour, n: int = 28) -> None:
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        self.polygon(cx + rx * np.cos(t), cy + ry * np.sin(t), fill)


def _crease(skin: Colour, amount: float) -> Colour:
    """Skin darkened towards a fold; amount 0 is invisible, so an AU at 0 draws nothing."""
    return mix(skin, tuple(int(c * 0.45) for c in skin), min(amount, 1.0))  # type: ignore[arg-type]


def _arc(x0: float, x1: float, y0: float, y1: float, bulge: float, n: int = 7) -> tuple[np.ndarray, np.ndarray]:
    u = np.linspace(0, 1, n)
    return x0 + (x1 - x0) * u, y0 + (y1 - y0) * u - bulge * 4 * u * (1 - u)


def _draw_head(cv: _Canvas, sp: SubjectParams, jaw: float) -> None:
    cy = sp.face_cy
    cv.ellipse(0, 1.3, 0.95, 0.45, sp.shirt)
    cv.polygon(np.array([-0.24, 0.24, 0.26, -0.26]), np.array([cy + 0.3, cy + 0.3, 1.1, 1.1]), mix(sp.skin, (0, 0, 0), 0.15))
    hv = sp.hair_volume
    cv.ellipse(0, cy - 0.1, sp.face_w + hv, sp.face_h * 0.8 + hv, sp.hair)
    if sp.hair_length > 0:
        cv.polygon(np.array([-sp.face_w - hv, sp.face_w + hv, sp.face_w + hv * 0.5, -sp.face_w - hv * 0.5]),
                   np.array([cy - 0.1, cy - 0.1, cy + sp.hair_length, cy + sp.hair_length]), sp.hair)
    for sgn in (-1, 1):
        cv.ellipse(sgn * sp.face_w * 0.98, sp.eye_y + 0.1, 0.06, 0.1, mix(sp.skin, (0, 0, 0), 0.08))
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    xs, ys = sp.face_w * np.cos(t), sp.face_h * np.sin(t)
    lower = np.clip(ys / sp.face_h, 0, 1)
    xs = xs * (1 - sp.chin_taper * lower**2)
    ys = ys + jaw * lower**2  # jaw drop lengthens the lower face only
    cv.polygon(xs, cy + ys, sp.skin)


def _draw_hair_cap(cv: _Canvas, sp: SubjectParams) -> None:
    t = np.linspace(np.pi, 2 * np.pi, 19)
    top_x, top_y = (sp.face_w + 0.01) * np.cos(t), sp.face_cy + (sp.face_h + 0.01) * np.sin(t)
    edge_x = np.linspace(sp.face_w + 0.01, -sp.face_w - 0.01, 15)
    edge_y = sp.hairline + (sp.face_cy - 0.12 - sp.hairline) * (edge_x / sp.face_w) ** 8
    cv.polygon(np.concatenate([top_x, edge_x]), np.concatenate([top_y, edge_y]), sp.hair)


def _draw_brows(cv: _Canvas, sp: SubjectParams, v: Callable[[int], float]) -> None:
    a1, a2, a4 = v(1), v(2), v(4)
    base = sp.eye_y - sp.brow_gap
    # forehead wrinkles: centre for the inner raise, sides for the outer raise
    for k in range(2):
        y = base - 0.075 - 0.04 * k
        if a1 > 0.02:
            cv.line(*_arc(-0.09, 0.09, y, y, 0.01), _crease(sp.skin, 0.8 * a1), 0.012)
        if a2 > 0.02:
            for sgn in (-1, 1):
                cv.line(*_arc(sgn * 0.13, sgn * 0.3, y + 0.01, y + 0.025, 0.012), _crease(sp.skin, 0.8 * a2), 0.012)
    if a4 > 0.02:  # glabellar furrows between lowered brows
        for sgn in (-1, 1):
            cv.line(np.array([sgn * 0.028, sgn * 0.022]), np.array([base - 0.01, base + 0.07]), _crease(sp.skin, 0.9 * a4), 0.014)
    u = np.linspace(0, 1, 8)
    for sgn in (-1, 1):
        x_in = sgn * (sp.eye_dx - sp.eye_w * 0.85 - 0.045 * a4)
        x_out = sgn * (sp.eye_dx + sp.eye_w * 1.15)
        y_in = base + sp.brow_slant + 0.08 * a4 - 0.12 * a1
        y_out = base - sp.brow_slant * 0.5 + 0.03 * a4 - 0.11 * a2
        xs = x_in + (x_out - x_in) * u
        ys = y_in + (y_out - y_in) * u - (sp.brow_arch + 0.03 * a2) * 4 * u * (1 - u)
        half = sp.brow_thick * (1 - 0.55 * u) / 2
        cv.polygon(np.concatenate([xs, xs[::-1]]), np.concatenate([ys - half, (ys + half)[::-1]]), sp.brow)


def _draw_cheeks(cv: _Canvas, sp: SubjectParams, v: Callable[[int], float]) -> None:
    a6 = v(6)
    if a6 <= 0.02:
        return
    raised = mix(mix(sp.skin, (255, 255, 255), 0.12), (220, 90, 90), 0.12)
    for sgn in (-1, 1):
        cy = sp.eye_y + 0.15 - 0.035 * a6
        cv.ellipse(sgn * (sp.eye_dx + 0.02), cy, 0.11, 0.065, mix(sp.skin, raised, min(a6, 1.0)))
        cv.line(*_arc(sgn * (sp.eye_dx - 0.1), sgn * (sp.eye_dx + 0.12), cy + 0.06, cy + 0.04, -0.02),
                _crease(sp.skin, 0.7 * a6), 0.012)


def _clip_disc(cx: float, cy: float, r: float, ex: float, ew: float, upper, lower) -> tuple[np.ndarray, np.ndarray]:
    """A disc clipped to the eye opening (lids are functions of x, so clamping y clips exactly)."""
    t = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    xs = np.clip(cx + r * np.cos(t), ex - ew, ex + ew)
    ys = np.clip(cy + r * np.sin(t), upper(xs), lower(xs))
    return xs, ys


def _draw_eyes(cv: _Canvas, sp: SubjectParams, v: Callable[[int], float]) -> None:
    a5, a6, a7 = v(5), v(6), v(7)
    up = sp.eye_h * max(0.15, 1 + 0.7 * a5 - 0.5 * a7 - 0.15 * a6)
    lo = sp.eye_h * 0.75 * max(0.15, 1 - 0.6 * a7 - 0.5 * a6)
    for sgn in (-1, 1):
        ex, ey, ew = sgn * sp.eye_dx, sp.eye_y, sp.eye_w

        def shape(xs: np.ndarray, h: float, ex: float = ex) -> np.ndarray:
            t = np.clip((xs - ex) / ew, -1, 1)
            return ey - sgn * sp.eye_tilt * t + h * (1 - t**2)

        def upper(xs: np.ndarray) -> np.ndarray:
            return shape(xs, -up)

        def lower(xs: np.ndarray) -> np.ndarray:
            return shape(xs, lo)

        xs = ex + ew * np.linspace(-1, 1, 13)
        cv.polygon(np.concatenate([xs, xs[::-1]]), np.concatenate([upper(xs), lower(xs)[::-1]]), (238, 236, 230))
        r = sp.eye_h * 0.95
        cv.polygon(*_clip_disc(ex, ey, r, ex, ew, upper, lower), sp.iris)
        cv.polygon(*_clip_disc(ex, ey, r * 0.45, ex, ew, upper, lower), (14, 12, 12))
        cv.line(xs, upper(xs), (30, 22, 20), 0.016)
        cv.line(xs, lower(xs), _crease(sp.skin, 0.4 + 0.5 * a7), 0.008 + 0.008 * a7)
        cv.line(xs[2:-2], upper(xs[2:-2]) - 0.03 - 0.02 * a5, _crease(sp.skin, 0.35), 0.007)
        if a6 > 0.02:  # crow's feet at the outer corner
            x0 = ex + sgn * (ew + 0.015)
            for dy in (-0.03, 0.0, 0.03):
                cv.line(np.array([x0, x0 + sgn * 0.05]), np.array([ey + dy * 0.3, ey + dy]), _crease(sp.skin, 0.8 * a6), 0.01)


def _draw_nose(cv: _Canvas, sp: SubjectParams, v: Callable[[int], float]) -> None:
    a9, a10 = v(9), v(10)
    nb, nw = sp.eye_y + sp.nose_len, sp.nose_w * (1 + 0.15 * a9)
    lift = 0.015 * a9 + 0.006 * a10
    for sgn in (-1, 1):
        cv.line(np.array([sgn * 0.035, sgn * nw * 0.85]), np.array([sp.eye_y + 0.03, nb - 0.035 - lift]), _crease(sp.skin, 0.3), 0.01)
        cv.line(*_arc(sgn * nw * 0.6, sgn * nw * 1.1, nb - lift - 0.035, nb - lift, 0.02), _crease(sp.skin, 0.5), 0.01)
        cv.ellipse(sgn * nw * 0.5, nb - lift, 0.022 * (1 + 0.3 * a9), 0.011, _crease(sp.skin, 0.95))
    if a9 > 0.02:  # wrinkles across the bridge
        for k in range(3):
            y = sp.eye_y + 0.05 + 0.028 * k
            cv.line(*_arc(-0.05, 0.05, y, y, 0.008), _crease(sp.skin, 0.9 * a9), 0.011)


@dataclass(frozen=True)
class _Mouth:
    width: float
    corner_y: float
    upper_top: float
    line_up: float
    lower_top: float
    lower_bot: float
    bow: float


def _mouth_shape(sp: SubjectParams, v: Callable[[int], float], jaw: float) -> _Mouth:
    a10, a12, a14, a15, a17, a23, a24, a25 = (v(a) for a in (10, 12, 14, 15, 17, 23, 24, 25))
    my = sp.mouth_y
    thin = max(0.25, 1 - 0.5 * a23 - 0.6 * a24)
    line_up = my - 0.02 * a10 - 0.012 * a17
    lower_top = my + 0.06 * a25 + jaw - 0.012 * a17
    return _Mouth(
        width=sp.mouth_w * max(0.5, 1 + 0.22 * a12 - 0.2 * a23 - 0.08 * a14 - 0.05 * a24),
        corner_y=my - 0.075 * a12 + 0.065 * a15 - 0.01 * a14 + 0.3 * jaw,
        upper_top=line_up - sp.lip_up * thin - 0.02 * a10,
        line_up=line_up,
        lower_top=lower_top,
        lower_bot=lower_top + sp.lip_lo * thin + 0.006 * a17,
        bow=sp.lip_up * thin * 0.35,
    )


def _draw_mouth(cv: _Canvas, sp: SubjectParams, v: Callable[[int], float], jaw: float) -> None:
    m = _mouth_shape(sp, v, jaw)
    t = np.linspace(-1, 1, 15)
    xs = m.width * t

    def curve(centre: float, power: float) -> np.ndarray:
        return centre + (m.corner_y - centre) * np.abs(t) ** power

    upper_top = curve(m.upper_top, 1.4) - m.bow * np.exp(-(((np.abs(t) - 0.3) / 0.18) ** 2))
    line_up, lower_top, lower_bot = curve(m.line_up, 2.0), curve(m.lower_top, 2.0), curve(m.lower_bot, 1.5)
    both = np.concatenate([xs, xs[::-1]])
    if m.lower_top - m.line_up > 0.004:
        cv.polygon(both, np.concatenate([line_up, lower_top[::-1]]), (62, 18, 24))
        cv.polygon(both, np.concatenate([line_up, np.minimum(line_up + 0.03, lower_top)[::-1]]), (236, 232, 220))
    cv.polygon(both, np.concatenate([upper_top, line_up[::-1]]), sp.lips)
    cv.polygon(both, np.concatenate([lower_top, lower_bot[::-1]]), mix(sp.lips, (255, 255, 255), 0.08))
    cv.line(xs, line_up, _crease(sp.lips, 0.5 + 0.5 * v(24)), 0.01 + 0.012 * v(24))
    _draw_mouth_folds(cv, sp, v, m)


def _draw_mouth_folds(cv: _Canvas, sp: SubjectParams, v: Callable[[int], float], m: _Mouth) -> None:
    a14, a15, a24 = v(14), v(15), v(24)
    nb = sp.eye_y + sp.nose_len
    fold = 0.15 + 0.6 * max(v(10), 0.7 * v(12), 0.5 * v(9), 0.3 * v(6))
    for sgn in (-1, 1):
        xs, ys = _arc(sgn * (sp.nose_w + 0.015), sgn * (m.width + 0.045), nb - 0.01, m.corner_y + 0.03, 0.0)
        cv.line(xs + sgn * 0.03 * np.sin(np.linspace(0, np.pi, len(xs))), ys, _crease(sp.skin, fold), 0.011)
        xc = sgn * m.width
        if a14 > 0.02:  # dimples just outside the corners
            cv.line(*_arc(xc + sgn * 0.03, xc + sgn * 0.03, m.corner_y - 0.035, m.corner_y + 0.035, 0.0),
                    _crease(sp.skin, 0.9 * a14), 0.016)
        if a15 > 0.02:
            cv.line(np.array([xc, xc + sgn * 0.025]), np.array([m.corner_y, m.corner_y + 0.08]), _crease(sp.skin, 0.8 * a15), 0.012)
    if a24 > 0.02:  # skin bulging above and below pressed lips
        cv.line(*_arc(-m.width * 0.6, m.width * 0.6, m.upper_top - 0.025, m.upper_top - 0.025, 0.01), _crease(sp.skin, 0.8 * a24), 0.01)
        cv.line(*_arc(-m.width * 0.6, m.width * 0.6, m.lower_bot + 0.025, m.lower_bot + 0.025, -0.01), _crease(sp.skin, 0.8 * a24), 0.01)


def _draw_chin(cv: _Canvas, sp: SubjectParams, v: Callable[[int], float], jaw: float) -> None:
    a17 = v(17)
    if a17 <= 0.02:
        return
    m = _mouth_shape(sp, v, jaw)
    chin_y = m.lower_bot + (sp.face_cy + sp.face_h + jaw - m.lower_bot) * 0.55
    cv.ellipse(0, chin_y, 0.1, 0.055, mix(sp.skin, (255, 255, 255), 0.25 * min(a17, 1.0)))
    cv.line(*_arc(-0.08, 0.08, chin_y - 0.045, chin_y - 0.045, 0.015), _crease(sp.skin, 0.85 * a17), 0.013)
    for sgn in (-1, 1):  # mentalis dimpling
        cv.ellipse(sgn * 0.035, chin_y + 0.01, 0.012, 0.009, _crease(sp.skin, 0.5 * a17))


def draw_face(subject: SubjectParams, intensities: dict[int, float], size: int, pose: Pose = Pose()) -> Image.Image:
    """The subject's face with the given AU intensities (AU number -> [0, 1]); no lighting or noise.
    What is drawn is the resting face plus the subject's gain times the intensity."""

    def visible(au: int) -> float:
        amount = subject.rest.get(au, 0.0) + subject.gain * intensities.get(au, 0.0)
        return float(np.clip(AU_AMPLITUDE * amount, 0.0, 1.4 * AU_AMPLITUDE))

    cv = _Canvas(size, pose, subject.background)
    jaw = 0.12 * visible(26)
    _draw_head(cv, subject, jaw)
    _draw_hair_cap(cv, subject)
    _draw_cheeks(cv, subject, visible)
    _draw_brows(cv, subject, visible)
    _draw_eyes(cv, subject, visible)
    _draw_nose(cv, subject, visible)
    _draw_chin(cv, subject, visible, jaw)
    _draw_mouth(cv, subject, visible, jaw)
    return cv.img.reduce(2)


def apply_lighting(img: Image.Image, light: Lighting, rng: np.random.Generator) -> Image.Image:
    arr = np.asarray(img, dtype=np.float32)
    ramp = 1.0 + light.gradient * np.linspace(-1, 1, arr.shape[1], dtype=np.float32)[None, :, None]
    arr = ((arr - 128.0) * light.contrast + 128.0 + light.brightness + np.asarray(light.cast, np.float32)) * ramp
    arr += rng.standard_normal(arr.shape, dtype=np.float32) * light.noise
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def sample_jitter(n_frames: int, rng: np.random.Generator) -> list[tuple[Pose, Lighting]]:
    """Head pose drifts smoothly (AR(1)) within a session; lighting has a session level plus flicker."""
    rot, shift, scale = rng.normal(0, 3), rng.normal(0, 0.03, 2), rng.normal(0, 0.03)
    bright, contrast = rng.uniform(-25, 25), rng.uniform(0.8, 1.15)
    cast, gradient = rng.normal(0, 8, 3), rng.uniform(-0.12, 0.12)
    out = []
    for _ in range(n_frames):
        rot = 0.85 * rot + rng.normal(0, 1.5)
        shift = 0.85 * shift + rng.normal(0, 0.012, 2)
        scale = 0.85 * scale + rng.normal(0, 0.012)
        pose = Pose(float(np.clip(rot, -8, 8)), float(np.clip(1 + scale, 0.92, 1.08)), tuple(np.clip(shift, -0.06, 0.06).tolist()))
        light = Lighting(bright + rng.normal(0, 3), contrast * rng.uniform(0.97, 1.03), tuple((cast + rng.normal(0, 1.5, 3)).tolist()),
                         gradient, rng.uniform(2, 7))
        out.append((pose, light))
    return out
