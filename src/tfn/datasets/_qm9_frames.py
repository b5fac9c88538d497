"""The frame of QM9's polarizability tensors, rebuilt from the geometry, and its verification.

QM9 gives each polarizability tensor in the quantum-chemistry program's standard orientation, not
in the frame of the coordinates it gives. That orientation is rebuilt here (``docs/qm9.md`` has the
investigation and the measured numbers):

1. origin at the centre of nuclear charge; axes = eigenvectors of the nuclear-charge-weighted
   second moment ``M = sum_a Z_a (r_a - c)(r_a - c)^T``, ordered by decreasing spread
   (``x`` the largest eigenvalue, ``z`` the smallest);
2. signs: ``y`` and ``z`` point where the charge-weighted third moment ``sum_a Z_a (e . (r_a - c))^3``
   is positive, and ``x = y cross z`` (a proper rotation). The sign of ``x`` from its own third
   moment matches an independent model at chance (49.7%); the cross product at 83.2%.
3. linear molecules: the molecular axis goes where the tensor is unique (QM9 puts it on ``z``).

The mapped tensor is ``frame.T @ T @ frame``. It is verified where the geometry allows:

* a plane normal, a mirror-plane normal or a two-fold axis of the molecule (each found along one
  of the principal axes) must be an eigenvector of the mapped tensor: the coupling of that axis to
  the other two (the norm of its off-diagonal entries) must stay below :data:`EIGENVECTOR_TOL`;
* two (nearly) equal spreads leave the axes between them undetermined: fine when the tensor is
  isotropic in that plane (symmetric tops), unreliable otherwise;
* when symmetry makes the tensor diagonal in the principal axes (two perpendicular symmetry
  elements, e.g. water, formaldehyde), the assignment of its three values to the axes cannot be
  checked from the geometry; QM9's program orients some of these molecules by their symmetry
  instead (water: the C2 axis on ``z``, the normal of the molecular plane on ``x``).

Each molecule gets a code (:data:`FRAME_CODES`); ``frame_ok`` is ``code == 0`` or a code in
:data:`OK_CODES`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# A symmetry element: every atom maps onto an atom of the same element within this distance (Angstrom).
SYMMETRY_TOL = 0.01
# An axis is an eigenvector of the tensor when its off-diagonal couplings are below this (bohr^3;
# QM9 prints the tensors with 3 decimals, so rounding alone gives up to ~0.001).
EIGENVECTOR_TOL = 0.05
# Two spreads closer than this fraction of the largest leave the axes between them undetermined.
DEGENERATE_REL_GAP = 1e-3
# A tensor block is isotropic when its anisotropy is below this (bohr^3).
ISOTROPIC_TOL = 0.05
# A molecule is linear when its second and third spreads are below this fraction of the first.
LINEAR_REL = 1e-6
# Third-moment skewness (dimensionless) below which an axis sign is not determined by geometry.
SIGN_SKEW_MIN = 0.1
# Off-diagonal entries below this (bohr^3) do not depend on the sign of an axis in a way that matters.
SIGN_IRRELEVANT_TOL = 0.05

FRAME_CODES = {
    0: "ok: principal axes of nuclear charge; verified by a symmetry element where there is one",
    1: "ok: linear molecule, axis placed on the tensor's unique axis",
    2: "ok: (nearly) equal spreads, and the tensor is isotropic between those axes",
    10: "unreliable: (nearly) equal spreads, and the tensor is not isotropic between those axes",
    11: "unreliable: a symmetry element (plane or mirror normal, two-fold axis) is not an "
    "eigenvector of the mapped tensor (the program oriented this molecule by its symmetry)",
    12: "ok, not verifiable by geometry: symmetry makes the tensor diagonal in the principal axes, "
    "so which value belongs to which axis cannot be checked; the Thole model does not object",
    13: "unreliable: linear molecule whose tensor is not uniaxial",
    14: "unknown: no tensor given",
    15: "unreliable: symmetry makes the tensor diagonal in the principal axes and an independent "
    "model (Thole) clearly assigns its values to other axes (water)",
}
OK_CODES = (0, 1, 2, 12)
# Code 12 becomes 15 when the Thole model's diagonal (normalised by the trace) is closer to
# another assignment of the tensor's diagonal by more than this.
THOLE_MARGIN = 0.1


def standard_frames(
    numbers: np.ndarray,
    positions: np.ndarray,
    atom_offset: np.ndarray,
    tensors: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Frames (rows = axes in position coordinates), ``frame_ok``, codes and ``signs_ok``.

    Args:
        numbers: ``[A]`` atomic numbers of all molecules, concatenated.
        positions: ``[A, 3]``.
        atom_offset: ``[M + 1]``: molecule ``m`` is atoms ``atom_offset[m]:atom_offset[m + 1]``.
        tensors: ``[M, 3, 3]`` the tensors in the standard frame (used for the checks and for the
            axis of linear molecules), or ``None`` (frames from the geometry only; code 14).

    Works on all molecules of one size at once (QM9 has 27 sizes), so 130,831 take a few seconds.
    """
    analysis = analyse(numbers, positions, atom_offset)
    frames = analysis["frame"]
    if tensors is None:
        none = np.zeros(len(frames), dtype=bool)
        return frames, none, np.full(len(frames), 14, dtype=np.uint8), none
    tensors = np.asarray(tensors, dtype=np.float64)
    frames, codes = _verify(analysis, tensors)
    symmetric = np.nonzero(codes == 12)[0]
    if len(symmetric):
        codes[
            symmetric[_model_objects(numbers, positions, atom_offset, symmetric, frames, tensors)]
        ] = 15
    return frames, np.isin(codes, OK_CODES), codes, sign_reliable(analysis, tensors)


def _model_objects(numbers, positions, atom_offset, rows, frames, tensors) -> np.ndarray:
    """For molecules ``rows``: does the Thole model clearly prefer another diagonal assignment?"""
    import itertools

    starts, ends = atom_offset[rows], atom_offset[rows + 1]
    index = np.concatenate([np.arange(a, b) for a, b in zip(starts, ends)])
    offsets = np.concatenate([[0], np.cumsum(ends - starts)])
    model = thole_polarizability(numbers[index], positions[index], offsets)
    model = np.einsum("mai,mij,mbj->mab", frames[rows], model, frames[rows])
    given = np.einsum("mii->mi", tensors[rows])
    given = given / given.sum(1, keepdims=True)
    expected = np.einsum("mii->mi", model)
    expected = expected / expected.sum(1, keepdims=True)
    distance = np.stack(
        [
            np.linalg.norm(given[:, list(p)] - expected, axis=1)
            for p in itertools.permutations(range(3))
        ],
        1,
    )
    return distance[:, 1:].min(1) < distance[:, 0] - THOLE_MARGIN


def analyse(numbers: np.ndarray, positions: np.ndarray, atom_offset: np.ndarray) -> dict[str, Any]:
    """Geometry of each molecule: the default frame, spreads, skewness and symmetry elements.

    Returns a dict of arrays over molecules: ``frame`` ``[M, 3, 3]`` (rows x, y, z), ``spread``
    ``[M, 3]`` (eigenvalues of the charge second moment, decreasing), ``skew`` ``[M, 3]`` (third
    moment along each axis over ``spread**1.5 / sqrt(total charge)``), ``mirror`` and ``twofold``
    ``[M, 3]`` (bool: a mirror plane normal to / a two-fold axis along each axis) and
    ``symmetry_deviation`` ``[M, 2, 3]`` (the largest atom mismatch for each, Angstrom).
    """
    numbers = np.asarray(numbers)
    positions = np.asarray(positions, dtype=np.float64)
    atom_offset = np.asarray(atom_offset, dtype=np.int64)
    m = len(atom_offset) - 1
    sizes = np.diff(atom_offset)
    out = {
        "frame": np.zeros((m, 3, 3)),
        "spread": np.zeros((m, 3)),
        "skew": np.zeros((m, 3)),
        "symmetry_deviation": np.full((m, 2, 3), np.inf),
    }
    for n in np.unique(sizes):
        all_rows = np.nonzero(sizes == n)[0]
        for start in range(0, len(all_rows), _CHUNK):
            rows = all_rows[start : start + _CHUNK]
            _analyse_group(numbers, positions, atom_offset[rows], int(n), rows, out)
    out["mirror"] = out["symmetry_deviation"][:, 0] < SYMMETRY_TOL
    out["twofold"] = out["symmetry_deviation"][:, 1] < SYMMETRY_TOL
    return out


_CHUNK = 2048  # molecules per batch: the [B, n, n] work arrays stay below ~50 MB


def _analyse_group(numbers, positions, starts, n, rows, out) -> None:
    index = starts[:, None] + np.arange(n)[None, :]
    charge = numbers[index].astype(np.float64)  # [B, n]
    pos = positions[index]  # [B, n, 3]
    total = charge.sum(1)
    centre = (charge[..., None] * pos).sum(1) / total[:, None]
    rel = pos - centre[:, None, :]
    second = np.einsum("bn,bni,bnj->bij", charge, rel, rel)
    spread, vectors = np.linalg.eigh(second)  # ascending
    spread = spread[:, ::-1]
    axes = vectors[:, :, ::-1].transpose(0, 2, 1).copy()  # rows = axes, decreasing spread
    coords = np.einsum("bni,bki->bnk", rel, axes)
    third = np.einsum("bn,bnk->bk", charge, coords**3)
    # y and z towards positive third moment; x completes a right-handed frame.
    for k in (1, 2):
        flip = third[:, k] < 0
        axes[flip, k] *= -1
        coords[flip, :, k] *= -1
        third[flip, k] *= -1
    axes[:, 0] = np.cross(axes[:, 1], axes[:, 2])
    coords[..., 0] = np.einsum("bni,bi->bn", rel, axes[:, 0])
    third[:, 0] = np.einsum("bn,bn->b", charge, coords[..., 0] ** 3)  # of the final x (a check)
    scale = np.maximum(spread, 1e-12) ** 1.5 / np.sqrt(total)[:, None]
    out["frame"][rows] = axes
    out["spread"][rows] = spread
    out["skew"][rows] = third / scale
    # Symmetry operations in the principal frame are sign changes of the coordinates, so the
    # squared distance between atom i's image and atom j is |c_i|^2 + |c_j|^2 - 2 sum_k s_k G_k.
    same = numbers[index][:, :, None] == numbers[index][:, None, :]
    penalty = np.where(same, 0.0, np.inf)
    squared = (coords**2).sum(-1)
    base = squared[:, :, None] + squared[:, None, :] + penalty
    gram = np.einsum("bik,bjk->kbij", coords, coords)
    for k in range(3):
        for kind, signs in ((0, _mirror_signs(k)), (1, _twofold_signs(k))):
            d2 = base - 2.0 * (signs[0] * gram[0] + signs[1] * gram[1] + signs[2] * gram[2])
            nearest = np.maximum(d2.min(2), 0.0)
            out["symmetry_deviation"][rows, kind, k] = np.sqrt(nearest.max(1))


def _mirror_signs(k: int) -> np.ndarray:
    signs = np.ones(3)
    signs[k] = -1
    return signs


def _twofold_signs(k: int) -> np.ndarray:
    signs = -np.ones(3)
    signs[k] = 1
    return signs


def _coupling(tensor: np.ndarray, k: int) -> np.ndarray:
    """Norm of the off-diagonal entries of row ``k``: zero iff axis ``k`` is an eigenvector."""
    others = [j for j in range(3) if j != k]
    return np.sqrt((tensor[:, k, others] ** 2).sum(-1))


def _verify(analysis: dict[str, Any], tensors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    frames = analysis["frame"].copy()
    spread = analysis["spread"]
    m = len(frames)
    codes = np.zeros(m, dtype=np.uint8)
    scale = np.maximum(spread[:, 0], 1e-300)

    # Linear molecules: the axis (largest spread) goes where the tensor is uniaxial.
    linear = (spread[:, 1] < LINEAR_REL * scale) & (spread[:, 2] < LINEAR_REL * scale)
    for row in np.nonzero(linear)[0]:
        frame, ok = _linear_frame(frames[row, 0], tensors[row])
        frames[row] = frame
        codes[row] = 1 if ok else 13
    rest = ~linear

    # Near-degenerate spreads.
    gap = np.stack([spread[:, 0] - spread[:, 1], spread[:, 1] - spread[:, 2]], 1) / scale[:, None]
    degenerate = (gap < DEGENERATE_REL_GAP) & rest[:, None]
    for pair, (i, j) in enumerate(((0, 1), (1, 2))):
        block_anisotropy = np.sqrt(
            0.25 * (tensors[:, i, i] - tensors[:, j, j]) ** 2 + tensors[:, i, j] ** 2
        )
        third_axis = 3 - i - j
        # Rotating inside the degenerate plane also mixes the couplings to the third axis.
        cross = np.sqrt(tensors[:, i, third_axis] ** 2 + tensors[:, j, third_axis] ** 2)
        fine = (block_anisotropy < ISOTROPIC_TOL) & (cross < ISOTROPIC_TOL)
        sel = degenerate[:, pair]
        codes[sel & fine & (codes == 0)] = 2
        codes[sel & ~fine] = 10
    any_degenerate = degenerate.any(1)

    # Symmetry elements along non-degenerate axes must be eigenvectors of the tensor.
    elements = analysis["mirror"] | analysis["twofold"]  # [M, 3]
    axis_degenerate = np.zeros((m, 3), dtype=bool)
    axis_degenerate[:, 0] = degenerate[:, 0]
    axis_degenerate[:, 1] = degenerate[:, 0] | degenerate[:, 1]
    axis_degenerate[:, 2] = degenerate[:, 1]
    checked = elements & ~axis_degenerate & rest[:, None]
    mismatch = np.zeros(m, dtype=bool)
    for k in range(3):
        mismatch |= checked[:, k] & (_coupling(tensors, k) > EIGENVECTOR_TOL)
    codes[mismatch & (codes < 10)] = 11

    # Two symmetry axes make the tensor diagonal: its assignment to the axes is not checkable.
    diagonal_by_symmetry = (checked.sum(1) >= 2) & ~any_degenerate & ~mismatch
    codes[diagonal_by_symmetry & (codes == 0)] = 12
    return frames, codes


def _linear_frame(axis: np.ndarray, tensor: np.ndarray) -> tuple[np.ndarray, bool]:
    diagonal = np.diag(tensor)
    off = np.abs(tensor - np.diag(diagonal)).max()
    # The unique diagonal entry is the one farthest from the other two.
    unique = int(np.argmax([abs(diagonal[k] - np.delete(diagonal, k).mean()) for k in range(3)]))
    others = np.delete(diagonal, unique)
    ok = off < ISOTROPIC_TOL and abs(others[0] - others[1]) < ISOTROPIC_TOL
    helper = np.eye(3)[np.argmin(np.abs(axis))]
    u = np.cross(axis, helper)
    u /= np.linalg.norm(u)
    v = np.cross(axis, u)
    # Rows (unique, unique+1, unique+2) = (axis, u, v) in cyclic order: a proper rotation.
    frame = np.zeros((3, 3))
    frame[unique] = axis
    frame[(unique + 1) % 3] = u
    frame[(unique + 2) % 3] = v
    return frame, bool(ok)


def sign_reliable(analysis: dict[str, Any], tensors: np.ndarray) -> np.ndarray:
    """Whether the signs of the axes are set by the geometry where they matter.

    The sign of ``y`` (which also flips ``x``) changes the entries ``xz`` and ``yz``; the sign of
    ``z`` changes ``xy`` and ``yz``. A sign is reliable when its axis has a clearly nonzero third
    moment (skewness above :data:`SIGN_SKEW_MIN`) or when the entries it changes are negligible.
    """
    skew = np.abs(analysis["skew"])
    y_matters = np.maximum(np.abs(tensors[:, 0, 2]), np.abs(tensors[:, 1, 2])) > SIGN_IRRELEVANT_TOL
    z_matters = np.maximum(np.abs(tensors[:, 0, 1]), np.abs(tensors[:, 1, 2])) > SIGN_IRRELEVANT_TOL
    y_ok = ~y_matters | (skew[:, 1] >= SIGN_SKEW_MIN)
    z_ok = ~z_matters | (skew[:, 2] >= SIGN_SKEW_MIN)
    return y_ok & z_ok


# --------------------------------------------------------------------------------------------
# An independent physical check: Thole's point-dipole model of molecular polarizability
# --------------------------------------------------------------------------------------------

# Atomic polarizabilities (Angstrom^3) and screening of Thole's linear model (Thole, Chem. Phys.
# 59, 341 (1981)); fluorine is not in that paper: 0.44 is an estimate, good enough for directions.
THOLE_ALPHA = {1: 0.514, 6: 1.405, 7: 1.105, 8: 0.862, 9: 0.44}
THOLE_A = 1.662
_BOHR = 0.52917721067  # Angstrom


def thole_polarizability(
    numbers: np.ndarray, positions: np.ndarray, atom_offset: np.ndarray
) -> np.ndarray:
    """Thole-model polarizability tensors ``[M, 3, 3]`` (bohr^3) in the frame of the positions.

    Interacting induced point dipoles with Thole's linear damping at short range. Not accurate
    enough to be a target (the isotropic part correlates at r ~ 0.9 with QM9's), but it knows the
    geometry and nothing of any frame convention: an independent check of the mapped tensors'
    orientation.
    """
    numbers = np.asarray(numbers)
    positions = np.asarray(positions, dtype=np.float64)
    atom_offset = np.asarray(atom_offset, dtype=np.int64)
    sizes = np.diff(atom_offset)
    out = np.zeros((len(sizes), 3, 3))
    lookup = np.zeros(max(THOLE_ALPHA) + 1)
    for z, a in THOLE_ALPHA.items():
        lookup[z] = a
    for n in np.unique(sizes):
        rows = np.nonzero(sizes == n)[0]
        index = atom_offset[rows][:, None] + np.arange(n)[None, :]
        alpha = lookup[numbers[index]]  # [B, n]
        if (alpha == 0).any():
            raise ValueError("thole_polarizability: elements other than H, C, N, O, F")
        pos = positions[index]
        d = pos[:, :, None, :] - pos[:, None, :, :]  # [B, n, n, 3]
        r = np.linalg.norm(d, axis=-1)
        eye_n = np.eye(n, dtype=bool)[None]
        r = np.where(eye_n, 1.0, r)
        s = THOLE_A * (alpha[:, :, None] * alpha[:, None, :]) ** (1 / 6)
        v = np.minimum(r / s, 1.0)
        inside = r < s
        f_e = np.where(inside, 4 * v**3 - 3 * v**4, 1.0)
        f_t = np.where(inside, v**4, 1.0)
        t = (
            f_e[..., None, None] * np.eye(3) / r[..., None, None] ** 3
            - 3 * f_t[..., None, None] * d[..., :, None] * d[..., None, :] / r[..., None, None] ** 5
        )
        t = np.where(eye_n[..., None, None], np.eye(3) / alpha[:, :, None, None, None], t)
        matrix = t.transpose(0, 1, 3, 2, 4).reshape(len(rows), 3 * n, 3 * n)
        relay = np.linalg.inv(matrix).reshape(len(rows), n, 3, n, 3)
        out[rows] = relay.sum((1, 3)) / _BOHR**3
    return out


# --------------------------------------------------------------------------------------------
# The report of ``python -m tfn.datasets.qm9 --check-frames``
# --------------------------------------------------------------------------------------------


def _eigen_coupling(tensor: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """``|T n - (n . T n) n|`` for unit vectors ``n`` ``[M, 3]``: zero iff n is an eigenvector."""
    tn = np.einsum("mij,mj->mi", tensor, axis)
    along = np.einsum("mi,mi->m", tn, axis)
    return np.linalg.norm(tn - along[:, None] * axis, axis=-1)


def _quantiles(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {}
    q = np.quantile(values, [0.5, 0.9, 0.99, 1.0])
    return {"median": float(q[0]), "p90": float(q[1]), "p99": float(q[2]), "max": float(q[3])}


def check_frames_report(table: Any) -> dict[str, Any]:
    """Frame statistics over a parsed table (see ``docs/qm9.md`` for what each number means)."""
    analysis = analyse(table.numbers, table.positions, table.atom_offset)
    raw = table.polarizability
    frame = table.frame
    mapped = np.einsum("mai,mab,mbj->mij", frame, raw, frame)
    codes = table.frame_code
    m = len(codes)
    report: dict[str, Any] = {
        "molecules": m,
        "frame_ok": int(table.frame_ok.sum()),
        "signs_ok": int(table.signs_ok.sum()),
        "signs_ok_among_frame_ok": int((table.signs_ok & table.frame_ok).sum()),
        "codes": {
            f"{code}: {FRAME_CODES[code]}": int((codes == code).sum())
            for code in sorted(FRAME_CODES)
            if (codes == code).any()
        },
        "tolerances": {
            "symmetry_tol_angstrom": SYMMETRY_TOL,
            "eigenvector_tol_bohr3": EIGENVECTOR_TOL,
            "degenerate_rel_gap": DEGENERATE_REL_GAP,
            "sign_skew_min": SIGN_SKEW_MIN,
        },
    }
    spectrum = np.abs(np.linalg.eigvalsh(mapped) - np.linalg.eigvalsh(raw)).max()
    report["spectrum_max_change_bohr3"] = float(spectrum)

    # Symmetry elements: after the mapping they must be eigenvectors. The same test on the raw
    # tensor read as if it were in the positions' frame shows what the mapping changes.
    deviation = analysis["symmetry_deviation"]
    default_axes = analysis["frame"]  # rows = principal axes in position coordinates
    spread = analysis["spread"]
    gap = np.minimum(spread[:, 0] - spread[:, 1], spread[:, 1] - spread[:, 2]) / np.maximum(
        spread[:, 0], 1e-300
    )
    nondegenerate = gap >= DEGENERATE_REL_GAP
    # A planar molecule: all atoms within SYMMETRY_TOL of the plane of the two largest spreads.
    planar = deviation[:, 0, 2] < SYMMETRY_TOL
    rel = _relative_coordinates(table, default_axes)
    planar &= rel <= SYMMETRY_TOL
    groups = {
        "planar (plane normal)": (planar & nondegenerate, 2, "mirror"),
    }
    for k, name in enumerate("xyz"):
        mirror_k = (deviation[:, 0, k] < SYMMETRY_TOL) & nondegenerate
        if k == 2:
            mirror_k &= ~planar
        groups[f"mirror plane normal to {name} (non-planar)"] = (mirror_k, k, "mirror")
        groups[f"two-fold axis along {name}"] = (
            (deviation[:, 1, k] < SYMMETRY_TOL) & nondegenerate,
            k,
            "twofold",
        )
    elements = {}
    for name, (selected, k, _kind) in groups.items():
        axis = default_axes[selected, k]
        coupling = _eigen_coupling(mapped[selected], axis)
        unmapped = _eigen_coupling(raw[selected], axis)
        elements[name] = {
            "molecules": int(selected.sum()),
            "eigenvector_after_mapping": int((coupling <= EIGENVECTOR_TOL).sum()),
            "eigenvector_without_mapping": int((unmapped <= EIGENVECTOR_TOL).sum()),
            "coupling_after_mapping_bohr3": _quantiles(coupling),
            "frame_ok": int(table.frame_ok[selected].sum()),
        }
    report["symmetry_elements"] = elements

    # Independent model: Thole's point dipoles in the positions' frame, compared with the mapped
    # tensors on the off-diagonal entries of the frame that the axis signs decide.
    model = thole_polarizability(table.numbers, table.positions, table.atom_offset)
    model_in_frame = np.einsum("mai,mij,mbj->mab", frame, model, frame)
    report["thole_model_check"] = _thole_agreement(raw, model_in_frame, table)
    # The sign of x: ours (x = y cross z) against x along its own positive third moment.
    general = table.frame_ok & (codes == 0)
    sign_x = np.where(analysis["skew"][:, 0] >= 0, 1.0, -1.0)
    rules = {}
    for rule, flip in (("x = y cross z", np.ones(m)), ("x by its own third moment", sign_x)):
        agree = total = 0
        for i, j in ((0, 1), (0, 2)):  # the entries the sign of x changes
            p = raw[general, i, j]
            t = model_in_frame[general, i, j] * flip[general]
            both = (np.abs(p) > 1.0) & (np.abs(t) > 1.0)
            agree += int((np.sign(p[both]) == np.sign(t[both])).sum())
            total += int(both.sum())
        rules[rule] = {"entries_compared": total, "same_sign_as_model": agree}
    report["thole_model_check"]["sign_of_x"] = rules
    return report


def _relative_coordinates(table: Any, axes: np.ndarray) -> np.ndarray:
    """Largest distance of an atom from the plane of the two largest spreads, per molecule."""
    charge = table.numbers.astype(np.float64)
    offsets = table.atom_offset
    molecule = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    total = np.bincount(molecule, charge)
    centre = (
        np.stack([np.bincount(molecule, charge * table.positions[:, i]) for i in range(3)], 1)
        / total[:, None]
    )
    height = np.abs(np.einsum("ai,ai->a", table.positions - centre[molecule], axes[molecule, 2]))
    return np.maximum.reduceat(height, offsets[:-1])


def _thole_agreement(raw: np.ndarray, model: np.ndarray, table: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    significant = 1.0  # bohr^3, in both tensors
    for label, selected in (
        ("signs_ok", table.frame_ok & table.signs_ok),
        ("not signs_ok", table.frame_ok & ~table.signs_ok),
    ):
        agree = total = 0
        for i, j in ((0, 1), (0, 2), (1, 2)):
            p, t = raw[selected, i, j], model[selected, i, j]
            both = (np.abs(p) > significant) & (np.abs(t) > significant)
            agree += int((np.sign(p[both]) == np.sign(t[both])).sum())
            total += int(both.sum())
        out[label] = {
            "entries_compared": total,
            "same_sign": agree,
            "fraction": round(agree / total, 4) if total else None,
        }
    # Axis assignment: is the mapped diagonal closer to the model's than any other permutation?
    import itertools

    ok = table.frame_ok
    diag_raw = np.einsum("mii->mi", raw[ok]) / np.einsum("mii->m", raw[ok])[:, None]
    diag_model = np.einsum("mii->mi", model[ok]) / np.einsum("mii->m", model[ok])[:, None]
    distances = np.stack(
        [
            np.linalg.norm(diag_raw[:, list(p)] - diag_model, axis=1)
            for p in itertools.permutations(range(3))
        ],
        1,
    )
    out["axis_assignment_closest_to_model"] = int((distances.argmin(1) == 0).sum())
    out["axis_assignment_molecules"] = int(ok.sum())
    out["significant_bohr3"] = significant
    return out
