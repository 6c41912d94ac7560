"""The rig: motion vector -> deformed vertices of THIS avatar's face/head mesh.

Vertices are the 478 landmarks, then ring H, then ring O (see engine.avatar). Lengths are
measured in inter-ocular distances (IOD) so that one set of constants fits every face size.

* Blendshape-like channels are linear displacement bases built once per avatar from the
  landmark layout: each channel moves a few handle landmarks and a smooth Gaussian falloff carries
  the motion to the skin around them, restricted to the right side of the mouth (upper lip vs jaw).
* jawOpen rotates the jaw about a pivot at ear depth: a vertex drops by angle x (its depth in front of
  the pivot), so the chin and lower lip drop, and the cheeks follow less and less towards the ears.
* eyeBlink compresses the eye between the lids (upper lid travels ``blink_meet`` of the gap) and
  stretches the lid skin above it; gaze shifts the iris inside the eye.
* mouthClose closes whatever gap the inner lips have at that moment (bilinear, computed per frame).
* The head pose rotates the deformed 3D points (landmark depth) about a pivot behind the ears;
  ring H follows rigidly, ring O never moves. In between, intermediate rings carry the head motion
  with an eased fade (hair edges and neck follow partly), reaching exactly 0 a few pixels inside
  ring O. The depth relief is flattened where it is too steep, so yaw / pitch never fold the mesh.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import landmarks as L
from . import motion as M
from .avatar import Avatar
from .exceptions import ConfigError


@dataclass(frozen=True)
class RigSettings:
    """Amplitudes of the rig, in inter-ocular distances (IOD) unless named otherwise."""

    jaw_drop_iod: float = 0.30          # lower-lip centre drop at jawOpen = 1
    lip_falloff_iod: float = 0.26       # reach of lip motion into the skin around
    corner_move_iod: float = 0.12       # mouth-corner travel for smile / stretch
    pucker_move_iod: float = 0.14       # mouth-corner travel inwards for pucker
    lip_move_iod: float = 0.10          # upper-lip raise / lower-lip drop
    brow_raise_iod: float = 0.10
    blink_meet: float = 0.8             # fraction of the lid gap the upper lid travels on a blink
    lip_meet: float = 0.45              # fraction of the lip gap the upper lip travels on mouthClose
    gaze_iod_per_deg: float = 0.0045    # iris shift per degree of gaze
    pivot_behind_ears_iod: float = 0.25  # head-rotation pivot depth behind the ear landmarks
    # head pose: the band between ring H (rigid) and ring O (fixed)
    band_rings: int = 4                 # intermediate rings carrying the fading head motion
    band_ease: float = 0.5              # 0: linear fade across the band, 1: smoothstep (no kink at the rings)
    still_margin_px: float = 8.0        # motion is exactly 0 this far inside ring O (> warp grid step + 2)
    fold_free_tilt_deg: float = 24.0    # face depth is flattened so that yaw/pitch tilts up to this never fold
    min_area_ratio: float = 0.15        # beyond that tilt, depth is scaled so no face triangle shrinks below this

    def __post_init__(self) -> None:
        ranges = {"band_rings": (1, 12), "band_ease": (0.0, 1.0), "still_margin_px": (0.0, 32.0),
                  "fold_free_tilt_deg": (5.0, 60.0), "min_area_ratio": (0.0, 0.8)}
        for k, v in self.__dict__.items():
            lo, hi = ranges.get(k, (0.0, 2.0))
            if not (lo <= v <= hi):
                raise ConfigError(f"RigSettings.{k} must be within {lo}..{hi}, got {v}")
        if not isinstance(self.band_rings, int):
            raise ConfigError(f"RigSettings.band_rings must be an integer, got {self.band_rings!r}")


def _smooth(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _fall(x: np.ndarray) -> np.ndarray:
    """1 at 0, smoothly 0 at >= 1."""
    return 1.0 - _smooth(x)


def _gauss(pts: np.ndarray, handles: np.ndarray, sigma: float) -> np.ndarray:
    d2 = ((pts[:, None, :] - handles[None, :, :]) ** 2).sum(-1)
    w = np.exp(-d2.min(1) / (2 * sigma * sigma))
    return np.maximum(w - 0.01, 0.0) / 0.99   # exactly 0 beyond ~3 sigma: far skin stays still


def _between(lx: np.ndarray, ly: np.ndarray, up: np.ndarray, lo: np.ndarray,
             meet: float, reach_up: float, reach_lo: float) -> np.ndarray:
    """Per-vertex weight phi of a 'close the gap' deformation (displacement = gap(x) * phi).

    up, lo: (K, 2) curves (local x, y) of the upper and lower edge, ordered by x.
    Between the edges the region is compressed affinely towards the meeting line; above and below,
    the skin follows with a smooth falloff over reach_up / reach_lo.
    """
    oa, ob = np.argsort(up[:, 0]), np.argsort(lo[:, 0])
    yu = np.interp(lx, up[oa, 0], up[oa, 1])
    yl = np.interp(lx, lo[ob, 0], lo[ob, 1])
    gap = np.maximum(yl - yu, 1e-6)
    t = (ly - yu) / gap
    phi = np.where(ly < yu, meet * _fall((yu - ly) / reach_up),
                   np.where(ly > yl, -(1 - meet) * _fall((ly - yl) / reach_lo), meet - np.clip(t, 0, 1)))
    return phi.astype(np.float32)


class Rig:
    """Motion -> vertices of one avatar. ``rig(motion)`` -> (N, 2) float32 pixels (N = 478 + 2 R)."""

    def __init__(self, avatar: Avatar, settings: RigSettings = RigSettings()) -> None:
        self.avatar, self.s = avatar, settings
        band, self.band_weight, still = self._band_rings(avatar)
        self.vertices = np.vstack([avatar.points, avatar.ring_head, band, still, avatar.ring_outer]).astype(np.float32)
        self.n_face = len(avatar.points)
        self.n_rigid = self.n_face + len(avatar.ring_head)  # vertices that follow the head pose rigidly
        self.n_head = self.n_rigid + len(band)              # vertices that move at all; the rest never move
        self.active = np.ones(len(self.vertices), bool)   # vertices of the warp mesh
        self.active[list(L.IRIS_R[1:] + L.IRIS_L[1:])] = False  # iris rings reach under the lids
        self.u = avatar.iod_px
        e_r, e_l = avatar.eye_centers
        ex = (e_l - e_r) / np.linalg.norm(e_l - e_r)
        self.ex, self.ey = ex.astype(np.float32), np.array([-ex[1], ex[0]], np.float32)
        self._build_mouth_frame()
        self.bases = np.zeros((M.NUM_CHANNELS, len(self.vertices), 2), np.float32)
        self._build_jaw()
        self._build_lips()
        self._build_eyes()
        self._build_brows()
        self._build_closure()
        self._build_head()

    def _band_rings(self, avatar: Avatar) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The band between ring H and ring O: (K R, 3) intermediate ring points, their (K R,) float32
        fade weights (1 = moves with the head, 0 = still) and the (R, 3) 'still' ring.

        Ring k sits at t_k = k / (K + 1) of the way from H to the still ring, which is ring O moved
        ``still_margin_px`` inwards along its normal: between it and ring O nothing moves, so the warp's
        coarse grid cannot leak motion past ring O. The fade 1 - ((1 - e) t + e smoothstep(t)) has no kink at the
        rings for e = 1 and the smallest stretch for e = 0 (e = band_ease)."""
        h, o = avatar.ring_head.astype(np.float64), avatar.ring_outer.astype(np.float64)
        tangent = np.roll(o[:, :2], -1, 0) - np.roll(o[:, :2], 1, 0)
        normal = np.stack([-tangent[:, 1], tangent[:, 0]], 1) / np.maximum(np.linalg.norm(tangent, axis=1), 1e-6)[:, None]
        normal *= np.sign(((o[:, :2].mean(0) - o[:, :2]) * normal).sum(1))[:, None]   # inwards
        still = o[:, :2] + self.s.still_margin_px * normal
        span = o[:, :2] - h[:, :2]
        t_still = ((still - h[:, :2]) * span).sum(1) / np.maximum((span * span).sum(1), 1e-6)
        thin = t_still < 0.5                                  # band thinner than ~2 margins: halfway
        still[thin] = h[thin, :2] + 0.5 * span[thin]
        K, e = self.s.band_rings, self.s.band_ease
        ts = np.arange(1, K + 1) / (K + 1)
        band = np.vstack([np.column_stack([h[:, :2] + t * (still - h[:, :2]), h[:, 2]]) for t in ts])
        still = np.column_stack([still, h[:, 2]])
        fade = 1.0 - ((1.0 - e) * ts + e * _smooth(ts))
        return band.astype(np.float32), np.repeat(fade, len(h)).astype(np.float32), still.astype(np.float32)

    # ------------------------------------------------------------ frames and helpers
    def _local(self, origin: np.ndarray, pts: np.ndarray | None = None) -> np.ndarray:
        """Vertices (or pts) in a local frame at origin: (N, 2) in IOD, x along the eyes, y down."""
        p = (self.vertices[:, :2] if pts is None else pts) - origin
        return np.stack([p @ self.ex, p @ self.ey], 1) / self.u

    def _vec(self, lx: np.ndarray, ly: np.ndarray) -> np.ndarray:
        """Local (IOD) vectors -> image pixel vectors, (N, 2)."""
        return (np.outer(lx, self.ex) + np.outer(ly, self.ey)) * self.u

    def _build_mouth_frame(self) -> None:
        p = self.avatar.points[:, :2]
        self.mouth_c = (p[L.LIPS_INNER_UPPER[0]] + p[L.LIPS_INNER_UPPER[-1]]) / 2
        self.ml = self._local(self.mouth_c)                    # (N, 2) local coords
        self.mouth_hw = float(abs(self.ml[L.LIPS_INNER_UPPER[-1], 0] - self.ml[L.LIPS_INNER_UPPER[0], 0]) / 2)
        inner_mid = (self.ml[list(L.LIPS_INNER_UPPER)] + self.ml[list(L.LIPS_INNER_LOWER)]) / 2
        o = np.argsort(inner_mid[:, 0])
        self.mouth_mid = inner_mid[o]
        lx = self.ml[:, 0]
        self.side_left = _smooth(lx / (self.mouth_hw * 1.2) * 0.5 + 0.5)  # subject's left = image right
        if self.ex[0] < 0:  # mirrored or upside-down face: keep "left" = subject's left
            self.side_left = 1 - self.side_left
        self.upper_lips = list(set(L.LIPS_INNER_UPPER[1:-1] + L.LIPS_OUTER_UPPER[1:-1]))
        self.lower_lips = list(set(L.LIPS_INNER_LOWER[1:-1] + L.LIPS_OUTER_LOWER[1:-1]))
        self.corners = [L.LIPS_INNER_UPPER[0], L.LIPS_INNER_UPPER[-1], L.LIPS_OUTER_UPPER[0], L.LIPS_OUTER_UPPER[-1]]

    def _jaw_weight(self) -> np.ndarray:
        """1 on the jaw (lower lip, chin), 0 on the skull (upper lip and above), smooth on the cheeks."""
        lx, ly = self.ml[:, 0], self.ml[:, 1]
        alx = np.abs(lx)
        line = np.interp(lx, self.mouth_mid[:, 0], self.mouth_mid[:, 1])
        outside = np.maximum(alx - self.mouth_hw, 0)
        line = line - 0.45 * outside                   # the split rises from the corners to the ears
        width = 0.06 + 0.6 * np.maximum(alx - 0.75 * self.mouth_hw, 0)
        w = _smooth((ly - line) / width * 0.5 + 0.5)
        w[list(L.LIPS_INNER_UPPER[2:-2] + L.LIPS_OUTER_UPPER[2:-2])] = 0.0   # the corners stay geometric
        w[list(L.LIPS_INNER_LOWER[2:-2] + L.LIPS_OUTER_LOWER[2:-2])] = 1.0
        w[self.n_face:] = 0.0
        return w.astype(np.float32)

    # ------------------------------------------------------------ channel bases
    def _build_jaw(self) -> None:
        pts = self.vertices
        self.jaw_w = self._jaw_weight()
        z_pivot = float((pts[L.EAR_L, 2] + pts[L.EAR_R, 2]) / 2)
        lip_c = L.LIPS_INNER_LOWER[5]
        depth = np.maximum(z_pivot - pts[:, 2], 0)      # in front of the pivot, pixels
        theta = self.s.jaw_drop_iod * self.u / max(float(depth[lip_c]), 1e-3)
        drop = self.jaw_w * depth * theta               # pixels, along the face's down axis
        self.bases[M.INDEX["jawOpen"]] = np.outer(drop, self.ey)

    def _lip_basis(self, handles: list[int], move_local: tuple[float, float], side: np.ndarray,
                   lip_mask: np.ndarray, sigma: float | None = None) -> np.ndarray:
        sig = sigma or self.s.lip_falloff_iod
        w = _gauss(self.ml, self.ml[handles], sig) * side * lip_mask
        w[self.n_face:] = 0
        return self._vec(w * move_local[0], w * move_local[1])

    def _build_lips(self) -> None:
        s, B, I = self.s, self.bases, M.INDEX
        upper_side = np.clip(1 - self.jaw_w, 0, 1)
        lower_side = np.clip(self.jaw_w, 0, 1)
        both = np.ones_like(self.jaw_w)
        lc = [i for i in self.corners if self.ml[i, 0] > 0]   # image-right corners
        rc = [i for i in self.corners if self.ml[i, 0] < 0]
        if self.ex[0] < 0:
            lc, rc = rc, lc
        sl, sr = self.side_left, 1 - self.side_left
        ones = np.ones_like(sl)
        for name, corners, sgn in (("Left", lc, 1.0), ("Right", rc, -1.0)):
            B[I["mouthSmile" + name]] = self._lip_basis(corners, (sgn * s.corner_move_iod, -0.7 * s.corner_move_iod), ones, both, 0.3)
            B[I["mouthStretch" + name]] = self._lip_basis(corners, (sgn * s.corner_move_iod, 0.35 * s.corner_move_iod), ones, both, 0.28)
        up_h = list(L.LIPS_INNER_UPPER[2:-2] + L.LIPS_OUTER_UPPER[2:-2])
        lo_h = list(L.LIPS_INNER_LOWER[2:-2] + L.LIPS_OUTER_LOWER[2:-2])
        B[I["mouthUpperUpLeft"]] = self._lip_basis(up_h, (0, -0.8 * s.lip_move_iod), sl, upper_side, 0.24)
        B[I["mouthUpperUpRight"]] = self._lip_basis(up_h, (0, -0.8 * s.lip_move_iod), sr, upper_side, 0.24)
        B[I["mouthLowerDownLeft"]] = self._lip_basis(lo_h, (0, s.lip_move_iod * 1.3), sl, lower_side, 0.18)
        B[I["mouthLowerDownRight"]] = self._lip_basis(lo_h, (0, s.lip_move_iod * 1.3), sr, lower_side, 0.18)
        lo_outer = list(L.LIPS_OUTER_LOWER[2:-2])            # the lower lip rolls in: it gets thinner
        B[I["mouthRollLower"]] = self._lip_basis(lo_outer, (0, -0.45 * s.lip_move_iod), ones, lower_side, 0.16)
        # rounding: corners inwards (towards the mouth centre); funnel also flares the lips open
        inward = -np.sign(self.ml[:, 0])
        for name, amp, flare in (("mouthPucker", s.pucker_move_iod, 0.0), ("mouthFunnel", 0.7 * s.pucker_move_iod, 0.06)):
            w = _gauss(self.ml, self.ml[self.corners], 0.3) * np.clip(np.abs(self.ml[:, 0]) / self.mouth_hw, 0, 1)
            w[self.n_face:] = 0
            d = self._vec(inward * w * amp, np.zeros_like(w))
            if flare:
                d += self._lip_basis(up_h, (0, -flare), ones, upper_side, 0.22)
                d += self._lip_basis(lo_h, (0, flare * 1.2), ones, lower_side, 0.22)
            B[I[name]] = d

    def _eye_local(self, upper: tuple[int, ...], lower: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c = self.avatar.points[list(upper + lower), :2].mean(0)
        loc = self._local(c)
        return c, loc[list(upper)], loc[list(lower)]

    def _build_eyes(self) -> None:
        B, I = self.bases, M.INDEX
        eyes = {"Right": (L.EYE_R_UPPER, L.EYE_R_LOWER, L.IRIS_R), "Left": (L.EYE_L_UPPER, L.EYE_L_LOWER, L.IRIS_L)}
        if self.ex[0] < 0:
            eyes = {"Right": eyes["Left"], "Left": eyes["Right"]}
        gy, gp = np.zeros((len(self.vertices), 2), np.float32), np.zeros((len(self.vertices), 2), np.float32)
        for name, (up, lo, iris) in eyes.items():
            c, up_l, lo_l = self._eye_local(up, lo)
            loc = self._local(c)
            phi = _between(loc[:, 0], loc[:, 1], up_l, lo_l, self.s.blink_meet, 0.24, 0.12)
            gap = np.interp(loc[:, 0], np.sort(up_l[:, 0]), (lo_l - up_l)[np.argsort(up_l[:, 0]), 1])
            near = np.abs(loc[:, 1]) < 0.6
            w = np.where(near, gap * phi, 0).astype(np.float32)
            w[self.n_face:] = 0
            B[I["eyeBlink" + name]] = np.outer(w, self.ey) * self.u
            gy[list(iris)] += self.ex * self.u * self.s.gaze_iod_per_deg
            gp[list(iris)] += self.ey * self.u * self.s.gaze_iod_per_deg * 0.6
        B[I["gazeYaw_deg"]] = gy
        B[I["gazePitch_deg"]] = gp

    def _build_brows(self) -> None:
        B, I, s = self.bases, M.INDEX, self.s
        brows = {"Right": (L.BROW_R, L.EYE_R_UPPER), "Left": (L.BROW_L, L.EYE_L_UPPER)}
        if self.ex[0] < 0:
            brows = {"Right": brows["Left"], "Left": brows["Right"]}
        face_c = sum(self.avatar.eye_centers) / 2
        inner_all = np.zeros((len(self.vertices), 2), np.float32)
        for name, (brow, lid) in brows.items():
            loc = self._local(face_c)
            order = sorted(brow, key=lambda i: abs(loc[i, 0]))
            inner, outer = order[:4], order[-4:]
            lid_y = np.interp(loc[:, 0], *zip(*sorted((loc[i, 0], loc[i, 1]) for i in lid)))
            above = _smooth((lid_y - loc[:, 1]) / 0.22)        # 0 at the lid, 1 from 0.22 IOD above
            above[self.n_face:] = 0
            def basis(handles, dx, dy, sig=0.28):
                w = _gauss(loc, loc[handles], sig) * above
                return self._vec(w * dx, w * dy)
            B[I["browOuterUp" + name]] = basis(outer, 0, -s.brow_raise_iod)
            B[I["browDown" + name]] = basis(list(brow), 0.25 * s.brow_raise_iod * (-1 if loc[brow[0], 0] > 0 else 1), 0.8 * s.brow_raise_iod)
            inner_all += basis(inner, 0, -s.brow_raise_iod, 0.24)
        B[I["browInnerUp"]] = inner_all

    def _build_closure(self) -> None:
        up = self.ml[list(L.LIPS_INNER_UPPER)]
        lo = self.ml[list(L.LIPS_INNER_LOWER)]
        phi = _between(self.ml[:, 0], self.ml[:, 1], up, lo, self.s.lip_meet, 0.3, 0.3)
        phi[np.abs(self.ml[:, 0]) > self.mouth_hw * 1.6] = 0
        phi[self.n_face:] = 0
        self.close_phi = phi
        self.close_x = self.ml[:, 0].astype(np.float32)
        self.pairs = (np.array(L.LIPS_INNER_UPPER[1:-1]), np.array(L.LIPS_INNER_LOWER[1:-1]))

    def _build_head(self) -> None:
        p = self.vertices
        ears = (p[L.EAR_L] + p[L.EAR_R]) / 2
        self.pivot = np.array([ears[0], ears[1], ears[2] + self.s.pivot_behind_ears_iod * self.u], np.float32)
        self.face_width = self.avatar.face_width_px
        self.z_ring = float(self.avatar.ring_head[:, 2].mean())      # depth of every ring point, pixels
        self.depth, self.depth_slope = self._limited_depth(1.0 / np.tan(np.deg2rad(self.s.fold_free_tilt_deg)))

    def _face_triangles(self) -> np.ndarray:
        """(T, 3) vertex indices of the warp mesh's triangles that touch the face (Delaunay, as MeshWarp)."""
        from emote.kernels.warp import triangulate

        tri = np.nonzero(self.active)[0][triangulate(self.vertices[self.active, :2]).simplices]
        return tri[(tri < self.n_face).any(1)]

    def _limited_depth(self, max_slope: float, iterations: int = 400) -> tuple[np.ndarray, float]:
        """Landmark depth with the depth slope |grad z| of every mesh triangle limited to max_slope.

        Returns ((N,) float32 depth in pixels, the largest slope left, unitless).
        Rotating a triangle of slope g by a tilt theta (yaw and pitch together) folds it once
        g sin(theta) > cos(theta): near the silhouette MediaPipe's depth rises steeply (points that
        would hide behind the cheek). Each triangle over the limit is flattened by the least change of its
        face vertices (rings keep their depth), the changes averaged per vertex, until none is over.
        Triangles under 0.25 px^2 (closed lips) are ignored."""
        v = self.vertices.astype(np.float64)
        tri = self._face_triangles()
        E = np.stack([v[tri[:, 1], :2] - v[tri[:, 0], :2], v[tri[:, 2], :2] - v[tri[:, 0], :2]], 1)  # (T, 2, 2)
        ok = np.abs(np.linalg.det(E)) > 0.5
        tri, E = tri[ok], E[ok]
        G = np.linalg.inv(E) @ np.array([[-1.0, 1.0, 0.0], [-1.0, 0.0, 1.0]])   # (T, 2, 3): grad z = G z_tri
        Gp = np.linalg.pinv(G * (tri < self.n_face)[:, None, :])               # (T, 3, 2): changes face vertices only
        z = v[:, 2].copy()
        for _ in range(iterations):
            g = np.einsum("tij,tj->ti", G, z[tri])
            n = np.linalg.norm(g, axis=1)
            bad = n > max_slope
            if not bad.any():
                break
            delta = np.einsum("tij,tj->ti", Gp[bad], g[bad] * (0.97 * max_slope / n[bad, None] - 1.0))
            corr, cnt = np.zeros_like(z), np.zeros_like(z)
            np.add.at(corr, tri[bad], delta)
            np.add.at(cnt, tri[bad], 1.0)
            z += corr / np.maximum(cnt, 1.0)
        slope = float(np.linalg.norm(np.einsum("tij,tj->ti", G, z[tri]), axis=1).max())
        return z.astype(np.float32), slope

    def depth_scale(self, rot: np.ndarray) -> float:
        """Factor (0..1] on the face's depth relief for head rotation rot (3x3) so that no face triangle
        folds: the projected area ratio of a triangle of slope g is >= cos(theta) - g sin(theta)."""
        r2 = np.asarray(rot, np.float64)[2]
        norm = float(np.linalg.norm(r2))
        cos_t, sin_t = r2[2] / norm, float(np.hypot(r2[0], r2[1])) / norm
        room = cos_t - self.s.min_area_ratio
        if sin_t * self.depth_slope <= room:
            return 1.0
        return float(np.clip(room / (sin_t * self.depth_slope), 0.0, 1.0))

    # ------------------------------------------------------------ per frame
    def _close_lips(self, d: np.ndarray, amount: float) -> np.ndarray:
        """Close the inner-lip gap (as it is after the linear channels) by `amount` (0..1)."""
        up, lo = self.pairs
        pos = self.vertices[:, :2] + d
        gap = pos[lo] - pos[up]                                  # (K, 2) pixels
        x = self.ml[up, 0]
        g = gap * amount
        o = np.argsort(x)
        xs = np.concatenate([[x[o][0] - 0.15], x[o], [x[o][-1] + 0.15]])
        gxv = np.interp(self.close_x, xs, np.concatenate([[0], g[o, 0], [0]]))
        gyv = np.interp(self.close_x, xs, np.concatenate([[0], g[o, 1], [0]]))
        return d + (np.stack([gxv, gyv], 1) * self.close_phi[:, None]).astype(np.float32)

    def head_transform(self, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(3x3 rotation, 3-vector translation in pixels) of the head for motion row m."""
        I = M.INDEX
        y, p, r = np.deg2rad([m[I["headYaw_deg"]], m[I["headPitch_deg"]], m[I["headRoll_deg"]]])
        cy, sy, cp, sp, cr, sr = np.cos(y), np.sin(y), np.cos(p), np.sin(p), np.cos(r), np.sin(r)
        ry = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])
        rp = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
        rr = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
        rot = (rr @ rp @ ry) * (1.0 + float(m[I["headScale"]]))
        t = np.array([m[I["headTx"]], m[I["headTy"]], 0.0]) * self.face_width
        return rot.astype(np.float32), t.astype(np.float32)

    def displacement(self, motion: np.ndarray) -> np.ndarray:
        """motion: (C,) float32 (engine.motion channels) -> (N, 2) float32 pixel displacement.

        Face and ring H: the deformed 3D points rotated about the pivot (depth relief scaled by
        depth_scale); band rings: the same rigid motion of their own position, times their fade weight;
        the still ring and ring O: 0."""
        m = np.asarray(motion, np.float32)
        d = np.tensordot(m, self.bases, axes=(0, 0))
        d = self._close_lips(d, float(np.clip(m[M.INDEX["mouthClose"]], 0, 1)))
        rot, t = self.head_transform(m)
        rot_i = rot - np.eye(3, dtype=np.float32)                 # exactly 0 at rest pose
        h, b = self.n_rigid, self.n_head
        z = self.depth[:h]
        k = self.depth_scale(rot)
        if k < 1.0:
            z = self.z_ring + np.float32(k) * (z - self.z_ring)
        p3 = np.column_stack([self.vertices[:h, :2] + d[:h], z])
        d[:h] += ((p3 - self.pivot) @ rot_i.T + t)[:, :2]
        d[h:b] = ((self.vertices[h:b] - self.pivot) @ rot_i.T + t)[:, :2] * self.band_weight[:, None]
        d[b:] = 0.0
        return d

    def __call__(self, motion: np.ndarray) -> np.ndarray:
        """motion (C,) -> deformed vertex positions (N, 2) float32, pixels."""
        return self.vertices[:, :2] + self.displacement(motion)
