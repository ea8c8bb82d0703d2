"""Feature extractors for image metrics, registered with torch-fidelity when first needed.

- ``bench-domain``: a small CNN classifier trained once per dataset on its training split
  (fixed seed, fixed recipe, one CPU thread, CPU seconds), cached on disk under
  ``$BENCH_CACHE/extractors`` (default ``~/.cache/otnfm-bench``); ``mnist5k``'s (on its 4,000
  training images, and on the 3,000 ``data.validation: 1000`` leaves) and ``digits``' (its
  1,437) ship with the package (``bench/metrics/classifiers/``), so every machine scores them
  in the same feature spaces.
  Its 128-d penultimate features feed torch-fidelity's FID / KID / precision-recall code: the
  result is a Frechet distance in *this* feature space, recorded as ``fd_domain`` with the
  extractor's id, never called FID. Its logits give the class histogram of generated samples.

  The id is ``fd-<dataset>-cnn-<training data hash>-w<weights hash>``: two records with the
  same id were scored by the same weights, bit for bit. (Ids before version 3 hashed only the
  training data, and one such id covered classifiers trained on different machines; the report
  tells those apart by their held-out accuracy.) Training runs on one thread so that the
  thread count of the calling process does not change the weights; other CPUs or libraries
  still round differently (the same recipe, torch and thread count gave mnist5k weights
  ``2cab03604743`` on one machine and ``a2546205e70b`` on another), which the weights hash then
  shows: hence the shipped file.
- Inception (``--metrics fid``) lives in ``bench.metrics.inception``: it finds the weights
  offline, checks them and provides the faster ``inception-v3-fast`` extractor; the harness
  never downloads them.

torch-fidelity (and torchvision behind it) is imported inside the functions that use it, not
here: importing it takes seconds, and ``bench list`` imports this module.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.io import atomic_torch_save

DOMAIN_NAME = "bench-domain"
#: bump when the classifier or its training recipe changes (invalidates cached extractors)
DOMAIN_VERSION = 3


def cache_dir() -> Path:
    return Path(os.environ.get("BENCH_CACHE", "~/.cache/otnfm-bench")).expanduser()


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float [N, C, H, W] -> uint8 [N, 3, H, W] (grey images repeated to RGB), the input
    torch-fidelity's extractors take."""
    u8 = ((x.float() + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)
    return u8.expand(-1, 3, -1, -1).contiguous() if u8.shape[1] == 1 else u8


class DomainCNN(nn.Module):
    """conv 32 -> conv 64 (stride 2) -> conv 128 (stride 2) -> global average -> 128 -> classes."""

    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        self.channels, self.classes = channels, classes
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.GroupNorm(8, 32), nn.SiLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.GroupNorm(8, 64), nn.SiLU(),
            nn.Conv2d(64, 128, 3, stride=2, padding=1), nn.GroupNorm(8, 128), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 128), nn.SiLU(),
        )
        self.head = nn.Linear(128, classes)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.body(x)
        return f, self.head(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)[1]


def from_uint8(u8: torch.Tensor, channels: int) -> torch.Tensor:
    x = u8.float().div(127.5).sub(1.0)
    return x[:, :1] if channels == 1 else x


def _digest(data: torch.Tensor, labels: torch.Tensor) -> str:
    h = hashlib.sha256()
    h.update(to_uint8(data.cpu()).numpy().tobytes())
    h.update(labels.cpu().numpy().tobytes())
    h.update(f"v{DOMAIN_VERSION}".encode())
    return h.hexdigest()[:12]


#: the classifier's training passes over its training set and batch size
DOMAIN_EPOCHS, DOMAIN_BATCH = 30, 128


def domain_steps(n_train: int, epochs: int = DOMAIN_EPOCHS, batch: int = DOMAIN_BATCH) -> int:
    """The classifier's training steps: ``epochs`` passes over ``n_train`` images, 100 to 3,000."""
    return int(min(3000, max(100, epochs * n_train // batch)))


#: classifiers trained once and shipped with the package, ``<dataset>-<training data hash>.pt``
#: (the cache's format): a training set that has one is scored by the same weights on every
#: machine. Others are trained on first use and cached.
SHIPPED_DIR = Path(__file__).parent / "classifiers"


def cached_path(name: str) -> Path:
    """A classifier file's place in the cache."""
    return cache_dir() / "extractors" / name


def domain_path(dataset: str, data: torch.Tensor, labels: torch.Tensor) -> Path:
    """Where the classifier of this training set is: shipped with the package if it is, else
    in the cache (``domain_extractor``; the cached file may not exist yet)."""
    name = f"{dataset}-{_digest(data, labels)}.pt"
    shipped = SHIPPED_DIR / name
    return shipped if shipped.exists() else cached_path(name)


def _checked(path: Path, dataset: str, key: str) -> dict | None:
    """The classifier file at ``path`` if its weights match the hash in its id, else None
    (with a warning)."""
    if not path.exists():
        return None
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if blob.get("id") == f"fd-{dataset}-cnn-{key}-w{state_digest(blob['state'])}":
        return blob
    warnings.warn(f"{path}: its weights do not match its id {blob.get('id')!r}; "
                  "training the classifier again", stacklevel=3)
    return None


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch on one thread in the block (reductions in one order whatever the caller's thread
    count), the caller's count restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def domain_optimizer(net: DomainCNN) -> torch.optim.Optimizer:
    return torch.optim.Adam(net.parameters(), lr=2e-3)


def domain_step(net: DomainCNN, opt: torch.optim.Optimizer, x: torch.Tensor,
                y: torch.Tensor) -> None:
    """One training step of the classifier: cross-entropy, backward, Adam."""
    loss = F.cross_entropy(net(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def train_domain_classifier(x: torch.Tensor, y: torch.Tensor, classes: int,
                            epochs: int = DOMAIN_EPOCHS, batch: int = DOMAIN_BATCH) -> DomainCNN:
    """Deterministic (seed 0, CPU, one thread) Adam training on uint8-rounded images,
    ``epochs`` passes (100 to 3,000 steps); small random shifts keep it from memorising the
    training set."""
    steps = domain_steps(x.shape[0], epochs, batch)
    with torch.random.fork_rng(devices=[]), one_thread():
        torch.manual_seed(0)
        x = from_uint8(to_uint8(x.cpu()), x.shape[1])
        y = y.cpu()
        net = DomainCNN(x.shape[1], classes)
        opt = domain_optimizer(net)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
        g = torch.Generator().manual_seed(0)
        for _ in range(steps):
            idx = torch.randint(0, x.shape[0], (batch,), generator=g)
            dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=g))
            domain_step(net, opt, torch.roll(x[idx], shifts=(dx, dy), dims=(2, 3)), y[idx])
            sched.step()
    return net.eval()


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 of a state dict's tensors (names, shapes, float32 values), first 12 hex digits."""
    h = hashlib.sha256()
    for k in sorted(state):
        v = state[k].detach().to(torch.float32).contiguous()
        h.update(f"{k}:{tuple(v.shape)};".encode())
        h.update(v.numpy().tobytes())
    return h.hexdigest()[:12]


def domain_extractor(dataset: str, data: torch.Tensor, labels: torch.Tensor, classes: int,
                     eval_x: torch.Tensor | None = None, eval_y: torch.Tensor | None = None
                     ) -> tuple[Path, dict]:
    """Path of the cached classifier for this training set (trained on first use) and its info
    (id with the weights hash, held-out accuracy). A cached file whose weights do not match the
    hash in its id is retrained, with a warning."""
    path = domain_path(dataset, data, labels)
    key = path.stem.rsplit("-", 1)[1]
    blob = _checked(path, dataset, key)
    if blob is None and path.parent == SHIPPED_DIR:  # a damaged shipped file: use the cache
        path = cached_path(path.name)
        blob = _checked(path, dataset, key)
    if blob is None:
        net = train_domain_classifier(data, labels, classes)
        acc = None
        if eval_x is not None and eval_y is not None:
            with torch.no_grad():
                pred = net(from_uint8(to_uint8(eval_x.cpu()), net.channels)).argmax(1)
            acc = float((pred == eval_y.cpu()).float().mean())
        state = net.state_dict()
        blob = {"channels": net.channels, "classes": classes, "state": state,
                "id": f"fd-{dataset}-cnn-{key}-w{state_digest(state)}", "eval_accuracy": acc}
        atomic_torch_save(path, blob)
    return path, {"id": blob["id"], "eval_accuracy": blob["eval_accuracy"]}


def load_domain(path: str | Path) -> DomainCNN:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    net = DomainCNN(blob["channels"], blob["classes"])
    net.load_state_dict(blob["state"])
    return net.eval()


def register_domain() -> None:
    """Register :class:`DomainCNN` with torch-fidelity as ``bench-domain`` (once)."""
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    if DOMAIN_NAME in FEATURE_EXTRACTORS_REGISTRY:
        return

    class DomainFeatures(FeatureExtractorBase):
        """torch-fidelity wrapper of :class:`DomainCNN` (``feature_extractor_weights_path`` =
        the cached classifier)."""

        def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
            super().__init__(name, features_list)
            if feature_extractor_weights_path is None:
                raise ValueError(f"{DOMAIN_NAME} needs feature_extractor_weights_path")
            self.net = load_domain(feature_extractor_weights_path)
            self.requires_grad_(False)

        def forward(self, x):
            f, logits = self.net.features(from_uint8(x, self.net.channels))
            out = {"feat": f, "logits": logits}
            return tuple(out[a] for a in self.features_list)

        @staticmethod
        def get_provided_features_list():
            return ("feat", "logits")

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return "feat"

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return torch.zeros(1, 3, 8, 8, dtype=torch.uint8)

    register_feature_extractor(DOMAIN_NAME, DomainFeatures)
