"""Emission factors as versioned data, each with its value, unit, region, year, scope and source.

The packaged library (``data/factors.yaml``) holds only published figures (MEE/NBS grid factors,
the MEE/NBS/NEA electricity carbon-footprint factors, IPCC 2006 fuel defaults). A user extends or
overrides it with files of the same shape; every factor that comes from a user file is ``custom``
and every report lists it as such, so a figure never silently rests on an unpublished number.

Lookups never guess silently: ``FactorLibrary.select`` walks an explicit fallback order (the
requested year, then earlier years; within a year the most specific region first) and returns the
steps it took, which the reports print next to the factor.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from spinline.carbon.wording import say
from spinline.core.errors import SpinlineError

KINDS = ("grid_location", "grid_residual", "grid_fossil", "electricity_lca", "fuel", "heat", "fibre", "custom")


class FactorError(SpinlineError):
    """A factor file is invalid or a factor the accounting needs is missing."""


class Source(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    document: str
    table: str = ""
    url: str = ""


class Gwp(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    set: str = "AR6"
    values: dict[str, float] = Field(default_factory=lambda: {"CO2": 1.0, "CH4": 29.8, "N2O": 273.0})
    source: Source | None = None


class Factor(BaseModel):
    """One emission factor. ``value`` is per unit of activity in ``unit`` (e.g. kgCO2/kWh)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    kind: str
    region: str
    year: int = Field(ge=1990, le=2100)
    value: float = Field(default=float("nan"))
    unit: str
    scope: str
    gases: tuple[str, ...] = ("CO2",)
    trust: str = "S"
    source: Source
    note: str = ""
    #: Fuels: the IPCC per-TJ factors and net calorific value from which ``value`` is derived.
    fuel: str | None = None
    ef_kg_per_tj: dict[str, float] | None = None
    ncv_tj_per_gg: float | None = None
    #: Set by the loader: True for every factor from a user file.
    custom: bool = False
    #: Set by the loader: the file the factor came from.
    origin: str = ""

    @model_validator(mode="after")
    def _check(self) -> Factor:
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind {self.kind!r} (known: {', '.join(KINDS)})")
        if self.value != self.value and (self.ef_kg_per_tj is None or self.ncv_tj_per_gg is None):
            raise ValueError("a factor needs 'value', or 'ef_kg_per_tj' and 'ncv_tj_per_gg' for a fuel")
        return self

    def label(self) -> str:
        flag = " [CUSTOM]" if self.custom else ""
        return f"{self.id}: {self.value:.6g} {self.unit} ({self.region}, {self.year}){flag}"


def fuel_factor_per_kg(ef_kg_per_tj: dict[str, float], ncv_tj_per_gg: float, gwp: dict[str, float]) -> float:
    """kgCO2e per kg of fuel from IPCC per-TJ factors and the NCV (TJ/Gg = MJ/kg).

    kg/TJ × TJ/Gg = kg per Gg = kg per 10^6 kg, hence the 1e-6. Natural gas (IPCC 2006 Table 2.2,
    NCV 48.0 TJ/Gg, AR6 GWP): (56100 + 1·29.8 + 0.1·273) × 48.0e-6 = 56157.1 × 48e-6 = 2.6955 kg/kg.

    >>> round(fuel_factor_per_kg({"CO2": 56100, "CH4": 1, "N2O": 0.1}, 48.0, {"CO2": 1, "CH4": 29.8, "N2O": 273}), 6)
    2.695541
    >>> round(fuel_factor_per_kg({"CO2": 74100, "CH4": 3, "N2O": 0.6}, 43.0, {"CO2": 1, "CH4": 29.8, "N2O": 273}), 6)
    3.197188
    """
    missing = set(ef_kg_per_tj) - set(gwp)
    if missing:
        raise FactorError(f"no GWP for {', '.join(sorted(missing))}")
    per_tj = sum(v * gwp[g] for g, v in ef_kg_per_tj.items())
    return per_tj * ncv_tj_per_gg * 1e-6


@dataclass(frozen=True, slots=True)
class Selection:
    """A factor picked by ``FactorLibrary.select`` and how it was found."""

    factor: Factor
    requested: str                       # "grid_location CN-Jiangsu 2026"
    fallbacks: tuple[str, ...] = ()      # each step away from the request, in words

    @property
    def exact(self) -> bool:
        return not self.fallbacks


@dataclass(frozen=True)
class FactorLibrary:
    """All factors known to a run: the packaged library plus user files (later files win)."""

    factors: tuple[Factor, ...]
    gwp: Gwp
    name: str = "spinline-default"
    version: str = ""
    files: tuple[str, ...] = ()
    digest: str = ""
    _by_id: dict[str, Factor] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        for f in self.factors:
            self._by_id[f.id] = f

    # --- loading ---------------------------------------------------------------------------------

    @classmethod
    def load(cls, extra: Sequence[str | Path] = ()) -> FactorLibrary:
        """The packaged library, extended/overridden by ``extra`` YAML files (each factor custom)."""
        text = resources.files("spinline.carbon").joinpath("data/factors.yaml").read_text(encoding="utf-8")
        docs: list[tuple[str, str, bool]] = [("spinline:data/factors.yaml", text, False)]
        for p in extra:
            path = Path(p)
            try:
                docs.append((str(path), path.read_text(encoding="utf-8"), True))
            except OSError as exc:
                raise FactorError(f"{path}: cannot read factor file ({exc.strerror})") from None
        return cls.from_texts(docs)

    @classmethod
    def from_texts(cls, docs: Iterable[tuple[str, str, bool]]) -> FactorLibrary:
        """Build from (origin, yaml text, custom) triples; a later factor with the same id replaces."""
        by_id: dict[str, Factor] = {}
        gwp: Gwp | None = None
        name, version = "spinline-default", ""
        digest = hashlib.sha256()
        files: list[str] = []
        for origin, text, custom in docs:
            digest.update(text.encode())
            files.append(origin)
            try:
                data = yaml.safe_load(text) or {}
            except yaml.YAMLError as exc:
                raise FactorError(f"{origin}: not valid YAML ({exc})") from None
            if not isinstance(data, dict):
                raise FactorError(f"{origin}: a factor file is a mapping with a 'factors' list")
            if not custom:
                name = str(data.get("library", name))
                version = str(data.get("version", version))
            if "gwp" in data:
                if custom and gwp is not None:
                    raise FactorError(f"{origin}: a user file may not replace the GWP set")
                gwp = _validate(Gwp, data["gwp"], origin, "gwp")
            for i, raw in enumerate(data.get("factors") or []):
                if not isinstance(raw, dict):
                    raise FactorError(f"{origin}: factors[{i}] must be a mapping")
                f = _validate(Factor, {**raw, "custom": custom, "origin": origin}, origin, f"factors[{i}]")
                by_id[f.id] = f
        g = gwp or Gwp()
        out = []
        for f in by_id.values():
            if f.kind == "fuel" and f.ef_kg_per_tj is not None and f.ncv_tj_per_gg is not None:
                f = f.model_copy(update={"value": fuel_factor_per_kg(f.ef_kg_per_tj, f.ncv_tj_per_gg, g.values)})
            out.append(f)
        return cls(factors=tuple(out), gwp=g, name=name, version=version, files=tuple(files),
                   digest=digest.hexdigest()[:16])

    # --- lookup ----------------------------------------------------------------------------------

    def get(self, factor_id: str) -> Factor:
        try:
            return self._by_id[factor_id]
        except KeyError:
            raise FactorError(f"no factor {factor_id!r} in the library") from None

    def select(self, kind: str, regions: Sequence[str], year: int, *, fuel: str | None = None,
               allow_later: bool = False) -> Selection:
        """The factor of ``kind`` for the first region in ``regions`` at ``year``, with fallbacks.

        Order: the requested year at each region (most specific first), then each earlier year the
        same way: the newest vintage wins over a more specific region of an older vintage, because
        the MEE publishes regional/national factors for years it publishes no provincial ones for.
        A custom factor at the same region and year wins over a packaged one (the user's override).
        A later year is used only with ``allow_later`` (the life-cycle electricity factor, first
        published for 2023, for an earlier product footprint), and then the earliest one, said so.
        """
        cands = [f for f in self.factors if f.kind == kind and (fuel is None or f.fuel == fuel)]
        req = f"{kind}{' ' + fuel if fuel else ''} {regions[0] if regions else '?'} {year}"
        if not cands:
            raise FactorError(f"no factor of kind {kind!r}{' for ' + fuel if fuel else ''} in the library")
        years = sorted({f.year for f in cands if f.year <= year}, reverse=True)
        if allow_later:
            years += sorted({f.year for f in cands if f.year > year})
        for y in years:
            for ri, region in enumerate(regions):
                hits = [f for f in cands if f.year == y and f.region == region]
                if hits:
                    hit = sorted(hits, key=lambda f: (not f.custom, f.id))[0]
                    steps = []
                    if y < year:
                        steps.append(say("factor.earlier_vintage", kind=kind, year=year, used=y))
                    elif y > year:
                        steps.append(say("factor.later_vintage", kind=kind, year=year, used=y))
                    if ri:
                        steps.append(say("factor.wider_region", year=y, regions=", ".join(regions[:ri]), region=region))
                    return Selection(hit, req, tuple(steps))
        raise FactorError(f"no {kind} factor for {'/'.join(regions)} at or before {year}")

    def custom_factors(self) -> list[Factor]:
        return [f for f in self.factors if f.custom]


def _validate(model: type[Any], raw: Any, origin: str, where: str) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        msgs = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False))
        raise FactorError(f"{origin}: {where}: {msgs}") from None


def grid_regions(province: str, grid_region: str) -> list[str]:
    """Candidate regions for a mill's grid factor, most specific first.

    >>> grid_regions("Jiangsu", "East")
    ['CN-Jiangsu', 'CN-East', 'CN']
    >>> grid_regions("", "")
    ['CN']
    """
    out = []
    if province:
        out.append(f"CN-{province}")
    if grid_region:
        out.append(f"CN-{grid_region}")
    out.append("CN")
    return out
