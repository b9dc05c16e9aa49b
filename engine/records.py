"""The records every layer shares: a problem, a request to a policy, a completion, a
rollout. The bottom of the engine: it imports nothing of prmtree's but step formats and
errors, and no third-party library (PIL is imported only to decode an image on request).

Records validate themselves at construction and the error names the field and value.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from prmtree.engine.errors import PolicyContractError
from prmtree.engine.steps import StepFormat

AnswerType = Literal["auto", "math", "choice", "number", "text", "vqa"]
ANSWER_TYPES: tuple[str, ...] = ("auto", "math", "choice", "number", "text", "vqa")

def high_depth(mode: str) -> bool:
    """Whether a PIL mode holds more than 8 bits a channel (``I;16``, ``I``, ``F``)."""
    return mode.startswith("I") or mode == "F"


def decode_rgb(data: bytes) -> Any:
    """Encoded image bytes as an 8-bit RGB ``PIL.Image``, as the image is meant to be seen.

    Three things ``Image.open(...).convert("RGB")`` gets wrong, so every place that shows an
    image to a model (the built-in policies, PRM training and scoring) decodes here:

    * an EXIF orientation is applied, as Hugging Face ``datasets`` applies it when it loads
      the output: the policy and a PRM trained on the output see the same picture;
    * a 16-bit or float image (``I;16``, ``I``, ``F``: medical and scientific PNGs and
      TIFFs) is scaled to 8 bits; ``convert`` clips it, which turns most pixels white;
    * a transparent image (RGBA, LA, or a palette or grey PNG with a transparent colour)
      is laid on white, as vLLM's own loader (``vllm serve``) lays it; ``convert`` drops
      the alpha, so a black-on-transparent diagram came out all black.
    """
    from PIL import Image, ImageOps  # lazily: the records layer stays free of PIL

    with Image.open(io.BytesIO(data)) as opened:
        image = ImageOps.exif_transpose(opened)
        if high_depth(image.mode):
            import numpy as np

            pixels = np.asarray(image, dtype=np.float64)
            top = 65535.0 if image.mode.startswith("I;16") or pixels.max(initial=0) > 255 else 255.0
            if image.mode == "F":
                top = 1.0 if pixels.max(initial=0) <= 1.0 else max(float(pixels.max()), 1.0)
            image = Image.fromarray(np.clip(pixels * (255.0 / top), 0, 255).round().astype(np.uint8), "L")
        return _on_white(image)


def _on_white(image: Any) -> Any:
    """``image`` as RGB, what is transparent in it white (as vLLM's ``convert_image_mode``)."""
    from PIL import Image

    if image.mode not in ("RGBA", "LA", "PA") and "transparency" not in image.info:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    flat = Image.new("RGB", rgba.size, (255, 255, 255))
    flat.paste(rgba, mask=rgba.getchannel("A"))
    return flat


class ProblemImage(bytes):
    """One image of a problem: its encoded bytes (PNG, JPEG, ...) and where it came from.

    It *is* those bytes, so a policy can write ``Image.open(io.BytesIO(image))`` or send
    ``base64.b64encode(image)``; ``.path`` is where it was read from (as the input gave it),
    ``.to_pil()`` decodes it.
    """

    path: str | None
    #: The file's size and modification time when it was read (None: not read from a file):
    #: lets a resume see that the file is unchanged without reading it again.
    stamp: str | None
    #: The absolute path of the file the bytes were read from (None: not read from a file,
    #: e.g. embedded in Parquet): a Ray worker on a shared filesystem reads the image there
    #: itself instead of receiving the bytes through the driver (checked by hash).
    file: str | None
    #: The Parquet or Arrow cell the bytes were embedded in (None: not embedded in an input
    #: file): as ``file``, for an image that has no file of its own.
    cell: ImageCell | None

    def __new__(cls, data: bytes, path: str | None = None, stamp: str | None = None,
                file: str | None = None, cell: ImageCell | None = None) -> ProblemImage:
        image = super().__new__(cls, data)
        image.path = path
        image.stamp = stamp
        image.file = file
        image.cell = cell
        return image

    @property
    def data(self) -> bytes:
        """The encoded bytes as a plain ``bytes`` object."""
        return bytes(self)

    def to_pil(self) -> Any:
        """The decoded image (RGB, a ``PIL.Image``, as :func:`decode_rgb` shows it: oriented, 8-bit,
        transparency on white), for policies that hand PIL images to a processor."""
        return decode_rgb(self)

    @property
    def sha256(self) -> str:
        """The hex sha256 of the bytes: how a request refers to this image without carrying it
        (computed once per image object)."""
        digest = self.__dict__.get("_sha256")
        if digest is None:
            digest = self.__dict__["_sha256"] = image_digest(self)
        return digest

    def ref(self) -> ImageRef:
        """This image as a reference: its hash and where it came from, not its bytes."""
        return ImageRef(self.sha256, len(self), self.path, self.stamp, self.file, self.cell)

    def __reduce__(self) -> tuple[Any, ...]:  # keep the path across pickling (Ray, process pools)
        return (ProblemImage, (bytes(self), self.path, self.stamp, self.file, self.cell))

    def __repr__(self) -> str:
        return f"ProblemImage({len(self)} bytes, path={self.path!r})"


@dataclass(frozen=True)
class ImageCell:
    """Where an image embedded in the input lies: one cell of a Parquet file, or of an Arrow
    (IPC stream) file of a Hugging Face dataset saved with ``save_to_disk``, holding an image
    struct ``{bytes, path}`` or a list of them. Lets a worker read the image itself, as it
    reads an image file, instead of the driver sending the bytes."""

    kind: Literal["parquet", "arrow"]
    file: str  # the data file's absolute path
    row: int  # the row within the file
    column: str = ""  # the column holding the image ("": the row's place, before a column is named)
    index: int | None = None  # the image's position in the cell's list (None: the cell is one image)
    #: The Parquet row group holding the row, so a worker reads that group's column only
    #: (None for Arrow: a memory-mapped file is indexed by row directly).
    group: int | None = None


def image_digest(data: bytes) -> str:
    """The content hash images are referred to by (hex sha256)."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class ImageRef:
    """An image named by the hash of its bytes instead of carried: what a request sent to a
    rollout worker holds in place of each :class:`ProblemImage` (the worker keeps the bytes,
    sent once, or reads them from ``file`` or ``cell`` when it can and their hash matches).
    :meth:`resolve` turns it back into the image a policy sees, path included."""

    sha256: str
    size: int
    path: str | None = None
    stamp: str | None = None
    file: str | None = None  # the absolute path the bytes were read from, if from a file
    cell: ImageCell | None = None  # the input cell the bytes were embedded in, if embedded

    def resolve(self, data: bytes) -> ProblemImage:
        return ProblemImage(data, self.path, self.stamp, self.file, self.cell)


@dataclass(frozen=True)
class Problem:
    """An image-question pair with its gold answer.

    ``id`` is stable: given by the input, or a hash of the question and image bytes.
    """

    id: str
    question: str
    answer: str
    images: tuple[ProblemImage, ...] = ()  # ImageRef only in a request on its way to a worker
    answer_type: AnswerType = "auto"
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"Problem.id must be a non-empty string, got {self.id!r}")
        if not isinstance(self.question, str) or not self.question.strip():
            raise ValueError(f"Problem.question must be a non-empty string (problem {self.id!r})")
        if not isinstance(self.answer, str) or not self.answer.strip():
            raise ValueError(f"Problem.answer must be a non-empty string (problem {self.id!r})")
        if self.answer_type not in ANSWER_TYPES:
            raise ValueError(
                f"Problem.answer_type must be one of {', '.join(ANSWER_TYPES)}, got {self.answer_type!r}"
            )
        images = _problem_images(self.id, self.images)
        if images is not self.images:
            object.__setattr__(self, "images", images)
        object.__setattr__(self, "meta", _read_only(self.meta))  # frozen like the rest (ReadOnlyMeta)


_IMAGE_BYTES = (bytes, bytearray, memoryview)


def _problem_images(problem_id: str, images: Any) -> tuple[ProblemImage | ImageRef, ...]:
    """``images`` as a problem holds them: a tuple of :class:`ProblemImage` (a request on its
    way to a Ray worker holds :class:`ImageRef`). Plain encoded bytes (``bytes``,
    ``bytearray``, ``memoryview``) become a ``ProblemImage``, as the docs say an image *is*
    its bytes; anything else is refused here, naming the problem, rather than deep in an
    executor (where a Ray batch that could not be sent once left its requests waiting)."""
    if isinstance(images, tuple) and all(isinstance(im, (ProblemImage, ImageRef)) for im in images):
        return images  # the common case: as the input readers build them
    if not isinstance(images, (tuple, list)):
        raise ValueError(f"Problem.images must be a tuple of images, got {type(images).__name__} "
                         f"(problem {problem_id!r}): write images=(image,)")
    held: list[ProblemImage | ImageRef] = []
    for i, image in enumerate(images):
        if isinstance(image, (ProblemImage, ImageRef)):
            held.append(image)
        elif isinstance(image, _IMAGE_BYTES):
            held.append(ProblemImage(bytes(image)))
        else:
            hint = (": read the file, ProblemImage(Path(p).read_bytes(), path=p)"
                    if isinstance(image, str) else "")
            raise ValueError(f"Problem.images[{i}] must be an image's encoded bytes (ProblemImage or bytes: "
                             f"PNG, JPEG, ...), got {type(image).__name__} (problem {problem_id!r}){hint}")
    return tuple(held)


_READ_ONLY = ("problem.meta is read-only: the labels and the resume's fingerprint read it (copy.deepcopy(meta) "
              "is a copy of your own)")


class ReadOnlyMeta(dict):  # type: ignore[type-arg]
    """A problem's ``meta``: a dict that refuses writes, as the frozen ``Problem`` holding it.
    A policy that wrote into it (``options``, a tag) would change the labels and the
    manifest's fingerprint of its problem without a word; in a request the write fails it
    as a broken contract (not retried). Copies are plain dicts, the copier's own."""

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise PolicyContractError(_READ_ONLY)

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _refuse  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:  # pickled (to a Ray worker, a driver process) as itself
        return (ReadOnlyMeta, (dict(self),))

    def __copy__(self) -> dict[Any, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[Any, Any]:
        return _plain(self)


class ReadOnlyList(list):  # type: ignore[type-arg]
    """A list inside ``meta``: read-only like the dict that holds it."""

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise PolicyContractError(_READ_ONLY)

    __setitem__ = __delitem__ = __iadd__ = __imul__ = append = extend = insert = pop = remove = clear = sort = \
        reverse = _refuse  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return (ReadOnlyList, (list(self),))

    def __copy__(self) -> list[Any]:
        return list(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return _plain(self)


def _read_only(value: Any) -> Any:
    """``value`` with every dict and list in it read-only (one already read-only as it is)."""
    if isinstance(value, (ReadOnlyMeta, ReadOnlyList)):
        return value
    if isinstance(value, dict):
        return ReadOnlyMeta({k: _read_only(v) for k, v in value.items()})
    if isinstance(value, list):
        return ReadOnlyList(_read_only(v) for v in value)
    return value


def _plain(value: Any) -> Any:
    """A writable deep copy of a read-only ``meta`` (or anything in it)."""
    import copy

    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return copy.deepcopy(value)


@dataclass(frozen=True)
class InputError:
    """A row that could not become a problem; it goes to ``errors/``.

    ``fingerprint`` (see :func:`error_fingerprint`) lets a later run see that the row
    changed, and retry it; empty when unknown.
    """

    problem_id: str
    reason: str
    stage: str = "input"
    fingerprint: str = field(default="", compare=False)


def safe_text(text: str) -> str:
    """``text`` as UTF-8 can store it: a lone surrogate (a valid JSON escape such as
    ``"\\udcff"``, but no character) is written out as ``\\udcff``. Everything else is kept."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def unencodable(text: str) -> str | None:
    """Why ``text`` cannot be written as UTF-8 (a lone surrogate, and where), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"a lone surrogate {text[exc.start]!r} at character {exc.start}, which is not valid Unicode"
    return None


def _digest(*parts: bytes) -> str:
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()


def _canonical(value: Any) -> bytes:
    """A stable byte rendering of JSON-like data (bytes by their hash): what a fingerprint hashes."""
    def default(obj: Any) -> Any:
        if isinstance(obj, (bytes, bytearray, memoryview)):
            return {"bytes": _digest(bytes(obj))}
        return repr(obj)

    return json.dumps(value, sort_keys=True, ensure_ascii=True, default=default).encode("ascii")


def text_fingerprint(question: str, answer: str, answer_type: str, meta: Any) -> str:
    """The part of a problem's fingerprint its text gives (what decides labels but the images)."""
    return _digest(_canonical([question, answer, answer_type, meta]))


def images_fingerprint(images: tuple[bytes, ...]) -> str:
    """The part of a problem's fingerprint its images give: a hash of their contents."""
    return _digest(*(_digest(bytes(im)).encode() for im in images))


def stamps_fingerprint(stamps: list[str | None]) -> str:
    """The stamp part of a fingerprint: the image files' paths, sizes and times ("" unless
    every image came from a file)."""
    if not stamps or not all(stamps):
        return ""
    return _digest(*(s.encode("utf-8", "backslashreplace") for s in stamps))  # type: ignore[union-attr]


def problem_fingerprint(problem: Problem) -> str:
    """What a problem's labels depend on, as ``TEXT.IMAGES.STAMP``: a hash of the question,
    gold answer, answer type and meta (options, chance...); a hash of the image bytes; and
    the image files' sizes and times when read (empty if not all came from files), so a
    resume compares unchanged files without reading them. Recorded in the manifest."""
    stamps = [getattr(im, "stamp", None) for im in problem.images]
    stamp = stamps_fingerprint(stamps)  # type: ignore[arg-type]
    return ".".join((text_fingerprint(problem.question, problem.answer, problem.answer_type, problem.meta),
                     images_fingerprint(problem.images), stamp))


def error_fingerprint(row: Any, reason: str) -> str:
    """The fingerprint of a bad input row: its content and why it was refused (a missing
    image that appears changes the reason), prefixed ``error:``."""
    return "error:" + _digest(_canonical(row), reason.encode("utf-8", "backslashreplace"))


def problem_id_for(question: str, images: tuple[ProblemImage, ...]) -> str:
    """The stable id of a problem given without one."""
    digest = hashlib.blake2b(question.encode("utf-8"), digest_size=8)
    for image in images:
        digest.update(image.data)
    return digest.hexdigest()


FINISH_REASONS = ("stop", "length")
PURPOSES = ("solve", "judge")


@dataclass(frozen=True)
class GenerationRequest:
    """Ask for ``n`` continuations of ``prefix`` (steps already taken) for ``problem``."""

    problem: Problem
    prefix: tuple[str, ...]
    n: int
    max_tokens: int = 1024
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int = 0
    next_step_only: bool = False
    step_format: StepFormat = StepFormat()  # how to write steps: the run's format, for every policy
    purpose: str = "solve"  # "solve": continue the prefix; "judge": is the prefix's last step correct?

    @property
    def continues(self) -> bool:
        """The model continues an open assistant turn holding the prefix (not a judge's question)."""
        return bool(self.prefix) and self.purpose == "solve"

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, tuple):
            object.__setattr__(self, "prefix", tuple(self.prefix))
        if isinstance(self.step_format, str):
            object.__setattr__(self, "step_format", StepFormat(self.step_format))
        if self.purpose not in PURPOSES:
            raise ValueError(f"GenerationRequest.purpose must be one of {', '.join(PURPOSES)}, got {self.purpose!r}")
        if self.purpose == "judge" and not self.prefix:
            raise ValueError("a judge request needs the steps to judge in its prefix")
        if self.n < 1:
            raise ValueError(f"GenerationRequest.n must be at least 1, got {self.n}")
        if self.max_tokens < 1:
            raise ValueError(f"GenerationRequest.max_tokens must be at least 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"GenerationRequest.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"GenerationRequest.top_p must be in (0, 1], got {self.top_p}")


def refer_images(request: GenerationRequest) -> tuple[GenerationRequest, dict[str, ProblemImage]]:
    """``request`` with its problem's images replaced by :class:`ImageRef` (their hashes), and
    the images by hash: a request can travel to a worker that already holds the bytes without
    carrying them. A request without images is returned as it is."""
    images = request.problem.images
    if not images:
        return request, {}
    by_hash = {im.sha256: im for im in images}
    problem = replace(request.problem, images=tuple(im.ref() for im in images))
    return replace(request, problem=problem), by_hash


def missing_images(request: GenerationRequest, have: Any) -> list[str]:
    """The hashes of ``request``'s image references not in ``have`` (a mapping or set)."""
    return [im.sha256 for im in request.problem.images if isinstance(im, ImageRef) and im.sha256 not in have]


def resolve_images(request: GenerationRequest, lookup: Any) -> GenerationRequest:
    """``request`` with each :class:`ImageRef` turned back into its :class:`ProblemImage`
    (bytes from ``lookup[hash]``): the request a policy sees is equal to the one the driver
    made. Raises KeyError naming a hash ``lookup`` lacks."""
    images = request.problem.images
    if not any(isinstance(im, ImageRef) for im in images):
        return request
    resolved = tuple(im.resolve(lookup[im.sha256]) if isinstance(im, ImageRef) else im for im in images)
    return replace(request, problem=replace(request.problem, images=resolved))


@dataclass
class Completion:
    """One continuation of a request's prefix."""

    text: str
    num_tokens: int = 0
    finish_reason: str = "stop"  # "stop" | "length"
    cached_tokens: int = 0  # prompt tokens served from the prefix cache, if reported
    prompt_tokens: int = 0  # the request's prompt length, if reported
    #: generated tokens reported for the whole request where no completion's own count is
    #: known (an OpenAI-compatible server's usage for n choices): counted in the run's
    #: totals, never read as this completion's length (``num_tokens`` is then 0)
    shared_tokens: int = 0

    # A request's prompt (and a shared token count) belongs to its n completions: backends
    # report it on the first completion only, so sums over completions stay right.


#: The largest token count a completion may give: above it a count is no count of tokens
#: (2**53, where a float, as the search computes with counts, stops holding every integer;
#: 10**400 overflows it and failed every problem as "search: internal error: OverflowError").
MAX_TOKEN_COUNT = 2**53


def check_completions(request: GenerationRequest, completions: Any, who: str = "policy") -> list[Completion]:
    """The policy contract, checked where answers enter the engine: a list of exactly
    ``request.n`` Completions with text, token counts in 0..MAX_TOKEN_COUNT and a known finish reason."""
    if not isinstance(completions, list):
        raise PolicyContractError(f"{who}.generate must return a list of Completion, got {type(completions).__name__}")
    if len(completions) != request.n:
        raise PolicyContractError(f"{who}.generate returned {len(completions)} completions for n={request.n}")
    for c in completions:
        if (type(c) is Completion and type(c.text) is str and type(c.num_tokens) is int
                and type(c.cached_tokens) is int and type(c.prompt_tokens) is int and type(c.shared_tokens) is int
                # the four counts in 0..MAX_TOKEN_COUNT at once: their OR is negative where one
                # is, and at least each of them
                and 0 <= (c.num_tokens | c.cached_tokens | c.prompt_tokens | c.shared_tokens) <= MAX_TOKEN_COUNT
                and c.finish_reason in FINISH_REASONS):
            continue  # the common case, in one test; anything else is checked field by field below
        if not isinstance(c, Completion):
            raise PolicyContractError(f"{who}.generate must return Completion objects, got {type(c).__name__}")
        if not isinstance(c.text, (str, bytes)):
            raise PolicyContractError(f"{who}: Completion.text must be a string, got {type(c.text).__name__}")
        for name in ("num_tokens", "cached_tokens", "prompt_tokens", "shared_tokens"):
            value = getattr(c, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise PolicyContractError(f"{who}: Completion.{name} must be an int >= 0, got {value!r}")
            if value > MAX_TOKEN_COUNT:
                raise PolicyContractError(f"{who}: Completion.{name} must be at most 2**53 (a count of tokens), got "
                                          f"{_count_shown(value)}")
        if c.finish_reason not in FINISH_REASONS:
            raise PolicyContractError(
                f"{who}: Completion.finish_reason must be one of {', '.join(FINISH_REASONS)}, got {c.finish_reason!r}"
            )
    return completions


def _count_shown(value: int) -> str:
    """A count for a message: in full up to 128 bits, else its size (``str`` refuses ints
    of over 4,300 digits)."""
    return repr(value) if value.bit_length() <= 128 else f"about 10**{int(value.bit_length() * 0.30103)}"


#: Why a rollout counted as wrong without its answer being compared.
MALFORMED_REASONS = ("empty", "no_answer", "hedged", "truncated", "undecodable", "answer_too_long")

#: An extracted answer longer than this is not compared (``answer_too_long``): answers are
#: checked on the driver's event loop, and a runaway one (a ``\\text{`` nested 20,000
#: deep) must not hold it. Real final answers are far shorter.
MAX_ANSWER_CHARS = 2_000


@dataclass(frozen=True)
class Rollout:
    """One completion from a node's prefix, parsed and verified."""

    steps: tuple[str, ...]
    answer: str | None
    correct: bool
    num_tokens: int
    finish_reason: str
    malformed: str | None = None  # one of MALFORMED_REASONS, or None
    #: A next step that only stated the final answer (:meth:`Segmenter.joins_previous`):
    #: ``steps[0]`` is the prefix's last step with it joined, as a whole solution reads it,
    #: and replaces that step (a sibling of its node), not follows it.
    joins_last: bool = False

    @property
    def has_answer(self) -> bool:
        return self.answer is not None

    @property
    def has_steps(self) -> bool:
        """Whether it has a step, without splitting a deferred text (it has one: see
        :meth:`deferred`)."""
        return "_split" in self.__dict__ or bool(self.steps)

    @classmethod
    def deferred(cls, split: Callable[[str, int], list[str]], text: str, depth: int, answer: str | None,
                 correct: bool, num_tokens: int, finish_reason: str, malformed: str | None = None) -> Rollout:
        """A rollout whose ``steps`` are ``tuple(split(text, depth))``, split the first time
        they are read. The search reads the steps of few rollouts (omega: only a selected
        candidate's enter the tree, ~7% of them), and splitting is ~2 us of each. For a
        splitter that gives every text with a non-space character a step, and such a text:
        the caller knows it is not ``empty``. Equal, hashed, copied and pickled as the
        rollout with its steps."""
        rollout = object.__new__(cls)
        rollout.__dict__.update(answer=answer, correct=correct, num_tokens=num_tokens, finish_reason=finish_reason,
                                malformed=malformed, _split=(split, text, depth))
        return rollout

    def __getattr__(self, name: str) -> Any:
        # only for an attribute not set: a deferred rollout's steps, split once
        split = self.__dict__.get("_split") if name == "steps" else None
        if split is None:
            if name == "steps" and "steps" in self.__dict__:  # another thread split it since our lookup missed
                return self.__dict__["steps"]
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        steps = tuple(split[0](split[1], split[2]))
        steps = self.__dict__.setdefault("steps", steps)  # two threads reading at once: one tuple
        self.__dict__.pop("_split", None)
        return steps
