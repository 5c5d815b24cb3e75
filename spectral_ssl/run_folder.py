"""A training run's folder: one run per folder, atomic verified checkpoints, metrics without repeats.

Nothing in it may be lost or mixed with another run:

- ``open`` takes a lock (a second run into the same folder stops with a message) and refuses a folder that holds
  another run's export, checkpoints or metrics unless told what to do: ``resume`` continues it only if the saved
  ``train_config.json`` matches (keys in ``SAFE_TO_CHANGE_ON_RESUME`` may differ; ``output_dir`` is not compared, so
  a folder named by another path, moved or copied, resumes), and refuses a folder that holds no run (a typo in
  ``--output_dir``) and a ``train_config.json`` edited by hand (each checkpoint keeps the config it trained with,
  covered by its manifest, and the two must agree), naming the keys; ``overwrite`` removes what a
  run wrote (``RUN_ENTRIES``) and nothing else. A folder holding anything a run did not write (notes, source,
  ``.git/``, a dataset's own README.md, a model folder's config.json) is refused for a fresh run or an overwrite,
  naming what is there. The overwrite happens in ``start``, once the run is built: a command that fails before (a
  wrong dataset, a bad key) leaves the previous run as it was. A resume of a run that saved no checkpoint yet says
  that it starts from step 0.
- ``release`` (a fresh run that failed before its first checkpoint) removes what the run wrote, so the corrected
  command finds the folder free: there is nothing to resume.
- ``save_checkpoint`` writes ``checkpoints/.tmp-step_N`` with ``accelerator.save_state`` and ``train_config.json``,
  adds ``manifest.json`` (size and SHA-256 of every file) and renames it to ``step_N`` when complete; it keeps the
  newest ``save_total_limit``. A save that fails (a full disk) removes its temporary folder and stops with one line
  naming the free space; the previous checkpoints stay. ``start`` loads the newest checkpoint whose manifest
  verifies (a torn or truncated one is skipped with a warning, never half-loaded).
- ``log_metrics`` appends to ``metrics.jsonl``; on resume, lines after the checkpoint's step are dropped first.
- ``TrainState``: a run's counters (``step``, ``train_seconds``, ``time_to_accuracy``), checkpointed with it; ``start``
  resumes from its ``step``.

Takes the ``accelerate.Accelerator`` as an argument (``save_state``/``load_state``/``wait_for_everyone``); the
library never imports accelerate.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from spectral_ssl.config import SAFE_TO_CHANGE_ON_RESUME

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
MANIFEST = "manifest.json"
METRICS = "metrics.jsonl"
TRAIN_CONFIG = "train_config.json"
LOCK = ".lock"
TRACKERS = "trackers"  # local tracker logs (--report_to: TensorBoard's event files, hparams)
_RUN_FILES = ("config.json", "model.safetensors", METRICS, TRAIN_CONFIG)
# everything a run writes at the root of its folder (hub's export files, the probe's results): the only entries
# ``--overwrite_output_dir`` removes; anything else in the folder is the user's and makes it refuse
RUN_ENTRIES = frozenset({*_RUN_FILES, CHECKPOINTS, LOCK, TRACKERS, "projector.safetensors", "README.md",
                         "spectral_diagnostics.png", "linear_probe.json", ".linear_probe.json.tmp",
                         ".export-staging", f".{METRICS}.tmp", f".{TRAIN_CONFIG}.tmp"})


def holds_run(path: Path) -> bool:
    """Whether ``path`` holds a spectral_ssl run or export (its README.md is then the run's model card)."""
    return run_marker(path) is not None


def run_marker(path: Path) -> str | None:
    """The entry that makes ``path`` a spectral_ssl run or export: ``train_config.json``, ``checkpoints/`` (a run's
    checkpoint folders) or an export's ``config.json``; None for any other folder (or a path that is none)."""
    if (path / TRAIN_CONFIG).is_file():
        return TRAIN_CONFIG
    if checkpoint_dirs(path / CHECKPOINTS):
        return CHECKPOINTS + "/"
    try:
        return "config.json" if "spectral_ssl" in json.loads((path / "config.json").read_text()) else None
    except (OSError, ValueError, TypeError):
        return None


def not_a_dataset(dataset: str) -> str | None:
    """One line saying that local folder ``dataset`` is a run or export folder, not a dataset (its train_config.json
    and metrics would be read as data), or None when it is not one: what the readers (``data.load_images``) and the
    recipes' configs (``config.check_dataset_folder``) refuse."""
    marker = run_marker(Path(os.path.expanduser(dataset)))
    if marker is None:
        return None
    return (f"{dataset} is a spectral_ssl run or export folder, not a dataset (it holds {marker}); pass the image "
            "folder or dataset it was trained on")


RUN_MARKER_FILES = (TRAIN_CONFIG, "config.json")  # the files run_marker reads


def run_inside(folder: Path, files: Iterable[Path]) -> str | None:
    """One line naming a run or export folder among the parents of ``files`` (files under dataset ``folder``; only
    those named in ``RUN_MARKER_FILES`` matter), or None: a run kept inside a dataset folder would be read as data
    (its metrics as rows, its plots as images)."""
    for path in sorted(p for p in files if p.name in RUN_MARKER_FILES and p.parent != folder):
        marker = run_marker(path.parent)
        if marker is not None:
            return (f"{folder} holds a spectral_ssl run or export folder, {path.parent.relative_to(folder)} (it "
                    f"holds {marker}), whose files would be read as data; move it out of the dataset folder")
    return None


# names a run shares with any Hub model folder: ours only beside a run (a plain timm or transformers download holds
# config.json, model.safetensors and its own README.md)
_SHARED_NAMES = frozenset({"README.md", "config.json", "model.safetensors", "projector.safetensors"})


def foreign_entries(path: Path) -> list[str]:
    """Entries of ``path`` that no run wrote (a README.md, config.json or model.safetensors too, unless the folder
    holds a run)."""
    if not path.is_dir():
        return []
    ours = RUN_ENTRIES if holds_run(path) else RUN_ENTRIES - _SHARED_NAMES
    return sorted(child.name + ("/" if child.is_dir() else "") for child in path.iterdir() if child.name not in ours)


class RunFolderError(RuntimeError):
    """A run folder that cannot be used as asked; the message is one line naming the way out."""


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` whole: written to ``.<name>.tmp``, fsynced, renamed over it (a kill leaves the old
    file or the new one, never an emptied or half-written one)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def holds_json_with(path: Path, keys: Iterable[str]) -> bool:
    """True when ``path`` holds a JSON object with every one of ``keys``: a results file one of our tools wrote, which a
    new run may replace (anything else there is the user's, and is never overwritten)."""
    try:
        found = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(found, dict) and set(keys) <= found.keys()


def parse_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl``; a line that does not parse (torn by a full disk or a kill during its write)
    is left out with a warning naming it, so that it never blocks a resume or an export."""
    rows = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict):
            logger.warning("%s line %d is not a metrics row (torn by an interrupted write?); left out: %.80s", path,
                           number, line)
            continue
        rows.append(row)
    return rows


def write_manifest(folder: Path) -> None:
    """``manifest.json``: size and SHA-256 of every other file below ``folder`` (files fsynced first)."""
    entries = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        with path.open("rb") as f:
            os.fsync(f.fileno())
        entries[str(path.relative_to(folder))] = {"size": path.stat().st_size, "sha256": _digest(path)}
    target = folder / MANIFEST
    target.write_text(json.dumps(entries, indent=1))
    with target.open("rb") as f:
        os.fsync(f.fileno())


def verify_manifest(folder: Path) -> str | None:
    """None if every file of the manifest is present with its size and digest, else what is wrong."""
    try:
        entries = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return "no readable manifest (an interrupted write)"
    for name, entry in entries.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != entry["size"] or _digest(path) != entry["sha256"]:
            return f"{name} is truncated or corrupted"
    return None


def checkpoint_dirs(root: Path) -> list[Path]:
    """Complete checkpoints (``step_N``, renamed after their manifest was written), oldest first."""
    if not root.is_dir():
        return []
    return sorted((p for p in root.glob("step_*") if p.is_dir()), key=lambda p: int(p.name.split("_")[1]))


# not compared on resume: the folder itself is the run's identity, whatever path names it (relative, absolute,
# moved or copied)
_LOCATION_KEYS = ("output_dir",)


def _differing(saved: dict[str, Any], config: dict[str, Any], defaults: dict[str, Any] | None = None) -> list[str]:
    """Keys whose values differ between two configs, except those a resume may change (a dataset path written
    with or without a trailing slash is the same; a key the saved run does not have, added by a later version, is
    the same when ``config`` holds its default from ``defaults``)."""
    def same(key: str) -> bool:
        if key not in saved and defaults is not None and key in defaults and config.get(key) == defaults[key]:
            return True
        a, b = saved.get(key), config.get(key)
        if key == "dataset" and isinstance(a, str) and isinstance(b, str):
            return a.rstrip("/") == b.rstrip("/")
        return a == b

    return sorted(k for k in set(saved) | set(config)
                  if k not in SAFE_TO_CHANGE_ON_RESUME and k not in _LOCATION_KEYS and not same(k))


class TrainState:
    """A training run's counters, checkpointed with the run (register it with the accelerator): the steps done, the
    training time in seconds, the first online-probe result that reached a target accuracy (None until then) and the
    collapse alarm's count of consecutive collapsed logs (a checkpoint saved before it existed resumes at 0).
    ``RunFolder.start`` resumes from its ``step``; the data position belongs to the selection pool."""

    def __init__(self) -> None:
        self.step, self.train_seconds, self.time_to_accuracy = 0, 0.0, None
        self.collapse_streak = 0

    def state_dict(self) -> dict:
        return dict(self.__dict__)

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(state)


class RunFolder:
    """The ``output_dir`` of one run (see the module docstring).

    Args:
        path: The folder.
        config: This run's configuration (plain data), saved as ``train_config.json`` and compared on resume.
        defaults: Every key's default: a key missing from the saved configuration (a run started by an earlier
            version, before the key existed) then counts as unchanged when this run leaves it at its default.
        main_process: Only the main process writes, locks and renames; every process calls every method (some wait
            for each other through the accelerator).
    """

    def __init__(self, path: str | Path, config: dict[str, Any], main_process: bool = True,
                 defaults: dict[str, Any] | None = None) -> None:
        self.path, self.config, self.main, self.defaults = Path(path), config, main_process, defaults
        self.checkpoints = self.path / CHECKPOINTS
        self._lock_file = None
        self._metrics = None
        self._clear = False  # overwrite: clear in start(), once the run is built
        self._resume = False
        self._fresh = False  # start() ran and found no checkpoint to resume
        self._saved = False  # this run saved a checkpoint

    # ---- opening ----
    def open(self, *, resume: bool, overwrite: bool) -> None:
        """Lock the folder and check it may hold this run; clear it with ``overwrite``."""
        if resume and not holds_run(self.path):  # a typo in --output_dir would otherwise cost a run from scratch
            raise RunFolderError(f"--resume=true: output_dir {self.path} holds no run to resume (no {TRAIN_CONFIG}); "
                                 "check --output_dir, or drop --resume=true to start a new run (nothing was changed)")
        foreign = foreign_entries(self.path)
        if foreign and not resume:  # a fresh run or an overwrite would mix with, or replace, files that are not ours
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise RunFolderError(f"output_dir {self.path} holds files that no run wrote ({shown}); choose an empty or "
                                 "new --output_dir (nothing was changed)")
        if self.main:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock()
        holds = [name for name in _RUN_FILES if (self.path / name).exists()] + \
            ([CHECKPOINTS + "/"] if checkpoint_dirs(self.checkpoints) else [])
        if holds and not resume and not overwrite:
            raise RunFolderError(f"output_dir {self.path} already holds a run ({', '.join(holds)}); pass "
                                 "--resume=true to continue it, --overwrite_output_dir=true to replace it, or choose "
                                 "another --output_dir")
        self._clear = bool(holds and overwrite)  # done by start(): a run that fails to build keeps the old one
        self._resume = resume
        saved = self._saved_config() if resume else None
        if saved is not None:
            self._check_same_run(saved)
        elif resume and holds:
            raise RunFolderError(f"output_dir {self.path} has no {TRAIN_CONFIG} (nor a checkpoint holding a copy), so "
                                 "it cannot be checked that it holds this run; use --overwrite_output_dir=true or "
                                 "another --output_dir")

    def _lock(self) -> None:
        self._lock_file = (self.path / LOCK).open("a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.seek(0)
            owner = self._lock_file.read().strip() or "another process"
            self._lock_file.close()
            self._lock_file = None
            raise RunFolderError(f"output_dir {self.path} is in use by another run ({owner}); wait for it to finish "
                                 "or choose another --output_dir") from None
        self._lock_file.truncate(0)
        self._lock_file.write(f"pid {os.getpid()}")
        self._lock_file.flush()

    @staticmethod
    def _read_config(path: Path) -> dict[str, Any]:
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise RunFolderError(f"{path} is not readable JSON ({type(e).__name__}); restore it or start a new "
                                 "--output_dir") from None
        if not isinstance(saved, dict):
            raise RunFolderError(f"{path} does not hold a mapping of config keys; restore it or start a new "
                                 "--output_dir")
        return saved

    def _trained_config(self) -> tuple[Path, dict[str, Any]] | None:
        """The newest checkpoint's copy of the config (the one its weights trained with) and its path; None without
        a checkpoint (or one written before checkpoints held a copy)."""
        for checkpoint in reversed(checkpoint_dirs(self.checkpoints)):
            if (checkpoint / TRAIN_CONFIG).is_file():
                try:
                    return checkpoint / TRAIN_CONFIG, self._read_config(checkpoint / TRAIN_CONFIG)
                except RunFolderError:
                    continue  # a damaged checkpoint: start() skips it too (its manifest fails)
        return None

    def _saved_config(self) -> dict[str, Any] | None:
        """The run's config to compare a resume with: ``train_config.json``, or, where it is missing or unreadable
        (a kill during a write by an older version, a deletion), the newest checkpoint's copy (``start`` writes it
        back). None when the folder holds neither."""
        path, trained = self.path / TRAIN_CONFIG, self._trained_config()
        if path.is_file():
            try:
                saved = self._read_config(path)
            except RunFolderError:
                if trained is None:
                    raise
                logger.warning("%s is not readable; the resume is checked against %s, the copy the newest checkpoint "
                               "trained with (and %s is rewritten from it)", path, trained[0], TRAIN_CONFIG)
                return trained[1]
            self._check_not_edited(saved, trained)
            return saved
        if trained is not None:
            logger.warning("%s is missing; the resume is checked against %s, the copy the newest checkpoint trained "
                           "with", path, trained[0])
            return trained[1]
        return None

    def _check_not_edited(self, saved: dict[str, Any], trained: tuple[Path, dict[str, Any]] | None) -> None:
        """Refuse a ``train_config.json`` edited by hand: it must match the copy in the newest checkpoint (the
        config the saved weights trained with) on every key that a resume may not change."""
        if trained is None:
            return  # no checkpoint yet (nothing trained to protect), or one written before checkpoints held a copy
        checkpoint_config, trained = trained
        edited = _differing(trained, saved)
        if edited:
            detail = "; ".join(f"{k}: trained with {trained.get(k)!r}, file says {saved.get(k)!r}" for k in edited[:6])
            raise RunFolderError(f"--resume=true: {self.path / TRAIN_CONFIG} was edited after the run trained "
                                 f"({detail}); restore {', '.join(edited)} in it (the run trained with the values "
                                 f"recorded in {checkpoint_config}), or start a new --output_dir")

    def _check_same_run(self, saved: dict[str, Any]) -> None:
        changed = _differing(saved, self.config, self.defaults)
        if changed:
            detail = "; ".join(f"{k}: {saved.get(k)!r} -> {self.config.get(k)!r}" for k in changed[:6])
            raise RunFolderError(f"--resume=true: {', '.join(changed)} differ from the saved run in {self.path} "
                                 f"({detail}); resume with the saved values, or start a new --output_dir "
                                 f"(safe to change: {', '.join(SAFE_TO_CHANGE_ON_RESUME)})")

    def close(self) -> None:
        if self._metrics is not None:
            try:
                self._metrics.close()
            except OSError as e:  # its last flush failed (a full disk): already reported by log_metrics
                logger.warning("closing %s: %s", self.path / METRICS, e)
            self._metrics = None
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    # ---- checkpoints ----
    def save_checkpoint(self, accelerator: Any, step: int, keep: int | None = None) -> Path:
        """Save the training state as ``checkpoints/step_N`` atomically (every process calls this)."""
        final = self.checkpoints / f"step_{step:06d}"
        tmp = self.checkpoints / f".tmp-step_{step:06d}"
        try:
            if self.main:
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
            accelerator.wait_for_everyone()
            accelerator.save_state(str(tmp))
            accelerator.wait_for_everyone()
            if self.main:
                # the config these weights trained with, covered by the manifest: a resume compares
                # train_config.json with it and refuses a hand-edited one
                (tmp / TRAIN_CONFIG).write_text(json.dumps(self.config, indent=2))
                write_manifest(tmp)
        except (OSError, RuntimeError) as e:  # a full disk: torch says "unexpected pos" or "file write failed"
            raise self._save_failed(tmp, step, e) from None
        if self.main:
            if final.exists():  # the same step saved again (e.g. a resumed run that ends where it resumed)
                shutil.rmtree(final)
            os.replace(tmp, final)
            _fsync_dir(self.checkpoints)
            for old in checkpoint_dirs(self.checkpoints)[:-keep] if keep else []:
                shutil.rmtree(old)
        self._saved = True
        accelerator.wait_for_everyone()
        return final

    def _save_failed(self, tmp: Path, step: int, error: Exception) -> RunFolderError:
        """The one-line error of a checkpoint that could not be written; its partial folder is removed."""
        if self.main:
            shutil.rmtree(tmp, ignore_errors=True)
        detail = (str(error).strip().splitlines() or [""])[0][:200]
        advice = self._full_disk_advice(self.checkpoints, note=", which is intact")
        return RunFolderError(f"checkpoint step {step} could not be written to {self.checkpoints} "
                              f"({type(error).__name__}: {detail}; {advice}")

    def _full_disk_advice(self, where: Path, note: str = "") -> str:
        """The tail of a full-disk error: the free space at ``where`` and what to run once there is room (``note``
        follows the name of the checkpoint a resume continues from)."""
        try:
            free = f"{shutil.disk_usage(where).free / 2**20:.0f} MB free there"
        except OSError:
            free = "free space unknown"
        previous = checkpoint_dirs(self.checkpoints)
        then = (f"then rerun with --resume=true (it continues from {previous[-1].name}{note})" if previous
                else "then run the command again (no checkpoint was saved yet)")
        return f"{free}); free some space or choose an --output_dir on another disk, {then}"

    def start(self, accelerator: Any, state: Any) -> int | None:
        """Claim the folder for this run (``train_config.json``, written only once the run is built, so a run that
        fails to start leaves the folder free) and load the newest verified checkpoint into the registered objects.
        Returns the checkpoint's step, or None when starting from scratch."""
        if self.main:
            if self._clear:  # only what a run writes (open's foreign_entries refused anything else)
                for child in self.path.iterdir():
                    if child.name in RUN_ENTRIES and child.name != LOCK:
                        shutil.rmtree(child) if child.is_dir() else child.unlink()
                self._clear = False
            write_atomically(self.path / TRAIN_CONFIG, json.dumps(self.config, indent=2))
            for tmp in self.checkpoints.glob(".tmp-step_*") if self.checkpoints.is_dir() else []:
                shutil.rmtree(tmp, ignore_errors=True)  # a save interrupted before its rename
        for candidate in reversed(checkpoint_dirs(self.checkpoints)):
            problem = verify_manifest(candidate)
            if problem:
                logger.warning("skipping checkpoint %s: %s", candidate, problem)
                continue
            try:
                accelerator.load_state(str(candidate))
            except (RuntimeError, ValueError, KeyError) as e:
                raise RunFolderError(f"checkpoint {candidate} does not match this model/config ({type(e).__name__}: "
                                     f"{str(e).splitlines()[0][:200]}); resume with the saved config or start a new "
                                     "--output_dir") from None
            self._truncate_metrics(state.step)
            accelerator.print(f"resumed from {candidate} (step {state.step})")
            return state.step
        if checkpoint_dirs(self.checkpoints) or (self.path / METRICS).exists():
            if checkpoint_dirs(self.checkpoints):
                raise RunFolderError(f"no checkpoint in {self.checkpoints} verifies (all interrupted or corrupted); "
                                     "use --overwrite_output_dir=true to start again")
            self._truncate_metrics(0)
        if self._resume:  # a run killed before its first checkpoint: nothing to load, said aloud
            logger.warning("--resume=true: %s holds no checkpoint yet (the run stopped before its first save); "
                           "training starts from step 0", self.path)
        self._fresh = True
        return None

    def release(self) -> bool:
        """After a failure: if this run started from scratch and saved no checkpoint, remove what it wrote
        (``train_config.json``, ``metrics.jsonl``, its tracker logs, interrupted checkpoint folders), so that the
        corrected command finds the folder free (there is nothing to resume). True if the folder was released."""
        if not (self.main and self._fresh and not self._saved) or checkpoint_dirs(self.checkpoints):
            return False
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        for name in (TRAIN_CONFIG, METRICS):
            (self.path / name).unlink(missing_ok=True)
        shutil.rmtree(self.path / TRACKERS, ignore_errors=True)  # the next run's curves start alone
        if self.checkpoints.is_dir():
            for tmp in self.checkpoints.glob(".tmp-step_*"):
                shutil.rmtree(tmp, ignore_errors=True)
            if not any(self.checkpoints.iterdir()):
                self.checkpoints.rmdir()
        logger.warning("the run stopped before its first checkpoint: %s is left free for a new run", self.path)
        return True

    # ---- metrics ----
    def _truncate_metrics(self, step: int) -> None:
        """Keep the rows up to ``step`` (the checkpoint's), whole lines only, replaced atomically."""
        path = self.path / METRICS
        if self.main and path.is_file():
            kept = [row for row in parse_metrics(path) if row.get("step", 0) <= step]
            write_atomically(path, "".join(json.dumps(row) + "\n" for row in kept))

    def log_metrics(self, metrics: dict[str, Any]) -> None:
        if not self.main:
            return
        try:
            if self._metrics is None:
                self._metrics = (self.path / METRICS).open("a")
            self._metrics.write(json.dumps(metrics) + "\n")
            self._metrics.flush()
        except OSError as e:  # a full disk: one line, and the checkpoints stay (a torn row is dropped on resume)
            raise RunFolderError(f"metrics could not be written to {self.path / METRICS} ({type(e).__name__}: "
                                 f"{e.strerror or e}; {self._full_disk_advice(self.path)}") from None

    def read_metrics(self) -> list[dict[str, Any]]:
        path = self.path / METRICS
        if not path.is_file():
            return []
        return parse_metrics(path)
