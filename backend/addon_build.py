"""`dreamstill build-addon -o DIR`: build the Blender extension zip(s) with everything inside.

A Blender 4.2+ extension is a zip with ``blender_manifest.toml`` at its root; Python dependencies travel as wheels
listed in the manifest's ``wheels = [...]`` and Blender installs the ones that match the running platform and
Python. What goes into each zip:

    blender_manifest.toml          the source manifest, with ``platforms`` and ``wheels`` narrowed to this zip
    __init__.py, operators.py ...  blender_addon/ as it is in the repository
    _vendor/dreamstill_protocol/   protocol/ (pure Python + numpy + pyzmq), imported by the add-on relatively
    wheels/pyzmq-*.whl             pyzmq for Python 3.11 (Blender 4.2-5.0) and 3.13 (Blender 5.1+, cp312-abi3)

The wheel names come from the manifest. Each is taken from ``--wheels-dir`` (default ``~/.cache/dreamstill/wheels``)
or downloaded there with ``pip download --only-binary=:all: --platform TAG --python-version X.Y``. Offline, the zip
for *this* machine's platform is still built by re-packing the pyzmq that is installed here into a wheel; zips for
platforms whose wheels cannot be had are skipped with a message saying what to fetch.

By default one zip per Blender platform is written (``dreamstill-0.1.0-linux_x64.zip``, 1.3 to 2.5 MB against 5.5 MB for
all platforms: each holds only its own two wheels); ``--single-zip`` writes one zip for every platform.
Zips are reproducible: sorted entries and a fixed timestamp.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import importlib.metadata
import importlib.util
import io
import platform as _platform
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

VENDOR_NAME = "dreamstill_protocol"
ZIP_DATE = (2024, 1, 1, 0, 0, 0)
DEFAULT_WHEELS_DIR = Path("~/.cache/dreamstill/wheels").expanduser()
BLENDER_PLATFORMS = ("linux-x64", "linux-arm64", "windows-x64", "windows-arm64", "macos-arm64", "macos-x64")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.zip", ".*")


class BuildError(RuntimeError):
    """The add-on cannot be built; the message says what to change."""


@dataclass(frozen=True)
class WheelName:
    """A wheel file name split into its PEP 427 fields."""

    filename: str
    distribution: str
    version: str
    python_tags: tuple[str, ...]
    abi_tags: tuple[str, ...]
    platform_tags: tuple[str, ...]

    @classmethod
    def parse(cls, filename: str) -> WheelName:
        stem = Path(filename).name
        if not stem.endswith(".whl"):
            raise BuildError(f"{filename!r} is not a wheel file name (NAME-VERSION-PY-ABI-PLATFORM.whl)")
        parts = stem[:-4].split("-")
        if len(parts) not in (5, 6):
            raise BuildError(f"{filename!r} is not a wheel file name (NAME-VERSION-PY-ABI-PLATFORM.whl)")
        name, version, py, abi, plat = parts[0], parts[1], parts[-3], parts[-2], parts[-1]
        return cls(stem, name, version, tuple(py.split(".")), tuple(abi.split(".")), tuple(plat.split(".")))

    @property
    def blender_platforms(self) -> set[str]:
        """The Blender platforms (manifest ``platforms`` names) this wheel runs on."""
        found = set()
        for tag in self.platform_tags:
            if tag == "any":
                return set(BLENDER_PLATFORMS)
            if tag.startswith(("manylinux", "musllinux", "linux")):
                found.add("linux-x64" if tag.endswith("x86_64") else "linux-arm64" if tag.endswith("aarch64") else "")
            elif tag.startswith("win"):
                found.add("windows-x64" if tag.endswith("amd64") else "windows-arm64" if tag.endswith("arm64") else "")
            elif tag.startswith("macosx"):
                if tag.endswith(("universal2", "universal")):
                    found |= {"macos-arm64", "macos-x64"}
                elif tag.endswith("arm64"):
                    found.add("macos-arm64")
                elif tag.endswith("x86_64"):
                    found.add("macos-x64")
        found.discard("")
        return found

    def pip_download_args(self) -> list[str]:
        """Arguments that make `pip download` fetch exactly this file."""
        py = self.python_tags[0]
        if not re.fullmatch(r"cp3\d+", py):
            raise BuildError(f"cannot work out a Python version from {self.filename}")
        version = f"3.{py[3:]}"
        return [
            f"{self.distribution}=={self.version}",
            "--only-binary=:all:",
            "--no-deps",
            "--platform",
            self.platform_tags[-1],
            "--python-version",
            version,
            "--implementation",
            "cp",
            "--abi",
            self.abi_tags[0],
        ]


def local_platform() -> str:
    """This machine as a Blender platform name, e.g. "linux-x64"."""
    machine = _platform.machine().lower()
    arch = "arm64" if machine in ("arm64", "aarch64") else "x64"
    system = {"linux": "linux", "win32": "windows", "darwin": "macos"}.get(sys.platform)
    if system is None:
        raise BuildError(f"unknown platform {sys.platform}; pass --platform with one of {', '.join(BLENDER_PLATFORMS)}")
    return f"{system}-{arch}"


def source_dirs() -> tuple[Path, Path]:
    """(blender_addon folder, protocol folder) of this installation (editable or regular)."""
    found = []
    for name in ("dreamstill.blender_addon", "dreamstill.protocol"):
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise BuildError(f"{name} is not installed; run `pip install -e .` in the Dreamstill repository")
        found.append(Path(list(spec.submodule_search_locations)[0]))
    return found[0], found[1]


def read_manifest(addon_dir: Path) -> tuple[str, dict]:
    path = addon_dir / "blender_manifest.toml"
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise BuildError(f"cannot read {path}: {err}") from None
    for key in ("id", "version", "wheels", "platforms"):
        if key not in data:
            raise BuildError(f"{path} has no `{key}`; see the manifest in the repository")
    return text, data


def narrow_manifest(text: str, platforms: list[str], wheels: list[str]) -> str:
    """The manifest text with its ``platforms`` and ``wheels`` arrays replaced (comments elsewhere kept)."""

    def array(values):
        return "[\n" + "".join(f'  "{v}",\n' for v in values) + "]"

    for key, values in (("platforms", platforms), ("wheels", [f"./wheels/{w}" for w in wheels])):
        text, count = re.subn(
            rf"(?ms)^{key}\s*=\s*\[.*?\]", lambda m, v=values, k=key: f"{k} = {array(v)}", text, count=1
        )
        if count != 1:
            raise BuildError(f"the manifest has no `{key} = [...]` array to fill in")
    tomllib.loads(text)  # still valid TOML
    return text


# ---------------------------------------------------------------------------------------------------- wheels
def repack_installed_wheel(distribution: str, out_dir: Path) -> Path:
    """Write the installed ``distribution`` back into a wheel (from its RECORD and WHEEL tags); its path.

    For offline builds: the result is the same set of files pip installed, with a fresh RECORD."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise BuildError(
            f"{distribution} is not installed here, so it cannot be re-packed offline; "
            f"`pip install {distribution}` or pass --wheels-dir with its wheels"
        ) from None
    wheel_text = dist.read_text("WHEEL") or ""
    tags = [line.split(":", 1)[1].strip() for line in wheel_text.splitlines() if line.startswith("Tag:")]
    if not tags or any(len(t.split("-")) != 3 for t in tags):
        raise BuildError(f"the installed {distribution} has no wheel tags (it was not installed from a wheel)")

    def join(index):
        seen = []
        for tag in tags:
            part = tag.split("-")[index]
            if part not in seen:
                seen.append(part)
        return ".".join(seen)

    name = dist.metadata["Name"].replace("-", "_")
    filename = f"{name}-{dist.version}-{join(0)}-{join(1)}-{join(2)}.whl"
    files = sorted(
        str(f)
        for f in (dist.files or [])
        if not str(f).startswith("..") and "__pycache__" not in str(f) and not str(f).endswith(".pyc")
    )
    record_name = next((f for f in files if f.endswith(".dist-info/RECORD")), None)
    if record_name is None:
        raise BuildError(f"the installed {distribution} has no RECORD; reinstall it with pip")
    skip = {record_name} | {
        f for f in files if f.endswith((".dist-info/INSTALLER", ".dist-info/REQUESTED", ".dist-info/direct_url.json"))
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / filename
    rows = []
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel in files:
            if rel in skip:
                continue
            data = Path(dist.locate_file(rel)).read_bytes()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            rows.append([rel, f"sha256={digest}", str(len(data))])
            zf.writestr(_zipinfo(rel), data)
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows + [[record_name, "", ""]])
        zf.writestr(_zipinfo(record_name), buf.getvalue())
    return target


def fetch_wheel(wheel: WheelName, wheels_dir: Path, offline: bool, log) -> Path | None:
    """The wheel file from ``wheels_dir``, downloading it there first unless offline; None when unavailable."""
    path = wheels_dir / wheel.filename
    if path.is_file():
        return path
    if offline:
        return None
    wheels_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "-d", str(wheels_dir), *wheel.pip_download_args()]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as err:
        log(f"  could not run pip download for {wheel.filename}: {err}")
        return None
    if proc.returncode != 0 or not path.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        log(f"  could not download {wheel.filename}: {tail[0]}")
        return None
    return path


# ---------------------------------------------------------------------------------------------------- zips
def _zipinfo(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    return info


def _write_zip(stage: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(p for p in stage.rglob("*") if p.is_file()):
            zf.writestr(_zipinfo(path.relative_to(stage).as_posix()), path.read_bytes())
    partial.replace(target)


def stage_addon(stage: Path, addon_dir: Path, protocol_dir: Path, manifest_text: str, wheel_paths: list[Path]):
    """Lay out one extension folder: the add-on, the vendored protocol, the wheels and the narrowed manifest."""
    shutil.copytree(addon_dir, stage, ignore=_IGNORE)
    vendor = stage / "_vendor"
    if vendor.exists():
        shutil.rmtree(vendor)
    vendor.mkdir()
    (vendor / "__init__.py").write_text('"""Packages bundled into the extension by `dreamstill build-addon`."""\n')
    shutil.copytree(protocol_dir, vendor / VENDOR_NAME, ignore=_IGNORE)
    wheels = stage / "wheels"
    if wheels.exists():
        shutil.rmtree(wheels)
    wheels.mkdir()
    for path in wheel_paths:
        shutil.copyfile(path, wheels / path.name)
    (stage / "blender_manifest.toml").write_text(manifest_text, encoding="utf-8")


def build_addon(
    out_dir: Path | str,
    *,
    platforms: list[str] | None = None,
    single_zip: bool = False,
    wheels_dir: Path | str | None = None,
    offline: bool = False,
    log=print,
) -> list[Path]:
    """Build the extension zip(s) into ``out_dir``; returns their paths.

    ``platforms``: Blender platform names, "local" for this machine, or None for every platform in the manifest.
    Platforms whose wheels cannot be had are skipped (logged); BuildError when no zip at all can be built.
    """
    out_dir = Path(out_dir)
    wheels_dir = Path(wheels_dir) if wheels_dir is not None else DEFAULT_WHEELS_DIR
    addon_dir, protocol_dir = source_dirs()
    text, manifest = read_manifest(addon_dir)
    here = local_platform()
    known = list(manifest["platforms"])
    wanted = known if not platforms else [here if p == "local" else p for p in platforms]
    unknown = [p for p in wanted if p not in known]
    if unknown:
        raise BuildError(f"platform(s) {unknown} are not in the manifest; choose from {known} or 'local'")

    wheels = [WheelName.parse(w) for w in manifest["wheels"]]
    available: dict[str, Path] = {}
    for wheel in wheels:
        if wheel.blender_platforms & set(wanted):
            path = fetch_wheel(wheel, wheels_dir, offline, log)
            if path is not None:
                available[wheel.filename] = path

    per_platform: dict[str, list[Path]] = {}
    for plat in wanted:
        mine = [w for w in wheels if plat in w.blender_platforms]
        missing = [w.filename for w in mine if w.filename not in available]
        paths = [available[w.filename] for w in mine if w.filename in available]
        if missing and plat == here:
            local = repack_installed_wheel("pyzmq", wheels_dir / "local")
            log(
                f"  {plat}: using the pyzmq installed here ({local.name}) in place of {', '.join(missing)}; this "
                "zip then works only in a Blender with the same Python version"
            )
            paths = [p for p in paths if p.name != local.name] + [local]
        elif missing:
            log(f"  skipping {plat}: missing {', '.join(missing)} (put them in {wheels_dir} or build online)")
            continue
        per_platform[plat] = paths
    if not per_platform:
        raise BuildError(
            f"no platform could be built: the pyzmq wheels are neither in {wheels_dir} nor "
            "downloadable; build online once, or use --platform local"
        )

    groups = [(None, list(per_platform))] if single_zip else [(p, [p]) for p in per_platform]
    built = []
    for suffix, plats in groups:
        paths = sorted({p for plat in plats for p in per_platform[plat]}, key=lambda p: p.name)
        narrowed = narrow_manifest(text, plats, [p.name for p in paths])
        name = f"{manifest['id']}-{manifest['version']}" + (f"-{suffix.replace('-', '_')}" if suffix else "")
        target = out_dir / f"{name}.zip"
        with tempfile.TemporaryDirectory(prefix="dreamstill-addon-") as tmp:
            stage = Path(tmp) / manifest["id"]
            stage_addon(stage, addon_dir, protocol_dir, narrowed, paths)
            _write_zip(stage, target)
        log(f"{target} ({target.stat().st_size / 1e6:.2f} MB; {', '.join(plats)})")
        built.append(target)
    return built


# ---------------------------------------------------------------------------------------------------- CLI
def register(subparsers) -> None:
    p = subparsers.add_parser(
        "build-addon",
        help="build the Blender extension zip(s) (pyzmq wheels, protocol inside)",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="folder for the zip(s)")
    p.add_argument(
        "--platform",
        action="append",
        dest="platforms",
        metavar="NAME",
        help="Blender platform (linux-x64, windows-x64, macos-arm64, macos-x64) or 'local'; repeatable; "
        "default: every platform in the manifest",
    )
    p.add_argument("--single-zip", action="store_true", help="one zip for all platforms instead of one per platform")
    p.add_argument(
        "--wheels-dir",
        type=Path,
        default=None,
        help=f"where the wheels are looked for and downloaded to (default {DEFAULT_WHEELS_DIR})",
    )
    p.add_argument("--offline", action="store_true", help="never run pip download (re-pack the local pyzmq instead)")
    p.set_defaults(func=_command)


def _command(args: argparse.Namespace) -> int:
    try:
        build_addon(
            args.output,
            platforms=args.platforms,
            single_zip=args.single_zip,
            wheels_dir=args.wheels_dir,
            offline=args.offline,
        )
    except BuildError as err:
        print(f"dreamstill build-addon: {err}", file=sys.stderr)
        return 2
    return 0
